//! The command line's contract: help, exit codes and one-line errors.

use std::io::Write;
use std::process::{Command, Output};

fn p2pd(args: &[&str], env_config: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2pd"));
    cmd.args(args)
        .env_remove("P2PD_CONFIG")
        .env_remove("RUST_LOG");
    if let Some(path) = env_config {
        cmd.env("P2PD_CONFIG", path);
    }
    cmd.output().expect("p2pd runs")
}

/// A config file deleted on drop.
struct ConfigFile(tempfile::NamedTempFile);

impl ConfigFile {
    fn path(&self) -> &str {
        self.0.path().to_str().expect("temp paths are UTF-8")
    }
}

fn config_file(text: &str) -> ConfigFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    ConfigFile(file)
}

#[test]
fn help_lists_the_subcommands() {
    let out = p2pd(&["--help"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "interfaces",
        "nat",
        "stun-server",
        "broker",
        "node",
        "connect",
        "rest",
        "demo",
    ] {
        assert!(text.contains(command), "{command}: {text}");
        assert!(
            p2pd(&[command, "--help"], None).status.success(),
            "{command}"
        );
    }
}

#[test]
fn rest_on_a_taken_port_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let file = config_file(
        "[signaling]\nbrokers = []\n[stun]\nservers = []\n[ntp]\nservers = []\n[portmap]\nprotocols = []\n",
    );
    let runtime = tempfile::tempdir().expect("runtime dir");
    let out = Command::new(env!("CARGO_BIN_EXE_p2pd"))
        .args(["--config", file.path(), "rest", "--listen", &listen])
        .env_remove("P2PD_CONFIG")
        .env_remove("RUST_LOG")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&listen),
        "{stderr}"
    );
}

#[test]
fn unknown_config_key_exits_2_with_one_line_naming_key_and_line() {
    let file = config_file("[stun]\nservers = []\n\n[node]\nprot = 1\n");
    let out = p2pd(&["interfaces", "--config", file.path()], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("line 5"), "{stderr}");
    assert!(stderr.contains("node.prot"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn config_comes_from_the_environment_when_no_flag_is_given() {
    let file = config_file("[rest]\nlisten = \"not an address\"\n");
    let out = p2pd(&["interfaces"], Some(file.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rest.listen"));
}

#[test]
fn the_flag_wins_over_the_environment() {
    let good = config_file("[stun]\nservers = []\n");
    let bad = config_file("[bogus]\n");
    let out = p2pd(&["interfaces", "--config", good.path()], Some(bad.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_config_file_is_a_one_line_error() {
    let out = p2pd(&["interfaces", "--config", "/nonexistent/p2pd.toml"], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/p2pd.toml"), "{stderr}");
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let id = "a".repeat(64);
    let good_addr = format!("-0-0-{id}");
    for args in [
        &["interfaces", "--no-such-flag"][..],
        &["no-such-command"],
        &["connect"],
        &["connect", "-0-0-nothex"],
        &["connect", &good_addr, "--linger", "99999"],
        &["connect", &good_addr, "--linger", "-1"],
        &["broker", "--listen", "nowhere"],
        &["rest", "--listen", "nowhere"],
        &["demo", "extra"],
        &["ntp-server", "--listen", "127.0.0.1:1", "--offset-ms", "x"],
        &["ntp-server"],
    ] {
        let out = p2pd(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn an_empty_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let file = config_file("[stun]\nservers = []\n[node]\ndata_dir = \"\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_p2pd"))
        .args(["--config", file.path(), "node"])
        .current_dir(dir.path())
        .env_remove("P2PD_CONFIG")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("data_dir"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing written to the current directory"
    );
}

#[test]
fn interfaces_json_is_one_object_with_loopback() {
    let out = p2pd(&["interfaces", "--json"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1);
    assert!(text.starts_with("{\"interfaces\":["), "{text}");
    assert!(text.contains("\"loopback\":true"), "{text}");
}
