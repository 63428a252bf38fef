//! PCP and NAT-PMP on tokio: `p2pd_proto::portmap`'s client on a UDP
//! socket connected to the gateway, so an ICMP "port unreachable" (no
//! server there) ends the attempt at once instead of after its retries;
//! and the gateway's announcements (a restart), which renew at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use p2pd_proto::portmap::{Client, ClientConfig, Event, Protocol as Wire, Transport};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{DELETE_LIMIT, MapEvent, Protocol, Target};
use crate::bind::{self, BindOptions};

/// Transmissions of the first request before giving up: answers come in
/// milliseconds, and 4 tries end 3.75 s after the start (RFC 6886's 250 ms,
/// doubling).
const TRIES: u32 = 4;
/// The largest answer either protocol sends is 1,100 bytes (PCP's limit).
const MAX_DATAGRAM: usize = 1100;

pub(super) async fn run(
    protocol: Protocol,
    target: Target,
    events: mpsc::Sender<MapEvent>,
    stop: CancellationToken,
) {
    let wire = match protocol {
        Protocol::Pcp => Wire::Pcp,
        _ => Wire::NatPmp,
    };
    let socket = match connected(target) {
        Ok(socket) => socket,
        Err(err) => {
            let why = format!("{protocol} at {}: {err}", target.gateway);
            let _ = events.send(MapEvent::Failed(why)).await;
            return;
        }
    };
    let config = ClientConfig {
        protocol: wire,
        gateway: target.gateway,
        internal: target.internal,
        transport: Transport::Tcp,
        lifetime: target.lifetime,
        tries: TRIES,
        nonce: rand::random(),
    };
    let mut client = Client::new(Instant::now().into_std(), config);
    let announced = announcements(target)
        .inspect_err(|err| tracing::debug!(%err, "gateway announcements not heard"))
        .ok();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut heard = vec![0u8; MAX_DATAGRAM];
    // Once stopped: the delete, for at most DELETE_LIMIT.
    let mut closing: Option<Instant> = None;
    loop {
        while let Some(transmit) = client.poll_transmit() {
            if let Err(err) = socket.send(&transmit.payload).await {
                unreachable_or_log(&mut client, &err);
            }
        }
        while let Some(event) = client.poll_event() {
            let event = match event {
                Event::Mapped { external, lifetime } => MapEvent::Mapped { external, lifetime },
                Event::Failed(err) => MapEvent::Failed(err.to_string()),
                Event::Lost(err) => MapEvent::Lost(err.to_string()),
                Event::Ignored(why) => {
                    tracing::debug!(%protocol, gateway = %target.gateway, %why, "answer ignored");
                    continue;
                }
                Event::Closed => continue,
            };
            if closing.is_none() {
                let _ = events.send(event).await;
            }
        }
        // Failed, or closed (after a delete of what a failure left behind,
        // or on stop).
        if client.is_done() {
            return;
        }
        let wake = match (client.poll_timeout().map(Instant::from_std), closing) {
            (Some(at), Some(end)) => Some(at.min(end)),
            (at, end) => at.or(end),
        };
        let woken = async {
            match wake {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled(), if closing.is_none() => {
                client.close(Instant::now().into_std());
                closing = Some(Instant::now() + DELETE_LIMIT);
            }
            received = socket.recv(&mut buf) => match received {
                Ok(n) => client.handle_datagram(Instant::now().into_std(), target.gateway, &buf[..n]),
                Err(err) => unreachable_or_log(&mut client, &err),
            },
            Some(from) = heard_from(announced.as_ref(), &mut heard) => {
                if from.ip() == target.gateway.ip() {
                    client.handle_announce(Instant::now().into_std());
                }
            }
            () = woken => {
                if closing.is_some_and(|end| Instant::now() >= end) {
                    return;
                }
                client.handle_timeout(Instant::now().into_std());
            }
        }
    }
}

/// Where gateways announce a restart or a new address (RFC 6886 section
/// 3.2.1, RFC 6887 section 14.1.3): the all-hosts group, port 5350, heard
/// on our interface. Several sockets may listen at once (every mapper, every
/// node on the host): each hears every announcement.
const ANNOUNCE_PORT: u16 = 5350;

fn announcements(target: Target) -> io::Result<UdpSocket> {
    let IpAddr::V4(ours) = target.internal.ip() else {
        return Err(io::Error::other("announcements are IPv4"));
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, ANNOUNCE_PORT)).into())?;
    socket.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 1), &ours)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Who sent the next announcement; never, without a socket. A failed read
/// is skipped.
async fn heard_from(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<SocketAddr> {
    match socket {
        Some(socket) => socket.recv_from(buf).await.ok().map(|(_, from)| from),
        None => std::future::pending().await,
    }
}

/// A socket on our IP, connected to the gateway: the gateway maps for the
/// address a request comes from, whatever its port.
fn connected(target: Target) -> io::Result<UdpSocket> {
    let socket = bind::udp(
        SocketAddr::new(target.internal.ip(), 0),
        &BindOptions::default(),
    )
    .map_err(io::Error::other)?;
    let std = socket.into_std()?;
    std.connect(target.gateway)?;
    UdpSocket::from_std(std)
}

fn unreachable_or_log(client: &mut Client, err: &io::Error) {
    if err.kind() == io::ErrorKind::ConnectionRefused {
        client.handle_unreachable(Instant::now().into_std());
    } else {
        tracing::debug!(%err, "port-mapping socket");
    }
}
