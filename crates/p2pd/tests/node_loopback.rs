//! A node, the embedded broker and `p2pd connect` on one machine, no root
//! needed: the README's offline example as a test.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{connect, p2pd, setup};

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
    assert_eq!(out.status.code(), Some(2));
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
