//! What runs on a TCP connection before it becomes a pipe (the connection
//! handshake, `crate::handshake`), and what the pipe keeps of it: bytes read
//! past the handshake, the record keys of an encrypted connection, and who
//! the other end proved to be.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use p2pd_proto::addr::NodeId;
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::handshake::record::{Opener, Sealer};
use tokio::net::TcpStream;

/// Greets a connection a TCP server accepted, before it becomes a pipe:
/// reads its first bytes, runs the handshake, and gives back the stream
/// with what it found, or `None` to drop the connection. It bounds its own
/// time: a greeting that never ends holds a client slot.
pub type Greeter = Arc<
    dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = Option<(TcpStream, Layer)>> + Send>>
        + Send
        + Sync,
>;

/// Who the other end of a connection proved to be in the handshake. Only
/// this crate's handshake makes one (`non_exhaustive`), so code outside
/// cannot write a proof it did not get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authenticated {
    /// Its node ID.
    pub id: NodeId,
    /// Whether the connection is encrypted.
    pub encrypted: bool,
    /// The reverse token it presented: this connection answers our reverse
    /// request.
    pub token: Option<ReverseToken>,
}

/// What a connection's first bytes left for its pipe. The default is a
/// plain connection nothing has read from.
#[derive(Default)]
pub struct Layer {
    /// Bytes read past the handshake: the application's first bytes (on an
    /// encrypted connection, records).
    pub leftover: Vec<u8>,
    /// The record keys: what we send is sealed, what we receive opened.
    pub keys: Option<(Sealer, Opener)>,
    /// Who the other end is; `None` for an anonymous plain client.
    pub peer: Option<Authenticated>,
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("leftover", &self.leftover.len())
            .field("encrypted", &self.keys.is_some())
            .field("peer", &self.peer)
            .finish()
    }
}
