//! A quicsand endpoint as a harness node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use quicsand::{
    ClientConfig, ConnectionError, ConnectionHandle, Datagram, Dir, Endpoint, EndpointConfig, Event,
    ReadError, ServerConfig, StreamId, WriteError,
};

use super::{LostReason, Node, NodeEvent, StreamError};

/// A quicsand endpoint and the handle of its (first) connection.
pub struct QuicsandNode {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
    pub handle: Option<ConnectionHandle>,
    pub events: Vec<NodeEvent>,
    /// Every event, with its handle, as the endpoint reported it.
    pub raw_events: Vec<(ConnectionHandle, Event)>,
    /// Streams being written: (id, data, bytes written so far).
    pub writing: Vec<(StreamId, Bytes, usize)>,
    /// Streams received from the peer: ID to (bytes in order, finished).
    pub received: BTreeMap<u64, (Vec<u8>, bool)>,
    /// Streams accepted and still being read.
    reading: Vec<StreamId>,
    /// Accept and read every peer stream in `pump_streams` (the default); off, the test does it through
    /// the `stream_*` calls.
    pub auto_read: bool,
    /// Every transmit `poll_transmit` returned: (size, segment_size).
    pub transmits: Vec<(usize, Option<usize>)>,
    buf: Vec<u8>,
}

impl QuicsandNode {
    /// A server endpoint.
    pub fn server(addr: SocketAddr, config: ServerConfig, seed: u64) -> Self {
        Self::new(addr, Endpoint::new(EndpointConfig::with_seed(seed), Some(config)))
    }

    /// A client endpoint (no connection yet; see [`QuicsandNode::connect`]).
    pub fn client(addr: SocketAddr, seed: u64) -> Self {
        Self::new(addr, Endpoint::new(EndpointConfig::with_seed(seed), None))
    }

    /// A node around a caller-built endpoint (e.g. with a non-default [`EndpointConfig`]).
    pub fn with_endpoint(addr: SocketAddr, endpoint: Endpoint) -> Self {
        Self::new(addr, endpoint)
    }

    fn new(addr: SocketAddr, endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            addr,
            handle: None,
            events: Vec::new(),
            raw_events: Vec::new(),
            writing: Vec::new(),
            received: BTreeMap::new(),
            reading: Vec::new(),
            auto_read: true,
            transmits: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Starts a connection to `server`.
    pub fn connect(&mut self, now: Instant, config: ClientConfig, server: SocketAddr, name: &str) {
        self.handle = Some(self.endpoint.connect(now, config, server, name).expect("connect"));
    }

    /// Starts a connection with a rustls configuration and default transport settings.
    pub fn connect_tls(
        &mut self,
        now: Instant,
        tls: Arc<rustls::ClientConfig>,
        server: SocketAddr,
        name: &str,
    ) {
        self.connect(now, ClientConfig::new(tls), server, name);
    }

    /// Writes pending stream data as far as flow control allows, accepts new streams and reads them.
    fn pump_streams(&mut self) {
        let Some(h) = self.handle else { return };
        let Ok(mut conn) = self.endpoint.conn(h) else {
            return;
        };
        self.writing.retain_mut(|(id, data, written)| {
            let mut stream = conn.stream(*id);
            while *written < data.len() {
                match stream.write(&data[*written..]) {
                    Ok(n) if n > 0 => *written += n,
                    _ => return true,
                }
            }
            stream.finish().is_err()
        });
        if !self.auto_read {
            return;
        }
        for dir in [Dir::Bi, Dir::Uni] {
            while let Some(id) = conn.accept(dir) {
                self.reading.push(id);
            }
        }
        let received = &mut self.received;
        self.reading.retain(|id| {
            let entry = received.entry(id.0).or_default();
            let mut stream = conn.stream(*id);
            loop {
                match stream.read_chunk(usize::MAX) {
                    Ok(Some(chunk)) => entry.0.extend_from_slice(&chunk),
                    Ok(None) => {
                        entry.1 = true;
                        return false;
                    }
                    Err(quicsand::ReadError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
        });
    }

    /// A view of the connection, for engine-specific calls.
    pub fn conn(&mut self) -> quicsand::ConnRef<'_> {
        let h = self.handle.expect("a connection");
        self.endpoint.conn(h).expect("a live connection")
    }

    /// Stream events reported so far, in order.
    pub fn stream_events(&self) -> Vec<quicsand::StreamEvent> {
        self.raw_events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Stream(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn collect_events(&mut self) {
        while let Some((h, event)) = self.endpoint.poll_event() {
            if self.handle.is_none() {
                self.handle = Some(h);
            }
            if Some(h) == self.handle {
                match &event {
                    Event::Connected => self.events.push(NodeEvent::Connected),
                    Event::ConnectionLost { reason } => {
                        self.events.push(NodeEvent::Lost(lost_reason(reason)))
                    }
                    _ => {}
                }
            }
            self.raw_events.push((h, event));
        }
    }
}

fn write_error(e: WriteError) -> StreamError {
    match e {
        WriteError::Blocked => StreamError::Blocked,
        WriteError::Stopped { code } => StreamError::Stopped(code),
        other => StreamError::Other(other.to_string()),
    }
}

fn read_error(e: ReadError) -> StreamError {
    match e {
        ReadError::Blocked => StreamError::Blocked,
        ReadError::Reset { code } => StreamError::Reset(code),
        other => StreamError::Other(other.to_string()),
    }
}

/// Maps quicsand's reason to the harness's engine-neutral one.
pub fn lost_reason(reason: &ConnectionError) -> LostReason {
    match reason {
        ConnectionError::ApplicationClosed { code, reason } => LostReason::ApplicationClosed {
            code: *code,
            reason: reason.to_vec(),
        },
        ConnectionError::ConnectionClosed { error } | ConnectionError::TransportError(error) => {
            LostReason::Transport { code: error.code.0 }
        }
        ConnectionError::Refused => LostReason::Transport { code: 0x02 },
        ConnectionError::LocallyClosed => LostReason::LocallyClosed,
        ConnectionError::TimedOut => LostReason::TimedOut,
        other => LostReason::Other(other.to_string()),
    }
}

impl Node for QuicsandNode {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn recv(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.endpoint.handle_datagram(
            now,
            Datagram {
                remote: from,
                local: Some(self.addr.ip()),
                ecn: None,
                payload: BytesMut::from(data),
            },
        );
        self.collect_events();
    }

    fn send(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        self.pump_streams();
        let mut out = Vec::new();
        while let Some(t) = self.endpoint.poll_transmit(now, &mut self.buf) {
            self.transmits.push((t.size, t.segment_size));
            for d in t.datagrams(&self.buf) {
                out.push((t.destination, d.to_vec()));
            }
        }
        self.collect_events();
        out
    }

    fn timeout(&mut self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    fn on_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.collect_events();
    }

    fn events(&mut self) -> Vec<NodeEvent> {
        self.collect_events();
        std::mem::take(&mut self.events)
    }

    fn close(&mut self, now: Instant, code: u64, reason: &[u8]) {
        if let Some(h) = self.handle {
            if let Ok(mut c) = self.endpoint.conn(h) {
                c.close(now, code, reason);
            }
        }
    }

    fn force_key_update(&mut self) {
        if let Some(h) = self.handle {
            if let Ok(mut c) = self.endpoint.conn(h) {
                c.force_key_update();
            }
        }
    }

    fn ping(&mut self) {
        if let Some(h) = self.handle {
            if let Ok(mut c) = self.endpoint.conn(h) {
                c.ping();
            }
        }
    }

    fn send_datagram(&mut self, data: bytes::Bytes) -> Result<(), String> {
        let h = self.handle.ok_or("no connection")?;
        let mut c = self.endpoint.conn(h).map_err(|e| e.to_string())?;
        c.send_datagram(data).map_err(|e| e.to_string())
    }

    fn recv_datagrams(&mut self) -> Vec<bytes::Bytes> {
        let Some(h) = self.handle else { return Vec::new() };
        let Ok(mut c) = self.endpoint.conn(h) else {
            return Vec::new();
        };
        std::iter::from_fn(|| c.recv_datagram()).collect()
    }

    fn send_stream(&mut self, _now: Instant, data: Bytes) -> u64 {
        let h = self.handle.expect("a connection");
        let id = self.endpoint.conn(h).unwrap().open_uni().expect("stream credit");
        self.writing.push((id, data, 0));
        self.pump_streams();
        id.0
    }

    fn received_streams(&mut self) -> BTreeMap<u64, (usize, bool)> {
        self.received
            .iter()
            .map(|(id, (d, fin))| (*id, (d.len(), *fin)))
            .collect()
    }

    fn received_data(&mut self, id: u64) -> Vec<u8> {
        self.received.get(&id).map(|(d, _)| d.clone()).unwrap_or_default()
    }

    fn key_updates(&mut self) -> Option<u64> {
        let h = self.handle?;
        self.endpoint.conn(h).ok().map(|c| c.key_phase().1)
    }

    fn set_auto_read(&mut self, on: bool) {
        self.auto_read = on;
    }

    fn stream_open(&mut self, bidi: bool) -> Option<u64> {
        let mut c = self.conn();
        if bidi { c.open_bi() } else { c.open_uni() }.map(|id| id.0)
    }

    fn stream_accept(&mut self, bidi: bool) -> Option<u64> {
        let dir = if bidi { Dir::Bi } else { Dir::Uni };
        self.conn().accept(dir).map(|id| id.0)
    }

    fn stream_write(&mut self, id: u64, data: &[u8]) -> Result<usize, StreamError> {
        self.conn().stream(StreamId(id)).write(data).map_err(write_error)
    }

    fn stream_finish(&mut self, id: u64) -> Result<(), StreamError> {
        self.conn().stream(StreamId(id)).finish().map_err(write_error)
    }

    fn stream_read(&mut self, id: u64, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.conn()
            .stream(StreamId(id))
            .read_chunk(max)
            .map_err(read_error)
    }

    fn stream_reset(&mut self, id: u64, code: u64) -> Result<(), StreamError> {
        self.conn().stream(StreamId(id)).reset(code).map_err(write_error)
    }

    fn stream_stop(&mut self, id: u64, code: u64) -> Result<(), StreamError> {
        self.conn().stream(StreamId(id)).stop(code).map_err(read_error)
    }

    fn connection_count(&self) -> usize {
        self.endpoint.stats().connections_active
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
