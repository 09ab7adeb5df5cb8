//! [`PacketKey`] and [`HeaderKey`] on `ring`.

use ring::aead::{self, quic::HeaderProtectionKey, Aad, LessSafeKey, Nonce, UnboundKey};

use super::suite::{NONCE_LEN, TAG_LEN};
use super::{CryptoError, HeaderKey, PacketKey, Suite};

/// AEAD payload protection with one key and IV.
pub(crate) struct RingPacketKey {
    suite: Suite,
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
}

impl RingPacketKey {
    /// `key` must be [`Suite::key_len`] bytes long.
    pub(crate) fn new(suite: Suite, key: &[u8], iv: [u8; NONCE_LEN]) -> Self {
        let key = UnboundKey::new(suite.aead(), key)
            .expect("the key was derived with the suite's key length (Suite::key_len, checked against ring)");
        Self {
            suite,
            key: LessSafeKey::new(key),
            iv,
        }
    }

    fn nonce(&self, pn: u64) -> Nonce {
        Nonce::assume_unique_for_key(nonce(&self.iv, pn))
    }
}

/// RFC 9001 §5.3: the nonce is the IV XORed with the packet number, in network byte order and left-padded
/// with zeros to the IV length.
///
/// Packet numbers are below 2^62, so the 8 bytes of a `u64` hold the 62-bit value with its zero padding.
pub(crate) fn nonce(iv: &[u8; NONCE_LEN], pn: u64) -> [u8; NONCE_LEN] {
    let mut out = *iv;
    for (byte, p) in out.iter_mut().rev().zip(pn.to_le_bytes()) {
        *byte ^= p;
    }
    out
}

impl PacketKey for RingPacketKey {
    fn seal(&self, pn: u64, packet: &mut [u8], header_len: usize) -> Result<(), CryptoError> {
        let payload_end = packet
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&end| end >= header_len)
            .ok_or(CryptoError::PacketTooShort)?;
        let (rest, tag_out) = packet.split_at_mut(payload_end);
        let (header, payload) = rest.split_at_mut(header_len);
        // RFC 9001 §5.3: the associated data is the header up to and including the unprotected packet number.
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(pn), Aad::from(&*header), payload)
            .map_err(|_| CryptoError::EncryptionFailed)?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    fn open(&self, pn: u64, packet: &mut [u8], header_len: usize) -> Result<usize, CryptoError> {
        if packet.len() < header_len.saturating_add(TAG_LEN) {
            return Err(CryptoError::PacketTooShort);
        }
        let (header, payload) = packet.split_at_mut(header_len);
        let plain = self
            .key
            .open_in_place(self.nonce(pn), Aad::from(&*header), payload)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(plain.len())
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn confidentiality_limit(&self) -> u64 {
        self.suite.confidentiality_limit()
    }

    fn integrity_limit(&self) -> u64 {
        self.suite.integrity_limit()
    }
}

/// Header protection: AES-ECB (RFC 9001 §5.4.3) or raw ChaCha20 (RFC 9001 §5.4.4), both from `ring`.
pub(crate) struct RingHeaderKey(HeaderProtectionKey);

impl RingHeaderKey {
    /// `key` must be [`Suite::key_len`] bytes long.
    pub(crate) fn new(suite: Suite, key: &[u8]) -> Self {
        Self(
            HeaderProtectionKey::new(suite.header_protection(), key).expect(
                "the key was derived with the suite's key length (Suite::key_len, checked against ring)",
            ),
        )
    }
}

impl HeaderKey for RingHeaderKey {
    fn sample_len(&self) -> usize {
        self.0.algorithm().sample_len()
    }

    fn mask(&self, sample: &[u8]) -> Result<[u8; 5], CryptoError> {
        // ring rejects a sample of the wrong length.
        self.0.new_mask(sample).map_err(|_| CryptoError::PacketTooShort)
    }
}

// `ring` keys are `Send`; make sure the boxes we hand out stay so.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<RingPacketKey>();
    assert_send::<RingHeaderKey>();
    assert_send::<aead::LessSafeKey>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_xors_the_padded_packet_number() {
        let iv = [0xff; NONCE_LEN];
        assert_eq!(nonce(&iv, 0), iv);
        assert_eq!(
            nonce(&iv, 0x0102),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xfd]
        );
        let top = (1u64 << 62) - 1;
        assert_eq!(
            nonce(&[0; NONCE_LEN], top),
            [0, 0, 0, 0, 0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn short_packets_are_errors() {
        let key = RingPacketKey::new(Suite::Aes128Gcm, &[0; 16], [0; NONCE_LEN]);
        let mut packet = [0u8; 20];
        assert_eq!(key.seal(0, &mut packet, 5), Err(CryptoError::PacketTooShort));
        assert_eq!(key.open(0, &mut packet, 5), Err(CryptoError::PacketTooShort));
        assert_eq!(
            key.seal(0, &mut packet[..15], 0),
            Err(CryptoError::PacketTooShort)
        );
        assert_eq!(
            key.open(0, &mut packet, usize::MAX),
            Err(CryptoError::PacketTooShort)
        );
        // An empty payload is allowed.
        key.seal(7, &mut packet, 4).expect("4 + 16 bytes fit");
        assert_eq!(key.open(7, &mut packet, 4), Ok(0));

        let hp = RingHeaderKey::new(Suite::Aes128Gcm, &[0; 16]);
        let mut packet = [0x40u8; 24];
        assert_eq!(hp.protect(5, &mut packet), Err(CryptoError::PacketTooShort));
        assert_eq!(hp.unprotect(5, &mut packet), Err(CryptoError::PacketTooShort));
        assert_eq!(packet, [0x40; 24], "a failed unprotect leaves the packet alone");
        assert_eq!(hp.unprotect(0, &mut packet), Err(CryptoError::PacketTooShort));
        assert_eq!(
            hp.unprotect(usize::MAX - 2, &mut packet),
            Err(CryptoError::PacketTooShort)
        );
        assert_eq!(hp.unprotect(4, &mut []), Err(CryptoError::PacketTooShort));
        assert!(hp.protect(4, &mut packet).is_ok());
        assert!(hp.unprotect(4, &mut packet).is_ok());
        assert_eq!(packet, [0x40; 24]);
        assert_eq!(hp.mask(&[0; 15]), Err(CryptoError::PacketTooShort));
    }
}
