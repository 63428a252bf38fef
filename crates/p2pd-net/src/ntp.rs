//! SNTP over UDP: the driver of `p2pd_proto::ntp::Query` (several servers
//! asked at once), and a small SNTP responder for labs and tests
//! (`p2pd ntp-server`) that reads the host clock and never sets it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2pd_proto::ntp::{Estimate, Query, answer, packet};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::bind::{self, BindOptions};
use crate::wall_clock;

/// Asks `servers` at once, for at most `limit`, on this machine's clock:
/// what their answers agree on, or `None` when no server answered usably
/// (the answers not used are logged, with why).
pub async fn query(servers: &[SocketAddr], limit: Duration) -> io::Result<Option<Estimate>> {
    query_on_clock(servers, limit, wall_clock::unix_nanos()).await
}

/// The same, with the local wall clock reading `wall` (Unix nanoseconds)
/// now: a test skews the client by starting it off.
async fn query_on_clock(
    servers: &[SocketAddr],
    limit: Duration,
    wall: i128,
) -> io::Result<Option<Estimate>> {
    // One socket per family asked; an IPv6 one takes no IPv4-mapped
    // traffic, so every answer comes from the address it was sent to.
    let socket_for = |any: SocketAddr| -> io::Result<Option<UdpSocket>> {
        if !servers.iter().any(|s| s.is_ipv4() == any.is_ipv4()) {
            return Ok(None);
        }
        bind::udp(any, &BindOptions::default())
            .map(Some)
            .map_err(io::Error::other)
    };
    let v4 = socket_for(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    let v6 = socket_for(SocketAddr::from(([0u16; 8], 0)))?;
    let nonces: Vec<u64> = servers.iter().map(|_| rand::random()).collect();
    let mut query = Query::new(
        servers,
        &nonces,
        tokio::time::Instant::now().into_std(),
        wall,
        limit,
    );
    let mut buf4 = [0u8; 512];
    let mut buf6 = [0u8; 512];
    loop {
        while let Some(t) = query.poll_transmit() {
            let socket = if t.dst.is_ipv4() { &v4 } else { &v6 };
            if let Some(socket) = socket
                && let Err(err) = socket.send_to(&t.payload, t.dst).await
            {
                // One unreachable server must not stop the others.
                tracing::debug!(server = %t.dst, %err, "ntp request not sent");
            }
        }
        let Some(next) = query.poll_timeout() else {
            break;
        };
        let next = tokio::time::Instant::from_std(next);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                query.handle_timeout(tokio::time::Instant::now().into_std());
            }
            got = recv(&v4, &mut buf4) => if let Ok((n, from)) = got {
                query.handle_input(tokio::time::Instant::now().into_std(), from, &buf4[..n]);
            },
            got = recv(&v6, &mut buf6) => if let Ok((n, from)) = got {
                query.handle_input(tokio::time::Instant::now().into_std(), from, &buf6[..n]);
            },
        }
    }
    for (server, why) in query.rejected() {
        tracing::debug!(%server, ?why, "ntp answer not used");
    }
    Ok(query.estimate())
}

async fn recv(socket: &Option<UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// A running SNTP responder; dropping it (or [`NtpServer::stop`]) stops it.
#[derive(Debug)]
pub struct NtpServer {
    local: SocketAddr,
    answered: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl NtpServer {
    /// Answers on `listen` with the host clock plus `offset_ns` (a lab
    /// server that runs fast or slow without touching the host clock).
    pub async fn start(listen: SocketAddr, offset_ns: i64) -> io::Result<NtpServer> {
        let socket = UdpSocket::bind(listen).await?;
        let local = socket.local_addr()?;
        let answered = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(socket, offset_ns, answered.clone(), stop.clone()));
        Ok(NtpServer {
            local,
            answered,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Stops answering; returns once the socket is closed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(
    socket: UdpSocket,
    offset_ns: i64,
    answered: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut buf = [0u8; 512];
    loop {
        let got = tokio::select! {
            () = stop.cancelled() => return,
            got = socket.recv_from(&mut buf) => got,
        };
        // An ICMP error reported on the socket is not the end of it.
        let Ok((n, from)) = got else { continue };
        let wall = wall_clock::unix_nanos() + i128::from(offset_ns);
        let Some(reply) = answer(&buf[..n], wall) else {
            continue;
        };
        debug_assert_eq!(reply.len(), packet::LEN);
        if socket.send_to(&reply, from).await.is_ok() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_skewed_clock_and_a_fast_server_on_loopback() {
        let honest = NtpServer::start("127.0.0.1:0".parse().expect("lit"), 0)
            .await
            .expect("server");
        let fast = NtpServer::start("127.0.0.1:0".parse().expect("lit"), 500_000_000)
            .await
            .expect("server");
        let limit = Duration::from_secs(3);

        // A client whose clock is 2 s behind learns +2 s.
        let behind = wall_clock::unix_nanos() - 2_000_000_000;
        let e = query_on_clock(&[honest.local_addr()], limit, behind)
            .await
            .expect("query")
            .expect("an answer");
        assert!((e.offset_ns - 2_000_000_000).abs() < 20_000_000, "{e:?}");

        // A server running 0.5 s fast is seen as such.
        let e = query(&[fast.local_addr()], limit)
            .await
            .expect("query")
            .expect("an answer");
        assert!((e.offset_ns - 500_000_000).abs() < 20_000_000, "{e:?}");
        assert_eq!((honest.answered(), fast.answered()), (1, 1));
        honest.stop().await;
        fast.stop().await;
    }
}
