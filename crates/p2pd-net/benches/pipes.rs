//! Pipes against raw tokio, side by side in one process, on loopback.
//!
//! Prints one line per figure: `ratio <measure> <value>` (p2pd's rate over raw
//! tokio's, higher is better, 1.0 = as fast as raw) and `value <measure> <n>`.
//! Lines starting with `#` explain. Run with `cargo bench --bench pipes`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use p2pd_net::pipe::{Pipe, PipeConfig, Protocol, SubKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
const BULK_BYTES: u64 = 512 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const ROUND_TRIPS: u32 = 20_000;
const DATAGRAM: usize = 1200;
const DATAGRAMS: u64 = 200_000;
const IDLE_PIPES: usize = 10_000;
/// Each measure runs this many times, alternating raw and p2pd; the best run
/// of each counts (the least disturbed by the rest of the machine).
const RUNS: usize = 3;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, and a measurement is not a test.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("# not measuring: run `cargo bench --bench pipes`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("# p2pd pipes vs raw tokio on 127.0.0.1, best of {RUNS} runs each");
        report(
            "tcp_bulk",
            "MB/s",
            best(tcp_bulk_raw).await,
            best(tcp_bulk_pipe).await,
        );
        report(
            "tcp_rtt",
            "round trips/s",
            best(tcp_rtt_raw).await,
            best(tcp_rtt_pipe).await,
        );
        report(
            "udp_bulk",
            "MB/s",
            best(udp_bulk_raw).await,
            best(udp_bulk_pipe).await,
        );
        report(
            "udp_rtt",
            "round trips/s",
            best(udp_rtt_raw).await,
            best(udp_rtt_pipe).await,
        );
        idle_pipes().await;
    });
}

async fn best<F, Fut>(measure: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut best = 0.0f64;
    for _ in 0..RUNS {
        best = best.max(measure().await);
    }
    best
}

fn report(measure: &str, unit: &str, raw: f64, pipe: f64) {
    println!("# {measure}: raw tokio {raw:.0} {unit}, p2pd pipe {pipe:.0} {unit}");
    println!("ratio {measure} {:.3}", pipe / raw);
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

async fn tcp_bulk_raw() -> f64 {
    let listener = TcpListener::bind(LOOPBACK).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        sock.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < BULK_BYTES {
            let n = sock.read(&mut buf).await.expect("read");
            assert!(n > 0, "early eof");
            got += n as u64;
        }
    });
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let chunk = vec![1u8; CHUNK];
    let started = Instant::now();
    for _ in 0..BULK_BYTES / CHUNK as u64 {
        sock.write_all(&chunk).await.expect("write");
    }
    reader.await.expect("reader");
    mb_per_s(BULK_BYTES, started.elapsed())
}

async fn tcp_bulk_pipe() -> f64 {
    let config = PipeConfig::default();
    let server = Pipe::listen(Protocol::Tcp, LOOPBACK, &config)
        .await
        .expect("listen");
    let got = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (g, d) = (got.clone(), done.clone());
    server.add_msg_cb(move |msg, _| {
        if g.fetch_add(msg.data.len() as u64, Ordering::Relaxed) + msg.data.len() as u64
            >= BULK_BYTES
        {
            d.notify_one();
        }
        async {}
    });
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config)
        .await
        .expect("connect");
    let chunk = vec![1u8; CHUNK];
    let started = Instant::now();
    for _ in 0..BULK_BYTES / CHUNK as u64 {
        client.send(&chunk, None).await.expect("send");
    }
    done.notified().await;
    let rate = mb_per_s(BULK_BYTES, started.elapsed());
    client.close().await;
    server.close().await;
    rate
}

async fn tcp_rtt_raw() -> f64 {
    let listener = TcpListener::bind(LOOPBACK).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        sock.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 64];
        while sock.read_exact(&mut buf).await.is_ok() {
            if sock.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let mut buf = [7u8; 64];
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        sock.write_all(&buf).await.expect("write");
        sock.read_exact(&mut buf).await.expect("read");
    }
    f64::from(ROUND_TRIPS) / started.elapsed().as_secs_f64()
}

async fn tcp_rtt_pipe() -> f64 {
    rtt_pipe(Protocol::Tcp).await
}

async fn rtt_pipe(protocol: Protocol) -> f64 {
    let config = PipeConfig::default();
    let server = Pipe::listen(protocol, LOOPBACK, &config)
        .await
        .expect("listen");
    server.add_msg_cb(|msg, reply| async move {
        let _ = reply.send(&msg.data, Some(msg.from)).await;
    });
    let client = Pipe::connect(protocol, server.local_addr(), None, &config)
        .await
        .expect("connect");
    let all = SubKey::all();
    client.subscribe(&all).expect("subscribe");
    let msg = [7u8; 64];
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        client.send(&msg, None).await.expect("send");
        client
            .recv(&all, Some(Duration::from_secs(5)))
            .await
            .expect("echo");
    }
    let rate = f64::from(ROUND_TRIPS) / started.elapsed().as_secs_f64();
    client.close().await;
    server.close().await;
    rate
}

async fn udp_bulk_raw() -> f64 {
    let receiver = UdpSocket::bind(LOOPBACK).await.expect("bind");
    let addr = receiver.local_addr().expect("addr");
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut last = Instant::now();
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), receiver.recv(&mut buf)).await
        {
            g.fetch_add(n as u64, Ordering::Relaxed);
            last = Instant::now();
        }
        last
    });
    let sender = UdpSocket::bind(LOOPBACK).await.expect("bind");
    let datagram = vec![1u8; DATAGRAM];
    let started = Instant::now();
    for _ in 0..DATAGRAMS {
        sender.send_to(&datagram, addr).await.expect("send");
    }
    let last = reader.await.expect("reader");
    mb_per_s(got.load(Ordering::Relaxed), last - started)
}

async fn udp_bulk_pipe() -> f64 {
    let config = PipeConfig::default();
    let server = Pipe::listen(Protocol::Udp, LOOPBACK, &config)
        .await
        .expect("listen");
    let got = Arc::new(AtomicU64::new(0));
    let last = Arc::new(std::sync::Mutex::new(Instant::now()));
    let (g, l) = (got.clone(), last.clone());
    server.add_msg_cb(move |msg, _| {
        g.fetch_add(msg.data.len() as u64, Ordering::Relaxed);
        if let Ok(mut t) = l.lock() {
            *t = Instant::now();
        }
        async {}
    });
    let client = Pipe::connect(Protocol::Udp, server.local_addr(), None, &config)
        .await
        .expect("client");
    let datagram = vec![1u8; DATAGRAM];
    let started = Instant::now();
    for _ in 0..DATAGRAMS {
        client.send(&datagram, None).await.expect("send");
    }
    let mut seen = u64::MAX;
    while got.load(Ordering::Relaxed) != seen {
        seen = got.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = *last.lock().expect("lock");
    client.close().await;
    server.close().await;
    mb_per_s(seen, last - started)
}

async fn udp_rtt_raw() -> f64 {
    let server = UdpSocket::bind(LOOPBACK).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            if server.send_to(&buf[..n], from).await.is_err() {
                break;
            }
        }
    });
    let client = UdpSocket::bind(LOOPBACK).await.expect("bind");
    client.connect(addr).await.expect("connect");
    let mut buf = [7u8; 64];
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        client.send(&buf).await.expect("send");
        client.recv(&mut buf).await.expect("recv");
    }
    f64::from(ROUND_TRIPS) / started.elapsed().as_secs_f64()
}

async fn udp_rtt_pipe() -> f64 {
    rtt_pipe(Protocol::Udp).await
}

/// Resident memory of this process, from /proc.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Holds `n` idle connections open: p2pd pipes (both ends) or raw tokio
/// streams, and reports resident memory per connection.
async fn idle_pipes() {
    let n = raise_fd_limit(2 * IDLE_PIPES as u64 + 200).map_or(IDLE_PIPES, |limit| {
        IDLE_PIPES.min((limit.saturating_sub(200) / 2) as usize)
    });
    if n < IDLE_PIPES {
        println!("# only {n} idle connections: the descriptor limit is too low for {IDLE_PIPES}");
    }

    let before = rss_bytes();
    let listener = TcpListener::bind(LOOPBACK).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(listener.accept().await.expect("accept").0);
        }
        held
    });
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        raw.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let raw_server = accept.await.expect("accept task");
    let raw_bytes = rss_bytes().saturating_sub(before) / n as u64;
    drop(raw);
    drop(raw_server);

    let mut config = PipeConfig::default();
    config.max_clients(n + 1);
    let before = rss_bytes();
    let server = Pipe::listen(Protocol::Tcp, LOOPBACK, &config)
        .await
        .expect("listen");
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(
            Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config)
                .await
                .expect("connect"),
        );
    }
    while server.clients().len() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pipe_bytes = rss_bytes().saturating_sub(before) / n as u64;
    println!(
        "# {n} idle TCP connections, both ends in this process: raw tokio {raw_bytes} B, p2pd pipes {pipe_bytes} B of resident memory per connection"
    );
    println!("value idle_pipe_bytes {pipe_bytes}");
    for client in clients {
        client.close().await;
    }
    server.close().await;
}

/// Raises the open-file limit towards `wanted`; returns the limit in force.
fn raise_fd_limit(wanted: u64) -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= wanted {
        return Some(soft);
    }
    // Root may raise the hard limit too; others stop at it.
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted.max(hard)).is_ok() {
        return Some(wanted);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    Some(hard)
}
