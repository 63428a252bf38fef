//! An allocation seen as a UDP socket by quinn: a datagram sent to a peer's
//! relayed address goes out as ChannelData (or a Send indication) to the
//! server, and the peers' datagrams come in from the allocation's driver.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

use super::shared::{Datagram, Link, Shared};

/// The relayed path as a datagram socket (see the module docs).
pub struct RelaySocket {
    shared: Arc<Shared>,
    incoming: Mutex<mpsc::Receiver<Datagram>>,
    relayed: SocketAddr,
}

impl RelaySocket {
    pub(super) fn new(
        shared: Arc<Shared>,
        incoming: mpsc::Receiver<Datagram>,
        relayed: SocketAddr,
    ) -> Self {
        Self {
            shared,
            incoming: Mutex::new(incoming),
            relayed,
        }
    }
}

impl fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySocket")
            .field("server", &self.shared.server)
            .field("relayed", &self.relayed)
            .finish()
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable(self.shared.clone()))
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut frame = Vec::with_capacity(transmit.contents.len() + 40);
        let mut sizes = Vec::new();
        {
            let client = self.shared.client();
            for datagram in transmit.contents.chunks(segment) {
                let start = frame.len();
                if let Err(err) = client.wrap(transmit.destination, datagram, &mut frame) {
                    // No channel or permission (yet, or any more): lost, as
                    // on a path that drops it; the transport resends or
                    // gives up.
                    tracing::trace!(%err, "relayed datagram dropped");
                    return Ok(());
                }
                sizes.push(frame.len() - start);
            }
        }
        match &self.shared.link {
            Link::Udp(udp) => udp.send_frames(self.shared.server, &frame, &sizes),
            // A full queue drops the datagram, as a full buffer would.
            Link::Stream(tx) => {
                let _ = tx.try_send(frame);
                Ok(())
            }
        }
    }

    fn max_transmit_segments(&self) -> usize {
        match &self.shared.link {
            Link::Udp(udp) => udp.max_segments(),
            Link::Stream(_) => 1,
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut incoming = self
            .incoming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let next = if filled == 0 {
                match incoming.poll_recv(cx) {
                    Poll::Ready(next) => next,
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                incoming.try_recv().ok()
            };
            let Some((peer, data)) = next else {
                if filled == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the TURN allocation ended",
                    )));
                }
                break;
            };
            let len = data.len().min(bufs[filled].len());
            bufs[filled][..len].copy_from_slice(&data[..len]);
            meta[filled] = RecvMeta {
                addr: peer,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.relayed)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Write readiness of the link to the server.
struct Writable(Arc<Shared>);

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Writable")
    }
}

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.0.link {
            Link::Udp(udp) => udp.socket.poll_send_ready(cx),
            Link::Stream(_) => Poll::Ready(Ok(())),
        }
    }
}
