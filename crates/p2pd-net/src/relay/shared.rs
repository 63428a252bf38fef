//! What an allocation's driver task and the datagram socket above it
//! share: the client, the link to the server and the driver's wake-up. Its
//! own module, so neither side imports the other.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use p2pd_proto::turn::Client;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

/// A datagram from a peer, through the relay.
pub(super) type Datagram = (SocketAddr, Bytes);

/// What the driver task and the socket above share.
pub(super) struct Shared {
    pub(super) client: Mutex<Client>,
    pub(super) link: Link,
    pub(super) server: SocketAddr,
    /// The UDP link's segmentation offload: a transport's run of
    /// equal-sized datagrams leaves in one send.
    pub(super) offload: Option<quinn::udp::UdpSocketState>,
    /// Wakes the driver: a request was queued outside it.
    pub(super) poke: Notify,
}

/// How bytes reach the server.
pub(super) enum Link {
    Udp(UdpSocket),
    /// Frames for the TCP writer task.
    Stream(mpsc::Sender<Vec<u8>>),
}

impl Shared {
    pub(super) fn client(&self) -> MutexGuard<'_, Client> {
        // A panic while the lock is held leaves a client still consistent
        // between calls; go on with it.
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
