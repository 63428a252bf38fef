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

/// After both directions end, how long to wait for the peer to close the
/// connection: it may still be reading what we sent.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes moved per copy between the QUIC stream and the loopback
/// connection: a few large writes cost less than many small ones.
const COPY_BUFFER: usize = 256 << 10;
/// The loopback connection must be made within this.
const LOOPBACK_LIMIT: Duration = Duration::from_secs(2);

/// Splices `connection`'s stream onto a loopback TCP connection and
/// returns its other end. `keep` (the endpoint, the allocation) lives as
/// long as the splice; `closed` runs after it, to delete the allocation.
pub async fn splice<K, F>(
    connection: Connection,
    (mut send, mut recv): (SendStream, RecvStream),
    keep: K,
    closed: impl FnOnce(K) -> F + Send + 'static,
) -> io::Result<TcpStream>
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
    tokio::spawn(async move {
        let (mut inner_read, mut inner_write) = inner.into_split();
        let inbound = async {
            let mut recv = BufReader::with_capacity(COPY_BUFFER, &mut recv);
            let copied = tokio::io::copy_buf(&mut recv, &mut inner_write).await;
            let _ = inner_write.shutdown().await;
            copied
        };
        let outbound = async {
            let mut inner_read = BufReader::with_capacity(COPY_BUFFER, &mut inner_read);
            let copied = tokio::io::copy_buf(&mut inner_read, &mut send).await;
            let _ = send.finish();
            // Returns once the peer has every byte (or stopped reading).
            let _ = send.stopped().await;
            copied
        };
        tokio::select! {
            (inbound, outbound) = async { tokio::join!(inbound, outbound) } => {
                tracing::debug!(?inbound, ?outbound, "relayed stream ended");
                let _ = tokio::time::timeout(LINGER, connection.closed()).await;
            }
            reason = connection.closed() => tracing::debug!(%reason, "relayed connection closed"),
        }
        connection.close(0u32.into(), b"done");
        closed(keep).await;
    });
    Ok(outer)
}
