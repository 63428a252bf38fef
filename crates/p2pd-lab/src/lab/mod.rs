//! A whole lab: the fake internet, its public hosts and services, and two
//! private sides behind routers of a chosen kind, optionally running
//! miniupnpd so LAN hosts can map ports (UPnP IGD, NAT-PMP, PCP;
//! [`LabSpec::portmap`]). See [`crate::topology`] for the drawing and
//! addresses.

mod daemons;
mod network;
mod portmap;
mod services;
mod spec;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use spec::{LabSpec, Service, SideSpec};

use crate::LabError;
use crate::netns::{self, Netns};
use crate::topology::Side;
use daemons::Daemon;

/// A running lab. Dropping it (or [`Lab::down`]) stops its processes and
/// deletes its namespaces.
#[derive(Debug)]
pub struct Lab {
    hosts: BTreeMap<String, Netns>,
    daemons: Vec<Daemon>,
    dir: PathBuf,
    up_time: Duration,
}

impl Lab {
    /// Builds the lab described by `spec`: the network, then the services,
    /// then miniupnpd on the routers with [`SideSpec::portmap`] (which
    /// starts [`Service::CoturnStun`] even when `spec` does not list it).
    pub fn up(spec: &LabSpec) -> Result<Lab, LabError> {
        let started = Instant::now();
        let portmap: Vec<Side> = Side::BOTH
            .into_iter()
            .filter(|side| spec.side(*side).portmap)
            .collect();
        for side in &portmap {
            let kind = spec.side(*side).nat;
            if !kind.supports_portmap() {
                return Err(LabError::Unsupported(format!(
                    "port mapping on {}: a {kind} router does not translate",
                    side.router_name()
                )));
            }
        }
        let mut services = spec.services.clone();
        if !portmap.is_empty() && !services.contains(&Service::CoturnStun) {
            services.insert(0, Service::CoturnStun);
        }
        let dir = std::env::temp_dir().join(format!("{}-lab", netns::unique_name()));
        fs::create_dir_all(&dir).map_err(|e| LabError::Io {
            what: format!("creating {}", dir.display()),
            source: e,
        })?;
        let mut lab = Lab {
            hosts: BTreeMap::new(),
            daemons: Vec::new(),
            dir,
            up_time: Duration::ZERO,
        };
        lab.build(spec)?;
        for service in services {
            lab.start(service)?;
        }
        for side in portmap {
            lab.start_portmap(side)?;
        }
        lab.up_time = started.elapsed();
        Ok(lab)
    }

    /// How long [`Lab::up`] took.
    pub fn up_time(&self) -> Duration {
        self.up_time
    }

    /// The namespace of a host (`a`, `b2`, `router-a`, `stun`, ...).
    ///
    /// # Panics
    /// When the lab has no such host: a mistake in the test itself.
    pub fn host(&self, name: &str) -> &Netns {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("the lab has no host `{name}`"))
    }

    /// Every host name with its namespace.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Netns)> {
        self.hosts.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A directory for the lab's configs and logs, deleted with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops every process and deletes every namespace. Safe to call twice.
    pub fn down(&mut self) {
        self.stop_all();
        // Dropping a namespace kills what is left in it and deletes it.
        self.hosts.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.down();
    }
}
