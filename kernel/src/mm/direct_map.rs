//! The direct map: every byte of RAM at a fixed offset in the kernel half,
//! and the raw access to it.
//!
//! Outside `mm`, physical memory is reached only through safe methods:
//! [`read`] and [`Ram::read`]/[`Ram::read_u64`] copy out of RAM the direct
//! map covers (checked); writes go through an owned
//! [`Block`](super::block::Block), page-table pages ([`DirectMapTables`]),
//! or `mm`'s checked writers (user memory after a page-table walk, the
//! incoming handover's metadata). The `unsafe` helpers here are `mm`'s own;
//! the other raw uses of the direct map are the heap's memory and the
//! framebuffer mapping (in `mm`) and the saved trap frame a new service's
//! kernel stack starts with (`task/context.rs`).

use baton_mm::paging::TableMemory;
use baton_mm::{PAGE_SIZE, Range};

/// Where physical memory is mapped (the same offset the entry code and Limine
/// use, so it is valid from entry to shutdown).
pub const OFFSET: u64 = baton_boot::entry::ENTRY_DIRECT_MAP_OFFSET;

/// Entries in one page-table page.
const ENTRIES_PER_TABLE: usize = 512;

/// The kernel virtual address of physical `phys`.
pub fn to_virtual(phys: u64) -> u64 {
    OFFSET + phys
}

/// Physical memory that is not (wholly) RAM the direct map covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRam {
    /// Where the access started.
    pub phys: u64,
    /// How many bytes it covered.
    pub size_bytes: u64,
}

fn check_ram(phys: u64, size_bytes: u64) -> Result<(), NotRam> {
    match super::is_ram(phys, size_bytes.max(1)) {
        true => Ok(()),
        false => Err(NotRam { phys, size_bytes }),
    }
}

/// Copies `buffer.len()` bytes of RAM at `phys` into `buffer`.
pub fn read(phys: u64, buffer: &mut [u8]) -> Result<(), NotRam> {
    check_ram(phys, buffer.len() as u64)?;
    // SAFETY: checked RAM; see `copy_out`.
    unsafe { copy_out(phys, buffer) };
    Ok(())
}

/// # Safety
///
/// `[phys, phys + buffer.len())` must be RAM.
unsafe fn copy_out(phys: u64, buffer: &mut [u8]) {
    // SAFETY: RAM (caller), which the direct map covers for the kernel's
    // lifetime; the bytes are copied, never referenced, and `buffer` is a
    // distinct Rust object. The kernel runs on one CPU and takes no
    // interrupts while it runs, so nothing writes them meanwhile.
    unsafe { core::ptr::copy_nonoverlapping(to_virtual(phys) as *const u8, buffer.as_mut_ptr(), buffer.len()) };
}

/// The RAM the direct map covers, copied once so that reads check it
/// without taking the memory lock (RAM never shrinks).
#[derive(Debug, Clone)]
pub struct Ram {
    /// Sorted, disjoint.
    ranges: alloc::vec::Vec<Range>,
}

impl Ram {
    /// The RAM covered now.
    pub fn now() -> Self {
        Self { ranges: super::ram_ranges() }
    }

    /// Whether `[phys, phys + size_bytes)` is RAM.
    pub fn contains(&self, phys: u64, size_bytes: u64) -> bool {
        let Some(end) = phys.checked_add(size_bytes) else { return false };
        let index = self.ranges.partition_point(|range| range.end <= phys);
        self.ranges.get(index).is_some_and(|range| range.start <= phys && end <= range.end)
    }

    /// Copies RAM at `phys` into `buffer`.
    pub fn read(&self, phys: u64, buffer: &mut [u8]) -> Result<(), NotRam> {
        if !self.contains(phys, buffer.len() as u64) {
            return Err(NotRam { phys, size_bytes: buffer.len() as u64 });
        }
        // SAFETY: checked RAM.
        unsafe { copy_out(phys, buffer) };
        Ok(())
    }

    /// Reads the word of RAM at `phys`.
    pub fn read_u64(&self, phys: u64) -> Result<u64, NotRam> {
        if !self.contains(phys, 8) {
            return Err(NotRam { phys, size_bytes: 8 });
        }
        // SAFETY: eight bytes of checked RAM, copied (see `copy_out`);
        // `read_unaligned` allows any alignment.
        Ok(unsafe { (to_virtual(phys) as *const u64).read_unaligned() })
    }
}

/// Writes `data` at `phys`.
///
/// # Safety
///
/// `[phys, phys + data.len())` must be RAM that the caller owns (no Rust
/// reference points into it and nothing else writes it meanwhile).
pub(super) unsafe fn write(phys: u64, data: &[u8]) {
    // SAFETY: the caller owns the range; the direct map covers RAM.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), to_virtual(phys) as *mut u8, data.len()) };
}

/// The bytes of `range` as a slice.
///
/// # Safety
///
/// `range` must be RAM that nothing writes while the slice lives.
pub(super) unsafe fn slice(range: Range) -> &'static [u8] {
    // SAFETY: the caller guarantees RAM that stays unwritten; the direct map
    // covers it for the kernel's lifetime.
    unsafe { core::slice::from_raw_parts(to_virtual(range.start) as *const u8, range.size_bytes() as usize) }
}

/// The bytes of `range` as a mutable slice.
///
/// # Safety
///
/// `range` must be RAM the caller owns exclusively while the slice lives.
pub(super) unsafe fn slice_mut(range: Range) -> &'static mut [u8] {
    // SAFETY: as `slice`, and the caller holds the only access.
    unsafe { core::slice::from_raw_parts_mut(to_virtual(range.start) as *mut u8, range.size_bytes() as usize) }
}

/// Writes every byte of `range` back with the value it holds (see
/// [`super::prime_for_overwrite`]).
///
/// # Safety
///
/// `range` must be RAM, and nothing else may run on this CPU or any other
/// between a byte's read and its write back.
pub(super) unsafe fn rewrite_in_place(range: Range) {
    let start = to_virtual(range.start) as *mut u8;
    for offset in 0..range.size_bytes() as usize {
        // SAFETY: inside `range` (RAM, direct-mapped); writing back the byte
        // just read changes nothing, and nothing runs in between (caller).
        unsafe {
            let pointer = start.add(offset);
            pointer.write_volatile(pointer.read_volatile());
        }
    }
}

/// Page tables reached through the direct map, with new tables taken from a
/// page source (scratch at boot, the scratch pool or the page allocator
/// afterwards). Table pages are owned by the page-table tree they belong to.
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
        assert!(index < ENTRIES_PER_TABLE && table_phys.is_multiple_of(PAGE_SIZE), "page-table entry out of range");
        // SAFETY: `table_phys` is a page-table page (a page, checked
        // aligned) of a tree whose pages come only from `allocate_table`
        // and are never freed while the tree is in use; `index < 512`
        // (checked) keeps the read inside it.
        unsafe { (to_virtual(table_phys) as *const u64).add(index).read_volatile() }
    }

    fn write_entry(&mut self, table_phys: u64, index: usize, value: u64) {
        assert!(index < ENTRIES_PER_TABLE && table_phys.is_multiple_of(PAGE_SIZE), "page-table entry out of range");
        // SAFETY: as in `read_entry`; page tables are only changed by their
        // owner (the kernel's memory lock or the address space's `&mut`).
        unsafe { (to_virtual(table_phys) as *mut u64).add(index).write_volatile(value) }
    }

    fn allocate_table(&mut self) -> Option<u64> {
        let page = (self.allocate_page)()?;
        // SAFETY: the page was just handed out for this tree and is not in
        // use; the direct map covers it.
        unsafe { write_bytes(page, 0, PAGE_SIZE) };
        Some(page)
    }
}

/// Fills `size_bytes` at `phys` with `byte`.
///
/// # Safety
///
/// The range must be RAM that the caller owns.
pub(super) unsafe fn write_bytes(phys: u64, byte: u8, size_bytes: u64) {
    // SAFETY: the caller owns the range; the direct map covers RAM.
    unsafe { core::ptr::write_bytes(to_virtual(phys) as *mut u8, byte, size_bytes as usize) };
}
