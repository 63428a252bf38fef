//! How pipe operations fail.

use std::net::SocketAddr;
use std::time::Duration;

use super::subscription::PatternError;
use crate::bind::BindError;

/// Why a pipe operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipeError {
    /// The local address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A TCP connect was refused or failed.
    #[error("cannot connect to {dest}: {source}")]
    Connect {
        /// Where to.
        dest: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A TCP connect took longer than the configured timeout.
    #[error("connecting to {dest} timed out after {after:?}")]
    ConnectTimeout {
        /// Where to.
        dest: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The pipe is closed.
    #[error("the pipe is closed")]
    Closed,
    /// A UDP pipe without a default destination was given none.
    #[error("this pipe has no default destination: give one")]
    NoDestination,
    /// A TCP server has no connection from this address.
    #[error("no client {0} is connected to this server")]
    UnknownClient(SocketAddr),
    /// A byte stream only exists for one TCP connection.
    #[error("only a TCP connection (not a server, not UDP) gives a byte stream")]
    NotAStream,
    /// A byte stream was already taken from this pipe.
    #[error("this pipe's byte stream was already taken")]
    StreamTaken,
    /// A subscription pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// Sending failed.
    #[error("send failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why [`Pipe::recv`] returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No message arrived in time.
    #[error("no message within the timeout")]
    Timeout,
    /// Nothing subscribed with this pair of patterns.
    #[error("no such subscription")]
    NoSubscription,
    /// The pipe ended and the queue is empty.
    #[error("the pipe is closed")]
    Closed,
}
