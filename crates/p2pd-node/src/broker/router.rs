//! Who is subscribed to what: exact topics by lookup, wildcard filters by
//! scan (there are few; signaling subscribes to exact topics).

use std::collections::{HashMap, HashSet};

use rumqttc::mqttbytes::{has_wildcards, matches};

/// A connected client, as the driver numbers them.
pub(crate) type ClientId = u64;

/// The broker's subscription table.
#[derive(Debug, Default)]
pub(crate) struct Router {
    exact: HashMap<String, HashSet<ClientId>>,
    wildcard: HashMap<String, HashSet<ClientId>>,
}

impl Router {
    /// Subscribes `client` to `filter` (a valid filter).
    pub(crate) fn subscribe(&mut self, client: ClientId, filter: String) {
        self.table(&filter)
            .entry(filter)
            .or_default()
            .insert(client);
    }

    /// Removes one subscription.
    pub(crate) fn unsubscribe(&mut self, client: ClientId, filter: &str) {
        let table = self.table(filter);
        if let Some(clients) = table.get_mut(filter) {
            clients.remove(&client);
            if clients.is_empty() {
                table.remove(filter);
            }
        }
    }

    /// Removes every subscription of `client` (its filters are given, so
    /// this does not scan the table).
    pub(crate) fn remove<'a>(&mut self, client: ClientId, filters: impl Iterator<Item = &'a str>) {
        for filter in filters {
            self.unsubscribe(client, filter);
        }
    }

    /// The clients a message on `topic` goes to, each once.
    pub(crate) fn route(&self, topic: &str) -> HashSet<ClientId> {
        let mut to: HashSet<ClientId> = self.exact.get(topic).cloned().unwrap_or_default();
        for (filter, clients) in &self.wildcard {
            if matches(topic, filter) {
                to.extend(clients);
            }
        }
        to
    }

    fn table(&mut self, filter: &str) -> &mut HashMap<String, HashSet<ClientId>> {
        if has_wildcards(filter) {
            &mut self.wildcard
        } else {
            &mut self.exact
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_subscribers_get_each_message_once() {
        let mut router = Router::default();
        router.subscribe(1, "p2pd/a".into());
        router.subscribe(1, "p2pd/#".into());
        router.subscribe(2, "p2pd/+".into());
        router.subscribe(3, "p2pd/b".into());
        assert_eq!(router.route("p2pd/a"), HashSet::from([1, 2]));
        assert_eq!(router.route("p2pd/b"), HashSet::from([1, 2, 3]));
        assert_eq!(router.route("other"), HashSet::new());
    }

    #[test]
    fn removed_clients_get_nothing_and_leave_no_entries() {
        let mut router = Router::default();
        router.subscribe(1, "p2pd/a".into());
        router.subscribe(1, "p2pd/#".into());
        router.subscribe(2, "p2pd/a".into());
        router.remove(1, ["p2pd/a", "p2pd/#"].into_iter());
        assert_eq!(router.route("p2pd/a"), HashSet::from([2]));
        router.unsubscribe(2, "p2pd/a");
        assert!(router.exact.is_empty() && router.wildcard.is_empty());
    }
}
