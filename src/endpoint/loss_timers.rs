//! Loss detection timers between two real endpoints (RFC 9002 §6.2, Appendix A.6, A.8, A.9, A.11):
//! deadlines checked against the RFC's formulas, computed from the endpoint's own RTT estimate.

use std::time::Duration;

use bytes::Bytes;

use super::peer_errors::{
    coalesced_packets, deliver, forged_initial, sends, test_cert, Pair, CLIENT, SERVER,
};
use crate::conn::{Connection, SpaceId};
use crate::wire::frame::Frame;
use crate::wire::header::{Header, LongType, ProtectedHeader, VERSION_1};
use crate::{EndpointConfig, Side, TransportConfig};

const ONE_WAY: Duration = Duration::from_millis(50);

/// The long-header types of the packets coalesced in `datagram`, with their lengths, up to the first
/// short header.
fn long_packets(datagram: &[u8]) -> Vec<(LongType, usize)> {
    coalesced_packets(datagram, 8)
        .into_iter()
        .filter_map(|(ty, len)| Some((ty?, len)))
        .collect()
}

fn client_conn(p: &Pair) -> &Connection {
    let (h, _) = p.client.table.iter().next().unwrap();
    &p.client.table.get(h).unwrap().conn
}

fn server_conn(p: &Pair) -> &Connection {
    let (h, _) = p.server.table.iter().next().unwrap();
    &p.server.table.get(h).unwrap().conn
}

/// RFC 9002 §6.2.2.1: a client whose Handshake packets the server has not acknowledged arms a PTO even
/// with nothing in flight, and on it sends a Handshake packet once it has Handshake keys. Here the
/// server's Initial (its ServerHello) reaches the client, the Handshake packet beside it does not: the
/// client has Handshake keys, its ClientHello is acknowledged, and all it has in flight is its padded
/// Initial ACK, which is not ack-eliciting. Its PTO counts from then (Appendix A.8: "Anti-deadlock PTO
/// starts from the current time"), without max_ack_delay (§6.2.1: not in the Initial and Handshake
/// spaces), and brings one ack-eliciting Handshake packet. Sending it discards the Initial keys (RFC
/// 9001 §4.9.1), which resets the backoff (Appendix A.11): the next PTO, for that packet, is a whole one.
#[test]
fn a_clients_anti_deadlock_probe_is_a_handshake_packet_a_pto_after_the_servers_initial() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let t0 = p.now;
    let hello = sends(&mut p.client, t0);
    let t1 = t0 + ONE_WAY;
    for d in &hello {
        deliver(&mut p.server, t1, CLIENT, d);
    }
    let flight = sends(&mut p.server, t1);
    let first = long_packets(&flight[0]);
    assert_eq!(first[0].0, LongType::Initial);
    assert_eq!(first[1].0, LongType::Handshake);
    let t2 = t1 + ONE_WAY;
    deliver(&mut p.client, t2, SERVER, &flight[0][..first[0].1]);
    let answer = sends(&mut p.client, t2);
    assert!(answer
        .iter()
        .all(|d| long_packets(d).iter().all(|(ty, _)| *ty == LongType::Initial)));
    let c = client_conn(&p);
    assert!(c.spaces[SpaceId::Handshake.index()].keys.is_some());
    assert!(!c.recovery.has_ack_eliciting_in_flight());
    let rtt = c.recovery.rtt().clone();
    assert_eq!(rtt.latest(), 2 * ONE_WAY);
    let pto = rtt.pto_base();
    assert_eq!(p.client.poll_timeout(), Some(t2 + pto));

    let t3 = t2 + pto;
    p.client.handle_timeout(t3);
    let probe = sends(&mut p.client, t3);
    assert_eq!(probe.len(), 1, "one datagram");
    let packets = long_packets(&probe[0]);
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0, LongType::Handshake);
    let c = client_conn(&p);
    assert!(c.recovery.has_ack_eliciting_in_flight_in(SpaceId::Handshake));
    assert!(c.spaces[SpaceId::Initial.index()].discarded);
    assert_eq!(c.recovery.pto_count(), 0);
    assert_eq!(p.client.poll_timeout(), Some(t3 + pto));
}

/// RFC 9002 §6.2.2.1: a server that can send nothing more before the client's address is validated
/// arms no PTO ("MUST NOT be armed until datagrams have been received from the client"); once a
/// datagram raises its allowance, "If the PTO timer is then set to a time in the past, it is executed
/// immediately" (Appendix A.6 OnDatagramReceived). The certificate is large, so the server's first flight
/// fills three times the client's Initial; all of it is lost. The client's next datagram is a PING, so
/// nothing else (a ClientHello sent again, RFC 9002 §6.2.3) makes the server resend.
#[test]
fn a_server_at_its_amplification_limit_probes_at_once_when_a_datagram_frees_it_past_its_pto() {
    let (cert, key) = test_cert((0..200).map(|i| format!("host-{i:03}.example.test")).collect());
    let mut p = Pair::start_with_cert(
        (cert, key),
        TransportConfig::default(),
        TransportConfig::default(),
        EndpointConfig::with_seed(1),
        EndpointConfig::with_seed(2),
    );
    let t0 = p.now;
    let hello = sends(&mut p.client, t0);
    let h = ProtectedHeader::decode(&hello[0], 0).unwrap();
    let (odcid, scid) = (*h.dcid(), *h.scid().unwrap());
    let allowance: usize = hello.iter().map(|d| 3 * d.len()).sum();
    for d in &hello {
        deliver(&mut p.server, t0, CLIENT, d);
    }
    let flight = sends(&mut p.server, t0);
    let sent: usize = flight.iter().map(Vec::len).sum();
    assert!(
        sent <= allowance && allowance - sent < 1200,
        "{sent} of {allowance} bytes"
    );
    let s = server_conn(&p);
    assert!(s.amplification_blocked());
    let pto = s.recovery.rtt().pto_base();
    assert!(s.recovery.has_ack_eliciting_in_flight_in(SpaceId::Initial));
    assert!(
        p.server.poll_timeout().unwrap() > t0 + 10 * pto,
        "no PTO: only the idle timeout"
    );

    let t1 = t0 + pto + Duration::from_millis(500);
    p.server.handle_timeout(t1);
    assert!(sends(&mut p.server, t1).is_empty(), "nothing may go");
    let header = Header::Initial {
        version: VERSION_1,
        dcid: odcid,
        scid,
        token: Bytes::new(),
    };
    deliver(
        &mut p.server,
        t1,
        CLIENT,
        &forged_initial(Side::Client, &odcid, &header, 1, &[Frame::Ping], 1200),
    );
    let _ = sends(&mut p.server, t1);
    let s = server_conn(&p);
    assert!(!s.amplification_blocked());
    assert_eq!(s.recovery.pto_count(), 0);
    let due = p.server.poll_timeout().unwrap();
    assert!(
        due <= t1,
        "the PTO passed while blocked: due at once, not {:?} on",
        due - t1
    );
    p.server.handle_timeout(t1);
    assert_eq!(server_conn(&p).recovery.pto_count(), 1);
    let probe = sends(&mut p.server, t1);
    assert!(
        probe
            .iter()
            .any(|d| long_packets(d).iter().any(|(ty, _)| *ty == LongType::Initial)),
        "the Initial probe"
    );
}

/// RFC 9002 §6.2.1: the application data PTO is `smoothed_rtt + max(4*rttvar, kGranularity) +
/// max_ack_delay`, the peer's max_ack_delay, and each expiry doubles all of it (Appendix A.8:
/// `duration += max_ack_delay * (2 ^ pto_count)`). The client announces 40 ms.
#[test]
fn the_application_pto_counts_the_peers_max_ack_delay_doubled_with_the_backoff() {
    let client = TransportConfig {
        max_ack_delay: Duration::from_millis(40),
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(TransportConfig::default(), client);
    p.run_with_latency(ONE_WAY, Duration::from_secs(3));
    p.assert_both_connected();
    let sh = p.server_h.unwrap();
    let t0 = p.now;
    {
        let mut conn = p.server.conn(sh).unwrap();
        let id = conn.open_uni().unwrap();
        conn.stream(id).write(&[7u8; 3000]).unwrap();
    }
    assert!(!sends(&mut p.server, t0).is_empty(), "lost");
    let s = server_conn(&p);
    assert!(s.handshake_confirmed);
    assert_eq!(s.recovery.pto_count(), 0);
    let period = s.recovery.rtt().pto_base() + Duration::from_millis(40);
    assert_eq!(p.server.poll_timeout(), Some(t0 + period));

    let t1 = t0 + period;
    p.server.handle_timeout(t1);
    assert!(!sends(&mut p.server, t1).is_empty(), "probes; lost");
    assert_eq!(server_conn(&p).recovery.pto_count(), 1);
    assert_eq!(p.server.poll_timeout(), Some(t1 + 2 * period));
}
