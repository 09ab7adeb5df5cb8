//! Whole transfers through the deterministic simulator (`quicsand::sim`) over impaired links.
//!
//! Every test prints its seed when it fails; `QUICSAND_SIM_SEED=<seed> cargo test --test sim <name>`
//! replays the run exactly.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use quicsand::crypto::tls;
use quicsand::sim::{
    seed_from_env, BulkSender, GilbertElliott, LinkConfig, LinkEcn, NodeId, Simulation, Sink,
};
use quicsand::{ClientConfig, CongestionAlgorithm, ServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const ALPN: &[u8] = b"sim";

/// One Ed25519 certificate for the whole test binary: fixed-size keys and signatures, and the same
/// certificate in every run, so handshake sizes are the same from run to run.
fn cert() -> &'static (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>) {
    static CERT: OnceLock<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (
            CertificateDer::from(cert.der().to_vec()),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        )
    })
}

/// Fresh TLS configurations for one simulation with `seed`: with `deterministic_tls`, packet bytes
/// repeat with the seed, not only sizes and times.
fn configs(seed: u64) -> (ServerConfig, ClientConfig) {
    let (cert, key) = cert();
    let options = quicsand::sim::deterministic_tls(seed);
    let server = tls::server_config_with(
        vec![cert.clone()],
        PrivateKeyDer::Pkcs8(key.clone_key()),
        vec![ALPN.to_vec()],
        &options,
    )
    .unwrap();
    let client = tls::client_config_with(vec![cert.clone()], vec![ALPN.to_vec()], &options).unwrap();
    (ServerConfig::new(server), ClientConfig::new(client))
}

/// The fixed origin of virtual time for this test binary.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Prints the seed when the test panics.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation failed with seed {}; replay with QUICSAND_SIM_SEED={}",
                self.0, self.0
            );
        }
    }
}

struct Outcome {
    sim: Simulation,
    client: NodeId,
    server: NodeId,
    done: bool,
}

impl Outcome {
    fn sink(&self) -> &Sink {
        self.sim.app::<Sink>(self.server).unwrap()
    }
    fn sender(&self) -> &BulkSender {
        self.sim.app::<BulkSender>(self.client).unwrap()
    }
    fn report(&self, name: &str, total: u64) {
        let t = self.sink().completed_at().unwrap_or(self.sim.elapsed());
        let goodput = total as f64 * 8.0 / t.as_secs_f64() / 1e6;
        let trace = self.sim.trace();
        println!(
            "{name}: seed {} done {} in {:.3} s virtual, goodput {goodput:.2} Mbit/s, delivered {} dropped {} \
             corrupted {}, hash {:#018x}",
            self.sim.seed(),
            self.done,
            t.as_secs_f64(),
            trace.delivered,
            trace.dropped,
            trace.corrupted,
            trace.hash()
        );
    }
}

/// A client sending `total` bytes on `streams` streams to a server over a duplex link of `link`.
fn bulk(
    seed: u64,
    link: LinkConfig,
    total: u64,
    streams: usize,
    limit: Duration,
    setup: impl FnOnce(&mut Simulation, NodeId, NodeId),
) -> Outcome {
    bulk_with(configs(seed), seed, link, total, streams, limit, setup)
}

/// [`bulk`] with the given server and client configurations.
fn bulk_with(
    (server_config, client_config): (ServerConfig, ClientConfig),
    seed: u64,
    link: LinkConfig,
    total: u64,
    streams: usize,
    limit: Duration,
    setup: impl FnOnce(&mut Simulation, NodeId, NodeId),
) -> Outcome {
    let mut sim = Simulation::new(epoch(), seed);
    let server_addr = "10.0.0.2:4433".parse().unwrap();
    let server = sim.add_node(server_addr, Some(server_config), Box::new(Sink::default()));
    let sender = BulkSender::new(client_config, server_addr, "localhost", total, streams);
    let client = sim.add_node("10.0.0.1:50000".parse().unwrap(), None, Box::new(sender));
    sim.add_duplex_link(client, server, link);
    setup(&mut sim, client, server);
    let done = sim.run_until(limit, |sim| {
        let sink = sim.app::<Sink>(server).unwrap();
        sink.total_bytes() == total && sink.finished_streams() == streams
    });
    Outcome {
        sim,
        client,
        server,
        done,
    }
}

fn base_link() -> LinkConfig {
    LinkConfig::with_delay(Duration::from_millis(20))
}

/// Runs a bulk transfer and checks it completes byte-exact.
fn assert_completes(name: &str, default_seed: u64, link: LinkConfig, total: u64) -> Outcome {
    assert_completes_with(name, default_seed, link, total, |_, _, _| {})
}

fn assert_completes_with(
    name: &str,
    default_seed: u64,
    link: LinkConfig,
    total: u64,
    setup: impl FnOnce(&mut Simulation, NodeId, NodeId),
) -> Outcome {
    let seed = seed_from_env(default_seed);
    let _guard = SeedGuard(seed);
    let out = bulk(seed, link, total, 2, Duration::from_secs(120), setup);
    out.report(name, total);
    assert!(
        out.done,
        "{name}: transfer did not complete: {} of {total} bytes",
        out.sink().total_bytes()
    );
    assert_eq!(out.sink().total_bytes(), total);
    assert!(
        out.sink().streams.values().all(|s| s.pattern_ok),
        "{name}: bytes differ"
    );
    out
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let seed = seed_from_env(7);
    let _guard = SeedGuard(seed);
    let link = LinkConfig {
        loss: 0.05,
        jitter: Duration::from_millis(5),
        ..base_link()
    };
    let run = |seed| {
        let mut out = bulk(
            seed,
            link.clone(),
            100_000,
            1,
            Duration::from_secs(60),
            |_, _, _| {},
        );
        assert!(out.done);
        out.sim.run(Duration::from_secs(5));
        out.sim.trace().hash()
    };
    let a = run(seed);
    let b = run(seed);
    let c = run(seed.wrapping_add(1));
    assert_eq!(a, b, "same seed, same trace");
    assert_ne!(a, c, "another seed, with loss, gives another trace");
}

#[test]
fn lossless() {
    let mut out = assert_completes("lossless", 1, base_link(), 1_000_000);
    assert_eq!(out.sim.trace().dropped, 0);
    // The sender learns of the last acknowledgement one way-delay later, then closes.
    out.sim.run(Duration::from_secs(5));
    assert!(out.sender().finished_at.is_some());
    assert_eq!(out.sender().lost, Some(quicsand::ConnectionError::LocallyClosed));
}

#[test]
fn random_loss_5_percent() {
    let link = LinkConfig {
        loss: 0.05,
        ..base_link()
    };
    let out = assert_completes("loss 5%", 2, link, 500_000);
    assert!(out.sim.trace().dropped > 0);
}

#[test]
fn gilbert_elliott_bursty_loss() {
    let link = LinkConfig {
        gilbert_elliott: Some(GilbertElliott {
            p_good_to_bad: 0.02,
            p_bad_to_good: 0.3,
            loss_bad: 0.7,
            loss_good: 0.001,
        }),
        ..base_link()
    };
    let out = assert_completes("gilbert-elliott", 3, link, 500_000);
    assert!(out.sim.trace().dropped > 0);
}

#[test]
fn reordering_10_percent() {
    let link = LinkConfig {
        reorder: 0.1,
        reorder_delay: Duration::from_millis(15),
        jitter: Duration::from_millis(2),
        ..base_link()
    };
    assert_completes("reorder 10%", 4, link, 500_000);
}

#[test]
fn duplication_5_percent() {
    let link = LinkConfig {
        duplicate: 0.05,
        ..base_link()
    };
    let out = assert_completes("duplicate 5%", 5, link, 500_000);
    assert!(out.sim.trace().records().any(|r| matches!(
        r,
        quicsand::sim::TraceRecord::Datagram {
            fate: quicsand::sim::Fate::Delivered { duplicate: true, .. },
            ..
        }
    )));
}

#[test]
fn corruption_1_percent() {
    let link = LinkConfig {
        corrupt: 0.01,
        ..base_link()
    };
    let out = assert_completes("corrupt 1%", 6, link, 500_000);
    assert!(out.sim.trace().corrupted > 0);
}

#[test]
fn bottleneck_10_mbit_small_queue() {
    let link = LinkConfig {
        bandwidth_bps: Some(10_000_000),
        queue_bytes: 30_000,
        ..base_link()
    };
    let total = 1_000_000;
    let out = assert_completes("bottleneck 10 Mbit/s", 8, link, total);
    // 1 MB at 10 Mbit/s takes at least 0.8 s.
    assert!(out.sink().completed_at().unwrap() >= Duration::from_millis(800));
}

#[test]
fn blackout_2s_mid_transfer() {
    let link = LinkConfig {
        bandwidth_bps: Some(20_000_000),
        queue_bytes: 60_000,
        ..base_link()
    };
    let out = assert_completes_with("blackout 2 s", 9, link, 1_000_000, |sim, c, s| {
        sim.schedule_blackout(c, s, Duration::from_millis(300), Duration::from_secs(2));
    });
    assert!(out.sink().completed_at().unwrap() > Duration::from_millis(2300));
    assert!(out.sim.trace().records().any(|r| matches!(
        r,
        quicsand::sim::TraceRecord::Datagram {
            fate: quicsand::sim::Fate::DroppedLinkDown,
            ..
        }
    )));
}

#[test]
fn nat_rebinding_of_client() {
    let seed = seed_from_env(10);
    let _guard = SeedGuard(seed);
    let total = 2_000_000;
    let link = LinkConfig {
        bandwidth_bps: Some(20_000_000),
        queue_bytes: 60_000,
        ..base_link()
    };
    let mut out = bulk(seed, link, total, 1, Duration::from_secs(120), |sim, c, _| {
        sim.schedule_rebind(c, Duration::from_millis(300), "10.0.0.1:50001".parse().unwrap());
    });
    out.report("nat rebinding", total);
    // The server followed the client to its new address (RFC 9000 §9.3) and validated it: the transfer
    // completes, byte for byte.
    assert!(out.done, "the transfer completes after the rebinding");
    assert_eq!(out.sink().total_bytes(), total);
    let (server, new_addr) = (out.server, "10.0.0.1:50001".parse().unwrap());
    let h = out.sink().streams.keys().next().unwrap().0;
    let conn = out.sim.endpoint(server).unwrap().conn(h).unwrap();
    assert_eq!(conn.remote_address(), new_addr);
    let stats = conn.stats();
    drop(conn);
    assert_eq!(stats.path_migrations, 1);
    assert_eq!(stats.path_validation_failures, 0);
    // Datagrams on their way to the client's old address found no node: the trace says so (a second
    // record, `DroppedNoRoute`), and counts as delivered only what the endpoints received (once nothing
    // is in flight).
    out.sim.run(Duration::from_secs(120));
    let received: u64 = [out.client, out.server]
        .iter()
        .map(|&n| out.sim.endpoint(n).unwrap().stats().datagrams_received)
        .sum();
    let trace = out.sim.trace();
    assert_eq!(trace.delivered, received, "dropped {}", trace.dropped);
    assert!(trace.records().any(|r| matches!(
        r,
        quicsand::sim::TraceRecord::Datagram {
            fate: quicsand::sim::Fate::DroppedNoRoute,
            to,
            ..
        } if *to == "10.0.0.1:50000".parse().unwrap()
    )));
}

/// `Simulation::endpoint`, `app_mut`, `engine_mut`: commands given between steps are picked up at the
/// next step, at the current virtual time. A stream written on an idle connection between steps goes
/// out at once, not at the next deadline the run already had (here the idle timeout, 30 s on).
#[test]
fn a_command_between_steps_goes_out_at_the_current_time() {
    let (server_config, client_config) = configs(5);
    let mut sim = Simulation::new(epoch(), 5);
    let server_addr = "10.0.0.2:4433".parse().unwrap();
    let server = sim.add_node(server_addr, Some(server_config), Box::new(Sink::default()));
    let mut sender = BulkSender::new(client_config, server_addr, "localhost", 1000, 1);
    sender.close_when_done = false;
    let client_addr = "10.0.0.1:50000".parse().unwrap();
    let client = sim.add_node(client_addr, None, Box::new(sender));
    sim.add_duplex_link(client, server, base_link());
    assert!(sim.run_until(Duration::from_secs(5), |sim| sim
        .app::<BulkSender>(client)
        .unwrap()
        .finished_at
        .is_some()));
    // Idle for two seconds: nothing is due until the idle timeout.
    sim.run_until(Duration::from_secs(2), |_| false);
    let h = sim.app::<BulkSender>(client).unwrap().connection().unwrap();
    let at = sim.elapsed();
    {
        let mut conn = sim.endpoint(client).unwrap().conn(h).unwrap();
        let id = conn.open_uni().unwrap();
        assert_eq!(conn.stream(id).write(b"late request").unwrap(), 12);
        conn.stream(id).finish().unwrap();
    }
    sim.step();
    let sent = sim.trace().records().find_map(|r| match r {
        quicsand::sim::TraceRecord::Datagram { at: t, from, .. } if *from == client_addr && *t >= at => {
            Some(*t)
        }
        _ => None,
    });
    assert_eq!(sent, Some(at), "the write goes out when it was made");
    assert!(sim.run_until(Duration::from_secs(1), |sim| sim
        .app::<Sink>(server)
        .unwrap()
        .total_bytes()
        == 1012));
}

/// The client's connection statistics at the end of a run.
fn client_stats(out: &mut Outcome) -> quicsand::ConnectionStats {
    let h = out.sender().connection().unwrap();
    out.sim.endpoint(out.client).unwrap().conn(h).unwrap().stats()
}

/// RFC 9000 §14.3: on a path that carries at most 1350-byte datagrams, path MTU discovery settles within
/// `min_change` (20 bytes) below the limit; the lost probes are not taken for congestion (§14.4).
#[test]
fn path_mtu_discovery_finds_the_link_limit() {
    let link = LinkConfig {
        max_datagram_size: 1350,
        ..base_link()
    };
    let mut out = assert_completes("mtu 1350", 11, link, 20_000_000);
    let stats = client_stats(&mut out);
    assert!(
        (1331..=1350).contains(&stats.path_mtu),
        "path MTU {}",
        stats.path_mtu
    );
    assert!(stats.mtu_probes_lost >= 3, "{stats:?}");
    assert!(stats.mtu_probes_sent > stats.mtu_probes_lost, "{stats:?}");
    assert_eq!(stats.congestion_events, 0, "probe losses are not congestion");
    // The server searches the other direction with its own probes; every datagram the link dropped was
    // one of the two sides' probes (one may still be in flight, not yet declared lost).
    let h = *out.sink().streams.keys().next().unwrap();
    let server = out.sim.endpoint(out.server).unwrap().conn(h.0).unwrap().stats();
    // It sends only acknowledgements and its probes, so each lost probe takes a PTO to find: its search
    // is slower, but never above the limit.
    assert!((1200..=1350).contains(&server.path_mtu), "{server:?}");
    assert_eq!(server.congestion_events, 0);
    let lost = stats.mtu_probes_lost + server.mtu_probes_lost;
    let dropped = out.sim.trace().dropped;
    assert!(
        dropped >= lost && dropped <= lost + 2,
        "dropped {dropped}, probes lost {lost}"
    );
}

/// RFC 8899 §4.3: when the path stops carrying the discovered size mid-transfer (a black hole: every
/// full-size packet vanishes, and no acknowledgement says so), the sender falls back to the base size
/// after a few PTOs, and the transfer completes.
#[test]
fn path_mtu_black_hole_falls_back_to_the_base() {
    let seed = seed_from_env(12);
    let _guard = SeedGuard(seed);
    let total = 20_000_000;
    let link = LinkConfig {
        bandwidth_bps: Some(50_000_000),
        queue_bytes: 200_000,
        ..base_link()
    };
    // The first 800 ms, on the clean path.
    let mut out = bulk(seed, link, total, 1, Duration::from_millis(800), |_, _, _| {});
    let (client, server) = (out.client, out.server);
    let before = client_stats(&mut out);
    assert_eq!(before.path_mtu, 1452, "discovered on the clean path: {before:?}");
    assert!(out.sink().total_bytes() < total, "the transfer is still running");
    for (from, to) in [(client, server), (server, client)] {
        out.sim.link_config_mut(from, to).unwrap().max_datagram_size = 1300;
    }
    out.done = out.sim.run_until(Duration::from_secs(60), |sim| {
        sim.app::<Sink>(server).unwrap().total_bytes() == total
    });
    out.report("mtu black hole", total);
    assert!(out.done, "the transfer completes after the path shrinks");
    assert!(out.sink().streams.values().all(|s| s.pattern_ok));
    let after = client_stats(&mut out);
    assert!(after.path_mtu <= 1300, "{after:?}");
    assert!(after.path_mtu >= 1200, "{after:?}");
}

/// A transfer limited by the sender's buffer (no bandwidth limit: the window outgrows the send buffer,
/// 128 KiB by default and grown with the window up to `max_send_buffer`) is not cut into tiny packets. Acknowledgements free the buffer a packet or two at a time;
/// when each woke the writer, it wrote what was freed, and the few bytes beyond a full packet went out
/// alone: about every other packet carried a handful of bytes (the sender-side silly window syndrome).
/// The writer is now woken once a sixty-fourth of the buffer is free.
#[test]
fn a_buffer_limited_sender_fills_its_packets() {
    let seed = seed_from_env(21);
    let _guard = SeedGuard(seed);
    let total = 20_000_000;
    let mut out = bulk(seed, base_link(), total, 1, Duration::from_secs(60), |_, _, _| {});
    assert!(out.done, "transfer did not complete");
    assert!(out.sink().streams.values().all(|s| s.pattern_ok));
    let stats = client_stats(&mut out);
    assert_eq!(stats.path_mtu, 1452, "{stats:?}");
    // A 1452-byte datagram carries about 1,410 bytes of stream data.
    let full_packets = total / 1410;
    println!(
        "buffer-limited: {} packets sent for {full_packets} packets' worth of data",
        stats.packets_sent
    );
    assert!(
        stats.packets_sent < full_packets + full_packets / 10,
        "{} packets for {full_packets} full packets' worth of data: {stats:?}",
        stats.packets_sent
    );
}

/// RFC 9002 §6.1.1, §6.1.2: on a path that reorders but loses nothing (5 % of datagrams held back 15 ms
/// on a 20 ms RTT, and 2 ms of jitter), each packet overtaken by three others used to be declared lost
/// and to cut the window. Reordering is now recognised when a packet declared lost is acknowledged after
/// all: the reordering and time thresholds grow to what was seen, and a congestion event whose every loss
/// proved spurious is undone. The window ends up far above what repeated cuts left it at (about five
/// datagrams), and the transfer takes a fraction of the virtual time (7.6 s before), with either
/// congestion controller.
#[test]
fn reordering_without_loss_keeps_the_window() {
    for cc in [CongestionAlgorithm::Cubic, CongestionAlgorithm::NewReno] {
        reordering_without_loss(cc);
    }
}

fn reordering_without_loss(cc: CongestionAlgorithm) {
    let seed = seed_from_env(1);
    let _guard = SeedGuard(seed);
    let link = LinkConfig {
        reorder: 0.05,
        reorder_delay: Duration::from_millis(15),
        jitter: Duration::from_millis(2),
        ..LinkConfig::with_delay(Duration::from_millis(10))
    };
    let total = 2_000_000;
    let (mut server, mut client) = configs(seed);
    server.transport.congestion = cc;
    client.transport.congestion = cc;
    let mut out = bulk_with(
        (server, client),
        seed,
        link,
        total,
        1,
        Duration::from_secs(60),
        |_, _, _| {},
    );
    out.report(&format!("reorder 5% {cc:?}"), total);
    assert!(out.done);
    assert_eq!(out.sim.trace().dropped, 0, "nothing is lost");
    let stats = client_stats(&mut out);
    println!("{stats:?}");
    // Before: every window cut stood, and the window ended at a few datagrams' worth.
    assert!(stats.cwnd >= 20 * u64::from(stats.path_mtu), "{stats:?}");
    assert!(stats.packets_lost_spurious > 0, "{stats:?}");
    assert!(stats.congestion_events_undone > 0, "{stats:?}");
    // What stands: events whose losses were not yet shown spurious when the transfer ended (nothing is
    // lost on this link). Before the server held the 1-RTT packets that overtake the client's Finished
    // (RFC 9001 §5.7), it dropped them: real losses, whose event stood and cost most of a second (1.31 s
    // with CUBIC, 1.37 s with NewReno; 0.44 s and 0.43 s now).
    assert!(
        stats.congestion_events - stats.congestion_events_undone <= 3,
        "{stats:?}"
    );
    let t = out.sink().completed_at().unwrap();
    assert!(t < Duration::from_secs(1), "virtual transfer time {t:?}");
}

/// Reordering during the handshake: 1-RTT packets that overtake the client's Finished are held by the
/// server until the Finished arrives (RFC 9001 §5.7: they "MAY be stored and later decrypted"), not
/// dropped, so the client loses none of them and takes no congestion event for them. On this link (2 ms
/// of jitter reorders back-to-back datagrams; 5 % are held 15 ms) every one of these seeds has some
/// overtake the Finished: before, the server dropped them (1 to 9 per seed) and the 200 kB transfers took
/// 387 to 437 ms of virtual time; now 145 to 178 ms.
#[test]
fn handshake_reordering_costs_no_congestion_event() {
    let link = LinkConfig {
        reorder: 0.05,
        reorder_delay: Duration::from_millis(15),
        jitter: Duration::from_millis(2),
        ..LinkConfig::with_delay(Duration::from_millis(10))
    };
    let total = 200_000;
    let mut held = 0;
    let first = seed_from_env(1);
    for seed in first..first + 12 {
        let _guard = SeedGuard(seed);
        let mut out = bulk_with(
            configs(seed),
            seed,
            link.clone(),
            total,
            1,
            Duration::from_secs(60),
            |_, _, _| {},
        );
        out.report("handshake reordering", total);
        assert!(out.done);
        assert_eq!(out.sim.trace().dropped, 0, "nothing is lost on the link");
        let h = *out.sink().streams.keys().next().unwrap();
        let server = out.sim.endpoint(out.server).unwrap().conn(h.0).unwrap().stats();
        assert_eq!(server.packets_dropped, 0, "seed {seed}: {server:?}");
        held += server.packets_buffered;
        let t = out.sink().completed_at().unwrap();
        assert!(
            t < Duration::from_millis(250),
            "seed {seed}: virtual transfer time {t:?}"
        );
    }
    assert!(held > 0, "some packets overtook the Finished");
}

/// As [`reordering_without_loss_keeps_the_window`], at a rate where many packets overtake a late one (100
/// Mbit/s, 50 ms RTT, 5 % of datagrams held 12.5 ms: about a hundred overtake each), and where the first
/// spurious losses come before path MTU discovery has raised the datagram size: the packet threshold
/// grows that far, and the congestion events those losses caused are undone all the same.
#[test]
fn reordering_at_a_high_rate_keeps_the_window() {
    let seed = seed_from_env(1);
    let _guard = SeedGuard(seed);
    let link = LinkConfig {
        reorder: 0.05,
        reorder_delay: Duration::from_micros(12_500),
        bandwidth_bps: Some(100_000_000),
        // The whole transfer: nothing overflows it, whatever the window (slow start would overflow four
        // bandwidth-delay products once send buffers follow the window).
        queue_bytes: 10_000_000,
        ..LinkConfig::with_delay(Duration::from_millis(25))
    };
    let total = 10_000_000;
    let mut out = bulk(seed, link, total, 1, Duration::from_secs(60), |_, _, _| {});
    out.report("reorder 5% at 100 Mbit/s", total);
    assert!(out.done);
    assert_eq!(out.sim.trace().dropped, 0, "nothing is lost");
    let stats = client_stats(&mut out);
    println!("{stats:?}");
    // Every event is undone, unless a loss was real: 1-RTT packets that overtook the client's Finished
    // are dropped by the server (RFC 9001 §5.7), with some seeds.
    let real = u64::from(stats.packets_lost > stats.packets_lost_spurious);
    assert!(
        stats.congestion_events - stats.congestion_events_undone <= real,
        "{stats:?}"
    );
    assert!(stats.packets_lost <= 2 * stats.packets_lost_spurious, "{stats:?}");
}

/// Heavy corruption with `deterministic_tls`: a corrupted 1-RTT packet whose header-form bit flipped
/// reads as a long header of an unknown version, and the Version Negotiation answering it echoes a
/// connection ID whose length byte is ciphertext. With TLS drawing from the operating system that
/// made the reply's size, and so the trace, differ between runs with one seed; with TLS drawing from
/// the seed, runs repeat exactly.
#[test]
fn corruption_answered_by_version_negotiation_repeats() {
    let run = |seed: u64| {
        let link = LinkConfig {
            corrupt: 0.3,
            max_datagram_size: 1200,
            ..LinkConfig::with_delay(Duration::from_millis(10))
        };
        let mut out = bulk(seed, link, 1_000_000, 1, Duration::from_secs(120), |_, _, _| {});
        let vn = out
            .sim
            .endpoint(out.server)
            .unwrap()
            .stats()
            .version_negotiations_sent;
        (out.sim.trace().hash(), vn, out.done)
    };
    // Few seeds make a Version Negotiation (the flip must hit the header-form bit of a 1-RTT packet
    // whose connection ID length byte, ciphertext, then makes an answerable header), and which ones do
    // changes with every change to the engine's timing: the first that does from the given one, of
    // those whose transfer completes. With 30 % of datagrams corrupted, an unlucky run can have the
    // sender's probes and the answers to them corrupted several times in a row until the PTO, backed
    // off, passes the idle timeout (seed 27 once the probes carried ACK frames).
    let first_seed = seed_from_env(CORRUPTION_SEED);
    let found = (first_seed..first_seed + CORRUPTION_SEEDS_TRIED).find_map(|seed| {
        let _guard = SeedGuard(seed);
        let (hash, vn, done) = run(seed);
        (vn > 0 && done).then_some((seed, hash))
    });
    let Some((seed, first)) = found else {
        panic!("no seed in {first_seed}..+{CORRUPTION_SEEDS_TRIED} sends a Version Negotiation");
    };
    println!("seed {seed} sends Version Negotiation");
    let _guard = SeedGuard(seed);
    for _ in 0..2 {
        let (hash, vn, done) = run(seed);
        assert_eq!(hash, first, "the replay differs");
        assert!(vn > 0 && done);
    }
}

/// The first seed tried for a run whose corrupted datagrams make the server send Version Negotiation.
const CORRUPTION_SEED: u64 = 60;

/// How many seeds from [`CORRUPTION_SEED`] are tried for one.
const CORRUPTION_SEEDS_TRIED: u64 = 300;

/// RFC 9002 §7.8: a sender held by the peer's flow control is application-limited even when pacing holds
/// its last packets back: the window must not grow on those acknowledgements. Before, any pacing hold
/// counted as a full window, and behind a 128 KiB stream window the congestion window grew in slow start
/// to 1.2 MB (11 times the most ever in flight), ready to burst at twice the link rate once flow control
/// opened.
#[test]
fn a_flow_control_limited_sender_does_not_grow_its_window() {
    let seed = seed_from_env(1);
    let _guard = SeedGuard(seed);
    let (mut server_config, client_config) = configs(seed);
    let streams = &mut server_config.transport.streams;
    streams.stream_receive_window = 128 * 1024;
    streams.max_stream_receive_window = 128 * 1024;
    let link = LinkConfig {
        bandwidth_bps: Some(100_000_000),
        queue_bytes: 625_000,
        ..LinkConfig::with_delay(Duration::from_millis(25))
    };
    let mut sim = Simulation::new(epoch(), seed);
    let server_addr = "10.0.0.2:4433".parse().unwrap();
    let server = sim.add_node(server_addr, Some(server_config), Box::new(Sink::default()));
    let sender = BulkSender::new(client_config, server_addr, "localhost", 20_000_000, 1);
    let client = sim.add_node("10.0.0.1:50000".parse().unwrap(), None, Box::new(sender));
    sim.add_duplex_link(client, server, link);
    let mut peak_in_flight = 0;
    let mut stats = None;
    for _ in 0..80 {
        sim.run_until(Duration::from_millis(50), |_| false);
        let Some(h) = sim.app::<BulkSender>(client).unwrap().connection() else {
            continue;
        };
        let s = sim.endpoint(client).unwrap().conn(h).unwrap().stats();
        peak_in_flight = peak_in_flight.max(s.bytes_in_flight);
        stats = Some(s);
    }
    let stats = stats.unwrap();
    // Flow control, not the path, set the pace: a window round trip of 128 KiB in 50 ms, 21 Mbit/s.
    assert!(
        sim.app::<Sink>(server).unwrap().total_bytes() < 12_000_000,
        "{stats:?}"
    );
    assert!(
        stats.cwnd <= 3 * peak_in_flight.max(14_720),
        "window {} against at most {peak_in_flight} in flight: {stats:?}",
        stats.cwnd
    );
}

/// One stream fills a path whose bandwidth-delay product (2.5 MB at 200 Mbit/s and 100 ms) is larger
/// than the 1 MiB send buffer: the buffer grows with the congestion window
/// (`StreamsConfig::max_send_buffer`). Before, the buffer bounded the flight at 1 MiB per round trip,
/// about 84 Mbit/s.
#[test]
fn one_stream_fills_a_long_fat_path() {
    let seed = seed_from_env(3);
    let _guard = SeedGuard(seed);
    let link = LinkConfig {
        bandwidth_bps: Some(200_000_000),
        queue_bytes: 2_500_000,
        ..LinkConfig::with_delay(Duration::from_millis(50))
    };
    let total = 60_000_000;
    let out = bulk(seed, link, total, 1, Duration::from_secs(60), |_, _, _| {});
    out.report("long fat path", total);
    assert!(out.done);
    let t = out.sink().completed_at().unwrap();
    let goodput = total as f64 * 8.0 / t.as_secs_f64() / 1e6;
    assert!(goodput > 120.0, "{goodput:.1} Mbit/s in {t:?}");
}

/// A caller that only reads each node's endpoint between steps (which marks it as given commands) gets
/// the same run, trace hash for trace hash, as one that does not look.
#[test]
fn reading_endpoints_between_steps_changes_nothing() {
    let run = |read: bool| {
        let seed = 7;
        let (server_config, client_config) = configs(seed);
        let mut sim = Simulation::new(epoch(), seed);
        let server_addr = "10.0.0.2:4433".parse().unwrap();
        let server = sim.add_node(server_addr, Some(server_config), Box::new(Sink::default()));
        let sender = BulkSender::new(client_config, server_addr, "localhost", 300_000, 3);
        let client = sim.add_node("10.0.0.1:50000".parse().unwrap(), None, Box::new(sender));
        let link = LinkConfig {
            loss: 0.05,
            reorder: 0.1,
            duplicate: 0.02,
            ..base_link()
        };
        sim.add_duplex_link(client, server, link);
        sim.schedule_rebind(client, Duration::from_secs(2), "10.0.0.1:50001".parse().unwrap());
        let deadline = epoch() + Duration::from_secs(60);
        let mut received = 0;
        while sim.step_before(Some(deadline)) {
            if read {
                for n in [client, server] {
                    received = sim.endpoint(n).unwrap().stats().datagrams_received;
                }
            }
        }
        let done = sim.app::<Sink>(server).unwrap().total_bytes();
        (
            sim.trace().hash(),
            sim.trace().delivered,
            sim.elapsed(),
            done,
            read == (received > 0),
        )
    };
    let (quiet, reading) = (run(false), run(true));
    assert_eq!(quiet.3, 300_000);
    assert!(reading.4);
    assert_eq!(quiet, reading);
}

/// RFC 9002 §7.1, RFC 3168: behind a bottleneck that marks ECN-CE once its queue holds more than a
/// fifth of the path's bandwidth-delay product, the sender backs off on the marks before the queue
/// fills: no datagram is dropped and nothing is lost, where the same queue (2.5 BDP) without marks
/// overflows; and the queue stays short, so the RTT stays near the path's. (With a queue of one BDP,
/// slow start's last doubling, whose marks come back a round trip late, still overflows it.)
#[test]
fn ce_marks_at_the_bottleneck_hold_the_sender_back_without_loss() {
    let seed = seed_from_env(5);
    let _guard = SeedGuard(seed);
    // 20 Mbit/s, 40 ms RTT: 100 kB of bandwidth-delay product, and a queue of 2.5 BDP.
    let link = |ecn| LinkConfig {
        bandwidth_bps: Some(20_000_000),
        queue_bytes: 250_000,
        ecn,
        ..base_link()
    };
    let total = 10_000_000;
    let run = |ecn| {
        let mut out = bulk(seed, link(ecn), total, 1, Duration::from_secs(60), |_, _, _| {});
        assert!(out.done, "{ecn:?}: {} of {total} bytes", out.sink().total_bytes());
        out.report(&format!("{ecn:?}"), total);
        let stats = client_stats(&mut out);
        (out.sim.trace().clone(), stats)
    };
    let (marked_trace, marked) = run(LinkEcn::MarkAbove { above: 20_000 });
    let (droptail_trace, droptail) = run(LinkEcn::Carry);
    assert_eq!(marked.ecn_validation_failures, 0, "{marked:?}");
    assert!(marked.ecn_marked_sent + 2 >= marked.packets_sent, "{marked:?}");
    assert!(marked_trace.ce_marked > 0);
    assert!(marked.ecn_ce_signals > 0, "{marked:?}");
    assert_eq!(marked_trace.dropped, 0, "{marked:?}");
    assert_eq!(marked.packets_lost, 0, "{marked:?}");
    assert!(droptail_trace.dropped > 0);
    assert!(droptail.packets_lost > 0, "{droptail:?}");
    assert_eq!(droptail_trace.ce_marked, 0);
    assert!(
        marked.smoothed_rtt < droptail.smoothed_rtt,
        "{:?} vs {:?}",
        marked.smoothed_rtt,
        droptail.smoothed_rtt
    );
}

/// RFC 9000 §13.4.2: a path that clears the ECN field fails validation; the transfer goes on unmarked.
#[test]
fn a_link_that_clears_ecn_fails_validation_and_the_transfer_goes_on() {
    let link = LinkConfig {
        ecn: LinkEcn::Clear,
        ..base_link()
    };
    let mut out = assert_completes("ecn cleared", 3, link, 2_000_000);
    let stats = client_stats(&mut out);
    assert_eq!(stats.ecn_validation_failures, 1, "{stats:?}");
    assert!(stats.ecn_marked_sent <= 20, "{stats:?}");
}

/// RFC 9406: HyStart++ ends slow start when the smallest RTT of a round trip rises, so far fewer
/// datagrams overflow the bottleneck at the end of slow start than with slow start doubling until the
/// first loss, on the same seeds. The path is the demo's (100 Mbit/s, 50 ms) with a queue of two
/// bandwidth-delay products (1.25 MB): with one, slow start's last doubling (625 kB to 1.25 MB in one
/// round trip) fills the queue within the round in which the rise first shows, and the sender, held
/// back by flow control for part of each round trip while its window grows, lets the queue drain, so
/// the round minimum falls back and HyStart++ resumes slow start (docs/simulation.md).
#[test]
fn hystart_ends_slow_start_before_the_queue_overflows() {
    let link = LinkConfig {
        bandwidth_bps: Some(100_000_000),
        queue_bytes: 1_250_000,
        ..LinkConfig::with_delay(Duration::from_millis(25))
    };
    let total = 10_000_000;
    let run = |seed: u64, hystart: bool| {
        let (mut server_config, mut client_config) = configs(seed);
        server_config.transport.hystart = hystart;
        client_config.transport.hystart = hystart;
        let mut out = bulk_with(
            (server_config, client_config),
            seed,
            link.clone(),
            total,
            1,
            Duration::from_secs(60),
            |_, _, _| {},
        );
        out.report(&format!("hystart {hystart}"), total);
        assert!(out.done, "{} of {total} bytes", out.sink().total_bytes());
        let stats = client_stats(&mut out);
        (out.sim.trace().dropped, stats)
    };
    let first = seed_from_env(1);
    for seed in first..first + 3 {
        let _guard = SeedGuard(seed);
        let (dropped_on, on) = run(seed, true);
        let (dropped_off, off) = run(seed, false);
        println!("seed {seed}: {dropped_on} datagrams dropped with HyStart++, {dropped_off} without");
        // Measured: 349 to 419 dropped against 962 to 965 (seeds 1 to 3).
        assert!(dropped_off > 0, "seed {seed}: {off:?}");
        assert!(
            dropped_on * 2 < dropped_off,
            "seed {seed}: {dropped_on} dropped with HyStart++, {dropped_off} without"
        );
        assert!(
            on.packets_lost * 2 < off.packets_lost,
            "seed {seed}: {on:?} / {off:?}"
        );
    }
}

/// A client that sends one small message every 30 ms (one 1-RTT packet each, acknowledged alone on the
/// server's 25 ms ACK timer) over a 300 ms round trip with no bandwidth limit, hence no queue. HyStart++
/// compared latest_rtt (ACK delay included) of these packets with the handshake's (acknowledged at once,
/// RFC 9000 §13.2.1): 25 ms more, above RttThresh (16 ms at most), so it entered CSS and, five rounds
/// later, congestion avoidance with ssthresh at about the initial window, for the rest of the connection,
/// though nothing was ever lost or queued (found in review). It now takes only 1-RTT samples, less the
/// ACK delay (RFC 9002 §5.3).
#[derive(Debug)]
struct Trickle {
    config: Option<ClientConfig>,
    server: std::net::SocketAddr,
    conn: Option<quicsand::ConnectionHandle>,
    stream: Option<quicsand::StreamId>,
    sent: u32,
}

impl quicsand::sim::App for Trickle {
    fn on_start(&mut self, ctx: &mut quicsand::sim::NodeCtx<'_>) {
        let config = self.config.take().unwrap();
        let now = ctx.now();
        self.conn = Some(
            ctx.endpoint()
                .connect(now, config, self.server, "localhost")
                .unwrap(),
        );
    }

    fn on_event(
        &mut self,
        ctx: &mut quicsand::sim::NodeCtx<'_>,
        _h: quicsand::ConnectionHandle,
        event: &quicsand::Event,
    ) {
        if matches!(event, quicsand::Event::Connected) {
            let h = self.conn.unwrap();
            self.stream = ctx.endpoint().conn(h).unwrap().open_uni();
            ctx.wake_after(Duration::from_millis(30));
        }
    }

    fn on_wake(&mut self, ctx: &mut quicsand::sim::NodeCtx<'_>) {
        let (h, id) = (self.conn.unwrap(), self.stream.unwrap());
        let _ = ctx.endpoint().conn(h).unwrap().stream(id).write(&[7u8; 100]);
        self.sent += 1;
        if self.sent < 200 {
            ctx.wake_after(Duration::from_millis(30));
        }
    }
}

#[test]
fn hystart_a_sparse_flow_on_a_long_path_stays_in_slow_start() {
    let seed = seed_from_env(1);
    let _guard = SeedGuard(seed);
    for hystart in [false, true] {
        let (mut server_config, mut client_config) = configs(seed);
        server_config.transport.hystart = hystart;
        client_config.transport.hystart = hystart;
        let mut sim = Simulation::new(epoch(), seed);
        let server_addr = "10.0.0.2:4433".parse().unwrap();
        let server = sim.add_node(server_addr, Some(server_config), Box::new(Sink::default()));
        let app = Trickle {
            config: Some(client_config),
            server: server_addr,
            conn: None,
            stream: None,
            sent: 0,
        };
        let client = sim.add_node("10.0.0.1:50000".parse().unwrap(), None, Box::new(app));
        sim.add_duplex_link(client, server, LinkConfig::with_delay(Duration::from_millis(150)));
        sim.run(Duration::from_secs(8));
        let h = sim.app::<Trickle>(client).unwrap().conn.unwrap();
        let stats = sim.endpoint(client).unwrap().conn(h).unwrap().stats();
        assert_eq!(stats.congestion_events, 0, "{stats:?}");
        assert_eq!(
            stats.ssthresh,
            u64::MAX,
            "hystart {hystart}: slow start ended with no loss, no mark and no queue: {stats:?}"
        );
    }
}

/// A path with a large bandwidth-delay product that reorders: 400 Mbit/s, 50 ms, a queue of one BDP
/// (2.5 MB), 5% of datagrams held back by a quarter of the RTT (spurious losses, undone once the late
/// packets are acknowledged). A send buffer keeps everything from its first unacknowledged byte, so
/// through each recovery it holds the data sent before the window was cut and what was acknowledged
/// beyond the hole, besides what is to be sent next. Sized at twice the congestion window, the buffers
/// ran dry there, the connection counted as application-limited (RFC 9002 §7.8) and its window stopped
/// growing: 117 Mbit/s over 30 MB on the first seed; at four times the window, 162 to 173 Mbit/s on the
/// three.
#[test]
fn send_buffers_keep_a_reordered_path_with_a_large_bdp_busy() {
    let first = seed_from_env(1);
    for seed in first..first + 3 {
        let _guard = SeedGuard(seed);
        let link = LinkConfig {
            delay: Duration::from_millis(25),
            reorder: 0.05,
            reorder_delay: Duration::from_micros(12_500),
            bandwidth_bps: Some(400_000_000),
            queue_bytes: 2_500_000,
            max_datagram_size: 1472,
            ..LinkConfig::default()
        };
        let total = 30_000_000;
        let out = bulk(seed, link, total, 1, Duration::from_secs(60), |_, _, _| {});
        assert!(
            out.done,
            "seed {seed}: {} of {total} bytes",
            out.sink().total_bytes()
        );
        out.report("reordered 400 Mbit/s", total);
        let took = out.sink().completed_at().expect("completed");
        let goodput = total as f64 * 8.0 / took.as_secs_f64() / 1e6;
        assert!(goodput > 140.0, "seed {seed}: {goodput:.1} Mbit/s");
    }
}
