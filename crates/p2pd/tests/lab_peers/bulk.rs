//! Bulk transfer between two library nodes in the lab: one in host `b`
//! echoes every byte an inbound connection brings, one in host `a` connects
//! with one strategy and sends a block through it while it reads the echo.
//! The echo equal to what was sent proves both directions intact and in
//! order; its time gives the throughput of the path the strategy took.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use p2pd_lab::Lab;
use p2pd_lab::topology::{
    BROKER1_V4, BROKER2_V4, MQTT_PORT, NTP_V4, STUN_V4, TURN_PORT, TURN_USER, TURN_V4,
};
use p2pd_node::Node;
use p2pd_node::config::{NodeConfig, Role, Strategy};
use p2pd_node::servers::{TurnServer, TurnTransport};
use p2pd_proto::addr::PeerAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The whole exchange, start-up included, ends within this.
const LIMIT: Duration = Duration::from_secs(120);

/// What one exchange measured.
pub(crate) struct Transfer {
    /// The strategy that made the connection.
    pub(crate) strategy: Strategy,
    /// From the start of `connect` to the connection.
    pub(crate) connect: Duration,
    /// Bytes each way per second, from the first write to the last byte
    /// of the echo.
    pub(crate) bytes_per_sec: f64,
}

/// A node config for the lab: its brokers, STUN, NTP and coturn over UDP.
fn config(role: Role, strategy: Strategy) -> NodeConfig {
    let (user, password, realm) = TURN_USER;
    let mut config = NodeConfig::default();
    config.role = role;
    config.brokers = [BROKER1_V4, BROKER2_V4]
        .iter()
        .map(|ip| {
            format!("mqtt://{ip}:{MQTT_PORT}")
                .parse()
                .expect("broker url")
        })
        .collect();
    config.stun_servers = vec![
        format!("{STUN_V4}:{}", super::STUN_PORTS.0)
            .parse()
            .expect("stun"),
    ];
    config.ntp_servers = vec![format!("{NTP_V4}:123").parse().expect("ntp")];
    config.turn_servers = vec![TurnServer {
        address: format!("{TURN_V4}:{TURN_PORT}").parse().expect("turn"),
        transport: TurnTransport::Udp,
        username: user.into(),
        password: password.into(),
        realm: realm.into(),
    }];
    config.connect.strategies = vec![strategy];
    config
}

/// Bytes without an `E`, so no chunk the echo node reads looks like ECHO:
/// a 251-byte pattern repeated (copied, not computed byte by byte, so
/// making it costs little of the processor time the bench measures).
fn block(size: usize) -> Vec<u8> {
    let pattern: Vec<u8> = (0..251)
        .map(|i| match (i * 31 % 251) as u8 {
            b'E' => b'e',
            b => b,
        })
        .collect();
    let mut block = pattern.repeat(size.div_ceil(pattern.len()));
    block.truncate(size);
    block
}

/// Sends `size` bytes from a node in `a` to an echoing node in `b` over a
/// connection made by `strategy`, and reads them back.
pub(crate) fn echo_through(
    lab: &Lab,
    a: &str,
    b: &str,
    strategy: Strategy,
    size: usize,
) -> Transfer {
    let (addr_tx, addr_rx) = std_mpsc::channel::<PeerAddr>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let (a_host, b_host) = (lab.host(a), lab.host(b));
    std::thread::scope(|scope| {
        let server = scope.spawn(move || {
            b_host
                .block_on(|| async move {
                    let node = Node::start(config(Role::Server, strategy))
                        .await
                        .expect("echo node starts");
                    node.add_msg_cb(|msg, pipe| async move {
                        pipe.send(&msg.data, None).await.ok();
                    });
                    node.discovered().await;
                    assert!(node.signaling_ready(LIMIT).await, "echo node signals");
                    addr_tx.send(node.addr()).expect("address to the client");
                    tokio::time::timeout(LIMIT, done_rx).await.ok();
                    node.close().await;
                })
                .expect("host b")
        });
        let transfer = a_host
            .block_on(|| async move {
                let addr = addr_rx
                    .recv_timeout(LIMIT)
                    .expect("the echo node's address");
                let node = Node::start(config(Role::Client, strategy))
                    .await
                    .expect("client node starts");
                let transfer = tokio::time::timeout(LIMIT, exchange(&node, &addr, strategy, size))
                    .await
                    .expect("the exchange ends in time");
                node.close().await;
                done_tx.send(()).ok();
                transfer
            })
            .expect("host a");
        server.join().expect("echo node");
        transfer
    })
}

async fn exchange(node: &Node, addr: &PeerAddr, strategy: Strategy, size: usize) -> Transfer {
    let conn = node.connect(addr, &[strategy]).await.expect("connects");
    let stream = conn.pipe.stream().expect("byte stream");
    let (mut read, mut write) = tokio::io::split(stream);
    let sent = block(size);
    let started = Instant::now();
    let writing = async {
        write.write_all(&sent).await.expect("write");
        write.flush().await.expect("flush");
    };
    let reading = async {
        let mut echoed = vec![0; size];
        read.read_exact(&mut echoed).await.expect("the echo");
        echoed
    };
    let ((), echoed) = tokio::join!(writing, reading);
    let secs = started.elapsed().as_secs_f64();
    assert!(echoed == sent, "the echo differs from what was sent");
    conn.pipe.close().await;
    Transfer {
        strategy: conn.strategy,
        connect: conn.elapsed,
        bytes_per_sec: size as f64 / secs,
    }
}
