//! A QUIC client on a real UDP socket: hq-interop downloads, or the echo workload.
//!
//! ```sh
//! # downloads, concurrently over one connection
//! cargo run --release --example client -- --ca /tmp/quicsand.pem --output /tmp/dl \
//!     https://localhost:4433/a.bin https://localhost:4433/b.bin
//! # the echo workload: 4 streams of 256 KiB and 100 datagrams, checked byte for byte
//! cargo run --release --example client -- --ca /tmp/quicsand.pem --alpn echo \
//!     --streams 4 --bytes 262144 --datagrams 100 https://localhost:4433
//! ```
//!
//! The exit status is 0 only when every download completed, or every echoed byte and datagram came back
//! intact. See `docs/interop.md`.

use std::error::Error;
use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use quicsand::crypto::tls::{self, ConfigOptions};
use quicsand::qlog::QlogWriter;
use quicsand::udp::{Driver, Handler};
use quicsand::wire::header::{VERSION_1, VERSION_2};
use quicsand::{ClientConfig, ConnectionHandle, Endpoint, EndpointConfig};

mod common;

use common::echo::{EchoClient, Workload};
use common::hq::{Download, HqClient, Sink};
use common::tls::suite_name;
use common::url::Url;

const HELP: &str = "\
QUIC client (quicsand) on UDP: hq-interop downloads or the echo workload.

USAGE: cargo run --release --example client -- [OPTIONS] URL...

  URL is https://host:port/path. Every URL must name the same host and port: one connection
  carries every request, concurrently.

OPTIONS:
  --ca PEM             trust the certificates in PEM (e.g. the server's --write-cert output)
  --insecure           accept any server certificate (testing only)
  --alpn NAME          hq-interop downloads the URLs; any other name runs the echo workload
                       against the first URL's host and port               [default: hq-interop]
  --output DIR         hq-interop: write each file to DIR (named after the path's last part); a failed download leaves no file
  --streams S          echo: bidirectional streams written concurrently    [default: 4]
  --bytes N            echo: bytes per stream (suffixes k, M: powers of 1024) [default: 256k]
  --datagrams D        echo: datagrams sent after the streams came back    [default: 100]
  --cipher NAME        offer only aes128, aes256 or chacha20               [default: all three]
  --seed N             endpoint RNG seed and echo payload seed             [default: from the OS]
  --quic-version V     QUIC version 1 or 2 (RFC 9369)                      [default: 1]
  --timeout SECS       give up after this long                             [default: 60]
  --qlog PATH          write the connection's qlog to PATH (JSON-SEQ, for qvis)
  -h, --help           print this help

Without --ca or --insecure the client trusts no certificate and the handshake fails.
";

struct Args {
    ca: Option<PathBuf>,
    insecure: bool,
    alpn: String,
    output: Option<PathBuf>,
    streams: usize,
    bytes: u64,
    datagrams: u32,
    cipher: Option<quicsand::crypto::Suite>,
    seed: Option<u64>,
    timeout: Duration,
    version: u32,
    qlog: Option<PathBuf>,
    urls: Vec<Url>,
}

/// The most echo streams (`--streams`).
const MAX_STREAMS: usize = 1_000_000;
/// The longest `--timeout` (about 31 years).
const MAX_TIMEOUT_SECS: f64 = 1e9;

fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, scale) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// `Ok(None)` means `--help` was asked for.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, Box<dyn Error>> {
    let mut args = Args {
        ca: None,
        insecure: false,
        alpn: "hq-interop".into(),
        output: None,
        streams: 4,
        bytes: 256 << 10,
        datagrams: 100,
        cipher: None,
        seed: None,
        qlog: None,
        timeout: Duration::from_secs(60),
        version: VERSION_1,
        urls: Vec::new(),
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if !flag.starts_with("--") {
            args.urls.push(Url::parse(&flag)?);
            continue;
        }
        if flag == "--insecure" {
            args.insecure = true;
            continue;
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ca" => args.ca = Some(value()?.into()),
            "--alpn" => {
                args.alpn = value()?;
                // RFC 7301 §3.1: a protocol name is 1 to 255 bytes.
                if !(1..=255).contains(&args.alpn.len()) {
                    return Err("--alpn: a name of 1 to 255 bytes".into());
                }
            }
            "--output" => args.output = Some(value()?.into()),
            "--streams" => {
                args.streams = value()?.parse().map_err(|e| format!("--streams: {e}"))?;
                // The echo client keeps a record per stream from the start.
                if args.streams > MAX_STREAMS {
                    return Err(format!("--streams: at most {MAX_STREAMS}").into());
                }
            }
            "--bytes" => args.bytes = parse_size(&value()?)?,
            "--datagrams" => args.datagrams = value()?.parse().map_err(|e| format!("--datagrams: {e}"))?,
            "--cipher" => args.cipher = Some(common::tls::parse_cipher(&value()?)?),
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--qlog" => args.qlog = Some(value()?.into()),
            "--quic-version" => {
                args.version = match value()?.as_str() {
                    "1" => VERSION_1,
                    "2" => VERSION_2,
                    other => return Err(format!("--quic-version: 1 or 2, not {other}").into()),
                }
            }
            "--timeout" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--timeout: {e}"))?;
                // A Duration holds up to 1.8e19 s, but adding more than about 9.2e18 s to an Instant
                // overflows it (a panic when the deadline is computed): any clock can add 31 years.
                if !(0.0..=MAX_TIMEOUT_SECS).contains(&secs) {
                    return Err(format!("--timeout: between 0 and {MAX_TIMEOUT_SECS} seconds").into());
                }
                args.timeout = Duration::from_secs_f64(secs);
            }
            other => return Err(format!("unknown option {other:?} (see --help)").into()),
        }
    }
    if args.urls.is_empty() {
        return Err("no URL given (see --help)".into());
    }
    let first = &args.urls[0];
    if args
        .urls
        .iter()
        .any(|u| u.host != first.host || u.port != first.port)
    {
        return Err("every URL must name the same host and port".into());
    }
    if args.ca.is_some() && args.insecure {
        return Err("--ca and --insecure exclude each other".into());
    }
    Ok(Some(args))
}

/// Turns the driver until the handler stops or `deadline` passes; `false` on the deadline, after
/// closing the connection (code 2) and sending the close.
fn drive<H: Handler>(
    driver: &mut Driver,
    handler: &mut H,
    conn: ConnectionHandle,
    deadline: std::time::Instant,
    mut tick: impl FnMut(&H),
) -> Result<bool, Box<dyn Error>> {
    while driver.turn(handler)?.is_continue() {
        tick(handler);
        let now = Driver::now();
        if now >= deadline {
            let _ = driver.endpoint().close(now, conn, 2, b"timeout");
            driver.flush()?;
            return Ok(false);
        }
    }
    driver.flush()?;
    tracing::debug!(stats = ?driver.stats(), "driver");
    Ok(true)
}

fn run(args: Args) -> Result<bool, Box<dyn Error>> {
    let url = &args.urls[0];
    let remote = url.resolve()?;
    let bind: SocketAddr = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let alpn = vec![args.alpn.as_bytes().to_vec()];
    let options = ConfigOptions::suites(args.cipher.as_slice());
    let tls = if args.insecure {
        tls::insecure_client_config_with(alpn, &options)?
    } else {
        let roots = match &args.ca {
            Some(ca) => common::tls::load_certs(ca)?,
            None => Vec::new(),
        };
        tls::client_config_with(roots, alpn, &options)?
    };
    // The echo payload's pattern comes from the seed too (any value will do without one).
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from_le_bytes(common::tls::random_bytes()[..8].try_into().unwrap()));
    let endpoint_config = EndpointConfig {
        supported_versions: vec![args.version],
        ..common::tls::endpoint_config(args.seed)
    };
    let mut driver = Driver::bind(bind, Endpoint::new(endpoint_config, None))?;
    let _ = driver.set_buffer_sizes(4 << 20, 4 << 20);
    let started = Driver::now();
    let deadline = started + args.timeout;
    let mut config = ClientConfig::new(tls);
    config.version = args.version;
    let conn = driver.endpoint().connect(started, config, remote, &url.host)?;
    if let Some(path) = &args.qlog {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        driver
            .endpoint()
            .conn(conn)?
            .set_qlog(Box::new(QlogWriter::new(BufWriter::new(file))));
    }

    if args.alpn != "hq-interop" {
        let workload = Workload {
            streams: args.streams,
            bytes: args.bytes,
            datagrams: args.datagrams,
            seed,
        };
        let mut client = EchoClient::new(conn, workload, started);
        let in_time = drive(&mut driver, &mut client, conn, deadline, |_| {})?;
        if !in_time {
            client
                .error
                .get_or_insert_with(|| format!("timed out after {:?}", args.timeout));
        }
        println!("{}", client.json());
        return Ok(client.all_ok());
    }

    let paths: Vec<&str> = args.urls.iter().map(|u| u.path.as_str()).collect();
    let files = match &args.output {
        Some(dir) => {
            let files = common::hq::output_files(dir, &paths)?;
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            files.into_iter().map(Some).collect()
        }
        None => vec![None; paths.len()],
    };
    let mut downloads = Vec::new();
    for (path, file) in paths.iter().zip(files) {
        let sink = match file {
            Some(file) => Sink::file(file.clone()).map_err(|e| format!("{}: {e}", file.display()))?,
            None => Sink::Discard,
        };
        downloads.push(Download::new(path, sink));
    }
    let total = downloads.len();
    let mut client = HqClient::new(conn, downloads, started);
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec} {elapsed} {msg}")
            .expect("a valid template"),
    );
    let in_time = drive(&mut driver, &mut client, conn, deadline, |c: &HqClient| {
        bar.set_position(c.bytes());
        bar.set_message(format!("{}/{total} files", c.downloads_ended()));
        bar.tick();
    })?;
    bar.finish_and_clear();
    tracing::debug!(stats = ?client.stats, "connection");
    report_hq(&client, total, in_time, args.timeout);
    client.remove_failed_files();
    Ok(in_time && client.all_ok())
}

fn report_hq(client: &HqClient, total: usize, in_time: bool, timeout: Duration) {
    for d in &client.downloads {
        if let Some(code) = d.reset {
            eprintln!("{}: reset by the server (code {code})", d.path);
        } else if let Some(e) = &d.sink_error {
            eprintln!("{}: {e}", d.path);
        } else if !d.complete {
            eprintln!("{}: incomplete after {} bytes", d.path, d.received);
        }
    }
    if !in_time {
        eprintln!("timed out after {timeout:?}");
    } else if let Some(reason) = client.lost.as_ref().filter(|_| client.finished_at.is_none()) {
        eprintln!("connection lost: {reason}");
    }
    let complete = client
        .downloads
        .iter()
        .filter(|d| d.complete && d.sink_error.is_none())
        .count();
    let end = client.finished_at.unwrap_or_else(Driver::now);
    let seconds = client
        .connected_at
        .map_or(0.0, |c| end.saturating_duration_since(c).as_secs_f64());
    let bytes = client.bytes();
    let mbit = if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds / 1e6
    } else {
        0.0
    };
    let handshake = match client.connected_at {
        Some(c) => format!(
            "handshake {:.1} ms, {}",
            c.saturating_duration_since(client.started_at).as_secs_f64() * 1e3,
            client.suite.map(suite_name).unwrap_or("unknown suite")
        ),
        None => "no handshake".to_owned(),
    };
    println!("{complete}/{total} files, {bytes} bytes in {seconds:.3} s: {mbit:.1} Mbit/s ({handshake})");
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match parse_args(std::env::args().skip(1)) {
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, Box<dyn Error>> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    /// A timeout too long to add to the start time is an argument error, not a panic in `run` when the
    /// deadline is computed.
    #[test]
    fn a_timeout_past_the_clock_s_range_is_an_error() {
        for bad in ["1e19", "1e300", "inf", "NaN", "-1"] {
            assert!(
                parse(&["--timeout", bad, "https://localhost:4433/"]).is_err(),
                "--timeout {bad} accepted"
            );
        }
        let a = parse(&["--timeout", "0.5", "https://localhost:4433/"])
            .expect("within range")
            .expect("not --help");
        assert_eq!(a.timeout, Duration::from_millis(500));
    }

    /// RFC 7301 §3.1: a protocol name is 1 to 255 bytes. rustls asserts it (an empty one panicked when
    /// the TLS configuration was built), and a longer one went out with its length cut to a byte.
    #[test]
    fn an_alpn_name_is_1_to_255_bytes() {
        let url = "https://localhost:4433/";
        let long = "a".repeat(256);
        for bad in ["", long.as_str()] {
            assert!(
                parse(&["--alpn", bad, url]).is_err(),
                "--alpn of {} bytes accepted",
                bad.len()
            );
        }
        let a = parse(&["--alpn", &long[..255], url])
            .expect("within range")
            .expect("not --help");
        assert_eq!(a.alpn.len(), 255);
    }

    /// The echo client keeps a record per stream from the start: a count past any server's stream
    /// limit is an argument error, not an allocation that aborts.
    #[test]
    fn an_echo_stream_count_beyond_reason_is_an_error() {
        let url = "https://localhost:4433";
        assert!(parse(&["--alpn", "echo", "--streams", "100000000000", url]).is_err());
        let a = parse(&["--alpn", "echo", "--streams", "1000000", url])
            .expect("within range")
            .expect("not --help");
        assert_eq!(a.streams, 1_000_000);
    }
}
