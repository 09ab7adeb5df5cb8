//! Packets that arrived before the keys to open them (RFC 9001 §4.1.4, §5.7).
//!
//! Reordering during the handshake makes packets overtake the one that gives their keys: a server's
//! Handshake packet the server's Initial (at the client), or a client's 1-RTT packet its Finished (at the
//! server, which must not process 1-RTT packets before its handshake is complete, RFC 9001 §5.7).
//! Dropped, they are losses to the sender, which costs it a retransmission and a congestion event; so a
//! few are kept, as received, and go through the receive path again once their keys are there.
//!
//! The buffer exists only while it holds packets (an idle connection pays one pointer for it), and only
//! until the handshake is complete: after that every key a packet can wait for is installed.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;

use super::connection::Connection;
use super::SpaceId;
use crate::datagram::EcnCodepoint;
use crate::wire::header::ProtectedHeader;

/// The most packets a connection holds for keys it does not have yet. What usually overtakes the packet
/// that brings the keys is the rest of its flight: a client's first 1-RTT packets after its Finished (up
/// to an initial congestion window, RFC 9002 §7.2, ten full datagrams, or more smaller ones), a server's
/// Handshake packets after its Initial.
pub(crate) const MAX_EARLY_PACKETS: usize = 16;

/// The most bytes (of packets, as received) a connection holds for keys it does not have yet: the
/// largest initial congestion window (RFC 9002 §7.2: 14,720 bytes), all a peer can send before it hears
/// from us. In the simulator's reordering scenario (tests/sim_matrix.rs, `reorder5_rtt20`), eight
/// packets and 12,000 bytes left some runs with the congestion event a dropped packet costs; this bound
/// none.
pub(crate) const MAX_EARLY_BYTES: usize = 14_720;

/// One packet waiting for its keys, with what the receive path needs to process it later.
pub(crate) struct EarlyPacket {
    space: SpaceId,
    /// Its header, as decoded on arrival (its byte ranges index `packet`).
    header: ProtectedHeader,
    /// The protected packet, as received (a copy: it does not hold on to the rest of its datagram).
    packet: BytesMut,
    remote: SocketAddr,
    local_ip: Option<IpAddr>,
    /// The size of the datagram it came in, whose bytes were counted on arrival (RFC 9000 §8.1).
    datagram_len: usize,
    ecn: Option<EcnCodepoint>,
    /// When it arrived.
    arrived: Instant,
}

/// The packets a connection holds for keys, in arrival order.
#[derive(Default)]
pub(crate) struct EarlyPackets {
    packets: VecDeque<EarlyPacket>,
    /// While a held packet goes through the receive path: when it arrived. An ACK in it takes its RTT
    /// sample as of then (RFC 9002 §5.3: local delays come off the sample).
    pub(crate) replaying: Option<Instant>,
}

impl EarlyPackets {
    /// How many packets are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.packets.len()
    }

    /// The bytes of the packets held (a few at most, so summed when asked).
    pub(crate) fn bytes(&self) -> usize {
        self.packets.iter().map(|p| p.packet.len()).sum()
    }
}

/// Whether a space's packets can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// The keys are there (and, for 1-RTT at a server, the handshake is complete).
    Ready,
    /// Not yet: the packet may wait.
    Later,
    /// Never: the keys were discarded (or the space never has keys to wait for).
    Gone,
}

impl Connection {
    /// Whether packets of `space` can be opened now, later, or never. Only asked before the handshake is
    /// complete: after that, every key a packet could wait for is installed.
    pub(crate) fn key_state(&self, space: SpaceId) -> KeyState {
        let s = &self.spaces[space.index()];
        match space {
            SpaceId::Data => {
                // RFC 9001 §5.7: a server processes 1-RTT packets only once its handshake is complete
                // (it has 1-RTT keys earlier, for sending).
                if self.one_rtt.is_none() || (self.side.is_server() && !self.handshake_complete) {
                    KeyState::Later
                } else {
                    KeyState::Ready
                }
            }
            _ if s.keys.is_some() => KeyState::Ready,
            // A client gets Handshake keys from the server's Initial, which its Handshake packets may
            // overtake. A server has its own as soon as it reads the ClientHello, before a client can
            // send a Handshake packet (it needs the ServerHello), so nothing genuine waits for them
            // there; nor for Initial keys, which both sides have from the start.
            SpaceId::Handshake if self.side.is_client() && !s.discarded => KeyState::Later,
            _ => KeyState::Gone,
        }
    }

    /// Holds a packet of `space` until its keys are there (RFC 9001 §4.1.4: "endpoints MAY buffer";
    /// §5.7: 1-RTT packets "MAY be stored and later decrypted"). Whether it was kept: not once the
    /// buffer is full.
    #[cold]
    pub(crate) fn hold_early(
        &mut self,
        now: Instant,
        space: SpaceId,
        header: &ProtectedHeader,
        packet: &[u8],
        ecn: Option<EcnCodepoint>,
        (remote, local_ip, datagram_len): (&SocketAddr, Option<IpAddr>, usize),
    ) -> bool {
        // RFC 9000 §8.1: before a server has validated the client's address, what comes from it may come
        // from anyone claiming that address. The 1-RTT packets it holds carry a connection ID it chose,
        // which only a peer that received its packets knows; with zero-length IDs nothing shows that,
        // and such a server holds nothing from an unvalidated address (which the handshake's CRYPTO data
        // may already make take 64 KiB, §7.5), dropping as it did before there was a buffer.
        if self.side.is_server() && !self.path.validated && self.local_cid.is_empty() {
            return false;
        }
        let early = self.early.get_or_insert_with(Box::default);
        if early.packets.len() >= MAX_EARLY_PACKETS || early.bytes() + packet.len() > MAX_EARLY_BYTES {
            self.free_early_if_idle();
            return false;
        }
        early.packets.push_back(EarlyPacket {
            space,
            header: header.clone(),
            packet: BytesMut::from(packet),
            remote: *remote,
            local_ip,
            datagram_len,
            ecn,
            arrived: now,
        });
        self.stats.packets_buffered += 1;
        true
    }

    /// Processes the held packets whose keys are now there, oldest first, through the same path as a
    /// packet just received; drops those whose keys were discarded. Each one processed may bring more
    /// keys (a Handshake packet with the server's Finished gives a client its 1-RTT keys), so the search
    /// starts again after each. The bytes of their datagrams were counted when they arrived.
    #[cold]
    pub(crate) fn process_early(&mut self, now: Instant) {
        loop {
            if self.is_closed() {
                self.drop_early();
                return;
            }
            let states = SpaceId::ALL.map(|s| self.key_state(s));
            let Some(early) = self.early.as_mut() else {
                return;
            };
            let before = early.packets.len();
            early
                .packets
                .retain(|p| states[p.space.index()] != KeyState::Gone);
            let gone = before - early.packets.len();
            let next = early
                .packets
                .iter()
                .position(|p| states[p.space.index()] == KeyState::Ready)
                .and_then(|i| early.packets.remove(i));
            early.replaying = next.as_ref().map(|p| p.arrived);
            self.stats.packets_dropped += gone as u64;
            let Some(p) = next else {
                self.free_early_if_idle();
                return;
            };
            let largest = self.spaces[p.space.index()].received.largest();
            let path = (&p.remote, p.local_ip, p.datagram_len);
            // Its bytes were copied out of the datagram: a buffer of its own, of its own size.
            let own = p.packet.len();
            let result = self.handle_packet(now, p.ecn, &p.header, p.packet, path, own);
            if let Some(early) = self.early.as_mut() {
                early.replaying = None;
            }
            self.free_early_if_idle();
            match result {
                Ok(()) => {
                    // The ACK Delay counts from its arrival (RFC 9000 §13.2.5).
                    if let Some(s) = self.spaces.live_mut(p.space.index()) {
                        if s.received.largest() != largest {
                            s.received.largest_arrived_at(p.arrived);
                        }
                    }
                }
                Err(Some(error)) => self.close_with_error(now, error),
                Err(None) => self.stats.packets_dropped += 1,
            }
        }
    }

    /// Drops the held packets (the connection closed), counting them as dropped.
    pub(crate) fn drop_early(&mut self) {
        if let Some(early) = self.early.take() {
            self.stats.packets_dropped += early.packets.len() as u64;
        }
    }

    /// Drops the held packets of `space`, whose keys were just discarded.
    pub(crate) fn drop_early_of(&mut self, space: SpaceId) {
        let Some(early) = self.early.as_mut() else {
            return;
        };
        let before = early.packets.len();
        early.packets.retain(|p| p.space != space);
        self.stats.packets_dropped += (before - early.packets.len()) as u64;
        self.free_early_if_idle();
    }

    /// Frees the buffer once it holds nothing and no held packet is being processed (that packet may
    /// discard a space, and the buffer says when it arrived, for the rest of its frames).
    fn free_early_if_idle(&mut self) {
        if self
            .early
            .as_ref()
            .is_some_and(|e| e.packets.is_empty() && e.replaying.is_none())
        {
            self.early = None;
        }
    }
}
