//! The public API under caller misuse and extreme configurations: documented errors or working
//! connections, never a panic or a stall.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::quicsand_node::QuicsandNode;
use common::{client_addr, epoch, server_addr, Node, Pair, TestCert};
use quicsand::{ClientConfig, ServerConfig, TransportConfig};

fn pair(client: TransportConfig, server: TransportConfig) -> Pair {
    let cert = TestCert::new();
    let mut sc = ServerConfig::new(cert.server_tls(&[]));
    sc.transport = server;
    let mut cc = ClientConfig::new(cert.client_tls(&[]));
    cc.transport = client;
    let mut c = QuicsandNode::client(client_addr(), 2);
    c.connect(epoch(), cc, server_addr(), "localhost");
    Pair::new(
        Box::new(c),
        Box::new(QuicsandNode::server(server_addr(), sc, 1)),
        3,
    )
}

fn connected(client: TransportConfig, server: TransportConfig) -> Pair {
    let mut p = pair(client, server);
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    p
}

fn quicsand(n: &mut Box<dyn Node>) -> &mut QuicsandNode {
    n.as_any().downcast_mut().expect("a quicsand node")
}

/// Sends `len` bytes on a new stream from the client; whether the server got them all, with FIN.
fn transfer(p: &mut Pair, len: usize) -> bool {
    let id = p.client.send_stream(p.now, Bytes::from(vec![7; len]));
    p.drive_until(Duration::from_secs(20), |_| false);
    p.server.received_streams().get(&id) == Some(&(len, true))
}

fn default() -> TransportConfig {
    TransportConfig::default()
}

#[test]
fn error_codes_of_2_62_or_more_do_not_panic() {
    for op in 0..3 {
        let mut p = connected(default(), default());
        let now = p.now;
        let c = quicsand(&mut p.client);
        let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
        let id = conn.open_bi().unwrap();
        conn.stream(id).write(b"x").unwrap();
        match op {
            0 => conn.close(now, 1 << 62, b""),
            1 => conn.stream(id).reset(u64::MAX).unwrap(),
            _ => conn.stream(id).stop(1 << 62).unwrap(),
        }
        drop(conn);
        p.drive(Duration::from_secs(1));
    }
}

#[test]
fn a_huge_initial_rtt_does_not_panic() {
    let c = TransportConfig {
        initial_rtt: Duration::MAX,
        ..default()
    };
    pair(c, default()).drive(Duration::from_secs(1));
}

/// A configured starting size the path does not carry is found out as a black hole: the connection falls
/// back to 1200 bytes (the size every path carries) rather than to the configured size, and goes on.
#[test]
fn a_starting_mtu_above_the_path_falls_back_to_1200() {
    let c = TransportConfig {
        mtu: 1400,
        ..default()
    };
    let mut p = connected(c, default());
    p.filter = Box::new(|_, _, datagram, _| (datagram.len() <= 1300).then_some(Duration::ZERO));
    assert!(transfer(&mut p, 100_000), "{:?}", p.client_events);
}

/// RFC 9000 §18.2: the peer's max_udp_payload_size bounds our datagrams like the path MTU.
#[test]
fn the_peers_max_udp_payload_size_caps_the_configured_mtu() {
    let c = TransportConfig {
        mtu: 1452,
        mtu_discovery: None,
        ..default()
    };
    let s = TransportConfig {
        max_udp_payload_size: 1200,
        ..default()
    };
    let mut p = connected(c, s);
    assert!(transfer(&mut p, 50_000));
    let largest = quicsand(&mut p.client)
        .transmits
        .iter()
        .map(|t| t.1.unwrap_or(t.0))
        .max();
    assert!(largest <= Some(1200), "client sent {largest:?}-byte datagrams");
}

/// Our configured limit is clamped (to 64): a huge one does not let the peer's announced limit make us
/// issue thousands of connection IDs.
#[test]
fn a_huge_active_connection_id_limit_stays_bounded() {
    let c = TransportConfig {
        active_connection_id_limit: 1 << 13,
        ..default()
    };
    let s = TransportConfig {
        active_connection_id_limit: u64::MAX,
        ..default()
    };
    let mut p = connected(c, s);
    let before = p.bytes[1];
    p.drive(Duration::from_secs(1));
    let sent = p.bytes[1] - before;
    assert!(sent < 10_000, "server sent {sent} bytes");
}

/// A receive window of one byte is renewed like any other (half of it, rounded up, is one byte), so
/// auto-tuning can grow it.
#[test]
fn one_byte_receive_windows_still_grow() {
    let mut s = default();
    s.streams.receive_window = 1;
    s.streams.stream_receive_window = 1;
    assert!(transfer(&mut connected(default(), s), 10_000));
}

/// Receive windows of 0 would stall every stream for good (no credit is ever renewed, so auto-tuning
/// never starts); they are taken as one byte, announced as such, and grow. Maximum windows of 0 are taken
/// as the initial ones: one byte, which is slow but still moves.
#[test]
fn zero_receive_windows_are_taken_as_one_byte_and_grow() {
    let zero = |conn: bool, stream: bool, max: bool| {
        let mut s = default();
        if conn {
            s.streams.receive_window = 0;
        }
        if stream {
            s.streams.stream_receive_window = 0;
        }
        if max {
            s.streams.max_receive_window = 0;
            s.streams.max_stream_receive_window = 0;
        }
        s
    };
    for (conn, stream) in [(true, false), (false, true), (true, true)] {
        assert!(
            transfer(&mut connected(default(), zero(conn, stream, false)), 10_000),
            "connection window 0: {conn}, stream window 0: {stream}"
        );
    }
    assert!(transfer(&mut connected(default(), zero(true, true, true)), 100));
}

#[test]
fn stream_and_datagram_calls_after_close_report_an_error() {
    let mut p = connected(default(), default());
    let now = p.now;
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    let id = conn.open_uni().unwrap();
    let bi = conn.open_bi().unwrap();
    conn.close(now, 0, b"");
    // No STOP_SENDING would go out, as no RESET_STREAM would for reset.
    assert_eq!(
        conn.stream(bi).stop(1),
        Err(quicsand::ReadError::ConnectionClosed)
    );
    assert_eq!(
        conn.stream(id).write(b"lost"),
        Err(quicsand::WriteError::ConnectionClosed)
    );
    assert_eq!(
        conn.stream(id).finish(),
        Err(quicsand::WriteError::ConnectionClosed)
    );
    assert_eq!(
        conn.stream(id).reset(1),
        Err(quicsand::WriteError::ConnectionClosed)
    );
    assert_eq!(
        conn.send_datagram(Bytes::from_static(b"x")),
        Err(quicsand::SendDatagramError::ConnectionClosed)
    );
    assert_eq!(conn.open_bi(), None);
    assert_eq!(conn.open_uni(), None);
}

/// `max_datagram_size` is documented as "the largest datagram payload `send_datagram` accepts now, or
/// why none": once the connection is closing, `send_datagram` takes none and says ConnectionClosed, and so
/// must `max_datagram_size`. Before, it still gave the size the path allowed.
#[test]
fn max_datagram_size_after_close_reports_the_close() {
    let mut p = connected(default(), default());
    let now = p.now;
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    assert!(conn.max_datagram_size().is_ok());
    conn.close(now, 0, b"");
    assert_eq!(
        conn.send_datagram(Bytes::from_static(b"x")),
        Err(quicsand::SendDatagramError::ConnectionClosed)
    );
    assert_eq!(
        conn.max_datagram_size(),
        Err(quicsand::SendDatagramError::ConnectionClosed)
    );
}

#[test]
fn reading_into_an_empty_buffer_still_checks_the_stream() {
    let mut p = connected(default(), default());
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    assert_eq!(
        conn.stream(quicsand::StreamId(400)).read(&mut []),
        Err(quicsand::ReadError::UnknownStream)
    );
    let id = conn.open_bi().unwrap();
    assert_eq!(conn.stream(id).read(&mut []), Ok(Some(0)));
    // Our own unidirectional stream cannot be read: the same error with or without a buffer.
    let id = conn.open_uni().unwrap();
    let real = conn.stream(id).read(&mut [0; 8]);
    assert!(real.is_err());
    assert_eq!(conn.stream(id).read(&mut []), real);
}

/// RFC 9000 §7.5: "Implementations MUST support buffering at least 4096 bytes of data received in
/// out-of-order CRYPTO frames", whatever the configuration says; a server certificate chain arrives in
/// several CRYPTO frames, so a smaller buffer would fail every handshake.
#[test]
fn a_crypto_buffer_configured_below_4096_bytes_still_handshakes() {
    let tiny = TransportConfig {
        crypto_buffer_size: 0,
        ..default()
    };
    let mut p = pair(tiny.clone(), tiny);
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
}
