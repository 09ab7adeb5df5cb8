//! The receiving half of a stream (RFC 9000 §3.2): reassembly, final size, flow-control checks,
//! RESET_STREAM from the peer and our STOP_SENDING.

use bytes::Bytes;

use super::flow::RecvWindow;
use super::ReadError;
use crate::conn::assembler::Assembler;
use crate::wire::TransportError;

/// What a STREAM or RESET_STREAM frame changed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Received {
    /// How far the highest received offset advanced: new connection-level credit consumed.
    pub(super) delta: u64,
    /// The application has something new to read (data at the read offset, the end, or a reset).
    pub(super) readable: bool,
    /// The frame was a RESET_STREAM that took effect.
    pub(super) reset: bool,
    /// The data started a provisional run, to be settled once its batch is done
    /// ([`RecvStream::settle`]).
    pub(super) provisional: bool,
}

/// The receiving half of a stream.
#[derive(Debug)]
pub(super) struct RecvStream {
    /// Out-of-order data above `asm_offset`.
    asm: Assembler,
    /// Bytes taken out of the assembler.
    asm_offset: u64,
    /// Taken out of the assembler but not yet handed to the application.
    partial: Bytes,
    /// The highest offset received: the flow-control credit the peer consumed (RFC 9000 §4.1).
    received: u64,
    /// The final size, once a FIN or RESET_STREAM told it (RFC 9000 §4.5).
    pub(super) final_size: Option<u64>,
    /// Our limit for this stream and its auto-tuned window.
    pub(super) window: RecvWindow,
    /// The peer's RESET_STREAM code.
    pub(super) reset: Option<u64>,
    /// Our STOP_SENDING code: the application does not read any more.
    pub(super) stopped: Option<u64>,
    /// Our STOP_SENDING was queued and not yet acknowledged: it goes again if lost (RFC 9000 §13.3),
    /// and the stream is kept for it.
    stop_unacked: bool,
    /// The application saw the end: `Ok(None)` or `Err(Reset)` from a read.
    app_done: bool,
    /// Bytes of this stream counted as consumed at the connection level.
    credited: u64,
    /// A Readable event is outstanding (cleared when the application reads).
    pub(super) readable_signaled: bool,
}

impl RecvStream {
    /// A stream with our initial limit `window`, auto-tuned up to `max_window`.
    pub(super) fn new(window: u64, max_window: u64) -> Self {
        Self {
            asm: Assembler::default(),
            asm_offset: 0,
            partial: Bytes::new(),
            received: 0,
            final_size: None,
            window: RecvWindow::new(window, max_window),
            reset: None,
            stopped: None,
            stop_unacked: false,
            app_done: false,
            credited: 0,
            readable_signaled: false,
        }
    }

    /// The most reassembly-queue slots a forgotten stream keeps for reuse (see `Streams::new_stream`).
    pub(super) const REUSED_CHUNKS: usize = 16;

    /// A fresh receive half, as [`RecvStream::new`], with the reassembly storage of `old` (a half
    /// emptied by [`RecvStream::release`]) if it has any.
    pub(super) fn reusing(old: Option<RecvStream>, window: u64, max_window: u64) -> Self {
        let mut fresh = Self::new(window, max_window);
        if let Some(old) = old {
            fresh.asm.reuse_storage(old.asm);
        }
        fresh
    }

    /// Drops everything held, keeping the reassembly queue's storage only if it is at most
    /// [`REUSED_CHUNKS`](Self::REUSED_CHUNKS) slots.
    pub(super) fn release(&mut self) {
        self.partial = Bytes::new();
        self.asm.release(Self::REUSED_CHUNKS);
    }

    /// Bytes handed to the application.
    #[cfg(test)]
    pub(super) fn read_offset(&self) -> u64 {
        self.asm_offset - self.partial.len() as u64
    }

    /// Whether incoming data is thrown away (reset, stopped or fully read).
    fn discarding(&self) -> bool {
        self.reset.is_some() || self.stopped.is_some() || self.app_done
    }

    /// Entries of the in-order run.
    #[cfg(test)]
    pub(super) fn ready_entries(&self) -> usize {
        self.asm.ready_entries()
    }

    /// Pieces of data held beyond a gap.
    pub(super) fn fragments(&self) -> usize {
        self.asm.fragments()
    }

    /// Handles a STREAM frame; `conn_room` is the connection-level credit left to the peer, and
    /// `buffer_len` the size of the received buffer `data` is a slice of (0 for none).
    pub(super) fn on_data(
        &mut self,
        offset: u64,
        data: Bytes,
        fin: bool,
        conn_room: u64,
        buffer_len: usize,
    ) -> Result<Received, TransportError> {
        let end = offset.saturating_add(data.len() as u64);
        if let Some(final_size) = self.final_size {
            // RFC 9000 §4.5: data at or beyond the final size, or a changed final size.
            if end > final_size || (fin && end != final_size) {
                return Err(TransportError::final_size_error(
                    "STREAM frame beyond or changing the final size",
                ));
            }
        } else if fin && end < self.received {
            // RFC 9000 §4.5: a final size below data already received changes nothing the peer sent.
            return Err(TransportError::final_size_error(
                "FIN below data already received",
            ));
        }
        // RFC 9000 §4.1: a receiver MUST close the connection with FLOW_CONTROL_ERROR when the sender
        // exceeds the advertised limits.
        if end > self.window.max() {
            return Err(TransportError::flow_control_error(
                "stream data beyond MAX_STREAM_DATA",
            ));
        }
        let delta = end.saturating_sub(self.received);
        if delta > conn_room {
            return Err(TransportError::flow_control_error("stream data beyond MAX_DATA"));
        }
        self.received = self.received.max(end);
        let newly_final = fin && self.final_size.is_none();
        if fin {
            self.final_size = Some(end);
        }
        if self.discarding() {
            return Ok(Received {
                delta,
                ..Received::default()
            });
        }
        let covers_next = offset <= self.asm_offset && end > self.asm_offset;
        // Memory follows the bytes held, not the buffers they came in (a peer sending large datagrams,
        // or a batch of datagrams received together, would otherwise make us hold many times its
        // window): the assembler copies what would keep much more than itself alive.
        // The window check above bounds what the assembler may hold: `end <= max` and
        // `asm_offset <= max` (the application cannot read beyond what arrived).
        let room = self.window.max().saturating_sub(self.asm_offset);
        let Ok(provisional) = self.asm.insert_from_buffer(offset, data, room, buffer_len) else {
            return Err(TransportError::internal_error("stream reassembly window"));
        };
        Ok(Received {
            delta,
            provisional,
            readable: covers_next || (newly_final && end == self.asm_offset),
            reset: false,
        })
    }

    /// Ends the provisional run of data from a batch of datagrams (see [`Assembler::insert_from_buffer`]).
    pub(super) fn settle(&mut self) {
        self.asm.settle();
    }

    /// Whether reads want [`RecvStream::trim`] (once per trim, see [`Assembler::take_trim_wanted`]).
    pub(super) fn take_trim_wanted(&mut self) -> bool {
        self.asm.take_trim_wanted()
    }

    /// Copies what reads left of a batch kept as it came, when that is less than half of it.
    pub(super) fn trim(&mut self) {
        self.asm.trim();
    }

    /// Handles a RESET_STREAM frame; `conn_room` is the connection-level credit left to the peer.
    pub(super) fn on_reset(
        &mut self,
        code: u64,
        final_size: u64,
        conn_room: u64,
    ) -> Result<Received, TransportError> {
        // RFC 9000 §4.5: a RESET_STREAM may not change a known final size nor fall below data received.
        if self.final_size.is_some_and(|f| f != final_size) {
            return Err(TransportError::final_size_error(
                "RESET_STREAM changes the final size",
            ));
        }
        if final_size < self.received {
            return Err(TransportError::final_size_error(
                "RESET_STREAM final size below data received",
            ));
        }
        // RFC 9000 §4.5 and §19.4: the final size counts against flow control.
        if final_size > self.window.max() {
            return Err(TransportError::flow_control_error(
                "RESET_STREAM final size beyond MAX_STREAM_DATA",
            ));
        }
        let delta = final_size - self.received;
        if delta > conn_room {
            return Err(TransportError::flow_control_error(
                "RESET_STREAM final size beyond MAX_DATA",
            ));
        }
        self.received = final_size;
        self.final_size = Some(final_size);
        if self.reset.is_some() || self.app_done {
            return Ok(Received {
                delta,
                ..Received::default()
            });
        }
        // RFC 9000 §3.2 "Reset Recvd": buffered data may be dropped.
        self.reset = Some(code);
        self.asm.clear();
        self.partial = Bytes::new();
        Ok(Received {
            delta,
            readable: self.stopped.is_none(),
            reset: self.stopped.is_none(),
            provisional: false,
        })
    }

    /// Bytes to count as consumed at the connection level now: everything received on a stream whose
    /// data is thrown away (RFC 9000 §4.5: the final size counts in full).
    pub(super) fn take_discard_credit(&mut self) -> u64 {
        if !self.discarding() {
            return 0;
        }
        let target = self.final_size.unwrap_or(self.received).max(self.received);
        let n = target.saturating_sub(self.credited);
        self.credited = self.credited.max(target);
        n
    }

    /// The next in-order bytes, at most `max`: `Ok(None)` at the end, `Err(Blocked)` when nothing is
    /// ready yet. The caller accounts the returned length at the connection level.
    ///
    /// With `data_only`, the end and a reset are not reported (and stay to be reported): the result is
    /// then `Err(Blocked)`.
    #[inline]
    pub(super) fn read_chunk(&mut self, max: usize, data_only: bool) -> Result<Option<Bytes>, ReadError> {
        if self.is_over_for_app() {
            return Err(ReadError::ClosedStream);
        }
        if data_only && self.reset.is_some() {
            return Err(ReadError::Blocked);
        }
        if let Some(code) = self.reset {
            self.app_done = true;
            return Err(ReadError::Reset { code });
        }
        let chunk = if !self.partial.is_empty() {
            let n = max.min(self.partial.len());
            // A whole chunk is handed over as it is: splitting it would touch its reference count twice.
            Some(if n == self.partial.len() {
                std::mem::take(&mut self.partial)
            } else {
                self.partial.split_to(n)
            })
        } else if let Some(mut chunk) = self.asm.read().filter(|c| !c.is_empty()) {
            self.asm_offset += chunk.len() as u64;
            // A chunk that fits goes straight to the caller, not through `partial` (storing it there and
            // reading it back at once stalled on store forwarding).
            if chunk.len() > max {
                // What is left is held as a copy: as a slice it would keep the chunk's whole buffer (up
                // to a batch of datagrams) alive while the application waits to read it, outside the
                // assembler's count.
                self.partial = Bytes::copy_from_slice(&chunk[max..]);
                chunk.truncate(max);
            }
            Some(chunk)
        } else {
            None
        };
        if let Some(chunk) = chunk {
            self.credited += chunk.len() as u64;
            self.window.consume(chunk.len() as u64);
            return Ok(Some(chunk));
        }
        if self.final_size == Some(self.asm_offset) && !data_only {
            self.app_done = true;
            return Ok(None);
        }
        Err(ReadError::Blocked)
    }

    /// Whether the application is done with this side: it read the end or the reset, or stopped it. Reads
    /// and stops then fail with [`ReadError::ClosedStream`], as once the stream is forgotten.
    pub(super) fn is_over_for_app(&self) -> bool {
        self.app_done || self.stopped.is_some()
    }

    /// The application stops reading (RFC 9000 §3.5). Returns whether a STOP_SENDING is worth sending:
    /// in "Recv" and "Size Known", not once all data arrived ("Data Recvd") or the peer reset the stream.
    pub(super) fn stop(&mut self, code: u64) -> bool {
        if self.stopped.is_some() || self.app_done {
            return false;
        }
        // RFC 9000 §3.5: STOP_SENDING in "Recv" and "Size Known"; not in "Data Recvd" (all arrived).
        let all_received = self.final_size.is_some_and(|f| self.asm.contiguous_end() >= f);
        self.stopped = Some(code);
        self.asm.clear();
        self.partial = Bytes::new();
        self.stop_unacked = self.reset.is_none() && !all_received;
        self.stop_unacked
    }

    /// Whether a STOP_SENDING we sent is still useful to (re)send: RFC 9000 §13.3, "until the receiving
    /// part of the stream enters either a 'Data Recvd' or 'Reset Recvd' state". Data Recvd is not
    /// tracked once the data is discarded, so until the frame is acknowledged or the peer resets.
    pub(super) fn stop_wanted(&self) -> bool {
        self.stopped.is_some() && self.reset.is_none() && self.stop_unacked
    }

    /// The peer acknowledged our STOP_SENDING.
    pub(super) fn on_stop_acked(&mut self) {
        self.stop_unacked = false;
    }

    /// Whether a (new or repeated) MAX_STREAM_DATA is useful: the peer may still send (RFC 9000 §13.3:
    /// not once the final size is known, nor after a reset or STOP_SENDING).
    pub(super) fn credit_useful(&self) -> bool {
        self.final_size.is_none() && self.reset.is_none() && self.stopped.is_none()
    }

    /// The receive side is over: the application saw the end, or stopped, the final size is known and no
    /// STOP_SENDING remains to be sent again (the peer reset the stream, or acknowledged the frame).
    pub(super) fn is_done(&self) -> bool {
        self.app_done
            || (self.stopped.is_some()
                && self.final_size.is_some()
                && (self.reset.is_some() || !self.stop_unacked))
    }

    /// Bytes held for the application (reassembly buffer and a partly read chunk).
    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.asm.buffered() + self.partial.len()
    }
}
