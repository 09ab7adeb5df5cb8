//! NEW_TOKEN frames (RFC 9000 §8.1.3, §19.7): the tokens a server sends, sent again if lost, and the
//! store a client files received ones in. The endpoint makes the tokens (`endpoint/token.rs`).

use bytes::Bytes;

use super::spaces::SentFrames;
use crate::wire::frame::Frame;

/// Received tokens a connection holds until the endpoint files them (after every input).
const MAX_RECEIVED: usize = 4;

/// The longest token a client puts in its Initial packets: a longer one would leave no room for the
/// ClientHello beside it in a 1200-byte Initial. NEW_TOKEN sets no limit; ours are under 100 bytes.
pub(crate) const MAX_CLIENT_TOKEN: usize = 512;

/// A connection's NEW_TOKEN state.
#[derive(Debug, Default)]
pub(crate) struct NewTokens {
    /// A server: tokens to send, or to send again after a loss (RFC 9000 §13.3). The endpoint queues a
    /// bounded number, and each is in flight or here, never both.
    pending: Vec<Bytes>,
    /// A server: the generation of the tokens in `pending`, counted up when the client moved to another
    /// address and the tokens made for the old one were dropped: one of those lost in flight is then
    /// not sent again.
    generation: u32,
    /// A client: the name received tokens are filed under in the store, when it keeps them.
    server_name: Option<String>,
    /// A client: the last tokens received (at most [`MAX_RECEIVED`]), to tell a repeated one.
    received: Vec<Bytes>,
    /// A client: how many of the newest in `received` wait to be filed.
    unfiled: usize,
}

impl NewTokens {
    /// A server: queues a token for a NEW_TOKEN frame.
    pub(crate) fn queue(&mut self, token: Bytes) {
        self.pending.push(token);
    }

    /// A server: drops the tokens made for an address the client has left, those waiting to be sent
    /// and (when lost) those in flight.
    pub(crate) fn forget_pending(&mut self) {
        self.pending = Vec::new();
        self.generation = self.generation.wrapping_add(1);
    }

    /// Whether a NEW_TOKEN frame waits to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A client: keeps received tokens for the endpoint to file under `name`.
    pub(crate) fn keep_for(&mut self, name: String) {
        self.server_name = Some(name);
    }

    /// Whether tokens wait to be filed (checked after every datagram; rarely true).
    #[inline]
    pub(crate) fn has_received(&self) -> bool {
        self.unfiled > 0
    }

    /// A client: the tokens received since the last call, with the name to file them under.
    pub(crate) fn take_received(&mut self) -> Option<(&str, Vec<Bytes>)> {
        if self.unfiled == 0 {
            return None;
        }
        let name = self.server_name.as_deref()?;
        let new = self.received[self.received.len() - self.unfiled..].to_vec();
        self.unfiled = 0;
        Some((name, new))
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
        sent.rare_mut().new_token = self.pending.pop().map(|t| (t, self.generation));
        if self.pending.is_empty() {
            // The usual single token is out: an idle connection keeps no storage for it.
            self.pending = Vec::new();
        }
        true
    }

    /// A packet that carried `token` was lost: send it again, unless it was made for an address the
    /// client has left.
    pub(crate) fn on_lost(&mut self, token: Option<(Bytes, u32)>) {
        if let Some((token, _)) = token.filter(|(_, g)| *g == self.generation) {
            self.pending.push(token);
        }
    }

    /// A client received a token (RFC 9000 §19.7; its decoder already rejected an empty one). One too
    /// long to use is not kept.
    pub(crate) fn on_received(&mut self, token: Bytes) {
        if self.server_name.is_none() || token.len() > MAX_CLIENT_TOKEN {
            return;
        }
        // RFC 9000 §19.7: "Clients are responsible for discarding duplicate values, which might be used
        // to link connection attempts": a server sends a token again when its frame seems lost, and the
        // first copy may have arrived after all.
        if self.received.contains(&token) {
            return;
        }
        // A bounded few per connection: a server sending NEW_TOKEN after NEW_TOKEN only replaces them.
        if self.received.len() >= MAX_RECEIVED {
            self.received.remove(0);
        }
        // The frame's bytes are a view of the whole decrypted packet: keep a copy of the token only.
        self.received.push(Bytes::copy_from_slice(&token));
        self.unfiled = (self.unfiled + 1).min(self.received.len());
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

    #[test]
    fn a_client_files_a_token_received_twice_once() {
        // RFC 9000 §19.7: duplicates might link connection attempts; the server sends a token again
        // when its frame seems lost, and the first copy may have arrived after all. Before, both copies
        // were filed, for the next two connections.
        let mut tokens = NewTokens::default();
        tokens.keep_for("example.com".to_string());
        let (a, b) = (Bytes::from_static(&[1; 40]), Bytes::from_static(&[2; 40]));
        tokens.on_received(a.clone());
        tokens.on_received(a.clone());
        assert_eq!(tokens.take_received(), Some(("example.com", vec![a.clone()])));
        // After filing, a late copy is still a duplicate; a new token is not.
        tokens.on_received(a.clone());
        assert!(!tokens.has_received());
        assert_eq!(tokens.take_received(), None);
        tokens.on_received(b.clone());
        tokens.on_received(a);
        assert_eq!(tokens.take_received(), Some(("example.com", vec![b])));
    }
}
