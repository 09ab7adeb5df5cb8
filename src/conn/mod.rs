//! The connection state machine, split by concern.

/// A packet number space (RFC 9000 §12.3): each has its own packet numbers, acknowledgements and loss
/// recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpaceId {
    /// Initial packets.
    Initial = 0,
    /// Handshake packets.
    Handshake = 1,
    /// 0-RTT and 1-RTT packets (the application data space).
    Data = 2,
}

impl SpaceId {
    /// All three spaces, in order.
    pub const ALL: [SpaceId; 3] = [SpaceId::Initial, SpaceId::Handshake, SpaceId::Data];

    /// The index of this space in per-space arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

pub(crate) mod ack;
pub(crate) mod assembler;
mod cids;
pub(crate) mod congestion;
mod connection;
mod datagrams;
mod early;
pub(crate) mod ecn;
mod key_update;
pub(crate) mod mtud;
pub(crate) mod path;
pub(crate) mod range_set;
pub(crate) mod recovery;
mod recv;
mod send;
mod spaces;
pub(crate) mod streams;
mod tokens;
pub use congestion::CongestionAlgorithm;
#[cfg(feature = "sim")]
pub(crate) use connection::later;
#[cfg(any(test, fuzzing))]
pub(crate) use connection::max_datagram_frame_size;
pub use connection::ConnectionStats;
pub(crate) use connection::{Connection, EndpointEvent, IncomingInfo};
pub use datagrams::SendDatagramError;
#[cfg(test)]
pub(crate) use early::{MAX_EARLY_BYTES, MAX_EARLY_PACKETS};
pub use mtud::MtuDiscoveryConfig;
pub(crate) use recv::initial_authenticates;
#[cfg(all(test, feature = "sim"))]
pub(crate) use send::unprompted;
#[cfg(test)]
pub(crate) use spaces::SentFrames;
pub use streams::{ReadError, StreamEvent, StreamsConfig, WriteError};
pub(crate) use tokens::MAX_CLIENT_TOKEN;
