//! `cargo xtask`: checks of the source tree that need more than cargo.
//!
//! `cargo xtask module-cycles` asks cargo-modules (which resolves names with
//! rust-analyzer) for the "uses" edges between the modules of every crate
//! target in the workspace, and fails when modules import each other in a
//! loop. See `docs/architecture.md`, "Rules the tree keeps".

mod graph;

use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// The cargo-modules release the check is written against: its DOT output
/// is what [`graph::parse_dot`] reads.
const CARGO_MODULES: &str = "0.27.0";

#[derive(Parser)]
#[command(about = "Checks of the p2pd source tree")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Fails when modules of one crate import each other in a loop (a
    /// module using its own descendants is not an edge: it is their
    /// facade). Needs cargo-modules 0.27.0 (`cargo install --locked
    /// cargo-modules@0.27.0`).
    ModuleCycles,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::ModuleCycles => module_cycles(),
    }
}

fn module_cycles() -> anyhow::Result<()> {
    check_cargo_modules()?;
    let mut found = 0;
    let targets = targets()?;
    for target in &targets {
        let dot = dependencies(target)?;
        let graph = graph::ModuleGraph::from_uses(graph::parse_dot(&dot));
        let cycles = graph.cycles();
        println!(
            "{}: {} import edges between {} modules, {} cycles",
            target.label(),
            graph.edges(),
            graph.modules(),
            cycles.len()
        );
        for cycle in &cycles {
            println!("  cycle: {}", cycle.join(" -> "));
        }
        found += cycles.len();
    }
    if found > 0 {
        bail!("{found} module import cycles");
    }
    println!("no module import cycle in {} targets", targets.len());
    Ok(())
}

fn check_cargo_modules() -> anyhow::Result<()> {
    let out = Command::new("cargo")
        .args(["modules", "--version"])
        .output()
        .context("cannot run cargo")?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !version.contains(CARGO_MODULES) {
        bail!(
            "cargo-modules {CARGO_MODULES} is needed: cargo install --locked cargo-modules@{CARGO_MODULES}"
        );
    }
    Ok(())
}

/// One crate target of a workspace package.
struct Target {
    package: String,
    /// `None`: the library; else the binary's name.
    bin: Option<String>,
}

impl Target {
    fn label(&self) -> String {
        match &self.bin {
            None => format!("{} (lib)", self.package),
            Some(bin) => format!("{} (bin {bin})", self.package),
        }
    }
}

/// Every library and binary target of the workspace's packages.
fn targets() -> anyhow::Result<Vec<Target>> {
    let out = Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata gave no JSON")?;
    let mut targets = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .collect();
            let target_name = target["name"].as_str().unwrap_or_default();
            if kinds.contains(&"lib") {
                targets.push(Target {
                    package: name.to_owned(),
                    bin: None,
                });
            } else if kinds.contains(&"bin") {
                targets.push(Target {
                    package: name.to_owned(),
                    bin: Some(target_name.to_owned()),
                });
            }
        }
    }
    Ok(targets)
}

/// cargo-modules' module graph of one target, as DOT, items left out.
fn dependencies(target: &Target) -> anyhow::Result<String> {
    let mut cmd = Command::new("cargo");
    cmd.args(["modules", "dependencies", "-p", &target.package]);
    match &target.bin {
        None => cmd.arg("--lib"),
        Some(bin) => cmd.args(["--bin", bin]),
    };
    cmd.args([
        "--no-externs",
        "--no-sysroot",
        "--no-fns",
        "--no-traits",
        "--no-types",
    ]);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run cargo modules for {}", target.label()))?;
    if !out.status.success() {
        bail!(
            "cargo modules failed for {}: {}",
            target.label(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
