//! Baton's boot description as a KHO user of its own: what the next kernel
//! needs besides services' state (memory map, scratch, command line,
//! firmware pointers, modules, ownership of preserved memory, the update
//! history), written with `baton_boot::handover` and registered as the
//! `baton-boot` sub-FDT, with the ranges it points at preserved.

use super::HandoverError;
use super::outgoing::KHO_OUT;
use crate::mm;
use crate::mm::block::{Block, order_for_bytes};
use alloc::vec::Vec;
use baton_abi::PAGE_SIZE;

/// The boot description and the ranges the kernel preserved with it.
#[derive(Debug)]
pub(super) struct KernelPublication {
    block: Block,
    /// Where the `timeline` values are, as an offset into `block`.
    timeline_offset: Option<u64>,
    /// Page ranges preserved for the next kernel (modules, device tree,
    /// kernel file).
    ranges: Vec<(u64, u64)>,
}

/// Why the boot description could not be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDescriptionError {
    /// One is published already (an update is in progress).
    InProgress,
    /// The outgoing handover does not exist.
    NotReady,
    /// `baton_boot::handover::write` refused the contents.
    Write,
    /// No memory for it.
    OutOfMemory,
    /// Preserving it or what it points at failed.
    Preserve(HandoverError),
}

impl core::fmt::Display for BootDescriptionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootDescriptionError::InProgress => f.write_str("a boot description is already published"),
            BootDescriptionError::NotReady => f.write_str("the outgoing handover is not set up"),
            BootDescriptionError::Write => f.write_str("the boot description could not be written"),
            BootDescriptionError::OutOfMemory => f.write_str("no memory for the boot description"),
            BootDescriptionError::Preserve(error) => write!(f, "preserving the boot description: {error}"),
        }
    }
}

/// Pages rounded outwards.
fn page_range(start: u64, end: u64) -> (u64, u64) {
    let first = start & !(PAGE_SIZE - 1);
    (first, end.next_multiple_of(PAGE_SIZE) - first)
}

/// The PCI host bridge found from firmware tables (not the entry's
/// description), for the next kernel.
static PCI_HOST: spin::Once<baton_pci::HostBridge> = spin::Once::new();

/// Records the PCI host bridge the kernel found, so the next kernel's
/// boot description carries it.
pub fn note_pci_host(bridge: baton_pci::HostBridge) {
    PCI_HOST.call_once(|| bridge);
}

/// Writes Baton's boot description for the next kernel, preserves it and
/// what it points at (boot modules, the device tree, the kernel file) and
/// registers it as the `baton-boot` sub-FDT; stamps `timeline` into it.
/// Returns its physical address.
pub fn publish(freeze_cycles: u64, timeline: &[(usize, u64)]) -> Result<u64, BootDescriptionError> {
    use baton_boot::info::ScratchArea;
    use baton_mm::scratch::ScratchKind;
    let info = crate::options::boot_info();
    let scratch: Vec<ScratchArea> = mm::scratch_regions()
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
    let history = super::report::history();
    let mut guard = KHO_OUT.lock();
    let out = guard.as_mut().ok_or(BootDescriptionError::NotReady)?;
    if out.boot_description.is_some() {
        return Err(BootDescriptionError::InProgress);
    }
    // Ownership of what is preserved (what owners preserved themselves, and
    // the memory of processes the next kernel resumes), adjacent runs of
    // one owner and order merged: the table grows with allocations, never
    // with pages.
    let is_resumed = |phys: u64| out.resumed.iter().any(|run| run.phys == phys);
    let mut runs: Vec<baton_boot::handover::OwnedRun> = out
        .owners
        .iter()
        .filter(|&(&phys, owned)| owned.preserved > 0 && !is_resumed(phys))
        .map(|(&phys, owned)| baton_boot::handover::OwnedRun {
            phys,
            order: owned.order,
            folios: owned.folios,
            owner: owned.owner.as_str(),
        })
        .chain(out.resumed.iter().map(|run| baton_boot::handover::OwnedRun {
            phys: run.phys,
            order: run.order,
            folios: run.folios,
            owner: run.owner.as_str(),
        }))
        .collect();
    runs.sort_unstable_by_key(|run| run.phys);
    let mut owners: Vec<baton_boot::handover::OwnedRun> = Vec::new();
    for run in runs {
        match owners.last_mut() {
            Some(last) if last.owner == run.owner && last.order == run.order && last.end() == run.phys => {
                last.folios += run.folios;
            }
            _ => owners.push(run),
        }
    }
    let extras = baton_boot::handover::HandoverExtras {
        kernel_version: crate::options::VERSION,
        generation: info.kho.as_ref().map_or(0, |kho| kho.generation) + 1,
        freeze_cycles,
        scratch: &scratch,
        owners: &owners,
        cycle_frequency_hz: baton_arch::cpu::cycle_counter_frequency_hz(),
        timer_ticks_per_second: baton_arch::interrupts::timer_rate(),
        history: &history,
        pci_host: PCI_HOST.get().copied(),
    };
    let bytes = baton_boot::handover::write(info, &extras).map_err(|_| BootDescriptionError::Write)?;
    let timeline_offset = baton_boot::handover::timeline_offset(&bytes).map(|offset| offset as u64);
    drop(owners);
    let block = Block::copy_of(&bytes).ok_or(BootDescriptionError::OutOfMemory)?;
    let (phys, order) = (block.phys(), order_for_bytes(block.size_bytes()));
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
    let mut preserved = Vec::new();
    let result = (|| {
        out.handover.preserve_folio(&mut out.memory, phys, order)?;
        for &(start, size) in &ranges {
            out.handover.preserve_range(&mut out.memory, start, size)?;
            preserved.push((start, size));
        }
        out.handover.add_sub_fdt(baton_boot::handover::USER_NAME, phys, bytes.len() as u64)
    })();
    if let Err(error) = result {
        log::warn!(target: "kho", "boot description: {error}");
        let _ = out.handover.unpreserve_folio(&mut out.memory, phys, order);
        for &(start, size) in &preserved {
            let _ = out.handover.unpreserve_range(&mut out.memory, start, size);
        }
        return Err(BootDescriptionError::Preserve(error.into()));
    }
    out.boot_description = Some(KernelPublication { block, timeline_offset, ranges: preserved });
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
        .and_then(|publication| Some(publication.block.phys() + publication.timeline_offset?))
        .map_or(0, |phys| phys + 8 * index as u64)
}

/// Writes a cycle-counter reading into the boot description's timeline (see
/// `baton_boot::handover::TIMELINE_*`); the boot description is this
/// kernel's own preserved memory, so changing its contents is allowed.
pub fn stamp_timeline(index: usize, cycles: u64) {
    let mut guard = KHO_OUT.lock();
    let Some(publication) = guard.as_mut().and_then(|out| out.boot_description.as_mut()) else { return };
    let Some(offset) = publication.timeline_offset else { return };
    if index < baton_boot::handover::TIMELINE_ENTRIES {
        // Inside the property's value (checked index); the block checks its
        // own bounds.
        let _ = publication.block.write_at(offset + 8 * index as u64, &cycles.to_ne_bytes());
    }
}

/// Undoes [`publish`] after an abort.
pub fn withdraw() {
    let mut guard = KHO_OUT.lock();
    let Some(out) = guard.as_mut() else { return };
    let Some(publication) = out.boot_description.take() else { return };
    let _ = out.handover.remove_sub_fdt(baton_boot::handover::USER_NAME);
    let _ = out.handover.unpreserve_folio(
        &mut out.memory,
        publication.block.phys(),
        order_for_bytes(publication.block.size_bytes()),
    );
    for &(start, size) in &publication.ranges {
        let _ = out.handover.unpreserve_range(&mut out.memory, start, size);
    }
    // Dropping the publication frees its block.
}
