//! Packet protection (RFC 9001 §5).
//!
//! The rest of the engine sees cryptography only through two small object-safe traits:
//!
//! - [`PacketKey`]: AEAD payload protection of one direction at one key phase (RFC 9001 §5.3);
//! - [`HeaderKey`]: header protection of one direction (RFC 9001 §5.4).
//!
//! Both are implemented here on `ring`. A TLS adapter hands traffic secrets to [`Secret::new`], which derives the
//! "quic key", "quic iv" and "quic hp" values (RFC 9001 §5.1) and the next-phase secret with "quic ku"
//! (RFC 9001 §6.1). Initial keys come from [`initial_keys`] (RFC 9001 §5.2) and the Retry integrity tag from
//! [`retry_tag`] / [`verify_retry_tag`] (RFC 9001 §5.8). Because the engine only holds boxed trait objects,
//! a test or fuzzing build can swap in a different cipher without touching the rest of the code.
//!
//! QUIC version 2 (RFC 9369) only changes constants (salt, labels, Retry key); those are included so that
//! [`crate::wire::header::VERSION_2`] works wherever a version number is taken.

#![warn(clippy::indexing_slicing)]

use std::fmt;

mod hkdf;
mod initial;
// The null cipher exists only in fuzzing builds; `null.rs` refuses to compile in any other.
#[cfg(fuzzing)]
pub(crate) mod null;
mod retry;
mod ring_keys;
mod secret;
mod suite;
pub mod tls;
mod version;

#[cfg(test)]
mod tests;

pub use initial::{initial_keys, initial_secrets};

/// The Initial keys a connection uses: [`initial_keys`], except in a fuzzing build, where every
/// connection uses the null cipher of `null.rs` (with the same errors for unsupported versions and
/// over-long connection IDs).
pub(crate) fn connection_initial_keys(
    version: u32,
    client_dcid: &[u8],
    side: crate::Side,
) -> Result<Keys, CryptoError> {
    #[cfg(fuzzing)]
    {
        let _ = (version::Constants::for_version(version)?, side);
        if client_dcid.len() > crate::wire::ConnectionId::MAX_LEN {
            return Err(CryptoError::ConnectionIdTooLong);
        }
        Ok(null::keys())
    }
    #[cfg(not(fuzzing))]
    initial_keys(version, client_dcid, side)
}
pub use retry::{retry_tag, verify_retry_tag, RETRY_TAG_LEN};
pub use secret::Secret;
pub use suite::Suite;
pub(crate) use suite::TAG_LEN;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The packet is too short for the operation: shorter than header plus tag for payload protection, or
    /// too short to hold a full header protection sample (RFC 9001 §5.4.2).
    PacketTooShort,
    /// The AEAD rejected the packet: wrong key, or header, payload or tag were modified.
    DecryptionFailed,
    /// The AEAD refused to encrypt (the payload is larger than the algorithm allows).
    EncryptionFailed,
    /// No packet protection is defined for this QUIC version.
    UnsupportedVersion(u32),
    /// A traffic secret's length does not match the hash of its cipher suite.
    InvalidSecretLength,
    /// A connection ID is longer than the 20 bytes QUIC allows (RFC 9000 §17.2).
    ConnectionIdTooLong,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::PacketTooShort => f.write_str("packet too short for packet protection"),
            CryptoError::DecryptionFailed => f.write_str("packet decryption failed"),
            CryptoError::EncryptionFailed => f.write_str("packet encryption failed"),
            CryptoError::UnsupportedVersion(v) => {
                write!(f, "no packet protection for QUIC version {v:#010x}")
            }
            CryptoError::InvalidSecretLength => {
                f.write_str("traffic secret length does not match the cipher suite")
            }
            CryptoError::ConnectionIdTooLong => f.write_str("connection ID longer than 20 bytes"),
        }
    }
}

impl std::error::Error for CryptoError {}

/// AEAD protection of packet payloads for one direction and one key phase (RFC 9001 §5.3).
///
/// The packet number passed in is the full reconstructed packet number, not its truncated wire encoding.
pub trait PacketKey: Send + Sync {
    /// Encrypts a packet in place.
    ///
    /// `packet[..header_len]` is the unprotected header (the AEAD associated data),
    /// `packet[header_len..packet.len() - tag_len()]` the plaintext payload, and the last
    /// [`tag_len`](PacketKey::tag_len) bytes are reserved by the caller and receive the tag.
    /// Fails with [`CryptoError::PacketTooShort`] when the packet cannot hold the header and the tag.
    fn seal(&self, pn: u64, packet: &mut [u8], header_len: usize) -> Result<(), CryptoError>;

    /// Decrypts a packet in place whose header protection has already been removed.
    ///
    /// On success the plaintext payload is `packet[header_len..header_len + n]`, where `n` is the returned
    /// length. Fails with [`CryptoError::PacketTooShort`] when the packet cannot hold the header and the tag,
    /// and with [`CryptoError::DecryptionFailed`] when authentication fails; in both cases the caller counts
    /// the packet against [`integrity_limit`](PacketKey::integrity_limit) (RFC 9001 §6.6).
    fn open(&self, pn: u64, packet: &mut [u8], header_len: usize) -> Result<usize, CryptoError>;

    /// Length of the authentication tag the AEAD appends.
    fn tag_len(&self) -> usize;

    /// How many packets may be encrypted with this key before a key update is required (RFC 9001 §6.6).
    fn confidentiality_limit(&self) -> u64;

    /// How many packets may fail authentication within a connection before it must be closed with
    /// AEAD_LIMIT_REACHED (RFC 9001 §6.6).
    fn integrity_limit(&self) -> u64;
}

/// Header protection for one direction (RFC 9001 §5.4).
///
/// Implementations provide [`mask`](HeaderKey::mask); [`protect`](HeaderKey::protect) and
/// [`unprotect`](HeaderKey::unprotect) apply it as RFC 9001 §5.4.1 describes.
pub trait HeaderKey: Send + Sync {
    /// Number of ciphertext bytes sampled (RFC 9001 §5.4.2); 16 for every suite QUIC v1 defines.
    fn sample_len(&self) -> usize;

    /// The 5-byte mask for a sample of exactly [`sample_len`](HeaderKey::sample_len) bytes
    /// (RFC 9001 §5.4.3, §5.4.4).
    fn mask(&self, sample: &[u8]) -> Result<[u8; 5], CryptoError>;

    /// Applies header protection in place to a packet whose payload is already encrypted.
    ///
    /// `pn_offset` is the offset of the Packet Number field; its length is read from the unprotected first
    /// byte. Fails with [`CryptoError::PacketTooShort`] when the packet cannot hold a full sample.
    fn protect(&self, pn_offset: usize, packet: &mut [u8]) -> Result<(), CryptoError> {
        apply_header_mask(self, pn_offset, packet, true)
    }

    /// Removes header protection in place: unmasks the first byte, then the packet number bytes it announces.
    ///
    /// After success, the packet number length is `(packet[0] & 0x03) + 1`. Fails with
    /// [`CryptoError::PacketTooShort`] (leaving the packet untouched) when the packet cannot hold a full
    /// sample; RFC 9001 §5.4.2 says such packets MUST be discarded.
    fn unprotect(&self, pn_offset: usize, packet: &mut [u8]) -> Result<(), CryptoError> {
        apply_header_mask(self, pn_offset, packet, false)
    }
}

/// Length of the longest Packet Number encoding, which the header protection sample skips (RFC 9001 §5.4.2).
const MAX_PN_LEN: usize = 4;

/// RFC 9001 §5.4.1: the mask covers the low bits of the first byte and the Packet Number field.
fn apply_header_mask<K: HeaderKey + ?Sized>(
    key: &K,
    pn_offset: usize,
    packet: &mut [u8],
    protect: bool,
) -> Result<(), CryptoError> {
    // RFC 9001 §5.4.2: the sample starts 4 bytes after the start of the Packet Number field, and packets too
    // short to contain a complete sample MUST be discarded.
    let sample_start = pn_offset
        .checked_add(MAX_PN_LEN)
        .ok_or(CryptoError::PacketTooShort)?;
    let sample_end = sample_start
        .checked_add(key.sample_len())
        .ok_or(CryptoError::PacketTooShort)?;
    let sample = packet
        .get(sample_start..sample_end)
        .ok_or(CryptoError::PacketTooShort)?;
    let [mask_first, mask_pn @ ..] = key.mask(sample)?;

    // The first byte precedes the packet number, so a zero offset cannot be a valid header.
    let (first, after_first) = packet.split_first_mut().ok_or(CryptoError::PacketTooShort)?;
    if pn_offset == 0 {
        return Err(CryptoError::PacketTooShort);
    }
    // Long headers protect 4 bits, short headers 5 (including the Key Phase bit).
    let bits = if *first & 0x80 == 0x80 { 0x0f } else { 0x1f };
    let pn_len = if protect {
        let len = usize::from(*first & 0x03) + 1;
        *first ^= mask_first & bits;
        len
    } else {
        *first ^= mask_first & bits;
        usize::from(*first & 0x03) + 1
    };
    // pn_offset - 1 + pn_len <= pn_offset + 3 < sample_end <= packet.len(), so this range is present.
    let pn_start = pn_offset - 1;
    let pn = after_first
        .get_mut(pn_start..pn_start + pn_len)
        .ok_or(CryptoError::PacketTooShort)?;
    for (byte, m) in pn.iter_mut().zip(mask_pn) {
        *byte ^= m;
    }
    Ok(())
}

/// The packet and header keys for one direction of one encryption level.
pub struct DirectionalKeys {
    /// Payload protection.
    pub packet: Box<dyn PacketKey>,
    /// Header protection. It stays the same across key updates (RFC 9001 §6.1).
    pub header: Box<dyn HeaderKey>,
}

impl DirectionalKeys {
    /// Derives both keys from a traffic secret (RFC 9001 §5.1).
    pub fn new(secret: &Secret) -> Self {
        let (packet, header) = secret.keys();
        Self { packet, header }
    }

    /// Key update (RFC 9001 §6.1): replaces the packet key with the one derived from `next`
    /// (see [`Secret::next`]) and keeps the header key, which "is not updated".
    ///
    /// Returns the previous packet key, which a receiver keeps for a while to open delayed packets of the old
    /// key phase (RFC 9001 §6.5).
    pub fn update(&mut self, next: &Secret) -> Box<dyn PacketKey> {
        std::mem::replace(&mut self.packet, next.packet_key())
    }
}

impl fmt::Debug for DirectionalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectionalKeys").finish_non_exhaustive()
    }
}

/// The keys of one encryption level: what we send with and what we receive with.
#[derive(Debug)]
pub struct Keys {
    /// Protects packets this endpoint sends.
    pub local: DirectionalKeys,
    /// Removes protection from packets the peer sends.
    pub remote: DirectionalKeys,
}
