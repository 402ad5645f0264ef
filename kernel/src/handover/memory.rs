//! Physical memory as the KHO code sees it: RAM through the direct map for
//! reads, and metadata (bitmaps, chunks, the root FDT) in pages this kernel
//! owns as blocks from the page allocator (never scratch), sub-page pieces
//! carved from whole pages. Writes go only to that metadata, or, for the
//! incoming handover, to the previous kernel's metadata that the memory
//! manager keeps out of the allocator.

use crate::mm;
use crate::mm::block::{Block, order_for_bytes};
use crate::mm::direct_map::Ram;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use baton_abi::PAGE_SIZE;
use baton_kho::memory::{AccessError, MetadataAllocator, PhysMemory};

/// The size of the pieces bitmaps are carved into.
const SLOT_BYTES: u64 = baton_kho::BITMAP_SIZE_BYTES;

/// RAM reads, metadata allocation and metadata writes for KHO.
pub struct KernelMemory {
    ram: Ram,
    /// Metadata pages this kernel allocated, by physical address.
    blocks: BTreeMap<u64, Block>,
    /// Free 512-byte slots (in pages of `blocks`) for bitmaps.
    free_slots: Vec<u64>,
    /// Whether writes outside `blocks` go to the incoming handover's
    /// metadata.
    is_incoming: bool,
}

impl KernelMemory {
    /// Memory for the outgoing handover.
    pub fn outgoing() -> Self {
        Self { ram: Ram::now(), blocks: BTreeMap::new(), free_slots: Vec::new(), is_incoming: false }
    }

    /// Memory for reading (and marking taken) the incoming handover.
    pub fn incoming() -> Self {
        Self { is_incoming: true, ..Self::outgoing() }
    }

    /// The owned block that holds `[phys, phys + size_bytes)`.
    fn block_for(&mut self, phys: u64, size_bytes: u64) -> Option<&mut Block> {
        let (_, block) = self.blocks.range_mut(..=phys).next_back()?;
        let end = phys.checked_add(size_bytes)?;
        (end <= block.range().end).then_some(block)
    }
}

fn outside(phys: u64, size_bytes: u64) -> AccessError {
    AccessError::OutsideRam { phys, size_bytes }
}

impl PhysMemory for KernelMemory {
    fn read(&self, phys: u64, buffer: &mut [u8]) -> Result<(), AccessError> {
        self.ram.read(phys, buffer).map_err(|_| outside(phys, buffer.len() as u64))
    }

    /// Writes metadata this kernel owns; anything else is refused as if it
    /// were outside RAM.
    fn write(&mut self, phys: u64, data: &[u8]) -> Result<(), AccessError> {
        let size_bytes = data.len() as u64;
        let is_incoming = self.is_incoming;
        if let Some(block) = self.block_for(phys, size_bytes) {
            let offset = phys - block.phys();
            return block.write_at(offset, data).map_err(|_| outside(phys, size_bytes));
        }
        if is_incoming {
            return mm::write_handover_metadata(phys, data).map_err(|_| outside(phys, size_bytes));
        }
        Err(outside(phys, size_bytes))
    }

    fn read_u64(&self, phys: u64) -> Result<u64, AccessError> {
        self.ram.read_u64(phys).map_err(|_| outside(phys, 8))
    }
}

impl MetadataAllocator for KernelMemory {
    fn allocate_zeroed(&mut self, size_bytes: u64, align_bytes: u64) -> Option<u64> {
        if size_bytes <= SLOT_BYTES && align_bytes <= SLOT_BYTES {
            if self.free_slots.is_empty() {
                let page = Block::allocate_zeroed(0)?;
                let phys = page.phys();
                self.free_slots.extend((0..PAGE_SIZE / SLOT_BYTES).rev().map(|slot| phys + slot * SLOT_BYTES));
                self.blocks.insert(phys, page);
                return self.free_slots.pop();
            }
            let slot = self.free_slots.pop()?;
            // A slot given back earlier holds old contents.
            self.write(slot, &[0; SLOT_BYTES as usize]).ok()?;
            return Some(slot);
        }
        let block = Block::allocate_zeroed(order_for_bytes(size_bytes))?;
        let phys = block.phys();
        self.blocks.insert(phys, block);
        Some(phys)
    }

    fn free(&mut self, phys: u64, size_bytes: u64, align_bytes: u64) {
        if size_bytes <= SLOT_BYTES && align_bytes <= SLOT_BYTES {
            self.free_slots.push(phys);
        } else {
            // Dropping the block frees its pages.
            self.blocks.remove(&phys);
        }
    }
}
