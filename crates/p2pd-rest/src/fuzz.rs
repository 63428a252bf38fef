//! Bodies of the fuzz targets in `fuzz/`, here so the test suite replays the
//! committed corpus and runs them as property tests on stable Rust (cargo
//! fuzz needs nightly). Each panics on a bug and returns normally
//! otherwise.

use crate::access::{Marks, Policy, Verdict};
use crate::route::{Method, route};

/// A request as bytes: the first byte picks the method, the first line is
/// the target, the other lines are `name: value` headers. Routing and the
/// access rules never panic, and their answers hold together.
pub fn request(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = [Method::Get, Method::Post, Method::Delete, Method::Other][usize::from(first % 4)];
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or_default();
    if let Err(err) = route(method, target) {
        assert!(err.code() > 0 && err.status() >= 400, "{err:?}");
    }
    let headers: Vec<(&str, &[u8])> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n, v.as_bytes()))
        .collect();
    let marks = Marks::from_headers(headers);
    for allow_null_origin in [false, true] {
        let policy = Policy {
            token: "t".repeat(64),
            allow_null_origin,
        };
        let verdict = policy.judge(&marks);
        // Without a Host, a request is always a program's.
        if marks.host.is_none() {
            assert_eq!(verdict, Verdict::Program);
        }
        let _ = policy.judge_preflight(&marks);
    }
}
