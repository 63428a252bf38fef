//! The connection handshake over TCP: the driver of
//! `p2pd_proto::handshake`. [`initiate`] runs it on a connection we made;
//! an [`Acceptor`] greets the connections a node server accepts, telling a
//! p2pd node (handshake), an original P2PD node (its `P2P_CON_ID_EQ` line,
//! consumed) and a plain client (anonymous) apart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pd_proto::addr::NodeId;
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::handshake::{
    Greeting, HandshakeError, Hello, Initiator, ReplayGuard, Responder, Session, classify,
};
use p2pd_proto::signal::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pipe::{Authenticated, Greeter, Layer, Pipe, PipeConfig, PipeError};
use crate::wall_clock::unix_ms;

/// A connection's first bytes that could still become a handshake or an
/// original node's line wait at most this long before they are taken as a
/// plain client's.
pub const UNDECIDED: Duration = Duration::from_millis(500);

/// Reads during a handshake take at most this much at a time.
const READ_CHUNK: usize = 4096;

/// Why a connection we made is not the peer we wanted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailed {
    /// The TCP connection could not be made.
    #[error(transparent)]
    Connect(#[from] PipeError),
    /// The answer did not prove the peer's key, or was no handshake.
    #[error(transparent)]
    Refused(#[from] HandshakeError),
    /// The other end closed the connection before answering: not a p2pd
    /// node, or one that refused us.
    #[error("not the peer: the connection ended during the handshake")]
    Ended,
    /// No answer came in time.
    #[error("not the peer: no handshake answer within {0:?}")]
    Timeout(Duration),
    /// Reading or writing failed.
    #[error("not the peer: {0}")]
    Io(#[from] std::io::Error),
}

/// What we ask for in a handshake we start.
#[derive(Debug, Clone, Copy)]
pub struct Asking {
    /// Whether we want the stream encrypted.
    pub encrypt: bool,
    /// The reverse token, when this connection answers a reverse request.
    pub token: Option<ReverseToken>,
    /// How long the handshake may take.
    pub limit: Duration,
}

/// Runs on a dialled connection before its first message is read (see
/// [`Pipe::from_tcp_stream_layered`]).
pub type Setup = Arc<dyn Fn(&Pipe) + Send + Sync>;

/// Connects to `dest` and proves that the node `peer` is there: the
/// connection as a pipe, its stream encrypted when either side asks.
pub async fn dial(
    dest: SocketAddr,
    local: Option<SocketAddr>,
    config: &PipeConfig,
    (me, peer): (&Identity, &NodeId),
    asking: Asking,
    setup: Option<Setup>,
) -> Result<Pipe, HandshakeFailed> {
    let mut stream = Pipe::connect_tcp_stream(dest, local, config).await?;
    let layer = initiate(&mut stream, me, peer, asking).await?;
    Ok(Pipe::from_tcp_stream_layered(
        stream,
        config,
        layer,
        |pipe| {
            if let Some(setup) = setup {
                setup(pipe);
            }
        },
    )?)
}

/// Runs the initiator's side on a connected stream.
pub async fn initiate(
    stream: &mut TcpStream,
    me: &Identity,
    peer: &NodeId,
    asking: Asking,
) -> Result<Layer, HandshakeFailed> {
    let hello = Hello {
        encrypt: asking.encrypt,
        sent_ms: unix_ms(),
        token: asking.token,
    };
    let run = async {
        let (mut initiator, first) = Initiator::start(me, peer, hello, rand::random())?;
        stream.write_all(&first).await?;
        let finished = read_until(stream, Vec::new(), |bytes| initiator.read(bytes)).await?;
        // The confirmation goes out before anything else: the responder
        // trusts the connection once it has opened it.
        stream.write_all(&finished.confirm).await?;
        Ok(layer(finished.session, finished.leftover, None))
    };
    tokio::time::timeout(asking.limit, run)
        .await
        .unwrap_or(Err(HandshakeFailed::Timeout(asking.limit)))
}

/// Greets the connections a node server accepts, as the node `identity`.
pub struct Acceptor {
    identity: Identity,
    encrypt: bool,
    limit: Duration,
    /// Shared by every greeting: a first message is accepted once.
    guard: Mutex<ReplayGuard>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("id", &self.identity.id())
            .field("encrypt", &self.encrypt)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor that wants encryption when `encrypt`, and gives a
    /// connection `limit` to finish its handshake.
    pub fn new(identity: Identity, encrypt: bool, limit: Duration) -> Self {
        Self {
            identity,
            encrypt,
            limit,
            guard: Mutex::new(ReplayGuard::new()),
        }
    }

    /// The greeter for [`Pipe::set_greeter`] / `Daemon::set_greeter`.
    pub fn greeter(self: &Arc<Self>) -> Greeter {
        let acceptor = self.clone();
        Arc::new(move |stream| {
            let acceptor = acceptor.clone();
            Box::pin(async move { acceptor.greet(stream).await })
        })
    }

    /// What a connection is: its stream and layer, or `None` when it failed
    /// the handshake (then it is dropped).
    pub async fn greet(&self, stream: TcpStream) -> Option<(TcpStream, Layer)> {
        let from = stream.peer_addr().ok();
        self.greet_from(stream, from).await
    }

    /// [`Acceptor::greet`] for a stream whose socket peer is not the
    /// remote end (a relayed stream's loopback bridge): `from` is who the
    /// replay guard counts its handshakes against.
    pub async fn greet_from(
        &self,
        mut stream: TcpStream,
        from: Option<SocketAddr>,
    ) -> Option<(TcpStream, Layer)> {
        let mut first = Vec::new();
        let undecided = tokio::time::Instant::now() + UNDECIDED;
        let greeting = loop {
            match classify(&first) {
                Greeting::NeedMore => {}
                decided => break decided,
            }
            match tokio::time::timeout_at(undecided, read_some(&mut stream, &mut first)).await {
                Ok(Ok(true)) => {}
                // A NUL first is a p2pd node's (no text client sends one)
                // whose handshake stalled: dropped, never served as plain.
                _ if first.first() == Some(&0) => {
                    tracing::debug!(?from, "handshake stalled in its magic");
                    return None;
                }
                // Ended, failed or silent: what came so far is a plain
                // client's.
                Ok(Ok(false) | Err(_)) | Err(_) => break Greeting::Plain,
            }
        };
        match greeting {
            Greeting::Handshake => {
                match tokio::time::timeout(self.limit, self.respond(&mut stream, from, first)).await
                {
                    Ok(Ok(layer)) => Some((stream, layer)),
                    Ok(Err(err)) => {
                        tracing::debug!(?from, %err, "handshake refused");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(?from, "handshake timed out");
                        None
                    }
                }
            }
            Greeting::Legacy { line_len } => {
                let layer = Layer {
                    leftover: first.split_off(line_len),
                    ..Layer::default()
                };
                Some((stream, layer))
            }
            Greeting::Plain | Greeting::NeedMore => Some((
                stream,
                Layer {
                    leftover: first,
                    ..Layer::default()
                },
            )),
        }
    }

    async fn respond(
        &self,
        stream: &mut TcpStream,
        from: Option<SocketAddr>,
        first: Vec<u8>,
    ) -> Result<Layer, HandshakeFailed> {
        let mut responder = Responder::new(&self.identity, self.encrypt, rand::random())?;
        let heard = read_until(stream, first, |bytes| responder.read_first(bytes)).await?;
        // Only the bookkeeping under the lock; the key agreements ran
        // before and run after it, so handshakes do not wait on each other.
        let source = from.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |f| f.ip());
        self.guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(unix_ms(), source, heard.hello.sent_ms, heard.ephemeral)?;
        stream.write_all(&responder.answer()?).await?;
        let accepted = read_until(stream, Vec::new(), |bytes| responder.confirm(bytes)).await?;
        let token = accepted.hello.token;
        Ok(layer(accepted.session, accepted.leftover, token))
    }
}

/// What a finished handshake leaves for the connection's pipe.
fn layer(session: Session, leftover: Vec<u8>, token: Option<ReverseToken>) -> Layer {
    Layer {
        leftover,
        peer: Some(Authenticated {
            id: session.peer,
            encrypted: session.encrypted(),
            token,
        }),
        keys: session.into_keys(),
    }
}

/// Feeds `first`, then what each read returns, to the handshake step
/// `step` until it gives its result.
async fn read_until<T>(
    stream: &mut TcpStream,
    first: Vec<u8>,
    mut step: impl FnMut(&[u8]) -> Result<Option<T>, HandshakeError>,
) -> Result<T, HandshakeFailed> {
    let mut buf = first;
    loop {
        if let Some(done) = step(&buf)? {
            return Ok(done);
        }
        buf.clear();
        if !read_some(stream, &mut buf).await? {
            return Err(HandshakeFailed::Ended);
        }
    }
}

/// Appends what one read returns to `buf`; `false` at the end of the
/// stream.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}
