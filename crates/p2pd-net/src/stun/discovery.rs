//! NAT behaviour discovery (RFC 5780 section 4) and port-delta detection,
//! for one local address.
//!
//! ```text
//!  1. from socket L0, Binding to every server at once  -> external address, RTT,
//!                                                        disagreements, OTHER-ADDRESS
//!  2. mapping:   L0 -> other IP, same port; then other IP and port   (positive tests)
//!     filtering: fresh L1 -> CHANGE-REQUEST ip+port                  (concurrently,
//!                fresh L2 -> CHANGE-REQUEST port                       short deadlines)
//!  3. delta:     fresh sockets one after another -> (local, mapped) ports
//! ```
//!
//! Each filtering test has its own fresh socket: an earlier packet to the
//! other IP would open an address-dependent filter and make a restricted NAT
//! look full-cone. Tests expecting no answer get a deadline of a few RTTs,
//! not RFC 8489's 39.5 s.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pd_proto::stun::behavior::{
    Delta, DeltaType, Filtering, Mapping, NatType, PortPair, classify, classify_delta,
};
use p2pd_proto::stun::transaction::RetransmitPolicy;
use tokio::net::UdpSocket;

use super::client::{BindingResponse, Query, StunError, query, query_all};
use crate::bind::{self, BindOptions};

/// Held while a delta series runs, so concurrent discoveries (several
/// interfaces behind one NAT) do not interleave their mappings.
static DELTA_SERIES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Timing of discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// First retransmission timeout.
    pub rto: Duration,
    /// How long servers get to answer the first request.
    pub first_answer: Duration,
    /// Bounds of the wait for tests that may rightly get no answer.
    pub negative_min: Duration,
    /// See `negative_min`.
    pub negative_max: Duration,
    /// Mappings in the delta series.
    pub delta_samples: usize,
}

impl Default for DiscoveryOptions {
    /// Fast on a LAN, patient enough for a far server: retransmit after
    /// 100 ms (then 200, 400...), give servers 1.5 s, wait 8 RTTs (at least
    /// 150 ms, at most 1 s) for an answer that may not come, 6 mappings.
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(100),
            first_answer: Duration::from_millis(1500),
            negative_min: Duration::from_millis(150),
            negative_max: Duration::from_secs(1),
            delta_samples: 6,
        }
    }
}

/// What discovery learnt about one local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// The local IP tested.
    pub local_ip: IpAddr,
    /// The external address the first answering server saw.
    pub external: Option<SocketAddr>,
    /// The NAT type.
    pub nat: NatType,
    /// Mapping behaviour, when measured.
    pub mapping: Option<Mapping>,
    /// Filtering behaviour, when measured.
    pub filtering: Option<Filtering>,
    /// Port allocation.
    pub delta: Delta,
    /// Servers whose external IP differs from the first answer's (a
    /// multi-homed NAT, or a lying server).
    pub disagreements: Vec<(SocketAddr, SocketAddr)>,
    /// Servers that did not answer.
    pub unreachable: Vec<SocketAddr>,
    /// Datagrams sent in all.
    pub requests: u32,
    /// Time taken.
    pub elapsed: Duration,
}

/// Discovers the NAT in front of `local_ip` using `servers` (they should
/// support RFC 5780; without OTHER-ADDRESS only the external address and
/// delta are measured). `scope_id` is needed for link-local IPv6.
pub async fn discover(
    local_ip: IpAddr,
    scope_id: u32,
    servers: &[SocketAddr],
    options: &DiscoveryOptions,
) -> Result<NatReport, StunError> {
    let started = Instant::now();
    let mut report = NatReport {
        local_ip,
        external: None,
        nat: NatType::Blocked,
        mapping: None,
        filtering: None,
        delta: Delta::NOT_APPLICABLE,
        disagreements: Vec::new(),
        unreachable: Vec::new(),
        requests: 0,
        elapsed: Duration::ZERO,
    };
    let local = local_addr(local_ip, scope_id);
    let servers: Vec<SocketAddr> = servers
        .iter()
        .copied()
        .filter(|s| s.is_ipv4() == local_ip.is_ipv4())
        .collect();
    if servers.is_empty() {
        report.elapsed = started.elapsed();
        return Ok(report);
    }

    // 1. Every server at once; stop a little after the first answer.
    let l0 = udp(local)?;
    let queries: Vec<Query> = servers.iter().copied().map(Query::plain).collect();
    let first_policy = RetransmitPolicy::bounded(options.rto, options.first_answer);
    let grace_after = |rtt: Duration| grace(rtt, options);
    let (answers, sent) = query_all(&l0, &queries, first_policy, Some(&grace_after)).await;
    report.requests += sent;
    // The behaviour tests need OTHER-ADDRESS: prefer the first answer that
    // has one (of the right family, distinct from the server itself).
    let answered: Vec<(SocketAddr, BindingResponse)> = servers
        .iter()
        .zip(answers)
        .filter_map(|(server, answer)| match answer {
            Ok(response) => Some((*server, response)),
            Err(_) => {
                report.unreachable.push(*server);
                None
            }
        })
        .collect();
    let usable = |r: &BindingResponse| {
        r.other.is_some_and(|o| {
            o.is_ipv4() == r.from.is_ipv4() && o.ip() != r.from.ip() && o.port() != r.from.port()
        })
    };
    let first = answered
        .iter()
        .find(|(_, r)| usable(r))
        .or_else(|| answered.first())
        .map(|(_, r)| r.clone());
    if let Some(first) = &first {
        for (server, response) in &answered {
            if response.mapped.ip() != first.mapped.ip() {
                report.disagreements.push((*server, response.mapped));
            }
        }
    }
    let Some(first) = first else {
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    report.external = Some(first.mapped);
    let translated = first.mapped.ip() != local_ip;
    let primary = first.from;
    let negative = RetransmitPolicy::bounded(
        (first.rtt * 2).max(Duration::from_millis(20)),
        (first.rtt * 8).clamp(options.negative_min, options.negative_max),
    );
    let positive = RetransmitPolicy::bounded(options.rto, options.first_answer);

    // 2. Mapping and filtering, concurrently; both need OTHER-ADDRESS.
    let other = first.other.filter(|_| usable(&first));
    let Some(other) = other else {
        report.nat = if translated {
            NatType::Symmetric
        } else {
            NatType::UdpFirewall
        };
        report.delta = if translated {
            delta(local, primary, options, positive, &mut report.requests).await?
        } else {
            Delta::NOT_APPLICABLE
        };
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    let mapping_test = async {
        if !translated {
            return (None, 0);
        }
        let second = Query::plain(SocketAddr::new(other.ip(), primary.port()));
        let (m2, sent2) = query(&l0, second, positive).await;
        let Ok(m2) = m2 else {
            return (None, sent2);
        };
        if m2.mapped == first.mapped {
            return (Some(Mapping::EndpointIndependent), sent2);
        }
        let (m3, sent3) = query(&l0, Query::plain(other), positive).await;
        let mapping = match m3 {
            Ok(m3) if m3.mapped == m2.mapped => Mapping::AddressDependent,
            Ok(_) | Err(_) => Mapping::AddressAndPortDependent,
        };
        (Some(mapping), sent2 + sent3)
    };
    let filtering_test = async {
        let (l1, l2) = (udp(local)?, udp(local)?);
        let change_both = Query {
            server: primary,
            change: Some((true, true)),
        };
        let change_port = Query {
            server: primary,
            change: Some((false, true)),
        };
        let ((both, sent1), (port, sent2)) = tokio::join!(
            query(&l1, change_both, negative),
            query(&l2, change_port, negative)
        );
        // A server that ignores CHANGE-REQUEST answers from where it was
        // asked; that proves nothing about the filter, which stays unknown.
        let ignored = both.as_ref().is_ok_and(|r| r.from == primary)
            || port.as_ref().is_ok_and(|r| r.from == primary);
        let filtering = if ignored {
            None
        } else if both.is_ok_and(|r| r.from.ip() != primary.ip()) {
            Some(Filtering::EndpointIndependent)
        } else if port.is_ok_and(|r| r.from.port() != primary.port()) {
            Some(Filtering::AddressDependent)
        } else {
            Some(Filtering::AddressAndPortDependent)
        };
        Ok::<_, StunError>((filtering, sent1 + sent2))
    };
    let ((mapping, sent_m), filtering) = tokio::join!(mapping_test, filtering_test);
    let (filtering, sent_f) = filtering?;
    report.requests += sent_m + sent_f;
    report.mapping = mapping;
    report.filtering = filtering;
    // Unknown behaviour is taken as the hardest case, as punching needs: a
    // mapping test that got no answer counts as destination-dependent, an
    // untested filter as address-and-port-dependent.
    report.nat = classify(
        Some(translated),
        mapping.unwrap_or(Mapping::AddressAndPortDependent),
        filtering.unwrap_or(Filtering::AddressAndPortDependent),
    );

    // 3. Port allocation, after everything else so no other test's mapping
    // lands between two of the series.
    if translated {
        report.delta = delta(local, primary, options, positive, &mut report.requests).await?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Measures the delta: mappings of fresh sockets on unrelated ports, and,
/// if they show no pattern, of consecutive local ports.
async fn delta(
    local: SocketAddr,
    server: SocketAddr,
    options: &DiscoveryOptions,
    policy: RetransmitPolicy,
    requests: &mut u32,
) -> Result<Delta, StunError> {
    let _one_at_a_time = DELTA_SERIES.lock().await;
    let mut spread: Vec<PortPair> = Vec::new();
    for _ in 0..options.delta_samples {
        let socket = udp(local)?;
        if let Some(pair) = mapping_of(&socket, server, policy, requests).await {
            spread.push(pair);
        }
    }
    let decided = classify_delta(&spread, &[]);
    if decided.kind != DeltaType::Random {
        return Ok(decided);
    }
    let base: u16 = rand::random_range(20_000..60_000);
    let mut consecutive = Vec::new();
    for n in 0..options.delta_samples as u16 {
        let mut at = local;
        at.set_port(base + n);
        // A port in use here breaks the sequence; skip it.
        let Ok(socket) = udp(at) else {
            continue;
        };
        if let Some(pair) = mapping_of(&socket, server, policy, requests).await {
            consecutive.push(pair);
        }
    }
    Ok(classify_delta(&spread, &consecutive))
}

async fn mapping_of(
    socket: &UdpSocket,
    server: SocketAddr,
    policy: RetransmitPolicy,
    requests: &mut u32,
) -> Option<PortPair> {
    let local = socket.local_addr().ok()?.port();
    let (answer, sent) = query(socket, Query::plain(server), policy).await;
    *requests += sent;
    answer.ok().map(|r| (local, r.mapped.port()))
}

/// How long to wait for more servers once one has answered.
fn grace(first_rtt: Duration, options: &DiscoveryOptions) -> Duration {
    (first_rtt * 4 + Duration::from_millis(100)).min(options.first_answer)
}

fn udp(local: SocketAddr) -> Result<UdpSocket, StunError> {
    Ok(bind::udp(local, &BindOptions::default())?)
}

fn local_addr(ip: IpAddr, scope_id: u32) -> SocketAddr {
    match ip {
        IpAddr::V4(v4) => SocketAddr::new(v4.into(), 0),
        IpAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(v6, 0, 0, scope_id)),
    }
}
