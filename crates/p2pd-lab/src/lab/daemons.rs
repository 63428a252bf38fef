//! The processes a lab runs inside its hosts: started, waited for until they
//! listen, stopped as a crash would, and reported when they die.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Lab;
use crate::LabError;
use crate::exec::SHORT;

#[derive(Debug)]
pub(super) struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Lab {
    /// Starts `program args...` in `host`; it runs until [`Lab::stop`] or the
    /// lab goes down. Its output goes to `<dir>/<name>.log`. Returns its pid.
    pub fn spawn(
        &mut self,
        name: &str,
        host: &str,
        program: &str,
        args: &[&str],
    ) -> Result<u32, LabError> {
        let log = self.dir.join(format!("{name}.log"));
        let io_err = |e| LabError::Io {
            what: format!("creating {}", log.display()),
            source: e,
        };
        let out = fs::File::create(&log).map_err(io_err)?;
        let err = out.try_clone().map_err(io_err)?;
        let ns_args = self.host(host).exec_args(program, args);
        let child = Command::new("ip")
            .args(&ns_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: format!("{program} {}", args.join(" ")),
                source,
            })?;
        let pid = child.id();
        self.daemons.push(Daemon {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(pid)
    }

    /// Stops the process started as `name`, as a crash would (SIGKILL).
    pub fn stop(&mut self, name: &str) -> bool {
        let Some(pos) = self.daemons.iter().position(|d| d.name == name) else {
            return false;
        };
        let mut daemon = self.daemons.remove(pos);
        let _ = daemon.child.kill();
        let _ = daemon.child.wait();
        true
    }

    /// Waits until something in `host` listens on `addr` (`tcp` or `udp`).
    pub fn wait_listening(
        &mut self,
        host: &str,
        tcp: bool,
        addr: SocketAddr,
        limit: Duration,
    ) -> Result<(), LabError> {
        let flag = if tcp { "-Hlnt" } else { "-Hlnu" };
        let filter = format!("src {addr}");
        let deadline = Instant::now() + limit;
        loop {
            let out = self.host(host).exec("ss", &[flag, &filter], SHORT)?;
            if !out.stdout.trim().is_empty() {
                return Ok(());
            }
            if let Some(dead) = self.dead_daemon() {
                return Err(dead);
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotListening {
                    host: host.to_owned(),
                    addr,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every process, politely first (SIGTERM, then SIGKILL after 2 s).
    pub(super) fn stop_all(&mut self) {
        for mut daemon in self.daemons.drain(..) {
            let pid = Pid::from_raw(i32::try_from(daemon.child.id()).unwrap_or(i32::MAX));
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(daemon.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
    }

    fn dead_daemon(&mut self) -> Option<LabError> {
        self.daemons.iter_mut().find_map(|d| {
            let Ok(Some(status)) = d.child.try_wait() else {
                return None;
            };
            Some(LabError::ServiceDied {
                name: d.name.clone(),
                status: status.to_string(),
                log: fs::read_to_string(&d.log).unwrap_or_default(),
            })
        })
    }
}
