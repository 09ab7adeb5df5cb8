//! The peer's address changing under an established connection, seen from the server (RFC 9000 §8.2,
//! §9): what the server owes the peer while it validates the new address.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use super::peer_errors::{Pair, SERVER};
use crate::{Datagram, TransportConfig};

fn datagram(remote: SocketAddr, payload: BytesMut) -> Datagram {
    Datagram {
        remote,
        local: None,
        ecn: None,
        payload,
    }
}

/// The client's datagrams, delivered to the server as coming from `from`; returns their total size.
fn client_to_server_from(p: &mut Pair, from: SocketAddr) -> usize {
    let mut buf = Vec::new();
    let mut total = 0;
    while let Some(t) = p.client.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            total += d.len();
            p.server.handle_datagram(p.now, datagram(from, BytesMut::from(d)));
        }
    }
    total
}

/// The server's datagrams to `to` reach the client; the rest are lost. Returns how many reached it.
fn server_to_client_at(p: &mut Pair, to: SocketAddr) -> usize {
    let server: SocketAddr = SERVER.parse().unwrap();
    let mut buf = Vec::new();
    let mut n = 0;
    while let Some(t) = p.server.poll_transmit(p.now, &mut buf) {
        for d in t.datagrams(&buf) {
            if t.destination == to {
                n += 1;
                p.client
                    .handle_datagram(p.now, datagram(server, BytesMut::from(d)));
            }
        }
    }
    n
}

#[test]
fn an_ack_owed_on_an_unvalidated_new_path_goes_within_max_ack_delay() {
    // RFC 9000 §13.2.1: 1-RTT packets are acknowledged within max_ack_delay. After the client moved, the
    // server's new path is not validated and the anti-amplification limit (§8.1) leaves it less than a
    // full datagram, but still room for an ACK: the ACK timer must not be hidden for that.
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let new: SocketAddr = "198.51.100.7:6000".parse().unwrap();
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, new);
    // The server's answer (its challenge, with an ACK) is lost.
    server_to_client_at(&mut p, "0.0.0.0:1".parse().unwrap());
    p.now += Duration::from_millis(1);
    p.client.conn(ch).unwrap().ping();
    client_to_server_from(&mut p, new);
    {
        let conn = &p.server.table.get(h).unwrap().conn;
        assert_eq!(conn.path.remote, new);
        assert!(!conn.path.validated);
        let allowance = conn.path.send_allowance();
        assert!(allowance > 0 && allowance < 1200, "{allowance}");
    }
    let max_ack_delay = TransportConfig::default().max_ack_delay;
    let end = p.now + max_ack_delay + Duration::from_millis(1);
    loop {
        server_to_client_at(&mut p, new);
        match p.server.poll_timeout() {
            Some(t) if t <= end => {
                p.now = p.now.max(t);
                p.server.handle_timeout(p.now);
            }
            _ => break,
        }
    }
    let client = &p.client.table.get(ch).unwrap().conn;
    assert_eq!(
        client.recovery.bytes_in_flight(),
        0,
        "the client's PINGs were acknowledged within max_ack_delay"
    );
}
