//! HTTP/0.9 over QUIC as the QUIC interop runner's `hq-interop` ALPN uses it: the client opens a
//! bidirectional stream per request, sends `GET /path\r\n` and finishes; the server answers with the
//! file's bytes and finishes, or resets the stream when it has no such file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use quicsand::udp::Handler;
use quicsand::{
    ConnRef, ConnectionError, ConnectionHandle, Dir, Endpoint, Event, ReadError, StreamEvent, StreamId,
    WriteError,
};

use super::server::ServerStats;

/// The longest request line the server reads.
const MAX_REQUEST: usize = 4096;
/// Bytes read from a file at a time.
const FILE_CHUNK: usize = 64 * 1024;
/// The stream reset code for "no such file" (hq-interop names none; this is HTTP's).
pub const NOT_FOUND: u64 = 404;
/// The stream reset code for a request the server cannot parse.
pub const BAD_REQUEST: u64 = 400;

/// The server side of one hq-interop request stream.
#[derive(Default)]
pub struct HqStream {
    request: Vec<u8>,
    /// The file being sent, once the request was parsed.
    file: Option<File>,
    chunk: Vec<u8>,
    pos: usize,
    eof: bool,
    /// The request's stream end was read (or the request was abandoned).
    request_done: bool,
    /// The response is finished or reset.
    response_done: bool,
}

impl HqStream {
    /// Reads the request, then writes the file; `true` once there is nothing left to do.
    pub fn pump(
        &mut self,
        c: &mut ConnRef<'_>,
        id: StreamId,
        root: Option<&Path>,
        stats: &mut ServerStats,
    ) -> bool {
        self.read(c, id, root, stats);
        if self.file.is_some() && !self.response_done {
            self.write(c, id, stats);
        }
        self.request_done && self.response_done
    }

    fn read(&mut self, c: &mut ConnRef<'_>, id: StreamId, root: Option<&Path>, stats: &mut ServerStats) {
        while !self.request_done {
            match c.stream(id).read_chunk(MAX_REQUEST) {
                Ok(Some(data)) => {
                    if self.file.is_none() && !self.response_done {
                        self.request.extend_from_slice(&data);
                    }
                }
                Ok(None) => self.request_done = true,
                Err(ReadError::Blocked) => break,
                Err(_) => {
                    self.request_done = true;
                    self.response_done |= self.file.is_none();
                }
            }
            let answered = self.file.is_some() || self.response_done;
            let complete = self.request.windows(2).any(|w| w == b"\r\n") || self.request.contains(&b'\n');
            if !answered && (complete || self.request_done || self.request.len() > MAX_REQUEST) {
                self.answer(c, id, root, stats);
            }
        }
    }

    /// Parses the request line and opens the file, or resets the stream.
    fn answer(&mut self, c: &mut ConnRef<'_>, id: StreamId, root: Option<&Path>, stats: &mut ServerStats) {
        let request = std::mem::take(&mut self.request);
        let (code, file) = match parse_request(&request) {
            None => (BAD_REQUEST, None),
            Some(path) => match root.and_then(|r| resolve(r, &path).and_then(|p| open_file(r, &p))) {
                Some(file) => {
                    tracing::debug!(?id, %path, "serving");
                    (0, Some(file))
                }
                None => {
                    tracing::info!(?id, %path, "no such file");
                    (NOT_FOUND, None)
                }
            },
        };
        match file {
            Some(file) => self.file = Some(file),
            None => {
                stats.requests_refused += 1;
                let _ = c.stream(id).reset(code);
                self.response_done = true;
            }
        }
    }

    fn write(&mut self, c: &mut ConnRef<'_>, id: StreamId, stats: &mut ServerStats) {
        loop {
            if self.pos < self.chunk.len() {
                match c.stream(id).write(&self.chunk[self.pos..]) {
                    Ok(n) => {
                        self.pos += n;
                        stats.file_bytes += n as u64;
                        continue;
                    }
                    Err(WriteError::Blocked) => return,
                    Err(e) => {
                        tracing::debug!(?id, error = %e, "response abandoned");
                        self.response_done = true;
                        return;
                    }
                }
            }
            if self.eof {
                if c.stream(id).finish().is_ok() {
                    stats.files_served += 1;
                }
                self.response_done = true;
                return;
            }
            self.chunk.resize(FILE_CHUNK, 0);
            self.pos = 0;
            let Some(file) = self.file.as_mut() else { return };
            match file.read(&mut self.chunk) {
                Ok(0) => {
                    self.chunk.clear();
                    self.eof = true;
                }
                Ok(n) => self.chunk.truncate(n),
                Err(e) => {
                    tracing::warn!(?id, error = %e, "file read failed");
                    self.chunk.clear();
                    let _ = c.stream(id).reset(NOT_FOUND);
                    self.response_done = true;
                    return;
                }
            }
        }
    }
}

/// The path of `GET /path` (the line may end in `\r\n`, `\n` or the stream's end).
pub fn parse_request(request: &[u8]) -> Option<String> {
    let line = request.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let path = line.strip_prefix("GET ")?.split_whitespace().next()?;
    path.starts_with('/').then(|| path.to_owned())
}

/// `path` under `root`, refusing anything that could leave it (`..`, absolute parts, drive prefixes).
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `path` opened for reading when it is a regular file under `root` once symbolic links are followed (a
/// link that leads out of the root is refused like `..`). It is looked at before it is opened: opening
/// a named pipe blocks until a writer comes, which would stop the whole server.
fn open_file(root: &Path, path: &Path) -> Option<File> {
    let real = path.canonicalize().ok()?;
    if !real.starts_with(root.canonicalize().ok()?) || !std::fs::metadata(&real).ok()?.is_file() {
        return None;
    }
    let file = File::open(&real).ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// Where a download's bytes go.
pub enum Sink {
    /// Counted and dropped.
    Discard,
    /// Kept in memory.
    Memory(Vec<u8>),
    /// Written to a file, at this path.
    File(BufWriter<File>, PathBuf),
}

impl Sink {
    /// A new (or emptied) file at `path`.
    pub fn file(path: PathBuf) -> std::io::Result<Sink> {
        Ok(Sink::File(BufWriter::new(File::create(&path)?), path))
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Discard => Ok(()),
            Sink::Memory(v) => {
                v.extend_from_slice(data);
                Ok(())
            }
            Sink::File(f, _) => f.write_all(data),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f, _) => f.flush(),
            _ => Ok(()),
        }
    }
}

/// One request of an [`HqClient`].
pub struct Download {
    /// The path asked for.
    pub path: String,
    /// Bytes received.
    pub received: u64,
    /// The whole response and its end arrived.
    pub complete: bool,
    /// The server reset the stream with this code.
    pub reset: Option<u64>,
    /// Writing to the sink failed.
    pub sink_error: Option<String>,
    /// The received bytes.
    pub sink: Sink,
    stream: Option<StreamId>,
}

impl Download {
    /// A download of `path` into `sink`.
    pub fn new(path: &str, sink: Sink) -> Self {
        Self {
            path: path.to_owned(),
            received: 0,
            complete: false,
            reset: None,
            sink_error: None,
            sink,
            stream: None,
        }
    }

    fn done(&self) -> bool {
        self.complete || self.reset.is_some() || self.sink_error.is_some()
    }
}

/// An hq-interop client: every download over one connection, as many at once as the server's stream
/// limit allows. It closes the connection (code 0) once every download ended.
pub struct HqClient {
    /// The connection.
    pub conn: ConnectionHandle,
    /// The requests, in the order given.
    pub downloads: Vec<Download>,
    streams: HashMap<StreamId, usize>,
    next: usize,
    /// When the connection was started (by the caller).
    pub started_at: Instant,
    /// When the handshake completed.
    pub connected_at: Option<Instant>,
    /// When the last download ended.
    pub finished_at: Option<Instant>,
    /// Why the connection ended, when it did.
    pub lost: Option<ConnectionError>,
    /// The negotiated cipher suite.
    pub suite: Option<quicsand::crypto::Suite>,
    /// The connection's counters when the last download ended.
    pub stats: Option<quicsand::ConnectionStats>,
}

impl HqClient {
    /// A client for `downloads` on connection `conn`, started at `started_at`.
    pub fn new(conn: ConnectionHandle, downloads: Vec<Download>, started_at: Instant) -> Self {
        Self {
            conn,
            downloads,
            streams: HashMap::new(),
            next: 0,
            started_at,
            connected_at: None,
            finished_at: None,
            lost: None,
            suite: None,
            stats: None,
        }
    }

    /// Bytes received over all downloads.
    pub fn bytes(&self) -> u64 {
        self.downloads.iter().map(|d| d.received).sum()
    }

    /// Downloads that ended, complete or not.
    pub fn downloads_ended(&self) -> usize {
        self.downloads.iter().filter(|d| d.done()).count()
    }

    /// Every download arrived complete and was stored.
    pub fn all_ok(&self) -> bool {
        self.finished_at.is_some()
            && self
                .downloads
                .iter()
                .all(|d| d.complete && d.sink_error.is_none())
    }

    /// Removes the file of every download that did not arrive complete and stored (not found, reset,
    /// cut short by the connection's end or the timeout), as `curl --remove-on-error` does: an empty or
    /// partial file left behind would read as a download that worked. Returns the files removed.
    pub fn remove_failed_files(&mut self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for d in &mut self.downloads {
            if d.complete && d.sink_error.is_none() {
                continue;
            }
            if let Sink::File(_, path) = std::mem::replace(&mut d.sink, Sink::Discard) {
                if std::fs::remove_file(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }

    /// Opens streams for the requests not yet sent, as far as the stream limit allows.
    fn request(&mut self, endpoint: &mut Endpoint) {
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return;
        };
        while self.next < self.downloads.len() {
            let Some(id) = c.open_bi() else { break };
            let download = &mut self.downloads[self.next];
            let request = format!("GET {}\r\n", download.path);
            let mut stream = c.stream(id);
            // A fresh stream's send buffer takes a request line whole.
            let written = stream.write(request.as_bytes());
            let finished = stream.finish();
            if written != Ok(request.len()) || finished.is_err() {
                download.sink_error = Some(format!("request not sent: {written:?} {finished:?}"));
            }
            download.stream = Some(id);
            self.streams.insert(id, self.next);
            self.next += 1;
        }
    }

    fn read(&mut self, endpoint: &mut Endpoint, id: StreamId) {
        let Some(&i) = self.streams.get(&id) else { return };
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return;
        };
        let download = &mut self.downloads[i];
        loop {
            match c.stream(id).read_chunk(usize::MAX) {
                Ok(Some(data)) => {
                    download.received += data.len() as u64;
                    if let Err(e) = download.sink.write(&data) {
                        download.sink_error.get_or_insert(e.to_string());
                    }
                }
                Ok(None) => {
                    download.complete = true;
                    if let Err(e) = download.sink.finish() {
                        download.sink_error.get_or_insert(e.to_string());
                    }
                    break;
                }
                Err(ReadError::Reset { code }) => {
                    download.reset = Some(code);
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(e) => {
                    download.sink_error.get_or_insert(e.to_string());
                    break;
                }
            }
        }
        if download.done() {
            self.streams.remove(&id);
        }
    }

    fn check_done(&mut self, endpoint: &mut Endpoint, now: Instant) {
        if self.finished_at.is_none()
            && self.next == self.downloads.len()
            && self.downloads.iter().all(Download::done)
        {
            self.finished_at = Some(now);
            self.stats = endpoint.conn(self.conn).ok().map(|c| c.stats());
            let _ = endpoint.close(now, self.conn, 0, b"done");
        }
    }
}

impl Handler for HqClient {
    fn on_event(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, event: Event, now: Instant) {
        if h != self.conn {
            return;
        }
        match event {
            Event::Connected => {
                self.connected_at = Some(now);
                self.suite = endpoint.conn(h).ok().and_then(|c| c.suite());
                self.request(endpoint);
            }
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => self.request(endpoint),
            Event::Stream(StreamEvent::Readable { id } | StreamEvent::Reset { id, .. }) => {
                self.read(endpoint, id)
            }
            Event::Stream(StreamEvent::Opened { dir }) => {
                // The server opens nothing in hq-interop; refuse whatever it does open.
                if let Ok(mut c) = endpoint.conn(h) {
                    while let Some(id) = c.accept(dir) {
                        let _ = c.stream(id).stop(0);
                        if dir == Dir::Bi {
                            let _ = c.stream(id).reset(0);
                        }
                    }
                }
            }
            Event::ConnectionLost { reason } => self.lost = Some(reason),
            _ => {}
        }
        self.check_done(endpoint, now);
    }

    fn on_turn(&mut self, _endpoint: &mut Endpoint, _now: Instant) -> std::ops::ControlFlow<()> {
        if self.lost.is_some() {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }
}

/// A file's name for a download's path: its last component, or `index.html`.
pub fn file_name(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        "index.html".to_owned()
    } else {
        name.to_owned()
    }
}

/// The files under `dir` that downloads of `paths` are written to (see [`file_name`]), or an error
/// naming the first file two of them would share: both would write it at once, through two handles.
pub fn output_files(dir: &Path, paths: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let name = file_name(path);
        if !seen.insert(name.clone()) {
            return Err(format!(
                "{path}: its file {name} would be written by another download too"
            ));
        }
        files.push(dir.join(name));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_names_an_absolute_path() {
        assert_eq!(parse_request(b"GET /a.bin\r\n").as_deref(), Some("/a.bin"));
        assert_eq!(parse_request(b"GET /a.bin\n").as_deref(), Some("/a.bin"));
        assert_eq!(parse_request(b"GET /a.bin").as_deref(), Some("/a.bin"));
        assert_eq!(
            parse_request(b"GET /a.bin HTTP/1.0\r\n").as_deref(),
            Some("/a.bin")
        );
        for bad in [
            &b"GET a.bin\r\n"[..],
            b"POST /a\r\n",
            b"GET \r\n",
            b"",
            b"GET /\xff\r\n",
        ] {
            assert_eq!(parse_request(bad), None, "{bad:?}");
        }
    }

    /// Nothing a request names resolves outside the root: `..` anywhere, however many leading slashes.
    /// (`%2e%2e` is not decoded: it names a file called that. Links are checked when the file is opened.)
    #[test]
    fn no_path_leaves_the_root() {
        let root = Path::new("/srv/www");
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/a/..",
            "//../etc/passwd",
            "/./../x",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
        assert_eq!(resolve(root, "//etc/passwd"), Some(root.join("etc/passwd")));
        assert_eq!(resolve(root, "/a/./b"), Some(root.join("a/b")));
        assert_eq!(resolve(root, "/%2e%2e/x"), Some(root.join("%2e%2e/x")));
        assert_eq!(resolve(root, "/"), Some(root.to_path_buf()));
    }
}
