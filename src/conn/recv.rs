//! The receive path: datagram → packets → header protection → decryption → frames.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::congestion::new_controller;
use super::connection::{later, max_datagram_frame_size, Connection, State};
use super::early::KeyState;
use super::ecn::EcnSignal;
use super::key_update::{OneRttKeys, RecvKey};
use super::mtud::MtuDiscovery;
use super::recovery::AckOutcome;
use super::send::MIN_INITIAL_DATAGRAM;
use super::spaces::{SentFrames, Spaces};
use super::streams::Streams;
use super::SpaceId;
use crate::crypto::{connection_initial_keys, verify_retry_tag, Keys};
use crate::datagram::EcnCodepoint;
use crate::event::{ConnectionError, Event};
use crate::wire::frame::{ty, AckFrame, Frame, FrameError, NewConnectionId, StreamFrame};
use crate::wire::header::{LongType, ProtectedHeader};
use crate::wire::{ConnectionId, Reader, TransportError};

/// Out-of-order CRYPTO data may be held in at most one piece per this many bytes of the buffer
/// (`crypto_buffer_size`): 256 pieces for the default 64 KiB, where a whole window of full-sized
/// packets with every other one lost makes about 28.
const CRYPTO_BYTES_PER_FRAGMENT: u64 = 256;

/// How far past what TLS read CRYPTO data may reach, in multiples of the CRYPTO buffer limit (which
/// bounds the bytes held beyond a gap): a gap as large as the limit still leaves room for the limit's
/// bytes beyond it.
const CRYPTO_OFFSET_SPAN: u64 = 2;

/// How many separate pieces of CRYPTO data, held around holes, a `window`-byte buffer allows (at least
/// 16).
fn crypto_fragments_limit(window: u64) -> u64 {
    (window / CRYPTO_BYTES_PER_FRAGMENT).max(16)
}

/// Why a packet was dropped without affecting the connection.
struct Dropped;

/// Records a dropped packet in qlog (`transport:packet_dropped`): one test of whether a sink is installed
/// when it records nothing, and no code without the `qlog` feature.
macro_rules! qlog_dropped {
    ($conn:expr, $now:expr, $space:expr, $pn:expr, $len:expr, $reason:ident) => {
        #[cfg(feature = "qlog")]
        $conn
            .qlog
            .packet_dropped($now, $space, $pn, $len, crate::qlog::DropReason::$reason);
    };
}

impl Connection {
    /// Handles one UDP datagram routed to this connection; `buffer_len` is the size of the buffer it
    /// is a slice of (the batch it arrived in; its own length when it came alone).
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        remote: &SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        mut datagram: BytesMut,
        buffer_len: usize,
    ) {
        match self.state {
            // RFC 9000 §10.2.2: a draining endpoint sends nothing and processes nothing.
            State::Draining { .. } | State::Drained => return,
            State::Closing { .. } => {
                // RFC 9000 §10.3.1: a closing endpoint decrypts nothing, so a datagram ending in the
                // peer's reset token is a stateless reset: drain, sending nothing more. (The endpoint
                // catches most resets before they reach a connection, by their unknown DCID; with
                // zero-length local IDs every datagram from the peer's address comes here.)
                if self.is_stateless_reset(&datagram) {
                    self.on_stateless_reset(now);
                    return;
                }
                // RFC 9000 §8.1: what the peer sends still raises the anti-amplification allowance; a
                // server whose first flight used it up could otherwise never send its close.
                if *remote == self.path.remote {
                    self.on_datagram_received(datagram.len());
                }
                // RFC 9000 §10.2.1: answer with CONNECTION_CLOSE, at a decreasing rate.
                if let Some(close) = &mut self.close {
                    close.received += 1;
                    if close.received >= close.threshold {
                        close.received = 0;
                        close.threshold = close.threshold.saturating_mul(2);
                        close.pending = true;
                    }
                }
                return;
            }
            State::Handshake | State::Established => {}
        }
        let len = datagram.len();
        if *remote == self.path.remote {
            self.on_datagram_received(len);
        } else if self.side.is_client() || !self.handshake_confirmed {
            // Servers do not move (our clients do not follow a preferred_address, RFC 9000 §9.6), and a
            // client may not move before the handshake is confirmed (§9): drop, don't answer.
            self.stats.packets_dropped += 1;
            return;
        } else {
            // Maybe the client moved (NAT rebinding, §9.3): counted on the new path if it did.
            self.stats.datagrams_received += 1;
            self.stats.bytes_received += len as u64;
        }
        // RFC 9000 §10.3.1: a datagram that fails to decrypt and ends with the peer's reset token is a
        // stateless reset. Its last 16 bytes are kept before the packets are split off (and decrypted in
        // place), and compared only if a packet fails.
        let tail = self.reset_token_candidate(&datagram);
        let path = (remote, local_ip, len);
        let buffer_len = buffer_len.max(len);
        let cid_len = self.local_cid.len();
        let mut first_dcid = None;
        while !datagram.is_empty() {
            // The header is used where the decoder left it, by reference: moving it out of the `Result`
            // copied it with wide reads of the narrow stores just made (a store-forwarding stall).
            let decoded = ProtectedHeader::decode(&datagram, cid_len);
            let Ok(header) = &decoded else {
                self.stats.packets_dropped += 1;
                qlog_dropped!(self, now, None, None, datagram.len(), Invalid);
                return;
            };
            // RFC 9000 §12.2: ignore coalesced packets with a different destination connection ID.
            if first_dcid.as_ref().is_some_and(|first| first != header.dcid()) {
                self.stats.packets_dropped += 1;
                qlog_dropped!(self, now, None, None, datagram.len(), Invalid);
                return;
            }
            let len = header.len().min(datagram.len());
            // Only a datagram with more packets to come needs the first one's ID.
            if len < datagram.len() && first_dcid.is_none() {
                first_dcid = Some(*header.dcid());
            }
            // The last (usually the only) packet takes the buffer itself: no reference count to touch.
            let packet = if len == datagram.len() {
                std::mem::take(&mut datagram)
            } else {
                datagram.split_to(len)
            };
            match self.handle_packet(now, ecn, header, packet, path, buffer_len) {
                Ok(()) => {}
                Err(Some(error)) => {
                    self.close_with_error(now, error);
                    return;
                }
                // RFC 9000 §10.3: any packet ending in the token is a reset, a long header too.
                Err(None) if tail.is_some_and(|t| self.matches_reset_token(&t)) => {
                    self.on_stateless_reset(now);
                    return;
                }
                Err(None) => self.stats.packets_dropped += 1,
            }
            // Held packets whose keys this packet brought (their datagrams' later packets included,
            // which come after them: they arrived later).
            if self.early.is_some() {
                self.process_early(now);
            }
            if self.is_closed() {
                return;
            }
        }
    }

    /// One packet, a slice of a buffer of `buffer_len` bytes. `Err(None)`: dropped; `Err(Some(e))`: the
    /// connection must close with `e`.
    /// Inlined into `receive`, its hot caller (the other, `process_early`, is cold): called from two
    /// places, it was not, which cost about 50 instructions per packet in callgrind.
    #[inline(always)]
    pub(super) fn handle_packet(
        &mut self,
        now: Instant,
        ecn: Option<EcnCodepoint>,
        header: &ProtectedHeader,
        mut packet: BytesMut,
        (remote, local_ip, datagram_len): (&SocketAddr, Option<IpAddr>, usize),
        buffer_len: usize,
    ) -> Result<(), Option<TransportError>> {
        let space = match header {
            ProtectedHeader::VersionNegotiation { .. } => {
                self.handle_version_negotiation(header, &packet);
                return Ok(());
            }
            ProtectedHeader::Retry { .. } => {
                self.handle_retry(header, &packet).map_err(|Dropped| None)?;
                // RFC 9000 §10.1: a packet from the peer processed successfully restarts the idle
                // timer, and the Initial sent again next is the first ack-eliciting packet since.
                self.reset_idle(now);
                self.ack_eliciting_since_receive = false;
                return Ok(());
            }
            ProtectedHeader::Long {
                ty: LongType::Initial,
                ..
            } => SpaceId::Initial,
            ProtectedHeader::Long {
                ty: LongType::Handshake,
                ..
            } => SpaceId::Handshake,
            // 0-RTT is not supported: such packets are dropped (RFC 9000 §17.2.3 allows it).
            ProtectedHeader::Long { .. } => {
                #[cfg(feature = "qlog")]
                self.qlog
                    .packet_dropped_as(now, "0RTT", packet.len(), crate::qlog::DropReason::Unsupported);
                return Err(None);
            }
            ProtectedHeader::Short { .. } => SpaceId::Data,
        };
        if header.version().is_some_and(|v| v != self.version) {
            qlog_dropped!(self, now, Some(space), None, packet.len(), Unsupported);
            return Err(None);
        }
        // RFC 9000 §14.1: a server discards an Initial packet carried in a datagram of less than 1200
        // bytes: every one, not only the first (which the endpoint checks before creating the connection).
        if self.side.is_server() && space == SpaceId::Initial && datagram_len < MIN_INITIAL_DATAGRAM {
            qlog_dropped!(self, now, Some(space), None, packet.len(), Invalid);
            return Err(None);
        }
        // RFC 9000 §17.2.2: a server's Initial packets have a zero Token Length; a client discards any
        // other.
        if self.side.is_client() && space == SpaceId::Initial && !header.token(&packet).is_empty() {
            qlog_dropped!(self, now, Some(space), None, packet.len(), Invalid);
            return Err(None);
        }
        // RFC 9000 §7.2: once the client has the server's connection ID, it drops long-header packets
        // with another Source Connection ID (the one of the server's first packet, even if the connection
        // has moved to another of its IDs since).
        if self.side.is_client()
            && space != SpaceId::Data
            && self
                .peer_handshake_cid
                .is_some_and(|cid| header.scid() != Some(&cid))
        {
            qlog_dropped!(self, now, Some(space), None, packet.len(), Invalid);
            return Err(None);
        }
        let Some(pn_offset) = header.pn_offset() else {
            qlog_dropped!(self, now, Some(space), None, packet.len(), Invalid);
            return Err(None);
        };
        // Packets whose keys are not there yet (RFC 9001 §4.1.4), and 1-RTT packets at a server before its
        // handshake is complete, which it must not process (§5.7: they come from a client whose Finished
        // was lost or overtaken, or one that withholds it to act unauthenticated): a few are held unopened
        // and processed once the keys are there (`process_early`), the rest dropped. Only during the
        // handshake: after it, one branch on a flag. (None of these can be a stateless reset, which the
        // caller looks for in dropped packets: a peer's reset token is known only after this.)
        if !self.handshake_complete && self.key_state(space) == KeyState::Later {
            return if self.hold_early(now, space, header, &packet, ecn, (remote, local_ip, datagram_len)) {
                Ok(())
            } else {
                qlog_dropped!(self, now, Some(space), None, packet.len(), KeyUnavailable);
                Err(None)
            };
        }

        // Header protection (RFC 9001 §5.4).
        let hp_result = match space {
            SpaceId::Data => self
                .one_rtt
                .as_ref()
                .map(|k| k.remote_header.unprotect(pn_offset, &mut packet)),
            _ => self.spaces[space.index()]
                .keys
                .as_ref()
                .map(|k| k.remote.header.unprotect(pn_offset, &mut packet)),
        };
        match hp_result {
            Some(Ok(())) => {}
            // No keys (yet or any more), or too short to sample: drop.
            None => {
                qlog_dropped!(self, now, Some(space), None, packet.len(), KeyUnavailable);
                return Err(None);
            }
            Some(Err(_)) => {
                qlog_dropped!(self, now, Some(space), None, packet.len(), Invalid);
                return Err(None);
            }
        }
        let Ok(plain) = header.finish(&packet) else {
            qlog_dropped!(self, now, Some(space), None, packet.len(), Invalid);
            return Err(None);
        };
        let largest = self.spaces[space.index()].received.largest();
        let pn = plain.pn.expand(largest);
        let newest = largest.map_or(true, |l| pn > l);

        // Payload protection (RFC 9001 §5.3), with the key phase rules of §6.
        let mut recv_key = RecvKey::Current;
        let opened = match space {
            SpaceId::Data => {
                let keys = self.one_rtt.as_ref().ok_or(None)?;
                recv_key = keys.recv_key(plain.key_phase, pn);
                // RFC 9001 §6.1, §6.2: after our own update, until a packet of the new phase opens, the old
                // phase bit most likely marks a packet sent before the peer saw the update; but it is also
                // the bit of a second update by a peer whose packets of the first were all lost, made before
                // we could acknowledge any (§6.1 forbids it). The ciphertext is kept so that such a packet
                // can be tried with the next key, and the connection closes with KEY_UPDATE_ERROR instead
                // of dropping every packet until the idle timeout. Rare: once per update, for a round trip.
                // §6.3, §9.5: the work must not tell which Key Phase bit header protection hid, so a packet
                // with the new bit that fails is tried with the next key too, its result ignored, and every
                // packet's ciphertext is kept meanwhile (in a buffer reused from packet to packet).
                let retry = keys.prev_awaits_new_phase();
                if retry {
                    self.open_scratch.clear();
                    self.open_scratch.extend_from_slice(&packet[plain.header_len..]);
                }
                let mut opened = keys
                    .remote_key(recv_key)
                    .map(|k| k.open(pn, &mut packet, plain.header_len));
                if retry {
                    if let (Some(Err(_)), Some(next)) = (&opened, keys.remote_key(RecvKey::Next)) {
                        packet[plain.header_len..].copy_from_slice(&self.open_scratch);
                        let second = next.open(pn, &mut packet, plain.header_len);
                        if let (RecvKey::Previous, Ok(len)) = (recv_key, second) {
                            recv_key = RecvKey::Next;
                            opened = Some(Ok(len));
                        }
                    }
                }
                opened
            }
            _ => self.spaces[space.index()]
                .keys
                .as_ref()
                .map(|k| k.remote.packet.open(pn, &mut packet, plain.header_len)),
        };
        let payload_len = match opened {
            Some(Ok(len)) => len,
            // No key to try (a key phase whose keys are not there): nothing failed authentication.
            None => {
                qlog_dropped!(self, now, Some(space), Some(pn), packet.len(), KeyUnavailable);
                return Err(None);
            }
            Some(Err(_)) => {
                // RFC 9001 §6.6: packets that fail authentication count across all keys, and once they
                // exceed the integrity limit of the AEAD in use the connection must close.
                self.auth_failures += 1;
                let limit = match space {
                    SpaceId::Data => self.one_rtt.as_ref().map(|k| k.remote.integrity_limit()),
                    _ => self.spaces[space.index()]
                        .keys
                        .as_ref()
                        .map(|k| k.remote.packet.integrity_limit()),
                };
                qlog_dropped!(self, now, Some(space), Some(pn), packet.len(), DecryptionFailure);
                if self.auth_failures > limit.unwrap_or(u64::MAX) {
                    return Err(Some(TransportError::aead_limit_reached(
                        "integrity limit exceeded",
                    )));
                }
                return Err(None);
            }
        };
        if self.spaces[space.index()].received.is_duplicate(pn) {
            qlog_dropped!(self, now, Some(space), Some(pn), packet.len(), Duplicate);
            return Err(None);
        }
        if space == SpaceId::Data {
            // Only a key update, or the first packet opened after ours, needs the PTO (computed per
            // packet otherwise, for nothing).
            let needs_pto = match recv_key {
                RecvKey::Next => true,
                RecvKey::Current => self.one_rtt.as_ref().is_some_and(|k| k.prev_awaits_new_phase()),
                RecvKey::Previous => false,
            };
            let pto = if needs_pto { self.pto() } else { Duration::ZERO };
            let keys = self.one_rtt.as_mut().ok_or(None)?;
            match recv_key {
                RecvKey::Next => {
                    // RFC 9001 §6.4: a packet numbered below one already opened with older keys (the
                    // current or previous ones) must not use newer keys: KEY_UPDATE_ERROR, not an update.
                    if !newest {
                        return Err(Some(TransportError::key_update_error(
                            "newer keys on a packet numbered below one protected with older keys",
                        )));
                    }
                    if !keys.peer_may_update() {
                        // RFC 9001 §6.5: a second update before we acknowledged the current phase.
                        return Err(Some(TransportError::key_update_error(
                            "key update before the previous one was acknowledged",
                        )));
                    }
                    // RFC 9001 §6.2: the peer updated its keys; we update ours before answering.
                    tracing::debug!(side = ?self.side, pn, "peer started a key update");
                    self.rotate_1rtt_keys(now, Some((pn, later(now, pto.saturating_mul(3)))));
                }
                RecvKey::Current => {
                    // RFC 9001 §6.4: newer keys on a packet numbered below one protected with older ones.
                    if keys.below_older(pn) {
                        return Err(Some(TransportError::key_update_error(
                            "current keys on a packet numbered below one protected with older keys",
                        )));
                    }
                    // RFC 9001 §6.1, §6.5: after our update, old keys stay until a packet of the new
                    // phase opens, and then three PTOs more.
                    if needs_pto {
                        keys.set_prev_discard(later(now, pto.saturating_mul(3)));
                        self.open_scratch = Vec::new();
                    }
                    keys.on_received(pn);
                }
                RecvKey::Previous => keys.on_received_previous(pn),
            }
        }
        // RFC 9000 §17.2, §17.3.1: reserved bits must be zero once protection is removed.
        if plain.reserved_bits != 0 {
            return Err(Some(TransportError::protocol_violation(
                "reserved header bits set",
            )));
        }
        self.stats.packets_received += 1;

        if self.side.is_client() && self.peer_handshake_cid.is_none() && space != SpaceId::Data {
            // RFC 9000 §7.2: the client switches to the server's connection ID.
            if let Some(scid) = header.scid() {
                self.remote_cid = *scid;
                self.peer_handshake_cid = Some(*scid);
            }
        }
        if self.side.is_server() && space == SpaceId::Handshake {
            // RFC 9000 §8.1: a Handshake packet proves the client got our Initial.
            self.path.validated = true;
            // RFC 9001 §4.9.1: the server drops Initial keys on its first Handshake packet.
            self.discard_space(SpaceId::Initial, now);
        }

        #[cfg(feature = "qlog")]
        let packet_len = packet.len();
        // The payload is cut out of the packet in place (no second reference to the buffer); the header
        // is skipped on the frozen `Bytes`, whose `advance` is inline pointer arithmetic.
        packet.truncate(plain.header_len + payload_len);
        let mut payload = packet.freeze();
        bytes::Buf::advance(&mut payload, plain.header_len);
        #[cfg(feature = "qlog")]
        self.qlog.packet_received(now, space, pn, packet_len, &payload);
        let moved = *remote != self.path.remote;
        let response_owed = self.path_response;
        let dcid = header.dcid();
        // The payload goes by reference: a copy of it, just built by narrow stores, stalled on the wide reads.
        let (ack_eliciting, probing) = self
            .process_frames(now, space, &mut payload, (dcid, buffer_len))
            .map_err(Some)?;
        if self.is_closed() {
            return Ok(());
        }
        if moved {
            // RFC 9000 §9.3: a non-probing packet with the largest number so far moves the connection, if
            // there is a connection ID of the peer's to use there (§9.5, `may_follow`).
            if !probing && newest && space == SpaceId::Data && self.may_follow(*remote, dcid) {
                let (left, left_ip, left_allowance) =
                    (self.path.remote, self.path.local_ip, self.path.send_allowance());
                let left_cid = self.remote_cid;
                let (mut released, owed_here) = self.migrate(now, *remote, local_ip, datagram_len, *dcid);
                if let Some(owed) = response_owed {
                    // RFC 9000 §8.2.2: a PATH_RESPONSE goes on the path its challenge came from, the one
                    // just left: with the challenge to that path if it is still to go, else alone, with
                    // the connection ID that path used (§9.5). A challenge this packet carried stays,
                    // answered on the new path.
                    if self.path_response == response_owed {
                        self.path_response = None;
                    }
                    let old_path = self.path_validation.as_mut().and_then(|v| v.old_path.as_mut());
                    if let Some(c) = old_path.filter(|c| c.pending && c.remote == left) {
                        c.response = Some(owed);
                    } else {
                        // Out of use, the ID is retired once the answer goes; otherwise it is still in
                        // use, or shared with the old path's challenge, which retires it.
                        let there = match released.take() {
                            Some((seq, cid)) => (cid, Some(seq)),
                            None => (left_cid, None),
                        };
                        self.answer_off_path(left, left_ip, owed, left_allowance, Some(there));
                    }
                }
                if let Some((seq, _)) = released {
                    self.retire_spare(seq);
                }
                // Back on a path whose PATH_CHALLENGE was still unanswered: the answer goes here now
                // (RFC 9000 §8.2.2), unless this packet brought a newer challenge, answered instead.
                if let Some(owed) = owed_here {
                    self.path_response.get_or_insert(owed);
                }
            } else if let Some(data) = self.path_response.filter(|_| self.path_response != response_owed) {
                // A PATH_CHALLENGE probing another path (RFC 9000 §9.1): answered there, not here
                // (§8.2.2), within three times what came from there (§8.1).
                self.path_response = response_owed;
                let allowance = 3 * datagram_len as u64;
                self.answer_off_path(*remote, local_ip, data, allowance, None);
            }
        } else if newest && space == SpaceId::Data && self.path.peer_dcid != *dcid {
            // The peer moved to another of our IDs on this path (RFC 9000 §9.5, `may_follow`).
            self.path.peer_dcid = *dcid;
        }
        if !self.spaces[space.index()].discarded {
            self.spaces[space.index()]
                .received
                .on_packet_received(pn, ack_eliciting, ecn, now);
        }
        // RFC 9000 §10.1: a processed packet restarts the idle timer.
        self.reset_idle(now);
        self.ack_eliciting_since_receive = false;
        Ok(())
    }

    /// Processes the frames of a decrypted packet sent to `dcid`; returns whether it was ack-eliciting
    /// and whether it held only probing frames (RFC 9000 §9.1).
    fn process_frames(
        &mut self,
        now: Instant,
        space: SpaceId,
        payload: &mut Bytes,
        (dcid, buffer_len): (&ConnectionId, usize),
    ) -> Result<(bool, bool), TransportError> {
        let mut ack_eliciting = false;
        let mut probing = true;
        let empty = payload.is_empty();
        let mut pos = 0;
        // The end of the CRYPTO data of `space` received when a frame of this packet made the connection
        // discard the space (the client's Finished confirms the handshake at the server).
        let mut crypto_end_at_discard: Option<u64> = None;
        while pos < payload.len() {
            // STREAM frames, most of the traffic, are decoded straight into what the streams take; the
            // last one of a packet takes the payload buffer itself.
            if let Some(frame) = StreamFrame::decode_owned(payload, &mut pos) {
                // RFC 9000 §19.19: an error names the type received (0x08 to 0x0f), which is not always
                // the type the frame would be encoded with.
                let (frame, ty) = frame.map_err(TransportError::from)?;
                // RFC 9000 §12.4: STREAM is not permitted in Initial and Handshake packets.
                if space != SpaceId::Data {
                    return Err(not_allowed_in_packet_type(ty));
                }
                ack_eliciting = true;
                probing = false;
                self.streams
                    .on_stream(frame, buffer_len)
                    .map_err(|e| e.with_frame(ty))?;
                continue;
            }
            let mut r = Reader::from_bytes(payload);
            // RFC 9000 §19.19: `ty` is the type as received, which errors name.
            let (frame, ty) = r
                .skip(pos)
                .map_err(|kind| FrameError { frame_type: 0, kind })
                .and_then(|()| Frame::decode_typed(&mut r))
                .map_err(|e| self.frame_decode_error(e))?;
            // The frame's size as received, its type and length fields in whatever encoding they came.
            let received_len = r.position() - pos;
            pos = r.position();
            ack_eliciting |= frame.is_ack_eliciting();
            probing &= frame.is_probing();
            // RFC 9000 §12.4: a frame not permitted in the packet type is a PROTOCOL_VIOLATION.
            if space != SpaceId::Data && !frame.allowed_in_initial_or_handshake() {
                return Err(not_allowed_in_packet_type(ty));
            }
            match frame {
                Frame::Padding(_) | Frame::Ping => {}
                Frame::Ack(ack) => self.on_ack_frame(now, space, &ack)?,
                Frame::Crypto(c) => {
                    // RFC 9000 §7.5: at least 4096 bytes, whatever the configuration says.
                    let limit = self.config.crypto_buffer_size.max(4096);
                    let window = limit as u64;
                    let left = self.crypto_level_left(space);
                    let min_rtt = self.recovery.rtt().min();
                    let settled = self
                        .recovery
                        .last_ack_eliciting_sent(space)
                        .map_or(true, |t| now.saturating_duration_since(t) >= min_rtt);
                    let end = c.offset.saturating_add(c.data.len() as u64);
                    // The space may have been discarded by an earlier frame of this very packet (the
                    // client's Finished confirms the handshake at the server).
                    let live = self.spaces.live_mut(space.index());
                    // RFC 9001 §4.1.3: at a level TLS no longer reads at, CRYPTO data may not extend past
                    // the end of what was received (all of it read: see `drive_tls`), even beyond a gap,
                    // where it would otherwise wait, unread, until the keys go; nor in the rest of the
                    // packet whose frame made the connection discard the level.
                    let left_end = match &live {
                        Some(s) => left.then(|| s.crypto_recv.contiguous_end()),
                        None => crypto_end_at_discard,
                    };
                    if left_end.is_some_and(|left_end| end > left_end) {
                        return Err(TransportError::protocol_violation(
                            "CRYPTO data past the end of a level TLS has left",
                        )
                        .with_frame(ty));
                    }
                    let Some(s) = live else {
                        continue;
                    };
                    // RFC 9002 §6.2.3: CRYPTO data we already have, sent again, tells that the peer
                    // misses an acknowledgement of it, or what we sent in answer: our own unacknowledged
                    // CRYPTO data of the space goes again now rather than at our PTO, once per space. A
                    // client whose Finished was lost, its PTO backed off for seconds by an outage
                    // earlier in the handshake, answered the server's probes with ACK frames only, and
                    // the server, with nothing of its own in flight, reached its idle timeout first
                    // (tests/soak.rs seed 197720). A server whose flight was lost resends it on the
                    // client's ClientHello sent again, within the amplification limit. Only when what we
                    // sent in the space last went out at least a round trip ago (min_rtt, the initial RTT
                    // before a sample): a copy sent before ours could arrive says nothing of ours (a
                    // client's second Initial probe, right behind the first the server answered). Nor
                    // when what we sent waits to go again already (declared lost, or held back by the
                    // amplification limit): it goes at the next chance, and the once is kept.
                    let resend = space != SpaceId::Data
                        && !c.data.is_empty()
                        && end <= s.crypto_recv.contiguous_end()
                        && settled
                        && s.resend_crypto_early();
                    // Data beyond a gap waits, as a copy when small or a small share of its buffer (its
                    // datagram, or the batch it came in): memory follows the bytes held, not the
                    // buffers they came in. RFC 9000 §7.5: a peer may not make us buffer more than we
                    // allow, in bytes or in pieces held around holes (each costs an entry, however
                    // small).
                    // The limit counts the bytes held beyond a gap (§7.5: "at least 4096 bytes of data
                    // received in out-of-order CRYPTO frames", whatever is missing before them), and
                    // the data may reach CRYPTO_OFFSET_SPAN times the limit past what TLS read.
                    s.crypto_recv
                        .insert_judged(
                            c.offset,
                            c.data,
                            window.saturating_mul(CRYPTO_OFFSET_SPAN),
                            buffer_len,
                        )
                        .map_err(|_| {
                            TransportError::crypto_buffer_exceeded("CRYPTO data too far ahead").with_frame(ty)
                        })?;
                    if s.crypto_recv.held_beyond_gap() > limit {
                        return Err(TransportError::crypto_buffer_exceeded(
                            "too much out-of-order CRYPTO data",
                        )
                        .with_frame(ty));
                    }
                    if s.crypto_recv.fragments() as u64 > crypto_fragments_limit(window) {
                        return Err(TransportError::crypto_buffer_exceeded(
                            "CRYPTO data in too many separate pieces",
                        )
                        .with_frame(ty));
                    }
                    let received_end = s.crypto_recv.contiguous_end();
                    self.read_crypto(now, space)?;
                    if self.spaces[space.index()].discarded {
                        crypto_end_at_discard = Some(received_end);
                    }
                    // A ClientHello sent again: the client has not had our Initial flight, and the
                    // Handshake packets beside it were likely lost with it. They go again too.
                    if resend && space == SpaceId::Initial && self.side.is_server() {
                        if let Some(h) = self.spaces.live_mut(SpaceId::Handshake.index()) {
                            h.resend_crypto_early();
                        }
                    }
                }
                Frame::Close(close) => {
                    self.on_peer_close(now, close);
                    return Ok((ack_eliciting, false));
                }
                Frame::HandshakeDone => {
                    // RFC 9000 §19.20: a server receiving HANDSHAKE_DONE is a PROTOCOL_VIOLATION.
                    if self.side.is_server() {
                        return Err(
                            TransportError::protocol_violation("HANDSHAKE_DONE from a client").with_frame(ty)
                        );
                    }
                    self.on_handshake_confirmed(now);
                }
                Frame::NewToken(token) => {
                    // RFC 9000 §19.7: a server receiving NEW_TOKEN is a PROTOCOL_VIOLATION.
                    if self.side.is_server() {
                        return Err(
                            TransportError::protocol_violation("NEW_TOKEN from a client").with_frame(ty)
                        );
                    }
                    // RFC 9000 §8.1.3: the client keeps it for its next connection to this server.
                    self.new_tokens.on_received(token);
                }
                Frame::PathChallenge(data) => self.path_response = Some(data),
                Frame::PathResponse(data) => self.on_path_response(now, data),
                Frame::NewConnectionId(n) => self.on_new_connection_id(&n).map_err(|e| e.with_frame(ty))?,
                Frame::RetireConnectionId(seq) => self
                    .on_retire_connection_id(seq, dcid)
                    .map_err(|e| e.with_frame(ty))?,
                Frame::Datagram(d) => {
                    // RFC 9221 §3: DATAGRAM frames we did not announce, or larger than announced, are a
                    // PROTOCOL_VIOLATION.
                    let (Some(limit), Some(max_frame)) = (
                        self.config.datagram_receive_buffer,
                        max_datagram_frame_size(&self.config),
                    ) else {
                        return Err(
                            TransportError::protocol_violation("DATAGRAM frames not negotiated")
                                .with_frame(ty),
                        );
                    };
                    // The frame's own size, as received: type, length field (type 0x31) and data. A
                    // longer encoding than needed of the type (RFC 9000 §12.4 lets us take it) or of the
                    // length (§16) counts too: the limit is on the frame as sent.
                    if received_len as u64 > max_frame {
                        return Err(TransportError::protocol_violation(
                            "DATAGRAM frame larger than announced",
                        )
                        .with_frame(ty));
                    }
                    if self.datagrams.push_recv(d.data, limit, buffer_len) {
                        self.events.push_back(Event::DatagramReceived);
                    }
                }
                Frame::Stream(f) => self
                    .streams
                    .on_stream(f, buffer_len)
                    .map_err(|e| e.with_frame(ty))?,
                Frame::ResetStream(f) => self.streams.on_reset_stream(f).map_err(|e| e.with_frame(ty))?,
                Frame::StopSending(f) => self.streams.on_stop_sending(f).map_err(|e| e.with_frame(ty))?,
                Frame::MaxStreamData(f) => {
                    self.streams.on_max_stream_data(f).map_err(|e| e.with_frame(ty))?
                }
                Frame::StreamDataBlocked(f) => self
                    .streams
                    .on_stream_data_blocked(f)
                    .map_err(|e| e.with_frame(ty))?,
                Frame::MaxData(max) => self.streams.on_max_data(max).map_err(|e| e.with_frame(ty))?,
                Frame::DataBlocked(limit) => self
                    .streams
                    .on_data_blocked(limit)
                    .map_err(|e| e.with_frame(ty))?,
                Frame::MaxStreams(m) => self
                    .streams
                    .on_max_streams(m.dir, m.count)
                    .map_err(|e| e.with_frame(ty))?,
                Frame::StreamsBlocked(b) => self
                    .streams
                    .on_streams_blocked(b.dir, b.limit)
                    .map_err(|e| e.with_frame(ty))?,
            }
        }
        if empty {
            // RFC 9000 §12.4: a packet with no frames is a PROTOCOL_VIOLATION.
            return Err(TransportError::protocol_violation("packet without frames"));
        }
        Ok((ack_eliciting, probing))
    }

    fn on_ack_frame(&mut self, now: Instant, space: SpaceId, ack: &AckFrame) -> Result<(), TransportError> {
        let exponent = self
            .peer_params
            .as_ref()
            .map_or(3, |p| p.ack_delay_exponent.into_inner());
        let micros = ack
            .delay
            .checked_shl(exponent as u32)
            .filter(|v| v >> exponent == ack.delay)
            .unwrap_or(u64::MAX);
        let delay = Duration::from_micros(micros);
        let mut ctx = self.recovery_ctx();
        if let Some(arrived) = self.early.as_ref().and_then(|e| e.replaying) {
            ctx.local_delay = now.saturating_duration_since(arrived);
        }
        let app_limited = self.app_limited;
        // Each newly acknowledged packet is handled while the loss detector holds its record (no copy
        // per packet), through the parts of the connection that acknowledgements touch.
        // The send buffers follow the window (a stream's flight cannot pass its buffer).
        self.streams.set_congestion_window(self.cc.window());
        let mut acked = Acked {
            space,
            spaces: &mut self.spaces,
            streams: &mut self.streams,
            one_rtt: &mut self.one_rtt,
            mtud: &mut self.mtud,
            handshake_done_pending: &mut self.handshake_done_pending,
            handshake_done_acked: &mut self.handshake_done_acked,
            new_mtu: None,
            now,
        };
        let cc = &mut self.cc;
        // RFC 9000 §9.4: packets sent on a path the peer has left do not grow the new path's window.
        let path = self.recovery.path_pns(space);
        // qlog lists the acknowledged packet numbers; collected only when it records.
        #[cfg(feature = "qlog")]
        let (qlog_on, mut pns) = (self.qlog.enabled(), Vec::new());
        // Newly acknowledged packets sent marked ECT(0), and those of them sent on this path.
        let (mut marked, mut marked_this_path) = (0u64, 0u64);
        let outcome = self
            .recovery
            .on_ack_received(space, ack.iter(), delay, now, &ctx, |rtt, pn, p| {
                if p.in_flight && path.contains(pn) {
                    cc.on_ack(now, p.time_sent, u64::from(p.size), rtt, app_limited);
                }
                if p.ecn_marked {
                    marked += 1;
                    marked_this_path += u64::from(path.contains(pn));
                }
                acked.packet(pn, p.size, &p.data);
                #[cfg(feature = "qlog")]
                if qlog_on {
                    pns.push(pn);
                }
            })
            .map_err(|e| TransportError::from(e).with_frame(ack.frame_type()))?;
        if outcome.rtt_sampled && space == SpaceId::Data {
            // RFC 9406 §4.2: HyStart++ takes the ACK's RTT sample, once its packets have been counted:
            // only 1-RTT ones, and less the peer's ACK delay (RFC 9002 §5.3). Initial and Handshake
            // packets are acknowledged at once (RFC 9000 §13.2.1), a trickle of 1-RTT packets on the
            // peer's ACK timer, up to max_ack_delay later: compared raw, that wait looks like a queue
            // (25 ms by default, above RttThresh's 16 ms at most).
            self.cc.on_rtt_sample(self.recovery.rtt().latest_adjusted());
        }
        if let Some(size) = acked.new_mtu {
            self.set_mtu(size);
        }
        // RFC 9000 §13.2.4: an ACK frame of ours the peer has now seen, also one in a packet that
        // carried nothing else (loss recovery keeps no record of those).
        if let Some(s) = self.spaces.live_mut(space.index()) {
            s.received.on_peer_ack(ack);
        }
        if !outcome.spurious.is_empty() {
            self.on_spurious_losses(now, space, &outcome.spurious);
        }
        if marked > 0 || ack.ecn.is_some() {
            self.on_ecn_counts(now, space, ack, marked, marked_this_path, &outcome);
        }
        #[cfg(feature = "qlog")]
        if qlog_on {
            pns.sort_unstable();
            self.qlog.packets_acked(now, space, pns.into_iter());
            self.qlog_congestion(now, outcome.largest_acked_time_sent, None);
        }
        if !outcome.lost.is_empty() {
            self.on_packets_lost(now, space, outcome.lost, outcome.persistent_congestion, None);
        } else {
            #[cfg(feature = "qlog")]
            self.qlog_metrics(now);
        }
        // RFC 9001 §4.1.2: "a client MAY consider the handshake to be confirmed when it receives an
        // acknowledgment for a 1-RTT packet" (only a server whose handshake is complete processes 1-RTT
        // packets, §5.7). Without it, a client whose HANDSHAKE_DONE is lost keeps retransmitting
        // Handshake data the server, its keys gone, can no longer acknowledge, with no PTO for its 1-RTT
        // packets (RFC 9002 §6.2.1) and no keep-alive meanwhile: if it is then rebound, nothing it sends
        // shows the server its new address.
        if space == SpaceId::Data && self.side.is_client() && !self.handshake_confirmed && !self.is_closed() {
            self.on_handshake_confirmed(now);
        }
        Ok(())
    }

    /// The ECN counts of an ACK frame that newly acknowledged `marked` packets sent marked (RFC 9000
    /// §13.4.2.1 validation; RFC 9002 §7.1, Appendix B.7: a rise of the CE count is a congestion event,
    /// dated by the send time of the largest acknowledged packet).
    #[cold]
    fn on_ecn_counts(
        &mut self,
        now: Instant,
        space: SpaceId,
        ack: &AckFrame,
        marked: u64,
        marked_this_path: u64,
        outcome: &AckOutcome<SentFrames>,
    ) {
        let signal = self.ecn.on_ack(
            space,
            ack.ecn,
            marked,
            marked_this_path,
            outcome.largest_increased,
        );
        // RFC 9000 §9.4: an ACK whose largest packet was sent on the path left acknowledges only that
        // path's packets, so the CE marks it reports are that path's congestion, not the new one's (whose
        // controller may have started again), as its losses are not counted against the new path.
        let this_path = self.recovery.path_pns(space).contains(ack.largest());
        if signal == EcnSignal::Congestion && this_path {
            self.stats.ecn_ce_signals += 1;
            // Marks are not loss: nothing to undo if losses of the same period prove spurious.
            self.cc_undo = None;
            let sent = outcome.largest_acked_time_sent.unwrap_or(now);
            if !self.cc.in_recovery(sent) {
                self.stats.congestion_events += 1;
                self.recovery.on_recovery_started(now);
                #[cfg(feature = "qlog")]
                self.qlog.set_recovery(true);
            }
            self.cc.on_ecn_ce(now, sent);
            #[cfg(feature = "qlog")]
            self.qlog_congestion(now, None, Some("ECN"));
        }
    }

    /// What a lost packet carried goes out again, unless it is stale (RFC 9000 §13.3).
    pub(crate) fn on_packet_lost(&mut self, space: SpaceId, data: SentFrames) {
        self.stats.packets_lost += 1;
        if let Some(rare) = data.rare {
            let s = &mut self.spaces[space.index()];
            for (offset, len) in rare.crypto {
                s.crypto_send.on_lost(offset, len);
            }
            if rare.handshake_done && !self.handshake_done_acked {
                self.handshake_done_pending = true;
            }
            self.retire_cids.extend(rare.retire_cids);
            self.on_new_cids_lost(&rare.new_cids);
            if let Some(challenge) = rare.path_challenge {
                self.on_path_challenge_lost(challenge);
            }
            self.new_tokens.on_lost(rare.new_token);
        }
        if !data.streams.is_empty() {
            self.streams.on_lost(&data.streams);
        }
    }

    /// NEW_CONNECTION_ID (RFC 9000 §5.1.1, §19.15).
    fn on_new_connection_id(&mut self, frame: &NewConnectionId) -> Result<(), TransportError> {
        if self.remote_cid.is_empty() {
            // RFC 9000 §19.15: a peer using zero-length connection IDs may not send this.
            return Err(TransportError::protocol_violation(
                "NEW_CONNECTION_ID from a peer with zero-length IDs",
            ));
        }
        let limit = self.config.connection_id_limit();
        if frame.sequence < self.peer_retire_prior_to {
            // RFC 9000 §19.15: a connection ID already retired by retire_prior_to is retired at once.
            self.queue_retire(frame.sequence)?;
            return Ok(());
        }
        let held_by_challenge = self
            .path_validation
            .as_ref()
            .and_then(|v| v.old_path.as_ref())
            .and_then(|c| c.spare.then_some(c.dcid_seq));
        // The spare taken for a PATH_RESPONSE to another address, retired once that goes.
        let held_by_answer = self.off_path_response.as_ref().and_then(|r| r.spare);
        let usable = frame.sequence == self.remote_cid_seq
            || self.peer_cids.iter().any(|(s, ..)| *s == frame.sequence);
        if usable {
            // A retransmission. A peer may send it again with the Retire Prior To it has by then
            // (quinn-proto does), and an increase MUST be acted on whichever frame carries it (RFC 9000
            // §5.1.2). The frame's own ID, in use or spare, is at or above it, so there is an ID to
            // move to.
            self.raise_peer_retire_prior_to(frame.retire_prior_to)?;
            return self.leave_retired_cid();
        }
        if held_by_challenge == Some(frame.sequence)
            || held_by_answer == Some(frame.sequence)
            || self.retired_spares.contains(&frame.sequence)
        {
            // A retransmission of an ID another path holds or that we retired. Its Retire Prior To waits
            // for a frame with a usable ID: raised here, it could leave the ID in use below it with no
            // spare to move to, and a late copy of that ID's frame would then retire it while packets
            // still go to it (§19.16 forbids that).
            return Ok(());
        }
        // RFC 9000 §5.1: an ID is issued once; §19.15 lets a repeat under a new sequence number be a
        // PROTOCOL_VIOLATION. Taken, one ID would sit under two sequence numbers and reset tokens.
        let challenge_dcid = self
            .path_validation
            .as_ref()
            .and_then(|v| v.old_path.as_ref())
            .map(|c| c.dcid);
        let answer_dcid = self
            .off_path_response
            .as_ref()
            .filter(|r| r.spare.is_some())
            .map(|r| r.dcid);
        if frame.id == self.remote_cid
            || challenge_dcid == Some(frame.id)
            || answer_dcid == Some(frame.id)
            || self.peer_cids.iter().any(|(_, id, _)| *id == frame.id)
        {
            return Err(TransportError::protocol_violation(
                "NEW_CONNECTION_ID repeats a connection ID under another sequence number",
            ));
        }
        self.raise_peer_retire_prior_to(frame.retire_prior_to)?;
        self.peer_cids.push((frame.sequence, frame.id, frame.reset_token));
        self.leave_retired_cid()?;
        // RFC 9000 §5.1.1: more than active_connection_id_limit IDs is CONNECTION_ID_LIMIT_ERROR (the
        // one in use, the spares, and those the old path's challenge and an off-path answer hold).
        let held = u64::from(held_by_challenge.is_some_and(|s| s >= self.peer_retire_prior_to))
            + u64::from(held_by_answer.is_some_and(|s| s >= self.peer_retire_prior_to));
        if self.peer_cids.len() as u64 + 1 + held > limit {
            return Err(TransportError::connection_id_limit_error(
                "more connection IDs than our limit",
            ));
        }
        Ok(())
    }

    /// The peer's Retire Prior To, if `rpt` raises it (RFC 9000 §5.1.2): its spare IDs below are retired.
    fn raise_peer_retire_prior_to(&mut self, rpt: u64) -> Result<(), TransportError> {
        if rpt <= self.peer_retire_prior_to {
            return Ok(());
        }
        self.peer_retire_prior_to = rpt;
        let retired: Vec<u64> = self
            .peer_cids
            .iter()
            .filter(|(s, ..)| *s < rpt)
            .map(|(s, ..)| *s)
            .collect();
        self.peer_cids.retain(|(s, ..)| *s >= rpt);
        for seq in retired {
            self.queue_retire(seq)?;
        }
        self.on_peer_retire_prior_to(rpt);
        Ok(())
    }

    /// If the ID in use is below the peer's Retire Prior To, switches to the lowest spare and retires it.
    fn leave_retired_cid(&mut self) -> Result<(), TransportError> {
        if self.remote_cid_seq < self.peer_retire_prior_to {
            if let Some((seq, cid, token)) = self.take_lowest_spare() {
                let (old, ..) = self.use_peer_cid(seq, cid, Some(token));
                self.queue_retire(old)?;
            }
        }
        Ok(())
    }

    pub(crate) fn queue_retire(&mut self, seq: u64) -> Result<(), TransportError> {
        // RFC 9000 §19.15: a retirement already owed is not owed twice; copies of one NEW_CONNECTION_ID
        // below Retire Prior To would otherwise fill the queue, and receiving the same frame several
        // times MUST NOT be a connection error.
        if self.retire_cids.contains(&seq) {
            return Ok(());
        }
        // RFC 9000 §5.1.2: bound the retirements owed, so a peer cannot make us track them without end.
        if self.retire_cids.len() as u64 >= self.retire_owed_limit() {
            return Err(TransportError::connection_id_limit_error(
                "too many connection IDs to retire",
            ));
        }
        self.retire_cids.push(seq);
        Ok(())
    }

    /// A client's Version Negotiation (RFC 9000 §6.2).
    fn handle_version_negotiation(&mut self, header: &ProtectedHeader, packet: &[u8]) {
        // RFC 9000 §6.2: a client discards Version Negotiation once it has processed any other packet
        // from the server, a Retry included.
        if self.side.is_server()
            || self.peer_handshake_cid.is_some()
            || self.retry_scid.is_some()
            || self.stats.packets_received > 0
        {
            return;
        }
        // RFC 9000 §17.2.1: the server echoes both connection IDs of the client's Initial; one that
        // does not was not made by anyone who saw it (routing only checked the DCID, and not at all for
        // a zero-length one).
        if header.dcid() != &self.local_cid || header.scid() != Some(&self.original_dcid) {
            return;
        }
        // RFC 9000 §6.2: a Version Negotiation listing the version in use is ignored.
        if header.versions(packet).any(|v| v == self.version) {
            return;
        }
        self.events.push_back(Event::ConnectionLost {
            reason: ConnectionError::VersionMismatch,
        });
        self.state = State::Drained;
        self.drop_early();
    }

    /// A client follows a Retry (RFC 9000 §17.2.5.2, RFC 9001 §5.8).
    fn handle_retry(&mut self, header: &ProtectedHeader, packet: &[u8]) -> Result<(), Dropped> {
        if self.side.is_server() || self.peer_handshake_cid.is_some() || self.retry_scid.is_some() {
            return Err(Dropped);
        }
        // RFC 9000 §5.2.1: a packet of another version than the connection's is discarded, a Retry too
        // (its integrity tag would be checked with the wrong version's key).
        if header.version() != Some(self.version) {
            return Err(Dropped);
        }
        let token = header.token(packet);
        let scid = *header.scid().ok_or(Dropped)?;
        // RFC 9000 §17.2.5.2: a Retry whose SCID equals our first DCID is discarded.
        if scid == self.original_dcid {
            return Err(Dropped);
        }
        // A Retry with an empty token, or one that fails its integrity check, is discarded; so is one
        // whose token would leave no room for the ClientHello in a 1200-byte Initial (anyone who saw
        // the first Initial can make a Retry, and the client could then send nothing).
        if token.is_empty()
            || token.len() > super::MAX_CLIENT_TOKEN
            || !verify_retry_tag(self.version, &self.original_dcid, packet)
        {
            return Err(Dropped);
        }
        let keys = connection_initial_keys(self.version, &scid, self.side).map_err(|_| Dropped)?;
        self.remote_cid = scid;
        self.retry_scid = Some(scid);
        self.token = Bytes::copy_from_slice(token);
        let s = &mut self.spaces[SpaceId::Initial.index()];
        s.keys = Some(keys);
        // The ClientHello goes again, in new Initial packets whose numbers continue (§17.2.5.3).
        s.crypto_send.requeue_unacked();
        // RFC 9002 §6.3: congestion control and loss recovery start again; the Initial packets sent so
        // far are not lost (the Retry answered them), and would otherwise be declared so later.
        self.recovery.on_retry();
        self.cc = new_controller(&self.config, self.path.mtu);
        #[cfg(feature = "qlog")]
        self.qlog.set_recovery(false);
        Ok(())
    }
}

impl Connection {
    /// The error for a frame that failed to decode: FRAME_ENCODING_ERROR (RFC 9000 §12.4, §19), except
    /// for frames whose mere receipt is a PROTOCOL_VIOLATION, malformed or not: NEW_TOKEN at a server
    /// (§19.7; the FRAME_ENCODING_ERROR for an empty token is the client's rule), and DATAGRAM when we
    /// did not announce max_datagram_frame_size (RFC 9221 §3): no receive buffer, or one too small for
    /// any datagram, which announces nothing either.
    fn frame_decode_error(&self, e: FrameError) -> TransportError {
        if e.frame_type == ty::NEW_TOKEN && self.side.is_server() {
            return TransportError::protocol_violation("NEW_TOKEN from a client").with_frame(e.frame_type);
        }
        if [ty::DATAGRAM, ty::DATAGRAM_LEN].contains(&e.frame_type)
            && max_datagram_frame_size(&self.config).is_none()
        {
            return TransportError::protocol_violation("DATAGRAM frames not negotiated")
                .with_frame(e.frame_type);
        }
        TransportError::from(e)
    }
}

/// RFC 9000 §12.4: a frame of type `ty` in a packet type that does not permit it.
fn not_allowed_in_packet_type(ty: u64) -> TransportError {
    TransportError::protocol_violation("frame not allowed in this packet type").with_frame(ty)
}

/// The parts of a connection that a newly acknowledged packet updates, besides loss recovery and
/// congestion control: borrowed apart from the loss detector, which holds the packet's record meanwhile.
struct Acked<'a> {
    space: SpaceId,
    spaces: &'a mut Spaces,
    streams: &'a mut Streams,
    one_rtt: &'a mut Option<OneRttKeys>,
    mtud: &'a mut MtuDiscovery,
    handshake_done_pending: &'a mut bool,
    handshake_done_acked: &'a mut bool,
    /// A path MTU the acknowledgement of a probe confirmed, to apply once the ACK is processed.
    new_mtu: Option<u16>,
    /// When the ACK arrived.
    now: Instant,
}

impl Acked<'_> {
    /// Packet `pn`, of `size` bytes, which carried `data`, was acknowledged.
    fn packet(&mut self, pn: u64, size: u16, data: &SentFrames) {
        let s = &mut self.spaces[self.space.index()];
        if let Some(largest) = data.ack {
            s.received.on_ack_of_ack(largest);
        }
        if let Some(rare) = &data.rare {
            for &(offset, len) in rare.crypto.iter() {
                s.crypto_send.on_acked(offset, len);
            }
            if rare.handshake_done {
                *self.handshake_done_pending = false;
                *self.handshake_done_acked = true;
            }
        }
        if !data.streams.is_empty() {
            self.streams.on_acked(&data.streams);
        }
        if self.space == SpaceId::Data {
            if let Some(keys) = self.one_rtt.as_mut() {
                keys.on_acked(pn, self.now);
            }
            match self.mtud.on_acked(pn) {
                Some(size) => self.new_mtu = Some(size),
                None => self.mtud.on_packet_acked(pn, size),
            }
        }
    }
}

/// The server's Initial keys for `dcid` (RFC 9001 §5.2), if the first packet of `datagram` is an Initial
/// that authenticates with them. A server checks this before creating any state for a new connection,
/// so that datagrams which merely look like Initials cost nothing but this check; the connection then
/// starts with these keys.
pub(crate) fn initial_authenticates(version: u32, dcid: &[u8], datagram: &[u8]) -> Option<Keys> {
    let header = ProtectedHeader::decode(datagram, 0).ok()?;
    if header.long_type() != Some(LongType::Initial) {
        return None;
    }
    let pn_offset = header.pn_offset()?;
    let packet = datagram.get(..header.len())?;
    let keys = connection_initial_keys(version, dcid, crate::Side::Server).ok()?;
    let mut packet = packet.to_vec();
    keys.remote.header.unprotect(pn_offset, &mut packet).ok()?;
    let plain = header.finish(&packet).ok()?;
    let pn = plain.pn.expand(None);
    let len = keys.remote.packet.open(pn, &mut packet, plain.header_len).ok()?;
    // RFC 9000 §7, §17.2.2: a client's first Initial carries the start of its ClientHello in a CRYPTO
    // frame. One without (a client that already gave up, whose CONNECTION_CLOSE in an Initial answers
    // whatever reaches it) starts nothing: a Retry or a refusal in answer would start a ping-pong with
    // it, multiplied by every duplicate on the way.
    let payload = packet.get(plain.header_len..plain.header_len + len)?;
    let mut r = crate::wire::Reader::new(payload);
    while !r.is_empty() {
        match crate::wire::frame::Frame::decode(&mut r) {
            Ok(crate::wire::frame::Frame::Crypto(_)) => return Some(keys),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(any(test, fuzzing))]
impl Connection {
    /// Test hook: processes `frames` as if they arrived in an authenticated packet of `space`, so tests
    /// can play a misbehaving peer without forging packet protection.
    #[cfg(test)]
    pub(crate) fn inject_frames_in(&mut self, now: Instant, space: SpaceId, frames: &[Frame]) {
        let mut buf = Vec::new();
        for f in frames {
            f.encode(&mut buf);
        }
        self.inject_payload_in(now, space, Bytes::from(buf));
    }

    /// Test and fuzzing hook: processes `payload` (arbitrary bytes) as the decrypted payload of an
    /// authenticated 1-RTT packet from the peer.
    /// Like a real packet, it is ignored unless the connection is open and has 1-RTT keys.
    pub(crate) fn inject_payload(&mut self, now: Instant, payload: Bytes) {
        self.inject_payload_in(now, SpaceId::Data, payload);
    }

    /// As [`inject_payload`](Self::inject_payload), for a packet of `space` sent to our handshake ID.
    fn inject_payload_in(&mut self, now: Instant, space: SpaceId, mut payload: Bytes) {
        if !matches!(self.state, State::Handshake | State::Established) || self.one_rtt.is_none() {
            return;
        }
        let dcid = self.local_cid;
        let len = payload.len();
        if let Err(e) = self.process_frames(now, space, &mut payload, (&dcid, len)) {
            self.close_with_error(now, e);
        }
        // A datagram of its own: its batch is done.
        self.end_batch();
    }
}
