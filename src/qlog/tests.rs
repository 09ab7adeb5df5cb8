use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::*;
use crate::crypto::tls;
use crate::wire::frame::{CloseCode, Frame};
use crate::{ClientConfig, ConnectionHandle, Datagram, Endpoint, EndpointConfig, Event, ServerConfig};

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

const CLIENT: &str = "192.0.2.1:5000";
const SERVER: &str = "192.0.2.2:443";

/// A client and a server joined in memory, the client tracing into a channel.
struct Pair {
    now: Instant,
    client: Endpoint,
    server: Endpoint,
    client_h: ConnectionHandle,
    qlog: mpsc::Receiver<Vec<u8>>,
    /// 1-RTT datagrams from the client to drop, by index among the client's datagrams.
    drop_client: Vec<usize>,
    client_sent: usize,
    connected: usize,
    /// Where the server's connection traces, from its `Event::Incoming` on, when set.
    server_qlog: Option<mpsc::Sender<Vec<u8>>>,
    /// Every datagram the server sent, to deliver again.
    server_sent: Vec<BytesMut>,
}

impl Pair {
    fn new() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let alpn = vec![b"test".to_vec()];
        let server_config =
            ServerConfig::new(tls::server_config(vec![cert.clone()], key, alpn.clone()).unwrap());
        let server = Endpoint::new(EndpointConfig::with_seed(1), Some(server_config));
        let mut client = Endpoint::new(EndpointConfig::with_seed(2), None);
        let now = epoch();
        let client_config = ClientConfig::new(tls::client_config(vec![cert], alpn).unwrap());
        let client_h = client
            .connect(now, client_config, SERVER.parse().unwrap(), "localhost")
            .unwrap();
        let (tx, rx) = mpsc::channel();
        client.conn(client_h).unwrap().set_qlog(Box::new(tx));
        Self {
            now,
            client,
            server,
            client_h,
            qlog: rx,
            drop_client: Vec::new(),
            client_sent: 0,
            connected: 0,
            server_qlog: None,
            server_sent: Vec::new(),
        }
    }

    /// Delivers everything after `latency`, for `limit` of virtual time.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        let latency = Duration::from_millis(10);
        let mut buf = Vec::new();
        let mut in_flight: Vec<(Instant, bool, BytesMut)> = Vec::new();
        loop {
            while let Some(t) = self.client.poll_transmit(self.now, &mut buf) {
                for d in t.datagrams(&buf) {
                    let index = self.client_sent;
                    self.client_sent += 1;
                    if !self.drop_client.contains(&index) {
                        in_flight.push((self.now + latency, true, BytesMut::from(d)));
                    }
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                for d in t.datagrams(&buf) {
                    self.server_sent.push(BytesMut::from(d));
                    in_flight.push((self.now + latency, false, BytesMut::from(d)));
                }
            }
            for server in [false, true] {
                let endpoint = if server {
                    &mut self.server
                } else {
                    &mut self.client
                };
                while let Some((h, e)) = endpoint.poll_event() {
                    if e == Event::Connected {
                        self.connected += 1;
                    }
                    if let (true, Event::Incoming { .. }, Some(tx)) = (server, &e, &self.server_qlog) {
                        endpoint.conn(h).unwrap().set_qlog(Box::new(tx.clone()));
                    }
                }
            }
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .chain(in_flight.iter().map(|(t, _, _)| Some(*t)))
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => return,
            }
            let (due, later): (Vec<_>, Vec<_>) = in_flight.drain(..).partition(|(t, _, _)| *t <= self.now);
            in_flight = later;
            for (_, to_server, payload) in due {
                let (dst, remote) = if to_server {
                    (&mut self.server, CLIENT)
                } else {
                    (&mut self.client, SERVER)
                };
                let remote: SocketAddr = remote.parse().unwrap();
                dst.handle_datagram(
                    self.now,
                    Datagram {
                        remote,
                        local: None,
                        ecn: None,
                        payload,
                    },
                );
            }
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
    }

    /// Hands `payload` to the client as if the server sent it now.
    fn deliver_to_client(&mut self, payload: BytesMut) {
        let remote: SocketAddr = SERVER.parse().unwrap();
        let d = Datagram {
            remote,
            local: None,
            ecn: None,
            payload,
        };
        self.client.handle_datagram(self.now, d);
    }

    /// The records written so far, each checked to be RS, one JSON text, newline.
    fn records(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.qlog.try_iter() {
            assert_eq!(r.first(), Some(&0x1e), "a record starts with RS");
            assert_eq!(r.last(), Some(&b'\n'), "a record ends with a newline");
            let text = std::str::from_utf8(&r[1..r.len() - 1]).unwrap().to_string();
            assert!(!text.contains('\u{1e}'), "one record per write");
            check_json(&text);
            out.push(text);
        }
        out
    }

    /// The client writes 8,000 bytes on a new stream, in several 1-RTT packets; the first of them never
    /// arrives.
    fn send_losing_the_first_packet(&mut self) {
        self.drop_client = vec![self.client_sent];
        let mut conn = self.client.conn(self.client_h).unwrap();
        let id = conn.open_bi().unwrap();
        let data = vec![7u8; 8000];
        assert_eq!(conn.stream(id).write(&data).unwrap(), data.len());
        conn.stream(id).finish().unwrap();
    }
}

/// A minimal JSON syntax checker (RFC 8259): panics on anything that is not one JSON value.
fn check_json(s: &str) {
    fn ws(b: &[u8], i: &mut usize) {
        while b.get(*i).is_some_and(|c| c.is_ascii_whitespace()) {
            *i += 1;
        }
    }
    fn value(b: &[u8], i: &mut usize) -> Result<(), usize> {
        ws(b, i);
        match b.get(*i).ok_or(*i)? {
            b'{' => {
                *i += 1;
                ws(b, i);
                if b.get(*i) == Some(&b'}') {
                    *i += 1;
                    return Ok(());
                }
                loop {
                    ws(b, i);
                    string(b, i)?;
                    ws(b, i);
                    (b.get(*i) == Some(&b':')).then_some(()).ok_or(*i)?;
                    *i += 1;
                    value(b, i)?;
                    ws(b, i);
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b'}') => {
                            *i += 1;
                            return Ok(());
                        }
                        _ => return Err(*i),
                    }
                }
            }
            b'[' => {
                *i += 1;
                ws(b, i);
                if b.get(*i) == Some(&b']') {
                    *i += 1;
                    return Ok(());
                }
                loop {
                    value(b, i)?;
                    ws(b, i);
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b']') => {
                            *i += 1;
                            return Ok(());
                        }
                        _ => return Err(*i),
                    }
                }
            }
            b'"' => string(b, i),
            b't' | b'f' | b'n' => {
                for word in ["true", "false", "null"] {
                    if b[*i..].starts_with(word.as_bytes()) {
                        *i += word.len();
                        return Ok(());
                    }
                }
                Err(*i)
            }
            _ => {
                let start = *i;
                if b.get(*i) == Some(&b'-') {
                    *i += 1;
                }
                let digits = |i: &mut usize| {
                    let s = *i;
                    while b.get(*i).is_some_and(u8::is_ascii_digit) {
                        *i += 1;
                    }
                    *i > s
                };
                digits(i).then_some(()).ok_or(start)?;
                if b.get(*i) == Some(&b'.') {
                    *i += 1;
                    digits(i).then_some(()).ok_or(*i)?;
                }
                Ok(())
            }
        }
    }
    fn string(b: &[u8], i: &mut usize) -> Result<(), usize> {
        (b.get(*i) == Some(&b'"')).then_some(()).ok_or(*i)?;
        *i += 1;
        loop {
            match *b.get(*i).ok_or(*i)? {
                b'"' => {
                    *i += 1;
                    return Ok(());
                }
                b'\\' => match *b.get(*i + 1).ok_or(*i)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => *i += 2,
                    b'u' => {
                        let hex = b.get(*i + 2..*i + 6).ok_or(*i)?;
                        hex.iter().all(u8::is_ascii_hexdigit).then_some(()).ok_or(*i)?;
                        *i += 6;
                    }
                    _ => return Err(*i),
                },
                c if c < 0x20 => return Err(*i),
                _ => *i += 1,
            }
        }
    }
    let b = s.as_bytes();
    let mut i = 0;
    let r = value(b, &mut i).and_then(|()| {
        ws(b, &mut i);
        (i == b.len()).then_some(()).ok_or(i)
    });
    if let Err(at) = r {
        panic!("invalid JSON at byte {at}: {s}");
    }
}

/// The `time` of an event record.
fn time_of(record: &str) -> f64 {
    let rest = record
        .strip_prefix("{\"time\":")
        .expect("events start with their time");
    rest[..rest.find(',').unwrap()].parse().unwrap()
}

fn events<'a>(records: &'a [String], name: &str) -> Vec<&'a String> {
    let pat = format!("\"name\":\"{name}\"");
    records.iter().filter(|r| r.contains(&pat)).collect()
}

#[test]
fn escape_json_strings() {
    let mut out = String::new();
    escape_into(&mut out, "a\"b\\c\nd\re\tf\u{1}g\u{1f}é/");
    assert_eq!(out, r#""a\"b\\c\nd\re\tf\u0001g\u001fé/""#);
    check_json(&out);
    let mut j = Json::default();
    j.open('{')
        .key("k\"")
        .str("v")
        .key("list")
        .open('[')
        .u64(1)
        .u64(2)
        .close(']');
    j.key("t")
        .ms(Duration::from_micros(1500))
        .key("b")
        .bool(false)
        .close('}');
    assert_eq!(j.out, r#"{"k\"":"v","list":[1,2],"t":1.500,"b":false}"#);
    check_json(&j.out);
}

#[test]
fn json_checker_rejects_bad_json() {
    for bad in ["{", "{\"a\":}", "[1,]", "\"\u{1}\"", "{\"a\":1}x", "01.", "{a:1}"] {
        assert!(std::panic::catch_unwind(|| check_json(bad)).is_err(), "{bad}");
    }
}

#[test]
fn qlog_handshake_trace() {
    let mut pair = Pair::new();
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.connected, 2);
    let records = pair.records();

    let header = &records[0];
    assert!(
        header.starts_with(r#"{"qlog_version":"0.3","qlog_format":"JSON-SEQ""#),
        "{header}"
    );
    assert!(
        header.contains(r#""vantage_point":{"type":"client"}"#),
        "{header}"
    );
    assert!(
        header.contains(r#""time_format":"relative","reference_time":0,"ODCID":""#),
        "{header}"
    );

    let events = &records[1..];
    let times: Vec<f64> = events.iter().map(|r| time_of(r)).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "times go forward: {times:?}"
    );
    assert_eq!(
        times[0], 0.0,
        "the first Initial goes out at the connection's start"
    );
    assert!(times.last().unwrap() > &0.0);

    for name in ["transport:packet_sent", "transport:packet_received"] {
        let found = events_named(events, name);
        for ty in ["initial", "handshake", "1RTT"] {
            let pat = format!(r#""header":{{"packet_type":"{ty}","packet_number":"#);
            assert!(found.iter().any(|r| r.contains(&pat)), "{name} {ty}");
        }
        assert!(found.iter().all(|r| r.contains(r#""raw":{"length":"#)));
        assert!(found
            .iter()
            .any(|r| r.contains(r#"{"frame_type":"crypto","offset":0,"length":"#)));
        assert!(found.iter().any(|r| r.contains(r#"{"frame_type":"ack","#)));
    }
    let first = &events[0];
    assert!(first.contains(r#""name":"transport:packet_sent""#), "{first}");
    assert!(
        first.contains(r#""packet_type":"initial","packet_number":0"#),
        "{first}"
    );
    assert!(first.contains(r#""frame_type":"padding""#), "{first}");
    assert!(events_named(events, "transport:packet_received")
        .iter()
        .any(|r| r.contains(r#"{"frame_type":"handshake_done"}"#)));

    let acked = events_named(events, "transport:packets_acked");
    assert!(acked
        .iter()
        .any(|r| r.contains(r#""packet_number_space":"initial","packet_numbers":[0"#)));
    let metrics = events_named(events, "recovery:metrics_updated");
    let first_metrics = metrics.first().expect("metrics after the first ACK");
    for field in [
        "min_rtt",
        "smoothed_rtt",
        "latest_rtt",
        "congestion_window",
        "bytes_in_flight",
    ] {
        assert!(
            first_metrics.contains(&format!("\"{field}\":")),
            "{first_metrics}"
        );
    }
    // 10 ms each way: the first RTT sample is 20 ms.
    assert!(
        first_metrics.contains(r#""latest_rtt":20.000"#),
        "{first_metrics}"
    );

    let states = events_named(events, "connectivity:connection_state_updated");
    assert!(states[0].contains(r#""data":{"new":"handshake_complete"}"#));
    assert!(states[1].contains(r#""data":{"new":"handshake_confirmed"}"#));
    assert!(events_named(events, "recovery:packet_lost").is_empty());

    // Closing, and the sink coming back.
    pair.client
        .conn(pair.client_h)
        .unwrap()
        .close(pair.now, 0, b"bye \"now\"");
    pair.run(Duration::from_secs(1));
    let records = pair.records();
    let states = events_named(&records, "connectivity:connection_state_updated");
    assert!(states[0].contains(r#""new":"closing""#));
    assert!(records
        .iter()
        .any(|r| r.contains(r#""frame_type":"connection_close","error_space":"application","error_code":0,"raw_error_code":0,"reason":"bye \"now\"""#)));
}

fn events_named<'a>(records: &'a [String], name: &str) -> Vec<&'a String> {
    events(records, name)
}

#[test]
fn qlog_packet_lost() {
    let mut pair = Pair::new();
    pair.run(Duration::from_secs(2));
    let _ = pair.records();
    pair.send_losing_the_first_packet();
    pair.run(Duration::from_secs(2));
    let records = pair.records();
    let lost = events_named(&records, "recovery:packet_lost");
    assert!(!lost.is_empty(), "a lost packet is reported");
    assert!(
        lost[0].contains(r#""header":{"packet_type":"1RTT","packet_number":"#),
        "{}",
        lost[0]
    );
    let sent = events_named(&records, "transport:packet_sent");
    assert!(sent
        .iter()
        .any(|r| r.contains(r#""frame_type":"stream","stream_id":0,"offset":0,"#)));
    // The lost packet's data goes out again, and metrics follow the loss.
    assert!(!events_named(&records, "recovery:metrics_updated").is_empty());

    // Without a sink, nothing more is written.
    let sink = pair.client.conn(pair.client_h).unwrap().take_qlog();
    assert!(sink.is_some());
    pair.client.conn(pair.client_h).unwrap().ping();
    pair.run(Duration::from_millis(100));
    assert!(pair.records().is_empty());
}

/// draft-ietf-quic-qlog-quic-events-03: frames carry their fields (not just `frame_type`), and an ACK's
/// `ack_delay` is in milliseconds (scaled by the sender's ack_delay_exponent), never above the
/// max_ack_delay of 25 ms that both sides use here.
#[test]
fn qlog_frames_carry_their_fields_and_ack_delays_in_milliseconds() {
    let mut pair = Pair::new();
    pair.run(Duration::from_secs(2));
    let records = pair.records();
    for r in &records {
        check_json(r);
    }
    let records = records.join("\n");
    assert!(!records.contains("ack_delay_raw"), "{records}");
    let delays: Vec<f64> = records
        .split("\"ack_delay\":")
        .skip(1)
        .map(|rest| {
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest[..end].parse().expect("a number")
        })
        .collect();
    let acks = records.matches(r#""frame_type":"ack""#).count();
    assert!(
        acks > 0 && delays.len() == acks,
        "{acks} ACK frames, {} delays",
        delays.len()
    );
    assert!(
        delays.iter().all(|d| (0.0..=26.0).contains(d)),
        "ACK delays in ms: {delays:?}"
    );
    // The server issues connection IDs once the handshake is complete.
    assert!(
        records.contains(r#"{"frame_type":"new_connection_id","sequence_number":1,"retire_prior_to":0,"connection_id_length":"#),
        "{records}"
    );
    for bare in [
        "new_connection_id",
        "max_data",
        "max_stream_data",
        "reset_stream",
        "path_challenge",
    ] {
        assert!(
            !records.contains(&format!(r#"{{"frame_type":"{bare}"}}"#)),
            "{bare} without its fields"
        );
    }
}

/// An ACK delay too large for the scaling saturates instead of wrapping to a small value.
#[test]
fn a_huge_ack_delay_saturates_in_qlog() {
    let ack = crate::wire::frame::AckFrame::from_ranges([0..=0], (1 << 61) + 1, None).unwrap();
    let mut j = Json::default();
    write_frame(&mut j, &Frame::Ack(ack), 3);
    assert!(!j.out.contains(r#""ack_delay":0.008"#), "{}", j.out);
}

/// draft-ietf-quic-qlog-quic-events-03 `ConnectionCloseFrame`: the code goes in `error_code` (the name of a
/// transport error the draft names, else the number), `raw_error_code` keeps the number, and a transport
/// close carries the `trigger_frame_type` it had on the wire.
#[test]
fn qlog_connection_close_has_error_code_and_trigger_frame_type() {
    use crate::wire::frame::ConnectionClose;
    use crate::wire::TransportErrorCode;
    let write = |code| {
        let mut j = Json::default();
        let close = ConnectionClose {
            code,
            reason: Bytes::from_static(b"x"),
        };
        write_frame(&mut j, &Frame::Close(close), 3);
        check_json(&j.out);
        j.out
    };
    let transport = write(CloseCode::Transport {
        code: TransportErrorCode::PROTOCOL_VIOLATION,
        frame_type: 0x08,
    });
    assert_eq!(
        transport,
        r#"{"frame_type":"connection_close","error_space":"transport","error_code":"protocol_violation","raw_error_code":10,"reason":"x","trigger_frame_type":8}"#
    );
    let crypto = write(CloseCode::Transport {
        code: TransportErrorCode::crypto(40),
        frame_type: 0x06,
    });
    assert!(
        crypto.contains(r#""error_space":"transport","error_code":296,"raw_error_code":296,"#),
        "{crypto}"
    );
    let application = write(CloseCode::Application(7));
    assert_eq!(
        application,
        r#"{"frame_type":"connection_close","error_space":"application","error_code":7,"raw_error_code":7,"reason":"x"}"#
    );
}

/// An ACK frame of type 0x03 (RFC 9000 §19.3.2) carries its ECN counts into qlog (`ect0`, `ect1`, `ce`).
#[test]
fn qlog_ack_frame_carries_ecn_counts() {
    use crate::wire::frame::{AckFrame, EcnCounts};
    let ecn = EcnCounts {
        ect0: 5,
        ect1: 1,
        ce: 2,
    };
    let ack = AckFrame::from_ranges([4..=6, 0..=1], 0, Some(ecn)).unwrap();
    let mut j = Json::default();
    write_frame(&mut j, &Frame::Ack(ack), 3);
    check_json(&j.out);
    assert_eq!(
        j.out,
        r#"{"frame_type":"ack","ack_delay":0.000,"acked_ranges":[[0,1],[4,6]],"ect1":1,"ect0":5,"ce":2}"#
    );
    let plain = AckFrame::from_ranges([0..=0], 0, None).unwrap();
    let mut j = Json::default();
    write_frame(&mut j, &Frame::Ack(plain), 3);
    assert!(!j.out.contains("ect0"), "{}", j.out);
}

/// A `Qlog` writing into a channel, its records as strings (the header dropped).
fn unit_qlog() -> (Qlog, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let mut q = Qlog::new(epoch());
    q.install(Box::new(tx), crate::Side::Client, &[1, 2, 3, 4]);
    let _header = rx.try_recv().unwrap();
    (q, rx)
}

fn texts(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<String> {
    rx.try_iter()
        .map(|r| String::from_utf8(r[1..r.len() - 1].to_vec()).unwrap())
        .collect()
}

/// `recovery:metrics_updated` reports `rtt_variance` with the other RTTs (RFC 9002 §5.3 rttvar; 10 ms
/// after a first sample of 20 ms), in milliseconds, and again when it alone changes.
#[test]
fn qlog_metrics_report_rtt_variance() {
    let mut pair = Pair::new();
    pair.run(Duration::from_secs(2));
    let records = pair.records();
    let metrics = events_named(&records, "recovery:metrics_updated");
    let first = metrics.first().expect("metrics after the first ACK");
    assert!(first.contains(r#""latest_rtt":20.000"#), "{first}");
    assert!(first.contains(r#""rtt_variance":10.000"#), "{first}");

    let (mut q, rx) = unit_qlog();
    let m = Metrics {
        min_rtt: Duration::from_millis(20),
        smoothed_rtt: Duration::from_millis(20),
        latest_rtt: Duration::from_millis(20),
        rtt_variance: Duration::from_millis(10),
        rtt_sampled: true,
        congestion_window: 12000,
        bytes_in_flight: 0,
    };
    q.metrics(epoch(), m);
    q.metrics(
        epoch(),
        Metrics {
            rtt_variance: Duration::from_micros(7500),
            ..m
        },
    );
    let out = texts(&rx);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out[1].ends_with(r#""data":{"rtt_variance":7.500}}"#),
        "{}",
        out[1]
    );
}

/// Before the first RTT sample, the estimator holds RFC 9002's initial values (333 ms), not measurements:
/// `metrics_updated` then carries the window and bytes in flight only, and all the RTTs with the first
/// sample.
#[test]
fn qlog_metrics_omit_rtts_before_a_sample() {
    let (mut q, rx) = unit_qlog();
    let initial = Metrics {
        min_rtt: Duration::from_millis(333),
        smoothed_rtt: Duration::from_millis(333),
        latest_rtt: Duration::ZERO,
        rtt_variance: Duration::from_micros(166_500),
        rtt_sampled: false,
        congestion_window: 12000,
        bytes_in_flight: 1200,
    };
    q.metrics(epoch(), initial);
    q.metrics(
        epoch(),
        Metrics {
            min_rtt: Duration::from_millis(30),
            smoothed_rtt: Duration::from_millis(30),
            latest_rtt: Duration::from_millis(30),
            rtt_variance: Duration::from_millis(15),
            rtt_sampled: true,
            ..initial
        },
    );
    let out = texts(&rx);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out[0].ends_with(r#""data":{"congestion_window":12000,"bytes_in_flight":1200}}"#),
        "{}",
        out[0]
    );
    assert!(
        out[1].ends_with(
            r#""data":{"min_rtt":30.000,"smoothed_rtt":30.000,"latest_rtt":30.000,"rtt_variance":15.000}}"#
        ),
        "{}",
        out[1]
    );
}

/// An ACK frame that newly acknowledges nothing (a duplicate, or one for packets already declared lost)
/// writes no `transport:packets_acked` record with an empty `packet_numbers`.
#[test]
fn qlog_no_packets_acked_record_without_packets() {
    let (mut q, rx) = unit_qlog();
    q.packets_acked(epoch(), SpaceId::Data, std::iter::empty());
    assert!(texts(&rx).is_empty());
    q.packets_acked(epoch(), SpaceId::Data, [3, 5].into_iter());
    let out = texts(&rx);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].ends_with(r#""data":{"packet_number_space":"application_data","packet_numbers":[3,5]}}"#),
        "{}",
        out[0]
    );
}

/// `transport:parameters_set` records the peer's transport parameters once, as it sent them: the
/// client's trace has the server's (its original destination ID is the trace's ODCID, its reset
/// token, the server's flow-control defaults); the server's, installed once the connection is
/// reported, has the client's at the trace's start.
#[test]
fn qlog_parameters_set_records_the_peer_parameters() {
    let mut pair = Pair::new();
    let (tx, server_rx) = mpsc::channel();
    pair.server_qlog = Some(tx);
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.connected, 2);
    let records = pair.records();
    let set = events(&records, "transport:parameters_set");
    assert_eq!(set.len(), 1, "{set:?}");
    let odcid = records[0]
        .split("\"ODCID\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let defaults = crate::TransportConfig::default();
    for field in [
        r#""owner":"remote""#.to_string(),
        format!(r#""original_destination_connection_id":"{odcid}""#),
        r#""stateless_reset_token":""#.to_string(),
        format!(r#""initial_max_data":{}"#, defaults.streams.receive_window),
        r#""max_datagram_frame_size":"#.to_string(),
    ] {
        assert!(set[0].contains(&field), "{field} in {}", set[0]);
    }
    // After the server's Initial, which cannot carry them, arrived.
    let first_received = events(&records, "transport:packet_received")[0];
    assert!(time_of(set[0]) >= time_of(first_received));

    let server_records = texts(&server_rx);
    server_records.iter().for_each(|r| check_json(r));
    let set = events(&server_records, "transport:parameters_set");
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(time_of(set[0]), 0.0);
    assert!(set[0].contains(r#""owner":"remote""#), "{}", set[0]);
    assert!(
        set[0].contains(r#""initial_source_connection_id":""#),
        "{}",
        set[0]
    );
    assert!(
        !set[0].contains("original_destination_connection_id"),
        "a client sends none: {}",
        set[0]
    );
}

/// The first record of `name` containing every one of `parts`.
fn find<'a>(records: &'a [String], name: &str, parts: &[&str]) -> Option<&'a String> {
    events(records, name)
        .into_iter()
        .find(|r| parts.iter().all(|p| r.contains(p)))
}

/// `recovery:congestion_state_updated` (draft-ietf-quic-qlog-quic-events-03): the first ACK reports
/// slow start (no `old`); a lost packet starts a recovery period (RFC 9002 §7.3.2), and the
/// acknowledgement of a packet sent after it started ends it, in congestion avoidance (the window
/// reduced to ssthresh).
#[test]
fn qlog_congestion_state_updated_follows_slow_start_recovery_and_avoidance() {
    let mut pair = Pair::new();
    pair.run(Duration::from_secs(2));
    let records = pair.records();
    let states = events(&records, "recovery:congestion_state_updated");
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(
        states[0].contains(r#""data":{"new":"slow_start"}"#),
        "{}",
        states[0]
    );

    pair.send_losing_the_first_packet();
    pair.run(Duration::from_secs(2));
    let records = pair.records();
    assert!(!events(&records, "recovery:packet_lost").is_empty());
    let states: Vec<_> = events(&records, "recovery:congestion_state_updated")
        .into_iter()
        .map(|r| r.split("\"data\":").nth(1).unwrap())
        .collect();
    assert_eq!(states, [r#"{"old":"slow_start","new":"recovery"}}"#]);
    // The state change goes with the loss that caused it.
    let lost = time_of(events(&records, "recovery:packet_lost")[0]);
    let recovery = find(
        &records,
        "recovery:congestion_state_updated",
        &[r#""new":"recovery""#],
    )
    .unwrap();
    assert_eq!(time_of(recovery), lost);

    // The retransmission went out at the instant the period started, so it is still in it (RFC 9002
    // Appendix B.5: sent_time <= congestion_recovery_start_time); data sent later ends it.
    {
        let mut conn = pair.client.conn(pair.client_h).unwrap();
        let id = conn.open_bi().unwrap();
        assert_eq!(conn.stream(id).write(&[8u8; 3000]).unwrap(), 3000);
        conn.stream(id).finish().unwrap();
    }
    pair.run(Duration::from_secs(2));
    let records = pair.records();
    let states: Vec<_> = events(&records, "recovery:congestion_state_updated")
        .into_iter()
        .map(|r| r.split("\"data\":").nth(1).unwrap())
        .collect();
    assert_eq!(states, [r#"{"old":"recovery","new":"congestion_avoidance"}}"#]);
}

/// The `trigger` of `recovery:congestion_state_updated`, and no record while the state stays the same.
#[test]
fn qlog_congestion_state_carries_its_trigger() {
    let (mut q, rx) = unit_qlog();
    let t = epoch() + Duration::from_millis(5);
    q.congestion_state(t, CcState::SlowStart, None);
    q.congestion_state(t, CcState::SlowStart, None);
    q.congestion_state(t, CcState::Recovery, Some("ECN"));
    q.congestion_state(t, CcState::SlowStart, Some("persistent_congestion"));
    let records = texts(&rx);
    records.iter().for_each(|r| check_json(r));
    assert_eq!(
        records,
        [
            r#"{"time":5.000,"name":"recovery:congestion_state_updated","data":{"new":"slow_start"}}"#,
            r#"{"time":5.000,"name":"recovery:congestion_state_updated","data":{"old":"slow_start","new":"recovery","trigger":"ECN"}}"#,
            r#"{"time":5.000,"name":"recovery:congestion_state_updated","data":{"old":"recovery","new":"slow_start","trigger":"persistent_congestion"}}"#,
        ]
    );
}

/// `security:key_updated`: the handshake and 1-RTT keys TLS installs (generation 0), then a key update
/// (RFC 9001 §6) we start (`local_update`) and that the peer answers (`remote_update`), generation 1,
/// one record per direction's secret.
#[test]
fn qlog_key_updated_for_tls_keys_and_key_updates() {
    let mut pair = Pair::new();
    let (tx, server_rx) = mpsc::channel();
    pair.server_qlog = Some(tx);
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.connected, 2);
    let records = pair.records();
    let keys: Vec<_> = events(&records, "security:key_updated")
        .into_iter()
        .map(|r| r.split("\"data\":").nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            r#"{"key_type":"client_handshake_secret","trigger":"tls"}}"#,
            r#"{"key_type":"server_handshake_secret","trigger":"tls"}}"#,
            r#"{"key_type":"client_1rtt_secret","generation":0,"trigger":"tls"}}"#,
            r#"{"key_type":"server_1rtt_secret","generation":0,"trigger":"tls"}}"#,
        ]
    );
    let _ = texts(&server_rx);

    pair.client.conn(pair.client_h).unwrap().force_key_update();
    pair.client.conn(pair.client_h).unwrap().ping();
    pair.run(Duration::from_secs(1));
    let expect = |records: &[String], trigger: &str| {
        let keys: Vec<_> = events(records, "security:key_updated")
            .into_iter()
            .map(|r| r.split("\"data\":").nth(1).unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                format!(r#"{{"key_type":"client_1rtt_secret","generation":1,"trigger":"{trigger}"}}}}"#),
                format!(r#"{{"key_type":"server_1rtt_secret","generation":1,"trigger":"{trigger}"}}}}"#),
            ]
        );
    };
    expect(&pair.records(), "local_update");
    let server_records = texts(&server_rx);
    server_records.iter().for_each(|r| check_json(r));
    expect(&server_records, "remote_update");
}

/// `transport:packet_dropped` for packets the connection drops: Initial and Handshake packets after
/// their keys were discarded (RFC 9001 §4.9), a 1-RTT packet that fails authentication (RFC 9001 §5.3),
/// and one received twice (RFC 9000 §12.3), each with its type, number when known, length and trigger.
#[test]
fn qlog_packet_dropped_with_header_length_and_trigger() {
    let mut pair = Pair::new();
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.connected, 2);
    let handshake = pair.records();
    assert!(
        events(&handshake, "transport:packet_dropped").is_empty(),
        "{handshake:?}"
    );

    // The server's first datagram: an Initial and a Handshake packet, whose keys are gone.
    let first = pair.server_sent[0].clone();
    assert_eq!(first[0] & 0xf0, 0xc0, "an Initial packet first");
    let first_len = first.len();
    pair.deliver_to_client(first);
    let records = pair.records();
    let dropped = events(&records, "transport:packet_dropped");
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(
        dropped[0].contains(r#""data":{"header":{"packet_type":"initial"},"raw":{"length":"#)
            && dropped[0].ends_with(r#","trigger":"key_unavailable"}}"#),
        "{}",
        dropped[0]
    );
    assert!(
        dropped[1].contains(r#""data":{"header":{"packet_type":"handshake"},"raw":{"length":"#)
            && dropped[1].ends_with(r#","trigger":"key_unavailable"}}"#),
        "{}",
        dropped[1]
    );
    let length = |r: &str| -> usize {
        let rest = r.split(r#""raw":{"length":"#).nth(1).unwrap();
        rest[..rest.find('}').unwrap()].parse().unwrap()
    };
    assert_eq!(length(dropped[0]) + length(dropped[1]), first_len);

    // The largest 1-RTT datagram the server sent: one packet, already received.
    let one_rtt = pair
        .server_sent
        .iter()
        .filter(|d| d[0] & 0x80 == 0)
        .max_by_key(|d| d.len())
        .unwrap()
        .clone();
    let mut corrupt = one_rtt.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    pair.deliver_to_client(corrupt);
    pair.deliver_to_client(one_rtt.clone());
    let records = pair.records();
    let dropped = events(&records, "transport:packet_dropped");
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    let pn = {
        let rest = dropped[0]
            .split(r#""header":{"packet_type":"1RTT","packet_number":"#)
            .nth(1)
            .unwrap_or_else(|| panic!("{}", dropped[0]));
        rest[..rest.find('}').unwrap()].parse::<u64>().unwrap()
    };
    let data = |trigger: &str| {
        format!(
            r#""data":{{"header":{{"packet_type":"1RTT","packet_number":{pn}}},"raw":{{"length":{}}},"trigger":"{trigger}"}}}}"#,
            one_rtt.len()
        )
    };
    assert!(
        dropped[0].ends_with(&data("decryption_failure")),
        "{}",
        dropped[0]
    );
    assert!(dropped[1].ends_with(&data("duplicate")), "{}", dropped[1]);
    // The number is the one the packet had when it was first received.
    let pattern = format!(r#""header":{{"packet_type":"1RTT","packet_number":{pn}}}"#);
    assert!(
        find(&handshake, "transport:packet_received", &[&pattern]).is_some(),
        "{pattern}"
    );
}

/// A close reason is the peer's bytes: control characters, quotes, backslashes and invalid UTF-8 come out
/// of both traces (the closer's `packet_sent`, the peer's `packet_received`) as one valid JSON string
/// each: escaped, and invalid sequences replaced (RFC 8259 §7, §8.1).
#[test]
fn qlog_close_reason_of_any_bytes_is_valid_json() {
    let mut pair = Pair::new();
    let (tx, server_rx) = mpsc::channel();
    pair.server_qlog = Some(tx);
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.connected, 2);
    let reason = b"\x00\x01\x1f\"\\\x7f\xff\xfe\xc3(\n\r\t\xe2\x80\xa8end";
    let now = pair.now;
    pair.client.conn(pair.client_h).unwrap().close(now, 7, reason);
    pair.run(Duration::from_secs(1));
    let expected =
        "\"reason\":\"\\u0000\\u0001\\u001f\\\"\\\\\u{7f}\u{fffd}\u{fffd}\u{fffd}(\\n\\r\\t\u{2028}end\"";
    let client = pair.records();
    assert!(
        find(&client, "transport:packet_sent", &["connection_close", expected]).is_some(),
        "{expected} not in the client's trace"
    );
    let server: Vec<String> = server_rx
        .try_iter()
        .map(|r| {
            let text = String::from_utf8(r[1..r.len() - 1].to_vec()).unwrap();
            check_json(&text);
            text
        })
        .collect();
    assert!(
        find(
            &server,
            "transport:packet_received",
            &["connection_close", expected]
        )
        .is_some(),
        "{expected} not in the server's trace"
    );
}

/// An `io::Write` that takes `room` bytes, then fails every write.
struct Failing {
    taken: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    room: usize,
}

impl std::io::Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut taken = self.taken.lock().unwrap();
        let n = buf.len().min(self.room - taken.len());
        if n == 0 {
            return Err(std::io::Error::other("full"));
        }
        taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A second `set_qlog` replaces the first sink (which gets nothing more) and starts the new one with a
/// header; a `QlogWriter` whose writer fails keeps the connection going and writes nothing after the
/// failure, the handshake and a transfer completing as without it.
#[test]
fn qlog_second_sink_replaces_the_first_and_write_errors_stay_out_of_the_connection() {
    let mut pair = Pair::new();
    let first = pair.records();
    assert_eq!(first.len(), 1, "the header only: {first:?}");
    let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = Failing {
        taken: taken.clone(),
        room: 2000,
    };
    let h = pair.client_h;
    pair.client
        .conn(h)
        .unwrap()
        .set_qlog(Box::new(QlogWriter::new(writer)));
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.connected, 2);
    assert!(pair.records().is_empty(), "the replaced sink got records");
    let written = taken.lock().unwrap().clone();
    assert_eq!(written.len(), 2000, "the writer filled up");
    assert_eq!(written[0], 0x1e);
    let header_end = written.iter().position(|&b| b == b'\n').unwrap();
    let header = std::str::from_utf8(&written[1..header_end]).unwrap();
    check_json(header);
    assert!(header.contains("\"qlog_version\":\"0.3\""), "{header}");
    // The transfer completes with the sink broken.
    pair.send_losing_the_first_packet();
    pair.run(Duration::from_secs(5));
    let stats = pair.client.conn(h).unwrap().stats();
    assert_eq!(taken.lock().unwrap().len(), 2000, "records after the failure");
    assert!(stats.packets_lost >= 1, "{stats:?}");
    assert!(pair.client.conn(h).unwrap().take_qlog().is_some());
}
