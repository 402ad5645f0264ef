//! MSI-X: where a function's vector table and pending-bit array lie, how
//! a table entry is written, and which configuration registers steer
//! message interrupts (the kernel's alone: a driver that could write them
//! could make its device raise any interrupt vector, the kernel's own
//! included).

use crate::{Address, ConfigAccess, Function, capability};

/// Message Control: MSI-X enabled.
pub const ENABLE: u16 = 1 << 15;
/// Message Control: every vector masked at once.
pub const FUNCTION_MASK: u16 = 1 << 14;
/// Bytes of one table entry.
pub const ENTRY_BYTES: u64 = 16;
/// Vector Control: this entry is masked.
pub const ENTRY_MASKED: u32 = 1;
/// Bytes of the MSI-X capability structure.
const MSIX_CAPABILITY_BYTES: u16 = 12;
/// The most bytes an MSI capability structure takes (64-bit addresses
/// with per-vector masking).
const MSI_CAPABILITY_BYTES: u16 = 24;

/// A function's MSI-X capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msix {
    /// Where the capability is in configuration space.
    pub capability_offset: u16,
    /// Entries in the table (1 to 2048).
    pub table_size: u16,
    /// The BAR holding the table.
    pub table_bar: u8,
    /// The table's offset in that BAR (8-byte aligned).
    pub table_offset: u64,
    /// The BAR holding the pending-bit array.
    pub pba_bar: u8,
    /// Its offset in that BAR.
    pub pba_offset: u64,
}

impl Msix {
    /// The MSI-X capability of `function`, if it has one.
    pub fn read(access: &impl ConfigAccess, function: &Function) -> Option<Msix> {
        let offset = u16::from(function.capability(capability::MSI_X)?.offset);
        Some(Msix::at(access, function.address, offset))
    }

    fn at(access: &impl ConfigAccess, at: Address, offset: u16) -> Msix {
        let control = access.read16(at, offset.saturating_add(2));
        let table = access.read(at, offset.saturating_add(4));
        let pba = access.read(at, offset.saturating_add(8));
        Msix {
            capability_offset: offset,
            table_size: (control & 0x7ff).saturating_add(1),
            table_bar: (table & 0x7) as u8,
            table_offset: u64::from(table & !0x7),
            pba_bar: (pba & 0x7) as u8,
            pba_offset: u64::from(pba & !0x7),
        }
    }

    /// Where Message Control is (16 bits).
    pub fn control_offset(&self) -> u16 {
        self.capability_offset.saturating_add(2)
    }

    /// The offset of `entry` in the table's BAR, if the table has it.
    pub fn entry_offset(&self, entry: u16) -> Option<u64> {
        (entry < self.table_size).then(|| self.table_offset + u64::from(entry) * ENTRY_BYTES)
    }

    /// The table's length in bytes.
    pub fn table_bytes(&self) -> u64 {
        u64::from(self.table_size) * ENTRY_BYTES
    }

    /// The pending-bit array's length in bytes (one bit an entry, in
    /// 64-bit words).
    pub fn pba_bytes(&self) -> u64 {
        u64::from(self.table_size).div_ceil(64) * 8
    }

    /// Whether `[offset, offset + length)` of BAR `bar`, rounded out to
    /// whole pages of `page_bytes`, reaches the table or the pending-bit
    /// array (a mapping of those pages would let a driver write the
    /// vectors).
    pub fn overlaps(&self, bar: u8, offset: u64, length: u64, page_bytes: u64) -> bool {
        let start = offset - offset % page_bytes;
        let end = offset.saturating_add(length).div_ceil(page_bytes).saturating_mul(page_bytes);
        let hits = |structure_bar: u8, structure_offset: u64, bytes: u64| {
            structure_bar == bar && structure_offset < end && start < structure_offset.saturating_add(bytes)
        };
        hits(self.table_bar, self.table_offset, self.table_bytes())
            || hits(self.pba_bar, self.pba_offset, self.pba_bytes())
    }
}

/// A table entry that sends `data` to `address`, as its four 32-bit words
/// (address low, address high, data, vector control).
pub const fn table_entry(address: u64, data: u32, is_masked: bool) -> [u32; 4] {
    [address as u32, (address >> 32) as u32, data, if is_masked { ENTRY_MASKED } else { 0 }]
}

/// Whether configuration register `offset` (4 bytes) lies in `function`'s
/// MSI or MSI-X capability: the kernel's, like the header.
pub fn is_interrupt_register(function: &Function, offset: u16) -> bool {
    let end = offset.saturating_add(4);
    let inside = |id: u8, bytes: u16| {
        function.capabilities_with(id).any(|found| {
            let start = u16::from(found.offset);
            start < end && offset < start.saturating_add(bytes)
        })
    };
    inside(capability::MSI_X, MSIX_CAPABILITY_BYTES) || inside(capability::MSI, MSI_CAPABILITY_BYTES)
}
