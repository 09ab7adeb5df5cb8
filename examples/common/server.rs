//! The server side of both protocols: each connection speaks hq-interop when that ALPN was negotiated,
//! and echo for any other ALPN.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use quicsand::qlog::QlogWriter;
use quicsand::udp::Handler;
use quicsand::{ConnectionHandle, Dir, Endpoint, Event, StreamEvent, StreamId};

use super::echo::EchoStream;
use super::hq::HqStream;
use super::tls::suite_name;

/// The ALPN of HTTP/0.9 as the QUIC interop runner uses it.
pub const HQ_INTEROP: &[u8] = b"hq-interop";

/// Counters of a [`ServerApp`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections whose handshake completed.
    pub connections: u64,
    /// Connections that ended.
    pub connections_closed: u64,
    /// hq-interop files sent completely (FIN queued).
    pub files_served: u64,
    /// hq-interop requests answered with a stream reset (no such file, bad request).
    pub requests_refused: u64,
    /// File bytes written to streams.
    pub file_bytes: u64,
    /// Echo streams finished.
    pub echo_streams: u64,
    /// Bytes echoed on streams.
    pub echo_bytes: u64,
    /// Datagrams echoed.
    pub echo_datagrams: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Hq,
    Echo,
}

enum Stream {
    Hq(HqStream),
    Echo(EchoStream),
}

struct Conn {
    protocol: Protocol,
    streams: HashMap<StreamId, Stream>,
}

/// A server handler for any number of connections at once.
pub struct ServerApp {
    root: Option<PathBuf>,
    /// Where each connection's qlog goes (`server-N.sqlog`, N counting incoming connections from 1).
    pub qlog_dir: Option<PathBuf>,
    conns: HashMap<ConnectionHandle, Conn>,
    /// Incoming connections so far.
    incoming: u64,
    /// What it did so far.
    pub stats: ServerStats,
}

impl ServerApp {
    /// A server that serves hq-interop requests from `root` (every request is refused without one).
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            qlog_dir: None,
            conns: HashMap::new(),
            incoming: 0,
            stats: ServerStats::default(),
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    fn conn(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle) -> Option<&mut Conn> {
        match self.conns.entry(h) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                // The ALPN is known from the moment the server picked it, before any stream can arrive.
                let alpn = endpoint.conn(h).ok()?.alpn_protocol()?;
                let protocol = if alpn == HQ_INTEROP {
                    Protocol::Hq
                } else {
                    Protocol::Echo
                };
                Some(e.insert(Conn {
                    protocol,
                    streams: HashMap::new(),
                }))
            }
        }
    }

    /// Moves stream `id` of `h` as far as it can go now; forgets it once it is done.
    fn pump(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, id: StreamId) {
        let root = self.root.clone();
        let stats = &mut self.stats;
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        let Some(stream) = conn.streams.get_mut(&id) else {
            return;
        };
        let Ok(mut c) = endpoint.conn(h) else { return };
        let done = match stream {
            Stream::Hq(s) => s.pump(&mut c, id, root.as_deref(), stats),
            Stream::Echo(s) => s.pump(&mut c, id, stats),
        };
        if done {
            conn.streams.remove(&id);
        }
    }
}

impl Handler for ServerApp {
    fn on_event(&mut self, endpoint: &mut Endpoint, h: ConnectionHandle, event: Event, _now: Instant) {
        match event {
            Event::Incoming { remote } => {
                tracing::debug!(?h, %remote, "incoming connection");
                self.incoming += 1;
                if let Some(dir) = &self.qlog_dir {
                    let path = dir.join(format!("server-{}.sqlog", self.incoming));
                    match (std::fs::File::create(&path), endpoint.conn(h)) {
                        (Ok(file), Ok(mut c)) => {
                            let sink = QlogWriter::new(std::io::BufWriter::new(file));
                            c.set_qlog(Box::new(sink));
                        }
                        (Err(e), _) => tracing::warn!(path = %path.display(), %e, "qlog file"),
                        (_, Err(_)) => {}
                    }
                }
            }
            Event::Connected => {
                self.stats.connections += 1;
                if let Ok(c) = endpoint.conn(h) {
                    let alpn = c
                        .alpn_protocol()
                        .map(|a| String::from_utf8_lossy(&a).into_owned());
                    let suite = c.suite().map(suite_name);
                    tracing::info!(?h, remote = %c.remote_address(), ?alpn, ?suite, "connected");
                }
            }
            Event::Stream(StreamEvent::Opened { dir }) => {
                let mut accepted = Vec::new();
                let Some(protocol) = self.conn(endpoint, h).map(|c| c.protocol) else {
                    return;
                };
                if let Ok(mut c) = endpoint.conn(h) {
                    while let Some(id) = c.accept(dir) {
                        if dir == Dir::Uni {
                            // Neither protocol uses unidirectional streams.
                            let _ = c.stream(id).stop(0);
                        } else {
                            accepted.push(id);
                        }
                    }
                }
                if let Some(conn) = self.conns.get_mut(&h) {
                    for id in &accepted {
                        let stream = match protocol {
                            Protocol::Hq => Stream::Hq(HqStream::default()),
                            Protocol::Echo => Stream::Echo(EchoStream::default()),
                        };
                        conn.streams.insert(*id, stream);
                    }
                }
                for id in accepted {
                    self.pump(endpoint, h, id);
                }
            }
            Event::Stream(
                StreamEvent::Readable { id } | StreamEvent::Writable { id } | StreamEvent::Reset { id, .. },
            ) => self.pump(endpoint, h, id),
            Event::Stream(StreamEvent::Stopped { id, code }) => {
                tracing::debug!(?h, ?id, code, "stream stopped by the peer");
                if let Some(conn) = self.conns.get_mut(&h) {
                    conn.streams.remove(&id);
                }
            }
            Event::Stream(StreamEvent::Finished { .. } | StreamEvent::Available { .. }) => {}
            Event::DatagramReceived => {
                let echo = self
                    .conn(endpoint, h)
                    .is_some_and(|c| c.protocol == Protocol::Echo);
                let Ok(mut c) = endpoint.conn(h) else { return };
                while let Some(d) = c.recv_datagram() {
                    if echo && c.send_datagram(d).is_ok() {
                        self.stats.echo_datagrams += 1;
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                self.stats.connections_closed += 1;
                self.conns.remove(&h);
                let stats = endpoint.conn(h).ok().map(|c| c.stats());
                tracing::info!(?h, %reason, "connection closed");
                tracing::debug!(?h, ?stats, "connection counters");
            }
            Event::HandshakeConfirmed => {}
        }
    }
}
