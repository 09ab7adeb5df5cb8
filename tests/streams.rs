//! Bulk data on streams between quicsand and quicsand, and with quinn-proto in both roles, checked byte
//! for byte, without and with loss and reordering.

mod common;

use std::time::Duration;

use common::{digest, pair, payload, Engine, Pair};

const PAIRS: [(Engine, Engine); 3] = [
    (Engine::Quicsand, Engine::Quicsand),
    (Engine::Quicsand, Engine::Quinn),
    (Engine::Quinn, Engine::Quicsand),
];

/// Sends `len` bytes on one stream from the client and one from the server at once; both arrive intact.
fn transfer(c: Engine, s: Engine, len: usize, seed: u64, lossy: bool) -> Duration {
    let mut p = pair(c, s, seed);
    if lossy {
        // 5% loss and 5% of datagrams held back by up to 30 ms (reordering), in both directions.
        p.filter = Box::new(|_, _, _, rng| {
            if rng.chance(0.05) {
                None
            } else if rng.chance(0.05) {
                Some(Duration::from_millis(rng.next_u64() % 30))
            } else {
                Some(Duration::ZERO)
            }
        });
    }
    assert!(
        p.drive_until(Duration::from_secs(10), |p| p.both_connected()),
        "{c:?}/{s:?} handshake"
    );
    let up = payload(len, seed);
    let down = payload(len, seed + 1);
    let now = p.now;
    p.client.send_stream(now, up.clone());
    p.server.send_stream(now, down.clone());
    let start = p.now;
    let done = |p: &mut Pair| {
        let at_server = p.server.received_streams();
        let at_client = p.client.received_streams();
        at_server.values().any(|(n, fin)| *fin && *n == len)
            && at_client.values().any(|(n, fin)| *fin && *n == len)
    };
    let limit = p.now + Duration::from_secs(600);
    while !done(&mut p) {
        assert!(
            p.now < limit,
            "{c:?}/{s:?}: transfer did not finish; {:?} {:?}",
            p.client_events,
            p.server_events
        );
        assert!(
            p.step(),
            "{c:?}/{s:?}: nothing left to do before the transfer finished"
        );
    }
    let elapsed = p.now - start;
    let up_id = *p
        .server
        .received_streams()
        .iter()
        .find(|(_, (n, _))| *n == len)
        .unwrap()
        .0;
    let down_id = *p
        .client
        .received_streams()
        .iter()
        .find(|(_, (n, _))| *n == len)
        .unwrap()
        .0;
    assert_eq!(
        digest(&p.server.received_data(up_id)),
        digest(&up),
        "{c:?}/{s:?}: client to server bytes"
    );
    assert_eq!(
        digest(&p.client.received_data(down_id)),
        digest(&down),
        "{c:?}/{s:?}: server to client bytes"
    );
    elapsed
}

/// The transfer size: 64 MiB, or `QUICSAND_BULK_MIB` MiB.
fn bulk_len() -> usize {
    std::env::var("QUICSAND_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
        << 20
}

#[test]
fn sixty_four_mib_each_way_no_loss() {
    let len = bulk_len();
    for (c, s) in PAIRS {
        let t = transfer(c, s, len, 40, false);
        eprintln!(
            "{c:?} client / {s:?} server: {} MiB each way in {t:?} of virtual time",
            len >> 20
        );
    }
}

#[test]
fn sixty_four_mib_each_way_with_loss_and_reordering() {
    let len = bulk_len();
    for (c, s) in PAIRS {
        let t = transfer(c, s, len, 41, true);
        eprintln!(
            "{c:?} client / {s:?} server: {} MiB each way with loss in {t:?} of virtual time",
            len >> 20
        );
    }
}
