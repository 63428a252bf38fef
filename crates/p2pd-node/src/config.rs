//! A node's configuration as the library takes it: typed values, with
//! defaults that contact nobody. The file format and the public servers a
//! daemon starts with belong to the program that embeds the node.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use p2pd_net::portmap::{Protocol as PortmapProtocol, UnknownProtocol};
pub use p2pd_proto::connect::{Budgets, Strategy, UnknownStrategy};

use crate::defaults;
use crate::servers::{BrokerUrl, HostPort, TurnServer};

/// What a node is for; it decides what the node joins and keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Serves peers for as long as it runs: listens on every broker, so
    /// others can ask it to connect back, and keeps its identity in
    /// `data_dir` when one is set.
    #[default]
    Server,
    /// Lives to open connections (`p2pd connect`): always a throwaway
    /// identity, and no broker is contacted unless one of its strategies
    /// signals.
    Client,
}

/// Everything a node needs to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// What the node is for.
    pub role: Role,
    /// The node server's port; 0 picks a free one.
    pub port: u16,
    /// NIC names to use; empty means every interface with a route.
    pub interfaces: Vec<String>,
    /// Keeps the identity key; `None` means a throwaway identity.
    pub data_dir: Option<PathBuf>,
    /// MQTT brokers, all used at once. A peer address names them by index,
    /// so peers that signal each other share one list.
    pub brokers: Vec<BrokerUrl>,
    /// STUN servers, asked over UDP and TCP.
    pub stun_servers: Vec<HostPort>,
    /// NTP servers, for punch timing; the port defaults to 123.
    pub ntp_servers: Vec<HostPort>,
    /// TURN relays, the last resort.
    pub turn_servers: Vec<TurnServer>,
    /// Strategies and their budgets.
    pub connect: ConnectConfig,
    /// Port-mapping protocols to ask the gateway with, all at once; empty
    /// (the library's default) asks nobody.
    pub portmap: Vec<PortmapProtocol>,
}

impl NodeConfig {
    /// Whether the node joins its brokers: a server always does (peers
    /// signal it), a client only when a strategy of its needs signaling.
    pub(crate) fn joins_brokers(&self) -> bool {
        match self.role {
            Role::Server => true,
            Role::Client => self.connect.strategies.iter().any(|s| s.signals()),
        }
    }

    /// Whether the node measures its clock: a server always does (peers
    /// may punch to it), a client only when it may punch.
    pub(crate) fn measures_clock(&self) -> bool {
        match self.role {
            Role::Server => true,
            Role::Client => self.connect.strategies.contains(&Strategy::Punch),
        }
    }

    /// The protocols the node maps its port with: a server's, since only
    /// a server is dialled.
    pub(crate) fn maps_ports(&self) -> &[PortmapProtocol] {
        match self.role {
            Role::Server => &self.portmap,
            Role::Client => &[],
        }
    }

    /// Where the identity key is kept, if anywhere.
    pub(crate) fn identity_dir(&self) -> Option<&Path> {
        match self.role {
            Role::Server => self.data_dir.as_deref(),
            Role::Client => None,
        }
    }
}

/// Which strategies a connect uses, and how long each may take.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectConfig {
    /// Strategies to try, in this order.
    pub strategies: Vec<Strategy>,
    /// The whole connect, all strategies.
    pub timeout: Duration,
    /// Each strategy gives up within its own budget.
    pub budgets: Budgets,
    /// Whether we ask for the stream to be encrypted after the handshake; a
    /// connection is encrypted when either side asks.
    pub encrypt: bool,
}

impl Default for ConnectConfig {
    /// Every strategy, with the budgets of [`defaults`].
    fn default() -> Self {
        Self {
            strategies: Strategy::ALL.to_vec(),
            timeout: defaults::CONNECT_TIMEOUT,
            budgets: Budgets {
                direct: defaults::DIRECT_BUDGET,
                reverse: defaults::REVERSE_BUDGET,
                punch: defaults::PUNCH_BUDGET,
                relay: defaults::RELAY_BUDGET,
            },
            encrypt: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_joins_brokers_only_for_strategies_that_signal() {
        let mut config = NodeConfig {
            role: Role::Client,
            ..NodeConfig::default()
        };
        config.connect.strategies = vec![Strategy::Direct];
        assert!(!config.joins_brokers());
        config.connect.strategies = vec![Strategy::Direct, Strategy::Reverse];
        assert!(config.joins_brokers());
        config.role = Role::Server;
        config.connect.strategies = vec![Strategy::Direct];
        assert!(config.joins_brokers(), "a server is signalled by others");
    }

    #[test]
    fn only_a_server_maps_ports() {
        let mut config = NodeConfig {
            portmap: PortmapProtocol::ALL.to_vec(),
            ..NodeConfig::default()
        };
        assert_eq!(config.maps_ports(), PortmapProtocol::ALL);
        config.role = Role::Client;
        assert!(config.maps_ports().is_empty(), "a client only dials out");
        assert!(NodeConfig::default().maps_ports().is_empty(), "asks nobody");
    }

    #[test]
    fn a_client_measures_its_clock_only_when_it_may_punch() {
        let mut config = NodeConfig {
            role: Role::Client,
            ..NodeConfig::default()
        };
        config.connect.strategies = vec![Strategy::Direct, Strategy::Reverse];
        assert!(!config.measures_clock());
        config.connect.strategies.push(Strategy::Punch);
        assert!(config.measures_clock());
        config.role = Role::Server;
        config.connect.strategies = vec![Strategy::Direct];
        assert!(config.measures_clock(), "others may punch to a server");
    }

    #[test]
    fn a_client_never_keeps_an_identity() {
        let mut config = NodeConfig {
            data_dir: Some(PathBuf::from("/var/lib/p2pd")),
            ..NodeConfig::default()
        };
        assert_eq!(config.identity_dir(), Some(Path::new("/var/lib/p2pd")));
        config.role = Role::Client;
        assert_eq!(config.identity_dir(), None);
    }
}
