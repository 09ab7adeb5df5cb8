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
    /// The runs `settle` kept as they came, in order: once reads leave less than half of a run's buffer
    /// held, what is left of it is copied, so that every buffer kept alive holds at least half its size
    /// of bytes not read yet.
    kept: VecDeque<KeptRun>,
    /// A read changed a kept run since the last [`Assembler::trim`]: `Wanted` until the owner takes
    /// note ([`Assembler::take_trim_wanted`]), then `Listed`.
    trim: Trim,
}

/// Whether [`Assembler::trim`] has work since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trim {
    Idle,
    Wanted,
    Listed,
}

/// Where slices of one received buffer lie in memory: a held chunk whose first byte is in `lo..hi` is a
/// slice of that buffer (held chunks keep their allocations alive, and live allocations do not overlap,
/// so no other chunk's can be there).
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: usize,
    hi: usize,
}

impl Span {
    fn of(data: &[u8]) -> Span {
        let lo = data.as_ptr() as usize;
        Span {
            lo,
            hi: lo + data.len(),
        }
    }

    fn widen(&mut self, data: &[u8]) {
        let other = Span::of(data);
        self.lo = self.lo.min(other.lo);
        self.hi = self.hi.max(other.hi);
    }

    fn holds(&self, data: &[u8]) -> bool {
        (self.lo..self.hi).contains(&(data.as_ptr() as usize))
    }
}

/// Chunks at `ready[first..]` held zero-copy out of a received buffer of `buffer_len` bytes (a batch of
/// datagrams), those in `span` (others, from beyond a gap, may come among them).
#[derive(Debug, Clone, Copy)]
struct Provisional {
    first: u32,
    buffer_len: u32,
    span: Span,
}

/// Slices of a received buffer of `buffer_len` bytes held in the ready run below offset `end`: those in
/// `span`, `held` bytes of them.
#[derive(Debug, Clone, Copy)]
struct KeptRun {
    end: u64,
    held: usize,
    buffer_len: u32,
    span: Span,
}

/// How [`Assembler::insert_as`] holds the bytes it keeps, judged piece by piece once cut to the bytes
/// not held yet, against their buffer of `buffer_len` bytes: beyond a gap, copied if short or a small
/// share of the buffer ([`compact`]); in order, with `later`, held as it came until
/// [`Assembler::settle`] if the buffer is larger than an Ethernet frame, and without, copied if a
/// small share of it ([`pins`]).
#[derive(Debug, Clone, Copy)]
struct Hold {
    buffer_len: usize,
    later: bool,
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

/// A batch's slices are kept as they came only if they are at least this long on average (see
/// [`Assembler::settle`]): each costs an entry of the ready run, so a run of tiny slices is copied and
/// joined instead.
const KEPT_SLICE_MEAN: usize = MERGE_PIECE_BELOW / 2;

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
        trim: Trim::Idle,
    };

    /// Separate pieces held beyond the first gap. The in-order run is not counted: flow control bounds
    /// its bytes, and its pieces are at least [`MERGE_PIECE_BELOW`] bytes or merged (a batch's slices
    /// kept as they came: [`KEPT_SLICE_MEAN`] bytes on average), so a peer cannot cut it finer than
    /// that; only data around holes can be cut byte by byte.
    pub(crate) fn fragments(&self) -> usize {
        self.chunks.len()
    }

    /// Bytes held beyond the first gap, not readable yet: all bytes held but the in-order run, which
    /// spans the read offset to `ready_end`.
    pub(crate) fn held_beyond_gap(&self) -> usize {
        let ready = usize::try_from(self.ready_end - self.read_offset).unwrap_or(usize::MAX);
        self.buffered.saturating_sub(ready)
    }

    /// The end of the data held without a gap from the read offset: a chunk starting beyond it has to
    /// wait for a gap to fill.
    pub(crate) fn contiguous_end(&self) -> u64 {
        self.ready_end
    }

    /// Entries of the in-order run.
    #[cfg(test)]
    pub(crate) fn ready_entries(&self) -> usize {
        self.ready.len()
    }

    /// Bytes held.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Adds `data` at `offset`, keeping only bytes not already held or read. Fails when the chunk ends
    /// more than `window` bytes past the read offset.
    /// Short pieces beyond a gap are copied; the rest is held as it came (as from a buffer of its own).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn insert(&mut self, offset: u64, data: Bytes, window: u64) -> Result<(), AssembleError> {
        self.insert_judged(offset, data, window, 0)
    }

    /// [`Assembler::insert`] for `data`, a slice of a received buffer of `buffer_len` bytes (a datagram,
    /// or a batch of them), the memory held following the bytes held. Each piece kept is judged once
    /// cut to the bytes not held yet. Beyond a gap it is copied if it is shorter than 1 KiB or a small
    /// share of the buffer ([`compact`]). In order, a slice of a buffer larger than an Ethernet frame is
    /// held as it came until [`Assembler::settle`], which keeps the run of such slices if it is at least
    /// half of the buffer and copies it if not; reads later copy what is left of a kept run once it is
    /// less than half. Returns whether this started such a run, which the caller is to settle once the
    /// buffer (the batch) is done.
    pub(crate) fn insert_from_buffer(
        &mut self,
        offset: u64,
        data: Bytes,
        window: u64,
        buffer_len: usize,
    ) -> Result<bool, AssembleError> {
        self.insert_as(
            offset,
            data,
            window,
            Hold {
                buffer_len,
                later: true,
            },
        )
    }

    /// [`Assembler::insert_from_buffer`] with no run to settle: an in-order piece that is a small share
    /// of its buffer is copied at once (for data read as soon as it is in order, as CRYPTO data).
    pub(crate) fn insert_judged(
        &mut self,
        offset: u64,
        data: Bytes,
        window: u64,
        buffer_len: usize,
    ) -> Result<(), AssembleError> {
        self.insert_as(
            offset,
            data,
            window,
            Hold {
                buffer_len,
                later: false,
            },
        )
        .map(drop)
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
            let Hold { buffer_len, later } = hold;
            let started = if later && buffer_len > SMALL_DATAGRAM {
                // Every slice of a large buffer joins the run, which keeps or copies them together.
                self.push_provisional(data, buffer_len)
            } else if !later && pins(&data, buffer_len) {
                self.push_ready(Bytes::copy_from_slice(&data));
                false
            } else {
                self.push_ready(data);
                false
            };
            self.promote();
            return Ok(started);
        }
        // The chunk starts at or after the end of everything held.
        let held_end = self
            .chunks
            .last_key_value()
            .map_or(self.ready_end, |(k, v)| k + v.len() as u64);
        if start >= held_end {
            let data = compact(data, hold.buffer_len);
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
            #[cfg(test)]
            tests::VISITED.with(|v| v.set(v.get() + 1));
            let next = self
                .chunks
                .range(cursor..end)
                .next()
                .map(|(k, v)| (*k, *k + v.len() as u64));
            let gap_end = next.map_or(end, |(s, _)| s);
            if gap_end > cursor {
                let piece = compact(
                    data.slice((cursor - start) as usize..(gap_end - start) as usize),
                    hold.buffer_len,
                );
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
        if self.ready.len() >= MERGE_READY_FROM && !self.back_is_batch_slice() {
            if let Some(back) = self.ready.back_mut() {
                if merge_small(back, &data) {
                    return;
                }
            }
        }
        self.ready.push_back(data);
    }

    /// Whether the last chunk of the ready run is a slice of a batch, held provisionally or kept: merging
    /// into it would copy it unseen by the run's count.
    fn back_is_batch_slice(&self) -> bool {
        let Some(back) = self.ready.back() else {
            return false;
        };
        self.provisional.is_some_and(|p| p.span.holds(back))
            || self.kept.back().is_some_and(|r| r.span.holds(back))
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
            buffer_len: 0,
            span: Span::of(&data),
        });
        run.span.widen(&data);
        run.buffer_len = run.buffer_len.max(u32::try_from(buffer_len).unwrap_or(u32::MAX));
        // Not merged into the chunk before: that would copy it, or the chunk before into it.
        self.ready.push_back(data);
        started
    }

    /// Ends the provisional run (see [`Assembler::insert_from_buffer`]): its slices stay as they came if
    /// they are at least half of the buffer they share, so that they keep at most twice themselves
    /// alive, and are [`KEPT_SLICE_MEAN`] bytes long on average; otherwise they are copied, which lets
    /// go of the buffer, small ones joined as they are (see [`Assembler::copy_joined`]).
    pub(crate) fn settle(&mut self) {
        let Some(run) = self.provisional.take() else {
            return;
        };
        // The chunks from `first` on: the run's slices, and chunks from beyond a gap among them.
        let first = (run.first as usize).min(self.ready.len());
        let (held, slices) = self
            .ready
            .range(first..)
            .filter(|c| run.span.holds(c))
            .fold((0usize, 0usize), |(bytes, n), c| (bytes + c.len(), n + 1));
        // Each slice costs an entry in the run besides its bytes: tiny STREAM frames packed into large
        // datagrams (one byte each) would otherwise cost tens of bytes of memory per byte of window.
        let fine = slices.saturating_mul(KEPT_SLICE_MEAN) > held;
        if held as u64 * 2 >= u64::from(run.buffer_len) && !fine {
            self.kept.push_back(KeptRun {
                end: self.ready_end,
                held,
                buffer_len: run.buffer_len,
                span: run.span,
            });
            return;
        }
        self.copy_joined(first, run.span);
    }

    /// Copies the slices of `span` among the chunks from `first` on (contiguous: all in the ready run),
    /// joining chunks under [`MERGE_PIECE_BELOW`] bytes into copies of up to [`MERGE_BELOW`] bytes as
    /// [`Assembler::push_ready`] would have; larger chunks not of `span` stay as they are.
    fn copy_joined(&mut self, first: usize, span: Span) {
        let tail = self.ready.split_off(first.min(self.ready.len()));
        let mut joined: Vec<u8> = Vec::new();
        for chunk in tail {
            let small = chunk.len() < MERGE_PIECE_BELOW;
            if !joined.is_empty() && (!small || joined.len() + chunk.len() > MERGE_BELOW) {
                self.ready.push_back(Bytes::copy_from_slice(&joined));
                joined.clear();
            }
            if small {
                joined.extend_from_slice(&chunk);
            } else if span.holds(&chunk) {
                self.ready.push_back(Bytes::copy_from_slice(&chunk));
            } else {
                self.ready.push_back(chunk);
            }
        }
        if !joined.is_empty() {
            self.ready.push_back(Bytes::copy_from_slice(&joined));
        }
    }

    /// After `data` was read: counts it off the kept run it is a slice of and drops the runs read to
    /// their end. What is left of the first is not copied here, in the middle of the application's
    /// reads (which would copy bulk data it is about to read), but by [`Assembler::trim`].
    #[cold]
    fn read_from_kept(&mut self, data: &[u8]) {
        while let Some(run) = self.kept.front_mut() {
            if run.span.holds(data) {
                run.held = run.held.saturating_sub(data.len());
            }
            if run.end <= self.read_offset || run.held == 0 {
                self.kept.pop_front();
                continue;
            }
            break;
        }
        if !self.kept.is_empty() && self.trim == Trim::Idle {
            self.trim = Trim::Wanted;
        }
    }

    /// Whether reads left a kept run to look at since the owner last took note (once per trim): the
    /// owner is to call [`Assembler::trim`] once the application is done reading for now.
    pub(crate) fn take_trim_wanted(&mut self) -> bool {
        let wanted = self.trim == Trim::Wanted;
        if wanted {
            self.trim = Trim::Listed;
        }
        wanted
    }

    /// Copies what is left of the first kept run if reads left less than half of its buffer held, which
    /// lets go of the buffer: between one trim and the next (when the application is done reading for
    /// now, or the connection next receives), reads only lower what a kept buffer holds, and after it
    /// every buffer kept alive holds at least half its size of unread bytes.
    pub(crate) fn trim(&mut self) {
        self.trim = Trim::Idle;
        let Some(&run) = self.kept.front() else {
            return;
        };
        if run.held as u64 * 2 >= u64::from(run.buffer_len) {
            return;
        }
        self.kept.pop_front();
        // Its slices left, at the front up to its end.
        let mut covered = self.read_offset;
        for chunk in self.ready.iter_mut() {
            if covered >= run.end {
                break;
            }
            covered += chunk.len() as u64;
            if run.span.holds(chunk) {
                *chunk = Bytes::copy_from_slice(chunk);
            }
        }
    }

    /// Moves the chunks that now continue the ready run from the map into it.
    fn promote(&mut self) {
        while let Some(entry) = self.chunks.first_entry() {
            if *entry.key() != self.ready_end {
                break;
            }
            #[cfg(test)]
            tests::VISITED.with(|v| v.set(v.get() + 1));
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
        self.read_offset += data.len() as u64;
        if !self.kept.is_empty() {
            self.read_from_kept(&data);
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
        self.trim = Trim::Idle;
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

    thread_local! {
        /// Held chunks stepped over by inserts and moved to the in-order run on this thread: the work
        /// beyond a map lookup per piece, for tests of work bounds.
        pub(super) static VISITED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn take_visited() -> u64 {
        VISITED.with(|v| v.replace(0))
    }

    /// RFC 9000 §21.7, §21.9: out-of-order pieces in adversarial orders (one byte each around one-byte
    /// holes: descending, from both ends alternately), a piece filling every hole at once, and pieces
    /// covering everything held again and again. Each insert steps over only the held chunks inside its
    /// own range (so at most a chunk per byte it carries) and each chunk moves to the in-order run once:
    /// the work follows the bytes received, at the fragment limit's 32,768 pieces as at 4,096.
    #[test]
    fn the_work_of_an_insert_follows_its_own_bytes() {
        let window = 1 << 40;
        let one = Bytes::from_static(b"x");
        for n in [4096u64, 32_768] {
            let mut descending = Assembler::default();
            take_visited();
            for i in (1..=n).rev() {
                descending.insert(2 * i, one.clone(), window).unwrap();
            }
            assert_eq!(descending.fragments() as u64, n);
            assert!(take_visited() <= n, "descending, {n} pieces");

            let mut alternating = Assembler::default();
            for i in 0..n {
                let j = if i % 2 == 0 { i / 2 } else { n - 1 - i / 2 };
                alternating.insert(2 * j + 1, one.clone(), window).unwrap();
            }
            assert!(take_visited() <= n, "alternating, {n} pieces");
            // One piece fills every hole but the first: it steps over the n - 1 chunks it covers.
            let all = Bytes::from(vec![7u8; 2 * n as usize]);
            alternating
                .insert(2, all.slice(..(2 * n - 2) as usize), window)
                .unwrap();
            assert!(take_visited() <= n, "filling {n} holes");
            // The same bytes again, ten times: nothing new, and no more than the chunks covered each.
            for _ in 0..10 {
                alternating
                    .insert(2, all.slice(..(2 * n - 2) as usize), window)
                    .unwrap();
            }
            assert!(take_visited() <= 10 * n, "covering {n} chunks ten times");
            // A one-byte piece among them steps over at most one chunk, wherever it lands.
            for i in 0..1000 {
                alternating
                    .insert(2 + i % (2 * n - 2), one.clone(), window)
                    .unwrap();
            }
            assert!(take_visited() <= 1000, "1,000 one-byte pieces among {n} chunks");
            // The first hole filled: every chunk moves to the in-order run once.
            alternating.insert(0, one.clone(), window).unwrap();
            assert_eq!(alternating.fragments(), 0);
            assert!(take_visited() <= n + 1, "promoting {n} chunks");
            assert_eq!(read_all(&mut alternating).len() as u64, 2 * n);
        }
    }

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
                    a.insert_from_buffer(i as u64 * 1000, piece, 1 << 20, batch_len)
                        .unwrap(),
                );
            }
            assert_eq!(started, 1, "one run per batch");
            a.settle();
            assert_eq!(a.buffered(), 10_000);
            assert_eq!(!batch.is_unique(), kept, "batch of {batch_len} bytes");
            // Copied one by one: the pieces keep their places.
            assert_eq!(a.ready.len(), 10);
            assert_eq!(read_all(&mut a), vec![9u8; 10_000]);
            assert!(batch.is_unique());
        }
    }

    /// Tiny in-order slices of a large buffer (one-byte STREAM frames packed into 64 KB datagrams) are
    /// joined as they are copied, as they would have been from datagrams of usual sizes: before, each
    /// byte cost an entry of the ready run and an allocation of its own (10,000 entries here). A run
    /// of tiny slices that is half of its buffer is joined too, not kept a byte per entry.
    #[test]
    fn tiny_slices_of_a_batch_are_joined_as_they_are_copied() {
        let mut lone = Assembler::default();
        for i in 0..10_000u64 {
            lone.insert_from_buffer(i, Bytes::from(vec![7u8; 1]), 1 << 20, 1200)
                .unwrap();
        }
        lone.settle();
        // A one-byte slice every 6 bytes of a large buffer (copied: less than half of it), then 8-byte
        // slices that are half of their buffer (kept, by share alone, before).
        for (step, len, kept_share) in [(6usize, 1usize, false), (10, 8, true)] {
            let batch = Bytes::from(vec![7u8; 100_000]);
            let pieces = 10_000;
            let buffer_len = if kept_share { pieces * len * 2 } else { batch.len() };
            let mut a = Assembler::default();
            for i in 0..pieces {
                let piece = batch.slice(i * step..i * step + len);
                a.insert_from_buffer((i * len) as u64, piece, 1 << 20, buffer_len)
                    .unwrap();
            }
            a.settle();
            assert!(batch.is_unique(), "slices of {len} bytes: copied");
            assert!(
                a.ready.len() <= 2 * lone.ready.len().max(len * pieces / MERGE_BELOW + 1),
                "slices of {len} bytes: {} entries for {} bytes ({} from lone datagrams)",
                a.ready.len(),
                len * pieces,
                lone.ready.len()
            );
            assert_eq!(read_all(&mut a), vec![7u8; len * pieces]);
        }
    }

    /// Copying a run joins its small chunks but copies a large one whole and leaves a large chunk that
    /// is not the batch's as it was.
    #[test]
    fn copying_a_run_joins_small_chunks_only() {
        let batch = Bytes::from(vec![3u8; 60_000]);
        let mut a = Assembler::default();
        // 100, 100, 2000 (batch), then 100 (batch): at most 4096 per joined copy.
        let mut offset = 0u64;
        for (at, len) in [(0usize, 100usize), (200, 100), (400, 2000), (3000, 100)] {
            a.insert_from_buffer(offset, batch.slice(at..at + len), 1 << 20, batch.len())
                .unwrap();
            offset += len as u64;
        }
        a.settle();
        assert!(batch.is_unique());
        let lens: Vec<usize> = a.ready.iter().map(Bytes::len).collect();
        assert_eq!(lens, [200, 2000, 100]);
        assert_eq!(read_all(&mut a), vec![3u8; 2300]);
    }

    /// A run settled copies only what came from its batch on: chunks held before it stay as they were.
    #[test]
    fn settling_copies_only_the_run() {
        let earlier = Bytes::from(vec![1u8; 1500]);
        let batch = Bytes::from(vec![2u8; 60_000]);
        let mut a = Assembler::default();
        a.insert(0, earlier.clone(), 1 << 20).unwrap();
        assert!(a
            .insert_from_buffer(1500, batch.slice(..100), 1 << 20, batch.len())
            .unwrap());
        // Out of order, from the same batch: copied at once.
        a.insert_from_buffer(1700, batch.slice(200..300), 1 << 20, batch.len())
            .unwrap();
        assert_eq!(a.fragments(), 1);
        assert!(!a
            .insert_from_buffer(1600, batch.slice(100..200), 1 << 20, batch.len())
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
    /// copied by the first trim after less is (not between reads).
    #[test]
    fn the_unread_end_of_a_kept_run_is_copied() {
        let batch = Bytes::from(vec![4u8; 10_000]);
        let mut a = Assembler::default();
        for i in 0..8 {
            let piece = batch.slice(i * 1000..(i + 1) * 1000);
            a.insert_from_buffer(i as u64 * 1000, piece, 1 << 20, batch.len())
                .unwrap();
        }
        a.settle();
        assert!(!batch.is_unique(), "8,000 bytes of 10,000 are kept as they came");
        for _ in 0..3 {
            assert_eq!(a.read().unwrap().len(), 1000);
        }
        assert!(a.take_trim_wanted());
        assert!(!a.take_trim_wanted(), "asked for once per trim");
        a.trim();
        assert!(!batch.is_unique(), "5,000 bytes unread");
        assert_eq!(a.read().unwrap().len(), 1000);
        assert!(!batch.is_unique(), "not copied between reads");
        a.trim();
        assert!(batch.is_unique(), "4,000 bytes unread are copied");
        assert!(read_all(&mut a) == vec![4u8; 4000]);
        assert!(!a.has_unread());
        assert!(!a.take_trim_wanted(), "no kept run left");
    }

    /// Bytes of the chunks held in the ready run that are slices of `buffer`.
    fn held_of(a: &Assembler, buffer: &Bytes) -> usize {
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        a.ready
            .iter()
            .filter(|c| range.contains(&(c.as_ptr() as usize)))
            .map(Bytes::len)
            .sum()
    }

    /// A piece of a large buffer is judged by what is left of it once cut to the bytes not held yet, in
    /// order and beyond a gap. Before, a 60,000-byte piece of a 64,000-byte datagram was held as it came
    /// for its last 512 new bytes, and one cut to a 1,100-byte gap likewise.
    #[test]
    fn a_piece_cut_to_a_small_share_of_its_buffer_is_copied() {
        let mut a = Assembler::default();
        a.insert(0, Bytes::from(vec![1u8; 59_488]), 1 << 22).unwrap();
        let big = Bytes::from(vec![1u8; 64_000]);
        a.insert_from_buffer(0, big.slice(..60_000), 1 << 22, big.len())
            .unwrap();
        a.settle();
        assert!(big.is_unique(), "512 new bytes keep 64,000 alive");
        assert_eq!(read_all(&mut a).len(), 60_000);

        let mut b = Assembler::default();
        b.insert(1000, Bytes::from(vec![1u8; 58_000]), 1 << 22).unwrap();
        let big = Bytes::from(vec![1u8; 64_000]);
        b.insert_from_buffer(900, big.slice(..59_100), 1 << 22, big.len())
            .unwrap();
        assert!(big.is_unique(), "a 1,100-byte gap keeps 64,000 alive");
        assert_eq!(b.buffered(), 58_000 + 1100);
    }

    /// Data from beyond a gap that a batch's first piece brings into the ready run does not count as
    /// the batch's: once reads leave less than half of the batch's own bytes, they are copied, however
    /// much other data follows them. Before, 1,000 unread bytes kept a 10,000-byte batch alive until
    /// 16,000 more were read.
    #[test]
    fn data_brought_in_order_by_a_batch_does_not_count_as_the_batchs() {
        let batch = Bytes::from(vec![0u8; 10_000]);
        let mut a = Assembler::default();
        for i in 0..20u64 {
            a.insert_from_buffer(5000 + i * 1000, Bytes::from(vec![0u8; 1000]), 1 << 20, 1040)
                .unwrap();
        }
        for i in 0..5 {
            let piece = batch.slice(i * 1000..(i + 1) * 1000);
            a.insert_from_buffer(i as u64 * 1000, piece, 1 << 20, batch.len())
                .unwrap();
        }
        a.settle();
        assert_eq!(held_of(&a, &batch), 5000, "half of the batch: kept");
        for _ in 0..4 {
            a.read().unwrap();
        }
        a.trim();
        assert!(batch.is_unique(), "1,000 bytes unread keep 10,000 alive");
        assert_eq!(read_all(&mut a).len(), 21_000);
    }

    /// A small in-order piece after a kept run is not merged into the run's last slice (which would copy
    /// it unseen by the run's count): a batch stays alive only while at least half of it is held.
    #[test]
    fn pieces_after_a_kept_run_do_not_merge_into_it() {
        let batch = Bytes::from(vec![2u8; 10_000]);
        let mut a = Assembler::default();
        a.insert_from_buffer(0, Bytes::from(vec![1u8; 600]), 1 << 20, 1240)
            .unwrap();
        a.insert_from_buffer(600, Bytes::from(vec![1u8; 600]), 1 << 20, 1240)
            .unwrap();
        for i in 0..6 {
            let piece = batch.slice(i * 900..(i + 1) * 900);
            a.insert_from_buffer(1200 + i as u64 * 900, piece, 1 << 20, batch.len())
                .unwrap();
        }
        a.settle();
        for i in 0..20u64 {
            a.insert_from_buffer(6600 + i * 10, Bytes::from(vec![3u8; 10]), 1 << 20, 50)
                .unwrap();
        }
        assert!(batch.is_unique() || held_of(&a, &batch) * 2 >= batch.len());
        while a.read().is_some() {
            a.trim();
            assert!(batch.is_unique() || held_of(&a, &batch) * 2 >= batch.len());
        }
        assert!(batch.is_unique());
    }

    /// A read before the run was settled settles it first (its indices would not hold after the read).
    #[test]
    fn a_read_settles_a_provisional_run() {
        let batch = Bytes::from(vec![3u8; 10_000]);
        let mut a = Assembler::default();
        a.insert_from_buffer(0, batch.slice(..10), 1 << 20, batch.len())
            .unwrap();
        assert_eq!(a.read().unwrap()[..], [3u8; 10]);
        assert!(batch.is_unique());
        a.insert_from_buffer(10, batch.slice(..10), 1 << 20, batch.len())
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
                    a.insert_from_buffer(s as u64, piece, 1 << 20, 2000).unwrap();
                } else {
                    a.insert(s as u64, piece, 1 << 20).unwrap();
                }
                if i % 5 == 0 {
                    a.settle();
                }
                prop_assert!(a.buffered() <= len - out.len());
                prop_assert_eq!(a.held_beyond_gap(), a.chunks.values().map(Bytes::len).sum::<usize>());
                if i % 3 == 0 {
                    out.extend(read_all(&mut a));
                }
            }
            out.extend(read_all(&mut a));
            prop_assert_eq!(out, stream);
        }
    }
}
