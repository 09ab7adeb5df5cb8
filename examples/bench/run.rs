//! The command line: which workload, with which parameters, repeated how often; and the report.

use std::path::PathBuf;

use quicsand::crypto::Suite;

use crate::measure::Stats;
use crate::setup::{parse_suite, suite_name, BulkParams, BulkResult, Mode, Tls};
use crate::{aead, qp, qs, tls_floor};

pub const HELP: &str = "\
quicsand vs quinn-proto, in the same process, one after the other, repeated.

USAGE: cargo run --release --example bench -- <WORKLOAD> [OPTIONS]

WORKLOADS:
  bulk        one stream in memory, no loss, one thread: goodput per CPU-second, beside the AEAD limit
  aead        ring's seal + open + 2 header-protection masks per packet alone: the limit of one core
  handshake   full handshakes per CPU-second (ECDSA P-256, no resumption), default and lean settings,
              beside the same TLS handshake through rustls alone
  memory      server heap bytes and allocations per idle established connection
  streams     request/response exchanges on short bidirectional streams over one connection
  udp         one stream over 127.0.0.1, two threads: the quicsand::udp driver vs quinn (tokio), per CPU-s
  all         every workload above

OPTIONS:
  --suite S        aes128, aes256 or chacha20 (bulk, aead)       [default: all three]
  --size N         UDP payload size of every datagram             [default: 1200]
  --batch N        datagrams per transmit (GSO segments)          [default: 10, both engines; udp: quicsand
                   only, at EndpointConfig's default (64) and at quinn's 10]
  --round N        datagrams the sender emits per driver round    [default: 2 x batch]
  --bytes N        bytes per bulk or udp transfer (suffixes K, M, G: powers of 1024)  [default: 256M]
  --reps N         repetitions of each measurement per engine     [default: 5; memory: 1]
  --handshakes N   handshakes per repetition                      [default: 1000]
  --conns N        idle connections for memory                    [default: 10000]
  --exchanges N    request/response exchanges for streams         [default: 10000]
  --message N      bytes of each request and response             [default: 1024]
  --svg PATH       write a plot of bulk goodput per engine (SVG)
  -h, --help       print this help
";

#[derive(Debug, Clone)]
pub struct Args {
    pub workload: String,
    pub suites: Vec<Suite>,
    pub size: usize,
    /// `--batch`; `None`: 10 for bulk, the endpoint's default and quinn's 10 for udp.
    pub batch: Option<usize>,
    pub round: Option<usize>,
    pub bytes: u64,
    pub reps: Option<usize>,
    pub handshakes: usize,
    pub conns: usize,
    pub exchanges: usize,
    pub message: usize,
    pub svg: Option<PathBuf>,
}

/// GSO segments per send of quinn 0.11 (its `MAX_TRANSMIT_SEGMENTS`, not configurable).
const QUINN_SEGMENTS: usize = 10;

impl Args {
    /// Datagrams per transmit in the in-memory bulk transfers, the same for both engines.
    pub fn bulk_batch(&self) -> usize {
        self.batch.unwrap_or(10)
    }
}

impl Default for Args {
    fn default() -> Self {
        Args {
            workload: String::new(),
            suites: vec![Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::ChaCha20Poly1305],
            size: 1200,
            batch: None,
            round: None,
            bytes: 256 << 20,
            reps: None,
            handshakes: 1000,
            conns: 10_000,
            exchanges: 10_000,
            message: 1024,
            svg: None,
        }
    }
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("{s}: {e}"))
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--suite" => {
                let v = value()?;
                a.suites = vec![parse_suite(&v).ok_or(format!("unknown suite {v}"))?];
            }
            "--size" => a.size = num(value()?)?,
            "--batch" => a.batch = Some(num(value()?)?.max(1)),
            "--round" => a.round = Some(num(value()?)?.max(1)),
            "--bytes" => a.bytes = parse_bytes(&value()?)?,
            "--reps" => a.reps = Some(num(value()?)?.max(1)),
            "--handshakes" => a.handshakes = num(value()?)?.max(1),
            "--conns" => a.conns = num(value()?)?.max(1),
            "--exchanges" => a.exchanges = num(value()?)?.max(1),
            "--message" => a.message = num(value()?)?.clamp(1, 64 * 1024),
            "--svg" => a.svg = Some(PathBuf::from(value()?)),
            w if !w.starts_with('-') && a.workload.is_empty() => a.workload = w.to_string(),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if a.workload.is_empty() {
        return Err("no workload given".into());
    }
    if !(1200..=1472).contains(&a.size) {
        return Err("--size must lie within 1200..=1472".into());
    }
    Ok(Some(a))
}

/// One row of the final table.
pub struct Row {
    pub what: String,
    pub unit: &'static str,
    pub quicsand: Stats,
    pub quinn: Stats,
    /// Extra remarks (allocations per datagram, share of the AEAD limit).
    pub note: String,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.quicsand.median / self.quinn.median
    }
}

fn fmt_stats(s: &Stats) -> String {
    format!("{} / {} / {}", sig(s.min), sig(s.median), sig(s.max))
}

/// Three significant digits, roughly.
fn sig(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Runs the workloads asked for and returns the rows of the report.
pub fn run(a: &Args) -> Vec<Row> {
    let all = a.workload == "all";
    let mut rows = Vec::new();
    let mut bulk_plot = Vec::new();
    if let Some(engine) = a.workload.strip_prefix("profile-") {
        profile(a, engine);
        return rows;
    }
    let known = ["all", "bulk", "aead", "handshake", "memory", "streams", "udp"];
    assert!(
        known.contains(&a.workload.as_str()),
        "unknown workload {}; see --help",
        a.workload
    );
    if all || a.workload == "bulk" || a.workload == "aead" {
        let with_engines = a.workload != "aead";
        for &suite in &a.suites {
            let (row, aead_row, plot) = bulk(a, suite, with_engines);
            rows.extend(row);
            rows.push(aead_row);
            bulk_plot.extend(plot);
        }
    }
    if all || a.workload == "handshake" {
        for mode in [Mode::Default, Mode::Lean] {
            rows.push(handshake(a, mode));
        }
    }
    if all || a.workload == "memory" {
        rows.extend(memory(a));
    }
    if all || a.workload == "streams" {
        rows.push(streams(a));
    }
    if all || a.workload == "udp" {
        rows.extend(udp(a));
    }
    if let (Some(path), false) = (&a.svg, bulk_plot.is_empty()) {
        match crate::plot::bulk(path, &bulk_plot, a) {
            Ok(()) => println!("plot written to {}", path.display()),
            Err(e) => eprintln!("plot: {e}"),
        }
    }
    rows
}

/// The bulk transfer the command line asks for.
fn bulk_params(a: &Args, suite: Suite) -> BulkParams {
    BulkParams {
        suite,
        size: a.size,
        batch: a.bulk_batch(),
        round: a.round.unwrap_or(2 * a.bulk_batch()),
        bytes: a.bytes,
    }
}

/// One engine alone, once, for a profiler: `profile-quicsand` or `profile-quinn` runs bulk with the first
/// suite; `profile-hs-quicsand`, `profile-hs-quinn` the lean handshakes (`profile-hs-default-quicsand`,
/// `profile-hs-default-quinn` and `profile-hs-default-rustls` the default ones); `profile-streams-*` the streams.
fn profile(a: &Args, what: &str) {
    let suite = a.suites[0];
    let p = bulk_params(a, suite);
    match what {
        "quicsand" => println!("{:?}", qs::bulk(&p, &Tls::new(suite, Mode::Default))),
        "quinn" => println!("{:?}", qp::bulk(&p, &Tls::new(suite, Mode::Default))),
        "hs-quicsand" => println!("{:?}", qs::handshakes(a.handshakes, &Tls::new(suite, Mode::Lean))),
        "hs-quinn" => println!(
            "{:?}",
            qp::handshakes(a.handshakes, &Tls::new(suite, Mode::Lean), Mode::Lean)
        ),
        "hs-default-quicsand" => println!(
            "{:?}",
            qs::handshakes(a.handshakes, &Tls::new(suite, Mode::Default))
        ),
        "hs-default-quinn" => println!(
            "{:?}",
            qp::handshakes(a.handshakes, &Tls::new(suite, Mode::Default), Mode::Default)
        ),
        "hs-default-rustls" => println!(
            "{:?}",
            tls_floor::handshakes(a.handshakes, &Tls::new(suite, Mode::Default))
        ),
        "hs-rustls" => println!(
            "{:?}",
            tls_floor::handshakes(a.handshakes, &Tls::new(suite, Mode::Lean))
        ),
        "streams-quicsand" => println!(
            "{:?}",
            qs::streams(a.exchanges, a.message, &Tls::new(suite, Mode::Default))
        ),
        "streams-quinn" => println!(
            "{:?}",
            qp::streams(a.exchanges, a.message, &Tls::new(suite, Mode::Default))
        ),
        "memory-quicsand" => println!("{:?}", qs::memory(a.conns, &Tls::new(suite, Mode::Default))),
        "memory-quinn" => println!("{:?}", qp::memory(a.conns, &Tls::new(suite, Mode::Default))),
        other => panic!("unknown profile target {other}"),
    }
}

/// What the plot shows for one suite.
pub struct BulkPlot {
    pub suite: Suite,
    pub quicsand: Stats,
    pub quinn: Stats,
    pub aead: Stats,
}

/// Whether `BENCH_ENGINE` names another engine than `engine` (`quicsand`, `quinn-proto`, for
/// handshakes `rustls`, for udp `quinn`): then `engine` is skipped and reads 0, so that a profiler sees one engine only.
fn skip(engine: &str) -> bool {
    std::env::var("BENCH_ENGINE").is_ok_and(|only| only != engine)
}

fn bulk(a: &Args, suite: Suite, with_engines: bool) -> (Option<Row>, Row, Option<BulkPlot>) {
    let reps = a.reps.unwrap_or(5);
    let p = bulk_params(a, suite);
    let tls = Tls::new(suite, Mode::Default);
    let name = suite_name(suite);
    let packets = a.bytes.div_ceil(aead::plaintext_len(a.size) as u64);
    let (mut q, mut r, mut lim) = (Vec::new(), Vec::new(), Vec::new());
    let (mut q_alloc, mut r_alloc) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        // With one engine only (a profiling run), the limit is not measured and reads NaN, like the
        // engine left out.
        let limit = if std::env::var_os("BENCH_ENGINE").is_some() {
            f64::NAN
        } else {
            let cpu = aead::run(suite, a.size, packets);
            packets as f64 * aead::plaintext_len(a.size) as f64 * 8.0 / cpu.as_secs_f64() / 1e9
        };
        lim.push(limit);
        print!("bulk {name} rep {}/{reps}: AEAD limit {limit:.2} Gbit/s", rep + 1);
        if with_engines {
            let x = if skip("quicsand") {
                BulkResult::default()
            } else {
                qs::bulk(&p, &tls)
            };
            let y = if skip("quinn-proto") {
                BulkResult::default()
            } else {
                qp::bulk(&p, &tls)
            };
            print!(
                "; quicsand {:.2} Gbit/s ({} + {} datagrams), quinn-proto {:.2} Gbit/s ({} + {} datagrams)",
                x.gbps(),
                x.datagrams,
                x.acks,
                y.gbps(),
                y.datagrams,
                y.acks
            );
            q.push(x.gbps());
            r.push(y.gbps());
            q_alloc.push(x.engine_allocs as f64 / (x.datagrams + x.acks) as f64);
            r_alloc.push(y.engine_allocs as f64 / (y.datagrams + y.acks) as f64);
        }
        println!();
    }
    let limit = Stats::of(&lim);
    let aead_row = Row {
        what: format!("AEAD limit, {name}, {} B", a.size),
        unit: "Gbit/s per CPU-s",
        quicsand: limit,
        quinn: limit,
        note: "ring seal + open + 2 HP masks per packet".into(),
    };
    if !with_engines {
        return (None, aead_row, None);
    }
    let (qs_stats, qp_stats) = (Stats::of(&q), Stats::of(&r));
    let row = Row {
        what: format!("bulk, {name}, {} B, batch {}", a.size, a.bulk_batch()),
        unit: "Gbit/s per CPU-s",
        quicsand: qs_stats,
        quinn: qp_stats,
        note: format!(
            "{:.0}% vs {:.0}% of the AEAD limit; allocations per datagram {:.3} vs {:.3}",
            100.0 * qs_stats.median / limit.median,
            100.0 * qp_stats.median / limit.median,
            Stats::of(&q_alloc).median,
            Stats::of(&r_alloc).median,
        ),
    };
    (
        Some(row),
        aead_row,
        Some(BulkPlot {
            suite,
            quicsand: qs_stats,
            quinn: qp_stats,
            aead: limit,
        }),
    )
}

fn handshake(a: &Args, mode: Mode) -> Row {
    let reps = a.reps.unwrap_or(5);
    let tls = Tls::new(Suite::Aes128Gcm, mode);
    let n = a.handshakes;
    let (mut q, mut r, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let x = if skip("quicsand") {
            0.0
        } else {
            n as f64 / qs::handshakes(n, &tls).as_secs_f64()
        };
        let y = if skip("quinn-proto") {
            0.0
        } else {
            n as f64 / qp::handshakes(n, &tls, mode).as_secs_f64()
        };
        let z = if skip("rustls") {
            0.0
        } else {
            n as f64 / tls_floor::handshakes(n, &tls).as_secs_f64()
        };
        println!(
            "handshake {mode:?} rep {}/{reps}: quicsand {x:.0}/s, quinn-proto {y:.0}/s, rustls alone {z:.0}/s",
            rep + 1
        );
        q.push(x);
        r.push(y);
        t.push(z);
    }
    let quinn = Stats::of(&r);
    let alone = Stats::of(&t).median;
    // rustls alone is the rate an engine would reach if its own work cost nothing; as a ratio to
    // quinn-proto's, the most any rustls-based engine can lead it by.
    let mut floor = String::new();
    if alone > 0.0 {
        floor = format!("; rustls alone: {alone:.0}/s");
        if quinn.median > 0.0 {
            floor += &format!(
                "; ceiling for any rustls engine vs quinn-proto: {:.2}x",
                alone / quinn.median
            );
        }
    }
    let work = match mode {
        Mode::Default => "rustls: 2 tickets; NEW_TOKEN; path MTU discovery (both)",
        Mode::Lean => "no tickets, no NEW_TOKEN, no MTU discovery (both)",
    };
    Row {
        what: format!("handshakes, {mode:?}"),
        unit: "per CPU-s",
        quicsand: Stats::of(&q),
        quinn,
        note: format!("{work}{floor}"),
    }
}

fn memory(a: &Args) -> Vec<Row> {
    let reps = a.reps.unwrap_or(1);
    let tls = Tls::new(Suite::Aes128Gcm, Mode::Default);
    let (mut qb, mut rb, mut qa, mut ra) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut notes = (0.0, 0.0);
    for rep in 0..reps {
        let x = qs::memory(a.conns, &tls);
        let y = qp::memory(a.conns, &tls);
        println!(
            "memory rep {}/{reps}, {} connections: quicsand {:.0} B and {:.1} allocations live per connection \
             ({:.0} made), quinn-proto {:.0} B and {:.1} ({:.0} made)",
            rep + 1,
            x.conns,
            x.bytes_per_conn,
            x.live_allocs_per_conn,
            x.allocs_per_conn,
            y.bytes_per_conn,
            y.live_allocs_per_conn,
            y.allocs_per_conn
        );
        qb.push(x.bytes_per_conn);
        rb.push(y.bytes_per_conn);
        qa.push(x.live_allocs_per_conn);
        ra.push(y.live_allocs_per_conn);
        notes = (x.allocs_per_conn, y.allocs_per_conn);
    }
    vec![
        Row {
            what: format!("server heap per idle connection ({} connections)", a.conns),
            unit: "bytes",
            quicsand: Stats::of(&qb),
            quinn: Stats::of(&rb),
            note: "lower is better".into(),
        },
        Row {
            what: "server allocations live per idle connection".into(),
            unit: "allocations",
            quicsand: Stats::of(&qa),
            quinn: Stats::of(&ra),
            note: format!(
                "{:.0} vs {:.0} made per connection while connecting",
                notes.0, notes.1
            ),
        },
    ]
}

fn streams(a: &Args) -> Row {
    let reps = a.reps.unwrap_or(5);
    let tls = Tls::new(Suite::Aes128Gcm, Mode::Default);
    let n = a.exchanges;
    let (mut q, mut r) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let x = if skip("quicsand") {
            0.0
        } else {
            n as f64 / qs::streams(n, a.message, &tls).as_secs_f64()
        };
        let y = if skip("quinn-proto") {
            0.0
        } else {
            n as f64 / qp::streams(n, a.message, &tls).as_secs_f64()
        };
        println!(
            "streams rep {}/{reps}: quicsand {x:.0}/s, quinn-proto {y:.0}/s",
            rep + 1
        );
        q.push(x);
        r.push(y);
    }
    Row {
        what: format!("{n} exchanges of {} B on short streams", a.message),
        unit: "exchanges per CPU-s",
        quicsand: Stats::of(&q),
        quinn: Stats::of(&r),
        note: "up to 100 streams at once (both engines' default limit)".into(),
    }
}

/// A real transfer over 127.0.0.1 through `quicsand::udp` against quinn on tokio: per CPU-second and
/// per wall-clock second. Without `--batch`, quicsand runs at its endpoint's default GSO batch and again
/// at quinn's 10 segments per send, both paired with the same quinn run.
#[cfg(feature = "udp")]
fn udp(a: &Args) -> Vec<Row> {
    // Five pairs: on a shared host single runs of this workload swing by a third, and the median of
    // three moved the ratio by as much.
    let reps = a.reps.unwrap_or(5);
    let tls = Tls::new(Suite::Aes128Gcm, Mode::Default);
    let batch = a
        .batch
        .unwrap_or(quicsand::EndpointConfig::default().max_segments);
    let also_quinns = (a.batch.is_none() && batch != QUINN_SEGMENTS).then_some(QUINN_SEGMENTS);
    let (mut qc, mut rc, mut qw, mut rw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut qa, mut ra) = (Vec::new(), Vec::new());
    let mut q10 = Vec::new();
    let mut gso = String::new();
    let run = |segments: usize| {
        if skip("quicsand") {
            crate::udp::UdpResult::default()
        } else {
            crate::udp::quicsand(a.bytes, a.size, segments, &tls)
        }
    };
    for rep in 0..reps {
        let x = run(batch);
        let y = if skip("quinn") {
            crate::udp::UdpResult::default()
        } else {
            crate::udp::quinn(a.bytes, a.size, &tls)
        };
        println!(
            "udp rep {}/{reps}: quicsand {:.2} Gbit/s per CPU-s ({:.2} CPU-s, {:.2} Gbit/s wall, \
             {:.2} allocations per datagram, {} datagrams both ways), quinn {:.2} Gbit/s per CPU-s ({:.2} CPU-s, \
             {:.2} Gbit/s wall, {:.2} allocations per datagram, {} datagrams both ways)",
            rep + 1,
            x.gbps_cpu(),
            x.cpu.as_secs_f64(),
            x.gbps_wall(),
            x.allocs_per_datagram(),
            x.datagrams,
            y.gbps_cpu(),
            y.cpu.as_secs_f64(),
            y.gbps_wall(),
            y.allocs_per_datagram(),
            y.datagrams,
        );
        if let Some((s, r)) = x.drivers {
            println!("  quicsand sender {s:?}\n  quicsand receiver {r:?}");
            gso = format!(
                "quicsand: {:.1} datagrams per send call, {:.1} per receive call",
                s.datagrams_sent as f64 / s.send_calls.max(1) as f64,
                r.datagrams_received as f64 / r.recv_calls.max(1) as f64
            );
        }
        if let Some(segments) = also_quinns {
            let z = run(segments);
            println!(
                "  quicsand at {segments} segments per send: {:.2} Gbit/s per CPU-s ({:.2} CPU-s, {:.2} Gbit/s wall)",
                z.gbps_cpu(),
                z.cpu.as_secs_f64(),
                z.gbps_wall()
            );
            q10.push(z.gbps_cpu());
        }
        qc.push(x.gbps_cpu());
        rc.push(y.gbps_cpu());
        qw.push(x.gbps_wall());
        rw.push(y.gbps_wall());
        qa.push(x.allocs_per_datagram());
        ra.push(y.allocs_per_datagram());
    }
    let what = format!(
        "udp 127.0.0.1, AES-128-GCM, {} B, {} MiB, GSO up to {batch} (quinn {QUINN_SEGMENTS})",
        a.size,
        a.bytes >> 20
    );
    let mut rows = vec![
        Row {
            what: what.clone(),
            unit: "Gbit/s per CPU-s (process)",
            quicsand: Stats::of(&qc),
            quinn: Stats::of(&rc),
            note: format!(
                "{}; vs quinn 0.11 on tokio current_thread; one thread per side; {gso} (last rep); \
                 allocations per datagram (whole process, median) {:.2} vs {:.2}",
                paired(&qc, &rc),
                Stats::of(&qa).median,
                Stats::of(&ra).median
            ),
        },
        Row {
            what,
            unit: "Gbit/s wall",
            quicsand: Stats::of(&qw),
            quinn: Stats::of(&rw),
            note: format!("{}; until the receiver has the last byte", paired(&qw, &rw)),
        },
    ];
    if let Some(segments) = also_quinns {
        rows.push(Row {
            what: format!("udp as above, quicsand at quinn's {segments} segments per send"),
            unit: "Gbit/s per CPU-s (process)",
            quicsand: Stats::of(&q10),
            quinn: Stats::of(&rc),
            note: format!("{}; the same quinn runs", paired(&q10, &rc)),
        });
    }
    rows
}

/// The ratio within each repetition's pair (quicsand's run and quinn's, back to back), as median (min to
/// max). On a shared host this workload's speed can jump between levels for minutes at a time (both
/// engines together); a pair mostly runs at one level, so the ratio within pairs is steadier than the
/// ratio of the two medians when repetitions straddle a jump.
#[cfg(feature = "udp")]
fn paired(quicsand: &[f64], quinn: &[f64]) -> String {
    let ratios: Vec<f64> = quicsand.iter().zip(quinn).map(|(q, r)| q / r).collect();
    if ratios.is_empty() {
        return "no pairs".into();
    }
    let s = Stats::of(&ratios);
    format!(
        "ratio within each pair: median {:.2}x ({:.2}x to {:.2}x)",
        s.median, s.min, s.max
    )
}

#[cfg(not(feature = "udp"))]
fn udp(_: &Args) -> Vec<Row> {
    println!("udp: needs the `udp` feature");
    Vec::new()
}

/// The report as a Markdown table: min / median / max per engine and the ratio of medians.
pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| workload | unit | quicsand min / median / max | quinn-proto (udp: quinn) min / median / max | ratio | notes |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let same = row.what.starts_with("AEAD");
        let (q, r, ratio) = if same {
            (
                fmt_stats(&row.quicsand),
                "(same for both)".to_string(),
                "".to_string(),
            )
        } else {
            (
                fmt_stats(&row.quicsand),
                fmt_stats(&row.quinn),
                format!("{:.2}x", row.ratio()),
            )
        };
        println!(
            "| {} | {} | {q} | {r} | {ratio} | {} |",
            row.what, row.unit, row.note
        );
    }
}
