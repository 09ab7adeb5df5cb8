//! RFC 9001 Appendix A end to end: the sample packets go through the whole receive path that a connection
//! uses (header parsing in two steps, header protection removal, payload decryption, frame decoding and the
//! transport parameters inside the ClientHello), and back through the send path byte for byte.

use bytes::Bytes;
use quicsand::crypto::{initial_keys, verify_retry_tag, DirectionalKeys, Keys, Secret, Suite};
use quicsand::wire::frame::{Frame, Frames};
use quicsand::wire::header::{Header, LongType, ProtectedHeader, VERSION_1, VERSION_2};
use quicsand::wire::packet_number::TruncatedPn;
use quicsand::wire::transport_params::TransportParameters;
use quicsand::wire::{ConnectionId, Reader};
use quicsand::Side;

include!("vectors/rfc9001_appendix_a.rs");

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_digit(16).unwrap() as u8)
        .collect();
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

/// Runs the receive path on one protected long-header packet and returns the header, the packet number
/// and the decrypted payload.
fn receive_long(
    packet: &mut [u8],
    keys: &DirectionalKeys,
    largest: Option<u64>,
) -> (ProtectedHeader, u64, Bytes) {
    let header = ProtectedHeader::decode(packet, 0).unwrap();
    assert_eq!(header.len(), packet.len(), "one packet fills the datagram");
    keys.header
        .unprotect(header.pn_offset().unwrap(), packet)
        .unwrap();
    let plain = header.finish(packet).unwrap();
    assert_eq!(plain.reserved_bits, 0);
    let pn = plain.pn.expand(largest);
    let len = keys.packet.open(pn, packet, plain.header_len).unwrap();
    let payload = Bytes::copy_from_slice(&packet[plain.header_len..plain.header_len + len]);
    (header, pn, payload)
}

/// Finds the quic_transport_parameters extension (type 0x39, RFC 9001 §8.2) in a ClientHello.
fn client_hello_transport_params(hello: &[u8]) -> &[u8] {
    let mut r = Reader::new(hello);
    assert_eq!(r.read_u8().unwrap(), 0x01, "ClientHello");
    r.skip(3 + 2 + 32).unwrap(); // length, legacy_version, random
    let sid = r.read_u8().unwrap();
    r.skip(usize::from(sid)).unwrap();
    let suites = r.read_u16().unwrap();
    r.skip(usize::from(suites)).unwrap();
    let comp = r.read_u8().unwrap();
    r.skip(usize::from(comp)).unwrap();
    let mut ext = Reader::new(
        r.read_slice(usize::from(r.clone().read_u16().unwrap()) + 2)
            .unwrap(),
    );
    ext.skip(2).unwrap();
    while !ext.is_empty() {
        let ty = ext.read_u16().unwrap();
        let len = ext.read_u16().unwrap();
        let body = ext.read_slice(usize::from(len)).unwrap();
        if ty == 0x39 {
            return body;
        }
    }
    panic!("no quic_transport_parameters extension");
}

#[test]
fn client_initial_receive_path() {
    let dcid = hex(DCID);
    let server = initial_keys(VERSION_1, &dcid, Side::Server).unwrap();
    let mut packet = hex(V1_CLIENT_PROTECTED);
    assert_eq!(
        packet.len(),
        1200,
        "RFC 9000 §14.1: a client Initial fills 1200 bytes"
    );

    let (header, pn, payload) = receive_long(&mut packet, &server.remote, None);
    assert_eq!(header.long_type(), Some(LongType::Initial));
    assert_eq!(&header.dcid()[..], &dcid[..]);
    assert!(header.scid().unwrap().is_empty());
    assert_eq!(pn, 2);

    let frames: Vec<Frame> = Frames::new(&payload).collect::<Result<_, _>>().unwrap();
    let [Frame::Crypto(crypto), Frame::Padding(padding)] = &frames[..] else {
        panic!("expected CRYPTO then PADDING, got {frames:?}")
    };
    assert_eq!(crypto.offset, 0);
    assert_eq!(crypto.data.len(), 241);
    assert_eq!(*padding, payload.len() - 245);
    assert_eq!(hex(CRYPTO_FRAME)[4..], crypto.data[..]);

    let params =
        TransportParameters::decode(Side::Client, client_hello_transport_params(&crypto.data)).unwrap();
    assert_eq!(
        params.initial_source_connection_id,
        Some(ConnectionId::new(&dcid).unwrap())
    );
    assert_eq!(params.max_idle_timeout.into_inner(), 30_000);
    assert_eq!(params.initial_max_data.into_inner(), (1 << 62) - 1);
    assert_eq!(params.initial_max_stream_data_bidi_local.into_inner(), 65_535);
    assert_eq!(params.initial_max_stream_data_bidi_remote.into_inner(), 65_535);
    assert_eq!(params.initial_max_stream_data_uni.into_inner(), 65_535);
    assert_eq!(params.initial_max_streams_bidi.into_inner(), 16);
    assert_eq!(params.initial_max_streams_uni.into_inner(), 16);
}

#[test]
fn client_initial_send_path() {
    let dcid = ConnectionId::new(&hex(DCID)).unwrap();
    let client = initial_keys(VERSION_1, &dcid, Side::Client).unwrap();
    let header = Header::Initial {
        version: VERSION_1,
        dcid,
        scid: ConnectionId::empty(),
        token: Bytes::new(),
    };

    // The RFC pads the CRYPTO frame with PADDING frames to make a 1200-byte datagram and sends packet
    // number 2 in a 4-byte field.
    let pn = TruncatedPn::truncate(2, 4);
    let mut packet = Vec::new();
    let enc = header.encode(pn, &mut packet);
    assert_eq!(packet.len(), enc.header_len);
    Frame::Crypto(
        match Frames::new(&Bytes::from(hex(CRYPTO_FRAME)))
            .next()
            .unwrap()
            .unwrap()
        {
            Frame::Crypto(c) => c,
            other => panic!("{other:?}"),
        },
    )
    .encode(&mut packet);
    let tag = client.local.packet.tag_len();
    packet.resize(1200 - tag, 0);
    packet.resize(1200, 0);
    enc.set_length(&mut packet, 1200).unwrap();
    assert_eq!(packet[..enc.header_len], hex(V1_CLIENT_HEADER)[..]);

    client.local.packet.seal(2, &mut packet, enc.header_len).unwrap();
    client.local.header.protect(enc.pn_offset, &mut packet).unwrap();
    assert_eq!(packet, hex(V1_CLIENT_PROTECTED));
}

#[test]
fn server_initial_both_paths() {
    let dcid = hex(DCID);
    let client = initial_keys(VERSION_1, &dcid, Side::Client).unwrap();
    let server = initial_keys(VERSION_1, &dcid, Side::Server).unwrap();

    let mut packet = hex(V1_SERVER_PROTECTED);
    let (header, pn, payload) = receive_long(&mut packet, &client.remote, None);
    assert_eq!(pn, 1);
    assert_eq!(header.scid().unwrap()[..], hex("f067a5502a4262b5")[..]);
    let frames: Vec<Frame> = Frames::new(&payload).collect::<Result<_, _>>().unwrap();
    let [Frame::Ack(ack), Frame::Crypto(crypto)] = &frames[..] else {
        panic!("{frames:?}")
    };
    assert_eq!(ack.iter().collect::<Vec<_>>(), vec![0..=0]);
    assert_eq!(crypto.data.len(), 90);
    assert_eq!(&payload[..], &hex(SERVER_PAYLOAD)[..]);

    // Send path: same header and payload, sealed with the server's keys, gives the RFC's bytes.
    let mut out = hex(V1_SERVER_HEADER);
    let header_len = out.len();
    out.extend_from_slice(&hex(SERVER_PAYLOAD));
    out.resize(out.len() + server.local.packet.tag_len(), 0);
    server.local.packet.seal(1, &mut out, header_len).unwrap();
    server.local.header.protect(header_len - 2, &mut out).unwrap();
    assert_eq!(out, hex(V1_SERVER_PROTECTED));
}

#[test]
fn retry_parses_and_verifies() {
    let packet = hex(V1_RETRY);
    let header = ProtectedHeader::decode(&packet, 0).unwrap();
    assert_eq!(header.long_type(), Some(LongType::Retry));
    assert_eq!(header.token(&packet), b"token");
    assert_eq!(header.scid().unwrap()[..], hex("f067a5502a4262b5")[..]);
    assert!(verify_retry_tag(VERSION_1, &hex(DCID), &packet));
    assert!(!verify_retry_tag(VERSION_1, &hex("8394c8f03e515709"), &packet));
}

#[test]
fn chacha20_short_header_receive_path() {
    let secret = Secret::new(
        Suite::ChaCha20Poly1305,
        &hex("9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b"),
    )
    .unwrap();
    let keys = Keys {
        local: DirectionalKeys::new(&secret),
        remote: DirectionalKeys::new(&secret),
    };
    let mut packet = hex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb");
    let header = ProtectedHeader::decode(&packet, 0).unwrap();
    assert!(matches!(header, ProtectedHeader::Short { .. }));
    keys.remote
        .header
        .unprotect(header.pn_offset().unwrap(), &mut packet)
        .unwrap();
    let plain = header.finish(&packet).unwrap();
    assert_eq!(plain.pn.encoded_len(), 3);
    assert!(!plain.key_phase);
    let pn = plain.pn.expand(Some(654_360_563));
    assert_eq!(pn, 654_360_564);
    let len = keys
        .remote
        .packet
        .open(pn, &mut packet, plain.header_len)
        .unwrap();
    let payload = Bytes::copy_from_slice(&packet[plain.header_len..plain.header_len + len]);
    assert_eq!(
        Frames::new(&payload).collect::<Result<Vec<_>, _>>().unwrap(),
        vec![Frame::Ping]
    );

    // And back: a short header with the same packet number, PING, sealed and protected.
    let mut out = Vec::new();
    let enc = Header::Short {
        spin: false,
        key_phase: false,
        dcid: ConnectionId::empty(),
    }
    .encode(TruncatedPn::truncate(pn, 3), &mut out);
    Frame::Ping.encode(&mut out);
    out.resize(out.len() + 16, 0);
    keys.local.packet.seal(pn, &mut out, enc.header_len).unwrap();
    keys.local.header.protect(enc.pn_offset, &mut out).unwrap();
    assert_eq!(out, hex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb"));
}

/// RFC 9369 Appendix A.2 and §3.2, both ways: the version 2 client Initial (first byte 0xd3: type bits
/// 0b01) parses as an Initial and opens with the version 2 keys; the same header and frames, encoded
/// and sealed for version 2, give the RFC's bytes.
#[test]
fn v2_client_initial_both_paths() {
    let dcid = ConnectionId::new(&hex(DCID)).unwrap();
    let server = initial_keys(VERSION_2, &dcid, Side::Server).unwrap();
    let mut packet = hex(V2_CLIENT_PROTECTED);
    assert_eq!(packet.len(), 1200);
    let (header, pn, payload) = receive_long(&mut packet, &server.remote, None);
    assert_eq!(header.version(), Some(VERSION_2));
    assert_eq!(header.long_type(), Some(LongType::Initial));
    assert_eq!(pn, 2);
    let frames: Vec<Frame> = Frames::new(&payload).collect::<Result<_, _>>().unwrap();
    let [Frame::Crypto(crypto), Frame::Padding(_)] = &frames[..] else {
        panic!("expected CRYPTO then PADDING, got {frames:?}")
    };
    assert_eq!(hex(CRYPTO_FRAME)[4..], crypto.data[..]);

    let client = initial_keys(VERSION_2, &dcid, Side::Client).unwrap();
    let header = Header::Initial {
        version: VERSION_2,
        dcid,
        scid: ConnectionId::empty(),
        token: Bytes::new(),
    };
    let mut out = Vec::new();
    let enc = header.encode(TruncatedPn::truncate(2, 4), &mut out);
    Frame::Crypto(crypto.clone()).encode(&mut out);
    out.resize(1200 - client.local.packet.tag_len(), 0);
    out.resize(1200, 0);
    enc.set_length(&mut out, 1200).unwrap();
    assert_eq!(out[..enc.header_len], hex(V2_CLIENT_HEADER)[..]);
    client.local.packet.seal(2, &mut out, enc.header_len).unwrap();
    client.local.header.protect(enc.pn_offset, &mut out).unwrap();
    assert_eq!(out, hex(V2_CLIENT_PROTECTED));
}

/// RFC 9369 Appendix A.3: the version 2 server Initial (0xd1) parses as an Initial and opens; the
/// version 2 Initial header encodes to the RFC's bytes.
#[test]
fn v2_server_initial_both_paths() {
    let dcid = hex(DCID);
    let client = initial_keys(VERSION_2, &dcid, Side::Client).unwrap();
    let mut packet = hex(V2_SERVER_PROTECTED);
    let (header, pn, payload) = receive_long(&mut packet, &client.remote, None);
    assert_eq!(header.long_type(), Some(LongType::Initial));
    assert_eq!(pn, 1);
    assert_eq!(&payload[..], &hex(SERVER_PAYLOAD)[..]);
    let mut out = Vec::new();
    let enc = Header::Initial {
        version: VERSION_2,
        dcid: ConnectionId::empty(),
        scid: ConnectionId::new(&hex("f067a5502a4262b5")).unwrap(),
        token: Bytes::new(),
    }
    .encode(TruncatedPn::truncate(1, 2), &mut out);
    out.extend_from_slice(&hex(SERVER_PAYLOAD));
    out.resize(out.len() + 16, 0);
    let len = out.len();
    enc.set_length(&mut out, len).unwrap();
    assert_eq!(out[..enc.header_len], hex(V2_SERVER_HEADER)[..]);
}

/// RFC 9369 Appendix A.4: the version 2 Retry (first byte 0xcf: type bits 0b00, which are an Initial's
/// in version 1) parses as a Retry, and its tag verifies with the version 2 key only.
#[test]
fn v2_retry_parses_and_verifies() {
    let packet = hex(V2_RETRY);
    assert_eq!((packet[0] >> 4) & 0x03, 0b00);
    let header = ProtectedHeader::decode(&packet, 0).unwrap();
    assert_eq!(header.version(), Some(VERSION_2));
    assert_eq!(header.long_type(), Some(LongType::Retry));
    assert_eq!(header.token(&packet), b"token");
    assert_eq!(header.scid().unwrap()[..], hex("f067a5502a4262b5")[..]);
    assert!(verify_retry_tag(VERSION_2, &hex(DCID), &packet));
    assert!(!verify_retry_tag(VERSION_1, &hex(DCID), &packet));
    // The same first byte under version 1 is an Initial: the mapping is the version's.
    let mut v1 = packet.clone();
    v1[1..5].copy_from_slice(&VERSION_1.to_be_bytes());
    let as_v1 = ProtectedHeader::decode(&v1, 0).map(|h| h.long_type());
    assert_ne!(as_v1, Ok(Some(LongType::Retry)));
}
