//! Connections that reach this node: ECHO and the application's hooks on
//! those a remote peer asked for, and the hand-over of accepted
//! connections that answer this node's own reverse requests.
//!
//! What a connection is was settled by its greeting, before it became a
//! pipe (`p2pd_net::handshake::Acceptor`): a handshake that carried a
//! reverse token answers one of our requests; any other connection (a
//! proven peer, or an anonymous plain client) is a remote one and served.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use p2pd_net::pipe::{Message, Pipe};
use p2pd_proto::addr::NodeId;
use p2pd_proto::connect::ReverseToken;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::command::Command;
use super::limits::{Keyed, network};

/// The prefix of an ECHO request.
pub const ECHO: &[u8] = b"ECHO ";

/// An application's hook on remote-initiated connections.
pub(crate) type Hook =
    Arc<dyn Fn(Message, Pipe) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
/// The hooks installed now; replaced, not mutated, when one is added.
pub(crate) type Hooks = Arc<Vec<Hook>>;

/// How long an anonymous connection may stay silent before it is closed.
pub(crate) const ANONYMOUS_IDLE: Duration = Duration::from_secs(120);

/// A bounded share of the node's descriptors for one kind of inbound
/// connection, optionally with an idle limit. Anyone can open plain
/// connections, and anyone can prove a throwaway key, so each kind gets a
/// share and no more, and the rest stays for the node's own work.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    kind: &'static str,
    slots: Arc<Semaphore>,
    idle: Option<Duration>,
}

/// Connections from proven peers at one network (an IPv4 address, an IPv6
/// /64) at once: throwaway keys behind one host cannot take the share of
/// everyone else.
const MAX_PROVEN_PER_NET: usize = 64;

/// The shares of inbound connections, by kind.
#[derive(Debug, Clone)]
pub(crate) struct Shares {
    /// Plain clients (no handshake: netcat, the original P2PD): a quarter
    /// of the descriptors, closed after [`ANONYMOUS_IDLE`] of silence.
    anonymous: Share,
    /// Proven peers that opened a connection to us: half of them, at most
    /// [`MAX_PROVEN_PER_NET`] from one network, never timed out (an
    /// application's connection may idle).
    proven: Share,
    proven_per_net: Arc<std::sync::Mutex<Keyed<IpAddr>>>,
}

impl Shares {
    /// The shares for a process whose open-file limit is `fd_limit`.
    pub(crate) fn for_fd_limit(fd_limit: u64) -> Self {
        let part = |divisor: u64| usize::try_from(fd_limit / divisor).unwrap_or(usize::MAX);
        Self {
            anonymous: Share::new("anonymous", part(4).clamp(16, 4096), Some(ANONYMOUS_IDLE)),
            proven: Share::new("proven", part(2).clamp(16, 65_536), None),
            proven_per_net: Arc::new(std::sync::Mutex::new(Keyed::new(MAX_PROVEN_PER_NET))),
        }
    }
}

impl Share {
    fn new(kind: &'static str, max: usize, idle: Option<Duration>) -> Self {
        Self {
            kind,
            slots: Arc::new(Semaphore::new(max)),
            idle,
        }
    }

    /// Takes a slot for `conn` until it ends (watching it for silence, if
    /// this share has an idle limit; `also` is held as long); closes it at
    /// once when there is no slot. Returns whether it may be served.
    fn admit(&self, conn: &Pipe, also: Option<OwnedSemaphorePermit>) -> bool {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            refuse(conn, self.kind);
            return false;
        };
        let heard = Arc::new(Notify::new());
        if self.idle.is_some() {
            let heard = heard.clone();
            conn.add_msg_cb(move |_, _| {
                heard.notify_one();
                async {}
            });
        }
        let (conn, idle) = (conn.clone(), self.idle);
        tokio::spawn(async move {
            let _slots = (slot, also);
            loop {
                tokio::select! {
                    () = conn.closed() => return,
                    () = heard.notified() => {}
                    () = tokio::time::sleep(idle.unwrap_or_default()), if idle.is_some() => {
                        conn.close().await;
                        return;
                    }
                }
            }
        });
        true
    }
}

/// Installs the node's handling on an accepted connection, before its
/// first message is read: a connection that presented a reverse token goes
/// to the connect waiting for it (and is closed when none is); any other
/// gets ECHO and the hooks on every message, within its kind's share.
pub(crate) fn on_accept(
    conn: &Pipe,
    actor: mpsc::WeakSender<Command>,
    hooks: watch::Receiver<Hooks>,
    shares: &Shares,
) {
    let Some(peer) = conn.authenticated() else {
        if shares.anonymous.admit(conn, None) {
            serve_all(conn, hooks);
        }
        return;
    };
    let Some((from, token)) = peer.token.map(|token| (peer.id, token)) else {
        let per_net = conn.peer_addr().and_then(|from| {
            let mut nets = shares.proven_per_net.lock().ok()?;
            nets.acquire(network(from.ip()))
        });
        let Some(per_net) = per_net else {
            refuse(conn, "proven, from one network");
            return;
        };
        if shares.proven.admit(conn, Some(per_net)) {
            serve_all(conn, hooks);
        }
        return;
    };
    let conn = conn.clone();
    tokio::spawn(async move {
        if !claim(&actor, token, from, conn.clone()).await {
            tracing::debug!(%from, "a reverse token we did not ask that peer for");
            conn.close().await;
        }
    });
}

/// Closes a connection there is no room for.
fn refuse(conn: &Pipe, kind: &'static str) {
    tracing::debug!(from = ?conn.peer_addr(), kind, "inbound share full");
    let conn = conn.clone();
    tokio::spawn(async move { conn.close().await });
}

/// Serves every message of a connection a remote peer asked for (a
/// dial-back).
pub(crate) fn serve_all(conn: &Pipe, hooks: watch::Receiver<Hooks>) {
    conn.add_msg_cb(move |msg, conn| {
        let hooks = hooks.clone();
        async move { serve(&msg, &conn, &hooks).await }
    });
}

/// Asks the actor whether `token` is one of our pending reverse requests;
/// if so, `conn` has been handed to the connect that waits for it.
async fn claim(
    actor: &mpsc::WeakSender<Command>,
    token: ReverseToken,
    from: NodeId,
    conn: Pipe,
) -> bool {
    let Some(actor) = actor.upgrade() else {
        return false;
    };
    let (claimed, answer) = oneshot::channel();
    let asked = actor.send(Command::Claim {
        token,
        from,
        conn,
        claimed,
    });
    asked.await.is_ok() && answer.await.unwrap_or(false)
}

/// ECHO, then the application's hooks.
async fn serve(msg: &Message, conn: &Pipe, hooks: &watch::Receiver<Hooks>) {
    echo(msg, conn).await;
    let hooks = hooks.borrow().clone();
    for hook in hooks.iter() {
        hook(msg.clone(), conn.clone()).await;
    }
}

/// Answers an ECHO request with the bytes after `ECHO `, unchanged.
async fn echo(msg: &Message, conn: &Pipe) {
    if let Some(rest) = msg.data.strip_prefix(ECHO) {
        let _ = conn.send(rest, Some(msg.from)).await;
    }
}
