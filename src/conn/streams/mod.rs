//! Streams (RFC 9000 §2-§4): the set of streams of one connection, their send and receive halves,
//! stream and connection flow control, stream limits, and the STREAM and stream-control frames.
//!
//! [`Streams`] is sans-IO state the connection drives from three places:
//! - its receive path: `on_*` for each stream-related frame, each returning the RFC's
//!   [`TransportError`](crate::wire::TransportError) when the peer broke a rule;
//! - its packet assembly: [`Streams::write_frames`] appends frames and fills a [`StreamsSent`] record,
//!   which comes back through [`Streams::on_acked`] or [`Streams::on_lost`];
//! - its API: open, accept, write, finish, reset, read, stop, priorities, and
//!   [`Streams::poll_event`] for [`StreamEvent`]s.
//!
//! Memory: received data is bounded by the receive windows (the flow-control check is the bound), sent
//! data by [`StreamsConfig::send_buffer`] per stream plus, while the congestion window is large, at
//! most [`StreamsConfig::max_send_buffer`] per connection, and the number of streams by the limits on both
//! sides. Closed streams are forgotten; the per-type counters of opened streams tell a closed stream
//! (frames for it are ignored) from one never opened.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use tinyvec::{ArrayVec, TinyVec};

use crate::wire::frame::MAX_STREAM_COUNT;
use crate::wire::transport_params::TransportParameters;
use crate::wire::VarInt;
use crate::Side;

use crate::wire::frame::{Dir, StreamId};

mod flow;
mod recv;
mod send;
#[cfg(test)]
mod tests;

use flow::RecvWindow;
use recv::RecvStream;
use send::{Next, SendStream};
use waiting::CreditWaiters;

/// Frame types for `TransportError::with_frame`.
mod ty {
    pub(super) const RESET_STREAM: u64 = 0x04;
    pub(super) const STOP_SENDING: u64 = 0x05;
    pub(super) const STREAM: u64 = 0x08;
    pub(super) const MAX_STREAM_DATA: u64 = 0x11;
    pub(super) const STREAM_DATA_BLOCKED: u64 = 0x15;
}

/// The most streams of one direction the peer may have open at once, whatever the configuration says.
/// A STREAM frame opens every lower stream of its kind not yet opened (RFC 9000 §3.2), so one frame can
/// make us create this many streams' state, some 500 bytes each: about 32 MiB at most, per direction.
pub(crate) const MAX_CONCURRENT_STREAMS: u64 = 1 << 16;

/// Our stream limits and buffer sizes; the source of the stream-related transport parameters we send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// How many bidirectional streams the peer may have open at once (initial_max_streams_bidi, then
    /// one more credit per closed stream). Also bounds the state one peer frame can create (a frame
    /// opens every lower stream, RFC 9000 §3.2), so it is taken as at most 65,536 (about 32 MiB of
    /// stream state). 0 is a legitimate value: the peer may open none (§4.6), and we may still open
    /// ours.
    pub max_concurrent_bidi_streams: u64,
    /// How many unidirectional streams the peer may have open at once (initial_max_streams_uni); taken
    /// as at most 65,536 likewise. 0: the peer may open none.
    pub max_concurrent_uni_streams: u64,
    /// The initial receive window of each stream (initial_max_stream_data_*). Taken as at least 1: a
    /// window of 0 would never be renewed (nothing can be read to renew it), so no stream could ever
    /// receive data.
    pub stream_receive_window: u64,
    /// The initial receive window of the connection (initial_max_data). Taken as at least 1, for the
    /// same reason.
    pub receive_window: u64,
    /// The largest a stream's receive window grows to by auto-tuning. Taken as at least
    /// `stream_receive_window` (so 0 turns auto-tuning off).
    pub max_stream_receive_window: u64,
    /// The largest the connection's receive window grows to by auto-tuning. Taken as at least
    /// `receive_window` (so 0 turns auto-tuning off).
    pub max_receive_window: u64,
    /// Bytes written to a stream and not yet acknowledged, at most: a write accepts what fits. A writer
    /// refused for lack of room is told to write again ([`StreamEvent::Writable`]) once a sixty-fourth
    /// of it is free, not after every acknowledgement. While the congestion window is large a stream's
    /// buffer grows beyond this, within one budget per connection ([`max_send_buffer`](Self::max_send_buffer)).
    /// Taken as at least 1.
    ///
    /// The default, 128 KiB, is small on purpose: bytes written are read back when they are packed, a
    /// buffer's length later, and with 1 MiB they came back from beyond the L2 cache (bulk transfer
    /// about 3% slower per CPU-second on a core with 1 MiB of L2). Throughput does not need more: the
    /// buffer grows with the congestion window (see `max_send_buffer`), so the flight is never held
    /// below the path's bandwidth-delay product (the simulator's runs send the same packets with either).
    pub send_buffer: usize,
    /// The largest budget for send buffers grown beyond [`send_buffer`](Self::send_buffer): while four
    /// times the congestion window is more than `send_buffer`, a stream may hold more than `send_buffer`
    /// as long as all streams of the connection together hold at most four times the window, up to
    /// this. So one stream can fill a path whose bandwidth-delay product is larger than `send_buffer`
    /// (the buffer bounds what is in flight, and what a loss recovery keeps in it), and the
    /// application's writes can hold at most `send_buffer` per stream plus this per connection. A buffer that drained gives the grown storage back. Taken as at least
    /// `send_buffer` (so 0 keeps every buffer at `send_buffer`).
    pub max_send_buffer: usize,
    /// Separate pieces of received stream data held beyond a gap at once, over all streams of a
    /// connection. Flow control bounds the bytes a peer can make us hold, but not how finely it cuts
    /// them, and each piece costs a map entry. Data that can be read in order is not counted (its small
    /// pieces are merged, up to 4 KiB), nor are contiguous small pieces beyond a gap, which are merged
    /// too: only data cut into holes counts piece by piece. A peer making us hold more pieces than this
    /// closes the connection with PROTOCOL_VIOLATION (RFC 9000 §21.7). The default lets the largest
    /// receive window fill with full-sized packets out of order; a limit much below the packets of one
    /// window risks closing the connection on ordinary loss. Taken as at least 1.
    pub max_reassembly_fragments: usize,
    /// How many closed streams' state a connection keeps to reuse for new streams: the allocations
    /// of the state, its send buffer and its reassembly queue are then saved, which matters for many
    /// short request/response streams. Buffers are kept only while small (2 KiB of send buffer, 16
    /// reassembly slots), so each kept stream holds about 3 KB; the pool never holds more streams
    /// than were open at once. 0 turns reuse off.
    pub reused_streams: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_bidi_streams: 100,
            max_concurrent_uni_streams: 100,
            stream_receive_window: 256 * 1024,
            receive_window: 1024 * 1024,
            max_stream_receive_window: 16 * 1024 * 1024,
            max_receive_window: 24 * 1024 * 1024,
            send_buffer: 128 * 1024,
            max_send_buffer: 16 * 1024 * 1024,
            max_reassembly_fragments: 32 * 1024,
            reused_streams: 64,
        }
    }
}

impl StreamsConfig {
    /// Writes our stream-related transport parameters (RFC 9000 §18.2) into `params`: the same initial
    /// window for the three kinds of streams, and the concurrency limits, as clamped (`StreamsConfig::clamped`).
    pub fn fill_params(&self, params: &mut TransportParameters) {
        // What we announce is what we apply.
        let c = self.clamped();
        params.initial_max_data = VarInt::saturating(c.receive_window);
        params.initial_max_stream_data_bidi_local = VarInt::saturating(c.stream_receive_window);
        params.initial_max_stream_data_bidi_remote = VarInt::saturating(c.stream_receive_window);
        params.initial_max_stream_data_uni = VarInt::saturating(c.stream_receive_window);
        params.initial_max_streams_bidi = VarInt::saturating(c.max_concurrent_bidi_streams);
        params.initial_max_streams_uni = VarInt::saturating(c.max_concurrent_uni_streams);
    }

    /// The configuration as used: values that would break streams rather than bound them are raised to
    /// the least that works. A send buffer of 0 takes no write (and no Writable ever follows); a
    /// fragment limit of 0 closes the connection on the first packet lost or reordered; a receive
    /// window of 0 is never renewed. All are taken as at least 1, like the ACK range limits; the
    /// maximum windows as at least the initial ones, and every window as at most 2^62 - 1, the largest
    /// limit a frame can carry (as announced). The concurrency limits, which bound the streams
    /// one peer frame can open, are taken as at most [`MAX_CONCURRENT_STREAMS`].
    pub(crate) fn clamped(&self) -> StreamsConfig {
        // RFC 9000 §19.9, §19.10: limits are variable-length integers, below 2^62.
        let most = VarInt::MAX.into_inner();
        let stream_receive_window = self.stream_receive_window.clamp(1, most);
        let receive_window = self.receive_window.clamp(1, most);
        StreamsConfig {
            max_concurrent_bidi_streams: self.max_concurrent_bidi_streams.min(MAX_CONCURRENT_STREAMS),
            max_concurrent_uni_streams: self.max_concurrent_uni_streams.min(MAX_CONCURRENT_STREAMS),
            stream_receive_window,
            receive_window,
            max_stream_receive_window: self.max_stream_receive_window.clamp(stream_receive_window, most),
            max_receive_window: self.max_receive_window.clamp(receive_window, most),
            send_buffer: self.send_buffer.max(1),
            max_send_buffer: self.max_send_buffer.max(self.send_buffer.max(1)),
            max_reassembly_fragments: self.max_reassembly_fragments.max(1),
            ..self.clone()
        }
    }
}

/// Something that happened on the streams of a connection, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer opened one or more streams of this direction: call `accept` until it returns `None`.
    Opened {
        /// The direction of the new streams.
        dir: Dir,
    },
    /// The stream has data, its end or a reset to read. Not repeated until the application reads, and
    /// then only for data arriving after what is readable: read until [`ReadError::Blocked`], the end
    /// (`Ok(None)`) or the reset, or keep track of a stream left with data to read. An event may be
    /// stale when polled: a stream already read to its end (say while handling its `Opened`) then
    /// reads [`ReadError::ClosedStream`], which is harmless.
    Readable {
        /// The stream.
        id: StreamId,
    },
    /// A write refused for lack of buffer space, or cut short by it, may now take more: acknowledgements
    /// freed at least a sixty-fourth of the stream's send buffer (2 KiB of the default 128 KiB; more
    /// while the buffer has grown with the congestion window).
    Writable {
        /// The stream.
        id: StreamId,
    },
    /// The peer acknowledged all data and the end of the stream.
    Finished {
        /// The stream.
        id: StreamId,
    },
    /// The peer abandoned its sending side (RESET_STREAM); reads return [`ReadError::Reset`].
    Reset {
        /// The stream.
        id: StreamId,
        /// The peer's application error code.
        code: u64,
    },
    /// The peer asked us to stop sending (STOP_SENDING); the stream was reset with the same code, unless
    /// the application had reset it already (its RESET_STREAM keeps the application's code, and writes
    /// still return [`WriteError::Stopped`] with the peer's).
    Stopped {
        /// The stream.
        id: StreamId,
        /// The peer's application error code.
        code: u64,
    },
    /// The peer raised its stream limit: `open` of this direction may succeed again.
    Available {
        /// The direction.
        dir: Dir,
    },
}

/// Why a write, finish or reset failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// No such stream: never opened, or one we cannot send on (a peer's unidirectional stream).
    UnknownStream,
    /// The sending side is over: finished, reset, or closed and forgotten.
    ClosedStream,
    /// The peer sent STOP_SENDING with this code; the stream was reset.
    Stopped {
        /// The peer's application error code.
        code: u64,
    },
    /// The send buffer is full: nothing was accepted. A [`StreamEvent::Writable`] follows when the peer
    /// acknowledges data.
    Blocked,
    /// The connection is closing or closed: nothing more is sent.
    ConnectionClosed,
}

/// Why a read or stop failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// No such stream: never opened, or one we cannot receive on (our unidirectional stream).
    UnknownStream,
    /// The receiving side is over: read to the end, reset already reported, stopped, or forgotten.
    ClosedStream,
    /// The peer reset the stream with this code (reported once).
    Reset {
        /// The peer's application error code.
        code: u64,
    },
    /// No data ready yet: a [`StreamEvent::Readable`] follows when some arrives.
    Blocked,
    /// Stopping only: the connection is closing or closed, so no STOP_SENDING would go out (data
    /// already received can still be read).
    ConnectionClosed,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::UnknownStream => f.write_str("unknown stream"),
            WriteError::ClosedStream => f.write_str("stream closed for writing"),
            WriteError::Stopped { code } => write!(f, "stream stopped by the peer with code {code}"),
            WriteError::Blocked => f.write_str("send buffer full"),
            WriteError::ConnectionClosed => f.write_str("connection closed"),
        }
    }
}

impl std::error::Error for WriteError {}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::UnknownStream => f.write_str("unknown stream"),
            ReadError::ClosedStream => f.write_str("stream closed for reading"),
            ReadError::Reset { code } => write!(f, "stream reset by the peer with code {code}"),
            ReadError::Blocked => f.write_str("no data ready"),
            ReadError::ConnectionClosed => f.write_str("connection closed"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Byte counts of stream data, summed into [`ConnectionStats`](crate::ConnectionStats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamStats {
    /// Stream data bytes sent for the first time.
    pub bytes_sent: u64,
    /// Stream data bytes sent again after a loss.
    pub bytes_retransmitted: u64,
    /// Stream data bytes received, as counted by flow control: the new credit the peer used, up to each
    /// stream's highest offset received or, once it is reset, its final size (RFC 9000 §4.5), gaps
    /// included and duplicates not counted.
    pub bytes_received: u64,
    /// Stream data bytes handed to the application.
    pub bytes_read: u64,
}

/// STREAM data one packet carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SentChunk {
    /// The stream.
    pub(crate) id: StreamId,
    /// Offset of the data.
    pub(crate) offset: u64,
    /// Length of the data (a packet holds less than 4 GiB).
    pub(crate) len: u32,
    /// Whether the frame carried the FIN.
    pub(crate) fin: bool,
}

/// The kind of a per-stream control frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlKind {
    /// MAX_STREAM_DATA with the value sent.
    #[default]
    MaxStreamData,
    /// STREAM_DATA_BLOCKED with the limit sent.
    StreamDataBlocked,
    /// RESET_STREAM.
    ResetStream,
    /// STOP_SENDING.
    StopSending,
}

impl SentChunk {
    const EMPTY: SentChunk = SentChunk {
        id: StreamId(0),
        offset: 0,
        len: 0,
        fin: false,
    };
}

impl SentControl {
    const EMPTY: SentControl = SentControl {
        id: StreamId(0),
        kind: ControlKind::MaxStreamData,
        value: 0,
    };
}

/// A per-stream control frame one packet carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SentControl {
    /// The stream.
    pub(crate) id: StreamId,
    /// Which frame.
    pub(crate) kind: ControlKind,
    /// The limit of MAX_STREAM_DATA or STREAM_DATA_BLOCKED (0 for the others).
    pub(crate) value: u64,
}

/// What stream-related frames one packet carried, for [`Streams::on_acked`] and [`Streams::on_lost`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StreamsSent {
    /// STREAM frames.
    pub(crate) chunks: TinyVec<[SentChunk; 2]>,
    /// Per-stream control frames.
    pub(crate) control: TinyVec<[SentControl; 1]>,
    /// Connection-level flow-control frames, boxed: most packets carry none, and this record is moved a
    /// few times between sending and acknowledgement, so its size is paid per packet.
    pub(crate) conn: Option<Box<ConnFlowSent>>,
}

/// The connection-level flow-control frames one packet carried.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ConnFlowSent {
    /// MAX_DATA with this value.
    pub(crate) max_data: Option<u64>,
    /// MAX_STREAMS (bidirectional, unidirectional) with these counts.
    pub(crate) max_streams: [Option<u64>; 2],
    /// DATA_BLOCKED at this limit.
    pub(crate) data_blocked: Option<u64>,
    /// STREAMS_BLOCKED (bidirectional, unidirectional) at these limits.
    pub(crate) streams_blocked: [Option<u64>; 2],
}

impl StreamsSent {
    /// An empty record, as a constant (see `SentFrames::EMPTY`).
    pub(crate) const EMPTY: StreamsSent = StreamsSent {
        chunks: TinyVec::Inline(ArrayVec::from_array_empty([SentChunk::EMPTY; 2])),
        control: TinyVec::Inline(ArrayVec::from_array_empty([SentControl::EMPTY; 1])),
        conn: None,
    };

    /// Whether no stream-related frame went into the packet.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.control.is_empty() && self.conn.is_none()
    }

    /// The connection-level part of the record, created on first use.
    pub(crate) fn conn_mut(&mut self) -> &mut ConnFlowSent {
        self.conn.get_or_insert_with(Box::default)
    }
}

/// Where a stream stands in the send scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sched {
    /// In no queue.
    Idle,
    /// In the queue of its priority.
    Queued,
    /// Waiting for connection credit (MAX_DATA).
    ConnBlocked,
}

/// Which per-stream control frames are queued, to queue each at most once.
#[derive(Debug, Default, Clone, Copy)]
struct ControlQueued {
    max_stream_data: bool,
    stream_data_blocked: bool,
    reset: bool,
    stop: bool,
}

impl ControlQueued {
    /// Queues the frame of `kind` for stream `id` on `control`, unless it is queued already.
    fn queue(&mut self, control: &mut VecDeque<(StreamId, ControlKind)>, id: StreamId, kind: ControlKind) {
        let flag = self.flag(kind);
        if !*flag {
            *flag = true;
            control.push_back((id, kind));
        }
    }

    fn flag(&mut self, kind: ControlKind) -> &mut bool {
        match kind {
            ControlKind::MaxStreamData => &mut self.max_stream_data,
            ControlKind::StreamDataBlocked => &mut self.stream_data_blocked,
            ControlKind::ResetStream => &mut self.reset,
            ControlKind::StopSending => &mut self.stop,
        }
    }
}

/// One open stream.
#[derive(Debug)]
struct Stream {
    /// The sending half (ours for local streams, and for peer bidirectional streams).
    send: Option<SendStream>,
    /// The receiving half (peer streams, and our bidirectional streams).
    recv: Option<RecvStream>,
    /// Send priority: higher goes first.
    priority: i32,
    /// Where the stream stands in the scheduler.
    sched: Sched,
    /// Queued control frames.
    queued: ControlQueued,
    /// The stream's ID is in `Streams::conn_blocked`: listed once however often the stream is found
    /// blocked again (a peer raising MAX_STREAM_DATA while holding MAX_DATA back requeues it each time).
    conn_listed: bool,
}

/// What the send buffer of a stream holding `held` bytes may hold: `base` (`StreamsConfig::send_buffer`)
/// whatever the others hold, and up to `budget` (what the congestion window calls for) while all streams
/// together, holding `total`, stay within `budget`. A peer that grows the window and then stops granting
/// credit can so make the application's writes pile up to `budget` once per connection, beyond `base` per
/// stream, not to `max_send_buffer` in every stream.
fn send_limit(base: usize, budget: usize, total: usize, held: usize) -> usize {
    let room = budget.saturating_sub(total);
    base.max(held.saturating_add(room).min(budget))
}

/// The send buffers' budget per connection, in congestion windows (see
/// `Streams::set_congestion_window`).
const BUDGET_WINDOWS: u64 = 4;

/// The most of a waiting stream's data counted against new connection credit when deciding how many
/// streams it wakes (about a packet): credit for a packet each wakes that many streams.
const WAKE_SHARE: u64 = 1200;

/// Moves `count`, the running number of pieces held beyond a gap over all streams
/// (`Streams::fragments_bound`), by one stream's change from `before` to `after` pieces (a frame received,
/// or the stream's data dropped by a reset or a stop).
fn track_fragments(count: &mut usize, before: usize, after: usize) {
    *count = (*count + after).saturating_sub(before);
}

/// Index of a direction in per-direction arrays.
fn di(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// The direction of an index of a per-direction array.
fn dir_of(d: usize) -> Dir {
    if d == 0 {
        Dir::Bi
    } else {
        Dir::Uni
    }
}

/// The streams of one connection.
#[derive(Debug)]
pub(crate) struct Streams {
    side: Side,
    config: StreamsConfig,
    /// Open streams (ordered, so that iteration is deterministic).
    /// Boxed: a stream's state is a few hundred bytes, which the map would move on every insertion and
    /// removal in its nodes.
    streams: BTreeMap<StreamId, Box<Stream>>,

    /// Per direction: how many streams we opened.
    next_local: [u64; 2],
    /// Per direction: how many streams the peer lets us open (RFC 9000 §4.6).
    peer_max_streams: [u64; 2],
    /// Per direction: an open failed at the current limit (emit Available when it rises).
    open_blocked: [bool; 2],
    /// Per direction: a STREAMS_BLOCKED is to be sent.
    streams_blocked_pending: [bool; 2],
    /// Per direction: the limit of the last STREAMS_BLOCKED queued.
    streams_blocked_at: [Option<u64>; 2],

    /// Per direction: how many streams the peer opened (explicitly or implicitly).
    next_remote: [u64; 2],
    /// Per direction: the stream limit due to the peer (raised as its streams close), which the next
    /// MAX_STREAMS carries.
    max_remote: [u64; 2],
    /// Per direction: the highest stream limit we sent (initial_max_streams_*, then MAX_STREAMS): the one
    /// the peer's stream IDs are checked against (RFC 9000 §4.6).
    max_remote_sent: [u64; 2],
    /// Per direction: a MAX_STREAMS is to be sent.
    max_streams_pending: [bool; 2],
    /// Per direction: how many peer streams the application accepted.
    next_accept: [u64; 2],
    /// Per direction: an Opened event is outstanding.
    opened_signaled: [bool; 2],

    /// The peer's initial_max_stream_data_bidi_local: our send limit on streams the peer opens.
    peer_bidi_local: u64,
    /// The peer's initial_max_stream_data_bidi_remote: our send limit on bidirectional streams we open.
    peer_bidi_remote: u64,
    /// The peer's initial_max_stream_data_uni: our send limit on unidirectional streams we open.
    peer_uni: u64,

    /// The peer's connection limit (initial_max_data, MAX_DATA).
    send_max_data: u64,
    /// New stream bytes sent, over all streams: the connection credit consumed.
    send_data: u64,
    /// A DATA_BLOCKED is to be sent.
    data_blocked_pending: bool,
    /// The limit of the last DATA_BLOCKED queued.
    data_blocked_at: Option<u64>,

    /// Our connection limit and its window.
    recv_window: RecvWindow,
    /// Connection credit the peer consumed: the sum of the highest offsets (or final sizes) received.
    recv_data: u64,
    /// The pieces of data held beyond a gap by all receive streams, or more (see `on_stream`).
    fragments_bound: usize,
    /// Streams holding data of the batch of datagrams being received as it came, to settle once the
    /// batch is done (each listed once per batch: when its run starts).
    provisional: Vec<StreamId>,
    /// Streams whose reads left a batch kept as it came to look at (listed once per trim): trimmed when
    /// the application drops its `ConnRef`, or when the connection next receives.
    trim_pending: Vec<StreamId>,
    /// A MAX_DATA is to be sent.
    max_data_pending: bool,

    /// Streams with something to send, per priority (highest last), each in round-robin order.
    queues: BTreeMap<i32, VecDeque<StreamId>>,
    /// The send buffers' budget now: `config.send_buffer`, or more while the congestion window is large
    /// (see [`Streams::set_congestion_window`]). Each stream may hold `config.send_buffer`; beyond that
    /// it grows only while all streams together hold less than this.
    send_budget: usize,
    /// Bytes held in all send buffers (written and not yet acknowledged in order).
    send_buffered: usize,
    /// Streams waiting for connection credit.
    conn_blocked: CreditWaiters,
    /// Streams for which a STREAM_DATA_BLOCKED was queued, at a limit not raised since (some may have
    /// stopped being blocked otherwise): where [`Streams::blocked_frames_sent`] looks, rather than at
    /// every stream on each `poll_timeout`.
    stream_blocked_sent: BTreeSet<StreamId>,
    /// Per-stream control frames to send, in order.
    control: VecDeque<(StreamId, ControlKind)>,
    /// Events for the application.
    events: VecDeque<StreamEvent>,
    /// Byte counts.
    stats: StreamStats,
    /// Forgotten streams kept for the next ones, at most `config.reused_streams`: their boxes, and
    /// their buffers when small.
    #[allow(
        clippy::vec_box,
        reason = "the boxes are what is reused: the map holds boxed streams"
    )]
    spare: Vec<Box<Stream>>,
}

mod app;
mod incoming;
mod outgoing;
mod waiting;

impl Streams {
    /// The final size the peer gave stream `id` (a FIN or RESET_STREAM), while the stream is tracked:
    /// for the fuzz harness, to tell a forged end of stream (a corrupted packet under its null cipher).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn recv_final_size(&self, id: StreamId) -> Option<u64> {
        self.streams.get(&id)?.recv.as_ref()?.final_size
    }

    /// The streams of a connection on `side`, with our limits from `given`. The peer's limits are all
    /// zero until [`Streams::set_peer_limits`].
    pub(crate) fn new(side: Side, given: &StreamsConfig) -> Self {
        let config = given.clamped();
        // Raised by one per closed peer stream (`maybe_forget`), so the streams not yet opened below
        // it, which one frame can open, never exceed the concurrency limit.
        let max_remote = [
            config.max_concurrent_bidi_streams,
            config.max_concurrent_uni_streams,
        ];
        let recv_window = RecvWindow::new(config.receive_window, config.max_receive_window);
        let send_budget = config.send_buffer;
        Self {
            side,
            config,
            streams: BTreeMap::new(),
            next_local: [0; 2],
            peer_max_streams: [0; 2],
            open_blocked: [false; 2],
            streams_blocked_pending: [false; 2],
            streams_blocked_at: [None; 2],
            next_remote: [0; 2],
            max_remote,
            max_remote_sent: max_remote,
            max_streams_pending: [false; 2],
            next_accept: [0; 2],
            opened_signaled: [false; 2],
            peer_bidi_local: 0,
            peer_bidi_remote: 0,
            peer_uni: 0,
            send_max_data: 0,
            send_data: 0,
            data_blocked_pending: false,
            data_blocked_at: None,
            recv_window,
            recv_data: 0,
            fragments_bound: 0,
            provisional: Vec::new(),
            trim_pending: Vec::new(),
            max_data_pending: false,
            queues: BTreeMap::new(),
            send_budget,
            send_buffered: 0,
            conn_blocked: CreditWaiters::default(),
            stream_blocked_sent: BTreeSet::new(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            stats: StreamStats::default(),
            spare: Vec::new(),
        }
    }

    /// Takes the peer's limits from its transport parameters (RFC 9000 §18.2, §7.4.1). Limits only
    /// grow: with 0-RTT, streams may exist already and keep the larger of the two.
    pub(crate) fn set_peer_limits(&mut self, params: &TransportParameters) {
        self.peer_bidi_local = params.initial_max_stream_data_bidi_local.into_inner();
        self.peer_bidi_remote = params.initial_max_stream_data_bidi_remote.into_inner();
        self.peer_uni = params.initial_max_stream_data_uni.into_inner();
        self.raise_send_max_data(params.initial_max_data.into_inner());
        self.raise_peer_max_streams(Dir::Bi, params.initial_max_streams_bidi.into_inner());
        self.raise_peer_max_streams(Dir::Uni, params.initial_max_streams_uni.into_inner());
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            let limit = self.initial_send_limit(id);
            if let Some(send) = self.streams.get_mut(&id).and_then(|s| s.send.as_mut()) {
                if limit > send.max_data {
                    send.max_data = limit;
                    self.stream_blocked_sent.remove(&id);
                    self.schedule(id);
                }
            }
        }
    }

    /// Our initial send limit on stream `id`, from the peer's parameters (RFC 9000 §18.2: "local" and
    /// "remote" are from the point of view of the peer that sent them).
    fn initial_send_limit(&self, id: StreamId) -> u64 {
        match (id.initiator() == self.side, id.dir()) {
            (true, Dir::Bi) => self.peer_bidi_remote,
            (true, Dir::Uni) => self.peer_uni,
            (false, _) => self.peer_bidi_local,
        }
    }

    /// A new stream's state: halves per its initiator and direction.
    /// The state of a new stream `id`: fresh, in the box and with the buffers of a forgotten stream
    /// when one is spare. Only storage is reused; every field starts anew.
    fn new_stream(&mut self, id: StreamId) -> Box<Stream> {
        let local = id.initiator() == self.side;
        let (send_limit, window, max_window) = (
            self.initial_send_limit(id),
            self.config.stream_receive_window,
            self.config.max_stream_receive_window,
        );
        let mut spare = self.spare.pop();
        let (old_send, old_recv) = spare
            .as_mut()
            .map_or((None, None), |s| (s.send.take(), s.recv.take()));
        let stream = Stream {
            send: (local || id.is_bidi()).then(|| SendStream::reusing(old_send, send_limit)),
            recv: (!local || id.is_bidi()).then(|| RecvStream::reusing(old_recv, window, max_window)),
            priority: 0,
            sched: Sched::Idle,
            queued: ControlQueued::default(),
            conn_listed: false,
        };
        match spare {
            Some(mut boxed) => {
                *boxed = stream;
                boxed
            }
            None => Box::new(stream),
        }
    }

    /// Whether stream `id` was ever opened (by either side), so a missing entry means "closed".
    fn was_opened(&self, id: StreamId) -> bool {
        let d = di(id.dir());
        if id.initiator() == self.side {
            id.index() < self.next_local[d]
        } else {
            id.index() < self.next_remote[d]
        }
    }

    /// Sizes the send buffers from the congestion window `cwnd`: four times the window, within
    /// `send_buffer..=max_send_buffer`. The flight cannot pass the buffer, so a buffer below the window
    /// would hold a single stream under what the path carries; and a buffer holds more than the flight.
    /// It keeps everything from its first unacknowledged byte, so through a loss recovery (spurious
    /// ones too, from reordering) it holds the data sent before the window was cut, and what was
    /// acknowledged beyond the hole until the hole fills, besides the next window's worth to send. At
    /// twice the window it ran dry there, the connection counted as application-limited (RFC 9002
    /// §7.8) and its window stopped growing: on a simulated 400 Mbit/s, 50 ms path with 5% of datagrams
    /// held back by a quarter of the RTT, 129 to 151 Mbit/s over 100 MB on six seeds, against 210 to
    /// 242 Mbit/s at four times the window (eight times gained little more; `tests/sim.rs`,
    /// `send_buffers_keep_a_reordered_path_with_a_large_bdp_busy`).
    pub(crate) fn set_congestion_window(&mut self, cwnd: u64) {
        let wanted = usize::try_from(cwnd.saturating_mul(BUDGET_WINDOWS)).unwrap_or(usize::MAX);
        self.send_budget = wanted.clamp(self.config.send_buffer, self.config.max_send_buffer);
    }

    /// Raises the peer's connection limit and wakes streams waiting for it.
    fn raise_send_max_data(&mut self, max: u64) {
        if max <= self.send_max_data {
            return;
        }
        self.send_max_data = max;
        // RFC 9000 §4.1, §19.12: a DATA_BLOCKED not yet sent reports a limit that is gone (sent now, it
        // would carry the new limit, at which nothing is blocked).
        self.data_blocked_pending = false;
        self.wake_for_credit();
    }

    /// Wakes streams waiting for connection credit while the credit left covers what those woken so far
    /// have to send, up to a packet's worth each, so that streams woken together share the credit packet
    /// by packet (see `waiting.rs`); the others stay listed, first in line for the next raise. Returns
    /// whether any stream was woken.
    fn wake_for_credit(&mut self) -> bool {
        let mut credit = self.send_max_data.saturating_sub(self.send_data);
        let mut woke = false;
        while credit > 0 {
            let Some(id) = self.conn_blocked.pop() else {
                break;
            };
            // Gone, or reset while it waited (`unlist_reset`): a stale entry.
            let Some(s) = self.streams.get_mut(&id).filter(|s| s.conn_listed) else {
                continue;
            };
            self.conn_blocked.woken();
            s.conn_listed = false;
            if s.sched == Sched::ConnBlocked {
                s.sched = Sched::Idle;
                // A stream with no data left takes none of the credit, which goes on to the next in line
                // (one reset while it waited left the list then: `unlist_reset`).
                if let Some(send) = s.send.as_ref().filter(|x| x.has_data()) {
                    credit = credit.saturating_sub(send.new_data_within_limit().clamp(1, WAKE_SHARE));
                }
                self.schedule(id);
                woke = true;
            }
        }
        woke
    }

    /// Raises the peer's stream limit of `dir` (RFC 9000 §4.6: smaller values are ignored).
    fn raise_peer_max_streams(&mut self, dir: Dir, count: u64) {
        let d = di(dir);
        if count <= self.peer_max_streams[d] {
            return;
        }
        self.peer_max_streams[d] = count.min(MAX_STREAM_COUNT);
        // RFC 9000 §4.6, §19.14: likewise a STREAMS_BLOCKED not yet sent.
        self.streams_blocked_pending[d] = false;
        if self.open_blocked[d] {
            self.open_blocked[d] = false;
            self.events.push_back(StreamEvent::Available { dir });
        }
    }

    /// Puts stream `id` in its priority's queue if it has something to send.
    fn schedule(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.sched == Sched::Queued || !s.send.as_ref().is_some_and(SendStream::has_data) {
            return;
        }
        s.sched = Sched::Queued;
        self.queues.entry(s.priority).or_default().push_back(id);
    }

    /// Queues a per-stream control frame, at most once per stream and kind.
    fn queue_control(&mut self, id: StreamId, kind: ControlKind) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.queued.queue(&mut self.control, id, kind);
        }
    }

    /// Stream `id`'s sending half was reset (by the application, or after the peer's STOP_SENDING): it
    /// sends nothing more (RFC 9000 §3.1, §13.3), so it leaves the streams blocked at their own limit
    /// and those waiting for connection credit, where its entry becomes stale as a forgotten stream's.
    /// A bidirectional stream stays while the peer's half is open, and `blocked_frames_sent`, asked
    /// after every packet, would pass over it each time (RFC 9000 §21.9).
    fn unlist_reset(&mut self, id: StreamId) {
        self.stream_blocked_sent.remove(&id);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.sched == Sched::ConnBlocked {
            s.sched = Sched::Idle;
        }
        if s.conn_listed {
            s.conn_listed = false;
            let streams = &self.streams;
            self.conn_blocked
                .forgotten(|id| streams.get(&id).is_some_and(|s| s.conn_listed));
        }
    }

    /// Forgets stream `id` once both halves are over, returning stream credit to the peer for its own
    /// streams (RFC 9000 §4.6: "increase limits as streams are closed").
    fn maybe_forget(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let send_done = s.send.as_ref().map_or(true, SendStream::is_done);
        let recv_done = s.recv.as_ref().map_or(true, RecvStream::is_done);
        if !(send_done && recv_done) {
            return;
        }
        if let Some(mut s) = self.streams.remove(&id) {
            if s.conn_listed {
                let streams = &self.streams;
                self.conn_blocked
                    .forgotten(|id| streams.get(&id).is_some_and(|s| s.conn_listed));
            }
            if let Some(send) = s.send.as_ref() {
                self.send_buffered = self.send_buffered.saturating_sub(send.buffered());
            }
            self.stream_blocked_sent.remove(&id);
            // Anything of the stream still counted against the connection window is released.
            if let Some(recv) = s.recv.as_mut() {
                let n = recv.take_discard_credit();
                self.consume_conn(n);
            }
            if self.spare.len() < self.config.reused_streams {
                // Held data goes now (received chunks pin their datagrams); storage stays if small.
                if let Some(send) = s.send.as_mut() {
                    send.release();
                }
                if let Some(recv) = s.recv.as_mut() {
                    recv.release();
                }
                self.spare.push(s);
            }
        }
        if id.initiator() != self.side {
            let d = di(id.dir());
            if self.max_remote[d] < MAX_STREAM_COUNT {
                self.max_remote[d] += 1;
                self.max_streams_pending[d] = true;
            }
        }
    }

    /// Counts `n` bytes consumed at the connection level and asks for a MAX_DATA when due. Called after
    /// data arrives too (with what it consumed, perhaps nothing): the peer running short of credit can make
    /// an update due (see [`RecvWindow::wants_update_received`]).
    fn consume_conn(&mut self, n: u64) {
        self.recv_window.consume(n);
        if self.recv_window.wants_update_received(self.recv_data) {
            self.max_data_pending = true;
        }
    }

    /// Byte counts of stream data.
    pub(crate) fn stats(&self) -> StreamStats {
        // The bytes received are what connection flow control counts (RFC 9000 §4.5).
        StreamStats {
            bytes_received: self.recv_data,
            ..self.stats
        }
    }

    /// The next event for the application.
    pub(crate) fn poll_event(&mut self) -> Option<StreamEvent> {
        let ev = self.events.pop_front()?;
        if let StreamEvent::Opened { dir } = ev {
            self.opened_signaled[di(dir)] = false;
        }
        Some(ev)
    }

    /// The lengths of every collection of the streams, for tests of what a long life leaves behind.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("streams", self.streams.len()),
            ("queues", self.queues.len()),
            ("queued ids", self.queues.values().map(VecDeque::len).sum()),
            ("conn_blocked", self.conn_blocked.entries()),
            ("stream_blocked_sent", self.stream_blocked_sent.len()),
            ("control", self.control.len()),
            ("control capacity", self.control.capacity()),
            ("events", self.events.len()),
            ("events capacity", self.events.capacity()),
            ("spare", self.spare.len()),
            ("send_buffered", self.send_buffered),
            ("fragments_bound", self.fragments_bound),
        ]
    }

    /// How many streams are open.
    #[cfg(test)]
    pub(crate) fn open_streams(&self) -> usize {
        self.streams.len()
    }
}
