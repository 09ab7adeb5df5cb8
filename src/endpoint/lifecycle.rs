//! The connection lifecycle against RFC 9000 §10 and RFC 9001 §6, on real connections with a virtual
//! clock: the idle timer's restarts, the closing and draining periods, the close during the handshake in
//! each packet type, and key updates before the handshake is confirmed.

use std::time::Duration;

use super::peer_errors::{coalesced_packets, deliver, deliver_all, sends, Pair, CLIENT, SERVER};
use crate::event::{ConnectionError, Event};
use crate::wire::header::LongType;
use crate::wire::TransportErrorCode;
use crate::{Endpoint, TransportConfig};

/// The packet types of a datagram, in order: `Some(type)` for long headers, `None` for a short header.
fn packet_types(datagram: &[u8], short_dcid_len: usize) -> Vec<Option<LongType>> {
    let packets = coalesced_packets(datagram, short_dcid_len);
    packets.into_iter().map(|(ty, _)| ty).collect()
}

fn lost(events: &[Event]) -> Option<&ConnectionError> {
    Pair::lost(events)
}

/// Asserts that `endpoint`'s connection ended on the peer's CONNECTION_CLOSE with APPLICATION_ERROR and
/// no reason: an application's close as sent in Initial or Handshake packets (RFC 9000 §10.2.3).
fn hears_application_error_without_details(endpoint: &mut Endpoint) {
    let mut events = Vec::new();
    while let Some((_, e)) = endpoint.poll_event() {
        events.push(e);
    }
    match lost(&events) {
        Some(ConnectionError::ConnectionClosed { error }) => {
            assert_eq!(error.code, TransportErrorCode::APPLICATION_ERROR, "{error}");
            assert!(error.reason.is_empty(), "{error}");
        }
        other => panic!("expected APPLICATION_ERROR, got {other:?}"),
    }
}

/// RFC 9000 §10.1: "An endpoint also restarts its idle timer when sending an ack-eliciting packet if no
/// other ack-eliciting packets have been sent since last receiving and processing a packet." A second
/// ack-eliciting packet with nothing received in between leaves the timer where the first put it; a
/// packet received restarts it.
#[test]
fn only_the_first_ack_eliciting_packet_after_a_receive_restarts_the_idle_timer() {
    let mut p = Pair::new(TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    let idle_since = |p: &Pair| p.client.table.get(ch).unwrap().conn.idle_since;
    let t1 = p.now + Duration::from_secs(1);
    p.client.conn(ch).unwrap().ping();
    let first = sends(&mut p.client, t1);
    assert_eq!(first.len(), 1);
    assert_eq!(
        idle_since(&p),
        Some(t1),
        "the first ack-eliciting packet restarts it"
    );
    let t2 = t1 + Duration::from_millis(500);
    p.client.conn(ch).unwrap().ping();
    let second = sends(&mut p.client, t2);
    assert_eq!(second.len(), 1);
    assert_eq!(idle_since(&p), Some(t1), "a second one does not");
    // The server's answer is received and processed: the timer restarts.
    let t3 = t2 + Duration::from_millis(10);
    for d in first.iter().chain(&second) {
        deliver(&mut p.server, t3, CLIENT, d);
    }
    deliver_all(&mut p.server, &mut p.client, t3, SERVER);
    assert_eq!(idle_since(&p), Some(t3), "a packet received restarts it");
}

/// RFC 9000 §10.2: the closing and draining states last three times the current PTO; the draining
/// endpoint sends nothing (§10.2.2), and both connections are gone at their ends.
#[test]
fn closing_and_draining_last_three_ptos_and_draining_sends_nothing() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let now = p.now;
    let server_pto = p.server.table.get(sh).unwrap().conn.pto();
    p.server.conn(sh).unwrap().close(now, 7, b"bye");
    assert_eq!(
        p.server.table.get(sh).unwrap().conn.poll_timeout(),
        Some(now + 3 * server_pto)
    );
    let close = sends(&mut p.server, now);
    assert_eq!(close.len(), 1);
    let client_pto = p.client.table.get(ch).unwrap().conn.pto();
    deliver(&mut p.client, now, SERVER, &close[0]);
    assert_eq!(
        p.client.table.get(ch).unwrap().conn.poll_timeout(),
        Some(now + 3 * client_pto)
    );
    // Draining: the client answers nothing, whatever arrives.
    p.client.conn(ch).unwrap().ping();
    deliver(&mut p.client, now, SERVER, &close[0]);
    assert!(
        sends(&mut p.client, now).is_empty(),
        "a draining endpoint sends nothing"
    );
    let end = now + 3 * client_pto;
    p.client.handle_timeout(end - Duration::from_nanos(1));
    assert!(p.client.conn(ch).is_ok(), "draining until its end");
    p.client.handle_timeout(end);
    assert!(p.client.conn(ch).is_err(), "gone at its end");
}

/// RFC 9000 §10.2.3: a server closing during the handshake, not knowing whether the client has
/// Handshake keys, sends CONNECTION_CLOSE in Initial and Handshake packets (and 1-RTT, which it has), and
/// an application close becomes a transport APPLICATION_ERROR without its reason in the first two. The
/// client, with only Initial keys, hears APPLICATION_ERROR, not the application's code or reason.
#[test]
fn a_server_closing_mid_handshake_closes_in_every_packet_type_without_the_application_details() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let now = p.now;
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    let sh = p.server.table.iter().next().unwrap().0;
    let ch = p.client.table.iter().next().unwrap().0;
    // The server's first flight is lost.
    assert!(!sends(&mut p.server, now).is_empty());
    p.server.conn(sh).unwrap().close(now, 7, b"application secret");
    let close = sends(&mut p.server, now);
    assert_eq!(close.len(), 1, "one datagram");
    let cid_len = p.client.table.get(ch).unwrap().conn.local_cid.len();
    assert_eq!(
        packet_types(&close[0], cid_len),
        [Some(LongType::Initial), Some(LongType::Handshake), None]
    );
    deliver(&mut p.client, now, SERVER, &close[0]);
    hears_application_error_without_details(&mut p.client);
}

/// RFC 9000 §10.2.3: a client closing before the handshake is confirmed sends CONNECTION_CLOSE in
/// Handshake and 1-RTT packets (its Initial keys are gone); the server, whose handshake is not complete,
/// reads the Handshake one.
#[test]
fn a_client_closing_before_confirmation_closes_in_handshake_and_1rtt_packets() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let now = p.now;
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    deliver_all(&mut p.server, &mut p.client, now, SERVER);
    let ch = p.client.table.iter().next().unwrap().0;
    let sh = p.server.table.iter().next().unwrap().0;
    // The client's Finished is lost.
    assert!(!sends(&mut p.client, now).is_empty());
    assert!(!p.client.conn(ch).unwrap().is_handshaking());
    p.client.conn(ch).unwrap().close(now, 7, b"application secret");
    let close = sends(&mut p.client, now);
    assert_eq!(close.len(), 1, "one datagram");
    let cid_len = p.server.table.get(sh).unwrap().conn.local_cid.len();
    assert_eq!(
        packet_types(&close[0], cid_len),
        [Some(LongType::Handshake), None]
    );
    deliver(&mut p.server, now, CLIENT, &close[0]);
    hears_application_error_without_details(&mut p.server);
}

/// RFC 9001 §6.1: "An endpoint MUST NOT initiate a key update prior to having confirmed the handshake."
/// A client asked for one as soon as its handshake completes keeps phase 0 until HANDSHAKE_DONE (or an
/// acknowledgement of a 1-RTT packet) confirms it, then updates.
#[test]
fn a_key_update_waits_for_the_handshake_to_be_confirmed() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let now = p.now;
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    deliver_all(&mut p.server, &mut p.client, now, SERVER);
    let ch = p.client.table.iter().next().unwrap().0;
    assert!(!p.client.conn(ch).unwrap().is_handshaking());
    p.client.conn(ch).unwrap().force_key_update();
    p.client.conn(ch).unwrap().ping();
    let phase = |p: &Pair| p.client.table.get(ch).unwrap().conn.key_phase();
    let finished = sends(&mut p.client, now);
    assert!(!finished.is_empty());
    assert_eq!(phase(&p), (false, 0), "not before the handshake is confirmed");
    for d in &finished {
        deliver(&mut p.server, now, CLIENT, d);
    }
    deliver_all(&mut p.server, &mut p.client, now, SERVER);
    assert!(p.client.table.get(ch).unwrap().conn.is_handshake_confirmed());
    sends(&mut p.client, now);
    assert_eq!(
        phase(&p),
        (true, 1),
        "once confirmed (and a 1-RTT packet acknowledged)"
    );
}

/// RFC 9000 §10.2.3, §14.1: a client closing before it has heard from the server has only Initial keys:
/// its CONNECTION_CLOSE goes in an Initial packet, as APPLICATION_ERROR without the reason, in a datagram
/// padded to 1200 bytes like every client datagram with an Initial; the server drains on it.
#[test]
fn a_client_closing_before_any_answer_closes_in_a_padded_initial() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let now = p.now;
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    let sh = p.server.table.iter().next().unwrap().0;
    let ch = p.client.table.iter().next().unwrap().0;
    // The server's answer is lost.
    assert!(!sends(&mut p.server, now).is_empty());
    p.client.conn(ch).unwrap().close(now, 7, b"application secret");
    let close = sends(&mut p.client, now);
    assert_eq!(close.len(), 1, "one datagram");
    assert!(close[0].len() >= 1200, "{} bytes", close[0].len());
    let cid_len = p.server.table.get(sh).unwrap().conn.local_cid.len();
    assert_eq!(packet_types(&close[0], cid_len), [Some(LongType::Initial)]);
    deliver(&mut p.server, now, CLIENT, &close[0]);
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    match lost(&p.server_events) {
        Some(ConnectionError::ConnectionClosed { error }) => {
            assert_eq!(error.code, TransportErrorCode::APPLICATION_ERROR, "{error}");
            assert!(error.reason.is_empty(), "{error}");
        }
        other => panic!("expected APPLICATION_ERROR, got {other:?}"),
    }
    assert!(
        sends(&mut p.server, now).is_empty(),
        "the server drains, sending nothing"
    );
}

/// RFC 9000 §10.1: "the effective value at an endpoint is computed as the minimum of the two advertised
/// values (or the sole advertised value, if only one endpoint advertises a non-zero value)". A client
/// that announces none (zero on the wire) still times out at the server's value, and both sides agree.
#[test]
fn the_sole_advertised_idle_timeout_applies_to_both_sides() {
    let client = TransportConfig {
        max_idle_timeout: None,
        ..TransportConfig::default()
    };
    let server = TransportConfig {
        max_idle_timeout: Some(Duration::from_secs(3)),
        ..TransportConfig::default()
    };
    let mut p = Pair::with(server, client);
    let sh = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    for conn in [
        &p.client.table.get(ch).unwrap().conn,
        &p.server.table.get(sh).unwrap().conn,
    ] {
        assert_eq!(
            conn.idle_timeout(),
            Some(Duration::from_secs(3)),
            "{:?}",
            conn.side()
        );
    }
    assert_eq!(lost(&p.client_events), None);
    p.run(Duration::from_secs(5));
    assert_eq!(lost(&p.client_events), Some(&ConnectionError::TimedOut));
    assert_eq!(lost(&p.server_events), Some(&ConnectionError::TimedOut));
}

/// RFC 9000 §10.3.1: "An endpoint MUST NOT check for any stateless reset tokens associated with
/// connection IDs it has not used or for connection IDs that have been retired." The client moves off
/// the server's handshake ID (a Retire Prior To retires it): a datagram ending with that ID's token (from
/// the transport parameters) no longer resets the connection, one ending with the token of the ID now in
/// use does; and a spare ID's token, never used, never did.
#[test]
fn only_the_token_of_the_connection_id_in_use_is_a_reset() {
    use crate::wire::frame::{Frame, NewConnectionId};
    use crate::wire::{ConnectionId, ResetToken};
    use bytes::BytesMut;
    let mut p = Pair::new(TransportConfig::default());
    let ch = p.client.table.iter().next().unwrap().0;
    let from: std::net::SocketAddr = SERVER.parse().unwrap();
    let ending_with = |token: &ResetToken| {
        let mut d = vec![0x41u8; 44];
        d.extend_from_slice(&token.0);
        crate::Datagram {
            remote: from,
            local: None,
            ecn: None,
            payload: BytesMut::from(&d[..]),
        }
    };
    let handshake_token = p.client.table.get(ch).unwrap().conn.remote_reset_token.unwrap();
    let spare_token = ResetToken([0x66; 16]);
    let new_token = ResetToken([0x77; 16]);
    let now = p.now;
    {
        let conn = &mut p.client.table.get_mut(ch).unwrap().conn;
        conn.inject_frames_in(
            now,
            crate::conn::SpaceId::Data,
            &[
                Frame::NewConnectionId(NewConnectionId {
                    sequence: 9,
                    retire_prior_to: 9,
                    id: ConnectionId::new(&[9; 8]).unwrap(),
                    reset_token: new_token,
                }),
                // A spare, above Retire Prior To.
                Frame::NewConnectionId(NewConnectionId {
                    sequence: 10,
                    retire_prior_to: 9,
                    id: ConnectionId::new(&[10; 8]).unwrap(),
                    reset_token: spare_token,
                }),
            ],
        );
    }
    p.client.after_conn(ch, true);
    assert_eq!(
        p.client.table.get(ch).unwrap().conn.remote_reset_token,
        Some(new_token),
        "the client moved to sequence 9"
    );
    for token in [handshake_token, spare_token] {
        p.client.handle_datagram(now, ending_with(&token));
        assert_eq!(p.client.stats().stateless_resets_received, 0, "{token:?}");
        assert!(!p.client.table.get(ch).unwrap().conn.is_closed(), "{token:?}");
    }
    p.client.handle_datagram(now, ending_with(&new_token));
    assert_eq!(p.client.stats().stateless_resets_received, 1);
}

/// A network of random delays and losses between the pair's endpoints, driven on a virtual clock.
struct LossyNet {
    rng: crate::rng::Rng,
    /// Out of ten datagrams, how many are lost.
    loss_in_ten: u64,
    /// Each datagram takes 10 ms plus up to this many milliseconds more (so they overtake each other).
    jitter_ms: u64,
    in_flight: Vec<(std::time::Instant, bool, Vec<u8>)>,
}

impl LossyNet {
    fn new(seed: u64, loss_in_ten: u64, jitter_ms: u64) -> Self {
        Self {
            rng: crate::rng::Rng::from_seed(seed),
            loss_in_ten,
            jitter_ms,
            in_flight: Vec::new(),
        }
    }

    /// Sends what both endpoints have, moves the clock to the next event (a deadline of either, an
    /// arrival, or `wake`), delivers what arrives then and runs the timers. False when nothing is left
    /// to happen.
    fn step(&mut self, p: &mut Pair, wake: Option<std::time::Instant>) -> bool {
        let now = p.now;
        let from_client = sends(&mut p.client, now).into_iter().map(|d| (true, d));
        let from_server = sends(&mut p.server, now).into_iter().map(|d| (false, d));
        for (to_server, d) in from_client.chain(from_server).collect::<Vec<_>>() {
            if self.rng.below(10) < self.loss_in_ten {
                continue;
            }
            let delay = Duration::from_millis(10 + self.rng.below(self.jitter_ms + 1));
            self.in_flight.push((now + delay, to_server, d));
        }
        let next = [p.client.poll_timeout(), p.server.poll_timeout(), wake]
            .into_iter()
            .flatten()
            .chain(self.in_flight.iter().map(|(t, ..)| *t))
            .min();
        let Some(next) = next else {
            return false;
        };
        p.now = p.now.max(next);
        let now = p.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|(t, ..)| *t <= now);
        self.in_flight = later;
        for (_, to_server, d) in due {
            if to_server {
                deliver(&mut p.server, now, CLIENT, &d);
            } else {
                deliver(&mut p.client, now, SERVER, &d);
            }
        }
        p.client.handle_timeout(now);
        p.server.handle_timeout(now);
        while let Some((_, e)) = p.client.poll_event() {
            p.client_events.push(e);
        }
        while let Some((_, e)) = p.server.poll_event() {
            p.server_events.push(e);
        }
        true
    }
}

/// RFC 9000 §5.1.1, §5.1.2, §19.15, §19.16: a peer that issues, repeats and retires connection IDs at
/// random, within the rules (at most our limit of four IDs at or above its Retire Prior To, which only
/// grows; retirements of IDs we sent, other than the one its packet goes to), never gets the connection
/// closed, and the IDs we hold stay within the limit, all at or above Retire Prior To, with the
/// retirements owed within their bound.
#[test]
fn random_legal_connection_id_frames_keep_the_connection_and_its_bounds() {
    use crate::wire::frame::{Frame, NewConnectionId};
    use crate::wire::{ConnectionId, ResetToken};
    for seed in 0..50u64 {
        let mut p = Pair::new(TransportConfig::default());
        let sh = p.server_h.unwrap();
        let mut rng = crate::rng::Rng::from_seed(seed);
        // The client issued sequence numbers 1 to 3 in the handshake's wake.
        let mut next_seq = 4u64;
        let mut rpt = 0u64;
        let mut issued: Vec<NewConnectionId> = Vec::new();
        for step in 0..200 {
            let mut frames = Vec::new();
            for _ in 0..1 + rng.below(3) {
                match rng.below(4) {
                    0 | 1 => {
                        let seq = next_seq;
                        next_seq += 1;
                        // At most four IDs at or above Retire Prior To, sometimes fewer.
                        rpt = rpt.max(seq - 3);
                        if rng.below(4) == 0 {
                            rpt = (rpt + 1).min(seq);
                        }
                        let mut id = seq.to_be_bytes();
                        id[0] = 0xee;
                        let f = NewConnectionId {
                            sequence: seq,
                            retire_prior_to: rpt,
                            id: ConnectionId::new(&id).unwrap(),
                            reset_token: ResetToken([(seq % 251) as u8; 16]),
                        };
                        issued.push(f);
                        frames.push(Frame::NewConnectionId(f));
                    }
                    2 if !issued.is_empty() => {
                        let f = issued[rng.below(issued.len() as u64) as usize];
                        frames.push(Frame::NewConnectionId(f));
                    }
                    _ => {
                        let high = p.server.table.get(sh).unwrap().conn.local_cids.highest_sent;
                        // Not sequence 0: the injected packets go to the handshake ID.
                        let seq = 1 + rng.below(high.max(1));
                        frames.push(Frame::RetireConnectionId(seq));
                    }
                }
            }
            super::peer_errors::inject(&mut p, crate::conn::SpaceId::Data, &frames);
            let now = p.now;
            sends(&mut p.server, now);
            while let Some((_, e)) = p.server.poll_event() {
                p.server_events.push(e);
            }
            assert_eq!(
                lost(&p.server_events),
                None,
                "seed {seed} step {step}: {frames:?}"
            );
            let conn = &p.server.table.get(sh).unwrap().conn;
            let floor = conn.peer_retire_prior_to;
            assert!(conn.peer_cids.len() < 4, "seed {seed} step {step}");
            assert!(conn.remote_cid_seq >= floor, "seed {seed} step {step}");
            assert!(
                conn.peer_cids.iter().all(|(s, ..)| *s >= floor),
                "seed {seed} step {step}"
            );
            assert!(conn.retire_cids.len() <= 16, "seed {seed} step {step}");
        }
    }
}

/// RFC 9001 §6: key updates asked for at random by both sides, while datagrams are lost and overtake
/// each other by up to 400 ms, each wait for their turn (§6.1, §6.5), are answered (§6.2) and never
/// end the connection (no KEY_UPDATE_ERROR, §6.4, for packets merely reordered, §6.5).
#[test]
fn random_key_updates_with_loss_and_reordering_never_end_the_connection() {
    for seed in 0..10u64 {
        let mut p = Pair::new(TransportConfig::default());
        let sh = p.server_h.unwrap();
        let ch = p.client.table.iter().next().unwrap().0;
        let mut net = LossyNet::new(seed, 2, 400);
        let end = p.now + Duration::from_secs(20);
        let mut next_poke = p.now;
        while p.now < end {
            if p.now >= next_poke {
                next_poke = p.now + Duration::from_millis(5 + net.rng.below(80));
                match net.rng.below(6) {
                    0 => p.client.conn(ch).unwrap().force_key_update(),
                    1 => p.server.conn(sh).unwrap().force_key_update(),
                    2 | 3 => p.client.conn(ch).unwrap().ping(),
                    _ => p.server.conn(sh).unwrap().ping(),
                }
            }
            assert!(net.step(&mut p, Some(next_poke)));
            assert_eq!(lost(&p.client_events), None, "seed {seed}");
            assert_eq!(lost(&p.server_events), None, "seed {seed}");
        }
        let updates = p.client.conn(ch).unwrap().stats().key_updates;
        assert!(updates >= 5, "seed {seed}: {updates} key updates");
    }
}

/// RFC 9000 §10.2: a close at a random moment of the handshake or after, by either side, with loss and
/// reordering: both sides end (the closer after its closing period, the other after draining or, when
/// every copy of the close was lost, its idle timeout), every connection the server made reports its
/// end, and nothing is left to wake for.
#[test]
fn random_closes_end_both_sides() {
    for seed in 0..100u64 {
        let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
        let ch = p.client.table.iter().next().unwrap().0;
        let mut net = LossyNet::new(seed, seed % 4, 40);
        let close_at = p.now + Duration::from_millis(net.rng.below(400));
        let client_closes = net.rng.below(2) == 0;
        let mut closed = false;
        let end = p.now + Duration::from_secs(120);
        loop {
            if !closed && p.now >= close_at {
                closed = true;
                if client_closes {
                    p.client.close(p.now, ch, 9, b"bye").unwrap();
                } else {
                    let sh = p.server.table.iter().next().map(|(h, _)| h);
                    if let Some(sh) = sh {
                        p.server.close(p.now, sh, 9, b"bye").unwrap();
                    }
                }
            }
            if !net.step(&mut p, (!closed).then_some(close_at)) {
                break;
            }
            assert!(p.now < end, "seed {seed}: still busy after two minutes");
        }
        assert!(lost(&p.client_events).is_some(), "seed {seed}");
        if p.server.stats().connections_incoming > 0 {
            assert!(lost(&p.server_events).is_some(), "seed {seed}");
        }
        assert_eq!(p.client.stats().connections_active, 0, "seed {seed}");
        assert_eq!(p.server.stats().connections_active, 0, "seed {seed}");
    }
}

/// As [`random_closes_end_both_sides`], with the client's NAT rebinding (RFC 9000 §9.3) and a key update
/// (RFC 9001 §6) each at a random moment before or after the close: both sides still end, and each
/// reports it.
#[test]
fn random_closes_with_a_rebinding_and_a_key_update_end_both_sides() {
    let rebound = "192.0.2.1:6000";
    for seed in 0..100u64 {
        let mut p = Pair::new(TransportConfig::default());
        let ch = p.client.table.iter().next().unwrap().0;
        let sh = p.server_h.unwrap();
        let mut rng = crate::rng::Rng::from_seed(seed);
        let rebind_at = p.now + Duration::from_millis(rng.below(300));
        let close_at = p.now + Duration::from_millis(rng.below(600));
        let update_at = p.now + Duration::from_millis(rng.below(600));
        let client_closes = rng.below(2) == 0;
        let loss = rng.below(3);
        let (mut rebound_done, mut closed, mut updated) = (false, false, false);
        let mut in_flight: Vec<(std::time::Instant, bool, Vec<u8>)> = Vec::new();
        let end = p.now + Duration::from_secs(120);
        loop {
            let now = p.now;
            if !rebound_done && now >= rebind_at {
                rebound_done = true;
            }
            if !updated && now >= update_at {
                updated = true;
                if let Ok(mut c) = p.client.conn(ch) {
                    c.force_key_update();
                    c.ping();
                }
            }
            if !closed && now >= close_at {
                closed = true;
                if client_closes {
                    let _ = p.client.close(now, ch, 9, b"bye");
                } else {
                    let _ = p.server.close(now, sh, 9, b"bye");
                }
            }
            let from_client = sends(&mut p.client, now).into_iter().map(|d| (true, d));
            let from_server = sends(&mut p.server, now).into_iter().map(|d| (false, d));
            for (to_server, d) in from_client.chain(from_server).collect::<Vec<_>>() {
                if rng.below(10) < loss {
                    continue;
                }
                in_flight.push((now + Duration::from_millis(10 + rng.below(30)), to_server, d));
            }
            let wakes = [
                (!rebound_done).then_some(rebind_at),
                (!closed).then_some(close_at),
                (!updated).then_some(update_at),
            ];
            let next = [p.client.poll_timeout(), p.server.poll_timeout()]
                .into_iter()
                .chain(wakes)
                .flatten()
                .chain(in_flight.iter().map(|(t, ..)| *t))
                .min();
            let Some(next) = next else { break };
            p.now = p.now.max(next);
            assert!(p.now < end, "seed {seed}: busy");
            let now = p.now;
            let (due, later): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|(t, ..)| *t <= now);
            in_flight = later;
            for (_, to_server, d) in due {
                if to_server {
                    let from = if rebound_done { rebound } else { CLIENT };
                    deliver(&mut p.server, now, from, &d);
                } else {
                    deliver(&mut p.client, now, SERVER, &d);
                }
            }
            p.client.handle_timeout(now);
            p.server.handle_timeout(now);
            while let Some((_, e)) = p.client.poll_event() {
                p.client_events.push(e);
            }
            while let Some((_, e)) = p.server.poll_event() {
                p.server_events.push(e);
            }
        }
        assert!(lost(&p.client_events).is_some(), "seed {seed}");
        assert!(lost(&p.server_events).is_some(), "seed {seed}");
        assert_eq!(p.client.stats().connections_active, 0, "seed {seed}");
        assert_eq!(p.server.stats().connections_active, 0, "seed {seed}");
    }
}

/// RFC 9000 §10.1: "An endpoint restarts its idle timer when a packet from its peer is received and
/// processed successfully", a Retry too (§17.2.5.2: the client follows it). The client's idle timer ran
/// from its first Initial instead, and the Initial it sends again after the Retry (not the first
/// ack-eliciting packet since a receive, as far as it knew) did not restart it either: the handshake's
/// idle time was counted from before the Retry's round trip.
#[test]
fn a_retry_restarts_the_clients_idle_timer() {
    let (cert, key) = super::peer_errors::test_cert(Vec::new());
    let alpn = vec![b"test".to_vec()];
    let tls = crate::crypto::tls::server_config(vec![cert.clone()], key, alpn.clone()).unwrap();
    let mut server = crate::ServerConfig::new(tls);
    server.retry = crate::RetryPolicy::Always;
    let client = crate::ClientConfig::new(crate::crypto::tls::client_config(vec![cert], alpn).unwrap());
    let mut p = Pair::start_with_configs(
        server,
        client,
        crate::EndpointConfig::with_seed(1),
        crate::EndpointConfig::with_seed(2),
    );
    let ch = p.client.table.iter().next().unwrap().0;
    let t0 = p.now;
    deliver_all(&mut p.client, &mut p.server, t0, CLIENT);
    let retry = sends(&mut p.server, t0);
    assert_eq!(retry.len(), 1, "the Retry");
    let t1 = t0 + Duration::from_millis(100);
    deliver(&mut p.client, t1, SERVER, &retry[0]);
    let conn = &p.client.table.get(ch).unwrap().conn;
    assert!(conn.retry_scid.is_some(), "the client followed the Retry");
    assert_eq!(conn.idle_since, Some(t1), "the Retry restarted the idle timer");
    let t2 = t1 + Duration::from_millis(1);
    assert!(!sends(&mut p.client, t2).is_empty(), "the Initial again");
    assert_eq!(
        p.client.table.get(ch).unwrap().conn.idle_since,
        Some(t2),
        "the first ack-eliciting packet after the Retry restarted it"
    );
}
