//! Seed corpora recorded from real runs of the null-cipher build (`examples/fuzz_corpus.rs`).
//!
//! A pair runs a handshake and a transfer over a perfect network; its datagrams, their decrypted
//! payloads and the transport parameters in the handshake become the seeds of each target, in each
//! target's input format. Only a fuzzing build can record them: under the null cipher a payload is its
//! plaintext, and a seed made of real ciphertext would not authenticate in the fuzzing build anyway.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;

use super::pair::{Pair, Perfect, Setup, CLIENT, SERVER};
use crate::wire::frame::{Frame, Frames};
use crate::wire::header::{Coalesced, LongType};

/// Connection ID length of the default generator: the short-header DCID length of recorded packets.
const CID_LEN: usize = 8;
/// Tag length of the null cipher.
const TAG_LEN: usize = 16;
/// Seeds per target: enough to show every packet and frame type of a transfer, small enough for git.
const MAX_SEEDS: usize = 24;

/// One recorded packet: who sent it, its type (`None`: 1-RTT), and its plaintext payload.
struct Packet {
    from: usize,
    ty: Option<LongType>,
    payload: Vec<u8>,
}

/// Runs a handshake and a transfer and writes seeds under `dir/<target>/seed-*`.
pub fn record_corpus(dir: &Path, epoch: Instant) -> io::Result<()> {
    let setup = Setup::new(epoch);
    let mut pair = Pair::new(&setup, 7);
    pair.record = Some(Vec::new());
    let mut net = Perfect;
    assert!(pair.handshake(&mut net), "the null handshake completes");
    let len = 3000;
    let mut app = super::conn::transfer_app(len);
    let limit = pair.now + std::time::Duration::from_secs(10);
    pair.run(&mut net, limit, &mut app, &|p: &Pair| {
        p.model.len() >= 2 && p.model.values().all(|m| m.read_fin)
    });
    let datagrams = pair.record.take().unwrap_or_default();
    let mut packets = Vec::new();
    for (from, d) in &datagrams {
        for (at, header) in Coalesced::new(d, CID_LEN).flatten() {
            let Some(packet) = d.get(at..at + header.len()) else {
                continue;
            };
            let Ok(plain) = header.finish(packet) else {
                continue;
            };
            let Some(payload) = packet.get(plain.header_len..packet.len().saturating_sub(TAG_LEN)) else {
                continue;
            };
            packets.push(Packet {
                from: *from,
                ty: header.long_type(),
                payload: payload.to_vec(),
            });
        }
    }

    let mut seeds = Seeds::new(dir);
    // header: the short-header CID length, then a datagram.
    for (_, d) in datagrams.iter().take(MAX_SEEDS) {
        seeds.add("header", [&[CID_LEN as u8][..], d].concat())?;
    }
    // frame: decrypted payloads.
    for p in packets.iter().take(MAX_SEEDS) {
        seeds.add("frame", p.payload.clone())?;
    }
    // transport_params: the parameters in the null handshake's hello (client) and parameters (server)
    // messages, carried in CRYPTO frames.
    for p in &packets {
        for frame in Frames::new(&Bytes::from(p.payload.clone())).flatten() {
            if let Frame::Crypto(c) = frame {
                if let Some(params) = handshake_params(&c.data) {
                    seeds.add("transport_params", params.to_vec())?;
                }
            }
        }
    }
    // server_recv: the client's datagrams of the handshake and the transfer, as one input, and the
    // first few one by one.
    let client: Vec<&Vec<u8>> = datagrams
        .iter()
        .filter(|(s, _)| *s == CLIENT)
        .map(|(_, d)| d)
        .collect();
    let record = |d: &[u8], delay: u8| {
        let len = u16::try_from(d.len()).expect("datagrams fit 2 bytes");
        [&[delay << 2][..], &len.to_be_bytes(), d].concat()
    };
    seeds.add("server_recv", client.iter().flat_map(|d| record(d, 5)).collect())?;
    for d in client.iter().take(4) {
        seeds.add("server_recv", record(d, 0))?;
    }
    // The same handshake with the server switched to refusing first (an empty record with bits 3 and 2
    // set), and back to accepting halfway (bit 3 only).
    let refuse = [12u8, 0, 0];
    let accept = [8u8, 0, 0];
    let half = client.len() / 2;
    let mut switched = refuse.to_vec();
    for (i, d) in client.iter().enumerate() {
        if i == half {
            switched.extend_from_slice(&accept);
        }
        switched.extend(record(d, 5));
    }
    seeds.add("server_recv", switched)?;
    // conn_frames: one payload each the peer really sent, injected into the other side.
    for p in packets.iter().filter(|p| p.ty.is_none()).take(MAX_SEEDS) {
        let to = (1 - p.from) as u8;
        let body = p.payload.get(..255).unwrap_or(&p.payload);
        seeds.add(
            "conn_frames",
            [&[4, (5 << 1) | to, body.len() as u8][..], body].concat(),
        )?;
    }
    let _ = SERVER;
    // conn_network: fate scripts (deliver, drop, duplicate, corrupt, delay) for the same transfer.
    for (i, script) in [
        &[0u8, 0, 0, 0][..],
        &[4, 0, 4, 0, 0, 4, 4, 0],
        &[5, 5, 0, 0x85, 0],
        &[0xf8, 0, 0x40, 0, 0x78],
        &[6, 0, 40, 0, 0, 6, 0, 200],
        &[7, 0xff, 4, 4, 4, 0, 0, 4],
    ]
    .into_iter()
    .enumerate()
    {
        seeds.add("conn_network", [&[i as u8 * 20][..], script].concat())?;
    }
    // conn_datagrams: the transfer size; the client's receive and send buffers and the server's; a fate
    // script; then records `[op, a, b]`, op = kind << 1 | side (0 to 2 send: a picks the size, 0 the
    // largest, 1 one more, 2 empty; 3 a burst of a + 1; 4 and 5 read, a = 0 all; 6 wait 2a ms; 7 close
    // with a >= 0xf0).
    let early = [0u8, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 2, 0, 1, 2, 0];
    let later = [
        12u8, 25, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 0, 2, 2, 0, 6, 7, 0, 7, 7, 0, 12, 20, 0, 8, 0, 0, 9, 0,
        0,
    ];
    let close = [14u8, 0xf0, 0, 0, 0, 0, 1, 0, 0, 12, 25, 0, 9, 0, 0, 8, 0, 0];
    for (buffers, fates, records) in [
        ([255u8, 255, 255, 255], &[][..], vec![&early[..], &later]),
        ([3, 255, 4, 255], &[], vec![&early, &later]),
        ([5, 10, 22, 130], &[], vec![&early, &later]),
        (
            [255, 255, 255, 255],
            &[4, 0, 5, 0, 0x78, 6, 0, 40, 0, 4],
            vec![&early, &later, &later],
        ),
        ([255, 255, 255, 255], &[], vec![&early, &later, &close]),
        ([131, 1, 140, 129], &[], vec![&later, &early, &later]),
        // A longer one, so that libFuzzer's length limit (the longest seed) leaves room for many records.
        (
            [255, 140, 20, 255],
            &[
                0, 4, 0, 5, 0, 0x78, 6, 0, 40, 0, 4, 0, 2, 0x0a, 0x12, 3, 0x1b, 0, 7, 0, 0, 4,
            ],
            vec![
                &early, &later, &later, &later, &later, &later, &later, &close, &later,
            ],
        ),
    ] {
        let mut seed = vec![10];
        seed.extend(buffers);
        seed.push(fates.len() as u8);
        seed.extend(fates);
        seed.extend(records.concat());
        seeds.add("conn_datagrams", seed)?;
    }
    // stream_ops: `[op, arg]` pairs; op = kind << 1 | side (0 open bi, 1 open uni, 2 write, 3 finish,
    // 4 reset, 5 stop, 6 read, 7 accept, 8 wait).
    for ops in [
        &[0u8, 0, 4, 20, 6, 0, 16, 5, 15, 0, 13, 0, 16, 5][..],
        &[3, 0, 5, 30, 7, 0, 16, 10, 15, 0, 13, 0][..],
        &[0, 0, 4, 200, 8, 7, 16, 2, 15, 0, 11, 9, 13, 0][..],
        &[1, 0, 5, 50, 16, 1, 14, 0, 10, 3, 16, 3][..],
    ] {
        seeds.add("stream_ops", ops.to_vec())?;
    }
    // reassembly: a window, then inserts and reads.
    for ops in [
        &[0u8, 99, 0, 0, 10, 0, 10, 0, 0, 0, 0, 15, 1, 0, 0, 5, 0, 195, 1][..],
        &[4, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 4, 0, 1, 1, 0, 0, 2, 0, 8, 1][..],
        &[0xff, 0xff, 0x10, 0, 5, 0, 5, 0x1e, 0xff, 0xff, 0, 100, 1][..],
    ] {
        seeds.add("reassembly", ops.to_vec())?;
    }
    Ok(())
}

/// The transport parameters in a null handshake message, if `data` starts with one that has them.
fn handshake_params(data: &[u8]) -> Option<&[u8]> {
    let (&ty, rest) = data.split_first()?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let body = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    match ty {
        1 => {
            let (&name_len, rest) = body.split_first()?;
            rest.get(usize::from(name_len)..)
        }
        3 => Some(body),
        _ => None,
    }
}

/// Whether `name` is one of the numbered seeds this recorder writes (`seed-01`): only those are replaced
/// on a rerun, so that inputs kept from findings (`seed-forged-reset-blocked`, `regress-*`) stay.
fn numbered(name: &str) -> bool {
    name.strip_prefix("seed-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes numbered seed files, replacing the old numbered seeds of each target.
struct Seeds<'a> {
    dir: &'a Path,
    cleared: Vec<&'static str>,
    counts: std::collections::BTreeMap<&'static str, usize>,
}

impl<'a> Seeds<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            cleared: Vec::new(),
            counts: Default::default(),
        }
    }

    fn add(&mut self, target: &'static str, data: Vec<u8>) -> io::Result<()> {
        let dir = self.dir.join(target);
        if !self.cleared.contains(&target) {
            fs::create_dir_all(&dir)?;
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.file_name().is_some_and(|n| numbered(&n.to_string_lossy())) {
                    fs::remove_file(path)?;
                }
            }
            self.cleared.push(target);
        }
        let n = self.counts.entry(target).or_insert(0);
        if *n >= MAX_SEEDS {
            return Ok(());
        }
        *n += 1;
        fs::write(dir.join(format!("seed-{n:02}")), data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::epoch;

    /// A rerun replaces the numbered seeds it recorded before (a stale `seed-99` included) and keeps
    /// the inputs kept from findings, whatever they are named (`docs/fuzzing.md`, Corpus).
    #[test]
    fn a_rerun_keeps_the_inputs_kept_from_findings() {
        let dir = std::env::temp_dir().join(format!("quicsand-corpus-{}", std::process::id()));
        let network = dir.join("conn_network");
        fs::create_dir_all(&network).expect("a temporary directory");
        let kept = ["seed-forged-reset-blocked", "regress-forged-fin"];
        for name in kept.iter().chain(&["seed-99"]) {
            fs::write(network.join(name), b"kept").expect("a temporary file");
        }
        let recorded = record_corpus(&dir, epoch());
        let mut names: Vec<String> = fs::read_dir(&network)
            .expect("the directory is still there")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let _ = fs::remove_dir_all(&dir);
        recorded.expect("recorded");
        for name in kept {
            assert!(names.iter().any(|n| n == name), "{name} deleted: {names:?}");
        }
        assert!(
            !names.iter().any(|n| n == "seed-99"),
            "stale seed-99 kept: {names:?}"
        );
        assert!(
            names.iter().any(|n| n == "seed-01"),
            "nothing recorded: {names:?}"
        );
    }
}
