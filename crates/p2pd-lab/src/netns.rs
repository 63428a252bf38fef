//! Network namespaces: one per lab host, emptied and deleted when dropped.

use std::fs::File;
use std::future::Future;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::LabError;
use crate::exec::{self, Output, SHORT};

/// Prefix of every namespace and temporary interface the lab makes.
pub const PREFIX: &str = "p2l";

/// Ends the pid in a name: no base-36 digit, so a pid whose digits hold an
/// `x` (as `x` once separated them) is read whole.
const SEPARATOR: char = '_';

/// The longest Linux interface name.
const IFNAMSIZ: usize = 15;

/// A name for a namespace or interface: `p2l<pid>_<random>` in base 36,
/// filling the 15 bytes of a Linux interface name. The pid keeps processes
/// apart (and lets [`clean_stale`] find labs whose process died); within
/// one process, the random part (at least six base-36 digits, two billion
/// values) makes a clash between the few dozen names alive at once
/// negligible, without a counter shared between tests.
pub fn unique_name() -> String {
    let head = format!(
        "{PREFIX}{}{SEPARATOR}",
        base36(u64::from(std::process::id()))
    );
    let digits = u32::try_from(IFNAMSIZ.saturating_sub(head.len())).unwrap_or(0);
    let space = 36u64.saturating_pow(digits);
    format!("{head}{}", base36(rand::random::<u64>() % space.max(1)))
}

/// The process id encoded in a lab name, to find labs whose process died.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once(SEPARATOR)?;
    u32::from_str_radix(pid, 36).ok()
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// A network namespace; on drop, every process left in it is killed and the
/// namespace (with its interfaces) deleted.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with its loopback up.
    pub fn new() -> Result<Self, LabError> {
        Self::create(unique_name())
    }

    /// Creates a fresh namespace whose name ends with `-label`, so
    /// `ip netns list` tells which lab host it is.
    pub fn labeled(label: &str) -> Result<Self, LabError> {
        Self::create(format!("{}-{label}", unique_name()))
    }

    fn create(name: String) -> Result<Self, LabError> {
        exec::run("ip", &["netns", "add", &name], SHORT)?;
        // From here on, drop deletes it even if the next step fails.
        let ns = Self { name };
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

    /// The index of interface `name` in the namespace: the scope id of its
    /// link-local addresses.
    pub fn if_index(&self, name: &str) -> Result<u32, LabError> {
        let out = self.ip(&["-o", "link", "show", "dev", name])?;
        out.stdout
            .split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| LabError::Io {
                what: format!("reading the index of {name} in {}", self.name),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected `ip link` output: {}", out.stdout.trim()),
                ),
            })
    }

    /// Runs many `ip` commands (one per line, without the leading `ip`)
    /// inside the namespace, in one process.
    pub fn ip_batch(&self, lines: &[String]) -> Result<Output, LabError> {
        exec::run_with_input(
            "ip",
            &["-n", &self.name, "-batch", "-"],
            &lines.join("\n"),
            SHORT,
        )
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

    /// Like [`Netns::exec`], with `input` on the program's stdin.
    pub fn exec_with_input(
        &self,
        program: &str,
        args: &[&str],
        input: &str,
        limit: Duration,
    ) -> Result<Output, LabError> {
        exec::run_with_input("ip", &self.exec_args(program, args), input, limit)
    }

    /// The argument list of `ip netns exec <ns> program args...`.
    pub fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        full
    }

    /// Sets sysctls inside the namespace (`net.ipv4.ip_forward=1`, ...).
    pub fn sysctl(&self, settings: &[&str]) -> Result<(), LabError> {
        let mut args = vec!["-qw"];
        args.extend_from_slice(settings);
        self.exec("sysctl", &args, SHORT).map(drop)
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
        delete(&self.name);
    }
}

/// Kills every process in namespace `name`, then deletes it.
pub(crate) fn delete(name: &str) {
    if let Ok(out) = exec::run("ip", &["netns", "pids", name], SHORT) {
        for pid in out.stdout.split_whitespace().filter_map(|p| p.parse().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if let Err(err) = exec::run("ip", &["netns", "del", name], SHORT) {
        eprintln!("lab: cannot delete namespace {name}: {err}");
    }
}

/// Deletes the namespaces of labs whose process has died (a test killed
/// before its drop guards ran). Returns their names.
pub fn clean_stale() -> Result<Vec<String>, LabError> {
    let out = exec::run("ip", &["netns", "list"], SHORT)?;
    let stale: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            owner_pid(name)
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_owned)
        .collect();
    for name in &stale {
        delete(name);
    }
    Ok(stale)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_an_interface_name_and_carry_the_pid() {
        let name = unique_name();
        assert!(name.len() <= 15, "{name}");
        assert_eq!(owner_pid(&name), Some(std::process::id()));
        assert_eq!(owner_pid("p2lzzzzzz_0"), Some(2_176_782_335));
        // A pid whose digits hold an `x` is read whole.
        assert_eq!(owner_pid("p2l1x_x9"), Some(36 + 33));
        assert_eq!(owner_pid("other"), None);
        assert_ne!(unique_name(), unique_name());
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn if_index_names_the_interface_the_kernel_numbered() {
        crate::require_lab!();
        let (a, b) = (Netns::new().expect("a"), Netns::new().expect("b"));
        veth(&a, "eth0", &b, "eth0").expect("veth");
        assert_eq!(a.if_index("lo").expect("lo"), 1);
        let eth0 = a.if_index("eth0").expect("eth0");
        assert!(eth0 > 1, "eth0 is {eth0}");
        let listed = a.ip(&["-o", "link"]).expect("ip link").stdout;
        assert!(listed.contains(&format!("{eth0}: eth0")), "{listed}");
        assert!(a.if_index("nonesuch").is_err());
    }
}
