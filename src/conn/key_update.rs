//! 1-RTT keys and key updates (RFC 9001 §6).
//!
//! The Data space keeps the current packet keys, the next phase's receive key (prepared in advance, so a
//! peer's update is recognised by trial decryption without deriving keys while packets are processed, RFC
//! 9001 §9.5) and, for a while after an update, the previous receive key for packets that were delayed
//! across it. The next phase's send key is derived only when the phase changes: until then it would be
//! hundreds of bytes per connection that nothing uses.

use std::time::{Duration, Instant};

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
    /// The next phase's receive key.
    next_remote: Option<Box<dyn PacketKey>>,
    /// The previous phase's receive key and when to drop it: not before a packet of the current phase
    /// has opened (`None` until then, RFC 9001 §6.1).
    prev_remote: Option<(Box<dyn PacketKey>, Option<Instant>)>,
    /// The key phase bit of the current phase.
    pub(crate) phase: bool,
    /// Key updates so far (either side).
    pub(crate) updates: u64,
    /// The first packet number we sent in the current phase.
    first_sent: Option<u64>,
    /// When the peer first acknowledged a packet sent in the current phase (RFC 9001 §6.1: required
    /// before starting another update; §6.5: three PTOs before it, after an update).
    pub(crate) phase_acked_at: Option<Instant>,
    /// The smallest packet number received in the current phase.
    first_received: Option<u64>,
    /// The largest packet number received in the current phase.
    last_received: Option<u64>,
    /// The largest packet number opened with an older key than the current one (RFC 9001 §6.4: no packet
    /// of the current phase may be numbered below it).
    older_received: Option<u64>,
    /// Packets sealed with the current local key (RFC 9001 §6.6 confidentiality limit).
    pub(crate) sealed_in_phase: u64,
    /// The local key's confidentiality limit, read once (the suite never changes).
    seal_limit: u64,
    /// Whether we sent, in the current phase, an ACK for a packet received in the current phase. Until
    /// then the peer cannot have seen its current-phase packets acknowledged, so it may not update again
    /// (RFC 9001 §6.5).
    acked_current: bool,
}

impl OneRttKeys {
    /// Phase 0 keys, with the next phase prepared.
    pub(crate) fn new(keys: Keys, session: &mut dyn Session) -> Self {
        Self {
            local_header: keys.local.header,
            remote_header: keys.remote.header,
            seal_limit: keys.local.packet.confidentiality_limit(),
            local: keys.local.packet,
            remote: keys.remote.packet,
            next_remote: session.peek_next_1rtt_remote_key(),
            prev_remote: None,
            phase: false,
            updates: 0,
            first_sent: None,
            phase_acked_at: None,
            first_received: None,
            last_received: None,
            older_received: None,
            sealed_in_phase: 0,
            // RFC 9001 §6.2 limits consecutive updates (a second one before we acknowledged the packet
            // that started the first); the peer's first update may come at any time after the handshake.
            acked_current: true,
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
            RecvKey::Next => self.next_remote.as_deref(),
        }
    }

    /// Passes each receive key (current, next, previous) through `wrap`: the tests' way to watch them.
    #[cfg(test)]
    pub(crate) fn wrap_remote_keys(&mut self, wrap: &dyn Fn(Box<dyn PacketKey>) -> Box<dyn PacketKey>) {
        let placeholder = || crate::crypto::Secret::new(crate::crypto::Suite::Aes128Gcm, &[0; 32]);
        let take = |k: &mut Box<dyn PacketKey>| {
            let dummy = placeholder().expect("a secret").packet_key();
            wrap(std::mem::replace(k, dummy))
        };
        self.remote = take(&mut self.remote);
        if let Some(k) = self.next_remote.as_mut() {
            *k = take(k);
        }
        if let Some((k, _)) = self.prev_remote.as_mut() {
            *k = take(k);
        }
    }

    /// Records a packet authenticated with the current key.
    pub(crate) fn on_received(&mut self, pn: u64) {
        self.first_received = Some(self.first_received.map_or(pn, |f| f.min(pn)));
        self.last_received = self.last_received.max(Some(pn));
    }

    /// Records a packet authenticated with the previous key.
    pub(crate) fn on_received_previous(&mut self, pn: u64) {
        self.older_received = self.older_received.max(Some(pn));
    }

    /// Whether packet `pn`, opened with the current key, is numbered below one opened with an older key:
    /// RFC 9001 §6.4 makes that a KEY_UPDATE_ERROR.
    pub(crate) fn below_older(&self, pn: u64) -> bool {
        self.older_received.is_some_and(|older| pn < older)
    }

    /// Moves to the next phase: the peer's packet `pn` opened with the next key (`Some((pn, at))`), or we
    /// start an update ourselves (`None`). The previous receive key is kept until `at` (three PTOs,
    /// RFC 9001 §6.5); after our own update, until three PTOs after the first packet of the new phase
    /// opens ([`set_prev_discard`](Self::set_prev_discard)): RFC 9001 §6.1 says old keys MUST be retained
    /// until then.
    pub(crate) fn rotate(&mut self, session: &mut dyn Session, received: Option<(u64, Instant)>) {
        let Some(remote) = self.next_remote.take() else {
            return;
        };
        // The remote half of this pair is the key prepared in advance (it may already have opened the
        // peer's packet), so that one is kept and the fresh copy dropped. Together with the peek below,
        // a phase change derives four keys instead of two: a few microseconds, once per phase.
        let Some((local, _)) = session.next_1rtt_keys() else {
            // A session that peeked a key it then does not hand out: stay in this phase.
            self.next_remote = Some(remote);
            return;
        };
        let old_remote = std::mem::replace(&mut self.remote, remote);
        self.local = local;
        self.prev_remote = Some((old_remote, received.map(|(_, at)| at)));
        self.next_remote = session.peek_next_1rtt_remote_key();
        self.phase = !self.phase;
        self.updates += 1;
        self.first_sent = None;
        self.phase_acked_at = None;
        self.first_received = received.map(|(pn, _)| pn);
        self.older_received = self.older_received.max(self.last_received);
        self.last_received = self.first_received;
        self.sealed_in_phase = 0;
        self.acked_current = false;
    }

    /// Whether a peer's key update is allowed now: RFC 9001 §6.2 lets an endpoint treat an update started
    /// before it acknowledged the packet that started the current phase as KEY_UPDATE_ERROR (the first
    /// update, from phase 0, is always allowed).
    pub(crate) fn peer_may_update(&self) -> bool {
        self.acked_current
    }

    /// We sent an ACK frame whose Largest Acknowledged is `largest`, in the current phase.
    pub(crate) fn on_ack_sent(&mut self, largest: u64) {
        if self.first_received.is_some_and(|first| largest >= first) {
            self.acked_current = true;
        }
    }

    /// Whether we may start a key update at `now` (RFC 9001 §6.1): a packet of the current phase was
    /// acknowledged and, after an earlier update, `wait` has passed since (RFC 9001 §6.5: endpoints SHOULD
    /// wait three PTOs, as the peer may not yet have the keys for another update while it keeps its old
    /// ones).
    pub(crate) fn can_update(&mut self, now: Instant, wait: Duration) -> bool {
        // A clock that stepped back: the wait counts from `now`, not from an instant it has yet to reach.
        if self.phase_acked_at.is_some_and(|at| now < at) {
            self.phase_acked_at = Some(now);
        }
        let waited = |at: Instant| self.updates == 0 || at.checked_add(wait).map_or(true, |t| now >= t);
        self.phase_acked_at.is_some_and(waited) && self.next_remote.is_some()
    }

    /// Whether the current key may seal one more packet (RFC 9001 §6.6): the last one it may seal is kept
    /// for a packet `closing` the connection, which reaching the limit sends.
    #[inline]
    pub(crate) fn may_seal(&self, closing: bool) -> bool {
        self.sealed_in_phase < self.seal_limit.saturating_sub(u64::from(!closing))
    }

    /// The local key's confidentiality limit.
    pub(crate) fn seal_limit(&self) -> u64 {
        self.seal_limit
    }

    /// Records a packet sealed with the current key.
    pub(crate) fn on_sent(&mut self, pn: u64) {
        self.first_sent.get_or_insert(pn);
        self.sealed_in_phase += 1;
    }

    /// The peer acknowledged our packet `pn`; the ACK arrived at `now`.
    pub(crate) fn on_acked(&mut self, pn: u64, now: Instant) {
        if self.phase_acked_at.is_none() && self.first_sent.is_some_and(|first| pn >= first) {
            self.phase_acked_at = Some(now);
        }
    }

    /// When the previous receive key is due to be dropped.
    pub(crate) fn prev_discard_at(&self) -> Option<Instant> {
        self.prev_remote.as_ref().and_then(|(_, t)| *t)
    }

    /// Whether the previous receive key waits for a first packet of the current phase to open before its
    /// discard time is set (after an update we started).
    #[inline]
    pub(crate) fn prev_awaits_new_phase(&self) -> bool {
        self.prev_remote.as_ref().is_some_and(|(_, t)| t.is_none())
    }

    /// A packet of the current phase opened: the previous receive key goes at `at`, unless a time was set.
    pub(crate) fn set_prev_discard(&mut self, at: Instant) {
        if let Some((_, t @ None)) = &mut self.prev_remote {
            *t = Some(at);
        }
    }

    /// Drops the previous receive key if its time has come.
    pub(crate) fn discard_prev_if_due(&mut self, now: Instant) {
        if self.prev_discard_at().is_some_and(|t| t <= now) {
            self.prev_remote = None;
        }
    }
}

impl std::fmt::Debug for OneRttKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneRttKeys")
            .field("phase", &self.phase)
            .field("updates", &self.updates)
            .field("phase_acked_at", &self.phase_acked_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tls::{KeyChange, Level};
    use crate::crypto::{DirectionalKeys, Secret, Suite};
    use crate::wire::TransportError;
    use crate::Side;

    /// A TLS session stand-in that hands out successive key phases from one secret per direction, and
    /// counts how often it was advanced.
    struct Phases {
        local: Secret,
        remote: Secret,
        advances: usize,
    }

    impl Session for Phases {
        fn side(&self) -> Side {
            Side::Client
        }
        fn read_handshake(&mut self, _: Level, _: &[u8]) -> Result<(), TransportError> {
            Ok(())
        }
        fn write_handshake(&mut self, _: &mut Vec<u8>) -> Option<KeyChange> {
            None
        }
        fn next_1rtt_keys(&mut self) -> Option<(Box<dyn PacketKey>, Box<dyn PacketKey>)> {
            self.local = self.local.next();
            self.remote = self.remote.next();
            self.advances += 1;
            Some((self.local.packet_key(), self.remote.packet_key()))
        }
        fn peek_next_1rtt_remote_key(&self) -> Option<Box<dyn PacketKey>> {
            Some(self.remote.next().packet_key())
        }
        fn zero_rtt_keys(&self) -> Option<DirectionalKeys> {
            None
        }
        fn is_handshaking(&self) -> bool {
            false
        }
        fn peer_transport_parameters(&self) -> Option<&[u8]> {
            None
        }
        fn alpn_protocol(&self) -> Option<&[u8]> {
            None
        }
        fn server_name(&self) -> Option<&str> {
            None
        }
        fn suite(&self) -> Option<Suite> {
            Some(Suite::Aes128Gcm)
        }
        fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
            None
        }
    }

    use crate::test_util::epoch;

    /// Phase 0 of direction `seed` (7: ours, 8: the peer's), advanced `phase` times.
    fn secret(seed: u8, phase: usize) -> Secret {
        let mut s = Secret::new(Suite::Aes128Gcm, &[seed; 32]).unwrap();
        for _ in 0..phase {
            s = s.next();
        }
        s
    }

    fn keys() -> (OneRttKeys, Phases) {
        let (local, remote) = (secret(7, 0), secret(8, 0));
        let keys = Keys {
            local: DirectionalKeys::new(&local),
            remote: DirectionalKeys::new(&remote),
        };
        let mut session = Phases {
            local,
            remote,
            advances: 0,
        };
        (OneRttKeys::new(keys, &mut session), session)
    }

    /// A clock that steps back after the new phase was acknowledged must not hold the next update
    /// until it has caught up: near the confidentiality limit that closes the connection with
    /// AEAD_LIMIT_REACHED (RFC 9001 §6.6) instead of updating.
    #[test]
    fn a_clock_stepping_back_does_not_hold_the_next_update_for_the_step() {
        let (mut k, mut session) = keys();
        let t = epoch() + Duration::from_secs(120);
        let wait = Duration::from_millis(300);
        k.on_sent(10);
        k.on_acked(10, t);
        k.rotate(&mut session, None);
        k.on_sent(20);
        k.on_acked(20, t);
        // The clock steps back a minute; the connection sends (and asks) at once, and a second later.
        let back = t - Duration::from_secs(60);
        assert!(!k.can_update(back, wait));
        assert!(
            k.can_update(back + wait + Duration::from_secs(1), wait),
            "three PTOs and a second have passed since the acknowledgement"
        );
    }

    #[test]
    fn our_update_waits_for_an_ack_of_the_current_phase() {
        let (mut k, mut session) = keys();
        let t = epoch();
        let wait = Duration::from_millis(300);
        assert!(!k.can_update(t, wait), "nothing of phase 0 acknowledged yet");
        k.on_sent(10);
        k.on_acked(9, t);
        assert!(!k.can_update(t, wait), "packet 9 was not sent in this phase");
        k.on_acked(10, t);
        assert!(k.can_update(t, wait), "no wait before the first update");
        k.rotate(&mut session, None);
        assert!(k.phase && k.updates == 1);
        assert!(
            !k.can_update(t, wait),
            "RFC 9001 §6.1: no second update before an ACK of the new phase"
        );
        k.on_sent(20);
        k.on_acked(20, t + Duration::from_millis(10));
        assert!(
            !k.can_update(t + Duration::from_millis(309), wait),
            "RFC 9001 §6.5: three PTOs after the acknowledgement first"
        );
        assert!(k.can_update(t + Duration::from_millis(310), wait));
        // The peer's packets of the old phase still open, with the previous key.
        assert_eq!(k.recv_key(false, 11), RecvKey::Previous);
        k.discard_prev_if_due(t + Duration::from_secs(3600));
        assert!(
            k.remote_key(RecvKey::Previous).is_some() && k.prev_discard_at().is_none(),
            "RFC 9001 §6.1: old keys stay until a packet of the new phase opens"
        );
        assert_eq!(k.recv_key(true, 12), RecvKey::Current);
        assert!(k.prev_awaits_new_phase());
        k.set_prev_discard(t + Duration::from_millis(300));
        k.on_received(12);
        assert!(!k.prev_awaits_new_phase());
        k.set_prev_discard(t + Duration::from_secs(60));
        assert_eq!(
            k.prev_discard_at(),
            Some(t + Duration::from_millis(300)),
            "set once"
        );
        k.discard_prev_if_due(t + Duration::from_millis(299));
        assert!(k.remote_key(RecvKey::Previous).is_some());
        k.discard_prev_if_due(t + Duration::from_millis(300));
        assert!(
            k.remote_key(RecvKey::Previous).is_none(),
            "previous keys go after three PTOs"
        );
    }

    /// Seals a short packet with `key` and reports whether `opener` opens it.
    fn opens(key: &dyn PacketKey, opener: &dyn PacketKey) -> bool {
        let mut packet = vec![0x40, 1, 2, 3, 0xaa, 0xbb, 0xcc, 0xdd];
        packet.resize(packet.len() + 16, 0);
        key.seal(9, &mut packet, 4).unwrap();
        opener.open(9, &mut packet, 4).is_ok()
    }

    #[test]
    fn each_phase_sends_with_its_own_key_derived_when_the_phase_starts() {
        let (mut k, mut session) = keys();
        assert_eq!(
            session.advances, 0,
            "phase 1 is only peeked at: no send key for it yet"
        );
        for n in 1..=4usize {
            let prepared = k.remote_key(RecvKey::Next).unwrap();
            assert!(
                opens(&*secret(8, n).packet_key(), prepared),
                "phase {n} receive key prepared"
            );
            assert!(!opens(&*secret(7, n).packet_key(), prepared));
            k.on_sent(10 * n as u64);
            k.on_acked(10 * n as u64, epoch());
            k.on_received(10 * n as u64);
            k.on_ack_sent(10 * n as u64);
            // Odd phases are the peer's updates (its packet opened with the prepared key), even ones ours.
            let peer_started = n % 2 == 1;
            assert!(if peer_started {
                k.peer_may_update()
            } else {
                k.can_update(epoch(), Duration::ZERO)
            });
            k.rotate(&mut session, peer_started.then_some((10 * n as u64 + 1, epoch())));
            assert_eq!(
                (k.updates, session.advances),
                (n as u64, n),
                "one derivation per phase change"
            );
            assert!(
                opens(&*k.local, &*secret(7, n).packet_key()),
                "we send with phase {n}'s key"
            );
            assert!(!opens(&*k.local, &*secret(7, n - 1).packet_key()));
            assert!(
                opens(&*secret(8, n).packet_key(), &*k.remote),
                "we open phase {n}"
            );
            let previous = k.remote_key(RecvKey::Previous).unwrap();
            assert!(opens(&*secret(8, n - 1).packet_key(), previous));
        }
    }

    #[test]
    fn peer_updates_are_recognised_and_consecutive_ones_refused() {
        let (mut k, mut session) = keys();
        k.on_received(5);
        assert_eq!(k.recv_key(true, 6), RecvKey::Next);
        assert!(
            k.peer_may_update(),
            "the first update needs no acknowledgement of phase 0 (RFC 9001 §6.2 limits consecutive ones)"
        );
        k.on_ack_sent(5);
        assert!(k.peer_may_update());
        // The next key really opens what the peer seals in the next phase.
        let next_secret = secret(8, 1);
        let mut packet = vec![0x40, 1, 2, 3, 0xaa, 0xbb, 0xcc, 0xdd];
        packet.resize(packet.len() + 16, 0);
        next_secret.packet_key().seal(6, &mut packet, 4).unwrap();
        assert!(k
            .remote_key(RecvKey::Next)
            .unwrap()
            .open(6, &mut packet, 4)
            .is_ok());

        k.rotate(&mut session, Some((6, epoch() + Duration::from_secs(1))));
        assert!(k.phase);
        assert_eq!(
            k.recv_key(false, 4),
            RecvKey::Previous,
            "older than the update: previous phase"
        );
        assert_eq!(
            k.recv_key(false, 7),
            RecvKey::Next,
            "newer with the old bit: another update"
        );
        assert!(
            !k.peer_may_update(),
            "RFC 9001 §6.5: not before we acknowledged the new phase"
        );
        k.on_ack_sent(5);
        assert!(!k.peer_may_update(), "an ACK of an older packet does not count");
        k.on_ack_sent(6);
        assert!(k.peer_may_update());
    }
}
