//! Network namespaces: one per lab host, deleted when dropped.

use std::fs::File;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use crate::LabError;
use crate::exec::{self, Output, SHORT};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `p2l<pid>x<n>`, within the 15 bytes a Linux
/// interface name allows, so it also serves for temporary veth names.
pub fn unique_name() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("p2l{}x{n}", std::process::id() % 1_000_000)
}

/// A network namespace, deleted (with every interface in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with its loopback up.
    pub fn new() -> Result<Self, LabError> {
        let ns = Self {
            name: unique_name(),
        };
        exec::run("ip", &["netns", "add", &ns.name], SHORT)?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip args...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        exec::run("ip", &full, SHORT)
    }

    /// Runs a program inside the namespace, killed after `limit`; fails
    /// unless it exits 0.
    pub fn exec(&self, program: &str, args: &[&str], limit: Duration) -> Result<Output, LabError> {
        exec::run("ip", &self.exec_args(program, args), limit)
    }

    /// Like [`Netns::exec`], returning whatever status the program exits with.
    pub fn exec_unchecked(
        &self,
        program: &str,
        args: &[&str],
        limit: Duration,
    ) -> Result<Output, LabError> {
        exec::run_unchecked("ip", &self.exec_args(program, args), limit)
    }

    fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        full
    }

    /// Sets a sysctl inside the namespace (`net.ipv6.conf.all.forwarding=1`).
    pub fn sysctl(&self, setting: &str) -> Result<(), LabError> {
        self.exec("sysctl", &["-qw", setting], SHORT).map(drop)
    }

    /// Runs an async block on a thread that lives inside the namespace, on its
    /// own single-threaded tokio runtime. Sockets made there stay in the
    /// namespace wherever they are used later.
    pub fn block_on<F, Fut, R>(&self, make: F) -> Result<R, LabError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = R>,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let enter_err = |reason: String| LabError::Enter {
                        name: self.name.clone(),
                        reason,
                    };
                    let file = File::open(&path).map_err(|e| enter_err(e.to_string()))?;
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| enter_err(e.to_string()))?;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| enter_err(e.to_string()))?;
                    Ok(runtime.block_on(make()))
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = exec::run("ip", &["netns", "del", &self.name], SHORT) {
            eprintln!("lab: cannot delete namespace {}: {err}", self.name);
        }
    }
}

/// Joins two namespaces with a veth pair named `a_if` in `a` and `b_if` in
/// `b`. The links stay down, so callers can set link options (such as
/// `addrgenmode`) first; bring them up with [`Netns::ip`].
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), LabError> {
    let tmp_a = unique_name();
    let tmp_b = unique_name();
    exec::run(
        "ip",
        &[
            "link", "add", &tmp_a, "netns", &a.name, "type", "veth", "peer", "name", &tmp_b,
            "netns", &b.name,
        ],
        SHORT,
    )?;
    a.ip(&["link", "set", &tmp_a, "name", a_if])?;
    b.ip(&["link", "set", &tmp_b, "name", b_if])?;
    Ok(())
}
