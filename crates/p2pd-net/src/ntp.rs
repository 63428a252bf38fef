//! SNTP over UDP: the driver of `p2pd_proto::ntp::Query` (several servers
//! asked at once), and a small SNTP responder for labs and tests
//! (`p2pd ntp-server`) that reads the host clock and never sets it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2pd_proto::ntp::{Estimate, Query, Rejected, answer, packet};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::wall_clock;

/// What asking the servers gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What the answers agree on; `None` when no server answered usably.
    pub estimate: Option<Estimate>,
    /// Answers that were not used, and why.
    pub rejected: Vec<(SocketAddr, Rejected)>,
}

/// Asks `servers` at once, for at most `limit`, on this machine's clock.
pub async fn query(servers: &[SocketAddr], limit: Duration) -> io::Result<Report> {
    query_on_clock(servers, limit, wall_clock::unix_nanos()).await
}

/// The same, with the local wall clock reading `wall` (Unix nanoseconds)
/// now: a test skews one peer by starting it off.
pub async fn query_on_clock(
    servers: &[SocketAddr],
    limit: Duration,
    wall: i128,
) -> io::Result<Report> {
    let v4 = if servers.iter().any(SocketAddr::is_ipv4) {
        Some(UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?)
    } else {
        None
    };
    let v6 = if servers.iter().any(SocketAddr::is_ipv6) {
        Some(UdpSocket::bind(SocketAddr::from(([0u16; 8], 0))).await?)
    } else {
        None
    };
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
                query.handle_input(tokio::time::Instant::now().into_std(), canonical(from), &buf6[..n]);
            },
        }
    }
    Ok(Report {
        estimate: query.estimate(),
        rejected: query.rejected().to_vec(),
    })
}

async fn recv(socket: &Option<UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// An IPv4-mapped sender as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
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
        let report = query_on_clock(&[honest.local_addr()], limit, behind)
            .await
            .expect("query");
        let e = report.estimate.expect("an answer");
        assert!((e.offset_ns - 2_000_000_000).abs() < 20_000_000, "{e:?}");

        // A server running 0.5 s fast is seen as such.
        let report = query(&[fast.local_addr()], limit).await.expect("query");
        let e = report.estimate.expect("an answer");
        assert!((e.offset_ns - 500_000_000).abs() < 20_000_000, "{e:?}");
        assert_eq!((honest.answered(), fast.answered()), (1, 1));
        honest.stop().await;
        fast.stop().await;
    }
}
