//! 1-RTT keys and key updates (RFC 9001 §6).
//!
//! The Data space keeps the current packet keys, the next phase's keys (prepared in advance, so a peer's
//! update is recognised by trial decryption) and, for a while after an update, the previous receive key
//! for packets that were delayed across it.

use std::time::Instant;

use crate::crypto::tls::Session;
use crate::crypto::{HeaderKey, Keys, PacketKey};

/// Which receive key a packet needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvKey {
    /// The current phase.
    Current,
    /// The previous phase: a packet sent before the last update.
    Previous,
    /// The next phase: the peer started a key update (or answered ours).
    Next,
}

/// The 1-RTT packet protection state.
pub(crate) struct OneRttKeys {
    pub(crate) local_header: Box<dyn HeaderKey>,
    pub(crate) remote_header: Box<dyn HeaderKey>,
    pub(crate) local: Box<dyn PacketKey>,
    pub(crate) remote: Box<dyn PacketKey>,
    /// The next phase's (local, remote) packet keys.
    next: Option<(Box<dyn PacketKey>, Box<dyn PacketKey>)>,
    /// The previous phase's receive key and when to drop it.
    prev_remote: Option<(Box<dyn PacketKey>, Instant)>,
    /// The key phase bit of the current phase.
    pub(crate) phase: bool,
    /// Key updates so far (either side).
    pub(crate) updates: u64,
    /// The first packet number we sent in the current phase.
    first_sent: Option<u64>,
    /// Whether the peer acknowledged a packet sent in the current phase (RFC 9001 §6.5: required before
    /// starting another update).
    pub(crate) phase_acked: bool,
    /// The smallest packet number received in the current phase.
    first_received: Option<u64>,
    /// Packets sealed with the current local key (RFC 9001 §6.6 confidentiality limit).
    pub(crate) sealed_in_phase: u64,
}

impl OneRttKeys {
    /// Phase 0 keys, with the next phase prepared.
    pub(crate) fn new(keys: Keys, session: &mut dyn Session) -> Self {
        Self {
            local_header: keys.local.header,
            remote_header: keys.remote.header,
            local: keys.local.packet,
            remote: keys.remote.packet,
            next: session.next_1rtt_keys(),
            prev_remote: None,
            phase: false,
            updates: 0,
            first_sent: None,
            phase_acked: false,
            first_received: None,
            sealed_in_phase: 0,
        }
    }

    /// Which key opens a packet with key phase bit `phase` and packet number `pn` (RFC 9001 §6.3).
    pub(crate) fn recv_key(&self, phase: bool, pn: u64) -> RecvKey {
        if phase == self.phase {
            return RecvKey::Current;
        }
        match (&self.prev_remote, self.first_received) {
            // A packet from before the update: older than anything received in the current phase.
            (Some(_), None) => RecvKey::Previous,
            (Some(_), Some(first)) if pn < first => RecvKey::Previous,
            _ => RecvKey::Next,
        }
    }

    /// The receive key of `which`, if there is one.
    pub(crate) fn remote_key(&self, which: RecvKey) -> Option<&dyn PacketKey> {
        match which {
            RecvKey::Current => Some(&*self.remote),
            RecvKey::Previous => self.prev_remote.as_ref().map(|(k, _)| &**k),
            RecvKey::Next => self.next.as_ref().map(|(_, r)| &**r),
        }
    }

    /// Records a packet authenticated with the current key.
    pub(crate) fn on_received(&mut self, pn: u64) {
        self.first_received = Some(self.first_received.map_or(pn, |f| f.min(pn)));
    }

    /// Moves to the next phase: the peer's packet `pn` opened with the next key (`Some`), or we start an
    /// update ourselves (`None`). The previous receive key is kept until `discard_prev_at`.
    pub(crate) fn rotate(
        &mut self,
        session: &mut dyn Session,
        received_pn: Option<u64>,
        discard_prev_at: Instant,
    ) {
        let Some((local, remote)) = self.next.take() else {
            return;
        };
        let old_remote = std::mem::replace(&mut self.remote, remote);
        self.local = local;
        self.prev_remote = Some((old_remote, discard_prev_at));
        self.next = session.next_1rtt_keys();
        self.phase = !self.phase;
        self.updates += 1;
        self.first_sent = None;
        self.phase_acked = false;
        self.first_received = received_pn;
        self.sealed_in_phase = 0;
    }

    /// Whether we may start a key update now (RFC 9001 §6.1, §6.5).
    pub(crate) fn can_update(&self) -> bool {
        self.phase_acked && self.next.is_some()
    }

    /// Records a packet sealed with the current key.
    pub(crate) fn on_sent(&mut self, pn: u64) {
        self.first_sent.get_or_insert(pn);
        self.sealed_in_phase += 1;
    }

    /// The peer acknowledged our packet `pn`.
    pub(crate) fn on_acked(&mut self, pn: u64) {
        if self.first_sent.is_some_and(|first| pn >= first) {
            self.phase_acked = true;
        }
    }

    /// When the previous receive key is due to be dropped.
    pub(crate) fn prev_discard_at(&self) -> Option<Instant> {
        self.prev_remote.as_ref().map(|(_, t)| *t)
    }

    /// Drops the previous receive key if its time has come.
    pub(crate) fn discard_prev_if_due(&mut self, now: Instant) {
        if self.prev_remote.as_ref().is_some_and(|(_, t)| *t <= now) {
            self.prev_remote = None;
        }
    }
}

impl std::fmt::Debug for OneRttKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneRttKeys")
            .field("phase", &self.phase)
            .field("updates", &self.updates)
            .field("phase_acked", &self.phase_acked)
            .finish_non_exhaustive()
    }
}
