//! The one place that writes to stdout and stderr.

use std::fmt::Display;
use std::io::Write;

/// Prints `error: ...` on one line of stderr, with the chain of causes.
pub(crate) fn error(err: &dyn Display) {
    let text = format!("{err:#}").replace('\n', " ");
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
