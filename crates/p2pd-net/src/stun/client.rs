//! Binding requests over UDP and TCP.

use std::net::SocketAddr;
use std::time::Duration;

use p2pd_proto::stun::attribute::Attribute;
use p2pd_proto::stun::message::frame_len;
use p2pd_proto::stun::transaction::{Event, RetransmitPolicy, Transactions};
use p2pd_proto::stun::{BINDING, Class, Message, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::bind::{self, BindOptions};

/// A successful Binding response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingResponse {
    /// Our address as the server saw it.
    pub mapped: SocketAddr,
    /// The server's OTHER-ADDRESS (or classic CHANGED-ADDRESS).
    pub other: Option<SocketAddr>,
    /// Where the response came from.
    pub from: SocketAddr,
    /// From the first send to the response.
    pub rtt: Duration,
}

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
    let mut request = Message::new(Class::Request, BINDING, TransactionId(rand::random()));
    if let Some((ip, port)) = change {
        request
            .attributes
            .push(Attribute::ChangeRequest { ip, port });
    }
    request
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
                } => (id, interpret(&message, from, rtt)),
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
/// `timeout` for connect and answer together.
pub async fn query_tcp(
    local: SocketAddr,
    server: SocketAddr,
    timeout: Duration,
) -> Result<BindingResponse, StunError> {
    let exchange = async {
        let socket = bind::tcp_socket(local, &BindOptions::shared_port())?;
        let started = Instant::now();
        let mut stream = socket
            .connect(server)
            .await
            .map_err(|source| StunError::Connect { server, source })?;
        let request = binding_request(None);
        stream.write_all(&request.encode()).await?;
        let mut buf = vec![0u8; 20];
        stream.read_exact(&mut buf).await?;
        let len = match frame_len(&buf) {
            Ok(Some(len)) if len <= MAX_TCP_MESSAGE => len,
            _ => return Err(StunError::Malformed(server)),
        };
        buf.resize(len, 0);
        stream.read_exact(&mut buf[20..]).await?;
        let message = Message::decode(&buf).map_err(|_| StunError::Malformed(server))?;
        if message.transaction != request.transaction {
            return Err(StunError::Malformed(server));
        }
        interpret(&message, server, started.elapsed())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(StunError::Timeout(server)))
}

/// The largest STUN message read over TCP.
const MAX_TCP_MESSAGE: usize = 4096;

fn interpret(
    message: &Message,
    from: SocketAddr,
    rtt: Duration,
) -> Result<BindingResponse, StunError> {
    if message.class == Class::Error {
        let code = message
            .attributes
            .iter()
            .find_map(|a| match a {
                Attribute::ErrorCode { code, .. } => Some(*code),
                _ => None,
            })
            .unwrap_or(0);
        return Err(StunError::ErrorResponse { server: from, code });
    }
    let mapped = message
        .mapped_address()
        .ok_or(StunError::NoMappedAddress(from))?;
    Ok(BindingResponse {
        mapped,
        other: message.other_address(),
        from,
        rtt,
    })
}
