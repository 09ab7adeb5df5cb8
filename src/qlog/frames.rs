//! Frames and packet headers as qlog fields.

use std::time::Duration;

use super::json::{hex, Json};
use super::{packet_type, SpaceId};
use crate::wire::frame::{CloseCode, Dir, Frame};

/// The `header` field of packet events.
pub(super) fn header(j: &mut Json, space: SpaceId, pn: u64) {
    j.key("header").open('{');
    j.key("packet_type").str(packet_type(space));
    j.key("packet_number").u64(pn);
    j.close('}');
}

/// One frame as a qlog `QuicFrame` (draft-ietf-quic-qlog-quic-events-03 §A.7): its `frame_type` and
/// fields; ACK delays are scaled by `ack_exponent` into milliseconds.
pub(super) fn write_frame(j: &mut Json, frame: &Frame, ack_exponent: u8) {
    j.open('{');
    j.key("frame_type").str(frame_name(frame));
    match frame {
        Frame::Ping | Frame::HandshakeDone => {}
        Frame::Padding(len) => {
            j.key("length").u64(*len as u64);
        }
        Frame::Ack(ack) => {
            let micros = ack.delay.saturating_mul(1 << ack_exponent.min(62));
            j.key("ack_delay").ms(Duration::from_micros(micros));
            j.key("acked_ranges").open('[');
            // qlog wants ascending ranges; the frame lists them descending.
            let ranges: Vec<_> = ack.iter().collect();
            for r in ranges.iter().rev() {
                j.open('[').u64(*r.start()).u64(*r.end()).close(']');
            }
            j.close(']');
            // An ACK frame of type 0x03 carries ECN counts (RFC 9000 §19.3.2).
            if let Some(ecn) = &ack.ecn {
                j.key("ect1").u64(ecn.ect1);
                j.key("ect0").u64(ecn.ect0);
                j.key("ce").u64(ecn.ce);
            }
        }
        Frame::ResetStream(r) => {
            j.key("stream_id").u64(r.id.0);
            j.key("error_code").u64(r.error_code);
            j.key("final_size").u64(r.final_size);
        }
        Frame::StopSending(f) => {
            j.key("stream_id").u64(f.id.0);
            j.key("error_code").u64(f.error_code);
        }
        Frame::Crypto(c) => {
            j.key("offset").u64(c.offset);
            j.key("length").u64(c.data.len() as u64);
        }
        Frame::NewToken(token) => {
            j.key("token").open('{');
            j.key("length").u64(token.len() as u64);
            j.close('}');
        }
        Frame::Stream(s) => {
            j.key("stream_id").u64(s.id.0);
            j.key("offset").u64(s.offset);
            j.key("length").u64(s.data.len() as u64);
            j.key("fin").bool(s.fin);
        }
        Frame::MaxData(max) => {
            j.key("maximum").u64(*max);
        }
        Frame::MaxStreamData(m) => {
            j.key("stream_id").u64(m.id.0);
            j.key("maximum").u64(m.max);
        }
        Frame::MaxStreams(m) => {
            j.key("stream_type").str(stream_type(m.dir));
            j.key("maximum").u64(m.count);
        }
        Frame::DataBlocked(limit) => {
            j.key("limit").u64(*limit);
        }
        Frame::StreamDataBlocked(b) => {
            j.key("stream_id").u64(b.id.0);
            j.key("limit").u64(b.limit);
        }
        Frame::StreamsBlocked(b) => {
            j.key("stream_type").str(stream_type(b.dir));
            j.key("limit").u64(b.limit);
        }
        Frame::NewConnectionId(n) => {
            j.key("sequence_number").u64(n.sequence);
            j.key("retire_prior_to").u64(n.retire_prior_to);
            j.key("connection_id_length").u64(n.id.len() as u64);
            j.key("connection_id").str(&hex(n.id.as_ref()));
            j.key("stateless_reset_token").str(&hex(&n.reset_token.0));
        }
        Frame::RetireConnectionId(seq) => {
            j.key("sequence_number").u64(*seq);
        }
        Frame::PathChallenge(data) | Frame::PathResponse(data) => {
            j.key("data").str(&hex(data));
        }
        Frame::Close(c) => {
            // `error_code` is the draft's name for a transport error it names, else the number;
            // `raw_error_code` is always the number, and a transport close has its triggering frame type.
            match c.code {
                CloseCode::Transport { code, .. } => {
                    j.key("error_space").str("transport");
                    match code.name() {
                        Some(name) => j.key("error_code").str(&name.to_ascii_lowercase()),
                        None => j.key("error_code").u64(code.0),
                    };
                    j.key("raw_error_code").u64(code.0);
                }
                CloseCode::Application(code) => {
                    j.key("error_space").str("application");
                    j.key("error_code").u64(code);
                    j.key("raw_error_code").u64(code);
                }
            }
            j.key("reason").str(&String::from_utf8_lossy(&c.reason));
            if let CloseCode::Transport { frame_type, .. } = c.code {
                j.key("trigger_frame_type").u64(frame_type);
            }
        }
        Frame::Datagram(d) => {
            j.key("length").u64(d.data.len() as u64);
        }
    }
    j.close('}');
}

/// The qlog `frame_type` of a frame.
fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Padding(_) => "padding",
        Frame::Ping => "ping",
        Frame::Ack(_) => "ack",
        Frame::ResetStream(_) => "reset_stream",
        Frame::StopSending(_) => "stop_sending",
        Frame::Crypto(_) => "crypto",
        Frame::NewToken(_) => "new_token",
        Frame::Stream(_) => "stream",
        Frame::MaxData(_) => "max_data",
        Frame::MaxStreamData(_) => "max_stream_data",
        Frame::MaxStreams(_) => "max_streams",
        Frame::DataBlocked(_) => "data_blocked",
        Frame::StreamDataBlocked(_) => "stream_data_blocked",
        Frame::StreamsBlocked(_) => "streams_blocked",
        Frame::NewConnectionId(_) => "new_connection_id",
        Frame::RetireConnectionId(_) => "retire_connection_id",
        Frame::PathChallenge(_) => "path_challenge",
        Frame::PathResponse(_) => "path_response",
        Frame::Close(_) => "connection_close",
        Frame::HandshakeDone => "handshake_done",
        Frame::Datagram(_) => "datagram",
    }
}

/// The qlog name of a stream direction.
fn stream_type(dir: Dir) -> &'static str {
    match dir {
        Dir::Bi => "bidirectional",
        Dir::Uni => "unidirectional",
    }
}
