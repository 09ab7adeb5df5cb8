//! The application's operations on streams (RFC 9000 §2.4).

use bytes::Bytes;

use super::send::SendStream;
use super::{
    di, track_fragments, ControlKind, Dir, ReadError, Sched, StreamEvent, StreamId, Streams, WriteError,
};

impl Streams {
    /// Opens a stream of direction `dir`. `None` when the peer's stream limit is reached: a
    /// STREAMS_BLOCKED is queued (RFC 9000 §4.6) and [`StreamEvent::Available`] follows when the peer
    /// raises the limit.
    pub(crate) fn open(&mut self, dir: Dir) -> Option<StreamId> {
        let d = di(dir);
        // RFC 9000 §4.6: "Endpoints MUST NOT exceed the limit set by their peer."
        if self.next_local[d] >= self.peer_max_streams[d] {
            self.open_blocked[d] = true;
            if self.streams_blocked_at[d] != Some(self.peer_max_streams[d]) {
                self.streams_blocked_at[d] = Some(self.peer_max_streams[d]);
                self.streams_blocked_pending[d] = true;
            }
            return None;
        }
        let id = StreamId::new(self.side, dir, self.next_local[d]);
        self.next_local[d] += 1;
        let stream = self.new_stream(id);
        self.streams.insert(id, stream);
        Some(id)
    }

    /// The next stream of direction `dir` the peer opened, in stream ID order.
    pub(crate) fn accept(&mut self, dir: Dir) -> Option<StreamId> {
        let d = di(dir);
        if self.next_accept[d] >= self.next_remote[d] {
            return None;
        }
        let id = StreamId::new(self.side.peer(), dir, self.next_accept[d]);
        self.next_accept[d] += 1;
        Some(id)
    }

    /// The error for a stream not in the map: closed if it was ever opened, unknown otherwise (and
    /// always for a peer's unidirectional stream, which we never send on, as while it is open).
    fn missing_write(&self, id: StreamId) -> WriteError {
        let receive_only = id.dir() == Dir::Uni && id.initiator() != self.side;
        if self.was_opened(id) && !receive_only {
            WriteError::ClosedStream
        } else {
            WriteError::UnknownStream
        }
    }

    /// The error for a stream not in the map, for reads (always unknown for our unidirectional
    /// streams, which we never receive on).
    fn missing_read(&self, id: StreamId) -> ReadError {
        let send_only = id.dir() == Dir::Uni && id.initiator() == self.side;
        if self.was_opened(id) && !send_only {
            ReadError::ClosedStream
        } else {
            ReadError::UnknownStream
        }
    }

    /// Writes what fits of `data` into the send buffer of stream `id` and returns how much.
    ///
    /// Accepts up to [`StreamsConfig::send_buffer`](super::StreamsConfig::send_buffer) unacknowledged
    /// bytes per stream (more while the congestion window is large), whatever the peer's flow-control
    /// limits (the data waits for credit). An empty `data` returns `Ok(0)`; a full buffer returns
    /// [`WriteError::Blocked`]. After a refused write or one that took only part of `data`, a
    /// [`StreamEvent::Writable`] follows once acknowledgements free a sixty-fourth of the buffer.
    pub(crate) fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        let (base, budget, total) = (self.config.send_buffer, self.send_budget, self.send_buffered);
        let send = self.open_send_half(id)?;
        if data.is_empty() {
            return Ok(0);
        }
        let n = send.write(data, super::send_limit(base, budget, total, send.buffered()));
        // A write cut short wants the rest written too: the Writable event follows it as it follows a
        // refused one, so an application that keeps the rest and waits is woken (as one that writes
        // again and gets Blocked would be).
        if n < data.len() {
            send.want_writable = true;
        }
        if n == 0 {
            return Err(WriteError::Blocked);
        }
        self.send_buffered += n;
        self.schedule_written(id);
        Ok(n)
    }

    /// Queues stream `id` to send what was just written, unless it waits for credit that has not come:
    /// at the peer's stream limit with STREAM_DATA_BLOCKED sent for it, or parked at the connection
    /// limit with none of the connection's credit left. The new bytes could not go, and the packet built
    /// for the stream would carry only what else is pending, such as an ACK frame of the peer's ACK-only
    /// packets (RFC 9000 §13.2.1: no non-ack-eliciting packet in answer to one). The credit queues it
    /// when it comes (`on_max_stream_data`, `wake_for_credit`).
    fn schedule_written(&mut self, id: StreamId) {
        let no_conn_credit = self.send_data >= self.send_max_data;
        let waits = self.streams.get(&id).is_some_and(|s| {
            (s.sched == super::Sched::ConnBlocked && no_conn_credit)
                || s.send.as_ref().is_some_and(SendStream::blocked_frame_sent)
        });
        if !waits {
            self.schedule(id);
        }
    }

    /// The sending half of stream `id`, or the error a write to it gets.
    fn send_half(&mut self, id: StreamId) -> Result<&mut SendStream, WriteError> {
        let missing = self.missing_write(id);
        self.streams
            .get_mut(&id)
            .ok_or(missing)?
            .send
            .as_mut()
            .ok_or(WriteError::UnknownStream)
    }

    /// The sending half of stream `id` if it still takes data: not stopped by the peer, not finished
    /// or reset.
    fn open_send_half(&mut self, id: StreamId) -> Result<&mut SendStream, WriteError> {
        let send = self.send_half(id)?;
        if let Some(code) = send.stopped {
            return Err(WriteError::Stopped { code });
        }
        if !send.is_writable() {
            return Err(WriteError::ClosedStream);
        }
        Ok(send)
    }

    /// Ends the sending side of stream `id`: the FIN follows the data written (RFC 9000 §3.1).
    pub(crate) fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        let send = self.open_send_half(id)?;
        send.finish();
        self.schedule(id);
        Ok(())
    }

    /// Abandons the sending side of stream `id` with an application error `code`: a RESET_STREAM goes
    /// out (and again until acknowledged), data is no longer (re)sent (RFC 9000 §3.1, §13.3).
    pub(crate) fn reset(&mut self, id: StreamId, code: u64) -> Result<(), WriteError> {
        let send = self.send_half(id)?;
        let held = send.buffered();
        if !send.reset(code) {
            return Err(WriteError::ClosedStream);
        }
        // The data is dropped (RFC 9000 §13.3: not sent again).
        let dropped = held - send.buffered();
        self.send_buffered = self.send_buffered.saturating_sub(dropped);
        self.queue_control(id, ControlKind::ResetStream);
        self.unlist_reset(id);
        Ok(())
    }

    /// Asks the peer to stop sending on stream `id` with an application error `code` (STOP_SENDING,
    /// RFC 9000 §3.5). Data received and not read is dropped; reads fail with
    /// [`ReadError::ClosedStream`] from now on, and so does a second stop, as on a side read to its end
    /// or whose reset was reported.
    pub(crate) fn stop(&mut self, id: StreamId, code: u64) -> Result<(), ReadError> {
        let missing = self.missing_read(id);
        let recv = self
            .streams
            .get_mut(&id)
            .ok_or(missing)?
            .recv
            .as_mut()
            .ok_or(ReadError::UnknownStream)?;
        // The same answer whether or not our sending half still keeps the stream in the map.
        if recv.is_over_for_app() {
            return Err(ReadError::ClosedStream);
        }
        let held = recv.fragments();
        let send_frame = recv.stop(code);
        track_fragments(&mut self.fragments_bound, held, recv.fragments());
        let credit = recv.take_discard_credit();
        self.consume_conn(credit);
        if send_frame {
            self.queue_control(id, ControlKind::StopSending);
        }
        self.maybe_forget(id);
        Ok(())
    }

    /// Reads the next in-order bytes of stream `id`, at most `max`.
    ///
    /// `Ok(None)` once at the end of the stream; [`ReadError::Blocked`] when nothing is ready yet (a
    /// [`StreamEvent::Readable`] follows); [`ReadError::Reset`] once when the peer reset the stream.
    pub(crate) fn read_chunk(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, ReadError> {
        self.read_chunk_inner(id, max, false)
    }

    /// [`Streams::read_chunk`]; with `data_only` the end and a reset stay unreported (`Err(Blocked)`).
    fn read_chunk_inner(
        &mut self,
        id: StreamId,
        max: usize,
        data_only: bool,
    ) -> Result<Option<Bytes>, ReadError> {
        let missing = self.missing_read(id);
        let recv = self
            .streams
            .get_mut(&id)
            .ok_or(missing)?
            .recv
            .as_mut()
            .ok_or(ReadError::UnknownStream)?;
        // A new Readable may follow this read.
        recv.readable_signaled = false;
        let result = recv.read_chunk(max, data_only);
        if recv.take_trim_wanted() {
            self.trim_pending.push(id);
        }
        let mut want_credit = false;
        if let Ok(Some(chunk)) = &result {
            self.stats.bytes_read += chunk.len() as u64;
            // RFC 9000 §4.2: raise the stream limit as the application consumes data.
            want_credit = recv.window.wants_update() && recv.credit_useful();
            let n = chunk.len() as u64;
            self.consume_conn(n);
        }
        if want_credit {
            self.queue_control(id, ControlKind::MaxStreamData);
        }
        if !matches!(result, Ok(Some(_)) | Err(ReadError::Blocked)) {
            self.maybe_forget(id);
        }
        result
    }

    /// Reads in-order bytes of stream `id` into `buf`: `Ok(Some(n))` with `n > 0`, `Ok(None)` at the end
    /// of the stream, errors as [`Streams::read_chunk`] (bytes already copied are returned first). An
    /// empty `buf` reads nothing: `Ok(Some(0))` for a stream that can be read, else the error.
    pub(crate) fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        if buf.is_empty() {
            // The errors of `read_chunk_inner`, without reading.
            let missing = self.missing_read(id);
            let stream = self.streams.get(&id).ok_or(missing)?;
            let recv = stream.recv.as_ref().ok_or(ReadError::UnknownStream)?;
            if recv.is_over_for_app() {
                return Err(ReadError::ClosedStream);
            }
            return Ok(Some(0));
        }
        let mut n = 0;
        while n < buf.len() {
            // After some bytes, only more bytes: the end or a reset is reported by the next call.
            match self.read_chunk_inner(id, buf.len() - n, n > 0) {
                Ok(Some(chunk)) => {
                    if let Some(dst) = buf.get_mut(n..n + chunk.len()) {
                        dst.copy_from_slice(&chunk);
                    }
                    n += chunk.len();
                }
                Ok(None) => return Ok(None),
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(Some(n))
    }

    /// Sets the send priority of stream `id`: streams with a higher priority send first; equal
    /// priorities share round-robin. A stream we cannot send on, or one over and forgotten, gets the
    /// error a write would.
    pub(crate) fn set_priority(&mut self, id: StreamId, priority: i32) -> Result<(), WriteError> {
        let missing = self.missing_write(id);
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(missing);
        };
        if s.send.is_none() {
            return Err(WriteError::UnknownStream);
        }
        if s.priority == priority {
            return Ok(());
        }
        let old = s.priority;
        s.priority = priority;
        if s.sched == Sched::Queued {
            if let Some(q) = self.queues.get_mut(&old) {
                q.retain(|x| *x != id);
                if q.is_empty() {
                    self.queues.remove(&old);
                }
            }
            self.queues.entry(priority).or_default().push_back(id);
        }
        if s.conn_listed {
            // Waiting for connection credit, it is woken at its new priority.
            self.conn_blocked.reprioritize(id, old, priority);
        }
        Ok(())
    }

    /// Emits Readable for stream `id` unless one is outstanding.
    pub(super) fn signal_readable(&mut self, id: StreamId) {
        if let Some(recv) = self.streams.get_mut(&id).and_then(|s| s.recv.as_mut()) {
            if !recv.readable_signaled {
                recv.readable_signaled = true;
                self.events.push_back(StreamEvent::Readable { id });
            }
        }
    }
}
