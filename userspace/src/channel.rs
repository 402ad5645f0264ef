//! A `baton-channel` over memory mapped in this service: the region a
//! service allocated and granted, or the one it was granted and mapped.
//!
//! The peer writes the same memory at any time, so every access here is
//! atomic (the indices) or volatile (the bytes): the compiler may neither
//! cache a load nor assume a value it stored is still there.

use core::sync::atomic::{AtomicU32, Ordering};

pub use baton_channel::{ChannelError, Endpoint, Side};

/// `size_bytes` of shared memory at `base`, mapped for as long as this
/// value lives (the kernel keeps a granted region mapped until its grant
/// ends, and then maps zeroed memory of the service's own in its place, so
/// the addresses stay valid for the service's whole life).
#[derive(Debug)]
pub struct Region {
    base: usize,
    size_bytes: usize,
}

impl Region {
    /// The region at `base`.
    ///
    /// # Safety
    ///
    /// `[base, base + size_bytes)` must be mapped read-write in this
    /// service for as long as the region is used (preservable memory it
    /// allocated, or a region it mapped with `share_map`), `base` 4-byte
    /// aligned, and no Rust reference may point into it.
    pub unsafe fn new(base: u64, size_bytes: u64) -> Region {
        Region { base: base as usize, size_bytes: size_bytes as usize }
    }

    fn check(&self, offset: usize, length: usize) -> usize {
        let end = offset.checked_add(length).expect("channel access wraps");
        assert!(end <= self.size_bytes, "channel access past the region");
        self.base + offset
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        let address = self.check(offset, 4);
        assert!(address.is_multiple_of(4), "unaligned channel word");
        // SAFETY: `new`'s contract: the word lies in memory mapped
        // read-write for as long as `self` lives; it is aligned (checked)
        // and only ever accessed atomically or with volatile copies.
        unsafe { &*(address as *const AtomicU32) }
    }
}

impl baton_channel::SharedMemory for Region {
    fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    fn load(&self, offset: usize) -> u32 {
        self.word(offset).load(Ordering::Acquire)
    }

    fn store(&mut self, offset: usize, value: u32) {
        self.word(offset).store(value, Ordering::Release);
    }

    fn read(&self, offset: usize, destination: &mut [u8]) {
        let address = self.check(offset, destination.len());
        for (index, byte) in destination.iter_mut().enumerate() {
            // SAFETY: inside the mapped region (checked above); volatile,
            // as the peer may write it concurrently.
            *byte = unsafe { core::ptr::read_volatile((address + index) as *const u8) };
        }
    }

    fn write(&mut self, offset: usize, source: &[u8]) {
        let address = self.check(offset, source.len());
        for (index, byte) in source.iter().enumerate() {
            // SAFETY: inside the mapped region (checked above), which is
            // writable; volatile, as the peer reads it concurrently.
            unsafe { core::ptr::write_volatile((address + index) as *mut u8, *byte) };
        }
    }
}
