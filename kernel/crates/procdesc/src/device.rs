//! Device records: the PCI functions a resumed driver keeps driving through an update, with the BARs the previous kernel placed.
//!
//! A record is what the next kernel needs to give the device back to its
//! driver without touching it: which function (bus, device, function),
//! what its header said (vendor and device ID, to notice a different card
//! behind the same address), and each BAR as it was programmed (bus
//! address, the CPU address the host bridge translates it to, size). The
//! next kernel never sizes these BARs again (writing all-ones to a live
//! BAR moves it while the device is running); it checks the record
//! against the function (the IDs, and each BAR register reads back the
//! recorded bus address) and refuses the resumption of the driver when
//! anything differs.
//!
//! Interrupt routing is not recorded: it is in the device's MSI-X table,
//! which the next kernel reads (the entries left unmasked) and routes
//! again to slots of its own.

use arrayvec::ArrayVec;

/// The most devices one process drives.
pub const MAX_DEVICES: usize = 4;

/// The most BARs of one function (a type 0 header has six registers).
pub const MAX_BARS: usize = 6;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceBarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Memory32 {
        /// Prefetchable.
        is_prefetchable: bool,
    },
    /// 64-bit memory (it takes two registers).
    Memory64 {
        /// Prefetchable.
        is_prefetchable: bool,
    },
}

impl DeviceBarKind {
    /// The kind's number in a `bars` entry (bits 8..16 of its first word);
    /// prefetchable is bit 16.
    pub const fn number(self) -> u64 {
        match self {
            DeviceBarKind::Io => 1,
            DeviceBarKind::Memory32 { is_prefetchable } => 2 | (is_prefetchable as u64) << 8,
            DeviceBarKind::Memory64 { is_prefetchable } => 3 | (is_prefetchable as u64) << 8,
        }
    }

    /// The kind with this number, if any.
    pub const fn from_number(number: u64) -> Option<DeviceBarKind> {
        match number {
            1 => Some(DeviceBarKind::Io),
            2 => Some(DeviceBarKind::Memory32 { is_prefetchable: false }),
            0x102 => Some(DeviceBarKind::Memory32 { is_prefetchable: true }),
            3 => Some(DeviceBarKind::Memory64 { is_prefetchable: false }),
            0x103 => Some(DeviceBarKind::Memory64 { is_prefetchable: true }),
            _ => None,
        }
    }

    /// Whether it decodes memory (a driver may map it).
    pub const fn is_memory(self) -> bool {
        !matches!(self, DeviceBarKind::Io)
    }
}

/// One BAR as the previous kernel programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceBar {
    /// Its register, 0 to 5 (a 64-bit BAR also takes the next one).
    pub index: u8,
    /// What it decodes.
    pub kind: DeviceBarKind,
    /// The address programmed in the register (bus address).
    pub bus_address: u64,
    /// The address the CPU reaches it at (through the host bridge's
    /// window; the bus address when firmware placed it).
    pub cpu_address: u64,
    /// Its size in bytes, a power of two.
    pub size_bytes: u64,
}

/// One PCI function a process drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0 to 31.
    pub device: u8,
    /// Function number, 0 to 7.
    pub function: u8,
    /// Vendor ID from its header.
    pub vendor_id: u16,
    /// Device ID from its header.
    pub device_id: u16,
    /// Its implemented BARs, by register.
    pub bars: ArrayVec<DeviceBar, MAX_BARS>,
}

impl DeviceRecord {
    /// The `pci-address` word: bus, device and function as in an ECAM
    /// offset (bus << 8 | device << 3 | function).
    pub const fn address_word(&self) -> u32 {
        (self.bus as u32) << 8 | (self.device as u32) << 3 | self.function as u32
    }

    /// The `pci-ids` word: vendor ID << 16 | device ID.
    pub const fn ids_word(&self) -> u32 {
        (self.vendor_id as u32) << 16 | self.device_id as u32
    }

    /// Whether `[start, start + size_bytes)` lies inside one of its memory
    /// BARs, in CPU addresses.
    pub fn contains_cpu_range(&self, start: u64, size_bytes: u64) -> bool {
        let Some(end) = start.checked_add(size_bytes) else { return false };
        self.bars.iter().filter(|bar| bar.kind.is_memory()).any(|bar| {
            bar.cpu_address
                .checked_add(bar.size_bytes)
                .is_some_and(|bar_end| start >= bar.cpu_address && end <= bar_end)
        })
    }
}
