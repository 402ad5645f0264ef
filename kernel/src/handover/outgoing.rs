//! The outgoing handover: services' preservable memory, what they preserve,
//! the sub-FDTs they publish, and who owns what.
//!
//! The bookkeeping is `baton-kho`'s `OutgoingHandover`; this module connects
//! it to owners (a service's name and its address space, passed in by the
//! caller): it checks that an owner preserves only memory it allocated as
//! preservable, copies published sub-FDTs into kernel pages (preserved on
//! the owner's behalf), and records which owner holds which preservable
//! memory so the next kernel can hand it back to that owner only. Ownership
//! is kept per allocation (a run of folios), never per page, so its cost
//! does not grow with the bytes an owner preserves. The memory itself is
//! held here as blocks: removing an owner's entry frees it.

use super::HandoverError;
use super::memory::KernelMemory;
use crate::mm;
use crate::mm::block::{Block, order_for_bytes};
use crate::mm::user::{AddressSpace, Backing, PRESERVABLE_BASE, user_attributes};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use baton_abi::{PAGE_SIZE, UserBuffer};
use baton_kho::{FolioRun, OutgoingHandover};
use spin::Mutex;

/// A sub-FDT published by an owner, copied into kernel pages.
#[derive(Debug)]
pub(super) struct Publication {
    pub(super) block: Block,
    pub(super) size_bytes: u64,
}

impl Publication {
    /// The order of the folio it was preserved as (its whole block).
    fn order(&self) -> u32 {
        order_for_bytes(self.block.size_bytes())
    }
}

/// Preservable memory one owner holds: `folios` consecutive folios of
/// `order` (one allocation, restored run or kernel publication).
#[derive(Debug)]
pub struct Owned {
    /// The owning service or kernel user.
    pub owner: String,
    /// The folios' order.
    pub order: u32,
    /// How many folios.
    pub folios: u64,
    /// How many of them are preserved now.
    pub preserved: u64,
    /// The memory (`None` for a publication, whose block its
    /// [`Publication`] holds). Held, never read: removing the entry frees it.
    #[allow(dead_code)]
    block: Option<Block>,
}

impl Owned {
    fn size_bytes(&self) -> u64 {
        self.folios * (PAGE_SIZE << self.order)
    }
}

/// The outgoing handover state.
pub struct KhoOut {
    /// The bookkeeping (tracker, sub-FDT registry, finalise/abort).
    pub(super) handover: OutgoingHandover,
    /// Physical memory access for it.
    pub(super) memory: KernelMemory,
    /// Preservable memory by physical address of its first folio.
    pub(super) owners: BTreeMap<u64, Owned>,
    /// Kernel copies of published sub-FDTs, by owner name.
    publications: BTreeMap<String, Publication>,
    /// The kernel's own publication for the next kernel (while updating).
    pub(super) boot_description: Option<super::boot_desc::KernelPublication>,
    /// Memory preserved so the next kernel can resume processes (while
    /// updating): listed as its owners' in the boot description.
    pub(super) resumed: Vec<ResumeRun>,
}

/// One mapping of a process the next kernel resumes, preserved on its
/// behalf: `folios` folios of `order` at `phys`, owned by `owner`.
#[derive(Debug)]
pub(super) struct ResumeRun {
    pub(super) owner: String,
    pub(super) phys: u64,
    pub(super) order: u32,
    pub(super) folios: u64,
    /// What this step preserved (the rest the owner had preserved itself),
    /// as (physical address, bytes): unpreserved again on abort.
    added: Vec<(u64, u64)>,
}

impl ResumeRun {
    pub(super) fn end(&self) -> u64 {
        self.phys + self.folios * (PAGE_SIZE << self.order)
    }
}

/// The one outgoing handover.
pub(super) static KHO_OUT: Mutex<Option<KhoOut>> = Mutex::new(None);

/// Creates the (empty) outgoing handover.
pub fn init() {
    *KHO_OUT.lock() = Some(KhoOut {
        handover: OutgoingHandover::new(),
        memory: KernelMemory::outgoing(),
        owners: BTreeMap::new(),
        publications: BTreeMap::new(),
        boot_description: None,
        resumed: Vec::new(),
    });
}

pub(super) fn with<T>(action: impl FnOnce(&mut KhoOut) -> Result<T, HandoverError>) -> Result<T, HandoverError> {
    let mut guard = KHO_OUT.lock();
    action(guard.as_mut().ok_or(HandoverError::NotReady)?)
}

fn is_finalized() -> bool {
    KHO_OUT.lock().as_ref().is_some_and(|out| out.handover.is_finalized())
}

/// `allocate_preservable(order)`: a zeroed folio from the page allocator
/// (never scratch), mapped into the owner's space.
pub fn allocate(owner: &str, space: &mut AddressSpace, order: u32) -> Result<u64, HandoverError> {
    allocate_run(owner, space, order, 1)
}

/// `allocate_preservable_run(order, count)`: `count` zeroed folios mapped
/// consecutively, placed in physically contiguous blocks of up to
/// `MAX_USER_FOLIO_ORDER` pages (each block one mapping, mapped with 2 MiB
/// leaves where it is large enough). All or nothing.
pub fn allocate_run(owner: &str, space: &mut AddressSpace, order: u32, count: u64) -> Result<u64, HandoverError> {
    let folio_bytes = PAGE_SIZE << order;
    let total = count.checked_mul(folio_bytes).ok_or(HandoverError::Overflow)?;
    let held =
        with(|out| Ok(out.owners.values().filter(|owned| owned.owner == owner).map(Owned::size_bytes).sum::<u64>()))?;
    if held.saturating_add(total) > mm::service_limit_bytes() {
        return Err(HandoverError::LimitReached);
    }
    let pages = total / PAGE_SIZE;
    let block_order = pages.ilog2().min(baton_abi::MAX_USER_FOLIO_ORDER).max(order);
    let virt = space.find_free(PRESERVABLE_BASE, total, PAGE_SIZE << block_order).ok_or(HandoverError::OutOfMemory)?;
    // (virtual address, block, block order): unmapped and freed if any
    // step fails.
    let mut blocks: Vec<(u64, Block, u32)> = Vec::new();
    let mut offset = 0;
    let result = (|| {
        while offset < total {
            // The largest block that fits what is left, never below a folio.
            let order_left = ((total - offset) / PAGE_SIZE).ilog2();
            let this_order = block_order.min(order_left).max(order);
            let block = Block::allocate_for_service(this_order).ok_or(HandoverError::OutOfMemory)?;
            let (phys, bytes) = (block.phys(), block.size_bytes());
            let backing = Backing::Preservable { phys, order, folios: bytes / folio_bytes };
            space.map(virt + offset, phys, bytes, user_attributes(true, false), backing)?;
            blocks.push((virt + offset, block, this_order));
            offset += bytes;
        }
        Ok(())
    })();
    if let Err(error) = result {
        for (start, _, _) in &blocks {
            space.unmap(*start);
        }
        if error == HandoverError::Space(crate::mm::user::SpaceError::TooManyMappings) {
            log::warn!(
                target: "kho",
                "'{owner}': allocation refused: it would need more than {} mappings, the most a live update can describe",
                baton_abi::MAX_MAPPINGS
            );
        }
        return Err(error);
    }
    with(|out| {
        for (_, block, block_order) in blocks {
            let folios = 1 << (block_order - order);
            let owned = Owned { owner: String::from(owner), order, folios, preserved: 0, block: None };
            out.owners.insert(block.phys(), Owned { block: Some(block), ..owned });
        }
        Ok(())
    })?;
    Ok(virt)
}

/// Records that `owner` took back preserved memory from the previous kernel
/// (`kho_restore`): it owns it here as if it had allocated it.
pub fn adopt(owner: &str, block: Block, order: u32, folios: u64) {
    let _ = with(|out| {
        let owned = Owned { owner: String::from(owner), order, folios, preserved: 0, block: None };
        out.owners.insert(block.phys(), Owned { block: Some(block), ..owned });
        Ok(())
    });
}

/// The preservable mapping containing `address`: (start, phys, order,
/// folios).
fn preservable_at(space: &AddressSpace, address: u64) -> Result<(u64, u64, u32, u64), HandoverError> {
    match space.range_containing(address) {
        Some((start, _, Backing::Preservable { phys, order, folios })) => Ok((start, phys, order, folios)),
        Some(_) => Err(HandoverError::NotPreservable),
        None => Err(HandoverError::NotMapped),
    }
}

/// `free_preservable(address)`: unmaps and frees a folio, or the whole
/// block of a run that `address` starts; refused while any of it is
/// preserved (unpreserve first) or when the handover is frozen.
pub fn free(space: &mut AddressSpace, address: u64) -> Result<(), HandoverError> {
    let (start, phys, _, _) = preservable_at(space, address)?;
    if start != address {
        return Err(HandoverError::NotFolioAligned);
    }
    let owned = with(|out| {
        if out.handover.is_finalized() {
            return Err(HandoverError::Frozen);
        }
        if out.owners.get(&phys).is_some_and(|owned| owned.preserved > 0) {
            return Err(HandoverError::StillPreserved);
        }
        Ok(out.owners.remove(&phys))
    })?;
    space.unmap(start);
    // Unmapped: now the block may go back to the allocator.
    drop(owned);
    Ok(())
}

/// `physical_address(address)` of the owner's preservable memory.
pub fn physical_address(space: &AddressSpace, address: u64) -> Result<u64, HandoverError> {
    let (start, phys, _, _) = preservable_at(space, address)?;
    Ok(phys + (address - start))
}

/// `kho_preserve` / `kho_unpreserve`: the range must consist of whole
/// preservable folios of the owner; each mapping it crosses becomes one
/// run of folios for the tracker (whole bitmap words at a time). All or
/// nothing.
pub fn preserve(owner: &str, space: &AddressSpace, range: UserBuffer, is_preserve: bool) -> Result<(), HandoverError> {
    // (first folio of the owning mapping, the run inside it)
    let mut pieces: Vec<(u64, FolioRun)> = Vec::new();
    let mut cursor = range.address;
    while cursor < range.end() {
        let (start, phys, order, folios) = preservable_at(space, cursor)?;
        let folio_bytes = PAGE_SIZE << order;
        let end = (start + folios * folio_bytes).min(range.end());
        if !(cursor - start).is_multiple_of(folio_bytes) || !(end - start).is_multiple_of(folio_bytes) {
            return Err(HandoverError::NotFolioAligned);
        }
        let run = FolioRun { phys: phys + (cursor - start), order, folio_count: (end - cursor) / folio_bytes };
        pieces.push((phys, run));
        cursor = end;
    }
    with(|out| {
        if pieces.iter().any(|(owner_phys, _)| out.owners.get(owner_phys).is_none_or(|owned| owned.owner != owner)) {
            return Err(HandoverError::NotOwner);
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
                return Err(error.into());
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
/// preserves them and registers them as the owner's sub-FDT (replacing an
/// earlier publication).
pub fn publish(owner: &str, space: &AddressSpace, buffer: UserBuffer) -> Result<(), HandoverError> {
    let blob = space.read(buffer.address, buffer.length)?;
    let size = baton_kho::validate_fdt(&blob).map_err(|_| HandoverError::InvalidSubFdt)?;
    if is_finalized() {
        return Err(HandoverError::Frozen);
    }
    let bytes = blob.get(..size).ok_or(HandoverError::InvalidSubFdt)?;
    let block = Block::copy_of(bytes).ok_or(HandoverError::OutOfMemory)?;
    publish_block(owner, block, size as u64)
}

/// Registers `block` (holding a validated FDT of `size_bytes`) as `owner`'s
/// sub-FDT, preserved, replacing an earlier publication.
fn publish_block(owner: &str, block: Block, size_bytes: u64) -> Result<(), HandoverError> {
    let (phys, order) = (block.phys(), order_for_bytes(size_bytes));
    with(|out| {
        out.handover.preserve_folio(&mut out.memory, phys, order)?;
        let previous = out.publications.remove(owner);
        if previous.is_some() {
            let _ = out.handover.remove_sub_fdt(owner);
        }
        if let Err(error) = out.handover.add_sub_fdt(owner, phys, size_bytes) {
            let _ = out.handover.unpreserve_folio(&mut out.memory, phys, order);
            if let Some(previous) = previous {
                let _ = out.handover.add_sub_fdt(owner, previous.block.phys(), previous.size_bytes);
                out.publications.insert(String::from(owner), previous);
            }
            return Err(error.into());
        }
        out.publications.insert(String::from(owner), Publication { block, size_bytes });
        out.owners.insert(phys, Owned { owner: String::from(owner), order, folios: 1, preserved: 1, block: None });
        if let Some(previous) = previous {
            out.owners.remove(&previous.block.phys());
            if let Err(error) = out.handover.unpreserve_folio(&mut out.memory, previous.block.phys(), previous.order())
            {
                // Still preserved: it must not go back to the allocator.
                previous.block.leak();
                return Err(error.into());
            }
        }
        Ok(())
    })
}

/// Forgets what an owner that ended had preserved and published, and frees
/// its preservable memory (after unmapping it from `space`), so nothing of
/// it is handed over. While frozen nothing changes: the state is already
/// serialised, and its memory stays preserved and allocated (the update
/// goes ahead or is aborted).
pub fn forget_owner(owner: &str, space: &mut AddressSpace) {
    let Some(mut guard) = KHO_OUT.try_lock() else {
        return;
    };
    let Some(out) = guard.as_mut() else { return };
    if out.handover.is_finalized() {
        return;
    }
    let publication = out.publications.remove(owner);
    let starts: Vec<u64> = out.owners.iter().filter(|(_, owned)| owned.owner == owner).map(|(&phys, _)| phys).collect();
    let mut released = Vec::new();
    for phys in starts {
        let Some(owned) = out.owners.remove(&phys) else { continue };
        if owned.preserved > 0 && publication.as_ref().is_none_or(|publication| publication.block.phys() != phys) {
            let _ = out.handover.unpreserve_inside(&mut out.memory, phys, owned.size_bytes());
        }
        released.push(owned);
    }
    if let Some(publication) = &publication {
        let _ = out.handover.remove_sub_fdt(owner);
        let _ = out.handover.unpreserve_folio(&mut out.memory, publication.block.phys(), publication.order());
    }
    drop(guard);
    // Unmap its preservable memory before the blocks are freed (its other
    // memory goes with its address space).
    let mappings: Vec<u64> = space
        .ranges()
        .filter_map(|(start, _, backing)| matches!(backing, Backing::Preservable { .. }).then_some(start))
        .collect();
    for start in mappings {
        space.unmap(start);
    }
    drop(released);
    drop(publication);
}

/// Preserves every page `owner` has mapped in `space` (its image, stack
/// and preservable memory; not the sub-FDT it borrows, nor its page
/// tables, which the next kernel rebuilds) so that the next kernel can
/// resume it, and records the runs as the owner's for the boot
/// description. Preservable folios the owner preserved itself stay as
/// they are. All or nothing; [`withdraw_resume`] undoes it.
pub fn preserve_for_resume(owner: &str, space: &AddressSpace) -> Result<(), HandoverError> {
    with(|out| {
        let first_new = out.resumed.len();
        let result = space.mapped().into_iter().try_for_each(|mapped| {
            let (order, folios) = match mapped.backing {
                Backing::Owned => (0, mapped.size_bytes / PAGE_SIZE),
                Backing::Preservable { order, folios, .. } => (order, folios),
                // Device registers are not memory: nothing to preserve.
                Backing::Borrowed { .. } | Backing::Device { .. } | Backing::Shared { .. } => return Ok(()),
            };
            let mut run = ResumeRun { owner: String::from(owner), phys: mapped.phys, order, folios, added: Vec::new() };
            let outcome = preserve_resume_run(out, &mut run, mapped.backing);
            out.resumed.push(run);
            outcome
        });
        if result.is_err() {
            for run in out.resumed.drain(first_new..).collect::<Vec<_>>() {
                unpreserve_added(out, &run);
            }
        }
        result
    })
}

/// Preserves what of `run` is not preserved yet, noting it in `run.added`.
fn preserve_resume_run(out: &mut KhoOut, run: &mut ResumeRun, backing: Backing) -> Result<(), HandoverError> {
    let size_bytes = run.end() - run.phys;
    let explicitly_preserved = match backing {
        Backing::Preservable { .. } => out.owners.get(&run.phys).map_or(0, |owned| owned.preserved),
        _ => 0,
    };
    if explicitly_preserved == 0 {
        out.handover.preserve_range(&mut out.memory, run.phys, size_bytes)?;
        run.added.push((run.phys, size_bytes));
        return Ok(());
    }
    // Partly preserved by its owner: the rest folio by folio.
    let folio_bytes = PAGE_SIZE << run.order;
    for index in 0..run.folios {
        let phys = run.phys + index * folio_bytes;
        let is_preserved = out.handover.tracker().is_preserved(&out.memory, phys, run.order).unwrap_or(false);
        if !is_preserved {
            out.handover.preserve_folio(&mut out.memory, phys, run.order)?;
            run.added.push((phys, folio_bytes));
        }
    }
    Ok(())
}

fn unpreserve_added(out: &mut KhoOut, run: &ResumeRun) {
    for &(phys, size_bytes) in &run.added {
        let _ = out.handover.unpreserve_range(&mut out.memory, phys, size_bytes);
    }
}

/// Undoes every [`preserve_for_resume`] (after an abort).
pub fn withdraw_resume() {
    let _ = with(|out| {
        for run in core::mem::take(&mut out.resumed) {
            unpreserve_added(out, &run);
        }
        Ok(())
    });
}

/// Publishes a sub-FDT on behalf of the kernel itself (the process
/// descriptions and the roster), preserved, replacing an earlier one.
pub fn publish_kernel_user(name: &str, blob: &[u8]) -> Result<(), HandoverError> {
    let size = baton_kho::validate_fdt(blob).map_err(|_| HandoverError::InvalidSubFdt)?;
    let bytes = blob.get(..size).ok_or(HandoverError::InvalidSubFdt)?;
    let block = Block::copy_of(bytes).ok_or(HandoverError::OutOfMemory)?;
    publish_block(name, block, size as u64)
}

/// A copy of the kernel publication `name`, if one is published.
pub fn kernel_publication(name: &str) -> Option<Vec<u8>> {
    with(|out| {
        let publication = out.publications.get_mut(name).ok_or(HandoverError::NotMapped)?;
        let size = publication.size_bytes as usize;
        Ok(publication.block.as_mut_slice().get(..size).map(<[u8]>::to_vec))
    })
    .ok()
    .flatten()
}

/// Withdraws a kernel publication (after an abort): the next update
/// writes it afresh.
pub fn withdraw_kernel_user(name: &str) {
    let _ = with(|out| {
        if let Some(publication) = out.publications.remove(name) {
            let _ = out.handover.remove_sub_fdt(name);
            out.owners.remove(&publication.block.phys());
            let _ = out.handover.unpreserve_folio(&mut out.memory, publication.block.phys(), publication.order());
        }
        Ok(())
    });
}

#[cfg(feature = "testing")]
/// Whether the owner `name` has a sub-FDT published right now.
pub fn has_published(name: &str) -> bool {
    KHO_OUT.lock().as_ref().is_some_and(|out| out.publications.contains_key(name))
}

/// Finalises: serialises the preservation bitmaps, builds the root FDT and
/// freezes (further changes fail with `Frozen`).
pub fn finalize() -> Result<baton_kho::FinalizeSummary, HandoverError> {
    with(|out| Ok(out.handover.finalize(&mut out.memory)?))
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

#[cfg(feature = "testing")]
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
    for region in mm::scratch_regions() {
        log::info!(target: "kho", "  scratch {} at {:#x} ({} KiB)", region.kind, region.range.start, region.range.size_bytes() / 1024);
    }
}

/// Reads this kernel's own handover metadata (for fault injection).
#[cfg(feature = "testing")]
pub fn read_metadata(phys: u64, buffer: &mut [u8]) -> Result<(), HandoverError> {
    use baton_kho::memory::PhysMemory;
    with(|out| out.memory.read(phys, buffer).map_err(|_| HandoverError::NotMapped))
}

/// Overwrites this kernel's own handover metadata (fault injection damages
/// a finalised handover on purpose): only metadata pages this kernel
/// allocated can be written.
#[cfg(feature = "testing")]
pub fn write_metadata(phys: u64, data: &[u8]) -> Result<(), HandoverError> {
    use baton_kho::memory::PhysMemory;
    with(|out| out.memory.write(phys, data).map_err(|_| HandoverError::NotOwner))
}

/// Preserves a folio on behalf of a kernel-internal KHO user (tests).
#[cfg(feature = "testing")]
pub fn preserve_kernel_folio(owner: &str, block: Block, order: u32) -> Result<(), HandoverError> {
    with(|out| {
        let phys = block.phys();
        out.handover.preserve_folio(&mut out.memory, phys, order)?;
        let owned = Owned { owner: String::from(owner), order, folios: 1, preserved: 1, block: Some(block) };
        out.owners.insert(phys, owned);
        Ok(())
    })
}
