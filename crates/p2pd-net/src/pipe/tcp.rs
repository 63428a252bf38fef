//! TCP pipes: connecting, accepting, and the read loop.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Weak;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};

use p2pd_proto::handshake::record::{Opener, Sealer};
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use super::{Ends, Inner, Io, Layer, Message, Pipe, PipeConfig, PipeError};
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
    let stream = connect_stream(dest, local, config).await?;
    wrap_stream(stream, config, None)
}

/// A TCP connection to `dest` from `local`, with the pipe options.
pub(super) async fn connect_stream(
    dest: SocketAddr,
    local: SocketAddr,
    config: &PipeConfig,
) -> Result<TcpStream, PipeError> {
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
    Ok(stream)
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
    let (pipe, reader) = stream_pipe(stream, config, parent, Layer::default())?;
    start_reader(&pipe, reader);
    Ok(pipe)
}

pub(super) fn wrap_layered(
    stream: TcpStream,
    config: &PipeConfig,
    layer: Layer,
    setup: impl FnOnce(&Pipe),
) -> Result<Pipe, PipeError> {
    let (pipe, reader) = stream_pipe(stream, config, None, layer)?;
    setup(&pipe);
    start_reader(&pipe, reader);
    Ok(pipe)
}

/// A connection's sending side: the socket, and the sealer when the
/// connection is encrypted.
pub(super) struct TcpWriter {
    pub(super) half: OwnedWriteHalf,
    sealer: Option<Sealer>,
    /// The records of the message being sent; kept between sends.
    sealed: Vec<u8>,
    /// A send was cancelled half-way through a record: the peer cannot
    /// open anything after it, so an encrypted connection takes no more.
    broken: bool,
}

/// A sealed buffer larger than this is freed after its send, so one large
/// message does not pin memory on an idle connection.
const KEEP_SEALED: usize = 256 << 10;

impl TcpWriter {
    /// Writes all of `data` (sealed into records on an encrypted
    /// connection), giving up when `closed` is cancelled.
    pub(super) async fn write(
        &mut self,
        data: &[u8],
        closed: &CancellationToken,
    ) -> Result<(), PipeError> {
        let Self {
            half,
            sealer,
            sealed,
            broken,
        } = self;
        if *broken && sealer.is_some() {
            return Err(PipeError::Closed);
        }
        let bytes: &[u8] = match sealer {
            None => data,
            Some(sealer) => {
                sealed.clear();
                sealer.seal(data, sealed).map_err(io::Error::other)?;
                sealed
            }
        };
        // Fast path: the kernel usually takes it all at once.
        let written = match half.try_write(bytes) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(err) => return Err(err.into()),
        };
        if written < bytes.len() {
            // A peer that stops reading must not keep `close` waiting for
            // this write. Biased: the write is polled first, so the
            // cancellation costs nothing while the write makes progress.
            // Until the write completes, the stream ends inside this
            // message: a cancelled send leaves it that way.
            *broken = true;
            tokio::select! {
                biased;
                rest = tokio::io::AsyncWriteExt::write_all(half, &bytes[written..]) => rest?,
                () = closed.cancelled() => return Err(PipeError::Closed),
            }
            *broken = false;
        }
        if sealed.capacity() > KEEP_SEALED {
            *sealed = Vec::new();
        }
        Ok(())
    }
}

/// A connection's receiving side: the socket, and the opener when the
/// connection is encrypted.
struct TcpReader {
    half: OwnedReadHalf,
    opener: Option<Opener>,
    /// Bytes read but not delivered yet: first what the handshake read
    /// past its end; on an encrypted connection after that, the start of a
    /// record a read cut off.
    leftover: Vec<u8>,
}

impl TcpReader {
    /// What the handshake read past its end, as the application receives
    /// it (for an encrypted connection: the records it completes), copied
    /// out as a read of `limit` would be.
    fn take_leftover(&mut self, limit: usize) -> io::Result<Option<Bytes>> {
        match &mut self.opener {
            None => Ok(Some(Bytes::from(std::mem::take(&mut self.leftover)))),
            Some(opener) => read_records(&self.half, opener, &mut self.leftover, limit, false),
        }
    }

    /// One read of at most `limit` bytes, as the application receives
    /// them: `None` at the end of the stream; empty while a record is
    /// incomplete.
    fn read(&mut self, limit: usize) -> io::Result<Option<Bytes>> {
        match &mut self.opener {
            None => read_message(&self.half, limit),
            Some(opener) => read_records(&self.half, opener, &mut self.leftover, limit, true),
        }
    }
}

/// Reads at most `limit` bytes (with `read`) after `leftover`, the kept
/// start of a record, and opens the records where they lie in the thread's
/// read buffer, their plaintext moved to its front: only the incomplete
/// record at the end is copied, kept in `leftover` for the next read.
fn read_records(
    half: &OwnedReadHalf,
    opener: &mut Opener,
    leftover: &mut Vec<u8>,
    limit: usize,
    read: bool,
) -> io::Result<Option<Bytes>> {
    READ_BUFFER.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(leftover);
        if read {
            buf.reserve(limit);
            if half.try_read_buf(&mut (&mut *buf).limit(limit))? == 0 {
                return Ok(None);
            }
        }
        let opened = opener
            .open_in_place(buf)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        // A fresh allocation, not the old one refilled: a connection that
        // goes idle after a whole record keeps no capacity.
        *leftover = buf[opened.used..].to_vec();
        buf.truncate(opened.plain);
        Ok(Some(take_read(buf, limit)))
    })
}

/// A pipe for a connected stream, its reader not started yet.
fn stream_pipe(
    stream: TcpStream,
    config: &PipeConfig,
    parent: Option<Weak<Inner>>,
    layer: Layer,
) -> Result<(Pipe, TcpReader), PipeError> {
    // Messages are sent whole and at once; Nagle would hold small ones back.
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let fd = stream.as_raw_fd();
    let (reader, writer) = stream.into_split();
    let (sealer, opener) = layer.keys.map_or((None, None), |(s, o)| (Some(s), Some(o)));
    let writer = TcpWriter {
        half: writer,
        sealer,
        sealed: Vec::new(),
        broken: false,
    };
    let pipe = Pipe::new(
        Ends {
            protocol: super::Protocol::Tcp,
            local,
            peer: Some(peer),
            fd: Some(fd),
        },
        Io::Tcp(tokio::sync::Mutex::new(Some(writer))),
        config,
        parent,
        layer.peer,
    );
    let reader = TcpReader {
        half: reader,
        opener,
        leftover: layer.leftover,
    };
    Ok((pipe, reader))
}

fn start_reader(pipe: &Pipe, reader: TcpReader) {
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
        Ends {
            protocol: super::Protocol::Tcp,
            local,
            peer: None,
            fd: Some(listener.as_raw_fd()),
        },
        Io::TcpServer,
        config,
        None,
        None,
    );
    let task = tokio::spawn(accept_loop(pipe.weak(), listener));
    pipe.track(task);
    Ok(pipe)
}

/// A connection being greeted, counted toward its server's clients until
/// it is adopted or dropped, also when its greeting is aborted.
struct GreetingSlot(Weak<Inner>);

impl Drop for GreetingSlot {
    fn drop(&mut self) {
        if let Some(server) = self.0.upgrade() {
            let mut state = server.state();
            state.greeting = state.greeting.saturating_sub(1);
        }
    }
}

/// Makes an accepted connection one of `server`'s pipes.
fn adopt(server: &Pipe, stream: TcpStream, from: SocketAddr, layer: Layer) {
    let (client, reader) =
        match stream_pipe(stream, &server.inner.config, Some(server.weak()), layer) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(%from, %err, "cannot wrap accepted connection");
                return;
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
    mut reader: TcpReader,
    peer: SocketAddr,
    parent: Option<Weak<Inner>>,
) {
    let Some(limit) = weak.upgrade().map(|inner| inner.config.read_buffer) else {
        return;
    };
    // What the handshake read past its end comes first.
    let mut first = Some(reader.take_leftover(limit));
    loop {
        let read = match first.take() {
            Some(read) => read,
            None => {
                // The stream's own reader slot, as a raw read would use:
                // `readable()` would queue a waiter under a lock and take it
                // out again.
                let stream: &TcpStream = reader.half.as_ref();
                if std::future::poll_fn(|cx| stream.poll_read_ready(cx))
                    .await
                    .is_err()
                {
                    break;
                }
                reader.read(limit)
            }
        };
        let data = match read {
            Ok(Some(data)) if data.is_empty() => continue,
            Ok(Some(data)) => data,
            Ok(None) => break,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                // A failed read, or an altered or forged record: nothing
                // after it can be trusted, so the connection ends.
                tracing::debug!(%peer, %err, "tcp connection ended");
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
        match reader.try_read_buf(&mut (&mut *buf).limit(limit))? {
            0 => Ok(None),
            _ => Ok(Some(take_read(buf, limit))),
        }
    })
}

/// The bytes in the read buffer as a message: a copy when they fill less
/// than a quarter of a read of `limit`, else the buffer's bytes themselves.
fn take_read(buf: &mut BytesMut, limit: usize) -> Bytes {
    if buf.len() < limit / COPY_BELOW_DIVISOR {
        Bytes::copy_from_slice(buf)
    } else {
        buf.split().freeze()
    }
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
        let greeter = {
            let mut state = server.inner.state();
            if state.children.len() + state.greeting >= config.max_clients {
                drop(state);
                server
                    .inner
                    .refused_clients
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%from, "server full, connection refused");
                continue;
            }
            let greeter = state.greeter.clone();
            if greeter.is_some() {
                state.greeting += 1;
            }
            greeter
        };
        if config.linger.is_some() {
            let _ = socket2::SockRef::from(&stream).set_linger(config.linger);
        }
        let Some(greeter) = greeter else {
            adopt(&server, stream, from, Layer::default());
            continue;
        };
        // Greeted on a task of its own: a slow client holds up no other.
        let slot = GreetingSlot(server.weak());
        let greeting = tokio::spawn(async move {
            let greeted = greeter(stream).await;
            let Some(server) = Pipe::upgrade(&slot.0) else {
                return;
            };
            drop(slot);
            if let Some((stream, layer)) = greeted {
                adopt(&server, stream, from, layer);
            }
        });
        server.track(greeting);
    }
    if let Some(server) = Pipe::upgrade(&weak) {
        server.finish_detached();
    }
}
