//! quicsand with the least HTTP/3 (RFC 9114) that lets it fetch from and serve to HTTP/3-only peers,
//! such as the ngtcp2 programs Debian ships (gtlsclient, gtlsserver), which offer no HTTP/0.9.
//!
//! Only what a GET needs: a control stream with an empty SETTINGS frame (so no dynamic QPACK table and
//! no server push), the peer's unidirectional streams read and dropped, one request per bidirectional
//! stream (HEADERS, then DATA frames). Field sections are encoded and decoded with the QPACK code of
//! quiche's `h3` module, static table and literals only. The transport is quicsand's, on its UDP
//! driver. See `--help`, and tools/ngtcp2_interop.sh for the runs it serves.

use std::collections::HashMap;
use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use quiche::h3::NameValue;
use quicsand::crypto::tls::{self, ConfigOptions};
use quicsand::udp::{Driver, Handler};
use quicsand::wire::header::{VERSION_1, VERSION_2};
use quicsand::{
    ClientConfig, ConnectionHandle, Dir, Endpoint, EndpointConfig, Event, ReadError, ServerConfig,
    StreamEvent, StreamId, WriteError,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const HELP: &str = "\
quicsand-h3: quicsand speaking just enough HTTP/3 for GET requests.

USAGE:
  quicsand-h3 server --cert PEM --key PEM --root DIR [--listen ADDR] [--hq] [--key-update-every BYTES]
      Serves files from DIR (404 for anything else). Takes QUIC versions 1 and 2.
  quicsand-h3 client (--ca PEM | --insecure) [--output DIR] [--quic-version 1|2] [--hq]
                     [--key-update-every BYTES] [--timeout SECS] URL...
      Fetches every URL (https://HOST:PORT/PATH, one authority) concurrently over one connection,
      prints one line per URL and a summary; exits 0 only when every response was 200 and complete.

--hq: speak HTTP/0.9 instead (ALPN hq-interop: `GET /path` CRLF and FIN, the file's bytes and FIN, or
a reset with code 404), for peers such as tools/quiche-interop's quiche-interop.
--key-update-every BYTES: quicsand starts a key update (RFC 9001 section 6) each time that many more
response bytes were sent (server) or received (client). RUST_LOG=debug logs quicsand's counters.
";

const H3_NO_ERROR: u64 = 0x100;
const FRAME_DATA: u64 = 0x0;
const FRAME_HEADERS: u64 = 0x1;
const FILE_CHUNK: usize = 64 * 1024;

type Res<T> = Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("client") => client(&args[1..]),
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

// --- HTTP/3 framing ------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=63 => out.push(v as u8),
        64..=16383 => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        16384..=1073741823 => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// A varint at the start of `b` and its length, or None when `b` is too short.
fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
    }
    Some((v, len))
}

/// A HEADERS frame carrying `fields`.
fn headers_frame(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = vec![0u8; 4096];
    let n = quiche::h3::qpack::Encoder::new()
        .encode(fields, &mut block)
        .expect("a small field section fits");
    let mut out = Vec::new();
    put_varint(&mut out, FRAME_HEADERS);
    put_varint(&mut out, n as u64);
    out.extend_from_slice(&block[..n]);
    out
}

fn data_frame_header(len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, FRAME_DATA);
    put_varint(&mut out, len);
    out
}

/// The control stream's opening: stream type 0x00, then an empty SETTINGS frame.
const CONTROL_OPENING: [u8; 3] = [0x00, 0x04, 0x00];

fn decode_fields(block: &[u8]) -> Result<Vec<(String, String)>, String> {
    let fields = quiche::h3::qpack::Decoder::new()
        .decode(block, 64 * 1024)
        .map_err(|e| format!("QPACK: {e:?}"))?;
    Ok(fields
        .iter()
        .map(|h| {
            (
                String::from_utf8_lossy(h.name()).into_owned(),
                String::from_utf8_lossy(h.value()).into_owned(),
            )
        })
        .collect())
}

/// Splits whole frames off the front of a stream's bytes. DATA payloads are handed out as they come;
/// other frames are gathered whole.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of the current DATA frame not yet seen.
    data_left: u64,
}

enum Frame {
    Data(Vec<u8>),
    Other(u64, Vec<u8>),
}

impl FrameReader {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.data_left > 0 {
                if self.buf.is_empty() {
                    return;
                }
                let n = (self.data_left as usize).min(self.buf.len());
                out.push(Frame::Data(self.buf.drain(..n).collect()));
                self.data_left -= n as u64;
                continue;
            }
            let Some((ty, a)) = get_varint(&self.buf) else {
                return;
            };
            let Some((len, b)) = get_varint(&self.buf[a..]) else {
                return;
            };
            if ty == FRAME_DATA {
                self.buf.drain(..a + b);
                self.data_left = len;
                continue;
            }
            let end = a + b + len as usize;
            if self.buf.len() < end {
                return;
            }
            let payload = self.buf[a + b..end].to_vec();
            self.buf.drain(..end);
            out.push(Frame::Other(ty, payload));
        }
    }
}

// --- common --------------------------------------------------------------------------------------

/// h3, or with `--hq` the HTTP/0.9 of the QUIC interop runner.
fn alpn(hq: bool) -> Vec<u8> {
    if hq {
        b"hq-interop".to_vec()
    } else {
        b"h3".to_vec()
    }
}

/// Reads and drops whatever the peer sends on its unidirectional streams (control, QPACK), keeping
/// them open: HTTP/3 treats closing them as a connection error.
fn drain(endpoint: &mut Endpoint, h: ConnectionHandle, id: StreamId) {
    let Ok(mut c) = endpoint.conn(h) else { return };
    while let Ok(Some(_)) = c.stream(id).read_chunk(usize::MAX) {}
}

fn open_control(endpoint: &mut Endpoint, h: ConnectionHandle) {
    if let Ok(mut c) = endpoint.conn(h) {
        if let Some(id) = c.open_uni() {
            let _ = c.stream(id).write(&CONTROL_OPENING);
        }
    }
}

fn log_counters(endpoint: &mut Endpoint, h: ConnectionHandle, what: &str) {
    if let Ok(c) = endpoint.conn(h) {
        let s = c.stats();
        eprintln!(
            "{what}: remote={} alpn={:?} key_updates={} (phase {:?}) path_migrations={} \
             path_validation_failures={} cids_retired_by_peer={} packets_lost={} path_mtu={}",
            c.remote_address(),
            c.alpn_protocol()
                .map(|a| String::from_utf8_lossy(&a).into_owned()),
            s.key_updates,
            c.key_phase(),
            s.path_migrations,
            s.path_validation_failures,
            s.cids_retired_by_peer,
            s.packets_lost,
            s.path_mtu,
        );
    }
}

// --- server --------------------------------------------------------------------------------------

#[derive(Default)]
struct ServerStream {
    frames: FrameReader,
    /// The response: the bytes to send first (HEADERS, DATA frame header), then the file.
    head: Vec<u8>,
    file: Option<File>,
    chunk: Vec<u8>,
    pos: usize,
    answered: bool,
    done: bool,
}

struct H3Server {
    root: PathBuf,
    hq: bool,
    streams: HashMap<(ConnectionHandle, StreamId), ServerStream>,
    key_update_every: Option<u64>,
    sent: HashMap<ConnectionHandle, (u64, u64)>,
}

impl H3Server {
    fn pump(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, id: StreamId) {
        let Some(s) = self.streams.get_mut(&(h, id)) else {
            return;
        };
        let Ok(mut c) = endpoint.conn(h) else { return };
        let mut frames = Vec::new();
        let mut fin = false;
        loop {
            match c.stream(id).read_chunk(usize::MAX) {
                Ok(Some(b)) if self.hq => s.frames.buf.extend_from_slice(&b),
                Ok(Some(b)) => s.frames.push(&b, &mut frames),
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if self.hq && fin && !s.answered {
            // HTTP/0.9: `GET /path` (CRLF optional), the file's bytes, or a reset with 404.
            s.answered = true;
            let line = String::from_utf8_lossy(&s.frames.buf).into_owned();
            let path = line.trim_end().strip_prefix("GET ").map(str::to_owned);
            let file = path.as_deref().and_then(|p| open_under(&self.root, p));
            eprintln!(
                "{h:?} {id:?}: GET {path:?} -> {}",
                if file.is_some() { "file" } else { "reset 404" }
            );
            match file {
                Some((file, _)) => s.file = Some(file),
                None => {
                    let _ = c.stream(id).reset(404);
                    s.done = true;
                }
            }
        }
        for f in frames {
            if let (Frame::Other(FRAME_HEADERS, block), false) = (f, s.answered) {
                s.answered = true;
                let path = decode_fields(&block)
                    .ok()
                    .and_then(|fields| fields.into_iter().find(|(n, _)| n == ":path").map(|(_, v)| v));
                let file = path.as_deref().and_then(|p| open_under(&self.root, p));
                eprintln!(
                    "{h:?} {id:?}: GET {path:?} -> {}",
                    if file.is_some() { 200 } else { 404 }
                );
                match file {
                    Some((file, len)) => {
                        s.head = headers_frame(&[
                            (b":status", b"200"),
                            (b"content-length", len.to_string().as_bytes()),
                        ]);
                        s.head.extend(data_frame_header(len));
                        s.file = Some(file);
                    }
                    None => s.head = headers_frame(&[(b":status", b"404")]),
                }
                s.chunk = std::mem::take(&mut s.head);
            }
        }
        if !s.answered || s.done {
            return;
        }
        let mut written = 0u64;
        loop {
            if s.pos < s.chunk.len() {
                match c.stream(id).write(&s.chunk[s.pos..]) {
                    Ok(n) => {
                        s.pos += n;
                        written += n as u64;
                        continue;
                    }
                    Err(WriteError::Blocked) => break,
                    Err(_) => {
                        s.done = true;
                        break;
                    }
                }
            }
            s.chunk.resize(FILE_CHUNK, 0);
            s.pos = 0;
            let n = s.file.as_mut().map_or(0, |f| f.read(&mut s.chunk).unwrap_or(0));
            s.chunk.truncate(n);
            if n == 0 {
                let _ = c.stream(id).finish();
                s.done = true;
                break;
            }
        }
        if let Some(every) = self.key_update_every {
            let (total, next) = self.sent.entry(h).or_insert((0, every));
            *total += written;
            if *total >= *next {
                *next += every;
                c.force_key_update();
            }
        }
        if s.done {
            self.streams.remove(&(h, id));
        }
    }
}

impl Handler for H3Server {
    fn on_event(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, event: Event, _now: Instant) {
        match event {
            Event::Connected => {
                log_counters(endpoint, h, "connected");
                if !self.hq {
                    open_control(endpoint, h);
                }
            }
            Event::Stream(StreamEvent::Opened { dir }) => {
                let mut ids = Vec::new();
                if let Ok(mut c) = endpoint.conn(h) {
                    while let Some(id) = c.accept(dir) {
                        ids.push(id);
                    }
                }
                for id in ids {
                    if dir == Dir::Bi {
                        self.streams.insert((h, id), ServerStream::default());
                        self.pump(endpoint, h, id);
                    } else {
                        drain(endpoint, h, id);
                    }
                }
            }
            Event::Stream(StreamEvent::Readable { id } | StreamEvent::Writable { id }) => {
                if self.streams.contains_key(&(h, id)) {
                    self.pump(endpoint, h, id);
                } else {
                    drain(endpoint, h, id);
                }
            }
            Event::Stream(StreamEvent::Reset { id, .. } | StreamEvent::Stopped { id, .. }) => {
                self.streams.remove(&(h, id));
            }
            Event::ConnectionLost { reason } => {
                log_counters(endpoint, h, "closed");
                eprintln!("{h:?}: connection closed: {reason}");
                self.streams.retain(|(c, _), _| *c != h);
                self.sent.remove(&h);
            }
            _ => {}
        }
    }
}

/// `path` under `root` as an open regular file and its length.
fn open_under(root: &Path, path: &str) -> Option<(File, u64)> {
    let mut p = root.to_path_buf();
    for c in Path::new(path.split('?').next()?.trim_start_matches('/')).components() {
        match c {
            Component::Normal(x) => p.push(x),
            Component::CurDir => {}
            _ => return None,
        }
    }
    let meta = std::fs::metadata(&p).ok()?;
    meta.is_file()
        .then(|| File::open(&p).ok().map(|f| (f, meta.len())))?
}

fn server(args: &[String]) -> Res<bool> {
    let mut listen: SocketAddr = "127.0.0.1:4453".parse()?;
    let (mut cert, mut key, mut root, mut every) = (None, None, None, None);
    let mut hq = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--cert" => cert = Some(value()?),
            "--key" => key = Some(value()?),
            "--root" => root = Some(PathBuf::from(value()?)),
            "--key-update-every" => every = Some(value()?.parse()?),
            "--hq" => hq = true,
            s => return Err(format!("unknown option {s}").into()),
        }
    }
    let (Some(cert), Some(key), Some(root)) = (cert, key, root) else {
        return Err("--cert, --key and --root are required".into());
    };
    let chain = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let tls = tls::server_config_with(chain, key, vec![alpn(hq)], &ConfigOptions::default())?;
    let endpoint = Endpoint::new(
        EndpointConfig {
            supported_versions: vec![VERSION_1, VERSION_2],
            seed: quicsand::udp::os_seed()?,
            ..EndpointConfig::default()
        },
        Some(ServerConfig::new(tls)),
    );
    let mut driver = Driver::bind(listen, endpoint)?;
    let _ = driver.set_buffer_sizes(4 << 20, 4 << 20);
    eprintln!(
        "listening on {}, serving {}",
        driver.local_addr()?,
        root.display()
    );
    let mut app = H3Server {
        root,
        hq,
        streams: HashMap::new(),
        key_update_every: every,
        sent: HashMap::new(),
    };
    driver.run(&mut app)?;
    Ok(true)
}

// --- client --------------------------------------------------------------------------------------

struct Request {
    path: String,
    out: Option<BufWriter<File>>,
    frames: FrameReader,
    status: Option<String>,
    body: u64,
    complete: bool,
    error: Option<String>,
}

struct H3Client {
    conn: ConnectionHandle,
    hq: bool,
    authority: String,
    requests: Vec<Request>,
    by_stream: HashMap<StreamId, usize>,
    next: usize,
    connected_at: Option<Instant>,
    finished_at: Option<Instant>,
    lost: Option<String>,
    key_update_every: Option<u64>,
    received: u64,
    next_update: u64,
}

impl H3Client {
    fn send_requests(&mut self, endpoint: &mut Endpoint) {
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return;
        };
        while self.next < self.requests.len() {
            let Some(id) = c.open_bi() else { break };
            let r = &self.requests[self.next];
            let frame = if self.hq {
                format!("GET {}\r\n", r.path).into_bytes()
            } else {
                headers_frame(&[
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", self.authority.as_bytes()),
                    (b":path", r.path.as_bytes()),
                    (b"user-agent", b"quicsand-h3"),
                ])
            };
            let mut s = c.stream(id);
            if s.write(&frame) != Ok(frame.len()) || s.finish().is_err() {
                self.requests[self.next].error = Some("request not sent whole".into());
            }
            self.by_stream.insert(id, self.next);
            self.next += 1;
        }
    }

    fn read(&mut self, endpoint: &mut Endpoint, id: StreamId) {
        let Some(&i) = self.by_stream.get(&id) else {
            drain(endpoint, self.conn, id);
            return;
        };
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return;
        };
        let r = &mut self.requests[i];
        let mut frames = Vec::new();
        let mut got = 0u64;
        loop {
            match c.stream(id).read_chunk(usize::MAX) {
                Ok(Some(b)) => {
                    got += b.len() as u64;
                    if self.hq {
                        frames.push(Frame::Data(b.to_vec()));
                    } else {
                        r.frames.push(&b, &mut frames);
                    }
                }
                Ok(None) => {
                    r.complete = true;
                    if self.hq {
                        // HTTP/0.9 has no status: a response that ends with FIN is the file.
                        r.status = Some("200".into());
                    }
                    break;
                }
                Err(ReadError::Reset { code }) if self.hq => {
                    r.status = Some(format!("reset {code}"));
                    r.complete = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(e) => {
                    r.error = Some(format!("{e}"));
                    break;
                }
            }
        }
        for f in frames {
            match f {
                Frame::Data(d) => {
                    r.body += d.len() as u64;
                    if let Some(out) = &mut r.out {
                        if let Err(e) = out.write_all(&d) {
                            r.error.get_or_insert(e.to_string());
                        }
                    }
                }
                Frame::Other(FRAME_HEADERS, block) if r.status.is_none() => match decode_fields(&block) {
                    Ok(fields) => {
                        r.status = fields.into_iter().find(|(n, _)| n == ":status").map(|(_, v)| v);
                    }
                    Err(e) => r.error = Some(e),
                },
                Frame::Other(..) => {}
            }
        }
        if r.complete {
            if let Some(out) = &mut r.out {
                let _ = out.flush();
            }
        }
        self.received += got;
        if let Some(every) = self.key_update_every {
            if self.received >= self.next_update {
                self.next_update += every;
                c.force_key_update();
            }
        }
    }
}

impl Handler for H3Client {
    fn on_event(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, event: Event, now: Instant) {
        if h != self.conn {
            return;
        }
        match event {
            Event::Connected => {
                self.connected_at = Some(now);
                log_counters(endpoint, h, "connected");
                if !self.hq {
                    open_control(endpoint, h);
                }
                self.send_requests(endpoint);
            }
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => self.send_requests(endpoint),
            Event::Stream(StreamEvent::Opened { dir }) => {
                let mut ids = Vec::new();
                if let Ok(mut c) = endpoint.conn(h) {
                    while let Some(id) = c.accept(dir) {
                        ids.push(id);
                    }
                }
                for id in ids {
                    drain(endpoint, h, id);
                }
            }
            Event::Stream(StreamEvent::Readable { id } | StreamEvent::Reset { id, .. }) => {
                self.read(endpoint, id)
            }
            Event::ConnectionLost { reason } => self.lost = Some(reason.to_string()),
            _ => {}
        }
        if self.finished_at.is_none()
            && self.next == self.requests.len()
            && self.requests.iter().all(|r| r.complete || r.error.is_some())
        {
            self.finished_at = Some(now);
            log_counters(endpoint, h, "done");
            let _ = endpoint.close(now, h, if self.hq { 0 } else { H3_NO_ERROR }, b"");
        }
    }

    fn on_turn(&mut self, _endpoint: &mut Endpoint, _now: Instant) -> std::ops::ControlFlow<()> {
        if self.lost.is_some() {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }
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
    let (mut ca, mut insecure, mut output, mut every) = (None, false, None::<PathBuf>, None);
    let mut version = VERSION_1;
    let mut hq = false;
    let mut timeout = Duration::from_secs(60);
    let mut urls = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--ca" => ca = Some(value()?),
            "--insecure" => insecure = true,
            "--hq" => hq = true,
            "--output" => output = Some(value()?.into()),
            "--key-update-every" => every = Some(value()?.parse()?),
            "--timeout" => timeout = parse_timeout(&value()?)?,
            "--quic-version" => {
                version = match value()?.as_str() {
                    "1" => VERSION_1,
                    "2" => VERSION_2,
                    v => return Err(format!("--quic-version: 1 or 2, not {v}").into()),
                }
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}").into()),
            s => urls.push(s.to_string()),
        }
    }
    let mut authority: Option<String> = None;
    let mut requests = Vec::new();
    for url in &urls {
        let rest = url.strip_prefix("https://").ok_or("URLs start with https://")?;
        let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.get_or_insert_with(|| auth.to_string()) != auth {
            return Err("every URL must name the same host and port".into());
        }
        let path = if path.is_empty() { "/" } else { path };
        let out = match &output {
            Some(dir) => {
                let name = path
                    .rsplit('/')
                    .next()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("index.html");
                Some(BufWriter::new(File::create(dir.join(name))?))
            }
            None => None,
        };
        requests.push(Request {
            path: path.to_string(),
            out,
            frames: FrameReader::default(),
            status: None,
            body: 0,
            complete: false,
            error: None,
        });
    }
    let authority = authority.ok_or("no URL")?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let remote = authority.to_socket_addrs()?.next().ok_or("no address")?;
    let alpn = vec![alpn(hq)];
    let tls = if insecure {
        tls::insecure_client_config_with(alpn, &ConfigOptions::default())?
    } else {
        let roots = match &ca {
            Some(ca) => CertificateDer::pem_file_iter(ca)?.collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        tls::client_config_with(roots, alpn, &ConfigOptions::default())?
    };
    let endpoint = Endpoint::new(
        EndpointConfig {
            supported_versions: vec![version],
            seed: quicsand::udp::os_seed()?,
            ..EndpointConfig::default()
        },
        None,
    );
    let bind: SocketAddr = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let mut driver = Driver::bind(bind, endpoint)?;
    let _ = driver.set_buffer_sizes(4 << 20, 4 << 20);
    let started = Driver::now();
    let mut config = ClientConfig::new(tls);
    config.version = version;
    let conn = driver.endpoint().connect(started, config, remote, host)?;
    let mut app = H3Client {
        conn,
        hq,
        authority: authority.clone(),
        requests,
        by_stream: HashMap::new(),
        next: 0,
        connected_at: None,
        finished_at: None,
        lost: None,
        key_update_every: every,
        received: 0,
        next_update: every.unwrap_or(u64::MAX),
    };
    let deadline = started + timeout;
    let mut in_time = true;
    while driver.turn(&mut app)?.is_continue() {
        let now = Driver::now();
        if now >= deadline {
            let _ = driver.endpoint().close(now, conn, H3_NO_ERROR, b"timeout");
            in_time = false;
            break;
        }
    }
    driver.flush()?;
    let mut ok = in_time && app.finished_at.is_some();
    let mut bytes = 0;
    for r in &app.requests {
        let good = r.complete && r.error.is_none() && r.status.as_deref() == Some("200");
        ok &= good;
        bytes += r.body;
        println!(
            "{}: status {} body {} bytes complete {}{}",
            r.path,
            r.status.as_deref().unwrap_or("none"),
            r.body,
            r.complete,
            r.error.as_ref().map_or(String::new(), |e| format!(" error {e}"))
        );
    }
    let secs = match (app.connected_at, app.finished_at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "{bytes} body bytes in {secs:.3} s ({:.1} Mbit/s), handshake {:.1} ms, in time {in_time}, lost: {}",
        if secs > 0.0 {
            bytes as f64 * 8.0 / secs / 1e6
        } else {
            0.0
        },
        app.connected_at
            .map_or(0.0, |c| c.saturating_duration_since(started).as_secs_f64() * 1e3),
        app.lost.as_deref().unwrap_or("no"),
    );
    Ok(ok)
}
