//! The one datagram-to-send shape every machine here hands its driver.

use std::fmt;
use std::net::SocketAddr;

/// A datagram to send. `src` says which local socket sends it: `None` (the
/// default) for a machine driven on one socket, a local address for the
/// STUN server's four sockets, a socket id for machines that ask their
/// driver to open sockets.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit<S = Option<SocketAddr>> {
    /// The local socket to send from.
    pub src: S,
    /// Where to.
    pub dst: SocketAddr,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// Prints the payload's length, not its bytes: logs stay short and do not
/// carry what peers sent.
impl<S: fmt::Debug> fmt::Debug for Transmit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("len", &self.payload.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_the_length_not_the_payload() {
        let transmit: Transmit = Transmit {
            src: None,
            dst: "198.18.0.2:3478".parse().expect("lit"),
            payload: vec![0xab; 7],
        };
        let printed = format!("{transmit:?}");
        assert!(printed.contains("len: 7"), "{printed}");
        assert!(!printed.contains("171"), "payload bytes leaked: {printed}");
    }
}
