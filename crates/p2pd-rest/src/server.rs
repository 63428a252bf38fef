//! The HTTP driver: accepts connections, applies the access rules, hands
//! requests to [`Api`] and answers them; hyper does HTTP/1.1 (keep-alive,
//! Content-Length, chunked bodies, Upgrade).
//!
//! The manual's pipe request (`GET /p2p/pipe/<name>`, no Upgrade, then raw
//! bytes) is not HTTP that hyper can hand over, so the first request of
//! each connection is looked at before hyper sees it: a pipe request is
//! parsed here and its connection relayed; any other goes to hyper, with
//! the bytes read so far replayed.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use p2pd_node::Node;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::access::{Marks, Policy, Verdict};
use crate::api::{Api, Reply};
use crate::conns::{Named, RelayClaim};
use crate::error::ApiError;
use crate::route::{self, Endpoint, Method};
use crate::{RestConfig, relay};

/// HTTP connections served at once; more are answered 503 and closed.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// The largest request body (`POST /p2p/binary`).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Bodies read at once: at most this many times [`MAX_BODY`] in memory.
const MAX_BODIES: usize = 8;
/// How long a client may take to send a body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest request head.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send a whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers a request may have (hyper's own limit is 100).
const MAX_HEADERS: usize = 100;
/// The prefix of the request line the server parses itself.
const PIPE_PREFIX: &[u8] = b"GET /p2p/pipe/";

/// The headers a browser's request may carry.
const ALLOW_HEADERS: &str = "content-type, x-p2pd-token, x-requested-with";
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";

type Body = Full<Bytes>;

/// A REST server, bound and ready to serve.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    api: Api,
    policy: Policy,
    /// One per HTTP connection, and per relay once upgraded.
    slots: Arc<Semaphore>,
    bodies: Semaphore,
    /// Cancelled when the server stops: relays end too.
    stopping: CancellationToken,
}

impl Server {
    /// Binds `config.listen` for `node`; `token` is this run's API token.
    pub async fn bind(node: Node, config: &RestConfig, token: String) -> io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                api: Api::new(node),
                policy: Policy {
                    token,
                    allow_null_origin: config.allow_null_origin,
                },
                slots: Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS)),
                bodies: Semaphore::new(MAX_BODIES),
                stopping: CancellationToken::new(),
            }),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled, then closes every HTTP
    /// connection and every connection the API opened.
    pub async fn serve(self, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            while tasks.try_join_next().is_some() {}
            match accepted {
                Ok((stream, peer)) => {
                    let shared = self.shared.clone();
                    tasks.spawn(async move {
                        match shared.slots.clone().try_acquire_owned() {
                            Ok(_permit) => connection(shared, stream, peer).await,
                            Err(_) => refuse(stream, &ApiError::Busy).await,
                        }
                    });
                }
                // Out of descriptors, or a connection reset before it was
                // accepted: the listener is fine, try again shortly.
                Err(err) => {
                    tracing::debug!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        self.shared.stopping.cancel();
        tasks.shutdown().await;
        for named in self.shared.api.conns.drain() {
            named.conn.pipe.close().await;
        }
    }
}

async fn connection(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut head = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    // Enough of the first request to see whether it is a pipe.
    while head.len() < PIPE_PREFIX.len() && !head.contains(&b'\n') {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut head)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
    if head.starts_with(PIPE_PREFIX) {
        raw_pipe(&shared, stream, head, deadline).await;
        return;
    }
    let io = TokioIo::new(Rewind {
        early: head.freeze(),
        stream,
    });
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req, peer).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD.max(8192) * 4)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
    if let Err(err) = served {
        tracing::debug!(%peer, %err, "http connection ended");
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let counters = &shared.api.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let marks = Marks::from_headers(
        req.headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    );
    if req.method() == hyper::Method::OPTIONS {
        return match shared.policy.judge_preflight(&marks) {
            Verdict::Refused(rule) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                error_response(&ApiError::Refused(rule), None)
            }
            Verdict::Browser { origin } => preflight(origin.as_deref(), &req),
            Verdict::Program => preflight(None, &req),
        };
    }
    let cors = match shared.policy.judge(&marks) {
        Verdict::Program => None,
        Verdict::Browser { origin } => Some(origin),
        Verdict::Refused(rule) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return error_response(&ApiError::Refused(rule), None);
        }
    };
    let cors = cors.flatten();
    let result = answer(shared, req, peer).await;
    if result.is_err() {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    match result {
        Ok(response) => with_cors(response, cors.as_deref()),
        Err(err) => error_response(&err, cors.as_deref()),
    }
}

async fn answer(
    shared: &Shared,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let method = match *req.method() {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        hyper::Method::DELETE => Method::Delete,
        _ => Method::Other,
    };
    let endpoint = route::route(method, req.uri().path())?;
    if let Endpoint::Pipe { name } = &endpoint {
        let upgrade = req.headers().get(header::UPGRADE).cloned();
        let Some(protocol) = upgrade else {
            shared.api.conns.get(name)?;
            return Err(ApiError::PipeNotFirst);
        };
        let (claim, named) = claim_relay(shared, name)?;
        // The relay outlives this HTTP connection's task: it holds a slot
        // of its own.
        let slot = shared
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy)?;
        shared.api.counters.relays.fetch_add(1, Ordering::Relaxed);
        let on_upgrade = hyper::upgrade::on(&mut req);
        let pipe = named.conn.pipe.clone();
        let stop = shared.stopping.clone();
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                relay::relay(TokioIo::new(upgraded), pipe, Bytes::new(), stop).await;
            }
            drop((claim, slot));
        });
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
        return Ok(response);
    }
    let body = if matches!(endpoint, Endpoint::Push { .. }) {
        // An announced length over the limit is refused before any of the
        // body is read.
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(ApiError::Body(format!("larger than {MAX_BODY} bytes")));
        }
        let _reading = shared.bodies.acquire().await.map_err(|_| ApiError::Busy)?;
        tokio::time::timeout(BODY_TIMEOUT, read_body(req.into_body()))
            .await
            .map_err(|_| ApiError::Body(format!("not received within {BODY_TIMEOUT:?}")))??
    } else {
        Bytes::new()
    };
    let reply = shared.api.handle(endpoint, body).await?;
    Ok(match reply {
        Reply::Json(value) => {
            let mut response = json_response(StatusCode::OK, &value);
            set_client(&mut response, peer);
            response
        }
        Reply::Bytes { data, client } => {
            let mut response = Response::new(Full::new(data));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            set_client(&mut response, client);
            response
        }
    })
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(ApiError::Body(
            if err.is::<http_body_util::LengthLimitError>() {
                format!("larger than {MAX_BODY} bytes")
            } else {
                err.to_string()
            },
        )),
    }
}

fn set_client(response: &mut Response<Body>, client: SocketAddr) {
    let text = format!("{}:{}", client.ip(), client.port());
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().insert("x-client-tup", value);
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_bytes_response(status, json_text(value))
}

fn json_bytes_response(status: StatusCode, text: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error's status and JSON body, the same through hyper and outside it.
fn error_body(err: &ApiError) -> (StatusCode, Vec<u8>) {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        json_text(&serde_json::json!({ "error": err.code(), "msg": err.to_string() })),
    )
}

fn json_text(value: &serde_json::Value) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
    text.push(b'\n');
    text
}

fn error_response(err: &ApiError, cors: Option<&str>) -> Response<Body> {
    let (status, body) = error_body(err);
    let mut response = json_bytes_response(status, body);
    if let ApiError::MethodNotAllowed { allowed, .. } = err {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
    }
    with_cors(response, cors)
}

fn with_cors(mut response: Response<Body>, origin: Option<&str>) -> Response<Body> {
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-client-tup"),
        );
    }
    response
}

fn preflight(origin: Option<&str>, req: &Request<Incoming>) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
    );
    // Chromium asks before a page reaches a loopback address.
    if req
        .headers()
        .get("access-control-request-private-network")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        headers.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// The manual's pipe request, parsed here: no HTTP answer (the manual's
/// client reads raw bytes at once), unless it asked for an Upgrade, which
/// gets a 101; refusals and errors get a JSON answer and the close.
async fn raw_pipe(
    shared: &Shared,
    mut stream: TcpStream,
    mut head: BytesMut,
    deadline: tokio::time::Instant,
) {
    let counters = &shared.api.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let request = loop {
        match parse_head(&head) {
            Ok(Some(request)) => break request,
            Ok(None) => {}
            Err(err) => {
                refuse(
                    stream,
                    &ApiError::Parameter {
                        name: "request",
                        why: format!("not an HTTP/1.1 request head: {err}"),
                    },
                )
                .await;
                return;
            }
        }
        if head.len() >= MAX_HEAD {
            refuse(
                stream,
                &ApiError::TooLarge(format!("request head over {MAX_HEAD} bytes")),
            )
            .await;
            return;
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut head)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let RawHead {
        end,
        marks,
        path,
        upgrade,
    } = request;
    if let Verdict::Refused(rule) = shared.policy.judge(&marks) {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        refuse(stream, &ApiError::Refused(rule)).await;
        return;
    }
    let named = match route::route(Method::Get, &path) {
        Ok(Endpoint::Pipe { name }) => claim_relay(shared, &name),
        Ok(_) => Err(ApiError::NoMethod(path)),
        Err(err) => Err(err),
    };
    let (_claim, named) = match named {
        Ok(found) => found,
        Err(err) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            refuse(stream, &err).await;
            return;
        }
    };
    if let Some(protocol) = upgrade {
        let mut answer =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: ".to_vec();
        answer.extend_from_slice(&protocol);
        answer.extend_from_slice(b"\r\n\r\n");
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
    counters.relays.fetch_add(1, Ordering::Relaxed);
    head.advance(end);
    relay::relay(
        stream,
        named.conn.pipe.clone(),
        head.freeze(),
        shared.stopping.clone(),
    )
    .await;
}

/// What the server reads of a raw pipe request's head.
struct RawHead {
    /// Where the head ends (relayed bytes may follow in the buffer).
    end: usize,
    marks: Marks,
    path: String,
    upgrade: Option<Vec<u8>>,
}

/// Parses a head once it is complete; `None` while more is to come.
fn parse_head(bytes: &[u8]) -> Result<Option<RawHead>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(end) = req.parse(bytes)? else {
        return Ok(None);
    };
    let upgrade = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value.to_vec());
    Ok(Some(RawHead {
        end,
        marks: Marks::from_headers(req.headers.iter().map(|h| (h.name, h.value))),
        path: req.path.unwrap_or_default().to_owned(),
        upgrade,
    }))
}

/// The claim on a connection a pipe may relay now.
/// The connection `name` and the claim to relay it: refused when it has
/// ended or another pipe relays it.
fn claim_relay(shared: &Shared, name: &str) -> Result<(RelayClaim, Named), ApiError> {
    let named = shared.api.conns.get(name)?;
    if named.conn.pipe.is_closed() {
        return Err(ApiError::Closed(named.name.clone()));
    }
    let claim = named
        .claim_relay()
        .ok_or_else(|| ApiError::Relayed(named.name.clone()))?;
    Ok((claim, named))
}

/// Answers an error outside hyper, then closes. What the client still
/// sends is read (briefly) first: closing with unread bytes would reset
/// the connection and lose the answer.
async fn refuse(mut stream: TcpStream, err: &ApiError) {
    let (status, body) = error_body(err);
    let mut text = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    text.extend_from_slice(&body);
    let _ = stream.write_all(&text).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_HEAD * 4 {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// A stream that first yields bytes already read from it.
struct Rewind {
    early: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
