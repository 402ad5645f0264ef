//! PCI configuration space: finding the functions of an ECAM segment, sizing and assigning their BARs, and walking their capability lists.
//!
//! Everything here goes through [`ConfigAccess`], so the same code reads
//! QEMU's configuration space in the kernel and a recorded one in host
//! tests. Reading is side-effect free except where a function says so:
//! [`size_bars`] writes all-ones into each BAR (with decoding switched off
//! around it) and [`assign_bars`] programs addresses. A kernel that took a
//! running device over from its predecessor must call neither on it: a
//! write to a live BAR moves the device under its driver.
//!
//! Nothing read here is trusted. A configuration space may report any
//! value, so every loop is bounded (buses, devices, functions, the length
//! of a capability list) and every size is checked before it is used.
//!
//! No crate on crates.io does this for a kernel without allocation and
//! with BAR assignment from device-tree windows (`pci_types` models the
//! registers but neither enumerates nor assigns), hence this one.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

mod bars;
pub mod msix;
mod ranges;

pub use bars::{AssignError, Bar, BarKind, Window, Windows, assign_bars, check_programmed, size_bars};
pub use ranges::{HostBridge, RangesError, WindowKind, parse_ranges};

use arrayvec::ArrayVec;
use core::fmt;

/// Bytes of one function's configuration space through ECAM.
pub const FUNCTION_CONFIG_BYTES: u64 = 4096;
/// ECAM bytes per bus (32 devices of 8 functions).
pub const BUS_CONFIG_BYTES: u64 = 1 << 20;

/// Register offsets of the configuration header.
pub mod register {
    /// Vendor ID (low 16 bits) and device ID (high 16 bits).
    pub const ID: u16 = 0x00;
    /// Command (low 16 bits) and status (high 16 bits).
    pub const COMMAND_STATUS: u16 = 0x04;
    /// Revision, programming interface, subclass, class (low to high).
    pub const CLASS: u16 = 0x08;
    /// Cache line size, latency timer, header type, BIST (low to high).
    pub const HEADER: u16 = 0x0c;
    /// The first base address register.
    pub const BAR0: u16 = 0x10;
    /// Bridges: primary, secondary and subordinate bus numbers.
    pub const BRIDGE_BUSES: u16 = 0x18;
    /// Subsystem vendor ID and subsystem ID.
    pub const SUBSYSTEM: u16 = 0x2c;
    /// The first capability's offset (low 8 bits).
    pub const CAPABILITIES: u16 = 0x34;
    /// Interrupt line (low 8 bits) and pin (next 8 bits).
    pub const INTERRUPT: u16 = 0x3c;
}

/// Command register bits.
pub mod command {
    /// Decodes I/O space accesses.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Decodes memory space accesses.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// May master the bus (DMA).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// INTx assertion disabled.
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Status register bit: a capability list exists.
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Header-type bit: the device has functions beyond 0.
const MULTI_FUNCTION: u8 = 1 << 7;
/// A vendor ID that reads as all-ones: no function there.
const NO_VENDOR: u16 = 0xffff;
/// The most capabilities followed in one list (48 would fill the
/// 192 bytes after the header four bytes apiece).
pub const MAX_CAPABILITIES: usize = 48;

/// Capability IDs Baton looks for.
pub mod capability {
    /// Message Signalled Interrupts.
    pub const MSI: u8 = 0x05;
    /// Vendor-specific (virtio's structure locations).
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSI_X: u8 = 0x11;
}

/// A function's address on its segment: bus, device, function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// Bus number.
    pub bus: u8,
    /// Device number (below 32).
    pub device: u8,
    /// Function number (below 8).
    pub function: u8,
}

impl Address {
    /// The function at `bus`, `device`, `function`; `None` past the limits.
    pub fn new(bus: u8, device: u8, function: u8) -> Option<Address> {
        (device < 32 && function < 8).then_some(Address { bus, device, function })
    }

    /// Byte offset of this function's configuration space in an ECAM
    /// region that starts at bus `first_bus`; `None` below it.
    pub fn ecam_offset(self, first_bus: u8) -> Option<u64> {
        let bus = self.bus.checked_sub(first_bus)?;
        Some((u64::from(bus) << 20) | (u64::from(self.device) << 15) | (u64::from(self.function) << 12))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Reads and writes configuration registers. Offsets are 4-byte aligned and
/// below 4096; an implementation may treat anything else as reading
/// all-ones and ignoring writes.
pub trait ConfigAccess {
    /// The 32-bit register at `offset` of function `at`.
    fn read(&self, at: Address, offset: u16) -> u32;
    /// Writes the 32-bit register at `offset` of function `at`.
    fn write(&mut self, at: Address, offset: u16, value: u32);

    /// The 16-bit half at `offset` (2-byte aligned).
    fn read16(&self, at: Address, offset: u16) -> u16 {
        (self.read(at, offset & !3) >> ((offset & 2) * 8)) as u16
    }

    /// The byte at `offset`.
    fn read8(&self, at: Address, offset: u16) -> u8 {
        (self.read(at, offset & !3) >> ((offset & 3) * 8)) as u8
    }

    /// Writes the command register (the status half is written as zeros,
    /// which leaves its write-one-to-clear bits alone).
    fn write_command(&mut self, at: Address, value: u16) {
        self.write(at, register::COMMAND_STATUS, u32::from(value));
    }
}

/// The layout of a function's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// An endpoint: six BARs.
    Endpoint,
    /// A PCI-to-PCI bridge: two BARs and bus numbers.
    Bridge {
        /// The bus directly behind it (0 when firmware left it unset).
        secondary_bus: u8,
        /// The highest bus behind it.
        subordinate_bus: u8,
    },
    /// A CardBus bridge or an unknown layout: left alone.
    Other(u8),
}

/// A capability in a function's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Its ID (see [`capability`]).
    pub id: u8,
    /// Its offset in configuration space.
    pub offset: u8,
}

/// What a function's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub address: Address,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Class code.
    pub class: u8,
    /// Subclass code.
    pub subclass: u8,
    /// Programming interface.
    pub programming_interface: u8,
    /// Revision ID.
    pub revision: u8,
    /// Subsystem vendor ID (endpoints; 0 for bridges).
    pub subsystem_vendor_id: u16,
    /// Subsystem ID (endpoints; 0 for bridges).
    pub subsystem_id: u16,
    /// The header's layout.
    pub header: HeaderKind,
    /// The interrupt pin (0 none, 1..=4 INTA..INTD).
    pub interrupt_pin: u8,
    /// Its capabilities, in list order.
    pub capabilities: ArrayVec<Capability, MAX_CAPABILITIES>,
    /// Whether the capability list loops or points outside the
    /// device-specific area (the list is cut where it went wrong).
    pub has_broken_capabilities: bool,
}

impl Function {
    /// Reads the header of the function at `at`; `None` when nothing is
    /// there. Reads only.
    pub fn read(access: &impl ConfigAccess, at: Address) -> Option<Function> {
        let id = access.read(at, register::ID);
        let vendor_id = id as u16;
        if vendor_id == NO_VENDOR || vendor_id == 0 {
            return None;
        }
        let class = access.read(at, register::CLASS);
        let header_type = access.read8(at, register::HEADER + 2) & !MULTI_FUNCTION;
        let header = match header_type {
            0 => HeaderKind::Endpoint,
            1 => {
                let buses = access.read(at, register::BRIDGE_BUSES);
                HeaderKind::Bridge { secondary_bus: (buses >> 8) as u8, subordinate_bus: (buses >> 16) as u8 }
            }
            other => HeaderKind::Other(other),
        };
        let subsystem = match header {
            HeaderKind::Endpoint => access.read(at, register::SUBSYSTEM),
            _ => 0,
        };
        let (capabilities, has_broken_capabilities) = read_capabilities(access, at);
        Some(Function {
            address: at,
            vendor_id,
            device_id: (id >> 16) as u16,
            class: (class >> 24) as u8,
            subclass: (class >> 16) as u8,
            programming_interface: (class >> 8) as u8,
            revision: class as u8,
            subsystem_vendor_id: subsystem as u16,
            subsystem_id: (subsystem >> 16) as u16,
            header,
            interrupt_pin: access.read8(at, register::INTERRUPT + 1),
            capabilities,
            has_broken_capabilities,
        })
    }

    /// How many BARs its header has.
    pub fn bar_count(&self) -> usize {
        match self.header {
            HeaderKind::Endpoint => 6,
            HeaderKind::Bridge { .. } => 2,
            HeaderKind::Other(_) => 0,
        }
    }

    /// The first capability with `id`.
    pub fn capability(&self, id: u8) -> Option<Capability> {
        self.capabilities.iter().copied().find(|capability| capability.id == id)
    }

    /// Every capability with `id` (virtio lists several vendor ones).
    pub fn capabilities_with(&self, id: u8) -> impl Iterator<Item = Capability> + '_ {
        self.capabilities.iter().copied().filter(move |capability| capability.id == id)
    }
}

/// Follows the capability list; the flag says it was cut short.
fn read_capabilities(access: &impl ConfigAccess, at: Address) -> (ArrayVec<Capability, MAX_CAPABILITIES>, bool) {
    let mut list = ArrayVec::new();
    let status = access.read16(at, register::COMMAND_STATUS + 2);
    if status & STATUS_CAPABILITIES == 0 {
        return (list, false);
    }
    let mut offset = access.read8(at, register::CAPABILITIES) & !3;
    while offset != 0 {
        // Capabilities live after the 64-byte header; a pointer into the
        // header, or a list longer than fits, is broken (or a loop).
        if offset < 0x40 || list.is_full() || list.iter().any(|seen: &Capability| seen.offset == offset) {
            return (list, true);
        }
        let header = access.read(at, u16::from(offset));
        list.push(Capability { id: header as u8, offset });
        offset = ((header >> 8) as u8) & !3;
    }
    (list, false)
}

/// Walks the functions on buses `buses` of a segment, following bridges
/// to the buses behind them, and hands each to `visit` (depth first, in
/// address order). Reads only. Each bus is scanned once however many
/// bridges claim it, and only buses inside `buses` are read.
pub fn enumerate(access: &impl ConfigAccess, buses: core::ops::RangeInclusive<u8>, mut visit: impl FnMut(Function)) {
    let mut scanned = [false; 256];
    let mut pending: ArrayVec<u8, 256> = ArrayVec::new();
    pending.push(*buses.start());
    while let Some(bus) = pending.pop() {
        if !buses.contains(&bus) || core::mem::replace(&mut scanned[usize::from(bus)], true) {
            continue;
        }
        // Buses found behind this one, scanned after it, lowest first.
        let mut behind: ArrayVec<u8, 256> = ArrayVec::new();
        for device in 0..32 {
            for function in 0..8 {
                let Some(at) = Address::new(bus, device, function) else { continue };
                let Some(found) = Function::read(access, at) else {
                    if function == 0 {
                        break;
                    }
                    continue;
                };
                let is_multi_function = access.read8(at, register::HEADER + 2) & MULTI_FUNCTION != 0;
                if let HeaderKind::Bridge { secondary_bus, .. } = found.header
                    && secondary_bus > bus
                    && !behind.is_full()
                {
                    behind.push(secondary_bus);
                }
                visit(found);
                if function == 0 && !is_multi_function {
                    break;
                }
            }
        }
        for secondary in behind.into_iter().rev() {
            if !pending.is_full() {
                pending.push(secondary);
            }
        }
    }
}

/// A short name for a class code, for logs.
pub fn class_name(class: u8, subclass: u8) -> &'static str {
    match (class, subclass) {
        (0x01, 0x00) => "SCSI storage",
        (0x01, 0x01) => "IDE storage",
        (0x01, 0x06) => "SATA storage",
        (0x01, 0x08) => "NVMe storage",
        (0x01, _) => "storage",
        (0x02, 0x00) => "Ethernet",
        (0x02, _) => "network",
        (0x03, _) => "display",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "bridge",
        (0x07, _) => "communication",
        (0x08, _) => "system peripheral",
        (0x0c, 0x03) => "USB",
        (0x0c, 0x05) => "SMBus",
        (0x0c, _) => "serial bus",
        (0x00, _) => "unclassified",
        (0xff, _) => "vendor-specific",
        _ => "other",
    }
}
