//! The TLS handshake seen from the connection (RFC 9001 §4): handshake data after the handshake, TLS
//! failures on either side, and how the peer learns of them.

use std::time::Duration;

use bytes::Bytes;

use super::peer_errors::{deliver_all, test_cert, Pair, CLIENT, SERVER};
use crate::conn::SpaceId;
use crate::event::{ConnectionError, Event};
use crate::wire::frame::{CryptoFrame, Frame};
use crate::wire::{TransportError, TransportErrorCode};
use crate::{ClientConfig, EndpointConfig, ServerConfig, TransportConfig};

/// Injects `data` into the client's connection as 1-RTT CRYPTO data that follows what it has received
/// (the server's session tickets), and lets the close run.
fn server_sends_1rtt_crypto(p: &mut Pair, data: &'static [u8]) {
    let (h, _) = p.client.table.iter().next().unwrap();
    let now = p.now;
    let conn = &mut p.client.table.get_mut(h).unwrap().conn;
    let end = conn.spaces[SpaceId::Data.index()].crypto_recv.contiguous_end();
    conn.inject_frames_in(
        now,
        SpaceId::Data,
        &[Frame::Crypto(CryptoFrame {
            offset: end,
            data: Bytes::from_static(data),
        })],
    );
    p.client.after_conn(h, true);
    p.run(Duration::from_secs(1));
}

/// The client closed with `error`, a CRYPTO_ERROR (RFC 9001 §4.8), and the server heard its code.
fn client_closed_with_a_crypto_error(p: &Pair) -> TransportError {
    let error = match Pair::lost(&p.client_events) {
        Some(ConnectionError::TransportError(e)) => e.clone(),
        other => panic!("client: expected a transport error, got {other:?}"),
    };
    assert!(
        error.code.tls_alert().is_some(),
        "client: CRYPTO_ERROR expected, got {error}"
    );
    match Pair::lost(&p.server_events) {
        Some(ConnectionError::ConnectionClosed { error: heard }) => {
            assert_eq!(heard.code, error.code, "server: {heard}")
        }
        other => panic!("server: expected the client's close, got {other:?}"),
    }
    error
}

/// RFC 9001 §6: "Endpoints MUST treat the receipt of a TLS KeyUpdate message as a connection error of
/// type 0x010a, equivalent to a fatal TLS alert of unexpected_message": QUIC updates keys itself.
#[test]
fn a_tls_key_update_closes_the_client_with_unexpected_message() {
    let mut p = Pair::new(TransportConfig::default());
    // KeyUpdate (24), 1 byte: update_not_requested.
    server_sends_1rtt_crypto(&mut p, &[24, 0, 0, 1, 0]);
    let error = client_closed_with_a_crypto_error(&p);
    assert_eq!(error.code, TransportErrorCode::crypto(10), "{error}");
}

/// A post-handshake message announcing more than TLS takes in one message (2^24 - 1 bytes against
/// `rustls`'s 64 KiB) fails at once: nothing is held for it.
#[test]
fn a_post_handshake_message_too_large_for_tls_closes_the_client() {
    let mut p = Pair::new(TransportConfig::default());
    server_sends_1rtt_crypto(&mut p, &[4, 0xff, 0xff, 0xff, 0]);
    client_closed_with_a_crypto_error(&p);
}

/// RFC 9001 §4.8: a client that fails the server's certificate (here one it does not trust) closes with
/// the TLS alert as CRYPTO_ERROR, and the server, which has sent its whole flight, hears that code.
#[test]
fn a_client_refusing_the_servers_certificate_tells_the_server_why() {
    let (cert, key) = test_cert(Vec::new());
    let (other, _) = test_cert(Vec::new());
    let alpn = vec![b"test".to_vec()];
    let server = ServerConfig::new(crate::crypto::tls::server_config(vec![cert], key, alpn.clone()).unwrap());
    let client = ClientConfig::new(crate::crypto::tls::client_config(vec![other], alpn).unwrap());
    let mut p = Pair::start_with_configs(
        server,
        client,
        EndpointConfig::with_seed(1),
        EndpointConfig::with_seed(2),
    );
    p.run(Duration::from_secs(2));
    assert!(!p.client_events.contains(&Event::Connected));
    assert!(!p.server_events.contains(&Event::Connected));
    client_closed_with_a_crypto_error(&p);
}

/// A CRYPTO frame of `data` at `offset`.
fn crypto(offset: u64, data: &[u8]) -> Frame {
    Frame::Crypto(CryptoFrame {
        offset,
        data: Bytes::copy_from_slice(data),
    })
}

/// The client's Finished, in a packet of its own at the server with `after` behind it (a frame of the
/// same packet): the server's error, if it closed.
fn server_takes_the_clients_finished_with(
    after: impl FnOnce(u64, &[u8]) -> Frame,
) -> Option<TransportErrorCode> {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let now = p.now;
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    deliver_all(&mut p.server, &mut p.client, now, SERVER);
    // The client read the server's flight and wrote its Finished; it goes to the server by hand.
    let (ch, _) = p.client.table.iter().next().unwrap();
    let client = &mut p.client.table.get_mut(ch).unwrap().conn;
    let (offset, finished) = client.spaces[SpaceId::Handshake.index()]
        .crypto_send
        .next_chunk(usize::MAX)
        .map(|(offset, bytes)| (offset, bytes.to_vec()))
        .expect("the client's Finished");
    assert_eq!(offset, 0);
    let (sh, _) = p.server.table.iter().next().unwrap();
    let server = &mut p.server.table.get_mut(sh).unwrap().conn;
    assert!(!server.handshake_complete);
    let end = finished.len() as u64;
    server.inject_frames_in(
        now,
        SpaceId::Handshake,
        &[crypto(0, &finished), after(end, &finished)],
    );
    assert!(server.handshake_complete, "the Finished was read");
    p.server.after_conn(sh, true);
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    match Pair::lost(&p.server_events) {
        Some(ConnectionError::TransportError(e)) => Some(e.code),
        _ => None,
    }
}

/// RFC 9001 §4.1.3: "If the packet is from a previously installed encryption level, it MUST NOT contain
/// data that extends past the end of previously received data in that flow." The client's Finished
/// completes the server's handshake and confirms it (RFC 9001 §4.1.2), which discards the Handshake keys
/// (§4.9.2); a CRYPTO frame behind it in the same packet that reaches past the Finished is a
/// PROTOCOL_VIOLATION, as it would be in a later packet. Before, it was passed over. The Finished sent
/// again in the same packet, or an empty frame, is fine.
#[test]
fn crypto_data_past_the_clients_finished_in_its_packet_is_a_protocol_violation() {
    assert_eq!(
        server_takes_the_clients_finished_with(|end, _| crypto(end, b"x")),
        Some(TransportErrorCode::PROTOCOL_VIOLATION)
    );
    assert_eq!(
        server_takes_the_clients_finished_with(|end, _| crypto(end + 100, b"x")),
        Some(TransportErrorCode::PROTOCOL_VIOLATION)
    );
    assert_eq!(
        server_takes_the_clients_finished_with(|_, finished| crypto(0, finished)),
        None
    );
    assert_eq!(
        server_takes_the_clients_finished_with(|end, _| crypto(end, b"")),
        None
    );
}

/// RFC 9000 §7.3: the server checks that the client's initial_source_connection_id is the Source
/// Connection ID of the client's first Initial; here the client's packets carry another SCID than its
/// transport parameters name (as an attacker who rewrote the headers would make them).
#[test]
fn a_server_rejects_a_mismatched_initial_source_connection_id() {
    let mut p = Pair::start_with(TransportConfig::default(), TransportConfig::default());
    let (h, _) = p.client.table.iter().next().unwrap();
    p.client.table.get_mut(h).unwrap().conn.local_cid = crate::wire::ConnectionId::new(&[0xee; 8]).unwrap();
    let now = p.now;
    deliver_all(&mut p.client, &mut p.server, now, CLIENT);
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    assert!(!p.server_events.contains(&Event::Connected));
    match Pair::lost(&p.server_events) {
        Some(ConnectionError::TransportError(e)) => {
            assert_eq!(e.code, TransportErrorCode::TRANSPORT_PARAMETER_ERROR, "{e}")
        }
        other => panic!("server: expected TRANSPORT_PARAMETER_ERROR, got {other:?}"),
    }
}
