//! One directed link: impairments, a drop-tail bottleneck queue, scheduled outages.

use std::fmt;
use std::time::{Duration, Instant};

use crate::conn::later;
use crate::rng::Rng;

/// The impairments of one directed link. [`Default`] is an ideal link: no delay, no loss, infinite
/// bandwidth, no size limit.
///
/// Each datagram meets the impairments in this order: link down, maximum size, loss (random, then
/// Gilbert-Elliott), the bottleneck queue, corruption, then the delay (fixed, jitter, reordering), and
/// finally duplication (the copy gets its own jitter draw).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for each datagram; can reorder datagrams.
    pub jitter: Duration,
    /// Probability that a datagram is lost, independently of the others.
    pub loss: f64,
    /// Bursty loss on a two-state Gilbert-Elliott chain; `None` disables it.
    pub gilbert_elliott: Option<GilbertElliott>,
    /// Probability that a datagram is held back by [`reorder_delay`](Self::reorder_delay), so later ones
    /// overtake it.
    pub reorder: f64,
    /// The extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that one random bit of a datagram is flipped.
    pub corrupt: f64,
    /// Bottleneck bandwidth in bits per second; `None` means infinite (no serialisation delay, no queue),
    /// `Some(0)` a link that carries nothing (every datagram is dropped at the queue).
    pub bandwidth_bps: Option<u64>,
    /// Capacity of the drop-tail queue in front of the bottleneck, in bytes (including the datagram being
    /// serialised). A datagram that does not fit is dropped. Only used with a bandwidth.
    pub queue_bytes: usize,
    /// Datagrams larger than this are dropped.
    pub max_datagram_size: usize,
    /// What the link does to the ECN field of the IP header (RFC 3168; RFC 9000 §13.4).
    pub ecn: LinkEcn,
}

/// What a link does to the ECN codepoint of the datagrams it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LinkEcn {
    /// Carries it unchanged.
    #[default]
    Carry,
    /// Clears it (a path that bleaches the field): every datagram arrives Not-ECT.
    Clear,
    /// Carries it, and marks ECN-CE a datagram sent ECT(0) or ECT(1) that finds more than `above` bytes
    /// already in the bottleneck queue (a step-marking AQM, as DCTCP-style switches do; RFC 3168 §5:
    /// marked instead of dropped when the queue is not full). Needs a bandwidth.
    MarkAbove {
        /// Queue occupancy in bytes beyond which datagrams are marked.
        above: usize,
    },
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            gilbert_elliott: None,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
            corrupt: 0.0,
            bandwidth_bps: None,
            queue_bytes: 64 * 1024,
            max_datagram_size: 65_527,
            ecn: LinkEcn::Carry,
        }
    }
}

impl LinkConfig {
    /// An otherwise ideal link with one-way `delay`.
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Checks that every probability, those of [`gilbert_elliott`](Self::gilbert_elliott) included, is
    /// in `0..=1` (not NaN). [`Simulation::add_link`](super::Simulation::add_link) panics on a
    /// configuration that fails, and a link changed through
    /// [`Simulation::link_config_mut`](super::Simulation::link_config_mut) panics at its next datagram.
    pub fn validate(&self) -> Result<(), InvalidLinkConfig> {
        let ge = self.gilbert_elliott.as_ref();
        let fields = [
            ("loss", Some(self.loss)),
            ("reorder", Some(self.reorder)),
            ("duplicate", Some(self.duplicate)),
            ("corrupt", Some(self.corrupt)),
            ("gilbert_elliott.p_good_to_bad", ge.map(|g| g.p_good_to_bad)),
            ("gilbert_elliott.p_bad_to_good", ge.map(|g| g.p_bad_to_good)),
            ("gilbert_elliott.loss_bad", ge.map(|g| g.loss_bad)),
            ("gilbert_elliott.loss_good", ge.map(|g| g.loss_good)),
        ];
        match fields
            .into_iter()
            .find_map(|(field, p)| p.filter(|p| !(0.0..=1.0).contains(p)).map(|value| (field, value)))
        {
            Some((field, value)) => Err(InvalidLinkConfig { field, value }),
            None => Ok(()),
        }
    }
}

/// A probability of a [`LinkConfig`] out of `0..=1`, or NaN (see [`LinkConfig::validate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidLinkConfig {
    /// The field, as named in [`LinkConfig`] (`gilbert_elliott.loss_bad` for one of [`GilbertElliott`]).
    pub field: &'static str,
    /// Its value.
    pub value: f64,
}

impl fmt::Display for InvalidLinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {} is not a probability in 0..=1", self.field, self.value)
    }
}

impl std::error::Error for InvalidLinkConfig {}

/// Parameters of Gilbert-Elliott bursty loss. The chain moves once per datagram, before the loss draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state.
    pub p_bad_to_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
}

/// What a link did with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Delivered after this long since it was sent.
    Delivered {
        /// Time from sending to arrival.
        after: Duration,
        /// One bit was flipped on the way.
        corrupted: bool,
        /// This is the second copy of a duplicated datagram.
        duplicate: bool,
    },
    /// Lost to random or bursty loss.
    DroppedLoss,
    /// Dropped at the tail of a full bottleneck queue.
    DroppedQueue,
    /// Larger than the link's maximum datagram size.
    DroppedTooBig,
    /// Sent while the link was down.
    DroppedLinkDown,
    /// No node has the destination address, or no link joins the two nodes.
    DroppedNoRoute,
    /// The simulator's bound on datagrams in flight was reached.
    DroppedOverflow,
}

impl Fate {
    /// Whether the datagram (or this copy of it) arrives.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Fate::Delivered { .. })
    }

    /// A small stable code for hashing.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Fate::Delivered {
                corrupted, duplicate, ..
            } => u8::from(*corrupted) | (u8::from(*duplicate) << 1),
            Fate::DroppedLoss => 4,
            Fate::DroppedQueue => 5,
            Fate::DroppedTooBig => 6,
            Fate::DroppedLinkDown => 7,
            Fate::DroppedNoRoute => 8,
            Fate::DroppedOverflow => 9,
        }
    }
}

/// True with probability `p`.
pub(crate) fn chance(rng: &mut Rng, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
}

/// A duration drawn uniformly from `0..=max`.
fn uniform(rng: &mut Rng, max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.below(nanos.saturating_add(1)))
}

/// The state of one directed link.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    config: LinkConfig,
    /// `config` was validated since it was last handed out for changes (`config_mut`).
    config_checked: bool,
    rng: Rng,
    /// Gilbert-Elliott: in the bad state.
    bad: bool,
    /// When the bottleneck finishes serialising everything queued so far.
    busy_until: Option<Instant>,
    pub(crate) up: bool,
}

/// The outcome of offering one datagram to a link: the fate of the original and, when duplicated, of the
/// copy; whether the original was corrupted at `flip` (bit index); and the ECN codepoint (its two bits)
/// both arrive with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) fate: Fate,
    pub(crate) copy: Option<Duration>,
    pub(crate) flip: Option<usize>,
    pub(crate) ecn: u8,
}

impl Link {
    pub(crate) fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            // `Simulation::add_link` validated it.
            config_checked: true,
            rng: Rng::from_seed(seed),
            bad: false,
            busy_until: None,
            up: true,
        }
    }

    /// The configuration, to change between steps: validated again at the next datagram.
    pub(crate) fn config_mut(&mut self) -> &mut LinkConfig {
        self.config_checked = false;
        &mut self.config
    }

    /// Bytes waiting in the bottleneck queue at `now` (including the one being serialised).
    fn backlog(&self, now: Instant, bps: u64) -> u64 {
        let Some(busy) = self.busy_until else {
            return 0;
        };
        let left = busy.saturating_duration_since(now);
        u64::try_from(left.as_nanos() * u128::from(bps) / 8_000_000_000).unwrap_or(u64::MAX)
    }

    /// Decides what happens to a datagram of `size` bytes sent at `now` with the ECN bits `ecn`.
    pub(crate) fn offer(&mut self, now: Instant, size: usize, ecn: u8) -> Offer {
        let dropped = |fate| Offer {
            fate,
            copy: None,
            flip: None,
            ecn: 0,
        };
        let mut ecn = match self.config.ecn {
            LinkEcn::Clear => 0,
            _ => ecn & 0b11,
        };
        if !self.config_checked {
            if let Err(e) = self.config.validate() {
                panic!("link configuration changed to an invalid one: {e}");
            }
            self.config_checked = true;
        }
        if !self.up {
            return dropped(Fate::DroppedLinkDown);
        }
        if size > self.config.max_datagram_size {
            return dropped(Fate::DroppedTooBig);
        }
        if chance(&mut self.rng, self.config.loss) {
            return dropped(Fate::DroppedLoss);
        }
        if let Some(ge) = self.config.gilbert_elliott {
            let p_move = if self.bad {
                ge.p_bad_to_good
            } else {
                ge.p_good_to_bad
            };
            if chance(&mut self.rng, p_move) {
                self.bad = !self.bad;
            }
            let p_loss = if self.bad { ge.loss_bad } else { ge.loss_good };
            if chance(&mut self.rng, p_loss) {
                return dropped(Fate::DroppedLoss);
            }
        }
        let mut departure = now;
        if self.config.bandwidth_bps == Some(0) {
            return dropped(Fate::DroppedQueue);
        }
        if let Some(bps) = self.config.bandwidth_bps {
            let backlog = self.backlog(now, bps);
            if backlog.saturating_add(size as u64) > self.config.queue_bytes as u64 {
                return dropped(Fate::DroppedQueue);
            }
            if let LinkEcn::MarkAbove { above } = self.config.ecn {
                if ecn != 0 && backlog > above as u64 {
                    ecn = 0b11;
                }
            }
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let nanos = (size as u128 * 8 * 1_000_000_000).div_ceil(u128::from(bps));
            let serialise = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            departure = later(start, serialise);
            self.busy_until = Some(departure);
        }
        let flip = if size > 0 && chance(&mut self.rng, self.config.corrupt) {
            Some(self.rng.below(size as u64 * 8) as usize)
        } else {
            None
        };
        // Saturating: a link may be configured with any delay, however long.
        let mut after = (departure - now)
            .saturating_add(self.config.delay)
            .saturating_add(uniform(&mut self.rng, self.config.jitter));
        if chance(&mut self.rng, self.config.reorder) {
            after = after.saturating_add(self.config.reorder_delay);
        }
        let copy = if chance(&mut self.rng, self.config.duplicate) {
            Some(
                (departure - now)
                    .saturating_add(self.config.delay)
                    .saturating_add(uniform(&mut self.rng, self.config.jitter)),
            )
        } else {
            None
        };
        Offer {
            fate: Fate::Delivered {
                after,
                corrupted: flip.is_some(),
                duplicate: false,
            },
            copy,
            flip,
            ecn,
        }
    }
}
