//! The guest's network for `run` and `demo`: a virtio network card on
//! QEMU's user networking with `restrict=on` (the guest reaches nothing
//! outside QEMU, not even DNS), host forwards bound to 127.0.0.1 only, and
//! netd given the card on the kernel command line.
//!
//! The forwards sit at fixed offsets from one base: the echo service at
//! the base (TCP and UDP, guest port 7), Redis one above it (guest port
//! 6379), update delivery two above (guest port 7777). Without
//! `--host-port-base` they are 7007, 6379 and 7777.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

/// `--net`: whether the guest has a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetMode {
    /// A virtio network card on restricted user networking, with forwards
    /// on 127.0.0.1.
    On,
    /// No network card.
    Off,
}

/// `--net` and `--host-port-base` (run, demo).
#[derive(Args, Debug, Clone)]
pub struct Network {
    /// The guest's network: a virtio card on QEMU user networking with
    /// restrict=on and forwards on 127.0.0.1 (`on`), or none (`off`).
    #[arg(long, value_enum, default_value_t = NetMode::On)]
    pub net: NetMode,
    /// Moves every host forward to fixed offsets from this port: echo at
    /// N, Redis at N+1, update delivery at N+2 (default 7007, 6379, 7777).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=65533))]
    pub host_port_base: Option<u16>,
}

/// The host ports forwarded to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Echo (TCP and UDP) to guest port 7.
    pub echo: u16,
    /// Redis to guest port 6379.
    pub redis: u16,
    /// Update delivery to guest port 7777.
    pub update: u16,
}

/// The guest ports the forwards reach.
const GUEST_ECHO: u16 = 7;
const GUEST_REDIS: u16 = 6379;
const GUEST_UPDATE: u16 = 7777;

/// What the kernel command line gets so netd drives the card.
pub const NETD_ASSIGNMENT: &str = "pci.assign=netd:1af4:1000";

impl Ports {
    /// The defaults, or fixed offsets from `base`.
    pub fn from_base(base: Option<u16>) -> Ports {
        match base {
            None => Ports { echo: 7007, redis: 6379, update: 7777 },
            Some(base) => Ports { echo: base, redis: base + 1, update: base + 2 },
        }
    }
}

impl Network {
    /// Whether the guest gets a network: `--net on`, unless `extra_args`
    /// (`--qemu-args`) bring their own.
    pub fn is_on(&self, extra_args: &[String]) -> bool {
        self.net == NetMode::On && !extra_args.iter().any(|argument| is_network_argument(argument))
    }

    /// The forwarded ports.
    pub fn ports(&self) -> Ports {
        Ports::from_base(self.host_port_base)
    }

    /// QEMU's arguments for the card and its forwards, after checking that
    /// no port is taken on 127.0.0.1 (QEMU's own error for that names no
    /// way out).
    pub fn qemu_args(&self) -> Result<Vec<String>> {
        let ports = self.ports();
        check_free(ports)?;
        Ok(qemu_args(ports))
    }

    /// The command line with netd given the card (unless it already
    /// assigns devices).
    pub fn command_line(command_line: &str) -> String {
        if command_line.split_whitespace().any(|word| word.starts_with("pci.assign=")) {
            command_line.to_string()
        } else {
            format!("{command_line} {NETD_ASSIGNMENT}").trim().to_string()
        }
    }
}

fn is_network_argument(argument: &str) -> bool {
    matches!(argument, "-netdev" | "-nic" | "-net")
}

/// The arguments for `ports`: restricted user networking, every forward
/// bound to 127.0.0.1.
pub fn qemu_args(ports: Ports) -> Vec<String> {
    let forwards = [
        format!("hostfwd=tcp:127.0.0.1:{}-:{GUEST_ECHO}", ports.echo),
        format!("hostfwd=udp:127.0.0.1:{}-:{GUEST_ECHO}", ports.echo),
        format!("hostfwd=tcp:127.0.0.1:{}-:{GUEST_REDIS}", ports.redis),
        format!("hostfwd=tcp:127.0.0.1:{}-:{GUEST_UPDATE}", ports.update),
    ];
    vec![
        "-netdev".to_string(),
        format!("user,id=net0,restrict=on,{}", forwards.join(",")),
        "-device".to_string(),
        "virtio-net-pci,netdev=net0".to_string(),
    ]
}

/// Fails, naming the ways out, when a forwarded port is taken on 127.0.0.1.
fn check_free(ports: Ports) -> Result<()> {
    let taken = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_err();
    let udp_taken = std::net::UdpSocket::bind(("127.0.0.1", ports.echo)).is_err();
    for (port, what) in [(ports.echo, "echo"), (ports.redis, "Redis"), (ports.update, "update delivery")] {
        if taken(port) || (port == ports.echo && udp_taken) {
            bail!(
                "port {port} on 127.0.0.1 (the {what} forward) is in use: pass --host-port-base N to move every \
                 forward, or --net off"
            );
        }
    }
    Ok(())
}

/// How to reach the guest, for the start of a run.
pub fn describe(ports: Ports) -> String {
    format!(
        "network: virtio-net on restricted user networking; TCP echo `nc 127.0.0.1 {}`, Redis 127.0.0.1:{}, \
         update delivery 127.0.0.1:{} (host forwards on 127.0.0.1 only)",
        ports.echo, ports.redis, ports.update
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ports_and_a_base() {
        assert_eq!(Ports::from_base(None), Ports { echo: 7007, redis: 6379, update: 7777 });
        assert_eq!(Ports::from_base(Some(20000)), Ports { echo: 20000, redis: 20001, update: 20002 });
    }

    #[test]
    fn every_forward_is_bound_to_localhost_and_the_network_is_restricted() {
        let args = qemu_args(Ports::from_base(Some(30000)));
        assert_eq!(args[0], "-netdev");
        let netdev = &args[1];
        // Nothing but the restricted network and its forwards, each bound
        // to 127.0.0.1.
        let parts: Vec<&str> = netdev.split(',').collect();
        assert_eq!(parts[..3], ["user", "id=net0", "restrict=on"], "{netdev}");
        assert_eq!(
            parts[3..],
            [
                "hostfwd=tcp:127.0.0.1:30000-:7",
                "hostfwd=udp:127.0.0.1:30000-:7",
                "hostfwd=tcp:127.0.0.1:30001-:6379",
                "hostfwd=tcp:127.0.0.1:30002-:7777"
            ]
        );
        assert_eq!(args[2..], ["-device", "virtio-net-pci,netdev=net0"]);
    }

    #[test]
    fn netd_gets_the_card_unless_the_command_line_assigns_devices() {
        assert_eq!(Network::command_line(""), NETD_ASSIGNMENT);
        assert_eq!(Network::command_line("demo.updates=2"), format!("demo.updates=2 {NETD_ASSIGNMENT}"));
        assert_eq!(Network::command_line("pci.assign=probe:1af4:1000"), "pci.assign=probe:1af4:1000");
    }

    #[test]
    fn a_taken_port_is_named_with_the_way_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let error = check_free(Ports { echo: port, redis: port, update: port }).unwrap_err().to_string();
        assert!(error.contains(&format!("port {port}")) && error.contains("--host-port-base"), "{error}");
    }

    #[test]
    fn qemu_arguments_with_their_own_network_win() {
        let network = Network { net: NetMode::On, host_port_base: None };
        assert!(network.is_on(&[]));
        assert!(!network.is_on(&["-netdev".to_string(), "user,id=x".to_string()]));
        assert!(!Network { net: NetMode::Off, host_port_base: None }.is_on(&[]));
    }
}
