//! What a hostile peer, or a flood of them, can make an endpoint hold, under the default limits: each
//! test drives the worst case a peer can and asserts the bound on what stays held (lengths and
//! capacities, never time).

use std::time::Duration;

use bytes::Bytes;

use super::churn::Net;
use super::peer_errors::{inject, sends, Pair};
use super::Endpoint;
use crate::conn::SpaceId;
use crate::event::Event;
use crate::wire::frame::{Datagram, Dir, Frame, ResetStream, StopSending, StreamFrame, StreamId};
use crate::{ConnectionError, EndpointConfig, Side, TransportConfig};

/// RFC 9000 §21.6: a host completing handshakes from as many ports as it likes makes an endpoint
/// hold a connection for each, for as long as it keeps them alive. `ServerConfig::max_connections`
/// bounds the table; the clients beyond it are refused at once (§5.2.2), without state.
#[test]
fn connections_beyond_max_connections_are_refused_without_state() {
    let mut net = Net::new();
    let mut config = net.server_config.clone();
    config.max_connections = 3;
    net.server = Endpoint::new(EndpointConfig::with_seed(1), Some(config));
    let hs: Vec<_> = (0..5).map(|_| net.connect()).collect();
    net.run(Duration::from_secs(2));
    let stats = net.server.stats();
    assert_eq!(stats.connections_active, 3);
    assert_eq!(stats.refused_connection_limit, 2);
    let refused = hs
        .iter()
        .filter(|&&h| {
            net.client_events.iter().any(|(x, e)| {
                *x == h
                    && *e
                        == Event::ConnectionLost {
                            reason: ConnectionError::Refused,
                        }
            })
        })
        .count();
    assert_eq!(refused, 2);
    // Once one ends, a newcomer gets its place.
    let first = hs[0];
    let now = net.now;
    net.client.close(now, first, 0, b"bye").unwrap();
    net.run(Duration::from_secs(10));
    let late = net.connect();
    net.run(Duration::from_secs(2));
    assert!(net
        .client_events
        .iter()
        .any(|(x, e)| *x == late && *e == Event::Connected));
    assert_eq!(net.server.stats().connections_active, 3);
}

/// A hostile client against an application that never calls `poll_event`: it opens every stream the
/// server allows, sends on each, resets each, asks it to stop sending, and floods DATAGRAM frames, ten
/// times over. The events queued stay within a few per stream allowed (each stream is held until the
/// application sees it, so its limit bounds them: 701 events, Opened, Readable and Reset for each of the
/// 200 streams, Stopped for the 100 bidirectional ones, one DatagramReceived), and repeating it all adds
/// none.
#[test]
fn events_stay_bounded_when_the_application_never_polls() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let limits = TransportConfig::default().streams;
    let streams = limits.max_concurrent_bidi_streams + limits.max_concurrent_uni_streams;
    let mut after_first = None;
    for round in 0..10u64 {
        for dir in [Dir::Bi, Dir::Uni] {
            for index in 0..100 {
                let id = StreamId::new(Side::Client, dir, index);
                let mut frames = vec![
                    Frame::Stream(StreamFrame {
                        id,
                        offset: round,
                        fin: false,
                        data: Bytes::from_static(b"x"),
                    }),
                    Frame::ResetStream(ResetStream {
                        id,
                        error_code: 1,
                        final_size: 10,
                    }),
                ];
                if dir == Dir::Bi {
                    frames.push(Frame::StopSending(StopSending { id, error_code: 2 }));
                }
                inject(&mut p, SpaceId::Data, &frames);
            }
        }
        for _ in 0..1000 {
            inject(
                &mut p,
                SpaceId::Data,
                &[Frame::Datagram(Datagram {
                    data: Bytes::from_static(b"d"),
                })],
            );
        }
        assert!(!p.server.conn(h).unwrap().is_closed());
        let queued = p.server.events.len();
        assert!(
            queued as u64 <= 4 * streams + 8,
            "{queued} events queued in round {round}"
        );
        assert_eq!(*after_first.get_or_insert(queued), queued, "round {round}");
    }
}

/// A client that never acknowledges anything, and keeps the connection from its idle timeout with a
/// PING a second, while the server's application has megabytes to send: for ten minutes the server's
/// records of packets in flight stay within the congestion window and a probe or two per PTO (the
/// backoff doubles without a cap, RFC 9002 §6.2.1, and no ACK resets it), and what waits to be sent
/// within the send buffer.
#[test]
fn sent_packet_records_stay_bounded_when_the_peer_never_acknowledges() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let id = p.server.conn(h).unwrap().open_bi().unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let start = p.now;
    let end = p.now + Duration::from_secs(600);
    let mut next_ping = p.now;
    let (mut most_records, mut most_in_flight, mut written) = (0, 0, 0);
    while p.now < end {
        if p.now >= next_ping {
            if let Some(c) = p.server.table.get(h).map(|e| &e.conn) {
                if c.is_closed() {
                    panic!("closed at {:?}: {:?}", p.now - start, c.close);
                }
            } else {
                panic!("gone at {:?}", p.now - start);
            }
            inject(&mut p, SpaceId::Data, &[Frame::Ping]);
            // As a real packet carrying it would (RFC 9000 §10.1); an injected payload does not.
            let now = p.now;
            p.server.table.get_mut(h).unwrap().conn.reset_idle(now);
            next_ping = p.now + Duration::from_secs(1);
        }
        if let Ok(n) = p.server.conn(h).unwrap().stream(id).write(&chunk) {
            written += n;
        }
        let _ = sends(&mut p.server, p.now);
        let conn = &p.server.table.get(h).unwrap().conn;
        most_records = most_records.max(conn.recovery.oldest_unacked(SpaceId::Data).count());
        most_in_flight = most_in_flight.max(conn.recovery.bytes_in_flight());
        let next = p.server.poll_timeout().map_or(next_ping, |t| t.min(next_ping));
        p.now = p.now.max(next);
        let now = p.now;
        p.server.handle_timeout(now);
    }
    assert!(!p.server.conn(h).unwrap().is_closed());
    // 36 packets and 46 KB seen: the window the handshake left, and 14 PTOs' probes (one more every
    // time the elapsed time doubles: 28 more in a year).
    assert!(most_records <= 64, "{most_records} packets tracked");
    assert!(most_in_flight <= 64 * 1024, "{most_in_flight} bytes in flight");
    // What the application could queue: the stream's send buffer, nothing more for lack of ACKs.
    assert!(
        written <= TransportConfig::default().streams.send_buffer,
        "{written} bytes written"
    );
}

/// An application that never reads datagrams, and a peer sending 100,000 empty DATAGRAM frames (each
/// costs it two bytes): the queue holds the 16,384 newest, `datagram_receive_buffer` (1 MiB) counting
/// 64 bytes for each one's place, in at most as many slots; the rest are dropped and counted.
#[test]
fn received_datagrams_an_application_never_reads_stay_within_the_buffer() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let empty = Frame::Datagram(Datagram { data: Bytes::new() });
    for _ in 0..1000 {
        inject(&mut p, SpaceId::Data, &vec![empty.clone(); 100]);
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.close.is_none(), "{:?}", conn.close);
    let slots = TransportConfig::default().datagram_receive_buffer.unwrap() / 64;
    let (queued, capacity) = conn.datagrams.recv_slots();
    assert_eq!(queued, slots);
    assert!(capacity <= slots, "{capacity} slots");
    assert_eq!(conn.stats().datagrams_recv_dropped, 100_000 - slots as u64);
}

/// A network whose server keeps at most `cap` events of removed connections and whose application
/// never polls the server's events unless a test does.
fn net_with_unpolled_server(cap: usize) -> Net {
    let mut net = Net::new();
    let config = EndpointConfig {
        max_stale_events: cap,
        ..EndpointConfig::with_seed(1)
    };
    net.server = Endpoint::new(config, Some(net.server_config.clone()));
    net.mute_server = true;
    net
}

/// Clients come and go, 2,000 of them, while the server's application never calls `poll_event`: the
/// events of connections already removed (their handles stale) stay within
/// `EndpointConfig::max_stale_events`, the oldest beyond it dropped and counted; the newest are kept.
#[test]
fn events_of_removed_connections_stay_bounded_when_the_application_never_polls() {
    const CAP: usize = 512;
    let mut net = net_with_unpolled_server(CAP);
    let mut last = None;
    for round in 0..40 {
        let hs: Vec<_> = (0..50).map(|_| net.connect()).collect();
        net.run(Duration::from_millis(10));
        last = net.server.table.iter().map(|(h, _)| h).last();
        for h in hs {
            let now = net.now;
            net.client.close(now, h, 0, b"bye").unwrap();
        }
        net.run(Duration::from_secs(10));
        assert_eq!(net.server.table.len(), 0, "round {round}");
        let queued = net.server.events.len();
        assert!(queued <= CAP, "{queued} events queued in round {round}");
    }
    let stats = net.server.stats();
    assert_eq!(stats.connections_incoming, 2000);
    // Four events a connection (Incoming, Connected, HandshakeConfirmed, ConnectionLost): 8,000 in all,
    // those still queued and those dropped and counted.
    let queued = net.server.events.len() as u64;
    assert_eq!(stats.stale_events_dropped + queued, 8000);
    // The last connection's final event is still there for the application to see.
    let last = last.unwrap();
    assert!(net
        .server
        .events
        .iter()
        .any(|(h, e)| *h == last && matches!(e, Event::ConnectionLost { .. })));
    // The application polls again: it gets what was kept, and nothing stale is counted any more.
    let polled = std::iter::from_fn(|| net.server.poll_event()).count() as u64;
    assert_eq!(polled, queued);
    assert_eq!(net.server.stale_events, 0);
}

/// The count of stale events stays exact however the application polls: a few events now and then,
/// while connections come and go in reused slots (their handles told apart by generation) and the cap
/// drops stale events between live ones. Each connection counts its own queued events, and no event of
/// a live connection is dropped.
#[test]
fn stale_event_counts_stay_exact_under_partial_polling_and_slot_reuse() {
    const CAP: usize = 16;
    fn check(ep: &Endpoint) {
        let stale = ep
            .events
            .iter()
            .filter(|(h, _)| ep.table.get(*h).is_none())
            .count();
        assert_eq!(ep.stale_events, stale);
        assert!(stale <= CAP, "{stale} stale events");
        for (h, entry) in ep.table.iter() {
            let queued = ep.events.iter().filter(|(x, _)| *x == h).count();
            assert_eq!(entry.events_queued, queued, "{h:?}");
        }
    }
    let mut net = net_with_unpolled_server(CAP);
    let mut live = std::collections::VecDeque::new();
    let mut seen = std::collections::HashSet::new();
    let mut polled = 0u64;
    for round in 0..60u64 {
        for _ in 0..(1 + round % 4) {
            live.push_back(net.connect());
        }
        net.run(Duration::from_millis(5 + 40 * (round % 3)));
        check(&net.server);
        for _ in 0..(round % 5) {
            let now = net.now;
            if let Some(h) = live.pop_front() {
                net.client.close(now, h, 0, b"bye").unwrap();
            }
        }
        net.run(Duration::from_millis(10 + 300 * (round % 2)));
        check(&net.server);
        for _ in 0..(round % 7) {
            if let Some((h, _)) = net.server.poll_event() {
                seen.insert(h);
                polled += 1;
            }
            check(&net.server);
        }
        seen.extend(net.server.table.iter().map(|(h, _)| h));
    }
    for h in live.drain(..) {
        let now = net.now;
        net.client.close(now, h, 0, b"bye").unwrap();
    }
    net.run(Duration::from_secs(10));
    check(&net.server);
    assert_eq!(net.server.table.len(), 0);
    // Slots were reused: the same index under different generations.
    let indexes: std::collections::HashSet<_> = seen.iter().map(|h| h.index()).collect();
    assert!(indexes.len() < seen.len(), "no slot reused");
    let stats = net.server.stats();
    assert!(stats.stale_events_dropped > 0);
    let queued = std::iter::from_fn(|| net.server.poll_event()).count() as u64;
    assert_eq!(net.server.stale_events, 0);
    // Incoming, Connected, HandshakeConfirmed and ConnectionLost for each: polled, left or dropped.
    assert_eq!(
        polled + queued + stats.stale_events_dropped,
        4 * stats.connections_incoming
    );
}
