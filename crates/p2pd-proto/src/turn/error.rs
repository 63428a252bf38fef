//! Why a TURN allocation, or something hanging on it, failed: what a user
//! reads in `tried`, naming the server.

use std::net::SocketAddr;
use std::time::Duration;

/// Why an allocation, or a peer's permission, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The server refused the user name or password.
    #[error("TURN server {server} refused the credentials ({reason})")]
    Unauthorized {
        /// The server.
        server: SocketAddr,
        /// Its reason phrase.
        reason: String,
    },
    /// The server refused the request for another reason.
    #[error("TURN server {server} refused: {code} {reason}")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// The error code (RFC 8656 section 19).
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// No answer in time.
    #[error("TURN server {server} did not answer within {} ms", .after.as_millis())]
    TimedOut {
        /// The server.
        server: SocketAddr,
        /// The request's timeout.
        after: Duration,
    },
    /// The answer lacks what it must carry.
    #[error("TURN server {server} sent a malformed answer: {why}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// What is missing or wrong.
        why: &'static str,
    },
    /// The server is in another realm than the configured one.
    #[error("TURN server {server} is in realm `{theirs}`, not the configured `{ours}`")]
    Realm {
        /// The server.
        server: SocketAddr,
        /// The server's realm.
        theirs: String,
        /// The configured realm.
        ours: String,
    },
    /// The allocation's lifetime ran out before a refresh got through.
    #[error("the allocation on TURN server {server} expired")]
    Expired {
        /// The server.
        server: SocketAddr,
    },
    /// Asked for something that needs an allocation before it exists, or
    /// after it ended.
    #[error("no allocation on TURN server {server}")]
    NotAllocated {
        /// The server.
        server: SocketAddr,
    },
    /// Data for a peer with neither a channel nor a permission.
    #[error("no permission for peer {0}")]
    NoPermission(SocketAddr),
    /// Asked a UDP allocation for TCP connections, or a TCP one for
    /// datagrams.
    #[error("the allocation on TURN server {server} does not relay {wanted}")]
    WrongTransport {
        /// The server.
        server: SocketAddr,
        /// What was asked for.
        wanted: &'static str,
    },
}
