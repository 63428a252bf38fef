//! Running commands with a time limit.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::LabError;

/// Limit for quick configuration commands (`ip`, `nft`, `sysctl`).
pub const SHORT: Duration = Duration::from_secs(10);

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Runs `program args...`, kills it after `limit`, and fails unless it exits 0.
pub fn run(program: &str, args: &[&str], limit: Duration) -> Result<Output, LabError> {
    checked(program, args, spawn_and_wait(program, args, None, limit)?)
}

/// Runs `program args...` with `input` on its stdin, killed after `limit`;
/// fails unless it exits 0.
pub fn run_with_input(
    program: &str,
    args: &[&str],
    input: &str,
    limit: Duration,
) -> Result<Output, LabError> {
    checked(
        program,
        args,
        spawn_and_wait(program, args, Some(input), limit)?,
    )
}

fn checked(program: &str, args: &[&str], output: Output) -> Result<Output, LabError> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(LabError::Failed {
            command: command_line(program, args),
            status: output.status,
            stderr: output.stderr.trim().to_owned(),
        })
    }
}

/// Runs `program args...` and kills it after `limit`; any exit status is
/// returned as is.
pub fn run_unchecked(program: &str, args: &[&str], limit: Duration) -> Result<Output, LabError> {
    spawn_and_wait(program, args, None, limit)
}

fn spawn_and_wait(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    limit: Duration,
) -> Result<Output, LabError> {
    let command = command_line(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Dropping stdin at the end of this block closes the child's input.
        let _ = stdin.write_all(input.as_bytes());
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout { command, limit });
            }
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_are_returned() {
        let out = run("sh", &["-c", "echo out; echo err >&2"], SHORT).expect("sh runs");
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn non_zero_exit_is_an_error_with_stderr() {
        let err = run("sh", &["-c", "echo nope >&2; exit 3"], SHORT).expect_err("exit 3");
        assert!(matches!(err, LabError::Failed { ref stderr, .. } if stderr == "nope"));
    }

    #[test]
    fn input_reaches_stdin() {
        let out = run_with_input("cat", &[], "line one\n", SHORT).expect("cat runs");
        assert_eq!(out.stdout, "line one\n");
    }

    #[test]
    fn a_command_past_its_limit_is_killed() {
        let started = Instant::now();
        let err = run("sleep", &["5"], Duration::from_millis(100)).expect_err("killed");
        assert!(matches!(err, LabError::Timeout { .. }));
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
