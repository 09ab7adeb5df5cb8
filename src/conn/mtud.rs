//! Path MTU discovery (RFC 9000 §14.3, DPLPMTUD of RFC 8899): once the handshake is confirmed, probe
//! packets of a candidate size (PING and PADDING only, so that nothing needs retransmitting) find the
//! largest datagram the path carries, above the 1200 bytes every QUIC path must carry (§14).
//!
//! The search first tries the upper bound (the configured ceiling, or less if the peer's
//! max_udp_payload_size says so): most paths carry it, and then one probe settles the search. A size
//! lost `max_probes` times in a row is taken as too large, and the search goes on by bisection between
//! the largest size that passed and the smallest that did not, until the two are closer than
//! `min_change`. The search runs again after `interval`, from the current size up, in case the path got
//! better (RFC 8899 §5.3.1: PROBE_TIMER and the SEARCH_COMPLETE state).
//!
//! That search waits until the connection is in use: once the interval is over, it starts with the
//! first ack-eliciting packet the connection sends other than a probe (application data, a control
//! frame, a keep-alive PING). Probes are ack-eliciting, and their sending and acknowledgement restart
//! the idle timers of both sides (RFC 9000 §10.1); a search on a connection neither side uses would keep
//! it open for as long as searches follow one another, where deferring the idle timeout is the
//! application's choice (§10.1.2, keep-alives). RFC 8899 §5.1.1 allows it, for the raise timer: "DPLPMTUD
//! MAY inhibit sending probe packets when no application data has been sent since the previous probe
//! packet". A packet the connection sends anyway restarts the idle timers itself, so the probes after
//! it defer nothing beyond what the search takes. The raise timer needs no deadline of its own either:
//! the search starts from `poll_transmit`, which that packet goes through.
//!
//! Probe losses are not congestion (RFC 9000 §14.4): the connection leaves them out of its congestion
//! response. When the path stops carrying the current size (RFC 8899 §4.3, a black hole), the
//! congestion controller sees persistent congestion, or PTOs follow one another; the size then drops
//! back to the base and the search starts again from the top. While smaller packets still get through
//! and keep both from happening, loss events of only larger packets following one another, with none of
//! that size acknowledged in between, make the search send a probe of the current size (RFC 8899 §4.3:
//! confirm the size still passes); if that is lost too, the size drops back to the base.

use std::time::{Duration, Instant};

use tinyvec::ArrayVec;

use super::connection::MAX_UDP_PAYLOAD;

/// Settings of path MTU discovery ([`TransportConfig::mtu_discovery`](crate::TransportConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuDiscoveryConfig {
    /// The largest UDP payload probed for. 1452 fits an IPv6 packet in a 1500-byte Ethernet frame
    /// (and IPv4 with room to spare). Taken as at most 65,527, the largest UDP payload there is.
    pub upper_bound: u16,
    /// Probes of one size lost in a row before that size is taken as too large (RFC 8899
    /// MAX_PROBES, 3). Taken as at least 1.
    pub max_probes: u8,
    /// The search stops when the largest size that passed and the smallest that did not are closer
    /// than this. Taken as at least 1.
    pub min_change: u16,
    /// Time from the end of a search to the next one (RFC 8899 §5.1.1 PMTU_RAISE_TIMER: 600 s). Taken
    /// as at least 60 s: a search starting again as soon as the last one ends would probe on every
    /// round trip for ever on a path narrower than `upper_bound`. The next search also waits for the
    /// connection to send something of its own after the interval (an ack-eliciting packet other than
    /// a probe), so that probes never keep an idle connection open (RFC 9000 §10.1).
    pub interval: Duration,
}

impl Default for MtuDiscoveryConfig {
    fn default() -> Self {
        Self {
            upper_bound: 1452,
            max_probes: 3,
            min_change: 20,
            interval: Duration::from_secs(600),
        }
    }
}

/// The datagram size every QUIC path carries (RFC 9000 §14).
const BASE: u16 = 1200;

/// Loss events in a row, each of packets larger than the base only, with no packet as large
/// acknowledged in between, after which the current size is confirmed by a probe (RFC 8899 §4.3 leaves
/// the number open; this is its MAX_PROBES).
const BLACK_HOLE_LOSSES: usize = 3;

/// The shortest time from the end of a search to the next one, whatever the configuration says.
const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// A probe in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    pn: u64,
    size: u16,
}

/// Where the search stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started (handshake not confirmed) or turned off.
    Off,
    /// Probing; `tried_top`: the upper bound was tried first.
    Searching { tried_top: bool },
    /// Done until the given time (`None`: an interval too long to count, never again).
    Done { until: Option<Instant> },
}

/// The path MTU search of one connection's path.
#[derive(Debug, Clone)]
pub(crate) struct MtuDiscovery {
    config: Option<MtuDiscoveryConfig>,
    /// The size every path carries (1200 bytes, RFC 9000 §14): where a black hole sends the search.
    base: u16,
    /// The size a path starts with (`TransportConfig::mtu`, within what the peer accepts).
    start: u16,
    /// The largest datagram size known to pass: what the connection sends.
    current: u16,
    /// The largest size still worth trying: above it, a size failed or is not allowed.
    high: u16,
    /// The upper bound of this path (configuration and peer).
    upper: u16,
    /// The size being tried, until it passes or fails `max_probes` times.
    trying: Option<u16>,
    /// Losses in a row of probes of the size being tried.
    failures: u8,
    /// The probe in flight for this search. One sent before the search was reset (new path, black hole)
    /// is forgotten: its loss or acknowledgement says nothing about the new search.
    probe: Option<Probe>,
    phase: Phase,
    /// The smallest packet of each recent loss event whose packets were all larger than the base and
    /// sent after `large_acked`, until a packet at least that large is acknowledged: fewer than
    /// [`BLACK_HOLE_LOSSES`].
    suspect_losses: ArrayVec<[u16; BLACK_HOLE_LOSSES]>,
    /// The largest number of a packet of the current size or more acknowledged: a packet lost before it
    /// was not lost to a black hole, since a large packet sent later got through (reordering, or
    /// congestion).
    large_acked: u64,
    /// Losses point to a black hole: a probe of the current size is due or in flight to confirm that
    /// the path still carries it. Its loss is the black hole; its acknowledgement clears the suspicion.
    confirming: bool,
    /// When the connection last sent an ack-eliciting packet other than a probe: the search after the
    /// interval waits for one sent once the interval is over (see the module documentation).
    last_use: Option<Instant>,
}

impl MtuDiscovery {
    /// A search from `start` bytes (at least [`BASE`]), if `config` enables one.
    pub(crate) fn new(start: u16, config: Option<MtuDiscoveryConfig>) -> Self {
        let base = BASE.min(start);
        Self {
            config,
            base,
            start,
            current: start,
            high: start,
            upper: start,
            trying: None,
            failures: 0,
            probe: None,
            phase: Phase::Off,
            suspect_losses: ArrayVec::new(),
            large_acked: 0,
            confirming: false,
            last_use: None,
        }
    }

    /// The datagram size the path is known to carry.
    pub(crate) fn current(&self) -> u16 {
        self.current
    }

    /// Starts the search once the handshake is confirmed; `peer_max` is the peer's
    /// max_udp_payload_size (RFC 9000 §18.2), which bounds what it accepts.
    pub(crate) fn start(&mut self, peer_max: u64) {
        let Some(config) = self.config else {
            return;
        };
        let peer_max = u16::try_from(peer_max).unwrap_or(u16::MAX);
        self.upper = config
            .upper_bound
            .min(peer_max)
            .min(MAX_UDP_PAYLOAD)
            .max(self.base);
        self.high = self.upper;
        self.phase = Phase::Searching { tried_top: false };
    }

    /// Cuts the starting size down to `size` (at least the base), the largest datagram the peer accepts
    /// (RFC 9000 §18.2). Called when the peer's parameters arrive, before [`start`](Self::start), which
    /// bounds the search by them too.
    pub(crate) fn cap(&mut self, size: u16) {
        self.start = self.start.min(size);
        self.current = self.current.min(size);
    }

    /// Goes back to the starting size on a new path (RFC 9000 §14.2.1: a new path's MTU is unknown) and
    /// searches it again; a starting size the new path does not carry is found out as a black hole.
    pub(crate) fn restart(&mut self) {
        self.current = self.start;
        self.high = self.upper;
        self.trying = None;
        self.failures = 0;
        self.probe = None;
        self.suspect_losses.clear();
        self.confirming = false;
        if self.phase != Phase::Off {
            self.phase = Phase::Searching { tried_top: false };
        }
    }

    /// Stops waiting for the probe in flight, whose fate this search will not learn: a search saved when
    /// the peer moved and restored when it came back may have had its probe acknowledged or declared
    /// lost in between, seen by the other path's search. The size is tried again.
    pub(crate) fn forget_probe(&mut self) {
        self.probe = None;
        // What the losses on this path said before the connection left it is stale now.
        self.suspect_losses.clear();
        self.confirming = false;
    }

    /// The size of the probe to send now, if one is due; `None` while one is in flight.
    pub(crate) fn probe_size(&mut self, now: Instant) -> Option<u16> {
        let config = self.config?;
        if self.probe.is_some() {
            return None;
        }
        if self.confirming {
            return (self.phase != Phase::Off).then_some(self.current);
        }
        let tried_top = match self.phase {
            Phase::Off => return None,
            Phase::Done { until: None } => return None,
            Phase::Done { until: Some(until) } if now < until => return None,
            // RFC 9000 §10.1: not on a connection left idle since the interval ended.
            Phase::Done { until: Some(until) } if !self.last_use.is_some_and(|t| t >= until) => return None,
            Phase::Done { .. } => {
                // Search again, from the current size up (RFC 8899 §5.2: the raise timer), now that
                // the connection is in use.
                self.high = self.upper;
                self.phase = Phase::Searching { tried_top: false };
                false
            }
            Phase::Searching { tried_top } => tried_top,
        };
        if let Some(size) = self.trying {
            return Some(size);
        }
        // In u32: at the top of the u16 range the sum must not saturate, or the search never ends.
        if u32::from(self.high) < u32::from(self.current) + u32::from(config.min_change.max(1)) {
            self.phase = Phase::Done {
                until: now.checked_add(config.interval.max(MIN_INTERVAL)),
            };
            return None;
        }
        let size = if tried_top {
            // Bisection, rounded up so that it always moves.
            self.current + (self.high - self.current).div_ceil(2)
        } else {
            self.high
        };
        self.trying = Some(size);
        Some(size)
    }

    /// An ack-eliciting packet other than a probe went out at `now`: the connection is in use.
    #[inline]
    pub(crate) fn on_ack_eliciting_sent(&mut self, now: Instant) {
        self.last_use = Some(now);
    }

    /// A probe of `size` bytes went out as packet `pn`.
    pub(crate) fn on_probe_sent(&mut self, pn: u64, size: u16) {
        self.probe = Some(Probe { pn, size });
        if self.confirming {
            return;
        }
        if let Phase::Searching { tried_top } = &mut self.phase {
            *tried_top = true;
        }
    }

    /// Packet `pn` was acknowledged: returns the new size if it was the probe.
    pub(crate) fn on_acked(&mut self, pn: u64) -> Option<u16> {
        let probe = self.probe.filter(|p| p.pn == pn)?;
        self.probe = None;
        // As large as anything sent since the search began: no loss before it points to a black hole.
        self.suspect_losses.clear();
        self.large_acked = self.large_acked.max(pn);
        if self.confirming {
            // The current size still passes.
            self.confirming = false;
            return None;
        }
        self.trying = None;
        self.failures = 0;
        self.current = self.current.max(probe.size);
        Some(self.current)
    }

    /// Packet `pn` of `size` bytes, other than the probe, was acknowledged: the path carries that size,
    /// so earlier losses of packets no larger are not a black hole's doing.
    #[inline]
    pub(crate) fn on_packet_acked(&mut self, pn: u64, size: u16) {
        if size > self.base {
            if size >= self.current {
                self.large_acked = self.large_acked.max(pn);
            }
            if !self.suspect_losses.is_empty() {
                self.suspect_losses.retain(|&s| s > size);
            }
        }
    }

    /// A loss event whose lost packets (probes aside) were `smallest` bytes or more, the first of them
    /// packet `first_pn`. Packets larger than the base lost [`BLACK_HOLE_LOSSES`] times in a row, all
    /// sent after the last packet of the current size that got through and with none as large
    /// acknowledged in between, may be a black hole (RFC 8899 §4.3): smaller packets still passing
    /// (acknowledgements, PINGs, flow-control updates) keep PTOs and persistent congestion from ever
    /// coming, and the larger ones would be sent again at the same size for ever. A probe of the current
    /// size then tells a black hole (it is lost too) from bad luck.
    pub(crate) fn on_loss_event(&mut self, first_pn: u64, smallest: u16) {
        if smallest <= self.base
            || first_pn <= self.large_acked
            || self.current <= self.base
            || self.phase == Phase::Off
        {
            return;
        }
        if self.suspect_losses.len() + 1 < BLACK_HOLE_LOSSES {
            self.suspect_losses.push(smallest);
            return;
        }
        self.suspect_losses.clear();
        if !self.confirming {
            self.confirming = true;
            // A search probe in flight is forgotten; its size is tried again afterwards.
            self.probe = None;
        }
    }

    /// Packet `pn` was declared lost: returns whether it was the probe of this search.
    pub(crate) fn on_lost(&mut self, pn: u64) -> bool {
        let Some(probe) = self.probe.filter(|p| p.pn == pn) else {
            return false;
        };
        self.probe = None;
        if self.confirming {
            // RFC 8899 §4.3: the current size no longer gets through either: a black hole. The caller
            // sees the size drop.
            self.confirming = false;
            self.on_black_hole();
            return true;
        }
        self.failures += 1;
        let max_probes = self.config.map_or(1, |c| c.max_probes.max(1));
        if self.failures >= max_probes {
            // Too large: the search goes on below it.
            self.failures = 0;
            self.trying = None;
            self.high = probe.size.saturating_sub(1).max(self.current);
        }
        true
    }

    /// The path may have stopped carrying the current size (persistent congestion, or PTOs in a row,
    /// while above the base): back to the base, and search again from the top. An outage looks the
    /// same, and then the first probe restores the size; a real black hole costs `max_probes` lost
    /// probes before the bisection goes below it. Returns the new size if it changed.
    pub(crate) fn on_black_hole(&mut self) -> Option<u16> {
        if self.current <= self.base || self.phase == Phase::Off {
            return None;
        }
        self.restart();
        self.current = self.base;
        Some(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search on a path that carries datagrams up to `path_mtu` bytes, acknowledging or losing
    /// each probe; returns the sizes probed and the size found.
    fn search(path_mtu: u16, peer_max: u64, config: MtuDiscoveryConfig) -> (Vec<u16>, u16) {
        let now = crate::test_util::epoch();
        let mut d = MtuDiscovery::new(1200, Some(config));
        assert_eq!(
            d.probe_size(now),
            None,
            "no probing before the handshake is confirmed"
        );
        d.start(peer_max);
        let mut probes = Vec::new();
        let mut pn = 0;
        while let Some(size) = d.probe_size(now) {
            assert!(size > d.current() && size <= config.upper_bound, "{size}");
            assert!(probes.len() < 100, "the search ends: {probes:?}");
            d.on_probe_sent(pn, size);
            assert_eq!(d.probe_size(now), None, "one probe at a time");
            if size <= path_mtu {
                assert_eq!(d.on_acked(pn), Some(size));
            } else {
                assert!(d.on_lost(pn));
            }
            probes.push(size);
            pn += 1;
        }
        (probes, d.current())
    }

    #[test]
    fn a_path_that_carries_the_upper_bound_takes_one_probe() {
        let (probes, found) = search(1500, 65527, MtuDiscoveryConfig::default());
        assert_eq!(probes, [1452]);
        assert_eq!(found, 1452);
    }

    #[test]
    fn the_peer_limit_caps_the_search() {
        let (probes, found) = search(1500, 1350, MtuDiscoveryConfig::default());
        assert_eq!(probes, [1350]);
        assert_eq!(found, 1350);
        // A peer limit below the base leaves the base.
        let (probes, found) = search(1500, 1000, MtuDiscoveryConfig::default());
        assert!(probes.is_empty());
        assert_eq!(found, 1200);
    }

    #[test]
    fn bisection_finds_the_path_mtu_within_min_change() {
        let config = MtuDiscoveryConfig::default();
        for path_mtu in [1200, 1201, 1280, 1350, 1400, 1432, 1451] {
            let (probes, found) = search(path_mtu, 65527, config);
            assert!(found <= path_mtu, "{path_mtu}: {found} {probes:?}");
            assert!(
                found + config.min_change > path_mtu,
                "{path_mtu}: {found} {probes:?}"
            );
            // Each failing size is tried max_probes times; the first probe is the upper bound.
            assert_eq!(probes[0], 1452);
            assert!(probes.len() <= 3 * 8, "{path_mtu}: {probes:?}");
        }
    }

    #[test]
    fn a_size_fails_only_after_max_probes_losses() {
        let now = crate::test_util::epoch();
        let mut d = MtuDiscovery::new(1200, Some(MtuDiscoveryConfig::default()));
        d.start(65527);
        for pn in 0..2 {
            assert_eq!(d.probe_size(now), Some(1452));
            d.on_probe_sent(pn, 1452);
            assert!(d.on_lost(pn));
        }
        // An unrelated packet is not the probe.
        assert_eq!(d.probe_size(now), Some(1452));
        d.on_probe_sent(7, 1452);
        assert!(!d.on_lost(6));
        assert_eq!(d.on_acked(6), None);
        assert!(d.on_lost(7));
        // Third loss: bisection below 1452.
        assert_eq!(d.probe_size(now), Some(1326));
    }

    /// A search that found 1452 bytes and is done until its interval is over.
    fn found_1452() -> MtuDiscovery {
        let now = crate::test_util::epoch();
        let mut d = MtuDiscovery::new(1200, Some(MtuDiscoveryConfig::default()));
        d.start(65_527);
        let size = d.probe_size(now).unwrap();
        d.on_probe_sent(10, size);
        assert_eq!(d.on_acked(10), Some(1452));
        assert_eq!(d.probe_size(now), None, "search done");
        d
    }

    /// RFC 8899 §4.3, while smaller packets still pass: three loss events in a row of only packets
    /// larger than the base, sent after the last packet of the current size that got through, with
    /// none as large acknowledged in between, call for a probe of the current size.
    #[test]
    fn losses_of_only_large_packets_in_a_row_call_for_a_probe_of_the_current_size() {
        let now = crate::test_util::epoch();
        let mut off = MtuDiscovery::new(1200, Some(MtuDiscoveryConfig::default()));
        for pn in 0..5 {
            off.on_loss_event(pn, 1452);
        }
        assert_eq!(off.probe_size(now), None, "no search, no confirmation");
        let mut d = found_1452();
        // Events with a packet of the base size among the losses are congestion, however many.
        for pn in 11..16 {
            d.on_loss_event(pn, 1200);
        }
        assert_eq!(d.probe_size(now), None);
        // A packet as large as the smallest lost one acknowledged explains those losses away; a
        // smaller one does not.
        d.on_loss_event(20, 1452);
        d.on_loss_event(21, 1300);
        d.on_packet_acked(22, 1300);
        d.on_packet_acked(23, 1452);
        d.on_loss_event(25, 1452);
        d.on_loss_event(26, 1452);
        d.on_packet_acked(27, 1000);
        assert_eq!(d.probe_size(now), None);
        // Packets sent before one of the current size that got through were not lost to a black hole
        // (reordering, congestion), however many such events come; one of 1300 bytes getting through
        // does not show that 1452 still does.
        d.on_packet_acked(40, 1300);
        d.on_packet_acked(41, 1452);
        for pn in 28..39 {
            d.on_loss_event(pn, 1452);
        }
        assert_eq!(d.probe_size(now), None);
        d.on_loss_event(42, 1452);
        d.on_packet_acked(43, 1300);
        d.on_loss_event(44, 1452);
        assert_eq!(d.probe_size(now), None);
        d.on_loss_event(45, 1452);
        assert_eq!(
            d.probe_size(now),
            Some(1452),
            "the third in a row: confirm the size"
        );
        d.on_probe_sent(46, 1452);
        assert_eq!(d.probe_size(now), None, "one probe at a time");
        assert_eq!(d.current(), 1452, "not yet a black hole");
        // It gets through: bad luck, not a black hole; the count starts again.
        assert_eq!(d.on_acked(46), None);
        assert_eq!(d.current(), 1452);
        d.on_loss_event(47, 1452);
        d.on_loss_event(48, 1452);
        assert_eq!(d.probe_size(now), None);
    }

    /// The probe of the current size lost as well: a black hole, back to the base, and the search
    /// starts again from the top.
    #[test]
    fn a_lost_probe_of_the_current_size_is_a_black_hole() {
        let now = crate::test_util::epoch();
        let mut d = found_1452();
        for pn in 20..23 {
            d.on_loss_event(pn, 1452);
        }
        assert_eq!(d.probe_size(now), Some(1452));
        d.on_probe_sent(23, 1452);
        assert!(d.on_lost(23));
        assert_eq!(d.current(), 1200);
        d.on_loss_event(24, 1452);
        assert_eq!(d.probe_size(now), Some(1452), "the search again, from the top");
        d.on_probe_sent(25, 1452);
        assert_eq!(d.on_acked(25), Some(1452), "a search probe, not a confirmation");
    }

    /// Back on a path the connection left, what its losses said before is stale: the count starts
    /// again, and a confirmation wanted then is not sent.
    #[test]
    fn suspicions_are_forgotten_on_a_path_returned_to() {
        let now = crate::test_util::epoch();
        let mut d = found_1452();
        d.on_loss_event(20, 1452);
        d.on_loss_event(21, 1452);
        d.forget_probe();
        d.on_loss_event(22, 1452);
        assert_eq!(d.probe_size(now), None, "one suspicion, not three");
        d.on_loss_event(23, 1452);
        d.on_loss_event(24, 1452);
        assert_eq!(d.probe_size(now), Some(1452));
        d.forget_probe();
        assert_eq!(d.probe_size(now), None, "the confirmation is dropped too");
    }

    /// A search probe in flight when the losses call for a confirmation is forgotten, and its size
    /// tried again once the current size is confirmed.
    #[test]
    fn a_confirmation_goes_before_a_search_probe_in_flight() {
        let now = crate::test_util::epoch();
        let mut d = MtuDiscovery::new(1300, Some(MtuDiscoveryConfig::default()));
        d.start(65_527);
        let mut d2 = d.clone();
        assert_eq!(d.probe_size(now), Some(1452));
        d.on_probe_sent(1, 1452);
        for pn in 2..5 {
            d.on_loss_event(pn, 1300);
        }
        assert_eq!(d.probe_size(now), Some(1300), "the current size, confirmed first");
        d.on_probe_sent(5, 1300);
        assert!(!d.on_lost(1), "the search probe was forgotten");
        assert_eq!(d.on_acked(5), None);
        assert_eq!(d.probe_size(now), Some(1452), "the search goes on");
        // Without the losses, the same search has its probe in flight and nothing else to send.
        assert_eq!(d2.probe_size(now), Some(1452));
        d2.on_probe_sent(1, 1452);
        assert_eq!(d2.probe_size(now), None);
    }

    #[test]
    fn the_search_runs_again_after_the_interval_and_black_holes_reset() {
        let now = crate::test_util::epoch();
        let config = MtuDiscoveryConfig::default();
        let mut d = MtuDiscovery::new(1200, Some(config));
        d.start(65527);
        assert_eq!(d.probe_size(now), Some(1452));
        d.on_probe_sent(1, 1452);
        assert_eq!(d.on_acked(1), Some(1452));
        assert_eq!(d.probe_size(now), None);
        assert_eq!(d.probe_size(now + config.interval / 2), None);
        // At the upper bound already: the next search ends at once, and waits another interval.
        d.on_ack_eliciting_sent(now + config.interval);
        assert_eq!(d.probe_size(now + config.interval), None);
        // The path shrinks: back to the base, and a new search from the top.
        assert_eq!(d.on_black_hole(), Some(1200));
        assert_eq!(d.current(), 1200);
        assert_eq!(d.on_black_hole(), None);
        assert_eq!(d.probe_size(now), Some(1452));
        // A new path starts over; the probe still in flight is no failure of the new search.
        d.on_probe_sent(2, 1452);
        d.restart();
        assert!(!d.on_lost(2));
        assert_eq!(d.probe_size(now), Some(1452));
        d.on_probe_sent(3, 1452);
        assert_eq!(d.on_acked(3), Some(1452));
    }

    /// RFC 9000 §10.1, RFC 8899 §5.1.1: the search after the interval waits for the connection to send
    /// something of its own once the interval is over; probes alone would keep an idle connection open.
    /// A search under way goes on without it, and so does a confirmation of the current size.
    #[test]
    fn the_search_after_the_interval_waits_for_the_connection_to_be_in_use() {
        let now = crate::test_util::epoch();
        let config = MtuDiscoveryConfig::default();
        let mut d = MtuDiscovery::new(1200, Some(config));
        d.start(65_527);
        // The first search needs no use: it starts with the handshake confirmed.
        assert_eq!(d.probe_size(now), Some(1452));
        d.on_probe_sent(1, 1452);
        assert!(d.on_lost(1));
        assert_eq!(d.probe_size(now), Some(1452), "nor do the probes that follow");
        d.on_probe_sent(2, 1452);
        assert!(d.on_lost(2));
        d.on_probe_sent(3, 1452);
        assert!(d.on_lost(3));
        assert_eq!(d.probe_size(now), Some(1326));
        d.on_probe_sent(4, 1326);
        assert_eq!(d.on_acked(4), Some(1326));
        // The bisection between 1326 and 1452 goes on to its end, every probe lost.
        let mut pn = 5;
        while let Some(size) = d.probe_size(now) {
            d.on_probe_sent(pn, size);
            assert!(d.on_lost(pn));
            pn += 1;
        }
        let found = d.current();
        let later = now + config.interval;
        // Packets sent before the interval was over do not count.
        d.on_ack_eliciting_sent(later - Duration::from_millis(1));
        assert_eq!(d.probe_size(later), None);
        assert_eq!(d.probe_size(later + config.interval * 10), None, "idle: never");
        // Losses calling for a confirmation get their probe, use or not.
        for pn in 100..103 {
            d.on_loss_event(pn, found);
        }
        assert_eq!(d.probe_size(later), Some(found));
        d.on_probe_sent(103, found);
        assert_eq!(d.on_acked(103), None);
        assert_eq!(d.probe_size(later), None);
        // In use again: the search runs, from the top, and goes on to its end.
        d.on_ack_eliciting_sent(later + config.interval * 10);
        assert_eq!(d.probe_size(later + config.interval * 10), Some(1452));
        d.on_probe_sent(104, 1452);
        assert!(d.on_lost(104));
        assert_eq!(d.probe_size(later + config.interval * 10), Some(1452));
    }

    #[test]
    fn an_interval_too_long_to_count_means_never_again() {
        let now = crate::test_util::epoch();
        let config = MtuDiscoveryConfig {
            interval: Duration::MAX,
            ..MtuDiscoveryConfig::default()
        };
        let (probes, found) = search(1300, 65527, config);
        assert!(found <= 1300 && probes.len() > 3);
        let mut d = MtuDiscovery::new(1200, Some(config));
        d.start(1300);
        assert_eq!(d.probe_size(now), Some(1300));
        d.on_probe_sent(0, 1300);
        d.on_acked(0);
        assert_eq!(d.probe_size(now), None);
        assert_eq!(d.probe_size(now + Duration::from_secs(1 << 40)), None);
    }

    #[test]
    fn off_without_a_configuration() {
        let now = crate::test_util::epoch();
        let mut d = MtuDiscovery::new(1200, None);
        d.start(65527);
        assert_eq!(d.probe_size(now), None);
        assert_eq!(d.on_black_hole(), None);
        assert_eq!(d.current(), 1200);
    }
}
