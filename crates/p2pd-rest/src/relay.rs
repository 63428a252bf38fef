//! `/p2p/pipe`: an HTTP connection becomes a raw two-way relay to a named
//! connection (manual 1.3.7).
//!
//! Bytes from the HTTP side are sent down the connection; messages from
//! the peer are written to the HTTP side, with backpressure both ways.
//! Bytes that came in the same read as the request head are relayed too
//! (the original lost them). The relay ends when either side ends; the
//! peer's connection stays open for other requests unless the peer ended
//! it.

use bytes::Bytes;
use p2pd_net::pipe::Pipe;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How much one read from the HTTP side may take.
const READ_CHUNK: usize = 64 * 1024;
/// Messages waiting for the HTTP side before the peer is slowed down.
const DEPTH: usize = 32;

/// Relays until either side ends.
pub(crate) async fn relay<S>(io: S, pipe: Pipe, early: Bytes)
where
    S: AsyncRead + AsyncWrite + Send,
{
    let (mut from_app, mut to_app) = tokio::io::split(io);
    if !early.is_empty() && pipe.send(&early, None).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    let cb = pipe.add_msg_cb(move |msg, _| {
        let tx = tx.clone();
        async move {
            // A relay that has ended just stops taking messages.
            let _ = tx.send(msg.data).await;
        }
    });
    let up = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match from_app.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if pipe.send(&buf[..n], None).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let down = async {
        // Ends when the peer's connection ends: its callbacks, and with
        // them the sender, are dropped.
        while let Some(data) = rx.recv().await {
            if to_app.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to_app.shutdown().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    pipe.del_msg_cb(cb);
}
