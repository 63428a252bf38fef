//! Interface enumeration and binding inside a network namespace whose
//! addresses the test chose itself.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use p2pd_lab::{Netns, netns::veth, require_lab};
use p2pd_net::bind::{self, BindOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A_V4: &str = "10.99.0.1";
const B_V4: &str = "10.99.0.2";
const A_V6: &str = "fd00:99::1";
const B_V6: &str = "fd00:99::2";
const A_LL: &str = "fe80::a";
const B_LL: &str = "fe80::b";

/// Two namespaces joined by `eth0`—`eth0`; each end carries exactly the
/// addresses below (no kernel-made link-local), DAD off.
fn pair() -> (Netns, Netns) {
    let a = Netns::new().expect("namespace a");
    let b = Netns::new().expect("namespace b");
    veth(&a, "eth0", &b, "eth0").expect("veth");
    for (ns, v4, v6, ll) in [(&a, A_V4, A_V6, A_LL), (&b, B_V4, B_V6, B_LL)] {
        ns.ip(&["link", "set", "eth0", "addrgenmode", "none"])
            .expect("addrgenmode");
        ns.ip(&["link", "set", "eth0", "up"]).expect("up");
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])
            .expect("v4");
        for v6 in [format!("{v6}/64"), format!("{ll}/64")] {
            ns.ip(&["-6", "addr", "add", &v6, "dev", "eth0", "nodad"])
                .expect("v6");
        }
    }
    a.ip(&["route", "add", "default", "via", B_V4])
        .expect("v4 default");
    a.ip(&["-6", "route", "add", "default", "via", B_V6])
        .expect("v6 default");
    (a, b)
}

fn p2pd_interfaces(ns: &Netns) -> Value {
    let out = ns
        .exec(
            env!("CARGO_BIN_EXE_p2pd"),
            &["interfaces", "--json"],
            Duration::from_secs(10),
        )
        .expect("p2pd interfaces --json runs");
    serde_json::from_str(&out.stdout).expect("stdout is one JSON object")
}

fn named<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["interfaces"]
        .as_array()
        .expect("interfaces is a list")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no interface {name} in {listing}"))
}

#[test]
fn interfaces_json_lists_exactly_what_the_namespace_holds() {
    require_lab!();
    let (a, _b) = pair();

    let listing = p2pd_interfaces(&a);

    assert_eq!(
        listing["interfaces"].as_array().map(Vec::len),
        Some(2),
        "{listing}"
    );
    let eth0 = named(&listing, "eth0");
    let index = eth0["index"].as_u64().expect("index");
    assert_eq!(eth0["up"], true);
    assert_eq!(eth0["ipv4"], serde_json::json!([format!("{A_V4}/24")]));
    assert_eq!(
        eth0["ipv6_global"],
        serde_json::json!([format!("{A_V6}/64")])
    );
    assert_eq!(
        eth0["ipv6_link_local"],
        serde_json::json!([{"ip": A_LL, "prefix": 64, "scope_id": index}])
    );
    assert_eq!(eth0["gateway_v4"], B_V4);
    assert_eq!(eth0["gateway_v6"], B_V6);
    assert_eq!(eth0["default_v4"], true);
    assert_eq!(eth0["default_v6"], true);
    assert_eq!(
        eth0["routes"]["ipv4"][0]["nic"],
        serde_json::json!([format!("{A_V4}/24")])
    );
    assert_eq!(eth0["routes"]["ipv6"][0]["external"], format!("{A_V6}/64"));

    let lo = named(&listing, "lo");
    assert_eq!(lo["loopback"], true);
    assert_eq!(lo["default_v4"], false);
}

#[test]
fn text_listing_names_every_address() {
    require_lab!();
    let (a, _b) = pair();
    let out = a
        .exec(
            env!("CARGO_BIN_EXE_p2pd"),
            &["interfaces"],
            Duration::from_secs(10),
        )
        .expect("p2pd interfaces runs");
    for expected in [A_V4, A_V6, A_LL, "default-ipv4", "gateway ipv4 10.99.0.2"] {
        assert!(
            out.stdout.contains(expected),
            "{expected} missing from:\n{}",
            out.stdout
        );
    }
}

#[test]
fn binds_and_talks_on_every_assigned_address() {
    require_lab!();
    let (a, b) = pair();
    let a_index = a.if_index("eth0").expect("eth0 in a");
    let b_index = b.if_index("eth0").expect("eth0 in b");
    let targets = [
        (addr(A_V4, 0), addr(B_V4, 0)),
        (addr(A_V6, 0), addr(B_V6, 0)),
        (scoped(A_LL, a_index), scoped(B_LL, b_index)),
    ];

    for (a_addr, b_addr) in targets {
        // Servers bound in namespace a, on the exact address.
        let (tcp, udp) = a
            .block_on(|| async move {
                let tcp = bind::tcp_listener(a_addr, &BindOptions::default()).expect("tcp bind");
                let udp = bind::udp(a_addr, &BindOptions::default()).expect("udp bind");
                (tcp.into_std().expect("std"), udp.into_std().expect("std"))
            })
            .expect("enter a");
        let tcp_addr = tcp.local_addr().expect("addr");
        let udp_addr = udp.local_addr().expect("addr");
        assert_eq!(tcp_addr.ip(), a_addr.ip());

        // Clients bound in namespace b to its own address; the servers are
        // driven from this thread (sockets keep their namespace).
        let client = b.block_on(|| async move {
            let tcp = bind::tcp_socket(b_addr, &BindOptions::default()).expect("tcp client bind");
            let stream = tcp.connect(tcp_addr).await.expect("tcp connect");
            let udp = bind::udp(b_addr, &BindOptions::default()).expect("udp client bind");
            udp.send_to(b"ping", udp_addr).await.expect("udp send");
            (
                stream.into_std().expect("std"),
                udp.local_addr().expect("addr"),
            )
        });
        let (stream, udp_client) = client.expect("enter b");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(tcp).expect("tokio listener");
            let (mut accepted, from) = listener.accept().await.expect("accept");
            assert_eq!(from.ip(), b_addr.ip());
            let mut stream = tokio::net::TcpStream::from_std(stream).expect("tokio stream");
            stream.write_all(b"hello").await.expect("write");
            let mut buf = [0u8; 5];
            accepted.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"hello");

            let udp = tokio::net::UdpSocket::from_std(udp).expect("tokio udp");
            let mut buf = [0u8; 16];
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
                .await
                .expect("datagram within 5 s")
                .expect("recv");
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(from, udp_client);
        });
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().expect("test literal"), port)
}

fn scoped(ip: &str, scope_id: u32) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        ip.parse().expect("test literal"),
        0,
        0,
        scope_id,
    ))
}
