//! The public servers a node uses when the configuration names none, as
//! the original project did, so it works out of the box. Tests and the lab
//! always pass their own file.

/// Public MQTT brokers the original project used.
pub(super) const BROKERS: &[&str] = &[
    "mqtt://mqtt.eclipseprojects.io:1883",
    "mqtt://broker.mqttdashboard.com:1883",
    "mqtt://test.mosquitto.org:1883",
    "mqtt://broker.emqx.io:1883",
    "mqtt://broker.hivemq.com:1883",
];

/// Public STUN servers; the first two also answer over TCP and RFC 5780
/// CHANGE-REQUEST tests (two IPs, two ports).
pub(super) const STUN: &[&str] = &[
    "stun.stunprotocol.org:3478",
    "stun.sipnet.com:3478",
    "stun.cloudflare.com:3478",
    "stun.l.google.com:19302",
    "stun.nextcloud.com:443",
];

/// Public NTP pools of several operators.
pub(super) const NTP: &[&str] = &[
    "time.google.com:123",
    "time.cloudflare.com:123",
    "pool.ntp.org:123",
    "time.nist.gov:123",
];

/// Parses a built-in list.
pub(super) fn parse<T: std::str::FromStr>(items: &[&str]) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    items
        .iter()
        .map(|s| s.parse().expect("invariant: built-in defaults parse"))
        .collect()
}
