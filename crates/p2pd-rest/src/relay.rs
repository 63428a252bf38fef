//! `/p2p/pipe`: an HTTP connection becomes a raw two-way relay to a named
//! connection (manual 1.3.7).
//!
//! Bytes from the HTTP side are sent down the connection; messages from
//! the peer are written to the HTTP side, with backpressure both ways.
//! Bytes that came in the same read as the request head are relayed too
//! (the original lost them). When the HTTP side ends its sending (a
//! half-close looks the same as a close here), the peer's answers still
//! come back until it has been quiet for [`LINGER`]. The peer's connection
//! stays open for other requests unless the peer ended it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use p2pd_net::pipe::Pipe;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How much one read from the HTTP side may take.
const READ_CHUNK: usize = 64 * 1024;
/// Messages waiting for the HTTP side before the peer is slowed down.
const DEPTH: usize = 32;
/// After the HTTP side has sent everything, how long a quiet peer is
/// waited for.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Relays until either side ends, or `stop`.
pub(crate) async fn relay<S>(io: S, pipe: Pipe, early: Bytes, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send,
{
    let (mut from_app, mut to_app) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    // Before anything is sent, so no answer goes past the relay.
    let cb = pipe.add_msg_cb(move |msg, _| {
        let tx = tx.clone();
        async move {
            // A relay that has ended just stops taking messages.
            let _ = tx.send(msg.data).await;
        }
    });
    // Whether the HTTP side ended cleanly (a half-close) after sending all.
    let up = async {
        if !early.is_empty() && pipe.send(&early, None).await.is_err() {
            return false;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match from_app.read(&mut buf).await {
                Ok(0) => return true,
                Err(_) => return false,
                Ok(n) => {
                    if pipe.send(&buf[..n], None).await.is_err() {
                        return false;
                    }
                }
            }
        }
    };
    // When the HTTP side last got something, in ms since `started`.
    let started = tokio::time::Instant::now();
    let last = AtomicU64::new(0);
    let down = async {
        loop {
            tokio::select! {
                biased;
                data = rx.recv() => match data {
                    Some(data) => {
                        if to_app.write_all(&data).await.is_err() {
                            return;
                        }
                        last.store(ms_since(started), Ordering::Relaxed);
                    }
                    None => break,
                },
                () = pipe.closed() => {
                    while let Ok(data) = rx.try_recv() {
                        if to_app.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    break;
                }
            }
        }
        let _ = to_app.shutdown().await;
    };
    tokio::pin!(down);
    tokio::select! {
        () = stop.cancelled() => {}
        () = &mut down => {}
        clean = up => {
            if clean {
                last.store(ms_since(started), Ordering::Relaxed);
                loop {
                    let quiet_until = started
                        + Duration::from_millis(last.load(Ordering::Relaxed))
                        + LINGER;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = &mut down => break,
                        () = tokio::time::sleep_until(quiet_until) => {
                            let now = ms_since(started);
                            if now >= last.load(Ordering::Relaxed) + LINGER.as_millis() as u64 {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    pipe.del_msg_cb(cb);
}

fn ms_since(start: tokio::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
