//! TLS that draws nothing from the operating system, for simulations whose packet *bytes* must repeat
//! with the seed, not only their sizes and times.
//!
//! With the default `rustls` provider, key shares and randoms come from the operating system and ticket
//! ages from the system clock, so ciphertexts differ between runs. That leaves the trace reproducible
//! as long as nothing reads ciphertext as if it were a header, which corruption makes happen: a flipped
//! header-form bit turns a 1-RTT packet into a long header of an unknown version, and the Version
//! Negotiation that answers it echoes a connection ID whose length byte is ciphertext, so its size
//! (and whether it is sent at all) changes from run to run. [`deterministic_tls`] removes every such
//! draw.
//!
//! **Never use these options on a real network.** Every key share is derived from the seed, so whoever
//! knows the seed can decrypt everything; they exist only to make simulations repeat.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret, SupportedKxGroup,
};
use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use rustls::{NamedGroup, PeerMisbehaved};

use crate::crypto::tls::ConfigOptions;
use crate::rng::Rng;

/// The time `rustls` reads: 2026-01-01T00:00:00Z, for certificate validity and ticket ages.
const FIXED_UNIX_TIME: Duration = Duration::from_secs(1_767_225_600);

/// TLS options for a simulation whose packet bytes repeat with `seed`: the ring provider, with its
/// randoms and X25519 key shares drawn from a generator seeded with `seed`, and a clock that always
/// reads 2026-01-01 (certificates must be valid then; session tickets never age).
///
/// Build the server and client configurations of one simulation from one value of these options, and
/// build them afresh for each run: `rustls` keeps session tickets in the configurations, so a second
/// run with the same ones resumes where the first did a full handshake. The certificate must be the
/// same in every run (generate it once), and its signature deterministic (Ed25519; ECDSA signatures
/// take a random nonce from the operating system). Only X25519 is offered.
///
/// For simulations only: anyone who knows the seed can decrypt the traffic.
pub fn deterministic_tls(seed: u64) -> ConfigOptions {
    let random = Arc::new(SeededRandom(Mutex::new(Rng::from_seed(seed))));
    // rustls wants `&'static` key-exchange groups and randomness: one small leak per call, made once per
    // simulation run.
    let kx: &'static dyn SupportedKxGroup = Box::leak(Box::new(SeededX25519(random.clone())));
    let secure_random: &'static dyn SecureRandom = Box::leak(Box::new(SharedRandom(random)));
    let provider = CryptoProvider {
        kx_groups: vec![kx],
        secure_random,
        ..rustls::crypto::ring::default_provider()
    };
    ConfigOptions {
        provider: Some(Arc::new(provider)),
        time_provider: Some(Arc::new(FixedTime)),
        ..ConfigOptions::default()
    }
}

/// Random bytes from the simulation's seed.
#[derive(Debug)]
struct SeededRandom(Mutex<Rng>);

impl SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.0.lock().map_err(|_| GetRandomFailed)?.fill(buf);
        Ok(())
    }
}

/// [`SeededRandom`] as rustls's source of randomness.
#[derive(Debug)]
struct SharedRandom(Arc<SeededRandom>);

impl SecureRandom for SharedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.0.fill(buf)
    }
}

/// X25519 with private keys drawn from [`SeededRandom`] (ring's own group draws from the operating
/// system whatever the provider's randomness).
#[derive(Debug)]
struct SeededX25519(Arc<SeededRandom>);

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut seed = [0u8; 32];
        self.0
            .fill(&mut seed)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        // ring takes randomness only through its sealed trait; its test type hands over fixed bytes.
        #[allow(deprecated)]
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &seed };
        let key = EphemeralPrivateKey::generate(&X25519, &fixed)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let public = key
            .compute_public_key()
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?
            .as_ref()
            .to_vec();
        Ok(Box::new(SeededKeyExchange { key, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One X25519 exchange under way.
struct SeededKeyExchange {
    key: EphemeralPrivateKey,
    public: Vec<u8>,
}

impl ActiveKeyExchange for SeededKeyExchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        agree_ephemeral(self.key, &UnparsedPublicKey::new(&X25519, peer), |secret| {
            SharedSecret::from(secret)
        })
        .map_err(|_| PeerMisbehaved::InvalidKeyShare.into())
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// A clock that always reads [`FIXED_UNIX_TIME`].
#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(FIXED_UNIX_TIME))
    }
}
