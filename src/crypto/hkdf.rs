//! HKDF-Expand-Label (RFC 8446 §7.1), the KDF QUIC uses for every key it derives (RFC 9001 §5.1).

use ring::hkdf;

/// The prefix TLS 1.3 puts in front of every label (RFC 8446 §7.1).
const LABEL_PREFIX: &[u8] = b"tls13 ";

/// Output length adapter so that `ring` expands to exactly `out.len()` bytes.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Calls `f` with the pieces of the serialized `HkdfLabel` structure (RFC 8446 §7.1):
///
/// ```text
/// struct {
///     uint16 length = Length;
///     opaque label<7..255> = "tls13 " + Label;
///     opaque context<0..255> = Context;
/// } HkdfLabel;
/// ```
///
/// Returns `None` when a field does not fit its length prefix.
fn with_hkdf_label<R>(len: usize, label: &[u8], context: &[u8], f: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
    let length = u16::try_from(len).ok()?.to_be_bytes();
    let label_len = [u8::try_from(LABEL_PREFIX.len() + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    Some(f(&[
        &length,
        &label_len,
        LABEL_PREFIX,
        label,
        &context_len,
        context,
    ]))
}

/// HKDF-Expand-Label(Secret, Label, Context, Length) from RFC 8446 §7.1, filling all of `out`
/// (Length = `out.len()`).
///
/// `label` is given without the "tls13 " prefix, which is added here. QUIC always passes an empty `context`
/// (RFC 9001 §5.1). Returns `None` when the label is longer than 249 bytes, the context longer than 255
/// bytes, or `out` longer than HKDF allows for the hash (255 hash lengths).
pub(crate) fn hkdf_expand_label(prk: &hkdf::Prk, label: &[u8], context: &[u8], out: &mut [u8]) -> Option<()> {
    with_hkdf_label(out.len(), label, context, |info| {
        prk.expand(info, Len(out.len())).and_then(|okm| okm.fill(out))
    })?
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialized_label(len: usize, label: &[u8]) -> Vec<u8> {
        with_hkdf_label(len, label, &[], |info| info.concat()).expect("labels in this test are short")
    }

    /// RFC 9001 Appendix A.1 lists the serialized HkdfLabel of each label QUIC uses.
    #[test]
    fn rfc9001_appendix_a1_label_encodings() {
        let cases: [(usize, &[u8], &str); 5] = [
            (32, b"client in", "00200f746c73313320636c69656e7420696e00"),
            (32, b"server in", "00200f746c7331332073657276657220696e00"),
            (16, b"quic key", "00100e746c7331332071756963206b657900"),
            (12, b"quic iv", "000c0d746c733133207175696320697600"),
            (16, b"quic hp", "00100d746c733133207175696320687000"),
        ];
        for (len, label, expected) in cases {
            assert_eq!(
                serialized_label(len, label),
                crate::crypto::tests::hex(expected),
                "{label:?}"
            );
        }
    }

    /// RFC 9369 Appendix A.1 lists the v2 labels.
    #[test]
    fn rfc9369_appendix_a1_label_encodings() {
        let cases: [(usize, &[u8], &str); 3] = [
            (16, b"quicv2 key", "001010746c73313320717569637632206b657900"),
            (12, b"quicv2 iv", "000c0f746c7331332071756963763220697600"),
            (16, b"quicv2 hp", "00100f746c7331332071756963763220687000"),
        ];
        for (len, label, expected) in cases {
            assert_eq!(
                serialized_label(len, label),
                crate::crypto::tests::hex(expected),
                "{label:?}"
            );
        }
    }

    #[test]
    fn rejects_oversized_fields() {
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &[0; 32]);
        let mut out = [0u8; 16];
        assert!(hkdf_expand_label(&prk, &[b'a'; 250], &[], &mut out).is_none());
        assert!(hkdf_expand_label(&prk, b"quic key", &[0; 256], &mut out).is_none());
        let mut huge = vec![0u8; 255 * 32 + 1];
        assert!(hkdf_expand_label(&prk, b"quic key", &[], &mut huge).is_none());
        assert!(hkdf_expand_label(&prk, &[b'a'; 249], &[0; 255], &mut out).is_some());
    }
}
