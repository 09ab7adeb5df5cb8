//! A counting global allocator: it forwards to the system allocator and counts allocations, frees and live
//! bytes per *context* (the harness, the client engine, the server engine). The harness switches the context
//! around each call into an engine, so every allocation is charged to whoever asked for it.
//!
//! `unsafe` is needed to implement `GlobalAlloc`; it lives here, in the benchmark, never in the library.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Allocations by the benchmark itself (copying datagrams, building buffers).
pub const HARNESS: usize = 0;
/// Allocations inside the client engine (or the sender in one-way workloads).
pub const CLIENT: usize = 1;
/// Allocations inside the server engine.
pub const SERVER: usize = 2;

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static CONTEXT: AtomicUsize = AtomicUsize::new(HARNESS);
static ALLOCS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static FREES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static LIVE_BYTES: [AtomicI64; 3] = [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)];

fn context() -> usize {
    CONTEXT.load(Relaxed).min(2)
}

// SAFETY: every call forwards to `System` with the caller's layout unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let c = context();
        ALLOCS[c].fetch_add(1, Relaxed);
        LIVE_BYTES[c].fetch_add(layout.size() as i64, Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let c = context();
        ALLOCS[c].fetch_add(1, Relaxed);
        LIVE_BYTES[c].fetch_add(layout.size() as i64, Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let c = context();
        FREES[c].fetch_add(1, Relaxed);
        LIVE_BYTES[c].fetch_sub(layout.size() as i64, Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation counts as one allocation and one free, charged to the current context.
        let c = context();
        ALLOCS[c].fetch_add(1, Relaxed);
        FREES[c].fetch_add(1, Relaxed);
        LIVE_BYTES[c].fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` with its allocations charged to context `c`.
///
/// A load and a store, not a `swap`: the harness switches contexts twice per datagram, and a locked
/// exchange there cost about 2% of a bulk run (its own time, charged to both engines alike). The context
/// is only switched by the thread that drives both engines, so nothing races with it.
#[inline]
pub fn charged<R>(c: usize, f: impl FnOnce() -> R) -> R {
    let previous = CONTEXT.load(Relaxed);
    CONTEXT.store(c, Relaxed);
    let r = f();
    CONTEXT.store(previous, Relaxed);
    r
}

/// The counters of one context at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub allocs: u64,
    pub frees: u64,
    pub live_bytes: i64,
}

impl Counts {
    /// Allocations still live (allocated and not freed in this context).
    pub fn live_allocs(&self) -> i64 {
        self.allocs as i64 - self.frees as i64
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            allocs: self.allocs - earlier.allocs,
            frees: self.frees - earlier.frees,
            live_bytes: self.live_bytes - earlier.live_bytes,
        }
    }
}

/// The counters of context `c` now.
pub fn counts(c: usize) -> Counts {
    Counts {
        allocs: ALLOCS[c].load(Relaxed),
        frees: FREES[c].load(Relaxed),
        live_bytes: LIVE_BYTES[c].load(Relaxed),
    }
}
