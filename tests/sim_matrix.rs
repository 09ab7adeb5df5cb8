//! A matrix of network conditions for whole transfers through the deterministic simulator
//! (`quicsand::sim`), plus a link-utilisation check.
//!
//! The matrix is a set of named scenarios (not the full cross product) that covers every value of every
//! dimension at least once: RTT {1, 20, 100, 300 ms}, random loss {0, 1, 5, 20 %}, Gilbert-Elliott bursty
//! loss, bottleneck bandwidth {1, 10, 100, 1000 Mbit/s} with a one-BDP drop-tail queue, 5 % reordering,
//! 5 % duplication, 1 % corruption, a NAT rebinding of the client mid-transfer and a 2 s blackout
//! mid-transfer. Each run is a bulk transfer ([`BulkSender`] to [`Sink`]) with a virtual-time bound scaled
//! to the scenario, and must end either with the transfer complete and byte-exact, or (only where the
//! scenario allows it) with the connection ended by a clear error; it must never hit the bound with the
//! connection still alive.
//!
//! Three tests run the matrix: `matrix` with quicsand at both ends, `matrix_quinn_client` with a
//! quinn-proto client sending to a quicsand server, and `matrix_quinn_server` with a quicsand client
//! sending to a quinn-proto server. The quinn-proto end is the harness's `QuinnNode` driven through
//! `quicsand::sim::Engine` (`tests/common/quinn_sim.rs`), with the same byte pattern and the same close
//! at the end.
//!
//! Environment:
//! - default: every scenario with 3 seeds (the fast slice);
//! - `QUICSAND_SIM_FULL=1`: 200 seeds per scenario, plus the measurement-only tests. Measured on 2 cores
//!   (test profile, opt-level 1): the quicsand matrix takes about 300 s of wall time (600 s of CPU, half
//!   of it in `bw1000_rtt20`, a sixth in `bw100_rtt20`; see the `wall s` column of the summary), each
//!   quinn-proto matrix about as much. The default run of this file takes about 15 to 25 s on a busy
//!   2-core machine: each matrix's fast slice 3.5 to 12 s, and the CUBIC utilisation transfer;
//! - `QUICSAND_SIM_SEED=<n>`: only that seed;
//! - `QUICSAND_SIM_SCENARIO=<name>`: only that scenario;
//! - `QUICSAND_SIM_TRACE=<n>`: print the last `n` trace records of each failing run.
//!
//! A failing run prints its scenario and seed, and how to replay it:
//! `QUICSAND_SIM_SCENARIO=<name> QUICSAND_SIM_SEED=<seed> cargo test --test sim_matrix -- --exact <test>`.
//! Every run prints a summary table (use `-- --nocapture` to see it when the test passes).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quicsand::crypto::tls;
use quicsand::sim::{
    seed_from_env, BulkSender, GilbertElliott, Limits, LinkConfig, NodeId, Simulation, Sink, SEED_ENV,
};
use quicsand::{ClientConfig, CongestionAlgorithm, ConnectionError, ServerConfig};
use rustls::pki_types::PrivateKeyDer;

use common::quinn_sim::QuinnPeer;
use common::LostReason;

const ALPN: &[u8] = b"sim";
const FULL_ENV: &str = "QUICSAND_SIM_FULL";
const SCENARIO_ENV: &str = "QUICSAND_SIM_SCENARIO";
const FAST_SEEDS: u64 = 3;
const FULL_SEEDS: u64 = 200;

/// Fresh TLS configurations for one simulation with `seed` (packet bytes repeat with the seed).
fn configs(congestion: CongestionAlgorithm, seed: u64) -> (ServerConfig, ClientConfig) {
    let (cert, key) = common::certs::ed25519_localhost();
    let options = quicsand::sim::deterministic_tls(seed);
    let server = tls::server_config_with(
        vec![cert.clone()],
        PrivateKeyDer::Pkcs8(key.clone_key()),
        vec![ALPN.to_vec()],
        &options,
    )
    .unwrap();
    let client = tls::client_config_with(vec![cert.clone()], vec![ALPN.to_vec()], &options).unwrap();
    let mut server = ServerConfig::new(server);
    let mut client = ClientConfig::new(client);
    server.transport.congestion = congestion;
    client.transport.congestion = congestion;
    (server, client)
}

/// Wall-clock time, for reporting only.
#[allow(clippy::disallowed_methods)]
fn wall_now() -> Instant {
    Instant::now()
}

const MBIT: u64 = 1_000_000;

/// What a scenario accepts as the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The transfer must complete byte-exact.
    Complete,
    /// The transfer completes byte-exact, or the connection ends with an error (never a hang).
    CompleteOrError,
}

/// Something scheduled during the run.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    None,
    /// The client moves to a new port at this time.
    Rebind(Duration),
    /// Both directions go down at this time for this long.
    Blackout(Duration, Duration),
}

#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    /// Round-trip propagation delay (each direction gets half).
    rtt: Duration,
    /// The link in each direction; its delay is set from `rtt`, its queue from the bandwidth-delay product.
    link: LinkConfig,
    disruption: Disruption,
    /// Bytes to transfer.
    total: u64,
    /// Virtual-time bound of the whole run.
    bound: Duration,
    expect: Expect,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A one-BDP queue for `bps` at `rtt`, at least a few full-size datagrams.
fn bdp_bytes(bps: u64, rtt: Duration) -> usize {
    let bdp = (u128::from(bps) * rtt.as_nanos() / 8_000_000_000) as usize;
    bdp.max(4 * 1500)
}

fn scenario(name: &'static str, rtt_ms: u64, total: u64, bound: Duration, link: LinkConfig) -> Scenario {
    let rtt = ms(rtt_ms);
    let mut link = LinkConfig {
        delay: rtt / 2,
        ..link
    };
    if let Some(bps) = link.bandwidth_bps {
        link.queue_bytes = bdp_bytes(bps, rtt);
    }
    Scenario {
        name,
        rtt,
        link,
        disruption: Disruption::None,
        total,
        bound,
        expect: Expect::Complete,
    }
}

fn loss(p: f64) -> LinkConfig {
    LinkConfig {
        loss: p,
        ..LinkConfig::default()
    }
}

fn bandwidth(mbit: u64) -> LinkConfig {
    LinkConfig {
        bandwidth_bps: Some(mbit * MBIT),
        ..LinkConfig::default()
    }
}

fn bursty() -> LinkConfig {
    LinkConfig {
        gilbert_elliott: Some(GilbertElliott {
            p_good_to_bad: 0.02,
            p_bad_to_good: 0.3,
            loss_bad: 0.7,
            loss_good: 0.001,
        }),
        ..LinkConfig::default()
    }
}

/// The named scenarios. Coverage: RTT 1/20/100/300 ms (clean_*, loss*_rtt*), loss 0/1/5/20 %
/// (clean_*, loss*), Gilbert-Elliott (bursty_*), bandwidth 1/10/100/1000 Mbit/s with a one-BDP queue
/// (bw*), reordering, duplication, corruption, NAT rebinding and blackout at 20 ms, and extreme
/// combinations (loss20_rtt300, bw1_rtt300, kitchen_sink).
fn scenarios() -> Vec<Scenario> {
    let mb = 1_000_000;
    vec![
        scenario("clean_rtt1", 1, 2 * mb, secs(60), LinkConfig::default()),
        scenario("clean_rtt20", 20, 2 * mb, secs(60), LinkConfig::default()),
        scenario("clean_rtt100", 100, 2 * mb, secs(60), LinkConfig::default()),
        scenario("clean_rtt300", 300, 2 * mb, secs(90), LinkConfig::default()),
        scenario("loss5_rtt1", 1, mb, secs(60), loss(0.05)),
        scenario("loss1_rtt20", 20, 2 * mb, secs(60), loss(0.01)),
        scenario("loss5_rtt20", 20, mb, secs(60), loss(0.05)),
        scenario("loss20_rtt20", 20, 200_000, secs(120), loss(0.20)),
        scenario("loss5_rtt100", 100, mb, secs(120), loss(0.05)),
        scenario("loss1_rtt300", 300, mb, secs(120), loss(0.01)),
        Scenario {
            expect: Expect::CompleteOrError,
            ..scenario("loss20_rtt300", 300, 100_000, secs(300), loss(0.20))
        },
        scenario("bursty_rtt20", 20, mb, secs(60), bursty()),
        // Long Gilbert-Elliott bursts (the chain moves once per datagram, so with one ACK per backed-off PTO
        // a bad state can last many seconds) may eat every ACK for longer than the idle timeout: ending
        // with TimedOut is then the right outcome (seeds 14 and 28 of the full run do).
        Scenario {
            expect: Expect::CompleteOrError,
            ..scenario("bursty_rtt100", 100, mb, secs(120), bursty())
        },
        scenario("bw1_rtt20", 20, 200_000, secs(60), bandwidth(1)),
        scenario("bw10_rtt20", 20, 2 * mb, secs(60), bandwidth(10)),
        scenario("bw100_rtt20", 20, 4 * mb, secs(60), bandwidth(100)),
        scenario("bw1000_rtt20", 20, 8 * mb, secs(60), bandwidth(1000)),
        scenario("bw1_rtt300", 300, 200_000, secs(120), bandwidth(1)),
        scenario(
            "reorder5_rtt20",
            20,
            2 * mb,
            secs(60),
            LinkConfig {
                reorder: 0.05,
                reorder_delay: ms(15),
                jitter: ms(2),
                ..LinkConfig::default()
            },
        ),
        scenario(
            "duplicate5_rtt20",
            20,
            2 * mb,
            secs(60),
            LinkConfig {
                duplicate: 0.05,
                ..LinkConfig::default()
            },
        ),
        scenario(
            "corrupt1_rtt20",
            20,
            2 * mb,
            secs(60),
            LinkConfig {
                corrupt: 0.01,
                ..LinkConfig::default()
            },
        ),
        // The server follows the client to its new address (RFC 9000 §9.3).
        Scenario {
            disruption: Disruption::Rebind(ms(500)),
            ..scenario("nat_rebind_bw10_rtt20", 20, 2 * mb, secs(120), bandwidth(10))
        },
        Scenario {
            disruption: Disruption::Blackout(ms(500), secs(2)),
            ..scenario("blackout2s_bw10_rtt20", 20, 2 * mb, secs(60), bandwidth(10))
        },
        scenario(
            "kitchen_sink_bw10_rtt100",
            100,
            mb,
            secs(120),
            LinkConfig {
                loss: 0.01,
                reorder: 0.05,
                reorder_delay: ms(30),
                duplicate: 0.05,
                corrupt: 0.01,
                jitter: ms(5),
                ..bandwidth(10)
            },
        ),
    ]
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Transfer complete and byte-exact.
    Completed,
    /// The connection ended with this error before completing.
    Error(String),
}

#[derive(Debug, Clone)]
struct RunResult {
    end: End,
    /// Virtual time at completion, or when the connection ended.
    at: Duration,
}

/// Which engines play the two ends of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peers {
    /// quicsand at both ends.
    Quicsand,
    /// A quinn-proto client sending to a quicsand server.
    QuinnClient,
    /// A quicsand client sending to a quinn-proto server.
    QuinnServer,
}

impl Peers {
    /// The test that runs the matrix with these peers, for replay instructions.
    fn test_name(self) -> &'static str {
        match self {
            Peers::Quicsand => "matrix",
            Peers::QuinnClient => "matrix_quinn_client",
            Peers::QuinnServer => "matrix_quinn_server",
        }
    }
}

/// The two nodes of a run.
#[derive(Debug, Clone, Copy)]
struct Ends {
    client: NodeId,
    server: NodeId,
}

/// What the receiving end read.
struct Received {
    bytes: u64,
    pattern_ok: bool,
    completed_at: Option<Duration>,
}

/// Why the sending end's connection ended, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientEnd {
    /// It closed the connection itself (after completion, if all went well).
    LocallyClosed,
    /// Anything else, as the engine describes it.
    Error(String),
}

impl Ends {
    fn quinn_server(self, sim: &Simulation) -> Option<&QuinnPeer> {
        sim.engine::<QuinnPeer>(self.server)
    }

    fn received(self, sim: &Simulation) -> Received {
        if let Some(q) = self.quinn_server(sim) {
            return Received {
                bytes: q.total_bytes(),
                pattern_ok: q.pattern_ok(),
                completed_at: q.completed_at,
            };
        }
        let sink = sim.app::<Sink>(self.server).unwrap();
        Received {
            bytes: sink.total_bytes(),
            pattern_ok: sink.streams.values().all(|s| s.pattern_ok),
            completed_at: sink.completed_at(),
        }
    }

    /// Whether every byte and both stream ends were read (cheap: called at every step).
    fn complete(self, sim: &Simulation, total: u64) -> bool {
        match self.quinn_server(sim) {
            Some(q) => q.completed_at.is_some() || (q.total_bytes() == total && q.finished_streams() == 2),
            None => {
                let sink = sim.app::<Sink>(self.server).unwrap();
                sink.total_bytes() == total && sink.finished_streams() == 2
            }
        }
    }

    fn client_end(self, sim: &Simulation) -> Option<ClientEnd> {
        if let Some(q) = sim.engine::<QuinnPeer>(self.client) {
            return q.lost.as_ref().map(|r| match r {
                LostReason::LocallyClosed => ClientEnd::LocallyClosed,
                other => ClientEnd::Error(format!("{other:?}")),
            });
        }
        let sender = sim.app::<BulkSender>(self.client).unwrap();
        if let Some(e) = &sender.connect_error {
            return Some(ClientEnd::Error(format!("connect failed: {e}")));
        }
        sender.lost.as_ref().map(|r| match r {
            ConnectionError::LocallyClosed => ClientEnd::LocallyClosed,
            other => ClientEnd::Error(format!("{other:?}")),
        })
    }
}

/// Runs one scenario with one seed; `Err` describes a failure (hang, corruption, forbidden error).
/// `QUICSAND_SIM_TRACE=<n>` keeps the last `n` trace records of each run and prints them when it fails.
const TRACE_ENV: &str = "QUICSAND_SIM_TRACE";

fn run(sc: &Scenario, seed: u64, peers: Peers) -> Result<RunResult, String> {
    let keep = std::env::var(TRACE_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let limits = Limits {
        trace_records: keep.unwrap_or(64),
        ..Limits::default()
    };
    let mut sim = Simulation::with_limits(common::epoch(), seed, limits);
    let result = run_in(&mut sim, sc, peers);
    if result.is_err() && keep.is_some() {
        eprintln!(
            "trace of {} seed {seed} (last {} records):",
            sc.name,
            sim.trace().records().count()
        );
        for r in sim.trace().records() {
            eprintln!("  {r:?}");
        }
    }
    result
}

/// Adds the two ends of a run: a sender of `total` bytes over 2 streams and a receiver, of the engines
/// `peers` names.
fn add_ends(sim: &mut Simulation, peers: Peers, total: u64) -> Ends {
    let (server_config, client_config) = configs(CongestionAlgorithm::default(), sim.seed());
    let server_addr: SocketAddr = "10.0.0.2:4433".parse().unwrap();
    let client_addr: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let server = match peers {
        Peers::QuinnServer => sim.add_engine(server_addr, |seed| {
            Box::new(QuinnPeer::receiver(
                server_addr,
                seed,
                server_config.tls.clone(),
                total,
                2,
            ))
        }),
        _ => sim.add_node(server_addr, Some(server_config), Box::new(Sink::default())),
    };
    let client = match peers {
        Peers::QuinnClient => sim.add_engine(client_addr, |seed| {
            Box::new(QuinnPeer::sender(
                client_addr,
                seed,
                client_config.tls.clone(),
                server_addr,
                total,
                2,
            ))
        }),
        _ => {
            let sender = BulkSender::new(client_config, server_addr, "localhost", total, 2);
            sim.add_node(client_addr, None, Box::new(sender))
        }
    };
    Ends { client, server }
}

fn run_in(sim: &mut Simulation, sc: &Scenario, peers: Peers) -> Result<RunResult, String> {
    let total = sc.total;
    let ends = add_ends(sim, peers, total);
    let (client, server) = (ends.client, ends.server);
    sim.add_duplex_link(client, server, sc.link.clone());
    match sc.disruption {
        Disruption::None => {}
        Disruption::Rebind(at) => sim.schedule_rebind(client, at, "10.0.0.1:50001".parse().unwrap()),
        Disruption::Blackout(at, len) => sim.schedule_blackout(client, server, at, len),
    }
    sim.run_until(sc.bound, |sim| {
        ends.complete(sim, total) || ends.client_end(sim).is_some()
    });
    let received = ends.received(sim);
    if ends.complete(sim, total) {
        if received.bytes != total || !received.pattern_ok {
            return Err(format!("bytes differ ({} of {total})", received.bytes));
        }
        let at = received.completed_at.unwrap_or(sim.elapsed());
        // The sender closes once it learns every stream was acknowledged; give it a while.
        check_clean_close(sim, ends, sc)?;
        return Ok(RunResult {
            end: End::Completed,
            at,
        });
    }
    match ends.client_end(sim) {
        None => Err(format!(
            "hang: bound {:?} hit with the connection alive, {} of {total} bytes received",
            sc.bound, received.bytes
        )),
        Some(end) => {
            let msg = format!("{end:?} after {} of {total} bytes", received.bytes);
            match (sc.expect, end) {
                (_, ClientEnd::Error(e)) if e.starts_with("connect failed") => Err(e),
                (Expect::CompleteOrError, ClientEnd::LocallyClosed) => {
                    Err(format!("closed locally without completing: {msg}"))
                }
                (Expect::CompleteOrError, ClientEnd::Error(e)) => Ok(RunResult {
                    end: End::Error(e),
                    at: sim.elapsed(),
                }),
                (Expect::Complete, _) => Err(format!("connection ended: {msg}")),
            }
        }
    }
}

/// After completion, the client must close the connection (code 0) within a few RTOs.
fn check_clean_close(sim: &mut Simulation, ends: Ends, sc: &Scenario) -> Result<(), String> {
    let limit = secs(10) + sc.rtt * 10;
    sim.run_until(limit, |sim| ends.client_end(sim).is_some());
    match ends.client_end(sim) {
        Some(ClientEnd::LocallyClosed) => Ok(()),
        other => Err(format!(
            "complete, but the client did not close within {limit:?}: {other:?}"
        )),
    }
}

/// Per-scenario statistics.
#[derive(Debug, Default, Clone)]
struct Stats {
    completed: usize,
    errored: Vec<String>,
    failed: Vec<(u64, String)>,
    times: Vec<Duration>,
    /// Wall-clock time spent on this scenario's runs.
    wall: Duration,
}

/// Whether `QUICSAND_SIM_FULL` asks for the full run.
fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn seeds() -> Vec<u64> {
    if std::env::var(SEED_ENV).is_ok() {
        return vec![seed_from_env(0)];
    }
    let n = if full() { FULL_SEEDS } else { FAST_SEEDS };
    (1..=n).collect()
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Prints the per-scenario table (markdown, to paste into docs).
fn print_summary(peers: Peers, rows: &[(Scenario, Stats)], seeds: usize, wall: Duration) {
    eprintln!();
    eprintln!(
        "sim matrix ({peers:?}): {seeds} seed(s) per scenario, wall time {:.1} s",
        wall.as_secs_f64()
    );
    eprintln!(
        "| scenario | bytes | completed | ended with error | failed | virtual s min / median / max | wall s |"
    );
    eprintln!("|---|---:|---:|---:|---:|---|---:|");
    for (sc, st) in rows {
        let mut t = st.times.clone();
        t.sort();
        let span = match (t.first(), t.get(t.len() / 2), t.last()) {
            (Some(a), Some(m), Some(b)) => format!("{} / {} / {}", fmt_secs(*a), fmt_secs(*m), fmt_secs(*b)),
            _ => "-".to_string(),
        };
        let mut errors: Vec<&String> = st.errored.iter().collect();
        errors.sort();
        errors.dedup();
        let errors = if errors.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                errors.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        eprintln!(
            "| {} | {} | {} | {}{} | {} | {} | {:.2} |",
            sc.name,
            sc.total,
            st.completed,
            st.errored.len(),
            errors,
            st.failed.len(),
            span,
            st.wall.as_secs_f64()
        );
    }
    eprintln!();
}

/// Runs the matrix with quicsand at both ends: every scenario (or `QUICSAND_SIM_SCENARIO`) with every
/// seed, on as many threads as there are cores, then prints the summary and fails listing every failing
/// (scenario, seed).
///
/// Measured wall time (test profile, opt-level 1, 2 cores): the fast slice (3 seeds) about 3.5 s; see the
/// module documentation for the full run.
#[test]
fn matrix() {
    run_matrix(Peers::Quicsand);
}

/// The matrix with a quinn-proto client sending to a quicsand server.
#[test]
fn matrix_quinn_client() {
    run_matrix(Peers::QuinnClient);
}

/// The matrix with a quicsand client sending to a quinn-proto server.
#[test]
fn matrix_quinn_server() {
    run_matrix(Peers::QuinnServer);
}

fn run_matrix(peers: Peers) {
    let only = std::env::var(SCENARIO_ENV).ok();
    let all = scenarios();
    let chosen: Vec<Scenario> = all
        .iter()
        .filter(|s| only.as_deref().map_or(true, |n| n == s.name))
        .cloned()
        .collect();
    assert!(
        !chosen.is_empty(),
        "no scenario named {:?}; known: {:?}",
        only,
        all.iter().map(|s| s.name).collect::<Vec<_>>()
    );
    let seeds = seeds();
    let jobs: Vec<(usize, u64)> = (0..chosen.len())
        .flat_map(|i| seeds.iter().map(move |s| (i, *s)))
        .collect();
    let stats = Mutex::new(vec![Stats::default(); chosen.len()]);
    let start = wall_now();
    common::parallel_for(jobs.len(), |k| {
        let (i, seed) = jobs[k];
        let sc = &chosen[i];
        let t0 = wall_now();
        let result = run(sc, seed, peers);
        let mut stats = stats.lock().unwrap();
        let st = &mut stats[i];
        st.wall += wall_now() - t0;
        match result {
            Ok(r) => {
                st.times.push(r.at);
                match r.end {
                    End::Completed => st.completed += 1,
                    End::Error(e) => st.errored.push(e),
                }
            }
            Err(e) => {
                eprintln!(
                    "FAILED {peers:?} scenario {} seed {seed}: {e}; replay with {SCENARIO_ENV}={} \
                     {SEED_ENV}={seed} cargo test --test sim_matrix -- --exact {}",
                    sc.name,
                    sc.name,
                    peers.test_name()
                );
                st.failed.push((seed, e));
            }
        }
    });
    let stats = stats.into_inner().unwrap();
    let rows: Vec<(Scenario, Stats)> = chosen.into_iter().zip(stats).collect();
    print_summary(peers, &rows, seeds.len(), wall_now() - start);
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|(sc, st)| {
            st.failed
                .iter()
                .map(move |(seed, e)| format!("{} seed {seed}: {e}", sc.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing run(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The goodput of one transfer over a loss-free or lossy bottleneck, as a fraction of the bandwidth.
struct Utilisation {
    /// Goodput from the end of the handshake to the last byte read, over the bandwidth.
    from_handshake: f64,
    /// Goodput from the first byte read to the last, over the bandwidth.
    from_first_byte: f64,
    transfer: Duration,
    dropped: u64,
}

fn utilisation(congestion: CongestionAlgorithm, loss: f64, total: u64, seed: u64) -> Utilisation {
    let bps = 100 * MBIT;
    let rtt = ms(50);
    let link = LinkConfig {
        delay: rtt / 2,
        loss,
        bandwidth_bps: Some(bps),
        queue_bytes: bdp_bytes(bps, rtt),
        ..LinkConfig::default()
    };
    let (server_config, client_config) = configs(congestion, seed);
    let limits = Limits {
        trace_records: 64,
        ..Limits::default()
    };
    let mut sim = Simulation::with_limits(common::epoch(), seed, limits);
    let server_addr = "10.0.0.2:4433".parse().unwrap();
    let server = sim.add_node(server_addr, Some(server_config), Box::new(Sink::default()));
    let sender = BulkSender::new(client_config, server_addr, "localhost", total, 1);
    let client = sim.add_node("10.0.0.1:50000".parse().unwrap(), None, Box::new(sender));
    sim.add_duplex_link(client, server, link);
    let done = sim.run_until(secs(120), |sim| {
        let sink = sim.app::<Sink>(server).unwrap();
        sink.total_bytes() == total && sink.finished_streams() == 1
    });
    let sink = sim.app::<Sink>(server).unwrap();
    assert!(
        done && sink.streams.values().all(|s| s.pattern_ok),
        "utilisation transfer did not complete byte-exact ({} of {total}); seed {seed}",
        sink.total_bytes()
    );
    let end = sink.completed_at().unwrap();
    let connected = sim.app::<BulkSender>(client).unwrap().connected_at.unwrap();
    let first = sink.first_byte_at.unwrap().duration_since(common::epoch());
    let rate = |from: Duration| total as f64 * 8.0 / (end - from).as_secs_f64() / bps as f64;
    Utilisation {
        from_handshake: rate(connected),
        from_first_byte: rate(first),
        transfer: end - connected,
        dropped: sim.trace().dropped,
    }
}

fn print_utilisation(label: &str, u: &Utilisation) {
    eprintln!(
        "utilisation {label}: {:.1}% from handshake ({:.1}% from first byte), {:.2} s virtual, {} dropped",
        u.from_handshake * 100.0,
        u.from_first_byte * 100.0,
        u.transfer.as_secs_f64(),
        u.dropped
    );
}

/// About 10 s at 100 Mbit/s.
const UTILISATION_BYTES: u64 = 120_000_000;

/// A loss-free 100 Mbit/s link with a 50 ms RTT and a one-BDP drop-tail queue: CUBIC must keep it at
/// least 90 % busy over a ~10 s transfer.
#[test]
fn utilisation_cubic_100mbit_50ms() {
    let seed = seed_from_env(1);
    let u = utilisation(CongestionAlgorithm::Cubic, 0.0, UTILISATION_BYTES, seed);
    print_utilisation("cubic, no loss", &u);
    assert!(
        u.from_handshake >= 0.90,
        "CUBIC link utilisation {:.1}% < 90% (seed {seed})",
        u.from_handshake * 100.0
    );
}

/// The same link with 1 % random loss (CUBIC), and loss-free with NewReno: printed, not asserted. Costs
/// about 11 s of wall time, so it runs only with `QUICSAND_SIM_FULL=1`.
#[test]
fn utilisation_lossy_and_newreno_measured() {
    if !full() {
        eprintln!("utilisation_lossy_and_newreno_measured: skipped, set {FULL_ENV}=1 to run it");
        return;
    }
    let seed = seed_from_env(1);
    let u = utilisation(CongestionAlgorithm::Cubic, 0.01, UTILISATION_BYTES / 12, seed);
    print_utilisation("cubic, 1% loss", &u);
    let u = utilisation(CongestionAlgorithm::NewReno, 0.0, UTILISATION_BYTES, seed);
    print_utilisation("newreno, no loss", &u);
}

/// Regressions found by the full matrix, run on every `cargo test`.
///
/// - `loss20_rtt20` seed 28: the client's Finished and its first 1-RTT packet were lost, and so was the
///   server's ACK of the other 1-RTT packets. Those packets filled the congestion window, no PTO may be
///   armed for application data before the handshake is confirmed (RFC 9002 §6.2.1), and the window held
///   back the retransmission of the Finished: both sides went silent until the idle timeout. Handshake
///   data is no longer held back by the window.
/// - `loss20_rtt20` seed 173, quinn-proto client: the server's first flight was lost, and its PTO probe
///   carried an ACK of the ClientHello a second after it arrived (when probes first carried ACK frames
///   in every space). quinn-proto took that second whole as its first RTT sample (the Initial space's
///   ACK delay is not subtracted), and its PTO, seconds long, outlasted the idle timeout after the
///   server's ACKs of its data were lost. Initial probes carry no ACK frame of their own accord.
#[test]
fn regressions() {
    let all = scenarios();
    for (name, seed, peers) in [
        ("loss20_rtt20", 28, Peers::Quicsand),
        ("loss20_rtt20", 173, Peers::QuinnClient),
    ] {
        let sc = all.iter().find(|s| s.name == name).unwrap();
        let result = run(sc, seed, peers);
        assert!(
            matches!(
                result,
                Ok(RunResult {
                    end: End::Completed,
                    ..
                })
            ),
            "{name} seed {seed} {peers:?}: {:?}",
            result.map(|r| format!("{:?}", r.end))
        );
    }
}

/// Runs with a quinn-proto peer are reproducible too: quinn-proto's RNG, connection IDs and keys come
/// from the node's seed, and the handshake sizes are fixed (Ed25519), so two runs with the same seed
/// make the same trace; only packet bytes (rustls randoms and key shares) differ.
#[test]
fn quinn_runs_reproduce() {
    let all = scenarios();
    let sc = all.iter().find(|s| s.name == "kitchen_sink_bw10_rtt100").unwrap();
    for peers in [Peers::QuinnClient, Peers::QuinnServer] {
        let seed = seed_from_env(7);
        let hash = |seed| {
            let mut sim = Simulation::with_limits(
                common::epoch(),
                seed,
                Limits {
                    trace_records: 0,
                    ..Limits::default()
                },
            );
            let result = run_in(&mut sim, sc, peers);
            assert!(result.is_ok(), "{peers:?} seed {seed}: {result:?}");
            sim.trace().hash()
        };
        let (a, b, c) = (hash(seed), hash(seed), hash(seed + 1));
        eprintln!("{peers:?} {}: seed {seed} trace hash {a:#018x}", sc.name);
        assert_eq!(a, b, "{peers:?}: two runs with seed {seed} differ");
        assert_ne!(
            a,
            c,
            "{peers:?}: seeds {seed} and {} gave the same trace",
            seed + 1
        );
    }
}
