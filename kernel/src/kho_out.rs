//! The outgoing handover: services' preservable memory, what they preserve,
//! the sub-FDTs they publish, and who owns what.
//!
//! The bookkeeping is `baton-kho`'s `OutgoingHandover`; this module connects
//! it to services: it checks that a service preserves only memory it
//! allocated as preservable, copies published sub-FDTs into kernel pages
//! (preserved on the service's behalf), and records which service preserved
//! which folio so the next kernel can hand each folio back to its owner only.

use crate::mm::direct_map;
use crate::task::Tasks;
use crate::task::user_memory::{AddressSpace, Backing, PRESERVABLE_BASE, user_attributes};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use baton_abi::{Error, PAGE_SIZE, UserBuffer};
use baton_kho::memory::{AccessError, MetadataAllocator, PhysMemory};
use baton_kho::{OutgoingError, OutgoingHandover, TrackerError};
use spin::Mutex;

/// Physical memory as the KHO code sees it: RAM through the direct map, and
/// metadata from the page allocator (never scratch), sub-page pieces carved
/// from whole pages.
pub struct KernelMemory {
    /// Free 512-byte slots for bitmaps.
    free_slots: Vec<u64>,
    /// RAM (sorted, disjoint), copied once so word accesses take no lock.
    ram: Vec<baton_mm::Range>,
}

impl KernelMemory {
    /// Access to the RAM the direct map covers now.
    pub fn new() -> Self {
        Self { free_slots: Vec::new(), ram: crate::mm::ram_ranges() }
    }

    fn is_ram(&self, phys: u64, size_bytes: u64) -> bool {
        let Some(end) = phys.checked_add(size_bytes) else { return false };
        let index = self.ram.partition_point(|range| range.end <= phys);
        self.ram.get(index).is_some_and(|range| range.start <= phys && end <= range.end)
    }
}

const SLOT_BYTES: u64 = 512;

impl PhysMemory for KernelMemory {
    fn read(&self, phys: u64, buffer: &mut [u8]) -> Result<(), AccessError> {
        if !self.is_ram(phys, buffer.len() as u64) {
            return Err(AccessError::OutsideRam { phys, size_bytes: buffer.len() as u64 });
        }
        // SAFETY: the range is RAM, which the direct map covers; KHO reads
        // only metadata and preserved memory it tracks.
        unsafe {
            core::ptr::copy_nonoverlapping(direct_map::to_virtual(phys) as *const u8, buffer.as_mut_ptr(), buffer.len())
        };
        Ok(())
    }

    fn write(&mut self, phys: u64, data: &[u8]) -> Result<(), AccessError> {
        if !self.is_ram(phys, data.len() as u64) {
            return Err(AccessError::OutsideRam { phys, size_bytes: data.len() as u64 });
        }
        // SAFETY: the range is RAM the KHO code allocated as metadata (its
        // only writes), reached through the direct map.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), direct_map::to_virtual(phys) as *mut u8, data.len()) };
        Ok(())
    }

    fn read_u64(&self, phys: u64) -> Result<u64, AccessError> {
        if phys.is_multiple_of(8) && self.is_ram(phys, 8) {
            // SAFETY: an aligned word of RAM, which the direct map covers;
            // KHO reads only bitmaps and chunks through this fast path.
            return Ok(unsafe { (direct_map::to_virtual(phys) as *const u64).read() });
        }
        let mut bytes = [0; 8];
        self.read(phys, &mut bytes)?;
        Ok(u64::from_ne_bytes(bytes))
    }
}

impl MetadataAllocator for KernelMemory {
    fn allocate_zeroed(&mut self, size_bytes: u64, align_bytes: u64) -> Option<u64> {
        let phys = if size_bytes <= SLOT_BYTES && align_bytes <= SLOT_BYTES {
            if self.free_slots.is_empty() {
                let page = crate::mm::allocate_pages(0)?;
                self.free_slots.extend((0..PAGE_SIZE / SLOT_BYTES).rev().map(|slot| page + slot * SLOT_BYTES));
            }
            self.free_slots.pop()?
        } else {
            let order = size_bytes.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros();
            crate::mm::allocate_pages(order)?
        };
        let size = if size_bytes <= SLOT_BYTES { SLOT_BYTES } else { size_bytes.next_multiple_of(PAGE_SIZE) };
        // SAFETY: freshly allocated metadata memory, reached through the
        // direct map.
        unsafe { core::ptr::write_bytes(direct_map::to_virtual(phys) as *mut u8, 0, size as usize) };
        Some(phys)
    }

    fn free(&mut self, phys: u64, size_bytes: u64, align_bytes: u64) {
        if size_bytes <= SLOT_BYTES && align_bytes <= SLOT_BYTES {
            self.free_slots.push(phys);
        } else {
            let order = size_bytes.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros();
            crate::mm::free_pages(phys, order);
        }
    }
}

/// A sub-FDT published by a service, copied into kernel pages.
#[derive(Debug, Clone, Copy)]
struct Publication {
    phys: u64,
    size_bytes: u64,
    order: u32,
}

/// The outgoing handover state.
pub struct KhoOut {
    /// The bookkeeping (tracker, sub-FDT registry, finalise/abort).
    pub handover: OutgoingHandover,
    /// Physical memory access for it.
    pub memory: KernelMemory,
    /// Preserved folios by physical address: (owner, order).
    pub owners: BTreeMap<u64, (String, u32)>,
    /// Kernel copies of published sub-FDTs, by service name.
    publications: BTreeMap<String, Publication>,
    /// The kernel's own publication for the next kernel (while updating).
    boot_description: Option<KernelPublication>,
}

/// The boot description and the ranges the kernel preserved with it.
struct KernelPublication {
    phys: u64,
    order: u32,
    /// Where the `timeline` values are (physical), patched before the jump.
    timeline_phys: Option<u64>,
    /// Page ranges preserved for the next kernel (modules, device tree,
    /// kernel file).
    ranges: Vec<(u64, u64)>,
}

/// The one outgoing handover.
pub static KHO_OUT: Mutex<Option<KhoOut>> = Mutex::new(None);

/// Creates the (empty) outgoing handover.
pub fn init() {
    *KHO_OUT.lock() = Some(KhoOut {
        handover: OutgoingHandover::new(),
        memory: KernelMemory::new(),
        owners: BTreeMap::new(),
        publications: BTreeMap::new(),
        boot_description: None,
    });
}

fn with<T>(action: impl FnOnce(&mut KhoOut) -> Result<T, Error>) -> Result<T, Error> {
    let mut guard = KHO_OUT.lock();
    action(guard.as_mut().ok_or(Error::Busy)?)
}

/// The ABI error for a KHO bookkeeping error.
pub fn to_abi(error: OutgoingError) -> Error {
    match error {
        OutgoingError::Busy | OutgoingError::AlreadyFinalized => Error::Busy,
        OutgoingError::Tracker(TrackerError::OutOfMetadataMemory) | OutgoingError::OutOfMetadataMemory => {
            Error::NoMemory
        }
        OutgoingError::Tracker(TrackerError::AlreadyPreserved { .. }) => Error::AlreadyExists,
        OutgoingError::Tracker(TrackerError::NotPreserved { .. }) => Error::NotFound,
        OutgoingError::Tracker(TrackerError::OverlapsPreserved { .. }) => Error::AlreadyExists,
        OutgoingError::Tracker(_) => Error::InvalidArgument,
        OutgoingError::InvalidSubFdt { .. } | OutgoingError::InvalidUserName => Error::InvalidArgument,
        _ => Error::InvalidArgument,
    }
}

fn is_finalized() -> bool {
    KHO_OUT.lock().as_ref().is_some_and(|out| out.handover.is_finalized())
}

/// `allocate_preservable(order)`: a zeroed folio from the page allocator
/// (never scratch), mapped into the caller.
pub fn allocate(tasks: &mut Tasks, id: u64, order: u32) -> Result<u64, Error> {
    let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
    let size = PAGE_SIZE << order;
    let virt = process.space.find_free(PRESERVABLE_BASE, size, size).ok_or(Error::NoMemory)?;
    let phys = crate::mm::allocate_pages(order).ok_or(Error::NoMemory)?;
    // SAFETY: the folio was just allocated for this service.
    unsafe { core::ptr::write_bytes(direct_map::to_virtual(phys) as *mut u8, 0, size as usize) };
    if let Err(error) =
        process.space.map(virt, phys, size, user_attributes(true, false), Backing::Preservable { phys, order })
    {
        crate::mm::free_pages(phys, order);
        return Err(error);
    }
    Ok(virt)
}

fn preservable_at(space: &AddressSpace, address: u64) -> Result<(u64, u64, u32), Error> {
    match space.range_containing(address) {
        Some((start, _, Backing::Preservable { phys, order })) => Ok((start, phys, order)),
        Some(_) => Err(Error::PermissionDenied),
        None => Err(Error::BadAddress),
    }
}

/// `free_preservable(address)`: unmaps and frees a folio; refused while it
/// is preserved (unpreserve first) or when the handover is frozen.
pub fn free(tasks: &mut Tasks, id: u64, address: u64) -> Result<(), Error> {
    let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
    let (start, phys, order) = preservable_at(&process.space, address)?;
    if start != address {
        return Err(Error::Misaligned);
    }
    if is_finalized() {
        return Err(Error::Busy);
    }
    if with(|out| Ok(out.owners.contains_key(&phys)))? {
        return Err(Error::Busy);
    }
    process.space.unmap(start);
    crate::mm::free_pages(phys, order);
    Ok(())
}

/// `physical_address(address)` of the caller's preservable memory.
pub fn physical_address(tasks: &mut Tasks, id: u64, address: u64) -> Result<u64, Error> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let (start, phys, _) = preservable_at(&process.space, address)?;
    Ok(phys + (address - start))
}

/// `kho_preserve` / `kho_unpreserve`: the range must consist of whole
/// preservable folios of the caller.
pub fn preserve(tasks: &mut Tasks, id: u64, range: UserBuffer, is_preserve: bool) -> Result<(), Error> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let mut folios = Vec::new();
    let mut cursor = range.address;
    while cursor < range.end() {
        let (start, phys, order) = preservable_at(&process.space, cursor)?;
        let end = start + (PAGE_SIZE << order);
        if start != cursor || end > range.end() {
            return Err(Error::Misaligned);
        }
        folios.push((phys, order));
        cursor = end;
    }
    let name = String::from(process.name.as_str());
    with(|out| {
        let mut done = Vec::new();
        for &(phys, order) in &folios {
            let result = if is_preserve {
                out.handover.preserve_folio(&mut out.memory, phys, order)
            } else {
                if out.owners.get(&phys).is_some_and(|(owner, _)| *owner != name) {
                    return Err(Error::PermissionDenied);
                }
                out.handover.unpreserve_folio(&mut out.memory, phys, order)
            };
            if let Err(error) = result {
                // All or nothing: undo what this call already changed.
                for &(phys, order) in &done {
                    let _ = if is_preserve {
                        out.handover.unpreserve_folio(&mut out.memory, phys, order)
                    } else {
                        out.handover.preserve_folio(&mut out.memory, phys, order)
                    };
                }
                return Err(to_abi(error));
            }
            done.push((phys, order));
        }
        for (phys, order) in done {
            if is_preserve {
                out.owners.insert(phys, (name.clone(), order));
            } else {
                out.owners.remove(&phys);
            }
        }
        Ok(())
    })
}

/// `kho_publish(fdt)`: validates the blob, copies it into kernel pages,
/// preserves them and registers them as the caller's sub-FDT (replacing an
/// earlier publication).
pub fn publish(tasks: &mut Tasks, id: u64, buffer: UserBuffer) -> Result<(), Error> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let blob = process.space.read(buffer.address, buffer.length)?;
    let size = baton_kho::validate_fdt(&blob).map_err(|_| Error::InvalidArgument)?;
    let name = String::from(process.name.as_str());
    if is_finalized() {
        return Err(Error::Busy);
    }
    let order = (size as u64).div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros();
    let phys = crate::mm::allocate_pages(order).ok_or(Error::NoMemory)?;
    let destination = direct_map::to_virtual(phys) as *mut u8;
    // SAFETY: the pages were just allocated; `size <= blob.len()` (checked
    // by validation) and the block holds at least `size` bytes.
    unsafe {
        core::ptr::write_bytes(destination, 0, (PAGE_SIZE << order) as usize);
        core::ptr::copy_nonoverlapping(blob.as_ptr(), destination, size);
    }
    let result = with(|out| {
        out.handover.preserve_folio(&mut out.memory, phys, order).map_err(to_abi)?;
        let previous = out.publications.remove(&name);
        if previous.is_some() {
            let _ = out.handover.remove_sub_fdt(&name);
        }
        if let Err(error) = out.handover.add_sub_fdt(&name, phys, size as u64) {
            let _ = out.handover.unpreserve_folio(&mut out.memory, phys, order);
            if let Some(previous) = previous {
                let _ = out.handover.add_sub_fdt(&name, previous.phys, previous.size_bytes);
                out.publications.insert(name.clone(), previous);
            }
            return Err(to_abi(error));
        }
        out.publications.insert(name.clone(), Publication { phys, size_bytes: size as u64, order });
        out.owners.insert(phys, (name.clone(), order));
        Ok(previous)
    });
    match result {
        Ok(previous) => {
            if let Some(previous) = previous {
                with(|out| {
                    out.handover.unpreserve_folio(&mut out.memory, previous.phys, previous.order).map_err(to_abi)
                })?;
                crate::mm::free_pages(previous.phys, previous.order);
            }
            Ok(())
        }
        Err(error) => {
            crate::mm::free_pages(phys, order);
            Err(error)
        }
    }
}

/// Forgets what a service that ended had preserved and published: its
/// memory is freed with it, so nothing of it may be handed over.
pub fn forget_service(name: &str, space: &mut AddressSpace) {
    let Some(mut guard) = KHO_OUT.try_lock() else {
        return;
    };
    let Some(out) = guard.as_mut() else { return };
    if out.handover.is_finalized() {
        // Frozen: the state is already serialised. The folios stay preserved
        // (the update goes ahead or is aborted); the memory is not freed.
        return;
    }
    let owned: Vec<(u64, u32)> =
        out.owners.iter().filter(|(_, (owner, _))| owner == name).map(|(&phys, &(_, order))| (phys, order)).collect();
    for (phys, order) in owned {
        let _ = out.handover.unpreserve_folio(&mut out.memory, phys, order);
        out.owners.remove(&phys);
    }
    if let Some(publication) = out.publications.remove(name) {
        out.owners.remove(&publication.phys);
        let _ = out.handover.remove_sub_fdt(name);
        let _ = out.handover.unpreserve_folio(&mut out.memory, publication.phys, publication.order);
        crate::mm::free_pages(publication.phys, publication.order);
    }
    drop(guard);
    // Free the service's preservable folios (its other memory goes with its
    // address space).
    let folios: Vec<(u64, u64, u32)> = space
        .ranges()
        .filter_map(|(start, _, backing)| match backing {
            Backing::Preservable { phys, order } => Some((start, phys, order)),
            _ => None,
        })
        .collect();
    for (start, phys, order) in folios {
        space.unmap(start);
        crate::mm::free_pages(phys, order);
    }
}

/// Bytes preserved and published right now, for logs and tests.
pub fn figures() -> (u64, usize) {
    KHO_OUT.lock().as_ref().map_or((0, 0), |out| (out.handover.tracker().preserved_bytes(), out.publications.len()))
}

/// Finalises: serialises the preservation bitmaps, builds the root FDT and
/// freezes (further changes fail with `Busy`).
pub fn finalize() -> Result<baton_kho::FinalizeSummary, OutgoingError> {
    let mut guard = KHO_OUT.lock();
    let out = guard.as_mut().ok_or(OutgoingError::NotFinalized)?;
    out.handover.finalize(&mut out.memory)
}

/// Unfreezes after a failed or rehearsed update, freeing the serialised
/// chunks and the root FDT copy.
pub fn abort() {
    let mut guard = KHO_OUT.lock();
    if let Some(out) = guard.as_mut()
        && out.handover.is_finalized()
        && let Err(error) = out.handover.abort(&mut out.memory)
    {
        log::warn!(target: "kho", "abort: {error}");
    }
}

/// Whether the handover is frozen.
pub fn is_frozen() -> bool {
    is_finalized()
}

/// Logs where the outgoing handover is, in the spirit of Linux's kho debugfs.
pub fn log_finalized(summary: &baton_kho::FinalizeSummary) {
    log::info!(
        target: "kho",
        "finalised: root FDT at {:#x} ({} bytes), preserved-memory-map {:#x} ({} chunks, {} bitmaps), {} folios, {} KiB preserved",
        summary.root_fdt_phys,
        summary.root_fdt_size_bytes,
        summary.chunk_list_head_phys,
        summary.chunk_count,
        summary.bitmap_count,
        summary.folio_count,
        summary.preserved_bytes / 1024
    );
    let guard = KHO_OUT.lock();
    if let Some(out) = guard.as_ref() {
        for (name, registration) in out.handover.sub_fdts() {
            log::info!(target: "kho", "  sub-FDT '{name}' at {:#x} ({} bytes)", registration.phys, registration.size_bytes);
        }
    }
    for region in crate::mm::scratch_regions() {
        log::info!(target: "kho", "  scratch {} at {:#x} ({} KiB)", region.kind, region.range.start, region.range.size_bytes() / 1024);
    }
}

/// Pages rounded outwards.
fn page_range(start: u64, end: u64) -> (u64, u64) {
    let first = start & !(PAGE_SIZE - 1);
    (first, end.next_multiple_of(PAGE_SIZE) - first)
}

/// Writes Baton's boot description for the next kernel, preserves it and
/// what it points at (boot modules, the device tree, the kernel file) and
/// registers it as the `baton-boot` sub-FDT. Returns its physical address.
pub fn publish_boot_description(
    freeze_cycles: u64,
    timeline: &[(usize, u64)],
) -> Result<u64, crate::update::UpdateError> {
    use crate::update::UpdateError;
    use baton_boot::info::ScratchArea;
    use baton_mm::scratch::ScratchKind;
    let info = crate::boot_info();
    let scratch: Vec<ScratchArea> = crate::mm::scratch_regions()
        .iter()
        .map(|region| {
            let range = baton_boot::info::PhysRange { start: region.range.start, end: region.range.end };
            match region.kind {
                ScratchKind::Low => ScratchArea::Low(range),
                ScratchKind::Global => ScratchArea::Global(range),
                ScratchKind::Node(node) => ScratchArea::Node(node, range),
            }
        })
        .collect();
    let mut guard = KHO_OUT.lock();
    let out = guard.as_mut().ok_or(UpdateError::BootDescription)?;
    if out.boot_description.is_some() {
        return Err(UpdateError::InProgress);
    }
    let owners: Vec<(u64, u32, &str)> =
        out.owners.iter().map(|(&phys, (owner, order))| (phys, *order, owner.as_str())).collect();
    let extras = baton_boot::handover::HandoverExtras {
        kernel_version: crate::VERSION,
        generation: info.kho.as_ref().map_or(0, |kho| kho.generation) + 1,
        freeze_cycles,
        scratch: &scratch,
        owners: &owners,
        cycle_frequency_hz: baton_arch::cpu::cycle_counter_frequency_hz(),
        timer_ticks_per_second: baton_arch::interrupts::timer_rate(),
    };
    let bytes = baton_boot::handover::write(info, &extras).map_err(|_| UpdateError::BootDescription)?;
    let timeline_offset = baton_boot::handover::timeline_offset(&bytes);
    drop(owners);
    let order = (bytes.len() as u64).div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros();
    let phys = crate::mm::allocate_pages(order).ok_or(UpdateError::OutOfMemory)?;
    // SAFETY: the block was just allocated and holds at least `bytes.len()`.
    unsafe {
        core::ptr::write_bytes(direct_map::to_virtual(phys) as *mut u8, 0, (PAGE_SIZE << order) as usize);
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), direct_map::to_virtual(phys) as *mut u8, bytes.len());
    }
    let mut ranges = Vec::new();
    for module in &info.modules {
        ranges.push(page_range(module.range.start, module.range.end));
    }
    if let Some(tree) = &info.firmware.device_tree {
        ranges.push(page_range(tree.start, tree.end));
    }
    if let Some(file) = &info.kernel.file {
        ranges.push(page_range(file.start, file.end));
    }
    let mut publication = KernelPublication {
        phys,
        order,
        timeline_phys: timeline_offset.map(|offset| phys + offset as u64),
        ranges: Vec::new(),
    };
    let result = (|| {
        out.handover.preserve_folio(&mut out.memory, phys, order)?;
        for &(start, size) in &ranges {
            out.handover.preserve_range(&mut out.memory, start, size)?;
            publication.ranges.push((start, size));
        }
        out.handover.add_sub_fdt(baton_boot::handover::USER_NAME, phys, bytes.len() as u64)
    })();
    if let Err(error) = result {
        log::warn!(target: "kho", "boot description: {error}");
        let _ = out.handover.unpreserve_folio(&mut out.memory, phys, order);
        for &(start, size) in &publication.ranges {
            let _ = out.handover.unpreserve_range(&mut out.memory, start, size);
        }
        crate::mm::free_pages(phys, order);
        return Err(UpdateError::BootDescription);
    }
    out.boot_description = Some(publication);
    drop(guard);
    for &(index, cycles) in timeline {
        stamp_timeline(index, cycles);
    }
    Ok(phys)
}

/// Physical address of a timeline entry (for the trampoline), or 0.
pub fn timeline_entry_phys(index: usize) -> u64 {
    let guard = KHO_OUT.lock();
    guard
        .as_ref()
        .and_then(|out| out.boot_description.as_ref())
        .and_then(|publication| publication.timeline_phys)
        .map_or(0, |phys| phys + 8 * index as u64)
}

/// Writes a cycle-counter reading into the boot description's timeline (see
/// `baton_boot::handover::TIMELINE_*`); the boot description is this
/// kernel's own preserved memory, so changing its contents is allowed.
pub fn stamp_timeline(index: usize, cycles: u64) {
    let guard = KHO_OUT.lock();
    let Some(phys) =
        guard.as_ref().and_then(|out| out.boot_description.as_ref()).and_then(|publication| publication.timeline_phys)
    else {
        return;
    };
    if index < baton_boot::handover::TIMELINE_ENTRIES {
        // SAFETY: the timeline lies inside the boot description, which this
        // kernel allocated and still owns; the write stays inside the
        // property's value (checked index).
        unsafe { (direct_map::to_virtual(phys + 8 * index as u64) as *mut u64).write_unaligned(cycles) };
    }
}

/// Undoes [`publish_boot_description`] after an abort.
pub fn withdraw_boot_description() {
    let mut guard = KHO_OUT.lock();
    let Some(out) = guard.as_mut() else { return };
    let Some(publication) = out.boot_description.take() else { return };
    let _ = out.handover.remove_sub_fdt(baton_boot::handover::USER_NAME);
    let _ = out.handover.unpreserve_folio(&mut out.memory, publication.phys, publication.order);
    for &(start, size) in &publication.ranges {
        let _ = out.handover.unpreserve_range(&mut out.memory, start, size);
    }
    crate::mm::free_pages(publication.phys, publication.order);
}

/// Preserves a folio on behalf of a kernel-internal KHO user (tests).
pub fn preserve_kernel_folio(owner: &str, phys: u64, order: u32) -> Result<(), Error> {
    with(|out| {
        out.handover.preserve_folio(&mut out.memory, phys, order).map_err(to_abi)?;
        out.owners.insert(phys, (String::from(owner), order));
        Ok(())
    })
}

/// Publishes a sub-FDT on behalf of a kernel-internal KHO user (tests).
pub fn publish_kernel_user(name: &str, blob: &[u8]) -> Result<(), Error> {
    let order = (blob.len() as u64).div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros();
    let phys = crate::mm::allocate_pages(order).ok_or(Error::NoMemory)?;
    // SAFETY: the block was just allocated and holds at least `blob.len()`.
    unsafe {
        core::ptr::write_bytes(direct_map::to_virtual(phys) as *mut u8, 0, (PAGE_SIZE << order) as usize);
        core::ptr::copy_nonoverlapping(blob.as_ptr(), direct_map::to_virtual(phys) as *mut u8, blob.len());
    }
    with(|out| {
        out.handover.preserve_folio(&mut out.memory, phys, order).map_err(to_abi)?;
        out.handover.add_sub_fdt(name, phys, blob.len() as u64).map_err(to_abi)?;
        out.owners.insert(phys, (String::from(name), order));
        out.publications.insert(String::from(name), Publication { phys, size_bytes: blob.len() as u64, order });
        Ok(())
    })
}
