//! Process handover: the old kernel describes every service the update rule
//! resumes and hands its memory over; the new kernel rebuilds those
//! processes and runs them from where they stopped, and restarts the rest
//! under the ids they had.
//!
//! Two kernel publications carry it, both written by `baton-procdesc`:
//! `baton-processes` (the `processes-v1` descriptions of resumed services)
//! and `baton-roster` (every service that ran, with its start argument,
//! its fate and, for a restarted one, the messages it had not received).
//! Both are read as hostile input: a description that fails a check makes
//! that one service restart with a logged reason, and a roster that cannot
//! be read makes the new kernel start services as on a cold boot.
//!
//! Processes are captured when nothing runs: after every service
//! acknowledged `prepare`, on the main thread, which services only
//! preempt when it waits. A service then is in user mode (its frame saved
//! by the trap that preempted it) or blocked in a call the description can
//! say (receive, call, sleep, or the requester's `update`), so its state is
//! complete.

use super::kexec::{ServicesNote, Staged};
use super::{Fates, UpdateError};
use crate::handover::{self, HandoverError};
use crate::mm::block::Block;
use crate::mm::user::{AddressSpace, Backing, Mapped, STACK_BYTES, STACK_TOP, device_attributes, user_attributes};
use crate::task::{self, Process, Resumable, ServiceId, State, TASKS, Tasks};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use arrayvec::ArrayVec;
use baton_abi::message::KERNEL_SENDER;
use baton_abi::{Message, PAGE_SIZE};
use baton_procdesc::roster::{Fate, RosterEntry, read_roster, write_roster};
use baton_procdesc::{
    Architecture, GrantRecord, MappedRange, Mapping, MappingKind, PendingResult, ProcessDescription, SchedulingState,
    UserRegisters, read_processes, write_processes,
};

/// The kernel publication holding the descriptions of resumed processes.
pub const PROCESSES_USER: &str = "baton-processes";
/// The kernel publication listing every service and its fate.
pub const ROSTER_USER: &str = "baton-roster";

fn architecture() -> Architecture {
    if cfg!(target_arch = "x86_64") { Architecture::X86_64 } else { Architecture::Aarch64 }
}

/// What the update rule says for every live service: from the staged
/// image's table of services (`None`: a rehearsal, whose next kernel is
/// this one). `update.resume=0` restarts every service.
pub fn decide(staged: Option<&Staged>) -> Fates {
    let table = match staged.map(|staged| &staged.services) {
        None => None,
        Some(Ok(table)) => Some(table),
        Some(Err(ServicesNote::Missing)) => {
            log::info!(target: "update", "the next image lists no services (an older kernel): every service restarts");
            return restart_all("the next image lists no services");
        }
        Some(Err(ServicesNote::Malformed(error))) => {
            log::warn!(target: "update", "the next image's service table is refused ({error}): every service restarts");
            return restart_all("the next image's service table is refused");
        }
    };
    if !crate::options::get().is_resume_enabled {
        log::info!(target: "update", "update.resume=0: every service restarts");
        return restart_all("update.resume=0");
    }
    let tasks = TASKS.lock();
    let mut fates = Fates::new();
    for process in live(&tasks) {
        let name = process.name.as_str();
        let fate = match (table, task::embedded::find(name)) {
            (None, _) => Fate::Resume,
            (Some(table), embedded) => {
                let hash = embedded.map_or(&[0; 32], |embedded| embedded.hash);
                let service = baton_image::RunningService {
                    name,
                    hash,
                    abi_version: baton_abi::ABI_VERSION,
                    is_always_restarted: embedded.is_some_and(|embedded| embedded.is_always_restarted),
                };
                let verdict = baton_image::services::fate(&service, table);
                match verdict {
                    baton_image::services::Fate::Resumable => {
                        log::info!(target: "update", "service '{name}': {verdict} by the update rule");
                        Fate::Resume
                    }
                    baton_image::services::Fate::Restart(_) => {
                        log::info!(target: "update", "service '{name}': {verdict} by the update rule");
                        Fate::Restart
                    }
                }
            }
        };
        fates.insert(process.id, fate);
    }
    fates
}

/// The names of the services `fates` resumes.
pub fn resumed_names(fates: &Fates) -> Vec<String> {
    let tasks = TASKS.lock();
    let resumed = fates.iter().filter(|(_, fate)| **fate == Fate::Resume);
    resumed.filter_map(|(id, _)| tasks.processes.get(id)).map(|process| String::from(process.name.as_str())).collect()
}

fn restart_all(reason: &str) -> Fates {
    let tasks = TASKS.lock();
    let fates: Fates = live(&tasks).map(|process| (process.id, Fate::Restart)).collect();
    for process in live(&tasks) {
        log::info!(target: "update", "service '{}': restarts ({reason})", process.name.as_str());
    }
    fates
}

fn live(tasks: &Tasks) -> impl Iterator<Item = &Process> {
    tasks.processes.values().filter(|process| !matches!(process.state, State::Exited(_)))
}

/// What [`capture`] handed over.
#[derive(Debug, Clone, Copy, Default)]
pub struct Captured {
    /// Services described for resumption.
    pub resumed: usize,
    /// Services that restart.
    pub restarted: usize,
    /// Bytes of their memory preserved for the resumed ones.
    pub preserved_bytes: u64,
}

/// Describes every resumed service, preserves its memory and publishes the
/// descriptions and the roster. A service that cannot be described (too
/// many mappings, out of memory) restarts instead, with a logged reason;
/// `fates` is updated to say so. [`withdraw`] undoes it all.
pub fn capture(fates: &mut Fates) -> Result<Captured, UpdateError> {
    let mut tasks = TASKS.lock();
    tasks.save_current_thread_pointer();
    // (caller, callee) for every call the callee has received and not
    // answered.
    let received: BTreeSet<(ServiceId, ServiceId)> = tasks
        .processes
        .values()
        .flat_map(|callee| callee.answerable.iter().map(move |&caller| (caller, callee.id)))
        .collect();
    let mut descriptions = Vec::new();
    let Tasks { processes, grants, .. } = &mut *tasks;
    for process in processes.values_mut() {
        if fates.get(&process.id) != Some(&Fate::Resume) {
            continue;
        }
        let description = describe(process, grants, fates, &received);
        match description {
            Ok(description) => descriptions.push(description),
            Err(reason) => {
                log::warn!(target: "update", "service '{}' cannot be described ({reason}): it restarts", process.name);
                fates.insert(process.id, Fate::Restart);
            }
        }
    }
    #[cfg(feature = "testing")]
    super::inject::damage_description(&mut descriptions);
    // The writer refuses what a reader would refuse: such a description
    // (a bug, or a state the format cannot say) restarts its service.
    let blob = loop {
        match write_processes(&descriptions) {
            Ok(blob) => break blob,
            Err(baton_procdesc::WriteError::InvalidProcess { process_index, part, kind }) => {
                let refused = descriptions.remove(process_index);
                log::warn!(target: "update", "service '{}': description refused ({part:?}: {kind:?}); it restarts", refused.name);
                fates.insert(refused.service_id, Fate::Restart);
            }
            Err(error) => {
                log::warn!(target: "update", "process descriptions cannot be written ({error:?}): every service restarts");
                fates.values_mut().for_each(|fate| *fate = Fate::Restart);
                descriptions.clear();
            }
        }
    };
    let mut captured = Captured::default();
    for description in &descriptions {
        let Some(process) = tasks.processes.get(&description.service_id) else { continue };
        handover::outgoing::preserve_for_resume(process.name.as_str(), &process.space)
            .map_err(UpdateError::Finalize)?;
        captured.preserved_bytes += description.mappings.iter().map(|mapping| mapping.size_bytes).sum::<u64>();
    }
    let roster = roster(&mut tasks, fates);
    drop(tasks);
    let roster = write_roster(&roster).map_err(|_| UpdateError::Finalize(HandoverError::InvalidSubFdt))?;
    handover::outgoing::publish_kernel_user(PROCESSES_USER, &blob).map_err(UpdateError::Finalize)?;
    handover::outgoing::publish_kernel_user(ROSTER_USER, &roster).map_err(UpdateError::Finalize)?;
    captured.resumed = fates.values().filter(|fate| **fate == Fate::Resume).count();
    captured.restarted = fates.len() - captured.resumed;
    Ok(captured)
}

/// Undoes [`capture`] (the update was aborted or rehearsed).
pub fn withdraw() {
    handover::outgoing::withdraw_resume();
    handover::outgoing::withdraw_kernel_user(PROCESSES_USER);
    handover::outgoing::withdraw_kernel_user(ROSTER_USER);
}

/// The roster: every live service, with the messages a restarted one has
/// not received (a restarted service's new instance gets them).
fn roster(tasks: &mut Tasks, fates: &Fates) -> Vec<RosterEntry> {
    live(tasks)
        .map(|process| {
            let fate = fates.get(&process.id).copied().unwrap_or(Fate::Restart);
            let messages = match fate {
                Fate::Resume => ArrayVec::new(),
                Fate::Restart => {
                    process.mailbox.iter().filter(|message| message.sender != KERNEL_SENDER).copied().take(16).collect()
                }
            };
            RosterEntry {
                service_id: process.id,
                name: process.name,
                start_argument: process.argument,
                is_privileged: process.is_privileged,
                fate,
                messages,
            }
        })
        .collect()
}

/// Describes one process, field by field.
fn describe(
    process: &mut Process,
    grants: &task::share::Grants,
    fates: &Fates,
    received: &BTreeSet<(ServiceId, ServiceId)>,
) -> Result<ProcessDescription, &'static str> {
    // The regions it granted, with where each peer maps it (a peer that
    // restarts maps it again itself).
    let mut grant_records = ArrayVec::new();
    for grant in grants.of_owner(process.id) {
        let peer_virtual_start =
            grant.mapped.filter(|(peer, _)| fates.get(peer) == Some(&Fate::Resume)).map(|(_, virt)| virt);
        let record = GrantRecord {
            grant_id: grant.id,
            peer: grant.peer,
            virtual_start: grant.virt,
            size_bytes: grant.size_bytes,
            peer_virtual_start,
        };
        grant_records.try_push(record).map_err(|_| "it made more grants than a description holds")?;
    }
    // A driver's devices go with it, running; its device mappings lie in
    // their BARs (the format checks it).
    let mut devices = ArrayVec::new();
    for record in crate::pci::records_of(&process.name) {
        devices.try_push(record).map_err(|_| "it drives more devices than a description holds")?;
    }
    let hash = task::embedded::find(&process.name).map_or([0; 32], |embedded| *embedded.hash);
    let frame = process.frame_mut().user_registers();
    let registers = UserRegisters {
        general: frame.general,
        instruction_pointer: frame.instruction_pointer,
        stack_pointer: frame.stack_pointer,
        flags: frame.flags,
        thread_pointer: process.thread_pointer,
    };
    let mut pending_result = None;
    let scheduling = match process.state {
        State::Ready => SchedulingState::Ready,
        State::Receiving { buffer, deadline_ns: u64::MAX } => SchedulingState::Receiving { message_buffer: buffer },
        // A wait with a deadline ends with the update (its messages wait
        // in the mailbox): the format need not carry deadlines, and the
        // service goes round its loop once more.
        State::Receiving { .. } => {
            let (status, value) = baton_abi::error::encode_result(Err(baton_abi::Error::WouldBlock));
            pending_result = Some(PendingResult { status, value });
            SchedulingState::Ready
        }
        State::Sleeping { until_ns } => SchedulingState::Sleeping { until_ns },
        State::Calling { target, buffer } => {
            // A call the restarting target has received and not answered is
            // never delivered twice: it fails with `CallInterrupted`. One it
            // has not received goes to the new instance.
            if fates.get(&target) == Some(&Fate::Restart) && received.contains(&(process.id, target)) {
                let (status, value) = baton_abi::error::encode_result(Err(baton_abi::Error::CallInterrupted));
                pending_result = Some(PendingResult { status, value });
                SchedulingState::Ready
            } else {
                SchedulingState::Calling { target, message_buffer: buffer }
            }
        }
        // The requester of the update: its `update` succeeds when it runs
        // on the new kernel.
        State::WaitingForKernel => {
            pending_result = Some(PendingResult { status: 0, value: 0 });
            SchedulingState::Ready
        }
        State::Exited(_) => return Err("it has exited"),
    };
    let mappings = baton_procdesc::coalesce(process.space.mapped().iter().filter_map(range_of));
    if mappings.len() > baton_procdesc::MAX_MAPPINGS {
        return Err("too many mappings");
    }
    let queued_messages = process.mailbox.iter().copied().collect::<ArrayVec<_, 16>>();
    if queued_messages.len() < process.mailbox.len() {
        return Err("too many queued messages");
    }
    let mut answerable = ArrayVec::new();
    for &caller in &process.answerable {
        answerable.try_push(caller).map_err(|_| "too many unanswered callers")?;
    }
    Ok(ProcessDescription {
        service_id: process.id,
        name: process.name,
        binary_hash: hash,
        abi_version: baton_abi::ABI_VERSION,
        is_subscribed: process.is_subscribed,
        is_privileged: process.is_privileged,
        architecture: architecture(),
        registers,
        mappings,
        scheduling,
        pending_result,
        queued_messages,
        answerable,
        devices,
        grants: grant_records,
    })
}

/// One mapped range as the description sees it (`None`: the borrowed
/// sub-FDT, which the next kernel does not hand over); `coalesce` joins
/// ranges that continue one another. A device mapping's "physical run" is
/// the CPU address of the BAR registers it maps.
fn range_of(mapped: &Mapped) -> Option<MappedRange> {
    let (kind, folio_order) = match mapped.backing {
        Backing::Borrowed { .. } => return None,
        Backing::Device { .. } => (MappingKind::Device, 0),
        Backing::Shared { .. } => (MappingKind::Shared, 0),
        Backing::Preservable { order, .. } => (MappingKind::Preservable, order),
        Backing::Owned if mapped.virt == STACK_TOP - STACK_BYTES => (MappingKind::Stack, 0),
        Backing::Owned => (MappingKind::Image, 0),
    };
    Some(MappedRange {
        virtual_start: mapped.virt,
        size_bytes: mapped.size_bytes,
        phys_start: mapped.phys,
        kind,
        is_writable: mapped.is_writable,
        is_executable: mapped.is_executable,
        folio_order,
        grant_id: match mapped.backing {
            Backing::Shared { grant, .. } => grant,
            _ => 0,
        },
    })
}

/// Checks that the processes this kernel published read back (rehearsals:
/// the format round-trips for every live service).
pub fn verify_published(expected: usize) -> Result<(), &'static str> {
    let blob = handover::outgoing::kernel_publication(PROCESSES_USER).ok_or("no descriptions published")?;
    let read = read_processes(&blob, architecture()).map_err(|_| "the descriptions do not read back")?;
    if read.len() != expected || read.iter().any(Result::is_err) {
        return Err("a description does not read back");
    }
    let roster = handover::outgoing::kernel_publication(ROSTER_USER).ok_or("no roster published")?;
    read_roster(&roster).map_err(|_| "the roster does not read back")?;
    Ok(())
}

/// Why a described service could not be resumed.
#[derive(Debug)]
enum ResumeError {
    NoDescription,
    NameMismatch,
    AbiUnsupported(u32),
    BinaryChanged,
    BadThreadPointer(u64),
    Memory(HandoverError),
    Device(crate::pci::AdoptError),
    DeviceOverRam(u64),
    SharedRegion,
    Map(crate::mm::user::SpaceError),
    Spawn(task::SpawnError),
}

impl core::fmt::Display for ResumeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResumeError::NoDescription => f.write_str("its process description is missing or was refused"),
            ResumeError::NameMismatch => f.write_str("its description names another service"),
            ResumeError::AbiUnsupported(version) => write!(f, "ABI version {version} is not supported"),
            ResumeError::BinaryChanged => f.write_str("this kernel embeds a different binary"),
            ResumeError::BadThreadPointer(value) => write!(f, "thread pointer {value:#x} is outside the user half"),
            ResumeError::Memory(error) => write!(f, "its memory: {error}"),
            ResumeError::Device(error) => write!(f, "its device: {error}"),
            ResumeError::DeviceOverRam(phys) => write!(f, "its device mapping at {phys:#x} overlaps RAM"),
            ResumeError::SharedRegion => {
                f.write_str("a region it maps differs from its resumed owner's grant (peer, address or memory)")
            }
            ResumeError::Map(error) => write!(f, "mapping its memory: {error:?}"),
            ResumeError::Spawn(error) => write!(f, "{error}"),
        }
    }
}

/// On a KHO boot: resumes the services the previous kernel described and
/// restarts the others from the roster. Returns `None` when there is no
/// roster (a cold boot, an older kernel, or a refused roster): then
/// services start as on a cold boot. Otherwise the names of the services
/// now running.
pub fn restore_services() -> Option<Vec<String>> {
    let Some(blob) = handover::incoming::take_kernel_user(ROSTER_USER) else {
        stop_orphaned_devices();
        return None;
    };
    let roster = match read_roster(&blob) {
        Ok(roster) => roster,
        Err(error) => {
            log::warn!(target: "update", "the roster is refused ({error}): services start as on a cold boot");
            stop_orphaned_devices();
            return None;
        }
    };
    let mut descriptions = BTreeMap::new();
    let mut is_any_refused = false;
    match handover::incoming::take_kernel_user(PROCESSES_USER).map(|blob| read_processes(&blob, architecture())) {
        None => {}
        Some(Err(error)) => {
            log::warn!(target: "update", "process descriptions refused as a whole: {error}");
            is_any_refused = true;
        }
        Some(Ok(results)) => {
            for result in results {
                match result {
                    Ok(description) => {
                        descriptions.insert(description.service_id, description);
                    }
                    Err(error) => log::warn!(target: "update", "a process description is refused: {error}"),
                }
            }
        }
    }
    let mut tasks = TASKS.lock();
    let outcomes = resume_described(&mut tasks, &roster, descriptions);
    let mut names = Vec::new();
    let (mut resumed, mut restarted) = (Vec::new(), Vec::new());
    for entry in &roster {
        let name = entry.name.as_str();
        match outcomes.get(&entry.service_id) {
            Some(Ok(())) => {
                log::info!(target: "update", "service '{name}' (id {}) resumed", entry.service_id);
                names.push(String::from(name));
                resumed.push(name);
                continue;
            }
            Some(Err(error)) => {
                log::warn!(target: "update", "service '{name}' cannot be resumed ({error}): it restarts");
                is_any_refused = true;
            }
            None => {}
        }
        match task::spawn_as(&mut tasks, name, entry.start_argument, entry.service_id) {
            Ok(()) => {
                log::info!(target: "update", "service '{name}' (id {}) restarted", entry.service_id);
                restarted.push(name);
                if let Some(process) = tasks.processes.get_mut(&entry.service_id) {
                    process.mailbox.extend(entry.messages.iter().copied());
                }
                names.push(String::from(name));
            }
            Err(error) => log::warn!(target: "update", "service '{name}' cannot be restarted: {error}"),
        }
    }
    if is_any_refused {
        stop_orphaned_devices();
    }
    handover::report::note_service_fates(&resumed, &restarted);
    settle_calls(&mut tasks);
    let subscribed: Vec<ServiceId> = tasks
        .processes
        .values()
        .filter(|process| process.is_resumed && process.is_subscribed)
        .map(|process| process.id)
        .collect();
    for id in subscribed {
        let event = Message::new(baton_abi::UpdateEvent::Continued.label(), [0; baton_abi::MESSAGE_WORDS]);
        if let Err(error) = task::ipc::post(&mut tasks, KERNEL_SENDER, id, event) {
            log::warn!(target: "update", "cannot tell service {id} 'continued': {error}");
        }
    }
    Some(names)
}

/// Resumes every service the roster resumes, owners of shared regions
/// before the peers that map them (a peer's shared mapping is taken back
/// only from a grant of an owner already resumed; a grant whose owner was
/// not resumed reaches the peer as revoked). Two services that wait on
/// each other (each maps the other's region) are refused: they restart.
/// Returns each one's outcome by service id.
fn resume_described(
    tasks: &mut Tasks,
    roster: &[RosterEntry],
    mut descriptions: BTreeMap<ServiceId, ProcessDescription>,
) -> BTreeMap<ServiceId, Result<(), ResumeError>> {
    // The owner of every handed-over grant, by grant id.
    let mut owner_of: BTreeMap<u64, ServiceId> = BTreeMap::new();
    for description in descriptions.values() {
        for grant in &description.grants {
            owner_of.insert(grant.grant_id, description.service_id);
            tasks.grants.reserve(grant.grant_id);
        }
        for mapping in &description.mappings {
            tasks.grants.reserve(mapping.grant_id);
        }
    }
    let mut outcomes = BTreeMap::new();
    let mut waiting: Vec<&RosterEntry> = roster.iter().filter(|entry| entry.fate == Fate::Resume).collect();
    loop {
        let before = waiting.len();
        let mut index = 0;
        while let Some(&entry) = waiting.get(index) {
            let Some(description) = descriptions.get(&entry.service_id) else {
                outcomes.insert(entry.service_id, Err(ResumeError::NoDescription));
                waiting.remove(index);
                continue;
            };
            // A grant whose owner is described waits for that owner; one
            // whose owner is not (it restarts) reads as revoked.
            let shared = description.mappings.iter().filter(|mapping| mapping.kind == MappingKind::Shared);
            let mut owners = shared.filter_map(|mapping| owner_of.get(&mapping.grant_id));
            if owners.any(|owner| *owner != entry.service_id && !outcomes.contains_key(owner)) {
                index += 1;
                continue;
            }
            if let Some(description) = descriptions.remove(&entry.service_id) {
                outcomes.insert(entry.service_id, resume(tasks, entry, description));
            }
            waiting.remove(index);
        }
        if waiting.len() == before || waiting.is_empty() {
            break;
        }
    }
    for entry in waiting {
        outcomes.insert(entry.service_id, Err(ResumeError::SharedRegion));
    }
    tasks.grants.forget_awaited();
    outcomes
}

/// On a KHO boot where a service could not be resumed (or none could: no
/// roster): a driver among them may have left its device running into
/// memory this kernel is about to free, so every device the manifest names
/// that no resumed driver took back is stopped now, before any service
/// runs.
fn stop_orphaned_devices() {
    // Under `pci=off` (the previous kernel's command line too) no device
    // had a driver.
    if crate::options::is_kho_boot() && crate::options::get().is_pci_enabled {
        crate::pci::stop_orphans(&crate::options::get().pci_assign);
    }
}

/// A resumed caller whose callee is not running (it could not be restarted)
/// gets `PeerGone`, as it would had the callee ended.
fn settle_calls(tasks: &mut Tasks) {
    let stranded: Vec<ServiceId> = tasks
        .processes
        .values()
        .filter(
            |process| matches!(process.state, State::Calling { target, .. } if !tasks.processes.contains_key(&target)),
        )
        .map(|process| process.id)
        .collect();
    for id in stranded {
        tasks.fail_call(id, baton_abi::Error::PeerGone);
    }
}

/// Bytes from the first of `runs` on that are physically contiguous.
fn physically_contiguous_bytes(runs: &[baton_procdesc::PhysicalRun]) -> u64 {
    let mut end = runs.first().map_or(0, |run| run.phys_start);
    let start = end;
    for run in runs {
        if run.phys_start != end {
            break;
        }
        end = end.saturating_add(run.size_bytes);
    }
    end - start
}

/// Rebuilds one process from its description: checks it against this
/// kernel (name, ABI, binary, ownership of every run) before taking any
/// memory, then maps the runs into a new address space and schedules it
/// with its saved registers and state.
/// The devices a service took back while it is resumed: given back
/// (stopped) if its resumption fails. Declared after the address space, it is
/// dropped before it, so a device is stopped before any page of the
/// service goes back to the allocator.
struct AdoptedDevices<'a> {
    owner: &'a str,
    is_kept: bool,
}

impl Drop for AdoptedDevices<'_> {
    fn drop(&mut self) {
        if !self.is_kept {
            crate::pci::give_back(self.owner);
        }
    }
}

fn resume(tasks: &mut Tasks, entry: &RosterEntry, description: ProcessDescription) -> Result<(), ResumeError> {
    let name = entry.name.as_str();
    if description.name != entry.name {
        return Err(ResumeError::NameMismatch);
    }
    if description.abi_version != baton_abi::ABI_VERSION {
        return Err(ResumeError::AbiUnsupported(description.abi_version));
    }
    if task::embedded::find(name).is_some_and(|embedded| *embedded.hash != description.binary_hash) {
        return Err(ResumeError::BinaryChanged);
    }
    let runs: Vec<(u64, u64)> = description.physical_runs().map(|run| (run.phys_start, run.size_bytes)).collect();
    handover::incoming::check_resume_runs(name, &runs).map_err(ResumeError::Memory)?;
    // The one register `resume_user` does not sanitise: it must be one
    // this architecture's register takes from a service (the user half).
    let thread_pointer = description.registers.thread_pointer;
    if thread_pointer >= baton_abi::USER_ADDRESS_LIMIT {
        return Err(ResumeError::BadThreadPointer(thread_pointer));
    }
    // Every region it maps from another service must be one a resumed
    // owner granted it, at the same address and over the same memory. A
    // grant that no resumed owner holds ended with the update (its owner
    // restarts): the peer's range is backed by zeroed memory of its own,
    // as after a revocation, and it is told.
    let mut shared = Vec::new();
    let mut ended = Vec::new();
    for mapping in description.mappings.iter().filter(|mapping| mapping.kind == MappingKind::Shared) {
        let run = mapping.runs.first().ok_or(ResumeError::SharedRegion)?;
        let (grant, virt) = (mapping.grant_id, mapping.virtual_start);
        if tasks.grants.get(grant).is_none() {
            ended.push(grant);
        } else if tasks.grants.is_handed_over(grant, name, virt, run.phys_start, mapping.size_bytes) {
            shared.push((grant, virt));
        } else {
            return Err(ResumeError::SharedRegion);
        }
    }
    let mut space = AddressSpace::new().map_err(ResumeError::Map)?;
    // Its devices, running since before the jump, come back first: the
    // records must match the functions exactly (nothing is written to
    // them), or it restarts and they are stopped and reset.
    let mut adopted = AdoptedDevices { owner: name, is_kept: false };
    let manifest = &crate::options::get().pci_assign;
    for record in &description.devices {
        crate::pci::adopt(name, record, manifest).map_err(ResumeError::Device)?;
    }
    // Its own pages first, its preservable memory (which a restart would
    // restore from) last: a failure leaves that untouched as long as
    // possible.
    let mut ordered: Vec<&Mapping> = description.mappings.iter().collect();
    ordered.sort_by_key(|mapping| mapping.kind == MappingKind::Preservable);
    for mapping in ordered {
        let attributes = user_attributes(mapping.is_writable, mapping.is_executable);
        let mut virt = mapping.virtual_start;
        // Runs that continue one another physically (the blocks of one
        // large allocation) leave the handover together: one pass over
        // its bitmaps for all of them, then a block for each run.
        let mut taken: Option<Block> = None;
        for (index, run) in mapping.runs.iter().enumerate() {
            if mapping.kind == MappingKind::HandoverFdt {
                continue;
            }
            if mapping.kind == MappingKind::Shared {
                if ended.contains(&mapping.grant_id) {
                    space.map_new(virt, run.size_bytes, attributes).map_err(ResumeError::Map)?;
                } else {
                    // The owner's memory, checked against its grant above.
                    let backing = Backing::Shared { phys: run.phys_start, grant: mapping.grant_id };
                    space
                        .map_described(virt, run.phys_start, run.size_bytes, attributes, backing)
                        .map_err(ResumeError::Map)?;
                }
                virt += run.size_bytes;
                continue;
            }
            if mapping.kind == MappingKind::Device {
                // Registers inside its devices' BARs (the format checked
                // it against the records, `adopt` the records against
                // the devices); never RAM, never taken from the handover.
                if crate::mm::overlaps_ram(run.phys_start, run.size_bytes) {
                    return Err(ResumeError::DeviceOverRam(run.phys_start));
                }
                let backing = Backing::Device { phys: run.phys_start };
                space
                    .map_described(virt, run.phys_start, run.size_bytes, device_attributes(), backing)
                    .map_err(ResumeError::Map)?;
                virt += run.size_bytes;
                continue;
            }
            let mut block = match taken.take() {
                Some(block) => block,
                None => {
                    let span = physically_contiguous_bytes(&mapping.runs[index..]);
                    handover::incoming::take_for_resume(name, run.phys_start, span).map_err(ResumeError::Memory)?
                }
            };
            taken = block.split_off(run.size_bytes);
            match mapping.kind {
                MappingKind::Preservable => {
                    let order = mapping.folio_order;
                    let folios = run.size_bytes / (PAGE_SIZE << order);
                    let backing = Backing::Preservable { phys: run.phys_start, order, folios };
                    space
                        .map_described(virt, run.phys_start, run.size_bytes, attributes, backing)
                        .map_err(ResumeError::Map)?;
                    handover::outgoing::adopt(name, block, order, folios);
                }
                _ => space.map_claimed(virt, block, attributes).map_err(ResumeError::Map)?,
            }
            virt += run.size_bytes;
        }
    }
    let general = description.registers.general;
    let registers = baton_arch::UserRegisters {
        general,
        instruction_pointer: description.registers.instruction_pointer,
        stack_pointer: description.registers.stack_pointer,
        flags: description.registers.flags,
    };
    let state = match description.scheduling {
        SchedulingState::Ready => State::Ready,
        SchedulingState::Receiving { message_buffer } => {
            State::Receiving { buffer: message_buffer, deadline_ns: u64::MAX }
        }
        SchedulingState::Calling { target, message_buffer } => State::Calling { target, buffer: message_buffer },
        SchedulingState::Sleeping { until_ns } => State::Sleeping { until_ns },
    };
    let start = Resumable {
        id: entry.service_id,
        name,
        space,
        registers: Some(registers),
        entry: (0, entry.start_argument),
        state,
        mailbox: description.queued_messages.iter().copied().collect::<VecDeque<_>>(),
        answerable: description.answerable.iter().copied().collect(),
        is_subscribed: description.is_subscribed,
        is_privileged: entry.is_privileged && description.is_privileged,
        thread_pointer,
    };
    tasks.insert(start).map_err(ResumeError::Spawn)?;
    adopted.is_kept = true;
    // Its devices' interrupts, held masked through the jump, come to it
    // again; and it looks at each device once, for what reached the old
    // kernel after its last message.
    if !description.devices.is_empty() {
        for route in crate::pci::reroute_adopted(name, entry.service_id) {
            let words = [u64::from(route.address.0), u64::from(route.entry), 0, 0, 0, 0];
            let _ = task::ipc::post(tasks, KERNEL_SENDER, entry.service_id, Message::new(baton_abi::IRQ_LABEL, words));
        }
    }
    for (grant, virt) in shared {
        tasks.grants.note_mapped(grant, entry.service_id, virt);
    }
    for grant in ended {
        log::info!(target: "update", "service '{name}': grant {grant} ended with the update (its owner restarts)");
        let notice = Message::new(baton_abi::SHARE_REVOKED_LABEL, [grant, 0, 0, 0, 0, 0]);
        if let Err(error) = task::ipc::post(tasks, KERNEL_SENDER, entry.service_id, notice) {
            log::warn!(target: "update", "cannot tell service '{name}' its grant {grant} ended: {error}");
        }
    }
    // The regions it granted: the same memory, now mapped again in it.
    for record in &description.grants {
        let Some(phys) = description.grant_physical_start(record) else { continue };
        let grant = task::share::Grant {
            id: record.grant_id,
            owner: entry.service_id,
            peer: record.peer,
            virt: record.virtual_start,
            size_bytes: record.size_bytes,
            phys,
            mapped: None,
            awaited_at: record.peer_virtual_start,
        };
        if let Err(error) = tasks.grants.restore(grant) {
            log::warn!(target: "update", "service '{name}': grant {} not restored: {error}", record.grant_id);
        }
    }
    if let (Some(result), Some(process)) = (description.pending_result, tasks.processes.get_mut(&entry.service_id)) {
        process.frame_mut().set_syscall_result(result.status, result.value);
    }
    handover::incoming::resumed(name);
    Ok(())
}
