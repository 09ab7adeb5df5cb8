//! The packet-level receive and send paths seen from the wire (RFC 9000 §12, §14.1, §17; RFC 9001 §5):
//! real handshakes stepped one flight at a time, with forged packets where a peer would misbehave.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::peer_errors::{Pair, CLIENT};
use super::Endpoint;
use crate::event::Event;
use crate::wire::frame::{ConnectionClose, Frame};
use crate::wire::header::{Header, ProtectedHeader, VERSION_1};
use crate::wire::packet_number::TruncatedPn;
use crate::wire::{ConnectionId, TransportError};
use crate::{Datagram, EndpointConfig, Side, TransportConfig};

/// Every datagram `from` sends now, each as its own buffer.
fn sends(from: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        out.extend(t.datagrams(&buf).map(<[u8]>::to_vec));
    }
    out
}

fn deliver(to: &mut Endpoint, now: Instant, from: &str, payload: &[u8]) {
    let remote: SocketAddr = from.parse().unwrap();
    to.handle_datagram(
        now,
        Datagram {
            remote,
            local: None,
            ecn: None,
            payload: BytesMut::from(payload),
        },
    );
}

/// An Initial packet from the client, protected with the Initial keys of `odcid` (which anyone who saw
/// the client's first Initial can derive), carrying `frames`, padded so the datagram is `size` bytes.
fn client_initial(
    odcid: &ConnectionId,
    scid: &ConnectionId,
    pn: u64,
    frames: &[Frame],
    size: usize,
) -> Vec<u8> {
    let keys = crate::crypto::initial_keys(VERSION_1, odcid, Side::Client).unwrap();
    let header = Header::Initial {
        version: VERSION_1,
        dcid: *odcid,
        scid: *scid,
        token: Bytes::new(),
    };
    let mut packet = Vec::new();
    let enc = header.encode(TruncatedPn::truncate(pn, 4), &mut packet);
    for f in frames {
        f.encode(&mut packet);
    }
    let tag = keys.local.packet.tag_len();
    packet.resize(size - tag, 0);
    packet.resize(size, 0);
    enc.set_length(&mut packet, size).unwrap();
    keys.local.packet.seal(pn, &mut packet, enc.header_len).unwrap();
    keys.local.header.protect(enc.pn_offset, &mut packet).unwrap();
    packet
}

fn server_lost(p: &mut Pair) -> bool {
    while let Some((_, e)) = p.server.poll_event() {
        p.server_events.push(e);
    }
    p.server_events
        .iter()
        .any(|e| matches!(e, Event::ConnectionLost { .. }))
}

/// RFC 9000 §14.1: "A server MUST discard an Initial packet that is carried in a UDP datagram with a
/// payload that is less than ... 1200 bytes" — every such Initial, not only the one that would create
/// the connection. Here a small Initial carries a CONNECTION_CLOSE, which must not end the connection;
/// the same packet in a full-sized datagram does (the forgery itself is sound).
#[test]
fn a_server_drops_initial_packets_in_datagrams_below_1200_bytes() {
    let mut p = Pair::start(
        TransportConfig::default(),
        TransportConfig::default(),
        EndpointConfig::with_seed(1),
        EndpointConfig::with_seed(2),
    );
    let now = p.now;
    let first = sends(&mut p.client, now);
    let h = ProtectedHeader::decode(&first[0], 0).unwrap();
    let (odcid, scid) = (*h.dcid(), *h.scid().unwrap());
    for d in &first {
        deliver(&mut p.server, now, CLIENT, d);
    }
    assert!(!server_lost(&mut p));
    assert_eq!(
        p.server.table.len(),
        1,
        "the client's Initial started a connection"
    );

    let close = [Frame::Close(ConnectionClose::from(
        TransportError::protocol_violation("forged"),
    ))];
    let small = client_initial(&odcid, &scid, 5, &close, 200);
    deliver(&mut p.server, now, CLIENT, &small);
    assert!(
        !server_lost(&mut p),
        "an Initial in a 200-byte datagram was processed"
    );

    let full = client_initial(&odcid, &scid, 6, &close, 1200);
    deliver(&mut p.server, now, CLIENT, &full);
    assert!(
        server_lost(&mut p),
        "the same Initial in a 1200-byte datagram is processed"
    );
}
