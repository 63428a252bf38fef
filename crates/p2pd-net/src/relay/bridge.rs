//! A QUIC stream as a TCP stream: spliced onto a loopback TCP connection,
//! so the relayed stream goes through the same connection handshake, pipe
//! and byte-stream view as every other connection, and an application can
//! be handed its descriptor.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes moved per copy between the QUIC stream and the loopback
/// connection: a few large writes cost less than many small ones.
const COPY_BUFFER: usize = 256 << 10;
/// Once nobody reads, how long the peer has to say it has our bytes before
/// the splice ends anyway: a peer that never says so cannot keep it.
const ABANDONED_LIMIT: Duration = Duration::from_secs(10);
/// The loopback connection must be made within this.
const LOOPBACK_LIMIT: Duration = Duration::from_secs(2);

/// Held by whoever owns a spliced stream; dropping it says nobody will
/// read the stream any more (a failed handshake, a closed pipe), so the
/// splice stops waiting for the peer's bytes and ends. Until then a silent
/// peer cannot make it end, and an honest one is read to the last byte.
#[derive(Debug)]
pub struct Reading {
    _abandon_on_drop: watch::Sender<()>,
}

/// Splices `connection`'s stream onto a loopback TCP connection and
/// returns its other end, with the [`Reading`] handle that keeps its
/// inbound direction open. `keep` (the endpoint, the allocation) lives as
/// long as the splice; `closed` runs after it, to delete the allocation.
///
/// Neither side closes the connection before the other has delivered
/// every byte it received to its own loopback end: each says so by opening
/// (and at once finishing) a unidirectional stream, and a side closes the
/// connection once its own directions are done and the peer has said so.
pub async fn splice<K, F>(
    connection: Connection,
    (mut send, mut recv): (SendStream, RecvStream),
    keep: K,
    closed: impl FnOnce(K) -> F + Send + 'static,
) -> io::Result<(TcpStream, Reading)>
where
    K: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let outer = TcpStream::connect(listener.local_addr()?).await?;
    let ours = outer.local_addr()?;
    // Another local process may race us to the port: take only our own
    // connection.
    let inner = tokio::time::timeout(LOOPBACK_LIMIT, async {
        loop {
            let (stream, from) = listener.accept().await?;
            if from == ours {
                return Ok::<_, io::Error>(stream);
            }
        }
    })
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    drop(listener);
    outer.set_nodelay(true)?;
    inner.set_nodelay(true)?;
    let (reading, abandoned) = watch::channel(());
    let given_up = abandoned.clone();
    tokio::spawn(async move {
        let (mut inner_read, mut inner_write) = inner.into_split();
        let inbound = async {
            let copy = async {
                let mut recv = BufReader::with_capacity(COPY_BUFFER, &mut recv);
                let copied = tokio::io::copy_buf(&mut recv, &mut inner_write).await;
                let _ = inner_write.shutdown().await;
                copied
            };
            let copied = tokio::select! {
                copied = copy => copied,
                () = dropped(abandoned) => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            };
            // Everything of the peer's is on our loopback end (or unwanted).
            if let Ok(mut delivered) = connection.open_uni().await {
                let _ = delivered.finish();
            }
            copied
        };
        let outbound = async {
            let mut inner_read = BufReader::with_capacity(COPY_BUFFER, &mut inner_read);
            let copied = tokio::io::copy_buf(&mut inner_read, &mut send).await;
            let _ = send.finish();
            let _ = send.stopped().await;
            copied
        };
        let peer_delivered = connection.accept_uni();
        tokio::select! {
            (inbound, outbound, _) = async { tokio::join!(inbound, outbound, peer_delivered) } => {
                tracing::debug!(?inbound, ?outbound, "relayed stream ended");
            }
            // The peer closes only once it has our bytes delivered.
            reason = connection.closed() => tracing::debug!(%reason, "relayed connection closed"),
            () = async {
                dropped(given_up).await;
                tokio::time::sleep(ABANDONED_LIMIT).await;
            } => tracing::debug!("the peer never said it has our bytes"),
        }
        connection.close(0u32.into(), b"done");
        closed(keep).await;
    });
    Ok((
        outer,
        Reading {
            _abandon_on_drop: reading,
        },
    ))
}

/// Returns once the [`Reading`] handle is dropped: nobody reads.
async fn dropped(mut abandoned: watch::Receiver<()>) {
    while abandoned.changed().await.is_ok() {}
}
