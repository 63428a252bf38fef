//! A TCP pipe as a tokio byte stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use super::{Pipe, PipeError};

/// Received chunks buffered for the stream reader before the connection's
/// reader waits (and TCP flow control slows the peer).
pub(super) const DEPTH: usize = 16;

type WriteTask = tokio::task::JoinHandle<io::Result<()>>;
type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A TCP pipe read and written as bytes (AsyncRead + AsyncWrite), from
/// [`Pipe::stream`]. Reading returns end-of-file when the pipe ends.
pub struct PipeStream {
    pipe: Pipe,
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
    write: Option<WriteTask>,
    shutdown: Option<ShutdownFuture>,
}

impl PipeStream {
    pub(super) fn new(pipe: Pipe, rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            pipe,
            rx,
            pending: Bytes::new(),
            write: None,
            shutdown: None,
        }
    }

    /// The pipe behind the stream.
    pub fn pipe(&self) -> &Pipe {
        &self.pipe
    }
}

impl std::fmt::Debug for PipeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeStream")
            .field("pipe", &self.pipe)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for PipeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.pending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PipeStream {
    /// Accepts the bytes at once and sends them on a task of their own, so
    /// they go out even if the caller never flushes; the next write, flush
    /// or shutdown waits for them first and reports their error.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.as_mut().poll_flush(cx))?;
        let pipe = self.pipe.clone();
        let data = Bytes::copy_from_slice(buf);
        self.write = Some(tokio::spawn(async move {
            pipe.send(&data, None).await.map(drop).map_err(into_io)
        }));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(write) = self.write.as_mut() {
            let result = ready!(Pin::new(write).poll(cx));
            self.write = None;
            match result {
                Ok(sent) => sent?,
                Err(join) => return Poll::Ready(Err(io::Error::other(join))),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        if self.shutdown.is_none() {
            let pipe = self.pipe.clone();
            self.shutdown = Some(Box::pin(async move { pipe.shutdown_io().await }));
        }
        if let Some(shutdown) = self.shutdown.as_mut() {
            ready!(shutdown.as_mut().poll(cx));
        }
        Poll::Ready(Ok(()))
    }
}

fn into_io(err: PipeError) -> io::Error {
    match err {
        PipeError::Io(err) => err,
        PipeError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, err),
        other => io::Error::other(other),
    }
}
