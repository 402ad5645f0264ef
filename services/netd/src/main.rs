//! netd: the network service. It drives the virtio network card the
//! kernel's manifest gives it (`pci.assign=netd:1af4:1000`) from user mode
//! with the `virtio-drivers` crate over the PCI transport, and runs the
//! `smoltcp` TCP/IP stack on it: it takes an address by DHCP, answers UDP
//! echo on port 7, and offers TCP to other services: a client grants it a
//! channel region and asks it to listen on a port (`sockets.rs`); the
//! connections' bytes travel through the channel.
//!
//! The device reaches memory only through the kernel's calls: its queues
//! are preservable memory (physical addresses from the kernel), its BARs
//! are mapped with `device_map`, its configuration space is read and
//! written through `device_config_read`/`write`. Its interrupts arrive as
//! messages (MSI-X entry 0, which both queues use, routed by the kernel
//! with `device_irq`): netd waits in `receive_until` for one, a client's
//! message or the stack's next timer. Where no message interrupt can be
//! routed it polls every millisecond.
//!
//! An update that keeps netd's binary resumes it where it stopped, with
//! the card still running: the queues, the buffers and the TCP and UDP
//! sockets are all in its memory, which the kernel hands over with it, and
//! the next poll (its first instruction after the update is its usual
//! loop) picks up whatever arrived meanwhile. A new netd binary means a
//! restart: the card is stopped by the kernel and reset by the new
//! instance (virtio's status reset in `VirtIONet::new`).

#![no_std]
#![no_main]

extern crate alloc;

mod hal;
mod irq;
mod sockets;

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use baton_sockets::LISTEN_LABEL;
use baton_user::message::KERNEL_SENDER;
use baton_user::{Error, Message, PciAddress, syscall};
use core::cell::RefCell;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpListenEndpoint};
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};

baton_user::service!(main);

/// Descriptors per virtqueue.
const QUEUE_SIZE: usize = 16;
/// Bytes per receive buffer: an Ethernet frame and the virtio header.
const BUFFER_BYTES: usize = 2048;
/// A poll this much later than netd meant to poll (its wait's deadline)
/// is worth a log line: an update's blackout, or the kernel holding the
/// CPU (loading a service, staging an image); shorter waits for the CPU
/// behind other services are not reported. The line gives the whole
/// stretch since the previous poll.
const PAUSE_REPORTED_NS: u64 = 20_000_000;
/// The longest netd waits for an interrupt or a client before it polls
/// anyway.
const WAIT_WITH_INTERRUPTS_NS: u64 = 50_000_000;
/// The UDP echo port.
const ECHO_PORT: u16 = 7;
/// The command register and its decoding and bus-master bits.
const COMMAND: u16 = 0x04;
const MEMORY_SPACE: u32 = 1 << 1;
const BUS_MASTER: u32 = 1 << 2;

type Net = VirtIONet<hal::BatonHal, PciTransport, QUEUE_SIZE>;

/// Configuration space through the kernel: only netd's own function is
/// reachable, whatever `device_function` says.
struct KernelConfig {
    device: PciAddress,
}

impl ConfigurationAccess for KernelConfig {
    fn read_word(&self, _device_function: DeviceFunction, register_offset: u8) -> u32 {
        syscall::device_config_read(self.device, u16::from(register_offset)).unwrap_or(u32::MAX)
    }

    fn write_word(&mut self, _device_function: DeviceFunction, register_offset: u8, data: u32) {
        if let Err(error) = syscall::device_config_write(self.device, u16::from(register_offset), data) {
            log::warn!("netd: configuration write at {register_offset:#x} refused: {error}");
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        KernelConfig { device: self.device }
    }
}

/// The virtio card as smoltcp sees it: the tokens share it (smoltcp uses
/// one at a time), so it sits in a `RefCell`.
struct NetDevice {
    net: Rc<RefCell<Net>>,
    /// Frames taken from the card so far.
    frames: u64,
    /// Per listened port, how many more new connections a socket waits
    /// for in this poll; a connection request past that is dropped (the
    /// remote end asks again shortly) rather than reset.
    room: Vec<(u16, usize)>,
    /// Connection requests dropped so far.
    deferred: u64,
}

struct Received {
    net: Rc<RefCell<Net>>,
    buffer: RxBuffer,
}

struct Transmit {
    net: Rc<RefCell<Net>>,
}

impl RxToken for Received {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(self.buffer.packet());
        if let Err(error) = self.net.borrow_mut().recycle_rx_buffer(self.buffer) {
            log::warn!("netd: a receive buffer could not be given back: {error:?}");
        }
        result
    }
}

impl TxToken for Transmit {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, length: usize, f: F) -> R {
        let mut net = self.net.borrow_mut();
        let mut buffer = net.new_tx_buffer(length);
        let result = f(buffer.packet_mut());
        if let Err(error) = net.send(buffer) {
            log::warn!("netd: a frame could not be sent: {error:?}");
        }
        result
    }
}

impl Device for NetDevice {
    type RxToken<'a> = Received;
    type TxToken<'a> = Transmit;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Received, Transmit)> {
        loop {
            let buffer = self.net.borrow_mut().receive().ok()?;
            self.frames += 1;
            let port = baton_sockets::connection_request_port(buffer.packet());
            let room = port.and_then(|port| self.room.iter_mut().find(|(listened, _)| *listened == port));
            match room {
                Some((_, 0)) => {
                    self.deferred += 1;
                    if self.deferred.is_power_of_two() {
                        log::info!("netd: {} connection request(s) deferred: every socket was taken", self.deferred);
                    }
                    if let Err(error) = self.net.borrow_mut().recycle_rx_buffer(buffer) {
                        log::warn!("netd: a receive buffer could not be given back: {error:?}");
                    }
                    continue;
                }
                Some((_, room)) => *room -= 1,
                None => {}
            }
            return Some((Received { net: self.net.clone(), buffer }, Transmit { net: self.net.clone() }));
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Transmit> {
        self.net.borrow().can_send().then(|| Transmit { net: self.net.clone() })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = 1514;
        capabilities.max_burst_size = Some(1);
        capabilities
    }
}

fn now() -> Instant {
    Instant::from_micros((syscall::clock() / 1000) as i64)
}

fn start(device: PciAddress) -> Result<Net, &'static str> {
    // Memory decoding and bus mastering on (the kernel switched them off
    // when a previous driver of this card stopped); the driver crate
    // resets the device itself.
    let command = syscall::device_config_read(device, COMMAND).map_err(|_| "its command register is unreadable")?;
    syscall::device_config_write(device, COMMAND, command | MEMORY_SPACE | BUS_MASTER)
        .map_err(|_| "its command register is not writable")?;
    let mut root = PciRoot::new(KernelConfig { device });
    let function = DeviceFunction { bus: device.bus(), device: device.device(), function: device.function() };
    hal::note_device(device);
    let transport =
        PciTransport::new::<hal::BatonHal, _>(&mut root, function).map_err(|_| "not a virtio PCI device")?;
    Net::new(transport, BUFFER_BYTES).map_err(|_| "the virtio network card did not start")
}

fn main(_argument: u64) -> i32 {
    // netd keeps no explicit state across a restart (a resumed netd keeps
    // everything): whatever a previous instance left is released now.
    let _ = syscall::kho_done();
    let device = match syscall::wait_for_device(0, 5_000_000_000) {
        Ok(device) => device,
        Err(error) => {
            log::warn!("netd: no network card assigned ({error}); nothing to do");
            return 1;
        }
    };
    let net = match start(device) {
        Ok(net) => net,
        Err(why) => {
            log::warn!("netd: {why}");
            return 1;
        }
    };
    let mac = net.mac_address();
    log::info!(
        "netd: virtio-net at {:02x}:{:02x}.{} reset and up, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        device.bus(),
        device.device(),
        device.function(),
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    // Interrupts where the kernel routes them: netd then sleeps until the
    // card (or a client) has something, instead of polling every
    // millisecond.
    let has_interrupts = match irq::route(device, 2) {
        Ok(()) => {
            log::info!("netd: the card interrupts through MSI-X entry 0");
            true
        }
        Err(why) => {
            log::info!("netd: {why}; polling every millisecond");
            false
        }
    };
    let mut card = NetDevice { net: Rc::new(RefCell::new(net)), frames: 0, room: Vec::new(), deferred: 0 };
    let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut interface = Interface::new(config, &mut card, now());
    let mut sockets = SocketSet::new(vec![]);
    let dhcp = sockets.add(dhcpv4::Socket::new());
    let udp_buffers = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1536]);
    let mut echo = udp::Socket::new(udp_buffers(), udp_buffers());
    if echo.bind(IpListenEndpoint { addr: None, port: ECHO_PORT }).is_err() {
        log::warn!("netd: cannot bind UDP port {ECHO_PORT}");
    }
    let echo = sockets.add(echo);
    let mut listeners: Vec<sockets::Listener> = Vec::new();
    let mut echoed: u64 = 0;
    let mut last_poll_ns = syscall::clock();
    // When netd meant to poll again at the latest (it sleeps up to 50 ms
    // on purpose when it has interrupts).
    let mut planned_poll_ns = last_poll_ns;
    loop {
        let timestamp = now();
        // A long time without a poll is an update's blackout (or a long
        // wait for the CPU): say how long, and what the card had taken in
        // meanwhile, which this first poll hands to the stack.
        let poll_ns = syscall::clock();
        let frames_before = card.frames;
        card.room = listeners.iter().map(|listener| (listener.port(), listener.listening(&sockets))).collect();
        interface.poll(timestamp, &mut card, &mut sockets);
        let without_poll_ns = poll_ns.saturating_sub(last_poll_ns);
        if poll_ns.saturating_sub(planned_poll_ns) > PAUSE_REPORTED_NS {
            log::info!(
                "netd: {} us without a poll; the first one after took {} frame(s) from the card",
                without_poll_ns / 1000,
                card.frames - frames_before
            );
        }
        last_poll_ns = poll_ns;
        planned_poll_ns = poll_ns;
        if let Some(event) = sockets.get_mut::<dhcpv4::Socket>(dhcp).poll() {
            match event {
                dhcpv4::Event::Configured(config) => {
                    interface.update_ip_addrs(|addresses| {
                        addresses.clear();
                        let _ = addresses.push(IpCidr::Ipv4(config.address));
                    });
                    if let Some(router) = config.router {
                        let _ = interface.routes_mut().add_default_ipv4_route(router);
                    }
                    log::info!(
                        "netd: DHCP gave {}, gateway {}",
                        config.address,
                        config.router.map_or(alloc::string::String::from("none"), |router| alloc::format!("{router}"))
                    );
                }
                dhcpv4::Event::Deconfigured => {
                    // Also the first event, before any lease: say so only
                    // when an address is lost.
                    if interface.ipv4_addr().is_some() {
                        log::info!("netd: DHCP lease lost");
                    }
                    interface.update_ip_addrs(|addresses| addresses.clear());
                    interface.routes_mut().remove_default_ipv4_route();
                }
            }
        }
        let socket = sockets.get_mut::<udp::Socket>(echo);
        while let Ok((data, meta)) = socket.recv() {
            let data = alloc::vec::Vec::from(data);
            if socket.send_slice(&data, meta.endpoint).is_ok() {
                echoed += 1;
                if echoed.is_power_of_two() {
                    log::info!("netd: {echoed} UDP datagram(s) echoed");
                }
            }
        }
        // Other services' sockets.
        listeners.retain_mut(|listener| match listener.service(&mut sockets) {
            Ok(()) => true,
            Err(why) => {
                log::warn!(
                    "netd: port {} of service {}: {why}; its listener is dropped",
                    listener.port(),
                    listener.client()
                );
                false
            }
        });
        match interface.poll_delay(timestamp, &sockets) {
            Some(delay) if delay.total_micros() == 0 => {}
            delay => {
                // With interrupts: until the card, a client or the stack's
                // next timer (at most 50 ms, a safety net); without: a
                // millisecond.
                let wait_ns = match (has_interrupts, delay) {
                    (false, _) => 1_000_000,
                    (true, Some(delay)) => (delay.total_micros() * 1000).min(WAIT_WITH_INTERRUPTS_NS),
                    (true, None) => WAIT_WITH_INTERRUPTS_NS,
                };
                planned_poll_ns = syscall::clock() + wait_ns;
                if let Ok(message) = syscall::receive_until(planned_poll_ns) {
                    handle(message, &mut listeners, &mut sockets);
                }
            }
        }
    }
}

/// Interrupts the card raised, as the kernel counted them into its
/// messages (its message after an update counts none: it only asks for a
/// look at the card).
static INTERRUPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// A client's request, the card's interrupt, or the kernel's word that a
/// client's grant ended.
fn handle(message: Message, listeners: &mut Vec<sockets::Listener>, sockets: &mut SocketSet<'static>) {
    if message.sender == KERNEL_SENDER && message.label == baton_user::IRQ_LABEL {
        // The next poll looks at the card; count them for the log.
        let before = INTERRUPTS.fetch_add(message.words[2], core::sync::atomic::Ordering::Relaxed);
        let after = before + message.words[2];
        // A line each time the count passes a power of two.
        let crossed = after > before && (before == 0 || after.ilog2() > before.ilog2());
        if crossed {
            log::info!("netd: {after} interrupt(s) from the card so far");
        }
        return;
    }
    if message.sender == KERNEL_SENDER || message.label != LISTEN_LABEL {
        return;
    }
    let mut name_bytes = [0u8; baton_sockets::MAX_CLIENT_NAME];
    let request = baton_sockets::parse_listen(&message.words, &mut name_bytes);
    let (port, connections, is_new_instance) = request.map_or((0, 0, false), |request| {
        (u64::from(request.port), u64::from(request.connections), request.is_new_instance)
    });
    let name = request.and_then(|request| core::str::from_utf8(&name_bytes[..request.name_length]).ok());
    // The client says its name (grants go by name); the kernel says
    // whether it is true.
    let Some(name) = name.filter(|name| syscall::lookup(name) == Ok(message.sender)) else {
        log::warn!("netd: service {} asked to listen under a name that is not its own", message.sender);
        let _ = syscall::reply(message.sender, &Message::new(Error::InvalidArgument.number(), [0; 6]));
        return;
    };
    let is_port_taken = listeners.iter().any(|listener| u64::from(listener.port()) == port);
    let existing =
        listeners.iter_mut().find(|listener| listener.client() == message.sender && u64::from(listener.port()) == port);
    let (status, channel, fresh) = match existing {
        // A resumed client asking after an update, or a restarted one:
        // the same channel, and to a new instance every open connection
        // announced again.
        Some(listener) => {
            if is_new_instance {
                listener.reannounce(sockets);
            }
            (0, listener.channel(), 0)
        }
        None if is_port_taken => {
            log::warn!("netd: TCP port {port} is another service's; '{name}' is refused");
            (Error::AlreadyExists.number(), (0, 0), 0)
        }
        None => match sockets::Listener::new(message.sender, name, port, connections, sockets) {
            Ok(listener) => {
                let channel = listener.channel();
                log::info!(
                    "netd: listening on TCP port {port} for '{}' ({connections} connection(s), grant {})",
                    listener.client_name(),
                    channel.0
                );
                listeners.push(listener);
                (0, channel, 1)
            }
            Err(error) => {
                let error = match error {
                    sockets::ListenError::Kernel(error) => error,
                    sockets::ListenError::Invalid => Error::InvalidArgument,
                };
                log::warn!("netd: cannot listen on TCP port {port} for '{name}': {error}");
                (error.number(), (0, 0), 0)
            }
        },
    };
    let _ = syscall::reply(message.sender, &Message::new(status, [channel.0, channel.1, fresh, 0, 0, 0]));
}
