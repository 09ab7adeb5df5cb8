//! Packets that arrive before their keys are held and processed once the keys are there (RFC 9001
//! §4.1.4, §5.7).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use super::attacks::{datagram, is_short, packets_from};
use super::peer_errors::{client_bidi, Pair, CLIENT, SERVER};
use super::ConnectionHandle;
use crate::conn::SpaceId;
use crate::event::Event;
use crate::{EndpointConfig, TransportConfig};

/// A pair whose client has the server's whole first flight (and so its Finished and 1-RTT keys) and has
/// written a request: the client's next packets are its Finished (in Handshake packets) and the request
/// (in 1-RTT packets), split apart. Returns them, and the server's connection.
fn client_finished_and_request(p: &mut Pair) -> (Vec<BytesMut>, Vec<BytesMut>, ConnectionHandle) {
    let (client, server): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let now = p.now;
    for packet in packets_from(&mut p.client, now) {
        p.server.handle_datagram(now, datagram(client, packet));
    }
    for packet in packets_from(&mut p.server, now) {
        p.client.handle_datagram(now, datagram(server, packet));
    }
    let ch = p.client.table.iter().next().unwrap().0;
    {
        let mut conn = p.client.conn(ch).unwrap();
        let id = conn.open_bi().unwrap();
        conn.stream(id)
            .write(b"a request before the client's Finished")
            .unwrap();
    }
    let (short, finished): (Vec<_>, Vec<_>) = packets_from(&mut p.client, now)
        .into_iter()
        .partition(|packet| is_short(packet));
    assert!(!short.is_empty() && !finished.is_empty());
    let sh = p.server.table.iter().next().unwrap().0;
    (short, finished, sh)
}

fn pair() -> Pair {
    Pair::start_with(TransportConfig::default(), TransportConfig::default())
}

/// The client's request.
fn read_request(p: &mut Pair, sh: ConnectionHandle) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    let n = p
        .server
        .conn(sh)
        .unwrap()
        .stream(client_bidi(0))
        .read(&mut buf)
        .ok()??;
    Some(buf[..n].to_vec())
}

#[test]
fn the_server_holds_1rtt_packets_that_overtake_the_clients_finished() {
    let mut p = pair();
    let client: SocketAddr = CLIENT.parse().unwrap();
    let (short, finished, sh) = client_finished_and_request(&mut p);
    let now = p.now;
    let dropped_before = p.server.table.get(sh).unwrap().conn.stats().packets_dropped;
    // The 1-RTT packets overtake the Finished.
    for packet in &short {
        p.server.handle_datagram(now, datagram(client, packet.clone()));
    }
    let mut events = Vec::new();
    while let Some((_, e)) = p.server.poll_event() {
        events.push(e);
    }
    // RFC 9001 §5.7: nothing of them is processed before the handshake is complete.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Stream(_) | Event::Connected)),
        "the server acted on 1-RTT packets before the handshake completed: {events:?}"
    );
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(!conn.handshake_complete);
    assert_eq!(
        conn.spaces[SpaceId::Data.index()].received.largest(),
        None,
        "nothing to acknowledge in 1-RTT"
    );
    assert_eq!(conn.stats().packets_buffered, short.len() as u64);
    assert_eq!(conn.stats().packets_dropped, dropped_before);
    // The Finished arrives: the handshake completes, and the held request is processed at once, with
    // nothing more from the client. (An Initial packet with the client's ACK, split here from the
    // datagram that padded it, is dropped for its size, RFC 9000 §14.1.)
    let small_initials = finished
        .iter()
        .filter(|p| p[0] & 0xf0 == 0xc0 && p.len() < 1200)
        .count();
    for packet in finished {
        p.server.handle_datagram(now, datagram(client, packet));
    }
    assert_eq!(
        read_request(&mut p, sh).as_deref(),
        Some(&b"a request before the client's Finished"[..]),
        "the request was not processed with the Finished"
    );
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(conn.handshake_complete);
    assert!(conn.early.is_none(), "the buffer is freed once empty");
    assert_eq!(
        conn.stats().packets_dropped,
        dropped_before + small_initials as u64
    );
    // The client's 1-RTT packets are acknowledged: nothing is lost or sent again.
    p.run(Duration::from_secs(2));
    let ch = p.client.table.iter().next().unwrap().0;
    let stats = p.client.table.get(ch).unwrap().conn.stats();
    assert_eq!(stats.packets_lost, 0, "{stats:?}");
    assert_eq!(stats.stream_bytes_retransmitted, 0, "{stats:?}");
}

#[test]
fn a_client_holds_handshake_packets_that_overtake_the_servers_initial() {
    let mut p = pair();
    let (client, server): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let now = p.now;
    for packet in packets_from(&mut p.client, now) {
        p.server.handle_datagram(now, datagram(client, packet));
    }
    // The server's Handshake packets (its certificate and Finished) arrive before its Initial (the
    // ServerHello, which gives the client its Handshake keys).
    let (initial, handshake): (Vec<_>, Vec<_>) = packets_from(&mut p.server, now)
        .into_iter()
        .partition(|packet| packet[0] & 0xf0 == 0xc0);
    assert!(!initial.is_empty() && !handshake.is_empty());
    assert!(handshake.iter().all(|packet| packet[0] & 0xf0 == 0xe0));
    for packet in &handshake {
        p.client.handle_datagram(now, datagram(server, packet.clone()));
    }
    let ch = p.client.table.iter().next().unwrap().0;
    let conn = &p.client.table.get(ch).unwrap().conn;
    assert!(conn.spaces[SpaceId::Handshake.index()].keys.is_none());
    assert_eq!(conn.stats().packets_buffered, handshake.len() as u64);
    assert_eq!(conn.stats().packets_dropped, 0);
    // The Initial comes: the held Handshake packets follow it, and the handshake completes at once.
    for packet in initial {
        p.client.handle_datagram(now, datagram(server, packet));
    }
    let mut events = Vec::new();
    while let Some((_, e)) = p.client.poll_event() {
        events.push(e);
    }
    assert!(events.contains(&Event::Connected), "{events:?}");
    let conn = &p.client.table.get(ch).unwrap().conn;
    assert!(conn.early.is_none());
    assert_eq!(conn.stats().packets_dropped, 0);
    assert_eq!(
        conn.stats().packets_received,
        (handshake.len() + 1) as u64,
        "every packet processed"
    );
    // Nothing of the server's flight is sent again.
    p.run(Duration::from_secs(2));
    assert!(p.server_events.contains(&Event::Connected));
    let sh = p.server_h.unwrap();
    let stats = p.server.table.get(sh).unwrap().conn.stats();
    assert_eq!(stats.packets_lost, 0, "{stats:?}");
}

#[test]
fn undecryptable_1rtt_packets_before_the_finished_fill_only_a_small_buffer() {
    let mut p = pair();
    let client: SocketAddr = CLIENT.parse().unwrap();
    let (short, finished, sh) = client_finished_and_request(&mut p);
    let now = p.now;
    // The client's request arrives first, then a flood of forged 1-RTT packets to the server's
    // connection ID (from the client's address: from any other, they are dropped before the handshake
    // is confirmed, RFC 9000 §9), each the size of a full datagram.
    for packet in &short {
        p.server.handle_datagram(now, datagram(client, packet.clone()));
    }
    let mut forged = BytesMut::from(&short[0][..]);
    forged.resize(1200, 0);
    for i in 0..1000u32 {
        let mut f = forged.clone();
        f[20..24].copy_from_slice(&i.to_be_bytes());
        p.server.handle_datagram(now, datagram(client, f));
        let conn = &p.server.table.get(sh).unwrap().conn;
        let held = conn.early.as_ref().map_or(0, |e| e.len());
        assert!(held <= crate::conn::MAX_EARLY_PACKETS, "{held} packets held");
        assert!(
            conn.early.as_ref().map_or(0, |e| e.bytes()) <= crate::conn::MAX_EARLY_BYTES,
            "bounded by bytes too"
        );
    }
    let stats = p.server.table.get(sh).unwrap().conn.stats();
    let max = crate::conn::MAX_EARLY_PACKETS as u64;
    assert!(stats.packets_buffered <= max, "{stats:?}");
    assert!(stats.packets_dropped >= 1000 - max, "{stats:?}");
    // The handshake completes all the same, with the request held first.
    for packet in finished {
        p.server.handle_datagram(now, datagram(client, packet));
    }
    assert_eq!(
        read_request(&mut p, sh).as_deref(),
        Some(&b"a request before the client's Finished"[..])
    );
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(conn.handshake_complete);
    assert!(conn.early.is_none());
    p.run(Duration::from_secs(2));
    assert!(p.client_events.contains(&Event::Connected));
    assert!(p.server_events.contains(&Event::Connected));
}

#[test]
fn a_server_with_zero_length_ids_holds_nothing_from_an_unvalidated_address() {
    // RFC 9000 §8.1: with zero-length connection IDs, nothing in a 1-RTT packet shows that its sender
    // received what the server sent; before the client's address is validated, the server holds none.
    let mut server = EndpointConfig::with_seed(1);
    server.cid_generator = Box::new(crate::RandomCidGenerator::new(0));
    let mut p = Pair::start(
        TransportConfig::default(),
        TransportConfig::default(),
        server,
        EndpointConfig::with_seed(2),
    );
    let client: SocketAddr = CLIENT.parse().unwrap();
    let (short, finished, sh) = client_finished_and_request(&mut p);
    let now = p.now;
    let dropped_before = p.server.table.get(sh).unwrap().conn.stats().packets_dropped;
    assert!(!p.server.table.get(sh).unwrap().conn.path.validated);
    for packet in &short {
        p.server.handle_datagram(now, datagram(client, packet.clone()));
    }
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(conn.early.is_none());
    assert_eq!(conn.stats().packets_buffered, 0);
    assert_eq!(conn.stats().packets_dropped, dropped_before + short.len() as u64);
    for packet in finished {
        p.server.handle_datagram(now, datagram(client, packet));
    }
    assert!(p.server.table.get(sh).unwrap().conn.handshake_complete);
    assert_eq!(read_request(&mut p, sh), None, "dropped, not held");
    // The client sends it again.
    p.run(Duration::from_secs(2));
    assert_eq!(
        read_request(&mut p, sh).as_deref(),
        Some(&b"a request before the client's Finished"[..])
    );
}

#[test]
fn an_ack_held_for_its_keys_gives_the_rtt_as_of_its_arrival() {
    // RFC 9002 §5.3: an endpoint that postpones an acknowledgment for lack of keys SHOULD subtract the
    // local delay from its RTT sample. Before, the server's sample from a held 1-RTT ACK counted the
    // 200 ms the packet waited for the client's Finished: min_rtt read 200 ms on a path without delay.
    let mut p = pair();
    let (client, server): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let t0 = p.now;
    for packet in packets_from(&mut p.client, t0) {
        p.server.handle_datagram(t0, datagram(client, packet));
    }
    // The server sends 0.5-RTT data with its flight, which the client acknowledges in 1-RTT packets.
    let sh = p.server.table.iter().next().unwrap().0;
    {
        let mut conn = p.server.conn(sh).unwrap();
        let id = conn
            .open_uni()
            .expect("a server may send before the handshake completes");
        conn.stream(id).write(b"0.5-RTT data").unwrap();
    }
    let flight = packets_from(&mut p.server, t0);
    assert!(flight.iter().any(|packet| is_short(packet)), "no 0.5-RTT packet");
    for packet in flight {
        p.client.handle_datagram(t0, datagram(server, packet));
    }
    let ch = p.client.table.iter().next().unwrap().0;
    {
        let mut conn = p.client.conn(ch).unwrap();
        let id = conn.open_bi().unwrap();
        conn.stream(id).write(b"a request").unwrap();
    }
    let (short, finished): (Vec<_>, Vec<_>) = packets_from(&mut p.client, t0)
        .into_iter()
        .partition(|packet| is_short(packet));
    assert!(!short.is_empty() && !finished.is_empty());
    // The 1-RTT packets (with the ACK) arrive after a millisecond, the Finished 200 ms later.
    let t1 = t0 + Duration::from_millis(1);
    for packet in short {
        p.server.handle_datagram(t1, datagram(client, packet));
    }
    let t2 = t1 + Duration::from_millis(200);
    for packet in finished {
        p.server.handle_datagram(t2, datagram(client, packet));
    }
    let conn = &p.server.table.get(sh).unwrap().conn;
    assert!(conn.handshake_complete);
    assert!(conn.stats().packets_buffered > 0);
    // The Handshake ACK with the Finished gives a sample of about 201 ms (the Finished was late); the
    // held 1-RTT ACK one of about 1 ms, when it arrived.
    let min_rtt = conn.stats().min_rtt;
    assert!(
        min_rtt <= Duration::from_millis(2),
        "min_rtt {min_rtt:?}: the held ACK's sample counted its wait for keys"
    );
}
