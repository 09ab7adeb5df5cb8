//! Initial secrets and keys (RFC 9001 §5.2).

use ring::{hkdf, hmac};

use super::hkdf::hkdf_expand_label;
use super::suite::MAX_HASH_LEN;
use super::version::Constants;
use super::{CryptoError, DirectionalKeys, Keys, Secret, Suite};
use crate::wire::ConnectionId;
use crate::Side;

/// Initial packets always use AEAD_AES_128_GCM with SHA-256 (RFC 9001 §5, §5.2).
const INITIAL_SUITE: Suite = Suite::Aes128Gcm;

/// The client and server Initial secrets, in that order, for the Destination Connection ID of the client's
/// first Initial packet (or the server's Source Connection ID from a Retry).
///
/// RFC 9001 §5.2: `initial_secret = HKDF-Extract(initial_salt, client_dst_connection_id)`, then
/// HKDF-Expand-Label with "client in" and "server in" to 32 bytes. RFC 9001 §5.2 says the TLS 1.3
/// HKDF-Expand-Label MUST be used here whatever TLS version is offered, so this never goes through TLS.
/// Fails for an unknown version or a connection ID longer than 20 bytes.
pub fn initial_secrets(version: u32, client_dcid: &[u8]) -> Result<(Secret, Secret), CryptoError> {
    let constants = Constants::for_version(version)?;
    if client_dcid.len() > ConnectionId::MAX_LEN {
        return Err(CryptoError::ConnectionIdTooLong);
    }
    let initial_secret = extract(&constants.initial_salt, client_dcid);
    let prk = hkdf::Prk::new_less_safe(INITIAL_SUITE.hkdf(), initial_secret.as_ref());
    let expand = |label: &[u8]| {
        let mut out = [0u8; MAX_HASH_LEN];
        let out = out
            .get_mut(..INITIAL_SUITE.hash_len())
            .expect("SHA-256 output is shorter than MAX_HASH_LEN");
        hkdf_expand_label(&prk, label, &[], out)
            .expect("fixed 9-byte labels and 32-byte outputs fit HKDF's limits");
        Secret::with_labels(constants.labels, INITIAL_SUITE, out)
    };
    Ok((expand(b"client in")?, expand(b"server in")?))
}

/// The Initial keys of one endpoint: `local` protects what `side` sends, `remote` what its peer sends.
///
/// See [`initial_secrets`] for the derivation and the errors.
pub fn initial_keys(version: u32, client_dcid: &[u8], side: Side) -> Result<Keys, CryptoError> {
    let (client, server) = initial_secrets(version, client_dcid)?;
    let (local, remote) = match side {
        Side::Client => (client, server),
        Side::Server => (server, client),
    };
    Ok(Keys {
        local: DirectionalKeys::new(&local),
        remote: DirectionalKeys::new(&remote),
    })
}

/// HKDF-Extract (RFC 5869 §2.2) is HMAC(salt, IKM). Done with `hmac` directly so tests can see the PRK,
/// which `ring::hkdf::Prk` keeps opaque.
fn extract(salt: &[u8], ikm: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(INITIAL_SUITE.hkdf().hmac_algorithm(), salt), ikm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::hex;

    const DCID: &str = "8394c8f03e515708";

    /// RFC 9001 Appendix A.1 and RFC 9369 Appendix A.1: the common initial secret.
    #[test]
    fn initial_secret_vectors() {
        let v1 = Constants::for_version(crate::wire::header::VERSION_1).expect("v1 is supported");
        assert_eq!(
            extract(&v1.initial_salt, &hex(DCID)).as_ref(),
            hex("7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44")
        );
        let v2 = Constants::for_version(crate::wire::header::VERSION_2).expect("v2 is supported");
        assert_eq!(
            extract(&v2.initial_salt, &hex(DCID)).as_ref(),
            hex("2062e8b3cd8d52092614b8071d0aa1fb7c2e3ac193f78b280e72d8f5751f6aba")
        );
    }

    #[test]
    fn rejects_bad_inputs() {
        assert_eq!(
            initial_secrets(0x5a5a_5a5a, &hex(DCID)).err(),
            Some(CryptoError::UnsupportedVersion(0x5a5a_5a5a))
        );
        assert_eq!(
            initial_secrets(1, &[0; 21]).err(),
            Some(CryptoError::ConnectionIdTooLong)
        );
        // A zero-length connection ID is allowed after a Retry with an empty Source Connection ID (RFC 9001 §5.2).
        assert!(initial_keys(1, &[], Side::Client).is_ok());
    }

    #[test]
    fn sides_mirror_each_other() {
        let client = initial_keys(1, &hex(DCID), Side::Client).expect("v1");
        let server = initial_keys(1, &hex(DCID), Side::Server).expect("v1");
        let mut packet = *b"header plaintext 0123456789abcdef";
        let original = packet;
        client.local.packet.seal(3, &mut packet, 6).expect("long enough");
        client.local.header.protect(5, &mut packet).expect("long enough");
        server
            .remote
            .header
            .unprotect(5, &mut packet)
            .expect("long enough");
        let n = server.remote.packet.open(3, &mut packet, 6).expect("same keys");
        assert_eq!(n, original.len() - 6 - 16);
        assert_eq!(packet[..6 + n], original[..6 + n]);
    }
}
