//! The sockets of a TCP punch: reserved ports, each with a listener
//! beside (SO_REUSEPORT), and connects whose SYN is out when the call
//! returns, so the order of the calls is the order the NAT sees.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::bind::{self, BindError, BindOptions};

/// Binds `count` listeners on fresh ports of `ip`, each port shareable by
/// the connects that leave from it.
pub fn reserve(ip: IpAddr, count: usize) -> Result<Vec<TcpListener>, BindError> {
    (0..count)
        .map(|_| bind::tcp_listener(SocketAddr::new(ip, 0), &BindOptions::shared_port()))
        .collect()
}

/// Starts a connect from `local` to `dst`: when this returns, the SYN has
/// left. Await [`established`] for its result.
pub fn connect_now(local: SocketAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    match socket.connect(&dst.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    TcpStream::from_std(socket.into())
}

/// Waits until a connect from [`connect_now`] is established, or fails.
///
/// Cancel-safe.
pub async fn established(stream: &TcpStream) -> io::Result<()> {
    stream.writable().await?;
    match stream.take_error()? {
        Some(err) => Err(err),
        None => stream.peer_addr().map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reserved_port_both_listens_and_connects() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let ours = reserve(lo, 1).expect("reserve").pop().expect("one");
        let theirs = reserve(lo, 1).expect("reserve").pop().expect("one");
        let (a, b) = (
            ours.local_addr().expect("a"),
            theirs.local_addr().expect("b"),
        );
        // Their listener takes our SYN (no NAT drops it on loopback); a
        // second connect on that 4-tuple is refused, as on a real punch.
        let out = connect_now(a, b).expect("connect a");
        established(&out).await.expect("established");
        assert_eq!(out.local_addr().expect("local"), a);
        let (_, from) = theirs.accept().await.expect("accepted");
        assert_eq!(from, a);
        let again = connect_now(b, a)
            .map(|_| ())
            .expect_err("the 4-tuple is taken");
        assert_eq!(again.kind(), io::ErrorKind::AddrNotAvailable);
        // A plain client reaches the listener on the same port.
        let client = TcpStream::connect(a).await.expect("client");
        let (accepted, from) = ours.accept().await.expect("accept");
        assert_eq!(from, client.local_addr().expect("client addr"));
        drop(accepted);
        let refused = connect_now(a, "127.0.0.1:1".parse().expect("addr")).expect("starts");
        assert!(established(&refused).await.is_err());
    }
}
