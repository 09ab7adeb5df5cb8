//! The TLS 1.3 cipher suites QUIC can use (RFC 9001 §5.3) and what each implies.

use ring::{aead, hkdf};

/// A TLS 1.3 cipher suite usable with QUIC.
///
/// TLS_AES_128_CCM_8_SHA256 is not listed: RFC 9001 §5.3 forbids it, and AES-128-CCM has no `ring`
/// implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// TLS_AES_128_GCM_SHA256: AEAD_AES_128_GCM, AES-128 header protection, SHA-256.
    Aes128Gcm,
    /// TLS_AES_256_GCM_SHA384: AEAD_AES_256_GCM, AES-256 header protection, SHA-384.
    Aes256Gcm,
    /// TLS_CHACHA20_POLY1305_SHA256: AEAD_CHACHA20_POLY1305, ChaCha20 header protection, SHA-256.
    ChaCha20Poly1305,
}

impl Suite {
    /// The suite with this TLS 1.3 CipherSuite code point (RFC 8446 Appendix B.4), if QUIC can use it here.
    pub fn from_tls_id(id: u16) -> Option<Suite> {
        match id {
            0x1301 => Some(Suite::Aes128Gcm),
            0x1302 => Some(Suite::Aes256Gcm),
            0x1303 => Some(Suite::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The TLS 1.3 CipherSuite code point.
    pub fn tls_id(self) -> u16 {
        match self {
            Suite::Aes128Gcm => 0x1301,
            Suite::Aes256Gcm => 0x1302,
            Suite::ChaCha20Poly1305 => 0x1303,
        }
    }

    /// Output length of the suite's hash, which is also the length of its traffic secrets.
    pub fn hash_len(self) -> usize {
        match self {
            Suite::Aes128Gcm | Suite::ChaCha20Poly1305 => 32,
            Suite::Aes256Gcm => 48,
        }
    }

    /// Length of the AEAD key ("quic key"); the header protection key ("quic hp") has the same length.
    pub fn key_len(self) -> usize {
        match self {
            Suite::Aes128Gcm => 16,
            Suite::Aes256Gcm | Suite::ChaCha20Poly1305 => 32,
        }
    }

    /// Length of the IV ("quic iv"): the AEAD nonce length, at least 8 (RFC 9001 §5.1). 12 for every suite.
    pub fn iv_len(self) -> usize {
        NONCE_LEN
    }

    /// Length of the authentication tag: 16 for every suite (RFC 9001 §5.3).
    pub fn tag_len(self) -> usize {
        TAG_LEN
    }

    /// Packets that may be encrypted under one key (RFC 9001 §6.6): 2^23 for AES-GCM; for ChaCha20-Poly1305
    /// the limit exceeds the packet number space, so this is 2^62.
    pub fn confidentiality_limit(self) -> u64 {
        match self {
            Suite::Aes128Gcm | Suite::Aes256Gcm => 1 << 23,
            Suite::ChaCha20Poly1305 => 1 << 62,
        }
    }

    /// Packets that may fail authentication within a connection (RFC 9001 §6.6): 2^52 for AES-GCM, 2^36 for
    /// ChaCha20-Poly1305.
    pub fn integrity_limit(self) -> u64 {
        match self {
            Suite::Aes128Gcm | Suite::Aes256Gcm => 1 << 52,
            Suite::ChaCha20Poly1305 => 1 << 36,
        }
    }

    pub(crate) fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes128Gcm | Suite::ChaCha20Poly1305 => hkdf::HKDF_SHA256,
            Suite::Aes256Gcm => hkdf::HKDF_SHA384,
        }
    }

    pub(crate) fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// RFC 9001 §5.4.3 (AES-ECB) and §5.4.4 (raw ChaCha20).
    pub(crate) fn header_protection(self) -> &'static aead::quic::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::quic::AES_128,
            Suite::Aes256Gcm => &aead::quic::AES_256,
            Suite::ChaCha20Poly1305 => &aead::quic::CHACHA20,
        }
    }
}

/// The AEAD nonce length of every suite.
pub(crate) const NONCE_LEN: usize = aead::NONCE_LEN;
/// The tag length of every suite.
pub(crate) const TAG_LEN: usize = 16;
/// The longest AEAD or header protection key of any suite.
pub(crate) const MAX_KEY_LEN: usize = 32;
/// The longest hash (and so traffic secret) of any suite.
pub(crate) const MAX_HASH_LEN: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Suite; 3] = [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::ChaCha20Poly1305];

    #[test]
    fn lengths_agree_with_ring() {
        for suite in ALL {
            assert_eq!(suite.key_len(), suite.aead().key_len());
            assert_eq!(suite.key_len(), suite.header_protection().key_len());
            assert_eq!(suite.tag_len(), suite.aead().tag_len());
            assert_eq!(suite.iv_len(), suite.aead().nonce_len());
            assert_eq!(
                suite.hash_len(),
                suite.hkdf().hmac_algorithm().digest_algorithm().output_len()
            );
            assert!(suite.key_len() <= MAX_KEY_LEN && suite.hash_len() <= MAX_HASH_LEN);
            assert_eq!(Suite::from_tls_id(suite.tls_id()), Some(suite));
        }
        assert_eq!(Suite::from_tls_id(0x1304), None);
    }

    #[test]
    fn rfc9001_section_6_6_limits() {
        assert_eq!(Suite::Aes128Gcm.confidentiality_limit(), 8_388_608);
        assert_eq!(Suite::Aes256Gcm.integrity_limit(), 4_503_599_627_370_496);
        assert_eq!(
            Suite::ChaCha20Poly1305.confidentiality_limit(),
            4_611_686_018_427_387_904
        );
        assert_eq!(Suite::ChaCha20Poly1305.integrity_limit(), 68_719_476_736);
    }
}
