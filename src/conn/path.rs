//! The peer's address changing under a connection (RFC 9000 §9): NAT rebinding, or a client moving.
//!
//! A server that receives an authenticated, non-probing packet with the largest packet number so far
//! from a new address moves the connection there (RFC 9000 §9.3), limits what it sends there to three
//! times what it received until the address is validated with PATH_CHALLENGE (§8.2), and goes back to
//! the previous path if validation fails. It also challenges the path it left (§9.3.3): if the move was
//! an attacker forwarding a copy of the client's packet, the client still on the old path answers with a
//! newer packet from there, which moves the connection back, with the congestion state, RTT estimate
//! and MTU it had there. No connection ID of the peer's is sent to two addresses (§9.5): while the
//! peer has spare IDs, each new address gets one of its own, the old path's challenge goes with the ID
//! that path already carried, and a return to the old path takes that ID back. Without a spare, the ID in
//! use goes on to the new address only if the peer kept sending to the same ID of ours (a NAT
//! rebinding); a peer that moved to another of our IDs is followed once it gives us a new one of its own
//! (`may_follow`). A PATH_CHALLENGE from another address than the current path's (a probe, §9.1, or one
//! from a path the peer left before it was answered) is answered there, alone in a datagram (§8.2.2).
//! Clients do not follow a server to a new address (servers do not migrate in QUIC v1, short of
//! preferred_address, which quicsand neither offers nor follows: its connection ID is only kept as a
//! spare).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::congestion::{new_controller, CongestionController};
use super::connection::{later, Connection, EndpointEvent, Path};
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
    /// When the challenge goes again, with new data, if no response came: RFC 9000 §8.2.1 ("MAY send
    /// multiple PATH_CHALLENGE frames to guard against packet loss") and §9.4 ("a separate timer when a
    /// PATH_CHALLENGE is sent ... If the timer fires before the PATH_RESPONSE is received, the endpoint
    /// might send a new PATH_CHALLENGE and restart the timer for a longer period of time. This timer
    /// SHOULD be set as described in Section 6.2.1 of [QUIC-RECOVERY]"). Without it a lost challenge
    /// went again only once declared lost, after the next PTO, which after an outage has backed off far
    /// beyond `deadline`: one loss failed the validation.
    pub(crate) resend_at: Instant,
    /// The period `resend_at` was last set for: the new path's PTO at first, doubled each time it fires.
    pub(crate) resend_after: Duration,
    /// A PATH_CHALLENGE with `data` went out in a datagram of at least 1200 bytes. One held below that by
    /// the anti-amplification limit validates the address but not the path MTU (RFC 9000 §8.2.1).
    pub(crate) expanded: bool,
    /// The data of the last challenge declared lost, and whether it went expanded: the one sent again
    /// has new data (RFC 9000 §13.3: "a different payload each time"), but the loss may have been
    /// spurious, and a response to it still counts (§8.2.2: "a previous PATH_CHALLENGE").
    pub(crate) earlier: Option<([u8; 8], bool)>,
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
    /// Where the path's packets start (`LossDetection::path_start`): those still in flight feed its
    /// controller and count against its window again when the connection comes back.
    start: crate::conn::recovery::PathStart,
    /// The path's own pending undo of a congestion event (`Connection::cc_undo`) when it was left: it
    /// comes back with the path's controller.
    cc_undo: Option<crate::conn::congestion::SpuriousUndo>,
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
    /// The peer's connection ID it is sent to (the one the old path used), that ID's sequence number
    /// and its stateless reset token.
    pub(crate) dcid: ConnectionId,
    pub(crate) dcid_seq: u64,
    pub(crate) reset_token: Option<ResetToken>,
    /// `dcid` is no longer the ID in use (the new path took a spare): it is retired when the validation
    /// succeeds, and in use again if the connection returns to the old path. Otherwise it is the ID in
    /// use, for lack of a spare.
    pub(crate) spare: bool,
}

impl Connection {
    /// The peer now sends from `remote`, to our connection ID `dcid`: move the connection there and
    /// validate the new address.
    ///
    /// Returns the peer's connection ID that the path left used, when the move put it out of use (the
    /// new path took another, RFC 9000 §9.5): the caller answers a challenge still owed to that path with
    /// it, or retires it. And, on a return to the validated path left, the data of a PATH_CHALLENGE from
    /// there still unanswered (it was to go with that path's challenge, not sent yet): the caller
    /// answers it there, now the current path again (§8.2.2: the endpoint MUST respond).
    #[must_use]
    pub(crate) fn migrate(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        len: usize,
        dcid: ConnectionId,
    ) -> (Option<(u64, ConnectionId)>, Option<[u8; 8]>) {
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
            let owed_here = v.old_path.as_ref().filter(|c| c.pending).and_then(|c| c.response);
            let released = self.take_back_old_path_cid(v.old_path);
            if let Some((mut previous, state)) = v.previous {
                previous.bytes_received += len as u64;
                previous.local_ip = local_ip.or(previous.local_ip);
                previous.peer_dcid = dcid;
                self.return_to(previous, state);
            }
            self.announce_reset_tokens();
            return (released, owed_here);
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
                peer_dcid: dcid,
            },
        );
        // A second move during a validation keeps the last validated path as the fallback, and its
        // challenge; the ID in use went to the address left, so the new one gets another. But a path
        // left once validated (its address was, and only the second, MTU-sized check still ran) is
        // itself the last validated path: the fallback and the path to challenge (RFC 9000 §9.3.2,
        // §9.3.3), and the older one's challenge ends.
        let (previous, old_path, released) = match validation {
            Some(mut v) if !old.validated => {
                let released = self.switch_to_spare(v.old_path.as_mut());
                (v.previous, v.old_path, released)
            }
            validation if old.validated => {
                if let Some(v) = validation {
                    self.end_old_path_challenge(v.old_path);
                }
                let challenge = self.old_path_challenge(&old);
                let state = PathState {
                    cc: self.cc.clone_box(),
                    rtt: self.recovery.rtt().clone(),
                    mtud: self.mtud.clone(),
                    start: self.recovery.path_start(),
                    cc_undo: self
                        .cc_undo
                        .as_ref()
                        .map(|u| crate::conn::congestion::SpuriousUndo {
                            saved: u.saved.clone_box(),
                            first_pn: u.first_pn,
                            outstanding: u.outstanding,
                        }),
                };
                (Some((old, state)), Some(challenge), None)
            }
            _ => (None, None, self.switch_to_spare(None)),
        };
        let previous = previous.filter(|(p, _)| p.remote != remote);
        self.on_new_path(ip_changed);
        let mut data = [0u8; 8];
        self.rng.fill(&mut data);
        // RFC 9000 §9.4: the challenge's own timer is a PTO of the new path (its RTT estimate starts again
        // after a change of IP address), without the backoff of the path left.
        let resend_after = self.pto();
        // Boxed: most connections never validate a path, and the state is large.
        self.path_validation = Some(Box::new(PathValidation {
            data,
            pending: true,
            deadline: later(now, timeout),
            resend_at: later(now, resend_after),
            resend_after,
            expanded: false,
            earlier: None,
            previous,
            old_path,
        }));
        // RFC 9000 §10.3.1: the old path's ID, if the new path took a spare, still goes to the old
        // address with the challenge: a reset may end with its token too.
        self.announce_reset_tokens();
        self.stats.path_migrations += 1;
        (released, None)
    }

    /// What a new path starts from (RFC 9000 §9.4): packets sent from now on are its own; unless only the
    /// peer's port changed, its congestion controller and RTT estimate start again, and its MTU, unknown,
    /// falls back to the starting size ([`TransportConfig::mtu`](crate::TransportConfig::mtu), 1200 by
    /// default: the size every path carries) until probed.
    fn on_new_path(&mut self, ip_changed: bool) {
        let rtt = ip_changed.then(|| RttEstimator::new(self.config.initial_rtt()));
        self.recovery.on_path_change(rtt);
        // RFC 9000 §13.4.2: marks are validated on each path (also when only the port changed: a NAT
        // that rebound may treat them otherwise).
        self.ecn.on_path_change();
        if ip_changed {
            // A controller saved for undoing a spurious loss belongs to the path left.
            self.cc_undo = None;
            // RFC 9000 §14.2.1: the new path's MTU is unknown: back to the starting size, and probe it.
            self.mtud.restart();
            self.cc = new_controller(&self.config, self.mtud.current());
            #[cfg(feature = "qlog")]
            self.qlog.set_recovery(false);
            self.set_mtu(self.mtud.current());
        }
    }

    /// Back on `path`, a validated path the connection used before, with what it knew of it.
    fn return_to(&mut self, path: Path, state: PathState) {
        tracing::debug!(side = ?self.side, to = %path.remote, "back on the previous path");
        self.path = path;
        self.cc = state.cc;
        // qlog takes the controller coming back to be out of its recovery period: whether it still is
        // (back within a round trip of a loss) is not kept with it.
        #[cfg(feature = "qlog")]
        self.qlog.set_recovery(false);
        // The path's own undo comes back with its controller; the path left's goes.
        self.cc_undo = state.cc_undo;
        self.mtud = state.mtud;
        self.mtud.forget_probe();
        self.recovery.return_to_path(state.start, state.rtt);
        self.ecn.on_path_change();
        self.set_mtu(self.mtud.current());
    }

    /// The challenge to `old`, the validated path the peer left, with the connection ID that path used.
    /// The new path takes a spare ID of the peer's if there is one (RFC 9000 §9.5: an ID is not sent to
    /// two addresses). Without a spare both share the ID in use (which §9.5 allows when the peer kept
    /// its own ID, as after a NAT rebinding): validating the old path (§9.3.3) is what stops an attacker
    /// who forwards packets from taking the connection over.
    fn old_path_challenge(&mut self, old: &Path) -> OldPathChallenge {
        let mut data = [0u8; 8];
        self.rng.fill(&mut data);
        let spare = self.take_spare_for_path();
        let (dcid_seq, dcid, reset_token) = match spare {
            Some((seq, cid, token)) => self.use_peer_cid(seq, cid, Some(token)),
            None => (self.remote_cid_seq, self.remote_cid, self.remote_reset_token),
        };
        OldPathChallenge {
            remote: old.remote,
            local_ip: old.local_ip,
            data,
            pending: true,
            response: None,
            dcid,
            dcid_seq,
            reset_token,
            spare: spare.is_some(),
        }
    }

    /// Makes `cid` (sequence `seq`, reset token `token`) the peer's connection ID in use; returns the one
    /// it replaces.
    pub(crate) fn use_peer_cid(
        &mut self,
        seq: u64,
        cid: ConnectionId,
        token: Option<ResetToken>,
    ) -> (u64, ConnectionId, Option<ResetToken>) {
        let longer = cid.len() > self.remote_cid.len();
        let old = (
            std::mem::replace(&mut self.remote_cid_seq, seq),
            std::mem::replace(&mut self.remote_cid, cid),
            self.remote_reset_token,
        );
        self.set_remote_reset_token(token);
        if longer {
            // IDs may differ in length (RFC 9000 §5.1): queued datagrams sized for the shorter one that no
            // longer fit a packet leave the queue, or they would block it for good.
            self.drop_unsendable_datagrams();
        }
        old
    }

    /// The ID in use went to another address than the one the connection now sends to (a second move
    /// during a validation, or a return to an old path whose ID was retired meanwhile): the peer's
    /// lowest spare, if there is one, takes its place (RFC 9000 §9.5). Returns the ID put out of use,
    /// unless the old path's `challenge` shared it, in which case the challenge now holds it alone.
    fn switch_to_spare(&mut self, challenge: Option<&mut OldPathChallenge>) -> Option<(u64, ConnectionId)> {
        if self.remote_cid.is_empty() {
            // Zero-length IDs: nothing to link, and none to spare.
            return None;
        }
        let (seq, cid, token) = self.take_spare_for_path()?;
        let (old_seq, old_cid, old_token) = self.use_peer_cid(seq, cid, Some(token));
        match challenge {
            Some(c) if !c.spare && c.dcid_seq == old_seq => {
                c.spare = true;
                c.reset_token = old_token;
                None
            }
            _ => Some((old_seq, old_cid)),
        }
    }

    /// Back on the old path: the ID it used, which its `challenge` held, is in use again, and the one
    /// the path being left used is returned, out of use. If that ID was retired meanwhile (the peer's
    /// Retire Prior To passed it, which ended the challenge), the old path takes a spare instead: the ID
    /// in use went to the address being left (RFC 9000 §9.5).
    fn take_back_old_path_cid(&mut self, challenge: Option<OldPathChallenge>) -> Option<(u64, ConnectionId)> {
        match challenge {
            Some(c) if c.spare => {
                let (seq, cid, _) = self.use_peer_cid(c.dcid_seq, c.dcid, c.reset_token);
                Some((seq, cid))
            }
            Some(_) => None,
            None => self.switch_to_spare(None),
        }
    }

    /// The old path's challenge is over and the connection stays on the new path: the old path's ID, if
    /// it is out of use, is retired (one per validation, so not held to the bound on owed retirements,
    /// which is for what the peer asks of us).
    /// RFC 9000 §10.3.1: the retired ID's token is no longer checked, so the endpoint learns the tokens
    /// left.
    fn end_old_path_challenge(&mut self, challenge: Option<OldPathChallenge>) {
        if let Some(c) = challenge.filter(|c| c.spare) {
            self.retire_spare(c.dcid_seq);
        }
        self.announce_reset_tokens();
    }

    /// A spare connection ID of the peer's for a new path, an old path's challenge or an off-path
    /// answer: none while the retirements owed are at their bound. Each ID taken so is retired once its
    /// use ends, outside the bound on what the peer asks us to retire (`queue_retire`), so a peer that
    /// keeps moving and acknowledges nothing would otherwise make the owed RETIRE_CONNECTION_ID frames
    /// grow without end (RFC 9000 §5.1.2: an endpoint SHOULD limit them). Without a spare the connection
    /// goes on as it does when the peer has none to give (§9.5).
    fn take_spare_for_path(&mut self) -> Option<(u64, ConnectionId, ResetToken)> {
        if !self.spare_for_path_available() {
            return None;
        }
        self.take_lowest_spare()
    }

    /// Whether [`take_spare_for_path`](Self::take_spare_for_path) would find a spare.
    fn spare_for_path_available(&self) -> bool {
        (self.retire_cids.len() as u64) < self.retire_owed_limit() && !self.peer_cids.is_empty()
    }

    /// Whether the connection may follow the peer to `remote`, where a non-probing packet to our connection
    /// ID `dcid` came from. RFC 9000 §9.5: "an endpoint MUST NOT reuse a connection ID when sending to
    /// more than one destination address", but it "MAY continue to use the current connection ID with
    /// the new remote address" when packets arrive from there "with the same Destination Connection ID
    /// field value" (a NAT rebinding). So: with a spare ID of the peer's for the new address, with
    /// zero-length IDs (nothing to link), when the peer still sends to the ID it used on the current
    /// path, or back to the validated path left (§9.3.2, §9.3.3: it keeps its own ID, or already saw
    /// the one in use). A peer that moved to another of our IDs while we hold no spare of its own is not
    /// followed: §9.3: "it will not be able to send anything on the new path until the peer provides
    /// one", and the connection stays where it is meanwhile (§9 lets us ignore a peer that moves against
    /// our disable_active_migration). Its next packet from there after a NEW_CONNECTION_ID moves it.
    pub(crate) fn may_follow(&self, remote: SocketAddr, dcid: &ConnectionId) -> bool {
        self.remote_cid.is_empty()
            || *dcid == self.path.peer_dcid
            || self.spare_for_path_available()
            || self
                .path_validation
                .as_ref()
                .and_then(|v| v.previous.as_ref())
                .is_some_and(|(p, _)| p.remote == remote)
    }

    /// The bound on RETIRE_CONNECTION_ID frames owed (RFC 9000 §5.1.2: at least twice the limit).
    pub(crate) fn retire_owed_limit(&self) -> u64 {
        4 * self.config.connection_id_limit()
    }

    /// Takes the peer's spare connection ID with the lowest sequence number out of `peer_cids`.
    pub(crate) fn take_lowest_spare(&mut self) -> Option<(u64, ConnectionId, ResetToken)> {
        self.peer_cids.sort_unstable_by_key(|(s, ..)| *s);
        (!self.peer_cids.is_empty()).then(|| self.peer_cids.remove(0))
    }

    /// Retires `seq`, a connection ID of the peer's taken out of `peer_cids` for one path's use, now out of
    /// use.
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
    /// §8.1). `dcid_there` is the connection ID that already went there (a path the peer left), with its
    /// sequence number if it is out of use (retired once the answer goes); without one the answer takes
    /// a spare ID of the peer's (§9.5), and without a spare (unless the peer's IDs are zero-length) it
    /// cannot be sent.
    /// One answer waits at most: a newer one replaces it.
    pub(crate) fn answer_off_path(
        &mut self,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        data: [u8; 8],
        allowance: u64,
        dcid_there: Option<(ConnectionId, Option<u64>)>,
    ) {
        self.end_off_path_response();
        let size = usize::try_from(allowance).map_or(MIN_INITIAL_DATAGRAM, |a| a.min(MIN_INITIAL_DATAGRAM));
        // A peer using zero-length connection IDs has none to spare, and nothing to link (§9.5).
        let (dcid, spare) = if let Some(there) = dcid_there {
            there
        } else if self.remote_cid.is_empty() {
            (self.remote_cid, None)
        } else if let Some((seq, cid, _)) = self.take_spare_for_path() {
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
        let new_path_pto = RttEstimator::new(self.config.initial_rtt())
            .pto_base()
            .saturating_add(self.peer_max_ack_delay());
        self.pto().max(new_path_pto).saturating_mul(3)
    }

    /// PATH_RESPONSE (RFC 9000 §8.2.2): the path is validated if it echoes our challenge.
    pub(crate) fn on_path_response(&mut self, now: Instant, data: [u8; 8]) {
        // The challenge it answers: the current one, or the one before, declared lost.
        let Some(expanded) = self.path_validation.as_ref().and_then(|v| {
            if v.data == data {
                Some(v.expanded)
            } else {
                v.earlier.filter(|(d, _)| *d == data).map(|(_, e)| e)
            }
        }) else {
            return;
        };
        self.path.validated = true;
        // RFC 9000 §8.2.1, §8.2.3: a challenge sent in a datagram below 1200 bytes (held back by the
        // anti-amplification limit, now lifted) validated the address, not the path MTU: a second
        // validation, in a datagram of 1200 bytes, MUST follow, with a timeout of its own (§8.2.4; a
        // first answer late near its deadline would otherwise leave the second no time).
        let timeout = self.path_validation_timeout();
        let resend_after = self.pto();
        if let Some(v) = self.path_validation.as_mut().filter(|_| !expanded) {
            self.rng.fill(&mut v.data);
            v.pending = true;
            v.expanded = false;
            v.earlier = None;
            v.deadline = later(now, timeout);
            v.resend_after = resend_after;
            v.resend_at = later(now, resend_after);
            return;
        }
        let v = self.path_validation.take();
        self.end_old_path_challenge(v.and_then(|v| v.old_path));
        if self.side.is_server() {
            self.endpoint_events.push_back(EndpointEvent::PathValidated);
        }
    }

    /// The path validation's next timer: the challenge goes again, or the validation is given up.
    pub(crate) fn path_validation_deadline(&self) -> Option<Instant> {
        self.path_validation.as_ref().map(|v| v.deadline.min(v.resend_at))
    }

    /// Validation timed out: return to the previous path, if there was a validated one (RFC 9000 §9.3.2);
    /// without one, the connection is closed silently. Before that, the challenge's own timer sends it
    /// again (RFC 9000 §8.2.1, §9.4).
    pub(crate) fn on_path_validation_timeout(&mut self, now: Instant) {
        if let Some(v) = self
            .path_validation
            .as_mut()
            .filter(|v| now >= v.resend_at && now < v.deadline)
        {
            // "restart the timer for a longer period of time" (§9.4): twice as long, as PTOs back off.
            v.resend_after = v.resend_after.saturating_mul(2);
            v.resend_at = later(now, v.resend_after);
            if !v.pending {
                // RFC 9000 §13.3: new data each time; a late answer to the one before still counts.
                v.earlier = Some((v.data, v.expanded));
                self.rng.fill(&mut v.data);
                v.expanded = false;
                v.pending = true;
            }
        }
        if !self.path_validation.as_ref().is_some_and(|v| now >= v.deadline) {
            return;
        }
        let Some(v) = self.path_validation.take().map(|v| *v) else {
            return;
        };
        self.stats.path_validation_failures += 1;
        match v.previous {
            Some((previous, state)) => {
                tracing::debug!(side = ?self.side, back_to = %previous.remote, "path validation failed");
                if let Some((seq, _)) = self.take_back_old_path_cid(v.old_path) {
                    self.retire_spare(seq);
                }
                self.return_to(previous, state);
                self.announce_reset_tokens();
            }
            None => {
                self.end_old_path_challenge(v.old_path);
                // RFC 9000 §9.3.2: with no validated address to go back to, close silently. (A server's
                // path is validated by the handshake, and migrations wait for it to be confirmed, so
                // this is a safeguard.)
                tracing::debug!(side = ?self.side, "path validation failed with no path to go back to");
                self.close_silently(now);
            }
        }
    }

    /// A packet carrying PATH_CHALLENGE was lost: if that validation is still on, a new challenge goes.
    pub(crate) fn on_path_challenge_lost(&mut self, data: [u8; 8]) {
        if let Some(v) = self.path_validation.as_mut().filter(|v| v.data == data) {
            // RFC 9000 §13.3: a PATH_CHALLENGE is not sent again as it was; a new one, with new data.
            v.earlier = Some((v.data, v.expanded));
            self.rng.fill(&mut v.data);
            v.expanded = false;
            v.pending = true;
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
