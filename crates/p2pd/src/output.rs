//! The one place that writes to stdout and stderr.

use std::fmt::Display;
use std::io::Write;

/// Prints `error: ...` on one line of stderr.
pub(crate) fn error(err: &dyn Display) {
    let text = err.to_string().replace('\n', " ");
    let _ = writeln!(std::io::stderr(), "error: {text}");
}

/// Prints a line on stdout; a closed stdout (`| head`) is not an error.
pub(crate) fn line(text: impl Display) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// Prints a progress or status line on stderr, keeping stdout for results.
pub(crate) fn status(text: impl Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Prints `error: context: cause: ...` on one line of stderr; a cause whose
/// text the line already holds (errors often quote their source) is skipped.
pub(crate) fn error_chain(err: &anyhow::Error) {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    error(&text);
}
