//! Frames to send (control frames, then STREAM frames by priority and round-robin), and what happens
//! when the packets carrying them are acknowledged or lost (RFC 9000 §13.3).

use std::time::{Duration, Instant};

use super::send::{ResetState, SendStream};
use super::waiting;
use super::{
    dir_of, ConnFlowSent, ControlKind, Next, Sched, SentChunk, SentControl, StreamEvent, Streams, StreamsSent,
};
use crate::wire::frame::{
    Frame, MaxStreamData, MaxStreams, ResetStream, StopSending, StreamDataBlocked, StreamsBlocked,
};

/// Appends `frame` if it fits before `end`; returns whether it did.
fn put(buf: &mut Vec<u8>, end: usize, frame: &Frame) -> bool {
    if buf.len() + frame.encoded_len() > end {
        return false;
    }
    frame.encode(buf);
    true
}

/// The smallest STREAM frame: type, a one-byte stream ID, and a one-byte length or offset.
const MIN_STREAM_FRAME: usize = 3;
impl Streams {
    /// Whether [`Streams::write_frames`] has something to write.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        // Queues are removed from the map once empty, so any entry means a stream with data.
        self.control_pending() || !self.queues.is_empty()
    }

    /// Whether some stream has data (or a FIN) queued to send, new or lost.
    #[inline]
    pub(crate) fn has_data_queued(&self) -> bool {
        !self.queues.is_empty()
    }

    /// Appends frames within `buf.len()..end` and records them in `record`: control frames first, then
    /// STREAM frames (lost data before new data within a stream; streams by priority, round-robin
    /// among equals; within the peer's connection and stream limits). Every STREAM frame carries its
    /// length field. `now` and `rtt` drive receive-window auto-tuning (see `flow`).
    pub(crate) fn write_frames(
        &mut self,
        now: Instant,
        rtt: Duration,
        buf: &mut Vec<u8>,
        end: usize,
        record: &mut StreamsSent,
    ) {
        if self.control_pending() {
            self.write_control(now, rtt, buf, end, record);
        }
        self.write_stream_frames(buf, end, record);
        // Blocked signals found while scheduling go out now if there is room.
        if self.control_pending() {
            self.write_control(now, rtt, buf, end, record);
        }
    }

    /// Whether any control frame waits (the common case, checked twice per packet, is none).
    #[inline]
    fn control_pending(&self) -> bool {
        self.max_data_pending
            || self.max_streams_pending != [false; 2]
            || self.streams_blocked_pending != [false; 2]
            || self.data_blocked_pending
            || !self.control.is_empty()
    }

    /// Writes the pending control frames that fit, the rest stays pending.
    fn write_control(
        &mut self,
        now: Instant,
        rtt: Duration,
        buf: &mut Vec<u8>,
        end: usize,
        record: &mut StreamsSent,
    ) {
        if self.max_data_pending && end.saturating_sub(buf.len()) >= 9 {
            let max = if self.recv_window.wants_update_received(self.recv_data) {
                self.recv_window.update_received(now, rtt)
            } else {
                self.recv_window.max()
            };
            if put(buf, end, &Frame::MaxData(max)) {
                self.max_data_pending = false;
                record.conn_mut().max_data = Some(max);
            }
        }
        for d in 0..2 {
            if self.max_streams_pending[d] {
                let count = self.max_remote[d];
                if put(
                    buf,
                    end,
                    &Frame::MaxStreams(MaxStreams {
                        dir: dir_of(d),
                        count,
                    }),
                ) {
                    self.max_streams_pending[d] = false;
                    self.max_remote_sent[d] = self.max_remote_sent[d].max(count);
                    record.conn_mut().max_streams[d] = Some(count);
                }
            }
            if self.streams_blocked_pending[d] {
                let limit = self.peer_max_streams[d];
                if put(
                    buf,
                    end,
                    &Frame::StreamsBlocked(StreamsBlocked {
                        dir: dir_of(d),
                        limit,
                    }),
                ) {
                    self.streams_blocked_pending[d] = false;
                    record.conn_mut().streams_blocked[d] = Some(limit);
                }
            }
        }
        if self.data_blocked_pending {
            // RFC 9000 §4.1, §13.3: only while blocked. A DATA_BLOCKED queued in a packet that had no
            // room for it goes unsent if no stream waits for credit any more (reset since); found blocked
            // again at this limit, it is queued anew.
            if !self.data_waits_for_credit() {
                self.data_blocked_pending = false;
                self.data_blocked_at = None;
            } else if put(buf, end, &Frame::DataBlocked(self.send_max_data)) {
                self.data_blocked_pending = false;
                record.conn_mut().data_blocked = Some(self.send_max_data);
            }
        }
        while let Some(&(id, kind)) = self.control.front() {
            // A value-bearing frame is at most 1 + 8 + 8 bytes; RESET_STREAM at most 25.
            if end.saturating_sub(buf.len()) < 25 {
                return;
            }
            self.control.pop_front();
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            *s.queued.flag(kind) = false;
            let (frame, value) = match kind {
                ControlKind::MaxStreamData => {
                    let Some(recv) = s.recv.as_mut().filter(|r| r.credit_useful()) else {
                        continue;
                    };
                    let max = if recv.window.wants_update() {
                        recv.window.update(now, rtt)
                    } else {
                        recv.window.max()
                    };
                    (Frame::MaxStreamData(MaxStreamData { id, max }), max)
                }
                ControlKind::StreamDataBlocked => {
                    let Some(send) = s.send.as_ref().filter(|x| x.is_stream_blocked()) else {
                        continue;
                    };
                    let limit = send.max_data;
                    (Frame::StreamDataBlocked(StreamDataBlocked { id, limit }), limit)
                }
                ControlKind::ResetStream => {
                    let Some(reset) = s.send.as_mut().and_then(|x| x.reset.as_mut()) else {
                        continue;
                    };
                    if reset.state != ResetState::Pending {
                        continue;
                    }
                    reset.state = ResetState::Sent;
                    let frame = Frame::ResetStream(ResetStream {
                        id,
                        error_code: reset.code,
                        final_size: reset.final_size,
                    });
                    (frame, 0)
                }
                ControlKind::StopSending => {
                    let Some(code) = s
                        .recv
                        .as_ref()
                        .filter(|r| r.stop_wanted())
                        .and_then(|r| r.stopped)
                    else {
                        continue;
                    };
                    (Frame::StopSending(StopSending { id, error_code: code }), 0)
                }
            };
            // Fits: checked against the largest size above.
            put(buf, end, &frame);
            record.control.push(SentControl { id, kind, value });
        }
    }

    /// Writes STREAM frames: the highest priority first, round-robin within a priority (a stream that
    /// got a frame goes to the back of its queue).
    fn write_stream_frames(&mut self, buf: &mut Vec<u8>, end: usize, record: &mut StreamsSent) {
        // The priorities are walked downwards without building a list of them per packet; each queue is
        // worked on in place in the map (the other fields of `self` are borrowed apart from it).
        let mut below: Option<i32> = None;
        let mut woken_again = false;
        loop {
            let next = match below {
                None => self.queues.iter_mut().next_back(),
                Some(p) => self.queues.range_mut(..p).next_back(),
            };
            let Some((&prio, queue)) = next else {
                // Credit a woken stream left unspent (reset by the application or stopped by the peer
                // since) goes to the next streams waiting: nothing else would wake them (no new limit
                // comes, and no DATA_BLOCKED goes out, since nothing is blocked at this one).
                if !woken_again && self.conn_blocked.live() > 0 && self.wake_for_credit() {
                    woken_again = true;
                    below = None;
                    continue;
                }
                return;
            };
            below = Some(prio);
            let mut full = false;
            while let Some(&id) = queue.front() {
                let space = end.saturating_sub(buf.len());
                // No STREAM frame fits in fewer bytes (type, stream ID, and a length or an offset): the
                // packet is full without looking the stream up.
                if space < MIN_STREAM_FRAME {
                    full = true;
                    break;
                }
                queue.pop_front();
                waiting::visit();
                let credit = self.send_max_data.saturating_sub(self.send_data);
                let Some(s) = self.streams.get_mut(&id) else {
                    continue;
                };
                let Some(send) = s.send.as_mut() else {
                    s.sched = Sched::Idle;
                    continue;
                };
                match send.write_frame(id, buf, space, credit) {
                    Next::Frame {
                        offset,
                        len,
                        fin,
                        new,
                    } => {
                        self.send_data += new;
                        self.stats.bytes_sent += new;
                        self.stats.bytes_retransmitted += len - new;
                        record.chunks.push(SentChunk {
                            id,
                            offset,
                            len: u32::try_from(len).unwrap_or(u32::MAX),
                            fin,
                        });
                        if send.has_data() {
                            queue.push_back(id);
                        } else {
                            s.sched = Sched::Idle;
                        }
                    }
                    Next::NoSpace => {
                        queue.push_front(id);
                        full = true;
                        break;
                    }
                    Next::StreamBlocked => {
                        s.sched = Sched::Idle;
                        // RFC 9000 §4.1: a sender SHOULD send STREAM_DATA_BLOCKED when blocked.
                        if send.blocked_at != Some(send.max_data) {
                            send.blocked_at = Some(send.max_data);
                            self.stream_blocked_sent.insert(id);
                            // `queue_control` on the stream at hand (the queue map is borrowed).
                            s.queued
                                .queue(&mut self.control, id, ControlKind::StreamDataBlocked);
                        }
                    }
                    Next::ConnBlocked => {
                        s.sched = Sched::ConnBlocked;
                        if !s.conn_listed {
                            s.conn_listed = true;
                            self.conn_blocked.push(prio, id);
                        }
                        // RFC 9000 §4.1: a sender SHOULD send DATA_BLOCKED when blocked.
                        if self.data_blocked_at != Some(self.send_max_data) {
                            self.data_blocked_at = Some(self.send_max_data);
                            self.data_blocked_pending = true;
                        }
                    }
                    Next::Idle => s.sched = Sched::Idle,
                }
            }
            if queue.is_empty() {
                self.queues.remove(&prio);
            }
            if full {
                return;
            }
        }
    }

    /// Whether data waits on the peer's connection limit (some stream parked for connection credit still
    /// has data) and DATA_BLOCKED went out for that limit already.
    fn conn_blocked_frame_sent(&self) -> bool {
        self.data_blocked_at == Some(self.send_max_data)
            && self.conn_blocked.iter().any(|id| {
                waiting::visit();
                self.streams.get(&id).is_some_and(|s| {
                    s.sched == Sched::ConnBlocked && s.send.as_ref().is_some_and(SendStream::has_data)
                })
            })
    }

    /// Whether we are flow control limited and every blocked frame for the current limits went out:
    /// DATA_BLOCKED at the connection limit data waits on, or STREAM_DATA_BLOCKED at the limit of a
    /// stream whose new data it holds back, none of them queued again yet. RFC 9000 §4.1: such a sender
    /// "SHOULD periodically send a STREAM_DATA_BLOCKED or DATA_BLOCKED frame when it has no ack-eliciting
    /// packets in flight" (the connection's timer, then [`Streams::resend_blocked`]).
    pub(crate) fn blocked_frames_sent(&self) -> bool {
        (!self.data_blocked_pending && self.conn_blocked_frame_sent())
            || self.stream_blocked_sent.iter().any(|id| {
                waiting::visit();
                self.streams.get(id).is_some_and(|s| {
                    !s.queued.stream_data_blocked
                        && s.send.as_ref().is_some_and(SendStream::blocked_frame_sent)
                })
            })
    }

    /// Queues again the blocked frames [`Streams::blocked_frames_sent`] reports as sent, for the limits
    /// that still hold (RFC 9000 §4.1: sent periodically while flow control limited).
    pub(crate) fn resend_blocked(&mut self) {
        if self.conn_blocked_frame_sent() {
            self.data_blocked_pending = true;
        }
        for id in self.stream_blocked_sent.iter() {
            let Some(s) = self.streams.get_mut(id) else {
                continue;
            };
            if s.send.as_ref().is_some_and(SendStream::blocked_frame_sent) {
                s.queued
                    .queue(&mut self.control, *id, ControlKind::StreamDataBlocked);
            }
        }
    }

    /// The packet that carried `sent` was acknowledged.
    pub(crate) fn on_acked(&mut self, sent: &StreamsSent) {
        for c in sent.chunks.iter() {
            let Some(send) = self.streams.get_mut(&c.id).and_then(|s| s.send.as_mut()) else {
                continue;
            };
            let freed = send.on_acked(c.offset, u64::from(c.len), c.fin);
            self.send_buffered = self.send_buffered.saturating_sub(freed);
            if freed > 0 {
                send.trim(self.config.send_buffer);
            }
            let buffer = super::send_limit(
                self.config.send_buffer,
                self.send_budget,
                self.send_buffered,
                send.buffered(),
            );
            if freed > 0
                && send.want_writable
                && send.room(buffer) >= SendStream::writable_threshold(buffer)
                && send.is_writable()
            {
                send.want_writable = false;
                self.events.push_back(StreamEvent::Writable { id: c.id });
            }
            if send.is_all_acked() && !send.finished_signaled {
                send.finished_signaled = true;
                self.events.push_back(StreamEvent::Finished { id: c.id });
            }
            // Only a finished send half lets the stream go (no second lookup per acknowledged chunk).
            if send.is_done() {
                self.maybe_forget(c.id);
            }
        }
        for c in sent.control.iter() {
            if c.kind == ControlKind::StopSending {
                if let Some(recv) = self.streams.get_mut(&c.id).and_then(|s| s.recv.as_mut()) {
                    recv.on_stop_acked();
                    self.maybe_forget(c.id);
                }
                continue;
            }
            if c.kind != ControlKind::ResetStream {
                continue;
            }
            let Some(reset) = self
                .streams
                .get_mut(&c.id)
                .and_then(|s| s.send.as_mut())
                .and_then(|x| x.reset.as_mut())
            else {
                continue;
            };
            reset.state = ResetState::Acked;
            self.maybe_forget(c.id);
        }
    }

    /// RFC 9000 §13.3: MAX_DATA and MAX_STREAMS are resent only when the lost frame carried the current
    /// value; blocked frames only while still blocked at that limit.
    fn on_conn_flow_lost(&mut self, sent: &ConnFlowSent) {
        if sent.max_data.is_some_and(|v| v == self.recv_window.max()) {
            self.max_data_pending = true;
        }
        for d in 0..2 {
            if sent.max_streams[d].is_some_and(|v| v == self.max_remote[d]) {
                self.max_streams_pending[d] = true;
            }
            if sent.streams_blocked[d].is_some_and(|v| v == self.peer_max_streams[d]) && self.open_blocked[d]
            {
                self.streams_blocked_pending[d] = true;
            }
        }
        // "Only while the endpoint is blocked".
        if sent.data_blocked.is_some_and(|v| v == self.send_max_data) && self.data_waits_for_credit() {
            self.data_blocked_pending = true;
        }
    }

    /// Whether the connection is blocked: some stream listed as waiting for credit still has new data
    /// that its own limit lets go (one reset since has left the list, its entry stale; one queued again
    /// for lost data still waits for credit for its new data).
    fn data_waits_for_credit(&self) -> bool {
        self.conn_blocked.iter().any(|id| {
            waiting::visit();
            self.streams.get(&id).is_some_and(|s| {
                s.send
                    .as_ref()
                    .is_some_and(|x| x.has_data() && x.new_data_within_limit() > 0)
            })
        })
    }

    /// The packet that carried `sent` was declared lost: queue again what is still current (RFC 9000
    /// §13.3).
    pub(crate) fn on_lost(&mut self, sent: &StreamsSent) {
        for c in sent.chunks.iter() {
            // RFC 9000 §13.3: data of a reset stream (also after STOP_SENDING) is not sent again.
            if let Some(send) = self.streams.get_mut(&c.id).and_then(|s| s.send.as_mut()) {
                send.on_lost(c.offset, u64::from(c.len), c.fin);
                self.schedule(c.id);
            }
        }
        // RFC 9000 §13.3: MAX_DATA, MAX_STREAMS and MAX_STREAM_DATA are resent only when the lost frame
        // carried the current value; blocked frames only while still blocked at that limit.
        if let Some(conn) = &sent.conn {
            self.on_conn_flow_lost(conn);
        }
        for c in sent.control.iter() {
            let Some(s) = self.streams.get_mut(&c.id) else {
                continue;
            };
            let again = match c.kind {
                ControlKind::MaxStreamData => s
                    .recv
                    .as_ref()
                    .is_some_and(|r| r.credit_useful() && r.window.max() == c.value),
                ControlKind::StreamDataBlocked => s
                    .send
                    .as_ref()
                    .is_some_and(|x| x.is_stream_blocked() && x.max_data == c.value),
                ControlKind::ResetStream => match s.send.as_mut().and_then(|x| x.reset.as_mut()) {
                    Some(reset) if reset.state == ResetState::Sent => {
                        reset.state = ResetState::Pending;
                        true
                    }
                    _ => false,
                },
                ControlKind::StopSending => s.recv.as_ref().is_some_and(|r| r.stop_wanted()),
            };
            if again {
                self.queue_control(c.id, c.kind);
            }
        }
    }
}
