//! Smoke test of the in-memory harness with quinn-proto on both sides.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::quinn_node::QuinnNode;
use common::{client_addr, server_addr, LostReason, Pair};

const ALPN: &[u8] = b"hq-interop";

fn client_tls(cert: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(tls)
}

fn connected_pair(seed: u64) -> Pair {
    let (cert, key) = common::certs::self_signed(&["localhost"]);
    let server = QuinnNode::server(server_addr(), cert.clone(), key, &[ALPN], seed);
    let mut client = QuinnNode::client(client_addr(), seed + 1);
    client.connect(common::epoch(), server_addr(), "localhost", client_tls(&cert));
    let mut pair = Pair::new(Box::new(client), Box::new(server), seed);
    assert!(
        pair.drive_until(Duration::from_secs(5), |p| p.both_connected()),
        "handshake completes"
    );
    pair
}

#[test]
fn quinn_to_quinn_handshake_and_application_close() {
    let mut pair = connected_pair(1);
    assert!(pair.both_connected());
    assert_eq!(pair.client.connection_count(), 1);
    assert_eq!(pair.server.connection_count(), 1);

    let now = pair.now;
    pair.client.close(now, 7, b"bye");
    assert!(pair.drive_until(Duration::from_secs(5), |p| Pair::lost(&p.server_events).is_some()));
    assert_eq!(
        Pair::lost(&pair.server_events),
        Some(&LostReason::ApplicationClosed {
            code: 7,
            reason: b"bye".to_vec()
        })
    );
    assert_eq!(Pair::lost(&pair.client_events), Some(&LostReason::LocallyClosed));

    // Both sides drain and forget the connection.
    pair.drive(Duration::from_secs(10));
    assert_eq!(pair.client.connection_count(), 0);
    assert_eq!(pair.server.connection_count(), 0);
}

#[test]
fn quinn_key_update_and_mtu_probing_survive() {
    let mut pair = connected_pair(2);
    pair.client.force_key_update();
    pair.drive(Duration::from_secs(2));
    let server = pair.server.as_any().downcast_mut::<QuinnNode>().unwrap();
    let conn = server.connection().unwrap();
    assert!(!conn.is_closed());
    // MTU discovery runs after the handshake and finds the quinn default upper bound (1452).
    assert_eq!(conn.current_mtu(), 1452);
    let client = pair.client.as_any().downcast_mut::<QuinnNode>().unwrap();
    let conn = client.connection().unwrap();
    assert!(
        conn.stats().frame_rx.new_token > 0,
        "quinn servers send NEW_TOKEN"
    );
    // The client's probes were sent under the updated keys, so the server read them.
    assert_eq!(conn.current_mtu(), 1452);
}

#[test]
fn quinn_chacha_only_server() {
    let (cert, key) = common::certs::self_signed(&["localhost"]);
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        ..rustls::crypto::ring::default_provider()
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let server = QuinnNode::server_with_tls(server_addr(), Arc::new(tls), 3);
    let mut client = QuinnNode::client(client_addr(), 4);
    client.connect(common::epoch(), server_addr(), "localhost", client_tls(&cert));
    let mut pair = Pair::new(Box::new(client), Box::new(server), 3);
    assert!(pair.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    let client = pair.client.as_any().downcast_mut::<QuinnNode>().unwrap();
    let data = client
        .connection()
        .unwrap()
        .crypto_session()
        .handshake_data()
        .unwrap();
    let data = data
        .downcast::<quinn_proto::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(data.protocol.as_deref(), Some(ALPN));
}
