//! `p2pd demo`: the manual's REST tutorial in one command, offline. It
//! starts its own broker, STUN server, node and REST API on loopback
//! (never the public defaults, never the configuration file), walks
//! through the tutorial's requests, prints each with its result and time,
//! and exits 0 when every step gave what the manual says.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use p2pd_net::stun::StunServer;
use p2pd_node::Node;
use p2pd_node::broker::Broker;
use p2pd_node::config::NodeConfig;
use p2pd_proto::stun::server::ServerAddresses;
use p2pd_rest::{RestConfig, Server, token};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::output;

/// Every step waits at most this long for its answer.
const STEP_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// What the demo started, stopped again at the end.
struct Services {
    node: Node,
    stop: CancellationToken,
    api: SocketAddr,
}

pub(crate) async fn run(_args: &Args) -> anyhow::Result<bool> {
    let services = start().await?;
    let api = services.api;
    let passed = tour(api).await;
    services.stop.cancel();
    services.node.close().await;
    let passed = passed?;
    output::status(format_args!(
        "{}",
        if passed {
            "demo done: every step answered as the manual says"
        } else {
            "demo FAILED: a step did not answer as the manual says"
        }
    ));
    Ok(passed)
}

async fn start() -> anyhow::Result<Services> {
    let loopback = Ipv4Addr::LOCALHOST;
    let stop = CancellationToken::new();
    let broker = Broker::bind(SocketAddr::from((loopback, 0)))
        .await
        .context("starting the broker")?;
    let broker_addr = broker.local_addr().context("starting the broker")?;
    tokio::spawn(broker.serve(stop.clone()));
    let stun = start_stun().await?;
    let stun_addr = stun.0;
    let mut config = NodeConfig::default();
    config.interfaces = vec!["lo".into()];
    config.brokers = vec![
        format!("mqtt://{broker_addr}")
            .parse()
            .context("broker url")?,
    ];
    config.stun_servers = vec![stun_addr.to_string().parse().context("stun address")?];
    let node = Node::start(config).await.context("starting the node")?;
    let mut rest = RestConfig::default();
    rest.listen = SocketAddr::from((loopback, 0));
    let server = Server::bind(node.clone(), &rest, token::generate())
        .await
        .context("starting the REST API")?;
    let api = server.local_addr().context("the REST listener")?;
    tokio::spawn(server.serve(stop.clone()));
    let stun_server = stun.1;
    let stop_stun = stop.clone();
    tokio::spawn(async move {
        stop_stun.cancelled().await;
        stun_server.stop().await;
    });
    output::line(format_args!(
        "p2pd demo: the manual's REST tutorial, on loopback only\n  broker  mqtt://{broker_addr}\n  stun    {stun_addr}\n  node    {}\n  api     http://{api}/",
        node.id()
    ));
    // The manual's steps start with a node that knows its address.
    tokio::time::timeout(Duration::from_secs(5), node.discovered())
        .await
        .context("node discovery did not end")?;
    Ok(Services { node, stop, api })
}

/// A STUN server on a free loopback port.
async fn start_stun() -> anyhow::Result<(SocketAddr, StunServer)> {
    let mut last = None;
    // The server takes one port for UDP and TCP: find one free for both
    // (TCP first, as its ports linger in TIME_WAIT), retrying if another
    // program takes it in between.
    for _ in 0..20 {
        let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = tcp.local_addr()?;
        let Ok(udp) = std::net::UdpSocket::bind(addr) else {
            continue;
        };
        drop((tcp, udp));
        match StunServer::start(ServerAddresses {
            primary: addr,
            alternate: None,
        })
        .await
        {
            Ok(server) => return Ok((addr, server)),
            Err(err) => last = Some(err),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no port"), anyhow::Error::from))
        .context("starting the STUN server")
}

/// One HTTP/1.1 connection, kept alive for every step.
struct Client {
    send: SendRequest<Full<Bytes>>,
    api: SocketAddr,
}

/// A step's answer.
struct Answer {
    status: u16,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Client {
    async fn connect(api: SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(api).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client { send, api })
    }

    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", self.api.port()))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::copy_from_slice(body)))?;
        // The connection takes the next request once it has finished the
        // last one.
        let response = tokio::time::timeout(STEP_LIMIT, async {
            self.send.ready().await?;
            self.send.send_request(req).await
        })
        .await
        .context("no answer in time")??;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}

/// `path` with the manual's subscription patterns (1.4.3, corrected):
/// `[hH]e[l]+o` for the message, `[\s\S]+` for the sender, encoded.
macro_rules! with_patterns {
    ($path:literal) => {
        concat!(
            $path,
            "/msg_p/%5BhH%5De%5Bl%5D%2Bo/addr_p/%5B%5Cs%5CS%5D%2B"
        )
    };
}

/// Runs the steps; false when one did not answer as expected.
async fn tour(api: SocketAddr) -> anyhow::Result<bool> {
    let mut client = Client::connect(api)
        .await
        .context("connecting to the API")?;
    let mut ok = true;
    let steps: &[(&str, &str, &[u8], Check)] = &[
        ("GET", "/version", b"", Check::Field("title", "P2PD")),
        ("GET", "/p2p/addr", b"", Check::Has("addr")),
        (
            "GET",
            "/p2p/open/demo/self",
            b"",
            Check::Field("strategy", "direct"),
        ),
        (
            "GET",
            "/p2p/send/demo/ECHO%20hello,%20world!",
            b"",
            Check::Number("sent", 18),
        ),
        (
            "GET",
            "/p2p/recv/demo",
            b"",
            Check::Field("data", "hello, world!"),
        ),
        (
            "GET",
            with_patterns!("/p2p/sub/demo"),
            b"",
            Check::Has("sub"),
        ),
        (
            "GET",
            "/p2p/send/demo/ECHO%20Hello,%20world!",
            b"",
            Check::Number("sent", 18),
        ),
        (
            "GET",
            with_patterns!("/p2p/recv/demo"),
            b"",
            Check::Field("data", "Hello, world!"),
        ),
        // Every matching queue gets a copy: the everything-queue too.
        (
            "GET",
            "/p2p/recv/demo",
            b"",
            Check::Field("data", "Hello, world!"),
        ),
        (
            "DELETE",
            with_patterns!("/p2p/sub/demo"),
            b"",
            Check::Has("unsub"),
        ),
        (
            "POST",
            "/p2p/binary/demo",
            b"ECHO \xc8\xc9\xca\xcb",
            Check::Number("sent", 9),
        ),
        (
            "GET",
            "/p2p/binary/demo",
            b"",
            Check::Bytes(b"\xc8\xc9\xca\xcb"),
        ),
    ];
    for (n, (method, path, body, check)) in steps.iter().enumerate() {
        let started = Instant::now();
        let answer = client.request(method, path, body).await;
        let took = started.elapsed();
        let (passed, shown) = match answer {
            Ok(answer) => check.judge(&answer),
            Err(err) => (false, format!("{err:#}")),
        };
        ok &= passed;
        print_step(n + 1, &format!("{method} {path}"), took, passed, &shown);
    }
    let started = Instant::now();
    let piped = pipe(api).await;
    let (passed, shown) = match piped {
        Ok(echo) if echo == b"hello, pipe" => (true, "\"hello, pipe\" came back".to_owned()),
        Ok(echo) => (false, format!("got {:?}", String::from_utf8_lossy(&echo))),
        Err(err) => (false, format!("{err:#}")),
    };
    ok &= passed;
    print_step(
        steps.len() + 1,
        "GET /p2p/pipe/demo (raw socket)",
        started.elapsed(),
        passed,
        &shown,
    );
    let started = Instant::now();
    let closed = client.request("GET", "/p2p/close/demo", b"").await?;
    let (passed, shown) = Check::Field("closed", "demo").judge(&closed);
    ok &= passed;
    print_step(
        steps.len() + 2,
        "GET /p2p/close/demo",
        started.elapsed(),
        passed,
        &shown,
    );
    Ok(ok)
}

/// The manual's relay: a plain socket, its exact request, then raw bytes.
async fn pipe(api: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(api).await?;
    stream
        .write_all(b"GET /p2p/pipe/demo HTTP/1.1\r\nOrigin: null\r\n\r\n")
        .await?;
    stream.write_all(b"ECHO hello, pipe").await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < b"hello, pipe".len() {
        let n = tokio::time::timeout(STEP_LIMIT, stream.read(&mut buf))
            .await
            .context("no echo in time")??;
        if n == 0 {
            bail!("the relay closed after {} bytes", got.len());
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

fn print_step(n: usize, what: &str, took: Duration, passed: bool, shown: &str) {
    output::line(format_args!(
        "{n:>3}. {what}\n     {} {:.2} ms  {shown}",
        if passed { "ok" } else { "FAILED" },
        took.as_secs_f64() * 1000.0
    ));
}

/// What a step's answer must hold.
enum Check {
    /// A string field with this value.
    Field(&'static str, &'static str),
    /// A number field with this value.
    Number(&'static str, u64),
    /// A field, whatever its value.
    Has(&'static str),
    /// Exactly these bytes.
    Bytes(&'static [u8]),
}

impl Check {
    fn judge(&self, answer: &Answer) -> (bool, String) {
        let json = answer.json();
        let text = || {
            let compact = serde_json::to_string(&json).unwrap_or_default();
            format!("{} {compact}", answer.status)
        };
        match self {
            Check::Field(key, want) => (json[key] == *want, text()),
            Check::Number(key, want) => (json[key] == *want, text()),
            Check::Has(key) => (answer.status == 200 && !json[key].is_null(), text()),
            Check::Bytes(want) => (
                answer.status == 200 && answer.body.as_ref() == *want,
                format!("{} {:02x?}", answer.status, answer.body.as_ref()),
            ),
        }
    }
}
