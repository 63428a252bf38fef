//! Every error the API answers with: a number (the original's, where it had
//! one), an HTTP status and a one-line message. docs/rest.md lists them.

use crate::access::Rule;

/// Why a request failed; the JSON body is `{"error": code, "msg": text}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No endpoint has this path.
    #[error("No API method found: {0}")]
    NoMethod(String),
    /// The path exists, but not for this method.
    #[error("method {method} is not allowed on this path (allowed: {allowed})")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The methods the path has, for the `Allow` header.
        allowed: &'static str,
    },
    /// `open` with a name already in use.
    #[error("Con name already exists.")]
    NameTaken,
    /// Every strategy failed.
    #[error("Con {name} failed connect: {why}")]
    ConnectFailed {
        /// The connection's name.
        name: String,
        /// What each strategy said.
        why: String,
    },
    /// No connection has this name.
    #[error("Con name {0} not found.")]
    NotFound(String),
    /// The access rules refused the request.
    #[error("{0}")]
    Refused(Rule),
    /// Nothing arrived within the timeout.
    #[error("recv buffer empty after {0} s.")]
    Empty(String),
    /// The request body is too large or its length is wrong.
    #[error("invalid body: {0}")]
    Body(String),
    /// The connection did not take the data.
    #[error("send failed: {0}")]
    SendFailed(String),
    /// A subscription pattern is not a valid or small enough regex.
    #[error("bad pattern: {0}")]
    Pattern(String),
    /// The peer address does not parse.
    #[error("bad peer address: {0}")]
    Address(String),
    /// The connection table is full.
    #[error("too many connections: at most {0} are open at once")]
    TooManyConnections(usize),
    /// A path parameter is malformed or out of range.
    #[error("bad {name}: {why}")]
    Parameter {
        /// Which parameter.
        name: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// `recv` or `DELETE sub` on a subscription that does not exist.
    #[error("no subscription {0} on this connection: make it with /p2p/sub first")]
    NoSubscription(String),
    /// The request line or headers are too long.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// A pipe already relays this connection.
    #[error("con {0} is already relayed by a pipe")]
    Relayed(String),
    /// The peer ended the connection (what it sent before is still
    /// returned first).
    #[error("con {0} is closed")]
    Closed(String),
    /// `/p2p/pipe` sent after another request on one HTTP connection,
    /// without `Upgrade`.
    #[error("a pipe without Upgrade must be the first request of its HTTP connection")]
    PipeNotFirst,
    /// Too many HTTP connections or requests at once.
    #[error("busy: too many HTTP connections")]
    Busy,
    /// The connection has as many subscriptions as it may.
    #[error("too many subscriptions: at most {0} per connection")]
    TooManySubscriptions(usize),
}

impl ApiError {
    /// The number in the `error` field.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NoMethod(_) | ApiError::MethodNotAllowed { .. } => 1,
            ApiError::NameTaken => 2,
            ApiError::ConnectFailed { .. } => 3,
            ApiError::NotFound(_) => 4,
            ApiError::Refused(_) => 5,
            ApiError::Empty(_) => 6,
            ApiError::Body(_) => 7,
            ApiError::SendFailed(_) => 8,
            ApiError::Pattern(_) => 11,
            ApiError::Address(_) => 12,
            ApiError::TooManyConnections(_) => 13,
            ApiError::Parameter { .. } => 14,
            ApiError::NoSubscription(_) => 15,
            ApiError::TooLarge(_) => 16,
            ApiError::Relayed(_) => 17,
            ApiError::Closed(_) => 18,
            ApiError::PipeNotFirst => 19,
            ApiError::Busy => 20,
            ApiError::TooManySubscriptions(_) => 21,
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NoMethod(_) | ApiError::NotFound(_) | ApiError::NoSubscription(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::NameTaken | ApiError::Relayed(_) | ApiError::TooManySubscriptions(_) => 409,
            ApiError::ConnectFailed { .. } | ApiError::SendFailed(_) => 502,
            ApiError::Refused(_) => 403,
            ApiError::Empty(_) => 504,
            ApiError::Body(_) => 413,
            ApiError::Pattern(_)
            | ApiError::Address(_)
            | ApiError::Parameter { .. }
            | ApiError::PipeNotFirst => 400,
            ApiError::TooManyConnections(_) | ApiError::Busy => 503,
            ApiError::TooLarge(_) => 414,
            ApiError::Closed(_) => 410,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_the_originals_numbers_and_statuses_are_errors() {
        let cases = [
            (ApiError::NoMethod("/x".into()), 1, 404),
            (ApiError::NameTaken, 2, 409),
            (
                ApiError::ConnectFailed {
                    name: "a".into(),
                    why: "no".into(),
                },
                3,
                502,
            ),
            (ApiError::NotFound("a".into()), 4, 404),
            (ApiError::Refused(Rule::ForeignHost), 5, 403),
            (ApiError::Empty("2".into()), 6, 504),
        ];
        for (err, code, status) in cases {
            assert_eq!((err.code(), err.status()), (code, status), "{err}");
        }
        assert_eq!(
            ApiError::NameTaken.to_string(),
            "Con name already exists.",
            "the original's message"
        );
    }
}
