//! The RFC 5780 STUN server's sockets: UDP and TCP on up to two IPs × two
//! ports. Answers come from `p2pd_proto::stun::server::respond`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2pd_proto::stun::message::frame_len;
use p2pd_proto::stun::server::{ServerAddresses, Transport, respond};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bind::{self, BindError, BindOptions};

/// TCP connections served at once; more wait in the listen backlog.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Larger TCP messages end the connection: a Binding request is tiny.
const MAX_TCP_MESSAGE: usize = 4096;
/// A TCP connection is closed after this many requests, or this long, so
/// no client holds a connection slot for ever.
const TCP_MAX_REQUESTS: usize = 100;
const TCP_LIFETIME: Duration = Duration::from_secs(120);

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests answered.
    pub answered: AtomicU64,
    /// Datagrams or messages dropped (not STUN, not a Binding request).
    pub dropped: AtomicU64,
}

/// A running STUN server; dropping it (or [`StunServer::stop`]) stops it.
#[derive(Debug)]
pub struct StunServer {
    addrs: ServerAddresses,
    stats: Arc<ServerStats>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl StunServer {
    /// Binds every socket (UDP and TCP on each address of `addrs`) and
    /// starts answering.
    pub async fn start(addrs: ServerAddresses) -> Result<StunServer, BindError> {
        // SO_REUSEADDR lets a restarted server take its TCP ports out of
        // TIME_WAIT; UDP sockets never get it, so no other socket can share
        // (and steal) their datagrams.
        let tcp_options = BindOptions {
            reuse_address: true,
            ..BindOptions::default()
        };
        let mut udp = HashMap::new();
        let mut tcp = Vec::new();
        for addr in addrs.sockets() {
            udp.insert(addr, Arc::new(bind::udp(addr, &BindOptions::default())?));
            tcp.push(bind::tcp_listener(addr, &tcp_options)?);
        }
        let stats = Arc::new(ServerStats::default());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let udp = Arc::new(udp);
        for on in udp.keys().copied() {
            tasks.spawn(serve_udp(
                on,
                udp.clone(),
                addrs,
                stats.clone(),
                stop.clone(),
            ));
        }
        let permits = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        for listener in tcp {
            tasks.spawn(serve_tcp(
                listener,
                addrs,
                stats.clone(),
                stop.clone(),
                permits.clone(),
            ));
        }
        tracing::info!(primary = %addrs.primary, alternate = ?addrs.alternate, "stun server up");
        Ok(StunServer {
            addrs,
            stats,
            stop,
            tasks,
        })
    }

    /// The addresses served.
    pub fn addresses(&self) -> ServerAddresses {
        self.addrs
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.stats.answered.load(Ordering::Relaxed)
    }

    /// Inputs dropped so far.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Stops serving and frees every socket.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_udp(
    on: SocketAddr,
    sockets: Arc<HashMap<SocketAddr, Arc<UdpSocket>>>,
    addrs: ServerAddresses,
    stats: Arc<ServerStats>,
    stop: CancellationToken,
) {
    let Some(socket) = sockets.get(&on).cloned() else {
        return;
    };
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, client) = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(got) => got,
                Err(err) => {
                    tracing::debug!(%err, %on, "stun receive error");
                    continue;
                }
            },
        };
        let Some(reply) = respond(&addrs, Transport::Udp, on, client, &buf[..n]) else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let out = sockets.get(&reply.src).unwrap_or(&socket);
        match out.send_to(&reply.payload, reply.dst).await {
            Ok(_) => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => tracing::debug!(%err, to = %reply.dst, "stun send failed"),
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    addrs: ServerAddresses,
    stats: Arc<ServerStats>,
    stop: CancellationToken,
    permits: Arc<Semaphore>,
) {
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, client)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (addrs, stats, stop) = (addrs, stats.clone(), stop.clone());
        connections.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = serve_connection(stream, client, addrs, stats) => {}
                () = tokio::time::sleep(TCP_LIFETIME) => {}
            }
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

async fn serve_connection(
    mut stream: TcpStream,
    client: SocketAddr,
    addrs: ServerAddresses,
    stats: Arc<ServerStats>,
) {
    let Ok(on) = stream.local_addr() else {
        return;
    };
    let mut buf = Vec::with_capacity(64);
    for _ in 0..TCP_MAX_REQUESTS {
        buf.resize(20, 0);
        let header = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await;
        if !matches!(header, Ok(Ok(_))) {
            return;
        }
        let len = match frame_len(&buf) {
            Ok(Some(len)) if len <= MAX_TCP_MESSAGE => len,
            _ => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        buf.resize(len, 0);
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[20..])).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = respond(&addrs, Transport::Tcp, on, client, &buf) else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // A client that does not read its answers is not waited for.
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.write_all(&reply.payload)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        stats.answered.fetch_add(1, Ordering::Relaxed);
    }
}
