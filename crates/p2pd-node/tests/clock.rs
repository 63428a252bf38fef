//! The node measures its clock against its NTP servers at start: against
//! a loopback server running 300 ms fast, it reports +300 ms; without
//! servers, unknown at once.

use std::time::Duration;

use p2pd_net::ntp::NtpServer;
use p2pd_node::Node;
use p2pd_node::clock::Clock;
use p2pd_node::config::NodeConfig;

fn loopback() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.interfaces = vec!["lo".into()];
    config
}

#[tokio::test]
async fn the_node_learns_how_far_its_clock_is() {
    let fast = NtpServer::start("127.0.0.1:0".parse().expect("lit"), 300_000_000)
        .await
        .expect("ntp server");
    let mut config = loopback();
    config.ntp_servers = vec![fast.local_addr().to_string().parse().expect("host:port")];
    let node = Node::start(config).await.expect("node");
    let clock = tokio::time::timeout(Duration::from_secs(5), node.clock_measured())
        .await
        .expect("measured within the limit");
    let Clock::Measured(offset) = clock else {
        panic!("{clock:?}");
    };
    assert!(
        (offset.offset_ns - 300_000_000).abs() < 20_000_000,
        "{offset:?}"
    );
    assert_eq!((offset.agreed, offset.outliers), (1, 0));
    node.close().await;

    let node = Node::start(loopback()).await.expect("node");
    assert_eq!(node.clock_measured().await, Clock::Unknown);
    node.close().await;
}
