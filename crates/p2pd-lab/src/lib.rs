//! Test support for p2pd: Linux network namespaces joined by veth links, in
//! which integration tests run real sockets behind real NAT routers
//! (nftables; [`NatKind`]), some of them serving port mappings with
//! miniupnpd ([`LabSpec::portmap`]).
//!
//! Everything made here is torn down by `Drop`, so a failing or panicking
//! test leaves nothing behind. Names carry the process id and a counter, so
//! tests running in parallel never collide. Only root can build namespaces:
//! tests call [`skip_reason`] first and print why they skip.
#![warn(missing_docs)]

pub mod exec;
pub mod lab;
pub mod nat;
pub mod netns;
pub mod topology;

pub use exec::{Output, run};
pub use lab::{Lab, LabSpec, Service, SideSpec};
pub use nat::NatKind;
pub use netns::Netns;
pub use topology::Side;

/// Why lab tests cannot run on this machine, or `None` when they can.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("lab tests need root (network namespaces)".into());
    }
    if run("ip", &["netns", "list"], exec::SHORT).is_err() {
        return Some("lab tests need iproute2's `ip` with netns support".into());
    }
    None
}

/// Prints `SKIPPED <test>: <reason>` straight to stderr, past the test
/// harness's output capture, so a skip is seen even when the test passes.
pub fn report_skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Returns early from a test, loudly, when the lab cannot run here.
#[macro_export]
macro_rules! require_lab {
    () => {
        if let Some(reason) = $crate::skip_reason() {
            $crate::report_skip(module_path!(), &reason);
            return;
        }
    };
}

/// Errors from building or using a lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A command could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A command ran past its time limit and was killed.
    #[error("`{command}` took longer than {limit:?} and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit it ran past.
        limit: std::time::Duration,
    },
    /// A command exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A file of the lab could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A service did not start listening in time.
    #[error("nothing listens on {addr} in host {host}")]
    NotListening {
        /// The lab host.
        host: String,
        /// The address expected.
        addr: std::net::SocketAddr,
    },
    /// A service exited while the lab waited for it.
    #[error("service {name} exited ({status}); its log:\n{log}")]
    ServiceDied {
        /// The service's name.
        name: String,
        /// How it ended.
        status: String,
        /// What it printed.
        log: String,
    },
    /// The spec asks for a lab this crate cannot build (such as port
    /// mapping on a router that does not translate).
    #[error("unsupported lab: {0}")]
    Unsupported(String),
    /// The kernel has no `netem` queueing discipline, so latency cannot be
    /// emulated.
    #[error("tc netem is not available: {0}")]
    NetemUnavailable(String),
    /// Entering a namespace failed.
    #[error("cannot enter namespace {name}: {reason}")]
    Enter {
        /// The namespace.
        name: String,
        /// Why.
        reason: String,
    },
}
