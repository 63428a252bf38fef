//! What an allocation's driver task and the datagram socket above it
//! share: the client, the link to the server and the driver's wake-up. Its
//! own module, so neither side imports the other.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use p2pd_proto::turn::Client;
use quinn::udp::UdpSocketState;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

/// A datagram from a peer, through the relay.
pub(super) type Datagram = (SocketAddr, Bytes);

/// What the driver task and the socket above share.
pub(super) struct Shared {
    pub(super) client: Mutex<Client>,
    pub(super) link: Link,
    pub(super) server: SocketAddr,
    /// Wakes the driver: a request was queued outside it.
    pub(super) poke: Notify,
}

/// How bytes reach the server.
pub(super) enum Link {
    Udp(UdpLink),
    /// Frames for the TCP writer task.
    Stream(mpsc::Sender<Vec<u8>>),
}

/// The UDP socket to the server, with its segmentation offload when the
/// kernel has it: a run of equal-sized frames leaves in one send.
pub(super) struct UdpLink {
    pub(super) socket: UdpSocket,
    offload: Option<UdpSocketState>,
}

impl UdpLink {
    pub(super) fn new(socket: UdpSocket) -> Self {
        let offload = UdpSocketState::new((&socket).into()).ok();
        Self { socket, offload }
    }

    /// How many frames one [`UdpLink::send_frames`] sends at once.
    pub(super) fn max_segments(&self) -> usize {
        self.offload
            .as_ref()
            .map_or(1, UdpSocketState::max_gso_segments)
    }

    /// Sends `frames`, laid end to end, whose lengths are `sizes`: in one
    /// send when every frame but the last has the first's size (ChannelData
    /// on one channel), else one send each.
    pub(super) fn send_frames(
        &self,
        server: SocketAddr,
        frames: &[u8],
        sizes: &[usize],
    ) -> io::Result<()> {
        let first = sizes.first().copied().unwrap_or(0);
        let even = sizes
            .split_last()
            .is_some_and(|(last, rest)| rest.iter().all(|&n| n == first) && *last <= first);
        if let Some(offload) = self.offload.as_ref().filter(|_| even && sizes.len() > 1) {
            let transmit = quinn::udp::Transmit {
                destination: server,
                ecn: None,
                contents: frames,
                segment_size: Some(first),
                src_ip: None,
            };
            return self.socket.try_io(Interest::WRITABLE, || {
                offload.try_send((&self.socket).into(), &transmit)
            });
        }
        let mut at = 0;
        for &n in sizes {
            self.socket.try_send_to(&frames[at..at + n], server)?;
            at += n;
        }
        Ok(())
    }
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
