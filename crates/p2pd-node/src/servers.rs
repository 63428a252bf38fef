//! How servers are named: `host:port` for STUN and NTP, `mqtt://host:port`
//! for signaling brokers, and TURN relays with their credentials.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// How long resolving one server name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A server named by host (DNS name or IP) and port: `host:port`,
/// `[v6]:port`, or a bare host taking the service's default port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// DNS name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port; 0 when the text named none, meaning the service's default.
    pub port: u16,
}

/// Why a server name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}`: {reason}")]
pub struct ServerNameError {
    text: String,
    reason: String,
}

impl ServerNameError {
    fn new(text: &str, reason: impl Into<String>) -> Self {
        Self {
            text: text.to_owned(),
            reason: reason.into(),
        }
    }
}

impl HostPort {
    /// The port, or `default` when the text named none.
    pub fn port_or(&self, default: u16) -> u16 {
        if self.port == 0 { default } else { self.port }
    }
}

/// Resolves servers (`kind` names them in logs), all at once: an
/// unanswered name costs one timeout, not one each, and a name that does
/// not resolve in time is logged and skipped. Keeps the configured order.
///
/// Cancel-safe.
pub async fn resolve(
    servers: &[HostPort],
    default_port: u16,
    kind: &'static str,
) -> Vec<SocketAddr> {
    let mut lookups = tokio::task::JoinSet::new();
    for (n, server) in servers.iter().enumerate() {
        let name = HostPort {
            host: server.host.clone(),
            port: server.port_or(default_port),
        }
        .to_string();
        lookups.spawn(async move {
            let found =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name.clone())).await;
            (n, name, found)
        });
    }
    let mut found = Vec::new();
    while let Some(joined) = lookups.join_next().await {
        let Ok((n, name, result)) = joined else {
            continue;
        };
        match result {
            Ok(Ok(addrs)) => found.push((n, addrs.collect::<Vec<_>>())),
            Ok(Err(err)) => tracing::warn!(server = %name, %err, "{kind} server skipped"),
            Err(_) => tracing::warn!(server = %name, "{kind} server skipped: no DNS answer"),
        }
    }
    found.sort_by_key(|(n, _)| *n);
    let mut out: Vec<SocketAddr> = found.into_iter().flat_map(|(_, addrs)| addrs).collect();
    out.dedup();
    out
}

impl FromStr for HostPort {
    type Err = ServerNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ServerNameError::new(s, reason);
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| err("missing `]` after an IPv6 address".into()))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| err(format!("`{host}` is not an IPv6 address")))?;
            match after {
                "" => (host, None),
                _ => {
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| err("expected `:port` after `]`".into()))?;
                    (host, Some(port))
                }
            }
        } else if s.matches(':').count() > 1 {
            return Err(err("write IPv6 addresses as [addr]:port".into()));
        } else {
            match s.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(err(format!("`{host}` is not a host name or IP address")));
        }
        let port = match port {
            None => 0,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(err("port must be 1-65535".into())),
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracketed = self.host.contains(':');
        match (bracketed, self.port) {
            (true, 0) => write!(f, "[{}]", self.host),
            (true, p) => write!(f, "[{}]:{p}", self.host),
            (false, 0) => f.write_str(&self.host),
            (false, p) => write!(f, "{}:{p}", self.host),
        }
    }
}

/// An MQTT broker: `mqtt://host[:port]` (port 1883 when omitted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerUrl {
    /// Broker host and port (the port is always set).
    pub server: HostPort,
}

/// The standard unencrypted MQTT port.
pub const MQTT_PORT: u16 = 1883;

impl FromStr for BrokerUrl {
    type Err = ServerNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("mqtt://")
            .ok_or_else(|| ServerNameError::new(s, "a broker is written mqtt://host:port"))?;
        let mut server: HostPort = rest.parse()?;
        server.port = server.port_or(MQTT_PORT);
        Ok(Self { server })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}", self.server)
    }
}

/// A TURN relay and the long-term credential to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// The relay's host and port.
    pub address: HostPort,
    /// How the client reaches the relay.
    pub transport: TurnTransport,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password; never logged.
    pub password: String,
    /// Realm; the server's own one is used when empty.
    pub realm: String,
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServer")
            .field("address", &self.address)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// Transport between a TURN client and its relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnTransport {
    /// TURN over UDP (RFC 8656's default).
    #[default]
    Udp,
    /// TURN over TCP, for networks that block UDP.
    Tcp,
}

impl FromStr for TurnTransport {
    type Err = ServerNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            _ => Err(ServerNameError::new(s, "a TURN transport is udp or tcp")),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn host_port_forms() {
        let hp: HostPort = "[fd00::1]:3478".parse().expect("v6");
        assert_eq!((hp.host.as_str(), hp.port), ("fd00::1", 3478));
        assert_eq!(hp.to_string(), "[fd00::1]:3478");
        let bare: HostPort = "pool.ntp.org".parse().expect("bare");
        assert_eq!(bare.port_or(123), 123);
        assert!("fd00::1:3478".parse::<HostPort>().is_err());
        assert!(":3478".parse::<HostPort>().is_err());
        assert!("a b:1".parse::<HostPort>().is_err());
        assert!("h:0".parse::<HostPort>().is_err());
        let broker: BrokerUrl = "mqtt://127.0.0.1".parse().expect("default port");
        assert_eq!(broker.server.port, MQTT_PORT);
        assert!("tcp://h:1".parse::<BrokerUrl>().is_err());
    }

    #[test]
    fn turn_password_is_not_in_debug_output() {
        let server = TurnServer {
            address: "h:3478".parse().expect("lit"),
            transport: TurnTransport::Udp,
            username: "u".into(),
            password: "hunter2".into(),
            realm: String::new(),
        };
        assert!(!format!("{server:?}").contains("hunter2"));
    }

    proptest! {
        #[test]
        fn host_port_text_round_trips(host in "[a-z][a-z0-9.-]{0,20}", port in 1u16..) {
            let hp = HostPort { host, port };
            prop_assert_eq!(hp.to_string().parse::<HostPort>(), Ok(hp));
        }

        #[test]
        fn host_port_parse_is_total(text in "\\PC{0,40}") {
            let _ = text.parse::<HostPort>();
        }
    }
}
