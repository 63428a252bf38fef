//! The answer of an RFC 5780 STUN server, as a pure function.
//!
//! A full server listens on two IPs × two ports. A Binding request received
//! on one of the four answers, from the socket the CHANGE-REQUEST asks for,
//! with the client's mapped address, RESPONSE-ORIGIN (the answering socket)
//! and OTHER-ADDRESS (the socket with the other IP and the other port).
//! Classic RFC 3489 requests (no magic cookie) get MAPPED-ADDRESS,
//! SOURCE-ADDRESS and CHANGED-ADDRESS instead. The driver only routes bytes.
//!
//! Answers are kept small (no SOFTWARE, no MAPPED-ADDRESS for RFC 5389+
//! clients), and RESPONSE-PORT, which sends the answer somewhere the
//! request did not come from, is only honoured when the answer is no larger
//! than the request (pad it with PADDING): a spoofed request must not make
//! the server a traffic amplifier.

use std::net::SocketAddr;

use super::BINDING;
use super::attribute::{Attribute, code};
use super::message::{Class, Message};
use crate::Transmit;

/// The server's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddresses {
    /// The primary IP and port.
    pub primary: SocketAddr,
    /// The alternate IP and port (both differ from the primary's); without
    /// it, CHANGE-REQUEST cannot be honoured.
    pub alternate: Option<SocketAddr>,
}

impl ServerAddresses {
    /// Every local address the server listens on: 1, or 4 with an
    /// alternate.
    pub fn sockets(&self) -> Vec<SocketAddr> {
        match self.alternate {
            None => vec![self.primary],
            Some(alt) => {
                let (ip1, ip2) = (self.primary.ip(), alt.ip());
                let (p1, p2) = (self.primary.port(), alt.port());
                vec![
                    SocketAddr::new(ip1, p1),
                    SocketAddr::new(ip1, p2),
                    SocketAddr::new(ip2, p1),
                    SocketAddr::new(ip2, p2),
                ]
            }
        }
    }

    /// From socket `on`, the socket with the other IP (if `ip`) and/or the
    /// other port (if `port`).
    fn changed(&self, on: SocketAddr, ip: bool, port: bool) -> Option<SocketAddr> {
        let alt = self.alternate?;
        let other_ip = if on.ip() == self.primary.ip() {
            alt.ip()
        } else {
            self.primary.ip()
        };
        let other_port = if on.port() == self.primary.port() {
            alt.port()
        } else {
            self.primary.port()
        };
        Some(SocketAddr::new(
            if ip { other_ip } else { on.ip() },
            if port { other_port } else { on.port() },
        ))
    }
}

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: the answer may leave from another socket, to another port.
    Udp,
    /// TCP: the answer goes back on the same connection.
    Tcp,
}

/// Answers `bytes`, received on local socket `on` from `client`; the
/// answer's `src` is the local socket to send it from. `None`: drop it (not
/// STUN, not a Binding request).
pub fn respond(
    addrs: &ServerAddresses,
    transport: Transport,
    on: SocketAddr,
    client: SocketAddr,
    bytes: &[u8],
) -> Option<Transmit<SocketAddr>> {
    let request = Message::decode(bytes).ok()?;
    if request.class != Class::Request || request.method != BINDING {
        return None;
    }
    let unknown: Vec<u16> = request
        .attributes
        .iter()
        .map(Attribute::kind)
        .filter(|k| Attribute::comprehension_required(*k) && !Attribute::is_known(*k))
        .collect();
    if !unknown.is_empty() {
        return Some(error(
            &request,
            on,
            client,
            420,
            "Unknown Attribute",
            Some(unknown),
        ));
    }
    let (change_ip, change_port) = request
        .attributes
        .iter()
        .find_map(|a| match a {
            Attribute::ChangeRequest { ip, port } => Some((*ip, *port)),
            _ => None,
        })
        .unwrap_or((false, false));
    let changing = change_ip || change_port;
    if changing && addrs.alternate.is_none() {
        let unknown = Some(vec![code::CHANGE_REQUEST]);
        return Some(error(
            &request,
            on,
            client,
            420,
            "No alternate address",
            unknown,
        ));
    }
    if changing && transport == Transport::Tcp {
        return Some(error(
            &request,
            on,
            client,
            400,
            "CHANGE-REQUEST needs UDP",
            None,
        ));
    }
    let from = addrs.changed(on, change_ip, change_port).unwrap_or(on);
    let redirect = match (transport, response_port(&request)) {
        (Transport::Udp, Some(port)) => Some(SocketAddr::new(client.ip(), port)),
        _ => None,
    };
    let other = addrs.changed(on, true, true);
    let mut response = Message::response_to(&request, Class::Success);
    if request.is_classic() {
        response = response
            .with(Attribute::MappedAddress(client))
            .with(Attribute::SourceAddress(from));
        if let Some(other) = other {
            response = response.with(Attribute::ChangedAddress(other));
        }
    } else {
        response = response
            .with(Attribute::XorMappedAddress(client))
            .with(Attribute::ResponseOrigin(from));
        if let Some(other) = other {
            response = response.with(Attribute::OtherAddress(other));
        }
    }
    let payload = response.encode_signed(None, !request.is_classic());
    if redirect.is_some() && payload.len() > bytes.len() {
        return Some(error(
            &request,
            on,
            client,
            400,
            "Pad a RESPONSE-PORT request",
            None,
        ));
    }
    Some(Transmit {
        src: from,
        dst: redirect.unwrap_or(client),
        payload,
    })
}

fn response_port(request: &Message) -> Option<u16> {
    request.attributes.iter().find_map(|a| match a {
        Attribute::ResponsePort(p) => Some(*p),
        _ => None,
    })
}

fn error(
    request: &Message,
    on: SocketAddr,
    client: SocketAddr,
    code: u16,
    reason: &str,
    unknown: Option<Vec<u16>>,
) -> Transmit<SocketAddr> {
    let mut response = Message::response_to(request, Class::Error).with(Attribute::ErrorCode {
        code,
        reason: reason.into(),
    });
    if let Some(kinds) = unknown {
        response = response.with(Attribute::UnknownAttributes(kinds));
    }
    Transmit {
        src: on,
        dst: client,
        payload: response.encode_signed(None, !request.is_classic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::TransactionId;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("lit")
    }

    fn full() -> ServerAddresses {
        ServerAddresses {
            primary: addr("198.18.0.2:3478"),
            alternate: Some(addr("198.18.0.12:3479")),
        }
    }

    fn binding() -> Message {
        Message::new(Class::Request, BINDING, TransactionId([9; 12]))
    }

    fn answer(
        addrs: &ServerAddresses,
        on: &str,
        request: &Message,
    ) -> (Transmit<SocketAddr>, Message) {
        let reply = respond(
            addrs,
            Transport::Udp,
            addr(on),
            addr("203.0.113.5:40000"),
            &request.encode(),
        )
        .expect("answered");
        let msg = Message::decode(&reply.payload).expect("valid response");
        (reply, msg)
    }

    #[test]
    fn plain_request_is_answered_from_where_it_arrived() {
        let (reply, msg) = answer(&full(), "198.18.0.2:3478", &binding());
        assert_eq!(reply.src, addr("198.18.0.2:3478"));
        assert_eq!(reply.dst, addr("203.0.113.5:40000"));
        assert_eq!(msg.class, Class::Success);
        assert_eq!(msg.transaction, binding().transaction);
        assert_eq!(msg.mapped_address(), Some(addr("203.0.113.5:40000")));
        assert_eq!(msg.other_address(), Some(addr("198.18.0.12:3479")));
        assert!(
            msg.attributes
                .contains(&Attribute::ResponseOrigin(addr("198.18.0.2:3478")))
        );
    }

    #[test]
    fn change_request_picks_the_socket_and_other_address_is_relative() {
        let cases = [
            ("198.18.0.2:3478", true, true, "198.18.0.12:3479"),
            ("198.18.0.2:3478", false, true, "198.18.0.2:3479"),
            ("198.18.0.2:3478", true, false, "198.18.0.12:3478"),
            ("198.18.0.12:3479", true, true, "198.18.0.2:3478"),
            ("198.18.0.2:3479", true, false, "198.18.0.12:3479"),
        ];
        for (on, ip, port, from) in cases {
            let req = binding().with(Attribute::ChangeRequest { ip, port });
            let (reply, msg) = answer(&full(), on, &req);
            assert_eq!(reply.src, addr(from), "{on} ip={ip} port={port}");
            assert!(
                msg.attributes
                    .contains(&Attribute::ResponseOrigin(addr(from)))
            );
        }
        let (_, msg) = answer(&full(), "198.18.0.2:3479", &binding());
        assert_eq!(msg.other_address(), Some(addr("198.18.0.12:3478")));
    }

    #[test]
    fn response_port_redirects_only_padded_requests() {
        let unpadded = binding().with(Attribute::ResponsePort(5555));
        let (reply, msg) = answer(&full(), "198.18.0.2:3478", &unpadded);
        assert_eq!(msg.class, Class::Error);
        assert_eq!(
            reply.dst,
            addr("203.0.113.5:40000"),
            "errors go back to the sender"
        );
        let padded = unpadded.with(Attribute::Padding(vec![0; 100]));
        let (reply, msg) = answer(&full(), "198.18.0.2:3478", &padded);
        assert_eq!(msg.class, Class::Success);
        assert_eq!(reply.dst, addr("203.0.113.5:5555"));
    }

    #[test]
    fn answers_are_at_most_a_few_times_the_request() {
        let request = binding().encode();
        let reply = respond(
            &full(),
            Transport::Udp,
            addr("198.18.0.2:3478"),
            addr("203.0.113.5:1"),
            &request,
        )
        .expect("answered");
        assert!(
            reply.payload.len() <= request.len() * 4,
            "{} bytes",
            reply.payload.len()
        );
    }

    #[test]
    fn classic_requests_get_classic_answers() {
        let mut req = binding();
        req.cookie = 0x1234_5678;
        let (reply, msg) = answer(&full(), "198.18.0.2:3478", &req);
        assert!(msg.is_classic());
        assert_eq!(msg.cookie, 0x1234_5678);
        assert!(
            msg.attributes
                .contains(&Attribute::MappedAddress(addr("203.0.113.5:40000")))
        );
        assert!(
            msg.attributes
                .contains(&Attribute::ChangedAddress(addr("198.18.0.12:3479")))
        );
        assert!(
            msg.attributes
                .contains(&Attribute::SourceAddress(reply.src))
        );
        assert!(msg.get(code::XOR_MAPPED_ADDRESS).is_none());
        assert!(msg.get(code::FINGERPRINT).is_none());
    }

    #[test]
    fn change_request_without_alternate_is_an_error_420() {
        let single = ServerAddresses {
            primary: addr("127.0.0.1:3478"),
            alternate: None,
        };
        let req = binding().with(Attribute::ChangeRequest {
            ip: true,
            port: false,
        });
        let reply = respond(
            &single,
            Transport::Udp,
            addr("127.0.0.1:3478"),
            addr("127.0.0.1:1"),
            &req.encode(),
        )
        .expect("answered");
        let msg = Message::decode(&reply.payload).expect("valid");
        assert_eq!(msg.class, Class::Error);
        assert!(
            msg.attributes
                .contains(&Attribute::UnknownAttributes(vec![code::CHANGE_REQUEST]))
        );
        assert_eq!(single.sockets().len(), 1);
        assert_eq!(full().sockets().len(), 4);
    }

    #[test]
    fn unknown_required_attributes_are_refused_and_optional_ones_ignored() {
        let req = binding().with(Attribute::Unknown {
            kind: 0x0042,
            value: vec![1, 2, 3, 4],
        });
        let (_, msg) = answer(&full(), "198.18.0.2:3478", &req);
        assert_eq!(msg.class, Class::Error);
        assert!(
            msg.attributes
                .contains(&Attribute::UnknownAttributes(vec![0x0042]))
        );
        let req = binding().with(Attribute::Unknown {
            kind: 0x8042,
            value: vec![],
        });
        let (_, msg) = answer(&full(), "198.18.0.2:3478", &req);
        assert_eq!(msg.class, Class::Success);
    }

    #[test]
    fn non_requests_and_garbage_are_dropped() {
        let resp = Message::new(Class::Success, BINDING, TransactionId([1; 12]));
        let on = addr("198.18.0.2:3478");
        let client = addr("1.2.3.4:5");
        assert!(respond(&full(), Transport::Udp, on, client, &resp.encode()).is_none());
        assert!(respond(&full(), Transport::Udp, on, client, b"\x00\x01\x00").is_none());
        let other_method = Message::new(Class::Request, 0x003, TransactionId([1; 12]));
        assert!(respond(&full(), Transport::Udp, on, client, &other_method.encode()).is_none());
    }
}
