//! ChannelData messages (RFC 8656 section 12.4): the 4-byte framing that
//! carries peer data on a bound channel, and how a stream to the server
//! (TCP) is cut into STUN messages and ChannelData.

use crate::stun::HEADER_LEN;

/// The first channel number a client may bind.
pub const FIRST_CHANNEL: u16 = 0x4000;
/// The last channel number a client may bind.
pub const LAST_CHANNEL: u16 = 0x4FFF;
/// The ChannelData header: channel number and length.
pub const HEADER: usize = 4;

/// Why bytes are not a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Fewer than 4 bytes, or fewer than the length field says.
    #[error("ChannelData truncated")]
    Truncated,
    /// The channel number is outside 0x4000..=0x4FFF.
    #[error("channel number 0x{0:04x} is out of range")]
    BadChannel(u16),
    /// The first two bits say neither STUN nor ChannelData.
    #[error("neither STUN nor ChannelData")]
    Unknown,
}

/// A decoded ChannelData message, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel.
    pub channel: u16,
    /// The application data.
    pub payload: &'a [u8],
}

/// Whether `channel` is one a client may bind.
pub fn valid_channel(channel: u16) -> bool {
    (FIRST_CHANNEL..=LAST_CHANNEL).contains(&channel)
}

/// Appends a ChannelData message for `payload` on `channel` to `out`;
/// `pad` rounds it to a multiple of 4, as TCP to the server requires.
/// Payloads longer than 65535 bytes are not representable: the caller
/// sends datagrams, which are shorter.
pub fn encode(channel: u16, payload: &[u8], pad: bool, out: &mut Vec<u8>) {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..usize::from(len)]);
    if pad {
        out.resize(out.len() + (4 - usize::from(len) % 4) % 4, 0);
    }
}

/// Decodes a ChannelData message. Bytes past the length (UDP padding) are
/// ignored, as the RFC allows.
pub fn decode(bytes: &[u8]) -> Result<ChannelData<'_>, ChannelError> {
    let [c0, c1, l0, l1, rest @ ..] = bytes else {
        return Err(ChannelError::Truncated);
    };
    let channel = u16::from_be_bytes([*c0, *c1]);
    if !valid_channel(channel) {
        return Err(ChannelError::BadChannel(channel));
    }
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    let payload = rest.get(..len).ok_or(ChannelError::Truncated)?;
    Ok(ChannelData { channel, payload })
}

/// Whether a datagram from the server is ChannelData (first bits 01)
/// rather than STUN (00).
pub fn is_channel_data(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b & 0xc0 == 0x40)
}

/// How many bytes the frame at the start of a TCP stream from the server
/// takes: a STUN message, or a ChannelData message with its padding.
/// `Ok(None)` means its header has not arrived yet.
pub fn frame_len(bytes: &[u8]) -> Result<Option<usize>, ChannelError> {
    let Some(first) = bytes.first() else {
        return Ok(None);
    };
    match first & 0xc0 {
        0x00 => {
            if bytes.len() < HEADER_LEN {
                return Ok(None);
            }
            let body = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            Ok(Some(HEADER_LEN + body))
        }
        0x40 => {
            if bytes.len() < HEADER {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            Ok(Some(HEADER + len.div_ceil(4) * 4))
        }
        _ => Err(ChannelError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(channel in FIRST_CHANNEL..=LAST_CHANNEL, payload in proptest::collection::vec(any::<u8>(), 0..1500), pad: bool) {
            let mut out = Vec::new();
            encode(channel, &payload, pad, &mut out);
            prop_assert!(is_channel_data(&out));
            let decoded = decode(&out).expect("decodes");
            prop_assert_eq!(decoded.channel, channel);
            prop_assert_eq!(decoded.payload, &payload[..]);
            if pad {
                prop_assert_eq!(out.len() % 4, 0);
                prop_assert_eq!(frame_len(&out), Ok(Some(out.len())));
            }
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let _ = frame_len(&bytes);
        }
    }

    #[test]
    fn channels_outside_the_client_range_are_refused() {
        let mut out = Vec::new();
        encode(0x3fff, b"x", false, &mut out);
        assert_eq!(decode(&out), Err(ChannelError::BadChannel(0x3fff)));
        assert_eq!(
            decode(&[0x40, 0x00, 0x00, 0x05, 1]),
            Err(ChannelError::Truncated)
        );
    }

    #[test]
    fn a_stream_is_cut_at_stun_and_padded_channel_data() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00]), Ok(None));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        let mut stun = vec![0u8; 20];
        stun[3] = 8;
        assert_eq!(frame_len(&stun), Ok(Some(28)));
        assert_eq!(frame_len(&[0x80]), Err(ChannelError::Unknown));
    }
}
