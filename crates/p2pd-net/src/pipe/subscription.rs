//! Subscriptions: which received messages a queue wants (manual 1.4.3).
//!
//! A subscription is a pair of regular expressions, one searched in the
//! message bytes and one in the sender's address written `ip:port` (IPv6 as
//! `[ip]:port`). Either pattern may be found anywhere (anchor with `^`/`$`
//! to match whole); an empty pattern matches everything, so the empty pair is
//! "every message from anyone". This module is pure: no IO, no clock.

use std::fmt;
use std::net::SocketAddr;

use regex::bytes::{Regex, RegexBuilder};

/// Compiled patterns may use this much memory each: enough for any sensible
/// pattern, small enough that a pattern from the REST API cannot exhaust
/// memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The text of a subscription's two patterns; also its identity, so the same
/// pair subscribes, receives and unsubscribes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey {
    /// Pattern searched in the message bytes.
    pub msg: String,
    /// Pattern searched in the sender's `ip:port`.
    pub addr: String,
}

impl SubKey {
    /// The subscription to every message from anyone (the manual's
    /// `SUB_ALL`).
    pub fn all() -> Self {
        Self::default()
    }

    /// A subscription from two patterns.
    pub fn new(msg: impl Into<String>, addr: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            addr: addr.into(),
        }
    }
}

impl fmt::Display for SubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?}, {:?}]", self.msg, self.addr)
    }
}

/// A pattern that is not a valid regular expression (or is too large).
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern `{pattern}`: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What the regex compiler said, on one line.
    pub reason: String,
}

/// A compiled subscription.
#[derive(Debug, Clone)]
pub struct Matcher {
    msg: Option<Regex>,
    addr: Option<Regex>,
}

impl Matcher {
    /// Compiles both patterns.
    pub fn new(key: &SubKey) -> Result<Self, PatternError> {
        Ok(Self {
            msg: compile(&key.msg)?,
            addr: compile(&key.addr)?,
        })
    }

    /// Whether a message from `from` belongs to this subscription.
    pub fn matches(&self, data: &[u8], from: SocketAddr) -> bool {
        let msg_ok = self.msg.as_ref().is_none_or(|re| re.is_match(data));
        msg_ok
            && self
                .addr
                .as_ref()
                .is_none_or(|re| re.is_match(from.to_string().as_bytes()))
    }
}

fn compile(pattern: &str) -> Result<Option<Regex>, PatternError> {
    if pattern.is_empty() {
        return Ok(None);
    }
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|err| PatternError {
            pattern: pattern.to_owned(),
            reason: err.to_string().replace('\n', " "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(s: &str) -> SocketAddr {
        s.parse().expect("test literal")
    }

    #[test]
    fn empty_pair_matches_everything() {
        let m = Matcher::new(&SubKey::all()).expect("valid");
        assert!(m.matches(b"", from("127.0.0.1:1")));
        assert!(m.matches(&[0xff, 0], from("[::1]:9")));
    }

    #[test]
    fn patterns_are_searched_not_anchored() {
        let m = Matcher::new(&SubKey::new("[hH]el+o", r"^192\.168\.")).expect("valid");
        assert!(m.matches(b"say Hello!", from("192.168.1.2:5000")));
        assert!(!m.matches(b"say Hello!", from("10.192.168.1:5000")));
        assert!(!m.matches(b"goodbye", from("192.168.1.2:5000")));
    }

    #[test]
    fn binary_messages_match_byte_patterns() {
        let m = Matcher::new(&SubKey::new(r"(?-u)^\x00\x01", "")).expect("valid");
        assert!(m.matches(&[0, 1, 0xff], from("127.0.0.1:1")));
        assert!(!m.matches(&[1, 0], from("127.0.0.1:1")));
    }

    #[test]
    fn ipv6_senders_are_bracketed() {
        let m = Matcher::new(&SubKey::new("", r"^\[::1\]:7$")).expect("valid");
        assert!(m.matches(b"x", from("[::1]:7")));
    }

    #[test]
    fn bad_and_huge_patterns_are_errors() {
        assert!(Matcher::new(&SubKey::new("(", "")).is_err());
        assert!(Matcher::new(&SubKey::new("", "a{1000}{1000}")).is_err());
    }
}
