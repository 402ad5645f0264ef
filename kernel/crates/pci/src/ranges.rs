//! A device-tree PCI host bridge (`pci-host-ecam-generic`): its ECAM
//! region, its buses and the windows of its `ranges` property.

use crate::bars::{Window, Windows};
use core::fmt;

/// Where a generic ECAM host bridge's configuration space is and what it
/// forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBridge {
    /// Physical address of the ECAM region (for bus `first_bus`).
    pub ecam_start: u64,
    /// Its size in bytes.
    pub ecam_size_bytes: u64,
    /// The first bus it decodes.
    pub first_bus: u8,
    /// The last bus it decodes (bounded by the ECAM size too).
    pub last_bus: u8,
    /// The windows BARs can be placed in.
    pub windows: Windows,
}

impl HostBridge {
    /// The last bus the ECAM region is large enough for: the smaller of
    /// `last_bus` and what `ecam_size_bytes` covers; `None` when it
    /// covers not even `first_bus`.
    pub fn last_reachable_bus(&self) -> Option<u8> {
        let buses = self.ecam_size_bytes / crate::BUS_CONFIG_BYTES;
        let last = u64::from(self.first_bus).checked_add(buses.checked_sub(1)?)?;
        Some(last.min(u64::from(self.last_bus)).min(255) as u8)
    }
}

/// The address space a `ranges` entry forwards (bits 24..=25 of its
/// first child cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Configuration space (never a window).
    Config,
    /// I/O ports.
    Io,
    /// Memory below 4 GiB.
    Memory32,
    /// 64-bit memory.
    Memory64,
}

/// Why a `ranges` property was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangesError {
    /// Its length is not a whole number of entries.
    Truncated,
    /// The cell counts are not ones a PCI bridge can have.
    BadCells,
}

impl fmt::Display for RangesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangesError::Truncated => f.write_str("ranges is not a whole number of entries"),
            RangesError::BadCells => f.write_str("ranges has address or size cells a PCI bridge cannot have"),
        }
    }
}

/// Reads a PCI bridge's `ranges` (big-endian cells: three of bus address,
/// `parent_address_cells` of CPU address, `size_cells` of size). The first
/// window of each kind is kept; a prefetchable 64-bit window is used like
/// any other 64-bit one. Entries of size 0 and configuration-space entries
/// are skipped.
pub fn parse_ranges(bytes: &[u8], parent_address_cells: usize, size_cells: usize) -> Result<Windows, RangesError> {
    if !(1..=2).contains(&parent_address_cells) || !(1..=2).contains(&size_cells) {
        return Err(RangesError::BadCells);
    }
    let entry_cells = 3 + parent_address_cells + size_cells;
    let entry_bytes = entry_cells * 4;
    if !bytes.len().is_multiple_of(entry_bytes) {
        return Err(RangesError::Truncated);
    }
    let mut windows = Windows::default();
    for entry in bytes.chunks_exact(entry_bytes) {
        let cells = |from: usize, count: usize| {
            entry[from * 4..(from + count) * 4].chunks_exact(4).fold(0u64, |value, cell| {
                (value << 32) | u64::from(u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
            })
        };
        let space = cells(0, 1) as u32;
        let bus_start = cells(1, 2);
        let cpu_start = cells(3, parent_address_cells);
        let size_bytes = cells(3 + parent_address_cells, size_cells);
        let kind = match (space >> 24) & 0b11 {
            0b00 => WindowKind::Config,
            0b01 => WindowKind::Io,
            0b10 => WindowKind::Memory32,
            _ => WindowKind::Memory64,
        };
        if size_bytes == 0 || cpu_start.checked_add(size_bytes).is_none() || bus_start.checked_add(size_bytes).is_none()
        {
            continue;
        }
        let window = Some(Window::new(cpu_start, bus_start, size_bytes));
        let slot = match kind {
            WindowKind::Config => continue,
            WindowKind::Io => &mut windows.io,
            WindowKind::Memory32 => &mut windows.memory32,
            WindowKind::Memory64 => &mut windows.memory64,
        };
        if slot.is_none() {
            *slot = window;
        }
    }
    Ok(windows)
}
