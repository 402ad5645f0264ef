//! Device registers reached through memory: a mapped window of 32-bit
//! registers, read and written with volatile accesses, every offset
//! checked against the window.

/// A mapped window of device registers.
#[derive(Debug)]
pub struct MmioRegion {
    base: u64,
    size_bytes: u64,
}

impl MmioRegion {
    /// A region of `size_bytes` of registers mapped at kernel address
    /// `base`.
    ///
    /// # Safety
    ///
    /// `base` must map `size_bytes` of device memory (uncached, or device
    /// nGnRE) for as long as the region is used, and accesses to those
    /// registers must not break what another part of the kernel relies
    /// on (the region is its owner's alone).
    pub unsafe fn new(base: u64, size_bytes: u64) -> MmioRegion {
        MmioRegion { base, size_bytes }
    }

    /// Its size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The register's address, if a 4-byte access at `offset` lies inside
    /// the region and is aligned.
    fn address(&self, offset: u64) -> Option<*mut u32> {
        let is_inside = offset.checked_add(4).is_some_and(|end| end <= self.size_bytes);
        (is_inside && offset.is_multiple_of(4)).then(|| (self.base + offset) as *mut u32)
    }

    /// The 32-bit register at `offset`; `None` outside the region or
    /// misaligned.
    pub fn read32(&self, offset: u64) -> Option<u32> {
        let address = self.address(offset)?;
        // SAFETY: `address` is an aligned register inside the region,
        // which `new`'s contract keeps mapped as device memory.
        Some(unsafe { address.read_volatile() })
    }

    /// Writes the 32-bit register at `offset`; `false` (nothing written)
    /// outside the region or misaligned.
    pub fn write32(&self, offset: u64, value: u32) -> bool {
        let Some(address) = self.address(offset) else { return false };
        // SAFETY: as in `read32`; the register is the owner's to write.
        unsafe { address.write_volatile(value) };
        true
    }
}
