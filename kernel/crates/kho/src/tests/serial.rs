//! Chunk list: layout, round trips, every validation error on hand-crafted hostile lists, and restore.

use alloc::vec::Vec;

use super::{GIB, MIB, memory, tracked_folios, write_bitmap, write_chunk};
use crate::bitmap::{Folio, FolioRun, MAX_ORDER};
use crate::memory::{PhysMemory, PhysRange, SimulatedMemory};
use crate::serial::{
    ChunkListError, DEFAULT_MAX_CHUNK_COUNT, IncomingPreservations, RestoreError, SerializeError, serialize,
};
use crate::tracker::PreservationTracker;

/// Where the hand-made lists put their chunks and bitmaps.
const CHUNKS: u64 = 50 * GIB;
const BITMAPS: u64 = 51 * GIB;

fn ram() -> [PhysRange; 1] {
    [PhysRange::new(0, 64 * GIB)]
}

fn walk(memory: &SimulatedMemory, head: u64) -> Result<IncomingPreservations, ChunkListError> {
    IncomingPreservations::walk(memory, head, &ram())
}

fn incoming_folios(incoming: &IncomingPreservations, memory: &SimulatedMemory) -> Vec<Folio> {
    incoming.folios(memory).collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn chunk_layout_is_the_documented_one() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 0x1000, 0).unwrap();
    tracker.preserve_folio(&mut memory, 3 * GIB, 18).unwrap();
    let chunks = serialize(&tracker, &mut memory).unwrap();
    assert_eq!(chunks.chunk_count(), 2, "one chunk per order");
    assert_eq!(chunks.bitmap_count(), 2);
    let head = chunks.head_phys();
    assert_eq!(head % 4096, 0);
    let second = chunks.chunk_pages()[1];
    let bitmaps: Vec<_> = tracker.bitmap_entries().collect();
    // Header: next (u64), order (u32), element_count (u32), native-endian.
    assert_eq!(memory.read_u64(head).unwrap(), second);
    let mut header = [0_u8; 8];
    memory.read(head + 8, &mut header).unwrap();
    assert_eq!(u32::from_ne_bytes(header[0..4].try_into().unwrap()), 0);
    assert_eq!(u32::from_ne_bytes(header[4..8].try_into().unwrap()), 1);
    // Entry 0 at offset 16: phys_start then bitmap address.
    assert_eq!(memory.read_u64(head + 16).unwrap(), 0);
    assert_eq!(memory.read_u64(head + 24).unwrap(), bitmaps[0].2);
    // The second chunk ends the list and has order 18.
    assert_eq!(memory.read_u64(second).unwrap(), 0);
    memory.read(second + 8, &mut header).unwrap();
    assert_eq!(u32::from_ne_bytes(header[0..4].try_into().unwrap()), 18);
    assert_eq!(memory.read_u64(second + 24).unwrap(), bitmaps[1].2, "bitmaps are referenced in place");
}

#[test]
fn empty_tracker_serialises_to_a_zero_head() {
    let mut memory = memory();
    let chunks = serialize(&PreservationTracker::new(), &mut memory).unwrap();
    assert_eq!(chunks.head_phys(), 0);
    assert_eq!(chunks.chunk_count(), 0);
    let incoming = walk(&memory, 0).unwrap();
    assert_eq!(incoming.remaining_folio_count(), 0);
    assert_eq!(incoming.chunk_count(), 0);
}

#[test]
fn more_than_255_bitmaps_of_one_order_take_several_chunks() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    for bitmap in 0..300 {
        tracker.preserve_folio(&mut memory, bitmap * 16 * MIB + 4096, 0).unwrap();
    }
    let chunks = serialize(&tracker, &mut memory).unwrap();
    assert_eq!(chunks.chunk_count(), 2);
    let incoming = walk(&memory, chunks.head_phys()).unwrap();
    assert_eq!(incoming.bitmap_count(), 300);
    assert_eq!(incoming_folios(&incoming, &memory), tracked_folios(&tracker, &memory));
    assert_eq!(incoming.chunk_pages(), chunks.chunk_pages());
    let metadata: Vec<PhysRange> = incoming.metadata_ranges().collect();
    assert_eq!(metadata.len(), 2 + 300);
    assert!(metadata.iter().take(2).all(|range| range.size_bytes() == 4096));
    assert!(metadata.iter().skip(2).all(|range| range.size_bytes() == 512));
}

#[test]
fn freeing_chunks_returns_their_pages_and_serialise_failure_leaks_nothing() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    for order in 0..5 {
        tracker.preserve_folio(&mut memory, (order as u64 + 1) * GIB, order).unwrap();
    }
    let bitmaps = memory.live_allocation_count();
    let chunks = serialize(&tracker, &mut memory).unwrap();
    assert_eq!(memory.live_allocation_count(), bitmaps + 5);
    chunks.free(&mut memory);
    assert_eq!(memory.live_allocation_count(), bitmaps);
    memory.set_allocation_budget(Some(3));
    assert_eq!(serialize(&tracker, &mut memory), Err(SerializeError::OutOfMetadataMemory));
    assert_eq!(memory.live_allocation_count(), bitmaps);
}

#[test]
fn round_trip_keeps_orders_and_addresses() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_range(&mut memory, 0x3000, 5 * GIB + 0x5000).unwrap();
    tracker.preserve_folio(&mut memory, 10 * GIB, 18).unwrap();
    tracker.preserve_folio(&mut memory, 20 * GIB + 4096 * 4095, 0).unwrap();
    let chunks = serialize(&tracker, &mut memory).unwrap();
    let incoming = walk(&memory, chunks.head_phys()).unwrap();
    assert_eq!(incoming_folios(&incoming, &memory), tracked_folios(&tracker, &memory));
    assert_eq!(incoming.remaining_folio_count(), tracker.total_folio_count());
    assert_eq!(incoming.remaining_bytes(), tracker.preserved_bytes());
    assert_eq!(incoming.folio_counts(), tracker.folio_counts());
}

// ---- Hostile lists, one per error. -------------------------------------

#[test]
fn misaligned_chunk() {
    let memory = memory();
    assert_eq!(walk(&memory, CHUNKS + 8).unwrap_err(), ChunkListError::MisalignedChunk { phys: CHUNKS + 8 });
}

#[test]
fn chunk_outside_ram() {
    let mut memory = memory();
    assert_eq!(walk(&memory, 64 * GIB).unwrap_err(), ChunkListError::ChunkOutsideRam { phys: 64 * GIB });
    // The second chunk points past RAM.
    write_chunk(&mut memory, CHUNKS, 1 << 60, 0, 0, &[]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::ChunkOutsideRam { phys: 1 << 60 });
    // A page-aligned address whose page would wrap.
    write_chunk(&mut memory, CHUNKS, !0xfff_u64, 0, 0, &[]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::ChunkOutsideRam { phys: !0xfff_u64 });
}

#[test]
fn chunk_cycle() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, CHUNKS + 4096, 0, 0, &[]);
    write_chunk(&mut memory, CHUNKS + 4096, CHUNKS, 0, 0, &[]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::ChunkCycle { phys: CHUNKS });
    // A chunk pointing at itself.
    write_chunk(&mut memory, CHUNKS, CHUNKS, 0, 0, &[]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::ChunkCycle { phys: CHUNKS });
}

#[test]
fn too_many_chunks() {
    let mut memory = memory();
    for index in 0..5 {
        let next = if index == 4 { 0 } else { CHUNKS + (index + 1) * 4096 };
        write_chunk(&mut memory, CHUNKS + index * 4096, next, 0, 0, &[]);
    }
    assert_eq!(
        IncomingPreservations::walk_with_limit(&memory, CHUNKS, &ram(), 4).unwrap_err(),
        ChunkListError::TooManyChunks { limit: 4 }
    );
    let incoming = IncomingPreservations::walk_with_limit(&memory, CHUNKS, &ram(), 5).unwrap();
    assert_eq!(incoming.chunk_count(), 5, "empty chunks are accepted");
    const { assert!(DEFAULT_MAX_CHUNK_COUNT >= 65536) };
}

#[test]
fn bad_order() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, 0, MAX_ORDER + 1, 0, &[]);
    assert_eq!(
        walk(&memory, CHUNKS).unwrap_err(),
        ChunkListError::BadOrder { chunk_phys: CHUNKS, order: MAX_ORDER + 1 }
    );
}

#[test]
fn too_many_elements() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, 0, 0, 256, &[]);
    assert_eq!(
        walk(&memory, CHUNKS).unwrap_err(),
        ChunkListError::TooManyElements { chunk_phys: CHUNKS, element_count: 256 }
    );
}

#[test]
fn misaligned_phys_start() {
    let mut memory = memory();
    write_bitmap(&mut memory, BITMAPS, &[0]);
    // Order 1 bitmaps span 32 MiB.
    write_chunk(&mut memory, CHUNKS, 0, 1, 1, &[(16 * MIB, BITMAPS)]);
    assert_eq!(
        walk(&memory, CHUNKS).unwrap_err(),
        ChunkListError::MisalignedPhysStart { phys_start: 16 * MIB, order: 1 }
    );
}

#[test]
fn phys_start_too_large() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(1 << 52, BITMAPS)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::PhysStartTooLarge { phys_start: 1 << 52 });
}

#[test]
fn misaligned_bitmap() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(0, BITMAPS + 8)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::MisalignedBitmap { bitmap_phys: BITMAPS + 8 });
}

#[test]
fn bitmap_outside_ram() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(0, 64 * GIB - 256)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::MisalignedBitmap { bitmap_phys: 64 * GIB - 256 });
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(0, 64 * GIB)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::BitmapOutsideRam { bitmap_phys: 64 * GIB });
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(0, !511_u64)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::BitmapOutsideRam { bitmap_phys: !511_u64 });
}

#[test]
fn bitmap_overlaps_chunk() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, CHUNKS + 4096, 0, 0, &[]);
    // The bitmap sits in the first chunk page, listed from the second chunk.
    write_chunk(&mut memory, CHUNKS + 4096, 0, 5, 1, &[(0, CHUNKS + 2048)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::BitmapOverlapsChunk { bitmap_phys: CHUNKS + 2048 });
}

#[test]
fn duplicate_bitmap() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, 0, 0, 2, &[(0, BITMAPS), (16 * MIB, BITMAPS)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::DuplicateBitmap { bitmap_phys: BITMAPS });
}

#[test]
fn duplicate_span() {
    let mut memory = memory();
    write_chunk(&mut memory, CHUNKS, CHUNKS + 4096, 3, 1, &[(0, BITMAPS)]);
    write_chunk(&mut memory, CHUNKS + 4096, 0, 3, 1, &[(0, BITMAPS + 512)]);
    assert_eq!(walk(&memory, CHUNKS).unwrap_err(), ChunkListError::DuplicateSpan { order: 3, phys_start: 0 });
}

#[test]
fn folio_outside_ram() {
    let mut memory = SimulatedMemory::new(
        &[PhysRange::new(0, GIB), PhysRange::new(2 * GIB, 64 * GIB)],
        PhysRange::new(60 * GIB, 61 * GIB),
    );
    // Order 0, span [1 GiB - 16 MiB, 1 GiB): inside RAM, accepted.
    write_bitmap(&mut memory, BITMAPS, &[0, 4095]);
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(GIB - 16 * MIB, BITMAPS)]);
    let holes = [PhysRange::new(0, GIB), PhysRange::new(2 * GIB, 64 * GIB)];
    assert!(IncomingPreservations::walk(&memory, CHUNKS, &holes).is_ok());
    // Span [1 GiB, 1 GiB + 16 MiB) is in the hole: bit 3 is a folio outside RAM.
    write_bitmap(&mut memory, BITMAPS, &[3]);
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(GIB, BITMAPS)]);
    assert_eq!(
        IncomingPreservations::walk(&memory, CHUNKS, &holes).unwrap_err(),
        ChunkListError::FolioOutsideRam { folio: Folio { phys: GIB + 3 * 4096, order: 0 } }
    );
    // An empty bitmap over the hole preserves nothing and is accepted.
    write_bitmap(&mut memory, BITMAPS, &[]);
    assert!(IncomingPreservations::walk(&memory, CHUNKS, &holes).is_ok());
    // An order-18 span covers all RAM and more: only the set bits matter.
    write_bitmap(&mut memory, BITMAPS, &[0, 63]);
    write_chunk(&mut memory, CHUNKS, 0, 18, 1, &[(0, BITMAPS)]);
    assert!(IncomingPreservations::walk(&memory, CHUNKS, &holes).is_ok());
    write_bitmap(&mut memory, BITMAPS, &[0, 1]);
    assert_eq!(
        IncomingPreservations::walk(&memory, CHUNKS, &holes).unwrap_err(),
        ChunkListError::FolioOutsideRam { folio: Folio { phys: GIB, order: 18 } }
    );
    // A folio beyond 2^52 in an order-30 bitmap.
    write_bitmap(&mut memory, BITMAPS, &[1023, 1024]);
    write_chunk(&mut memory, CHUNKS, 0, 30, 1, &[(0, BITMAPS)]);
    assert_eq!(
        IncomingPreservations::walk(&memory, CHUNKS, &ram()).unwrap_err(),
        ChunkListError::FolioOutsideRam { folio: Folio { phys: 1023 << 42, order: 30 } }
    );
}

#[test]
fn overlapping_folios() {
    let mut memory = memory();
    // Order 0 page at 2 MiB + 4 KiB and order 9 folio at 2 MiB.
    write_bitmap(&mut memory, BITMAPS, &[513]);
    write_bitmap(&mut memory, BITMAPS + 512, &[1]);
    write_chunk(&mut memory, CHUNKS, CHUNKS + 4096, 0, 1, &[(0, BITMAPS)]);
    write_chunk(&mut memory, CHUNKS + 4096, 0, 9, 1, &[(0, BITMAPS + 512)]);
    assert_eq!(
        walk(&memory, CHUNKS).unwrap_err(),
        ChunkListError::OverlappingFolios {
            smaller: Folio { phys: 2 * MIB + 4096, order: 0 },
            larger: Folio { phys: 2 * MIB, order: 9 }
        }
    );
    // Adjacent instead of overlapping: fine.
    write_bitmap(&mut memory, BITMAPS, &[511, 1024]);
    let incoming = walk(&memory, CHUNKS).unwrap();
    assert_eq!(incoming.remaining_folio_count(), 3);
    // A 1 GiB folio over a page of a bitmap whose span is much smaller.
    write_bitmap(&mut memory, BITMAPS, &[5]);
    write_bitmap(&mut memory, BITMAPS + 512, &[1]);
    write_chunk(&mut memory, CHUNKS, CHUNKS + 4096, 0, 1, &[(GIB + 32 * MIB, BITMAPS)]);
    write_chunk(&mut memory, CHUNKS + 4096, 0, 18, 1, &[(0, BITMAPS + 512)]);
    assert_eq!(
        walk(&memory, CHUNKS).unwrap_err(),
        ChunkListError::OverlappingFolios {
            smaller: Folio { phys: GIB + 32 * MIB + 5 * 4096, order: 0 },
            larger: Folio { phys: GIB, order: 18 }
        }
    );
}

#[test]
fn metadata_inside_a_preserved_folio() {
    let mut memory = memory();
    // A 1 GiB folio at 50 GiB covers the chunk page itself.
    write_bitmap(&mut memory, BITMAPS, &[50]);
    write_chunk(&mut memory, CHUNKS, 0, 18, 1, &[(0, BITMAPS)]);
    assert_eq!(
        walk(&memory, CHUNKS).unwrap_err(),
        ChunkListError::MetadataInsideFolio { metadata_phys: CHUNKS, folio: Folio { phys: 50 * GIB, order: 18 } }
    );
    // ... or the bitmap.
    write_bitmap(&mut memory, BITMAPS, &[51]);
    assert_eq!(
        walk(&memory, CHUNKS).unwrap_err(),
        ChunkListError::MetadataInsideFolio { metadata_phys: BITMAPS, folio: Folio { phys: 51 * GIB, order: 18 } }
    );
}

#[test]
fn entries_beyond_element_count_are_ignored() {
    let mut memory = memory();
    write_bitmap(&mut memory, BITMAPS, &[7]);
    // Garbage in entry 1, but element_count is 1.
    write_chunk(&mut memory, CHUNKS, 0, 0, 1, &[(0, BITMAPS), (12345, 7)]);
    let incoming = walk(&memory, CHUNKS).unwrap();
    assert_eq!(incoming_folios(&incoming, &memory), [Folio { phys: 7 * 4096, order: 0 }]);
}

// ---- Restore. ------------------------------------------------------------

fn handed_over(
    memory: &mut SimulatedMemory,
    set_up: impl FnOnce(&mut PreservationTracker, &mut SimulatedMemory),
) -> IncomingPreservations {
    let mut tracker = PreservationTracker::new();
    set_up(&mut tracker, memory);
    let chunks = serialize(&tracker, memory).unwrap();
    IncomingPreservations::walk(memory, chunks.head_phys(), &ram()).unwrap()
}

#[test]
fn take_restores_each_folio_once() {
    let mut memory = memory();
    let mut incoming = handed_over(&mut memory, |tracker, memory| {
        tracker.preserve_folio(memory, 2 * MIB, 9).unwrap();
        tracker.preserve_folio(memory, 4096, 0).unwrap();
    });
    assert!(incoming.contains(&memory, 2 * MIB, 9).unwrap());
    assert!(!incoming.contains(&memory, 2 * MIB, 8).unwrap());
    assert!(!incoming.contains(&memory, 2 * MIB + 1, 9).unwrap());
    assert_eq!(incoming.folio_containing(&memory, 2 * MIB + 77).unwrap(), Some(Folio { phys: 2 * MIB, order: 9 }));
    incoming.take(&mut memory, 2 * MIB, 9).unwrap();
    assert!(!incoming.contains(&memory, 2 * MIB, 9).unwrap());
    assert_eq!(incoming.take(&mut memory, 2 * MIB, 9), Err(RestoreError::NotPreserved { phys: 2 * MIB, order: 9 }));
    assert_eq!(incoming.take(&mut memory, 4096, 1), Err(RestoreError::Misaligned { phys: 4096 }));
    assert_eq!(incoming.take(&mut memory, 0, MAX_ORDER + 1), Err(RestoreError::OrderTooLarge { order: MAX_ORDER + 1 }));
    assert_eq!(incoming.remaining_folio_count(), 1);
    assert_eq!(incoming_folios(&incoming, &memory), [Folio { phys: 4096, order: 0 }]);
}

#[test]
fn take_range_returns_the_tiling_runs_all_or_nothing() {
    let mut memory = memory();
    let mut incoming = handed_over(&mut memory, |tracker, memory| {
        tracker.preserve_range(memory, 0x5000, 3 * MIB).unwrap();
        tracker.preserve_range(memory, 8 * MIB, 64 * 1024).unwrap();
    });
    let before = incoming_folios(&incoming, &memory);
    assert_eq!(
        incoming.take_range(&mut memory, 0x5000, 4 * MIB),
        Err(RestoreError::RangeNotPreserved { phys: 0x5000 + 3 * MIB })
    );
    assert_eq!(
        incoming.take_range(&mut memory, 8 * MIB, 32 * 1024),
        Err(RestoreError::FolioStraddlesRange { existing: Folio { phys: 8 * MIB, order: 4 } })
    );
    assert_eq!(incoming.take_range(&mut memory, 0x5000, 0), Err(RestoreError::InvalidRange { phys: 0x5000 }));
    assert_eq!(incoming_folios(&incoming, &memory), before);
    let runs = incoming.take_range(&mut memory, 0x5000, 3 * MIB).unwrap();
    let bytes: u64 = runs.iter().map(FolioRun::size_bytes).sum();
    assert_eq!(bytes, 3 * MIB);
    assert!(runs.windows(2).all(|pair| pair[0].phys < pair[1].phys));
    assert_eq!(incoming_folios(&incoming, &memory), [Folio { phys: 8 * MIB, order: 4 }]);
}

#[test]
fn take_inside_claims_only_what_lies_inside() {
    let mut memory = memory();
    let mut incoming = handed_over(&mut memory, |tracker, memory| {
        // Order-0 pages straddling a bitmap boundary, a large folio, and a
        // folio that reaches past the range's end.
        tracker.preserve_range(memory, 16 * MIB - 8 * 4096, 16 * 4096).unwrap();
        tracker.preserve_folio(memory, 18 * MIB, 9).unwrap();
        tracker.preserve_folio(memory, 20 * MIB, 10).unwrap();
    });
    let runs = incoming.take_inside(&mut memory, 16 * MIB - 8 * 4096, 4 * MIB + 8 * 4096).unwrap();
    let bytes: u64 = runs.iter().map(FolioRun::size_bytes).sum();
    assert_eq!(bytes, 16 * 4096 + 2 * MIB);
    assert_eq!(incoming_folios(&incoming, &memory), [Folio { phys: 20 * MIB, order: 10 }]);
    assert_eq!(incoming.take_inside(&mut memory, 0, 64 * MIB).unwrap().len(), 1);
    assert!(incoming_folios(&incoming, &memory).is_empty());
    assert!(incoming.take_inside(&mut memory, 0, 64 * MIB).unwrap().is_empty(), "nothing is taken twice");
}

#[test]
fn runs_coalesce_whole_words_across_bitmaps() {
    let mut memory = memory();
    let incoming = handed_over(&mut memory, |tracker, memory| {
        // 40 MiB of order-0 pages (three bitmaps), one order-9 folio after them.
        for page in 0..(40 * MIB / 4096) {
            tracker.preserve_folio(memory, 8 * MIB + page * 4096, 0).unwrap();
        }
        tracker.preserve_folio(memory, 48 * MIB, 9).unwrap();
        tracker.preserve_folio(memory, 52 * MIB, 9).unwrap();
    });
    let runs: Vec<FolioRun> = incoming.runs(&memory).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        runs,
        [
            FolioRun { phys: 8 * MIB, order: 0, folio_count: 40 * MIB / 4096 },
            FolioRun { phys: 48 * MIB, order: 9, folio_count: 1 },
            FolioRun { phys: 52 * MIB, order: 9, folio_count: 1 },
        ]
    );
}

#[test]
fn unreadable_memory_is_an_access_error() {
    // The caller claims more RAM than the memory can read.
    let memory = memory();
    let claimed = [PhysRange::new(0, 128 * GIB)];
    assert_eq!(
        IncomingPreservations::walk(&memory, 100 * GIB, &claimed).unwrap_err(),
        ChunkListError::Access(crate::memory::AccessError::OutsideRam { phys: 100 * GIB, size_bytes: 4096 })
    );
}

#[test]
fn serialise_write_failure_frees_the_chunks() {
    let mut memory = super::FaultyMemory { inner: memory(), writes_before_failure: None };
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 4096, 0).unwrap();
    tracker.preserve_folio(&mut memory, 2 * MIB, 9).unwrap();
    memory.writes_before_failure = Some(1);
    assert!(matches!(serialize(&tracker, &mut memory), Err(SerializeError::Access(_))));
    assert_eq!(memory.inner.live_allocation_count(), 2, "only the bitmaps remain");
}

/// Memory that counts the bytes read and written through it.
struct CountingMemory<'a> {
    inner: &'a mut SimulatedMemory,
    read: core::cell::Cell<u64>,
    written: u64,
}

impl PhysMemory for CountingMemory<'_> {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), crate::memory::AccessError> {
        self.read.set(self.read.get() + buf.len() as u64);
        self.inner.read(phys, buf)
    }

    fn write(&mut self, phys: u64, data: &[u8]) -> Result<(), crate::memory::AccessError> {
        self.written += data.len() as u64;
        self.inner.write(phys, data)
    }
}

/// Bytes read by walking, then read and written by taking back all of
/// `state_bytes` of order-0 pages at 1 GiB, handed over next to a few
/// folios of other orders.
fn order0_costs(state_bytes: u64) -> (u64, u64, u64) {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    let state = FolioRun { phys: GIB, order: 0, folio_count: state_bytes / 4096 };
    tracker.preserve_folio_run(&mut memory, state).unwrap();
    tracker.preserve_folio(&mut memory, 8 * GIB, 9).unwrap();
    tracker.preserve_folio(&mut memory, 9 * GIB, 18).unwrap();
    tracker.preserve_folio(&mut memory, 10 * GIB + 4096, 0).unwrap();
    let head = serialize(&tracker, &mut memory).unwrap().head_phys();
    let mut counting = CountingMemory { inner: &mut memory, read: core::cell::Cell::new(0), written: 0 };
    let mut incoming = IncomingPreservations::walk(&counting, head, &ram()).unwrap();
    let walked = counting.read.replace(0);
    assert_eq!(incoming.take_range(&mut counting, GIB, state_bytes).unwrap(), [state]);
    assert_eq!(incoming.remaining_folio_count(), 3);
    (walked, counting.read.get(), counting.written)
}

#[test]
fn full_order0_bitmaps_are_read_once_and_never_again() {
    let (walk_64m, take_read_64m, take_written_64m) = order0_costs(64 * MIB);
    let (walk_1g, take_read_1g, take_written_1g) = order0_costs(GIB);
    // 1 GiB is 60 more full bitmaps than 64 MiB: each is read once while
    // walking (its bits are counted), not again to check overlaps or to
    // take it back, and written once when it is cleared. (Walking also
    // looks up each page holding bitmaps, a word per order present: less
    // than one bitmap more in all.)
    let walk_growth = walk_1g - walk_64m;
    assert!((60 * 512..61 * 512).contains(&walk_growth), "walking read {walk_growth} bytes more");
    assert_eq!(take_read_1g, take_read_64m);
    assert_eq!(take_written_1g - take_written_64m, 60 * 512);
}
