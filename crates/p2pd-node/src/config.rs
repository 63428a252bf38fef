//! The p2pd configuration file (DESIGN.md "Configuration").
//!
//! One TOML file; every key is optional and a present key replaces its
//! built-in default (lists are replaced, not merged). Unknown keys are errors.
//! The built-in defaults name public servers, as the original project did, so
//! a node works out of the box; tests and the lab always pass their own file.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`: the local node.
    pub node: NodeConfig,
    /// `[signaling]`: MQTT brokers.
    pub signaling: SignalingConfig,
    /// `[stun]`: STUN servers.
    pub stun: StunConfig,
    /// `[ntp]`: time servers, for punch timing.
    pub ntp: NtpConfig,
    /// `[turn]`: relays, the last resort.
    pub turn: TurnConfig,
    /// `[connect]`: strategies and their budgets.
    pub connect: ConnectConfig,
    /// `[rest]`: the local REST API.
    pub rest: RestConfig,
}

/// `[node]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The node server's port; 0 picks a free one.
    pub port: u16,
    /// NIC names to use; empty means every interface with a route.
    pub interfaces: Vec<String>,
    /// Keeps the identity key; unset means a throwaway identity per process.
    pub data_dir: Option<PathBuf>,
}

/// `[signaling]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingConfig {
    /// MQTT brokers, all used at once. A peer address names them by index,
    /// so peers that signal each other share one list.
    pub brokers: Vec<BrokerUrl>,
}

impl Default for SignalingConfig {
    /// The public brokers the original project used.
    fn default() -> Self {
        Self {
            brokers: parse_all(&[
                "mqtt://mqtt.eclipseprojects.io:1883",
                "mqtt://broker.mqttdashboard.com:1883",
                "mqtt://test.mosquitto.org:1883",
                "mqtt://broker.emqx.io:1883",
                "mqtt://broker.hivemq.com:1883",
            ]),
        }
    }
}

/// `[stun]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StunConfig {
    /// STUN servers, asked over UDP and TCP.
    pub servers: Vec<HostPort>,
}

impl Default for StunConfig {
    /// Public servers; the first two also answer over TCP and RFC 5780
    /// CHANGE-REQUEST tests (two IPs, two ports).
    fn default() -> Self {
        Self {
            servers: parse_all(&[
                "stun.stunprotocol.org:3478",
                "stun.sipnet.com:3478",
                "stun.cloudflare.com:3478",
                "stun.l.google.com:19302",
                "stun.nextcloud.com:443",
            ]),
        }
    }
}

/// `[ntp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NtpConfig {
    /// NTP servers; the port defaults to 123.
    pub servers: Vec<HostPort>,
}

impl Default for NtpConfig {
    /// Public pools of several operators.
    fn default() -> Self {
        Self {
            servers: parse_all(&[
                "time.google.com:123",
                "time.cloudflare.com:123",
                "pool.ntp.org:123",
                "time.nist.gov:123",
            ]),
        }
    }
}

/// `[turn]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// TURN relays; none by default (relays cost their operators money).
    pub servers: Vec<TurnServer>,
}

/// One `[[turn.servers]]` entry.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TurnServer {
    /// The relay's host and port.
    pub address: HostPort,
    /// How the client reaches the relay.
    #[serde(default)]
    pub transport: TurnTransport,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password; never logged.
    pub password: String,
    /// Realm; the server's own one is used when empty.
    #[serde(default)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TurnTransport {
    /// TURN over UDP (RFC 8656's default).
    #[default]
    Udp,
    /// TURN over TCP, for networks that block UDP.
    Tcp,
}

/// `[connect]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectConfig {
    /// Strategies to try, in this order.
    pub strategies: Vec<Strategy>,
    /// Budget for a whole connect, all strategies, in milliseconds.
    pub timeout_ms: u64,
    /// Budget of the direct strategy, in milliseconds.
    pub direct_ms: u64,
    /// Budget of the reverse strategy, in milliseconds.
    pub reverse_ms: u64,
    /// Budget of TCP hole punching, in milliseconds.
    pub punch_ms: u64,
    /// Budget of the TURN relay strategy, in milliseconds.
    pub relay_ms: u64,
}

impl Default for ConnectConfig {
    /// Every strategy; budgets that fit a slow mobile link (direct: a few
    /// SYN retries; relay: TURN allocation plus a signaling round trip).
    fn default() -> Self {
        Self {
            strategies: vec![
                Strategy::Direct,
                Strategy::Reverse,
                Strategy::Punch,
                Strategy::Relay,
            ],
            timeout_ms: 15_000,
            direct_ms: 2_000,
            reverse_ms: 3_000,
            punch_ms: 3_000,
            relay_ms: 8_000,
        }
    }
}

impl ConnectConfig {
    /// The budget of one strategy.
    pub fn budget(&self, strategy: Strategy) -> Duration {
        Duration::from_millis(match strategy {
            Strategy::Direct => self.direct_ms,
            Strategy::Reverse => self.reverse_ms,
            Strategy::Punch => self.punch_ms,
            Strategy::Relay => self.relay_ms,
        })
    }

    /// The budget of a whole connect.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A way to open a connection to a peer (manual 1.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Connect to the peer's listen port.
    Direct,
    /// Ask the peer, over signaling, to connect back.
    Reverse,
    /// TCP hole punching with predicted ports.
    Punch,
    /// Relay through a TURN server.
    Relay,
}

impl Strategy {
    /// The name used in config files, on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::Reverse => "reverse",
            Strategy::Punch => "punch",
            Strategy::Relay => "relay",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Strategy::Direct,
            Strategy::Reverse,
            Strategy::Punch,
            Strategy::Relay,
        ]
        .into_iter()
        .find(|st| st.name() == s)
        .ok_or_else(|| format!("unknown strategy `{s}` (expected direct, reverse, punch or relay)"))
    }
}

/// `[rest]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Where the REST API listens.
    pub listen: SocketAddr,
}

impl Default for RestConfig {
    /// Loopback only, on the original project's port.
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 12333),
        }
    }
}

/// A server named by host (DNS name or IP) and port: `host:port`,
/// `[v6]:port`, or a bare host taking the service's default port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    /// DNS name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port; 0 when the text named none, meaning the service's default.
    pub port: u16,
}

impl HostPort {
    /// The port, or `default` when the text named none.
    pub fn port_or(&self, default: u16) -> u16 {
        if self.port == 0 { default } else { self.port }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: missing `]` after an IPv6 address"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("`{s}`: `{host}` is not an IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => {
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("`{s}`: expected `:port` after `]`"))?;
                    (host, Some(port))
                }
            }
        } else if s.matches(':').count() > 1 {
            return Err(format!("`{s}`: write IPv6 addresses as [addr]:port"));
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
            return Err(format!("`{s}`: `{host}` is not a host name or IP address"));
        }
        let port = match port {
            None => 0,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("`{s}`: port must be 1-65535")),
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HostPort> for String {
    fn from(hp: HostPort) -> Self {
        hp.to_string()
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct BrokerUrl {
    /// Broker host and port (the port is always set).
    pub server: HostPort,
}

/// The standard unencrypted MQTT port.
pub const MQTT_PORT: u16 = 1883;

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("mqtt://")
            .ok_or_else(|| format!("`{s}`: a broker is written mqtt://host:port"))?;
        let mut server: HostPort = rest.parse()?;
        server.port = server.port_or(MQTT_PORT);
        Ok(Self { server })
    }
}

impl TryFrom<String> for BrokerUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BrokerUrl> for String {
    fn from(b: BrokerUrl) -> Self {
        b.to_string()
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}", self.server)
    }
}

fn parse_all<T: FromStr>(items: &[&str]) -> Vec<T>
where
    T::Err: fmt::Debug,
{
    items
        .iter()
        .map(|s| s.parse().expect("invariant: built-in defaults parse"))
        .collect()
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file named.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key or value is wrong.
    #[error("config {origin}{}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default(), key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
    Invalid {
        /// The file (or `<text>`) the error is in.
        origin: String,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// Dotted key the error is about (`node.port`), when known.
        key: Option<String>,
        /// What is wrong, on one line.
        message: String,
    },
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|err| {
            let (line, key) = match err.span() {
                Some(span) => locate(text, span.start),
                None => (None, None),
            };
            ConfigError::Invalid {
                origin: origin.to_owned(),
                line,
                key,
                message: err.message().trim().replace('\n', " "),
            }
        })
    }
}

/// Finds the 1-based line of byte `offset` and the dotted key written there
/// (the enclosing `[table]` plus the key before `=`).
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let mut table = String::new();
    for line in before.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[') {
            table = name
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let key = match line.split_once('=') {
        Some((k, _)) if !line.starts_with('[') => {
            let k = k.trim();
            Some(if table.is_empty() {
                k.to_owned()
            } else {
                format!("{table}.{k}")
            })
        }
        _ if line.starts_with('[') => Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned(),
        ),
        _ => (!table.is_empty()).then_some(table),
    };
    (Some(line_no), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> (Option<usize>, Option<String>, String) {
        match Config::parse(text, "test.toml") {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_gives_the_built_in_defaults() {
        let config = Config::parse("", "t").expect("empty is valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.rest.listen, "127.0.0.1:12333".parse().expect("lit"));
        assert!(config.signaling.brokers.len() >= 3);
        assert!(config.stun.servers.len() >= 3);
        assert!(config.turn.servers.is_empty());
    }

    #[test]
    fn a_present_key_replaces_its_default_and_others_stay() {
        let config = Config::parse(
            "[stun]\nservers = [\"198.18.0.2:3478\"]\n[connect]\ndirect_ms = 50\n",
            "t",
        )
        .expect("valid");
        assert_eq!(
            config.stun.servers,
            vec!["198.18.0.2:3478".parse().expect("lit")]
        );
        assert_eq!(
            config.connect.budget(Strategy::Direct),
            Duration::from_millis(50)
        );
        assert_eq!(
            config.connect.reverse_ms,
            ConnectConfig::default().reverse_ms
        );
        assert_eq!(config.signaling, SignalingConfig::default());
    }

    #[test]
    fn empty_lists_mean_none() {
        let config = Config::parse(
            "[signaling]\nbrokers = []\n[stun]\nservers = []\n[ntp]\nservers = []\n",
            "t",
        )
        .expect("valid");
        assert!(config.signaling.brokers.is_empty());
        assert!(config.stun.servers.is_empty());
        assert!(config.ntp.servers.is_empty());
    }

    #[test]
    fn the_design_example_parses() {
        let text = r#"
[node]
port = 0
interfaces = []
data_dir = "/var/lib/p2pd"

[signaling]
brokers = ["mqtt://198.18.0.3:1883", "mqtt://198.18.0.4:1883"]

[stun]
servers = ["198.18.0.2:3478"]

[ntp]
servers = ["198.18.0.5:123"]

[[turn.servers]]
address = "198.18.0.6:3478"
transport = "udp"
username = "test"
password = "test"
realm = "lab"

[connect]
strategies = ["direct", "reverse", "punch", "relay"]
timeout_ms = 15000
direct_ms = 2000
reverse_ms = 3000
punch_ms = 3000
relay_ms = 8000

[rest]
listen = "127.0.0.1:12333"
"#;
        let config = Config::parse(text, "t").expect("the DESIGN example is valid");
        assert_eq!(config.signaling.brokers[1].server.host, "198.18.0.4");
        assert_eq!(config.turn.servers[0].transport, TurnTransport::Udp);
        assert_eq!(config.node.data_dir, Some(PathBuf::from("/var/lib/p2pd")));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let (line, key, message) = invalid("[node]\nport = 1\nprot = 2\n");
        assert_eq!(line, Some(3));
        assert_eq!(key.as_deref(), Some("node.prot"));
        assert!(message.contains("unknown field `prot`"), "{message}");
    }

    #[test]
    fn unknown_table_is_named() {
        let (line, key, _) = invalid("[node]\nport = 1\n\n[bogus]\nx = 1\n");
        assert_eq!(line, Some(4));
        assert_eq!(key.as_deref(), Some("bogus"));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let (line, key, _) = invalid("[node]\nport = \"x\"\n");
        assert_eq!(line, Some(2));
        assert_eq!(key.as_deref(), Some("node.port"));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let (_, key, message) = invalid("[signaling]\nbrokers = [\"tcp://x:1\"]\n");
        assert_eq!(key.as_deref(), Some("signaling.brokers"));
        assert!(message.contains("mqtt://"), "{message}");
        let (_, key, _) = invalid("[connect]\nstrategies = [\"teleport\"]\n");
        assert_eq!(key.as_deref(), Some("connect.strategies"));
        let (_, _, message) = invalid("[stun]\nservers = [\"host:99999\"]\n");
        assert!(message.contains("port"), "{message}");
    }

    #[test]
    fn error_message_is_one_line() {
        let err = Config::parse("[node]\nport = [1,\n", "f.toml").expect_err("broken toml");
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("config f.toml line"), "{text}");
    }

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
    }

    #[test]
    fn turn_password_is_not_in_debug_output() {
        let config = Config::parse(
            "[[turn.servers]]\naddress = \"h:3478\"\nusername = \"u\"\npassword = \"hunter2\"\n",
            "t",
        )
        .expect("valid");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn parse_never_panics(text in "\\PC{0,200}") {
                let _ = Config::parse(&text, "fuzz");
            }

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
}
