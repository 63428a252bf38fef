//! The TURN client and the relayed stream against coturn on loopback:
//! allocations over UDP and TCP, IPv4 and IPv6 relayed addresses, a
//! refresh cycle, wrong credentials, and 10 MB each way through the relay.

mod relay_common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p2pd_net::relay::{Allocation, RelayError, bridge, quic};
use p2pd_proto::turn::{ClientConfig, Family};
use relay_common::{data, data_of, exchange};

const TURNSERVER: &str = "/usr/bin/turnserver";

/// coturn on 127.0.0.1 and ::1, stopped on drop.
struct Coturn {
    child: Child,
    port: u16,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub(crate) struct Dir(pub(crate) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // A port free for both UDP and TCP right now.
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts coturn, or says loudly why not.
fn coturn(test: &str, extra: &[&str]) -> Option<Coturn> {
    if !std::path::Path::new(TURNSERVER).exists() {
        p2pd_lab::report_skip(test, "needs coturn (scripts/test installs it as root)");
        return None;
    }
    // The port is free when picked but not reserved: another test's
    // socket can take it before coturn binds. A coturn that does not
    // answer on every address it should is started again on another.
    for _ in 0..3 {
        let coturn = start(free_port(), extra);
        let udp = ["127.0.0.1", "[::1]"]
            .iter()
            .all(|ip| answers_binding(&format!("{ip}:{}", coturn.port)));
        if udp && answers_binding_over_tcp(coturn.port) {
            return Some(coturn);
        }
    }
    panic!("coturn did not answer STUN on 127.0.0.1 and ::1 in three starts");
}

/// A STUN Binding request: type 1, no attributes, the magic cookie, an id.
fn binding_request() -> Vec<u8> {
    let mut request = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(&rand::random::<[u8; 12]>());
    request
}

/// Whether `answer` answers `request` (the same transaction id).
fn is_answer(request: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 20 && answer[8..20] == request[8..20]
}

/// Whether a STUN Binding request over UDP to `addr` is answered.
fn answers_binding(addr: &str) -> bool {
    let local = if addr.starts_with('[') {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let Ok(socket) = std::net::UdpSocket::bind(local) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(500)));
    let request = binding_request();
    let mut buf = [0u8; 1500];
    (0..4).any(|_| {
        socket.send_to(&request, addr).is_ok()
            && socket
                .recv(&mut buf)
                .is_ok_and(|n| is_answer(&request, &buf[..n]))
    })
}

/// Whether a STUN Binding request over TCP to 127.0.0.1 is answered: the
/// listener there is coturn's, not another test's.
fn answers_binding_over_tcp(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = binding_request();
    let mut header = [0u8; 20];
    stream.write_all(&request).is_ok()
        && stream.read_exact(&mut header).is_ok()
        && is_answer(&request, &header)
}

fn start(port: u16, extra: &[&str]) -> Coturn {
    let dir = std::env::temp_dir().join(format!("p2pd-coturn-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port_s = port.to_string();
    let db = dir.join("turn.db").display().to_string();
    let pid = dir.join("turn.pid").display().to_string();
    let mut args = vec![
        "-n",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--log-file",
        "stdout",
        "--simple-log",
        "--listening-ip",
        "127.0.0.1",
        "--listening-ip",
        "::1",
        "--relay-ip",
        "127.0.0.1",
        "--relay-ip",
        "::1",
        "--listening-port",
        &port_s,
        "--lt-cred-mech",
        "--user",
        "test:test",
        "--realm",
        "lab",
        "--allow-loopback-peers",
        "--db",
        &db,
        "--pidfile",
        &pid,
    ];
    args.extend_from_slice(extra);
    let child = Command::new(TURNSERVER)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver starts");
    let coturn = Coturn {
        child,
        port,
        _dir: tempdir::Dir(dir),
    };
    // Listening on TCP means its UDP socket is up too (both are opened
    // before the relay threads start).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "coturn did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    coturn
}

fn config(server: SocketAddr, stream: bool, password: &str) -> ClientConfig {
    ClientConfig {
        server,
        stream,
        username: "test".into(),
        password: password.into(),
        realm: "lab".into(),
        family: if server.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        },
        lifetime: Duration::from_secs(600),
        timeout: Duration::from_secs(3),
        refresh_every: None,
    }
}

/// Two allocations that bind each other, QUIC between them, and `size`
/// bytes each way; returns the seconds the exchange took.
async fn relayed_exchange(server: SocketAddr, stream: bool, size: usize) -> f64 {
    let mut a = Allocation::open(config(server, stream, "test"))
        .await
        .expect("allocate a");
    let mut b = Allocation::open(config(server, stream, "test"))
        .await
        .expect("allocate b");
    assert_eq!(a.relayed().is_ipv6(), server.is_ipv6());
    let (a_relayed, b_relayed) = (a.relayed(), b.relayed());
    a.bind(b_relayed).await.expect("a binds b");
    b.bind(a_relayed).await.expect("b binds a");
    let client = quic::client(a.socket().expect("socket")).expect("client");
    let server_end = quic::server(b.socket().expect("socket")).expect("server");
    let started = Instant::now();
    let responder = tokio::spawn(async move {
        let (conn, send, recv) = quic::accept(&server_end, a_relayed).await.expect("accept");
        let close = |b: Allocation| async move { b.close(Duration::from_secs(1)).await };
        let (stream, _reading) = bridge::splice(conn, (send, recv), b, close)
            .await
            .expect("splice");
        exchange(stream, data_of(2, size)).await
    });
    let (conn, send, recv) = quic::open(&client, b_relayed).await.expect("open");
    let (stream, _reading) = bridge::splice(conn, (send, recv), (client, a), |_| async {})
        .await
        .expect("splice");
    let got = exchange(stream, data_of(1, size)).await;
    let theirs = responder.await.expect("responder");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        got == data_of(2, size),
        "the responder's bytes arrived intact and in order"
    );
    assert!(
        theirs == data_of(1, size),
        "the initiator's bytes arrived intact and in order"
    );
    secs
}

#[tokio::test]
async fn ten_megabytes_each_way_through_coturn_over_udp() {
    let Some(turn) = coturn("ten_megabytes_each_way_through_coturn_over_udp", &[]) else {
        return;
    };
    let server: SocketAddr = ([127, 0, 0, 1], turn.port).into();
    let secs = relayed_exchange(server, false, data(0).len()).await;
    println!(
        "relayed over UDP: 2 x 10 MB in {secs:.2} s ({:.0} Mbit/s each way)",
        10.0 * 8.0 * 1.048_576 / secs
    );
}

#[tokio::test]
async fn a_stream_through_coturn_over_tcp() {
    let Some(turn) = coturn("a_stream_through_coturn_over_tcp", &[]) else {
        return;
    };
    let server: SocketAddr = ([127, 0, 0, 1], turn.port).into();
    relayed_exchange(server, true, 2 << 20).await;
}

#[tokio::test]
async fn ipv6_relayed_addresses() {
    let Some(turn) = coturn("ipv6_relayed_addresses", &[]) else {
        return;
    };
    let server: SocketAddr = "[::1]:0"
        .parse::<SocketAddr>()
        .map(|mut a| {
            a.set_port(turn.port);
            a
        })
        .expect("literal");
    relayed_exchange(server, false, 1 << 20).await;
}

#[tokio::test]
async fn an_allocation_survives_its_refresh_cycle() {
    // coturn gives no lifetime under 600 s (its STUN_MIN_ALLOCATE_LIFETIME),
    // so the client refreshes every second instead, and coturn's nonces go
    // stale every 2 s: refreshes must get through 438 answers as well.
    let Some(turn) = coturn(
        "an_allocation_survives_its_refresh_cycle",
        &["--stale-nonce=2"],
    ) else {
        return;
    };
    let server: SocketAddr = ([127, 0, 0, 1], turn.port).into();
    let mut eager = config(server, false, "test");
    eager.refresh_every = Some(Duration::from_secs(1));
    let mut a = Allocation::open(eager).await.expect("allocate");
    for _ in 0..5 {
        let lifetime = tokio::time::timeout(Duration::from_secs(3), a.refreshed())
            .await
            .expect("refreshed every second")
            .expect("refresh");
        assert_eq!(lifetime, Duration::from_secs(600));
    }
    // Five refreshes and two stale nonces later, it still relays.
    let mut b = Allocation::open(config(server, false, "test"))
        .await
        .expect("allocate b");
    b.bind(a.relayed()).await.expect("b binds a");
    a.bind(b.relayed())
        .await
        .expect("a binds b, so the allocation is live");
}

#[tokio::test]
async fn wrong_credentials_name_the_server() {
    let Some(turn) = coturn("wrong_credentials_name_the_server", &[]) else {
        return;
    };
    let server: SocketAddr = ([127, 0, 0, 1], turn.port).into();
    for stream in [false, true] {
        let err = Allocation::open(config(server, stream, "wrong"))
            .await
            .expect_err("refused");
        assert!(matches!(err, RelayError::Turn(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&server.to_string()) && text.contains("credentials"),
            "{text}"
        );
    }
}
