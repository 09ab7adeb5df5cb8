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
    // The default send buffer is 1 MiB: 2000 datagrams of 1000 bytes overflow it before any is sent.
    for i in 0..2000u32 {
        conn.send_datagram(Bytes::from(i.to_be_bytes().repeat(250)))
            .unwrap();
    }
    let dropped = conn.stats().datagrams_send_dropped;
    assert_eq!(dropped, 2000 - 1048);
    drop(conn);
    p.drive(Duration::from_secs(2));
    let server = p.server.as_any().downcast_mut::<QuicsandNode>().unwrap();
    let sh = server.handle.unwrap();
    let recv_dropped = server.endpoint.conn(sh).unwrap().stats().datagrams_recv_dropped;
    let got = p.server.recv_datagrams();
    // What is left arrives, oldest survivor first, minus what the receive buffer (also 1 MiB, each
    // datagram counted with its queue slot) dropped; together, everything that was not dropped.
    assert!(recv_dropped < 100, "{recv_dropped}");
    assert_eq!(got.len() as u64, 1048 - recv_dropped);
    assert_eq!(
        got.first()
            .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap())),
        Some((dropped + recv_dropped) as u32)
    );
}
