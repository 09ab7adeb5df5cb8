//! qlog output: connection events as a JSON-SEQ stream, loadable in qvis.
//!
//! The format follows qlog 0.3: the main schema of draft-ietf-quic-qlog-main-schema-03 to -05 and the
//! `category:event` names of draft-ietf-quic-qlog-quic-events-03 to -05 (what quiche's `qlog` crate
//! writes and qvis reads; drafts -06 and later rename events into a `quic:` namespace). The stream is JSON Text Sequences (RFC 7464): every record starts with the RS byte (0x1E) and
//! ends with a newline. The first record is the header; then one record per event:
//!
//! - `transport:packet_sent`, `transport:packet_received` (header, raw length, frames);
//! - `transport:packets_acked`, `recovery:packet_lost`;
//! - `recovery:metrics_updated` (RTTs, congestion window, bytes in flight: the fields that changed);
//! - `recovery:congestion_state_updated` (`slow_start`, `congestion_avoidance`, `recovery`; trigger
//!   `persistent_congestion` or `ECN` when that caused it);
//! - `security:key_updated` (`client_`/`server_` `handshake`/`1rtt` `_secret`, with the 1-RTT
//!   `generation`; trigger `tls`, `local_update` or `remote_update`);
//! - `transport:packet_dropped` for packets the connection drops (header when known, raw length,
//!   trigger `decryption_failure`, `duplicate`, `key_unavailable`, `unsupported` or `invalid`);
//! - `connectivity:connection_state_updated` (`handshake_complete`, `handshake_confirmed`, `closing`,
//!   `draining`, `closed`);
//! - `transport:parameters_set` with owner `remote`: the peer's transport parameters (a server's sink,
//!   installed once the connection is reported, gets them dated at the trace's start).
//!
//! Times are milliseconds relative to the `now` the connection was created at (`time_format`
//! `relative`, `reference_time` 0), so virtual clocks give reproducible traces.
//!
//! The library does no I/O: the caller installs a [`QlogSink`] on a connection with
//! [`ConnRef::set_qlog`](crate::ConnRef::set_qlog), for example a [`QlogWriter`] around a file it opened,
//! and gets it back with [`ConnRef::take_qlog`](crate::ConnRef::take_qlog). Without a sink nothing is
//! formatted. A server connection can get its sink when [`Event::Incoming`](crate::Event::Incoming)
//! reports it; packets it processed before then are not in the trace.

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conn::{Connection, SpaceId};
use crate::wire::frame::Frames;
use crate::wire::transport_params::TransportParameters;
use crate::Side;

mod frames;
mod json;

use frames::{header, write_frame};
#[cfg(test)]
use json::escape_into;
use json::{hex, record, Json};

/// Where qlog records go. Each call carries one complete JSON-SEQ record (RS, JSON text, newline).
pub trait QlogSink: Send {
    /// Takes one record.
    fn write(&mut self, record: &[u8]);
}

/// A [`QlogSink`] writing to any [`io::Write`] the caller owns (a file, a `Vec<u8>`, a socket).
///
/// Write errors do not reach the connection: the first one is kept (see [`QlogWriter::error`]) and
/// later records are dropped.
#[derive(Debug)]
pub struct QlogWriter<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: io::Write> QlogWriter<W> {
    /// A sink writing to `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, error: None }
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// The writer, for the caller to flush or close.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: io::Write + Send> QlogSink for QlogWriter<W> {
    fn write(&mut self, record: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.inner.write_all(record) {
                self.error = Some(e);
            }
        }
    }
}

/// Sends each record over a channel the caller owns; a closed channel drops records.
impl QlogSink for std::sync::mpsc::Sender<Vec<u8>> {
    fn write(&mut self, record: &[u8]) {
        let _ = self.send(record.to_vec());
    }
}

/// The qlog name of a packet number space.
fn space_name(space: SpaceId) -> &'static str {
    match space {
        SpaceId::Initial => "initial",
        SpaceId::Handshake => "handshake",
        SpaceId::Data => "application_data",
    }
}

/// The qlog packet type of a space's packets (0-RTT is not sent or accepted).
fn packet_type(space: SpaceId) -> &'static str {
    match space {
        SpaceId::Initial => "initial",
        SpaceId::Handshake => "handshake",
        SpaceId::Data => "1RTT",
    }
}

/// Connection metrics last reported, so that `metrics_updated` carries only what changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Metrics {
    pub(crate) min_rtt: Duration,
    pub(crate) smoothed_rtt: Duration,
    pub(crate) latest_rtt: Duration,
    pub(crate) rtt_variance: Duration,
    /// Whether the RTTs are measured: before the first sample they are RFC 9002's initial values, which
    /// are not reported.
    pub(crate) rtt_sampled: bool,
    pub(crate) congestion_window: u64,
    pub(crate) bytes_in_flight: u64,
}

/// A connection's qlog state: the sink, if any, and the trace's reference time.
pub(crate) struct Qlog {
    sink: Option<Box<dyn QlogSink>>,
    start: Instant,
    last: Option<Metrics>,
    /// The ack_delay_exponent of our ACK frames and of the peer's, for ACK delays in milliseconds (the
    /// peer's is 3 until its transport parameters are known, as when the receive path decodes them).
    ack_exponents: AckExponents,
    /// The congestion state last reported, so that `congestion_state_updated` marks changes only.
    cc_state: Option<CcState>,
    /// Whether the congestion controller is in a recovery period (RFC 9002 §7.3.2), followed only while
    /// a sink is installed: the controllers keep its start, not whether it has ended.
    cc_recovery: bool,
}

/// A congestion controller state, as `recovery:congestion_state_updated` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CcState {
    SlowStart,
    CongestionAvoidance,
    Recovery,
}

impl CcState {
    fn name(self) -> &'static str {
        match self {
            CcState::SlowStart => "slow_start",
            CcState::CongestionAvoidance => "congestion_avoidance",
            CcState::Recovery => "recovery",
        }
    }
}

/// The encryption level of a `key_updated` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyLevel {
    Handshake,
    OneRtt,
}

/// Why a connection dropped a packet: the `trigger` of `transport:packet_dropped`. All five names are in
/// the trigger list of the qlog QUIC event drafts of the -03 era (with `internal_error`, `rejected`,
/// `connection_unknown` and `general`); the later drafts dropped `duplicate` and `key_unavailable`
/// (folding a duplicate into `rejected`), so readers built on those schemas may not know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The packet failed authentication.
    DecryptionFailure,
    /// A packet number already received.
    Duplicate,
    /// No keys to remove its protection: not yet there (and no room to hold it) or already discarded.
    KeyUnavailable,
    /// A packet type or version this connection does not process (0-RTT).
    Unsupported,
    /// A header this connection rejects (RFC 9000 §7.2, §12.2, §14.1, §17.2.2).
    Invalid,
}

impl DropReason {
    fn name(self) -> &'static str {
        match self {
            DropReason::DecryptionFailure => "decryption_failure",
            DropReason::Duplicate => "duplicate",
            DropReason::KeyUnavailable => "key_unavailable",
            DropReason::Unsupported => "unsupported",
            DropReason::Invalid => "invalid",
        }
    }
}

/// The exponents ACK delays are scaled by (RFC 9000 §18.2, §19.3).
#[derive(Debug, Clone, Copy)]
struct AckExponents {
    local: u8,
    peer: u8,
}

impl std::fmt::Debug for Qlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qlog")
            .field("enabled", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

impl Qlog {
    /// No sink yet; event times count from `start`.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            sink: None,
            start,
            last: None,
            ack_exponents: AckExponents { local: 3, peer: 3 },
            cc_state: None,
            cc_recovery: false,
        }
    }

    /// The ack_delay_exponent our ACK frames use.
    pub(crate) fn set_local_ack_exponent(&mut self, exponent: u8) {
        self.ack_exponents.local = exponent;
    }

    /// The ack_delay_exponent of the peer's ACK frames (its transport parameter).
    pub(crate) fn set_peer_ack_exponent(&mut self, exponent: u8) {
        self.ack_exponents.peer = exponent;
    }

    /// Whether events are recorded.
    pub(crate) fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Installs `sink` and writes the header record to it.
    fn install(&mut self, mut sink: Box<dyn QlogSink>, side: Side, odcid: &[u8]) {
        let mut j = Json::default();
        j.open('{');
        j.key("qlog_version").str("0.3");
        j.key("qlog_format").str("JSON-SEQ");
        j.key("title").str("quicsand");
        j.key("trace").open('{');
        j.key("vantage_point").open('{');
        j.key("type")
            .str(if side.is_client() { "client" } else { "server" });
        j.close('}');
        j.key("common_fields").open('{');
        j.key("time_format").str("relative");
        j.key("reference_time").u64(0);
        j.key("ODCID").str(&hex(odcid));
        j.close('}');
        j.close('}');
        j.close('}');
        sink.write(&record(j.out));
        self.sink = Some(sink);
        self.last = None;
        self.cc_state = None;
        self.cc_recovery = false;
    }

    /// Writes one event: `data` fills the `data` object.
    fn event(&mut self, now: Instant, name: &str, data: impl FnOnce(&mut Json)) {
        let Some(sink) = &mut self.sink else { return };
        let mut j = Json::default();
        j.open('{');
        j.key("time").ms(now.saturating_duration_since(self.start));
        j.key("name").str(name);
        j.key("data").open('{');
        data(&mut j);
        j.close('}');
        j.close('}');
        sink.write(&record(j.out));
    }

    /// A packet was built: `payload` is its plaintext frames. Inlined, so that a connection without a
    /// sink pays one test per packet.
    #[inline]
    pub(crate) fn packet_sent(
        &mut self,
        now: Instant,
        space: SpaceId,
        pn: u64,
        len: usize,
        payload: Option<&[u8]>,
    ) {
        if self.enabled() {
            self.record_packet_sent(now, space, pn, len, payload);
        }
    }

    #[inline(never)]
    fn record_packet_sent(
        &mut self,
        now: Instant,
        space: SpaceId,
        pn: u64,
        len: usize,
        payload: Option<&[u8]>,
    ) {
        let payload = Bytes::copy_from_slice(payload.unwrap_or_default());
        let exponent = self.ack_exponents.local;
        self.packet_event(now, "transport:packet_sent", space, pn, len, &payload, exponent);
    }

    /// A packet was authenticated: `payload` is its plaintext frames.
    pub(crate) fn packet_received(
        &mut self,
        now: Instant,
        space: SpaceId,
        pn: u64,
        len: usize,
        payload: &Bytes,
    ) {
        if !self.enabled() {
            return;
        }
        let exponent = self.ack_exponents.peer;
        self.packet_event(
            now,
            "transport:packet_received",
            space,
            pn,
            len,
            payload,
            exponent,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn packet_event(
        &mut self,
        now: Instant,
        name: &str,
        space: SpaceId,
        pn: u64,
        len: usize,
        payload: &Bytes,
        ack_exponent: u8,
    ) {
        self.event(now, name, |j| {
            header(j, space, pn);
            j.key("raw").open('{');
            j.key("length").u64(len as u64);
            j.close('}');
            j.key("frames").open('[');
            for frame in Frames::new(payload) {
                let Ok(frame) = frame else { break };
                write_frame(j, &frame, ack_exponent);
            }
            j.close(']');
        });
    }

    /// Packets of `space` were acknowledged.
    pub(crate) fn packets_acked(&mut self, now: Instant, space: SpaceId, pns: impl Iterator<Item = u64>) {
        if !self.enabled() {
            return;
        }
        // An ACK frame that acknowledges nothing new makes no record.
        let mut pns = pns.peekable();
        if pns.peek().is_none() {
            return;
        }
        self.event(now, "transport:packets_acked", |j| {
            j.key("packet_number_space").str(space_name(space));
            j.key("packet_numbers").open('[');
            for pn in pns {
                j.u64(pn);
            }
            j.close(']');
        });
    }

    /// A packet was declared lost; `trigger` when the cause is known.
    pub(crate) fn packet_lost(&mut self, now: Instant, space: SpaceId, pn: u64, trigger: Option<&str>) {
        self.event(now, "recovery:packet_lost", |j| {
            header(j, space, pn);
            if let Some(t) = trigger {
                j.key("trigger").str(t);
            }
        });
    }

    /// The connection metrics now: reports the fields that changed since the last report.
    pub(crate) fn metrics(&mut self, now: Instant, m: Metrics) {
        if !self.enabled() || self.last == Some(m) {
            return;
        }
        let last = self.last.replace(m);
        // All the RTTs go with the first sample; none before it.
        let rtt_last = last.filter(|l| l.rtt_sampled);
        let rtt_changed = |f: fn(&Metrics) -> Duration| {
            m.rtt_sampled
                && match rtt_last {
                    None => true,
                    Some(l) => f(&l) != f(&m),
                }
        };
        let (min, srtt, latest, var) = (
            rtt_changed(|x| x.min_rtt),
            rtt_changed(|x| x.smoothed_rtt),
            rtt_changed(|x| x.latest_rtt),
            rtt_changed(|x| x.rtt_variance),
        );
        let (cwnd, bif) = match last {
            None => (true, true),
            Some(l) => (
                l.congestion_window != m.congestion_window,
                l.bytes_in_flight != m.bytes_in_flight,
            ),
        };
        if !(min || srtt || latest || var || cwnd || bif) {
            return;
        }
        self.event(now, "recovery:metrics_updated", |j| {
            if min {
                j.key("min_rtt").ms(m.min_rtt);
            }
            if srtt {
                j.key("smoothed_rtt").ms(m.smoothed_rtt);
            }
            if latest {
                j.key("latest_rtt").ms(m.latest_rtt);
            }
            if var {
                j.key("rtt_variance").ms(m.rtt_variance);
            }
            if cwnd {
                j.key("congestion_window").u64(m.congestion_window);
            }
            if bif {
                j.key("bytes_in_flight").u64(m.bytes_in_flight);
            }
        });
    }

    /// The peer's transport parameters, as it sent them (`transport:parameters_set`, owner `remote`).
    pub(crate) fn peer_parameters(&mut self, now: Instant, p: &TransportParameters) {
        self.event(now, "transport:parameters_set", |j| {
            j.key("owner").str("remote");
            let cids = [
                (
                    "original_destination_connection_id",
                    p.original_destination_connection_id,
                ),
                ("initial_source_connection_id", p.initial_source_connection_id),
                ("retry_source_connection_id", p.retry_source_connection_id),
            ];
            for (name, cid) in cids {
                if let Some(cid) = cid {
                    j.key(name).str(&hex(&cid));
                }
            }
            if let Some(token) = &p.stateless_reset_token {
                j.key("stateless_reset_token").str(&hex(&token.0));
            }
            j.key("disable_active_migration").bool(p.disable_active_migration);
            j.key("max_idle_timeout").u64(p.max_idle_timeout.into_inner());
            let numbers = [
                ("max_udp_payload_size", p.max_udp_payload_size),
                ("ack_delay_exponent", p.ack_delay_exponent),
                ("max_ack_delay", p.max_ack_delay),
                ("active_connection_id_limit", p.active_connection_id_limit),
                ("initial_max_data", p.initial_max_data),
                (
                    "initial_max_stream_data_bidi_local",
                    p.initial_max_stream_data_bidi_local,
                ),
                (
                    "initial_max_stream_data_bidi_remote",
                    p.initial_max_stream_data_bidi_remote,
                ),
                ("initial_max_stream_data_uni", p.initial_max_stream_data_uni),
                ("initial_max_streams_bidi", p.initial_max_streams_bidi),
                ("initial_max_streams_uni", p.initial_max_streams_uni),
            ];
            for (name, v) in numbers {
                j.key(name).u64(v.into_inner());
            }
            if let Some(v) = p.max_datagram_frame_size {
                j.key("max_datagram_frame_size").u64(v.into_inner());
            }
            if let Some(a) = &p.preferred_address {
                j.key("preferred_address").open('{');
                if let Some(v4) = a.ipv4 {
                    j.key("ip_v4").str(&v4.ip().to_string());
                    j.key("port_v4").u64(u64::from(v4.port()));
                }
                if let Some(v6) = a.ipv6 {
                    j.key("ip_v6").str(&v6.ip().to_string());
                    j.key("port_v6").u64(u64::from(v6.port()));
                }
                j.key("connection_id").str(&hex(&a.connection_id));
                j.key("stateless_reset_token")
                    .str(&hex(&a.stateless_reset_token.0));
                j.close('}');
            }
        });
    }

    /// A recovery period started (`true`) or ended (`false`): followed only while a sink is installed.
    #[inline]
    pub(crate) fn set_recovery(&mut self, in_recovery: bool) {
        if self.enabled() {
            self.cc_recovery = in_recovery;
        }
    }

    /// The congestion controller is in state `new`: recorded if it changed (`old` is the state last
    /// recorded; the first record has none), with `trigger` when the cause is known.
    pub(crate) fn congestion_state(&mut self, now: Instant, new: CcState, trigger: Option<&str>) {
        if !self.enabled() || self.cc_state == Some(new) {
            return;
        }
        let old = self.cc_state.replace(new);
        self.event(now, "recovery:congestion_state_updated", |j| {
            if let Some(old) = old {
                j.key("old").str(old.name());
            }
            j.key("new").str(new.name());
            if let Some(t) = trigger {
                j.key("trigger").str(t);
            }
        });
    }

    /// New packet protection keys at `level`, both directions (one record for the client's secret, one
    /// for the server's): `generation` counts 1-RTT key updates (RFC 9001 §6); `trigger` is `tls`,
    /// `local_update` or `remote_update`.
    pub(crate) fn key_updated(
        &mut self,
        now: Instant,
        level: KeyLevel,
        generation: Option<u64>,
        trigger: &str,
    ) {
        if !self.enabled() {
            return;
        }
        let types = match level {
            KeyLevel::Handshake => ["client_handshake_secret", "server_handshake_secret"],
            KeyLevel::OneRtt => ["client_1rtt_secret", "server_1rtt_secret"],
        };
        for key_type in types {
            self.event(now, "security:key_updated", |j| {
                j.key("key_type").str(key_type);
                if let Some(g) = generation {
                    j.key("generation").u64(g);
                }
                j.key("trigger").str(trigger);
            });
        }
    }

    /// The connection dropped a packet of `len` bytes: its type and number when they are known.
    /// Inlined, so that a connection without a sink pays one test per dropped packet.
    #[inline]
    pub(crate) fn packet_dropped(
        &mut self,
        now: Instant,
        space: Option<SpaceId>,
        pn: Option<u64>,
        len: usize,
        reason: DropReason,
    ) {
        if self.enabled() {
            self.record_packet_dropped(now, space.map(packet_type), pn, len, reason);
        }
    }

    /// [`packet_dropped`](Self::packet_dropped) for a packet type that no space stands for (0-RTT).
    #[inline]
    pub(crate) fn packet_dropped_as(
        &mut self,
        now: Instant,
        packet_type: &'static str,
        len: usize,
        reason: DropReason,
    ) {
        if self.enabled() {
            self.record_packet_dropped(now, Some(packet_type), None, len, reason);
        }
    }

    #[cold]
    #[inline(never)]
    fn record_packet_dropped(
        &mut self,
        now: Instant,
        packet_type: Option<&'static str>,
        pn: Option<u64>,
        len: usize,
        reason: DropReason,
    ) {
        self.event(now, "transport:packet_dropped", |j| {
            if packet_type.is_some() || pn.is_some() {
                j.key("header").open('{');
                if let Some(ty) = packet_type {
                    j.key("packet_type").str(ty);
                }
                if let Some(pn) = pn {
                    j.key("packet_number").u64(pn);
                }
                j.close('}');
            }
            j.key("raw").open('{');
            j.key("length").u64(len as u64);
            j.close('}');
            j.key("trigger").str(reason.name());
        });
    }

    /// The connection entered state `new` (a qlog `ConnectionState` name).
    pub(crate) fn state(&mut self, now: Instant, new: &str) {
        self.event(now, "connectivity:connection_state_updated", |j| {
            j.key("new").str(new);
        });
    }
}

impl Connection {
    /// Installs a qlog sink; the header record goes out at once.
    pub(crate) fn set_qlog(&mut self, sink: Box<dyn QlogSink>) {
        let (side, odcid) = (self.side, self.original_dcid);
        self.qlog.install(sink, side, &odcid);
        // A server's sink comes once the application hears of the connection, after the client's
        // first flight, whose parameters it already took: they are recorded at the trace's start.
        if let Some(params) = &self.peer_params {
            let start = self.qlog.start;
            self.qlog.peer_parameters(start, params);
        }
    }

    /// Removes the qlog sink and returns it.
    pub(crate) fn take_qlog(&mut self) -> Option<Box<dyn QlogSink>> {
        self.qlog.sink.take()
    }

    /// Reports RTTs, window and bytes in flight, if they changed.
    pub(crate) fn qlog_metrics(&mut self, now: Instant) {
        if !self.qlog.enabled() {
            return;
        }
        let rtt = self.recovery.rtt();
        let m = Metrics {
            min_rtt: rtt.min(),
            smoothed_rtt: rtt.smoothed(),
            latest_rtt: rtt.latest(),
            rtt_variance: rtt.rttvar(),
            rtt_sampled: rtt.has_sample(),
            congestion_window: self.cc.window(),
            bytes_in_flight: self.recovery.bytes_in_flight(),
        };
        self.qlog.metrics(now, m);
    }

    /// Reports the congestion controller's state if it changed. `acked_sent`: when the newest packet
    /// an ACK frame just acknowledged was sent; one sent after the recovery period started ends it
    /// (RFC 9002 §7.3.2).
    pub(crate) fn qlog_congestion(
        &mut self,
        now: Instant,
        acked_sent: Option<Instant>,
        trigger: Option<&str>,
    ) {
        if !self.qlog.enabled() {
            return;
        }
        if self.qlog.cc_recovery && acked_sent.is_some_and(|t| !self.cc.in_recovery(t)) {
            self.qlog.cc_recovery = false;
        }
        let state = if self.qlog.cc_recovery {
            CcState::Recovery
        } else if self.cc.window() < self.cc.ssthresh() {
            // RFC 9002 §7.3.1: slow start while the window is below ssthresh.
            CcState::SlowStart
        } else {
            CcState::CongestionAvoidance
        };
        self.qlog.congestion_state(now, state, trigger);
    }
}

#[cfg(test)]
mod tests;
