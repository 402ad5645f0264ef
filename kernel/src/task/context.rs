//! Saved trap frames on kernel stacks: the one module of the scheduler
//! that needs `unsafe`, because a thread's state lives where the trap entry
//! code saved it, behind a raw pointer.
//!
//! Every trap saves the interrupted state as a `TrapFrame` at the top of the
//! current kernel stack; a thread that is not running is that saved frame.
//! The rule the scheduler keeps (and this module relies on): a frame is
//! only dereferenced here while its thread is not running, with the
//! scheduler's lock held, on the single CPU.

#![allow(unsafe_code)]

use crate::mm::block::Block;
use crate::mm::direct_map;
use baton_arch::trap::TrapFrame;
use core::ptr::null_mut;

/// Where a thread that is not running resumes.
#[derive(Debug)]
pub struct SavedFrame(*mut TrapFrame);

// SAFETY: the pointer is a place on a kernel stack that only the single CPU
// touches, under the scheduler's lock (see the module documentation).
unsafe impl Send for SavedFrame {}

impl SavedFrame {
    /// No frame yet.
    pub const fn none() -> Self {
        SavedFrame(null_mut())
    }

    /// The frame the trap entry code just saved.
    pub fn from_trap(frame: *mut TrapFrame) -> Self {
        SavedFrame(frame)
    }

    /// The frame to hand back to the trap exit code.
    pub fn as_ptr(&self) -> *mut TrapFrame {
        self.0
    }

    /// The saved state, to change what the thread resumes with.
    pub fn get_mut(&mut self) -> &mut TrapFrame {
        assert!(!self.0.is_null(), "a thread without a saved frame");
        // SAFETY: the pointer is a frame the trap entry code (or
        // `KernelStack::start`) saved at the top of the thread's kernel
        // stack; the thread is not running (the scheduler's rule), so
        // nothing else uses it, and `&mut self` is the only access.
        unsafe { &mut *self.0 }
    }
}

/// A service's kernel stack (the pages are freed with it).
#[derive(Debug)]
pub struct KernelStack {
    block: Block,
}

impl KernelStack {
    /// A kernel stack of `2^order` pages.
    pub fn allocate(order: u32) -> Option<Self> {
        Some(Self { block: Block::allocate(order)? })
    }

    /// The stack's top (kernel virtual address).
    pub fn top(&self) -> u64 {
        direct_map::to_virtual(self.block.phys()) + self.block.size_bytes()
    }

    /// Places the first frame of a thread at the top of the stack.
    pub fn start(&mut self, frame: TrapFrame) -> SavedFrame {
        const _: () = assert!(core::mem::size_of::<TrapFrame>().is_multiple_of(16));
        let place = (self.top() - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
        // SAFETY: the frame lies at the top of this stack, which the block
        // owns and no thread runs on yet; `TrapFrame` needs 16-byte
        // alignment at most, and the top is page-aligned minus its size (a
        // multiple of 16, asserted above).
        unsafe { place.write(frame) };
        SavedFrame(place)
    }
}

/// Switches to a service's page tables before resuming it.
pub fn switch_address_space(space: &crate::mm::user::AddressSpace) {
    // SAFETY: `space` is a live address space, which shares the kernel half
    // (x86_64) or holds only the user half (aarch64), so the kernel stays
    // mapped.
    unsafe { baton_arch::paging::activate_user(space.root()) };
}
