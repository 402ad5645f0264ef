//! Sparse simulated physical memory for host tests, benches, fuzzing and kernel-side scenarios.
//!
//! RAM is a set of physical ranges; bytes live in 4 KiB pages that are
//! created on first write, so a 256 GiB machine costs only the pages that
//! are actually written (bitmaps, chunks, FDTs). Untouched RAM reads as
//! zero; any access outside RAM fails with [`AccessError::OutsideRam`].
//! A bump allocator with a free list hands out metadata from a dedicated
//! region, and an allocation budget lets tests inject allocation failures.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use super::{
    AccessError, MetadataAllocator, PAGE_SHIFT, PAGE_SIZE_BYTES, PhysMemory, PhysRange, align_up, normalize_ranges,
    range_inside_ram,
};

/// `PAGE_SIZE_BYTES` as a buffer length.
const PAGE_BYTES: usize = 4096;

type Page = Box<[u8; PAGE_BYTES]>;

/// Sparse simulated physical memory with a metadata allocator.
#[derive(Clone)]
pub struct SimulatedMemory {
    ram: Vec<PhysRange>,
    /// Written pages, keyed by page frame number.
    pages: BTreeMap<u64, Page>,
    metadata_region: PhysRange,
    next_metadata_phys: u64,
    /// Freed blocks by size, for reuse.
    free_blocks: BTreeMap<u64, Vec<u64>>,
    /// Live allocations: physical address to size.
    live_allocations: BTreeMap<u64, u64>,
    /// Number of further allocations that may succeed (`None`: unlimited).
    allocation_budget: Option<u64>,
}

impl SimulatedMemory {
    /// Simulated RAM over `ram` (merged and sorted), with metadata allocated
    /// from `metadata_region`.
    ///
    /// # Panics
    ///
    /// If `metadata_region` is not inside RAM: a test set-up error.
    pub fn new(ram: &[PhysRange], metadata_region: PhysRange) -> Self {
        let ram = normalize_ranges(ram);
        assert!(
            metadata_region.is_empty() || range_inside_ram(&ram, &metadata_region),
            "metadata region {metadata_region} is not inside simulated RAM"
        );
        Self {
            ram,
            pages: BTreeMap::new(),
            metadata_region,
            next_metadata_phys: metadata_region.start,
            free_blocks: BTreeMap::new(),
            live_allocations: BTreeMap::new(),
            allocation_budget: None,
        }
    }

    /// One RAM range whose last `metadata_size_bytes` serve as the metadata region.
    ///
    /// # Panics
    ///
    /// If the metadata region does not fit in the RAM range.
    pub fn with_metadata_at_end(ram: PhysRange, metadata_size_bytes: u64) -> Self {
        let metadata_start = ram
            .end
            .checked_sub(metadata_size_bytes)
            .filter(|start| *start >= ram.start)
            .expect("metadata region larger than RAM");
        Self::new(&[ram], PhysRange::new(metadata_start, ram.end))
    }

    /// The merged RAM ranges.
    pub fn ram_ranges(&self) -> &[PhysRange] {
        &self.ram
    }

    /// The region metadata is allocated from.
    pub fn metadata_region(&self) -> PhysRange {
        self.metadata_region
    }

    /// Let only `budget` more allocations succeed (`None`: unlimited).
    pub fn set_allocation_budget(&mut self, budget: Option<u64>) {
        self.allocation_budget = budget;
    }

    /// Number of metadata allocations not yet freed.
    pub fn live_allocation_count(&self) -> usize {
        self.live_allocations.len()
    }

    /// Bytes of metadata allocations not yet freed.
    pub fn live_allocation_bytes(&self) -> u64 {
        self.live_allocations.values().sum()
    }

    /// Pages that hold data (the real memory cost of the simulation).
    pub fn touched_page_count(&self) -> usize {
        self.pages.len()
    }

    fn check_inside_ram(&self, phys: u64, size_bytes: u64) -> Result<(), AccessError> {
        let outside = AccessError::OutsideRam { phys, size_bytes };
        let range = PhysRange::from_start_size(phys, size_bytes).ok_or(outside)?;
        if size_bytes == 0 || range_inside_ram(&self.ram, &range) { Ok(()) } else { Err(outside) }
    }

    /// Zero `[phys, phys + size_bytes)`, dropping pages that become wholly zero.
    fn zero(&mut self, phys: u64, size_bytes: u64) {
        let mut address = phys;
        let end = phys.saturating_add(size_bytes);
        while address < end {
            let frame = address >> PAGE_SHIFT;
            let offset = address % PAGE_SIZE_BYTES;
            let chunk = (PAGE_SIZE_BYTES - offset).min(end - address);
            if chunk == PAGE_SIZE_BYTES {
                self.pages.remove(&frame);
            } else if let Some(page) = self.pages.get_mut(&frame) {
                let start = offset as usize;
                if let Some(bytes) = page.get_mut(start..start + chunk as usize) {
                    bytes.fill(0);
                }
            }
            address += chunk;
        }
    }

    fn page_slice(&self, phys: u64, length: usize) -> Option<&[u8]> {
        let offset = (phys % PAGE_SIZE_BYTES) as usize;
        let page = self.pages.get(&(phys >> PAGE_SHIFT))?;
        page.get(offset..offset.checked_add(length)?)
    }
}

impl fmt::Debug for SimulatedMemory {
    /// A summary: the pages themselves would be megabytes of output.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimulatedMemory")
            .field("ram", &self.ram)
            .field("touched_page_count", &self.pages.len())
            .field("metadata_region", &self.metadata_region)
            .field("live_allocation_count", &self.live_allocations.len())
            .field("allocation_budget", &self.allocation_budget)
            .finish_non_exhaustive()
    }
}

impl PhysMemory for SimulatedMemory {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        self.check_inside_ram(phys, buf.len() as u64)?;
        let mut address = phys;
        let mut remaining = buf;
        while !remaining.is_empty() {
            let offset = (address % PAGE_SIZE_BYTES) as usize;
            let chunk = (PAGE_BYTES - offset).min(remaining.len());
            let (head, tail) = remaining.split_at_mut(chunk);
            match self.page_slice(address, chunk) {
                Some(bytes) => head.copy_from_slice(bytes),
                None => head.fill(0),
            }
            address += chunk as u64;
            remaining = tail;
        }
        Ok(())
    }

    fn write(&mut self, phys: u64, data: &[u8]) -> Result<(), AccessError> {
        self.check_inside_ram(phys, data.len() as u64)?;
        let mut address = phys;
        let mut remaining = data;
        while !remaining.is_empty() {
            let offset = (address % PAGE_SIZE_BYTES) as usize;
            let chunk = (PAGE_BYTES - offset).min(remaining.len());
            let (head, tail) = remaining.split_at(chunk);
            let frame = address >> PAGE_SHIFT;
            // Writing zeros to a page that was never written changes nothing:
            // keep the simulation sparse.
            if self.pages.contains_key(&frame) || head.iter().any(|byte| *byte != 0) {
                let page = self.pages.entry(frame).or_insert_with(|| Box::new([0; PAGE_BYTES]));
                if let Some(bytes) = page.get_mut(offset..offset + chunk) {
                    bytes.copy_from_slice(head);
                }
            }
            address += chunk as u64;
            remaining = tail;
        }
        Ok(())
    }

    fn read_u64(&self, phys: u64) -> Result<u64, AccessError> {
        let is_fast_path = phys % PAGE_SIZE_BYTES <= PAGE_SIZE_BYTES - 8
            && PhysRange::from_start_size(phys, 8).is_some_and(|word| range_inside_ram(&self.ram, &word));
        if is_fast_path {
            return Ok(match self.page_slice(phys, 8) {
                Some(bytes) => {
                    let mut word = [0_u8; 8];
                    word.copy_from_slice(bytes);
                    u64::from_ne_bytes(word)
                }
                None => 0,
            });
        }
        let mut word = [0_u8; 8];
        self.read(phys, &mut word)?;
        Ok(u64::from_ne_bytes(word))
    }

    fn write_u64(&mut self, phys: u64, value: u64) -> Result<(), AccessError> {
        self.write(phys, &value.to_ne_bytes())
    }
}

impl MetadataAllocator for SimulatedMemory {
    fn allocate_zeroed(&mut self, size_bytes: u64, align_bytes: u64) -> Option<u64> {
        if size_bytes == 0 || !align_bytes.is_power_of_two() {
            return None;
        }
        if let Some(budget) = self.allocation_budget {
            self.allocation_budget = Some(budget.checked_sub(1)?);
        }
        let reused = self.free_blocks.get_mut(&size_bytes).and_then(|blocks| {
            let position = blocks.iter().position(|phys| phys % align_bytes == 0)?;
            Some(blocks.swap_remove(position))
        });
        let phys = match reused {
            Some(phys) => phys,
            None => {
                let start = align_up(self.next_metadata_phys, align_bytes)?;
                let end = start.checked_add(size_bytes)?;
                if end > self.metadata_region.end {
                    return None;
                }
                self.next_metadata_phys = end;
                start
            }
        };
        self.zero(phys, size_bytes);
        self.live_allocations.insert(phys, size_bytes);
        Some(phys)
    }

    fn free(&mut self, phys: u64, size_bytes: u64, align_bytes: u64) {
        let live_size = self.live_allocations.remove(&phys);
        assert_eq!(
            live_size,
            Some(size_bytes),
            "free of {phys:#x} ({size_bytes} bytes) does not match a live allocation"
        );
        assert!(phys.is_multiple_of(align_bytes), "free of {phys:#x} with a different alignment");
        self.free_blocks.entry(size_bytes).or_default().push(phys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn untouched_ram_reads_zero_and_outside_ram_fails() {
        let memory = SimulatedMemory::new(&[PhysRange::new(0, 256 * GIB)], PhysRange::new(0, GIB));
        assert_eq!(memory.read_u64(200 * GIB), Ok(0));
        assert_eq!(memory.read_u64(256 * GIB - 4), Err(AccessError::OutsideRam { phys: 256 * GIB - 4, size_bytes: 8 }));
        let mut buffer = [1_u8; 16];
        assert!(memory.read(256 * GIB, &mut buffer).is_err());
        assert_eq!(memory.touched_page_count(), 0);
    }

    #[test]
    fn writes_cross_pages_and_stay_sparse() {
        let mut memory = SimulatedMemory::new(&[PhysRange::new(0x10_0000, 0x20_0000)], PhysRange::new(0, 0));
        memory.write(0x10_0ffc, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut buffer = [0_u8; 8];
        memory.read(0x10_0ffc, &mut buffer).unwrap();
        assert_eq!(buffer, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(memory.read_u64(0x10_0ffc).unwrap(), u64::from_ne_bytes(buffer));
        assert_eq!(memory.touched_page_count(), 2);
        memory.write(0x18_0000, &[0; 4096]).unwrap();
        assert_eq!(memory.touched_page_count(), 2);
        assert!(memory.write(0x20_0000 - 4, &[0; 8]).is_err());
    }

    #[test]
    fn allocator_zeroes_aligns_reuses_and_honours_the_budget() {
        let mut memory = SimulatedMemory::with_metadata_at_end(PhysRange::new(0, 16 << 20), 1 << 20);
        let first = memory.allocate_zeroed(512, 512).unwrap();
        assert_eq!(first % 512, 0);
        assert!(memory.metadata_region().contains_address(first));
        memory.write_u64(first, u64::MAX).unwrap();
        memory.free(first, 512, 512);
        let again = memory.allocate_zeroed(512, 512).unwrap();
        assert_eq!(again, first);
        assert_eq!(memory.read_u64(again).unwrap(), 0);
        let page = memory.allocate_zeroed(4096, 4096).unwrap();
        assert_eq!(page % 4096, 0);
        assert_eq!(memory.live_allocation_count(), 2);
        memory.set_allocation_budget(Some(1));
        assert!(memory.allocate_zeroed(512, 512).is_some());
        assert!(memory.allocate_zeroed(512, 512).is_none());
        memory.set_allocation_budget(None);
        assert!(memory.allocate_zeroed(2 << 20, 4096).is_none(), "region exhausted");
    }
}
