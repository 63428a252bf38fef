//! The NAT-PMP codec (RFC 6886 section 3): requests and responses both
//! ways, so the client and a test's fake gateway share one definition.
//!
//! ```text
//!  request   0 | op (0 address, 1 UDP, 2 TCP) | [reserved | internal | suggested ext | lifetime]
//!  response  0 | 128+op | result (16) | epoch (32) | [external IPv4] or [internal | ext | lifetime]
//! ```
//!
//! An error response may stop after the epoch (8 bytes): that is what a
//! NAT-PMP-only gateway sends back to a PCP request (section 3.5).

use std::fmt;
use std::net::Ipv4Addr;

use super::Transport;

/// The one NAT-PMP version.
pub const VERSION: u8 = 0;
/// Added to a request's opcode in its response.
const RESPONSE_BIT: u8 = 128;
/// What a request asks, and so what a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Opcode 0: the gateway's external address.
    ExternalAddress,
    /// Opcode 1 (UDP) or 2 (TCP): a port mapping.
    Map(Transport),
}

impl Op {
    /// The request's opcode.
    pub fn code(self) -> u8 {
        match self {
            Op::ExternalAddress => 0,
            Op::Map(Transport::Udp) => 1,
            Op::Map(Transport::Tcp) => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Op::ExternalAddress),
            1 => Some(Op::Map(Transport::Udp)),
            2 => Some(Op::Map(Transport::Tcp)),
            _ => None,
        }
    }
}

/// A mapping as asked for (ports: internal, suggested external) and as
/// granted (internal, mapped external): the same four fields both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// The mapped transport.
    pub transport: Transport,
    /// Our port.
    pub internal_port: u16,
    /// Suggested (request; 0 for a delete) or mapped (response).
    pub external_port: u16,
    /// Seconds asked for or granted; 0 deletes.
    pub lifetime: u32,
}

/// A request to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// What is your external address?
    ExternalAddress,
    /// Map (or renew, or with lifetime 0 delete) a port.
    Map(Mapping),
}

/// A response's result code (RFC 6886 section 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0.
    Success,
    /// 1: the gateway does not speak this version.
    UnsupportedVersion,
    /// 2: mapping is disabled or refused for us.
    NotAuthorized,
    /// 3: the gateway has no working uplink (no address yet).
    NetworkFailure,
    /// 4: no ports left.
    OutOfResources,
    /// 5: the gateway does not know this opcode.
    UnsupportedOpcode,
    /// Any other value, kept to be reported.
    Unknown(u16),
}

impl From<u16> for ResultCode {
    fn from(code: u16) -> Self {
        match code {
            0 => ResultCode::Success,
            1 => ResultCode::UnsupportedVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::NetworkFailure,
            4 => ResultCode::OutOfResources,
            5 => ResultCode::UnsupportedOpcode,
            other => ResultCode::Unknown(other),
        }
    }
}

impl From<ResultCode> for u16 {
    fn from(code: ResultCode) -> Self {
        match code {
            ResultCode::Success => 0,
            ResultCode::UnsupportedVersion => 1,
            ResultCode::NotAuthorized => 2,
            ResultCode::NetworkFailure => 3,
            ResultCode::OutOfResources => 4,
            ResultCode::UnsupportedOpcode => 5,
            ResultCode::Unknown(other) => other,
        }
    }
}

/// Names in PCP's style, so logs read alike for both protocols.
impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultCode::Success => f.write_str("SUCCESS"),
            ResultCode::UnsupportedVersion => f.write_str("UNSUPP_VERSION"),
            ResultCode::NotAuthorized => f.write_str("NOT_AUTHORIZED"),
            ResultCode::NetworkFailure => f.write_str("NETWORK_FAILURE"),
            ResultCode::OutOfResources => f.write_str("NO_RESOURCES"),
            ResultCode::UnsupportedOpcode => f.write_str("UNSUPP_OPCODE"),
            ResultCode::Unknown(code) => write!(f, "result code {code}"),
        }
    }
}

/// What follows a response's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// Opcode 128: the external address.
    ExternalAddress(Ipv4Addr),
    /// Opcode 129 or 130: the mapping.
    Map(Mapping),
    /// Nothing: an error response that stops after the epoch, answering
    /// this.
    Bare(Op),
}

impl Body {
    /// The request this answers.
    pub fn op(&self) -> Op {
        match self {
            Body::ExternalAddress(_) => Op::ExternalAddress,
            Body::Map(mapping) => Op::Map(mapping.transport),
            Body::Bare(op) => *op,
        }
    }
}

/// A response from the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Response {
    /// The result code.
    pub result: ResultCode,
    /// Seconds since the gateway's mapping table started: it going back
    /// means the gateway lost its mappings (section 3.6).
    pub epoch: u32,
    /// What it says.
    pub body: Body,
}

/// Why bytes are not a NAT-PMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short, or not the length its opcode has.
    #[error("{0} bytes: not the length of this NAT-PMP message")]
    Length(usize),
    /// Not version 0.
    #[error("version {0}, not NAT-PMP's 0")]
    Version(u8),
    /// A request where a response was expected.
    #[error("opcode {0} is a request, not a response")]
    NotResponse(u8),
    /// A response where a request was expected.
    #[error("opcode {0} is a response, not a request")]
    NotRequest(u8),
    /// An opcode NAT-PMP does not define.
    #[error("unknown opcode {0}")]
    Opcode(u8),
    /// A PCP server's UNSUPP_VERSION, in PCP's format (the field is its
    /// version): the gateway does not speak NAT-PMP. A clear "no", not
    /// garbage.
    #[error("a PCP (version {0}) UNSUPP_VERSION: the gateway does not speak NAT-PMP")]
    Unsupported(u8),
}

impl Request {
    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::ExternalAddress => vec![VERSION, Op::ExternalAddress.code()],
            Request::Map(m) => {
                let mut out = vec![VERSION, Op::Map(m.transport).code(), 0, 0];
                out.extend_from_slice(&m.internal_port.to_be_bytes());
                out.extend_from_slice(&m.external_port.to_be_bytes());
                out.extend_from_slice(&m.lifetime.to_be_bytes());
                out
            }
        }
    }

    /// Parses a request (a gateway's side).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let [version, opcode, rest @ ..] = bytes else {
            return Err(DecodeError::Length(bytes.len()));
        };
        if *version != VERSION {
            return Err(DecodeError::Version(*version));
        }
        if *opcode >= RESPONSE_BIT {
            return Err(DecodeError::NotRequest(*opcode));
        }
        match (Op::from_code(*opcode), rest) {
            (None, _) => Err(DecodeError::Opcode(*opcode)),
            (Some(Op::ExternalAddress), []) => Ok(Request::ExternalAddress),
            (Some(Op::Map(transport)), [_, _, i0, i1, e0, e1, l0, l1, l2, l3]) => {
                Ok(Request::Map(Mapping {
                    transport,
                    internal_port: u16::from_be_bytes([*i0, *i1]),
                    external_port: u16::from_be_bytes([*e0, *e1]),
                    lifetime: u32::from_be_bytes([*l0, *l1, *l2, *l3]),
                }))
            }
            (Some(_), _) => Err(DecodeError::Length(bytes.len())),
        }
    }
}

impl Response {
    /// The response's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, RESPONSE_BIT | self.body.op().code()];
        out.extend_from_slice(&u16::from(self.result).to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        match self.body {
            Body::ExternalAddress(ip) => out.extend_from_slice(&ip.octets()),
            Body::Map(m) => {
                out.extend_from_slice(&m.internal_port.to_be_bytes());
                out.extend_from_slice(&m.external_port.to_be_bytes());
                out.extend_from_slice(&m.lifetime.to_be_bytes());
            }
            Body::Bare(_) => {}
        }
        out
    }

    /// Parses a response: any bytes give a value or an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let [version, opcode, ..] = bytes else {
            return Err(DecodeError::Length(bytes.len()));
        };
        if *version != VERSION {
            return Err(
                if super::speaks_only_the_other(super::Protocol::NatPmp, bytes) {
                    DecodeError::Unsupported(*version)
                } else {
                    DecodeError::Version(*version)
                },
            );
        }
        let Some(request) = opcode.checked_sub(RESPONSE_BIT) else {
            return Err(DecodeError::NotResponse(*opcode));
        };
        let op = Op::from_code(request).ok_or(DecodeError::Opcode(*opcode))?;
        let [_, _, r0, r1, s0, s1, s2, s3, rest @ ..] = bytes else {
            return Err(DecodeError::Length(bytes.len()));
        };
        let body = match (op, rest) {
            (_, []) => Body::Bare(op),
            (Op::ExternalAddress, [a, b, c, d]) => {
                Body::ExternalAddress(Ipv4Addr::new(*a, *b, *c, *d))
            }
            (Op::Map(transport), [i0, i1, e0, e1, l0, l1, l2, l3]) => Body::Map(Mapping {
                transport,
                internal_port: u16::from_be_bytes([*i0, *i1]),
                external_port: u16::from_be_bytes([*e0, *e1]),
                lifetime: u32::from_be_bytes([*l0, *l1, *l2, *l3]),
            }),
            _ => return Err(DecodeError::Length(bytes.len())),
        };
        Ok(Response {
            result: ResultCode::from(u16::from_be_bytes([*r0, *r1])),
            epoch: u32::from_be_bytes([*s0, *s1, *s2, *s3]),
            body,
        })
    }
}

/// Whether `bytes` are a NAT-PMP "unsupported version" response: how a
/// NAT-PMP-only gateway answers a PCP request. Read loosely (any length
/// from the header on): gateways differ in what follows it.
pub(super) fn is_unsupported_reply(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [VERSION, opcode, r0, r1, _, _, _, _, ..]
            if *opcode >= RESPONSE_BIT
                && ResultCode::from(u16::from_be_bytes([*r0, *r1])) == ResultCode::UnsupportedVersion
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_rfc_6886_layout() {
        assert_eq!(Request::ExternalAddress.encode(), [0, 0]);
        let map = Request::Map(Mapping {
            transport: Transport::Tcp,
            internal_port: 0x1151,
            external_port: 0x2233,
            lifetime: 7200,
        });
        assert_eq!(
            map.encode(),
            [0, 2, 0, 0, 0x11, 0x51, 0x22, 0x33, 0, 0, 0x1c, 0x20]
        );
        assert_eq!(Request::decode(&map.encode()), Ok(map));
        assert_eq!(Request::decode(&[0, 0]), Ok(Request::ExternalAddress));
    }

    #[test]
    fn an_external_address_response_decodes() {
        let bytes = [0, 128, 0, 0, 0, 0, 0x04, 0xd2, 198, 18, 0, 7];
        let response = Response::decode(&bytes).expect("valid");
        assert_eq!(
            response,
            Response {
                result: ResultCode::Success,
                epoch: 1234,
                body: Body::ExternalAddress(Ipv4Addr::new(198, 18, 0, 7)),
            }
        );
        assert_eq!(response.encode(), bytes);
    }

    #[test]
    fn a_map_response_decodes() {
        let bytes = [
            0, 129, 0, 0, 0, 0, 0, 9, 0x11, 0x51, 0x11, 0x52, 0, 0, 0x0e, 0x10,
        ];
        let response = Response::decode(&bytes).expect("valid");
        assert_eq!(
            response.body,
            Body::Map(Mapping {
                transport: Transport::Udp,
                internal_port: 0x1151,
                external_port: 0x1152,
                lifetime: 3600,
            })
        );
        assert_eq!(response.epoch, 9);
        assert_eq!(response.encode(), bytes);
    }

    #[test]
    fn malformed_responses_say_why() {
        assert_eq!(Response::decode(&[]), Err(DecodeError::Length(0)));
        assert_eq!(Response::decode(&[0]), Err(DecodeError::Length(1)));
        assert_eq!(
            Response::decode(&[0, 128, 0, 0]),
            Err(DecodeError::Length(4))
        );
        assert_eq!(
            Response::decode(&[0, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3]),
            Err(DecodeError::Length(11))
        );
        assert_eq!(
            Response::decode(&[0, 1, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::NotResponse(1))
        );
        assert_eq!(
            Response::decode(&[0, 131, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Opcode(131))
        );
        assert_eq!(
            Response::decode(&[1, 128, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Version(1))
        );
        assert_eq!(
            Request::decode(&[0, 129]),
            Err(DecodeError::NotRequest(129))
        );
        assert_eq!(Request::decode(&[0, 1, 0]), Err(DecodeError::Length(3)));
        assert_eq!(Request::decode(&[0, 7]), Err(DecodeError::Opcode(7)));
    }

    #[test]
    fn a_bare_unsupported_version_answer_to_pcp_is_a_response() {
        // RFC 6886 section 3.5, as sent to a PCP MAP request (opcode 1).
        let bytes = [0, 129, 0, 1, 0, 0, 0, 42];
        let response = Response::decode(&bytes).expect("valid");
        assert_eq!(response.result, ResultCode::UnsupportedVersion);
        assert_eq!(response.body, Body::Bare(Op::Map(Transport::Udp)));
        assert!(is_unsupported_reply(&bytes));
        assert!(!is_unsupported_reply(&[0, 129, 0, 2, 0, 0, 0, 42]));
        assert!(!is_unsupported_reply(&[0, 1, 0, 1, 0, 0, 0, 42]));
        assert!(!is_unsupported_reply(&[0, 129, 0, 1]));
    }

    #[test]
    fn a_pcp_unsupp_version_is_unsupported_not_garbage() {
        let mut pcp = [0u8; 24];
        pcp[..4].copy_from_slice(&[2, 0x80, 0, 1]);
        assert_eq!(Response::decode(&pcp), Err(DecodeError::Unsupported(2)));
        pcp[3] = 2;
        assert_eq!(Response::decode(&pcp), Err(DecodeError::Version(2)));
    }

    #[test]
    fn result_codes_survive_the_wire_including_unknown_ones() {
        for code in 0..=7u16 {
            assert_eq!(u16::from(ResultCode::from(code)), code);
        }
        assert_eq!(ResultCode::from(9), ResultCode::Unknown(9));
        assert_eq!(ResultCode::NotAuthorized.to_string(), "NOT_AUTHORIZED");
    }
}
