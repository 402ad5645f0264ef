//! The Redis table's blocks: folios of the kernel's preservable memory.

use baton_resp::{Block, Memory};
use baton_user::kho::Folio;
use baton_user::syscall;

/// Preservable memory from the kernel, one folio a block.
pub struct Preservable;

fn block(folio: Folio) -> Block {
    Block { address: folio.address, physical: folio.physical, order: folio.order }
}

impl Memory for Preservable {
    fn allocate(&mut self, order: u32) -> Option<Block> {
        Folio::allocate(order).ok().map(block)
    }

    fn restore(&mut self, physical: u64, order: u32) -> Option<Block> {
        match Folio::restore(physical, order) {
            Ok(folio) => Some(block(folio)),
            Err(error) => {
                log::warn!("kvstore: the table's block at {physical:#x} cannot be restored: {error}");
                None
            }
        }
    }

    fn free(&mut self, block: Block) {
        // Preserved for a restart that did not happen, or not: either way
        // it goes.
        let _ = syscall::kho_unpreserve(block.address, block.size_bytes() as u64);
        let _ = syscall::free_preservable(block.address);
    }

    fn bytes(&self, block: &Block) -> &[u8] {
        // SAFETY: every block came from `allocate` or `restore`: the kernel
        // mapped `size_bytes` of memory at `address` for this service alone,
        // and the table frees it (here) only after its last use.
        unsafe { core::slice::from_raw_parts(block.address as *const u8, block.size_bytes()) }
    }

    fn bytes_mut(&mut self, block: &Block) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` keeps this the only view the
        // table holds while it writes.
        unsafe { core::slice::from_raw_parts_mut(block.address as *mut u8, block.size_bytes()) }
    }
}
