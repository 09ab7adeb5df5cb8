//! Unreliable datagrams (RFC 9221) between quicsand and quicsand, and with quinn-proto in both roles.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::quicsand_node::QuicsandNode;
use common::{pair, Engine};
use quicsand::SendDatagramError;

const PAIRS: [(Engine, Engine); 3] = [
    (Engine::Quicsand, Engine::Quicsand),
    (Engine::Quicsand, Engine::Quinn),
    (Engine::Quinn, Engine::Quicsand),
];

#[test]
fn datagrams_both_ways() {
    for (c, s) in PAIRS {
        let mut p = pair(c, s, 30);
        assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
        p.drive(Duration::from_millis(100));
        for i in 0..20u8 {
            p.client
                .send_datagram(Bytes::from(vec![i; 100 + usize::from(i)]))
                .unwrap();
            p.server.send_datagram(Bytes::from(vec![0x80 | i; 200])).unwrap();
        }
        p.drive(Duration::from_millis(500));
        let at_server = p.server.recv_datagrams();
        let at_client = p.client.recv_datagrams();
        assert_eq!(
            at_server.len(),
            20,
            "{c:?}/{s:?}: {:?} / {:?}",
            p.client_events,
            p.server_events
        );
        assert_eq!(at_client.len(), 20, "{c:?}/{s:?}");
        for (i, d) in at_server.iter().enumerate() {
            assert_eq!(&d[..], &vec![i as u8; 100 + i][..]);
        }
        for (i, d) in at_client.iter().enumerate() {
            assert_eq!(&d[..], &vec![0x80 | i as u8; 200][..]);
        }
    }
}

#[test]
fn oversized_datagrams_are_refused_locally() {
    let mut p = pair(Engine::Quicsand, Engine::Quicsand, 31);
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    let client = p.client.as_any().downcast_mut::<QuicsandNode>().unwrap();
    let h = client.handle.unwrap();
    let mut conn = client.endpoint.conn(h).unwrap();
    let max = conn.max_datagram_size().unwrap();
    assert!(max > 1000 && max < 1200, "one 1200-byte packet's worth: {max}");
    assert_eq!(
        conn.send_datagram(Bytes::from(vec![0; max + 1])),
        Err(SendDatagramError::TooLarge { max })
    );
    assert_eq!(conn.send_datagram(Bytes::from(vec![0; max])), Ok(()));
}

#[test]
fn a_full_send_queue_drops_the_oldest() {
    let mut p = pair(Engine::Quicsand, Engine::Quicsand, 32);
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    let client = p.client.as_any().downcast_mut::<QuicsandNode>().unwrap();
    let h = client.handle.unwrap();
    let mut conn = client.endpoint.conn(h).unwrap();
    // The default send buffer is 1 MiB, each datagram counted with 64 bytes more for its queue slot:
    // 2000 datagrams of 1000 bytes overflow it before any is sent, and 985 stay.
    for i in 0..2000u32 {
        conn.send_datagram(Bytes::from(i.to_be_bytes().repeat(250)))
            .unwrap();
    }
    let kept = (1 << 20) / (1000 + 64);
    let dropped = conn.stats().datagrams_send_dropped;
    assert_eq!(dropped, 2000 - kept);
    drop(conn);
    p.drive(Duration::from_secs(2));
    let server = p.server.as_any().downcast_mut::<QuicsandNode>().unwrap();
    let sh = server.handle.unwrap();
    let recv_dropped = server.endpoint.conn(sh).unwrap().stats().datagrams_recv_dropped;
    let got = p.server.recv_datagrams();
    // What is left arrives, oldest survivor first, minus what the receive buffer (also 1 MiB, each
    // datagram counted with its queue slot) dropped; together, everything that was not dropped.
    assert!(recv_dropped < 100, "{recv_dropped}");
    assert_eq!(got.len() as u64, kept - recv_dropped);
    assert_eq!(
        got.first()
            .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap())),
        Some((dropped + recv_dropped) as u32)
    );
}

/// A datagram of exactly `max_datagram_size()` leaves no room for an ACK frame in its packet. While the
/// peer streams to us, we owe an ACK nearly all the time; the datagram must still go out within a few
/// round trips rather than wait behind ACK-carrying packets (RFC 9221 §5: DATAGRAM frames are sent
/// promptly, and RFC 9000 §13.2: ACKs are still sent).
#[test]
fn a_largest_datagram_goes_while_the_peer_streams_to_us() {
    for (c, s, both) in [
        (Engine::Quicsand, Engine::Quicsand, false),
        (Engine::Quicsand, Engine::Quinn, false),
        (Engine::Quicsand, Engine::Quicsand, true),
        (Engine::Quicsand, Engine::Quinn, true),
    ] {
        let mut p = pair(c, s, 33);
        assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
        let now = p.now;
        p.server.send_stream(now, common::payload(4 << 20, 7));
        if both {
            p.client.send_stream(now, common::payload(4 << 20, 8));
        }
        // Let the stream get going, so that the client owes an ACK whenever it sends.
        p.drive(Duration::from_millis(100));
        let client = p.client.as_any().downcast_mut::<QuicsandNode>().unwrap();
        let h = client.handle.unwrap();
        let mut conn = client.endpoint.conn(h).unwrap();
        let max = conn.max_datagram_size().unwrap();
        conn.send_datagram(Bytes::from(vec![0xd6; max])).unwrap();
        drop(conn);
        // Round trips of 20 ms, at most ten.
        let mut got = Vec::new();
        let mut rounds = 0;
        while got.is_empty() && rounds < 10 {
            p.drive_until(Duration::from_millis(20), |_| false);
            got.extend(p.server.recv_datagrams());
            rounds += 1;
        }
        let streamed = p.client.received_streams().values().map(|v| v.0).sum::<usize>();
        assert!(
            streamed > 100_000,
            "{c:?}/{s:?}: the stream was flowing: {streamed}"
        );
        assert_eq!(
            got.len(),
            1,
            "{c:?}/{s:?}: the datagram arrived within ten round trips"
        );
        assert!(rounds <= 2, "{c:?}/{s:?}: it took {rounds} round trips");
        assert_eq!(got[0].len(), max);
    }
}

/// An application that offers datagrams faster than the path carries them keeps the send queue full.
/// Stream data queued beside them must still get a share of the packets: RFC 9221 §5 lets datagrams be
/// delayed or dropped by congestion control, and nothing lets them hold back the connection's streams
/// (an application protocol's control stream, say) for as long as they keep coming. One client packet
/// in fifty is lost, which keeps the congestion window small.
#[test]
fn a_flood_of_datagrams_does_not_starve_a_stream() {
    for (c, s) in [
        (Engine::Quicsand, Engine::Quicsand),
        (Engine::Quicsand, Engine::Quinn),
    ] {
        let mut p = pair(c, s, 34);
        p.filter = Box::new(|dir, index, _, _| {
            (dir != common::Dir::ClientToServer || index % 50 != 49).then_some(Duration::ZERO)
        });
        assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
        p.drive(Duration::from_millis(100));
        let now = p.now;
        p.client.send_stream(now, common::payload(100_000, 9));
        // For one second, 1000 datagrams of 20 bytes every 5 ms: 4 MB/s, far more than the window takes.
        // Small datagrams pack a packet to within a few bytes of its end.
        let mut datagrams = 0;
        for i in 0..200u32 {
            for _ in 0..1000 {
                p.client
                    .send_datagram(Bytes::from(i.to_be_bytes().repeat(5)))
                    .unwrap();
            }
            p.drive_until(Duration::from_millis(5), |_| false);
            datagrams += p.server.recv_datagrams().len();
        }
        let streamed = p.server.received_streams().values().map(|v| v.0).sum::<usize>();
        assert!(datagrams > 10_000, "{c:?}/{s:?}: datagrams flowed: {datagrams}");
        assert!(
            streamed == 100_000,
            "{c:?}/{s:?}: the stream was starved: {streamed} of 100000 bytes in a second ({datagrams} datagrams)"
        );
    }
}

/// The client's connection of `p` (a quicsand client).
fn client_conn(p: &mut common::Pair) -> quicsand::ConnRef<'_> {
    let client = p.client.as_any().downcast_mut::<QuicsandNode>().unwrap();
    let h = client.handle.unwrap();
    client.endpoint.conn(h).unwrap()
}

/// `max_datagram_size` at its edges: a datagram of exactly that size is accepted, sent and delivered
/// whole (the peer takes it: no PROTOCOL_VIOLATION for a frame over its max_datagram_frame_size, RFC 9221
/// §3), and one byte more is refused with the same maximum. Once path MTU discovery has raised the
/// path's size (bounded by the packet), and against a peer announcing a small or tiny
/// max_datagram_frame_size (bounded by the peer).
#[test]
fn a_datagram_of_the_largest_size_arrives_and_one_byte_more_is_refused() {
    let cert = common::TestCert::new();
    // The server's engine, and the payload its receive buffer holds besides one queue slot (its
    // max_datagram_frame_size is one more) with the largest datagram that makes a frame within it: the
    // type, a 1- or 2-byte length, the data.
    for (server, small_peer) in [
        (Engine::Quicsand, None),
        (Engine::Quinn, None),
        (Engine::Quicsand, Some((300, 298))),
        (Engine::Quicsand, Some((2, 1))),
        (Engine::Quicsand, Some((1, 0))),
    ] {
        let mut p = common::pair_with(Engine::Quicsand, server, 35, &cert, &[]);
        if let Some((buffer, _)) = small_peer {
            let mut config = quicsand::ServerConfig::new(cert.server_tls(&[]));
            config.transport.datagram_receive_buffer = Some(buffer + 64);
            p.server = Box::new(QuicsandNode::server(common::server_addr(), config, 35));
        }
        assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
        // Time for path MTU discovery to reach the largest size the pair carries.
        p.drive(Duration::from_secs(3));
        let mut conn = client_conn(&mut p);
        let mtu = conn.stats().path_mtu;
        let max = conn.max_datagram_size().unwrap();
        if let Some((_, expected)) = small_peer {
            assert_eq!(max, expected);
        } else {
            assert!(mtu > 1400, "{server:?}: discovery raised the path MTU: {mtu}");
            // The short header (first byte, 8-byte connection ID, 4-byte packet number), the frame's
            // type and 2-byte length, and the AEAD tag.
            assert_eq!(max, usize::from(mtu) - 1 - 8 - 4 - 3 - 16, "{server:?}");
        }
        assert_eq!(
            conn.send_datagram(Bytes::from(vec![0; max + 1])),
            Err(SendDatagramError::TooLarge { max }),
            "{server:?}/{small_peer:?}"
        );
        conn.send_datagram(Bytes::from(vec![0xda; max])).unwrap();
        drop(conn);
        p.drive(Duration::from_millis(200));
        let got = p.server.recv_datagrams();
        assert_eq!(got.len(), 1, "{server:?}/{small_peer:?}: {:?}", p.server_events);
        assert_eq!(got[0], vec![0xda; max]);
        assert!(p.both_connected() && common::Pair::lost(&p.client_events).is_none());
        assert!(common::Pair::lost(&p.server_events).is_none());
    }
}

/// The path stops carrying the size that path MTU discovery found (a black hole, RFC 8899 §4.3) while
/// the application sends datagrams of the largest size it is offered, and small ones. The connection
/// finds the black hole; from then on it offers a size the path carries, and what it sends arrives: the
/// small datagrams all along, the largest again once the offered size is back within the path.
#[test]
fn datagrams_after_a_path_mtu_black_hole() {
    let mut p = pair(Engine::Quicsand, Engine::Quicsand, 36);
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    p.drive(Duration::from_secs(3));
    let before = client_conn(&mut p).max_datagram_size().unwrap();
    assert!(before > 1300, "{before}");
    p.filter = Box::new(|_, _, data, _| (data.len() <= 1250).then_some(Duration::ZERO));
    let mut small = 0;
    let mut refused = 0;
    for i in 0..600u32 {
        let mut conn = client_conn(&mut p);
        let max = conn.max_datagram_size().unwrap();
        conn.send_datagram(Bytes::from(vec![1; max]))
            .unwrap_or_else(|e| panic!("{max}: {e}"));
        conn.send_datagram(Bytes::from(i.to_be_bytes().to_vec())).unwrap();
        // A datagram of the size offered before the black hole is refused once it is found.
        if conn.send_datagram(Bytes::from(vec![2; before])).is_err() {
            refused += 1;
        }
        drop(conn);
        p.drive_until(Duration::from_millis(5), |_| false);
        small += p.server.recv_datagrams().iter().filter(|d| d.len() == 4).count();
    }
    let mut conn = client_conn(&mut p);
    let stats = conn.stats();
    assert!(stats.mtu_black_holes >= 1, "{stats:?}");
    assert!(stats.path_mtu <= 1250, "{stats:?}");
    // Those queued when it was found, too large for the path now, left the queue (counted).
    assert!(stats.datagrams_send_dropped > 0, "{stats:?}");
    let max = conn.max_datagram_size().unwrap();
    assert!(max < before, "{max}");
    assert!(refused > 500, "{refused}");
    conn.send_datagram(Bytes::from(vec![3; max])).unwrap();
    drop(conn);
    p.drive(Duration::from_millis(200));
    let got = p.server.recv_datagrams();
    small += got.iter().filter(|d| d.len() == 4).count();
    assert_eq!(small, 600, "every small datagram arrived: {stats:?}");
    assert!(
        got.iter().any(|d| d[..] == vec![3; max][..]),
        "{:?}",
        got.iter().map(|d| d.len()).collect::<Vec<_>>()
    );
    assert!(common::Pair::lost(&p.client_events).is_none());
}
