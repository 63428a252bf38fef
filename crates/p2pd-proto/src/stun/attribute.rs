//! STUN attributes (RFC 8489 section 14, RFC 5780 section 7, RFC 3489).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::wire::{DecodeError, TransactionId};

/// Attribute type codes.
pub mod code {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// CHANGE-REQUEST (RFC 5780).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// SOURCE-ADDRESS (RFC 3489).
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// CHANGED-ADDRESS (RFC 3489).
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER (TURN, RFC 8656).
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME (TURN).
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS (TURN).
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA (TURN).
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS (TURN).
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY (TURN).
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// REQUESTED-TRANSPORT (TURN).
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// PADDING (RFC 5780).
    pub const PADDING: u16 = 0x0026;
    /// RESPONSE-PORT (RFC 5780).
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
    /// RESPONSE-ORIGIN (RFC 5780).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS (RFC 5780).
    pub const OTHER_ADDRESS: u16 = 0x802C;
}

/// One attribute, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute {
    /// Where the server saw the request come from (plain).
    MappedAddress(SocketAddr),
    /// Where the server saw the request come from (XOR-ed, RFC 5389+).
    XorMappedAddress(SocketAddr),
    /// RFC 5780: the server should answer from another IP and/or port.
    ChangeRequest {
        /// Answer from the other IP.
        ip: bool,
        /// Answer from the other port.
        port: bool,
    },
    /// RFC 3489: the address the response was sent from.
    SourceAddress(SocketAddr),
    /// RFC 3489: the server's address with other IP and port.
    ChangedAddress(SocketAddr),
    /// USERNAME.
    Username(String),
    /// MESSAGE-INTEGRITY as received (HMAC-SHA1).
    MessageIntegrity([u8; 20]),
    /// ERROR-CODE.
    ErrorCode {
        /// 300..=699.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// UNKNOWN-ATTRIBUTES: the comprehension-required types not understood.
    UnknownAttributes(Vec<u16>),
    /// TURN: the channel a ChannelBind asks for (0x4000..=0x4FFF).
    ChannelNumber(u16),
    /// TURN: an allocation's lifetime in seconds (0 deletes it).
    Lifetime(u32),
    /// TURN: the peer a permission, channel or Send/Data indication is for.
    XorPeerAddress(SocketAddr),
    /// TURN: the payload of a Send or Data indication.
    Data(Vec<u8>),
    /// TURN: the address the server relays from for this client.
    XorRelayedAddress(SocketAddr),
    /// TURN: the address family of the relayed address asked for (1 IPv4,
    /// 2 IPv6).
    RequestedAddressFamily(u8),
    /// TURN: the protocol to relay (17 for UDP).
    RequestedTransport(u8),
    /// REALM.
    Realm(String),
    /// NONCE.
    Nonce(String),
    /// MESSAGE-INTEGRITY-SHA256 as received (16 to 32 bytes).
    MessageIntegritySha256(Vec<u8>),
    /// RFC 5780: pad the response to this request's size.
    Padding(Vec<u8>),
    /// RFC 5780: send the response to this port of the client's IP.
    ResponsePort(u16),
    /// SOFTWARE.
    Software(String),
    /// FINGERPRINT as received.
    Fingerprint(u32),
    /// RFC 5780: the address the response was sent from.
    ResponseOrigin(SocketAddr),
    /// RFC 5780: the server's address with other IP and port.
    OtherAddress(SocketAddr),
    /// Any other attribute, kept as bytes.
    Unknown {
        /// Its type.
        kind: u16,
        /// Its value.
        value: Vec<u8>,
    },
}

impl Attribute {
    /// The attribute's type code.
    pub fn kind(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => code::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => code::XOR_MAPPED_ADDRESS,
            Attribute::ChangeRequest { .. } => code::CHANGE_REQUEST,
            Attribute::SourceAddress(_) => code::SOURCE_ADDRESS,
            Attribute::ChangedAddress(_) => code::CHANGED_ADDRESS,
            Attribute::Username(_) => code::USERNAME,
            Attribute::MessageIntegrity(_) => code::MESSAGE_INTEGRITY,
            Attribute::ErrorCode { .. } => code::ERROR_CODE,
            Attribute::UnknownAttributes(_) => code::UNKNOWN_ATTRIBUTES,
            Attribute::ChannelNumber(_) => code::CHANNEL_NUMBER,
            Attribute::Lifetime(_) => code::LIFETIME,
            Attribute::XorPeerAddress(_) => code::XOR_PEER_ADDRESS,
            Attribute::Data(_) => code::DATA,
            Attribute::XorRelayedAddress(_) => code::XOR_RELAYED_ADDRESS,
            Attribute::RequestedAddressFamily(_) => code::REQUESTED_ADDRESS_FAMILY,
            Attribute::RequestedTransport(_) => code::REQUESTED_TRANSPORT,
            Attribute::Realm(_) => code::REALM,
            Attribute::Nonce(_) => code::NONCE,
            Attribute::MessageIntegritySha256(_) => code::MESSAGE_INTEGRITY_SHA256,
            Attribute::Padding(_) => code::PADDING,
            Attribute::ResponsePort(_) => code::RESPONSE_PORT,
            Attribute::Software(_) => code::SOFTWARE,
            Attribute::Fingerprint(_) => code::FINGERPRINT,
            Attribute::ResponseOrigin(_) => code::RESPONSE_ORIGIN,
            Attribute::OtherAddress(_) => code::OTHER_ADDRESS,
            Attribute::Unknown { kind, .. } => *kind,
        }
    }

    /// Whether a receiver that does not know `kind` must reject the message
    /// (types below 0x8000, RFC 8489 section 14).
    pub fn comprehension_required(kind: u16) -> bool {
        kind < 0x8000
    }

    /// Whether this implementation understands `kind`.
    pub fn is_known(kind: u16) -> bool {
        use code::*;
        matches!(
            kind,
            MAPPED_ADDRESS
                | CHANGE_REQUEST
                | SOURCE_ADDRESS
                | CHANGED_ADDRESS
                | USERNAME
                | MESSAGE_INTEGRITY
                | ERROR_CODE
                | UNKNOWN_ATTRIBUTES
                | CHANNEL_NUMBER
                | LIFETIME
                | XOR_PEER_ADDRESS
                | DATA
                | XOR_RELAYED_ADDRESS
                | REQUESTED_ADDRESS_FAMILY
                | REQUESTED_TRANSPORT
                | REALM
                | NONCE
                | MESSAGE_INTEGRITY_SHA256
                | XOR_MAPPED_ADDRESS
                | PADDING
                | RESPONSE_PORT
                | SOFTWARE
                | FINGERPRINT
                | RESPONSE_ORIGIN
                | OTHER_ADDRESS
        )
    }

    /// Writes the value (without type, length or padding).
    pub(super) fn encode_value(&self, out: &mut Vec<u8>, cookie: u32, tid: &TransactionId) {
        match self {
            Attribute::MappedAddress(a)
            | Attribute::SourceAddress(a)
            | Attribute::ChangedAddress(a)
            | Attribute::ResponseOrigin(a)
            | Attribute::OtherAddress(a) => encode_address(out, *a),
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => encode_address(out, xor(*a, cookie, tid)),
            Attribute::ChannelNumber(n) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Attribute::Lifetime(secs) => out.extend_from_slice(&secs.to_be_bytes()),
            Attribute::Data(v) => out.extend_from_slice(v),
            Attribute::RequestedAddressFamily(n) | Attribute::RequestedTransport(n) => {
                out.extend_from_slice(&[*n, 0, 0, 0]);
            }
            Attribute::ChangeRequest { ip, port } => {
                let flags = (u32::from(*ip) << 2) | (u32::from(*port) << 1);
                out.extend_from_slice(&flags.to_be_bytes());
            }
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::Software(s) => out.extend_from_slice(s.as_bytes()),
            Attribute::MessageIntegrity(mac) => out.extend_from_slice(mac),
            Attribute::ErrorCode { code, reason } => {
                out.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
                out.extend_from_slice(reason.as_bytes());
            }
            Attribute::UnknownAttributes(kinds) => {
                for k in kinds {
                    out.extend_from_slice(&k.to_be_bytes());
                }
            }
            Attribute::MessageIntegritySha256(v) | Attribute::Padding(v) => {
                out.extend_from_slice(v)
            }
            Attribute::ResponsePort(p) => {
                out.extend_from_slice(&p.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Attribute::Fingerprint(f) => out.extend_from_slice(&f.to_be_bytes()),
            Attribute::Unknown { value, .. } => out.extend_from_slice(value),
        }
    }

    /// Decodes one attribute value of type `kind`.
    pub(super) fn decode(
        kind: u16,
        value: &[u8],
        cookie: u32,
        tid: &TransactionId,
    ) -> Result<Attribute, DecodeError> {
        let bad = |why: &'static str| DecodeError::Attribute { kind, why };
        Ok(match kind {
            code::MAPPED_ADDRESS => {
                Attribute::MappedAddress(decode_address(value).ok_or(bad("bad address"))?)
            }
            code::SOURCE_ADDRESS => {
                Attribute::SourceAddress(decode_address(value).ok_or(bad("bad address"))?)
            }
            code::CHANGED_ADDRESS => {
                Attribute::ChangedAddress(decode_address(value).ok_or(bad("bad address"))?)
            }
            code::RESPONSE_ORIGIN => {
                Attribute::ResponseOrigin(decode_address(value).ok_or(bad("bad address"))?)
            }
            code::OTHER_ADDRESS => {
                Attribute::OtherAddress(decode_address(value).ok_or(bad("bad address"))?)
            }
            code::XOR_MAPPED_ADDRESS => {
                let a = decode_address(value).ok_or(bad("bad address"))?;
                Attribute::XorMappedAddress(xor(a, cookie, tid))
            }
            code::XOR_PEER_ADDRESS => {
                let a = decode_address(value).ok_or(bad("bad address"))?;
                Attribute::XorPeerAddress(xor(a, cookie, tid))
            }
            code::XOR_RELAYED_ADDRESS => {
                let a = decode_address(value).ok_or(bad("bad address"))?;
                Attribute::XorRelayedAddress(xor(a, cookie, tid))
            }
            code::CHANNEL_NUMBER => {
                let [hi, lo, _, _] =
                    <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                Attribute::ChannelNumber(u16::from_be_bytes([hi, lo]))
            }
            code::LIFETIME => Attribute::Lifetime(u32::from_be_bytes(
                value.try_into().map_err(|_| bad("length is not 4"))?,
            )),
            code::DATA => Attribute::Data(value.to_vec()),
            code::REQUESTED_ADDRESS_FAMILY => {
                let [family, _, _, _] =
                    <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                Attribute::RequestedAddressFamily(family)
            }
            code::REQUESTED_TRANSPORT => {
                let [protocol, _, _, _] =
                    <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                Attribute::RequestedTransport(protocol)
            }
            code::CHANGE_REQUEST => {
                let flags =
                    u32::from_be_bytes(value.try_into().map_err(|_| bad("length is not 4"))?);
                Attribute::ChangeRequest {
                    ip: flags & 0x4 != 0,
                    port: flags & 0x2 != 0,
                }
            }
            code::USERNAME => {
                Attribute::Username(text(value, 513).ok_or(bad("not UTF-8 or too long"))?)
            }
            code::REALM => Attribute::Realm(text(value, 763).ok_or(bad("not UTF-8 or too long"))?),
            code::NONCE => Attribute::Nonce(text(value, 763).ok_or(bad("not UTF-8 or too long"))?),
            code::SOFTWARE => {
                Attribute::Software(text(value, 763).ok_or(bad("not UTF-8 or too long"))?)
            }
            code::MESSAGE_INTEGRITY => {
                Attribute::MessageIntegrity(value.try_into().map_err(|_| bad("length is not 20"))?)
            }
            code::MESSAGE_INTEGRITY_SHA256 => {
                if !(16..=32).contains(&value.len()) || !value.len().is_multiple_of(4) {
                    return Err(bad("length is not 16..=32 in steps of 4"));
                }
                Attribute::MessageIntegritySha256(value.to_vec())
            }
            code::ERROR_CODE => {
                if value.len() < 4 {
                    return Err(bad("shorter than 4"));
                }
                let class = u16::from(value[2] & 0x07);
                let number = u16::from(value[3]);
                if !(3..=6).contains(&class) || number > 99 {
                    return Err(bad("code out of range"));
                }
                Attribute::ErrorCode {
                    code: class * 100 + number,
                    reason: text(&value[4..], 763).ok_or(bad("not UTF-8 or too long"))?,
                }
            }
            code::UNKNOWN_ATTRIBUTES => {
                if !value.len().is_multiple_of(2) {
                    return Err(bad("odd length"));
                }
                Attribute::UnknownAttributes(
                    value
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            code::PADDING => Attribute::Padding(value.to_vec()),
            code::RESPONSE_PORT => {
                if value.len() != 4 {
                    return Err(bad("length is not 4"));
                }
                Attribute::ResponsePort(u16::from_be_bytes([value[0], value[1]]))
            }
            code::FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(
                value.try_into().map_err(|_| bad("length is not 4"))?,
            )),
            _ => Attribute::Unknown {
                kind,
                value: value.to_vec(),
            },
        })
    }
}

fn text(value: &[u8], max: usize) -> Option<String> {
    if value.len() > max {
        return None;
    }
    std::str::from_utf8(value).ok().map(str::to_owned)
}

fn encode_address(out: &mut Vec<u8>, addr: SocketAddr) {
    out.push(0);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(0x01);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(0x02);
            out.extend_from_slice(&addr.port().to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
    }
}

fn decode_address(value: &[u8]) -> Option<SocketAddr> {
    let (family, rest) = match value {
        [_, family, rest @ ..] => (*family, rest),
        _ => return None,
    };
    let port = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    let ip_bytes = rest.get(2..)?;
    let ip = match (family, ip_bytes.len()) {
        (0x01, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(ip_bytes).ok()?)),
        (0x02, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip_bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// XORs an address with the cookie (and transaction id for IPv6); the
/// operation is its own inverse.
fn xor(addr: SocketAddr, cookie: u32, tid: &TransactionId) -> SocketAddr {
    let port = addr.port() ^ (cookie >> 16) as u16;
    let ip = match addr.ip() {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) ^ cookie)),
        IpAddr::V6(ip) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie.to_be_bytes());
            key[4..].copy_from_slice(&tid.0);
            let mut octets = ip.octets();
            for (o, k) in octets.iter_mut().zip(key) {
                *o ^= k;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    SocketAddr::new(ip, port)
}
