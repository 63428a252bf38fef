//! The relayed stream's transport under loss, duplication and reordering:
//! QUIC (as the relay strategy configures it) over an in-memory datagram
//! path that impairs what it carries, spliced onto TCP as the node uses it.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

mod relay_common;

use p2pd_net::relay::{bridge, quic};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use relay_common::{data, exchange};

/// How the path treats each datagram.
#[derive(Debug, Clone, Copy)]
struct Impairment {
    loss: f64,
    duplicate: f64,
    reorder: f64,
}

#[derive(Default)]
struct Queue {
    datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

/// What the path did, for the assertion that it did it.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    sent: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
}

struct Path {
    rng: StdRng,
    held: Option<(SocketAddr, Vec<u8>)>,
    counts: Counts,
}

/// One end of the in-memory path.
struct End {
    addr: SocketAddr,
    inbox: Arc<Mutex<Queue>>,
    peer_inbox: Arc<Mutex<Queue>>,
    path: Arc<Mutex<Path>>,
    impairment: Impairment,
}

impl fmt::Debug for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "End({})", self.addr)
    }
}

fn deliver(queue: &Mutex<Queue>, datagram: (SocketAddr, Vec<u8>)) {
    let mut queue = queue.lock().expect("queue");
    // A full buffer drops, as a socket's would.
    if queue.datagrams.len() < 8192 {
        queue.datagrams.push_back(datagram);
    }
    if let Some(waker) = queue.waker.take() {
        waker.wake();
    }
}

impl AsyncUdpSocket for End {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let datagram = (self.addr, transmit.contents.to_vec());
        let mut path = self.path.lock().expect("path");
        path.counts.sent += 1;
        let roll: f64 = path.rng.random();
        let i = self.impairment;
        if roll < i.loss {
            path.counts.lost += 1;
            return Ok(());
        }
        if roll < i.loss + i.duplicate {
            path.counts.duplicated += 1;
            deliver(&self.peer_inbox, datagram.clone());
        } else if roll < i.loss + i.duplicate + i.reorder && path.held.is_none() {
            path.counts.reordered += 1;
            path.held = Some(datagram);
            return Ok(());
        }
        deliver(&self.peer_inbox, datagram);
        if let Some(held) = path.held.take() {
            deliver(&self.peer_inbox, held);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut queue = self.inbox.lock().expect("queue");
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, data)) = queue.datagrams.pop_front() else {
                break;
            };
            let len = data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&data[..len]);
            meta[n] = RecvMeta {
                addr: from,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        if n == 0 {
            queue.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Two ends of one impaired path (one RNG and counts for both directions).
fn path(impairment: Impairment) -> (Arc<End>, Arc<End>, Arc<Mutex<Path>>) {
    let a_addr: SocketAddr = "192.0.2.1:40000".parse().expect("literal");
    let b_addr: SocketAddr = "192.0.2.2:40000".parse().expect("literal");
    let (a_in, b_in) = (Arc::default(), Arc::default());
    let path = Arc::new(Mutex::new(Path {
        rng: StdRng::seed_from_u64(5),
        held: None,
        counts: Counts::default(),
    }));
    let a = Arc::new(End {
        addr: a_addr,
        inbox: Arc::clone(&a_in),
        peer_inbox: Arc::clone(&b_in),
        path: path.clone(),
        impairment,
    });
    let b = Arc::new(End {
        addr: b_addr,
        inbox: b_in,
        peer_inbox: a_in,
        path: path.clone(),
        impairment,
    });
    (a, b, path)
}

async fn both_ways(impairment: Impairment) -> Counts {
    let (a, b, path) = path(impairment);
    let a_addr = a.addr;
    let b_addr = b.addr;
    let client = quic::client(a).expect("client endpoint");
    let server = quic::server(b).expect("server endpoint");
    let responder = tokio::spawn(async move {
        let (conn, send, recv) = quic::accept(&server, a_addr).await.expect("accept");
        let (stream, _reading) = bridge::splice(conn, (send, recv), server, |_| async {})
            .await
            .expect("splice");
        exchange(stream, data(2)).await
    });
    let (conn, send, recv) = quic::open(&client, b_addr).await.expect("open");
    let (stream, _reading) = bridge::splice(conn, (send, recv), client, |_| async {})
        .await
        .expect("splice");
    let from_responder = exchange(stream, data(1)).await;
    let from_initiator = responder.await.expect("responder");
    assert!(
        from_initiator == data(1),
        "initiator's 10 MB arrived intact and in order"
    );
    assert!(
        from_responder == data(2),
        "responder's 10 MB arrived intact and in order"
    );
    path.lock().expect("path").counts
}

#[tokio::test]
async fn ten_megabytes_each_way_survive_loss_duplication_and_reordering() {
    let impairment = Impairment {
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.05,
    };
    let counts = tokio::time::timeout(Duration::from_secs(120), both_ways(impairment))
        .await
        .expect("done within 120 s");
    println!("impaired path: {counts:?}");
    // The path did impair: about 5 % lost, some duplicated and reordered.
    let lost = counts.lost as f64 / counts.sent as f64;
    assert!((0.03..0.07).contains(&lost), "{counts:?}");
    assert!(
        counts.duplicated > 100 && counts.reordered > 100,
        "{counts:?}"
    );
}

#[tokio::test]
async fn ten_megabytes_each_way_on_a_clean_path() {
    let impairment = Impairment {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
    };
    let counts = tokio::time::timeout(Duration::from_secs(120), both_ways(impairment))
        .await
        .expect("done within 120 s");
    assert_eq!(counts.lost, 0);
}

const CLEAN: Impairment = Impairment {
    loss: 0.0,
    duplicate: 0.0,
    reorder: 0.0,
};

/// A splice on each end of a clean path, the initiator's first and the
/// responder's second; the initiator writes `first` (QUIC shows the peer a
/// stream only once it carries something). `ended` hears when each splice
/// has ended (its `closed` ran).
async fn spliced_pair(
    first: &[u8],
    ended: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> (
    (tokio::net::TcpStream, bridge::Reading),
    (tokio::net::TcpStream, bridge::Reading),
) {
    use tokio::io::AsyncWriteExt;
    let (a, b, _) = path(CLEAN);
    let (a_addr, b_addr) = (a.addr, b.addr);
    let client = quic::client(a).expect("client endpoint");
    let server = quic::server(b).expect("server endpoint");
    let tell = |side: &'static str| {
        let ended = ended.clone();
        move |_| async move {
            let _ = ended.send(side);
        }
    };
    let responder_ended = tell("responder");
    let accepting = tokio::spawn(async move {
        let (conn, send, recv) = quic::accept(&server, a_addr).await.expect("accept");
        bridge::splice(conn, (send, recv), server, responder_ended)
            .await
            .expect("splice")
    });
    let (conn, send, recv) = quic::open(&client, b_addr).await.expect("open");
    let (mut initiator, reading) = bridge::splice(conn, (send, recv), client, tell("initiator"))
        .await
        .expect("splice");
    initiator.write_all(first).await.expect("first bytes");
    let responder = accepting.await.expect("accepted");
    ((initiator, reading), responder)
}

#[tokio::test]
async fn a_reader_that_lags_after_the_peer_is_done_still_gets_every_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ended, mut ends) = tokio::sync::mpsc::unbounded_channel();
    // The peer (initiator) writes 4 MB, half-closes, and reads our empty
    // side to its end; our reader has not read a byte yet.
    let sent = data(3)[..4 << 20].to_vec();
    let ((mut theirs, _theirs_reading), (ours, _ours_reading)) = spliced_pair(&sent, ended).await;
    theirs.shutdown().await.expect("shutdown");
    let (mut our_read, mut our_write) = ours.into_split();
    our_write.shutdown().await.expect("our end");
    let mut nothing = Vec::new();
    theirs.read_to_end(&mut nothing).await.expect("their read");
    // Both of the peer's directions are done, and so is our outbound: the
    // splices must still wait for our reader.
    let early = tokio::time::timeout(Duration::from_secs(3), ends.recv()).await;
    assert!(
        early.is_err(),
        "a splice ended before our reader read: {early:?}"
    );
    let mut got = Vec::new();
    our_read.read_to_end(&mut got).await.expect("our read");
    assert!(got == sent, "every byte, in order, after the lag");
    for _ in 0..2 {
        let side = tokio::time::timeout(Duration::from_secs(10), ends.recv()).await;
        assert!(matches!(side, Ok(Some(_))), "both splices end once read");
    }
}

#[tokio::test]
async fn dropping_the_reading_handle_ends_a_splice_whose_peer_is_silent() {
    let (ended, mut ends) = tokio::sync::mpsc::unbounded_channel();
    // A stranger's garbage handshake, then silence; our side gives up on it
    // and drops everything.
    let ((_theirs, _theirs_reading), (ours, ours_reading)) =
        spliced_pair(b"\0garbage", ended).await;
    drop(ours);
    drop(ours_reading);
    let side = tokio::time::timeout(Duration::from_secs(10), ends.recv()).await;
    assert!(
        matches!(side, Ok(Some(_))),
        "a splice ended (and closed its connection): {side:?}"
    );
}

#[tokio::test]
async fn a_peer_that_never_says_it_has_our_bytes_cannot_keep_a_dropped_splice() {
    let (a, b, _) = path(CLEAN);
    let (a_addr, b_addr) = (a.addr, b.addr);
    let client = quic::client(a).expect("client endpoint");
    let server = quic::server(b).expect("server endpoint");
    let (ended, mut ends) = tokio::sync::mpsc::unbounded_channel();
    let accepting = tokio::spawn(async move {
        let (conn, send, recv) = quic::accept(&server, a_addr).await.expect("accept");
        bridge::splice(conn, (send, recv), server, move |_| async move {
            let _ = ended.send(());
        })
        .await
        .expect("splice")
    });
    // A stranger's own QUIC stack: a garbage handshake on the stream, then
    // nothing, and never the "delivered" stream a splice opens.
    let (_conn, mut send, _recv) = quic::open(&client, b_addr).await.expect("open");
    send.write_all(b"\0garbage").await.expect("write");
    let (ours, reading) = accepting.await.expect("accepted");
    drop(ours);
    drop(reading);
    let ended = tokio::time::timeout(Duration::from_secs(30), ends.recv()).await;
    assert!(matches!(ended, Ok(Some(()))), "the splice ended: {ended:?}");
}
