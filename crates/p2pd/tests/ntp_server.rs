//! `p2pd ntp-server` judged by a well-known client: chrony, asked to
//! measure without touching the clock (`chronyd -Q`), sees the offset the
//! server was told to run at. Loopback only.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CHRONYD: &str = "/usr/sbin/chronyd";

#[test]
fn chrony_measures_the_offset_the_server_runs_at() {
    if !std::path::Path::new(CHRONYD).exists() || !nix::unistd::geteuid().is_root() {
        p2pd_lab::report_skip(
            "ntp_server",
            "needs root and chronyd (scripts/test installs chrony as root)",
        );
        return;
    }
    let port = common::free_udp_port();
    let mut server = common::Running(
        common::p2pd()
            .args([
                "ntp-server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--offset-ms",
                "-250",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("ntp-server"),
    );
    let mut stderr = BufReader::new(server.0.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("its first line");
    assert!(line.contains("ntp server on"), "{line}");
    let out = Command::new(CHRONYD)
        .args(["-Q", "-t", "10", "-f", "/dev/null"])
        .arg(format!("server 127.0.0.1 port {port} iburst maxsamples 4"))
        .output()
        .expect("chronyd");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // "System clock wrong by -0.249912 seconds (ignored)"
    let wrong: f64 = text
        .split("wrong by ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("chrony measured nothing: {text}"));
    assert!((wrong + 0.250).abs() < 0.02, "chrony saw {wrong} s: {text}");
}
