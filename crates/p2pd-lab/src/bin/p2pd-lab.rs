//! `p2pd-lab`: bring a NAT lab up by hand, run commands in it, take it down.

use std::io::{IsTerminal, Write};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use p2pd_lab::{Lab, LabSpec, NatKind, Service, Side, netns, skip_reason};

/// Network-namespace labs with real NAT routers, for trying p2pd by hand.
#[derive(Debug, Parser)]
#[command(name = "p2pd-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring a lab up and open a shell in which `lab HOST CMD...` runs CMD
    /// inside a lab host; the lab goes down when the shell exits.
    Shell(LabArgs),
    /// Bring a lab up, run one command inside HOST, take the lab down.
    Run {
        #[command(flatten)]
        lab: LabArgs,
        /// The lab host to run in (a, b, a2, router-a, cgnat-a, stun, broker, ntp, turn, peer, inet).
        host: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Delete labs left behind by processes that died.
    Clean,
    /// List the router kinds.
    Kinds,
}

#[derive(Debug, Args)]
struct LabArgs {
    /// Router kind of side A.
    #[arg(
        long = "a",
        value_name = "KIND",
        default_value = "port-restricted-cone"
    )]
    nat_a: NatKind,
    /// Router kind of side B.
    #[arg(
        long = "b",
        value_name = "KIND",
        default_value = "port-restricted-cone"
    )]
    nat_b: NatKind,
    /// Put a CGNAT of this kind in front of side A's router.
    #[arg(long, value_name = "KIND")]
    cgnat_a: Option<NatKind>,
    /// Put a CGNAT of this kind in front of side B's router.
    #[arg(long, value_name = "KIND")]
    cgnat_b: Option<NatKind>,
    /// Run miniupnpd (UPnP IGD, NAT-PMP, PCP) on side A's router (needs a
    /// translating kind; starts stun too).
    #[arg(long)]
    portmap_a: bool,
    /// Run miniupnpd (UPnP IGD, NAT-PMP, PCP) on side B's router.
    #[arg(long)]
    portmap_b: bool,
    /// Hosts on side A's LAN.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=50))]
    hosts_a: u8,
    /// Hosts on side B's LAN.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=50))]
    hosts_b: u8,
    /// Services to start: stun (coturn, RFC 5780), turn, brokers (mosquitto), ntp (chrony).
    #[arg(long, value_delimiter = ',', value_parser = parse_service)]
    services: Vec<Service>,
    /// One-way latency across the internet in milliseconds (needs tc netem).
    #[arg(long, value_name = "MS")]
    latency_ms: Option<u64>,
}

impl LabArgs {
    fn spec(&self) -> LabSpec {
        let mut spec = LabSpec::default()
            .nat(Side::A, self.nat_a)
            .nat(Side::B, self.nat_b)
            .hosts(Side::A, usize::from(self.hosts_a))
            .hosts(Side::B, usize::from(self.hosts_b));
        if let Some(kind) = self.cgnat_a {
            spec = spec.cgnat(Side::A, kind);
        }
        if let Some(kind) = self.cgnat_b {
            spec = spec.cgnat(Side::B, kind);
        }
        if self.portmap_a {
            spec = spec.portmap(Side::A);
        }
        if self.portmap_b {
            spec = spec.portmap(Side::B);
        }
        for service in &self.services {
            spec = spec.service(*service);
        }
        if let Some(ms) = self.latency_ms {
            spec = spec.latency(Duration::from_millis(ms));
        }
        spec
    }
}

fn parse_service(s: &str) -> Result<Service, String> {
    match s {
        "stun" => Ok(Service::CoturnStun),
        "turn" => Ok(Service::Turn),
        "brokers" => Ok(Service::Brokers),
        "ntp" => Ok(Service::Ntp),
        other => Err(format!(
            "unknown service `{other}` (stun, turn, brokers, ntp)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Kinds => {
            for kind in NatKind::ALL {
                say(&kind.to_string());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Clean => needs_root().and_then(|()| {
            let cleaned = netns::clean_stale().map_err(|e| e.to_string())?;
            say(&format!("deleted {} stale namespaces", cleaned.len()));
            Ok(ExitCode::SUCCESS)
        }),
        Cmd::Shell(args) => needs_root().and_then(|()| shell(&args)),
        Cmd::Run { lab, host, command } => needs_root().and_then(|()| run(&lab, &host, &command)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err}");
            ExitCode::from(1)
        }
    }
}

fn needs_root() -> Result<(), String> {
    skip_reason().map_or(Ok(()), Err)
}

fn up(args: &LabArgs) -> Result<Lab, String> {
    let lab = Lab::up(&args.spec()).map_err(|e| e.to_string())?;
    let _ = writeln!(
        std::io::stderr(),
        "lab up in {} ms: A {}{}{}, B {}{}{}",
        lab.up_time().as_millis(),
        args.nat_a,
        portmap_note(args.portmap_a, Side::A),
        args.cgnat_a
            .map(|k| format!(" behind CGNAT {k}"))
            .unwrap_or_default(),
        args.nat_b,
        portmap_note(args.portmap_b, Side::B),
        args.cgnat_b
            .map(|k| format!(" behind CGNAT {k}"))
            .unwrap_or_default(),
    );
    Ok(lab)
}

/// ` with miniupnpd on 192.168.1.1` when the side's router maps ports.
fn portmap_note(on: bool, side: Side) -> String {
    if on {
        format!(" with miniupnpd on {}", side.lan_v4(1))
    } else {
        String::new()
    }
}

fn run(args: &LabArgs, host: &str, command: &[String]) -> Result<ExitCode, String> {
    let lab = up(args)?;
    if !lab.hosts().any(|(name, _)| name == host) {
        return Err(format!("the lab has no host `{host}`"));
    }
    let mut full = vec!["netns", "exec", lab.host(host).name()];
    full.extend(command.iter().map(String::as_str));
    let status = Command::new("ip")
        .args(&full)
        .status()
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::from(
        u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    ))
}

fn shell(args: &LabArgs) -> Result<ExitCode, String> {
    let lab = up(args)?;
    let mut rc = String::from(
        "PS1='lab$ '\n\
         lab() { local v=\"LAB_NS_${1//-/_}\"; shift; ip netns exec \"${!v:?unknown lab host}\" \"$@\"; }\n",
    );
    let mut hosts = Vec::new();
    for (name, ns) in lab.hosts() {
        rc.push_str(&format!(
            "export LAB_NS_{}={}\n",
            name.replace('-', "_"),
            ns.name()
        ));
        hosts.push(name.to_owned());
    }
    let rc_path = lab.dir().join("shellrc");
    std::fs::write(&rc_path, rc).map_err(|e| e.to_string())?;
    say(&format!("hosts: {}", hosts.join(" ")));
    say(
        "run `lab HOST CMD...` (e.g. `lab a stun 198.18.0.2`); exit the shell to take the lab down",
    );
    let mut bash = Command::new("bash");
    bash.arg("--rcfile").arg(&rc_path);
    if std::io::stdin().is_terminal() {
        bash.arg("-i");
    }
    let status = bash.status().map_err(|e| e.to_string())?;
    drop(lab);
    Ok(ExitCode::from(
        u8::try_from(status.code().unwrap_or(0)).unwrap_or(1),
    ))
}

fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}
