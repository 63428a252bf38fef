//! The named connections the API has opened: REST names connections, the
//! node does not.
//!
//! A name is reserved while its connection is being opened, so two
//! concurrent `open`s with one name cannot both connect. An entry stays
//! after its peer ends the connection, so what arrived before the end can
//! still be read; a new `open` may then take the name over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use p2pd_node::Connection;

use crate::error::ApiError;

/// How many connections may be open (or opening) at once.
pub const MAX_CONNECTIONS: usize = 256;

/// One connection and what REST keeps beside it.
#[derive(Debug, Clone)]
pub struct Named {
    /// Its name.
    pub name: String,
    /// The connection.
    pub conn: Connection,
    /// Set while a `/p2p/pipe` relays it.
    relayed: Arc<AtomicBool>,
}

impl Named {
    /// Claims the relay; `None` when another pipe has it. The claim ends
    /// when the guard drops.
    pub fn claim_relay(&self) -> Option<RelayClaim> {
        (!self.relayed.swap(true, Ordering::AcqRel)).then(|| RelayClaim(self.relayed.clone()))
    }
}

/// Held while a pipe relays a connection.
#[derive(Debug)]
pub struct RelayClaim(Arc<AtomicBool>);

impl Drop for RelayClaim {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

enum Slot {
    Opening,
    Open(Named),
}

impl Slot {
    fn open(&self) -> Option<&Named> {
        match self {
            Slot::Open(named) => Some(named),
            Slot::Opening => None,
        }
    }
}

/// The table, shared by every request.
#[derive(Default)]
pub struct Conns {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A name held while its connection is opened; dropping it without
/// [`Reservation::fill`] frees the name, or gives it back to the ended
/// connection it was taken from (with what that one still has to read).
pub struct Reservation<'a> {
    table: &'a Conns,
    name: Option<String>,
    previous: Option<Named>,
}

impl Reservation<'_> {
    /// Stores the opened connection under the reserved name.
    pub fn fill(mut self, conn: Connection) -> Named {
        let name = self.name.take().unwrap_or_default();
        let named = Named {
            name: name.clone(),
            conn,
            relayed: Arc::new(AtomicBool::new(false)),
        };
        self.table.lock().insert(name, Slot::Open(named.clone()));
        named
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let mut slots = self.table.lock();
            match self.previous.take() {
                Some(previous) => slots.insert(name, Slot::Open(previous)),
                None => slots.remove(&name),
            };
        }
    }
}

impl Conns {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `name` for a new connection. A name whose connection has
    /// ended is taken over; the old entry is dropped.
    pub fn reserve(&self, name: &str) -> Result<Reservation<'_>, ApiError> {
        let mut slots = self.lock();
        match slots.get(name) {
            Some(Slot::Opening) => return Err(ApiError::NameTaken),
            Some(Slot::Open(named)) if !named.conn.pipe.is_closed() => {
                return Err(ApiError::NameTaken);
            }
            _ => {}
        }
        if slots.len() >= MAX_CONNECTIONS && !slots.contains_key(name) {
            // Ended connections make room before a refusal.
            slots.retain(|_, slot| !matches!(slot, Slot::Open(n) if n.conn.pipe.is_closed()));
            if slots.len() >= MAX_CONNECTIONS {
                return Err(ApiError::TooManyConnections(MAX_CONNECTIONS));
            }
        }
        let previous = match slots.insert(name.to_owned(), Slot::Opening) {
            Some(Slot::Open(ended)) => Some(ended),
            _ => None,
        };
        Ok(Reservation {
            table: self,
            name: Some(name.to_owned()),
            previous,
        })
    }

    /// The open connection called `name`.
    pub fn get(&self, name: &str) -> Result<Named, ApiError> {
        self.lock()
            .get(name)
            .and_then(Slot::open)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(name.to_owned()))
    }

    /// Removes `name` from the table and returns it.
    pub fn remove(&self, name: &str) -> Result<Named, ApiError> {
        let mut slots = self.lock();
        match slots.remove(name) {
            Some(Slot::Open(named)) => Ok(named),
            // A name being opened stays reserved.
            Some(Slot::Opening) => {
                slots.insert(name.to_owned(), Slot::Opening);
                Err(ApiError::NotFound(name.to_owned()))
            }
            None => Err(ApiError::NotFound(name.to_owned())),
        }
    }

    /// Every open connection, by name.
    pub fn list(&self) -> Vec<Named> {
        let mut all: Vec<Named> = self
            .lock()
            .values()
            .filter_map(|slot| slot.open().cloned())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// How many connections are open.
    pub fn count(&self) -> usize {
        self.lock()
            .values()
            .filter(|slot| slot.open().is_some())
            .count()
    }

    /// Takes every connection out (at shutdown).
    pub fn drain(&self) -> Vec<Named> {
        self.lock()
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Open(named) => Some(named),
                Slot::Opening => None,
            })
            .collect()
    }
}
