//! A service's address space: its page tables, the memory mapped in it, and
//! checked copies between it and the kernel.
//!
//! Every user pointer is checked here against the service's own page tables
//! (present, user-accessible, writable when written) before the kernel
//! touches the memory, which it then reaches through the direct map.

use super::block::{Block, order_for_bytes};
use super::direct_map::{self, DirectMapTables};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use baton_abi::{PAGE_SIZE, USER_ADDRESS_LIMIT};
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
/// Where a driver's device registers are mapped (`device_map`).
pub const DEVICE_BASE: u64 = 0x0000_0030_0000_0000;
/// Where regions granted by other services are mapped (`share_map`).
pub const SHARED_BASE: u64 = 0x0000_0040_0000_0000;

/// Why an address-space operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceError {
    /// The address is not mapped for the user with the access needed, or
    /// lies outside the user half.
    BadAddress,
    /// An address computation overflowed.
    Overflow,
    /// Out of memory for pages or page tables.
    NoMemory,
    /// Something is already mapped there.
    AlreadyMapped,
    /// An address or size is not page-aligned.
    Misaligned,
    /// One more range would make it need more than
    /// [`baton_abi::MAX_MAPPINGS`] mappings to describe.
    TooManyMappings,
}

/// What backs a mapped range, so exit frees the right things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Pages this address space owns (image, stack): a block it frees with
    /// the mapping.
    Owned,
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
    /// A device's registers (a BAR of the owner's device), uncached; never
    /// freed. Described to a next kernel with the device (a
    /// `MappingKind::Device` mapping).
    Device {
        /// Physical address.
        phys: u64,
    },
    /// Another service's preservable memory granted to this one
    /// (`share_map`); never freed here (the owner holds it). Described to
    /// a next kernel as a `MappingKind::Shared` mapping.
    Shared {
        /// Physical address.
        phys: u64,
        /// The grant it comes from.
        grant: u64,
    },
}

/// One mapped range as [`AddressSpace::mapped`] reports it: `size_bytes`
/// at `virt`, backed by physically contiguous memory at `phys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    /// First virtual address.
    pub virt: u64,
    /// Length in bytes.
    pub size_bytes: u64,
    /// Physical address of the first byte.
    pub phys: u64,
    /// What backs it.
    pub backing: Backing,
    /// User code may write it.
    pub is_writable: bool,
    /// User code may execute it.
    pub is_executable: bool,
}

/// One entry of [`AddressSpace`]'s range table.
#[derive(Debug, Clone, Copy)]
struct MappedEntry {
    size_bytes: u64,
    backing: Backing,
    phys: u64,
    is_writable: bool,
    is_executable: bool,
}

impl MappedEntry {
    /// How a process description sees the range at `virt` (`None`: a
    /// borrowed sub-FDT, which is not described). Image and stack are told
    /// apart by the describer; both are `Image` here, which counts the same
    /// as they are never adjacent (the stack lies at the top of the user
    /// half, away from every image).
    fn as_described(&self, virt: u64) -> Option<baton_procdesc::MappedRange> {
        let (kind, folio_order) = match self.backing {
            Backing::Borrowed { .. } => return None,
            Backing::Device { .. } => (baton_procdesc::MappingKind::Device, 0),
            Backing::Shared { .. } => (baton_procdesc::MappingKind::Shared, 0),
            Backing::Preservable { order, .. } => (baton_procdesc::MappingKind::Preservable, order),
            Backing::Owned => (baton_procdesc::MappingKind::Image, 0),
        };
        let grant_id = match self.backing {
            Backing::Shared { grant, .. } => grant,
            _ => 0,
        };
        Some(baton_procdesc::MappedRange {
            virtual_start: virt,
            size_bytes: self.size_bytes,
            phys_start: self.phys,
            kind,
            is_writable: self.is_writable,
            is_executable: self.is_executable,
            folio_order,
            grant_id,
        })
    }
}

/// Whether mapping a range takes the described-mappings count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Refuse the range that would make the space impossible to describe.
    Check,
    /// A run of a description being rebuilt: already bounded.
    Described,
}

/// A service's address space: freed (its own pages and its page tables)
/// when dropped.
pub struct AddressSpace {
    table: PageTable,
    /// Mapped ranges by start address: (size in bytes, backing, physical
    /// address of the first byte, access).
    ranges: BTreeMap<u64, MappedEntry>,
    /// The blocks of `Backing::Owned` ranges, by start address.
    blocks: BTreeMap<u64, Block>,
}

fn tables() -> DirectMapTables<fn() -> Option<u64>> {
    DirectMapTables { allocate_page: super::allocate_kernel_page }
}

/// User mappings of device registers: read/write, never executed,
/// uncached.
pub fn device_attributes() -> Attributes {
    Attributes { is_writable: true, is_executable: false, is_user: true, memory: MemoryType::Device }
}

/// User-data attributes.
pub fn user_attributes(is_writable: bool, is_executable: bool) -> Attributes {
    Attributes { is_writable, is_executable, is_user: true, memory: MemoryType::Normal }
}

impl AddressSpace {
    /// An empty address space that shares the kernel half.
    pub fn new() -> Result<Self, SpaceError> {
        let mut memory = tables();
        let table = PageTable::new(&mut memory).map_err(|_| SpaceError::NoMemory)?;
        if KERNEL_TOP_LEVEL_FIRST_SLOT < 512 {
            table.share_top_level(&mut memory, &super::kernel_table(), KERNEL_TOP_LEVEL_FIRST_SLOT);
        }
        Ok(Self { table, ranges: BTreeMap::new(), blocks: BTreeMap::new() })
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
    ) -> Result<(), SpaceError> {
        self.map_range(virt, phys, size_bytes, attributes, backing, Count::Check)
    }

    /// As [`AddressSpace::map`], for one run of a process description the
    /// next kernel rebuilds: the description holds at most `MAX_MAPPINGS`
    /// mappings by the same coalescing rule, so the count is not taken
    /// again (taken per run, it would cost the square of the runs).
    pub fn map_described(
        &mut self,
        virt: u64,
        phys: u64,
        size_bytes: u64,
        attributes: Attributes,
        backing: Backing,
    ) -> Result<(), SpaceError> {
        self.map_range(virt, phys, size_bytes, attributes, backing, Count::Described)
    }

    fn map_range(
        &mut self,
        virt: u64,
        phys: u64,
        size_bytes: u64,
        attributes: Attributes,
        backing: Backing,
        count: Count,
    ) -> Result<(), SpaceError> {
        let end = virt.checked_add(size_bytes).ok_or(SpaceError::Overflow)?;
        if end > USER_ADDRESS_LIMIT {
            return Err(SpaceError::BadAddress);
        }
        let entry = MappedEntry {
            size_bytes,
            backing,
            phys,
            is_writable: attributes.is_writable,
            is_executable: attributes.is_executable,
        };
        // A live update describes every range to the next kernel, which
        // accepts at most `MAX_MAPPINGS` mappings (ranges that continue one
        // another share one): refuse now the range that would make this
        // service impossible to describe.
        if count == Count::Check {
            let before = self.ranges.range(..virt).filter_map(|(&start, entry)| entry.as_described(start));
            let after = self.ranges.range(virt..).filter_map(|(&start, entry)| entry.as_described(start));
            let with_new = before.chain(entry.as_described(virt)).chain(after);
            if baton_procdesc::mapping_count(with_new) > baton_abi::MAX_MAPPINGS {
                return Err(SpaceError::TooManyMappings);
            }
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
                baton_mm::paging::MapError::AlreadyMapped { .. } => SpaceError::AlreadyMapped,
                baton_mm::paging::MapError::OutOfTables => SpaceError::NoMemory,
                baton_mm::paging::MapError::Misaligned => SpaceError::Misaligned,
                baton_mm::paging::MapError::Overflow => SpaceError::Overflow,
            }
        })?;
        self.ranges.insert(virt, entry);
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
    ) -> Result<u64, SpaceError> {
        let pages = size_bytes.div_ceil(PAGE_SIZE);
        let mut block = Block::allocate(order_for_bytes(size_bytes)).ok_or(SpaceError::NoMemory)?;
        let length = (pages * PAGE_SIZE) as usize;
        let target = &mut block.as_mut_slice()[..length];
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
        self.map_owned(virt, pages * PAGE_SIZE, attributes, block, Count::Check)
    }

    /// Allocates zeroed pages, maps them at `virt` and returns their physical
    /// address.
    pub fn map_new(&mut self, virt: u64, size_bytes: u64, attributes: Attributes) -> Result<u64, SpaceError> {
        // The block is a power of two of pages; only what was asked for is
        // mapped.
        let pages = size_bytes.div_ceil(PAGE_SIZE);
        let block = Block::allocate_zeroed(order_for_bytes(size_bytes)).ok_or(SpaceError::NoMemory)?;
        self.map_owned(virt, pages * PAGE_SIZE, attributes, block, Count::Check)
    }

    /// Maps `size_bytes` of `block` at `virt`; the block is freed with the
    /// mapping (or now, if mapping fails).
    fn map_owned(
        &mut self,
        virt: u64,
        size_bytes: u64,
        attributes: Attributes,
        block: Block,
        count: Count,
    ) -> Result<u64, SpaceError> {
        let phys = block.phys();
        self.map_range(virt, phys, size_bytes, attributes, Backing::Owned, count)?;
        self.blocks.insert(virt, block);
        Ok(phys)
    }

    /// Maps the whole of `block` at `virt` as this space's own memory (a
    /// process resumed from the previous kernel gets its pages back this
    /// way, one described run at a time: the count is not taken again, as
    /// in [`AddressSpace::map_described`]); the block is freed with the
    /// mapping, or now if mapping fails.
    pub fn map_claimed(&mut self, virt: u64, block: Block, attributes: Attributes) -> Result<(), SpaceError> {
        let size_bytes = block.size_bytes();
        self.map_owned(virt, size_bytes, attributes, block, Count::Described).map(|_| ())
    }

    /// Removes the range mapped at exactly `virt` and returns its backing.
    pub fn unmap(&mut self, virt: u64) -> Option<(u64, Backing)> {
        let MappedEntry { size_bytes: size, backing, .. } = self.ranges.remove(&virt)?;
        let _ = self.table.unmap::<EntryFormat>(&mut tables(), virt, size);
        baton_arch::paging::flush_all();
        // Owned pages are freed once nothing maps them any more.
        self.blocks.remove(&virt);
        Some((size, backing))
    }

    /// The range containing `virt`: (start, size, backing).
    pub fn range_containing(&self, virt: u64) -> Option<(u64, u64, Backing)> {
        let (&start, entry) = self.ranges.range(..=virt).next_back()?;
        (virt < start + entry.size_bytes).then_some((start, entry.size_bytes, entry.backing))
    }

    /// Finds `size_bytes` of unmapped space at or above `base`, aligned to
    /// `alignment`.
    pub fn find_free(&self, base: u64, size_bytes: u64, alignment: u64) -> Option<u64> {
        let mut candidate = base.next_multiple_of(alignment);
        for (&start, &MappedEntry { size_bytes: size, .. }) in self.ranges.range(base..) {
            if candidate + size_bytes <= start {
                break;
            }
            candidate = (start + size).next_multiple_of(alignment).max(candidate);
        }
        (candidate + size_bytes <= USER_ADDRESS_LIMIT).then_some(candidate)
    }

    /// The physical address `virt` maps to, if it is mapped for the user
    /// with the needed access.
    fn translate(&self, virt: u64, needs_write: bool) -> Result<u64, SpaceError> {
        if virt >= USER_ADDRESS_LIMIT {
            return Err(SpaceError::BadAddress);
        }
        let (phys, attributes) =
            self.table.translate::<EntryFormat>(&direct_map::read_only_tables(), virt).ok_or(SpaceError::BadAddress)?;
        if !attributes.is_user || (needs_write && !attributes.is_writable) {
            return Err(SpaceError::BadAddress);
        }
        Ok(phys)
    }

    /// Copies `length` bytes from the service at `address`.
    pub fn read(&self, address: u64, length: u64) -> Result<Vec<u8>, SpaceError> {
        let end = address.checked_add(length).ok_or(SpaceError::Overflow)?;
        if end > USER_ADDRESS_LIMIT {
            return Err(SpaceError::BadAddress);
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(length as usize).map_err(|_| SpaceError::NoMemory)?;
        let mut cursor = address;
        while cursor < end {
            let page_end = ((cursor / PAGE_SIZE) + 1) * PAGE_SIZE;
            let chunk_end = page_end.min(end);
            let phys = self.translate(cursor, false)?;
            let filled = bytes.len();
            bytes.resize(filled + (chunk_end - cursor) as usize, 0);
            // `translate` found the page mapped for this service, so it is RAM.
            direct_map::read(phys, &mut bytes[filled..]).map_err(|_| SpaceError::BadAddress)?;
            cursor = chunk_end;
        }
        Ok(bytes)
    }

    /// Copies `data` into the service at `address` (checked writable).
    pub fn write(&self, address: u64, data: &[u8]) -> Result<(), SpaceError> {
        let end = address.checked_add(data.len() as u64).ok_or(SpaceError::Overflow)?;
        if end > USER_ADDRESS_LIMIT {
            return Err(SpaceError::BadAddress);
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
            // SAFETY: `translate` checked the page is mapped writable for this
            // service (its own or its preservable memory, RAM); the chunk
            // stays in one page, and the kernel holds no reference into it.
            unsafe { direct_map::write(phys, &data[offset..offset + length]) };
            offset += length;
            cursor = chunk_end;
        }
        Ok(())
    }

    /// Every mapped range with what backs it and its access, in address
    /// order (for describing a process to the next kernel).
    pub fn mapped(&self) -> Vec<Mapped> {
        self.ranges
            .iter()
            .map(|(&virt, entry)| Mapped {
                virt,
                size_bytes: entry.size_bytes,
                phys: entry.phys,
                backing: entry.backing,
                is_writable: entry.is_writable,
                is_executable: entry.is_executable,
            })
            .collect()
    }

    /// Every mapped range, for teardown.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64, Backing)> + '_ {
        self.ranges.iter().map(|(&start, entry)| (start, entry.size_bytes, entry.backing))
    }
}

impl Drop for AddressSpace {
    /// Frees the address space's own pages and page tables. Preservable and
    /// borrowed memory is left to its owners.
    fn drop(&mut self) {
        let starts: Vec<u64> = self.ranges.keys().copied().collect();
        for start in starts {
            self.unmap(start);
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
            super::free_kernel_page(page);
        }
    }
}
