//! The STUN message codec (RFC 8489 sections 5, 14.5, 14.7 and 14.6).

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::attribute::{Attribute, code};
use super::wire::{DecodeError, TransactionId};
use super::{HEADER_LEN, MAGIC_COOKIE};

/// FINGERPRINT is the CRC-32 of the message XOR-ed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// The class of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, expecting a response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its class.
    pub class: Class,
    /// Its method (12 bits; Binding is 1).
    pub method: u16,
    /// [`MAGIC_COOKIE`], or for a classic RFC 3489 message the first four
    /// bytes of its transaction id.
    pub cookie: u32,
    /// The transaction id.
    pub transaction: TransactionId,
    /// Attributes in wire order.
    pub attributes: Vec<Attribute>,
}

/// How a message is signed when encoded.
#[derive(Debug, Clone, Copy)]
pub enum Integrity<'a> {
    /// MESSAGE-INTEGRITY (HMAC-SHA1) with this key.
    Sha1(&'a [u8]),
    /// MESSAGE-INTEGRITY-SHA256 with this key.
    Sha256(&'a [u8]),
}

impl Message {
    /// A new message with the magic cookie.
    pub fn new(class: Class, method: u16, transaction: TransactionId) -> Self {
        Self {
            class,
            method: method & 0x0fff,
            cookie: MAGIC_COOKIE,
            transaction,
            attributes: Vec::new(),
        }
    }

    /// A response to `request`, keeping its cookie and transaction id (so a
    /// classic client gets a classic answer).
    pub fn response_to(request: &Message, class: Class) -> Self {
        Self {
            class,
            method: request.method,
            cookie: request.cookie,
            transaction: request.transaction,
            attributes: Vec::new(),
        }
    }

    /// Whether the message is classic RFC 3489 (no magic cookie).
    pub fn is_classic(&self) -> bool {
        self.cookie != MAGIC_COOKIE
    }

    /// Adds an attribute.
    pub fn with(mut self, attribute: Attribute) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// The first attribute of a type.
    pub fn get(&self, kind: u16) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.kind() == kind)
    }

    /// The mapped address: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    pub fn mapped_address(&self) -> Option<std::net::SocketAddr> {
        self.attributes
            .iter()
            .find_map(|a| match a {
                Attribute::XorMappedAddress(addr) => Some(*addr),
                _ => None,
            })
            .or_else(|| {
                self.attributes.iter().find_map(|a| match a {
                    Attribute::MappedAddress(addr) => Some(*addr),
                    _ => None,
                })
            })
    }

    /// OTHER-ADDRESS, else the classic CHANGED-ADDRESS.
    pub fn other_address(&self) -> Option<std::net::SocketAddr> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::OtherAddress(addr) | Attribute::ChangedAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// Encodes the attributes as they are.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_signed(None, false)
    }

    /// Encodes, then appends MESSAGE-INTEGRITY(-SHA256) computed with the
    /// key and/or a FINGERPRINT.
    pub fn encode_signed(&self, integrity: Option<Integrity<'_>>, fingerprint: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        let kind = self.class.bits();
        let method = self.method & 0x0fff;
        let message_type = (method & 0x000f)
            | ((method & 0x0070) << 1)
            | ((method & 0x0f80) << 2)
            | ((kind & 0b01) << 4)
            | ((kind & 0b10) << 7);
        out.extend_from_slice(&message_type.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.cookie.to_be_bytes());
        out.extend_from_slice(&self.transaction.0);
        for attribute in &self.attributes {
            push_attribute(&mut out, attribute, self.cookie, &self.transaction);
        }
        match integrity {
            Some(Integrity::Sha1(key)) => {
                let mac = hmac_over::<Hmac<Sha1>>(&mut out, key, 20);
                push_raw(&mut out, code::MESSAGE_INTEGRITY, &mac);
            }
            Some(Integrity::Sha256(key)) => {
                let mac = hmac_over::<Hmac<Sha256>>(&mut out, key, 32);
                push_raw(&mut out, code::MESSAGE_INTEGRITY_SHA256, &mac);
            }
            None => set_length(&mut out),
        }
        if fingerprint {
            set_length_plus(&mut out, 8);
            let crc = crc32fast::hash(&out) ^ FINGERPRINT_XOR;
            push_raw(&mut out, code::FINGERPRINT, &crc.to_be_bytes());
        }
        set_length(&mut out);
        out
    }

    /// Decodes a message. A FINGERPRINT, if present, must be last and
    /// match. Integrity is checked separately with [`check_integrity`],
    /// since the key depends on the message.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let len = frame_len(bytes)?.ok_or(DecodeError::Truncated(bytes.len()))?;
        if len != bytes.len() {
            return Err(DecodeError::BadLength);
        }
        let message_type = u16::from_be_bytes([bytes[0], bytes[1]]);
        let method = (message_type & 0x000f)
            | ((message_type >> 1) & 0x0070)
            | ((message_type >> 2) & 0x0f80);
        let class = Class::from_bits(((message_type >> 4) & 0b01) | ((message_type >> 7) & 0b10));
        let cookie = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&bytes[8..HEADER_LEN]);
        let transaction = TransactionId(tid);
        let mut attributes = Vec::new();
        let mut after_integrity = false;
        for (offset, kind, value) in walk(bytes) {
            let value = value?;
            // RFC 8489 section 14.5: only MESSAGE-INTEGRITY-SHA256 and
            // FINGERPRINT may follow MESSAGE-INTEGRITY; anything else there
            // is not covered by it and is ignored.
            if after_integrity
                && kind != code::MESSAGE_INTEGRITY_SHA256
                && kind != code::FINGERPRINT
            {
                continue;
            }
            after_integrity |= kind == code::MESSAGE_INTEGRITY;
            if kind == code::FINGERPRINT {
                let value_end = offset + 4 + value.len();
                if value_end != bytes.len() {
                    return Err(DecodeError::BadFingerprint);
                }
                let mut covered = bytes[..offset].to_vec();
                let len = (bytes.len() - HEADER_LEN) as u16;
                covered[2..4].copy_from_slice(&len.to_be_bytes());
                let expected = crc32fast::hash(&covered) ^ FINGERPRINT_XOR;
                let got =
                    u32::from_be_bytes(value.try_into().map_err(|_| DecodeError::BadFingerprint)?);
                if got != expected {
                    return Err(DecodeError::BadFingerprint);
                }
            }
            attributes.push(Attribute::decode(kind, value, cookie, &transaction)?);
        }
        Ok(Message {
            class,
            method,
            cookie,
            transaction,
            attributes,
        })
    }
}

/// How long the STUN message at the start of `bytes` is, once its header
/// has arrived: for framing STUN over TCP. `Ok(None)` means fewer than 20
/// bytes so far.
pub fn frame_len(bytes: &[u8]) -> Result<Option<usize>, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Ok(None);
    }
    if bytes[0] & 0xc0 != 0 {
        return Err(DecodeError::NotStun);
    }
    let body = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if !body.is_multiple_of(4) {
        return Err(DecodeError::BadLength);
    }
    Ok(Some(HEADER_LEN + body))
}

/// Checks the MESSAGE-INTEGRITY (or -SHA256) of an encoded message with
/// `key`. Returns false when it is missing or wrong.
pub fn check_integrity(bytes: &[u8], key: &[u8]) -> bool {
    if Message::decode(bytes).is_err() {
        return false;
    }
    for (offset, kind, value) in walk(bytes) {
        let Ok(value) = value else {
            return false;
        };
        if kind != code::MESSAGE_INTEGRITY && kind != code::MESSAGE_INTEGRITY_SHA256 {
            continue;
        }
        let mut covered = bytes[..offset].to_vec();
        set_length_plus(&mut covered, 4 + value.len());
        return if kind == code::MESSAGE_INTEGRITY {
            verify::<Hmac<Sha1>>(&covered, key, value)
        } else {
            verify::<Hmac<Sha256>>(&covered, key, value)
        };
    }
    false
}

/// Iterates attributes as (offset of the attribute header, type, value).
fn walk(bytes: &[u8]) -> impl Iterator<Item = (usize, u16, Result<&[u8], DecodeError>)> {
    let mut offset = HEADER_LEN;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || offset + 4 > bytes.len() {
            return None;
        }
        let kind = u16::from_be_bytes([bytes[offset], bytes[offset + 1]]);
        let len = usize::from(u16::from_be_bytes([bytes[offset + 2], bytes[offset + 3]]));
        let start = offset + 4;
        let Some(value) = bytes.get(start..start + len) else {
            failed = true;
            return Some((offset, kind, Err(DecodeError::AttributeOverrun(kind))));
        };
        let here = offset;
        offset = start + len.div_ceil(4) * 4;
        if offset > bytes.len() {
            failed = true;
            return Some((here, kind, Err(DecodeError::AttributeOverrun(kind))));
        }
        Some((here, kind, Ok(value)))
    })
}

fn push_attribute(out: &mut Vec<u8>, attribute: &Attribute, cookie: u32, tid: &TransactionId) {
    let start = out.len();
    out.extend_from_slice(&attribute.kind().to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    attribute.encode_value(out, cookie, tid);
    let len = out.len() - start - 4;
    let len16 = u16::try_from(len).unwrap_or(u16::MAX);
    out[start + 2..start + 4].copy_from_slice(&len16.to_be_bytes());
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn push_raw(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

fn set_length(out: &mut [u8]) {
    set_length_plus(out, 0);
}

/// Sets the header length as if `extra` more bytes followed.
fn set_length_plus(out: &mut [u8], extra: usize) {
    let len = u16::try_from(out.len() + extra - HEADER_LEN).unwrap_or(u16::MAX);
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

fn hmac_over<M: Mac + hmac::digest::KeyInit>(
    out: &mut [u8],
    key: &[u8],
    mac_len: usize,
) -> Vec<u8> {
    set_length_plus(out, 4 + mac_len);
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
        .expect("invariant: HMAC takes any key length");
    mac.update(out);
    mac.finalize().into_bytes().to_vec()
}

fn verify<M: Mac + hmac::digest::KeyInit>(covered: &[u8], key: &[u8], tag: &[u8]) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(covered);
    // MESSAGE-INTEGRITY-SHA256 may be truncated to 16..32 bytes.
    mac.verify_truncated_left(tag).is_ok()
}
