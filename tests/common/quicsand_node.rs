//! A quicsand endpoint as a harness node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use quicsand::{
    ClientConfig, ConnectionError, ConnectionHandle, Datagram, Endpoint, EndpointConfig, Event, ServerConfig,
};

use super::{LostReason, Node, NodeEvent};

/// A quicsand endpoint and the handle of its (first) connection.
pub struct QuicsandNode {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
    pub handle: Option<ConnectionHandle>,
    pub events: Vec<NodeEvent>,
    /// Every event, with its handle, as the endpoint reported it.
    pub raw_events: Vec<(ConnectionHandle, Event)>,
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

    fn new(addr: SocketAddr, endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            addr,
            handle: None,
            events: Vec::new(),
            raw_events: Vec::new(),
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
        let mut out = Vec::new();
        while let Some(t) = self.endpoint.poll_transmit(now, &mut self.buf) {
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

    fn key_updates(&mut self) -> Option<u64> {
        let h = self.handle?;
        self.endpoint.conn(h).ok().map(|c| c.key_phase().1)
    }

    fn connection_count(&self) -> usize {
        self.endpoint.stats().connections_active
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
