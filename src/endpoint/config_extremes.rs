//! Configuration values at their extremes, from a review that ran every field at 0, 1 and its largest
//! value: each test failed before the value was clamped, and the clamp is documented on the field.

use std::time::Duration;

use super::peer_errors::Pair;
use crate::{MtuDiscoveryConfig, TransportConfig};

/// Both sides accept the largest UDP payload a u16 can name, and probe up to it: path MTU discovery
/// must neither build datagrams above the 65,527 bytes a UDP payload can hold (RFC 9000 §18.2; what
/// `TransportConfig::mtu` is clamped to) nor probe for ever once it reaches the top. Before, the path
/// MTU reached 65,535 and a probe went every round trip.
#[test]
fn mtu_discovery_up_to_u16_max_stays_within_udp_and_ends() {
    // Starting large gives a congestion window that holds a 65,535-byte probe at once (a bulk
    // transfer grows any window to that).
    let t = TransportConfig {
        mtu: u16::MAX,
        max_udp_payload_size: u16::MAX,
        mtu_discovery: Some(MtuDiscoveryConfig {
            upper_bound: u16::MAX,
            ..MtuDiscoveryConfig::default()
        }),
        ..TransportConfig::default()
    };
    let mut p = Pair::with(t.clone(), t);
    p.run(Duration::from_secs(10));
    let h = p.server_h.unwrap();
    let stats = p.server.conn(h).unwrap().stats();
    assert!(
        stats.path_mtu <= 65_527 && stats.mtu_probes_sent <= 20,
        "path MTU {} (the largest UDP payload is 65,527), {} MTU probes in 12 s",
        stats.path_mtu,
        stats.mtu_probes_sent
    );
}

/// A client whose initial RTT is `Duration::MAX` and whose first Initial is lost must still either
/// connect (by retransmitting) or give up: it may not wait for ever with no timer that can fire. The
/// initial RTT is now taken as at most 60 s; before, no retransmission timer could be armed.
#[test]
fn a_huge_initial_rtt_still_connects_or_fails_when_the_first_initial_is_lost() {
    let client = TransportConfig {
        initial_rtt: Duration::MAX,
        ..TransportConfig::default()
    };
    let mut p = Pair::start_with(TransportConfig::default(), client);
    // The client's first flight is lost.
    let lost = super::peer_errors::sends(&mut p.client, p.now);
    assert!(!lost.is_empty());
    p.run(Duration::from_secs(3600));
    let next = p
        .client
        .poll_timeout()
        .map(|t| t.saturating_duration_since(p.now));
    assert!(
        p.client_events.contains(&crate::Event::Connected) || Pair::lost(&p.client_events).is_some(),
        "after an hour, neither connected nor failed; next timer in {next:?}"
    );
}

/// A server whose initial RTT is `Duration::MAX` gets one Initial from a client that then vanishes (a
/// spoofed address, say): the half-open connection must still go (PTOs, then the idle timeout), not
/// hold its state and its `max_incoming_handshakes` slot for a hundred years.
#[test]
fn a_huge_initial_rtt_does_not_keep_a_half_open_server_connection_for_ever() {
    let server = TransportConfig {
        initial_rtt: Duration::MAX,
        ..TransportConfig::default()
    };
    let (left, sent, next) = half_open(server, TransportConfig::default(), Duration::from_secs(3600));
    assert_eq!(
        left, 0,
        "an hour on, the half-open connection is still there ({sent} datagrams sent); next timer in {next:?}"
    );
}

/// A server gets the first flight of a client that then vanishes; whatever the server sends is lost,
/// and it hears nothing more. Returns the connections left at the server after `limit` (or when it has
/// no timer before that), the datagrams it sent, and the time to its next timer.
fn half_open(
    server: TransportConfig,
    client: TransportConfig,
    limit: Duration,
) -> (usize, usize, Option<Duration>) {
    let mut p = Pair::start_with(server, client);
    let now = p.now;
    for d in super::peer_errors::sends(&mut p.client, now) {
        super::peer_errors::deliver(&mut p.server, now, super::peer_errors::CLIENT, &d);
    }
    assert_eq!(p.server.stats().connections_active, 1);
    let end = now + limit;
    let mut sent = 0;
    loop {
        sent += super::peer_errors::sends(&mut p.server, p.now).len();
        match p.server.poll_timeout() {
            Some(t) if t <= end => {
                p.now = p.now.max(t);
                p.server.handle_timeout(p.now);
            }
            _ => break,
        }
    }
    let next = p
        .server
        .poll_timeout()
        .map(|t| t.saturating_duration_since(p.now));
    (p.server.stats().connections_active, sent, next)
}

/// A server with the idle timeout off (`max_idle_timeout: None`, documented as allowed) or huge gets one
/// Initial from a client with the idle timeout off too (the client's transport parameters are the
/// sender's choice), that then vanishes (a spoofed address, say): the half-open connection must still
/// go some day, not hold its state and its `max_incoming_handshakes` slot for ever. The server is at
/// its anti-amplification limit, so no PTO is armed either (RFC 9002 §6.2.2.1). `handshake_timeout`
/// now bounds the idle timeout until the handshake completes.
#[test]
fn without_idle_timeouts_a_half_open_server_connection_still_goes() {
    for idle in [None, Some(Duration::MAX)] {
        let server = TransportConfig {
            max_idle_timeout: idle,
            ..TransportConfig::default()
        };
        let client = TransportConfig {
            max_idle_timeout: None,
            ..TransportConfig::default()
        };
        let (left, sent, next) = half_open(server, client, Duration::from_secs(24 * 3600));
        assert_eq!(
            left, 0,
            "max_idle_timeout {idle:?}: a day on, the half-open connection is still there ({sent} datagrams \
             sent); next timer in {next:?}"
        );
    }
}

/// As `Pair::run`, on a path that drops datagrams above `max_size` bytes; returns the datagrams sent.
fn run_on_narrow_path(p: &mut Pair, limit: Duration, max_size: usize) -> usize {
    use super::peer_errors::{deliver, sends, CLIENT, SERVER};
    let end = p.now + limit;
    let mut count = 0;
    loop {
        let mut moved = false;
        for from_client in [true, false] {
            let (src, dst, from) = if from_client {
                (&mut p.client, &mut p.server, CLIENT)
            } else {
                (&mut p.server, &mut p.client, SERVER)
            };
            for d in sends(src, p.now) {
                moved = true;
                count += 1;
                if d.len() <= max_size {
                    deliver(dst, p.now, from, &d);
                }
            }
        }
        while let Some((_, e)) = p.client.poll_event() {
            p.client_events.push(e);
        }
        while let Some((h, e)) = p.server.poll_event() {
            p.server_h.get_or_insert(h);
            p.server_events.push(e);
        }
        if !moved && !p.advance_to_next_deadline(end) {
            return count;
        }
    }
}

/// MTU discovery with a search interval of zero, on a path that carries less than the upper bound: the
/// search starts again at once each time it ends, so an idle connection probes for ever (lost probes,
/// PTO PINGs, their ACKs) and never reaches its idle timeout. The interval is now taken as at least
/// 60 s.
#[test]
fn a_zero_mtu_search_interval_does_not_probe_for_ever_nor_keep_an_idle_connection_alive() {
    let t = TransportConfig {
        mtu_discovery: Some(MtuDiscoveryConfig {
            interval: Duration::ZERO,
            ..MtuDiscoveryConfig::default()
        }),
        ..TransportConfig::default()
    };
    // The path carries 1300 bytes from the start; once connected nothing is sent: the connection is
    // idle (idle timeout 30 s).
    let mut p = Pair::start_with(t.clone(), t);
    let sent = run_on_narrow_path(&mut p, Duration::from_secs(300), 1300);
    assert!(p.client_events.contains(&crate::Event::Connected));
    let h = p.server_h.unwrap();
    let probes = p.server.conn(h).map(|c| c.stats().mtu_probes_sent).ok();
    assert!(
        Pair::lost(&p.client_events).is_some(),
        "after 300 s idle the connection is still open: {sent} datagrams, server MTU probes so far {probes:?}"
    );
}

/// A connection ID generator whose IDs are not as long as its `cid_len` says.
struct MislengthGenerator;

impl crate::config::ConnectionIdGenerator for MislengthGenerator {
    fn generate(&mut self, rng: &mut crate::rng::Rng) -> crate::wire::ConnectionId {
        let mut bytes = [0u8; 4];
        rng.fill(&mut bytes);
        crate::wire::ConnectionId::new(&bytes).unwrap_or_default()
    }

    fn cid_len(&self) -> usize {
        8
    }
}

/// RFC 9000 §5.2, §17.3.1: a short header does not carry the length of its Destination Connection ID;
/// the endpoint reads `cid_len()` bytes. A generator that says 8 and makes 4-byte IDs used to be taken at
/// its word for the length and at its IDs for the routes: the handshake (long headers, lengths on the
/// wire) completed, then every 1-RTT packet from the peer was unroutable (136 datagrams dropped) and
/// answered with a stateless reset (128 sent) the peer could not recognise: a connection reported as
/// connected that carried nothing. Such IDs are now refused: no connection starts (`connect` fails,
/// an incoming Initial counts in `connections_failed`), so the misconfiguration shows at once.
#[test]
fn ids_of_another_length_than_the_generator_announces_start_no_connection() {
    let mut server = crate::EndpointConfig::with_seed(1);
    server.cid_generator = Box::new(MislengthGenerator);
    let mut p = Pair::start(
        TransportConfig::default(),
        TransportConfig::default(),
        server,
        crate::EndpointConfig::with_seed(2),
    );
    p.run(Duration::from_secs(5));
    let s = p.server.stats();
    // Each of the client's Initials (it retransmits them) fails to start a connection.
    assert_eq!(
        (
            s.connections_incoming,
            s.connections_failed,
            s.stateless_resets_sent,
            s.dropped_unroutable
        ),
        (0, s.datagrams_received, 0, 0),
        "{s:?}"
    );
    assert!(s.connections_failed > 0);
    assert!(!p.client_events.contains(&crate::Event::Connected));

    let mut client_config = crate::EndpointConfig::with_seed(3);
    client_config.cid_generator = Box::new(MislengthGenerator);
    let mut client = super::Endpoint::new(client_config, None);
    let result = client.connect(
        crate::test_util::epoch(),
        p.client_config.clone(),
        super::peer_errors::SERVER.parse().unwrap(),
        "localhost",
    );
    assert_eq!(result, Err(crate::ConnectError::ConnectionIdInUse));
    assert_eq!(client.stats().connections_active, 0);
}
