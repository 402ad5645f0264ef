//! Physical memory the KHO way: scratch regions, early allocation from
//! scratch, the kernel's own page tables, the heap, and a buddy page
//! allocator built around preserved folios.
//!
//! Boot runs in two phases:
//!
//! 1. [`init_early`]: find (cold boot) or take over (KHO boot) the scratch
//!    regions, start the early allocator on them, build the kernel's page
//!    tables from scratch and switch to them, and bootstrap the heap from
//!    scratch. Nothing outside scratch is written.
//! 2. [`init_page_allocator`]: seed buddy_system_allocator's frame allocator
//!    with RAM minus the kernel image, boot modules, firmware tables, scratch,
//!    the incoming handover metadata and every preserved folio.
//!
//! Scratch stays a separate pool afterwards, for memory that is never
//! preserved (page tables); memory that may be preserved always comes from
//! the page allocator.

pub mod block;
pub mod direct_map;
pub mod heap;
#[cfg(feature = "testing")]
mod tests;
pub mod user;

use crate::mm::direct_map::DirectMapTables;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use baton_arch::paging as arch_paging;
use baton_boot::BootInfo;
use baton_boot::info::MemoryKind;
use baton_kho::scratch::{BATON_SCRATCH_ALIGNMENT_BYTES, ScratchSizing};
use baton_mm::early::{EarlyAllocator, Purpose, ScratchExhausted};
use baton_mm::paging::{Attributes, LeafSizes, MapError, MemoryType, PageTable};
use baton_mm::scratch::{PlacementRequest, ScratchKind, ScratchPlan, ScratchRegion};
use baton_mm::{PAGE_SIZE, Range, RegionSet, align_down, align_up};
use buddy_system_allocator::FrameAllocator;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// Bytes of scratch handed to the heap before the page allocator exists.
pub const BOOTSTRAP_HEAP_BYTES: u64 = 4 << 20;
/// The low scratch region must hold the next kernel image and its early
/// allocations, so it is never smaller than this.
pub const MINIMUM_LOW_SCRATCH_BYTES: u64 = 16 << 20;
/// Placement reduces a region rather than refusing it down to this size.
pub const MINIMUM_SCRATCH_BYTES: u64 = 4 << 20;
/// On x86_64 the first MiB holds firmware data and is never allocated.
#[cfg(target_arch = "x86_64")]
const LOW_RESERVED_BYTES: u64 = 1 << 20;
#[cfg(target_arch = "aarch64")]
const LOW_RESERVED_BYTES: u64 = 0;

/// Where the framebuffer is mapped (write-combining) when it is not RAM.
pub const FRAMEBUFFER_WINDOW: u64 = 0xffff_fd80_0000_0000;
/// The largest framebuffer mapped (8K at 32 bits per pixel fits).
const FRAMEBUFFER_WINDOW_BYTES: u64 = 256 << 20;

/// The framebuffer's kernel address and size, once mapped.
static FRAMEBUFFER: spin::Once<(u64, u64)> = spin::Once::new();

/// Where the first 4 GiB of physical memory are mapped uncached (x86_64):
/// firmware tables in reserved memory (ACPI) and device registers such as
/// the HPET, which the direct map of RAM does not cover.
#[cfg(target_arch = "x86_64")]
const FIRMWARE_WINDOW: u64 = 0xffff_fd00_0000_0000;
#[cfg(target_arch = "x86_64")]
const FIRMWARE_WINDOW_BYTES: u64 = 4 << 30;

/// Whether the firmware window is mapped.
#[cfg(target_arch = "x86_64")]
static FIRMWARE_WINDOW_MAPPED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A kernel address for `size_bytes` of firmware memory (tables, device
/// registers) at `phys`: RAM through the direct map, anything else below
/// 4 GiB through the uncached firmware window (x86_64); `None` otherwise.
#[cfg(target_arch = "x86_64")]
pub fn firmware_address(phys: u64, size_bytes: u64) -> Option<u64> {
    if is_ram(phys, size_bytes.max(1)) {
        return Some(direct_map::to_virtual(phys));
    }
    if FIRMWARE_WINDOW_MAPPED.load(Ordering::Relaxed) && phys.checked_add(size_bytes)? <= FIRMWARE_WINDOW_BYTES {
        return Some(FIRMWARE_WINDOW + phys);
    }
    None
}

/// A kernel address for `size_bytes` of device registers at `phys`,
/// mapped uncached: the firmware window (x86_64, below 4 GiB) or the
/// device window (aarch64); `None` when out of reach, or when `phys` is
/// RAM (registers never are).
pub fn device_address(phys: u64, size_bytes: u64) -> Option<u64> {
    if is_ram(phys, size_bytes.max(1)) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    return firmware_address(phys, size_bytes);
    #[cfg(target_arch = "aarch64")]
    return baton_arch::device_window::map(phys, size_bytes);
}

/// The framebuffer's kernel address and size in bytes, if the boot
/// description has one and it is mapped.
pub fn framebuffer() -> Option<(u64, u64)> {
    FRAMEBUFFER.get().copied()
}

/// Frame numbers of the page allocator are 4 KiB pages.
const FRAME_SHIFT: u64 = 12;
/// buddy_system_allocator order bound (blocks up to 2^32 frames).
const FRAME_ORDER: usize = 33;

/// Why memory setup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// The early allocator ran out of scratch.
    ScratchExhausted(ScratchExhausted),
    /// Building the kernel page tables failed.
    Map(MapError),
    /// The memory map has more ranges than Baton tracks.
    TooManyRanges,
    /// No scratch region could be placed at all.
    NoScratch,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::ScratchExhausted(error) => write!(f, "{error}"),
            MemoryError::Map(error) => write!(f, "building page tables: {error}"),
            MemoryError::TooManyRanges => f.write_str("memory map too fragmented"),
            MemoryError::NoScratch => f.write_str("no scratch region could be placed"),
        }
    }
}

impl From<ScratchExhausted> for MemoryError {
    fn from(error: ScratchExhausted) -> Self {
        MemoryError::ScratchExhausted(error)
    }
}

impl From<MapError> for MemoryError {
    fn from(error: MapError) -> Self {
        MemoryError::Map(error)
    }
}

impl From<baton_mm::region::CapacityExceeded> for MemoryError {
    fn from(_: baton_mm::region::CapacityExceeded) -> Self {
        MemoryError::TooManyRanges
    }
}

/// Where scratch comes from on this boot.
// Built once, on the boot stack, before any heap exists: boxing the larger
// variant is not an option.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ScratchSource {
    /// Cold boot: place new regions, sized by this rule.
    Place(ScratchSizing),
    /// KHO boot: reuse exactly these regions from the handover.
    Handover(arrayvec::ArrayVec<ScratchRegion, { baton_mm::scratch::MAX_SCRATCH_REGIONS }>),
}

/// The memory figures printed at boot and checked by tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    /// RAM in the memory map.
    pub total_ram_bytes: u64,
    /// Scratch regions.
    pub scratch_bytes: u64,
    /// The kernel image.
    pub kernel_bytes: u64,
    /// Preserved folios claimed by their owners.
    pub preserved_restored_bytes: u64,
    /// Preserved folios nobody claimed, released at the end of boot.
    pub preserved_released_bytes: u64,
    /// Preserved folios still waiting for their owner.
    pub preserved_waiting_bytes: u64,
    /// Pages free in the page allocator.
    pub free_bytes: u64,
    /// Early allocations made (all from scratch).
    pub early_allocations: u64,
    /// Early allocations found outside scratch (must be zero).
    pub early_allocations_outside_scratch: u64,
}

/// The memory state after boot.
struct Memory {
    /// The placed or inherited scratch regions.
    scratch: ScratchPlan,
    /// The kernel's page tables.
    kernel_table: PageTable,
    /// The page allocator (None until phase 2).
    frames: Option<PageAllocator>,
    /// RAM in the memory map (for accounting).
    total_ram_bytes: u64,
    /// Kernel image size.
    kernel_bytes: u64,
    /// Memory the page allocator must never hand out (image, modules,
    /// firmware tables, handover metadata).
    reserved: RegionSet<256>,
    /// RAM to seed the page allocator with, before exclusions.
    ram: RegionSet<256>,
    /// RAM the direct map covers.
    mapped: RegionSet<256>,
}

static MEMORY: Mutex<Option<Memory>> = Mutex::new(None);

/// Scratch after boot: the pool for memory that is never preserved (page
/// tables, and the heap when nothing else is at hand). Its own lock, so the
/// heap can grow from it while `MEMORY` is held.
static SCRATCH_POOL: Mutex<Option<EarlyAllocator>> = Mutex::new(None);

/// Blocks taken from the page allocator ahead of time for the heap to grow
/// into: the heap cannot call the page allocator while it allocates,
/// because the page allocator's own bookkeeping allocates from the heap.
static HEAP_RESERVE: Mutex<arrayvec::ArrayVec<(u64, u64), 8>> = Mutex::new(arrayvec::ArrayVec::new_const());
/// The largest growth the heap asked for, so refills keep up with it.
static HEAP_LARGEST_GROWTH: AtomicU64 = AtomicU64::new(2 << 20);
/// Bytes the reserve keeps ready.
const HEAP_RESERVE_BYTES: u64 = 4 << 20;

/// buddy_system_allocator's frame allocator with the counts it does not
/// keep publicly.
struct PageAllocator {
    buddy: FrameAllocator<FRAME_ORDER>,
    free_frames: u64,
}

impl PageAllocator {
    fn allocate(&mut self, frames: u64) -> Option<u64> {
        let frame = self.buddy.alloc(frames as usize)? as u64;
        self.free_frames -= frames.next_power_of_two();
        Some(frame)
    }

    fn take(&mut self, frame: u64, frames: u64) -> bool {
        let taken = self.buddy.alloc_at(frame as usize, frames as usize).is_some();
        if taken {
            self.free_frames -= frames.next_power_of_two();
        }
        taken
    }

    /// Takes the aligned block of `2^order` frames at `frame`, or as much of
    /// it as is free (halving the block where a part is not): returns the
    /// frames taken and the frames that were not free.
    /// Each block taken is passed to `taken` (first frame, frames).
    fn take_best_effort(&mut self, frame: u64, order: u32, taken: &mut dyn FnMut(u64, u64)) -> (u64, u64) {
        if self.take(frame, 1 << order) {
            taken(frame, 1 << order);
            return (1 << order, 0);
        }
        if order == 0 {
            return (0, 1);
        }
        let (low_taken, low_absent) = self.take_best_effort(frame, order - 1, taken);
        let (high_taken, high_absent) = self.take_best_effort(frame + (1 << (order - 1)), order - 1, taken);
        (low_taken + high_taken, low_absent + high_absent)
    }

    fn free(&mut self, frame: u64, frames: u64) {
        self.buddy.dealloc(frame as usize, frames as usize);
        self.free_frames += frames.next_power_of_two();
    }
}

/// Bytes of preserved folios restored by their owners, released unclaimed,
/// and still waiting (kept by the KHO code, reported here).
static PRESERVED_RESTORED_BYTES: AtomicU64 = AtomicU64::new(0);
static PRESERVED_RELEASED_BYTES: AtomicU64 = AtomicU64::new(0);
static PRESERVED_WAITING_BYTES: AtomicU64 = AtomicU64::new(0);

/// Preserved memory kept out of the page allocator for its owner: runs by
/// start address (value: end), adjacent runs merged. Only memory listed
/// here can be claimed ([`block::Block::claim_preserved`]) or released.
static WAITING_PRESERVED: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());

/// The incoming handover's metadata (root FDT, chunks, bitmaps) while it
/// is being consumed: whole pages, sorted and disjoint, kept out of the
/// page allocator until [`release_handover_metadata`].
static HANDOVER_METADATA: Mutex<Vec<Range>> = Mutex::new(Vec::new());

/// The virtual address range and attributes of each part of the kernel image.
fn image_sections() -> [(u64, u64, Attributes); 3] {
    unsafe extern "C" {
        static __kernel_start: u8;
        static __rodata_start: u8;
        static __data_start: u8;
        static __kernel_end: u8;
    }
    let start = &raw const __kernel_start as u64;
    let rodata = &raw const __rodata_start as u64;
    let data = &raw const __data_start as u64;
    let end = &raw const __kernel_end as u64;
    [
        (start, rodata, Attributes::KERNEL_CODE),
        (rodata, data, Attributes::KERNEL_READ_ONLY),
        (data, end, Attributes::KERNEL_DATA),
    ]
}

/// Virtual address of the page below the boot stack, left unmapped so a
/// stack overflow faults instead of corrupting the page tables below it.
fn boot_stack_guard() -> u64 {
    unsafe extern "C" {
        static boot_stack_guard: u8;
    }
    &raw const boot_stack_guard as u64
}

fn range(region: &baton_boot::info::PhysRange) -> Range {
    Range::new(region.start, region.end)
}

/// RAM the direct map must cover and the page allocator may (partly) use.
fn ram_sets(info: &BootInfo) -> Result<(RegionSet<256>, RegionSet<256>), MemoryError> {
    let mut mapped = RegionSet::new();
    let mut usable = RegionSet::new();
    for region in &info.memory_map {
        let whole_pages = Range::new(
            align_up(region.range.start, PAGE_SIZE).unwrap_or(region.range.end),
            align_down(region.range.end, PAGE_SIZE),
        );
        if region.kind.is_ram() || region.kind == MemoryKind::AcpiNvs {
            mapped.add(Range::new(
                align_down(region.range.start, PAGE_SIZE),
                align_up(region.range.end, PAGE_SIZE).unwrap_or(u64::MAX),
            ))?;
        }
        if region.kind == MemoryKind::Usable {
            usable.add(whole_pages)?;
        }
    }
    // Regions that are not free even when the map says usable.
    for region in &info.memory_map {
        if region.kind != MemoryKind::Usable {
            usable.remove(range(&region.range))?;
        }
    }
    Ok((mapped, usable))
}

/// Ranges inside RAM the page allocator must never hand out.
fn boot_reserved(info: &BootInfo) -> Result<RegionSet<256>, MemoryError> {
    let mut reserved = RegionSet::new();
    let page_range = |range: &baton_boot::info::PhysRange| {
        Range::new(align_down(range.start, PAGE_SIZE), align_up(range.end, PAGE_SIZE).unwrap_or(u64::MAX))
    };
    reserved.add(page_range(&info.kernel.phys))?;
    if let Some(file) = &info.kernel.file {
        reserved.add(page_range(file))?;
    }
    for module in &info.modules {
        reserved.add(page_range(&module.range))?;
    }
    if let Some(tree) = &info.firmware.device_tree {
        reserved.add(page_range(tree))?;
    }
    #[cfg(target_arch = "x86_64")]
    reserved.add(Range::new(0, LOW_RESERVED_BYTES))?;
    Ok(reserved)
}

/// The window the low scratch region must lie in.
fn low_window(usable: &RegionSet<256>) -> Range {
    if cfg!(target_arch = "x86_64") {
        Range::new(LOW_RESERVED_BYTES, 4 << 30)
    } else {
        let ram_start = usable.ranges().first().map_or(0, |range| range.start);
        Range::new(ram_start, ram_start.saturating_add(4 << 30))
    }
}

/// The NUMA nodes scratch goes into: each node the firmware describes, as
/// the span of its ranges (a node whose ranges enclose another node's
/// memory is rare; the span is what the placer searches), or one node over
/// all RAM when the firmware describes none.
fn numa_nodes(
    numa: &[baton_boot::info::NumaRange],
    node_bytes: u64,
) -> arrayvec::ArrayVec<(u32, Range, u64), { baton_mm::scratch::MAX_NODES }> {
    let mut nodes: arrayvec::ArrayVec<(u32, Range, u64), { baton_mm::scratch::MAX_NODES }> = arrayvec::ArrayVec::new();
    for numa_range in numa {
        let range = Range::new(numa_range.range.start, numa_range.range.end);
        match nodes.iter_mut().find(|(node, _, _)| *node == numa_range.node) {
            Some((_, span, _)) => *span = Range::new(span.start.min(range.start), span.end.max(range.end)),
            None => {
                if nodes.try_push((numa_range.node, range, node_bytes)).is_err() {
                    break;
                }
            }
        }
    }
    if nodes.is_empty() {
        nodes.push((0, Range::new(0, u64::MAX), node_bytes));
    }
    nodes.sort_unstable_by_key(|(node, _, _)| *node);
    nodes
}

/// Places scratch on a cold boot. Scratch may take at most half of free RAM:
/// larger requests are reduced (and logged) so the page allocator keeps the
/// rest.
fn place_scratch(
    sizing: &ScratchSizing,
    free: &mut RegionSet<256>,
    kernel_bytes: u64,
    numa: &[baton_boot::info::NumaRange],
) -> ScratchPlan {
    // What boot allocates before the page allocator is up: the kernel image,
    // the bootstrap heap and its page tables (one table page per 2 MiB of
    // 4 KiB mappings plus the direct map's few).
    let allocated = kernel_bytes + BOOTSTRAP_HEAP_BYTES + 64 * PAGE_SIZE;
    let alignment = BATON_SCRATCH_ALIGNMENT_BYTES;
    let sizes = sizing
        .sizes(allocated, allocated, alignment)
        .unwrap_or(baton_kho::scratch::ScratchSizes { lowmem_bytes: MINIMUM_LOW_SCRATCH_BYTES, global_bytes: 0 });
    let lowmem_bytes = match sizing {
        ScratchSizing::Scale { .. } => sizes.lowmem_bytes.max(MINIMUM_LOW_SCRATCH_BYTES),
        ScratchSizing::Explicit { .. } => sizes.lowmem_bytes,
    };
    let node_bytes = sizing.per_node_size(allocated, alignment).unwrap_or(0);
    let nodes = numa_nodes(numa, node_bytes);
    let window = low_window(free);
    baton_mm::scratch::place(
        free,
        &PlacementRequest {
            lowmem_bytes,
            global_bytes: sizes.global_bytes,
            nodes: &nodes[..],
            low_window: window,
            alignment,
            minimum_bytes: MINIMUM_SCRATCH_BYTES,
            maximum_total_bytes: free.total_bytes() / 2,
        },
    )
}

/// Phase 1: scratch, early allocator, kernel page tables, bootstrap heap.
pub fn init_early(info: &BootInfo, source: ScratchSource) -> Result<(), MemoryError> {
    let (mapped, mut usable) = ram_sets(info)?;
    let reserved = boot_reserved(info)?;
    let total_ram_bytes = info.total_ram_bytes();
    let kernel_bytes = info.kernel.phys.size_bytes();

    let mut free = usable.clone();
    free.remove_all(&reserved)?;
    let scratch = match source {
        ScratchSource::Place(sizing) => place_scratch(&sizing, &mut free, kernel_bytes, &info.numa),
        ScratchSource::Handover(regions) => {
            let mut plan = ScratchPlan::default();
            for region in regions {
                free.remove(region.range)?;
                let _ = plan.regions.try_push(region);
            }
            plan
        }
    };
    for note in &scratch.notes {
        log::warn!(target: "mm", "{note}");
    }
    if scratch.regions.is_empty() {
        return Err(MemoryError::NoScratch);
    }

    // Inside scratch, the early allocator skips what already lives there
    // (on a KHO boot, this kernel's own image and any module).
    let scratch_set = scratch.as_set();
    let in_use: arrayvec::ArrayVec<Range, 64> =
        reserved.ranges().iter().copied().filter(|r| scratch_set.overlaps(r)).take(64).collect();
    // The low region holds kernel images (this one after an update, the
    // next one at the jump): early allocations go elsewhere when they can.
    let low = scratch.regions.iter().find(|region| region.kind == ScratchKind::Low).map(|region| region.range);
    let mut early = EarlyAllocator::new(&scratch_set, &in_use);
    if let Some(low) = low {
        early = early.with_last_resort(low);
    }

    // The kernel's page tables, from scratch.
    let mut allocate_page = || early.allocate(PAGE_SIZE, PAGE_SIZE, Purpose::PageTable).ok();
    let mut tables = DirectMapTables { allocate_page: &mut allocate_page };
    let kernel_table = PageTable::new(&mut tables)?;
    let large = LeafSizes { gigabyte: arch_paging::has_gigabyte_pages(), two_megabyte: true };
    for ram in mapped.ranges() {
        kernel_table.map::<arch_paging::EntryFormat>(
            &mut tables,
            direct_map::to_virtual(ram.start),
            ram.start,
            ram.size_bytes(),
            Attributes::KERNEL_DATA,
            large,
        )?;
    }
    let image_phys = info.kernel.phys.start;
    let guard = boot_stack_guard();
    for (start, end, attributes) in image_sections() {
        let mut virt = start;
        while virt < end {
            if virt != guard {
                let phys = image_phys + (virt - info.kernel.virt_start);
                kernel_table.map::<arch_paging::EntryFormat>(
                    &mut tables,
                    virt,
                    phys,
                    PAGE_SIZE,
                    attributes,
                    LeafSizes::PAGES_ONLY,
                )?;
            }
            virt += PAGE_SIZE;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        // 2 MiB leaves: five table pages for the whole window.
        let attributes =
            Attributes { is_writable: true, is_executable: false, is_user: false, memory: MemoryType::Device };
        let leaves = LeafSizes { gigabyte: false, two_megabyte: true };
        let mapped = kernel_table.map::<arch_paging::EntryFormat>(
            &mut tables,
            FIRMWARE_WINDOW,
            0,
            FIRMWARE_WINDOW_BYTES,
            attributes,
            leaves,
        );
        FIRMWARE_WINDOW_MAPPED.store(mapped.is_ok(), Ordering::Relaxed);
    }
    let framebuffer = info.framebuffer.as_ref().and_then(|framebuffer| {
        let bytes = u64::from(framebuffer.pitch_bytes) * u64::from(framebuffer.height);
        let start = align_down(framebuffer.phys, PAGE_SIZE);
        let end = align_up(framebuffer.phys.checked_add(bytes)?, PAGE_SIZE)?;
        if mapped.overlaps(&Range::new(start, end)) {
            // A framebuffer in RAM (QEMU's ramfb) is reached through the
            // direct map: one mapping, one set of attributes.
            return Some((direct_map::to_virtual(framebuffer.phys), bytes));
        }
        if end - start > FRAMEBUFFER_WINDOW_BYTES {
            return None;
        }
        let attributes =
            Attributes { is_writable: true, is_executable: false, is_user: false, memory: MemoryType::WriteCombining };
        let leaves = LeafSizes { gigabyte: false, two_megabyte: true };
        kernel_table
            .map::<arch_paging::EntryFormat>(&mut tables, FRAMEBUFFER_WINDOW, start, end - start, attributes, leaves)
            .ok()?;
        Some((FRAMEBUFFER_WINDOW + (framebuffer.phys - start), bytes))
    });
    #[cfg(target_arch = "aarch64")]
    kernel_table.install_table::<arch_paging::EntryFormat>(
        &mut tables,
        baton_arch::device_window::WINDOW_START,
        1,
        baton_arch::device_window::table_phys(),
    )?;
    let empty_user_root = PageTable::new(&mut tables)?.root();
    // `tables` borrows the early allocator: its last use is above.

    // SAFETY: the new tree maps the image (at its link addresses, including
    // the boot stack and every static), the direct map of all RAM (at the
    // offset in use now) and, on aarch64, the device window; nothing the
    // kernel touches from here on lies outside them.
    unsafe { arch_paging::activate_kernel(kernel_table.root(), empty_user_root) };

    let heap_phys = early.allocate(BOOTSTRAP_HEAP_BYTES, PAGE_SIZE, Purpose::BootstrapHeap)?;
    heap::init(heap_phys, BOOTSTRAP_HEAP_BYTES);
    if let Some(framebuffer) = framebuffer {
        FRAMEBUFFER.call_once(|| framebuffer);
    }

    // Limine's own structures are no longer needed once its tables are gone.
    for region in &info.memory_map {
        if region.kind == MemoryKind::BootloaderReclaimable {
            usable.add(range(&region.range))?;
        }
    }
    *SCRATCH_POOL.lock() = Some(early);
    *MEMORY.lock() = Some(Memory {
        scratch,
        kernel_table,
        frames: None,
        total_ram_bytes,
        kernel_bytes,
        reserved,
        ram: usable,
        mapped,
    });
    Ok(())
}

/// Phase 2: the page allocator, seeded with RAM minus everything reserved,
/// minus scratch, minus `extra_reserved` (incoming handover metadata) and
/// minus the folios `preserved` yields (physical address, order).
pub fn init_page_allocator(
    extra_reserved: &[Range],
    preserved: &mut dyn Iterator<Item = Range>,
) -> Result<(), MemoryError> {
    let mut guard = MEMORY.lock();
    let memory = guard.as_mut().expect("init_early ran");
    let mut free = memory.ram.clone();
    free.remove_all(&memory.reserved)?;
    for region in &memory.scratch.regions {
        free.remove(region.range)?;
    }
    let mut metadata: Vec<Range> = extra_reserved
        .iter()
        .map(|range| Range::new(align_down(range.start, PAGE_SIZE), align_up(range.end, PAGE_SIZE).unwrap_or(u64::MAX)))
        .collect();
    metadata.sort_unstable_by_key(|range| range.start);
    // Bitmaps share pages: merge, so every page is released once.
    let mut merged: Vec<Range> = Vec::with_capacity(metadata.len());
    for range in metadata {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => *last = Range::new(last.start, last.end.max(range.end)),
            _ => merged.push(range),
        }
    }
    for range in &merged {
        free.remove(*range)?;
    }
    *HANDOVER_METADATA.lock() = merged;
    let mut frames = PageAllocator { buddy: FrameAllocator::new(), free_frames: 0 };
    for range in free.ranges() {
        let first = align_up(range.start, PAGE_SIZE).unwrap_or(range.end) >> FRAME_SHIFT;
        let last = align_down(range.end, PAGE_SIZE) >> FRAME_SHIFT;
        if last > first {
            frames.buddy.add_frame(first as usize, last as usize);
            frames.free_frames += last - first;
        }
    }
    // Preserved memory keeps its place: each run is taken out of the
    // allocator as its naturally aligned blocks, so the cost grows with the
    // runs, not the pages (owners restore them; the rest is released later).
    let (mut waiting, mut missing) = (0, 0);
    let mut waiting_runs = WAITING_PRESERVED.lock();
    let mut record = |frame: u64, frames: u64| {
        insert_merged(&mut waiting_runs, frame << FRAME_SHIFT, (frame + frames) << FRAME_SHIFT);
    };
    for run in preserved {
        // What lies in ranges reserved anyway (boot modules, the device
        // tree) is the kernel's own and already out of the allocator.
        let mut parts = RegionSet::<16>::new();
        parts.add(run)?;
        if parts.remove_all(&memory.reserved).is_err() {
            parts = RegionSet::new();
            parts.add(run)?;
        }
        for part in parts.ranges() {
            for (phys, order) in baton_mm::aligned_blocks(*part) {
                let (taken, absent) = frames.take_best_effort(phys >> FRAME_SHIFT, order, &mut record);
                waiting += taken << FRAME_SHIFT;
                missing += absent << FRAME_SHIFT;
            }
        }
    }
    if missing > 0 {
        log::warn!(target: "mm", "{} KiB of preserved memory was not in free RAM", missing / 1024);
    }
    drop(waiting_runs);
    PRESERVED_WAITING_BYTES.fetch_add(waiting, Ordering::Relaxed);
    let limit = crate::options::get().service_limit_bytes.unwrap_or(frames.free_frames * PAGE_SIZE / 2);
    SERVICE_LIMIT_BYTES.store(limit, Ordering::Relaxed);
    memory.frames = Some(frames);
    drop(guard);
    refill_heap_reserve();
    Ok(())
}

/// Allocates a naturally aligned block of `1 << order` pages from the page
/// allocator (never scratch); the memory is not zeroed. Outside `mm`, pages
/// are allocated as a [`block::Block`].
fn allocate_frames(order: u32) -> Option<u64> {
    let mut guard = MEMORY.lock();
    let frames = guard.as_mut()?.frames.as_mut()?;
    frames.allocate(1 << order).map(|frame| frame << FRAME_SHIFT)
}

/// Memory services' own allocations may not take: the kernel's page
/// tables, heap and handover metadata always find room, so a service that
/// allocates until refused cannot stop an update or the kernel.
pub fn service_reserve_bytes(total_ram_bytes: u64) -> u64 {
    (total_ram_bytes / 32).clamp(8 << 20, 64 << 20)
}

/// The most preservable memory one service may hold (set when the page
/// allocator starts).
static SERVICE_LIMIT_BYTES: AtomicU64 = AtomicU64::new(u64::MAX);

/// The most preservable memory one service may hold: half of what was free
/// when the page allocator started, or `mem.service_limit_mib=`. One
/// service that allocates until refused leaves the rest to the others.
pub fn service_limit_bytes() -> u64 {
    SERVICE_LIMIT_BYTES.load(Ordering::Relaxed)
}

/// As [`allocate_frames`], for memory a service asked for: refused when it
/// would leave less than [`service_reserve_bytes`] free.
fn allocate_service_frames(order: u32) -> Option<u64> {
    let mut guard = MEMORY.lock();
    let memory = guard.as_mut()?;
    let reserve_frames = service_reserve_bytes(memory.total_ram_bytes) >> FRAME_SHIFT;
    let frames = memory.frames.as_mut()?;
    if frames.free_frames < reserve_frames + (1 << order) {
        return None;
    }
    frames.allocate(1 << order).map(|frame| frame << FRAME_SHIFT)
}

/// Returns a block from [`allocate_frames`].
fn free_pages(phys: u64, order: u32) {
    let mut guard = MEMORY.lock();
    if let Some(frames) = guard.as_mut().and_then(|memory| memory.frames.as_mut()) {
        frames.free(phys >> FRAME_SHIFT, 1 << order);
    }
}

/// Returns physically contiguous pages (any alignment) to the page
/// allocator, as naturally aligned blocks so that buddies merge.
fn free_range(range: Range) {
    let mut guard = MEMORY.lock();
    if let Some(frames) = guard.as_mut().and_then(|memory| memory.frames.as_mut()) {
        for (phys, order) in baton_mm::aligned_blocks(range) {
            frames.free(phys >> FRAME_SHIFT, 1 << order);
        }
    }
}

/// Adds `[start, end)` to a set of disjoint runs (start -> end), merged
/// with the runs it touches.
fn insert_merged(runs: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
    if let Some((&before_start, &before_end)) = runs.range(..=start).next_back()
        && before_end >= start
    {
        runs.remove(&before_start);
        start = before_start;
        end = end.max(before_end);
    }
    while let Some((&after_start, &after_end)) = runs.range(start..).next()
        && after_start <= end
    {
        runs.remove(&after_start);
        end = end.max(after_end);
    }
    runs.insert(start, end);
}

/// Takes `range` out of the waiting preserved memory; false (and nothing
/// changes) unless it lies wholly inside one waiting run.
fn take_waiting_preserved(range: Range) -> bool {
    let mut waiting = WAITING_PRESERVED.lock();
    let Some((&start, &end)) = waiting.range(..=range.start).next_back() else { return false };
    if range.is_empty() || range.end > end {
        return false;
    }
    waiting.remove(&start);
    if start < range.start {
        waiting.insert(start, range.start);
    }
    if range.end < end {
        waiting.insert(range.end, end);
    }
    true
}

/// The owner of preserved memory takes it back (it stays out of the page
/// allocator, now as the owner's memory): see [`block::Block::claim_preserved`].
fn claim_waiting_preserved(range: Range) -> bool {
    let is_waiting = take_waiting_preserved(range);
    if is_waiting {
        PRESERVED_WAITING_BYTES.fetch_sub(range.size_bytes(), Ordering::Relaxed);
        PRESERVED_RESTORED_BYTES.fetch_add(range.size_bytes(), Ordering::Relaxed);
    }
    is_waiting
}

/// Gives preserved memory nobody claimed back to the page allocator;
/// false (nothing freed) unless all of it is still waiting.
pub fn release_preserved(range: Range) -> bool {
    let is_waiting = take_waiting_preserved(range);
    if is_waiting {
        free_range(range);
        PRESERVED_WAITING_BYTES.fetch_sub(range.size_bytes(), Ordering::Relaxed);
        PRESERVED_RELEASED_BYTES.fetch_add(range.size_bytes(), Ordering::Relaxed);
    }
    is_waiting
}

/// Writes `data` into the incoming handover's metadata (the next kernel
/// marks folios taken in the previous kernel's bitmaps); refused outside it
/// or after it was released.
pub fn write_handover_metadata(phys: u64, data: &[u8]) -> Result<(), direct_map::NotRam> {
    let refused = direct_map::NotRam { phys, size_bytes: data.len() as u64 };
    let end = phys.checked_add(data.len() as u64).ok_or(refused)?;
    let metadata = HANDOVER_METADATA.lock();
    let index = metadata.partition_point(|range| range.end <= phys);
    match metadata.get(index) {
        Some(range) if range.start <= phys && end <= range.end => {
            // SAFETY: inside the incoming metadata (checked), which the page
            // allocator never hands out while it is listed, and which only
            // the incoming handover reads and writes (under the lock).
            unsafe { direct_map::write(phys, data) };
            Ok(())
        }
        _ => Err(refused),
    }
}

/// Hands the incoming handover's metadata to the page allocator once it has
/// been consumed (later writes to it are refused).
pub fn release_handover_metadata() {
    let metadata = core::mem::take(&mut *HANDOVER_METADATA.lock());
    for range in metadata {
        add_free_range(range);
    }
}

/// The bytes of a boot module or of the kernel's own file: memory that the
/// page allocator never hands out and nothing writes. `None` unless `range`
/// lies in RAM reserved at boot for such files.
pub fn boot_file_bytes(range: Range) -> Option<&'static [u8]> {
    let guard = MEMORY.lock();
    let memory = guard.as_ref()?;
    let info = crate::options::boot_info();
    let is_boot_file = info.modules.iter().map(|module| module.range).chain(info.kernel.file).any(|file| {
        let file = Range::new(file.start, file.end);
        file.contains(&range)
    });
    if !is_boot_file || !memory.mapped.contains(&range) || !memory.reserved.contains(&range) {
        return None;
    }
    // SAFETY: RAM (checked) reserved from the page allocator since boot for
    // a boot file (checked), which nothing writes.
    Some(unsafe { direct_map::slice(range) })
}

/// Prepares the next kernel's destination in scratch before anything
/// freezes: every page of `destination` whose contents will change (to
/// `source`'s bytes, or to zeroes when `source` is `None`) is written back
/// word by word with the value it already holds, and pages that already
/// hold the new contents are left alone. On hardware this only warms the
/// caches. Emulators that track translated code (QEMU TCG) drop stale
/// translations of an earlier kernel's code here, outside the blackout,
/// instead of during the trampoline's copy (measured: 250 ms instead of
/// 4 ms), and keep their translations of pages that do not change (an
/// update into the same image). Refused (false) unless `destination` lies
/// in scratch and `source` is a boot file of the same length.
pub fn prime_for_overwrite(destination: Range, source: Option<Range>) -> bool {
    let is_scratch = scratch_regions().iter().any(|region| region.range.contains(&destination));
    let source_bytes = match source {
        Some(source) if source.size_bytes() == destination.size_bytes() => match boot_file_bytes(source) {
            Some(bytes) => Some(bytes),
            None => return false,
        },
        Some(_) => return false,
        None => None,
    };
    if !is_scratch || !is_ram(destination.start, destination.size_bytes()) {
        return false;
    }
    let mut offset = 0;
    while offset < destination.size_bytes() {
        let page_start = destination.start + offset;
        let length = (PAGE_SIZE - page_start % PAGE_SIZE).min(destination.size_bytes() - offset);
        let page = Range::new(page_start, page_start + length);
        // SAFETY: RAM in scratch (checked); read as a copy-free comparison
        // while nothing else runs (the kernel is single-CPU and takes no
        // interrupts while it runs).
        let current = unsafe { direct_map::slice(page) };
        let differs = match source_bytes {
            None => current.iter().any(|&byte| byte != 0),
            Some(bytes) => current != &bytes[offset as usize..(offset + length) as usize],
        };
        if differs {
            // SAFETY: as above; the kernel runs on one CPU with interrupts
            // off, so nothing writes between a byte's read and write back,
            // even where the page holds this kernel's scratch allocations.
            unsafe { direct_map::rewrite_in_place(page) };
        }
        offset += length;
    }
    true
}

/// The framebuffer's memory for the console, once: the screen (mapped by
/// `init_early`) and a shadow copy of the same size from the page
/// allocator, kept for the kernel's lifetime.
pub fn framebuffer_console_memory() -> Option<(&'static mut [u8], &'static mut [u8])> {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    let (virt, bytes) = framebuffer()?;
    if TAKEN.swap(true, Ordering::Relaxed) {
        return None;
    }
    let shadow = block::Block::allocate(block::order_for_bytes(bytes))?.leak();
    // SAFETY: `init_early` mapped `bytes` of framebuffer at `virt` for the
    // kernel alone; it is handed out once (checked above).
    let screen = unsafe { core::slice::from_raw_parts_mut(virt as *mut u8, bytes as usize) };
    // SAFETY: the pages were just allocated and leaked to the console, which
    // keeps them for the kernel's lifetime.
    let shadow = unsafe { direct_map::slice_mut(Range::new(shadow.start, shadow.start + bytes)) };
    Some((screen, shadow))
}

/// The RAM the direct map covers.
pub fn ram_ranges() -> alloc::vec::Vec<Range> {
    MEMORY.lock().as_ref().map(|memory| memory.mapped.ranges().to_vec()).unwrap_or_default()
}

/// Hands `range` (whole pages) to the page allocator: handover metadata
/// once it has been consumed.
fn add_free_range(range: Range) {
    let mut guard = MEMORY.lock();
    if let Some(frames) = guard.as_mut().and_then(|memory| memory.frames.as_mut()) {
        let first = align_up(range.start, PAGE_SIZE).unwrap_or(range.end) >> FRAME_SHIFT;
        let last = align_down(range.end, PAGE_SIZE) >> FRAME_SHIFT;
        if last > first {
            frames.buddy.add_frame(first as usize, last as usize);
            frames.free_frames += last - first;
        }
    }
}

/// Whether `[phys, phys + size_bytes)` is RAM (covered by the direct map).
pub fn is_ram(phys: u64, size_bytes: u64) -> bool {
    let Some(end) = phys.checked_add(size_bytes) else {
        return false;
    };
    let guard = MEMORY.lock();
    guard.as_ref().is_some_and(|memory| memory.mapped.contains(&Range::new(phys, end.max(phys + 1))))
}

/// Whether any byte of `[phys, phys + size_bytes)` is RAM (a device range
/// must have none: mapped uncached, it would alias memory).
pub fn overlaps_ram(phys: u64, size_bytes: u64) -> bool {
    let Some(end) = phys.checked_add(size_bytes) else {
        return true;
    };
    let guard = MEMORY.lock();
    guard.as_ref().is_some_and(|memory| memory.mapped.overlaps(&Range::new(phys, end.max(phys + 1))))
}

/// Returns a page from [`allocate_kernel_page`]: pages of the scratch pool
/// stay with it (it is reset by the next boot), others go back to the page
/// allocator.
pub fn free_kernel_page(phys: u64) {
    let is_scratch = MEMORY.lock().as_ref().is_some_and(|memory| {
        memory.scratch.regions.iter().any(|region| region.range.contains(&Range::new(phys, phys + PAGE_SIZE)))
    });
    if !is_scratch {
        free_pages(phys, 0);
    }
}

/// A zeroed page from the scratch pool, falling back to the page allocator
/// (for page tables and other memory that is never preserved).
pub fn allocate_kernel_page() -> Option<u64> {
    let from_pool = SCRATCH_POOL.lock().as_mut()?.allocate(PAGE_SIZE, PAGE_SIZE, Purpose::PageTable).ok();
    let page = match from_pool {
        Some(page) => page,
        None => MEMORY.lock().as_mut()?.frames.as_mut()?.allocate(1)? << FRAME_SHIFT,
    };
    // SAFETY: the page was just allocated and nothing else uses it.
    unsafe { direct_map::write_bytes(page, 0, PAGE_SIZE) };
    Some(page)
}

/// Memory for the heap to grow by, taken without calling the page
/// allocator: a block of the reserve, or the scratch pool.
fn allocate_for_heap(size_bytes: u64) -> Option<u64> {
    HEAP_LARGEST_GROWTH.fetch_max(size_bytes, Ordering::Relaxed);
    if let Some(mut reserve) = HEAP_RESERVE.try_lock()
        && let Some(index) = reserve.iter().position(|&(_, size)| size >= size_bytes)
    {
        let (phys, size) = reserve.swap_remove(index);
        if size > size_bytes {
            // Keep the rest for later growth.
            let _ = reserve.try_push((phys + size_bytes, size - size_bytes));
        }
        return Some(phys);
    }
    SCRATCH_POOL.try_lock()?.as_mut()?.allocate(size_bytes, PAGE_SIZE, Purpose::BootstrapHeap).ok()
}

/// Tops the heap reserve up from the page allocator. Called where no heap
/// allocation is in progress (timer ticks, the main loop).
pub fn refill_heap_reserve() {
    let block = HEAP_LARGEST_GROWTH.load(Ordering::Relaxed).next_power_of_two().max(2 << 20);
    loop {
        let held: u64 = HEAP_RESERVE.lock().iter().map(|&(_, size)| size).sum();
        if held >= HEAP_RESERVE_BYTES.max(block) || HEAP_RESERVE.lock().is_full() {
            return;
        }
        let order = (block / PAGE_SIZE).trailing_zeros();
        let Some(phys) = allocate_frames(order) else { return };
        if HEAP_RESERVE.lock().try_push((phys, block)).is_err() {
            free_pages(phys, order);
            return;
        }
    }
}

/// The scratch regions in use.
pub fn scratch_regions() -> arrayvec::ArrayVec<ScratchRegion, { baton_mm::scratch::MAX_SCRATCH_REGIONS }> {
    MEMORY.lock().as_ref().map(|memory| memory.scratch.regions.clone()).unwrap_or_default()
}

#[cfg(feature = "testing")]
/// What scratch placement had to reduce or refuse on this boot.
pub fn scratch_notes()
-> arrayvec::ArrayVec<baton_mm::scratch::PlacementNote, { baton_mm::scratch::MAX_SCRATCH_REGIONS }> {
    MEMORY.lock().as_ref().map(|memory| memory.scratch.notes.clone()).unwrap_or_default()
}

/// The kernel's page-table tree.
pub fn kernel_table() -> PageTable {
    MEMORY.lock().as_ref().expect("init_early ran").kernel_table
}

#[cfg(feature = "testing")]
/// The early allocations made so far, for tests: (range, purpose). The
/// memory lock is held while `visit` runs: it must not call back into `mm`.
pub fn early_allocations(visit: &mut dyn FnMut(Range, Purpose)) {
    if let Some(pool) = SCRATCH_POOL.lock().as_ref() {
        for &(range, purpose) in pool.recorded() {
            visit(range, purpose);
        }
    }
}

/// The memory figures.
pub fn accounting() -> Accounting {
    let (early_allocations, early_allocations_outside_scratch) =
        SCRATCH_POOL.lock().as_ref().map_or((0, 0), |pool| (pool.count(), pool.allocations_outside_scratch() as u64));
    let guard = MEMORY.lock();
    let Some(memory) = guard.as_ref() else {
        return Accounting::default();
    };
    Accounting {
        total_ram_bytes: memory.total_ram_bytes,
        scratch_bytes: memory.scratch.total_bytes(),
        kernel_bytes: memory.kernel_bytes,
        preserved_restored_bytes: PRESERVED_RESTORED_BYTES.load(Ordering::Relaxed),
        preserved_released_bytes: PRESERVED_RELEASED_BYTES.load(Ordering::Relaxed),
        preserved_waiting_bytes: PRESERVED_WAITING_BYTES.load(Ordering::Relaxed),
        free_bytes: memory.frames.as_ref().map_or(0, |frames| frames.free_frames * PAGE_SIZE),
        early_allocations,
        early_allocations_outside_scratch,
    }
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        write!(
            f,
            "memory: total {} KiB, scratch {} KiB, kernel {} KiB, preserved+restored {} KiB, \
             preserved+released {} KiB, preserved waiting {} KiB, free {} KiB",
            self.total_ram_bytes / KIB,
            self.scratch_bytes / KIB,
            self.kernel_bytes / KIB,
            self.preserved_restored_bytes / KIB,
            self.preserved_released_bytes / KIB,
            self.preserved_waiting_bytes / KIB,
            self.free_bytes / KIB
        )
    }
}

/// Logs where scratch is.
pub fn log_scratch() {
    let info = crate::options::boot_info();
    if !info.numa.is_empty() {
        let nodes = numa_nodes(&info.numa, 0);
        log::info!(target: "mm", "NUMA: {} node(s) in {} range(s) from the firmware", nodes.len(), info.numa.len());
    }
    for region in scratch_regions() {
        let kind = match region.kind {
            ScratchKind::Low => alloc::string::String::from("lowmem"),
            ScratchKind::Global => alloc::string::String::from("global"),
            ScratchKind::Node(node) => alloc::format!("node {node}"),
        };
        log::info!(target: "mm", "scratch {kind:<6} {} ({} MiB)", region.range, region.range.size_bytes() >> 20);
    }
}
