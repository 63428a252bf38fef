//! The SNTP packet (RFC 4330 / RFC 5905, the 48-byte header; extension
//! fields and MACs after it are ignored) and NTP timestamps.

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const UNIX_OFFSET: u64 = 2_208_988_800;
/// The header's size.
pub const LEN: usize = 48;

/// A 32.32 fixed-point NTP timestamp: seconds since 1900 (era 0), or since
/// 2036 when the top bit is clear (era 1, RFC 4330 section 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// From nanoseconds since the Unix epoch (negative: before it).
    pub fn from_unix_nanos(nanos: i128) -> Timestamp {
        let secs = nanos.div_euclid(1_000_000_000);
        let frac = nanos.rem_euclid(1_000_000_000);
        let ntp_secs = (secs + i128::from(UNIX_OFFSET)).rem_euclid(1 << 32);
        let frac = (frac << 32) / 1_000_000_000;
        Timestamp(((ntp_secs as u64) << 32) | frac as u64)
    }

    /// Nanoseconds since the Unix epoch, era chosen as RFC 4330 says.
    pub fn to_unix_nanos(self) -> i128 {
        let secs = i128::from(self.0 >> 32);
        let era_secs = if secs & (1 << 31) == 0 {
            secs + (1 << 32)
        } else {
            secs
        };
        let frac = i128::from(self.0 & 0xffff_ffff);
        (era_secs - i128::from(UNIX_OFFSET)) * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
    }
}

/// What a packet is (its mode field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 3: a client's request.
    Client,
    /// 4: a server's answer.
    Server,
    /// 5: broadcast.
    Broadcast,
    /// Any other mode (symmetric, control, reserved).
    Other(u8),
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Client => 3,
            Mode::Server => 4,
            Mode::Broadcast => 5,
            Mode::Other(code) => code & 7,
        }
    }

    fn from_code(code: u8) -> Mode {
        match code {
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            other => Mode::Other(other),
        }
    }
}

/// An SNTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Leap indicator (3: the server's clock is not synchronised).
    pub leap: u8,
    /// Version (1–7; 4 is current).
    pub version: u8,
    /// The mode.
    pub mode: Mode,
    /// 1: primary reference, 2–15: secondary, 0: kiss-o'-death.
    pub stratum: u8,
    /// log2 seconds between polls.
    pub poll: i8,
    /// log2 seconds of clock precision.
    pub precision: i8,
    /// Round-trip delay to the reference, 16.16 seconds.
    pub root_delay: u32,
    /// Dispersion to the reference, 16.16 seconds.
    pub root_dispersion: u32,
    /// The reference (or, with stratum 0, the kiss code).
    pub reference_id: [u8; 4],
    /// When the server's clock was last set.
    pub reference: Timestamp,
    /// The request's transmit time, echoed (T1).
    pub origin: Timestamp,
    /// When the server received the request (T2).
    pub receive: Timestamp,
    /// When the server sent the answer (T3); in a request, the client's
    /// nonce.
    pub transmit: Timestamp,
}

/// Why bytes are not an SNTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an NTP packet is at least {LEN} bytes, got {0}")]
pub struct TooShort(pub usize);

impl Packet {
    /// A client's request whose transmit field carries `nonce`: the answer
    /// must echo it (RFC 5905 recommends a random one, so only the server
    /// asked can answer).
    pub fn request(nonce: u64) -> Packet {
        Packet {
            leap: 0,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: [0; 4],
            reference: Timestamp::default(),
            origin: Timestamp::default(),
            receive: Timestamp::default(),
            transmit: Timestamp(nonce),
        }
    }

    /// The 48 bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | self.mode.code();
        out[1] = self.stratum;
        out[2] = self.poll.to_be_bytes()[0];
        out[3] = self.precision.to_be_bytes()[0];
        out[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        out[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        out[12..16].copy_from_slice(&self.reference_id);
        for (at, ts) in [
            (16, self.reference),
            (24, self.origin),
            (32, self.receive),
            (40, self.transmit),
        ] {
            out[at..at + 8].copy_from_slice(&ts.0.to_be_bytes());
        }
        out
    }

    /// Decodes the header of any bytes (extension fields ignored).
    pub fn decode(bytes: &[u8]) -> Result<Packet, TooShort> {
        let Some(head) = bytes.get(..LEN) else {
            return Err(TooShort(bytes.len()));
        };
        let word =
            |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let stamp = |at: usize| Timestamp((u64::from(word(at)) << 32) | u64::from(word(at + 4)));
        Ok(Packet {
            leap: head[0] >> 6,
            version: (head[0] >> 3) & 7,
            mode: Mode::from_code(head[0] & 7),
            stratum: head[1],
            poll: i8::from_be_bytes([head[2]]),
            precision: i8::from_be_bytes([head[3]]),
            root_delay: word(4),
            root_dispersion: word(8),
            reference_id: [head[12], head[13], head[14], head[15]],
            reference: stamp(16),
            origin: stamp(24),
            receive: stamp(32),
            transmit: stamp(40),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_convert_both_ways() {
        // 2026-12-06T00:00:00Z
        let unix = 1_796_515_200i128 * 1_000_000_000 + 123_456_789;
        let ts = Timestamp::from_unix_nanos(unix);
        assert_eq!(ts.0 >> 32, 1_796_515_200 + UNIX_OFFSET);
        assert!((ts.to_unix_nanos() - unix).abs() <= 1);
        // After the 2036 rollover (era 1).
        let later = 2_200_000_000i128 * 1_000_000_000;
        assert!((Timestamp::from_unix_nanos(later).to_unix_nanos() - later).abs() <= 1);
    }

    #[test]
    fn short_input_is_an_error() {
        assert_eq!(Packet::decode(&[0u8; 47]), Err(TooShort(47)));
    }

    proptest! {
        #[test]
        fn packets_round_trip(bytes in proptest::collection::vec(any::<u8>(), LEN..LEN + 32)) {
            let packet = Packet::decode(&bytes).expect("48 bytes decode");
            // The mode field keeps its 3 bits, so encoding gives the bytes back.
            prop_assert_eq!(&packet.encode()[..], &bytes[..LEN]);
            prop_assert_eq!(Packet::decode(&packet.encode()), Ok(packet));
        }

        #[test]
        fn unix_times_of_this_century_round_trip(nanos in 0i128..4_000_000_000i128 * 1_000_000_000) {
            let back = Timestamp::from_unix_nanos(nanos).to_unix_nanos();
            prop_assert!((back - nanos).abs() <= 1, "{} -> {}", nanos, back);
        }
    }
}
