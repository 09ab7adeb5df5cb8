//! Handshakes between quicsand and quicsand, and between quicsand and quinn-proto in both roles, on an
//! in-memory network with a virtual clock: no loss, targeted drops, random loss, cipher suites, ALPN and
//! certificate failures.

mod common;

use std::time::Duration;

use common::{pair, pair_with, Dir, Engine, LostReason, Pair, TestCert};
use quicsand::crypto::Suite;

const PAIRS: [(Engine, Engine); 3] = [
    (Engine::Quicsand, Engine::Quicsand),
    (Engine::Quicsand, Engine::Quinn),
    (Engine::Quinn, Engine::Quicsand),
];

fn connect(p: &mut Pair, limit: Duration) -> bool {
    p.drive_until(limit, |p| p.both_connected())
}

/// Whether the pair's client, just replaced by a new one, connects within `limit` (the server's events
/// still hold the first connection's).
fn new_client_connects(p: &mut Pair, limit: Duration) -> bool {
    p.client_events.clear();
    p.drive_until(limit, |p| p.client_events.contains(&common::NodeEvent::Connected))
}

fn elapsed(p: &Pair) -> Duration {
    p.now - common::epoch()
}

#[test]
fn no_loss_all_pairs() {
    for (c, s) in PAIRS {
        let mut p = pair(c, s, 2);
        assert!(
            connect(&mut p, Duration::from_secs(5)),
            "{c:?} client, {s:?} server: client {:?} server {:?}",
            p.client_events,
            p.server_events
        );
        // A lossless handshake with 10 ms one-way latency takes a round trip or two, not a timeout.
        assert!(
            elapsed(&p) < Duration::from_millis(100),
            "{c:?}/{s:?} took {:?}",
            elapsed(&p)
        );
    }
}

/// Each of the first eight datagrams (counting both directions in send order) is dropped in turn; the
/// handshake still completes, within a bounded virtual time.
#[test]
fn each_of_the_first_eight_datagrams_dropped() {
    let cert = TestCert::new();
    for (c, s) in PAIRS {
        for victim in 0..8u64 {
            let mut p = pair_with(c, s, 3 + victim, &cert, &[]);
            let mut count = 0u64;
            p.filter = Box::new(move |_, _, _, _| {
                let n = count;
                count += 1;
                (n != victim).then_some(Duration::ZERO)
            });
            assert!(
                connect(&mut p, Duration::from_secs(10)),
                "{c:?}/{s:?} with datagram {victim} dropped: client {:?} server {:?}",
                p.client_events,
                p.server_events
            );
        }
    }
}

/// 30% loss in both directions, over many seeds: every handshake completes within the bound.
#[test]
fn thirty_percent_loss_many_seeds() {
    let cert = TestCert::new();
    let seeds: u64 = std::env::var("QUICSAND_LOSS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    for (c, s) in PAIRS {
        let mut slowest = Duration::ZERO;
        for seed in 0..seeds {
            let mut p = pair_with(c, s, 1000 + seed, &cert, &[]);
            p.filter = Box::new(|_, _, _, rng| (!rng.chance(0.3)).then_some(Duration::ZERO));
            assert!(
                connect(&mut p, Duration::from_secs(60)),
                "{c:?}/{s:?} seed {seed}: client {:?} server {:?}",
                p.client_events,
                p.server_events
            );
            slowest = slowest.max(elapsed(&p));
        }
        eprintln!("{c:?} client / {s:?} server: slowest of {seeds} lossy handshakes took {slowest:?}");
    }
}

#[test]
fn each_cipher_suite_forced_on_both_sides() {
    let cert = TestCert::new();
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::ChaCha20Poly1305] {
        for (c, s) in PAIRS {
            let mut p = pair_with(c, s, 7, &cert, &[suite]);
            assert!(connect(&mut p, Duration::from_secs(5)), "{suite:?} {c:?}/{s:?}");
            for node in [&mut p.client, &mut p.server] {
                if let Some(q) = node
                    .as_any()
                    .downcast_mut::<common::quicsand_node::QuicsandNode>()
                {
                    let h = q.handle.unwrap();
                    assert_eq!(q.endpoint.conn(h).unwrap().suite(), Some(suite));
                }
            }
        }
    }
}

#[test]
fn alpn_mismatch_fails_with_no_application_protocol() {
    let cert = TestCert::new();
    for (c, s) in PAIRS {
        let mut p = pair_with(c, s, 8, &cert, &[]);
        // Replace the client with one offering another protocol.
        let tls =
            quicsand::crypto::tls::client_config(vec![cert.cert.clone()], vec![b"other".to_vec()]).unwrap();
        p.client = match c {
            Engine::Quicsand => {
                let mut n = common::quicsand_node::QuicsandNode::client(common::client_addr(), 9);
                n.connect_tls(p.now, tls, common::server_addr(), "localhost");
                Box::new(n)
            }
            Engine::Quinn => {
                let mut n = common::quinn_node::QuinnNode::client(common::client_addr(), 9);
                n.connect(p.now, common::server_addr(), "localhost", tls);
                Box::new(n)
            }
        };
        p.drive(Duration::from_secs(5));
        // RFC 9001 §8.1: no_application_protocol (120) as CRYPTO_ERROR 0x178.
        assert_eq!(
            Pair::lost(&p.client_events),
            Some(&LostReason::Transport { code: 0x178 }),
            "{c:?}/{s:?}"
        );
        assert!(!p.both_connected());
    }
}

#[test]
fn untrusted_certificate_fails_on_the_client() {
    let cert = TestCert::new();
    let other = TestCert::new();
    for (c, s) in PAIRS {
        let mut p = pair_with(c, s, 10, &cert, &[]);
        let tls = other.client_tls(&[]);
        p.client = match c {
            Engine::Quicsand => {
                let mut n = common::quicsand_node::QuicsandNode::client(common::client_addr(), 11);
                n.connect_tls(p.now, tls, common::server_addr(), "localhost");
                Box::new(n)
            }
            Engine::Quinn => {
                let mut n = common::quinn_node::QuinnNode::client(common::client_addr(), 11);
                n.connect(p.now, common::server_addr(), "localhost", tls);
                Box::new(n)
            }
        };
        p.drive(Duration::from_secs(5));
        let Some(LostReason::Transport { code }) = Pair::lost(&p.client_events) else {
            panic!("{c:?}/{s:?}: client events {:?}", p.client_events)
        };
        assert!(
            (0x100..=0x1ff).contains(code),
            "{c:?}/{s:?}: CRYPTO_ERROR expected, got {code:#x}"
        );
        assert!(!p.client_events.contains(&common::NodeEvent::Connected));
    }
}

/// RFC 9001 §4.3: a ClientHello may span several Initial packets (here about 5 KB, with a long ALPN
/// list ending in the one protocol the server takes). The server reassembles it, also when the client's
/// first datagram, the one that starts it, is lost and a later piece arrives first.
#[test]
fn a_client_hello_spanning_several_initial_packets_completes() {
    let cert = TestCert::new();
    let mut alpn: Vec<Vec<u8>> = (0..24u8).map(|i| vec![b'a' + i; 200]).collect();
    alpn.push(common::ALPN.to_vec());
    let mut tls = (*cert.client_tls(&[])).clone();
    tls.alpn_protocols = alpn;
    let tls = std::sync::Arc::new(tls);
    for (c, s) in PAIRS {
        for drop_first in [false, true] {
            let mut p = pair_with(c, s, 16, &cert, &[]);
            p.client = match c {
                Engine::Quicsand => {
                    let mut n = common::quicsand_node::QuicsandNode::client(common::client_addr(), 17);
                    n.connect_tls(p.now, tls.clone(), common::server_addr(), "localhost");
                    Box::new(n)
                }
                Engine::Quinn => {
                    let mut n = common::quinn_node::QuinnNode::client(common::client_addr(), 17);
                    n.connect(p.now, common::server_addr(), "localhost", tls.clone());
                    Box::new(n)
                }
            };
            let mut count = 0u64;
            p.filter = Box::new(move |dir, _, _, _| {
                let first = dir == Dir::ClientToServer && count == 0;
                if dir == Dir::ClientToServer {
                    count += 1;
                }
                (!(drop_first && first)).then_some(Duration::ZERO)
            });
            assert!(
                connect(&mut p, Duration::from_secs(10)),
                "{c:?}/{s:?} (first datagram dropped: {drop_first}): client {:?} server {:?}",
                p.client_events,
                p.server_events
            );
            assert!(
                p.bytes[Dir::ClientToServer as usize] > 4 * 1200,
                "the ClientHello took several datagrams"
            );
        }
    }
}

/// A server that never hears back from the client sends at most three times what it received
/// (RFC 9000 §8.1), however long it keeps retransmitting.
#[test]
fn server_respects_the_amplification_limit() {
    let mut p = pair(Engine::Quicsand, Engine::Quicsand, 12);
    // Only the client's first datagram arrives; everything after it is lost.
    p.filter =
        Box::new(|dir, index, _, _| (dir == Dir::ServerToClient || index == 0).then_some(Duration::ZERO));
    p.drive(Duration::from_secs(30));
    let received = p.bytes[Dir::ClientToServer as usize];
    let first = 1200; // the client's first Initial datagram
    assert!(received >= first);
    let sent = p.bytes[Dir::ServerToClient as usize];
    assert!(sent > 0, "the server answered");
    assert!(
        sent <= 3 * first,
        "server sent {sent} bytes after receiving {first}"
    );
}

/// quicsand does not take 0-RTT. A server TLS configuration that allows early data (as quinn's own
/// does) must not have rustls tell a resuming client its early data was accepted (RFC 9001 §4.6.2): the
/// engine drops every 0-RTT packet, so the client would only learn through loss recovery that the data
/// it sent in them is to be sent again. The same two connections to a quinn server with that
/// configuration show that the client does resume and send early data.
#[test]
fn a_resuming_quinn_client_is_not_told_its_early_data_was_accepted() {
    use common::quinn_node::QuinnNode;
    let cert = TestCert::new();
    let mut server_tls = (*cert.server_tls(&[])).clone();
    server_tls.max_early_data_size = u32::MAX;
    let server_tls = std::sync::Arc::new(server_tls);
    for engine in [Engine::Quinn, Engine::Quicsand] {
        let server: Box<dyn common::Node> = match engine {
            Engine::Quinn => Box::new(QuinnNode::server_with_tls(
                common::server_addr(),
                server_tls.clone(),
                13,
            )),
            Engine::Quicsand => Box::new(common::quicsand_node::QuicsandNode::server(
                common::server_addr(),
                quicsand::ServerConfig::new(server_tls.clone()),
                13,
            )),
        };
        // One client TLS configuration for both connections: the second resumes with the first's
        // ticket.
        let mut client_tls = (*cert.client_tls(&[])).clone();
        client_tls.enable_early_data = true;
        let client_tls = std::sync::Arc::new(client_tls);
        let mut client = QuinnNode::client(common::client_addr(), 14);
        client.connect(
            common::epoch(),
            common::server_addr(),
            "localhost",
            client_tls.clone(),
        );
        let mut p = Pair::new(Box::new(client), server, 15);
        assert!(connect(&mut p, Duration::from_secs(5)));
        // The session tickets arrive after the handshake.
        p.drive(Duration::from_secs(1));
        // The second connection from another quinn endpoint (the harness's IDs repeat per endpoint).
        let mut client = QuinnNode::client(common::client_addr(), 16);
        client.connect(p.now, common::server_addr(), "localhost", client_tls);
        p.client = Box::new(client);
        assert!(
            new_client_connects(&mut p, Duration::from_secs(5)),
            "{engine:?}: client {:?} server {:?}",
            p.client_events,
            p.server_events
        );
        let conn = p
            .client
            .as_any()
            .downcast_mut::<QuinnNode>()
            .expect("a quinn client")
            .live();
        let early = (conn.has_0rtt(), conn.accepted_0rtt());
        match engine {
            Engine::Quinn => assert_eq!(early, (true, true), "the control: 0-RTT offered and taken"),
            // The ticket does not offer early data, so none is sent and none is said to be accepted.
            Engine::Quicsand => assert_eq!(early, (false, false), "0-RTT offered, accepted"),
        }
    }
}

/// The client side of the same rule: quicsand sends no 0-RTT packets, so a client TLS configuration
/// that enables early data must not have rustls offer it in a resumed ClientHello (RFC 9001 §4.6.1: the
/// early_data extension is how a client says it sends 0-RTT). A quinn server that allows early data
/// would otherwise accept 0-RTT that never comes (§4.6.2), keeping its 0-RTT keys and holding back
/// nothing for it. The control: quinn's own client, with the same configuration, has its 0-RTT taken.
#[test]
fn a_resuming_quicsand_client_does_not_offer_early_data() {
    use common::quicsand_node::QuicsandNode;
    use common::quinn_node::QuinnNode;
    use rustls::server::StoresServerSessions;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The server's session cache, counting the sessions found again: resumptions.
    #[derive(Debug)]
    struct Counting(Arc<dyn StoresServerSessions>, Arc<AtomicUsize>);
    impl StoresServerSessions for Counting {
        fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
            self.0.put(key, value)
        }
        fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
            let found = self.0.get(key);
            self.1.fetch_add(usize::from(found.is_some()), Ordering::Relaxed);
            found
        }
        fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
            let found = self.0.take(key);
            self.1.fetch_add(usize::from(found.is_some()), Ordering::Relaxed);
            found
        }
        fn can_cache(&self) -> bool {
            self.0.can_cache()
        }
    }

    let cert = TestCert::new();
    for engine in [Engine::Quinn, Engine::Quicsand] {
        let resumed = Arc::new(AtomicUsize::new(0));
        let mut server_tls = (*cert.server_tls(&[])).clone();
        server_tls.max_early_data_size = u32::MAX;
        server_tls.session_storage = Arc::new(Counting(server_tls.session_storage.clone(), resumed.clone()));
        let server_tls = Arc::new(server_tls);
        let server = QuinnNode::server_with_tls(common::server_addr(), server_tls.clone(), 23);
        // One client TLS configuration for both connections: the second resumes with the first's
        // ticket.
        let mut client_tls = (*cert.client_tls(&[])).clone();
        client_tls.enable_early_data = true;
        let client_tls = std::sync::Arc::new(client_tls);
        let client = |seed: u64, now| -> Box<dyn common::Node> {
            match engine {
                Engine::Quinn => {
                    let mut c = QuinnNode::client(common::client_addr(), seed);
                    c.connect(now, common::server_addr(), "localhost", client_tls.clone());
                    Box::new(c)
                }
                Engine::Quicsand => {
                    let mut c = QuicsandNode::client(common::client_addr(), seed);
                    c.connect_tls(now, client_tls.clone(), common::server_addr(), "localhost");
                    Box::new(c)
                }
            }
        };
        let mut p = Pair::new(client(24, common::epoch()), Box::new(server), 25);
        assert!(connect(&mut p, Duration::from_secs(5)));
        // The session tickets arrive after the handshake.
        p.drive(Duration::from_secs(1));
        // The second connection from another endpoint (the harness's IDs repeat per endpoint).
        p.client = client(26, p.now);
        assert!(
            new_client_connects(&mut p, Duration::from_secs(5)),
            "{engine:?}: client {:?} server {:?}",
            p.client_events,
            p.server_events
        );
        let server = p
            .server
            .as_any()
            .downcast_mut::<QuinnNode>()
            .expect("a quinn server");
        let resumed_conn = server.connections().nth(1).expect("the second connection");
        // A quinn server has 0-RTT keys exactly when it accepted early data.
        let accepted = resumed_conn.has_0rtt();
        assert_eq!(
            resumed.load(Ordering::Relaxed),
            1,
            "{engine:?}: the second connection resumes"
        );
        match engine {
            Engine::Quinn => assert!(accepted, "the control: 0-RTT offered and taken"),
            Engine::Quicsand => assert!(!accepted, "0-RTT offered by a client that never sends it"),
        }
    }
}

/// A server under `AcceptPolicy::Refuse` answers a client's first Initial with a CONNECTION_REFUSED
/// close in an Initial of its own, made without connection state: quicsand and quinn-proto clients both
/// take it and end at once (RFC 9000 §5.2.2), not after their idle timeout.
#[test]
fn a_refusing_server_ends_either_client_within_a_round_trip() {
    let cert = TestCert::new();
    for c in [Engine::Quicsand, Engine::Quinn] {
        let mut p = pair_with(c, Engine::Quicsand, 21, &cert, &[]);
        let mut config = quicsand::ServerConfig::new(cert.server_tls(&[]));
        config.accept = quicsand::AcceptPolicy::Refuse;
        p.server = Box::new(common::quicsand_node::QuicsandNode::server(
            common::server_addr(),
            config,
            21,
        ));
        let refused = p.drive_until(Duration::from_secs(5), |p| Pair::lost(&p.client_events).is_some());
        assert!(refused, "{c:?}: no answer");
        // CONNECTION_REFUSED is transport error 0x02.
        assert_eq!(
            Pair::lost(&p.client_events),
            Some(&LostReason::Transport { code: 0x02 }),
            "{c:?}"
        );
        assert!(
            elapsed(&p) < Duration::from_millis(100),
            "{c:?}: {:?}",
            elapsed(&p)
        );
    }
}
