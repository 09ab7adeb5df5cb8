//! ECN between two real endpoints (RFC 9000 §13.4; RFC 9002 §7.1): marks on the packets sent, the
//! peer's counts in its ACK frames, validation, and the congestion response to ECN-CE, over a network
//! that carries, clears or rewrites the codepoint as each test says.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::peer_errors::{sends, Pair, CLIENT, SERVER};
use crate::conn::ecn::TESTING_PACKETS;
use crate::conn::SpaceId;
use crate::wire::frame::{AckFrame, EcnCounts, Frame};
use crate::{ConnectionHandle, ConnectionStats, Datagram, EcnCodepoint, Endpoint, StreamId, TransportConfig};

/// What the network does to the codepoint of a datagram: given the transmit's codepoint and the
/// datagram's index since the start, the codepoint it arrives with (`None`: dropped).
type Network<'a> = &'a mut dyn FnMut(Option<EcnCodepoint>, u64) -> Option<Option<EcnCodepoint>>;

/// Moves every datagram `from` has to send at `now` into `to`, through `net`; counts them in `index`.
fn deliver_through(
    from: &mut Endpoint,
    to: &mut Endpoint,
    now: Instant,
    src: &str,
    net: Network<'_>,
    index: &mut u64,
) {
    let mut buf = Vec::new();
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        for d in t.datagrams(&buf) {
            *index += 1;
            let Some(ecn) = net(t.ecn, *index) else { continue };
            to.handle_datagram(
                now,
                Datagram {
                    remote: src.parse().unwrap(),
                    local: None,
                    ecn,
                    payload: BytesMut::from(d),
                },
            );
        }
    }
}

/// One millisecond of a pair on a path that delivers at once: every datagram the server has goes
/// through `down`, every one the client has arrives as sent; events are collected, timers run.
fn step(p: &mut Pair, down: Network<'_>, index: &mut u64) {
    let now = p.now;
    deliver_through(&mut p.server, &mut p.client, now, SERVER, down, index);
    deliver_through(
        &mut p.client,
        &mut p.server,
        now,
        CLIENT,
        &mut |e, _| Some(e),
        &mut 0,
    );
    while let Some((_, e)) = p.client.poll_event() {
        p.client_events.push(e);
    }
    while let Some((h, e)) = p.server.poll_event() {
        p.server_h.get_or_insert(h);
        p.server_events.push(e);
    }
    p.now += Duration::from_millis(1);
    p.client.handle_timeout(p.now);
    p.server.handle_timeout(p.now);
}

/// A pair connected through `down` (the server's datagrams, from the first), with a unidirectional stream
/// the server opened: the pair, the client's and the server's handles, the stream.
fn connected_through(
    down: Network<'_>,
    index: &mut u64,
) -> (Pair, ConnectionHandle, ConnectionHandle, StreamId) {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    for _ in 0..100 {
        step(&mut p, down, index);
    }
    p.assert_both_connected();
    let sh = p.server_h.unwrap();
    let id = p.server.conn(sh).unwrap().open_uni().unwrap();
    (p, ch, sh, id)
}

/// Writes what the server's stream `id` takes of the rest of `bytes`, counting it in `written`.
fn write_rest(p: &mut Pair, sh: ConnectionHandle, id: StreamId, bytes: usize, written: &mut usize) {
    let mut conn = p.server.conn(sh).unwrap();
    let mut s = conn.stream(id);
    while *written < bytes {
        match s.write(&vec![7u8; (bytes - *written).min(16384)]) {
            Ok(n) => *written += n,
            Err(_) => break,
        }
    }
}

/// The server sends `bytes` on a stream to the client, its datagrams through `down` from the first
/// (the handshake's too); the client's arrive as sent. Returns both connections' counters.
fn transfer(bytes: usize, down: Network<'_>) -> (ConnectionStats, ConnectionStats) {
    let mut index = 0u64;
    let (mut p, ch, sh, id) = connected_through(down, &mut index);
    let (mut written, mut received) = (0, 0);
    let end = p.now + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    while received < bytes && p.now < end {
        write_rest(&mut p, sh, id, bytes, &mut written);
        step(&mut p, down, &mut index);
        let mut conn = p.client.conn(ch).unwrap();
        let mut s = conn.stream(id);
        while let Ok(Some(n)) = s.read(&mut buf) {
            received += n;
        }
    }
    assert_eq!(received, bytes, "the transfer completed");
    let server = p.server.conn(sh).unwrap().stats();
    let client = p.client.conn(ch).unwrap().stats();
    (server, client)
}

/// RFC 9000 §13.4.2: a path that carries the marks, to a peer that counts them, keeps them: every
/// packet goes out ECT(0) once the first acknowledgement validated the counts.
#[test]
fn marks_stay_on_a_path_that_carries_them() {
    let (server, client) = transfer(300_000, &mut |e, _| Some(e));
    assert_eq!(server.ecn_validation_failures, 0);
    assert!(
        server.ecn_marked_sent + 2 >= server.packets_sent && server.ecn_marked_sent > 100,
        "{} of {} packets marked",
        server.ecn_marked_sent,
        server.packets_sent
    );
    // The client's ACK-only packets are marked too, and its own validation passed.
    assert_eq!(client.ecn_validation_failures, 0);
    assert!(client.ecn_marked_sent > TESTING_PACKETS, "{client:?}");
    assert_eq!(server.ecn_ce_signals, 0);
}

/// RFC 9000 §13.4.2.1: a path that clears the field fails validation at the first acknowledgement of
/// marked packets (the counts do not grow); nothing is marked after the testing period.
#[test]
fn a_path_that_clears_the_marks_fails_validation() {
    let (server, _) = transfer(300_000, &mut |_, _| Some(None));
    assert_eq!(server.ecn_validation_failures, 1);
    assert!(
        server.ecn_marked_sent <= TESTING_PACKETS + 10,
        "{} marked",
        server.ecn_marked_sent
    );
    assert!(server.packets_sent > 200);
}

/// RFC 9000 §13.4.2.1: ECT(1) counts, for packets never sent so, fail validation (a network that
/// rewrites the codepoint).
#[test]
fn a_path_that_rewrites_the_marks_fails_validation() {
    let (server, _) = transfer(100_000, &mut |e, _| Some(e.map(|_| EcnCodepoint::Ect1)));
    assert_eq!(server.ecn_validation_failures, 1);
    assert!(server.ecn_marked_sent <= TESTING_PACKETS + 10);
}

/// RFC 9002 §7.1: CE marks reported by the peer are congestion, answered as a loss would be (the window
/// shrinks) but without any packet lost or sent again.
#[test]
fn ce_marks_are_a_congestion_signal_without_loss() {
    let (clean, _) = transfer(1_000_000, &mut |e, _| Some(e));
    // One datagram in 100 marked CE by the network (an AQM queue), after the first 50.
    let (marked, _) = transfer(1_000_000, &mut |e, i| {
        Some(if e.is_some() && i > 50 && i % 100 == 0 {
            Some(EcnCodepoint::Ce)
        } else {
            e
        })
    });
    assert_eq!(marked.ecn_validation_failures, 0);
    assert!(marked.ecn_ce_signals > 0, "{marked:?}");
    assert!(marked.congestion_events > 0, "{marked:?}");
    assert_eq!(marked.packets_lost, 0);
    assert_eq!(marked.stream_bytes_retransmitted, 0);
    assert_eq!(clean.congestion_events, 0, "{clean:?}");
    assert!(marked.cwnd < clean.cwnd, "{} vs {}", marked.cwnd, clean.cwnd);
}

/// `TransportConfig::ecn` off: nothing marked, and the peer's counts change nothing.
#[test]
fn ecn_off_marks_nothing() {
    let config = TransportConfig {
        ecn: false,
        ..TransportConfig::default()
    };
    let mut p = Pair::with(config.clone(), config);
    let sh = p.server_h.unwrap();
    let id = p.server.conn(sh).unwrap().open_uni().unwrap();
    p.server.conn(sh).unwrap().stream(id).write(&[1; 20_000]).unwrap();
    let mut buf = Vec::new();
    let mut seen = 0;
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        assert_eq!(t.ecn, None);
        seen += 1;
    }
    assert!(seen > 0);
    assert_eq!(p.server.conn(sh).unwrap().stats().ecn_marked_sent, 0);
}

/// A server-to-client transfer of `bytes` during which the client's NAT rebinds to `new_addr`, 60 ms
/// into it. The server's datagrams take 20 ms and go through `old` (the old mapping, which delivers
/// nothing sent after the rebinding) or `new` (the new one); the client's arrive at once, and it pings
/// every 10 ms (which gives the server room under its anti-amplification limit on the new path).
/// `watch` sees the server's connection after each millisecond. Returns the bytes the client received
/// and the server's counters.
fn transfer_across_a_rebinding(
    bytes: usize,
    new_addr: &str,
    old: Network<'_>,
    new: Network<'_>,
    watch: &mut dyn FnMut(&crate::conn::Connection),
) -> (usize, ConnectionStats) {
    let mut index = 0u64;
    let (mut p, ch, sh, id) = connected_through(old, &mut index);
    let (old_addr, new_addr): (std::net::SocketAddr, std::net::SocketAddr) =
        (CLIENT.parse().unwrap(), new_addr.parse().unwrap());
    let delay = Duration::from_millis(20);
    // Server to client, on their way: arrival time, codepoint, payload.
    let mut down: std::collections::VecDeque<(Instant, Option<EcnCodepoint>, BytesMut)> =
        std::collections::VecDeque::new();
    let (mut written, mut received, mut steps) = (0, 0, 0u64);
    let rebinding = p.now + Duration::from_millis(60);
    let end = p.now + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while received < bytes && p.now < end {
        write_rest(&mut p, sh, id, bytes, &mut written);
        let now = p.now;
        let rebound = now >= rebinding;
        while let Some(t) = p.server.poll_transmit(now, &mut out) {
            for d in t.datagrams(&out) {
                index += 1;
                let arrives = match t.destination {
                    a if a == old_addr && !rebound => old(t.ecn, index),
                    a if a == new_addr => new(t.ecn, index),
                    _ => None,
                };
                if let Some(ecn) = arrives {
                    down.push_back((now + delay, ecn, BytesMut::from(d)));
                }
            }
        }
        while down.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, ecn, payload) = down.pop_front().unwrap();
            p.client.handle_datagram(
                now,
                Datagram {
                    remote: SERVER.parse().unwrap(),
                    local: None,
                    ecn,
                    payload,
                },
            );
        }
        if steps % 10 == 0 {
            if let Ok(mut conn) = p.client.conn(ch) {
                conn.ping();
            }
        }
        steps += 1;
        let from = if rebound { new_addr } else { old_addr };
        while let Some(t) = p.client.poll_transmit(now, &mut out) {
            for d in t.datagrams(&out) {
                p.server.handle_datagram(
                    now,
                    Datagram {
                        remote: from,
                        local: None,
                        ecn: t.ecn,
                        payload: BytesMut::from(d),
                    },
                );
            }
        }
        watch(&p.server.table.get(sh).unwrap().conn);
        while p.client.poll_event().is_some() {}
        while p.server.poll_event().is_some() {}
        p.now += Duration::from_millis(1);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
        let Ok(mut conn) = p.client.conn(ch) else {
            break;
        };
        let mut s = conn.stream(id);
        while let Ok(Some(n)) = s.read(&mut buf) {
            received += n;
        }
    }
    let stats = p.server.conn(sh).unwrap().stats();
    (received, stats)
}

/// RFC 9000 §13.4.2: ECN is validated on each path. The client's NAT rebinds while the server's marked
/// packets are on their way, and the new mapping drops packets marked ECT(0) (a faulty element on the
/// new path). The client's ACKs from the new port acknowledge the old path's marked packets: that must
/// not validate the new path, whose first ten marked packets are lost and whose later, unmarked ones
/// carry the connection on. Before, the new path was taken as capable at once, every packet went out
/// marked and was lost, until path validation failed three seconds later.
#[test]
fn a_new_path_that_drops_marked_packets_is_not_validated_by_the_old_paths_acks() {
    use crate::conn::ecn::EcnPhase;
    let new: std::net::SocketAddr = "192.0.2.1:6000".parse().unwrap();
    let mut capable_on_new_path = false;
    let (received, _) = transfer_across_a_rebinding(
        3_000_000,
        "192.0.2.1:6000",
        &mut |e, _| Some(e),
        &mut |e, _| e.is_none().then_some(None),
        &mut |conn| {
            // Nothing marked reached the client on the new path: no ACK can have validated it.
            capable_on_new_path |= conn.path.remote == new && conn.ecn.phase() == EcnPhase::Capable;
        },
    );
    assert!(
        !capable_on_new_path,
        "the new path was taken as ECN-capable on the old path's acknowledgements"
    );
    assert_eq!(received, 3_000_000, "the transfer completed over the new path");
}

/// RFC 9000 §13.4.2: a path is tested with its first ten packets marked ("an endpoint could set the
/// ECT(0) codepoint only for the first ten outgoing packets on a path"). A path the connection comes back
/// to, or one where only the peer's port changed, starts testing with the window it had (§9.4), which
/// may fill many datagrams at once. The codepoint is chosen once per transmit: a transmit begun in the
/// testing period marked every datagram of it, up to `max_segments` (64 by default) rather than ten.
#[test]
fn a_transmit_ends_where_the_testing_period_of_a_path_ends() {
    let mut index = 0u64;
    let (mut p, ch, sh, id) = connected_through(&mut |e, _| Some(e), &mut index);
    let (mut written, bytes) = (0, 50_000_000);
    let mut buf = vec![0u8; 65536];
    // A millisecond round trip: the window grows well past what the pacer lets go at once.
    for _ in 0..1000 {
        if p.server.table.get(sh).unwrap().conn.cc.window() >= 100_000 {
            break;
        }
        write_rest(&mut p, sh, id, bytes, &mut written);
        step(&mut p, &mut |e, _| Some(e), &mut index);
        let mut conn = p.client.conn(ch).unwrap();
        let mut s = conn.stream(id);
        while let Ok(Some(_)) = s.read(&mut buf) {}
    }
    write_rest(&mut p, sh, id, bytes, &mut written);
    let conn = &mut p.server.table.get_mut(sh).unwrap().conn;
    assert!(
        conn.cc.window() > 64 * 1500,
        "a large window: {}",
        conn.cc.window()
    );
    // What `Path::return_to` and a move of the peer's port do to the ECN state.
    conn.ecn.on_path_change();
    let (now, mut out, mut marked, mut most) = (p.now, Vec::new(), 0u64, 0);
    while let Some(t) = p.server.poll_transmit(now, &mut out) {
        let n = t.datagrams(&out).count();
        most = most.max(n);
        if t.ecn.is_some() {
            marked += n as u64;
        }
    }
    assert!(
        most > 10,
        "transmits of more datagrams than the testing period: {most}"
    );
    assert!(
        marked <= TESTING_PACKETS,
        "{marked} datagrams marked in the testing period of {TESTING_PACKETS} packets"
    );
}

/// RFC 9000 §13.4.2: each new path is tested afresh ("An endpoint thus attempts to use ECN and validates
/// this for each new connection, ..., and on active connection migration to a new path"; Appendix A.4:
/// "existing ECN counts are remembered as a baseline"). The old mapping rewrote ECT(0) to ECT(1), so the
/// peer's ECT(1) count is not zero and validation failed there; the new mapping carries the marks as
/// sent. The ECT(1) count, which only grows, must not fail the new path's validation as well.
#[test]
fn ect1_counted_on_the_path_left_does_not_fail_the_new_paths_validation() {
    use crate::conn::ecn::EcnPhase;
    let new: std::net::SocketAddr = "192.0.2.1:6000".parse().unwrap();
    let mut phase_on_new_path = None;
    let (received, stats) = transfer_across_a_rebinding(
        3_000_000,
        "192.0.2.1:6000",
        // The rewriting starts after the handshake, in the application space whose counts the new
        // path shares.
        &mut |e, i| Some(if i > 3 { e.map(|_| EcnCodepoint::Ect1) } else { e }),
        &mut |e, _| Some(e),
        &mut |conn| {
            if conn.path.remote == new {
                phase_on_new_path = Some(conn.ecn.phase());
            }
        },
    );
    assert_eq!(received, 3_000_000);
    assert_eq!(
        phase_on_new_path,
        Some(EcnPhase::Capable),
        "the new path carries the marks ({stats:?})"
    );
    assert_eq!(stats.ecn_validation_failures, 1, "the old path's only");
}

/// RFC 9000 §9.4: on a path with a new address, the congestion controller starts again, and congestion
/// on the path left says nothing of the new one (as losses of the old path's packets are not counted
/// against it). The old path CE-marks the server's packets; those in flight when the client moved are
/// acknowledged from the new address, with a higher CE count: that rise belongs to the old path and must
/// not halve the new path's fresh window (ending its slow start at half the initial window).
#[test]
fn ce_marks_of_the_path_left_are_not_congestion_on_the_new_path() {
    let new: std::net::SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let (mut events_at_move, mut events_on_new_path) = (None, 0);
    let (received, _) = transfer_across_a_rebinding(
        3_000_000,
        "198.51.100.7:6000",
        &mut |e, i| {
            Some(if i > 3 && e.is_some() {
                Some(EcnCodepoint::Ce)
            } else {
                e
            })
        },
        &mut |e, _| Some(e),
        &mut |conn| {
            if conn.path.remote == new {
                let at_move = *events_at_move.get_or_insert(conn.stats.congestion_events);
                events_on_new_path = conn.stats.congestion_events - at_move;
            }
        },
    );
    assert_eq!(received, 3_000_000);
    assert!(events_at_move.is_some(), "the server moved to the new path");
    assert_eq!(
        events_on_new_path, 0,
        "no congestion on the new path, which carries no CE mark"
    );
}

/// RFC 9000 §13.4.2: "It is possible for faulty network devices to corrupt or erroneously drop packets
/// that carry a non-zero ECN codepoint. To ensure connectivity in the presence of such devices, an
/// endpoint validates ..."; the testing period lasts "the first ten outgoing packets on a path, or ... a
/// period of three PTOs". A path that drops every marked packet, from the first: during the handshake
/// each side sends a packet or two per PTO, with the PTO doubling, so ten marked packets took longer
/// than the handshake timeout and the connection never came up. The testing period now also ends at the
/// second PTO in a row (three PTOs' time) with nothing of the path's marked packets acknowledged.
#[test]
fn a_path_that_drops_marked_packets_still_carries_the_handshake() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let mut buf = Vec::new();
    let start = p.now;
    let mut connected_at = None;
    while p.now < start + Duration::from_secs(30) && connected_at.is_none() {
        let now = p.now;
        for (from_client, src) in [(true, CLIENT), (false, SERVER)] {
            let (a, b) = if from_client {
                (&mut p.client, &mut p.server)
            } else {
                (&mut p.server, &mut p.client)
            };
            while let Some(t) = a.poll_transmit(now, &mut buf) {
                if t.ecn.is_some() {
                    continue; // dropped
                }
                for d in t.datagrams(&buf) {
                    b.handle_datagram(
                        now,
                        Datagram {
                            remote: src.parse().unwrap(),
                            local: None,
                            ecn: None,
                            payload: BytesMut::from(d),
                        },
                    );
                }
            }
        }
        while let Some((_, e)) = p.client.poll_event() {
            if matches!(e, crate::event::Event::Connected) {
                connected_at = Some(now - start);
            }
        }
        while p.server.poll_event().is_some() {}
        p.now += Duration::from_millis(1);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
    let connected_at = connected_at.expect("the handshake completed");
    // The client's testing ends at its second PTO (1 + 2 s with the initial RTT of 333 ms), the
    // server's, which started then, at its own second PTO.
    assert!(connected_at < Duration::from_secs(8), "{connected_at:?}");
}

/// A validated path that starts dropping every marked packet (a route change onto a middlebox that
/// does) would never fail validation, since nothing is acknowledged any more: three PTOs in a row end
/// marking on it, and the transfer goes on unmarked.
#[test]
fn a_validated_path_that_starts_dropping_marked_packets_stops_being_marked() {
    let (server, _) = transfer(1_000_000, &mut |e, i| {
        if i > 300 && e.is_some() {
            None
        } else {
            Some(e)
        }
    });
    assert_eq!(server.ecn_validation_failures, 1, "{server:?}");
    assert!(server.ecn_marked_sent > 250, "{server:?}");
    assert!(server.packets_sent > server.ecn_marked_sent + 100, "{server:?}");
}

/// RFC 9002 §7.3.2: "A sender that is already in a recovery period stays in it and does not reenter it";
/// Appendix B.7 dates an ECN-CE increase by the send time of the ACK's largest acknowledged packet. The
/// client of a download sends mostly ACK-only packets, which loss recovery does not track (it remembers
/// the send times of the last four only); the server's ACK frames acknowledge them, and their ECN counts
/// report the CE marks the uplink put on them. Two such ACKs, of packets all sent before the first one's
/// congestion event began, are one congestion event. Before, an ACK whose largest packet's send time was
/// not remembered dated its CE marks `now`: every such ACK started a new recovery period and cut the
/// window again.
#[test]
fn ce_marks_on_ack_only_packets_sent_before_a_recovery_period_do_not_reenter_it() {
    let mut index = 0u64;
    let carry = &mut |e: Option<EcnCodepoint>, _: u64| Some(e);
    let (mut p, ch, sh, id) = connected_through(carry, &mut index);
    // A download: the client's ACK-only packets go out marked, and the server's counts validate them.
    let (mut written, mut buf) = (0, vec![0u8; 65536]);
    for _ in 0..100 {
        write_rest(&mut p, sh, id, 300_000, &mut written);
        step(&mut p, carry, &mut index);
        let mut conn = p.client.conn(ch).unwrap();
        let mut s = conn.stream(id);
        while let Ok(Some(_)) = s.read(&mut buf) {}
    }
    let conn = &p.client.table.get(ch).unwrap().conn;
    assert_eq!(conn.ecn.phase(), crate::conn::ecn::EcnPhase::Capable);

    // The server goes on sending a little at a time (well within its window); the client's ACK-only
    // packets answering it are lost on the way up, so the server has not acknowledged them yet.
    for _ in 0..20 {
        write_rest(&mut p, sh, id, written + 2_000, &mut written);
        let now = p.now;
        let (server, client) = (&mut p.server, &mut p.client);
        deliver_through(server, client, now, SERVER, carry, &mut index);
        let _ = sends(&mut p.client, now);
        {
            let mut conn = p.client.conn(ch).unwrap();
            let mut s = conn.stream(id);
            while let Ok(Some(_)) = s.read(&mut buf) {}
        }
        p.now += Duration::from_millis(1);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
    let conn = &p.client.table.get(ch).unwrap().conn;
    let largest = conn.recovery.largest_acked(SpaceId::Data).unwrap();
    // The ACK-only packets sent since: numbers neither skipped (an acknowledgement of one is an error)
    // nor of a packet in flight (whose send time is tracked).
    let next = conn.recovery.next_packet_number(SpaceId::Data);
    let skipped = conn.recovery.unsent_ranges(SpaceId::Data);
    let tracked: Vec<u64> = conn
        .recovery
        .oldest_unacked(SpaceId::Data)
        .map(|(pn, _)| pn)
        .collect();
    let sent: Vec<u64> = (largest + 1..next)
        .filter(|pn| !skipped.iter().any(|&(a, b)| (a..=b).contains(pn)) && !tracked.contains(pn))
        .collect();
    assert!(sent.len() >= 6, "{} packets sent", sent.len());
    let prev = conn.ecn.peer_counts(SpaceId::Data);
    let before = p.client.conn(ch).unwrap().stats();
    // The server's counts reach the client after all, in two ACK frames a millisecond apart, each
    // reporting one more CE mark, for the oldest of those packets (the first of them, then the second).
    for (i, &pn) in sent[..2].iter().enumerate() {
        let ce = prev.ce + i as u64 + 1;
        let ack = AckFrame::from_ranges(
            [pn..=pn],
            0,
            Some(EcnCounts {
                ect0: prev.ect0,
                ect1: prev.ect1,
                ce,
            }),
        )
        .unwrap();
        let now = p.now;
        p.client
            .table
            .get_mut(ch)
            .unwrap()
            .conn
            .inject_frames_in(now, SpaceId::Data, &[Frame::Ack(ack)]);
        p.client.after_conn(ch, true);
        p.now += Duration::from_millis(1);
    }
    let after = p.client.conn(ch).unwrap().stats();
    assert_eq!(after.ecn_validation_failures, before.ecn_validation_failures);
    assert_eq!(after.ecn_ce_signals, before.ecn_ce_signals + 2);
    assert_eq!(
        after.congestion_events,
        before.congestion_events + 1,
        "both packets were sent before the first congestion event began"
    );
}

/// RFC 9000 §13.4.1: "Even if an endpoint does not set an ECT field in packets it sends, the endpoint
/// MUST provide feedback about ECN markings it receives". A client with marking turned off still counts
/// the server's marks, so the server's path validates and its packets stay marked.
#[test]
fn an_endpoint_that_does_not_mark_still_reports_the_counts() {
    let client = TransportConfig {
        ecn: false,
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(TransportConfig::default(), client);
    let ch = p.client.table.iter().next().unwrap().0;
    let mut index = 0;
    for _ in 0..100 {
        step(&mut p, &mut |e, _| Some(e), &mut index);
    }
    p.assert_both_connected();
    let sh = p.server_h.unwrap();
    let id = p.server.conn(sh).unwrap().open_uni().unwrap();
    let (mut written, mut received, bytes) = (0, 0, 100_000);
    let mut buf = vec![0u8; 65536];
    let end = p.now + Duration::from_secs(10);
    while received < bytes && p.now < end {
        write_rest(&mut p, sh, id, bytes, &mut written);
        step(&mut p, &mut |e, _| Some(e), &mut index);
        let mut conn = p.client.conn(ch).unwrap();
        let mut s = conn.stream(id);
        while let Ok(Some(n)) = s.read(&mut buf) {
            received += n;
        }
    }
    assert_eq!(received, bytes);
    let client = p.client.conn(ch).unwrap().stats();
    let server = p.server.conn(sh).unwrap().stats();
    assert_eq!(client.ecn_marked_sent, 0);
    assert_eq!(server.ecn_validation_failures, 0, "{server:?}");
    assert!(server.ecn_marked_sent > 2 * TESTING_PACKETS, "{server:?}");
}

/// RFC 9000 §13.4.2.1: ECN counts beyond the packets sent marked (here the largest a varint holds, in
/// one jump) fail ECN validation: marking stops, and that is all. No congestion event (the CE count
/// rose by 2^62 - 1, but the counts were not accepted), no loss, no connection error.
#[test]
fn ecn_counts_beyond_the_packets_sent_fail_validation_without_closing() {
    let mut index = 0u64;
    let carry = &mut |e: Option<EcnCodepoint>, _: u64| Some(e);
    let (mut p, _ch, sh, id) = connected_through(carry, &mut index);
    let mut written = 0;
    write_rest(&mut p, sh, id, 5_000, &mut written);
    assert!(!sends(&mut p.server, p.now).is_empty());
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(conn.ecn.marking());
    let tracked: Vec<u64> = conn
        .recovery
        .oldest_unacked(SpaceId::Data)
        .map(|(pn, _)| pn)
        .collect();
    let before = p.server.conn(sh).unwrap().stats();
    let max = crate::wire::VarInt::MAX.into_inner();
    // The ECT(0) count grew by the packets acknowledged and did not go back: only the CE count, beyond
    // anything sent, is wrong.
    let prev = p
        .server
        .table
        .get(sh)
        .unwrap()
        .conn
        .ecn
        .peer_counts(SpaceId::Data);
    for counts in [
        EcnCounts {
            ect0: prev.ect0 + tracked.len() as u64,
            ect1: prev.ect1,
            ce: max,
        },
        EcnCounts {
            ect0: max,
            ect1: max,
            ce: max,
        },
    ] {
        // Each frame acknowledges the whole flight (so nothing is lost) and raises the largest
        // acknowledged only the first time.
        let ack = AckFrame::from_ranges(tracked.iter().rev().map(|&pn| pn..=pn), 0, Some(counts)).unwrap();
        let now = p.now;
        let conn = &mut p.server.table.get_mut(sh).unwrap().conn;
        conn.inject_frames_in(now, SpaceId::Data, &[Frame::Ack(ack)]);
        p.server.after_conn(sh, true);
    }
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(conn.close.is_none());
    assert!(!conn.ecn.marking());
    let after = p.server.conn(sh).unwrap().stats();
    assert_eq!(after.ecn_validation_failures, before.ecn_validation_failures + 1);
    assert_eq!(after.ecn_ce_signals, before.ecn_ce_signals);
    assert_eq!(after.congestion_events, before.congestion_events);
    assert_eq!(after.cwnd, before.cwnd);
    assert_eq!(after.packets_lost, before.packets_lost);
    assert_eq!(after.bytes_in_flight, 0);
}

/// RFC 9002 §7.3.2, §7.2: a network (or peer) that reports every packet CE-marked, both ways, with
/// acknowledgements at once (a zero RTT), costs one congestion event per round trip, never a window
/// below the minimum, and never a deadline left in the past once everything due was sent: the transfer
/// completes at the minimum window, with both controllers.
#[test]
fn every_packet_reported_ce_holds_the_window_at_its_minimum_without_spinning() {
    for algo in [
        crate::CongestionAlgorithm::NewReno,
        crate::CongestionAlgorithm::Cubic,
    ] {
        let config = TransportConfig {
            congestion: algo,
            ..TransportConfig::default()
        };
        let mut p = Pair::start_with(config.clone(), config);
        let ch = p.client.table.iter().next().unwrap().0;
        let ce = &mut |e: Option<EcnCodepoint>, _: u64| Some(e.map(|_| EcnCodepoint::Ce));
        let mut up = |e: Option<EcnCodepoint>, _: u64| Some(e.map(|_| EcnCodepoint::Ce));
        let mut index = 0;
        for _ in 0..100 {
            step(&mut p, ce, &mut index);
        }
        p.assert_both_connected();
        let sh = p.server_h.unwrap();
        let id = p.server.conn(sh).unwrap().open_uni().unwrap();
        let events_before = p.server.conn(sh).unwrap().stats().congestion_events;
        let (mut written, mut received, bytes, mut steps) = (0, 0, 200_000, 0u64);
        let mut buf = vec![0u8; 65536];
        while received < bytes && steps < 10_000 {
            steps += 1;
            write_rest(&mut p, sh, id, bytes, &mut written);
            step(&mut p, ce, &mut index);
            {
                let mut conn = p.client.conn(ch).unwrap();
                let mut s = conn.stream(id);
                while let Ok(Some(n)) = s.read(&mut buf) {
                    received += n;
                }
            }
            let stats = p.server.conn(sh).unwrap().stats();
            assert!(stats.cwnd >= 2 * u64::from(stats.path_mtu), "{algo:?}: {stats:?}");
            // Everything due at this instant exchanged, and the timers due handled (an input may
            // leave one due at once, RFC 9002 §6.2.2.1): the next deadline is ahead.
            let now = p.now;
            deliver_through(&mut p.server, &mut p.client, now, SERVER, ce, &mut index);
            deliver_through(&mut p.client, &mut p.server, now, CLIENT, &mut up, &mut 0);
            p.server.handle_timeout(now);
            deliver_through(&mut p.server, &mut p.client, now, SERVER, ce, &mut index);
            let next = p.server.poll_timeout();
            assert!(
                next.is_none_or(|t| t > now),
                "{algo:?}: a deadline {next:?} at {now:?}"
            );
        }
        assert_eq!(received, bytes, "{algo:?}");
        let stats = p.server.conn(sh).unwrap().stats();
        assert_eq!(stats.ecn_validation_failures, 0, "{algo:?}: {stats:?}");
        assert_eq!(stats.packets_lost, 0, "{algo:?}: {stats:?}");
        assert_eq!(stats.cwnd, 2 * u64::from(stats.path_mtu), "{algo:?}: {stats:?}");
        // Every acknowledgement reports more CE marks, but a recovery period lasts until packets sent
        // after it began are acknowledged: at most one begins per step (packets sent at the instant
        // one began belong to it), about one in two acknowledgements.
        let events = stats.congestion_events - events_before;
        assert!(stats.ecn_ce_signals > 50, "{algo:?}: {stats:?}");
        assert!(
            events <= steps && events < stats.ecn_ce_signals,
            "{algo:?}: {events} events in {steps} steps, {stats:?}"
        );
    }
}
