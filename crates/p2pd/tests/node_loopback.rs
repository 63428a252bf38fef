//! A node, the embedded broker and `p2pd connect` on one machine, no root
//! needed: the README's offline example as a test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn p2pd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2pd"));
    cmd.env_remove("P2PD_CONFIG").env_remove("RUST_LOG");
    cmd
}

/// A broker and a node on loopback, with the config they share; `extra`
/// goes into the config's `[connect]` table.
struct Setup {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    addr: String,
    _broker: Running,
    _node: Running,
}

fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("p2pd.toml");
    std::fs::write(
        &config,
        format!(
            "[signaling]\nbrokers = [\"mqtt://127.0.0.1:{port}\"]\n[stun]\nservers = []\n[ntp]\nservers = []\n\
             [connect]\ndirect_ms = 1000\nreverse_ms = 3000\n{extra}"
        ),
    )
    .expect("config");
    let broker = Running(
        p2pd()
            .args(["broker", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("broker"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the broker never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut node = Running(
        p2pd()
            .arg("--config")
            .arg(&config)
            .arg("node")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node"),
    );
    let mut first = String::new();
    BufReader::new(node.0.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the node prints its address");
    let addr = first.trim().to_owned();
    assert!(addr.parse::<p2pd_proto::addr::PeerAddr>().is_ok(), "{addr}");
    Setup {
        _dir: dir,
        config,
        addr,
        _broker: broker,
        _node: node,
    }
}

/// `p2pd connect ADDR --json` with `input`: whether it succeeded, its JSON
/// line and what it printed.
fn connect(
    config: &std::path::Path,
    addr: &str,
    strategy: &str,
    input: &[u8],
) -> (bool, serde_json::Value, String) {
    let mut connect = p2pd()
        .arg("--config")
        .arg(config)
        .args([
            "connect",
            addr,
            "--json",
            "--strategies",
            strategy,
            "--linger",
            "0.5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connect");
    connect
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = connect.wait_with_output().expect("connect ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let info = stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line: {stderr}"));
    (
        out.status.success(),
        info,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_node_answers_echo_over_direct_and_reverse_connect() {
    let node = setup("");
    for strategy in ["direct", "reverse"] {
        let (ok, info, stdout) = connect(&node.config, &node.addr, strategy, b"ECHO over loopback");
        assert!(ok, "{strategy}: {info}");
        assert_eq!(stdout, "over loopback", "{strategy}");
        assert_eq!(info["strategy"], strategy);
        assert_eq!(info["encrypted"], true, "{info}");
        assert!(info["ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    }
}

#[test]
fn with_encryption_off_on_both_sides_connections_are_plain() {
    let node = setup("encrypt = false\n");
    for strategy in ["direct", "reverse"] {
        let (ok, info, stdout) = connect(&node.config, &node.addr, strategy, b"ECHO in the clear");
        assert!(ok, "{strategy}: {info}");
        assert_eq!(stdout, "in the clear", "{strategy}");
        assert_eq!(info["encrypted"], false, "{info}");
    }
}

#[test]
fn one_side_asking_is_enough_for_encryption() {
    let node = setup("encrypt = false\n");
    let wants = node.config.with_file_name("wants.toml");
    let text = std::fs::read_to_string(&node.config).expect("config");
    std::fs::write(&wants, text.replace("encrypt = false\n", "")).expect("config");
    let (ok, info, stdout) = connect(&wants, &node.addr, "direct", b"ECHO sealed");
    assert!(ok, "{info}");
    assert_eq!(stdout, "sealed");
    assert_eq!(info["encrypted"], true, "{info}");
}

#[test]
fn a_port_that_is_no_p2pd_node_is_not_the_peer() {
    let node = setup("");
    // The same node ID, but at its address's port another server answers,
    // the way an MQTT broker would.
    let mut addr: p2pd_proto::addr::PeerAddr = node.addr.parse().expect("address");
    if !addr.ipv4.is_empty() {
        addr.ipv6.clear();
    }
    addr.ipv4.truncate(1);
    addr.ipv6.truncate(1);
    let endpoint = addr
        .ipv4
        .iter_mut()
        .chain(addr.ipv6.iter_mut())
        .next()
        .expect("an entry");
    let other = std::net::TcpListener::bind((endpoint.external, 0)).expect("bind");
    endpoint.port = other.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in other.incoming().take(1) {
            let mut conn = conn.expect("accept");
            let _ = conn.write_all(b"\x20\x02\x00\x05");
            let _ = std::io::Read::read(&mut conn, &mut [0u8; 64]);
        }
    });
    let (ok, info, _) = connect(&node.config, &addr.to_string(), "direct", b"secret");
    assert!(!ok, "{info}");
    let why = info["tried"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("not the peer"), "{info}");
}

#[test]
fn a_node_that_holds_another_key_than_the_address_says_is_refused() {
    let node = setup("");
    let mut addr: p2pd_proto::addr::PeerAddr = node.addr.parse().expect("address");
    addr.node_id = p2pd_proto::addr::NodeId([7; 32]);
    let (ok, info, _) = connect(&node.config, &addr.to_string(), "direct", b"secret");
    assert!(!ok, "{info}");
    let why = info["tried"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("not the peer"), "{info}");
}

#[test]
fn a_bad_address_is_a_one_line_error() {
    let out = p2pd()
        .args(["connect", "-0-0-nothex"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("node id"), "{stderr}");
}

#[test]
fn plain_clients_and_original_nodes_get_echo() {
    let node = setup("");
    let addr: p2pd_proto::addr::PeerAddr = node.addr.parse().expect("address");
    let endpoint = addr.endpoints().next().expect("an entry");
    let server = std::net::SocketAddr::new(endpoint.external, endpoint.port);
    for (first, answer) in [
        (&b"ECHO from netcat"[..], &b"from netcat"[..]),
        (
            b"P2P_CON_ID_EQ 987654\nECHO from the original",
            b"from the original",
        ),
    ] {
        let mut conn = std::net::TcpStream::connect(server).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        conn.write_all(first).expect("write");
        let mut got = vec![0u8; answer.len()];
        std::io::Read::read_exact(&mut conn, &mut got).expect("the answer");
        assert_eq!(got, answer);
    }
}
