//! A QUIC server on a real UDP socket, speaking hq-interop (HTTP/0.9 file serving) and echo.
//!
//! ```sh
//! cargo run --release --example server -- --root ./www --write-cert /tmp/quicsand.pem
//! ```
//!
//! See `docs/interop.md` for running it against other QUIC stacks.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use quicsand::crypto::tls::{self, ConfigOptions};
use quicsand::udp::Driver;
use quicsand::wire::header::{VERSION_1, VERSION_2};
use quicsand::{Endpoint, EndpointConfig, ServerConfig};

mod common;

use common::server::ServerApp;

const HELP: &str = "\
QUIC server (quicsand) on UDP: hq-interop file serving and echo.

USAGE: cargo run --release --example server -- [OPTIONS]

OPTIONS:
  --listen ADDR        address to listen on                            [default: 127.0.0.1:4433]
  --cert PEM           certificate chain (PEM); needs --key
  --key PEM            private key (PEM)
  --write-cert PATH    without --cert: write the generated self-signed certificate there (PEM),
                       for clients to trust with --ca
  --root DIR           directory hq-interop requests are served from (no files without it)
  --alpn LIST          comma-separated ALPN names; hq-interop serves files, any other name
                       echoes                                          [default: hq-interop,echo]
  --cipher NAME        offer only aes128, aes256 or chacha20           [default: all three]
  --seed N             endpoint RNG seed                               [default: from the OS]
  --qlog DIR           write each connection's qlog to DIR/server-N.sqlog (JSON-SEQ, for qvis)
  -h, --help           print this help

QUIC versions 1 and 2 (RFC 9369) are both accepted. Logs go to stderr through tracing; RUST_LOG=debug shows more.
";

struct Args {
    listen: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    write_cert: Option<PathBuf>,
    root: Option<PathBuf>,
    alpn: Vec<Vec<u8>>,
    cipher: Option<quicsand::crypto::Suite>,
    seed: Option<u64>,
    qlog: Option<PathBuf>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, Box<dyn Error>> {
    let mut args = Args {
        listen: "127.0.0.1:4433".parse()?,
        cert: None,
        key: None,
        write_cert: None,
        root: None,
        alpn: vec![b"hq-interop".to_vec(), b"echo".to_vec()],
        cipher: None,
        seed: None,
        qlog: None,
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--cert" => args.cert = Some(value()?.into()),
            "--key" => args.key = Some(value()?.into()),
            "--write-cert" => args.write_cert = Some(value()?.into()),
            "--root" => args.root = Some(value()?.into()),
            "--alpn" => {
                args.alpn = value()?
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(|a| a.as_bytes().to_vec())
                    .collect();
                // RFC 7301 §3.1: a protocol name is 1 to 255 bytes (empty ones are skipped above).
                if let Some(long) = args.alpn.iter().find(|a| a.len() > 255) {
                    return Err(format!("--alpn: a name of {} bytes (at most 255)", long.len()).into());
                }
            }
            "--cipher" => args.cipher = Some(common::tls::parse_cipher(&value()?)?),
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--qlog" => args.qlog = Some(value()?.into()),
            other => return Err(format!("unknown option {other:?} (see --help)").into()),
        }
    }
    if args.cert.is_some() != args.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    if args.alpn.is_empty() {
        return Err("--alpn needs at least one name".into());
    }
    if let Some(root) = &args.root {
        if !root.is_dir() {
            return Err(format!("--root {}: not a directory", root.display()).into());
        }
    }
    Ok(Some(args))
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let (chain, key) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => (common::tls::load_certs(cert)?, common::tls::load_key(key)?),
        _ => {
            let generated = common::tls::self_signed()?;
            match &args.write_cert {
                Some(path) => {
                    std::fs::write(path, &generated.cert_pem)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    tracing::info!(path = %path.display(), "self-signed certificate written");
                }
                None => tracing::info!("self-signed certificate (not written: no --write-cert)"),
            }
            (vec![generated.cert], generated.key)
        }
    };
    let options = ConfigOptions::suites(args.cipher.as_slice());
    let tls = tls::server_config_with(chain, key, args.alpn.clone(), &options)?;
    let endpoint = Endpoint::new(
        EndpointConfig {
            supported_versions: vec![VERSION_1, VERSION_2],
            ..common::tls::endpoint_config(args.seed)
        },
        Some(ServerConfig::new(tls)),
    );
    let mut driver = Driver::bind(args.listen, endpoint)?;
    // Bigger kernel buffers absorb bursts; the kernel may cap them (net.core.rmem_max).
    let _ = driver.set_buffer_sizes(4 << 20, 4 << 20);
    if args.root.is_none() {
        tracing::warn!("no --root: every hq-interop request will be refused");
    }
    let alpn: Vec<String> = args
        .alpn
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    tracing::info!(
        listen = %driver.local_addr()?,
        ?alpn,
        gso_segments = driver.max_gso_segments(),
        gro_segments = driver.gro_segments(),
        "listening"
    );
    let mut app = ServerApp::new(args.root);
    if let Some(dir) = &args.qlog {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        app.qlog_dir = Some(dir.clone());
    }
    driver.run(&mut app)?;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
            Ok(()) => ExitCode::SUCCESS,
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

    /// RFC 7301 §3.1: a protocol name is 1 to 255 bytes. A longer one was accepted and could never
    /// match a client's offer.
    #[test]
    fn an_alpn_name_longer_than_255_bytes_is_an_error() {
        let long = "a".repeat(256);
        assert!(parse(&["--alpn", &format!("echo,{long}")]).is_err());
        let a = parse(&["--alpn", &format!("echo,,{}", &long[..255])])
            .expect("within range")
            .expect("not --help");
        assert_eq!(a.alpn, vec![b"echo".to_vec(), long.as_bytes()[..255].to_vec()]);
    }

    /// A `--root` that is not a directory is an argument error, not a server that refuses every
    /// request.
    #[test]
    fn a_root_that_is_not_a_directory_is_an_error() {
        let dir = std::env::temp_dir();
        let missing = dir.join("quicsand-server-test-no-such-dir");
        assert!(parse(&["--root", &missing.to_string_lossy()]).is_err());
        let file = dir.join(format!("quicsand-server-test-file-{}", std::process::id()));
        std::fs::write(&file, b"x").expect("temp file");
        let as_root = parse(&["--root", &file.to_string_lossy()]);
        std::fs::remove_file(&file).expect("temp file removed");
        assert!(as_root.is_err());
        let a = parse(&["--root", &dir.to_string_lossy()])
            .expect("a directory")
            .expect("not --help");
        assert_eq!(a.root.as_deref(), Some(dir.as_path()));
    }
}
