//! Deterministic payloads that a receiver can check byte by byte without keeping a copy.

/// SplitMix64 (Steele, Lea, Flood 2014): a cheap, well-mixed 64-bit hash.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Byte `offset` of payload `id` under `seed`: a misplaced, repeated or corrupted byte shows up.
pub fn byte(seed: u64, id: u64, offset: u64) -> u8 {
    let word = splitmix64(seed ^ id.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ splitmix64(offset / 8));
    word.to_le_bytes()[(offset % 8) as usize]
}

/// Fills `out` with bytes `offset..offset + out.len()` of payload `id`.
pub fn fill(seed: u64, id: u64, offset: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        *b = byte(seed, id, offset + k as u64);
    }
}

/// How many leading bytes of `data` match payload `id` from `offset` on.
pub fn matching_prefix(seed: u64, id: u64, offset: u64, data: &[u8]) -> usize {
    data.iter()
        .enumerate()
        .position(|(k, b)| *b != byte(seed, id, offset + k as u64))
        .unwrap_or(data.len())
}
