//! Connection lifetime with quicsand and quinn-proto peers: close in both directions, the idle timeout,
//! draining that frees the handle, and key updates started by either side.

mod common;

use std::time::Duration;

use common::quicsand_node::QuicsandNode;
use common::{pair, pair_with, Engine, LostReason, NodeEvent, Pair, TestCert};

const PAIRS: [(Engine, Engine); 3] = [
    (Engine::Quicsand, Engine::Quicsand),
    (Engine::Quicsand, Engine::Quinn),
    (Engine::Quinn, Engine::Quicsand),
];

fn connected(c: Engine, s: Engine, seed: u64) -> Pair {
    let mut p = pair(c, s, seed);
    assert!(
        p.drive_until(Duration::from_secs(5), |p| p.both_connected()),
        "{c:?}/{s:?} handshake"
    );
    p
}

fn quicsand(node: &mut Box<dyn common::Node>) -> Option<&mut QuicsandNode> {
    node.as_any().downcast_mut::<QuicsandNode>()
}

#[test]
fn close_from_either_side_reaches_the_other() {
    for (c, s) in PAIRS {
        for client_closes in [true, false] {
            let mut p = connected(c, s, 20);
            let now = p.now;
            if client_closes {
                p.client.close(now, 42, b"done here");
            } else {
                p.server.close(now, 42, b"done here");
            }
            p.drive(Duration::from_secs(2));
            let (closer, other) = if client_closes {
                (&p.client_events, &p.server_events)
            } else {
                (&p.server_events, &p.client_events)
            };
            let want = LostReason::ApplicationClosed {
                code: 42,
                reason: b"done here".to_vec(),
            };
            assert_eq!(
                Pair::lost(other),
                Some(&want),
                "{c:?}/{s:?}, client closes: {client_closes}"
            );
            assert_eq!(
                Pair::lost(closer),
                Some(&LostReason::LocallyClosed),
                "{c:?}/{s:?}"
            );
        }
    }
}

#[test]
fn draining_ends_and_frees_the_handle() {
    let mut p = connected(Engine::Quicsand, Engine::Quicsand, 21);
    let h_client = quicsand(&mut p.client).unwrap().handle.unwrap();
    let h_server = quicsand(&mut p.server).unwrap().handle.unwrap();
    let now = p.now;
    p.client.close(now, 0, b"");
    // Right after the close both connections still exist: closing and draining last three PTOs.
    p.drive_until(Duration::from_millis(50), |p| {
        !p.server_events.is_empty() && p.server_events.len() > 1
    });
    assert!(
        quicsand(&mut p.server).unwrap().endpoint.conn(h_server).is_ok(),
        "draining keeps the handle"
    );
    p.drive(Duration::from_secs(5));
    for (node, h) in [(&mut p.client, h_client), (&mut p.server, h_server)] {
        let q = quicsand(node).unwrap();
        assert!(q.endpoint.conn(h).is_err(), "handle freed after draining");
        assert_eq!(q.endpoint.stats().connections_active, 0);
        assert_eq!(q.endpoint.poll_timeout(), None, "nothing left to wake up for");
    }
}

/// RFC 9000 §10.1: the idle timeout in force is the smaller of both sides' values; both sides close
/// silently when it passes with no activity.
#[test]
fn idle_timeout_fires_at_the_negotiated_time() {
    let cert = TestCert::new();
    for (c, s) in [
        (Engine::Quicsand, Engine::Quicsand),
        (Engine::Quicsand, Engine::Quinn),
    ] {
        let mut p = pair_with(c, s, 22, &cert, &[]);
        // Replace the client with one advertising a 2 s idle timeout (quinn's and our server's: 30 s).
        let mut config = quicsand::ClientConfig::new(cert.client_tls(&[]));
        config.transport.max_idle_timeout = Some(Duration::from_secs(2));
        let mut client = QuicsandNode::client(common::client_addr(), 23);
        client.connect(p.now, config, common::server_addr(), "localhost");
        p.client = Box::new(client);
        assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
        assert!(
            p.drive_until(Duration::from_secs(60), |p| Pair::lost(&p.client_events)
                .is_some())
        );
        assert_eq!(
            Pair::lost(&p.client_events),
            Some(&LostReason::TimedOut),
            "{c:?}/{s:?}"
        );
        // Measured from the last datagram the client received: the idle timer restarts then (§10.1).
        let idle = p.now - p.last_delivery[1].unwrap();
        assert!(
            idle >= Duration::from_secs(2) && idle <= Duration::from_millis(2050),
            "{c:?}/{s:?}: {idle:?}"
        );
        // The server uses the same negotiated value, not its own 30 s.
        assert!(
            p.drive_until(Duration::from_secs(60), |p| Pair::lost(&p.server_events)
                .is_some())
        );
        assert_eq!(
            Pair::lost(&p.server_events),
            Some(&LostReason::TimedOut),
            "{c:?}/{s:?}"
        );
        let server_idle = p.now - p.last_delivery[0].unwrap();
        assert!(
            server_idle >= Duration::from_secs(2) && server_idle <= Duration::from_millis(2050),
            "{c:?}/{s:?}: server idle {server_idle:?}"
        );
    }
}

/// Several key updates in a row, started by one side, then the other (RFC 9001 §6); quinn-proto peers
/// follow ours and start their own. The connection stays up and keeps working after each.
#[test]
fn key_updates_started_by_either_side() {
    for (c, s) in PAIRS {
        let mut p = connected(c, s, 24);
        p.drive(Duration::from_millis(500));
        let mut observed = 0;
        for round in 0..6 {
            let client_starts = round % 2 == 0;
            let starter = if client_starts {
                &mut p.client
            } else {
                &mut p.server
            };
            starter.force_key_update();
            starter.ping();
            // Long enough for the old keys of the previous update to go (three PTOs).
            p.drive_until(Duration::from_secs(1), |_| false);
            p.client.ping();
            p.server.ping();
            p.drive_until(Duration::from_millis(300), |_| false);
            let updates = [p.client.key_updates(), p.server.key_updates()]
                .into_iter()
                .flatten()
                .max();
            let updates = updates.unwrap_or_else(|| {
                panic!(
                    "{c:?}/{s:?} round {round}: connection gone: {:?} / {:?}",
                    p.client_events, p.server_events
                )
            });
            assert!(
                updates > observed,
                "{c:?}/{s:?} round {round}: key updates stayed at {updates}"
            );
            observed = updates;
        }
        assert!(
            p.client_events.iter().all(|e| !matches!(e, NodeEvent::Lost(_))),
            "{c:?}/{s:?}: {:?}",
            p.client_events
        );
        assert!(
            p.server_events.iter().all(|e| !matches!(e, NodeEvent::Lost(_))),
            "{c:?}/{s:?}: {:?}",
            p.server_events
        );
        assert!(observed >= 6, "{c:?}/{s:?}: {observed} updates");
        eprintln!("{c:?} client / {s:?} server: {observed} key updates seen by quicsand");
    }
}

/// With a keep-alive shorter than the idle timeout, a quiet connection stays up; without it, it times
/// out.
#[test]
fn keep_alive_holds_a_quiet_connection_open() {
    let cert = TestCert::new();
    for keep_alive in [Some(Duration::from_secs(1)), None] {
        for s in [Engine::Quicsand, Engine::Quinn] {
            let mut p = pair_with(Engine::Quicsand, s, 25, &cert, &[]);
            let mut config = quicsand::ClientConfig::new(cert.client_tls(&[]));
            config.transport.max_idle_timeout = Some(Duration::from_secs(3));
            config.transport.keep_alive_interval = keep_alive;
            let mut client = QuicsandNode::client(common::client_addr(), 26);
            client.connect(p.now, config, common::server_addr(), "localhost");
            p.client = Box::new(client);
            assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
            p.drive(Duration::from_secs(20));
            let lost = Pair::lost(&p.client_events).cloned();
            match keep_alive {
                Some(_) => assert_eq!(lost, None, "{s:?}: keep-alive kept it open"),
                None => assert_eq!(lost, Some(LostReason::TimedOut), "{s:?}: no keep-alive"),
            }
        }
    }
}
