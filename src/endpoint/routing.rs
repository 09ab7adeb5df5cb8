//! The routing index (RFC 9000 §5.2): which connection a datagram belongs to, found by hash lookups and
//! never by scanning connections.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;

use super::handles::ConnectionHandle;
use crate::rng::Rng;
use crate::wire::{ConnectionId, ResetToken};

/// SipHash (2-4) keyed from the endpoint's seeded RNG: resistant to hash flooding by peers who don't know
/// the seed, yet deterministic, unlike `RandomState`, which reads OS randomness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyedState {
    k0: u64,
    k1: u64,
}

impl KeyedState {
    pub(crate) fn new(rng: &mut Rng) -> Self {
        Self {
            k0: rng.next_u64(),
            k1: rng.next_u64(),
        }
    }
}

/// The keyed SipHasher of [`KeyedState`].
#[derive(Debug, Clone)]
pub(crate) struct KeyedHasher(#[allow(deprecated)] std::hash::SipHasher);

impl Hasher for KeyedHasher {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        // `SipHasher` is deprecated only in favour of crates outside std; it is still SipHash and keyed.
        #[allow(deprecated)]
        KeyedHasher(std::hash::SipHasher::new_with_keys(self.k0, self.k1))
    }
}

/// A fast keyed hash for the index of the endpoint's own connection IDs. Only the endpoint inserts
/// there, IDs it drew at random, so a peer cannot pile entries into one bucket (its lookups of made-up
/// IDs cost one probe each); what matters is the cost per datagram. Each 8 bytes are folded in with a
/// 64x64->128-bit multiply by a key from the seeded RNG. Maps whose keys a peer chooses (client-chosen
/// Initial IDs, addresses, reset tokens) keep SipHash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalCidState {
    k0: u64,
    k1: u64,
}

impl LocalCidState {
    pub(crate) fn new(keys: KeyedState) -> Self {
        // Odd multipliers, so that no key zeroes the product.
        Self {
            k0: keys.k0 | 1,
            k1: keys.k1 | 1,
        }
    }
}

/// The hasher of [`LocalCidState`].
#[derive(Debug, Clone)]
pub(crate) struct LocalCidHasher {
    h: u64,
    k: u64,
}

/// The 128-bit product of `a` and `b`, its halves folded together.
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for LocalCidHasher {
    fn finish(&self) -> u64 {
        fold_mul(self.h, self.k)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.h = fold_mul(self.h ^ u64::from_le_bytes(w), self.k);
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        self.h = fold_mul(
            self.h ^ u64::from_le_bytes(w) ^ ((bytes.len() as u64) << 56),
            self.k,
        );
    }
}

impl BuildHasher for LocalCidState {
    type Hasher = LocalCidHasher;

    fn build_hasher(&self) -> LocalCidHasher {
        LocalCidHasher {
            h: self.k0,
            k: self.k1,
        }
    }
}

/// The three indexes a datagram is routed through.
#[derive(Debug)]
pub(crate) struct Routes {
    /// Every connection ID the endpoint issued, to its connection.
    local: HashMap<ConnectionId, ConnectionHandle, LocalCidState>,
    /// Server side: the destination connection ID a client chose for its first Initial, so retransmitted
    /// Initials and 0-RTT packets reach the connection they created (RFC 9000 §5.2, §7.2).
    initial: HashMap<ConnectionId, ConnectionHandle, KeyedState>,
    /// Connections whose local connection ID is empty, by remote address (RFC 9000 §5.2: then only the
    /// address identifies the connection).
    by_addr: HashMap<SocketAddr, ConnectionHandle, KeyedState>,
    /// The stateless reset token of the peer's connection ID each connection uses (RFC 9000 §10.3.1).
    reset: HashMap<ResetToken, ConnectionHandle, KeyedState>,
    /// The last short-header route taken: a busy connection gets datagram after datagram, and comparing
    /// a few bytes costs less than hashing them. An entry of `local`; forgotten when that entry goes.
    last_short: Option<(ConnectionId, ConnectionHandle)>,
}

impl Routes {
    pub(crate) fn new(keys: KeyedState) -> Self {
        Self {
            local: HashMap::with_hasher(LocalCidState::new(keys)),
            initial: HashMap::with_hasher(keys),
            by_addr: HashMap::with_hasher(keys),
            reset: HashMap::with_hasher(keys),
            last_short: None,
        }
    }

    /// The connection a short-header packet to our non-empty connection ID `dcid` belongs to: the same
    /// answer as [`lookup`](Self::lookup), through a one-entry cache of the last hit.
    pub(crate) fn lookup_short(&mut self, dcid: &[u8]) -> Option<ConnectionHandle> {
        if let Some((cid, h)) = &self.last_short {
            if **cid == *dcid {
                return Some(*h);
            }
        }
        let cid = ConnectionId::new(dcid).filter(|c| !c.is_empty())?;
        let h = *self.local.get(&cid)?;
        self.last_short = Some((cid, h));
        Some(h)
    }

    /// The connection a packet with destination connection ID `dcid` from `remote` belongs to;
    /// `initial_like` for Initial and 0-RTT packets, which may still carry the client-chosen ID.
    pub(crate) fn lookup(
        &self,
        dcid: &[u8],
        remote: SocketAddr,
        initial_like: bool,
    ) -> Option<ConnectionHandle> {
        if dcid.is_empty() {
            return self.by_addr.get(&remote).copied();
        }
        let cid = ConnectionId::new(dcid)?;
        if let Some(h) = self.local.get(&cid) {
            return Some(*h);
        }
        if initial_like {
            return self.initial.get(&cid).copied();
        }
        None
    }

    /// Whether `cid` is in use as a local or client-chosen ID, so a new local ID must not be it.
    pub(crate) fn cid_in_use(&self, cid: &ConnectionId) -> bool {
        self.local.contains_key(cid) || self.initial.contains_key(cid)
    }

    /// Whether a connection with an empty local ID talks to `remote`.
    pub(crate) fn addr_in_use(&self, remote: &SocketAddr) -> bool {
        self.by_addr.contains_key(remote)
    }

    /// Routes `cid` to `h`; false (and nothing changes) when it is empty or already routed elsewhere.
    pub(crate) fn insert_local(&mut self, cid: ConnectionId, h: ConnectionHandle) -> bool {
        if cid.is_empty() {
            return false;
        }
        match self.local.get(&cid) {
            Some(owner) => *owner == h,
            None => {
                self.local.insert(cid, h);
                true
            }
        }
    }

    /// Stops routing `cid`, if it routes to `h`.
    pub(crate) fn remove_local(&mut self, cid: &ConnectionId, h: ConnectionHandle) {
        if self.local.get(cid) == Some(&h) {
            self.local.remove(cid);
            if self.last_short.is_some_and(|(c, _)| c == *cid) {
                self.last_short = None;
            }
        }
    }

    /// Routes Initial and 0-RTT packets with the client-chosen `cid` to `h`; false when already taken.
    pub(crate) fn insert_initial(&mut self, cid: ConnectionId, h: ConnectionHandle) -> bool {
        if self.initial.contains_key(&cid) {
            return false;
        }
        self.initial.insert(cid, h);
        true
    }

    /// Stops routing the client-chosen `cid`, if it routes to `h`.
    /// The capacities of the tables: local IDs, Initial IDs, addresses, reset tokens.
    #[cfg(test)]
    pub(crate) fn capacities(&self) -> [usize; 4] {
        [
            self.local.capacity(),
            self.initial.capacity(),
            self.by_addr.capacity(),
            self.reset.capacity(),
        ]
    }

    /// Gives back the storage of tables mostly emptied (after a burst of connections).
    pub(crate) fn shrink(&mut self) {
        if let Some(n) = super::sparse(self.local.len(), self.local.capacity()) {
            self.local.shrink_to(n);
        }
        if let Some(n) = super::sparse(self.initial.len(), self.initial.capacity()) {
            self.initial.shrink_to(n);
        }
        if let Some(n) = super::sparse(self.by_addr.len(), self.by_addr.capacity()) {
            self.by_addr.shrink_to(n);
        }
        if let Some(n) = super::sparse(self.reset.len(), self.reset.capacity()) {
            self.reset.shrink_to(n);
        }
    }

    pub(crate) fn remove_initial(&mut self, cid: &ConnectionId, h: ConnectionHandle) {
        if self.initial.get(cid) == Some(&h) {
            self.initial.remove(cid);
        }
    }

    /// Routes datagrams with an empty destination ID from `remote` to `h`; false when already taken.
    pub(crate) fn insert_addr(&mut self, remote: SocketAddr, h: ConnectionHandle) -> bool {
        if self.by_addr.contains_key(&remote) {
            return false;
        }
        self.by_addr.insert(remote, h);
        true
    }

    /// Stops routing by `remote`, if it routes to `h`.
    pub(crate) fn remove_addr(&mut self, remote: &SocketAddr, h: ConnectionHandle) {
        if self.by_addr.get(remote) == Some(&h) {
            self.by_addr.remove(remote);
        }
    }

    /// The lengths of the tables: local IDs, Initial IDs, addresses, reset tokens.
    #[cfg(test)]
    pub(crate) fn lens(&self) -> [usize; 4] {
        [
            self.local.len(),
            self.initial.len(),
            self.by_addr.len(),
            self.reset.len(),
        ]
    }

    /// Every route, for consistency checks: local IDs, Initial IDs, addresses, reset tokens, and the
    /// cached short-header route.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) fn all(
        &self,
    ) -> (
        Vec<(ConnectionId, ConnectionHandle)>,
        Vec<(ConnectionId, ConnectionHandle)>,
        Vec<(SocketAddr, ConnectionHandle)>,
        Vec<(ResetToken, ConnectionHandle)>,
        Option<(ConnectionId, ConnectionHandle)>,
    ) {
        (
            self.local.iter().map(|(k, v)| (*k, *v)).collect(),
            self.initial.iter().map(|(k, v)| (*k, *v)).collect(),
            self.by_addr.iter().map(|(k, v)| (*k, *v)).collect(),
            self.reset.iter().map(|(k, v)| (*k, *v)).collect(),
            self.last_short,
        )
    }

    /// How many local connection IDs are routed.
    #[cfg(test)]
    pub(crate) fn local_len(&self) -> usize {
        self.local.len()
    }

    /// The connection whose peer's reset token ends `datagram`, if any.
    pub(crate) fn reset_lookup(&self, datagram: &[u8]) -> Option<ConnectionHandle> {
        let tail = datagram.get(datagram.len().checked_sub(ResetToken::LEN)?..)?;
        let token = ResetToken(<[u8; ResetToken::LEN]>::try_from(tail).ok()?);
        self.reset.get(&token).copied()
    }

    /// Routes stateless resets with `token` to `h` (a token already taken stays with its connection).
    pub(crate) fn insert_reset(&mut self, token: ResetToken, h: ConnectionHandle) -> bool {
        if self.reset.contains_key(&token) {
            return false;
        }
        self.reset.insert(token, h);
        true
    }

    /// Stops routing resets with `token`, if they route to `h`.
    pub(crate) fn remove_reset(&mut self, token: &ResetToken, h: ConnectionHandle) {
        if self.reset.get(token) == Some(&h) {
            self.reset.remove(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::handles::Table;

    /// The one-entry cache of `lookup_short` answers as the map does, before and after a route goes and
    /// comes back to another connection.
    #[test]
    fn short_route_cache_follows_the_map() {
        let mut routes = Routes::new(KeyedState::new(&mut Rng::from_seed(3)));
        let mut table = Table::default();
        let (h1, h2) = (table.insert(()).unwrap(), table.insert(()).unwrap());
        let (a, b) = (
            ConnectionId::new(&[1; 8]).unwrap(),
            ConnectionId::new(&[2; 8]).unwrap(),
        );
        assert!(routes.insert_local(a, h1));
        assert!(routes.insert_local(b, h2));
        assert_eq!(routes.lookup_short(&a), Some(h1));
        assert_eq!(routes.lookup_short(&a), Some(h1));
        assert_eq!(routes.lookup_short(&b), Some(h2));
        assert_eq!(routes.lookup_short(&[1; 7]), None);
        assert_eq!(routes.lookup_short(&[]), None);
        // Removing the other connection's route keeps the cached one; removing the cached one forgets it.
        routes.remove_local(&a, h1);
        assert_eq!(routes.lookup_short(&b), Some(h2));
        routes.remove_local(&b, h1);
        assert_eq!(routes.lookup_short(&b), Some(h2));
        routes.remove_local(&b, h2);
        assert_eq!(routes.lookup_short(&b), None);
        assert!(routes.insert_local(b, h1));
        assert_eq!(routes.lookup_short(&b), Some(h1));
        assert_eq!(routes.lookup(&b, "10.0.0.1:1".parse().unwrap(), false), Some(h1));
    }

    /// RFC 9000 §21.13 (hash flooding): the routing tables hash under keys drawn from the endpoint's seed,
    /// so the same connection ID lands in another bucket at an endpoint with another seed, and one who
    /// does not know the seed cannot pick IDs that collide. The same seed gives the same hashes (runs
    /// repeat).
    #[test]
    fn routing_hashes_are_keyed_by_the_endpoint_seed() {
        let cid = ConnectionId::new(&[0x5a; 8]).unwrap();
        let addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let hashes = |seed: u64| {
            let ep = crate::endpoint::Endpoint::new(crate::EndpointConfig::with_seed(seed), None);
            let r = &ep.routes;
            (
                r.local.hasher().hash_one(cid),
                r.initial.hasher().hash_one(cid),
                r.by_addr.hasher().hash_one(addr),
                r.reset.hasher().hash_one(ResetToken([7; 16])),
            )
        };
        let (a, a_again, b) = (hashes(1), hashes(1), hashes(2));
        assert_eq!(a, a_again);
        assert_ne!(a.0, b.0, "the local connection ID index");
        assert_ne!(a.1, b.1, "the Initial ID index");
        assert_ne!(a.2, b.2, "the address index");
        assert_ne!(a.3, b.3, "the reset token index");
    }
}
