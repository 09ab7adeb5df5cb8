//! The in-memory two-peer harness shared by the integration tests: a virtual clock, a network with
//! latency, loss and reordering, and peers that are either quicsand endpoints or quinn-proto endpoints,
//! all driven through the same small [`Node`] trait. No sockets, no sleeping.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod certs;
pub mod quicsand_node;
pub mod quinn_node;
#[cfg(feature = "sim")]
pub mod quinn_sim;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a test wants to know about a connection, whichever engine runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The handshake completed.
    Connected,
    /// The connection ended.
    Lost(LostReason),
}

/// Why a connection ended, in engine-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// The peer (or this side, seen from the peer) closed with an application code and reason.
    ApplicationClosed { code: u64, reason: Vec<u8> },
    /// A transport error was sent or received: its wire code.
    Transport { code: u64 },
    /// This side closed.
    LocallyClosed,
    /// The idle timeout fired.
    TimedOut,
    /// Anything else, described.
    Other(String),
}

/// Why an engine-neutral stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// Nothing can be done now (no data to read, no room to write); retry after driving.
    Blocked,
    /// Reading: the peer reset the stream with this code.
    Reset(u64),
    /// Writing: the peer asked us to stop sending with this code.
    Stopped(u64),
    /// Anything else, as the engine describes it.
    Other(String),
}

/// One endpoint with at most one connection of interest, driven by the harness.
pub trait Node {
    /// The node's address.
    fn addr(&self) -> SocketAddr;
    /// A datagram from `from`.
    fn recv(&mut self, now: Instant, from: SocketAddr, data: &[u8]);
    /// Everything to send now, as (destination, datagram), GSO batches split.
    fn send(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)>;
    /// The next deadline.
    fn timeout(&mut self) -> Option<Instant>;
    /// Runs expired timers.
    fn on_timeout(&mut self, now: Instant);
    /// Events since the last call.
    fn events(&mut self) -> Vec<NodeEvent>;
    /// Closes the connection with an application code and reason.
    fn close(&mut self, now: Instant, code: u64, reason: &[u8]);
    /// Starts a key update.
    fn force_key_update(&mut self);
    /// Sends a PING.
    fn ping(&mut self) {}
    /// Queues an unreliable datagram; the error is the engine's, as text.
    fn send_datagram(&mut self, _data: bytes::Bytes) -> Result<(), String> {
        Err("not supported by this node".into())
    }
    /// Every datagram received so far and not yet taken.
    fn recv_datagrams(&mut self) -> Vec<bytes::Bytes> {
        Vec::new()
    }
    /// Opens a unidirectional stream, queues `data` on it with FIN, and keeps writing it as flow control
    /// allows; returns the stream ID.
    fn send_stream(&mut self, _now: Instant, _data: bytes::Bytes) -> u64 {
        unreachable!("this node does not send streams")
    }
    /// Streams received from the peer so far: ID to (bytes received in order, finished).
    fn received_streams(&mut self) -> std::collections::BTreeMap<u64, (usize, bool)> {
        Default::default()
    }
    /// The bytes received so far on stream `id`.
    fn received_data(&mut self, _id: u64) -> Vec<u8> {
        Vec::new()
    }
    /// Key updates this node's connection went through, when the engine tells (quicsand does).
    fn key_updates(&mut self) -> Option<u64> {
        None
    }
    /// Whether the node accepts and reads every stream the peer opens by itself (the default, into what
    /// [`Node::received_streams`] reports). Turn it off to drive streams through the `stream_*` calls.
    fn set_auto_read(&mut self, _on: bool) {
        unreachable!("this node does not read streams")
    }
    /// Opens a stream (bidirectional or unidirectional), or `None` while the peer's limit is reached.
    fn stream_open(&mut self, _bidi: bool) -> Option<u64> {
        unreachable!("this node does not open streams")
    }
    /// The next stream the peer opened in that direction, if any (only with auto-read off).
    fn stream_accept(&mut self, _bidi: bool) -> Option<u64> {
        None
    }
    /// Writes what the stream takes of `data`; `Blocked` when it takes nothing.
    fn stream_write(&mut self, _id: u64, _data: &[u8]) -> Result<usize, StreamError> {
        Err(StreamError::Other("not supported by this node".into()))
    }
    /// Ends the stream after what was written.
    fn stream_finish(&mut self, _id: u64) -> Result<(), StreamError> {
        Err(StreamError::Other("not supported by this node".into()))
    }
    /// Reads up to `max` in-order bytes: `Ok(None)` at the end of the stream.
    fn stream_read(&mut self, _id: u64, _max: usize) -> Result<Option<bytes::Bytes>, StreamError> {
        Err(StreamError::Other("not supported by this node".into()))
    }
    /// Abandons sending with an application error code (RESET_STREAM).
    fn stream_reset(&mut self, _id: u64, _code: u64) -> Result<(), StreamError> {
        Err(StreamError::Other("not supported by this node".into()))
    }
    /// Asks the peer to stop sending with an application error code (STOP_SENDING).
    fn stream_stop(&mut self, _id: u64, _code: u64) -> Result<(), StreamError> {
        Err(StreamError::Other("not supported by this node".into()))
    }
    /// Number of live connections (for "never created a connection" checks); quinn-proto nodes may
    /// answer 0 or 1 as far as they know.
    fn connection_count(&self) -> usize;
    /// Downcast for engine-specific checks.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// A small deterministic generator for the network (xorshift64*).
#[derive(Debug, Clone)]
pub struct NetRng(u64);

impl NetRng {
    pub fn new(seed: u64) -> Self {
        NetRng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A datagram in flight.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to_server: bool,
    from: SocketAddr,
    data: Vec<u8>,
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ClientToServer,
    ServerToClient,
}

/// Decides the fate of each datagram: `Some(extra delay)` to deliver, `None` to drop.
pub type Filter = Box<dyn FnMut(Dir, u64, &[u8], &mut NetRng) -> Option<Duration>>;

/// Two nodes joined by an in-memory network on a virtual clock.
pub struct Pair {
    pub now: Instant,
    pub client: Box<dyn Node>,
    pub server: Box<dyn Node>,
    /// One-way delay.
    pub latency: Duration,
    pub rng: NetRng,
    /// Per-datagram fate; the default delivers everything.
    pub filter: Filter,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Datagrams sent in each direction so far (the index the filter sees).
    pub sent: [u64; 2],
    /// Bytes sent in each direction so far.
    pub bytes: [u64; 2],
    pub client_events: Vec<NodeEvent>,
    pub server_events: Vec<NodeEvent>,
    /// When a datagram was last delivered to the server ([0]) and to the client ([1]).
    pub last_delivery: [Option<Instant>; 2],
}

/// The fixed start of every virtual clock.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    // One real-clock read, as the origin of virtual time; everything after is arithmetic on it.
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Calls `job(k)` for every `k` in `0..total`, on as many threads as the machine has cores, each thread
/// taking the next index as it finishes one (the runs of a seed range differ widely in length).
pub fn parallel_for(total: usize, job: impl Fn(usize) + Sync) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                job(k);
            });
        }
    });
}

pub const CLIENT_ADDR: &str = "10.0.0.1:50000";
pub const SERVER_ADDR: &str = "10.0.0.2:4433";

pub fn client_addr() -> SocketAddr {
    CLIENT_ADDR.parse().unwrap()
}

pub fn server_addr() -> SocketAddr {
    SERVER_ADDR.parse().unwrap()
}

impl Pair {
    /// A pair with 10 ms one-way latency and a lossless network.
    pub fn new(client: Box<dyn Node>, server: Box<dyn Node>, seed: u64) -> Self {
        Self {
            now: epoch(),
            client,
            server,
            latency: Duration::from_millis(10),
            rng: NetRng::new(seed),
            filter: Box::new(|_, _, _, _| Some(Duration::ZERO)),
            queue: BinaryHeap::new(),
            seq: 0,
            sent: [0; 2],
            bytes: [0; 2],
            client_events: Vec::new(),
            server_events: Vec::new(),
            last_delivery: [None; 2],
        }
    }

    /// Drains both nodes' output into the network and collects their events.
    fn flush(&mut self) {
        for to_server in [true, false] {
            let (node, dir) = if to_server {
                (&mut self.client, Dir::ClientToServer)
            } else {
                (&mut self.server, Dir::ServerToClient)
            };
            let from = node.addr();
            for (_, data) in node.send(self.now) {
                let i = dir as usize;
                let index = self.sent[i];
                self.sent[i] += 1;
                self.bytes[i] += data.len() as u64;
                if let Some(extra) = (self.filter)(dir, index, &data, &mut self.rng) {
                    self.seq += 1;
                    self.queue.push(Reverse(InFlight {
                        at: self.now + self.latency + extra,
                        seq: self.seq,
                        to_server,
                        from,
                        data,
                    }));
                }
            }
        }
        self.client_events.extend(self.client.events());
        self.server_events.extend(self.server.events());
    }

    /// Advances to the next event (a delivery or a timer) and handles it. Returns false when nothing is
    /// left to happen.
    pub fn step(&mut self) -> bool {
        self.step_before(None)
    }

    /// Like [`Pair::step`], but never moves the clock past `deadline`: when the next event lies beyond it,
    /// the clock stops at `deadline` and this returns false.
    pub fn step_before(&mut self, deadline: Option<Instant>) -> bool {
        self.flush();
        let next_delivery = self.queue.peek().map(|Reverse(d)| d.at);
        let next_timer = [self.client.timeout(), self.server.timeout()]
            .into_iter()
            .flatten()
            .min();
        let next = match (next_delivery, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => {
                    if let Some(d) = deadline {
                        self.now = self.now.max(d);
                    }
                    return false;
                }
            },
        };
        if let Some(d) = deadline.filter(|d| next > *d) {
            self.now = self.now.max(d);
            return false;
        }
        self.now = self.now.max(next);
        while let Some(Reverse(d)) = self.queue.peek() {
            if d.at > self.now {
                break;
            }
            let Reverse(d) = self.queue.pop().unwrap();
            let i = usize::from(!d.to_server);
            self.last_delivery[i] = Some(self.now);
            if d.to_server {
                self.server.recv(self.now, d.from, &d.data);
            } else {
                self.client.recv(self.now, d.from, &d.data);
            }
        }
        for node in [&mut self.client, &mut self.server] {
            if node.timeout().is_some_and(|t| t <= self.now) {
                node.on_timeout(self.now);
            }
        }
        self.flush();
        true
    }

    /// Steps until `done` holds or `limit` of virtual time passes; returns whether `done` held.
    pub fn drive_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step_before(Some(deadline)) {
                return done(self);
            }
        }
    }

    /// Steps until nothing is left to happen or `limit` of virtual time passes; the clock ends at the
    /// limit unless everything went quiet before.
    pub fn drive(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        while self.step_before(Some(deadline)) {}
    }

    /// Whether both sides reported `Connected`.
    pub fn both_connected(&self) -> bool {
        self.client_events.contains(&NodeEvent::Connected)
            && self.server_events.contains(&NodeEvent::Connected)
    }

    /// The first `Lost` event of a side.
    pub fn lost(events: &[NodeEvent]) -> Option<&LostReason> {
        events.iter().find_map(|e| match e {
            NodeEvent::Lost(r) => Some(r),
            _ => None,
        })
    }
}

/// ALPN used throughout the tests.
pub const ALPN: &[u8] = b"hq-interop";

/// A certificate for "localhost" shared by a test's server and client.
pub struct TestCert {
    pub cert: rustls::pki_types::CertificateDer<'static>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCert {
    pub fn new() -> Self {
        let (cert, key) = certs::self_signed(&["localhost"]);
        Self { cert, key }
    }

    /// A rustls server config with this certificate and `ALPN`, restricted to `suites` (empty: all).
    pub fn server_tls(&self, suites: &[quicsand::crypto::Suite]) -> std::sync::Arc<rustls::ServerConfig> {
        quicsand::crypto::tls::server_config_with(
            vec![self.cert.clone()],
            self.key.clone_key(),
            vec![ALPN.to_vec()],
            &quicsand::crypto::tls::ConfigOptions::suites(suites),
        )
        .unwrap()
    }

    /// A rustls client config trusting this certificate, with `ALPN`, restricted to `suites` (empty: all).
    pub fn client_tls(&self, suites: &[quicsand::crypto::Suite]) -> std::sync::Arc<rustls::ClientConfig> {
        quicsand::crypto::tls::client_config_with(
            vec![self.cert.clone()],
            vec![ALPN.to_vec()],
            &quicsand::crypto::tls::ConfigOptions::suites(suites),
        )
        .unwrap()
    }
}

/// Which engine plays a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Quicsand,
    Quinn,
}

/// A client and a server of the given engines, the client already connecting, on a lossless network.
pub fn pair(client: Engine, server: Engine, seed: u64) -> Pair {
    pair_with(client, server, seed, &TestCert::new(), &[])
}

/// Like [`pair`], with a given certificate and cipher suites forced on both sides.
pub fn pair_with(
    client: Engine,
    server: Engine,
    seed: u64,
    cert: &TestCert,
    suites: &[quicsand::crypto::Suite],
) -> Pair {
    let now = epoch();
    let server_node: Box<dyn Node> = match server {
        Engine::Quicsand => Box::new(quicsand_node::QuicsandNode::server(
            server_addr(),
            quicsand::ServerConfig::new(cert.server_tls(suites)),
            seed ^ 0x5e,
        )),
        Engine::Quinn => Box::new(quinn_node::QuinnNode::server_with_tls(
            server_addr(),
            cert.server_tls(suites),
            seed ^ 0x5e,
        )),
    };
    let client_node: Box<dyn Node> = match client {
        Engine::Quicsand => {
            let mut c = quicsand_node::QuicsandNode::client(client_addr(), seed ^ 0xc1);
            c.connect_tls(now, cert.client_tls(suites), server_addr(), "localhost");
            Box::new(c)
        }
        Engine::Quinn => {
            let mut c = quinn_node::QuinnNode::client(client_addr(), seed ^ 0xc1);
            c.connect(now, server_addr(), "localhost", cert.client_tls(suites));
            Box::new(c)
        }
    };
    Pair::new(client_node, server_node, seed)
}

/// Deterministic pseudo-random bytes, so a corrupted or misplaced byte is caught.
pub fn payload(len: usize, seed: u64) -> bytes::Bytes {
    let mut rng = NetRng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    bytes::Bytes::from(v)
}

/// SHA-256 of `data`, to compare large payloads in assertion messages without printing them.
pub fn digest(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}
