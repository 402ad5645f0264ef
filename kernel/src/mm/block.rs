//! Owned physical pages: a run of whole pages that belongs to one owner,
//! freed back to the page allocator when dropped, so no error path frees
//! by hand.
//!
//! A block comes from the page allocator (naturally aligned, `2^order`
//! pages), or is handed back from the incoming handover to the owner of
//! preserved memory ([`Block::claim_preserved`], any length). Its bytes are
//! reached through the direct map: the block is the proof of ownership that
//! [`super::direct_map`]'s raw access relies on.

use super::direct_map;
use baton_mm::{PAGE_SIZE, Range};

/// Owned, physically contiguous whole pages.
#[derive(Debug)]
pub struct Block {
    range: Range,
}

/// An access past the end of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds;

pub use baton_mm::order_for_bytes;

impl Block {
    /// `2^order` pages from the page allocator (never scratch), not zeroed.
    pub fn allocate(order: u32) -> Option<Block> {
        let phys = super::allocate_frames(order)?;
        Some(Block { range: Range::new(phys, phys + (PAGE_SIZE << order)) })
    }

    /// As [`Block::allocate`], zeroed.
    pub fn allocate_zeroed(order: u32) -> Option<Block> {
        let mut block = Block::allocate(order)?;
        block.zero();
        Some(block)
    }

    /// A zeroed block large enough for `size_bytes`.
    pub fn for_bytes_zeroed(size_bytes: u64) -> Option<Block> {
        Block::allocate_zeroed(order_for_bytes(size_bytes))
    }

    /// A zeroed block large enough for `data`, holding a copy of it.
    pub fn copy_of(data: &[u8]) -> Option<Block> {
        let mut block = Block::for_bytes_zeroed(data.len() as u64)?;
        block.as_mut_slice()[..data.len()].copy_from_slice(data);
        Some(block)
    }

    /// `2^order` zeroed pages for memory a service asked for: refused when
    /// it would leave less than [`super::service_reserve_bytes`] free.
    pub fn allocate_for_service(order: u32) -> Option<Block> {
        let phys = super::allocate_service_frames(order)?;
        let mut block = Block { range: Range::new(phys, phys + (PAGE_SIZE << order)) };
        block.zero();
        Some(block)
    }

    /// Takes preserved memory that waits for its owner out of the waiting
    /// set: the caller (the incoming handover) has checked that its service
    /// owns it. `None` if `range` is not (wholly) preserved memory that is
    /// still waiting.
    pub fn claim_preserved(range: Range) -> Option<Block> {
        super::claim_waiting_preserved(range).then_some(Block { range })
    }

    /// Where the block starts.
    pub fn phys(&self) -> u64 {
        self.range.start
    }

    /// Its size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.range.size_bytes()
    }

    /// Its physical range.
    pub fn range(&self) -> Range {
        self.range
    }

    /// Its bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the block owns its pages exclusively; `&mut self` makes
        // this the only access while the slice lives.
        unsafe { direct_map::slice_mut(self.range) }
    }

    #[cfg(feature = "testing")]
    /// Its bytes as words.
    pub fn as_mut_words(&mut self) -> &mut [u64] {
        let bytes = self.as_mut_slice();
        // SAFETY: pages are 4096-byte aligned, so the start is aligned for
        // u64 and the length a multiple of 8; every bit pattern is a u64.
        unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<u64>(), bytes.len() / 8) }
    }

    /// Fills it with zeroes.
    pub fn zero(&mut self) {
        // SAFETY: the block owns its pages.
        unsafe { direct_map::write_bytes(self.range.start, 0, self.range.size_bytes()) };
    }

    /// Copies `data` to `offset` bytes into the block.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let end = offset.checked_add(data.len() as u64).ok_or(OutOfBounds)?;
        if end > self.size_bytes() {
            return Err(OutOfBounds);
        }
        // SAFETY: inside the block (checked), which owns its pages.
        unsafe { direct_map::write(self.range.start + offset, data) };
        Ok(())
    }

    /// Splits the pages from `offset` bytes on into a block of their own;
    /// `None` (this block unchanged) unless `offset` is a page boundary
    /// strictly inside it. Ownership is only divided, never shared.
    pub fn split_off(&mut self, offset: u64) -> Option<Block> {
        if offset == 0 || offset >= self.size_bytes() || !offset.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let tail = Range::new(self.range.start + offset, self.range.end);
        self.range = Range::new(self.range.start, tail.start);
        Some(Block { range: tail })
    }

    /// Gives the pages up without freeing them: their ownership passes to
    /// something that outlives this kernel's bookkeeping (the heap, or the
    /// next kernel through the handover).
    pub fn leak(self) -> Range {
        let range = self.range;
        core::mem::forget(self);
        range
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        super::free_range(self.range);
    }
}
