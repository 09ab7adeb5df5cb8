//! HTTP/0.9 over QUIC (ALPN `hq-interop`) on quiche, to test quicsand against another stack.
//!
//! A small client and server on `std::net::UdpSocket`, one thread, no async runtime. See the README of
//! this directory (or `--help`) for the commands; docs/interop.md records what was run.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const HELP: &str = "\
quiche-interop: HTTP/0.9 (ALPN hq-interop) over QUIC v1 on quiche.

USAGE:
  quiche-interop client [OPTIONS] URL...
      Fetches every URL (https://HOST:PORT/PATH) over one connection, one bidirectional stream each,
      concurrently; prints one JSON line; exits 0 only when every response arrived with FIN.
      --ca PEM             trust this certificate (default: the system store)
      --no-verify          accept any certificate
      --output DIR         write each response to DIR/<last path component>
      --timeout SECS       give up after SECS                                 [default: 60]
      --session-file PATH  resume with the TLS session in PATH if it exists; save the new one there
      --early-data         with a session: send the requests as 0-RTT
      --rebind-after N     after N bytes received, move to a new UDP socket (new port) without
                           telling quiche, as a NAT rebinding would
      --max-payload N      largest UDP payload to send                        [default: 1350]
  quiche-interop server [OPTIONS]
      --listen ADDR        address to listen on                               [default: 127.0.0.1:4451]
      --cert PEM --key PEM certificate chain and private key (required)
      --root DIR           directory the files are served from (required)
      --retry              validate the client's address with a Retry packet first

A request is `GET /path` with an optional CRLF, then FIN. The server answers with the file's bytes and
FIN, or resets the stream with code 404 (400 for a request it cannot parse).
";

const ALPN: &[u8] = b"hq-interop";
const MAX_DATAGRAM: usize = 65535;
/// The server's connection IDs (short headers carry no length, so it parses with this one).
const CID_LEN: usize = 16;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("client") => client(&args[1..]),
        Some("server") => server(&args[1..]),
        _ => {
            print!("{HELP}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b
}

fn base_config() -> Res<quiche::Config> {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION)?;
    c.set_application_protos(&[ALPN])?;
    c.set_max_idle_timeout(30_000);
    c.set_max_recv_udp_payload_size(MAX_DATAGRAM);
    c.set_initial_max_data(64 << 20);
    c.set_initial_max_stream_data_bidi_local(32 << 20);
    c.set_initial_max_stream_data_bidi_remote(32 << 20);
    c.set_initial_max_stream_data_uni(1 << 20);
    c.set_initial_max_streams_bidi(128);
    c.set_initial_max_streams_uni(16);
    Ok(c)
}

/// Sends every datagram quiche has for `conn`.
fn flush(conn: &mut quiche::Connection, sock: &UdpSocket, out: &mut [u8]) -> io::Result<()> {
    loop {
        match conn.send(out) {
            Ok((n, info)) => match sock.send_to(&out[..n], info.to) {
                Ok(_) => {}
                // A full socket buffer: the datagram is lost, recovery sends it again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            },
            Err(quiche::Error::Done) => return Ok(()),
            Err(e) => {
                eprintln!("send: {e:?}");
                let _ = conn.close(false, 0x1, b"send failed");
                return Ok(());
            }
        }
    }
}

/// Waits for one datagram until `deadline` (None: at most one second); then drains whatever else has
/// arrived without waiting. Calls `f` for each.
fn receive(
    sock: &UdpSocket,
    buf: &mut [u8],
    deadline: Option<Instant>,
    mut f: impl FnMut(&mut [u8], SocketAddr),
) -> io::Result<()> {
    let wait = deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::from_secs(1));
    if wait.is_zero() {
        return Ok(());
    }
    sock.set_read_timeout(Some(wait))?;
    match sock.recv_from(buf) {
        Ok((n, from)) => f(&mut buf[..n], from),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(()),
        Err(e) => return Err(e),
    }
    sock.set_nonblocking(true)?;
    for _ in 0..256 {
        match sock.recv_from(buf) {
            Ok((n, from)) => f(&mut buf[..n], from),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                sock.set_nonblocking(false)?;
                return Err(e);
            }
        }
    }
    sock.set_nonblocking(false)
}

/// A CONNECTION_CLOSE as text: which kind, the code, the reason.
fn describe(e: &quiche::ConnectionError) -> String {
    let reason = String::from_utf8_lossy(&e.reason).replace(['"', '\\'], "'");
    format!(
        "{} {:#x} {reason}",
        if e.is_app { "application" } else { "transport" },
        e.error_code
    )
}

fn on_timeout_if_due(conn: &mut quiche::Connection) {
    if conn.timeout_instant().is_some_and(|t| t <= Instant::now()) {
        conn.on_timeout();
    }
}

// ---------------------------------------------------------------------------------------------------
// Client

struct Request {
    path: String,
    stream: u64,
    out: Option<BufWriter<File>>,
    bytes: u64,
    done: bool,
    reset: Option<u64>,
}

/// `--timeout SECS`: at most 1e9 s (about 31 years); more overflows `Instant` when the deadline is
/// computed, and a negative, NaN or infinite value panics in `Duration::from_secs_f64`.
fn parse_timeout(value: &str) -> Result<Duration, String> {
    let secs: f64 = value.parse().map_err(|e| format!("--timeout: {e}"))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err("--timeout: between 0 and 1000000000 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn client(args: &[String]) -> Res<bool> {
    let mut ca = None;
    let mut no_verify = false;
    let mut output: Option<PathBuf> = None;
    let mut timeout = Duration::from_secs(60);
    let mut session_file: Option<PathBuf> = None;
    let mut early_data = false;
    let mut rebind_after: Option<u64> = None;
    let mut max_payload = 1350;
    let mut urls = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--ca" => ca = Some(value()?),
            "--no-verify" => no_verify = true,
            "--output" => output = Some(value()?.into()),
            "--timeout" => timeout = parse_timeout(&value()?)?,
            "--session-file" => session_file = Some(value()?.into()),
            "--early-data" => early_data = true,
            "--rebind-after" => rebind_after = Some(value()?.parse()?),
            "--max-payload" => max_payload = value()?.parse()?,
            s if s.starts_with("--") => return Err(format!("unknown option {s}").into()),
            s => urls.push(s.to_string()),
        }
    }
    if urls.is_empty() {
        return Err("no URL".into());
    }
    // https://host:port/path, all on one authority.
    let mut authority = None;
    let mut requests = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let rest = url.strip_prefix("https://").ok_or("URLs start with https://")?;
        let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.get_or_insert_with(|| auth.to_string()) != auth {
            return Err("every URL must name the same host and port".into());
        }
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        let out = match &output {
            Some(dir) => {
                let name = Path::new(&path)
                    .file_name()
                    .map(|n| n.to_owned())
                    .unwrap_or("index.html".into());
                Some(BufWriter::new(File::create(dir.join(name))?))
            }
            None => None,
        };
        requests.push(Request {
            path,
            stream: 4 * i as u64,
            out,
            bytes: 0,
            done: false,
            reset: None,
        });
    }
    let authority = authority.unwrap();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let peer = authority.to_socket_addrs()?.next().ok_or("no address")?;

    let mut config = base_config()?;
    config.set_max_send_udp_payload_size(max_payload);
    config.verify_peer(!no_verify);
    if let Some(ca) = &ca {
        config.load_verify_locations_from_file(ca)?;
    }
    if early_data {
        config.enable_early_data();
    }

    let bind: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let mut sock = UdpSocket::bind(bind)?;
    sock.connect(peer)?;
    // quiche is told the address the socket is bound to; after a rebinding it keeps being told the
    // first one, as a client behind a NAT would not know its outside address changed.
    let local = sock.local_addr()?;
    let scid: [u8; 16] = random_bytes();
    let scid = quiche::ConnectionId::from_ref(&scid);
    let mut conn = quiche::connect(Some(host), &scid, local, peer, &mut config)?;
    let mut resumed_from_file = false;
    if let Some(path) = &session_file {
        if let Ok(session) = std::fs::read(path) {
            conn.set_session(&session)?;
            resumed_from_file = true;
        }
    }

    let start = Instant::now();
    let mut established_at = None;
    let mut requests_sent = false;
    let mut sent_in_early_data = false;
    let mut rebound = false;
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut rbuf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        if !requests_sent && (conn.is_established() || (early_data && conn.is_in_early_data())) {
            sent_in_early_data = !conn.is_established();
            for r in &requests {
                conn.stream_send(r.stream, format!("GET {}\r\n", r.path).as_bytes(), true)?;
            }
            requests_sent = true;
        }
        if established_at.is_none() && conn.is_established() {
            established_at = Some(Instant::now());
        }
        flush(&mut conn, &sock, &mut out)?;
        if conn.is_closed() || start.elapsed() > timeout {
            break;
        }
        let deadline = conn.timeout_instant().map(|t| t.min(start + timeout));
        receive(&sock, &mut buf, deadline, |d, from| {
            if let Err(e) = conn.recv(d, quiche::RecvInfo { from, to: local }) {
                eprintln!("recv: {e:?}");
            }
        })?;
        on_timeout_if_due(&mut conn);

        for id in conn.readable() {
            let Some(r) = requests.iter_mut().find(|r| r.stream == id) else {
                continue;
            };
            loop {
                match conn.stream_recv(id, &mut rbuf) {
                    Ok((n, fin)) => {
                        r.bytes += n as u64;
                        total += n as u64;
                        if let Some(f) = &mut r.out {
                            f.write_all(&rbuf[..n])?;
                        }
                        if fin {
                            r.done = true;
                            break;
                        }
                    }
                    Err(quiche::Error::Done) => break,
                    Err(quiche::Error::StreamReset(code)) => {
                        r.reset = Some(code);
                        r.done = true;
                        break;
                    }
                    Err(e) => return Err(format!("stream {id}: {e:?}").into()),
                }
            }
        }
        if let (Some(n), false) = (rebind_after, rebound) {
            if total >= n {
                let new = UdpSocket::bind(bind)?;
                new.connect(peer)?;
                eprintln!("rebinding: {} -> {}", sock.local_addr()?, new.local_addr()?);
                sock = new;
                rebound = true;
            }
        }
        if requests_sent && requests.iter().all(|r| r.done) && !conn.is_draining() {
            let _ = conn.close(true, 0, b"done");
        }
    }
    let elapsed = established_at.map_or(Duration::ZERO, |t| t.elapsed());
    for r in &mut requests {
        if let Some(f) = &mut r.out {
            f.flush()?;
        }
    }
    if let (Some(path), Some(session)) = (&session_file, conn.session()) {
        std::fs::write(path, session)?;
    }
    let ok = requests.iter().all(|r| r.done && r.reset.is_none());
    let stats = conn.stats();
    let path = conn.path_stats().next();
    let reqs: Vec<String> = requests
        .iter()
        .map(|r| {
            format!(
                "{{\"path\":\"{}\",\"bytes\":{},\"fin\":{},\"reset\":{}}}",
                r.path,
                r.bytes,
                r.done && r.reset.is_none(),
                r.reset.map_or("null".into(), |c| c.to_string())
            )
        })
        .collect();
    println!(
        "{{\"ok\":{ok},\"established\":{},\"resumed\":{},\"session_from_file\":{resumed_from_file},\
         \"requests_in_early_data\":{sent_in_early_data},\"rebound\":{rebound},\"requests\":[{}],\
         \"secs_after_handshake\":{:.3},\"mbit_s\":{:.1},\"sent\":{},\"recv\":{},\"lost\":{},\
         \"rtt_ms\":{:.3},\"pmtu\":{},\"peer_error\":\"{}\",\"local_error\":\"{}\",\"timed_out\":{}}}",
        established_at.is_some(),
        conn.is_resumed(),
        reqs.join(","),
        elapsed.as_secs_f64(),
        total as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9) / 1e6,
        stats.sent,
        stats.recv,
        stats.lost,
        path.as_ref().map_or(0.0, |p| p.rtt.as_secs_f64() * 1e3),
        path.as_ref().map_or(0, |p| p.pmtu),
        conn.peer_error().map_or(String::new(), describe),
        conn.local_error().map_or(String::new(), describe),
        conn.is_timed_out(),
    );
    Ok(ok)
}

// ---------------------------------------------------------------------------------------------------
// Server

struct Response {
    request: Vec<u8>,
    body: Option<Vec<u8>>,
    sent: usize,
}

struct ServerConn {
    conn: quiche::Connection,
    streams: HashMap<u64, Response>,
    ids: Vec<Vec<u8>>,
}

fn server(args: &[String]) -> Res<bool> {
    let mut listen: SocketAddr = "127.0.0.1:4451".parse()?;
    let (mut cert, mut key, mut root) = (None, None, None);
    let mut retry = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--cert" => cert = Some(value()?),
            "--key" => key = Some(value()?),
            "--root" => root = Some(PathBuf::from(value()?)),
            "--retry" => retry = true,
            s => return Err(format!("unknown option {s}").into()),
        }
    }
    let (cert, key, root) = match (cert, key, root) {
        (Some(c), Some(k), Some(r)) => (c, k, r),
        _ => return Err("--cert, --key and --root are required".into()),
    };
    let mut config = base_config()?;
    config.load_cert_chain_from_pem_file(&cert)?;
    config.load_priv_key_from_pem_file(&key)?;
    config.set_max_send_udp_payload_size(1350);

    let sock = UdpSocket::bind(listen)?;
    let local = sock.local_addr()?;
    eprintln!("listening on {local}, serving {}", root.display());
    let token_secret: [u8; 16] = random_bytes();
    let mut conns: HashMap<u64, ServerConn> = HashMap::new();
    let mut by_id: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut next = 0u64;
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = conns.values().filter_map(|c| c.conn.timeout_instant()).min();
        receive(&sock, &mut buf, deadline, |d, from| {
            let hdr = match quiche::Header::from_slice(d, CID_LEN) {
                Ok(h) => h,
                Err(_) => return,
            };
            let key = match by_id.get(hdr.dcid.as_ref()) {
                Some(k) => *k,
                None => {
                    // The version first: quiche reads the type bits of any version as version 1's.
                    if hdr.ty != quiche::Type::VersionNegotiation
                        && hdr.ty != quiche::Type::Short
                        && !quiche::version_is_supported(hdr.version)
                    {
                        // RFC 9000 §6.1: only for a datagram big enough to open a connection.
                        if d.len() >= 1200 {
                            if let Ok(n) = quiche::negotiate_version(&hdr.scid, &hdr.dcid, &mut out) {
                                let _ = sock.send_to(&out[..n], from);
                                eprintln!("{from}: version {:#x} -> Version Negotiation", hdr.version);
                            }
                        }
                        return;
                    }
                    if hdr.ty != quiche::Type::Initial {
                        return;
                    }
                    let mut odcid = None;
                    let scid: Vec<u8> = if retry {
                        let token = hdr.token.as_deref().unwrap_or(&[]);
                        if token.is_empty() {
                            let new: [u8; CID_LEN] = random_bytes();
                            let token = mint_token(&token_secret, &from, &hdr.dcid);
                            let new = quiche::ConnectionId::from_ref(&new);
                            if let Ok(n) =
                                quiche::retry(&hdr.scid, &hdr.dcid, &new, &token, hdr.version, &mut out)
                            {
                                let _ = sock.send_to(&out[..n], from);
                                eprintln!("{from}: Retry sent");
                            }
                            return;
                        }
                        match check_token(&token_secret, &from, token) {
                            Some(o) => {
                                eprintln!("{from}: Retry token valid");
                                odcid = Some(o);
                            }
                            None => {
                                eprintln!("{from}: bad Retry token");
                                return;
                            }
                        }
                        hdr.dcid.to_vec()
                    } else {
                        random_bytes::<CID_LEN>().to_vec()
                    };
                    let odcid = odcid.map(quiche::ConnectionId::from_vec);
                    let cid = quiche::ConnectionId::from_ref(&scid);
                    let conn = match quiche::accept(&cid, odcid.as_ref(), local, from, &mut config) {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("accept: {e:?}");
                            return;
                        }
                    };
                    let k = next;
                    next += 1;
                    let ids = vec![scid.clone(), hdr.dcid.to_vec()];
                    for id in &ids {
                        by_id.insert(id.clone(), k);
                    }
                    eprintln!("{from}: new connection {k}");
                    conns.insert(
                        k,
                        ServerConn {
                            conn,
                            streams: HashMap::new(),
                            ids,
                        },
                    );
                    k
                }
            };
            if let Some(c) = conns.get_mut(&key) {
                if let Err(e) = c.conn.recv(d, quiche::RecvInfo { from, to: local }) {
                    eprintln!("conn {key}: recv: {e:?}");
                }
            }
        })?;
        let mut closed = Vec::new();
        for (k, c) in conns.iter_mut() {
            on_timeout_if_due(&mut c.conn);
            if c.conn.is_established() || c.conn.is_in_early_data() {
                serve(c, &root);
            }
            flush(&mut c.conn, &sock, &mut out)?;
            if c.conn.is_closed() {
                closed.push(*k);
            }
        }
        for k in closed {
            let c = conns.remove(&k).unwrap();
            for id in &c.ids {
                by_id.remove(id);
            }
            let s = c.conn.stats();
            eprintln!(
                "conn {k} closed: peer_error={} local_error={} timed_out={} sent={} recv={} lost={} retrans={}",
                c.conn.peer_error().map_or("none".into(), describe),
                c.conn.local_error().map_or("none".into(), describe),
                c.conn.is_timed_out(),
                s.sent,
                s.recv,
                s.lost,
                s.retrans
            );
        }
    }
}

fn serve(c: &mut ServerConn, root: &Path) {
    let mut buf = [0u8; 4096];
    for id in c.conn.readable() {
        let r = c.streams.entry(id).or_insert(Response {
            request: Vec::new(),
            body: None,
            sent: 0,
        });
        while let Ok((n, fin)) = c.conn.stream_recv(id, &mut buf) {
            r.request.extend_from_slice(&buf[..n]);
            if r.request.len() > 4096 {
                let _ = c.conn.stream_shutdown(id, quiche::Shutdown::Write, 400);
                break;
            }
            if fin && r.body.is_none() {
                match respond(&r.request, root) {
                    Ok(body) => r.body = Some(body),
                    Err(code) => {
                        let _ = c.conn.stream_shutdown(id, quiche::Shutdown::Write, code);
                    }
                }
                break;
            }
        }
    }
    let mut finished = Vec::new();
    for (id, r) in c.streams.iter_mut() {
        let Some(body) = &r.body else { continue };
        loop {
            match c.conn.stream_send(*id, &body[r.sent..], true) {
                Ok(n) => {
                    r.sent += n;
                    if r.sent == body.len() {
                        // The last write carried FIN.
                        finished.push(*id);
                        break;
                    }
                    if n == 0 {
                        break;
                    }
                }
                Err(quiche::Error::Done) => break,
                Err(e) => {
                    eprintln!("stream {id}: {e:?}");
                    finished.push(*id);
                    break;
                }
            }
        }
    }
    for id in finished {
        c.streams.remove(&id);
    }
}

/// The file a request names, or the code to reset the stream with.
fn respond(request: &[u8], root: &Path) -> Result<Vec<u8>, u64> {
    let line = std::str::from_utf8(request).map_err(|_| 400u64)?;
    let path = line.trim_end().strip_prefix("GET ").ok_or(400u64)?;
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(404);
    }
    std::fs::read(root.join(rel)).map_err(|_| 404)
}

/// A Retry token: the client's address, then the original destination connection ID, then a keyed
/// check (not cryptographic strength; a test server).
fn mint_token(secret: &[u8; 16], from: &SocketAddr, odcid: &[u8]) -> Vec<u8> {
    let addr = from.to_string().into_bytes();
    let mut t = vec![addr.len() as u8];
    t.extend_from_slice(&addr);
    t.extend_from_slice(odcid);
    let tag = check_value(secret, &t);
    t.extend_from_slice(&tag.to_be_bytes());
    t
}

fn check_token(secret: &[u8; 16], from: &SocketAddr, token: &[u8]) -> Option<Vec<u8>> {
    let (body, tag) = token.split_at(token.len().checked_sub(8)?);
    if check_value(secret, body).to_be_bytes() != tag {
        return None;
    }
    let n = *body.first()? as usize;
    let addr = body.get(1..1 + n)?;
    (addr == from.to_string().as_bytes()).then(|| body[1 + n..].to_vec())
}

fn check_value(secret: &[u8; 16], data: &[u8]) -> u64 {
    // FNV-1a over the secret and the data.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in secret.iter().chain(data) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
