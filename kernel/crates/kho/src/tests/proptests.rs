//! Property tests: round trips against a model, range splitting, and never panicking on hostile bytes.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use proptest::prelude::*;

use super::{GIB, MIB, memory, tracked_folios, write_bitmap, write_chunk};
use crate::bitmap::{Folio, FolioRun, MAX_ORDER, folio_size_bytes};
use crate::fdt::{KhoFdtBuilder, parse_fdt, parse_kho_fdt, validate_fdt};
use crate::memory::{PhysMemory, PhysRange, SimulatedMemory};
use crate::serial::{ChunkListError, IncomingPreservations, serialize};
use crate::tracker::{PreservationTracker, TrackerError};

/// Folios are drawn below 32 GiB; the metadata region is at 60 GiB.
const FOLIO_REGION_BYTES: u64 = 32 * GIB;

/// A folio of order 0..=18, either anywhere below 32 GiB or clustered in
/// the first 64 MiB so that overlaps and shared bitmaps are common.
fn folio_strategy() -> impl Strategy<Value = Folio> {
    let page = prop_oneof![0..FOLIO_REGION_BYTES / 4096, 0..(64 * MIB / 4096)];
    (0_u32..=18, page).prop_map(|(order, page)| {
        let phys = (page * 4096) & !(folio_size_bytes(order) - 1);
        Folio { phys, order }
    })
}

fn overlapping(model: &[Folio], folio: Folio) -> Option<Folio> {
    model.iter().copied().find(|existing| existing.range().overlaps(&folio.range()))
}

/// Preserve `candidates` one by one, checking each outcome against a model;
/// return the model (the accepted folios).
fn preserve_against_model(
    tracker: &mut PreservationTracker,
    memory: &mut SimulatedMemory,
    candidates: &[Folio],
) -> Result<Vec<Folio>, TestCaseError> {
    let mut model: Vec<Folio> = Vec::new();
    for folio in candidates {
        let outcome = tracker.preserve_folio(memory, folio.phys, folio.order);
        match overlapping(&model, *folio) {
            None => {
                prop_assert_eq!(outcome, Ok(()));
                model.push(*folio);
            }
            Some(existing) if existing == *folio => {
                prop_assert_eq!(outcome, Err(TrackerError::AlreadyPreserved { phys: folio.phys, order: folio.order }));
            }
            Some(_) => {
                let is_overlap = matches!(outcome, Err(TrackerError::OverlapsPreserved { existing, .. })
                    if existing.range().overlaps(&folio.range()) && model.contains(&existing));
                prop_assert!(is_overlap, "{:?} for {:?}", outcome, folio);
            }
        }
    }
    Ok(model)
}

fn as_set(folios: &[Folio]) -> BTreeSet<Folio> {
    folios.iter().copied().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random preservations across orders 0..=18 survive preserve ->
    /// serialise -> deserialise exactly.
    #[test]
    fn preservations_round_trip(candidates in prop::collection::vec(folio_strategy(), 1..120)) {
        let mut memory = memory();
        let mut tracker = PreservationTracker::new();
        let model = preserve_against_model(&mut tracker, &mut memory, &candidates)?;
        prop_assert_eq!(as_set(&tracked_folios(&tracker, &memory)), as_set(&model));
        prop_assert_eq!(tracker.total_folio_count(), model.len() as u64);
        prop_assert_eq!(tracker.preserved_bytes(), model.iter().map(Folio::size_bytes).sum::<u64>());

        let chunks = serialize(&tracker, &mut memory).unwrap();
        let incoming = IncomingPreservations::walk(&memory, chunks.head_phys(), &[PhysRange::new(0, 64 * GIB)]).unwrap();
        let handed_over: Vec<Folio> = incoming.folios(&memory).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(handed_over.len(), model.len());
        prop_assert_eq!(as_set(&handed_over), as_set(&model));
        // Runs cover exactly the same folios.
        let from_runs: Vec<Folio> = incoming
            .runs(&memory)
            .collect::<Result<Vec<FolioRun>, _>>()
            .unwrap()
            .iter()
            .flat_map(FolioRun::folios)
            .collect();
        prop_assert_eq!(as_set(&from_runs), as_set(&model));
        for folio in &model {
            prop_assert!(incoming.contains(&memory, folio.phys, folio.order).unwrap());
        }
    }

    /// Unpreserving removes exactly what is named, and empty bitmaps go back.
    #[test]
    fn unpreserve_removes_exactly_what_was_preserved(
        candidates in prop::collection::vec(folio_strategy(), 1..80),
        removals in prop::collection::vec(any::<bool>(), 80),
    ) {
        let mut memory = memory();
        let mut tracker = PreservationTracker::new();
        let model = preserve_against_model(&mut tracker, &mut memory, &candidates)?;
        let mut kept = Vec::new();
        for (folio, remove) in model.iter().zip(removals) {
            if remove {
                prop_assert_eq!(tracker.unpreserve_folio(&mut memory, folio.phys, folio.order), Ok(()));
                prop_assert!(!tracker.is_preserved(&memory, folio.phys, folio.order).unwrap());
                prop_assert_eq!(
                    tracker.unpreserve_folio(&mut memory, folio.phys, folio.order),
                    Err(TrackerError::NotPreserved { phys: folio.phys, order: folio.order })
                );
            } else {
                kept.push(*folio);
            }
        }
        prop_assert_eq!(as_set(&tracked_folios(&tracker, &memory)), as_set(&kept));
        prop_assert_eq!(memory.live_allocation_count() as u64, tracker.bitmap_count());
        for folio in &kept {
            tracker.unpreserve_folio(&mut memory, folio.phys, folio.order).unwrap();
        }
        prop_assert!(tracker.is_empty());
        prop_assert_eq!(memory.live_allocation_count(), 0);
    }

    /// A range becomes naturally aligned, maximal folios whose union is the
    /// range, and comes back out through the chunk list.
    #[test]
    fn ranges_round_trip(start_page in 0_u64..(1 << 21), page_count in 1_u64..(1 << 21)) {
        let mut memory = memory();
        let mut tracker = PreservationTracker::new();
        let range = PhysRange::new(start_page * 4096, (start_page + page_count) * 4096);
        tracker.preserve_range(&mut memory, range.start, range.size_bytes()).unwrap();
        let mut folios = tracked_folios(&tracker, &memory);
        folios.sort();
        let mut covered_to = range.start;
        for folio in &folios {
            prop_assert_eq!(folio.phys, covered_to, "contiguous, no gap or overlap");
            prop_assert_eq!(folio.phys % folio.size_bytes(), 0, "naturally aligned");
            // Maximal: the next order up would be misaligned or overrun the range.
            if folio.order < MAX_ORDER {
                let doubled = folio_size_bytes(folio.order + 1);
                prop_assert!(folio.phys % doubled != 0 || folio.phys + doubled > range.end, "{:?} could be larger", folio);
            }
            covered_to += folio.size_bytes();
        }
        prop_assert_eq!(covered_to, range.end);
        prop_assert!(folios.len() <= 2 * 21 + 2);

        tracker.unpreserve_range(&mut memory, range.start, range.size_bytes()).unwrap();
        prop_assert!(tracker.is_empty());
        prop_assert_eq!(memory.live_allocation_count(), 0);

        // Through the chunk list, the next kernel takes the same range back.
        // (Taking clears bits in place, in the bitmaps the tracker shares
        // here; in real life they belong to the previous kernel.)
        tracker.preserve_range(&mut memory, range.start, range.size_bytes()).unwrap();
        let chunks = serialize(&tracker, &mut memory).unwrap();
        let mut incoming = IncomingPreservations::walk(&memory, chunks.head_phys(), &[PhysRange::new(0, 64 * GIB)]).unwrap();
        let runs = incoming.take_range(&mut memory, range.start, range.size_bytes()).unwrap();
        prop_assert_eq!(runs.iter().map(FolioRun::size_bytes).sum::<u64>(), range.size_bytes());
        prop_assert_eq!(incoming.remaining_folio_count(), 0);
    }

    /// A hand-written handover whose folios of different orders may share
    /// memory: the walk refuses it exactly when two of them do, and names
    /// two that do.
    #[test]
    fn walk_refuses_exactly_the_overlapping_handovers(candidates in prop::collection::vec(folio_strategy(), 1..60)) {
        let folios = as_set(&candidates);
        let mut memory = memory();
        let head = write_handover(&mut memory, &folios);
        let has_overlap = folios.iter().any(|a| folios.iter().any(|b| a.order < b.order && a.range().overlaps(&b.range())));
        match IncomingPreservations::walk(&memory, head, &[PhysRange::new(0, 64 * GIB)]) {
            Ok(incoming) => {
                prop_assert!(!has_overlap, "an overlap was accepted");
                prop_assert_eq!(incoming.remaining_folio_count(), folios.len() as u64);
            }
            Err(ChunkListError::OverlappingFolios { smaller, larger }) => {
                prop_assert!(folios.contains(&smaller) && folios.contains(&larger), "{:?} / {:?}", smaller, larger);
                prop_assert!(smaller.order < larger.order && smaller.range().overlaps(&larger.range()));
            }
            Err(error) => prop_assert!(false, "unexpected error {}", error),
        }
    }

}

/// Writes `folios` as a chunk list by hand (no tracker, so overlaps are
/// possible): one chunk per order, bitmaps from 51 GiB. Returns the head.
fn write_handover(memory: &mut SimulatedMemory, folios: &BTreeSet<Folio>) -> u64 {
    const CHUNKS: u64 = 50 * GIB;
    const BITMAPS: u64 = 51 * GIB;
    let mut bitmaps: BTreeMap<(u32, u64), Vec<u64>> = BTreeMap::new();
    for folio in folios {
        let number = folio.phys >> (12 + folio.order);
        bitmaps.entry((folio.order, number >> 12)).or_default().push(number & 4095);
    }
    let mut entries: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for (index, ((order, bitmap), bits)) in bitmaps.iter().enumerate() {
        let address = BITMAPS + index as u64 * 512;
        write_bitmap(memory, address, bits);
        entries.entry(*order).or_default().push((bitmap << (12 + 12 + order), address));
    }
    let count = entries.len() as u64;
    for (index, (order, list)) in entries.iter().enumerate() {
        let index = index as u64;
        let next = if index + 1 < count { CHUNKS + (index + 1) * 4096 } else { 0 };
        write_chunk(memory, CHUNKS + index * 4096, next, *order, list.len() as u32, list);
    }
    CHUNKS
}

proptest! {
    // Cheap cases: many of them.
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The root FDT parser never panics on arbitrary bytes.
    #[test]
    fn fdt_parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_kho_fdt(&bytes);
        exercise_fdt_crate(&bytes);
    }

    /// ... nor on a valid root with a few bytes changed, which reaches far
    /// deeper into the structure walk.
    #[test]
    fn fdt_parser_never_panics_on_mutated_roots(
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        truncate in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut builder = KhoFdtBuilder::new(0x4000_0000);
        builder.add_user("baton-boot", 0x1000).unwrap();
        builder.add_user("counter", 0x2000).unwrap();
        let mut blob = builder.build().unwrap();
        for (index, byte) in mutations {
            let position = index.index(blob.len());
            blob[position] = byte;
        }
        if let Some(index) = truncate {
            let length = index.index(blob.len());
            blob.truncate(length);
        }
        let _ = parse_kho_fdt(&blob);
        exercise_fdt_crate(&blob);
    }

    /// The chunk walker never panics on arbitrary memory, and whatever it
    /// accepts is consistent: folios inside RAM, no overlaps, each taken once.
    #[test]
    fn chunk_walker_never_panics(image in hostile_image()) {
        check_hostile_image(&image);
    }
}

/// Everything validation promises about the `fdt` crate's safe subset.
pub(crate) fn exercise_fdt_crate(bytes: &[u8]) {
    let Ok(fdt) = parse_fdt(bytes) else {
        return;
    };
    assert!(validate_fdt(bytes).is_ok());
    for node in fdt.all_nodes() {
        let _ = node.name;
        for property in node.properties() {
            let _ = (property.name, property.as_str(), property.as_usize(), property.value.len());
        }
        for child in node.children() {
            let _ = child.property("fdt");
        }
    }
    let _ = fdt.find_node("/");
    let _ = fdt.find_node("/counter");
    let _ = fdt.total_size();
}

/// A simulated memory image built to look like a chunk list, with random
/// links, orders, counts and addresses, and random bitmap words.
#[derive(Debug, Clone)]
pub(crate) struct HostileImage {
    head: u64,
    chunks: Vec<HostileChunk>,
    bitmaps: Vec<(u16, u64)>,
}

/// `(next, order, element_count, entries)` of one hand-made chunk.
type HostileChunk = (u64, u32, u32, Vec<(u64, u64)>);

/// RAM of the hostile images: 4 GiB (sparse). Chunks use the 16 pages at
/// 1 GiB, bitmaps the 16 pages after them.
pub(crate) const HOSTILE_RAM: PhysRange = PhysRange::new(0, 4 * GIB);
const HOSTILE_CHUNKS: u64 = GIB;
const HOSTILE_BITMAPS: u64 = GIB + 16 * 4096;

/// How a chunk's `next` is chosen: mostly the following chunk.
#[derive(Debug, Clone, Copy)]
enum NextLink {
    Following,
    End,
    Slot(u64),
    Raw(u64),
}

fn next_link() -> impl Strategy<Value = NextLink> {
    prop_oneof![
        8 => Just(NextLink::Following),
        2 => Just(NextLink::End),
        2 => (0_u64..16).prop_map(NextLink::Slot),
        1 => any::<u64>().prop_map(NextLink::Raw),
    ]
}

/// A bitmap address: mostly a distinct slot, sometimes shared, misaligned,
/// inside a chunk page or anywhere.
fn bitmap_address() -> impl Strategy<Value = u64> {
    prop_oneof![
        40 => (0_u64..8).prop_map(|slot| HOSTILE_BITMAPS + slot * 512),
        1 => (0_u64..(16 * 512)).prop_map(|offset| HOSTILE_CHUNKS + offset * 8),
        1 => (0_u64..4096).prop_map(|offset| HOSTILE_BITMAPS + offset * 8),
        1 => any::<u64>(),
    ]
}

/// A chunk whose entries are mostly aligned to its order's bitmap span
/// near the hostile RAM, so that the deeper checks are reached.
fn hostile_chunk() -> impl Strategy<Value = (NextLink, u32, u32, Vec<(u64, u64)>)> {
    let order = prop_oneof![24 => 0_u32..=12, 6 => 13_u32..=MAX_ORDER, 1 => any::<u32>()];
    (next_link(), order).prop_flat_map(|(next, order)| {
        let span = crate::bitmap::bitmap_span_bytes(order.min(MAX_ORDER));
        let near = HOSTILE_CHUNKS & !(span - 1);
        let phys_start = prop_oneof![
            30 => (0_u64..4).prop_map(move |index| near.saturating_add(index.saturating_mul(span))),
            1 => Just(near.saturating_add(4096)),
            1 => any::<u64>(),
        ];
        let entries = prop::collection::vec((phys_start, bitmap_address()), 0..4);
        let count = prop_oneof![
            30 => Just(None),
            1 => (250_u32..260).prop_map(Some),
            1 => any::<u32>().prop_map(Some),
        ];
        (Just(next), Just(order), count, entries).prop_map(|(next, order, count, entries)| {
            let element_count = count.unwrap_or(entries.len() as u32);
            (next, order, element_count, entries)
        })
    })
}

fn hostile_image() -> impl Strategy<Value = HostileImage> {
    let bitmap_word = prop_oneof![
        2 => (0_u32..64).prop_map(|bit| 1_u64 << bit),
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ];
    // Words 0 and 8 of a bitmap hold bits 0..64 and 512..576: at order 0
    // from 1 GiB the chunk and bitmap pages, at order 9 from 0 the 2 MiB
    // folio at 1 GiB. Weighting them makes overlaps and metadata clashes common.
    let word_position = prop_oneof![
        2 => (0_u16..8).prop_map(|slot| slot * 64),
        2 => (0_u16..8).prop_map(|slot| slot * 64 + 8),
        3 => 0_u16..(8 * 64),
    ];
    let head = prop_oneof![
        8 => Just(HOSTILE_CHUNKS),
        1 => (0_u64..16).prop_map(|slot| HOSTILE_CHUNKS + slot * 4096),
        1 => any::<u64>(),
    ];
    (head, prop::collection::vec(hostile_chunk(), 1..8), prop::collection::vec((word_position, bitmap_word), 0..24))
        .prop_map(|(head, chunks, bitmaps)| {
            let count = chunks.len() as u64;
            let chunks = chunks
                .into_iter()
                .enumerate()
                .map(|(index, (next, order, element_count, entries))| {
                    let next = match next {
                        NextLink::Following if (index as u64) + 1 < count => HOSTILE_CHUNKS + (index as u64 + 1) * 4096,
                        NextLink::Following | NextLink::End => 0,
                        NextLink::Slot(slot) => HOSTILE_CHUNKS + slot * 4096,
                        NextLink::Raw(raw) => raw,
                    };
                    (next, order, element_count, entries)
                })
                .collect();
            HostileImage { head, chunks, bitmaps }
        })
}

/// Lay the image out in memory, walk it, and check what was accepted.
pub(crate) fn check_hostile_image(image: &HostileImage) {
    let mut memory = SimulatedMemory::new(&[HOSTILE_RAM], PhysRange::new(0, 0));
    for (index, (next, order, count, entries)) in image.chunks.iter().enumerate() {
        let phys = HOSTILE_CHUNKS + index as u64 * 4096;
        let mut page = alloc::vec![0_u8; 4096];
        page[0..8].copy_from_slice(&next.to_ne_bytes());
        page[8..12].copy_from_slice(&order.to_ne_bytes());
        page[12..16].copy_from_slice(&count.to_ne_bytes());
        for (slot, (phys_start, bitmap)) in entries.iter().enumerate() {
            // Fill the entry slots from the front, and repeat them so that
            // large counts read plausible entries too.
            for copy in (slot..255).step_by(entries.len().max(1)) {
                let offset = 16 + copy * 16;
                page[offset..offset + 8].copy_from_slice(&phys_start.to_ne_bytes());
                page[offset + 8..offset + 16].copy_from_slice(&bitmap.to_ne_bytes());
            }
        }
        memory.write(phys, &page).unwrap();
    }
    for (word, value) in &image.bitmaps {
        let phys = HOSTILE_BITMAPS + u64::from(*word) * 8;
        memory.write_u64(phys, *value).unwrap();
    }
    walk_and_check(&mut memory, image.head, &[HOSTILE_RAM]);
}

/// Walk the list at `head`; if accepted, the result must be consistent.
pub(crate) fn walk_and_check(memory: &mut SimulatedMemory, head: u64, ram: &[PhysRange]) {
    let Ok(mut incoming) = IncomingPreservations::walk_with_limit(memory, head, ram, 64) else {
        return;
    };
    let folios: Vec<Folio> = incoming.folios(memory).take(200_000).collect::<Result<_, _>>().unwrap();
    let runs: Vec<FolioRun> = incoming.runs(memory).collect::<Result<_, _>>().unwrap();
    let run_folios: u64 = runs.iter().map(|run| run.folio_count).sum();
    assert_eq!(run_folios, incoming.remaining_folio_count());
    let mut sorted = folios.clone();
    sorted.sort_by_key(|folio| folio.phys);
    for pair in sorted.windows(2) {
        assert!(pair[0].range().end <= pair[1].phys, "overlap accepted: {pair:?}");
    }
    for folio in &folios {
        assert!(ram.iter().any(|range| range.contains_range(&folio.range())), "outside RAM: {folio:?}");
        for metadata in incoming.metadata_ranges() {
            assert!(!folio.range().overlaps(&metadata), "{folio:?} covers metadata {metadata}");
        }
    }
    for folio in folios.iter().take(64) {
        incoming.take(memory, folio.phys, folio.order).unwrap();
        assert!(incoming.take(memory, folio.phys, folio.order).is_err());
    }
}
