//! The open-file limit: every connection is a descriptor, and the common
//! default soft limit (1,024) is far below what a node that serves
//! strangers needs, while the hard limit is usually much higher.

/// Raises the soft limit on open files to the hard limit; returns the soft
/// limit now in force.
pub fn raise() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    /// Where the hard limit is "unlimited", the kernel still refuses more
    /// than its own maximum (Linux: 1,048,576 by default).
    const CEILING: u64 = 1 << 20;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let wanted = hard.min(CEILING);
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)?;
    }
    Ok(current())
}

/// The soft limit on open files in force now (1,024, the common default,
/// if it cannot be read).
pub fn current() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_reaches_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let now = super::raise().expect("raise");
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("read");
        assert_eq!((now, soft), (hard.min(1 << 20), hard.min(1 << 20)));
    }
}
