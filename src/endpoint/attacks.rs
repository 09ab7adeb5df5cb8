//! Attacks on the limits of RFC 9000 §5.1.2, §8.2, §10.3, §13.1, §21: each test mounts one against a
//! real connection (or endpoint) and checks the defence: a bounded state, or the RFC's error code.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::peer_errors::{client_bidi, deliver, deliver_all, inject, sends, stream, Pair, CLIENT, SERVER};
use super::Endpoint;
use crate::conn::SpaceId;
use crate::event::{ConnectionError, Event};
use crate::test_util::epoch;
use crate::wire::frame::{
    AckFrame, CloseCode, ConnectionClose, CryptoFrame, EcnCounts, Frame, NewConnectionId,
};
use crate::wire::header::ProtectedHeader;
use crate::wire::{ConnectionId, ResetToken, TransportErrorCode};
use crate::{Datagram, EndpointConfig, StreamsConfig, TransportConfig};

/// Drains the server's transmits without delivering them; returns their sizes.
fn server_sends(p: &mut Pair) -> Vec<usize> {
    let mut buf = Vec::new();
    let mut sizes = Vec::new();
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        sizes.extend(t.datagrams(&buf).map(<[u8]>::len));
    }
    sizes
}

fn server_error(p: &mut Pair) -> Option<TransportErrorCode> {
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    match Pair::lost(&p.server_events) {
        Some(ConnectionError::TransportError(e)) => Some(e.code),
        _ => None,
    }
}

fn new_cid(seq: u64, retire_prior_to: u64) -> Frame {
    let mut id = [0u8; 8];
    id[..8].copy_from_slice(&seq.to_be_bytes());
    Frame::NewConnectionId(NewConnectionId {
        sequence: seq,
        retire_prior_to,
        id: ConnectionId::new(&id).unwrap(),
        reset_token: ResetToken([seq as u8; 16]),
    })
}

// ---------------------------------------------------------------------------------------------------
// Connection IDs (RFC 9000 §5.1)

#[test]
fn the_server_issues_connection_ids_up_to_the_peer_limit() {
    let p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let entry = p.server.table.get(h).unwrap();
    // active_connection_id_limit is 4 on both sides: the handshake ID and three more.
    assert_eq!(entry.conn.issued_cids().count(), 4);
    assert_eq!(entry.local_cids.len(), 4, "every issued ID is routed");
}

/// RFC 9000 §13.3: "Retired connection IDs are sent in RETIRE_CONNECTION_ID frames and retransmitted if
/// the packet containing them is lost." A NEW_CONNECTION_ID from the client raises Retire Prior To to 1:
/// the server moves to the client's ID of sequence 1 and owes RETIRE_CONNECTION_ID for sequence 0, the
/// handshake ID. The packet that carries it is lost; the frame goes again once that is found out, and
/// the client retires its handshake ID.
#[test]
fn a_lost_retire_connection_id_is_sent_again() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    let client_ids = |p: &Pair| -> Vec<u64> {
        p.client
            .table
            .get(ch)
            .unwrap()
            .conn
            .issued_cids()
            .map(|(s, _)| s)
            .collect()
    };
    assert!(client_ids(&p).contains(&0));
    // Sequence 4 is made up and never used: the server moves to the lowest it holds, the client's 1.
    inject(&mut p, SpaceId::Data, &[new_cid(4, 1)]);
    assert_eq!(p.server.table.get(sh).unwrap().conn.retire_cids, [0]);
    assert!(
        !server_sends(&mut p).is_empty(),
        "the RETIRE_CONNECTION_ID went out"
    );
    assert!(
        p.server.table.get(sh).unwrap().conn.retire_cids.is_empty(),
        "and is no longer queued"
    );
    // It was lost. The connection goes on: the server's probe and the ACK of it show the loss, and the
    // frame goes again.
    p.run(Duration::from_secs(2));
    assert!(p.server.conn(sh).unwrap().stats().packets_lost > 0);
    assert!(!client_ids(&p).contains(&0), "{:?}", client_ids(&p));
    assert_eq!(Pair::lost(&p.server_events), None);
}

#[test]
fn retiring_a_connection_id_never_issued_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[Frame::RetireConnectionId(1000)]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn retiring_a_connection_id_issued_but_not_yet_sent_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    server_sends(&mut p);
    // The server replaces the retired ID at once, but its NEW_CONNECTION_ID waits for the next packet:
    // the peer cannot know the new sequence number, only guess it (RFC 9000 §19.16).
    inject(&mut p, SpaceId::Data, &[Frame::RetireConnectionId(1)]);
    let unsent = {
        let cids = &p.server.table.get(h).unwrap().conn.local_cids;
        assert_eq!(
            cids.pending,
            [cids.next_seq - 1],
            "the replacement is issued, not sent"
        );
        cids.next_seq - 1
    };
    inject(&mut p, SpaceId::Data, &[Frame::RetireConnectionId(unsent)]);
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::PROTOCOL_VIOLATION));
}

#[test]
fn retiring_a_connection_id_once_sent_is_legal() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    inject(&mut p, SpaceId::Data, &[Frame::RetireConnectionId(1)]);
    server_sends(&mut p);
    let sent = {
        let cids = &p.server.table.get(h).unwrap().conn.local_cids;
        assert!(cids.pending.is_empty(), "the replacement went out");
        cids.next_seq - 1
    };
    inject(&mut p, SpaceId::Data, &[Frame::RetireConnectionId(sent)]);
    server_sends(&mut p);
    assert_eq!(server_error(&mut p), None);
    assert_eq!(
        p.server.table.get(h).unwrap().conn.stats().cids_retired_by_peer,
        2
    );
}

#[test]
fn a_client_that_moved_to_another_server_id_still_takes_handshake_packets() {
    // RFC 9000 §7.2: the client drops long-header packets whose SCID is not the one of the server's first
    // packet. A server may move the client to another of its IDs (a NEW_CONNECTION_ID with Retire Prior
    // To) before the handshake is confirmed; its Handshake packets keep the first ID. Before, the client
    // compared them with the ID in use, and dropped them.
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let now = p.now;
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    deliver_all(&mut p.server, &mut p.client, now, SERVER);
    let h = p.client.table.iter().next().map(|(h, _)| h).unwrap();
    {
        // The client has read the server's Finished (it has 1-RTT keys); the server moves it on.
        let conn = &mut p.client.table.get_mut(h).unwrap().conn;
        assert!(conn.one_rtt.is_some() && !conn.handshake_confirmed);
        conn.inject_frames_in(now, SpaceId::Data, &[new_cid(1, 1)]);
        assert_eq!(conn.remote_cid_seq, 1, "the client moved to the new ID");
    }
    // The client's Finished is lost; the server's PTO sends its Handshake data again.
    sends(&mut p.client, now);
    let received = p.client.table.get(h).unwrap().conn.stats().packets_received;
    let later = p.server.poll_timeout().unwrap();
    p.server.handle_timeout(later);
    let probes = sends(&mut p.server, later);
    assert!(!probes.is_empty(), "the server probes");
    for d in probes {
        deliver(&mut p.client, later, SERVER, &d);
    }
    assert!(
        p.client.table.get(h).unwrap().conn.stats().packets_received > received,
        "the server's Handshake packets are taken"
    );
}

#[test]
fn retiring_the_connection_id_of_the_packet_itself_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    // The injected packet counts as sent to the handshake ID, sequence 0.
    p.client_sends(&[Frame::RetireConnectionId(0)]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

/// RFC 9000 §19.15: "An endpoint that is sending packets with a zero-length Destination Connection ID
/// MUST treat receipt of a NEW_CONNECTION_ID frame as a connection error of type PROTOCOL_VIOLATION."
#[test]
fn a_new_connection_id_from_a_peer_with_zero_length_ids_is_a_protocol_violation() {
    let (mut p, _) = connected_with_zero_length_client_ids();
    let conn = &p.server.table.get(p.server_h.unwrap()).unwrap().conn;
    assert!(conn.remote_cid.is_empty());
    p.client_sends(&[new_cid(1, 0)]);
    p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, 0x18);
}

/// RFC 9000 §19.16: "An endpoint that provides a zero-length connection ID MUST treat receipt of a
/// RETIRE_CONNECTION_ID frame as a connection error of type PROTOCOL_VIOLATION", whatever its sequence
/// number: 1 was never sent, and 0, the empty ID itself, is the ID every packet to us goes to (no check
/// of its own makes this one: those two do, and a change to either must keep it).
#[test]
fn retire_connection_id_to_an_endpoint_with_zero_length_ids_is_a_protocol_violation() {
    for seq in [0, 1] {
        let mut server = EndpointConfig::with_seed(1);
        server.cid_generator = Box::new(crate::RandomCidGenerator::new(0));
        let mut p = Pair::with_endpoint_configs(server, EndpointConfig::with_seed(2));
        p.client_sends(&[Frame::RetireConnectionId(seq)]);
        p.assert_closed_for_frame(TransportErrorCode::PROTOCOL_VIOLATION, 0x19);
    }
}

/// The client's ACK of every 1-RTT packet the server has sent (not the numbers it skipped).
fn ack_all_sent(p: &Pair) -> Frame {
    let conn = &p.server.table.get(p.server_h.unwrap()).unwrap().conn;
    let next = conn.recovery.next_packet_number(SpaceId::Data);
    let mut ranges = Vec::new();
    let mut lo = 0;
    for (a, b) in conn.recovery.unsent_ranges(SpaceId::Data) {
        if a > lo {
            ranges.push(lo..=a - 1);
        }
        lo = b + 1;
    }
    if next > lo {
        ranges.push(lo..=next - 1);
    }
    ranges.reverse();
    ack(&ranges)
}

#[test]
fn a_retire_flood_keeps_the_ids_we_hold_bounded() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    for _ in 0..2000 {
        // Retire the oldest ID but the handshake one: the server replaces it with a new one. The
        // replacement's NEW_CONNECTION_ID went out (an ID not yet sent can't be retired, RFC 9000
        // §19.16): the client acknowledges what the server sends, so its window stays open.
        let seq = {
            let conn = &p.server.table.get(h).unwrap().conn;
            assert!(conn.local_cids.pending.is_empty());
            conn.issued_cids()
                .map(|(s, _)| s)
                .filter(|s| *s != 0)
                .min()
                .unwrap()
        };
        inject(&mut p, SpaceId::Data, &[Frame::RetireConnectionId(seq)]);
        server_sends(&mut p);
        let ack = ack_all_sent(&p);
        inject(&mut p, SpaceId::Data, &[ack]);
        let entry = p.server.table.get(h).unwrap();
        assert!(entry.conn.issued_cids().count() <= 4);
        assert!(entry.local_cids.len() <= 4);
    }
    assert_eq!(server_error(&mut p), None, "retiring IDs is legal");
    let stats = p.server.table.get(h).unwrap().conn.stats();
    assert_eq!(stats.cids_retired_by_peer, 2000);
    // Every retired ID left the routing index: only the live ones (and the client's initial DCID) route.
    assert_eq!(p.server.routes.local_len(), 4);
}

#[test]
fn more_connection_ids_than_our_limit_is_connection_id_limit_error() {
    let mut p = Pair::new(TransportConfig::default());
    // Our limit is 4: the ID in use and three spares fit; a fifth does not (RFC 9000 §5.1.1).
    p.client_sends(&(1..=4).map(|s| new_cid(s, 0)).collect::<Vec<_>>());
    p.assert_closed_with(TransportErrorCode::CONNECTION_ID_LIMIT_ERROR);
}

#[test]
fn a_connection_id_issued_twice_is_a_protocol_violation() {
    // RFC 9000 §5.1: the same connection ID MUST NOT be issued more than once; §19.15 lets a repeat under
    // another sequence number be a PROTOCOL_VIOLATION. Taken, it would leave one ID under two sequence
    // numbers and two reset tokens (so retiring one would not retire it).
    for in_use in [false, true] {
        let mut p = Pair::new(TransportConfig::default());
        let h = p.server_h.unwrap();
        // The client issued 1..=3 in the handshake; 4 retires 1 to stay within the limit.
        inject(&mut p, SpaceId::Data, &[new_cid(4, 1)]);
        assert_eq!(server_error(&mut p), None);
        let id = if in_use {
            p.server.table.get(h).unwrap().conn.remote_cid
        } else {
            ConnectionId::new(&4u64.to_be_bytes()).unwrap()
        };
        inject(
            &mut p,
            SpaceId::Data,
            &[Frame::NewConnectionId(NewConnectionId {
                sequence: 5,
                retire_prior_to: 2,
                id,
                reset_token: ResetToken([5; 16]),
            })],
        );
        assert_eq!(
            server_error(&mut p),
            Some(TransportErrorCode::PROTOCOL_VIOLATION),
            "in use: {in_use}"
        );
    }
}

#[test]
fn a_retire_prior_to_flood_is_bounded() {
    let mut p = Pair::new(TransportConfig::default());
    // Each frame retires every earlier ID, so we owe a RETIRE_CONNECTION_ID for each: a peer that sends
    // them faster than it lets us answer is cut off at 4 x active_connection_id_limit owed retirements
    // (RFC 9000 §5.1.2).
    let frames: Vec<Frame> = (1..1000).map(|s| new_cid(s, s)).collect();
    inject(&mut p, SpaceId::Data, &frames);
    assert_eq!(
        server_error(&mut p),
        Some(TransportErrorCode::CONNECTION_ID_LIMIT_ERROR)
    );
    let conn = &p.server.table.get(p.server_h.unwrap()).unwrap().conn;
    assert!(conn.retire_cids.len() <= 16);
    assert!(conn.peer_cids.len() < 4);
}

/// RFC 9000 §19.15: "Receipt of the same frame multiple times MUST NOT be treated as a connection error",
/// and a NEW_CONNECTION_ID below the Retire Prior To already received is retired "unless it has already
/// done so for that sequence number". Copies of one such frame (reordered or repeated in one packet)
/// owe one RETIRE_CONNECTION_ID, not one each, so they never reach the limit on owed retirements.
#[test]
fn repeated_new_connection_id_below_retire_prior_to_is_retired_once() {
    let mut p = Pair::new(TransportConfig::default());
    // Sequence 10 retires every earlier ID; then an old frame for sequence 9 arrives, many times over
    // (more than the 4 x active_connection_id_limit retirements a connection may owe).
    let mut frames = vec![new_cid(10, 10)];
    frames.extend((0..40).map(|_| new_cid(9, 0)));
    inject(&mut p, SpaceId::Data, &frames);
    assert_eq!(server_error(&mut p), None);
    let conn = &p.server.table.get(p.server_h.unwrap()).unwrap().conn;
    assert_eq!(conn.retire_cids.iter().filter(|&&s| s == 9).count(), 1);
}

/// RFC 9000 §5.1.2: "Upon receipt of an increased Retire Prior To field, the peer MUST stop using the
/// corresponding connection IDs and retire them". A peer resending a NEW_CONNECTION_ID whose first copy
/// arrived may write its Retire Prior To as it is by then (quinn-proto does): the increase counts, even
/// though the frame is otherwise a copy.
#[test]
fn a_resent_new_connection_id_with_a_larger_retire_prior_to_retires() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    // The client's own IDs fill sequence numbers 0 to 3; sequence 4 retires 0 and 1, and the server moves
    // from 0 to 2.
    inject(&mut p, SpaceId::Data, &[new_cid(4, 2)]);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.remote_cid_seq, 2);
    // The same frame again, now retiring everything below 4.
    inject(&mut p, SpaceId::Data, &[new_cid(4, 4)]);
    assert_eq!(server_error(&mut p), None);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.peer_retire_prior_to, 4);
    assert_eq!(conn.remote_cid_seq, 4, "moved off the retired ID");
    let mut owed = conn.retire_cids.to_vec();
    owed.sort_unstable();
    assert_eq!(owed, [0, 1, 2, 3]);
    assert!(conn.peer_cids.is_empty(), "{:?}", conn.peer_cids);
}

/// A resent NEW_CONNECTION_ID whose ID we hold but no longer use (a spare an off-path answer took and
/// retired) does not raise Retire Prior To past the ID in use: with no spare left to move to, the
/// server would stay on a retired ID, and a late copy of that ID's own frame would then owe a
/// RETIRE_CONNECTION_ID for the very ID its packets go to, which RFC 9000 §19.16 forbids ("MUST NOT
/// refer to the Destination Connection ID field of the packet in which the frame is contained"): the
/// client closes with PROTOCOL_VIOLATION.
#[test]
fn a_resent_new_connection_id_for_a_retired_spare_leaves_the_id_in_use_alone() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    {
        // As in a_retired_spare_connection_id_stays_retired: the server moves from 0 to the client's 1,
        // then two off-path answers take and retire the spares 2 and 3.
        let conn = &mut p.server.table.get_mut(h).unwrap().conn;
        move_to_the_first_spare(conn);
        let probe: SocketAddr = "198.51.100.9:7000".parse().unwrap();
        conn.answer_off_path(probe, None, [1; 8], 1200, None);
        conn.answer_off_path(probe, None, [2; 8], 1200, None);
        conn.end_off_path_response();
        assert_eq!(conn.remote_cid_seq, 1);
        assert!(conn.peer_cids.is_empty(), "{:?}", conn.peer_cids);
    }
    // A copy of the frame for 3 with Retire Prior To 3, then a late copy of the frame for 1.
    inject(&mut p, SpaceId::Data, &[new_cid(3, 3), new_cid(1, 0)]);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(
        !conn.retire_cids.contains(&conn.remote_cid_seq),
        "owes {:?} while using {}",
        conn.retire_cids,
        conn.remote_cid_seq
    );
    p.run(Duration::from_secs(1));
    assert_eq!(Pair::lost(&p.client_events), None);
    assert_eq!(server_error(&mut p), None);
    assert!(p.client.conn(ch).is_ok());
}

// ---------------------------------------------------------------------------------------------------
// The end of the handshake (RFC 9001 §5.7)

/// Everything `from` has to send, each datagram split into its packets (as the receiver would).
pub(super) fn packets_from(ep: &mut Endpoint, now: std::time::Instant) -> Vec<BytesMut> {
    let mut buf = Vec::new();
    let mut packets = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        for d in t.datagrams(&buf) {
            let mut rest = d;
            while !rest.is_empty() {
                let len = ProtectedHeader::decode(rest, 8).map_or(rest.len(), |h| h.len().min(rest.len()));
                packets.push(BytesMut::from(&rest[..len]));
                rest = &rest[len..];
            }
        }
    }
    packets
}

pub(super) fn is_short(packet: &[u8]) -> bool {
    packet[0] & 0x80 == 0
}

// The server holds them until the Finished: see `endpoint::early`.

// ---------------------------------------------------------------------------------------------------
// Path validation (RFC 9000 §8.2)

#[test]
fn a_path_challenge_flood_gets_one_answer_per_packet() {
    let mut p = Pair::new(TransportConfig::default());
    // A thousand challenges in one packet: only the last is answered (RFC 9000 §8.2.2 requires an
    // answer to each packet's challenge, not to each frame), and nothing queues up.
    let frames: Vec<Frame> = (0..1000u64)
        .map(|i| Frame::PathChallenge(i.to_be_bytes()))
        .collect();
    inject(&mut p, SpaceId::Data, &frames);
    let sent = server_sends(&mut p);
    assert_eq!(sent.len(), 1, "one datagram answers: {sent:?}");
    assert!(
        sent[0] >= 1200,
        "PATH_RESPONSE datagrams are expanded (RFC 9000 §8.2.2)"
    );
    let conn = &p.server.table.get(p.server_h.unwrap()).unwrap().conn;
    assert_eq!(conn.path_response, None);
    // A packet per challenge, with the network running (so the client's ACKs open the congestion window
    // again): one answer each, never more.
    let h = p.server_h.unwrap();
    let sent = |p: &Pair| p.server.table.get(h).unwrap().conn.stats().datagrams_sent;
    for i in 0..200u64 {
        let before = sent(&p);
        inject(&mut p, SpaceId::Data, &[Frame::PathChallenge(i.to_be_bytes())]);
        p.run(Duration::from_millis(50));
        let answers = sent(&p) - before;
        assert!(
            (1..=2).contains(&answers),
            "{answers} datagrams for one challenge"
        );
    }
    assert_eq!(server_error(&mut p), None);
}

/// Where the server's datagrams go, until it has nothing more to send now: those to the client's own
/// address reach it; the rest (to an attacker's address) go nowhere. Returns the bytes sent to each.
fn server_to_client_only(p: &mut Pair) -> (usize, usize) {
    let client: SocketAddr = CLIENT.parse().unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    let mut buf = Vec::new();
    let (mut to_client, mut elsewhere) = (0, 0);
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            if t.destination == client {
                to_client += d.len();
                p.client
                    .handle_datagram(p.now, datagram(server, BytesMut::from(d)));
            } else {
                elsewhere += d.len();
            }
        }
    }
    (to_client, elsewhere)
}

/// The client's datagrams, delivered to the server as coming from `from`; returns them too.
fn client_to_server_from(p: &mut Pair, from: SocketAddr) -> Vec<BytesMut> {
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            sent.push(BytesMut::from(d));
            p.server.handle_datagram(p.now, datagram(from, BytesMut::from(d)));
        }
    }
    sent
}

#[test]
fn an_apparent_migration_challenges_the_old_path_with_another_connection_id() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let cid_len = p.client.table.get(ch).unwrap().conn.local_cid.len();
    p.client.conn(ch).unwrap().ping();
    let new: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let received: usize = client_to_server_from(&mut p, new).iter().map(|d| d.len()).sum();
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, new);
    let mut buf = Vec::new();
    let (mut to_old, mut to_new) = (Vec::new(), 0);
    let mut new_dcids = Vec::new();
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            let dcid = d[1..1 + cid_len].to_vec();
            if t.destination == new {
                to_new += d.len();
                new_dcids.push(dcid);
            } else {
                assert_eq!(t.destination, CLIENT.parse().unwrap());
                to_old.push((d.len(), dcid));
            }
        }
    }
    // RFC 9000 §9.3.3: the previously active path is challenged, in a datagram expanded to 1200 bytes.
    assert_eq!(to_old.len(), 1, "one challenge to the old path");
    assert!(to_old[0].0 >= 1200);
    // §9.5: not with the connection ID the new path uses.
    assert!(!new_dcids.is_empty() && new_dcids.iter().all(|d| *d != to_old[0].1));
    // §8.1: the new address gets no more than three times what came from it.
    assert!(to_new <= 3 * received, "{to_new} bytes sent for {received}");
    // Once the new path is validated the old path's ID is retired, and the connection carries on there.
    p.run(Duration::from_secs(1));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.path_validation.is_none() && conn.path.validated);
    assert_eq!(server_error(&mut p), None);
}

/// The server's datagrams until it has nothing more to send now, each recorded with its destination and
/// the connection ID it carries; those to `reach` get to the client, the rest go nowhere.
fn server_dcids_to(p: &mut Pair, reach: SocketAddr, seen: &mut Vec<(SocketAddr, Vec<u8>)>) {
    let server: SocketAddr = SERVER.parse().unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let cid_len = p.client.table.get(ch).unwrap().conn.local_cid.len();
    let mut buf = Vec::new();
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            seen.push((t.destination, d[1..1 + cid_len].to_vec()));
            if t.destination == reach {
                p.client
                    .handle_datagram(p.now, datagram(server, BytesMut::from(d)));
            }
        }
    }
}

/// The server sends the client a datagram, which the client acknowledges: the connection ID the server
/// uses goes on record, as [`server_dcids_to`] records it.
fn ids_on_record(p: &mut Pair) -> Vec<(SocketAddr, Vec<u8>)> {
    let h = p.server_h.unwrap();
    let client: SocketAddr = CLIENT.parse().unwrap();
    let mut seen = Vec::new();
    p.server.conn(h).unwrap().ping();
    server_dcids_to(p, client, &mut seen);
    assert!(!seen.is_empty());
    client_to_server_from(p, client);
    seen
}

/// Asserts that no connection ID in `seen` went to more than one address (RFC 9000 §9.5).
fn assert_no_id_to_two_addresses(seen: &[(SocketAddr, Vec<u8>)]) {
    for (to, id) in seen {
        let others: Vec<_> = seen
            .iter()
            .filter(|(t, i)| i == id && t != to)
            .map(|(t, _)| t)
            .collect();
        assert!(
            others.is_empty(),
            "connection ID {id:02x?} went to {to} and to {others:?}"
        );
    }
}

#[test]
fn a_client_that_moves_with_a_new_connection_id_gets_a_new_one_back() {
    // RFC 9000 §9.5: "an endpoint MUST NOT reuse a connection ID when sending to more than one
    // destination address". The client moves to a new address and to one of the server's spare IDs; the
    // server answers there with one of the client's spares, and the old path's challenge goes with the
    // ID that path already carried, retired once the new path is validated.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let new: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let mut seen = ids_on_record(&mut p);
    let (old_seq, spares) = {
        let conn = &p.server.table.get(h).unwrap().conn;
        (conn.remote_cid_seq, conn.peer_cids.len())
    };
    assert!(spares > 0, "the server holds spare IDs of the client's");
    {
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        let (seq, id, _) = conn.peer_cids.remove(0);
        conn.remote_cid = id;
        conn.remote_cid_seq = seq;
        conn.ping();
    }
    p.client.after_conn(ch, true);
    client_to_server_from(&mut p, new);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, new);
    for _ in 0..4 {
        server_dcids_to(&mut p, new, &mut seen);
        client_to_server_from(&mut p, new);
    }
    assert!(seen.iter().any(|(to, _)| *to == new));
    assert_no_id_to_two_addresses(&seen);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.path.validated && conn.path_validation.is_none());
    assert!(
        conn.retire_cids.contains(&old_seq)
            || p.client
                .table
                .get(ch)
                .unwrap()
                .conn
                .issued_cids()
                .all(|(s, _)| s != old_seq),
        "the old path's ID is retired"
    );
    assert_eq!(server_error(&mut p), None);
}

#[test]
fn back_on_the_old_path_the_server_takes_back_its_connection_id() {
    // A forwarded copy moves the server to an attacker's address, and the client's newer packet moves it
    // back (RFC 9000 §9.3.3). The ID that went to the attacker's address does not go to the client's,
    // and the client's ID did not go to the attacker (§9.5).
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let attacker: SocketAddr = "203.0.113.9:7000".parse().unwrap();
    let client: SocketAddr = CLIENT.parse().unwrap();
    let mut seen = ids_on_record(&mut p);
    p.client.conn(ch).unwrap().ping();
    for d in client_to_server_from(&mut p, attacker) {
        p.server.handle_datagram(p.now, datagram(client, d));
    }
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, attacker);
    for _ in 0..3 {
        server_dcids_to(&mut p, client, &mut seen);
        client_to_server_from(&mut p, client);
    }
    // After the return, the server's traffic to the client.
    p.server.conn(h).unwrap().ping();
    let before = seen.len();
    server_dcids_to(&mut p, client, &mut seen);
    assert!(seen.len() > before);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, client);
    assert!(conn.path_validation.is_none());
    assert!(seen.iter().filter(|(to, _)| *to == attacker).count() > 0);
    assert_no_id_to_two_addresses(&seen);
    assert_eq!(server_error(&mut p), None);
}

#[test]
fn a_second_move_takes_another_connection_id() {
    // The client moves to B and, while B is being validated, to C: B, C and the old path's challenge each
    // get an ID of their own (RFC 9000 §9.5), and the answer still owed to a challenge from B goes to B
    // with B's ID.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let c: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    let mut seen = ids_on_record(&mut p);
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, b);
    server_dcids_to(&mut p, b, &mut seen);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    inject(&mut p, SpaceId::Data, &[Frame::PathChallenge([0x5a; 8])]);
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, c);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, c);
    let before = seen.len();
    server_dcids_to(&mut p, c, &mut seen);
    assert!(
        seen[before..].iter().any(|(to, _)| *to == b),
        "the answer went to B"
    );
    assert!(seen[before..].iter().any(|(to, _)| *to == c));
    assert_no_id_to_two_addresses(&seen);
    assert_eq!(server_error(&mut p), None);
}

#[test]
fn a_return_after_the_old_paths_id_was_retired_takes_a_spare() {
    // The client moves to B, and while B is validated the client's Retire Prior To passes the ID the old
    // path used (the challenge to that path ends). B's validation fails: back on the old path, the
    // server takes another spare rather than the ID that went to B (RFC 9000 §9.5).
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let client: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let nowhere: SocketAddr = "192.0.2.99:9".parse().unwrap();
    let mut seen = ids_on_record(&mut p);
    let old_seq = p.server.table.get(h).unwrap().conn.remote_cid_seq;
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, b);
    server_dcids_to(&mut p, nowhere, &mut seen);
    inject(&mut p, SpaceId::Data, &[new_cid(4, old_seq + 1)]);
    {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, b);
        assert!(conn.path_validation.as_ref().unwrap().old_path.is_none());
        assert!(conn.retire_cids.contains(&old_seq));
    }
    let end = p.now + Duration::from_secs(10);
    while p.server.table.get(h).unwrap().conn.path_validation.is_some() {
        server_dcids_to(&mut p, nowhere, &mut seen);
        let Some(t) = p.server.poll_timeout().filter(|t| *t <= end) else {
            panic!("the validation never ended");
        };
        p.now = p.now.max(t);
        p.server.handle_timeout(p.now);
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, client);
    assert_eq!(conn.stats().path_validation_failures, 1);
    p.server.conn(h).unwrap().ping();
    let before = seen.len();
    server_dcids_to(&mut p, nowhere, &mut seen);
    assert!(seen[before..].iter().all(|(to, _)| *to == client));
    assert!(seen.len() > before);
    assert_no_id_to_two_addresses(&seen);
    assert_eq!(server_error(&mut p), None);
}
#[test]
fn a_client_that_moves_with_a_new_connection_id_is_followed_only_with_a_new_one() {
    // RFC 9000 §9.5: "an endpoint MUST NOT reuse a connection ID when sending to more than one
    // destination address"; the current ID MAY go on to a new address only for packets that arrive
    // from there "with the same Destination Connection ID field value" (a NAT rebinding). §9.3: "If the
    // recipient has no unused connection IDs from the peer, it will not be able to send anything on the
    // new path until the peer provides one." The client moves and switches to another of the server's
    // IDs while the server holds no spare of the client's: the server stays on the old path and sends
    // nothing to the new address until the client's new IDs arrive (here through the old address,
    // which still reaches the client), then follows with one of them. Before, it followed at once
    // with the ID the old address had seen.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let client: SocketAddr = CLIENT.parse().unwrap();
    let new: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let mut seen = ids_on_record(&mut p);
    {
        // The server gives up its spares (their RETIRE_CONNECTION_ID frames not sent yet).
        let conn = &mut p.server.table.get_mut(h).unwrap().conn;
        while let Some((seq, ..)) = conn.take_lowest_spare() {
            conn.retire_spare(seq);
        }
    }
    p.server.after_conn(h, true);
    {
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        let (seq, id, _) = conn.peer_cids.remove(0);
        conn.remote_cid = id;
        conn.remote_cid_seq = seq;
        conn.ping();
    }
    p.client.after_conn(ch, true);
    client_to_server_from(&mut p, new);
    assert_eq!(
        p.server.table.get(h).unwrap().conn.path.remote,
        client,
        "no ID to send to the new address with"
    );
    for _ in 0..4 {
        if p.server.table.get(h).unwrap().conn.path.remote == new {
            break;
        }
        server_dcids_to(&mut p, client, &mut seen);
        client_to_server_from(&mut p, new);
    }
    assert_no_id_to_two_addresses(&seen);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, new);
    // Once there, the server reaches the client at its new address and validates it.
    let end = p.now + Duration::from_secs(2);
    loop {
        server_dcids_to(&mut p, new, &mut seen);
        client_to_server_from(&mut p, new);
        if !p.advance_to_next_deadline(end) {
            break;
        }
    }
    assert!(seen.iter().any(|(to, _)| *to == new));
    assert_no_id_to_two_addresses(&seen);
    assert!(p.server.table.get(h).unwrap().conn.path.validated);
    assert_eq!(server_error(&mut p), None);
}

#[test]
fn a_forwarded_packet_does_not_hold_the_connection_away_from_the_client() {
    // An off-path attacker forwards a copy of the client's packet from its own address, ahead of the
    // original (RFC 9000 §9.3.3): the server moves there, but its challenge on the old path draws a
    // newer packet from the client, which moves the connection back at once (no waiting for the new
    // path's validation to fail).
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let attacker: SocketAddr = "203.0.113.9:7000".parse().unwrap();
    let client: SocketAddr = CLIENT.parse().unwrap();
    let cwnd = p.server.conn(h).unwrap().stats().cwnd;
    p.client.conn(ch).unwrap().ping();
    for d in client_to_server_from(&mut p, attacker) {
        p.server.handle_datagram(p.now, datagram(client, d));
    }
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, attacker);
    for _ in 0..3 {
        server_to_client_only(&mut p);
        client_to_server_from(&mut p, client);
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, client);
    assert!(conn.path.validated);
    assert!(conn.path_validation.is_none());
    assert_eq!(conn.stats().path_validation_failures, 0);
    // Back with what it knew of the client's path (RFC 9000 §9.4 lets it): the attacker's address (a
    // new IP) started from initial values, which the client's path does not take on.
    assert!(conn.recovery.rtt().smoothed() < TransportConfig::default().initial_rtt);
    assert!(conn.stats().cwnd >= cwnd);
    assert_eq!(server_error(&mut p), None);
}

/// Runs both sides for `time` of virtual time, the client seen by the server at `seen_as` and only the
/// server's datagrams to that address reaching it (those to the path it left are lost).
fn run_client_seen_as(p: &mut Pair, seen_as: SocketAddr, time: Duration) {
    let server: SocketAddr = SERVER.parse().unwrap();
    let end = p.now + time;
    let mut buf = Vec::new();
    loop {
        client_to_server_from(p, seen_as);
        let mut moved = false;
        while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
            for d in t.datagrams(&buf) {
                if t.destination == seen_as {
                    moved = true;
                    p.client
                        .handle_datagram(p.now, datagram(server, BytesMut::from(d)));
                }
            }
        }
        if !moved && !p.advance_to_next_deadline(end) {
            return;
        }
    }
}

#[test]
fn the_old_paths_challenge_is_no_loss_on_the_new_path() {
    // A NAT rebinding (a new port) whose old mapping is gone: the challenge to the old path is lost, and
    // that says nothing about the new path's capacity (RFC 9000 §9.4).
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    {
        let mut conn = p.server.conn(h).unwrap();
        let id = conn.open_uni().unwrap();
        conn.stream(id).write(&[5; 50_000]).unwrap();
    }
    p.client.conn(ch).unwrap().ping();
    let rebound: SocketAddr = "192.0.2.1:5999".parse().unwrap();
    run_client_seen_as(&mut p, rebound, Duration::from_secs(10));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, rebound);
    assert!(conn.path.validated);
    let stats = conn.stats();
    assert!(stats.datagrams_sent > 40, "the data went out");
    assert_eq!(stats.congestion_events, 0, "{stats:?}");
    assert_eq!(stats.packets_lost, 0, "{stats:?}");
}

/// `conn` moves from the handshake's connection ID (sequence 0, which no NEW_CONNECTION_ID carries) to
/// its lowest spare, and retires the handshake's.
fn move_to_the_first_spare(conn: &mut crate::conn::Connection) {
    let (seq, id, token) = conn.take_lowest_spare().unwrap();
    let (old, ..) = conn.use_peer_cid(seq, id, Some(token));
    conn.retire_spare(old);
}

#[test]
fn a_retired_spare_connection_id_stays_retired() {
    // The ID the old path used, held by its challenge once the new path took a spare, is retired when
    // the validation ends; a late copy of its NEW_CONNECTION_ID must not bring it back (and make the
    // peer's replacement one too many). The server first moves off the handshake's ID (sequence 0,
    // which no NEW_CONNECTION_ID carries).
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    {
        move_to_the_first_spare(&mut p.server.table.get_mut(h).unwrap().conn);
    }
    p.server.after_conn(h, true);
    p.run(Duration::from_millis(100));
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, "198.51.100.7:6000".parse().unwrap());
    let spare = {
        let v = p
            .server
            .table
            .get(h)
            .unwrap()
            .conn
            .path_validation
            .as_ref()
            .unwrap();
        let c = v.old_path.as_ref().unwrap();
        assert!(c.spare);
        assert_ne!(c.dcid_seq, 0);
        c.dcid_seq
    };
    run_client_seen_as(
        &mut p,
        "198.51.100.7:6000".parse().unwrap(),
        Duration::from_secs(1),
    );
    assert!(p.server.table.get(h).unwrap().conn.path_validation.is_none());
    inject(&mut p, SpaceId::Data, &[new_cid(spare, 0)]);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.peer_cids.iter().all(|(s, ..)| *s != spare));
    // The client has replaced the retired ID; the server holds no more than its limit.
    assert!(conn.peer_cids.len() < 4);
    p.run(Duration::from_secs(1));
    assert_eq!(server_error(&mut p), None);
}

#[test]
fn a_new_ip_restarts_the_rtt_estimate_and_a_new_port_keeps_it() {
    // RFC 9000 §9.4: reset to initial values unless only the port changed.
    for (to, reset) in [("192.0.2.1:5999", false), ("198.51.100.7:5000", true)] {
        let mut p = Pair::new(TransportConfig::default());
        let h = p.server_h.unwrap();
        let initial = TransportConfig::default().initial_rtt;
        let before = p.server.table.get(h).unwrap().conn.recovery.rtt().smoothed();
        assert_ne!(before, initial, "an RTT was measured in the handshake");
        let ch = p.client.table.iter().next().unwrap().0;
        p.client.conn(ch).unwrap().ping();
        client_to_server_from(&mut p, to.parse().unwrap());
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, to.parse().unwrap());
        let after = conn.recovery.rtt().smoothed();
        assert_eq!(after == initial, reset, "{to}: {before:?} -> {after:?}");
    }
}

#[test]
fn path_validation_lasts_three_ptos_of_the_new_path() {
    // RFC 9000 §8.2.4: the RECOMMENDED timeout is "three times the larger of the current PTO or the PTO
    // for the new path (using kInitialRtt)", so that a lost PATH_CHALLENGE or PATH_RESPONSE does not fail
    // the validation. A connection with a short RTT must still wait three PTOs computed from the initial
    // RTT: smoothed_rtt + 4 * rttvar (rttvar = initial / 2) + max_ack_delay.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let initial = TransportConfig::default().initial_rtt;
    let client_max_ack_delay = TransportConfig::default().max_ack_delay;
    let pto_new_path = initial + 4 * (initial / 2) + client_max_ack_delay;
    assert!(
        p.server.table.get(h).unwrap().conn.pto() * 3 < pto_new_path,
        "a short RTT"
    );
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, "198.51.100.7:6000".parse().unwrap());
    let deadline = p
        .server
        .table
        .get(h)
        .unwrap()
        .conn
        .path_validation
        .as_ref()
        .unwrap()
        .deadline;
    assert!(
        deadline - p.now >= 3 * pto_new_path,
        "{:?} < {:?}",
        deadline - p.now,
        3 * pto_new_path
    );
}

#[test]
fn a_path_validated_by_a_small_challenge_is_validated_again_with_1200_bytes() {
    // The client's first packet from its new address is small (a PING): the anti-amplification limit
    // lets the server's PATH_CHALLENGE go in a datagram below 1200 bytes only. RFC 9000 §8.2.1: "the path
    // MTU will not be validated. To ensure that the path MTU is large enough, the endpoint MUST perform
    // a second path validation by sending a PATH_CHALLENGE frame in a datagram of at least 1200 bytes."
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let new: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    p.client.conn(ch).unwrap().ping();
    let received: usize = client_to_server_from(&mut p, new).iter().map(|d| d.len()).sum();
    assert!(3 * received < 1200, "a small first packet: {received}");
    // Challenges the server sends to the new address, with the size of the datagram each went in.
    let mut challenges = Vec::new();
    let mut buf = Vec::new();
    let end = p.now + Duration::from_secs(5);
    loop {
        let mut moved = false;
        loop {
            let pending = |p: &Pair| {
                let conn = &p.server.table.get(h).unwrap().conn;
                conn.path_validation.as_ref().map(|v| (v.data, v.pending))
            };
            let before = pending(&p);
            let Some(t) = p.server.poll_transmit(p.now, &mut buf) else {
                break;
            };
            if t.destination != new {
                continue;
            }
            moved = true;
            if let Some((data, true)) = before {
                if pending(&p) != Some((data, true)) {
                    challenges.push(t.datagrams(&buf).next().unwrap().len());
                }
            }
            for d in t.datagrams(&buf) {
                p.client
                    .handle_datagram(p.now, datagram(server, BytesMut::from(d)));
            }
        }
        moved |= !client_to_server_from(&mut p, new).is_empty();
        if !moved && !p.advance_to_next_deadline(end) {
            break;
        }
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, new);
    assert!(conn.path.validated && conn.path_validation.is_none());
    assert!(challenges.first().is_some_and(|&s| s < 1200), "{challenges:?}");
    assert!(challenges.iter().any(|&s| s >= 1200), "{challenges:?}");
    assert_eq!(server_error(&mut p), None);
}

#[test]
fn the_second_validation_at_1200_bytes_has_a_timeout_of_its_own() {
    // RFC 9000 §8.2.1, §8.2.4: the answer to a challenge that went below 1200 bytes arrives late, just
    // before the deadline (a challenge was lost, say). The second validation, in a 1200-byte datagram,
    // gets the full timeout again instead of the millisecond left, or the validated path would be
    // abandoned for want of time.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, "198.51.100.7:6000".parse().unwrap());
    server_sends(&mut p);
    let (data, expanded, deadline) = {
        let v = p
            .server
            .table
            .get(h)
            .unwrap()
            .conn
            .path_validation
            .as_ref()
            .unwrap();
        (v.data, v.expanded, v.deadline)
    };
    assert!(!expanded, "the first challenge went below 1200 bytes");
    p.now = deadline - Duration::from_millis(1);
    inject(&mut p, SpaceId::Data, &[Frame::PathResponse(data)]);
    let conn = &p.server.table.get(h).unwrap().conn;
    let v = conn.path_validation.as_ref().expect("a second validation");
    assert!(conn.path.validated && v.pending && v.data != data);
    assert!(
        v.deadline >= p.now + Duration::from_secs(1),
        "{:?} left",
        v.deadline - p.now
    );
}

/// Reads the frames sent from the server's qlog, hence the feature.
#[cfg(feature = "qlog")]
#[test]
fn a_path_response_goes_to_the_path_its_challenge_came_from() {
    // RFC 9000 §8.2.2: "A PATH_RESPONSE frame MUST be sent on the network path where the PATH_CHALLENGE
    // frame was received." A challenge from the client's address is still unanswered when a newer
    // packet from another address moves the connection: the answer goes to the client's address.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    p.server.conn(h).unwrap().set_qlog(Box::new(tx));
    inject(&mut p, SpaceId::Data, &[Frame::PathChallenge([0x5a; 8])]);
    let new: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    p.client.conn(ch).unwrap().ping();
    // The client's packet arrives before the server had a chance to send.
    let mut buf = Vec::new();
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            p.server.handle_datagram(p.now, datagram(new, BytesMut::from(d)));
        }
    }
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, new);
    assert_eq!(
        super::migration::path_responses_sent(&mut p, &rx, &[0x5a]),
        vec![(0x5a, CLIENT.parse::<SocketAddr>().unwrap())]
    );
}

#[test]
fn a_failed_validation_with_nowhere_to_go_back_closes_silently() {
    // RFC 9000 §9.3.2: without a validated address to return to, the connection is closed silently.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, "198.51.100.7:6000".parse().unwrap());
    let deadline = {
        let conn = &mut p.server.table.get_mut(h).unwrap().conn;
        let v = conn.path_validation.as_mut().unwrap();
        v.previous = None; // as if the old path had never been validated
        v.deadline
    };
    p.now = deadline;
    p.server.handle_timeout(p.now);
    assert!(server_sends(&mut p).is_empty(), "nothing said");
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    assert_eq!(Pair::lost(&p.server_events), Some(&ConnectionError::TimedOut));
}

#[test]
fn a_zero_or_tiny_keep_alive_interval_does_not_spin_at_one_instant() {
    // With no latency, each side's keep-alive PING carries the ACK of the other's. An interval of zero
    // made the next PING due at once, at the same instant, for ever (found by an API review: two
    // million rounds without the clock moving). Zero now turns keep-alive off, and a positive interval
    // is at least the timer granularity.
    for interval in [Duration::ZERO, Duration::from_nanos(1)] {
        let t = TransportConfig {
            keep_alive_interval: Some(interval),
            ..TransportConfig::default()
        };
        let mut p = Pair::start_with(t.clone(), t);
        let now = p.now;
        let mut rounds = 0;
        loop {
            deliver_all(&mut p.client, &mut p.server, now, CLIENT);
            deliver_all(&mut p.server, &mut p.client, now, SERVER);
            let next = [p.client.poll_timeout(), p.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            if next.is_none_or(|n| n > now) {
                break;
            }
            p.client.handle_timeout(now);
            p.server.handle_timeout(now);
            rounds += 1;
            assert!(rounds < 1000, "{interval:?}: {rounds} rounds at one instant");
        }
        let h = p.client.table.iter().next().map(|(h, _)| h).unwrap();
        assert!(
            !p.client.conn(h).unwrap().is_handshaking(),
            "{interval:?}: connected"
        );
    }
}

/// RFC 9000 §10.1: "the idle timeout ... is at least three times the current PTO": a 1 ms idle timeout
/// on a path of 100 ms round trip neither ends the handshake, which waits a round trip for each flight,
/// nor the quiet connection before three PTOs have passed; and it ends it after.
#[test]
fn an_idle_timeout_below_three_ptos_waits_three_ptos() {
    let t = TransportConfig {
        max_idle_timeout: Some(Duration::from_millis(1)),
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(t.clone(), t);
    let one_way = Duration::from_millis(50);
    p.run_with_latency(one_way, Duration::from_millis(300));
    p.assert_both_connected();
    // The timeout in force is three PTOs exactly (not the 1 ms negotiated, nor another multiple).
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    for conn in [
        &p.client.table.get(ch).unwrap().conn,
        &p.server.table.get(sh).unwrap().conn,
    ] {
        assert!(conn.pto() >= Duration::from_millis(100), "{:?}", conn.pto());
        assert_eq!(conn.idle_timeout(), Some(conn.pto() * 3));
    }
    // The handshake's last packets arrived by 300 ms; three PTOs of a 100 ms path are more than 300 ms.
    p.run_with_latency(one_way, Duration::from_millis(300));
    assert_eq!(Pair::lost(&p.client_events), None);
    assert_eq!(Pair::lost(&p.server_events), None);
    p.run_with_latency(one_way, Duration::from_secs(10));
    assert_eq!(Pair::lost(&p.client_events), Some(&ConnectionError::TimedOut));
    assert_eq!(Pair::lost(&p.server_events), Some(&ConnectionError::TimedOut));
}

/// RFC 9000 §10.1.2: keep-alive. An interval of zero turns it off: a quiet connection sends nothing.
#[test]
fn a_zero_keep_alive_interval_sends_no_pings() {
    let t = TransportConfig {
        keep_alive_interval: Some(Duration::ZERO),
        ..TransportConfig::default()
    };
    let mut p = Pair::with(t.clone(), t);
    let (ch, _) = p.client.table.iter().next().unwrap();
    let sh = p.server_h.unwrap();
    let before = (
        p.client.conn(ch).unwrap().stats().packets_sent,
        p.server.conn(sh).unwrap().stats().packets_sent,
    );
    // Well within the 30 s idle timeout.
    p.run(Duration::from_secs(10));
    let after = (
        p.client.conn(ch).unwrap().stats().packets_sent,
        p.server.conn(sh).unwrap().stats().packets_sent,
    );
    assert_eq!(before, after, "packets sent while quiet");
}

/// A keep-alive interval under the timer granularity is taken as 1 ms (RFC 9002 §6.1.2 kGranularity):
/// once everything is acknowledged, the next keep-alive is due no sooner than 1 ms after the last
/// ack-eliciting packet, never at once again.
#[test]
fn a_tiny_keep_alive_interval_waits_at_least_a_millisecond() {
    let t = TransportConfig {
        keep_alive_interval: Some(Duration::from_nanos(1)),
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(t.clone(), t);
    let now = p.now;
    // Everything at one instant: the handshake, then whatever answers follow, until nothing is left.
    for _ in 0..100 {
        deliver_all(&mut p.client, &mut p.server, now, CLIENT);
        deliver_all(&mut p.server, &mut p.client, now, SERVER);
        p.client.handle_timeout(now);
        p.server.handle_timeout(now);
    }
    let (ch, _) = p.client.table.iter().next().unwrap();
    assert!(!p.client.conn(ch).unwrap().is_handshaking(), "connected");
    // The server has nothing in flight, so its next deadline is the keep-alive itself, 1 ms on, and a
    // PING goes then (the client's next deadline is its PTO: its PING is in flight).
    assert_eq!(p.server.poll_timeout(), Some(now + Duration::from_millis(1)));
    p.server.handle_timeout(now + Duration::from_millis(1));
    assert_eq!(
        sends(&mut p.server, now + Duration::from_millis(1)).len(),
        1,
        "the keep-alive PING"
    );
    for (side, next) in [
        ("client", p.client.poll_timeout()),
        ("server", p.server.poll_timeout()),
    ] {
        let next = next.expect("a keep-alive or idle deadline");
        assert!(
            next >= now + Duration::from_millis(1),
            "{side}: next deadline {:?} after the last packet",
            next - now
        );
    }
}

/// RFC 9000 §10.2.1: a closing endpoint answers packets with CONNECTION_CLOSE, but "SHOULD limit the
/// rate at which it generates packets in the closing state": each answer waits for twice as many
/// packets as the one before, so 64 datagrams get 6 answers (after the 1st, 3rd, 7th, 15th, 31st and
/// 63rd), not 64.
#[test]
fn a_closing_connection_answers_at_a_halving_rate() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    let now = p.now;
    p.client.conn(ch).unwrap().ping();
    let from_client = sends(&mut p.client, now);
    assert_eq!(from_client.len(), 1);
    p.server.conn(sh).unwrap().close(now, 7, b"");
    assert_eq!(sends(&mut p.server, now).len(), 1, "the first CONNECTION_CLOSE");
    let mut answers = 0;
    for _ in 0..64 {
        deliver(&mut p.server, now, CLIENT, &from_client[0]);
        answers += sends(&mut p.server, now).len();
    }
    assert_eq!(answers, 6);
}

/// RFC 9002 §7.7: "Packets containing only ACK frames ... should not be paced" (they are not congestion
/// controlled either). A server streaming to the client has emptied its pacing bucket, with room left in
/// its congestion window; a PING from the client is owed an ACK at once (threshold 1), and the ACK goes
/// at that instant, alone, while the stream data waits for the pacer.
#[test]
fn an_ack_goes_while_the_pacer_holds_data_back() {
    let server = TransportConfig {
        ack_eliciting_threshold: 1,
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(server, TransportConfig::default());
    let one_way = Duration::from_millis(50);
    p.run_with_latency(one_way, Duration::from_secs(1));
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    {
        let mut conn = p.server.conn(sh).unwrap();
        let id = conn.open_uni().unwrap();
        assert!(conn.stream(id).write(&vec![7; 1 << 20]).unwrap() > 100_000);
    }
    let paced = |p: &Pair| {
        let c = &p.server.table.get(sh).unwrap().conn;
        c.pacing_until.is_some_and(|t| t > p.now)
            && c.recovery.path_bytes_in_flight() + u64::from(c.path.mtu) <= c.cc.window()
    };
    assert!(
        p.run_with_latency_until(one_way, Duration::from_secs(5), paced),
        "the pacer never held data back with room in the window"
    );
    let now = p.now;
    p.client.conn(ch).unwrap().ping();
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    let out = sends(&mut p.server, now);
    assert_eq!(out.len(), 1, "the ACK");
    assert!(out[0].len() < 100, "an ACK-only packet: {} bytes", out[0].len());
    assert!(paced(&p), "the stream data still waits");
}

/// The packet that carries a CONNECTION_CLOSE carries nothing beside it, not even the ACK owed for a
/// packet just received: our choice, which RFC 9000 §10.2 and §19.19 allow but do not ask for (an ACK
/// could leave too little room for the close). The ACK stays owed once the close has gone.
#[test]
fn a_close_packet_carries_no_ack() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    let now = p.now;
    p.client.conn(ch).unwrap().ping();
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    let owed = |p: &Pair| {
        p.server.table.get(sh).unwrap().conn.spaces[SpaceId::Data.index()]
            .received
            .has_unacked()
    };
    assert!(owed(&p), "the client's PING is owed an ACK");
    p.server.conn(sh).unwrap().close(now, 7, b"");
    assert_eq!(sends(&mut p.server, now).len(), 1, "the CONNECTION_CLOSE");
    assert!(owed(&p), "an ACK went with the close");
}

/// RFC 9000 §10.2.1: a closing endpoint answers with a packet containing CONNECTION_CLOSE, one at a
/// time. A reason long enough to fill the packet (cut to fit) made the close a full-size datagram, which
/// the transmit loop took for a full segment of a GSO batch and built again: max_segments copies of the
/// close, at the close and for every incoming packet that asked for one (10 datagrams, found in review).
#[test]
fn a_close_with_a_reason_that_fills_the_datagram_goes_once() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    let now = p.now;
    p.server.conn(sh).unwrap().close(now, 7, &[b'x'; 4000]);
    let out = sends(&mut p.server, now);
    assert_eq!(
        out.len(),
        1,
        "one CONNECTION_CLOSE: {:?}",
        out.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // The first packet from the peer is answered with one close again.
    p.client.conn(ch).unwrap().ping();
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    let out = sends(&mut p.server, now);
    assert_eq!(
        out.len(),
        1,
        "one CONNECTION_CLOSE: {:?}",
        out.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------------
// Acknowledgements (RFC 9000 §13.1, §21.4)

fn ack(ranges: &[std::ops::RangeInclusive<u64>]) -> Frame {
    Frame::Ack(AckFrame::from_ranges(ranges.iter().cloned(), 0, None).unwrap())
}

#[test]
fn an_optimistic_ack_of_a_skipped_packet_number_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    // Let the server send a few hundred 1-RTT packets: a pair of pings per round.
    let h = p.server_h.unwrap();
    let mut skipped = None;
    for _ in 0..400 {
        p.server.conn(h).unwrap().ping();
        p.run(Duration::from_millis(1));
        let conn = &p.server.table.get(h).unwrap().conn;
        let unsent = conn.recovery.unsent_ranges(SpaceId::Data);
        if let Some(&(lo, _)) = unsent.first() {
            skipped = Some(lo);
            break;
        }
    }
    let skipped = skipped.expect("the server skipped a packet number within its first 400 packets");
    // An optimistic ACK claims everything up to the largest sent, the skipped number included.
    let largest = p
        .server
        .table
        .get(h)
        .unwrap()
        .conn
        .recovery
        .next_packet_number(SpaceId::Data)
        - 1;
    assert!(largest > skipped);
    p.client_sends(&[ack(&[0..=largest])]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn an_ack_of_a_packet_never_sent_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    p.client_sends(&[ack(&[1_000_000..=1_000_000])]);
    p.assert_closed_with(TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn an_ack_in_the_wrong_space_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    // The server sent a dozen 1-RTT packets but only a handful of Handshake packets: acknowledging a
    // 1-RTT number in the Handshake space acknowledges something never sent there. The Handshake space
    // is discarded (and its state released) by now, but an ACK can still reach it: a Handshake packet
    // may carry one after the CRYPTO frame whose Finished confirmed the handshake.
    let h = p.server_h.unwrap();
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.spaces.handshake_released());
    let handshake_next = conn.recovery.next_packet_number(SpaceId::Handshake);
    assert!(handshake_next > 0, "Handshake packets were sent");
    inject(
        &mut p,
        SpaceId::Handshake,
        &[ack(&[handshake_next - 1..=handshake_next - 1])],
    );
    assert_eq!(
        server_error(&mut p),
        None,
        "a late ACK of a packet sent there is fine"
    );
    inject(
        &mut p,
        SpaceId::Handshake,
        &[ack(&[handshake_next + 10..=handshake_next + 10])],
    );
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::PROTOCOL_VIOLATION));
}

#[test]
fn an_ack_in_the_wrong_space_during_the_handshake_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    // A second connection, stopped halfway: the server has answered the client's Initial, so its
    // Handshake space is live, with a few Handshake packets sent. Acknowledging a higher number there
    // acknowledges something never sent.
    let first = p.server_h.unwrap();
    let h = mid_handshake_server(&mut p);
    let now = p.now;
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    assert!(!conn.spaces.handshake_released());
    let handshake_next = conn.recovery.next_packet_number(SpaceId::Handshake);
    assert!(handshake_next > 0, "Handshake packets were sent");
    conn.inject_frames_in(
        now,
        SpaceId::Handshake,
        &[ack(&[handshake_next + 10..=handshake_next + 10])],
    );
    p.server.after_conn(h, true);
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::PROTOCOL_VIOLATION));
    assert!(
        p.server.table.get(first).is_some_and(|e| e.conn.close.is_none()),
        "the first connection is untouched"
    );
}

// ---------------------------------------------------------------------------------------------------
// Frames and buffers

#[test]
fn frames_forbidden_in_the_packet_type_are_a_protocol_violation() {
    for frame in [
        stream(client_bidi(0), 0, 10, false),
        Frame::HandshakeDone,
        Frame::PathChallenge([1; 8]),
        Frame::MaxData(1 << 20),
        // RFC 9000 §12.4 Table 3, §10.2.3: a CONNECTION_CLOSE of type 0x1d only goes in 0-RTT and 1-RTT.
        Frame::Close(ConnectionClose {
            code: CloseCode::Application(1),
            reason: Bytes::from_static(b"app"),
        }),
    ] {
        for space in [SpaceId::Initial, SpaceId::Handshake] {
            let mut p = Pair::new(TransportConfig::default());
            inject(&mut p, space, std::slice::from_ref(&frame));
            assert_eq!(
                server_error(&mut p),
                Some(TransportErrorCode::PROTOCOL_VIOLATION),
                "{frame:?} in {space:?}"
            );
        }
    }
}

/// A second connection from the pair's client, stopped halfway: the server read the ClientHello and sent
/// its first flight (dropped here), so it reads at the Handshake level and its Initial space is live.
fn mid_handshake_server(p: &mut Pair) -> super::ConnectionHandle {
    let first = p.server_h.unwrap();
    p.client
        .connect(
            p.now,
            p.client_config.clone(),
            SERVER.parse().unwrap(),
            "localhost",
        )
        .unwrap();
    deliver_all(&mut p.client, &mut p.server, p.now, CLIENT);
    assert!(!server_sends(p).is_empty(), "the server's first flight");
    p.server
        .table
        .iter()
        .map(|(h, _)| h)
        .find(|&h| h != first)
        .unwrap()
}

/// RFC 9001 §4.1.3: once TLS reads at the Handshake level, a CRYPTO frame in an Initial packet may not
/// extend past the end of the Initial data already received, even beyond a gap (where it would only be
/// buffered, never read).
#[test]
fn crypto_data_past_the_end_of_a_level_tls_left_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    let h = mid_handshake_server(&mut p);
    let now = p.now;
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    let end = conn.spaces[SpaceId::Initial.index()].crypto_recv.contiguous_end();
    assert!(end > 0, "the ClientHello was read");
    // A retransmission of what was read is fine.
    conn.inject_frames_in(
        now,
        SpaceId::Initial,
        &[Frame::Crypto(CryptoFrame {
            offset: 0,
            data: Bytes::from(vec![0; end as usize]),
        })],
    );
    assert!(conn.close.is_none());
    conn.inject_frames_in(
        now,
        SpaceId::Initial,
        &[Frame::Crypto(CryptoFrame {
            offset: end + 100,
            data: Bytes::from_static(b"x"),
        })],
    );
    p.server.after_conn(h, true);
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::PROTOCOL_VIOLATION));
}

/// RFC 9001 §4.1.3: CRYPTO data of a level that TLS has not consumed when it moves past that level (here
/// the client's Finished completes the server's handshake while out-of-order Handshake data waits beyond
/// a gap) is a PROTOCOL_VIOLATION.
#[test]
fn unconsumed_crypto_data_when_tls_leaves_its_level_is_a_protocol_violation() {
    let mut p = Pair::new(TransportConfig::default());
    let h = mid_handshake_server(&mut p);
    let now = p.now;
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    conn.inject_frames_in(
        now,
        SpaceId::Handshake,
        &[Frame::Crypto(CryptoFrame {
            offset: 1000,
            data: Bytes::from_static(b"x"),
        })],
    );
    assert!(
        conn.close.is_none(),
        "data beyond a gap at the current level waits"
    );
    p.server.after_conn(h, true);
    // The server's flight goes again on its PTO; the client answers with its Finished.
    p.run(Duration::from_secs(5));
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::PROTOCOL_VIOLATION));
}

#[test]
fn oversized_crypto_data_is_crypto_buffer_exceeded() {
    let mut p = Pair::new(TransportConfig::default());
    // CRYPTO data may reach twice the limit past what TLS read (the limit counts bytes held).
    let window = TransportConfig::default().crypto_buffer_size as u64;
    p.client_sends(&[Frame::Crypto(CryptoFrame {
        offset: 2 * window + 1,
        data: Bytes::from_static(b"x"),
    })]);
    p.assert_closed_with(TransportErrorCode::CRYPTO_BUFFER_EXCEEDED);
}

/// RFC 9000 §7.5: "Implementations MUST support buffering at least 4096 bytes of data received in
/// out-of-order CRYPTO frames". With the limit at its floor of 4096 bytes, 4096 bytes beyond a gap of
/// one packet are held, and only more is CRYPTO_BUFFER_EXCEEDED. Before, the limit was a window of
/// offsets from what TLS had read, so a gap counted against it: 4096 bytes behind 1200 missing ones
/// closed the connection.
#[test]
fn out_of_order_crypto_data_is_counted_in_bytes_held() {
    let config = TransportConfig {
        crypto_buffer_size: 4096,
        ..TransportConfig::default()
    };
    let crypto = |len: usize| {
        Frame::Crypto(CryptoFrame {
            offset: 1200,
            data: Bytes::from(vec![0x16; len]),
        })
    };
    let mut p = Pair::new(config.clone());
    inject(&mut p, SpaceId::Data, &[crypto(4096)]);
    p.run(Duration::from_secs(1));
    assert_eq!(server_error(&mut p), None, "4096 bytes beyond a gap refused");
    let mut p = Pair::new(config);
    inject(&mut p, SpaceId::Data, &[crypto(4097)]);
    p.run(Duration::from_secs(1));
    assert_eq!(
        server_error(&mut p),
        Some(TransportErrorCode::CRYPTO_BUFFER_EXCEEDED)
    );
}

#[test]
fn a_stream_fragmentation_attack_is_cut_off() {
    let mut p = Pair::new(TransportConfig {
        streams: StreamsConfig {
            max_reassembly_fragments: 500,
            ..StreamsConfig::default()
        },
        ..TransportConfig::default()
    });
    // One byte every other byte: within flow control, but each a fragment of its own.
    let frames: Vec<Frame> = (0..500u64)
        .map(|i| stream(client_bidi(0), 2 * i + 1, 1, false))
        .collect();
    inject(&mut p, SpaceId::Data, &frames);
    assert_eq!(server_error(&mut p), None, "500 fragments are within the limit");
    // Fragments on another stream count toward the same connection-wide limit.
    inject(&mut p, SpaceId::Data, &[stream(client_bidi(1), 5, 1, false)]);
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::PROTOCOL_VIOLATION));
}

#[test]
fn in_order_data_is_never_counted_as_fragments() {
    let mut p = Pair::new(TransportConfig {
        streams: StreamsConfig {
            max_reassembly_fragments: 10,
            ..StreamsConfig::default()
        },
        ..TransportConfig::default()
    });
    let frames: Vec<Frame> = (0..1000u64)
        .map(|i| stream(client_bidi(0), i, 1, false))
        .collect();
    inject(&mut p, SpaceId::Data, &frames);
    assert_eq!(server_error(&mut p), None);
}

// ---------------------------------------------------------------------------------------------------
// Timers: a deadline reported as passed must lead somewhere

/// Drives the server alone (nothing it sends arrives) until `end`: each round sends what it can, then
/// moves the clock to its deadline. Returns the longest run of rounds whose deadline had already passed
/// while nothing could be sent (a caller would spin there).
fn longest_spin(p: &mut Pair, end: std::time::Instant) -> u32 {
    let mut buf = Vec::new();
    let (mut spins, mut worst) = (0u32, 0u32);
    while p.now < end && worst < 10_000 {
        let mut sent = 0;
        while p.server.poll_transmit(p.now, &mut buf).is_some() {
            sent += 1;
            assert!(sent < 100_000);
        }
        let Some(t) = p.server.poll_timeout() else {
            break;
        };
        if t <= p.now && sent == 0 {
            spins += 1;
            worst = worst.max(spins);
        } else {
            spins = 0;
            p.now = p.now.max(t);
        }
        p.server.handle_timeout(p.now);
    }
    worst
}

#[test]
fn keep_alive_with_a_full_congestion_window_does_not_spin() {
    // The peer asked for more than a window's worth and acknowledges nothing: the keep-alive PING cannot
    // go (the window is full), and its deadline must not stay reported as passed meanwhile.
    let server = TransportConfig {
        keep_alive_interval: Some(Duration::from_secs(1)),
        ..TransportConfig::default()
    };
    let mut p = Pair::new(server);
    let h = p.server_h.unwrap();
    {
        let mut conn = p.server.conn(h).unwrap();
        let id = conn.open_uni().unwrap();
        assert!(conn.stream(id).write(&vec![1u8; 1 << 20]).unwrap() > 100_000);
    }
    let end = p.now + Duration::from_secs(20);
    let worst = longest_spin(&mut p, end);
    assert!(worst < 3, "the deadline stayed passed for {worst} rounds");
}

// ---------------------------------------------------------------------------------------------------
// Stateless reset (RFC 9000 §10.3)

fn short_packet(dcid: &[u8], len: usize) -> BytesMut {
    let mut p = vec![0x40u8];
    p.extend_from_slice(dcid);
    p.resize(len, 0xab);
    BytesMut::from(&p[..])
}

pub(super) fn datagram(from: SocketAddr, payload: BytesMut) -> Datagram {
    Datagram {
        remote: from,
        local: None,
        ecn: None,
        payload,
    }
}

#[test]
fn stateless_resets_are_rate_limited() {
    let mut config = EndpointConfig::with_seed(9);
    config.max_stateless_resets_per_second = 20;
    config.max_stateless_queue = 10_000;
    let mut ep = Endpoint::new(config, None);
    let now = epoch();
    let from: SocketAddr = CLIENT.parse().unwrap();
    for i in 0..1000u64 {
        ep.handle_datagram(now, datagram(from, short_packet(&i.to_be_bytes(), 100)));
    }
    let mut buf = Vec::new();
    let mut sent = 0;
    while ep.poll_transmit(now, &mut buf).is_some() {
        sent += 1;
    }
    assert_eq!(sent, 20);
    assert_eq!(ep.stats().stateless_resets_sent, 20);
    assert_eq!(ep.stats().stateless_resets_withheld, 980);
    // A second later, the bucket is full again.
    let later = now + Duration::from_secs(1);
    for i in 0..100u64 {
        ep.handle_datagram(later, datagram(from, short_packet(&i.to_be_bytes(), 100)));
    }
    let mut sent = 0;
    while ep.poll_transmit(later, &mut buf).is_some() {
        sent += 1;
    }
    assert_eq!(sent, 20);
}

#[test]
fn two_endpoints_resetting_each_other_stop() {
    let mut a = Endpoint::new(EndpointConfig::with_seed(1), None);
    let mut b = Endpoint::new(EndpointConfig::with_seed(2), None);
    let (addr_a, addr_b): (SocketAddr, SocketAddr) =
        ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
    let now = epoch();
    let mut buf = Vec::new();
    let mut packet = short_packet(&[7; 8], 1200);
    let mut rounds = 0;
    let mut sizes = Vec::new();
    loop {
        let (to, from) = if rounds % 2 == 0 {
            (&mut a, addr_b)
        } else {
            (&mut b, addr_a)
        };
        to.handle_datagram(now, datagram(from, packet));
        let Some(t) = to.poll_transmit(now, &mut buf) else {
            break;
        };
        sizes.push(t.size);
        packet = BytesMut::from(&buf[..t.size]);
        rounds += 1;
        assert!(rounds < 100, "resets keep bouncing: {sizes:?}");
    }
    // Each reset is smaller than the packet it answers: 43, 42, ... down to 21 bytes, then silence.
    assert!(sizes.windows(2).all(|w| w[1] < w[0]), "{sizes:?}");
    assert_eq!(sizes.last(), Some(&21));
}

/// A client connected to a server, then the server loses all state: a new server endpoint with the same
/// reset key answers the client's next packet with a stateless reset, and the client stops at once.
fn reset_after_restart(same_key: bool) -> Vec<Event> {
    let key = |seed| {
        let mut c = EndpointConfig::with_seed(seed);
        c.reset_key = Some([42; 32]);
        c
    };
    // The server has a reset key, as a real server would.
    let mut p = Pair::with_endpoint_configs(key(1), EndpointConfig::with_seed(2));
    let restarted = if same_key {
        key(77)
    } else {
        EndpointConfig::with_seed(77)
    };
    let server_config = p.server.server.clone();
    p.server = Endpoint::new(restarted, server_config);
    p.client_events.clear();
    // The client sends something; the restarted server knows nothing of the connection.
    let h = p.client.table.iter().next().unwrap().0;
    p.client.conn(h).unwrap().ping();
    p.run(Duration::from_secs(60));
    p.client_events
}

#[test]
fn a_restarted_server_with_the_same_key_resets_the_client() {
    let events = reset_after_restart(true);
    assert_eq!(Pair::lost(&events), Some(&ConnectionError::Reset));
}

#[test]
fn a_reset_without_the_key_is_not_recognised() {
    // A reset made with another key carries a token the client does not know: it is an undecryptable
    // packet like any other, and the client only gives up by its idle timer.
    let events = reset_after_restart(false);
    assert_eq!(Pair::lost(&events), Some(&ConnectionError::TimedOut));
}

#[test]
fn a_server_with_zero_length_ids_gives_no_reset_token() {
    // RFC 9000 §10.3.2: tokens derived from a static key and the connection ID cannot serve a zero-length
    // ID, and "the same stateless reset token MUST NOT be used for multiple connection IDs". Derived from
    // the empty ID, every client of the server would get the same token, and any of them could reset
    // the others' connections with it. Such a server cannot send a reset anyway (a packet with no ID
    // says nothing of its connection), so it gives no token.
    let mut server = EndpointConfig::with_seed(1);
    server.cid_generator = Box::new(crate::RandomCidGenerator::new(0));
    let p = Pair::with_endpoint_configs(server, EndpointConfig::with_seed(2));
    let h = p.client.table.iter().next().unwrap().0;
    let conn = &p.client.table.get(h).unwrap().conn;
    assert!(conn.remote_cid.is_empty());
    assert_eq!(conn.remote_reset_token, None);
    let params = conn.peer_params.as_ref().unwrap();
    assert_eq!(params.stateless_reset_token, None);
}

/// A datagram of `len` bytes that starts with `head` and ends with `token`.
fn ending_with(head: &[u8], len: usize, token: &ResetToken) -> BytesMut {
    let mut d = head.to_vec();
    d.resize(len - ResetToken::LEN, 0x5c);
    d.extend_from_slice(&token.0);
    BytesMut::from(&d[..])
}

#[test]
fn a_reset_in_any_header_form_is_recognised() {
    // RFC 9000 §10.3: "endpoints MUST treat any packet ending in a valid stateless reset token as a
    // Stateless Reset, as other QUIC versions might allow the use of a long header", and §10.3.1: the
    // comparison MUST be made when the first packet cannot be associated with a connection or cannot be
    // decrypted. Long headers of an unknown version, of version 1 to no connection, and (for a client
    // with zero-length IDs, whose every datagram reaches its connection) of version 1 that fail to
    // decrypt, must all be checked.
    let unknown_version = [0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    let v1_handshake = [0xe0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x20];
    let v1_handshake_no_dcid = [0xe0, 0, 0, 0, 1, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0x20];
    for (what, zero_len_client, head) in [
        ("an unknown version", false, &unknown_version[..]),
        (
            "a version 1 Handshake packet to no connection",
            false,
            &v1_handshake[..],
        ),
        (
            "a version 1 Handshake packet to a zero-length ID",
            true,
            &v1_handshake_no_dcid[..],
        ),
    ] {
        let mut client = EndpointConfig::with_seed(2);
        if zero_len_client {
            client.cid_generator = Box::new(crate::RandomCidGenerator::new(0));
        }
        let mut p = Pair::with_endpoint_configs(EndpointConfig::with_seed(1), client);
        p.run(Duration::from_secs(1));
        p.client_events.clear();
        let h = p.client.table.iter().next().unwrap().0;
        let token = p.client.table.get(h).unwrap().conn.remote_reset_token.unwrap();
        let from: SocketAddr = SERVER.parse().unwrap();
        p.client
            .handle_datagram(p.now, datagram(from, ending_with(head, 60, &token)));
        while let Some((_, e)) = p.client.poll_event() {
            p.client_events.push(e);
        }
        assert_eq!(
            Pair::lost(&p.client_events),
            Some(&ConnectionError::Reset),
            "{what}: {:?}",
            p.client_events
        );
    }
}

/// A version 1 Initial header to no connection (8-byte DCID, empty SCID and token), its Length field
/// covering the rest of a `len`-byte datagram.
fn v1_initial_head(len: usize) -> Vec<u8> {
    let mut head = vec![0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0];
    let rest = (len - head.len() - 2) as u16;
    head.extend_from_slice(&(0x4000 | rest).to_be_bytes());
    head
}

/// RFC 9000 §10.3: "endpoints MUST treat any packet ending in a valid stateless reset token as a
/// Stateless Reset", and §10.3.1: the comparison MUST be made when the first packet "cannot be
/// associated with a connection". A datagram whose first packet parses as a version 1 Initial to an
/// unknown ID is no connection's either (a client accepts no connection; a server creates none for one
/// too short, or that does not authenticate), and must be checked too. Before, such datagrams went
/// down the path for new connections, which never looked at the token: the connection lived on.
#[test]
fn a_reset_shaped_as_a_version_1_initial_is_recognised() {
    // At the client, with the server's token.
    for len in [60, 1200] {
        let mut p = Pair::new(TransportConfig::default());
        p.client_events.clear();
        let h = p.client.table.iter().next().unwrap().0;
        let token = p.client.table.get(h).unwrap().conn.remote_reset_token.unwrap();
        let from: SocketAddr = SERVER.parse().unwrap();
        p.client.handle_datagram(
            p.now,
            datagram(from, ending_with(&v1_initial_head(len), len, &token)),
        );
        while let Some((_, e)) = p.client.poll_event() {
            p.client_events.push(e);
        }
        assert_eq!(
            Pair::lost(&p.client_events),
            Some(&ConnectionError::Reset),
            "client, {len} bytes: {:?}",
            p.client_events
        );
    }
    // At the server, with the token of the client's ID it moved to: too short for an Initial, and one
    // that fails to authenticate.
    for len in [60, 1200] {
        let mut p = Pair::new(TransportConfig::default());
        let h = p.server_h.unwrap();
        move_to_the_first_spare(&mut p.server.table.get_mut(h).unwrap().conn);
        p.server.after_conn(h, true);
        let token = p.server.table.get(h).unwrap().conn.remote_reset_token.unwrap();
        let from: SocketAddr = CLIENT.parse().unwrap();
        p.server.handle_datagram(
            p.now,
            datagram(from, ending_with(&v1_initial_head(len), len, &token)),
        );
        while let Some((_, e)) = p.server.poll_event() {
            p.server_events.push(e);
        }
        assert_eq!(
            Pair::lost(&p.server_events),
            Some(&ConnectionError::Reset),
            "server, {len} bytes: {:?}",
            p.server_events
        );
    }
}

/// The other side of `a_reset_shaped_as_a_version_1_initial_is_recognised`: an Initial that starts a
/// connection is not compared with the reset tokens, even when it ends with one (RFC 9000 §10.3.1 lets a
/// datagram whose packet is processed go unchecked). The tokens are the peers' choice: a client whose
/// Initials end predictably (padding after the packet) could otherwise be locked out by another client
/// that gives the server that token, and each of its Initials would be dropped as a "reset".
#[test]
fn an_initial_that_starts_a_connection_is_never_taken_for_a_reset() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let mut other = Endpoint::new(EndpointConfig::with_seed(3), None);
    other
        .connect(
            p.now,
            p.client_config.clone(),
            SERVER.parse().unwrap(),
            "localhost",
        )
        .unwrap();
    let initial = sends(&mut other, p.now).remove(0);
    let tail = ResetToken(initial[initial.len() - ResetToken::LEN..].try_into().unwrap());
    // The first client gives the server an ID with that token and has it move there.
    inject(
        &mut p,
        SpaceId::Data,
        &[Frame::NewConnectionId(NewConnectionId {
            sequence: 4,
            retire_prior_to: 4,
            id: ConnectionId::new(&[0x44; 8]).unwrap(),
            reset_token: tail,
        })],
    );
    assert_eq!(p.server.table.get(h).unwrap().conn.remote_reset_token, Some(tail));
    let incoming = p.server.stats().connections_incoming;
    deliver(&mut p.server, p.now, "198.51.100.7:7000", &initial);
    assert_eq!(p.server.stats().connections_incoming, incoming + 1);
    assert_eq!(p.server.stats().stateless_resets_received, 0);
    assert!(!p.server.table.get(h).unwrap().conn.is_closed());
}

/// A connected pair whose client uses zero-length connection IDs (the server's are 8 bytes), and the
/// client's connection.
fn connected_with_zero_length_client_ids() -> (Pair, super::ConnectionHandle) {
    let mut client = EndpointConfig::with_seed(2);
    client.cid_generator = Box::new(crate::RandomCidGenerator::new(0));
    let mut p = Pair::with_endpoint_configs(EndpointConfig::with_seed(1), client);
    p.run(Duration::from_secs(1));
    let h = p.client.table.iter().next().unwrap().0;
    (p, h)
}

#[test]
fn packets_to_a_peer_with_zero_length_ids_are_22_bytes_longer_than_our_ids() {
    // RFC 9000 §10.3: packets SHOULD be at least 22 bytes longer than the connection IDs we ask the peer
    // to use, so that its stateless reset, smaller than what it answers, can look like a packet to us.
    // The server's IDs are 8 bytes; the client's are empty, so the server's ACK-only packets would be
    // 23 bytes (1 + 0 + 1 + 5 + 16) without padding.
    let (mut p, h) = connected_with_zero_length_client_ids();
    let mut smallest = usize::MAX;
    for _ in 0..20 {
        p.client.conn(h).unwrap().ping();
        deliver_all(&mut p.client, &mut p.server, p.now, CLIENT);
        p.now += Duration::from_millis(30);
        p.server.handle_timeout(p.now);
        for d in sends(&mut p.server, p.now) {
            smallest = smallest.min(d.len());
        }
    }
    assert!(smallest < usize::MAX, "the server answered");
    assert!(smallest >= 22 + 8, "a {smallest}-byte packet");
}

/// The padding that brings a server's ACK-only packets to the size of
/// `packets_to_a_peer_with_zero_length_ids_are_22_bytes_longer_than_our_ids` does not put them in flight:
/// they took room in the congestion window until the client happened to acknowledge them, and their loss
/// was a congestion event, cutting the window of a server that sent nothing else.
#[test]
fn ack_only_packets_padded_to_their_floor_are_not_in_flight() {
    let (mut p, h) = connected_with_zero_length_client_ids();
    let sh = p.server_h.unwrap();
    let in_flight = |p: &Pair| {
        p.server
            .table
            .get(sh)
            .unwrap()
            .conn
            .recovery
            .path_bytes_in_flight()
    };
    p.run(Duration::from_secs(1));
    assert_eq!(in_flight(&p), 0);
    let mut ack_only = 0;
    for _ in 0..20 {
        p.client.conn(h).unwrap().ping();
        deliver_all(&mut p.client, &mut p.server, p.now, CLIENT);
        p.now += Duration::from_millis(30);
        p.server.handle_timeout(p.now);
        // Lost: the client never acknowledges them.
        let answers = sends(&mut p.server, p.now);
        ack_only += answers.len();
        assert!(answers.iter().all(|d| d.len() >= 22 + 8 && d.len() < 60));
        assert_eq!(in_flight(&p), 0, "after {ack_only} ACK-only packets");
    }
    assert!(ack_only >= 10, "{ack_only} ACK-only packets");
    // A later packet of the server's is acknowledged: the ACK-only packets before it, lost, are no
    // congestion.
    p.server.conn(sh).unwrap().ping();
    p.run(Duration::from_secs(1));
    let stats = p.server.conn(sh).unwrap().stats();
    assert_eq!((stats.congestion_events, stats.packets_lost), (0, 0), "{stats:?}");
}

#[test]
fn a_closing_client_with_zero_length_ids_drains_on_a_reset() {
    // RFC 9000 §10.3.1: a datagram ending in the token MUST make the endpoint drain and send nothing
    // more. A closing connection decrypts nothing; with zero-length IDs every datagram from the peer's
    // address reaches it, so it must compare the token itself. Before, it answered the reset with its
    // CONNECTION_CLOSE and stayed closing.
    let (mut p, h) = connected_with_zero_length_client_ids();
    let token = p.client.table.get(h).unwrap().conn.remote_reset_token.unwrap();
    p.client.close(p.now, h, 7, b"bye").unwrap();
    assert!(!sends(&mut p.client, p.now).is_empty(), "the close goes out");
    let from: SocketAddr = SERVER.parse().unwrap();
    // Enough datagrams that a closing connection would answer one of them (at a falling rate).
    for _ in 0..4 {
        p.client.handle_datagram(
            p.now,
            datagram(from, ending_with(&[0x41, 9, 9, 9, 9], 43, &token)),
        );
    }
    assert!(sends(&mut p.client, p.now).is_empty(), "nothing after a reset");
    assert_eq!(
        p.client.stats().stateless_resets_received,
        1,
        "drained on the reset"
    );
}

/// RFC 9000 §10.2.2: an endpoint that goes from closing to draining "uses the same end time". A
/// stateless reset received while closing made the connection drain for three PTOs counted from the
/// reset, so each reset (one per closing period of the peer's, say) pushed the end further away.
#[test]
fn a_reset_while_closing_keeps_the_closing_end() {
    let (mut p, h) = connected_with_zero_length_client_ids();
    let token = p.client.table.get(h).unwrap().conn.remote_reset_token.unwrap();
    p.client.close(p.now, h, 7, b"bye").unwrap();
    assert!(!sends(&mut p.client, p.now).is_empty(), "the close goes out");
    let end = p.client.poll_timeout().expect("a closing deadline");
    p.now += (end - p.now) / 2;
    let from: SocketAddr = SERVER.parse().unwrap();
    p.client.handle_datagram(
        p.now,
        datagram(from, ending_with(&[0x41, 9, 9, 9, 9], 43, &token)),
    );
    assert_eq!(
        p.client.stats().stateless_resets_received,
        1,
        "drained on the reset"
    );
    assert_eq!(p.client.poll_timeout(), Some(end), "the closing end stays");
    p.now = end;
    p.client.handle_timeout(p.now);
    assert_eq!(p.client.stats().connections_active, 0, "gone at the closing end");
}

// ---------------------------------------------------------------------------------------------------
// Congestion control, pacing and path MTU discovery

/// Runs both sides for `limit`, each datagram taking `delay`; the first server datagram longer than
/// `hold` is kept back instead of delivered, and the run stops there, returning it.
fn drive(p: &mut Pair, delay: Duration, limit: Duration, hold: usize) -> Option<BytesMut> {
    let (end, mut buf, mut seq) = (p.now + limit, Vec::new(), 0u64);
    let mut wire = std::collections::BTreeMap::new();
    loop {
        for to_server in [true, false] {
            let src = if to_server { &mut p.client } else { &mut p.server };
            while let Some(t) = src.poll_transmit(p.now, &mut buf) {
                for d in t.datagrams(&buf) {
                    if !to_server && d.len() > hold {
                        return Some(BytesMut::from(d));
                    }
                    seq += 1;
                    wire.insert((p.now + delay, seq), (to_server, BytesMut::from(d)));
                }
            }
        }
        while let Some((h, e)) = p.server.poll_event() {
            p.server_h.get_or_insert(h);
            p.server_events.push(e);
        }
        let next = [
            wire.keys().next().map(|k| k.0),
            p.client.poll_timeout(),
            p.server.poll_timeout(),
        ];
        match next.into_iter().flatten().min() {
            Some(t) if t <= end => p.now = p.now.max(t),
            _ => return None,
        }
        while let Some(e) = wire.first_entry().filter(|e| e.key().0 <= p.now) {
            let (to_server, d) = e.remove();
            let (ep, from) = if to_server {
                (&mut p.server, CLIENT)
            } else {
                (&mut p.client, SERVER)
            };
            ep.handle_datagram(p.now, datagram(from.parse().unwrap(), d));
        }
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
}

/// While the server's path MTU probe is in flight, an attacker forwards one client packet from its own
/// address: the server moves there (discovery restarts for it). The client's next packet, from its own
/// address, acknowledges the probe and moves the server back; the acknowledgement is processed before
/// the move, against the other path's search, and the search restored with the old path waits for that
/// probe for ever.
#[test]
fn path_mtu_discovery_survives_a_forwarded_packet_during_a_probe() {
    for attack in [false, true] {
        // Keep-alives hold the connection open past the 600 s raise timer.
        let ka = TransportConfig {
            keep_alive_interval: Some(Duration::from_secs(5)),
            ..TransportConfig::default()
        };
        let (e1, e2) = (EndpointConfig::with_seed(1), EndpointConfig::with_seed(2));
        let mut p = Pair::start(ka.clone(), ka, e1, e2);
        // The handshake, up to the server's first probe (1452 bytes; all else is at most 1200).
        let probe = drive(&mut p, Duration::ZERO, Duration::from_secs(2), 1200).unwrap();
        assert_eq!(probe.len(), 1452);
        let h = p.server_h.unwrap();
        let ch = p.client.table.iter().next().unwrap().0;
        let client: SocketAddr = CLIENT.parse().unwrap();
        if attack {
            let attacker: SocketAddr = "203.0.113.9:7000".parse().unwrap();
            p.client.conn(ch).unwrap().ping();
            client_to_server_from(&mut p, attacker);
            assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, attacker);
        }
        p.client
            .handle_datagram(p.now, datagram(SERVER.parse().unwrap(), probe));
        p.client.conn(ch).unwrap().ping();
        client_to_server_from(&mut p, client);
        assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, client);
        p.run(Duration::from_secs(1500));
        let stats = p.server.conn(h).unwrap().stats();
        assert_eq!(server_error(&mut p), None);
        assert_eq!(
            stats.path_mtu, 1452,
            "attack {attack}: {} probe(s)",
            stats.mtu_probes_sent
        );
    }
}

/// RFC 9000 §18.2: the peer's max_udp_payload_size "does act as an additional constraint on datagram
/// size in the same way as the path MTU".
#[test]
fn datagrams_respect_the_peers_max_udp_payload_size() {
    let server = TransportConfig {
        max_udp_payload_size: 1250,
        ..TransportConfig::default()
    };
    let client = TransportConfig {
        mtu: 1400,
        ..TransportConfig::default()
    };
    let mut p = Pair::with(server, client);
    let ch = p.client.table.iter().next().unwrap().0;
    let id = p.client.conn(ch).unwrap().open_uni().unwrap();
    p.client.conn(ch).unwrap().stream(id).write(&[7; 20_000]).unwrap();
    let sent = client_to_server_from(&mut p, CLIENT.parse().unwrap());
    let sizes: Vec<usize> = sent.iter().map(|d| d.len()).collect();
    assert!(!sizes.is_empty() && sizes.iter().all(|&s| s <= 1250), "{sizes:?}");
}

/// RFC 9002 §7.8: a sender whose data ran out is application limited even if the pacer's bucket is
/// empty (it would not "have fully utilized the congestion window without pacing delay"). Here it is
/// marked not application limited, and woken at the pacing deadline with nothing to send.
#[test]
fn an_empty_pacing_bucket_with_nothing_to_send_is_application_limited() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    // Grow the window well past the pacer's burst, over a 20 ms RTT.
    let id = p.server.conn(h).unwrap().open_uni().unwrap();
    p.server.conn(h).unwrap().stream(id).write(&[1; 200_000]).unwrap();
    drive(
        &mut p,
        Duration::from_millis(10),
        Duration::from_secs(5),
        usize::MAX,
    );
    p.now += Duration::from_secs(1); // the bucket refills
    let id = p.server.conn(h).unwrap().open_uni().unwrap();
    assert_eq!(
        p.server.conn(h).unwrap().stream(id).write(&[2; 16_000]).unwrap(),
        16_000
    );
    // All of it goes out (nothing is delivered), at the pace the pacer sets.
    loop {
        server_sends(&mut p);
        let conn = &p.server.table.get(h).unwrap().conn;
        if !conn.streams.has_pending() {
            break;
        }
        p.now = conn.pacing_until.expect("held back by pacing");
        p.server.handle_timeout(p.now);
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    let (cwnd, in_flight) = (conn.cc.window(), conn.recovery.bytes_in_flight());
    assert!(
        in_flight + u64::from(conn.path.mtu) <= cwnd,
        "{in_flight} of {cwnd}"
    );
    let app_limited = conn.app_limited;
    // The next deadline must lead somewhere (the PTO, which sends probes).
    let t = p.server.poll_timeout().unwrap();
    let wait = t.saturating_duration_since(p.now);
    p.now = p.now.max(t);
    p.server.handle_timeout(p.now);
    let sent = server_sends(&mut p);
    assert!(
        app_limited && !sent.is_empty(),
        "app_limited {app_limited} ({in_flight} of {cwnd} in flight); woken after {wait:?} to send {sent:?}"
    );
}

/// RFC 9002 §7.8 after a transmit that ended full (`max_segments` datagrams): the window is
/// underutilized, so the sender application-limited, while bytes in flight stay below it (the caller
/// stopped asking), and it is used, so the sender window-limited, once the transmit filled it. Before,
/// such a transmit always left the sender application-limited, also with the window full, until the
/// next call.
#[test]
fn a_full_transmit_is_window_limited_only_when_it_filled_the_window() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let id = p.server.conn(h).unwrap().open_uni().unwrap();
    p.server.conn(h).unwrap().stream(id).write(&[3; 100_000]).unwrap();
    let now = p.now;
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    let mut buf = Vec::new();
    let (mut left, mut filled) = (0, 0);
    while conn.poll_transmit(now, &mut buf, 1).is_some() {
        assert!(conn.streams.has_pending(), "more data waits");
        let (in_flight, window) = (conn.recovery.path_bytes_in_flight(), conn.cc.window());
        if in_flight + u64::from(conn.path.mtu) > window {
            filled += 1;
            assert!(
                !conn.app_limited,
                "{in_flight} of {window} in flight: application limited"
            );
        } else {
            left += 1;
            assert!(
                conn.app_limited,
                "{in_flight} of {window} in flight: not application limited"
            );
        }
    }
    assert!(
        left >= 5 && filled == 1,
        "{left} transmits with window left, {filled} filling it"
    );
}

/// A path MTU raised by discovery above a window that a loss had just cut (the probe sent before the
/// loss, acknowledged after it): the window keeps its bytes (RFC 8899 §3) and is smaller than one
/// datagram. With nothing in flight one datagram still goes, so the window opens again.
#[test]
fn a_path_mtu_above_the_window_does_not_stall_the_sender() {
    let server = TransportConfig {
        mtu_discovery: Some(crate::MtuDiscoveryConfig {
            upper_bound: 9000,
            ..Default::default()
        }),
        ..TransportConfig::default()
    };
    let client = TransportConfig {
        max_udp_payload_size: 9000,
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(server, client);
    let probe = drive(&mut p, Duration::ZERO, Duration::from_secs(2), 1200).unwrap();
    let (h, sent_probe) = (p.server_h.unwrap(), p.now);
    p.now += Duration::from_millis(5);
    // An ACK reports a packet sent before the probe lost, before the probe's own ACK arrives.
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    conn.on_congestion_event(p.now, sent_probe - Duration::from_millis(1), false);
    p.client
        .handle_datagram(p.now, datagram(SERVER.parse().unwrap(), probe));
    p.run(Duration::from_millis(100));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.mtu, 9000);
    assert!(
        conn.cc.window() < 9000,
        "the window kept its bytes: {}",
        conn.cc.window()
    );
    let id = p.server.conn(h).unwrap().open_uni().unwrap();
    p.server.conn(h).unwrap().stream(id).write(&[1; 50_000]).unwrap();
    p.run(Duration::from_secs(20));
    let conn = &p.server.table.get(h).unwrap().conn;
    let (cwnd, mtu) = (conn.cc.window(), conn.path.mtu);
    assert!(!conn.streams.has_pending(), "stuck: cwnd {cwnd}, MTU {mtu}");
}

/// RFC 9001 §6.6: no key protects more packets than its confidentiality limit. With a key update not
/// possible (the peer acknowledged nothing of the current phase), a whole GSO batch and then the
/// CONNECTION_CLOSE used to go out past it.
#[test]
fn no_key_seals_more_packets_than_its_confidentiality_limit() {
    let mut p = Pair::new(TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    let keys = p.client.table.get_mut(ch).unwrap().conn.one_rtt.as_mut().unwrap();
    let limit = keys.local.confidentiality_limit();
    keys.sealed_in_phase = limit - 3;
    keys.phase_acked_at = None;
    let mut c = p.client.conn(ch).unwrap();
    let id = c.open_uni().unwrap();
    c.stream(id).write(&[0; 65536]).unwrap();
    drop(c);
    let mut buf = Vec::new();
    let mut datagrams = 0;
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf) {
        datagrams += t.datagrams(&buf).count();
    }
    let conn = &p.client.table.get(ch).unwrap().conn;
    let sealed = conn.one_rtt.as_ref().unwrap().sealed_in_phase;
    assert_eq!(
        sealed, limit,
        "{sealed} packets sealed under one key, limit {limit}"
    );
    assert_eq!(datagrams, 3, "two data packets, then the close");
    assert!(conn.is_closed());
}

/// RFC 9001 §6.6: before its handshake is confirmed a client may not update its keys (§6.1), so at the
/// confidentiality limit it must stop using the connection, and it is RECOMMENDED to close with
/// AEAD_LIMIT_REACHED first. The client used to stop sealing without closing, leaving the connection to
/// hang until the idle timeout.
#[test]
fn a_client_at_its_confidentiality_limit_before_confirmation_closes() {
    let mut p = Pair::new(TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
    // As if HANDSHAKE_DONE had not arrived yet.
    conn.handshake_confirmed = false;
    let keys = conn.one_rtt.as_mut().unwrap();
    let limit = keys.local.confidentiality_limit();
    keys.sealed_in_phase = limit - 3;
    keys.phase_acked_at = Some(p.now);
    let mut c = p.client.conn(ch).unwrap();
    let id = c.open_uni().unwrap();
    c.stream(id).write(&[0; 65536]).unwrap();
    drop(c);
    let mut buf = Vec::new();
    while p.client.poll_transmit(p.now, &mut buf).is_some() {}
    let conn = &p.client.table.get(ch).unwrap().conn;
    let keys = conn.one_rtt.as_ref().unwrap();
    assert_eq!(
        keys.updates, 0,
        "RFC 9001 §6.1: no key update before confirmation"
    );
    assert!(keys.sealed_in_phase <= limit, "{} sealed", keys.sealed_in_phase);
    assert!(conn.is_closed(), "the client stopped without closing");
    while let Some((_, e)) = p.client.poll_event() {
        p.client_events.push(e);
    }
    match Pair::lost(&p.client_events) {
        Some(ConnectionError::TransportError(e)) => {
            assert_eq!(e.code, TransportErrorCode::AEAD_LIMIT_REACHED, "{e}")
        }
        other => panic!("expected AEAD_LIMIT_REACHED, got {other:?}"),
    }
}

/// RFC 9000 §12.3: a sender whose packet numbers reach 2^62 - 1 closes without sending more.
#[test]
fn packet_numbers_stop_before_2_pow_62() {
    let mut p = Pair::new(TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
    conn.recovery.skip_packet_number(SpaceId::Data, (1 << 62) - 8);
    conn.next_pn_skip = u64::MAX;
    for _ in 0..20 {
        if let Ok(mut c) = p.client.conn(ch) {
            c.ping();
        }
        p.run(Duration::from_millis(50));
    }
    let next = p
        .client
        .table
        .get(ch)
        .map(|e| e.conn.recovery.next_packet_number(SpaceId::Data));
    assert!(next.is_none_or(|n| n < 1 << 62), "sent up to pn {next:?}");
}

/// The packet number ceiling holds within a batch of datagrams too.
#[test]
fn packet_numbers_stop_before_2_pow_62_within_a_batch() {
    let mut p = Pair::new(TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
    conn.recovery.skip_packet_number(SpaceId::Data, (1 << 62) - 4);
    conn.next_pn_skip = u64::MAX;
    let mut c = p.client.conn(ch).unwrap();
    let id = c.open_uni().unwrap();
    c.stream(id).write(&[0; 65536]).unwrap();
    drop(c);
    let mut buf = Vec::new();
    while p.client.poll_transmit(p.now, &mut buf).is_some() {}
    let next = p
        .client
        .table
        .get(ch)
        .map(|e| e.conn.recovery.next_packet_number(SpaceId::Data));
    assert!(next.is_none_or(|n| n < 1 << 62), "sent up to pn {next:?}");
}

/// RFC 9000 §13.2.1: an ack-eliciting 1-RTT packet is acknowledged within the max_ack_delay we
/// announced. The transport parameter is whole milliseconds below 2^14 (§18.2), so a configured value
/// with a fraction of a millisecond, or one beyond that bound, must not be what the ACK timer waits for.
#[test]
fn the_ack_timer_keeps_the_max_ack_delay_we_announced() {
    for configured in [Duration::from_micros(25_900), Duration::from_secs(20)] {
        let server = TransportConfig {
            max_ack_delay: configured,
            // One more ack-eliciting packet must not make the ACK due at once (one may already wait).
            ack_eliciting_threshold: 100,
            ..TransportConfig::default()
        };
        let mut p = Pair::new(server);
        let h = p.server_h.unwrap();
        let now = p.now;
        // What the client was told.
        let announced = {
            let client = p.client.table.iter().next().unwrap().1;
            let params = client
                .conn
                .peer_params()
                .expect("the server's transport parameters");
            Duration::from_millis(params.max_ack_delay.into_inner())
        };
        assert!(announced < configured);
        let received = &mut p.server.table.get_mut(h).unwrap().conn.spaces[SpaceId::Data.index()].received;
        let pn = received.largest().map_or(0, |l| l + 1);
        assert!(received.on_packet_received(pn, true, None, now));
        let deadline = received.ack_deadline().expect("one ack-eliciting packet waits");
        assert!(
            deadline <= now + announced,
            "configured {configured:?}: the ACK waits {:?}, {announced:?} announced",
            deadline - now
        );
    }
}

/// RFC 9000 §18.2, RFC 9002 §5.3, §6.2.1: the peer's ack_delay_exponent decodes its ACK Delay field,
/// and its max_ack_delay caps that delay in RTT samples and is added to the application data space's
/// PTO. A client announcing exponent 10 and 200 ms holds its ACK of one packet for 200 ms: the server's
/// sample is 200 ms, from which all of the 200 ms (in units of 1024 µs: 199.68 ms) comes off. Decoded
/// with exponent 3, or capped at the default 25 ms, nearly all of it would stay in the estimate.
#[test]
fn the_peers_ack_delay_exponent_and_max_ack_delay_are_applied() {
    let client = TransportConfig {
        ack_delay_exponent: 10,
        max_ack_delay: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let mut p = Pair::with(TransportConfig::default(), client);
    let sh = p.server_h.unwrap();
    let smoothed_before = p.server.table.get(sh).unwrap().conn.recovery.rtt().smoothed();
    // One ack-eliciting packet: the client acknowledges it when its ACK timer fires, 200 ms later.
    p.server.conn(sh).unwrap().ping();
    p.run(Duration::from_secs(1));
    let conn = &p.server.table.get(sh).unwrap().conn;
    let rtt = conn.recovery.rtt();
    assert_eq!(rtt.latest(), Duration::from_millis(200));
    assert!(
        rtt.smoothed() <= smoothed_before + Duration::from_millis(1),
        "smoothed {:?}, {smoothed_before:?} before",
        rtt.smoothed()
    );
    // The PTO of a 1-RTT packet includes the peer's 200 ms.
    let pto_base = rtt.pto_base();
    let now = p.now;
    p.server.conn(sh).unwrap().ping();
    assert_eq!(server_sends(&mut p).len(), 1);
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert_eq!(
        conn.recovery.timeout(&conn.recovery_ctx()),
        Some(now + pto_base + Duration::from_millis(200))
    );
}

#[test]
fn handshake_acks_are_scaled_by_the_announced_ack_delay_exponent() {
    // RFC 9000 §19.3: the ACK Delay field is decoded with the ack_delay_exponent transport parameter of
    // the frame's sender, in every packet number space (our receive side does so). A Handshake ACK was
    // encoded with exponent 3 whatever we announced, so a peer read it 2^(exponent - 3) times too long.
    let exponent = 10;
    let transport = TransportConfig {
        ack_delay_exponent: exponent,
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(transport.clone(), transport);
    let t0 = p.now;
    deliver_all(&mut p.client, &mut p.server, t0, CLIENT);
    deliver_all(&mut p.server, &mut p.client, t0, SERVER);
    // The client acknowledges the server's Handshake packets 8 ms after they arrived.
    let delay = Duration::from_millis(8);
    let datagrams = sends(&mut p.client, t0 + delay);
    let h = p.server.table.iter().next().unwrap().0;
    let server = &p.server.table.get(h).unwrap().conn;
    let keys = server.spaces[SpaceId::Handshake.index()]
        .keys
        .as_ref()
        .expect("the server's Handshake keys");
    let mut ack_delays = Vec::new();
    for d in &datagrams {
        let mut rest = &d[..];
        while !rest.is_empty() {
            let header = ProtectedHeader::decode(rest, 8).unwrap();
            let (packet, tail) = rest.split_at(header.len());
            rest = tail;
            if header.long_type() != Some(crate::wire::header::LongType::Handshake) {
                continue;
            }
            let mut packet = packet.to_vec();
            let pn_offset = header.pn_offset().unwrap();
            keys.remote.header.unprotect(pn_offset, &mut packet).unwrap();
            let plain = header.finish(&packet).unwrap();
            let pn = plain.pn.expand(None);
            let len = keys
                .remote
                .packet
                .open(pn, &mut packet, plain.header_len)
                .unwrap();
            let mut r = crate::wire::Reader::new(&packet[plain.header_len..plain.header_len + len]);
            while !r.is_empty() {
                if let Frame::Ack(ack) = Frame::decode(&mut r).unwrap() {
                    ack_delays.push(ack.delay);
                }
            }
        }
    }
    let micros = delay.as_micros() as u64;
    assert_eq!(
        ack_delays,
        vec![micros >> exponent],
        "3 would give {}",
        micros >> 3
    );
}

// ---------------------------------------------------------------------------------------------------
// Unreliable datagrams (RFC 9221)

/// Sets the max_datagram_frame_size the server's connection holds from the client (as if the client had
/// announced `value`).
fn client_announced_max_datagram_frame_size(p: &mut Pair, value: u64) {
    let h = p.server_h.unwrap();
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    conn.peer_params.as_mut().unwrap().max_datagram_frame_size =
        Some(crate::wire::VarInt::from_u64(value).unwrap());
}

#[test]
fn a_peer_announcing_a_zero_max_datagram_frame_size_gets_no_datagram() {
    // RFC 9221 §3: "The default for this parameter is 0, which indicates that the endpoint does not
    // support DATAGRAM frames", and none may be sent until a non-zero value was received. A value of 1
    // leaves room for no DATAGRAM frame at all (type and length take two bytes).
    for value in [0, 1] {
        let mut p = Pair::new(TransportConfig::default());
        client_announced_max_datagram_frame_size(&mut p, value);
        let h = p.server_h.unwrap();
        let mut conn = p.server.conn(h).unwrap();
        assert_eq!(
            conn.max_datagram_size(),
            Err(crate::SendDatagramError::UnsupportedByPeer),
            "{value}"
        );
        assert_eq!(
            conn.send_datagram(Bytes::new()),
            Err(crate::SendDatagramError::UnsupportedByPeer),
            "{value}"
        );
    }
}
#[test]
fn the_largest_datagram_fits_the_peers_limit_and_a_packet() {
    // Above 16383 bytes a DATAGRAM frame's length field takes 4 bytes, not 2: the largest datagram
    // offered must still make a frame within the peer's max_datagram_frame_size (RFC 9221 §3) and a
    // packet within the path MTU (with the longest packet number, 4 bytes, and the AEAD tag).
    let big = TransportConfig {
        mtu: 30_000,
        max_udp_payload_size: 30_000,
        mtu_discovery: None,
        ..TransportConfig::default()
    };
    for (peer_limit, mtu_bound) in [(20_000u64, false), (65_535, true)] {
        let mut p = Pair::with(big.clone(), big.clone());
        client_announced_max_datagram_frame_size(&mut p, peer_limit);
        let h = p.server_h.unwrap();
        let (mtu, cid_len) = {
            let conn = &p.server.table.get(h).unwrap().conn;
            (usize::from(conn.path.mtu), conn.remote_cid.len())
        };
        assert_eq!(mtu, 30_000);
        let max = p.server.conn(h).unwrap().max_datagram_size().unwrap();
        let frame = crate::wire::frame::Datagram {
            data: Bytes::from(vec![0; max]),
        }
        .encoded_len(true);
        assert!(frame as u64 <= peer_limit, "{max}: a {frame}-byte frame");
        assert!(1 + cid_len + 4 + frame + 16 <= mtu, "{max}: a {frame}-byte frame");
        // As large as allowed: one more byte would not fit.
        let one_more = crate::wire::frame::Datagram {
            data: Bytes::from(vec![0; max + 1]),
        }
        .encoded_len(true);
        if mtu_bound {
            assert!(1 + cid_len + 4 + one_more + 16 > mtu, "{max}");
        } else {
            assert!(one_more as u64 > peer_limit, "{max}");
        }
    }
}

#[test]
fn a_longer_connection_id_from_the_peer_does_not_block_the_datagram_queue() {
    // Connection IDs may differ in length (RFC 9000 §5.1, §19.15). A datagram queued at the largest size
    // a packet with the peer's current ID carries no longer fits one once the peer retires that ID for a
    // longer one: it must not stay at the head of the queue, holding back every datagram behind it.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let max = p.server.conn(h).unwrap().max_datagram_size().unwrap();
    {
        let mut conn = p.server.conn(h).unwrap();
        conn.send_datagram(Bytes::from(vec![1; max])).unwrap();
        conn.send_datagram(Bytes::from_static(b"small")).unwrap();
    }
    let long = Frame::NewConnectionId(NewConnectionId {
        sequence: 10,
        retire_prior_to: 10,
        id: ConnectionId::new(&[7; 20]).unwrap(),
        reset_token: ResetToken([10; 16]),
    });
    inject(&mut p, SpaceId::Data, &[long]);
    assert_eq!(p.server.table.get(h).unwrap().conn.remote_cid.len(), 20);
    for _ in 0..3 {
        server_sends(&mut p);
        p.now += Duration::from_millis(100);
        p.server.handle_timeout(p.now);
    }
    let stats = p.server.conn(h).unwrap().stats();
    assert_eq!(stats.datagram_frames_sent, 1, "{stats:?}");
    assert_eq!(stats.datagrams_send_dropped, 1, "{stats:?}");
    assert!(p.server.table.get(h).unwrap().conn.datagrams.send.is_empty());
    assert_eq!(server_error(&mut p), None);
}

#[test]
fn a_datagram_larger_than_the_send_buffer_is_refused() {
    // The send buffer bounds the bytes queued (`TransportConfig::datagram_send_buffer`): a datagram larger
    // than all of it is refused, rather than queued over the bound after dropping everything waiting.
    let server = TransportConfig {
        datagram_send_buffer: 500,
        ..TransportConfig::default()
    };
    let mut p = Pair::new(server);
    let h = p.server_h.unwrap();
    let mut conn = p.server.conn(h).unwrap();
    assert_eq!(conn.max_datagram_size(), Ok(500));
    conn.send_datagram(Bytes::from_static(b"waiting")).unwrap();
    assert_eq!(
        conn.send_datagram(Bytes::from(vec![0; 1000])),
        Err(crate::SendDatagramError::TooLarge { max: 500 })
    );
    assert_eq!(conn.stats().datagrams_send_dropped, 0);
    drop(conn);
    let queued = &p.server.table.get(h).unwrap().conn.datagrams.send;
    assert_eq!(queued.len(), 1);
}

/// A Handshake long header (RFC 9000 §17.2.4) for `dcid` from `scid` whose Length field says `length`,
/// followed by `body` bytes of junk: a forged Handshake packet.
fn forged_handshake(dcid: &[u8], scid: &[u8], length: u16, body: usize) -> Vec<u8> {
    let mut d = vec![0xe0, 0, 0, 0, 1, dcid.len() as u8];
    d.extend_from_slice(dcid);
    d.push(scid.len() as u8);
    d.extend_from_slice(scid);
    d.extend_from_slice(&(0x4000 | length).to_be_bytes());
    d.resize(d.len() + body, 0x5a);
    d
}

/// Hostile datagrams routed to an open connection (RFC 9001 §5.4.2, RFC 9000 §12.2, §17.2): truncated
/// 1-RTT packets down to a bare header, a Length longer than the datagram or shorter than a packet
/// number and a tag, junk coalesced in front of a valid packet. None may panic or harm the connection,
/// and a packet that fails to open does not stop the valid one coalesced after it.
#[test]
fn hostile_datagrams_to_an_open_connection_are_dropped_and_do_not_stop_valid_packets() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(10));
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let dcid = p.server.table.get(h).unwrap().conn.local_cid;
    p.client.conn(ch).unwrap().ping();
    let real = sends(&mut p.client, p.now).remove(0);
    assert!(is_short(&real));
    let received = |p: &Pair| p.server.table.get(h).unwrap().conn.stats.packets_received;
    let before = received(&p);
    let mut hostile: Vec<Vec<u8>> = (0..real.len()).map(|n| real[..n].to_vec()).collect();
    for length in [0, 1, 2, 17, 19, 20, 60, 1000] {
        for body in [0, 1, 19, 20, 21, 59] {
            hostile.push(forged_handshake(&dcid, &[], length, body));
        }
    }
    let mut flipped = real.clone();
    *flipped.last_mut().unwrap() ^= 1;
    hostile.push(flipped);
    for d in &hostile {
        deliver(&mut p.server, p.now, CLIENT, d);
    }
    assert_eq!(received(&p), before, "no hostile packet was processed");
    assert!(!p.server.table.get(h).unwrap().conn.is_closed());
    // A forged Handshake packet (the server dropped its Handshake keys) in front of the real one.
    let mut coalesced = forged_handshake(&dcid, &[], 40, 40);
    coalesced.extend_from_slice(&real);
    deliver(&mut p.server, p.now, CLIENT, &coalesced);
    assert_eq!(
        received(&p),
        before + 1,
        "the valid packet after the forged one was processed"
    );
    // The same again: a duplicate, dropped after decryption (RFC 9000 §12.3).
    deliver(&mut p.server, p.now, CLIENT, &real);
    assert_eq!(received(&p), before + 1, "a duplicate is not processed twice");
}

/// RFC 9001 §6.1: "An endpoint MUST retain old keys until it has successfully unprotected a packet sent
/// using the new keys." The client starts a key update whose packets are all lost for a while; the
/// server, which never saw the new phase, keeps sending with the old keys, and the client must still
/// open those packets. The old receive key used to be dropped three PTOs after the update started,
/// whatever the peer had sent.
#[test]
fn old_keys_stay_until_a_packet_of_the_new_phase_opens() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(100));
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    p.client.conn(ch).unwrap().force_key_update();
    p.client.conn(ch).unwrap().ping();
    let _lost = sends(&mut p.client, p.now);
    assert_eq!(
        p.client
            .table
            .get(ch)
            .unwrap()
            .conn
            .one_rtt
            .as_ref()
            .unwrap()
            .updates,
        1
    );
    // Everything the client sends for a while is lost; its timers run.
    let end = p.now + Duration::from_secs(2);
    while let Some(t) = p.client.poll_timeout().filter(|&t| t <= end) {
        p.now = p.now.max(t);
        p.client.handle_timeout(p.now);
        let _lost = sends(&mut p.client, p.now);
    }
    p.now = end;
    let received = |p: &mut Pair| p.client.conn(ch).unwrap().stats().packets_received;
    let before = received(&mut p);
    p.server.conn(h).unwrap().ping();
    let from_server = sends(&mut p.server, p.now);
    assert!(!from_server.is_empty());
    for d in &from_server {
        deliver(&mut p.client, p.now, SERVER, d);
    }
    assert!(
        received(&mut p) > before,
        "the server's packets of the old phase no longer opened"
    );
}

/// RFC 9001 §6.5: "Endpoints SHOULD wait three times the PTO before initiating a key update after
/// receiving an acknowledgment that confirms that the previous key update was received", since the peer
/// may not have the keys for another one while it keeps its old ones. A second update asked for right
/// after the first was acknowledged used to start at once.
#[test]
fn a_second_key_update_waits_three_ptos_after_the_first_is_acknowledged() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(100));
    let ch = p.client.table.iter().next().unwrap().0;
    let updates = |p: &Pair| {
        p.client
            .table
            .get(ch)
            .unwrap()
            .conn
            .one_rtt
            .as_ref()
            .unwrap()
            .updates
    };
    p.client.conn(ch).unwrap().force_key_update();
    p.client.conn(ch).unwrap().ping();
    p.run(Duration::from_millis(100));
    assert_eq!(updates(&p), 1);
    let phase_acked = p.now;
    let pto = p.client.table.get(ch).unwrap().conn.pto();
    // The first update is acknowledged (its PING was); ask for the next one right away.
    p.client.conn(ch).unwrap().force_key_update();
    p.client.conn(ch).unwrap().ping();
    p.run(Duration::ZERO);
    assert_eq!(
        updates(&p),
        1,
        "a second update right after the first was acknowledged"
    );
    // Three PTOs later it goes.
    p.now = phase_acked + pto * 3;
    p.client.conn(ch).unwrap().ping();
    p.run(Duration::ZERO);
    assert_eq!(updates(&p), 2);
}

/// RFC 9001 §6.1, §6.2: a peer may not update its keys again before a packet of its current phase was
/// acknowledged. Here the server updates; the client answers, but every packet of its new phase is lost,
/// and it then updates again (as quinn-proto did in a soak with forced updates). Its packets carry the
/// server's old phase bit, while the server, having had none of the new phase, still keeps the old key:
/// they failed with it and were dropped one by one until the idle timeout. Now the next key is tried too,
/// and the second update is the KEY_UPDATE_ERROR it is.
#[test]
fn a_second_update_by_a_peer_whose_first_phase_was_lost_is_a_key_update_error() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(100));
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let updates = |ep: &Endpoint, h: crate::ConnectionHandle| {
        ep.table.get(h).unwrap().conn.one_rtt.as_ref().unwrap().updates
    };
    p.server.conn(h).unwrap().force_key_update();
    p.server.conn(h).unwrap().ping();
    for d in sends(&mut p.server, p.now) {
        deliver(&mut p.client, p.now, SERVER, &d);
    }
    assert_eq!((updates(&p.server, h), updates(&p.client, ch)), (1, 1));
    // The client's answer in the new phase is lost.
    p.client.conn(ch).unwrap().ping();
    let lost = sends(&mut p.client, p.now);
    assert!(!lost.is_empty());
    // The client updates again at once, as RFC 9001 §6.1 forbids.
    let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
    conn.one_rtt.as_mut().unwrap().rotate(&mut *conn.session, None);
    assert_eq!(updates(&p.client, ch), 2);
    p.client.conn(ch).unwrap().ping();
    for d in sends(&mut p.client, p.now) {
        deliver(&mut p.server, p.now, CLIENT, &d);
    }
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::KEY_UPDATE_ERROR));
}

/// After our own update, packets the peer sent before it saw the update still open with the previous key
/// (the next key, tried when the previous fails, does not get in their way) and do not count as failures.
#[test]
fn packets_of_the_old_phase_still_open_after_our_update() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(100));
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    // Sent in phase 0, delivered after the server moved to phase 1.
    p.client.conn(ch).unwrap().ping();
    let old = sends(&mut p.client, p.now);
    p.server.conn(h).unwrap().force_key_update();
    p.server.conn(h).unwrap().ping();
    let _lost = sends(&mut p.server, p.now);
    let server = |p: &mut Pair| p.server.conn(h).unwrap().stats();
    let before = server(&mut p);
    for d in &old {
        deliver(&mut p.server, p.now, CLIENT, d);
    }
    let after = server(&mut p);
    assert!(after.packets_received > before.packets_received);
    assert!(!p.server.table.get(h).unwrap().conn.is_closed());
    assert_eq!(p.server.table.get(h).unwrap().conn.auth_failures, 0);
}

/// A 1-RTT packet carrying a PING, as the client seals it with its current keys and key phase bit, with
/// packet number `pn` (whatever number the client would have used next).
fn client_short_packet(p: &Pair, ch: crate::ConnectionHandle, pn: u64) -> Vec<u8> {
    client_packet_flipped(p, ch, pn, false)
}

/// As [`client_short_packet`]; with `flip`, the Key Phase bit is the other one (an attacker's flip:
/// the bit is authenticated, so the packet opens with no key).
fn client_packet_flipped(p: &Pair, ch: crate::ConnectionHandle, pn: u64, flip: bool) -> Vec<u8> {
    let conn = &p.client.table.get(ch).unwrap().conn;
    let keys = conn.one_rtt.as_ref().unwrap();
    let header = crate::wire::header::Header::Short {
        spin: false,
        key_phase: keys.phase != flip,
        dcid: conn.remote_cid,
    };
    let mut packet = Vec::new();
    let enc = header.encode(
        crate::wire::packet_number::TruncatedPn::truncate(pn, 4),
        &mut packet,
    );
    Frame::Ping.encode(&mut packet);
    // PADDING, then room for the tag.
    packet.resize(packet.len() + 40 + keys.local.tag_len(), 0);
    keys.local.seal(pn, &mut packet, enc.header_len).unwrap();
    keys.local_header.protect(enc.pn_offset, &mut packet).unwrap();
    packet
}

/// An established pair for the key-phase tests: the server's and the client's handles, and a packet
/// number ten above the largest 1-RTT one the server has received, for packets the client seals by hand.
fn key_phase_pair() -> (Pair, crate::ConnectionHandle, crate::ConnectionHandle, u64) {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(100));
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let base = p.server.table.get(h).unwrap().conn.spaces[SpaceId::Data.index()]
        .received
        .largest()
        .unwrap()
        + 10;
    (p, h, ch, base)
}

/// RFC 9001 §6.4: "Packets with higher packet numbers MUST be protected with either the same or newer
/// packet protection keys than packets with lower packet numbers. An endpoint that successfully removes
/// protection with old keys when newer keys were used for packets with lower packet numbers MUST treat
/// this as a connection error of type KEY_UPDATE_ERROR." The client seals a packet with its phase 0 keys,
/// then one with a lower packet number with its phase 1 keys; the server opened the first with its
/// current keys and the second with its next keys, and used to take the second as a key update.
#[test]
fn a_next_phase_packet_numbered_below_one_of_the_current_phase_is_a_key_update_error() {
    let (mut p, h, ch, base) = key_phase_pair();
    let largest = |p: &Pair| {
        p.server.table.get(h).unwrap().conn.spaces[SpaceId::Data.index()]
            .received
            .largest()
            .unwrap()
    };
    let old = client_short_packet(&p, ch, base + 2);
    deliver(&mut p.server, p.now, CLIENT, &old);
    assert_eq!(largest(&p), base + 2, "the phase 0 packet opened");
    let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
    conn.one_rtt.as_mut().unwrap().rotate(&mut *conn.session, None);
    let new = client_short_packet(&p, ch, base + 1);
    deliver(&mut p.server, p.now, CLIENT, &new);
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::KEY_UPDATE_ERROR));
}

/// RFC 9001 §6.4, the same rule met the other way round: the packet protected with older keys opened
/// first (with the keys current then, or with the previous keys after the update), and the lower
/// numbered one with newer keys opens later, with the current keys. It used to be taken as a packet of
/// the current phase delayed in the network.
#[test]
fn a_current_phase_packet_numbered_below_one_opened_with_older_keys_is_a_key_update_error() {
    for older_after_update in [false, true] {
        let (mut p, h, ch, base) = key_phase_pair();
        // Phase 0 at base + 2; phase 1 at base + 3 (the update) and at base + 1 (the violation).
        let old = client_short_packet(&p, ch, base + 2);
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        conn.one_rtt.as_mut().unwrap().rotate(&mut *conn.session, None);
        let update = client_short_packet(&p, ch, base + 3);
        let lower = client_short_packet(&p, ch, base + 1);
        let order = if older_after_update {
            [&update, &old]
        } else {
            [&old, &update]
        };
        let received = |p: &Pair| p.server.table.get(h).unwrap().conn.stats().packets_received;
        let before = received(&p);
        for d in order {
            deliver(&mut p.server, p.now, CLIENT, d);
        }
        assert_eq!(received(&p), before + 2, "both opened");
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.one_rtt.as_ref().unwrap().updates, 1);
        deliver(&mut p.server, p.now, CLIENT, &lower);
        assert_eq!(
            server_error(&mut p),
            Some(TransportErrorCode::KEY_UPDATE_ERROR),
            "older keys met {}",
            if older_after_update {
                "after the update"
            } else {
                "before it"
            }
        );
    }
}

/// RFC 9001 §6.2, §6.3: a key update is detected only when a packet opens with the next keys; "packets
/// containing apparent key updates are easy to forge", and the next keys "SHOULD be retained, even if the
/// packet that was received was subsequently discarded". Packets with a flipped Key Phase bit, before
/// and after an update, are dropped as failed authentications and change nothing: no update, no key
/// dropped (the previous keys still open a delayed packet), and the genuine updates still go through.
#[test]
fn forged_key_phase_flips_change_no_key_state() {
    let (mut p, h, ch, base) = key_phase_pair();
    let server = |p: &Pair| {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert!(!conn.is_closed());
        (
            conn.one_rtt.as_ref().unwrap().updates,
            conn.auth_failures,
            conn.stats().packets_received,
        )
    };
    // Phase 0: a flip far ahead in packet numbers, then a genuine packet.
    let (updates, failures, received) = server(&p);
    let d = client_packet_flipped(&p, ch, base + 50, true);
    deliver(&mut p.server, p.now, CLIENT, &d);
    assert_eq!(
        server(&p),
        (updates, failures + 1, received),
        "a flip is a failed packet"
    );
    let d = client_short_packet(&p, ch, base + 1);
    deliver(&mut p.server, p.now, CLIENT, &d);
    assert_eq!(server(&p), (updates, failures + 1, received + 1));
    // A delayed phase 0 packet, kept for after the update.
    let delayed = client_short_packet(&p, ch, base + 2);
    // The client updates; the server follows.
    let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
    conn.one_rtt.as_mut().unwrap().rotate(&mut *conn.session, None);
    let d = client_short_packet(&p, ch, base + 3);
    deliver(&mut p.server, p.now, CLIENT, &d);
    assert_eq!(server(&p), (updates + 1, failures + 1, received + 2));
    // Phase 1: flips above and below the update's first packet (the next keys, then the previous ones).
    for pn in [base + 60, base] {
        let d = client_packet_flipped(&p, ch, pn, true);
        deliver(&mut p.server, p.now, CLIENT, &d);
    }
    assert_eq!(server(&p), (updates + 1, failures + 3, received + 2));
    // The previous keys are still there, the current ones still open.
    deliver(&mut p.server, p.now, CLIENT, &delayed);
    let d = client_short_packet(&p, ch, base + 4);
    deliver(&mut p.server, p.now, CLIENT, &d);
    assert_eq!(server(&p), (updates + 1, failures + 3, received + 4));
}

/// Counts the packets a receive key tried to open.
struct CountingKey {
    inner: Box<dyn crate::crypto::PacketKey>,
    opens: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl crate::crypto::PacketKey for CountingKey {
    fn seal(&self, pn: u64, packet: &mut [u8], header_len: usize) -> Result<(), crate::crypto::CryptoError> {
        self.inner.seal(pn, packet, header_len)
    }
    fn open(
        &self,
        pn: u64,
        packet: &mut [u8],
        header_len: usize,
    ) -> Result<usize, crate::crypto::CryptoError> {
        self.opens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.open(pn, packet, header_len)
    }
    fn tag_len(&self) -> usize {
        self.inner.tag_len()
    }
    fn confidentiality_limit(&self) -> u64 {
        self.inner.confidentiality_limit()
    }
    fn integrity_limit(&self) -> u64 {
        self.inner.integrity_limit()
    }
}

/// RFC 9001 §6.3: endpoints "MUST NOT generate a timing side-channel signal that might indicate that the
/// Key Phase bit was invalid"; §9.5: "where an attacker injects packets, this side channel could reveal
/// the value of the Key Phase", and removing protection "MUST be applied together without timing and
/// other side channels". After our own update, until a packet of the new phase opens, a packet with the
/// old phase bit that fails the previous key is tried with the next one too: a forged or damaged packet
/// then cost two decryptions with the old bit and one with the new, telling an attacker which bit the
/// header protection hid. Both now cost the same.
#[test]
fn after_our_update_a_packet_failing_authentication_costs_the_same_whatever_its_key_phase() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(100));
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let big = |p: &mut Pair| {
        p.client
            .conn(ch)
            .unwrap()
            .send_datagram(Bytes::from(vec![7; 300]))
            .unwrap();
        sends(&mut p.client, p.now)
    };
    // A client packet of phase 0, the server's old phase once it updates.
    let old = big(&mut p);
    p.server.conn(h).unwrap().force_key_update();
    p.server.conn(h).unwrap().ping();
    for d in sends(&mut p.server, p.now) {
        deliver(&mut p.client, p.now, SERVER, &d);
    }
    // A client packet of phase 1, the server's new phase.
    let new = big(&mut p);
    let opens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let counter = opens.clone();
        let conn = &mut p.server.table.get_mut(h).unwrap().conn;
        conn.one_rtt.as_mut().unwrap().wrap_remote_keys(&|inner| {
            Box::new(CountingKey {
                inner,
                opens: counter.clone(),
            })
        });
    }
    let mut cost = Vec::new();
    for d in [&old[0], &new[0]] {
        // The last byte (the AEAD tag, far from the header protection sample) damaged.
        assert!(d.len() > 100);
        let mut d = d.to_vec();
        *d.last_mut().unwrap() ^= 1;
        let before = opens.load(std::sync::atomic::Ordering::Relaxed);
        deliver(&mut p.server, p.now, CLIENT, &d);
        cost.push(opens.load(std::sync::atomic::Ordering::Relaxed) - before);
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.auth_failures, 2);
    assert!(!conn.is_closed());
    assert_eq!(
        cost[0], cost[1],
        "decryptions: old phase bit {}, new {}",
        cost[0], cost[1]
    );
}

/// As `hostile_datagrams_to_an_open_connection_are_dropped_and_do_not_stop_valid_packets`, with the
/// Initial and Handshake keys still in use (RFC 9001 §5.4.2, RFC 9000 §17.2): every truncation of the
/// server's first flight and forged Handshake packets of every short Length reach a client mid-handshake;
/// none panics, and the real flight afterwards still completes the handshake.
#[test]
fn hostile_long_headers_mid_handshake_are_dropped() {
    let mut p = Pair::new(TransportConfig::default());
    let config = p.client_config.clone();
    let h = p
        .client
        .connect(p.now, config, SERVER.parse().unwrap(), "localhost")
        .unwrap();
    deliver_all(&mut p.client, &mut p.server, p.now, CLIENT);
    let flight = sends(&mut p.server, p.now);
    let cid = p.client.table.get(h).unwrap().conn.local_cid;
    let first = ProtectedHeader::decode(&flight[0], 0).unwrap();
    let server_cid = *first.scid().unwrap();
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    for d in &flight {
        hostile.extend((0..d.len()).step_by(7).map(|n| d[..n].to_vec()));
    }
    for length in 0..=24 {
        for body in [0, 1, 19, 20, 21, 24, 40] {
            hostile.push(forged_handshake(&cid, &server_cid, length, body));
        }
    }
    let mut had_keys = 0;
    for d in &hostile {
        deliver(&mut p.client, p.now, SERVER, d);
        let conn = &p.client.table.get(h).unwrap().conn;
        assert!(!conn.is_closed(), "closed after {} bytes", d.len());
        had_keys += usize::from(conn.spaces[SpaceId::Handshake.index()].keys.is_some());
    }
    assert!(had_keys > 100, "the forged packets met Handshake keys");
    for d in &flight {
        deliver(&mut p.client, p.now, SERVER, d);
    }
    p.run(Duration::from_secs(1));
    let conn = &p.client.table.get(h).unwrap().conn;
    assert!(conn.handshake_confirmed, "the handshake completed after all");
}

/// RFC 9001 §6.6: packets that fail authentication count toward the integrity limit across the
/// connection, and exceeding it closes with AEAD_LIMIT_REACHED. 0-RTT packets, which the server does not
/// accept (RFC 9000 §17.2.3 lets it drop them), are not opened and so do not count. Before, the close
/// came at the limit rather than beyond it.
#[test]
fn failed_authentications_close_beyond_the_integrity_limit_and_0rtt_does_not_count() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(10));
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let dcid = p.server.table.get(h).unwrap().conn.local_cid;
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    let limit = conn.one_rtt.as_ref().unwrap().remote.integrity_limit();
    conn.auth_failures = limit - 2;
    // Forged 0-RTT packets, long enough to be opened if they were.
    for _ in 0..5 {
        let mut zero_rtt = forged_handshake(&dcid, &[], 60, 60);
        zero_rtt[0] = 0xd0;
        deliver(&mut p.server, p.now, CLIENT, &zero_rtt);
    }
    assert_eq!(p.server.table.get(h).unwrap().conn.auth_failures, limit - 2);
    p.client.conn(ch).unwrap().ping();
    let mut forged = sends(&mut p.client, p.now).remove(0);
    *forged.last_mut().unwrap() ^= 1;
    deliver(&mut p.server, p.now, CLIENT, &forged);
    deliver(&mut p.server, p.now, CLIENT, &forged);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.auth_failures, limit);
    assert!(!conn.is_closed(), "closed at the limit, not beyond it");
    deliver(&mut p.server, p.now, CLIENT, &forged);
    assert_eq!(server_error(&mut p), Some(TransportErrorCode::AEAD_LIMIT_REACHED));
}

/// RFC 9001 §6.6: the count is across all keys. Before, only 1-RTT packets counted: Handshake packets
/// that failed to open went uncounted.
#[test]
fn handshake_packets_that_fail_authentication_count_toward_the_integrity_limit() {
    let mut p = Pair::new(TransportConfig::default());
    p.run(Duration::from_millis(10));
    let h = mid_handshake_server(&mut p);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.spaces[SpaceId::Handshake.index()].keys.is_some());
    let dcid = conn.local_cid;
    for _ in 0..3 {
        deliver(
            &mut p.server,
            p.now,
            CLIENT,
            &forged_handshake(&dcid, &[], 60, 60),
        );
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.auth_failures, 3);
    assert!(!conn.is_closed());
}

/// RFC 9002 §6.2.1: the peer's max_ack_delay is left out of the PTO until the handshake is confirmed, so
/// a client announcing the largest (16,383 ms) cannot stretch a half-open server connection's idle
/// timeout, which is at least three PTOs (RFC 9000 §10.1), to about 52 s. Found by the server_recv fuzz
/// target (a mutated ClientHello).
#[test]
fn a_large_max_ack_delay_does_not_stretch_a_half_open_connection() {
    let idle = Duration::from_secs(10);
    let server = TransportConfig {
        max_idle_timeout: Some(idle),
        ..TransportConfig::default()
    };
    let client = TransportConfig {
        max_ack_delay: Duration::from_millis(16_383),
        ..TransportConfig::default()
    };
    let mut p = Pair::with(server, client);
    let h = mid_handshake_server(&mut p);
    let start = p.now;
    // Nothing more comes from the client: the server's timers run alone.
    let mut now = start;
    while p.server.table.get(h).is_some() {
        let Some(t) = p.server.poll_timeout().filter(|&t| t <= start + 3 * idle) else {
            break;
        };
        now = now.max(t);
        p.server.handle_timeout(now);
        sends(&mut p.server, now);
    }
    assert!(
        p.server.table.get(h).is_none(),
        "the half-open connection outlived three idle timeouts"
    );
    assert!(
        now - start <= idle + Duration::from_millis(100),
        "gone after {:?}",
        now - start
    );
}

/// QUIC runs over unicast: a datagram that arrived at a multicast or broadcast address (a server bound
/// to 0.0.0.0 or [::] receives those), or that names such a source, the unspecified address or port 0,
/// is dropped unanswered and counted. Before, the server answered with the group address as its source,
/// which the system refuses (and quinn-udp then turned GSO off for the whole socket), or sent its answer
/// to the group. The control: the same Initial between unicast addresses, written as IPv4-mapped IPv6
/// addresses, is answered, to the IPv4 address.
#[test]
fn datagrams_to_or_from_addresses_that_are_not_one_hosts_are_dropped() {
    let cases = [
        ("192.0.2.1:5000", Some("224.0.0.1")),
        ("192.0.2.1:5000", Some("255.255.255.255")),
        ("[2001:db8::1]:5000", Some("ff02::1")),
        ("[::ffff:192.0.2.1]:5000", Some("::ffff:224.0.0.1")),
        ("224.0.0.1:5000", None),
        ("255.255.255.255:5000", None),
        ("0.0.0.0:5000", None),
        ("192.0.2.1:0", None),
    ];
    for (remote, local) in cases {
        let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
        let initial = sends(&mut p.client, p.now);
        for d in &initial {
            p.server.handle_datagram(
                p.now,
                Datagram {
                    remote: remote.parse().unwrap(),
                    local: local.map(|ip| ip.parse().unwrap()),
                    ecn: None,
                    payload: BytesMut::from(&d[..]),
                },
            );
        }
        assert_eq!(
            p.server.stats().dropped_not_unicast,
            initial.len() as u64,
            "{remote} to {local:?}"
        );
        assert!(server_sends(&mut p).is_empty(), "{remote} to {local:?}");
    }
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    for d in sends(&mut p.client, p.now) {
        p.server.handle_datagram(
            p.now,
            Datagram {
                remote: "[::ffff:192.0.2.1]:5000".parse().unwrap(),
                local: Some("::ffff:10.0.0.2".parse().unwrap()),
                ecn: None,
                payload: BytesMut::from(&d[..]),
            },
        );
    }
    let mut buf = Vec::new();
    let t = p.server.poll_transmit(p.now, &mut buf).expect("an answer");
    assert_eq!(t.destination, "192.0.2.1:5000".parse().unwrap());
    assert_eq!(t.src_ip, Some("10.0.0.2".parse().unwrap()));
}

/// RFC 9001 §6.4 is about packet numbers, not arrival order: packets of a peer that updated its keys,
/// reordered in every way around the update (and each delivered twice), open and close nothing. The
/// update is the client's, or the server's own that the client follows.
#[test]
fn packets_reordered_around_a_key_update_are_no_key_update_error() {
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut all = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                all.push(q);
            }
        }
        all
    }
    for server_started in [false, true] {
        for order in permutations(5) {
            let (mut p, h, ch, base) = key_phase_pair();
            if server_started {
                p.server.conn(h).unwrap().force_key_update();
                p.server.conn(h).unwrap().ping();
                let _lost = sends(&mut p.server, p.now);
            }
            // Phase 0 at base + 1 and base + 2, the next phase from base + 3.
            let mut packets = vec![
                client_short_packet(&p, ch, base + 1),
                client_short_packet(&p, ch, base + 2),
            ];
            let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
            conn.one_rtt.as_mut().unwrap().rotate(&mut *conn.session, None);
            for pn in base + 3..base + 6 {
                packets.push(client_short_packet(&p, ch, pn));
            }
            let received = |p: &Pair| p.server.table.get(h).unwrap().conn.stats().packets_received;
            let before = received(&p);
            for &i in &order {
                deliver(&mut p.server, p.now, CLIENT, &packets[i]);
                deliver(&mut p.server, p.now, CLIENT, &packets[i]);
            }
            let conn = &p.server.table.get(h).unwrap().conn;
            assert!(
                !conn.is_closed() && received(&p) == before + 5,
                "server started: {server_started}, order {order:?}: {:?}, {} of 5 opened",
                conn.close.as_ref().map(|c| &c.frame),
                received(&p) - before
            );
            assert_eq!(conn.one_rtt.as_ref().unwrap().updates, 1);
        }
    }
}

/// RFC 9000 §14.4: "Loss of a QUIC packet that is carried in a PMTU probe is therefore not a reliable
/// indication of congestion and SHOULD NOT trigger a congestion control reaction". The server's first
/// probe (1452 bytes) is dropped: no congestion event, the window is not cut, the probe leaves the bytes
/// in flight, and the same size, tried again, passes.
#[test]
fn a_lost_path_mtu_probe_is_no_congestion_signal() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    // Up to the server's first probe, which the network drops.
    let probe = drive(&mut p, Duration::ZERO, Duration::from_secs(2), 1200).unwrap();
    assert_eq!(probe.len(), 1452);
    let h = p.server_h.unwrap();
    let conn = &p.server.table.get(h).unwrap().conn;
    let (cwnd, events) = (conn.cc.window(), conn.stats.congestion_events);
    assert!(conn.recovery.bytes_in_flight() >= 1452, "the probe is in flight");
    assert_eq!(conn.stats.mtu_probes_sent, 1);
    // The rest is delivered, 10 ms each way.
    assert!(drive(
        &mut p,
        Duration::from_millis(10),
        Duration::from_secs(5),
        usize::MAX
    )
    .is_none());
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.stats.mtu_probes_lost, 1, "{:?}", conn.stats);
    assert_eq!(conn.stats.congestion_events, events, "{:?}", conn.stats);
    assert!(conn.cc.window() >= cwnd, "{} < {cwnd}", conn.cc.window());
    assert_eq!(conn.recovery.bytes_in_flight(), 0);
    assert_eq!(conn.path.mtu, 1452, "the second probe of the size passed");
    assert_eq!(conn.stats.mtu_probes_sent, 2);
}

/// `Endpoint::set_path_mtu_discovery(false)` (what `udp::Driver` does on a socket that may fragment,
/// RFC 9000 §14) keeps the endpoint's new connections at their starting size, whatever their
/// `TransportConfig::mtu_discovery` says; with `true` the same pair finds 1452.
#[test]
fn an_endpoint_that_forbids_mtu_discovery_sends_no_probes() {
    for allowed in [false, true] {
        let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
        p.server.set_path_mtu_discovery(allowed);
        let larger = drive(&mut p, Duration::from_millis(10), Duration::from_secs(5), 1200);
        let h = p.server_h.unwrap();
        let conn = &p.server.table.get(h).unwrap().conn;
        if allowed {
            assert_eq!(larger.map(|d| d.len()), Some(1452), "{:?}", conn.stats);
        } else {
            assert!(larger.is_none(), "a datagram above 1200 bytes was sent");
            assert!(p.server_events.contains(&Event::Connected));
            assert_eq!(conn.stats.mtu_probes_sent, 0);
            assert_eq!(conn.path.mtu, 1200);
        }
    }
}

/// The client side of [`an_endpoint_that_forbids_mtu_discovery_sends_no_probes`]: a client endpoint told
/// before it connects keeps 1200 bytes and sends no probe; allowed, the same client finds 1452.
#[test]
fn a_client_endpoint_that_forbids_mtu_discovery_sends_no_probes() {
    for allowed in [false, true] {
        let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
        // A fresh client endpoint, set before its connection is made.
        let mut client = Endpoint::new(EndpointConfig::with_seed(3), None);
        client.set_path_mtu_discovery(allowed);
        let h = client
            .connect(
                p.now,
                p.client_config.clone(),
                SERVER.parse().unwrap(),
                "localhost",
            )
            .unwrap();
        p.client = client;
        assert!(drive(
            &mut p,
            Duration::from_millis(10),
            Duration::from_secs(5),
            usize::MAX
        )
        .is_none());
        let conn = &p.client.table.get(h).unwrap().conn;
        assert!(!conn.is_handshaking(), "connected");
        if allowed {
            assert!(conn.stats.mtu_probes_sent > 0, "{:?}", conn.stats);
            assert_eq!(conn.path.mtu, 1452);
        } else {
            assert_eq!(conn.stats.mtu_probes_sent, 0);
            assert_eq!(conn.path.mtu, 1200);
        }
    }
}

/// RFC 9000 §19.3, §18.2 and RFC 9002 §5.3: a peer announcing ack_delay_exponent 20 that reports the
/// largest ACK Delay a varint holds (2^62 - 1, which scaled by 2^20 overflows 64 bits of microseconds)
/// neither closes the connection nor erases the RTT sample: once the handshake is confirmed the delay
/// counts as at most the peer's max_ack_delay (25 ms), and comes off a 100 ms sample as that.
#[test]
fn an_ack_delay_beyond_64_bits_of_microseconds_counts_as_max_ack_delay() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let conn = &mut p.server.table.get_mut(sh).unwrap().conn;
    assert!(conn.handshake_confirmed);
    conn.peer_params.as_mut().unwrap().ack_delay_exponent = crate::wire::VarInt::from_u32(20);
    let min_before = conn.recovery.rtt().min();
    for _ in 0..3 {
        p.server.conn(sh).unwrap().ping();
        assert!(!server_sends(&mut p).is_empty());
        let conn = &p.server.table.get(sh).unwrap().conn;
        let tracked: Vec<u64> = conn
            .recovery
            .oldest_unacked(SpaceId::Data)
            .map(|(pn, _)| pn)
            .collect();
        assert!(!tracked.is_empty());
        p.now += Duration::from_millis(100);
        let delay = crate::wire::VarInt::MAX.into_inner();
        let ack = AckFrame::from_ranges(tracked.iter().rev().map(|&pn| pn..=pn), delay, None).unwrap();
        inject(&mut p, SpaceId::Data, &[Frame::Ack(ack)]);
        assert_eq!(server_error(&mut p), None);
        let rtt = p.server.table.get(sh).unwrap().conn.recovery.rtt().clone();
        assert_eq!(rtt.latest(), Duration::from_millis(100));
        assert_eq!(rtt.latest_adjusted(), Duration::from_millis(75), "{rtt:?}");
        assert_eq!(rtt.min(), min_before.min(Duration::from_millis(100)));
    }
}

/// A peer whose ACK frames are valid but otherwise arbitrary: any subset of the packets sent (in flight
/// or not), ACK Delays up to 2^62 - 1 under any ack_delay_exponent up to 20, ECN counts that are
/// missing, creep up, jump by up to 2^62 or go back, at intervals from none to 2 s (RFC 9000 §13.4.2,
/// §19.3; RFC 9002 §5 to §7). The connection never closes (nothing in them is a protocol error), the
/// window never goes below the minimum, and once the timers due are handled and everything sent, the
/// next deadline is ahead: nothing is due again at the same instant (no spin). Seeded; a failure names
/// its seed and step. Before a new pacing rate counted from now, seed 24 found a pacing deadline in the
/// past at step 19.
#[test]
fn valid_but_hostile_ack_frames_keep_the_connection_sound() {
    let max = crate::wire::VarInt::MAX.into_inner();
    for seed in 1..400u64 {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut below = move |n: u64| {
            // xorshift64: test randomness only, seeded per case.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n.max(1)
        };
        let mut p = Pair::new(TransportConfig::default());
        let sh = p.server_h.unwrap();
        if below(2) == 0 {
            let exponent = crate::wire::VarInt::from_u32(below(21) as u32);
            let conn = &mut p.server.table.get_mut(sh).unwrap().conn;
            conn.peer_params.as_mut().unwrap().ack_delay_exponent = exponent;
        }
        let id = p.server.conn(sh).unwrap().open_uni().unwrap();
        let mut counts = EcnCounts::default();
        // The injected frames do not reset the idle timer: the connection ends after 30 s of them.
        for step in 0..600 {
            match p.server.conn(sh) {
                Ok(mut c) => {
                    let _ = c.stream(id).write(&[5u8; 20_000]);
                }
                Err(_) => break,
            }
            let _ = server_sends(&mut p);
            let Some(entry) = p.server.table.get(sh) else {
                break;
            };
            let conn = &entry.conn;
            assert!(conn.close.is_none(), "seed {seed} step {step}: closed");
            assert!(
                conn.cc.window() >= 2 * 1200,
                "seed {seed} step {step}: {}",
                conn.cc.window()
            );
            let next_pn = conn.recovery.next_packet_number(SpaceId::Data);
            let skipped = conn.recovery.unsent_ranges(SpaceId::Data);
            p.now += Duration::from_millis(match below(4) {
                0 => 0,
                1 => below(3),
                2 => below(50),
                _ => below(2000),
            });
            let mut pns: Vec<u64> = conn
                .recovery
                .oldest_unacked(SpaceId::Data)
                .map(|(pn, _)| pn)
                .filter(|_| below(3) != 0)
                .collect();
            for _ in 0..below(5) {
                let pn = below(next_pn);
                if !skipped.iter().any(|&(a, b)| (a..=b).contains(&pn)) {
                    pns.push(pn);
                }
            }
            pns.sort_unstable();
            pns.dedup();
            if !pns.is_empty() {
                let delay = match below(4) {
                    0 => 0,
                    1 => below(1000),
                    2 => below(1 << 30),
                    _ => max,
                };
                let ecn = match below(4) {
                    0 => None,
                    1 => {
                        counts.ect0 += below(5);
                        counts.ce = (counts.ce + below(3)).min(max);
                        Some(counts)
                    }
                    2 => {
                        counts.ce = counts.ce.saturating_add(below(1 << 62)).min(max);
                        Some(counts)
                    }
                    _ => Some(EcnCounts {
                        ect0: below(100),
                        ect1: below(3),
                        ce: below(100),
                    }),
                };
                let ack = AckFrame::from_ranges(pns.iter().rev().map(|&pn| pn..=pn), delay, ecn).unwrap();
                inject(&mut p, SpaceId::Data, &[Frame::Ack(ack)]);
                assert_eq!(server_error(&mut p), None, "seed {seed} step {step}");
            }
            p.server.handle_timeout(p.now);
            let _ = server_sends(&mut p);
            let now = p.now;
            let next = p.server.poll_timeout();
            assert!(
                next.is_none_or(|t| t > now),
                "seed {seed} step {step}: a deadline {:?} before now",
                next.map(|t| now - t)
            );
        }
    }
}
