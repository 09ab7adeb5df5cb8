//! The receive buffer ([`Assembler`]) against a model that tracks every byte.

use std::collections::VecDeque;

use bytes::Bytes;

use super::input::Input;
use crate::conn::assembler::{AssembleError, Assembler};

/// The byte every sender puts at `offset` (so overlapping copies agree, as RFC 9000 §2.2 requires).
fn byte_at(offset: u64) -> u8 {
    (offset ^ (offset >> 8) ^ (offset >> 17)) as u8
}

/// `reassembly`: arbitrary inserts (any offset, length and overlap) and reads on an [`Assembler`],
/// against a model holding one flag per byte above the read offset.
///
/// Input: a 2-byte window, then records: `[op, ...]`. Bit 0 of `op` clear: an insert, with a 2-byte
/// offset scaled by a power of two from bits 1 to 3 (bit 4 set: counted back from `u64::MAX`; bit 5 set:
/// a slice of a 2048-byte batch, held provisionally; bit 6 set: the batch ends after it) and a 2-byte
/// length (at most 4096); set: a read. Invariants: no panic; a chunk is refused exactly when it ends
/// more than the window past the read offset; reads return exactly the contiguous bytes held at
/// the read offset, with the right contents; the buffered count equals the bytes held.
pub fn check_reassembly(data: &[u8]) {
    let mut input = Input::new(data);
    let window = u64::from(input.u16()) + 1;
    let mut asm = Assembler::default();
    let mut read_offset = 0u64;
    // held[i]: the byte at read_offset + i has arrived. Never longer than the window.
    let mut held: VecDeque<bool> = VecDeque::new();
    let mut held_count = 0usize;
    while !input.is_empty() {
        let op = input.u8();
        if op & 1 == 0 {
            let raw = u64::from(input.u16()) << (2 * ((op >> 1) & 7));
            let offset = if op & 0x10 != 0 { u64::MAX - raw } else { raw };
            let len = usize::from(input.u16()) % 4097;
            let chunk: Bytes = (0..len as u64).map(|i| byte_at(offset.wrapping_add(i))).collect();
            let end = offset.saturating_add(len as u64);
            let result = if op & 0x20 != 0 {
                asm.insert_from_buffer(offset, chunk, window, 2048).map(drop)
            } else {
                asm.insert(offset, chunk, window)
            };
            if op & 0x40 != 0 {
                asm.settle();
            }
            if end > read_offset.saturating_add(window) {
                assert_eq!(
                    result,
                    Err(AssembleError::WindowExceeded),
                    "chunk past the window taken"
                );
                continue;
            }
            assert_eq!(result, Ok(()), "chunk inside the window refused");
            let from = offset.max(read_offset);
            if end > from {
                let (lo, hi) = ((from - read_offset) as usize, (end - read_offset) as usize);
                if held.len() < hi {
                    held.resize(hi, false);
                }
                for h in held.range_mut(lo..hi) {
                    held_count += usize::from(!*h);
                    *h = true;
                }
            }
        } else {
            match asm.read() {
                Some(chunk) => {
                    assert!(!chunk.is_empty(), "an empty chunk");
                    for (i, &b) in chunk.iter().enumerate() {
                        assert_eq!(held.pop_front(), Some(true), "read a byte that never arrived");
                        held_count -= 1;
                        assert_eq!(b, byte_at(read_offset + i as u64), "wrong byte");
                    }
                    read_offset += chunk.len() as u64;
                }
                None => assert_ne!(
                    held.front(),
                    Some(&true),
                    "the next byte arrived but read gave nothing"
                ),
            }
        }
        assert_eq!(
            asm.buffered(),
            held_count,
            "buffered count disagrees with the bytes held"
        );
    }
}
