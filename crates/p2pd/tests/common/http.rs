//! A small blocking HTTP/1.1 client for the REST tests: raw requests as
//! bytes, so a test says exactly what goes on the wire, and answers read by
//! their Content-Length on a connection that may stay open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value, by name in any letter case.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to the API.
pub(crate) struct Http {
    pub(crate) stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    pub(crate) fn connect(api: SocketAddr) -> Http {
        let stream = TcpStream::connect(api).expect("connect to the API");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes and reads one answer.
    pub(crate) fn raw(&mut self, request: &[u8]) -> Answer {
        self.stream.write_all(request).expect("send the request");
        self.read_answer()
    }

    /// `GET path` as curl would send it (Host, no browser marks), plus
    /// `headers` (each `Name: value`).
    pub(crate) fn get(&mut self, path: &str, headers: &[&str]) -> Answer {
        self.call("GET", path, headers, b"")
    }

    /// Any method, with a body.
    pub(crate) fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> Answer {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost:12333\r\n");
        for h in headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        if !body.is_empty() || method == "POST" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    /// Reads one answer: the head, then Content-Length bytes.
    pub(crate) fn read_answer(&mut self) -> Answer {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        while self.buf.len() < length {
            self.fill();
        }
        let body = self.buf.drain(..length).collect();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Reads until `want` bytes of relayed data arrived (after any answer).
    pub(crate) fn read_exact_raw(&mut self, want: usize) -> Vec<u8> {
        while self.buf.len() < want {
            self.fill();
        }
        self.buf.drain(..want).collect()
    }

    /// Whether the server has closed the connection (reads to the end).
    pub(crate) fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.stream.read_to_end(&mut rest), Ok(0))
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).unwrap_or_else(|err| {
            panic!(
                "read from the API: {err}; had {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        });
        assert!(
            n > 0,
            "the API closed the connection; had {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }
}
