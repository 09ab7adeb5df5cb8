//! The Retry Integrity Tag (RFC 9001 §5.8; RFC 9369 §3.3.3 for QUIC v2).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use tinyvec::TinyVec;

use super::version::Constants;
use super::CryptoError;
use crate::wire::ConnectionId;

/// Length of the Retry Integrity Tag at the end of a Retry packet.
pub const RETRY_TAG_LEN: usize = 16;

/// Pseudo-packets up to this size are built on the stack; longer tokens spill to the heap.
type PseudoPacket = TinyVec<[u8; 256]>;

/// The Retry Integrity Tag for a Retry packet, given everything of it but the tag.
///
/// `original_dcid` is the Destination Connection ID of the client Initial this Retry answers. Fails for an
/// unknown version or an `original_dcid` longer than 20 bytes.
pub fn retry_tag(
    version: u32,
    original_dcid: &[u8],
    retry_packet_without_tag: &[u8],
) -> Result<[u8; RETRY_TAG_LEN], CryptoError> {
    let (key, nonce, pseudo) = prepare(version, original_dcid, retry_packet_without_tag)?;
    // RFC 9001 §5.8: AEAD_AES_128_GCM over an empty plaintext, with the pseudo-packet as associated data.
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(&*pseudo), &mut [])
        .map_err(|_| CryptoError::EncryptionFailed)?;
    let mut out = [0u8; RETRY_TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Whether the last [`RETRY_TAG_LEN`] bytes of `retry_packet` are its valid Retry Integrity Tag.
///
/// The comparison runs in constant time (the tag is checked by the AEAD's open). Returns `false` for a
/// packet shorter than the tag, an unknown version, or an `original_dcid` longer than 20 bytes; a client
/// MUST discard a Retry whose tag does not verify (RFC 9000 §17.2.5.2).
pub fn verify_retry_tag(version: u32, original_dcid: &[u8], retry_packet: &[u8]) -> bool {
    let Some(split) = retry_packet.len().checked_sub(RETRY_TAG_LEN) else {
        return false;
    };
    let (without_tag, tag) = retry_packet.split_at(split);
    let Ok((key, nonce, pseudo)) = prepare(version, original_dcid, without_tag) else {
        return false;
    };
    let mut tag_buf = [0u8; RETRY_TAG_LEN];
    tag_buf.copy_from_slice(tag);
    key.open_in_place(nonce, Aad::from(&*pseudo), &mut tag_buf)
        .is_ok()
}

/// The fixed key and nonce of `version`, and the Retry Pseudo-Packet: ODCID Length, Original Destination
/// Connection ID, then the Retry packet without its tag (RFC 9001 §5.8).
fn prepare(
    version: u32,
    original_dcid: &[u8],
    retry_packet_without_tag: &[u8],
) -> Result<(LessSafeKey, Nonce, PseudoPacket), CryptoError> {
    let constants = Constants::for_version(version)?;
    if original_dcid.len() > ConnectionId::MAX_LEN {
        return Err(CryptoError::ConnectionIdTooLong);
    }
    let odcid_len = u8::try_from(original_dcid.len()).map_err(|_| CryptoError::ConnectionIdTooLong)?;
    let mut pseudo = PseudoPacket::with_capacity(1 + original_dcid.len() + retry_packet_without_tag.len());
    pseudo.push(odcid_len);
    pseudo.extend_from_slice(original_dcid);
    pseudo.extend_from_slice(retry_packet_without_tag);

    let key = UnboundKey::new(&aead::AES_128_GCM, &constants.retry_key)
        .expect("the Retry key constants are 16 bytes, the AES-128-GCM key length");
    let nonce = Nonce::assume_unique_for_key(constants.retry_nonce);
    Ok((LessSafeKey::new(key), nonce, pseudo))
}
