//! The per-version constants of packet protection: QUIC v1 (RFC 9001) and QUIC v2 (RFC 9369).

use super::CryptoError;
use crate::wire::header::{VERSION_1, VERSION_2};

/// The HKDF labels that derive packet protection values from a traffic secret.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Labels {
    pub(crate) key: &'static [u8],
    pub(crate) iv: &'static [u8],
    pub(crate) hp: &'static [u8],
    pub(crate) ku: &'static [u8],
}

/// Everything in packet protection that depends on the QUIC version.
#[derive(Debug)]
pub(crate) struct Constants {
    pub(crate) initial_salt: [u8; 20],
    pub(crate) labels: &'static Labels,
    pub(crate) retry_key: [u8; 16],
    pub(crate) retry_nonce: [u8; 12],
}

/// RFC 9001 §5.1, §6.1.
pub(crate) static V1_LABELS: Labels = Labels {
    key: b"quic key",
    iv: b"quic iv",
    hp: b"quic hp",
    ku: b"quic ku",
};

/// RFC 9369 §3.3.2.
pub(crate) static V2_LABELS: Labels = Labels {
    key: b"quicv2 key",
    iv: b"quicv2 iv",
    hp: b"quicv2 hp",
    ku: b"quicv2 ku",
};

static V1: Constants = Constants {
    // RFC 9001 §5.2.
    initial_salt: [
        0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc,
        0xbb, 0x7f, 0x0a,
    ],
    labels: &V1_LABELS,
    // RFC 9001 §5.8.
    retry_key: [
        0xbe, 0x0c, 0x69, 0x0b, 0x9f, 0x66, 0x57, 0x5a, 0x1d, 0x76, 0x6b, 0x54, 0xe3, 0x68, 0xc8, 0x4e,
    ],
    retry_nonce: [
        0x46, 0x15, 0x99, 0xd3, 0x5d, 0x63, 0x2b, 0xf2, 0x23, 0x98, 0x25, 0xbb,
    ],
};

static V2: Constants = Constants {
    // RFC 9369 §3.3.1.
    initial_salt: [
        0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9,
        0xbd, 0x2e, 0xd9,
    ],
    labels: &V2_LABELS,
    // RFC 9369 §3.3.3.
    retry_key: [
        0x8f, 0xb4, 0xb0, 0x1b, 0x56, 0xac, 0x48, 0xe2, 0x60, 0xfb, 0xcb, 0xce, 0xad, 0x7c, 0xcc, 0x92,
    ],
    retry_nonce: [
        0xd8, 0x69, 0x69, 0xbc, 0x2d, 0x7c, 0x6d, 0x99, 0x90, 0xef, 0xb0, 0x4a,
    ],
};

impl Constants {
    pub(crate) fn for_version(version: u32) -> Result<&'static Constants, CryptoError> {
        match version {
            VERSION_1 => Ok(&V1),
            VERSION_2 => Ok(&V2),
            other => Err(CryptoError::UnsupportedVersion(other)),
        }
    }
}
