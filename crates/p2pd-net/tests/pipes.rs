//! Pipes over real loopback sockets: echo, subscriptions, queues, ends,
//! duplicates, forwarding, byte streams and daemons.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use p2pd_net::daemon::{AddressFamily, Daemon, Ports, Target};
use p2pd_net::pipe::{Pipe, PipeConfig, PipeError, Protocol, RecvError, SubKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));
const V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
const V6: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::LOCALHOST), 0);

fn config() -> PipeConfig {
    PipeConfig::default()
}

/// A server that answers every message with the same bytes.
async fn echo_server(protocol: Protocol, local: SocketAddr) -> Pipe {
    let server = Pipe::listen(protocol, local, &config())
        .await
        .expect("listen");
    server.add_msg_cb(|msg, reply| async move {
        let _ = reply.send(&msg.data, Some(msg.from)).await;
    });
    server
}

/// Polls `fut` once, so a test knows it is waiting (not yet started, not
/// finished) before it acts on what the future waits for.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// Waits for `n` signals on `rx`, at most five seconds.
async fn signals(rx: &mut mpsc::UnboundedReceiver<()>, n: usize, what: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..n {
            rx.recv().await.expect("sender alive");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// A UDP server whose queue takes every message.
async fn subscribed_udp_server() -> Pipe {
    let server = Pipe::listen(Protocol::Udp, V4, &config())
        .await
        .expect("listen");
    server.subscribe(&SubKey::all()).expect("subscribe");
    server
}

async fn has_ipv6() -> bool {
    tokio::net::UdpSocket::bind(V6).await.is_ok()
}

#[tokio::test]
async fn echo_over_tcp_and_udp_on_ipv4_and_ipv6() {
    let mut families = vec![V4];
    if has_ipv6().await {
        families.push(V6);
    } else {
        eprintln!("no IPv6 loopback: IPv6 cases skipped");
    }
    for local in families {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let server = echo_server(protocol, local).await;
            let client = Pipe::connect(protocol, server.local_addr(), Some(local), &config())
                .await
                .expect("connect");
            client.subscribe(&SubKey::all()).expect("subscribe");
            client.send(b"test msg.", None).await.expect("send");

            let got = client.recv(&SubKey::all(), WAIT).await.expect("echo");

            assert_eq!(&got.data[..], b"test msg.", "{protocol} {local}");
            assert_eq!(got.from, server.local_addr());
            client.close().await;
            server.close().await;
        }
    }
}

#[tokio::test]
async fn every_matching_subscription_gets_its_own_copy() {
    let server = Pipe::listen(Protocol::Udp, V4, &config())
        .await
        .expect("listen");
    let meow = SubKey::new("meow", "");
    let from_nobody = SubKey::new("", "^10\\.");
    for key in [SubKey::all(), meow.clone(), from_nobody.clone()] {
        server.subscribe(&key).expect("subscribe");
    }
    let client = Pipe::connect(Protocol::Udp, server.local_addr(), Some(V4), &config())
        .await
        .expect("client");
    client.send(b"meow 1", None).await.expect("send");
    client.send(b"woof", None).await.expect("send");

    let all_1 = server.recv(&SubKey::all(), WAIT).await.expect("first");
    let all_2 = server.recv(&SubKey::all(), WAIT).await.expect("second");
    let only = server.recv(&meow, WAIT).await.expect("meow");

    assert_eq!(
        (&all_1.data[..], &all_2.data[..]),
        (&b"meow 1"[..], &b"woof"[..])
    );
    assert_eq!(&only.data[..], b"meow 1");
    assert_eq!(all_1.from, client.local_addr());
    let short = Some(Duration::from_millis(50));
    assert_eq!(server.recv(&meow, short).await, Err(RecvError::Timeout));
    assert_eq!(
        server.recv(&from_nobody, short).await,
        Err(RecvError::Timeout)
    );
}

#[tokio::test]
async fn recv_reports_timeouts_and_unknown_subscriptions() {
    let server = subscribed_udp_server().await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        server
            .recv(&SubKey::all(), Some(Duration::from_millis(100)))
            .await,
        Err(RecvError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        server.recv(&SubKey::new("x", ""), WAIT).await,
        Err(RecvError::NoSubscription)
    );
    assert!(server.unsubscribe(&SubKey::all()));
    assert!(!server.unsubscribe(&SubKey::all()));
    assert!(matches!(
        server.subscribe(&SubKey::new("(", "")),
        Err(PipeError::Pattern(_))
    ));
}

/// On paused time: a receive waits exactly its timeout when nothing comes,
/// and returns a message that comes before the timeout at once.
#[tokio::test(start_paused = true)]
async fn recv_timeouts_run_on_virtual_time() {
    let server = subscribed_udp_server().await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        server
            .recv(&SubKey::all(), Some(Duration::from_secs(30)))
            .await,
        Err(RecvError::Timeout)
    );
    assert_eq!(started.elapsed(), Duration::from_secs(30));

    let client = Pipe::connect(Protocol::Udp, server.local_addr(), None, &config())
        .await
        .expect("client");
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        client.send(b"late", None).await.expect("send");
        client
    });
    let started = tokio::time::Instant::now();
    let msg = server
        .recv(&SubKey::all(), Some(Duration::from_secs(30)))
        .await
        .expect("the message comes before the timeout");
    assert_eq!(&msg.data[..], b"late");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
    drop(late.await.expect("sender"));
}

#[tokio::test]
async fn a_flood_keeps_only_the_newest_messages_and_counts_the_rest() {
    let mut cfg = config();
    cfg.max_queue(10);
    let server = Pipe::listen(Protocol::Tcp, V4, &cfg).await.expect("listen");
    server.subscribe(&SubKey::all()).expect("subscribe");
    let ended = Arc::new(tokio::sync::Notify::new());
    let signal = ended.clone();
    server.add_end_cb(move |_| {
        let signal = signal.clone();
        async move { signal.notify_one() }
    });
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("connect");
    let chunk = vec![7u8; 1000];
    for _ in 0..2000 {
        client.send(&chunk, None).await.expect("send");
    }
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), ended.notified())
        .await
        .expect("the connection ends");

    let stats = server.stats();
    let mut kept = 0;
    while server
        .recv(&SubKey::all(), Some(Duration::from_millis(20)))
        .await
        .is_ok()
    {
        kept += 1;
    }
    assert_eq!(kept, 10);
    assert!(stats.received > 10, "{stats:?}");
    assert_eq!(stats.queue_dropped, stats.received - 10);
}

#[tokio::test]
async fn peer_closing_mid_stream_ends_the_pipe_after_its_data() {
    let server = Pipe::listen(Protocol::Tcp, V4, &config())
        .await
        .expect("listen");
    server.subscribe(&SubKey::all()).expect("subscribe");
    let ended = Arc::new(tokio::sync::Notify::new());
    let signal = ended.clone();
    server.add_end_cb(move |_client| {
        let signal = signal.clone();
        async move { signal.notify_one() }
    });
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("connect");
    client.subscribe(&SubKey::all()).expect("subscribe");
    client.send(b"last words", None).await.expect("send");
    client.close().await;

    tokio::time::timeout(Duration::from_secs(5), ended.notified())
        .await
        .expect("end callback");
    let got = server
        .recv(&SubKey::all(), WAIT)
        .await
        .expect("data sent before the close");
    assert_eq!(&got.data[..], b"last words");
    assert!(server.clients().is_empty());
    assert!(client.is_closed());
    assert_eq!(
        client.recv(&SubKey::all(), WAIT).await,
        Err(RecvError::Closed)
    );
    assert!(matches!(
        client.send(b"x", None).await,
        Err(PipeError::Closed)
    ));
}

#[tokio::test]
async fn server_closing_ends_its_clients() {
    let server = echo_server(Protocol::Tcp, V4).await;
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("connect");
    client.subscribe(&SubKey::all()).expect("subscribe");
    client.send(b"hi", None).await.expect("send");
    client.recv(&SubKey::all(), WAIT).await.expect("echo");

    server.close().await;

    tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .expect("client ends");
}

#[tokio::test]
async fn udp_duplicates_are_dropped_when_asked() {
    let mut cfg = config();
    cfg.dedup_window(Some(100));
    let server = Pipe::listen(Protocol::Udp, V4, &cfg).await.expect("listen");
    server.subscribe(&SubKey::all()).expect("subscribe");
    let client = Pipe::connect(Protocol::Udp, server.local_addr(), None, &config())
        .await
        .expect("client");
    for msg in [&b"once"[..], b"once", b"twice", b"once"] {
        client.send(msg, None).await.expect("send");
    }
    let first = server.recv(&SubKey::all(), WAIT).await.expect("first");
    let second = server.recv(&SubKey::all(), WAIT).await.expect("second");
    assert_eq!(
        (&first.data[..], &second.data[..]),
        (&b"once"[..], &b"twice"[..])
    );
    assert_eq!(
        server
            .recv(&SubKey::all(), Some(Duration::from_millis(100)))
            .await,
        Err(RecvError::Timeout)
    );
    assert_eq!(server.stats().duplicates, 2);
}

#[tokio::test]
async fn udp_keeps_duplicates_by_default() {
    let server = subscribed_udp_server().await;
    let client = Pipe::connect(Protocol::Udp, server.local_addr(), None, &config())
        .await
        .expect("client");
    client.send(b"again", None).await.expect("send");
    client.send(b"again", None).await.expect("send");
    server.recv(&SubKey::all(), WAIT).await.expect("first");
    server.recv(&SubKey::all(), WAIT).await.expect("second");
}

#[tokio::test]
async fn linked_pipes_relay_both_ways() {
    let left = echo_server(Protocol::Tcp, V4).await;
    let right = Pipe::listen(Protocol::Udp, V4, &config())
        .await
        .expect("right");
    right.subscribe(&SubKey::all()).expect("subscribe");
    let to_left = Pipe::connect(Protocol::Tcp, left.local_addr(), None, &config())
        .await
        .expect("tcp");
    let to_right = Pipe::connect(Protocol::Udp, right.local_addr(), None, &config())
        .await
        .expect("udp");
    to_left.add_pipe(&to_right);
    to_right.add_pipe(&to_left);

    to_left.send(b"ping", None).await.expect("send");
    // tcp -> echo -> to_left -> forwarded down to_right -> udp server
    let got = right
        .recv(&SubKey::all(), WAIT)
        .await
        .expect("relayed one way");
    assert_eq!(&got.data[..], b"ping");

    right.send(b"pong", Some(got.from)).await.expect("answer");
    // udp -> to_right -> forwarded down to_left -> echo server -> to_left
    // -> forwarded down to_right -> udp server again
    let back = right
        .recv(&SubKey::all(), WAIT)
        .await
        .expect("relayed the other way");
    assert_eq!(&back.data[..], b"pong");

    assert!(to_left.del_pipe(&to_right));
    assert!(!to_left.del_pipe(&to_right));
}

#[tokio::test]
async fn tcp_pipe_is_a_byte_stream() {
    let server = echo_server(Protocol::Tcp, V4).await;
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("connect");
    let mut stream = client.stream().expect("stream");
    assert!(matches!(client.stream(), Err(PipeError::StreamTaken)));

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let writer = async {
        wr.write_all(&payload).await.expect("write");
        wr.flush().await.expect("flush");
    };
    let mut echoed = vec![0u8; payload.len()];
    let reader = rd.read_exact(&mut echoed);
    let (_, read) = tokio::join!(writer, reader);
    read.expect("read back");
    assert_eq!(echoed, payload);

    server.close().await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("eof in time")
        .expect("read");
    assert_eq!(n, 0, "end of file once the server closes");
    let udp = Pipe::listen(Protocol::Udp, V4, &config())
        .await
        .expect("udp");
    assert!(matches!(udp.stream(), Err(PipeError::NotAStream)));
}

#[tokio::test]
async fn callbacks_can_be_removed() {
    let server = subscribed_udp_server().await;
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let id = server.add_msg_cb(move |_, _| {
        c.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    let client = Pipe::connect(Protocol::Udp, server.local_addr(), None, &config())
        .await
        .expect("client");
    client.send(b"1", None).await.expect("send");
    server.recv(&SubKey::all(), WAIT).await.expect("1");
    assert!(server.del_msg_cb(id));
    client.send(b"2", None).await.expect("send");
    server.recv(&SubKey::all(), WAIT).await.expect("2");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(!server.del_msg_cb(id));
}

#[tokio::test]
async fn close_frees_the_port() {
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let server = Pipe::listen(protocol, V4, &config()).await.expect("listen");
        let addr = server.local_addr();
        assert!(
            Pipe::listen(protocol, addr, &config()).await.is_err(),
            "{protocol} port taken"
        );
        server.close().await;
        server.close().await;
        let again = Pipe::listen(protocol, addr, &config()).await;
        assert!(again.is_ok(), "{protocol}: {again:?}");
    }
}

#[tokio::test]
async fn keep_open_on_end_still_answers_a_half_closed_peer() {
    let mut cfg = config();
    cfg.keep_open_on_end(true);
    let listener = tokio::net::TcpListener::bind(V4).await.expect("listen");
    let addr = listener.local_addr().expect("addr");
    let peer = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        sock.write_all(b"question").await.expect("write");
        sock.shutdown().await.expect("half close");
        let mut answer = Vec::new();
        sock.read_to_end(&mut answer).await.expect("read");
        answer
    });
    let pipe = Pipe::connect(Protocol::Tcp, addr, None, &cfg)
        .await
        .expect("connect");
    pipe.subscribe(&SubKey::all()).expect("subscribe");
    pipe.recv(&SubKey::all(), WAIT).await.expect("question");
    tokio::time::timeout(Duration::from_secs(5), pipe.closed())
        .await
        .expect("ends");

    pipe.send(b"answer", None)
        .await
        .expect("still open for sending");
    pipe.close().await;

    assert_eq!(peer.await.expect("peer"), b"answer");
}

#[tokio::test]
async fn connect_errors_are_typed() {
    let free = tokio::net::TcpListener::bind(V4).await.expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let err = Pipe::connect(Protocol::Tcp, addr, None, &config())
        .await
        .expect_err("refused");
    assert!(matches!(err, PipeError::Connect { .. }), "{err}");
    let udp = Pipe::listen(Protocol::Udp, V4, &config())
        .await
        .expect("udp");
    assert!(matches!(
        udp.send(b"x", None).await,
        Err(PipeError::NoDestination)
    ));
    let tcp = Pipe::listen(Protocol::Tcp, V4, &config())
        .await
        .expect("tcp");
    assert!(matches!(
        tcp.send(b"x", Some(addr)).await,
        Err(PipeError::UnknownClient(_))
    ));
}

#[tokio::test]
async fn daemon_serves_a_port_range_on_both_protocols_and_frees_it() {
    let mut daemon = Daemon::new(config());
    daemon.add_msg_cb(|msg, reply| async move {
        let _ = reply.send(&msg.data, Some(msg.from)).await;
    });
    let target = Target::from(V4.ip());
    let protocols = [Protocol::Tcp, Protocol::Udp];
    // Five consecutive ports free on both protocols: try a few places.
    let mut found = None;
    for attempt in 0..50u16 {
        let base = 20_000 + attempt * 797 + (std::process::id() % 500) as u16;
        let ports = Ports::Range(base, base + 4);
        let listened = daemon
            .listen_all(
                std::slice::from_ref(&target),
                &[ports],
                &protocols,
                AddressFamily::Any,
            )
            .await
            .map(<[Pipe]>::len);
        if let Ok(n) = listened {
            found = Some((base, ports, n));
            break;
        }
    }
    let (base, ports, opened) = found.expect("five free consecutive ports somewhere");
    assert_eq!(opened, 10);
    let pipes = daemon.pipes();
    assert_eq!(pipes.len(), 10);

    for port in base..=base + 4 {
        for protocol in protocols {
            let dest = SocketAddr::new(V4.ip(), port);
            let client = Pipe::connect(protocol, dest, None, &config())
                .await
                .expect("connect");
            client.subscribe(&SubKey::all()).expect("subscribe");
            client
                .send(port.to_string().as_bytes(), None)
                .await
                .expect("send");
            let got = client.recv(&SubKey::all(), WAIT).await.expect("echo");
            assert_eq!(got.data, port.to_string().as_bytes());
            client.close().await;
        }
    }

    daemon.close().await;
    assert!(daemon.pipes().is_empty());
    let mut again = Daemon::new(config());
    let reopened = again
        .listen_all(&[target], &[ports], &protocols, AddressFamily::V4)
        .await
        .map(<[Pipe]>::len);
    assert_eq!(reopened.ok(), Some(10), "every port is free again");
    again.close().await;
}

#[tokio::test]
async fn daemon_listen_all_on_an_interface_keeps_to_the_family() {
    let lo = p2pd_net::interfaces::list()
        .expect("interfaces")
        .into_iter()
        .find(|i| i.loopback)
        .expect("lo");
    let mut daemon = Daemon::new(config());
    let pipes = daemon
        .listen_all(
            &[Target::Interface(lo.clone())],
            &[Ports::One(0)],
            &[Protocol::Udp],
            AddressFamily::V4,
        )
        .await
        .expect("listen");
    assert_eq!(pipes.len(), lo.ipv4.len());
    assert!(pipes.iter().all(|p| p.local_addr().is_ipv4()));
    daemon.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients_against_one_daemon() {
    raise_fd_limit(4096);
    let mut daemon = Daemon::new(config());
    daemon.add_msg_cb(|msg, reply| async move {
        let _ = reply.send(&msg.data, Some(msg.from)).await;
    });
    let addr = daemon
        .listen_specific(&[(V4, Protocol::Tcp)])
        .await
        .expect("listen")[0]
        .local_addr();

    let clients: Vec<_> = (0..1000u32)
        .map(|i| {
            tokio::spawn(async move {
                let mut cfg = PipeConfig::default();
                cfg.connect_timeout(Duration::from_secs(10));
                let pipe = Pipe::connect(Protocol::Tcp, addr, None, &cfg)
                    .await
                    .expect("connect");
                pipe.subscribe(&SubKey::all()).expect("subscribe");
                let msg = format!("client {i}");
                pipe.send(msg.as_bytes(), None).await.expect("send");
                let got = pipe
                    .recv(&SubKey::all(), Some(Duration::from_secs(20)))
                    .await
                    .expect("echo");
                assert_eq!(got.data, msg.as_bytes());
                pipe
            })
        })
        .collect();
    let mut pipes = Vec::new();
    for client in clients {
        pipes.push(client.await.expect("client task"));
    }
    assert_eq!(daemon.pipes()[0].clients().len(), 1000);
    for pipe in pipes {
        pipe.close().await;
    }
    daemon.close().await;
}

fn raise_fd_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < wanted {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard);
    }
}

#[tokio::test]
async fn close_does_not_wait_for_a_peer_that_stops_reading() {
    let listener = tokio::net::TcpListener::bind(V4).await.expect("listen");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move { listener.accept().await.expect("accept").0 });
    let pipe = Pipe::connect(Protocol::Tcp, addr, None, &config())
        .await
        .expect("connect");
    let _peer = silent.await.expect("accept");
    let sender = pipe.clone();
    let (blocked_tx, blocked) = tokio::sync::oneshot::channel();
    let flood = tokio::spawn(async move {
        // More than every kernel buffer on the way holds: the first poll
        // writes what fits and leaves the send waiting in its write.
        let chunk = vec![0u8; 64 << 20];
        let mut send = Box::pin(sender.send(&chunk, None));
        assert!(poll_once(&mut send).await.is_pending(), "the send blocks");
        let _ = blocked_tx.send(());
        send.await
    });
    blocked.await.expect("the flood started");

    tokio::time::timeout(Duration::from_secs(5), pipe.close())
        .await
        .expect("close returns");
    let sent = tokio::time::timeout(Duration::from_secs(5), flood)
        .await
        .expect("sender stops")
        .expect("task");
    assert!(matches!(sent, Err(PipeError::Closed)), "{sent:?}");
}

#[tokio::test]
async fn close_does_not_wait_for_a_stuck_callback() {
    let server = Pipe::listen(Protocol::Udp, V4, &config())
        .await
        .expect("listen");
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    server.add_msg_cb(move |_, _| {
        let _ = entered_tx.send(());
        std::future::pending::<()>()
    });
    let client = Pipe::connect(Protocol::Udp, server.local_addr(), None, &config())
        .await
        .expect("client");
    client.send(b"hang", None).await.expect("send");
    signals(&mut entered, 1, "the callback runs").await;
    tokio::time::timeout(Duration::from_secs(5), server.close())
        .await
        .expect("close returns");
}

#[tokio::test]
async fn end_callbacks_that_close_each_other_do_not_deadlock() {
    let server = Pipe::listen(Protocol::Tcp, V4, &config())
        .await
        .expect("listen");
    let a = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("a");
    let b = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("b");
    a.add_pipe(&b);
    b.add_pipe(&a);
    let (a2, b2) = (a.clone(), b.clone());
    a.add_end_cb(move |_| {
        let b = b2.clone();
        async move { b.close().await }
    });
    b.add_end_cb(move |_| {
        let a = a2.clone();
        async move { a.close().await }
    });
    let (done_tx, mut done) = mpsc::unbounded_channel();
    for pipe in [&a, &b] {
        let done_tx = done_tx.clone();
        pipe.add_end_cb(move |_| {
            let _ = done_tx.send(());
            async {}
        });
    }

    server.close().await;

    signals(&mut done, 2, "both pipes end and run every end callback").await;
}

#[tokio::test]
async fn closing_a_server_ends_every_connection_and_frees_their_ports() {
    let server = Pipe::listen(Protocol::Tcp, V4, &config())
        .await
        .expect("listen");
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    server.add_accept_cb(move |_| {
        let _ = accepted_tx.send(());
    });
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(
            Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
                .await
                .expect("connect"),
        );
    }
    signals(&mut accepted, 20, "all accepted").await;
    let connections = server.clients();
    assert_eq!(connections.len(), 20);

    server.close().await;

    assert!(server.clients().is_empty());
    assert!(connections.iter().all(Pipe::is_closed));
    for client in &clients {
        tokio::time::timeout(Duration::from_secs(5), client.closed())
            .await
            .expect("client ends");
    }
}

#[tokio::test]
async fn unsubscribing_wakes_a_waiting_receiver() {
    let server = subscribed_udp_server().await;
    let all = SubKey::all();
    let mut waiting = Box::pin(server.recv(&all, None));
    assert!(
        poll_once(&mut waiting).await.is_pending(),
        "the receiver waits"
    );

    server.unsubscribe(&all);

    let result = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken");
    assert_eq!(result, Err(RecvError::NoSubscription));
}

#[tokio::test]
async fn a_stream_from_an_ended_pipe_is_refused() {
    let server = echo_server(Protocol::Tcp, V4).await;
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("connect");
    server.close().await;
    tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .expect("ends");
    assert!(matches!(client.stream(), Err(PipeError::Closed)));
}

#[tokio::test]
async fn stream_writes_go_out_without_a_flush() {
    let server = echo_server(Protocol::Tcp, V4).await;
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("connect");
    let mut stream = client.stream().expect("stream");
    let big = vec![3u8; 4 << 20];
    // One large write, no flush, then wait for the echo: the bytes must
    // leave on their own.
    let n = stream.write(&big).await.expect("write");
    assert_eq!(n, big.len());
    let mut back = vec![0u8; big.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("echo arrives")
        .expect("read");
    assert_eq!(back, big);
}

#[tokio::test]
async fn accept_callbacks_see_each_connection_before_its_first_message() {
    let mut daemon = Daemon::new(config());
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    daemon.add_accept_cb(move |conn| {
        // Per-connection state: the first message each connection sends.
        let first = Arc::new(std::sync::OnceLock::new());
        let tx = tx.clone();
        conn.add_msg_cb(move |msg, _| {
            let fresh = first.set(()).is_ok();
            let tx = tx.clone();
            async move {
                if fresh {
                    let _ = tx.send(msg.data.to_vec()).await;
                }
            }
        });
    });
    let servers = daemon
        .listen_specific(&[(V4, Protocol::Tcp)])
        .await
        .expect("listen");
    let server = servers[0].local_addr();

    for greeting in [&b"first of a"[..], b"first of b"] {
        let client = Pipe::connect(Protocol::Tcp, server, None, &config())
            .await
            .expect("connect");
        client.send(greeting, None).await.expect("send");
        let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the accept callback's per-connection callback ran")
            .expect("channel open");
        assert_eq!(seen, greeting);
        client.send(b"second", None).await.expect("send");
        client.close().await;
    }
    daemon.close().await;
}

/// A message goes to every consumer of the connection and then of its
/// server, each whole: two queues, a forward, callbacks on both and the
/// connection's byte stream.
#[tokio::test]
async fn every_consumer_of_a_connection_and_its_server_sees_each_message() {
    let server = Pipe::listen(Protocol::Tcp, V4, &config())
        .await
        .expect("listen");
    let sink = Pipe::listen(Protocol::Udp, V4, &config())
        .await
        .expect("sink");
    sink.subscribe(&SubKey::all()).expect("subscribe");
    let forward = Pipe::connect(Protocol::Udp, sink.local_addr(), None, &config())
        .await
        .expect("forward");
    let (conn_tx, mut conns) = mpsc::unbounded_channel();
    server.add_accept_cb(move |conn| {
        let _ = conn_tx.send(conn.clone());
    });
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let server_seen = seen_tx.clone();
    server.add_msg_cb(move |msg, _| {
        let _ = server_seen.send(("server", msg.data.to_vec()));
        async {}
    });
    let client = Pipe::connect(Protocol::Tcp, server.local_addr(), None, &config())
        .await
        .expect("connect");
    let conn = tokio::time::timeout(Duration::from_secs(5), conns.recv())
        .await
        .expect("accepted")
        .expect("channel open");
    let digits = SubKey::new("^[0-9]+$", "");
    conn.subscribe(&SubKey::all()).expect("subscribe");
    conn.subscribe(&digits).expect("subscribe");
    conn.add_pipe(&forward);
    conn.add_msg_cb(move |msg, _| {
        let _ = seen_tx.send(("conn", msg.data.to_vec()));
        async {}
    });
    let mut stream = conn.stream().expect("stream");

    client.send(b"12345", None).await.expect("send");

    let all = conn.recv(&SubKey::all(), WAIT).await.expect("all");
    let numbers = conn.recv(&digits, WAIT).await.expect("digits");
    let forwarded = sink.recv(&SubKey::all(), WAIT).await.expect("forwarded");
    for msg in [&all, &numbers, &forwarded] {
        assert_eq!(&msg.data[..], b"12345");
    }
    let mut streamed = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut streamed))
        .await
        .expect("streamed")
        .expect("read");
    assert_eq!(&streamed, b"12345");
    let mut order = Vec::new();
    for _ in 0..2 {
        let (who, data) = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("callback ran")
            .expect("channel open");
        assert_eq!(data, b"12345");
        order.push(who);
    }
    assert_eq!(
        order,
        ["conn", "server"],
        "the connection's consumers first"
    );
}
