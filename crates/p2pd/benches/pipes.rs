//! Pipes against raw tokio, side by side in one process, on loopback.
//!
//! Prints one line per figure: `ratio <measure> <value>` (p2pd's rate over raw
//! tokio's, higher is better, 1.0 = as fast as raw) and `value <measure> <n>`.
//! Lines starting with `#` explain. Run with `cargo bench --bench pipes` (in
//! the p2pd package, the workspace's default member, so the command works
//! from the root).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use p2pd_net::handshake::{self, Acceptor, Asking};
use p2pd_net::pipe::{Pipe, PipeConfig, Protocol, SubKey};
use p2pd_proto::signal::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::{Handle, Runtime};
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
const RUNS: usize = 5;
/// A measure that makes no progress for this long gives up (and says so)
/// instead of hanging the run.
const STALLED: Duration = Duration::from_secs(5);

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, and a measurement is not a test.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|arg| arg == "--bench") {
        println!("# not measuring: run `cargo bench --bench pipes`");
        return;
    }
    // Other arguments name the measures to run (all by default), so one can
    // be profiled alone: `cargo bench --bench pipes -- tcp_rtt`.
    let only: Vec<String> = args
        .into_iter()
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let wanted = move |measure: &str| only.is_empty() || only.iter().any(|o| o == measure);
    let runtimes = (runtime(2), runtime(1), runtime(1));
    let (runtime, near, far) = match runtimes {
        (Ok(main), Ok(near), Ok(far)) => (main, near, far),
        (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
            println!("# not measuring: no tokio runtime: {err}");
            return;
        }
    };
    let apart = Apart {
        near: near.handle().clone(),
        far: far.handle().clone(),
    };
    // The measures run in a task on the runtime's workers, as the daemon's
    // code does: the thread of `block_on` is no worker, and every wake into
    // it is a futex wake that varies with the machine's scheduler far more
    // than anything measured here.
    let measured = runtime.block_on(runtime.spawn(async move {
        println!("# p2pd pipes vs raw tokio on 127.0.0.1, best of {RUNS} runs each");
        if wanted("tcp_bulk") {
            let (raw, pipe) = best(
                || apart.run(tcp_bulk_raw),
                || apart.run(|far| tcp_bulk(far, false)),
            )
            .await;
            report("tcp_bulk", "MB/s", &raw, &pipe);
        }
        if wanted("tcp_rtt") {
            let (raw, pipe) = best(tcp_rtt_raw, tcp_rtt_pipe).await;
            report("tcp_rtt", "round trips/s", &raw, &pipe);
            report_raw_rate("raw_tcp_rtt_per_s", &raw);
        }
        if wanted("tcp_bulk_encrypted") {
            let (plain, sealed) = best(
                || apart.run(|far| tcp_bulk(far, false)),
                || apart.run(|far| tcp_bulk(far, true)),
            )
            .await;
            report_vs("tcp_bulk_encrypted", "MB/s", "plain pipe", &plain, &sealed);
        }
        if wanted("tcp_rtt_encrypted") {
            let (plain, sealed) = best(tcp_rtt_pipe, tcp_rtt_encrypted).await;
            report_vs(
                "tcp_rtt_encrypted",
                "round trips/s",
                "plain pipe",
                &plain,
                &sealed,
            );
        }
        if wanted("udp_bulk") {
            let (raw, pipe) = best(udp_bulk_raw, udp_bulk_pipe).await;
            report("udp_bulk", "MB/s", &raw, &pipe);
        }
        if wanted("udp_rtt") {
            let (raw, pipe) = best(|| udp_rtt_raw(false), udp_rtt_pipe).await;
            report("udp_rtt", "round trips/s", &raw, &pipe);
            report_raw_rate("raw_udp_rtt_per_s", &raw);
            let connected = best_alone(|| udp_rtt_raw(true)).await;
            report_raw_rate("raw_udp_rtt_connected_per_s", &connected);
        }
        if wanted("idle") {
            idle_pipes().await;
        }
    }));
    if let Err(err) = measured {
        println!("# the measures stopped: {err}");
        std::process::exit(1);
    }
}

/// A measure's rate, or why the environment did not let it run (no free
/// port, no descriptor, ...): reported, never a panic.
type Measured = Result<f64, String>;

fn runtime(workers: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Two one-worker runtimes for the two ends of a bulk transfer, as two
/// processes would be: each end has a core. On one shared runtime tokio
/// runs both ends on one worker most of the time (a task woken by the
/// socket it waits on goes to the waking worker's next slot), and then
/// the loopback copies stay in that core's cache: plain transfers ran
/// either about 3.5 or about 8.5 GB/s, run to run, depending on where the
/// tasks landed, and any extra work per byte (such as a cipher) counted
/// twice over, both ends sharing the core.
struct Apart {
    near: Handle,
    far: Handle,
}

impl Apart {
    /// Runs `measure` on the near runtime (where it sends from), giving it
    /// the far runtime to receive on.
    async fn run<F, Fut>(&self, measure: F) -> Measured
    where
        F: FnOnce(Handle) -> Fut,
        Fut: std::future::Future<Output = Measured> + Send + 'static,
    {
        self.near
            .spawn(measure(self.far.clone()))
            .await
            .map_err(because("measure task"))?
    }
}

/// An error as the reason a measure could not run.
fn because<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{what}: {err}")
}

/// Runs raw and p2pd alternately, [`RUNS`] times each, and keeps the best
/// rate of each (the run least disturbed by the rest of the machine).
async fn best<R, RF, P, PF>(raw: R, pipe: P) -> (Measured, Measured)
where
    R: Fn() -> RF,
    RF: std::future::Future<Output = Measured>,
    P: Fn() -> PF,
    PF: std::future::Future<Output = Measured>,
{
    let (mut best_raw, mut best_pipe) = (Err(String::new()), Err(String::new()));
    for _ in 0..RUNS {
        best_raw = keep(best_raw, raw().await);
        best_pipe = keep(best_pipe, pipe().await);
    }
    (best_raw, best_pipe)
}

/// The best of [`RUNS`] runs of a measure that has no counterpart.
async fn best_alone<M, MF>(measure: M) -> Measured
where
    M: Fn() -> MF,
    MF: std::future::Future<Output = Measured>,
{
    let mut best = Err(String::new());
    for _ in 0..RUNS {
        best = keep(best, measure().await);
    }
    best
}

/// The better of two runs; a run that failed counts only if none
/// succeeded.
fn keep(best: Measured, run: Measured) -> Measured {
    match (best, run) {
        (Ok(a), Ok(b)) => Ok(a.max(b)),
        (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
        (Err(_), Err(err)) => Err(err),
    }
}

fn report(measure: &str, unit: &str, raw: &Measured, pipe: &Measured) {
    report_vs(measure, unit, "raw tokio", raw, pipe);
}

/// Prints `measured` against `baseline` (named `base`).
fn report_vs(measure: &str, unit: &str, base: &str, baseline: &Measured, measured: &Measured) {
    match (baseline, measured) {
        (Ok(baseline), Ok(measured)) => {
            println!("# {measure}: {base} {baseline:.0} {unit}, p2pd {measured:.0} {unit}");
            println!("ratio {measure} {:.3}", measured / baseline);
        }
        (Err(err), _) => println!("# ratio {measure} not measured: {base} failed: {err}"),
        (_, Err(err)) => println!("# ratio {measure} not measured: p2pd failed: {err}"),
    }
}

/// The machine's own round-trip rate, so ratios from different machines can
/// be read side by side: per-message overhead weighs more where the
/// loopback is fast.
fn report_raw_rate(name: &str, raw: &Measured) {
    if let Ok(rate) = raw {
        println!("value {name} {rate:.0}");
    }
}

/// Ends a measure's pipes: the client, if it connected, and the server.
async fn close<E>(client: Result<Pipe, E>, server: &Pipe) {
    if let Ok(client) = client {
        client.close().await;
    }
    server.close().await;
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// Raw tokio: a reader on `far`, the writer here.
async fn tcp_bulk_raw(far: Handle) -> Measured {
    let (bound, listening) = tokio::sync::oneshot::channel();
    let reader = far.spawn(async move {
        let listener = TcpListener::bind(LOOPBACK).await.map_err(because("bind"));
        let addr = listener
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|l| l.local_addr().map_err(because("addr")));
        let _ = bound.send(addr);
        let (mut sock, _) = listener?.accept().await.map_err(because("accept"))?;
        sock.set_nodelay(true).map_err(because("nodelay"))?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < BULK_BYTES {
            match sock.read(&mut buf).await.map_err(because("read"))? {
                0 => return Err("read: early end of stream".to_owned()),
                n => got += n as u64,
            }
        }
        Ok(())
    });
    let addr = listening.await.map_err(because("listener"))??;
    let mut sock = TcpStream::connect(addr).await.map_err(because("connect"))?;
    sock.set_nodelay(true).map_err(because("nodelay"))?;
    let chunk = vec![1u8; CHUNK];
    let started = Instant::now();
    for _ in 0..BULK_BYTES / CHUNK as u64 {
        sock.write_all(&chunk).await.map_err(because("write"))?;
    }
    reader.await.map_err(because("reader"))??;
    Ok(mb_per_s(BULK_BYTES, started.elapsed()))
}

/// A TCP server pipe; with `encrypted`, it greets every connection with
/// the node handshake and asks for encryption.
async fn tcp_server(config: &PipeConfig, encrypted: bool) -> Result<Pipe, String> {
    let server = Pipe::listen(Protocol::Tcp, LOOPBACK, config)
        .await
        .map_err(because("listen"))?;
    if encrypted {
        let acceptor = Acceptor::new(Identity::from_secret([2; 32]), true, STALLED);
        server.set_greeter(Arc::new(acceptor).greeter());
    }
    Ok(server)
}

/// A client of `server`: with `encrypted`, through the node handshake.
async fn tcp_client(server: &Pipe, config: &PipeConfig, encrypted: bool) -> Result<Pipe, String> {
    if !encrypted {
        return Pipe::connect(Protocol::Tcp, server.local_addr(), None, config)
            .await
            .map_err(because("connect"));
    }
    let asking = Asking {
        encrypt: true,
        token: None,
        limit: STALLED,
    };
    let me = Identity::from_secret([1; 32]);
    let peer = Identity::from_secret([2; 32]).id();
    handshake::dial(
        server.local_addr(),
        None,
        config,
        (&me, &peer),
        asking,
        None,
    )
    .await
    .map_err(because("handshake"))
}

/// Pipes: the server pipe (its connections read, and callbacks run) on
/// `far`, the client sending here.
async fn tcp_bulk(far: Handle, encrypted: bool) -> Measured {
    let config = PipeConfig::default();
    let on_far = config.clone();
    let server = far
        .spawn(async move { tcp_server(&on_far, encrypted).await })
        .await
        .map_err(because("server task"))??;
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
    let client = tcp_client(&server, &config, encrypted).await;
    let rate = async {
        let client = client.as_ref().map_err(Clone::clone)?;
        let chunk = vec![1u8; CHUNK];
        let started = Instant::now();
        for _ in 0..BULK_BYTES / CHUNK as u64 {
            client.send(&chunk, None).await.map_err(because("send"))?;
        }
        tokio::time::timeout(STALLED, done.notified())
            .await
            .map_err(because("receive"))?;
        Ok(mb_per_s(BULK_BYTES, started.elapsed()))
    }
    .await;
    close(client, &server).await;
    rate
}

async fn tcp_rtt_raw() -> Measured {
    let listener = TcpListener::bind(LOOPBACK).await.map_err(because("bind"))?;
    let addr = listener.local_addr().map_err(because("addr"))?;
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let _ = sock.set_nodelay(true);
        let mut buf = [0u8; 64];
        while sock.read_exact(&mut buf).await.is_ok() {
            if sock.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut sock = TcpStream::connect(addr).await.map_err(because("connect"))?;
    sock.set_nodelay(true).map_err(because("nodelay"))?;
    let mut buf = [7u8; 64];
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        sock.write_all(&buf).await.map_err(because("write"))?;
        // With the same deadline as the pipe's `recv`: the same work.
        tokio::time::timeout(STALLED, sock.read_exact(&mut buf))
            .await
            .map_err(because("echo"))?
            .map_err(because("read"))?;
    }
    Ok(f64::from(ROUND_TRIPS) / started.elapsed().as_secs_f64())
}

async fn tcp_rtt_pipe() -> Measured {
    rtt_pipe(Protocol::Tcp, false).await
}

async fn tcp_rtt_encrypted() -> Measured {
    rtt_pipe(Protocol::Tcp, true).await
}

async fn rtt_pipe(protocol: Protocol, encrypted: bool) -> Measured {
    let config = PipeConfig::default();
    let server = match protocol {
        Protocol::Tcp => tcp_server(&config, encrypted).await?,
        Protocol::Udp => Pipe::listen(protocol, LOOPBACK, &config)
            .await
            .map_err(because("listen"))?,
    };
    server.add_msg_cb(|msg, reply| async move {
        let _ = reply.send(&msg.data, Some(msg.from)).await;
    });
    let client = match protocol {
        Protocol::Tcp => tcp_client(&server, &config, encrypted).await,
        Protocol::Udp => Pipe::connect(protocol, server.local_addr(), None, &config)
            .await
            .map_err(because("connect")),
    };
    let rate = async {
        let client = client.as_ref().map_err(Clone::clone)?;
        let all = SubKey::all();
        client.subscribe(&all).map_err(because("subscribe"))?;
        let msg = [7u8; 64];
        let started = Instant::now();
        for _ in 0..ROUND_TRIPS {
            client.send(&msg, None).await.map_err(because("send"))?;
            client
                .recv(&all, Some(STALLED))
                .await
                .map_err(because("echo"))?;
        }
        Ok(f64::from(ROUND_TRIPS) / started.elapsed().as_secs_f64())
    }
    .await;
    close(client, &server).await;
    rate
}

async fn udp_bulk_raw() -> Measured {
    let receiver = UdpSocket::bind(LOOPBACK).await.map_err(because("bind"))?;
    let addr = receiver.local_addr().map_err(because("addr"))?;
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
    let sender = UdpSocket::bind(LOOPBACK).await.map_err(because("bind"))?;
    let datagram = vec![1u8; DATAGRAM];
    let started = Instant::now();
    for _ in 0..DATAGRAMS {
        sender
            .send_to(&datagram, addr)
            .await
            .map_err(because("send"))?;
    }
    let last = reader.await.map_err(because("reader"))?;
    Ok(mb_per_s(got.load(Ordering::Relaxed), last - started))
}

async fn udp_bulk_pipe() -> Measured {
    let config = PipeConfig::default();
    let server = Pipe::listen(Protocol::Udp, LOOPBACK, &config)
        .await
        .map_err(because("listen"))?;
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
    let client = Pipe::connect(Protocol::Udp, server.local_addr(), None, &config).await;
    let sent: Result<Instant, String> = async {
        let client = client.as_ref().map_err(because("client"))?;
        let datagram = vec![1u8; DATAGRAM];
        let started = Instant::now();
        for _ in 0..DATAGRAMS {
            client
                .send(&datagram, None)
                .await
                .map_err(because("send"))?;
        }
        Ok(started)
    }
    .await;
    let mut seen = u64::MAX;
    while got.load(Ordering::Relaxed) != seen {
        seen = got.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    close(client, &server).await;
    let last = *last.lock().map_err(because("lock"))?;
    Ok(mb_per_s(seen, last - sent?))
}

/// Raw tokio UDP round trips. The client sends with `send_to` and
/// receives with `recv_from`, as a pipe with a default destination does
/// (it takes datagrams from anyone, so its socket is not connected); with
/// `connected`, over a connected socket, which saves the kernel's route
/// lookup per datagram: reported beside the baseline, not as it.
async fn udp_rtt_raw(connected: bool) -> Measured {
    let server = UdpSocket::bind(LOOPBACK).await.map_err(because("bind"))?;
    let addr = server.local_addr().map_err(because("addr"))?;
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            if server.send_to(&buf[..n], from).await.is_err() {
                break;
            }
        }
    });
    let client = UdpSocket::bind(LOOPBACK).await.map_err(because("bind"))?;
    if connected {
        client.connect(addr).await.map_err(because("connect"))?;
    }
    let mut buf = [7u8; 64];
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        if connected {
            client.send(&buf).await.map_err(because("send"))?;
            tokio::time::timeout(STALLED, client.recv(&mut buf))
                .await
                .map_err(because("echo"))?
                .map_err(because("recv"))?;
        } else {
            client.send_to(&buf, addr).await.map_err(because("send"))?;
            tokio::time::timeout(STALLED, client.recv_from(&mut buf))
                .await
                .map_err(because("echo"))?
                .map_err(because("recv"))?;
        }
    }
    Ok(f64::from(ROUND_TRIPS) / started.elapsed().as_secs_f64())
}

async fn udp_rtt_pipe() -> Measured {
    rtt_pipe(Protocol::Udp, false).await
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
///
/// Every connection is reset on close (linger 0) rather than left in
/// TIME_WAIT: tens of thousands of those would hold the loopback's
/// ephemeral ports for a minute, and the next run could not connect.
async fn idle_pipes() {
    let n = raise_fd_limit(2 * IDLE_PIPES as u64 + 200).map_or(IDLE_PIPES, |limit| {
        IDLE_PIPES.min((limit.saturating_sub(200) / 2) as usize)
    });
    if n < IDLE_PIPES {
        println!("# only {n} idle connections: the descriptor limit is too low for {IDLE_PIPES}");
    }
    let raw = idle_raw(n).await;
    let pipe = idle_pipe(n).await;
    match (raw, pipe) {
        (Ok((raw_n, raw_bytes)), Ok((pipe_n, pipe_bytes))) => {
            println!(
                "# idle TCP connections, both ends in this process: raw tokio {raw_bytes} B ({raw_n} connections), p2pd pipes {pipe_bytes} B ({pipe_n} connections) of resident memory per connection"
            );
            println!("value idle_pipe_bytes {pipe_bytes}");
        }
        (Err(err), _) => println!("# value idle_pipe_bytes not measured: raw tokio failed: {err}"),
        (_, Err(err)) => println!("# value idle_pipe_bytes not measured: p2pd pipes failed: {err}"),
    }
}

/// Connects until `n` are open or connecting keeps failing; how many opened
/// and the resident memory each costs.
type Idle = Result<(usize, u64), String>;

async fn idle_raw(n: usize) -> Idle {
    let before = rss_bytes();
    let listener = TcpListener::bind(LOOPBACK).await.map_err(because("bind"))?;
    let addr = listener.local_addr().map_err(because("addr"))?;
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel::<usize>();
    let accept = tokio::spawn(async move {
        let mut held = Vec::with_capacity(n);
        let mut opened = opened_rx;
        let mut wanted = None;
        while held.len() < wanted.unwrap_or(n) {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        held.push(stream);
                    }
                }
                count = &mut opened, if wanted.is_none() => wanted = Some(count.unwrap_or(0)),
            }
        }
        held
    });
    let mut clients = Vec::with_capacity(n);
    let mut failure = None;
    while clients.len() < n {
        match retry(|| TcpStream::connect(addr)).await {
            Ok(stream) => {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                clients.push(stream);
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let _ = opened_tx.send(clients.len());
    let servers = tokio::time::timeout(STALLED, accept)
        .await
        .map_err(because("accept"))?
        .map_err(because("accept task"))?;
    let opened = clients.len().min(servers.len());
    report_shortfall("raw tokio", opened, n, failure);
    let per_connection = per_connection(before, opened)?;
    drop(clients);
    drop(servers);
    Ok((opened, per_connection))
}

async fn idle_pipe(n: usize) -> Idle {
    let mut config = PipeConfig::default();
    config.max_clients(n + 1).linger(Some(Duration::ZERO));
    let before = rss_bytes();
    let server = Pipe::listen(Protocol::Tcp, LOOPBACK, &config)
        .await
        .map_err(because("listen"))?;
    let mut clients = Vec::with_capacity(n);
    let mut failure = None;
    while clients.len() < n {
        match retry(|| Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config)).await {
            Ok(client) => clients.push(client),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let deadline = Instant::now() + STALLED;
    while server.clients().len() < clients.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opened = server.clients().len().min(clients.len());
    report_shortfall("p2pd pipes", opened, n, failure);
    let per_connection = per_connection(before, opened);
    for client in clients {
        client.close().await;
    }
    server.close().await;
    Ok((opened, per_connection?))
}

/// Attempts at one connection before the idle measure stops opening more:
/// under load a connect can fail for a moment (a full backlog, descriptors
/// not freed yet) and succeed a little later.
const CONNECT_ATTEMPTS: u32 = 5;

async fn retry<T, E, F, Fut>(connect: F) -> Result<T, E>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match connect().await {
            Err(_) if attempt < CONNECT_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

fn report_shortfall<E: std::fmt::Display>(who: &str, opened: usize, n: usize, why: Option<E>) {
    if opened < n {
        let why = why.map_or_else(|| "not all were accepted".to_owned(), |e| e.to_string());
        println!("# {who}: only {opened} of {n} idle connections opened: {why}");
    }
}

fn per_connection(before: u64, opened: usize) -> Result<u64, String> {
    if opened == 0 {
        return Err("no connection opened".to_owned());
    }
    Ok(rss_bytes().saturating_sub(before) / opened as u64)
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
