//! `p2pd rest` from outside, on loopback: the manual's curl examples, the
//! raw pipe, real HTTP/1.1, and the attacks the original fell to.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{Answer, Http};
use common::{RestDaemon, start_rest};
use serde_json::Value;

/// `curl -s -i URL [args]` as the manual runs it, parsed.
fn curl(d: &RestDaemon, path: &str, args: &[&str]) -> Answer {
    let url = format!("http://localhost:{}{path}", d.api.port());
    let out = Command::new("curl")
        .args(["-s", "-g", "-i", "--max-time", "20"])
        .args(args)
        .arg(&url)
        .output()
        .expect("curl (scripts/test installs it)");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = out.stdout;
    let end = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer")
        + 4;
    let head = String::from_utf8_lossy(&text[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: text[end..].to_vec(),
    }
}

fn ok(answer: &Answer) -> Value {
    let json = answer.json();
    assert_eq!(answer.status, 200, "{json}");
    assert_eq!(json["error"], 0, "{json}");
    json
}

fn is_ip_port(v: &Value) -> bool {
    v[0].as_str()
        .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        && v[1].as_u64().is_some()
}

#[test]
fn the_manuals_curl_examples_answer_with_their_fields() {
    let d = start_rest("");
    let version = ok(&curl(&d, "/version", &[]));
    assert_eq!(version["title"], "P2PD");
    assert!(version["version"].is_string() && version["author"].is_string());

    let addr = ok(&curl(&d, "/p2p/addr", &[]));
    let addr = addr["addr"].as_str().expect("addr");
    addr.parse::<p2pd_proto::addr::PeerAddr>()
        .expect("a peer address");

    let open = ok(&curl(&d, "/p2p/open/con_name/self", &[]));
    assert_eq!(open["name"], "con_name");
    assert_eq!(open["strategy"], "direct");
    assert!(open["fd"].as_i64().is_some_and(|fd| fd > 2), "{open}");
    assert!(
        is_ip_port(&open["laddr"]) && is_ip_port(&open["raddr"]),
        "{open}"
    );
    assert!(
        open["if"]["name"].is_string() && open["if"]["offset"].is_u64(),
        "{open}"
    );
    assert!(open["route"]["ext_ips"][0]["ip"].is_string(), "{open}");
    assert!(open["route"]["nic_ips"][0]["ip"].is_string(), "{open}");
    assert_eq!(
        curl(&d, "/p2p/open/con_name/self", &[]).json()["error"],
        2,
        "a name is taken once"
    );

    let sent = ok(&curl(&d, "/p2p/send/con_name/ECHO%20hello,%20world!", &[]));
    assert_eq!(
        (sent["name"].as_str(), sent["sent"].as_u64()),
        (Some("con_name"), Some(18))
    );
    let got = ok(&curl(&d, "/p2p/recv/con_name", &[]));
    assert_eq!(got["data"], "hello, world!");
    assert!(is_ip_port(&got["client_tup"]), "{got}");

    // Publish-subscribe (manual 1.4.3, corrected: the pattern is
    // [hH]e[l]+o and both keywords have their slashes).
    let msg_p = "%5BhH%5De%5Bl%5D%2Bo";
    let addr_p = "%5B%5Cs%5CS%5D%2B";
    let sub = ok(&curl(
        &d,
        &format!("/p2p/sub/con_name/msg_p/{msg_p}/addr_p/{addr_p}"),
        &[],
    ));
    assert_eq!(sub["sub"], r"[b'[hH]e[l]+o', b'[\\s\\S]+']");
    ok(&curl(&d, "/p2p/send/con_name/ECHO%20Hello,%20world!", &[]));
    let got = ok(&curl(
        &d,
        &format!("/p2p/recv/con_name/msg_p/{msg_p}/addr_p/{addr_p}"),
        &[],
    ));
    assert_eq!(got["data"], "Hello, world!");
    // Every matching queue has a copy: the everything-queue too.
    assert_eq!(
        ok(&curl(&d, "/p2p/recv/con_name", &[]))["data"],
        "Hello, world!"
    );
    let unsub = ok(&curl(
        &d,
        &format!("/p2p/sub/con_name/msg_p/{msg_p}/addr_p/{addr_p}"),
        &["-X", "DELETE"],
    ));
    assert_eq!(unsub["unsub"], r"[b'[hH]e[l]+o', b'[\\s\\S]+']");
    assert_eq!(
        curl(
            &d,
            &format!("/p2p/recv/con_name/msg_p/{msg_p}/addr_p/{addr_p}"),
            &[]
        )
        .json()["error"],
        15,
        "the subscription is gone"
    );
    let unsub_all = ok(&curl(&d, "/p2p/sub/con_name", &["-X", "DELETE"]));
    assert_eq!(unsub_all["unsub"], "[b'', b'']");

    // Binary push and pull, bytes outside printable ASCII.
    let body = d.dir.path().join("push.bin");
    std::fs::write(&body, b"ECHO \xc8\xc9\xca\xcb").expect("body");
    ok(&curl(&d, "/p2p/sub/con_name", &[]));
    let pushed = ok(&curl(
        &d,
        "/p2p/binary/con_name",
        &[
            "--data-binary",
            &format!("@{}", body.display()),
            "-H",
            "Content-Type: application/octet-stream",
        ],
    ));
    assert_eq!(pushed["sent"], 9);
    let pulled = curl(&d, "/p2p/binary/con_name", &[]);
    assert_eq!(pulled.status, 200);
    assert_eq!(
        pulled.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(pulled.body, b"\xc8\xc9\xca\xcb");
    assert!(
        pulled
            .header("x-client-tup")
            .is_some_and(|t| t.contains(':'))
    );

    let con = ok(&curl(&d, "/p2p/con/con_name", &[]));
    assert_eq!(con["raddr"], open["raddr"]);
    let cons = ok(&curl(&d, "/p2p/cons", &[]));
    assert_eq!(cons["cons"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        ok(&curl(&d, "/p2p/close/con_name", &[]))["closed"],
        "con_name"
    );
    assert_eq!(curl(&d, "/p2p/con/con_name", &[]).json()["error"], 4);
    assert_eq!(curl(&d, "/p2p/con/con_name", &[]).status, 404);
}

#[test]
fn the_manuals_raw_pipe_request_relays_both_ways() {
    let d = start_rest("");
    let mut http = Http::connect(d.api);
    ok(&http.get("/p2p/open/p/self", &[]));

    // Exactly the manual's bytes, then ECHO in the same segment (the
    // original lost those).
    let mut pipe = Http::connect(d.api);
    std::io::Write::write_all(
        &mut pipe.stream,
        b"GET /p2p/pipe/p HTTP/1.1\r\nOrigin: null\r\n\r\nECHO hello world",
    )
    .expect("send");
    assert_eq!(pipe.read_exact_raw(11), b"hello world");
    std::io::Write::write_all(&mut pipe.stream, b"ECHO again").expect("send");
    assert_eq!(pipe.read_exact_raw(5), b"again");

    // One relay per connection at a time.
    let mut second = Http::connect(d.api);
    let busy = second.raw(b"GET /p2p/pipe/p HTTP/1.1\r\n\r\n");
    assert_eq!(
        (busy.status, busy.json()["error"].as_u64()),
        (409, Some(17))
    );
    drop(pipe);

    // With Upgrade, on a keep-alive connection after another request.
    let mut up = Http::connect(d.api);
    ok(&up.get("/version", &[]));
    let deadline = Instant::now() + Duration::from_secs(5);
    let switched = loop {
        let answer = up.get("/p2p/pipe/p", &["Connection: Upgrade", "Upgrade: tcp"]);
        // The first relay lets go once it sees its socket closed.
        if answer.status != 409 || Instant::now() > deadline {
            break answer;
        }
        up = Http::connect(d.api);
    };
    assert_eq!(
        switched.status,
        101,
        "{:?}",
        String::from_utf8_lossy(&switched.body)
    );
    assert_eq!(switched.header("upgrade"), Some("tcp"));
    std::io::Write::write_all(&mut up.stream, b"ECHO upgraded").expect("send");
    assert_eq!(up.read_exact_raw(8), b"upgraded");

    // Without Upgrade after another request: an error, not a hang.
    let mut late = Http::connect(d.api);
    ok(&late.get("/version", &[]));
    let refused = late.get("/p2p/pipe/p", &[]);
    assert_eq!(
        (refused.status, refused.json()["error"].as_u64()),
        (400, Some(19))
    );

    // A half-close: everything sent, the answer still comes back.
    drop(up);
    let mut half = Http::connect(d.api);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::io::Write::write_all(
            &mut half.stream,
            b"GET /p2p/pipe/p HTTP/1.1\r\nOrigin: null\r\n\r\nECHO half-closed",
        )
        .expect("send");
        half.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let got = half.read_exact_raw(11);
        if got != b"HTTP/1.1 40" || Instant::now() > deadline {
            assert_eq!(got, b"half-closed");
            break;
        }
        // The earlier relay had not let go yet (409): try again.
        half = Http::connect(d.api);
    }

    let mut unknown = Http::connect(d.api);
    let missing = unknown.raw(b"GET /p2p/pipe/nobody HTTP/1.1\r\nOrigin: null\r\n\r\n");
    assert_eq!(
        (missing.status, missing.json()["error"].as_u64()),
        (404, Some(4))
    );
    assert!(unknown.closed(), "an unknown name closes the socket");
}

#[test]
fn real_http_keep_alive_percent_encoding_and_timeouts() {
    let d = start_rest("");
    let mut http = Http::connect(d.api);
    for _ in 0..50 {
        ok(&http.get("/version", &[]));
    }
    ok(&http.get("/p2p/open/t/self", &[]));
    // UTF-8 and an encoded '/' arrive whole.
    let sent = ok(&http.get("/p2p/send/t/ECHO%20h%C3%A9llo%2Fw%C3%B6rld", &[]));
    assert_eq!(sent["sent"], "ECHO héllo/wörld".len());
    assert_eq!(ok(&http.get("/p2p/recv/t", &[]))["data"], "héllo/wörld");

    // A recv timeout is honoured: shorter and longer than the default 2 s.
    let started = Instant::now();
    let empty = http.get("/p2p/recv/t/timeout/0.3", &[]);
    let waited = started.elapsed();
    assert_eq!(
        (empty.status, empty.json()["error"].as_u64()),
        (504, Some(6))
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    let started = Instant::now();
    let empty = http.get("/p2p/recv/t/timeout/2.5", &[]);
    assert_eq!(empty.json()["error"], 6);
    assert!(started.elapsed() >= Duration::from_millis(2500));
    // A message that arrives during the wait is returned at once.
    let mut other = Http::connect(d.api);
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let got = other.get("/p2p/recv/t/timeout/30", &[]);
        (got, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    ok(&http.get("/p2p/send/t/ECHO%20late", &[]));
    let (got, waited) = waiter.join().expect("waiter");
    assert_eq!(ok(&got)["data"], "late");
    assert!(waited < Duration::from_secs(30));
}

#[test]
fn bad_input_gets_a_json_error() {
    let d = start_rest("");
    let mut http = Http::connect(d.api);
    ok(&http.get("/p2p/open/b/self", &[]));
    let cases: &[(&str, &str, u16, u64)] = &[
        ("GET", "/", 404, 1),
        ("GET", "/p2p/nothing/here", 404, 1),
        ("POST", "/version", 405, 1),
        ("GET", "/p2p/recv/nobody", 404, 4),
        ("GET", "/p2p/sub/b/msg_p/(", 400, 11),
        ("GET", "/p2p/sub/b/msg_p/a%7B1000%7D%7B1000%7D", 400, 11),
        ("GET", "/p2p/recv/b/timeout/abc", 400, 14),
        ("GET", "/p2p/recv/b/timeout/1e9", 400, 14),
        ("GET", "/p2p/open/x/not-an-address", 400, 12),
        ("GET", "/p2p/con/%FF%FE", 400, 14),
        ("GET", "/p2p/open/x/0-0-0-00", 400, 12),
    ];
    for (method, path, status, code) in cases {
        let answer = http.call(method, path, &[], b"");
        assert_eq!(
            (answer.status, answer.json()["error"].as_u64()),
            (*status, Some(*code)),
            "{method} {path}"
        );
        assert!(answer.json()["msg"].is_string());
    }
    let wrong = http.call("DELETE", "/version", &[], b"");
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("GET")));
    let long = format!("/p2p/send/b/{}", "a".repeat(40_000));
    let answer = Http::connect(d.api).get(&long, &[]);
    assert_eq!(
        (answer.status, answer.json()["error"].as_u64()),
        (414, Some(16))
    );
    // At most 16 subscriptions per connection (the everything-one counts).
    for n in 0..15 {
        ok(&http.get(&format!("/p2p/sub/b/msg_p/m{n}"), &[]));
    }
    ok(&http.get("/p2p/sub/b/msg_p/m0", &[]));
    let full = http.get("/p2p/sub/b/msg_p/one-more", &[]);
    assert_eq!(
        (full.status, full.json()["error"].as_u64()),
        (409, Some(21))
    );
    let long_pattern = format!("/p2p/sub/b/msg_p/{}", "a".repeat(1100));
    assert_eq!(http.get(&long_pattern, &[]).json()["error"], 14);
    let name = "n".repeat(129);
    assert_eq!(
        http.get(&format!("/p2p/open/{name}/self"), &[]).json()["error"],
        14
    );

    // A body over the limit is refused before it is read whole.
    let mut big = Http::connect(d.api);
    let answer = big.raw(
        b"POST /p2p/binary/b HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert_eq!(
        (answer.status, answer.json()["error"].as_u64()),
        (413, Some(7))
    );

    // Garbage is answered (hyper's 400) or closed, never a hang or a crash.
    let mut junk = Http::connect(d.api);
    std::io::Write::write_all(&mut junk.stream, b"\x00\x01garbage\r\n\r\n").expect("send");
    let _ = junk.closed();
    ok(&Http::connect(d.api).get("/version", &[]));
}

#[test]
fn the_originals_holes_are_closed() {
    let d = start_rest("");
    let host = "Host: localhost:12333";
    let refused = |answer: &Answer, rule: &str| {
        let json = answer.json();
        assert_eq!(
            (answer.status, json["error"].as_u64()),
            (403, Some(5)),
            "{json}"
        );
        assert!(
            json["msg"].as_str().is_some_and(|m| m.contains(rule)),
            "{json}"
        );
        assert!(answer.header("access-control-allow-origin").is_none());
    };
    let mut http = Http::connect(d.api);
    let attacks: &[(&[&str], &str)] = &[
        // A lower-case header name got past the original's check.
        (&["origin: https://evil.example"], "loopback origins"),
        (&["ORIGIN: https://evil.example"], "loopback origins"),
        (
            &["Origin: http://127.0.0.1.evil.example"],
            "loopback origins",
        ),
        // A sandboxed iframe of any website sends Origin null.
        (&["Origin: null"], "Origin null"),
        // A no-cors GET (an image, a script) carries no Origin.
        (
            &["Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: no-cors"],
            "cross-site",
        ),
        (&["Referer: https://evil.example/page"], "cross-site"),
        (&["Origin: null", "X-P2PD-Token: guessed"], "does not match"),
    ];
    for (headers, rule) in attacks {
        let answer = http.call("GET", "/p2p/open/stolen/self", headers, b"");
        refused(&answer, rule);
    }
    // DNS rebinding: the page's own name, pointing at 127.0.0.1.
    let mut rebind = Http::connect(d.api);
    let answer =
        rebind.raw(b"GET /p2p/open/stolen/self HTTP/1.1\r\nHost: evil.example:12333\r\n\r\n");
    refused(&answer, "Host header");
    // Nothing they asked for was done.
    assert_eq!(
        ok(&http.get("/p2p/cons", &[]))["cons"],
        Value::Array(vec![])
    );

    // The original passed addr_p to eval(): here it is only a pattern.
    let marker = d.dir.path().join("pwned");
    ok(&http.get("/p2p/open/e/self", &[]));
    let payload = format!("(\"1\",__import__(\"os\").mkdir(\"{}\"))", marker.display());
    let encoded =
        percent_encoding::utf8_percent_encode(&payload, percent_encoding::NON_ALPHANUMERIC);
    let answer = http.get(&format!("/p2p/sub/e/msg_p/x/addr_p/{encoded}"), &[]);
    assert!(
        answer.status == 200 || answer.json()["error"] == 11,
        "{:?}",
        answer.json()
    );
    assert!(!marker.exists(), "the pattern ran as code");

    // Loopback pages and the token are served, with CORS answers.
    let page = http.call("GET", "/version", &["Origin: http://localhost:8000"], b"");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("access-control-allow-origin"),
        Some("http://localhost:8000")
    );
    let token = format!("X-P2PD-Token: {}", d.token);
    let with_token = http.call("GET", "/version", &["Origin: null", &token], b"");
    assert_eq!(with_token.status, 200);
    assert_eq!(
        with_token.header("access-control-allow-origin"),
        Some("null")
    );
    // A preflight for the token header from a file:// page is answered;
    // one from a foreign site that does not send the token is not.
    let pre = http.call(
        "OPTIONS",
        "/p2p/binary/e",
        &[
            host,
            "Origin: null",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: content-type,x-p2pd-token",
        ],
        b"",
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("null"));
    assert!(
        pre.header("access-control-allow-headers")
            .is_some_and(|h| h.contains("x-p2pd-token"))
    );
    let pre = http.call(
        "OPTIONS",
        "/p2p/open/x/self",
        &[
            "Origin: https://evil.example",
            "Access-Control-Request-Method: GET",
        ],
        b"",
    );
    refused(&pre, "loopback origins");
    let status = ok(&http.get("/status", &[]));
    assert!(
        status["counters"]["refused"]
            .as_u64()
            .is_some_and(|n| n >= 9),
        "{status}"
    );
}

#[test]
fn allow_null_origin_restores_the_manuals_rule() {
    let d = start_rest("[rest]\nallow_null_origin = true\n");
    let mut http = Http::connect(d.api);
    let answer = http.get("/version", &["Origin: null"]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some("null"));
    assert_eq!(
        http.get("/version", &["Origin: https://evil.example"])
            .status,
        403
    );
    std::thread::sleep(Duration::from_millis(100));
    let log = d.log.lock().expect("log").clone();
    assert!(
        log.contains("allow_null_origin"),
        "a warning at start: {log}"
    );
}

#[test]
fn openapi_and_status_describe_the_server() {
    let d = start_rest("");
    let mut http = Http::connect(d.api);
    let doc = ok_plain(&http.get("/openapi.json", &[]));
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/p2p/open/{name}/{addr}"]["get"].is_object());
    let status = ok(&http.get("/status", &[]));
    assert!(
        status["addr"]
            .as_str()
            .is_some_and(|a| a.parse::<p2pd_proto::addr::PeerAddr>().is_ok())
    );
    assert_eq!(status["brokers"]["configured"], 1);
    // The test config names no NTP server: never measured.
    let clock = status["clock"]["state"].as_str();
    assert!(matches!(clock, Some("unknown" | "measuring")), "{status}");
    assert!(status["uptime_s"].as_f64().is_some_and(|s| s >= 0.0));
    assert!(status["interfaces"].is_array() && status["counters"]["requests"].as_u64() >= Some(2));
    let mut d = d;
    let stderr_tail = d.process.stop();
    drop(stderr_tail);
}

fn ok_plain(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200);
    answer.json()
}

#[test]
fn a_connection_the_peer_ended_keeps_what_it_sent_then_says_closed() {
    let d = start_rest("");
    let config = d.dir.path().join("p2pd.toml");
    let (mut peer, addr) = common::start_node(&config);
    let mut http = Http::connect(d.api);
    let encoded = percent_encoding::utf8_percent_encode(&addr, percent_encoding::NON_ALPHANUMERIC);
    let open = ok(&http.get(&format!("/p2p/open/gone/{encoded}"), &[]));
    assert_eq!(open["strategy"], "direct");
    // "last" is queued twice: in its own subscription (read here, so we
    // know it arrived) and in the everything-queue (kept for later).
    ok(&http.get("/p2p/sub/gone/msg_p/last", &[]));
    ok(&http.get("/p2p/send/gone/ECHO%20last", &[]));
    assert_eq!(
        ok(&http.get("/p2p/recv/gone/msg_p/last", &[]))["data"],
        "last"
    );
    peer.0.kill().expect("kill the peer");
    peer.0.wait().expect("wait");
    // What it sent before the end is still read, then the end is told.
    assert_eq!(ok(&http.get("/p2p/recv/gone", &[]))["data"], "last");
    let closed = http.get("/p2p/recv/gone/timeout/10", &[]);
    assert_eq!(
        (closed.status, closed.json()["error"].as_u64()),
        (410, Some(18))
    );
    let mut pipe = Http::connect(d.api);
    let refused = pipe.raw(b"GET /p2p/pipe/gone HTTP/1.1\r\n\r\n");
    assert_eq!(
        (refused.status, refused.json()["error"].as_u64()),
        (410, Some(18))
    );
    // A failed re-open gives the name back to the ended connection.
    assert_eq!(
        http.get("/p2p/open/gone/not-an-address", &[]).json()["error"],
        12
    );
    assert_eq!(ok(&http.get("/p2p/con/gone", &[]))["open"], false);
}
