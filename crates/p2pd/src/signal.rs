//! Waiting for the signal to stop.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Returns a future that ends on SIGINT or SIGTERM. The handlers are
/// installed at the call, not at the first poll, and the future is meant
/// to be kept for the whole run: tokio's handler stays installed once a
/// signal was listened for, so a signal arriving while nobody listens
/// would be swallowed.
pub(crate) fn shutdown() -> impl Future<Output = ()> {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: &mut Option<tokio::signal::unix::Signal>| {
            let s = s.take();
            async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            () = wait(&mut term) => {}
            () = wait(&mut int) => {}
        }
    }
}
