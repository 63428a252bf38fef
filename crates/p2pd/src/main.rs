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
    /// Discover each interface's external address, NAT type and port delta,
    /// and which port-mapping protocols its gateway answers.
    Nat(cmd::nat::Args),
    /// Run an RFC 5780 STUN server (UDP and TCP).
    StunServer(cmd::stun_server::Args),
    /// Run a small SNTP server on the host clock (for labs and tests).
    NtpServer(cmd::ntp_server::Args),
    /// Run an embedded MQTT broker (for LANs, offline use and tests).
    Broker(cmd::broker::Args),
    /// Run a node; prints its address, then serves until SIGINT/SIGTERM.
    Node(cmd::node::Args),
    /// Connect to a peer and bridge the connection to stdin/stdout.
    Connect(cmd::connect::Args),
    /// Run a node with the REST API (127.0.0.1:12333) until SIGINT/SIGTERM.
    Rest(cmd::rest::Args),
    /// The manual's REST tutorial in one go, offline on loopback (ignores
    /// --config); exits 0 when every step answers as the manual says.
    Demo(cmd::demo::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
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
        Command::NtpServer(args) => {
            runtime().and_then(|rt| rt.block_on(cmd::ntp_server::run(&args)))
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
        Command::Rest(args) => {
            runtime().and_then(|rt| rt.block_on(cmd::rest::run(&args, settings)))
        }
        Command::Demo(args) => match runtime().and_then(|rt| rt.block_on(cmd::demo::run(&args))) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::error_chain(&err);
            if err.is::<cmd::Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Help and version go out whole; a usage error is one line (clap's first,
/// with where to look for more) and exit 2.
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    // clap's message is its first paragraph; usage and hints follow.
    let text = err.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    eprintln!("{} (see --help)", message.join(" "));
    ExitCode::from(2)
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
