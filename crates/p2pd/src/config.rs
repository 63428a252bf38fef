//! Where the configuration comes from: `--config FILE`, else `$P2PD_CONFIG`,
//! else the built-in defaults.

use std::path::{Path, PathBuf};

use p2pd_node::config::{Config, ConfigError};

/// The environment variable naming a config file when `--config` is absent.
pub(crate) const CONFIG_ENV: &str = "P2PD_CONFIG";

pub(crate) fn load(flag: Option<&Path>) -> Result<Config, ConfigError> {
    let from_env = std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let config = match flag.map(Path::to_owned).or(from_env) {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    tracing::debug!(?config, "effective configuration");
    Ok(config)
}
