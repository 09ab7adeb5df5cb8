//! Traffic secrets and the keys derived from them (RFC 9001 §5.1, §6.1).

use std::fmt;

use ring::hkdf;

use super::hkdf::hkdf_expand_label;
use super::ring_keys::{RingHeaderKey, RingPacketKey};
use super::suite::{MAX_HASH_LEN, MAX_KEY_LEN, NONCE_LEN};
use super::version::{Constants, Labels};
use super::{CryptoError, HeaderKey, PacketKey, Suite};

/// A traffic secret of one direction and one encryption level, with its cipher suite and QUIC version.
///
/// TLS produces these for the Handshake and 1-RTT levels; [`initial_secrets`](super::initial_secrets)
/// produces them for the Initial level. The secret bytes are overwritten when the value is dropped
/// (best effort) and never printed by `Debug`.
#[derive(Clone)]
pub struct Secret {
    suite: Suite,
    labels: &'static Labels,
    bytes: [u8; MAX_HASH_LEN],
}

impl Secret {
    /// A QUIC v1 secret. Fails with [`CryptoError::InvalidSecretLength`] unless `secret` is exactly
    /// [`Suite::hash_len`] bytes long, as TLS 1.3 traffic secrets are.
    pub fn new(suite: Suite, secret: &[u8]) -> Result<Secret, CryptoError> {
        Secret::for_version(crate::wire::header::VERSION_1, suite, secret)
    }

    /// A secret for `version`, whose labels it uses (RFC 9369 §3.3.2 changes them for QUIC v2).
    pub fn for_version(version: u32, suite: Suite, secret: &[u8]) -> Result<Secret, CryptoError> {
        let constants = Constants::for_version(version)?;
        Secret::with_labels(constants.labels, suite, secret)
    }

    pub(crate) fn with_labels(
        labels: &'static Labels,
        suite: Suite,
        secret: &[u8],
    ) -> Result<Secret, CryptoError> {
        if secret.len() != suite.hash_len() {
            return Err(CryptoError::InvalidSecretLength);
        }
        let mut bytes = [0u8; MAX_HASH_LEN];
        bytes
            .get_mut(..secret.len())
            .ok_or(CryptoError::InvalidSecretLength)?
            .copy_from_slice(secret);
        Ok(Secret { suite, labels, bytes })
    }

    /// The cipher suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.suite.hash_len()).unwrap_or(&self.bytes)
    }

    /// The secret of the next key phase (RFC 9001 §6.1):
    /// `secret_<n+1> = HKDF-Expand-Label(secret_<n>, "quic ku", "", Hash.length)`.
    ///
    /// Only the packet key changes with a key update; keep using the header key derived from the first
    /// 1-RTT secret (RFC 9001 §5.4, §6.1).
    pub fn next(&self) -> Secret {
        let mut bytes = [0u8; MAX_HASH_LEN];
        expand(&self.prk(), self.labels.ku, self.suite.hash_len(), &mut bytes);
        Secret {
            suite: self.suite,
            labels: self.labels,
            bytes,
        }
    }

    /// The packet protection key built from "quic key" and "quic iv" (RFC 9001 §5.1).
    pub fn packet_key(&self) -> Box<dyn PacketKey> {
        self.packet_key_from(&self.prk())
    }

    /// The header protection key built from "quic hp" (RFC 9001 §5.1, §5.4).
    pub fn header_key(&self) -> Box<dyn HeaderKey> {
        self.header_key_from(&self.prk())
    }

    /// Both keys of [`packet_key`](Self::packet_key) and [`header_key`](Self::header_key), through one
    /// HMAC key: setting one up hashes two blocks, as much as an expansion.
    pub fn keys(&self) -> (Box<dyn PacketKey>, Box<dyn HeaderKey>) {
        let prk = self.prk();
        (self.packet_key_from(&prk), self.header_key_from(&prk))
    }

    fn packet_key_from(&self, prk: &hkdf::Prk) -> Box<dyn PacketKey> {
        let (key, iv) = self.packet_key_material_from(prk);
        let key = key.get(..self.suite.key_len()).unwrap_or(&key);
        Box::new(RingPacketKey::new(self.suite, key, iv))
    }

    fn header_key_from(&self, prk: &hkdf::Prk) -> Box<dyn HeaderKey> {
        let hp = self.header_key_material_from(prk);
        let hp = hp.get(..self.suite.key_len()).unwrap_or(&hp);
        Box::new(RingHeaderKey::new(self.suite, hp))
    }

    /// The "quic key" and "quic iv" values; the key occupies the first [`Suite::key_len`] bytes.
    #[cfg(test)]
    pub(crate) fn packet_key_material(&self) -> ([u8; MAX_KEY_LEN], [u8; NONCE_LEN]) {
        self.packet_key_material_from(&self.prk())
    }

    /// The "quic hp" value in the first [`Suite::key_len`] bytes.
    #[cfg(test)]
    pub(crate) fn header_key_material(&self) -> [u8; MAX_KEY_LEN] {
        self.header_key_material_from(&self.prk())
    }

    fn packet_key_material_from(&self, prk: &hkdf::Prk) -> ([u8; MAX_KEY_LEN], [u8; NONCE_LEN]) {
        let mut key = [0u8; MAX_KEY_LEN];
        let mut iv = [0u8; NONCE_LEN];
        expand(prk, self.labels.key, self.suite.key_len(), &mut key);
        expand(prk, self.labels.iv, NONCE_LEN, &mut iv);
        (key, iv)
    }

    fn header_key_material_from(&self, prk: &hkdf::Prk) -> [u8; MAX_KEY_LEN] {
        let mut hp = [0u8; MAX_KEY_LEN];
        expand(prk, self.labels.hp, self.suite.key_len(), &mut hp);
        hp
    }

    /// The secret as an HKDF pseudorandom key (an HMAC key), for its expansions.
    fn prk(&self) -> hkdf::Prk {
        hkdf::Prk::new_less_safe(self.suite.hkdf(), self.as_bytes())
    }
}

/// Fills `out[..len]` with HKDF-Expand-Label(prk, label, "", len) (RFC 9001 §5.1: QUIC always uses a
/// zero-length context).
fn expand(prk: &hkdf::Prk, label: &[u8], len: usize, out: &mut [u8]) {
    let out = out
        .get_mut(..len)
        .expect("callers size `out` for the longest key, IV or hash of any suite");
    hkdf_expand_label(prk, label, &[], out)
        .expect("QUIC labels are under 12 bytes and outputs at most 48 bytes, far inside HKDF's limits");
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.bytes.fill(0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_length() {
        assert_eq!(
            Secret::new(Suite::Aes128Gcm, &[0; 48]).err(),
            Some(CryptoError::InvalidSecretLength)
        );
        assert_eq!(
            Secret::new(Suite::Aes256Gcm, &[0; 32]).err(),
            Some(CryptoError::InvalidSecretLength)
        );
        assert!(Secret::new(Suite::Aes256Gcm, &[0; 48]).is_ok());
        assert_eq!(
            Secret::for_version(0xff00_001d, Suite::Aes128Gcm, &[0; 32]).err(),
            Some(CryptoError::UnsupportedVersion(0xff00_001d))
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = Secret::new(Suite::ChaCha20Poly1305, &[0xab; 32]).expect("32 bytes fit SHA-256");
        let text = format!("{secret:?}");
        assert!(!text.contains("171") && !text.contains("ab"), "{text}");
    }
}
