//! The sample packets of RFC 9001 Appendix A (and the same samples for QUIC v2 from RFC 9369 Appendix A),
//! byte for byte, plus round trips and tampering checks for every suite.

use crate::wire::header::{VERSION_1, VERSION_2};
use proptest::prelude::*;

use super::ring_keys::nonce;
use super::*;
use crate::Side;

/// Decodes hex digits, skipping whitespace. Panics on anything else: test vectors only.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_digit(16).expect("test vectors are hex") as u8)
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits.chunks(2).map(|pair| pair[0] << 4 | pair[1]).collect()
}

include!("../../tests/vectors/rfc9001_appendix_a.rs");

/// The expected secret, key, iv and hp of one direction.
struct Expected<'a> {
    secret: &'a str,
    key: &'a str,
    iv: &'a str,
    hp: &'a str,
}

fn check_secret(secret: &Secret, expected: &Expected<'_>) {
    let key_len = secret.suite().key_len();
    let (key, iv) = secret.packet_key_material();
    assert_eq!(secret.as_bytes(), hex(expected.secret));
    assert_eq!(key[..key_len], hex(expected.key));
    assert_eq!(iv[..], hex(expected.iv));
    assert_eq!(secret.header_key_material()[..key_len], hex(expected.hp));
}

#[test]
fn rfc9001_a1_keys() {
    let (client, server) = initial_secrets(VERSION_1, &hex(DCID)).expect("v1");
    check_secret(
        &client,
        &Expected {
            secret: "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea",
            key: "1f369613dd76d5467730efcbe3b1a22d",
            iv: "fa044b2f42a3fd3b46fb255c",
            hp: "9f50449e04a0e810283a1e9933adedd2",
        },
    );
    check_secret(
        &server,
        &Expected {
            secret: "3c199828fd139efd216c155ad844cc81fb82fa8d7446fa7d78be803acdda951b",
            key: "cf3a5331653c364c88f0f379b6067e37",
            iv: "0ac1493ca1905853b0bba03e",
            hp: "c206b8d9b9f0f37644430b490eeaa314",
        },
    );
}

#[test]
fn rfc9369_a1_keys() {
    let (client, server) = initial_secrets(VERSION_2, &hex(DCID)).expect("v2");
    check_secret(
        &client,
        &Expected {
            secret: "14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b",
            key: "8b1a0bc121284290a29e0971b5cd045d",
            iv: "91f73e2351d8fa91660e909f",
            hp: "45b95e15235d6f45a6b19cbcb0294ba9",
        },
    );
    check_secret(
        &server,
        &Expected {
            secret: "0263db1782731bf4588e7e4d93b7463907cb8cd8200b5da55a8bd488eafc37c1",
            key: "82db637861d55e1d011f19ea71d5d2a7",
            iv: "dd13c276499c0249d3310652",
            hp: "edf6d05c83121201b436e16877593c3a",
        },
    );
}

/// One sample Initial packet of Appendix A.2 / A.3.
struct InitialSample<'a> {
    version: u32,
    sender: Side,
    header: &'a str,
    payload: Vec<u8>,
    pn: u64,
    pn_offset: usize,
    sample: &'a str,
    mask: &'a str,
    protected: &'a str,
}

/// Protects the sample as its sender would, compares with the RFC, then removes protection as the
/// receiver would and compares with the original.
fn check_initial(s: InitialSample<'_>) {
    let header = hex(s.header);
    let expected = hex(s.protected);
    let mut packet = [header.as_slice(), &s.payload, &[0; 16]].concat();
    assert_eq!(packet.len(), expected.len());

    let sender = initial_keys(s.version, &hex(DCID), s.sender).expect("supported version");
    sender
        .local
        .packet
        .seal(s.pn, &mut packet, header.len())
        .expect("room for the tag");
    // The packet number is 4 bytes in the client sample, so the sample starts right after the header there.
    let sample = &packet[s.pn_offset + 4..s.pn_offset + 4 + 16];
    assert_eq!(sample, hex(s.sample));
    assert_eq!(
        sender.local.header.mask(sample).expect("16 bytes").to_vec(),
        hex(s.mask)
    );
    sender
        .local
        .header
        .protect(s.pn_offset, &mut packet)
        .expect("long enough");
    assert_eq!(packet, expected);

    let receiver = initial_keys(s.version, &hex(DCID), s.sender.peer()).expect("supported version");
    receiver
        .remote
        .header
        .unprotect(s.pn_offset, &mut packet)
        .expect("long enough");
    let pn_len = usize::from(packet[0] & 0x03) + 1;
    assert_eq!(s.pn_offset + pn_len, header.len());
    assert_eq!(packet[..header.len()], header[..]);
    let len = receiver
        .remote
        .packet
        .open(s.pn, &mut packet, header.len())
        .expect("authentic");
    assert_eq!(packet[header.len()..header.len() + len], s.payload[..]);
}

/// The client's CRYPTO frame padded with PADDING frames to 1162 bytes.
fn client_payload() -> Vec<u8> {
    let mut payload = hex(CRYPTO_FRAME);
    payload.resize(1162, 0);
    payload
}

#[test]
fn rfc9001_a2_client_initial() {
    check_initial(InitialSample {
        version: VERSION_1,
        sender: Side::Client,
        header: V1_CLIENT_HEADER,
        payload: client_payload(),
        pn: 2,
        pn_offset: 18,
        sample: "d1b1c98dd7689fb8ec11d242b123dc9b",
        mask: "437b9aec36",
        protected: V1_CLIENT_PROTECTED,
    });
}

#[test]
fn rfc9369_a2_client_initial() {
    check_initial(InitialSample {
        version: VERSION_2,
        sender: Side::Client,
        header: V2_CLIENT_HEADER,
        payload: client_payload(),
        pn: 2,
        pn_offset: 18,
        sample: "ffe67b6abcdb4298b485dd04de806071",
        mask: "94a0c95e80",
        protected: V2_CLIENT_PROTECTED,
    });
}

#[test]
fn rfc9001_a3_server_initial() {
    check_initial(InitialSample {
        version: VERSION_1,
        sender: Side::Server,
        header: V1_SERVER_HEADER,
        payload: hex(SERVER_PAYLOAD),
        pn: 1,
        pn_offset: 18,
        sample: "2cd0991cd25b0aac406a5816b6394100",
        mask: "2ec0d8356a",
        protected: V1_SERVER_PROTECTED,
    });
}

#[test]
fn rfc9369_a3_server_initial() {
    check_initial(InitialSample {
        version: VERSION_2,
        sender: Side::Server,
        header: V2_SERVER_HEADER,
        payload: hex(SERVER_PAYLOAD),
        pn: 1,
        pn_offset: 18,
        sample: "6f05d8a4398c47089698baeea26b91eb",
        mask: "4dd92e91ea",
        protected: V2_SERVER_PROTECTED,
    });
}

fn check_retry(version: u32, packet: &str) {
    let packet = hex(packet);
    let odcid = hex(DCID);
    let (body, tag) = packet.split_at(packet.len() - RETRY_TAG_LEN);
    assert_eq!(
        retry_tag(version, &odcid, body).expect("supported version")[..],
        tag[..]
    );
    assert!(verify_retry_tag(version, &odcid, &packet));

    for i in 0..packet.len() {
        let mut changed = packet.clone();
        changed[i] ^= 0x01;
        assert!(!verify_retry_tag(version, &odcid, &changed), "byte {i} changed");
    }
    let mut other_odcid = odcid.clone();
    other_odcid[7] ^= 0x80;
    assert!(!verify_retry_tag(version, &other_odcid, &packet));
    assert!(!verify_retry_tag(version, &odcid[..7], &packet));
    assert!(!verify_retry_tag(version, &odcid, &packet[..packet.len() - 1]));
    assert!(!verify_retry_tag(version, &odcid, &packet[..RETRY_TAG_LEN - 1]));
    assert!(!verify_retry_tag(version, &[0; 21], &packet));
    let other = if version == VERSION_1 {
        VERSION_2
    } else {
        VERSION_1
    };
    assert!(!verify_retry_tag(other, &odcid, &packet));
}

#[test]
fn rfc9001_a4_retry() {
    check_retry(VERSION_1, V1_RETRY);
    assert_eq!(
        retry_tag(0x0a0a_0a0a, &[], &[]),
        Err(CryptoError::UnsupportedVersion(0x0a0a_0a0a))
    );
    assert_eq!(
        retry_tag(VERSION_1, &[0; 21], &[]),
        Err(CryptoError::ConnectionIdTooLong)
    );
}

#[test]
fn rfc9369_a4_retry() {
    check_retry(VERSION_2, V2_RETRY);
}

/// A.5: the short header packet protected with ChaCha20-Poly1305.
struct ChaChaSample<'a> {
    version: u32,
    key: &'a str,
    iv: &'a str,
    hp: &'a str,
    ku: &'a str,
    nonce: &'a str,
    ciphertext: &'a str,
    sample: &'a str,
    mask: &'a str,
    packet: &'a str,
}

fn check_chacha(s: ChaChaSample<'_>) {
    const PN: u64 = 654_360_564;
    let secret = Secret::for_version(
        s.version,
        Suite::ChaCha20Poly1305,
        &hex("9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b"),
    )
    .expect("32-byte secret");
    let (key, iv) = secret.packet_key_material();
    assert_eq!(key[..], hex(s.key));
    assert_eq!(iv[..], hex(s.iv));
    assert_eq!(secret.header_key_material()[..], hex(s.hp));
    assert_eq!(secret.next().as_bytes(), hex(s.ku));
    assert_eq!(nonce(&iv, PN)[..], hex(s.nonce));

    let keys = DirectionalKeys::new(&secret);
    let mut packet = [hex("4200bff4").as_slice(), &[0x01], &[0; 16]].concat();
    keys.packet.seal(PN, &mut packet, 4).expect("room for the tag");
    assert_eq!(packet[4..], hex(s.ciphertext)[..]);
    // Empty DCID: the packet number starts at offset 1; one ciphertext byte is skipped before the sample.
    assert_eq!(packet[5..21], hex(s.sample)[..]);
    assert_eq!(
        keys.header.mask(&packet[5..21]).expect("16 bytes").to_vec(),
        hex(s.mask)
    );
    keys.header
        .protect(1, &mut packet)
        .expect("21 bytes hold the sample");
    assert_eq!(packet, hex(s.packet));

    keys.header
        .unprotect(1, &mut packet)
        .expect("21 bytes hold the sample");
    assert_eq!(packet[..4], hex("4200bff4")[..]);
    assert_eq!(keys.packet.open(PN, &mut packet, 4), Ok(1));
    assert_eq!(packet[4], 0x01);
    // One byte shorter and the sample no longer fits (RFC 9001 §5.4.2).
    assert_eq!(
        keys.header.unprotect(1, &mut packet[..20]),
        Err(CryptoError::PacketTooShort)
    );
}

#[test]
fn rfc9001_a5_chacha20_short_header() {
    check_chacha(ChaChaSample {
        version: VERSION_1,
        key: "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8",
        iv: "e0459b3474bdd0e44a41c144",
        hp: "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4",
        ku: "1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9",
        nonce: "e0459b3474bdd0e46d417eb0",
        ciphertext: "655e5cd55c41f69080575d7999c25a5bfb",
        sample: "5e5cd55c41f69080575d7999c25a5bfb",
        mask: "aefefe7d03",
        packet: "4cfe4189655e5cd55c41f69080575d7999c25a5bfb",
    });
}

#[test]
fn rfc9369_a5_chacha20_short_header() {
    check_chacha(ChaChaSample {
        version: VERSION_2,
        key: "3bfcddd72bcf02541d7fa0dd1f5f9eeea817e09a6963a0e6c7df0f9a1bab90f2",
        iv: "a6b5bc6ab7dafce30ffff5dd",
        hp: "d659760d2ba434a226fd37b35c69e2da8211d10c4f12538787d65645d5d1b8e2",
        ku: "c69374c49e3d2a9466fa689e49d476db5d0dfbc87d32ceeaa6343fd0ae4c7d88",
        nonce: "a6b5bc6ab7dafce328ff4a29",
        ciphertext: "0ae7b6b932bc27d786f4bc2bb20f2162ba",
        sample: "e7b6b932bc27d786f4bc2bb20f2162ba",
        mask: "97580e32bf",
        packet: "5558b1c60ae7b6b932bc27d786f4bc2bb20f2162ba",
    });
}

const ALL_SUITES: [Suite; 3] = [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::ChaCha20Poly1305];

fn test_secret(suite: Suite, fill: u8) -> Secret {
    Secret::new(suite, &vec![fill; suite.hash_len()]).expect("hash-length secret")
}

/// A short header packet: first byte 0x41 (2-byte packet number), 8-byte DCID, pn, 30-byte payload, tag.
fn short_packet() -> (Vec<u8>, usize, usize) {
    let mut packet = vec![0x41];
    packet.extend_from_slice(&hex(DCID));
    packet.extend_from_slice(&[0x12, 0x34]);
    let header_len = packet.len();
    packet.extend((0..30u8).map(|i| i.wrapping_mul(7)));
    packet.extend_from_slice(&[0; 16]);
    (packet, header_len, 9)
}

#[test]
fn key_update_changes_packet_key_and_keeps_header_key() {
    for suite in ALL_SUITES {
        let secret = test_secret(suite, 0x5c);
        let next = secret.next();
        assert_eq!(next.suite(), suite);
        assert_eq!(next.as_bytes().len(), suite.hash_len());
        assert_ne!(next.as_bytes(), secret.as_bytes());
        assert_ne!(next.packet_key_material(), secret.packet_key_material());
        // The next secret would give a different header key: the update must not take it.
        assert_ne!(next.header_key_material(), secret.header_key_material());

        let mut keys = DirectionalKeys::new(&secret);
        let probe = [0xa5; 16];
        let mask_before = keys.header.mask(&probe).expect("16 bytes");
        let old = keys.update(&next);
        assert_eq!(
            keys.header.mask(&probe).expect("16 bytes"),
            mask_before,
            "{suite:?}"
        );

        let (mut packet, header_len, _) = short_packet();
        keys.packet.seal(99, &mut packet, header_len).expect("room");
        let sealed = packet.clone();
        assert_eq!(
            old.open(99, &mut packet, header_len),
            Err(CryptoError::DecryptionFailed)
        );
        let mut packet = sealed;
        assert_eq!(next.packet_key().open(99, &mut packet, header_len), Ok(30));
    }
}

#[test]
fn round_trip_all_suites() {
    for suite in ALL_SUITES {
        let secret = test_secret(suite, 0x11);
        let sender = DirectionalKeys::new(&secret);
        let receiver = DirectionalKeys::new(&secret);
        assert_eq!(sender.packet.tag_len(), 16);
        assert_eq!(sender.header.sample_len(), 16);
        assert_eq!(
            sender.packet.confidentiality_limit(),
            suite.confidentiality_limit()
        );
        assert_eq!(sender.packet.integrity_limit(), suite.integrity_limit());

        let (original, header_len, pn_offset) = short_packet();
        let mut packet = original.clone();
        sender.packet.seal(0x1234, &mut packet, header_len).expect("room");
        sender
            .header
            .protect(pn_offset, &mut packet)
            .expect("long enough");
        assert_ne!(
            packet[..header_len],
            original[..header_len],
            "{suite:?}: header protected"
        );
        assert_eq!(
            packet[0] & 0xe0,
            0x40,
            "{suite:?}: unprotected bits of a short header stay"
        );
        receiver
            .header
            .unprotect(pn_offset, &mut packet)
            .expect("long enough");
        assert_eq!(packet[..header_len], original[..header_len]);
        let len = receiver
            .packet
            .open(0x1234, &mut packet, header_len)
            .expect("authentic");
        assert_eq!(packet[..header_len + len], original[..header_len + len]);

        // Long header: only the low 4 bits of the first byte are masked.
        let mut long = original.clone();
        long[0] = 0xc1;
        sender.header.protect(pn_offset, &mut long).expect("long enough");
        assert_eq!(long[0] & 0xf0, 0xc0);
        receiver
            .header
            .unprotect(pn_offset, &mut long)
            .expect("long enough");
        assert_eq!(long[0], 0xc1);
        assert_eq!(long[1..], original[1..]);
    }
}

#[test]
fn tampering_fails_all_suites() {
    for suite in ALL_SUITES {
        let keys = DirectionalKeys::new(&test_secret(suite, 0x22));
        let (mut sealed, header_len, _) = short_packet();
        keys.packet.seal(7, &mut sealed, header_len).expect("room");
        for i in 0..sealed.len() {
            let mut packet = sealed.clone();
            packet[i] ^= 0x04;
            assert_eq!(
                keys.packet.open(7, &mut packet, header_len),
                Err(CryptoError::DecryptionFailed),
                "{suite:?} byte {i}"
            );
        }
        let mut packet = sealed.clone();
        assert_eq!(
            keys.packet.open(8, &mut packet, header_len),
            Err(CryptoError::DecryptionFailed),
            "{suite:?} pn"
        );
        let other = DirectionalKeys::new(&test_secret(suite, 0x23));
        let mut packet = sealed.clone();
        assert_eq!(
            other.packet.open(7, &mut packet, header_len),
            Err(CryptoError::DecryptionFailed),
            "{suite:?} key"
        );
    }
}

#[test]
fn keys_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Keys>();
    assert_send::<DirectionalKeys>();
    assert_send::<Secret>();
}

#[test]
fn error_display() {
    assert_eq!(
        CryptoError::UnsupportedVersion(0xff00_001d).to_string(),
        "no packet protection for QUIC version 0xff00001d"
    );
    assert_eq!(
        CryptoError::DecryptionFailed.to_string(),
        "packet decryption failed"
    );
}

proptest! {
    /// Removing protection from arbitrary bytes at an arbitrary offset never panics.
    #[test]
    fn arbitrary_packets_never_panic(
        mut packet in proptest::collection::vec(any::<u8>(), 0..80),
        pn_offset in 0usize..90,
        header_len in 0usize..90,
        pn in any::<u64>(),
        suite in prop::sample::select(ALL_SUITES.to_vec()),
    ) {
        let keys = DirectionalKeys::new(&test_secret(suite, 0x33));
        let _ = keys.header.unprotect(pn_offset, &mut packet);
        let _ = keys.header.protect(pn_offset, &mut packet);
        let _ = keys.packet.open(pn, &mut packet, header_len);
        let _ = keys.packet.seal(pn, &mut packet, header_len);
        let _ = verify_retry_tag(VERSION_1, &[], &packet);
    }

    /// RFC 9001 §5.4.1: header protection masks the low 4 bits of a long header's first byte and the low 5
    /// of a short header's (form, fixed and, for long headers, type bits stay readable), and exactly the
    /// `(first & 0x03) + 1` packet number bytes at `pn_offset`; the rest of the header and the sampled
    /// ciphertext are left as they were. Removal reads the length from the unmasked byte.
    #[test]
    fn protection_touches_only_the_masked_bits(
        first in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 60..80),
        pn_offset in 1usize..30,
        suite in prop::sample::select(ALL_SUITES.to_vec()),
    ) {
        let keys = DirectionalKeys::new(&test_secret(suite, 0x55));
        let original = [&[first][..], &rest].concat();
        let mut packet = original.clone();
        keys.header.protect(pn_offset, &mut packet).expect("room for the sample");
        let bits = if first & 0x80 != 0 { 0x0f } else { 0x1f };
        prop_assert_eq!(packet[0] & !bits, first & !bits);
        let pn_len = usize::from(first & 0x03) + 1;
        for (i, (a, b)) in packet.iter().zip(&original).enumerate().skip(1) {
            if !(pn_offset..pn_offset + pn_len).contains(&i) {
                prop_assert_eq!(a, b, "byte {} outside the packet number changed", i);
            }
        }
        keys.header.unprotect(pn_offset, &mut packet).expect("same length");
        prop_assert_eq!(packet, original);
    }

    /// Protection followed by removal gives back the packet, for any header and payload.
    #[test]
    fn protect_unprotect_round_trip(
        header in proptest::collection::vec(any::<u8>(), 1..40),
        payload in proptest::collection::vec(any::<u8>(), 4..60),
        pn in 0u64..(1 << 62),
        suite in prop::sample::select(ALL_SUITES.to_vec()),
    ) {
        let keys = DirectionalKeys::new(&test_secret(suite, 0x44));
        let pn_len = usize::from(header[0] & 0x03) + 1;
        prop_assume!(header.len() > pn_len);
        let pn_offset = header.len() - pn_len;
        let original = [header.as_slice(), &payload, &[0; 16]].concat();
        let mut packet = original.clone();
        keys.packet.seal(pn, &mut packet, header.len()).expect("room");
        keys.header.protect(pn_offset, &mut packet).expect("payload of 4 + tag holds the sample");
        keys.header.unprotect(pn_offset, &mut packet).expect("same length");
        prop_assert_eq!(&packet[..header.len()], &header[..]);
        let len = keys.packet.open(pn, &mut packet, header.len()).expect("authentic");
        prop_assert_eq!(&packet[..header.len() + len], &original[..header.len() + len]);
    }
}
