//! A deterministic network simulator: endpoints joined by impaired links on a virtual clock.
//!
//! A [`Simulation`] owns nodes, each an [`Endpoint`] at an address with an [`App`] that plays its
//! application, and directed links between nodes ([`LinkConfig`]: delay, jitter, random and bursty loss,
//! reordering, duplication, corruption, a bandwidth bottleneck with a drop-tail queue, a maximum
//! datagram size). Scheduled actions take links down and up and move a node to a new address (NAT
//! rebinding). Every endpoint is driven only through its public sans-IO API, following the drive rule
//! of the crate root; the clock jumps to the next deadline, delivery, wake-up or scheduled action. The
//! simulator never reads a real clock: the caller passes the epoch.
//!
//! # Determinism
//!
//! One seed drives everything: each node's [`EndpointConfig::seed`] is derived from it and the node's
//! index, and each link's loss, jitter and corruption draws come from a generator derived from it and the
//! two node indices. Two runs with the same seed, the same nodes, links, schedule and apps, and TLS
//! configurations built the same way for each run reproduce the same [`Trace`]: the same datagram
//! times, sizes, addresses and fates, and the same events at the same times, so [`Trace::hash`] is
//! equal.
//!
//! TLS is the one source of randomness outside the seed. Build the TLS configurations with
//! [`deterministic_tls`] (randoms and key shares from the seed, a fixed clock) and packet *bytes*
//! repeat too. With the default provider they do not: key shares and randoms come from the operating
//! system, ticket ages from its clock. Sizes still repeat, provided the certificate has the same size in
//! every run (an Ed25519 key gives fixed-size keys and signatures; ECDSA signatures vary), except where
//! a peer reads ciphertext as a header: with corruption on, a corrupted packet can be answered by a
//! Version Negotiation whose size depends on ciphertext, so the trace repeats only with
//! [`deterministic_tls`]. Build the configurations afresh for each run: `rustls` keeps session tickets
//! in them, so a second run reusing them resumes where the first did a full handshake.
//!
//! # Other engines
//!
//! A node need not be a quicsand endpoint: anything that implements [`Engine`] (a sans-IO engine with
//! its application: `handle_datagram`, `poll_transmit`, `poll_timeout`, `handle_timeout`, and
//! `start` / `poll_events` for the application) joins with [`Simulation::add_engine`], which hands it
//! a seed derived like an endpoint's. The simulator drives it by the same rule, over the same links,
//! and records its datagrams and the events it reports in the same trace, so another QUIC
//! implementation can be tested against quicsand under loss, reordering and outages. Whether such a
//! run is reproducible depends on that engine drawing all its randomness from the seed.
//!
//! # Replaying a failure
//!
//! Tests take their seed from [`seed_from_env`]: when `QUICSAND_SIM_SEED` is set (decimal or `0x` hex),
//! it replaces the default seed, and a failing simulation test prints the seed it ran with, so
//! `QUICSAND_SIM_SEED=<seed> cargo test --test sim <name>` replays it exactly.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use quicsand::crypto::tls;
//! use quicsand::sim::{BulkSender, LinkConfig, Simulation, Sink};
//! use quicsand::{ClientConfig, ServerConfig};
//! use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An Ed25519 certificate (made with rcgen here): fixed-size keys and signatures.
//! let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
//! let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
//! let cert = CertificateDer::from(cert.der().to_vec());
//! let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
//! let options = tls::ConfigOptions::default();
//! let alpn = vec![b"sim".to_vec()];
//! let server_tls = tls::server_config_with(vec![cert.clone()], key, alpn.clone(), &options)?;
//! let client_tls = tls::client_config_with(vec![cert], alpn, &options)?;
//!
//! // The caller chooses the epoch; the simulator never reads a clock.
//! let epoch = Instant::now();
//! let mut sim = Simulation::new(epoch, 42);
//! let server_addr = "10.0.0.2:4433".parse()?;
//! let server = sim.add_node(server_addr, Some(ServerConfig::new(server_tls)), Box::new(Sink::default()));
//! let sender = BulkSender::new(ClientConfig::new(client_tls), server_addr, "localhost", 100_000, 1);
//! let client = sim.add_node("10.0.0.1:50000".parse()?, None, Box::new(sender));
//! sim.add_duplex_link(client, server, LinkConfig::with_delay(Duration::from_millis(20)));
//!
//! let done = sim.run_until(Duration::from_secs(60), |sim| {
//!     sim.app::<Sink>(server).is_some_and(|s| s.total_bytes() == 100_000 && s.finished_streams() == 1)
//! });
//! assert!(done);
//! println!("{:?} of virtual time, trace hash {:#x}", sim.elapsed(), sim.trace().hash());
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::conn::later;
use crate::{ConnectionHandle, EcnCodepoint, Endpoint, EndpointConfig, Event, ServerConfig};

mod apps;
mod engine;
mod link;
mod tls;
mod trace;

#[cfg(test)]
mod tests;

pub use apps::{BulkSender, Sink, StreamRecord};
pub use engine::{Engine, EngineCtx};
pub use link::{Fate, GilbertElliott, InvalidLinkConfig, LinkConfig, LinkEcn};
pub use tls::deterministic_tls;
pub use trace::{Trace, TraceRecord};

use engine::EndpointNode;
use link::Link;

/// The environment variable that overrides the seed of simulation tests (see [`seed_from_env`]).
pub const SEED_ENV: &str = "QUICSAND_SIM_SEED";

/// The seed in `QUICSAND_SIM_SEED` (decimal, or hex with `0x`; whitespace around it is ignored), or
/// `default` when it is unset.
///
/// # Panics
///
/// If the variable is set to anything else (empty, not a number, beyond `u64`, not Unicode): a replay
/// with a mistyped seed would otherwise run the default seed and pass for a replay.
pub fn seed_from_env(default: u64) -> u64 {
    seed_from(std::env::var(SEED_ENV), default)
}

/// [`seed_from_env`] with the variable's value, `var`, as [`std::env::var`] gives it.
fn seed_from(var: Result<String, std::env::VarError>, default: u64) -> u64 {
    let value = match var {
        Ok(value) => value,
        Err(std::env::VarError::NotPresent) => return default,
        Err(std::env::VarError::NotUnicode(value)) => {
            panic!("{SEED_ENV}={value:?} is not a seed: it is not Unicode")
        }
    };
    parse_seed(&value).unwrap_or_else(|| {
        panic!("{SEED_ENV}={value:?} is not a seed: write one of 0..=2^64-1 in decimal, or in hex with 0x")
    })
}

/// A seed written in decimal, or in hex with `0x` (whitespace around it ignored), as
/// [`seed_from_env`] and the `sim` example take it; `None` for anything else.
pub fn parse_seed(text: &str) -> Option<u64> {
    let s = text.trim();
    match s.strip_prefix("0x") {
        // from_str_radix takes a leading `+`: `0x+5` is not hex.
        Some(hex) if hex.starts_with('+') => None,
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Mixes `seed` with `a` and `b` into an independent seed (SplitMix64 finaliser).
fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(b.wrapping_mul(0xd1b5_4a32_d192_ed03))
        .wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A node of a [`Simulation`], in the order nodes were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Downcasting for [`App`]s, implemented for every `'static` type.
pub trait AsAny {
    /// `self` as `Any`.
    fn as_any(&self) -> &dyn Any;
    /// `self` as mutable `Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The application of one node. Every method may use the endpoint through [`NodeCtx::endpoint`]; the
/// simulator drains the endpoint's output after each call.
pub trait App: AsAny {
    /// Called once, at the simulation's start (the first [`Simulation::step`]) or, for a node added later,
    /// at the first step after it was added.
    fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
        let _ = ctx;
    }
    /// An event of the node's endpoint.
    fn on_event(&mut self, ctx: &mut NodeCtx<'_>, handle: ConnectionHandle, event: &Event) {
        let _ = (ctx, handle, event);
    }
    /// The wake-up time asked for with [`NodeCtx::wake_at`] came.
    fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
        let _ = ctx;
    }
}

/// An app that does nothing (a server that only accepts, for example).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoApp;

impl App for NoApp {}

/// What an [`App`] sees of its node during a call.
pub struct NodeCtx<'a> {
    endpoint: &'a mut Endpoint,
    node: NodeId,
    addr: SocketAddr,
    now: Instant,
    epoch: Instant,
    wake: &'a mut Option<Instant>,
}

impl fmt::Debug for NodeCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCtx")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

impl NodeCtx<'_> {
    /// The node's endpoint.
    pub fn endpoint(&mut self) -> &mut Endpoint {
        self.endpoint
    }
    /// The node.
    pub fn node(&self) -> NodeId {
        self.node
    }
    /// The node's current address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }
    /// The virtual time since the simulation's epoch.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.epoch)
    }
    /// Asks for [`App::on_wake`] at `at` (or at once, if it passed). Only the earliest pending request
    /// is kept.
    pub fn wake_at(&mut self, at: Instant) {
        let at = at.max(self.now);
        *self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }
    /// Asks for [`App::on_wake`] after `delay`.
    pub fn wake_after(&mut self, delay: Duration) {
        self.wake_at(later(self.now, delay));
    }
}

struct Node {
    engine: Box<dyn Engine>,
    addr: SocketAddr,
    started: bool,
    /// The caller reached the node's endpoint, app or engine between steps: it may have given it work,
    /// so the next step first services it at the current time instead of waiting for its next deadline
    /// (a node with nothing to do does nothing then).
    poked: bool,
    /// The instant at which the node was still busy after the drain bound, and how many steps in a row
    /// it was: after [`STUCK_STEPS`] of them the clock moves on by [`STUCK_TICK`] for it, so that a run
    /// still reaches its limit.
    stuck_at: Option<(Instant, u32)>,
}

/// The most bytes one batch of received datagrams holds (see [`Simulation::set_batching`]): the
/// largest UDP payload, as a receive offload (GRO) builds them.
const MAX_BATCH_BYTES: usize = 65_535;

/// The most datagrams one batch holds, as Linux's UDP GRO.
const MAX_BATCH_DATAGRAMS: usize = 64;

/// Steps at one instant that end with a node still busy before the clock moves on for it.
const STUCK_STEPS: u32 = 4;

/// How far the clock moves for a node that stays busy at one instant (see [`Node::stuck_at`]), or for
/// the whole simulation after too many steps at one instant (see `Simulation::instant_steps`).
const STUCK_TICK: Duration = Duration::from_millis(1);

impl Node {
    /// The built-in node, if this is one.
    fn endpoint_node(&self) -> Option<&EndpointNode> {
        (*self.engine).as_any().downcast_ref()
    }

    fn endpoint_node_mut(&mut self) -> Option<&mut EndpointNode> {
        (*self.engine).as_any_mut().downcast_mut()
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: NodeId,
    /// The address it was sent to: if the node has moved since, it no longer receives there.
    to_addr: SocketAddr,
    from: SocketAddr,
    /// When it was sent, since the epoch (for the trace, should it find no node).
    sent: Duration,
    /// It was corrupted on the way (counted in `Trace::corrupted` as delivered).
    corrupted: bool,
    /// The two ECN bits it arrives with.
    ecn: u8,
    payload: BytesMut,
}

/// What [`Simulation::set_batching`]'s grouping of one step's datagrams works in.
#[derive(Default)]
struct BatchScratch {
    /// The datagrams due, in the order they arrived.
    due: Vec<InFlight>,
    /// For each of them, the index of the next one due to the same node (`usize::MAX`: none).
    next: Vec<usize>,
    /// Per node, while `next` is built: the first of its datagrams seen so far from the end.
    last: Vec<usize>,
    /// Whether each one went in a batch with an earlier one.
    taken: Vec<bool>,
}

/// An action scheduled at a virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    LinkUp { from: NodeId, to: NodeId, up: bool },
    Rebind { node: NodeId, addr: SocketAddr },
}

/// Limits that keep a simulation's memory bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Datagrams in flight at once; beyond it new ones are dropped ([`Fate::DroppedOverflow`]).
    pub max_in_flight: usize,
    /// Trace records kept for inspection (the hash covers all of them).
    pub trace_records: usize,
    /// Drain rounds per node and step before the simulator gives up on a node that never goes quiet.
    /// After four times as many steps in a row at one instant (nodes that answer each other over links
    /// without delay, for ever), what is due then waits until the next thing due later, at most a
    /// millisecond on, so that a run still reaches its limit.
    pub max_drain_rounds: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 100_000,
            trace_records: 100_000,
            max_drain_rounds: 1_000,
        }
    }
}

/// A network of endpoints on a virtual clock. See the [module documentation](self).
pub struct Simulation {
    epoch: Instant,
    now: Instant,
    seed: u64,
    limits: Limits,
    nodes: Vec<Node>,
    links: BTreeMap<(NodeId, NodeId), Link>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    schedule: BinaryHeap<Reverse<(Instant, u64, Action)>>,
    seq: u64,
    /// An instant and the steps taken in a row at it: beyond a bound (see [`Limits::max_drain_rounds`])
    /// the next step moves the clock on (see `Simulation::next_instant_past_now`), so that nodes
    /// answering each other over links without delay cannot hold it for ever.
    instant_steps: (Instant, usize),
    trace: Trace,
    buf: Vec<u8>,
    /// Datagrams a node sent in one round, reused between rounds.
    out: Vec<(SocketAddr, u8, BytesMut)>,
    /// Received datagrams are handed over in batches (see [`Simulation::set_batching`]).
    batching: bool,
    /// With batching on, the datagrams due in one step and the bookkeeping that groups them, reused
    /// between steps.
    batch_scratch: BatchScratch,
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulation")
            .field("seed", &self.seed)
            .field("elapsed", &self.elapsed())
            .field("nodes", &self.nodes.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// An empty simulation whose clock starts at `epoch`, with every random choice derived from `seed`.
    pub fn new(epoch: Instant, seed: u64) -> Self {
        Self::with_limits(epoch, seed, Limits::default())
    }

    /// Like [`Simulation::new`], with explicit memory limits.
    pub fn with_limits(epoch: Instant, seed: u64, limits: Limits) -> Self {
        Self {
            epoch,
            now: epoch,
            seed,
            limits,
            nodes: Vec::new(),
            links: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            schedule: BinaryHeap::new(),
            seq: 0,
            instant_steps: (epoch, 0),
            trace: Trace::new(limits.trace_records),
            buf: Vec::new(),
            out: Vec::new(),
            batching: false,
            batch_scratch: BatchScratch::default(),
        }
    }

    /// The seed everything derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.epoch)
    }

    /// Turns receive batching on or off; it is off in a new simulation.
    ///
    /// Off, every datagram that arrives is handed to its node alone ([`Engine::handle_datagram_with_ecn`]).
    /// On, the datagrams that arrive at a node in one step are handed over as a socket's receive offload
    /// (GRO) would: each run of them that follow one another in the node's order of arrival, come from
    /// one address with one ECN codepoint and are of one size (the last of a run may be shorter) is
    /// copied into one buffer and handed over at once through [`Engine::handle_batch`], for quicsand
    /// nodes [`Endpoint::handle_batch`]. A run ends at 64 datagrams, or before it would pass 65,535
    /// bytes; a datagram alone is handed over alone, as with batching off.
    ///
    /// Batching changes how datagrams reach a node, not which arrive or when: the trace records the same
    /// datagrams with the same fates, and two runs with the same seed and batching on repeat each other.
    /// Each node gets its datagrams in the order they arrived, and datagrams that form no batch go to
    /// their nodes in the order they would with batching off, across nodes too; a batch's later
    /// datagrams go with its first, ahead of what other nodes receive in between.
    /// [`Trace::batches`] and [`Trace::batched`] count what was handed over in batches.
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
    }

    /// Whether receive batching is on (see [`Simulation::set_batching`]).
    pub fn batching(&self) -> bool {
        self.batching
    }

    /// The trace so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Adds a node at `addr` with default endpoint settings; a `server` configuration makes it accept
    /// connections.
    pub fn add_node(&mut self, addr: SocketAddr, server: Option<ServerConfig>, app: Box<dyn App>) -> NodeId {
        self.add_node_with(addr, EndpointConfig::default(), server, app)
    }

    /// Adds a node with explicit endpoint settings; their `seed` is replaced by one derived from the
    /// simulation's seed and the node's index.
    pub fn add_node_with(
        &mut self,
        addr: SocketAddr,
        mut config: EndpointConfig,
        server: Option<ServerConfig>,
        app: Box<dyn App>,
    ) -> NodeId {
        config.seed = crate::rng::seed_from_u64(self.next_node_seed());
        let node = EndpointNode::new(Endpoint::new(config, server), app);
        self.push_node(addr, Box::new(node))
    }

    /// Adds a node run by another engine (see [`Engine`]). `make` gets the node's seed, derived from the
    /// simulation's seed and the node's index as for endpoint nodes, and must draw all the engine's
    /// randomness from it.
    pub fn add_engine(&mut self, addr: SocketAddr, make: impl FnOnce(u64) -> Box<dyn Engine>) -> NodeId {
        let engine = make(self.next_node_seed());
        self.push_node(addr, engine)
    }

    /// The seed of the node added next.
    fn next_node_seed(&self) -> u64 {
        derive_seed(self.seed, 1 + self.nodes.len() as u64, 0)
    }

    fn push_node(&mut self, addr: SocketAddr, engine: Box<dyn Engine>) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node {
            engine,
            addr,
            started: false,
            poked: false,
            stuck_at: None,
        });
        id
    }

    /// Joins `from` to `to` with a directed link (replacing any link between them in that direction).
    ///
    /// # Panics
    ///
    /// If `config` is invalid ([`LinkConfig::validate`]): a probability that is NaN, negative or above 1.
    pub fn add_link(&mut self, from: NodeId, to: NodeId, config: LinkConfig) {
        if let Err(e) = config.validate() {
            panic!("invalid link configuration from {from:?} to {to:?}: {e}");
        }
        let seed = derive_seed(self.seed, 1 + from.0 as u64, 1 + to.0 as u64);
        self.links.insert((from, to), Link::new(config, seed));
    }

    /// Joins `a` and `b` with a link of `config` in each direction.
    pub fn add_duplex_link(&mut self, a: NodeId, b: NodeId, config: LinkConfig) {
        self.add_link(a, b, config.clone());
        self.add_link(b, a, config);
    }

    /// The configuration of the link from `from` to `to`, to change it between steps. The link panics at
    /// its next datagram if the change leaves it invalid ([`LinkConfig::validate`]).
    pub fn link_config_mut(&mut self, from: NodeId, to: NodeId) -> Option<&mut LinkConfig> {
        self.links.get_mut(&(from, to)).map(Link::config_mut)
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.seq += 1;
        self.schedule
            .push(Reverse((later(self.epoch, at), self.seq, action)));
    }

    /// Takes the link from `from` to `to` down at `at` (since the epoch): datagrams sent on it while it is
    /// down are dropped; those already on the way still arrive.
    pub fn schedule_link_down(&mut self, from: NodeId, to: NodeId, at: Duration) {
        self.schedule(at, Action::LinkUp { from, to, up: false });
    }

    /// Brings the link from `from` to `to` back up at `at` (since the epoch).
    pub fn schedule_link_up(&mut self, from: NodeId, to: NodeId, at: Duration) {
        self.schedule(at, Action::LinkUp { from, to, up: true });
    }

    /// Takes both directions between `a` and `b` down at `at` for `length`.
    pub fn schedule_blackout(&mut self, a: NodeId, b: NodeId, at: Duration, length: Duration) {
        for (from, to) in [(a, b), (b, a)] {
            self.schedule_link_down(from, to, at);
            self.schedule_link_up(from, to, at.saturating_add(length));
        }
    }

    /// Moves `node` to `addr` at `at` (since the epoch), as a NAT rebinding does: from then on its
    /// datagrams come from `addr`, and datagrams to its old address find no node and are dropped.
    pub fn schedule_rebind(&mut self, node: NodeId, at: Duration, addr: SocketAddr) {
        self.schedule(at, Action::Rebind { node, addr });
    }

    /// A node's endpoint (`None` for a node run by another [`Engine`]). Commands given to it are picked
    /// up at the next step, at the current virtual time.
    pub fn endpoint(&mut self, node: NodeId) -> Option<&mut Endpoint> {
        let node = self.nodes.get_mut(node.0)?;
        node.poked = true;
        Some(&mut node.endpoint_node_mut()?.endpoint)
    }

    /// A node's current address.
    pub fn addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.nodes.get(node.0).map(|n| n.addr)
    }

    /// A node's app, if it is a `T` (`None` for a node run by another [`Engine`]).
    pub fn app<T: App + 'static>(&self, node: NodeId) -> Option<&T> {
        (*self.nodes.get(node.0)?.endpoint_node()?.app)
            .as_any()
            .downcast_ref()
    }

    /// A node's app, mutably, if it is a `T`. Commands given to the endpoint through it are picked up at
    /// the next step, at the current virtual time.
    pub fn app_mut<T: App + 'static>(&mut self, node: NodeId) -> Option<&mut T> {
        let node = self.nodes.get_mut(node.0)?;
        node.poked = true;
        (*node.endpoint_node_mut()?.app).as_any_mut().downcast_mut()
    }

    /// A node's engine, if it is a `T` (added with [`Simulation::add_engine`]).
    pub fn engine<T: Engine + 'static>(&self, node: NodeId) -> Option<&T> {
        (*self.nodes.get(node.0)?.engine).as_any().downcast_ref()
    }

    /// A node's engine, mutably, if it is a `T`. Commands given to it are picked up at the next step.
    pub fn engine_mut<T: Engine + 'static>(&mut self, node: NodeId) -> Option<&mut T> {
        let node = self.nodes.get_mut(node.0)?;
        node.poked = true;
        (*node.engine).as_any_mut().downcast_mut()
    }

    /// The earliest instant at which something is due.
    fn next_instant(&mut self) -> Option<Instant> {
        let mut next = self.in_flight.peek().map(|Reverse(d)| d.at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        consider(self.schedule.peek().map(|Reverse((t, _, _))| *t));
        for node in &mut self.nodes {
            let timeout = node.engine.poll_timeout();
            match node.stuck_at {
                Some((at, steps)) if steps >= STUCK_STEPS && timeout.is_some_and(|t| t <= at) => {
                    consider(Some(later(at, STUCK_TICK)));
                }
                _ => consider(timeout),
            }
            if !node.started {
                consider(Some(self.now));
            }
        }
        next
    }

    /// The earliest instant after now at which something is due, or now + [`STUCK_TICK`] if that is
    /// sooner: where the clock goes when too many steps in a row found something due now. What was due
    /// now waits until then; what is due before then is not held back.
    fn next_instant_past_now(&mut self) -> Instant {
        let now = self.now;
        let mut next = later(now, STUCK_TICK);
        let in_flight = self.in_flight.iter().map(|Reverse(d)| d.at);
        let scheduled = self.schedule.iter().map(|Reverse((t, _, _))| *t);
        for t in in_flight.chain(scheduled) {
            if t > now {
                next = next.min(t);
            }
        }
        for node in &mut self.nodes {
            if let Some(t) = node.engine.poll_timeout().filter(|t| *t > now) {
                next = next.min(t);
            }
        }
        next
    }

    /// Advances the clock to the next delivery, deadline, wake-up or scheduled action and handles
    /// everything due then. Returns false, leaving the clock where it is, when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.step_before(None)
    }

    /// Like [`Simulation::step`], but never moves the clock past `deadline`: when the next thing lies
    /// beyond it, the clock stops at `deadline` and this returns false.
    pub fn step_before(&mut self, deadline: Option<Instant>) -> bool {
        // Commands the caller gave a node between steps go out at the time they were given.
        for i in 0..self.nodes.len() {
            if self.nodes.get(i).is_some_and(|n| n.poked) {
                self.service(NodeId(i));
            }
        }
        let Some(mut next) = self.next_instant() else {
            return false;
        };
        let bound = self
            .limits
            .max_drain_rounds
            .max(1)
            .saturating_mul(STUCK_STEPS as usize);
        let (at, steps) = self.instant_steps;
        if next <= self.now && at == self.now && steps >= bound {
            tracing::warn!("simulation still busy after {bound} steps at one instant");
            next = self.next_instant_past_now();
        }
        if let Some(d) = deadline.filter(|d| next > *d) {
            self.now = self.now.max(d);
            return false;
        }
        self.now = self.now.max(next);
        self.instant_steps = match self.instant_steps {
            (at, steps) if at == self.now => (at, steps.saturating_add(1)),
            _ => (self.now, 1),
        };
        let now = self.now;
        while self.schedule.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
            if let Some(Reverse((_, _, action))) = self.schedule.pop() {
                self.apply(action);
            }
        }
        if self.batching {
            self.deliver_batched();
        } else {
            while let Some(d) = self.pop_deliverable() {
                if let Some(node) = self.nodes.get_mut(d.to.0) {
                    let ecn = EcnCodepoint::from_bits(d.ecn);
                    node.engine.handle_datagram_with_ecn(now, d.from, ecn, d.payload);
                }
            }
        }
        for i in 0..self.nodes.len() {
            self.service(NodeId(i));
        }
        true
    }

    /// The next datagram due now that finds its node. A node that moved (a NAT rebinding) no longer
    /// receives at its old address: a datagram sent there, recorded as delivered when it was sent, finds
    /// no node after all, and is recorded so on the way, in the order of arrival.
    fn pop_deliverable(&mut self) -> Option<InFlight> {
        while self.in_flight.peek().is_some_and(|Reverse(d)| d.at <= self.now) {
            let Reverse(d) = self.in_flight.pop()?;
            if self.nodes.get(d.to.0).is_some_and(|n| n.addr == d.to_addr) {
                return Some(d);
            }
            self.trace
                .undeliver(d.sent, d.payload.len(), d.corrupted, d.from, d.to_addr);
        }
        None
    }

    /// Hands the datagrams due now to their nodes in batches (see [`Simulation::set_batching`]).
    fn deliver_batched(&mut self) {
        let now = self.now;
        let mut scratch = std::mem::take(&mut self.batch_scratch);
        let BatchScratch {
            due,
            next,
            last,
            taken,
        } = &mut scratch;
        while let Some(d) = self.pop_deliverable() {
            due.push(d);
        }
        // `next[i]`: the index of the next datagram due to the same node as datagram `i`.
        next.clear();
        next.resize(due.len(), usize::MAX);
        last.clear();
        last.resize(self.nodes.len(), usize::MAX);
        for (i, d) in due.iter().enumerate().rev() {
            if let (Some(n), Some(l)) = (next.get_mut(i), last.get_mut(d.to.0)) {
                *n = *l;
                *l = i;
            }
        }
        taken.clear();
        taken.resize(due.len(), false);
        // In the order of arrival, each datagram not handed over yet starts a run, which takes its
        // node's next datagrams while they match; datagrams to other nodes in between do not end it.
        // Each node gets its datagrams in the order they arrived, and without batches every datagram
        // goes exactly when it would with batching off: nodes may share state (one TLS randomness
        // source, say), so the order across nodes matters too. A batch hands its later datagrams over
        // with its first.
        for start in 0..due.len() {
            if taken.get(start).copied().unwrap_or(true) {
                continue;
            }
            let Some(first) = due.get(start) else { break };
            let (to, from, ecn, stride) = (first.to, first.from, first.ecn, first.payload.len());
            let (mut end, mut count, mut total) = (start, 1, stride);
            let mut j = next.get(start).copied().unwrap_or(usize::MAX);
            while let Some(d) = due.get(j) {
                let len = d.payload.len();
                // GRO joins datagrams of one flow and one size; the last of a run may be shorter.
                let joins = stride > 0
                    && len > 0
                    && (d.from, d.ecn) == (from, ecn)
                    && due.get(end).is_some_and(|p| p.payload.len() == stride)
                    && len <= stride
                    && count < MAX_BATCH_DATAGRAMS
                    && total + len <= MAX_BATCH_BYTES;
                if !joins {
                    break;
                }
                if let Some(t) = taken.get_mut(j) {
                    *t = true;
                }
                (end, count, total) = (j, count + 1, total + len);
                j = next.get(j).copied().unwrap_or(usize::MAX);
            }
            let Some(node) = self.nodes.get_mut(to.0) else {
                continue;
            };
            let ecn = EcnCodepoint::from_bits(ecn);
            if count == 1 {
                let payload = due.get_mut(start).map(|d| std::mem::take(&mut d.payload));
                node.engine
                    .handle_datagram_with_ecn(now, from, ecn, payload.unwrap_or_default());
                continue;
            }
            let mut batch = BytesMut::with_capacity(total);
            let mut i = start;
            while let Some(d) = due.get(i) {
                batch.extend_from_slice(&d.payload);
                if i == end {
                    break;
                }
                i = next.get(i).copied().unwrap_or(usize::MAX);
            }
            self.trace.batches += 1;
            self.trace.batched += count as u64;
            node.engine.handle_batch(now, from, ecn, batch, stride);
        }
        due.clear();
        self.batch_scratch = scratch;
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::LinkUp { from, to, up } => {
                if let Some(link) = self.links.get_mut(&(from, to)) {
                    link.up = up;
                }
            }
            Action::Rebind { node, addr } => {
                if let Some(n) = self.nodes.get_mut(node.0) {
                    n.addr = addr;
                }
            }
        }
    }

    /// Runs one node's due timers and wake-up and drains it, following the drive rule.
    fn service(&mut self, id: NodeId) {
        let now = self.now;
        let epoch = self.epoch;
        let mut out = std::mem::take(&mut self.out);
        for _ in 0..self.limits.max_drain_rounds.max(1) {
            let Some(node) = self.nodes.get_mut(id.0) else {
                break;
            };
            let ctx = EngineCtx {
                node: id,
                addr: node.addr,
                now,
                epoch,
            };
            let mut acted = false;
            node.poked = false;
            if !node.started {
                node.started = true;
                node.engine.start(&ctx);
                acted = true;
            }
            if node.engine.poll_timeout().is_some_and(|t| t <= now) {
                node.engine.handle_timeout(&ctx);
                acted = true;
            }
            // 1. Drain transmits.
            while let Some(t) = node.engine.poll_transmit(now, &mut self.buf) {
                let ecn = t.ecn.map_or(0, EcnCodepoint::bits);
                out.extend(
                    t.datagrams(&self.buf)
                        .map(|d| (t.destination, ecn, BytesMut::from(d))),
                );
                acted = true;
            }
            // 2. Drain events into the app.
            let trace = &mut self.trace;
            let at = now - epoch;
            acted |= node
                .engine
                .poll_events(&ctx, &mut |h, e| trace.record_event(at, id, h, e));
            for (to, ecn, payload) in out.drain(..) {
                self.send(id, ctx.addr, to, ecn, payload);
            }
            // 3. Loop while something happened: app calls may have queued output or armed a deadline
            // that already passed.
            if !acted {
                if let Some(node) = self.nodes.get_mut(id.0) {
                    node.stuck_at = None;
                }
                self.out = out;
                return;
            }
        }
        if let Some(node) = self.nodes.get_mut(id.0) {
            let steps = match node.stuck_at {
                Some((at, steps)) if at == now => steps.saturating_add(1),
                _ => 1,
            };
            node.stuck_at = Some((now, steps));
        }
        self.out = out;
        tracing::warn!(
            node = id.0,
            "simulated node did not go quiet within the drain bound"
        );
    }

    /// Offers one datagram to the network.
    fn send(&mut self, from_node: NodeId, from: SocketAddr, to: SocketAddr, ecn: u8, mut payload: BytesMut) {
        let at = self.now - self.epoch;
        let size = payload.len();
        let record = |trace: &mut Trace, fate| {
            trace.record(TraceRecord::Datagram {
                at,
                size,
                from,
                to,
                fate,
            })
        };
        let Some(to_node) = self.nodes.iter().position(|n| n.addr == to).map(NodeId) else {
            return record(&mut self.trace, Fate::DroppedNoRoute);
        };
        let Some(link) = self.links.get_mut(&(from_node, to_node)) else {
            return record(&mut self.trace, Fate::DroppedNoRoute);
        };
        let offer = link.offer(self.now, size, ecn);
        if offer.ecn == 0b11 && ecn != 0b11 {
            self.trace.ce_marked += 1;
        }
        let Fate::Delivered { after, .. } = offer.fate else {
            return record(&mut self.trace, offer.fate);
        };
        if let Some(bit) = offer.flip {
            if let Some(b) = payload.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
        }
        match offer.copy {
            None => self.enqueue(to_node, from, to, after, (offer.fate, offer.ecn), payload),
            Some(copy_after) => {
                self.enqueue(to_node, from, to, after, (offer.fate, offer.ecn), payload.clone());
                // The copy of a corrupted datagram is the corrupted one too (corruption happens first).
                let fate = Fate::Delivered {
                    after: copy_after,
                    corrupted: offer.flip.is_some(),
                    duplicate: true,
                };
                self.enqueue(to_node, from, to, copy_after, (fate, offer.ecn), payload);
            }
        }
    }

    /// Puts one copy of a datagram on its way, to arrive `after` from now, unless the in-flight bound
    /// is reached; records its fate.
    fn enqueue(
        &mut self,
        to_node: NodeId,
        from: SocketAddr,
        to: SocketAddr,
        after: Duration,
        (fate, ecn): (Fate, u8),
        payload: BytesMut,
    ) {
        let fate = if self.in_flight.len() >= self.limits.max_in_flight {
            Fate::DroppedOverflow
        } else {
            fate
        };
        self.trace.record(TraceRecord::Datagram {
            at: self.now - self.epoch,
            size: payload.len(),
            from,
            to,
            fate,
        });
        if !fate.is_delivered() {
            return;
        }
        self.seq += 1;
        self.in_flight.push(Reverse(InFlight {
            at: later(self.now, after),
            seq: self.seq,
            to: to_node,
            to_addr: to,
            from,
            sent: self.now - self.epoch,
            corrupted: matches!(fate, Fate::Delivered { corrupted: true, .. }),
            ecn,
            payload,
        }));
    }

    /// Steps until `done` holds or `limit` of virtual time passes; returns whether `done` held. The clock
    /// ends at the limit unless `done` held or everything went quiet before.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Simulation) -> bool) -> bool {
        let deadline = later(self.now, limit);
        loop {
            if done(self) {
                return true;
            }
            if !self.step_before(Some(deadline)) {
                return done(self);
            }
        }
    }

    /// Steps until nothing is left to happen or `limit` of virtual time passes (then the clock is at the
    /// limit).
    pub fn run(&mut self, limit: Duration) {
        let deadline = later(self.now, limit);
        while self.step_before(Some(deadline)) {}
    }
}
