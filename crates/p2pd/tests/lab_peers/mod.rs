//! Nodes in the lab for the connect tests: `p2pd broker` twice, `p2pd
//! stun-server` and `p2pd ntp-server` on the internet segment, one config
//! file for every node, and `p2pd node` / `p2pd connect` run in hosts.

#![allow(dead_code)]

pub(crate) mod bulk;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p2pd_lab::topology::{
    BROKER1_V4, BROKER2_V4, NTP_V4, STUN_ALT_V4, STUN_V4, TURN_PORT, TURN_USER, TURN_V4,
};
use p2pd_lab::{Lab, LabSpec, Service};
use serde_json::Value;

pub(crate) const LIMIT: Duration = Duration::from_secs(20);
pub(crate) const STUN_PORTS: (u16, u16) = (3490, 3491);
/// The lab's routers have no port mapping unless a test asks for it
/// (`portmap_lab`): nodes leave them alone, and their sockets stay few.
pub(crate) const PORTMAP_OFF: &str = "[portmap]\nprotocols = []\n";

pub(crate) fn lab(spec: LabSpec) -> Lab {
    let mut lab = Lab::up(&spec).expect("lab");
    let p2pd = env!("CARGO_BIN_EXE_p2pd");
    for (n, ip) in [(1, BROKER1_V4), (2, BROKER2_V4)] {
        let listen = format!("{ip}:1883");
        lab.spawn(
            &format!("broker{n}"),
            "broker",
            p2pd,
            &["broker", "--listen", &listen],
        )
        .expect("broker");
        lab.wait_listening("broker", true, listen.parse().expect("addr"), LIMIT)
            .expect("broker up");
    }
    let primary = format!("{STUN_V4}:{}", STUN_PORTS.0);
    let alternate = format!("{STUN_ALT_V4}:{}", STUN_PORTS.1);
    lab.spawn(
        "stun",
        "stun",
        p2pd,
        &[
            "stun-server",
            "--primary",
            &primary,
            "--alternate",
            &alternate,
        ],
    )
    .expect("stun server");
    lab.wait_listening("stun", false, primary.parse().expect("addr"), LIMIT)
        .expect("stun up");
    let ntp = format!("{NTP_V4}:123");
    lab.spawn("ntp", "ntp", p2pd, &["ntp-server", "--listen", &ntp])
        .expect("ntp server");
    lab.wait_listening("ntp", false, ntp.parse().expect("addr"), LIMIT)
        .expect("ntp up");
    std::fs::write(
        lab.dir().join("p2pd.toml"),
        format!(
            "{PORTMAP_OFF}[signaling]\nbrokers = [\"mqtt://{BROKER1_V4}:1883\", \"mqtt://{BROKER2_V4}:1883\"]\n\
             [stun]\nservers = [\"{primary}\"]\n[ntp]\nservers = [\"{ntp}\"]\n\
             [connect]\ndirect_ms = 1000\nreverse_ms = 3000\npunch_ms = 5000\nrelay_ms = 5000\ntimeout_ms = 6000\n"
        ),
    )
    .expect("config");
    lab
}

/// The lab's TURN server (coturn on the turn host), as a config entry.
pub(crate) fn turn_entry(transport: &str) -> String {
    let (user, password, realm) = TURN_USER;
    format!(
        "[[turn.servers]]\naddress = \"{TURN_V4}:{TURN_PORT}\"\ntransport = \"{transport}\"\n\
         username = \"{user}\"\npassword = \"{password}\"\nrealm = \"{realm}\"\n"
    )
}

/// [`lab`] with coturn as the TURN server every node is configured with,
/// reached over `transport`.
pub(crate) fn lab_with_turn(spec: LabSpec, transport: &str) -> Lab {
    let lab = lab(spec.service(Service::Turn));
    let path = lab.dir().join("p2pd.toml");
    let mut config = std::fs::read_to_string(&path).expect("config");
    config.push_str(&turn_entry(transport));
    std::fs::write(&path, config).expect("config");
    lab
}

pub(crate) fn config(lab: &Lab) -> String {
    lab.dir().join("p2pd.toml").display().to_string()
}

/// Starts `p2pd node` in `host`; returns its address (its first line).
pub(crate) fn start_node(lab: &mut Lab, name: &str, host: &str) -> (String, u32) {
    start_node_via(lab, name, host, &[])
}

/// [`start_node`] under a wrapper command (such as `faketime`).
pub(crate) fn start_node_via(
    lab: &mut Lab,
    name: &str,
    host: &str,
    wrapper: &[&str],
) -> (String, u32) {
    let config = config(lab);
    let p2pd = env!("CARGO_BIN_EXE_p2pd");
    let node = [p2pd, "--config", &config, "node"];
    let command: Vec<&str> = wrapper.iter().copied().chain(node).collect();
    let pid = lab
        .spawn(name, host, command[0], &command[1..])
        .expect("node");
    let log = lab.dir().join(format!("{name}.log"));
    let started = Instant::now();
    // The address is a line of its own, without spaces (log lines have
    // some).
    let line = wait_for_line(&log, |l| {
        l.contains('[') && !l.contains(' ') && l.ends_with(|c: char| c.is_ascii_hexdigit())
    });
    // Discovery ends within 3 s; the rest is process start-up.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the address took {took:?}");
    (line, pid)
}

pub(crate) struct Outcome {
    pub(crate) info: Value,
    pub(crate) stdout: String,
    pub(crate) success: bool,
}

/// Runs `p2pd connect ADDR --json` in `host` with `input` on stdin.
pub(crate) fn connect(
    lab: &Lab,
    host: &str,
    addr: &str,
    strategies: &str,
    input: &[u8],
) -> Outcome {
    let config = config(lab);
    let args = lab.host(host).exec_args(
        env!("CARGO_BIN_EXE_p2pd"),
        &[
            "--config",
            &config,
            "connect",
            addr,
            "--json",
            "--strategies",
            strategies,
            "--linger",
            "0.5",
        ],
    );
    let mut child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn connect");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("connect ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let info = stderr
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON line on stderr:\n{stderr}"));
    Outcome {
        info,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        success: out.status.success(),
    }
}

pub(crate) fn report(what: &str, outcome: &Outcome) {
    println!(
        "{what}: {} in {} ms",
        outcome.info["strategy"], outcome.info["ms"]
    );
}

/// Polls a log file until a line satisfies `wanted`.
pub(crate) fn wait_for_line(log: &Path, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| wanted(l)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no such line in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
