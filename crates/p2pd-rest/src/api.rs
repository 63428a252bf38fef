//! What each endpoint does, over the node handle and the connection table;
//! the HTTP details (parsing, CORS, the pipe relay) are the server's.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2pd_net::interfaces::Interface;
use p2pd_net::pipe::{RecvError, SubKey};
use p2pd_node::Node;
use p2pd_node::clock::Clock;
use p2pd_proto::addr::PeerAddr;
use serde_json::{Value, json};

use crate::conns::{Conns, Named};
use crate::error::ApiError;
use crate::route::{Endpoint, Target};

/// Linux's address family numbers, which the original's JSON carries.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Subscriptions one connection may have (each a queue and a regex every
/// message is matched against).
pub const MAX_SUBSCRIPTIONS: usize = 16;

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A JSON object (with `"error": 0`).
    Json(Value),
    /// Raw bytes, from `client` (the `x-client-tup` header).
    Bytes {
        /// The message.
        data: Bytes,
        /// Who sent it.
        client: SocketAddr,
    },
}

/// What the API has done since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Requests the access rules refused.
    pub refused: AtomicU64,
    /// Requests answered with another error.
    pub errors: AtomicU64,
    /// Connections opened.
    pub opened: AtomicU64,
    /// Pipes relayed.
    pub relays: AtomicU64,
}

/// The endpoints' shared state.
pub struct Api {
    /// The node.
    pub node: Node,
    /// The named connections.
    pub conns: Conns,
    /// Counters for `/status`.
    pub counters: Counters,
    started: Instant,
}

impl Api {
    /// The API over `node`, started now.
    pub fn new(node: Node) -> Self {
        Self {
            node,
            conns: Conns::default(),
            counters: Counters::default(),
            started: Instant::now(),
        }
    }

    /// Answers every endpoint but the pipe (which needs the socket).
    pub async fn handle(&self, endpoint: Endpoint, body: Bytes) -> Result<Reply, ApiError> {
        match endpoint {
            Endpoint::Version => Ok(Reply::Json(json!({
                "author": "p2pd contributors",
                "error": 0,
                "title": "P2PD",
                "version": env!("CARGO_PKG_VERSION"),
            }))),
            Endpoint::Status => Ok(Reply::Json(self.status())),
            Endpoint::OpenApi => Ok(Reply::Json(crate::openapi::document())),
            Endpoint::Addr => Ok(Reply::Json(json!({
                "addr": self.node.addr().to_string(),
                "error": 0,
            }))),
            Endpoint::Connections => {
                // One look at the interfaces for the whole list.
                let nics = nics();
                let cons: Vec<Value> = self
                    .conns
                    .list()
                    .iter()
                    .map(|n| self.con_info(n, &nics))
                    .collect();
                Ok(Reply::Json(json!({ "cons": cons, "error": 0 })))
            }
            Endpoint::Open { name, target } => self.open(name, target).await,
            Endpoint::Con { name } => {
                Ok(Reply::Json(self.con_info(&self.conns.get(&name)?, &nics())))
            }
            Endpoint::Close { name } => {
                let named = self.conns.remove(&name)?;
                named.conn.pipe.close().await;
                Ok(Reply::Json(json!({ "closed": name, "error": 0 })))
            }
            Endpoint::Send { name, text } => self.send(&name, text.as_bytes()).await,
            Endpoint::Push { name } => self.send(&name, &body).await,
            Endpoint::Recv { name, key, timeout } => {
                let (data, client) = self.recv(&name, &key, timeout).await?;
                Ok(Reply::Json(json!({
                    "client_tup": [client.ip().to_string(), client.port()],
                    "data": String::from_utf8_lossy(&data),
                    "error": 0,
                    "name": name,
                })))
            }
            Endpoint::Pull { name, key, timeout } => {
                let (data, client) = self.recv(&name, &key, timeout).await?;
                Ok(Reply::Bytes { data, client })
            }
            Endpoint::Subscribe { name, key } => {
                let named = self.conns.get(&name)?;
                let subscribed = named
                    .conn
                    .pipe
                    .subscribe_within(&key, MAX_SUBSCRIPTIONS)
                    .map_err(|err| ApiError::Pattern(err.to_string()))?;
                if !subscribed {
                    return Err(ApiError::TooManySubscriptions(MAX_SUBSCRIPTIONS));
                }
                Ok(Reply::Json(sub_json(&name, "sub", &key)))
            }
            Endpoint::Unsubscribe { name, key } => {
                let named = self.conns.get(&name)?;
                if !named.conn.pipe.unsubscribe(&key) {
                    return Err(ApiError::NoSubscription(python_pair(&key)));
                }
                Ok(Reply::Json(sub_json(&name, "unsub", &key)))
            }
            Endpoint::Pipe { .. } => Err(ApiError::PipeNotFirst),
        }
    }

    async fn open(&self, name: String, target: Target) -> Result<Reply, ApiError> {
        let reservation = self.conns.reserve(&name)?;
        let peer = match target {
            Target::Itself => self.node.addr(),
            Target::Peer(text) => text
                .parse::<PeerAddr>()
                .map_err(|err| ApiError::Address(err.to_string()))?,
        };
        let strategies = &self.node.config().connect.strategies;
        let conn =
            self.node
                .connect(&peer, strategies)
                .await
                .map_err(|err| ApiError::ConnectFailed {
                    name: name.clone(),
                    why: err
                        .tried
                        .iter()
                        .map(|(strategy, why)| format!("{}: {why}", strategy.name()))
                        .collect::<Vec<_>>()
                        .join("; "),
                })?;
        // The manual: a connection the API opens is subscribed to
        // everything.
        conn.pipe
            .subscribe(&SubKey::all())
            .map_err(|err| ApiError::Pattern(err.to_string()))?;
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        let named = reservation.fill(conn);
        Ok(Reply::Json(self.con_info(&named, &nics())))
    }

    async fn send(&self, name: &str, data: &[u8]) -> Result<Reply, ApiError> {
        let named = self.conns.get(name)?;
        let sent = named
            .conn
            .pipe
            .send(data, None)
            .await
            .map_err(|err| ApiError::SendFailed(err.to_string()))?;
        Ok(Reply::Json(
            json!({ "error": 0, "name": name, "sent": sent }),
        ))
    }

    async fn recv(
        &self,
        name: &str,
        key: &SubKey,
        timeout: Duration,
    ) -> Result<(Bytes, SocketAddr), ApiError> {
        let named = self.conns.get(name)?;
        match named.conn.pipe.recv(key, Some(timeout)).await {
            Ok(msg) => Ok((msg.data, msg.from)),
            Err(RecvError::Timeout) => Err(ApiError::Empty(format!("{}", timeout.as_secs_f64()))),
            Err(RecvError::NoSubscription) => Err(ApiError::NoSubscription(python_pair(key))),
            Err(RecvError::Closed) => Err(ApiError::Closed(name.to_owned())),
            Err(other) => Err(ApiError::SendFailed(other.to_string())),
        }
    }

    /// The manual's connection info, with more beside it; `nics` name the
    /// interface the connection leaves by.
    pub fn con_info(&self, named: &Named, nics: &[Interface]) -> Value {
        let conn = &named.conn;
        let local = conn.local;
        let (if_name, nic_prefix) = interface_of(nics, local.ip());
        let endpoint = self
            .node
            .addr()
            .endpoints()
            .find(|e| e.internal == local.ip() || e.external == local.ip())
            .copied();
        let af = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let host_prefix = if local.is_ipv4() { 32 } else { 128 };
        let ext = endpoint.map_or(local.ip(), |e| e.external);
        let auth = conn.pipe.authenticated();
        json!({
            "connect_ms": conn.elapsed.as_secs_f64() * 1000.0,
            "encrypted": auth.is_some_and(|a| a.encrypted),
            "error": 0,
            "fd": conn.pipe.raw_fd(),
            "if": { "name": if_name, "offset": endpoint.map_or(0, |e| e.if_index) },
            "laddr": [local.ip().to_string(), local.port()],
            "name": named.name,
            "open": !conn.pipe.is_closed(),
            "peer": auth.map(|a| a.id.to_string()),
            "raddr": [conn.remote.ip().to_string(), conn.remote.port()],
            "route": {
                "af": af,
                "ext_ips": [{ "af": af, "cidr": host_prefix, "ip": ext.to_string() }],
                "link_local_ips": [],
                "nic_ips": [{ "af": af, "cidr": nic_prefix.unwrap_or(host_prefix), "ip": local.ip().to_string() }],
            },
            "strategy": conn.strategy.name(),
        })
    }

    fn status(&self) -> Value {
        let addr = self.node.addr();
        let interfaces: Vec<Value> = addr
            .endpoints()
            .map(|e| {
                json!({
                    "delta": { "name": e.delta.kind.name(), "type": e.delta.kind.code(), "value": e.delta.value },
                    "ext_ip": e.external.to_string(),
                    "if": e.if_index,
                    "nic_ip": e.internal.to_string(),
                    "nat": { "name": e.nat.name(), "type": e.nat.code() },
                    "port": e.port,
                })
            })
            .collect();
        let signals = self.node.signal_stats();
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let clock = match self.node.clock() {
            Clock::Measured(c) => json!({
                "agreed": c.agreed,
                "delay_ms": c.delay_ns as f64 / 1e6,
                "offset_ms": c.offset_ns as f64 / 1e6,
                "outliers": c.outliers,
                "state": "measured",
            }),
            Clock::Measuring => json!({ "state": "measuring" }),
            _ => json!({ "state": "unknown" }),
        };
        json!({
            "addr": addr.to_string(),
            "clock": clock,
            "brokers": {
                "configured": self.node.config().brokers.len(),
                "connected": self.node.brokers_connected(),
            },
            "connections": self.conns.count(),
            "counters": {
                "errors": load(&c.errors),
                "opened": load(&c.opened),
                "refused": load(&c.refused),
                "relays": load(&c.relays),
                "requests": load(&c.requests),
                "signaling_accepted": signals.inbox.accepted,
                "signaling_received": signals.links.received,
            },
            "discovered": self.node.is_discovered(),
            "error": 0,
            "id": self.node.id().to_string(),
            "interfaces": interfaces,
            "uptime_s": self.started.elapsed().as_secs_f64(),
        })
    }
}

/// The answer to `sub` and `unsub`: the manual's Python-style pair, and
/// the patterns as plain strings.
fn sub_json(name: &str, field: &str, key: &SubKey) -> Value {
    let mut out = json!({
        "addr_p": key.addr,
        "error": 0,
        "msg_p": key.msg,
        "name": name,
    });
    out[field] = Value::String(python_pair(key));
    out
}

/// `[b'msg', b'addr']`, as the original printed a subscription.
fn python_pair(key: &SubKey) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    format!("[b'{}', b'{}']", quote(&key.msg), quote(&key.addr))
}

/// This machine's interfaces now (none when they cannot be listed: the
/// info then names no interface).
fn nics() -> Vec<Interface> {
    p2pd_net::interfaces::list().unwrap_or_default()
}

/// The name of the interface holding `ip`, and the prefix of its network.
fn interface_of(all: &[Interface], ip: IpAddr) -> (String, Option<u8>) {
    for i in all {
        let v4 = i
            .ipv4
            .iter()
            .find(|n| IpAddr::V4(n.addr()) == ip)
            .map(|n| n.prefix_len());
        let v6 = i
            .ipv6_global
            .iter()
            .find(|n| IpAddr::V6(n.addr()) == ip)
            .map(|n| n.prefix_len());
        if let Some(prefix) = v4.or(v6) {
            return (i.name.clone(), Some(prefix));
        }
        if ip.is_loopback() && i.loopback {
            return (i.name.clone(), None);
        }
    }
    (String::new(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_print_as_the_original_did() {
        assert_eq!(python_pair(&SubKey::all()), "[b'', b'']");
        assert_eq!(
            python_pair(&SubKey::new("[hH]e[l]+o", r"[\s\S]+")),
            r"[b'[hH]e[l]+o', b'[\\s\\S]+']"
        );
        assert_eq!(python_pair(&SubKey::new("it's", "")), r"[b'it\'s', b'']");
    }
}
