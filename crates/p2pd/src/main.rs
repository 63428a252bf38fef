//! `p2pd`: the command-line face of p2pd. Parses arguments, loads the config,
//! runs one subcommand; all networking lives in the library crates.

mod cmd;
mod config;
mod output;
mod signal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Direct connections between any two computers, through NATs and firewalls.
#[derive(Debug, Parser)]
#[command(name = "p2pd", version, about, propagate_version = true)]
struct Cli {
    /// TOML configuration file (else $P2PD_CONFIG, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List network interfaces: addresses, gateways, routes.
    Interfaces(cmd::interfaces::Args),
    /// Discover each interface's external address, NAT type and port delta.
    Nat(cmd::nat::Args),
    /// Run an RFC 5780 STUN server (UDP and TCP).
    StunServer(cmd::stun_server::Args),
    /// Run an embedded MQTT broker (for LANs, offline use and tests).
    Broker(cmd::broker::Args),
    /// Run a node; prints its address, then serves until SIGINT/SIGTERM.
    Node(cmd::node::Args),
    /// Connect to a peer and bridge the connection to stdin/stdout.
    Connect(cmd::connect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // Every connection is a descriptor: use what the hard limit allows.
    if let Err(err) = p2pd_net::fd_limit::raise() {
        tracing::debug!(%err, "cannot raise the open-file limit");
    }
    let settings = match config::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            output::error(&err);
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Interfaces(args) => cmd::interfaces::run(&args),
        Command::Nat(args) => {
            runtime().and_then(|rt| rt.block_on(cmd::nat::run(&args, &settings.node)))
        }
        Command::StunServer(args) => {
            runtime().and_then(|rt| rt.block_on(cmd::stun_server::run(&args)))
        }
        Command::Broker(args) => runtime().and_then(|rt| rt.block_on(cmd::broker::run(&args))),
        Command::Node(args) => {
            runtime().and_then(|rt| rt.block_on(cmd::node::run(&args, settings.node)))
        }
        Command::Connect(args) => {
            match runtime().and_then(|rt| rt.block_on(cmd::connect::run(&args, settings.node))) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(err) => Err(err),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error_chain(&err);
            ExitCode::from(1)
        }
    }
}

/// The tokio runtime networking commands run on.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs go to stderr, filtered by `RUST_LOG` (warnings by default), so stdout
/// stays for machine-readable output.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
