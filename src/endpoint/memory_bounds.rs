//! What a hostile peer, or a flood of them, can make an endpoint hold, under the default limits: each
//! test drives the worst case a peer can and asserts the bound on what stays held (lengths and
//! capacities, never time).

use std::time::Duration;

use super::churn::Net;
use super::Endpoint;
use crate::event::Event;
use crate::{ConnectionError, EndpointConfig};

/// RFC 9000 §21.6: a host completing handshakes from as many ports as it likes makes an endpoint
/// hold a connection for each, for as long as it keeps them alive. `ServerConfig::max_connections`
/// bounds the table; the clients beyond it are refused at once (§5.2.2), without state.
#[test]
fn connections_beyond_max_connections_are_refused_without_state() {
    let mut net = Net::new();
    let mut config = net.server_config.clone();
    config.max_connections = 3;
    net.server = Endpoint::new(EndpointConfig::with_seed(1), Some(config));
    let hs: Vec<_> = (0..5).map(|_| net.connect()).collect();
    net.run(Duration::from_secs(2));
    let stats = net.server.stats();
    assert_eq!(stats.connections_active, 3);
    assert_eq!(stats.refused_connection_limit, 2);
    let refused = hs
        .iter()
        .filter(|&&h| {
            net.client_events.iter().any(|(x, e)| {
                *x == h
                    && *e
                        == Event::ConnectionLost {
                            reason: ConnectionError::Refused,
                        }
            })
        })
        .count();
    assert_eq!(refused, 2);
    // Once one ends, a newcomer gets its place.
    let first = hs[0];
    let now = net.now;
    net.client.close(now, first, 0, b"bye").unwrap();
    net.run(Duration::from_secs(10));
    let late = net.connect();
    net.run(Duration::from_secs(2));
    assert!(net
        .client_events
        .iter()
        .any(|(x, e)| *x == late && *e == Event::Connected));
    assert_eq!(net.server.stats().connections_active, 3);
}
