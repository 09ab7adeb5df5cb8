use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::Side;

const VMAX: u64 = VarInt::MAX.into_inner();

use crate::fuzzing::{check_frame_round_trip as check_round_trip, check_frames as check_arbitrary_payload};

// ---------------------------------------------------------------------------------------------------
// Strategies.

fn varint() -> impl Strategy<Value = u64> {
    prop_oneof![0..64u64, 0..16384u64, 0..(1u64 << 30), 0..=VMAX, Just(VMAX)]
}

fn data(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn stream_id() -> impl Strategy<Value = StreamId> {
    varint().prop_map(StreamId)
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::Bi), Just(Dir::Uni)]
}

fn ack() -> impl Strategy<Value = AckFrame> {
    let ecn = prop::option::of(
        (varint(), varint(), varint()).prop_map(|(ect0, ect1, ce)| EcnCounts { ect0, ect1, ce }),
    );
    let steps = prop::collection::vec((prop_oneof![0..4u64, 0..1000u64, 0..=VMAX], 0..1000u64), 0..20);
    (varint(), 0..1000u64, steps, varint(), ecn).prop_map(|(largest, first, steps, delay, ecn)| {
        let mut ranges = Vec::new();
        let mut lo = largest.saturating_sub(first);
        ranges.push(lo..=largest);
        for (gap, len) in steps {
            let Some(hi) = lo.checked_sub(gap).and_then(|v| v.checked_sub(2)) else {
                break;
            };
            lo = hi.saturating_sub(len);
            ranges.push(lo..=hi);
        }
        AckFrame::from_ranges(ranges, delay, ecn).unwrap()
    })
}

fn stream_frame() -> impl Strategy<Value = StreamFrame> {
    (
        stream_id(),
        prop_oneof![Just(0u64), 0..=VMAX - 100],
        any::<bool>(),
        data(100),
    )
        .prop_map(|(id, offset, fin, data)| StreamFrame {
            id,
            offset,
            fin,
            data,
        })
}

fn close() -> impl Strategy<Value = ConnectionClose> {
    let code = prop_oneof![
        (varint(), varint()).prop_map(|(c, frame_type)| CloseCode::Transport {
            code: TransportErrorCode(c),
            frame_type
        }),
        varint().prop_map(CloseCode::Application),
    ];
    (code, data(40)).prop_map(|(code, reason)| ConnectionClose { code, reason })
}

fn new_connection_id() -> impl Strategy<Value = NewConnectionId> {
    (
        varint(),
        prop::collection::vec(any::<u8>(), 1..=20),
        any::<[u8; 16]>(),
    )
        .prop_flat_map(|(sequence, cid, token)| {
            (0..=sequence).prop_map(move |retire_prior_to| NewConnectionId {
                sequence,
                retire_prior_to,
                id: ConnectionId::new(&cid).unwrap(),
                reset_token: ResetToken(token),
            })
        })
}

fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (1..50usize).prop_map(Frame::Padding),
        Just(Frame::Ping),
        ack().prop_map(Frame::Ack),
        (stream_id(), varint(), varint()).prop_map(|(id, error_code, final_size)| Frame::ResetStream(
            ResetStream {
                id,
                error_code,
                final_size
            }
        )),
        (stream_id(), varint())
            .prop_map(|(id, error_code)| Frame::StopSending(StopSending { id, error_code })),
        (0..=VMAX - 100, data(100)).prop_map(|(offset, data)| Frame::Crypto(CryptoFrame { offset, data })),
        prop::collection::vec(any::<u8>(), 1..60).prop_map(|t| Frame::NewToken(Bytes::from(t))),
        stream_frame().prop_map(Frame::Stream),
        varint().prop_map(Frame::MaxData),
        (stream_id(), varint()).prop_map(|(id, max)| Frame::MaxStreamData(MaxStreamData { id, max })),
        (dir(), 0..=MAX_STREAM_COUNT).prop_map(|(dir, count)| Frame::MaxStreams(MaxStreams { dir, count })),
        varint().prop_map(Frame::DataBlocked),
        (stream_id(), varint())
            .prop_map(|(id, limit)| Frame::StreamDataBlocked(StreamDataBlocked { id, limit })),
        (dir(), 0..=MAX_STREAM_COUNT)
            .prop_map(|(dir, limit)| Frame::StreamsBlocked(StreamsBlocked { dir, limit })),
        new_connection_id().prop_map(Frame::NewConnectionId),
        varint().prop_map(Frame::RetireConnectionId),
        any::<[u8; 8]>().prop_map(Frame::PathChallenge),
        any::<[u8; 8]>().prop_map(Frame::PathResponse),
        close().prop_map(Frame::Close),
        Just(Frame::HandshakeDone),
        data(100).prop_map(|data| Frame::Datagram(Datagram { data })),
    ]
}

/// Payloads that start with a plausible frame type more often than uniform bytes would.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let types: Vec<u8> = (0x00..=0x1e).chain([0x30, 0x31, 0x40, 0xff]).collect();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        (
            prop::sample::select(types),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, mut rest)| {
                rest.insert(0, t);
                rest
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_frame_round_trips(frame in any_frame()) {
        check_round_trip(&frame);
    }

    /// A sequence of frames decodes back through `Frames`, with zero-copy payloads.
    #[test]
    fn frame_sequences_round_trip(frames in prop::collection::vec(any_frame(), 1..8)) {
        // Two PADDING runs in a row decode as one: merge them in the expectation.
        let mut expected: Vec<Frame> = Vec::new();
        for f in frames {
            match (expected.last_mut(), &f) {
                (Some(Frame::Padding(a)), Frame::Padding(b)) => *a += b,
                _ => expected.push(f),
            }
        }
        let mut buf = BytesMut::new();
        for f in &expected {
            f.encode(&mut buf);
        }
        let bytes = buf.freeze();
        let decoded: Vec<Frame> = Frames::new(&bytes).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn stream_and_datagram_without_length_round_trip(s in stream_frame(), d in data(100)) {
        let mut buf = BytesMut::new();
        s.encode(&mut buf, false);
        prop_assert_eq!(buf.len(), s.encoded_len(false));
        let bytes = buf.freeze();
        let mut frames = Frames::new(&bytes);
        prop_assert_eq!(frames.next(), Some(Ok(Frame::Stream(s))));
        prop_assert_eq!(frames.next(), None);

        let d = Datagram { data: d };
        let mut buf = BytesMut::new();
        d.encode(&mut buf, false);
        prop_assert_eq!(buf.len(), d.encoded_len(false));
        let bytes = buf.freeze();
        prop_assert_eq!(Frames::new(&bytes).collect::<Vec<_>>(), vec![Ok(Frame::Datagram(d))]);
    }

    /// `max_data_len` gives the most data that fits, and that much does fit.
    #[test]
    fn stream_max_data_len_fits(id in stream_id(), offset in varint(), space in 0..20_000usize, with_len: bool) {
        match StreamFrame::max_data_len(id, offset, space, with_len) {
            None => prop_assert!(StreamFrame::header_len(id, offset, 0, with_len) > space),
            Some(n) => {
                prop_assert!(StreamFrame::header_len(id, offset, n, with_len) + n <= space);
                let more = n + 1;
                prop_assert!(StreamFrame::header_len(id, offset, more, with_len) + more > space);
            }
        }
        match CryptoFrame::max_data_len(offset, space) {
            None => prop_assert!(CryptoFrame::header_len(offset, 0) > space),
            Some(n) => {
                prop_assert!(CryptoFrame::header_len(offset, n) + n <= space);
                prop_assert!(CryptoFrame::header_len(offset, n + 1) + n + 1 > space);
            }
        }
        match Datagram::max_data_len(space, with_len) {
            None => prop_assert!(Datagram::header_len(0, with_len) > space),
            Some(n) => {
                prop_assert!(Datagram::header_len(n, with_len) + n <= space);
                prop_assert!(Datagram::header_len(n + 1, with_len) + n + 1 > space);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_payloads_never_panic(payload in payload()) {
        check_arbitrary_payload(&payload);
    }
}

// ---------------------------------------------------------------------------------------------------
// Decode-time MUSTs.

/// Decodes `bytes` as a single frame and returns the error, checking its mapping to a transport error.
fn decode_err(bytes: &[u8]) -> FrameError {
    let owned = Bytes::copy_from_slice(bytes);
    let err = Frames::new(&owned)
        .find_map(Result::err)
        .unwrap_or_else(|| panic!("{bytes:02x?} should not decode"));
    let te = TransportError::from(err);
    assert_eq!(te.code, TransportErrorCode::FRAME_ENCODING_ERROR);
    assert_eq!(te.frame_type, Some(err.frame_type));
    err
}

#[test]
fn ack_first_range_below_zero() {
    // RFC 9000 §19.3.1: largest 5, first range 6 would reach packet -1.
    let e = decode_err(&[0x02, 5, 0, 0, 6]);
    assert_eq!(e.frame_type, 0x02);
    assert!(matches!(e.kind, DecodeError::Invalid(_)));
    // First range exactly reaching 0 is fine.
    let ok = Bytes::from_static(&[0x02, 5, 0, 0, 5]);
    let f = Frames::new(&ok).next().unwrap().unwrap();
    let Frame::Ack(ack) = f else { panic!("not an ACK") };
    assert_eq!(ack.iter().collect::<Vec<_>>(), vec![0..=5]);
}

#[test]
fn ack_gap_below_zero() {
    // largest 10, first range 2 (8..=10); gap 5 puts the next largest at 8 - 5 - 2 = 1; len 2 → -1.
    let e = decode_err(&[0x03, 10, 0, 1, 2, 5, 2, 0, 0, 0]);
    assert_eq!(e.frame_type, 0x03);
    assert!(matches!(e.kind, DecodeError::Invalid(_)));
    // gap 7 puts the next largest at -1.
    assert_eq!(decode_err(&[0x02, 10, 0, 1, 2, 7, 0]).frame_type, 0x02);
    // gap 6 with len 0 acknowledges packet 0 exactly.
    let ok = Bytes::from_static(&[0x02, 10, 0, 1, 2, 6, 0]);
    let Some(Ok(Frame::Ack(ack))) = Frames::new(&ok).next() else {
        panic!("valid ACK")
    };
    assert_eq!(ack.iter().collect::<Vec<_>>(), vec![8..=10, 0..=0]);
    assert_eq!(ack.largest(), 10);
    assert_eq!(ack.ranges.num_ranges(), 2);
}

#[test]
fn ack_huge_range_count_fails_fast() {
    // Range count 2^62 - 1 with three bytes of ranges: must fail at the end of the input.
    let mut bytes = vec![0x02, 0x40, 100, 0];
    VarInt::MAX.encode(&mut bytes);
    bytes.extend_from_slice(&[0, 1, 1, 1]);
    // The walk stops where the input does: this returns at once (a 2^62-step loop would hang the test).
    let e = decode_err(&bytes);
    assert_eq!(
        e,
        FrameError {
            frame_type: 0x02,
            kind: DecodeError::UnexpectedEnd
        }
    );
}

#[test]
fn stream_end_beyond_2_62() {
    // RFC 9000 §19.8: offset 2^62 - 1 with one byte of data ends at 2^62.
    let mut bytes = vec![0x0e, 4];
    VarInt::MAX.encode(&mut bytes);
    bytes.extend_from_slice(&[1, 0xaa]);
    assert_eq!(decode_err(&bytes).frame_type, 0x0e);
    // Without the LEN bit the data runs to the end: same limit.
    let mut bytes = vec![0x0c, 4];
    VarInt::MAX.encode(&mut bytes);
    bytes.push(0xaa);
    assert_eq!(decode_err(&bytes).frame_type, 0x0c);
    // An empty frame at offset 2^62 - 1 is fine.
    let mut bytes = vec![0x0f, 4];
    VarInt::MAX.encode(&mut bytes);
    bytes.push(0);
    let ok = Bytes::from(bytes);
    assert!(matches!(
        Frames::new(&ok).next(),
        Some(Ok(Frame::Stream(StreamFrame { fin: true, .. })))
    ));
}

#[test]
fn crypto_end_beyond_2_62() {
    // RFC 9000 §19.6.
    let mut bytes = vec![0x06];
    VarInt::MAX.encode(&mut bytes);
    bytes.extend_from_slice(&[1, 0xaa]);
    assert_eq!(decode_err(&bytes).frame_type, 0x06);
}

#[test]
fn stream_counts_above_2_60() {
    // RFC 9000 §19.11 and §19.14: 2^60 is allowed, 2^60 + 1 is not.
    for t in [0x12u8, 0x13, 0x16, 0x17] {
        let mut ok = vec![t];
        VarInt::from_u64(MAX_STREAM_COUNT).unwrap().encode(&mut ok);
        let ok = Bytes::from(ok);
        assert!(matches!(Frames::new(&ok).next(), Some(Ok(_))));
        let mut bad = vec![t];
        VarInt::from_u64(MAX_STREAM_COUNT + 1).unwrap().encode(&mut bad);
        assert_eq!(decode_err(&bad).frame_type, u64::from(t));
    }
}

#[test]
fn new_connection_id_rules() {
    let frame = |seq: u8, retire: u8, len: u8| {
        let mut b = vec![0x18, seq, retire, len];
        b.extend(std::iter::repeat(0xab).take(usize::from(len)));
        b.extend_from_slice(&[0x77; 16]);
        b
    };
    // RFC 9000 §19.15: length outside 1..=20.
    assert_eq!(decode_err(&frame(1, 0, 0)).frame_type, 0x18);
    assert_eq!(decode_err(&frame(1, 0, 21)).frame_type, 0x18);
    // RFC 9000 §19.15: retire_prior_to above the sequence number.
    assert_eq!(decode_err(&frame(1, 2, 8)).frame_type, 0x18);
    for len in [1, 20] {
        let ok = Bytes::from(frame(2, 2, len));
        let Some(Ok(Frame::NewConnectionId(f))) = Frames::new(&ok).next() else {
            panic!("valid")
        };
        assert_eq!(f.id.len(), usize::from(len));
        assert_eq!(f.reset_token, ResetToken([0x77; 16]));
    }
}

#[test]
fn empty_new_token() {
    // RFC 9000 §19.7.
    assert_eq!(decode_err(&[0x07, 0]).frame_type, 0x07);
}

#[test]
fn lengths_past_the_end() {
    for (bytes, ty) in [
        (&[0x06, 0, 5, 1, 2][..], 0x06),
        (&[0x07, 3, 1, 2], 0x07),
        (&[0x0a, 0, 9, 1], 0x0a),
        (&[0x1c, 1, 0, 4, b'a'], 0x1c),
        (&[0x1d, 1, 4, b'a'], 0x1d),
        (&[0x31, 2, 1], 0x31),
        (&[0x1a, 1, 2, 3], 0x1a),
        (&[0x18, 1, 0, 4, 1, 2, 3, 4, 0, 0], 0x18),
        // A length that does not even fit a usize on 32-bit targets, and is far past the end anywhere.
        (&[0x31, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0x31),
    ] {
        let e = decode_err(bytes);
        assert_eq!(
            e,
            FrameError {
                frame_type: ty,
                kind: DecodeError::UnexpectedEnd
            },
            "{bytes:02x?}"
        );
    }
}

#[test]
fn unknown_and_truncated_types() {
    let e = decode_err(&[0x1f]);
    assert_eq!(
        e,
        FrameError {
            frame_type: 0x1f,
            kind: DecodeError::Invalid("unknown frame type")
        }
    );
    assert_eq!(decode_err(&[0x40, 0x21]).frame_type, 0x21);
    // A type varint cut short reports type 0 (RFC 9000 §19.19: "unknown").
    assert_eq!(decode_err(&[0x80, 0x00]).frame_type, 0);
}

#[test]
fn frames_stop_after_first_error() {
    let bytes = Bytes::from_static(&[0x01, 0x1f, 0x01, 0x01]);
    let items: Vec<_> = Frames::new(&bytes).collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], Ok(Frame::Ping));
    assert!(items[1].is_err());
}

#[test]
fn padding_run_then_ping() {
    let mut bytes = vec![0u8; 1000];
    bytes.push(0x01);
    bytes.extend_from_slice(&[0; 3]);
    let bytes = Bytes::from(bytes);
    let frames: Vec<_> = Frames::new(&bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(frames, vec![Frame::Padding(1000), Frame::Ping, Frame::Padding(3)]);
}

// ---------------------------------------------------------------------------------------------------
// Encoding details and helpers.

#[test]
fn payloads_are_zero_copy() {
    let mut buf = BytesMut::new();
    Frame::Stream(StreamFrame {
        id: StreamId(4),
        offset: 7,
        fin: false,
        data: Bytes::from_static(b"hello"),
    })
    .encode(&mut buf);
    let bytes = buf.freeze();
    let Some(Ok(Frame::Stream(s))) = Frames::new(&bytes).next() else {
        panic!("STREAM")
    };
    let start = bytes.len() - 5;
    assert_eq!(s.data.as_ptr(), bytes[start..].as_ptr());
}

#[test]
fn stream_type_bits() {
    let s = |offset, fin| StreamFrame {
        id: StreamId(0),
        offset,
        fin,
        data: Bytes::new(),
    };
    assert_eq!(s(0, false).frame_type(false), 0x08);
    assert_eq!(s(0, true).frame_type(false), 0x09);
    assert_eq!(s(0, false).frame_type(true), 0x0a);
    assert_eq!(s(1, true).frame_type(true), 0x0f);
    assert_eq!(Frame::Stream(s(1, false)).frame_type(), 0x0e);
    // Every one of the eight types decodes.
    for t in 0x08u8..=0x0f {
        let mut bytes = vec![t, 1];
        if t & 0x04 != 0 {
            bytes.push(9); // offset
        }
        if t & 0x02 != 0 {
            bytes.push(1); // length
        }
        bytes.push(0xaa);
        let bytes = Bytes::from(bytes);
        let Some(Ok(Frame::Stream(f))) = Frames::new(&bytes).next() else {
            panic!("type {t:#x}")
        };
        let offset = if t & 0x04 != 0 { 9 } else { 0 };
        let expected = StreamFrame {
            id: StreamId(1),
            offset,
            fin: t & 1 != 0,
            data: Bytes::from_static(&[0xaa]),
        };
        assert_eq!(f, expected, "type {t:#x}");
    }
}

#[test]
fn ack_from_ranges() {
    let ack = AckFrame::from_ranges([20..=25, 17..=19, 10..=12, 3..=3], 7, None).unwrap();
    // 17..=19 is adjacent to 20..=25 and merges.
    assert_eq!(ack.iter().collect::<Vec<_>>(), vec![17..=25, 10..=12, 3..=3]);
    assert_eq!(ack.largest(), 25);
    let mut buf = Vec::new();
    ack.encode(&mut buf);
    // largest 25, delay 7, count 2, first 8, gap 17-12-2=3 len 2, gap 10-3-2=5 len 0.
    assert_eq!(buf, [0x02, 25, 7, 2, 8, 3, 2, 5, 0]);
    check_round_trip(&Frame::Ack(ack));

    assert!(AckFrame::from_ranges(std::iter::empty(), 0, None).is_err());
    assert!(AckFrame::from_ranges([std::ops::RangeInclusive::new(5, 4)], 0, None).is_err());
    assert!(AckFrame::from_ranges([1..=5, 3..=8], 0, None).is_err());
    assert!(AckFrame::from_ranges([1..=2, 5..=8], 0, None).is_err());
    assert!(AckFrame::from_ranges([0..=VMAX + 1], 0, None).is_err());
    let ecn = EcnCounts {
        ect0: 1,
        ect1: 2,
        ce: 3,
    };
    let ack = AckFrame::from_ranges([0..=VMAX], 0, Some(ecn)).unwrap();
    assert_eq!(ack.frame_type(), 0x03);
    check_round_trip(&Frame::Ack(ack));
}

#[test]
fn stream_id_helpers() {
    for side in [Side::Client, Side::Server] {
        for d in [Dir::Bi, Dir::Uni] {
            for index in [0, 1, 77, (1 << 60) - 1] {
                let id = StreamId::new(side, d, index);
                assert_eq!((id.initiator(), id.dir(), id.index()), (side, d, index));
                assert_eq!(id.is_bidi(), d == Dir::Bi);
                assert_eq!(id.is_uni(), d == Dir::Uni);
            }
        }
    }
    // RFC 9000 §2.1 Table 1.
    assert_eq!(StreamId::new(Side::Client, Dir::Bi, 0), StreamId(0));
    assert_eq!(StreamId::new(Side::Server, Dir::Bi, 0), StreamId(1));
    assert_eq!(StreamId::new(Side::Client, Dir::Uni, 0), StreamId(2));
    assert_eq!(StreamId::new(Side::Server, Dir::Uni, 1), StreamId(7));
    assert_eq!(StreamId(7).to_string(), "7 (server uni #1)");
}

#[test]
fn packet_type_rules() {
    let app_close = Frame::Close(ConnectionClose {
        code: CloseCode::Application(1),
        reason: Bytes::new(),
    });
    let transport_close: Frame = Frame::Close(ConnectionClose::from(
        TransportError::protocol_violation("x").with_frame(0x1a),
    ));
    assert!(transport_close.allowed_in_initial_or_handshake());
    assert!(!app_close.allowed_in_initial_or_handshake());
    assert!(app_close.allowed_in_0rtt());
    assert!(Frame::Crypto(CryptoFrame {
        offset: 0,
        data: Bytes::new()
    })
    .allowed_in_initial_or_handshake());
    assert!(!Frame::HandshakeDone.allowed_in_initial_or_handshake());
    assert!(!Frame::HandshakeDone.allowed_in_0rtt());
    assert!(!Frame::PathResponse([0; 8]).allowed_in_0rtt());
    assert!(Frame::PathChallenge([0; 8]).allowed_in_0rtt());
    assert!(Frame::Datagram(Datagram { data: Bytes::new() }).allowed_in_0rtt());

    assert!(!transport_close.is_ack_eliciting());
    assert!(!Frame::Padding(1).is_ack_eliciting());
    assert!(Frame::Ping.is_ack_eliciting());
    assert!(Frame::Padding(1).is_probing());
    assert!(!Frame::Ping.is_probing());

    let Frame::Close(c) = transport_close else {
        unreachable!()
    };
    assert_eq!(
        c.code,
        CloseCode::Transport {
            code: TransportErrorCode::PROTOCOL_VIOLATION,
            frame_type: 0x1a
        }
    );
    assert_eq!(&c.reason[..], b"x");
}

/// The PADDING scan, 16 bytes at a time, stops at the first non-zero byte wherever it lies.
#[test]
fn zero_runs_end_at_the_first_non_zero_byte() {
    for len in 0..70 {
        let zeros = vec![0u8; len];
        assert_eq!(zero_run(&zeros), len);
        for at in 0..len {
            let mut bytes = zeros.clone();
            bytes[at] = 0x80;
            assert_eq!(zero_run(&bytes), at, "{len} bytes, non-zero at {at}");
        }
    }
}

/// RFC 9000 §12.4: a frame type MUST be sent in its shortest encoding, but a receiver only MAY treat a
/// longer one as a PROTOCOL_VIOLATION. We accept it: the frame decodes as its value, and an error in it
/// names that value (§19.19).
#[test]
fn non_minimal_frame_type_encodings_decode_as_their_value() {
    let bytes = Bytes::from_static(&[0x40, 0x01, 0x80, 0x00, 0x00, 0x1e, 0x40, 0x0b, 0x04, 0x01, 0xaa]);
    let frames: Vec<_> = Frames::new(&bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0], Frame::Ping);
    assert_eq!(frames[1], Frame::HandshakeDone);
    let Frame::Stream(s) = &frames[2] else {
        panic!("{:?}", frames[2])
    };
    assert_eq!(
        (s.id, s.offset, s.fin, &s.data[..]),
        (StreamId(4), 0, true, &[0xaa][..])
    );
    // A two-byte PADDING type starts a run of padding like a one-byte one.
    let bytes = Bytes::from_static(&[0x40, 0x00, 0x00, 0x00, 0x01]);
    let frames: Vec<_> = Frames::new(&bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(frames, vec![Frame::Padding(4), Frame::Ping]);
    assert_eq!(decode_err(&[0x40, 0x07, 0x00]).frame_type, 0x07);
    assert_eq!(
        decode_err(&[0x80, 0x00, 0x00, 0x12, 0xd0, 0, 0, 0, 0, 0, 0, 1]).frame_type,
        0x12
    );
}

/// RFC 9000 §19.3.1 at the top of the packet number space: a First ACK Range of 2^62 - 1 below a
/// Largest Acknowledged of 2^62 - 1 reaches packet 0 exactly; any further range goes below 0.
#[test]
fn ack_ranges_spanning_the_whole_number_space() {
    let mut bytes = vec![0x02];
    VarInt::MAX.encode(&mut bytes);
    bytes.extend_from_slice(&[0, 0]);
    VarInt::MAX.encode(&mut bytes);
    let ok = Bytes::from(bytes.clone());
    let Some(Ok(Frame::Ack(ack))) = Frames::new(&ok).next() else {
        panic!("valid ACK")
    };
    assert_eq!(ack.iter().collect::<Vec<_>>(), vec![0..=VarInt::MAX.into_inner()]);
    bytes[1 + 8 + 1] = 1;
    bytes.extend_from_slice(&[0, 0]);
    assert!(matches!(decode_err(&bytes).kind, DecodeError::Invalid(_)));
    // A frame built from ranges keeps the largest number and encodes as many bytes as it says.
    let top = VarInt::MAX.into_inner();
    let built = AckFrame::from_ranges([top..=top, 0..=0], 0, None).unwrap();
    let mut out = Vec::new();
    built.encode(&mut out);
    assert_eq!(out.len(), built.encoded_len());
    let out = Bytes::from(out);
    assert_eq!(Frames::new(&out).next(), Some(Ok(Frame::Ack(built))));
    assert!(AckFrame::from_ranges([top + 1..=top + 1], 0, None).is_err());
}
