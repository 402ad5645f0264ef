//! KHO from a service's point of view: preservable memory, publishing a
//! sub-FDT, and getting both back after an update.

use crate::{Result, syscall};

/// A folio of preservable memory mapped in this service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folio {
    /// Where it is mapped.
    pub address: u64,
    /// Its physical address (what a sub-FDT records).
    pub physical: u64,
    /// Its order (`2^order` pages).
    pub order: u32,
}

impl Folio {
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        baton_abi::PAGE_SIZE << self.order
    }

    /// Allocates a new zeroed folio.
    pub fn allocate(order: u32) -> Result<Folio> {
        let address = syscall::allocate_preservable(order)?;
        let physical = syscall::physical_address(address)?;
        Ok(Folio { address, physical, order })
    }

    /// Takes back a folio the previous instance preserved.
    pub fn restore(physical: u64, order: u32) -> Result<Folio> {
        let address = syscall::kho_restore(physical, order)?;
        Ok(Folio { address, physical, order })
    }

    /// Preserves the whole folio across the next update.
    pub fn preserve(&self) -> Result<()> {
        syscall::kho_preserve(self.address, self.size_bytes())
    }

    /// The folio's bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the kernel mapped `size_bytes` of writable memory at
        // `address` for this service alone, for as long as it is not freed.
        unsafe { core::slice::from_raw_parts_mut(self.address as *mut u8, self.size_bytes() as usize) }
    }
}

/// The sub-FDT the previous instance published, if this boot came from an
/// update that carried one.
pub fn fetch_sub_fdt() -> Result<&'static [u8]> {
    let address = syscall::kho_fetch()?;
    // SAFETY: the kernel mapped a complete FDT read-only at `address`; its
    // header's total size (bytes 4..8, big-endian) bounds it.
    let header = unsafe { core::slice::from_raw_parts(address as *const u8, 8) };
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    // SAFETY: as above; the kernel validated that `size` bytes are mapped.
    Ok(unsafe { core::slice::from_raw_parts(address as *const u8, size) })
}
