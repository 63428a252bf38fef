//! What a NAT does to TCP, measured with STUN over TCP: its mapping
//! (RFC 5780 tests II and III from one local port, needing the server's
//! OTHER-ADDRESS) and its port delta (fresh connections one after another,
//! classified as the UDP series are). Hole punching predicts TCP ports
//! from this, and a NAT may treat TCP differently from UDP.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pd_proto::stun::behavior::{Delta, Mapping, PortPair, classify_delta};

use super::client::{StunError, query_tcp_from};

/// Connections in the delta series: as many as the UDP series makes.
pub const DELTA_SAMPLES: usize = p2pd_proto::stun::probe::DEFAULT_DELTA_SAMPLES;
/// Each connection's connect and answer together.
const EACH: Duration = Duration::from_secs(2);

/// What the tests found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpReport {
    /// The external address of the first connection.
    pub external: SocketAddr,
    /// The mapping behaviour; `None` when the server has no usable
    /// OTHER-ADDRESS.
    pub mapping: Option<Mapping>,
    /// The port allocation over TCP.
    pub delta: Delta,
    /// (local, mapped) port of each connection of the series.
    pub series: Vec<PortPair>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Tests TCP from `local_ip` against `server`. Connections are made one
/// after another, so the NAT's counter moves only for ours.
pub async fn discover_tcp(local_ip: IpAddr, server: SocketAddr) -> Result<TcpReport, StunError> {
    let started = Instant::now();
    let (first, bound) = query_tcp_from(SocketAddr::new(local_ip, 0), server, EACH).await?;
    let mut series = vec![(bound.port(), first.mapped.port())];
    // Mapping: the same local port toward the other address, then toward
    // the primary IP on the other port.
    let mapping = match first.usable_other() {
        Some(other) => {
            let (to_other, _) = query_tcp_from(bound, other, EACH).await?;
            if to_other.mapped == first.mapped {
                Some(Mapping::EndpointIndependent)
            } else {
                let other_port = SocketAddr::new(server.ip(), other.port());
                let (to_port, _) = query_tcp_from(bound, other_port, EACH).await?;
                Some(if to_port.mapped == first.mapped {
                    Mapping::AddressDependent
                } else {
                    Mapping::AddressAndPortDependent
                })
            }
        }
        None => None,
    };
    for _ in 1..DELTA_SAMPLES {
        let (response, bound) = query_tcp_from(SocketAddr::new(local_ip, 0), server, EACH).await?;
        series.push((bound.port(), response.mapped.port()));
    }
    Ok(TcpReport {
        external: first.mapped,
        mapping,
        delta: classify_delta(&series, &[]),
        series,
        elapsed: started.elapsed(),
    })
}
