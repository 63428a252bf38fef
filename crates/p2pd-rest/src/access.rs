//! Who may use the API (DESIGN.md, "REST API"): a pure decision over the
//! request's headers, the same for requests hyper parses and for the raw
//! pipe request this crate parses itself.
//!
//! The manual's rule ("Origin null or 127.0.0.1") is not safe: any website
//! can send `Origin: null` from a sandboxed iframe, and a no-cors GET
//! carries no Origin at all. So a request is judged in three steps:
//! the Host must be loopback (DNS rebinding); a request without browser
//! marks is a program and is served; a browser request is served from a
//! loopback origin, with the API token, or (only when configured) from
//! `Origin: null`.

use std::fmt;
use std::net::IpAddr;

/// The header that carries the API token.
pub const TOKEN_HEADER: &str = "x-p2pd-token";

/// The headers the decision reads, taken case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// `Host`.
    pub host: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// `Sec-Fetch-Site`.
    pub fetch_site: Option<String>,
    /// `Referer`.
    pub referer: Option<String>,
    /// `X-P2PD-Token`.
    pub token: Option<String>,
    /// `Access-Control-Request-Headers` of a preflight.
    pub request_headers: Option<String>,
}

impl Marks {
    /// Picks the headers the rules read, whatever their letter case (the
    /// original checked only `Origin` and a lower-case `origin` slipped
    /// past). A header sent twice keeps its first value.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut marks = Marks::default();
        for (name, value) in headers {
            let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
            let slot = if is("host") {
                &mut marks.host
            } else if is("origin") {
                &mut marks.origin
            } else if is("sec-fetch-site") {
                &mut marks.fetch_site
            } else if is("referer") {
                &mut marks.referer
            } else if is(TOKEN_HEADER) {
                &mut marks.token
            } else if is("access-control-request-headers") {
                &mut marks.request_headers
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(String::from_utf8_lossy(value).trim().to_owned());
            }
        }
        marks
    }
}

/// The rule that refused a request, named in the 403 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The Host names something other than this machine (DNS rebinding).
    ForeignHost,
    /// A browser request from a web origin that is not loopback.
    ForeignOrigin,
    /// `Origin: null` without the token while null origins are not allowed.
    NullOrigin,
    /// A browser request without an Origin, from another site (a no-cors
    /// GET, an image, a link).
    CrossSite,
    /// A token that is not this daemon's.
    WrongToken,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::ForeignHost => {
                "refused: the Host header must name this machine (127.0.0.1, [::1] or localhost)"
            }
            Rule::ForeignOrigin => {
                "refused: browser requests are served from loopback origins or with the X-P2PD-Token header"
            }
            Rule::NullOrigin => {
                "refused: Origin null needs the X-P2PD-Token header (or [rest] allow_null_origin = true)"
            }
            Rule::CrossSite => {
                "refused: a cross-site browser request without an Origin is never served"
            }
            Rule::WrongToken => "refused: the X-P2PD-Token header does not match this daemon's token",
        })
    }
}

/// What the rules make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A program (curl, Python, the manual's raw pipe client): served, no
    /// CORS headers needed.
    Program,
    /// An allowed browser request: served, with CORS headers for `origin`
    /// (`None` when it sent no Origin).
    Browser {
        /// The Origin to echo.
        origin: Option<String>,
    },
    /// Refused by this rule.
    Refused(Rule),
}

/// The settings the rules depend on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The API token of this run.
    pub token: String,
    /// Serve `Origin: null` without the token (the manual's rule).
    pub allow_null_origin: bool,
}

impl Policy {
    /// Judges a request.
    pub fn judge(&self, marks: &Marks) -> Verdict {
        let Some(host) = &marks.host else {
            // Browsers always send Host: without it this is a program,
            // whatever else it carries (the manual's pipe request sends
            // `Origin: null` and no Host).
            return Verdict::Program;
        };
        if !is_loopback_host(host) {
            return Verdict::Refused(Rule::ForeignHost);
        }
        let cross = marks.fetch_site.as_deref().is_some_and(|s| {
            !s.eq_ignore_ascii_case("same-origin") && !s.eq_ignore_ascii_case("none")
        });
        if marks.origin.is_none() && !cross && marks.referer.is_none() {
            return Verdict::Program;
        }
        // A loopback page is served whatever token it sends (a stale one
        // after a restart too); any other page needs the right token.
        if let Some(origin) = marks.origin.as_deref()
            && is_loopback_origin(origin)
        {
            return Verdict::Browser {
                origin: Some(origin.to_owned()),
            };
        }
        match marks.token.as_deref() {
            Some(token) if same_secret(token, &self.token) => {
                return Verdict::Browser {
                    origin: marks.origin.clone(),
                };
            }
            Some(_) => return Verdict::Refused(Rule::WrongToken),
            None => {}
        }
        match marks.origin.as_deref() {
            Some(origin) if origin.eq_ignore_ascii_case("null") => {
                if self.allow_null_origin {
                    Verdict::Browser {
                        origin: Some("null".into()),
                    }
                } else {
                    Verdict::Refused(Rule::NullOrigin)
                }
            }
            Some(_) => Verdict::Refused(Rule::ForeignOrigin),
            // No Origin: a navigation or a no-cors request. Served only
            // when a loopback page made it.
            None => match marks.referer.as_deref() {
                Some(referer) if is_loopback_origin(origin_of(referer)) => {
                    Verdict::Browser { origin: None }
                }
                _ => Verdict::Refused(Rule::CrossSite),
            },
        }
    }

    /// Judges a CORS preflight: it never carries the token, only names the
    /// headers the real request will send. A preflight is answered when
    /// the real request could be served: from a loopback origin, from a
    /// null origin when allowed, or from anywhere when the real request
    /// will carry the token (which is checked then).
    pub fn judge_preflight(&self, marks: &Marks) -> Verdict {
        if let Some(host) = &marks.host
            && !is_loopback_host(host)
        {
            return Verdict::Refused(Rule::ForeignHost);
        }
        let origin = marks.origin.clone();
        let with_token = marks.request_headers.as_deref().is_some_and(|list| {
            list.split(',')
                .any(|h| h.trim().eq_ignore_ascii_case(TOKEN_HEADER))
        });
        let allowed = match origin.as_deref() {
            _ if with_token => true,
            Some(o) if o.eq_ignore_ascii_case("null") => self.allow_null_origin,
            Some(o) => is_loopback_origin(o),
            None => false,
        };
        if allowed {
            Verdict::Browser { origin }
        } else if origin
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case("null"))
        {
            Verdict::Refused(Rule::NullOrigin)
        } else {
            Verdict::Refused(Rule::ForeignOrigin)
        }
    }
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `host[:port]` naming this machine: a loopback IP or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = strip_port(host.trim());
    if name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `http://host[:port]` (or https) with a loopback host.
fn is_loopback_origin(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|host| !host.contains('/') && is_loopback_host(host))
}

/// The `scheme://host[:port]` part of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(end) => &url[..after_scheme + end],
        None => url,
    }
}

/// `name[:port]` or `[v6][:port]` → the name part.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        // One colon: name:port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(null: bool) -> Policy {
        Policy {
            token: "secret-token".into(),
            allow_null_origin: null,
        }
    }

    fn marks(headers: &[(&str, &str)]) -> Marks {
        Marks::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn programs_are_served() {
        let p = policy(false);
        // curl
        assert_eq!(
            p.judge(&marks(&[("Host", "localhost:12333")])),
            Verdict::Program
        );
        // the manual's raw pipe request: Origin null, no Host
        assert_eq!(p.judge(&marks(&[("Origin", "null")])), Verdict::Program);
        // a typed URL in a browser: Sec-Fetch-Site none
        assert_eq!(
            p.judge(&marks(&[
                ("Host", "127.0.0.1:12333"),
                ("Sec-Fetch-Site", "none")
            ])),
            Verdict::Program
        );
    }

    #[test]
    fn the_host_must_be_this_machine() {
        let p = policy(true);
        for host in [
            "evil.example",
            "evil.example:12333",
            "10.0.0.1:12333",
            "localhost.evil",
        ] {
            assert_eq!(
                p.judge(&marks(&[("Host", host)])),
                Verdict::Refused(Rule::ForeignHost),
                "{host}"
            );
        }
        for host in [
            "localhost",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:12333",
            "[::1]",
        ] {
            assert_eq!(
                p.judge(&marks(&[("Host", host)])),
                Verdict::Program,
                "{host}"
            );
        }
    }

    #[test]
    fn browsers_need_a_loopback_origin_or_the_token() {
        let p = policy(false);
        let host = ("Host", "127.0.0.1:12333");
        for origin in [
            "http://127.0.0.1:8000",
            "http://localhost",
            "http://[::1]:9",
        ] {
            assert_eq!(
                p.judge(&marks(&[host, ("Origin", origin)])),
                Verdict::Browser {
                    origin: Some(origin.into())
                }
            );
        }
        assert_eq!(
            p.judge(&marks(&[host, ("Origin", "https://evil.example")])),
            Verdict::Refused(Rule::ForeignOrigin)
        );
        assert_eq!(
            p.judge(&marks(&[host, ("origin", "http://127.0.0.1.evil.example")])),
            Verdict::Refused(Rule::ForeignOrigin),
            "lower-case name, lookalike host"
        );
        assert_eq!(
            p.judge(&marks(&[host, ("ORIGIN", "null")])),
            Verdict::Refused(Rule::NullOrigin)
        );
        assert_eq!(
            p.judge(&marks(&[
                host,
                ("Origin", "null"),
                ("X-P2PD-Token", "secret-token")
            ])),
            Verdict::Browser {
                origin: Some("null".into())
            }
        );
        assert_eq!(
            p.judge(&marks(&[
                host,
                ("Origin", "null"),
                ("x-p2pd-token", "secret-tokeX")
            ])),
            Verdict::Refused(Rule::WrongToken)
        );
        assert_eq!(
            p.judge(&marks(&[
                host,
                ("Origin", "http://localhost:8000"),
                ("X-P2PD-Token", "stale")
            ])),
            Verdict::Browser {
                origin: Some("http://localhost:8000".into())
            },
            "a loopback page with an old token"
        );
        assert_eq!(
            policy(true).judge(&marks(&[host, ("Origin", "null")])),
            Verdict::Browser {
                origin: Some("null".into())
            }
        );
    }

    #[test]
    fn no_cors_requests_from_other_sites_are_refused() {
        let p = policy(true);
        let host = ("Host", "localhost:12333");
        assert_eq!(
            p.judge(&marks(&[host, ("Sec-Fetch-Site", "cross-site")])),
            Verdict::Refused(Rule::CrossSite)
        );
        assert_eq!(
            p.judge(&marks(&[host, ("Referer", "https://evil.example/page")])),
            Verdict::Refused(Rule::CrossSite)
        );
        assert_eq!(
            p.judge(&marks(&[
                host,
                ("Sec-Fetch-Site", "same-site"),
                ("Referer", "http://localhost:8000/app.html")
            ])),
            Verdict::Browser { origin: None }
        );
    }

    #[test]
    fn preflights_are_answered_for_what_could_be_served() {
        let p = policy(false);
        let host = ("Host", "localhost:12333");
        assert!(matches!(
            p.judge_preflight(&marks(&[host, ("Origin", "http://localhost:8000")])),
            Verdict::Browser { .. }
        ));
        assert_eq!(
            p.judge_preflight(&marks(&[host, ("Origin", "null")])),
            Verdict::Refused(Rule::NullOrigin)
        );
        assert!(matches!(
            p.judge_preflight(&marks(&[
                host,
                ("Origin", "null"),
                (
                    "Access-Control-Request-Headers",
                    "content-type, x-p2pd-token"
                )
            ])),
            Verdict::Browser { .. }
        ));
        assert_eq!(
            p.judge_preflight(&marks(&[host, ("Origin", "https://evil.example")])),
            Verdict::Refused(Rule::ForeignOrigin)
        );
        assert_eq!(
            p.judge_preflight(&marks(&[
                ("Host", "evil.example"),
                ("Origin", "http://localhost")
            ])),
            Verdict::Refused(Rule::ForeignHost)
        );
    }

    #[test]
    fn first_value_of_a_repeated_header_counts() {
        let m = marks(&[
            ("Origin", "https://evil.example"),
            ("origin", "http://localhost"),
        ]);
        assert_eq!(m.origin.as_deref(), Some("https://evil.example"));
    }
}
