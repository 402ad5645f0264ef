//! Cross-module tests: rules, round trips, hostile inputs and property tests.

mod fdt;
mod outgoing;
mod proptests;
mod serial;
mod tracker;

use alloc::vec::Vec;

use crate::bitmap::Folio;
use crate::memory::{PhysMemory, PhysRange, SimulatedMemory};
use crate::tracker::PreservationTracker;

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

/// RAM `[0, 64 GiB)`; metadata comes from `[60 GiB, 61 GiB)`, so tests keep
/// their folios below 60 GiB.
pub(crate) fn memory() -> SimulatedMemory {
    SimulatedMemory::new(&[PhysRange::new(0, 64 * GIB)], PhysRange::new(60 * GIB, 61 * GIB))
}

/// Every folio of the tracker, in iteration order.
pub(crate) fn tracked_folios(tracker: &PreservationTracker, memory: &SimulatedMemory) -> Vec<Folio> {
    tracker.folios(memory).collect::<Result<Vec<_>, _>>().unwrap()
}

/// Write a chunk by hand: header and entries, native-endian.
pub(crate) fn write_chunk(
    memory: &mut SimulatedMemory,
    phys: u64,
    next: u64,
    order: u32,
    element_count: u32,
    entries: &[(u64, u64)],
) {
    let mut chunk = alloc::vec![0_u8; 4096];
    chunk[0..8].copy_from_slice(&next.to_ne_bytes());
    chunk[8..12].copy_from_slice(&order.to_ne_bytes());
    chunk[12..16].copy_from_slice(&element_count.to_ne_bytes());
    for (index, (phys_start, bitmap)) in entries.iter().enumerate() {
        let offset = 16 + index * 16;
        chunk[offset..offset + 8].copy_from_slice(&phys_start.to_ne_bytes());
        chunk[offset + 8..offset + 16].copy_from_slice(&bitmap.to_ne_bytes());
    }
    memory.write(phys, &chunk).unwrap();
}

/// Write a bitmap by hand with the given bits set.
pub(crate) fn write_bitmap(memory: &mut SimulatedMemory, phys: u64, bits: &[u64]) {
    let mut words = [0_u64; 64];
    for bit in bits {
        words[(*bit / 64) as usize] |= 1 << (bit % 64);
    }
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
    memory.write(phys, &bytes).unwrap();
}

/// Simulated memory in which one write fails after a number of successful
/// ones (a transient fault): for the paths that must undo a half-done commit.
pub(crate) struct FaultyMemory {
    pub inner: SimulatedMemory,
    /// Successful writes before the failing one (`None`: no failure).
    pub writes_before_failure: Option<usize>,
}

impl PhysMemory for FaultyMemory {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), crate::memory::AccessError> {
        self.inner.read(phys, buf)
    }

    fn write(&mut self, phys: u64, data: &[u8]) -> Result<(), crate::memory::AccessError> {
        match self.writes_before_failure {
            Some(0) => {
                self.writes_before_failure = None;
                Err(crate::memory::AccessError::OutsideRam { phys, size_bytes: data.len() as u64 })
            }
            Some(left) => {
                self.writes_before_failure = Some(left - 1);
                self.inner.write(phys, data)
            }
            None => self.inner.write(phys, data),
        }
    }
}

impl crate::memory::MetadataAllocator for FaultyMemory {
    fn allocate_zeroed(&mut self, size_bytes: u64, align_bytes: u64) -> Option<u64> {
        self.inner.allocate_zeroed(size_bytes, align_bytes)
    }

    fn free(&mut self, phys: u64, size_bytes: u64, align_bytes: u64) {
        self.inner.free(phys, size_bytes, align_bytes);
    }
}
