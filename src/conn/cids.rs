//! Connection ID lifecycle (RFC 9000 §5.1): the IDs this side issues with NEW_CONNECTION_ID and takes back
//! with RETIRE_CONNECTION_ID, and the stateless reset tokens of the peer's IDs (RFC 9000 §10.3).
//!
//! The endpoint makes the IDs (it owns the generator and the routing index): after every input it asks
//! [`Connection::cids_wanted`] how many the connection is short of, and hands them over with
//! [`Connection::add_local_cid`].

use super::connection::{Connection, EndpointEvent};
use crate::wire::frame::{Frame, NewConnectionId};
use crate::wire::{ConnectionId, ResetToken, TransportError};

/// One connection ID this side issued and the peer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalCid {
    pub(crate) seq: u64,
    pub(crate) cid: ConnectionId,
    pub(crate) token: ResetToken,
}

/// The connection IDs this side issued and has not seen retired.
#[derive(Debug, Default)]
pub(crate) struct LocalCids {
    /// Active IDs; sequence 0 is the handshake ID (its token, if any, went in the transport parameters).
    pub(crate) active: Vec<LocalCid>,
    /// The sequence number the next ID gets.
    pub(crate) next_seq: u64,
    /// The highest sequence number sent to the peer so far (0, the handshake ID, until a
    /// NEW_CONNECTION_ID goes out): an ID issued but still waiting for its frame is unknown to the peer.
    pub(crate) highest_sent: u64,
    /// Sequence numbers whose NEW_CONNECTION_ID waits to be sent (or sent again after a loss).
    pub(crate) pending: Vec<u64>,
    /// IDs retired by the peer in total (a statistic, and a bound on churn).
    pub(crate) retired: u64,
}

impl LocalCids {
    /// Starts with the handshake ID as sequence 0.
    pub(crate) fn new(handshake_cid: ConnectionId, token: ResetToken) -> Self {
        Self {
            active: vec![LocalCid {
                seq: 0,
                cid: handshake_cid,
                token,
            }],
            next_seq: 1,
            highest_sent: 0,
            pending: Vec::new(),
            retired: 0,
        }
    }

    fn get(&self, seq: u64) -> Option<&LocalCid> {
        self.active.iter().find(|c| c.seq == seq)
    }
}

impl Connection {
    /// How many new connection IDs the connection would issue now (RFC 9000 §5.1.1): enough to give the
    /// peer as many as it said it keeps (active_connection_id_limit), capped by our own limit, once the
    /// handshake is complete. Zero-length IDs are never issued afresh.
    pub(crate) fn cids_wanted(&self) -> usize {
        if !self.handshake_complete || self.is_closed() || self.local_cid.is_empty() {
            return 0;
        }
        let Some(peer) = self.peer_params.as_ref() else {
            return 0;
        };
        let target = peer
            .active_connection_id_limit
            .into_inner()
            .min(self.config.connection_id_limit());
        usize::try_from(target)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.local_cids.active.len())
    }

    /// Takes a new connection ID (already routed to this connection by the endpoint) and queues its
    /// NEW_CONNECTION_ID frame.
    pub(crate) fn add_local_cid(&mut self, cid: ConnectionId, token: ResetToken) {
        let seq = self.local_cids.next_seq;
        self.local_cids.next_seq += 1;
        self.local_cids.active.push(LocalCid { seq, cid, token });
        self.local_cids.pending.push(seq);
    }

    /// RETIRE_CONNECTION_ID (RFC 9000 §19.16): `packet_dcid` is the destination ID of the packet that
    /// carried the frame.
    pub(crate) fn on_retire_connection_id(
        &mut self,
        seq: u64,
        packet_dcid: &ConnectionId,
    ) -> Result<(), TransportError> {
        // RFC 9000 §19.16: a sequence number greater than any sent to the peer is a PROTOCOL_VIOLATION
        // (one we issued but whose NEW_CONNECTION_ID has not gone out yet counts as never sent), and so
        // is retiring the ID the packet itself was sent to.
        if seq > self.local_cids.highest_sent {
            return Err(TransportError::protocol_violation(
                "retiring a connection ID never sent",
            ));
        }
        let Some(entry) = self.local_cids.get(seq).copied() else {
            return Ok(()); // already retired: a retransmission
        };
        if entry.cid == *packet_dcid {
            return Err(TransportError::protocol_violation(
                "retiring the connection ID the packet was sent to",
            ));
        }
        self.local_cids.active.retain(|c| c.seq != seq);
        self.local_cids.pending.retain(|s| *s != seq);
        self.local_cids.retired += 1;
        self.endpoint_events
            .push_back(EndpointEvent::RetireLocalCid(entry.cid));
        // The endpoint sees `cids_wanted` go up and issues a replacement (RFC 9000 §5.1.1: "SHOULD").
        Ok(())
    }

    /// Writes the pending NEW_CONNECTION_ID frames that fit before `end`; returns the sequence numbers
    /// written, for loss recovery.
    pub(crate) fn write_new_cids(
        &mut self,
        buf: &mut Vec<u8>,
        end: usize,
        sent: &mut tinyvec::TinyVec<[u64; 2]>,
    ) {
        while let Some(&seq) = self.local_cids.pending.first() {
            let Some(c) = self.local_cids.get(seq).copied() else {
                self.local_cids.pending.remove(0);
                continue;
            };
            let f = Frame::NewConnectionId(NewConnectionId {
                sequence: seq,
                retire_prior_to: 0,
                id: c.cid,
                reset_token: c.token,
            });
            if buf.len() + f.encoded_len() > end {
                break;
            }
            f.encode(buf);
            self.local_cids.pending.remove(0);
            self.local_cids.highest_sent = self.local_cids.highest_sent.max(seq);
            sent.push(seq);
        }
    }

    /// A packet with NEW_CONNECTION_ID frames was lost: send those still active again.
    pub(crate) fn on_new_cids_lost(&mut self, seqs: &[u64]) {
        for &seq in seqs {
            if self.local_cids.get(seq).is_some() && !self.local_cids.pending.contains(&seq) {
                self.local_cids.pending.push(seq);
            }
        }
    }

    /// The stateless reset tokens a reset from the peer may end with. RFC 9000 §10.3.1: "all stateless
    /// reset tokens associated with the connection IDs and remote addresses for datagrams it has
    /// recently sent", but not those of IDs "it has not used or ... that have been retired". That is the
    /// token of the peer's ID in use and, while the challenge to a path the peer left (§9.3.3) goes with
    /// the ID that path used and the new path took another (§9.5), the token of that ID, until it is
    /// retired when the challenge ends. (Compared whatever address a datagram comes from: a superset
    /// of §10.3.1's per-address set that holds no unused or retired ID.)
    pub(crate) fn reset_tokens(&self) -> [Option<ResetToken>; 2] {
        let old_path = self
            .path_validation
            .as_ref()
            .and_then(|v| v.old_path.as_ref())
            .filter(|c| c.spare)
            .and_then(|c| c.reset_token);
        [self.remote_reset_token, old_path]
    }

    /// The last 16 bytes of `datagram`, if it could be a stateless reset for this connection (long
    /// enough, and the peer gave us a token): what [`matches_reset_token`](Self::matches_reset_token)
    /// needs, taken before the datagram is decrypted in place.
    pub(crate) fn reset_token_candidate(&self, datagram: &[u8]) -> Option<[u8; ResetToken::LEN]> {
        // RFC 9000 §10.3: a stateless reset is at least 21 bytes: 5 unpredictable bytes and the token.
        if datagram.len() < 21 || self.reset_tokens() == [None, None] {
            return None;
        }
        datagram.last_chunk::<{ ResetToken::LEN }>().copied()
    }

    /// Whether `tail` is one of the peer's reset tokens of [`reset_tokens`](Self::reset_tokens).
    pub(crate) fn matches_reset_token(&self, tail: &[u8; ResetToken::LEN]) -> bool {
        // Constant-time comparison, with every token: a token is a secret until used (RFC 9000 §10.3.1;
        // which of them matched, or how many there are, need not be hidden).
        self.reset_tokens()
            .iter()
            .fold(false, |found, t| found | t.is_some_and(|t| t.ct_eq(tail)))
    }

    /// Whether `datagram` ends with one of the peer's reset tokens (RFC 9000 §10.3.1).
    pub(crate) fn is_stateless_reset(&self, datagram: &[u8]) -> bool {
        self.reset_token_candidate(datagram)
            .is_some_and(|tail| self.matches_reset_token(&tail))
    }

    /// The peer's connection ID in use changed: tell the endpoint its reset token, so that a stateless
    /// reset arriving for it is recognised.
    pub(crate) fn set_remote_reset_token(&mut self, token: Option<ResetToken>) {
        if self.remote_reset_token != token {
            self.remote_reset_token = token;
            self.announce_reset_tokens();
        }
    }

    /// The set of [`reset_tokens`](Self::reset_tokens) may have changed (the ID in use, or the challenge
    /// to an old path, did): the endpoint routes resets with them to this connection.
    pub(crate) fn announce_reset_tokens(&mut self) {
        let tokens = self.reset_tokens();
        self.endpoint_events.push_back(EndpointEvent::ResetTokens(tokens));
    }

    /// The IDs issued and not retired, with their sequence numbers.
    #[cfg(test)]
    pub(crate) fn issued_cids(&self) -> impl Iterator<Item = (u64, ConnectionId)> + '_ {
        self.local_cids.active.iter().map(|c| (c.seq, c.cid))
    }
}
