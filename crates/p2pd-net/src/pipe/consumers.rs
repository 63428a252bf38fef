//! Where received messages go: subscription queues, callbacks, forward
//! pipes and the byte stream, and the delivery of one message to all of
//! them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::queue::BoundedQueue;
use super::stream::{self, PipeStream};
use super::subscription::{Matcher, SubKey};
use super::{CallbackId, Inner, Io, Message, Pipe, PipeError, RecvError, lock};

pub(super) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
pub(super) type MsgCb = Arc<dyn Fn(Message, Pipe) -> BoxFuture + Send + Sync>;
pub(super) type EndCb = Arc<dyn Fn(Pipe) -> BoxFuture + Send + Sync>;
pub(super) type AcceptCb = Arc<dyn Fn(&Pipe) + Send + Sync>;

/// One subscription: its patterns and its queue.
pub(super) struct Sub {
    pub(super) key: SubKey,
    pub(super) matcher: Matcher,
    /// A lock of its own, so the reader pushing and a receiver popping do
    /// not wait on the pipe's state.
    pub(super) queue: Mutex<BoundedQueue<Message>>,
    pub(super) ready: Notify,
    /// Set when unsubscribed: a receiver holding this queue stops.
    pub(super) gone: AtomicBool,
}

/// Everything a received message goes to. Delivery takes a snapshot (one
/// reference count) and works outside the state lock; changes copy it when
/// a delivery holds it ([`Arc::make_mut`]), so they never disturb one in
/// progress.
#[derive(Default, Clone)]
pub(super) struct Consumers {
    pub(super) subs: Vec<Arc<Sub>>,
    pub(super) msg_cbs: Vec<(CallbackId, MsgCb)>,
    pub(super) forwards: Vec<Weak<Inner>>,
    pub(super) stream: Option<mpsc::Sender<Bytes>>,
}

impl Pipe {
    /// Starts queueing messages that match `key` (manual: `subscribe`).
    /// Subscribing twice with the same key keeps one queue.
    pub fn subscribe(&self, key: &SubKey) -> Result<(), PipeError> {
        self.subscribe_within(key, usize::MAX).map(|_| ())
    }

    /// [`Pipe::subscribe`], unless `max` subscriptions exist and `key` is
    /// not one of them: then `false`, and nothing changes. Counted under
    /// the pipe's lock, so concurrent callers cannot pass `max` together.
    pub fn subscribe_within(&self, key: &SubKey, max: usize) -> Result<bool, PipeError> {
        let matcher = Matcher::new(key)?;
        let mut state = self.inner.state();
        let subs = &state.consumers.subs;
        if !subs.iter().any(|s| s.key == *key) {
            if subs.len() >= max {
                return Ok(false);
            }
            Arc::make_mut(&mut state.consumers).subs.push(Arc::new(Sub {
                key: key.clone(),
                matcher,
                queue: Mutex::new(BoundedQueue::new(self.inner.config.max_queue)),
                ready: Notify::new(),
                gone: AtomicBool::new(false),
            }));
        }
        Ok(true)
    }

    /// The patterns of every subscription, oldest first.
    pub fn subscriptions(&self) -> Vec<SubKey> {
        let state = self.inner.state();
        state.consumers.subs.iter().map(|s| s.key.clone()).collect()
    }

    /// Deletes the queue of `key` and what is in it; returns whether it
    /// existed.
    pub fn unsubscribe(&self, key: &SubKey) -> bool {
        let mut state = self.inner.state();
        let Some(at) = state.consumers.subs.iter().position(|s| s.key == *key) else {
            return false;
        };
        let sub = Arc::make_mut(&mut state.consumers).subs.remove(at);
        // Waiting receivers wake up and find no subscription.
        sub.gone.store(true, Ordering::Release);
        sub.ready.notify_waiters();
        true
    }

    /// Waits for the next message in the queue of `key`, at most `timeout`
    /// (`None`: no limit). Messages already queued when the pipe ended are
    /// still returned.
    ///
    /// Cancel-safe: a message is only taken from the queue when returned.
    pub async fn recv(
        &self,
        key: &SubKey,
        timeout: Option<Duration>,
    ) -> Result<Message, RecvError> {
        let sub = self
            .inner
            .state()
            .consumers
            .subs
            .iter()
            .find(|s| s.key == *key)
            .cloned()
            .ok_or(RecvError::NoSubscription)?;
        // One timer for the whole wait, registered only if the wait blocks.
        let expiry = timeout.map(tokio::time::sleep);
        let mut expiry = std::pin::pin!(expiry);
        loop {
            // Created before the checks: a message pushed (`notify_one`
            // keeps a permit) or an end or unsubscribe (`notify_waiters`)
            // after them still wakes it.
            let ready = sub.ready.notified();
            if sub.gone.load(Ordering::Acquire) {
                return Err(RecvError::NoSubscription);
            }
            if let Some(msg) = lock(&sub.queue).pop() {
                return Ok(msg);
            }
            if self.has_ended() {
                return Err(RecvError::Closed);
            }
            match expiry.as_mut().as_pin_mut() {
                Some(expiry) => tokio::select! {
                    biased;
                    () = ready => {}
                    () = expiry => return Err(RecvError::Timeout),
                },
                None => ready.await,
            }
        }
    }

    /// Runs `cb` on every received message, with the pipe to answer on (for
    /// a TCP server, the connection the message came from). Messages wait
    /// for the callback to finish, so it should not block for long.
    pub fn add_msg_cb<F, Fut>(&self, cb: F) -> CallbackId
    where
        F: Fn(Message, Pipe) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cb: MsgCb = Arc::new(move |msg, pipe| Box::pin(cb(msg, pipe)));
        let mut state = self.inner.state();
        let id = state.next_id();
        Arc::make_mut(&mut state.consumers).msg_cbs.push((id, cb));
        id
    }

    /// Removes a message callback; returns whether it was installed.
    pub fn del_msg_cb(&self, id: CallbackId) -> bool {
        let mut state = self.inner.state();
        let Some(at) = state.consumers.msg_cbs.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        Arc::make_mut(&mut state.consumers).msg_cbs.remove(at);
        true
    }

    /// Runs `cb` once when the pipe ends (closed by us or by the peer). On a
    /// TCP server it also runs when a connection ends, with that connection.
    pub fn add_end_cb<F, Fut>(&self, cb: F) -> CallbackId
    where
        F: Fn(Pipe) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cb: EndCb = Arc::new(move |pipe| Box::pin(cb(pipe)));
        let mut state = self.inner.state();
        let id = state.next_id();
        Arc::make_mut(&mut state.end_cbs).push((id, cb));
        id
    }

    /// Runs `cb` on every connection a TCP server accepts, before the
    /// connection's first message is read: callbacks that `cb` installs on
    /// the connection see all of its messages, and state they keep is the
    /// connection's own.
    pub fn add_accept_cb<F>(&self, cb: F) -> CallbackId
    where
        F: Fn(&Pipe) + Send + Sync + 'static,
    {
        let cb: AcceptCb = Arc::new(cb);
        let mut state = self.inner.state();
        let id = state.next_id();
        Arc::make_mut(&mut state.accept_cbs).push((id, cb));
        id
    }

    /// Removes an end callback; returns whether it was installed.
    pub fn del_end_cb(&self, id: CallbackId) -> bool {
        let mut state = self.inner.state();
        let Some(at) = state.end_cbs.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        Arc::make_mut(&mut state.end_cbs).remove(at);
        true
    }

    /// Sends every message this pipe receives down `other` (manual:
    /// `add_pipe`). Link both ways for a relay; this does not loop, because
    /// a forwarded message is sent, not received. The link holds no
    /// ownership: it ends when either pipe goes away.
    pub fn add_pipe(&self, other: &Pipe) {
        let other = Arc::downgrade(&other.inner);
        let mut state = self.inner.state();
        if !state.consumers.forwards.iter().any(|w| w.ptr_eq(&other)) {
            Arc::make_mut(&mut state.consumers).forwards.push(other);
        }
    }

    /// Stops forwarding into `other`; returns whether it was linked.
    pub fn del_pipe(&self, other: &Pipe) -> bool {
        let other = Arc::downgrade(&other.inner);
        let mut state = self.inner.state();
        let Some(at) = state
            .consumers
            .forwards
            .iter()
            .position(|w| w.ptr_eq(&other))
        else {
            return false;
        };
        Arc::make_mut(&mut state.consumers).forwards.remove(at);
        true
    }

    /// The TCP connection as a tokio byte stream (AsyncRead + AsyncWrite),
    /// for protocol code written against streams. It receives what arrives
    /// from now on, with backpressure; queues and callbacks still see every
    /// message too.
    pub fn stream(&self) -> Result<PipeStream, PipeError> {
        if !matches!(self.inner.io, Io::Tcp(_)) {
            return Err(PipeError::NotAStream);
        }
        let mut state = self.inner.state();
        if state.stream_taken {
            return Err(PipeError::StreamTaken);
        }
        if self.inner.ended.is_cancelled() {
            return Err(PipeError::Closed);
        }
        let (tx, rx) = mpsc::channel(stream::DEPTH);
        Arc::make_mut(&mut state.consumers).stream = Some(tx);
        state.stream_taken = true;
        Ok(PipeStream::new(self.clone(), rx))
    }

    /// Hands one received message to everything that wants it; `reply` is
    /// the pipe callbacks should answer on. With `keep`, the message is
    /// handed back for a consumer after this pipe's own (a connection's
    /// server); else `None`.
    ///
    /// Every consumer but the last gets a copy and the last the message
    /// itself: the first copy of a fresh message costs an allocation (the
    /// bytes' shared header), so a message with one consumer costs none.
    pub(super) async fn deliver(&self, msg: Message, reply: &Pipe, keep: bool) -> Option<Message> {
        self.inner.received.fetch_add(1, Ordering::Relaxed);
        let consumers = {
            let mut state = self.inner.state();
            if let Some(dedup) = state.dedup.as_mut()
                && !dedup.insert(msg.from, &msg.data)
            {
                self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
                return keep.then_some(msg);
            }
            state.consumers.clone()
        };
        // Outside the state lock: a receiver woken here must not find it
        // still held (on a busy machine it would spin, then sleep again).
        // Each pattern is searched once: backwards to the last match, then
        // forwards to it.
        let subs = &consumers.subs;
        let last_sub = subs
            .iter()
            .rposition(|sub| sub.matcher.matches(&msg.data, msg.from));
        if let Some(last_sub) = last_sub {
            for sub in &subs[..last_sub] {
                if sub.matcher.matches(&msg.data, msg.from) {
                    self.queue(sub, msg.clone());
                }
            }
            let more = keep
                || !consumers.forwards.is_empty()
                || !consumers.msg_cbs.is_empty()
                || consumers.stream.is_some();
            if !more {
                self.queue(&subs[last_sub], msg);
                return None;
            }
            self.queue(&subs[last_sub], msg.clone());
        }
        for target in consumers.forwards.iter().filter_map(Pipe::upgrade) {
            if let Err(err) = target.send(&msg.data, None).await {
                tracing::debug!(pipe = %self.id(), to = %target.id(), %err, "forward failed");
            }
        }
        if let Some(((_, last_cb), cbs)) = consumers.msg_cbs.split_last() {
            for (_, cb) in cbs {
                cb(msg.clone(), reply.clone()).await;
            }
            if !keep && consumers.stream.is_none() {
                last_cb(msg, reply.clone()).await;
                return None;
            }
            last_cb(msg.clone(), reply.clone()).await;
        }
        if let Some(stream) = &consumers.stream {
            // A dropped stream reader just stops receiving.
            if !keep {
                let _ = stream.send(msg.data).await;
                return None;
            }
            let _ = stream.send(msg.data.clone()).await;
        }
        keep.then_some(msg)
    }

    /// Pushes `msg` into a subscription's queue and wakes its receiver.
    fn queue(&self, sub: &Sub, msg: Message) {
        let dropped = {
            let mut queue = lock(&sub.queue);
            let before = queue.dropped();
            queue.push(msg);
            queue.dropped() != before
        };
        if dropped {
            self.inner.queue_dropped.fetch_add(1, Ordering::Relaxed);
        }
        sub.ready.notify_one();
    }
}
