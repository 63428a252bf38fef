//! A node started the moment a link comes up, while its IPv6 addresses are
//! still tentative (duplicate address detection): it starts on what it can
//! bind, then serves the addresses that finished DAD.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use p2pd_lab::{Netns, netns::veth, require_lab};
use p2pd_proto::addr::PeerAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A_V4: &str = "10.98.0.2";
const B_V4: &str = "10.98.0.1";
const A_V6: &str = "2001:db8:98::2";
const B_V6: &str = "2001:db8:98::1";
/// DAD takes about a second per address here; the node retries binds for
/// far longer than that.
const LIMIT: Duration = Duration::from_secs(15);

#[test]
fn a_node_started_during_dad_serves_its_addresses_once_they_are_usable() {
    require_lab!();
    let a = Netns::new().expect("namespace a");
    let b = Netns::new().expect("namespace b");
    veth(&a, "eth0", &b, "eth0").expect("veth");
    b.ip(&["link", "set", "eth0", "up"]).expect("b up");
    b.ip(&["addr", "add", &format!("{B_V4}/24"), "dev", "eth0"])
        .expect("b v4");
    b.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{B_V6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])
    .expect("b v6");
    a.sysctl(&[
        "net.ipv6.conf.eth0.accept_dad=1",
        "net.ipv6.conf.eth0.dad_transmits=1",
    ])
    .expect("DAD on");
    a.ip(&["addr", "add", &format!("{A_V4}/24"), "dev", "eth0"])
        .expect("a v4");
    a.ip(&["-6", "addr", "add", &format!("{A_V6}/64"), "dev", "eth0"])
        .expect("a v6");
    a.ip(&["link", "set", "eth0", "up"]).expect("a up");
    a.ip(&["-6", "route", "add", "default", "via", B_V6])
        .expect("v6 default");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("p2pd.toml");
    std::fs::write(
        &config,
        "[signaling]\nbrokers = []\n[stun]\nservers = []\n[ntp]\nservers = []\n[portmap]\nprotocols = []\n",
    )
    .expect("config");
    let config = config.display().to_string();
    let args = a.exec_args(env!("CARGO_BIN_EXE_p2pd"), &["--config", &config, "node"]);
    let (node, lines) = spawn_lines(&args);
    let _node = Running(node);

    let first: PeerAddr = lines
        .recv_timeout(LIMIT)
        .expect("the node prints its address though its IPv6 addresses are tentative")
        .parse()
        .expect("a peer address");
    let port = first
        .ipv4
        .first()
        .expect("the IPv4 entry is there at once")
        .port;

    let v6: IpAddr = A_V6.parse().expect("literal");
    let served = |addr: &PeerAddr| {
        addr.ipv6
            .iter()
            .find(|e| e.external == v6 && is_link_local(e.internal))
            .copied()
    };
    let mut current = first;
    let entry = loop {
        if let Some(entry) = served(&current) {
            break entry;
        }
        current = lines
            .recv_timeout(LIMIT)
            .expect("the node prints its address again once DAD is over, with the global and link-local addresses")
            .parse()
            .expect("a peer address");
    };
    assert_eq!(entry.port, port, "one port on every address");
    let link_local = entry.internal;

    let b_index = b.if_index("eth0").expect("eth0 in b");
    let targets = [
        SocketAddr::new(A_V4.parse().expect("literal"), port),
        SocketAddr::new(v6, port),
        match link_local {
            IpAddr::V6(ll) => SocketAddr::V6(SocketAddrV6::new(ll, port, 0, b_index)),
            IpAddr::V4(_) => unreachable!("matched above"),
        },
    ];
    for target in targets {
        let answer = b
            .block_on(|| async move { echo(target).await })
            .expect("enter b");
        assert_eq!(answer, b"over dad", "ECHO on {target}");
    }
}

/// Sends `ECHO over dad` to `target`, returns the answer.
async fn echo(target: SocketAddr) -> Vec<u8> {
    let mut stream = tokio::time::timeout(LIMIT, tokio::net::TcpStream::connect(target))
        .await
        .unwrap_or_else(|_| panic!("connect to {target} timed out"))
        .unwrap_or_else(|e| panic!("connect to {target}: {e}"));
    stream.write_all(b"ECHO over dad").await.expect("write");
    let mut answer = vec![0; 8];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("no ECHO answer from {target}"))
        .expect("read");
    answer
}

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ip <args>` and hands each line of its stdout over a channel.
fn spawn_lines(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args(args)
        .env_remove("P2PD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the node");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] == 0xfe80)
}
