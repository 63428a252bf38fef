//! Records: how an encrypted connection carries bytes after the handshake.
//!
//! Each record is a `u16` big-endian length, then one Noise transport
//! message of that length: ciphertext and a 16-byte tag, at most 65,535
//! bytes. Each direction counts its records from 0 as the nonce, so a
//! record dropped, repeated, reordered or altered fails to open and ends
//! the connection.

use std::sync::Arc;

use snow::StatelessTransportState;

/// The largest record body (Noise's limit on a message).
pub const MAX_RECORD: usize = 65_535;

/// The authentication tag in every record.
pub const TAG: usize = 16;

/// The most plaintext one record carries: 16 KiB, as TLS does, though a
/// record may be up to [`MAX_RECORD`] long. Smaller records leave a
/// smaller incomplete tail at the end of each 64 KiB read, which is what a
/// reader has to keep and copy again (a third of the time in bulk
/// transfers with full-size records).
pub const MAX_PLAINTEXT: usize = 16 * 1024;

/// Why received records could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A length shorter than a tag: not a record.
    #[error("malformed record")]
    Malformed,
    /// A record failed authentication: altered, forged, or out of order.
    #[error("a record failed authentication")]
    Forged,
    /// 2^64 records in one direction: the keys may not be used further.
    #[error("record counter exhausted")]
    Exhausted,
}

/// Splits a finished handshake's transport state into its two directions.
pub(super) fn keys(state: StatelessTransportState) -> (Sealer, Opener) {
    let state = Arc::new(state);
    (
        Sealer {
            state: state.clone(),
            nonce: 0,
        },
        Opener {
            state,
            nonce: 0,
            pending: Vec::new(),
        },
    )
}

/// Turns what we send into records.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Appends `plaintext` to `out` as records (none for empty plaintext).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        for chunk in plaintext.chunks(MAX_PLAINTEXT) {
            self.seal_record(chunk, out)?;
        }
        Ok(())
    }

    /// Appends one record of `chunk` (at most [`MAX_PLAINTEXT`], maybe
    /// empty) to `out`.
    pub(super) fn seal_record(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let nonce = self.nonce;
        self.nonce = nonce.checked_add(1).ok_or(RecordError::Exhausted)?;
        let len = chunk.len() + TAG;
        let at = out.len();
        let prefix = u16::try_from(len).map_err(|_| RecordError::Malformed)?;
        out.extend_from_slice(&prefix.to_be_bytes());
        out.resize(at + 2 + len, 0);
        self.state
            .write_message(nonce, chunk, &mut out[at + 2..])
            .map_err(|_| RecordError::Malformed)?;
        Ok(())
    }

    /// The record bytes `plaintext` takes.
    pub fn sealed_len(plaintext: usize) -> usize {
        let records = plaintext.div_ceil(MAX_PLAINTEXT);
        plaintext + records * (2 + TAG)
    }
}

/// Turns received bytes back into plaintext; keeps a partial record until
/// the rest arrives.
pub struct Opener {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    pending: Vec<u8>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("nonce", &self.nonce)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Appends to `out` the plaintext of every record completed by `bytes`.
    /// After an error the connection must end: later records cannot open.
    pub fn open(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.pending.is_empty() {
            // The usual case: whole records, opened where they lie.
            let (used, result) = self.open_records(bytes, out);
            self.pending.extend_from_slice(&bytes[used..]);
            return result;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(bytes);
        let (used, result) = self.open_records(&pending, out);
        pending.drain(..used);
        self.pending = pending;
        result
    }

    /// Opens the whole records at the front of `buf`: how many bytes they
    /// took, and whether all opened.
    fn open_records(&mut self, buf: &[u8], out: &mut Vec<u8>) -> (usize, Result<(), RecordError>) {
        let mut at = 0;
        loop {
            let Some(head) = buf.get(at..at + 2) else {
                return (at, Ok(()));
            };
            let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
            if len < TAG {
                return (at, Err(RecordError::Malformed));
            }
            let Some(record) = buf.get(at + 2..at + 2 + len) else {
                return (at, Ok(()));
            };
            let Some(next) = self.nonce.checked_add(1) else {
                return (at, Err(RecordError::Exhausted));
            };
            let start = out.len();
            out.resize(start + len - TAG, 0);
            if self
                .state
                .read_message(self.nonce, record, &mut out[start..])
                .is_err()
            {
                out.truncate(start);
                return (at, Err(RecordError::Forged));
            }
            self.nonce = next;
            at += 2 + len;
        }
    }

    /// Bytes of a record not yet complete.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Records opened so far.
    pub(super) fn opened(&self) -> u64 {
        self.nonce
    }
}
