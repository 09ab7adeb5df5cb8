//! The connection: state, construction, the API the endpoint drives, timers and closing.
//!
//! The receive path is in `recv.rs`, packet assembly in `send.rs`.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ack::AckConfig;
use super::cids::LocalCids;
use super::congestion::{initial_window, new_controller, CongestionController, Pacer, SpuriousUndo};
use super::datagrams::{Datagrams, SendDatagramError, RECV_ENTRY_COST};
use super::early::EarlyPackets;
use super::ecn::Ecn;
use super::key_update::OneRttKeys;
use super::mtud::MtuDiscovery;
use super::path::PathValidation;
use super::recovery::{LossDetection, RecoveryContext, SentPacket, TimeoutOutcome};
use super::send::FIRST_PN_SKIP_PERIOD;
use super::spaces::{PacketSpace, SentFrames, Spaces};
use super::streams::Streams;
use super::tokens::NewTokens;
use super::SpaceId;
use crate::config::{ClientConfig, TransportConfig};
#[cfg(not(fuzzing))]
use crate::crypto::tls::RustlsSession;
use crate::crypto::tls::{KeyChange, Level, Session};
use crate::crypto::{connection_initial_keys, Keys, Suite};
use crate::datagram::{Datagram, Transmit};
use crate::event::{ConnectionError, Event};
use crate::rng::Rng;
use crate::wire::frame::{CloseCode, ConnectionClose};
use crate::wire::transport_params::TransportParameters;
use crate::wire::{ConnectionId, ResetToken, TransportError, TransportErrorCode, VarInt};
use crate::Side;

/// What a connection asks of its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointEvent {
    /// Stop routing this connection ID to the connection (the peer retired it).
    RetireLocalCid(ConnectionId),
    /// The stateless reset tokens a reset from the peer may end with may have changed: those of
    /// [`Connection::reset_tokens`] (RFC 9000 §10.3.1).
    ResetTokens([Option<ResetToken>; 2]),
    /// The handshake finished (counts toward `max_incoming_handshakes`).
    HandshakeDone,
    /// A stateless reset from the peer ended the connection (counted in the endpoint's stats, whether the
    /// endpoint found the reset or the connection did).
    StatelessReset,
    /// A server validated a new address of the client's (RFC 9000 §9.3: new address validation tokens
    /// SHOULD follow).
    PathValidated,
}

/// Parameters of a new server-side connection, taken from the client's first Initial.
#[derive(Debug)]
pub(crate) struct IncomingInfo {
    pub(crate) version: u32,
    pub(crate) remote: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    /// The destination connection ID the client chose (initial keys derive from it).
    pub(crate) original_dcid: ConnectionId,
    /// The client's source connection ID.
    pub(crate) client_scid: ConnectionId,
    /// The stateless reset token of the server's handshake connection ID (a transport parameter).
    pub(crate) reset_token: ResetToken,
    /// The source connection ID of the Retry the client followed (RFC 9000 §7.3); its Initial keys
    /// derive from it, the ID the client now sends to.
    pub(crate) retry_scid: Option<ConnectionId>,
    /// A token validated the client's address: no amplification limit (RFC 9000 §8.1).
    pub(crate) validated: bool,
    /// The Initial keys that authenticated the client's Initial (RFC 9001 §5.2: derived from the DCID
    /// of the client's current Initial, the Retry's source connection ID after a Retry).
    pub(crate) initial_keys: Keys,
}

/// Where the connection is in its life (RFC 9000 §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Handshake in progress.
    Handshake,
    /// Handshake complete.
    Established,
    /// We closed: only CONNECTION_CLOSE goes out, until the deadline (RFC 9000 §10.2.1).
    Closing { until: Instant },
    /// The peer closed: nothing goes out, until the deadline (RFC 9000 §10.2.2).
    Draining { until: Instant },
    /// Over: the endpoint frees the connection.
    Drained,
}

/// The network path: the peer's address, and what the anti-amplification limit needs to know of it.
#[derive(Debug, Clone)]
pub(crate) struct Path {
    pub(crate) remote: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    /// RFC 9000 §8.1: until the peer's address is validated, a server sends at most three times what it
    /// received.
    pub(crate) validated: bool,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    /// The size of the datagrams we build.
    pub(crate) mtu: u16,
    /// Our connection ID the peer's newest 1-RTT packet from this path was sent to: a peer that keeps it
    /// from a new address was rebound rather than moved on purpose (RFC 9000 §9.5).
    pub(crate) peer_dcid: ConnectionId,
}

impl Path {
    /// Bytes the anti-amplification limit lets us send now (RFC 9000 §8.1).
    pub(crate) fn send_allowance(&self) -> u64 {
        if self.validated {
            u64::MAX
        } else {
            (3 * self.bytes_received).saturating_sub(self.bytes_sent)
        }
    }
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// Bytes sent in UDP payloads.
    pub bytes_sent: u64,
    /// Bytes received in UDP payloads.
    pub bytes_received: u64,
    /// QUIC packets sent.
    pub packets_sent: u64,
    /// QUIC packets received and authenticated.
    pub packets_received: u64,
    /// Packets dropped: undecryptable, without keys, duplicate or malformed (held packets dropped later
    /// included).
    pub packets_dropped: u64,
    /// Packets held, unopened, until their keys were there (RFC 9001 §4.1.4, §5.7): each is later
    /// either processed (and counted in `packets_received`) or dropped (`packets_dropped`).
    pub packets_buffered: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Key updates (either side started them).
    pub key_updates: u64,
    /// Stream data bytes sent for the first time.
    pub stream_bytes_sent: u64,
    /// Stream data bytes sent again after a loss.
    pub stream_bytes_retransmitted: u64,
    /// Stream data bytes received, as counted by flow control: the new credit the peer used, up to each
    /// stream's highest offset received (gaps included, duplicates not counted); a reset stream counts
    /// up to its final size (RFC 9000 §4.5).
    pub stream_bytes_received: u64,
    /// DATAGRAM frames sent.
    pub datagram_frames_sent: u64,
    /// DATAGRAM frames received.
    pub datagram_frames_received: u64,
    /// Datagrams dropped from a full send queue (the oldest go first), or from the queue because they
    /// no longer fit a packet (the path MTU shrank, or the peer's connection ID grew longer).
    pub datagrams_send_dropped: u64,
    /// Received datagrams dropped because the application did not read them in time.
    pub datagrams_recv_dropped: u64,
    /// Smoothed RTT.
    pub smoothed_rtt: Duration,
    /// Minimum RTT.
    pub min_rtt: Duration,
    /// Latest RTT sample.
    pub latest_rtt: Duration,
    /// PTOs since the last acknowledgement.
    pub pto_count: u32,
    /// The congestion window, in bytes.
    pub cwnd: u64,
    /// The slow start threshold, in bytes (`u64::MAX` until the first loss).
    pub ssthresh: u64,
    /// Bytes sent and neither acknowledged nor declared lost.
    pub bytes_in_flight: u64,
    /// Congestion events (losses that reduced the window).
    pub congestion_events: u64,
    /// Packets declared lost and then acknowledged after all (spurious losses, from reordering).
    pub packets_lost_spurious: u64,
    /// Congestion events undone: every packet declared lost in the event and its recovery period
    /// proved spurious, so the window and threshold went back to what they were before it.
    pub congestion_events_undone: u64,
    /// Times the peer's address changed and the connection followed it (RFC 9000 §9.3).
    pub path_migrations: u64,
    /// Path validations that failed, sending the connection back to its previous path.
    pub path_validation_failures: u64,
    /// Connection IDs the peer retired (each replaced by a new one).
    pub cids_retired_by_peer: u64,
    /// The size of the UDP payloads the connection sends now (raised by path MTU discovery).
    pub path_mtu: u16,
    /// Path MTU probes sent (RFC 9000 §14.3).
    pub mtu_probes_sent: u64,
    /// Path MTU probes declared lost (not counted as congestion).
    pub mtu_probes_lost: u64,
    /// Times the path seemed to stop carrying the size in use (RFC 8899 §4.3: persistent congestion,
    /// PTOs in a row, or, after losses of only larger packets in a row, a lost probe of that size) and
    /// the size went back to 1200 bytes.
    pub mtu_black_holes: u64,
    /// Packets sent marked ECT(0) (RFC 9000 §13.4.2).
    pub ecn_marked_sent: u64,
    /// ECN validations that failed (once per path at most): the path or the peer did not carry or
    /// report the marks, so packets went out unmarked after.
    pub ecn_validation_failures: u64,
    /// Increases of the peer-reported ECN-CE count, each answered as a congestion signal (RFC 9002 §7.1).
    pub ecn_ce_signals: u64,
}

/// The connection close this side sends while closing.
#[derive(Debug, Clone)]
pub(crate) struct PendingClose {
    /// The frame for 1-RTT packets.
    pub(crate) frame: ConnectionClose,
    /// Whether a copy should go out.
    pub(crate) pending: bool,
    /// A copy went into the datagram being built (a close that does not fit its packet waits for the
    /// next one).
    pub(crate) written: bool,
    /// Datagrams received since the last copy went out, and how many to wait for before the next
    /// (doubling, RFC 9000 §10.2.1: limit the rate of CONNECTION_CLOSE sent while closing).
    pub(crate) received: u32,
    pub(crate) threshold: u32,
}

/// One QUIC connection.
pub(crate) struct Connection {
    pub(crate) side: Side,
    pub(crate) version: u32,
    pub(crate) state: State,
    pub(crate) config: Arc<TransportConfig>,
    pub(crate) session: Box<dyn Session>,
    /// Wire-visible randomness of this connection (derived from the endpoint's seed).
    pub(crate) rng: Rng,
    pub(crate) path: Path,
    /// A validation of a new peer address in progress (RFC 9000 §8.2, §9).
    pub(crate) path_validation: Option<Box<PathValidation>>,
    /// Initial, Handshake, Data.
    pub(crate) spaces: Spaces,
    pub(crate) one_rtt: Option<OneRttKeys>,
    pub(crate) recovery: LossDetection<SentFrames>,
    /// The space TLS writes into.
    pub(crate) write_space: SpaceId,
    /// Our handshake connection ID (the SCID of our long headers).
    pub(crate) local_cid: ConnectionId,
    /// The connection IDs we issued (RFC 9000 §5.1).
    pub(crate) local_cids: LocalCids,
    /// The peer's connection ID (our DCID).
    pub(crate) remote_cid: ConnectionId,
    /// The DCID of the client's first Initial.
    pub(crate) original_dcid: ConnectionId,
    /// The peer's handshake connection ID, the SCID of its long headers: at a client, the server's, once a
    /// packet from the server is processed (it is then fixed, RFC 9000 §7.2, whatever IDs the connection
    /// moves to later); at a server, the client's.
    pub(crate) peer_handshake_cid: Option<ConnectionId>,
    /// A client: the token to echo in Initials (from a Retry, or a NEW_TOKEN of an earlier connection).
    pub(crate) token: Bytes,
    /// The SCID of the Retry the client followed.
    pub(crate) retry_scid: Option<ConnectionId>,
    /// NEW_TOKEN frames: those a server sends, and where a client files those it receives.
    pub(crate) new_tokens: NewTokens,
    pub(crate) peer_params: Option<TransportParameters>,
    pub(crate) handshake_complete: bool,
    pub(crate) handshake_confirmed: bool,
    /// A server: HANDSHAKE_DONE waits to be sent (or sent again after loss).
    pub(crate) handshake_done_pending: bool,
    /// A server: the client acknowledged HANDSHAKE_DONE.
    pub(crate) handshake_done_acked: bool,
    /// A held server connection sends nothing until accepted.
    pub(crate) hold: bool,
    pub(crate) close: Option<PendingClose>,
    /// PATH_RESPONSE data owed.
    pub(crate) path_response: Option<[u8; 8]>,
    /// A PATH_RESPONSE owed to another address than the current path's (RFC 9000 §8.2.2); boxed, as it is
    /// rare and would otherwise add about 100 bytes to every connection.
    pub(crate) off_path_response: Option<Box<super::path::OffPathResponse>>,
    /// Sequence numbers of peer connection IDs we took out of use after a path change (§9.5) and retired
    /// above the peer's retire_prior_to (a few at most): a late copy of their NEW_CONNECTION_ID is not
    /// taken as new.
    pub(crate) retired_spares: VecDeque<u64>,
    /// RETIRE_CONNECTION_ID sequence numbers owed.
    pub(crate) retire_cids: Vec<u64>,
    /// The peer's spare connection IDs (sequence, ID, reset token), bounded by our
    /// active_connection_id_limit.
    pub(crate) peer_cids: Vec<(u64, ConnectionId, ResetToken)>,
    /// The stateless reset token of `remote_cid`, when the peer gave one.
    pub(crate) remote_reset_token: Option<ResetToken>,
    /// Sequence number of `remote_cid`.
    pub(crate) remote_cid_seq: u64,
    /// The largest retire_prior_to seen.
    pub(crate) peer_retire_prior_to: u64,
    /// The last activity that restarted the idle timer (RFC 9000 §10.1). The deadline is derived when
    /// asked for, not on every packet.
    pub(crate) idle_since: Option<Instant>,
    /// Whether an ack-eliciting packet went out since the last packet was received (RFC 9000 §10.1).
    pub(crate) ack_eliciting_since_receive: bool,
    /// When the last ack-eliciting packet went out (keep-alive).
    pub(crate) last_ack_eliciting_sent: Option<Instant>,
    /// Packets that failed authentication, with any keys (RFC 9001 §6.6 integrity limit).
    pub(crate) auth_failures: u64,
    /// A copy of the ciphertext of a 1-RTT packet tried with two keys after our key update (see
    /// `handle_packet`): kept for the next such packet, freed once a packet of the new phase opens.
    pub(crate) open_scratch: Vec<u8>,
    /// A key update was asked for.
    pub(crate) key_update_requested: bool,
    /// A client: Initial keys go once the first Handshake packet is sent (RFC 9001 §4.9.1).
    pub(crate) discard_initial_after_send: bool,
    pub(crate) datagrams: Datagrams,
    /// Packets held until their keys are there (RFC 9001 §4.1.4); `None` when there are none, as on
    /// every established connection.
    pub(crate) early: Option<Box<EarlyPackets>>,
    /// Streams and flow control (RFC 9000 §2 to §4).
    pub(crate) streams: Streams,
    /// The congestion controller (RFC 9002 §7, RFC 9438).
    pub(crate) cc: Box<dyn CongestionController>,
    /// The controller before the last congestion event, while that event may still prove spurious.
    pub(crate) cc_undo: Option<SpuriousUndo>,
    /// Spreads each window over the RTT (RFC 9002 §7.7).
    pub(crate) pacer: Pacer,
    /// Path MTU discovery (RFC 9000 §14.3): its current size is `path.mtu`.
    pub(crate) mtud: MtuDiscovery,
    /// ECN marking and validation on the current path (RFC 9000 §13.4.2).
    pub(crate) ecn: Ecn,
    /// Whether the packets of the transmit being built go out marked ECT(0): decided once per
    /// transmit, whose datagrams share one codepoint.
    pub(crate) marking: bool,
    /// The packet being built, if it is not an ordinary one.
    pub(crate) building: Building,
    /// When pacing next lets a packet go, if it held one back.
    pub(crate) pacing_until: Option<Instant>,
    /// The next 1-RTT packet number to leave unused (optimistic ACK defence, RFC 9000 §21.4).
    pub(crate) next_pn_skip: u64,
    /// The current mean distance between skips, doubling up to a bound.
    pub(crate) pn_skip_period: u64,
    /// Whether the packet being built may carry new data: false while the window or pacing holds it.
    pub(crate) blocked: bool,
    /// Whether what holds new data back leaves the window in use: the window itself, or pacing with at
    /// least half of the window in flight (RFC 9002 §7.8).
    pub(crate) window_limited: bool,
    /// Whether the last send stopped for lack of data rather than for the window (RFC 9002 §7.8).
    pub(crate) app_limited: bool,
    pub(crate) events: VecDeque<Event>,
    pub(crate) endpoint_events: VecDeque<EndpointEvent>,
    pub(crate) stats: ConnectionStats,
    /// qlog output, when the caller installed a sink.
    #[cfg(feature = "qlog")]
    pub(crate) qlog: crate::qlog::Qlog,
}

/// `now + d`, with `d` capped so that no peer-chosen or configured duration can overflow the clock (a
/// peer may announce an idle timeout of 2^62 ms, for example).
/// The largest UDP payload of any datagram: 65,535 bytes less the 8 of the UDP header (RFC 9000 §18.2
/// gives it as the largest max_udp_payload_size).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 65_527;

/// The datagram size a connection starts with: the configured one, within what UDP carries and never
/// below the 1200 bytes every QUIC path carries (RFC 9000 §14).
fn starting_mtu(config: &TransportConfig) -> u16 {
    config
        .mtu
        .clamp(super::send::MIN_INITIAL_DATAGRAM as u16, MAX_UDP_PAYLOAD)
}

pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    const CAP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d.min(CAP)).unwrap_or(now)
}

/// What kind of 1-RTT packet is being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Building {
    /// Whatever is due.
    Ordinary,
    /// A path MTU probe: PING and PADDING (RFC 9000 §14.4).
    MtuProbe,
    /// The PATH_CHALLENGE to the path the peer left, sent to `dcid` (RFC 9000 §9.3.3), with the
    /// PATH_RESPONSE owed to a challenge that came from there, if any (§8.2.2).
    OldPathChallenge {
        dcid: ConnectionId,
        data: [u8; 8],
        response: Option<[u8; 8]>,
    },
    /// A PATH_RESPONSE owed to another address, sent to `dcid` (RFC 9000 §8.2.2).
    OffPathResponse { dcid: ConnectionId, data: [u8; 8] },
}

/// The largest datagram payload whose DATAGRAM frame, with its length field, takes at most `room` bytes
/// (RFC 9221 §4): the type byte, a variable-length integer of 1, 2, 4 or 8 bytes, the data. (The length
/// field grows with the data: above 16383 bytes it takes 4.)
fn datagram_payload_within(room: usize) -> Option<usize> {
    [1, 2, 4, 8]
        .into_iter()
        .filter_map(|len_size| {
            let data = room.checked_sub(1 + len_size)?;
            (VarInt::size(data as u64) <= len_size).then_some(data)
        })
        .max()
}

/// The largest DATAGRAM frame size this side announces when it accepts datagrams (RFC 9221 §3).
const MAX_DATAGRAM_FRAME_SIZE: u64 = 65535;

/// The max_datagram_frame_size this side announces, and so the largest DATAGRAM frame it takes (RFC 9221
/// §3): [`MAX_DATAGRAM_FRAME_SIZE`], or less when the receive buffer could not hold a datagram that large.
/// `None` when datagrams are not received at all, or when the buffer could hold none.
pub(crate) fn max_datagram_frame_size(config: &TransportConfig) -> Option<u64> {
    let payload = config.datagram_receive_buffer?.checked_sub(RECV_ENTRY_COST)? as u64;
    // The frame's type byte comes on top of the payload: the largest frame without a length field
    // carries what the buffer holds, one with a length field a little less.
    Some(payload.saturating_add(1).min(MAX_DATAGRAM_FRAME_SIZE))
}

/// The transport parameters this side sends, from its configuration (RFC 9000 §18.2).
fn local_params(config: &TransportConfig, local_cid: ConnectionId) -> TransportParameters {
    let mut params = TransportParameters {
        // Whole milliseconds on the wire, where 0 means none (RFC 9000 §18.2): a timeout under 1 ms is
        // announced as 1 ms rather than as none.
        max_idle_timeout: config.max_idle_timeout.map_or(VarInt::ZERO, |t| {
            let ms = t.as_millis().min(u128::from(u64::MAX)) as u64;
            VarInt::saturating(if t.is_zero() { 0 } else { ms.max(1) })
        }),
        max_udp_payload_size: VarInt::from(config.max_udp_payload_size.clamp(1200, MAX_UDP_PAYLOAD)),
        ack_delay_exponent: VarInt::from(config.ack_delay_exponent()),
        max_ack_delay: VarInt::saturating(config.announced_max_ack_delay().as_millis() as u64),
        active_connection_id_limit: VarInt::saturating(config.connection_id_limit()),
        initial_source_connection_id: Some(local_cid),
        // Our client never moves on purpose, and a server asks its clients not to (RFC 9000 §18.2). A
        // server still follows a client's new address (§9: it MAY "proceed with path validation and
        // allow the peer to migrate" rather than drop such packets), as a NAT rebinding needs.
        disable_active_migration: true,
        // RFC 9221 §3: announcing a maximum frame size enables receiving datagrams.
        max_datagram_frame_size: max_datagram_frame_size(config).map(VarInt::saturating),
        ..TransportParameters::default()
    };
    // Flow-control windows and stream limits (RFC 9000 §18.2).
    config.streams.fill_params(&mut params);
    params
}

/// Consecutive PTOs after which a connection above the base datagram size suspects a black hole.
const BLACK_HOLE_PTOS: u32 = 3;

impl Connection {
    #[allow(clippy::too_many_arguments)]
    fn new(
        now: Instant,
        side: Side,
        version: u32,
        config: Arc<TransportConfig>,
        session: Box<dyn Session>,
        path: Path,
        local_cid: ConnectionId,
        remote_cid: ConnectionId,
        original_dcid: ConnectionId,
        initial_keys: Keys,
        reset_token: ResetToken,
        rng: Rng,
    ) -> Result<Self, TransportError> {
        let ack_config = AckConfig {
            max_ack_delay: config.announced_max_ack_delay(),
            ack_eliciting_threshold: config.ack_eliciting_threshold,
            max_ack_ranges: config.max_ack_ranges.max(1),
            max_tracked_ranges: config.max_tracked_ack_ranges.max(1),
        };
        let spaces = Spaces::new(ack_config);
        let (mtu, initial_rtt) = (path.mtu, config.initial_rtt());
        let cc = new_controller(&config, mtu);
        let mtud = MtuDiscovery::new(mtu, config.mtu_discovery);
        let streams = Streams::new(side, &config.streams);
        let ecn = Ecn::new(config.ecn);
        let mut conn = Self {
            side,
            version,
            state: State::Handshake,
            recovery: LossDetection::new(side, config.initial_rtt()),
            config,
            session,
            rng,
            path,
            path_validation: None,
            spaces,
            one_rtt: None,
            write_space: SpaceId::Initial,
            local_cid,
            local_cids: LocalCids::new(local_cid, reset_token),
            remote_cid,
            original_dcid,
            peer_handshake_cid: side.is_server().then_some(remote_cid),
            token: Bytes::new(),
            retry_scid: None,
            new_tokens: NewTokens::default(),
            peer_params: None,
            handshake_complete: false,
            handshake_confirmed: false,
            handshake_done_pending: false,
            handshake_done_acked: false,
            hold: false,
            close: None,
            path_response: None,
            off_path_response: None,
            retired_spares: VecDeque::new(),
            retire_cids: Vec::new(),
            peer_cids: Vec::new(),
            remote_reset_token: None,
            remote_cid_seq: 0,
            peer_retire_prior_to: 0,
            idle_since: None,
            ack_eliciting_since_receive: false,
            last_ack_eliciting_sent: None,
            auth_failures: 0,
            open_scratch: Vec::new(),
            key_update_requested: false,
            discard_initial_after_send: false,
            datagrams: Datagrams::default(),
            early: None,
            streams,
            cc,
            cc_undo: None,
            pacer: Pacer::new(now, initial_window(mtu), mtu, initial_rtt),
            mtud,
            ecn,
            marking: false,
            building: Building::Ordinary,
            pacing_until: None,
            blocked: false,
            window_limited: false,
            next_pn_skip: 0,
            pn_skip_period: FIRST_PN_SKIP_PERIOD,
            app_limited: true,
            events: VecDeque::new(),
            endpoint_events: VecDeque::new(),
            stats: ConnectionStats::default(),
            #[cfg(feature = "qlog")]
            qlog: crate::qlog::Qlog::new(now),
        };
        conn.spaces[SpaceId::Initial.index()].keys = Some(initial_keys);
        conn.next_pn_skip = 1 + conn.rng.below(FIRST_PN_SKIP_PERIOD);
        #[cfg(feature = "qlog")]
        conn.qlog.set_local_ack_exponent(conn.config.ack_delay_exponent());
        Ok(conn)
    }

    /// Turns path MTU discovery off before the connection sends anything: it keeps its starting size
    /// (see `Endpoint::set_path_mtu_discovery`).
    pub(crate) fn without_mtu_discovery(&mut self) {
        self.mtud = MtuDiscovery::new(self.mtud.current(), None);
    }

    /// A client connection; its first Initial is ready in `poll_transmit`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_client(
        now: Instant,
        config: &ClientConfig,
        remote: SocketAddr,
        server_name: &str,
        local_cid: ConnectionId,
        initial_dcid: ConnectionId,
        reset_token: ResetToken,
        rng: Rng,
    ) -> Result<Self, TransportError> {
        let params = local_params(&config.transport, local_cid);
        #[cfg(not(fuzzing))]
        let session = RustlsSession::client(config.tls.clone(), server_name, &params, config.version)
            .map_err(|e| TransportError::internal_error(format!("TLS: {e}")))?;
        // Fuzzing builds complete the handshake without cryptography (docs/fuzzing.md).
        #[cfg(fuzzing)]
        let session = crate::crypto::tls::NullSession::client(server_name, &params);
        let path = Path {
            remote,
            local_ip: None,
            validated: true,
            bytes_received: 0,
            bytes_sent: 0,
            mtu: starting_mtu(&config.transport),
            peer_dcid: local_cid,
        };
        let initial_keys = connection_initial_keys(config.version, &initial_dcid, Side::Client)
            .map_err(|e| TransportError::internal_error(format!("initial keys: {e}")))?;
        let mut conn = Self::new(
            now,
            Side::Client,
            config.version,
            Arc::new(config.transport.clone()),
            Box::new(session),
            path,
            local_cid,
            initial_dcid,
            initial_dcid,
            initial_keys,
            reset_token,
            rng,
        )?;
        conn.reset_idle(now);
        conn.drive_tls(now)?;
        Ok(conn)
    }

    /// A server connection for a client's first Initial; feed that datagram with `handle_datagram` next.
    ///
    /// `transport` is the server configuration's, shared by all the endpoint's server connections, and
    /// `tls` its TLS configuration for the connection's version (`crypto::tls::tickets`).
    #[cfg_attr(fuzzing, allow(unused_variables))]
    pub(crate) fn new_server(
        now: Instant,
        tls: &Arc<rustls::ServerConfig>,
        transport: &Arc<TransportConfig>,
        info: IncomingInfo,
        local_cid: ConnectionId,
        hold: bool,
        rng: Rng,
    ) -> Result<Self, TransportError> {
        let mut params = local_params(transport, local_cid);
        params.original_destination_connection_id = Some(info.original_dcid);
        // RFC 9000 §18.2: the server gives the reset token of its handshake connection ID; none for a
        // zero-length ID (§10.3.2): derived from the empty ID, it would be every client's token, and a
        // packet without an ID says nothing of its connection, so no reset is ever sent for it.
        params.stateless_reset_token = (!local_cid.is_empty()).then_some(info.reset_token);
        // RFC 9000 §7.3: after a Retry, the server names the Retry's source connection ID too.
        params.retry_source_connection_id = info.retry_scid;
        #[cfg(not(fuzzing))]
        let session = RustlsSession::server(tls.clone(), &params, info.version)
            .map_err(|e| TransportError::internal_error(format!("TLS: {e}")))?;
        #[cfg(fuzzing)]
        let session = crate::crypto::tls::NullSession::server(&params);
        let path = Path {
            remote: info.remote,
            local_ip: info.local_ip,
            validated: info.validated,
            bytes_received: 0,
            bytes_sent: 0,
            mtu: starting_mtu(transport),
            peer_dcid: local_cid,
        };
        let mut conn = Self::new(
            now,
            Side::Server,
            info.version,
            Arc::clone(transport),
            Box::new(session),
            path,
            local_cid,
            info.client_scid,
            info.original_dcid,
            info.initial_keys,
            info.reset_token,
            rng,
        )?;
        conn.original_dcid = info.original_dcid;
        conn.retry_scid = info.retry_scid;
        conn.hold = hold;
        conn.reset_idle(now);
        Ok(conn)
    }

    // ----------------------------------------------------------------------------------------------
    // TLS

    /// Feeds in-order CRYPTO data of `space` to TLS, then pulls what TLS wants to send and any new keys.
    pub(crate) fn read_crypto(&mut self, now: Instant, space: SpaceId) -> Result<(), TransportError> {
        let level = match space {
            SpaceId::Initial => Level::Initial,
            SpaceId::Handshake => Level::Handshake,
            SpaceId::Data => Level::OneRtt,
        };
        while let Some(chunk) = self.spaces[space.index()].crypto_recv.read() {
            self.session.read_handshake(level, &chunk)?;
        }
        self.drive_tls(now)
    }

    /// Pulls handshake bytes and key changes from TLS, checks the peer's transport parameters and notices
    /// the end of the handshake.
    pub(crate) fn drive_tls(&mut self, now: Instant) -> Result<(), TransportError> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let change = self.session.write_handshake(&mut buf);
            self.spaces[self.write_space.index()].crypto_send.write(&buf);
            match change {
                None => break,
                Some(KeyChange::Handshake(keys)) => {
                    self.spaces[SpaceId::Handshake.index()].keys = Some(keys);
                    self.write_space = SpaceId::Handshake;
                    #[cfg(feature = "qlog")]
                    self.qlog
                        .key_updated(now, crate::qlog::KeyLevel::Handshake, None, "tls");
                }
                Some(KeyChange::OneRtt(keys)) => {
                    self.one_rtt = Some(OneRttKeys::new(keys, &mut *self.session));
                    self.write_space = SpaceId::Data;
                    #[cfg(feature = "qlog")]
                    self.qlog
                        .key_updated(now, crate::qlog::KeyLevel::OneRtt, Some(0), "tls");
                }
            }
        }
        // RFC 9001 §4.1.3: when TLS moves on from a level, CRYPTO data of that level it has not consumed
        // (held beyond a gap: everything in order was just read) is a PROTOCOL_VIOLATION.
        for space in [SpaceId::Initial, SpaceId::Handshake] {
            if self.crypto_level_left(space) && self.spaces[space.index()].crypto_recv.has_unread() {
                return Err(TransportError::protocol_violation(
                    "CRYPTO data left unconsumed when TLS moved to the next level",
                ));
            }
        }
        // A resuming client's TLS first reports the parameters remembered with its ticket (for 0-RTT,
        // RFC 9000 §7.4.1, which we don't send); the server's own arrive before its Finished, so the
        // client takes them once it has 1-RTT keys.
        if self.peer_params.is_none() && (self.side.is_server() || self.one_rtt.is_some()) {
            if let Some(raw) = self.session.peer_transport_parameters() {
                let params = TransportParameters::decode(self.side.peer(), raw)?;
                self.validate_peer_params(&params)?;
                self.streams.set_peer_limits(&params);
                let token = params.stateless_reset_token;
                #[cfg(feature = "qlog")]
                {
                    self.qlog.set_peer_ack_exponent(
                        u8::try_from(params.ack_delay_exponent.into_inner()).unwrap_or(u8::MAX),
                    );
                    self.qlog.peer_parameters(now, &params);
                }
                // RFC 9000 §18.2: the peer's max_udp_payload_size bounds our datagrams as the path MTU
                // does (a configured starting size above it is cut down to it).
                let peer_max = u16::try_from(params.max_udp_payload_size.into_inner()).unwrap_or(u16::MAX);
                if peer_max < self.path.mtu {
                    let size = peer_max.max(super::send::MIN_INITIAL_DATAGRAM as u16);
                    self.mtud.cap(size);
                    self.set_mtu(size);
                }
                let preferred = params.preferred_address;
                self.peer_params = Some(params);
                if self.side.is_client() {
                    self.set_remote_reset_token(token);
                    // RFC 9000 §5.1.1: the preferred address's connection ID is the server's sequence 1.
                    // We do not move to that address (§9.6 is a MAY), but the ID counts toward our
                    // active_connection_id_limit (§18.2) like any other: a spare, retired when Retire Prior
                    // To passes it (§5.1.2).
                    if let Some(p) = preferred.filter(|p| p.connection_id != self.remote_cid) {
                        self.peer_cids.push((1, p.connection_id, p.stateless_reset_token));
                    }
                }
            }
        }
        if !self.handshake_complete && !self.session.is_handshaking() && self.one_rtt.is_some() {
            self.on_handshake_complete(now);
        }
        Ok(())
    }

    /// Whether TLS reads handshake data at a level above `space`'s (RFC 9001 §4.1.3): Initial once the
    /// Handshake keys are installed (TLS then reads at the Handshake level on both sides; after a
    /// HelloRetryRequest it still reads at Initial), Handshake once the client has 1-RTT keys (it got them
    /// from the server's Finished) or the server's handshake is complete (it read the client's Finished;
    /// its 1-RTT keys come earlier, for sending).
    pub(crate) fn crypto_level_left(&self, space: SpaceId) -> bool {
        match space {
            SpaceId::Initial => self.write_space != SpaceId::Initial,
            SpaceId::Handshake => {
                self.one_rtt.is_some() && (self.side.is_client() || !self.session.is_handshaking())
            }
            SpaceId::Data => false,
        }
    }

    /// RFC 9000 §7.3: the connection IDs in the transport parameters must match those on the wire.
    fn validate_peer_params(&self, params: &TransportParameters) -> Result<(), TransportError> {
        // The client checks the server's Initial SCID, the server the client's.
        if params.initial_source_connection_id != self.peer_handshake_cid {
            return Err(TransportError::transport_parameter_error(
                "initial_source_connection_id does not match the Source Connection ID",
            ));
        }
        if self.side.is_client() {
            if params.original_destination_connection_id != Some(self.original_dcid) {
                return Err(TransportError::transport_parameter_error(
                    "original_destination_connection_id does not match",
                ));
            }
            if params.retry_source_connection_id != self.retry_scid {
                return Err(TransportError::transport_parameter_error(
                    "retry_source_connection_id does not match the Retry",
                ));
            }
        }
        Ok(())
    }

    fn on_handshake_complete(&mut self, now: Instant) {
        self.handshake_complete = true;
        if self.state == State::Handshake {
            self.state = State::Established;
        }
        self.events.push_back(Event::Connected);
        #[cfg(feature = "qlog")]
        self.qlog.state(now, "handshake_complete");
        self.endpoint_events.push_back(EndpointEvent::HandshakeDone);
        self.reset_idle(now);
        if self.side.is_server() {
            // RFC 9001 §4.1.2: the server's handshake is confirmed when it completes; it tells the client
            // with HANDSHAKE_DONE (RFC 9000 §19.20).
            self.handshake_done_pending = true;
            self.on_handshake_confirmed(now);
        }
    }

    #[cfg_attr(not(feature = "qlog"), allow(unused_variables))]
    pub(crate) fn on_handshake_confirmed(&mut self, now: Instant) {
        if self.handshake_confirmed {
            return;
        }
        self.handshake_confirmed = true;
        // RFC 9001 §4.9.2: Handshake keys are discarded once the handshake is confirmed. Initial keys
        // normally went earlier (§4.9.1: the client's first Handshake packet, the server's first received
        // one); a server that sends HANDSHAKE_DONE before the client's Handshake packet (which §19.20 of
        // RFC 9000 rules out) would otherwise leave them, and both spaces' state, for the connection's life.
        self.discard_space(SpaceId::Initial, now);
        self.discard_space(SpaceId::Handshake, now);
        // RFC 9000 §14.3: probing for a larger path MTU starts now, within what the peer accepts.
        let peer_max = self
            .peer_params
            .as_ref()
            .map_or(1200, |p| p.max_udp_payload_size.into_inner());
        self.mtud.start(peer_max);
        self.events.push_back(Event::HandshakeConfirmed);
        #[cfg(feature = "qlog")]
        self.qlog.state(now, "handshake_confirmed");
    }

    /// Drops a space's keys and state at `now` (RFC 9001 §4.9, RFC 9002 §6.4).
    pub(crate) fn discard_space(&mut self, space: SpaceId, now: Instant) {
        let Some(s) = self.spaces.live_mut(space.index()) else {
            return;
        };
        // Nothing is sent, retransmitted or acknowledged in the space again: keys and buffers go.
        *s = PacketSpace::discarded(space);
        self.spaces.release_discarded();
        drop(self.recovery.discard_space(space, now));
        // Packets held for these keys will not be opened (RFC 9001 §4.9).
        self.drop_early_of(space);
    }

    // ----------------------------------------------------------------------------------------------
    // Timers

    pub(crate) fn recovery_ctx(&self) -> RecoveryContext {
        RecoveryContext {
            max_ack_delay: self.peer_max_ack_delay(),
            handshake_confirmed: self.handshake_confirmed,
            has_handshake_keys: self.spaces[SpaceId::Handshake.index()].keys.is_some(),
            at_anti_amplification_limit: self.amplification_blocked(),
            local_delay: Duration::ZERO,
        }
    }

    pub(crate) fn peer_max_ack_delay(&self) -> Duration {
        let ms = self
            .peer_params
            .as_ref()
            .map_or(25, |p| p.max_ack_delay.into_inner());
        Duration::from_millis(ms)
    }

    /// The current probe timeout, for the idle timeout's floor and the closing, draining and key-discard
    /// periods. RFC 9002 §6.2.1: the peer's max_ack_delay counts only in the application data space's PTO,
    /// which is not armed before the handshake is confirmed; until then the current PTO is the handshake
    /// spaces', without it (a client announcing a max_ack_delay of 16 s would otherwise keep a half-open
    /// server connection for three times that, past the idle timeout).
    pub(crate) fn pto(&self) -> Duration {
        let base = self.recovery.rtt().pto_base();
        if self.handshake_confirmed {
            base.saturating_add(self.peer_max_ack_delay())
        } else {
            base
        }
    }

    /// The path carries datagrams of `size` bytes (path MTU discovery moved): the congestion controller
    /// counts in the new size (RFC 9002 §7.2).
    /// (Also when `path.mtu` is already `size`: a path restored after a failed validation brings its own
    /// value, and the controller must follow.)
    pub(crate) fn set_mtu(&mut self, size: u16) {
        if self.path.mtu != size {
            tracing::debug!(side = ?self.side, from = self.path.mtu, to = size, "path MTU");
        }
        let shrank = size < self.path.mtu || size < self.cc.max_datagram_size();
        self.path.mtu = size;
        self.cc.set_max_datagram_size(size);
        if shrank {
            self.drop_unsendable_datagrams();
        }
    }

    /// Drops (and counts) the queued datagrams larger than [`max_datagram_size`](Self::max_datagram_size)
    /// now allows, after the room in a packet shrank: one that can never be sent would hold up the queue.
    pub(crate) fn drop_unsendable_datagrams(&mut self) {
        if let Ok(max) = self.max_datagram_size() {
            self.datagrams.drop_longer_than(max);
        }
    }

    /// The lost packets of `space`: the congestion response for all but path MTU probes (RFC 9000
    /// §14.4: their loss is no sign of congestion), then what they carried goes out again.
    pub(crate) fn on_packets_lost(
        &mut self,
        now: Instant,
        space: SpaceId,
        lost: Vec<(u64, SentPacket<SentFrames>)>,
        persistent: bool,
        _reason: Option<&'static str>,
    ) {
        let mut latest = None;
        let mtu_before = self.mtud.current();
        // The lost packets that count as congestion: how many, the first, and the smallest.
        let (mut counted, mut first_pn, mut smallest) = (0u64, None, u16::MAX);
        // Packets of this path sent marked ECT(0) (RFC 9000 §13.4.2: all of them lost fails ECN).
        let mut marked = 0u64;
        // RFC 9000 §9.4: losses on a path the peer has left say nothing of the new path's capacity.
        let path = self.recovery.path_pns(space);
        for (pn, p) in &lost {
            if p.mtu_probe {
                // Counted against the size it tried, if the search is still at it.
                self.mtud.on_lost(*pn);
                self.stats.mtu_probes_lost += 1;
                continue;
            }
            if path.contains(*pn) {
                marked += u64::from(p.ecn_marked);
                latest = latest.max(Some(p.time_sent));
                counted += 1;
                first_pn.get_or_insert(*pn);
                smallest = smallest.min(p.size);
            }
        }
        // RFC 8899 §4.3: only packets larger than the base size lost, time after time (the loss
        // detector hands them over in packet number order, so `first_pn` is the lowest), ask for a
        // probe of the current size; that probe lost is a black hole. Before the congestion response,
        // whose persistent congestion may find the black hole too.
        if let (SpaceId::Data, Some(first_pn)) = (space, first_pn) {
            self.mtud.on_loss_event(first_pn, smallest);
        }
        if marked > 0 {
            self.ecn.on_lost(marked);
        }
        if self.mtud.current() < mtu_before {
            self.stats.mtu_black_holes += 1;
            self.set_mtu(self.mtud.current());
        }
        if let (Some(latest), Some(first_pn)) = (latest, first_pn) {
            // A new recovery period (a window reduction) in the Data space may prove spurious: the
            // controller before it is kept. Losses in its recovery period belong to it too; persistent
            // congestion, or a loss in another space, is never undone.
            let undoable = space == SpaceId::Data && !persistent;
            let saved = (undoable && !self.cc.in_recovery(latest)).then(|| self.cc.clone_box());
            // The loss detector counts only the current path's packets towards persistent congestion.
            self.on_congestion_event(now, latest, persistent);
            match (saved, &mut self.cc_undo) {
                (Some(saved), _) => {
                    self.cc_undo = Some(SpuriousUndo {
                        saved,
                        first_pn,
                        outstanding: counted,
                    });
                }
                (None, Some(undo)) if undoable => undo.outstanding += counted,
                (None, _) => self.cc_undo = None,
            }
        }
        for (_pn, p) in lost {
            #[cfg(feature = "qlog")]
            self.qlog.packet_lost(now, space, _pn, _reason);
            self.on_packet_lost(space, p.data);
        }
        #[cfg(feature = "qlog")]
        {
            self.qlog_metrics(now);
            self.qlog_congestion(now, None, persistent.then_some("persistent_congestion"));
        }
    }

    /// Packets of `space` declared lost were acknowledged after all (RFC 9002 §6.1.1, §6.1.2: reordering,
    /// not loss; the loss detector has raised its thresholds). Once every loss of the last congestion
    /// event (and of its recovery period) has proved spurious, before any further event, the controller
    /// returns to its state before the event: the window and threshold it had, out of recovery. `now` is
    /// when the acknowledgement that proved them arrived.
    #[cold]
    pub(crate) fn on_spurious_losses(&mut self, now: Instant, space: SpaceId, spurious: &[u64]) {
        self.stats.packets_lost_spurious += spurious.len() as u64;
        if space != SpaceId::Data {
            return;
        }
        // Only the losses the event counted: this path's (packets sent on another while away from it
        // were not, RFC 9000 §9.4).
        let path = self.recovery.path_pns(space);
        let done = |undo: &mut SpuriousUndo| {
            let ours = spurious
                .iter()
                .filter(|&&pn| pn >= undo.first_pn && path.contains(pn))
                .count() as u64;
            undo.outstanding = undo.outstanding.saturating_sub(ours);
            undo.outstanding == 0
        };
        let Some(undo) = self.cc_undo.take_if(done) else {
            return;
        };
        // Not across a path change: the controller may be another path's.
        if self.recovery.path_first_pn() > undo.first_pn {
            return;
        }
        let mut saved = undo.saved;
        // Path MTU discovery may have changed the datagram size since (it does early in a
        // connection): the saved controller follows, as the current one did (RFC 9002 §7.2; RFC 8899
        // §3: no more bytes of window for a larger size).
        let size = self.cc.max_datagram_size();
        if saved.max_datagram_size() != size {
            saved.set_max_datagram_size(size);
        }
        // It missed the sender's time since the event: busy, not idle (CUBIC, RFC 9438 §5.8).
        saved.on_restored(now);
        tracing::debug!(side = ?self.side, cwnd = saved.window(), "congestion event undone");
        self.cc = saved;
        self.stats.congestion_events_undone += 1;
        // Out of the recovery period the undone event started.
        #[cfg(feature = "qlog")]
        self.qlog.set_recovery(false);
    }

    /// A loss reduced the window (RFC 9002 §7.3.2); persistent congestion collapses it (§7.6).
    pub(crate) fn on_congestion_event(&mut self, now: Instant, latest_lost_sent: Instant, persistent: bool) {
        if persistent {
            // RFC 8899 §4.3: the path may have stopped carrying the discovered size (a black hole).
            if let Some(size) = self.mtud.on_black_hole() {
                self.stats.mtu_black_holes += 1;
                self.set_mtu(size);
            }
        }
        if !self.cc.in_recovery(latest_lost_sent) || persistent {
            self.stats.congestion_events += 1;
            self.recovery.on_recovery_started(now);
            // RFC 9002 §7.6.2: persistent congestion ends the recovery period, back to slow start.
            #[cfg(feature = "qlog")]
            self.qlog.set_recovery(!persistent);
        }
        self.cc.on_congestion_event(now, latest_lost_sent, persistent);
    }

    /// Ends the connection without a word to the peer (RFC 9000 §10.1, §9.3.2): the peer is not heard
    /// from, or not at an address it can be reached at.
    #[cfg_attr(not(feature = "qlog"), allow(unused_variables))]
    pub(crate) fn close_silently(&mut self, now: Instant) {
        self.events.push_back(Event::ConnectionLost {
            reason: ConnectionError::TimedOut,
        });
        self.state = State::Drained;
        self.drop_early();
        #[cfg(feature = "qlog")]
        self.qlog.state(now, "closed");
    }

    /// The idle timeout in force (RFC 9000 §10.1): the smaller of both sides' non-zero values, at most
    /// the handshake timeout until the handshake completes, and never less than three PTOs.
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        let local = self.config.max_idle_timeout.filter(|t| !t.is_zero());
        let peer = self
            .peer_params
            .as_ref()
            .map(|p| p.max_idle_timeout.into_inner())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let negotiated = match (local, peer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let t = if self.state == State::Handshake {
            let cap = self.config.handshake_timeout;
            negotiated.map_or(cap, |t| t.min(cap))
        } else {
            negotiated?
        };
        Some(t.max(self.pto().saturating_mul(3)))
    }

    pub(crate) fn reset_idle(&mut self, now: Instant) {
        self.idle_since = Some(now);
    }

    /// When the idle timer fires: the idle timeout (at least three PTOs as they stand now) after the last
    /// activity.
    fn idle_deadline(&self) -> Option<Instant> {
        Some(later(self.idle_since?, self.idle_timeout()?))
    }

    fn keep_alive_deadline(&self) -> Option<Instant> {
        // Zero turns keep-alive off (as for the idle timeout); below the timer granularity it is taken
        // as that: an interval of nothing would send a PING whenever the last one is acknowledged, at
        // one instant over and over where the peer answers at once.
        let interval = self
            .config
            .keep_alive_interval
            .filter(|i| !i.is_zero())?
            .max(super::recovery::GRANULARITY);
        // No deadline once the PING waits to go (it may wait for the congestion window or the
        // anti-amplification limit; a passed deadline would then be reported again and again, with
        // nothing to do), nor while ack-eliciting packets are in flight: the PTO keeps the connection
        // alive then (RFC 9002 §6.2).
        if self.state != State::Established
            || self.spaces[SpaceId::Data.index()].ping_pending
            || self.recovery.has_ack_eliciting_in_flight()
        {
            return None;
        }
        Some(later(self.last_ack_eliciting_sent?, interval))
    }

    /// RFC 9000 §4.1: "To keep the connection from closing, a sender that is flow control limited
    /// SHOULD periodically send a STREAM_DATA_BLOCKED or DATA_BLOCKED frame when it has no
    /// ack-eliciting packets in flight." Once the blocked frames for the current limits went out and
    /// nothing ack-eliciting is in flight, they are due again half the idle timeout in force (itself at
    /// least three PTOs) after the last ack-eliciting packet; never without an idle timeout. No deadline
    /// while they wait to go (as for the keep-alive PING) nor while packets are in flight, so a passed
    /// deadline is reported once, and the next one follows the packet that carried them.
    fn blocked_deadline(&self) -> Option<Instant> {
        if self.state != State::Established || self.recovery.has_ack_eliciting_in_flight() {
            return None;
        }
        let at = later(self.last_ack_eliciting_sent?, self.idle_timeout()? / 2);
        self.streams.blocked_frames_sent().then_some(at)
    }

    /// RFC 9000 §8.1: before the client's address is validated, a server whose allowance is below a full
    /// Initial datagram sends no Initial packet (`poll_transmit`; §14.1 pads every datagram holding an
    /// ack-eliciting one to 1200 bytes); what Handshake and 1-RTT packets it has goes within the allowance
    /// (the tail of a flight). Timers that only lead to sending (PTO, ACK) wait for the client's next
    /// datagram here, as the most cautious reading: reported while nothing can be built, they would ask
    /// to be woken for nothing, at once and forever. Once the handshake is complete (a new path after
    /// the peer moved, §9.3), datagrams below 1200 bytes go out within the allowance: the timers wait
    /// only when not even a packet with an ACK fits, or an ACK owed for a 1-RTT packet would wait past
    /// max_ack_delay (§13.2.1).
    pub(crate) fn amplification_blocked(&self) -> bool {
        let needed = if self.handshake_complete {
            self.min_ack_datagram()
        } else {
            super::send::MIN_INITIAL_DATAGRAM
        };
        self.side.is_server() && !self.path.validated && self.path.send_allowance() < needed as u64
    }

    /// The next deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closing { until } | State::Draining { until } => return Some(until),
            State::Drained => return None,
            State::Handshake | State::Established => {}
        }
        let mut t = self.idle_deadline();
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        if !self.hold {
            consider(self.recovery.timeout(&self.recovery_ctx()));
            if !self.amplification_blocked() {
                for s in self.spaces.iter() {
                    if !s.discarded {
                        consider(s.received.ack_deadline());
                    }
                }
            }
            consider(self.keep_alive_deadline());
            consider(self.blocked_deadline());
            consider(self.pacing_until);
            consider(self.path_validation_deadline());
        }
        consider(self.one_rtt.as_ref().and_then(|k| k.prev_discard_at()));
        t
    }

    /// Runs whatever timers expired at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.spaces.release_discarded();
        match self.state {
            State::Closing { until } | State::Draining { until } => {
                if now >= until {
                    self.state = State::Drained;
                    #[cfg(feature = "qlog")]
                    self.qlog.state(now, "closed");
                }
                return;
            }
            State::Drained => return,
            State::Handshake | State::Established => {}
        }
        if self.idle_deadline().is_some_and(|d| now >= d) {
            // RFC 9000 §10.1: the connection is silently closed and its state discarded.
            self.close_silently(now);
            return;
        }
        if let Some(keys) = &mut self.one_rtt {
            keys.discard_prev_if_due(now);
        }
        self.on_path_validation_timeout(now);
        if self.pacing_until.is_some_and(|t| t <= now) {
            self.pacing_until = None;
        }
        if self.keep_alive_deadline().is_some_and(|d| now >= d) {
            self.spaces[SpaceId::Data.index()].ping_pending = true;
        }
        if self.blocked_deadline().is_some_and(|d| now >= d) {
            self.streams.resend_blocked();
        }
        if self.hold {
            return;
        }
        // A loss-time expiry can leave the PTO already due: handle what is due now, a bounded number of
        // times (each PTO re-arms from `now`, so this ends).
        for _ in 0..4 {
            let ctx = self.recovery_ctx();
            match self.recovery.on_timeout(now, &ctx) {
                TimeoutOutcome::Nothing => break,
                TimeoutOutcome::Lost {
                    space,
                    lost,
                    persistent_congestion,
                } => {
                    self.on_packets_lost(now, space, lost, persistent_congestion, Some("time_threshold"));
                }
                TimeoutOutcome::Probe { space, anti_deadlock } => {
                    // RFC 8899 §4.3: PTOs in a row with nothing acknowledged, above the base size, may
                    // mean the path no longer carries that size (a black hole, which no ACK would ever
                    // reveal as loss): the probes go out at the base size.
                    if space == SpaceId::Data && self.recovery.pto_count() >= BLACK_HOLE_PTOS {
                        if let Some(size) = self.mtud.on_black_hole() {
                            self.stats.mtu_black_holes += 1;
                            self.set_mtu(size);
                        }
                    }
                    // RFC 9000 §13.4.2: a path that drops marked packets must not hold the probes back.
                    self.ecn.on_pto(self.recovery.pto_count());
                    // RFC 9002 §6.2.4: one or two ack-eliciting packets, carrying data still unacknowledged.
                    let s = &mut self.spaces[space.index()];
                    s.crypto_send.requeue_unacked();
                    s.probes = if anti_deadlock { 1 } else { 2 };
                    if space == SpaceId::Data {
                        self.requeue_for_probes();
                    }
                    // RFC 9002 §6.2.4: "the sender SHOULD send ack-eliciting packets from other packet
                    // number spaces with in-flight data, coalescing packets if possible" (a server's
                    // Initial and Handshake flights, a client's Handshake and 1-RTT packets).
                    for other in SpaceId::ALL {
                        if other != space && self.recovery.has_ack_eliciting_in_flight_in(other) {
                            let s = &mut self.spaces[other.index()];
                            s.crypto_send.requeue_unacked();
                            s.probes = s.probes.max(1);
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Gives the application-space probes something to carry when no new stream data waits (RFC 9002
    /// §6.2.4: "Previously sent data MAY be sent if no new data can be sent"): the stream frames and
    /// HANDSHAKE_DONE of the oldest unacknowledged packets, one per probe, queued again as if lost but
    /// without declaring them lost (no congestion response, and an acknowledgement of either copy
    /// releases the data). A probe that carries the tail of a transfer delivers it half a round trip
    /// after the PTO; a PING only asks for the ACK that shows the loss, a round trip more.
    fn requeue_for_probes(&mut self) {
        if self.streams.has_data_queued() {
            return;
        }
        let oldest = self
            .recovery
            .oldest_unacked(SpaceId::Data)
            .filter(|(_, p)| {
                !p.data.streams.is_empty() || p.data.rare.as_ref().is_some_and(|r| r.handshake_done)
            })
            .take(2);
        for (_, p) in oldest {
            if !p.data.streams.is_empty() {
                self.streams.on_lost(&p.data.streams);
            }
            if p.data.rare.as_ref().is_some_and(|r| r.handshake_done) && !self.handshake_done_acked {
                self.handshake_done_pending = true;
            }
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Closing

    /// Enters the closing state with `frame` (RFC 9000 §10.2.1) and reports `reason`.
    fn start_closing(&mut self, now: Instant, frame: ConnectionClose, reason: ConnectionError) {
        if matches!(
            self.state,
            State::Closing { .. } | State::Draining { .. } | State::Drained
        ) {
            return;
        }
        self.state = State::Closing {
            until: later(now, self.pto().saturating_mul(3)),
        };
        self.close = Some(PendingClose {
            frame,
            pending: true,
            written: false,
            received: 0,
            threshold: 1,
        });
        self.hold = false;
        self.drop_early();
        self.events.push_back(Event::ConnectionLost { reason });
        #[cfg(feature = "qlog")]
        self.qlog.state(now, "closing");
    }

    /// Closes because of a transport error found locally.
    pub(crate) fn close_with_error(&mut self, now: Instant, error: TransportError) {
        tracing::debug!(side = ?self.side, %error, "closing with transport error");
        let frame = ConnectionClose::from(error.clone());
        let reason = if error.code == TransportErrorCode::CONNECTION_REFUSED {
            ConnectionError::Refused
        } else {
            ConnectionError::TransportError(error)
        };
        self.start_closing(now, frame, reason);
    }

    /// Closes with an application error code and reason.
    pub(crate) fn close(&mut self, now: Instant, code: u64, reason: &[u8]) {
        // No packet carries more of the reason than a datagram holds (it goes cut to fit, RFC 9000
        // §19.19), and the path MTU does not grow while closing: only that much is kept, for the three
        // PTOs of the closing period, and not the whole of whatever the application passed.
        let reason = reason
            .get(..ConnectionClose::reason_cut(reason, usize::from(self.path.mtu)))
            .unwrap_or(reason);
        let frame = ConnectionClose {
            code: CloseCode::Application(code),
            reason: Bytes::copy_from_slice(reason),
        };
        self.start_closing(now, frame, ConnectionError::LocallyClosed);
    }

    /// The peer closed: enter the draining state (RFC 9000 §10.2.2).
    pub(crate) fn on_peer_close(&mut self, now: Instant, close: ConnectionClose) {
        let reason = match close.code {
            CloseCode::Application(code) => ConnectionError::ApplicationClosed {
                code,
                // The frame's bytes are a view of the packet, and of the batch of datagrams it came in:
                // the application may keep the error long, so it gets a copy of the reason only.
                reason: Bytes::copy_from_slice(&close.reason),
            },
            CloseCode::Transport { code, frame_type } => {
                if code == TransportErrorCode::CONNECTION_REFUSED {
                    ConnectionError::Refused
                } else {
                    ConnectionError::ConnectionClosed {
                        error: TransportError {
                            code,
                            frame_type: (frame_type != 0).then_some(frame_type),
                            reason: String::from_utf8_lossy(&close.reason).into_owned().into(),
                        },
                    }
                }
            }
        };
        self.enter_draining(now, reason);
    }

    /// Enters the draining state for three PTOs (RFC 9000 §10.2.2), sending nothing more; the application
    /// hears `reason` unless it closed the connection itself.
    fn enter_draining(&mut self, now: Instant, reason: ConnectionError) {
        // RFC 9000 §10.2.2: from the closing state, draining ends when closing would have.
        let (was_closing, until) = match self.state {
            State::Closing { until } => (true, until),
            _ => (false, later(now, self.pto().saturating_mul(3))),
        };
        self.state = State::Draining { until };
        self.close = None;
        self.drop_early();
        #[cfg(feature = "qlog")]
        self.qlog.state(now, "draining");
        if !was_closing {
            self.events.push_back(Event::ConnectionLost { reason });
        }
    }

    /// The peer sent a stateless reset (RFC 9000 §10.3.1): drain, sending nothing more.
    pub(crate) fn on_stateless_reset(&mut self, now: Instant) {
        if matches!(self.state, State::Draining { .. } | State::Drained) {
            return;
        }
        tracing::debug!(side = ?self.side, "stateless reset received");
        self.endpoint_events.push_back(EndpointEvent::StatelessReset);
        self.enter_draining(now, ConnectionError::Reset);
    }

    // ----------------------------------------------------------------------------------------------
    // API

    /// Lets a held server connection proceed (AcceptPolicy::Ask).
    pub(crate) fn accept(&mut self, _now: Instant) {
        self.hold = false;
    }

    /// Refuses a held server connection: it closes with CONNECTION_REFUSED.
    pub(crate) fn refuse(&mut self, now: Instant) {
        self.close_with_error(
            now,
            TransportError::new(TransportErrorCode::CONNECTION_REFUSED, "refused by the server"),
        );
    }

    /// Asks for a key update (RFC 9001 §6); it starts as soon as it is allowed.
    pub(crate) fn force_key_update(&mut self) {
        self.key_update_requested = true;
    }

    /// The largest datagram payload that can be sent now, or why none can.
    pub(crate) fn max_datagram_size(&self) -> Result<usize, SendDatagramError> {
        if self.config.datagram_send_buffer == 0 {
            return Err(SendDatagramError::Disabled);
        }
        // RFC 9221 §3: a value of 0 (the default) means the peer does not support DATAGRAM frames, and
        // none may be sent; 1 leaves room for no frame (its type and length take 2 bytes).
        let peer = self
            .peer_params
            .as_ref()
            .and_then(|p| p.max_datagram_frame_size)
            .map(VarInt::into_inner)
            .filter(|&v| v >= 2)
            .ok_or(SendDatagramError::UnsupportedByPeer)?;
        let by_peer = usize::try_from(peer).unwrap_or(usize::MAX);
        // One short-header packet: first byte, DCID, up to 4 bytes of packet number, the AEAD tag.
        let by_packet = usize::from(self.path.mtu).saturating_sub(1 + self.remote_cid.len() + 4 + 16);
        let max =
            datagram_payload_within(by_peer.min(by_packet)).ok_or(SendDatagramError::TooLarge { max: 0 })?;
        // Nor more than the send buffer holds: one larger would be queued over its bound.
        Ok(max.min(self.config.datagram_send_buffer))
    }

    /// Queues a datagram (RFC 9221); the oldest queued ones are dropped if the send buffer is full.
    pub(crate) fn send_datagram(&mut self, data: Bytes) -> Result<(), SendDatagramError> {
        let max = self.max_datagram_size()?;
        if data.len() > max {
            return Err(SendDatagramError::TooLarge { max });
        }
        self.datagrams.push_send(data, self.config.datagram_send_buffer);
        Ok(())
    }

    /// The oldest received datagram.
    pub(crate) fn recv_datagram(&mut self) -> Option<Bytes> {
        self.datagrams.pop_recv()
    }

    /// Queues a PING in the application data space (or the current handshake space before that).
    pub(crate) fn ping(&mut self) {
        let space = if self.one_rtt.is_some() {
            SpaceId::Data
        } else {
            self.write_space
        };
        let s = &mut self.spaces[space.index()];
        s.ping_pending = true;
        // A handshake PING carries the CRYPTO data not yet acknowledged, as a probe does (RFC 9002
        // §6.2.4). Each ack-eliciting packet arms the PTO again (§6.2.1), so pings sent more often than
        // the PTO would keep the probe that sends it again from ever firing; and a server with no
        // connection yet (the first Initial lost) ignores Initials without CRYPTO.
        if space != SpaceId::Data {
            s.crypto_send.requeue_unacked();
        }
    }

    /// The next application event: the connection's own first, then stream events, except that
    /// `ConnectionLost` comes after every stream event.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        // The connection's end comes after the stream events of what arrived before it: a peer may send
        // its last data and its CONNECTION_CLOSE in one packet, and that data stays readable while the
        // connection drains, but an application stops polling a connection it was told is lost.
        if matches!(self.events.front(), Some(Event::ConnectionLost { .. })) {
            if let Some(e) = self.streams.poll_event() {
                return Some(Event::Stream(e));
            }
        }
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        // Stream events are only interesting while the connection is alive.
        if self.is_closed() {
            return None;
        }
        self.streams.poll_event().map(Event::Stream)
    }

    /// The next request to the endpoint.
    pub(crate) fn poll_endpoint_event(&mut self) -> Option<EndpointEvent> {
        self.endpoint_events.pop_front()
    }

    /// Whether the connection is over and its state can be freed (after closing/draining).
    pub(crate) fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    /// Which side this is.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// Whether the handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        !self.handshake_complete
    }

    /// Whether the handshake is confirmed.
    pub(crate) fn is_handshake_confirmed(&self) -> bool {
        self.handshake_confirmed
    }

    /// Whether the connection is draining, or closing with its CONNECTION_CLOSE sent and no copy due
    /// (a closing connection whose close has not gone out yet owes the peer that packet).
    pub(crate) fn owes_no_close(&self) -> bool {
        match self.state {
            State::Closing { .. } => self.close.as_ref().is_some_and(|c| !c.pending),
            State::Draining { .. } | State::Drained => true,
            State::Handshake | State::Established => false,
        }
    }

    /// Whether the connection is closing, draining or over.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(
            self.state,
            State::Closing { .. } | State::Draining { .. } | State::Drained
        )
    }

    /// The negotiated ALPN protocol.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session.alpn_protocol()
    }

    /// The server name (SNI).
    pub(crate) fn server_name(&self) -> Option<&str> {
        self.session.server_name()
    }

    /// The negotiated cipher suite.
    pub(crate) fn suite(&self) -> Option<Suite> {
        self.session.suite()
    }

    /// The peer's address.
    pub(crate) fn remote_address(&self) -> SocketAddr {
        self.path.remote
    }

    /// The current 1-RTT key phase and the number of key updates so far.
    pub(crate) fn key_phase(&self) -> (bool, u64) {
        self.one_rtt.as_ref().map_or((false, 0), |k| (k.phase, k.updates))
    }

    /// Counters and RTT.
    pub(crate) fn stats(&self) -> ConnectionStats {
        let rtt = self.recovery.rtt();
        ConnectionStats {
            smoothed_rtt: rtt.smoothed(),
            min_rtt: rtt.min(),
            latest_rtt: rtt.latest(),
            pto_count: self.recovery.pto_count(),
            cwnd: self.cc.window(),
            ssthresh: self.cc.ssthresh(),
            bytes_in_flight: self.recovery.bytes_in_flight(),
            key_updates: self.key_phase().1,
            stream_bytes_sent: self.streams.stats().bytes_sent,
            stream_bytes_retransmitted: self.streams.stats().bytes_retransmitted,
            stream_bytes_received: self.streams.stats().bytes_received,
            datagram_frames_sent: self.datagrams.sent,
            datagram_frames_received: self.datagrams.received,
            datagrams_send_dropped: self.datagrams.send_dropped,
            datagrams_recv_dropped: self.datagrams.recv_dropped,
            cids_retired_by_peer: self.local_cids.retired,
            path_mtu: self.path.mtu,
            ecn_marked_sent: self.ecn.marked_sent(),
            ecn_validation_failures: self.ecn.failures(),
            ..self.stats
        }
    }

    /// The peer's transport parameters, once received.
    pub(crate) fn peer_params(&self) -> Option<&TransportParameters> {
        self.peer_params.as_ref()
    }

    /// Records a datagram's arrival for accounting (amplification limit, stats).
    pub(crate) fn on_datagram_received(&mut self, len: usize) {
        self.path.bytes_received += len as u64;
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += len as u64;
    }

    /// Writes the next datagram(s) into `buf` (cleared first).
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        max_segments: usize,
    ) -> Option<Transmit> {
        self.transmit(now, buf, max_segments)
    }

    /// A datagram routed to this connection (possibly several coalesced packets), a slice of a buffer of
    /// `buffer_len` bytes (see [`Connection::receive`]).
    pub(crate) fn handle_datagram(&mut self, now: Instant, datagram: Datagram, buffer_len: usize) {
        // The address is read where the caller wrote it: copying it out whole stalled on the narrower
        // stores that had just built it.
        let Datagram {
            ref remote,
            local,
            ecn,
            payload,
        } = datagram;
        let lone = buffer_len <= payload.len();
        self.receive(now, remote, local, ecn, payload, buffer_len);
        if lone {
            self.end_batch();
        }
    }

    /// The batch of datagrams this connection received some of is done (see
    /// [`Endpoint::handle_batch`](crate::Endpoint::handle_batch)); a datagram received alone is a batch
    /// of its own.
    #[inline]
    pub(crate) fn end_batch(&mut self) {
        self.streams.end_batch();
    }

    /// The application is done reading for now: see `Streams::trim_read`.
    #[inline]
    pub(crate) fn trim_read(&mut self) {
        self.streams.trim_read();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("state", &self.state)
            .field("local_cid", &self.local_cid)
            .field("remote_cid", &self.remote_cid)
            .finish_non_exhaustive()
    }
}
