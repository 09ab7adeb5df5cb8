//! The engine's only source of randomness: a seeded, cryptographically secure generator.
//!
//! Every random choice (connection IDs, packet number skips, PATH_CHALLENGE data, the filler of
//! stateless resets, key-update intervals, the unused bits of Version Negotiation, and the stateless
//! reset and token keys when the configuration gives none) comes from an [`Rng`] derived from the seed
//! in [`EndpointConfig`](crate::EndpointConfig), so two runs with the same seed and the same inputs make
//! the same choices.
//!
//! Many of these values must be unpredictable to anyone who sees the others (RFC 9000 §5.1, §8.2.1,
//! §10.3, §21.4), so the generator is the ChaCha20 keystream (RFC 8439 §2.3) under a 256-bit key: its
//! output reveals nothing of the key or of the output to come. (A fast non-cryptographic generator would
//! not do: a few stateless resets' filler gave its whole state away, and with it every key derived from
//! it.)

use std::fmt;

/// Words of the ChaCha20 constant "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The ChaCha20 block function (RFC 8439 §2.3): 64 bytes of keystream for `key`, block `counter` and
/// `nonce`.
fn chacha20_block(key: &[u32; 8], counter: u32, nonce: &[u32; 3], out: &mut [u8; 64]) {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&SIGMA);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(nonce);
    let mut x = init;
    fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(16);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(12);
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(8);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(7);
    }
    for _ in 0..10 {
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 1, 5, 9, 13);
        quarter(&mut x, 2, 6, 10, 14);
        quarter(&mut x, 3, 7, 11, 15);
        quarter(&mut x, 0, 5, 10, 15);
        quarter(&mut x, 1, 6, 11, 12);
        quarter(&mut x, 2, 7, 8, 13);
        quarter(&mut x, 3, 4, 9, 14);
    }
    for ((chunk, word), first) in out.chunks_exact_mut(4).zip(x).zip(init) {
        chunk.copy_from_slice(&word.wrapping_add(first).to_le_bytes());
    }
}

/// The ChaCha20 keystream under a 256-bit key, read from the start. The block counter runs over 2^64
/// blocks (the low half in the counter word, the high half in the first nonce word), far more than an
/// endpoint ever draws.
#[derive(Clone)]
pub struct Rng {
    key: [u32; 8],
    /// The next block.
    block: u64,
    buf: [u8; 64],
    /// Bytes of `buf` already handed out.
    used: usize,
}

impl fmt::Debug for Rng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is the whole secret: never printed.
        f.debug_struct("Rng").finish_non_exhaustive()
    }
}

impl Rng {
    /// A generator whose whole output is determined by the 256-bit `key`.
    pub fn from_key(key: [u8; 32]) -> Self {
        let mut words = [0u32; 8];
        for (w, b) in words.iter_mut().zip(key.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Self {
            key: words,
            block: 0,
            buf: [0; 64],
            used: 64,
        }
    }

    /// A generator whose whole output is determined by `seed`: for tests and simulations, whose runs
    /// must repeat. Only 64 bits of secret: an endpoint facing the internet is seeded with 256 random
    /// bits (see [`EndpointConfig::seed`](crate::EndpointConfig::seed)).
    pub fn from_seed(seed: u64) -> Self {
        Self::from_key(seed_from_u64(seed))
    }

    fn refill(&mut self) {
        let nonce = [(self.block >> 32) as u32, 0, 0];
        chacha20_block(&self.key, self.block as u32, &nonce, &mut self.buf);
        self.block = self.block.wrapping_add(1);
        self.used = 0;
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// A value in `0..n` (`n` > 0), without modulo bias worth caring about for n far below 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Fills `dest` with random bytes.
    pub fn fill(&mut self, mut dest: &mut [u8]) {
        while !dest.is_empty() {
            if self.used == self.buf.len() {
                self.refill();
            }
            let n = dest.len().min(self.buf.len() - self.used);
            let (now, rest) = dest.split_at_mut(n);
            now.copy_from_slice(&self.buf[self.used..self.used + n]);
            self.used += n;
            dest = rest;
        }
    }

    /// 32 random bytes: a key.
    pub fn key(&mut self) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.fill(&mut key);
        key
    }

    /// An independent generator derived from this one (for a new connection), under a key of its own.
    pub fn fork(&mut self) -> Rng {
        Rng::from_key(self.key())
    }
}

/// The 256-bit seed a 64-bit one stands for: its little-endian bytes, then zeros.
pub fn seed_from_u64(seed: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8439_block_function_test_vector() {
        // RFC 8439 §2.3.2.
        let mut key = [0u32; 8];
        for (i, w) in key.iter_mut().enumerate() {
            let b = 4 * i as u8;
            *w = u32::from_le_bytes([b, b + 1, b + 2, b + 3]);
        }
        let nonce = [0x0900_0000, 0x4a00_0000, 0];
        let mut out = [0u8; 64];
        chacha20_block(&key, 1, &nonce, &mut out);
        let expected = "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
                        d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e";
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn the_keystream_is_read_in_order_whatever_the_draw_sizes() {
        let mut a = Rng::from_seed(5);
        let mut whole = [0u8; 200];
        a.fill(&mut whole);
        let mut b = Rng::from_seed(5);
        let mut pieces = Vec::new();
        for n in [3usize, 61, 8, 64, 1, 63] {
            let mut p = vec![0u8; n];
            b.fill(&mut p);
            pieces.extend(p);
        }
        assert_eq!(&whole[..], &pieces[..]);
        // Block 0 of the key the seed stands for.
        let key = seed_from_u64(5);
        let mut words = [0u32; 8];
        for (w, c) in words.iter_mut().zip(key.chunks_exact(4)) {
            *w = u32::from_le_bytes(c.try_into().unwrap());
        }
        let mut block = [0u8; 64];
        chacha20_block(&words, 0, &[0; 3], &mut block);
        assert_eq!(&whole[..64], &block[..]);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::from_seed(7);
        let mut b = Rng::from_seed(7);
        let mut c = Rng::from_seed(8);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        // A fork is a generator of its own, and forking is repeatable too.
        let (mut fa, mut fb) = (a.fork(), b.fork());
        assert_eq!(fa.next_u64(), fb.next_u64());
        assert_ne!(fa.next_u64(), a.next_u64());
    }

    #[test]
    fn below_and_fill() {
        let mut r = Rng::from_seed(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "every value of 0..10 appears in 1000 draws"
        );
        let mut buf = [0u8; 13];
        r.fill(&mut buf);
        assert!(buf.iter().any(|b| *b != 0));
    }

    #[test]
    fn the_key_is_not_printed() {
        let r = Rng::from_key([0xab; 32]);
        let shown = format!("{r:?}");
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
    }
}
