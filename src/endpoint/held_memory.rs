//! What a peer can make an endpoint hold in memory beyond the bytes its limits count (RFC 9000 §21.7):
//! data kept as zero-copy slices keeps whole datagrams alive, and pieces cut around holes each cost an
//! entry. Each test sends what an attacker would and counts what stays held; a datagram is "pinned"
//! while the engine still holds part of it, which the test sees as its own handle no longer being the
//! only one.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::peer_errors::{client_bidi, deliver, forged_initial, inject, sends, Pair};
use super::{ConnectionHandle, Endpoint};
use crate::conn::SpaceId;
use crate::wire::frame::{CloseCode, CryptoFrame, Frame, NewConnectionId, StreamFrame};
use crate::wire::header::{Header, VERSION_1};
use crate::wire::{ConnectionId, ResetToken, TransportErrorCode};
use crate::{Datagram, Side, TransportConfig};

/// A decrypted 1-RTT payload of `size` bytes: `frame`, then PADDING.
fn padded(frame: Frame, size: usize) -> Bytes {
    let mut buf = Vec::new();
    frame.encode(&mut buf);
    buf.resize(size, 0);
    BytesMut::from(&buf[..]).freeze()
}

/// One byte of CRYPTO data at `offset`.
fn crypto_byte(offset: u64) -> Frame {
    Frame::Crypto(CryptoFrame {
        offset,
        data: Bytes::from_static(b"x"),
    })
}

/// Bytes of `payloads` the engine still holds a part of.
fn pinned(payloads: &[Bytes]) -> usize {
    payloads.iter().filter(|b| !b.is_unique()).map(Bytes::len).sum()
}

/// The transport error connection `h` closed with, if it closed with one.
fn closed_with(server: &Endpoint, h: ConnectionHandle) -> Option<TransportErrorCode> {
    match server.table.get(h)?.conn.close.as_ref()?.frame.code {
        CloseCode::Transport { code, .. } => Some(code),
        CloseCode::Application(_) => None,
    }
}

/// One-byte CRYPTO pieces beyond a gap in the 1-RTT space, where the gap at offset 0 never fills: each
/// piece is held for the connection's life. They are copied, so none keeps its datagram alive (before,
/// each kept its 1200-byte datagram: 1200 times the bytes counted against `crypto_buffer_size`).
#[test]
fn crypto_pieces_beyond_a_gap_keep_no_datagram_alive() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let payloads: Vec<Bytes> = (0..100).map(|i| padded(crypto_byte(1 + 2 * i), 1200)).collect();
    for payload in &payloads {
        p.server.inject_payload(p.now, h, payload.clone());
    }
    p.run(Duration::from_millis(100));
    let conn = &p.server.table.get(h).unwrap().conn;
    assert!(conn.close.is_none(), "{:?}", conn.close);
    assert_eq!(conn.spaces[SpaceId::Data.index()].crypto_recv.fragments(), 100);
    assert_eq!(pinned(&payloads), 0);
}

/// RFC 9000 §7.5, §21.7: CRYPTO data cut into many pieces around holes is bounded in pieces as well as
/// bytes: 256 for the default 64 KiB buffer, then CRYPTO_BUFFER_EXCEEDED. Before, 32,768 one-byte
/// pieces were held.
#[test]
fn crypto_cut_into_too_many_pieces_is_crypto_buffer_exceeded() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    for i in 0..256 {
        p.server
            .inject_payload(p.now, h, padded(crypto_byte(1 + 2 * i), 100));
    }
    assert_eq!(closed_with(&p.server, h), None, "256 pieces are allowed");
    p.server
        .inject_payload(p.now, h, padded(crypto_byte(1 + 2 * 256), 100));
    assert_eq!(
        closed_with(&p.server, h),
        Some(TransportErrorCode::CRYPTO_BUFFER_EXCEEDED)
    );
}

/// The same before address validation: Initial packets from a spoofed address, after the start of a
/// ClientHello that TLS waits to complete, each carrying one CRYPTO byte beyond a gap. The connection
/// fails at the 257th piece, and no datagram stays held (before, all 20,000 were: 24 MB for one
/// spoofed connection, of which a server takes thousands).
#[test]
fn initial_crypto_pieces_from_an_unvalidated_address_are_bounded() {
    let Pair { mut server, now, .. } = Pair::new(TransportConfig::default());
    let odcid = ConnectionId::new(&[0x11; 8]).unwrap();
    let header = Header::Initial {
        version: VERSION_1,
        dcid: odcid,
        scid: ConnectionId::new(&[0x22; 8]).unwrap(),
        token: Bytes::new(),
    };
    let spoofed = "203.0.113.9:4433";
    // A ClientHello announced as 60,000 bytes long: TLS waits for the rest.
    let start = Frame::Crypto(CryptoFrame {
        offset: 0,
        data: Bytes::from_static(&[0x01, 0x00, 0xea, 0x60, 0x03, 0x03]),
    });
    deliver(
        &mut server,
        now,
        spoofed,
        &forged_initial(Side::Client, odcid.as_ref(), &header, 0, &[start], 1200),
    );
    let h = server
        .table
        .iter()
        .find(|(_, e)| e.conn.original_dcid == odcid)
        .map(|(h, _)| h)
        .expect("a connection for the spoofed address");
    let mut witnesses = Vec::new();
    for i in 0..20_000u64 {
        let d = forged_initial(
            Side::Client,
            odcid.as_ref(),
            &header,
            1 + i,
            &[crypto_byte(100 + 2 * i)],
            1200,
        );
        // The datagram shares its allocation with a witness, which is unique again only once the
        // engine lets go of every part of the datagram.
        let mut buf = BytesMut::with_capacity(d.len() + 1);
        buf.extend_from_slice(&d);
        buf.extend_from_slice(&[0]);
        witnesses.push(buf.split_off(d.len()).freeze());
        server.handle_datagram(
            now,
            Datagram {
                remote: spoofed.parse().unwrap(),
                local: None,
                ecn: None,
                payload: buf,
            },
        );
    }
    assert_eq!(
        closed_with(&server, h),
        Some(TransportErrorCode::CRYPTO_BUFFER_EXCEEDED)
    );
    assert_eq!(witnesses.iter().filter(|w| !w.is_unique()).count(), 0);
}

/// 1 KiB stream pieces beyond gaps, each alone in a 65,000-byte datagram (IP fragmentation carries
/// such datagrams, and the UDP driver takes up to 64 KiB): a piece that is a small share of its
/// datagram is copied, so the memory held follows the receive window. Before, the pieces kept 66 MB
/// of datagrams alive under a 1 MiB window.
#[test]
fn stream_pieces_alone_in_large_datagrams_keep_no_datagram_alive() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let streams = TransportConfig::default().streams;
    let piece = 1024u64;
    let mut payloads = Vec::new();
    let mut counted = 0;
    'streams: for s in 0..8 {
        // A gap at offset 0: nothing is readable.
        let mut offset = 1;
        while offset + piece <= streams.stream_receive_window {
            if counted + offset + piece > streams.receive_window {
                break 'streams;
            }
            let frame = Frame::Stream(StreamFrame {
                id: client_bidi(s),
                offset,
                fin: false,
                data: Bytes::from(vec![7; piece as usize]),
            });
            let payload = padded(frame, 65_000);
            p.server.inject_payload(p.now, h, payload.clone());
            payloads.push(payload);
            offset += piece + 1;
        }
        counted += offset;
    }
    assert_eq!(closed_with(&p.server, h), None);
    assert!(payloads.len() > 900, "{} pieces", payloads.len());
    assert_eq!(pinned(&payloads), 0);
}

/// In-order stream data the application has not read: a piece less than half of a datagram larger
/// than an Ethernet frame is copied too, and one that is most of its datagram (the bulk case) is held
/// as it came, zero-copy.
#[test]
fn unread_in_order_stream_data_holds_at_most_twice_its_size() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let small = padded(
        Frame::Stream(StreamFrame {
            id: client_bidi(0),
            offset: 0,
            fin: false,
            data: Bytes::from(vec![1; 800]),
        }),
        65_000,
    );
    let large = padded(
        Frame::Stream(StreamFrame {
            id: client_bidi(0),
            offset: 800,
            fin: false,
            data: Bytes::from(vec![2; 1100]),
        }),
        1200,
    );
    p.server.inject_payload(p.now, h, small.clone());
    p.server.inject_payload(p.now, h, large.clone());
    assert_eq!(closed_with(&p.server, h), None);
    assert!(
        small.is_unique(),
        "an 800-byte piece of a 65,000-byte datagram is copied"
    );
    assert!(
        !large.is_unique(),
        "1100 bytes of a 1200-byte datagram are held zero-copy"
    );
}

/// `datagrams` as a receive offload (GRO) hands them over: runs of equal size, each closed by a shorter
/// one, as (buffer, stride).
fn as_batches(datagrams: &[Vec<u8>]) -> Vec<(Vec<u8>, usize)> {
    let mut batches: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut closed = true;
    for d in datagrams {
        match batches.last_mut() {
            Some((buf, stride)) if !closed && d.len() <= *stride => {
                buf.extend_from_slice(d);
                closed = d.len() < *stride;
            }
            _ => {
                batches.push((d.clone(), d.len()));
                closed = false;
            }
        }
    }
    batches
}

/// The client's datagrams for what `write` queued on its streams, handed to the server in batches as
/// a receive offload (GRO) forms them, each batch sharing its allocation with a witness that is unique
/// again only once the server lets go of every part of the batch. Returns the witnesses and the number
/// of datagrams.
fn send_in_batches(p: &mut Pair, write: impl FnOnce(&mut super::ConnRef<'_>)) -> (Vec<Bytes>, usize) {
    let client_h = p.client.table.iter().map(|(h, _)| h).next().unwrap();
    write(&mut p.client.conn(client_h).unwrap());
    let datagrams = sends(&mut p.client, p.now);
    let batches = as_batches(&datagrams);
    assert!(
        batches.len() < datagrams.len(),
        "{} datagrams in {} batches",
        datagrams.len(),
        batches.len()
    );
    let received = p.server.stats().datagrams_received;
    let mut witnesses = Vec::new();
    for (batch, stride) in batches {
        let mut buf = BytesMut::with_capacity(batch.len() + 1);
        buf.extend_from_slice(&batch);
        buf.extend_from_slice(&[0]);
        witnesses.push(buf.split_off(batch.len()).freeze());
        let batch = Datagram {
            remote: super::peer_errors::CLIENT.parse().unwrap(),
            local: None,
            ecn: None,
            payload: buf,
        };
        p.server.handle_batch(p.now, batch, stride);
    }
    assert_eq!(
        p.server.stats().datagrams_received - received,
        datagrams.len() as u64
    );
    (witnesses, datagrams.len())
}

/// A pair whose datagrams all have one size (no MTU probes among them).
fn fixed_size_pair() -> Pair {
    let transport = TransportConfig {
        mtu_discovery: None,
        ..TransportConfig::default()
    };
    Pair::with(transport.clone(), transport)
}

/// Everything stream `id` of the server's connection has, read chunk by chunk.
fn read_stream(p: &mut Pair, id: crate::StreamId) -> Vec<u8> {
    let mut conn = p.server.conn(p.server_h.unwrap()).unwrap();
    let mut stream = conn.stream(id);
    let mut out = Vec::new();
    while let Some(chunk) = stream.read_chunk(usize::MAX).unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Bulk data on one stream in a batch of datagrams received together (GRO), with a few bytes of another
/// stream in its last datagram: the bulk data, most of the batch, is held as it came (no copy), and the
/// few bytes, a small share of it, are copied once the batch is done, so that they do not keep the
/// batch alive after the bulk data is read.
#[test]
fn bulk_data_of_a_batch_is_held_as_it_came_and_a_small_share_copied() {
    let mut p = fixed_size_pair();
    let bulk: Vec<u8> = (0..9_000u32).map(|i| (i % 251) as u8).collect();
    let mut ids = Vec::new();
    let (witnesses, datagrams) = send_in_batches(&mut p, |conn| {
        for data in [&bulk[..], b"a few bytes"] {
            let id = conn.open_uni().unwrap();
            let mut stream = conn.stream(id);
            assert_eq!(stream.write(data), Ok(data.len()));
            stream.finish().unwrap();
            ids.push(id);
        }
    });
    assert!(datagrams >= 8, "{datagrams} datagrams");
    assert!(pinned(&witnesses) > 0, "the bulk data is held zero-copy");
    assert_eq!(read_stream(&mut p, ids[0]), bulk);
    assert_eq!(pinned(&witnesses), 0, "the few bytes unread keep a batch alive");
    assert_eq!(read_stream(&mut p, ids[1]), b"a few bytes");
}

/// A little data on each of many streams, in a batch of datagrams: no stream's data is half of the
/// batch, so each is copied once the batch is done, and nothing unread keeps the batch alive (before,
/// a slice of a 10 KB batch per 100 bytes unread).
#[test]
fn small_shares_of_a_batch_keep_no_batch_alive() {
    let mut p = fixed_size_pair();
    let mut ids = Vec::new();
    let (witnesses, datagrams) = send_in_batches(&mut p, |conn| {
        for i in 0..60u8 {
            let id = conn.open_uni().unwrap();
            let mut stream = conn.stream(id);
            assert_eq!(stream.write(&[i; 100]), Ok(100));
            stream.finish().unwrap();
            ids.push(id);
        }
    });
    assert!(datagrams >= 4, "{datagrams} datagrams");
    assert_eq!(pinned(&witnesses), 0, "unread stream data keeps a batch alive");
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(read_stream(&mut p, id), [i as u8; 100]);
    }
}

/// Bulk data of a batch, kept as it came, of which the application reads all but the end: once what is
/// left unread is a small share of the batch it is copied, whether the engine holds it as whole chunks
/// (read up to a chunk's end) or as the rest of a chunk read in part (read up to any byte). Before,
/// 100 bytes unread kept a 10 KB batch alive.
#[test]
fn the_unread_end_of_bulk_data_keeps_no_batch_alive() {
    for whole_chunks in [true, false] {
        let mut p = fixed_size_pair();
        let bulk: Vec<u8> = (0..9_000u32).map(|i| (i % 251) as u8).collect();
        let mut id = None;
        let (witnesses, _) = send_in_batches(&mut p, |conn| {
            let s = conn.open_uni().unwrap();
            assert_eq!(conn.stream(s).write(&bulk), Ok(bulk.len()));
            conn.stream(s).finish().unwrap();
            id = Some(s);
        });
        let id = id.unwrap();
        assert!(pinned(&witnesses) > 0, "the bulk data is held zero-copy");
        let mut read = Vec::new();
        if whole_chunks {
            // Whole chunks, one connection borrow each (the application is done for now after each),
            // until the batch is let go of: before the end.
            while pinned(&witnesses) > 0 {
                let mut conn = p.server.conn(p.server_h.unwrap()).unwrap();
                read.extend_from_slice(&conn.stream(id).read_chunk(usize::MAX).unwrap().unwrap());
            }
        } else {
            let mut conn = p.server.conn(p.server_h.unwrap()).unwrap();
            let mut stream = conn.stream(id);
            while read.len() < bulk.len() - 100 {
                let max = bulk.len() - 100 - read.len();
                read.extend_from_slice(&stream.read_chunk(max).unwrap().unwrap());
            }
        }
        assert!(read.len() < bulk.len());
        assert_eq!(
            pinned(&witnesses),
            0,
            "{} bytes unread keep a batch alive",
            bulk.len() - read.len()
        );
        read.extend(read_stream(&mut p, id));
        assert_eq!(read, bulk);
    }
}

/// An application's CONNECTION_CLOSE in a batch of datagrams: the reason phrase handed to the
/// application (which may keep the error long) is a copy, not a slice of the batch.
#[test]
fn a_close_reason_keeps_no_batch_alive() {
    let mut p = fixed_size_pair();
    let client_h = p.client.table.iter().map(|(h, _)| h).next().unwrap();
    p.client.conn(client_h).unwrap().close(p.now, 7, b"bye");
    let datagrams = sends(&mut p.client, p.now);
    assert_eq!(datagrams.len(), 1);
    let d = &datagrams[0];
    let mut buf = BytesMut::new();
    for _ in 0..40 {
        buf.extend_from_slice(d);
    }
    buf.extend_from_slice(&[0]);
    let witness = buf.split_off(40 * d.len()).freeze();
    let batch = Datagram {
        remote: super::peer_errors::CLIENT.parse().unwrap(),
        local: None,
        ecn: None,
        payload: buf,
    };
    p.server.handle_batch(p.now, batch, d.len());
    let lost = std::iter::from_fn(|| p.server.poll_event()).find_map(|(_, e)| match e {
        crate::Event::ConnectionLost { reason } => Some(reason),
        _ => None,
    });
    assert!(
        matches!(&lost, Some(crate::ConnectionError::ApplicationClosed { reason, .. }) if reason[..] == *b"bye"),
        "{lost:?}"
    );
    assert!(witness.is_unique(), "the reason keeps the batch alive");
}

/// The reason phrase an application closes with is kept for the closing period (three PTOs), once per
/// connection ([`Endpoint::close_all`](super::Endpoint::close_all) closes them all with it), but no
/// packet carries more of it than fits in one datagram (RFC 9000 §19.19: the reason goes cut to fit):
/// only that much is kept. Before, all of it was: a 1 MiB reason held 1 MiB per closing connection.
#[test]
fn a_close_reason_is_kept_only_as_far_as_a_packet_carries_it() {
    let mut p = fixed_size_pair();
    let client_h = p.client.table.iter().map(|(h, _)| h).next().unwrap();
    let reason = vec![b'x'; 1 << 20];
    p.client.close_all(p.now, 7, &reason);
    let conn = &p.client.table.get(client_h).unwrap().conn;
    let kept = conn.close.as_ref().map(|c| c.frame.reason.len());
    let mtu = usize::from(conn.path.mtu);
    assert!(
        kept.is_some_and(|k| k > 0 && k <= mtu),
        "{kept:?} bytes of the reason kept, mtu {mtu}"
    );
    // What goes out is as much of the reason as the datagram holds, as before.
    let datagrams = sends(&mut p.client, p.now);
    assert_eq!(datagrams.len(), 1);
    assert!(datagrams[0].len() >= mtu - 1, "{} bytes", datagrams[0].len());
}

/// The same for DATAGRAM frames waiting for the application: `datagram_receive_buffer` counts their
/// payload, and a 1 KiB one alone in a 65,000-byte datagram is copied. Before, they kept 62 MB alive
/// under the 1 MiB buffer.
#[test]
fn datagram_frames_alone_in_large_datagrams_keep_no_datagram_alive() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let limit = TransportConfig::default().datagram_receive_buffer.unwrap();
    let mut payloads = Vec::new();
    for _ in 0..limit / 1100 {
        // DATAGRAM with a length (type 0x31), 1024 bytes.
        let mut frame = vec![0x31, 0x44, 0x00];
        frame.extend_from_slice(&[7; 1024]);
        frame.resize(65_000, 0);
        let payload = BytesMut::from(&frame[..]).freeze();
        p.server.inject_payload(p.now, h, payload.clone());
        payloads.push(payload);
    }
    assert_eq!(closed_with(&p.server, h), None);
    assert_eq!(pinned(&payloads), 0);
}

/// RFC 9000 §5.1.2, §9.5: a client that keeps moving to new addresses, giving the server a new
/// connection ID before each move and acknowledging nothing. Each move makes the server take a spare ID
/// for the new path and, later, owe the retirement of the one it left; with the owed retirements at
/// their bound (4 x the limit) it takes no more spares, as when the peer has none. Before, 7,820
/// retirements were owed after 8,000 moves.
#[test]
fn a_peer_moving_without_acknowledging_cannot_grow_the_retirements_owed() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let ch = p.client.table.iter().next().unwrap().0;
    let bound = p.server.table.get(h).unwrap().conn.retire_owed_limit() as usize;
    // The client issued sequence numbers 1 to 3 in the handshake.
    let mut seq = 4u64;
    let mut most_owed = 0;
    let mut moves = 0;
    for i in 0..2000u32 {
        // A hostile client is not held back by its congestion window: its PING goes as a probe.
        let client = &mut p.client.table.get_mut(ch).unwrap().conn;
        client.ping();
        client.spaces[SpaceId::Data.index()].probes = 1;
        p.client.after_conn(ch, true);
        let from: SocketAddr = format!("10.{}.{}.1:7000", i / 250, i % 250).parse().unwrap();
        for d in sends(&mut p.client, p.now) {
            deliver(&mut p.server, p.now, &from.to_string(), &d);
        }
        let conn = &p.server.table.get(h).unwrap().conn;
        if conn.path.remote == from {
            moves += 1;
        }
        if conn.peer_cids.len() < 2 {
            let mut id = seq.to_be_bytes();
            id[0] = 0xee;
            inject(
                &mut p,
                SpaceId::Data,
                &[Frame::NewConnectionId(NewConnectionId {
                    sequence: seq,
                    retire_prior_to: 0,
                    id: ConnectionId::new(&id).unwrap(),
                    reset_token: ResetToken([(seq % 251) as u8 + 1; 16]),
                })],
            );
            seq += 1;
        }
        // Everything the server sends is lost.
        sends(&mut p.server, p.now);
        p.now += Duration::from_millis(1);
        p.server.handle_timeout(p.now);
        p.client.handle_timeout(p.now);
        assert_eq!(closed_with(&p.server, h), None);
        most_owed = most_owed.max(p.server.table.get(h).unwrap().conn.retire_cids.len());
    }
    assert!(moves > 1000, "the server followed the client {moves} times");
    // The bound, and at most the two IDs an old path's challenge and an off-path answer hold.
    assert!(
        most_owed <= bound + 2,
        "{most_owed} RETIRE_CONNECTION_ID frames owed (bound {bound})"
    );
}

/// One-byte STREAM frames packed in order into large datagrams (60,000 bytes, as IP fragmentation
/// delivers them whatever the path MTU; a GRO batch takes the same path): each piece is a slice of its
/// datagram, copied once the datagram is done. Joined as they are copied, they cost entries as from
/// datagrams of usual sizes; before, each byte cost an entry and an allocation of its own (34,103
/// entries for 34,103 bytes here), tens of bytes of memory per byte of window.
#[test]
fn tiny_in_order_stream_frames_in_large_datagrams_are_joined() {
    let mut p = Pair::new(TransportConfig::default());
    let h = p.server_h.unwrap();
    let id = client_bidi(0);
    let mut offset = 0u64;
    let mut payloads = Vec::new();
    for _ in 0..4 {
        let mut buf = Vec::new();
        loop {
            let mut frame = Vec::new();
            Frame::Stream(StreamFrame {
                id,
                offset,
                fin: false,
                data: Bytes::from_static(b"x"),
            })
            .encode(&mut frame);
            if buf.len() + frame.len() > 60_000 {
                break;
            }
            buf.extend_from_slice(&frame);
            offset += 1;
        }
        let payload = BytesMut::from(&buf[..]).freeze();
        p.server.inject_payload(p.now, h, payload.clone());
        payloads.push(payload);
    }
    assert_eq!(closed_with(&p.server, h), None);
    assert_eq!(pinned(&payloads), 0, "the datagrams are let go of");
    let entries = p.server.table.get(h).unwrap().conn.streams.ready_entries();
    assert!(
        entries as u64 <= offset / 512 + 8,
        "{entries} entries for {offset} unread bytes"
    );
}
