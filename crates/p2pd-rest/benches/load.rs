//! REST load benchmark (not a test): `/version` from 32 keep-alive
//! connections, and the send + ECHO + recv round trip, each beside a
//! baseline measured in the same run:
//!
//! * `/version` against a bare hyper server answering the same JSON;
//! * the round trip against two `/version` requests on one connection (the
//!   HTTP part alone), and against a node connection's pipe used directly.
//!
//! Each server runs on a runtime and thread of its own, the load client on
//! another. Prints figures, ratios, errors (must be none) and the
//! process's memory before and after. Loopback only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use p2pd_net::pipe::SubKey;
use p2pd_node::Node;
use p2pd_node::config::{NodeConfig, Strategy};
use p2pd_rest::{RestConfig, Server};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Keep-alive connections for the `/version` load.
const CONNECTIONS: usize = 32;
/// How long each load runs.
const RUN: Duration = Duration::from_secs(3);
/// Round trips measured one after the other.
const ROUND_TRIPS: usize = 2000;

type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn main() {
    let rss_start = rss_kib();
    let stop = CancellationToken::new();
    let p2pd = serve_on_thread(stop.clone(), |listen| async move {
        let node = Node::start(loopback_node()).await.expect("node");
        let mut rest = RestConfig::default();
        rest.listen = listen;
        let server = Server::bind(node, &rest, "bench".into())
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        (
            addr,
            Box::pin(server.serve(CancellationToken::new())) as Serving,
        )
    });
    let bare = serve_on_thread(stop.clone(), |listen| async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (addr, Box::pin(bare_server(listener)) as Serving)
    });
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    client.block_on(async {
        println!("# REST load: {CONNECTIONS} keep-alive connections, {RUN:?} per server");
        let base = version_load(bare).await;
        let ours = version_load(p2pd).await;
        println!(
            "version: p2pd {:.0} req/s ({} errors), bare hyper {:.0} req/s ({} errors)",
            ours.0, ours.1, base.0, base.1
        );
        println!("ratio version {:.3}", ours.0 / base.0);
        let rss_loaded = rss_kib();
        match round_trips(p2pd).await {
            Ok(t) => {
                println!(
                    "send+ECHO+recv: REST median {:.1} us p99 {:.1} us ({} errors); \
                     two /version requests median {:.1} us; the pipe alone median {:.1} us",
                    t.rest.0, t.rest.1, t.errors, t.http.0, t.pipe.0
                );
                println!("ratio round_trip_vs_http {:.3}", t.http.0 / t.rest.0);
                println!("ratio round_trip_vs_pipe {:.3}", t.pipe.0 / t.rest.0);
            }
            Err(err) => println!("# ratio round_trip not measured: {err}"),
        }
        println!(
            "memory: {rss_start} KiB at start, {rss_loaded} KiB after the /version load, {} KiB at the end",
            rss_kib()
        );
    });
    stop.cancel();
}

/// A node on loopback that contacts nobody.
fn loopback_node() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.interfaces = vec!["lo".into()];
    config
}

/// Starts a server on a thread and runtime of its own; returns its address.
fn serve_on_thread<F, Fut>(stop: CancellationToken, make: F) -> SocketAddr
where
    F: FnOnce(SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = (SocketAddr, Serving)>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (addr, serving) = make(SocketAddr::from(([127, 0, 0, 1], 0))).await;
            let _ = tx.send(addr);
            tokio::select! {
                () = serving => {}
                () = stop.cancelled() => {}
            }
        });
    });
    rx.recv().expect("server address")
}

/// A hyper server that answers every request with the `/version` JSON.
async fn bare_server(listener: TcpListener) {
    let body = Bytes::from_static(
        b"{\n  \"author\": \"p2pd contributors\",\n  \"error\": 0,\n  \"title\": \"P2PD\",\n  \"version\": \"0.1.0\"\n}\n",
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| {
                let mut response = hyper::Response::new(Full::new(body.clone()));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

async fn get(send: &mut Sender, path: &str) -> Result<Bytes, String> {
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(5), async {
        send.ready().await?;
        send.send_request(req).await
    })
    .await
    .map_err(|_| "no answer in 5 s".to_owned())?
    .map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if ok {
        Ok(body)
    } else {
        Err(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Requests per second and errors: `/version` on every connection at once.
async fn version_load(addr: SocketAddr) -> (f64, u64) {
    let until = Instant::now() + RUN;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let Ok(mut send) = connect(addr).await else {
                return (0u64, 1u64);
            };
            let (mut done, mut errors) = (0, 0);
            while Instant::now() < until {
                match get(&mut send, "/version").await {
                    Ok(_) => done += 1,
                    Err(_) => errors += 1,
                }
            }
            (done, errors)
        }));
    }
    let (mut done, mut errors) = (0, 0);
    for task in tasks {
        let (d, e) = task.await.unwrap_or((0, 1));
        done += d;
        errors += e;
    }
    (done as f64 / started.elapsed().as_secs_f64(), errors)
}

/// Median and p99 in microseconds, through REST and through a pipe alone,
/// and the REST errors.
async fn round_trips(api: SocketAddr) -> Result<RoundTrips, String> {
    let mut send = connect(api).await?;
    let mut http = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        get(&mut send, "/version").await?;
        get(&mut send, "/version").await?;
        http.push(started.elapsed());
    }
    get(&mut send, "/p2p/open/bench/self").await?;
    let mut errors = 0;
    let mut rest = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        let ok = get(&mut send, "/p2p/send/bench/ECHO%20ping").await.is_ok()
            && get(&mut send, "/p2p/recv/bench").await.is_ok();
        if ok {
            rest.push(started.elapsed());
        } else {
            errors += 1;
        }
    }
    get(&mut send, "/p2p/close/bench").await?;
    // The same exchange without HTTP: a node connected to itself, its
    // pipe used directly.
    let node = Node::start(loopback_node())
        .await
        .map_err(|e| e.to_string())?;
    let conn = node
        .connect(&node.addr(), &[Strategy::Direct])
        .await
        .map_err(|e| e.to_string())?;
    let all = SubKey::all();
    conn.pipe.subscribe(&all).map_err(|e| e.to_string())?;
    let mut pipe = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        conn.pipe
            .send(b"ECHO ping", None)
            .await
            .map_err(|e| e.to_string())?;
        conn.pipe
            .recv(&all, Some(Duration::from_secs(5)))
            .await
            .map_err(|e| e.to_string())?;
        pipe.push(started.elapsed());
    }
    // One answer per request: nothing may be left over.
    if conn
        .pipe
        .recv(&all, Some(Duration::from_millis(100)))
        .await
        .is_ok()
    {
        return Err("the pipe had more answers than requests".into());
    }
    node.close().await;
    Ok(RoundTrips {
        rest: percentiles(&mut rest),
        http: percentiles(&mut http),
        pipe: percentiles(&mut pipe),
        errors,
    })
}

/// Median and p99 (microseconds) of each way of doing the exchange.
struct RoundTrips {
    /// send + recv through REST.
    rest: (f64, f64),
    /// Two `/version` requests: the HTTP part alone.
    http: (f64, f64),
    /// The node connection's pipe, no HTTP.
    pipe: (f64, f64),
    errors: u64,
}

fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let last = samples.len().saturating_sub(1) as f64;
        samples
            .get((last * q) as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    };
    (at(0.5), at(0.99))
}

/// This process's resident memory.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
