use super::*;
use proptest::prelude::*;

fn cid(b: &[u8]) -> ConnectionId {
    ConnectionId::new(b).unwrap()
}

fn arb_cid() -> impl Strategy<Value = ConnectionId> {
    prop::collection::vec(any::<u8>(), 0..=20).prop_map(|v| cid(&v))
}

fn arb_pn() -> impl Strategy<Value = TruncatedPn> {
    (any::<u32>(), 1usize..=4).prop_map(|(v, l)| TruncatedPn::truncate(u64::from(v), l))
}

fn arb_header() -> impl Strategy<Value = Header> {
    let version = prop::sample::select(SUPPORTED_VERSIONS.to_vec());
    prop_oneof![
        (
            version.clone(),
            arb_cid(),
            arb_cid(),
            prop::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(version, dcid, scid, token)| Header::Initial {
                version,
                dcid,
                scid,
                token: token.into()
            }),
        (version.clone(), arb_cid(), arb_cid()).prop_map(|(version, dcid, scid)| Header::ZeroRtt {
            version,
            dcid,
            scid
        }),
        (version, arb_cid(), arb_cid()).prop_map(|(version, dcid, scid)| Header::Handshake {
            version,
            dcid,
            scid
        }),
        (any::<bool>(), any::<bool>(), arb_cid()).prop_map(|(spin, key_phase, dcid)| Header::Short {
            spin,
            key_phase,
            dcid
        }),
    ]
}

/// Builds a whole packet: header, then `payload_len` bytes of payload.
fn build(header: &Header, pn: TruncatedPn, payload_len: usize) -> (Vec<u8>, PartialEncode) {
    let mut buf = Vec::new();
    let enc = header.encode(pn, &mut buf);
    assert_eq!(buf.len(), header.encoded_len(pn));
    assert_eq!(enc.header_len, buf.len());
    buf.resize(buf.len() + payload_len, 0xab);
    let len = buf.len();
    enc.set_length(&mut buf, len).unwrap();
    (buf, enc)
}

proptest! {
    #[test]
    fn header_round_trip(header in arb_header(), pn in arb_pn(), payload_len in 0usize..300) {
        let (packet, enc) = build(&header, pn, payload_len);
        let parsed = ProtectedHeader::decode(&packet, header.dcid().len()).unwrap();
        prop_assert_eq!(parsed.len(), packet.len());
        prop_assert_eq!(parsed.pn_offset(), Some(enc.pn_offset));
        prop_assert_eq!(parsed.dcid(), header.dcid());
        let plain = parsed.finish(&packet).unwrap();
        prop_assert_eq!(plain.pn, pn);
        prop_assert_eq!(plain.header_len, enc.header_len);
        prop_assert_eq!(plain.reserved_bits, 0);
        match (&header, &parsed) {
            (Header::Initial { version, scid, token, .. }, ProtectedHeader::Long { ty, version: v, scid: s, .. }) => {
                prop_assert_eq!(*ty, LongType::Initial);
                prop_assert_eq!((version, scid), (v, s));
                prop_assert_eq!(parsed.token(&packet), &token[..]);
            }
            (Header::ZeroRtt { version, scid, .. }, ProtectedHeader::Long { ty, version: v, scid: s, .. }) => {
                prop_assert_eq!(*ty, LongType::ZeroRtt);
                prop_assert_eq!((version, scid), (v, s));
            }
            (Header::Handshake { version, scid, .. }, ProtectedHeader::Long { ty, version: v, scid: s, .. }) => {
                prop_assert_eq!(*ty, LongType::Handshake);
                prop_assert_eq!((version, scid), (v, s));
            }
            (Header::Short { spin, key_phase, .. }, ProtectedHeader::Short { .. }) => {
                prop_assert_eq!(parsed.spin(), *spin);
                prop_assert_eq!(plain.key_phase, *key_phase);
            }
            _ => prop_assert!(false, "wrong header kind {:?} for {:?}", parsed, header),
        }
    }

    #[test]
    fn coalesced_packets_split(
        version in prop::sample::select(SUPPORTED_VERSIONS.to_vec()),
        dcid in arb_cid(),
        scid in arb_cid(),
        lens in prop::collection::vec(0usize..200, 1..4),
        short_tail in any::<bool>(),
    ) {
        let mut datagram = Vec::new();
        let mut expected = Vec::new();
        for (i, len) in lens.iter().enumerate() {
            let header = if i % 2 == 0 {
                Header::Initial { version, dcid, scid, token: Bytes::new() }
            } else {
                Header::Handshake { version, dcid, scid }
            };
            let (p, _) = build(&header, TruncatedPn::truncate(i as u64, 1), *len);
            expected.push((datagram.len(), p.len()));
            datagram.extend_from_slice(&p);
        }
        if short_tail {
            let (p, _) = build(&Header::Short { spin: false, key_phase: false, dcid }, TruncatedPn::truncate(9, 2), 30);
            expected.push((datagram.len(), p.len()));
            datagram.extend_from_slice(&p);
        }
        let got: Vec<_> = Coalesced::new(&datagram, dcid.len()).map(|r| r.map(|(at, h)| (at, h.len()))).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn retry_round_trip(version in prop::sample::select(SUPPORTED_VERSIONS.to_vec()), dcid in arb_cid(), scid in arb_cid(),
                        token in prop::collection::vec(any::<u8>(), 0..64), tag in any::<[u8; 16]>(), unused in any::<u8>()) {
        let retry = RetryHeader { version, dcid, scid, token: token.clone().into() };
        let mut buf = Vec::new();
        retry.encode(unused, &mut buf);
        prop_assert_eq!(buf.len(), retry.encoded_len());
        buf.extend_from_slice(&tag);
        let parsed = ProtectedHeader::decode(&buf, 0).unwrap();
        prop_assert_eq!(parsed.long_type(), Some(LongType::Retry));
        prop_assert_eq!(parsed.token(&buf), &token[..]);
        prop_assert_eq!(parsed.scid(), Some(&scid));
        match parsed {
            ProtectedHeader::Retry { tag: t, len, .. } => {
                prop_assert_eq!(t, tag);
                prop_assert_eq!(len, buf.len());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn version_negotiation_round_trip(dcid in prop::collection::vec(any::<u8>(), 0..=20), scid in prop::collection::vec(any::<u8>(), 0..=20),
                                      versions in prop::collection::vec(any::<u32>(), 1..8), unused in any::<u8>()) {
        let mut buf = Vec::new();
        encode_version_negotiation(unused, &dcid, &scid, &versions, &mut buf);
        let parsed = ProtectedHeader::decode(&buf, 0).unwrap();
        // The answer swaps the connection IDs of the packet it answers.
        prop_assert_eq!(&parsed.dcid()[..], &scid[..]);
        prop_assert_eq!(&parsed.scid().unwrap()[..], &dcid[..]);
        prop_assert_eq!(parsed.versions(&buf).collect::<Vec<_>>(), versions);
        prop_assert!(parsed.finish(&buf).is_err());
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn mutated_packets_never_panic(
        header in arb_header(),
        pn in arb_pn(),
        payload_len in 0usize..64,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let (mut packet, _) = build(&header, pn, payload_len);
        for (at, byte) in edits {
            let i = at.index(packet.len());
            packet[i] = byte;
        }
        packet.truncate(cut.index(packet.len() + 1));
        for (at, header) in Coalesced::new(&packet, 8).flatten() {
            prop_assert!(at + header.len() <= packet.len());
            let _ = header.finish(&packet[at..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), cid_len in 0usize..=20) {
        for (at, header) in Coalesced::new(&bytes, cid_len).flatten() {
            let packet = &bytes[at..];
            prop_assert!(header.len() <= packet.len());
            let _ = header.finish(packet);
            let _ = header.token(packet);
            let _ = header.versions(packet).count();
        }
        let _ = InvariantHeader::decode(&bytes, cid_len);
    }
}

#[test]
fn rejects_bad_long_headers() {
    let dcid = cid(&[1; 8]);
    let header = Header::Handshake {
        version: VERSION_1,
        dcid,
        scid: dcid,
    };
    let (mut packet, _) = build(&header, TruncatedPn::truncate(0, 1), 20);

    // Truncated: Length now runs past the end.
    let short = &packet[..packet.len() - 1];
    assert!(matches!(
        ProtectedHeader::decode(short, 8),
        Err(HeaderError::Malformed(_))
    ));

    // Unknown version: the caller gets the version to answer with Version Negotiation.
    packet[1..5].copy_from_slice(&0x1a2a_3a4au32.to_be_bytes());
    assert_eq!(
        ProtectedHeader::decode(&packet, 8),
        Err(HeaderError::UnsupportedVersion(0x1a2a_3a4a))
    );
    let inv = InvariantHeader::decode(&packet, 8).unwrap();
    assert_eq!(
        inv,
        InvariantHeader::Long {
            version: 0x1a2a_3a4a,
            dcid: &[1; 8],
            scid: &[1; 8]
        }
    );
    packet[1..5].copy_from_slice(&VERSION_1.to_be_bytes());

    // RFC 9000 §17.2: fixed bit zero is discarded.
    packet[0] &= !FIXED_BIT;
    assert!(ProtectedHeader::decode(&packet, 8).is_err());
    packet[0] |= FIXED_BIT;

    // RFC 9000 §17.2: a v1 DCID of 21 bytes is dropped, though the invariants allow it.
    let mut long_cid = vec![0xc0 | FIXED_BIT, 0, 0, 0, 1, 21];
    long_cid.extend_from_slice(&[7; 21]);
    long_cid.extend_from_slice(&[0, 0, 1, 0]);
    assert!(ProtectedHeader::decode(&long_cid, 8).is_err());
    long_cid[1..5].copy_from_slice(&[0xfa, 0xfa, 0xfa, 0xfa]);
    assert_eq!(InvariantHeader::decode(&long_cid, 8).unwrap().dcid(), &[7; 21]);
}

#[test]
fn version_two_permutes_type_bits() {
    // RFC 9369 §3.2: Initial 0b01, 0-RTT 0b10, Handshake 0b11, Retry 0b00.
    assert_eq!(LongType::Initial.to_bits(VERSION_2), 1);
    assert_eq!(LongType::ZeroRtt.to_bits(VERSION_2), 2);
    assert_eq!(LongType::Handshake.to_bits(VERSION_2), 3);
    assert_eq!(LongType::Retry.to_bits(VERSION_2), 0);
    for ty in [
        LongType::Initial,
        LongType::ZeroRtt,
        LongType::Handshake,
        LongType::Retry,
    ] {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(LongType::from_bits(v, ty.to_bits(v)), ty);
        }
    }
}

#[test]
fn coalesced_stops_at_a_different_dcid_and_after_errors() {
    let a = cid(&[1; 4]);
    let b = cid(&[2; 4]);
    let (p1, _) = build(
        &Header::Handshake {
            version: VERSION_1,
            dcid: a,
            scid: a,
        },
        TruncatedPn::truncate(0, 1),
        10,
    );
    let (p2, _) = build(
        &Header::Handshake {
            version: VERSION_1,
            dcid: b,
            scid: a,
        },
        TruncatedPn::truncate(0, 1),
        10,
    );
    let datagram = [p1.clone(), p2].concat();
    assert_eq!(Coalesced::new(&datagram, 4).count(), 1);

    let garbage = [p1, vec![0xc0]].concat();
    let items: Vec<_> = Coalesced::new(&garbage, 4).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok() && items[1].is_err());
}

#[test]
fn set_length_refuses_what_does_not_fit() {
    let header = Header::Handshake {
        version: VERSION_1,
        dcid: ConnectionId::empty(),
        scid: ConnectionId::empty(),
    };
    let (mut packet, enc) = build(&header, TruncatedPn::truncate(0, 1), 0);
    assert!(enc.set_length(&mut packet, 20_000).is_err());
    assert!(enc.set_length(&mut packet[..3], 100).is_err());
}
