//! Reassembly of an ordered byte stream from chunks that arrive out of order, overlapping or duplicated
//! (CRYPTO data now, stream data later).
//!
//! Stored chunks never overlap: a new chunk is cut to the gaps between what is already held, so memory
//! stays below the window the caller allows, whatever the peer sends, and the work per chunk is
//! proportional to the chunks it overlaps.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

/// Why [`Assembler::insert`] refused a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssembleError {
    /// The chunk ends more than the window past the read offset.
    WindowExceeded,
}

/// Chunks above a read offset: the in-order run that can be read now in a queue, the chunks beyond the
/// first gap in an ordered map.
#[derive(Debug)]
pub(crate) struct Assembler {
    /// Bytes before this offset were handed out.
    read_offset: u64,
    /// Chunks covering `read_offset..ready_end` without a gap, in order. In-order arrival, the common
    /// case, only ever touches this queue, which keeps its storage between reads.
    ready: VecDeque<Bytes>,
    /// The end of the gapless run from `read_offset`.
    ready_end: u64,
    /// Non-overlapping chunks at offsets > `ready_end`, keyed by offset.
    chunks: BTreeMap<u64, Bytes>,
    /// Sum of the chunk lengths.
    buffered: usize,
    /// In-order chunks held zero-copy out of a batch of datagrams still being received, kept or copied
    /// by [`Assembler::settle`] once the batch is done.
    provisional: Option<Provisional>,
    /// The runs `settle` kept as they came, in order: what is left of the first is copied once a read
    /// leaves less than half of its buffer's size of it, so that every buffer kept alive holds at least
    /// half its size of bytes not read yet.
    kept: VecDeque<KeptRun>,
    /// The size of the buffer the chunk last read is a slice of, if it was one of a kept run; may be
    /// left from an earlier read, see [`Assembler::last_read_buffer`].
    last_read_buffer: u32,
}

/// Bytes `start..end` of the stream, held as slices of one received buffer of `buffer_len` bytes (and
/// of the chunks that joined the ready run among them).
#[derive(Debug, Clone, Copy)]
struct KeptRun {
    start: u64,
    end: u64,
    buffer_len: u32,
}

/// Chunks at `ready[first..]` held zero-copy out of a received buffer of `buffer_len` bytes (a batch of
/// datagrams), `bytes` of them from that buffer.
#[derive(Debug, Clone, Copy)]
struct Provisional {
    first: u32,
    bytes: u32,
    buffer_len: u32,
}

/// How [`Assembler::insert_as`] holds the bytes it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// As they came.
    AsIs,
    /// As they came if in order, until [`Assembler::settle`] (copied otherwise); a slice of a buffer of
    /// this many bytes.
    Provisional(usize),
}

impl Default for Assembler {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Contiguous pieces are merged while the result stays within this many bytes.
const MERGE_BELOW: usize = 4096;

/// Only pieces shorter than this are merged into the chunk before them.
const MERGE_PIECE_BELOW: usize = 512;

/// The ready run merges small pieces once it holds this many chunks.
const MERGE_READY_FROM: usize = 8;

/// Pieces shorter than this are copied out of the buffer they arrived in (their datagram, or its batch)
/// before being held beyond a gap.
const COPY_BELOW: usize = 1024;

/// Datagrams up to this size (an Ethernet frame's payload) are held as they came: a piece of one
/// keeps at most this much alive, about three times an in-order piece of the size below which pieces
/// are merged (smaller out-of-order ones are copied).
const SMALL_DATAGRAM: usize = 1500;

/// Whether `data`, a slice of a received buffer of `buffer_len` bytes (a datagram, or a batch of them
/// received together), is to be copied before it is held: when the buffer is larger than an Ethernet
/// frame and `data` less than half of it. A held `Bytes` keeps its whole buffer alive, so a piece alone
/// in a large datagram (a 1 KiB piece in a 64 KB datagram) or in a batch would otherwise hold many
/// times the bytes that flow control and the receive buffers count. Pieces of lone datagrams of usual
/// sizes, however small their share, are not copied: that would cost request and response traffic a
/// copy per frame.
#[inline]
pub(crate) fn pins(data: &[u8], buffer_len: usize) -> bool {
    buffer_len > SMALL_DATAGRAM && data.len().saturating_mul(2) < buffer_len
}

/// `data` in an allocation of its own if [`pins`] says so, or if it is small whatever its share of the
/// buffer: for data that may wait long (beyond a gap, or for the application), at a cost per piece
/// that is the piece's length plus one allocation.
pub(crate) fn compact(data: Bytes, buffer_len: usize) -> Bytes {
    if data.len() < COPY_BELOW || pins(&data, buffer_len) {
        Bytes::copy_from_slice(&data)
    } else {
        data
    }
}

/// Appends `piece` to `prev` if it is small and the result stays within [`MERGE_BELOW`]; so that data
/// sent in tiny frames costs one entry per few kilobytes, not one per frame. The merged chunk grows in
/// place when nothing else references it, so merging costs amortised O(1) per byte; full-size pieces
/// (the bulk case) are held as they came, without a copy.
fn merge_small(prev: &mut Bytes, piece: &Bytes) -> bool {
    if piece.len() >= MERGE_PIECE_BELOW || prev.len() + piece.len() > MERGE_BELOW {
        return false;
    }
    let mut merged = match std::mem::take(prev).try_into_mut() {
        Ok(unique) => unique,
        // A small shared chunk is copied into a buffer of its own that later pieces fill in place; a
        // larger one (a slice of a datagram) is left alone rather than copied for a small neighbour.
        Err(shared) if shared.len() < COPY_BELOW => {
            let mut m = BytesMut::with_capacity(MERGE_BELOW);
            m.extend_from_slice(&shared);
            m
        }
        Err(shared) => {
            *prev = shared;
            return false;
        }
    };
    merged.extend_from_slice(piece);
    *prev = merged.freeze();
    true
}

impl Assembler {
    /// Nothing received yet, read offset 0.
    pub(crate) const EMPTY: Assembler = Assembler {
        read_offset: 0,
        ready: VecDeque::new(),
        ready_end: 0,
        chunks: BTreeMap::new(),
        buffered: 0,
        provisional: None,
        kept: VecDeque::new(),
        last_read_buffer: 0,
    };

    /// Separate pieces held beyond the first gap. The in-order run is not counted: flow control bounds
    /// its bytes, and its pieces are at least [`MERGE_PIECE_BELOW`] bytes or merged, so a peer cannot cut
    /// it finer than that; only data around holes can be cut byte by byte.
    pub(crate) fn fragments(&self) -> usize {
        self.chunks.len()
    }

    /// The end of the data held without a gap from the read offset: a chunk starting beyond it has to
    /// wait for a gap to fill.
    pub(crate) fn contiguous_end(&self) -> u64 {
        self.ready_end
    }

    /// Bytes held.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Adds `data` at `offset`, keeping only bytes not already held or read. Fails when the chunk ends
    /// more than `window` bytes past the read offset.
    #[inline]
    pub(crate) fn insert(&mut self, offset: u64, data: Bytes, window: u64) -> Result<(), AssembleError> {
        self.insert_as(offset, data, window, Hold::AsIs).map(drop)
    }

    /// [`Assembler::insert`] for `data`, a slice of a batch of datagrams of `buffer_len` bytes being
    /// received: in order, it is held as it came until [`Assembler::settle`], which copies what this
    /// batch left here if that is less than half of the batch (it would keep more than twice itself
    /// alive); out of order, it is copied at once. Returns whether this started a provisional run, which
    /// the caller is to settle once the batch is done.
    pub(crate) fn insert_provisional(
        &mut self,
        offset: u64,
        data: Bytes,
        window: u64,
        buffer_len: usize,
    ) -> Result<bool, AssembleError> {
        self.insert_as(offset, data, window, Hold::Provisional(buffer_len))
    }

    fn insert_as(
        &mut self,
        offset: u64,
        mut data: Bytes,
        window: u64,
        hold: Hold,
    ) -> Result<bool, AssembleError> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.read_offset.saturating_add(window) {
            return Err(AssembleError::WindowExceeded);
        }
        // Everything below `ready_end` is held or was read.
        if end <= self.ready_end || data.is_empty() {
            return Ok(false);
        }
        let mut start = offset;
        if start < self.ready_end {
            data = data.slice((self.ready_end - start) as usize..);
            start = self.ready_end;
        }
        // In order, and short of every out-of-order chunk: extend the ready run.
        if start == self.ready_end && self.chunks.first_key_value().map_or(true, |(k, _)| end <= *k) {
            let started = match hold {
                Hold::AsIs => {
                    self.push_ready(data);
                    false
                }
                Hold::Provisional(buffer_len) => self.push_provisional(data, buffer_len),
            };
            self.promote();
            return Ok(started);
        }
        // Beyond a gap: one copy of the chunk, whose pieces are held.
        if hold != Hold::AsIs {
            data = Bytes::copy_from_slice(&data);
        }
        // The chunk starts at or after the end of everything held.
        let held_end = self
            .chunks
            .last_key_value()
            .map_or(self.ready_end, |(k, v)| k + v.len() as u64);
        if start >= held_end {
            self.buffered += data.len();
            self.put(start, data);
            self.promote();
            return Ok(false);
        }
        // A held chunk starting before `start` may cover its beginning; then walk the held chunks inside
        // [start, end), inserting the gaps between them.
        let mut cursor = start;
        if let Some((k, v)) = self.chunks.range(..start).next_back() {
            cursor = cursor.max(k + v.len() as u64);
        }
        while cursor < end {
            let next = self
                .chunks
                .range(cursor..end)
                .next()
                .map(|(k, v)| (*k, *k + v.len() as u64));
            let gap_end = next.map_or(end, |(s, _)| s);
            if gap_end > cursor {
                let piece = data.slice((cursor - start) as usize..(gap_end - start) as usize);
                self.buffered += piece.len();
                self.put(cursor, piece);
            }
            match next {
                Some((_, e)) => cursor = e,
                None => break,
            }
        }
        self.promote();
        Ok(false)
    }

    /// Appends `data`, which starts at `ready_end`, to the ready run.
    fn push_ready(&mut self, data: Bytes) {
        self.ready_end += data.len() as u64;
        self.buffered += data.len();
        // A short run is read soon and costs little; merging pays off only once tiny pieces pile up.
        if self.ready.len() >= MERGE_READY_FROM {
            if let Some(back) = self.ready.back_mut() {
                if merge_small(back, &data) {
                    return;
                }
            }
        }
        self.ready.push_back(data);
    }

    /// Appends `data`, which starts at `ready_end` and is a slice of a buffer of `buffer_len` bytes, to
    /// the ready run as it came, in the provisional run; whether that run starts here.
    fn push_provisional(&mut self, data: Bytes, buffer_len: usize) -> bool {
        let len = data.len();
        self.ready_end += len as u64;
        self.buffered += len;
        let started = self.provisional.is_none();
        let first = u32::try_from(self.ready.len()).unwrap_or(u32::MAX);
        let run = self.provisional.get_or_insert(Provisional {
            first,
            bytes: 0,
            buffer_len: 0,
        });
        run.bytes = run.bytes.saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        run.buffer_len = run.buffer_len.max(u32::try_from(buffer_len).unwrap_or(u32::MAX));
        // Not merged into the chunk before: that would copy it, or the chunk before into it.
        self.ready.push_back(data);
        started
    }

    /// Ends the provisional run (see [`Assembler::insert_provisional`]): its chunks stay as they came if
    /// they are at least half of the buffer they share, so that they keep at most twice themselves
    /// alive; otherwise they are copied into one chunk, which lets go of the buffer.
    pub(crate) fn settle(&mut self) {
        let Some(run) = self.provisional.take() else {
            return;
        };
        // The chunks from `first` on: the run's, and those that joined the ready run after it (from
        // beyond a gap).
        let first = (run.first as usize).min(self.ready.len());
        let len: usize = self.ready.range(first..).map(Bytes::len).sum();
        if u64::from(run.bytes) * 2 >= u64::from(run.buffer_len) {
            self.kept.push_back(KeptRun {
                start: self.ready_end - len as u64,
                end: self.ready_end,
                buffer_len: run.buffer_len,
            });
            return;
        }
        let mut copy = BytesMut::with_capacity(len);
        for chunk in self.ready.drain(first..) {
            copy.extend_from_slice(&chunk);
        }
        if !copy.is_empty() {
            self.ready.push_back(copy.freeze());
        }
    }

    /// After a read: drops the kept runs read to their end, and copies what is left of the first if it
    /// is less than half of its buffer (the application read the rest), which lets go of the buffer.
    /// Also notes the buffer of the chunk just read, which began at `from`.
    #[cold]
    fn trim_kept(&mut self, from: u64) {
        self.last_read_buffer = match self.kept.front() {
            Some(run) if run.start <= from && from < run.end => run.buffer_len,
            _ => 0,
        };
        while let Some(run) = self.kept.front().copied() {
            if run.end <= self.read_offset {
                self.kept.pop_front();
                continue;
            }
            if run.start < self.read_offset && (run.end - self.read_offset) * 2 < u64::from(run.buffer_len) {
                self.kept.pop_front();
                // The chunks at the front up to the run's end (the last may reach beyond it, merged).
                let mut covered = self.read_offset;
                let mut count = 0;
                for chunk in &self.ready {
                    if covered >= run.end {
                        break;
                    }
                    covered += chunk.len() as u64;
                    count += 1;
                }
                let mut copy = BytesMut::with_capacity((covered - self.read_offset) as usize);
                for chunk in self.ready.drain(..count) {
                    copy.extend_from_slice(&chunk);
                }
                if !copy.is_empty() {
                    self.ready.push_front(copy.freeze());
                }
            }
            return;
        }
    }

    /// The size of the received buffer the chunk last read is a slice of, if it is one of a run kept as
    /// it came (0 if not): a caller that holds on to part of the chunk decides by it whether to copy the
    /// part. It may be that of an earlier chunk, which costs a needless copy at worst: it is only set
    /// while kept runs are held (and a read of a chunk of a kept run always sets it), so that reads
    /// without them (most) pay nothing for it.
    pub(crate) fn last_read_buffer(&self) -> usize {
        self.last_read_buffer as usize
    }

    /// Moves the chunks that now continue the ready run from the map into it.
    fn promote(&mut self) {
        while let Some(entry) = self.chunks.first_entry() {
            if *entry.key() != self.ready_end {
                break;
            }
            let data = entry.remove();
            // `push_ready` counts the bytes again.
            self.buffered -= data.len();
            self.push_ready(data);
        }
    }

    /// Holds `piece` at `at` in the map, merged into the chunk that ends there when both are small.
    fn put(&mut self, at: u64, piece: Bytes) {
        if let Some((k, prev)) = self.chunks.range_mut(..at).next_back() {
            if k + prev.len() as u64 == at && merge_small(prev, &piece) {
                return;
            }
        }
        self.chunks.insert(at, piece);
    }

    /// Whether any byte is held that was not read yet (in order or beyond a gap).
    pub(crate) fn has_unread(&self) -> bool {
        !self.ready.is_empty() || !self.chunks.is_empty()
    }

    /// The next in-order chunk, if the byte at the read offset has arrived.
    #[inline]
    pub(crate) fn read(&mut self) -> Option<Bytes> {
        // Its indices hold only until the first read (the owner settles it before one anyway).
        if self.provisional.is_some() {
            self.settle();
        }
        let data = self.ready.pop_front()?;
        self.buffered -= data.len();
        let from = self.read_offset;
        self.read_offset += data.len() as u64;
        if !self.kept.is_empty() {
            self.trim_kept(from);
        }
        Some(data)
    }

    /// Drops every chunk held, keeping the ready queue's storage only if it has at most `keep` slots
    /// (for [`Assembler::reuse_storage`]; [`Assembler::clear`] keeps none).
    pub(crate) fn release(&mut self, keep: usize) {
        if self.ready.capacity() > keep {
            self.ready = VecDeque::new();
        } else {
            self.ready.clear();
        }
        self.chunks.clear();
        self.provisional = None;
        self.kept = VecDeque::new();
        self.ready_end = self.read_offset;
        self.buffered = 0;
    }

    /// Takes the ready queue's storage from `old`, emptied by [`Assembler::release`], for this (new)
    /// assembler.
    pub(crate) fn reuse_storage(&mut self, old: Assembler) {
        debug_assert!(old.ready.is_empty(), "released before reuse");
        if self.ready.is_empty() {
            self.ready = old.ready;
        }
    }

    /// Drops everything held (the space or stream is gone).
    pub(crate) fn clear(&mut self) {
        // Storage released too: a discarded space or a reset stream holds none.
        self.release(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(a: &mut Assembler) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = a.read() {
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn in_order_out_of_order_and_overlaps() {
        let mut a = Assembler::default();
        a.insert(5, Bytes::from_static(b"fghij"), 100).unwrap();
        assert_eq!(a.read(), None);
        a.insert(3, Bytes::from_static(b"defg"), 100).unwrap();
        a.insert(0, Bytes::from_static(b"abc"), 100).unwrap();
        a.insert(0, Bytes::from_static(b"abcdefghijk"), 100).unwrap();
        assert_eq!(read_all(&mut a), b"abcdefghijk");
        assert_eq!(a.buffered(), 0);
        a.insert(2, Bytes::from_static(b"old"), 100).unwrap();
        assert_eq!(a.buffered(), 0, "data below the read offset is dropped");
        assert_eq!(
            a.insert(50, Bytes::from_static(b"x"), 39),
            Err(AssembleError::WindowExceeded)
        );
    }

    #[test]
    fn tiny_contiguous_pieces_merge_and_holes_do_not() {
        let mut a = Assembler::default();
        for i in 0..10_000u64 {
            a.insert(i, Bytes::from_static(b"x"), 1 << 20).unwrap();
        }
        // 10,000 bytes: the first few pieces as they came, the rest in chunks of at most 4 KiB; ten
        // entries, not 10,000, none of them counted as a fragment (they can be read in order).
        assert_eq!(a.ready.len(), MERGE_READY_FROM + 2);
        assert_eq!(a.fragments(), 0);
        assert_eq!(read_all(&mut a).len(), 10_000);
        for i in 0..100u64 {
            a.insert(10_001 + 2 * i, Bytes::from_static(b"y"), 1 << 20)
                .unwrap();
        }
        assert_eq!(a.fragments(), 100);
        // Beyond a gap, contiguous tiny pieces merge as well.
        for i in 0..10_000u64 {
            a.insert(20_000 + i, Bytes::from_static(b"z"), 1 << 20).unwrap();
        }
        assert_eq!(a.fragments(), 100 + 3);
    }

    /// Ten in-order pieces of a batch: held as they came (the batch is kept alive) when they are at least
    /// half of it, copied into one chunk (the batch let go of) when they are less.
    #[test]
    fn a_provisional_run_is_kept_or_copied_by_its_share_of_the_batch() {
        for (batch_len, kept) in [(20_000, true), (20_001, false)] {
            let batch = Bytes::from(vec![9u8; batch_len]);
            let mut a = Assembler::default();
            let mut started = 0;
            for i in 0..10 {
                let piece = batch.slice(i * 1000..(i + 1) * 1000);
                started += usize::from(
                    a.insert_provisional(i as u64 * 1000, piece, 1 << 20, batch_len)
                        .unwrap(),
                );
            }
            assert_eq!(started, 1, "one run per batch");
            a.settle();
            assert_eq!(a.buffered(), 10_000);
            assert_eq!(!batch.is_unique(), kept, "batch of {batch_len} bytes");
            assert_eq!(a.ready.len(), if kept { 10 } else { 1 });
            assert_eq!(read_all(&mut a), vec![9u8; 10_000]);
            assert!(batch.is_unique());
        }
    }

    /// A run settled copies only what came from its batch on: chunks held before it stay as they were.
    #[test]
    fn settling_copies_only_the_run() {
        let earlier = Bytes::from(vec![1u8; 1500]);
        let batch = Bytes::from(vec![2u8; 60_000]);
        let mut a = Assembler::default();
        a.insert(0, earlier.clone(), 1 << 20).unwrap();
        assert!(a
            .insert_provisional(1500, batch.slice(..100), 1 << 20, batch.len())
            .unwrap());
        // Out of order, from the same batch: copied at once.
        a.insert_provisional(1700, batch.slice(200..300), 1 << 20, batch.len())
            .unwrap();
        assert_eq!(a.fragments(), 1);
        assert!(!a
            .insert_provisional(1600, batch.slice(100..200), 1 << 20, batch.len())
            .unwrap());
        a.settle();
        assert!(batch.is_unique(), "300 bytes of 60,000 are copied");
        assert!(
            !earlier.is_unique(),
            "the chunk before the run is held as it came"
        );
        let mut expected = vec![1u8; 1500];
        expected.extend_from_slice(&[2u8; 300]);
        assert_eq!(read_all(&mut a), expected);
    }

    /// A kept run read in part: held as it came while at least half of its buffer's size is unread,
    /// copied once less is.
    #[test]
    fn the_unread_end_of_a_kept_run_is_copied() {
        let batch = Bytes::from(vec![4u8; 10_000]);
        let mut a = Assembler::default();
        for i in 0..8 {
            let piece = batch.slice(i * 1000..(i + 1) * 1000);
            a.insert_provisional(i as u64 * 1000, piece, 1 << 20, batch.len())
                .unwrap();
        }
        a.settle();
        assert!(!batch.is_unique(), "8,000 bytes of 10,000 are kept as they came");
        for _ in 0..3 {
            assert_eq!(a.read().unwrap().len(), 1000);
            assert_eq!(a.last_read_buffer(), 10_000);
        }
        assert!(!batch.is_unique(), "5,000 bytes unread");
        assert_eq!(a.read().unwrap().len(), 1000);
        assert!(batch.is_unique(), "4,000 bytes unread are copied");
        assert_eq!(a.read().unwrap(), Bytes::from(vec![4u8; 4000]));
        assert!(!a.has_unread());
    }

    /// A read before the run was settled settles it first (its indices would not hold after the read).
    #[test]
    fn a_read_settles_a_provisional_run() {
        let batch = Bytes::from(vec![3u8; 10_000]);
        let mut a = Assembler::default();
        a.insert_provisional(0, batch.slice(..10), 1 << 20, batch.len())
            .unwrap();
        assert_eq!(a.read().unwrap()[..], [3u8; 10]);
        assert!(batch.is_unique());
        a.insert_provisional(10, batch.slice(..10), 1 << 20, batch.len())
            .unwrap();
        a.release(0);
        assert!(batch.is_unique());
        assert!(!a.has_unread());
    }

    proptest! {
        /// Any delivery order, with duplicates and overlaps, yields the original stream, and memory never
        /// exceeds the bytes of the stream not yet read.
        #[test]
        fn reassembles_any_order(
            len in 1usize..4000,
            cuts in prop::collection::vec((0usize..4000, 1usize..1500), 1..60),
            step in 1usize..1500,
            aligned: bool,
            backwards: bool,
            provisional: u64,
        ) {
            let stream: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut a = Assembler::default();
            let mut out = Vec::new();
            // Half the cases start every piece on a multiple of `step`, so that the in-order pieces below
            // end exactly where held out-of-order chunks begin.
            let grid = if aligned { step } else { 1 };
            let mut chunks: Vec<(usize, usize)> =
                cuts.into_iter().map(|(s, l)| (s % len / grid * grid, l)).collect();
            // Make sure everything arrives eventually, front to back or back to front.
            let tiles = (0..len).step_by(step).map(|s| (s, step));
            if backwards {
                chunks.extend(tiles.rev());
            } else {
                chunks.extend(tiles);
            }
            for (i, (s, l)) in chunks.into_iter().enumerate() {
                let e = (s + l).min(len);
                let piece = Bytes::copy_from_slice(&stream[s..e]);
                // Some pieces come from batches (of 2,000 bytes, so that short runs are copied and long
                // ones kept), settled now and then.
                if provisional >> (i % 64) & 1 == 1 {
                    a.insert_provisional(s as u64, piece, 1 << 20, 2000).unwrap();
                } else {
                    a.insert(s as u64, piece, 1 << 20).unwrap();
                }
                if i % 5 == 0 {
                    a.settle();
                }
                prop_assert!(a.buffered() <= len - out.len());
                if i % 3 == 0 {
                    out.extend(read_all(&mut a));
                }
            }
            out.extend(read_all(&mut a));
            prop_assert_eq!(out, stream);
        }
    }
}
