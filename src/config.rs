//! Configuration of endpoints and connections. Every limit is a value here, with a sane default.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::{CongestionAlgorithm, MtuDiscoveryConfig, StreamsConfig};
use crate::rng::Rng;
use crate::validation::{MemoryTokenStore, RetryPolicy, TokenConfig, TokenStore};
use crate::wire::header::VERSION_1;
use crate::wire::ConnectionId;

/// Makes the connection IDs an endpoint issues (RFC 9000 §5.1).
///
/// The endpoint routes datagrams by the first [`cid_len`](ConnectionIdGenerator::cid_len) bytes of a
/// short header's destination connection ID, so every ID a generator makes has that length. A load
/// balancer can encode routing information in the IDs by implementing this trait.
pub trait ConnectionIdGenerator: Send {
    /// A new connection ID; `rng` is the endpoint's seeded generator.
    fn generate(&mut self, rng: &mut Rng) -> ConnectionId;
    /// The length of every ID this generator makes (0 to 20).
    fn cid_len(&self) -> usize;
}

/// Random connection IDs of a fixed length, drawn from the endpoint's seeded RNG.
#[derive(Debug, Clone, Copy)]
pub struct RandomCidGenerator {
    len: usize,
}

impl RandomCidGenerator {
    /// A generator of `len`-byte IDs, `len` clamped to 0..=20.
    pub fn new(len: usize) -> Self {
        Self {
            len: len.min(ConnectionId::MAX_LEN),
        }
    }
}

impl Default for RandomCidGenerator {
    fn default() -> Self {
        Self::new(8)
    }
}

impl ConnectionIdGenerator for RandomCidGenerator {
    fn generate(&mut self, rng: &mut Rng) -> ConnectionId {
        let mut bytes = [0u8; ConnectionId::MAX_LEN];
        let out = bytes.get_mut(..self.len).unwrap_or_default();
        rng.fill(out);
        ConnectionId::new(out).unwrap_or_default()
    }

    fn cid_len(&self) -> usize {
        self.len
    }
}

/// Settings of an [`Endpoint`](crate::Endpoint), shared by all its connections.
pub struct EndpointConfig {
    /// Seed of the endpoint's RNG (the key of a ChaCha20 keystream): every random choice of the endpoint
    /// and its connections derives from it, and so do the stateless reset and token keys when none is
    /// configured.
    ///
    /// Simulations and tests fix it ([`with_seed`](Self::with_seed)) to replay a run. An endpoint facing
    /// the internet must draw all 32 bytes from the operating system's RNG at startup: whoever knows the
    /// seed can predict its connection IDs, PATH_CHALLENGE data and packet-number skips, choose colliding
    /// IDs for its hash tables, and forge its stateless resets and tokens if their keys derive from it.
    /// The generator's output does not reveal the seed. The default is all zeros, which the UDP driver
    /// (`udp::Driver`, feature `udp`) refuses.
    pub seed: [u8; 32],
    /// Makes the connection IDs this endpoint issues.
    pub cid_generator: Box<dyn ConnectionIdGenerator>,
    /// The QUIC versions this endpoint accepts, in order of preference; others get Version Negotiation.
    pub supported_versions: Vec<u32>,
    /// At most this many datagrams go into one [`Transmit`](crate::Transmit) (GSO segments). Taken as at
    /// least 1. Whatever it is, a transmit holds at most 65,507 bytes, what one UDP send carries (54
    /// datagrams of 1200 bytes). The default, 64, is Linux's most segments per GSO send
    /// (`UDP_MAX_SEGMENTS`): fewer segments per send cost more system calls for the same datagrams
    /// (about a third more CPU per byte through the UDP driver with 10, see docs/performance.md). It does
    /// not make bursts larger: pacing decides how many datagrams go at once (RFC 9002 §7.7), and a
    /// transmit ends where the pacer or the congestion window stops the sender. A caller whose socket
    /// takes fewer segments per send splits the transmit (the UDP driver does, by what the socket
    /// reports), or sets this lower.
    pub max_segments: usize,
    /// Stateless packets (Version Negotiation, stateless resets) waiting to be sent are capped at this
    /// number; beyond it new ones are dropped and counted.
    pub max_stateless_queue: usize,
    /// Events of connections already removed (drained, their handles stale) that wait in the queue of
    /// [`Endpoint::poll_event`](crate::Endpoint::poll_event) are capped at this number: beyond it the
    /// oldest of them are dropped, down to half the cap, and counted. Only an application that stops
    /// polling events reaches it; one that drains the queue after every input holds at most one
    /// `ConnectionLost` per connection ended by that input, so keep it at least the number of connections
    /// (`ServerConfig::max_connections`) to never lose one.
    pub max_stale_events: usize,
    /// The static key stateless reset tokens derive from (RFC 9000 §10.3.2): every endpoint given the same
    /// key makes the same token for a connection ID, so a restarted server, or another server behind the
    /// same load balancer, can reset connections whose state it lost. `None` derives a key from `seed`,
    /// which is only as secret as the seed: give servers a random key kept across restarts.
    pub reset_key: Option<[u8; 32]>,
    /// Stateless resets sent per second at most, in bursts of at most as many (0: never send any). Each
    /// is smaller than the packet that triggered it, so resets cannot amplify or loop.
    pub max_stateless_resets_per_second: u32,
    /// A client endpoint keeps the tokens servers send in NEW_TOKEN frames here, by server name, and
    /// gives one to its next connection to the same server (RFC 9000 §8.1.3). `None` neither keeps nor
    /// sends tokens.
    pub token_store: Option<Box<dyn TokenStore>>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            seed: [0; 32],
            cid_generator: Box::new(RandomCidGenerator::default()),
            supported_versions: vec![VERSION_1],
            max_segments: 64,
            max_stateless_queue: 256,
            max_stale_events: 1 << 16,
            reset_key: None,
            max_stateless_resets_per_second: 100,
            token_store: Some(Box::new(MemoryTokenStore::default())),
        }
    }
}

impl EndpointConfig {
    /// The defaults with an RNG seed made of `seed` (its 8 bytes, then zeros): for tests and
    /// simulations. Only 64 bits of secret: an endpoint facing the internet sets [`seed`](Self::seed) to 32
    /// random bytes instead.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            seed: crate::rng::seed_from_u64(seed),
            ..Self::default()
        }
    }
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The seed and the keys are secrets: not printed.
        f.debug_struct("EndpointConfig")
            .field("cid_len", &self.cid_generator.cid_len())
            .field("supported_versions", &self.supported_versions)
            .field("max_segments", &self.max_segments)
            .finish_non_exhaustive()
    }
}

/// Per-connection transport settings, the source of the transport parameters this side sends.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Idle timeout advertised to the peer (RFC 9000 §10.1), in whole milliseconds on the wire (at least
    /// 1 ms when not zero); `None` or zero disables it on this side once the handshake is complete
    /// (before, [`handshake_timeout`](Self::handshake_timeout) bounds it).
    pub max_idle_timeout: Option<Duration>,
    /// The idle timeout until the handshake completes: at most this long without hearing from the peer
    /// (and at least three PTOs, as always), whatever `max_idle_timeout` says. With the idle timeout off
    /// or long, a peer that vanishes during the handshake (one spoofed Initial, say; a server at its
    /// anti-amplification limit arms no retransmission timer, RFC 9002 §6.2.2.1) would otherwise hold the
    /// connection, and at a server its place among `max_incoming_handshakes`, for ever. 30 s by default.
    pub handshake_timeout: Duration,
    /// Send an ack-eliciting packet after this much quiet, to keep the connection alive. `None` or zero
    /// turns it off; an interval under 1 ms is taken as 1 ms.
    pub keep_alive_interval: Option<Duration>,
    /// RTT assumed before any sample (RFC 9002 §6.2.2: 333 ms). Taken as at most 60 s: the first
    /// retransmission timer is about three times this, and a huge value would leave a lost first flight
    /// without one.
    pub initial_rtt: Duration,
    /// The longest this side delays an acknowledgement (RFC 9000 §18.2 max_ack_delay). Announced in
    /// whole milliseconds and taken as at most 16,383 ms (the parameter must stay below 2^14).
    pub max_ack_delay: Duration,
    /// The exponent this side scales ACK delays with (RFC 9000 §18.2 ack_delay_exponent, at most 20).
    pub ack_delay_exponent: u8,
    /// Acknowledge at once after this many ack-eliciting packets (RFC 9000 §13.2.2 recommends 2).
    pub ack_eliciting_threshold: u64,
    /// At most this many ranges go into one ACK frame. Taken as at least 1.
    pub max_ack_ranges: usize,
    /// At most this many ranges of received packet numbers are tracked per space; the oldest go first.
    /// Taken as at least 1.
    pub max_tracked_ack_ranges: usize,
    /// Size of the UDP payloads this side sends to begin with: 1200 works on every path (RFC 9000 §14).
    /// Taken within 1200..=65527, and cut to the peer's max_udp_payload_size once that is known. A
    /// connection starts from it again on a new path (the peer's IP changed), so a larger value asserts
    /// that every path carries it (RFC 9000 §14: without discovery, datagrams SHOULD stay at 1200);
    /// one that a path does not carry is found out as a black hole when discovery is on.
    pub mtu: u16,
    /// Path MTU discovery (RFC 9000 §14.3): once the handshake is confirmed, probes find the largest
    /// datagram the path carries, up to the configured bound. `None` keeps [`mtu`](Self::mtu) for the
    /// whole connection.
    pub mtu_discovery: Option<MtuDiscoveryConfig>,
    /// Largest UDP payload this side accepts (RFC 9000 §18.2 max_udp_payload_size). Announced within
    /// 1200..=65527, the largest UDP payload there is.
    pub max_udp_payload_size: u16,
    /// Out-of-order CRYPTO bytes held per space (beyond a gap, whatever is missing before them) before
    /// the connection fails with CRYPTO_BUFFER_EXCEEDED; at least 4096 (RFC 9000 §7.5: "MUST support
    /// buffering at least 4096 bytes"). CRYPTO data may reach twice this past what TLS has read, and the
    /// pieces held around holes are bounded by it too: one per 256 bytes (at least 16); beyond either
    /// the connection fails the same way.
    pub crypto_buffer_size: usize,
    /// How many connection IDs from the peer this side stores (RFC 9000 §18.2 active_connection_id_limit),
    /// and at most how many it issues to the peer. Taken within 2..=64.
    pub active_connection_id_limit: u64,
    /// Start a key update after this many packets sent in one key phase (`None`: only near the AEAD
    /// confidentiality limit, RFC 9001 §6.6).
    pub key_update_interval: Option<u64>,
    /// Stream limits and flow-control windows (RFC 9000 §4).
    pub streams: StreamsConfig,
    /// The congestion controller (RFC 9002 §7 NewReno, or RFC 9438 CUBIC, the default).
    pub congestion: CongestionAlgorithm,
    /// Run the initial slow start with HyStart++ (RFC 9406), with either controller: slow start ends
    /// when the smallest RTT of a round trip rises by an eighth over the round before (at least 4 ms, at
    /// most 16 ms), the sign of a queue building, and the window then grows a quarter as fast for up to
    /// five round trips (Conservative Slow Start) before congestion avoidance, instead of doubling until
    /// the bottleneck's queue overflows. Off, slow start lasts until the first loss or ECN-CE mark. Later
    /// slow starts (after persistent congestion) are the standard one either way. Default `true`.
    pub hystart: bool,
    /// Bytes of received DATAGRAM payloads (RFC 9221) held for the application, each datagram counted
    /// with 64 bytes more for its place in the queue (so that empty ones count too); the oldest are
    /// dropped beyond it. max_datagram_frame_size is announced as 65,535, or as the largest frame whose
    /// payload fits this buffer when that is less; `None`, or a buffer below 64 bytes, disables receiving
    /// datagrams: max_datagram_frame_size is not announced.
    pub datagram_receive_buffer: Option<usize>,
    /// Bytes of DATAGRAM payloads queued for sending, each datagram counted with 64 bytes more for its
    /// place in the queue (so that empty ones count too); the oldest are dropped beyond it, and a
    /// datagram larger than it is refused. 0 disables sending datagrams.
    pub datagram_send_buffer: usize,
    /// Mark packets ECT(0) and answer the peer's ECN-CE reports as congestion (RFC 9000 §13.4, RFC 9002
    /// §7.1). Each path is tested first: the first ten packets go marked, and marking goes on only once
    /// the peer's ACK frames show the marks arriving; a path that clears or rewrites them, or a peer that
    /// does not report them, gets unmarked packets. Received marks are counted and reported whatever
    /// this says. The driver ([`crate::udp`]) sets the codepoint of each [`Transmit`](crate::Transmit) on
    /// the socket; a custom loop must do the same (or turn this off).
    pub ecn: bool,
}

/// The most connection IDs a connection stores from its peer or issues to it, whatever the
/// configuration says: each costs a routing entry and a frame, and 64 leave room for any use.
const MAX_ACTIVE_CONNECTION_IDS: u64 = 64;

impl TransportConfig {
    /// `active_connection_id_limit` within what RFC 9000 §18.2 allows (at least 2) and
    /// [`MAX_ACTIVE_CONNECTION_IDS`].
    pub(crate) fn connection_id_limit(&self) -> u64 {
        self.active_connection_id_limit
            .clamp(2, MAX_ACTIVE_CONNECTION_IDS)
    }

    /// `ack_delay_exponent` within RFC 9000 §18.2's limit of 20: what is advertised, and what the ACK
    /// frames of the application space are encoded with.
    pub(crate) fn ack_delay_exponent(&self) -> u8 {
        self.ack_delay_exponent.min(20)
    }

    /// `max_ack_delay` as announced (RFC 9000 §18.2: whole milliseconds, below 2^14), which is also what
    /// the ACK timer waits for: §13.2.1 lets no ack-eliciting packet wait longer than the value announced.
    pub(crate) fn announced_max_ack_delay(&self) -> Duration {
        Duration::from_millis(self.max_ack_delay.as_millis().min((1 << 14) - 1) as u64)
    }

    /// `initial_rtt` as used: at most [`MAX_INITIAL_RTT`].
    pub(crate) fn initial_rtt(&self) -> Duration {
        self.initial_rtt.min(MAX_INITIAL_RTT)
    }
}

/// The largest initial RTT taken from the configuration: a minute covers any path a handshake can
/// complete on.
const MAX_INITIAL_RTT: Duration = Duration::from_secs(60);

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(30),
            keep_alive_interval: None,
            initial_rtt: Duration::from_millis(333),
            max_ack_delay: Duration::from_millis(25),
            ack_delay_exponent: 3,
            ack_eliciting_threshold: 2,
            max_ack_ranges: 64,
            max_tracked_ack_ranges: 256,
            mtu: 1200,
            mtu_discovery: Some(MtuDiscoveryConfig::default()),
            max_udp_payload_size: 1472,
            crypto_buffer_size: 64 * 1024,
            active_connection_id_limit: 4,
            key_update_interval: None,
            streams: StreamsConfig::default(),
            congestion: CongestionAlgorithm::default(),
            hystart: true,
            datagram_receive_buffer: Some(1024 * 1024),
            datagram_send_buffer: 1024 * 1024,
            ecn: true,
        }
    }
}

/// What a server does with a new incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AcceptPolicy {
    /// Accept every connection; the [`Event::Incoming`](crate::Event::Incoming) event only informs.
    #[default]
    Accept,
    /// Hold each new connection, sending nothing, until the caller calls
    /// [`Endpoint::accept`](crate::Endpoint::accept) or [`Endpoint::refuse`](crate::Endpoint::refuse).
    Ask,
    /// Refuse every new connection with CONNECTION_REFUSED (RFC 9000 §5.2.2, §20.1), so that clients
    /// fail fast, for a server that is going away (see
    /// [`Endpoint::set_accept_policy`](crate::Endpoint::set_accept_policy)). The refusal is sent without
    /// connection state, as a Retry is (no handle, no event; counted in
    /// [`EndpointStats::connections_refused`](crate::EndpointStats::connections_refused)), ahead of the
    /// handshake limit and the Retry policy.
    Refuse,
}

/// Settings of a server endpoint.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The TLS configuration (certificate, key, ALPN); see [`crate::crypto::tls`] for helpers. Its
    /// `max_early_data_size` is taken as 0: the engine does not accept 0-RTT. Its `ticketer` and
    /// `session_storage` are used through a wrapper per QUIC version that marks each ticket with the
    /// version (RFC 9369 §7), so only tickets issued through a quicsand endpoint on the same version
    /// resume; others get a full handshake.
    pub tls: Arc<rustls::ServerConfig>,
    /// Transport settings for accepted connections.
    pub transport: TransportConfig,
    /// Accept everything, or ask the caller.
    pub accept: AcceptPolicy,
    /// Connections still in their handshake at once; beyond this, the Initials of new ones are dropped
    /// without an answer (counted in `EndpointStats::dropped_handshake_limit`): the client's
    /// retransmissions get in once a slot is free, or the client times out. A handshake that closed
    /// before completing keeps its slot through its closing period, so that the closing connections
    /// of a flood stay within this limit too; at the limit, a new connection takes the slot of the
    /// one that closed first, once its CONNECTION_CLOSE went out (counted in
    /// `EndpointStats::closing_handshakes_ended`).
    pub max_incoming_handshakes: usize,
    /// Connections in the endpoint's table at once (handshakes, established and closing ones, and the
    /// endpoint's own outgoing ones); beyond this, a new client's Initial gets CONNECTION_CLOSE with
    /// CONNECTION_REFUSED and no state, as under [`AcceptPolicy::Refuse`] (RFC 9000 §5.2.2; §21.6 counts
    /// "the maximum number of clients the server will allow" among the mitigations of Slowloris),
    /// counted in `EndpointStats::refused_connection_limit`.
    /// Every connection holds memory for as long as its peer keeps it alive, so without a bound a host
    /// completing handshakes from many ports grows the endpoint without end. 65,536 by default (at about
    /// 9 KB each, some 580 MB of idle connections; as quinn-proto's `max_incoming`, 2^16).
    pub max_connections: usize,
    /// When a client's first Initial is answered with a Retry (RFC 9000 §8.1.2); changeable at run time
    /// with [`Endpoint::set_retry_policy`](crate::Endpoint::set_retry_policy).
    pub retry: RetryPolicy,
    /// Address validation tokens (Retry and NEW_TOKEN): key, lifetimes, clock.
    pub tokens: TokenConfig,
}

impl ServerConfig {
    /// A server with `tls` and default transport settings.
    pub fn new(tls: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tls,
            transport: TransportConfig::default(),
            accept: AcceptPolicy::Accept,
            max_incoming_handshakes: 4096,
            max_connections: 1 << 16,
            retry: RetryPolicy::default(),
            tokens: TokenConfig::default(),
        }
    }
}

/// Settings of one outgoing connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The TLS configuration (trusted roots, ALPN); see [`crate::crypto::tls`] for helpers. Its
    /// `enable_early_data` is taken as `false`: the engine does not send 0-RTT.
    pub tls: Arc<rustls::ClientConfig>,
    /// Transport settings.
    pub transport: TransportConfig,
    /// The QUIC version to start with.
    pub version: u32,
    /// Whether this connection presents a NEW_TOKEN token from the endpoint's
    /// [`token_store`](EndpointConfig::token_store) and files the tokens it receives there.
    pub use_tokens: bool,
}

impl ClientConfig {
    /// A client with `tls` and default transport settings.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls,
            transport: TransportConfig::default(),
            version: VERSION_1,
            use_tokens: true,
        }
    }
}
