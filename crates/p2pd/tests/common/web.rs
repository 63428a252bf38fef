//! A web server for the browser tests: it serves the test pages (as a
//! foreign site would) and takes the reports the pages post back, so a
//! test waits for an event, not for time to pass.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// The server: files under `root`, reports over a channel.
pub(crate) struct Web {
    pub(crate) port: u16,
    reports: mpsc::Receiver<(String, String)>,
}

impl Web {
    /// Serves on `listener` (made where the browser can reach it).
    pub(crate) fn start(listener: TcpListener, root: PathBuf) -> Web {
        let port = listener.local_addr().expect("addr").port();
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, root) = (tx.clone(), root.clone());
                std::thread::spawn(move || serve(stream, &root, &tx));
            }
        });
        Web { port, reports }
    }

    /// The next report a page posted to `/report/<name>`: its name and body.
    pub(crate) fn report(&self, limit: Duration) -> (String, String) {
        self.reports
            .recv_timeout(limit)
            .expect("the page reported back in time")
    }
}

fn serve(stream: TcpStream, root: &std::path::Path, reports: &mpsc::Sender<(String, String)>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, kind, content) = if method == "POST" && path.starts_with("/report/") {
            let name = path.trim_start_matches("/report/").to_owned();
            let _ = reports.send((name, String::from_utf8_lossy(&body).into_owned()));
            ("204 No Content", "text/plain", Vec::new())
        } else {
            let file = root.join(
                path.trim_start_matches('/')
                    .split('?')
                    .next()
                    .unwrap_or_default(),
            );
            match std::fs::read(&file) {
                Ok(content) => {
                    let kind = if path.ends_with(".js") {
                        "text/javascript"
                    } else {
                        "text/html; charset=utf-8"
                    };
                    ("200 OK", kind, content)
                }
                Err(_) => ("404 Not Found", "text/plain", b"no such file".to_vec()),
            }
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nAccess-Control-Allow-Origin: *\r\n\r\n",
            content.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&content).is_err() {
            return;
        }
    }
}
