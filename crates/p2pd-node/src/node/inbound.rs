//! Connections that reach this node: ECHO and the application's hooks on
//! those a remote peer asked for, and the hand-over of accepted
//! connections that answer this node's own reverse requests.
//!
//! Each accepted connection gets its own message callback (installed
//! before its first message is read), so what is known about it (fresh,
//! remote, ours) is its own state, not an entry in a shared map.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use p2pd_net::pipe::{Message, Pipe};
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::connect::preamble::decode_preamble;
use tokio::sync::{mpsc, oneshot, watch};

use super::command::Command;

/// The prefix of an ECHO request.
pub const ECHO: &[u8] = b"ECHO ";

/// An application's hook on remote-initiated connections.
pub(crate) type Hook =
    Arc<dyn Fn(Message, Pipe) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
/// The hooks installed now; replaced, not mutated, when one is added.
pub(crate) type Hooks = Arc<Vec<Hook>>;

/// What is known about an accepted connection.
const FRESH: u8 = 0;
/// A remote peer's connection: served.
const REMOTE: u8 = 1;
/// An answer to our reverse request, handed to the connect that asked.
const OURS: u8 = 2;

/// Installs the node's handling on an accepted connection: its first
/// message tells whether it answers one of our reverse requests (then the
/// actor hands it to the waiting connect) or a remote peer opened it (then
/// every message gets ECHO and the hooks).
pub(crate) fn on_accept(
    conn: &Pipe,
    actor: mpsc::WeakSender<Command>,
    hooks: watch::Receiver<Hooks>,
) {
    let state = Arc::new(AtomicU8::new(FRESH));
    conn.add_msg_cb(move |msg, conn| {
        let (state, actor, hooks) = (state.clone(), actor.clone(), hooks.clone());
        async move {
            // A connection's messages are delivered one at a time, so its
            // state needs no stronger ordering.
            if state.load(Ordering::Relaxed) == FRESH {
                let ours = match decode_preamble(&msg.data) {
                    Ok(token) => claim(&actor, token, conn.clone()).await,
                    Err(_) => false,
                };
                state.store(if ours { OURS } else { REMOTE }, Ordering::Relaxed);
            }
            if state.load(Ordering::Relaxed) == REMOTE {
                serve(&msg, &conn, &hooks).await;
            }
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
async fn claim(actor: &mpsc::WeakSender<Command>, token: ReverseToken, conn: Pipe) -> bool {
    let Some(actor) = actor.upgrade() else {
        return false;
    };
    let (claimed, answer) = oneshot::channel();
    let asked = actor.send(Command::Claim {
        token,
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
