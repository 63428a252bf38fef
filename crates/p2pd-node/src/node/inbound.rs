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

use p2pd_net::pipe::{Message, Pipe};
use p2pd_proto::addr::NodeId;
use p2pd_proto::connect::ReverseToken;
use tokio::sync::{mpsc, oneshot, watch};

use super::command::Command;

/// The prefix of an ECHO request.
pub const ECHO: &[u8] = b"ECHO ";

/// An application's hook on remote-initiated connections.
pub(crate) type Hook =
    Arc<dyn Fn(Message, Pipe) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
/// The hooks installed now; replaced, not mutated, when one is added.
pub(crate) type Hooks = Arc<Vec<Hook>>;

/// Installs the node's handling on an accepted connection, before its
/// first message is read: a connection that presented a reverse token goes
/// to the connect waiting for it (and is closed when none is); any other
/// gets ECHO and the hooks on every message.
pub(crate) fn on_accept(
    conn: &Pipe,
    actor: mpsc::WeakSender<Command>,
    hooks: watch::Receiver<Hooks>,
) {
    let answer = conn
        .authenticated()
        .and_then(|peer| peer.token.map(|token| (peer.id, token)));
    let Some((from, token)) = answer else {
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
