//! Endpoint tests that need no real handshake: routing, accepting, Version Negotiation, handles, the
//! send queue and the timer heap. Behaviour that needs real handshakes is tested in tests/endpoint.rs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::wire::header::{VERSION_1, VERSION_2};
use crate::Side;

use crate::test_util::epoch;

fn at(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms)
}

fn server_tls() -> Arc<rustls::ServerConfig> {
    static TLS: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    })
    .clone()
}

fn client_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    ClientConfig::new(Arc::new(tls))
}

fn server_with(config: EndpointConfig, f: impl FnOnce(&mut ServerConfig)) -> Endpoint {
    let mut server = ServerConfig::new(server_tls());
    f(&mut server);
    Endpoint::new(config, Some(server))
}

fn server() -> Endpoint {
    server_with(EndpointConfig::with_seed(1), |_| {})
}

fn client() -> Endpoint {
    Endpoint::new(EndpointConfig::with_seed(2), None)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), port))
}

fn datagram(remote: SocketAddr, bytes: &[u8]) -> Datagram {
    Datagram {
        remote,
        local: None,
        ecn: None,
        payload: BytesMut::from(bytes),
    }
}

/// A long-header packet of `ty` filling `size` bytes, with a consistent Length field and a 4-byte packet
/// number (protection is not applied: the endpoint reads only the unprotected fields).
fn long_packet(ty: LongType, version: u32, dcid: &[u8], scid: &[u8], size: usize) -> Vec<u8> {
    let mut p = vec![0xc3 | (ty.to_bits(version) << 4)];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p.push(scid.len() as u8);
    p.extend_from_slice(scid);
    if ty == LongType::Initial {
        p.push(0); // token length
    }
    let rest = size - p.len() - 2;
    p.extend_from_slice(&(rest as u16 | 0x4000).to_be_bytes());
    p.resize(size, 0xab);
    p
}

fn initial(dcid: &[u8], scid: &[u8], size: usize) -> Vec<u8> {
    long_packet(LongType::Initial, VERSION_1, dcid, scid, size)
}

/// A long header of an arbitrary `version` (only the invariant fields are meaningful).
fn unknown_version(version: u32, dcid: &[u8], scid: &[u8], size: usize) -> Vec<u8> {
    let mut p = vec![0xc0];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p.push(scid.len() as u8);
    p.extend_from_slice(scid);
    p.resize(size, 0x5a);
    p
}

fn short(dcid: &[u8], size: usize) -> Vec<u8> {
    let mut p = vec![0x41];
    p.extend_from_slice(dcid);
    p.resize(size, 0x33);
    p
}

type Transmits = Vec<(Transmit, Vec<u8>)>;
type Events = Vec<(ConnectionHandle, Event)>;

/// Every transmit until `poll_transmit` returns `None`, with its bytes.
fn drain_transmits(ep: &mut Endpoint, now: Instant) -> Transmits {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        out.push((t, buf[..t.size].to_vec()));
        assert!(out.len() < 10_000, "poll_transmit never runs dry");
    }
    out
}

fn drain_events(ep: &mut Endpoint) -> Events {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

/// The drive rule: after an input, drain transmits, then events, then read the deadline.
fn drive(ep: &mut Endpoint, now: Instant) -> (Transmits, Events) {
    let transmits = drain_transmits(ep, now);
    let events = drain_events(ep);
    let _ = ep.poll_timeout();
    (transmits, events)
}

fn is_grease(v: u32) -> bool {
    v & 0x0f0f_0f0f == 0x0a0a_0a0a
}

#[test]
fn unknown_version_gets_one_version_negotiation_with_swapped_cids() {
    let mut config = EndpointConfig::with_seed(5);
    config.supported_versions = vec![VERSION_1, VERSION_2];
    let mut ep = server_with(config, |_| {});
    let remote = addr(4433);
    let dcid = [1u8; 8];
    let scid = [2u8; 5];
    ep.handle_datagram(
        epoch(),
        datagram(remote, &unknown_version(0x1a2b_3c4d, &dcid, &scid, 1200)),
    );
    let (transmits, events) = drive(&mut ep, epoch());
    assert!(events.is_empty());
    assert_eq!(transmits.len(), 1, "exactly one Version Negotiation packet");
    let (t, bytes) = &transmits[0];
    assert_eq!(t.destination, remote);
    assert_eq!(t.segment_size, None);
    assert_eq!(
        bytes[0] & 0xc0,
        0xc0,
        "long form, and 0x40 set for multiplexing (RFC 9000 §17.2.1)"
    );
    let header = ProtectedHeader::decode(bytes, 8).unwrap();
    let ProtectedHeader::VersionNegotiation { dcid: d, scid: s, .. } = &header else {
        panic!("not a Version Negotiation packet: {header:?}");
    };
    assert_eq!(&d[..], &scid, "the client's source ID becomes the destination");
    assert_eq!(&s[..], &dcid, "the client's destination ID becomes the source");
    let versions: Vec<u32> = header.versions(bytes).collect();
    assert_eq!(&versions[..2], &[VERSION_1, VERSION_2]);
    assert_eq!(versions.len(), 3);
    assert!(is_grease(versions[2]), "a reserved version: {:#x}", versions[2]);
    assert_eq!(ep.stats().version_negotiations_sent, 1);
    assert_eq!(ep.stats().connections_active, 0);
    assert!(drain_transmits(&mut ep, epoch()).is_empty());

    // Invariant connection IDs may be up to 255 bytes long (RFC 8999 §5.1).
    let long_dcid = [9u8; 200];
    ep.handle_datagram(
        epoch(),
        datagram(remote, &unknown_version(0xff00_0020, &long_dcid, &[], 1300)),
    );
    let transmits = drain_transmits(&mut ep, epoch());
    assert_eq!(transmits.len(), 1);
    let inv = InvariantHeader::decode(&transmits[0].1, 0).unwrap();
    assert_eq!(
        inv,
        InvariantHeader::Long {
            version: 0,
            dcid: &[],
            scid: &long_dcid
        }
    );
}

#[test]
fn version_negotiation_is_deterministic_per_seed() {
    let run = |seed| {
        let mut ep = server_with(EndpointConfig::with_seed(seed), |_| {});
        ep.handle_datagram(
            epoch(),
            datagram(addr(1), &unknown_version(7, &[1; 8], &[2; 8], 1200)),
        );
        drain_transmits(&mut ep, epoch())[0].1.clone()
    };
    assert_eq!(run(3), run(3));
}

#[test]
fn no_version_negotiation_below_1200_bytes() {
    let mut ep = server();
    ep.handle_datagram(
        epoch(),
        datagram(addr(1), &unknown_version(7, &[1; 8], &[2; 8], 1199)),
    );
    assert!(drive(&mut ep, epoch()).0.is_empty());
    assert_eq!(ep.stats().dropped_unsupported_version, 1);
    assert_eq!(ep.stats().version_negotiations_sent, 0);
}

#[test]
fn no_version_negotiation_for_version_negotiation_or_short_headers() {
    let mut ep = server();
    // A Version Negotiation packet (version 0) for an unknown connection, padded to 1200 bytes.
    let mut vn = Vec::new();
    encode_version_negotiation(0x40, &[1; 8], &[2; 8], &[0x1234_5678; 300], &mut vn);
    assert!(vn.len() >= 1200);
    ep.handle_datagram(epoch(), datagram(addr(1), &vn));
    // A short header with an unknown connection ID.
    ep.handle_datagram(epoch(), datagram(addr(1), &short(&[3; 8], 1200)));
    // The short header is answered, but with a stateless reset (RFC 9000 §10.3), never with Version
    // Negotiation: 43 bytes, a short header, ending in some token.
    let sent = drive(&mut ep, epoch()).0;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.len(), 43);
    assert_eq!(sent[0].1[0] & 0xc0, 0x40);
    let stats = ep.stats();
    assert_eq!(stats.version_negotiations_sent, 0);
    assert_eq!(stats.stateless_resets_sent, 1);
    assert_eq!(stats.dropped_unroutable, 2);
}

#[test]
fn client_endpoint_sends_no_version_negotiation_and_accepts_nothing() {
    let mut ep = client();
    ep.handle_datagram(
        epoch(),
        datagram(addr(1), &unknown_version(7, &[1; 8], &[2; 8], 1200)),
    );
    ep.handle_datagram(epoch(), datagram(addr(1), &initial(&[1; 8], &[2; 8], 1200)));
    let (transmits, events) = drive(&mut ep, epoch());
    assert!(transmits.is_empty() && events.is_empty());
    assert_eq!(ep.stats().connections_active, 0);
    assert_eq!(ep.stats().dropped_unsupported_version, 1);
    assert_eq!(ep.stats().dropped_unroutable, 1);
}

#[test]
fn version_the_config_leaves_out_gets_negotiation() {
    // The crate parses v2, but this endpoint offers only v1.
    let mut ep = server();
    let v2 = long_packet(LongType::Initial, VERSION_2, &[1; 8], &[2; 8], 1200);
    ep.handle_datagram(epoch(), datagram(addr(1), &v2));
    let transmits = drain_transmits(&mut ep, epoch());
    assert_eq!(transmits.len(), 1);
    let header = ProtectedHeader::decode(&transmits[0].1, 8).unwrap();
    let versions: Vec<u32> = header.versions(&transmits[0].1).collect();
    assert_eq!(versions[0], VERSION_1);
    assert!(!versions.contains(&VERSION_2));
    assert_eq!(ep.stats().connections_active, 0);
}

#[test]
fn stateless_queue_is_bounded() {
    let mut config = EndpointConfig::with_seed(1);
    config.max_stateless_queue = 2;
    let mut ep = server_with(config, |_| {});
    for i in 0..5u8 {
        ep.handle_datagram(
            epoch(),
            datagram(addr(1), &unknown_version(7, &[i; 8], &[2; 8], 1200)),
        );
    }
    assert_eq!(ep.stats().stateless_queue_overflow, 3);
    assert_eq!(drain_transmits(&mut ep, epoch()).len(), 2);
    assert_eq!(ep.stats().version_negotiations_sent, 2);
}

#[test]
fn retries_go_through_the_bounded_stateless_queue() {
    // RFC 9000 §8.1.2, §21.2: a Retry keeps no state, and the queue of stateless packets it waits in is
    // bounded, so a flood of Initials cannot grow the server's memory: beyond the bound they are counted
    // and get nothing.
    let mut config = EndpointConfig::with_seed(1);
    config.max_stateless_queue = 2;
    let mut server = server_with(config, |s| s.retry = crate::RetryPolicy::Always);
    for i in 0..5u16 {
        let mut client = Endpoint::new(EndpointConfig::with_seed(10 + u64::from(i)), None);
        client
            .connect(epoch(), client_config(), addr(443), "localhost")
            .unwrap();
        let (out, _) = drive(&mut client, epoch());
        server.handle_datagram(epoch(), datagram(addr(6000 + i), &out[0].1));
    }
    assert_eq!(server.stats().stateless_queue_overflow, 3);
    let out = drain_transmits(&mut server, epoch());
    assert_eq!(out.len(), 2);
    for (_, bytes) in &out {
        let header = ProtectedHeader::decode(bytes, 0).unwrap();
        assert_eq!(header.long_type(), Some(LongType::Retry));
    }
    assert_eq!(server.stats().retries_sent, 2);
    assert_eq!(server.stats().connections_active, 0);
}

#[test]
fn initial_with_dcid_under_8_bytes_is_dropped() {
    let mut ep = server();
    ep.handle_datagram(epoch(), datagram(addr(1), &initial(&[1; 7], &[2; 8], 1200)));
    assert!(drive(&mut ep, epoch()).1.is_empty());
    assert_eq!(ep.stats().connections_active, 0);
    assert_eq!(ep.stats().dropped_malformed, 1);
}

/// RFC 9000 §7.2: an Initial whose destination ID is below 8 bytes is dropped before any decryption,
/// even when its token claims to come from a Retry (ours always carry IDs of 8 bytes or more). Found by
/// `random_datagrams_never_panic_nor_create_connections` in CI: an empty DCID and the one-byte token "R".
#[test]
fn short_dcid_initial_with_a_retry_shaped_token_is_dropped_unopened() {
    let mut ep = server();
    for dcid_len in [0usize, 7] {
        let mut p = vec![0xc0, 0, 0, 0, 1, dcid_len as u8];
        p.extend(std::iter::repeat_n(0x52, dcid_len));
        p.extend_from_slice(&[0, 1, b'R', 0x40, 0]);
        p.resize(1200, 0x52);
        ep.handle_datagram(at(1), datagram(addr(1), &p));
        let _ = drive(&mut ep, at(1));
    }
    let stats = ep.stats();
    assert_eq!(stats.dropped_malformed, 2);
    assert_eq!(stats.dropped_unauthenticated, 0);
    assert_eq!(stats.dropped_invalid_retry_token, 0);
    assert_eq!(stats.connections_active, 0);
}

#[test]
fn malformed_datagrams_are_counted() {
    let mut ep = server();
    for bytes in [&[][..], &[0xc0, 0, 0, 0], &[0x00; 30], &[0x40, 1, 2]] {
        ep.handle_datagram(epoch(), datagram(addr(1), bytes));
    }
    let stats = ep.stats();
    assert_eq!(stats.datagrams_received, 4);
    assert_eq!(stats.dropped_malformed, 4);
}

#[test]
fn connect_errors() {
    let mut ep = client();
    assert_eq!(
        ep.connect(epoch(), client_config(), addr(1), "not a name!"),
        Err(ConnectError::InvalidServerName)
    );
    let mut config = client_config();
    config.version = 0xdead_beef;
    assert_eq!(
        ep.connect(epoch(), config, addr(1), "localhost"),
        Err(ConnectError::UnsupportedVersion(0xdead_beef))
    );
    // No server could answer from these: the endpoint drops datagrams from them (quinn-proto's
    // InvalidRemoteAddress). A client that took one waited for its idle timeout.
    for bad in [
        "0.0.0.0:4433",
        "[::]:4433",
        "192.0.2.1:0",
        "224.0.0.1:4433",
        "255.255.255.255:4433",
        "[ff02::1]:4433",
    ] {
        let bad: SocketAddr = bad.parse().unwrap();
        assert_eq!(
            ep.connect(epoch(), client_config(), bad, "localhost"),
            Err(ConnectError::InvalidRemoteAddress(bad)),
            "{bad}"
        );
    }
    // An IPv4-mapped form is judged as the IPv4 address it maps, and reported as given.
    let mapped: SocketAddr = "[::ffff:0.0.0.0]:4433".parse().unwrap();
    assert_eq!(
        ep.connect(epoch(), client_config(), mapped, "localhost"),
        Err(ConnectError::InvalidRemoteAddress(mapped))
    );
    assert_eq!(ep.stats().connections_active, 0);
    let h = ep
        .connect(epoch(), client_config(), addr(1), "192.0.2.7")
        .unwrap();
    let conn = ep.conn(h).unwrap();
    assert_eq!(conn.side(), Side::Client);
    assert_eq!(conn.handle(), h);
}

/// What the endpoint should do with `bytes`: create a connection, and answer with Version Negotiation.
/// Random bytes never authenticate as an Initial (the AEAD tag would have to match by chance), so no
/// connection is ever created; an Initial-shaped datagram is at most counted as unauthenticated.
fn oracle(bytes: &[u8], unauthenticated: &mut usize) -> (bool, bool) {
    let big = bytes.len() >= 1200;
    match ProtectedHeader::decode(bytes, 8) {
        Ok(ProtectedHeader::Long {
            ty,
            version: VERSION_1,
            dcid,
            ..
        }) => {
            if ty == LongType::Initial && big && dcid.len() >= 8 {
                *unauthenticated += 1;
            }
            (false, false)
        }
        Ok(ProtectedHeader::Long { .. }) => (false, big),
        Err(HeaderError::UnsupportedVersion(_)) => (
            false,
            big && matches!(
                InvariantHeader::decode(bytes, 8),
                Ok(InvariantHeader::Long { .. })
            ),
        ),
        _ => (false, false),
    }
}

/// A datagram shaped like a long or short header, with random fields, so the structured parts of the
/// endpoint are reached far more often than by random bytes alone.
fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    let version = prop_oneof![Just(VERSION_1), Just(VERSION_2), Just(0u32), any::<u32>()];
    let long = (
        prop_oneof![Just(0xc0u8), any::<u8>()],
        version,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 8..=20),
            prop::collection::vec(any::<u8>(), 0..=21)
        ],
        prop::collection::vec(any::<u8>(), 0..=21),
        0usize..3,
        any::<bool>(),
        any::<u16>(),
        prop_oneof![1150usize..=1250, 0usize..=1500],
        any::<u8>(),
    )
        .prop_map(
            |(first, version, dcid, scid, token, consistent, length, size, fill)| {
                let mut p = vec![first | 0x80];
                p.extend_from_slice(&version.to_be_bytes());
                p.push(dcid.len() as u8);
                p.extend_from_slice(&dcid);
                p.push(scid.len() as u8);
                p.extend_from_slice(&scid);
                p.push(token as u8);
                p.extend(std::iter::repeat(fill).take(token));
                let rest = size.saturating_sub(p.len() + 2);
                let length = if consistent { rest as u16 } else { length } & 0x3fff;
                p.extend_from_slice(&(length | 0x4000).to_be_bytes());
                p.resize(size, fill);
                p
            },
        );
    let short = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..1500))
        .prop_map(|(first, rest)| [vec![first & 0x7f], rest].concat());
    prop_oneof![prop::collection::vec(any::<u8>(), 0..1500), long, short]
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Arbitrary datagrams never panic and never create a connection (a well-formed Initial of at least
    /// 1200 bytes with a destination ID of 8 or more bytes is checked for authentication and counted);
    /// Version Negotiation only answers long headers of other versions in datagrams of at least 1200
    /// bytes.
    #[test]
    fn random_datagrams_never_panic_nor_create_connections(
        datagrams in prop::collection::vec((arb_addr(), arb_packet()), 1..8)
    ) {
        let mut ep = server();
        let mut unauthenticated = 0;
        let (mut conns, mut vns, mut not_unicast) = (0usize, 0usize, 0usize);
        for (remote, bytes) in &datagrams {
            // From an address that is not one host's, nothing is looked at.
            let from_a_host = crate::datagram::is_unicast(remote.ip().to_canonical()) && remote.port() != 0;
            not_unicast += usize::from(!from_a_host);
            let (conn, vn) = if from_a_host {
                oracle(bytes, &mut unauthenticated)
            } else {
                (false, false)
            };
            conns += usize::from(conn);
            vns += usize::from(vn);
            ep.handle_datagram(at(1), datagram(*remote, bytes));
            let _ = drive(&mut ep, at(1));
        }
        let stats = ep.stats();
        prop_assert_eq!(stats.connections_active, conns);
        prop_assert_eq!(stats.connections_incoming as usize, conns);
        prop_assert_eq!(stats.version_negotiations_sent as usize, vns);
        prop_assert_eq!(stats.datagrams_received as usize, datagrams.len());
        prop_assert_eq!(stats.dropped_unauthenticated as usize, unauthenticated);
        prop_assert_eq!(stats.dropped_not_unicast as usize, not_unicast);
        ep.handle_timeout(at(60_000));
    }
}

/// Once the handshake is over on both sides, neither connection holds Initial or Handshake space state
/// any more (RFC 9001 §4.9: their keys are discarded, and the state goes with them), and the server's
/// connections share the server's transport configuration instead of each holding a copy.
#[test]
fn a_client_confirmed_before_its_first_handshake_packet_releases_both_spaces() {
    // A second connection from the pair's client, stopped after the server's first flight: the client
    // has 1-RTT keys but has not sent a Handshake packet, so its Initial space is still live. A
    // HANDSHAKE_DONE now (which a conforming server cannot send yet) confirms the handshake; both
    // handshake spaces go, not only the Handshake one.
    let mut pair = peer_errors::Pair::new(TransportConfig::default());
    let now = pair.now;
    let config = pair.client_config.clone();
    let h = pair
        .client
        .connect(now, config, peer_errors::SERVER.parse().unwrap(), "localhost")
        .unwrap();
    let mut buf = Vec::new();
    for (from_client, from) in [(true, peer_errors::CLIENT), (false, peer_errors::SERVER)] {
        let (src, dst) = if from_client {
            (&mut pair.client, &mut pair.server)
        } else {
            (&mut pair.server, &mut pair.client)
        };
        while let Some(t) = src.poll_transmit(now, &mut buf) {
            for d in t.datagrams(&buf) {
                let datagram = Datagram {
                    remote: from.parse().unwrap(),
                    local: None,
                    ecn: None,
                    payload: BytesMut::from(d),
                };
                dst.handle_datagram(now, datagram);
            }
        }
    }
    let conn = &mut pair.client.table.get_mut(h).unwrap().conn;
    assert!(conn.one_rtt.is_some(), "the client has the server's flight");
    assert!(!conn.spaces[crate::conn::SpaceId::Initial.index()].discarded);
    conn.inject_frames_in(
        now,
        crate::conn::SpaceId::Data,
        &[crate::wire::frame::Frame::HandshakeDone],
    );
    assert!(conn.spaces.handshake_released());
    assert!(conn.recovery.handshake_spaces_released());
}

#[test]
fn sent_packet_storage_is_released_once_the_sender_is_idle() {
    let mut pair = peer_errors::Pair::new(TransportConfig::default());
    let client_h = pair.client.table.iter().map(|(h, _)| h).next().unwrap();
    let server_h = pair.server_h.unwrap();
    let holds = |ep: &Endpoint, h| ep.table.get(h).unwrap().conn.recovery.holds_sent_storage();
    assert!(!holds(&pair.client, client_h) && !holds(&pair.server, server_h));

    let now = pair.now;
    let data = vec![7u8; 40_000];
    {
        let mut conn = pair.client.conn(client_h).unwrap();
        let id = conn.open_uni().unwrap();
        assert_eq!(conn.stream(id).write(&data), Ok(data.len()));
    }
    let mut buf = Vec::new();
    assert!(pair.client.poll_transmit(now, &mut buf).is_some());
    assert!(holds(&pair.client, client_h), "packets in flight are recorded");

    // The transfer completes and everything is acknowledged: the last call to send found nothing
    // to send, and the storage went with it.
    pair.run(Duration::from_secs(2));
    let conn = &pair.client.table.get(client_h).unwrap().conn;
    assert_eq!(conn.recovery.bytes_in_flight(), 0);
    assert!(conn.stats.bytes_sent > 40_000);
    assert!(!holds(&pair.client, client_h) && !holds(&pair.server, server_h));
}

#[test]
fn established_connections_hold_no_handshake_space_state() {
    let mut pair = peer_errors::Pair::new(TransportConfig::default());
    let conns = |ep: &Endpoint| -> Vec<ConnectionHandle> { ep.table.iter().map(|(h, _)| h).collect() };
    let (client_h, server_h) = (conns(&pair.client)[0], pair.server_h.unwrap());
    // The packet spaces and the loss detector's record of them.
    let released = |ep: &Endpoint, h| {
        let conn = &ep.table.get(h).unwrap().conn;
        let (spaces, recovery) = (
            conn.spaces.handshake_released(),
            conn.recovery.handshake_spaces_released(),
        );
        assert_eq!(spaces, recovery, "both release together");
        spaces
    };
    assert!(released(&pair.client, client_h) && released(&pair.server, server_h));
    let shared = pair.server.server_transport.clone().unwrap();
    assert!(Arc::ptr_eq(
        &pair.server.table.get(server_h).unwrap().conn.config,
        &shared
    ));

    // CRYPTO data in a Handshake packet after the space is gone (as when the client's Finished and
    // more CRYPTO data share a packet, and the Finished confirms the handshake at the server) is
    // ignored without bringing the space back.
    let frame = crate::wire::frame::Frame::Crypto(crate::wire::frame::CryptoFrame {
        offset: 4000,
        data: bytes::Bytes::from_static(b"late"),
    });
    let now = pair.now;
    let conn = &mut pair.server.table.get_mut(server_h).unwrap().conn;
    conn.inject_frames_in(now, crate::conn::SpaceId::Handshake, &[frame]);
    assert!(conn.spaces.handshake_released());
    assert!(!conn.is_drained() && conn.close.is_none());

    // A second connection to the same server shares the same configuration; while its handshake is
    // under way, its client still holds the handshake spaces.
    let now = pair.now;
    let config = pair.client_config.clone();
    let h2 = pair
        .client
        .connect(now, config, peer_errors::SERVER.parse().unwrap(), "localhost");
    let h2 = h2.unwrap();
    assert!(!released(&pair.client, h2));
    pair.run(Duration::from_secs(1));
    let server_conns = conns(&pair.server);
    assert_eq!(server_conns.len(), 2);
    for h in server_conns {
        assert!(released(&pair.server, h));
        assert!(Arc::ptr_eq(
            &pair.server.table.get(h).unwrap().conn.config,
            &shared
        ));
    }
    assert!(released(&pair.client, h2));
    // The new connection still carries data: a stream reaches the server's second connection.
    let id = {
        let mut conn = pair.client.conn(h2).unwrap();
        let id = conn.open_uni().unwrap();
        let mut stream = conn.stream(id);
        assert_eq!(stream.write(b"after the handshake").unwrap(), 19);
        stream.finish().unwrap();
        id
    };
    pair.run(Duration::from_secs(1));
    let server_h2 = conns(&pair.server).into_iter().find(|h| *h != server_h).unwrap();
    let mut buf = [0u8; 64];
    let n = pair
        .server
        .conn(server_h2)
        .unwrap()
        .stream(id)
        .read(&mut buf)
        .unwrap();
    assert_eq!(&buf[..n.unwrap()], b"after the handshake");
}

/// A Retry to the client's first Initial, labelled `version`, with a valid integrity tag for `tag_version`.
fn retry_to(first: &[u8], version: u32, tag_version: u32) -> Vec<u8> {
    retry_from(first, version, tag_version, &[9; 8], b"token")
}

/// As [`retry_to`], with `scid` as the Retry's source connection ID and `token` as its token.
fn retry_from(first: &[u8], version: u32, tag_version: u32, scid: &[u8], token: &[u8]) -> Vec<u8> {
    let header = ProtectedHeader::decode(first, 0).unwrap();
    let (client_scid, odcid) = (*header.scid().unwrap(), *header.dcid());
    let mut pkt = vec![0xc0 | (crate::wire::header::LongType::Retry.to_bits(version) << 4)];
    pkt.extend_from_slice(&version.to_be_bytes());
    pkt.push(client_scid.len() as u8);
    pkt.extend_from_slice(&client_scid);
    pkt.push(scid.len() as u8);
    pkt.extend_from_slice(scid);
    pkt.extend_from_slice(token);
    let tag = crate::crypto::retry_tag(tag_version, &odcid, &pkt).unwrap();
    pkt.extend_from_slice(&tag);
    pkt
}

/// A client endpoint that started a connection to `server_addr` at `now`: its handle, its version and
/// the first datagram it sent (its first Initial).
fn started_client(now: Instant, server_addr: SocketAddr) -> (Endpoint, ConnectionHandle, u32, Vec<u8>) {
    let mut client = client();
    let h = client
        .connect(now, client_config(), server_addr, "localhost")
        .unwrap();
    let version = client.table.get(h).unwrap().conn.version;
    let (out, _) = drive(&mut client, now);
    let first = out[0].1.clone();
    (client, h, version, first)
}

#[test]
fn a_retry_of_another_version_is_discarded() {
    // RFC 9000 §5.2.1: a client discards a packet of another version than it selected, a Retry too;
    // before, one tagged with the connection version's key was followed.
    let now = at(0);
    let server_addr = addr(443);
    let (mut client, h, version, first) = started_client(now, server_addr);
    let other = if version == VERSION_1 {
        VERSION_2
    } else {
        VERSION_1
    };
    for (label, tag) in [(other, version), (other, other)] {
        client.handle_datagram(now, datagram(server_addr, &retry_to(&first, label, tag)));
        let _ = drive(&mut client, now);
        assert!(client.table.get(h).unwrap().conn.retry_scid.is_none());
    }
    // The same Retry in the connection's version is followed.
    client.handle_datagram(now, datagram(server_addr, &retry_to(&first, version, version)));
    let _ = drive(&mut client, now);
    assert!(client.table.get(h).unwrap().conn.retry_scid.is_some());
}

#[test]
fn a_second_retry_is_ignored() {
    // RFC 9000 §17.2.5.2: a client accepts one Retry per connection attempt and discards any later one,
    // even one whose integrity tag verifies.
    let now = at(0);
    let server_addr = addr(443);
    let (mut client, h, v, first) = started_client(now, server_addr);
    client.handle_datagram(
        now,
        datagram(server_addr, &retry_from(&first, v, v, &[9; 8], b"one")),
    );
    let _ = drive(&mut client, now);
    let followed = |client: &Endpoint| {
        let conn = &client.table.get(h).unwrap().conn;
        (conn.retry_scid, conn.remote_cid, conn.token.clone())
    };
    let after_first = followed(&client);
    assert_eq!(after_first.0.as_deref(), Some(&[9u8; 8][..]));
    client.handle_datagram(
        now,
        datagram(server_addr, &retry_from(&first, v, v, &[10; 8], b"two")),
    );
    let _ = drive(&mut client, now);
    assert_eq!(followed(&client), after_first, "the second Retry changed nothing");
    assert_eq!(&after_first.2[..], b"one");
}

#[test]
fn a_retry_whose_scid_is_the_first_dcid_is_ignored() {
    // RFC 9000 §17.2.5.2: a client discards a Retry whose Source Connection ID equals the Destination
    // Connection ID of its first Initial.
    let now = at(0);
    let server_addr = addr(443);
    let (mut client, h, v, first) = started_client(now, server_addr);
    let odcid = *ProtectedHeader::decode(&first, 0).unwrap().dcid();
    client.handle_datagram(
        now,
        datagram(server_addr, &retry_from(&first, v, v, &odcid, b"token")),
    );
    let _ = drive(&mut client, now);
    assert!(client.table.get(h).unwrap().conn.retry_scid.is_none());
    // The same Retry with another SCID is followed.
    client.handle_datagram(now, datagram(server_addr, &retry_to(&first, v, v)));
    let _ = drive(&mut client, now);
    assert!(client.table.get(h).unwrap().conn.retry_scid.is_some());
}

#[test]
fn version_negotiation_after_a_retry_is_ignored() {
    // RFC 9000 §6.2: a client that has processed a Retry discards a later Version Negotiation (which
    // would otherwise end the connection with VersionMismatch).
    let now = at(0);
    let (server_addr, client_addr) = (addr(443), addr(5000));
    let mut server = server_with(EndpointConfig::with_seed(1), |s| {
        s.retry = crate::RetryPolicy::Always
    });
    let (mut client, h, _, first) = started_client(now, server_addr);
    let first_header = ProtectedHeader::decode(&first, 0).unwrap();
    let (client_scid, client_dcid) = (*first_header.scid().unwrap(), *first_header.dcid());
    server.handle_datagram(now, datagram(client_addr, &first));
    let (out, _) = drive(&mut server, now);
    client.handle_datagram(now, datagram(server_addr, &out[0].1));
    let _ = drive(&mut client, now);
    assert!(
        client.table.get(h).unwrap().conn.retry_scid.is_some(),
        "the client followed the Retry"
    );
    // A Version Negotiation that echoes both connection IDs of the first Initial (RFC 9000 §17.2.1), so
    // only the rule of §6.2 (nothing after another packet) can drop it.
    let mut vn = vec![0x80, 0, 0, 0, 0, client_scid.len() as u8];
    vn.extend_from_slice(&client_scid);
    vn.push(client_dcid.len() as u8);
    vn.extend_from_slice(&client_dcid);
    vn.extend_from_slice(&0x1a2a_3a4au32.to_be_bytes());
    client.handle_datagram(now, datagram(server_addr, &vn));
    let (_, events) = drive(&mut client, now);
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::ConnectionLost { .. })),
        "{events:?}"
    );
}

#[test]
fn version_negotiation_must_echo_the_clients_connection_ids() {
    // RFC 9000 §17.2.1: a Version Negotiation echoes the client's SCID as its DCID and the client's first
    // DCID as its SCID, which shows it answers the Initial it names. One that names another DCID was made
    // by someone who did not see the Initial (and guessing the client's ID alone is easier than both:
    // with zero-length client IDs there is nothing to guess): it is ignored; the echoing one still ends
    // the attempt.
    let now = at(0);
    let server_addr = addr(443);
    let mut client = client();
    let h = client
        .connect(now, client_config(), server_addr, "localhost")
        .unwrap();
    let (out, _) = drive(&mut client, now);
    let first = ProtectedHeader::decode(&out[0].1, 0).unwrap();
    let (client_scid, client_dcid) = (*first.scid().unwrap(), *first.dcid());
    let vn = |dcid: &[u8], scid: &[u8]| {
        let mut vn = vec![0x80, 0, 0, 0, 0, dcid.len() as u8];
        vn.extend_from_slice(dcid);
        vn.push(scid.len() as u8);
        vn.extend_from_slice(scid);
        vn.extend_from_slice(&0x1a2a_3a4au32.to_be_bytes());
        vn
    };
    let lost = |events: &[(ConnectionHandle, Event)]| {
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::ConnectionLost { .. }))
    };
    client.handle_datagram(now, datagram(server_addr, &vn(&client_scid, &[7; 8])));
    let (_, events) = drive(&mut client, now);
    assert!(!lost(&events), "a forged SCID: {events:?}");
    assert!(client.table.get(h).is_some());
    client.handle_datagram(now, datagram(server_addr, &vn(&client_scid, &client_dcid)));
    let (_, events) = drive(&mut client, now);
    assert!(lost(&events), "the echoing one: {events:?}");
}

/// After a burst of connections has ended, the endpoint's queues and routing tables give their storage
/// back (they kept their largest size for good: 37 MB after 100,000 connections).
#[test]
fn the_endpoint_shrinks_back_after_a_burst() {
    let mut ep = Endpoint::new(EndpointConfig::with_seed(9), None);
    let config = ClientConfig::new(
        crate::crypto::tls::client_config(vec![], vec![b"x".to_vec()]).expect("client config"),
    );
    let mut now = epoch();
    for i in 0..20_000u32 {
        let to = SocketAddr::from(([10, 9, (i >> 8) as u8, i as u8], 443));
        ep.connect(now, config.clone(), to, "localhost").unwrap();
    }
    let peak = ep.routes.capacities();
    let mut buf = Vec::new();
    while let Some(t) = ep.poll_timeout() {
        now = now.max(t);
        ep.handle_timeout(now);
        while ep.poll_transmit(now, &mut buf).is_some() {}
        while ep.poll_event().is_some() {}
    }
    assert_eq!(ep.stats().connections_active, 0);
    // The application goes on polling: the event queue shrinks after a run of sparse drains.
    for _ in 0..SPARSE_DRAINS {
        assert!(ep.poll_event().is_none());
    }
    let held = [
        ep.events.capacity(),
        ep.timers.capacity(),
        ep.send_queue.capacity(),
        ep.dirty_timers.capacity(),
    ];
    assert!(
        held.iter().all(|&c| c <= 2048),
        "capacities after all ended: {held:?}"
    );
    let routes = ep.routes.capacities();
    assert!(peak[0] >= 20_000, "{peak:?}");
    assert!(
        routes.iter().all(|&c| c <= 2048),
        "routing tables after all ended: {routes:?}"
    );
}

/// Rounds of a few thousand events each, drained in between: the event queue keeps its size instead of
/// shrinking at every drain and growing again at every round.
#[test]
fn the_event_queue_is_not_reallocated_every_round() {
    let mut ep = Endpoint::new(EndpointConfig::with_seed(9), None);
    let h = ep
        .connect(
            epoch(),
            client_config(),
            "10.0.0.1:443".parse().unwrap(),
            "localhost",
        )
        .unwrap();
    let mut capacities = Vec::new();
    for _ in 0..40 {
        for _ in 0..3000 {
            ep.events.push_back((h, Event::Connected));
        }
        while ep.poll_event().is_some() {}
        capacities.push(ep.events.capacity());
    }
    // The first round grows the queue; no round after it changes its size.
    assert!(capacities[0] >= 3000, "{capacities:?}");
    assert!(capacities.iter().all(|&c| c == capacities[0]), "{capacities:?}");
}

/// RFC 9000 §17.2.2: Initial packets sent by a server carry no token; a client discards one that does (or
/// closes with PROTOCOL_VIOLATION). Here the forged server Initial carries a CONNECTION_CLOSE, which must
/// not end the connection.
#[test]
fn a_server_initial_with_a_token_is_discarded() {
    use crate::wire::frame::{ConnectionClose, Frame};
    use crate::wire::header::Header;
    use crate::wire::TransportError;

    let now = at(0);
    let server_addr = addr(443);
    let mut client = client();
    client
        .connect(now, client_config(), server_addr, "localhost")
        .unwrap();
    let (out, _) = drive(&mut client, now);
    let first = ProtectedHeader::decode(&out[0].1, 0).unwrap();
    let (client_dcid, client_scid) = (*first.dcid(), *first.scid().unwrap());
    let forged = |token: &'static [u8]| {
        let header = Header::Initial {
            version: VERSION_1,
            dcid: client_scid,
            scid: ConnectionId::new(&[0x5e; 8]).unwrap(),
            token: bytes::Bytes::from_static(token),
        };
        let close = Frame::Close(ConnectionClose::from(TransportError::protocol_violation(
            "forged",
        )));
        super::peer_errors::forged_initial(Side::Server, &client_dcid, &header, 0, &[close], 1200)
    };
    let lost = |events: &Events| {
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::ConnectionLost { .. }))
    };
    client.handle_datagram(now, datagram(server_addr, &forged(b"a token")));
    let (_, events) = drive(&mut client, now);
    assert!(!lost(&events), "{events:?}");
    // The same packet without a token is processed: the forgery itself is sound.
    client.handle_datagram(now, datagram(server_addr, &forged(b"")));
    let (_, events) = drive(&mut client, now);
    assert!(lost(&events), "{events:?}");
}

/// RFC 9001 §4.7: a HelloRetryRequest (the client's key share is for a group the server does not take)
/// keeps both sides at the Initial level for a second ClientHello; the handshake completes.
#[test]
fn a_hello_retry_request_handshake_completes() {
    use rustls::crypto::ring::{default_provider, kx_group};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let alpn = vec![b"x".to_vec()];
    let with_groups =
        |groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>| crate::crypto::tls::ConfigOptions {
            provider: Some(Arc::new(rustls::crypto::CryptoProvider {
                kx_groups: groups,
                ..default_provider()
            })),
            ..Default::default()
        };
    let server_tls = crate::crypto::tls::server_config_with(
        vec![ck.cert.der().clone()],
        key,
        alpn.clone(),
        &with_groups(vec![kx_group::SECP256R1]),
    )
    .unwrap();
    let client_tls = crate::crypto::tls::insecure_client_config_with(
        alpn,
        &with_groups(vec![kx_group::X25519, kx_group::SECP256R1]),
    )
    .unwrap();
    let mut server = Endpoint::new(EndpointConfig::with_seed(1), Some(ServerConfig::new(server_tls)));
    let mut client = client();
    let (server_addr, client_addr) = (addr(443), addr(5000));
    let mut now = at(0);
    client
        .connect(now, ClientConfig::new(client_tls), server_addr, "localhost")
        .unwrap();
    let mut events = Vec::new();
    for _ in 0..50 {
        let (out, ev) = drive(&mut client, now);
        events.extend(ev.into_iter().map(|(_, e)| (Side::Client, e)));
        for (t, d) in out {
            for one in t.datagrams(&d) {
                server.handle_datagram(now, datagram(client_addr, one));
            }
        }
        let (out, ev) = drive(&mut server, now);
        events.extend(ev.into_iter().map(|(_, e)| (Side::Server, e)));
        for (t, d) in out {
            for one in t.datagrams(&d) {
                client.handle_datagram(now, datagram(server_addr, one));
            }
        }
        now += Duration::from_millis(10);
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    for side in [Side::Client, Side::Server] {
        assert!(events.contains(&(side, Event::Connected)), "{side:?}: {events:?}");
    }
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, Event::ConnectionLost { .. })),
        "{events:?}"
    );
}

/// A Retry token's age decides what the client's Initial carrying it gets (RFC 9000 §8.1.2, §8.1.3,
/// §17.2.5.2): within the lifetime, a connection whose address is validated; past it by at most
/// `RETRY_GRACE` (the client's Initials were lost for a while, and it ignores another Retry), a
/// connection whose address is not validated; later, no connection but an INVALID_TOKEN close, so that
/// replaying an old token gains nothing (found in review: without the bound, tokens a year old opened a
/// connection each under `RetryPolicy::Always`, and one token could be replayed without end).
#[test]
fn a_retry_tokens_age_decides_validation_connection_or_close() {
    let server_addr = addr(443);
    let client_addr = addr(5000);
    for (wait, connection, validated) in [(0, true, true), (11, true, false), (72, false, false)] {
        let now = at(0);
        let mut server = server_with(EndpointConfig::with_seed(1), |s| {
            s.retry = crate::validation::RetryPolicy::Always;
        });
        let (mut client, _h, _v, first) = started_client(now, server_addr);
        server.handle_datagram(now, datagram(client_addr, &first));
        let (out, _) = drive(&mut server, now);
        let [(_, retry)] = &out[..] else {
            panic!("one Retry, got {}", out.len())
        };
        client.handle_datagram(now, datagram(server_addr, retry));
        let (out, _) = drive(&mut client, now);
        let later = now + Duration::from_secs(wait);
        server.handle_datagram(later, datagram(client_addr, &out[0].1));
        let (answer, _) = drive(&mut server, later);
        let conns: Vec<bool> = server.table.iter().map(|(_, e)| e.conn.path.validated).collect();
        let s = server.stats();
        if connection {
            assert_eq!(conns, vec![validated], "{wait} s");
            assert_eq!(
                (s.retry_tokens_accepted, s.expired_retry_tokens),
                (u64::from(validated), u64::from(!validated)),
                "{wait} s"
            );
        } else {
            assert!(conns.is_empty(), "{wait} s: {conns:?}");
            assert_eq!(
                (s.dropped_invalid_retry_token, s.invalid_token_closes_sent),
                (1, 1),
                "{wait} s"
            );
            assert!(
                answer.len() == 1 && answer[0].1.len() < 100,
                "{wait} s: one small close"
            );
        }
    }
}

#[test]
fn a_retry_with_an_empty_or_oversized_token_or_a_bad_tag_is_ignored() {
    // RFC 9000 §17.2.5.2: a client discards a Retry with a zero-length token, and one whose integrity tag
    // does not verify (RFC 9001 §5.8); one whose token would leave no room for the ClientHello in a
    // 1200-byte Initial is discarded too (anyone who saw the first Initial can make a Retry).
    let now = at(0);
    let server_addr = addr(443);
    let (mut client, h, v, first) = started_client(now, server_addr);
    let oversized = vec![7u8; crate::conn::MAX_CLIENT_TOKEN + 1];
    let mut bad_tag = retry_to(&first, v, v);
    *bad_tag.last_mut().unwrap() ^= 1;
    for retry in [
        retry_from(&first, v, v, &[9; 8], b""),
        retry_from(&first, v, v, &[9; 8], &oversized),
        bad_tag,
    ] {
        client.handle_datagram(now, datagram(server_addr, &retry));
        let (out, _) = drive(&mut client, now);
        assert!(out.is_empty(), "a discarded Retry made the client send");
        assert!(client.table.get(h).unwrap().conn.retry_scid.is_none());
    }
    // The largest token that fits is followed, and the next Initial carries it to the Retry's SCID.
    let fits = vec![7u8; crate::conn::MAX_CLIENT_TOKEN];
    client.handle_datagram(
        now,
        datagram(server_addr, &retry_from(&first, v, v, &[9; 8], &fits)),
    );
    let (out, _) = drive(&mut client, now);
    let next = ProtectedHeader::decode(&out[0].1, 0).unwrap();
    assert_eq!(&next.dcid()[..], &[9; 8]);
    assert_eq!(next.token(&out[0].1), &fits[..]);
    assert!(out[0].1.len() >= 1200);
}

#[test]
fn a_retry_after_the_servers_initial_is_ignored() {
    // RFC 9000 §17.2.5.2: "After the client has received and processed an Initial or Retry packet from
    // the server, it MUST discard any subsequent Retry packets that it receives."
    let now = at(0);
    let (server_addr, client_addr) = (addr(443), addr(5000));
    let mut server = server();
    let (mut client, h, v, first) = started_client(now, server_addr);
    server.handle_datagram(now, datagram(client_addr, &first));
    let (out, _) = drive(&mut server, now);
    client.handle_datagram(now, datagram(server_addr, &out[0].1));
    let _ = drive(&mut client, now);
    let conn = &client.table.get(h).unwrap().conn;
    let before = (conn.remote_cid, conn.token.clone());
    assert!(
        conn.stats.packets_received > 0,
        "the server's Initial was processed"
    );
    client.handle_datagram(now, datagram(server_addr, &retry_to(&first, v, v)));
    let _ = drive(&mut client, now);
    let conn = &client.table.get(h).unwrap().conn;
    assert!(conn.retry_scid.is_none());
    assert_eq!((conn.remote_cid, conn.token.clone()), before);
}

/// RFC 9000 §14.1: "A client MUST expand the payload of all UDP datagrams carrying Initial packets to at
/// least ... 1200 bytes": its CONNECTION_CLOSE in an Initial packet too, though not ack-eliciting (only the
/// server's rule is limited to ack-eliciting Initials). A server discards an Initial in a smaller datagram,
/// so an unpadded close never reaches it.
#[test]
fn a_clients_close_in_an_initial_packet_is_padded_to_1200_bytes() {
    let now = at(0);
    let (mut client, h, _, first) = started_client(now, addr(443));
    assert!(first.len() >= 1200);
    client.conn(h).unwrap().close(now, 7, b"bye");
    let (out, _) = drive(&mut client, now);
    assert!(!out.is_empty(), "the close goes out");
    // The client holds Initial keys only: every datagram carries an Initial packet.
    for (t, bytes) in &out {
        assert!(bytes[0] & 0x80 != 0, "a long header");
        assert!(
            t.size >= 1200,
            "a client datagram with an Initial of {} bytes",
            t.size
        );
    }
}

/// `handle_batch` splits a buffer at its stride however the two compare, as a receive offload (GRO)
/// would have joined the datagrams: an exact multiple, a shorter last datagram, a stride of 0 (one
/// datagram), of 1, longer than the buffer or than any datagram can be, and an empty buffer (one empty
/// datagram). Every datagram is counted once as received and once as dropped, none lost or merged.
#[test]
fn handle_batch_counts_each_datagram_whatever_the_stride() {
    // A version 1 long header cut short after its version: malformed however it is cut further.
    let segment: &[u8] = &[0xc0, 0, 0, 0, 1];
    let four = segment.repeat(4);
    let with_tail = [&four[..], &[0xc0, 0, 0]].concat();
    let cases: [(&[u8], usize, u64); 9] = [
        (&four, 5, 4),
        (&with_tail, 5, 5),
        (&four, 0, 1),
        (&four, 100, 1),
        (&four, usize::MAX, 1),
        (&four, 70_000, 1),
        (&[0xc0; 23], 1, 23),
        (&[], 0, 1),
        (&[], 7, 1),
    ];
    let mut ep = client();
    let now = at(0);
    for (payload, stride, datagrams) in cases {
        let before = ep.stats();
        ep.handle_batch(now, datagram(addr(443), payload), stride);
        let after = ep.stats();
        let case = format!("{} bytes at stride {stride}", payload.len());
        assert_eq!(
            after.datagrams_received - before.datagrams_received,
            datagrams,
            "{case}"
        );
        assert_eq!(
            after.dropped_malformed - before.dropped_malformed,
            datagrams,
            "{case}"
        );
        let (out, events) = drive(&mut ep, now);
        assert!(out.is_empty() && events.is_empty(), "{case}");
    }
}
