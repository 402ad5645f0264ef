//! The outgoing handover: services' preservable memory, what they preserve,
//! the sub-FDTs they publish, and who owns what.
//!
//! The bookkeeping is `baton-kho`'s `OutgoingHandover`; this module connects
//! it to services: it checks that a service preserves only memory it
//! allocated as preservable, copies published sub-FDTs into kernel pages
//! (preserved on the service's behalf), and records which service owns
//! which preservable memory so the next kernel can hand it back to its owner
//! only. Ownership is kept per allocation (a run of folios), never per page,
//! so its cost does not grow with the bytes a service preserves.

use crate::mm::direct_map;
use crate::task::Tasks;
use crate::task::user_memory::{AddressSpace, Backing, PRESERVABLE_BASE, user_attributes};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use baton_abi::{Error, PAGE_SIZE, UserBuffer};
use baton_kho::memory::{AccessError, MetadataAllocator, PhysMemory};
use baton_kho::{FolioRun, OutgoingError, OutgoingHandover, TrackerError};
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

/// Preservable memory one owner holds: `folios` consecutive folios of
/// `order` (one allocation, restored run or kernel publication).
#[derive(Debug, Clone)]
pub struct Owned {
    /// The owning service or kernel user.
    pub owner: String,
    /// The folios' order.
    pub order: u32,
    /// How many folios.
    pub folios: u64,
    /// How many of them are preserved now.
    pub preserved: u64,
}

impl Owned {
    fn size_bytes(&self) -> u64 {
        self.folios * (PAGE_SIZE << self.order)
    }
}

/// The outgoing handover state.
pub struct KhoOut {
    /// The bookkeeping (tracker, sub-FDT registry, finalise/abort).
    pub handover: OutgoingHandover,
    /// Physical memory access for it.
    pub memory: KernelMemory,
    /// Preservable memory by physical address of its first folio.
    pub owners: BTreeMap<u64, Owned>,
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
        OutgoingError::Tracker(TrackerError::NotPreserved { .. } | TrackerError::RangeNotPreserved { .. }) => {
            Error::NotFound
        }
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
    allocate_run(tasks, id, order, 1)
}

/// `allocate_preservable_run(order, count)`: `count` zeroed folios mapped
/// consecutively, placed in physically contiguous blocks of up to
/// `MAX_USER_FOLIO_ORDER` pages (each block one mapping, mapped with 2 MiB
/// leaves where it is large enough). All or nothing.
pub fn allocate_run(tasks: &mut Tasks, id: u64, order: u32, count: u64) -> Result<u64, Error> {
    let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
    let folio_bytes = PAGE_SIZE << order;
    let total = count.checked_mul(folio_bytes).ok_or(Error::Overflow)?;
    let held = with(|out| {
        Ok(out.owners.values().filter(|owned| owned.owner == process.name.as_str()).map(Owned::size_bytes).sum::<u64>())
    })?;
    if held.saturating_add(total) > crate::mm::service_limit_bytes() {
        return Err(Error::NoMemory);
    }
    let pages = total / PAGE_SIZE;
    let block_order = pages.ilog2().min(baton_abi::MAX_USER_FOLIO_ORDER).max(order);
    let virt = process.space.find_free(PRESERVABLE_BASE, total, PAGE_SIZE << block_order).ok_or(Error::NoMemory)?;
    let mut blocks: Vec<(u64, u64, u32)> = Vec::new();
    let mut offset = 0;
    let result = (|| {
        while offset < total {
            // The largest block that fits what is left, never below a folio.
            let order_left = ((total - offset) / PAGE_SIZE).ilog2();
            let this_order = block_order.min(order_left).max(order);
            let bytes = PAGE_SIZE << this_order;
            let phys = crate::mm::allocate_service_pages(this_order).ok_or(Error::NoMemory)?;
            // SAFETY: the block was just allocated for this service.
            unsafe { core::ptr::write_bytes(direct_map::to_virtual(phys) as *mut u8, 0, bytes as usize) };
            let backing = Backing::Preservable { phys, order, folios: bytes / folio_bytes };
            if let Err(error) = process.space.map(virt + offset, phys, bytes, user_attributes(true, false), backing) {
                crate::mm::free_pages(phys, this_order);
                return Err(error);
            }
            blocks.push((virt + offset, phys, this_order));
            offset += bytes;
        }
        Ok(())
    })();
    if let Err(error) = result {
        for (start, phys, block_order) in blocks {
            process.space.unmap(start);
            crate::mm::free_pages(phys, block_order);
        }
        return Err(error);
    }
    let name = String::from(process.name.as_str());
    with(|out| {
        for &(_, phys, block_order) in &blocks {
            let folios = 1 << (block_order - order);
            out.owners.insert(phys, Owned { owner: name.clone(), order, folios, preserved: 0 });
        }
        Ok(())
    })?;
    Ok(virt)
}

/// Records that `name` took back preserved memory from the previous kernel
/// (`kho_restore`): it owns it here as if it had allocated it.
pub fn adopt(name: &str, phys: u64, order: u32, folios: u64) {
    let _ = with(|out| {
        out.owners.insert(phys, Owned { owner: String::from(name), order, folios, preserved: 0 });
        Ok(())
    });
}

/// The preservable mapping containing `address`: (start, phys, order,
/// folios).
fn preservable_at(space: &AddressSpace, address: u64) -> Result<(u64, u64, u32, u64), Error> {
    match space.range_containing(address) {
        Some((start, _, Backing::Preservable { phys, order, folios })) => Ok((start, phys, order, folios)),
        Some(_) => Err(Error::PermissionDenied),
        None => Err(Error::BadAddress),
    }
}

/// `free_preservable(address)`: unmaps and frees a folio, or the whole
/// block of a run that `address` starts; refused while any of it is
/// preserved (unpreserve first) or when the handover is frozen.
pub fn free(tasks: &mut Tasks, id: u64, address: u64) -> Result<(), Error> {
    let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
    let (start, phys, order, folios) = preservable_at(&process.space, address)?;
    if start != address {
        return Err(Error::Misaligned);
    }
    with(|out| {
        if out.handover.is_finalized() || out.owners.get(&phys).is_some_and(|owned| owned.preserved > 0) {
            return Err(Error::Busy);
        }
        out.owners.remove(&phys);
        Ok(())
    })?;
    process.space.unmap(start);
    crate::mm::free_range(baton_mm::Range::new(phys, phys + folios * (PAGE_SIZE << order)));
    Ok(())
}

/// `physical_address(address)` of the caller's preservable memory.
pub fn physical_address(tasks: &mut Tasks, id: u64, address: u64) -> Result<u64, Error> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let (start, phys, _, _) = preservable_at(&process.space, address)?;
    Ok(phys + (address - start))
}

/// `kho_preserve` / `kho_unpreserve`: the range must consist of whole
/// preservable folios of the caller; each mapping it crosses becomes one
/// run of folios for the tracker (whole bitmap words at a time). All or
/// nothing.
pub fn preserve(tasks: &mut Tasks, id: u64, range: UserBuffer, is_preserve: bool) -> Result<(), Error> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    // (first folio of the owning mapping, the run inside it)
    let mut pieces: Vec<(u64, FolioRun)> = Vec::new();
    let mut cursor = range.address;
    while cursor < range.end() {
        let (start, phys, order, folios) = preservable_at(&process.space, cursor)?;
        let folio_bytes = PAGE_SIZE << order;
        let end = (start + folios * folio_bytes).min(range.end());
        if !(cursor - start).is_multiple_of(folio_bytes) || !(end - start).is_multiple_of(folio_bytes) {
            return Err(Error::Misaligned);
        }
        let run = FolioRun { phys: phys + (cursor - start), order, folio_count: (end - cursor) / folio_bytes };
        pieces.push((phys, run));
        cursor = end;
    }
    let name = process.name.as_str();
    with(|out| {
        if pieces.iter().any(|(owner_phys, _)| out.owners.get(owner_phys).is_none_or(|owned| owned.owner != name)) {
            return Err(Error::PermissionDenied);
        }
        let change = |out: &mut KhoOut, run: FolioRun, is_preserve: bool| {
            if is_preserve {
                out.handover.preserve_folio_run(&mut out.memory, run)
            } else {
                out.handover.unpreserve_range(&mut out.memory, run.phys, run.size_bytes())
            }
        };
        for (done, &(_, run)) in pieces.iter().enumerate() {
            if let Err(error) = change(out, run, is_preserve) {
                // All or nothing: undo what this call already changed.
                for &(_, undo) in &pieces[..done] {
                    let _ = change(out, undo, !is_preserve);
                }
                return Err(to_abi(error));
            }
        }
        for (owner_phys, run) in pieces {
            if let Some(owned) = out.owners.get_mut(&owner_phys) {
                owned.preserved = match is_preserve {
                    true => owned.preserved + run.folio_count,
                    false => owned.preserved.saturating_sub(run.folio_count),
                };
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
        out.owners.insert(phys, Owned { owner: name.clone(), order, folios: 1, preserved: 1 });
        if let Some(previous) = &previous {
            out.owners.remove(&previous.phys);
        }
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
    let publication = out.publications.remove(name);
    let owned: Vec<(u64, u64, u64)> = out
        .owners
        .iter()
        .filter(|(_, owned)| owned.owner == name)
        .map(|(&phys, owned)| (phys, owned.size_bytes(), owned.preserved))
        .collect();
    for (phys, size_bytes, preserved) in owned {
        out.owners.remove(&phys);
        if preserved > 0 && publication.is_none_or(|publication| publication.phys != phys) {
            let _ = out.handover.unpreserve_inside(&mut out.memory, phys, size_bytes);
        }
    }
    if let Some(publication) = publication {
        let _ = out.handover.remove_sub_fdt(name);
        let _ = out.handover.unpreserve_folio(&mut out.memory, publication.phys, publication.order);
        crate::mm::free_pages(publication.phys, publication.order);
    }
    drop(guard);
    // Free the service's preservable memory (its other memory goes with its
    // address space).
    let mappings: Vec<(u64, u64, u64)> = space
        .ranges()
        .filter_map(|(start, size, backing)| match backing {
            Backing::Preservable { phys, .. } => Some((start, phys, size)),
            _ => None,
        })
        .collect();
    for (start, phys, size) in mappings {
        space.unmap(start);
        crate::mm::free_range(baton_mm::Range::new(phys, phys + size));
    }
}

/// Whether the service `name` has a sub-FDT published right now.
pub fn has_published(name: &str) -> bool {
    KHO_OUT.lock().as_ref().is_some_and(|out| out.publications.contains_key(name))
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
    let info = crate::options::boot_info();
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
    // Ownership of what is preserved, adjacent runs of one owner and order
    // merged: the table grows with allocations, never with pages.
    let mut owners: Vec<baton_boot::handover::OwnedRun> = Vec::new();
    for (&phys, owned) in out.owners.iter().filter(|(_, owned)| owned.preserved > 0) {
        match owners.last_mut() {
            Some(last) if last.owner == owned.owner && last.order == owned.order && last.end() == phys => {
                last.folios += owned.folios;
            }
            _ => owners.push(baton_boot::handover::OwnedRun {
                phys,
                order: owned.order,
                folios: owned.folios,
                owner: owned.owner.as_str(),
            }),
        }
    }
    let history = crate::kho_in::history();
    let extras = baton_boot::handover::HandoverExtras {
        kernel_version: crate::options::VERSION,
        generation: info.kho.as_ref().map_or(0, |kho| kho.generation) + 1,
        freeze_cycles,
        scratch: &scratch,
        owners: &owners,
        cycle_frequency_hz: baton_arch::cpu::cycle_counter_frequency_hz(),
        timer_ticks_per_second: baton_arch::interrupts::timer_rate(),
        history: &history,
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
        out.owners.insert(phys, Owned { owner: String::from(owner), order, folios: 1, preserved: 1 });
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
        out.owners.insert(phys, Owned { owner: String::from(name), order, folios: 1, preserved: 1 });
        out.publications.insert(String::from(name), Publication { phys, size_bytes: blob.len() as u64, order });
        Ok(())
    })
}
