//! Loss detection and RTT estimation (RFC 9002 §5, §6 and Appendix A).
//!
//! [`LossDetection`] tracks the packets we sent in each packet number space until they are acknowledged,
//! declared lost or discarded with their keys. It keeps bytes in flight, the [`RttEstimator`] and the PTO
//! backoff, and hands back what a congestion controller needs: newly acknowledged packets (size and send
//! time), lost packets, the send time of the largest acknowledged packet and a persistent-congestion flag.
//!
//! # The timer
//!
//! Appendix A keeps one loss detection timer and re-arms it (SetLossDetectionTimer) after every relevant
//! event. Here the deadline is computed on demand by [`LossDetection::timeout`] from the current state and
//! the caller's [`RecoveryContext`], so a change the tracker cannot see (the handshake got confirmed, the
//! server's anti-amplification limit was lifted) takes effect on the next call without a separate re-arm
//! step. One moment has to be remembered: the client's anti-deadlock PTO (RFC 9002 §6.2.2.1) counts from
//! when the timer was last armed, not from a sent packet; recomputing it from each caller's `now` would push
//! it forward on every poll and it would never fire. The tracker records that moment (the last in-flight
//! send, newly acknowledging ACK, handled timeout or key discard) itself.
//!
//! # Cost and memory
//!
//! Only packets in flight are retained (of the others, the numbers and send times of the last four, for
//! RTT samples; of those declared lost, the last 64, to notice spurious losses), so memory is bounded by
//! what we sent. ACK processing walks the tracked packets inside each acknowledged range (a deque indexed
//! by packet number, see [`sent`]), never the numbers of a range, so a range covering 2^40 packet numbers
//! costs the same as one covering the few packets we have. Sending and acknowledging a packet allocate
//! nothing in the steady state.

// The connection wires this module up next; until then parts of the API are unused.
#![allow(dead_code)]

mod rtt;
mod sent;
#[cfg(test)]
mod tests;

#[allow(unused_imports)] // The constants are for the connection, which wires this module up next.
pub(crate) use rtt::{RttEstimator, GRANULARITY, INITIAL_RTT};

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use tinyvec::TinyVec;

use self::sent::{RecentNotInFlight, SentPackets};
use super::SpaceId;
use crate::wire::TransportError;
use crate::Side;

/// kPacketThreshold (RFC 9002 §6.1.1: "The RECOMMENDED initial value for the packet reordering threshold
/// (kPacketThreshold) is 3").
pub(crate) const PACKET_THRESHOLD: u64 = 3;

/// The largest packet reordering threshold spurious losses can raise kPacketThreshold to (RFC 9002
/// §6.1.1: "Implementations MAY ... use adaptive thresholds"). Beyond it, the time threshold alone
/// waits for reordered packets. How many packets overtake a late one grows with the sending rate (at
/// 100 Mbit/s, about a hundred in 12.5 ms), so the bound is generous: whatever the packet threshold,
/// the time threshold still declares a packet lost within two RTTs.
pub(crate) const MAX_PACKET_THRESHOLD: u64 = 256;

/// kTimeThreshold, 9/8 (RFC 9002 §6.1.2), in eighths.
pub(crate) const TIME_THRESHOLD_EIGHTHS: u32 = 9;

/// The largest time threshold spurious losses can raise kTimeThreshold to, in eighths: twice the RTT
/// (RFC 9002 §6.1.2: "Implementations MAY experiment with absolute thresholds, thresholds from previous
/// connections, adaptive thresholds").
pub(crate) const MAX_TIME_THRESHOLD_EIGHTHS: u32 = 16;

/// After this many recovery periods in a row with no loss found spurious, raised reordering thresholds
/// go back to their initial values (as RFC 8985 §6.2 does for RACK's reordering window after 16 loss
/// recoveries): reordering seen once, on a route since changed, would otherwise slow the detection of
/// every later loss for the rest of the connection.
pub(crate) const THRESHOLD_RESET_RECOVERIES: u32 = 16;

/// How many packets declared lost a space remembers, to notice when one is acknowledged after all (a
/// spurious loss); older ones are forgotten.
pub(crate) const MAX_LOST_REMEMBERED: usize = 64;

/// kPersistentCongestionThreshold (RFC 9002 §7.6.1: "The RECOMMENDED value for
/// kPersistentCongestionThreshold is 3").
pub(crate) const PERSISTENT_CONGESTION_THRESHOLD: u32 = 3;

/// How many ranges of never-sent packet numbers (skips and gaps) a space remembers for the RFC 9000
/// §13.1 check; older ones are forgotten.
pub(crate) const MAX_UNSENT_RANGES: usize = 64;

/// What we know about one sent packet (RFC 9002 Appendix A.1.1), plus the caller's record `data` of what
/// it carried, handed back when the packet is acknowledged, lost or discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentPacket<T> {
    /// When the packet was sent.
    pub(crate) time_sent: Instant,
    /// The bytes sent in the packet, with QUIC framing but without UDP or IP overhead.
    pub(crate) size: u16,
    /// Whether the packet contains an ack-eliciting frame (RFC 9002 §2).
    pub(crate) ack_eliciting: bool,
    /// Whether the packet counts toward bytes in flight (RFC 9002 §2: ack-eliciting or carrying
    /// PADDING). Packets not in flight are not retained.
    pub(crate) in_flight: bool,
    /// A path MTU probe (RFC 9000 §14.4): its loss is not congestion, so it neither starts nor ends a
    /// persistent-congestion period, and the caller leaves it out of its congestion response.
    pub(crate) mtu_probe: bool,
    /// Sent marked ECT(0) (RFC 9000 §13.4.2).
    pub(crate) ecn_marked: bool,
    /// The caller's record of the packet's contents.
    pub(crate) data: T,
}

/// Where a path's packets start, kept while the connection is away from it (`LossDetection::path_start`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathStart {
    first_pn: u64,
    window_first_pn: u64,
    foreign: Option<(u64, u64)>,
    /// The first packet number sent after the connection left the path.
    left_at: u64,
}

/// The packet numbers of one space sent on the current path: from `first` on, but for `foreign`
/// (`start..end`), sent on another path while the connection was away from this one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathPns {
    first: u64,
    foreign: Option<(u64, u64)>,
}

impl PathPns {
    /// Whether packet `pn` was sent on the current path.
    pub(crate) fn contains(&self, pn: u64) -> bool {
        pn >= self.first && !self.foreign.is_some_and(|(from, to)| (from..to).contains(&pn))
    }
}

/// Connection state the loss detector needs but does not own, passed with each call that may depend on
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryContext {
    /// The peer's max_ack_delay transport parameter (RFC 9000 §18.2; 25 ms when absent).
    pub(crate) max_ack_delay: Duration,
    /// Whether the handshake is confirmed (RFC 9001 §4.1.2).
    pub(crate) handshake_confirmed: bool,
    /// Whether we have Handshake keys: picks the space of a client's anti-deadlock probe (RFC 9002
    /// §6.2.2.1).
    pub(crate) has_handshake_keys: bool,
    /// A server only: whether the anti-amplification limit (RFC 9000 §8.1) leaves nothing to send. A
    /// server arms no PTO then (RFC 9002 §6.2.2.1). Ignored for a client.
    pub(crate) at_anti_amplification_limit: bool,
    /// How long the ACK being processed waited here for its keys (a packet held until they came, see
    /// `conn/early.rs`): not part of the round trip, so it comes off the RTT sample (RFC 9002 §5.3).
    pub(crate) local_delay: Duration,
}

/// An ACK frame the connection must reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckError {
    /// The ACK acknowledges `pn`, which we never sent in `space`: at or beyond the next packet number, or
    /// one we skipped. RFC 9000 §13.1: "An endpoint SHOULD treat receipt of an acknowledgment for a
    /// packet it did not send as a connection error of type PROTOCOL_VIOLATION".
    UnsentPacket {
        /// The space of the ACK frame.
        space: SpaceId,
        /// A packet number the ACK covers that was never sent.
        pn: u64,
    },
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::UnsentPacket { space, pn } => {
                write!(f, "ACK of packet {pn} never sent in the {space:?} space")
            }
        }
    }
}

impl std::error::Error for AckError {}

impl From<AckError> for TransportError {
    /// A PROTOCOL_VIOLATION (RFC 9000 §13.1); the caller adds the ACK frame type.
    fn from(e: AckError) -> Self {
        match e {
            AckError::UnsentPacket { .. } => {
                TransportError::protocol_violation("acknowledgment of a packet never sent")
            }
        }
    }
}

/// What an ACK frame did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckOutcome<T> {
    /// How many packets this ACK newly acknowledged (each handed to the caller's callback).
    pub(crate) acked: usize,
    /// Packets declared lost as a result (RFC 9002 §6.1), by ascending packet number.
    pub(crate) lost: Vec<(u64, SentPacket<T>)>,
    /// The send time of the ACK's largest acknowledged packet, if this ACK newly acknowledged it (for the
    /// congestion controller's recovery period and ECN processing, RFC 9002 §7.3.2, Appendix B.7). When
    /// that packet is a new largest whose send time is not remembered (an ACK-only packet older than the
    /// last few), a moment it was sent at or before, the earliest known: a packet sent later, or the start
    /// of the last recovery period if it was numbered below the first packet sent in it.
    pub(crate) largest_acked_time_sent: Option<Instant>,
    /// Whether the ACK produced an RTT sample (RFC 9002 §5.1).
    pub(crate) rtt_sampled: bool,
    /// Whether the ACK raised the space's largest acknowledged packet number (its ECN counts are
    /// validated only then, RFC 9000 §13.4.2.1).
    pub(crate) largest_increased: bool,
    /// Whether `lost` establishes persistent congestion (RFC 9002 §7.6.2), judged within this space
    /// only, which §7.6.2 allows.
    pub(crate) persistent_congestion: bool,
    /// Packets declared lost earlier (and remembered) that this ACK acknowledged: spurious losses, by
    /// ascending packet number. They were handed over as lost, so they are not among `acked`.
    pub(crate) spurious: Vec<u64>,
}

impl<T> Default for AckOutcome<T> {
    fn default() -> Self {
        Self {
            acked: 0,
            lost: Vec::new(),
            largest_acked_time_sent: None,
            rtt_sampled: false,
            largest_increased: false,
            persistent_congestion: false,
            spurious: Vec::new(),
        }
    }
}

/// What [`LossDetection::on_timeout`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeoutOutcome<T> {
    /// The deadline has not passed (or nothing is armed): nothing to do.
    Nothing,
    /// Time-threshold loss detection declared these packets in `space` lost (RFC 9002 §6.1.2), by
    /// ascending packet number.
    Lost {
        /// The space the packets were sent in.
        space: SpaceId,
        /// The lost packets.
        lost: Vec<(u64, SentPacket<T>)>,
        /// Whether `lost` establishes persistent congestion (RFC 9002 §7.6.2), judged as for an ACK.
        persistent_congestion: bool,
    },
    /// A probe timeout (RFC 9002 §6.2): `pto_count` has been incremented; send ack-eliciting probes in
    /// `space`.
    Probe {
        /// The space to probe in.
        space: SpaceId,
        /// The client's anti-deadlock probe (RFC 9002 §6.2.2.1): nothing ack-eliciting is in flight, so
        /// send one ack-eliciting packet in `space`: a Handshake packet, or an Initial packet in a
        /// datagram padded to at least 1200 bytes. Otherwise send one or two ack-eliciting packets in
        /// `space` (RFC 9002 §6.2.4), new data if any, else data from [`LossDetection::oldest_unacked`],
        /// else a PING.
        anti_deadlock: bool,
    },
}

/// The sent-packet state of one packet number space.
#[derive(Debug)]
struct Space<T> {
    /// Packets in flight, neither acknowledged nor declared lost, by packet number.
    sent: SentPackets<T>,
    /// The latest few packets not in flight, for an RTT sample when one is the largest acknowledged.
    not_in_flight: RecentNotInFlight,
    /// The smallest packet number neither sent nor skipped.
    next_pn: u64,
    /// Packet numbers below `next_pn` that were never sent, as disjoint ranges `start -> end` (inclusive):
    /// the most recent [`MAX_UNSENT_RANGES`] of them.
    unsent: BTreeMap<u64, u64>,
    /// The largest packet number acknowledged so far.
    largest_acked: Option<u64>,
    /// The send time of the latest ack-eliciting packet in flight.
    time_of_last_ack_eliciting: Option<Instant>,
    /// The number of ack-eliciting packets in `sent`.
    ack_eliciting_in_flight: u64,
    /// The sum of the sizes in `sent`.
    bytes_in_flight: u64,
    /// The first packet number sent on the current path (RFC 9000 §9.4): acknowledgements and losses of
    /// earlier ones feed neither the RTT estimate nor the congestion controller. 0 but in the
    /// application space, whose packets are the only ones a path change can leave behind.
    path_first_pn: u64,
    /// Packet numbers from `path_first_pn` on that were sent on another path (`start..end`): those the
    /// connection sent while it was away from this path, which it came back to (RFC 9000 §9.3.2,
    /// §9.3.3). Their acknowledgements and losses feed neither this path's RTT estimate nor its
    /// controller (§9.4); they still count against its window (a few at most, and only thus
    /// conservative).
    foreign: Option<(u64, u64)>,
    /// The first packet number counted against the current congestion window: as `path_first_pn`, but
    /// kept when only the peer's port changed (the same network path, whose window carries over).
    window_first_pn: u64,
    /// The part of `bytes_in_flight` numbered from `window_first_pn`: what the current congestion
    /// window holds, since packets sent on a path the peer left MUST NOT count against the new one's
    /// (RFC 9000 §9.4).
    path_bytes_in_flight: u64,
    /// When the oldest unacknowledged packet below `largest_acked` crosses the time threshold.
    loss_time: Option<Instant>,
    /// A persistent-congestion run the last loss pass left open (RFC 9002 §7.6.2): the send time of
    /// its first lost packet, and the number of the packet in flight it stopped at, not yet lost. The
    /// next pass continues the run if that packet is still in flight with nothing acknowledged below it.
    open_run: Option<(Instant, u64)>,
    /// The latest packets declared lost (not path MTU probes), ascending, with their send times: at most
    /// [`MAX_LOST_REMEMBERED`].
    lost: VecDeque<(u64, Instant)>,
    /// Whether the keys were discarded (no more packets may be sent here).
    discarded: bool,
}

impl<T> Space<T> {
    /// Uses packet number `pn` for a packet sent now: the numbers passed over are recorded as never
    /// sent. False, and nothing changed, when `pn` is below the next number (numbers strictly increase).
    fn take_pn(&mut self, pn: u64) -> bool {
        if pn < self.next_pn {
            return false;
        }
        if pn > self.next_pn {
            self.mark_unsent(self.next_pn, pn - 1);
        }
        self.next_pn = pn.saturating_add(1);
        true
    }

    /// Which of this space's packet numbers were sent on the current path.
    fn path_pns(&self) -> PathPns {
        PathPns {
            first: self.path_first_pn,
            foreign: self.foreign,
        }
    }

    fn new() -> Self {
        Self {
            sent: SentPackets::default(),
            not_in_flight: RecentNotInFlight::default(),
            next_pn: 0,
            unsent: BTreeMap::new(),
            largest_acked: None,
            time_of_last_ack_eliciting: None,
            ack_eliciting_in_flight: 0,
            bytes_in_flight: 0,
            path_first_pn: 0,
            foreign: None,
            window_first_pn: 0,
            path_bytes_in_flight: 0,
            loss_time: None,
            open_run: None,
            lost: VecDeque::new(),
            discarded: false,
        }
    }

    /// Forgets every packet in flight (taken out, neither acknowledged nor lost) and the timers they
    /// set; the packet numbers sent stay known.
    fn take_in_flight(&mut self) -> impl Iterator<Item = (u64, SentPacket<T>)> {
        self.bytes_in_flight = 0;
        self.path_bytes_in_flight = 0;
        self.ack_eliciting_in_flight = 0;
        self.time_of_last_ack_eliciting = None;
        self.loss_time = None;
        self.open_run = None;
        self.lost.clear();
        self.not_in_flight.clear();
        self.sent.take_all()
    }

    /// Records `lo..=hi`, all above the existing ranges, as never sent, merging with the last range.
    ///
    /// A skipped number cannot be forgotten safely once everything around it is acknowledged: an
    /// optimistic ACK range may run from below it up to packets sent later. So the ranges are kept, but
    /// only the most recent [`MAX_UNSENT_RANGES`]: they come from our own sends, and giving up the check
    /// on the oldest skips is the price of a fixed bound.
    fn mark_unsent(&mut self, lo: u64, hi: u64) {
        if let Some((_, end)) = self.unsent.iter_mut().next_back() {
            if end.checked_add(1) == Some(lo) {
                *end = hi;
                return;
            }
        }
        self.unsent.insert(lo, hi);
        if self.unsent.len() > MAX_UNSENT_RANGES {
            self.unsent.pop_first();
        }
    }

    /// A packet number in `range` that was never sent, if any.
    fn first_unsent_in(&self, range: &RangeInclusive<u64>) -> Option<u64> {
        let (lo, hi) = (*range.start(), *range.end());
        if hi >= self.next_pn {
            return Some(lo.max(self.next_pn));
        }
        // The unsent ranges are disjoint and sorted, so the last one starting at or below `hi` is the only
        // candidate that can reach up to `lo`.
        let (&start, &end) = self.unsent.range(..=hi).next_back()?;
        (end >= lo).then_some(start.max(lo))
    }

    /// Removes a tracked packet and takes it out of the in-flight counts.
    fn remove(&mut self, pn: u64) -> Option<SentPacket<T>> {
        let p = self.sent.remove(pn)?;
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(u64::from(p.size));
        if pn >= self.window_first_pn {
            self.path_bytes_in_flight = self.path_bytes_in_flight.saturating_sub(u64::from(p.size));
        }
        if p.ack_eliciting {
            self.ack_eliciting_in_flight = self.ack_eliciting_in_flight.saturating_sub(1);
        }
        Some(p)
    }
}

/// The three spaces' state. The Initial and Handshake spaces share one box, released once both are
/// discarded (RFC 9001 §4.9): an established connection keeps only the application space.
#[derive(Debug)]
struct Spaces<T> {
    handshake: Option<Box<[Space<T>; 2]>>,
    /// The Initial and Handshake spaces' next packet numbers, kept when they are released: an ACK frame
    /// can still arrive in a released space (a client's Handshake packet may carry one after the CRYPTO
    /// frame whose Finished confirms the handshake at the server), and it is checked against what was
    /// sent there (RFC 9000 §13.1).
    released_next_pn: [u64; 2],
    data: Space<T>,
}

impl<T> Spaces<T> {
    fn get(&self, space: SpaceId) -> Option<&Space<T>> {
        match space {
            SpaceId::Data => Some(&self.data),
            _ => self.handshake.as_deref()?.get(space.index()),
        }
    }

    fn get_mut(&mut self, space: SpaceId) -> Option<&mut Space<T>> {
        match space {
            SpaceId::Data => Some(&mut self.data),
            _ => self.handshake.as_deref_mut()?.get_mut(space.index()),
        }
    }

    /// The smallest packet number of `space` neither sent nor skipped, released or not.
    fn next_pn(&self, space: SpaceId) -> u64 {
        match self.get(space) {
            Some(s) => s.next_pn,
            None => self.released_next_pn.get(space.index()).copied().unwrap_or(0),
        }
    }

    /// The spaces still held.
    fn iter(&self) -> impl Iterator<Item = &Space<T>> {
        self.handshake
            .iter()
            .flat_map(|h| h.iter())
            .chain(std::iter::once(&self.data))
    }

    /// The spaces still held, for changing.
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Space<T>> {
        self.handshake
            .iter_mut()
            .flat_map(|h| h.iter_mut())
            .chain(std::iter::once(&mut self.data))
    }

    /// Whether the Initial and Handshake spaces were released.
    #[cfg(test)]
    fn released(&self) -> bool {
        self.handshake.is_none()
    }
}

/// Takes the packets in `lost` that the ranges `ascending` acknowledge: spurious losses (RFC 9002
/// §6.1.1, §6.1.2). Returns them, and the packet and time thresholds (in eighths of `rtt_base`,
/// max(smoothed_rtt, latest_rtt)) that would have waited for them, within their bounds. `prev_largest`
/// is the largest packet number acknowledged before this ACK. Out of line: the bulk path never comes
/// here.
#[cold]
#[inline(never)]
fn take_spurious(
    lost: &mut VecDeque<(u64, Instant)>,
    ascending: &[(u64, u64)],
    prev_largest: Option<u64>,
    now: Instant,
    rtt_base: Duration,
) -> (Vec<u64>, u64, u32) {
    let (mut spurious, mut packets, mut eighths) = (Vec::new(), 0, 0);
    let base = rtt_base.as_nanos();
    for &(lo, hi) in ascending {
        let from = lost.partition_point(|&(pn, _)| pn < lo);
        let to = lost.partition_point(|&(pn, _)| pn <= hi);
        for (pn, time_sent) in lost.drain(from..to.max(from)) {
            spurious.push(pn);
            // The packet came `prev_largest - pn` packets late, and its acknowledgement `now - time_sent`
            // after it was sent: thresholds that large would have waited for it.
            let late_by = prev_largest.map_or(0, |l| l.saturating_sub(pn));
            packets = late_by.saturating_add(1).min(MAX_PACKET_THRESHOLD).max(packets);
            if base > 0 {
                let waited = now.saturating_duration_since(time_sent).as_nanos();
                let e = waited
                    .saturating_mul(8)
                    .div_ceil(base)
                    .min(u128::from(MAX_TIME_THRESHOLD_EIGHTHS));
                // At most MAX_TIME_THRESHOLD_EIGHTHS, so it fits.
                eighths = u32::try_from(e)
                    .unwrap_or(MAX_TIME_THRESHOLD_EIGHTHS)
                    .max(eighths);
            }
        }
    }
    (spurious, packets, eighths)
}

/// Per-space sent-packet tracking, RTT estimation and the loss detection timer (RFC 9002 §5, §6).
///
/// `T` is the caller's record of what a packet carried. Feed it every packet sent
/// ([`on_packet_sent`](Self::on_packet_sent)), every ACK frame
/// ([`on_ack_received`](Self::on_ack_received)) and key discard ([`discard_space`](Self::discard_space)),
/// poll [`timeout`](Self::timeout) and call [`on_timeout`](Self::on_timeout) when it has passed.
#[derive(Debug)]
pub(crate) struct LossDetection<T> {
    /// Which end we are: a server always counts the peer's address as validated (Appendix A.8).
    side: Side,
    /// Initial, Handshake, Data; the first two only until both are discarded.
    spaces: Spaces<T>,
    /// The path's RTT estimate.
    rtt: RttEstimator,
    /// When the first RTT sample was taken (Appendix A.3 first_rtt_sample).
    first_rtt_sample: Option<Instant>,
    /// The number of PTOs since the last reset (Appendix A.3 pto_count).
    pto_count: u32,
    /// Whether an ACK has been received in a Handshake packet (Appendix A.8
    /// PeerCompletedAddressValidation). Kept after the Handshake space is discarded.
    handshake_acked: bool,
    /// When the loss detection timer was last armed (a send in flight, a newly acknowledging ACK, a
    /// handled timeout or a key discard): the base of the client's anti-deadlock PTO (Appendix A.8
    /// GetPtoTimeAndSpace).
    armed_at: Option<Instant>,
    /// The packet reordering threshold: kPacketThreshold, raised by spurious losses up to
    /// [`MAX_PACKET_THRESHOLD`] (RFC 9002 §6.1.1).
    packet_threshold: u64,
    /// The time threshold in eighths of the RTT: kTimeThreshold, raised by spurious losses up to
    /// [`MAX_TIME_THRESHOLD_EIGHTHS`] (RFC 9002 §6.1.2).
    time_threshold_eighths: u32,
    /// Recovery periods begun since a loss last proved spurious (or the thresholds were last reset).
    recoveries_since_spurious: u32,
    /// When the last recovery period began, and each space's next packet number then: the packets
    /// numbered below were sent before it.
    recovery_mark: Option<(Instant, [u64; 3])>,
}

impl<T> LossDetection<T> {
    /// A tracker with nothing sent, for the `side` we are, starting from `initial_rtt` (normally
    /// [`INITIAL_RTT`], RFC 9002 §6.2.2).
    pub(crate) fn new(side: Side, initial_rtt: Duration) -> Self {
        Self {
            side,
            spaces: Spaces {
                handshake: Some(Box::new([Space::new(), Space::new()])),
                released_next_pn: [0; 2],
                data: Space::new(),
            },
            rtt: RttEstimator::new(initial_rtt),
            first_rtt_sample: None,
            pto_count: 0,
            handshake_acked: false,
            armed_at: None,
            packet_threshold: PACKET_THRESHOLD,
            time_threshold_eighths: TIME_THRESHOLD_EIGHTHS,
            recoveries_since_spurious: 0,
            recovery_mark: None,
        }
    }

    /// A congestion event started a recovery period at `now`. After [`THRESHOLD_RESET_RECOVERIES`] of them with no
    /// loss found spurious, the reordering thresholds return to their initial values: the reordering that
    /// raised them is no longer seen (a spurious loss would have shown it), and large thresholds delay
    /// the detection of real losses (by up to two RTTs). If the reordering is still there, the next
    /// spurious loss raises them again, and its congestion event is undone.
    pub(crate) fn on_recovery_started(&mut self, now: Instant) {
        let next = SpaceId::ALL.map(|space| self.spaces.next_pn(space));
        self.recovery_mark = Some((now, next));
        self.recoveries_since_spurious = self.recoveries_since_spurious.saturating_add(1);
        if self.recoveries_since_spurious >= THRESHOLD_RESET_RECOVERIES {
            self.recoveries_since_spurious = 0;
            self.packet_threshold = PACKET_THRESHOLD;
            self.time_threshold_eighths = TIME_THRESHOLD_EIGHTHS;
        }
    }

    /// The peer moved to another path (RFC 9000 §9.4): 1-RTT packets sent from now on are its own, and
    /// `rtt`, if given, is its estimate (another IP address: a new network path). Without, only the
    /// peer's port changed: the estimate carries over, and so does the window, with the packets in
    /// flight it holds.
    pub(crate) fn on_path_change(&mut self, rtt: Option<RttEstimator>) {
        let next = self.spaces.next_pn(SpaceId::Data);
        // Acknowledgements of packets sent before (on a path the peer has left) give no RTT sample.
        self.spaces.data.path_first_pn = next;
        self.spaces.data.foreign = None;
        if rtt.is_some() {
            // And those packets no longer count against the new path's window.
            self.spaces.data.window_first_pn = next;
            self.spaces.data.path_bytes_in_flight = 0;
        }
        self.start_path(rtt);
    }

    /// Where the current path's packets start, to give back to [`return_to_path`](Self::return_to_path)
    /// if the connection comes back to it.
    pub(crate) fn path_start(&self) -> PathStart {
        let data = &self.spaces.data;
        PathStart {
            first_pn: data.path_first_pn,
            window_first_pn: data.window_first_pn,
            foreign: data.foreign,
            left_at: data.next_pn,
        }
    }

    /// Back on a path the connection left, whose packets started at `start` (from
    /// [`path_start`](Self::path_start)) and whose estimate was `rtt`: its packets still in flight feed
    /// its estimate and controller again, and count against its window (with those sent on the path
    /// left meanwhile, a few probes at most).
    pub(crate) fn return_to_path(&mut self, start: PathStart, rtt: RttEstimator) {
        let data = &mut self.spaces.data;
        let PathStart {
            first_pn,
            window_first_pn,
            foreign,
            left_at,
        } = start;
        data.path_first_pn = first_pn;
        data.window_first_pn = window_first_pn;
        // RFC 9000 §9.4: what was sent while away, on the path left, is not this path's. An earlier stay
        // away whose packets are still tracked is kept too, as one span from its start: this path's own
        // packets sent between the two are then left out of its feedback as well (rare: two returns
        // within the life of one packet), rather than another path's counted in.
        let away = (left_at < data.next_pn).then_some((left_at, data.next_pn));
        let earlier = foreign.filter(|&(from, to)| data.sent.range(from..to).next().is_some());
        data.foreign = match (earlier, away) {
            (Some((from, _)), Some((_, to))) => Some((from, to)),
            (earlier, away) => away.or(earlier),
        };
        data.path_bytes_in_flight = data
            .sent
            .range(window_first_pn..)
            .map(|(_, p)| u64::from(p.size))
            .sum();
        self.start_path(Some(rtt));
    }

    /// What a path change resets, beyond the packets counted as the path's.
    fn start_path(&mut self, rtt: Option<RttEstimator>) {
        // A run of losses on the path left cannot be continued by the new path's (RFC 9000 §9.4), and
        // its late acknowledgements say nothing of the new path's reordering.
        self.spaces.data.open_run = None;
        self.spaces.data.lost.clear();
        if let Some(rtt) = rtt {
            self.rtt = rtt;
            self.first_rtt_sample = None;
            self.packet_threshold = PACKET_THRESHOLD;
            self.time_threshold_eighths = TIME_THRESHOLD_EIGHTHS;
            self.recoveries_since_spurious = 0;
        }
    }

    /// The first 1-RTT packet number sent on the current path.
    pub(crate) fn path_first_pn(&self) -> u64 {
        self.spaces.data.path_first_pn
    }

    /// Which packet numbers of `space` were sent on the current path (RFC 9000 §9.4): all but in the
    /// application space, whose packets are the only ones a path change can leave behind.
    pub(crate) fn path_pns(&self, space: SpaceId) -> PathPns {
        match space {
            SpaceId::Data => self.spaces.data.path_pns(),
            _ => PathPns {
                first: 0,
                foreign: None,
            },
        }
    }

    /// Records a sent packet (RFC 9002 Appendix A.5 OnPacketSent).
    ///
    /// Packet numbers must strictly increase within a space; numbers passed over are recorded as never
    /// sent, as with [`skip_packet_number`](Self::skip_packet_number). A packet not in flight (only ACK,
    /// CONNECTION_CLOSE) is not retained: nothing about it needs recovery, and keeping it could grow
    /// without bound while the peer has no reason to acknowledge it.
    pub(crate) fn on_packet_sent(&mut self, space: SpaceId, pn: u64, packet: SentPacket<T>) {
        let Some(s) = self.spaces.get_mut(space) else {
            debug_assert!(false, "no packets are sent in a released space");
            return;
        };
        debug_assert!(pn >= s.next_pn, "packet numbers strictly increase within a space");
        debug_assert!(
            !s.discarded || space == SpaceId::Data,
            "no packets are sent in a space whose keys were discarded"
        );
        debug_assert!(
            packet.in_flight || !packet.ack_eliciting,
            "an ack-eliciting packet is in flight"
        );
        if !s.take_pn(pn) {
            // A broken caller invariant; refusing the packet keeps the accounting consistent.
            return;
        }
        if !packet.in_flight {
            // Not tracked, but its send time may give an RTT sample (RFC 9002 §5.1).
            s.not_in_flight.record(pn, packet.time_sent);
            return;
        }
        if packet.ack_eliciting {
            s.time_of_last_ack_eliciting = Some(packet.time_sent);
            s.ack_eliciting_in_flight += 1;
        }
        s.bytes_in_flight += u64::from(packet.size);
        // Numbers only grow: a packet sent now is the current path's.
        s.path_bytes_in_flight += u64::from(packet.size);
        self.armed_at = Some(packet.time_sent);
        s.sent.insert(pn, packet, s.largest_acked);
    }

    /// Records packet `pn` of `space` as sent to another address than the current path's (the challenge
    /// to a path the peer left, an answer to a probe from elsewhere): its number is used, and nothing
    /// else of it kept, not even its send time, which would give an acknowledgement of it as the
    /// largest an RTT sample of the other path (RFC 9000 §9.4: packets sent on another path MUST NOT
    /// contribute to the current path's RTT estimate).
    pub(crate) fn on_packet_sent_elsewhere(&mut self, space: SpaceId, pn: u64) {
        let Some(s) = self.spaces.get_mut(space) else {
            debug_assert!(false, "no packets are sent in a released space");
            return;
        };
        debug_assert!(pn >= s.next_pn, "packet numbers strictly increase within a space");
        s.take_pn(pn);
    }

    /// The remembered ranges of packet numbers never sent in `space` (skips and gaps).
    #[cfg(test)]
    pub(crate) fn unsent_ranges(&self, space: SpaceId) -> Vec<(u64, u64)> {
        self.spaces
            .get(space)
            .map_or_else(Vec::new, |s| s.unsent.iter().map(|(a, b)| (*a, *b)).collect())
    }

    /// Marks `pn` (at or above the next packet number) as deliberately never sent, so that an ACK of it
    /// is an [`AckError::UnsentPacket`] (RFC 9000 §21.4, optimistic ACK defence). The next packet sent in
    /// `space` must use a larger number.
    pub(crate) fn skip_packet_number(&mut self, space: SpaceId, pn: u64) {
        let Some(s) = self.spaces.get_mut(space) else {
            debug_assert!(false, "no packet numbers are used in a released space");
            return;
        };
        debug_assert!(pn >= s.next_pn, "only a future packet number can be skipped");
        if pn < s.next_pn {
            return;
        }
        s.mark_unsent(s.next_pn, pn);
        s.next_pn = pn.saturating_add(1);
    }

    /// Processes the ranges of an ACK frame received in `space` at `now` (RFC 9002 Appendix A.7
    /// OnAckReceived, A.10 DetectAndRemoveLostPackets).
    ///
    /// `ranges` are the acknowledged ranges, disjoint (highest first, as [`AckRanges`] yields them,
    /// though the order does not matter); it is walked once, and validated before anything changes.
    /// `ack_delay` is the decoded ACK Delay; it is ignored in the Initial space (RFC 9002 §5.3). Empty
    /// ranges are skipped.
    ///
    /// Each newly acknowledged packet is handed to `on_acked`, with the RTT estimate already updated by
    /// this ACK, and then dropped where it lies: records are not moved out to a list. The packets come
    /// in ascending order of packet number (in-order acknowledgement is the cheap case for the send
    /// buffers, and events follow the order packets were sent); loss detection runs after them.
    ///
    /// The work is proportional to the number of ranges (times its logarithm, to order them) plus the
    /// packets they newly acknowledge and the tracked packets below the largest acknowledged one, never
    /// to the width of a range.
    ///
    /// [`AckRanges`]: crate::wire::frame::AckRanges
    pub(crate) fn on_ack_received<I>(
        &mut self,
        space: SpaceId,
        ranges: I,
        ack_delay: Duration,
        now: Instant,
        ctx: &RecoveryContext,
        mut on_acked: impl FnMut(&RttEstimator, u64, &SentPacket<T>),
    ) -> Result<AckOutcome<T>, AckError>
    where
        I: IntoIterator<Item = RangeInclusive<u64>>,
    {
        let Some(s) = self.spaces.get_mut(space) else {
            // A released space holds nothing in flight, so the ACK only needs checking: everything below
            // the space's next packet number was sent (its skips, if any, were forgotten on discard).
            let next_pn = self.spaces.next_pn(space);
            return match ranges.into_iter().find(|r| !r.is_empty() && *r.end() >= next_pn) {
                Some(r) => Err(AckError::UnsentPacket {
                    space,
                    pn: (*r.start()).max(next_pn),
                }),
                None => Ok(AckOutcome::default()),
            };
        };

        // One walk over the ranges validates them and notes their bounds, lowest range first afterwards:
        // packets are handed over in ascending order. An ACK without loss has one range; the bounds of
        // eight stay on the stack.
        // RFC 9000 §13.1: an acknowledgment of a packet we did not send is a PROTOCOL_VIOLATION.
        let mut ascending: TinyVec<[(u64, u64); 8]> = TinyVec::new();
        for range in ranges.into_iter().filter(|r| !r.is_empty()) {
            if let Some(pn) = s.first_unsent_in(&range) {
                return Err(AckError::UnsentPacket { space, pn });
            }
            ascending.push((*range.start(), *range.end()));
        }
        let Some(largest) = ascending.iter().map(|&(_, hi)| hi).max() else {
            return Ok(AckOutcome::default());
        };
        ascending.sort_unstable();

        if space == SpaceId::Handshake {
            // Appendix A.8 PeerCompletedAddressValidation: "has received Handshake ACK".
            self.handshake_acked = true;
        }
        // A packet not in flight (only ACK frames) is not tracked; a new largest acknowledged packet number
        // is a packet newly acknowledged all the same.
        let prev_largest = s.largest_acked;
        let new_largest = prev_largest < Some(largest);
        s.largest_acked = s.largest_acked.max(Some(largest));

        // Appendix A.7: the RTT sample comes first, from the largest acknowledged packet if this ACK newly
        // acknowledges it, and only if some newly acknowledged packet is ack-eliciting (RFC 9002 §5.1).
        // Both are read in place; the tracked packets inside the ranges are visited, nothing else.
        // The largest may be a packet not in flight (only ACK frames), which is newly acknowledged only
        // if it is the new largest: it is not tracked, so an earlier acknowledgement of it is unknown.
        let mut outcome = AckOutcome {
            largest_increased: new_largest,
            ..AckOutcome::default()
        };
        let newest = match s.sent.range(largest..=largest).next() {
            Some((_, p)) => Some((p.time_sent, p.ack_eliciting)),
            None if new_largest => s.not_in_flight.time_sent(largest).map(|t| (t, false)),
            None => None,
        };
        if newest.is_none() && new_largest {
            // RFC 9002 Appendix B.7 dates an ECN-CE increase by the largest acknowledged packet's send
            // time, and §7.3.2 keeps a sender in a recovery period from reentering it. Not remembered, that
            // time is bounded by what is: packets numbered above were sent no earlier, and those numbered
            // below the first packet of the last recovery period were sent before it began. (Dated `now`,
            // the CE marks on the ACK-only packets of a receiving endpoint started a new recovery period,
            // and cut the window again, at every ACK frame that reported them.)
            let mark = self
                .recovery_mark
                .filter(|(_, next)| next.get(space.index()).is_some_and(|&n| largest < n))
                .map(|(t, _)| t);
            let above = s
                .sent
                .range(largest.saturating_add(1)..)
                .next()
                .map(|(_, p)| p.time_sent);
            outcome.largest_acked_time_sent = [mark, above, s.not_in_flight.earliest_above(largest)]
                .into_iter()
                .flatten()
                .min();
        }
        if let Some((newest_time_sent, newest_eliciting)) = newest {
            outcome.largest_acked_time_sent = Some(newest_time_sent);
            let eliciting = newest_eliciting
                || ascending
                    .iter()
                    .any(|&(lo, hi)| s.sent.range(lo..=hi).any(|(_, p)| p.ack_eliciting));
            // RFC 9000 §9.4: packets sent on the old path do not contribute to the new path's estimate.
            let this_path = s.path_pns().contains(largest);
            // A clock that stepped back since the packet went out measures nothing: no sample (a zero one
            // would make min_rtt zero for good).
            let measurable = now >= newest_time_sent;
            if eliciting && this_path && measurable {
                // RFC 9002 §5.3: an ACK that waited here for its keys gives the RTT as of its arrival
                // (a SHOULD until the handshake is confirmed; packets wait only before that).
                let latest_rtt = now
                    .saturating_duration_since(newest_time_sent)
                    .saturating_sub(ctx.local_delay);
                // RFC 9002 §5.3: "MAY ignore the acknowledgment delay for Initial packets" (not
                // subtracted; see `update_initial`).
                let taken = if space == SpaceId::Initial {
                    self.rtt
                        .update_initial(latest_rtt, ack_delay, ctx.max_ack_delay, ctx.handshake_confirmed)
                } else {
                    self.rtt
                        .update(latest_rtt, ack_delay, ctx.max_ack_delay, ctx.handshake_confirmed)
                };
                if taken {
                    self.first_rtt_sample.get_or_insert(now);
                    outcome.rtt_sampled = true;
                }
            }
        }

        // Packets declared lost and acknowledged after all: the loss was spurious (RFC 9002 §6.1.1,
        // §6.1.2). Nothing to look at, and no cost, unless some were declared lost.
        if !s.lost.is_empty() {
            let base = self.rtt.loss_delay_base();
            let (spurious, packets, eighths) =
                take_spurious(&mut s.lost, &ascending, prev_largest, now, base);
            if !spurious.is_empty() {
                self.recoveries_since_spurious = 0;
            }
            outcome.spurious = spurious;
            self.packet_threshold = self.packet_threshold.max(packets);
            self.time_threshold_eighths = self.time_threshold_eighths.max(eighths);
        }

        // Appendix A.7 DetectAndRemoveAckedPackets, each record handed over and dropped in its slot.
        let rtt = &self.rtt;
        for &(lo, hi) in ascending.iter() {
            // RFC 9002 §7.6.2: a packet not in flight acknowledged between two in flight ends any
            // persistent-congestion run across it.
            s.sent.on_range_acked(hi);
            let (bytes_in_flight, path_bytes_in_flight, ack_eliciting_in_flight) = (
                &mut s.bytes_in_flight,
                &mut s.path_bytes_in_flight,
                &mut s.ack_eliciting_in_flight,
            );
            let window_first_pn = s.window_first_pn;
            s.sent.drain_range(lo..=hi, |pn, p| {
                *bytes_in_flight = bytes_in_flight.saturating_sub(u64::from(p.size));
                if pn >= window_first_pn {
                    *path_bytes_in_flight = path_bytes_in_flight.saturating_sub(u64::from(p.size));
                }
                if p.ack_eliciting {
                    *ack_eliciting_in_flight = ack_eliciting_in_flight.saturating_sub(1);
                }
                outcome.acked += 1;
                on_acked(rtt, pn, p);
            });
        }
        // Appendix A.7: "Nothing to do if there are no newly acked packets." Loss detection runs after a
        // new largest acknowledged packet even when it was not in flight (RFC 9002 §6.1): the packets in
        // flight below it may now be lost, or need the loss timer.
        if outcome.acked == 0 && !new_largest {
            return Ok(outcome);
        }

        let (lost, persistent_congestion) = self.detect_lost_judged(space, now, ctx.max_ack_delay);
        outcome.lost = lost;
        outcome.persistent_congestion = persistent_congestion;

        // RFC 9002 §6.2.1: "The PTO backoff factor is reset when an acknowledgment is received", except at
        // a client not yet sure the server validated its address (Appendix A.7).
        if self.peer_completed_address_validation(ctx) {
            self.pto_count = 0;
        }
        self.armed_at = Some(now);
        Ok(outcome)
    }

    /// [`detect_lost`](Self::detect_lost) over the persistent-congestion period of the peer's
    /// `max_ack_delay`; persistent congestion, when established, also resets the RTT estimate (RFC 9002
    /// §5.3, Appendix B.8).
    fn detect_lost_judged(
        &mut self,
        space: SpaceId,
        now: Instant,
        max_ack_delay: Duration,
    ) -> (Vec<(u64, SentPacket<T>)>, bool) {
        let period = self.persistent_congestion_duration(max_ack_delay);
        let (lost, persistent_congestion) = self.detect_lost(space, now, period);
        if persistent_congestion {
            self.rtt.on_persistent_congestion();
        }
        (lost, persistent_congestion)
    }

    /// Declares packets in `space` lost by the packet and time thresholds and sets the space's loss time
    /// for the rest (RFC 9002 §6.1, Appendix A.10 DetectAndRemoveLostPackets).
    ///
    /// Also judges persistent congestion (RFC 9002 §7.6.2): two ack-eliciting lost packets sent after
    /// the first RTT sample, more than `persistent_period` apart, with none of the packets sent between
    /// them acknowledged. Numbers we skipped were never packets, and packets not in flight (only ACK
    /// frames) count only if acknowledged. A run of losses may span two passes: one stopped by the first
    /// packet not yet lost is continued by the next pass that finds that packet still in flight and
    /// declares it lost (the time threshold usually declares an ACK's losses in several passes, the last
    /// ones by the loss timer). Any other packet in flight no longer tracked (acknowledged, or lost
    /// earlier) breaks the run, which can only miss persistent congestion, never invent it.
    fn detect_lost(
        &mut self,
        space: SpaceId,
        now: Instant,
        persistent_period: Duration,
    ) -> (Vec<(u64, SentPacket<T>)>, bool) {
        let loss_delay = self.rtt.loss_delay_eighths(self.time_threshold_eighths);
        let packet_threshold = self.packet_threshold;
        let first_rtt_sample = self.first_rtt_sample;
        // RFC 9000 §9.4: packets sent on a path the peer has left say nothing of the current one's
        // congestion; only the current path's can make a persistent-congestion period.
        let path = self.path_pns(space);
        let Some(s) = self.spaces.get_mut(space) else {
            return (Vec::new(), false);
        };
        s.loss_time = None;
        let carried = s.open_run.take();
        let Some(largest_acked) = s.largest_acked else {
            return (Vec::new(), false);
        };
        // RFC 9002 §6.1.2: packets sent before this time are deemed lost.
        let lost_send_time = now.checked_sub(loss_delay);

        let mut lost_pns = Vec::new();
        let mut persistent = false;
        let mut run_start: Option<Instant> = None;
        for (pn, gap_acked, p) in s.sent.slots(..largest_acked) {
            // A packet acknowledged in the gap below this one (not in flight), or an empty slot (a packet
            // in flight acknowledged or lost earlier), ends the run.
            if gap_acked {
                run_start = None;
            }
            let Some(p) = p else {
                run_start = None;
                continue;
            };
            // The packet the last pass's run stopped at, still in flight with nothing acknowledged
            // between: the run goes on from where it started.
            if let Some((start, at)) = carried {
                if at == pn && !gap_acked {
                    run_start = Some(start);
                }
            }
            // RFC 9002 §6.1.1 (kPacketThreshold) and §6.1.2 (kTimeThreshold).
            let by_time = lost_send_time.is_some_and(|t| p.time_sent <= t);
            let by_count = largest_acked >= pn.saturating_add(packet_threshold);
            if by_time || by_count {
                lost_pns.push(pn);
                let after_sample = first_rtt_sample.is_some_and(|f| p.time_sent > f);
                let counts = p.ack_eliciting && after_sample && !p.mtu_probe && path.contains(pn);
                if counts {
                    match run_start {
                        Some(start) if p.time_sent.saturating_duration_since(start) > persistent_period => {
                            persistent = true;
                        }
                        Some(_) => {}
                        None => run_start = Some(p.time_sent),
                    }
                }
            } else {
                // The first run left open is kept for the next pass (normally there is one: the packets
                // lost are the oldest).
                if let Some(start) = run_start.take() {
                    s.open_run.get_or_insert((start, pn));
                }
                // RFC 9002 §6.1.2: "If packets sent prior to the largest acknowledged packet cannot yet be
                // declared lost, then a timer SHOULD be set for the remaining time."
                if let Some(t) = p.time_sent.checked_add(loss_delay) {
                    s.loss_time = Some(s.loss_time.map_or(t, |lt| lt.min(t)));
                }
            }
        }
        if persistent {
            // Established once; the packets after it start a new run.
            s.open_run = None;
        }
        let lost: Vec<(u64, SentPacket<T>)> = lost_pns
            .into_iter()
            .filter_map(|pn| s.remove(pn).map(|p| (pn, p)))
            .collect();
        // Remembered to notice a spurious loss. The packets lost are always the oldest tracked below the
        // largest acknowledged (by count and by time alike), so each pass's numbers are above those of
        // the passes before: the record stays sorted.
        for (pn, p) in &lost {
            if !p.mtu_probe && s.lost.back().map_or(true, |&(last, _)| last < *pn) {
                if s.lost.len() >= MAX_LOST_REMEMBERED {
                    s.lost.pop_front();
                }
                s.lost.push_back((*pn, p.time_sent));
            }
        }
        (lost, persistent)
    }

    /// The loss detection deadline (RFC 9002 Appendix A.8 SetLossDetectionTimer): the earliest
    /// time-threshold loss time, else the PTO deadline, else `None`.
    ///
    /// The PTO is `pto_base + max_ack_delay (Data only)`, doubled per `pto_count`, from the last
    /// ack-eliciting packet in the earliest space (RFC 9002 §6.2.1). No Data-space PTO before the handshake
    /// is confirmed; no PTO for a server at its anti-amplification limit; and a client whose address the
    /// server may not have validated arms a PTO even with nothing in flight (RFC 9002 §6.2.2.1). A
    /// deadline in the past means "now". Call it again after any input, since every input may move it.
    pub(crate) fn timeout(&self, ctx: &RecoveryContext) -> Option<Instant> {
        if let Some((t, _)) = self.earliest_loss_time() {
            return Some(t);
        }
        self.pto_time_and_space(ctx).map(|(t, _, _)| t)
    }

    /// Handles the loss detection timer at `now` (RFC 9002 Appendix A.9 OnLossDetectionTimeout). Returns
    /// [`TimeoutOutcome::Nothing`] when [`timeout`](Self::timeout) has not passed, so a spurious wake-up is
    /// harmless.
    pub(crate) fn on_timeout(&mut self, now: Instant, ctx: &RecoveryContext) -> TimeoutOutcome<T> {
        if let Some((t, space)) = self.earliest_loss_time() {
            if t > now {
                return TimeoutOutcome::Nothing;
            }
            // Time threshold loss detection (RFC 9002 §6.1.2).
            // RFC 9002 Appendix A.10: the timer's losses go through OnPacketsLost, which judges
            // persistent congestion (Appendix B.8) as for an ACK's.
            let (lost, persistent_congestion) = self.detect_lost_judged(space, now, ctx.max_ack_delay);
            self.armed_at = Some(now);
            return TimeoutOutcome::Lost {
                space,
                lost,
                persistent_congestion,
            };
        }
        let Some((t, space, anti_deadlock)) = self.pto_time_and_space(ctx) else {
            return TimeoutOutcome::Nothing;
        };
        if t > now {
            return TimeoutOutcome::Nothing;
        }
        // RFC 9002 §6.2.1: "When a PTO timer expires, the PTO backoff MUST be increased". A PTO MUST NOT
        // mark packets lost (§6.2), so none are.
        self.pto_count = self.pto_count.saturating_add(1);
        self.armed_at = Some(now);
        TimeoutOutcome::Probe { space, anti_deadlock }
    }

    /// Drops all state of `space` when its keys are discarded at `now` (RFC 9002 §6.4, Appendix A.11
    /// OnPacketNumberSpaceDiscarded): its packets leave bytes in flight, its loss time and PTO are cleared,
    /// `pto_count` is reset and the timer is armed again from `now`. Returns the dropped packets, so their
    /// records can be released; they are neither acknowledged nor lost, so the congestion controller must
    /// not see them as either.
    ///
    /// Once both the Initial and the Handshake space are discarded, their storage is released: they read
    /// as empty from then on, except for their next packet numbers, which ACK frames are checked against.
    pub(crate) fn discard_space(
        &mut self,
        space: SpaceId,
        now: Instant,
    ) -> impl Iterator<Item = (u64, SentPacket<T>)> {
        let sent = self.spaces.get_mut(space).map(|s| {
            s.unsent.clear();
            s.discarded = true;
            s.take_in_flight()
        });
        if let Some([initial, handshake]) = self.spaces.handshake.as_deref() {
            if initial.discarded && handshake.discarded {
                self.spaces.released_next_pn = [initial.next_pn, handshake.next_pn];
                self.spaces.handshake = None;
            }
        }
        // RFC 9002 §6.2.2: "When Initial or Handshake keys are discarded, the PTO and loss detection timers
        // MUST be reset".
        self.pto_count = 0;
        // RFC 9002 §6.2.1: the sender "SHOULD restart its PTO timer ... when Initial or Handshake keys are
        // discarded" (Appendix A.11 ends in SetLossDetectionTimer). Only the client's anti-deadlock PTO
        // counts from when the timer was armed; left at an earlier moment, with the backoff just reset,
        // it could already be due and send a probe at once.
        self.armed_at = Some(now);
        sent.into_iter().flatten()
    }

    /// A client got a Retry (RFC 9002 §6.3): the Initial packets sent so far are forgotten (not lost:
    /// the server answered them with the Retry), their bytes leave the flight, and the timers start
    /// again. Packet numbers continue (RFC 9000 §17.2.5.3).
    pub(crate) fn on_retry(&mut self) {
        if let Some(s) = self.spaces.get_mut(SpaceId::Initial) {
            drop(s.take_in_flight());
        }
        self.pto_count = 0;
        self.armed_at = None;
    }

    /// Frees the sent-packet storage of every space with nothing in flight. The storage outlives the
    /// flight it held (a busy sender fills it again at once); the connection calls this when it has
    /// nothing more to send, so that an idle connection holds none.
    pub(crate) fn release_idle_storage(&mut self) {
        self.spaces.iter_mut().for_each(|s| {
            s.sent.release();
            if s.sent.is_empty() {
                // Nothing in flight: a loss still unacknowledged is unlikely to prove spurious now.
                s.lost = VecDeque::new();
            }
        });
    }

    /// Whether any space holds sent-packet storage.
    #[cfg(test)]
    pub(crate) fn holds_sent_storage(&self) -> bool {
        self.spaces.iter().any(|s| s.sent.holds_storage())
    }

    /// Whether the Initial and Handshake spaces' storage was released (both discarded).
    #[cfg(test)]
    pub(crate) fn handshake_spaces_released(&self) -> bool {
        self.spaces.released()
    }

    /// Bytes in flight across all spaces (RFC 9002 Appendix B.2 bytes_in_flight).
    pub(crate) fn bytes_in_flight(&self) -> u64 {
        self.spaces.iter().map(|s| s.bytes_in_flight).sum()
    }

    /// Bytes in flight sent on the current path, across all spaces: what its congestion window holds
    /// (RFC 9000 §9.4: packets sent on the old path MUST NOT count against the new path's window).
    /// They are still tracked for loss and retransmission with the rest.
    pub(crate) fn path_bytes_in_flight(&self) -> u64 {
        self.spaces.iter().map(|s| s.path_bytes_in_flight).sum()
    }

    /// The number of PTOs since the backoff was last reset.
    pub(crate) fn pto_count(&self) -> u32 {
        self.pto_count
    }

    /// The RTT estimate.
    pub(crate) fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// When the latest ack-eliciting packet of `space` was sent, while one is in flight there.
    pub(crate) fn last_ack_eliciting_sent(&self, space: SpaceId) -> Option<Instant> {
        self.spaces
            .get(space)
            .filter(|s| s.ack_eliciting_in_flight > 0)
            .and_then(|s| s.time_of_last_ack_eliciting)
    }

    /// The packet reordering threshold in force (RFC 9002 §6.1.1).
    pub(crate) fn packet_threshold(&self) -> u64 {
        self.packet_threshold
    }

    /// The time threshold in force, in eighths of the RTT (RFC 9002 §6.1.2).
    pub(crate) fn time_threshold_eighths(&self) -> u32 {
        self.time_threshold_eighths
    }

    /// When the first RTT sample was taken.
    pub(crate) fn first_rtt_sample(&self) -> Option<Instant> {
        self.first_rtt_sample
    }

    /// Whether any ack-eliciting packet is in flight, in any space.
    pub(crate) fn has_ack_eliciting_in_flight(&self) -> bool {
        self.spaces.iter().any(|s| s.ack_eliciting_in_flight > 0)
    }

    /// Whether an ack-eliciting packet is in flight in `space` (RFC 9002 §6.2.4: probes SHOULD also go to
    /// other spaces with data in flight).
    pub(crate) fn has_ack_eliciting_in_flight_in(&self, space: SpaceId) -> bool {
        self.spaces
            .get(space)
            .is_some_and(|s| s.ack_eliciting_in_flight > 0)
    }

    /// The largest packet number acknowledged in `space`.
    pub(crate) fn largest_acked(&self, space: SpaceId) -> Option<u64> {
        self.spaces.get(space)?.largest_acked
    }

    /// The smallest packet number in `space` neither sent nor skipped.
    pub(crate) fn next_packet_number(&self, space: SpaceId) -> u64 {
        self.spaces.next_pn(space)
    }

    /// The unacknowledged ack-eliciting packets of `space`, oldest first: what a PTO probe can retransmit
    /// when there is no new data (RFC 9002 §6.2.4).
    pub(crate) fn oldest_unacked(&self, space: SpaceId) -> impl Iterator<Item = (u64, &SentPacket<T>)> + '_ {
        self.spaces
            .get(space)
            .into_iter()
            .flat_map(|s| s.sent.iter())
            .filter(|(_, p)| p.ack_eliciting)
    }

    /// Whether the peer has completed address validation (RFC 9002 Appendix A.8
    /// PeerCompletedAddressValidation): always at a server; at a client once a Handshake ACK arrived or
    /// the handshake is confirmed.
    pub(crate) fn peer_completed_address_validation(&self, ctx: &RecoveryContext) -> bool {
        self.side == Side::Server || self.handshake_acked || ctx.handshake_confirmed
    }

    /// The persistent congestion duration, `(smoothed_rtt + max(4*rttvar, kGranularity) + max_ack_delay)
    /// * kPersistentCongestionThreshold` (RFC 9002 §7.6.1), with max_ack_delay in every space.
    pub(crate) fn persistent_congestion_duration(&self, max_ack_delay: Duration) -> Duration {
        self.rtt
            .pto_base()
            .saturating_add(max_ack_delay)
            .saturating_mul(PERSISTENT_CONGESTION_THRESHOLD)
    }

    /// The earliest loss time and its space (Appendix A.8 GetLossTimeAndSpace).
    fn earliest_loss_time(&self) -> Option<(Instant, SpaceId)> {
        SpaceId::ALL
            .into_iter()
            .filter_map(|space| Some((self.spaces.get(space)?.loss_time?, space)))
            .min_by_key(|&(t, _)| t)
    }

    /// The PTO deadline, its space, and whether it is the anti-deadlock PTO (Appendix A.8
    /// GetPtoTimeAndSpace and the PTO half of SetLossDetectionTimer).
    fn pto_time_and_space(&self, ctx: &RecoveryContext) -> Option<(Instant, SpaceId, bool)> {
        // RFC 9002 §6.2.2.1: "the server's PTO timer MUST NOT be armed until datagrams have been received
        // from the client" when no more data can be sent.
        if self.side == Side::Server && ctx.at_anti_amplification_limit {
            return None;
        }
        // RFC 9002 §6.2.1: "the PTO period being set to twice its current value" per expiry.
        let backoff = 1u32.checked_shl(self.pto_count).unwrap_or(u32::MAX);
        let duration = self.rtt.pto_base().saturating_mul(backoff);

        let mut best: Option<(Instant, SpaceId)> = None;
        for space in SpaceId::ALL {
            let Some(s) = self.spaces.get(space) else {
                continue;
            };
            let Some(last) = s.time_of_last_ack_eliciting else {
                continue;
            };
            if s.ack_eliciting_in_flight == 0 {
                continue;
            }
            let period = if space == SpaceId::Data {
                // RFC 9002 §6.2.1: "An endpoint MUST NOT set its PTO timer for the Application Data packet
                // number space until the handshake is confirmed."
                if !ctx.handshake_confirmed {
                    break;
                }
                // max_ack_delay only counts in the Data space, backed off too (Appendix A.8).
                duration.saturating_add(ctx.max_ack_delay.saturating_mul(backoff))
            } else {
                duration
            };
            if let Some(t) = last.checked_add(period) {
                if best.map_or(true, |(b, _)| t < b) {
                    best = Some((t, space));
                }
            }
        }
        if let Some((t, space)) = best {
            return Some((t, space, false));
        }
        // Nothing that may arm a PTO is in flight. RFC 9002 §6.2.2.1: "the client MUST set the PTO timer if
        // the client has not received an acknowledgment for any of its Handshake packets and the handshake
        // is not confirmed ..., even if there are no packets in flight." It counts from when the timer was
        // last armed (Appendix A.8: "Anti-deadlock PTO starts from the current time").
        if self.peer_completed_address_validation(ctx) {
            return None;
        }
        let space = if ctx.has_handshake_keys {
            SpaceId::Handshake
        } else {
            SpaceId::Initial
        };
        Some((self.armed_at?.checked_add(duration)?, space, true))
    }
}
