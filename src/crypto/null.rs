//! The null cipher of fuzzing builds: no header protection and all-zero tags.
//!
//! Fuzz input must reach frame handling inside established connections, which real packet protection
//! forbids (a fuzzer cannot forge an AEAD tag). Under `cfg(fuzzing)` (set by cargo-fuzz) every key a
//! connection uses is one of these: [`NullPacketKey`] copies the payload through and writes a tag of
//! zeros, which `open` requires (so a corrupted tag still fails to authenticate), and [`NullHeaderKey`]
//! masks with zeros. This module does not exist in any other build; see `docs/fuzzing.md`.

// The module is declared under `cfg(fuzzing)` only. Should anyone widen that gate, the build fails here
// rather than ship a null cipher.
#[cfg(not(fuzzing))]
compile_error!("the null cipher is for cfg(fuzzing) builds only");

use super::{CryptoError, DirectionalKeys, HeaderKey, Keys, PacketKey};

/// Tag length of the null AEAD, the same as every QUIC v1 suite's, so packet sizes match real builds.
const TAG_LEN: usize = 16;

/// Payload "protection" that leaves the payload in clear and appends a zero tag.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NullPacketKey;

impl PacketKey for NullPacketKey {
    fn seal(&self, _pn: u64, packet: &mut [u8], header_len: usize) -> Result<(), CryptoError> {
        let tag_start = packet
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&t| t >= header_len)
            .ok_or(CryptoError::PacketTooShort)?;
        packet
            .get_mut(tag_start..)
            .ok_or(CryptoError::PacketTooShort)?
            .fill(0);
        Ok(())
    }

    fn open(&self, _pn: u64, packet: &mut [u8], header_len: usize) -> Result<usize, CryptoError> {
        let tag_start = packet
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&t| t >= header_len)
            .ok_or(CryptoError::PacketTooShort)?;
        let tag = packet.get(tag_start..).ok_or(CryptoError::PacketTooShort)?;
        if tag.iter().any(|&b| b != 0) {
            return Err(CryptoError::DecryptionFailed);
        }
        Ok(tag_start - header_len)
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn confidentiality_limit(&self) -> u64 {
        // AES-GCM's limit (RFC 9001 §6.6), so key updates forced by the limit behave as in real builds.
        1 << 23
    }

    fn integrity_limit(&self) -> u64 {
        1 << 52
    }
}

/// Header "protection" with an all-zero mask. The sample length stays 16, so packets too short for a
/// sample are discarded exactly as in real builds (RFC 9001 §5.4.2).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NullHeaderKey;

impl HeaderKey for NullHeaderKey {
    fn sample_len(&self) -> usize {
        16
    }

    fn mask(&self, sample: &[u8]) -> Result<[u8; 5], CryptoError> {
        if sample.len() != self.sample_len() {
            return Err(CryptoError::PacketTooShort);
        }
        Ok([0; 5])
    }
}

/// Null keys for one direction.
pub(crate) fn directional() -> DirectionalKeys {
    DirectionalKeys {
        packet: Box::new(NullPacketKey),
        header: Box::new(NullHeaderKey),
    }
}

/// Null keys for both directions of one level.
pub(crate) fn keys() -> Keys {
    Keys {
        local: directional(),
        remote: directional(),
    }
}
