//! A misbehaving peer: frames a real peer would never send, injected into an established connection
//! after a real handshake, must close it with the RFC's error code, which the other side then reports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{ConnectionHandle, Endpoint};
use crate::conn::SpaceId;
use crate::crypto::tls;
use crate::event::{ConnectionError, Event};
use crate::wire::frame::{Datagram as DatagramFrame, Frame, ResetStream, StreamFrame, StreamId};
use crate::wire::header::{LongType, ProtectedHeader};
use crate::wire::TransportErrorCode;
use crate::{
    ClientConfig, Datagram, Dir, EndpointConfig, ServerConfig, Side, StreamsConfig, TransportConfig,
};

use crate::test_util::epoch;

pub(super) struct Pair {
    pub(super) now: Instant,
    pub(super) client: Endpoint,
    pub(super) server: Endpoint,
    pub(super) server_h: Option<ConnectionHandle>,
    pub(super) client_events: Vec<Event>,
    pub(super) server_events: Vec<Event>,
    /// The client's configuration, for further connections to the same server.
    pub(super) client_config: ClientConfig,
}

pub(super) const CLIENT: &str = "192.0.2.1:5000";
pub(super) const SERVER: &str = "192.0.2.2:443";

impl Pair {
    pub(super) fn new(server_transport: TransportConfig) -> Self {
        Self::with(server_transport, TransportConfig::default())
    }

    /// A pair whose endpoints have these configurations (and default transport settings).
    pub(super) fn with_endpoint_configs(server: EndpointConfig, client: EndpointConfig) -> Self {
        Self::build(
            TransportConfig::default(),
            TransportConfig::default(),
            server,
            client,
        )
    }

    pub(super) fn with(server_transport: TransportConfig, client_transport: TransportConfig) -> Self {
        Self::build(
            server_transport,
            client_transport,
            EndpointConfig::with_seed(1),
            EndpointConfig::with_seed(2),
        )
    }

    fn build(
        server_transport: TransportConfig,
        client_transport: TransportConfig,
        server_endpoint: EndpointConfig,
        client_endpoint: EndpointConfig,
    ) -> Self {
        let mut pair = Self::start(
            server_transport,
            client_transport,
            server_endpoint,
            client_endpoint,
        );
        pair.run(Duration::from_secs(2));
        assert!(
            pair.client_events.contains(&Event::Connected) && pair.server_events.contains(&Event::Connected)
        );
        pair
    }

    /// As [`start`](Self::start), with the endpoints of [`with`](Self::with) (seeds 1 and 2).
    pub(super) fn start_with(server_transport: TransportConfig, client_transport: TransportConfig) -> Self {
        Self::start(
            server_transport,
            client_transport,
            EndpointConfig::with_seed(1),
            EndpointConfig::with_seed(2),
        )
    }

    /// The two endpoints, the client's connection started and nothing sent yet.
    pub(super) fn start(
        server_transport: TransportConfig,
        client_transport: TransportConfig,
        server_endpoint: EndpointConfig,
        client_endpoint: EndpointConfig,
    ) -> Self {
        let (cert, key) = test_cert(Vec::new());
        Self::start_with_cert(
            (cert, key),
            server_transport,
            client_transport,
            server_endpoint,
            client_endpoint,
        )
    }

    /// As [`start`](Self::start), the server with `cert` and its key.
    pub(super) fn start_with_cert(
        (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
        server_transport: TransportConfig,
        client_transport: TransportConfig,
        server_endpoint: EndpointConfig,
        client_endpoint: EndpointConfig,
    ) -> Self {
        let alpn = vec![b"test".to_vec()];
        let mut server_config =
            ServerConfig::new(tls::server_config(vec![cert.clone()], key, alpn.clone()).unwrap());
        server_config.transport = server_transport;
        let mut client_config = ClientConfig::new(tls::client_config(vec![cert], alpn).unwrap());
        client_config.transport = client_transport;
        Self::start_with_configs(server_config, client_config, server_endpoint, client_endpoint)
    }

    /// As [`start`](Self::start), with these configurations.
    pub(super) fn start_with_configs(
        server_config: ServerConfig,
        client_config: ClientConfig,
        server_endpoint: EndpointConfig,
        client_endpoint: EndpointConfig,
    ) -> Self {
        let server = Endpoint::new(server_endpoint, Some(server_config));
        let mut client = Endpoint::new(client_endpoint, None);
        let now = epoch();
        client
            .connect(now, client_config.clone(), SERVER.parse().unwrap(), "localhost")
            .unwrap();
        Self {
            now,
            client,
            server,
            server_h: None,
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_config,
        }
    }

    /// Delivers everything at once (no latency), jumping to deadlines, for `limit` of virtual time.
    pub(super) fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        let mut buf = Vec::new();
        loop {
            let mut moved = false;
            for (from_client, from, to) in [(true, CLIENT, SERVER), (false, SERVER, CLIENT)] {
                let (src, dst) = if from_client {
                    (&mut self.client, &mut self.server)
                } else {
                    (&mut self.server, &mut self.client)
                };
                let _ = to;
                while let Some(t) = src.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let remote: SocketAddr = from.parse().unwrap();
                    for d in t.datagrams(&buf) {
                        let payload = BytesMut::from(d);
                        dst.handle_datagram(
                            self.now,
                            Datagram {
                                remote,
                                local: None,
                                ecn: None,
                                payload,
                            },
                        );
                    }
                }
            }
            while let Some((_, e)) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some((h, e)) = self.server.poll_event() {
                self.server_h.get_or_insert(h);
                self.server_events.push(e);
            }
            super::churn::assert_routes_consistent(&self.client);
            super::churn::assert_routes_consistent(&self.server);
            if !moved && !self.advance_to_next_deadline(end) {
                return;
            }
        }
    }

    /// Asserts that both sides reported `Connected`.
    pub(super) fn assert_both_connected(&self) {
        for events in [&self.client_events, &self.server_events] {
            assert!(events.contains(&Event::Connected), "{events:?}");
        }
    }

    /// As [`run`](Self::run), with every datagram `one_way` in transit, for `limit` of virtual time.
    /// Datagrams still in transit when `limit` passes are lost (a following call does not deliver them).
    pub(super) fn run_with_latency(&mut self, one_way: Duration, limit: Duration) {
        self.run_with_latency_until(one_way, limit, |_| false);
    }

    /// As [`run_with_latency`](Self::run_with_latency), stopping as soon as `stop` holds once both
    /// endpoints have sent what they could at the current instant; datagrams still in transit then are
    /// lost. True if it stopped so.
    pub(super) fn run_with_latency_until(
        &mut self,
        one_way: Duration,
        limit: Duration,
        mut stop: impl FnMut(&Self) -> bool,
    ) -> bool {
        let end = self.now + limit;
        // (arrival, to the server, bytes)
        let mut in_flight: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
        loop {
            let now = self.now;
            in_flight.extend(
                sends(&mut self.client, now)
                    .into_iter()
                    .map(|d| (now + one_way, true, d)),
            );
            in_flight.extend(
                sends(&mut self.server, now)
                    .into_iter()
                    .map(|d| (now + one_way, false, d)),
            );
            if stop(self) {
                return true;
            }
            while let Some((_, e)) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some((h, e)) = self.server.poll_event() {
                self.server_h.get_or_insert(h);
                self.server_events.push(e);
            }
            super::churn::assert_routes_consistent(&self.client);
            super::churn::assert_routes_consistent(&self.server);
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .chain(in_flight.iter().map(|(t, _, _)| *t))
                .min();
            let Some(next) = next.filter(|t| *t <= end) else {
                return false;
            };
            self.now = self.now.max(next);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|(t, _, _)| *t <= now);
            in_flight = later;
            for (_, to_server, d) in due {
                if to_server {
                    deliver(&mut self.server, now, CLIENT, &d);
                } else {
                    deliver(&mut self.client, now, SERVER, &d);
                }
            }
            self.client.handle_timeout(now);
            self.server.handle_timeout(now);
        }
    }

    /// Moves the clock to the earlier deadline of the two endpoints and runs their timers; false when
    /// neither has one before `end`.
    pub(super) fn advance_to_next_deadline(&mut self, end: Instant) -> bool {
        advance_to_next_deadline(&mut self.now, &mut self.client, &mut self.server, end)
    }

    /// Injects `frames` into the server's connection as if the client sent them, and lets the close run.
    pub(super) fn client_sends(&mut self, frames: &[Frame]) {
        inject(self, SpaceId::Data, frames);
        self.run(Duration::from_secs(1));
    }

    /// Injects `payload`, arbitrary frame bytes, into the server's connection as the payload of a
    /// 1-RTT packet from the client, and lets the close run.
    pub(super) fn client_sends_bytes(&mut self, payload: &[u8]) {
        let h = self.server_h.unwrap();
        self.server
            .inject_payload(self.now, h, Bytes::copy_from_slice(payload));
        self.run(Duration::from_secs(1));
    }

    pub(super) fn lost(events: &[Event]) -> Option<&ConnectionError> {
        events.iter().find_map(|e| match e {
            Event::ConnectionLost { reason } => Some(reason),
            _ => None,
        })
    }

    /// The server closed with `code` and the client heard it.
    pub(super) fn assert_closed_with(&self, code: TransportErrorCode) {
        match Self::lost(&self.server_events) {
            Some(ConnectionError::TransportError(e)) => assert_eq!(e.code, code, "server: {e}"),
            other => panic!("server: expected a transport error {code}, got {other:?}"),
        }
        match Self::lost(&self.client_events) {
            Some(ConnectionError::ConnectionClosed { error }) => {
                assert_eq!(error.code, code, "client: {error}")
            }
            other => panic!("client: expected the peer's close with {code}, got {other:?}"),
        }
    }

    /// The server closed with `code` for a frame of type `frame_type`, and the client heard both
    /// (RFC 9000 §19.19: the Frame Type field is the type of the frame that triggered the error).
    pub(super) fn assert_closed_for_frame(&self, code: TransportErrorCode, frame_type: u64) {
        self.assert_closed_with(code);
        let Some(ConnectionError::TransportError(e)) = Self::lost(&self.server_events) else {
            unreachable!("checked by assert_closed_with");
        };
        assert_eq!(e.frame_type, Some(frame_type), "server: {e}");
        let Some(ConnectionError::ConnectionClosed { error }) = Self::lost(&self.client_events) else {
            unreachable!("checked by assert_closed_with");
        };
        assert_eq!(error.frame_type, Some(frame_type), "client: {error}");
    }
}

/// A self-signed certificate for `localhost` and `extra_names`, with its key.
pub(super) fn test_cert(extra_names: Vec<String>) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut names = vec!["localhost".to_string()];
    names.extend(extra_names);
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    (cert, key)
}

/// The packets coalesced in `datagram`, in order: each one's long-header type (`None` for a short
/// header, which ends the datagram) and length. Short headers are read with `short_dcid_len`-byte
/// connection IDs; the walk stops at the first packet that does not decode.
pub(super) fn coalesced_packets(datagram: &[u8], short_dcid_len: usize) -> Vec<(Option<LongType>, usize)> {
    let mut packets = Vec::new();
    let mut rest = datagram;
    while let Ok(h) = ProtectedHeader::decode(rest, short_dcid_len) {
        let len = h.len().min(rest.len());
        packets.push((h.long_type(), len));
        rest = &rest[len..];
        if rest.is_empty() {
            break;
        }
    }
    packets
}

/// Every datagram `from` sends at `now`, each as its own buffer.
pub(super) fn sends(from: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        out.extend(t.datagrams(&buf).map(<[u8]>::to_vec));
    }
    out
}

/// Hands `payload` to `to` at `now`, as a datagram from `from`.
pub(super) fn deliver(to: &mut Endpoint, now: Instant, from: &str, payload: &[u8]) {
    to.handle_datagram(
        now,
        Datagram {
            remote: from.parse().unwrap(),
            local: None,
            ecn: None,
            payload: BytesMut::from(payload),
        },
    );
}

/// Moves every datagram `src` has to send at `now` into `dst`, as from `from`.
pub(super) fn deliver_all(src: &mut Endpoint, dst: &mut Endpoint, now: Instant, from: &str) {
    for d in sends(src, now) {
        deliver(dst, now, from, &d);
    }
}

/// Injects `frames` into the server's connection, in a packet of `space`, without running the network
/// (the client never learns of it, so it cannot object to what the server does next).
pub(super) fn inject(p: &mut Pair, space: SpaceId, frames: &[Frame]) {
    let h = p.server_h.unwrap();
    let now = p.now;
    p.server
        .table
        .get_mut(h)
        .unwrap()
        .conn
        .inject_frames_in(now, space, frames);
    p.server.after_conn(h, true);
}

/// An Initial packet with `header`, as `sender` seals it with the Initial keys of `odcid` (anyone who
/// saw the client's first Initial can derive them), carrying `frames`, padded to `size` bytes.
pub(super) fn forged_initial(
    sender: Side,
    odcid: &[u8],
    header: &crate::wire::header::Header,
    pn: u64,
    frames: &[Frame],
    size: usize,
) -> Vec<u8> {
    forged_initial_with_reserved_bits(sender, odcid, header, pn, frames, size, 0)
}

/// As [`forged_initial`], with `reserved` (0x0c at most) set in the first byte under header protection.
pub(super) fn forged_initial_with_reserved_bits(
    sender: Side,
    odcid: &[u8],
    header: &crate::wire::header::Header,
    pn: u64,
    frames: &[Frame],
    size: usize,
    reserved: u8,
) -> Vec<u8> {
    let keys = crate::crypto::initial_keys(crate::wire::header::VERSION_1, odcid, sender).unwrap();
    let mut packet = Vec::new();
    let enc = header.encode(
        crate::wire::packet_number::TruncatedPn::truncate(pn, 4),
        &mut packet,
    );
    packet[0] |= reserved & 0x0c;
    for f in frames {
        f.encode(&mut packet);
    }
    let tag = keys.local.packet.tag_len();
    packet.resize(size - tag, 0);
    packet.resize(size, 0);
    enc.set_length(&mut packet, size).unwrap();
    keys.local.packet.seal(pn, &mut packet, enc.header_len).unwrap();
    keys.local.header.protect(enc.pn_offset, &mut packet).unwrap();
    packet
}

pub(super) fn client_bidi(index: u64) -> StreamId {
    StreamId::new(Side::Client, Dir::Bi, index)
}

pub(super) fn stream(id: StreamId, offset: u64, len: usize, fin: bool) -> Frame {
    Frame::Stream(StreamFrame {
        id,
        offset,
        fin,
        data: Bytes::from(vec![7; len]),
    })
}

#[test]
fn data_beyond_the_stream_window_is_flow_control_error() {
    let mut p = Pair::new(TransportConfig::default());
    let window = TransportConfig::default().streams.stream_receive_window;
    p.client_sends(&[stream(client_bidi(0), window, 10, false)]);
    p.assert_closed_with(TransportErrorCode::FLOW_CONTROL_ERROR);
}

#[test]
fn a_changed_final_size_is_final_size_error() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[
        stream(client_bidi(0), 0, 10, true),
        stream(client_bidi(0), 0, 20, true),
    ]);
    p.assert_closed_with(TransportErrorCode::FINAL_SIZE_ERROR);
}

#[test]
fn a_reset_below_the_data_received_is_final_size_error() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[
        stream(client_bidi(0), 0, 100, false),
        Frame::ResetStream(ResetStream {
            id: client_bidi(0),
            error_code: 1,
            final_size: 50,
        }),
    ]);
    p.assert_closed_with(TransportErrorCode::FINAL_SIZE_ERROR);
}

#[test]
fn a_stream_beyond_the_limit_is_stream_limit_error() {
    let mut p = Pair::new(TransportConfig::default());
    let limit = TransportConfig::default().streams.max_concurrent_bidi_streams;
    p.client_sends(&[stream(client_bidi(limit), 0, 1, false)]);
    p.assert_closed_with(TransportErrorCode::STREAM_LIMIT_ERROR);
}

#[test]
fn a_stream_we_never_opened_is_stream_state_error() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[stream(StreamId::new(Side::Server, Dir::Bi, 3), 0, 1, false)]);
    p.assert_closed_with(TransportErrorCode::STREAM_STATE_ERROR);
}

#[test]
fn unannounced_datagrams_are_a_protocol_violation() {
    let transport = TransportConfig {
        datagram_receive_buffer: None,
        ..TransportConfig::default()
    };
    let mut p = Pair::new(transport);
    p.client_sends(&[Frame::Datagram(DatagramFrame {
        data: Bytes::from_static(b"hello"),
    })]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn datagrams_larger_than_announced_are_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[Frame::Datagram(DatagramFrame {
        data: Bytes::from(vec![0; 70_000]),
    })]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn handshake_done_from_a_client_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[Frame::HandshakeDone]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

/// RFC 9000 §19.7: a server receiving NEW_TOKEN treats it as a PROTOCOL_VIOLATION.
#[test]
fn new_token_from_a_client_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[Frame::NewToken(Bytes::from_static(b"token"))]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

/// RFC 9000 §19.7: a server treats receipt of any NEW_TOKEN frame as a PROTOCOL_VIOLATION, an empty one too
/// (the FRAME_ENCODING_ERROR for an empty token is the client's rule).
#[test]
fn an_empty_new_token_from_a_client_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[Frame::NewToken(Bytes::new())]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

/// RFC 9000 §12.4: a packet whose payload holds no frame at all is a PROTOCOL_VIOLATION.
#[test]
fn a_packet_without_frames_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

/// RFC 9000 §18.2: max_idle_timeout is in milliseconds and 0 disables it. Before, a configured timeout
/// under a millisecond was announced as 0, telling the peer this side had none.
#[test]
fn an_idle_timeout_under_a_millisecond_is_announced_as_one() {
    for (configured, announced) in [
        (Some(Duration::from_micros(500)), 1),
        (Some(Duration::from_micros(1500)), 1),
        (Some(Duration::ZERO), 0),
        (None, 0),
    ] {
        let client = TransportConfig {
            max_idle_timeout: configured,
            ..TransportConfig::default()
        };
        // The server reads the client's parameters from its first flight (a connection this short-lived
        // would not outlive a whole run).
        let mut p = Pair::start(
            TransportConfig::default(),
            client,
            EndpointConfig::with_seed(1),
            EndpointConfig::with_seed(2),
        );
        deliver_all(&mut p.client, &mut p.server, p.now, CLIENT);
        let h = p.server.table.iter().next().unwrap().0;
        let peer = p.server.conn(h).unwrap().peer_transport_parameters().unwrap();
        assert_eq!(peer.max_idle_timeout.into_inner(), announced, "{configured:?}");
    }
}

/// A peer announcing the largest idle timeout the wire allows (2^62 - 1 ms) to a side that has none of its
/// own must not overflow the clock: the connection lives on, with a capped deadline.
#[test]
fn a_huge_idle_timeout_from_the_peer_is_harmless() {
    let server = TransportConfig {
        max_idle_timeout: None,
        ..TransportConfig::default()
    };
    let client = TransportConfig {
        max_idle_timeout: Some(Duration::MAX),
        ..TransportConfig::default()
    };
    let mut p = Pair::with(server, client);
    let peer = p
        .server
        .conn(p.server_h.unwrap())
        .unwrap()
        .peer_transport_parameters()
        .unwrap();
    assert_eq!(peer.max_idle_timeout.into_inner(), (1 << 62) - 1);
    p.run(Duration::from_secs(60));
    assert!(Pair::lost(&p.server_events).is_none());
    assert!(p
        .server
        .poll_timeout()
        .is_some_and(|t| t > p.now + Duration::from_secs(3600)));
}

#[test]
fn stream_data_in_the_packet_that_closes_the_connection_is_announced_before_the_end() {
    // A peer may send its last data and its CONNECTION_CLOSE in one packet (a server answering and
    // hanging up). The data is still readable while the connection drains; its Readable event must come
    // before ConnectionLost, after which the application stops polling the connection.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let id = client_bidi(0);
    let close = Frame::Close(crate::wire::frame::ConnectionClose {
        code: crate::wire::frame::CloseCode::Application(7),
        reason: Bytes::new(),
    });
    p.server_events.clear();
    inject(&mut p, SpaceId::Data, &[stream(id, 0, 100, true), close]);
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    let readable = p
        .server_events
        .iter()
        .position(|e| *e == Event::Stream(crate::StreamEvent::Readable { id }));
    let lost = p
        .server_events
        .iter()
        .position(|e| matches!(e, Event::ConnectionLost { .. }));
    assert!(
        matches!((readable, lost), (Some(r), Some(l)) if r < l),
        "{:?}",
        p.server_events
    );
    let mut buf = [0u8; 200];
    let mut conn = p.server.conn(h).unwrap();
    assert_eq!(conn.stream(id).read(&mut buf), Ok(Some(100)));
}

/// RFC 9000 §19.19: CONNECTION_CLOSE names the type of the frame received, not the type we would encode
/// the same frame with: a STREAM frame without a Length field (0x08, 0x0c), with an offset of 0 written
/// out (0x0c), or with its type in a longer encoding than needed (0x40 0x08) is reported as such, and so
/// is a DATAGRAM frame without a Length field (0x30).
#[test]
fn a_frame_error_names_the_frame_type_received() {
    // Server bidi stream 0 (ID 1), which the server never opened: STREAM_STATE_ERROR.
    let cases: [(&[u8], u64); 5] = [
        (&[0x08, 0x01, 0xaa], 0x08),
        (&[0x0c, 0x01, 0x00, 0xaa], 0x0c),
        (&[0x0d, 0x01, 0x00], 0x0d),
        (&[0x0e, 0x01, 0x00, 0x01, 0xaa], 0x0e),
        (&[0x40, 0x08, 0x01, 0xaa], 0x08),
    ];
    for (payload, frame_type) in cases {
        let mut p = Pair::new(TransportConfig::default());
        p.client_sends_bytes(payload);
        p.assert_closed_for_frame(TransportErrorCode::STREAM_STATE_ERROR, frame_type);
    }
    // Data beyond the stream window, offset written out and no Length field: FLOW_CONTROL_ERROR.
    let window = TransportConfig::default().streams.stream_receive_window;
    let mut payload = vec![0x0c, 0x00];
    crate::wire::VarInt::from_u64(window)
        .unwrap()
        .encode(&mut payload);
    payload.push(0xaa);
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends_bytes(&payload);
    p.assert_closed_for_frame(TransportErrorCode::FLOW_CONTROL_ERROR, 0x0c);
    // DATAGRAM without a Length field, not announced: PROTOCOL_VIOLATION.
    let transport = TransportConfig {
        datagram_receive_buffer: None,
        ..TransportConfig::default()
    };
    let mut p = Pair::new(transport);
    p.client_sends_bytes(&[0x30, 0xaa]);
    p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, 0x30);
}

/// RFC 9221 §3: a DATAGRAM frame received without our max_datagram_frame_size announced MUST be a
/// PROTOCOL_VIOLATION, a malformed one too (FRAME_ENCODING_ERROR stays for those we announced).
#[test]
fn malformed_unannounced_datagrams_are_a_protocol_violation() {
    let unannounced = TransportConfig {
        datagram_receive_buffer: None,
        ..TransportConfig::default()
    };
    // A Length beyond the packet, a truncated Length, and a well-formed frame.
    let cases: [(&[u8], u64); 3] = [
        (&[0x31, 0x05, 0xaa], 0x31),
        (&[0x31, 0x40], 0x31),
        (&[0x30], 0x30),
    ];
    for (payload, frame_type) in cases {
        let mut p = Pair::new(unannounced.clone());
        p.client_sends_bytes(payload);
        p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, frame_type);
    }
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends_bytes(&[0x31, 0x05, 0xaa]);
    p.assert_closed_for_frame(TransportErrorCode::FRAME_ENCODING_ERROR, 0x31);
}

/// RFC 9221 §3: the max_datagram_frame_size announced is what the receive buffer can hold, so that a
/// peer keeping to it is not silently dropped; a buffer too small for any datagram announces nothing.
/// The limit applies to the frame as sent: with its length field (type 0x31) or without (0x30).
#[test]
fn the_datagram_frame_size_announced_fits_the_receive_buffer() {
    let small = TransportConfig {
        datagram_receive_buffer: Some(1000),
        ..TransportConfig::default()
    };
    // 1000 bytes less the 64 each datagram counts for its queue slot: 936 bytes, in a frame of 937
    // without a length field; with one, 934 bytes (type, two-byte length).
    let mut p = Pair::new(small.clone());
    let ch = p.client.table.iter().next().unwrap().0;
    let max = p.client.conn(ch).unwrap().max_datagram_size().unwrap();
    assert_eq!(max, 934);
    p.client
        .conn(ch)
        .unwrap()
        .send_datagram(Bytes::from(vec![7; max]))
        .unwrap();
    p.run(Duration::from_millis(100));
    let h = p.server_h.unwrap();
    assert_eq!(
        p.server.conn(h).unwrap().recv_datagram(),
        Some(Bytes::from(vec![7; max]))
    );
    // The largest frame without a length field is taken, and its datagram kept.
    let mut frame = vec![0x30];
    frame.extend([8; 936]);
    p.client_sends_bytes(&frame);
    assert_eq!(Pair::lost(&p.server_events), None);
    assert_eq!(
        p.server.conn(h).unwrap().recv_datagram(),
        Some(Bytes::from(vec![8; 936]))
    );
    // One byte more, with or without a length field, is a PROTOCOL_VIOLATION.
    let mut frame = vec![0x31, 0x43, 0xa7];
    frame.extend([0; 935]);
    p.client_sends_bytes(&frame);
    p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, 0x31);
    let mut p = Pair::new(small);
    let mut frame = vec![0x30];
    frame.extend([0; 937]);
    p.client_sends_bytes(&frame);
    p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, 0x30);

    let tiny = TransportConfig {
        datagram_receive_buffer: Some(40),
        ..TransportConfig::default()
    };
    let mut p = Pair::new(tiny);
    let ch = p.client.table.iter().next().unwrap().0;
    assert!(p.client.conn(ch).unwrap().max_datagram_size().is_err());
    p.client_sends_bytes(&[0x30]);
    p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, 0x30);
}

/// `parts`, each a byte string or a variable-length integer, as one frame payload.
fn frame_bytes(parts: &[FramePart]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            FramePart::Bytes(b) => out.extend_from_slice(b),
            FramePart::Int(v) => crate::wire::VarInt::from_u64(*v).unwrap().encode(&mut out),
        }
    }
    out
}

enum FramePart {
    Bytes(&'static [u8]),
    Int(u64),
}

/// RFC 9000 §19, frame by frame: each rule on receipt closes the connection with its error code and
/// names the frame's type (§19.19), end to end (the decoder and stream checks have their own unit
/// tests; this is what the peer hears). FRAME_ENCODING_ERROR: MAX_STREAMS and STREAMS_BLOCKED above
/// 2^60 (§19.11, §19.14), NEW_CONNECTION_ID with a length of 0 or 21 or Retire Prior To above its
/// sequence number (§19.15), STREAM and CRYPTO data ending beyond 2^62 - 1 (§19.8, §19.6), an ACK
/// range below packet number 0 (§19.3.1), truncated frames and an unknown type (§12.4).
/// STREAM_STATE_ERROR: STOP_SENDING and MAX_STREAM_DATA on a receive-only stream (§19.5, §19.10),
/// RESET_STREAM and STREAM_DATA_BLOCKED on a send-only stream (§19.4, §19.13), STOP_SENDING on a local
/// stream not yet opened (§19.5). STREAM_LIMIT_ERROR: a stream beyond the limit sent (§4.6).
#[test]
fn each_frame_rule_closes_with_its_error_and_names_the_frame() {
    use FramePart::{Bytes as B, Int as I};
    let fee = TransportErrorCode::FRAME_ENCODING_ERROR;
    let sse = TransportErrorCode::STREAM_STATE_ERROR;
    let limit = TransportConfig::default().streams.max_concurrent_uni_streams;
    let cases: Vec<(Vec<u8>, TransportErrorCode, u64)> = vec![
        (frame_bytes(&[B(&[0x12]), I((1 << 60) + 1)]), fee, 0x12),
        (frame_bytes(&[B(&[0x13]), I((1 << 60) + 1)]), fee, 0x13),
        (frame_bytes(&[B(&[0x16]), I((1 << 60) + 1)]), fee, 0x16),
        (frame_bytes(&[B(&[0x17]), I((1 << 60) + 1)]), fee, 0x17),
        (
            frame_bytes(&[B(&[0x18, 0x01, 0x00, 0x00]), B(&[0; 16])]),
            fee,
            0x18,
        ),
        (
            frame_bytes(&[B(&[0x18, 0x01, 0x00, 21]), B(&[1; 21]), B(&[0; 16])]),
            fee,
            0x18,
        ),
        (
            frame_bytes(&[B(&[0x18, 0x01, 0x02, 8]), B(&[1; 8]), B(&[0; 16])]),
            fee,
            0x18,
        ),
        // Client bidi stream 0, offset 2^62 - 1, one byte.
        (
            frame_bytes(&[B(&[0x0e, 0x00]), I((1 << 62) - 1), B(&[0x01, 0xaa])]),
            fee,
            0x0e,
        ),
        (
            frame_bytes(&[B(&[0x06]), I((1 << 62) - 1), B(&[0x01, 0xaa])]),
            fee,
            0x06,
        ),
        // Largest acknowledged 1, First ACK Range 5.
        (vec![0x02, 0x01, 0x00, 0x00, 0x05], fee, 0x02),
        (vec![0x04, 0x00], fee, 0x04),
        (vec![0x1c, 0x00, 0x00, 0x05, 0x61], fee, 0x1c),
        (vec![0x21], fee, 0x21),
        // Client uni stream 0 (ID 2) is receive-only at the server.
        (vec![0x05, 0x02, 0x00], sse, 0x05),
        (vec![0x11, 0x02, 0x10], sse, 0x11),
        // Server uni stream 0 (ID 3) is send-only at the server.
        (vec![0x04, 0x03, 0x00, 0x00], sse, 0x04),
        (vec![0x15, 0x03, 0x10], sse, 0x15),
        // Server bidi stream 0 (ID 1), which the server never opened.
        (vec![0x05, 0x01, 0x00], sse, 0x05),
        (
            frame_bytes(&[
                B(&[0x08]),
                I(StreamId::new(Side::Client, Dir::Uni, limit).0),
                B(&[0xaa]),
            ]),
            TransportErrorCode::STREAM_LIMIT_ERROR,
            0x08,
        ),
    ];
    for (payload, code, frame_type) in cases {
        let mut p = Pair::new(TransportConfig::default());
        p.client_sends_bytes(&payload);
        p.assert_closed_for_frame(code, frame_type);
    }
    // RFC 9000 §19.18: a PATH_RESPONSE that answers no PATH_CHALLENGE of ours is ignored.
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends_bytes(&[0x1b, 9, 9, 9, 9, 9, 9, 9, 9]);
    assert_eq!(Pair::lost(&p.server_events), None);
    assert_eq!(Pair::lost(&p.client_events), None);
    // RFC 9000 §19.7: a client receiving an empty NEW_TOKEN closes with FRAME_ENCODING_ERROR.
    let mut p = Pair::new(TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    let now = p.now;
    p.client
        .inject_payload(now, ch, Bytes::from_static(&[0x07, 0x00]));
    p.run(Duration::from_secs(1));
    match Pair::lost(&p.client_events) {
        Some(ConnectionError::TransportError(e)) => {
            assert_eq!((e.code, e.frame_type), (fee, Some(0x07)), "client: {e}")
        }
        other => panic!("client: {other:?}"),
    }
    match Pair::lost(&p.server_events) {
        Some(ConnectionError::ConnectionClosed { error }) => assert_eq!(error.code, fee, "server: {error}"),
        other => panic!("server: {other:?}"),
    }
}

/// RFC 9221 §3: a receive buffer too small for any datagram announces no max_datagram_frame_size, so a
/// DATAGRAM frame is not negotiated there either: a malformed one is a PROTOCOL_VIOLATION, as a
/// well-formed one is. Before, the malformed one was a FRAME_ENCODING_ERROR, as if datagrams were
/// accepted, because only a missing buffer counted as "not announced".
#[test]
fn malformed_datagrams_are_a_protocol_violation_when_the_buffer_announces_none() {
    let tiny = TransportConfig {
        datagram_receive_buffer: Some(40),
        ..TransportConfig::default()
    };
    for (payload, frame_type) in [(&[0x31, 0x05, 0xaa][..], 0x31), (&[0x31, 0x40][..], 0x31)] {
        let mut p = Pair::new(tiny.clone());
        p.client_sends_bytes(payload);
        p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, frame_type);
    }
}

/// RFC 9000 §4.5: a RESET_STREAM's final size counts in full against connection flow control, the bytes
/// beyond the highest offset received too; `stream_bytes_received`, which counts the credit the peer
/// used, counts them as well.
#[test]
fn a_reset_counts_its_final_size_in_the_bytes_received() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let before = p.server.conn(h).unwrap().stats().stream_bytes_received;
    inject(
        &mut p,
        SpaceId::Data,
        &[
            stream(client_bidi(0), 0, 100, false),
            Frame::ResetStream(ResetStream {
                id: client_bidi(0),
                error_code: 1,
                final_size: 500,
            }),
        ],
    );
    let after = p.server.conn(h).unwrap().stats().stream_bytes_received;
    assert_eq!(after - before, 500);
}

/// A pair with a 10 s idle timeout on both sides and no keep-alive, whose client has written more than
/// the server's windows allow (6000 bytes a stream, 8000 for the connection) on two streams, which the
/// server's application never reads: one stream stops at its stream limit, the other at the connection
/// limit, and the client has sent STREAM_DATA_BLOCKED and DATA_BLOCKED.
fn flow_blocked_pair() -> (Pair, ConnectionHandle, ConnectionHandle) {
    let idle = TransportConfig {
        max_idle_timeout: Some(Duration::from_secs(10)),
        ..TransportConfig::default()
    };
    let mut server = idle.clone();
    server.streams = StreamsConfig {
        stream_receive_window: 6000,
        max_stream_receive_window: 6000,
        receive_window: 8000,
        max_receive_window: 8000,
        ..StreamsConfig::default()
    };
    let mut p = Pair::with(server, idle);
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    {
        let mut conn = p.client.conn(ch).unwrap();
        for _ in 0..2 {
            let id = conn.open_uni().unwrap();
            conn.stream(id).write(&[3; 20_000]).unwrap();
        }
    }
    p.run(Duration::from_millis(500));
    assert_eq!(p.server.conn(h).unwrap().stats().stream_bytes_received, 8000);
    (p, ch, h)
}

/// RFC 9000 §4.1: "To keep the connection from closing, a sender that is flow control limited SHOULD
/// periodically send a STREAM_DATA_BLOCKED or DATA_BLOCKED frame when it has no ack-eliciting packets
/// in flight." A client blocked by a server that never reads keeps both sides from the idle timeout
/// (10 s) over three of them: its blocked frames go out again, and nothing else does.
#[test]
fn a_flow_blocked_sender_resends_blocked_frames_and_the_connection_stays_open() {
    let (mut p, ch, h) = flow_blocked_pair();
    let before = p.client.conn(ch).unwrap().stats().datagrams_sent;
    p.run(Duration::from_secs(30));
    assert_eq!(Pair::lost(&p.client_events), None, "client");
    assert_eq!(Pair::lost(&p.server_events), None, "server");
    let resent = p.client.conn(ch).unwrap().stats().datagrams_sent - before;
    assert!(resent >= 4, "blocked frames sent again {resent} times in 30 s");
    // Still blocked: no credit came, and no stream data went beyond the limits.
    assert_eq!(p.server.conn(h).unwrap().stats().stream_bytes_received, 8000);
    assert_eq!(p.client.conn(ch).unwrap().stats().stream_bytes_sent, 8000);
}

/// RFC 9000 §4.1: the blocked frames go out periodically, not more: once per half idle timeout (5 s)
/// after the last ack-eliciting packet, each time in one datagram, with a finite number of wake-ups and
/// the same deadline reported however often it is asked for.
#[test]
fn a_flow_blocked_sender_sends_blocked_frames_once_per_half_idle_timeout() {
    let (mut p, ch, _) = flow_blocked_pair();
    let before = p.client.conn(ch).unwrap().stats().datagrams_sent;
    let end = p.now + Duration::from_secs(100);
    let mut wakeups = 0;
    loop {
        loop {
            let c = sends(&mut p.client, p.now);
            let s = sends(&mut p.server, p.now);
            if c.is_empty() && s.is_empty() {
                break;
            }
            for d in &c {
                deliver(&mut p.server, p.now, CLIENT, d);
            }
            for d in &s {
                deliver(&mut p.client, p.now, SERVER, d);
            }
        }
        let (ct, st) = (p.client.poll_timeout(), p.server.poll_timeout());
        assert_eq!((ct, st), (p.client.poll_timeout(), p.server.poll_timeout()));
        let Some(next) = [ct, st].into_iter().flatten().min().filter(|&t| t <= end) else {
            break;
        };
        wakeups += 1;
        assert!(wakeups < 200, "woken {wakeups} times in 100 s");
        p.now = p.now.max(next);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
    while let Some((_, e)) = p.client.poll_event() {
        p.client_events.push(e);
    }
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    assert_eq!(Pair::lost(&p.client_events), None, "client");
    assert_eq!(Pair::lost(&p.server_events), None, "server");
    let sent = p.client.conn(ch).unwrap().stats().datagrams_sent - before;
    assert!((19..=20).contains(&sent), "{sent} datagrams in 100 s");
}

/// A server whose connection receive window is u64::MAX ("unlimited", announced as 2^62 - 1) answers a
/// DATA_BLOCKED at the announced limit with MAX_DATA, and goes on (before, it panicked encoding
/// MAX_DATA(u64::MAX)).
#[test]
fn data_blocked_at_an_unlimited_receive_window_is_answered() {
    let mut server = TransportConfig::default();
    server.streams.receive_window = u64::MAX;
    let mut p = Pair::new(server);
    p.client_sends(&[Frame::DataBlocked((1 << 62) - 1)]);
    assert_eq!(Pair::lost(&p.server_events), None);
}

/// Moves `now` to the earlier deadline of endpoints `a` and `b` and runs their timers; false when
/// neither has one before `end`.
pub(super) fn advance_to_next_deadline(
    now: &mut Instant,
    a: &mut Endpoint,
    b: &mut Endpoint,
    end: Instant,
) -> bool {
    let next = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min();
    match next {
        Some(t) if t <= end => {
            *now = (*now).max(t);
            a.handle_timeout(*now);
            b.handle_timeout(*now);
            true
        }
        _ => false,
    }
}

/// RFC 9000 §19.4 to §19.13 and §4.6, for the frames that name a stream: each rule on the stream ID,
/// end to end. A frame for a locally initiated stream not yet opened, or a send-only one, is a
/// STREAM_STATE_ERROR (§19.8 for STREAM, §19.10 for MAX_STREAM_DATA); one for a peer's stream beyond the
/// limit we sent is a STREAM_LIMIT_ERROR (§4.6, "a frame with a stream ID exceeding the limit"),
/// whatever the frame type.
#[test]
fn every_frame_naming_a_stream_checks_its_id() {
    let sse = TransportErrorCode::STREAM_STATE_ERROR;
    let sle = TransportErrorCode::STREAM_LIMIT_ERROR;
    let bidi_limit = TransportConfig::default().streams.max_concurrent_bidi_streams;
    let uni_limit = TransportConfig::default().streams.max_concurrent_uni_streams;
    let server_bidi = StreamId::new(Side::Server, Dir::Bi, 0).0;
    let server_uni = StreamId::new(Side::Server, Dir::Uni, 0).0;
    let beyond_bidi = StreamId::new(Side::Client, Dir::Bi, bidi_limit).0;
    let beyond_uni = StreamId::new(Side::Client, Dir::Uni, uni_limit).0;
    let varint = |v: u64| {
        let mut out = Vec::new();
        crate::wire::VarInt::from_u64(v).unwrap().encode(&mut out);
        out
    };
    let frame = |ty: u8, id: u64, rest: &[u8]| {
        let mut out = vec![ty];
        out.extend(varint(id));
        out.extend_from_slice(rest);
        out
    };
    let cases: Vec<(Vec<u8>, TransportErrorCode, u64)> = vec![
        // STREAM on a server uni stream (send-only at the server, and not opened).
        (frame(0x0a, server_uni, &[1, 0xaa]), sse, 0x0a),
        // STREAM and MAX_STREAM_DATA on a server bidi / uni stream not yet opened.
        (frame(0x0a, server_bidi, &[1, 0xaa]), sse, 0x0a),
        (frame(0x11, server_bidi, &[0x10]), sse, 0x11),
        (frame(0x11, server_uni, &[0x10]), sse, 0x11),
        // Every frame type on a client stream beyond the limits we announced.
        (frame(0x0a, beyond_uni, &[1, 0xaa]), sle, 0x0a),
        (frame(0x04, beyond_bidi, &[0, 0]), sle, 0x04),
        (frame(0x04, beyond_uni, &[0, 0]), sle, 0x04),
        (frame(0x05, beyond_bidi, &[0]), sle, 0x05),
        (frame(0x11, beyond_bidi, &[0x10]), sle, 0x11),
        (frame(0x15, beyond_bidi, &[0x10]), sle, 0x15),
        (frame(0x15, beyond_uni, &[0x10]), sle, 0x15),
    ];
    for (payload, code, frame_type) in cases {
        let mut p = Pair::new(TransportConfig::default());
        p.client_sends_bytes(&payload);
        p.assert_closed_for_frame(code, frame_type);
    }
}

/// RFC 9221 §3: "An endpoint that receives a DATAGRAM frame that is larger than the value it sent in its
/// max_datagram_frame_size transport parameter MUST terminate the connection with an error of type
/// PROTOCOL_VIOLATION." The size is the frame's as received, type and length fields included: a
/// frame whose type (§12.4 lets a receiver accept a longer encoding) or length is encoded in more bytes
/// than needed counts those bytes. Before, the size was recomputed with the shortest encodings, so a
/// frame up to seven bytes over the limit was taken.
#[test]
fn the_datagram_frame_size_limit_counts_the_bytes_received() {
    let small = TransportConfig {
        datagram_receive_buffer: Some(1000),
        ..TransportConfig::default()
    };
    // The limit is 937 bytes (`the_datagram_frame_size_announced_fits_the_receive_buffer`).
    // A two-byte type 0x30 and 936 bytes: 938 bytes.
    let mut long_type = vec![0x40, 0x30];
    long_type.extend([0; 936]);
    // Type 0x31, a four-byte Length of 934, and 934 bytes: 939 bytes.
    let mut long_length = vec![0x31, 0x80, 0x00, 0x03, 0xa6];
    long_length.extend([0; 934]);
    for (payload, frame_type) in [(long_type, 0x30), (long_length, 0x31)] {
        let mut p = Pair::new(small.clone());
        p.client_sends_bytes(&payload);
        p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, frame_type);
    }
    // Within the limit, a longer encoding is accepted: a two-byte type 0x30 and 935 bytes.
    let mut p = Pair::new(small);
    let mut ok = vec![0x40, 0x30];
    ok.extend([9; 935]);
    p.client_sends_bytes(&ok);
    assert_eq!(Pair::lost(&p.server_events), None);
    let h = p.server_h.unwrap();
    assert_eq!(
        p.server.conn(h).unwrap().recv_datagram(),
        Some(Bytes::from(vec![9; 935]))
    );
}
