//! Kernel tests of memory setup: scratch, early allocation, page tables,
//! heap and page allocator.

use super::direct_map;
use super::{accounting, early_allocations, kernel_table, scratch_regions};
use crate::{check, check_eq, kernel_test};
use alloc::vec::Vec;
use baton_arch::paging::EntryFormat;
use baton_mm::Range;
use baton_mm::scratch::ScratchKind;

/// Whether `range` lies inside scratch (adjacent regions count as one).
fn in_scratch(range: Range) -> bool {
    let mut scratch: baton_mm::RegionSet<16> = baton_mm::RegionSet::new();
    for region in scratch_regions() {
        let _ = scratch.add(region.range);
    }
    scratch.contains(&range)
}

fn overlaps_scratch(range: Range) -> bool {
    scratch_regions().iter().any(|region| region.range.overlaps(&range))
}

kernel_test! {
    /// Every allocation made before the page allocator existed came from
    /// scratch, and there were some (page tables, bootstrap heap).
    fn early_allocations_come_from_scratch() -> TestResult {
        let figures = accounting();
        check!(figures.early_allocations >= 4, "only {} early allocations", figures.early_allocations);
        check_eq!(figures.early_allocations_outside_scratch, 0);
        let mut recorded = Vec::new();
        early_allocations(&mut |range, _| recorded.push(range));
        let mut outside = 0;
        let seen = recorded.len();
        for range in recorded {
            if !in_scratch(range) {
                crate::println!("    early allocation {range} is outside scratch");
                outside += 1;
            }
        }
        check!(seen > 0);
        check_eq!(outside, 0);
        Ok(())
    }
}

kernel_test! {
    /// Scratch lies in RAM, away from the kernel image and modules, and the
    /// low region is where the next kernel image can go.
    fn scratch_regions_are_sane() -> TestResult {
        let info = crate::options::boot_info();
        let regions = scratch_regions();
        check!(!regions.is_empty());
        let low = regions.iter().find(|region| region.kind == ScratchKind::Low);
        check!(low.is_some(), "no low scratch region");
        if let Some(low) = low {
            check!(low.range.size_bytes() >= super::MINIMUM_LOW_SCRATCH_BYTES || crate::options::get().kho_scratch.is_some());
            let ram_start = info.memory_map.iter().find(|region| region.kind.is_ram()).map_or(0, |region| region.range.start);
            check!(low.range.end <= ram_start + (4 << 30), "low scratch {} is not in the first 4 GiB of RAM", low.range);
        }
        let image = Range::new(info.kernel.phys.start, info.kernel.phys.end);
        for region in &regions {
            check_eq!(region.range.start % (2 << 20), 0);
            check!(!region.range.overlaps(&image), "scratch {} overlaps the kernel image", region.range);
            for module in &info.modules {
                check!(!region.range.overlaps(&Range::new(module.range.start, module.range.end)));
            }
            let inside_ram = info.memory_map.iter().any(|ram| {
                ram.kind == baton_boot::info::MemoryKind::Usable && ram.range.start <= region.range.start && region.range.end <= ram.range.end
            });
            check!(inside_ram, "scratch {} is not inside usable RAM", region.range);
        }
        Ok(())
    }
}

kernel_test! {
    /// The page allocator hands out naturally aligned blocks outside scratch
    /// and outside the kernel image, and takes them back.
    fn page_allocator_stays_out_of_scratch() -> TestResult {
        let info = crate::options::boot_info();
        let image = Range::new(info.kernel.phys.start, info.kernel.phys.end);
        let free_before = accounting().free_bytes;
        let mut blocks = Vec::new();
        for index in 0..600u32 {
            let order = index % 5;
            let Some(block) = super::block::Block::allocate(order) else { break };
            blocks.push((block, order));
        }
        check_eq!(blocks.len(), 600);
        for (block, order) in &mut blocks {
            let range = block.range();
            check_eq!(block.phys() % (4096 << *order), 0);
            check!(!overlaps_scratch(range), "block {range} is in scratch");
            check!(!range.overlaps(&image), "block {range} overlaps the kernel");
            block.as_mut_slice().fill(0xa5);
        }
        check!(accounting().free_bytes < free_before);
        drop(blocks);
        check_eq!(accounting().free_bytes, free_before);
        Ok(())
    }
}

kernel_test! {
    /// The heap outgrows its bootstrap memory by taking pages from the page
    /// allocator, and the data stays intact.
    fn heap_grows_beyond_the_bootstrap() -> TestResult {
        let grown_before = super::heap::grown_bytes();
        let mut chunks: Vec<Vec<u64>> = Vec::new();
        for chunk in 0..24u64 {
            let mut values = Vec::with_capacity(64 * 1024);
            values.extend((0..64 * 1024).map(|index| chunk * 1_000_003 + index));
            chunks.push(values);
        }
        check!(super::heap::grown_bytes() > grown_before, "12 MiB fit in the 4 MiB bootstrap heap?");
        for (chunk, values) in chunks.iter().enumerate() {
            let chunk = chunk as u64;
            check!(values.iter().enumerate().all(|(index, &value)| value == chunk * 1_000_003 + index as u64));
        }
        Ok(())
    }
}

fn translate(virt: u64) -> Option<(u64, baton_mm::paging::Attributes)> {
    kernel_table().translate::<EntryFormat>(&direct_map::read_only_tables(), virt)
}

kernel_test! {
    /// The kernel's own tables map code read-only and data non-executable,
    /// leave the boot stack's guard page unmapped, and map all RAM.
    fn kernel_page_tables_enforce_permissions() -> TestResult {
        let code = translate(kernel_page_tables_enforce_permissions as *const () as u64);
        check!(code.is_some());
        if let Some((_, attributes)) = code {
            check!(attributes.is_executable && !attributes.is_writable, "code is {attributes:?}");
        }
        static DATA: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        if let Some((_, attributes)) = translate(&DATA as *const _ as u64) {
            check!(attributes.is_writable && !attributes.is_executable, "data is {attributes:?}");
        } else {
            check!(false, "data is not mapped");
        }
        check!(translate(super::boot_stack_guard()).is_none(), "the stack guard page is mapped");
        let info = crate::options::boot_info();
        for region in info.memory_map.iter().filter(|region| region.kind.is_ram()) {
            let last = region.range.end - 1;
            check_eq!(translate(direct_map::to_virtual(last)).map(|(phys, _)| phys), Some(last));
        }
        // The identity map of the entry code is gone (on aarch64 low
        // addresses go through TTBR0, which holds an empty table).
        #[cfg(target_arch = "x86_64")]
        check!(translate(info.kernel.phys.start).is_none());
        Ok(())
    }
}

kernel_test! {
    /// The boot accounting adds up: free memory plus scratch plus the kernel
    /// never exceeds RAM, and most of the rest is free on an idle system.
    fn accounting_adds_up() -> TestResult {
        let figures = accounting();
        check!(figures.total_ram_bytes > 0);
        check!(figures.free_bytes + figures.scratch_bytes + figures.kernel_bytes <= figures.total_ram_bytes);
        let available = figures.total_ram_bytes - figures.scratch_bytes - figures.kernel_bytes;
        check!(figures.free_bytes >= available / 10 * 8, "{figures}");
        Ok(())
    }
}

kernel_test! {
    /// `kho_scratch=` takes effect: explicit sizes are placed as given (or
    /// reduced when memory is short), a scale changes the default sizes, and
    /// a malformed value falls back to the default.
    fn scratch_follows_the_command_line() -> TestResult {
        use baton_kho::scratch::ScratchSizing;
        let info = crate::options::boot_info();
        let regions = scratch_regions();
        let size_of = |kind: ScratchKind| regions.iter().find(|region| region.kind == kind).map(|region| region.range.size_bytes());
        match crate::options::get().kho_scratch.map(ScratchSizing::parse) {
            Some(Ok(ScratchSizing::Explicit { lowmem_bytes, global_bytes, per_node_bytes })) => {
                use baton_mm::scratch::PlacementNote;
                let notes = super::scratch_notes();
                for (kind, requested) in
                    [(ScratchKind::Low, lowmem_bytes), (ScratchKind::Global, global_bytes), (ScratchKind::Node(0), per_node_bytes)]
                {
                    let requested = requested.next_multiple_of(2 << 20);
                    let note = notes.iter().find(|note| match note {
                        PlacementNote::Reduced { kind: noted, .. } | PlacementNote::Refused { kind: noted, .. } => *noted == kind,
                    });
                    match note {
                        None => check_eq!(size_of(kind), Some(requested)),
                        Some(PlacementNote::Reduced { granted_bytes, .. }) => {
                            check!(*granted_bytes < requested);
                            check_eq!(size_of(kind), Some(*granted_bytes));
                        }
                        Some(PlacementNote::Refused { .. }) => check_eq!(size_of(kind), None),
                    }
                }
            }
            Some(Ok(ScratchSizing::Scale { percent })) => {
                let default_node = size_of(ScratchKind::Node(0)).unwrap_or(0);
                let expected = ScratchSizing::Scale { percent }
                    .per_node_size(info.kernel.phys.size_bytes() + super::BOOTSTRAP_HEAP_BYTES + 64 * 4096, 2 << 20)
                    .unwrap_or(0);
                check_eq!(default_node, expected);
            }
            Some(Err(_)) | None => {
                check!(size_of(ScratchKind::Low).unwrap_or(0) >= super::MINIMUM_LOW_SCRATCH_BYTES);
            }
        }
        Ok(())
    }
}

kernel_test! {
    /// With NUMA nodes from the firmware (QEMU `-numa`: the SRAT on x86_64,
    /// `numa-node-id` on aarch64), every node gets a scratch region inside
    /// its own memory. A scenario: it needs a machine with two nodes.
    scenario fn numa_nodes_each_have_scratch() -> TestResult {
        let info = crate::options::boot_info();
        check!(info.numa.len() >= 2, "the firmware described {} NUMA range(s)", info.numa.len());
        let regions = super::scratch_regions();
        let mut nodes: alloc::vec::Vec<u32> = info.numa.iter().map(|range| range.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        check!(nodes.len() >= 2);
        for node in nodes {
            let region = regions.iter().find(|region| region.kind == ScratchKind::Node(node));
            check!(region.is_some(), "node {node} has no scratch region");
            let Some(region) = region else { continue };
            let inside = info.numa.iter().any(|numa| {
                numa.node == node && numa.range.start <= region.range.start && region.range.end <= numa.range.end
            });
            check!(inside, "node {node}'s scratch {} lies outside its memory", region.range);
        }
        Ok(())
    }
}
