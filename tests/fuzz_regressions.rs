//! Regression tests for what the fuzz harness (`fuzz/`, `src/fuzzing/`) found. Each test names the
//! target or property test that found the bug and replays it through the public API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quicsand::wire::header::{VERSION_1, VERSION_2};
use quicsand::{ClientConfig, ConnectionError, Datagram, Endpoint, EndpointConfig, Event, ServerConfig};

mod common;

/// Moves datagrams between `client` and `server` (no delay) and jumps to deadlines for `limit` of
/// virtual time; returns each side's events.
fn drive(
    now: &mut Instant,
    client: &mut Endpoint,
    server: &mut Endpoint,
    limit: Duration,
) -> (Vec<Event>, Vec<Event>) {
    let (client_addr, server_addr): (SocketAddr, SocketAddr) = (
        "192.0.2.1:5000".parse().unwrap(),
        "192.0.2.2:443".parse().unwrap(),
    );
    let end = *now + limit;
    let mut buf = Vec::new();
    let (mut client_events, mut server_events) = (Vec::new(), Vec::new());
    loop {
        let mut moved = pump(*now, client, server, client_addr, &mut buf);
        moved |= pump(*now, server, client, server_addr, &mut buf);
        while let Some((_, e)) = client.poll_event() {
            client_events.push(e);
        }
        while let Some((_, e)) = server.poll_event() {
            server_events.push(e);
        }
        if moved {
            continue;
        }
        let next = [client.poll_timeout(), server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= end => {
                *now = (*now).max(t);
                client.handle_timeout(*now);
                server.handle_timeout(*now);
            }
            _ => return (client_events, server_events),
        }
    }
}

/// Delivers everything `src` has to send to `dst` at once; returns whether there was anything.
fn pump(now: Instant, src: &mut Endpoint, dst: &mut Endpoint, from: SocketAddr, buf: &mut Vec<u8>) -> bool {
    let mut moved = false;
    while let Some(t) = src.poll_transmit(now, buf) {
        moved = true;
        for d in t.datagrams(buf) {
            let payload = BytesMut::from(d);
            dst.handle_datagram(
                now,
                Datagram {
                    remote: from,
                    local: None,
                    ecn: None,
                    payload,
                },
            );
        }
    }
    moved
}

fn lost(events: &[Event]) -> Option<&ConnectionError> {
    events.iter().find_map(|e| match e {
        Event::ConnectionLost { reason } => Some(reason),
        _ => None,
    })
}

/// Found by the `conn_frames` / `stream_ops` property tests (`src/fuzzing/tests.rs`), which reuse one
/// `ClientConfig` for every connection: the second connection resumed the TLS session of the first, and
/// `rustls` reports the transport parameters remembered with the ticket until the server's
/// EncryptedExtensions arrive. The client took those stale parameters for the server's, found that
/// their initial_source_connection_id did not match, and `connect` itself failed with
/// TRANSPORT_PARAMETER_ERROR. Reusing a client configuration is the normal case.
#[test]
fn second_connection_with_the_same_client_config_resumes_and_connects() {
    let cert = common::TestCert::new();
    let server_tls = cert.server_tls(&[]);
    let client_tls = cert.client_tls(&[]);
    let mut server = Endpoint::new(EndpointConfig::with_seed(1), Some(ServerConfig::new(server_tls)));
    let mut client = Endpoint::new(EndpointConfig::with_seed(2), None);
    let config = ClientConfig::new(client_tls);
    let mut now = common::epoch();
    for round in 0..3 {
        client
            .connect(now, config.clone(), "192.0.2.2:443".parse().unwrap(), "localhost")
            .unwrap_or_else(|e| panic!("connection {round}: connect failed: {e:?}"));
        // Long enough for the server's NewSessionTicket to reach the client.
        let (client_events, server_events) =
            drive(&mut now, &mut client, &mut server, Duration::from_secs(1));
        assert!(
            client_events.contains(&Event::Connected),
            "connection {round}: {client_events:?}"
        );
        assert!(
            server_events.contains(&Event::Connected),
            "connection {round}: {server_events:?}"
        );
        assert_eq!(lost(&client_events), None, "connection {round}");
        assert_eq!(lost(&server_events), None, "connection {round}");
    }
}

/// The bytes the client receives over two connections to the same server with one `ClientConfig`, the
/// server's certificate naming 200 hosts (some 6 KB), with TLS session tickets sent or not, the
/// connections on QUIC `versions` (the server takes versions 1 and 2).
fn bytes_received_over_two_connections(tickets: bool, versions: [u32; 2]) -> [u64; 2] {
    bytes_received_over_two_connections_with(tickets, versions, |_| {})
}

fn bytes_received_over_two_connections_with(
    tickets: bool,
    versions: [u32; 2],
    tweak: impl FnOnce(&mut rustls::ServerConfig),
) -> [u64; 2] {
    let names: Vec<String> = std::iter::once("localhost".to_string())
        .chain((0..200).map(|i| format!("host-{i:03}.example.test")))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (cert, key) = common::certs::self_signed(&names);
    let cert = common::TestCert { cert, key };
    let mut server_tls = (*cert.server_tls(&[])).clone();
    if !tickets {
        server_tls.send_tls13_tickets = 0;
    }
    tweak(&mut server_tls);
    let both = |seed| EndpointConfig {
        supported_versions: vec![VERSION_1, VERSION_2],
        ..EndpointConfig::with_seed(seed)
    };
    let mut server = Endpoint::new(both(1), Some(ServerConfig::new(std::sync::Arc::new(server_tls))));
    let mut client = Endpoint::new(both(2), None);
    let mut config = ClientConfig::new(cert.client_tls(&[]));
    let mut now = common::epoch();
    let mut received = [0; 2];
    for (round, bytes) in received.iter_mut().enumerate() {
        config.version = versions[round];
        let h = client
            .connect(now, config.clone(), "192.0.2.2:443".parse().unwrap(), "localhost")
            .unwrap();
        let (client_events, _) = drive(&mut now, &mut client, &mut server, Duration::from_secs(1));
        assert!(
            client_events.contains(&Event::Connected),
            "connection {round}: {client_events:?}"
        );
        *bytes = client.conn(h).unwrap().stats().bytes_received;
    }
    received
}

/// RFC 9001 §4.5, RFC 8446 §2.2 (and RFC 9001 §9.1 for what it lets a server link): with session
/// tickets, the client's second connection resumes the first one's session, so the server sends no
/// Certificate and the handshake is some 6 KB lighter; with tickets turned off on the server
/// (`send_tls13_tickets = 0`) it is a full handshake again. (quicsand does not report rustls's
/// handshake kind; the certificate's bytes on the wire show it.)
#[test]
fn a_second_connection_resumes_without_the_certificate_unless_tickets_are_off() {
    let [full, resumed] = bytes_received_over_two_connections(true, [VERSION_1; 2]);
    assert!(
        resumed + 4000 < full,
        "first {full} bytes, second {resumed} bytes"
    );
    let [first, second] = bytes_received_over_two_connections(false, [VERSION_1; 2]);
    assert!(
        first.abs_diff(second) < 1000,
        "without tickets: first {first} bytes, second {second} bytes"
    );
    assert!(
        second + 4000 > full,
        "{second} bytes without tickets, {full} with"
    );
}

/// RFC 9369 §7: "Servers MUST validate the originating version of any session ticket or token and not
/// accept one issued from a different version. A rejected ticket results in falling back to a full TLS
/// handshake". The client (rustls keeps tickets per server name) offers a version 1 ticket on version 2
/// and the other way round; the server refuses it, so the certificate comes again. A ticket from a
/// version 2 connection still resumes on version 2.
#[test]
fn a_session_ticket_resumes_only_on_the_quic_version_that_issued_it() {
    for versions in [[VERSION_1, VERSION_2], [VERSION_2, VERSION_1]] {
        let [first, second] = bytes_received_over_two_connections(true, versions);
        assert!(
            first.abs_diff(second) < 1000,
            "{versions:x?}: first {first} bytes, second {second} bytes"
        );
    }
    let [full, resumed] = bytes_received_over_two_connections(true, [VERSION_2; 2]);
    assert!(
        resumed + 4000 < full,
        "version 2: first {full} bytes, second {resumed} bytes"
    );
}

/// The same with rustls's stateless ticketer (the version is sealed into the ticket): resumption works
/// on the same version and not across versions.
#[test]
fn stateless_tickets_resume_only_on_the_quic_version_that_issued_them() {
    let stateless =
        |c: &mut rustls::ServerConfig| c.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    let [full, resumed] = bytes_received_over_two_connections_with(true, [VERSION_2; 2], stateless);
    assert!(
        resumed + 4000 < full,
        "same version: first {full}, second {resumed}"
    );
    let [full, resumed] = bytes_received_over_two_connections_with(true, [VERSION_1; 2], stateless);
    assert!(
        resumed + 4000 < full,
        "same version: first {full}, second {resumed}"
    );
    for versions in [[VERSION_1, VERSION_2], [VERSION_2, VERSION_1]] {
        let [first, second] = bytes_received_over_two_connections_with(true, versions, stateless);
        assert!(
            first.abs_diff(second) < 1000,
            "{versions:x?}: first {first}, second {second}"
        );
    }
}
