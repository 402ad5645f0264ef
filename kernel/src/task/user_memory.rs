//! A service's address space: its page tables, the memory mapped in it, and
//! checked copies between it and the kernel.
//!
//! Every user pointer is checked here against the service's own page tables
//! (present, user-accessible, writable when written) before the kernel
//! touches the memory, which it then reaches through the direct map.

use crate::mm::direct_map::{self, DirectMapTables};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use baton_abi::{Error, PAGE_SIZE, USER_ADDRESS_LIMIT};
use baton_arch::paging::{EntryFormat, KERNEL_TOP_LEVEL_FIRST_SLOT};
use baton_mm::paging::{Attributes, LeafSizes, MemoryType, PageTable};

/// Where the user stack ends (its top).
pub const STACK_TOP: u64 = 0x0000_7fff_ffff_0000;
/// Bytes of user stack.
pub const STACK_BYTES: u64 = 64 * 1024;
/// Where preservable folios are mapped from.
pub const PRESERVABLE_BASE: u64 = 0x0000_0010_0000_0000;
/// Where the incoming sub-FDT is mapped.
pub const HANDOVER_FDT_BASE: u64 = 0x0000_0020_0000_0000;

/// What backs a mapped range, so exit frees the right things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Pages the kernel allocated for this service (image, stack).
    Owned {
        /// Physical address.
        phys: u64,
        /// Allocation order.
        order: u32,
    },
    /// Physically contiguous preservable folios (the KHO code tracks their
    /// preservation): `folios` folios of `order`, one after the other.
    Preservable {
        /// Physical address of the first folio.
        phys: u64,
        /// The folios' order.
        order: u32,
        /// How many folios.
        folios: u64,
    },
    /// Memory owned elsewhere, mapped read-only (the incoming sub-FDT).
    Borrowed {
        /// Physical address.
        phys: u64,
    },
}

/// A service's address space.
pub struct AddressSpace {
    table: PageTable,
    /// Mapped ranges by start address: (size in bytes, backing).
    ranges: BTreeMap<u64, (u64, Backing)>,
}

fn tables() -> DirectMapTables<fn() -> Option<u64>> {
    DirectMapTables { allocate_page: crate::mm::allocate_kernel_page }
}

/// User-data attributes.
pub fn user_attributes(is_writable: bool, is_executable: bool) -> Attributes {
    Attributes { is_writable, is_executable, is_user: true, memory: MemoryType::Normal }
}

impl AddressSpace {
    /// An empty address space that shares the kernel half.
    pub fn new() -> Result<Self, Error> {
        let mut memory = tables();
        let table = PageTable::new(&mut memory).map_err(|_| Error::NoMemory)?;
        if KERNEL_TOP_LEVEL_FIRST_SLOT < 512 {
            table.share_top_level(&mut memory, &crate::mm::kernel_table(), KERNEL_TOP_LEVEL_FIRST_SLOT);
        }
        Ok(Self { table, ranges: BTreeMap::new() })
    }

    /// The root of its page tables.
    pub fn root(&self) -> u64 {
        self.table.root()
    }

    /// Maps `size_bytes` at `virt` to `phys` and records the backing.
    pub fn map(
        &mut self,
        virt: u64,
        phys: u64,
        size_bytes: u64,
        attributes: Attributes,
        backing: Backing,
    ) -> Result<(), Error> {
        let end = virt.checked_add(size_bytes).ok_or(Error::Overflow)?;
        if end > USER_ADDRESS_LIMIT {
            return Err(Error::BadAddress);
        }
        // Preservable memory may be large and physically contiguous: 2 MiB
        // leaves wherever both addresses allow keep restoring a gigabyte to
        // hundreds of entries instead of a quarter of a million.
        let leaves = match backing {
            Backing::Preservable { .. } => LeafSizes { gigabyte: false, two_megabyte: true },
            _ => LeafSizes::PAGES_ONLY,
        };
        self.table.map::<EntryFormat>(&mut tables(), virt, phys, size_bytes, attributes, leaves).map_err(|error| {
            match error {
                baton_mm::paging::MapError::AlreadyMapped { .. } => Error::AlreadyExists,
                baton_mm::paging::MapError::OutOfTables => Error::NoMemory,
                baton_mm::paging::MapError::Misaligned => Error::Misaligned,
                baton_mm::paging::MapError::Overflow => Error::Overflow,
            }
        })?;
        self.ranges.insert(virt, (size_bytes, backing));
        Ok(())
    }

    /// Allocates pages, fills them with `contents` followed by zeroes, maps
    /// them at `virt` and returns their physical address. Only bytes that
    /// differ from what the pages held are written: code loaded into the same
    /// pages as at an earlier boot stays untouched, so emulators keep their
    /// translations of it (a plain copy on hardware).
    pub fn map_filled(
        &mut self,
        virt: u64,
        size_bytes: u64,
        attributes: Attributes,
        contents_offset: usize,
        contents: &[u8],
    ) -> Result<u64, Error> {
        let pages = size_bytes.div_ceil(PAGE_SIZE);
        let order = pages.next_power_of_two().trailing_zeros();
        let phys = crate::mm::allocate_pages(order).ok_or(Error::NoMemory)?;
        let length = (pages * PAGE_SIZE) as usize;
        // SAFETY: the block was just allocated for this address space and is
        // at least `length` bytes; nothing else uses it.
        let target = unsafe { core::slice::from_raw_parts_mut(direct_map::to_virtual(phys) as *mut u8, length) };
        let contents_end = contents_offset + contents.len();
        for (chunk_index, chunk) in target.chunks_exact_mut(8).enumerate() {
            let start = chunk_index * 8;
            let mut wanted = [0u8; 8];
            if start + 8 > contents_offset && start < contents_end {
                for (position, byte) in wanted.iter_mut().enumerate() {
                    let index = start + position;
                    if index >= contents_offset && index < contents_end {
                        *byte = contents[index - contents_offset];
                    }
                }
            }
            if chunk != wanted {
                chunk.copy_from_slice(&wanted);
            }
        }
        if let Err(error) = self.map(virt, phys, pages * PAGE_SIZE, attributes, Backing::Owned { phys, order }) {
            crate::mm::free_pages(phys, order);
            return Err(error);
        }
        Ok(phys)
    }

    /// Allocates zeroed pages, maps them at `virt` and returns their physical
    /// address.
    pub fn map_new(&mut self, virt: u64, size_bytes: u64, attributes: Attributes) -> Result<u64, Error> {
        // The block is a power of two of pages; only what was asked for is
        // mapped.
        let pages = size_bytes.div_ceil(PAGE_SIZE);
        let order = pages.next_power_of_two().trailing_zeros();
        let phys = crate::mm::allocate_pages(order).ok_or(Error::NoMemory)?;
        // SAFETY: the block was just allocated for this address space.
        unsafe { core::ptr::write_bytes(direct_map::to_virtual(phys) as *mut u8, 0, (pages * PAGE_SIZE) as usize) };
        if let Err(error) = self.map(virt, phys, pages * PAGE_SIZE, attributes, Backing::Owned { phys, order }) {
            crate::mm::free_pages(phys, order);
            return Err(error);
        }
        Ok(phys)
    }

    /// Removes the range mapped at exactly `virt` and returns its backing.
    pub fn unmap(&mut self, virt: u64) -> Option<(u64, Backing)> {
        let (size, backing) = self.ranges.remove(&virt)?;
        let _ = self.table.unmap::<EntryFormat>(&mut tables(), virt, size);
        baton_arch::paging::flush_all();
        Some((size, backing))
    }

    /// The range containing `virt`: (start, size, backing).
    pub fn range_containing(&self, virt: u64) -> Option<(u64, u64, Backing)> {
        let (&start, &(size, backing)) = self.ranges.range(..=virt).next_back()?;
        (virt < start + size).then_some((start, size, backing))
    }

    /// Finds `size_bytes` of unmapped space at or above `base`, aligned to
    /// `alignment`.
    pub fn find_free(&self, base: u64, size_bytes: u64, alignment: u64) -> Option<u64> {
        let mut candidate = base.next_multiple_of(alignment);
        for (&start, &(size, _)) in self.ranges.range(base..) {
            if candidate + size_bytes <= start {
                break;
            }
            candidate = (start + size).next_multiple_of(alignment).max(candidate);
        }
        (candidate + size_bytes <= USER_ADDRESS_LIMIT).then_some(candidate)
    }

    /// The physical address `virt` maps to, if it is mapped for the user
    /// with the needed access.
    fn translate(&self, virt: u64, needs_write: bool) -> Result<u64, Error> {
        if virt >= USER_ADDRESS_LIMIT {
            return Err(Error::BadAddress);
        }
        let (phys, attributes) =
            self.table.translate::<EntryFormat>(&direct_map::read_only_tables(), virt).ok_or(Error::BadAddress)?;
        if !attributes.is_user || (needs_write && !attributes.is_writable) {
            return Err(Error::BadAddress);
        }
        Ok(phys)
    }

    /// Copies `length` bytes from the service at `address`.
    pub fn read(&self, address: u64, length: u64) -> Result<Vec<u8>, Error> {
        let end = address.checked_add(length).ok_or(Error::Overflow)?;
        if end > USER_ADDRESS_LIMIT {
            return Err(Error::BadAddress);
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(length as usize).map_err(|_| Error::NoMemory)?;
        let mut cursor = address;
        while cursor < end {
            let page_end = ((cursor / PAGE_SIZE) + 1) * PAGE_SIZE;
            let chunk_end = page_end.min(end);
            let phys = self.translate(cursor, false)?;
            let source = direct_map::to_virtual(phys) as *const u8;
            // SAFETY: `translate` checked that the page is mapped for this
            // service; `[cursor, chunk_end)` stays inside that page, which the
            // direct map covers.
            let chunk = unsafe { core::slice::from_raw_parts(source, (chunk_end - cursor) as usize) };
            bytes.extend_from_slice(chunk);
            cursor = chunk_end;
        }
        Ok(bytes)
    }

    /// Copies `data` into the service at `address` (checked writable).
    pub fn write(&self, address: u64, data: &[u8]) -> Result<(), Error> {
        let end = address.checked_add(data.len() as u64).ok_or(Error::Overflow)?;
        if end > USER_ADDRESS_LIMIT {
            return Err(Error::BadAddress);
        }
        // Check every page first so a failure writes nothing.
        let mut cursor = address;
        while cursor < end {
            self.translate(cursor, true)?;
            cursor = (cursor / PAGE_SIZE + 1) * PAGE_SIZE;
        }
        let mut cursor = address;
        let mut offset = 0usize;
        while cursor < end {
            let chunk_end = ((cursor / PAGE_SIZE + 1) * PAGE_SIZE).min(end);
            let length = (chunk_end - cursor) as usize;
            let phys = self.translate(cursor, true)?;
            // SAFETY: checked writable user memory of this service, reached
            // through the direct map; the chunk stays in one page.
            unsafe {
                core::ptr::copy_nonoverlapping(data[offset..].as_ptr(), direct_map::to_virtual(phys) as *mut u8, length)
            };
            offset += length;
            cursor = chunk_end;
        }
        Ok(())
    }

    /// Every mapped range, for teardown.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64, Backing)> + '_ {
        self.ranges.iter().map(|(&start, &(size, backing))| (start, size, backing))
    }

    /// Frees the address space's own pages and page tables. Preservable and
    /// borrowed memory is left to its owners.
    pub fn destroy(mut self) {
        let ranges: Vec<(u64, u64, Backing)> = self.ranges().collect();
        for (start, _, backing) in ranges {
            self.unmap(start);
            if let Backing::Owned { phys, order } = backing {
                crate::mm::free_pages(phys, order);
            }
        }
        // Page-table pages come from the scratch pool or the page allocator;
        // pool pages are not returned (the pool is reset by the next boot).
        let mut table_pages = Vec::new();
        self.table.for_each_table::<EntryFormat>(
            &direct_map::read_only_tables(),
            KERNEL_TOP_LEVEL_FIRST_SLOT,
            &mut |page| table_pages.push(page),
        );
        table_pages.push(self.table.root());
        for page in table_pages {
            crate::mm::free_kernel_page(page);
        }
    }
}
