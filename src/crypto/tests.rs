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

const DCID: &str = "8394c8f03e515708";

// Hex blocks as printed in RFC 9001 Appendix A and RFC 9369 Appendix A (line breaks and spaces kept;
// `hex` skips whitespace). The CRYPTO frame and the server payload are the same in both RFCs.
const CRYPTO_FRAME: &str = "
    060040f1010000ed0303ebf8fa56f129 39b9584a3896472ec40bb863cfd3e868
    04fe3a47f06a2b69484c000004130113 02010000c000000010000e00000b6578
    616d706c652e636f6dff01000100000a 00080006001d00170018001000070005
    04616c706e0005000501000000000033 00260024001d00209370b2c9caa47fba
    baf4559fedba753de171fa71f50f1ce1 5d43e994ec74d748002b000302030400
    0d0010000e0403050306030203080408 050806002d00020101001c0002400100
    3900320408ffffffffffffffff050480 00ffff07048000ffff08011001048000
    75300901100f088394c8f03e51570806 048000ffff
";
const V1_CLIENT_HEADER: &str = "c300000001088394c8f03e5157080000449e00000002";
const V1_CLIENT_PROTECTED: &str = "
    c000000001088394c8f03e5157080000 449e7b9aec34d1b1c98dd7689fb8ec11
    d242b123dc9bd8bab936b47d92ec356c 0bab7df5976d27cd449f63300099f399
    1c260ec4c60d17b31f8429157bb35a12 82a643a8d2262cad67500cadb8e7378c
    8eb7539ec4d4905fed1bee1fc8aafba1 7c750e2c7ace01e6005f80fcb7df6212
    30c83711b39343fa028cea7f7fb5ff89 eac2308249a02252155e2347b63d58c5
    457afd84d05dfffdb20392844ae81215 4682e9cf012f9021a6f0be17ddd0c208
    4dce25ff9b06cde535d0f920a2db1bf3 62c23e596d11a4f5a6cf3948838a3aec
    4e15daf8500a6ef69ec4e3feb6b1d98e 610ac8b7ec3faf6ad760b7bad1db4ba3
    485e8a94dc250ae3fdb41ed15fb6a8e5 eba0fc3dd60bc8e30c5c4287e53805db
    059ae0648db2f64264ed5e39be2e20d8 2df566da8dd5998ccabdae053060ae6c
    7b4378e846d29f37ed7b4ea9ec5d82e7 961b7f25a9323851f681d582363aa5f8
    9937f5a67258bf63ad6f1a0b1d96dbd4 faddfcefc5266ba6611722395c906556
    be52afe3f565636ad1b17d508b73d874 3eeb524be22b3dcbc2c7468d54119c74
    68449a13d8e3b95811a198f3491de3e7 fe942b330407abf82a4ed7c1b311663a
    c69890f4157015853d91e923037c227a 33cdd5ec281ca3f79c44546b9d90ca00
    f064c99e3dd97911d39fe9c5d0b23a22 9a234cb36186c4819e8b9c5927726632
    291d6a418211cc2962e20fe47feb3edf 330f2c603a9d48c0fcb5699dbfe58964
    25c5bac4aee82e57a85aaf4e2513e4f0 5796b07ba2ee47d80506f8d2c25e50fd
    14de71e6c418559302f939b0e1abd576 f279c4b2e0feb85c1f28ff18f58891ff
    ef132eef2fa09346aee33c28eb130ff2 8f5b766953334113211996d20011a198
    e3fc433f9f2541010ae17c1bf202580f 6047472fb36857fe843b19f5984009dd
    c324044e847a4f4a0ab34f719595de37 252d6235365e9b84392b061085349d73
    203a4a13e96f5432ec0fd4a1ee65accd d5e3904df54c1da510b0ff20dcc0c77f
    cb2c0e0eb605cb0504db87632cf3d8b4 dae6e705769d1de354270123cb11450e
    fc60ac47683d7b8d0f811365565fd98c 4c8eb936bcab8d069fc33bd801b03ade
    a2e1fbc5aa463d08ca19896d2bf59a07 1b851e6c239052172f296bfb5e724047
    90a2181014f3b94a4e97d117b4381303 68cc39dbb2d198065ae3986547926cd2
    162f40a29f0c3c8745c0f50fba3852e5 66d44575c29d39a03f0cda721984b6f4
    40591f355e12d439ff150aab7613499d bd49adabc8676eef023b15b65bfc5ca0
    6948109f23f350db82123535eb8a7433 bdabcb909271a6ecbcb58b936a88cd4e
    8f2e6ff5800175f113253d8fa9ca8885 c2f552e657dc603f252e1a8e308f76f0
    be79e2fb8f5d5fbbe2e30ecadd220723 c8c0aea8078cdfcb3868263ff8f09400
    54da48781893a7e49ad5aff4af300cd8 04a6b6279ab3ff3afb64491c85194aab
    760d58a606654f9f4400e8b38591356f bf6425aca26dc85244259ff2b19c41b9
    f96f3ca9ec1dde434da7d2d392b905dd f3d1f9af93d1af5950bd493f5aa731b4
    056df31bd267b6b90a079831aaf579be 0a39013137aac6d404f518cfd4684064
    7e78bfe706ca4cf5e9c5453e9f7cfd2b 8b4c8d169a44e55c88d4a9a7f9474241
    e221af44860018ab0856972e194cd934
";
const SERVER_PAYLOAD: &str = "
    02000000000600405a020000560303ee fce7f7b37ba1d1632e96677825ddf739
    88cfc79825df566dc5430b9a045a1200 130100002e00330024001d00209d3c94
    0d89690b84d08a60993c144eca684d10 81287c834d5311bcf32bb9da1a002b00
    020304
";
const V1_SERVER_HEADER: &str = "c1000000010008f067a5502a4262b50040750001";
const V1_SERVER_PROTECTED: &str = "
    cf000000010008f067a5502a4262b500 4075c0d95a482cd0991cd25b0aac406a
    5816b6394100f37a1c69797554780bb3 8cc5a99f5ede4cf73c3ec2493a1839b3
    dbcba3f6ea46c5b7684df3548e7ddeb9 c3bf9c73cc3f3bded74b562bfb19fb84
    022f8ef4cdd93795d77d06edbb7aaf2f 58891850abbdca3d20398c276456cbc4
    2158407dd074ee
";
const V1_RETRY: &str = "
    ff000000010008f067a5502a4262b574 6f6b656e04a265ba2eff4d829058fb3f
    0f2496ba
";
const V2_CLIENT_HEADER: &str = "d36b3343cf088394c8f03e5157080000449e00000002";
const V2_CLIENT_PROTECTED: &str = "
    d76b3343cf088394c8f03e5157080000 449ea0c95e82ffe67b6abcdb4298b485
    dd04de806071bf03dceebfa162e75d6c 96058bdbfb127cdfcbf903388e99ad04
    9f9a3dd4425ae4d0992cfff18ecf0fdb 5a842d09747052f17ac2053d21f57c5d
    250f2c4f0e0202b70785b7946e992e58 a59ac52dea6774d4f03b55545243cf1a
    12834e3f249a78d395e0d18f4d766004 f1a2674802a747eaa901c3f10cda5500
    cb9122faa9f1df66c392079a1b40f0de 1c6054196a11cbea40afb6ef5253cd68
    18f6625efce3b6def6ba7e4b37a40f77 32e093daa7d52190935b8da58976ff33
    12ae50b187c1433c0f028edcc4c2838b 6a9bfc226ca4b4530e7a4ccee1bfa2a3
    d396ae5a3fb512384b2fdd851f784a65 e03f2c4fbe11a53c7777c023462239dd
    6f7521a3f6c7d5dd3ec9b3f233773d4b 46d23cc375eb198c63301c21801f6520
    bcfb7966fc49b393f0061d974a2706df 8c4a9449f11d7f3d2dcbb90c6b877045
    636e7c0c0fe4eb0f697545460c806910 d2c355f1d253bc9d2452aaa549e27a1f
    ac7cf4ed77f322e8fa894b6a83810a34 b361901751a6f5eb65a0326e07de7c12
    16ccce2d0193f958bb3850a833f7ae43 2b65bc5a53975c155aa4bcb4f7b2c4e5
    4df16efaf6ddea94e2c50b4cd1dfe060 17e0e9d02900cffe1935e0491d77ffb4
    fdf85290fdd893d577b1131a610ef6a5 c32b2ee0293617a37cbb08b847741c3b
    8017c25ca9052ca1079d8b78aebd4787 6d330a30f6a8c6d61dd1ab5589329de7
    14d19d61370f8149748c72f132f0fc99 f34d766c6938597040d8f9e2bb522ff9
    9c63a344d6a2ae8aa8e51b7b90a4a806 105fcbca31506c446151adfeceb51b91
    abfe43960977c87471cf9ad4074d30e1 0d6a7f03c63bd5d4317f68ff325ba3bd
    80bf4dc8b52a0ba031758022eb025cdd 770b44d6d6cf0670f4e990b22347a7db
    848265e3e5eb72dfe8299ad7481a4083 22cac55786e52f633b2fb6b614eaed18
    d703dd84045a274ae8bfa73379661388 d6991fe39b0d93debb41700b41f90a15
    c4d526250235ddcd6776fc77bc97e7a4 17ebcb31600d01e57f32162a8560cacc
    7e27a096d37a1a86952ec71bd89a3e9a 30a2a26162984d7740f81193e8238e61
    f6b5b984d4d3dfa033c1bb7e4f0037fe bf406d91c0dccf32acf423cfa1e70710
    10d3f270121b493ce85054ef58bada42 310138fe081adb04e2bd901f2f13458b
    3d6758158197107c14ebb193230cd115 7380aa79cae1374a7c1e5bbcb80ee23e
    06ebfde206bfb0fcbc0edc4ebec30966 1bdd908d532eb0c6adc38b7ca7331dce
    8dfce39ab71e7c32d318d136b6100671 a1ae6a6600e3899f31f0eed19e3417d1
    34b90c9058f8632c798d4490da498730 7cba922d61c39805d072b589bd52fdf1
    e86215c2d54e6670e07383a27bbffb5a ddf47d66aa85a0c6f9f32e59d85a44dd
    5d3b22dc2be80919b490437ae4f36a0a e55edf1d0b5cb4e9a3ecabee93dfc6e3
    8d209d0fa6536d27a5d6fbb17641cde2 7525d61093f1b28072d111b2b4ae5f89
    d5974ee12e5cf7d5da4d6a31123041f3 3e61407e76cffcdcfd7e19ba58cf4b53
    6f4c4938ae79324dc402894b44faf8af bab35282ab659d13c93f70412e85cb19
    9a37ddec600545473cfb5a05e08d0b20 9973b2172b4d21fb69745a262ccde96b
    a18b2faa745b6fe189cf772a9f84cbfc
";
const V2_SERVER_HEADER: &str = "d16b3343cf0008f067a5502a4262b50040750001";
const V2_SERVER_PROTECTED: &str = "
    dc6b3343cf0008f067a5502a4262b500 4075d92faaf16f05d8a4398c47089698
    baeea26b91eb761d9b89237bbf872630 17915358230035f7fd3945d88965cf17
    f9af6e16886c61bfc703106fbaf3cb4c fa52382dd16a393e42757507698075b2
    c984c707f0a0812d8cd5a6881eaf21ce da98f4bd23f6fe1a3e2c43edd9ce7ca8
    4bed8521e2e140
";
const V2_RETRY: &str = "
    cf6b3343cf0008f067a5502a4262b574 6f6b656ec8646ce8bfe33952d9555436
    65dcc7b6
";

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
