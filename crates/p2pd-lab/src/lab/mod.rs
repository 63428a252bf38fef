//! A whole lab: the fake internet, its public hosts and services, and two
//! private sides behind routers of a chosen kind. See [`crate::topology`] for
//! the drawing and addresses.

mod daemons;
mod network;
mod services;
mod spec;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use spec::{LabSpec, Service, SideSpec};

use crate::LabError;
use crate::netns::{self, Netns};
use daemons::Daemon;

/// deletes its namespaces.
#[derive(Debug)]
pub struct Lab {
    hosts: BTreeMap<String, Netns>,
    daemons: Vec<Daemon>,
    dir: PathBuf,
    up_time: Duration,
}

impl Lab {
    /// Builds the lab described by `spec`.
    pub fn up(spec: &LabSpec) -> Result<Lab, LabError> {
        let started = Instant::now();
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
        for service in &spec.services {
            lab.start(*service)?;
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
