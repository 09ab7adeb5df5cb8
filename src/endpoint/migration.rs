//! The peer's address changing under an established connection, seen from the server (RFC 9000 §8.2,
//! §9): what the server owes the peer while it validates the new address.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use super::peer_errors::{inject, Pair, CLIENT, SERVER};
use crate::conn::SpaceId;
use crate::wire::frame::Frame;
use crate::{ConnectionHandle, Datagram, TransportConfig};

fn datagram(remote: SocketAddr, payload: BytesMut) -> Datagram {
    Datagram {
        remote,
        local: None,
        ecn: None,
        payload,
    }
}

/// What the server sends now, all of it: for each PATH_RESPONSE carrying one of `datas` (eight bytes of
/// the same value), that value and the datagram's destination, sorted, read from the server's qlog
/// `rx` (records from before this call are dropped).
#[cfg(feature = "qlog")]
pub(super) fn path_responses_sent(
    p: &mut Pair,
    rx: &std::sync::mpsc::Receiver<Vec<u8>>,
    datas: &[u8],
) -> Vec<(u8, SocketAddr)> {
    while rx.try_recv().is_ok() {}
    let mut answered = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        for record in rx.try_iter() {
            let record = String::from_utf8(record).unwrap_or_default();
            for &data in datas {
                if record.contains("path_response") && record.contains(&format!("{data:02x}").repeat(8)) {
                    answered.push((data, t.destination));
                }
            }
        }
    }
    answered.sort();
    answered
}

/// The client's datagrams, delivered to the server as coming from `from`; returns their total size.
fn client_to_server_from(p: &mut Pair, from: SocketAddr) -> usize {
    let mut buf = Vec::new();
    let mut total = 0;
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            total += d.len();
            p.server.handle_datagram(p.now, datagram(from, BytesMut::from(d)));
        }
    }
    total
}

/// The client pings (an ack-eliciting, non-probing packet) and its datagrams reach the server as coming
/// from `from`; returns their total size.
fn client_pings_from(p: &mut Pair, ch: ConnectionHandle, from: SocketAddr) -> usize {
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(p, from)
}

/// The server's datagrams to `to` reach the client; the rest are lost. Returns how many reached it.
fn server_to_client_at(p: &mut Pair, to: SocketAddr) -> usize {
    server_sends_reaching(p, to)
        .iter()
        .filter(|(dest, _)| *dest == to)
        .count()
}

/// As [`server_to_client_at`]; returns the destination and size of every datagram the server sent.
fn server_sends_reaching(p: &mut Pair, to: SocketAddr) -> Vec<(SocketAddr, usize)> {
    let server: SocketAddr = SERVER.parse().unwrap();
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            sent.push((t.destination, d.len()));
            if t.destination == to {
                p.client
                    .handle_datagram(p.now, datagram(server, BytesMut::from(d)));
            }
        }
    }
    sent
}

/// Everything between the server and the client's address `at` arrives, the timers running, until
/// neither side has a deadline within `limit`.
fn exchange_at(p: &mut Pair, at: SocketAddr, limit: Duration) {
    let end = p.now + limit;
    loop {
        server_to_client_at(p, at);
        client_to_server_from(p, at);
        if !p.advance_to_next_deadline(end) {
            break;
        }
    }
}

/// Nowhere: datagrams sent here are lost.
fn nowhere() -> SocketAddr {
    "0.0.0.0:1".parse().unwrap()
}

/// Makes the client's next datagram a probe: a packet with PATH_CHALLENGE `data` and PADDING only (no
/// ACK, which would make it non-probing), to a spare connection ID of the server's, built as quicsand
/// builds its challenge to an old path.
fn queue_probe(conn: &mut crate::conn::Connection, data: [u8; 8], now: std::time::Instant) {
    let (dcid_seq, dcid, _) = conn.peer_cids.remove(0);
    conn.path_validation = Some(Box::new(crate::conn::path::PathValidation {
        data,
        pending: false,
        deadline: now + Duration::from_secs(3),
        resend_at: now + Duration::from_secs(3),
        resend_after: Duration::from_secs(3),
        expanded: true,
        earlier: None,
        previous: None,
        old_path: Some(crate::conn::path::OldPathChallenge {
            remote: SERVER.parse().unwrap(),
            local_ip: None,
            data,
            pending: true,
            response: None,
            dcid,
            dcid_seq,
            reset_token: None,
            spare: false,
        }),
    }));
}

/// An established pair whose client moved to `NEW`; the server's answer there (its challenge, with an
/// ACK) is lost. Returns the pair and the server's and the client's handles.
fn moved_with_the_challenge_lost() -> (Pair, ConnectionHandle, ConnectionHandle) {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, NEW.parse().unwrap());
    server_to_client_at(&mut p, "0.0.0.0:1".parse().unwrap());
    (p, h, ch)
}

/// The client's new address in the tests that move it.
const NEW: &str = "198.51.100.7:6000";

#[test]
fn an_ack_owed_on_an_unvalidated_new_path_goes_within_max_ack_delay() {
    // RFC 9000 §13.2.1: 1-RTT packets are acknowledged within max_ack_delay. After the client moved, the
    // server's new path is not validated and the anti-amplification limit (§8.1) leaves it less than a
    // full datagram, but still room for an ACK: the ACK timer must not be hidden for that.
    let (mut p, h, ch) = moved_with_the_challenge_lost();
    let new: SocketAddr = NEW.parse().unwrap();
    p.now += Duration::from_millis(1);
    client_pings_from(&mut p, ch, new);
    {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, new);
        assert!(!conn.path.validated);
        let allowance = conn.path.send_allowance();
        assert!(allowance > 0 && allowance < 1200, "{allowance}");
    }
    let max_ack_delay = TransportConfig::default().max_ack_delay;
    let end = p.now + max_ack_delay + Duration::from_millis(1);
    loop {
        server_to_client_at(&mut p, new);
        match p.server.poll_timeout() {
            Some(t) if t <= end => {
                p.now = p.now.max(t);
                p.server.handle_timeout(p.now);
            }
            _ => break,
        }
    }
    let client = &p.client.table.get(ch).unwrap().conn;
    assert_eq!(
        client.recovery.bytes_in_flight(),
        0,
        "the client's PINGs were acknowledged within max_ack_delay"
    );
}

#[test]
fn a_probe_from_a_new_address_is_answered_there() {
    // RFC 9000 §8.2.2, §9.1: a client probing a new path sends PATH_CHALLENGE in a probing packet from
    // its new address; the server MUST answer it, on that path (and, §9.5, with a connection ID of the
    // client's not used on the current path), without moving there.
    probe_from_a_new_address(false);
}

#[test]
fn a_probe_from_a_client_with_zero_length_ids_is_answered() {
    // The same with a client using zero-length connection IDs: it has none to spare, and an empty ID
    // links nothing (RFC 9000 §9.5), so the answer goes with it.
    probe_from_a_new_address(true);
}

fn probe_from_a_new_address(zero_len_client: bool) {
    let mut client = crate::EndpointConfig::with_seed(2);
    if zero_len_client {
        client.cid_generator = Box::new(crate::RandomCidGenerator::new(0));
    }
    let mut p = Pair::with_endpoint_configs(crate::EndpointConfig::with_seed(1), client);
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    p.run(Duration::from_millis(100));
    let probe_from: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let data = [0x3c; 8];
    {
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        assert!(conn.path_validation.is_none());
        queue_probe(conn, data, p.now);
    }
    p.client.after_conn(ch, true);
    let sent = client_to_server_from(&mut p, probe_from);
    assert!(sent >= 1200, "the probe is padded: {sent}");
    let client: SocketAddr = CLIENT.parse().unwrap();
    assert_eq!(
        p.server.table.get(h).unwrap().conn.path.remote,
        client,
        "a probing packet does not move the connection (RFC 9000 §9.3)"
    );
    let mut buf = Vec::new();
    let server: SocketAddr = SERVER.parse().unwrap();
    let mut to_probe = 0;
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            if t.destination == probe_from {
                to_probe += 1;
                assert!(d.len() >= 1200, "PATH_RESPONSE datagrams are expanded");
                p.client
                    .handle_datagram(p.now, datagram(server, BytesMut::from(d)));
            }
        }
    }
    assert_eq!(to_probe, 1, "one answer to the probed address");
    let conn = &p.client.table.get(ch).unwrap().conn;
    assert!(
        conn.path_validation.is_none(),
        "the client's challenge was answered"
    );
    p.run(Duration::from_secs(1));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, client);
    if !zero_len_client {
        assert!(conn.peer_cids.len() >= 2, "the spare used was replaced");
    }
}

/// Reads the frames sent from the server's qlog, hence the feature.
#[cfg(feature = "qlog")]
#[test]
fn a_path_response_owed_survives_a_second_migration() {
    // RFC 9000 §8.2.2: the client moved once (B), the server validates B, and a PATH_CHALLENGE from B is
    // still unanswered when a newer packet from a third address (C) moves the connection again: the
    // answer still goes, to B.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let c: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    client_pings_from(&mut p, ch, b);
    server_to_client_at(&mut p, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    p.server.conn(h).unwrap().set_qlog(Box::new(tx));
    super::peer_errors::inject(
        &mut p,
        crate::conn::SpaceId::Data,
        &[crate::wire::frame::Frame::PathChallenge([0x5a; 8])],
    );
    client_pings_from(&mut p, ch, c);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, c);
    assert_eq!(path_responses_sent(&mut p, &rx, &[0x5a]), vec![(0x5a, b)]);
}

/// Reads the frames sent from the server's qlog, hence the feature.
#[cfg(feature = "qlog")]
#[test]
fn a_path_response_owed_survives_a_move_and_a_return_before_the_server_sends() {
    // RFC 9000 §8.2.2: "On receiving a PATH_CHALLENGE frame, an endpoint MUST respond", on the path it
    // came from. A PATH_CHALLENGE from the client's address A is still unanswered when a packet from B
    // moves the connection (the answer is to go with the challenge to A, §9.3.3), and a newer packet
    // from A brings it back before the server sent anything (both in one batch of datagrams, as a
    // forwarded copy and the client's next packet arrive): the answer still goes, to A.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = NEW.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    p.server.conn(h).unwrap().set_qlog(Box::new(tx));
    inject(&mut p, SpaceId::Data, &[Frame::PathChallenge([0x6b; 8])]);
    client_pings_from(&mut p, ch, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    client_pings_from(&mut p, ch, a);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, a);
    assert_eq!(path_responses_sent(&mut p, &rx, &[0x6b]), vec![(0x6b, a)]);
}

/// Reads the frames sent from the server's qlog, hence the feature.
#[cfg(feature = "qlog")]
#[test]
fn a_path_response_owed_to_the_path_left_survives_a_challenge_on_the_new_path() {
    // RFC 9000 §8.2.2: every PATH_CHALLENGE is answered, on the path it came from. One from the
    // client's address A is still unanswered when the client's packet from B moves the connection,
    // carrying a PATH_CHALLENGE of its own (as a client migrating validates the new path at once): the
    // answer to the first goes to A, the answer to the second to B.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = NEW.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    p.server.conn(h).unwrap().set_qlog(Box::new(tx));
    inject(&mut p, SpaceId::Data, &[Frame::PathChallenge([0x6b; 8])]);
    {
        // The client's next packet carries PATH_CHALLENGE 5c..5c beside its PING.
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        conn.path_validation = Some(Box::new(crate::conn::path::PathValidation {
            data: [0x5c; 8],
            pending: true,
            deadline: p.now + Duration::from_secs(30),
            resend_at: p.now + Duration::from_secs(30),
            resend_after: Duration::from_secs(30),
            expanded: false,
            earlier: None,
            previous: None,
            old_path: None,
        }));
    }
    client_pings_from(&mut p, ch, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    assert_eq!(
        path_responses_sent(&mut p, &rx, &[0x6b, 0x5c]),
        vec![(0x5c, b), (0x6b, a)]
    );
}

#[test]
fn a_new_ip_starts_from_the_base_mtu_and_a_failed_validation_restores_the_old_path() {
    // RFC 9000 §14: the path MTU is per pair of addresses, so a new peer IP starts again from 1200 bytes
    // (and datagrams to it stay within that); §9.4 resets congestion control and RTT for it. When its
    // validation fails the connection goes back (§9.3.2) to the old path and what it knew of it.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    p.client.conn(ch).unwrap().ping();
    p.run(Duration::from_secs(2));
    let (mtu, cwnd, srtt) = {
        let conn = &p.server.table.get(h).unwrap().conn;
        (conn.path.mtu, conn.stats().cwnd, conn.recovery.rtt().smoothed())
    };
    assert!(mtu > 1200, "path MTU discovery went above the base: {mtu}");
    let new: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let old_cid = p.server.table.get(h).unwrap().conn.remote_cid;
    client_pings_from(&mut p, ch, new);
    let (deadline, new_seq) = {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, new);
        // RFC 9000 §9.5: the new address gets a connection ID of its own.
        assert_ne!(conn.remote_cid, old_cid);
        assert_eq!(conn.path.mtu, 1200);
        assert_eq!(
            conn.recovery.rtt().smoothed(),
            TransportConfig::default().initial_rtt
        );
        (
            conn.path_validation.as_ref().unwrap().deadline,
            conn.remote_cid_seq,
        )
    };
    // Nothing reaches the new address (nor the old one): the validation fails.
    let mut buf = Vec::new();
    loop {
        while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
            if t.destination == new {
                assert!(t.datagrams(&buf).all(|d| d.len() <= 1200));
            }
        }
        match p.server.poll_timeout() {
            Some(t) if t <= deadline => {
                p.now = p.now.max(t);
                p.server.handle_timeout(p.now);
            }
            _ => break,
        }
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.stats().path_validation_failures, 1);
    assert_eq!(conn.path.remote, CLIENT.parse().unwrap());
    assert!(conn.path.validated);
    assert_eq!(conn.path.mtu, mtu);
    assert_eq!(conn.recovery.rtt().smoothed(), srtt);
    assert_eq!(conn.stats().cwnd, cwnd);
    // The old path's ID is in use again, and the one the new address saw is retired.
    assert_eq!(conn.remote_cid, old_cid);
    assert!(conn.retired_spares.contains(&new_seq));
    assert!(conn.peer_cids.iter().all(|(s, ..)| *s != new_seq));
}

#[test]
fn a_late_new_connection_id_for_the_spare_of_an_off_path_answer_is_not_taken_again() {
    // RFC 9000 §5.1.2, §19.15: the spare connection ID taken to answer a probe from a new address (§9.5)
    // is retired once the answer goes. A copy of its NEW_CONNECTION_ID arriving before then (a
    // retransmission) is the same frame again: it must not put the ID back among the spares, where it
    // would stay, retired, to be used later.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    p.run(Duration::from_millis(100));
    let probe_from: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let data = [0x5a; 8];
    {
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        queue_probe(conn, data, p.now);
    }
    p.client.after_conn(ch, true);
    client_to_server_from(&mut p, probe_from);
    let spare = p
        .server
        .table
        .get(h)
        .unwrap()
        .conn
        .off_path_response
        .as_ref()
        .and_then(|r| r.spare);
    let Some(spare) = spare else {
        panic!("the answer takes a spare ID of the client's");
    };
    // The client sends the NEW_CONNECTION_ID of that ID again, from its usual address, before the server
    // sends anything.
    {
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        conn.path_validation = None;
        conn.local_cids.pending.push(spare);
        conn.ping();
    }
    p.client.after_conn(ch, true);
    let client: SocketAddr = CLIENT.parse().unwrap();
    client_to_server_from(&mut p, client);
    assert_eq!(server_to_client_at(&mut p, probe_from), 1, "the answer went");
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(!conn.is_closed(), "{:?}", conn.state);
    assert!(
        conn.remote_cid_seq != spare && conn.peer_cids.iter().all(|(s, ..)| *s != spare),
        "sequence {spare} was retired with the answer and is held again: {:?}",
        conn.peer_cids.iter().map(|(s, ..)| *s).collect::<Vec<_>>()
    );
}

#[test]
fn a_lost_path_challenge_goes_again_with_new_data_and_an_answer_to_the_old_one_still_counts() {
    // RFC 9000 §13.3: "PATH_CHALLENGE frames include a different payload each time they are sent";
    // §8.2.2: a response to a previous challenge (its loss may have been spurious) still validates.
    let (mut p, h, _) = moved_with_the_challenge_lost();
    let validation = |p: &Pair| {
        let v = p
            .server
            .table
            .get(h)
            .unwrap()
            .conn
            .path_validation
            .as_ref()
            .unwrap();
        (v.data, v.pending)
    };
    let (first, pending) = validation(&p);
    assert!(!pending, "the challenge went out");
    p.server
        .table
        .get_mut(h)
        .unwrap()
        .conn
        .on_path_challenge_lost(first);
    let (second, pending) = validation(&p);
    assert!(pending, "a challenge goes again");
    assert_ne!(second, first, "with new data");
    assert!(!p.server.table.get(h).unwrap().conn.path.validated);
    inject(&mut p, SpaceId::Data, &[Frame::PathResponse(first)]);
    assert!(p.server.table.get(h).unwrap().conn.path.validated);
    // Sent within the anti-amplification limit, below 1200 bytes, it validated the address only: the
    // MTU check follows, with data of its own.
    let (third, pending) = validation(&p);
    assert!(pending && third != first && third != second);
}

/// A server in the middle of a download to the client, its window towards the client's address full
/// of data that will never arrive there (the client's old NAT mapping is gone).
fn downloading_with_a_full_window() -> (Pair, ConnectionHandle, ConnectionHandle) {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    for fill in [5, 6] {
        let mut conn = p.server.conn(h).unwrap();
        let id = conn.open_uni().unwrap();
        conn.stream(id).write(&vec![fill; 1_000_000]).unwrap();
        drop(conn);
        if fill == 5 {
            // Long enough for the window to grow past its initial size.
            p.run(Duration::from_millis(30));
        }
    }
    for _ in 0..50 {
        server_sends_reaching(&mut p, nowhere());
        p.now += Duration::from_millis(1);
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(
        conn.recovery.bytes_in_flight() + 1200 > conn.cc.window(),
        "the window is full"
    );
    (p, h, ch)
}

/// The client (`ch`) pings from `to`; the server (`h`) follows it there and sends its PATH_CHALLENGE
/// at once, whatever its window towards the old address holds.
fn moves_and_is_challenged_at_once(p: &mut Pair, h: ConnectionHandle, ch: ConnectionHandle, to: SocketAddr) {
    client_pings_from(p, ch, to);
    let sent = server_sends_reaching(p, nowhere());
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, to);
    assert!(
        conn.path_validation.as_ref().is_some_and(|v| !v.pending),
        "no PATH_CHALLENGE to {to}: {sent:?}"
    );
}

/// RFC 9000 §9.4: "Packets sent on the old path MUST NOT contribute to congestion control ... for the
/// new path". The client moves to another IP address while the server's window towards the old one is
/// full: the new path's fresh controller counts none of those bytes, so the PATH_CHALLENGE (§9.3)
/// goes at once. Before, the old path's bytes in flight held everything back, the challenge included.
#[test]
fn old_path_bytes_in_flight_do_not_hold_back_the_new_paths_challenge() {
    let (mut p, h, ch) = downloading_with_a_full_window();
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    moves_and_is_challenged_at_once(&mut p, h, ch, b);
    // The old path's packets are still tracked, for loss and retransmission.
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.recovery.bytes_in_flight() > conn.recovery.path_bytes_in_flight());
}

/// The consequence: a client that moves during a download, and answers everything sent to its new
/// address, stays reached there. Before, the challenge could not go, the ACK of the client's PING used
/// up the amplification allowance (so no PTO was armed), and the validation failed after 3 s: the
/// server went back to the address the client had left.
#[test]
fn a_client_that_moves_during_a_download_is_followed() {
    let (mut p, h, ch) = downloading_with_a_full_window();
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    client_pings_from(&mut p, ch, b);
    exchange_at(&mut p, b, Duration::from_secs(10));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, b);
    assert_eq!(conn.stats().path_validation_failures, 0);
    assert!(conn.path.validated);
}

/// The client moved from its handshake address to `B` with a small packet, and answered the server's
/// challenge: B's address is validated, and the second, 1200-byte check of the path is under way
/// (RFC 9000 §8.2.3: "the path is validated but not the path MTU").
fn moved_to_b_and_b_validated() -> (Pair, ConnectionHandle, ConnectionHandle, SocketAddr) {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    client_pings_from(&mut p, ch, b);
    server_to_client_at(&mut p, b);
    client_to_server_from(&mut p, b);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, b);
    assert!(conn.path.validated);
    assert!(conn.path_validation.as_ref().is_some_and(|v| !v.expanded));
    (p, h, ch, b)
}

/// RFC 9000 §9.3.3: "In response to an apparent migration, endpoints MUST validate the previously
/// active path": a packet from C during B's second check challenges B, the path left. Before, the
/// move kept the challenge to the handshake address and sent nothing to B.
#[test]
fn a_move_away_from_a_validated_address_challenges_it_during_its_mtu_check() {
    let (mut p, h, ch, b) = moved_to_b_and_b_validated();
    let c: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    client_pings_from(&mut p, ch, c);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, c);
    let sent = server_sends_reaching(&mut p, nowhere());
    assert!(
        sent.iter().any(|&(to, size)| to == b && size >= 1200),
        "no challenge to B: {sent:?}"
    );
}

/// RFC 9000 §9.3.2: "an endpoint MUST revert to using the last validated peer address when validation
/// of a new peer address fails": when C's validation fails, the connection goes back to B, validated
/// after the handshake address. Before, it went back to the handshake address, which the client had
/// left.
#[test]
fn a_failed_validation_returns_to_the_last_validated_address() {
    let (mut p, h, ch, b) = moved_to_b_and_b_validated();
    let c: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    client_pings_from(&mut p, ch, c);
    let end = p.now + Duration::from_secs(30);
    while p
        .server
        .table
        .get(h)
        .unwrap()
        .conn
        .stats()
        .path_validation_failures
        == 0
    {
        server_sends_reaching(&mut p, nowhere());
        let next = p.server.poll_timeout().filter(|&t| t <= end);
        p.now = p.now.max(next.expect("C's validation ends"));
        p.server.handle_timeout(p.now);
    }
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
}

/// RFC 9000 §9.3: "After verifying a new client address, the server SHOULD send new address validation
/// tokens": the one sent after the handshake is bound to the address the client left. A move to
/// another port of the same address needs none. Before, tokens went only after the handshake.
#[test]
fn a_validated_new_client_address_gets_new_tokens() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let after_handshake = p.server.stats().new_tokens_issued;
    assert!(after_handshake >= 1, "a token after the handshake");
    let move_to = |p: &mut Pair, to: SocketAddr| {
        for _ in 0..4 {
            p.client.conn(ch).unwrap().ping();
            client_to_server_from(p, to);
            server_to_client_at(p, to);
            p.now += Duration::from_millis(10);
        }
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, to);
        assert!(conn.path.validated && conn.path_validation.is_none());
    };
    move_to(&mut p, "198.51.100.7:6000".parse().unwrap());
    let after_move = p.server.stats().new_tokens_issued;
    assert_eq!(after_move, 2 * after_handshake);
    move_to(&mut p, "198.51.100.7:6001".parse().unwrap());
    assert_eq!(
        p.server.stats().new_tokens_issued,
        after_move,
        "same address, no new token"
    );
}

/// A NEW_TOKEN token made for the address the client left, in flight when the client moves and lost
/// afterwards, is not sent again, to the new address: the client would file a token bound to an
/// address it no longer has, newest of all, and use it first. Before (in this session's first version
/// of new tokens after a move), it was.
#[test]
fn a_token_for_the_address_left_lost_in_flight_is_not_sent_again() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    // Empty the client's store of what the handshake gave it.
    filed_tokens(&mut p);
    // A token for the client's first address, waiting at the server (as after the handshake)...
    let stale = bytes::Bytes::from_static(&[0xAB; 40]);
    p.server
        .table
        .get_mut(h)
        .unwrap()
        .conn
        .new_tokens
        .queue(stale.clone(), CLIENT.parse::<SocketAddr>().unwrap().ip());
    p.server.conn(h).unwrap().ping();
    // ... goes out to the first address, and the client has left it: lost.
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    assert_eq!(server_to_client_at(&mut p, b), 0);
    assert!(
        !p.server
            .table
            .get(h)
            .unwrap()
            .conn
            .new_tokens
            .has_pending(CLIENT.parse::<SocketAddr>().unwrap().ip()),
        "in flight"
    );
    for _ in 0..40 {
        client_pings_from(&mut p, ch, b);
        server_to_client_at(&mut p, b);
        p.now += Duration::from_millis(50);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
    {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, b);
        assert!(conn.path.validated);
    }
    let filed = filed_tokens(&mut p);
    assert!(!filed.is_empty(), "new tokens for the new address");
    assert!(
        !filed.contains(&stale),
        "the token for the address left was sent again after its loss: {} filed",
        filed.len()
    );
}

/// A forwarded copy of a client packet from another address (RFC 9000 §9.3.3), then the client's next
/// packet from its own address: the server moves to B and comes back to A at once. Back on A, with A's
/// controller restored, A's own packets still in flight count against A's window again. Before (in
/// this session's first version of per-path bytes in flight), they did not, and the server sent a
/// further full window on A: twice the window in flight on one path, their losses ignored by the
/// controller, and with a forwarder repeating it each round trip, congestion control off.
#[test]
fn returning_to_a_path_keeps_its_own_bytes_in_flight_in_its_window() {
    let (mut p, h, ch) = downloading_with_a_full_window();
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let (in_flight_on_a, window) = {
        let conn = &p.server.table.get(h).unwrap().conn;
        (conn.recovery.bytes_in_flight(), conn.cc.window())
    };
    // A copy of the client's packet, forwarded from B, arrives first...
    client_pings_from(&mut p, ch, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    server_sends_reaching(&mut p, nowhere());
    // ... then the client's next packet from its own address: back to A.
    p.now += Duration::from_millis(1);
    client_pings_from(&mut p, ch, a);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, a);
    let sent_to_a: usize = server_sends_reaching(&mut p, nowhere())
        .iter()
        .filter(|(to, _)| *to == a)
        .map(|(_, len)| len)
        .sum();
    let window_now = p.server.table.get(h).unwrap().conn.cc.window();
    assert_eq!(window_now, window, "A's controller restored");
    assert!(
        in_flight_on_a + sent_to_a as u64 <= window + 1500,
        "{in_flight_on_a} bytes were in flight on A with a window of {window}, and {sent_to_a} more went to A \
         on the return"
    );
}

/// A forwarded copy of a client packet from another IP address (RFC 9000 §9.3.3), then the client's
/// next packet from its own address: the server moves to B and comes straight back to A. The NEW_TOKEN
/// token waiting for A (the client's address all along) still reaches the client: tokens wait for the
/// address they were made for. Before (this session's first version of dropping tokens at a move), it
/// was dropped at the move and never replaced.
#[test]
fn a_token_waiting_survives_a_move_and_return() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    filed_tokens(&mut p);
    let tok = bytes::Bytes::from_static(&[0xCD; 40]);
    p.server
        .table
        .get_mut(h)
        .unwrap()
        .conn
        .new_tokens
        .queue(tok.clone(), a.ip());
    // A copy of the client's packet arrives from B first; the server sends nothing in between.
    client_pings_from(&mut p, ch, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    // The client's next packet, from A: back on A.
    p.now += Duration::from_millis(1);
    client_pings_from(&mut p, ch, a);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, a);
    for _ in 0..20 {
        server_to_client_at(&mut p, a);
        client_pings_from(&mut p, ch, a);
        p.now += Duration::from_millis(50);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
    let filed = filed_tokens(&mut p);
    assert!(
        filed.contains(&tok),
        "the token for A, the client's address after the return, was never sent ({} filed)",
        filed.len()
    );
}

/// A congestion event on B (a path being validated), then a return to A: once B's losses prove
/// spurious, the undo does not put B's saved controller in place of A's restored one (the saved one
/// belongs to the path left, and goes with it). Before, it did, once a return had set the first packet
/// number of the path back.
#[test]
fn an_undo_from_the_path_left_does_not_replace_the_returned_paths_controller() {
    let (mut p, h, ch) = downloading_with_a_full_window();
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let window_a = p.server.table.get(h).unwrap().conn.cc.window();
    client_pings_from(&mut p, ch, b);
    server_sends_reaching(&mut p, nowhere());
    let (pn, window_b) = {
        let conn = &mut p.server.table.get_mut(h).unwrap().conn;
        assert_eq!(conn.path.remote, b);
        // A loss of a packet sent on B: a congestion event on B's controller.
        let pn = conn.recovery.next_packet_number(SpaceId::Data) - 1;
        assert!(pn >= conn.recovery.path_first_pn());
        let lost = crate::conn::recovery::SentPacket {
            time_sent: p.now,
            size: 1200,
            ack_eliciting: true,
            in_flight: true,
            mtu_probe: false,
            ecn_marked: false,
            data: crate::conn::SentFrames::EMPTY,
        };
        let window_b = conn.cc.window();
        conn.on_packets_lost(p.now, SpaceId::Data, vec![(pn, lost)], false, None);
        assert!(conn.cc.window() < window_b, "a congestion event on B");
        (pn, window_b)
    };
    // Back to A.
    p.now += Duration::from_millis(1);
    client_pings_from(&mut p, ch, a);
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    assert_eq!(conn.path.remote, a);
    assert_eq!(conn.cc.window(), window_a, "A's controller restored");
    // B's loss proves spurious (the packet is acknowledged late).
    conn.on_spurious_losses(p.now, SpaceId::Data, &[pn]);
    assert_eq!(
        conn.cc.window(),
        window_a,
        "A's controller replaced by B's saved one (B's window was {window_b})"
    );
}

/// Takes every token the client filed for the server out of its store.
fn filed_tokens(p: &mut Pair) -> Vec<bytes::Bytes> {
    let mut filed = Vec::new();
    if let Some(store) = p.client.config.token_store.as_mut() {
        while let Some(t) = store.take("localhost") {
            filed.push(t);
        }
    }
    filed
}

/// A congestion event on A, the client's own path; a forwarded copy from B moves the server there and
/// the client's next packet brings it straight back (a return, with A's controller restored). A's loss
/// then proves spurious: the undo of A's own event on A still applies, its saved controller having
/// left and come back with the path. Before (when 7472469 cleared the undo at every move), it was lost.
#[test]
fn an_undo_on_the_returned_path_still_applies() {
    let (mut p, h, ch) = downloading_with_a_full_window();
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let (pn, window_before) = {
        let conn = &mut p.server.table.get_mut(h).unwrap().conn;
        let pn = conn.recovery.next_packet_number(SpaceId::Data) - 1;
        assert!(pn >= conn.recovery.path_first_pn());
        let lost = crate::conn::recovery::SentPacket {
            time_sent: p.now,
            size: 1200,
            ack_eliciting: true,
            in_flight: true,
            mtu_probe: false,
            ecn_marked: false,
            data: crate::conn::SentFrames::EMPTY,
        };
        let window_before = conn.cc.window();
        conn.on_packets_lost(p.now, SpaceId::Data, vec![(pn, lost)], false, None);
        assert!(conn.cc.window() < window_before, "a congestion event on A");
        (pn, window_before)
    };
    // A copy from B, then the client's own next packet from A: there and back.
    client_pings_from(&mut p, ch, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    server_sends_reaching(&mut p, nowhere());
    p.now += Duration::from_millis(1);
    client_pings_from(&mut p, ch, a);
    let conn = &mut p.server.table.get_mut(h).unwrap().conn;
    assert_eq!(conn.path.remote, a);
    // A's loss proves spurious.
    conn.on_spurious_losses(p.now, SpaceId::Data, &[pn]);
    assert_eq!(
        conn.cc.window(),
        window_before,
        "A's own spurious congestion event not undone after the return (undone: {})",
        conn.stats.congestion_events_undone
    );
}

/// RFC 9000 §9: "An endpoint MUST NOT initiate connection migration before the handshake is
/// confirmed" — and a server follows none before its handshake is confirmed either (§9.3 applies to
/// packets received after it). The client's Finished comes with a 1-RTT packet (its stream data) from a
/// new address before the server is confirmed: the datagram is dropped, and the connection stays at
/// the client's first address, where the same datagram then completes the handshake.
#[test]
fn a_new_client_address_before_the_handshake_is_confirmed_moves_nothing() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let client: SocketAddr = CLIENT.parse().unwrap();
    let moved: SocketAddr = "192.0.2.1:6000".parse().unwrap();
    client_to_server_from(&mut p, client);
    server_to_client_at(&mut p, client);
    let (ch, _) = p.client.table.iter().next().unwrap();
    {
        let mut conn = p.client.conn(ch).unwrap();
        assert!(!conn.is_handshaking(), "the client has the server's flight");
        let id = conn.open_uni().unwrap();
        assert_eq!(conn.stream(id).write(b"early").unwrap(), 5);
    }
    let mut buf = Vec::new();
    let mut flight = Vec::new();
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf) {
        flight.extend(t.datagrams(&buf).map(BytesMut::from));
    }
    let (sh, _) = p.server.table.iter().next().unwrap();
    let dropped = p.server.conn(sh).unwrap().stats().packets_dropped;
    for d in &flight {
        p.server.handle_datagram(p.now, datagram(moved, d.clone()));
    }
    {
        let conn = &p.server.table.get(sh).unwrap().conn;
        assert_eq!(conn.path.remote, client, "the server followed the client");
        assert!(
            !conn.handshake_complete,
            "the datagram from the new address was processed"
        );
        assert!(conn.stats.packets_dropped > dropped);
    }
    for d in &flight {
        p.server.handle_datagram(p.now, datagram(client, d.clone()));
    }
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(conn.handshake_complete);
    assert_eq!(conn.path.remote, client);
}

/// RFC 9000 §9: only the client migrates; a client does not follow a server to another address (we
/// use no preferred_address, §9.6). A packet of the server's arriving from elsewhere is dropped, not
/// processed, and the client keeps sending to the server's address.
#[test]
fn a_client_does_not_follow_the_server_to_a_new_address() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    let elsewhere: SocketAddr = "192.0.2.9:443".parse().unwrap();
    p.server.conn(sh).unwrap().ping();
    let mut buf = Vec::new();
    let mut pings = Vec::new();
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        pings.extend(t.datagrams(&buf).map(BytesMut::from));
    }
    assert!(!pings.is_empty());
    let before = p.client.conn(ch).unwrap().stats();
    for d in pings {
        p.client.handle_datagram(p.now, datagram(elsewhere, d));
    }
    let after = p.client.conn(ch).unwrap().stats();
    assert_eq!(after.packets_received, before.packets_received, "processed");
    assert!(after.packets_dropped > before.packets_dropped);
    p.run(Duration::from_secs(1));
    let conn = &p.client.table.get(ch).unwrap().conn;
    assert_eq!(conn.path.remote, server);
}

/// RFC 9000 §9.4: "Packets sent on the old path MUST NOT contribute to congestion control ... for the
/// new path", and §9.3: the server "MUST perform path validation" on a change of the peer's address.
/// A NAT rebinding (only the client's port changes) while the server's window towards the old port is
/// full: the PATH_CHALLENGE must still go to the new port at once. Found by the randomized quinn-proto
/// soak (a quinn-proto client rebinding during a download): the challenge waited for a window that
/// packets lost at the old port kept full, the ACK of the client's packet used up the amplification
/// allowance (so no PTO was armed), validation failed after three PTOs, and the server went back to
/// the port the NAT had closed: the connection died by idle timeout.
#[test]
fn a_nat_rebinding_during_a_download_gets_its_challenge_at_once() {
    let (mut p, h, ch) = downloading_with_a_full_window();
    let b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
    assert_eq!(
        b.ip(),
        CLIENT.parse::<SocketAddr>().unwrap().ip(),
        "only the port changes"
    );
    moves_and_is_challenged_at_once(&mut p, h, ch, b);
}

/// Only our own PATH_CHALLENGE goes beyond a full congestion window: a peer sending PATH_CHALLENGE after
/// PATH_CHALLENGE in tiny packets gets its answers within the window (found in review: when a PATH_RESPONSE
/// owed also went beyond it, 200 challenges of about 50 bytes each drew 200 datagrams of 1200 bytes and
/// 425,856 bytes in flight against a window of 186,240; RFC 9002 §7).
#[test]
fn a_path_challenge_flood_is_answered_within_the_window() {
    let (mut p, h, _ch) = downloading_with_a_full_window();
    let window = p.server.table.get(h).unwrap().conn.cc.window();
    for i in 0..200u64 {
        inject(&mut p, SpaceId::Data, &[Frame::PathChallenge(i.to_be_bytes())]);
        server_sends_reaching(&mut p, nowhere());
        p.now += Duration::from_micros(500);
    }
    let in_flight = p
        .server
        .table
        .get(h)
        .unwrap()
        .conn
        .recovery
        .path_bytes_in_flight();
    assert!(
        in_flight <= window + 2 * 1500,
        "{in_flight} bytes in flight against a window of {window}"
    );
}

/// A stateless reset from `from` ending with `token`: a short header to no connection ID of the server's.
fn reset_from(from: SocketAddr, token: &crate::wire::ResetToken) -> Datagram {
    let mut d = vec![0x41, 0x9e, 0x17, 0x5c, 0x3a, 0x08, 0x61, 0xd2, 0x4f];
    d.resize(43 - token.0.len(), 0x5c);
    d.extend_from_slice(&token.0);
    datagram(from, BytesMut::from(&d[..]))
}

/// The client moved to `NEW` and the server took a spare ID of the client's there: the ID the old path
/// used still carries the challenge to the old address (RFC 9000 §9.3.3, §9.5). Returns the pair, the
/// server's handle and that ID's stateless reset token. The server first moves off the client's
/// handshake ID (sequence 0), which has no token (a client cannot give one, §18.2).
fn moved_with_the_old_paths_id_held() -> (Pair, ConnectionHandle, crate::wire::ResetToken) {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    {
        let conn = &mut p.server.table.get_mut(h).unwrap().conn;
        assert_eq!(conn.remote_reset_token, None);
        let (seq, id, token) = conn.take_lowest_spare().unwrap();
        let (old, ..) = conn.use_peer_cid(seq, id, Some(token));
        conn.retire_spare(old);
    }
    p.server.after_conn(h, true);
    p.run(Duration::from_millis(100));
    client_pings_from(&mut p, ch, NEW.parse().unwrap());
    let conn = &p.server.table.get(h).unwrap().conn;
    let challenge = conn
        .path_validation
        .as_ref()
        .and_then(|v| v.old_path.as_ref())
        .unwrap();
    assert!(challenge.spare, "the new path took a spare ID");
    assert_ne!(challenge.dcid, conn.remote_cid);
    let token = p.client.reset_key.token(&challenge.dcid);
    assert_eq!(challenge.reset_token, Some(token));
    // The challenge goes to the old address with that ID (and is lost).
    let sent = server_sends_reaching(&mut p, nowhere());
    assert!(sent.iter().any(|&(to, _)| to == CLIENT.parse().unwrap()));
    (p, h, token)
}

/// RFC 9000 §10.3.1: an endpoint compares the last 16 bytes of a datagram with "all stateless reset
/// tokens associated with the connection IDs and remote addresses for datagrams it has recently sent",
/// unused and retired IDs excepted. While the new path is validated, the server still sends to the old
/// address with the ID that path used: a reset from there with that ID's token ends the connection.
/// Before, only the token of the ID in use (the new path's) was compared, and the reset was answered
/// with a reset of the server's own.
#[test]
fn a_reset_with_the_token_of_the_old_paths_connection_id_ends_the_connection() {
    let (mut p, h, token) = moved_with_the_old_paths_id_held();
    p.server
        .handle_datagram(p.now, reset_from(CLIENT.parse().unwrap(), &token));
    assert_eq!(p.server.stats().stateless_resets_received, 1);
    assert!(
        server_sends_reaching(&mut p, nowhere()).is_empty(),
        "nothing after a reset"
    );
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    assert_eq!(
        Pair::lost(&p.server_events),
        Some(&crate::event::ConnectionError::Reset)
    );
    assert!(p.server.conn(h).is_err() || p.server.table.get(h).unwrap().conn.is_closed());
}

/// RFC 9000 §10.3.1: "An endpoint MUST NOT check for any stateless reset tokens associated with
/// connection IDs it has not used or for connection IDs that have been retired." Once the new path is
/// validated the old path's ID is retired, and its token resets nothing; the spares' tokens never did.
#[test]
fn the_tokens_of_retired_and_unused_connection_ids_reset_nothing() {
    let (mut p, h, token) = moved_with_the_old_paths_id_held();
    let ch = p.client.table.iter().next().unwrap().0;
    let new: SocketAddr = NEW.parse().unwrap();
    exchange_at(&mut p, new, Duration::from_secs(2));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.path.validated && conn.path_validation.is_none());
    let spares: Vec<_> = conn.peer_cids.iter().map(|(_, _, t)| *t).collect();
    assert!(!spares.is_empty());
    for t in spares.iter().chain([&token]) {
        p.server.handle_datagram(p.now, reset_from(new, t));
        p.server
            .handle_datagram(p.now, reset_from(CLIENT.parse().unwrap(), t));
    }
    assert_eq!(p.server.stats().stateless_resets_received, 0);
    // The connection goes on.
    client_pings_from(&mut p, ch, new);
    assert!(server_to_client_at(&mut p, new) > 0);
    assert!(!p.server.table.get(h).unwrap().conn.is_closed());
}

/// Found by the soak test (`tests/soak.rs`, seed 3363): after an outage both sides' PTOs have backed
/// off far beyond the server's validation timeout (RFC 9000 §8.2.4: three PTOs, not backed off). The
/// client, rebound meanwhile, comes back from a new address; the one datagram the server sends there,
/// its PATH_CHALLENGE with the ACK, is lost. The challenge, declared lost only once a later packet is
/// acknowledged, after the next (backed-off) PTO of either side, was never sent again before the
/// validation gave up: the server went back to the address the client had left, and (each later
/// probe of the client's meeting the same fate) both sides waited for the idle timeout. RFC 9000
/// §8.2.1 ("MAY send multiple PATH_CHALLENGE frames to guard against packet loss") and §9.4 (a timer
/// of the challenge's own, set as a PTO and restarted for longer each time) make it go again in time.
#[test]
fn a_lost_path_challenge_goes_again_before_the_validation_gives_up_after_an_outage() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    // Each side's last packet is acknowledged, so that what comes after the outage acknowledges nothing
    // new (which would reset the PTO backoff, RFC 9002 §6.2.1).
    p.client.conn(ch).unwrap().ping();
    p.run(Duration::from_secs(2));
    p.server.conn(h).unwrap().ping();
    p.run(Duration::from_secs(1));
    // An outage: whatever either side sends is lost, until both PTOs have backed off beyond the 3 s
    // that validating a new address may take.
    let mut conn = p.server.conn(h).unwrap();
    let id = conn.open_uni().unwrap();
    conn.stream(id).write(&[7; 5_000]).unwrap();
    drop(conn);
    p.client.conn(ch).unwrap().ping();
    let backed_off = |e: &crate::Endpoint, h: ConnectionHandle| {
        let conn = &e.table.get(h).unwrap().conn;
        let backoff = 1u32 << conn.recovery.pto_count().min(20);
        conn.pto().saturating_mul(backoff) > Duration::from_secs(4)
    };
    let outage_end = p.now + Duration::from_secs(20);
    while !(backed_off(&p.server, h) && backed_off(&p.client, ch)) {
        server_sends_reaching(&mut p, nowhere());
        let mut buf = Vec::new();
        while p.client.poll_transmit(p.now, &mut buf).is_some() {}
        assert!(p.advance_to_next_deadline(outage_end), "both back off");
    }
    server_sends_reaching(&mut p, nowhere());
    // The client, rebound meanwhile, sends data from its new address (a datagram large enough for the
    // server to challenge it twice within the anti-amplification limit, RFC 9000 §8.1); the server's
    // answer there, its challenge with an ACK, is lost.
    let new: SocketAddr = NEW.parse().unwrap();
    let mut conn = p.client.conn(ch).unwrap();
    let id = conn.open_uni().unwrap();
    conn.stream(id).write(&[9; 1_000]).unwrap();
    drop(conn);
    let received = client_to_server_from(&mut p, new);
    assert!(received >= 1_000, "{received} bytes from the new address");
    server_sends_reaching(&mut p, nowhere());
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, new);
    assert!(conn.path_validation.as_ref().is_some_and(|v| !v.pending));
    assert!(
        backed_off(&p.server, h) && backed_off(&p.client, ch),
        "the move acknowledged nothing new"
    );
    // From now on everything between the client's new address and the server arrives.
    exchange_at(&mut p, new, Duration::from_secs(10));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.stats().path_validation_failures, 0);
    assert_eq!(conn.path.remote, new);
    assert!(conn.path.validated);
}

/// Found by the soak test (`tests/soak.rs`, seed 6392): the server's HANDSHAKE_DONE, and the ACK of the
/// client's Finished, are lost (bursty loss). The server, confirmed and without Handshake keys, drops
/// the client's Handshake retransmissions; the client, not confirmed, arms no PTO for 1-RTT data (RFC
/// 9002 §6.2.1) and sends no keep-alive while those are in flight. Flow-control blocked, it sends
/// nothing else: when it is then rebound, nothing it sends is a 1-RTT packet that could show the server
/// its new address, everything the server sends goes to the old one, and both wait for the idle
/// timeout. RFC 9001 §4.1.2: "a client MAY consider the handshake to be confirmed when it receives an
/// acknowledgment for a 1-RTT packet", which only a server whose handshake is complete can send.
#[test]
fn an_acknowledged_1rtt_packet_confirms_the_handshake_at_the_client() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let client: SocketAddr = CLIENT.parse().unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    // The handshake, until the server has the client's Finished; what the server sends then (its
    // HANDSHAKE_DONE) is lost.
    for round in 0.. {
        assert!(round < 10, "the handshake completes at the server");
        client_to_server_from(&mut p, client);
        let server = p.server.table.iter().next();
        if server.is_some_and(|(_, e)| e.conn.handshake_confirmed) {
            break;
        }
        server_sends_reaching(&mut p, client);
    }
    let h = p.server.table.iter().next().unwrap().0;
    server_sends_reaching(&mut p, nowhere());
    let conn = &p.client.table.get(ch).unwrap().conn;
    assert!(conn.handshake_complete && !conn.handshake_confirmed);
    // A 1-RTT PING of the client's is acknowledged; the server sends nothing else.
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, client);
    p.now += Duration::from_millis(30);
    p.server.handle_timeout(p.now);
    let sent = server_sends_reaching(&mut p, client);
    assert!(!sent.is_empty(), "the server acknowledges the PING");
    assert!(!p.server.table.get(h).unwrap().conn.handshake_done_acked);
    let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
    assert!(
        conn.handshake_confirmed,
        "an ACK of a 1-RTT packet confirms the handshake"
    );
    // Handshake keys go (RFC 9001 §4.9.2): nothing more is sent with them, nothing waits for their PTO.
    assert!(conn.spaces.live_mut(SpaceId::Handshake.index()).is_none());
}

/// Found by the soak test (`tests/soak.rs`, seed 50822): after an outage the client, rebound meanwhile,
/// has nothing new to send and sends only its PTO probes (small PINGs) from its new address, which let
/// the server send there no more than three times their size (RFC 9000 §8.1). The server spent the
/// whole allowance on one datagram, its PATH_CHALLENGE padded to the allowance (still short of the 1200
/// bytes that validate the path MTU too, so of no use): when it was lost, the challenge's own timer
/// (§9.4) found nothing left to send the next with, which waited for the client's next probes, backed
/// off by seconds, and two losses in a row failed the validation. RFC 9000 §8.2.1 asks for 1200 bytes
/// "unless the anti-amplification limit for the path does not permit sending a datagram of this size":
/// then the challenge goes unpadded, and what it leaves of the allowance carries the next ones.
#[test]
fn a_path_challenge_held_by_the_amplification_limit_goes_again_within_it() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let new: SocketAddr = NEW.parse().unwrap();
    // One PING from the new address, as from a client with nothing else to send.
    let received = client_pings_from(&mut p, ch, new);
    assert!(3 * received < 1200, "a small first packet: {received}");
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, new);
    let end = conn.path_validation.as_ref().unwrap().deadline - Duration::from_millis(1);
    // The challenge the server sent last, if it is not waiting to be sent.
    let sent_challenge = |p: &Pair| {
        let v = p.server.table.get(h).unwrap().conn.path_validation.as_ref();
        v.filter(|v| !v.pending).map(|v| v.data)
    };
    // The server's first challenge there is lost; the client sends nothing more meanwhile (its own
    // timers run, but what it sends waits). The next, on the challenge's timer, arrives.
    let mut sent_there = Vec::new();
    let mut challenges = Vec::new();
    loop {
        let to = if challenges.is_empty() { nowhere() } else { new };
        for (dest, size) in server_sends_reaching(&mut p, to) {
            if dest == new {
                sent_there.push(size);
            }
        }
        if let Some(data) = sent_challenge(&p).filter(|d| challenges.last() != Some(d)) {
            challenges.push(data);
        }
        if challenges.len() == 2 || !p.advance_to_next_deadline(end) {
            break;
        }
    }
    // RFC 9000 §8.1: never beyond three times what came from there.
    let total: usize = sent_there.iter().sum();
    assert!(total <= 3 * received, "{sent_there:?} for {received} received");
    assert_eq!(
        challenges.len(),
        2,
        "a second challenge before the validation's deadline: {sent_there:?} for {received} received"
    );
    // The client's answer validates the new address.
    client_to_server_from(&mut p, new);
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, new);
    assert!(conn.path.validated);
    assert_eq!(conn.stats().path_validation_failures, 0);
}

/// RFC 9000 §9.4: "Packets sent on the old path MUST NOT contribute to ... RTT estimation for the new
/// path". The client's address changes to another IP (B) while its old one (A) still receives, as
/// after a NAT rebinding whose old mapping still lets packets in: the server's challenge to A (§9.3.3)
/// arrives, the ones to B are lost, and the client's next packet, from B a round trip of 100 ms
/// later, acknowledges that challenge as its largest, with stream data sent to A before the move.
/// B's estimate, started again from the initial RTT, takes no sample from it.
#[test]
fn the_old_paths_challenge_gives_the_new_path_no_rtt_sample() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = NEW.parse().unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    // Stream data to A, on its way when the client's address changes.
    {
        let mut conn = p.server.conn(h).unwrap();
        let id = conn.open_uni().unwrap();
        conn.stream(id).write(&[7; 1000]).unwrap();
    }
    let mut to_a = super::peer_errors::sends(&mut p.server, p.now);
    assert!(!to_a.is_empty());
    client_pings_from(&mut p, ch, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    let mut buf = Vec::new();
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        if t.destination == a {
            to_a.extend(t.datagrams(&buf).map(<[u8]>::to_vec));
        }
    }
    for d in &to_a {
        p.client
            .handle_datagram(p.now, datagram(server, BytesMut::from(&d[..])));
    }
    let mut from_client = Vec::new();
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf) {
        from_client.extend(t.datagrams(&buf).map(<[u8]>::to_vec));
    }
    assert!(!from_client.is_empty(), "the client acknowledges");
    p.now += Duration::from_millis(100);
    for d in from_client {
        p.server
            .handle_datagram(p.now, datagram(b, BytesMut::from(&d[..])));
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, b);
    assert_eq!(
        conn.recovery.rtt().smoothed(),
        TransportConfig::default().initial_rtt,
        "B's estimate took a sample of A"
    );
}

/// RFC 9000 §9.4: "Packets sent on the old path MUST NOT contribute to congestion control ... for the
/// new path". A forwarded copy of a client packet from B (§9.3.3) moves the server there, which sends
/// B its PATH_CHALLENGE (and what else the amplification limit allows); the forwarder drops it all,
/// and the client's next packet from A brings the server back. Those packets, never sent on A, are
/// then declared lost: that is no congestion on A, whose window stays as it was. (Otherwise a
/// forwarder repeating it once a round trip halves A's window at will.)
#[test]
fn losses_on_the_path_left_for_a_moment_are_no_congestion_back_on_the_old_path() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = NEW.parse().unwrap();
    p.client.conn(ch).unwrap().ping();
    p.run(Duration::from_secs(1));
    let (events, window) = {
        let conn = &p.server.table.get(h).unwrap().conn;
        (conn.stats().congestion_events, conn.cc.window())
    };
    client_pings_from(&mut p, ch, b);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, b);
    let to_b = server_sends_reaching(&mut p, nowhere());
    assert!(to_b.iter().any(|(to, _)| *to == b), "{to_b:?}");
    p.now += Duration::from_millis(1);
    client_pings_from(&mut p, ch, a);
    assert_eq!(p.server.table.get(h).unwrap().conn.path.remote, a);
    // Back on A, the connection goes on: later packets are acknowledged, B's are declared lost.
    for _ in 0..5 {
        p.server.conn(h).unwrap().ping();
        p.run(Duration::from_millis(200));
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, a);
    assert!(conn.stats().packets_lost > 0, "B's packets were declared lost");
    assert_eq!(conn.stats().congestion_events, events, "a congestion event on A");
    assert_eq!(conn.cc.window(), window);
}

/// The same after a failed validation (RFC 9000 §9.3.2): a packet from B moves the server there, and
/// nothing it sends B for the three PTOs of the validation arrives. Back on A, where the client still
/// is, those packets are declared lost: no congestion on A (they span the whole validation, which
/// could make persistent congestion, RFC 9002 §7.6, and collapse A's window).
#[test]
fn losses_on_a_path_that_failed_validation_are_no_congestion_back_on_the_old_path() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let a: SocketAddr = CLIENT.parse().unwrap();
    let b: SocketAddr = NEW.parse().unwrap();
    p.client.conn(ch).unwrap().ping();
    p.run(Duration::from_secs(1));
    let (events, window) = {
        let conn = &p.server.table.get(h).unwrap().conn;
        (conn.stats().congestion_events, conn.cc.window())
    };
    client_pings_from(&mut p, ch, b);
    let deadline = {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, b);
        conn.path_validation.as_ref().unwrap().deadline
    };
    // Until the server gives up on B: what it sends until then is lost.
    while p.server.table.get(h).unwrap().conn.path.remote == b {
        server_sends_reaching(&mut p, nowhere());
        match p.server.poll_timeout() {
            Some(t) if t <= deadline => {
                p.now = p.now.max(t);
                p.server.handle_timeout(p.now);
            }
            _ => break,
        }
    }
    {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.stats().path_validation_failures, 1);
        assert_eq!(conn.path.remote, a);
    }
    for _ in 0..5 {
        p.server.conn(h).unwrap().ping();
        p.run(Duration::from_millis(200));
    }
    let conn = &p.server.table.get(h).unwrap().conn;
    assert_eq!(conn.path.remote, a);
    assert!(conn.stats().packets_lost > 0, "B's packets were declared lost");
    assert_eq!(conn.stats().congestion_events, events, "a congestion event on A");
    assert_eq!(conn.cc.window(), window);
}

/// RFC 9000 §1.2: an address is "the tuple of IP version, IP address, and UDP port number"; an IPv6
/// socket address also carries a flow label, which says nothing of the peer (sockets report received
/// datagrams with none; a driver that reports them sees a peer's label change at will). A client given
/// its server's address with a label, and a server whose client's datagrams carry changing labels, still
/// know their peer by its address: the handshake completes, over connection IDs and over addresses alone
/// (zero-length IDs).
#[test]
fn an_ipv6_flow_label_is_no_part_of_the_peers_address() {
    use super::churn::Net;
    use crate::event::Event;
    use crate::{Endpoint, EndpointConfig, RandomCidGenerator};
    use std::net::SocketAddrV6;
    let ip = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    let server_addr = SocketAddrV6::new(ip("2001:db8::2"), 443, 0, 0);
    let client_addr = |label: u32| SocketAddr::V6(SocketAddrV6::new(ip("2001:db8::1"), 5000, label, 0));
    for server_cid_len in [8, 0] {
        let net = Net::new();
        let mut config = EndpointConfig::with_seed(1);
        config.cid_generator = Box::new(RandomCidGenerator::new(server_cid_len));
        let mut server = Endpoint::new(config, Some(net.server_config.clone()));
        let mut client = Endpoint::new(EndpointConfig::with_seed(2), None);
        let now = net.now;
        let labelled = SocketAddrV6::new(*server_addr.ip(), 443, 0x5_1234, 0);
        let h = client
            .connect(now, net.client_config.clone(), labelled.into(), "localhost")
            .unwrap();
        let mut buf = Vec::new();
        let mut label = 0;
        for _ in 0..20 {
            while let Some(t) = client.poll_transmit(now, &mut buf) {
                for d in t.datagrams(&buf) {
                    label += 1;
                    server.handle_datagram(now, datagram(client_addr(label), BytesMut::from(d)));
                }
            }
            while let Some(t) = server.poll_transmit(now, &mut buf) {
                for d in t.datagrams(&buf) {
                    client.handle_datagram(now, datagram(server_addr.into(), BytesMut::from(d)));
                }
            }
        }
        let mut events = Vec::new();
        while let Some(e) = client.poll_event() {
            events.push(e);
        }
        assert!(
            events.contains(&(h, Event::Connected)),
            "server IDs of {server_cid_len} bytes: {events:?}"
        );
        let mut events = Vec::new();
        while let Some((_, e)) = server.poll_event() {
            events.push(e);
        }
        assert!(
            events.contains(&Event::Connected),
            "server IDs of {server_cid_len} bytes: {events:?}"
        );
        assert_eq!(server.stats().connections_incoming, 1, "{:?}", server.stats());
    }
}
