//! The README's first two commands, exactly as written: the first is run
//! from the workspace root as a new user would, the second must be what CI
//! runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A release build from scratch on a 2-core machine takes a few minutes.
const LIMIT: Duration = Duration::from_secs(20 * 60);

#[test]
fn readme_first_command_runs_as_written() {
    let root = workspace_root();
    let commands = readme_commands(&root);
    let first = commands.first().expect("the README has a first command");

    let mut child = Command::new("sh")
        .args(["-c", first])
        .current_dir(&root)
        .env_remove("P2PD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < LIMIT,
            "`{first}` still running after {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("output");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{first}` failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stdout.trim().is_empty(),
        "`{first}` printed nothing:\n{stderr}"
    );
}

#[test]
fn readme_second_command_is_what_ci_runs() {
    let root = workspace_root();
    let commands = readme_commands(&root);
    let second = commands.get(1).expect("the README has a second command");
    assert_eq!(second, "scripts/test");

    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run exists");
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .expect(".ci/run is not empty");
    assert_eq!(
        last,
        format!("exec {second}"),
        ".ci/run must end by running the README's test command"
    );
}

/// `cargo bench --bench <name>` without `-p`, as the README and docs
/// write it, only finds benches of the workspace's default members: each
/// bench named so must be one of theirs.
#[test]
fn benches_named_without_a_package_are_the_default_members() {
    let root = workspace_root();
    let manifest = |dir: &Path| -> toml::Table {
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        text.parse().expect("Cargo.toml parses")
    };
    let workspace = manifest(&root);
    let members = workspace["workspace"]["default-members"]
        .as_array()
        .expect("default-members");
    let mut benches = Vec::new();
    for member in members {
        let dir = root.join(member.as_str().expect("a path"));
        for bench in manifest(&dir)
            .get("bench")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            benches.push(bench["name"].as_str().expect("a name").to_owned());
        }
    }
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        docs.push(entry.expect("entry").path());
    }
    let mut named = 0;
    for doc in docs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(doc).expect("readable");
        for (at, _) in text.match_indices("cargo bench --bench ") {
            let name: String = text[at + "cargo bench --bench ".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            assert!(
                benches.contains(&name),
                "{} says `cargo bench --bench {name}`, which finds no bench from the root \
                 (default members have {benches:?})",
                doc.display()
            );
            named += 1;
        }
    }
    assert!(named > 0, "no doc names `cargo bench --bench`");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The commands of the README's first two `sh` blocks, each one line.
fn readme_commands(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut commands = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let [command] = block.as_slice() else {
            panic!(
                "README block {} is not one command: {block:?}",
                commands.len() + 1
            );
        };
        commands.push(command.trim().to_owned());
        if commands.len() == 2 {
            break;
        }
    }
    commands
}
