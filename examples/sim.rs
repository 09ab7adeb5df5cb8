//! A deterministic simulated bulk transfer between a quicsand client and server.
//!
//! The client sends a number of bytes over one or more unidirectional streams through a duplex link with
//! a bandwidth bottleneck, a drop-tail queue, propagation delay and optional loss or reordering, all on
//! the simulator's virtual clock. It samples the client connection's congestion window, bytes in flight
//! and RTT every quarter of the configured RTT, prints a summary table and writes an SVG plot.
//!
//! ```sh
//! cargo run --release --example sim -- --help
//! ```
//!
//! Every line of the summary except the wall-clock ones is the same in two runs with the same flags and
//! seed; see `docs/simulation.md`.

use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use quicsand::crypto::tls;
use quicsand::qlog::QlogWriter;
use quicsand::sim::{
    App, BulkSender, GilbertElliott, Limits, LinkConfig, LinkEcn, NodeCtx, Simulation, Sink,
};
use quicsand::{ClientConfig, CongestionAlgorithm, ConnectionHandle, Event, ServerConfig, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const HELP: &str = "\
Deterministic simulated QUIC bulk transfer (quicsand client -> quicsand server).

USAGE: cargo run --release --example sim -- [OPTIONS]

OPTIONS:
  --bandwidth MBIT    bottleneck bandwidth in Mbit/s, both directions        [default: 100]
  --rtt MS            round-trip propagation delay in ms (half each way)      [default: 50]
  --loss PERCENT      average datagram loss in each direction                 [default: 0]
  --bursty            Gilbert-Elliott bursty loss with the --loss average
                      (mean burst of 3.3 datagrams; --loss at most 76.9)
                      instead of random loss
  --reorder PERCENT   datagrams held back by RTT/4 so later ones overtake them [default: 0]
  --bytes N           bytes to transfer (suffixes k, M, G: powers of 1000)    [default: 50M]
  --duration SECS     transfer SECS worth of the bandwidth instead of --bytes
  --cc ALGO           congestion controller: cubic or newreno                 [default: cubic]
  --no-hystart        plain slow start until the first loss (no HyStart++)
  --streams N         unidirectional streams sharing the bytes                [default: 1]
  --seed N            simulation seed (decimal or 0x hex)                     [default: 1]
  --queue MULTIPLE    bottleneck queue size in bandwidth-delay products       [default: 1.0]
  --link-mtu BYTES    largest UDP payload the link carries (1472: a 1500-byte
                      Ethernet path over IPv4)                                [default: 1472]
  --no-mtu-discovery  keep 1200-byte datagrams (no path MTU probing)
  --ecn MODE          what the links do to ECN marks: carry them, clear them,
                      or mark (carry, and mark CE when the bottleneck queue
                      holds more than a fifth of the BDP)                     [default: carry]
  --svg PATH          where to write the plot                                 [default: sim.svg]
  --qlog PATH         write the client connection's qlog (JSON-SEQ) to PATH
  -h, --help          print this help
";

/// What the links do to ECN marks (`--ecn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EcnMode {
    Carry,
    Clear,
    Mark,
}

/// The scenario, from the command line.
#[derive(Debug, Clone)]
struct Args {
    bandwidth_mbit: f64,
    rtt_ms: f64,
    loss_percent: f64,
    bursty: bool,
    reorder_percent: f64,
    bytes: Option<u64>,
    duration_secs: Option<f64>,
    cc: CongestionAlgorithm,
    hystart: bool,
    streams: usize,
    seed: u64,
    queue_bdp: f64,
    link_mtu: usize,
    mtu_discovery: bool,
    ecn: EcnMode,
    svg: PathBuf,
    qlog: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            bandwidth_mbit: 100.0,
            rtt_ms: 50.0,
            loss_percent: 0.0,
            bursty: false,
            reorder_percent: 0.0,
            bytes: None,
            duration_secs: None,
            cc: CongestionAlgorithm::Cubic,
            hystart: true,
            streams: 1,
            seed: 1,
            queue_bdp: 1.0,
            link_mtu: 1472,
            mtu_discovery: true,
            ecn: EcnMode::Carry,
            svg: PathBuf::from("sim.svg"),
            qlog: None,
        }
    }
}

impl Args {
    fn bandwidth_bps(&self) -> u64 {
        (self.bandwidth_mbit * 1e6).round() as u64
    }
    fn rtt(&self) -> Duration {
        Duration::from_secs_f64(self.rtt_ms / 1e3)
    }
    /// The bandwidth-delay product in bytes.
    fn bdp(&self) -> f64 {
        self.bandwidth_bps() as f64 / 8.0 * self.rtt().as_secs_f64()
    }
    fn queue_bytes(&self) -> usize {
        // At least two full-size datagrams, so a tiny BDP still passes traffic.
        ((self.bdp() * self.queue_bdp).round() as usize).max(2 * 1500)
    }
    fn total_bytes(&self) -> u64 {
        match (self.bytes, self.duration_secs) {
            (Some(b), _) => b,
            (None, Some(s)) => (self.bandwidth_bps() as f64 / 8.0 * s).round() as u64,
            (None, None) => 50_000_000,
        }
    }
    fn cc_name(&self) -> String {
        let name = match self.cc {
            CongestionAlgorithm::NewReno => "newreno",
            _ => "cubic",
        };
        if self.hystart {
            name.to_string()
        } else {
            format!("{name} without HyStart++")
        }
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .trim()
        .parse()
        .map_err(|_| format!("{flag}: cannot parse {value:?}"))
}

fn parse_size(flag: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    let v = value.trim();
    let (digits, mult) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1_000),
        Some((i, 'm' | 'M')) => (&v[..i], 1_000_000),
        Some((i, 'g' | 'G')) => (&v[..i], 1_000_000_000),
        _ => (v, 1),
    };
    let n: f64 = digits
        .parse()
        .map_err(|_| format!("{flag}: cannot parse {value:?}"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{flag}: must be positive"));
    }
    Ok((n * mult as f64).round() as u64)
}

fn parse_seed(value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or("--seed needs a value")?;
    quicsand::sim::parse_seed(&value).ok_or_else(|| format!("--seed: cannot parse {value:?}"))
}

/// `Ok(None)` means `--help` was asked for.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args::default();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--bandwidth" => a.bandwidth_mbit = parse_num(&flag, it.next())?,
            "--rtt" => a.rtt_ms = parse_num(&flag, it.next())?,
            "--loss" => a.loss_percent = parse_num(&flag, it.next())?,
            "--bursty" => a.bursty = true,
            "--reorder" => a.reorder_percent = parse_num(&flag, it.next())?,
            "--bytes" => a.bytes = Some(parse_size(&flag, it.next())?),
            "--duration" => a.duration_secs = Some(parse_num(&flag, it.next())?),
            "--cc" => {
                a.cc = match it.next().as_deref() {
                    Some("cubic") => CongestionAlgorithm::Cubic,
                    Some("newreno") => CongestionAlgorithm::NewReno,
                    other => return Err(format!("--cc: expected cubic or newreno, got {other:?}")),
                }
            }
            "--no-hystart" => a.hystart = false,
            "--streams" => a.streams = parse_num(&flag, it.next())?,
            "--seed" => a.seed = parse_seed(it.next())?,
            "--queue" => a.queue_bdp = parse_num(&flag, it.next())?,
            "--link-mtu" => a.link_mtu = parse_num(&flag, it.next())?,
            "--no-mtu-discovery" => a.mtu_discovery = false,
            "--ecn" => {
                a.ecn = match it.next().as_deref() {
                    Some("carry") => EcnMode::Carry,
                    Some("clear") => EcnMode::Clear,
                    Some("mark") => EcnMode::Mark,
                    other => return Err(format!("--ecn: expected carry, clear or mark, got {other:?}")),
                }
            }
            "--svg" => a.svg = PathBuf::from(it.next().ok_or("--svg needs a value")?),
            "--qlog" => a.qlog = Some(PathBuf::from(it.next().ok_or("--qlog needs a value")?)),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    // At least 1 kbit/s (a slower link would take days per megabyte), at most 1 Tbit/s.
    if !(a.bandwidth_mbit.is_finite() && (0.001..=1e6).contains(&a.bandwidth_mbit)) {
        return Err("--bandwidth must be between 0.001 and 1000000 Mbit/s".into());
    }
    if !(a.rtt_ms.is_finite() && (0.0..=3_600_000.0).contains(&a.rtt_ms)) {
        return Err("--rtt must be between 0 and 3600000 ms".into());
    }
    if !(0.0..100.0).contains(&a.loss_percent) || !(0.0..=100.0).contains(&a.reorder_percent) {
        return Err("--loss must be in [0, 100) and --reorder in [0, 100]".into());
    }
    // The bad state's share is p_gb / (p_gb + 0.3), at most 1 / 1.3 (with p_gb = 1): a higher average
    // would need a probability above 1 of entering it.
    if a.bursty && a.loss_percent / 100.0 > 1.0 / (1.0 + BURSTY_BAD_TO_GOOD) {
        return Err(
            "--loss with --bursty must be at most 76.9 (bursts last 3.3 datagrams on average)".into(),
        );
    }
    if a.duration_secs.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        return Err("--duration must be positive".into());
    }
    if !(a.queue_bdp.is_finite() && a.queue_bdp > 0.0) {
        return Err("--queue must be positive".into());
    }
    // The server accepts 100 streams at once by default; more than 10,000 in all says little more.
    if !(1..=10_000).contains(&a.streams) {
        return Err("--streams must be between 1 and 10000".into());
    }
    if a.link_mtu < 1200 {
        return Err("--link-mtu must be at least 1200 (RFC 9000 §14)".into());
    }
    Ok(Some(a))
}

/// One sample of the client connection's state.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Virtual seconds since the epoch.
    t: f64,
    cwnd: u64,
    bytes_in_flight: u64,
    smoothed_rtt: Duration,
    latest_rtt: Duration,
}

/// A qlog writer the example can still reach (to flush and check errors) after handing it to the
/// connection.
#[derive(Debug, Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .flush()
    }
}

/// The client: a [`BulkSender`] (connects, writes `total` bytes over `streams` unidirectional streams as
/// flow control allows) that also installs the qlog writer and samples its connection's statistics every
/// `sample_every` of virtual time.
struct Client {
    inner: BulkSender,
    sample_every: Duration,
    samples: Vec<Sample>,
    qlog: Option<SharedFile>,
}

impl Client {
    fn sample(&mut self, ctx: &mut NodeCtx<'_>) {
        let t = ctx.elapsed().as_secs_f64();
        let Some(h) = self.inner.connection() else { return };
        let Ok(conn) = ctx.endpoint().conn(h) else { return };
        let s = conn.stats();
        self.samples.push(Sample {
            t,
            cwnd: s.cwnd,
            bytes_in_flight: s.bytes_in_flight,
            smoothed_rtt: s.smoothed_rtt,
            latest_rtt: s.latest_rtt,
        });
    }
}

impl App for Client {
    fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
        self.inner.on_start(ctx);
        let Some(h) = self.inner.connection() else { return };
        // Installed before the simulator drains the first transmit, so the trace starts with the Initial.
        if let (Some(file), Ok(mut conn)) = (self.qlog.clone(), ctx.endpoint().conn(h)) {
            conn.set_qlog(Box::new(QlogWriter::new(file)));
        }
        self.sample(ctx);
        ctx.wake_after(self.sample_every);
    }

    fn on_event(&mut self, ctx: &mut NodeCtx<'_>, handle: ConnectionHandle, event: &Event) {
        self.inner.on_event(ctx, handle, event);
    }

    fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
        self.sample(ctx);
        if self.inner.lost.is_none() && self.inner.finished_at.is_none() {
            ctx.wake_after(self.sample_every);
        }
    }
}

/// The real clock, read only to measure the example's own speed (and as the arbitrary origin of virtual
/// time; the simulation never reads it).
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> Instant {
    Instant::now()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn configs(args: &Args) -> Result<(ServerConfig, ClientConfig), Box<dyn Error>> {
    // Ed25519: fixed-size keys and signatures, so handshake sizes (and the trace) do not depend on the
    // freshly generated certificate.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    let cert = CertificateDer::from(cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Randoms and key shares from the seed, so that nothing the engines do depends on the operating
    // system's randomness (corrupted packets are read as headers; see `deterministic_tls`).
    let options = quicsand::sim::deterministic_tls(args.seed);
    let alpn = vec![b"sim".to_vec()];
    let server_tls = tls::server_config_with(vec![cert.clone()], key, alpn.clone(), &options)?;
    let client_tls = tls::client_config_with(vec![cert], alpn, &options)?;
    let mut transport = TransportConfig {
        congestion: args.cc,
        hystart: args.hystart,
        ..TransportConfig::default()
    };
    if !args.mtu_discovery {
        transport.mtu_discovery = None;
    }
    transport.streams.max_concurrent_uni_streams = transport
        .streams
        .max_concurrent_uni_streams
        .max(args.streams as u64);
    let mut server = ServerConfig::new(server_tls);
    server.transport = transport.clone();
    let mut client = ClientConfig::new(client_tls);
    client.transport = transport;
    Ok((server, client))
}

/// `--bursty`: the probability of leaving the bad state, which loses everything.
const BURSTY_BAD_TO_GOOD: f64 = 0.3;

fn link(args: &Args) -> LinkConfig {
    let p = args.loss_percent / 100.0;
    let (loss, gilbert_elliott) = if args.bursty && p > 0.0 {
        // Bad state loses everything and lasts 1 / 0.3 = 3.3 datagrams on average; the stationary share
        // of the bad state, p_gb / (p_gb + p_bg), is the average loss p.
        let ge = GilbertElliott {
            p_good_to_bad: p * BURSTY_BAD_TO_GOOD / (1.0 - p),
            p_bad_to_good: BURSTY_BAD_TO_GOOD,
            loss_bad: 1.0,
            loss_good: 0.0,
        };
        (0.0, Some(ge))
    } else {
        (p, None)
    };
    LinkConfig {
        delay: args.rtt() / 2,
        loss,
        gilbert_elliott,
        reorder: args.reorder_percent / 100.0,
        reorder_delay: args.rtt() / 4,
        bandwidth_bps: Some(args.bandwidth_bps()),
        queue_bytes: args.queue_bytes(),
        max_datagram_size: args.link_mtu,
        ecn: match args.ecn {
            EcnMode::Carry => LinkEcn::Carry,
            EcnMode::Clear => LinkEcn::Clear,
            EcnMode::Mark => LinkEcn::MarkAbove {
                above: (args.bdp() / 5.0).round() as usize,
            },
        },
        ..LinkConfig::default()
    }
}

fn plot(path: &PathBuf, samples: &[Sample], title: &str) -> Result<(), Box<dyn Error>> {
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1e-3);
    let bytes_max = samples
        .iter()
        .map(|s| s.cwnd.max(s.bytes_in_flight))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let rtt_max = samples
        .iter()
        .map(|s| ms(s.smoothed_rtt).max(ms(s.latest_rtt)))
        .fold(1.0, f64::max);

    let root = SVGBackend::new(path, (1100, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (top, bottom) = root.split_vertically(420);

    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..t_max, 0.0..bytes_max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("bytes")
        .draw()?;
    let cwnd = samples.iter().map(|s| (s.t, s.cwnd as f64));
    chart
        .draw_series(LineSeries::new(cwnd, BLUE.stroke_width(2)))?
        .label("congestion window")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let in_flight = samples.iter().map(|s| (s.t, s.bytes_in_flight as f64));
    chart
        .draw_series(LineSeries::new(in_flight, RED))?
        .label("bytes in flight")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..t_max, 0.0..rtt_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("RTT (ms)")
        .draw()?;
    let srtt = samples.iter().map(|s| (s.t, ms(s.smoothed_rtt)));
    chart
        .draw_series(LineSeries::new(srtt, GREEN.stroke_width(2)))?
        .label("smoothed RTT")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    let latest = samples.iter().map(|s| (s.t, ms(s.latest_rtt)));
    chart
        .draw_series(LineSeries::new(latest, BLACK.mix(0.35)))?
        .label("latest RTT sample")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.35)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn run(args: &Args) -> Result<bool, Box<dyn Error>> {
    let total = args.total_bytes();
    let (server_config, client_config) = configs(args)?;
    let qlog = match &args.qlog {
        Some(path) => Some(SharedFile(Arc::new(Mutex::new(BufWriter::new(File::create(
            path,
        )?))))),
        None => None,
    };

    let wall_start = wall_clock();
    // The epoch is an arbitrary origin: only durations since it matter. Only the trace's counters and
    // hash are reported, so no records are kept (the hash covers them all the same).
    let limits = Limits {
        trace_records: 0,
        ..Limits::default()
    };
    let mut sim = Simulation::with_limits(wall_start, args.seed, limits);
    let server_addr: SocketAddr = "10.0.0.2:4433".parse()?;
    let server = sim.add_node(server_addr, Some(server_config), Box::new(Sink::default()));
    let mut sender = BulkSender::new(client_config, server_addr, "localhost", total, args.streams);
    // The run stops when the sink has everything; closing would only add packets to the trace.
    sender.close_when_done = false;
    let client_app = Client {
        inner: sender,
        sample_every: (args.rtt() / 4).max(Duration::from_millis(1)),
        samples: Vec::new(),
        qlog: qlog.clone(),
    };
    let client = sim.add_node("10.0.0.1:50000".parse()?, None, Box::new(client_app));
    sim.add_duplex_link(client, server, link(args));

    // Ten minutes of virtual time, or ten times the ideal transfer time if that is longer.
    let ideal = total as f64 * 8.0 / args.bandwidth_bps() as f64;
    let limit = Duration::try_from_secs_f64((ideal * 10.0).max(600.0)).unwrap_or(Duration::MAX);
    let streams = args.streams;
    let done = sim.run_until(limit, |sim| {
        sim.app::<Sink>(server)
            .is_some_and(|s| s.total_bytes() == total && s.finished_streams() == streams)
    });
    let wall = wall_clock().duration_since(wall_start);

    let Some(sink) = sim.app::<Sink>(server) else {
        return Err("server app missing".into());
    };
    let received = sink.total_bytes();
    let pattern_ok = sink.streams.values().all(|s| s.pattern_ok);
    let completed_at = sink.completed_at();
    let server_lost = sink.lost.first().map(|(_, e)| format!("{e:?}"));
    let Some(app) = sim.app::<Client>(client) else {
        return Err("client app missing".into());
    };
    let sender = &app.inner;
    let (handle, connected_at, lost) = (sender.connection(), sender.connected_at, sender.lost.clone());
    let connect_error = sender.connect_error.clone();
    let mut samples = app.samples.clone();
    let stats = match (handle, sim.endpoint(client)) {
        (Some(h), Some(ep)) => ep.conn(h).ok().map(|mut c| {
            let _ = c.take_qlog();
            c.stats()
        }),
        _ => None,
    };
    if let Some(s) = &stats {
        // A last sample at the end of the transfer.
        samples.push(Sample {
            t: sim.elapsed().as_secs_f64(),
            cwnd: s.cwnd,
            bytes_in_flight: s.bytes_in_flight,
            smoothed_rtt: s.smoothed_rtt,
            latest_rtt: s.latest_rtt,
        });
    }

    let trace = sim.trace();
    let virtual_end = sim.elapsed();
    let handshake = connected_at.unwrap_or(virtual_end);
    let transfer = completed_at.unwrap_or(virtual_end).saturating_sub(handshake);
    let goodput = if transfer.is_zero() {
        0.0
    } else {
        received as f64 * 8.0 / transfer.as_secs_f64() / 1e6
    };
    let mut rtts: Vec<Duration> = samples
        .iter()
        .filter(|s| s.t >= handshake.as_secs_f64() && !s.latest_rtt.is_zero())
        .map(|s| s.latest_rtt)
        .collect();
    rtts.sort();

    let loss_kind = if args.bursty { "bursty" } else { "random" };
    println!(
        "quicsand sim: {} Mbit/s, RTT {} ms, loss {}% ({loss_kind}), reorder {}%, queue {} BDP ({} B), \
         link MTU {} B{}, {}, {} stream(s), {} bytes, seed {}",
        args.bandwidth_mbit,
        args.rtt_ms,
        args.loss_percent,
        args.reorder_percent,
        args.queue_bdp,
        args.queue_bytes(),
        args.link_mtu,
        if args.mtu_discovery {
            ""
        } else {
            " (no MTU discovery)"
        },
        args.cc_name(),
        args.streams,
        total,
        args.seed
    );
    println!();
    let row = |k: &str, v: String| println!("  {k:<26} {v}");
    row(
        "result",
        if done {
            "completed".into()
        } else {
            "INCOMPLETE".into()
        },
    );
    row(
        "bytes received",
        format!(
            "{received} of {total}{}",
            if pattern_ok { "" } else { " (CORRUPT)" }
        ),
    );
    row(
        "handshake time",
        connected_at.map_or("not completed".into(), |t| format!("{:.3} ms", ms(t))),
    );
    row(
        "transfer time (virtual)",
        format!("{:.3} s (after the handshake)", transfer.as_secs_f64()),
    );
    row("goodput", format!("{goodput:.2} Mbit/s"));
    row(
        "link utilisation",
        format!("{:.1} %", goodput / args.bandwidth_mbit * 100.0),
    );
    if let Some(s) = &stats {
        let retx = if s.stream_bytes_sent == 0 {
            0.0
        } else {
            s.stream_bytes_retransmitted as f64 / s.stream_bytes_sent as f64 * 100.0
        };
        row(
            "retransmission rate",
            format!(
                "{retx:.3} % ({} of {} stream bytes)",
                s.stream_bytes_retransmitted, s.stream_bytes_sent
            ),
        );
        row("smoothed RTT at end", format!("{:.3} ms", ms(s.smoothed_rtt)));
        row("min RTT", format!("{:.3} ms", ms(s.min_rtt)));
        row(
            "packets sent / lost",
            format!(
                "{} / {} ({} congestion events)",
                s.packets_sent, s.packets_lost, s.congestion_events
            ),
        );
        row(
            "path MTU",
            format!(
                "{} B ({} probes, {} lost)",
                s.path_mtu, s.mtu_probes_sent, s.mtu_probes_lost
            ),
        );
        row(
            "ECN",
            format!(
                "{} packets marked, {} CE signals ({} datagrams marked by the links){}",
                s.ecn_marked_sent,
                s.ecn_ce_signals,
                trace.ce_marked,
                if s.ecn_validation_failures > 0 {
                    ", validation failed"
                } else {
                    ""
                }
            ),
        );
    }
    row(
        "RTT p50 / p99 of samples",
        format!(
            "{:.3} / {:.3} ms ({} samples)",
            ms(percentile(&rtts, 50.0)),
            ms(percentile(&rtts, 99.0)),
            rtts.len()
        ),
    );
    row(
        "datagrams",
        format!("{} delivered, {} dropped", trace.delivered, trace.dropped),
    );
    row("trace hash", format!("{:#018x}", trace.hash()));
    row("seed", args.seed.to_string());
    if let Some(e) = &connect_error {
        row("connect error", e.clone());
    }
    if let Some(e) = &lost {
        row("client connection lost", format!("{e:?}"));
    }
    if let Some(e) = &server_lost {
        row("server connection lost", e.clone());
    }
    let speed = virtual_end.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    row("wall-clock time", format!("{:.3} s", wall.as_secs_f64()));
    row("speed-up (virtual / wall)", format!("{speed:.1}x"));

    if let Some(q) = &qlog {
        let mut q = q.clone();
        q.flush()?;
        row(
            "qlog",
            args.qlog
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
    }
    let title = format!(
        "quicsand sim: {} Mbit/s, RTT {} ms, loss {}% ({loss_kind}), {}, seed {}",
        args.bandwidth_mbit,
        args.rtt_ms,
        args.loss_percent,
        args.cc_name(),
        args.seed
    );
    plot(&args.svg, &samples, &title)?;
    row("plot", args.svg.display().to_string());
    Ok(done && received == total && pattern_ok)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: the transfer did not complete");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn out_of_range_arguments_are_errors_not_panics() {
        for bad in [
            &["--bandwidth", "1e-7"][..],
            &["--bandwidth", "0"],
            &["--bandwidth", "inf"],
            &["--rtt", "1e300"],
            &["--rtt", "-1"],
            &["--streams", "18446744073709551615"],
            &["--streams", "0"],
            &["--link-mtu", "1000"],
            &["--seed", "0x+5"],
            &["--seed", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let a = parse(&["--bandwidth", "0.001", "--rtt", "3600000", "--streams", "10000"])
            .expect("within range")
            .expect("not --help");
        assert_eq!(a.bandwidth_bps(), 1000);
        assert_eq!(a.rtt(), Duration::from_secs(3600));
    }

    /// With `--bursty`, the loss is the stationary share of the Gilbert-Elliott chain's bad state, whose
    /// bursts last 1 / 0.3 datagrams on average: above 1 / 1.3 (76.9 %) the chain would need a
    /// probability above 1 of entering it, and the link would lose less than asked.
    #[test]
    fn bursty_loss_is_the_average_asked_for_or_an_error() {
        for loss in [1.0, 50.0, 76.9] {
            let a = parse(&["--bursty", "--loss", &loss.to_string()])
                .expect("within range")
                .expect("not --help");
            let ge = link(&a).gilbert_elliott.expect("bursty loss");
            assert!(ge.p_good_to_bad <= 1.0, "loss {loss}: {ge:?}");
            let share = ge.p_good_to_bad / (ge.p_good_to_bad + ge.p_bad_to_good);
            assert!(
                (share - loss / 100.0).abs() < 1e-9,
                "loss {loss}: bad state {share}"
            );
        }
        for loss in ["77", "90", "99.9"] {
            assert!(
                parse(&["--bursty", "--loss", loss]).is_err(),
                "--bursty --loss {loss} accepted"
            );
        }
        assert!(parse(&["--loss", "90"]).is_ok(), "random loss may be as high");
    }
}
