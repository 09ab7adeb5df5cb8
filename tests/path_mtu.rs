//! A path MTU that shrinks in the middle of a transfer (RFC 9000 §14.3, RFC 8899 §4.3: a black hole),
//! found by a randomized soak of stream operations over changing paths (a helper's, session 19).
mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::quicsand_node::QuicsandNode;
use common::{pair, Engine, Node, Pair};
use quicsand::ConnectionStats;

fn stats(n: &mut dyn Node) -> ConnectionStats {
    n.as_any().downcast_mut::<QuicsandNode>().unwrap().conn().stats()
}

/// The path carries 1500-byte datagrams and discovery finds 1452; then, while the quicsand server
/// sends `len` bytes on a stream, the path shrinks to 1200. `poke` runs every 50 ms. Returns whether the
/// client got the whole stream within 30 s, and the server's statistics then.
fn shrink_mid_transfer(p: Pair, len: usize, poke: impl FnMut(&mut Pair)) -> (bool, ConnectionStats) {
    let (_, done, stats) = shrink_mid_transfer_pair(p, len, poke);
    (done, stats)
}

/// [`shrink_mid_transfer`], which also hands the pair back.
fn shrink_mid_transfer_pair(
    mut p: Pair,
    len: usize,
    mut poke: impl FnMut(&mut Pair),
) -> (Pair, bool, ConnectionStats) {
    let mtu = Rc::new(Cell::new(1500usize));
    let m = mtu.clone();
    p.filter = Box::new(move |_, _, d: &[u8], _| (d.len() <= m.get()).then_some(Duration::ZERO));
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    p.drive(Duration::from_secs(3));
    assert_eq!(
        stats(p.server.as_mut()).path_mtu,
        1452,
        "discovery found the path's size"
    );
    let id = p.server.send_stream(p.now, common::payload(len, 7));
    p.drive(Duration::from_millis(30));
    mtu.set(1200);
    let t0 = p.now;
    while p.now - t0 < Duration::from_secs(30) {
        if p.client.received_streams().get(&id) == Some(&(len, true)) {
            let s = stats(p.server.as_mut());
            return (p, true, s);
        }
        poke(&mut p);
        let d = p.now + Duration::from_millis(50);
        while p.step_before(Some(d)) {}
    }
    let s = stats(p.server.as_mut());
    (p, false, s)
}

#[test]
fn a_bulk_transfer_survives_an_mtu_shrink() {
    let (done, s) = shrink_mid_transfer(pair(Engine::Quicsand, Engine::Quicsand, 3), 200_000, |_| {});
    assert!(done, "transfer stuck; server path_mtu {}", s.path_mtu);
    assert!(s.mtu_black_holes >= 1, "{s:?}");
}

/// The server PINGs every 50 ms, so small packets keep being acknowledged while its full-size ones are
/// lost.
#[test]
fn a_transfer_survives_an_mtu_shrink_while_small_packets_still_get_through() {
    for client in [Engine::Quicsand, Engine::Quinn] {
        let p = pair(client, Engine::Quicsand, 3);
        let (done, s) = shrink_mid_transfer(p, 200_000, |p| p.server.ping());
        assert!(done, "{client:?}: transfer stuck; server path_mtu {}", s.path_mtu);
    }
}

/// A client whose stream window is 1200 bytes: each of the server's stream packets carries up to 1200
/// bytes of one stream, a datagram over 1200 bytes, while its small packets (here PINGs) still arrive.
/// Their acknowledgements keep PTOs and persistent congestion from coming, so only the losses of the
/// large packets, one event after another with none of them acknowledged, show the black hole; before,
/// the server resent them at 1452 bytes for ever.
#[test]
fn a_small_window_transfer_survives_an_mtu_shrink_while_small_packets_get_through() {
    let cert = common::TestCert::new();
    let mut client = QuicsandNode::client(common::client_addr(), 5);
    let mut config = quicsand::ClientConfig::new(cert.client_tls(&[]));
    config.transport.streams.stream_receive_window = 1200;
    config.transport.streams.max_stream_receive_window = 0;
    client.connect(common::epoch(), config, common::server_addr(), "localhost");
    let server = QuicsandNode::server(
        common::server_addr(),
        quicsand::ServerConfig::new(cert.server_tls(&[])),
        6,
    );
    let p = Pair::new(Box::new(client), Box::new(server), 3);
    let (done, s) = shrink_mid_transfer(p, 6000, |p| p.server.ping());
    assert!(done, "transfer stuck after 30 s; server path_mtu {}", s.path_mtu);
    assert_eq!(s.path_mtu, 1200, "back to the base, and no larger probe passes");
    assert_eq!(s.mtu_black_holes, 1);
}

/// A path that always carries 1500 bytes: the server sends a 1400-byte DATAGRAM every 100 ms and a
/// PING in between, and three of the large datagrams in a row are lost once. That looks like a black
/// hole (only large packets lost, small ones acknowledged), so a probe of the current size goes out; it
/// gets through, and the size stays. Found in review: before the probe, the size fell back to 1200.
#[test]
fn three_lost_large_packets_among_small_ones_are_not_a_black_hole() {
    let mut p = pair(Engine::Quicsand, Engine::Quicsand, 3);
    let drop_large = Rc::new(Cell::new(0u32));
    let dl = drop_large.clone();
    p.filter = Box::new(move |from, _, d: &[u8], _| {
        if from == common::Dir::ServerToClient && d.len() > 1300 && dl.get() > 0 {
            dl.set(dl.get() - 1);
            return None;
        }
        Some(Duration::ZERO)
    });
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    p.drive(Duration::from_secs(3));
    assert_eq!(stats(p.server.as_mut()).path_mtu, 1452);
    let probes_before = stats(p.server.as_mut()).mtu_probes_sent;
    drop_large.set(3);
    for i in 0..40 {
        if i % 2 == 0 {
            let _ = p.server.send_datagram(bytes::Bytes::from(vec![7u8; 1400]));
        } else {
            p.server.ping();
        }
        let d = p.now + Duration::from_millis(50);
        while p.step_before(Some(d)) {}
        let _ = p.client.recv_datagrams();
    }
    let s = stats(p.server.as_mut());
    assert_eq!(drop_large.get(), 0, "three were dropped");
    assert_eq!(
        s.mtu_black_holes, 0,
        "fell back on a path that never shrank: {s:?}"
    );
    assert_eq!(s.path_mtu, 1452);
    assert_eq!(
        s.mtu_probes_sent,
        probes_before + 1,
        "one probe confirmed the size"
    );
}

/// A quicsand pair whose transport settings `tweak` adjusts on both sides.
fn quicsand_pair_with(seed: u64, tweak: impl Fn(&mut quicsand::TransportConfig)) -> Pair {
    let cert = common::TestCert::new();
    let mut client = QuicsandNode::client(common::client_addr(), seed ^ 0xc1);
    let mut config = quicsand::ClientConfig::new(cert.client_tls(&[]));
    tweak(&mut config.transport);
    client.connect(common::epoch(), config, common::server_addr(), "localhost");
    let mut server_config = quicsand::ServerConfig::new(cert.server_tls(&[]));
    tweak(&mut server_config.transport);
    let server = QuicsandNode::server(common::server_addr(), server_config, seed ^ 0x5e);
    Pair::new(Box::new(client), Box::new(server), seed)
}

/// RFC 9000 §10.1: an idle connection closes when its idle timeout runs out; deferring that is the
/// applications' choice (§10.1.2, keep-alives), not path MTU discovery's. With an idle timeout (300 s)
/// longer than the raise interval (60 s), each new search after the interval sent probes, ack-eliciting,
/// whose sending and acknowledgement restarted both idle timers, so a connection neither application
/// used stayed open for ever. The search after the interval has no deadline of its own: it went out at
/// the first poll of the endpoint after the interval, and the harness polls both endpoints at every
/// step, here at least every 10 s (as an application loop on a tick might). A path narrower than the
/// upper bound makes every search send several probes.
#[test]
fn searches_after_the_interval_do_not_keep_an_idle_connection_alive() {
    let idle = Duration::from_secs(300);
    let mut p = quicsand_pair_with(9, |t| {
        t.max_idle_timeout = Some(idle);
        t.mtu_discovery = Some(quicsand::MtuDiscoveryConfig {
            interval: Duration::from_secs(60),
            ..quicsand::MtuDiscoveryConfig::default()
        });
    });
    let sent = Rc::new(Cell::new(0u32));
    let n = sent.clone();
    p.filter = Box::new(move |_, _, d: &[u8], _| {
        n.set(n.get() + 1);
        (d.len() <= 1400).then_some(Duration::ZERO)
    });
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    p.drive(Duration::from_secs(3));
    let mtu = stats(p.server.as_mut()).path_mtu;
    assert!(mtu > 1380 && mtu <= 1400, "the first search ran: {mtu}");
    let id = p.server.send_stream(p.now, common::payload(5000, 3));
    p.drive(Duration::from_secs(2));
    assert_eq!(p.client.received_streams().get(&id), Some(&(5000, true)));
    let last_use = p.now;
    sent.set(0);
    idle_until_both_close(&mut p, last_use, idle);
    assert!(
        p.now - last_use <= idle + Duration::from_secs(10),
        "open for {:?} after the last use, {} datagrams sent since",
        p.now - last_use,
        sent.get()
    );
    assert_eq!(sent.get(), 0, "nothing sent on the idle connection");
    assert_eq!(Pair::lost(&p.client_events), Some(&common::LostReason::TimedOut));
    assert_eq!(Pair::lost(&p.server_events), Some(&common::LostReason::TimedOut));
}

/// The search after the interval still runs on a connection in use: the path widens from 1400 to
/// 1500 bytes after the first search; two idle minutes (the interval is one) probe nothing, and once
/// the server sends again, its search finds 1452.
#[test]
fn the_search_after_the_interval_runs_once_the_connection_is_used_again() {
    let mut p = quicsand_pair_with(10, |t| {
        t.max_idle_timeout = Some(Duration::from_secs(300));
        t.mtu_discovery = Some(quicsand::MtuDiscoveryConfig {
            interval: Duration::from_secs(60),
            ..quicsand::MtuDiscoveryConfig::default()
        });
    });
    let mtu = Rc::new(Cell::new(1400usize));
    let sent = Rc::new(Cell::new(0u32));
    let (m, n) = (mtu.clone(), sent.clone());
    p.filter = Box::new(move |_, _, d: &[u8], _| {
        n.set(n.get() + 1);
        (d.len() <= m.get()).then_some(Duration::ZERO)
    });
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    p.drive(Duration::from_secs(3));
    let first = stats(p.server.as_mut()).path_mtu;
    assert!(first > 1380 && first <= 1400, "{first}");
    mtu.set(1500);
    sent.set(0);
    for _ in 0..12 {
        let tick = p.now + Duration::from_secs(10);
        while p.step_before(Some(tick)) {}
    }
    assert_eq!(sent.get(), 0, "nothing sent while idle, probes included");
    assert_eq!(stats(p.server.as_mut()).path_mtu, first);
    let id = p.server.send_stream(p.now, common::payload(3000, 4));
    p.drive(Duration::from_secs(3));
    assert_eq!(p.client.received_streams().get(&id), Some(&(3000, true)));
    assert_eq!(
        stats(p.server.as_mut()).path_mtu,
        1452,
        "searched again once in use"
    );
}

/// The probes sent for other reasons end too: the path shrinks to 1200 bytes during a transfer, the
/// black hole is found, and the search starts again at once from the top (it waits neither for the
/// interval nor for use), on a path that carries none of its probes: 15 of them, all lost, the last
/// after the transfer. Then neither application sends anything more, and the connection closes by its
/// idle timeout. (A probe confirming the size in use needs losses of large packets of the connection's
/// own, so an idle connection sends none.)
#[test]
fn probes_after_a_black_hole_do_not_keep_an_idle_connection_alive() {
    let idle = Duration::from_secs(300);
    let p = quicsand_pair_with(11, |t| {
        t.max_idle_timeout = Some(idle);
        t.mtu_discovery = Some(quicsand::MtuDiscoveryConfig {
            interval: Duration::from_secs(60),
            ..quicsand::MtuDiscoveryConfig::default()
        });
    });
    let (mut p, done, s) = shrink_mid_transfer_pair(p, 200_000, |_| {});
    assert!(done, "transfer stuck; server path_mtu {}", s.path_mtu);
    assert!(s.mtu_black_holes >= 1, "{s:?}");
    let last_use = p.now;
    idle_until_both_close(&mut p, last_use, idle);
    assert!(
        p.now - last_use <= idle + Duration::from_secs(10),
        "open for {:?} after the transfer",
        p.now - last_use
    );
    assert_eq!(Pair::lost(&p.client_events), Some(&common::LostReason::TimedOut));
    assert_eq!(Pair::lost(&p.server_events), Some(&common::LostReason::TimedOut));
}

/// Leaves the pair idle from `last_use`, stepping it at least every 10 s (as a driver that polls would),
/// until both sides have lost the connection or twice the idle timeout `idle` has passed.
fn idle_until_both_close(p: &mut Pair, last_use: Instant, idle: Duration) {
    let both_lost =
        |p: &Pair| Pair::lost(&p.client_events).is_some() && Pair::lost(&p.server_events).is_some();
    while !both_lost(p) && p.now - last_use < 2 * idle {
        let tick = p.now + Duration::from_secs(10);
        while p.step_before(Some(tick)) {}
    }
}
