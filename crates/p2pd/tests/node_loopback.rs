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

#[test]
fn a_node_answers_echo_over_direct_and_reverse_connect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("p2pd.toml");
    std::fs::write(
        &config,
        format!(
            "[signaling]\nbrokers = [\"mqtt://127.0.0.1:{port}\"]\n[stun]\nservers = []\n[ntp]\nservers = []\n\
             [connect]\ndirect_ms = 1000\nreverse_ms = 3000\n"
        ),
    )
    .expect("config");
    let _broker = Running(
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

    for strategy in ["direct", "reverse"] {
        let mut connect = p2pd()
            .arg("--config")
            .arg(&config)
            .args([
                "connect",
                &addr,
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
            .write_all(b"ECHO over loopback")
            .expect("write");
        let out = connect.wait_with_output().expect("connect ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{strategy}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "over loopback",
            "{strategy}"
        );
        let info: serde_json::Value =
            serde_json::from_str(stderr.lines().next().expect("a JSON line")).expect("JSON");
        assert_eq!(info["strategy"], strategy);
        assert!(info["ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    }
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
