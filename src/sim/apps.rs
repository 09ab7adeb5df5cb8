//! Ready-made applications: a bulk sender and a sink.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{App, NodeCtx};
use crate::{ClientConfig, ConnectionError, ConnectionHandle, Event, StreamEvent, StreamId, WriteError};

/// The period of the byte pattern a [`BulkSender`] writes: byte `i` of a stream is `i % 251`, so a sink
/// can check them.
const PERIOD: usize = 251;

/// The size of the chunks a [`BulkSender`] offers to a stream at once.
const CHUNK: usize = 16 * 1024;

/// The pattern from offset 0, one period longer than a chunk, so that the bytes from any offset on are
/// a slice of it: writing and checking are copies and comparisons, not a computation per byte.
static PATTERN: [u8; CHUNK + PERIOD] = {
    let mut table = [0u8; CHUNK + PERIOD];
    let mut i = 0;
    while i < table.len() {
        table[i] = (i % PERIOD) as u8;
        i += 1;
    }
    table
};

/// The pattern bytes from stream offset `offset` on, at most `max` (at most [`CHUNK`]) of them.
fn pattern_at(offset: u64, max: usize) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    let rest = PATTERN.get(start..).unwrap_or_default();
    rest.get(..max).unwrap_or(rest)
}

/// Whether `data`, found at stream offset `offset`, is the pattern.
fn is_pattern(data: &[u8], offset: u64) -> bool {
    let mut offset = offset;
    data.chunks(CHUNK).all(|piece| {
        let ok = piece == pattern_at(offset, piece.len());
        offset += piece.len() as u64;
        ok
    })
}

/// A client that connects to a server and sends `total` bytes split over `streams` unidirectional
/// streams, writing as flow control allows, then closes the connection (code 0) once the server
/// acknowledged every stream.
#[derive(Debug)]
pub struct BulkSender {
    config: Option<ClientConfig>,
    server: SocketAddr,
    server_name: String,
    streams: usize,
    total: u64,
    conn: Option<ConnectionHandle>,
    /// Streams opened so far, with bytes written.
    open: Vec<(StreamId, u64, bool)>,
    /// Whether to close the connection once everything was acknowledged.
    pub close_when_done: bool,
    /// When the handshake completed, since the epoch.
    pub connected_at: Option<Duration>,
    /// When the server had acknowledged every stream, since the epoch.
    pub finished_at: Option<Duration>,
    /// Streams the server acknowledged completely.
    pub streams_acked: usize,
    /// Why the connection ended, if it did.
    pub lost: Option<ConnectionError>,
    /// Why connecting failed, if it did.
    pub connect_error: Option<String>,
}

impl BulkSender {
    /// A sender of `total` bytes over `streams` streams (at least one) to `server`, authenticating it as
    /// `server_name`.
    pub fn new(
        config: ClientConfig,
        server: SocketAddr,
        server_name: &str,
        total: u64,
        streams: usize,
    ) -> Self {
        Self {
            config: Some(config),
            server,
            server_name: server_name.to_owned(),
            streams: streams.max(1),
            total,
            conn: None,
            open: Vec::new(),
            close_when_done: true,
            connected_at: None,
            finished_at: None,
            streams_acked: 0,
            lost: None,
            connect_error: None,
        }
    }

    /// The connection, once `on_start` made it.
    pub fn connection(&self) -> Option<ConnectionHandle> {
        self.conn
    }

    /// The bytes stream number `i` (in opening order) carries.
    fn share(&self, i: usize) -> u64 {
        let n = self.streams as u64;
        self.total / n + u64::from((i as u64) < self.total % n)
    }

    /// Bytes written to streams so far.
    pub fn bytes_written(&self) -> u64 {
        self.open.iter().map(|(_, w, _)| *w).sum()
    }

    /// Opens what streams it can and writes what the streams take.
    fn pump(&mut self, ctx: &mut NodeCtx<'_>) {
        let Some(h) = self.conn else { return };
        let Ok(mut conn) = ctx.endpoint().conn(h) else {
            return;
        };
        while self.open.len() < self.streams {
            match conn.open_uni() {
                Some(id) => self.open.push((id, 0, false)),
                None => break,
            }
        }
        for i in 0..self.open.len() {
            let share = self.share(i);
            let Some((id, written, fin)) = self.open.get_mut(i) else {
                continue;
            };
            while *written < share {
                let n = (share - *written).min(CHUNK as u64) as usize;
                // Write until refused: a full chunk per write, and the writes the share allows
                // all made now (a short or refused write asks the stream for a `Writable` event).
                match conn.stream(*id).write(pattern_at(*written, n)) {
                    Ok(k) => *written += k as u64,
                    Err(_) => break,
                }
            }
            if *written == share && !*fin {
                match conn.stream(*id).finish() {
                    Ok(()) | Err(WriteError::ClosedStream) => *fin = true,
                    Err(_) => {}
                }
            }
        }
    }
}

impl App for BulkSender {
    fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
        let Some(config) = self.config.take() else { return };
        let now = ctx.now();
        match ctx
            .endpoint()
            .connect(now, config, self.server, &self.server_name)
        {
            Ok(h) => self.conn = Some(h),
            Err(e) => self.connect_error = Some(e.to_string()),
        }
    }

    fn on_event(&mut self, ctx: &mut NodeCtx<'_>, handle: ConnectionHandle, event: &Event) {
        if Some(handle) != self.conn {
            return;
        }
        match event {
            Event::Connected => {
                self.connected_at = Some(ctx.elapsed());
                self.pump(ctx);
            }
            Event::Stream(StreamEvent::Writable { .. } | StreamEvent::Available { .. }) => self.pump(ctx),
            Event::Stream(StreamEvent::Finished { .. }) => {
                self.streams_acked += 1;
                if self.streams_acked == self.streams && self.finished_at.is_none() {
                    self.finished_at = Some(ctx.elapsed());
                    if self.close_when_done {
                        let now = ctx.now();
                        let _ = ctx.endpoint().close(now, handle, 0, b"done");
                    }
                }
            }
            Event::ConnectionLost { reason } => self.lost = Some(reason.clone()),
            _ => {}
        }
    }
}

/// What a [`Sink`] received on one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRecord {
    /// Bytes read in order.
    pub bytes: u64,
    /// Whether the end of the stream was read.
    pub finished: bool,
    /// When the end was read, since the epoch.
    pub finished_at: Option<Duration>,
    /// Whether every byte matched the [`BulkSender`] pattern.
    pub pattern_ok: bool,
}

/// A server app that accepts every stream of every connection and reads everything, recording bytes
/// per stream and completion times.
#[derive(Debug, Default)]
pub struct Sink {
    /// Per (connection, stream): what was received.
    pub streams: BTreeMap<(ConnectionHandle, StreamId), StreamRecord>,
    /// Connections that completed their handshake.
    pub connected: usize,
    /// Why connections ended.
    pub lost: Vec<(ConnectionHandle, ConnectionError)>,
    /// When the first byte arrived.
    pub first_byte_at: Option<Instant>,
}

impl Sink {
    /// Bytes received on all streams.
    pub fn total_bytes(&self) -> u64 {
        self.streams.values().map(|s| s.bytes).sum()
    }

    /// Streams whose end was read.
    pub fn finished_streams(&self) -> usize {
        self.streams.values().filter(|s| s.finished).count()
    }

    /// When the last stream end was read, if every known stream finished.
    pub fn completed_at(&self) -> Option<Duration> {
        if self.streams.is_empty() || self.streams.values().any(|s| !s.finished) {
            return None;
        }
        self.streams.values().filter_map(|s| s.finished_at).max()
    }

    fn read(&mut self, ctx: &mut NodeCtx<'_>, h: ConnectionHandle, id: StreamId) {
        let elapsed = ctx.elapsed();
        let now = ctx.now();
        let Ok(mut conn) = ctx.endpoint().conn(h) else {
            return;
        };
        let rec = self.streams.entry((h, id)).or_insert_with(|| StreamRecord {
            pattern_ok: true,
            ..StreamRecord::default()
        });
        loop {
            match conn.stream(id).read_chunk(64 * 1024) {
                Ok(Some(chunk)) => {
                    self.first_byte_at.get_or_insert(now);
                    if !is_pattern(&chunk, rec.bytes) {
                        rec.pattern_ok = false;
                    }
                    rec.bytes += chunk.len() as u64;
                }
                Ok(None) => {
                    if !rec.finished {
                        rec.finished = true;
                        rec.finished_at = Some(elapsed);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

impl App for Sink {
    fn on_event(&mut self, ctx: &mut NodeCtx<'_>, handle: ConnectionHandle, event: &Event) {
        match event {
            Event::Connected => self.connected += 1,
            Event::Stream(StreamEvent::Opened { dir }) => {
                let mut accepted = Vec::new();
                if let Ok(mut conn) = ctx.endpoint().conn(handle) {
                    while let Some(id) = conn.accept(*dir) {
                        accepted.push(id);
                    }
                }
                for id in accepted {
                    self.read(ctx, handle, id);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.read(ctx, handle, *id),
            Event::ConnectionLost { reason } => self.lost.push((handle, reason.clone())),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_table_matches_the_rule_and_catches_a_wrong_byte() {
        let expected: Vec<u8> = (0..3 * CHUNK as u64 + 17)
            .map(|i| (i % PERIOD as u64) as u8)
            .collect();
        for offset in [0, 1, 250, 251, 252, 1000, CHUNK as u64 - 3] {
            let n = CHUNK.min(expected.len() - offset as usize);
            assert_eq!(pattern_at(offset, n), &expected[offset as usize..][..n]);
            let data = &expected[offset as usize..];
            assert!(is_pattern(data, offset), "offset {offset}");
            let mut wrong = data.to_vec();
            let last = wrong.len() - 1;
            wrong[last] ^= 1;
            assert!(!is_pattern(&wrong, offset), "offset {offset}");
            assert!(!is_pattern(data, offset + 1), "offset {offset} + 1");
        }
    }
}
