//! [`Session`] on `rustls`, the adapters from its QUIC keys to our [`PacketKey`] / [`HeaderKey`], and
//! TLS 1.3-only configuration helpers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::quic;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use super::hello::{Finding, HelloScan};
use super::{KeyChange, Level, Session, TlsConfigError};
use crate::crypto::{CryptoError, DirectionalKeys, HeaderKey, Keys, PacketKey, Suite};
use crate::wire::transport_params::TransportParameters;
use crate::wire::{TransportError, TransportErrorCode};
use crate::Side;

/// The TLS internal_error alert (RFC 8446 §6.2), used when `rustls` fails without naming an alert.
const INTERNAL_ERROR_ALERT: u8 = 80;

/// The TLS unexpected_message alert (RFC 8446 §6.2).
const UNEXPECTED_MESSAGE_ALERT: u8 = 10;

/// The TLS missing_extension alert (RFC 8446 §6.2).
const MISSING_EXTENSION_ALERT: u8 = 109;

/// Length of the longest Packet Number field (RFC 9000 §17.1), which the header protection sample skips
/// (RFC 9001 §5.4.2).
const MAX_PN_LEN: usize = 4;

// ---------------------------------------------------------------------------------------------------------
// Key adapters
// ---------------------------------------------------------------------------------------------------------

/// Our [`PacketKey`] over a `rustls` QUIC packet key.
///
/// The tag length is read once: every packet needs it, and asking `rustls` is a dynamic call.
struct RustlsPacketKey {
    key: Box<dyn quic::PacketKey>,
    tag_len: usize,
}

impl RustlsPacketKey {
    fn boxed(key: Box<dyn quic::PacketKey>) -> Box<dyn PacketKey> {
        let tag_len = key.tag_len();
        Box::new(Self { key, tag_len })
    }
}

impl PacketKey for RustlsPacketKey {
    fn seal(&self, pn: u64, packet: &mut [u8], header_len: usize) -> Result<(), CryptoError> {
        let tag_len = self.tag_len;
        let payload_end = packet
            .len()
            .checked_sub(tag_len)
            .filter(|&end| end >= header_len)
            .ok_or(CryptoError::PacketTooShort)?;
        let (rest, tag_out) = packet.split_at_mut(payload_end);
        let (header, payload) = rest.split_at_mut(header_len);
        // RFC 9001 §5.3: the associated data is the header up to and including the unprotected packet number.
        let tag = self
            .key
            .encrypt_in_place(pn, header, payload)
            .map_err(|_| CryptoError::EncryptionFailed)?;
        if tag.as_ref().len() != tag_out.len() {
            return Err(CryptoError::EncryptionFailed);
        }
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    fn open(&self, pn: u64, packet: &mut [u8], header_len: usize) -> Result<usize, CryptoError> {
        if packet.len() < header_len.saturating_add(self.tag_len) {
            return Err(CryptoError::PacketTooShort);
        }
        let (header, payload) = packet.split_at_mut(header_len);
        let plain = self
            .key
            .decrypt_in_place(pn, header, payload)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(plain.len())
    }

    fn tag_len(&self) -> usize {
        self.tag_len
    }

    fn confidentiality_limit(&self) -> u64 {
        self.key.confidentiality_limit()
    }

    fn integrity_limit(&self) -> u64 {
        self.key.integrity_limit()
    }
}

/// Our [`HeaderKey`] over a `rustls` QUIC header protection key.
///
/// `rustls` applies the mask but does not hand it out, so [`protect`](HeaderKey::protect) and
/// [`unprotect`](HeaderKey::unprotect) call it directly, and [`mask`](HeaderKey::mask) recovers the mask by
/// protecting a scratch short header (see there).
struct RustlsHeaderKey(Box<dyn quic::HeaderProtectionKey>);

impl RustlsHeaderKey {
    /// Splits `packet` into its first byte, the 4 bytes a packet number may occupy, and the sample
    /// (RFC 9001 §5.4.2: the sample starts 4 bytes after the start of the Packet Number field; packets too
    /// short to hold a full sample are rejected without being modified).
    fn split<'a>(
        &self,
        pn_offset: usize,
        packet: &'a mut [u8],
    ) -> Result<(&'a mut u8, &'a mut [u8], &'a [u8]), CryptoError> {
        let sample_len = self.0.sample_len();
        let sample_end = pn_offset
            .checked_add(MAX_PN_LEN)
            .and_then(|start| start.checked_add(sample_len))
            .ok_or(CryptoError::PacketTooShort)?;
        // The first byte precedes the packet number, so a zero offset cannot be a valid header.
        if pn_offset == 0 || packet.len() < sample_end {
            return Err(CryptoError::PacketTooShort);
        }
        let (first, rest) = packet.split_first_mut().ok_or(CryptoError::PacketTooShort)?;
        // 1 + (pn_offset - 1) + 4 + sample_len == sample_end <= packet.len(), so both splits are in range.
        let (_, rest) = rest.split_at_mut(pn_offset - 1);
        let (pn, rest) = rest.split_at_mut(MAX_PN_LEN);
        let sample = rest.get(..sample_len).ok_or(CryptoError::PacketTooShort)?;
        Ok((first, pn, sample))
    }
}

impl HeaderKey for RustlsHeaderKey {
    fn sample_len(&self) -> usize {
        self.0.sample_len()
    }

    /// Recovers the mask by protecting a scratch short header whose first byte announces a 4-byte packet
    /// number (0x03) and whose packet number bytes are zero: the result is the low 5 bits of the first mask
    /// byte and the 4 packet number mask bytes.
    ///
    /// Limitation: the top 3 bits of the first mask byte come back as zero. RFC 9001 §5.4.1 never uses them
    /// (long headers take 4 bits of it, short headers 5), so the mask protects every header exactly as the
    /// full one would.
    fn mask(&self, sample: &[u8]) -> Result<[u8; 5], CryptoError> {
        if sample.len() != self.0.sample_len() {
            return Err(CryptoError::PacketTooShort);
        }
        const SCRATCH_FIRST: u8 = 0x03;
        let mut first = SCRATCH_FIRST;
        let mut pn = [0u8; MAX_PN_LEN];
        self.0
            .encrypt_in_place(sample, &mut first, &mut pn)
            .map_err(|_| CryptoError::PacketTooShort)?;
        let [p0, p1, p2, p3] = pn;
        Ok([first ^ SCRATCH_FIRST, p0, p1, p2, p3])
    }

    fn protect(&self, pn_offset: usize, packet: &mut [u8]) -> Result<(), CryptoError> {
        let (first, pn, sample) = self.split(pn_offset, packet)?;
        // RFC 9001 §5.4.1: the packet number length comes from the first byte before it is masked.
        let pn_len = usize::from(*first & 0x03) + 1;
        let pn = pn.get_mut(..pn_len).ok_or(CryptoError::PacketTooShort)?;
        self.0
            .encrypt_in_place(sample, first, pn)
            .map_err(|_| CryptoError::PacketTooShort)
    }

    /// Hands `rustls` all 4 bytes a packet number may occupy: the length is only known once the first byte
    /// is unmasked, and `rustls` unmasks just the `(first & 0x03) + 1` bytes it then announces
    /// (RFC 9001 §5.4.1).
    fn unprotect(&self, pn_offset: usize, packet: &mut [u8]) -> Result<(), CryptoError> {
        let (first, pn, sample) = self.split(pn_offset, packet)?;
        self.0
            .decrypt_in_place(sample, first, pn)
            .map_err(|_| CryptoError::PacketTooShort)
    }
}

fn directional(keys: quic::DirectionalKeys) -> DirectionalKeys {
    DirectionalKeys {
        packet: RustlsPacketKey::boxed(keys.packet),
        header: Box::new(RustlsHeaderKey(keys.header)),
    }
}

/// Our [`Keys`] for `rustls` keys of one level.
fn keys(keys: quic::Keys) -> Keys {
    Keys {
        local: directional(keys.local),
        remote: directional(keys.remote),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------------------------------------

/// A [`Session`] on `rustls`'s QUIC support (`rustls::quic`, QUIC version 1).
///
/// Handshake output is pulled from `rustls` as soon as it exists and queued with its key changes, so the
/// session always knows which level TLS reads at and can reject CRYPTO data at any other
/// (RFC 9001 §4.1.3).
pub struct RustlsSession {
    /// The `rustls` connection; a server drops it once the handshake is over (see `Finished`). Boxed, so
    /// that what stays after that is small.
    conn: Option<Box<quic::Connection>>,
    /// What a server keeps once it dropped `conn`.
    finished: Option<Box<Finished>>,
    side: Side,
    /// The name the client connects to; the server asks `rustls` for the SNI it received.
    server_name: Option<String>,
    /// Handshake bytes to send, each chunk followed by the key change that ends its level (if any).
    pending: VecDeque<(Vec<u8>, Option<KeyChange>)>,
    /// The level TLS expects its next handshake bytes at.
    read_level: Level,
    /// Whether the 1-RTT keys have been produced.
    one_rtt: bool,
    /// Secrets for the next 1-RTT key phase (RFC 9001 §6.1).
    next: Option<quic::Secrets>,
    /// The error the session failed with; it stays failed.
    error: Option<TransportError>,
    /// A server, until TLS reads past the Initial level: the reader of the ClientHello, for what QUIC
    /// requires of it that `rustls` does not check (RFC 9001 §8.2, §8.4).
    hello: Option<Box<HelloScan>>,
}

/// What a server's session answers from once the handshake is over and all its output was written.
///
/// A QUIC client sends no TLS message after its Finished (RFC 9001 §4.1.2: no post-handshake
/// authentication, and key updates are QUIC's own, §6), so the server's `rustls` connection has nothing
/// left to do; its state (record keys, buffers, transcript) is a few kilobytes per connection. Key updates
/// keep working from the saved secrets (`RustlsSession::next`).
#[derive(Debug)]
struct Finished {
    alpn: Option<Vec<u8>>,
    server_name: Option<String>,
    suite: Option<Suite>,
    params: Option<Vec<u8>>,
    peer_certificates: Option<Vec<Vec<u8>>>,
}

/// The rustls name of QUIC `version`: its labels derive the Handshake and 1-RTT keys and their updates
/// (RFC 9369 §3.3.2: "quicv2 key", "quicv2 ku" and the rest for version 2). Versions other than 2 get
/// version 1's: no other reaches a connection (their Initial keys are refused first).
fn rustls_version(version: u32) -> quic::Version {
    if version == crate::wire::header::VERSION_2 {
        quic::Version::V2
    } else {
        quic::Version::V1
    }
}

impl RustlsSession {
    /// A client session connecting to `server_name` (a DNS name or an IP address, checked against the server's
    /// certificate), sending `params` in the quic_transport_parameters extension (RFC 9001 §8.2), for a
    /// connection of QUIC `version`.
    ///
    /// The ClientHello is ready for [`Session::write_handshake`] at once, at the Initial level. It never
    /// offers early data, whatever `config.enable_early_data` says (see below).
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: &str,
        params: &TransportParameters,
        version: u32,
    ) -> Result<Self, TlsConfigError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsConfigError::InvalidServerName(server_name.to_owned()))?;
        // RFC 9001 §4.6.1: the early_data extension tells the server the client sends 0-RTT packets,
        // which this engine never does: a server that takes it would accept 0-RTT that never comes. The
        // copy shares the session store, so resumption works as before.
        let config = if config.enable_early_data {
            let mut without = (*config).clone();
            without.enable_early_data = false;
            Arc::new(without)
        } else {
            config
        };
        let conn = quic::ClientConnection::new(config, rustls_version(version), name, encode_params(params))?;
        Ok(Self::new(conn.into(), Side::Client, Some(server_name.to_owned())))
    }

    /// A server session sending `params` in the quic_transport_parameters extension (RFC 9001 §8.2), for a
    /// connection of QUIC `version`.
    pub fn server(
        config: Arc<ServerConfig>,
        params: &TransportParameters,
        version: u32,
    ) -> Result<Self, TlsConfigError> {
        let conn = quic::ServerConnection::new(config, rustls_version(version), encode_params(params))?;
        Ok(Self::new(conn.into(), Side::Server, None))
    }

    fn new(conn: quic::Connection, side: Side, server_name: Option<String>) -> Self {
        let mut session = Self {
            conn: Some(Box::new(conn)),
            finished: None,
            side,
            server_name,
            pending: VecDeque::new(),
            read_level: Level::Initial,
            one_rtt: false,
            next: None,
            error: None,
            hello: side.is_server().then(|| Box::new(HelloScan::new())),
        };
        session.pull_output();
        session
    }

    /// Moves everything `rustls` has to send, with its key changes, into `pending`.
    fn pull_output(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        loop {
            let mut bytes = Vec::new();
            let change = conn.write_hs(&mut bytes).map(|change| match change {
                quic::KeyChange::Handshake { keys: k } => {
                    // Both sides read the peer's next handshake message at the Handshake level.
                    self.read_level = Level::Handshake;
                    KeyChange::Handshake(keys(k))
                }
                quic::KeyChange::OneRtt { keys: k, next } => {
                    self.one_rtt = true;
                    self.next = Some(next);
                    // The client gets 1-RTT keys after reading the server's Finished, so anything more from
                    // the server (NewSessionTicket) comes at 1-RTT. The server still awaits the client's
                    // Finished at the Handshake level; see `read_handshake`.
                    if self.side.is_client() {
                        self.read_level = Level::OneRtt;
                    }
                    KeyChange::OneRtt(keys(k))
                }
            });
            if bytes.is_empty() && change.is_none() {
                return;
            }
            let done = change.is_none();
            match self.pending.back_mut() {
                // Bytes of the same level as the previous chunk: merge them.
                Some((previous, last @ None)) => {
                    previous.extend_from_slice(&bytes);
                    *last = change;
                }
                _ => self.pending.push_back((bytes, change)),
            }
            if done {
                return;
            }
        }
    }

    /// RFC 9001 §4.8: a TLS alert becomes CRYPTO_ERROR (0x0100 + alert), except where RFC 9001 names
    /// PROTOCOL_VIOLATION for what `rustls` reports.
    fn tls_error(&self, error: &rustls::Error) -> TransportError {
        use rustls::{Error, HandshakeType, PeerMisbehaved};
        let violation = match error {
            // §4.4: a client MUST treat a post-handshake CertificateRequest as PROTOCOL_VIOLATION.
            Error::InappropriateHandshakeMessage {
                got_type: HandshakeType::CertificateRequest,
                ..
            } => self.side.is_client() && self.one_rtt,
            // §4.6.1: a NewSessionTicket's early_data extension with a value other than 0xffffffff.
            Error::PeerMisbehaved(PeerMisbehaved::InvalidMaxEarlyDataSize)
            // §4.1.3: data TLS has not consumed when it provides keys for the next level (when that data
            // came in the same piece as the message that changed the keys; a later piece is refused by
            // `read_handshake`'s level check).
            | Error::PeerMisbehaved(PeerMisbehaved::KeyEpochWithPendingFragment) => true,
            _ => false,
        };
        if violation {
            return TransportError::protocol_violation(format!("TLS: {error}"));
        }
        let alert = self
            .conn
            .as_ref()
            .and_then(|c| c.alert())
            .map(u8::from)
            .unwrap_or(INTERNAL_ERROR_ALERT);
        TransportError::new(TransportErrorCode::crypto(alert), format!("TLS: {error}"))
    }

    /// A server whose handshake is over and whose output was all written keeps only what the accessors
    /// answer from, and drops the `rustls` connection (see [`Finished`]).
    fn release_if_done(&mut self) {
        if self.side.is_client() || !self.one_rtt || !self.pending.is_empty() || self.error.is_some() {
            return;
        }
        let Some(conn) = self.conn.as_ref().filter(|c| !c.is_handshaking()) else {
            return;
        };
        let server_name = match &**conn {
            quic::Connection::Server(server) => server.server_name().map(str::to_owned),
            quic::Connection::Client(_) => return,
        };
        self.finished = Some(Box::new(Finished {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name,
            suite: conn_suite(conn),
            params: conn.quic_transport_parameters().map(<[u8]>::to_vec),
            peer_certificates: conn_certificates(conn),
        }));
        self.conn = None;
        self.pending = VecDeque::new();
    }

    fn fail(&mut self, error: TransportError) -> Result<(), TransportError> {
        self.error = Some(error.clone());
        self.pending.clear();
        Err(error)
    }
}

fn encode_params(params: &TransportParameters) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(params.encoded_len());
    params.encode(&mut encoded);
    encoded
}

impl Session for RustlsSession {
    fn side(&self) -> Side {
        self.side
    }

    fn read_handshake(&mut self, level: Level, data: &[u8]) -> Result<(), TransportError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if data.is_empty() {
            return Ok(());
        }
        // RFC 9001 §4.1.3: CRYPTO data goes to TLS only at the level TLS is reading at; 0-RTT packets never
        // carry CRYPTO frames (RFC 9000 §12.4), and `rustls` itself cannot tell levels apart.
        if level != self.read_level {
            let error = TransportError::protocol_violation(format!(
                "handshake data at the {level:?} level while TLS reads at the {:?} level",
                self.read_level
            ));
            return self.fail(error);
        }
        // The server reads the ClientHello before TLS does (`hello`).
        let finding = match self.hello.as_mut() {
            Some(hello) if level == Level::Initial => hello.read(data),
            _ => None,
        };
        match finding {
            // RFC 9001 §8.4: QUIC has no middlebox compatibility mode; a server SHOULD treat a ClientHello
            // with a non-empty legacy_session_id as PROTOCOL_VIOLATION (`rustls` would echo it).
            Some(Finding::SessionId) => {
                let error = TransportError::protocol_violation("ClientHello with a legacy_session_id");
                return self.fail(error);
            }
            // RFC 9001 §8.2: a ClientHello without the quic_transport_parameters extension MUST close the
            // connection with 0x016d (missing_extension). `rustls` also takes the parameters under the
            // draft codepoint 0xffa5, which is not that extension.
            Some(Finding::NoTransportParameters) => {
                let error = TransportError::new(
                    TransportErrorCode::crypto(MISSING_EXTENSION_ALERT),
                    "TLS: ClientHello without the quic_transport_parameters extension",
                );
                return self.fail(error);
            }
            None => {}
        }
        let Some(conn) = self.conn.as_mut() else {
            // The server's handshake is over: no TLS message may follow (RFC 9001 §4.1.2), which `rustls`
            // would answer with an unexpected_message alert (RFC 8446 §6.2).
            let error = TransportError::new(
                TransportErrorCode::crypto(UNEXPECTED_MESSAGE_ALERT),
                "TLS: handshake data after the handshake",
            );
            return self.fail(error);
        };
        if let Err(e) = conn.read_hs(data) {
            let error = self.tls_error(&e);
            return self.fail(error);
        }
        self.pull_output();
        if self.read_level != Level::Initial {
            self.hello = None;
        }
        // The server reads at 1-RTT only after the client's Finished completed the handshake.
        if self.one_rtt && !self.is_handshaking() {
            self.read_level = Level::OneRtt;
        }
        self.release_if_done();
        Ok(())
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<KeyChange> {
        if self.error.is_some() {
            return None;
        }
        self.pull_output();
        let Some((bytes, change)) = self.pending.pop_front() else {
            self.release_if_done();
            return None;
        };
        buf.extend_from_slice(&bytes);
        if self.pending.is_empty() {
            self.release_if_done();
        }
        change
    }

    fn next_1rtt_keys(&mut self) -> Option<(Box<dyn PacketKey>, Box<dyn PacketKey>)> {
        let set = self.next.as_mut()?.next_packet_keys();
        Some((
            RustlsPacketKey::boxed(set.local),
            RustlsPacketKey::boxed(set.remote),
        ))
    }

    fn peek_next_1rtt_remote_key(&self) -> Option<Box<dyn PacketKey>> {
        // rustls derives a phase's keys only as a pair, and only while advancing its secrets, so the peek
        // works on a copy (a few microseconds, once per key phase).
        let set = self.next.clone()?.next_packet_keys();
        Some(RustlsPacketKey::boxed(set.remote))
    }

    fn zero_rtt_keys(&self) -> Option<DirectionalKeys> {
        self.conn.as_ref()?.zero_rtt_keys().map(directional)
    }

    fn is_handshaking(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.is_handshaking())
    }

    fn peer_transport_parameters(&self) -> Option<&[u8]> {
        match (&self.conn, &self.finished) {
            (Some(conn), _) => conn.quic_transport_parameters(),
            (None, f) => f.as_ref()?.params.as_deref(),
        }
    }

    fn alpn_protocol(&self) -> Option<&[u8]> {
        match (&self.conn, &self.finished) {
            (Some(conn), _) => conn.alpn_protocol(),
            (None, f) => f.as_ref()?.alpn.as_deref(),
        }
    }

    fn server_name(&self) -> Option<&str> {
        match (self.conn.as_deref(), &self.finished) {
            (Some(quic::Connection::Server(conn)), _) => conn.server_name(),
            (Some(quic::Connection::Client(_)), _) => self.server_name.as_deref(),
            (None, f) => f.as_ref()?.server_name.as_deref(),
        }
    }

    fn suite(&self) -> Option<Suite> {
        match (&self.conn, &self.finished) {
            (Some(conn), _) => conn_suite(conn),
            (None, f) => f.as_ref()?.suite,
        }
    }

    fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        match (&self.conn, &self.finished) {
            (Some(conn), _) => conn_certificates(conn),
            (None, f) => f.as_ref()?.peer_certificates.clone(),
        }
    }
}

fn conn_suite(conn: &quic::Connection) -> Option<Suite> {
    let suite = conn.negotiated_cipher_suite()?;
    Suite::from_tls_id(u16::from(suite.suite()))
}

fn conn_certificates(conn: &quic::Connection) -> Option<Vec<Vec<u8>>> {
    let certs = conn.peer_certificates()?;
    Some(certs.iter().map(|cert| cert.as_ref().to_vec()).collect())
}

impl fmt::Debug for RustlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsSession")
            .field("side", &self.side)
            .field("read_level", &self.read_level)
            .field("handshaking", &self.is_handshaking())
            .field("released", &self.conn.is_none())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------

/// Options shared by the configuration helpers.
///
/// Every configuration allows TLS 1.3 only: QUIC requires it (RFC 9001 §4.2).
#[derive(Debug, Clone, Default)]
pub struct ConfigOptions {
    /// The cipher suites to allow, most preferred first. Empty means every suite of the provider that QUIC
    /// can use (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256; RFC 9001 §5.3),
    /// in the provider's order.
    pub suites: Vec<Suite>,
    /// The crypto provider. `None` means `rustls::crypto::ring::default_provider()`. For a simulation
    /// whose packet bytes repeat with its seed, `sim::deterministic_tls` fills this and `time_provider`
    /// (seeded randomness alone is not enough: ring's key exchange draws from the operating system).
    pub provider: Option<Arc<CryptoProvider>>,
    /// The wall clock `rustls` reads to check certificate validity and ticket ages. `None` means the
    /// system clock, read inside `rustls`; a deterministic simulation passes its own.
    pub time_provider: Option<Arc<dyn TimeProvider>>,
}

impl ConfigOptions {
    /// Options allowing exactly `suites`, most preferred first, with the default provider.
    pub fn suites(suites: &[Suite]) -> Self {
        Self {
            suites: suites.to_vec(),
            ..Self::default()
        }
    }

    /// The provider with its cipher suites restricted as asked.
    fn provider(&self) -> Result<Arc<CryptoProvider>, TlsConfigError> {
        let base = self
            .provider
            .clone()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        // RFC 9001 §5.3: only TLS 1.3 suites with a QUIC packet protection algorithm; we only know the three
        // that `Suite` names.
        let usable = |s: &&rustls::SupportedCipherSuite| {
            s.tls13().is_some_and(|t| t.quic.is_some()) && Suite::from_tls_id(u16::from(s.suite())).is_some()
        };
        let suites: Vec<rustls::SupportedCipherSuite> = if self.suites.is_empty() {
            base.cipher_suites.iter().filter(usable).copied().collect()
        } else {
            let mut chosen = Vec::new();
            for want in &self.suites {
                let found = base
                    .cipher_suites
                    .iter()
                    .filter(usable)
                    .find(|s| u16::from(s.suite()) == want.tls_id());
                if let Some(&suite) = found {
                    if !chosen.contains(&suite) {
                        chosen.push(suite);
                    }
                }
            }
            chosen
        };
        if suites.is_empty() {
            return Err(TlsConfigError::NoCipherSuite);
        }
        Ok(Arc::new(CryptoProvider {
            cipher_suites: suites,
            ..(*base).clone()
        }))
    }
}

fn client_builder(
    options: &ConfigOptions,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVersions>, TlsConfigError> {
    let provider = options.provider()?;
    Ok(match &options.time_provider {
        Some(time) => ClientConfig::builder_with_details(provider, time.clone()),
        None => ClientConfig::builder_with_provider(provider),
    })
}

/// A TLS 1.3 client configuration trusting exactly `roots`, offering `alpn` (most preferred first).
///
/// RFC 9001 §8.1: QUIC requires an application protocol to be negotiated, with ALPN unless another mechanism
/// is used. With a non-empty `alpn`, a server that selects none fails the handshake with
/// no_application_protocol (0x0178). An empty `alpn` means the protocol is agreed out of band; a server that
/// configures ALPN then rejects this client with 0x0178.
pub fn client_config(
    roots: Vec<CertificateDer<'static>>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    client_config_with(roots, alpn, &ConfigOptions::default())
}

/// [`client_config`] with a cipher suite restriction and crypto provider.
pub fn client_config_with(
    roots: Vec<CertificateDer<'static>>,
    alpn: Vec<Vec<u8>>,
    options: &ConfigOptions,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(TlsConfigError::InvalidRootCertificate)?;
    }
    let mut config = client_builder(options)?
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// FOR TESTS ONLY: a TLS 1.3 client configuration that accepts any server certificate for any name.
///
/// It still checks that the server signed the handshake with the key of the certificate it sent, using the
/// provider's signature algorithms, but anyone can make such a certificate: this gives no authentication.
/// ALPN is handled as in [`client_config`].
pub fn insecure_client_config(alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
    insecure_client_config_with(alpn, &ConfigOptions::default())
        .expect("the default ring provider supports TLS 1.3 with the three QUIC cipher suites")
}

/// FOR TESTS ONLY: [`insecure_client_config`] with a cipher suite restriction and crypto provider.
pub fn insecure_client_config_with(
    alpn: Vec<Vec<u8>>,
    options: &ConfigOptions,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let builder = client_builder(options)?;
    let verifier = Arc::new(AcceptAnyServerCert {
        algorithms: builder.crypto_provider().signature_verification_algorithms,
    });
    let mut config = builder
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// A TLS 1.3 server configuration presenting `cert_chain` (end entity first) with `key`, selecting from
/// `alpn` (in the server's preference order).
///
/// With a non-empty `alpn`, a client that offers no protocol in common, or none at all, is rejected with
/// no_application_protocol (0x0178, RFC 9001 §8.1). No client certificates are requested and 0-RTT is off.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    server_config_with(cert_chain, key, alpn, &ConfigOptions::default())
}

/// [`server_config`] with a cipher suite restriction and crypto provider.
pub fn server_config_with(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
    options: &ConfigOptions,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = options.provider()?;
    let builder = match &options.time_provider {
        Some(time) => ServerConfig::builder_with_details(provider, time.clone()),
        None => ServerConfig::builder_with_provider(provider),
    };
    let mut config = builder
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// Accepts any certificate chain but still verifies handshake signatures (for tests only).
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(super) fn keys_for_test(k: quic::Keys) -> Keys {
    keys(k)
}
