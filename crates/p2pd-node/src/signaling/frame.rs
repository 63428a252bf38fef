//! Cutting MQTT packets out of a byte stream, without ever holding one
//! larger than the limit: an oversized packet is named by its size, so the
//! reader can skip it and keep the connection.

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Not enough bytes to tell yet.
    Incomplete,
    /// A whole packet of this many bytes (header included), within the
    /// limit.
    Packet(usize),
    /// A packet of this many bytes (header included), over the limit: to be
    /// skipped.
    Oversized(usize),
    /// Not MQTT: a remaining length longer than four bytes.
    Malformed,
}

/// Looks at the fixed header at the start of `buf`.
pub(crate) fn frame(buf: &[u8], max: usize) -> Frame {
    let mut remaining: usize = 0;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 1 + (i + 1) + remaining;
            return if total > max {
                Frame::Oversized(total)
            } else if buf.len() >= total {
                Frame::Packet(total)
            } else {
                Frame::Incomplete
            };
        }
    }
    if buf.len() >= 5 {
        Frame::Malformed
    } else {
        Frame::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_give_sizes_and_oversized_packets_are_named_before_they_arrive() {
        assert_eq!(frame(b"", 100), Frame::Incomplete);
        assert_eq!(frame(b"\xd0\x00", 100), Frame::Packet(2));
        assert_eq!(frame(b"\x30\x03ab", 100), Frame::Incomplete);
        assert_eq!(frame(b"\x30\x03abc", 100), Frame::Packet(5));
        // 300 KiB announced by three length bytes: known from four bytes.
        assert_eq!(
            frame(b"\x30\x80\xc0\x12", 1000),
            Frame::Oversized(1 + 3 + (0x40 << 7) + (0x12 << 14))
        );
        assert_eq!(frame(b"\x30\xff\xff\xff\xff", 1000), Frame::Malformed);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_frame_without_panic_and_sizes_are_consistent(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
            max in 0usize..1000,
        ) {
            match frame(&data, max) {
                Frame::Packet(n) => proptest::prop_assert!(n <= data.len() && n <= max && n >= 2),
                Frame::Oversized(n) => proptest::prop_assert!(n > max),
                Frame::Incomplete | Frame::Malformed => {}
            }
        }

        #[test]
        fn encoded_packets_frame_to_their_length(len in 0usize..2000) {
            let mut buf = bytes::BytesMut::new();
            let publish = rumqttc::Publish::new("t", rumqttc::QoS::AtMostOnce, vec![0u8; len]);
            rumqttc::Packet::Publish(publish).write(&mut buf, usize::MAX).expect("encode");
            proptest::prop_assert_eq!(frame(&buf, 1 << 20), Frame::Packet(buf.len()));
            proptest::prop_assert_eq!(frame(&buf, buf.len() - 1), Frame::Oversized(buf.len()));
        }
    }
}
