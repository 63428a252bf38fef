//! TCP pipes: connecting, accepting, and the read loop.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Weak;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};

use super::{Inner, Io, Message, Pipe, PipeConfig, PipeError};
use crate::bind::{self, BindOptions};

/// Pause after a failed accept (such as EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// A read that fills less than this share of the buffer is copied out, so a
/// small message does not pin a whole read buffer while it sits in a queue.
const COPY_BELOW_DIVISOR: usize = 4;

pub(super) async fn connect(
    dest: SocketAddr,
    local: SocketAddr,
    config: &PipeConfig,
) -> Result<Pipe, PipeError> {
    let socket = bind::tcp_socket(local, &bind_options(config))?;
    if config.linger.is_some() {
        socket2::SockRef::from(&socket).set_linger(config.linger)?;
    }
    let stream = match tokio::time::timeout(config.connect_timeout, socket.connect(dest)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(PipeError::Connect { dest, source }),
        Err(_) => {
            return Err(PipeError::ConnectTimeout {
                dest,
                after: config.connect_timeout,
            });
        }
    };
    wrap_stream(stream, config, None)
}

pub(super) fn listen(local: SocketAddr, config: &PipeConfig) -> Result<Pipe, PipeError> {
    let listener = bind::tcp_listener(local, &bind_options(config))?;
    wrap_listener(listener, config)
}

pub(super) fn wrap_stream(
    stream: TcpStream,
    config: &PipeConfig,
    parent: Option<Weak<Inner>>,
) -> Result<Pipe, PipeError> {
    let (pipe, reader) = stream_pipe(stream, config, parent)?;
    start_reader(&pipe, reader);
    Ok(pipe)
}

/// A pipe for a connected stream, its reader not started yet.
fn stream_pipe(
    stream: TcpStream,
    config: &PipeConfig,
    parent: Option<Weak<Inner>>,
) -> Result<(Pipe, OwnedReadHalf), PipeError> {
    // Messages are sent whole and at once; Nagle would hold small ones back.
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let (reader, writer) = stream.into_split();
    let pipe = Pipe::new(
        super::Protocol::Tcp,
        local,
        Some(peer),
        Io::Tcp(tokio::sync::Mutex::new(Some(writer))),
        config,
        parent,
    );
    Ok((pipe, reader))
}

fn start_reader(pipe: &Pipe, reader: OwnedReadHalf) {
    let peer = pipe.inner.peer.unwrap_or_else(|| pipe.inner.local);
    let task = tokio::spawn(read_loop(
        pipe.weak(),
        reader,
        peer,
        pipe.inner.parent.clone(),
    ));
    pipe.track(task);
}

pub(super) fn wrap_listener(listener: TcpListener, config: &PipeConfig) -> Result<Pipe, PipeError> {
    let local = listener.local_addr()?;
    let pipe = Pipe::new(
        super::Protocol::Tcp,
        local,
        None,
        Io::TcpServer,
        config,
        None,
    );
    let task = tokio::spawn(accept_loop(pipe.weak(), listener));
    pipe.track(task);
    Ok(pipe)
}

fn bind_options(config: &PipeConfig) -> BindOptions {
    BindOptions {
        reuse_address: config.reuse_address,
        reuse_port: config.reuse_port,
        ..BindOptions::default()
    }
}

/// Reads until the peer ends, an error, or close. Holds the pipe only
/// weakly between reads, and no buffer while idle, so an idle connection
/// costs little memory. `close` (or the last handle dropping) aborts it.
async fn read_loop(
    weak: Weak<Inner>,
    reader: OwnedReadHalf,
    peer: SocketAddr,
    parent: Option<Weak<Inner>>,
) {
    let Some(limit) = weak.upgrade().map(|inner| inner.config.read_buffer) else {
        return;
    };
    loop {
        // The stream's own reader slot, as a raw read would use: `readable()`
        // would queue a waiter under a lock and take it out again.
        let stream: &TcpStream = reader.as_ref();
        if std::future::poll_fn(|cx| stream.poll_read_ready(cx))
            .await
            .is_err()
        {
            break;
        }
        let data = match read_message(&reader, limit) {
            Ok(Some(data)) => data,
            Ok(None) => break,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                tracing::debug!(%peer, %err, "tcp read failed");
                break;
            }
        };
        let Some(pipe) = Pipe::upgrade(&weak) else {
            return;
        };
        let msg = Message { data, from: peer };
        match parent.as_ref().and_then(Pipe::upgrade) {
            Some(server) => {
                if let Some(msg) = pipe.deliver(msg, &pipe, true).await {
                    server.deliver(msg, &pipe, false).await;
                }
            }
            None => {
                pipe.deliver(msg, &pipe, false).await;
            }
        }
        // A callback that closed this pipe ran on this task, which `close`
        // cannot abort from inside: stop here. (An atomic load: the close
        // token's own check takes a lock, once per message.)
        if pipe.has_ended() {
            break;
        }
    }
    if let Some(pipe) = Pipe::upgrade(&weak) {
        pipe.finish_detached();
    }
}

thread_local! {
    /// The read buffer of the TCP readers running on this thread. A small
    /// message is copied out and leaves the buffer for the next read, so it
    /// costs no buffer allocation; a large one takes the bytes without a
    /// copy. Per thread rather than per connection, so an idle connection
    /// holds no buffer.
    static READ_BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// One read of at most `limit` bytes: `None` at the end of the stream.
fn read_message(reader: &OwnedReadHalf, limit: usize) -> io::Result<Option<Bytes>> {
    READ_BUFFER.with_borrow_mut(|buf| {
        buf.clear();
        buf.reserve(limit);
        let n = reader.try_read_buf(&mut (&mut *buf).limit(limit))?;
        Ok(match n {
            0 => None,
            n if n < limit / COPY_BELOW_DIVISOR => Some(Bytes::copy_from_slice(&buf[..n])),
            _ => Some(buf.split().freeze()),
        })
    })
}

async fn accept_loop(weak: Weak<Inner>, listener: TcpListener) {
    let Some(closed) = weak.upgrade().map(|inner| inner.closed.clone()) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = closed.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Some(server) = Pipe::upgrade(&weak) else {
            return;
        };
        let (stream, from) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of descriptors or a connection reset before accept:
                // the listener itself is fine; try again a little later, as
                // descriptors take time to free.
                tracing::debug!(%err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let config = &server.inner.config;
        if server.inner.state().children.len() >= config.max_clients {
            server
                .inner
                .refused_clients
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%from, "server full, connection refused");
            continue;
        }
        if config.linger.is_some() {
            let _ = socket2::SockRef::from(&stream).set_linger(config.linger);
        }
        let (client, reader) = match stream_pipe(stream, config, Some(server.weak())) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(%from, %err, "cannot wrap accepted connection");
                continue;
            }
        };
        // Listed before its reader starts, so its end always finds it.
        let (replaced, accept_cbs) = {
            let mut state = server.inner.state();
            (
                state.children.insert(from, client.clone()),
                state.accept_cbs.clone(),
            )
        };
        for (_, cb) in accept_cbs.iter() {
            cb(&client);
        }
        start_reader(&client, reader);
        if let Some(old) = replaced {
            // A new connection from the same address (a punched port reused):
            // the old one is gone for the peer too.
            tokio::spawn(async move { old.close().await });
        }
    }
    if let Some(server) = Pipe::upgrade(&weak) {
        server.finish_detached();
    }
}
