//! How a pipe ends: closing, the end callbacks, leaving its server, and
//! freeing the sockets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;

use super::{Inner, Io, Pipe, lock};

impl Pipe {
    /// Closes the pipe: tasks stop, sockets are freed, end callbacks run; a
    /// server also closes its connections. Safe to call more than once.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        // The I/O loops first: once the accept loop has stopped, no new
        // connection can join the server behind our back.
        let current = tokio::task::try_id();
        loop {
            let Some(task) = lock(&self.inner.tasks).pop() else {
                break;
            };
            // Aborted, not asked: the loops wait on no cancellation per
            // message, and a consumer that never finishes cannot keep
            // `close` waiting. A callback may close its own pipe; that task
            // cannot wait for itself (nor be aborted in the middle of this
            // close), and it stops on its own after the callback.
            if Some(task.id()) != current {
                task.abort();
                let _ = task.await;
            }
        }
        let children: Vec<Pipe> = self.inner.state().children.values().cloned().collect();
        for child in children {
            Box::pin(child.close()).await;
        }
        self.shutdown_io().await;
        self.finish().await;
        self.leave_server();
    }

    /// Whether the pipe has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.ended.is_cancelled()
    }

    /// Waits until the pipe has ended. Cancel-safe.
    pub async fn closed(&self) {
        self.inner.ended.cancelled().await;
    }

    /// Marks the pipe ended (once): wakes receivers, runs end callbacks,
    /// leaves its server. The I/O loops run this on a task of its own, so an
    /// end callback that closes another pipe never waits on its own loop.
    pub(super) async fn finish(&self) {
        if self.inner.end_ran.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.ended.cancel();
        let (subs, end_cbs) = {
            let mut state = self.inner.state();
            let consumers = Arc::make_mut(&mut state.consumers);
            consumers.stream = None;
            consumers.forwards = Vec::new();
            (consumers.subs.clone(), state.end_cbs.clone())
        };
        // Waiting receivers return what is queued, then `Closed`.
        for sub in &subs {
            sub.ready.notify_waiters();
        }
        tracing::debug!(pipe = %self.id(), "pipe ended");
        let keep_open = self.inner.config.keep_open_on_end && !self.inner.closed.is_cancelled();
        if !keep_open {
            self.shutdown_io().await;
        }
        for (_, cb) in end_cbs.iter() {
            cb(self.clone()).await;
        }
        let server = self.inner.parent.as_ref().and_then(Pipe::upgrade);
        if let Some(server) = server {
            let server_cbs = server.inner.state().end_cbs.clone();
            for (_, cb) in server_cbs.iter() {
                cb(self.clone()).await;
            }
        }
        if !keep_open {
            self.leave_server();
        }
        // Callbacks often hold a handle to their own pipe: dropping them
        // breaks that cycle, so an ended pipe's memory is freed.
        let mut state = self.inner.state();
        Arc::make_mut(&mut state.consumers).msg_cbs = Vec::new();
        state.end_cbs = Arc::new(Vec::new());
        state.accept_cbs = Arc::new(Vec::new());
    }

    /// Whether [`Pipe::finish`] has started: the pipe was closed, or its
    /// loop already stopped.
    pub(super) fn has_ended(&self) -> bool {
        self.inner.end_ran.load(Ordering::Acquire)
    }

    /// Runs [`Pipe::finish`] on a task of its own; for the I/O loops.
    pub(super) fn finish_detached(&self) {
        let pipe = self.clone();
        tokio::spawn(async move { pipe.finish().await });
    }

    /// Removes this connection from its server's list, if it is still this
    /// pipe there (a new connection from the same address may have replaced
    /// it).
    pub(super) fn leave_server(&self) {
        let (Some(server), Some(peer)) = (
            self.inner.parent.as_ref().and_then(Pipe::upgrade),
            self.inner.peer,
        ) else {
            return;
        };
        let mut state = server.inner.state();
        if state
            .children
            .get(&peer)
            .is_some_and(|c| Arc::ptr_eq(&c.inner, &self.inner))
        {
            state.children.remove(&peer);
        }
    }

    pub(super) async fn shutdown_io(&self) {
        match &self.inner.io {
            Io::Tcp(writer) => {
                if let Some(mut w) = writer.lock().await.take() {
                    let _ = w.half.shutdown().await;
                }
            }
            Io::Udp(socket) => {
                lock(socket).take();
            }
            Io::TcpServer => {}
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
        self.ended.cancel();
        // The I/O loops hold the pipe only weakly while they wait; they stop
        // here and free the sockets.
        for task in lock(&self.tasks).iter() {
            task.abort();
        }
    }
}
