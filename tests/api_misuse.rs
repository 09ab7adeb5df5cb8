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
    pair_with(cc, sc)
}

/// A quicsand client (seed 2) connecting to a quicsand server (seed 1) with these configurations.
fn pair_with(cc: ClientConfig, sc: ServerConfig) -> Pair {
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

// ---- review: misuse of handles, streams and the clock ----

use quicsand::{ConnectionError, Dir, Event, ReadError, StreamEvent, StreamId, WriteError};

/// Drives the pair for `limit` of virtual time, failing if the clock stands still (a deadline that
/// `handle_timeout` does not move) for 1000 steps in a row.
fn drive_bounded(p: &mut Pair, limit: Duration) {
    let deadline = p.now + limit;
    let mut still = 0;
    let mut last = p.now;
    while p.step_before(Some(deadline)) {
        if p.now == last {
            still += 1;
            assert!(still < 1000, "the clock stands still at {:?}", p.now - epoch());
        } else {
            still = 0;
            last = p.now;
        }
    }
}

#[test]
fn stream_ids_that_do_not_exist_are_unknown_for_every_call() {
    let mut p = connected(default(), default());
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    // Client is the client: these are streams of either initiator and direction, never opened, and IDs
    // beyond 2^62.
    for raw in [
        0,
        1,
        2,
        3,
        400,
        401,
        402,
        403,
        (1 << 62) - 1,
        1 << 62,
        u64::MAX - 3,
        u64::MAX,
    ] {
        let id = StreamId(raw);
        let mut s = conn.stream(id);
        assert_eq!(s.write(b"x"), Err(WriteError::UnknownStream), "{raw}");
        assert_eq!(s.write(b""), Err(WriteError::UnknownStream), "{raw}");
        assert_eq!(s.finish(), Err(WriteError::UnknownStream), "{raw}");
        assert_eq!(s.reset(1), Err(WriteError::UnknownStream), "{raw}");
        assert_eq!(s.set_priority(1), Err(WriteError::UnknownStream), "{raw}");
        assert_eq!(s.stop(1), Err(ReadError::UnknownStream), "{raw}");
        assert_eq!(s.read(&mut [0; 4]), Err(ReadError::UnknownStream), "{raw}");
        assert_eq!(s.read_chunk(4), Err(ReadError::UnknownStream), "{raw}");
        assert_eq!(s.read_chunk(0), Err(ReadError::UnknownStream), "{raw}");
    }
    drop(conn);
    drive_bounded(&mut p, Duration::from_secs(1));
    assert_eq!(Pair::lost(&p.client_events), None);
}

#[test]
fn the_wrong_direction_of_a_unidirectional_stream_is_unknown() {
    let mut p = connected(default(), default());
    // The server opens a unidirectional stream and sends on it.
    let s = quicsand(&mut p.server);
    s.auto_read = false;
    let mut sconn = s.endpoint.conn(s.handle.unwrap()).unwrap();
    let peer_uni = sconn.open_uni().unwrap();
    sconn.stream(peer_uni).write(b"hello").unwrap();
    drop(sconn);
    let c = quicsand(&mut p.client);
    c.auto_read = false;
    p.drive(Duration::from_millis(100));
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    assert_eq!(conn.accept(Dir::Uni), Some(peer_uni));
    let mut s = conn.stream(peer_uni);
    assert_eq!(s.write(b"x"), Err(WriteError::UnknownStream));
    assert_eq!(s.finish(), Err(WriteError::UnknownStream));
    assert_eq!(s.reset(1), Err(WriteError::UnknownStream));
    assert_eq!(s.set_priority(1), Err(WriteError::UnknownStream));
    let mut buf = [0; 16];
    assert_eq!(s.read(&mut buf), Ok(Some(5)));
    let ours = conn.open_uni().unwrap();
    let mut s = conn.stream(ours);
    assert_eq!(s.read(&mut buf), Err(ReadError::UnknownStream));
    assert_eq!(s.read_chunk(10), Err(ReadError::UnknownStream));
    assert_eq!(s.stop(1), Err(ReadError::UnknownStream));
    assert_eq!(s.write(b"x"), Ok(1));
}

#[test]
fn writes_after_finish_or_reset_are_closed_and_reset_after_finish_works_once() {
    let mut p = connected(default(), default());
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    let id = conn.open_bi().unwrap();
    let mut s = conn.stream(id);
    s.write(b"abc").unwrap();
    s.finish().unwrap();
    assert_eq!(s.write(b"x"), Err(WriteError::ClosedStream));
    assert_eq!(s.write(b""), Err(WriteError::ClosedStream));
    assert_eq!(s.finish(), Err(WriteError::ClosedStream));
    // RFC 9000 §3.1: a stream in Data Sent may still be reset.
    assert_eq!(s.reset(7), Ok(()));
    assert_eq!(s.reset(7), Err(WriteError::ClosedStream));
    assert_eq!(s.finish(), Err(WriteError::ClosedStream));
    assert_eq!(s.write(b"x"), Err(WriteError::ClosedStream));
    let id2 = conn.open_bi().unwrap();
    let mut s = conn.stream(id2);
    s.reset(3).unwrap();
    assert_eq!(s.write(b"x"), Err(WriteError::ClosedStream));
    assert_eq!(s.finish(), Err(WriteError::ClosedStream));
    drop(conn);
    drive_bounded(&mut p, Duration::from_secs(2));
    // Neither reset stream reports Finished (the peer never acknowledged a FIN after the reset).
    let events = quicsand(&mut p.client).stream_events();
    assert!(
        !events.iter().any(|e| matches!(e, StreamEvent::Finished { .. })),
        "{events:?}"
    );
    assert_eq!(Pair::lost(&p.client_events), None);
}

/// A stream whose data and FIN were acknowledged (Finished reported) is over: a reset then sends
/// nothing and says so.
#[test]
fn reset_after_finished_is_an_error_and_finished_comes_once() {
    let mut p = connected(default(), default());
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    let id = conn.open_uni().unwrap();
    conn.stream(id).write(b"abc").unwrap();
    conn.stream(id).finish().unwrap();
    drop(conn);
    drive_bounded(&mut p, Duration::from_secs(2));
    let c = quicsand(&mut p.client);
    let finished = |c: &QuicsandNode| {
        c.stream_events()
            .iter()
            .filter(|e| **e == StreamEvent::Finished { id })
            .count()
    };
    assert_eq!(finished(c), 1);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    assert_eq!(conn.stream(id).reset(1), Err(WriteError::ClosedStream));
    assert_eq!(conn.stream(id).write(b"x"), Err(WriteError::ClosedStream));
    assert_eq!(conn.stream(id).set_priority(1), Err(WriteError::ClosedStream));
    drop(conn);
    drive_bounded(&mut p, Duration::from_secs(2));
    assert_eq!(finished(quicsand(&mut p.client)), 1);
    assert_eq!(p.server.received_streams().get(&id.0), Some(&(3, true)));
}

#[test]
fn close_twice_reports_one_loss_and_the_handle_goes_stale() {
    let mut p = connected(default(), default());
    let now = p.now;
    let c = quicsand(&mut p.client);
    let h = c.handle.unwrap();
    c.endpoint.close(now, h, 1, b"one").unwrap();
    c.endpoint.close(now, h, 2, b"two").unwrap();
    c.endpoint.conn(h).unwrap().close(now, 3, b"three");
    drive_bounded(&mut p, Duration::from_secs(10));
    let c = quicsand(&mut p.client);
    let lost: Vec<_> = c
        .raw_events
        .iter()
        .filter(|(_, e)| matches!(e, Event::ConnectionLost { .. }))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(matches!(
        &lost[0].1,
        Event::ConnectionLost {
            reason: ConnectionError::LocallyClosed
        }
    ));
    // The server was told code 1.
    let s_lost = Pair::lost(&p.server_events).cloned();
    assert!(format!("{s_lost:?}").contains("code: 1"), "{s_lost:?}");
    // Drained and forgotten: every call with the handle says so.
    let c = quicsand(&mut p.client);
    let now = p.now;
    assert_eq!(c.endpoint.stats().connections_active, 0);
    assert!(c.endpoint.conn(h).is_err());
    assert!(c.endpoint.close(now, h, 0, b"").is_err());
    assert!(c.endpoint.accept(now, h).is_err());
    assert!(c.endpoint.refuse(now, h).is_err());
    assert_eq!(c.endpoint.poll_timeout(), None);
    assert!(c.endpoint.poll_event().is_none());
}

/// A handle from another endpoint (or made up from a reused slot) never reaches a connection it does
/// not name.
#[test]
fn a_handle_of_a_forgotten_connection_does_not_reach_the_next_one_in_its_slot() {
    let mut p = connected(default(), default());
    let now = p.now;
    let c = quicsand(&mut p.client);
    let old = c.handle.unwrap();
    c.endpoint.close(now, old, 0, b"").unwrap();
    drive_bounded(&mut p, Duration::from_secs(10));
    let cert = TestCert::new();
    let c = quicsand(&mut p.client);
    let new = c
        .endpoint
        .connect(
            p.now,
            ClientConfig::new(cert.client_tls(&[])),
            server_addr(),
            "localhost",
        )
        .unwrap();
    assert_eq!(new.index(), old.index());
    assert_ne!(new, old);
    assert!(c.endpoint.conn(old).is_err());
    assert!(c.endpoint.close(p.now, old, 0, b"").is_err());
    assert!(c.endpoint.conn(new).is_ok());
}

/// Times that go backwards across calls (a caller mixing two clocks, or one that steps back) must not
/// leave `poll_timeout` in the past for good.
#[test]
fn a_clock_going_backwards_between_calls_does_not_spin() {
    let mut p = connected(default(), default());
    let start = p.now;
    let c = quicsand(&mut p.client);
    let h = c.handle.unwrap();
    let mut conn = c.endpoint.conn(h).unwrap();
    let id = conn.open_bi().unwrap();
    conn.stream(id).write(&[1; 50_000]).unwrap();
    drop(conn);
    // Send at start + 10 s, then take timeouts at start.
    let later = start + Duration::from_secs(10);
    let mut buf = Vec::new();
    while c.endpoint.poll_transmit(later, &mut buf).is_some() {}
    for _ in 0..100 {
        let Some(t) = c.endpoint.poll_timeout() else { break };
        if t > later {
            break;
        }
        c.endpoint.handle_timeout(start);
        while c.endpoint.poll_transmit(start, &mut buf).is_some() {}
    }
    // Whatever was due at `start` ran; the rest waits for a later time.
    let t = c.endpoint.poll_timeout();
    assert!(
        t.is_none_or(|t| t > start),
        "deadline {:?} not after start",
        t.map(|t| t - start)
    );
}

/// Every config value at 0 or at its type's maximum: the pair connects (or fails with an error)
/// without a panic or a clock standing still, and a transfer completes when it connects.
#[test]
fn extreme_transport_configs_connect_or_fail_without_a_spin() {
    type Tweak = fn(&mut TransportConfig);
    let tweaks: &[(&str, Tweak)] = &[
        ("idle 0", |c| c.max_idle_timeout = Some(Duration::ZERO)),
        ("idle 1ns", |c| c.max_idle_timeout = Some(Duration::from_nanos(1))),
        ("idle max", |c| c.max_idle_timeout = Some(Duration::MAX)),
        ("idle none", |c| c.max_idle_timeout = None),
        ("handshake 0", |c| c.handshake_timeout = Duration::ZERO),
        ("handshake max", |c| c.handshake_timeout = Duration::MAX),
        ("keepalive 0", |c| c.keep_alive_interval = Some(Duration::ZERO)),
        ("keepalive 1ns", |c| {
            c.keep_alive_interval = Some(Duration::from_nanos(1))
        }),
        ("keepalive max", |c| c.keep_alive_interval = Some(Duration::MAX)),
        ("rtt 0", |c| c.initial_rtt = Duration::ZERO),
        ("ack delay 0", |c| c.max_ack_delay = Duration::ZERO),
        ("ack delay max", |c| c.max_ack_delay = Duration::MAX),
        ("ack delay 2^14 ms", |c| {
            c.max_ack_delay = Duration::from_millis(1 << 14)
        }),
        ("exponent max", |c| c.ack_delay_exponent = u8::MAX),
        ("exponent 21", |c| c.ack_delay_exponent = 21),
        ("threshold 0", |c| c.ack_eliciting_threshold = 0),
        ("threshold max", |c| c.ack_eliciting_threshold = u64::MAX),
        ("ranges 0", |c| c.max_ack_ranges = 0),
        ("tracked 0", |c| c.max_tracked_ack_ranges = 0),
        ("mtu 0", |c| c.mtu = 0),
        ("mtu max", |c| c.mtu = u16::MAX),
        ("udp payload 0", |c| c.max_udp_payload_size = 0),
        ("udp payload 1199", |c| c.max_udp_payload_size = 1199),
        ("udp payload max", |c| c.max_udp_payload_size = u16::MAX),
        ("cid limit 0", |c| c.active_connection_id_limit = 0),
        ("key update 0", |c| c.key_update_interval = Some(0)),
        ("key update 1", |c| c.key_update_interval = Some(1)),
        ("key update max", |c| c.key_update_interval = Some(u64::MAX)),
        ("windows max", |c| {
            c.streams.stream_receive_window = u64::MAX;
            c.streams.receive_window = u64::MAX;
            c.streams.max_stream_receive_window = u64::MAX;
            c.streams.max_receive_window = u64::MAX;
        }),
        ("windows 2^62", |c| {
            c.streams.stream_receive_window = 1 << 62;
            c.streams.receive_window = 1 << 62;
        }),
        ("streams max", |c| {
            c.streams.max_concurrent_bidi_streams = u64::MAX;
            c.streams.max_concurrent_uni_streams = u64::MAX;
        }),
        ("send buffers 0", |c| {
            c.streams.send_buffer = 0;
            c.streams.max_send_buffer = 0;
        }),
        ("send buffers max", |c| {
            c.streams.send_buffer = usize::MAX;
            c.streams.max_send_buffer = usize::MAX;
        }),
        ("fragments 0", |c| c.streams.max_reassembly_fragments = 0),
        ("reused max", |c| c.streams.reused_streams = usize::MAX),
        ("datagrams 0", |c| {
            c.datagram_receive_buffer = Some(0);
            c.datagram_send_buffer = 0;
        }),
        ("datagrams max", |c| {
            c.datagram_receive_buffer = Some(usize::MAX);
            c.datagram_send_buffer = usize::MAX;
        }),
    ];
    for (name, tweak) in tweaks {
        for (client_side, server_side) in [(true, false), (false, true), (true, true)] {
            let mut c = default();
            let mut s = default();
            if client_side {
                tweak(&mut c);
            }
            if server_side {
                tweak(&mut s);
            }
            let mut p = pair(c, s);
            let deadline = p.now + Duration::from_secs(10);
            let mut steps = 0;
            while !p.both_connected() && p.step_before(Some(deadline)) {
                steps += 1;
                assert!(steps < 100_000, "{name}: no end to the handshake");
            }
            if !p.both_connected() {
                panic!(
                    "{name} ({client_side}, {server_side}): no connection: {:?}",
                    p.client_events
                );
            }
            // A send buffer of one byte sends a byte per round trip.
            let len = if name.starts_with("send buffers 0") {
                200
            } else {
                30_000
            };
            let id = p.client.send_stream(p.now, Bytes::from(vec![7; len]));
            let deadline = p.now + Duration::from_secs(30);
            let mut last = p.now;
            let mut still = 0;
            while p.server.received_streams().get(&id) != Some(&(len, true)) {
                assert!(
                    p.step_before(Some(deadline)),
                    "{name} ({client_side}, {server_side}): transfer incomplete: {:?} {:?}",
                    p.client_events,
                    p.server_events
                );
                if p.now == last {
                    still += 1;
                    assert!(still < 10_000, "{name}: the clock stands still");
                } else {
                    (still, last) = (0, p.now);
                }
            }
            // The connection then goes idle (or keeps alive) without a spin.
            drive_bounded(&mut p, Duration::from_secs(5));
        }
    }
}

#[test]
fn extreme_endpoint_configs_do_not_panic() {
    let cert = TestCert::new();
    for k in 0..4 {
        let mut config = quicsand::EndpointConfig::with_seed(9);
        match k {
            0 => config.max_segments = 0,
            1 => config.max_segments = usize::MAX,
            2 => config.max_stateless_queue = 0,
            _ => config.supported_versions = Vec::new(),
        }
        let mut c = QuicsandNode::with_endpoint(client_addr(), quicsand::Endpoint::new(config, None));
        let r = c.endpoint.connect(
            epoch(),
            ClientConfig::new(cert.client_tls(&[])),
            server_addr(),
            "localhost",
        );
        if k == 3 {
            assert!(r.is_err());
            continue;
        }
        c.handle = Some(r.unwrap());
        let sc = ServerConfig::new(cert.server_tls(&[]));
        let mut p = Pair::new(
            Box::new(c),
            Box::new(QuicsandNode::server(server_addr(), sc, 1)),
            3,
        );
        assert!(
            p.drive_until(Duration::from_secs(5), |p| p.both_connected()),
            "{k}"
        );
        assert!(transfer(&mut p, 100_000), "{k}");
    }
}

/// Per connection, what its events said so far, to check that none comes twice or out of turn.
#[derive(Default)]
struct Seen {
    connected: bool,
    confirmed: bool,
    lost: bool,
    /// Streams whose sending side we reset or that the peer stopped.
    send_ended: std::collections::HashSet<u64>,
    finished: std::collections::HashSet<u64>,
    peer_reset: std::collections::HashSet<u64>,
    stopped: std::collections::HashSet<u64>,
}

/// One side of [`random_misuse`]: an endpoint, its clock (which may step back) and what it saw.
struct Side {
    ep: quicsand::Endpoint,
    addr: std::net::SocketAddr,
    handles: Vec<quicsand::ConnectionHandle>,
    streams: Vec<StreamId>,
    seen: std::collections::HashMap<quicsand::ConnectionHandle, Seen>,
    buf: Vec<u8>,
    late: Vec<String>,
}

impl Side {
    fn drain(
        &mut self,
        now: std::time::Instant,
        wire: &mut Vec<(std::time::Instant, bool, Vec<u8>)>,
        to_server: bool,
        rng: &mut common::NetRng,
        arrive: std::time::Instant,
    ) {
        while let Some(t) = self.ep.poll_transmit(now, &mut self.buf) {
            for d in t.datagrams(&self.buf) {
                if !rng.chance(0.05) {
                    wire.push((arrive, to_server, d.to_vec()));
                }
            }
        }
        while let Some((h, e)) = self.ep.poll_event() {
            if !self.handles.contains(&h) {
                self.handles.push(h);
            }
            let seen = self.seen.entry(h).or_default();
            assert!(!seen.lost, "{e:?} after ConnectionLost");
            match e {
                Event::Connected => {
                    assert!(!seen.connected, "Connected twice");
                    seen.connected = true;
                }
                Event::HandshakeConfirmed => {
                    assert!(!seen.confirmed, "HandshakeConfirmed twice");
                    seen.confirmed = true;
                }
                Event::ConnectionLost { reason } => {
                    seen.lost = true;
                    // Only the application ends these connections (a close, a refusal), or the peer's
                    // end whose CONNECTION_CLOSE was lost, which is checked at the end.
                    let text = format!("{reason:?}");
                    if matches!(reason, ConnectionError::Reset | ConnectionError::TimedOut) {
                        self.late.push(text);
                        continue;
                    }
                    assert!(
                        matches!(
                            reason,
                            ConnectionError::LocallyClosed
                                | ConnectionError::ApplicationClosed { .. }
                                | ConnectionError::Refused
                        ) || text.contains("APPLICATION_ERROR")
                            || text.contains("CONNECTION_REFUSED"),
                        "lost: {reason:?} at {:?} on {}",
                        now - epoch(),
                        self.addr
                    );
                }
                Event::Stream(StreamEvent::Finished { id }) => {
                    assert!(
                        !seen.send_ended.contains(&id.0),
                        "Finished after a reset or stop: {id:?}"
                    );
                    assert!(seen.finished.insert(id.0), "Finished twice: {id:?}");
                }
                Event::Stream(StreamEvent::Reset { id, .. }) => {
                    assert!(seen.peer_reset.insert(id.0), "Reset twice: {id:?}");
                }
                Event::Stream(StreamEvent::Stopped { id, .. }) => {
                    assert!(!seen.finished.contains(&id.0), "Stopped after Finished: {id:?}");
                    assert!(seen.stopped.insert(id.0), "Stopped twice: {id:?}");
                    seen.send_ended.insert(id.0);
                }
                Event::Stream(StreamEvent::Writable { id }) => {
                    assert!(
                        !seen.send_ended.contains(&id.0),
                        "Writable after a reset or stop: {id:?} on {} {h:?} stopped {}",
                        self.addr,
                        seen.stopped.contains(&id.0)
                    );
                }
                _ => {}
            }
        }
    }

    /// One random application call.
    fn poke(&mut self, now: std::time::Instant, rng: &mut common::NetRng) {
        let n = self.handles.len() as u64;
        if n == 0 {
            return;
        }
        let h = self.handles[(rng.next_u64() % n) as usize];
        let pick = 1 + rng.next_u64() % 99;
        if rng.chance(0.00005) {
            let _ = self.ep.close(now, h, rng.next_u64(), b"bye");
            return;
        }
        if rng.chance(0.05) {
            match rng.next_u64() % 5 {
                0 | 4 => {
                    let _ = self.ep.accept(now, h);
                }
                1 => {
                    if rng.chance(0.01) {
                        let _ = self.ep.refuse(now, h);
                    }
                }
                2 => {
                    let _ = self.ep.retry(now, h);
                }
                _ => {
                    self.ep.set_accept_policy(quicsand::AcceptPolicy::Ask);
                }
            }
            return;
        }
        let Ok(mut conn) = self.ep.conn(h) else { return };
        let id = if !self.streams.is_empty() && rng.chance(0.9) {
            self.streams[(rng.next_u64() % self.streams.len() as u64) as usize]
        } else {
            StreamId(rng.next_u64() % 64)
        };
        let len = (rng.next_u64() % 3000) as usize;
        let mut buf = vec![0u8; len];
        let seen = self.seen.entry(h).or_default();
        match pick {
            1..=8 => {
                if let Some(id) = conn.open_bi() {
                    self.streams.push(id);
                }
            }
            9..=14 => {
                if let Some(id) = conn.open_uni() {
                    self.streams.push(id);
                }
            }
            15..=19 => {
                for dir in [Dir::Bi, Dir::Uni] {
                    while let Some(id) = conn.accept(dir) {
                        self.streams.push(id);
                    }
                }
            }
            20..=44 => {
                let _ = conn.stream(id).write(&buf);
            }
            45..=49 => {
                let _ = conn.stream(id).finish();
            }
            50..=52 => {
                if conn.stream(id).reset(rng.next_u64()).is_ok() {
                    seen.send_ended.insert(id.0);
                }
            }
            53..=55 => {
                let _ = conn.stream(id).stop(rng.next_u64());
            }
            56..=70 => {
                let _ = conn.stream(id).read(&mut buf);
            }
            71..=80 => {
                let _ = conn.stream(id).read_chunk(len);
            }
            81..=82 => {
                let _ = conn.stream(id).set_priority(rng.next_u64() as i32);
            }
            83..=87 => {
                let _ = conn.send_datagram(Bytes::from(buf));
            }
            88..=91 => {
                let _ = conn.recv_datagram();
                let _ = conn.max_datagram_size();
            }
            92..=93 => conn.ping(),
            94 => conn.force_key_update(),
            _ => {
                let _ = conn.stats();
                let _ = conn.is_closed();
                let _ = conn.peer_transport_parameters();
            }
        }
    }
}

/// Random application calls (streams of any ID, after finish, reset or close, datagrams of any size;
/// accept, refuse and Retry on any handle, stale ones too), a lossy network and clocks that step back
/// now and then: no panic, no event twice or out of turn, no
/// deadline that stays passed, and both endpoints end empty once everything is closed.
#[test]
fn random_misuse_keeps_the_endpoint_sound() {
    for seed in 0..300 {
        random_misuse(seed);
    }
}

fn random_misuse(seed: u64) {
    eprintln!("seed {seed}");
    let cert = TestCert::new();
    let mut rng = common::NetRng::new(seed);
    let mut sc = ServerConfig::new(cert.server_tls(&[]));
    sc.transport.streams.send_buffer = 4096;
    sc.transport.streams.stream_receive_window = 3000;
    sc.transport.streams.receive_window = 10000;
    sc.transport.streams.max_concurrent_bidi_streams = 5;
    sc.transport.datagram_send_buffer = 3000;
    if seed % 2 == 0 {
        sc.accept = quicsand::AcceptPolicy::Ask;
    }
    let mut server = Side {
        ep: quicsand::Endpoint::new(quicsand::EndpointConfig::with_seed(seed), Some(sc)),
        addr: server_addr(),
        handles: Vec::new(),
        streams: Vec::new(),
        seen: Default::default(),
        buf: Vec::new(),
        late: Vec::new(),
    };
    let mut client = Side {
        ep: quicsand::Endpoint::new(quicsand::EndpointConfig::with_seed(seed + 1000), None),
        addr: client_addr(),
        handles: Vec::new(),
        streams: Vec::new(),
        seen: Default::default(),
        buf: Vec::new(),
        late: Vec::new(),
    };
    let mut real = epoch() + Duration::from_secs(100);
    // Small and odd client settings: tiny send buffers and windows, few peer streams.
    let mut cc = ClientConfig::new(cert.client_tls(&[]));
    cc.transport.streams.send_buffer = 1 + (seed as usize % 3) * 1000;
    cc.transport.streams.stream_receive_window = 1 + seed % 2000;
    cc.transport.streams.max_concurrent_uni_streams = seed % 3;
    let h = client.ep.connect(real, cc, server_addr(), "localhost").unwrap();
    client.handles.push(h);
    let mut wire: Vec<(std::time::Instant, bool, Vec<u8>)> = Vec::new();
    let one_way = Duration::from_millis(5);
    let steps = 3000;
    for step in 0..steps + 3000 {
        // The caller's clock: mostly real time, sometimes up to 10 s behind.
        let now = if rng.chance(0.15) {
            real - Duration::from_millis(rng.next_u64() % 10000)
        } else {
            real
        };
        if step == steps {
            client.ep.close_all(now, 0, b"end");
            server.ep.close_all(now, 0, b"end");
        }
        let mut i = 0;
        while i < wire.len() {
            if wire[i].0 <= real {
                let (_, to_server, p) = wire.remove(i);
                let (side, from) = if to_server {
                    (&mut server, client.addr)
                } else {
                    (&mut client, server.addr)
                };
                side.ep.handle_datagram(
                    now,
                    quicsand::Datagram {
                        remote: from,
                        local: None,
                        ecn: None,
                        payload: bytes::BytesMut::from(&p[..]),
                    },
                );
            } else {
                i += 1;
            }
        }
        for (side, to_server) in [(&mut client, true), (&mut server, false)] {
            // Events are drained before the calls: one queued before a reset is not stale news of it.
            side.drain(now, &mut wire, to_server, &mut rng, real + one_way);
            if step < steps {
                for _ in 0..(rng.next_u64() % 4) {
                    side.poke(now, &mut rng);
                }
            }
            side.drain(now, &mut wire, to_server, &mut rng, real + one_way);
            let mut in_a_row = 0;
            while side.ep.poll_timeout().is_some_and(|t| t <= now) {
                side.ep.handle_timeout(now);
                side.drain(now, &mut wire, to_server, &mut rng, real + one_way);
                in_a_row += 1;
                assert!(
                    in_a_row < 50,
                    "seed {seed}: a deadline stays passed at step {step}"
                );
            }
        }
        // Next: the earliest deadline or arrival, at least 1 ms on.
        let next = [client.ep.poll_timeout(), server.ep.poll_timeout()]
            .into_iter()
            .flatten()
            .chain(wire.iter().map(|w| w.0))
            .min();
        match next {
            Some(t) => {
                real = real
                    .max(t)
                    .min(real + Duration::from_millis(50))
                    .max(real + Duration::from_millis(1))
            }
            None if step >= steps => break,
            None => real += Duration::from_millis(10),
        }
    }
    for (a, b) in [(&client, &server), (&server, &client)] {
        if !a.late.is_empty() {
            let peer_closed = b.seen.values().filter(|s| s.lost).count();
            assert!(
                peer_closed >= a.late.len(),
                "seed {seed}: {:?} on {} with {peer_closed} closed by the peer",
                a.late,
                a.addr
            );
        }
    }
    assert_eq!(client.ep.stats().connections_active, 0, "seed {seed}");
    assert_eq!(server.ep.stats().connections_active, 0, "seed {seed}");
}

/// `stop` (and a read into an empty buffer) on a receiving side that is over (read to its end, its
/// reset reported, or stopped already) says `ClosedStream`, as reads do then, whether or not the sending
/// half of the same bidirectional stream still keeps the stream alive. Before, both said `Ok` while our
/// sending half was open, and `ClosedStream` once both halves were over and the stream forgotten.
#[test]
fn stop_on_a_receiving_side_that_is_over_is_closed_whatever_the_sending_side() {
    let mut p = connected(default(), default());
    // Client streams: a answered and finished, b answered with a reset, c left alone; d stopped twice.
    let c = quicsand(&mut p.client);
    c.auto_read = false;
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    let [a, b, d] = [(); 3].map(|_| {
        let id = conn.open_bi().unwrap();
        conn.stream(id).write(b"q").unwrap();
        id
    });
    drop(conn);
    let s = quicsand(&mut p.server);
    s.auto_read = false;
    p.drive(Duration::from_millis(100));
    let s = quicsand(&mut p.server);
    let mut conn = s.endpoint.conn(s.handle.unwrap()).unwrap();
    while conn.accept(Dir::Bi).is_some() {}
    conn.stream(a).write(b"answer").unwrap();
    conn.stream(a).finish().unwrap();
    conn.stream(b).reset(5).unwrap();
    let uni = conn.open_uni().unwrap();
    conn.stream(uni).write(b"one-way").unwrap();
    conn.stream(uni).finish().unwrap();
    drop(conn);
    p.drive(Duration::from_millis(100));
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    let mut buf = [0; 64];
    assert_eq!(conn.stream(a).read(&mut buf), Ok(Some(6)));
    assert_eq!(conn.stream(a).read(&mut buf), Ok(None));
    assert_eq!(conn.stream(b).read(&mut buf), Err(ReadError::Reset { code: 5 }));
    assert_eq!(conn.stream(d).stop(1), Ok(()));
    // The peer's unidirectional stream, read to its end, is over and forgotten.
    assert_eq!(conn.accept(Dir::Uni), Some(uni));
    assert_eq!(conn.stream(uni).read(&mut buf), Ok(Some(7)));
    assert_eq!(conn.stream(uni).read(&mut buf), Ok(None));
    assert_eq!(conn.stream(uni).read(&mut []), Err(ReadError::ClosedStream));
    assert_eq!(conn.stream(uni).stop(2), Err(ReadError::ClosedStream));
    // Our sending halves are open: the streams are still there.
    for id in [a, b, d] {
        assert_eq!(
            conn.stream(id).read(&mut buf),
            Err(ReadError::ClosedStream),
            "{id:?}"
        );
        assert_eq!(
            conn.stream(id).read(&mut []),
            Err(ReadError::ClosedStream),
            "{id:?}"
        );
        assert_eq!(conn.stream(id).stop(2), Err(ReadError::ClosedStream), "{id:?}");
        assert_eq!(conn.stream(id).write(b"more"), Ok(4), "{id:?}");
    }
}

/// An application that pings through the handshake (every 100 ms, under the first PTO of about a
/// second) after its first Initial was lost: each PING is ack-eliciting and arms the PTO again from its
/// sending (RFC 9002 §6.2.1), so the probe that would send the ClientHello again never fires, and the
/// server, with no connection yet, drops every Initial without CRYPTO. The PING must carry the CRYPTO
/// data still unacknowledged, as a probe does (RFC 9002 §6.2.4). Before, the handshake never completed.
#[test]
fn pinging_through_the_handshake_does_not_keep_a_lost_client_hello_back() {
    let cert = TestCert::new();
    let sc = ServerConfig::new(cert.server_tls(&[]));
    let mut p = pair_with(ClientConfig::new(cert.client_tls(&[])), sc);
    // The client's first datagram is lost.
    p.filter = Box::new(|dir, index, _, _| {
        (dir != common::Dir::ClientToServer || index != 0).then_some(Duration::ZERO)
    });
    let end = p.now + Duration::from_secs(10);
    while !p.both_connected() && p.now < end {
        let next = p.now + Duration::from_millis(100);
        p.drive_until(Duration::from_millis(100), |p| p.both_connected());
        p.now = p.now.max(next);
        p.client.ping();
    }
    assert!(
        p.both_connected(),
        "{:?}",
        quicsand(&mut p.server).endpoint.stats()
    );
}

/// A stream finished without a byte written (a zero-length write before, or none) still goes: the peer
/// sees it open and end, and we hear Finished once.
#[test]
fn an_empty_finished_stream_is_delivered_and_reported_finished_once() {
    let mut p = connected(default(), default());
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    let a = conn.open_uni().unwrap();
    let b = conn.open_bi().unwrap();
    assert_eq!(conn.stream(a).write(b""), Ok(0));
    conn.stream(a).finish().unwrap();
    conn.stream(b).finish().unwrap();
    drop(conn);
    drive_bounded(&mut p, Duration::from_secs(2));
    let received = p.server.received_streams();
    assert_eq!(received.get(&a.0), Some(&(0, true)));
    assert_eq!(received.get(&b.0), Some(&(0, true)));
    let events = quicsand(&mut p.client).stream_events();
    for id in [a, b] {
        let n = events
            .iter()
            .filter(|e| **e == StreamEvent::Finished { id })
            .count();
        assert_eq!(n, 1, "{id:?}: {events:?}");
    }
}

/// An `open` refused at the peer's stream limit is followed by one Available event once the peer
/// raises the limit, and `open` then succeeds.
#[test]
fn a_refused_open_is_followed_by_available_once_the_limit_rises() {
    let mut s = default();
    s.streams.max_concurrent_uni_streams = 1;
    let mut p = connected(default(), s);
    let c = quicsand(&mut p.client);
    let mut conn = c.endpoint.conn(c.handle.unwrap()).unwrap();
    let first = conn.open_uni().unwrap();
    assert_eq!(conn.open_uni(), None);
    assert_eq!(conn.open_uni(), None);
    conn.stream(first).finish().unwrap();
    drop(conn);
    // The server reads the stream to its end (auto_read), which frees its slot.
    drive_bounded(&mut p, Duration::from_secs(2));
    let c = quicsand(&mut p.client);
    let available = c
        .stream_events()
        .iter()
        .filter(|e| **e == StreamEvent::Available { dir: Dir::Uni })
        .count();
    assert_eq!(available, 1, "{:?}", c.stream_events());
    assert!(c.conn().open_uni().is_some());
}

/// A wall clock for tokens that reads anything: zero, the largest duration, or steps back and forth.
struct WildClock(std::sync::atomic::AtomicU64);

impl quicsand::WallClock for WildClock {
    fn unix_time(&self) -> Duration {
        let k = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match k % 4 {
            0 => Duration::ZERO,
            1 => Duration::MAX,
            2 => Duration::from_secs(1_700_000_000),
            _ => Duration::from_secs(u64::MAX / 2),
        }
    }
}

/// Token lifetimes of 0 and of the largest duration, with Retry for every connection and NEW_TOKEN
/// tokens kept for the next: connections are still made (a token that cannot validate costs a Retry or
/// the amplification limit, not the connection). A wall clock that reads anything: no panic or spin.
#[test]
fn extreme_token_settings_and_a_wild_wall_clock_do_not_panic() {
    for k in 0..6 {
        let cert = TestCert::new();
        let mut sc = ServerConfig::new(cert.server_tls(&[]));
        sc.retry = quicsand::RetryPolicy::Always;
        match k {
            0 => sc.tokens.retry_token_lifetime = Duration::ZERO,
            1 => sc.tokens.retry_token_lifetime = Duration::MAX,
            2 => sc.tokens.new_token_lifetime = Duration::ZERO,
            3 => sc.tokens.new_token_lifetime = Duration::MAX,
            4 => sc.tokens.new_tokens_per_connection = usize::MAX,
            _ => {}
        }
        if k == 5 {
            sc.tokens.wall_clock = Some(std::sync::Arc::new(WildClock(Default::default())));
        }
        let mut p = pair_with(ClientConfig::new(cert.client_tls(&[])), sc);
        let connected = |p: &mut Pair| {
            quicsand(&mut p.client)
                .raw_events
                .iter()
                .filter(|(_, e)| *e == Event::Connected)
                .count()
        };
        // Two connections in turn: the second presents the first one's NEW_TOKEN token.
        for round in 1..=2 {
            if round == 2 {
                let now = p.now;
                let c = quicsand(&mut p.client);
                c.connect(
                    now,
                    ClientConfig::new(cert.client_tls(&[])),
                    server_addr(),
                    "localhost",
                );
            }
            let deadline = p.now + Duration::from_secs(10);
            while connected(&mut p) < round && p.step_before(Some(deadline)) {}
            // Retry tokens that expire at once: the handshake goes on unvalidated (RFC 9000 §8.1.3). A
            // clock that leaps years back and forth may end it with INVALID_TOKEN instead.
            if k < 5 {
                assert_eq!(connected(&mut p), round, "{k}: {:?}", p.client_events);
            }
            drive_bounded(&mut p, Duration::from_secs(1));
        }
    }
}
