//! A randomized many-connection soak test on the deterministic simulator (`quicsand::sim`).
//!
//! Each seed draws a whole scenario: one quicsand server and 2 to 8 clients (quicsand's `BulkSender`, or
//! quinn-proto through `tests/common/quinn_sim.rs`), each on its own link to the server with its own
//! impairments (delay, jitter, loss, bursty loss, duplication, reordering, corruption, a bandwidth
//! bottleneck with a drop-tail queue, a path MTU below the probes), some starting late, some moved to a
//! new address mid-transfer (NAT rebinding), some cut off by a blackout shorter than the idle timeout.
//! The server draws its Retry policy, its accept policy (accept all, or ask the application, which
//! accepts after a delay or refuses chosen clients), a small `max_incoming_handshakes`, small stream and
//! connection windows with or without auto-tuning, few concurrent streams, frequent key updates; the
//! clients draw their own transport settings. Even seeds run with the simulator's receive batching on
//! (`Simulation::set_batching`): datagrams that arrive together reach the server and the quicsand
//! clients through `Endpoint::handle_batch`, as a socket's receive offload hands them over.
//!
//! What each seed must show:
//! - nothing panics;
//! - every client that is not refused completes its transfer (every stream acknowledged, the server
//!   read every byte of every stream and each byte matches the pattern) and then closes; a refused client
//!   ends with CONNECTION_REFUSED. The one other end accepted is a client starved at the server's
//!   handshake limit (see below); the scenarios avoid what may legitimately fail otherwise;
//! - once the clients closed and the closing and draining periods passed, no endpoint holds a
//!   connection;
//! - the counters make sense: the server saw each client once (see below), accepted or refused each as
//!   asked, sent Retries only as its policy says, issued no more NEW_TOKEN tokens than connections and
//!   moves to a new IP, dropped no more datagrams than it received, and (without corruption) sent no
//!   Version Negotiation; each quicsand client's connection sent exactly its bytes once, lost no more
//!   packets than it sent, measured no RTT below the path's propagation delay, sends no datagram larger
//!   than its path carries, and, unless it completed, received no stateless reset.
//!
//! What the scenarios steer around, and what they allow, with the reason (each found by this test):
//! - a blackout is at most a quarter of the idle timeout;
//! - a client is rebound only once the server's handshake completed: before that a server drops what
//!   comes from a new address (RFC 9000 §9 lets it), and the handshake cannot finish; a quicsand client
//!   also waits for its own handshake to be confirmed (QUIC relies on a stable address until then);
//! - a rebound client sends keep-alives: one that is quiet when it moves (blocked by flow control with
//!   nothing in flight) never shows the server its new address, the server's window updates go to the
//!   old one, and both sides wait for the idle timeout;
//! - clients announce a 60 s idle timeout (the server's shorter one is the one in effect once
//!   connected) and handshake timeout, so that they outlast a wait for a handshake slot; still, clients
//!   that start together retransmit their Initials together and each round lets in one client per free
//!   slot, so under `max_incoming_handshakes` below the number of clients the last ones may time out
//!   without ever getting a connection: counted as starved, not failed;
//! - a refused client whose refusal was lost comes back after the closing period and is refused again;
//!   and with Retry only while busy (`WhenHandshakesExceed`), an Initial retransmitted before the Retry
//!   arrived may start a connection of its own beside the one made with the token, which then ends by
//!   itself: the server may see such a client more than once;
//! - a client that times out is accepted when a replay of the seed with the whole trace shows that
//!   every datagram the server sent it after the last one that arrived was lost to the link (after a
//!   blackout the PTOs have backed off and a few losses in a row reach the idle timeout), or shows a
//!   known cause outside the quicsand server (`Run::known_elsewhere`): a quinn-proto client whose
//!   Finished was lost and which never sent it again; a quinn-proto client that stopped answering the
//!   server's packets (it holds even its ACKs while its congestion window is full); one rebound before its
//!   handshake was confirmed (it waits for a HANDSHAKE_DONE that goes to the address it left, and sends
//!   nothing from the new one that moves the connection) (a quicsand client whose Initial probes with
//!   the ClientHello were all lost, a PING-only Initial probed beside each being useless to a server with
//!   no connection yet, was excused too, until both probes carried the ClientHello);
//! - quinn-proto clients get no corruption on their links: quinn-proto 0.11 counts a Retry (or a
//!   Version Negotiation) as authenticated before checking it, so after one corrupted Retry, or the
//!   Version Negotiation answering a corrupted Initial, it ignores every later Retry.
//!
//! Environment:
//! - default: seeds 1 to 40 (about a second in the test profile);
//! - `QUICSAND_SOAK_SEEDS=A..B` (or `A..=B`, or one seed `A`): those seeds instead, on every core. For
//!   many seeds use the release profile: `QUICSAND_SOAK_SEEDS=1..2001 cargo test --release --test soak`;
//! - `QUICSAND_SOAK_BATCHING=on` (or `off`): every seed with receive batching on (or off), to tell
//!   whether a failure depends on it.
//!
//! A failing seed is named in the message with what failed and the scenario it drew; the same seed
//! draws the same scenario and replays the run.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quicsand::crypto::tls;
use quicsand::sim::{
    App, BulkSender, Engine, EngineCtx, GilbertElliott, Limits, LinkConfig, NodeCtx, NodeId, Simulation, Sink,
};
use quicsand::{
    AcceptPolicy, ClientConfig, CongestionAlgorithm, ConnectionError, ConnectionHandle, ConnectionStats,
    EndpointStats, Event, MtuDiscoveryConfig, RetryPolicy, ServerConfig, StreamEvent, StreamsConfig,
    Transmit, TransportConfig,
};
use rustls::pki_types::PrivateKeyDer;

use common::quinn_sim::QuinnPeer;
use common::{LostReason, Node as _};

const ALPN: &[u8] = b"sim";
const SEEDS_ENV: &str = "QUICSAND_SOAK_SEEDS";
const BATCHING_ENV: &str = "QUICSAND_SOAK_BATCHING";
/// The seeds of a plain `cargo test`.
const DEFAULT_SEEDS: std::ops::Range<u64> = 1..41;
/// Virtual time a seed may take before it counts as hung.
const BOUND: Duration = Duration::from_secs(300);
/// The wire code of CONNECTION_REFUSED (RFC 9000 §20.1).
const CONNECTION_REFUSED: u64 = 0x2;

const SERVER_ADDR: &str = "10.0.0.1:4433";

/// Wall-clock time, for reporting only.
#[allow(clippy::disallowed_methods)]
fn wall_now() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The scenario's random choices: SplitMix64 over the seed, so a seed always draws the same scenario.
struct Draw(u64);

impl Draw {
    fn new(seed: u64, stream: u64) -> Self {
        Draw(seed ^ stream.wrapping_mul(0xa076_1d64_78bd_642f))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `lo..=hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        ms(self.range(lo, hi))
    }

    fn congestion(&mut self) -> CongestionAlgorithm {
        if self.chance(0.5) {
            CongestionAlgorithm::Cubic
        } else {
            CongestionAlgorithm::NewReno
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Quicsand,
    Quinn,
}

/// What the server's application does with incoming connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    /// `AcceptPolicy::Accept`.
    All,
    /// `AcceptPolicy::Ask`: accept each after a delay drawn up to this, or refuse the clients chosen
    /// for it.
    Ask { max_delay: Duration },
}

#[derive(Debug, Clone)]
struct ServerPlan {
    retry: RetryPolicy,
    accepting: Accepting,
    max_incoming_handshakes: usize,
    transport: TransportConfig,
}

#[derive(Debug, Clone)]
struct ClientPlan {
    kind: Kind,
    addr: SocketAddr,
    /// When the client connects, since the epoch.
    start: Duration,
    total: u64,
    streams: usize,
    /// Client to server.
    up: LinkConfig,
    /// Server to client.
    down: LinkConfig,
    /// Moves this long after its handshake completed, to this address.
    rebind: Option<(Duration, SocketAddr)>,
    /// Both directions of its link go down at this time (since the epoch) for this long.
    blackout: Option<(Duration, Duration)>,
    /// The server's application refuses it.
    refused: bool,
    /// quicsand clients: the transport settings.
    transport: TransportConfig,
}

#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    /// The simulator hands received datagrams over in batches (`Simulation::set_batching`): on for even
    /// seeds, unless `QUICSAND_SOAK_BATCHING` says otherwise.
    batching: bool,
    server: ServerPlan,
    clients: Vec<ClientPlan>,
}

/// Whether `seed` runs with receive batching: `QUICSAND_SOAK_BATCHING` (`on` or `off`) if set, else
/// on for even seeds.
fn batching(seed: u64) -> bool {
    match std::env::var(BATCHING_ENV).as_deref().map(str::trim) {
        Ok("on") => true,
        Ok("off") => false,
        Ok(other) => panic!("{BATCHING_ENV}={other}: expected on or off"),
        Err(_) => seed % 2 == 0,
    }
}

/// The idle timeout the clients announce: the server's, which is never longer, is the one in effect.
/// During the handshake, where only a client's own applies, it must outlast the wait for a free slot
/// under a small `max_incoming_handshakes`.
const CLIENT_IDLE: Duration = Duration::from_secs(60);

fn draw_link(d: &mut Draw) -> LinkConfig {
    let mut link = LinkConfig {
        delay: d.ms(1, 80),
        ..LinkConfig::default()
    };
    if d.chance(0.6) {
        link.loss = d.unit() * 0.10;
    }
    if d.chance(0.1) {
        link.gilbert_elliott = Some(GilbertElliott {
            p_good_to_bad: 0.01 + d.unit() * 0.02,
            p_bad_to_good: 0.3 + d.unit() * 0.4,
            loss_bad: 0.5,
            loss_good: 0.0,
        });
    }
    if d.chance(0.3) {
        link.duplicate = d.unit() * 0.05;
    }
    if d.chance(0.3) {
        link.reorder = d.unit() * 0.10;
        link.reorder_delay = d.ms(1, 30);
    }
    if d.chance(0.3) {
        link.jitter = d.ms(0, 5);
    }
    if d.chance(0.1) {
        link.corrupt = d.unit() * 0.005;
    }
    if d.chance(0.5) {
        let bps = d.range(1, 50) * 1_000_000;
        let rtt = link.delay * 2;
        let bdp = (u128::from(bps) * rtt.as_nanos() / 8_000_000_000) as usize;
        let multiple = [0.5, 1.0, 2.0][d.range(0, 2) as usize];
        link.bandwidth_bps = Some(bps);
        link.queue_bytes = ((bdp as f64 * multiple) as usize).max(6_000);
    }
    if d.chance(0.2) {
        link.max_datagram_size = d.range(1200, 1500) as usize;
    }
    link
}

impl Plan {
    fn draw(seed: u64) -> Plan {
        let mut d = Draw::new(seed, 0);
        let idle = [ms(8_000), ms(15_000), ms(30_000)][d.range(0, 2) as usize];

        let mut streams = StreamsConfig::default();
        if d.chance(0.4) {
            streams.max_concurrent_uni_streams = d.range(1, 3);
        }
        if d.chance(0.5) {
            streams.stream_receive_window = d.range(1200, 32 * 1024);
            streams.receive_window = d.range(4096, 64 * 1024);
            if d.chance(0.5) {
                streams.max_stream_receive_window = 0;
                streams.max_receive_window = 0;
            }
        }
        let mut transport = TransportConfig {
            max_idle_timeout: Some(idle),
            congestion: d.congestion(),
            streams,
            ..TransportConfig::default()
        };
        if d.chance(0.3) {
            transport.key_update_interval = Some(d.range(16, 500));
        }
        if d.chance(0.3) {
            transport.mtu_discovery = None;
        }
        if d.chance(0.3) {
            transport.ack_eliciting_threshold = d.range(1, 10);
            transport.max_ack_delay = d.ms(1, 100);
        }
        if d.chance(0.3) {
            transport.active_connection_id_limit = d.range(2, 8);
        }
        let retry = match d.range(0, 2) {
            0 => RetryPolicy::Never,
            1 => RetryPolicy::Always,
            _ => RetryPolicy::WhenHandshakesExceed(d.range(0, 3) as usize),
        };
        let accepting = if d.chance(0.6) {
            Accepting::All
        } else {
            Accepting::Ask {
                max_delay: d.ms(0, 300),
            }
        };
        let max_incoming_handshakes = if d.chance(0.6) {
            4096
        } else {
            d.range(1, 4) as usize
        };
        let server = ServerPlan {
            retry,
            accepting,
            max_incoming_handshakes,
            transport,
        };

        let n = d.range(2, 8) as usize;
        let clients = (0..n)
            .map(|i| {
                let mut d = Draw::new(seed, 1 + i as u64);
                let kind = if d.chance(0.4) {
                    Kind::Quinn
                } else {
                    Kind::Quicsand
                };
                let ip = format!("10.0.{}.{}", 1 + i / 200, 1 + i % 200);
                let addr: SocketAddr = format!("{ip}:{}", 40_000 + i).parse().unwrap();
                let start = if i == 0 || d.chance(0.5) {
                    Duration::ZERO
                } else {
                    d.ms(0, 2_000)
                };
                let total = match d.range(0, 19) {
                    0 => 0,
                    1..=4 => d.range(1, 2_000),
                    5..=14 => d.range(2_000, 100_000),
                    _ => d.range(100_000, 400_000),
                };
                let max_streams = match kind {
                    // The quinn-proto sender opens all its streams at once and expects the credit.
                    Kind::Quinn => server.transport.streams.max_concurrent_uni_streams.min(4),
                    Kind::Quicsand => 4,
                };
                let streams = d.range(1, max_streams) as usize;
                let mut up = draw_link(&mut d);
                let mut down = draw_link(&mut d);
                if kind == Kind::Quinn {
                    // quinn-proto 0.11 counts a Retry, or a Version Negotiation, as an authenticated
                    // packet before checking it (`on_packet_authenticated`; then `total_authed_packets
                    // > 1` discards every later Retry): after one corrupted Retry, or the Version
                    // Negotiation that answers an Initial whose version a flipped bit changed, it
                    // ignores the valid Retries and times out. Its links carry no corruption.
                    up.corrupt = 0.0;
                    down.corrupt = 0.0;
                }
                let rebind = d.chance(0.25).then(|| {
                    let to = if d.chance(0.5) {
                        format!("{ip}:{}", 50_000 + i)
                    } else {
                        format!("10.1.{}.{}:{}", 1 + i / 200, 1 + i % 200, 40_000 + i)
                    };
                    (d.ms(0, 1_500), to.parse().unwrap())
                });
                let blackout = d.chance(0.2).then(|| {
                    let longest = idle.as_millis() as u64 / 4;
                    (start + d.ms(0, 3_000), d.ms(100, longest))
                });
                let refused = matches!(accepting, Accepting::Ask { .. }) && d.chance(0.15);
                let mut transport = TransportConfig {
                    max_idle_timeout: Some(CLIENT_IDLE),
                    handshake_timeout: CLIENT_IDLE,
                    congestion: d.congestion(),
                    ..TransportConfig::default()
                };
                if d.chance(0.3) {
                    transport.key_update_interval = Some(d.range(16, 500));
                }
                if d.chance(0.3) {
                    transport.mtu_discovery = None;
                } else if d.chance(0.3) {
                    transport.mtu_discovery = Some(MtuDiscoveryConfig {
                        upper_bound: d.range(1200, 1500) as u16,
                        ..MtuDiscoveryConfig::default()
                    });
                }
                if d.chance(0.2) || rebind.is_some() {
                    // A client that goes quiet (blocked by flow control with nothing in flight) and is
                    // then rebound never shows the server its new address; the server's window
                    // updates go to the old one, and both wait for the idle timeout. Keep-alives
                    // (RFC 9000 §10.1.2) are what keeps a client behind a NAT talking.
                    transport.keep_alive_interval = Some(d.ms(100, 2_000));
                }
                if d.chance(0.3) {
                    transport.initial_rtt = d.ms(10, 1_000);
                }
                if d.chance(0.3) {
                    transport.streams.send_buffer = d.range(1200, 16 * 1024) as usize;
                }
                if d.chance(0.3) {
                    transport.ack_eliciting_threshold = d.range(1, 10);
                    transport.max_ack_delay = d.ms(1, 100);
                }
                if d.chance(0.3) {
                    transport.active_connection_id_limit = d.range(2, 8);
                }
                ClientPlan {
                    kind,
                    addr,
                    start,
                    total,
                    streams,
                    up,
                    down,
                    rebind,
                    blackout,
                    refused,
                    transport,
                }
            })
            .collect();
        Plan {
            seed,
            batching: batching(seed),
            server,
            clients,
        }
    }

    fn any_corruption(&self) -> bool {
        self.clients
            .iter()
            .any(|c| c.up.corrupt > 0.0 || c.down.corrupt > 0.0)
    }
}

/// A link's impairments, only those set.
fn describe_link(l: &LinkConfig) -> String {
    let mut out = format!("delay {:?}", l.delay);
    if !l.jitter.is_zero() {
        out += &format!(" jitter {:?}", l.jitter);
    }
    if l.loss > 0.0 {
        out += &format!(" loss {:.2}%", l.loss * 100.0);
    }
    if let Some(ge) = &l.gilbert_elliott {
        out += &format!(
            " bursty(g->b {:.3}, b->g {:.2}, loss bad {})",
            ge.p_good_to_bad, ge.p_bad_to_good, ge.loss_bad
        );
    }
    if l.reorder > 0.0 {
        out += &format!(" reorder {:.2}% by {:?}", l.reorder * 100.0, l.reorder_delay);
    }
    if l.duplicate > 0.0 {
        out += &format!(" duplicate {:.2}%", l.duplicate * 100.0);
    }
    if l.corrupt > 0.0 {
        out += &format!(" corrupt {:.3}%", l.corrupt * 100.0);
    }
    if let Some(bps) = l.bandwidth_bps {
        out += &format!(" {} Mbit/s queue {} B", bps / 1_000_000, l.queue_bytes);
    }
    if l.max_datagram_size != LinkConfig::default().max_datagram_size {
        out += &format!(" max datagram {}", l.max_datagram_size);
    }
    out
}

/// The transport settings that differ from the defaults.
fn describe_transport(t: &TransportConfig) -> String {
    let d = TransportConfig::default();
    let mut out = format!(
        "idle {:?}, {:?}",
        t.max_idle_timeout.unwrap_or_default(),
        t.congestion
    );
    if t.key_update_interval.is_some() {
        out += &format!(
            ", key update every {:?} packets",
            t.key_update_interval.unwrap_or(0)
        );
    }
    match t.mtu_discovery {
        None => out += ", no mtu discovery",
        Some(m) if Some(m) != d.mtu_discovery => out += &format!(", mtu discovery up to {}", m.upper_bound),
        Some(_) => {}
    }
    if t.keep_alive_interval.is_some() {
        out += &format!(", keep-alive {:?}", t.keep_alive_interval.unwrap_or_default());
    }
    if t.initial_rtt != d.initial_rtt {
        out += &format!(", initial rtt {:?}", t.initial_rtt);
    }
    if t.ack_eliciting_threshold != d.ack_eliciting_threshold || t.max_ack_delay != d.max_ack_delay {
        out += &format!(
            ", ack after {} or {:?}",
            t.ack_eliciting_threshold, t.max_ack_delay
        );
    }
    if t.active_connection_id_limit != d.active_connection_id_limit {
        out += &format!(", cid limit {}", t.active_connection_id_limit);
    }
    if t.streams != d.streams {
        let s = &t.streams;
        out += &format!(
            ", streams: uni {} window {}/{} (max {}/{}) send buffer {}",
            s.max_concurrent_uni_streams,
            s.stream_receive_window,
            s.receive_window,
            s.max_stream_receive_window,
            s.max_receive_window,
            s.send_buffer
        );
    }
    out
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.server;
        if self.batching {
            writeln!(f, "  receive batching on")?;
        }
        writeln!(
            f,
            "  server: retry {:?}, {:?}, max_incoming_handshakes {}, {}",
            s.retry,
            s.accepting,
            s.max_incoming_handshakes,
            describe_transport(&s.transport)
        )?;
        for (i, c) in self.clients.iter().enumerate() {
            writeln!(
                f,
                "  client {i}: {:?} at {} from {:?}, {} bytes on {} streams{}",
                c.kind,
                c.addr,
                c.start,
                c.total,
                c.streams,
                if c.refused { ", refused" } else { "" }
            )?;
            writeln!(f, "    up: {}", describe_link(&c.up))?;
            writeln!(f, "    down: {}", describe_link(&c.down))?;
            if let Some((after, to)) = c.rebind {
                writeln!(
                    f,
                    "    moves to {to} {after:?} after the server's handshake completed"
                )?;
            }
            if let Some((at, length)) = c.blackout {
                writeln!(f, "    blackout at {at:?} for {length:?}")?;
            }
            match c.kind {
                Kind::Quicsand => writeln!(f, "    transport: {}", describe_transport(&c.transport))?,
                Kind::Quinn => {
                    if let Some(k) = c.transport.keep_alive_interval {
                        writeln!(f, "    keep-alive {k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The server's application: a [`Sink`] that also remembers which client each connection came from
/// and, under `AcceptPolicy::Ask`, accepts or refuses each one.
struct SoakServer {
    sink: Sink,
    /// Under `Ask`: the longest accept delay, and the clients to refuse.
    ask: Option<(Duration, Vec<SocketAddr>)>,
    draw: Draw,
    /// Each connection's client address as it first came.
    remotes: BTreeMap<ConnectionHandle, SocketAddr>,
    /// Held connections and when to accept them.
    pending: Vec<(Instant, ConnectionHandle)>,
    /// Connections whose refusal was asked for.
    refused: Vec<ConnectionHandle>,
    /// Client addresses (as they first came) whose handshake completed here.
    connected: Vec<SocketAddr>,
    /// Calls to `accept` or `refuse` that found a stale handle.
    stale: usize,
    /// Each connection's statistics when it ended (if its handle was still valid then).
    final_stats: BTreeMap<ConnectionHandle, ConnectionStats>,
    /// With `QUICSAND_SOAK_QLOG` set, the client whose connections write qlog to stderr.
    qlog_for: Option<SocketAddr>,
}

impl SoakServer {
    fn wake_for_next(&self, ctx: &mut NodeCtx<'_>) {
        if let Some(at) = self.pending.iter().map(|(at, _)| *at).min() {
            ctx.wake_at(at);
        }
    }
}

impl App for SoakServer {
    fn on_event(&mut self, ctx: &mut NodeCtx<'_>, handle: ConnectionHandle, event: &Event) {
        if let Event::Incoming { remote } = event {
            self.remotes.insert(handle, *remote);
            if self.qlog_for == Some(*remote) {
                if let Ok(mut conn) = ctx.endpoint().conn(handle) {
                    conn.set_qlog(Box::new(quicsand::qlog::QlogWriter::new(std::io::stderr())));
                }
            }
            if let Some((max_delay, refuse)) = &self.ask {
                let now = ctx.now();
                if refuse.contains(remote) {
                    if ctx.endpoint().refuse(now, handle).is_err() {
                        self.stale += 1;
                    }
                    self.refused.push(handle);
                } else {
                    let delay = ms(self.draw.range(0, max_delay.as_millis() as u64));
                    self.pending.push((now + delay, handle));
                    self.wake_for_next(ctx);
                }
            }
        }
        if let (Event::Connected, Some(remote)) = (event, self.remotes.get(&handle)) {
            self.connected.push(*remote);
        }
        if let Event::ConnectionLost { .. } = event {
            if let Ok(conn) = ctx.endpoint().conn(handle) {
                self.final_stats.insert(handle, conn.stats());
            }
        }
        self.sink.on_event(ctx, handle, event);
    }

    fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
        let now = ctx.now();
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(at, _)| *at <= now);
        self.pending = later;
        for (_, h) in due {
            if ctx.endpoint().accept(now, h).is_err() {
                self.stale += 1;
            }
        }
        self.wake_for_next(ctx);
    }
}

/// A quicsand client: a [`BulkSender`] that connects at its start time and keeps its connection's
/// statistics from the last event that saw them.
struct SoakClient {
    sender: BulkSender,
    start: Duration,
    started: bool,
    stats: Option<ConnectionStats>,
    /// The handshake is confirmed (RFC 9001 §4.1.2).
    confirmed: bool,
}

impl SoakClient {
    fn begin(&mut self, ctx: &mut NodeCtx<'_>) {
        self.started = true;
        self.sender.on_start(ctx);
    }
}

impl App for SoakClient {
    fn on_start(&mut self, ctx: &mut NodeCtx<'_>) {
        if self.start.is_zero() {
            self.begin(ctx);
        } else {
            ctx.wake_after(self.start);
        }
    }

    fn on_event(&mut self, ctx: &mut NodeCtx<'_>, handle: ConnectionHandle, event: &Event) {
        let finished = matches!(
            event,
            Event::Stream(StreamEvent::Finished { .. }) | Event::ConnectionLost { .. }
        );
        if matches!(event, Event::HandshakeConfirmed) && Some(handle) == self.sender.connection() {
            self.confirmed = true;
        }
        if finished && Some(handle) == self.sender.connection() {
            if let Ok(conn) = ctx.endpoint().conn(handle) {
                self.stats = Some(conn.stats());
            }
        }
        self.sender.on_event(ctx, handle, event);
    }

    fn on_wake(&mut self, ctx: &mut NodeCtx<'_>) {
        if !self.started {
            self.begin(ctx);
        }
    }
}

/// A quinn-proto client that connects at its start time.
struct LateQuinn {
    peer: QuinnPeer,
    /// Datagrams received.
    received: u64,
    start: Duration,
    at: Option<Instant>,
}

impl Engine for LateQuinn {
    fn start(&mut self, ctx: &EngineCtx) {
        if self.start.is_zero() {
            self.peer.start(ctx);
        } else {
            self.at = Some(ctx.epoch + self.start);
        }
    }

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: BytesMut) {
        self.received += 1;
        self.peer.handle_datagram(now, from, payload);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.at.or_else(|| self.peer.poll_timeout())
    }

    fn handle_timeout(&mut self, ctx: &EngineCtx) {
        match self.at {
            Some(at) if ctx.now >= at => {
                self.at = None;
                self.peer.start(ctx);
            }
            Some(_) => {}
            None => self.peer.handle_timeout(ctx),
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.peer.poll_transmit(now, buf)
    }

    fn poll_events(
        &mut self,
        ctx: &EngineCtx,
        report: &mut dyn FnMut(&dyn fmt::Debug, &dyn fmt::Debug),
    ) -> bool {
        self.peer.poll_events(ctx, report)
    }
}

/// How a client's connection ended, whichever engine ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientEnd {
    /// It closed after the server acknowledged every stream.
    Completed,
    /// The server refused it.
    Refused,
    /// The idle timeout (or, before the handshake completed, the handshake timeout) ended it.
    TimedOut,
    /// Anything else.
    Other(String),
}

struct Run {
    /// The server endpoint's statistics, when last taken (after the clients ended).
    server_stats: EndpointStats,
    plan: Plan,
    sim: Simulation,
    server: NodeId,
    clients: Vec<NodeId>,
}

impl Run {
    fn new(plan: Plan) -> Run {
        let full = trace_client().is_some();
        Run::with_trace(plan, if full { 1_000_000 } else { 64 })
    }

    /// A run keeping the last `records` trace records.
    fn with_trace(plan: Plan, records: usize) -> Run {
        let limits = Limits {
            trace_records: records,
            ..Limits::default()
        };
        let seed = plan.seed;
        let mut sim = Simulation::with_limits(common::epoch(), seed, limits);
        sim.set_batching(plan.batching);
        let (cert, key) = common::certs::ed25519_localhost();
        let server_tls = tls::server_config_with(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(key.clone_key()),
            vec![ALPN.to_vec()],
            &quicsand::sim::deterministic_tls(seed),
        )
        .unwrap();
        let mut server_config = ServerConfig::new(server_tls);
        server_config.transport = plan.server.transport.clone();
        server_config.retry = plan.server.retry;
        server_config.max_incoming_handshakes = plan.server.max_incoming_handshakes;
        let ask = match plan.server.accepting {
            Accepting::All => None,
            Accepting::Ask { max_delay } => {
                server_config.accept = AcceptPolicy::Ask;
                let refuse = plan
                    .clients
                    .iter()
                    .filter(|c| c.refused)
                    .map(|c| c.addr)
                    .collect();
                Some((max_delay, refuse))
            }
        };
        let app = SoakServer {
            sink: Sink::default(),
            ask,
            draw: Draw::new(seed, u64::MAX),
            remotes: BTreeMap::new(),
            pending: Vec::new(),
            refused: Vec::new(),
            connected: Vec::new(),
            qlog_for: std::env::var("QUICSAND_SOAK_QLOG")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .and_then(|i| plan.clients.get(i))
                .map(|c| c.addr),
            stale: 0,
            final_stats: BTreeMap::new(),
        };
        let server_addr: SocketAddr = SERVER_ADDR.parse().unwrap();
        let server = sim.add_node(server_addr, Some(server_config), Box::new(app));

        let mut clients = Vec::new();
        for (i, c) in plan.clients.iter().enumerate() {
            let options = quicsand::sim::deterministic_tls(seed ^ ((i as u64 + 1) << 32));
            let client_tls =
                tls::client_config_with(vec![cert.clone()], vec![ALPN.to_vec()], &options).unwrap();
            let node = match c.kind {
                Kind::Quicsand => {
                    let mut config = ClientConfig::new(client_tls);
                    config.transport = c.transport.clone();
                    let sender = BulkSender::new(config, server_addr, "localhost", c.total, c.streams);
                    let app = SoakClient {
                        sender,
                        start: c.start,
                        started: false,
                        stats: None,
                        confirmed: false,
                    };
                    sim.add_node(c.addr, None, Box::new(app))
                }
                Kind::Quinn => {
                    let (addr, start, total, streams) = (c.addr, c.start, c.total, c.streams);
                    let keep_alive = c.transport.keep_alive_interval;
                    sim.add_engine(addr, |node_seed| {
                        let mut peer =
                            QuinnPeer::sender(addr, node_seed, client_tls, server_addr, total, streams);
                        peer.node.set_transport(move |t| {
                            t.max_idle_timeout(Some(CLIENT_IDLE.try_into().unwrap()));
                            t.keep_alive_interval(keep_alive);
                        });
                        Box::new(LateQuinn {
                            peer,
                            received: 0,
                            start,
                            at: None,
                        })
                    })
                }
            };
            sim.add_link(node, server, c.up.clone());
            sim.add_link(server, node, c.down.clone());
            if let Some((at, length)) = c.blackout {
                sim.schedule_blackout(node, server, at, length);
            }
            clients.push(node);
        }
        Run {
            server_stats: EndpointStats::default(),
            plan,
            sim,
            server,
            clients,
        }
    }

    fn server_app(&self) -> &SoakServer {
        self.sim.app::<SoakServer>(self.server).unwrap()
    }

    /// How client `i`'s connection ended, if it did.
    fn client_end(sim: &Simulation, node: NodeId) -> Option<ClientEnd> {
        if let Some(q) = sim.engine::<LateQuinn>(node) {
            let q = &q.peer;
            return q.lost.as_ref().map(|r| match r {
                LostReason::LocallyClosed if q.finished_at.is_some() => ClientEnd::Completed,
                LostReason::Transport {
                    code: CONNECTION_REFUSED,
                } => ClientEnd::Refused,
                LostReason::TimedOut => ClientEnd::TimedOut,
                other => ClientEnd::Other(format!("{other:?}")),
            });
        }
        let c = &sim.app::<SoakClient>(node).unwrap().sender;
        if let Some(e) = &c.connect_error {
            return Some(ClientEnd::Other(format!("connect failed: {e}")));
        }
        c.lost.as_ref().map(|r| match r {
            ConnectionError::LocallyClosed if c.finished_at.is_some() => ClientEnd::Completed,
            ConnectionError::Refused => ClientEnd::Refused,
            ConnectionError::TimedOut => ClientEnd::TimedOut,
            other => ClientEnd::Other(format!("{other:?}")),
        })
    }

    /// When client `node`'s handshake completed, since the epoch.
    fn connected_at(sim: &Simulation, node: NodeId) -> Option<Duration> {
        match sim.engine::<LateQuinn>(node) {
            Some(q) => q.peer.connected_at,
            None => sim.app::<SoakClient>(node).unwrap().sender.connected_at,
        }
    }

    /// Whether the server completed the handshake with the client that first came from `addr`: a client
    /// that moves before that is not followed (RFC 9000 §9: the server drops what comes from a new
    /// address before the handshake is confirmed, and a server's handshake is confirmed when it
    /// completes), so the rebinding waits for it.
    fn server_connected(sim: &Simulation, server: NodeId, addr: SocketAddr) -> bool {
        sim.app::<SoakServer>(server).unwrap().connected.contains(&addr)
    }

    /// Whether client `i` may be rebound now: once the server's handshake completed (above) and, for a
    /// quicsand client, its own is confirmed. QUIC relies on a stable address until then (RFC 9000
    /// §9): a client not yet confirmed whose HANDSHAKE_DONE, and the ACK that would confirm it too
    /// (RFC 9001 §4.1.2), went to the address it left sends only Handshake packets, which a server
    /// without Handshake keys drops. (quinn-proto's confirmation is not visible here: see
    /// `Run::known_elsewhere`.)
    fn may_rebind(sim: &Simulation, server: NodeId, node: NodeId, addr: SocketAddr) -> bool {
        Run::server_connected(sim, server, addr) && sim.app::<SoakClient>(node).map_or(true, |c| c.confirmed)
    }

    /// Runs the clients to their end, moving each one that is to be rebound once it is connected.
    fn run_clients(&mut self) -> Result<(), String> {
        let mut rebound = vec![false; self.clients.len()];
        let clients = self.clients.clone();
        let plan = &self.plan;
        let server = self.server;
        loop {
            let deadline = BOUND.saturating_sub(self.sim.elapsed());
            let due = |sim: &Simulation, rebound: &[bool]| {
                plan.clients.iter().enumerate().any(|(i, c)| {
                    c.rebind.is_some() && !rebound[i] && Run::may_rebind(sim, server, clients[i], c.addr)
                })
            };
            let all_ended = |sim: &Simulation| clients.iter().all(|&n| Run::client_end(sim, n).is_some());
            let stopped = self
                .sim
                .run_until(deadline, |sim| all_ended(sim) || due(sim, &rebound));
            for (i, &n) in clients.iter().enumerate() {
                let c = &plan.clients[i];
                if let (Some((after, to)), false) = (c.rebind, rebound[i]) {
                    if Run::may_rebind(&self.sim, server, n, c.addr) {
                        rebound[i] = true;
                        self.sim.schedule_rebind(n, self.sim.elapsed() + after, to);
                    }
                }
            }
            if all_ended(&self.sim) {
                return Ok(());
            }
            if !stopped {
                let open: Vec<usize> = (0..clients.len())
                    .filter(|&i| Run::client_end(&self.sim, clients[i]).is_none())
                    .collect();
                return Err(format!(
                    "hang: clients {open:?} still open at {:?} (bound {BOUND:?})",
                    self.sim.elapsed()
                ));
            }
        }
    }

    /// Whether no endpoint holds a connection any more.
    fn all_drained(sim: &mut Simulation, server: NodeId, clients: &[NodeId]) -> bool {
        let mut nodes = vec![server];
        nodes.extend_from_slice(clients);
        nodes.iter().all(|&n| match sim.engine::<LateQuinn>(n) {
            Some(q) => q.peer.node.connection_count() == 0,
            None => sim.endpoint(n).unwrap().stats().connections_active == 0,
        })
    }

    /// The checks that follow the clients' end; every problem found, one per line.
    fn check(&mut self, problems: &mut Vec<String>, starved_clients: &mut usize, timed_out: &mut Vec<usize>) {
        let plan = self.plan.clone();
        let server_stats = self.sim.endpoint(self.server).unwrap().stats();
        let n = plan.clients.len();
        // Per client: its end, and what the server read from it.
        let ends: Vec<Option<ClientEnd>> = self
            .clients
            .iter()
            .map(|&c| Run::client_end(&self.sim, c))
            .collect();
        let server = self.server_app();
        let mut by_client: BTreeMap<SocketAddr, Vec<ConnectionHandle>> = BTreeMap::new();
        for (h, addr) in &server.remotes {
            by_client.entry(*addr).or_default().push(*h);
        }
        for (i, c) in plan.clients.iter().enumerate() {
            let end = ends[i].clone();
            let handles = by_client.get(&c.addr).cloned().unwrap_or_default();
            let who = format!(
                "client {i} ({:?}, {} bytes on {} streams)",
                c.kind, c.total, c.streams
            );
            // Under a small `max_incoming_handshakes`, clients that start together retransmit their
            // Initials together (same initial RTT, same backoff), and each round lets as many in as
            // there are free slots: the last ones may time out before their turn (or get in just
            // before). Explained when the client never completed its handshake and the server did
            // drop Initials at the limit.
            let starved = end == Some(ClientEnd::TimedOut)
                && Run::connected_at(&self.sim, self.clients[i]).is_none()
                && plan.server.max_incoming_handshakes < n
                && server_stats.dropped_handshake_limit > 0;
            if starved {
                *starved_clients += 1;
                continue;
            }
            // A client that timed out may have been unlucky: after a blackout the PTOs have backed off,
            // each probe draws one or two datagrams in answer, and a few losses in a row reach the idle
            // timeout (with bursty loss, whose state moves once per datagram, a bad spell lasts
            // seconds on a link that carries only those). `run_seed` replays the seed with the whole
            // trace and accepts the timeout only if every datagram the server sent the client after the
            // last one that reached it was lost to the link's impairments.
            // A quinn-proto client that ends with a stateless reset is one whose connection the server
            // gave up first (its idle timeout) while the client went on: judged the same way.
            let reset =
                matches!(&end, Some(ClientEnd::Other(e)) if e.contains("Reset")) && c.kind == Kind::Quinn;
            if end == Some(ClientEnd::TimedOut) || reset {
                timed_out.push(i);
                continue;
            }
            // A refused client whose refusal was lost comes again once the refused connection's
            // closing period is over: a new connection, refused again. And when the server sends
            // Retries only while busy, a client's Initial retransmitted before the Retry reached it
            // may arrive when the server is no longer busy and start a connection of its own, beside
            // the one the client makes with the Retry token (RFC 9000 §8.1.2 keeps no state for a
            // Retry, so nothing links the two); that one hears nothing the client can decrypt and
            // ends by the handshake timeout.
            let retry_race = matches!(plan.server.retry, RetryPolicy::WhenHandshakesExceed(_));
            let allowed = if c.refused || retry_race {
                1..=usize::MAX
            } else {
                1..=1
            };
            let allowed = if plan.server.max_incoming_handshakes < n {
                0..=*allowed.end()
            } else {
                allowed
            };
            if !allowed.contains(&handles.len()) {
                problems.push(format!(
                    "{who}: the server saw {} connections from it",
                    handles.len()
                ));
            }
            if c.refused {
                if end != Some(ClientEnd::Refused) {
                    problems.push(format!("{who}: refused by the server, but ended {end:?}"));
                }
                continue;
            }
            if end != Some(ClientEnd::Completed) {
                problems.push(format!("{who}: did not complete, ended {end:?}"));
                continue;
            }
            let streams: Vec<_> = server
                .sink
                .streams
                .iter()
                .filter(|((h, _), _)| handles.contains(h))
                .map(|(_, s)| s)
                .collect();
            let bytes: u64 = streams.iter().map(|s| s.bytes).sum();
            if streams.len() != c.streams
                || bytes != c.total
                || !streams.iter().all(|s| s.finished && s.pattern_ok)
            {
                problems.push(format!(
                    "{who}: the server read {bytes} bytes on {} streams, ends read {}, pattern ok {}",
                    streams.len(),
                    streams.iter().filter(|s| s.finished).count(),
                    streams.iter().all(|s| s.pattern_ok)
                ));
            }
            for h in &handles {
                if let Some(st) = server.final_stats.get(h) {
                    if st.stream_bytes_received != c.total {
                        problems.push(format!(
                            "{who}: the server's connection counted {} stream bytes received",
                            st.stream_bytes_received
                        ));
                    }
                }
            }
            if let Some(app) = self.sim.app::<SoakClient>(self.clients[i]) {
                match &app.stats {
                    None => problems.push(format!("{who}: no connection statistics")),
                    Some(st) => check_client_stats(c, st, &who, problems),
                }
            }
        }
        if server.stale > 0 {
            problems.push(format!(
                "server: {} accept/refuse calls found a stale handle",
                server.stale
            ));
        }
        let refusals = server.refused.len();
        let accepted = server.remotes.len() - refusals;
        let wrongly = server
            .refused
            .iter()
            .filter(|h| {
                let addr = server.remotes.get(h);
                !plan.clients.iter().any(|c| c.refused && Some(&c.addr) == addr)
            })
            .count();
        if wrongly > 0 {
            problems.push(format!(
                "server: refused {wrongly} connections of clients not to refuse"
            ));
        }

        // Closing and draining periods (three PTOs) and, for a close that was lost, the idle timeout.
        // A PTO can be long: a server whose handshake gave it no RTT sample (the client's ACK of its
        // Handshake flight lost, and the retransmitted Finished carrying none) takes its first sample
        // from a packet acknowledged across a blackout, and starts with an RTT of seconds and a
        // variance of half that (RFC 9002 §5.3), so three PTOs can pass a minute.
        let idle = plan.server.transport.max_idle_timeout.unwrap_or(CLIENT_IDLE);
        let grace = idle + Duration::from_secs(150);
        let (server, clients) = (self.server, self.clients.clone());
        let until = self.sim.elapsed() + grace;
        while !Run::all_drained(&mut self.sim, server, &clients) && self.sim.elapsed() < until {
            let before = self.sim.elapsed();
            self.sim.run(Duration::from_millis(250).min(until - before));
            if self.sim.elapsed() == before {
                break; // nothing left to happen
            }
        }
        if !Run::all_drained(&mut self.sim, server, &clients) {
            let open: Vec<String> = std::iter::once(server)
                .chain(clients.iter().copied())
                .filter_map(|node| {
                    let open = match self.sim.engine::<LateQuinn>(node) {
                        Some(q) => q.peer.node.connection_count(),
                        None => self.sim.endpoint(node).unwrap().stats().connections_active,
                    };
                    (open > 0).then(|| format!("node {} holds {open}", node.0))
                })
                .collect();
            let remotes = self.server_app().remotes.clone();
            let server_left: Vec<String> = remotes
                .iter()
                .filter_map(|(h, addr)| {
                    let ep = self.sim.endpoint(server).unwrap();
                    let conn = ep.conn(*h).ok()?;
                    let st = conn.stats();
                    Some(format!(
                        "{h:?} from {addr}: {} packets sent, {} received, pto_count {}, srtt {:?}, latest rtt {:?}",
                        st.packets_sent, st.packets_received, st.pto_count, st.smoothed_rtt, st.latest_rtt
                    ))
                })
                .collect();
            problems.push(format!(
                "connections left {grace:?} after the clients ended: {} (server: {server_left:?})",
                open.join(", ")
            ));
        }
        let stats = self.sim.endpoint(self.server).unwrap().stats();
        check_server_stats(&plan, n, (accepted, refusals), &stats, problems);
        for (i, &node) in self.clients.iter().enumerate() {
            if let Some(ep) = self
                .sim
                .app::<SoakClient>(node)
                .is_some()
                .then_some(node)
                .and_then(|node| self.sim.endpoint(node))
            {
                let st = ep.stats();
                // A client that completed may still meet a reset: in its closing period a late
                // datagram of the server's draws its CONNECTION_CLOSE again, which reaches a server that
                // has already forgotten the connection and answers with a stateless reset (RFC 9000
                // §10.3), ending the closing period early. One that did not complete is reported above.
                if st.stateless_resets_received > 0 && ends[i] != Some(ClientEnd::Completed) {
                    problems.push(format!(
                        "client {i}: {} stateless resets received",
                        st.stateless_resets_received
                    ));
                }
            }
        }
    }
}

fn check_client_stats(c: &ClientPlan, st: &ConnectionStats, who: &str, problems: &mut Vec<String>) {
    let mut bad = Vec::new();
    if st.stream_bytes_sent != c.total {
        bad.push(format!(
            "stream_bytes_sent {} != {}",
            st.stream_bytes_sent, c.total
        ));
    }
    if st.packets_lost > st.packets_sent {
        bad.push(format!(
            "packets_lost {} > packets_sent {}",
            st.packets_lost, st.packets_sent
        ));
    }
    if st.packets_lost_spurious > st.packets_lost {
        bad.push(format!(
            "packets_lost_spurious {} > packets_lost {}",
            st.packets_lost_spurious, st.packets_lost
        ));
    }
    if st.congestion_events_undone > st.congestion_events {
        bad.push(format!(
            "congestion_events_undone {} > congestion_events {}",
            st.congestion_events_undone, st.congestion_events
        ));
    }
    let path = c.up.delay + c.down.delay;
    if st.min_rtt < path {
        bad.push(format!(
            "min_rtt {:?} below the path's delay {path:?}",
            st.min_rtt
        ));
    }
    if st.smoothed_rtt > Duration::from_secs(30) {
        bad.push(format!("smoothed_rtt {:?}", st.smoothed_rtt));
    }
    if usize::from(st.path_mtu) > c.up.max_datagram_size.max(1200) {
        bad.push(format!(
            "path_mtu {} above the link's {}",
            st.path_mtu, c.up.max_datagram_size
        ));
    }
    if st.cwnd < 2 * 1200 {
        bad.push(format!("cwnd {}", st.cwnd));
    }
    // Retransmissions are bounded by the losses: every byte sent again went out in a packet lost (or
    // thought lost) before, and a packet carries at most a datagram's worth.
    let lost_capacity = (st.packets_lost + st.mtu_probes_lost + 1) * 65_527;
    if st.stream_bytes_retransmitted > lost_capacity {
        bad.push(format!(
            "stream_bytes_retransmitted {} with {} packets lost",
            st.stream_bytes_retransmitted, st.packets_lost
        ));
    }
    if !bad.is_empty() {
        problems.push(format!("{who}: statistics: {}", bad.join("; ")));
    }
}

/// `accepted`, `refusals`: the connections the server's application saw and did not refuse, and those
/// it refused (checked against the plan by the caller).
fn check_server_stats(
    plan: &Plan,
    n: usize,
    (accepted, refusals): (usize, usize),
    st: &EndpointStats,
    problems: &mut Vec<String>,
) {
    let mut bad = Vec::new();
    let n = n as u64;
    let accepted = accepted as u64;
    if st.connections_incoming != accepted + refusals as u64 {
        bad.push(format!(
            "connections_incoming {} != {accepted} accepted + {refusals} refused",
            st.connections_incoming
        ));
    }
    if st.connections_accepted != accepted {
        bad.push(format!(
            "connections_accepted {} != {accepted} connections not refused",
            st.connections_accepted,
        ));
    }
    if st.connections_refused != refusals as u64 {
        bad.push(format!(
            "connections_refused {} != {refusals}",
            st.connections_refused
        ));
    }
    if st.connections_failed != 0 {
        bad.push(format!("connections_failed {}", st.connections_failed));
    }
    if st.connections_active != 0 {
        bad.push(format!("connections_active {}", st.connections_active));
    }
    let dropped = st.dropped_malformed
        + st.dropped_unroutable
        + st.dropped_short_initial
        + st.dropped_unauthenticated
        + st.dropped_unsupported_version
        + st.dropped_handshake_limit
        + st.dropped_not_unicast
        + st.dropped_invalid_retry_token;
    if dropped > st.datagrams_received {
        bad.push(format!(
            "dropped {dropped} of {} datagrams received",
            st.datagrams_received
        ));
    }
    if st.dropped_not_unicast != 0 || st.stateless_queue_overflow != 0 || st.tokens_ignored != 0 {
        bad.push(format!(
            "dropped_not_unicast {}, stateless_queue_overflow {}, tokens_ignored {}",
            st.dropped_not_unicast, st.stateless_queue_overflow, st.tokens_ignored
        ));
    }
    match plan.server.retry {
        RetryPolicy::Never if st.retries_sent != 0 || st.retry_tokens_accepted != 0 => {
            bad.push(format!("Retry never: {} sent", st.retries_sent));
        }
        // Every connection came with a Retry token of ours.
        RetryPolicy::Always
            if st.retry_tokens_accepted + st.expired_retry_tokens != st.connections_incoming =>
        {
            bad.push(format!(
                "Retry always: {} tokens accepted, {} expired, {} connections",
                st.retry_tokens_accepted, st.expired_retry_tokens, st.connections_incoming
            ));
        }
        _ => {}
    }
    if plan.server.max_incoming_handshakes as u64 >= st.connections_incoming
        && st.dropped_handshake_limit != 0
    {
        bad.push(format!("dropped_handshake_limit {}", st.dropped_handshake_limit));
    }
    // One token per connection, and one more when a client moved to another IP address (the token
    // binds the IP), or moved back.
    let moved_ip = plan
        .clients
        .iter()
        .filter(|c| c.rebind.is_some_and(|(_, to)| to.ip() != c.addr.ip()))
        .count() as u64;
    if st.new_tokens_issued > n + 2 * moved_ip {
        bad.push(format!("new_tokens_issued {}", st.new_tokens_issued));
    }
    if !plan.any_corruption()
        && (st.version_negotiations_sent != 0
            || st.invalid_token_closes_sent != 0
            || st.dropped_malformed != 0)
    {
        bad.push(format!(
            "without corruption: version_negotiations_sent {}, invalid_token_closes_sent {}, dropped_malformed {}",
            st.version_negotiations_sent, st.invalid_token_closes_sent, st.dropped_malformed
        ));
    }
    if !bad.is_empty() {
        problems.push(format!("server statistics: {}", bad.join("; ")));
    }
}

impl Run {
    /// Whether every datagram the server sent client `i` after the last one that reached it was lost to
    /// the link's impairments (random or bursty loss, the queue, a blackout, corruption): `Ok` with
    /// their number, or why not. Datagrams sent to an address the client left, or too large for the
    /// link, do not count as bad luck. Needs the whole trace.
    fn answers_lost(&self, i: usize) -> Result<usize, String> {
        use quicsand::sim::{Fate, TraceRecord};
        let c = &self.plan.clients[i];
        let server: SocketAddr = SERVER_ADDR.parse().unwrap();
        let mut addrs = vec![c.addr];
        addrs.extend(c.rebind.map(|(_, to)| to));
        if self.sim.trace().total() > self.sim.trace().capacity() as u64 {
            return Err("the trace is incomplete".to_string());
        }
        let to_client: Vec<(Duration, Fate)> = self
            .sim
            .trace()
            .records()
            .filter_map(|r| match r {
                TraceRecord::Datagram {
                    at, from, to, fate, ..
                } if *from == server && addrs.contains(to) => Some((*at, *fate)),
                _ => None,
            })
            .collect();
        let arrived = |f: &Fate| matches!(f, Fate::Delivered { corrupted: false, .. });
        let last = to_client
            .iter()
            .filter(|(_, f)| arrived(f))
            .map(|(at, _)| *at)
            .max();
        let after: Vec<&Fate> = to_client
            .iter()
            .filter(|(at, _)| !matches!(last, Some(l) if *at <= l))
            .map(|(_, f)| f)
            .collect();
        let bad_luck = |f: &&Fate| {
            matches!(
                f,
                Fate::DroppedLoss
                    | Fate::DroppedQueue
                    | Fate::DroppedLinkDown
                    | Fate::Delivered { corrupted: true, .. }
            )
        };
        if after.is_empty() {
            return Err(format!(
                "and the server sent it nothing after {last:?}, the last datagram that reached it"
            ));
        }
        if !after.iter().all(bad_luck) {
            return Err(format!(
                "and what the server sent it after {last:?} was not all lost to the link: {after:?}"
            ));
        }
        Ok(after.len())
    }
}

impl Run {
    /// Whether the server sent client `i` datagrams at the address it left after it moved.
    fn sent_to_old_address(&self, i: usize) -> bool {
        use quicsand::sim::{Fate, TraceRecord};
        let c = &self.plan.clients[i];
        let server: SocketAddr = SERVER_ADDR.parse().unwrap();
        self.sim.trace().records().any(|r| {
            matches!(r, TraceRecord::Datagram { from, to, fate: Fate::DroppedNoRoute, .. }
                if *from == server && *to == c.addr)
        })
    }

    /// Whether, after the last datagram of client `i` that reached the server, a datagram of the
    /// server's reached the client (it had something to answer, and did not).
    fn client_went_silent(&self, i: usize) -> bool {
        use quicsand::sim::{Fate, TraceRecord};
        let c = &self.plan.clients[i];
        let server: SocketAddr = SERVER_ADDR.parse().unwrap();
        let mut addrs = vec![c.addr];
        addrs.extend(c.rebind.map(|(_, to)| to));
        let arrived = |f: &Fate| matches!(f, Fate::Delivered { corrupted: false, .. });
        let (mut last_up, mut last_down) = (None, None);
        for r in self.sim.trace().records() {
            if let TraceRecord::Datagram {
                at, from, to, fate, ..
            } = r
            {
                if arrived(fate) && addrs.contains(from) && *to == server {
                    last_up = Some(*at);
                }
                if arrived(fate) && *from == server && addrs.contains(to) {
                    last_down = Some(*at);
                }
            }
        }
        matches!((last_up, last_down), (Some(up), Some(down)) if down > up)
    }

    /// Timeouts of client `i` with a cause outside the quicsand server, recognised in the whole trace
    /// (see the module documentation): `Some` names it.
    fn known_elsewhere(&self, i: usize) -> Option<usize> {
        use quicsand::sim::TraceRecord;
        let c = &self.plan.clients[i];
        let node = self.clients[i];
        let server_connected = Run::server_connected(&self.sim, self.server, c.addr);
        let client_connected = Run::connected_at(&self.sim, node).is_some();
        let sent_from = |addr: SocketAddr| {
            self.sim
                .trace()
                .records()
                .filter(|r| matches!(r, TraceRecord::Datagram { from, .. } if *from == addr))
                .count()
        };
        match c.kind {
            // quinn-proto completed its handshake but the server never got its Finished: the
            // datagram with it was lost, and quinn-proto sent only ACKs in Handshake packets after
            // that (the server's qlog shows them acknowledged, never a CRYPTO frame).
            Kind::Quinn if client_connected && !server_connected => Some(1),
            // A quinn-proto client rebound before its handshake was confirmed (HANDSHAKE_DONE lost
            // to a blackout or to the move) sends from its new address nothing that moves the
            // connection: nothing at all, or Handshake packets (the server's Handshake keys are gone)
            // and 1-RTT packets with only NEW_CONNECTION_ID frames, which are probing (RFC 9000 §9.1:
            // no migration on them, §9.3). quicsand clients take an acknowledged 1-RTT packet as
            // confirmation (RFC 9001 §4.1.2); quinn-proto waits for HANDSHAKE_DONE, which goes to the
            // address it left. Recognised by the server still sending to the old address.
            // A quinn-proto client that went silent with the server's packets arriving: after the last
            // datagram of its that reached the server, some of the server's did reach it, and it
            // answered none (quinn-proto holds even its ACKs while its congestion window is full, here
            // of 1-RTT data sent before the server could acknowledge it, and its lost Finished or the
            // HANDSHAKE_DONE it waits for come only with PTOs backed off beyond the idle timeout).
            Kind::Quinn if server_connected && self.client_went_silent(i) => Some(1),
            Kind::Quinn
                if c.rebind.is_some()
                    && server_connected
                    && (sent_from(c.rebind.map_or(c.addr, |(_, to)| to)) == 0
                        || self.sent_to_old_address(i)) =>
            {
                Some(1)
            }
            _ => None,
        }
    }
}

/// `QUICSAND_SOAK_TRACE=<i>`: print the trace records of client `i` (its datagrams and events).
const TRACE_ENV: &str = "QUICSAND_SOAK_TRACE";

fn trace_client() -> Option<usize> {
    std::env::var(TRACE_ENV).ok().and_then(|v| v.parse().ok())
}

impl Run {
    fn print_trace(&self, i: usize) {
        eprintln!(
            "server: {:?}",
            self.sim.app::<SoakServer>(self.server).map(|a| &a.remotes)
        );
        let Some(c) = self.plan.clients.get(i) else { return };
        let node = self.clients[i];
        let mut addrs = vec![c.addr];
        addrs.extend(c.rebind.map(|(_, to)| to));
        for r in self.sim.trace().records() {
            let mine = match r {
                quicsand::sim::TraceRecord::Datagram { from, to, .. } => {
                    addrs.contains(from) || addrs.contains(to)
                }
                quicsand::sim::TraceRecord::Event { node: n, event, .. } => {
                    *n == node || (n.0 == 0 && !event.starts_with("Stream"))
                }
            };
            if mine {
                eprintln!("{r:?}");
            }
        }
    }
}

/// What one seed did, for the summary.
#[derive(Debug, Default, Clone)]
struct SeedReport {
    clients: usize,
    /// Clients that timed out for an explained reason: waiting for a handshake slot, every answer lost,
    /// or a known cause outside the quicsand server (see `Run::check`, `Run::known_elsewhere`).
    starved: usize,
    virtual_time: Duration,
    batching: bool,
    /// Batches of received datagrams the simulator handed over, and the datagrams in them.
    batches: u64,
    batched: u64,
}

/// Runs one seed; `Err` names the seed, what failed, and the scenario.
fn run_seed(seed: u64) -> Result<SeedReport, String> {
    let plan = Plan::draw(seed);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut run = Run::new(plan.clone());
        let mut problems = Vec::new();
        if let Err(e) = run.run_clients() {
            problems.push(e);
        }
        let at = run.sim.elapsed();
        let batches = (run.sim.trace().batches, run.sim.trace().batched);
        let mut starved = 0;
        let mut timed_out = Vec::new();
        run.check(&mut problems, &mut starved, &mut timed_out);
        if let Some(i) = trace_client() {
            eprintln!("{:#?}", run.sim.endpoint(run.server).unwrap().stats());
            run.print_trace(i);
        }
        let mut lost = 0;
        if !timed_out.is_empty() {
            let mut replay = Run::with_trace(plan.clone(), 5_000_000);
            let _ = replay.run_clients();
            replay.server_stats = replay.sim.endpoint(replay.server).unwrap().stats();
            for i in timed_out {
                match replay
                    .answers_lost(i)
                    .or_else(|why| replay.known_elsewhere(i).ok_or(why))
                {
                    Ok(_) => lost += 1,
                    Err(why) => problems.push(format!(
                        "client {i} ({:?}): timed out, {why}",
                        plan.clients[i].kind
                    )),
                }
            }
        }
        (problems, at, starved + lost, batches)
    }));
    let (problems, at, starved, (batches, batched)) = match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (vec![format!("panic: {msg}")], Duration::ZERO, 0, (0, 0))
        }
    };
    if problems.is_empty() {
        return Ok(SeedReport {
            clients: plan.clients.len(),
            starved,
            virtual_time: at,
            batching: plan.batching,
            batches,
            batched,
        });
    }
    Err(format!(
        "soak seed {seed} failed:\n  {}\nreplay: {SEEDS_ENV}={seed} cargo test --test soak\nscenario:\n{plan}",
        problems.join("\n  ")
    ))
}

/// The seeds to run: `QUICSAND_SOAK_SEEDS` (`A..B`, `A..=B` or `A`) or the default ones.
fn seeds() -> std::ops::Range<u64> {
    let Ok(spec) = std::env::var(SEEDS_ENV) else {
        return DEFAULT_SEEDS;
    };
    let spec = spec.trim();
    let parse = |s: &str| -> u64 {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEEDS_ENV}={spec}: expected A..B, A..=B or A"))
    };
    if let Some((a, b)) = spec.split_once("..=") {
        parse(a)..parse(b) + 1
    } else if let Some((a, b)) = spec.split_once("..") {
        parse(a)..parse(b)
    } else {
        let a = parse(spec);
        a..a + 1
    }
}

#[test]
fn soak() {
    let seeds = seeds();
    let total = seeds.end.saturating_sub(seeds.start) as usize;
    let done = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let reports = Mutex::new(Vec::new());
    let start = wall_now();
    common::parallel_for(total, |k| {
        let seed = seeds.start + k as u64;
        match run_seed(seed) {
            Ok(r) => reports.lock().unwrap().push(r),
            Err(e) => {
                eprintln!("{e}");
                failures.lock().unwrap().push(seed);
            }
        }
        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
        if total >= 100 && finished % 100 == 0 {
            eprintln!(
                "soak: {finished} of {total} seeds in {:.0} s, {} failed",
                start.elapsed_since_wall(),
                failures.lock().unwrap().len()
            );
        }
    });
    let reports = reports.into_inner().unwrap();
    let mut failures = failures.into_inner().unwrap();
    failures.sort_unstable();
    let clients: usize = reports.iter().map(|r| r.clients).sum();
    let starved: usize = reports.iter().map(|r| r.starved).sum();
    let longest = reports.iter().map(|r| r.virtual_time).max().unwrap_or_default();
    let batching = reports.iter().filter(|r| r.batching).count();
    let batches: u64 = reports.iter().map(|r| r.batches).sum();
    let batched: u64 = reports.iter().map(|r| r.batched).sum();
    eprintln!(
        "soak: seeds {seeds:?}: {} passed ({clients} clients, {starved} of them timed out for an explained \
         reason; longest {:.1} s virtual; {batching} with receive batching, {batches} batches of \
         {batched} datagrams), {} failed, {:.1} s wall",
        reports.len(),
        longest.as_secs_f64(),
        failures.len(),
        start.elapsed_since_wall()
    );
    assert!(
        failures.is_empty(),
        "soak: {} failing seed(s): {failures:?} (each one's message is printed above)",
        failures.len()
    );
    // Bursts that arrive together are common enough that a score of seeds with batching on see some.
    assert!(
        batching < 20 || batches > 0,
        "soak: {batching} seeds ran with receive batching, and not one batch was handed over"
    );
}

/// Seconds of wall time since an instant taken with [`wall_now`].
trait WallElapsed {
    fn elapsed_since_wall(&self) -> f64;
}

impl WallElapsed for Instant {
    fn elapsed_since_wall(&self) -> f64 {
        (wall_now() - *self).as_secs_f64()
    }
}

/// The checks are not vacuous: a run checked against a plan that expects one byte more from a client
/// than it sent is reported, naming the client.
#[test]
fn a_wrong_byte_count_is_reported() {
    let plan = Plan::draw(1);
    let mut run = Run::new(plan);
    run.run_clients().unwrap();
    let i = (0..run.plan.clients.len())
        .find(|&i| !run.plan.clients[i].refused)
        .unwrap();
    run.plan.clients[i].total += 1;
    let (mut problems, mut starved, mut timed_out) = (Vec::new(), 0, Vec::new());
    run.check(&mut problems, &mut starved, &mut timed_out);
    let named = format!("client {i} (");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&named) && p.contains("bytes")),
        "{problems:?}"
    );
}
