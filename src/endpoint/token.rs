//! Address validation on the server (RFC 9000 §8.1): sealing and opening tokens, answering a client's
//! first Initial with a Retry (§8.1.2, §17.2.5), and issuing NEW_TOKEN tokens (§8.1.3).
//!
//! # Token format
//!
//! `kind (1) | nonce (12) | AES-256-GCM(plaintext) | tag (16)`, where the plaintext is
//! `issued (8, ms) | unique (8)`, followed in Retry tokens by `client IP (16) | client port (2) | odcid
//! length (1) | odcid` (the original destination connection ID), and the associated data is `kind |
//! clock kind | QUIC version (4)`, followed in NEW_TOKEN tokens by `client IP (16)`, in Retry tokens by
//! `length (1) | the Retry's source connection ID`, and, in tokens dated by the endpoint's own clock, by
//! the issuing endpoint's instance (8). So a NEW_TOKEN token only opens for the IP address it was issued
//! to, a Retry token only for the connection ID its Retry gave (and its address is checked once it
//! opens: see `Endpoint::admit`), both only for their QUIC version (RFC 9369 §7), and a NEW_TOKEN
//! token cannot pass for a Retry token or the reverse: the kind byte is in the clear, to tell them
//! apart, and authenticated, so flipping it breaks the tag.
//!
//! The nonce is synthetic (HMAC-SHA-256 of the associated data and plaintext, truncated): it repeats only
//! for identical input, so nonce uniqueness never depends on an RNG, which matters when servers share a
//! key and perhaps a seed.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{hkdf, hmac};

use super::{Endpoint, EndpointStats, StaleHandle, StatelessKind, StatelessPacket};
use crate::config::{ClientConfig, ServerConfig};
use crate::conn::Connection;
use crate::crypto::{retry_tag, Keys};
use crate::datagram::Datagram;
use crate::rng::Rng;
use crate::validation::{RetryPolicy, TokenConfig, TokenStore};
use crate::wire::frame::{ConnectionClose, Frame};
use crate::wire::header::{Header, ProtectedHeader, RetryHeader, VERSION_1};
use crate::wire::packet_number::TruncatedPn;
use crate::wire::{ConnectionId, Reader, TransportError, TransportErrorCode};
use crate::ConnectionHandle;

/// First byte of a Retry token.
const KIND_RETRY: u8 = b'R';
/// First byte of a NEW_TOKEN token.
const KIND_NEW_TOKEN: u8 = b'N';
/// The token was dated by the caller's [`WallClock`](crate::WallClock).
const CLOCK_WALL: u8 = 1;
/// The token was dated by time since this endpoint's first token operation.
const CLOCK_LOCAL: u8 = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// `issued` and `unique`.
const PLAIN_FIXED_LEN: usize = 16;
/// A token dated this far in the future is still accepted (clock skew between servers sharing a key).
const MAX_FUTURE_SKEW: Duration = Duration::from_secs(10);
/// At most this many NEW_TOKEN frames per connection.
const MAX_NEW_TOKENS: usize = 8;
/// NEW_TOKEN tokens remembered as used, to refuse a second use (RFC 9000 §8.1.4); the oldest are
/// forgotten first, so replay is limited to tokens older than the last this many uses.
const REPLAY_LOG_LEN: usize = 4096;
/// RFC 9000 §7.2: the length a client's first Destination Connection ID has at least; the IDs a server
/// puts in a Retry get the same floor, since the retried client's next Initial is routed by it (and the
/// endpoint drops any Initial whose DCID is shorter before it looks at the token).
const MIN_RETRY_SCID_LEN: usize = super::MIN_INITIAL_DCID_LEN;

/// Why [`Endpoint::retry`] could not answer a connection with a Retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryError {
    /// The handle names no connection.
    Stale(StaleHandle),
    /// The connection is not held (see [`AcceptPolicy::Ask`](crate::AcceptPolicy::Ask)): it may have
    /// sent packets already, after which the client ignores a Retry (RFC 9000 §17.2.5.2).
    NotHeld,
    /// The client already followed a Retry; it would ignore another (RFC 9000 §17.2.5.2).
    AlreadyRetried,
    /// The endpoint is a client, or the queue of stateless packets is full.
    Unavailable,
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryError::Stale(h) => h.fmt(f),
            RetryError::NotHeld => f.write_str("the connection is not held"),
            RetryError::AlreadyRetried => f.write_str("the client already followed a Retry"),
            RetryError::Unavailable => f.write_str("no Retry can be sent now"),
        }
    }
}

impl std::error::Error for RetryError {}

/// The sealing keys, derived from the 32-byte secret of [`TokenConfig::key`].
struct TokenKeys {
    aead: LessSafeKey,
    siv: hmac::Key,
}

impl TokenKeys {
    fn new(secret: &[u8; 32]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"quicsand address validation").extract(secret);
        let aead_key: UnboundKey = prk
            .expand(&[b"token aead"], &aead::AES_256_GCM)
            .expect("HKDF-SHA-256 can expand 32 bytes")
            .into();
        let siv: hmac::Key = prk
            .expand(&[b"token nonce"], hmac::HMAC_SHA256)
            .expect("HKDF-SHA-256 can expand 32 bytes")
            .into();
        Self {
            aead: LessSafeKey::new(aead_key),
            siv,
        }
    }

    /// `aad[0] | nonce | sealed plaintext | tag`; `aad[0]` is the token kind.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut mac = hmac::Context::with_key(&self.siv);
        mac.update(aad);
        mac.update(plaintext);
        let mac = mac.sign();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(mac.as_ref().get(..NONCE_LEN).unwrap_or(&[0; NONCE_LEN]));
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(aad.first().copied().unwrap_or_default());
        out.extend_from_slice(&nonce);
        let mut sealed = plaintext.to_vec();
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut sealed)
            .expect("AES-GCM seals any plaintext under 64 GiB");
        out.extend_from_slice(&sealed);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The plaintext of `token`, if it was sealed with these keys and `aad`.
    fn open(&self, token: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::new(token);
        let kind = r.read_u8().ok()?;
        if Some(&kind) != aad.first() {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = r.read_array().ok()?;
        let mut sealed = r.read_rest().to_vec();
        let len = self
            .aead
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut sealed)
            .ok()?
            .len();
        sealed.truncate(len);
        Some(sealed)
    }
}

/// A server endpoint's token state.
pub(super) struct TokenState {
    keys: TokenKeys,
    /// Makes tokens unique (RFC 9000 §8.1.3: every NEW_TOKEN token is unique). Kept apart from the
    /// endpoint's wire-visible RNG, so issuing tokens leaves connection IDs and the like unchanged.
    rng: Rng,
    /// Origin of the local clock used without a [`WallClock`](crate::WallClock).
    origin: Option<Instant>,
    /// The latest `now` a datagram brought (NEW_TOKEN tokens are issued on the way out of a receive).
    last_now: Option<Instant>,
    /// The unique values of NEW_TOKEN tokens already used, oldest first (a linear scan of a few thousand
    /// integers per used token costs less than the AEAD that precedes it).
    used: VecDeque<u64>,
    /// Tells this endpoint's locally dated tokens from another's (drawn from the endpoint's seed, so it
    /// differs between endpoints whose seeds differ).
    instance: u64,
}

impl TokenState {
    /// The token state of a server, its key from `config` or else drawn from the endpoint's generator
    /// `rng` (so derived from the endpoint's seed).
    pub(super) fn new(config: &TokenConfig, rng: &mut Rng) -> Self {
        let secret = config.key.unwrap_or_else(|| rng.key());
        let keys = TokenKeys::new(&secret);
        let mut rng = rng.fork();
        Self {
            keys,
            instance: rng.next_u64(),
            rng,
            origin: None,
            last_now: None,
            used: VecDeque::new(),
        }
    }

    /// The time tokens are dated with, in milliseconds, and which clock gave it.
    fn time(&mut self, config: &TokenConfig, now: Instant) -> (u64, u8) {
        match &config.wall_clock {
            Some(clock) => (millis(clock.unix_time()), CLOCK_WALL),
            None => {
                let origin = *self.origin.get_or_insert(now);
                (millis(now.saturating_duration_since(origin)), CLOCK_LOCAL)
            }
        }
    }

    /// A Retry token for a client at `remote` whose first Initial had `odcid`, answered with a Retry
    /// whose source connection ID is `retry_scid`.
    fn retry_token(
        &mut self,
        config: &TokenConfig,
        now: Instant,
        peer: (SocketAddr, u32),
        odcid: &ConnectionId,
        retry_scid: &ConnectionId,
    ) -> Vec<u8> {
        let (issued, clock) = self.time(config, now);
        let aad = associated_data(KIND_RETRY, clock, peer, Some(retry_scid), self.instance);
        let mut plain = self.plaintext(issued);
        // The address is sealed, not bound: a token that opens from another address is still known for
        // ours (see `Endpoint::admit`).
        plain.extend_from_slice(&ip_octets(peer.0));
        plain.extend_from_slice(&peer.0.port().to_be_bytes());
        plain.push(odcid.len() as u8);
        plain.extend_from_slice(odcid);
        self.keys.seal(&aad, &plain)
    }

    /// A NEW_TOKEN token for a client at `peer`'s address (its IP address only: the port may change
    /// between connections) on a connection of `peer`'s QUIC version.
    fn new_token(&mut self, config: &TokenConfig, now: Instant, peer: (SocketAddr, u32)) -> Vec<u8> {
        let (issued, clock) = self.time(config, now);
        let aad = associated_data(KIND_NEW_TOKEN, clock, peer, None, self.instance);
        let plain = self.plaintext(issued);
        self.keys.seal(&aad, &plain)
    }

    fn plaintext(&mut self, issued: u64) -> Vec<u8> {
        let mut plain = Vec::with_capacity(PLAIN_FIXED_LEN + 1 + ConnectionId::MAX_LEN);
        plain.extend_from_slice(&issued.to_be_bytes());
        plain.extend_from_slice(&self.rng.next_u64().to_le_bytes());
        plain
    }

    /// Opens `token` and checks its age against `lifetime`; returns its unique value and what follows the
    /// fixed part of the plaintext.
    fn open(
        &mut self,
        config: &TokenConfig,
        now: Instant,
        token: &[u8],
        peer: (SocketAddr, u32),
        retry_scid: Option<&ConnectionId>,
        lifetime: Duration,
    ) -> Option<(u64, Vec<u8>)> {
        let (age, unique, rest) = self.open_any_age(config, now, token, peer, retry_scid, lifetime)?;
        (age == Age::Fresh).then_some((unique, rest))
    }

    /// [`open`](Self::open), also for a token too old or dated too far ahead: `Some` means the token
    /// authenticates (it is one of ours), and its first field says how its age compares with `lifetime`.
    fn open_any_age(
        &mut self,
        config: &TokenConfig,
        now: Instant,
        token: &[u8],
        peer: (SocketAddr, u32),
        retry_scid: Option<&ConnectionId>,
        lifetime: Duration,
    ) -> Option<(Age, u64, Vec<u8>)> {
        let (now_ms, clock) = self.time(config, now);
        let kind = *token.first()?;
        let aad = associated_data(kind, clock, peer, retry_scid, self.instance);
        let plain = self.keys.open(token, &aad)?;
        let mut r = Reader::new(&plain);
        let issued = u64::from_be_bytes(r.read_array().ok()?);
        let unique = u64::from_le_bytes(r.read_array().ok()?);
        // How far the token is from now, and how far it may be while still fresh. Dated ahead: only a
        // clock of ours can do that (one that stepped back, or another server's sharing the key), never
        // a replay of an old token; a little is skew, more gets the grace like an expired token.
        let (off, fresh) = if issued > now_ms {
            (issued - now_ms, millis(MAX_FUTURE_SKEW))
        } else {
            (now_ms - issued, millis(lifetime))
        };
        let age = if off <= fresh {
            Age::Fresh
        } else if off <= fresh.saturating_add(millis(RETRY_GRACE)) {
            Age::Late
        } else {
            Age::Stale
        };
        Some((age, unique, r.read_rest().to_vec()))
    }

    /// Records the use of the NEW_TOKEN token with `unique`; false if it was used before.
    fn first_use(&mut self, unique: u64) -> bool {
        if self.used.contains(&unique) {
            return false;
        }
        if self.used.len() >= REPLAY_LOG_LEN {
            self.used.pop_front();
        }
        self.used.push_back(unique);
        true
    }
}

/// How a token's age compares with its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    /// Within the lifetime.
    Fresh,
    /// Past the lifetime, or dated ahead beyond the clock skew allowed, by at most [`RETRY_GRACE`].
    Late,
    /// Older, or dated further ahead.
    Stale,
}

/// How long past its lifetime a Retry token still lets a handshake go on, its address not validated: a
/// client that followed our Retry sends the token in every Initial for as long as it tries (its idle
/// or handshake timeout, 30 s by default in quicsand and quinn), and ignores another Retry (RFC 9000
/// §17.2.5.2). Later, the token is invalid: INVALID_TOKEN (§8.1.2), and replaying it gains nothing
/// (§8.1.3: Retry tokens are accepted for a short time only). The same grace covers a token dated ahead
/// beyond the allowed skew: a clock of ours that stepped back.
const RETRY_GRACE: Duration = Duration::from_secs(60);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `kind | clock | QUIC version | client IP as 16 bytes [| port | length | retry SCID]`, and for a token
/// dated by the local clock, the issuing endpoint's instance.
fn associated_data(
    kind: u8,
    clock: u8,
    (remote, version): (SocketAddr, u32),
    retry_scid: Option<&ConnectionId>,
    instance: u64,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(2 + 4 + 16 + 1 + ConnectionId::MAX_LEN + 8);
    aad.extend_from_slice(&[kind, clock]);
    // RFC 9369 §7: a token is specific to the QUIC version of the connection that issued it (for a
    // Retry token, of the Initial it answered: the client keeps that version, §5).
    aad.extend_from_slice(&version.to_be_bytes());
    match retry_scid {
        // A Retry token carries its client's address in the plaintext instead, so that one presented
        // from another address still opens and is known for ours (`Endpoint::admit`).
        Some(scid) => {
            aad.push(scid.len() as u8);
            aad.extend_from_slice(scid);
        }
        None => aad.extend_from_slice(&ip_octets(remote)),
    }
    // Time since this endpoint's first token operation means nothing to another endpoint (a restarted
    // one, or another in a pool sharing the key): such tokens open only where they were issued.
    if clock == CLOCK_LOCAL {
        aad.extend_from_slice(&instance.to_le_bytes());
    }
    aad
}

/// `remote`'s IP address as 16 bytes (an IPv4 address mapped into IPv6).
fn ip_octets(remote: SocketAddr) -> [u8; 16] {
    match remote.ip().to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
    .octets()
}

/// The token field of the Initial that starts `payload`.
fn initial_token(payload: &[u8]) -> &[u8] {
    // The connection ID length only matters for short headers; an Initial is long.
    ProtectedHeader::decode(payload, 0).map_or(&[], |h| h.token(payload))
}

/// What a new connection's first Initial proved about the client's address.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admission {
    /// The client's address is validated: no amplification limit (RFC 9000 §8.1).
    pub(super) validated: bool,
    /// The destination connection ID of the client's very first Initial.
    pub(super) original_dcid: ConnectionId,
    /// The source connection ID of the Retry the client followed.
    pub(super) retry_scid: Option<ConnectionId>,
}

impl Endpoint {
    /// Remembers the time of the input being handled, to date NEW_TOKEN tokens issued on the way out.
    pub(super) fn note_time(&mut self, now: Instant) {
        if let Some(tokens) = &mut self.tokens {
            tokens.last_now = Some(now);
        }
    }

    /// Decides what a client's first Initial (already authenticated) gets, from its token and the Retry
    /// policy: a connection (`Some`), or a Retry or nothing (`None`, counted in the stats).
    ///
    /// A Retry token of ours expired by at most [`RETRY_GRACE`] gives a connection whose address is not
    /// validated (the client followed our Retry and ignores another, RFC 9000 §17.2.5.2; §8.1.2 leaves
    /// refusing or going on); one expired for longer, dated further ahead, not parsing or presented from
    /// another address (§8.1.4) gets no connection but an INVALID_TOKEN close (§8.1.2), sealed with
    /// `keys` (the Initial keys of `dcid`,
    /// which the client uses). §8.1.3: any token that does not open, whatever its kind byte, and a
    /// NEW_TOKEN token that does not validate only mean the address is not validated.
    pub(super) fn admit(
        &mut self,
        now: Instant,
        datagram: &Datagram,
        version: u32,
        dcid: ConnectionId,
        scid: ConnectionId,
        keys: &Keys,
    ) -> Option<Admission> {
        let (Some(server), Some(tokens)) = (&self.server, &mut self.tokens) else {
            return None;
        };
        let remote = datagram.remote;
        let token = initial_token(&datagram.payload);
        let mut validated = false;
        match token.first() {
            None => {}
            Some(&KIND_RETRY) => {
                let lifetime = server.tokens.retry_token_lifetime;
                let opened = tokens.open_any_age(
                    &server.tokens,
                    now,
                    token,
                    (remote, version),
                    Some(&dcid),
                    lifetime,
                );
                match opened {
                    Some((age, _, rest)) => {
                        let mut r = Reader::new(&rest);
                        let ip: Option<[u8; 16]> = r.read_array().ok();
                        let port: Option<[u8; 2]> = r.read_array().ok();
                        let same_address =
                            ip == Some(ip_octets(remote)) && port == Some(remote.port().to_be_bytes());
                        let odcid = ConnectionId::decode_prefixed(&mut r)
                            .ok()
                            .filter(|_| r.is_empty() && age != Age::Stale && same_address);
                        // Our own Retry token, long expired (or dated far ahead, or not parsing), or
                        // presented from another address than the one it was issued to (RFC 9000 §8.1.4:
                        // a client that moved between our Retry and its next Initial, or a replay): the
                        // client followed our Retry and would ignore another (§17.2.5.2), and would
                        // reject a connection made as if it had no token (§7.3: the transport
                        // parameters would lack its retry_source_connection_id). RFC 9000 §8.1.2: the
                        // server SHOULD close with INVALID_TOKEN, which spares the client its timeout;
                        // no connection state is made for an address the token does not validate.
                        let Some(original_dcid) = odcid else {
                            self.stats.dropped_invalid_retry_token += 1;
                            let error = TransportError::invalid_token(if same_address {
                                "expired Retry token"
                            } else {
                                "Retry token from another address"
                            });
                            self.queue_initial_close(datagram, version, dcid, scid, keys, error);
                            return None;
                        };
                        // Expired within RETRY_GRACE: the client sends the token with every Initial for
                        // as long as its handshake lasts (§17.2.5.2), so a late one means its Initials
                        // were lost for a while. It no longer validates the address (§8.1.3: Retry
                        // tokens are accepted for a short time only), but the original destination
                        // connection ID it carries is authentic: the handshake goes on under the
                        // anti-amplification limit.
                        let fresh = age == Age::Fresh;
                        if fresh {
                            self.stats.retry_tokens_accepted += 1;
                        } else {
                            self.stats.expired_retry_tokens += 1;
                        }
                        return Some(Admission {
                            validated: fresh,
                            original_dcid,
                            retry_scid: Some(dcid),
                        });
                    }
                    // A token that does not open may be another server's NEW_TOKEN token that starts
                    // with our kind byte by chance: the kind byte is only authenticated by the AEAD, so
                    // we cannot know it for a Retry token of ours. RFC 9000 §8.1.3: proceed as if the
                    // client had no token (a Retry if the policy asks for one); dropping would leave
                    // that client to time out on every Initial it sends with the token.
                    None => self.stats.tokens_ignored += 1,
                }
            }
            Some(_) => {
                let lifetime = server.tokens.new_token_lifetime;
                let opened = tokens.open(&server.tokens, now, token, (remote, version), None, lifetime);
                match opened {
                    Some((unique, rest)) if rest.is_empty() => {
                        // RFC 9000 §8.1.4: a NEW_TOKEN token SHOULD NOT be accepted twice.
                        if tokens.first_use(unique) {
                            self.stats.new_tokens_accepted += 1;
                            validated = true;
                        } else {
                            self.stats.new_token_replays += 1;
                        }
                    }
                    _ => self.stats.tokens_ignored += 1,
                }
            }
        }
        let retry = match server.retry {
            RetryPolicy::Never => false,
            RetryPolicy::Always => true,
            RetryPolicy::WhenHandshakesExceed(n) => self.handshakes >= n,
        };
        if retry && !validated {
            self.queue_retry(now, datagram.remote, datagram.local, version, dcid, scid);
            return None;
        }
        Some(Admission {
            validated,
            original_dcid: dcid,
            retry_scid: None,
        })
    }

    /// Queues a Retry (RFC 9000 §17.2.5) answering a client Initial from `remote` with `odcid` and
    /// `client_scid`. Returns false if the stateless queue is full (counted) or the server config is gone.
    fn queue_retry(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        version: u32,
        odcid: ConnectionId,
        client_scid: ConnectionId,
    ) -> bool {
        if self.stateless.len() >= self.config.max_stateless_queue {
            self.stats.stateless_queue_overflow += 1;
            return false;
        }
        // The client's next Initial carries this ID (and is routed by it, through a load balancer too):
        // a fresh ID from the generator, unless it is too short to be unpredictable. RFC 9000
        // §17.2.5.2: it must differ from the client's DCID.
        let retry_scid = match self.fresh_cid() {
            Some(cid) if cid.len() >= MIN_RETRY_SCID_LEN && cid != odcid => cid,
            _ => {
                let mut bytes = [0u8; 16];
                self.rng.fill(&mut bytes);
                ConnectionId::new(&bytes).unwrap_or_default()
            }
        };
        let (Some(server), Some(tokens)) = (&self.server, &mut self.tokens) else {
            return false;
        };
        let token = tokens.retry_token(&server.tokens, now, (remote, version), &odcid, &retry_scid);
        let header = RetryHeader {
            version,
            dcid: client_scid,
            scid: retry_scid,
            token: Bytes::from(token),
        };
        let mut payload = Vec::with_capacity(header.encoded_len() + crate::crypto::RETRY_TAG_LEN);
        header.encode(self.rng.next_u64() as u8, &mut payload);
        // RFC 9001 §5.8: the integrity tag binds the Retry to the client's original DCID.
        let Ok(tag) = retry_tag(version, &odcid, &payload) else {
            return false;
        };
        payload.extend_from_slice(&tag);
        self.stateless.push_back(StatelessPacket {
            kind: StatelessKind::Retry,
            destination: remote,
            src_ip: local_ip,
            payload,
        });
        true
    }

    /// Queues an Initial packet carrying CONNECTION_CLOSE with `error` to a client at the address of
    /// `datagram` whose Initial went to `dcid` (from `client_scid`), without connection state: INVALID_TOKEN
    /// for an expired Retry token of ours (RFC 9000 §8.1.2), CONNECTION_REFUSED under
    /// [`AcceptPolicy::Refuse`](crate::AcceptPolicy::Refuse) (§5.2.2). `keys` are the Initial keys of
    /// `dcid`, which the client opens our Initials with (after a Retry it derives them from the Retry's
    /// SCID, the DCID of its Initials: RFC 9001 §5.2).
    ///
    /// CONNECTION_CLOSE is not ack-eliciting, so the datagram needs no padding to 1200 bytes (RFC 9000
    /// §14.1); at under 100 bytes it is far smaller than the Initial of at least 1200 bytes that caused
    /// it, so it cannot amplify (§8), and it goes through the bounded stateless queue.
    pub(super) fn queue_initial_close(
        &mut self,
        datagram: &Datagram,
        version: u32,
        dcid: ConnectionId,
        client_scid: ConnectionId,
        keys: &Keys,
        error: TransportError,
    ) {
        let kind = if error.code == TransportErrorCode::CONNECTION_REFUSED {
            StatelessKind::RefusalClose
        } else {
            StatelessKind::InvalidTokenClose
        };
        if self.stateless.len() >= self.config.max_stateless_queue {
            self.stats.stateless_queue_overflow += 1;
            return;
        }
        // Our side of a connection that will never exist: any ID of ours will do (RFC 9000 §7.2).
        let scid = self.fresh_cid().unwrap_or(dcid);
        let header = Header::Initial {
            version,
            dcid: client_scid,
            scid,
            token: Bytes::new(),
        };
        // The first (and only) packet of our Initial space: number 0. Four bytes of packet number make
        // the header protection sample (RFC 9001 §5.4.2) fit behind any payload, with the AEAD tag.
        let pn = TruncatedPn::truncate(0, 4);
        let close = Frame::Close(ConnectionClose::from(error));
        let tag_len = keys.local.packet.tag_len();
        let len = header.encoded_len(pn) + close.encoded_len() + tag_len;
        if len >= datagram.payload.len() {
            return; // RFC 9000 §8: never more than what came (it cannot happen for a full Initial)
        }
        let mut payload = Vec::with_capacity(len);
        let enc = header.encode(pn, &mut payload);
        close.encode(&mut payload);
        payload.resize(len, 0);
        let sealed = enc.set_length(&mut payload, len).is_ok()
            && keys.local.packet.seal(0, &mut payload, enc.header_len).is_ok()
            && keys.local.header.protect(enc.pn_offset, &mut payload).is_ok();
        if !sealed {
            return;
        }
        self.stateless.push_back(StatelessPacket {
            kind,
            destination: datagram.remote,
            src_ip: datagram.local,
            payload,
        });
    }

    /// Answers a connection held under [`AcceptPolicy::Ask`](crate::AcceptPolicy::Ask) with a Retry
    /// (RFC 9000 §8.1.2) instead of accepting or refusing it: the connection is removed without a trace
    /// (its handle goes stale, no event follows) and the client comes back with a token that validates
    /// its address, as a new [`Event::Incoming`](crate::Event::Incoming).
    pub fn retry(&mut self, now: Instant, h: ConnectionHandle) -> Result<(), RetryError> {
        let entry = self.table.get(h).ok_or(RetryError::Stale(StaleHandle(h)))?;
        if !entry.held {
            return Err(RetryError::NotHeld);
        }
        let conn = &entry.conn;
        if conn.retry_scid.is_some() {
            return Err(RetryError::AlreadyRetried);
        }
        let (remote, local_ip) = (conn.path.remote, conn.path.local_ip);
        let (version, odcid, client_scid) = (conn.version, conn.original_dcid, conn.remote_cid);
        if self.server.is_none() || !self.queue_retry(now, remote, local_ip, version, odcid, client_scid) {
            return Err(RetryError::Unavailable);
        }
        self.stats.connections_retried += 1;
        self.remove(h);
        Ok(())
    }

    /// Changes when Retry is sent, from the next client Initial on. Returns false on a client endpoint,
    /// which has no server configuration.
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) -> bool {
        match &mut self.server {
            Some(server) => {
                server.retry = policy;
                true
            }
            None => false,
        }
    }

    /// The Retry policy in force; `None` on a client endpoint.
    pub fn retry_policy(&self) -> Option<RetryPolicy> {
        self.server.as_ref().map(|s| s.retry)
    }
}

/// Queues the NEW_TOKEN tokens of a server connection whose handshake just completed, which for a server
/// means confirmed (RFC 9001 §4.1.2; RFC 9000 §8.1.3).
pub(super) fn issue_new_tokens(
    tokens: &mut Option<TokenState>,
    server: Option<&ServerConfig>,
    conn: &mut Connection,
    stats: &mut EndpointStats,
) -> bool {
    let (Some(tokens), Some(server)) = (tokens, server) else {
        return false;
    };
    let Some(now) = tokens.last_now else {
        return false;
    };
    if conn.side().is_client() {
        return false;
    }
    let count = server.tokens.new_tokens_per_connection.min(MAX_NEW_TOKENS);
    for _ in 0..count {
        let token = tokens.new_token(&server.tokens, now, (conn.remote_address(), conn.version));
        conn.new_tokens
            .queue(Bytes::from(token), conn.remote_address().ip());
        stats.new_tokens_issued += 1;
    }
    count > 0
}

/// A new client connection takes a token from the store for `server_name`, if there is one, for its
/// first Initial (RFC 9000 §8.1.3), and files the NEW_TOKEN tokens it will receive there.
///
/// Tokens are specific to the QUIC version of the connection that received them (RFC 9369 §7: a client
/// MUST NOT use a version 1 token on a version 2 connection, nor the reverse): for versions other than 1
/// the store's name is the server name followed by the version.
pub(super) fn prepare_client(
    conn: &mut Connection,
    config: &ClientConfig,
    store: &mut Option<Box<dyn TokenStore>>,
    server_name: &str,
) {
    let Some(store) = store.as_mut().filter(|_| config.use_tokens) else {
        return;
    };
    let name = if config.version == VERSION_1 {
        server_name.to_string()
    } else {
        format!("{server_name} (QUIC version {:#010x})", config.version)
    };
    // A token too long to leave room for the ClientHello beside it in a 1200-byte Initial is not
    // used: no Initial could be built (RFC 9000 §8.1.3 makes the token optional).
    if let Some(token) = store
        .take(&name)
        .filter(|t| t.len() <= crate::conn::MAX_CLIENT_TOKEN)
    {
        conn.token = token;
    }
    conn.new_tokens.keep_for(name);
}

/// Files the NEW_TOKEN tokens a client connection received in the endpoint's store.
pub(super) fn file_received(conn: &mut Connection, store: &mut Option<Box<dyn TokenStore>>) {
    let (Some((name, tokens)), Some(store)) = (conn.new_tokens.take_received(), store.as_mut()) else {
        return;
    };
    for token in tokens {
        store.insert(name, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::WallClock;
    use crate::wire::header::VERSION_1 as V1;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(Debug, Default)]
    struct Clock(AtomicU64);

    impl WallClock for Clock {
        fn unix_time(&self) -> Duration {
            Duration::from_secs(self.0.load(Ordering::Relaxed))
        }
    }

    fn setup() -> (TokenState, TokenConfig, Arc<Clock>) {
        let clock = Arc::new(Clock(AtomicU64::new(1_700_000_000)));
        let config = TokenConfig {
            key: Some([7; 32]),
            wall_clock: Some(clock.clone()),
            ..TokenConfig::default()
        };
        (TokenState::new(&config, &mut Rng::from_seed(1)), config, clock)
    }

    fn cid(b: u8) -> ConnectionId {
        ConnectionId::new(&[b; 8]).unwrap_or_default()
    }

    #[test]
    fn retry_token_opens_only_for_its_scid_and_time_and_seals_its_address() {
        let (mut s, config, clock) = setup();
        let now = crate::test_util::epoch();
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap_or_else(|_| unreachable!());
        let token = s.retry_token(&config, now, (addr, V1), &cid(1), &cid(2));
        assert_eq!(token.first(), Some(&KIND_RETRY));
        let life = config.retry_token_lifetime;
        let rest = s.open(&config, now, &token, (addr, V1), Some(&cid(2)), life);
        let sealed_addr = |r: &[u8]| r.get(..18).map(<[u8]>::to_vec);
        let mut addr_bytes = ip_octets(addr).to_vec();
        addr_bytes.extend_from_slice(&addr.port().to_be_bytes());
        assert_eq!(
            rest.as_ref().and_then(|(_, r)| sealed_addr(r)),
            Some(addr_bytes.clone())
        );
        assert_eq!(rest.as_ref().and_then(|(_, r)| r.get(19..)), Some(&cid(1)[..]));
        // From another port or IP it still opens (so `Endpoint::admit` knows it for ours), and says the
        // address it was issued to, which `admit` compares.
        let other_port: SocketAddr = "192.0.2.1:4001".parse().unwrap_or_else(|_| unreachable!());
        let other_ip: SocketAddr = "192.0.2.9:4000".parse().unwrap_or_else(|_| unreachable!());
        for other in [other_port, other_ip] {
            let rest = s.open(&config, now, &token, (other, V1), Some(&cid(2)), life);
            assert_eq!(
                rest.as_ref().and_then(|(_, r)| sealed_addr(r)),
                Some(addr_bytes.clone())
            );
        }
        // Another SCID, key or a flipped bit: nothing.
        assert!(s
            .open(&config, now, &token, (addr, V1), Some(&cid(3)), life)
            .is_none());
        let mut other = TokenState::new(
            &TokenConfig {
                key: Some([8; 32]),
                ..config.clone()
            },
            &mut Rng::from_seed(1),
        );
        assert!(other
            .open(&config, now, &token, (addr, V1), Some(&cid(2)), life)
            .is_none());
        for i in 0..token.len() {
            let mut t = token.clone();
            t[i] ^= 1;
            assert!(
                s.open(&config, now, &t, (addr, V1), Some(&cid(2)), life)
                    .is_none(),
                "bit flip at {i}"
            );
        }
        // Expiry by the wall clock, and tokens from too far in the future.
        clock.0.fetch_add(life.as_secs() + 1, Ordering::Relaxed);
        assert!(s
            .open(&config, now, &token, (addr, V1), Some(&cid(2)), life)
            .is_none());
        clock.0.store(1_700_000_000 - 60, Ordering::Relaxed);
        assert!(s
            .open(&config, now, &token, (addr, V1), Some(&cid(2)), life)
            .is_none());
    }

    #[test]
    fn new_tokens_bind_the_ip_not_the_port_and_differ_each_time() {
        let (mut s, config, _clock) = setup();
        let now = crate::test_util::epoch();
        let addr: SocketAddr = "[2001:db8::1]:4000".parse().unwrap_or_else(|_| unreachable!());
        let a = s.new_token(&config, now, (addr, V1));
        let b = s.new_token(&config, now, (addr, V1));
        assert_ne!(a, b, "every NEW_TOKEN token is unique (RFC 9000 §8.1.3)");
        assert_eq!(a.first(), Some(&KIND_NEW_TOKEN));
        let life = config.new_token_lifetime;
        let new_port: SocketAddr = "[2001:db8::1]:5000".parse().unwrap_or_else(|_| unreachable!());
        let opened = s.open(&config, now, &a, (new_port, V1), None, life);
        let (unique, rest) = opened.expect("the token opens from the same IP, another port");
        assert!(rest.is_empty());
        assert!(
            s.first_use(unique) && !s.first_use(unique),
            "a token validates once"
        );
        let other: SocketAddr = "[2001:db8::2]:4000".parse().unwrap_or_else(|_| unreachable!());
        assert!(s.open(&config, now, &a, (other, V1), None, life).is_none());
        // A NEW_TOKEN token relabelled as a Retry token fails: the kind is authenticated.
        let mut relabelled = a.clone();
        relabelled[0] = KIND_RETRY;
        assert!(s
            .open(&config, now, &relabelled, (addr, V1), Some(&cid(2)), life)
            .is_none());
    }

    #[test]
    fn without_a_wall_clock_tokens_age_by_the_endpoint_instants() {
        let config = TokenConfig {
            key: Some([7; 32]),
            ..TokenConfig::default()
        };
        let mut s = TokenState::new(&config, &mut Rng::from_seed(1));
        let start = crate::test_util::epoch();
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap_or_else(|_| unreachable!());
        let token = s.new_token(&config, start, (addr, V1));
        let life = config.new_token_lifetime;
        assert!(s
            .open(&config, start + life, &token, (addr, V1), None, life)
            .is_some());
        assert!(s
            .open(
                &config,
                start + life + Duration::from_secs(1),
                &token,
                (addr, V1),
                None,
                life
            )
            .is_none());
        // A server with a wall clock does not take a locally dated token.
        let (mut walled, wall_config, _) = setup();
        assert!(walled
            .open(&wall_config, start, &token, (addr, V1), None, life)
            .is_none());
    }

    #[test]
    fn tokens_open_only_on_the_quic_version_that_issued_them() {
        // RFC 9369 §7: servers MUST NOT accept a token issued on another version.
        use crate::wire::header::VERSION_2 as V2;
        let (mut s, config, _clock) = setup();
        let now = crate::test_util::epoch();
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap_or_else(|_| unreachable!());
        let life = config.new_token_lifetime;
        for (issued_on, other) in [(V1, V2), (V2, V1)] {
            let token = s.new_token(&config, now, (addr, issued_on));
            assert!(s.open(&config, now, &token, (addr, other), None, life).is_none());
            assert!(s
                .open(&config, now, &token, (addr, issued_on), None, life)
                .is_some());
            let retry = s.retry_token(&config, now, (addr, issued_on), &cid(1), &cid(2));
            assert!(s
                .open(&config, now, &retry, (addr, other), Some(&cid(2)), life)
                .is_none());
            assert!(s
                .open(&config, now, &retry, (addr, issued_on), Some(&cid(2)), life)
                .is_some());
        }
    }

    #[test]
    fn without_a_wall_clock_tokens_open_only_at_the_endpoint_that_issued_them() {
        // Local time means nothing to a restarted server or another in a pool, though they share the
        // key: before, a token ten days old with a lifetime of a day opened as fresh at a server started
        // later (each dates tokens from its own first token operation).
        let config = TokenConfig {
            key: Some([7; 32]),
            ..TokenConfig::default()
        };
        let t0 = crate::test_util::epoch();
        let hour = Duration::from_secs(3600);
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap_or_else(|_| unreachable!());
        let life = config.new_token_lifetime;
        let mut first = TokenState::new(&config, &mut Rng::from_seed(1));
        let _ = first.new_token(&config, t0, (addr, V1));
        let token = first.new_token(&config, t0 + hour, (addr, V1));
        let restart = t0 + 10 * 24 * hour;
        let mut second = TokenState::new(&config, &mut Rng::from_seed(3));
        let _ = second.new_token(&config, restart, (addr, V1));
        assert!(second
            .open(&config, restart + hour, &token, (addr, V1), None, life)
            .is_none());
        assert!(first
            .open(&config, t0 + 2 * hour, &token, (addr, V1), None, life)
            .is_some());
    }
}
