//! The peer's address changing under a connection (RFC 9000 §9): NAT rebinding, or a client moving.
//!
//! A server that receives an authenticated, non-probing packet with the largest packet number so far
//! from a new address moves the connection there (RFC 9000 §9.3), limits what it sends there to three
//! times what it received until the address is validated with PATH_CHALLENGE (§8.2), and goes back to
//! the previous path if validation fails. Clients do not follow a server to a new address (servers do
//! not migrate in QUIC v1, short of preferred_address, which quicsand does not offer).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::congestion::new_controller;
use super::connection::{later, Connection, Path};

/// A path validation in progress (RFC 9000 §8.2).
#[derive(Debug, Clone)]
pub(crate) struct PathValidation {
    /// The PATH_CHALLENGE data; a PATH_RESPONSE must echo it.
    pub(crate) data: [u8; 8],
    /// A PATH_CHALLENGE waits to be sent (first time, or again after a loss).
    pub(crate) pending: bool,
    /// When validation is given up (RFC 9000 §8.2.4).
    pub(crate) deadline: Instant,
    /// The validated path the connection used before, to return to if this one fails (§9.3.2).
    pub(crate) previous: Option<Path>,
}

impl Connection {
    /// The peer now sends from `remote`: move the connection there and validate the new address.
    pub(crate) fn migrate(&mut self, now: Instant, remote: SocketAddr, local_ip: Option<IpAddr>, len: usize) {
        tracing::debug!(side = ?self.side, from = %self.path.remote, to = %remote, "peer address changed");
        let ip_changed = remote.ip() != self.path.remote.ip();
        if ip_changed {
            // RFC 9000 §14.2.1, §9.4: the new path's MTU is unknown: back to the base size, and probe it.
            self.mtud.restart();
        }
        let mtu = self.mtud.current();
        let local_ip = local_ip.or(self.path.local_ip);
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
        // A second move during a validation keeps the last validated path as the fallback.
        let previous = match self.path_validation.take() {
            Some(v) => v.previous,
            None => Some(old),
        }
        .filter(|p| p.validated && p.remote != remote);
        if ip_changed {
            // RFC 9000 §9.4: the new path's capacity is unknown; a change of port only (NAT rebinding) may
            // keep the congestion state.
            self.cc = new_controller(self.config.congestion, mtu);
        }
        let mut data = [0u8; 8];
        self.rng.fill(&mut data);
        // RFC 9000 §8.2.4: give up after three PTOs, and no sooner than 6 x the initial RTT.
        let timeout = self
            .pto()
            .saturating_mul(3)
            .max(self.config.initial_rtt.saturating_mul(6));
        self.path_validation = Some(PathValidation {
            data,
            pending: true,
            deadline: later(now, timeout),
            previous,
        });
        self.stats.path_migrations += 1;
    }

    /// PATH_RESPONSE (RFC 9000 §8.2.2): the path is validated if it echoes our challenge.
    pub(crate) fn on_path_response(&mut self, data: [u8; 8]) {
        if self.path_validation.as_ref().is_some_and(|v| v.data == data) {
            self.path.validated = true;
            self.path_validation = None;
        }
    }

    /// The path validation deadline.
    pub(crate) fn path_validation_deadline(&self) -> Option<Instant> {
        self.path_validation.as_ref().map(|v| v.deadline)
    }

    /// Validation timed out: return to the previous path, if there was a validated one (RFC 9000 §9.3.2).
    pub(crate) fn on_path_validation_timeout(&mut self, now: Instant) {
        if !self.path_validation.as_ref().is_some_and(|v| now >= v.deadline) {
            return;
        }
        let Some(v) = self.path_validation.take() else {
            return;
        };
        self.stats.path_validation_failures += 1;
        if let Some(previous) = v.previous {
            tracing::debug!(side = ?self.side, back_to = %previous.remote, "path validation failed");
            self.path = previous;
            // What the probes of the failed path found may not hold here: search again.
            self.mtud.restart();
            self.set_mtu(self.mtud.current());
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
}
