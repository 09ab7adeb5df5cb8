//! Acknowledgements and retransmission between two real endpoints (RFC 9000 §13.2, §13.3): what the
//! unit tests of `conn::ack` cannot show, because it depends on which packets carried an ACK frame.

use std::time::Duration;

use bytes::Bytes;

use super::peer_errors::{deliver, sends, Pair, CLIENT, SERVER};
use crate::conn::SpaceId;
use crate::TransportConfig;

/// RFC 9000 §13.2.3: "After receiving acknowledgments for an ACK frame, the receiver SHOULD stop
/// tracking those acknowledged ACK Ranges" (§13.2.4 describes how). A client that only receives
/// datagrams sends nothing but ACK frames, in packets that are not ack-eliciting; the server's packets
/// acknowledge them. One server datagram in ten is lost, so every loss leaves a gap in the packet
/// numbers the client received. Once the server has acknowledged the client's ACK frames, the client
/// stops reporting the old ranges: what it tracks stays a handful, not one range per loss. Before, the
/// acknowledgement of an ACK-only packet was not noticed (such packets are not kept in flight), so the
/// client kept every range up to its cap and repeated `max_ack_ranges` of them in every ACK frame.
#[test]
fn ack_frames_in_ack_only_packets_are_pruned_once_acknowledged() {
    let mut p = Pair::new(TransportConfig::default());
    let sh = p.server_h.unwrap();
    let (ch, _) = p.client.table.iter().next().unwrap();
    let mut sent = 0u64;
    for _ in 0..300 {
        {
            let mut conn = p.server.conn(sh).unwrap();
            for _ in 0..4 {
                conn.send_datagram(Bytes::from(vec![1; 900])).unwrap();
            }
        }
        let now = p.now;
        for d in sends(&mut p.server, now) {
            sent += 1;
            if sent % 10 != 0 {
                deliver(&mut p.client, now, SERVER, &d);
            }
        }
        for d in sends(&mut p.client, now) {
            deliver(&mut p.server, now, CLIENT, &d);
        }
        while p.client.conn(ch).unwrap().recv_datagram().is_some() {}
        p.now += Duration::from_millis(5);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
    }
    assert!(sent >= 600, "{sent} datagrams");
    let client = &p.client.table.get(ch).unwrap().conn;
    let tracked = client.spaces[SpaceId::Data.index()].received.tracked_ranges();
    assert!(
        tracked <= 4,
        "the client still tracks {tracked} ranges after {} losses",
        sent / 10
    );
}
