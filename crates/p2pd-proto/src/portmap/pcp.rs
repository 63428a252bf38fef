//! The PCP codec (RFC 6887), version 2, the MAP opcode only: requests and
//! responses both ways, so the client and a test's fake gateway share one
//! definition.
//!
//! ```text
//!  request   2 | R=0,op 1 | reserved | lifetime | client IP (16)            } 24
//!  response  2 | R=1,op 1 | 0 | result | lifetime | epoch | reserved (12)   } 24
//!  MAP       nonce (12) | protocol | reserved (3) | internal | external | external IP (16)  36
//!  options   code | 0 | length (16) | data padded to 4 ...  (skipped)
//! ```
//!
//! Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6; "no address" is the
//! family's all-zero one (`::ffff:0.0.0.0` for IPv4). An error response
//! may stop after the header.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::Transport;

/// The PCP version spoken here.
pub const VERSION: u8 = 2;
/// The MAP opcode.
const MAP: u8 = 1;
/// Set in a response's opcode byte.
const RESPONSE_BIT: u8 = 0x80;
/// The common header of requests and responses.
const HEADER_LEN: usize = 24;
/// No PCP message is longer (section 7).
const MAX_LEN: usize = 1100;

/// The MAP opcode's data, the same fields in a request (suggested external
/// port and address) and a response (assigned ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Map {
    /// Picked by the client, echoed by the server: proves the answer (and
    /// a renewal or delete) is ours.
    pub nonce: [u8; 12],
    /// The mapped transport.
    pub transport: Transport,
    /// Our port.
    pub internal_port: u16,
    /// Suggested (0: no preference) or assigned.
    pub external_port: u16,
    /// Suggested (the family's unspecified address: no preference) or
    /// assigned.
    pub external_ip: IpAddr,
}

/// A MAP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// Seconds asked for; 0 deletes.
    pub lifetime: u32,
    /// Our own address, as we send from it: a NAT between us and the
    /// server makes it answer ADDRESS_MISMATCH.
    pub client: IpAddr,
    /// What to map.
    pub map: Map,
}

/// A MAP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Response {
    /// The result code.
    pub result: ResultCode,
    /// Seconds granted on success; on an error, how long it will last.
    pub lifetime: u32,
    /// Seconds since the server's state started: it going back means the
    /// server lost its mappings (section 8.5).
    pub epoch: u32,
    /// The mapping; `None` when an error response stops after the header.
    pub map: Option<Map>,
}

/// A response's result code (RFC 6887 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0.
    Success,
    /// 1: the server does not speak this version.
    UnsuppVersion,
    /// 2: mapping is disabled or refused for us.
    NotAuthorized,
    /// 3: the server could not parse the request.
    MalformedRequest,
    /// 4: the server does not know this opcode.
    UnsuppOpcode,
    /// 5: a mandatory option is unknown.
    UnsuppOption,
    /// 6: an option is malformed.
    MalformedOption,
    /// 7: the server has no working uplink.
    NetworkFailure,
    /// 8: no ports or state left.
    NoResources,
    /// 9: the protocol cannot be mapped.
    UnsuppProtocol,
    /// 10: we have too many mappings.
    UserExQuota,
    /// 11: the suggested external address or port cannot be had.
    CannotProvideExternal,
    /// 12: the client address in the request is not where it came from:
    /// another NAT between us and the server.
    AddressMismatch,
    /// 13: too many remote peers (PEER opcode).
    ExcessiveRemotePeers,
    /// Any other value, kept to be reported.
    Unknown(u8),
}

impl From<u8> for ResultCode {
    fn from(code: u8) -> Self {
        match code {
            0 => ResultCode::Success,
            1 => ResultCode::UnsuppVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::MalformedRequest,
            4 => ResultCode::UnsuppOpcode,
            5 => ResultCode::UnsuppOption,
            6 => ResultCode::MalformedOption,
            7 => ResultCode::NetworkFailure,
            8 => ResultCode::NoResources,
            9 => ResultCode::UnsuppProtocol,
            10 => ResultCode::UserExQuota,
            11 => ResultCode::CannotProvideExternal,
            12 => ResultCode::AddressMismatch,
            13 => ResultCode::ExcessiveRemotePeers,
            other => ResultCode::Unknown(other),
        }
    }
}

impl From<ResultCode> for u8 {
    fn from(code: ResultCode) -> Self {
        match code {
            ResultCode::Success => 0,
            ResultCode::UnsuppVersion => 1,
            ResultCode::NotAuthorized => 2,
            ResultCode::MalformedRequest => 3,
            ResultCode::UnsuppOpcode => 4,
            ResultCode::UnsuppOption => 5,
            ResultCode::MalformedOption => 6,
            ResultCode::NetworkFailure => 7,
            ResultCode::NoResources => 8,
            ResultCode::UnsuppProtocol => 9,
            ResultCode::UserExQuota => 10,
            ResultCode::CannotProvideExternal => 11,
            ResultCode::AddressMismatch => 12,
            ResultCode::ExcessiveRemotePeers => 13,
            ResultCode::Unknown(other) => other,
        }
    }
}

/// The RFC's names, as operators search for them.
impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ResultCode::Success => "SUCCESS",
            ResultCode::UnsuppVersion => "UNSUPP_VERSION",
            ResultCode::NotAuthorized => "NOT_AUTHORIZED",
            ResultCode::MalformedRequest => "MALFORMED_REQUEST",
            ResultCode::UnsuppOpcode => "UNSUPP_OPCODE",
            ResultCode::UnsuppOption => "UNSUPP_OPTION",
            ResultCode::MalformedOption => "MALFORMED_OPTION",
            ResultCode::NetworkFailure => "NETWORK_FAILURE",
            ResultCode::NoResources => "NO_RESOURCES",
            ResultCode::UnsuppProtocol => "UNSUPP_PROTOCOL",
            ResultCode::UserExQuota => "USER_EX_QUOTA",
            ResultCode::CannotProvideExternal => "CANNOT_PROVIDE_EXTERNAL",
            ResultCode::AddressMismatch => "ADDRESS_MISMATCH",
            ResultCode::ExcessiveRemotePeers => "EXCESSIVE_REMOTE_PEERS",
            ResultCode::Unknown(code) => return write!(f, "result code {code}"),
        };
        f.write_str(name)
    }
}

/// Why bytes are not a PCP MAP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short, too long, not a multiple of 4, or between a bare header
    /// and a full MAP.
    #[error("{0} bytes: not the length of a PCP MAP message")]
    Length(usize),
    /// Not version 2.
    #[error("version {0}, not PCP's 2")]
    Version(u8),
    /// A request where a response was expected.
    #[error("a request (opcode byte {0:#04x}), not a response")]
    NotResponse(u8),
    /// A response where a request was expected.
    #[error("a response (opcode byte {0:#04x}), not a request")]
    NotRequest(u8),
    /// Not the MAP opcode.
    #[error("opcode {0}, not MAP")]
    Opcode(u8),
    /// A protocol other than TCP and UDP.
    #[error("IP protocol {0}, neither TCP nor UDP")]
    Protocol(u8),
    /// An option runs past the end of the message.
    #[error("the option at byte {0} runs past the message")]
    Option(usize),
    /// An "unsupported version" from a server of another version: NAT-PMP's
    /// (version 0) from a NAT-PMP-only gateway, or an older PCP's. A clear
    /// "no", not garbage.
    #[error("a version {0} server's unsupported-version answer: the gateway does not speak PCP 2")]
    Unsupported(u8),
}

impl Request {
    /// The request's bytes (no options).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 36);
        out.extend_from_slice(&[VERSION, MAP, 0, 0]);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&ip_bytes(self.client));
        encode_map(&self.map, &mut out);
        out
    }

    /// Parses a request (a server's side); options are skipped.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let [version, opcode, ..] = *bytes else {
            return Err(DecodeError::Length(bytes.len()));
        };
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        if opcode & RESPONSE_BIT != 0 {
            return Err(DecodeError::NotRequest(opcode));
        }
        if opcode != MAP {
            return Err(DecodeError::Opcode(opcode));
        }
        check_length(bytes)?;
        let mut cursor = Cursor::new(bytes);
        let _version_opcode_reserved: [u8; 4] = cursor.take()?;
        let lifetime = u32::from_be_bytes(cursor.take()?);
        let client = ip_from(cursor.take()?);
        let map = cursor.map()?;
        cursor.skip_options()?;
        Ok(Request {
            lifetime,
            client,
            map,
        })
    }
}

impl Response {
    /// The response's bytes (no options).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 36);
        out.extend_from_slice(&[VERSION, RESPONSE_BIT | MAP, 0, u8::from(self.result)]);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&[0; 12]);
        if let Some(map) = &self.map {
            encode_map(map, &mut out);
        }
        out
    }

    /// Parses a response: any bytes give a value or an error; options are
    /// skipped.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let [version, opcode, ..] = *bytes else {
            return Err(DecodeError::Length(bytes.len()));
        };
        if version != VERSION {
            return Err(
                if super::speaks_only_the_other(super::Protocol::Pcp, bytes) {
                    DecodeError::Unsupported(version)
                } else {
                    DecodeError::Version(version)
                },
            );
        }
        if opcode & RESPONSE_BIT == 0 {
            return Err(DecodeError::NotResponse(opcode));
        }
        if opcode & !RESPONSE_BIT != MAP {
            return Err(DecodeError::Opcode(opcode & !RESPONSE_BIT));
        }
        check_length(bytes)?;
        let mut cursor = Cursor::new(bytes);
        let [_, _, _, result] = cursor.take()?;
        let lifetime = u32::from_be_bytes(cursor.take()?);
        let epoch = u32::from_be_bytes(cursor.take()?);
        let _reserved: [u8; 12] = cursor.take()?;
        let map = if cursor.is_empty() {
            None
        } else {
            Some(cursor.map()?)
        };
        cursor.skip_options()?;
        Ok(Response {
            result: ResultCode::from(result),
            lifetime,
            epoch,
            map,
        })
    }
}

/// Whether `bytes` (of another version than the decoder's) are a
/// PCP-format UNSUPP_VERSION: a PCP server's answer to NAT-PMP, or an
/// older PCP's.
pub(super) fn is_unsupported_reply(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN
        && matches!(bytes, [_, opcode, _, result, ..]
            if opcode & RESPONSE_BIT != 0
                && ResultCode::from(*result) == ResultCode::UnsuppVersion)
}

fn check_length(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() < HEADER_LEN || bytes.len() > MAX_LEN || !bytes.len().is_multiple_of(4) {
        return Err(DecodeError::Length(bytes.len()));
    }
    Ok(())
}

fn protocol_number(transport: Transport) -> u8 {
    match transport {
        Transport::Tcp => 6,
        Transport::Udp => 17,
    }
}

fn encode_map(map: &Map, out: &mut Vec<u8>) {
    out.extend_from_slice(&map.nonce);
    out.extend_from_slice(&[protocol_number(map.transport), 0, 0, 0]);
    out.extend_from_slice(&map.internal_port.to_be_bytes());
    out.extend_from_slice(&map.external_port.to_be_bytes());
    out.extend_from_slice(&ip_bytes(map.external_ip));
}

/// IPv4 as IPv4-mapped, as PCP carries every address.
fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// IPv4-mapped back to IPv4, so `::ffff:0.0.0.0` reads as 0.0.0.0.
fn ip_from(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

/// Reads fixed-size fields off the front, each a length error if the bytes
/// run out: nothing indexes past the end.
struct Cursor<'a> {
    all: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            all: bytes,
            rest: bytes,
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Length(self.all.len()))?;
        self.rest = tail;
        Ok(*head)
    }

    fn map(&mut self) -> Result<Map, DecodeError> {
        let nonce = self.take()?;
        let [protocol, _, _, _] = self.take()?;
        let transport = match protocol {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            other => return Err(DecodeError::Protocol(other)),
        };
        Ok(Map {
            nonce,
            transport,
            internal_port: u16::from_be_bytes(self.take()?),
            external_port: u16::from_be_bytes(self.take()?),
            external_ip: ip_from(self.take()?),
        })
    }

    /// Steps over the options: code, reserved, a 16-bit length, the data
    /// padded to 4 bytes.
    fn skip_options(&mut self) -> Result<(), DecodeError> {
        while !self.rest.is_empty() {
            let at = self.all.len() - self.rest.len();
            let [_code, _, l0, l1] = self.take().map_err(|_| DecodeError::Option(at))?;
            let padded = usize::from(u16::from_be_bytes([l0, l1])).div_ceil(4) * 4;
            self.rest = self.rest.get(padded..).ok_or(DecodeError::Option(at))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const NONCE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn map(external_ip: IpAddr) -> Map {
        Map {
            nonce: NONCE,
            transport: Transport::Udp,
            internal_port: 4433,
            external_port: 4433,
            external_ip,
        }
    }

    #[test]
    fn a_request_has_rfc_6887_layout() {
        let request = Request {
            lifetime: 7200,
            client: IpAddr::from([192, 168, 1, 20]),
            map: map(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        };
        let bytes = request.encode();
        assert_eq!(bytes.len(), 60);
        assert_eq!(bytes[..8], [2, 1, 0, 0, 0, 0, 0x1c, 0x20]);
        assert_eq!(
            bytes[8..24],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 20]
        );
        assert_eq!(bytes[24..36], NONCE);
        assert_eq!(bytes[36..40], [17, 0, 0, 0]);
        assert_eq!(bytes[40..44], [0x11, 0x51, 0x11, 0x51]);
        // The IPv4 "no preference": ::ffff:0.0.0.0.
        assert_eq!(
            bytes[44..60],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(Request::decode(&bytes), Ok(request));
    }

    /// A success granting 198.18.0.7 for an hour.
    fn granted() -> Response {
        Response {
            result: ResultCode::Success,
            lifetime: 3600,
            epoch: 77,
            map: Some(map(IpAddr::from([198, 18, 0, 7]))),
        }
    }

    #[test]
    fn a_response_decodes_and_its_options_are_skipped() {
        let response = granted();
        let mut bytes = response.encode();
        assert_eq!(bytes[..4], [2, 0x81, 0, 0]);
        assert_eq!(Response::decode(&bytes), Ok(response));
        // THIRD_PARTY (1) with 16 bytes, then PREFER_FAILURE (2) empty,
        // then one with 5 bytes padded to 8.
        bytes.extend_from_slice(&[1, 0, 0, 16]);
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&[2, 0, 0, 0]);
        bytes.extend_from_slice(&[0x80, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(Response::decode(&bytes), Ok(response));
    }

    #[test]
    fn an_option_past_the_end_is_refused() {
        let response = granted();
        let mut bytes = response.encode();
        bytes.extend_from_slice(&[1, 0, 0, 16, 0, 0, 0, 0]);
        assert_eq!(Response::decode(&bytes), Err(DecodeError::Option(60)));
        let mut bytes = response.encode();
        bytes.extend_from_slice(&[1, 0, 0xff, 0xff]);
        assert_eq!(Response::decode(&bytes), Err(DecodeError::Option(60)));
    }

    #[test]
    fn a_bare_error_header_decodes_without_map_data() {
        let response = Response {
            result: ResultCode::NotAuthorized,
            lifetime: 30,
            epoch: 5,
            map: None,
        };
        let bytes = response.encode();
        assert_eq!(bytes.len(), 24);
        assert_eq!(Response::decode(&bytes), Ok(response));
    }

    #[test]
    fn malformed_responses_say_why() {
        let good = Response {
            result: ResultCode::Success,
            lifetime: 1,
            epoch: 1,
            map: Some(map(IpAddr::from([198, 18, 0, 7]))),
        }
        .encode();
        assert_eq!(Response::decode(&[]), Err(DecodeError::Length(0)));
        assert_eq!(Response::decode(&good[..40]), Err(DecodeError::Length(40)));
        assert_eq!(Response::decode(&good[..59]), Err(DecodeError::Length(59)));
        assert_eq!(Response::decode(&good[..22]), Err(DecodeError::Length(22)));
        let mut long = good.clone();
        long.resize(1104, 0);
        assert_eq!(Response::decode(&long), Err(DecodeError::Length(1104)));
        let mut bad = good.clone();
        bad[1] = 0x01;
        assert_eq!(Response::decode(&bad), Err(DecodeError::NotResponse(1)));
        bad[1] = 0x82;
        assert_eq!(Response::decode(&bad), Err(DecodeError::Opcode(2)));
        let mut bad = good.clone();
        bad[36] = 1;
        assert_eq!(Response::decode(&bad), Err(DecodeError::Protocol(1)));
        let mut bad = good.clone();
        bad[0] = 3;
        assert_eq!(Response::decode(&bad), Err(DecodeError::Version(3)));
        assert_eq!(Request::decode(&good), Err(DecodeError::NotRequest(0x81)));
        // A NAT-PMP request to a PCP server: the version, for it to refuse.
        assert_eq!(Request::decode(&[0, 0]), Err(DecodeError::Version(0)));
    }

    #[test]
    fn foreign_unsupported_version_answers_are_unsupported_not_garbage() {
        // A NAT-PMP-only gateway's answer to our MAP (RFC 6886 section 3.5).
        assert_eq!(
            Response::decode(&[0, 129, 0, 1, 0, 0, 1, 0]),
            Err(DecodeError::Unsupported(0))
        );
        // A NAT-PMP success is only the wrong version.
        assert_eq!(
            Response::decode(&[0, 128, 0, 0, 0, 0, 1, 0, 198, 18, 0, 7]),
            Err(DecodeError::Version(0))
        );
        // A PCP version 1 server.
        let mut v1 = [0u8; 24];
        v1[..4].copy_from_slice(&[1, 0x81, 0, 1]);
        assert_eq!(Response::decode(&v1), Err(DecodeError::Unsupported(1)));
        assert!(is_unsupported_reply(&v1));
        assert!(!is_unsupported_reply(&v1[..20]));
    }

    #[test]
    fn ipv6_addresses_stay_ipv6() {
        let ip: IpAddr = "fd00:18::7".parse().expect("literal");
        assert_eq!(ip_from(ip_bytes(ip)), ip);
        assert_eq!(ip_from([0; 16]), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    #[test]
    fn result_codes_survive_the_wire_including_unknown_ones() {
        for code in 0..=255u8 {
            assert_eq!(u8::from(ResultCode::from(code)), code);
        }
        assert_eq!(ResultCode::from(14), ResultCode::Unknown(14));
        assert_eq!(ResultCode::AddressMismatch.to_string(), "ADDRESS_MISMATCH");
    }
}
