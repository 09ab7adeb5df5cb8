//! Test certificates from rcgen.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate for `names` and its key.
pub fn self_signed(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("rcgen makes a certificate");
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    (der, key)
}

/// One Ed25519 certificate for `localhost`, the same for the whole test binary: fixed-size keys and
/// signatures, so a simulation's handshake sizes repeat from run to run.
pub fn ed25519_localhost() -> &'static (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>) {
    static CERT: std::sync::OnceLock<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>)> =
        std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("parameters");
        let cert = params.self_signed(&key).expect("a self-signed certificate");
        (
            CertificateDer::from(cert.der().to_vec()),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        )
    })
}
