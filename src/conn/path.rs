//! The peer's address changing under a connection (RFC 9000 §9): NAT rebinding, or a client moving.
//!
//! A server that receives an authenticated, non-probing packet with the largest packet number so far
//! from a new address moves the connection there (RFC 9000 §9.3), limits what it sends there to three
//! times what it received until the address is validated with PATH_CHALLENGE (§8.2), and goes back to
//! the previous path if validation fails. It also challenges the path it left (§9.3.3): if the move was
//! an attacker forwarding a copy of the client's packet, the client still on the old path answers with a
//! newer packet from there, which moves the connection back, with the congestion state, RTT estimate
//! and MTU it had there. When the peer has given spare connection IDs the challenge to the old path goes
//! with one of them, so that no ID is sent to two addresses (§9.5). A PATH_CHALLENGE from another
//! address than the current path's (a probe, §9.1, or one from a path the peer left before it was
//! answered) is answered there, alone in a datagram (§8.2.2). Clients do not follow a server to a
//! new address (servers do not migrate in QUIC v1, short of preferred_address, which quicsand neither
//! offers nor follows: its connection ID is only kept as a spare).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::congestion::{new_controller, CongestionController};
use super::connection::{later, Connection, Path};
use super::mtud::MtuDiscovery;
use super::recovery::RttEstimator;
use super::send::MIN_INITIAL_DATAGRAM;
use crate::wire::{ConnectionId, ResetToken};

/// Spare IDs retired after old-path challenges remembered at most (see `Connection::retired_spares`).
const RETIRED_SPARES: usize = 8;

/// A path validation in progress (RFC 9000 §8.2).
#[derive(Debug)]
pub(crate) struct PathValidation {
    /// The PATH_CHALLENGE data; a PATH_RESPONSE must echo it.
    pub(crate) data: [u8; 8],
    /// A PATH_CHALLENGE waits to be sent (first time, or again after a loss).
    pub(crate) pending: bool,
    /// When validation is given up (RFC 9000 §8.2.4).
    pub(crate) deadline: Instant,
    /// A PATH_CHALLENGE with `data` went out in a datagram of at least 1200 bytes. One held below that by
    /// the anti-amplification limit validates the address but not the path MTU (RFC 9000 §8.2.1).
    pub(crate) expanded: bool,
    /// The validated path the connection used before, to return to if this one fails (§9.3.2), with
    /// what the connection knew of it.
    pub(crate) previous: Option<(Path, PathState)>,
    /// The challenge to the previous path (§9.3.3), while the validation lasts.
    pub(crate) old_path: Option<OldPathChallenge>,
}

/// A PATH_RESPONSE owed to an address other than the current path's (RFC 9000 §8.2.2: it goes on the
/// path its challenge came from): a probe from a new address (§9.1), or a challenge from a path the
/// peer moved away from before it was answered. It goes once, alone in a datagram of its own,
/// expanded to 1200 bytes within the anti-amplification limit of that address (§8.2.2, §8.1).
#[derive(Debug)]
pub(crate) struct OffPathResponse {
    pub(crate) remote: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) data: [u8; 8],
    /// The datagram's size: 1200 bytes, or less if the address's allowance is smaller.
    pub(crate) size: usize,
    /// The peer's connection ID it is sent to.
    pub(crate) dcid: ConnectionId,
    /// The sequence number of `dcid` when it is a spare taken for this answer (§9.5: no ID is sent to
    /// two addresses), retired once it is sent.
    pub(crate) spare: Option<u64>,
}

/// What a connection learnt of a path, kept while it tries another: restored if it comes back.
#[derive(Debug)]
pub(crate) struct PathState {
    cc: Box<dyn CongestionController>,
    rtt: RttEstimator,
    mtud: MtuDiscovery,
}

/// A PATH_CHALLENGE to the validated path the connection left (RFC 9000 §9.3.3). It goes once, alone in
/// a datagram padded to 1200 bytes (§8.2.1), and is not in flight on the current path: nothing waits for
/// its answer, whose purpose is to draw the peer's newer packets from the old address if it is still
/// there.
#[derive(Debug, Clone)]
pub(crate) struct OldPathChallenge {
    pub(crate) remote: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) data: [u8; 8],
    /// Still to be sent.
    pub(crate) pending: bool,
    /// The answer to a PATH_CHALLENGE that came from this path before the peer moved, sent with it: a
    /// PATH_RESPONSE goes on the path its challenge came from (RFC 9000 §8.2.2).
    pub(crate) response: Option<[u8; 8]>,
    /// The peer's connection ID it is sent to, and that ID's sequence number.
    pub(crate) dcid: ConnectionId,
    pub(crate) dcid_seq: u64,
    /// `dcid` is a spare taken for the challenge, retired when the validation ends (otherwise it is the
    /// ID in use).
    pub(crate) spare: bool,
}

impl Connection {
    /// The peer now sends from `remote`: move the connection there and validate the new address.
    pub(crate) fn migrate(&mut self, now: Instant, remote: SocketAddr, local_ip: Option<IpAddr>, len: usize) {
        tracing::debug!(side = ?self.side, from = %self.path.remote, to = %remote, "peer address changed");
        let ip_changed = remote.ip() != self.path.remote.ip();
        let local_ip = local_ip.or(self.path.local_ip);
        let timeout = self.path_validation_timeout();
        let mut validation = self.path_validation.take().map(|v| *v);
        let returning = |v: &mut PathValidation| v.previous.as_ref().is_some_and(|(p, _)| p.remote == remote);
        if let Some(v) = validation.take_if(returning) {
            // Back to the validated address it came from while the move was being checked (the move was
            // a NAT's passing rebinding, or a forwarded copy): nothing to validate, and what the connection
            // knew of that path still holds.
            if let Some((mut previous, state)) = v.previous {
                previous.bytes_received += len as u64;
                previous.local_ip = local_ip.or(previous.local_ip);
                self.return_to(previous, state);
            }
            self.end_old_path_challenge(v.old_path);
            return;
        }
        let mtu = self.path.mtu;
        let old = std::mem::replace(
            &mut self.path,
            Path {
                remote,
                local_ip,
                validated: false,
                bytes_received: len as u64,
                bytes_sent: 0,
                mtu,
            },
        );
        // A second move during a validation keeps the last validated path as the fallback, and its
        // challenge.
        let (previous, old_path) = match validation {
            Some(v) => (v.previous, v.old_path),
            None if old.validated => {
                let challenge = self.old_path_challenge(&old);
                let state = PathState {
                    cc: self.cc.clone_box(),
                    rtt: self.recovery.rtt().clone(),
                    mtud: self.mtud.clone(),
                };
                (Some((old, state)), Some(challenge))
            }
            None => (None, None),
        };
        let previous = previous.filter(|(p, _)| p.remote != remote);
        self.on_new_path(ip_changed);
        let mut data = [0u8; 8];
        self.rng.fill(&mut data);
        // Boxed: most connections never validate a path, and the state is large.
        self.path_validation = Some(Box::new(PathValidation {
            data,
            pending: true,
            deadline: later(now, timeout),
            expanded: false,
            previous,
            old_path,
        }));
        self.stats.path_migrations += 1;
    }

    /// What a new path starts from (RFC 9000 §9.4): packets sent from now on are its own; unless only the
    /// peer's port changed, its congestion controller and RTT estimate start again, and its MTU, unknown,
    /// falls back to the base size until probed.
    fn on_new_path(&mut self, ip_changed: bool) {
        let rtt = ip_changed.then(|| RttEstimator::new(self.config.initial_rtt));
        self.recovery.on_path_change(rtt);
        if ip_changed {
            // RFC 9000 §14.2.1: the new path's MTU is unknown: back to the base size, and probe it.
            self.mtud.restart();
            self.cc = new_controller(self.config.congestion, self.mtud.current());
            self.set_mtu(self.mtud.current());
        }
    }

    /// Back on `path`, a validated path the connection used before, with what it knew of it.
    fn return_to(&mut self, path: Path, state: PathState) {
        tracing::debug!(side = ?self.side, to = %path.remote, "back on the previous path");
        self.path = path;
        self.cc = state.cc;
        self.mtud = state.mtud;
        self.mtud.forget_probe();
        self.recovery.on_path_change(Some(state.rtt));
        self.set_mtu(self.mtud.current());
    }

    /// The challenge to `old`, the validated path the peer left, with a spare connection ID of the peer's
    /// if there is one (RFC 9000 §9.5: an ID is not sent to two addresses). Without a spare the challenge
    /// shares the current ID: validating the old path (§9.3.3) is what stops an attacker who forwards
    /// packets from taking the connection over.
    fn old_path_challenge(&mut self, old: &Path) -> OldPathChallenge {
        let mut data = [0u8; 8];
        self.rng.fill(&mut data);
        let (dcid, dcid_seq, spare) = match self.take_lowest_spare() {
            Some((seq, cid, _)) => (cid, seq, true),
            None => (self.remote_cid, self.remote_cid_seq, false),
        };
        OldPathChallenge {
            remote: old.remote,
            local_ip: old.local_ip,
            data,
            pending: true,
            response: None,
            dcid,
            dcid_seq,
            spare,
        }
    }

    /// The old path's challenge is over: the spare ID it used, if any, is retired (one per validation,
    /// so not held to the bound on owed retirements, which is for what the peer asks of us).
    fn end_old_path_challenge(&mut self, challenge: Option<OldPathChallenge>) {
        if let Some(c) = challenge.filter(|c| c.spare) {
            self.retire_spare(c.dcid_seq);
        }
    }

    /// Takes the peer's spare connection ID with the lowest sequence number out of `peer_cids`.
    pub(crate) fn take_lowest_spare(&mut self) -> Option<(u64, ConnectionId, ResetToken)> {
        self.peer_cids.sort_unstable_by_key(|(s, ..)| *s);
        (!self.peer_cids.is_empty()).then(|| self.peer_cids.remove(0))
    }

    /// Retires `seq`, a spare connection ID of the peer's taken out of `peer_cids` for one path's use.
    pub(crate) fn retire_spare(&mut self, seq: u64) {
        self.retire_cids.push(seq);
        if seq >= self.peer_retire_prior_to {
            if self.retired_spares.len() == RETIRED_SPARES {
                self.retired_spares.pop_front();
            }
            self.retired_spares.push_back(seq);
        }
    }

    /// A PATH_CHALLENGE with `data` came from `remote`, which is not the current path, and is answered
    /// there. `allowance` is what the anti-amplification limit lets us send to that address (RFC 9000
    /// §8.1). `dcid_in_use` says the current connection ID already went there (a path the peer left);
    /// otherwise the answer takes a spare ID of the peer's (§9.5), and without one (unless the peer's IDs
    /// are zero-length) it cannot be sent.
    /// One answer waits at most: a newer one replaces it.
    pub(crate) fn answer_off_path(
        &mut self,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        data: [u8; 8],
        allowance: u64,
        dcid_in_use: bool,
    ) {
        self.end_off_path_response();
        let size = usize::try_from(allowance).map_or(MIN_INITIAL_DATAGRAM, |a| a.min(MIN_INITIAL_DATAGRAM));
        // A peer using zero-length connection IDs has none to spare, and nothing to link (§9.5).
        let (dcid, spare) = if dcid_in_use || self.remote_cid.is_empty() {
            (self.remote_cid, None)
        } else if let Some((seq, cid, _)) = self.take_lowest_spare() {
            (cid, Some(seq))
        } else {
            // RFC 9000 §9.5: "An endpoint that exhausts available connection IDs cannot ... respond to
            // probes".
            return;
        };
        self.off_path_response = Some(Box::new(OffPathResponse {
            remote,
            local_ip,
            data,
            size,
            dcid,
            spare,
        }));
    }

    /// The off-path answer is given up (replaced by a newer one, or its spare retired by the peer): its
    /// spare ID, if any, is retired.
    pub(crate) fn end_off_path_response(&mut self) {
        if let Some(seq) = self.off_path_response.take().and_then(|r| r.spare) {
            self.retire_spare(seq);
        }
    }

    /// The peer raised retire_prior_to: an old-path challenge stops using a connection ID it retires,
    /// and spares retired below it need no more remembering.
    pub(crate) fn on_peer_retire_prior_to(&mut self, retire_prior_to: u64) {
        self.retired_spares.retain(|&s| s >= retire_prior_to);
        if self
            .off_path_response
            .as_ref()
            .and_then(|r| r.spare)
            .is_some_and(|s| s < retire_prior_to)
        {
            self.end_off_path_response();
        }
        let Some(v) = self.path_validation.as_mut() else {
            return;
        };
        if v.old_path.as_ref().is_some_and(|c| c.dcid_seq < retire_prior_to) {
            let challenge = v.old_path.take();
            self.end_old_path_challenge(challenge);
        }
    }

    /// How long a path validation may take (RFC 9000 §8.2.4): "three times the larger of the current PTO
    /// or the PTO for the new path (using kInitialRtt)": the current path's PTO before any reset, and the
    /// PTO of an RTT estimate that starts from the initial RTT (3 x initial RTT, with max_ack_delay).
    fn path_validation_timeout(&self) -> Duration {
        let new_path_pto = RttEstimator::new(self.config.initial_rtt)
            .pto_base()
            .saturating_add(self.peer_max_ack_delay());
        self.pto().max(new_path_pto).saturating_mul(3)
    }

    /// PATH_RESPONSE (RFC 9000 §8.2.2): the path is validated if it echoes our challenge.
    pub(crate) fn on_path_response(&mut self, now: Instant, data: [u8; 8]) {
        if self.path_validation.as_ref().is_some_and(|v| v.data == data) {
            self.path.validated = true;
            // RFC 9000 §8.2.1, §8.2.3: a challenge sent in a datagram below 1200 bytes (held back by the
            // anti-amplification limit, now lifted) validated the address, not the path MTU: a second
            // validation, in a datagram of 1200 bytes, MUST follow, with a timeout of its own (§8.2.4; a
            // first answer late near its deadline would otherwise leave the second no time).
            let timeout = self.path_validation_timeout();
            if let Some(v) = self.path_validation.as_mut().filter(|v| !v.expanded) {
                self.rng.fill(&mut v.data);
                v.pending = true;
                v.deadline = later(now, timeout);
                return;
            }
            let v = self.path_validation.take();
            self.end_old_path_challenge(v.and_then(|v| v.old_path));
        }
    }

    /// The path validation deadline.
    pub(crate) fn path_validation_deadline(&self) -> Option<Instant> {
        self.path_validation.as_ref().map(|v| v.deadline)
    }

    /// Validation timed out: return to the previous path, if there was a validated one (RFC 9000 §9.3.2);
    /// without one, the connection is closed silently.
    pub(crate) fn on_path_validation_timeout(&mut self, now: Instant) {
        if !self.path_validation.as_ref().is_some_and(|v| now >= v.deadline) {
            return;
        }
        let Some(v) = self.path_validation.take().map(|v| *v) else {
            return;
        };
        self.stats.path_validation_failures += 1;
        self.end_old_path_challenge(v.old_path);
        match v.previous {
            Some((previous, state)) => {
                tracing::debug!(side = ?self.side, back_to = %previous.remote, "path validation failed");
                self.return_to(previous, state);
            }
            None => {
                // RFC 9000 §9.3.2: with no validated address to go back to, close silently. (A server's
                // path is validated by the handshake, and migrations wait for it to be confirmed, so
                // this is a safeguard.)
                tracing::debug!(side = ?self.side, "path validation failed with no path to go back to");
                self.close_silently(now);
            }
        }
    }

    /// A packet carrying PATH_CHALLENGE was lost: send it again if that validation is still on.
    pub(crate) fn on_path_challenge_lost(&mut self, data: [u8; 8]) {
        if let Some(v) = &mut self.path_validation {
            if v.data == data {
                v.pending = true;
            }
        }
    }

    /// The old path's challenge, if it is still to be sent.
    pub(crate) fn old_path_challenge_due(&self) -> Option<&OldPathChallenge> {
        self.path_validation
            .as_ref()
            .and_then(|v| v.old_path.as_ref())
            .filter(|c| c.pending)
    }
}
