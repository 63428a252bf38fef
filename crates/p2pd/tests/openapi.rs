//! `/openapi.json` checked against the live server by schemathesis: every
//! operation it describes, with generated valid and invalid input, must
//! answer as described. Run in a namespace with only loopback, as it
//! tries `/p2p/open` with made-up addresses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use p2pd_lab::{Netns, require_lab};

const PORT: u16 = 12333;

/// Where scripts/test installs schemathesis (a pinned version in a venv
/// of its own), unless `P2PD_SCHEMATHESIS` names another.
fn schemathesis() -> PathBuf {
    std::env::var_os("P2PD_SCHEMATHESIS").map_or_else(
        || workspace().join("target/tools/schemathesis/bin/schemathesis"),
        PathBuf::from,
    )
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_openapi_description_matches_the_live_server() {
    require_lab!();
    let tool = schemathesis();
    if !tool.exists() {
        p2pd_lab::report_skip(
            "openapi",
            &format!(
                "{} is missing (scripts/test installs it from PyPI)",
                tool.display()
            ),
        );
        return;
    }
    let ns = Netns::new().expect("namespace with only loopback");
    let dir = tempfile::tempdir().expect("temp dir");
    let _daemon = common::rest_in(&ns, dir.path(), "api", PORT, "");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/schemathesis.toml");
    let config = config.display().to_string();
    let tool = tool.display().to_string();
    let url = format!("http://127.0.0.1:{PORT}/openapi.json");
    let args = ns.exec_args(
        &tool,
        &[
            "--config-file",
            &config,
            "run",
            &url,
            "--max-examples",
            "50",
            "--seed",
            "1",
            "--no-color",
        ],
    );
    let out = Command::new("ip")
        .args(&args)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found differences:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}
