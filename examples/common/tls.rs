//! Certificates, keys and cipher suite names for the examples.

use std::error::Error;
use std::path::Path;

use quicsand::crypto::Suite;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, its key, and both as PEM text.
pub struct SelfSigned {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: String,
}

/// Makes a [`SelfSigned`] certificate with rcgen.
pub fn self_signed() -> Result<SelfSigned, Box<dyn Error>> {
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok(SelfSigned {
        cert: CertificateDer::from(certified.cert.der().to_vec()),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der())),
        cert_pem: certified.cert.pem(),
    })
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Box<dyn Error>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()).into());
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Box<dyn Error>> {
    Ok(PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// The suite for a `--cipher` value.
pub fn parse_cipher(name: &str) -> Result<Suite, String> {
    match name {
        "aes128" => Ok(Suite::Aes128Gcm),
        "aes256" => Ok(Suite::Aes256Gcm),
        "chacha20" => Ok(Suite::ChaCha20Poly1305),
        _ => Err(format!(
            "unknown cipher {name:?} (expected aes128, aes256 or chacha20)"
        )),
    }
}

/// The IANA name of a suite.
pub fn suite_name(suite: Suite) -> &'static str {
    match suite {
        Suite::Aes128Gcm => "TLS_AES_128_GCM_SHA256",
        Suite::Aes256Gcm => "TLS_AES_256_GCM_SHA384",
        Suite::ChaCha20Poly1305 => "TLS_CHACHA20_POLY1305_SHA256",
    }
}

/// 32 bytes from the operating system's RNG: the endpoint seed of an example facing a network, whose
/// connection IDs, reset and token keys must not be guessable.
pub fn random_bytes() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's RNG");
    bytes
}

/// The endpoint settings for `--seed N` (repeatable runs), or else seeded from the operating system.
pub fn endpoint_config(seed: Option<u64>) -> quicsand::EndpointConfig {
    match seed {
        Some(seed) => quicsand::EndpointConfig::with_seed(seed),
        None => quicsand::EndpointConfig {
            seed: random_bytes(),
            ..quicsand::EndpointConfig::default()
        },
    }
}
