//! The Binding client's messages (RFC 8489 section 6, RFC 5780 section 7.2):
//! the request it sends and what a response means. Matching and
//! retransmission belong to [`super::transaction`]; this module only builds
//! and reads messages, so every driver (UDP, TCP, the NAT probe) shares it.

use std::net::SocketAddr;
use std::time::Duration;

use super::BINDING;
use super::attribute::Attribute;
use super::message::{Class, Message};
use super::wire::TransactionId;

/// A successful Binding response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingResponse {
    /// Our address as the server saw it.
    pub mapped: SocketAddr,
    /// The server's OTHER-ADDRESS (or classic CHANGED-ADDRESS).
    pub other: Option<SocketAddr>,
    /// Where the response came from.
    pub from: SocketAddr,
    /// From the first send to the response.
    pub rtt: Duration,
}

impl BindingResponse {
    /// OTHER-ADDRESS when the behaviour tests can use it: same family as
    /// the server, and both its IP and its port differ from the server's
    /// (RFC 5780 section 4.1 needs both to change).
    pub fn usable_other(&self) -> Option<SocketAddr> {
        self.other.filter(|o| {
            o.is_ipv4() == self.from.is_ipv4()
                && o.ip() != self.from.ip()
                && o.port() != self.from.port()
        })
    }
}

/// Why a Binding request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// Nothing answered in time.
    #[error("no answer from {0}")]
    Timeout(SocketAddr),
    /// The server answered with an error response.
    #[error("{server} answered error {code}")]
    ErrorResponse {
        /// The server.
        server: SocketAddr,
        /// The STUN error code (0 when the response carried none).
        code: u16,
    },
    /// The response had no mapped address.
    #[error("{0} sent a response without a mapped address")]
    NoMappedAddress(SocketAddr),
}

impl BindingError {
    /// The server the request went to.
    pub fn server(&self) -> SocketAddr {
        match self {
            BindingError::Timeout(server)
            | BindingError::ErrorResponse { server, .. }
            | BindingError::NoMappedAddress(server) => *server,
        }
    }
}

/// A Binding request with transaction id `transaction` (it must be fresh
/// and random, RFC 8489 section 6), asking with CHANGE-REQUEST `(ip, port)`
/// for an answer from the server's other IP and/or port.
pub fn request(transaction: TransactionId, change: Option<(bool, bool)>) -> Message {
    let mut request = Message::new(Class::Request, BINDING, transaction);
    if let Some((ip, port)) = change {
        request
            .attributes
            .push(Attribute::ChangeRequest { ip, port });
    }
    request
}

/// What a response from `from`, `rtt` after the first send, says.
pub fn interpret(
    message: &Message,
    from: SocketAddr,
    rtt: Duration,
) -> Result<BindingResponse, BindingError> {
    if message.class == Class::Error {
        let code = message
            .attributes
            .iter()
            .find_map(|a| match a {
                Attribute::ErrorCode { code, .. } => Some(*code),
                _ => None,
            })
            .unwrap_or(0);
        return Err(BindingError::ErrorResponse { server: from, code });
    }
    let mapped = message
        .mapped_address()
        .ok_or(BindingError::NoMappedAddress(from))?;
    Ok(BindingResponse {
        mapped,
        other: message.other_address(),
        from,
        rtt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("lit")
    }

    #[test]
    fn a_success_gives_the_mapped_and_other_address() {
        let req = request(TransactionId([7; 12]), Some((true, false)));
        assert!(req.attributes.contains(&Attribute::ChangeRequest {
            ip: true,
            port: false
        }));
        let resp = Message::response_to(&req, Class::Success)
            .with(Attribute::XorMappedAddress(addr("203.0.113.9:4000")))
            .with(Attribute::OtherAddress(addr("198.18.0.3:3479")));
        let got =
            interpret(&resp, addr("198.18.0.2:3478"), Duration::from_millis(3)).expect("success");
        assert_eq!(got.mapped, addr("203.0.113.9:4000"));
        assert_eq!(got.usable_other(), Some(addr("198.18.0.3:3479")));
    }

    #[test]
    fn an_other_address_sharing_the_ip_or_port_is_not_usable() {
        let answer = |other: &str| BindingResponse {
            mapped: addr("203.0.113.9:4000"),
            other: Some(addr(other)),
            from: addr("198.18.0.2:3478"),
            rtt: Duration::ZERO,
        };
        assert_eq!(answer("198.18.0.2:3479").usable_other(), None);
        assert_eq!(answer("198.18.0.3:3478").usable_other(), None);
        assert_eq!(answer("[2001:db8::1]:3479").usable_other(), None);
    }

    #[test]
    fn errors_and_missing_addresses_are_typed() {
        let req = request(TransactionId([8; 12]), None);
        let from = addr("198.18.0.2:3478");
        let error = Message::response_to(&req, Class::Error).with(Attribute::ErrorCode {
            code: 420,
            reason: "Unknown Attribute".into(),
        });
        assert_eq!(
            interpret(&error, from, Duration::ZERO),
            Err(BindingError::ErrorResponse {
                server: from,
                code: 420
            })
        );
        let bare = Message::response_to(&req, Class::Success);
        assert_eq!(
            interpret(&bare, from, Duration::ZERO),
            Err(BindingError::NoMappedAddress(from))
        );
    }
}
