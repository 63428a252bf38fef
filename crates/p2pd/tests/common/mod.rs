//! What the binary's loopback tests share: processes that die with the
//! test, free ports, a broker with a node, and `p2pd connect`.
#![allow(dead_code)] // each test binary uses its own part

pub(crate) mod http;
pub(crate) mod mqtt;
pub(crate) mod web;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// Kills the process when the test ends, however it ends.
pub(crate) struct Running(pub(crate) Child);

impl Running {
    /// Stops the process with SIGTERM; returns what it printed on stderr
    /// (stderr must be piped).
    pub(crate) fn stop(&mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
        }
        let status = self.0.wait().expect("wait");
        assert!(status.success(), "exit {status}: {stderr}");
        stderr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub(crate) fn p2pd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2pd"));
    cmd.env_remove("P2PD_CONFIG").env_remove("RUST_LOG");
    cmd
}

/// `p2pd broker` on a loopback port of its own choosing, once it accepts
/// connections, and the port. The broker picks the port (`:0`) and says
/// it in its "mqtt broker on" line: a port picked free beforehand could be
/// picked by a test running beside this one too, and then one test's
/// broker failed to bind while a connect to the port reached the other's,
/// which went away with its test (seen once in CI as a refused connect
/// mid-test).
pub(crate) fn start_broker() -> (Running, u16) {
    let mut broker = Running(
        p2pd()
            .args(["broker", "--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("broker"),
    );
    let stderr = broker.0.stderr.as_mut().expect("stderr piped");
    let marker = "mqtt broker on ";
    let line = await_line(stderr, marker, "p2pd broker");
    let addr = line.split_once(marker).map_or("", |(_, addr)| addr.trim());
    let addr: std::net::SocketAddr = addr.parse().expect("the broker's address");
    (broker, addr.port())
}

/// Reads `from` up to the first line that contains `marker` and returns
/// it; `who` ended first if it never comes. A byte at a time, so nothing
/// after the line is buffered away from a later reader (`Running::stop`).
fn await_line(from: &mut impl std::io::Read, marker: &str, who: &str) -> String {
    let mut printed = String::new();
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while let Ok(1) = from.read(&mut byte) {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        assert!(
            !line.is_empty(),
            "{who} ended before it said {marker:?}: {printed}"
        );
        if line.contains(marker) {
            return line;
        }
        printed.push_str(&line);
    }
}

/// A broker and a node on loopback, with the config they share; `extra`
/// goes into the config's `[connect]` table.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: std::path::PathBuf,
    pub(crate) addr: String,
    pub(crate) broker: Running,
    pub(crate) node: Running,
}

pub(crate) fn setup(extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, port) = start_broker();
    let config = write_config(dir.path(), port, extra);
    let (node, addr) = start_node(&config);
    Setup {
        dir,
        config,
        addr,
        broker,
        node,
    }
}

/// A config in `dir` for loopback with the broker on `port`; `extra` is
/// appended inside `[connect]` (it may open tables of its own).
pub(crate) fn write_config(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    let config = dir.join("p2pd.toml");
    std::fs::write(
        &config,
        format!(
            "[signaling]\nbrokers = [\"mqtt://127.0.0.1:{port}\"]\n[stun]\nservers = []\n[ntp]\nservers = []\n\
             [portmap]\nprotocols = []\n[connect]\ndirect_ms = 1000\nreverse_ms = 3000\n{extra}"
        ),
    )
    .expect("config");
    config
}

/// `p2pd node` with `config` (stderr piped), and the address it printed.
pub(crate) fn start_node(config: &std::path::Path) -> (Running, String) {
    start_node_after(config, "")
}

/// The same, started through `sh` after `prefix` (such as a `ulimit`).
pub(crate) fn start_node_after(config: &std::path::Path, prefix: &str) -> (Running, String) {
    let script = format!("{prefix} exec \"$0\" --config \"$1\" node");
    let mut node = Running(
        Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_p2pd")])
            .arg(config)
            .env_remove("P2PD_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node"),
    );
    let mut first = String::new();
    BufReader::new(node.0.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the node prints its address");
    let addr = first.trim().to_owned();
    assert!(addr.parse::<p2pd_proto::addr::PeerAddr>().is_ok(), "{addr}");
    (node, addr)
}

/// Random bytes, from the OS.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("random");
    bytes
}

/// Wall-clock unix milliseconds, as signaling stamps them.
pub(crate) fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    u64::try_from(since.as_millis()).expect("ms")
}

/// The numbers of a node's stop line, by the word after each.
pub(crate) fn stop_counts(stderr: &str) -> std::collections::HashMap<String, u64> {
    let line = stderr
        .lines()
        .find(|l| l.contains("stopped; signaling:"))
        .unwrap_or_else(|| panic!("no stop line: {stderr}"));
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter_map(|w| Some((w[1].to_owned(), w[0].parse().ok()?)))
        .collect()
}

/// `p2pd connect ADDR --json` with `input`: whether it succeeded, its JSON
/// line and what it printed.
pub(crate) fn connect(
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

/// `p2pd rest` on a free loopback port, beside a broker of its own, once
/// it said it serves.
pub(crate) struct RestDaemon {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) api: std::net::SocketAddr,
    pub(crate) token: String,
    pub(crate) process: Running,
    pub(crate) broker: Running,
    /// What it printed on stderr after its first line.
    pub(crate) log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Starts it; `extra` is appended to the config (it may open tables, e.g.
/// `[rest]`).
pub(crate) fn start_rest(extra: &str) -> RestDaemon {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, port) = start_broker();
    let data = dir.path().join("data");
    let extra = format!("[node]\ndata_dir = \"{}\"\n{extra}", data.display());
    let config = write_config(dir.path(), port, &extra);
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut process = Running(
        p2pd()
            .arg("--config")
            .arg(&config)
            .args(["rest", "--listen", &api.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("p2pd rest"),
    );
    let (line, log) = await_serving(&mut process);
    assert!(line.contains(&api.to_string()), "{line}");
    let token = std::fs::read_to_string(data.join("rest-token"))
        .expect("the token file")
        .trim()
        .to_owned();
    RestDaemon {
        dir,
        api,
        token,
        process,
        broker,
        log,
    }
}

/// `p2pd rest` in namespace `ns` on loopback `port`, contacting nothing
/// (no brokers, STUN or NTP), its files under `dir/name`; `extra` is
/// appended to its config. Returns once it serves.
pub(crate) fn rest_in(
    ns: &p2pd_lab::Netns,
    dir: &std::path::Path,
    name: &str,
    port: u16,
    extra: &str,
) -> Running {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).expect("dir");
    let config = home.join("p2pd.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = \"{}\"\n[signaling]\nbrokers = []\n[stun]\nservers = []\n[ntp]\nservers = []\n\
             [portmap]\nprotocols = []\n{extra}",
            home.join("data").display()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let args = ns.exec_args(
        env!("CARGO_BIN_EXE_p2pd"),
        &["--config", &config, "rest", "--listen", &listen],
    );
    let mut child = Running(
        Command::new("ip")
            .args(&args)
            .env_remove("P2PD_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("p2pd rest"),
    );
    await_serving(&mut child);
    child
}

/// Reads a starting `p2pd rest`'s stderr (piped) up to its "REST API on"
/// line, the event that it serves; returns that line, and what it prints
/// later, collected by a thread (so its pipe never fills).
pub(crate) fn await_serving(
    rest: &mut Running,
) -> (String, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut stderr = rest.0.stderr.take().expect("stderr piped");
    let line = await_line(&mut stderr, "REST API on", "p2pd rest");
    let stderr = BufReader::new(stderr);
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for later in stderr.lines() {
            let Ok(later) = later else { return };
            if let Ok(mut log) = sink.lock() {
                log.push_str(&later);
                log.push('\n');
            }
        }
    });
    (line, log)
}
