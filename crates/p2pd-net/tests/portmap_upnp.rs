//! The UPnP mapper against a stand-in IGD on loopback (SSDP on UDP, the
//! description and SOAP on HTTP): a grant and its delete, a taken port,
//! and hostile gateways (an oversized description, malformed SOAP, a
//! private external IP).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pd_net::portmap::{MapEvent, Mapper, Protocol, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// No test waits longer for an event.
const LIMIT: Duration = Duration::from_secs(10);

/// How the stand-in behaves.
#[derive(Clone, Copy)]
struct Igd {
    external_ip: &'static str,
    /// AddPortMapping answers 718 (ConflictInMappingEntry); AddAnyPortMapping
    /// then grants `any_port`.
    port_taken: bool,
    any_port: u16,
    /// The description is over igd-next's 1 MiB limit.
    oversized: bool,
    /// GetExternalIPAddress answers something that is not XML.
    malformed: bool,
    /// Only the first AddPortMapping succeeds: the mapping vanishes.
    renewals_fail: bool,
}

const GOOD: Igd = Igd {
    external_ip: "198.18.1.1",
    port_taken: false,
    any_port: 40000,
    oversized: false,
    malformed: false,
    renewals_fail: false,
};

const DESCRIPTION: &str = "<?xml version=\"1.0\"?>\
<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device>\
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>\
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>\
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>\
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>\
<controlURL>/ctl</controlURL><SCPDURL>/scpd.xml</SCPDURL></service></serviceList>\
</device></deviceList></device></deviceList></device></root>";

fn action(name: &str, inputs: &[&str]) -> String {
    let args: String = inputs
        .iter()
        .map(|a| format!("<argument><name>{a}</name><direction>in</direction></argument>"))
        .collect();
    format!("<action><name>{name}</name><argumentList>{args}</argumentList></action>")
}

fn scpd() -> String {
    let add = [
        "NewRemoteHost",
        "NewExternalPort",
        "NewProtocol",
        "NewInternalPort",
        "NewInternalClient",
        "NewEnabled",
        "NewPortMappingDescription",
        "NewLeaseDuration",
    ];
    let delete = ["NewRemoteHost", "NewExternalPort", "NewProtocol"];
    format!(
        "<?xml version=\"1.0\"?><scpd xmlns=\"urn:schemas-upnp-org:service-1-0\"><actionList>{}{}{}{}</actionList></scpd>",
        action("GetExternalIPAddress", &[]),
        action("AddPortMapping", &add),
        action("AddAnyPortMapping", &add),
        action("DeletePortMapping", &delete),
    )
}

fn soap(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>{inner}</s:Body></s:Envelope>"
    )
}

fn fault(code: u16) -> String {
    soap(&format!(
        "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
         <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode>\
         <errorDescription>refused</errorDescription></UPnPError></detail></s:Fault>"
    ))
}

/// The answer to one HTTP request (head and body as text), and its status.
fn answer(igd: Igd, head: &str, calls: &Mutex<Vec<String>>) -> (u16, String) {
    let ns = "urn:schemas-upnp-org:service:WANIPConnection:1";
    if head.starts_with("GET /rootDesc.xml") {
        if igd.oversized {
            return (200, format!("{DESCRIPTION}<!--{}-->", "x".repeat(2 << 20)));
        }
        return (200, DESCRIPTION.to_owned());
    }
    if head.starts_with("GET /scpd.xml") {
        return (200, scpd());
    }
    let call = [
        "GetExternalIPAddress",
        "AddAnyPortMapping",
        "AddPortMapping",
        "DeletePortMapping",
    ]
    .into_iter()
    .find(|a| head.contains(&format!("#{a}\"")))
    .unwrap_or("unknown");
    let added_before = {
        let mut calls = calls.lock().expect("lock");
        calls.push(call.to_owned());
        calls.iter().filter(|c| *c == "AddPortMapping").count() > 1
    };
    match call {
        "GetExternalIPAddress" if igd.malformed => (200, "<s:Envelope><unclosed".to_owned()),
        "GetExternalIPAddress" => (
            200,
            soap(&format!(
                "<u:GetExternalIPAddressResponse xmlns:u=\"{ns}\"><NewExternalIPAddress>{}</NewExternalIPAddress></u:GetExternalIPAddressResponse>",
                igd.external_ip
            )),
        ),
        "AddPortMapping" if igd.port_taken => (500, fault(718)),
        "AddPortMapping" if igd.renewals_fail && added_before => (500, fault(501)),
        "AddPortMapping" => (
            200,
            soap(&format!("<u:AddPortMappingResponse xmlns:u=\"{ns}\"/>")),
        ),
        "AddAnyPortMapping" => (
            200,
            soap(&format!(
                "<u:AddAnyPortMappingResponse xmlns:u=\"{ns}\"><NewReservedPort>{}</NewReservedPort></u:AddAnyPortMappingResponse>",
                igd.any_port
            )),
        ),
        "DeletePortMapping" => (
            200,
            soap(&format!("<u:DeletePortMappingResponse xmlns:u=\"{ns}\"/>")),
        ),
        _ => (500, fault(401)),
    }
}

/// A stand-in IGD: its SSDP address, the SOAP calls it saw, and where its
/// HTTP server is now (a restart moves it).
struct Stand {
    ssdp: SocketAddr,
    calls: Arc<Mutex<Vec<String>>>,
    location: Arc<Mutex<SocketAddr>>,
    http: tokio::task::JoinHandle<()>,
}

impl Stand {
    /// Starts the stand-in.
    async fn start(igd: Igd) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (http_addr, http) = serve_http(igd, calls.clone()).await;
        let location = Arc::new(Mutex::new(http_addr));
        let ssdp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let ssdp_addr = ssdp.local_addr().expect("addr");
        let at = location.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = ssdp.recv_from(&mut buf).await {
                let http_addr = *at.lock().expect("lock");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
                     ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                     USN: uuid:p2pd-test::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                     LOCATION: http://{http_addr}/rootDesc.xml\r\n\r\n"
                );
                let _ = ssdp.send_to(reply.as_bytes(), from).await;
            }
        });
        Self {
            ssdp: ssdp_addr,
            calls,
            location,
            http,
        }
    }

    /// The gateway restarts: its old HTTP port is closed, it serves on a
    /// new one, with `igd`'s answers.
    async fn restart(&mut self, igd: Igd) {
        self.http.abort();
        let (http_addr, http) = serve_http(igd, self.calls.clone()).await;
        *self.location.lock().expect("lock") = http_addr;
        self.http = http;
    }
}

/// The stand-in's HTTP server, answering as `igd` says.
async fn serve_http(
    igd: Igd,
    seen: Arc<Mutex<Vec<String>>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http_addr = http.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = http.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Head, then the body its Content-Length names.
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&request).into_owned();
                let (status, body) = answer(igd, &text, &seen);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (http_addr, task)
}

/// Starts the stand-in; returns its SSDP address and the SOAP calls it saw.
async fn igd(igd: Igd) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let stand = Stand::start(igd).await;
    (stand.ssdp, stand.calls.clone())
}

fn target(gateway: SocketAddr, lifetime: Duration) -> Target {
    Target {
        gateway,
        internal: "127.0.0.1:4000".parse().expect("literal"),
        lifetime,
    }
}

async fn next(mapper: &mut Mapper) -> MapEvent {
    tokio::time::timeout(LIMIT, mapper.next())
        .await
        .expect("an event in time")
        .expect("an event before the mapper ends")
}

async fn first_event(gateway: SocketAddr) -> (Mapper, MapEvent) {
    let mut mapper = Mapper::start(Protocol::Upnp, target(gateway, Duration::from_secs(7200)));
    let event = tokio::time::timeout(LIMIT, mapper.next())
        .await
        .expect("an event in time")
        .expect("an event before the mapper ends");
    (mapper, event)
}

#[tokio::test]
async fn upnp_maps_the_same_port_and_deletes_it_on_close() {
    let (gateway, calls) = igd(GOOD).await;
    let (mapper, event) = first_event(gateway).await;
    assert_eq!(
        event,
        MapEvent::Mapped {
            external: "198.18.1.1:4000".parse().expect("literal"),
            lifetime: Duration::from_secs(7200),
        }
    );
    mapper.close(Duration::from_secs(2)).await;
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(
        calls,
        [
            "GetExternalIPAddress",
            "AddPortMapping",
            "DeletePortMapping"
        ]
    );
}

#[tokio::test]
async fn a_lease_is_renewed_at_half_its_life_and_a_vanished_one_is_reported_lost() {
    let (gateway, calls) = igd(GOOD).await;
    let mut mapper = Mapper::start(Protocol::Upnp, target(gateway, Duration::from_secs(2)));
    assert!(matches!(next(&mut mapper).await, MapEvent::Mapped { .. }));
    let added = || {
        let calls = calls.lock().expect("lock");
        calls.iter().filter(|c| *c == "AddPortMapping").count()
    };
    let deadline = tokio::time::Instant::now() + LIMIT;
    while added() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no renewals");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(mapper);

    let (gateway, _) = igd(Igd {
        renewals_fail: true,
        ..GOOD
    })
    .await;
    let mut mapper = Mapper::start(Protocol::Upnp, target(gateway, Duration::from_secs(2)));
    assert!(matches!(next(&mut mapper).await, MapEvent::Mapped { .. }));
    let MapEvent::Lost(why) = next(&mut mapper).await else {
        panic!("a mapping that could not be renewed was kept");
    };
    assert!(
        why.contains("ran out") && why.contains("AddPortMapping"),
        "{why}"
    );
}

#[tokio::test]
async fn a_gateway_that_restarts_on_another_port_is_found_again() {
    let mut stand = Stand::start(GOOD).await;
    let mut mapper = Mapper::start(Protocol::Upnp, target(stand.ssdp, Duration::from_secs(2)));
    assert!(matches!(next(&mut mapper).await, MapEvent::Mapped { .. }));
    // Back with a new WAN address, so the mapping it grants again shows.
    stand
        .restart(Igd {
            external_ip: "198.18.1.9",
            ..GOOD
        })
        .await;
    loop {
        match next(&mut mapper).await {
            MapEvent::Mapped { external, .. } => {
                assert_eq!(external, "198.18.1.9:4000".parse().expect("literal"));
                break;
            }
            MapEvent::Lost(why) => println!("lost while the gateway was away: {why}"),
            MapEvent::Failed(why) => panic!("a granted mapping failed: {why}"),
        }
    }
}

#[tokio::test]
async fn a_taken_port_is_mapped_to_any_port_the_gateway_offers() {
    let (gateway, _) = igd(Igd {
        port_taken: true,
        ..GOOD
    })
    .await;
    let (_, event) = first_event(gateway).await;
    let MapEvent::Mapped { external, .. } = event else {
        panic!("not mapped: {event:?}");
    };
    assert_eq!(external, "198.18.1.1:40000".parse().expect("literal"));
}

#[tokio::test]
async fn hostile_gateways_fail_with_a_reason() {
    let cases = [
        (
            Igd {
                oversized: true,
                ..GOOD
            },
            "no gateway",
        ),
        (
            Igd {
                malformed: true,
                ..GOOD
            },
            "GetExternalIPAddress",
        ),
        (
            Igd {
                external_ip: "10.0.0.1",
                ..GOOD
            },
            "private",
        ),
        (
            Igd {
                external_ip: "not an address",
                ..GOOD
            },
            "GetExternalIPAddress",
        ),
        (
            Igd {
                external_ip: "2001:db8::1",
                ..GOOD
            },
            "IPv6",
        ),
        (
            Igd {
                port_taken: true,
                any_port: 0,
                ..GOOD
            },
            "port 0",
        ),
    ];
    for (behaviour, reason) in cases {
        let (gateway, calls) = igd(behaviour).await;
        let (_, event) = first_event(gateway).await;
        let MapEvent::Failed(why) = event else {
            panic!("a hostile gateway mapped: {event:?}");
        };
        assert!(why.contains(reason), "{reason}: {why}");
        let calls = calls.lock().expect("lock").clone();
        assert!(
            behaviour.port_taken || !calls.iter().any(|c| c == "AddPortMapping"),
            "nothing is mapped on a gateway refused before: {calls:?}"
        );
    }
}
