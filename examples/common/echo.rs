//! The echo protocol: the server sends every bidirectional stream back and finishes it when the peer
//! finishes, and sends every DATAGRAM back. The client checks every byte it gets back.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quicsand::crypto::Suite;
use quicsand::udp::Handler;
use quicsand::{
    ConnRef, ConnectionError, ConnectionHandle, Dir, Endpoint, Event, ReadError, StreamEvent, StreamId,
    WriteError,
};

use super::pattern;
use super::server::ServerStats;
use super::tls::suite_name;

/// Bytes read from a stream at a time.
const CHUNK: usize = 64 * 1024;

/// The server side of one echo stream.
#[derive(Default)]
pub struct EchoStream {
    /// Read but not yet written back. Nothing more is read while this is waiting, so the peer's flow
    /// control window holds it back.
    pending: Option<Bytes>,
    peer_finished: bool,
}

impl EchoStream {
    /// Echoes what it can; `true` once the stream is over.
    pub fn pump(&mut self, c: &mut ConnRef<'_>, id: StreamId, stats: &mut ServerStats) -> bool {
        loop {
            if let Some(data) = self.pending.take() {
                match c.stream(id).write(&data) {
                    Ok(n) => {
                        stats.echo_bytes += n as u64;
                        if n < data.len() {
                            self.pending = Some(data.slice(n..));
                            return false;
                        }
                    }
                    Err(WriteError::Blocked) => {
                        self.pending = Some(data);
                        return false;
                    }
                    Err(_) => return true,
                }
            }
            if self.peer_finished {
                if c.stream(id).finish().is_ok() {
                    stats.echo_streams += 1;
                }
                return true;
            }
            match c.stream(id).read_chunk(CHUNK) {
                Ok(Some(data)) => self.pending = Some(data),
                Ok(None) => self.peer_finished = true,
                Err(ReadError::Blocked) => return false,
                Err(ReadError::Reset { code }) => {
                    let _ = c.stream(id).reset(code);
                    return true;
                }
                Err(_) => return true,
            }
        }
    }
}

/// What an [`EchoClient`] sends.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Bidirectional streams, written concurrently.
    pub streams: usize,
    /// Bytes per stream.
    pub bytes: u64,
    /// Datagrams, sent once every stream came back.
    pub datagrams: u32,
    /// Seeds the payloads.
    pub seed: u64,
}

/// A datagram is sent again when its echo has not come back after this long.
const DATAGRAM_RESEND: Duration = Duration::from_millis(250);
/// Sends of one datagram before it counts as lost.
const DATAGRAM_TRIES: u32 = 4;
/// Datagrams awaiting their echo at once.
const DATAGRAM_WINDOW: usize = 16;
/// Payload size of the datagrams (smaller when the path allows less).
const DATAGRAM_SIZE: usize = 1000;

#[derive(Debug, Default)]
struct ClientStream {
    id: Option<StreamId>,
    written: u64,
    finish_sent: bool,
    verified: u64,
    echo_finished: bool,
    error: Option<String>,
}

/// The client side: writes the workload's streams concurrently, checks every echoed byte, then sends
/// the datagrams and checks their echoes. It closes the connection (code 0) when everything came back,
/// and with code 1 at the first mismatch.
pub struct EchoClient {
    /// The connection.
    pub conn: ConnectionHandle,
    workload: Workload,
    streams: Vec<ClientStream>,
    by_id: HashMap<StreamId, usize>,
    chunk: Vec<u8>,
    /// Datagram index → (last sent, sends, length).
    outstanding: BTreeMap<u32, (Instant, u32, usize)>,
    next_datagram: u32,
    datagram_size: usize,
    /// Datagrams echoed intact.
    pub datagrams_echoed: u32,
    /// Datagrams sent again after no echo came.
    pub datagrams_resent: u32,
    /// Datagrams given up on.
    pub datagrams_lost: u32,
    /// The first failed check.
    pub error: Option<String>,
    closed: bool,
    /// When the connection was started (by the caller).
    pub started_at: Instant,
    /// When the handshake completed.
    pub connected_at: Option<Instant>,
    /// When the workload ended.
    pub finished_at: Option<Instant>,
    /// Why the connection ended.
    pub lost: Option<ConnectionError>,
    /// The negotiated cipher suite.
    pub suite: Option<Suite>,
    /// The connection's counters when the workload ended.
    pub stats: Option<quicsand::ConnectionStats>,
}

impl EchoClient {
    /// A client running `workload` on `conn`, started at `started_at`.
    pub fn new(conn: ConnectionHandle, workload: Workload, started_at: Instant) -> Self {
        Self {
            conn,
            workload,
            streams: (0..workload.streams).map(|_| ClientStream::default()).collect(),
            by_id: HashMap::new(),
            chunk: vec![0; CHUNK],
            outstanding: BTreeMap::new(),
            next_datagram: 0,
            datagram_size: DATAGRAM_SIZE,
            datagrams_echoed: 0,
            datagrams_resent: 0,
            datagrams_lost: 0,
            error: None,
            closed: false,
            started_at,
            connected_at: None,
            finished_at: None,
            lost: None,
            suite: None,
            stats: None,
        }
    }

    /// Streams whose every byte and end came back intact.
    pub fn streams_verified(&self) -> usize {
        self.streams
            .iter()
            .filter(|s| s.echo_finished && s.error.is_none() && s.verified == self.workload.bytes)
            .count()
    }

    /// Stream bytes that came back intact.
    pub fn bytes_verified(&self) -> u64 {
        self.streams.iter().map(|s| s.verified).sum()
    }

    /// Every check passed.
    pub fn all_ok(&self) -> bool {
        self.error.is_none()
            && self.finished_at.is_some()
            && self.streams_verified() == self.workload.streams
            && self.datagrams_echoed == self.workload.datagrams
    }

    /// Records the first failed check and closes the connection with code 1.
    fn fail(&mut self, endpoint: &mut Endpoint, now: Instant, error: String) {
        self.error.get_or_insert(error);
        if !self.closed {
            self.closed = true;
            let _ = endpoint.close(now, self.conn, 1, b"echo check failed");
        }
    }

    fn write(&mut self, endpoint: &mut Endpoint) {
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return;
        };
        let Workload { bytes, seed, .. } = self.workload;
        for (i, s) in self.streams.iter_mut().enumerate() {
            if s.id.is_none() {
                let Some(id) = c.open_bi() else { break };
                s.id = Some(id);
                self.by_id.insert(id, i);
            }
            let Some(id) = s.id else { continue };
            while s.written < bytes {
                let n = (bytes - s.written).min(CHUNK as u64) as usize;
                let chunk = &mut self.chunk[..n];
                pattern::fill(seed, i as u64, s.written, chunk);
                match c.stream(id).write(chunk) {
                    Ok(k) => s.written += k as u64,
                    Err(WriteError::Blocked) => break,
                    Err(e) => {
                        s.error.get_or_insert(format!("stream {i}: write failed: {e}"));
                        break;
                    }
                }
            }
            if s.written == bytes && !s.finish_sent {
                s.finish_sent = true;
                if let Err(e) = c.stream(id).finish() {
                    s.error.get_or_insert(format!("stream {i}: finish failed: {e}"));
                }
            }
        }
    }

    fn read(&mut self, endpoint: &mut Endpoint, id: StreamId) {
        let Some(&i) = self.by_id.get(&id) else { return };
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return;
        };
        let seed = self.workload.seed;
        let s = &mut self.streams[i];
        loop {
            match c.stream(id).read_chunk(usize::MAX) {
                Ok(Some(data)) => {
                    let good = pattern::matching_prefix(seed, i as u64, s.verified, &data);
                    s.verified += good as u64;
                    if good < data.len() {
                        s.error
                            .get_or_insert(format!("stream {i}: wrong byte at offset {}", s.verified));
                        break;
                    }
                    if s.verified > self.workload.bytes {
                        s.error.get_or_insert(format!("stream {i}: more bytes than sent"));
                        break;
                    }
                }
                Ok(None) => {
                    s.echo_finished = true;
                    if s.verified != self.workload.bytes {
                        s.error
                            .get_or_insert(format!("stream {i}: ended after {} bytes", s.verified));
                    }
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(e) => {
                    s.error.get_or_insert(format!("stream {i}: {e}"));
                    break;
                }
            }
        }
    }

    fn datagram(&self, index: u32, len: usize) -> Vec<u8> {
        let mut d = vec![0; len.max(4)];
        d[..4].copy_from_slice(&index.to_be_bytes());
        pattern::fill(self.workload.seed, u64::from(index) | 1 << 63, 0, &mut d[4..]);
        d
    }

    fn send_datagrams(&mut self, endpoint: &mut Endpoint, now: Instant) -> Result<(), String> {
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return Ok(());
        };
        if let Ok(max) = c.max_datagram_size() {
            self.datagram_size = self.datagram_size.min(max);
        }
        // Resend what has waited too long, or give up on it.
        let overdue: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, (at, _, _))| now.saturating_duration_since(*at) >= DATAGRAM_RESEND)
            .map(|(i, _)| *i)
            .collect();
        for index in overdue {
            let Some((at, tries, len)) = self.outstanding.get_mut(&index) else {
                continue;
            };
            let len = *len;
            if *tries >= DATAGRAM_TRIES {
                self.outstanding.remove(&index);
                self.datagrams_lost += 1;
                continue;
            }
            *at = now;
            *tries += 1;
            self.datagrams_resent += 1;
            let _ = c.send_datagram(Bytes::from(self.datagram(index, len)));
        }
        while self.outstanding.len() < DATAGRAM_WINDOW && self.next_datagram < self.workload.datagrams {
            let index = self.next_datagram;
            let len = self.datagram_size.max(4);
            c.send_datagram(Bytes::from(self.datagram(index, len)))
                .map_err(|e| format!("datagram {index}: {e}"))?;
            self.outstanding.insert(index, (now, 1, len));
            self.next_datagram += 1;
        }
        Ok(())
    }

    fn receive_datagrams(&mut self, endpoint: &mut Endpoint) {
        let Ok(mut c) = endpoint.conn(self.conn) else {
            return;
        };
        while let Some(d) = c.recv_datagram() {
            let Some(index) = d.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
                self.error
                    .get_or_insert("a datagram shorter than its index".into());
                continue;
            };
            let Some((_, _, len)) = self.outstanding.remove(&index) else {
                // A duplicate echo of a datagram sent twice, or one given up on.
                continue;
            };
            if d.len() != len {
                self.error
                    .get_or_insert(format!("datagram {index}: {} bytes came back of {len}", d.len()));
                continue;
            }
            let id = u64::from(index) | 1 << 63;
            if pattern::matching_prefix(self.workload.seed, id, 0, &d[4..]) != d.len() - 4 {
                self.error.get_or_insert(format!("datagram {index}: wrong bytes"));
                continue;
            }
            self.datagrams_echoed += 1;
        }
    }

    fn streams_done(&self) -> bool {
        self.streams.iter().all(|s| s.echo_finished || s.error.is_some())
    }

    /// Moves the workload on and closes the connection when it is over.
    fn progress(&mut self, endpoint: &mut Endpoint, now: Instant) {
        if self.connected_at.is_none() || self.finished_at.is_some() || self.lost.is_some() {
            return;
        }
        if let Some(e) = self
            .error
            .clone()
            .or_else(|| self.streams.iter().find_map(|s| s.error.clone()))
        {
            return self.fail(endpoint, now, e);
        }
        if !self.streams_done() {
            return;
        }
        if let Err(e) = self.send_datagrams(endpoint, now) {
            return self.fail(endpoint, now, e);
        }
        if self.next_datagram == self.workload.datagrams && self.outstanding.is_empty() {
            self.finished_at = Some(now);
            if self.datagrams_lost > 0 {
                let lost = self.datagrams_lost;
                return self.fail(endpoint, now, format!("{lost} datagrams never came back"));
            }
            self.closed = true;
            self.stats = endpoint.conn(self.conn).ok().map(|c| c.stats());
            let _ = endpoint.close(now, self.conn, 0, b"done");
        }
    }

    /// The result as one JSON line.
    pub fn json(&self) -> String {
        let ms =
            |a: Option<Instant>, b: Instant| a.map(|a| a.saturating_duration_since(b).as_secs_f64() * 1e3);
        let handshake_ms = ms(self.connected_at, self.started_at).unwrap_or(-1.0);
        let seconds = match (self.connected_at, self.finished_at) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => -1.0,
        };
        let cipher = self.suite.map(suite_name).unwrap_or("none");
        let error = match &self.error {
            Some(e) => json_string(e),
            None => "null".into(),
        };
        format!(
            "{{\"ok\":{},\"handshake_ms\":{handshake_ms:.3},\"streams\":{},\"streams_verified\":{},\
             \"bytes_per_stream\":{},\"bytes_verified\":{},\"datagrams\":{},\"datagrams_echoed\":{},\
             \"datagrams_resent\":{},\"seconds\":{seconds:.6},\"cipher\":\"{cipher}\",\"error\":{error}}}",
            self.all_ok(),
            self.workload.streams,
            self.streams_verified(),
            self.workload.bytes,
            self.bytes_verified(),
            self.workload.datagrams,
            self.datagrams_echoed,
            self.datagrams_resent,
        )
    }
}

impl Handler for EchoClient {
    fn on_event(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, event: Event, now: Instant) {
        if h != self.conn {
            return;
        }
        match event {
            Event::Connected => {
                self.connected_at = Some(now);
                self.suite = endpoint.conn(h).ok().and_then(|c| c.suite());
                self.write(endpoint);
            }
            Event::Stream(StreamEvent::Writable { .. } | StreamEvent::Available { dir: Dir::Bi }) => {
                self.write(endpoint)
            }
            Event::Stream(StreamEvent::Readable { id } | StreamEvent::Reset { id, .. }) => {
                self.read(endpoint, id)
            }
            Event::Stream(StreamEvent::Stopped { code, .. }) => self.fail(
                endpoint,
                now,
                format!("the server stopped a stream with code {code}"),
            ),
            Event::DatagramReceived => self.receive_datagrams(endpoint),
            Event::ConnectionLost { reason } => {
                if self.finished_at.is_none() && self.error.is_none() {
                    self.error = Some(format!("connection lost: {reason}"));
                }
                self.lost = Some(reason);
            }
            _ => {}
        }
        self.progress(endpoint, now);
    }

    fn on_turn(&mut self, endpoint: &mut Endpoint, now: Instant) -> ControlFlow<()> {
        self.progress(endpoint, now);
        if self.lost.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.closed || self.lost.is_some() {
            return None;
        }
        self.outstanding
            .values()
            .map(|(at, _, _)| *at + DATAGRAM_RESEND)
            .min()
    }
}

/// `s` as a JSON string literal: quotes, backslashes and control characters escaped (RFC 8259 §7).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error can hold the peer's close reason, any bytes it chose: the line must stay one line of
    /// valid JSON.
    #[test]
    fn an_error_with_control_characters_stays_one_json_string() {
        assert_eq!(json_string("plain"), "\"plain\"");
        assert_eq!(
            json_string("a \"quote\", a \\ and\na newline, \r\t\u{1}"),
            "\"a \\\"quote\\\", a \\\\ and\\na newline, \\r\\t\\u0001\""
        );
    }
}
