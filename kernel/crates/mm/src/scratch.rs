//! Placing the KHO scratch regions in physical memory.
//!
//! On a cold boot Baton reserves physically contiguous scratch regions: one
//! low (for allocations that need low memory, and for the next kernel image),
//! one global, and one per NUMA node. The sizes come from the `kho_scratch=`
//! rules in `baton-kho`; this module only decides *where* they go, top-down
//! like Linux's memblock, and what to do when a size cannot be met: reduce it
//! to the largest contiguous aligned run if that still reaches the minimum,
//! otherwise refuse that region. Boot continues either way.

use crate::region::{Range, RegionSet};
use arrayvec::ArrayVec;
use core::fmt;

/// The most NUMA nodes Baton places per-node scratch for.
pub const MAX_NODES: usize = 8;
/// Low + global + one per node.
pub const MAX_SCRATCH_REGIONS: usize = MAX_NODES + 2;

/// Which scratch region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchKind {
    /// The low region (below 4 GiB on x86_64; in the first 4 GiB of RAM on
    /// aarch64).
    Low,
    /// The global region (anywhere).
    Global,
    /// A per-node region.
    Node(u32),
}

impl fmt::Display for ScratchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScratchKind::Low => f.write_str("lowmem"),
            ScratchKind::Global => f.write_str("global"),
            ScratchKind::Node(node) => write!(f, "node {node}"),
        }
    }
}

/// One placed scratch region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchRegion {
    /// Which region it is.
    pub kind: ScratchKind,
    /// Where it is.
    pub range: Range,
}

/// What placement did to a request it could not meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementNote {
    /// Only `granted_bytes` of the `requested_bytes` fit contiguously.
    Reduced {
        /// The region.
        kind: ScratchKind,
        /// What was asked for.
        requested_bytes: u64,
        /// What was placed.
        granted_bytes: u64,
    },
    /// Not even the minimum fit: the region was not placed.
    Refused {
        /// The region.
        kind: ScratchKind,
        /// What was asked for.
        requested_bytes: u64,
    },
}

impl fmt::Display for PlacementNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementNote::Reduced { kind, requested_bytes, granted_bytes } => write!(
                f,
                "{kind} scratch reduced from {} KiB to {} KiB (largest contiguous free range)",
                requested_bytes >> 10,
                granted_bytes >> 10
            ),
            PlacementNote::Refused { kind, requested_bytes } => {
                write!(
                    f,
                    "{kind} scratch of {} KiB refused: no contiguous free range is large enough",
                    requested_bytes >> 10
                )
            }
        }
    }
}

/// What to place.
#[derive(Debug, Clone, Copy)]
pub struct PlacementRequest<'nodes> {
    /// Bytes for the low region (0: none).
    pub lowmem_bytes: u64,
    /// Bytes for the global region (0: none).
    pub global_bytes: u64,
    /// Bytes for each node's region, with the node's id and memory range.
    pub nodes: &'nodes [(u32, Range, u64)],
    /// Where the low region may go.
    pub low_window: Range,
    /// Alignment (and size granularity) of every region.
    pub alignment: u64,
    /// Below this a region is refused rather than reduced.
    pub minimum_bytes: u64,
    /// Scratch may take at most this much in total, so that a large request
    /// cannot leave nothing for the page allocator; regions placed after the
    /// budget runs low are reduced or refused.
    pub maximum_total_bytes: u64,
}

/// The outcome of placement.
#[derive(Debug, Clone, Default)]
pub struct ScratchPlan {
    /// The placed regions, in placement order.
    pub regions: ArrayVec<ScratchRegion, MAX_SCRATCH_REGIONS>,
    /// Requests that were reduced or refused.
    pub notes: ArrayVec<PlacementNote, MAX_SCRATCH_REGIONS>,
}

impl ScratchPlan {
    /// Total bytes placed.
    pub fn total_bytes(&self) -> u64 {
        self.regions.iter().map(|region| region.range.size_bytes()).sum()
    }

    /// The regions as a set.
    pub fn as_set(&self) -> RegionSet<16> {
        let mut set = RegionSet::new();
        for region in &self.regions {
            // Sixteen ranges hold every placed region (at most ten).
            let _ = set.add(region.range);
        }
        set
    }
}

/// Places the requested regions inside `free` (which is consumed: placed
/// regions are removed from it).
pub fn place<const N: usize>(free: &mut RegionSet<N>, request: &PlacementRequest<'_>) -> ScratchPlan {
    let mut plan = ScratchPlan::default();
    let everywhere = Range::new(0, u64::MAX);
    let mut budget = crate::align_down(request.maximum_total_bytes, request.alignment);
    let mut place_one = |free: &mut RegionSet<N>, kind, requested: u64, window: Range| {
        if requested == 0 {
            return;
        }
        let size = crate::align_up(requested, request.alignment).unwrap_or(requested);
        let affordable = size.min(budget);
        let fit = (affordable == size).then(|| free.find_fit_top_down(size, request.alignment, window)).flatten();
        let placed = match fit {
            Some(range) => Some(range),
            None => match free.largest_aligned(request.alignment, window) {
                Some(largest)
                    if largest.size_bytes().min(affordable) >= request.minimum_bytes.max(request.alignment) =>
                {
                    let granted = largest.size_bytes().min(affordable);
                    let _ = plan.notes.try_push(PlacementNote::Reduced {
                        kind,
                        requested_bytes: size,
                        granted_bytes: granted,
                    });
                    Some(Range::new(largest.end - granted, largest.end))
                }
                _ => {
                    let _ = plan.notes.try_push(PlacementNote::Refused { kind, requested_bytes: size });
                    None
                }
            },
        };
        if let Some(range) = placed
            && free.remove(range).is_ok()
        {
            budget -= range.size_bytes();
            let _ = plan.regions.try_push(ScratchRegion { kind, range });
        }
    };
    place_one(free, ScratchKind::Low, request.lowmem_bytes, request.low_window);
    place_one(free, ScratchKind::Global, request.global_bytes, everywhere);
    for &(node, range, bytes) in request.nodes.iter().take(MAX_NODES) {
        place_one(free, ScratchKind::Node(node), bytes, range);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn free(ranges: &[(u64, u64)]) -> RegionSet<32> {
        let mut set = RegionSet::new();
        for &(start, end) in ranges {
            set.add(Range::new(start, end)).unwrap();
        }
        set
    }

    fn request(low: u64, global: u64, nodes: &[(u32, Range, u64)]) -> PlacementRequest<'_> {
        PlacementRequest {
            lowmem_bytes: low,
            global_bytes: global,
            nodes,
            low_window: Range::new(MIB, 4 * GIB),
            alignment: 2 * MIB,
            minimum_bytes: 4 * MIB,
            maximum_total_bytes: u64::MAX,
        }
    }

    #[test]
    fn places_low_global_and_node_regions_top_down_without_overlap() {
        let mut memory = free(&[(MIB, 2 * GIB), (4 * GIB, 6 * GIB)]);
        let nodes = [(0, Range::new(0, 4 * GIB), 16 * MIB), (1, Range::new(4 * GIB, 6 * GIB), 16 * MIB)];
        let plan = place(&mut memory, &request(32 * MIB, 64 * MIB, &nodes));
        assert!(plan.notes.is_empty());
        let kinds: Vec<_> = plan.regions.iter().map(|region| (region.kind, region.range)).collect();
        assert_eq!(
            kinds,
            [
                (ScratchKind::Low, Range::new(2 * GIB - 32 * MIB, 2 * GIB)),
                (ScratchKind::Global, Range::new(6 * GIB - 64 * MIB, 6 * GIB)),
                (ScratchKind::Node(0), Range::new(2 * GIB - 48 * MIB, 2 * GIB - 32 * MIB)),
                (ScratchKind::Node(1), Range::new(6 * GIB - 80 * MIB, 6 * GIB - 64 * MIB)),
            ]
        );
        for region in &plan.regions {
            assert!(!memory.overlaps(&region.range), "placed region still free");
            assert_eq!(region.range.start % (2 * MIB), 0);
        }
        assert_eq!(plan.total_bytes(), 128 * MIB);
    }

    #[test]
    fn odd_sizes_are_rounded_up_to_the_alignment() {
        let mut memory = free(&[(MIB, 512 * MIB)]);
        let plan = place(&mut memory, &request(3 * MIB + 1, 0, &[]));
        assert_eq!(plan.regions[0].range.size_bytes(), 4 * MIB);
        assert_eq!(plan.regions.len(), 1, "a zero-sized global region is not placed");
    }

    #[test]
    fn too_large_request_is_reduced_to_the_largest_run() {
        // Holes split memory into runs of 10 MiB and 22 MiB.
        let mut memory = free(&[(2 * MIB, 12 * MIB), (14 * MIB, 36 * MIB)]);
        let plan = place(&mut memory, &request(64 * MIB, 0, &[]));
        assert_eq!(plan.regions[0].range, Range::new(14 * MIB, 36 * MIB));
        assert_eq!(
            plan.notes.as_slice(),
            [PlacementNote::Reduced { kind: ScratchKind::Low, requested_bytes: 64 * MIB, granted_bytes: 22 * MIB }]
        );
    }

    #[test]
    fn request_below_the_minimum_is_refused_and_the_rest_still_placed() {
        let mut memory = free(&[(2 * MIB, 4 * MIB), (4 * GIB, 5 * GIB)]);
        let plan = place(&mut memory, &request(16 * MIB, 16 * MIB, &[]));
        assert_eq!(
            plan.notes.as_slice(),
            [PlacementNote::Refused { kind: ScratchKind::Low, requested_bytes: 16 * MIB }]
        );
        assert_eq!(plan.regions.len(), 1);
        assert_eq!(plan.regions[0].kind, ScratchKind::Global);
    }

    #[test]
    fn the_budget_keeps_memory_for_the_page_allocator() {
        let mut memory = free(&[(2 * MIB, 256 * MIB)]);
        let request = PlacementRequest { maximum_total_bytes: 127 * MIB, ..request(16 * MIB, GIB, &[]) };
        let plan = place(&mut memory, &request);
        assert_eq!(plan.regions[0].range.size_bytes(), 16 * MIB);
        assert_eq!(
            plan.notes.as_slice(),
            [PlacementNote::Reduced { kind: ScratchKind::Global, requested_bytes: GIB, granted_bytes: 110 * MIB }]
        );
        assert_eq!(plan.total_bytes(), 126 * MIB);
        assert!(memory.total_bytes() >= 128 * MIB, "half of memory stays free");
    }

    #[test]
    fn low_region_stays_inside_its_window() {
        let mut memory = free(&[(0, 64 * MIB), (4 * GIB, 8 * GIB)]);
        let plan = place(&mut memory, &request(16 * MIB, 0, &[]));
        assert!(plan.regions[0].range.end <= 64 * MIB && plan.regions[0].range.start >= MIB);
    }
}
