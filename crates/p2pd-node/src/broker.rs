//! `p2pd broker`: an MQTT broker in the process (rumqttd), so a LAN or an
//! offline machine needs no outside broker.
//!
//! rumqttd runs on threads of its own, has no shutdown, and only logs a
//! failed bind; so the address is checked by binding it first, and the
//! broker is waited for until it accepts a connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest MQTT payload accepted: signaling envelopes are a few hundred
/// bytes; this leaves room without letting a client make the broker buffer
/// megabytes.
const MAX_PAYLOAD: usize = 64 * 1024;

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The broker did not start accepting connections in time.
    #[error("the broker did not start listening on {0}")]
    NotListening(SocketAddr),
    /// The broker refused its configuration.
    #[error("broker configuration: {0}")]
    Config(String),
}

/// Starts an MQTT 3.1.1 broker on `listen` and returns once it accepts
/// connections. It runs until the process exits.
pub fn start(listen: SocketAddr) -> Result<(), BrokerError> {
    // Fail fast, with the OS's reason, if the address is taken.
    drop(
        TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
            addr: listen,
            source,
        })?,
    );
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "id": 0,
            "max_connections": 10_000,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 1_048_576,
            "max_segment_count": 10,
        },
        "v4": {
            "1": {
                "name": "v4-1",
                "listen": listen.to_string(),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60_000,
                    "max_payload_size": MAX_PAYLOAD,
                    "max_inflight_count": 100,
                    "dynamic_filters": true,
                },
            },
        },
    }))
    .map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(err) = broker.start() {
                tracing::error!(%err, "embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotListening(listen))
}
