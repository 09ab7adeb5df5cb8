//! Packet assembly: which spaces have something to send, coalescing them into datagrams, padding,
//! the anti-amplification limit, protection, and GSO batches.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use tinyvec::TinyVec;

use super::connection::{Building, Connection, State};
use super::recovery::SentPacket;
use super::spaces::SentFrames;
use super::SpaceId;
use crate::crypto::TAG_LEN;
use crate::datagram::{EcnCodepoint, Transmit};
use crate::wire::frame::{CloseCode, ConnectionClose, CryptoFrame, Datagram, Frame};
use crate::wire::header::Header;
use crate::wire::packet_number::TruncatedPn;
use crate::wire::{TransportError, TransportErrorCode, VarInt};

/// Packet-number skips (optimistic ACK defence) come on average every half of this many packets, once
/// the period has doubled up to it from [`FIRST_PN_SKIP_PERIOD`].
const MAX_PN_SKIP_PERIOD: u64 = 1 << 16;
/// The first packet-number skip comes within this many 1-RTT packets.
pub(crate) const FIRST_PN_SKIP_PERIOD: u64 = 64;

/// The fewest bytes of frames a packet is built for: with less room it is not worth sending.
const LEAST_FRAMES: usize = 8;

/// RFC 9000 §14.1: datagrams carrying Initial packets are at least this large.
pub(crate) const MIN_INITIAL_DATAGRAM: usize = 1200;

/// An ACK frame of one range surely fits this: the type, three 8-byte varints and a range count, and
/// three 8-byte ECN counts.
const MAX_ONE_RANGE_ACK: usize = 1 + 8 + 8 + 1 + 8 + 3 * 8;

/// The largest long-header packet we build: its Length field, 2 bytes wide, counts up to 2^14 - 1
/// (RFC 9000 §16, §17.2); the header before it only makes this a bound with room to spare.
const MAX_LONG_HEADER_PACKET: usize = (1 << 14) - 1;

/// Packet number 2^62 - 1, at which a sender must stop (RFC 9000 §12.3).
const MAX_PACKET_NUMBER: u64 = (1 << 62) - 1;

/// Whether a space's packets need their datagram padded.
#[derive(Debug, Clone, Copy)]
struct Built {
    ack_eliciting: bool,
}

impl Connection {
    /// Moves the 1-RTT keys to the next phase (see `OneRttKeys::rotate`): `received` is the peer's packet
    /// that opened with the next key and when the previous key goes, `None` for our own update. qlog
    /// records the new generation, unless the session could not hand out the next keys and the phase
    /// stayed as it was.
    #[cfg_attr(not(feature = "qlog"), allow(unused_variables))]
    pub(super) fn rotate_1rtt_keys(&mut self, now: Instant, received: Option<(u64, Instant)>) {
        let Some(keys) = &mut self.one_rtt else { return };
        let before = keys.updates;
        keys.rotate(&mut *self.session, received);
        #[cfg(feature = "qlog")]
        if keys.updates != before {
            let trigger = if received.is_some() {
                "remote_update"
            } else {
                "local_update"
            };
            self.qlog
                .key_updated(now, crate::qlog::KeyLevel::OneRtt, Some(keys.updates), trigger);
        }
    }

    /// Builds the next datagram(s) into `buf`.
    pub(crate) fn transmit(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        max_segments: usize,
    ) -> Option<Transmit> {
        buf.clear();
        // Special datagrams (challenges to other paths, answers to other addresses, MTU probes, whose
        // loss says nothing of marks) go unmarked; ordinary ones as the path's ECN state says, below.
        self.marking = false;
        if self.hold || matches!(self.state, State::Draining { .. } | State::Drained) {
            return None;
        }
        self.maybe_start_key_update(now);
        // RFC 9000 §12.3: at packet number 2^62 - 1 the connection ends without another packet.
        if self.recovery.next_packet_number(SpaceId::Data) >= MAX_PACKET_NUMBER {
            self.close_silently(now);
            return None;
        }
        if self.is_closed() && !self.close.as_ref().is_some_and(|c| c.pending) {
            return None;
        }
        // RFC 9000 §9.3.3: after the peer moved, the path it left is challenged, in a datagram of its
        // own (not counted on the new path, whose anti-amplification limit it does not touch).
        if let Some(t) = self.send_old_path_challenge(now, buf) {
            return Some(t);
        }
        // RFC 9000 §8.2.2: a PATH_RESPONSE owed to another address goes there, alone.
        if self.off_path_response.is_some() {
            if let Some(t) = self.send_off_path_response(now, buf) {
                return Some(t);
            }
        }
        // RFC 9000 §14.3: a path MTU probe goes alone, in a datagram of its own size.
        if let Some(size) = self.mtu_probe_due(now) {
            let size = usize::from(size);
            self.building = Building::MtuProbe;
            let built = self.build_packet(now, SpaceId::Data, buf, 0, size, Some(size), true);
            self.building = Building::Ordinary;
            if built.is_some() {
                self.count_datagram(buf.len());
                return Some(self.transmit_of(buf.len(), None));
            }
        }
        let mtu = usize::from(self.path.mtu);
        let mut segment: Option<usize> = None;
        let mut count = 0;
        // A CONNECTION_CLOSE goes alone, and unpadded in an Initial packet (it is not ack-eliciting, RFC
        // 9000 §14.1), so it fits in less than a full datagram.
        let closing = self.close.as_ref().is_some_and(|c| c.pending);
        // RFC 9000 §13.4.2: one codepoint for the whole transmit (its datagrams share one send).
        self.marking = self.ecn.marking();
        // Whether the transmit ended full rather than for want of something to send, the window or pacing.
        let mut full = false;
        loop {
            // One UDP send carries at most 65,507 bytes (IPv4's limit, the lower), GSO or not: a batch
            // that grew beyond would fail whole with EMSGSIZE in a caller's loop that hands it to the
            // socket as it is.
            // RFC 9000 §13.4.2: a path's testing period marks its first packets only; the codepoint is
            // the whole transmit's, so it ends where the testing does (the rest go in one unmarked).
            if count >= max_segments.max(1)
                || segment.is_some_and(|s| buf.len() + s > crate::datagram::MAX_TRANSMIT_SIZE)
                || (self.marking && !self.ecn.marking())
            {
                full = true;
                break;
            }
            let allowance = usize::try_from(self.path.send_allowance()).unwrap_or(usize::MAX);
            // RFC 9000 §8.1: before the client's address is validated, send at most three times what it
            // sent us (`limit` below). A datagram with an Initial that allowance cannot bring to 1200
            // bytes (§14.1) is not built then, unless it carries the close; one with Handshake and
            // 1-RTT packets only is: the tail of a flight that did not fit the full datagrams before
            // it would otherwise wait a round trip for the client's acknowledgement.
            if !self.path.validated
                && allowance < MIN_INITIAL_DATAGRAM
                && !self.handshake_complete
                && !closing
                && self.space_wants(SpaceId::Initial, now)
            {
                break;
            }
            let limit = segment.unwrap_or(mtu).min(allowance);
            self.blocked = self.congestion_blocked(now, mtu as u64);
            let start = buf.len();
            let (size, long) = self.build_datagram(now, buf, start, limit);
            if size == 0 {
                break;
            }
            count += 1;
            self.count_datagram(size);
            match segment {
                None => segment = Some(size),
                Some(s) if size < s => break,
                Some(_) => {}
            }
            // Handshake datagrams go one at a time; only full 1-RTT datagrams are batched for GSO. A
            // close goes once (RFC 9000 §10.2.1), even when its reason filled the datagram: `pending` is
            // only cleared after the loop, and every further segment would carry it again.
            if long || closing || segment.is_some_and(|s| s < mtu) {
                break;
            }
        }
        // RFC 9002 §7.8: the window only grows while the sender uses it; when it stopped for lack of data
        // (or flow control) rather than for the window or pacing, the sender is application-limited. A
        // transmit that ended full (`max_segments` datagrams, one UDP send's bytes, or the end of an ECN
        // testing period) did not ask the window: the sender is limited by it only if it is full now.
        if full && !self.window_limited {
            let in_flight = self.recovery.path_bytes_in_flight();
            self.window_limited = in_flight > 0 && in_flight + mtu as u64 > self.cc.window();
        }
        self.app_limited = !self.window_limited;
        self.blocked = false;
        self.window_limited = false;
        if self.discard_initial_after_send {
            // RFC 9001 §4.9.1: a client discards Initial keys when it first sends a Handshake packet.
            self.discard_initial_after_send = false;
            self.discard_space(SpaceId::Initial, now);
        }
        if let Some(close) = self.close.as_mut().filter(|c| c.written) {
            close.pending = false;
            close.written = false;
        }
        if count == 0 {
            if self.app_limited {
                // Nothing more to send (not merely held back by pacing): the sent-packet storage of a
                // flight acknowledged in full is not needed again soon.
                self.recovery.release_idle_storage();
            }
            return None;
        }
        Some(self.transmit_of(buf.len(), if count > 1 { segment } else { None }))
    }

    /// The PATH_CHALLENGE to the path the peer left, if one is due: PATH_CHALLENGE (with a PATH_RESPONSE
    /// still owed to that path, RFC 9000 §8.2.2) and PADDING to 1200 bytes (RFC 9000 §8.2.1; the old path
    /// was validated, so no limit applies), to the old address.
    fn send_old_path_challenge(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if self.is_closed() || self.one_rtt.is_none() {
            return None;
        }
        let c = self.old_path_challenge_due()?;
        let (remote, local_ip) = (c.remote, c.local_ip);
        self.building = Building::OldPathChallenge {
            dcid: c.dcid,
            data: c.data,
            response: c.response,
        };
        let built = self.build_packet(
            now,
            SpaceId::Data,
            buf,
            0,
            MIN_INITIAL_DATAGRAM,
            Some(MIN_INITIAL_DATAGRAM),
            true,
        );
        self.building = Building::Ordinary;
        built?;
        if let Some(c) = self.path_validation.as_mut().and_then(|v| v.old_path.as_mut()) {
            c.pending = false;
        }
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        Some(Transmit {
            destination: remote,
            src_ip: local_ip,
            ecn: None,
            size: buf.len(),
            segment_size: None,
        })
    }

    /// A 1-RTT datagram of this size surely has room for a packet with a due ACK: the first byte, the
    /// peer's connection ID, a 4-byte packet number, an ACK frame of one range and the AEAD tag.
    pub(crate) fn min_ack_datagram(&self) -> usize {
        1 + self.remote_cid.len() + 4 + MAX_ONE_RANGE_ACK + TAG_LEN
    }

    /// The PATH_RESPONSE owed to an address other than the current path's, in a datagram of its own,
    /// expanded to 1200 bytes within that address's anti-amplification allowance (RFC 9000 §8.2.2).
    /// Sent once, whatever comes of it (§8.2.2 allows no second answer to one challenge).
    #[cold]
    fn send_off_path_response(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let r = self.off_path_response.take()?;
        if let Some(seq) = r.spare {
            self.retire_spare(seq);
        }
        if self.is_closed() || self.one_rtt.is_none() {
            return None;
        }
        self.building = Building::OffPathResponse {
            dcid: r.dcid,
            data: r.data,
        };
        let built = self.build_packet(now, SpaceId::Data, buf, 0, r.size, Some(r.size), true);
        self.building = Building::Ordinary;
        built?;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        Some(Transmit {
            destination: r.remote,
            src_ip: r.local_ip,
            ecn: None,
            size: buf.len(),
            segment_size: None,
        })
    }

    /// Counts a datagram of `size` bytes as sent (path and statistics).
    fn count_datagram(&mut self, size: usize) {
        self.path.bytes_sent += size as u64;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += size as u64;
    }

    /// The transmit of `size` bytes to the current path, in segments of `segment_size` if several.
    fn transmit_of(&self, size: usize, segment_size: Option<usize>) -> Transmit {
        Transmit {
            destination: self.path.remote,
            src_ip: self.path.local_ip,
            ecn: self.marking.then_some(EcnCodepoint::Ect0),
            size,
            segment_size,
        }
    }

    /// The size of the path MTU probe to send now, if one is due and the congestion window has room for
    /// it (probes are in flight like any ack-eliciting packet). Only on a validated, settled path of an
    /// established connection.
    fn mtu_probe_due(&mut self, now: Instant) -> Option<u16> {
        if self.state != State::Established
            || !self.handshake_confirmed
            || !self.path.validated
            || self.path_validation.is_some()
            || self.one_rtt.is_none()
            || self.close.is_some()
            || self.spaces[SpaceId::Data.index()].probes > 0
        {
            return None;
        }
        let size = self.mtud.probe_size(now)?;
        if self.recovery.path_bytes_in_flight() + u64::from(size) > self.cc.window() {
            return None;
        }
        Some(size)
    }

    /// Whether we hold keys to send in `space`.
    fn can_send_in(&self, space: SpaceId) -> bool {
        match space {
            SpaceId::Data => self.one_rtt.is_some(),
            _ => self.spaces[space.index()].keys.is_some(),
        }
    }

    /// Whether `space` has something to send now.
    fn space_wants(&self, space: SpaceId, now: Instant) -> bool {
        if !self.can_send_in(space) {
            return false;
        }
        if self.is_closed() {
            return self.close.as_ref().is_some_and(|c| c.pending);
        }
        let s = &self.spaces[space.index()];
        let ack_due = s.received.wants_ack_now() || s.received.ack_deadline().is_some_and(|d| d <= now);
        if self.blocked && space == SpaceId::Data {
            // RFC 9002 §7.5: probes are not blocked by the congestion controller; ACKs are not
            // congestion controlled. Handshake data is not held back either: before the handshake is
            // confirmed no PTO is armed for application data (RFC 9002 §6.2.1), so 1-RTT packets whose
            // ACKs were lost could otherwise fill the window and block a lost client Finished forever.
            // Nor is our own path challenge (see `build_packet`).
            return ack_due || s.probes > 0 || self.challenge_pending();
        }
        ack_due || s.probes > 0 || self.has_frames_for(space)
    }

    /// Whether `space` has frames other than ACKs and probes waiting: what the congestion controller and
    /// the pacer hold back in the application space.
    fn has_frames_for(&self, space: SpaceId) -> bool {
        // Stream data first: it is what a busy connection nearly always has.
        let s = &self.spaces[space.index()];
        (space == SpaceId::Data
            && (self.streams.has_pending()
                || !self.datagrams.send.is_empty()
                || self.control_frames_pending()))
            || s.crypto_send.has_data()
            || s.ping_pending
    }

    /// Whether a frame of [`write_control_frames`](Self::write_control_frames) waits.
    #[inline(always)]
    fn control_frames_pending(&self) -> bool {
        self.handshake_done_pending
            || self.path_response.is_some()
            || self.path_validation.as_ref().is_some_and(|v| v.pending)
            || !self.local_cids.pending.is_empty()
            || self.new_tokens.has_pending(self.path.remote.ip())
            || !self.retire_cids.is_empty()
    }

    /// Builds one datagram of at most `limit` bytes at `buf[start..]`, coalescing a packet for each space
    /// with something to send (RFC 9000 §12.2). Returns its size and whether it has long headers.
    fn build_datagram(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        start: usize,
        limit: usize,
    ) -> (usize, bool) {
        // Once the handshake spaces are gone (nearly every datagram of a connection's life), only the
        // application space is asked.
        let handshake_over = self.spaces[SpaceId::Initial.index()].discarded
            && self.spaces[SpaceId::Handshake.index()].discarded;
        let wanted = if handshake_over {
            [false, false, self.space_wants(SpaceId::Data, now)]
        } else {
            SpaceId::ALL.map(|s| self.space_wants(s, now))
        };
        let Some(last) = SpaceId::ALL.into_iter().rev().find(|s| wanted[s.index()]) else {
            return (0, false);
        };
        let mut pad = self.side.is_client() && wanted[SpaceId::Initial.index()];
        // RFC 9000 §14.1: a datagram with an Initial may have to be padded to 1200 bytes, by the last
        // packet. The packets before it leave room for it: a Handshake packet filled with CRYPTO data
        // could otherwise leave a few bytes, too few for the last packet, and the datagram would go
        // out short.
        let reserve = if wanted[SpaceId::Initial.index()] && last != SpaceId::Initial {
            self.least_packet_len(last)
        } else {
            0
        };
        let mut long = false;
        for space in SpaceId::ALL.into_iter().filter(|s| wanted[s.index()]) {
            let used = buf.len() - start;
            let mut budget = limit.saturating_sub(used);
            if space != last {
                budget = budget.saturating_sub(reserve);
            }
            let pad_to = (space == last && (pad || (space == SpaceId::Initial && self.side.is_server())))
                .then_some(MIN_INITIAL_DATAGRAM);
            let Some(built) = self.build_packet(now, space, buf, start, budget, pad_to, pad) else {
                continue;
            };
            if space != SpaceId::Data {
                long = true;
            }
            // RFC 9000 §14.1: a server pads datagrams with ack-eliciting Initial packets too.
            if space == SpaceId::Initial && built.ack_eliciting {
                pad = true;
            }
        }
        (buf.len() - start, long)
    }

    /// The least room a packet of `space` is built in: its header with the longest packet number, a few
    /// bytes of frames and the AEAD tag (16 bytes for every QUIC cipher suite); see `build_packet`.
    fn least_packet_len(&self, space: SpaceId) -> usize {
        const TAG: usize = 16;
        let longest_pn = TruncatedPn::truncate(0, 4);
        self.packet_header(space).encoded_len(longest_pn) + TAG + LEAST_FRAMES
    }

    /// The header of the next packet of `space`.
    fn packet_header(&self, space: SpaceId) -> Header {
        match space {
            SpaceId::Initial => Header::Initial {
                version: self.version,
                dcid: self.remote_cid,
                scid: self.local_cid,
                token: if self.side.is_client() {
                    self.token.clone()
                } else {
                    Bytes::new()
                },
            },
            SpaceId::Handshake => Header::Handshake {
                version: self.version,
                dcid: self.remote_cid,
                scid: self.local_cid,
            },
            SpaceId::Data => Header::Short {
                spin: false,
                key_phase: self.one_rtt.as_ref().is_some_and(|k| k.phase),
                dcid: match self.building {
                    Building::OldPathChallenge { dcid, .. } | Building::OffPathResponse { dcid, .. } => dcid,
                    _ => self.remote_cid,
                },
            },
        }
    }

    /// Builds one packet of `space` into `buf` within `budget` bytes. `pad_to` asks for padding until the
    /// datagram (which starts at `datagram_start`) reaches that size, if `must_pad` or the packet turns
    /// out ack-eliciting in the Initial space.
    #[allow(clippy::too_many_arguments)]
    fn build_packet(
        &mut self,
        now: Instant,
        space: SpaceId,
        buf: &mut Vec<u8>,
        datagram_start: usize,
        budget: usize,
        pad_to: Option<usize>,
        must_pad: bool,
    ) -> Option<Built> {
        self.build_packet_with(now, space, buf, datagram_start, budget, pad_to, must_pad, true)
    }

    /// [`build_packet`](Self::build_packet); without an ACK frame unless `with_ack`.
    #[allow(clippy::too_many_arguments)]
    fn build_packet_with(
        &mut self,
        now: Instant,
        space: SpaceId,
        buf: &mut Vec<u8>,
        datagram_start: usize,
        budget: usize,
        pad_to: Option<usize>,
        must_pad: bool,
        with_ack: bool,
    ) -> Option<Built> {
        let closing = self.close.as_ref().is_some_and(|c| c.pending);
        let tag_len = match space {
            SpaceId::Data => {
                let keys = self.one_rtt.as_ref()?;
                // RFC 9001 §6.6: no key protects more packets than its confidentiality limit; the last
                // one is kept for the CONNECTION_CLOSE that reaching the limit sends.
                if !keys.may_seal(closing) {
                    return None;
                }
                keys.local.tag_len()
            }
            _ => self.spaces[space.index()].keys.as_ref()?.local.packet.tag_len(),
        };
        if space == SpaceId::Data {
            self.maybe_skip_packet_number();
        }
        let pn = self.recovery.next_packet_number(space);
        if pn >= MAX_PACKET_NUMBER {
            // RFC 9000 §12.3: the connection closes instead (at the next transmit).
            return None;
        }
        let tpn = TruncatedPn::encode_for(pn, self.recovery.largest_acked(space));
        let header = self.packet_header(space);
        let header_len = header.encoded_len(tpn);
        // RFC 9000 §17.2: the Length field of our long headers is 2 bytes wide, so a long-header packet
        // stays below 2^14 bytes, even when the MTU (configured up to 65527) is larger: `set_length`
        // could not describe it, and the packet would go out unsealed.
        let budget = match space {
            SpaceId::Data => budget,
            _ => budget.min(MAX_LONG_HEADER_PACKET),
        };
        // Room for the header, a few bytes of frames and the tag; else the packet is not worth it.
        if budget < header_len + tag_len + LEAST_FRAMES {
            return None;
        }
        let packet_start = buf.len();
        let payload_end = packet_start + budget - tag_len;
        let enc = header.encode(tpn, buf);
        let mut sent = SentFrames::EMPTY;
        let mut ack_eliciting = false;
        // RFC 9000 §8.2.1, §8.2.2: datagrams with PATH_CHALLENGE or PATH_RESPONSE are expanded to 1200
        // bytes when the anti-amplification limit (which the budget already respects) allows it.
        let mut path_probe = false;

        // ACK first: it is small and keeps the peer's recovery going (RFC 9000 §13.2).
        // RFC 9000 §19.3: scaled by our announced exponent in every space (the peer decodes with it; in
        // the Initial space, before it has our parameters, it assumes 3, and ignores the delay anyway,
        // RFC 9002 §5.3).
        let ack_exponent = self.config.ack_delay_exponent();
        // A path MTU probe carries PING and PADDING only: nothing to send again if it is lost, which is
        // expected of probes too large for the path (and no ACK, which would be lost with it). The
        // challenge to an old path carries its PATH_CHALLENGE, and a PATH_RESPONSE owed to that path; an
        // answer to another address (`OffPathResponse`) its PATH_RESPONSE only, with PADDING.
        let special = space == SpaceId::Data && !matches!(self.building, Building::Ordinary);
        let mtu_probe = special && matches!(self.building, Building::MtuProbe);
        // A packet carrying CONNECTION_CLOSE (`closing`) carries nothing else: an ACK could leave too little
        // room for the close, and nothing more will be sent to need it.
        let s = &mut self.spaces[space.index()];
        // A 1-RTT probe (RFC 9002 §6.2.4) carries an ACK frame even when no packet arrived since the
        // last one: that one may be lost with what the probe resends, and a peer whose packets stay
        // unacknowledged may have nothing left to send that would earn it another (its window full of
        // them, and no PTO of its own armed before the handshake is confirmed, §6.2.1; quinn-proto 0.11
        // then holds even its ACKs). Not in the Initial and Handshake spaces: there a peer may take an
        // RTT sample without subtracting the ACK delay (§5.3 lets it for Initial packets; quinn-proto
        // 0.11 does so for Handshake packets too), and an ACK sent again in our probe a PTO after what
        // it acknowledges made that PTO the peer's first sample: quinn-proto's was a second on a 20 ms
        // path (tests/sim_matrix.rs `loss20_rtt20` seed 173, quinn-proto client: its PTO of seconds
        // outlasted the idle timeout). There the CRYPTO data a probe resends answers the peer anyway.
        let ack_owed = s.received.ack_owed();
        let ack_wanted = s.received.has_unacked()
            || (s.probes > 0 && space == SpaceId::Data && s.received.has_reportable());
        if with_ack && ack_wanted && !special && !closing {
            let room = payload_end.saturating_sub(buf.len());
            if let Some(ack) = s.received.build_ack_within(now, ack_exponent, room) {
                ack.encode(buf);
                // Recorded as sent once the packet is sure to go (below).
                sent.ack = Some(ack.largest());
            }
        }

        let data_allowed = space != SpaceId::Data || !self.blocked || self.spaces[space.index()].probes > 0;
        if let (true, Building::OldPathChallenge { data, response, .. }) = (special, self.building) {
            Frame::PathChallenge(data).encode(buf);
            if let Some(response) = response {
                Frame::PathResponse(response).encode(buf);
            }
            ack_eliciting = true;
            path_probe = true;
        } else if let (true, Building::OffPathResponse { data, .. }) = (special, self.building) {
            Frame::PathResponse(data).encode(buf);
            ack_eliciting = true;
            path_probe = true;
        } else if mtu_probe {
            Frame::Ping.encode(buf);
            ack_eliciting = true;
        } else if let Some(close) = self.close.as_ref().filter(|c| c.pending) {
            // Without room even for the close without its reason, the packet is not built.
            if let Some(frame) = close_frame_for(space, &close.frame, payload_end.saturating_sub(buf.len())) {
                Frame::Close(frame).encode(buf);
                if let Some(c) = self.close.as_mut() {
                    c.written = true;
                }
            }
        } else if !data_allowed && space == SpaceId::Data && self.challenge_pending() {
            // A deliberate, bounded departure from RFC 9002 §7: our PATH_CHALLENGE goes when the
            // congestion window (or pacing) holds everything else back. After a NAT rebinding the window
            // stays the old port's (RFC 9000 §9.4), full of packets that may never be acknowledged there;
            // held back, the challenge waited until validation failed (§8.2.4), with no PTO to free the
            // window (none is armed at the new address's amplification limit). One packet per
            // validation attempt or lost challenge; a PATH_RESPONSE owed rides along but never goes
            // alone beyond the window, or a peer's PATH_CHALLENGE flood would be answered without limit.
            path_probe = self.write_path_frames(buf, payload_end, &mut sent, &mut ack_eliciting);
        } else if data_allowed {
            if space == SpaceId::Data {
                // Nearly every packet has none of these: checked inline before calling out.
                if self.control_frames_pending() {
                    path_probe = self.write_control_frames(buf, payload_end, &mut sent, &mut ack_eliciting);
                }
                let rtt = self.recovery.rtt().smoothed();
                if self.datagrams.send.is_empty() {
                    self.streams
                        .write_frames(now, rtt, buf, payload_end, &mut sent.streams);
                } else {
                    ack_eliciting |= self.write_datagrams_and_streams(now, rtt, buf, payload_end, &mut sent);
                }
                if !sent.streams.is_empty() {
                    ack_eliciting = true;
                }
            }
            let s = &mut self.spaces[space.index()];
            let mut wrote_crypto = false;
            loop {
                let room = payload_end.saturating_sub(buf.len());
                // Size the frame for a 4-byte offset: handshake flights never reach 2^30 bytes.
                let Some(max) = CryptoFrame::max_data_len((1 << 30) - 1, room) else {
                    break;
                };
                let Some((offset, data)) = s.crypto_send.next_chunk(max) else {
                    break;
                };
                buf.put_u8(0x06);
                VarInt::saturating(offset).encode(buf);
                VarInt::saturating(data.len() as u64).encode(buf);
                buf.put_slice(data);
                sent.rare_mut().crypto.push((offset, data.len() as u32));
                ack_eliciting = true;
                wrote_crypto = true;
            }
            if (s.probes > 0 || s.ping_pending) && !ack_eliciting && buf.len() < payload_end {
                Frame::Ping.encode(buf);
                ack_eliciting = true;
            }
            // A PING that found no room (an ACK frame filled the packet) still waits: the packet may be
            // dropped as ACK-only and built again without the ACK frame, which needs to know.
            if ack_eliciting {
                s.ping_pending = false;
                s.probes = s.probes.saturating_sub(1);
            }
            // RFC 9002 §6.2.4: a second Initial probe carries the CRYPTO data again when the first took
            // all that was unacknowledged (a client's ClientHello, say), rather than a PING: a server with
            // no connection yet ignores an Initial without CRYPTO, and either probe may be the one lost.
            if space == SpaceId::Initial && wrote_crypto && s.probes > 0 && !s.crypto_send.has_data() {
                s.crypto_send.requeue_unacked();
            }
        }
        // RFC 9000 §14.1: the last packet of a datagram that holds an Initial carries the padding that
        // brings the datagram to 1200 bytes. With no frames of its own (say, a DATAGRAM too large to fit
        // beside the handshake packets), it still goes, with PADDING only: the packets before it are
        // already sealed, and the datagram would otherwise leave short.
        let completes_datagram = must_pad && pad_to.is_some() && packet_start > datagram_start;
        if buf.len() == packet_start + enc.header_len && !completes_datagram {
            buf.truncate(packet_start);
            return None;
        }
        // RFC 9000 §13.2.1: "An endpoint MUST NOT send a non-ack-eliciting packet in response to a
        // non-ack-eliciting packet". A packet built because something seemed to wait (a stream queued for
        // data that its acknowledgement or the peer's limit took away since, say) and left with only its
        // ACK frame goes only when an acknowledgement is owed; else it is dropped before it is sealed,
        // and the ACK frame waits for the next packet. One that completes a padded datagram goes anyway.
        if sent.ack.is_some() && !ack_eliciting && !ack_owed && !completes_datagram && !must_pad {
            buf.truncate(packet_start);
            // What waits and did not fit beside the ACK frame goes without it: a DATAGRAM frame of
            // `max_datagram_size`, which fills a packet on its own, or anything beside an ACK frame of
            // many ranges. Else every packet would be built the same way and dropped, and it would wait
            // for the peer's next ack-eliciting packet. A probe too (RFC 9002 §6.2.4), whose PING found
            // no room beside an ACK frame that filled the packet: it must go, and goes without it.
            if self.has_frames_for(space) || self.spaces[space.index()].probes > 0 {
                return self.build_packet_with(
                    now,
                    space,
                    buf,
                    datagram_start,
                    budget,
                    pad_to,
                    must_pad,
                    false,
                );
            }
            return None;
        }
        if let Some(largest) = sent.ack {
            self.spaces[space.index()].received.on_ack_sent(largest, pn);
            if space == SpaceId::Data {
                if let Some(keys) = &mut self.one_rtt {
                    keys.on_ack_sent(largest);
                }
            }
        }
        #[cfg(test)]
        if sent.ack.is_some() && !ack_eliciting && !ack_owed {
            unprompted::count();
        }

        // Padding: enough payload for the header protection sample (RFC 9001 §5.4.2), and the datagram
        // size an Initial needs (RFC 9000 §14.1). RFC 9000 §10.3: every packet SHOULD be at least 22 bytes
        // longer than our connection IDs, so that a stateless reset the peer sends in answer (smaller
        // than what it answers) can still look like a packet to us; only a peer with shorter IDs than
        // ours makes packets that small.
        let packet_floor = (packet_start + enc.pn_offset + 4)
            .max(packet_start + (22 + self.local_cid.len()).saturating_sub(tag_len));
        let mut datagram_floor = 0;
        let pad_datagram = must_pad || (space == SpaceId::Initial && ack_eliciting);
        // RFC 9000 §8.2.1, §8.2.2: a datagram with PATH_CHALLENGE or PATH_RESPONSE is expanded to 1200
        // bytes "unless the anti-amplification limit for the path does not permit sending a datagram of
        // this size" (the budget respects the limit). Then it is not padded at all: padding short of 1200
        // bytes validates no path MTU (a second, expanded challenge follows anyway), and it would spend
        // on one datagram the whole allowance of an unvalidated path (which a peer sending only small
        // PTO probes there after an outage raises by a few hundred bytes at most), leaving nothing for
        // the challenge's next attempts on its timer (§8.2.1: "MAY send multiple PATH_CHALLENGE frames
        // to guard against packet loss"; §9.4) until the peer's next probes, seconds later.
        if path_probe && payload_end + tag_len >= datagram_start + MIN_INITIAL_DATAGRAM {
            datagram_floor = datagram_start + MIN_INITIAL_DATAGRAM - tag_len;
        }
        if let Some(size) = pad_to.filter(|_| pad_datagram) {
            datagram_floor = datagram_floor.max(datagram_start + size - tag_len);
        }
        let target = packet_floor.max(datagram_floor).min(payload_end);
        // Only padding that fills a datagram puts a packet in flight (RFC 9002 §2, §7: a padded Initial
        // must count, or a client could send them beyond its window and the amplification limit). The
        // few bytes that bring a short packet to its floor do not: an ACK-only packet to a peer with
        // shorter connection IDs than ours would otherwise count in flight, take room in the window
        // until the peer happened to acknowledge it, and its loss would be a congestion event. A
        // deliberate reading of §2, whose definition counts any PADDING frame.
        let mut padded = buf.len() < datagram_floor.min(payload_end);
        buf.resize(target.max(buf.len()), 0);
        // Room for the AEAD tag. Every QUIC v1 and v2 AEAD has a 16-byte tag, which a fixed-size append
        // writes in place; `resize` would call `memset` for it once per packet.
        if tag_len == TAG_LEN {
            buf.extend_from_slice(&[0; TAG_LEN]);
        } else {
            buf.resize(buf.len() + tag_len, 0);
        }
        let packet_len = buf.len() - packet_start;
        #[cfg(feature = "qlog")]
        self.qlog.packet_sent(
            now,
            space,
            pn,
            packet_len,
            buf.get(packet_start + enc.header_len..buf.len() - tag_len),
        );
        let packet = buf.get_mut(packet_start..)?;
        enc.set_length(packet, packet_len).ok()?;
        let sealed = match space {
            SpaceId::Data => {
                let keys = self.one_rtt.as_mut()?;
                let r = keys
                    .local
                    .seal(pn, packet, enc.header_len)
                    .and_then(|()| keys.local_header.protect(enc.pn_offset, packet));
                keys.on_sent(pn);
                r
            }
            _ => {
                let keys = self.spaces[space.index()].keys.as_ref()?;
                keys.local
                    .packet
                    .seal(pn, packet, enc.header_len)
                    .and_then(|()| keys.local.header.protect(enc.pn_offset, packet))
            }
        };
        if sealed.is_err() {
            // Only a bug can get here (the buffer was sized for the tag and sample).
            buf.truncate(packet_start);
            return None;
        }
        // RFC 9000 §8.2.1: whether the path validation's challenge went in a datagram of 1200 bytes (the
        // anti-amplification limit may have kept it smaller), which validates the path MTU too.
        if path_probe && buf.len() - datagram_start >= MIN_INITIAL_DATAGRAM {
            let challenge = sent.rare.as_ref().and_then(|r| r.path_challenge);
            if let Some(v) = self
                .path_validation
                .as_mut()
                .filter(|v| challenge == Some(v.data))
            {
                v.expanded = true;
            }
        }
        // What was in flight before this packet (none: the sender was idle; CUBIC, RFC 9438 §5.8), read
        // only for a packet the controller hears of.
        let in_flight_before = if ack_eliciting || padded {
            self.recovery.path_bytes_in_flight()
        } else {
            0
        };
        // The challenge to a path the peer left (or an answer to another address) is sent once and
        // forgotten: not in flight on the current path, whose congestion control, RTT estimate and loss
        // detection it must not touch (RFC 9000 §9.4); the peer's acknowledgement of it is ignored, and
        // gives no RTT sample (not even as the largest acknowledged, as an ACK-only packet's would).
        if special && !mtu_probe {
            ack_eliciting = false;
            padded = false;
            self.recovery.on_packet_sent_elsewhere(space, pn);
        } else {
            self.recovery.on_packet_sent(
                space,
                pn,
                SentPacket {
                    time_sent: now,
                    size: u16::try_from(packet_len).unwrap_or(u16::MAX),
                    ack_eliciting,
                    in_flight: ack_eliciting || padded,
                    mtu_probe,
                    ecn_marked: self.marking,
                    data: sent,
                },
            );
        }
        self.stats.packets_sent += 1;
        if self.marking {
            self.ecn.on_marked_sent(space, ack_eliciting || padded);
        }
        if mtu_probe {
            self.mtud
                .on_probe_sent(pn, u16::try_from(packet_len).unwrap_or(u16::MAX));
            self.stats.mtu_probes_sent += 1;
        }
        if ack_eliciting || padded {
            self.cc.on_packet_sent(now, packet_len as u64, in_flight_before);
        }
        if ack_eliciting {
            // RFC 9002 §7.7: ACK-only packets are not paced.
            self.pacer.on_sent(now, packet_len as u64);
        }
        if ack_eliciting {
            self.last_ack_eliciting_sent = Some(now);
            if !mtu_probe {
                self.mtud.on_ack_eliciting_sent(now);
            }
            // RFC 9000 §10.1: the first ack-eliciting packet after a receive restarts the idle timer.
            if !self.ack_eliciting_since_receive {
                self.ack_eliciting_since_receive = true;
                self.reset_idle(now);
            }
        }
        if self.side.is_client() && space == SpaceId::Handshake {
            self.discard_initial_after_send = true;
        }
        Some(Built { ack_eliciting })
    }

    /// HANDSHAKE_DONE, PATH_CHALLENGE, PATH_RESPONSE, NEW_CONNECTION_ID, NEW_TOKEN and
    /// RETIRE_CONNECTION_ID, as room allows. Returns whether a PATH_CHALLENGE or PATH_RESPONSE went in.
    fn write_control_frames(
        &mut self,
        buf: &mut Vec<u8>,
        end: usize,
        sent: &mut SentFrames,
        ack_eliciting: &mut bool,
    ) -> bool {
        let mut path_probe = false;
        if self.handshake_done_pending && buf.len() < end {
            Frame::HandshakeDone.encode(buf);
            self.handshake_done_pending = false;
            sent.rare_mut().handshake_done = true;
            *ack_eliciting = true;
        }
        if self.path_frames_pending() {
            path_probe = self.write_path_frames(buf, end, sent, ack_eliciting);
        }
        if !self.local_cids.pending.is_empty() {
            let mut new_cids = TinyVec::new();
            self.write_new_cids(buf, end, &mut new_cids);
            if !new_cids.is_empty() {
                sent.rare_mut().new_cids.extend(new_cids);
                *ack_eliciting = true;
            }
        }
        if self.new_tokens.write(buf, end, sent, self.path.remote.ip()) {
            *ack_eliciting = true;
        }
        while let Some(&seq) = self.retire_cids.last() {
            let f = Frame::RetireConnectionId(seq);
            if buf.len() + f.encoded_len() > end {
                break;
            }
            f.encode(buf);
            self.retire_cids.pop();
            sent.rare_mut().retire_cids.push(seq);
            *ack_eliciting = true;
        }
        path_probe
    }

    /// A PATH_RESPONSE or PATH_CHALLENGE for the current path waits to be sent.
    fn path_frames_pending(&self) -> bool {
        self.path_response.is_some() || self.challenge_pending()
    }

    /// Our PATH_CHALLENGE for the current path waits to be sent.
    fn challenge_pending(&self) -> bool {
        self.path_validation.as_ref().is_some_and(|v| v.pending)
    }

    /// Datagrams and stream frames into a 1-RTT packet, taking turns to go first while both wait:
    /// datagrams first, unless the last packet that carried some left stream frames waiting. Small
    /// datagrams pack a packet to within a few bytes of its end, and an application offering them faster
    /// than the window takes kept every stream (and its flow control frames) to those few bytes. Returns
    /// whether a datagram was written (datagrams are never retransmitted, so they are not recorded: RFC
    /// 9221 §5). Out of line: most connections send no datagrams.
    #[inline(never)]
    fn write_datagrams_and_streams(
        &mut self,
        now: Instant,
        rtt: Duration,
        buf: &mut Vec<u8>,
        payload_end: usize,
        sent: &mut SentFrames,
    ) -> bool {
        let streams_first = self.datagrams.streams_next && self.streams.has_pending();
        if streams_first {
            self.streams
                .write_frames(now, rtt, buf, payload_end, &mut sent.streams);
        }
        let mut wrote_datagram = false;
        while !self.datagrams.send.is_empty() {
            let Some(data) = self.datagrams.pop_send_if(|d| {
                buf.len() + Frame::Datagram(Datagram { data: d.clone() }).encoded_len() <= payload_end
            }) else {
                break;
            };
            Frame::Datagram(Datagram { data }).encode(buf);
            wrote_datagram = true;
        }
        if !streams_first {
            self.streams
                .write_frames(now, rtt, buf, payload_end, &mut sent.streams);
        }
        self.datagrams.streams_next = !streams_first && wrote_datagram && self.streams.has_pending();
        wrote_datagram
    }

    /// PATH_RESPONSE and PATH_CHALLENGE for the current path, as room allows. Returns whether one went in.
    fn write_path_frames(
        &mut self,
        buf: &mut Vec<u8>,
        end: usize,
        sent: &mut SentFrames,
        ack_eliciting: &mut bool,
    ) -> bool {
        let mut path_probe = false;
        if let Some(data) = self.path_response {
            let f = Frame::PathResponse(data);
            if buf.len() + f.encoded_len() <= end {
                f.encode(buf);
                self.path_response = None;
                *ack_eliciting = true;
                path_probe = true;
            }
        }
        if let Some(v) = self.path_validation.as_mut().filter(|v| v.pending) {
            let f = Frame::PathChallenge(v.data);
            if buf.len() + f.encoded_len() <= end {
                f.encode(buf);
                v.pending = false;
                sent.rare_mut().path_challenge = Some(v.data);
                *ack_eliciting = true;
                path_probe = true;
            }
        }
        path_probe
    }

    /// Now and then, leaves a 1-RTT packet number unused, so that a peer acknowledging packets it never
    /// received (to make us send faster) acknowledges a number never sent and is caught: RFC 9000 §21.4,
    /// §13.1. The gaps are random, and grow, from tens to tens of thousands of packets.
    fn maybe_skip_packet_number(&mut self) {
        let pn = self.recovery.next_packet_number(SpaceId::Data);
        if pn < self.next_pn_skip {
            return;
        }
        self.recovery.skip_packet_number(SpaceId::Data, pn);
        self.pn_skip_period = (self.pn_skip_period * 2).min(MAX_PN_SKIP_PERIOD);
        self.next_pn_skip = pn + 1 + self.rng.below(self.pn_skip_period) + 1;
    }

    /// Whether the congestion window or pacing holds back new data now (RFC 9002 §7, §7.7); records when
    /// pacing allows the next packet.
    fn congestion_blocked(&mut self, now: Instant, mtu: u64) -> bool {
        let window = self.cc.window();
        // With nothing in flight one datagram may always go, even when the window is below it (a path MTU
        // raised by discovery leaves the window's bytes as they were, RFC 8899 §3): otherwise nothing
        // would ever be acknowledged to open the window again.
        // RFC 9000 §9.4: only what was sent on the current path counts against its window.
        let in_flight = self.recovery.path_bytes_in_flight();
        if in_flight > 0 && in_flight + mtu > window {
            self.window_limited = true;
            return true;
        }
        // With nothing to send, an empty pacing bucket holds nothing back: the sender is application-
        // limited (RFC 9002 §7.8), and a pacing deadline would wake the caller for nothing.
        if !self.has_frames_for(SpaceId::Data) {
            self.pacing_until = None;
            self.window_limited = false;
            return false;
        }
        let srtt = self.recovery.rtt().smoothed();
        self.pacing_until = self.pacer.delay(now, mtu, self.path.mtu, window, srtt);
        // RFC 9002 §7.8: pacing delay does not make the sender application-limited if it would have used
        // the window without it. With less than half of the window in flight it would not have: what is
        // left to send is held by flow control or is short (as Linux's tcp_is_cwnd_limited judges), and
        // the window must not grow on its acknowledgements.
        self.window_limited = self.pacing_until.is_some() && in_flight.saturating_mul(2) >= window;
        self.pacing_until.is_some()
    }

    /// Starts a key update when asked or when the confidentiality limit nears (RFC 9001 §6.1, §6.6).
    fn maybe_start_key_update(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        let Some(keys) = &self.one_rtt else { return };
        let limit = keys.seal_limit();
        let interval = self.config.key_update_interval.unwrap_or(u64::MAX);
        // RFC 9001 §6.1: no key update before the handshake is confirmed; the limit below still applies.
        let due = self.handshake_confirmed
            && (self.key_update_requested
                || keys.sealed_in_phase >= interval
                || keys.sealed_in_phase >= limit - limit / 8);
        // RFC 9001 §6.5: three PTOs between the acknowledgement of one update and the next update.
        let wait = if due && keys.updates > 0 {
            self.pto().saturating_mul(3)
        } else {
            Duration::ZERO
        };
        let Some(keys) = &mut self.one_rtt else { return };
        if due && keys.can_update(now, wait) {
            tracing::debug!(side = ?self.side, "starting a key update");
            self.rotate_1rtt_keys(now, None);
            self.key_update_requested = false;
            // Let the peer see the new phase soon, and get an acknowledgement for the next update.
            self.spaces[SpaceId::Data.index()].ping_pending = true;
        } else if keys.sealed_in_phase >= limit.saturating_sub(1) {
            // RFC 9001 §6.6: no packet may be sealed past the limit; the last one carries the close. This
            // holds before confirmation too, when no update is possible and the endpoint must stop.
            self.close_with_error(
                now,
                TransportError::aead_limit_reached("confidentiality limit reached"),
            );
        }
    }
}

/// The CONNECTION_CLOSE to put in a packet of `space`, fitting `room` bytes. RFC 9000 §10.2.3: an
/// application close becomes a transport APPLICATION_ERROR without reason in Initial and Handshake
/// packets, since the application's code and reason are not for unauthenticated eyes.
fn close_frame_for(space: SpaceId, frame: &ConnectionClose, room: usize) -> Option<ConnectionClose> {
    let mut frame = match (space, frame.code) {
        (SpaceId::Initial | SpaceId::Handshake, CloseCode::Application(_)) => ConnectionClose {
            code: CloseCode::Transport {
                code: TransportErrorCode::APPLICATION_ERROR,
                frame_type: 0,
            },
            reason: Bytes::new(),
        },
        _ => frame.clone(),
    };
    // The frame without its reason (whose length takes one byte when empty), then as much of the reason
    // as fits with its length's own encoding.
    let fixed = Frame::Close(ConnectionClose {
        code: frame.code,
        reason: Bytes::new(),
    })
    .encoded_len()
        - 1;
    let mut max_reason = frame.reason.len().min(room.checked_sub(fixed + 1)?);
    while fixed + VarInt::size(max_reason as u64) + max_reason > room {
        max_reason -= 1;
    }
    frame
        .reason
        .truncate(ConnectionClose::reason_cut(&frame.reason, max_reason));
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_frame_fits_its_room_or_is_not_made() {
        let app = ConnectionClose {
            code: CloseCode::Application((1 << 62) - 1),
            reason: Bytes::from(vec![b'x'; 100]),
        };
        let transport = ConnectionClose {
            code: CloseCode::Transport {
                code: TransportErrorCode::PROTOCOL_VIOLATION,
                frame_type: 0x1e,
            },
            reason: Bytes::from(vec![b'y'; 100]),
        };
        for close in [&app, &transport] {
            let bare = Frame::Close(ConnectionClose {
                code: close.code,
                reason: Bytes::new(),
            })
            .encoded_len();
            for room in 0..200 {
                match close_frame_for(SpaceId::Data, close, room) {
                    None => assert!(room < bare, "room {room}: {bare} bytes would fit"),
                    Some(frame) => {
                        let len = Frame::Close(frame.clone()).encoded_len();
                        assert!(len <= room, "room {room}: {len} bytes");
                        // As much reason as fits: one byte more would not (or it is all there).
                        assert!(
                            frame.reason.len() == close.reason.len() || len + 1 >= room,
                            "room {room}: reason of {} in {len}",
                            frame.reason.len()
                        );
                    }
                }
            }
        }
        // RFC 9000 §10.2.3: an application close in an Initial or Handshake packet goes as
        // APPLICATION_ERROR, bare.
        for space in [SpaceId::Initial, SpaceId::Handshake] {
            let hs = close_frame_for(space, &app, 100).unwrap();
            assert_eq!(
                hs.code,
                CloseCode::Transport {
                    code: TransportErrorCode::APPLICATION_ERROR,
                    frame_type: 0
                },
                "{space:?}"
            );
            assert!(hs.reason.is_empty(), "{space:?}");
        }
    }

    /// RFC 9000 §19.19: a reason cut to fit its room ends on a character boundary when it is UTF-8,
    /// so that the peer reads a shorter reason rather than a broken one; other bytes are cut anywhere.
    #[test]
    fn a_reason_cut_to_fit_keeps_whole_utf8_characters() {
        let utf8 = ConnectionClose {
            code: CloseCode::Application(1),
            reason: Bytes::from(
                "h\u{e9}\u{e9}\u{20ac}\u{20ac}\u{1f600}\u{1f600}"
                    .as_bytes()
                    .to_vec(),
            ),
        };
        let bytes = ConnectionClose {
            code: CloseCode::Application(1),
            reason: Bytes::from(vec![0xe9; 40]),
        };
        let mut cut_short = 0;
        for room in 0..40 {
            if let Some(frame) = close_frame_for(SpaceId::Data, &utf8, room) {
                assert!(
                    std::str::from_utf8(&frame.reason).is_ok(),
                    "room {room}: {:?}",
                    frame.reason
                );
                assert!(utf8.reason.starts_with(&frame.reason));
                let len = Frame::Close(frame.clone()).encoded_len();
                if frame.reason.len() < utf8.reason.len() && len + 1 < room {
                    cut_short += 1;
                    // Never more than a character's length short of the room.
                    assert!(len + 4 > room, "room {room}: {len} bytes");
                }
            }
            if let Some(frame) = close_frame_for(SpaceId::Data, &bytes, room) {
                let len = Frame::Close(frame).encoded_len();
                assert!(
                    len == room || len == 3 + 40,
                    "room {room}: {len} bytes of a non-UTF-8 reason"
                );
            }
        }
        assert!(cut_short > 0, "some rooms fall inside a character");
    }
}

/// Packets of ACK frames only sent while no ack-eliciting packet waited for acknowledgement: each one
/// answers only packets that were not ack-eliciting, which RFC 9000 §13.2.1 forbids ("An endpoint MUST
/// NOT send a non-ack-eliciting packet in response to a non-ack-eliciting packet"). Counted per thread,
/// in tests only (the simulator runs both endpoints on the test's thread).
#[cfg(test)]
pub(crate) mod unprompted {
    thread_local! {
        static COUNT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    pub(super) fn count() {
        COUNT.with(|c| c.set(c.get() + 1));
    }

    /// Such packets sent on this thread since the last call.
    #[cfg(feature = "sim")]
    pub(crate) fn take() -> u64 {
        COUNT.with(|c| c.replace(0))
    }
}
