//! The incoming handover: what the previous kernel handed to this one, and
//! the calls through which services take their part of it back.
//!
//! On a KHO boot the root FDT and the chunk list are validated before this
//! kernel writes anywhere outside scratch: a root that is not `kho-v1`, a
//! chunk list outside RAM or cyclic, or metadata or preserved memory inside
//! scratch or the kernel image makes the kernel bypass the handover (with a
//! log line saying why) and start services cold. Otherwise the preserved
//! folios stay out of the page allocator, each waiting for its owner:
//! `kho_fetch` maps a service's own sub-FDT, `kho_restore` and
//! `kho_restore_run` hand back folios its previous instance preserved, and
//! `kho_done` releases what it did not take. Everything here works on runs
//! of folios (bitmap words at a time), so nothing grows with the bytes
//! preserved, only with the runs. Whatever nobody claims is released when every owner is done, or at
//! the latest [`CLAIM_DEADLINE_NS`] after boot.

use super::HandoverError;
use super::memory::KernelMemory;
use super::report::{Arrival, report_blackout};
use crate::mm;
use crate::mm::block::Block;
use crate::mm::user::{AddressSpace, Backing, HANDOVER_FDT_BASE, PRESERVABLE_BASE, user_attributes};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use baton_abi::PAGE_SIZE;
use baton_boot::BootInfo;
use baton_kho::IncomingPreservations;
use baton_kho::memory::PhysRange;
use spin::Mutex;

/// Unclaimed preserved memory is released at the latest this long after a
/// KHO boot.
pub const CLAIM_DEADLINE_NS: u64 = 30_000_000_000;
/// The largest FDT the kernel reads from a handover.
const MAX_FDT_BYTES: u64 = 1 << 20;

/// The incoming handover after validation.
pub struct KhoIn {
    preservations: IncomingPreservations,
    memory: KernelMemory,
    /// Sub-FDTs by user name: (physical address, size).
    users: BTreeMap<String, (u64, u64)>,
    /// Who owns the preserved memory: runs by the physical address of
    /// their first folio.
    owners: BTreeMap<u64, OwnedRun>,
    /// Owners that still have to say `kho_done`.
    waiting_owners: BTreeSet<String>,
    freeze_cycles: u64,
    timeline: [u64; baton_boot::handover::TIMELINE_ENTRIES],
    folio_count: u64,
    bitmap_count: u64,
    deadline_ns: u64,
    generation: u32,
    previous_version: String,
    preserved_bytes_at_boot: u64,
    sub_fdt_count: usize,
    is_released: bool,
    /// Whether the blackout was reported.
    is_reported: bool,
    /// Bytes owners gave up with `kho_done` without taking them back.
    not_taken_bytes: u64,
}

static KHO_IN: Mutex<Option<KhoIn>> = Mutex::new(None);

/// `folios` folios of `order` that `owner` may take back.
struct OwnedRun {
    owner: String,
    order: u32,
    folios: u64,
}

impl OwnedRun {
    fn end(&self, phys: u64) -> u64 {
        phys + self.folios * (PAGE_SIZE << self.order)
    }
}

/// Why a handover was bypassed.
#[derive(Debug)]
enum Bypass {
    RootFdt(baton_kho::fdt::ReadFdtError),
    Root(baton_kho::KhoFdtError),
    ChunkList(baton_kho::ChunkListError),
    Overlap(&'static str, PhysRange),
    Memory,
}

impl core::fmt::Display for Bypass {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Bypass::RootFdt(error) => write!(f, "root FDT unreadable: {error}"),
            Bypass::Root(error) => write!(f, "root FDT: {error}"),
            Bypass::ChunkList(error) => write!(f, "preserved-memory-map: {error}"),
            Bypass::Overlap(what, range) => {
                write!(f, "{what} at {:#x}-{:#x} overlaps scratch or the kernel", range.start, range.end)
            }
            Bypass::Memory => f.write_str("out of memory while reading the handover"),
        }
    }
}

/// What the page allocator must keep out while the handover is read.
pub struct Incoming {
    /// Handover metadata (root FDT, chunks, bitmaps).
    pub reserved: Vec<baton_mm::Range>,
    /// Preserved memory, as runs of consecutive folios.
    pub preserved: Vec<baton_mm::Range>,
}

fn to_kho(range: baton_mm::Range) -> PhysRange {
    PhysRange::new(range.start, range.end)
}

fn page_rounded(start: u64, end: u64) -> baton_mm::Range {
    baton_mm::Range::new(start & !(PAGE_SIZE - 1), end.next_multiple_of(PAGE_SIZE))
}

fn validate(info: &BootInfo, root_phys: u64) -> Result<(KhoIn, Incoming), Bypass> {
    let kho = info.kho.as_ref().ok_or(Bypass::Memory)?;
    let memory = KernelMemory::incoming();
    let root_bytes = baton_kho::fdt::read_fdt(&memory, root_phys, MAX_FDT_BYTES).map_err(Bypass::RootFdt)?;
    let root = baton_kho::parse_kho_fdt(&root_bytes).map_err(Bypass::Root)?;
    let ram: Vec<PhysRange> = mm::ram_ranges().into_iter().map(to_kho).collect();
    let preservations =
        IncomingPreservations::walk(&memory, root.preserved_memory_map_phys(), &ram).map_err(Bypass::ChunkList)?;

    // Nothing handed over may lie where this kernel is running or allocating.
    let mut forbidden: Vec<baton_mm::Range> = kho
        .scratch
        .iter()
        .map(|area| {
            let range = area.range();
            baton_mm::Range::new(range.start, range.end)
        })
        .collect();
    forbidden.push(baton_mm::Range::new(info.kernel.phys.start, info.kernel.phys.end));
    let check = |what: &'static str, range: PhysRange| {
        let candidate = baton_mm::Range::new(range.start, range.end);
        match forbidden.iter().any(|area| area.overlaps(&candidate)) {
            true => Err(Bypass::Overlap(what, range)),
            false => Ok(()),
        }
    };
    let root_range = PhysRange::new(root_phys, root_phys + root_bytes.len() as u64);
    check("the root FDT", root_range)?;
    for range in preservations.metadata_ranges() {
        check("handover metadata", range)?;
    }
    let mut preserved = Vec::new();
    let mut folio_count = 0;
    for run in preservations.runs(&memory) {
        let run = run.map_err(|_| Bypass::Memory)?;
        check("preserved memory", PhysRange::new(run.phys, run.phys + run.size_bytes()))?;
        preserved.push(baton_mm::Range::new(run.phys, run.phys + run.size_bytes()));
        folio_count += run.folio_count;
    }

    let mut users = BTreeMap::new();
    for user in root.users() {
        if let Ok(bytes) = baton_kho::fdt::read_fdt(&memory, user.sub_fdt_phys, MAX_FDT_BYTES) {
            users.insert(String::from(user.name), (user.sub_fdt_phys, bytes.len() as u64));
        } else {
            log::warn!(target: "kho", "sub-FDT of '{}' at {:#x} is unreadable; ignored", user.name, user.sub_fdt_phys);
        }
    }
    let description = kho.boot_description;
    let mut description_bytes = alloc::vec![0; description.size_bytes() as usize];
    mm::direct_map::read(description.start, &mut description_bytes).map_err(|_| Bypass::Memory)?;
    let mut owners = BTreeMap::new();
    let mut waiting_owners = BTreeSet::new();
    if let Some(table) = baton_boot::handover::owners(&description_bytes) {
        for run in table {
            owners.insert(run.phys, OwnedRun { owner: String::from(run.owner), order: run.order, folios: run.folios });
            waiting_owners.insert(String::from(run.owner));
        }
    }

    let mut reserved: Vec<baton_mm::Range> =
        preservations.metadata_ranges().map(|range| page_rounded(range.start, range.end)).collect();
    reserved.push(page_rounded(root_range.start, root_range.end));
    let incoming = Incoming { reserved, preserved };
    let state_bitmaps = preservations.bitmap_count();
    let state = KhoIn {
        preserved_bytes_at_boot: preservations.remaining_bytes(),
        sub_fdt_count: users.len(),
        not_taken_bytes: 0,
        preservations,
        memory,
        users,
        owners,
        waiting_owners,
        freeze_cycles: kho.freeze_cycles,
        timeline: kho.timeline,
        folio_count,
        bitmap_count: state_bitmaps,
        deadline_ns: baton_arch::nanoseconds() + CLAIM_DEADLINE_NS,
        generation: kho.generation,
        previous_version: String::from(kho.previous_version.as_str()),
        is_released: false,
        is_reported: false,
    };
    Ok((state, incoming))
}

/// Validates the incoming handover (after the early memory setup) and
/// returns what the page allocator must keep out. A handover that fails
/// validation is bypassed: the result is empty and services start cold.
pub fn open(info: &BootInfo) -> Incoming {
    let empty = Incoming { reserved: Vec::new(), preserved: Vec::new() };
    let Some(root_phys) = info.handover else { return empty };
    if info.kho.is_none() {
        log::warn!(target: "kho", "handover bypassed: the boot description is unreadable; services start cold");
        return empty;
    }
    match validate(info, root_phys) {
        Ok((state, incoming)) => {
            log::info!(
                target: "kho",
                "handover from {} (generation {}): {} folios in {} runs, {} KiB preserved, {} sub-FDTs",
                state.previous_version,
                state.generation,
                state.folio_count,
                incoming.preserved.len(),
                state.preserved_bytes_at_boot / 1024,
                state.sub_fdt_count
            );
            *KHO_IN.lock() = Some(state);
            incoming
        }
        Err(reason) => {
            crate::console::release();
            log::warn!(target: "kho", "handover bypassed: {reason}; services start cold");
            empty
        }
    }
}

/// Claims what the kernel itself preserved (boot modules, the device tree,
/// the kernel file, the boot description): it stays out of the allocator.
pub fn claim_kernel_ranges(info: &BootInfo) {
    let mut guard = KHO_IN.lock();
    let Some(state) = guard.as_mut() else { return };
    let mut ranges: Vec<baton_mm::Range> =
        info.modules.iter().map(|module| page_rounded(module.range.start, module.range.end)).collect();
    if let Some(tree) = &info.firmware.device_tree {
        ranges.push(page_rounded(tree.start, tree.end));
    }
    if let Some(file) = &info.kernel.file {
        ranges.push(page_rounded(file.start, file.end));
    }
    if let Some(kho) = &info.kho {
        ranges.push(page_rounded(kho.boot_description.start, kho.boot_description.end));
    }
    for range in ranges {
        if let Err(error) = state.preservations.take_range(&mut state.memory, range.start, range.size_bytes()) {
            log::warn!(target: "kho", "kernel range {range} was not preserved as expected: {error:?}");
        }
    }
    // The boot description's own folio may be larger than its blob.
    state.waiting_owners.remove(baton_boot::handover::USER_NAME);
}

/// `kho_fetch()`: maps the owner's own sub-FDT read-only into its space.
pub fn fetch(name: &str, space: &mut AddressSpace) -> Result<u64, HandoverError> {
    let guard = KHO_IN.lock();
    let state = guard.as_ref().filter(|state| !state.is_released).ok_or(HandoverError::NoHandover)?;
    let &(phys, size) = state.users.get(name).ok_or(HandoverError::NoHandover)?;
    let first = phys & !(PAGE_SIZE - 1);
    let length = (phys + size).next_multiple_of(PAGE_SIZE) - first;
    if let Some((start, _, Backing::Borrowed { phys: mapped })) = space.range_containing(HANDOVER_FDT_BASE)
        && mapped == first
    {
        return Ok(start + (phys - first));
    }
    space.map(HANDOVER_FDT_BASE, first, length, user_attributes(false, false), Backing::Borrowed { phys: first })?;
    Ok(HANDOVER_FDT_BASE + (phys - first))
}

/// The owned run containing `[phys, phys + size_bytes)`, if one does.
fn owner_of(owners: &BTreeMap<u64, OwnedRun>, phys: u64, size_bytes: u64) -> Option<&OwnedRun> {
    let (&start, run) = owners.range(..=phys).next_back()?;
    (phys + size_bytes <= run.end(start)).then_some(run)
}

/// Checks that `name` may take back `[phys, phys + size_bytes)` as folios
/// of `order`.
fn check_owner(state: &KhoIn, name: &str, phys: u64, order: u32, size_bytes: u64) -> Result<(), HandoverError> {
    match owner_of(&state.owners, phys, size_bytes) {
        Some(run) if run.owner != name => Err(HandoverError::NotOwner),
        Some(run) if run.order != order => Err(HandoverError::WrongOrder),
        Some(_) => Ok(()),
        // Not (entirely) inside one owned run: someone else's, or nobody's.
        None => match owner_of(&state.owners, phys, PAGE_SIZE) {
            Some(run) if run.owner != name => Err(HandoverError::NotOwner),
            Some(_) => Err(HandoverError::WrongOrder),
            None => Err(HandoverError::NotPreserved),
        },
    }
}

/// `kho_restore(physical, order)`: hands back a folio the owner's previous
/// instance preserved, mapped as preservable memory again.
pub fn restore(name: &str, space: &mut AddressSpace, physical: u64, order: u32) -> Result<u64, HandoverError> {
    restore_run(name, space, physical, order, 1)
}

/// `kho_restore_run(physical, order, count)`: hands back `count` physically
/// consecutive folios the caller's previous instance preserved, mapped
/// consecutively (with 2 MiB leaves where the addresses allow). The cost is
/// the bitmap words covering the run and one page-table entry per leaf.
pub fn restore_run(
    name: &str,
    space: &mut AddressSpace,
    physical: u64,
    order: u32,
    count: u64,
) -> Result<u64, HandoverError> {
    let size = count.checked_mul(PAGE_SIZE << order).ok_or(HandoverError::Overflow)?;
    let end = physical.checked_add(size).ok_or(HandoverError::Overflow)?;
    // Place it first, so nothing is taken that cannot be mapped.
    const LEAF: u64 = 2 << 20;
    let virt = if size >= LEAF {
        // Same offset within 2 MiB as the physical address: 2 MiB leaves.
        let offset = physical % LEAF;
        space.find_free(PRESERVABLE_BASE, size + offset, LEAF).ok_or(HandoverError::OutOfMemory)? + offset
    } else {
        space.find_free(PRESERVABLE_BASE, size, PAGE_SIZE << order).ok_or(HandoverError::OutOfMemory)?
    };
    let mut guard = KHO_IN.lock();
    let state = guard.as_mut().filter(|state| !state.is_released).ok_or(HandoverError::NoHandover)?;
    check_owner(state, name, physical, order, size)?;
    state.preservations.take_range(&mut state.memory, physical, size).map_err(|_| HandoverError::NotPreserved)?;
    drop(guard);
    let Some(block) = Block::claim_preserved(baton_mm::Range::new(physical, end)) else {
        log::warn!(target: "kho", "'{name}': {physical:#x} ({size} bytes) was preserved but is not waiting in memory");
        return Err(HandoverError::NotPreserved);
    };
    super::outgoing::adopt(name, block, order, count);
    let backing = Backing::Preservable { phys: physical, order, folios: count };
    if let Err(error) = space.map(virt, physical, size, user_attributes(true, false), backing) {
        // Out of page-table memory: the state cannot reach its owner (it
        // stays the owner's, freed when it ends).
        log::warn!(target: "kho", "'{name}': restoring {physical:#x} ({size} bytes) failed: {error:?}");
        return Err(error.into());
    }
    Ok(virt)
}

/// `kho_done()`: the owner restored all it wants; what its previous
/// instance preserved and it did not take is released, and its sub-FDT is
/// unmapped.
pub fn done(name: &str, space: &mut AddressSpace) {
    if let Some((start, _, Backing::Borrowed { .. })) = space.range_containing(HANDOVER_FDT_BASE) {
        space.unmap(start);
    }
    // What it did not take goes back to the page allocator now (its runs,
    // a few bitmap words each), so a service that gives its state up makes
    // room for the others at once; the handover metadata and unowned
    // memory follow when every owner is done.
    let mut guard = KHO_IN.lock();
    let Some(state) = guard.as_mut() else { return };
    if state.waiting_owners.remove(name) {
        if !state.is_released {
            state.not_taken_bytes += release_owner(state, name);
        }
        if state.waiting_owners.is_empty() {
            state.report_once();
        }
    }
}

/// Checks, before anything is taken, that every run (physical address,
/// bytes) lies inside memory the previous kernel preserved for `owner`.
pub fn check_resume_runs(owner: &str, runs: &[(u64, u64)]) -> Result<(), HandoverError> {
    let guard = KHO_IN.lock();
    let state = guard.as_ref().filter(|state| !state.is_released).ok_or(HandoverError::NoHandover)?;
    for &(phys, size_bytes) in runs {
        if !phys.is_multiple_of(PAGE_SIZE) || !size_bytes.is_multiple_of(PAGE_SIZE) || size_bytes == 0 {
            return Err(HandoverError::NotFolioAligned);
        }
        phys.checked_add(size_bytes).ok_or(HandoverError::Overflow)?;
        match owner_of(&state.owners, phys, size_bytes) {
            Some(run) if run.owner == owner => {}
            Some(_) => return Err(HandoverError::NotOwner),
            None => return Err(HandoverError::NotPreserved),
        }
    }
    Ok(())
}

/// Takes one run of a resumed process's memory out of the handover: the
/// block is the process's own memory again.
pub fn take_for_resume(owner: &str, phys: u64, size_bytes: u64) -> Result<Block, HandoverError> {
    check_resume_runs(owner, &[(phys, size_bytes)])?;
    let mut guard = KHO_IN.lock();
    let state = guard.as_mut().ok_or(HandoverError::NoHandover)?;
    state.preservations.take_range(&mut state.memory, phys, size_bytes).map_err(|_| HandoverError::NotPreserved)?;
    drop(guard);
    Block::claim_preserved(baton_mm::Range::new(phys, phys + size_bytes)).ok_or(HandoverError::NotPreserved)
}

/// A service is running again from its description: it will not say
/// `kho_done`, so what its previous instance preserved and its mappings
/// do not use (a sub-FDT it published anyway) is released now.
pub fn resumed(owner: &str) {
    let mut guard = KHO_IN.lock();
    let Some(state) = guard.as_mut() else { return };
    if state.waiting_owners.remove(owner) && !state.is_released {
        state.not_taken_bytes += release_owner(state, owner);
    }
}

/// Whether every owner of preserved memory is back (the blackout is over
/// once the resumed services run); reports the blackout when so.
pub fn report_if_all_back() {
    let mut guard = KHO_IN.lock();
    if let Some(state) = guard.as_mut()
        && state.waiting_owners.is_empty()
        && !state.is_released
    {
        state.report_once();
    }
}

/// The kernel's own sub-FDT `name` from the previous kernel, copied, and
/// its folio released (the kernel reads it once).
pub fn take_kernel_user(name: &str) -> Option<Vec<u8>> {
    let mut guard = KHO_IN.lock();
    let state = guard.as_mut().filter(|state| !state.is_released)?;
    let &(phys, _) = state.users.get(name)?;
    let bytes = baton_kho::fdt::read_fdt(&state.memory, phys, MAX_FDT_BYTES).ok();
    if state.waiting_owners.remove(name) {
        state.not_taken_bytes += release_owner(state, name);
    }
    bytes
}

/// Releases what `name` owned and did not take back.
fn release_owner(state: &mut KhoIn, name: &str) -> u64 {
    let owned: Vec<(u64, u64)> = state
        .owners
        .iter()
        .filter(|(_, run)| run.owner == name)
        .map(|(&phys, run)| (phys, run.end(phys) - phys))
        .collect();
    let mut released = 0;
    for (phys, size) in owned {
        state.owners.remove(&phys);
        for run in state.preservations.take_inside(&mut state.memory, phys, size).unwrap_or_default() {
            if mm::release_preserved(baton_mm::Range::new(run.phys, run.phys + run.size_bytes())) {
                released += run.size_bytes();
            }
        }
    }
    released
}

impl KhoIn {
    /// Reports the blackout (once per boot) and lets the console speak.
    fn report_once(&mut self) {
        if !self.is_reported {
            self.is_reported = true;
            report_blackout(&self.arrival());
        }
        crate::console::release();
    }

    fn arrival(&self) -> Arrival<'_> {
        Arrival {
            generation: self.generation,
            previous_version: &self.previous_version,
            preserved_bytes: self.preserved_bytes_at_boot,
            sub_fdts: self.sub_fdt_count,
            folios: self.folio_count,
            bitmaps: self.bitmap_count,
            freeze_cycles: self.freeze_cycles,
            timeline: &self.timeline,
        }
    }
}

/// Whether unclaimed memory should be released now (every owner is done,
/// or the deadline passed).
pub fn release_due() -> bool {
    KHO_IN.lock().as_ref().is_some_and(|state| {
        let is_everyone_back = state.waiting_owners.is_empty() && super::report::has_first_service_run();
        !state.is_released && (is_everyone_back || baton_arch::nanoseconds() > state.deadline_ns)
    })
}

/// Whether a handover is still being consumed (services restoring their
/// state: the blackout, and a little after it). x86_64 defers reading ACPI
/// until it is over.
#[cfg(target_arch = "x86_64")]
pub fn is_consuming() -> bool {
    KHO_IN.lock().as_ref().is_some_and(|state| !state.is_released)
}

/// Releases every preserved folio nobody claimed and the handover metadata.
pub fn release_unclaimed() {
    crate::console::release();
    let mut guard = KHO_IN.lock();
    let Some(state) = guard.as_mut() else { return };
    if state.is_released {
        return;
    }
    if !state.waiting_owners.is_empty() {
        crate::console::release();
        log::warn!(target: "kho", "services that never claimed their state: {:?}", state.waiting_owners);
    }
    state.report_once();
    let owners: BTreeSet<String> = state.owners.values().map(|run| run.owner.clone()).collect();
    for owner in owners {
        state.not_taken_bytes += release_owner(state, &owner);
    }
    let not_taken = state.not_taken_bytes;
    let mut unowned = 0u64;
    let leftovers: Vec<baton_kho::FolioRun> = state.preservations.runs(&state.memory).filter_map(Result::ok).collect();
    for run in leftovers {
        if let Ok(taken) = state.preservations.take_inside(&mut state.memory, run.phys, run.size_bytes()) {
            for run in taken {
                if mm::release_preserved(baton_mm::Range::new(run.phys, run.phys + run.size_bytes())) {
                    unowned += run.size_bytes();
                }
            }
        }
    }
    mm::release_handover_metadata();
    state.is_released = true;
    // Free memory once the handover is consumed: the same point of every
    // boot, so a soak compares it across updates to find leaks.
    log::info!(
        target: "kho",
        "handover consumed: released {} KiB that owners did not take back, {} KiB unowned, and the metadata; \
         free_kib={}",
        not_taken / 1024,
        unowned / 1024,
        mm::accounting().free_bytes / 1024
    );
}

/// A kernel-internal KHO user's sub-FDT, copied (tests).
#[cfg(feature = "testing")]
pub fn kernel_fetch(name: &str) -> Option<Vec<u8>> {
    let guard = KHO_IN.lock();
    let state = guard.as_ref()?;
    let &(phys, _) = state.users.get(name)?;
    baton_kho::fdt::read_fdt(&state.memory, phys, MAX_FDT_BYTES).ok()
}

/// Claims a folio for a kernel-internal KHO user (tests): the same ownership
/// rule as `kho_restore`.
#[cfg(feature = "testing")]
pub fn kernel_restore(name: &str, physical: u64, order: u32) -> Result<Block, HandoverError> {
    let size = PAGE_SIZE << order;
    let mut guard = KHO_IN.lock();
    let state = guard.as_mut().ok_or(HandoverError::NoHandover)?;
    check_owner(state, name, physical, order, size)?;
    state.preservations.take(&mut state.memory, physical, order).map_err(|_| HandoverError::NotPreserved)?;
    drop(guard);
    Block::claim_preserved(baton_mm::Range::new(physical, physical + size)).ok_or(HandoverError::NotPreserved)
}

/// Says a kernel-internal KHO user is done (tests).
#[cfg(feature = "testing")]
pub fn kernel_done(name: &str) {
    let mut guard = KHO_IN.lock();
    if let Some(state) = guard.as_mut() {
        release_owner(state, name);
        state.waiting_owners.remove(name);
    }
}
