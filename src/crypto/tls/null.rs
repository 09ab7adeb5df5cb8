//! A handshake without cryptography for fuzzing builds: [`NullSession`].
//!
//! It plays the TLS 1.3 message flow as QUIC sees it (RFC 9001 §4.1), with the same levels and key
//! changes, but the messages are trivial and the keys are the null cipher of `crypto/null.rs`. Each
//! message is a type byte, a 2-byte big-endian length and a body:
//!
//! | message | type | body | sent by, level |
//! | --- | --- | --- | --- |
//! | hello | 1 | server name length (1 byte), server name, transport parameters | client, Initial |
//! | server hello | 2 | empty | server, Initial |
//! | parameters | 3 | transport parameters | server, Handshake |
//! | finished | 4 | empty | server then client, Handshake |
//!
//! Anything else (an unknown type, a message out of order or at the wrong level, bytes after the last
//! message of a level) fails the session with CRYPTO_ERROR carrying unexpected_message, as TLS would.
//! This module exists only under `cfg(fuzzing)`; see `docs/fuzzing.md`.

#[cfg(not(fuzzing))]
compile_error!("the null handshake is for cfg(fuzzing) builds only");

use std::collections::VecDeque;

use super::{KeyChange, Level, Session};
use crate::crypto::{null, DirectionalKeys, PacketKey, Suite};
use crate::wire::transport_params::TransportParameters;
use crate::wire::{TransportError, TransportErrorCode};
use crate::Side;

const HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const PARAMETERS: u8 = 3;
const FINISHED: u8 = 4;

/// TLS alert unexpected_message (RFC 8446 §6).
const UNEXPECTED_MESSAGE: u8 = 10;

/// Where the handshake stands: which message this side reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Hello,
    ServerHello,
    Parameters,
    Finished,
    Done,
}

/// The null handshake of one connection (see the module documentation).
#[derive(Debug)]
pub struct NullSession {
    side: Side,
    server_name: Option<String>,
    local_params: Vec<u8>,
    peer_params: Option<Vec<u8>>,
    expect: Expect,
    read_level: Level,
    /// A partial message of the current read level; at most one message (3 + 65535 bytes).
    partial: Vec<u8>,
    pending: VecDeque<(Vec<u8>, Option<KeyChange>)>,
    one_rtt: bool,
    error: Option<TransportError>,
}

fn message(ty: u8, body: &[&[u8]]) -> Vec<u8> {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let len = u16::try_from(len).expect("null handshake messages carry our own small bodies");
    let mut out = vec![ty];
    out.extend_from_slice(&len.to_be_bytes());
    for b in body {
        out.extend_from_slice(b);
    }
    out
}

fn encode_params(params: &TransportParameters) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(params.encoded_len());
    params.encode(&mut encoded);
    encoded
}

impl NullSession {
    /// A client session for `server_name`; its hello is ready at the Initial level.
    pub fn client(server_name: &str, params: &TransportParameters) -> Self {
        let mut session = Self::new(Side::Client, encode_params(params));
        let name = server_name.as_bytes();
        let name = name.get(..255).unwrap_or(name);
        session.server_name = Some(String::from_utf8_lossy(name).into_owned());
        let name_len = [u8::try_from(name.len()).expect("cut to 255 bytes above")];
        let hello = message(HELLO, &[&name_len, name, &session.local_params]);
        session.pending.push_back((hello, None));
        session.expect = Expect::ServerHello;
        session
    }

    /// A server session.
    pub fn server(params: &TransportParameters) -> Self {
        Self::new(Side::Server, encode_params(params))
    }

    fn new(side: Side, local_params: Vec<u8>) -> Self {
        Self {
            side,
            server_name: None,
            local_params,
            peer_params: None,
            expect: Expect::Hello,
            read_level: Level::Initial,
            partial: Vec::new(),
            pending: VecDeque::new(),
            one_rtt: false,
            error: None,
        }
    }

    fn fail(&mut self, error: TransportError) -> Result<(), TransportError> {
        self.error = Some(error.clone());
        self.pending.clear();
        self.partial = Vec::new();
        Err(error)
    }

    fn unexpected(&mut self, what: &str) -> Result<(), TransportError> {
        let error = TransportError::new(
            TransportErrorCode::crypto(UNEXPECTED_MESSAGE),
            format!("null handshake: {what}"),
        );
        self.fail(error)
    }

    /// Handles one whole message.
    fn on_message(&mut self, ty: u8, body: &[u8]) -> Result<(), TransportError> {
        match (self.side, self.expect, ty) {
            (Side::Server, Expect::Hello, HELLO) => {
                let Some((&name_len, rest)) = body.split_first() else {
                    return self.unexpected("empty hello");
                };
                let Some((name, params)) = rest.split_at_checked(usize::from(name_len)) else {
                    return self.unexpected("hello shorter than its server name");
                };
                self.server_name = Some(String::from_utf8_lossy(name).into_owned());
                self.peer_params = Some(params.to_vec());
                let flight = message(PARAMETERS, &[&self.local_params]);
                let mut flight = flight;
                flight.extend_from_slice(&message(FINISHED, &[]));
                self.pending.push_back((
                    message(SERVER_HELLO, &[]),
                    Some(KeyChange::Handshake(null::keys())),
                ));
                self.pending
                    .push_back((flight, Some(KeyChange::OneRtt(null::keys()))));
                self.one_rtt = true;
                self.read_level = Level::Handshake;
                self.expect = Expect::Finished;
            }
            (Side::Client, Expect::ServerHello, SERVER_HELLO) if body.is_empty() => {
                self.pending
                    .push_back((Vec::new(), Some(KeyChange::Handshake(null::keys()))));
                self.read_level = Level::Handshake;
                self.expect = Expect::Parameters;
            }
            (Side::Client, Expect::Parameters, PARAMETERS) => {
                self.peer_params = Some(body.to_vec());
                self.expect = Expect::Finished;
            }
            (Side::Client, Expect::Finished, FINISHED) if body.is_empty() => {
                self.pending
                    .push_back((message(FINISHED, &[]), Some(KeyChange::OneRtt(null::keys()))));
                self.one_rtt = true;
                self.read_level = Level::OneRtt;
                self.expect = Expect::Done;
            }
            (Side::Server, Expect::Finished, FINISHED) if body.is_empty() => {
                self.read_level = Level::OneRtt;
                self.expect = Expect::Done;
            }
            _ => return self.unexpected("message out of order"),
        }
        Ok(())
    }
}

impl Session for NullSession {
    fn side(&self) -> Side {
        self.side
    }

    fn read_handshake(&mut self, level: Level, data: &[u8]) -> Result<(), TransportError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if data.is_empty() {
            return Ok(());
        }
        // RFC 9001 §4.1.3: handshake data only at the level the handshake reads at.
        if level != self.read_level {
            let error = TransportError::protocol_violation(format!(
                "handshake data at the {level:?} level while the handshake reads at the {:?} level",
                self.read_level
            ));
            return self.fail(error);
        }
        if self.expect == Expect::Done {
            // Post-handshake messages (a TLS NewSessionTicket, say) are ignored.
            return Ok(());
        }
        self.partial.extend_from_slice(data);
        loop {
            let Some((&ty, rest)) = self.partial.split_first() else {
                return Ok(());
            };
            let Some((len, rest)) = rest.split_first_chunk::<2>() else {
                return Ok(());
            };
            let len = usize::from(u16::from_be_bytes(*len));
            let Some(body) = rest.get(..len) else {
                return Ok(()); // wait for the rest of the message
            };
            let body = body.to_vec();
            self.partial.drain(..3 + len);
            let before = self.read_level;
            self.on_message(ty, &body)?;
            // A message that changes the read level ends its level: nothing may follow it there.
            if self.read_level != before && !self.partial.is_empty() {
                return self.unexpected("data after the last message of its level");
            }
        }
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<KeyChange> {
        if self.error.is_some() {
            return None;
        }
        let (bytes, change) = self.pending.pop_front()?;
        buf.extend_from_slice(&bytes);
        change
    }

    fn next_1rtt_keys(&mut self) -> Option<(Box<dyn PacketKey>, Box<dyn PacketKey>)> {
        if !self.one_rtt {
            return None;
        }
        Some((Box::new(null::NullPacketKey), Box::new(null::NullPacketKey)))
    }

    fn peek_next_1rtt_remote_key(&self) -> Option<Box<dyn PacketKey>> {
        self.one_rtt
            .then(|| Box::new(null::NullPacketKey) as Box<dyn PacketKey>)
    }

    fn zero_rtt_keys(&self) -> Option<DirectionalKeys> {
        None
    }

    fn is_handshaking(&self) -> bool {
        self.expect != Expect::Done
    }

    fn peer_transport_parameters(&self) -> Option<&[u8]> {
        self.peer_params.as_deref()
    }

    fn alpn_protocol(&self) -> Option<&[u8]> {
        None
    }

    fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    fn suite(&self) -> Option<Suite> {
        None
    }

    fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        None
    }
}
