//! The services a lab starts on its public hosts (coturn as STUN and as
//! TURN, mosquitto, chrony), each configured inside the lab's directory and
//! waited for until it listens.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{Lab, Service};
use crate::LabError;
use crate::topology::{
    BROKER1_V4, BROKER2_V4, MQTT_PORT, NTP_V4, STUN_ALT_V4, STUN_ALT_V6, STUN_PORT, STUN_V4,
    STUN_V6, TURN_PORT, TURN_USER, TURN_V4,
};

/// How long a service may take to start listening.
const SERVICE_START: Duration = Duration::from_secs(5);

impl Lab {
    pub(super) fn start(&mut self, service: Service) -> Result<(), LabError> {
        let dir = self.dir.display().to_string();
        match service {
            Service::CoturnStun => {
                let db = format!("{dir}/stun.db");
                let mut args = vec![
                    "-n",
                    "--stun-only",
                    "--no-cli",
                    "--no-tls",
                    "--no-dtls",
                    "--log-file",
                    "stdout",
                    "--simple-log",
                    "--listening-port",
                    "3478",
                    "--alt-listening-port",
                    "3479",
                    "--db",
                    &db,
                ];
                let ips = [
                    STUN_V4.to_string(),
                    STUN_ALT_V4.to_string(),
                    STUN_V6.to_string(),
                    STUN_ALT_V6.to_string(),
                ];
                for ip in &ips {
                    args.extend(["--listening-ip", ip.as_str()]);
                }
                let pid_file = format!("{dir}/stun.pid");
                args.extend(["--pidfile", &pid_file]);
                self.spawn("coturn-stun", "stun", "turnserver", &args)?;
                for ip in [STUN_V4, STUN_ALT_V4] {
                    for port in [STUN_PORT, STUN_PORT + 1] {
                        let addr = SocketAddr::new(ip.into(), port);
                        self.wait_listening("stun", false, addr, SERVICE_START)?;
                        self.wait_listening("stun", true, addr, SERVICE_START)?;
                    }
                }
            }
            Service::Turn => {
                let (user, password, realm) = TURN_USER;
                let credential = format!("{user}:{password}");
                let ip = TURN_V4.to_string();
                let port = TURN_PORT.to_string();
                let db = format!("{dir}/turn.db");
                let pid_file = format!("{dir}/turn.pid");
                let args = [
                    "-n",
                    "--no-cli",
                    "--no-tls",
                    "--no-dtls",
                    "--log-file",
                    "stdout",
                    "--simple-log",
                    // Session events, for tests that count allocations.
                    "--verbose",
                    "--listening-ip",
                    &ip,
                    "--relay-ip",
                    &ip,
                    "--listening-port",
                    &port,
                    "--lt-cred-mech",
                    "--user",
                    &credential,
                    "--realm",
                    realm,
                    "--db",
                    &db,
                    "--pidfile",
                    &pid_file,
                ];
                self.spawn("coturn-turn", "turn", "turnserver", &args)?;
                let addr = SocketAddr::new(TURN_V4.into(), TURN_PORT);
                self.wait_listening("turn", false, addr, SERVICE_START)?;
            }
            Service::Brokers => {
                for (n, ip) in [(1, BROKER1_V4), (2, BROKER2_V4)] {
                    let conf = self.dir.join(format!("mosquitto{n}.conf"));
                    write_file(
                        &conf,
                        &format!(
                            "listener {MQTT_PORT} {ip}\nallow_anonymous true\npersistence false\n"
                        ),
                    )?;
                    let conf = conf.display().to_string();
                    self.spawn(&format!("broker{n}"), "broker", "mosquitto", &["-c", &conf])?;
                    let addr = SocketAddr::new(ip.into(), MQTT_PORT);
                    self.wait_listening("broker", true, addr, SERVICE_START)?;
                }
            }
            Service::Ntp => {
                let conf = self.dir.join("chrony.conf");
                write_file(
                    &conf,
                    &format!(
                        "local stratum 1\nallow all\nport 123\ncmdport 0\nbindaddress {NTP_V4}\n\
                         pidfile {dir}/chrony.pid\ndriftfile {dir}/chrony.drift\n"
                    ),
                )?;
                let conf = conf.display().to_string();
                self.spawn(
                    "ntp",
                    "ntp",
                    "chronyd",
                    &["-x", "-d", "-u", "root", "-f", &conf],
                )?;
                let addr = SocketAddr::new(NTP_V4.into(), 123);
                self.wait_listening("ntp", false, addr, SERVICE_START)?;
            }
        }
        Ok(())
    }
}

pub(super) fn write_file(path: &Path, text: &str) -> Result<(), LabError> {
    fs::write(path, text).map_err(|source| LabError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}
