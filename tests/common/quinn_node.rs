//! A [`Node`] backed by quinn-proto: an `Endpoint` and its connections driven entirely in memory on the
//! harness's virtual clock. Used as the reference peer in interop tests.

// Test-support API: `pub` inside a private test module, on purpose.
#![allow(unreachable_pub)]

use std::any::Any;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, ConnectionId, ConnectionIdGenerator,
    DatagramEvent, Endpoint, EndpointConfig, Event, ReadError, ServerConfig, StreamEvent, StreamId,
    TimeSource, Transmit, TransportConfig, VarInt,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{LostReason, Node, NodeEvent, StreamError};

/// quinn's stream ID from its integer value.
pub fn stream_id(id: u64) -> StreamId {
    StreamId::from(VarInt::from_u64(id).expect("stream IDs fit a varint"))
}

/// Datagrams per `poll_transmit` call (GSO batch size); batches are split before they reach the network.
const MAX_DATAGRAMS: usize = 10;

/// Length of the connection IDs this node issues.
const CID_LEN: usize = 8;

/// splitmix64: expands a test seed into key material and connection IDs.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `N` bytes derived from `seed` and a domain-separating `label`.
fn seeded_bytes<const N: usize>(seed: u64, label: u64) -> [u8; N] {
    let mut state = seed ^ label.wrapping_mul(0xd6e8_feb8_6659_fd93);
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let word = splitmix(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    out
}

/// Deterministic connection IDs (the default generators draw from the thread RNG).
struct SeededCids(u64, Option<Duration>);

impl ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> ConnectionId {
        ConnectionId::new(&splitmix(&mut self.0).to_be_bytes()[..CID_LEN])
    }
    fn cid_len(&self) -> usize {
        CID_LEN
    }
    fn cid_lifetime(&self) -> Option<Duration> {
        self.1
    }
}

/// A fixed wall clock for address-validation tokens, so that token handling does not depend on the
/// real time (tokens live for weeks by default; a constant clock never expires them).
struct FixedWallClock;

impl TimeSource for FixedWallClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
}

/// The AES-128-GCM suite quinn needs for Initial packets when the TLS config does not offer it.
fn initial_suite() -> rustls::quic::Suite {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|s| s.quic_suite())
        .expect("ring's TLS13_AES_128_GCM_SHA256 is a QUIC suite")
}

/// Wraps a rustls client config for quinn, supplying the Initial suite if the config lacks AES-128-GCM.
fn quic_client_config(tls: Arc<rustls::ClientConfig>) -> QuicClientConfig {
    match QuicClientConfig::try_from(tls.clone()) {
        Ok(c) => c,
        Err(_) => QuicClientConfig::with_initial(tls, initial_suite()).expect("AES-128 initial suite"),
    }
}

/// Wraps a rustls server config for quinn, supplying the Initial suite if the config lacks AES-128-GCM.
/// quinn's server config around `tls`, with a token key from `seed` and a fixed wall clock.
fn server_config(tls: Arc<rustls::ServerConfig>, seed: u64) -> ServerConfig {
    let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&seeded_bytes::<32>(seed, 4));
    let mut config = ServerConfig::new(Arc::new(quic_server_config(tls)), Arc::new(token_key));
    config.time_source(Arc::new(FixedWallClock));
    config
}

fn quic_server_config(tls: Arc<rustls::ServerConfig>) -> QuicServerConfig {
    match QuicServerConfig::try_from(tls.clone()) {
        Ok(c) => c,
        Err(_) => QuicServerConfig::with_initial(tls, initial_suite()).expect("AES-128 initial suite"),
    }
}

/// Maps quinn's reason for a connection's end onto the harness's neutral [`LostReason`].
pub fn lost_reason(err: &ConnectionError) -> LostReason {
    match err {
        ConnectionError::ApplicationClosed(close) => LostReason::ApplicationClosed {
            code: close.error_code.into_inner(),
            reason: close.reason.to_vec(),
        },
        ConnectionError::ConnectionClosed(close) => LostReason::Transport {
            code: u64::from(close.error_code),
        },
        ConnectionError::TransportError(e) => LostReason::Transport {
            code: u64::from(e.code),
        },
        ConnectionError::TimedOut => LostReason::TimedOut,
        ConnectionError::LocallyClosed => LostReason::LocallyClosed,
        other => LostReason::Other(format!("{other:?}")),
    }
}

/// Stream data received by a [`QuinnNode`] (peer-initiated streams are accepted and read eagerly so the
/// peer is never blocked on flow control).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReceivedStream {
    /// In-order data read so far.
    pub data: Vec<u8>,
    /// The FIN was read.
    pub finished: bool,
    /// The peer reset the stream with this code.
    pub reset: Option<u64>,
}

/// Adjusts a transport config.
type TransportFn = dyn Fn(&mut TransportConfig);

/// One quinn-proto connection and its bookkeeping.
struct Conn {
    handle: ConnectionHandle,
    conn: Connection,
    /// The endpoint has forgotten it (`Drained` was handled); kept for post-mortem inspection.
    drained: bool,
    /// Accepted streams still being read.
    reading: Vec<StreamId>,
    /// Streams this side opened and is still writing: (id, data, bytes written so far).
    writing: Vec<(StreamId, Bytes, usize)>,
}

/// A quinn-proto endpoint as a harness [`Node`].
pub struct QuinnNode {
    addr: SocketAddr,
    seed: u64,
    endpoint: Endpoint,
    /// The server config for incoming connections (its transport config is rebuilt on each accept).
    server_config: Option<ServerConfig>,
    /// Applied to a fresh default `TransportConfig` for every new connection.
    transport: Option<Box<TransportFn>>,
    conns: Vec<Conn>,
    out: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<NodeEvent>,
    /// Data received on peer-initiated (and bidirectional) streams, by stream ID.
    pub received: BTreeMap<u64, ReceivedStream>,
    /// Datagrams received on any connection, in order, until taken by `recv_datagrams`.
    pub datagrams: Vec<Bytes>,
    /// Datagrams the endpoint answered statelessly (version negotiation, stateless reset, refusals).
    pub endpoint_responses: u64,
    /// Accept and read every peer stream (the default); off, the test does it through the `stream_*`
    /// calls.
    pub auto_read: bool,
    /// Every stream event of every connection, in order.
    pub stream_events: Vec<StreamEvent>,
    /// A server: answer every client whose address is not validated (no valid token) with a Retry.
    pub retry_unvalidated: bool,
    /// A server: Retry packets sent.
    pub retries_sent: u64,
    /// A server: incoming connections whose address a token validated.
    pub validated_incoming: u64,
    /// A client: the NEW_TOKEN store shared by all its connections.
    token_store: Arc<dyn quinn_proto::TokenStore>,
}

impl QuinnNode {
    fn new(addr: SocketAddr, seed: u64, server_config: Option<ServerConfig>) -> Self {
        Self::with_cid_lifetime(addr, seed, server_config, None)
    }

    /// A node whose connection IDs live `cid_lifetime` (quinn then issues new ones and retires the old
    /// through Retire Prior To), or forever with `None`.
    fn with_cid_lifetime(
        addr: SocketAddr,
        seed: u64,
        server_config: Option<ServerConfig>,
        cid_lifetime: Option<Duration>,
    ) -> Self {
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seeded_bytes::<64>(seed, 1));
        let mut config = EndpointConfig::new(Arc::new(reset_key));
        let cid_seed = u64::from_le_bytes(seeded_bytes::<8>(seed, 2));
        // The factory is called once per endpoint; keep each call distinct anyway.
        let cid_counter = AtomicU64::new(0);
        config.cid_generator(move || {
            let n = cid_counter.fetch_add(1, Ordering::Relaxed);
            Box::new(SeededCids(
                cid_seed.wrapping_add(n.wrapping_mul(0x1000_0000_0000_0001)),
                cid_lifetime,
            ))
        });
        let endpoint = Endpoint::new(
            Arc::new(config),
            server_config.clone().map(Arc::new),
            true,
            Some(seeded_bytes(seed, 3)),
        );
        Self {
            addr,
            seed,
            endpoint,
            server_config,
            transport: None,
            conns: Vec::new(),
            out: Vec::new(),
            events: Vec::new(),
            received: BTreeMap::new(),
            datagrams: Vec::new(),
            endpoint_responses: 0,
            auto_read: true,
            stream_events: Vec::new(),
            retry_unvalidated: false,
            retries_sent: 0,
            validated_incoming: 0,
            token_store: Arc::new(quinn_proto::TokenMemoryCache::default()),
        }
    }

    /// A server presenting `cert` for `alpn`, with quinn's default TLS settings (all of ring's TLS 1.3
    /// suites, 0-RTT enabled).
    pub fn server(
        addr: SocketAddr,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        alpn: &[&[u8]],
        seed: u64,
    ) -> Self {
        let mut tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("ring supports TLS 1.3")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("valid test certificate");
        tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        tls.max_early_data_size = u32::MAX;
        Self::server_with_tls(addr, Arc::new(tls), seed)
    }

    /// A server using a caller-built rustls config (e.g. restricted cipher suites). If the config does
    /// not offer TLS_AES_128_GCM_SHA256, it is still used for Initial packets, as QUIC requires.
    pub fn server_with_tls(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, seed: u64) -> Self {
        Self::new(addr, seed, Some(server_config(tls, seed)))
    }

    /// A server like [`QuinnNode::server_with_tls`] offering a preferred address (RFC 9000 §9.6), whose
    /// connection IDs live `cid_lifetime`.
    pub fn server_with_preferred_address(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        seed: u64,
        preferred: std::net::SocketAddrV4,
        cid_lifetime: Duration,
    ) -> Self {
        let mut config = server_config(tls, seed);
        config.preferred_address_v4(Some(preferred));
        Self::with_cid_lifetime(addr, seed, Some(config), Some(cid_lifetime))
    }

    /// A client endpoint; call [`QuinnNode::connect`] to start a connection.
    pub fn client(addr: SocketAddr, seed: u64) -> Self {
        Self::new(addr, seed, None)
    }

    /// Customises the transport config of connections created from now on (starting from quinn's
    /// defaults each time), e.g. `|t| { t.max_idle_timeout(None); }`.
    pub fn set_transport(&mut self, f: impl Fn(&mut TransportConfig) + 'static) {
        self.transport = Some(Box::new(f));
    }

    /// Mutable access to the server config used for connections accepted from now on (migration,
    /// validation tokens, ...). `None` on clients.
    pub fn server_config_mut(&mut self) -> Option<&mut ServerConfig> {
        self.server_config.as_mut()
    }

    fn make_transport(&self) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        if let Some(f) = &self.transport {
            f(&mut t);
        }
        Arc::new(t)
    }

    /// Starts a connection to `server`, verifying it as `server_name` with `client_tls`. A config that
    /// lacks TLS_AES_128_GCM_SHA256 gets it for Initial packets only.
    pub fn connect(
        &mut self,
        now: Instant,
        server: SocketAddr,
        server_name: &str,
        client_tls: Arc<rustls::ClientConfig>,
    ) {
        let mut config = ClientConfig::new(Arc::new(quic_client_config(client_tls)));
        config.transport_config(self.make_transport());
        config.token_store(self.token_store.clone());
        let counter = AtomicU64::new(u64::from_le_bytes(seeded_bytes::<8>(self.seed, 5)));
        config.initial_dst_cid_provider(Arc::new(move || {
            let mut s = counter.fetch_add(1, Ordering::Relaxed);
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&splitmix(&mut s).to_be_bytes());
            bytes[8..].copy_from_slice(&splitmix(&mut s).to_be_bytes());
            ConnectionId::new(&bytes)
        }));
        let (handle, conn) = self
            .endpoint
            .connect(now, config, server, server_name)
            .expect("quinn accepts the connect");
        self.conns.push(Conn {
            handle,
            conn,
            drained: false,
            reading: Vec::new(),
            writing: Vec::new(),
        });
    }

    /// The first connection (live or not), for engine-specific checks.
    pub fn connection(&mut self) -> Option<&mut Connection> {
        self.conns.first_mut().map(|c| &mut c.conn)
    }

    /// All connections this node has had, oldest first.
    pub fn connections(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.conns.iter_mut().map(|c| &mut c.conn)
    }

    /// The first connection not yet drained, for application calls.
    pub fn live(&mut self) -> &mut Connection {
        &mut self
            .conns
            .iter_mut()
            .find(|c| !c.drained)
            .expect("a live connection")
            .conn
    }

    /// The quinn-proto endpoint.
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    fn queue_transmit(out: &mut Vec<(SocketAddr, Vec<u8>)>, t: &Transmit, buf: &[u8]) {
        let data = &buf[..t.size];
        match t.segment_size {
            Some(seg) if seg > 0 => out.extend(data.chunks(seg).map(|d| (t.destination, d.to_vec()))),
            _ => out.push((t.destination, data.to_vec())),
        }
    }

    fn conn_mut(&mut self, handle: ConnectionHandle) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| !c.drained && c.handle == handle)
    }

    /// Shuttles endpoint events both ways and drains application events; returns whether the
    /// endpoint handed anything back to a connection (which may then have more to send).
    fn service(&mut self) -> bool {
        let mut fed_back = false;
        for i in 0..self.conns.len() {
            if self.conns[i].drained {
                continue;
            }
            while let Some(ev) = self.conns[i].conn.poll_endpoint_events() {
                let drained = ev.is_drained();
                if let Some(back) = self.endpoint.handle_event(self.conns[i].handle, ev) {
                    self.conns[i].conn.handle_event(back);
                    fed_back = true;
                }
                if drained {
                    self.conns[i].drained = true;
                }
            }
            self.drain_app_events(i);
        }
        fed_back
    }

    /// Writes as much of every pending outgoing stream as flow control allows, finishing completed ones.
    fn pump_writes(&mut self) {
        for c in self.conns.iter_mut().filter(|c| !c.drained) {
            let conn = &mut c.conn;
            c.writing.retain_mut(|(id, data, written)| {
                let mut stream = conn.send_stream(*id);
                while *written < data.len() {
                    match stream.write(&data[*written..]) {
                        Ok(n) if n > 0 => *written += n,
                        _ => return true,
                    }
                }
                stream.finish().is_err()
            });
        }
    }

    fn drain_app_events(&mut self, i: usize) {
        let c = &mut self.conns[i];
        while let Some(ev) = c.conn.poll() {
            match ev {
                Event::Connected => self.events.push(NodeEvent::Connected),
                Event::ConnectionLost { reason } => self.events.push(NodeEvent::Lost(lost_reason(&reason))),
                Event::Stream(e) => {
                    if let (StreamEvent::Opened { dir }, true) = (&e, self.auto_read) {
                        while let Some(id) = c.conn.streams().accept(*dir) {
                            c.reading.push(id);
                        }
                    }
                    self.stream_events.push(e);
                }
                Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
            }
        }
        while let Some(d) = c.conn.datagrams().recv() {
            self.datagrams.push(d);
        }
        // Read every accepted stream; cheap, and it keeps flow-control credit flowing to the peer.
        let received = &mut self.received;
        c.reading.retain(|&id| {
            let entry = received.entry(u64::from(id)).or_default();
            let mut stream = c.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                return false;
            };
            let keep = loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => entry.data.extend_from_slice(&chunk.bytes),
                    Ok(None) => {
                        entry.finished = true;
                        break false;
                    }
                    Err(ReadError::Blocked) => break true,
                    Err(ReadError::Reset(code)) => {
                        entry.reset = Some(code.into_inner());
                        break false;
                    }
                }
            };
            let _ = chunks.finalize();
            keep
        });
    }
}

impl Node for QuinnNode {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn recv(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        match self
            .endpoint
            .handle(now, from, None, None, BytesMut::from(data), &mut buf)
        {
            None => {}
            Some(DatagramEvent::ConnectionEvent(handle, ev)) => {
                if let Some(c) = self.conn_mut(handle) {
                    c.conn.handle_event(ev);
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.endpoint_responses += 1;
                Self::queue_transmit(&mut self.out, &t, &buf);
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if incoming.remote_address_validated() {
                    self.validated_incoming += 1;
                } else if self.retry_unvalidated && incoming.may_retry() {
                    let t = self
                        .endpoint
                        .retry(incoming, &mut buf)
                        .expect("a retry is allowed");
                    self.retries_sent += 1;
                    Self::queue_transmit(&mut self.out, &t, &buf);
                    self.service();
                    return;
                }
                let config = self.server_config.clone().map(|mut c| {
                    c.transport_config(self.make_transport());
                    Arc::new(c)
                });
                buf.clear();
                match self.endpoint.accept(incoming, now, &mut buf, config) {
                    Ok((handle, conn)) => self.conns.push(Conn {
                        handle,
                        conn,
                        drained: false,
                        reading: Vec::new(),
                        writing: Vec::new(),
                    }),
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.endpoint_responses += 1;
                            Self::queue_transmit(&mut self.out, &t, &buf);
                        }
                        self.events.push(NodeEvent::Lost(lost_reason(&e.cause)));
                    }
                }
            }
        }
        self.service();
    }

    fn send(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.out);
        let mut buf = Vec::new();
        loop {
            self.pump_writes();
            self.service();
            for c in self.conns.iter_mut().filter(|c| !c.drained) {
                while let Some(t) = c.conn.poll_transmit(now, MAX_DATAGRAMS, &mut buf) {
                    Self::queue_transmit(&mut out, &t, &buf);
                    buf.clear();
                }
            }
            if !self.service() {
                break;
            }
        }
        out
    }

    fn timeout(&mut self) -> Option<Instant> {
        self.conns
            .iter_mut()
            .filter(|c| !c.drained)
            .filter_map(|c| c.conn.poll_timeout())
            .min()
    }

    fn on_timeout(&mut self, now: Instant) {
        for c in self.conns.iter_mut().filter(|c| !c.drained) {
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
            }
        }
        self.service();
    }

    fn events(&mut self) -> Vec<NodeEvent> {
        self.service();
        std::mem::take(&mut self.events)
    }

    /// Closes every live connection. quinn-proto reports no event for a local close, so this node
    /// records `Lost(LocallyClosed)` itself, as the neutral event list expects.
    fn close(&mut self, now: Instant, code: u64, reason: &[u8]) {
        let code = VarInt::from_u64(code).expect("application error code fits a varint");
        for c in self
            .conns
            .iter_mut()
            .filter(|c| !c.drained && !c.conn.is_closed())
        {
            c.conn.close(now, code, Bytes::copy_from_slice(reason));
            self.events.push(NodeEvent::Lost(LostReason::LocallyClosed));
        }
    }

    fn force_key_update(&mut self) {
        for c in self.conns.iter_mut().filter(|c| !c.drained) {
            c.conn.force_key_update();
        }
    }

    fn send_datagram(&mut self, data: bytes::Bytes) -> Result<(), String> {
        let conn = self.connection().ok_or("no connection")?;
        conn.datagrams().send(data, true).map_err(|e| format!("{e:?}"))
    }

    fn recv_datagrams(&mut self) -> Vec<bytes::Bytes> {
        std::mem::take(&mut self.datagrams)
    }

    fn send_stream(&mut self, _now: Instant, data: Bytes) -> u64 {
        let c = self.conns.iter_mut().find(|c| !c.drained).expect("a connection");
        let id = c
            .conn
            .streams()
            .open(quinn_proto::Dir::Uni)
            .expect("stream credit");
        c.writing.push((id, data, 0));
        self.pump_writes();
        u64::from(id)
    }

    fn received_streams(&mut self) -> BTreeMap<u64, (usize, bool)> {
        self.received
            .iter()
            .map(|(id, r)| (*id, (r.data.len(), r.finished)))
            .collect()
    }

    fn received_data(&mut self, id: u64) -> Vec<u8> {
        self.received.get(&id).map(|r| r.data.clone()).unwrap_or_default()
    }

    fn set_auto_read(&mut self, on: bool) {
        self.auto_read = on;
    }

    fn stream_open(&mut self, bidi: bool) -> Option<u64> {
        let dir = if bidi {
            quinn_proto::Dir::Bi
        } else {
            quinn_proto::Dir::Uni
        };
        self.live().streams().open(dir).map(u64::from)
    }

    fn stream_accept(&mut self, bidi: bool) -> Option<u64> {
        let dir = if bidi {
            quinn_proto::Dir::Bi
        } else {
            quinn_proto::Dir::Uni
        };
        self.live().streams().accept(dir).map(u64::from)
    }

    fn stream_write(&mut self, id: u64, data: &[u8]) -> Result<usize, StreamError> {
        self.live()
            .send_stream(stream_id(id))
            .write(data)
            .map_err(|e| match e {
                quinn_proto::WriteError::Blocked => StreamError::Blocked,
                quinn_proto::WriteError::Stopped(code) => StreamError::Stopped(code.into_inner()),
                other => StreamError::Other(other.to_string()),
            })
    }

    fn stream_finish(&mut self, id: u64) -> Result<(), StreamError> {
        self.live()
            .send_stream(stream_id(id))
            .finish()
            .map_err(|e| match e {
                quinn_proto::FinishError::Stopped(code) => StreamError::Stopped(code.into_inner()),
                other => StreamError::Other(other.to_string()),
            })
    }

    fn stream_read(&mut self, id: u64, max: usize) -> Result<Option<Bytes>, StreamError> {
        let mut stream = self.live().recv_stream(stream_id(id));
        let mut chunks = stream.read(true).map_err(|e| StreamError::Other(e.to_string()))?;
        let r = match chunks.next(max) {
            Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
            Err(ReadError::Blocked) => Err(StreamError::Blocked),
            Err(ReadError::Reset(code)) => Err(StreamError::Reset(code.into_inner())),
        };
        let _ = chunks.finalize();
        r
    }

    fn stream_reset(&mut self, id: u64, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).expect("code fits a varint");
        self.live()
            .send_stream(stream_id(id))
            .reset(code)
            .map_err(|e| StreamError::Other(e.to_string()))
    }

    fn stream_stop(&mut self, id: u64, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).expect("code fits a varint");
        self.live()
            .recv_stream(stream_id(id))
            .stop(code)
            .map_err(|e| StreamError::Other(e.to_string()))
    }

    fn ping(&mut self) {
        for c in self.conns.iter_mut().filter(|c| !c.drained) {
            c.conn.ping();
        }
    }

    fn connection_count(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| !c.drained && !c.conn.is_drained())
            .count()
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
