//! The endpoint: one per UDP socket. It owns its connections, routes datagrams to them by connection ID
//! (RFC 9000 §5.2), accepts new connections (server side), answers unknown versions with Version
//! Negotiation (RFC 9000 §6) and schedules sending and timers fairly over its connections.
//!
//! See [`Endpoint`] for the drive rule.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{AcceptPolicy, ClientConfig, EndpointConfig, ServerConfig, TransportConfig};
use crate::conn::{initial_authenticates, Connection, EndpointEvent, IncomingInfo};
use crate::datagram::{canonical, canonical_unicast, Datagram, Transmit};
use crate::event::Event;
use crate::rng::Rng;
use crate::wire::header::{
    encode_version_negotiation, is_supported_version, HeaderError, InvariantHeader, LongType, ProtectedHeader,
};
use crate::wire::{ConnectionId, ResetToken, TransportError, TransportErrorCode};

mod handles;
mod reset;
mod routing;
mod token;
mod view;

#[cfg(test)]
mod acks;
#[cfg(test)]
mod attacks;
#[cfg(test)]
mod churn;
#[cfg(test)]
mod clock;
#[cfg(test)]
mod config_extremes;
#[cfg(test)]
mod early;
#[cfg(test)]
mod ecn;
#[cfg(test)]
mod held_memory;
#[cfg(test)]
mod lifecycle;
#[cfg(test)]
mod loss_timers;
#[cfg(test)]
mod memory_bounds;
#[cfg(test)]
mod migration;
#[cfg(test)]
mod packet_rules;
#[cfg(test)]
mod packets;
#[cfg(test)]
mod peer_errors;
#[cfg(test)]
mod tls_glue;

pub use handles::ConnectionHandle;
use handles::Table;
use reset::{RateLimit, ResetKey};
use routing::{KeyedState, Routes};
pub use token::RetryError;
pub use view::{ConnRef, StreamRef};

/// The most connections [`Endpoint::handle_batch`] lists as having received datagrams of one batch
/// before telling them it is done.
const MAX_BATCH_CONNS: usize = 16;

/// RFC 9000 §14.1: a server MUST discard an Initial packet carried in a UDP datagram with a payload
/// smaller than 1200 bytes; §5.2.2 and §6.1 apply the same floor before answering unknown versions.
const MIN_INITIAL_SIZE: usize = 1200;
/// RFC 9000 §7.2: the Destination Connection ID of a client's first Initial MUST be at least 8 bytes.
const MIN_INITIAL_DCID_LEN: usize = 8;
/// Length of the random Destination Connection ID a client starts with.
const CLIENT_INITIAL_DCID_LEN: usize = 16;
/// Fresh local connection IDs tried before giving up on a collision-prone generator.
const MAX_CID_ATTEMPTS: usize = 16;
/// Queues and heaps holding stale handles are compacted once they exceed twice the live connections
/// plus this slack, which keeps compaction amortised O(1) per push.
const COMPACT_SLACK: usize = 64;

/// Collections sized for connections are not shrunk below this capacity (see `Endpoint::shrink`).
const SHRINK_FLOOR: usize = 1024;

/// Drains of the event queue in a row that must leave it mostly unused before it shrinks.
const SPARSE_DRAINS: u32 = 16;

/// The capacity to shrink a collection of `len` elements in `capacity` to, if it is mostly empty.
fn sparse(len: usize, capacity: usize) -> Option<usize> {
    (capacity > SHRINK_FLOOR && len < capacity / 4).then_some(len.saturating_mul(2).max(SHRINK_FLOOR))
}

/// Why [`Endpoint::connect`] could not start a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server name is neither a valid DNS name nor an IP address.
    InvalidServerName,
    /// [`ClientConfig::version`] is not among the versions this endpoint supports.
    UnsupportedVersion(u32),
    /// The connection table is full.
    TooManyConnections,
    /// The connection ID generator only produced IDs already in use or not of the length its
    /// [`cid_len`](crate::ConnectionIdGenerator::cid_len) announces, or, with zero-length IDs, a
    /// connection to the same remote address exists (addresses then are the only way to route).
    ConnectionIdInUse,
    /// The connection rejected its configuration (TLS or transport settings).
    InvalidConfig(TransportError),
    /// The remote address is not one host's (multicast, broadcast or unspecified) or its port is 0: no
    /// server could answer from it, since the endpoint drops datagrams from such addresses.
    InvalidRemoteAddress(SocketAddr),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::InvalidServerName => f.write_str("invalid server name"),
            ConnectError::UnsupportedVersion(v) => write!(f, "unsupported QUIC version {v:#010x}"),
            ConnectError::TooManyConnections => f.write_str("too many connections"),
            ConnectError::ConnectionIdInUse => f.write_str("no unused connection ID available"),
            ConnectError::InvalidConfig(e) => write!(f, "invalid client configuration: {e}"),
            ConnectError::InvalidRemoteAddress(a) => write!(f, "invalid remote address {a}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The handle names a connection that is gone: it was drained and removed from its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StaleHandle(pub ConnectionHandle);

impl fmt::Display for StaleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stale connection handle {:?}", self.0)
    }
}

impl std::error::Error for StaleHandle {}

/// Counters of an [`Endpoint`], from [`Endpoint::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Datagrams given to [`Endpoint::handle_datagram`].
    pub datagrams_received: u64,
    /// Datagrams dropped because their first header did not parse, or (RFC 9000 §7.2) a client Initial
    /// chose a destination connection ID shorter than 8 bytes.
    pub dropped_malformed: u64,
    /// Datagrams dropped because no connection matches their destination connection ID (including
    /// connections already drained), or a client endpoint received an Initial for no connection.
    pub dropped_unroutable: u64,
    /// Datagrams with an Initial for a new connection dropped for being under 1200 bytes (RFC 9000 §14.1).
    pub dropped_short_initial: u64,
    /// Initials that did not authenticate with the keys of their destination connection ID, or that
    /// would start a connection but carry no CRYPTO frame (no ClientHello: a client closing, say).
    pub dropped_unauthenticated: u64,
    /// Packets of an unsupported version not answered: too small (RFC 9000 §6.1) or a client endpoint.
    pub dropped_unsupported_version: u64,
    /// New connections dropped because `max_incoming_handshakes` handshakes were in progress.
    pub dropped_handshake_limit: u64,
    /// Client Initials refused (CONNECTION_REFUSED, without state) because `ServerConfig::max_connections`
    /// connections were in the table.
    pub refused_connection_limit: u64,
    /// Handshakes that closed before completing whose closing or draining period was cut short, at
    /// `max_incoming_handshakes`, to admit a new connection in their place.
    pub closing_handshakes_ended: u64,
    /// Datagrams dropped because they came from, or arrived at, an address that is not one host's
    /// (multicast, broadcast or unspecified), or from port 0: QUIC runs over unicast, and answering
    /// such a source would reach many hosts or none.
    pub dropped_not_unicast: u64,
    /// Version Negotiation packets handed out by [`Endpoint::poll_transmit`].
    pub version_negotiations_sent: u64,
    /// Stateless resets handed out by [`Endpoint::poll_transmit`] (RFC 9000 §10.3).
    pub stateless_resets_sent: u64,
    /// Short-header packets for no connection left unanswered: too small to answer with a smaller reset,
    /// over the rate limit, or with zero-length connection IDs.
    pub stateless_resets_withheld: u64,
    /// Stateless resets received that ended a connection.
    pub stateless_resets_received: u64,
    /// Stateless packets dropped because `max_stateless_queue` were already waiting.
    pub stateless_queue_overflow: u64,
    /// Events of removed connections dropped unpolled because more than `EndpointConfig::max_stale_events`
    /// were waiting.
    pub stale_events_dropped: u64,
    /// Retry packets handed out by [`Endpoint::poll_transmit`] (RFC 9000 §8.1.2).
    pub retries_sent: u64,
    /// Held connections answered with [`Endpoint::retry`].
    pub connections_retried: u64,
    /// Client Initials with a valid Retry token: their address is validated.
    pub retry_tokens_accepted: u64,
    /// Client Initials with a Retry token of ours past `TokenConfig::retry_token_lifetime` by at most a
    /// minute: the client, having followed our Retry, would ignore another (RFC 9000 §17.2.5.2), so the
    /// connection goes on with its address not validated (three times what it sent, §8.1). Its Initials
    /// with the token were lost for a while, or it is a replay.
    pub expired_retry_tokens: u64,
    /// Client Initials refused for a Retry token of ours expired for longer than that, dated ahead by more
    /// than the clock skew allowed (10 s) and that minute, not parsing, or presented from another address
    /// or port than the one it was issued to (a client that moved after our Retry, or a replay; one that
    /// does not open at all counts in `tokens_ignored`): no connection, and an INVALID_TOKEN close to the
    /// client (RFC 9000 §8.1.2) unless the stateless queue is full.
    pub dropped_invalid_retry_token: u64,
    /// Initial packets carrying CONNECTION_CLOSE with INVALID_TOKEN handed out by
    /// [`Endpoint::poll_transmit`], answering an invalid Retry token of ours (see
    /// `dropped_invalid_retry_token`) without connection state (RFC 9000 §8.1.2).
    pub invalid_token_closes_sent: u64,
    /// Client Initials with a valid NEW_TOKEN token: their address is validated.
    pub new_tokens_accepted: u64,
    /// Client Initials with a token that does not open (another address, port or connection ID, not
    /// ours, whatever its kind byte) or an expired NEW_TOKEN token: treated as carrying none (RFC 9000
    /// §8.1.3).
    pub tokens_ignored: u64,
    /// Client Initials with a NEW_TOKEN token used before: treated as carrying none (RFC 9000 §8.1.4).
    pub new_token_replays: u64,
    /// Tokens handed to connections for NEW_TOKEN frames.
    pub new_tokens_issued: u64,
    /// Incoming connections created ([`Event::Incoming`] events).
    pub connections_incoming: u64,
    /// Incoming connections accepted (at once under [`AcceptPolicy::Accept`], else by
    /// [`Endpoint::accept`]).
    pub connections_accepted: u64,
    /// Incoming connections refused: held ones with [`Endpoint::refuse`], and under
    /// [`AcceptPolicy::Refuse`], or at `ServerConfig::max_connections`, each refusal handed out by
    /// [`Endpoint::poll_transmit`] (a client whose Initial comes again, the refusal having been lost,
    /// counts again).
    pub connections_refused: u64,
    /// Incoming connections that could not be created (no free connection ID or slot, or the connection
    /// rejected the server configuration).
    pub connections_failed: u64,
    /// Connections in the table now.
    pub connections_active: usize,
}

/// What kind of packet a [`StatelessPacket`] is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatelessKind {
    VersionNegotiation,
    Retry,
    Reset,
    /// An Initial with CONNECTION_CLOSE (INVALID_TOKEN) answering an invalid Retry token of ours.
    InvalidTokenClose,
    /// An Initial with CONNECTION_CLOSE (CONNECTION_REFUSED) under `AcceptPolicy::Refuse`.
    RefusalClose,
}

/// A packet sent without a connection (Version Negotiation, Retry, stateless reset, INVALID_TOKEN close).
#[derive(Debug)]
struct StatelessPacket {
    kind: StatelessKind,
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    payload: Vec<u8>,
}

/// What the endpoint keeps next to each connection.
struct Entry {
    /// Boxed: a connection is several kilobytes, and the table's slots would otherwise hold that much for
    /// every slot of its spare capacity.
    conn: Box<Connection>,
    /// Local connection IDs routed to this connection, removed from the index with it.
    local_cids: Vec<ConnectionId>,
    /// Server side: the client-chosen destination ID routed to this connection.
    initial_dcid: Option<ConnectionId>,
    /// The remote address routed to this connection when its local ID is empty.
    addr_key: Option<SocketAddr>,
    /// The peer's stateless reset tokens routed to this connection (`Connection::reset_tokens`).
    reset_tokens: [Option<ResetToken>; 2],
    /// Counts toward `max_incoming_handshakes` until the handshake is done.
    counts_as_handshake: bool,
    /// Closed while it counted as a handshake, and listed in `closing_handshakes`.
    closing_listed: bool,
    /// Waiting for [`Endpoint::accept`] or [`Endpoint::refuse`].
    held: bool,
    /// In `send_queue`.
    queued: bool,
    /// The deadline last registered in `timers`; heap entries that disagree are stale.
    timer: Option<Instant>,
    /// In `dirty_timers`: the connection ran since its deadline was last read.
    timer_dirty: bool,
    /// Server side: the client IP address the last NEW_TOKEN tokens were made for (tokens are bound to
    /// it).
    token_ip: Option<IpAddr>,
    /// Events of this connection in the endpoint's queue.
    events_queued: usize,
}

impl Entry {
    fn new(conn: Connection) -> Self {
        Self {
            conn: Box::new(conn),
            local_cids: Vec::new(),
            initial_dcid: None,
            addr_key: None,
            reset_tokens: [None; 2],
            counts_as_handshake: false,
            closing_listed: false,
            held: false,
            queued: false,
            timer: None,
            timer_dirty: false,
            token_ip: None,
            events_queued: 0,
        }
    }
}

/// Where a datagram goes.
enum Decision<'a> {
    Deliver(ConnectionHandle),
    Incoming {
        version: u32,
        dcid: ConnectionId,
        scid: ConnectionId,
    },
    VersionNegotiation {
        dcid: &'a [u8],
        scid: &'a [u8],
    },
    DropMalformed,
    DropUnroutable,
    /// A short header for no connection: maybe a stateless reset for one of ours, maybe a packet for a
    /// connection we lost, to be answered with one (RFC 9000 §10.3).
    UnroutableShort {
        dcid: ConnectionId,
    },
    DropUnsupportedVersion,
}

/// A QUIC endpoint: one UDP socket's worth of connections.
///
/// The endpoint does no I/O and reads no clock. The caller feeds it datagrams
/// ([`handle_datagram`](Self::handle_datagram)), expired deadlines ([`handle_timeout`](Self::handle_timeout))
/// and commands ([`connect`](Self::connect), [`accept`](Self::accept), [`close`](Self::close),
/// [`conn`](Self::conn), ...), and takes out datagrams to send, events and the next deadline.
///
/// # The drive rule
///
/// After any input or command:
///
/// 1. drain [`poll_transmit`](Self::poll_transmit) until it returns `None`, sending each [`Transmit`];
/// 2. drain [`poll_event`](Self::poll_event) until it returns `None`;
/// 3. read [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout) when
///    that instant has come (or when the next datagram arrives, whichever is first).
///
/// ```
/// # use quicsand::{Datagram, Endpoint, EndpointConfig, Transmit};
/// # use std::time::Instant;
/// # fn send(_: &Transmit, _: &[u8]) {}
/// # let mut endpoint = Endpoint::new(EndpointConfig::default(), None);
/// # let now = Instant::now();
/// # let datagram = Datagram { remote: "127.0.0.1:1".parse().unwrap(), local: None, ecn: None, payload: Default::default() };
/// # let mut buf = Vec::new();
/// endpoint.handle_datagram(now, datagram);
/// while let Some(t) = endpoint.poll_transmit(now, &mut buf) {
///     send(&t, &buf[..t.size]);
/// }
/// while let Some((handle, event)) = endpoint.poll_event() { /* ... */ }
/// let deadline = endpoint.poll_timeout();
/// ```
///
/// The crate-level example runs a whole handshake this way.
///
/// Connections are named by [`ConnectionHandle`]s. A connection stays in the table until it is drained
/// (its closing or draining period is over); then its handle goes stale and every call with it returns
/// [`StaleHandle`].
pub struct Endpoint {
    config: EndpointConfig,
    /// The versions this endpoint speaks: `config.supported_versions` that the crate parses.
    versions: Vec<u32>,
    server: Option<ServerConfig>,
    /// The server's transport configuration, shared by its connections rather than copied into each.
    server_transport: Option<Arc<TransportConfig>>,
    /// The server's TLS configuration for each of `versions`, its session tickets that version's alone
    /// (RFC 9369 §7, `crypto::tls::tickets`).
    server_tls: Vec<(u32, Arc<rustls::ServerConfig>)>,
    rng: Rng,
    cid_len: usize,
    table: Table<Entry>,
    routes: Routes,
    stateless: VecDeque<StatelessPacket>,
    /// The connections that received datagrams of the batch being handled (`handle_batch`), to be told
    /// when it is done; a connection listed again only when another came between.
    batch_conns: Vec<ConnectionHandle>,
    reset_key: ResetKey,
    reset_limit: RateLimit,
    /// Connections that may have something to send, in round-robin order; an entry's `queued` flag says
    /// whether it is here.
    send_queue: VecDeque<ConnectionHandle>,
    /// Deadlines, lazily invalidated against each entry's `timer`.
    timers: BinaryHeap<Reverse<(Instant, ConnectionHandle)>>,
    /// Connections whose deadline may have moved since it was last read: it is read again only when the
    /// caller asks for the endpoint's deadline, not after every datagram (a connection's deadline moves
    /// with nearly every packet, and reading it costs a walk over its timers).
    dirty_timers: Vec<ConnectionHandle>,
    /// Scratch list of connections whose timers expired, kept to avoid an allocation per call.
    due: Vec<ConnectionHandle>,
    events: VecDeque<(ConnectionHandle, Event)>,
    /// Events in `events` of connections removed since they were queued (at most
    /// `EndpointConfig::max_stale_events`).
    stale_events: usize,
    /// The longest the event queue was since it was last drained.
    events_peak: usize,
    /// Drains in a row that left the event queue mostly unused (see `events_drained`).
    events_sparse_drains: u32,
    /// Incoming connections still in their handshake.
    handshakes: usize,
    /// Handshakes that closed before completing, in the order they closed (they still count in
    /// `handshakes`); handles of connections gone since are skipped and pruned.
    closing_handshakes: VecDeque<ConnectionHandle>,
    stats: EndpointStats,
    /// A server's address validation tokens.
    tokens: Option<token::TokenState>,
    /// Whether new connections may run path MTU discovery (see `set_path_mtu_discovery`).
    mtu_discovery_allowed: bool,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .field("server", &self.server.is_some())
            .field("connections", &self.table.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The length of the connection IDs this endpoint issues (what it reads from short headers).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn local_cid_len(&self) -> usize {
        self.cid_len
    }

    /// An endpoint with `config`; with a `server` configuration it accepts incoming connections.
    pub fn new(config: EndpointConfig, server: Option<ServerConfig>) -> Self {
        let server = server.map(without_early_data);
        let mut rng = Rng::from_key(config.seed);
        let keys = KeyedState::new(&mut rng);
        let reset_key = ResetKey::new(&config.reset_key.unwrap_or_else(|| {
            let mut key = [0u8; 32];
            rng.fill(&mut key);
            key
        }));
        let reset_limit = RateLimit::new(config.max_stateless_resets_per_second);
        let mut versions: Vec<u32> = Vec::new();
        for v in &config.supported_versions {
            if is_supported_version(*v) && !versions.contains(v) {
                versions.push(*v);
            }
        }
        let cid_len = config.cid_generator.cid_len().min(ConnectionId::MAX_LEN);
        let tokens = server
            .as_ref()
            .map(|s| token::TokenState::new(&s.tokens, &mut rng));
        let server_transport = server.as_ref().map(|s| Arc::new(s.transport.clone()));
        let server_tls = server.as_ref().map_or_else(Vec::new, |s| {
            versions
                .iter()
                .map(|&v| (v, crate::crypto::tls::for_version(&s.tls, v)))
                .collect()
        });
        Self {
            config,
            versions,
            server,
            server_transport,
            server_tls,
            rng,
            cid_len,
            table: Table::default(),
            routes: Routes::new(keys),
            stateless: VecDeque::new(),
            batch_conns: Vec::new(),
            reset_key,
            reset_limit,
            send_queue: VecDeque::new(),
            timers: BinaryHeap::new(),
            dirty_timers: Vec::new(),
            due: Vec::new(),
            events: VecDeque::new(),
            stale_events: 0,
            events_peak: 0,
            events_sparse_drains: 0,
            handshakes: 0,
            closing_handshakes: VecDeque::new(),
            stats: EndpointStats::default(),
            tokens,
            mtu_discovery_allowed: true,
        }
    }

    /// Allows path MTU discovery (RFC 9000 §14.3) for the connections made from now on, as their
    /// [`TransportConfig::mtu_discovery`] says (`true`, the default), or turns it off for them whatever
    /// it says (`false`). Connections already made keep what they had.
    ///
    /// For sockets that cannot set the IP don't-fragment bit: RFC 9000 §14 says "UDP datagrams MUST NOT
    /// be fragmented at the IP layer", and over such a socket a probe larger than the path could get
    /// through in fragments and make the connection settle on a size the path only carries that way.
    /// [`udp::Driver`](crate::udp::Driver) turns discovery off when quinn-udp reports such a socket.
    pub fn set_path_mtu_discovery(&mut self, allowed: bool) {
        self.mtu_discovery_allowed = allowed;
    }

    /// Whether the endpoint's RNG seed is all zeros, the default: fine in tests and simulations, never on
    /// a network (see [`EndpointConfig::seed`]).
    #[cfg(feature = "udp")]
    pub(crate) fn has_zero_seed(&self) -> bool {
        self.config.seed == [0; 32]
    }

    /// Starts a connection to `remote`, authenticating the server as `server_name`. The first Initial
    /// is ready in [`poll_transmit`](Self::poll_transmit). An IPv4-mapped IPv6 `remote` is taken as the
    /// IPv4 address it maps, which the transmits then name (a caller's loop on an IPv6 socket maps it
    /// back where its system needs; [`udp::Driver`](crate::udp) does), and an IPv6 flow label in it is
    /// dropped (see [`Datagram::remote`]).
    pub fn connect(
        &mut self,
        now: Instant,
        config: ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, ConnectError> {
        if rustls::pki_types::ServerName::try_from(server_name).is_err() {
            return Err(ConnectError::InvalidServerName);
        }
        // Peers are known by one form of their address (see `Datagram::remote`).
        let given = remote;
        let remote = canonical(remote);
        if remote.port() == 0 || !crate::datagram::is_unicast(remote.ip()) {
            return Err(ConnectError::InvalidRemoteAddress(given));
        }
        if !self.versions.contains(&config.version) {
            return Err(ConnectError::UnsupportedVersion(config.version));
        }
        let local_cid = self.fresh_cid().ok_or(ConnectError::ConnectionIdInUse)?;
        if local_cid.is_empty() && self.routes.addr_in_use(&remote) {
            return Err(ConnectError::ConnectionIdInUse);
        }
        // RFC 9000 §7.2: an unpredictable Destination Connection ID of at least 8 bytes.
        let mut dcid = [0u8; CLIENT_INITIAL_DCID_LEN];
        self.rng.fill(&mut dcid);
        let initial_dcid = ConnectionId::new(&dcid).unwrap_or_default();
        let rng = self.rng.fork();
        let token = self.reset_key.token(&local_cid);
        let mut conn = Connection::new_client(
            now,
            &config,
            remote,
            server_name,
            local_cid,
            initial_dcid,
            token,
            rng,
        )
        .map_err(ConnectError::InvalidConfig)?;
        if !self.mtu_discovery_allowed {
            conn.without_mtu_discovery();
        }
        token::prepare_client(&mut conn, &config, &mut self.config.token_store, server_name);
        let h = self
            .table
            .insert(Entry::new(conn))
            .ok_or(ConnectError::TooManyConnections)?;
        self.register_local(h, local_cid, remote);
        self.after_conn(h, true);
        Ok(h)
    }

    /// Takes in one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        let len = datagram.payload.len();
        self.receive(now, datagram, len);
    }

    /// Takes in datagrams that arrived together in one buffer, as a socket's receive offload (GRO) hands
    /// them over: `batch.payload` holds datagrams of `stride` bytes each (the last may be shorter; 0:
    /// one datagram), all from `batch.remote` to `batch.local` with one ECN marking. They are handled in
    /// order, as slices of the buffer, without a copy.
    ///
    /// What the engine keeps of the datagrams past the call (stream data the application has not read,
    /// DATAGRAM frames, out-of-order CRYPTO data) is copied out of the buffer when it is a small part of
    /// it, so that it does not keep the whole batch alive: the memory held follows the receive windows.
    /// In-order stream data is held as it came while the batch is handled; then each stream keeps the
    /// slices it holds if they are at least half of the buffer (bulk data: no copy), and copies them if
    /// not. Once the application is done reading for now (its [`ConnRef`] is dropped), what it left
    /// unread of a batch is copied if that is less than half of it: a batch is kept alive only by at
    /// least half its size of unread bytes.
    pub fn handle_batch(&mut self, now: Instant, batch: Datagram, stride: usize) {
        let Datagram {
            remote,
            local,
            ecn,
            mut payload,
        } = batch;
        let buffer_len = payload.len();
        let stride = if stride == 0 { buffer_len } else { stride };
        // At least one datagram: an empty one is counted (and dropped) as `handle_datagram` would.
        loop {
            let last = payload.len() <= stride;
            let payload = if last {
                std::mem::take(&mut payload)
            } else {
                payload.split_to(stride)
            };
            let datagram = Datagram {
                remote,
                local,
                ecn,
                payload,
            };
            self.receive(now, datagram, buffer_len);
            if last {
                break;
            }
        }
        self.end_batch();
    }

    /// Connection `h` received a datagram of the batch being handled.
    fn in_batch(&mut self, h: ConnectionHandle) {
        if !self.batch_conns.contains(&h) {
            // Datagrams of one batch come from one address and almost always go to one connection (or
            // to a few in turn, which the list holds once each); a batch spread over more is told it is
            // done early, which costs copies, never memory.
            if self.batch_conns.len() >= MAX_BATCH_CONNS {
                self.end_batch();
            }
            self.batch_conns.push(h);
        }
    }

    /// Tells the connections that received datagrams of the batch that it is done: what they hold of it
    /// zero-copy, they keep or copy (see `Connection::end_batch`).
    fn end_batch(&mut self) {
        let mut conns = std::mem::take(&mut self.batch_conns);
        for h in conns.drain(..) {
            if let Some(entry) = self.table.get_mut(h) {
                entry.conn.end_batch();
            }
        }
        self.batch_conns = conns;
    }

    /// One datagram, a slice of a buffer of `buffer_len` bytes. Inlined into both callers: as a call,
    /// it and `deliver` cost about 50 instructions per datagram in callgrind (the datagram moved twice
    /// more).
    #[inline(always)]
    fn receive(&mut self, now: Instant, mut datagram: Datagram, buffer_len: usize) {
        self.stats.datagrams_received += 1;
        self.note_time(now);
        if !canonical_unicast(&mut datagram) {
            self.stats.dropped_not_unicast += 1;
            return;
        }
        // The common case first: a short header (RFC 9000 §17.3.1, fixed bit set) to one of our own IDs,
        // routed by the ID's bytes without parsing the header, which the connection does anyway.
        if let Some(h) = self.route_short(&datagram.payload) {
            return self.deliver(now, h, datagram, buffer_len);
        }
        let decision = self.classify(&datagram);
        // RFC 9000 §10.3: any packet ending in a valid stateless reset token is a stateless reset, a long
        // header too (other versions may use one), and §10.3.1: the check is owed for a datagram whose
        // first packet belongs to no connection. (Short headers to no connection are checked below, and
        // Initials to an unknown ID where they start no connection, in `handle_incoming`.)
        if matches!(
            decision,
            Decision::VersionNegotiation { .. }
                | Decision::DropMalformed
                | Decision::DropUnroutable
                | Decision::DropUnsupportedVersion
        ) && self.take_stateless_reset(now, &datagram.payload)
        {
            return;
        }
        match decision {
            Decision::Deliver(h) => self.deliver(now, h, datagram, buffer_len),
            Decision::Incoming { version, dcid, scid } => {
                self.handle_incoming(now, datagram, buffer_len, (version, dcid, scid))
            }
            Decision::VersionNegotiation { dcid, scid } => {
                self.queue_version_negotiation(&datagram, dcid, scid)
            }
            Decision::DropMalformed => self.stats.dropped_malformed += 1,
            Decision::DropUnroutable => self.stats.dropped_unroutable += 1,
            Decision::UnroutableShort { dcid } => self.handle_unroutable_short(now, datagram, dcid),
            Decision::DropUnsupportedVersion => self.stats.dropped_unsupported_version += 1,
        }
    }

    /// Drops a datagram that belongs to no connection, counting it in the stat `counter` picks, unless
    /// it is a stateless reset of one of ours (RFC 9000 §10.3.1), which is taken instead.
    fn drop_unless_reset(
        &mut self,
        now: Instant,
        payload: &[u8],
        counter: impl FnOnce(&mut EndpointStats) -> &mut u64,
    ) {
        if !self.take_stateless_reset(now, payload) {
            *counter(&mut self.stats) += 1;
        }
    }

    /// Whether `payload`, routed to no connection, ends with the reset token of a connection's peer; if
    /// so that connection was reset (RFC 9000 §10.3.1).
    fn take_stateless_reset(&mut self, now: Instant, payload: &[u8]) -> bool {
        let Some(h) = self.routes.reset_lookup(payload) else {
            return false;
        };
        let Some(entry) = self.table.get_mut(h) else {
            return false;
        };
        if !entry.conn.is_stateless_reset(payload) {
            return false;
        }
        // Counted through the connection's `EndpointEvent::StatelessReset`, as resets it finds itself.
        entry.conn.on_stateless_reset(now);
        self.after_conn(h, false);
        true
    }

    /// Hands `datagram`, a slice of a buffer of `buffer_len` bytes, to connection `h`.
    #[inline(always)]
    fn deliver(&mut self, now: Instant, h: ConnectionHandle, datagram: Datagram, buffer_len: usize) {
        let Some(entry) = self.table.get_mut(h) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        let in_batch = buffer_len > datagram.payload.len();
        entry.conn.handle_datagram(now, datagram, buffer_len);
        if in_batch {
            self.in_batch(h);
        }
        self.after_conn(h, true);
    }

    /// Takes in several received datagrams, in order.
    pub fn handle_datagrams(&mut self, now: Instant, datagrams: impl IntoIterator<Item = Datagram>) {
        for d in datagrams {
            self.handle_datagram(now, d);
        }
    }

    /// The next datagram(s) to send, written into `buf` (cleared first). Stateless packets go first,
    /// then connections take turns.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if let Some(p) = self.stateless.pop_front() {
            buf.extend_from_slice(&p.payload);
            match p.kind {
                StatelessKind::VersionNegotiation => self.stats.version_negotiations_sent += 1,
                StatelessKind::Reset => self.stats.stateless_resets_sent += 1,
                StatelessKind::Retry => self.stats.retries_sent += 1,
                StatelessKind::InvalidTokenClose => self.stats.invalid_token_closes_sent += 1,
                StatelessKind::RefusalClose => self.stats.connections_refused += 1,
            }
            return Some(Transmit {
                destination: p.destination,
                src_ip: p.src_ip,
                ecn: None,
                size: p.payload.len(),
                segment_size: None,
            });
        }
        let max_segments = self.config.max_segments.max(1);
        // Each turn pops one entry, and only a connection that produced a transmit goes back, after
        // which we return: the loop is bounded by the queue's length.
        while let Some(h) = self.send_queue.pop_front() {
            let Some(entry) = self.table.get_mut(h) else {
                continue;
            };
            match entry.conn.poll_transmit(now, buf, max_segments) {
                Some(t) => {
                    self.send_queue.push_back(h);
                    self.after_conn(h, false);
                    return Some(t);
                }
                None => {
                    entry.queued = false;
                    self.after_conn(h, false);
                }
            }
        }
        None
    }

    /// The earliest deadline of any connection: call [`handle_timeout`](Self::handle_timeout) then.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.flush_timers();
        while let Some(Reverse((t, h))) = self.timers.peek().copied() {
            if self.table.get(h).is_some_and(|e| e.timer == Some(t)) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    /// Runs every connection whose deadline is at or before `now`, each once.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush_timers();
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        while let Some(Reverse((t, h))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(entry) = self.table.get_mut(h) {
                if entry.timer == Some(t) {
                    entry.timer = None;
                    due.push(h);
                }
            }
        }
        for h in due.iter().copied() {
            if let Some(entry) = self.table.get_mut(h) {
                entry.conn.handle_timeout(now);
                self.after_conn(h, true);
            }
        }
        due.clear();
        self.due = due;
    }

    /// The next application event, with the connection it belongs to.
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        // Events queue up between two drains: the length at a drain's first call is that round's peak.
        self.events_peak = self.events_peak.max(self.events.len());
        let Some((h, event)) = self.events.pop_front() else {
            self.events_drained();
            return None;
        };
        match self.table.get_mut(h) {
            Some(entry) => entry.events_queued = entry.events_queued.saturating_sub(1),
            None => self.stale_events = self.stale_events.saturating_sub(1),
        }
        Some((h, event))
    }

    /// The event queue was drained: after [`SPARSE_DRAINS`] drains in a row whose peak filled under a
    /// quarter of it (a burst, say of connections ending together, is over), it gives storage back.
    fn events_drained(&mut self) {
        let capacity = self.events.capacity();
        if capacity > SHRINK_FLOOR && self.events_peak < capacity / 4 {
            self.events_sparse_drains += 1;
            if self.events_sparse_drains >= SPARSE_DRAINS {
                self.events
                    .shrink_to(self.events_peak.saturating_mul(2).max(SHRINK_FLOOR));
                self.events_sparse_drains = 0;
            }
        } else {
            self.events_sparse_drains = 0;
        }
        self.events_peak = 0;
    }

    /// Lets a connection held under [`AcceptPolicy::Ask`] proceed. On a connection that is not held
    /// (accepted already, or refused or closed), it does nothing.
    pub fn accept(&mut self, now: Instant, h: ConnectionHandle) -> Result<(), StaleHandle> {
        let entry = self.table.get_mut(h).ok_or(StaleHandle(h))?;
        if std::mem::take(&mut entry.held) {
            self.stats.connections_accepted += 1;
        }
        entry.conn.accept(now);
        self.after_conn(h, true);
        Ok(())
    }

    /// Refuses a connection held under [`AcceptPolicy::Ask`]: it closes with CONNECTION_REFUSED. Called on
    /// a connection that is not held (already accepted), it closes that connection the same way.
    pub fn refuse(&mut self, now: Instant, h: ConnectionHandle) -> Result<(), StaleHandle> {
        let entry = self.table.get_mut(h).ok_or(StaleHandle(h))?;
        if std::mem::take(&mut entry.held) {
            self.stats.connections_refused += 1;
        }
        entry.conn.refuse(now);
        self.after_conn(h, true);
        Ok(())
    }

    /// Closes a connection with an application error `code` and `reason` (CONNECTION_CLOSE type 0x1d).
    /// What the peer has not acknowledged is lost, as with [`ConnRef::close`].
    pub fn close(
        &mut self,
        now: Instant,
        h: ConnectionHandle,
        code: u64,
        reason: &[u8],
    ) -> Result<(), StaleHandle> {
        self.conn(h)?.close(now, code, reason);
        Ok(())
    }

    /// Closes every connection with an application error `code` and `reason`, as [`Endpoint::close`]
    /// does one, and refuses those held under [`AcceptPolicy::Ask`] (CONNECTION_REFUSED, as
    /// [`Endpoint::refuse`]); connections already closing or draining are left to end as they were. For
    /// a server that is going away, set [`AcceptPolicy::Refuse`] first with
    /// [`Endpoint::set_accept_policy`], then drive the endpoint until
    /// [`EndpointStats::connections_active`] is 0 (each connection ends after its closing period, three
    /// PTOs).
    pub fn close_all(&mut self, now: Instant, code: u64, reason: &[u8]) {
        let handles: Vec<(ConnectionHandle, bool)> = self.table.iter().map(|(h, e)| (h, e.held)).collect();
        for (h, held) in handles {
            let _ = if held {
                self.refuse(now, h)
            } else {
                self.close(now, h, code, reason)
            };
        }
    }

    /// Changes what happens to new incoming connections, from the next one on (connections already
    /// held under [`AcceptPolicy::Ask`] stay held). Returns false on a client endpoint, which has no
    /// server configuration.
    pub fn set_accept_policy(&mut self, policy: AcceptPolicy) -> bool {
        match &mut self.server {
            Some(server) => {
                server.accept = policy;
                true
            }
            None => false,
        }
    }

    /// A short-lived view of one connection, for application calls.
    pub fn conn(&mut self, h: ConnectionHandle) -> Result<ConnRef<'_>, StaleHandle> {
        if self.table.get(h).is_none() {
            return Err(StaleHandle(h));
        }
        Ok(ConnRef::new(self, h))
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            connections_active: self.table.len(),
            ..self.stats
        }
    }

    /// The connection a datagram that starts with a short header to one of our (non-empty) connection
    /// IDs belongs to; `None` sends it down [`classify`](Self::classify), which decides the same for
    /// these and handles everything else.
    fn route_short(&mut self, payload: &[u8]) -> Option<ConnectionHandle> {
        const FORM_AND_FIXED: u8 = 0xc0;
        let first = *payload.first()?;
        if first & FORM_AND_FIXED != 0x40 || self.cid_len == 0 {
            return None;
        }
        self.routes.lookup_short(payload.get(1..1 + self.cid_len)?)
    }

    /// Where a datagram goes, from its first packet's header (RFC 9000 §5.2). The connection itself
    /// splits coalesced packets.
    fn classify<'a>(&self, datagram: &'a Datagram) -> Decision<'a> {
        let payload: &'a [u8] = &datagram.payload;
        let header = match ProtectedHeader::decode(payload, self.cid_len) {
            Ok(header) => header,
            Err(HeaderError::UnsupportedVersion(_)) => return self.unsupported_version(payload),
            Err(HeaderError::Malformed(_)) => return Decision::DropMalformed,
        };
        let remote = datagram.remote;
        match header {
            ProtectedHeader::Long {
                ty,
                version,
                dcid,
                scid,
                ..
            } => {
                if !self.versions.contains(&version) {
                    return self.unsupported_version(payload);
                }
                let initial_like = matches!(ty, LongType::Initial | LongType::ZeroRtt);
                if let Some(h) = self.routes.lookup(&dcid, remote, initial_like) {
                    return Decision::Deliver(h);
                }
                if ty == LongType::Initial {
                    return Decision::Incoming { version, dcid, scid };
                }
                Decision::DropUnroutable
            }
            // RFC 9000 §5.2: Retry and Version Negotiation answer a client's packets, so they carry its
            // local ID; short headers carry any local ID. None of these creates a connection.
            ProtectedHeader::Retry { dcid, .. } | ProtectedHeader::VersionNegotiation { dcid, .. } => {
                match self.routes.lookup(&dcid, remote, false) {
                    Some(h) => Decision::Deliver(h),
                    None => Decision::DropUnroutable,
                }
            }
            ProtectedHeader::Short { dcid, .. } => match self.routes.lookup(&dcid, remote, false) {
                Some(h) => Decision::Deliver(h),
                None => Decision::UnroutableShort { dcid },
            },
        }
    }

    /// RFC 9000 §6.1, §5.2.2: a server answers a long header of an unknown version with Version
    /// Negotiation, but only in a datagram of at least 1200 bytes. A Version Negotiation packet (version
    /// 0) never gets here: it parses as such.
    fn unsupported_version<'a>(&self, payload: &'a [u8]) -> Decision<'a> {
        if self.server.is_none() || payload.len() < MIN_INITIAL_SIZE {
            return Decision::DropUnsupportedVersion;
        }
        match InvariantHeader::decode(payload, self.cid_len) {
            Ok(InvariantHeader::Long { dcid, scid, .. }) => Decision::VersionNegotiation { dcid, scid },
            Ok(InvariantHeader::Short { .. }) | Err(_) => Decision::DropMalformed,
        }
    }

    /// Queues a Version Negotiation packet answering a packet with `dcid` and `scid` (RFC 9000 §17.2.1).
    fn queue_version_negotiation(&mut self, datagram: &Datagram, dcid: &[u8], scid: &[u8]) {
        if self.stateless.len() >= self.config.max_stateless_queue {
            self.stats.stateless_queue_overflow += 1;
            return;
        }
        // RFC 9000 §17.2.1: the unused bits are arbitrary; 0x40 SHOULD be set where QUIC is multiplexed
        // with other protocols (RFC 7983).
        let unused = (self.rng.next_u64() as u8 & 0x7f) | 0x40;
        // RFC 9000 §6.3, §15: a reserved version 0x?a?a?a?a keeps clients honest about unknown versions.
        let grease = (self.rng.next_u64() as u32 & 0xf0f0_f0f0) | 0x0a0a_0a0a;
        let mut versions = self.versions.clone();
        versions.push(grease);
        let mut payload = Vec::with_capacity(7 + dcid.len() + scid.len() + 4 * versions.len());
        // The connection IDs are swapped by `encode_version_negotiation` (RFC 9000 §6.1).
        encode_version_negotiation(unused, dcid, scid, &versions, &mut payload);
        self.stateless.push_back(StatelessPacket {
            kind: StatelessKind::VersionNegotiation,
            destination: datagram.remote,
            src_ip: datagram.local,
            payload,
        });
    }

    /// A short-header datagram routed to no connection (RFC 9000 §10.3): if it ends with the reset token
    /// of a connection's peer, that connection was reset; otherwise it belongs to a connection this
    /// endpoint does not know (any more), and gets a stateless reset, rate-limited and always smaller.
    fn handle_unroutable_short(&mut self, now: Instant, datagram: Datagram, dcid: ConnectionId) {
        if self.take_stateless_reset(now, &datagram.payload) {
            return;
        }
        self.stats.dropped_unroutable += 1;
        // Without connection IDs of our own there is no way to know what a packet is for.
        // The rate limit is asked before the reset is made (its token is an HMAC), so that withheld
        // resets cost nothing; and only for a datagram a reset can answer, so that it spends no
        // allowance on the others.
        if dcid.is_empty()
            || self.stateless.len() >= self.config.max_stateless_queue
            || reset::reset_size(datagram.payload.len()).is_none()
            || !self.reset_limit.allow(now)
        {
            self.stats.stateless_resets_withheld += 1;
            return;
        }
        let Some(payload) =
            reset::stateless_reset(&self.reset_key, &mut self.rng, &dcid, datagram.payload.len())
        else {
            self.stats.stateless_resets_withheld += 1;
            return;
        };
        self.stateless.push_back(StatelessPacket {
            kind: StatelessKind::Reset,
            destination: datagram.remote,
            src_ip: datagram.local,
            payload,
        });
    }

    /// A server accepting a client's first Initial (RFC 9000 §5.2.2, §7.2, §14.1), in `datagram`, a slice
    /// of a buffer of `buffer_len` bytes.
    fn handle_incoming(
        &mut self,
        now: Instant,
        datagram: Datagram,
        buffer_len: usize,
        (version, dcid, scid): (u32, ConnectionId, ConnectionId),
    ) {
        // RFC 9000 §10.3, §10.3.1: an Initial to an unknown ID that starts no connection (and does not
        // authenticate, when that is known) belongs to no connection: it may be a stateless reset, which
        // MUST be recognised in any header form. One that starts a connection is never taken for one
        // (§10.3.1 lets a datagram whose packet is processed go unchecked): the tokens compared are the
        // peers' choice, and an Initial's tail is only unpredictable when its sender pads inside it.
        let Some(server) = &self.server else {
            // A client endpoint accepts nothing.
            self.drop_unless_reset(now, &datagram.payload, |s| &mut s.dropped_unroutable);
            return;
        };
        let accept = server.accept;
        if datagram.payload.len() < MIN_INITIAL_SIZE {
            self.drop_unless_reset(now, &datagram.payload, |s| &mut s.dropped_short_initial);
            return;
        }
        // RFC 9000 §7.2: the floor is for a client's first DCID; after a Retry the client uses the ID
        // the Retry gave it, and ours are never shorter (`token::MIN_RETRY_SCID_LEN`), so an Initial
        // below the floor cannot start a connection here, whatever its token says.
        if dcid.len() < MIN_INITIAL_DCID_LEN {
            self.drop_unless_reset(now, &datagram.payload, |s| &mut s.dropped_malformed);
            return;
        }
        // RFC 9000 §21.6: a full table refuses newcomers the same way.
        let full = self.table.len() >= server.max_connections;
        if accept == AcceptPolicy::Refuse || full {
            // RFC 9000 §5.2.2: refused without connection state, whatever the handshake limit or the
            // Retry policy (the answer is far smaller than the Initial, so it cannot amplify).
            let Some(keys) = initial_authenticates(version, &dcid, &datagram.payload) else {
                self.drop_unless_reset(now, &datagram.payload, |s| &mut s.dropped_unauthenticated);
                return;
            };
            if full {
                self.stats.refused_connection_limit += 1;
            }
            let error = TransportError::new(TransportErrorCode::CONNECTION_REFUSED, "refused by the server");
            self.queue_initial_close(&datagram, version, dcid, scid, &keys, error);
            return;
        }
        let Some(server) = &self.server else {
            return;
        };
        // At the limit, a new connection can only take the place of a handshake that closed: when
        // there is none, the Initial is dropped before it costs a decryption.
        let at_limit = self.handshakes >= server.max_incoming_handshakes;
        if at_limit && !self.has_closing_handshake() {
            self.drop_unless_reset(now, &datagram.payload, |s| &mut s.dropped_handshake_limit);
            return;
        }
        // No state for a datagram that only looks like an Initial: it must authenticate first.
        let Some(initial_keys) = initial_authenticates(version, &dcid, &datagram.payload) else {
            self.drop_unless_reset(now, &datagram.payload, |s| &mut s.dropped_unauthenticated);
            return;
        };
        // At the limit, the closed handshake whose slot the new connection takes: chosen before the
        // token is taken (a NEW_TOKEN token is spent when admitted), ended only once the connection is
        // made, so that an Initial that makes none (a Retry, a failure) costs no closing period its end.
        let ending = if at_limit {
            let Some(h) = self.closing_handshake_to_end() else {
                self.drop_unless_reset(now, &datagram.payload, |s| &mut s.dropped_handshake_limit);
                return;
            };
            Some(h)
        } else {
            None
        };
        // Address validation (RFC 9000 §8.1): the token, and the Retry policy.
        let Some(admission) = self.admit(now, &datagram, version, dcid, scid, &initial_keys) else {
            return;
        };
        let Some(server) = &self.server else {
            return;
        };
        let hold = server.accept == AcceptPolicy::Ask;
        let remote = datagram.remote;
        let Some(local_cid) = self.fresh_cid() else {
            self.stats.connections_failed += 1;
            return;
        };
        // With zero-length IDs, connections are told apart by address: one there already (but the one
        // ending) leaves no way to route the new one.
        if local_cid.is_empty()
            && self
                .routes
                .lookup(&[], remote, false)
                .is_some_and(|h| Some(h) != ending)
        {
            self.stats.connections_failed += 1;
            return;
        }
        let rng = self.rng.fork();
        let info = IncomingInfo {
            version,
            remote,
            local_ip: datagram.local,
            original_dcid: admission.original_dcid,
            client_scid: scid,
            reset_token: self.reset_key.token(&local_cid),
            retry_scid: admission.retry_scid,
            validated: admission.validated,
            initial_keys,
        };
        let Some(transport) = &self.server_transport else {
            return;
        };
        let Some((_, tls)) = self.server_tls.iter().find(|(v, _)| *v == version) else {
            return;
        };
        let mut conn = match Connection::new_server(now, tls, transport, info, local_cid, hold, rng) {
            Ok(conn) => conn,
            Err(_) => {
                self.stats.connections_failed += 1;
                return;
            }
        };
        if !self.mtu_discovery_allowed {
            conn.without_mtu_discovery();
        }
        if let Some(h) = ending {
            self.end_closing_handshake(h);
        }
        let Some(h) = self.table.insert(Entry::new(conn)) else {
            self.stats.connections_failed += 1;
            return;
        };
        self.register_local(h, local_cid, remote);
        let registered = self.routes.insert_initial(dcid, h);
        self.handshakes += 1;
        self.stats.connections_incoming += 1;
        if !hold {
            self.stats.connections_accepted += 1;
        }
        self.events.push_back((h, Event::Incoming { remote }));
        let Some(entry) = self.table.get_mut(h) else {
            return;
        };
        entry.events_queued += 1;
        if registered {
            entry.initial_dcid = Some(dcid);
        }
        entry.counts_as_handshake = true;
        entry.held = hold;
        let in_batch = buffer_len > datagram.payload.len();
        entry.conn.handle_datagram(now, datagram, buffer_len);
        if in_batch {
            self.in_batch(h);
        }
        self.after_conn(h, true);
    }

    /// A new local connection ID from the generator, unused by any connection; `None` if the generator
    /// keeps colliding, or makes IDs of another length than it announced.
    fn fresh_cid(&mut self) -> Option<ConnectionId> {
        for _ in 0..MAX_CID_ATTEMPTS {
            let cid = self.config.cid_generator.generate(&mut self.rng);
            // RFC 9000 §17.3.1: short headers do not carry the ID's length; we read `cid_len` bytes. An ID
            // of another length would route long headers and never a 1-RTT packet.
            if cid.len() != self.cid_len {
                continue;
            }
            if cid.is_empty() || !self.routes.cid_in_use(&cid) {
                return Some(cid);
            }
        }
        None
    }

    /// Routes a new connection's first local ID (or, when empty, its remote address) to it.
    fn register_local(&mut self, h: ConnectionHandle, cid: ConnectionId, remote: SocketAddr) {
        let Some(entry) = self.table.get_mut(h) else {
            return;
        };
        if cid.is_empty() {
            if self.routes.insert_addr(remote, h) {
                entry.addr_key = Some(remote);
            }
        } else if self.routes.insert_local(cid, h) {
            entry.local_cids.push(cid);
        }
    }

    /// Fuzzing hook: the final size the peer gave stream `id` of connection `h` (see
    /// `Streams::recv_final_size`).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn recv_final_size(
        &self,
        h: ConnectionHandle,
        id: crate::wire::frame::StreamId,
    ) -> Option<u64> {
        self.table.get(h)?.conn.streams.recv_final_size(id)
    }

    /// Fuzzing hook: asserts that the datagram queues of connection `h` (if it is still there) hold what
    /// their byte counts say, within the configured limits (see `Datagrams::assert_bounded`).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn assert_datagram_queues_bounded(&self, h: ConnectionHandle) {
        if let Some(entry) = self.table.get(h) {
            let conn = &entry.conn;
            conn.datagrams.assert_bounded(
                conn.config.datagram_send_buffer,
                conn.config.datagram_receive_buffer,
            );
        }
    }

    /// Test and fuzzing hook: `payload` reaches connection `h` as the decrypted payload of an
    /// authenticated 1-RTT packet from its peer (see `Connection::inject_payload`).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn inject_payload(&mut self, now: Instant, h: ConnectionHandle, payload: bytes::Bytes) {
        let Some(entry) = self.table.get_mut(h) else {
            return;
        };
        entry.conn.inject_payload(now, payload);
        self.after_conn(h, true);
    }

    /// Bookkeeping after a connection took an input or a command: applies its requests to the routing
    /// index, collects its events, removes it once drained, and otherwise reschedules it for sending
    /// (when `may_send`) and for its next deadline.
    fn after_conn(&mut self, h: ConnectionHandle, may_send: bool) {
        let Some(entry) = self.table.get_mut(h) else {
            return;
        };
        while let Some(ev) = entry.conn.poll_endpoint_event() {
            match ev {
                EndpointEvent::RetireLocalCid(cid) => {
                    self.routes.remove_local(&cid, h);
                    entry.local_cids.retain(|c| *c != cid);
                }
                EndpointEvent::ResetTokens(tokens) => {
                    for old in entry.reset_tokens.iter_mut().filter_map(Option::take) {
                        self.routes.remove_reset(&old, h);
                    }
                    // A token already routed (to another connection) stays with it.
                    for (slot, token) in entry.reset_tokens.iter_mut().zip(tokens) {
                        if let Some(token) = token {
                            if self.routes.insert_reset(token, h) {
                                *slot = Some(token);
                            }
                        }
                    }
                }
                EndpointEvent::StatelessReset => self.stats.stateless_resets_received += 1,
                EndpointEvent::HandshakeDone => {
                    if std::mem::take(&mut entry.counts_as_handshake) {
                        self.handshakes = self.handshakes.saturating_sub(1);
                    }
                    if token::issue_new_tokens(
                        &mut self.tokens,
                        self.server.as_ref(),
                        &mut entry.conn,
                        &mut self.stats,
                    ) {
                        entry.token_ip = Some(entry.conn.remote_address().ip());
                    }
                }
                EndpointEvent::PathValidated => {
                    // RFC 9000 §9.3: "After verifying a new client address, the server SHOULD send new
                    // address validation tokens": those sent before are bound to the address left.
                    let ip = entry.conn.remote_address().ip();
                    if entry.token_ip.is_some_and(|old| old != ip) {
                        entry.conn.new_tokens.replace_all();
                        if token::issue_new_tokens(
                            &mut self.tokens,
                            self.server.as_ref(),
                            &mut entry.conn,
                            &mut self.stats,
                        ) {
                            entry.token_ip = Some(ip);
                        }
                    }
                }
            }
        }
        if entry.conn.cids_wanted() > 0 {
            self.issue_cids(h);
        }
        let Some(entry) = self.table.get_mut(h) else {
            return;
        };
        if entry.conn.new_tokens.has_received() {
            token::file_received(&mut entry.conn, &mut self.config.token_store);
        }
        while let Some(ev) = entry.conn.poll_event() {
            self.events.push_back((h, ev));
            entry.events_queued += 1;
        }
        // A held connection that closed (the application closed it, or the client broke the protocol)
        // has sent or queued its CONNECTION_CLOSE: it can no longer be accepted, refused or retried.
        if entry.held && entry.conn.is_closed() {
            entry.held = false;
        }
        if entry.conn.is_drained() {
            self.remove(h);
            return;
        }
        // A handshake not yet listed as closed is looked at again below (established connections, the
        // usual case, are not).
        let unlisted_handshake = entry.counts_as_handshake && !entry.closing_listed;
        if may_send && !entry.queued {
            entry.queued = true;
            self.send_queue.push_back(h);
        }
        if !entry.timer_dirty {
            entry.timer_dirty = true;
            self.dirty_timers.push(h);
        }
        if unlisted_handshake {
            self.list_if_closed(h);
        }
        self.compact();
    }

    /// Lists `h`, a handshake, in `closing_handshakes` if it closed.
    #[cold]
    fn list_if_closed(&mut self, h: ConnectionHandle) {
        let Some(entry) = self.table.get_mut(h) else {
            return;
        };
        if entry.conn.is_closed() {
            entry.closing_listed = true;
            self.closing_handshakes.push_back(h);
            self.prune_closing_handshakes();
        }
    }

    /// Reads again the deadlines of the connections that ran since theirs was last read.
    fn flush_timers(&mut self) {
        for h in self.dirty_timers.drain(..) {
            let Some(entry) = self.table.get_mut(h) else {
                continue;
            };
            entry.timer_dirty = false;
            let deadline = entry.conn.poll_timeout();
            if deadline != entry.timer {
                entry.timer = deadline;
                if let Some(t) = deadline {
                    self.timers.push(Reverse((t, h)));
                }
            }
        }
    }

    /// Gives a connection the new connection IDs it wants (RFC 9000 §5.1.1), routed to it, each with the
    /// reset token derived from the endpoint's key.
    fn issue_cids(&mut self, h: ConnectionHandle) {
        let wanted = self.table.get(h).map_or(0, |e| e.conn.cids_wanted());
        for _ in 0..wanted {
            let Some(cid) = self.fresh_cid().filter(|c| !c.is_empty()) else {
                return;
            };
            if !self.routes.insert_local(cid, h) {
                return;
            }
            let token = self.reset_key.token(&cid);
            let Some(entry) = self.table.get_mut(h) else {
                self.routes.remove_local(&cid, h);
                return;
            };
            entry.local_cids.push(cid);
            entry.conn.add_local_cid(cid, token);
        }
    }

    /// Removes a drained connection and its routes; its handle goes stale.
    fn remove(&mut self, h: ConnectionHandle) {
        let Some(entry) = self.table.remove(h) else {
            return;
        };
        for cid in &entry.local_cids {
            self.routes.remove_local(cid, h);
        }
        if let Some(cid) = &entry.initial_dcid {
            self.routes.remove_initial(cid, h);
        }
        if let Some(remote) = &entry.addr_key {
            self.routes.remove_addr(remote, h);
        }
        for token in entry.reset_tokens.iter().flatten() {
            self.routes.remove_reset(token, h);
        }
        if entry.counts_as_handshake {
            self.handshakes = self.handshakes.saturating_sub(1);
        }
        self.stale_events += entry.events_queued;
        if self.stale_events > self.config.max_stale_events {
            self.drop_stale_events();
        }
        self.compact();
        self.shrink();
    }

    /// Drops the oldest events of removed connections until half `max_stale_events` are left: the
    /// application stopped polling events, and the connections they are about are gone. Once at the cap,
    /// every further removal would scan the queue again; halving makes the scans rare.
    #[cold]
    fn drop_stale_events(&mut self) {
        let keep = self.config.max_stale_events / 2;
        let mut dropped = 0;
        let table = &self.table;
        let excess = self.stale_events.saturating_sub(keep);
        self.events.retain(|(h, _)| {
            if dropped == excess || table.get(*h).is_some() {
                return true;
            }
            dropped += 1;
            false
        });
        self.stale_events -= dropped;
        self.stats.stale_events_dropped += dropped as u64;
    }

    /// Whether `h` is a handshake that closed before completing and still holds its slot.
    fn is_closing_handshake(&self, h: ConnectionHandle) -> bool {
        self.table
            .get(h)
            .is_some_and(|e| e.closing_listed && e.counts_as_handshake)
    }

    /// Drops the handles of connections gone (or done with their handshake) from `closing_handshakes`:
    /// those at its front at once, and all of them when they outnumber the handshakes, so that the list
    /// stays within twice the handshake limit however long one closing connection stays.
    fn prune_closing_handshakes(&mut self) {
        while let Some(&h) = self.closing_handshakes.front() {
            if self.is_closing_handshake(h) {
                break;
            }
            self.closing_handshakes.pop_front();
        }
        if self.closing_handshakes.len() > self.handshakes.saturating_mul(2).saturating_add(COMPACT_SLACK) {
            let mut list = std::mem::take(&mut self.closing_handshakes);
            list.retain(|&h| self.is_closing_handshake(h));
            self.closing_handshakes = list;
        }
        if let Some(n) = sparse(self.closing_handshakes.len(), self.closing_handshakes.capacity()) {
            self.closing_handshakes.shrink_to(n);
        }
    }

    /// Whether some handshake that closed before completing still holds its slot.
    fn has_closing_handshake(&mut self) -> bool {
        self.prune_closing_handshakes();
        !self.closing_handshakes.is_empty()
    }

    /// The handshake that closed first among those whose closing owes the peer nothing more now
    /// (draining, or its CONNECTION_CLOSE sent and no copy due): the one
    /// [`end_closing_handshake`](Self::end_closing_handshake) ends for a new connection at the limit.
    fn closing_handshake_to_end(&mut self) -> Option<ConnectionHandle> {
        self.prune_closing_handshakes();
        self.closing_handshakes.iter().copied().find(|&h| {
            self.table
                .get(h)
                .is_some_and(|e| e.closing_listed && e.counts_as_handshake && e.conn.owes_no_close())
        })
    }

    /// Frees the slot of `h`, a handshake that closed before completing (from
    /// [`closing_handshake_to_end`](Self::closing_handshake_to_end)), ending its closing or draining
    /// period early. RFC 9000 §10.2 says a server SHOULD NOT end these periods early; it is done only at
    /// `max_incoming_handshakes`, for a connection being made, where the alternative is to turn away a
    /// new client while a connection that already failed keeps the slot for three PTOs. The peer of
    /// the one ended has had its CONNECTION_CLOSE; a late packet of it finds no connection (an Initial
    /// may start a new one, within the same limit).
    fn end_closing_handshake(&mut self, h: ConnectionHandle) {
        if let Some(i) = self.closing_handshakes.iter().position(|&x| x == h) {
            self.closing_handshakes.remove(i);
        }
        self.remove(h);
        self.stats.closing_handshakes_ended += 1;
    }

    /// Gives back the storage of a burst of connections once most of them are gone: each collection
    /// sized for connections is cut to twice its content when that fills under a quarter of it.
    fn shrink(&mut self) {
        // The send queue and the timers to update hold about one entry per live connection at their
        // fullest, but are often empty for a moment: they are measured against the connections.
        let live = self.table.len();
        if let Some(n) = sparse(live, self.send_queue.capacity()) {
            self.send_queue.shrink_to(n);
        }
        if let Some(n) = sparse(live, self.dirty_timers.capacity()) {
            self.dirty_timers.shrink_to(n);
        }
        if let Some(n) = sparse(self.timers.len(), self.timers.capacity()) {
            self.timers.shrink_to(n);
        }
        self.routes.shrink();
    }

    /// Drops stale handles from the send queue and the timer heap once they outnumber live ones.
    #[inline]
    fn compact(&mut self) {
        let limit = self.table.len().saturating_mul(2).saturating_add(COMPACT_SLACK);
        // Checked after every datagram; the work below is rare.
        if self.send_queue.len() > limit || self.dirty_timers.len() > limit || self.timers.len() > limit {
            self.compact_over(limit);
        }
    }

    /// The rare part of [`compact`](Self::compact).
    fn compact_over(&mut self, limit: usize) {
        if self.send_queue.len() > limit {
            let table = &self.table;
            self.send_queue
                .retain(|h| table.get(*h).is_some_and(|e| e.queued));
        }
        if self.dirty_timers.len() > limit {
            self.flush_timers();
        }
        if self.timers.len() > limit {
            self.timers = self
                .table
                .iter()
                .filter_map(|(h, e)| e.timer.map(|t| Reverse((t, h))))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests;

/// `server` with a TLS configuration that does not offer early data. The engine does not take 0-RTT
/// (its packets are dropped), so a configuration allowing it (`max_early_data_size`, as quinn's does)
/// would have rustls tell a resuming client that its early data was accepted (RFC 9001 §4.6.2), and the
/// client would find out only through loss recovery that it has to send that data again.
fn without_early_data(mut server: ServerConfig) -> ServerConfig {
    if server.tls.max_early_data_size != 0 {
        let mut tls = (*server.tls).clone();
        tls.max_early_data_size = 0;
        server.tls = Arc::new(tls);
    }
    server
}
