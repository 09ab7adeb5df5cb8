//! What both engines share: the certificate, the rustls configurations and the addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use quicsand::crypto::tls::{self, ConfigOptions};
use quicsand::crypto::Suite;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const ALPN: &[u8] = b"bench";

/// 10.0.0.1:50000, built rather than parsed: the harness asks for it on every round.
pub fn client_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 50000))
}

/// 10.0.0.2:4433.
pub fn server_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 4433))
}

/// Post-handshake work a server does by default, or the least it can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each engine's defaults (rustls sends 2 session tickets; both servers send NEW_TOKEN frames;
    /// both engines probe the path MTU).
    Default,
    /// No session tickets, no NEW_TOKEN, no MTU discovery.
    Lean,
}

/// An ECDSA P-256 self-signed certificate (rcgen's default key type) and the TLS configurations both
/// engines use: TLS 1.3 with one cipher suite, the same objects handed to quicsand and quinn-proto.
pub struct Tls {
    pub cert: CertificateDer<'static>,
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// The post-handshake work the servers are configured for.
    pub mode: Mode,
}

impl Tls {
    pub fn new(suite: Suite, mode: Mode) -> Tls {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let options = ConfigOptions::suites(&[suite]);
        let server = tls::server_config_with(vec![der.clone()], key, vec![ALPN.to_vec()], &options)
            .expect("server TLS config");
        let mut server = (*server).clone();
        if mode == Mode::Lean {
            server.send_tls13_tickets = 0;
        }
        let client = tls::client_config_with(vec![der.clone()], vec![ALPN.to_vec()], &options)
            .expect("client TLS config");
        let mut client = (*client).clone();
        // Resumption off: every handshake is a full one.
        client.resumption = rustls::client::Resumption::disabled();
        Tls {
            cert: der,
            server: Arc::new(server),
            client: Arc::new(client),
            mode,
        }
    }
}

/// A suite by its command-line name.
pub fn parse_suite(name: &str) -> Option<Suite> {
    match name {
        "aes128" => Some(Suite::Aes128Gcm),
        "aes256" => Some(Suite::Aes256Gcm),
        "chacha20" => Some(Suite::ChaCha20Poly1305),
        _ => None,
    }
}

pub fn suite_name(suite: Suite) -> &'static str {
    match suite {
        Suite::Aes128Gcm => "AES-128-GCM",
        Suite::Aes256Gcm => "AES-256-GCM",
        Suite::ChaCha20Poly1305 => "ChaCha20-Poly1305",
    }
}

/// Parameters of a bulk transfer, the same for both engines.
#[derive(Debug, Clone, Copy)]
pub struct BulkParams {
    pub suite: Suite,
    /// UDP payload size of every datagram.
    pub size: usize,
    /// Datagrams per transmit (GSO segments).
    pub batch: usize,
    /// Datagrams the sender may emit before the receiver runs (a driver round).
    pub round: usize,
    /// Stream bytes to move.
    pub bytes: u64,
}

/// What one bulk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkResult {
    /// Thread CPU time of the transfer (handshake excluded).
    pub cpu: std::time::Duration,
    /// Stream bytes delivered to the receiving application.
    pub bytes: u64,
    /// Datagrams sender to receiver.
    pub datagrams: u64,
    /// Datagrams receiver to sender.
    pub acks: u64,
    /// Allocations inside both engines during the transfer.
    pub engine_allocs: u64,
    /// Transmits (GSO batches) sender to receiver.
    pub transmits: u64,
}

impl BulkResult {
    /// Goodput per CPU-second in Gbit/s.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.cpu.as_secs_f64() / 1e9
    }
}

/// What one `memory` run measured for the server.
#[derive(Debug, Clone, Copy)]
pub struct MemoryResult {
    pub conns: usize,
    /// Server heap growth (live bytes) per connection.
    pub bytes_per_conn: f64,
    /// Server allocations still live, per connection.
    pub live_allocs_per_conn: f64,
    /// Server allocation calls made per connection during its establishment.
    pub allocs_per_conn: f64,
}

/// A chunk of stream data to write from: the content does not matter to either engine.
pub static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
