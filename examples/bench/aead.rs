//! The physical limit of one core: what `ring` alone costs per packet. For every packet, the sender seals
//! the payload and computes a header-protection mask; the receiver computes the mask again and opens the
//! payload. A QUIC engine cannot go faster than this with these primitives.

use std::time::Duration;

use quicsand::crypto::Suite;
use ring::aead::{self, quic, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::measure::cpu_timed;

/// A 1-RTT short header with an 8-byte connection ID and a 4-byte packet number.
pub const HEADER_LEN: usize = 1 + 8 + 4;
const TAG_LEN: usize = 16;

/// Plaintext bytes per packet of `size` bytes: what the limit is expressed in.
pub fn plaintext_len(size: usize) -> usize {
    size - HEADER_LEN - TAG_LEN
}

/// Seals, masks, unmasks and opens `packets` packets of `size` bytes; returns the CPU time.
pub fn run(suite: Suite, size: usize, packets: u64) -> Duration {
    let (alg, hp_alg) = match suite {
        Suite::Aes128Gcm => (&aead::AES_128_GCM, &quic::AES_128),
        Suite::Aes256Gcm => (&aead::AES_256_GCM, &quic::AES_256),
        Suite::ChaCha20Poly1305 => (&aead::CHACHA20_POLY1305, &quic::CHACHA20),
    };
    let key_bytes = [0x42u8; 32];
    let key = LessSafeKey::new(UnboundKey::new(alg, &key_bytes[..alg.key_len()]).expect("key length"));
    let hp = quic::HeaderProtectionKey::new(hp_alg, &key_bytes[..hp_alg.key_len()]).expect("hp key length");
    let mut packet = vec![0u8; size];
    let body = plaintext_len(size);
    let ((), cpu) = cpu_timed(|| {
        for pn in 0..packets {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&pn.to_be_bytes());
            packet[0] = 0x43;
            packet[9..13].copy_from_slice(&(pn as u32).to_be_bytes());
            // Sender: seal, then mask the header with a sample of the ciphertext (RFC 9001 §5.4.2).
            let (header, rest) = packet.split_at_mut(HEADER_LEN);
            let (payload, tag_out) = rest.split_at_mut(body);
            let tag = key
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&*header), payload)
                .expect("seal");
            tag_out.copy_from_slice(tag.as_ref());
            let mask = hp.new_mask(&packet[HEADER_LEN..HEADER_LEN + 16]).expect("mask");
            apply(&mut packet, &mask);
            // Receiver: unmask, then open.
            let mask = hp.new_mask(&packet[HEADER_LEN..HEADER_LEN + 16]).expect("mask");
            apply(&mut packet, &mask);
            let (header, rest) = packet.split_at_mut(HEADER_LEN);
            key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&*header), rest)
                .expect("open");
        }
    });
    cpu
}

fn apply(packet: &mut [u8], mask: &[u8; 5]) {
    packet[0] ^= mask[0] & 0x1f;
    for (b, m) in packet[9..13].iter_mut().zip(&mask[1..]) {
        *b ^= m;
    }
}
