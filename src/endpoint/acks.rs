//! Acknowledgements and retransmission between two real endpoints (RFC 9000 §13.2, §13.3): what the
//! unit tests of `conn::ack` cannot show, because it depends on which packets carried an ACK frame.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::peer_errors::{deliver, inject, sends, Pair, CLIENT, SERVER};
use crate::conn::SentFrames;
use crate::conn::SpaceId;
use crate::wire::frame::Frame;
use crate::{ConnectionHandle, Datagram, EcnCodepoint, StreamsConfig, TransportConfig};

/// `rounds` rounds of 5 ms between a connected pair: the server sends four 900-byte datagrams, which
/// `route` gets (with the round's number) to deliver to the client as it likes; the client's answers
/// all reach the server, and the client reads its datagrams.
fn datagram_rounds(p: &mut Pair, rounds: u32, mut route: impl FnMut(&mut Pair, u32, Vec<Vec<u8>>)) {
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    for round in 0..rounds {
        {
            let mut conn = p.server.conn(sh).unwrap();
            for _ in 0..4 {
                conn.send_datagram(Bytes::from(vec![1; 900])).unwrap();
            }
        }
        let out = sends(&mut p.server, p.now);
        route(p, round, out);
        let now = p.now;
        for d in sends(&mut p.client, now) {
            deliver(&mut p.server, now, CLIENT, &d);
        }
        while p.client.conn(ch).unwrap().recv_datagram().is_some() {}
        p.now += Duration::from_millis(5);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
}

/// RFC 9000 §13.2.3: "After receiving acknowledgments for an ACK frame, the receiver SHOULD stop
/// tracking those acknowledged ACK Ranges" (§13.2.4 describes how). A client that only receives
/// datagrams sends nothing but ACK frames, in packets that are not ack-eliciting; the server's packets
/// acknowledge them. One server datagram in ten is lost, so every loss leaves a gap in the packet
/// numbers the client received. Once the server has acknowledged the client's ACK frames, the client
/// stops reporting the old ranges: its ACK frames hold a handful, not one range per loss. Before, the
/// acknowledgement of an ACK-only packet was not noticed (such packets are not kept in flight), so the
/// client kept every range up to its cap and repeated `max_ack_ranges` of them in every ACK frame.
#[test]
fn ack_frames_in_ack_only_packets_are_pruned_once_acknowledged() {
    let mut p = Pair::new(TransportConfig::default());
    let (ch, _) = p.client.table.iter().next().unwrap();
    let mut sent = 0u64;
    datagram_rounds(&mut p, 300, |p, _, out| {
        for d in out {
            sent += 1;
            if sent % 10 != 0 {
                deliver(&mut p.client, p.now, SERVER, &d);
            }
        }
    });
    assert!(sent >= 600, "{sent} datagrams");
    let client = &p.client.table.get(ch).unwrap().conn;
    let received = &client.spaces[SpaceId::Data.index()].received;
    let reported = received.build_ack(p.now, 3).map_or(0, |f| f.iter().count());
    assert!(
        reported <= 4,
        "the client still reports {reported} ranges after {} losses",
        sent / 10
    );
}

/// RFC 9000 §13.2.1: "packets marked with the ECN Congestion Experienced (CE) codepoint in the IP header
/// SHOULD be acknowledged immediately"; §13.4.1: the marks are counted per packet number space and
/// reported even by an endpoint that sets no ECT codepoint itself. One PING from the client waits for
/// the server's ACK timer (a second ack-eliciting packet would be needed for an ACK at once); the same
/// PING marked CE is acknowledged at that instant, and counted.
#[test]
fn a_ce_marked_packet_is_acknowledged_at_once_and_counted() {
    for ce in [false, true] {
        let mut p = Pair::new(TransportConfig::default());
        let sh = p.server_h.unwrap();
        let (ch, _) = p.client.table.iter().next().unwrap();
        p.run(Duration::from_secs(1));
        let now = p.now;
        p.client.conn(ch).unwrap().ping();
        let ping = sends(&mut p.client, now);
        assert_eq!(ping.len(), 1);
        p.server.handle_datagram(
            now,
            Datagram {
                remote: CLIENT.parse().unwrap(),
                local: None,
                ecn: ce.then_some(EcnCodepoint::Ce),
                payload: BytesMut::from(&ping[0][..]),
            },
        );
        let answered = !sends(&mut p.server, now).is_empty();
        assert_eq!(answered, ce, "CE {ce}: an ACK at once");
        let counts = p.server.table.get(sh).unwrap().conn.spaces[SpaceId::Data.index()]
            .received
            .ecn_counts();
        assert_eq!(counts.map(|c| c.ce), ce.then_some(1), "CE {ce}");
    }
}

/// RFC 9000 §13.3: what a lost packet carried goes again only while it is still needed. Here the
/// server is told that a packet carrying NEW_CONNECTION_ID and HANDSHAKE_DONE was lost: the ID the
/// client has retired since is not announced again ("New connection IDs are ... retransmitted if the
/// packet containing them is lost", and a retired one is no longer an ID to announce), an ID still
/// active is; HANDSHAKE_DONE, once acknowledged, is not sent again, and is while it is not ("MUST be
/// retransmitted until it is acknowledged").
#[test]
fn lost_frames_no_longer_needed_are_not_sent_again() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    p.run(Duration::from_secs(1));
    // The client retires sequence 1 (the server's replacement is issued, its frame not yet sent).
    inject(&mut p, SpaceId::Data, &[Frame::RetireConnectionId(1)]);
    let conn = &mut p.server.table.get_mut(sh).unwrap().conn;
    assert!(conn.local_cids.active.iter().all(|c| c.seq != 1), "retired");
    assert!(conn.local_cids.active.iter().any(|c| c.seq == 2));
    let replacement = conn.local_cids.next_seq - 1;
    assert_eq!(conn.local_cids.pending, [replacement]);
    assert!(conn.handshake_done_acked);
    let mut lost = SentFrames::EMPTY;
    lost.rare_mut().new_cids.extend([1, 2]);
    lost.rare_mut().handshake_done = true;
    conn.on_packet_lost(SpaceId::Data, lost.clone());
    assert_eq!(
        conn.local_cids.pending,
        [replacement, 2],
        "only the active ID goes again"
    );
    assert!(!conn.handshake_done_pending, "HANDSHAKE_DONE was acknowledged");
    conn.handshake_done_acked = false;
    conn.on_packet_lost(SpaceId::Data, lost);
    assert!(
        conn.handshake_done_pending,
        "HANDSHAKE_DONE not yet acknowledged goes again"
    );
}

/// RFC 9002 §6.1 (losses declared by threshold may prove spurious) and RFC 9000 §13.2.3 ("A receiver
/// MUST retain an ACK Range unless it can ensure that it will not subsequently accept packets with
/// numbers in that range"): a receiver that sends nothing but ACK frames (here, of datagrams) stops
/// reporting what the peer has seen acknowledged, but a packet reordered by more than a round trip (a
/// few milliseconds on a LAN) below that point is still processed and acknowledged on its own, so the
/// sender learns that its loss was spurious and undoes its congestion events. When the pruning point
/// was also the duplicate floor, such packets were dropped unprocessed and none was undone.
#[test]
fn a_packet_reordered_past_a_round_trip_still_reaches_an_ack_only_receiver() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    p.run(Duration::from_secs(1));
    let received = |p: &mut Pair| p.client.conn(ch).unwrap().stats().packets_received;
    let before = received(&mut p);
    let mut held: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut sent = 0;
    datagram_rounds(&mut p, 300, |p, round, out| {
        // Server to client takes a round (5 ms, a 5 ms round trip); every tenth round, the first
        // datagram takes four (15 ms late).
        for (i, d) in out.into_iter().enumerate() {
            sent += 1;
            let late = if round % 10 == 0 && i == 0 { 3 } else { 0 };
            held.push((round + 1 + late, d));
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut held)
            .into_iter()
            .partition(|(r, _)| *r == round);
        held = later;
        for (_, d) in due {
            deliver(&mut p.client, p.now, SERVER, &d);
        }
    });
    let got = received(&mut p) - before;
    let s = p.server.conn(sh).unwrap().stats();
    assert!(s.congestion_events >= 20, "{s:?}");
    assert_eq!(
        (s.congestion_events_undone, s.packets_lost_spurious),
        (s.congestion_events, s.packets_lost),
        "every loss was a late arrival: {s:?}"
    );
    // The last round's datagrams are still on their way.
    assert!(got + 4 >= sent, "{got} of {sent} datagrams processed");
}

/// RFC 9000 §13.2.1: "An endpoint MUST NOT send a non-ack-eliciting packet in response to a
/// non-ack-eliciting packet". A client whose stream waits at the server's limit (STREAM_DATA_BLOCKED
/// sent) has the server's ACK-only packets left to acknowledge; each write its application made to that
/// stream put the stream back in the send queue, and the packet built for it held nothing but an ACK
/// frame for those ACK-only packets (seen in the simulator's qlog, one such packet per write). A write to
/// a stream that waits for credit now queues nothing: the credit, when it comes, does.
#[test]
fn writes_to_a_stream_waiting_for_credit_send_nothing() {
    // At the stream's limit (STREAM_DATA_BLOCKED), then at the connection's (DATA_BLOCKED).
    for conn_limit in [false, true] {
        let (stream_window, conn_window) = if conn_limit {
            (1 << 20, 1000)
        } else {
            (1000, 1 << 20)
        };
        let server = TransportConfig {
            streams: StreamsConfig {
                stream_receive_window: stream_window,
                max_stream_receive_window: stream_window,
                receive_window: conn_window,
                max_receive_window: conn_window,
                ..StreamsConfig::default()
            },
            ..TransportConfig::default()
        };
        let what = if conn_limit { "connection" } else { "stream" };
        waiting_stream_writes(server, what);
    }
}

/// The test above with the server's limits of `server`, `what` naming the limit reached.
fn waiting_stream_writes(server: TransportConfig, what: &str) {
    let mut p = Pair::new(server);
    p.run(Duration::from_secs(1));
    let (ch, _) = p.client.table.iter().next().unwrap();
    let id = {
        let mut conn = p.client.conn(ch).unwrap();
        let id = conn.open_uni().unwrap();
        assert_eq!(conn.stream(id).write(&[7; 5000]), Ok(5000));
        id
    };
    // The first 1,000 bytes and STREAM_DATA_BLOCKED go, and the server's ACK-only packets come back;
    // the server's application reads nothing, so no credit follows.
    p.run(Duration::from_secs(1));
    let client = &p.client.table.get(ch).unwrap().conn;
    assert!(
        client.spaces[SpaceId::Data.index()].received.has_unacked(),
        "at the {what} limit, the server's ACK-only packets are unacknowledged (as they should stay)"
    );
    let now = p.now;
    for _ in 0..3 {
        assert_eq!(p.client.conn(ch).unwrap().stream(id).write(&[7; 100]), Ok(100));
        assert_eq!(
            sends(&mut p.client, now),
            Vec::<Vec<u8>>::new(),
            "a write to a stream blocked at the {what} limit sent a packet"
        );
    }
    // Credit queues the stream again: the server reads, and the rest of the data arrives.
    let sh = p.server_h.unwrap();
    let mut read = 0;
    for _ in 0..20 {
        while let Ok(Some(chunk)) = p.server.conn(sh).unwrap().stream(id).read_chunk(usize::MAX) {
            read += chunk.len();
        }
        p.run(Duration::from_millis(100));
    }
    assert_eq!(read, 5300, "at the {what} limit");
}

/// A connected pair whose client keeps ACK frames of at most `ranges` ranges and has 1,000 ACK-only
/// packets of the server's to report, every other packet number missing (recorded in its receive state
/// directly; the packets never exist), so that nothing is owed; with `long`, 100 more in a row above
/// them (a highest range whose Range Length takes two bytes). Returns the pair and the client's
/// connection.
fn ack_only_packets_to_report(ranges: usize, long: bool) -> (Pair, ConnectionHandle) {
    let client = TransportConfig {
        max_ack_ranges: ranges,
        max_tracked_ack_ranges: 5000,
        ..TransportConfig::default()
    };
    let mut p = Pair::with(TransportConfig::default(), client);
    p.run(Duration::from_secs(1));
    let now = p.now;
    let (ch, _) = p.client.table.iter().next().unwrap();
    let received = &mut p.client.table.get_mut(ch).unwrap().conn.spaces[SpaceId::Data.index()].received;
    let base = received.largest().unwrap() + 2;
    for i in 0..1000 {
        assert!(received.on_packet_received(base + 2 * i, false, None, now));
    }
    for pn in (base + 2000..).take(if long { 100 } else { 0 }) {
        assert!(received.on_packet_received(pn, false, None, now));
    }
    assert!(received.has_unacked() && !received.ack_owed());
    (p, ch)
}

/// RFC 9000 §13.2.1 keeps a packet of ACK frames alone from answering ACK-only packets, and
/// `build_packet` drops such a packet unless an acknowledgement is owed. An ACK frame that is only
/// piggybacked, though, must leave room for what the packet was built for: with `max_ack_ranges`
/// raised, the peer's ACK-only packets with gaps between them (a lossy path) made an ACK frame that
/// filled the packet, the stream data found no room, the packet was dropped, and the next one was built
/// the same way: the data never went. The ACK-only packets are recorded in the client's receive state
/// directly (the packets themselves never exist), and the client's packets are not delivered.
#[test]
fn a_piggybacked_ack_frame_leaves_room_for_the_data() {
    // Frames of as many ranges as fill the packet (1452 bytes after path MTU discovery) to within a few
    // bytes, or not quite: 709 left no room for a STREAM frame.
    for ranges in (640..760).step_by(3) {
        piggybacked_ack(ranges);
    }
}

/// The test above with ACK frames of at most `ranges` ranges.
fn piggybacked_ack(ranges: usize) {
    // ACK-only packets of the server, every other one lost: nothing is owed for them.
    let (mut p, ch) = ack_only_packets_to_report(ranges, false);
    let now = p.now;
    let id = {
        let mut conn = p.client.conn(ch).unwrap();
        let id = conn.open_uni().unwrap();
        assert_eq!(conn.stream(id).write(&[7; 100]), Ok(100));
        id
    };
    let sent = sends(&mut p.client, now);
    assert!(
        !sent.is_empty(),
        "ACK frames of {ranges} ranges: stream {id:?} has 100 bytes written, with credit, and nothing was sent"
    );
}

/// The same with a DATAGRAM frame: `max_datagram_size` is what a packet holds without an ACK frame, so
/// a datagram of that size never fits beside one. A client with an ACK-only packet of the server's to
/// acknowledge (nothing owed) built the packet with the ACK frame, found no room for the datagram and
/// dropped the packet; every packet after it was built the same way, and the datagram waited until the
/// server happened to send something ack-eliciting.
#[test]
fn a_datagram_of_the_largest_size_goes_beside_an_ack_that_is_not_owed() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_secs(1));
    let (ch, _) = p.client.table.iter().next().unwrap();
    // The client sends a small datagram; the server's acknowledgement of it goes alone, after its
    // max_ack_delay, and the client has an ACK-only packet to acknowledge, with nothing owed.
    p.client
        .conn(ch)
        .unwrap()
        .send_datagram(Bytes::from_static(b"hi"))
        .unwrap();
    let now = p.now;
    for d in sends(&mut p.client, now) {
        deliver(&mut p.server, now, CLIENT, &d);
    }
    p.now += Duration::from_millis(50);
    let now = p.now;
    p.server.handle_timeout(now);
    let acks = sends(&mut p.server, now);
    assert!(!acks.is_empty(), "the server acknowledges the datagram");
    for d in acks {
        deliver(&mut p.client, now, SERVER, &d);
    }
    {
        let received = &p.client.table.get(ch).unwrap().conn.spaces[SpaceId::Data.index()].received;
        assert!(received.has_unacked() && !received.ack_owed());
    }
    let max = p.client.conn(ch).unwrap().max_datagram_size().unwrap();
    p.client
        .conn(ch)
        .unwrap()
        .send_datagram(Bytes::from(vec![5; max]))
        .unwrap();
    let sent = sends(&mut p.client, now);
    assert!(
        sent.iter().any(|d| d.len() > max),
        "a datagram of {max} bytes queued, and sent: {:?}",
        sent.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

/// The same with a PING the application asked for: an ACK frame that fills the packet to its last byte
/// leaves no room for it, and the packet, ACK-only with nothing owed, is dropped. The PING must still go,
/// in a packet without the ACK frame; it used to be taken as sent when the packet was dropped, and went
/// nowhere.
#[test]
fn a_ping_goes_beside_an_ack_frame_that_fills_the_packet() {
    for ranges in 640..760 {
        piggybacked_ping(ranges, false);
        piggybacked_ping(ranges, true);
    }
}

/// The test above with ACK frames of at most `ranges` ranges; with `long`, the highest range is 100
/// packets long (a Range Length of two bytes: an ACK frame one byte longer).
fn piggybacked_ping(ranges: usize, long: bool) {
    let (mut p, ch) = ack_only_packets_to_report(ranges, long);
    let now = p.now;
    p.client.conn(ch).unwrap().ping();
    let sent = sends(&mut p.client, now);
    assert!(
        !sent.is_empty(),
        "ACK frames of {ranges} ranges (long: {long}): a PING was asked for, and nothing was sent"
    );
}

/// The same with a probe (RFC 9002 §6.2.4) and nothing else to send: the probe's PING found no room
/// beside an ACK frame that filled the packet, the packet was dropped as ACK-only, and a probe is not a
/// frame that `has_frames_for` sees, so it was not built again without the ACK frame: the probe never
/// went, every packet built for it the same way.
#[test]
fn a_probe_goes_beside_an_ack_frame_that_fills_the_packet() {
    for ranges in 640..760 {
        piggybacked_probe(ranges, false);
        piggybacked_probe(ranges, true);
    }
}

/// The test above with ACK frames of at most `ranges` ranges; `long` as in [`piggybacked_ping`].
fn piggybacked_probe(ranges: usize, long: bool) {
    let (mut p, ch) = ack_only_packets_to_report(ranges, long);
    let now = p.now;
    p.client.table.get_mut(ch).unwrap().conn.spaces[SpaceId::Data.index()].probes = 1;
    // Through the view, so that the endpoint polls the connection.
    assert!(p.client.conn(ch).unwrap().recv_datagram().is_none());
    let sent = sends(&mut p.client, now);
    assert!(
        !sent.is_empty(),
        "ACK frames of {ranges} ranges (long: {long}): a probe was due, and nothing was sent"
    );
    assert_eq!(
        p.client.table.get(ch).unwrap().conn.spaces[SpaceId::Data.index()].probes,
        0,
        "ACK frames of {ranges} ranges (long: {long}): the probe went"
    );
}

/// RFC 9438 §5.8 across the undo of a spurious congestion event (RFC 9002 §6.1): the controller saved
/// at the event, restored when the event proves spurious, last saw the sender busy at the event, and
/// the sender stayed busy until the acknowledgement that proved it. A packet sent at that instant with
/// nothing in flight (the acknowledgement took the whole flight) ends no idle period. Counted from the
/// event, CUBIC's stage start moved on by the whole time from the event to the undo.
#[test]
fn a_restored_controller_sees_no_idle_time_before_the_undo() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    p.run(Duration::from_secs(1));
    let now = p.now;
    let ms = Duration::from_millis;
    let conn = &mut p.server.table.get_mut(sh).unwrap().conn;
    // CUBIC in congestion avoidance: grown to 100 datagrams, a loss, 200 ms of acknowledgements.
    let grow = 100 * 1200 - conn.cc.window();
    conn.cc.on_ack(now, now - ms(1), grow, conn.recovery.rtt(), false);
    conn.cc.on_congestion_event(now, now - ms(1), false);
    for i in 1..=20u32 {
        conn.cc
            .on_ack(now + ms(10) * i, now + ms(1), 1200, conn.recovery.rtt(), false);
    }
    let stage_start = conn.cc.stage_start().expect("in congestion avoidance");
    // A loss event 200 ms in, which proves spurious 150 ms later; the sender was busy meanwhile.
    let event = now + ms(200);
    let pn = conn.recovery.next_packet_number(SpaceId::Data) - 1;
    assert!(pn >= conn.recovery.path_first_pn());
    let lost = crate::conn::recovery::SentPacket {
        time_sent: event - ms(50),
        size: 1200,
        ack_eliciting: true,
        in_flight: true,
        mtu_probe: false,
        ecn_marked: false,
        data: SentFrames::EMPTY,
    };
    let window = conn.cc.window();
    conn.on_packets_lost(event, SpaceId::Data, vec![(pn, lost)], false, None);
    assert!(conn.cc.window() < window);
    conn.cc.on_packet_sent(event + ms(50), 1200, 20 * 1200);
    conn.cc
        .on_ack(event + ms(100), event + ms(1), 1200, conn.recovery.rtt(), false);
    let undo = event + ms(150);
    conn.on_spurious_losses(undo, SpaceId::Data, &[pn]);
    assert_eq!(conn.cc.window(), window, "undone");
    // The undoing acknowledgement took the whole flight; the next packet goes at once.
    conn.cc.on_packet_sent(undo, 1200, 0);
    let moved = conn.cc.stage_start().unwrap() - stage_start;
    assert_eq!(moved, Duration::ZERO, "the stage's start moved on by {moved:?}");
}
