//! What the relay tests share: the bytes each side sends and the exchange.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes each way.
pub(crate) const SIZE: usize = 10 << 20;

/// `size` pseudo-random bytes, the same for the same seed.
pub(crate) fn data_of(seed: u64, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Writes `ours` on `stream`, reads to its end, and returns what came.
pub(crate) async fn exchange(stream: tokio::net::TcpStream, ours: Vec<u8>) -> Vec<u8> {
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&ours).await.expect("write");
        write.shutdown().await.expect("shutdown");
    });
    let mut got = Vec::new();
    read.read_to_end(&mut got).await.expect("read");
    writer.await.expect("writer");
    got
}

/// [`data_of`] at [`SIZE`].
pub(crate) fn data(seed: u64) -> Vec<u8> {
    data_of(seed, SIZE)
}
