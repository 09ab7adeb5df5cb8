//! The JSON text qlog records are made of: a small writer that places commas and colons, string
//! escaping, and JSON-SEQ framing.

use std::fmt::Write as _;
use std::time::Duration;

/// Appends `s` to `out` as a JSON string literal, quotes included (RFC 8259 §7).
pub(super) fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A tiny JSON writer: it places commas and colons, the caller keeps objects and arrays balanced.
#[derive(Debug, Default)]
pub(super) struct Json {
    /// The JSON text written so far.
    pub(super) out: String,
    /// Whether the next value in the innermost container needs a comma before it.
    comma: bool,
}

impl Json {
    pub(super) fn sep(&mut self) {
        if self.comma {
            self.out.push(',');
        }
        self.comma = true;
    }

    pub(super) fn key(&mut self, k: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.out, k);
        self.out.push(':');
        self.comma = false;
        self
    }

    pub(super) fn open(&mut self, c: char) -> &mut Self {
        self.sep();
        self.out.push(c);
        self.comma = false;
        self
    }

    pub(super) fn close(&mut self, c: char) -> &mut Self {
        self.out.push(c);
        self.comma = true;
        self
    }

    pub(super) fn str(&mut self, v: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.out, v);
        self
    }

    pub(super) fn u64(&mut self, v: u64) -> &mut Self {
        self.sep();
        let _ = write!(self.out, "{v}");
        self
    }

    pub(super) fn bool(&mut self, v: bool) -> &mut Self {
        self.sep();
        self.out.push_str(if v { "true" } else { "false" });
        self
    }

    /// A duration in milliseconds, as a number with microsecond precision.
    pub(super) fn ms(&mut self, d: Duration) -> &mut Self {
        self.sep();
        let _ = write!(self.out, "{:.3}", d.as_secs_f64() * 1000.0);
        self
    }
}

/// A JSON text as a JSON-SEQ record (RFC 7464 §2.2).
pub(super) fn record(json: String) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 2);
    out.push(0x1e);
    out.extend_from_slice(json.as_bytes());
    out.push(b'\n');
    out
}

/// `bytes` in lowercase hexadecimal.
pub(super) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
