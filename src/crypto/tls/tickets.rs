//! TLS session tickets bound to the QUIC version (RFC 9369 §7: "Servers MUST validate the originating
//! version of any session ticket or token and not accept one issued from a different version. A
//! rejected ticket results in falling back to a full TLS handshake").
//!
//! rustls knows nothing of QUIC versions, so a server keeps one TLS configuration per version, each
//! with the caller's ticket machinery wrapped to mark what it issues with the version:
//! - stateless tickets: the version goes in front of the plaintext before the caller's ticketer seals
//!   it, and a ticket whose opened plaintext does not start with this version is not opened;
//! - stateful tickets (the session cache rustls uses by default): the version goes in front of every
//!   key, so a ticket from one version finds nothing stored under another.
//!
//! A ticket refused this way is one rustls cannot use: the handshake goes on as a full one, as the RFC
//! says it must. Tickets issued before this marking existed are refused the same way.

use std::fmt;
use std::sync::Arc;

use rustls::server::{ProducesTickets, StoresServerSessions};

/// `tls` for connections of QUIC version `version`: its tickets and cached sessions are this version's
/// alone.
pub(crate) fn for_version(tls: &Arc<rustls::ServerConfig>, version: u32) -> Arc<rustls::ServerConfig> {
    let mut config = (**tls).clone();
    let tag = version.to_be_bytes();
    config.ticketer = Arc::new(VersionTickets {
        inner: tls.ticketer.clone(),
        tag,
    });
    config.session_storage = Arc::new(VersionSessions {
        inner: tls.session_storage.clone(),
        tag,
    });
    Arc::new(config)
}

/// `bytes` with `tag` in front.
fn tagged(tag: [u8; 4], bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + bytes.len());
    out.extend_from_slice(&tag);
    out.extend_from_slice(bytes);
    out
}

/// The caller's ticketer, with the version sealed into each ticket.
struct VersionTickets {
    inner: Arc<dyn ProducesTickets>,
    tag: [u8; 4],
}

impl fmt::Debug for VersionTickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionTickets")
            .field("version", &u32::from_be_bytes(self.tag))
            .field("inner", &self.inner)
            .finish()
    }
}

impl ProducesTickets for VersionTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&tagged(self.tag, plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let mut plain = self.inner.decrypt(cipher)?;
        if !plain.starts_with(&self.tag) {
            return None;
        }
        plain.drain(..self.tag.len());
        Some(plain)
    }
}

/// The caller's session cache, with the version in front of every key.
struct VersionSessions {
    inner: Arc<dyn StoresServerSessions>,
    tag: [u8; 4],
}

impl fmt::Debug for VersionSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionSessions")
            .field("version", &u32::from_be_bytes(self.tag))
            .field("inner", &self.inner)
            .finish()
    }
}

impl StoresServerSessions for VersionSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(tagged(self.tag, &key), value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(&tagged(self.tag, key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(&tagged(self.tag, key))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ServerSessionMemoryCache;

    /// A stand-in for a real ticketer: "seals" by reversing the bytes.
    #[derive(Debug)]
    struct Reverse;

    impl ProducesTickets for Reverse {
        fn enabled(&self) -> bool {
            true
        }
        fn lifetime(&self) -> u32 {
            7
        }
        fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
            Some(plain.iter().rev().copied().collect())
        }
        fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
            Some(cipher.iter().rev().copied().collect())
        }
    }

    #[test]
    fn a_ticket_opens_only_under_the_version_that_sealed_it() {
        let v1 = VersionTickets {
            inner: Arc::new(Reverse),
            tag: 1u32.to_be_bytes(),
        };
        let v2 = VersionTickets {
            inner: Arc::new(Reverse),
            tag: 0x6b33_43cfu32.to_be_bytes(),
        };
        let ticket = v1.encrypt(b"session").unwrap();
        assert_eq!(v1.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(v2.decrypt(&ticket), None);
        // Neither takes a ticket sealed without a version, nor one too short to hold it.
        assert_eq!(v1.decrypt(&Reverse.encrypt(b"session").unwrap()), None);
        assert_eq!(v1.decrypt(&[0, 0]), None);
        assert!(v1.enabled());
        assert_eq!(v1.lifetime(), 7);
    }

    #[test]
    fn a_cached_session_is_found_only_under_the_version_that_stored_it() {
        let cache = ServerSessionMemoryCache::new(16);
        let v1 = VersionSessions {
            inner: cache.clone(),
            tag: 1u32.to_be_bytes(),
        };
        let v2 = VersionSessions {
            inner: cache,
            tag: 0x6b33_43cfu32.to_be_bytes(),
        };
        assert!(v1.put(b"id".to_vec(), b"session".to_vec()));
        assert_eq!(v2.get(b"id"), None);
        assert_eq!(v2.take(b"id"), None);
        assert_eq!(v1.get(b"id").as_deref(), Some(&b"session"[..]));
        assert_eq!(v1.take(b"id").as_deref(), Some(&b"session"[..]));
        assert_eq!(v1.get(b"id"), None);
    }
}
