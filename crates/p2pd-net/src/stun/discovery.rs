//! NAT behaviour discovery (RFC 5780 section 4) and port-delta detection
//! for one local address: the tokio driver of
//! [`p2pd_proto::stun::probe::NatProbe`], which holds the whole plan. The
//! driver opens the sockets the plan names, sends its datagrams, feeds it
//! what arrives and its timeouts, and returns its verdict.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;

use p2pd_proto::stun::probe::{NatProbe, ProbeEvent, SocketId};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use p2pd_proto::stun::probe::{DiscoveryOptions, NatReport};

use super::client::StunError;
use crate::bind::{self, BindError, BindOptions};

/// Lets one delta series run at a time among the discoveries that share
/// it: two interfaces may sit behind one NAT, and interleaved mappings
/// would hide its counter. Whoever runs several discoveries at once (the
/// `p2pd nat` command, the node) owns one and hands clones to each; there
/// is no process-wide lock.
#[derive(Debug, Clone, Default)]
pub struct DeltaSeriesGate(Arc<Mutex<()>>);

/// Discovers the NAT in front of `local_ip` using `servers` (they should
/// support RFC 5780; without OTHER-ADDRESS only the external address and
/// delta are measured). `scope_id` is needed for link-local IPv6. Its
/// delta series waits for no other discovery: use [`discover_gated`] to
/// run several at once. Cancel-safe: dropping it closes its sockets.
pub async fn discover(
    local_ip: IpAddr,
    scope_id: u32,
    servers: &[SocketAddr],
    options: &DiscoveryOptions,
) -> Result<NatReport, StunError> {
    discover_gated(
        local_ip,
        scope_id,
        servers,
        options,
        &DeltaSeriesGate::default(),
    )
    .await
}

/// [`discover`], with the delta series run only while holding `gate`.
/// Cancel-safe: dropping it closes its sockets and releases the gate.
pub async fn discover_gated(
    local_ip: IpAddr,
    scope_id: u32,
    servers: &[SocketAddr],
    options: &DiscoveryOptions,
    gate: &DeltaSeriesGate,
) -> Result<NatReport, StunError> {
    let mut probe = NatProbe::new(
        Instant::now().into_std(),
        local_ip,
        servers,
        *options,
        rand::random(),
    );
    let mut sockets: BTreeMap<SocketId, UdpSocket> = BTreeMap::new();
    // Held from the delta series' start to the verdict.
    let mut _turn = None;
    let mut bind_error: Option<BindError> = None;
    let mut buf = vec![0u8; 2048];
    loop {
        if let Some(transmit) = probe.poll_transmit() {
            let Some(socket) = sockets.get(&transmit.src) else {
                continue;
            };
            if let Err(err) = socket.send_to(&transmit.payload, transmit.dst).await {
                tracing::debug!(%err, socket = %transmit.src, dst = %transmit.dst, "stun send failed");
            }
            continue;
        }
        if let Some(event) = probe.poll_event() {
            match event {
                ProbeEvent::OpenSocket { socket, port } => {
                    let now = Instant::now().into_std();
                    match udp(local_ip, scope_id, port) {
                        Ok((bound, port)) => {
                            sockets.insert(socket, bound);
                            probe.handle_socket_bound(now, socket, port);
                        }
                        Err(err) => {
                            tracing::debug!(%err, %socket, "stun socket bind failed");
                            bind_error = Some(err);
                            probe.handle_bind_failed(now, socket);
                        }
                    }
                }
                ProbeEvent::CloseSocket { socket } => {
                    sockets.remove(&socket);
                }
                ProbeEvent::DeltaSeriesReady => {
                    _turn = Some(gate.0.lock().await);
                    probe.handle_delta_turn(Instant::now().into_std());
                }
                ProbeEvent::Done(report) => return Ok(report),
                ProbeEvent::Failed { .. } => {
                    let err = bind_error
                        .take()
                        .expect("invariant: the probe fails only on a bind failure");
                    return Err(err.into());
                }
            }
            continue;
        }
        let (wake, reason) = probe
            .poll_timeout()
            .expect("invariant: an unfinished probe with no event has a deadline");
        tokio::select! {
            (socket, received) = recv_any(&sockets, &mut buf) => match received {
                Ok((n, from)) => {
                    probe.handle_input(Instant::now().into_std(), socket, from, &buf[..n]);
                }
                Err(err) => tracing::debug!(%err, %socket, "stun receive error"),
            },
            () = tokio::time::sleep_until(Instant::from_std(wake)) => {
                tracing::trace!(?reason, "discovery timeout");
                probe.handle_timeout(Instant::now().into_std());
            }
        }
    }
}

/// The next datagram on any of `sockets`. Cancel-safe: nothing is taken
/// from a socket unless it is returned.
async fn recv_any(
    sockets: &BTreeMap<SocketId, UdpSocket>,
    buf: &mut [u8],
) -> (SocketId, io::Result<(usize, SocketAddr)>) {
    poll_fn(|cx| {
        for (id, socket) in sockets {
            let mut read = ReadBuf::new(buf);
            match socket.poll_recv_from(cx, &mut read) {
                Poll::Ready(Ok(from)) => {
                    return Poll::Ready((*id, Ok((read.filled().len(), from))));
                }
                Poll::Ready(Err(err)) => return Poll::Ready((*id, Err(err))),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// A UDP socket on `ip` at `port` (0: any), and the port it got.
fn udp(ip: IpAddr, scope_id: u32, port: u16) -> Result<(UdpSocket, u16), BindError> {
    let local = match ip {
        IpAddr::V4(v4) => SocketAddr::new(v4.into(), port),
        IpAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope_id)),
    };
    let socket = bind::udp(local, &BindOptions::default())?;
    let port = socket.local_addr().map_or(port, |a| a.port());
    Ok((socket, port))
}
