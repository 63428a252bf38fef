//! Pipe options: the manual's `NET_CONF`, typed.
//!
//! | NET_CONF | here | default |
//! |---|---|---|
//! | `con_timeout` (2 s) | [`PipeConfig::connect_timeout`] | 2 s |
//! | `max_qsize` (1000) | [`PipeConfig::max_queue`] | 1000 messages per subscription, oldest dropped |
//! | `enable_msg_ids`, `max_msg_ids` (off, 1000) | [`PipeConfig::dedup_window`] | off (`None`); `Some(1000)` remembers 1000 |
//! | `reuse_addr` (off) | [`PipeConfig::reuse_address`], [`PipeConfig::reuse_port`] | off |
//! | `broadcast` (off) | [`PipeConfig::broadcast`] | off |
//! | `reader_limit` (64 KiB) | [`PipeConfig::read_buffer`] | 64 KiB: the largest message one read returns |
//! | `sock_only` | not a flag: use [`crate::bind`] for a bare tokio socket | |
//! | `no_close` (off) | [`PipeConfig::keep_open_on_end`] | off |
//! | `linger` (off) | [`PipeConfig::linger`] | off (`None`) |
//! | `loop` | not needed: pipes run on the current tokio runtime | |

use std::time::Duration;

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages kept per subscription queue (the manual's `max_qsize`).
pub const MAX_QUEUE: usize = 1000;
/// The largest message one read returns; also the UDP datagram limit.
pub const READ_BUFFER: usize = 64 * 1024;
/// Connections a TCP server pipe keeps at once; more are refused (closed at
/// once) so a flood of connections cannot exhaust memory or descriptors.
pub const MAX_CLIENTS: usize = 16 * 1024;

/// Options of one pipe (or of every pipe of a daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipeConfig {
    /// How long a TCP connect may take before it fails.
    pub connect_timeout: Duration,
    /// Messages kept per subscription; when full, the oldest is dropped and
    /// counted.
    pub max_queue: usize,
    /// Drop UDP datagrams identical (same sender, same bytes) to one of the
    /// last N received; `None` keeps every datagram.
    pub dedup_window: Option<usize>,
    /// SO_REUSEADDR on the pipe's socket.
    pub reuse_address: bool,
    /// SO_REUSEPORT on the pipe's socket.
    pub reuse_port: bool,
    /// SO_BROADCAST on UDP sockets.
    pub broadcast: bool,
    /// The largest message one read returns (TCP) or the largest datagram
    /// received in full (UDP).
    pub read_buffer: usize,
    /// When the peer ends a TCP stream (or reading fails), keep our sending
    /// side open until [`super::Pipe::close`]; by default the pipe closes.
    pub keep_open_on_end: bool,
    /// SO_LINGER: `Some(0)` resets connections on close instead of a FIN.
    /// A non-zero value makes closing block a runtime thread for up to that
    /// long, so keep it zero or unset.
    pub linger: Option<Duration>,
    /// Connections a TCP server keeps at once.
    pub max_clients: usize,
}

impl Default for PipeConfig {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            max_queue: MAX_QUEUE,
            dedup_window: None,
            reuse_address: false,
            reuse_port: false,
            broadcast: false,
            read_buffer: READ_BUFFER,
            keep_open_on_end: false,
            linger: None,
            max_clients: MAX_CLIENTS,
        }
    }
}

impl PipeConfig {
    /// Sets the connect timeout.
    pub fn connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-subscription queue bound.
    pub fn max_queue(&mut self, messages: usize) -> &mut Self {
        self.max_queue = messages.max(1);
        self
    }

    /// Turns on UDP duplicate suppression over the last `messages`.
    pub fn dedup_window(&mut self, messages: Option<usize>) -> &mut Self {
        self.dedup_window = messages.map(|m| m.max(1));
        self
    }

    /// Sets SO_REUSEADDR and SO_REUSEPORT together.
    pub fn reuse(&mut self, reuse: bool) -> &mut Self {
        self.reuse_address = reuse;
        self.reuse_port = reuse;
        self
    }

    /// Sets SO_BROADCAST.
    pub fn broadcast(&mut self, on: bool) -> &mut Self {
        self.broadcast = on;
        self
    }

    /// Sets the read buffer (at least 1 byte).
    pub fn read_buffer(&mut self, bytes: usize) -> &mut Self {
        self.read_buffer = bytes.max(1);
        self
    }

    /// Keeps the sending side open after the peer ends.
    pub fn keep_open_on_end(&mut self, keep: bool) -> &mut Self {
        self.keep_open_on_end = keep;
        self
    }

    /// Sets SO_LINGER.
    pub fn linger(&mut self, linger: Option<Duration>) -> &mut Self {
        self.linger = linger;
        self
    }

    /// Sets how many connections a TCP server keeps.
    pub fn max_clients(&mut self, clients: usize) -> &mut Self {
        self.max_clients = clients;
        self
    }
}
