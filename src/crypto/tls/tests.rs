//! In-memory handshakes between two [`RustlsSession`]s, shuttling CRYPTO bytes level by level exactly as a
//! connection would, and checks of the key adapters against our own `ring` keys.

use std::sync::Arc;

use ::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use proptest::prelude::*;

use super::*;
use crate::crypto::{apply_header_mask, initial_keys, CryptoError, HeaderKey};
use crate::wire::header::VERSION_1;
use crate::wire::transport_params::TransportParameters;
use crate::wire::{ConnectionId, ResetToken, TransportErrorCode, VarInt};

const ALL_SUITES: [Suite; 3] = [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::ChaCha20Poly1305];
const ALPN: &[u8] = b"hq-interop";

/// A self-signed certificate for `name` and its key.
fn cert(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .expect("rcgen makes a certificate for a DNS name");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    (certified.cert.der().clone(), key)
}

fn client_params() -> TransportParameters {
    TransportParameters {
        initial_max_data: VarInt::from_u32(1 << 20),
        initial_max_streams_bidi: VarInt::from_u32(100),
        initial_source_connection_id: ConnectionId::new(&[1, 2, 3, 4]),
        ..TransportParameters::default()
    }
}

fn server_params() -> TransportParameters {
    TransportParameters {
        original_destination_connection_id: ConnectionId::new(&[9; 8]),
        initial_source_connection_id: ConnectionId::new(&[5, 6, 7, 8]),
        stateless_reset_token: Some(ResetToken([0xab; 16])),
        max_idle_timeout: VarInt::from_u32(30_000),
        initial_max_stream_data_uni: VarInt::from_u32(4096),
        ..TransportParameters::default()
    }
}

/// One side of the shuttle: a session, the level it writes at, and the keys it has been given.
struct Peer {
    session: RustlsSession,
    write_level: Level,
    handshake: Option<Keys>,
    one_rtt: Option<Keys>,
}

impl Peer {
    fn new(session: RustlsSession) -> Self {
        Self {
            session,
            write_level: Level::Initial,
            handshake: None,
            one_rtt: None,
        }
    }

    /// Everything the session has to send, tagged with its level, installing keys as a connection would.
    fn flush(&mut self) -> Vec<(Level, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            let change = self.session.write_handshake(&mut buf);
            if !buf.is_empty() {
                // Bytes written before a key change belong to the old level.
                out.push((self.write_level, buf));
            }
            match change {
                None => return out,
                Some(KeyChange::Handshake(keys)) => {
                    assert_eq!(self.write_level, Level::Initial);
                    self.write_level = Level::Handshake;
                    self.handshake = Some(keys);
                }
                Some(KeyChange::OneRtt(keys)) => {
                    assert_eq!(self.write_level, Level::Handshake);
                    self.write_level = Level::OneRtt;
                    self.one_rtt = Some(keys);
                }
            }
        }
    }
}

/// The side that failed and its error.
type Failure = (Side, TransportError);

/// Shuttles handshake bytes until neither side has anything to send; fails with the first error.
fn drive(client: &mut Peer, server: &mut Peer) -> Result<(), Failure> {
    for _ in 0..16 {
        let from_client = client.flush();
        let from_server = server.flush();
        if from_client.is_empty() && from_server.is_empty() {
            return Ok(());
        }
        for (level, bytes) in from_client {
            server
                .session
                .read_handshake(level, &bytes)
                .map_err(|e| (Side::Server, e))?;
        }
        for (level, bytes) in from_server {
            client
                .session
                .read_handshake(level, &bytes)
                .map_err(|e| (Side::Client, e))?;
        }
    }
    panic!("the handshake did not settle within 16 round trips");
}

/// A client session connecting to `name` and a server session, with the test transport parameters.
fn pair_with(
    client_config: Arc<::rustls::ClientConfig>,
    name: &str,
    server_config: Arc<::rustls::ServerConfig>,
) -> (Peer, Peer) {
    let client = RustlsSession::client(client_config, name, &client_params(), VERSION_1)
        .expect("valid client session");
    let server =
        RustlsSession::server(server_config, &server_params(), VERSION_1).expect("valid server session");
    (Peer::new(client), Peer::new(server))
}

/// A client and server that trust each other, with the same ALPN and the given suites on both sides.
fn pair(suites: &[Suite]) -> (Peer, Peer) {
    let (cert, key) = cert("localhost");
    let options = ConfigOptions::suites(suites);
    let client =
        client_config_with(vec![cert.clone()], vec![ALPN.to_vec()], &options).expect("valid client config");
    let server =
        server_config_with(vec![cert], key, vec![ALPN.to_vec()], &options).expect("valid server config");
    pair_with(client, "localhost", server)
}

/// A packet with a short or long header carrying a `pn_len`-byte packet number, sealed and protected with
/// `sender`, opens with `receiver` back to the same header and payload.
fn check_direction(sender: &DirectionalKeys, receiver: &DirectionalKeys) {
    check_with(
        (sender.packet.as_ref(), sender.header.as_ref()),
        (receiver.packet.as_ref(), receiver.header.as_ref()),
    );
}

/// [`check_direction`] on separate packet and header keys.
fn check_with(sender: (&dyn PacketKey, &dyn HeaderKey), receiver: (&dyn PacketKey, &dyn HeaderKey)) {
    let (seal_key, protect_key) = sender;
    let (open_key, unprotect_key) = receiver;
    for long in [false, true] {
        for pn_len in 1..=4usize {
            let pn: u64 = 0x0102_0304 & ((1u64 << (8 * pn_len)) - 1);
            let mut packet = vec![if long { 0xc0 } else { 0x40 } | (pn_len as u8 - 1)];
            packet.extend_from_slice(&[0x11; 8]);
            let pn_offset = packet.len();
            packet.extend_from_slice(&pn.to_be_bytes()[8 - pn_len..]);
            let header_len = packet.len();
            let payload: Vec<u8> = (0..40u8).collect();
            packet.extend_from_slice(&payload);
            packet.extend(std::iter::repeat(0).take(seal_key.tag_len()));
            let plain_header = packet[..header_len].to_vec();

            seal_key.seal(pn, &mut packet, header_len).expect("seal");
            protect_key.protect(pn_offset, &mut packet).expect("protect");
            // No "header changed" check: a mask whose used bits are all zero happens (the RFC 9001 Appendix
            // A.1 DCID with pn 4 and this payload gives one for pn_len 1).

            unprotect_key
                .unprotect(pn_offset, &mut packet)
                .expect("unprotect");
            assert_eq!(packet[..header_len], plain_header[..], "header restored");
            let n = open_key.open(pn, &mut packet, header_len).expect("open");
            assert_eq!(&packet[header_len..header_len + n], &payload[..]);

            // A flipped payload bit does not authenticate.
            let mut forged = packet.clone();
            forged[..header_len].copy_from_slice(&plain_header);
            forged[header_len..header_len + n].copy_from_slice(&payload);
            seal_key.seal(pn, &mut forged, header_len).expect("seal");
            forged[header_len] ^= 1;
            assert_eq!(
                open_key.open(pn, &mut forged, header_len),
                Err(CryptoError::DecryptionFailed)
            );
        }
    }
}

/// `a`'s local keys talk to `b`'s remote keys and the other way round.
fn check_keys(a: &Keys, b: &Keys) {
    check_direction(&a.local, &b.remote);
    check_direction(&b.local, &a.remote);
}

fn assert_crypto_error(error: &TransportError) {
    assert!(
        error.code.tls_alert().is_some(),
        "expected a CRYPTO_ERROR, got {error}"
    );
    assert!(!error.reason.is_empty());
}

#[test]
fn full_handshake() {
    let (cert, key) = cert("localhost");
    let client_config =
        client_config(vec![cert.clone()], vec![b"h3".to_vec(), ALPN.to_vec()]).expect("client config");
    let server_config = server_config(vec![cert.clone()], key, vec![ALPN.to_vec()]).expect("server config");
    let (mut client, mut server) = pair_with(client_config, "localhost", server_config);
    assert!(client.session.is_handshaking() && server.session.is_handshaking());
    drive(&mut client, &mut server).expect("handshake succeeds");
    assert!(!client.session.is_handshaking() && !server.session.is_handshaking());

    let (c, s) = (&client, &server);
    check_keys(
        c.handshake.as_ref().expect("client handshake keys"),
        s.handshake.as_ref().expect("server handshake keys"),
    );
    check_keys(
        c.one_rtt.as_ref().expect("client 1-RTT keys"),
        s.one_rtt.as_ref().expect("server 1-RTT keys"),
    );
    assert_eq!((c.write_level, s.write_level), (Level::OneRtt, Level::OneRtt));

    // RFC 9001 §8.1, SNI and §8.2.
    assert_eq!(c.session.alpn_protocol(), Some(ALPN));
    assert_eq!(s.session.alpn_protocol(), Some(ALPN));
    assert_eq!(c.session.server_name(), Some("localhost"));
    assert_eq!(s.session.server_name(), Some("localhost"));
    let from_server = c.session.peer_transport_parameters().expect("server params");
    assert_eq!(
        TransportParameters::decode(Side::Server, from_server),
        Ok(server_params())
    );
    let from_client = s.session.peer_transport_parameters().expect("client params");
    assert_eq!(
        TransportParameters::decode(Side::Client, from_client),
        Ok(client_params())
    );
    assert_eq!(c.session.suite(), s.session.suite());
    assert!(c.session.suite().is_some());
    assert_eq!(c.session.side(), Side::Client);
    assert_eq!(s.session.side(), Side::Server);
    assert_eq!(c.session.peer_certificates(), Some(vec![cert.as_ref().to_vec()]));
    assert_eq!(s.session.peer_certificates(), None, "no client authentication");
    assert!(c.session.zero_rtt_keys().is_none() && s.session.zero_rtt_keys().is_none());
}

#[test]
fn each_suite_forced_on_both_sides() {
    for suite in ALL_SUITES {
        let (mut client, mut server) = pair(&[suite]);
        drive(&mut client, &mut server).expect("handshake succeeds");
        assert_eq!(client.session.suite(), Some(suite));
        assert_eq!(server.session.suite(), Some(suite));
        check_keys(
            client.handshake.as_ref().expect("handshake keys"),
            server.handshake.as_ref().expect("handshake keys"),
        );
        check_keys(
            client.one_rtt.as_ref().expect("1-RTT keys"),
            server.one_rtt.as_ref().expect("1-RTT keys"),
        );
    }
}

#[test]
fn client_preference_order_is_offered() {
    let (cert, key) = cert("localhost");
    let client = client_config_with(
        vec![cert.clone()],
        vec![ALPN.to_vec()],
        &ConfigOptions::suites(&[Suite::ChaCha20Poly1305, Suite::Aes256Gcm]),
    )
    .expect("client config");
    let server = server_config_with(
        vec![cert],
        key,
        vec![ALPN.to_vec()],
        &ConfigOptions::suites(&[Suite::Aes256Gcm, Suite::Aes128Gcm]),
    )
    .expect("server config");
    let (mut client, mut server) = pair_with(client, "localhost", server);
    drive(&mut client, &mut server).expect("handshake succeeds on the common suite");
    assert_eq!(client.session.suite(), Some(Suite::Aes256Gcm));
}

#[test]
fn disjoint_suites_fail_with_handshake_failure() {
    let (cert, key) = cert("localhost");
    let client = client_config_with(
        vec![cert.clone()],
        vec![ALPN.to_vec()],
        &ConfigOptions::suites(&[Suite::Aes128Gcm]),
    )
    .expect("client config");
    let server = server_config_with(
        vec![cert],
        key,
        vec![ALPN.to_vec()],
        &ConfigOptions::suites(&[Suite::ChaCha20Poly1305]),
    )
    .expect("server config");
    let (mut client, mut server) = pair_with(client, "localhost", server);
    let (side, error) = drive(&mut client, &mut server).expect_err("no common suite");
    assert_eq!(side, Side::Server);
    // handshake_failure (40).
    assert_eq!(error.code, TransportErrorCode::crypto(40));
}

#[test]
fn next_1rtt_keys_match() {
    for suite in ALL_SUITES {
        let (mut client, mut server) = pair(&[suite]);
        assert!(client.session.next_1rtt_keys().is_none(), "no 1-RTT keys yet");
        assert!(client.session.peek_next_1rtt_remote_key().is_none());
        drive(&mut client, &mut server).expect("handshake succeeds");
        let c1 = client.one_rtt.take().expect("client 1-RTT keys");
        let s1 = server.one_rtt.take().expect("server 1-RTT keys");
        let mut previous = seal_sample(c1.local.packet.as_ref());
        for _phase in 1..=3 {
            // Peeking does not advance: twice in a row, then the pair, all give the same receive key.
            let c_peeked = client.session.peek_next_1rtt_remote_key().expect("client peek");
            let c_peeked_again = client.session.peek_next_1rtt_remote_key().expect("client peek");
            let s_peeked = server.session.peek_next_1rtt_remote_key().expect("server peek");
            let (c_local, c_remote) = client.session.next_1rtt_keys().expect("client next keys");
            let (s_local, s_remote) = server.session.next_1rtt_keys().expect("server next keys");
            for peeked in [&c_peeked, &c_peeked_again] {
                check_with(
                    (s_local.as_ref(), s1.local.header.as_ref()),
                    (peeked.as_ref(), c1.remote.header.as_ref()),
                );
            }
            check_with(
                (c_local.as_ref(), c1.local.header.as_ref()),
                (s_peeked.as_ref(), s1.remote.header.as_ref()),
            );
            // Header keys stay the same across key phases (RFC 9001 §6.1).
            check_with(
                (c_local.as_ref(), c1.local.header.as_ref()),
                (s_remote.as_ref(), s1.remote.header.as_ref()),
            );
            check_with(
                (s_local.as_ref(), s1.local.header.as_ref()),
                (c_remote.as_ref(), c1.remote.header.as_ref()),
            );
            // Every phase has a new packet key.
            let sealed = seal_sample(c_local.as_ref());
            assert_ne!(previous, sealed);
            previous = sealed;
        }
        // Phase 0 keys do not open packets of a later phase.
        let (later, _) = client.session.next_1rtt_keys().expect("more phases");
        let mut packet = vec![0u8; 40];
        later.seal(7, &mut packet, 4).expect("seal");
        assert_eq!(
            s1.remote.packet.open(7, &mut packet, 4),
            Err(CryptoError::DecryptionFailed)
        );
    }
}

fn seal_sample(key: &dyn PacketKey) -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    key.seal(1, &mut packet, 4).expect("seal");
    packet
}

/// RFC 9001 §8.1: no common application protocol is no_application_protocol, CRYPTO_ERROR 0x0178.
#[test]
fn alpn_mismatch_is_0x178() {
    let (cert, key) = cert("localhost");
    let client = client_config(vec![cert.clone()], vec![b"h3".to_vec()]).expect("client config");
    let server = server_config(vec![cert], key, vec![b"hq-interop".to_vec()]).expect("server config");
    let (mut client, mut server) = pair_with(client, "localhost", server);
    let (side, error) = drive(&mut client, &mut server).expect_err("ALPN mismatch");
    assert_eq!(side, Side::Server);
    assert_eq!(error.code, TransportErrorCode(0x178));
    assert!(error.reason.contains("protocol"), "{error}");
}

/// A server with ALPN configured rejects a client that offers none (RFC 9001 §8.1).
#[test]
fn server_with_alpn_rejects_client_without_alpn() {
    let (cert, key) = cert("localhost");
    let client = client_config(vec![cert.clone()], Vec::new()).expect("client config");
    let server = server_config(vec![cert], key, vec![ALPN.to_vec()]).expect("server config");
    let (mut client, mut server) = pair_with(client, "localhost", server);
    let (side, error) = drive(&mut client, &mut server).expect_err("no ALPN offered");
    assert_eq!(side, Side::Server);
    assert_eq!(error.code, TransportErrorCode(0x178));
}

/// Without ALPN on either side, the application protocol is taken as agreed out of band.
#[test]
fn no_alpn_on_either_side_completes() {
    let (cert, key) = cert("localhost");
    let client = client_config(vec![cert.clone()], Vec::new()).expect("client config");
    let server = server_config(vec![cert], key, Vec::new()).expect("server config");
    let (mut client, mut server) = pair_with(client, "localhost", server);
    drive(&mut client, &mut server).expect("handshake succeeds");
    assert_eq!(client.session.alpn_protocol(), None);
    assert_eq!(server.session.alpn_protocol(), None);
}

#[test]
fn certificate_for_another_name_fails_on_client() {
    let (cert, key) = cert("example.org");
    let client = client_config(vec![cert.clone()], vec![ALPN.to_vec()]).expect("client config");
    let server = server_config(vec![cert], key, vec![ALPN.to_vec()]).expect("server config");
    let (mut client, mut server) = pair_with(client, "localhost", server);
    let (side, error) = drive(&mut client, &mut server).expect_err("wrong name");
    assert_eq!(side, Side::Client);
    assert_crypto_error(&error);
}

#[test]
fn untrusted_certificate_fails_on_client_but_insecure_config_accepts_it() {
    let (trusted, _) = cert("localhost");
    let (presented, key) = cert("localhost");
    let server = server_config(vec![presented], key, vec![ALPN.to_vec()]).expect("server config");

    let client = client_config(vec![trusted], vec![ALPN.to_vec()]).expect("client config");
    let (mut c, mut s) = pair_with(client, "localhost", server.clone());
    let (side, error) = drive(&mut c, &mut s).expect_err("untrusted certificate");
    assert_eq!(side, Side::Client);
    assert_crypto_error(&error);

    let (mut c, mut s) = pair_with(insecure_client_config(vec![ALPN.to_vec()]), "localhost", server);
    drive(&mut c, &mut s).expect("the insecure config accepts any certificate");
    check_keys(
        c.one_rtt.as_ref().expect("1-RTT keys"),
        s.one_rtt.as_ref().expect("1-RTT keys"),
    );
}

#[test]
fn insecure_config_with_forced_suite() {
    let (cert, key) = cert("localhost");
    let server = server_config(vec![cert], key, vec![ALPN.to_vec()]).expect("server config");
    let options = ConfigOptions::suites(&[Suite::ChaCha20Poly1305]);
    let client = insecure_client_config_with(vec![ALPN.to_vec()], &options).expect("config");
    let (mut c, mut s) = pair_with(client, "any.name.example", server);
    drive(&mut c, &mut s).expect("handshake succeeds");
    assert_eq!(s.session.suite(), Some(Suite::ChaCha20Poly1305));
    assert_eq!(s.session.server_name(), Some("any.name.example"));
}

#[test]
fn configuration_errors() {
    let (cert, key) = cert("localhost");
    // A provider without QUIC-capable suites, or a restriction it cannot meet.
    let only_aes128 = Arc::new(::rustls::crypto::CryptoProvider {
        cipher_suites: vec![::rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..::rustls::crypto::ring::default_provider()
    });
    let options = ConfigOptions {
        suites: vec![Suite::ChaCha20Poly1305],
        provider: Some(only_aes128.clone()),
        time_provider: None,
    };
    assert_eq!(
        client_config_with(vec![cert.clone()], Vec::new(), &options).err(),
        Some(TlsConfigError::NoCipherSuite)
    );
    assert_eq!(
        server_config_with(vec![cert.clone()], key.clone_key(), Vec::new(), &options).err(),
        Some(TlsConfigError::NoCipherSuite)
    );
    let options = ConfigOptions {
        suites: Vec::new(),
        provider: Some(only_aes128),
        time_provider: None,
    };
    assert!(insecure_client_config_with(Vec::new(), &options).is_ok());

    // A root that is not a certificate.
    assert!(matches!(
        client_config(vec![CertificateDer::from(vec![1, 2, 3])], Vec::new()),
        Err(TlsConfigError::InvalidRootCertificate(_))
    ));
    // A key that does not match the certificate.
    let (_, other_key) = self::cert("localhost");
    assert!(matches!(
        server_config(vec![cert.clone()], other_key, Vec::new()),
        Err(TlsConfigError::Rustls(_))
    ));
    // A server name that is neither a DNS name nor an IP address.
    let config = client_config(vec![cert], Vec::new()).expect("client config");
    assert!(matches!(
        RustlsSession::client(config, "not a name!", &client_params(), VERSION_1),
        Err(TlsConfigError::InvalidServerName(_))
    ));
    assert!(TlsConfigError::NoCipherSuite.to_string().contains("cipher suite"));
}

/// A wall clock fixed at one instant.
#[derive(Debug)]
struct FixedTime(::rustls::pki_types::UnixTime);

impl ::rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<::rustls::pki_types::UnixTime> {
        Some(self.0)
    }
}

/// The configuration's clock is the one certificates are checked against: rcgen certificates are valid
/// from 1975, so at the Unix epoch the client rejects the server's.
#[test]
fn time_provider_is_used_for_certificate_validity() {
    let (cert, key) = cert("localhost");
    let server = server_config(vec![cert.clone()], key, vec![ALPN.to_vec()]).expect("server config");
    let at = |secs| ConfigOptions {
        time_provider: Some(Arc::new(FixedTime(
            ::rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        ))),
        ..ConfigOptions::default()
    };

    let client = client_config_with(vec![cert.clone()], vec![ALPN.to_vec()], &at(0)).expect("config");
    let (mut c, mut s) = pair_with(client, "localhost", server.clone());
    let (side, error) = drive(&mut c, &mut s).expect_err("certificate not yet valid");
    assert_eq!(side, Side::Client);
    assert_crypto_error(&error);

    // 2020-01-01.
    let client = client_config_with(vec![cert], vec![ALPN.to_vec()], &at(1_577_836_800)).expect("config");
    let (mut c, mut s) = pair_with(client, "localhost", server);
    drive(&mut c, &mut s).expect("valid at that time");
}

/// RFC 9001 §4.1.3: data at a level TLS does not read at is a PROTOCOL_VIOLATION, and the session stays
/// failed.
#[test]
fn data_at_the_wrong_level_is_a_protocol_violation() {
    let (mut client, mut server) = pair(&[]);
    let hello = client.flush();
    assert_eq!(hello.len(), 1);
    assert_eq!(hello[0].0, Level::Initial);
    let error = server
        .session
        .read_handshake(Level::Handshake, &hello[0].1)
        .expect_err("a ClientHello at the Handshake level");
    assert_eq!(error.code, TransportErrorCode::PROTOCOL_VIOLATION);
    // Stays failed, even for data at the right level, and has nothing more to send.
    assert_eq!(
        server.session.read_handshake(Level::Initial, &hello[0].1),
        Err(error)
    );
    assert!(server.flush().is_empty());

    // 0-RTT packets never carry CRYPTO frames.
    let (mut client, mut server) = pair(&[]);
    let hello = client.flush();
    let error = server
        .session
        .read_handshake(Level::ZeroRtt, &hello[0].1)
        .expect_err("CRYPTO data in 0-RTT");
    assert_eq!(error.code, TransportErrorCode::PROTOCOL_VIOLATION);
}

/// RFC 9001 §8.4: a ClientHello with a non-empty legacy_session_id (TLS's middlebox compatibility mode,
/// which QUIC does without) is a PROTOCOL_VIOLATION at the server (SHOULD), however the bytes are cut.
/// Before, `rustls` took it and echoed the ID.
#[test]
fn a_client_hello_with_a_legacy_session_id_is_a_protocol_violation() {
    let (mut client, _) = pair(&[]);
    let hello = client.flush().remove(0).1;
    assert_eq!(
        (hello[0], hello[38]),
        (1, 0),
        "a ClientHello, without a session ID"
    );
    let mut with_id = hello[..39].to_vec();
    with_id[38] = 32;
    with_id.extend_from_slice(&[0x5a; 32]);
    with_id.extend_from_slice(&hello[39..]);
    let body = u32::try_from(with_id.len() - 4).unwrap().to_be_bytes();
    with_id[1..4].copy_from_slice(&body[1..]);
    for cut in [with_id.len(), 39, 38, 10] {
        let (_, mut server) = pair(&[]);
        let first = server.session.read_handshake(Level::Initial, &with_id[..cut]);
        let result = first.and_then(|()| server.session.read_handshake(Level::Initial, &with_id[cut..]));
        let error = result.expect_err("a legacy_session_id");
        assert_eq!(
            error.code,
            TransportErrorCode::PROTOCOL_VIOLATION,
            "cut at {cut}: {error:?}"
        );
    }
    // The unmodified ClientHello, cut anywhere, is taken.
    for cut in [hello.len(), 39, 38, 10] {
        let (_, mut server) = pair(&[]);
        server
            .session
            .read_handshake(Level::Initial, &hello[..cut])
            .expect("first piece");
        server
            .session
            .read_handshake(Level::Initial, &hello[cut..])
            .expect("rest");
        assert!(!server.flush().is_empty(), "the server answers");
    }
}

/// A NewSessionTicket: lifetime 3600 s, age_add 1, nonce 0x00, ticket 0xaa, no extensions.
const TICKET: [u8; 19] = [
    0x04, 0, 0, 0x0f, 0, 0, 0x0e, 0x10, 0, 0, 0, 1, 1, 0, 0, 1, 0xaa, 0, 0,
];

/// Runs a handshake to its end and returns the client, which then reads at 1-RTT.
fn connected_client() -> Peer {
    let (mut client, mut server) = pair(&[]);
    drive(&mut client, &mut server).expect("handshake succeeds");
    client
}

/// RFC 9001 §4.4: "clients MUST treat receipt of such messages [a post-handshake CertificateRequest] as
/// a connection error of type PROTOCOL_VIOLATION"; §4.6.1: a NewSessionTicket whose early_data
/// extension holds another value than 0xffffffff is one too. Before, they closed with CRYPTO_ERROR
/// (unexpected_message, 0x10a) and INTERNAL_ERROR (0x150).
#[test]
fn post_handshake_messages_rfc_9001_forbids_are_protocol_violations() {
    // CertificateRequest: context length 0, extensions: signature_algorithms (ecdsa_secp256r1_sha256).
    let certificate_request = [0x0d, 0, 0, 0x0b, 0, 0, 8, 0, 0x0d, 0, 4, 0, 2, 4, 3];
    // NewSessionTicket: lifetime 3600 s, age_add 1, nonce 0x00, ticket 0xaa, early_data = 5.
    let ticket_early_data_5 = [
        0x04, 0, 0, 0x17, 0, 0, 0x0e, 0x10, 0, 0, 0, 1, 1, 0, 0, 1, 0xaa, 0, 8, 0, 0x2a, 0, 4, 0, 0, 0, 5,
    ];
    for message in [&certificate_request[..], &ticket_early_data_5[..]] {
        let mut client = connected_client();
        let error = client
            .session
            .read_handshake(Level::OneRtt, message)
            .expect_err("a forbidden message");
        assert_eq!(error.code, TransportErrorCode::PROTOCOL_VIOLATION, "{error:?}");
    }
    // The same ticket without early_data is taken.
    connected_client()
        .session
        .read_handshake(Level::OneRtt, &TICKET)
        .expect("a NewSessionTicket");
}

/// RFC 9001 §4.1.3: data TLS has not consumed when it provides keys for the next level is a
/// PROTOCOL_VIOLATION, also when it came in the same piece as the message that changed the keys (here a
/// NewSessionTicket right behind the server's Finished). Before, that case was CRYPTO_ERROR 0x10a.
#[test]
fn data_behind_a_key_change_in_the_same_piece_is_a_protocol_violation() {
    let (mut client, mut server) = pair(&[]);
    for (level, bytes) in client.flush() {
        server.session.read_handshake(level, &bytes).expect("ClientHello");
    }
    let flight = server.flush();
    client
        .session
        .read_handshake(Level::Initial, &flight[0].1)
        .expect("ServerHello");
    let mut rest = flight[1].1.clone();
    rest.extend_from_slice(&TICKET);
    let error = client
        .session
        .read_handshake(Level::Handshake, &rest)
        .expect_err("a ticket at the Handshake level");
    assert_eq!(error.code, TransportErrorCode::PROTOCOL_VIOLATION, "{error:?}");
}

/// The client reads the server's ServerHello at Initial, the rest of its flight at Handshake, and the
/// session tickets at 1-RTT; the server's flight after the ServerHello is not accepted at Initial.
#[test]
fn server_flight_levels() {
    let (mut client, mut server) = pair(&[]);
    for (level, bytes) in client.flush() {
        server.session.read_handshake(level, &bytes).expect("ClientHello");
    }
    let flight = server.flush();
    let levels: Vec<Level> = flight.iter().map(|(level, _)| *level).collect();
    assert_eq!(levels, vec![Level::Initial, Level::Handshake]);
    let (_, hello) = &flight[0];
    let (_, rest) = &flight[1];
    client
        .session
        .read_handshake(Level::Initial, hello)
        .expect("ServerHello");
    // The client has moved on: the server's EncryptedExtensions cannot come at Initial.
    let error = client
        .session
        .read_handshake(Level::Initial, rest)
        .expect_err("handshake messages at Initial");
    assert_eq!(error.code, TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn tickets_arrive_at_1rtt() {
    let (mut client, mut server) = pair(&[]);
    // ClientHello; ServerHello + flight; client Finished; then the server's tickets.
    let mut seen = Vec::new();
    for _ in 0..4 {
        for (level, bytes) in client.flush() {
            server
                .session
                .read_handshake(level, &bytes)
                .expect("server reads");
        }
        for (level, bytes) in server.flush() {
            seen.push(level);
            client
                .session
                .read_handshake(level, &bytes)
                .expect("client reads");
        }
    }
    assert!(!client.session.is_handshaking() && !server.session.is_handshaking());
    assert_eq!(seen.first(), Some(&Level::Initial));
    assert!(seen.contains(&Level::Handshake));
    assert_eq!(
        seen.last(),
        Some(&Level::OneRtt),
        "tickets come at 1-RTT: {seen:?}"
    );
}

/// Whether a packet sealed with `theirs`' Handshake key opens with `ours`'.
fn handshake_keys_agree(theirs: &Keys, ours: &Keys) -> bool {
    let mut packet = vec![0u8; 36];
    theirs.local.packet.seal(1, &mut packet, 4).expect("seal");
    ours.remote.packet.open(1, &mut packet, 4).is_ok()
}

/// RFC 9369 §3.3.2: a version 2 connection's Handshake and 1-RTT keys (and their updates) derive with
/// version 2's labels ("quicv2 key" and the rest). Our sessions are checked against `rustls` sessions made
/// directly for each version, our server against their client and our client against their server.
/// Before, every session of ours was made for version 1: two quicsand endpoints agreed on version 2, but
/// no other implementation could open their Handshake packets.
#[test]
fn handshake_keys_follow_the_quic_version() {
    use crate::wire::header::VERSION_2;
    use ::rustls::quic::Version as RV;
    let (cert, key) = cert("localhost");
    let options = ConfigOptions::suites(&[Suite::Aes128Gcm]);
    let ccfg = client_config_with(vec![cert.clone()], vec![ALPN.to_vec()], &options).expect("client config");
    let scfg = server_config_with(vec![cert], key, vec![ALPN.to_vec()], &options).expect("server config");
    let encoded = |p: &TransportParameters| {
        let mut v = Vec::new();
        p.encode(&mut v);
        v
    };
    // The last pair differs in version, and must not agree: the check can tell.
    for (ours, theirs, agree) in [
        (VERSION_1, RV::V1, true),
        (VERSION_2, RV::V2, true),
        (VERSION_1, RV::V2, false),
    ] {
        // Their client, our server.
        let name = "localhost".try_into().expect("a DNS name");
        let mut rc =
            ::rustls::quic::ClientConnection::new(ccfg.clone(), theirs, name, encoded(&client_params()))
                .expect("rustls client");
        let mut server =
            Peer::new(RustlsSession::server(scfg.clone(), &server_params(), ours).expect("our server"));
        let mut hello = Vec::new();
        assert!(rc.write_hs(&mut hello).is_none());
        server
            .session
            .read_handshake(Level::Initial, &hello)
            .expect("ClientHello");
        let flight = server.flush();
        rc.read_hs(&flight[0].1).expect("ServerHello");
        let Some(::rustls::quic::KeyChange::Handshake { keys }) = rc.write_hs(&mut Vec::new()) else {
            panic!("their Handshake keys");
        };
        let theirs_keys = super::rustls::keys_for_test(keys);
        let ours_keys = server.handshake.as_ref().expect("our Handshake keys");
        assert_eq!(
            handshake_keys_agree(&theirs_keys, ours_keys),
            agree,
            "{ours:#x} server, {theirs:?} client"
        );
        // Our client, their server.
        let mut client = Peer::new(
            RustlsSession::client(ccfg.clone(), "localhost", &client_params(), ours).expect("our client"),
        );
        let mut rs = ::rustls::quic::ServerConnection::new(scfg.clone(), theirs, encoded(&server_params()))
            .expect("rustls server");
        let hello = client.flush();
        rs.read_hs(&hello[0].1).expect("ClientHello");
        let mut server_hello = Vec::new();
        let Some(::rustls::quic::KeyChange::Handshake { keys }) = rs.write_hs(&mut server_hello) else {
            panic!("their Handshake keys");
        };
        client
            .session
            .read_handshake(Level::Initial, &server_hello)
            .expect("ServerHello");
        client.flush();
        let theirs_keys = super::rustls::keys_for_test(keys);
        let ours_keys = client.handshake.as_ref().expect("our Handshake keys");
        assert_eq!(
            handshake_keys_agree(&theirs_keys, ours_keys),
            agree,
            "{ours:#x} client, {theirs:?} server"
        );
    }
}

/// Initial keys from `rustls` and from our `ring` code interoperate in both directions, and the mask our
/// adapter recovers equals ours wherever RFC 9001 §5.4.1 uses it.
#[test]
fn initial_keys_interoperate_with_rustls() {
    let suite = ::rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite");
    let quic_alg = suite.quic.expect("usable with QUIC");
    let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
    for (rustls_side, our_side) in [
        (::rustls::Side::Client, Side::Server),
        (::rustls::Side::Server, Side::Client),
    ] {
        let theirs =
            ::rustls::quic::Keys::initial(::rustls::quic::Version::V1, suite, quic_alg, &dcid, rustls_side);
        let theirs = super::rustls::keys_for_test(theirs);
        let ours = initial_keys(VERSION_1, &dcid, our_side).expect("v1 initial keys");
        check_keys(&theirs, &ours);

        for sample in [[0u8; 16], [0xff; 16], *b"0123456789abcdef"] {
            let a = theirs.local.header.mask(&sample).expect("mask");
            let b = ours.remote.header.mask(&sample).expect("mask");
            assert_eq!(a[0] & 0x1f, b[0] & 0x1f);
            assert_eq!(a[0] & 0xe0, 0, "documented: the unused bits come back zero");
            assert_eq!(a[1..], b[1..]);
        }
        assert_eq!(
            theirs.local.header.mask(&[0; 15]),
            Err(CryptoError::PacketTooShort)
        );
    }
}

/// For every suite, the adapter's `protect`/`unprotect` (which call `rustls` directly) agree with applying
/// its recovered `mask` the generic way.
#[test]
fn adapter_mask_agrees_with_protect() {
    for suite in ALL_SUITES {
        let (mut client, mut server) = pair(&[suite]);
        drive(&mut client, &mut server).expect("handshake succeeds");
        let key = &client.one_rtt.as_ref().expect("1-RTT keys").local.header;
        for first in [0x40u8, 0x43, 0xc1, 0xe2] {
            let mut a: Vec<u8> = std::iter::once(first).chain(1..40u8).collect();
            let mut b = a.clone();
            key.protect(5, &mut a).expect("protect");
            apply_header_mask(key.as_ref(), 5, &mut b, true).expect("generic protect");
            assert_eq!(a, b);
            key.unprotect(5, &mut a).expect("unprotect");
            apply_header_mask(key.as_ref(), 5, &mut b, false).expect("generic unprotect");
            assert_eq!(a, b);
            assert_eq!(a[0], first);
        }
        // Too short for a sample: rejected, untouched.
        let mut short = vec![0x40u8; 24];
        assert_eq!(key.protect(5, &mut short), Err(CryptoError::PacketTooShort));
        assert_eq!(key.unprotect(5, &mut short), Err(CryptoError::PacketTooShort));
        assert_eq!(key.unprotect(0, &mut short), Err(CryptoError::PacketTooShort));
        assert_eq!(short, vec![0x40u8; 24]);
        let mut exact = vec![0x40u8; 5 + 4 + key.sample_len()];
        assert!(key.protect(5, &mut exact).is_ok());
        assert_eq!(
            key.unprotect(usize::MAX, &mut exact),
            Err(CryptoError::PacketTooShort)
        );
    }
}

#[test]
fn packet_key_adapter_rejects_short_packets() {
    let (mut client, mut server) = pair(&[]);
    drive(&mut client, &mut server).expect("handshake succeeds");
    let key = &client.one_rtt.as_ref().expect("1-RTT keys").local.packet;
    assert_eq!(key.tag_len(), 16);
    assert_eq!(key.seal(0, &mut [0; 15], 0), Err(CryptoError::PacketTooShort));
    assert_eq!(key.seal(0, &mut [0; 20], 5), Err(CryptoError::PacketTooShort));
    assert_eq!(key.open(0, &mut [0; 20], 5), Err(CryptoError::PacketTooShort));
    assert_eq!(
        key.open(0, &mut [0; 20], usize::MAX),
        Err(CryptoError::PacketTooShort)
    );
    assert_eq!(key.open(0, &mut [0; 21], 5), Err(CryptoError::DecryptionFailed));
    assert_eq!(
        key.confidentiality_limit(),
        Suite::Aes128Gcm.confidentiality_limit()
    );
    assert_eq!(key.integrity_limit(), Suite::Aes128Gcm.integrity_limit());
}

#[test]
fn garbage_handshake_bytes_are_a_crypto_error() {
    let (_, mut server) = pair(&[]);
    let error = server
        .session
        .read_handshake(Level::Initial, b"GET / HTTP/1.1\r\n\r\n")
        .expect_err("not a ClientHello");
    assert_crypto_error(&error);

    let (mut client, _) = pair(&[]);
    client.flush();
    let error = client
        .session
        .read_handshake(Level::Initial, &[2, 0, 0, 4, 3, 3, 0, 0])
        .expect_err("a truncated-looking ServerHello");
    assert_crypto_error(&error);
}

/// Feeding arbitrary bytes to either side never panics and either succeeds or fails with a CRYPTO_ERROR.
fn feed_garbage(side: Side, chunks: &[Vec<u8>]) {
    let (mut client, mut server) = pair(&[]);
    // The client has sent its ClientHello and awaits a ServerHello.
    client.flush();
    let peer = match side {
        Side::Client => &mut client,
        Side::Server => &mut server,
    };
    for chunk in chunks {
        match peer.session.read_handshake(Level::Initial, chunk) {
            Ok(()) => {
                let _ = peer.flush();
            }
            Err(error) => {
                assert!(
                    error.code.tls_alert().is_some() || error.code == TransportErrorCode::PROTOCOL_VIOLATION,
                    "{error}"
                );
                return;
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_handshake_bytes_never_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
        client in any::<bool>(),
    ) {
        feed_garbage(if client { Side::Client } else { Side::Server }, &chunks);
    }

    /// A ClientHello-shaped prefix followed by arbitrary bytes reaches deeper into the parser.
    #[test]
    fn mangled_client_hello_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (mut client, mut server) = pair(&[]);
        let mut hello = client.flush().remove(0).1;
        for (index, value) in flips {
            let i = index.index(hello.len());
            hello[i] ^= value | 1;
        }
        if let Err(error) = server.session.read_handshake(Level::Initial, &hello) {
            // A flip in the legacy_session_id length is a PROTOCOL_VIOLATION (RFC 9001 §8.4).
            prop_assert!(
                error.code.tls_alert().is_some() || error.code == TransportErrorCode::PROTOCOL_VIOLATION,
                "{}",
                error
            );
        }
        let _ = server.flush();
    }
}

#[test]
fn server_releases_tls_state_after_the_handshake_and_refuses_more_handshake_data() {
    let (mut client, mut server) = pair(&[]);
    drive(&mut client, &mut server).expect("handshake succeeds");
    // The server sent its tickets and has nothing left to do in TLS: its rustls state is gone, while
    // what the connection asks of the session is still answered (see `full_handshake`).
    assert!(format!("{:?}", server.session).contains("released: true"));
    assert!(
        format!("{:?}", client.session).contains("released: false"),
        "clients may get tickets later"
    );
    assert_eq!(server.session.alpn_protocol(), Some(ALPN));
    assert!(server.session.suite().is_some());
    assert!(!server.session.is_handshaking());
    // A client sends no TLS message after its Finished (RFC 9001 §4.1.2): one would be an unexpected_message.
    let error = server
        .session
        .read_handshake(Level::OneRtt, &[20, 0, 0, 0])
        .expect_err("no handshake data after the handshake");
    assert_eq!(error.code, TransportErrorCode::crypto(10));
    // The session stays failed.
    assert_eq!(server.session.read_handshake(Level::OneRtt, &[1]), Err(error));
}

/// RFC 9001 §8.2: "endpoints that receive ClientHello or EncryptedExtensions messages without the
/// quic_transport_parameters extension MUST close the connection with an error of type 0x016d". A
/// `rustls` server also takes the parameters under the pre-RFC codepoint 0xffa5, which is not that
/// extension: here the peer is a `rustls` session of the draft version, which sends them only so.
/// Before, our server completed the handshake with such a client. Our client, which offers only 0x39,
/// already refused such a server's EncryptedExtensions (`rustls`: unsupported_extension, 0x016e, for an
/// extension it did not offer; also a fatal alert RFC 8446 §4.2 names for this).
#[test]
fn transport_parameters_only_under_the_draft_codepoint_are_a_missing_extension() {
    use ::rustls::quic::{self as rq, Version::V1Draft};
    const MISSING_EXTENSION: u8 = 109;
    const UNSUPPORTED_EXTENSION: u8 = 110;
    let (cert, key) = cert("localhost");
    let client_config = client_config(vec![cert.clone()], vec![ALPN.to_vec()]).expect("client config");
    let server_config = server_config(vec![cert], key, vec![ALPN.to_vec()]).expect("server config");
    let encoded = |params: TransportParameters| {
        let mut bytes = Vec::new();
        params.encode(&mut bytes);
        bytes
    };

    // A draft client's ClientHello, to our server.
    let name = ::rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
    let mut draft_client =
        rq::ClientConnection::new(client_config.clone(), V1Draft, name, encoded(client_params()))
            .expect("draft client");
    let mut hello = Vec::new();
    assert!(draft_client.write_hs(&mut hello).is_none() && hello.first() == Some(&1));
    let server = RustlsSession::server(server_config.clone(), &server_params(), VERSION_1);
    let mut server = Peer::new(server.expect("server session"));
    let error = server
        .session
        .read_handshake(Level::Initial, &hello)
        .expect_err("a ClientHello without quic_transport_parameters");
    assert_eq!(
        error.code,
        TransportErrorCode::crypto(MISSING_EXTENSION),
        "{error:?}"
    );
    assert!(server.flush().is_empty(), "no ServerHello goes out");
    // However the ClientHello is cut; and ours, with the extension, is taken one byte at a time.
    for cut in 0..hello.len() {
        let server = RustlsSession::server(server_config.clone(), &server_params(), VERSION_1);
        let mut server = server.expect("server session");
        let first = server.read_handshake(Level::Initial, &hello[..cut]);
        let error = first
            .and_then(|()| server.read_handshake(Level::Initial, &hello[cut..]))
            .expect_err("a ClientHello without quic_transport_parameters");
        assert_eq!(
            error.code,
            TransportErrorCode::crypto(MISSING_EXTENSION),
            "cut at {cut}"
        );
    }
    let (mut ours, mut server) = pair(&[]);
    for (_, bytes) in ours.flush() {
        for byte in bytes.chunks(1) {
            server
                .session
                .read_handshake(Level::Initial, byte)
                .expect("our ClientHello");
        }
    }
    assert!(!server.flush().is_empty(), "the server answers");

    // A draft server's EncryptedExtensions, to our client.
    let client = RustlsSession::client(client_config, "localhost", &client_params(), VERSION_1);
    let mut client = Peer::new(client.expect("client session"));
    let mut draft_server =
        rq::ServerConnection::new(server_config, V1Draft, encoded(server_params())).expect("draft server");
    for (_, bytes) in client.flush() {
        draft_server
            .read_hs(&bytes)
            .expect("the draft server takes our ClientHello");
    }
    let mut server_hello = Vec::new();
    assert!(matches!(
        draft_server.write_hs(&mut server_hello),
        Some(rq::KeyChange::Handshake { .. })
    ));
    let mut rest = Vec::new();
    assert!(draft_server.write_hs(&mut rest).is_some() && rest.first() == Some(&8));
    client
        .session
        .read_handshake(Level::Initial, &server_hello)
        .expect("ServerHello");
    let error = client
        .session
        .read_handshake(Level::Handshake, &rest)
        .expect_err("EncryptedExtensions without quic_transport_parameters");
    assert!(
        [MISSING_EXTENSION, UNSUPPORTED_EXTENSION].contains(&error.code.tls_alert().unwrap_or(0)),
        "{error:?}"
    );
    assert!(client.flush().is_empty(), "no Finished goes out");
}

/// RFC 9001 §8.2, §8.4 after a HelloRetryRequest (RFC 9001 §4.7): the second ClientHello is held to the
/// same rules as the first. Before, only the first 39 bytes of the Initial level were looked at, so a
/// legacy_session_id in the second ClientHello went to `rustls`, which took it.
#[test]
fn the_client_hello_after_a_hello_retry_request_is_checked_too() {
    use ::rustls::crypto::ring::{default_provider, kx_group};
    let (cert, key) = cert("localhost");
    let groups = |groups: Vec<&'static dyn ::rustls::crypto::SupportedKxGroup>| ConfigOptions {
        provider: Some(Arc::new(::rustls::crypto::CryptoProvider {
            kx_groups: groups,
            ..default_provider()
        })),
        ..ConfigOptions::default()
    };
    let server_config = server_config_with(
        vec![cert.clone()],
        key,
        vec![ALPN.to_vec()],
        &groups(vec![kx_group::SECP256R1]),
    )
    .expect("server config");
    let client_config = client_config_with(
        vec![cert],
        vec![ALPN.to_vec()],
        &groups(vec![kx_group::X25519, kx_group::SECP256R1]),
    )
    .expect("client config");
    // The second ClientHello, as the client sends it after the server's HelloRetryRequest.
    let (mut client, mut server) = pair_with(client_config, "localhost", server_config.clone());
    let first = client.flush().remove(0).1;
    server
        .session
        .read_handshake(Level::Initial, &first)
        .expect("first ClientHello");
    let retry = server.flush();
    assert_eq!(retry.len(), 1, "a HelloRetryRequest, at the Initial level");
    client
        .session
        .read_handshake(Level::Initial, &retry[0].1)
        .expect("HelloRetryRequest");
    let second = client.flush().remove(0).1;
    assert_eq!(
        (second[0], second[38]),
        (1, 0),
        "a ClientHello without a session ID"
    );
    // The same with a session ID: refused as the first would be.
    let mut with_id = second[..39].to_vec();
    with_id[38] = 32;
    with_id.extend_from_slice(&[0x5a; 32]);
    with_id.extend_from_slice(&second[39..]);
    let body = u32::try_from(with_id.len() - 4).unwrap().to_be_bytes();
    with_id[1..4].copy_from_slice(&body[1..]);
    let server = RustlsSession::server(server_config.clone(), &server_params(), VERSION_1);
    let mut server = server.expect("server session");
    server
        .read_handshake(Level::Initial, &first)
        .expect("first ClientHello");
    let error = server
        .read_handshake(Level::Initial, &with_id)
        .expect_err("a second ClientHello with a legacy_session_id");
    assert_eq!(error.code, TransportErrorCode::PROTOCOL_VIOLATION, "{error:?}");
    // Unchanged, it is taken, and the server moves to the Handshake level.
    let mut server = Peer::new(RustlsSession::server(server_config, &server_params(), VERSION_1).unwrap());
    server
        .session
        .read_handshake(Level::Initial, &first)
        .expect("first ClientHello");
    let _ = server.flush();
    server
        .session
        .read_handshake(Level::Initial, &second)
        .expect("second ClientHello");
    let levels: Vec<Level> = server.flush().into_iter().map(|(level, _)| level).collect();
    assert_eq!(levels, vec![Level::Initial, Level::Handshake]);
}

/// Every handshake message `conn` has to write now, one piece per key epoch.
fn raw_output(conn: &mut ::rustls::quic::Connection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut piece = Vec::new();
        let change = conn.write_hs(&mut piece);
        if !piece.is_empty() {
            out.push(piece);
        }
        if change.is_none() {
            return out;
        }
    }
}

/// Real ClientHellos, as `rustls` clients of several configurations write them (a resumption with
/// pre_shared_key and early_data, the second one after a HelloRetryRequest, many ALPN protocols, a
/// long server name), are never taken for ones without quic_transport_parameters or with a session
/// ID, however they are cut; and the server takes each whole.
#[test]
fn the_client_hello_reader_takes_real_client_hellos_however_cut() {
    use ::rustls::crypto::ring::{default_provider, kx_group};
    use ::rustls::quic::{self as rq, Version::V1};
    let (cert, key) = cert("localhost");
    let encoded = |params: TransportParameters| {
        let mut bytes = Vec::new();
        params.encode(&mut bytes);
        bytes
    };
    let name = |n: &str| ::rustls::pki_types::ServerName::try_from(n.to_owned()).expect("a DNS name");
    let mut hellos: Vec<(&str, Vec<u8>)> = Vec::new();

    // A resumption offering early data: a first handshake leaves a ticket in the shared store.
    let mut client_config =
        (*client_config(vec![cert.clone()], vec![ALPN.to_vec()]).expect("client config")).clone();
    client_config.enable_early_data = true;
    let client_config = Arc::new(client_config);
    let mut server_config =
        (*server_config(vec![cert.clone()], key.clone_key(), vec![ALPN.to_vec()]).expect("server")).clone();
    server_config.max_early_data_size = u32::MAX;
    let server_config = Arc::new(server_config);
    let client = |config: &Arc<::rustls::ClientConfig>, n: &str| -> rq::Connection {
        rq::ClientConnection::new(config.clone(), V1, name(n), encoded(client_params()))
            .expect("client")
            .into()
    };
    let mut c = client(&client_config, "localhost");
    let mut s: rq::Connection =
        rq::ServerConnection::new(server_config.clone(), V1, encoded(server_params()))
            .expect("server")
            .into();
    hellos.push(("plain", raw_output(&mut c).concat()));
    s.read_hs(&hellos[0].1).expect("server takes the ClientHello");
    for _ in 0..4 {
        for piece in raw_output(&mut s) {
            c.read_hs(&piece).expect("client reads");
        }
        for piece in raw_output(&mut c) {
            s.read_hs(&piece).expect("server reads");
        }
    }
    assert!(!c.is_handshaking() && !s.is_handshaking());
    let mut c = client(&client_config, "localhost");
    let resumed = raw_output(&mut c).concat();
    hellos.push(("psk and early_data", resumed));
    // Ours, resuming the same way (without early_data).
    let mut ours = Peer::new(
        RustlsSession::client(client_config.clone(), "localhost", &client_params(), VERSION_1).expect("ours"),
    );
    let ours_resumed = ours.flush().remove(0).1;
    assert!(ours_resumed.len() + 30 > hellos[1].1.len() && ours_resumed.len() > hellos[0].1.len() + 30);
    hellos.push(("ours, psk", ours_resumed));

    // Many ALPN protocols and a long server name.
    let long_name = format!("{0}.{0}.{0}.example", "a".repeat(60));
    let alpns: Vec<Vec<u8>> = (0..200u8).map(|i| vec![b'p'; 1 + usize::from(i)]).collect();
    let many = client_config_with(vec![cert.clone()], alpns, &ConfigOptions::default()).expect("config");
    let mut c = client(&many, &long_name);
    hellos.push(("many ALPNs, long name", raw_output(&mut c).concat()));

    // The second ClientHello after a HelloRetryRequest.
    let groups = |groups: Vec<&'static dyn ::rustls::crypto::SupportedKxGroup>| ConfigOptions {
        provider: Some(Arc::new(::rustls::crypto::CryptoProvider {
            kx_groups: groups,
            ..default_provider()
        })),
        ..ConfigOptions::default()
    };
    let hrr_server = server_config_with(
        vec![cert.clone()],
        key.clone_key(),
        vec![ALPN.to_vec()],
        &groups(vec![kx_group::SECP256R1]),
    )
    .expect("server config");
    let hrr_client = client_config_with(
        vec![cert],
        vec![ALPN.to_vec()],
        &groups(vec![kx_group::X25519, kx_group::SECP256R1]),
    )
    .expect("client config");
    let (mut client, mut server) = pair_with(hrr_client, "localhost", hrr_server);
    let first = client.flush().remove(0).1;
    server
        .session
        .read_handshake(Level::Initial, &first)
        .expect("first");
    let retry = server.flush().remove(0).1;
    client
        .session
        .read_handshake(Level::Initial, &retry)
        .expect("HRR");
    let second = client.flush().remove(0).1;
    let mut both = first.clone();
    both.extend_from_slice(&second);
    hellos.push(("first, then second after HRR", both));

    let mut rng = crate::rng::Rng::from_key([7; 32]);
    for (what, hello) in &hellos {
        let scan_in = |pieces: &[&[u8]]| {
            let mut scan = super::hello::HelloScan::new();
            pieces.iter().find_map(|p| scan.read(p))
        };
        assert_eq!(scan_in(&[hello]), None, "{what}");
        for cut in 0..hello.len() {
            assert_eq!(
                scan_in(&[&hello[..cut], &hello[cut..]]),
                None,
                "{what}: cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = hello.chunks(1).collect();
        assert_eq!(scan_in(&bytes), None, "{what}: byte by byte");
        for _ in 0..200 {
            let a = (rng.next_u64() as usize) % (hello.len() + 1);
            let b = (rng.next_u64() as usize) % (hello.len() + 1);
            let (a, b) = (a.min(b), a.max(b));
            assert_eq!(
                scan_in(&[&hello[..a], &hello[a..b], &hello[b..]]),
                None,
                "{what}: cut at {a} and {b}"
            );
        }
    }
    // The server takes the resumption's ClientHello, cut in two.
    for (what, hello) in &hellos[1..3] {
        for cut in [1, 38, 39, 100, hello.len() / 2, hello.len() - 1] {
            let mut server =
                RustlsSession::server(server_config.clone(), &server_params(), VERSION_1).unwrap();
            server.read_handshake(Level::Initial, &hello[..cut]).expect(what);
            server.read_handshake(Level::Initial, &hello[cut..]).expect(what);
        }
    }
}
