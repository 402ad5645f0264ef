//! Coalescing: how a kernel's mapped ranges become the fewest mappings of a
//! description.
//!
//! A kernel maps a service's memory in ranges of physically contiguous
//! pages (a 1 GiB preservable run is 256 blocks of 4 MiB). Described one
//! by one, such a run would use up every [`MAX_MAPPINGS`] slot on its own.
//! Coalesced, ranges that continue one another (virtually adjacent, same
//! kind, access and folio order) share one mapping, up to
//! [`MAX_RUNS_PER_MAPPING`] runs a mapping. Image and stack ranges that
//! are physically adjacent as well share one run. Preservable ranges never
//! do: each is one block the service allocated, the unit it frees with
//! `free_preservable`, and the next kernel maps each run as one range, so
//! a resumed service can free exactly what it could free before.
//!
//! [`mapping_count`] gives the count [`coalesce`] would reach without
//! building anything, so a kernel can refuse at map time the range that
//! would make a service impossible to describe.
//!
//! [`MAX_MAPPINGS`]: crate::MAX_MAPPINGS

use alloc::vec::Vec;

use crate::description::{MAX_RUNS_PER_MAPPING, Mapping, MappingKind, PhysicalRun};

/// One mapped range as a kernel keeps it: physically contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRange {
    /// First virtual address.
    pub virtual_start: u64,
    /// Length in bytes.
    pub size_bytes: u64,
    /// Physical address of its first byte.
    pub phys_start: u64,
    /// What it holds.
    pub kind: MappingKind,
    /// User code may write it.
    pub is_writable: bool,
    /// User code may execute it.
    pub is_executable: bool,
    /// Folio order (preservable memory; zero otherwise).
    pub folio_order: u32,
    /// The grant a shared range comes from (zero for every other kind).
    pub grant_id: u64,
}

/// What the next range does to the mapping being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// It extends the mapping's last run.
    ExtendRun,
    /// It adds a run to the mapping.
    AddRun,
    /// It starts a new mapping.
    NewMapping,
}

/// Where `next` goes after `last`, in a mapping of `runs` runs.
fn step(last: &MappedRange, runs: usize, next: &MappedRange) -> Step {
    let continues = last.virtual_start.checked_add(last.size_bytes) == Some(next.virtual_start)
        && last.kind == next.kind
        && last.is_writable == next.is_writable
        && last.is_executable == next.is_executable
        && last.folio_order == next.folio_order
        && last.grant_id == next.grant_id;
    if !continues {
        Step::NewMapping
    } else if last.kind != MappingKind::Preservable
        && last.phys_start.checked_add(last.size_bytes) == Some(next.phys_start)
    {
        Step::ExtendRun
    } else if runs < MAX_RUNS_PER_MAPPING {
        Step::AddRun
    } else {
        Step::NewMapping
    }
}

/// How many mappings [`coalesce`] makes of `ranges` (sorted by virtual
/// address, none overlapping).
pub fn mapping_count(ranges: impl IntoIterator<Item = MappedRange>) -> usize {
    let mut count = 0;
    let mut current: Option<(MappedRange, usize)> = None;
    for range in ranges {
        let runs = match &current {
            Some((last, runs)) => match step(last, *runs, &range) {
                Step::ExtendRun => *runs,
                Step::AddRun => runs.saturating_add(1),
                Step::NewMapping => {
                    count += 1;
                    1
                }
            },
            None => {
                count += 1;
                1
            }
        };
        current = Some((range, runs));
    }
    count
}

/// Joins `ranges` (sorted by virtual address, none overlapping) into the
/// fewest mappings the format allows.
pub fn coalesce(ranges: impl IntoIterator<Item = MappedRange>) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    let mut last: Option<MappedRange> = None;
    for range in ranges {
        let run = PhysicalRun { phys_start: range.phys_start, size_bytes: range.size_bytes };
        let open = mappings.last_mut();
        let decision = match (&last, &open) {
            (Some(last), Some(mapping)) => step(last, mapping.runs.len(), &range),
            _ => Step::NewMapping,
        };
        match (decision, open) {
            (Step::ExtendRun, Some(mapping)) => {
                mapping.size_bytes += range.size_bytes;
                if let Some(previous) = mapping.runs.last_mut() {
                    previous.size_bytes += range.size_bytes;
                }
            }
            (Step::AddRun, Some(mapping)) => {
                mapping.size_bytes += range.size_bytes;
                mapping.runs.push(run);
            }
            _ => mappings.push(Mapping {
                virtual_start: range.virtual_start,
                size_bytes: range.size_bytes,
                kind: range.kind,
                is_writable: range.is_writable,
                is_executable: range.is_executable,
                folio_order: range.folio_order,
                grant_id: range.grant_id,
                runs: alloc::vec![run],
            }),
        }
        last = Some(range);
    }
    mappings
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn preservable(virtual_start: u64, phys_start: u64, size_bytes: u64) -> MappedRange {
        MappedRange {
            grant_id: 0,
            virtual_start,
            size_bytes,
            phys_start,
            kind: MappingKind::Preservable,
            is_writable: true,
            is_executable: false,
            folio_order: 0,
        }
    }

    fn both(ranges: &[MappedRange]) -> Vec<Mapping> {
        let mappings = coalesce(ranges.iter().copied());
        assert_eq!(mapping_count(ranges.iter().copied()), mappings.len(), "the count agrees with coalesce");
        mappings
    }

    #[test]
    fn a_gigabyte_run_of_scattered_blocks_is_a_few_mappings() {
        // 256 blocks of 4 MiB, virtually consecutive, physically every
        // other block: 256 runs, so 4 mappings of 64 runs.
        let ranges: Vec<MappedRange> =
            (0..256).map(|index| preservable(0x10_0000_0000 + index * 4 * MIB, index * 8 * MIB, 4 * MIB)).collect();
        let mappings = both(&ranges);
        assert_eq!(mappings.len(), 4);
        for (index, mapping) in mappings.iter().enumerate() {
            assert_eq!(mapping.runs.len(), MAX_RUNS_PER_MAPPING);
            assert_eq!(mapping.size_bytes, 256 * MIB);
            assert_eq!(mapping.virtual_start, 0x10_0000_0000 + index as u64 * 256 * MIB);
            assert_eq!(mapping.runs.iter().map(|run| run.size_bytes).sum::<u64>(), mapping.size_bytes);
        }
    }

    #[test]
    fn physically_adjacent_image_pages_share_one_run() {
        let image = |index: u64| MappedRange {
            kind: MappingKind::Image,
            ..preservable(0x40_0000 + index * MIB, index * MIB, MIB)
        };
        let mappings = both(&[image(0), image(1), image(2)]);
        assert_eq!(mappings.len(), 1);
        assert_eq!(mappings[0].runs, alloc::vec![PhysicalRun { phys_start: 0, size_bytes: 3 * MIB }]);
    }

    #[test]
    fn physically_adjacent_preservable_blocks_stay_separate_runs() {
        // Each block is what `free_preservable` frees: it must come back
        // as a range of its own.
        let ranges: Vec<MappedRange> =
            (0..256).map(|index| preservable(0x10_0000_0000 + index * 4 * MIB, index * 4 * MIB, 4 * MIB)).collect();
        let mappings = both(&ranges);
        assert_eq!(mappings.len(), 4);
        let runs: Vec<PhysicalRun> = mappings.iter().flat_map(|mapping| mapping.runs.iter().copied()).collect();
        let blocks: Vec<PhysicalRun> =
            (0..256).map(|index| PhysicalRun { phys_start: index * 4 * MIB, size_bytes: 4 * MIB }).collect();
        assert_eq!(runs, blocks);
    }

    #[test]
    fn gaps_and_differences_keep_mappings_apart() {
        let base = preservable(0x1000_0000, 0x4000_0000, MIB);
        let gap = preservable(0x1000_0000 + 2 * MIB, 0x4000_0000 + MIB, MIB);
        let other_order = MappedRange { folio_order: 9, virtual_start: 0x1000_0000 + 3 * MIB, ..gap };
        let read_only = MappedRange { is_writable: false, virtual_start: 0x1000_0000 + 4 * MIB, ..gap };
        let other_kind = MappedRange { kind: MappingKind::Heap, virtual_start: 0x1000_0000 + 5 * MIB, ..gap };
        let mappings = both(&[base, gap, other_order, read_only, other_kind]);
        assert_eq!(mappings.len(), 5);
        assert!(mappings.iter().all(|mapping| mapping.runs.len() == 1));
    }

    proptest::proptest! {
        /// Whatever the ranges, coalescing keeps every page where it was,
        /// never exceeds the runs a mapping may hold, and agrees with the
        /// count.
        #[test]
        fn coalescing_keeps_every_page(
            pieces in proptest::collection::vec((0_u64..3, 1_u64..4, 0_u64..3, proptest::bool::ANY), 0..300),
        ) {
            let page = 4096;
            let mut ranges = Vec::new();
            let (mut virt, mut phys) = (0x40_0000_u64, 0x8000_0000_u64);
            for (virtual_gap, pages, physical_gap, is_writable) in pieces {
                virt += virtual_gap * page;
                phys += physical_gap * page;
                let range = MappedRange { is_writable, ..preservable(virt, phys, pages * page) };
                ranges.push(range);
                virt += pages * page;
                phys += pages * page;
            }
            let mappings = both(&ranges);
            let mut pages_of_ranges = Vec::new();
            for range in &ranges {
                for offset in (0..range.size_bytes).step_by(page as usize) {
                    pages_of_ranges.push((range.virtual_start + offset, range.phys_start + offset, range.is_writable));
                }
            }
            let mut pages_of_mappings = Vec::new();
            for mapping in &mappings {
                proptest::prop_assert!(mapping.runs.len() <= MAX_RUNS_PER_MAPPING);
                let mut virt = mapping.virtual_start;
                for run in &mapping.runs {
                    for offset in (0..run.size_bytes).step_by(page as usize) {
                        pages_of_mappings.push((virt + offset, run.phys_start + offset, mapping.is_writable));
                    }
                    virt += run.size_bytes;
                }
                proptest::prop_assert_eq!(virt, mapping.virtual_start + mapping.size_bytes);
            }
            proptest::prop_assert_eq!(pages_of_ranges, pages_of_mappings);
        }
    }

    #[test]
    fn nothing_is_no_mapping() {
        assert!(both(&[]).is_empty());
    }
}
