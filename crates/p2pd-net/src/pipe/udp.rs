//! UDP pipes: binding and the receive loop.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Ends, Inner, Io, Message, Pipe, PipeConfig, PipeError};
use crate::bind::{self, BindOptions};

pub(super) fn bind(local: SocketAddr, config: &PipeConfig) -> Result<UdpSocket, PipeError> {
    let options = BindOptions {
        reuse_address: config.reuse_address,
        reuse_port: config.reuse_port,
        ..BindOptions::default()
    };
    let socket = bind::udp(local, &options)?;
    if config.broadcast {
        socket.set_broadcast(true)?;
    }
    Ok(socket)
}

pub(super) fn wrap(
    socket: UdpSocket,
    default_dest: Option<SocketAddr>,
    config: &PipeConfig,
) -> Pipe {
    let socket = Arc::new(socket);
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let pipe = Pipe::new(
        Ends {
            protocol: super::Protocol::Udp,
            local,
            peer: default_dest,
            fd: Some(socket.as_raw_fd()),
        },
        Io::Udp(Mutex::new(Some(socket.clone()))),
        config,
        None,
        None,
    );
    let task = tokio::spawn(recv_loop(pipe.weak(), socket));
    pipe.track(task);
    pipe
}

/// Receives until `close` (or the last handle dropping) aborts it. Errors on one datagram (such as an ICMP error
/// reported on the socket) never end a UDP pipe.
async fn recv_loop(weak: Weak<Inner>, socket: Arc<UdpSocket>) {
    let Some(limit) = weak.upgrade().map(|inner| inner.config.read_buffer) else {
        return;
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The socket's own receiver slot, as a raw receive would use:
        // `readable()` would queue a waiter under a lock and take it out
        // again.
        if std::future::poll_fn(|cx| socket.poll_recv_ready(cx))
            .await
            .is_err()
        {
            break;
        }
        if buf.len() != limit {
            buf.resize(limit, 0);
        }
        let (n, from) = match socket.try_recv_from(&mut buf) {
            Ok(got) => got,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                tracing::debug!(%err, "udp receive error");
                continue;
            }
        };
        let Some(pipe) = Pipe::upgrade(&weak) else {
            return;
        };
        let msg = Message {
            data: Bytes::copy_from_slice(&buf[..n]),
            from,
        };
        pipe.deliver(msg, &pipe, false).await;
        // A callback that closed this pipe ran on this task, which `close`
        // cannot abort from inside: stop here. (An atomic load: the close
        // token's own check takes a lock, once per message.)
        if pipe.has_ended() {
            break;
        }
    }
    if let Some(pipe) = Pipe::upgrade(&weak) {
        pipe.finish_detached();
    }
}
