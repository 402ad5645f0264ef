//! Base address registers: what each decodes (sized by the all-ones probe)
//! and addresses for those firmware left unassigned, from the host bridge's
//! windows.

use crate::{Address, ConfigAccess, Function, register};
use arrayvec::ArrayVec;
use core::fmt;

/// Low bits of a BAR: an I/O BAR.
const BAR_IO: u32 = 1;
/// Memory BAR type field (bits 1..=2): 64-bit.
const BAR_MEMORY_64: u32 = 0b10 << 1;
/// Memory BAR: prefetchable.
const BAR_PREFETCHABLE: u32 = 1 << 3;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// Memory below 4 GiB.
    Memory32 {
        /// Reads have no side effects.
        is_prefetchable: bool,
    },
    /// Memory anywhere (this BAR and the next register).
    Memory64 {
        /// Reads have no side effects.
        is_prefetchable: bool,
    },
    /// I/O ports.
    Io,
}

/// One sized BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Its number (a 64-bit BAR takes this register and the next).
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// The bus address it is programmed with (0: unassigned).
    pub address: u64,
    /// How many bytes it decodes (a power of two).
    pub size_bytes: u64,
}

impl Bar {
    /// Whether it decodes memory (rather than I/O).
    pub fn is_memory(&self) -> bool {
        !matches!(self.kind, BarKind::Io)
    }

    /// The offset of its (first) register.
    fn register(&self) -> u16 {
        register::BAR0 + 4 * u16::from(self.index)
    }
}

/// Sizes every BAR of `function`: writes all-ones into each register and
/// reads back what sticks, with memory and I/O decoding off meanwhile, then
/// restores the register and the command word. BARs that decode nothing
/// are left out. Never call this on a device that is running.
pub fn size_bars(access: &mut impl ConfigAccess, function: &Function) -> ArrayVec<Bar, 6> {
    let at = function.address;
    let mut bars = ArrayVec::new();
    let command = access.read16(at, register::COMMAND_STATUS);
    access.write_command(at, command & !(crate::command::MEMORY_SPACE | crate::command::IO_SPACE));
    let mut index = 0u8;
    while usize::from(index) < function.bar_count() {
        let offset = register::BAR0 + 4 * u16::from(index);
        let original = access.read(at, offset);
        let (kind, address, size_bytes, registers) = if original & BAR_IO != 0 {
            let mask = probe(access, at, offset, original) & !0x3;
            // I/O BARs decode at most 16 bits of ports on x86; the upper
            // half may read as zeros.
            let mask = if mask & 0xffff_0000 == 0 && mask != 0 { mask | 0xffff_0000 } else { mask };
            let size_bytes = if mask == 0 { 0 } else { u64::from(!mask).wrapping_add(1) };
            (BarKind::Io, u64::from(original & !0x3), size_bytes, 1)
        } else {
            let is_prefetchable = original & BAR_PREFETCHABLE != 0;
            let low_mask = probe(access, at, offset, original) & !0xf;
            let is_64 = original & (0b11 << 1) == BAR_MEMORY_64 && usize::from(index) + 1 < function.bar_count();
            if is_64 {
                let upper = access.read(at, offset + 4);
                let high_mask = probe(access, at, offset + 4, upper);
                let mask = (u64::from(high_mask) << 32) | u64::from(low_mask);
                let address = (u64::from(upper) << 32) | u64::from(original & !0xf);
                (BarKind::Memory64 { is_prefetchable }, address, (!mask).wrapping_add(1), 2)
            } else {
                let mask = u64::from(low_mask) | 0xffff_ffff_0000_0000;
                let size_bytes = if low_mask == 0 { 0 } else { (!mask).wrapping_add(1) };
                (BarKind::Memory32 { is_prefetchable }, u64::from(original & !0xf), size_bytes, 1)
            }
        };
        // A register that keeps no bits decodes nothing; one whose size
        // is not a power of two is broken and is left out too.
        if size_bytes.is_power_of_two() && is_large_enough(kind, size_bytes) {
            bars.push(Bar { index, kind, address, size_bytes });
        }
        index += registers;
    }
    access.write_command(at, command);
    bars
}

/// Checks, without writing anything, that `bar` is still what `at`'s
/// register holds: the same kind and the same bus address. A kernel that
/// is handed a running device uses this instead of [`size_bars`] (which
/// would move a live BAR for a moment). `Err` holds the address found.
pub fn check_programmed(access: &impl ConfigAccess, at: Address, bar: &Bar) -> Result<(), u64> {
    let low = access.read(at, bar.register());
    let (kind_bits, address) = match bar.kind {
        BarKind::Io => (low & BAR_IO, u64::from(low & !0x3)),
        BarKind::Memory32 { .. } => (low & 0xf, u64::from(low & !0xf)),
        BarKind::Memory64 { .. } => {
            let high = access.read(at, bar.register() + 4);
            (low & 0xf, (u64::from(high) << 32) | u64::from(low & !0xf))
        }
    };
    let expected_bits = match bar.kind {
        BarKind::Io => BAR_IO,
        BarKind::Memory32 { is_prefetchable } => u32::from(is_prefetchable) * BAR_PREFETCHABLE,
        BarKind::Memory64 { is_prefetchable } => BAR_MEMORY_64 | (u32::from(is_prefetchable) * BAR_PREFETCHABLE),
    };
    if kind_bits != expected_bits || address != bar.address {
        return Err(address);
    }
    Ok(())
}

/// Whether a BAR is at least the smallest its kind allows (16 bytes of
/// memory, 4 ports).
fn is_large_enough(kind: BarKind, size_bytes: u64) -> bool {
    match kind {
        BarKind::Io => size_bytes >= 4,
        _ => size_bytes >= 16,
    }
}

/// Writes all-ones into a BAR register, reads what sticks, restores it.
fn probe(access: &mut impl ConfigAccess, at: Address, offset: u16, original: u32) -> u32 {
    access.write(at, offset, 0xffff_ffff);
    let mask = access.read(at, offset);
    access.write(at, offset, original);
    mask
}

/// What a host bridge window forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first CPU physical address of the window.
    pub cpu_start: u64,
    /// The bus address `cpu_start` appears at.
    pub bus_start: u64,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Bytes of it already handed out (from the start).
    pub used_bytes: u64,
}

impl Window {
    /// A window with nothing handed out.
    pub fn new(cpu_start: u64, bus_start: u64, size_bytes: u64) -> Window {
        Window { cpu_start, bus_start, size_bytes, used_bytes: 0 }
    }

    /// Takes `size_bytes` aligned to itself (BARs are naturally aligned
    /// on the bus); returns the bus address.
    fn take(&mut self, size_bytes: u64) -> Option<u64> {
        // Bus address 0 is never handed out: a BAR reading 0 is one
        // nobody assigned.
        let next = self.bus_start.checked_add(self.used_bytes)?.max(1);
        let start = next.checked_next_multiple_of(size_bytes)?;
        let end = start.checked_add(size_bytes)?;
        if end > self.bus_start.checked_add(self.size_bytes)? {
            return None;
        }
        self.used_bytes = end - self.bus_start;
        Some(start)
    }

    /// The CPU address of bus address `bus`, if the window forwards it.
    pub fn cpu_address(&self, bus: u64) -> Option<u64> {
        let offset = bus.checked_sub(self.bus_start)?;
        (offset < self.size_bytes).then(|| self.cpu_start + offset)
    }
}

/// The windows of a host bridge that BARs can be placed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windows {
    /// Memory below 4 GiB on the bus.
    pub memory32: Option<Window>,
    /// 64-bit memory (prefetchable or not, as the bridge offers it).
    pub memory64: Option<Window>,
    /// I/O ports (reached through memory on most non-x86 machines).
    pub io: Option<Window>,
}

impl Windows {
    /// Marks what `bar` (already programmed) occupies in the window that
    /// forwards it as used, so nothing assigned later overlaps it.
    pub fn reserve(&mut self, bar: &Bar) {
        let windows = match bar.kind {
            BarKind::Io => [self.io.as_mut(), None],
            _ => [self.memory64.as_mut(), self.memory32.as_mut()],
        };
        for window in windows.into_iter().flatten() {
            if let Some(offset) = bar.address.checked_sub(window.bus_start)
                && offset < window.size_bytes
            {
                let end = offset.saturating_add(bar.size_bytes).min(window.size_bytes);
                window.used_bytes = window.used_bytes.max(end);
                return;
            }
        }
    }

    /// The CPU address of memory BAR `bar`, through whichever window
    /// forwards its bus address.
    pub fn cpu_address(&self, bar: &Bar) -> Option<u64> {
        let windows = match bar.kind {
            BarKind::Io => [self.io, None],
            _ => [self.memory64, self.memory32],
        };
        windows.into_iter().flatten().find_map(|window| window.cpu_address(bar.address))
    }
}

/// Why a BAR got no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignError {
    /// No window of its kind, or none with room for it.
    NoRoom {
        /// The BAR.
        index: u8,
        /// What it needed.
        size_bytes: u64,
    },
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignError::NoRoom { index, size_bytes } => {
                write!(f, "BAR {index} ({size_bytes:#x} bytes) fits in no host-bridge window")
            }
        }
    }
}

/// Gives every unassigned BAR of `function` an address from `windows`
/// (largest first, so alignment wastes little), programs it, and switches
/// on the decoding its BARs need. A 64-bit BAR goes in the 64-bit window
/// when there is one, else below 4 GiB. BARs that already have an address
/// are kept. On an error the BARs assigned so far stay programmed and
/// decoding stays off.
pub fn assign_bars(
    access: &mut impl ConfigAccess,
    function: &Function,
    bars: &mut [Bar],
    windows: &mut Windows,
) -> Result<(), AssignError> {
    let at = function.address;
    let command = access.read16(at, register::COMMAND_STATUS);
    let decoding = crate::command::MEMORY_SPACE | crate::command::IO_SPACE;
    access.write_command(at, command & !decoding);
    let mut order: ArrayVec<usize, 6> = (0..bars.len()).collect();
    order.sort_unstable_by_key(|&position| (core::cmp::Reverse(bars[position].size_bytes), position));
    for position in order {
        let bar = &mut bars[position];
        if bar.address != 0 {
            continue;
        }
        let no_room = AssignError::NoRoom { index: bar.index, size_bytes: bar.size_bytes };
        let address = match bar.kind {
            BarKind::Io => windows.io.as_mut().and_then(|window| window.take(bar.size_bytes)),
            BarKind::Memory64 { .. } => windows
                .memory64
                .as_mut()
                .and_then(|window| window.take(bar.size_bytes))
                .or_else(|| windows.memory32.as_mut().and_then(|window| window.take(bar.size_bytes))),
            BarKind::Memory32 { .. } => windows
                .memory32
                .as_mut()
                .filter(|window| window.bus_start.saturating_add(window.size_bytes) <= 1 << 32)
                .and_then(|window| window.take(bar.size_bytes)),
        }
        .ok_or(no_room)?;
        bar.address = address;
        let offset = bar.register();
        access.write(at, offset, address as u32);
        if matches!(bar.kind, BarKind::Memory64 { .. }) {
            access.write(at, offset + 4, (address >> 32) as u32);
        }
    }
    let mut enable = 0;
    for bar in bars.iter() {
        enable |= if bar.is_memory() { crate::command::MEMORY_SPACE } else { crate::command::IO_SPACE };
    }
    access.write_command(at, command | enable);
    Ok(())
}
