//! NEW_TOKEN frames (RFC 9000 §8.1.3, §19.7): the tokens a server sends, sent again if lost, and the
//! store a client files received ones in. The endpoint makes the tokens (`endpoint/token.rs`).

use bytes::Bytes;

use super::spaces::SentFrames;
use crate::wire::frame::Frame;

/// Received tokens a connection holds until the endpoint files them (after every input).
const MAX_RECEIVED: usize = 4;

/// A connection's NEW_TOKEN state.
#[derive(Debug, Default)]
pub(crate) struct NewTokens {
    /// A server: tokens to send, or to send again after a loss (RFC 9000 §13.3). The endpoint queues a
    /// bounded number, and each is in flight or here, never both.
    pending: Vec<Bytes>,
    /// A client: the server name received tokens are filed under, when it keeps them.
    server_name: Option<String>,
    /// A client: tokens received, for the endpoint's store.
    received: Vec<Bytes>,
}

impl NewTokens {
    /// A server: queues a token for a NEW_TOKEN frame.
    pub(crate) fn queue(&mut self, token: Bytes) {
        self.pending.push(token);
    }

    /// Whether a NEW_TOKEN frame waits to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A client: keeps received tokens for the endpoint to file under `server_name`.
    pub(crate) fn keep_for(&mut self, server_name: &str) {
        self.server_name = Some(server_name.to_string());
    }

    /// Whether tokens wait to be filed (checked after every datagram; rarely true).
    #[inline]
    pub(crate) fn has_received(&self) -> bool {
        !self.received.is_empty()
    }

    /// A client: the tokens received since the last call, with the server name to file them under.
    pub(crate) fn take_received(&mut self) -> Option<(&str, Vec<Bytes>)> {
        if self.received.is_empty() {
            return None;
        }
        let name = self.server_name.as_deref()?;
        Some((name, std::mem::take(&mut self.received)))
    }

    /// Writes one pending NEW_TOKEN frame if it fits before `end`, recording it in `sent`. Returns
    /// whether it wrote one.
    pub(crate) fn write(&mut self, buf: &mut Vec<u8>, end: usize, sent: &mut SentFrames) -> bool {
        let Some(token) = self.pending.last() else {
            return false;
        };
        let frame = Frame::NewToken(token.clone());
        if buf.len() + frame.encoded_len() > end {
            return false;
        }
        frame.encode(buf);
        sent.rare_mut().new_token = self.pending.pop();
        if self.pending.is_empty() {
            // The usual single token is out: an idle connection keeps no storage for it.
            self.pending = Vec::new();
        }
        true
    }

    /// A packet that carried `token` was lost: send it again.
    pub(crate) fn on_lost(&mut self, token: Option<Bytes>) {
        self.pending.extend(token);
    }

    /// A client received a token (RFC 9000 §19.7; its decoder already rejected an empty one).
    pub(crate) fn on_received(&mut self, token: Bytes) {
        // A bounded few per connection: a server sending NEW_TOKEN after NEW_TOKEN only replaces them.
        if self.server_name.is_some() {
            if self.received.len() >= MAX_RECEIVED {
                self.received.remove(0);
            }
            // The frame's bytes are a view of the whole decrypted packet: keep a copy of the token only.
            self.received.push(Bytes::copy_from_slice(&token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_token_is_sent_again_and_each_frame_fits() {
        let mut tokens = NewTokens::default();
        tokens.queue(Bytes::from_static(&[7; 40]));
        let mut buf = Vec::new();
        let mut sent = SentFrames::default();
        // 40 bytes of token need 42 bytes of frame.
        assert!(!tokens.write(&mut buf, 41, &mut sent));
        assert!(buf.is_empty() && tokens.has_pending());
        assert!(tokens.write(&mut buf, 42, &mut sent));
        assert_eq!(buf.len(), 42);
        assert!(!tokens.has_pending());
        tokens.on_lost(sent.rare_mut().new_token.take());
        assert!(tokens.has_pending());
        let mut again = SentFrames::default();
        assert!(tokens.write(&mut buf, 84, &mut again));
        assert_eq!(buf[..42], buf[42..]);
    }
}
