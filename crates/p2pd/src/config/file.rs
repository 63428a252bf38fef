//! The configuration file (DESIGN.md "Configuration"): one TOML file in
//! which every key is optional and a present key replaces its built-in
//! default (lists are replaced, not merged). Unknown keys are errors that
//! name the key and its line.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use p2pd_node::config::{NodeConfig, PortmapProtocol, Strategy};
use p2pd_node::servers::{BrokerUrl, HostPort, TurnServer, TurnTransport};
use p2pd_rest::RestConfig;
use serde::Deserialize;

use super::Settings;
use super::defaults;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct File {
    node: NodeTable,
    signaling: SignalingTable,
    stun: ServersTable,
    ntp: ServersTable,
    turn: TurnTable,
    connect: ConnectTable,
    rest: RestTable,
    portmap: PortmapTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NodeTable {
    port: Option<u16>,
    interfaces: Option<Vec<String>>,
    data_dir: Option<DataDir>,
}

/// A data directory: never empty, which would put the identity key in
/// whatever the current directory happens to be.
#[derive(Debug, Deserialize)]
#[serde(try_from = "PathBuf")]
struct DataDir(PathBuf);

impl TryFrom<PathBuf> for DataDir {
    type Error = &'static str;

    fn try_from(path: PathBuf) -> Result<Self, Self::Error> {
        if path.as_os_str().is_empty() {
            Err("data_dir must not be empty (leave it out for a throwaway identity)")
        } else {
            Ok(Self(path))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SignalingTable {
    brokers: Option<Vec<Text<BrokerUrl>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ServersTable {
    servers: Option<Vec<Text<HostPort>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TurnTable {
    servers: Vec<TurnEntry>,
}

/// One `[[turn.servers]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnEntry {
    address: Text<HostPort>,
    #[serde(default)]
    transport: Option<Text<TurnTransport>>,
    username: String,
    password: String,
    #[serde(default)]
    realm: String,
}

impl fmt::Debug for TurnEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnEntry")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConnectTable {
    strategies: Option<Vec<Text<Strategy>>>,
    timeout_ms: Option<u64>,
    direct_ms: Option<u64>,
    reverse_ms: Option<u64>,
    punch_ms: Option<u64>,
    relay_ms: Option<u64>,
    encrypt: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PortmapTable {
    protocols: Option<Vec<Text<PortmapProtocol>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RestTable {
    listen: Option<SocketAddr>,
    allow_null_origin: Option<bool>,
}

/// A value written as text and parsed with its `FromStr`, whose error
/// becomes the file's error message.
struct Text<T>(T);

impl<T: fmt::Debug> fmt::Debug for Text<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, T> Deserialize<'de> for Text<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(PhantomData<T>);
        impl<T> serde::de::Visitor<'_> for Visitor<T>
        where
            T: FromStr,
            T::Err: fmt::Display,
        {
            type Value = Text<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                s.parse().map(Text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor(PhantomData))
    }
}

fn texts<T>(items: Vec<Text<T>>) -> Vec<T> {
    items.into_iter().map(|Text(t)| t).collect()
}

impl File {
    /// Reads and checks a configuration file.
    pub(super) fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `origin` names it in errors.
    pub(super) fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
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

    /// The typed configs: what the file says, the built-in defaults
    /// (public servers, the library's timings) for what it does not.
    pub(super) fn into_settings(self) -> Settings {
        let mut node = NodeConfig::default();
        node.port = self.node.port.unwrap_or(0);
        node.interfaces = self.node.interfaces.unwrap_or_default();
        node.data_dir = self.node.data_dir.map(|DataDir(path)| path);
        node.brokers = self
            .signaling
            .brokers
            .map_or_else(|| defaults::parse(defaults::BROKERS), texts);
        node.stun_servers = self
            .stun
            .servers
            .map_or_else(|| defaults::parse(defaults::STUN), texts);
        node.ntp_servers = self
            .ntp
            .servers
            .map_or_else(|| defaults::parse(defaults::NTP), texts);
        node.turn_servers = self
            .turn
            .servers
            .into_iter()
            .map(|entry| TurnServer {
                address: entry.address.0,
                transport: entry.transport.map(|Text(t)| t).unwrap_or_default(),
                username: entry.username,
                password: entry.password,
                realm: entry.realm,
            })
            .collect();
        // Every protocol unless the file says otherwise: the gateway in
        // front of the machine is the one thing asked.
        node.portmap = self
            .portmap
            .protocols
            .map_or_else(|| PortmapProtocol::ALL.to_vec(), texts);
        let connect = &mut node.connect;
        let c = self.connect;
        if let Some(strategies) = c.strategies {
            connect.strategies = texts(strategies);
        }
        if let Some(encrypt) = c.encrypt {
            connect.encrypt = encrypt;
        }
        for (ms, slot) in [
            (c.timeout_ms, &mut connect.timeout),
            (c.direct_ms, &mut connect.budgets.direct),
            (c.reverse_ms, &mut connect.budgets.reverse),
            (c.punch_ms, &mut connect.budgets.punch),
            (c.relay_ms, &mut connect.budgets.relay),
        ] {
            if let Some(ms) = ms {
                *slot = Duration::from_millis(ms);
            }
        }
        let mut rest = RestConfig::default();
        if let Some(listen) = self.rest.listen {
            rest.listen = listen;
        }
        if let Some(allow) = self.rest.allow_null_origin {
            rest.allow_null_origin = allow;
        }
        Settings { node, rest }
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
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
    use p2pd_node::config::ConnectConfig;

    use super::*;

    fn settings(text: &str) -> Settings {
        File::parse(text, "t").expect("valid").into_settings()
    }

    fn invalid(text: &str) -> (Option<usize>, Option<String>, String) {
        match File::parse(text, "test.toml") {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn port_mapping_is_on_unless_the_file_lists_no_protocol() {
        assert_eq!(settings("").node.portmap, PortmapProtocol::ALL);
        let off = settings("[portmap]\nprotocols = []\n");
        assert!(off.node.portmap.is_empty());
        let one = settings("[portmap]\nprotocols = [\"nat-pmp\"]\n");
        assert_eq!(one.node.portmap, [PortmapProtocol::NatPmp]);
        let (line, key, message) = invalid("[portmap]\nprotocols = [\"igd\"]\n");
        assert_eq!((line, key.as_deref()), (Some(2), Some("portmap.protocols")));
        assert!(message.contains("known: pcp, nat-pmp, upnp"), "{message}");
    }

    #[test]
    fn an_empty_data_dir_is_refused() {
        let (line, _, message) = invalid("[node]\ndata_dir = \"\"\n");
        assert_eq!(line, Some(2));
        assert!(message.contains("must not be empty"), "{message}");
    }

    #[test]
    fn empty_file_gives_the_built_in_defaults() {
        let config = settings("");
        assert_eq!(config, File::default().into_settings());
        assert_eq!(config.rest.listen, "127.0.0.1:12333".parse().expect("lit"));
        assert_eq!(config.node.brokers.len(), defaults::BROKERS.len());
        assert_eq!(config.node.stun_servers.len(), defaults::STUN.len());
        assert_eq!(config.node.ntp_servers.len(), defaults::NTP.len());
        assert!(config.node.turn_servers.is_empty());
        assert_eq!(config.node.connect, ConnectConfig::default());
    }

    #[test]
    fn a_present_key_replaces_its_default_and_others_stay() {
        let config =
            settings("[stun]\nservers = [\"198.18.0.2:3478\"]\n[connect]\ndirect_ms = 50\n");
        assert_eq!(
            config.node.stun_servers,
            vec!["198.18.0.2:3478".parse().expect("lit")]
        );
        assert_eq!(
            config.node.connect.budgets.direct,
            Duration::from_millis(50)
        );
        assert_eq!(
            config.node.connect.budgets.reverse,
            ConnectConfig::default().budgets.reverse
        );
        assert_eq!(config.node.brokers, defaults::parse(defaults::BROKERS));
    }

    #[test]
    fn encryption_is_on_unless_switched_off() {
        assert!(settings("").node.connect.encrypt);
        assert!(
            !settings("[connect]\nencrypt = false\n")
                .node
                .connect
                .encrypt
        );
    }

    #[test]
    fn empty_lists_mean_none() {
        let config =
            settings("[signaling]\nbrokers = []\n[stun]\nservers = []\n[ntp]\nservers = []\n");
        assert!(config.node.brokers.is_empty());
        assert!(config.node.stun_servers.is_empty());
        assert!(config.node.ntp_servers.is_empty());
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
encrypt = true

[rest]
listen = "127.0.0.1:12333"
allow_null_origin = true

[portmap]
protocols = ["pcp", "nat-pmp", "upnp"]
"#;
        let config = settings(text);
        assert!(config.rest.allow_null_origin);
        assert_eq!(config.node.portmap, PortmapProtocol::ALL);
        assert_eq!(config.node.brokers[1].server.host, "198.18.0.4");
        assert_eq!(config.node.turn_servers[0].transport, TurnTransport::Udp);
        assert_eq!(config.node.turn_servers[0].realm, "lab");
        assert_eq!(config.node.data_dir, Some(PathBuf::from("/var/lib/p2pd")));
        assert_eq!(config.node.connect.timeout, Duration::from_secs(15));
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
        let (_, key, _) = invalid(
            "[[turn.servers]]\naddress = \"h:1\"\ntransport = \"sctp\"\nusername = \"u\"\npassword = \"p\"\n",
        );
        assert_eq!(key.as_deref(), Some("turn.servers.transport"));
    }

    #[test]
    fn error_message_is_one_line() {
        let err = File::parse("[node]\nport = [1,\n", "f.toml").expect_err("broken toml");
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("config f.toml line"), "{text}");
    }

    #[test]
    fn turn_password_is_not_in_debug_output() {
        let file = File::parse(
            "[[turn.servers]]\naddress = \"h:3478\"\nusername = \"u\"\npassword = \"hunter2\"\n",
            "t",
        )
        .expect("valid");
        assert!(!format!("{file:?}").contains("hunter2"));
        assert!(!format!("{:?}", file.into_settings()).contains("hunter2"));
    }

    #[test]
    fn built_in_defaults_parse() {
        assert_eq!(defaults::parse::<BrokerUrl>(defaults::BROKERS).len(), 5);
        assert_eq!(defaults::parse::<HostPort>(defaults::STUN).len(), 5);
        assert_eq!(defaults::parse::<HostPort>(defaults::NTP).len(), 4);
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn parse_never_panics(text in "\\PC{0,200}") {
                let _ = File::parse(&text, "fuzz");
            }
        }
    }
}
