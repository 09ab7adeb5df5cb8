//! Stream-related frames from the peer (RFC 9000 §19.4-§19.14), with the connection errors the RFC
//! prescribes.

use std::collections::BTreeMap;

use super::{di, track_fragments, ty, ControlKind, Dir, RecvStream, Stream, StreamEvent, StreamId, Streams};
use crate::wire::frame::{MaxStreamData, ResetStream, StopSending, StreamDataBlocked, StreamFrame};
use crate::wire::TransportError;

impl Streams {
    /// Finds stream `id` for a frame from the peer, opening it and every lower peer stream of its type
    /// when new (RFC 9000 §3.2: "all streams of that type with lower-numbered stream IDs" open too).
    /// `Ok(false)` means the stream was closed and forgotten: the frame is to be ignored.
    fn resolve(&mut self, id: StreamId, frame_type: u64) -> Result<bool, TransportError> {
        self.open_implicitly(id, frame_type)?;
        Ok(self.streams.contains_key(&id))
    }

    /// The checks and implicit opening of [`resolve`](Self::resolve), without looking the stream up.
    fn open_implicitly(&mut self, id: StreamId, frame_type: u64) -> Result<(), TransportError> {
        let d = di(id.dir());
        if id.initiator() == self.side {
            // RFC 9000 §19.4, §19.5, §19.8, §19.10, §19.13: a frame for a locally initiated stream that
            // has not yet been created is a STREAM_STATE_ERROR.
            if id.index() >= self.next_local[d] {
                return Err(
                    TransportError::stream_state_error("frame for a local stream not yet opened")
                        .with_frame(frame_type),
                );
            }
        } else {
            // RFC 9000 §4.6: a stream ID beyond the limit we sent is a STREAM_LIMIT_ERROR, even when a
            // higher limit is due (a stream closed) but not sent yet.
            if id.index() >= self.max_remote_sent[d] {
                return Err(
                    TransportError::stream_limit_error("peer stream beyond MAX_STREAMS")
                        .with_frame(frame_type),
                );
            }
            if id.index() >= self.next_remote[d] {
                // Bounded: at most the concurrency limit of new streams.
                for index in self.next_remote[d]..=id.index() {
                    let new_id = StreamId::new(self.side.peer(), id.dir(), index);
                    let stream = self.new_stream(new_id);
                    self.streams.insert(new_id, stream);
                }
                self.next_remote[d] = id.index() + 1;
                if !self.opened_signaled[d] {
                    self.opened_signaled[d] = true;
                    self.events.push_back(StreamEvent::Opened { dir: id.dir() });
                }
            }
        }
        Ok(())
    }

    /// Whether we only send on stream `id` (our unidirectional stream).
    fn is_send_only(&self, id: StreamId) -> bool {
        id.is_uni() && id.initiator() == self.side
    }

    /// Whether we only receive on stream `id` (a peer unidirectional stream).
    fn is_recv_only(&self, id: StreamId) -> bool {
        id.is_uni() && id.initiator() != self.side
    }

    /// Entries of the in-order runs over all streams.
    #[cfg(test)]
    pub(crate) fn ready_entries(&self) -> usize {
        self.streams
            .values()
            .filter_map(|s| s.recv.as_ref())
            .map(|r| r.ready_entries())
            .sum()
    }

    /// Pieces of stream data held beyond a gap over all streams (O(streams): only computed when the
    /// running count reaches the limit).
    pub(super) fn fragments(&self) -> usize {
        self.streams
            .values()
            .filter_map(|s| s.recv.as_ref())
            .map(|r| r.fragments())
            .sum()
    }

    /// Connection credit left to the peer.
    fn conn_room(&self) -> u64 {
        self.recv_window.max().saturating_sub(self.recv_data)
    }

    /// A STREAM frame (RFC 9000 §19.8), a slice of a received buffer of `buffer_len` bytes (its datagram,
    /// or the batch of datagrams it came in; 0 for none).
    pub(crate) fn on_stream(&mut self, frame: StreamFrame, buffer_len: usize) -> Result<(), TransportError> {
        let id = frame.id;
        let frame_type = ty::STREAM;
        // RFC 9000 §19.8: STREAM on a send-only stream is a STREAM_STATE_ERROR.
        if self.is_send_only(id) {
            return Err(
                TransportError::stream_state_error("STREAM frame on a send-only stream")
                    .with_frame(frame_type),
            );
        }
        // A stream already closed and forgotten is not found below: its data is ignored.
        self.open_implicitly(id, frame_type)?;
        let conn_room = self.conn_room();
        let Some(recv) = self.streams.get_mut(&id).and_then(|s| s.recv.as_mut()) else {
            return Ok(());
        };
        let before = recv.fragments();
        let got = recv
            .on_data(frame.offset, frame.data, frame.fin, conn_room, buffer_len)
            .map_err(|e| e.with_frame(frame_type))?;
        let after = recv.fragments();
        // Read while the stream is at hand (one lookup per frame, not three).
        let credit = recv.take_discard_credit();
        let recv_done = recv.is_done();
        // RFC 9000 §21.7: bound the pieces a peer can make us hold. The count follows each frame, and
        // each reset or stop, of the stream it changes; it is only ever too high (not too low), so the
        // exact count is taken before the connection is closed for it.
        track_fragments(&mut self.fragments_bound, before, after);
        if self.fragments_bound > self.config.max_reassembly_fragments {
            self.fragments_bound = self.fragments();
            if self.fragments_bound > self.config.max_reassembly_fragments {
                return Err(
                    TransportError::protocol_violation("too many separate pieces of stream data")
                        .with_frame(frame_type),
                );
            }
        }
        self.recv_data += got.delta;
        self.consume_conn(credit);
        if got.provisional {
            self.provisional.push(id);
        }
        if got.readable {
            self.signal_readable(id);
        }
        if recv_done {
            self.maybe_forget(id);
        }
        Ok(())
    }

    /// The batch of datagrams being received is done: each stream that held data of it as it came keeps
    /// it, or copies it if it is less than half of the batch (RFC 9000 §21.7: the memory held follows
    /// the bytes held).
    #[inline]
    pub(crate) fn end_batch(&mut self) {
        if !self.provisional.is_empty() {
            self.settle_provisional();
        }
        self.trim_read();
    }

    /// Trims the streams whose reads left a batch kept as it came (see [`RecvStream::trim`]): called
    /// once the application is done reading for now (its `ConnRef` dropped), and when the connection
    /// next receives.
    #[inline]
    pub(crate) fn trim_read(&mut self) {
        if !self.trim_pending.is_empty() {
            self.trim_streams();
        }
    }

    #[cold]
    fn trim_streams(&mut self) {
        each_listed(&mut self.trim_pending, &mut self.streams, RecvStream::trim);
    }

    #[cold]
    fn settle_provisional(&mut self) {
        each_listed(&mut self.provisional, &mut self.streams, RecvStream::settle);
    }

    /// A RESET_STREAM frame (RFC 9000 §19.4).
    pub(crate) fn on_reset_stream(&mut self, frame: ResetStream) -> Result<(), TransportError> {
        let id = frame.id;
        let frame_type = ty::RESET_STREAM;
        // RFC 9000 §19.4: RESET_STREAM on a send-only stream is a STREAM_STATE_ERROR.
        if self.is_send_only(id) {
            return Err(
                TransportError::stream_state_error("RESET_STREAM on a send-only stream")
                    .with_frame(frame_type),
            );
        }
        // A stream already closed and forgotten is not found below: its data is ignored.
        self.open_implicitly(id, frame_type)?;
        let conn_room = self.conn_room();
        let Some(recv) = self.streams.get_mut(&id).and_then(|s| s.recv.as_mut()) else {
            return Ok(());
        };
        let held = recv.fragments();
        let got = recv
            .on_reset(frame.error_code, frame.final_size, conn_room)
            .map_err(|e| e.with_frame(frame_type))?;
        track_fragments(&mut self.fragments_bound, held, recv.fragments());
        // RFC 9000 §4.5: the final size counts in full against connection flow control, and the credit
        // of data that will never be read returns to the peer.
        let credit = recv.take_discard_credit();
        self.recv_data += got.delta;
        self.consume_conn(credit);
        if got.reset {
            self.events.push_back(StreamEvent::Reset {
                id,
                code: frame.error_code,
            });
        }
        self.maybe_forget(id);
        Ok(())
    }

    /// A STOP_SENDING frame (RFC 9000 §19.5): reset the stream with the peer's code (RFC 9000 §3.5:
    /// "An endpoint that receives a STOP_SENDING frame MUST send a RESET_STREAM frame if the stream is
    /// in the 'Ready' or 'Send' state"; we also reset in "Data Sent", so nothing more is retransmitted).
    pub(crate) fn on_stop_sending(&mut self, frame: StopSending) -> Result<(), TransportError> {
        let id = frame.id;
        let frame_type = ty::STOP_SENDING;
        // RFC 9000 §19.5: STOP_SENDING on a receive-only stream is a STREAM_STATE_ERROR.
        if self.is_recv_only(id) {
            return Err(
                TransportError::stream_state_error("STOP_SENDING on a receive-only stream")
                    .with_frame(frame_type),
            );
        }
        if !self.resolve(id, frame_type)? {
            return Ok(());
        }
        let Some(send) = self.streams.get_mut(&id).and_then(|s| s.send.as_mut()) else {
            return Ok(());
        };
        if send.stopped.is_some() {
            return Ok(());
        }
        send.stopped = Some(frame.error_code);
        let held = send.buffered();
        let reset = send.reset(frame.error_code);
        self.send_buffered = self.send_buffered.saturating_sub(held - send.buffered());
        if reset || !send.is_done() {
            self.events.push_back(StreamEvent::Stopped {
                id,
                code: frame.error_code,
            });
        }
        if reset {
            self.queue_control(id, ControlKind::ResetStream);
            self.unlist_reset(id);
        }
        Ok(())
    }

    /// A MAX_DATA frame (RFC 9000 §19.9): smaller values than the current limit are ignored (§4.1).
    pub(crate) fn on_max_data(&mut self, max: u64) -> Result<(), TransportError> {
        self.raise_send_max_data(max);
        Ok(())
    }

    /// A MAX_STREAM_DATA frame (RFC 9000 §19.10).
    pub(crate) fn on_max_stream_data(&mut self, frame: MaxStreamData) -> Result<(), TransportError> {
        let id = frame.id;
        let frame_type = ty::MAX_STREAM_DATA;
        // RFC 9000 §19.10: MAX_STREAM_DATA on a receive-only stream is a STREAM_STATE_ERROR.
        if self.is_recv_only(id) {
            return Err(
                TransportError::stream_state_error("MAX_STREAM_DATA on a receive-only stream")
                    .with_frame(frame_type),
            );
        }
        if !self.resolve(id, frame_type)? {
            return Ok(());
        }
        let Some(send) = self.streams.get_mut(&id).and_then(|s| s.send.as_mut()) else {
            return Ok(());
        };
        // RFC 9000 §4.1: a limit that does not increase is ignored.
        if frame.max > send.max_data {
            send.max_data = frame.max;
            self.stream_blocked_sent.remove(&id);
            self.schedule(id);
        }
        Ok(())
    }

    /// A MAX_STREAMS frame (RFC 9000 §19.11); the decoder already refused counts above 2^60.
    pub(crate) fn on_max_streams(&mut self, dir: Dir, count: u64) -> Result<(), TransportError> {
        self.raise_peer_max_streams(dir, count);
        Ok(())
    }

    /// A DATA_BLOCKED frame (RFC 9000 §19.12): our MAX_DATA policy does not wait for it. But a peer
    /// blocked below our initial limit, never raised, would wait for a MAX_DATA that never comes (it
    /// stays blocked, sending these periodically, §4.1, until the idle timeout), so the limit goes out in
    /// a frame. Below a limit we raised, the frame crossed our MAX_DATA (loss recovery resends that),
    /// and nothing more goes: an extra update would also return credit early.
    pub(crate) fn on_data_blocked(&mut self, limit: u64) -> Result<(), TransportError> {
        if limit < self.recv_window.max() && self.recv_window.never_raised() {
            self.max_data_pending = true;
        }
        Ok(())
    }

    /// A STREAM_DATA_BLOCKED frame (RFC 9000 §19.13): informational, after the stream checks.
    pub(crate) fn on_stream_data_blocked(&mut self, frame: StreamDataBlocked) -> Result<(), TransportError> {
        let frame_type = ty::STREAM_DATA_BLOCKED;
        // RFC 9000 §19.13: STREAM_DATA_BLOCKED on a send-only stream is a STREAM_STATE_ERROR.
        if self.is_send_only(frame.id) {
            return Err(
                TransportError::stream_state_error("STREAM_DATA_BLOCKED on a send-only stream")
                    .with_frame(frame_type),
            );
        }
        // As for DATA_BLOCKED: a peer blocked below the initial stream limit, never raised, gets it in
        // a frame.
        if self.resolve(frame.id, frame_type)?
            && self
                .streams
                .get(&frame.id)
                .and_then(|s| s.recv.as_ref())
                .is_some_and(|r| r.credit_useful() && frame.limit < r.window.max() && r.window.never_raised())
        {
            self.queue_control(frame.id, ControlKind::MaxStreamData);
        }
        Ok(())
    }

    /// A STREAMS_BLOCKED frame (RFC 9000 §19.14): informational (§4.6: we never wait for it before
    /// returning credit).
    pub(crate) fn on_streams_blocked(&mut self, _dir: Dir, _limit: u64) -> Result<(), TransportError> {
        Ok(())
    }
}

/// Calls `f` on the receiving half of each stream listed in `ids` that still has one, emptying the list
/// (which keeps its storage for the next time).
fn each_listed(
    ids: &mut Vec<StreamId>,
    streams: &mut BTreeMap<StreamId, Box<Stream>>,
    f: fn(&mut RecvStream),
) {
    for id in ids.drain(..) {
        if let Some(recv) = streams.get_mut(&id).and_then(|s| s.recv.as_mut()) {
            f(recv);
        }
    }
}
