//! Preservation rules, counters and all-or-nothing behaviour of the tracker.

use alloc::vec::Vec;

use super::{GIB, KIB, MIB, memory, tracked_folios};
use crate::bitmap::{Folio, FolioRun, MAX_ORDER};
use crate::memory::{PHYS_ADDRESS_LIMIT, PhysMemory, PhysRange};
use crate::tracker::{PreservationTracker, TrackerError};

#[test]
fn preserve_folio_records_it_and_counts() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 0x20_0000, 9).unwrap();
    tracker.preserve_folio(&mut memory, 0x1000, 0).unwrap();
    tracker.preserve_folio(&mut memory, 0x3000, 0).unwrap();
    assert!(tracker.is_preserved(&memory, 0x20_0000, 9).unwrap());
    assert!(!tracker.is_preserved(&memory, 0x20_0000, 8).unwrap(), "the order is part of the identity");
    assert!(!tracker.is_preserved(&memory, 0x2000, 0).unwrap());
    assert_eq!(tracker.folio_count(0), 2);
    assert_eq!(tracker.folio_count(9), 1);
    assert_eq!(tracker.total_folio_count(), 3);
    assert_eq!(tracker.preserved_bytes(), 2 * MIB + 8 * KIB);
    assert_eq!(tracker.bitmap_count(), 2, "one bitmap per (order, 16 MiB << order) span");
    assert_eq!(tracker.metadata_bytes(), 1024);
    assert_eq!(memory.live_allocation_count(), 2);
    assert_eq!(
        tracked_folios(&tracker, &memory),
        [Folio { phys: 0x1000, order: 0 }, Folio { phys: 0x3000, order: 0 }, Folio { phys: 0x20_0000, order: 9 }]
    );
}

#[test]
fn bitmaps_live_in_metadata_memory_at_the_documented_bit() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    // Order 2 (16 KiB folios): folio number 5 * 4096 + 130 is bit 130 of bitmap 5.
    let phys = (5 * 4096 + 130) << 14;
    tracker.preserve_folio(&mut memory, phys, 2).unwrap();
    let entries: Vec<_> = tracker.bitmap_entries().collect();
    assert_eq!(entries.len(), 1);
    let (order, phys_start, bitmap) = entries[0];
    assert_eq!(order, 2);
    assert_eq!(phys_start, (5 * 4096) << 14);
    assert_eq!(bitmap % 512, 0);
    assert!(memory.metadata_region().contains_address(bitmap));
    // Bit 130: word 2, bit 2, native-endian.
    assert_eq!(memory.read_u64(bitmap + 16).unwrap(), 1 << 2);
}

#[test]
fn folio_rules_are_typed_errors() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    assert_eq!(
        tracker.preserve_folio(&mut memory, 0x1000, 1),
        Err(TrackerError::MisalignedFolio { phys: 0x1000, order: 1 })
    );
    assert_eq!(
        tracker.preserve_folio(&mut memory, 0x800, 0),
        Err(TrackerError::MisalignedFolio { phys: 0x800, order: 0 })
    );
    assert_eq!(
        tracker.preserve_folio(&mut memory, 0, MAX_ORDER + 1),
        Err(TrackerError::OrderTooLarge { order: MAX_ORDER + 1 })
    );
    assert_eq!(
        tracker.preserve_folio(&mut memory, PHYS_ADDRESS_LIMIT, 0),
        Err(TrackerError::AddressTooLarge { phys: PHYS_ADDRESS_LIMIT })
    );
    assert_eq!(
        tracker.preserve_folio(&mut memory, PHYS_ADDRESS_LIMIT - (1 << 42), MAX_ORDER),
        Ok(()),
        "the last order-30 folio below 2^52 is fine (the bitmap does not need RAM there)"
    );
    assert_eq!(tracker.preserve_folio(&mut memory, 0, MAX_ORDER), Ok(()));
    assert_eq!(tracker.total_folio_count(), 2);
}

#[test]
fn duplicate_and_overlap_rules() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 4 * MIB, 9).unwrap();
    assert_eq!(
        tracker.preserve_folio(&mut memory, 4 * MIB, 9),
        Err(TrackerError::AlreadyPreserved { phys: 4 * MIB, order: 9 })
    );
    // A smaller folio inside it.
    assert_eq!(
        tracker.preserve_folio(&mut memory, 4 * MIB + 0x5000, 0),
        Err(TrackerError::OverlapsPreserved {
            phys: 4 * MIB + 0x5000,
            order: 0,
            existing: Folio { phys: 4 * MIB, order: 9 }
        })
    );
    // A larger folio around it.
    assert_eq!(
        tracker.preserve_folio(&mut memory, 0, 11),
        Err(TrackerError::OverlapsPreserved { phys: 0, order: 11, existing: Folio { phys: 4 * MIB, order: 9 } })
    );
    // Neighbours on both sides are fine.
    tracker.preserve_folio(&mut memory, 4 * MIB - 4096, 0).unwrap();
    tracker.preserve_folio(&mut memory, 6 * MIB, 9).unwrap();
    // A smaller folio far inside a large one found through a different bitmap.
    tracker.preserve_folio(&mut memory, GIB, 18).unwrap();
    assert_eq!(
        tracker.preserve_folio(&mut memory, GIB + 700 * MIB, 3),
        Err(TrackerError::OverlapsPreserved {
            phys: GIB + 700 * MIB,
            order: 3,
            existing: Folio { phys: GIB, order: 18 }
        })
    );
    // A large folio containing a small one many bitmaps away from its start.
    tracker.preserve_folio(&mut memory, 8 * GIB + 900 * MIB, 0).unwrap();
    assert_eq!(
        tracker.preserve_folio(&mut memory, 8 * GIB, 18),
        Err(TrackerError::OverlapsPreserved {
            phys: 8 * GIB,
            order: 18,
            existing: Folio { phys: 8 * GIB + 900 * MIB, order: 0 }
        })
    );
    assert_eq!(tracker.total_folio_count(), 5);
}

#[test]
fn unpreserve_must_name_exactly_a_preserved_folio() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 2 * MIB, 9).unwrap();
    assert_eq!(
        tracker.unpreserve_folio(&mut memory, 2 * MIB, 8),
        Err(TrackerError::NotPreserved { phys: 2 * MIB, order: 8 })
    );
    assert_eq!(
        tracker.unpreserve_folio(&mut memory, 2 * MIB + 4096, 0),
        Err(TrackerError::NotPreserved { phys: 2 * MIB + 4096, order: 0 })
    );
    assert_eq!(
        tracker.unpreserve_folio(&mut memory, 2 * MIB + 4096, 9),
        Err(TrackerError::MisalignedFolio { phys: 2 * MIB + 4096, order: 9 })
    );
    tracker.unpreserve_folio(&mut memory, 2 * MIB, 9).unwrap();
    assert!(tracker.is_empty());
    assert_eq!(memory.live_allocation_count(), 0, "the empty bitmap is freed");
    assert_eq!(
        tracker.unpreserve_folio(&mut memory, 2 * MIB, 9),
        Err(TrackerError::NotPreserved { phys: 2 * MIB, order: 9 })
    );
}

#[test]
fn range_rules_are_typed_errors() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    assert_eq!(tracker.preserve_range(&mut memory, 0x1000, 0), Err(TrackerError::ZeroSizedRange { phys: 0x1000 }));
    assert_eq!(
        tracker.preserve_range(&mut memory, 0x1001, 0x1000),
        Err(TrackerError::MisalignedRange { phys: 0x1001, size_bytes: 0x1000 })
    );
    assert_eq!(
        tracker.preserve_range(&mut memory, 0x1000, 0x1800),
        Err(TrackerError::MisalignedRange { phys: 0x1000, size_bytes: 0x1800 })
    );
    assert_eq!(
        tracker.preserve_range(&mut memory, u64::MAX - 0xfff, 0x2000),
        Err(TrackerError::RangeOverflow { phys: u64::MAX - 0xfff, size_bytes: 0x2000 })
    );
    assert_eq!(
        tracker.preserve_range(&mut memory, PHYS_ADDRESS_LIMIT - 0x1000, 0x2000),
        Err(TrackerError::AddressTooLarge { phys: PHYS_ADDRESS_LIMIT - 0x1000 })
    );
    assert!(tracker.is_empty());
    assert_eq!(memory.live_allocation_count(), 0);
}

#[test]
fn ranges_split_into_natural_maximal_folios() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    // [4 KiB, 2 MiB + 24 KiB): growing folios up to the 2 MiB boundary, then shrinking ones.
    tracker.preserve_range(&mut memory, 0x1000, 0x3000 + 2 * MIB + 0x2000).unwrap();
    let folios = tracked_folios(&tracker, &memory);
    let mut by_address = folios.clone();
    by_address.sort();
    assert_eq!(
        by_address,
        [
            Folio { phys: 0x1000, order: 0 },
            Folio { phys: 0x2000, order: 1 },
            Folio { phys: 0x4000, order: 2 },
            Folio { phys: 0x8000, order: 3 },
            Folio { phys: 0x1_0000, order: 4 },
            Folio { phys: 0x2_0000, order: 5 },
            Folio { phys: 0x4_0000, order: 6 },
            Folio { phys: 0x8_0000, order: 7 },
            Folio { phys: 0x10_0000, order: 8 },
            Folio { phys: 0x20_0000, order: 2 },
            Folio { phys: 0x20_4000, order: 1 },
        ]
    );
    assert_eq!(tracker.preserved_bytes(), 0x3000 + 2 * MIB + 0x2000);
    assert!(tracker.is_range_preserved(&memory, PhysRange::new(0x1000, 0x20_6000)).unwrap());
    assert!(!tracker.is_range_preserved(&memory, PhysRange::new(0x1000, 0x20_7000)).unwrap());
}

#[test]
fn overlapping_range_is_refused_without_any_change() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 36 * MIB, 0).unwrap();
    let before = tracked_folios(&tracker, &memory);
    let allocations = memory.live_allocation_count();
    // The range starts well before the preserved page and spans new bitmaps.
    assert_eq!(
        tracker.preserve_range(&mut memory, 4096, 40 * MIB),
        Err(TrackerError::OverlapsPreserved {
            phys: 32 * MIB,
            order: 11,
            existing: Folio { phys: 36 * MIB, order: 0 }
        })
    );
    assert_eq!(tracked_folios(&tracker, &memory), before);
    assert_eq!(memory.live_allocation_count(), allocations);
}

#[test]
fn range_rolls_back_when_metadata_runs_out() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 100 * MIB, 0).unwrap();
    let before = tracked_folios(&tracker, &memory);
    let bitmap_count = tracker.bitmap_count();
    // 0x1000..0x20_0000 needs bitmaps for orders 0..=8: nine new bitmaps,
    // but only four allocations may succeed.
    memory.set_allocation_budget(Some(4));
    assert_eq!(tracker.preserve_range(&mut memory, 0x1000, 2 * MIB - 0x1000), Err(TrackerError::OutOfMetadataMemory));
    assert_eq!(tracked_folios(&tracker, &memory), before);
    assert_eq!(tracker.bitmap_count(), bitmap_count);
    assert_eq!(memory.live_allocation_count(), 1, "the four bitmaps allocated were freed");
    assert_eq!(tracker.total_folio_count(), 1);
    memory.set_allocation_budget(Some(0));
    assert_eq!(tracker.preserve_folio(&mut memory, 0, 5), Err(TrackerError::OutOfMetadataMemory));
    // An existing bitmap needs no allocation.
    tracker.preserve_folio(&mut memory, 100 * MIB + 4096, 0).unwrap();
    memory.set_allocation_budget(None);
    tracker.preserve_range(&mut memory, 0x1000, 2 * MIB - 0x1000).unwrap();
    assert_eq!(tracker.total_folio_count(), 2 + 9);
}

#[test]
fn unpreserve_range_accepts_any_exact_tiling() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    // Preserved folio by folio, unpreserved as one range.
    for page in 0..8 {
        tracker.preserve_folio(&mut memory, 16 * MIB - 4 * 4096 + page * 4096, 0).unwrap();
    }
    tracker.preserve_folio(&mut memory, 16 * MIB + 4 * 4096, 2).unwrap();
    tracker.unpreserve_range(&mut memory, 16 * MIB - 4 * 4096, 12 * 4096).unwrap();
    assert!(tracker.is_empty());
    assert_eq!(memory.live_allocation_count(), 0);
    // Preserved as a range, unpreserved as the same range.
    tracker.preserve_range(&mut memory, 0x7000, 3 * MIB).unwrap();
    tracker.unpreserve_range(&mut memory, 0x7000, 3 * MIB).unwrap();
    assert!(tracker.is_empty());
    assert_eq!(memory.live_allocation_count(), 0);
}

#[test]
fn unpreserve_inside_clears_a_partly_preserved_block_and_frees_its_bitmaps() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    // Every other page of a block, then a folio reaching past the range.
    for page in (0..1008).step_by(2) {
        tracker.preserve_folio(&mut memory, 16 * MIB + page * 4096, 0).unwrap();
    }
    tracker.preserve_folio(&mut memory, 20 * MIB - 64 * KIB, 4).unwrap();
    let removed = tracker.unpreserve_inside(&mut memory, 16 * MIB, 4 * MIB - 32 * KIB).unwrap();
    assert_eq!(removed, 504 * 4096);
    assert_eq!(tracked_folios(&tracker, &memory), [Folio { phys: 20 * MIB - 64 * KIB, order: 4 }]);
    assert_eq!(tracker.unpreserve_inside(&mut memory, 0, 64 * MIB).unwrap(), 64 * KIB);
    assert!(tracker.is_empty());
    assert_eq!(memory.live_allocation_count(), 0, "emptied bitmaps are freed");
}

#[test]
fn unpreserve_range_refuses_gaps_and_straddlers_without_change() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_range(&mut memory, 0, 64 * KIB).unwrap();
    tracker.preserve_range(&mut memory, 128 * KIB, 64 * KIB).unwrap();
    let before = tracked_folios(&tracker, &memory);
    assert_eq!(
        tracker.unpreserve_range(&mut memory, 0, 192 * KIB),
        Err(TrackerError::RangeNotPreserved { phys: 64 * KIB })
    );
    assert_eq!(
        tracker.unpreserve_range(&mut memory, 0, 32 * KIB),
        Err(TrackerError::FolioStraddlesRange { existing: Folio { phys: 0, order: 4 } })
    );
    assert_eq!(
        tracker.unpreserve_range(&mut memory, 132 * KIB, 60 * KIB),
        Err(TrackerError::FolioStraddlesRange { existing: Folio { phys: 128 * KIB, order: 4 } })
    );
    assert_eq!(
        tracker.unpreserve_range(&mut memory, 300 * KIB, 4 * KIB),
        Err(TrackerError::RangeNotPreserved { phys: 300 * KIB })
    );
    assert_eq!(tracked_folios(&tracker, &memory), before);
    tracker.unpreserve_range(&mut memory, 128 * KIB, 64 * KIB).unwrap();
    assert_eq!(tracked_folios(&tracker, &memory), [Folio { phys: 0, order: 4 }]);
}

#[test]
fn runs_coalesce_across_bitmap_boundaries_per_order() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    // Order-0 pages straddling the 16 MiB boundary between two bitmaps.
    for page in 0..6 {
        tracker.preserve_folio(&mut memory, 16 * MIB - 3 * 4096 + page * 4096, 0).unwrap();
    }
    // An order-1 folio right after them: physically contiguous but another order.
    tracker.preserve_folio(&mut memory, 16 * MIB + 3 * 4096 + 4096, 1).unwrap();
    tracker.preserve_folio(&mut memory, 16 * MIB + 3 * 4096, 0).unwrap();
    let runs: Vec<FolioRun> = tracker.runs(&memory).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        runs,
        [
            FolioRun { phys: 16 * MIB - 3 * 4096, order: 0, folio_count: 7 },
            FolioRun { phys: 16 * MIB + 4 * 4096, order: 1, folio_count: 1 },
        ]
    );
}

#[test]
fn containing_folio_and_clear() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, GIB, 18).unwrap();
    tracker.preserve_folio(&mut memory, 4096, 0).unwrap();
    assert_eq!(tracker.preserved_folio_containing(&memory, GIB + 12345).unwrap(), Some(Folio { phys: GIB, order: 18 }));
    assert_eq!(tracker.preserved_folio_containing(&memory, 4096 + 5).unwrap(), Some(Folio { phys: 4096, order: 0 }));
    assert_eq!(tracker.preserved_folio_containing(&memory, 0).unwrap(), None);
    tracker.clear(&mut memory);
    assert!(tracker.is_empty());
    assert_eq!(tracker.total_folio_count(), 0);
    assert_eq!(memory.live_allocation_count(), 0);
}

#[test]
fn sixteen_gib_of_order_zero_needs_at_most_512_kib_of_bitmaps() {
    // The seeds' figure. Only every 64th page is needed to touch every
    // bitmap; the bitmap count, not the page count, is what is checked.
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    let mut phys = 0;
    while phys < 16 * GIB {
        tracker.preserve_folio(&mut memory, phys, 0).unwrap();
        phys += 64 * 4096 * 7;
    }
    assert_eq!(tracker.bitmap_count(), 1024);
    assert_eq!(tracker.metadata_bytes(), 512 * KIB);
    // The whole 1 GiB order of a 1 TiB machine fits in one bitmap.
    let mut large = PreservationTracker::new();
    let mut machine = crate::memory::SimulatedMemory::with_metadata_at_end(PhysRange::new(0, 2048 * GIB), GIB);
    for gib in 0..1024 {
        large.preserve_folio(&mut machine, gib * GIB, 18).unwrap();
    }
    assert_eq!(large.bitmap_count(), 1);
    assert_eq!(large.metadata_bytes(), 512);
}

#[test]
fn folio_runs_preserve_many_folios_at_once_all_or_nothing() {
    let mut memory = memory();
    let mut tracker = PreservationTracker::new();
    // 40 MiB of order-0 pages from 8 MiB: three bitmaps, set word by word.
    let run = FolioRun { phys: 8 * MIB, order: 0, folio_count: 40 * MIB / 4096 };
    tracker.preserve_folio_run(&mut memory, run).unwrap();
    assert_eq!(tracker.folio_count(0), 10240);
    assert_eq!(tracker.bitmap_count(), 3);
    assert!(tracker.is_preserved(&memory, 8 * MIB, 0).unwrap());
    assert!(tracker.is_preserved(&memory, 48 * MIB - 4096, 0).unwrap());
    assert!(!tracker.is_preserved(&memory, 48 * MIB, 0).unwrap());
    let runs: Vec<FolioRun> = tracker.runs(&memory).collect::<Result<_, _>>().unwrap();
    assert_eq!(runs, [run]);
    assert_eq!(
        tracker.preserve_folio_run(&mut memory, FolioRun { phys: 4 * MIB, order: 9, folio_count: 4 }),
        Err(TrackerError::OverlapsPreserved { phys: 8 * MIB, order: 9, existing: Folio { phys: 8 * MIB, order: 0 } })
    );
    assert_eq!(
        tracker.preserve_folio_run(&mut memory, FolioRun { phys: 40 * MIB, order: 0, folio_count: 2 }),
        Err(TrackerError::AlreadyPreserved { phys: 40 * MIB, order: 0 })
    );
    assert_eq!(
        tracker.preserve_folio_run(&mut memory, FolioRun { phys: 0, order: 0, folio_count: 0 }),
        Err(TrackerError::ZeroSizedRange { phys: 0 })
    );
    assert_eq!(
        tracker.preserve_folio_run(&mut memory, FolioRun { phys: 4096, order: 1, folio_count: 1 }),
        Err(TrackerError::MisalignedFolio { phys: 4096, order: 1 })
    );
    // Out of metadata half-way through the bitmaps: nothing changes.
    let before = tracker.total_folio_count();
    memory.set_allocation_budget(Some(2));
    assert_eq!(
        tracker.preserve_folio_run(&mut memory, FolioRun { phys: GIB, order: 0, folio_count: 3 * 4096 }),
        Err(TrackerError::OutOfMetadataMemory)
    );
    memory.set_allocation_budget(None);
    assert_eq!(tracker.total_folio_count(), before);
    assert_eq!(memory.live_allocation_count(), 3);
    // Unpreserved as a range, tiled by the individual pages.
    tracker.unpreserve_range(&mut memory, 8 * MIB, 40 * MIB).unwrap();
    assert!(tracker.is_empty());
    assert_eq!(memory.live_allocation_count(), 0);
}

#[test]
fn a_write_failure_half_way_through_a_range_is_undone() {
    let mut memory = super::FaultyMemory { inner: memory(), writes_before_failure: None };
    let mut tracker = PreservationTracker::new();
    tracker.preserve_folio(&mut memory, 100 * MIB, 0).unwrap();
    // [4 KiB, 2 MiB) is nine folios of orders 0..=8: let five bit writes succeed.
    memory.writes_before_failure = Some(5);
    assert!(matches!(tracker.preserve_range(&mut memory, 0x1000, 2 * MIB - 0x1000), Err(TrackerError::Access(_))));
    assert_eq!(tracked_folios(&tracker, &memory.inner), [Folio { phys: 100 * MIB, order: 0 }]);
    assert_eq!(tracker.total_folio_count(), 1);
    assert_eq!(memory.inner.live_allocation_count(), 1, "the new bitmaps were freed");
    // A failing write of a new folio's bit frees its new bitmap too.
    memory.writes_before_failure = Some(0);
    assert!(matches!(tracker.preserve_folio(&mut memory, GIB, 18), Err(TrackerError::Access(_))));
    assert_eq!(memory.inner.live_allocation_count(), 1);
    // And a failing unpreserve_range leaves the range preserved.
    tracker.preserve_range(&mut memory, 0x1000, 2 * MIB - 0x1000).unwrap();
    memory.writes_before_failure = Some(4);
    assert!(matches!(tracker.unpreserve_range(&mut memory, 0x1000, 2 * MIB - 0x1000), Err(TrackerError::Access(_))));
    assert!(tracker.is_range_preserved(&memory.inner, PhysRange::new(0x1000, 2 * MIB)).unwrap());
    assert_eq!(tracker.total_folio_count(), 10);
}
