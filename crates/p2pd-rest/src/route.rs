//! From a request's method and path to an [`Endpoint`]: pure, total and
//! bounded, so any path gives an endpoint or an [`ApiError`].
//!
//! Each `/`-separated segment is percent-decoded on its own, so an encoded
//! `/` (`%2F`) stays inside its segment, and must decode to UTF-8. After
//! the fixed part of a path, the manual's keyword pairs may follow in any
//! order: `msg_p/<regex>`, `addr_p/<regex>`, `timeout/<seconds>`.

use std::time::Duration;

use p2pd_net::pipe::SubKey;
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// The longest path accepted (bytes, before decoding): room for a name
/// and two patterns of the longest, every character percent-encoded.
pub const MAX_PATH: usize = 32 * 1024;
/// The longest connection name (characters).
pub const MAX_NAME: usize = 128;
/// The longest subscription pattern (characters).
pub const MAX_PATTERN: usize = 1024;
/// How long `recv` waits when no timeout is given (the original's 2 s).
pub const DEFAULT_RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a `recv` may wait.
pub const MAX_RECV_TIMEOUT: Duration = Duration::from_secs(300);

/// The method of a request, as far as the API cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
    /// Anything else.
    Other,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other => "this method",
        }
    }
}

/// Where an `open` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This node (the manual's test connection).
    Itself,
    /// A peer address, as text.
    Peer(String),
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// `/version`.
    Version,
    /// `/status`.
    Status,
    /// `/openapi.json`.
    OpenApi,
    /// `/p2p/addr`.
    Addr,
    /// `/p2p/cons`: every open connection.
    Connections,
    /// `/p2p/open/<name>/<addr|self>`.
    Open {
        /// The new connection's name.
        name: String,
        /// Where to.
        target: Target,
    },
    /// `/p2p/con/<name>`.
    Con {
        /// The connection.
        name: String,
    },
    /// `/p2p/close/<name>`.
    Close {
        /// The connection.
        name: String,
    },
    /// `/p2p/send/<name>/<text>`.
    Send {
        /// The connection.
        name: String,
        /// What to send (UTF-8).
        text: String,
    },
    /// `/p2p/recv/<name>[...]`: the next message, as text.
    Recv {
        /// The connection.
        name: String,
        /// The subscription to take it from.
        key: SubKey,
        /// How long to wait.
        timeout: Duration,
    },
    /// `POST /p2p/binary/<name>`: the body, sent as is.
    Push {
        /// The connection.
        name: String,
    },
    /// `GET /p2p/binary/<name>[...]`: the next message, as bytes.
    Pull {
        /// The connection.
        name: String,
        /// The subscription to take it from.
        key: SubKey,
        /// How long to wait.
        timeout: Duration,
    },
    /// `/p2p/pipe/<name>`: the HTTP connection becomes a relay.
    Pipe {
        /// The connection.
        name: String,
    },
    /// `GET /p2p/sub/<name>[...]`.
    Subscribe {
        /// The connection.
        name: String,
        /// The patterns.
        key: SubKey,
    },
    /// `DELETE /p2p/sub/<name>[...]`.
    Unsubscribe {
        /// The connection.
        name: String,
        /// The patterns.
        key: SubKey,
    },
}

/// Parses a request target (path and optional query; the query is
/// ignored).
pub fn route(method: Method, target: &str) -> Result<Endpoint, ApiError> {
    if target.len() > MAX_PATH {
        return Err(ApiError::TooLarge(format!(
            "the path is {} bytes, at most {MAX_PATH}",
            target.len()
        )));
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let raw: Vec<&str> = path.split('/').skip(1).collect();
    let mut segs = Vec::with_capacity(raw.len());
    for seg in &raw {
        segs.push(decode(seg)?);
    }
    // A trailing slash is not a segment of its own.
    if segs.len() > 1 && segs.last().is_some_and(String::is_empty) {
        segs.pop();
    }
    let words: Vec<&str> = segs.iter().map(String::as_str).collect();
    let unknown = || ApiError::NoMethod(path.to_owned());
    let refuse = |allowed: &'static str| ApiError::MethodNotAllowed {
        method: method.name().to_owned(),
        allowed,
    };
    let only = |allowed: Method, endpoint: Endpoint| {
        if method == allowed {
            Ok(endpoint)
        } else {
            Err(refuse(allowed.name()))
        }
    };
    match words.as_slice() {
        ["version"] => only(Method::Get, Endpoint::Version),
        ["status"] => only(Method::Get, Endpoint::Status),
        ["openapi.json"] => only(Method::Get, Endpoint::OpenApi),
        ["p2p", "addr"] => only(Method::Get, Endpoint::Addr),
        ["p2p", "cons"] => only(Method::Get, Endpoint::Connections),
        ["p2p", "open", name, target] => only(
            Method::Get,
            Endpoint::Open {
                name: checked_name(name)?,
                target: if *target == "self" {
                    Target::Itself
                } else {
                    Target::Peer((*target).to_owned())
                },
            },
        ),
        ["p2p", "con", name] => only(
            Method::Get,
            Endpoint::Con {
                name: checked_name(name)?,
            },
        ),
        ["p2p", "close", name] => only(
            Method::Get,
            Endpoint::Close {
                name: checked_name(name)?,
            },
        ),
        ["p2p", "send", name, rest @ ..] if !rest.is_empty() => {
            // An unencoded '/' in the text is kept, not a new segment.
            only(
                Method::Get,
                Endpoint::Send {
                    name: checked_name(name)?,
                    text: rest.join("/"),
                },
            )
        }
        ["p2p", "recv", name, rest @ ..] => {
            let opts = Options::parse(rest, true)?;
            only(
                Method::Get,
                Endpoint::Recv {
                    name: checked_name(name)?,
                    key: opts.key,
                    timeout: opts.timeout,
                },
            )
        }
        ["p2p", "binary", name, rest @ ..] => {
            let name = checked_name(name)?;
            match method {
                Method::Post if rest.is_empty() => Ok(Endpoint::Push { name }),
                Method::Post => Err(unknown()),
                Method::Get => {
                    let opts = Options::parse(rest, true)?;
                    Ok(Endpoint::Pull {
                        name,
                        key: opts.key,
                        timeout: opts.timeout,
                    })
                }
                _ if rest.is_empty() => Err(refuse("GET, POST")),
                _ => Err(refuse("GET")),
            }
        }
        ["p2p", "pipe", name] => only(
            Method::Get,
            Endpoint::Pipe {
                name: checked_name(name)?,
            },
        ),
        ["p2p", "sub", name, rest @ ..] => {
            let name = checked_name(name)?;
            let key = Options::parse(rest, false)?.key;
            match method {
                Method::Get => Ok(Endpoint::Subscribe { name, key }),
                Method::Delete => Ok(Endpoint::Unsubscribe { name, key }),
                _ => Err(refuse("GET, DELETE")),
            }
        }
        _ => Err(unknown()),
    }
}

/// The keyword pairs after a `recv`, `binary` or `sub` path.
struct Options {
    key: SubKey,
    timeout: Duration,
}

impl Options {
    fn parse(words: &[&str], timeout_allowed: bool) -> Result<Self, ApiError> {
        let mut key = SubKey::all();
        let mut timeout = None;
        let mut pairs = words.chunks(2);
        for pair in pairs.by_ref() {
            let [word, value] = pair else {
                return Err(ApiError::Parameter {
                    name: "path",
                    why: format!("`{}` needs a value after it", pair[0]),
                });
            };
            match *word {
                "msg_p" => key.msg = checked_pattern("msg_p", value)?,
                "addr_p" => key.addr = checked_pattern("addr_p", value)?,
                "timeout" if timeout_allowed => timeout = Some(checked_timeout(value)?),
                other => {
                    return Err(ApiError::Parameter {
                        name: "path",
                        why: format!(
                            "unknown keyword `{other}` (expected msg_p, addr_p{})",
                            if timeout_allowed { " or timeout" } else { "" }
                        ),
                    });
                }
            }
        }
        Ok(Options {
            key,
            timeout: timeout.unwrap_or(DEFAULT_RECV_TIMEOUT),
        })
    }
}

fn decode(seg: &str) -> Result<String, ApiError> {
    percent_decode_str(seg)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ApiError::Parameter {
            name: "path",
            why: "a segment does not decode to UTF-8".into(),
        })
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::Parameter {
            name: "connection name",
            why: format!("1 to {MAX_NAME} characters, no control characters"),
        });
    }
    Ok(name.to_owned())
}

fn checked_pattern(which: &'static str, pattern: &str) -> Result<String, ApiError> {
    if pattern.chars().count() > MAX_PATTERN {
        return Err(ApiError::Parameter {
            name: which,
            why: format!("at most {MAX_PATTERN} characters"),
        });
    }
    Ok(pattern.to_owned())
}

fn checked_timeout(text: &str) -> Result<Duration, ApiError> {
    let bad = || ApiError::Parameter {
        name: "timeout",
        why: format!(
            "`{text}` is not a number of seconds from 0 to {}",
            MAX_RECV_TIMEOUT.as_secs()
        ),
    };
    let secs: f64 = text.parse().map_err(|_| bad())?;
    if !(0.0..=MAX_RECV_TIMEOUT.as_secs_f64()).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(path: &str) -> Result<Endpoint, ApiError> {
        route(Method::Get, path)
    }

    #[test]
    fn the_manuals_paths() {
        assert_eq!(get("/version"), Ok(Endpoint::Version));
        assert_eq!(get("/p2p/addr"), Ok(Endpoint::Addr));
        assert_eq!(
            get("/p2p/open/con_name/self"),
            Ok(Endpoint::Open {
                name: "con_name".into(),
                target: Target::Itself
            })
        );
        assert_eq!(
            get("/p2p/send/con_name/ECHO%20hello,%20world!"),
            Ok(Endpoint::Send {
                name: "con_name".into(),
                text: "ECHO hello, world!".into()
            })
        );
        assert_eq!(
            get("/p2p/recv/con_name"),
            Ok(Endpoint::Recv {
                name: "con_name".into(),
                key: SubKey::all(),
                timeout: DEFAULT_RECV_TIMEOUT
            })
        );
        assert_eq!(
            get("/p2p/recv/con_name/msg_p/%5BhH%5De%5Bl%5D%2Bo/addr_p/%5B%5Cs%5CS%5D%2B"),
            Ok(Endpoint::Recv {
                name: "con_name".into(),
                key: SubKey::new("[hH]e[l]+o", r"[\s\S]+"),
                timeout: DEFAULT_RECV_TIMEOUT
            })
        );
        assert_eq!(
            route(Method::Delete, "/p2p/sub/con_name/msg_p/regex/addr_p/regex"),
            Ok(Endpoint::Unsubscribe {
                name: "con_name".into(),
                key: SubKey::new("regex", "regex")
            })
        );
        assert_eq!(
            route(Method::Delete, "/p2p/sub/con_name"),
            Ok(Endpoint::Unsubscribe {
                name: "con_name".into(),
                key: SubKey::all()
            })
        );
        assert_eq!(
            route(Method::Post, "/p2p/binary/con_name"),
            Ok(Endpoint::Push {
                name: "con_name".into()
            })
        );
        assert_eq!(
            get("/p2p/pipe/con_name"),
            Ok(Endpoint::Pipe {
                name: "con_name".into()
            })
        );
    }

    #[test]
    fn text_keeps_utf8_and_slashes() {
        for (path, text) in [
            ("/p2p/send/c/h%C3%A9llo", "héllo"),
            ("/p2p/send/c/a%2Fb", "a/b"),
            ("/p2p/send/c/a/b", "a/b"),
            ("/p2p/send/c/%25", "%"),
        ] {
            assert_eq!(
                get(path),
                Ok(Endpoint::Send {
                    name: "c".into(),
                    text: text.into()
                }),
                "{path}"
            );
        }
    }

    #[test]
    fn keywords_in_any_order_and_timeouts() {
        assert_eq!(
            get("/p2p/binary/c/timeout/0.5/addr_p/x"),
            Ok(Endpoint::Pull {
                name: "c".into(),
                key: SubKey::new("", "x"),
                timeout: Duration::from_millis(500)
            })
        );
        for bad in [
            "/p2p/recv/c/timeout/-1",
            "/p2p/recv/c/timeout/301",
            "/p2p/recv/c/timeout/x",
        ] {
            assert_eq!(get(bad).map_err(|e| e.code()), Err(14), "{bad}");
        }
        assert_eq!(get("/p2p/recv/c/msg_p").map_err(|e| e.code()), Err(14));
        assert_eq!(get("/p2p/sub/c/timeout/1").map_err(|e| e.code()), Err(14));
    }

    #[test]
    fn bad_paths_are_errors() {
        assert_eq!(get("/").map_err(|e| e.code()), Err(1));
        assert_eq!(get("/p2p/nothing").map_err(|e| e.code()), Err(1));
        assert_eq!(
            route(Method::Post, "/version").map_err(|e| e.status()),
            Err(405)
        );
        assert_eq!(get("/p2p/con/%FF").map_err(|e| e.code()), Err(14));
        assert_eq!(get("/p2p/con/a%0Ab").map_err(|e| e.code()), Err(14));
        let long = format!("/p2p/con/{}", "a".repeat(MAX_NAME + 1));
        assert_eq!(get(&long).map_err(|e| e.code()), Err(14));
        let huge = format!("/p2p/send/c/{}", "a".repeat(MAX_PATH));
        assert_eq!(get(&huge).map_err(|e| e.code()), Err(16));
    }

    proptest! {
        #[test]
        fn any_target_routes_or_errs(target in "\\PC{0,200}", m in 0..4u8) {
            let method = [Method::Get, Method::Post, Method::Delete, Method::Other][usize::from(m)];
            let _ = route(method, &target);
        }

        #[test]
        fn any_text_round_trips_through_percent_encoding(text in "\\PC{1,64}") {
            let encoded = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC);
            let path = format!("/p2p/send/c/{encoded}");
            prop_assert_eq!(get(&path), Ok(Endpoint::Send { name: "c".into(), text: text.clone() }));
        }
    }
}
