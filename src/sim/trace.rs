//! A record of everything a simulation did, with a stable hash.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use super::link::Fate;
use super::NodeId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One thing that happened in a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceRecord {
    /// A datagram (or one copy of it) offered to the network.
    Datagram {
        /// When it was sent, since the simulation's epoch.
        at: Duration,
        /// Its size in bytes.
        size: usize,
        /// The address it was sent from.
        from: SocketAddr,
        /// The address it was sent to.
        to: SocketAddr,
        /// What the network did with it.
        fate: Fate,
    },
    /// An event an endpoint reported.
    Event {
        /// When, since the simulation's epoch.
        at: Duration,
        /// The node whose endpoint reported it.
        node: NodeId,
        /// The connection handle, as its `Debug` text.
        handle: String,
        /// The event, as its `Debug` text.
        event: String,
    },
}

/// Every datagram and event of a simulation, hashed as it is recorded.
///
/// The hash covers every record ever made; only the last [`capacity`](Self::capacity) records are kept
/// for inspection, so memory stays bounded however long a simulation runs. Counters cover everything.
#[derive(Debug, Clone)]
pub struct Trace {
    hash: u64,
    records: VecDeque<TraceRecord>,
    capacity: usize,
    total: u64,
    /// Datagram copies delivered.
    pub delivered: u64,
    /// Datagrams dropped, for any reason.
    pub dropped: u64,
    /// Datagrams corrupted on the way (and still delivered).
    pub corrupted: u64,
    /// Bytes of datagram copies delivered.
    pub delivered_bytes: u64,
    /// Datagrams a link marked ECN-CE ([`LinkEcn::MarkAbove`](super::LinkEcn::MarkAbove)).
    pub ce_marked: u64,
    /// Buffers of two datagrams or more handed to a node at once, with batching on
    /// ([`Simulation::set_batching`](super::Simulation::set_batching)). Not part of the hash.
    pub batches: u64,
    /// Datagrams handed over in those buffers.
    pub batched: u64,
    /// Strings of an event record no longer kept, reused for the next one.
    spare: Option<(String, String)>,
}

impl Trace {
    /// An empty trace keeping at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            hash: FNV_OFFSET,
            records: VecDeque::new(),
            capacity,
            total: 0,
            delivered: 0,
            dropped: 0,
            corrupted: 0,
            delivered_bytes: 0,
            ce_marked: 0,
            batches: 0,
            batched: 0,
            spare: None,
        }
    }

    /// The FNV-1a hash of a canonical encoding of every record so far: equal for two runs that sent the
    /// same datagram sizes between the same addresses at the same times with the same fates, and reported
    /// the same events at the same times.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The records kept (the most recent ones, oldest first).
    pub fn records(&self) -> impl Iterator<Item = &TraceRecord> {
        self.records.iter()
    }

    /// How many records kept records may be, at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many records were made in all (kept or not).
    pub fn total(&self) -> u64 {
        self.total
    }

    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    fn mix_u64(&mut self, v: u64) {
        self.mix(&v.to_le_bytes());
    }

    fn mix_addr(&mut self, addr: &SocketAddr) {
        match addr {
            SocketAddr::V4(a) => {
                self.mix(&[4]);
                self.mix(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                self.mix(&[6]);
                self.mix(&a.ip().octets());
            }
        }
        self.mix(&addr.port().to_le_bytes());
    }

    fn mix_duration(&mut self, d: Duration) {
        self.mix_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    fn mix_str(&mut self, s: &str) {
        self.mix_u64(s.len() as u64);
        self.mix(s.as_bytes());
    }

    /// Records `record`, hashing it.
    pub fn record(&mut self, record: TraceRecord) {
        match &record {
            TraceRecord::Datagram {
                at,
                size,
                from,
                to,
                fate,
            } => {
                self.mix(&[0]);
                self.mix_duration(*at);
                self.mix_u64(*size as u64);
                self.mix_addr(from);
                self.mix_addr(to);
                self.mix(&[fate.code()]);
                match fate {
                    Fate::Delivered { after, corrupted, .. } => {
                        self.delivered += 1;
                        self.delivered_bytes += *size as u64;
                        self.corrupted += u64::from(*corrupted);
                        self.mix_duration(*after);
                    }
                    _ => self.dropped += 1,
                }
            }
            TraceRecord::Event {
                at,
                node,
                handle,
                event,
            } => {
                self.mix(&[1]);
                self.mix_duration(*at);
                self.mix_u64(node.0 as u64);
                self.mix_str(handle);
                self.mix_str(event);
            }
        }
        self.total += 1;
        if self.capacity == 0 {
            self.recycle(record);
            return;
        }
        if self.records.len() >= self.capacity {
            if let Some(old) = self.records.pop_front() {
                self.recycle(old);
            }
        }
        self.records.push_back(record);
    }

    /// Records that a datagram recorded as delivered when it was sent found no node when it arrived (its
    /// destination moved on the way): a [`Fate::DroppedNoRoute`] record with the time it was sent, and
    /// the counters moved from delivered to dropped.
    pub(crate) fn undeliver(
        &mut self,
        sent: Duration,
        size: usize,
        corrupted: bool,
        from: SocketAddr,
        to: SocketAddr,
    ) {
        self.delivered = self.delivered.saturating_sub(1);
        self.corrupted = self.corrupted.saturating_sub(u64::from(corrupted));
        self.delivered_bytes = self.delivered_bytes.saturating_sub(size as u64);
        self.record(TraceRecord::Datagram {
            at: sent,
            size,
            from,
            to,
            fate: Fate::DroppedNoRoute,
        });
    }

    /// Keeps the strings of an event record that is no longer kept, for [`Trace::record_event`].
    fn recycle(&mut self, record: TraceRecord) {
        if let TraceRecord::Event { handle, event, .. } = record {
            self.spare = Some((handle, event));
        }
    }

    /// Records an event given by the `Debug` text of its connection and of itself, as
    /// [`TraceRecord::Event`] does; reuses the strings of records no longer kept, so that a long
    /// simulation does not allocate for every event.
    pub(crate) fn record_event(
        &mut self,
        at: Duration,
        node: NodeId,
        handle: &dyn fmt::Debug,
        event: &dyn fmt::Debug,
    ) {
        let (mut h, mut e) = self.spare.take().unwrap_or_default();
        h.clear();
        e.clear();
        // Writing to a String cannot fail.
        let _ = write!(h, "{handle:?}");
        let _ = write!(e, "{event:?}");
        self.record(TraceRecord::Event {
            at,
            node,
            handle: h,
            event: e,
        });
    }
}
