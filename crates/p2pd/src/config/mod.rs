//! Where the configuration comes from (`--config FILE`, else
//! `$P2PD_CONFIG`, else the built-in defaults) and what it becomes: the
//! typed configs of the node and the REST API.

mod defaults;
mod file;

use std::path::{Path, PathBuf};

pub(crate) use file::ConfigError;
use p2pd_node::config::NodeConfig;
use p2pd_rest::RestConfig;

/// The environment variable naming a config file when `--config` is absent.
pub(crate) const CONFIG_ENV: &str = "P2PD_CONFIG";

/// What the configuration file says, for each part of the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The node's configuration.
    pub(crate) node: NodeConfig,
    /// The REST API's configuration.
    pub(crate) rest: RestConfig,
}

/// Reads the configuration the command line or environment names.
pub(crate) fn load(flag: Option<&Path>) -> Result<Settings, ConfigError> {
    let from_env = std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let file = match flag.map(Path::to_owned).or(from_env) {
        Some(path) => file::File::read(&path)?,
        None => file::File::default(),
    };
    let settings = file.into_settings();
    tracing::debug!(?settings, "effective configuration");
    Ok(settings)
}
