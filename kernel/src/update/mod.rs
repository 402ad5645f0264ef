//! The update lifecycle: prepare, freeze, then hand over or abort.
//!
//! A privileged request (init's `update` call) is carried out by the
//! kernel's main thread: it tells every subscribed service to prepare and
//! waits (bounded) for each to acknowledge; it finalises the outgoing
//! handover (serialised bitmaps, root FDT) and tells services it is frozen;
//! then it jumps to the next kernel, or, when anything fails or for a
//! rehearsal, aborts: it unfreezes, tells services, and answers the
//! requester.
//!
//! This is where tasks and the handover meet: the lifecycle talks to
//! services through the scheduler and drives the handover layer.

#![deny(unsafe_code)]

#[cfg(feature = "testing")]
mod inject;
pub mod kexec;
pub mod processes;
#[cfg(feature = "testing")]
mod tests;

use crate::handover::{self, HandoverError, boot_desc::BootDescriptionError};
use crate::task::{self, Privilege, ServiceId, State, TASKS, Tasks};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use baton_abi::message::KERNEL_SENDER;
use baton_abi::{Message, UpdateEvent, UpdateImage};
use kexec::KexecError;
use spin::Mutex;

/// What the update rule decided for each live service.
pub type Fates = BTreeMap<ServiceId, baton_procdesc::roster::Fate>;

/// The prepare deadline in effect (`update.prepare_timeout_ms=`).
fn prepare_timeout_ns() -> u64 {
    crate::options::get().prepare_timeout_ns
}

/// Where the lifecycle is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Waiting for these services to acknowledge `prepare`.
    Preparing {
        waiting: BTreeSet<ServiceId>,
        refused: Option<(ServiceId, u64)>,
    },
    Frozen,
    /// Frozen, waiting for these services to acknowledge it or to go back
    /// to waiting for messages with nothing left in their mailbox
    /// (rehearsals only: a real update does not wait).
    FrozenWaiting {
        waiting: BTreeSet<ServiceId>,
    },
}

struct Lifecycle {
    phase: Phase,
    pending: Option<(ServiceId, UpdateImage)>,
}

static LIFECYCLE: Mutex<Lifecycle> = Mutex::new(Lifecycle { phase: Phase::Idle, pending: None });

/// `update(image)` from a privileged service: queue the request; the
/// caller waits (its state says so) until the kernel answers.
pub fn request(tasks: &mut Tasks, _privilege: Privilege, id: ServiceId, image: UpdateImage) -> Result<(), UpdateError> {
    let mut lifecycle = LIFECYCLE.lock();
    if lifecycle.pending.is_some() || lifecycle.phase != Phase::Idle {
        return Err(UpdateError::InProgress);
    }
    let process = tasks.processes.get_mut(&id).ok_or(UpdateError::RequesterGone)?;
    process.state = State::WaitingForKernel;
    lifecycle.pending = Some((id, image));
    Ok(())
}

/// Whether an update request waits for the main thread.
pub fn is_pending() -> bool {
    LIFECYCLE.lock().pending.is_some()
}

/// `kho_ready(event, status)` from a service (an acknowledgement that no
/// phase waits for is ignored).
pub fn acknowledge(id: ServiceId, event: UpdateEvent, status: u64) {
    let mut lifecycle = LIFECYCLE.lock();
    match &mut lifecycle.phase {
        Phase::Preparing { waiting, refused } if event == UpdateEvent::Prepare => {
            waiting.remove(&id);
            if status != 0 && refused.is_none() {
                *refused = Some((id, status));
            }
        }
        Phase::FrozenWaiting { waiting } if event == UpdateEvent::Frozen => {
            waiting.remove(&id);
        }
        _ => {}
    }
}

/// Sends `event` to every subscribed service; returns their ids.
fn broadcast(event: UpdateEvent) -> Vec<ServiceId> {
    broadcast_with(event, |_| 0)
}

/// Sends `event` to every subscribed service, with `word(id)` in word 0;
/// returns their ids.
fn broadcast_with(event: UpdateEvent, word: impl Fn(ServiceId) -> u64) -> Vec<ServiceId> {
    let mut tasks = TASKS.lock();
    let subscribers: Vec<ServiceId> =
        tasks.processes.values().filter(|process| process.is_subscribed).map(|process| process.id).collect();
    for &id in &subscribers {
        let mut words = [0; baton_abi::MESSAGE_WORDS];
        words[0] = word(id);
        let message = Message::new(event.label(), words);
        if let Err(error) = task::ipc::post(&mut tasks, KERNEL_SENDER, id, message) {
            log::warn!(target: "update", "cannot tell service {id} '{event:?}': {error}");
        }
    }
    subscribers
}

/// Answers the requester: success, or `UpdateFailed` whatever the reason
/// (the reason is logged).
fn answer(requester: ServiceId, result: Result<(), UpdateError>) {
    let mut tasks = TASKS.lock();
    if let Some(process) = tasks.processes.get_mut(&requester)
        && process.state == State::WaitingForKernel
    {
        let result = result.map(|()| 0).map_err(|_| baton_abi::Error::UpdateFailed);
        let (status, value) = baton_abi::error::encode_result(result);
        process.frame_mut().set_syscall_result(status, value);
        tasks.wake(requester);
    }
}

/// Why an update did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// A service did not acknowledge `prepare` in time.
    PrepareTimedOut(ServiceId),
    /// A service reported it cannot prepare.
    PrepareRefused(ServiceId, u64),
    /// Finalising the handover failed.
    Finalize(HandoverError),
    /// Staging the next kernel or jumping into it failed.
    Kexec(KexecError),
    /// Another update is in progress.
    InProgress,
    /// The boot description for the next kernel could not be published.
    BootDescription(BootDescriptionError),
    /// The service that asked for the update is gone.
    RequesterGone,
    /// Fault injection abandoned the jump on purpose (`kho.inject=fail-jump`).
    #[cfg(feature = "testing")]
    InjectedJumpFailure,
}

impl From<KexecError> for UpdateError {
    fn from(error: KexecError) -> Self {
        UpdateError::Kexec(error)
    }
}

impl core::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UpdateError::PrepareTimedOut(id) => {
                write!(f, "service {id} did not finish preparing in time")
            }
            UpdateError::PrepareRefused(id, status) => {
                write!(f, "service {id} could not prepare (status {status})")
            }
            UpdateError::Finalize(error) => write!(f, "finalising the handover failed: {error}"),
            UpdateError::Kexec(error) => write!(f, "{error}"),
            UpdateError::InProgress => f.write_str("another update is in progress"),
            UpdateError::BootDescription(error) => write!(f, "cannot write the boot description: {error}"),
            UpdateError::RequesterGone => f.write_str("the service that asked for the update is gone"),
            #[cfg(feature = "testing")]
            UpdateError::InjectedJumpFailure => f.write_str("fault injection: the jump was abandoned"),
        }
    }
}

/// Tells services to prepare, each with its fate, and waits for them.
fn prepare(fates: &Fates) -> Result<(), UpdateError> {
    use baton_procdesc::roster::Fate;
    let subscribers = broadcast_with(UpdateEvent::Prepare, |id| match fates.get(&id) {
        Some(Fate::Resume) => baton_abi::UpdateFate::Resumed as u64,
        _ => baton_abi::UpdateFate::Restarted as u64,
    });
    LIFECYCLE.lock().phase = Phase::Preparing { waiting: subscribers.iter().copied().collect(), refused: None };
    log::info!(target: "update", "prepare: waiting for {} service(s)", subscribers.len());
    task::run_until(prepare_timeout_ns(), || {
        let lifecycle = LIFECYCLE.lock();
        match &lifecycle.phase {
            Phase::Preparing { waiting, refused } => {
                refused.is_some() || waiting.iter().all(|&id| task::exit_code(id).is_some())
            }
            _ => true,
        }
    });
    let lifecycle = LIFECYCLE.lock();
    match &lifecycle.phase {
        Phase::Preparing { refused: Some((id, status)), .. } => Err(UpdateError::PrepareRefused(*id, *status)),
        Phase::Preparing { waiting, .. } => match waiting.iter().find(|&&id| task::exit_code(id).is_none()) {
            Some(&id) => Err(UpdateError::PrepareTimedOut(id)),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Finalises the outgoing handover and freezes it. With `wait_for_services`
/// (rehearsals), waits (bounded) until subscribers acknowledge `frozen`.
fn freeze(wait_for_services: bool) -> Result<baton_kho::FinalizeSummary, UpdateError> {
    let summary = handover::outgoing::finalize().map_err(UpdateError::Finalize)?;
    LIFECYCLE.lock().phase = Phase::Frozen;
    let subscribers = broadcast(UpdateEvent::Frozen);
    if wait_for_services {
        LIFECYCLE.lock().phase = Phase::FrozenWaiting { waiting: subscribers.into_iter().collect() };
        task::run_until(prepare_timeout_ns(), || match &LIFECYCLE.lock().phase {
            Phase::FrozenWaiting { waiting } => waiting.iter().all(|&id| task::is_idle(id)),
            _ => true,
        });
        LIFECYCLE.lock().phase = Phase::Frozen;
    }
    Ok(summary)
}

/// Unfreezes and tells services to carry on.
fn abort(reason: &dyn core::fmt::Display) {
    baton_arch::interrupts::start_timer(crate::task::TICK_HZ);
    crate::console::resume_screen();
    log::warn!(target: "update", "update aborted: {reason}");
    handover::outgoing::abort();
    handover::boot_desc::withdraw();
    processes::withdraw();
    LIFECYCLE.lock().phase = Phase::Idle;
    broadcast(UpdateEvent::Aborted);
    broadcast(UpdateEvent::Resumed);
}

/// Runs a pending update request (called by the main thread).
pub fn run_pending() {
    let Some((requester, image)) = LIFECYCLE.lock().pending.take() else {
        return;
    };
    // Free memory as each update begins: services are in their steady
    // state (the demo's client has exited), so a soak compares it across
    // updates to find leaks.
    let free_kib = crate::mm::accounting().free_bytes / 1024;
    log::info!(target: "update", "update requested by service {requester} ({image:?}); free_kib={free_kib}");
    let result = perform(image);
    answer(requester, result);
}

/// Carries out an update (or a rehearsal) from the main thread. Returns
/// when it was aborted, or after a rehearsal.
pub fn perform(image: UpdateImage) -> Result<(), UpdateError> {
    if LIFECYCLE.lock().phase != Phase::Idle {
        return Err(UpdateError::InProgress);
    }
    // What the last blackout held back is out before this one begins.
    crate::console::flush_held();
    let started = baton_arch::nanoseconds();
    let is_rehearsal = image == UpdateImage::Rehearsal;
    // The image is validated before anything freezes: a bad one costs
    // nothing but the error.
    let staged = match image {
        UpdateImage::Rehearsal => None,
        _ => match kexec::stage(image) {
            Ok(staged) => Some(staged),
            Err(error) => {
                log::warn!(target: "update", "update refused before freezing: {error}");
                return Err(error.into());
            }
        },
    };
    let mut fates = processes::decide(staged.as_ref());
    let prepare_started = baton_arch::cpu::cycle_counter();
    let result = prepare(&fates)
        .and_then(|()| {
            // From here to the jump no service runs (a rehearsal waits for
            // them once more, and keeps its timer): the timer stays quiet.
            // Ticks taken or left pending meanwhile slowed this work under
            // emulation (at 1000 Hz, the aarch64 blackout grew by half).
            if !is_rehearsal {
                baton_arch::interrupts::stop_timer();
            }
            capture(&mut fates, is_rehearsal)
        })
        .and_then(|()| {
            use baton_boot::handover::{TIMELINE_PREPARE, TIMELINE_PREPARED};
            let now = baton_arch::cpu::cycle_counter();
            handover::boot_desc::publish(now, &[(TIMELINE_PREPARE, prepare_started), (TIMELINE_PREPARED, now)])
                .map_err(UpdateError::BootDescription)
        })
        .and_then(|boot_description| {
            // The blackout starts here: the screen waits (see console).
            crate::console::pause_screen();
            freeze(is_rehearsal).map(|summary| (summary, boot_description))
        })
        .and_then(|(summary, boot_description)| {
            handover::boot_desc::stamp_timeline(
                baton_boot::handover::TIMELINE_FINALIZED,
                baton_arch::cpu::cycle_counter(),
            );
            handover::outgoing::log_finalized(&summary);
            pause_for_dump();
            #[cfg(feature = "testing")]
            inject::apply(&summary)?;
            match &staged {
                None => Ok(()),
                Some(staged) => {
                    // A driver that restarts on the next kernel must not
                    // have its device write into memory that will not be
                    // its own; a resumed driver's device keeps running.
                    let resumed = processes::resumed_names(&fates);
                    crate::pci::stop_devices_for_jump(|owner| resumed.iter().any(|name| name == owner));
                    let error = kexec::jump(staged, summary.root_fdt_phys, boot_description);
                    crate::pci::restart_stopped_devices();
                    Err(UpdateError::Kexec(error))
                }
            }
        });
    match result {
        Ok(()) => {
            abort(&"rehearsal complete");
            log::info!(target: "update", "rehearsal took {} us", (baton_arch::nanoseconds() - started) / 1000);
            Ok(())
        }
        Err(error) => {
            abort(&error);
            Err(error)
        }
    }
}

/// Describes the services the next kernel resumes and publishes the
/// roster (services are quiet: the main thread runs). A rehearsal checks
/// that what it published reads back.
fn capture(fates: &mut Fates, is_rehearsal: bool) -> Result<(), UpdateError> {
    let captured = processes::capture(fates)?;
    log::info!(
        target: "update",
        "process handover: {} service(s) resumed ({} KiB of their memory), {} restarted",
        captured.resumed,
        captured.preserved_bytes / 1024,
        captured.restarted
    );
    if is_rehearsal && let Err(reason) = processes::verify_published(captured.resumed) {
        log::warn!(target: "update", "rehearsal: {reason}");
        return Err(UpdateError::Finalize(HandoverError::InvalidSubFdt));
    }
    Ok(())
}

/// With `kho.pause=1`, the first finalisation (on a cold-booted kernel)
/// waits for a line on the serial console, so a host tool can save the
/// outgoing handover from guest memory (`cargo xtask demo --dump-kho DIR`).
fn pause_for_dump() {
    if crate::options::is_kho_boot() || !crate::options::get().is_kho_pause {
        return;
    }
    log::info!(target: "kho", "paused after finalisation: send a newline on the console to continue");
    if !crate::console::wait_for_line(120_000_000_000) {
        log::warn!(target: "kho", "nobody answered within 120 s; continuing");
    }
}
