//! `p2pd rest` with the built-in public defaults and no internet: it must
//! serve at once, and a connection to itself must work within seconds.
//! The daemon runs in a namespace whose default route leads into a second,
//! empty namespace, so every packet toward a public default dies there.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::Http;
use p2pd_lab::{Netns, netns::veth, require_lab};

/// DESIGN.md: offline, /version answers within 1 s ...
const VERSION_LIMIT: Duration = Duration::from_secs(1);
/// ... and open self + ECHO works within 3 s.
const ECHO_LIMIT: Duration = Duration::from_secs(3);

#[test]
fn the_api_serves_at_once_with_the_public_defaults_unreachable() {
    require_lab!();
    let host = Netns::new().expect("namespace");
    let void = Netns::new().expect("the empty namespace");
    veth(&host, "eth0", &void, "eth0").expect("veth");
    void.ip(&["link", "set", "eth0", "up"]).expect("void up");
    host.ip(&["addr", "add", "10.97.0.2/24", "dev", "eth0"])
        .expect("address");
    host.ip(&["link", "set", "eth0", "up"]).expect("up");
    host.ip(&["route", "add", "default", "via", "10.97.0.1"])
        .expect("default route into the void");

    let runtime = tempfile::tempdir().expect("runtime dir");
    let args = host.exec_args(env!("CARGO_BIN_EXE_p2pd"), &["rest"]);
    let started = Instant::now();
    let mut daemon = common::Running(
        Command::new("ip")
            .args(&args)
            .env_remove("P2PD_CONFIG")
            .env_remove("RUST_LOG")
            .env("XDG_RUNTIME_DIR", runtime.path())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("p2pd rest"),
    );
    common::await_serving(&mut daemon);
    let api: std::net::SocketAddr = "127.0.0.1:12333".parse().expect("literal");

    let (version_at, echo_at, echoed) = host
        .block_on(|| async move {
            let mut http = Http::connect(api);
            let version = http.get("/version", &[]);
            assert_eq!(version.status, 200);
            let version_at = started.elapsed();
            let open = http.get("/p2p/open/me/self", &[]);
            assert_eq!(open.status, 200, "{}", open.json());
            assert_eq!(open.json()["strategy"], "direct");
            let sent = http.get("/p2p/send/me/ECHO%20offline", &[]);
            assert_eq!(sent.status, 200);
            let got = http.get("/p2p/recv/me", &[]);
            let echo_at = started.elapsed();
            (version_at, echo_at, got.json()["data"].clone())
        })
        .expect("enter the namespace");
    assert_eq!(echoed, "offline");
    eprintln!("offline: /version after {version_at:?}, open self + ECHO after {echo_at:?}");
    assert!(version_at < VERSION_LIMIT, "/version after {version_at:?}");
    assert!(echo_at < ECHO_LIMIT, "open self + ECHO after {echo_at:?}");
}
