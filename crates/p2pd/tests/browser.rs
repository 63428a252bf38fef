//! The REST API from a real browser (headless Chromium, Debian's jQuery),
//! in a namespace with only loopback: the manual's JavaScript examples
//! from a local file (Origin null) work with the token or with
//! `allow_null_origin = true` and are refused by default; a foreign
//! website's attempts (CORS, no-cors, an image, a sandboxed iframe, DNS
//! rebinding) are refused and none of what they asked for is done.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Running;
use common::http::Http;
use common::web::Web;
use p2pd_lab::{Netns, require_lab};
use serde_json::Value;

const JQUERY: &str = "/usr/share/javascript/jquery/jquery.min.js";
const CHROMIUM: &str = "/usr/bin/chromium";
/// A browser start, the page's requests and its report.
const PAGE_LIMIT: Duration = Duration::from_secs(60);
const STRICT: u16 = 12333;
const RELAXED: u16 = 12334;

#[test]
fn the_manuals_javascript_in_chromium_and_what_foreign_pages_cannot_do() {
    require_lab!();
    for needed in [JQUERY, CHROMIUM] {
        if !Path::new(needed).exists() {
            p2pd_lab::report_skip(
                "browser",
                &format!("{needed} is missing (scripts/test installs chromium and libjs-jquery)"),
            );
            return;
        }
    }
    let ns = Netns::new().expect("namespace with only loopback");
    let dir = tempfile::tempdir().expect("temp dir");
    let _strict = common::rest_in(
        &ns,
        dir.path(),
        "strict",
        STRICT,
        "[rest]\nallow_null_origin = false\n",
    );
    let _relaxed = common::rest_in(
        &ns,
        dir.path(),
        "relaxed",
        RELAXED,
        "[rest]\nallow_null_origin = true\n",
    );
    let token = std::fs::read_to_string(dir.path().join("strict/data/rest-token"))
        .expect("token")
        .trim()
        .to_owned();

    let root = dir.path().join("site");
    std::fs::create_dir_all(&root).expect("site");
    std::fs::copy(JQUERY, root.join("jquery.min.js")).expect("jquery");
    let listener = ns
        .block_on(|| async { std::net::TcpListener::bind("127.0.0.1:0") })
        .expect("enter")
        .expect("web listener");
    let web = Web::start(listener, root.clone());

    let api = |port: u16| format!("http://localhost:{port}");
    let manual = |name: &str, port: u16, token: &str| {
        let page = std::fs::read_to_string(page_source("manual.html"))
            .expect("page")
            .replace("__JQUERY__", &format!("file://{JQUERY}"))
            .replace("__API__", &api(port))
            .replace("__TOKEN__", token)
            .replace(
                "__REPORT__",
                &format!("http://127.0.0.1:{}/report/{name}", web.port),
            );
        let path = root.join(format!("{name}.html"));
        std::fs::write(&path, page).expect("write page");
        format!("file://{}", path.display())
    };

    // From a local file, by default: refused, and nothing done.
    let report = browse(&ns, dir.path(), &web, &manual("refused", STRICT, ""));
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["step"], "open", "{report}");
    assert_eq!(connections(&ns, STRICT), 0, "a refused open opened nothing");

    // With the token, and with allow_null_origin: every example works.
    for (name, port, token) in [("token", STRICT, token.as_str()), ("null", RELAXED, "")] {
        let report = browse(&ns, dir.path(), &web, &manual(name, port, token));
        assert_eq!(report["ok"], true, "{name}: {report}");
        assert_eq!(report["open"]["strategy"], "direct", "{name}");
        assert_eq!(report["send"]["sent"], 18, "{name}");
        assert_eq!(report["recv"]["data"], "hello, world!", "{name}");
        assert_eq!(report["push"]["sent"], 9, "{name}");
        assert_eq!(
            report["pull"],
            serde_json::json!([200, 201, 202, 203]),
            "{name}"
        );
        let test = report["test"].as_array().expect("p2pd_test's output");
        assert_eq!(test.len(), 5, "{name}: {report}");
        assert_eq!(test[0]["title"], "P2PD");
        assert_eq!(test[2]["sub"], r"[b'[hH]e[l]+o', b'[\\s\\S]+']");
        assert_eq!(test[3]["sent"], 18);
        assert_eq!(test[4]["data"], "Hello, world!", "{name}: {report}");
    }

    // A foreign website (a name that resolves to this machine).
    let attack = std::fs::read_to_string(page_source("attack.html"))
        .expect("page")
        .replace("__API__", &format!("http://127.0.0.1:{STRICT}"))
        .replace("__REBIND__", &format!("http://evil.example:{STRICT}"));
    std::fs::write(root.join("attack.html"), attack).expect("write page");
    let before = connections(&ns, STRICT);
    let refused_before = refused(&ns, STRICT);
    let report = browse(
        &ns,
        dir.path(),
        &web,
        &format!("http://evil.example:{}/attack.html", web.port),
    );
    for read in ["cors", "fetch", "iframe", "rebind"] {
        assert_eq!(report[read]["read"], false, "{read}: {report}");
    }
    assert_eq!(report["image"]["loaded"], false, "{report}");
    assert_eq!(
        connections(&ns, STRICT),
        before,
        "nothing a foreign page asked for was done: {report}"
    );
    // They reached the daemon (the browser did not stop them first) and
    // the daemon refused each of the six.
    assert!(
        refused(&ns, STRICT) >= refused_before + 6,
        "{} refused before, {} after",
        refused_before,
        refused(&ns, STRICT)
    );
}

/// How many requests the daemon on `port` has refused.
fn refused(ns: &Netns, port: u16) -> u64 {
    ns.block_on(|| async move {
        let mut http = Http::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        http.get("/status", &[]).json()["counters"]["refused"]
            .as_u64()
            .unwrap_or(0)
    })
    .expect("enter")
}

/// Opens `url` in headless Chromium in `ns`; returns what the page reported.
fn browse(ns: &Netns, dir: &Path, web: &Web, url: &str) -> Value {
    let profile = tempfile::tempdir_in(dir).expect("profile");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let args = ns.exec_args(
        CHROMIUM,
        &[
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP evil.example 127.0.0.1",
            &profile_arg,
            url,
        ],
    );
    let _browser = Running(
        Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium"),
    );
    let (_, body) = web.report(PAGE_LIMIT);
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("report {body:?}: {err}"))
}

/// How many connections the daemon on `port` has open.
fn connections(ns: &Netns, port: u16) -> usize {
    ns.block_on(|| async move {
        let mut http = Http::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        http.get("/p2p/cons", &[]).json()["cons"]
            .as_array()
            .map_or(usize::MAX, Vec::len)
    })
    .expect("enter")
}

fn page_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name)
}
