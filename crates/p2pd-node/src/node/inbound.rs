//! Connections that reach this node: ECHO and the application's hooks on
//! those a remote peer asked for, and the hand-over of accepted
//! connections that answer this node's own reverse requests.
//!
//! What a connection is was settled by its greeting, before it became a
//! pipe (`p2pd_net::handshake::Acceptor`): a handshake that carried a
//! reverse token answers one of our requests; any other connection (a
//! proven peer, or an anonymous plain client) is a remote one and served.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use p2pd_net::pipe::{Message, Pipe};
use p2pd_proto::addr::NodeId;
use p2pd_proto::connect::ReverseToken;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use super::command::Command;

/// The prefix of an ECHO request.
pub const ECHO: &[u8] = b"ECHO ";

/// An application's hook on remote-initiated connections.
pub(crate) type Hook =
    Arc<dyn Fn(Message, Pipe) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
/// The hooks installed now; replaced, not mutated, when one is added.
pub(crate) type Hooks = Arc<Vec<Hook>>;

/// How long an anonymous connection may stay silent before it is closed.
pub(crate) const ANONYMOUS_IDLE: Duration = Duration::from_secs(120);

/// Plain clients (no handshake: netcat, the original P2PD) served at once,
/// and their idle limit: anyone can open such connections for free, so
/// they get a bounded share of the node's descriptors and no more, and the
/// rest stays for the node's own work and proven peers.
#[derive(Debug, Clone)]
pub(crate) struct Anonymous {
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Anonymous {
    /// A share of `max` connections, each closed after `idle` of silence.
    pub(crate) fn new(max: usize, idle: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            idle,
        }
    }

    /// The share for a process whose open-file limit is `fd_limit`: a
    /// quarter of it, within reason.
    pub(crate) fn for_fd_limit(fd_limit: u64) -> Self {
        let quarter = usize::try_from(fd_limit / 4).unwrap_or(usize::MAX);
        Self::new(quarter.clamp(16, 4096), ANONYMOUS_IDLE)
    }

    /// Takes a slot for `conn` and watches it for silence; closes it at
    /// once when there is no slot. Returns whether it may be served.
    fn admit(&self, conn: &Pipe) -> bool {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!(from = ?conn.peer_addr(), "anonymous connections full");
            let conn = conn.clone();
            tokio::spawn(async move { conn.close().await });
            return false;
        };
        let heard = Arc::new(Notify::new());
        let heard_cb = heard.clone();
        conn.add_msg_cb(move |_, _| {
            heard_cb.notify_one();
            async {}
        });
        let (conn, idle) = (conn.clone(), self.idle);
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                tokio::select! {
                    () = conn.closed() => return,
                    () = heard.notified() => {}
                    () = tokio::time::sleep(idle) => {
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
/// gets ECHO and the hooks on every message, within the anonymous share
/// when it proved no key.
pub(crate) fn on_accept(
    conn: &Pipe,
    actor: mpsc::WeakSender<Command>,
    hooks: watch::Receiver<Hooks>,
    anonymous: &Anonymous,
) {
    let Some(peer) = conn.authenticated() else {
        if anonymous.admit(conn) {
            serve_all(conn, hooks);
        }
        return;
    };
    let Some((from, token)) = peer.token.map(|token| (peer.id, token)) else {
        serve_all(conn, hooks);
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
