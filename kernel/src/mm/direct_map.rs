//! The direct map: every byte of RAM at a fixed offset in the kernel half,
//! and the small unsafe layer that turns physical addresses into references.

use baton_mm::paging::TableMemory;

/// Where physical memory is mapped (the same offset the entry code and Limine
/// use, so it is valid from entry to shutdown).
pub const OFFSET: u64 = baton_boot::entry::ENTRY_DIRECT_MAP_OFFSET;

/// The kernel virtual address of physical `phys`.
pub fn to_virtual(phys: u64) -> u64 {
    OFFSET + phys
}

/// Fills the 4 KiB page at `phys` with zeroes.
///
/// # Safety
///
/// The page must be RAM that nothing else uses.
pub unsafe fn zero_page(phys: u64) {
    // SAFETY: the caller owns the page; the direct map covers all RAM.
    unsafe { core::ptr::write_bytes(to_virtual(phys) as *mut u8, 0, 4096) };
}

/// Page tables reached through the direct map, with new tables taken from a
/// page source (scratch at boot, the scratch pool afterwards).
pub struct DirectMapTables<F: FnMut() -> Option<u64>> {
    /// Where new tables come from; returns a page's physical address.
    pub allocate_page: F,
}

/// Tables for walks that never allocate.
pub fn read_only_tables() -> DirectMapTables<fn() -> Option<u64>> {
    DirectMapTables { allocate_page: || None }
}

impl<F: FnMut() -> Option<u64>> TableMemory for DirectMapTables<F> {
    fn read_entry(&self, table_phys: u64, index: usize) -> u64 {
        // SAFETY: `table_phys` is a page-table page (allocated by this
        // module's callers and never freed while in use) inside RAM, which
        // the direct map covers; `index < 512` keeps the read inside it.
        unsafe { (to_virtual(table_phys) as *const u64).add(index).read_volatile() }
    }

    fn write_entry(&mut self, table_phys: u64, index: usize, value: u64) {
        // SAFETY: as in `read_entry`; page tables are only changed with the
        // kernel's memory lock held.
        unsafe { (to_virtual(table_phys) as *mut u64).add(index).write_volatile(value) }
    }

    fn allocate_table(&mut self) -> Option<u64> {
        let page = (self.allocate_page)()?;
        // SAFETY: the page was just handed out and is not in use.
        unsafe { zero_page(page) };
        Some(page)
    }
}
