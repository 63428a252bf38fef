//! Strangers against the node's dial-backs and descriptors: the node keeps
//! serving genuine peers while they try to use up what it has.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::mqtt::Raw;
use common::{connect, random, start_broker, start_node, start_node_after, unix_ms, write_config};
use p2pd_proto::addr::PeerAddr;
use p2pd_proto::signal::{Body, Identity, Signal, seal};
use rumqttc::mqttbytes::QoS;

/// Publishes reverse requests signed by `me`, each asking to be dialled
/// back at `asker`, to `node`'s topic.
fn ask_reverse(port: u16, node: &PeerAddr, me: &Identity, asker: &str, count: usize) {
    let mut raw = Raw::connect(port, &format!("asker-{}", me.id()), true);
    let topic = format!("p2pd/{}", node.node_id);
    for _ in 0..count {
        let token: [u8; 16] = random();
        let request = Signal {
            id: format!("{:032x}", u128::from_be_bytes(random())),
            sent_ms: unix_ms(),
            body: Body::Reverse {
                token: token.iter().map(|b| format!("{b:02x}")).collect(),
                addr: asker.to_owned(),
            },
        };
        let envelope = seal(me, &node.node_id, &request, random()).expect("seal");
        raw.publish(&topic, QoS::AtMostOnce, false, &envelope);
    }
    raw.publish(&topic, QoS::AtLeastOnce, false, b"end");
    let _ = raw.read();
}

/// Accepts and holds connections on `listener`; what it accepted arrives
/// on the channel.
fn hold(listener: TcpListener) -> mpsc::Receiver<TcpStream> {
    let (accepted, held) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            if accepted.send(conn).is_err() {
                return;
            }
        }
    });
    held
}

/// What arrives on `held` until it is quiet for 2 s (at most `max`).
fn collect(held: &mpsc::Receiver<TcpStream>, max: usize) -> Vec<TcpStream> {
    let mut got = Vec::new();
    while got.len() < max {
        match held.recv_timeout(Duration::from_secs(2)) {
            Ok(conn) => got.push(conn),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn throwaway_keys_behind_one_address_cannot_take_every_dial_back() {
    let dir = tempfile::tempdir().expect("dir");
    let (_broker, port) = start_broker();
    // On loopback alone, so reverse requests may point at 127.0.0.x.
    let config = write_config(dir.path(), port, "[node]\ninterfaces = [\"lo\"]\n");
    let (_node, addr) = start_node(&config);
    let node: PeerAddr = addr.parse().expect("address");
    assert!(
        node.endpoints().all(|e| e.external.is_loopback()),
        "a loopback node: {addr}"
    );
    // A listener that accepts and holds, on an address of its own.
    let holder = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).expect("bind");
    let hold_port = holder.local_addr().expect("addr").port();
    let held = hold(holder);
    for _key in 0..16 {
        let me = Identity::from_secret(random());
        let asker = format!("0-[0,127.0.0.2,127.0.0.2,{hold_port},1,1,0]-0-{}", me.id());
        ask_reverse(port, &node, &me, &asker, 4);
    }
    // The node dials back as many as its limit for that address allows.
    let holding = collect(&held, 64);
    eprintln!(
        "64 requests from 16 keys: {} dial-backs held",
        holding.len()
    );
    assert!(!holding.is_empty(), "the node dialled back at all");
    assert!(
        holding.len() <= 8,
        "{} dial-backs to one address",
        holding.len()
    );
    // While they hold, a genuine reverse connect gets its dial-back.
    let (ok, info, stdout) = connect(&config, &addr, "reverse", b"ECHO genuine");
    assert!(ok, "{info}");
    assert_eq!(stdout, "genuine");
    drop(holding);
}

#[test]
fn a_thousand_idle_strangers_do_not_use_up_the_descriptors() {
    // Room in the test itself for its side of the connections.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("limit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise");
    if hard < 4096 {
        eprintln!("SKIPPED: the hard open-file limit ({hard}) leaves no room for the test");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (_broker, port) = start_broker();
    let config = write_config(dir.path(), port, "");
    // The common default: 1,024 open files.
    let (_node, addr) = start_node_after(&config, "ulimit -n 1024 &&");
    let peer: PeerAddr = addr.parse().expect("address");
    let endpoint = peer.endpoints().next().expect("an entry");
    let server = std::net::SocketAddr::new(endpoint.external, endpoint.port);
    let idle: Vec<TcpStream> = (0..1_100)
        .filter_map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() > 1_024, "only {} connections opened", idle.len());
    for strategy in ["direct", "reverse"] {
        let (ok, info, stdout) = connect(&config, &addr, strategy, b"ECHO still here");
        assert!(ok, "{strategy}: {info}");
        assert_eq!(stdout, "still here", "{strategy}");
    }
    // A plain client gets ECHO once idle strangers are gone.
    drop(idle);
    let mut plain = TcpStream::connect(server).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain.write_all(b"ECHO plain").expect("write");
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut plain, &mut got).expect("answer");
    assert_eq!(&got, b"plain");
}

#[test]
fn dial_backs_toward_the_nodes_own_host_are_one_per_asker() {
    let dir = tempfile::tempdir().expect("dir");
    let (_broker, port) = start_broker();
    let config = write_config(dir.path(), port, "");
    let (_node, addr) = start_node(&config);
    let node: PeerAddr = addr.parse().expect("address");
    let Some(own) = node
        .endpoints()
        .map(|e| e.external)
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
    else {
        eprintln!("SKIPPED: this machine has no IPv4 address but loopback ({addr})");
        return;
    };
    // A service of this host, on every address.
    let holder = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    let hold_port = holder.local_addr().expect("addr").port();
    let held = hold(holder);
    let me = Identity::from_secret(random());
    let plain = format!("0-[0,{own},{own},{hold_port},1,1,0]-0-{}", me.id());
    let mapped = format!(
        "0-0-[0,::ffff:{own},::ffff:{own},{hold_port},1,1,0]-{}",
        me.id()
    );
    ask_reverse(port, &node, &me, &plain, 4);
    ask_reverse(port, &node, &me, &mapped, 4);
    let holding = collect(&held, 8);
    eprintln!(
        "8 requests toward this host from one key: {} dial-backs",
        holding.len()
    );
    assert_eq!(holding.len(), 1, "one dial-back toward this host per asker");
    // Two nodes on one machine still reach each other meanwhile.
    let (ok, info, stdout) = connect(&config, &addr, "reverse", b"ECHO neighbour");
    assert!(ok, "{info}");
    assert_eq!(stdout, "neighbour");
    drop(holding);
}
