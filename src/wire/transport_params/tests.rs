use super::*;
use crate::wire::TransportErrorCode;
use proptest::prelude::*;

/// One (identifier, length, value) triple with the length taken from `value`.
fn tlv(id: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    VarInt::from_u64(id).unwrap().encode(&mut out);
    VarInt::try_from(value.len()).unwrap().encode(&mut out);
    out.extend_from_slice(value);
    out
}

/// An integer parameter in its shortest encoding.
fn int_tlv(id: u64, v: u64) -> Vec<u8> {
    let mut value = Vec::new();
    VarInt::from_u64(v).unwrap().encode(&mut value);
    tlv(id, &value)
}

fn preferred_address(cid: &[u8]) -> PreferredAddress {
    PreferredAddress {
        ipv4: Some(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 4433)),
        ipv6: None,
        connection_id: ConnectionId::new(cid).unwrap(),
        stateless_reset_token: ResetToken([0xab; 16]),
    }
}

fn encode_preferred(addr: &PreferredAddress) -> Vec<u8> {
    let mut value = Vec::new();
    addr.encode(&mut value);
    assert_eq!(value.len(), addr.encoded_len());
    value
}

#[track_caller]
fn assert_rejected(sender: Side, bytes: &[u8], reason_contains: &str) {
    let err = TransportParameters::decode(sender, bytes).expect_err("decode should fail");
    assert_eq!(err.code, TransportErrorCode::TRANSPORT_PARAMETER_ERROR, "{err}");
    assert!(
        err.reason.contains(reason_contains),
        "reason {:?} lacks {reason_contains:?}",
        err.reason
    );
}

#[track_caller]
fn assert_accepted(sender: Side, bytes: &[u8]) -> TransportParameters {
    TransportParameters::decode(sender, bytes).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

/// The check the "never panics" properties run; a fuzz target can call the same.
fn decode_both_sides(bytes: &[u8]) {
    crate::fuzzing::check_transport_params(bytes);
}

#[test]
fn defaults_match_rfc9000_section_18_2() {
    let d = TransportParameters::default();
    assert_eq!(d.max_udp_payload_size.into_inner(), 65527);
    assert_eq!(d.ack_delay_exponent.into_inner(), 3);
    assert_eq!(d.max_ack_delay.into_inner(), 25);
    assert_eq!(d.active_connection_id_limit.into_inner(), 2);
    assert_eq!(d.max_idle_timeout, VarInt::ZERO);
    assert_eq!(d.initial_max_data, VarInt::ZERO);
    assert_eq!(d.initial_max_streams_bidi, VarInt::ZERO);
    assert!(!d.disable_active_migration);
    assert!(d.preferred_address.is_none() && d.max_datagram_frame_size.is_none());
    assert!(d.initial_source_connection_id.is_none() && d.stateless_reset_token.is_none());
    // Defaults are not written, and an empty sequence decodes to the defaults.
    assert_eq!(d.encoded_len(), 0);
    let mut out = Vec::new();
    d.encode(&mut out);
    assert!(out.is_empty());
    assert_eq!(assert_accepted(Side::Client, &[]), d);
    assert_eq!(assert_accepted(Side::Server, &[]), d);
}

#[test]
fn explicit_default_values_decode_to_defaults() {
    let mut bytes = int_tlv(id::MAX_UDP_PAYLOAD_SIZE, 65527);
    bytes.extend(int_tlv(id::ACK_DELAY_EXPONENT, 3));
    bytes.extend(int_tlv(id::MAX_ACK_DELAY, 25));
    bytes.extend(int_tlv(id::ACTIVE_CONNECTION_ID_LIMIT, 2));
    assert_eq!(
        assert_accepted(Side::Client, &bytes),
        TransportParameters::default()
    );
}

#[test]
fn values_at_the_limits_are_accepted() {
    let mut bytes = int_tlv(id::MAX_UDP_PAYLOAD_SIZE, 1200);
    bytes.extend(int_tlv(id::ACK_DELAY_EXPONENT, 20));
    bytes.extend(int_tlv(id::MAX_ACK_DELAY, (1 << 14) - 1));
    bytes.extend(int_tlv(id::INITIAL_MAX_STREAMS_BIDI, 1 << 60));
    bytes.extend(int_tlv(id::INITIAL_MAX_STREAMS_UNI, 1 << 60));
    bytes.extend(int_tlv(id::MAX_DATAGRAM_FRAME_SIZE, 0));
    bytes.extend(tlv(id::INITIAL_SOURCE_CONNECTION_ID, &[7; 20]));
    let p = assert_accepted(Side::Client, &bytes);
    assert_eq!(p.max_udp_payload_size.into_inner(), 1200);
    assert_eq!(p.ack_delay_exponent.into_inner(), 20);
    assert_eq!(p.max_ack_delay.into_inner(), (1 << 14) - 1);
    assert_eq!(p.initial_max_streams_bidi.into_inner(), 1 << 60);
    assert_eq!(p.initial_max_streams_uni.into_inner(), 1 << 60);
    assert_eq!(p.max_datagram_frame_size, Some(VarInt::ZERO));
    assert_eq!(p.initial_source_connection_id, ConnectionId::new(&[7; 20]));
}

#[test]
fn rejects_small_max_udp_payload_size() {
    assert_rejected(
        Side::Client,
        &int_tlv(id::MAX_UDP_PAYLOAD_SIZE, 1199),
        "max_udp_payload_size",
    );
    assert_rejected(Side::Server, &int_tlv(id::MAX_UDP_PAYLOAD_SIZE, 0), "below 1200");
}

#[test]
fn rejects_large_ack_delay_exponent() {
    assert_rejected(
        Side::Client,
        &int_tlv(id::ACK_DELAY_EXPONENT, 21),
        "ack_delay_exponent",
    );
}

#[test]
fn rejects_large_max_ack_delay() {
    assert_rejected(
        Side::Client,
        &int_tlv(id::MAX_ACK_DELAY, 1 << 14),
        "max_ack_delay",
    );
}

#[test]
fn rejects_small_active_connection_id_limit() {
    for v in [0, 1] {
        assert_rejected(
            Side::Server,
            &int_tlv(id::ACTIVE_CONNECTION_ID_LIMIT, v),
            "below 2",
        );
    }
}

#[test]
fn rejects_stream_counts_above_2_pow_60() {
    assert_rejected(
        Side::Client,
        &int_tlv(id::INITIAL_MAX_STREAMS_BIDI, (1 << 60) + 1),
        "bidi",
    );
    assert_rejected(
        Side::Client,
        &int_tlv(id::INITIAL_MAX_STREAMS_UNI, VarInt::MAX.into_inner()),
        "uni",
    );
}

#[test]
fn rejects_connection_ids_longer_than_20_bytes() {
    for id in [
        id::ORIGINAL_DESTINATION_CONNECTION_ID,
        id::INITIAL_SOURCE_CONNECTION_ID,
        id::RETRY_SOURCE_CONNECTION_ID,
    ] {
        assert_rejected(Side::Server, &tlv(id, &[1; 21]), "longer than 20 bytes");
        assert_eq!(
            assert_accepted(Side::Server, &tlv(id, &[])).encoded_len(),
            2,
            "empty CIDs are fine"
        );
    }
}

#[test]
fn rejects_reset_token_of_wrong_length() {
    for len in [0, 15, 17] {
        assert_rejected(
            Side::Server,
            &tlv(id::STATELESS_RESET_TOKEN, &vec![0; len]),
            "16 bytes",
        );
    }
    let p = assert_accepted(Side::Server, &tlv(id::STATELESS_RESET_TOKEN, &[9; 16]));
    assert_eq!(p.stateless_reset_token, Some(ResetToken([9; 16])));
}

#[test]
fn rejects_non_empty_disable_active_migration() {
    assert_rejected(
        Side::Client,
        &tlv(id::DISABLE_ACTIVE_MIGRATION, &[0]),
        "not empty",
    );
    assert!(assert_accepted(Side::Client, &tlv(id::DISABLE_ACTIVE_MIGRATION, &[])).disable_active_migration);
}

#[test]
fn rejects_integers_that_do_not_fill_their_length() {
    // Length 4, but the varint 0x4123 takes 2 bytes.
    assert_rejected(
        Side::Client,
        &tlv(id::INITIAL_MAX_DATA, &[0x41, 0x23, 0, 0]),
        "does not fill",
    );
    // Length 1, but the varint announces 2 bytes.
    assert_rejected(
        Side::Client,
        &tlv(id::INITIAL_MAX_DATA, &[0x41]),
        "shorter than its integer",
    );
    // Length 0.
    assert_rejected(
        Side::Client,
        &tlv(id::MAX_IDLE_TIMEOUT, &[]),
        "shorter than its integer",
    );
    // A longer-than-needed encoding that fills its length is fine (RFC 9000 §16).
    let p = assert_accepted(Side::Client, &tlv(id::INITIAL_MAX_DATA, &[0x80, 0, 0x41, 0x23]));
    assert_eq!(p.initial_max_data.into_inner(), 0x4123);
}

#[test]
fn rejects_truncated_sequences() {
    // Identifier cut short.
    assert_rejected(Side::Client, &[0x40], "identifier");
    // Length missing, then cut short.
    assert_rejected(Side::Client, &[0x04], "length");
    assert_rejected(Side::Client, &[0x04, 0x80, 0x00], "length");
    // Value shorter than the length says, including a length no input could hold.
    assert_rejected(Side::Client, &[0x04, 0x02, 0x01], "exceeds the input");
    assert_rejected(
        Side::Client,
        &[0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        "exceeds",
    );
    // The same holds for unknown parameters, which are skipped only when well framed.
    assert_rejected(Side::Client, &[0x3f, 0x05, 0x01], "exceeds the input");
}

#[test]
fn rejects_malformed_preferred_address() {
    let good = encode_preferred(&preferred_address(&[1, 2, 3, 4]));
    let p = assert_accepted(Side::Server, &tlv(id::PREFERRED_ADDRESS, &good));
    assert_eq!(p.preferred_address, Some(preferred_address(&[1, 2, 3, 4])));

    // RFC 9000 §18.2: a zero-length connection ID is a TRANSPORT_PARAMETER_ERROR.
    let empty = encode_preferred(&PreferredAddress {
        connection_id: ConnectionId::empty(),
        ..p_addr()
    });
    assert_rejected(
        Side::Server,
        &tlv(id::PREFERRED_ADDRESS, &empty),
        "zero-length connection ID",
    );

    // A CID length over 20.
    let mut long = good.clone();
    long[PreferredAddress::FIXED_LEN - 1] = 21;
    long.extend([0; 17]);
    assert_rejected(
        Side::Server,
        &tlv(id::PREFERRED_ADDRESS, &long),
        "longer than 20 bytes",
    );

    // Truncated anywhere, and with a trailing byte.
    for cut in 0..good.len() {
        assert_rejected(
            Side::Server,
            &tlv(id::PREFERRED_ADDRESS, &good[..cut]),
            "preferred_address",
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_rejected(Side::Server, &tlv(id::PREFERRED_ADDRESS, &trailing), "trailing");
}

fn p_addr() -> PreferredAddress {
    preferred_address(&[1, 2, 3, 4])
}

#[test]
fn preferred_address_families_may_be_absent() {
    let neither = PreferredAddress {
        ipv4: None,
        ipv6: None,
        ..p_addr()
    };
    let bytes = encode_preferred(&neither);
    assert!(
        bytes[..24].iter().all(|&b| b == 0),
        "absent families are all-zero address and port"
    );
    let both = PreferredAddress {
        ipv4: Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443)),
        ipv6: Some(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0)),
        ..p_addr()
    };
    for addr in [neither, both] {
        let p = assert_accepted(
            Side::Server,
            &tlv(id::PREFERRED_ADDRESS, &encode_preferred(&addr)),
        );
        assert_eq!(p.preferred_address, Some(addr));
    }
}

#[test]
fn rejects_preferred_address_with_zero_length_server_cid() {
    // RFC 9000 §18.2: a server that chose a zero-length connection ID MUST NOT send a preferred address.
    let mut bytes = tlv(id::INITIAL_SOURCE_CONNECTION_ID, &[]);
    bytes.extend(tlv(id::PREFERRED_ADDRESS, &encode_preferred(&p_addr())));
    assert_rejected(Side::Server, &bytes, "zero-length connection ID");
}

#[test]
fn rejects_server_only_parameters_from_a_client() {
    let cases = [
        tlv(id::ORIGINAL_DESTINATION_CONNECTION_ID, &[1, 2, 3, 4]),
        tlv(id::STATELESS_RESET_TOKEN, &[0; 16]),
        tlv(id::PREFERRED_ADDRESS, &encode_preferred(&p_addr())),
        tlv(id::RETRY_SOURCE_CONNECTION_ID, &[5, 6]),
    ];
    for bytes in &cases {
        assert_rejected(Side::Client, bytes, "server-only");
        assert_accepted(Side::Server, bytes);
    }
}

/// A valid value for every known parameter.
fn valid_known_params() -> Vec<Vec<u8>> {
    vec![
        tlv(id::ORIGINAL_DESTINATION_CONNECTION_ID, &[1]),
        int_tlv(id::MAX_IDLE_TIMEOUT, 30_000),
        tlv(id::STATELESS_RESET_TOKEN, &[0; 16]),
        int_tlv(id::MAX_UDP_PAYLOAD_SIZE, 1500),
        int_tlv(id::INITIAL_MAX_DATA, 1 << 20),
        int_tlv(id::INITIAL_MAX_STREAM_DATA_BIDI_LOCAL, 1 << 16),
        int_tlv(id::INITIAL_MAX_STREAM_DATA_BIDI_REMOTE, 1 << 16),
        int_tlv(id::INITIAL_MAX_STREAM_DATA_UNI, 1 << 16),
        int_tlv(id::INITIAL_MAX_STREAMS_BIDI, 100),
        int_tlv(id::INITIAL_MAX_STREAMS_UNI, 100),
        int_tlv(id::ACK_DELAY_EXPONENT, 2),
        int_tlv(id::MAX_ACK_DELAY, 10),
        tlv(id::DISABLE_ACTIVE_MIGRATION, &[]),
        tlv(id::PREFERRED_ADDRESS, &encode_preferred(&p_addr())),
        int_tlv(id::ACTIVE_CONNECTION_ID_LIMIT, 8),
        tlv(id::INITIAL_SOURCE_CONNECTION_ID, &[2, 2]),
        tlv(id::RETRY_SOURCE_CONNECTION_ID, &[3, 3, 3]),
        int_tlv(id::MAX_DATAGRAM_FRAME_SIZE, 65535),
    ]
}

#[test]
fn rejects_duplicates_of_every_known_parameter() {
    let all: Vec<u8> = valid_known_params().concat();
    assert_accepted(Side::Server, &all);
    for param in valid_known_params() {
        // RFC 9000 §7.4: duplicates are a TRANSPORT_PARAMETER_ERROR, even far apart.
        let mut bytes = param.clone();
        bytes.extend(int_tlv(0x1b, 0));
        bytes.extend(&param);
        assert_rejected(Side::Server, &bytes, "duplicate");
    }
}

#[test]
fn ignores_unknown_and_grease_parameters() {
    let mut bytes = Vec::new();
    for n in [0u32, 1, 1000, u32::MAX] {
        let grease = TransportParameters::grease_id(n).into_inner();
        assert!(TransportParameters::is_reserved_id(grease));
        bytes.extend(tlv(grease, b"arbitrary"));
    }
    // Unknown identifiers (including the largest varint) are skipped.
    for id in [0x11, 0x1f, 0x21, 0xff02_de1a, VarInt::MAX.into_inner()] {
        bytes.extend(tlv(id, &[0xff, 0xff, 0xff]));
    }
    bytes.extend(tlv(31 * 2 + 27, &[]));
    bytes.extend(int_tlv(id::INITIAL_MAX_DATA, 1234));
    let p = assert_accepted(Side::Client, &bytes);
    assert_eq!(
        p,
        TransportParameters {
            initial_max_data: VarInt::from_u32(1234),
            ..Default::default()
        }
    );
    assert!(!TransportParameters::is_reserved_id(0x20));
    assert!(TransportParameters::is_reserved_id(27) && TransportParameters::is_reserved_id(58));
}

/// RFC 9000 §7.4: "An endpoint SHOULD treat receipt of duplicate transport parameters as a connection
/// error of type TRANSPORT_PARAMETER_ERROR": unknown and reserved identifiers too, whose values §7.4.2
/// and §18.1 have us ignore, not their repetition. Before, a repeated unknown or GREASE identifier was
/// accepted.
#[test]
fn rejects_duplicates_of_unknown_and_grease_parameters() {
    let grease = TransportParameters::grease_id(7).into_inner();
    for id in [0x11, 0x1b, 0x21, 0xff02_de1a, grease, VarInt::MAX.into_inner()] {
        let mut bytes = tlv(id, &[1]);
        bytes.extend(int_tlv(id::INITIAL_MAX_DATA, 1234));
        bytes.extend(tlv(0x4242, &[]));
        bytes.extend(tlv(id, &[2, 3]));
        assert_rejected(Side::Client, &bytes, "duplicate");
        assert_rejected(Side::Server, &bytes, "duplicate");
    }
}

/// The record of unknown identifiers seen is bounded (a fixed-size array, a fixed number of comparisons
/// per parameter): as many distinct unknown parameters as fit in a TLS extension are all accepted, and a
/// repeat of one of the first of them is still caught after all of them.
#[test]
fn many_distinct_unknown_parameters_are_accepted_in_bounded_work() {
    let mut bytes = Vec::new();
    // 0x21..0x40 in one byte, then two-byte identifiers: about 16000 parameters in 64 KiB.
    let mut id = 0x21u64;
    while bytes.len() < 65_000 {
        if !TransportParameters::is_reserved_id(id) {
            bytes.extend(tlv(id, &[]));
        }
        id += 1;
    }
    assert_accepted(Side::Client, &bytes);
    bytes.extend(tlv(0x21, &[]));
    assert_rejected(Side::Client, &bytes, "duplicate");
}

#[test]
fn grease_parameter_is_written() {
    let p = TransportParameters {
        grease: Some((TransportParameters::grease_id(3), Bytes::from_static(b"xyz"))),
        ..Default::default()
    };
    let mut out = Vec::new();
    p.encode(&mut out);
    assert_eq!(out, tlv(31 * 3 + 27, b"xyz"));
    assert_eq!(out.len(), p.encoded_len());
    assert_eq!(
        assert_accepted(Side::Client, &out),
        TransportParameters::default()
    );
}

fn varint() -> impl Strategy<Value = VarInt> {
    prop_oneof![
        0..1u64 << 6,
        0..1u64 << 14,
        0..1u64 << 30,
        0..=VarInt::MAX.into_inner()
    ]
    .prop_map(|v| VarInt::from_u64(v).unwrap())
}

fn varint_in(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = VarInt> {
    range.prop_map(|v| VarInt::from_u64(v).unwrap())
}

fn cid(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = ConnectionId> {
    prop::collection::vec(any::<u8>(), len).prop_map(|b| ConnectionId::new(&b).unwrap())
}

fn token() -> impl Strategy<Value = ResetToken> {
    any::<[u8; 16]>().prop_map(ResetToken)
}

fn preferred() -> impl Strategy<Value = PreferredAddress> {
    // A present family never uses port 0 with the unspecified address, which means "absent".
    let v4 = prop::option::of((any::<[u8; 4]>(), 1..=u16::MAX))
        .prop_map(|a| a.map(|(ip, port)| SocketAddrV4::new(ip.into(), port)));
    let v6 = prop::option::of((any::<[u8; 16]>(), 1..=u16::MAX))
        .prop_map(|a| a.map(|(ip, port)| SocketAddrV6::new(ip.into(), port, 0, 0)));
    (v4, v6, cid(1..=20), token()).prop_map(|(ipv4, ipv6, connection_id, stateless_reset_token)| {
        PreferredAddress {
            ipv4,
            ipv6,
            connection_id,
            stateless_reset_token,
        }
    })
}

fn params() -> impl Strategy<Value = TransportParameters> {
    let cids = (
        prop::option::of(cid(0..=20)),
        prop::option::of(cid(0..=20)),
        prop::option::of(cid(0..=20)),
        prop::option::of(token()),
        prop::option::of(preferred()),
    );
    let flow = (
        varint(),
        varint(),
        varint(),
        varint(),
        varint_in(0..=1 << 60),
        varint_in(0..=1 << 60),
    );
    let misc = (
        varint(),
        varint_in(1200..=VarInt::MAX.into_inner()),
        varint_in(0..=20),
        varint_in(0..=(1 << 14) - 1),
        any::<bool>(),
        varint_in(2..=VarInt::MAX.into_inner()),
        prop::option::of(varint()),
        prop::option::of((0..1000u32, prop::collection::vec(any::<u8>(), 0..16))),
    );
    (cids, flow, misc).prop_map(|(cids, flow, misc)| {
        let (odcid, iscid, rscid, stateless_reset_token, preferred_address) = cids;
        let (max_data, bidi_local, bidi_remote, uni, streams_bidi, streams_uni) = flow;
        let (idle, udp, ade, mad, dam, acil, dgram, grease) = misc;
        // RFC 9000 §18.2: a preferred address needs a non-empty server connection ID.
        let iscid = iscid.filter(|c| preferred_address.is_none() || !c.is_empty());
        TransportParameters {
            original_destination_connection_id: odcid,
            max_idle_timeout: idle,
            stateless_reset_token,
            max_udp_payload_size: udp,
            initial_max_data: max_data,
            initial_max_stream_data_bidi_local: bidi_local,
            initial_max_stream_data_bidi_remote: bidi_remote,
            initial_max_stream_data_uni: uni,
            initial_max_streams_bidi: streams_bidi,
            initial_max_streams_uni: streams_uni,
            ack_delay_exponent: ade,
            max_ack_delay: mad,
            disable_active_migration: dam,
            preferred_address,
            active_connection_id_limit: acil,
            initial_source_connection_id: iscid,
            retry_source_connection_id: rscid,
            max_datagram_frame_size: dgram,
            grease: grease.map(|(n, v)| (TransportParameters::grease_id(n), Bytes::from(v))),
        }
    })
}

/// An (identifier, value) pair biased towards known identifiers and plausible values.
fn arbitrary_tlv() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        4 => 0..=0x10u64,
        1 => Just(id::MAX_DATAGRAM_FRAME_SIZE),
        1 => 0..=VarInt::MAX.into_inner(),
    ];
    let value = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        varint().prop_map(|v| {
            let mut b = Vec::new();
            v.encode(&mut b);
            b
        }),
    ];
    (id, value).prop_map(|(id, value)| tlv(id, &value))
}

proptest! {
    #[test]
    fn round_trip(p in params()) {
        let mut out = Vec::new();
        p.encode(&mut out);
        prop_assert_eq!(out.len(), p.encoded_len());

        // Decoding drops the GREASE parameter, like any unknown one.
        let expected = TransportParameters { grease: None, ..p.clone() };
        prop_assert_eq!(TransportParameters::decode(Side::Server, &out), Ok(expected.clone()));

        let client = TransportParameters {
            original_destination_connection_id: None,
            stateless_reset_token: None,
            preferred_address: None,
            retry_source_connection_id: None,
            ..p
        };
        let mut out = Vec::new();
        client.encode(&mut out);
        prop_assert_eq!(out.len(), client.encoded_len());
        let expected = TransportParameters { grease: None, ..client };
        prop_assert_eq!(TransportParameters::decode(Side::Client, &out), Ok(expected));
    }

    #[test]
    fn tlv_sequences_never_panic(tlvs in prop::collection::vec(arbitrary_tlv(), 0..12)) {
        decode_both_sides(&tlvs.concat());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        decode_both_sides(&bytes);
    }
}
