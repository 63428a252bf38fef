//! Binding requests over UDP and TCP.

use std::net::SocketAddr;
use std::time::Duration;

use p2pd_proto::stun::binding::{self, BindingError, interpret};
use p2pd_proto::stun::message::frame_len;
use p2pd_proto::stun::transaction::{Event, RetransmitPolicy, Transactions};
use p2pd_proto::stun::{Message, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

pub use p2pd_proto::stun::binding::BindingResponse;

use crate::bind::{self, BindOptions};

/// Why a Binding request got no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Nothing answered in time.
    #[error("no answer from {0}")]
    Timeout(SocketAddr),
    /// The server answered with an error response.
    #[error("{server} answered error {code}")]
    ErrorResponse {
        /// The server.
        server: SocketAddr,
        /// The STUN error code.
        code: u16,
    },
    /// The response had no mapped address.
    #[error("{0} sent a response without a mapped address")]
    NoMappedAddress(SocketAddr),
    /// The socket failed.
    #[error("stun socket: {0}")]
    Io(#[from] std::io::Error),
    /// Binding the local socket failed.
    #[error(transparent)]
    Bind(#[from] crate::bind::BindError),
    /// A TCP connection to the server failed.
    #[error("cannot reach {server} over TCP: {source}")]
    Connect {
        /// The server.
        server: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TCP server sent bytes that are not STUN.
    #[error("{0} sent something that is not STUN")]
    Malformed(SocketAddr),
}

impl From<BindingError> for StunError {
    fn from(err: BindingError) -> Self {
        match err {
            BindingError::Timeout(server) => StunError::Timeout(server),
            BindingError::ErrorResponse { server, code } => {
                StunError::ErrorResponse { server, code }
            }
            BindingError::NoMappedAddress(server) => StunError::NoMappedAddress(server),
            // BindingError is non-exhaustive; a newer kind of bad answer
            // is still a bad answer.
            _ => StunError::Malformed(err.server()),
        }
    }
}

/// One request to make: where, and whether to ask for an answer from the
/// server's other IP and/or port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// The server.
    pub server: SocketAddr,
    /// CHANGE-REQUEST flags (ip, port); `None` sends none.
    pub change: Option<(bool, bool)>,
}

impl Query {
    /// A plain Binding request.
    pub fn plain(server: SocketAddr) -> Self {
        Self {
            server,
            change: None,
        }
    }
}

/// A fresh Binding request with a random transaction id.
pub fn binding_request(change: Option<(bool, bool)>) -> Message {
    binding::request(TransactionId(rand::random()), change)
}

/// Sends every query at once over `socket` and waits for all answers, each
/// retransmitted per `policy`. With `grace`, the wait also ends `grace(rtt)`
/// after the first answer (rtt being that answer's): servers slower than
/// that are reported as timed out. Returns one result per query, in order,
/// and the number of datagrams sent.
pub async fn query_all(
    socket: &UdpSocket,
    queries: &[Query],
    policy: RetransmitPolicy,
    grace: Option<&(dyn Fn(Duration) -> Duration + Sync)>,
) -> (Vec<Result<BindingResponse, StunError>>, u32) {
    let mut machine = Transactions::new();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(queries.len());
    for query in queries {
        let request = binding_request(query.change);
        ids.push(request.transaction);
        machine.start(started.into_std(), query.server, &request, policy);
    }
    let mut results: Vec<Option<Result<BindingResponse, StunError>>> =
        queries.iter().map(|_| None).collect();
    let mut sent = 0u32;
    let mut stop_at: Option<Instant> = None;
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(transmit) = machine.poll_transmit() {
            sent += 1;
            if let Err(err) = socket.send_to(&transmit.payload, transmit.dst).await {
                tracing::debug!(%err, dst = %transmit.dst, "stun send failed");
            }
        }
        while let Some(event) = machine.poll_event() {
            let (id, result) = match event {
                Event::Response {
                    id,
                    from,
                    message,
                    rtt,
                } => (id, interpret(&message, from, rtt).map_err(StunError::from)),
                Event::TimedOut { id } => {
                    let Some(n) = ids.iter().position(|i| *i == id) else {
                        continue;
                    };
                    (id, Err(StunError::Timeout(queries[n].server)))
                }
            };
            if let (Some(grace), None, Ok(answer)) = (grace, stop_at, &result) {
                stop_at = Some(Instant::now() + grace(answer.rtt));
            }
            if let Some(n) = ids.iter().position(|i| *i == id) {
                results[n] = Some(result);
            }
        }
        if machine.is_idle() || stop_at.is_some_and(|at| Instant::now() >= at) {
            break;
        }
        let Some(wake) = machine.poll_timeout() else {
            break;
        };
        let wake = stop_at.map_or(Instant::from_std(wake), |at| {
            at.min(Instant::from_std(wake))
        });
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    machine.handle_input(Instant::now().into_std(), from, &buf[..n]);
                }
                Err(err) => tracing::debug!(%err, "stun receive error"),
            },
            () = tokio::time::sleep_until(wake) => {
                machine.handle_timeout(Instant::now().into_std());
            }
        }
    }
    let results = results
        .into_iter()
        .zip(queries)
        .map(|(r, q)| r.unwrap_or(Err(StunError::Timeout(q.server))))
        .collect();
    (results, sent)
}

/// One Binding request over UDP.
pub async fn query(
    socket: &UdpSocket,
    query: Query,
    policy: RetransmitPolicy,
) -> (Result<BindingResponse, StunError>, u32) {
    let (mut results, sent) = query_all(socket, &[query], policy, None).await;
    let result = results
        .pop()
        .unwrap_or(Err(StunError::Timeout(query.server)));
    (result, sent)
}

/// One Binding request over TCP from `local` (port 0: any), within
/// `timeout` for connect and answer together. The request goes through
/// [`Transactions`] with a single send (TCP is reliable), so matching and
/// the answer's deadline are the same code as over UDP.
pub async fn query_tcp(
    local: SocketAddr,
    server: SocketAddr,
    timeout: Duration,
) -> Result<BindingResponse, StunError> {
    query_tcp_from(local, server, timeout)
        .await
        .map(|(response, _)| response)
}

/// The same, with the local address the connection had (its port chosen
/// by the OS when `local` named port 0): a mapping is a pair of the two.
pub async fn query_tcp_from(
    local: SocketAddr,
    server: SocketAddr,
    timeout: Duration,
) -> Result<(BindingResponse, SocketAddr), StunError> {
    let deadline = Instant::now() + timeout;
    let connect = async {
        let socket = bind::tcp_socket(local, &BindOptions::shared_port())?;
        socket
            .connect(server)
            .await
            .map_err(|source| StunError::Connect { server, source })
    };
    let mut stream = tokio::time::timeout_at(deadline, connect)
        .await
        .unwrap_or(Err(StunError::Timeout(server)))?;
    let bound = stream.local_addr()?;
    let mut machine = Transactions::new();
    let now = Instant::now();
    let policy = RetransmitPolicy::once(deadline.saturating_duration_since(now));
    machine.start(now.into_std(), server, &binding_request(None), policy);
    while let Some(transmit) = machine.poll_transmit() {
        stream.write_all(&transmit.payload).await?;
    }
    loop {
        if let Some(event) = machine.poll_event() {
            return match event {
                Event::Response {
                    from, message, rtt, ..
                } => Ok((interpret(&message, from, rtt)?, bound)),
                Event::TimedOut { .. } => Err(StunError::Timeout(server)),
            };
        }
        let Some(wake) = machine.poll_timeout() else {
            return Err(StunError::Timeout(server));
        };
        tokio::select! {
            frame = read_frame(&mut stream, server) => {
                let frame = frame?;
                // On one connection to one server, anything but our answer
                // is a broken server.
                if !machine.handle_input(Instant::now().into_std(), server, &frame) {
                    return Err(StunError::Malformed(server));
                }
            }
            () = tokio::time::sleep_until(Instant::from_std(wake)) => {
                machine.handle_timeout(Instant::now().into_std());
            }
        }
    }
}

/// The largest STUN message read over TCP.
const MAX_TCP_MESSAGE: usize = 4096;

/// One STUN message from a TCP stream. Not cancel-safe (a frame may be cut
/// in half); [`query_tcp`] only drops it when it gives up on the stream.
async fn read_frame(stream: &mut TcpStream, server: SocketAddr) -> Result<Vec<u8>, StunError> {
    let mut buf = vec![0u8; 20];
    stream.read_exact(&mut buf).await?;
    let len = match frame_len(&buf) {
        Ok(Some(len)) if len <= MAX_TCP_MESSAGE => len,
        Ok(_) | Err(_) => return Err(StunError::Malformed(server)),
    };
    buf.resize(len, 0);
    stream.read_exact(&mut buf[20..]).await?;
    Ok(buf)
}
