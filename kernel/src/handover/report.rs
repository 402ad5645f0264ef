//! What an update cost and what led to this kernel: the moments of this
//! kernel's boot, the `update-report:` line the benchmarks read, and the
//! history of updates that travels in the boot description.

use arrayvec::ArrayVec;
use baton_boot::handover::UpdateRecord;
use baton_boot::info::HISTORY_ENTRIES;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// Moments of this kernel's boot, for the update report.
#[derive(Debug, Clone, Copy)]
pub enum BootPhase {
    /// The kernel's main entry.
    Entry = 0,
    /// Scratch, page tables and heap are up.
    EarlyMemory = 1,
    /// The handover has been validated and read.
    Deserialised = 2,
    /// The page allocator is up.
    PageAllocator = 3,
}

static BOOT_PHASES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Records when a boot phase ended.
pub fn note_boot_phase(phase: BootPhase, cycles: u64) {
    BOOT_PHASES[phase as usize].store(cycles, Ordering::Relaxed);
}

/// When a boot phase ended (0 if it has not).
pub fn boot_phase(phase: BootPhase) -> u64 {
    BOOT_PHASES[phase as usize].load(Ordering::Relaxed)
}

static FIRST_SERVICE_RAN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether a service has run on this kernel (a resumed service's blackout
/// ends when it is first scheduled).
pub fn has_first_service_run() -> bool {
    FIRST_SERVICE_RAN.load(Ordering::Relaxed)
}

/// Logs how long after the kernel's entry the first service was dispatched
/// (`cargo xtask bench` reads it for cold boots). Main wires it to the
/// scheduler's first dispatch.
pub fn note_first_service() {
    FIRST_SERVICE_RAN.store(true, Ordering::Relaxed);
    let elapsed = baton_arch::cpu::cycle_counter().saturating_sub(boot_phase(BootPhase::Entry));
    let frequency = u128::from(baton_arch::cpu::cycle_counter_frequency_hz().max(1));
    log::info!(
        target: "boot",
        "first service running {} us after entry (via {})",
        u128::from(elapsed) * 1_000_000 / frequency,
        crate::options::boot_info().path.name()
    );
}

/// What arrived with a handover, for its report.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The update's generation.
    pub generation: u32,
    /// The previous kernel's version.
    pub previous_version: &'a str,
    /// Bytes preserved when this kernel booted.
    pub preserved_bytes: u64,
    /// Sub-FDTs handed over.
    pub sub_fdts: usize,
    /// Folios handed over.
    pub folios: u64,
    /// Bitmaps handed over.
    pub bitmaps: u64,
    /// The cycle counter when the previous kernel froze.
    pub freeze_cycles: u64,
    /// The previous kernel's timeline (`baton_boot::handover::TIMELINE_*`).
    pub timeline: &'a [u64; baton_boot::handover::TIMELINE_ENTRIES],
}

/// Logs the `update-report:` line (the blackout ends now) and records the
/// update in the history.
pub fn report_blackout(arrival: &Arrival<'_>) {
    use baton_boot::handover::{
        TIMELINE_COPY_END, TIMELINE_COPY_START, TIMELINE_FINALIZED, TIMELINE_JUMP, TIMELINE_PREPARE, TIMELINE_PREPARED,
    };
    let now = baton_arch::cpu::cycle_counter();
    let frequency = u128::from(baton_arch::cpu::cycle_counter_frequency_hz().max(1));
    let micros = |from: u64, to: u64| u128::from(to.saturating_sub(from)) * 1_000_000 / frequency;
    let cycles = now.saturating_sub(arrival.freeze_cycles);
    let timeline = arrival.timeline;
    let boot = boot_phase;
    let version = crate::options::VERSION;
    let fates = SERVICE_FATES.lock().clone();
    log::info!(
        target: "kho",
        "update-report: generation={} from={} to={} preserved_bytes={} sub_fdts={} folios={} bitmaps={} blackout_cycles={} blackout_us={} \
         prepare_us={} serialise_us={} load_us={} jump_us={} copy_us={} early_boot_us={} deserialise_us={} seed_us={} restore_us={} \
         resumed={} restarted={}",
        arrival.generation,
        arrival.previous_version,
        version,
        arrival.preserved_bytes,
        arrival.sub_fdts,
        arrival.folios,
        arrival.bitmaps,
        cycles,
        micros(arrival.freeze_cycles, now),
        micros(timeline[TIMELINE_PREPARE], timeline[TIMELINE_PREPARED]),
        micros(timeline[TIMELINE_PREPARED], timeline[TIMELINE_FINALIZED]),
        micros(timeline[TIMELINE_FINALIZED], timeline[TIMELINE_JUMP]),
        micros(timeline[TIMELINE_JUMP], boot(BootPhase::Entry)),
        micros(timeline[TIMELINE_COPY_START], timeline[TIMELINE_COPY_END]),
        micros(boot(BootPhase::Entry), boot(BootPhase::EarlyMemory)),
        micros(boot(BootPhase::EarlyMemory), boot(BootPhase::Deserialised)),
        micros(boot(BootPhase::Deserialised), boot(BootPhase::PageAllocator)),
        micros(boot(BootPhase::PageAllocator), now),
        or_dash(&fates.0),
        or_dash(&fates.1),
    );
    let mut record = UpdateRecord {
        generation: arrival.generation,
        blackout_us: micros(arrival.freeze_cycles, now) as u64,
        preserved_bytes: arrival.preserved_bytes,
        sub_fdts: arrival.sub_fdts as u32,
        ..Default::default()
    };
    let previous = arrival.previous_version;
    let _ = record.from.try_push_str(&previous[..previous.len().min(16)]);
    let _ = record.to.try_push_str(&version[..version.len().min(16)]);
    let mut history = HISTORY.lock();
    if let Some(kho) = &crate::options::boot_info().kho {
        history.clone_from(&kho.history);
    }
    if history.is_full() {
        history.remove(0);
    }
    history.push(record);
}

/// The services this boot brought back from the previous kernel, by fate:
/// (resumed, restarted), names joined with commas.
static SERVICE_FATES: Mutex<(alloc::string::String, alloc::string::String)> =
    Mutex::new((alloc::string::String::new(), alloc::string::String::new()));

/// Records which services were resumed and which restarted, for the
/// update report.
pub fn note_service_fates(resumed: &[&str], restarted: &[&str]) {
    *SERVICE_FATES.lock() = (resumed.join(","), restarted.join(","));
}

/// `name` for a list, `-` for none.
fn or_dash(list: &str) -> &str {
    if list.is_empty() { "-" } else { list }
}

/// The updates that led to this kernel, oldest first, this boot's last.
static HISTORY: Mutex<ArrayVec<UpdateRecord, HISTORY_ENTRIES>> = Mutex::new(ArrayVec::new_const());

/// The updates that led to this kernel (for the next one, and the summary).
pub fn history() -> ArrayVec<UpdateRecord, HISTORY_ENTRIES> {
    HISTORY.lock().clone()
}

/// Logs the updates that led here as a table (at shutdown, so a person at
/// the screen sees the whole demo summed up).
pub fn log_history() {
    let history = history();
    if history.is_empty() {
        return;
    }
    log::info!(target: "kho", "updates that led to this kernel (most recent {}):", history.len());
    log::info!(target: "kho", "  update  from          to            preserved   sub-FDTs  blackout");
    for record in &history {
        log::info!(
            target: "kho",
            "  {:>6}  {:<12}  {:<12}  {:>6} KiB  {:>8}  {:>5}.{:03} ms",
            record.generation,
            record.from.as_str(),
            record.to.as_str(),
            record.preserved_bytes / 1024,
            record.sub_fdts,
            record.blackout_us / 1000,
            record.blackout_us % 1000
        );
    }
}

/// What `kernel_info` tells a service: this kernel's version, its
/// generation and the updates that led to it.
pub fn kernel_info() -> baton_abi::KernelInfo {
    use baton_abi::info::{MAX_UPDATES, Version};
    let generation = crate::options::boot_info().kho.as_ref().map_or(0, |kho| u64::from(kho.generation));
    let mut info =
        baton_abi::KernelInfo { version: Version::new(crate::options::VERSION), generation, ..Default::default() };
    let history = history();
    let recent = &history[history.len().saturating_sub(MAX_UPDATES)..];
    for (slot, record) in info.updates.iter_mut().zip(recent) {
        *slot = baton_abi::UpdateSummary {
            generation: u64::from(record.generation),
            blackout_us: record.blackout_us,
            preserved_bytes: record.preserved_bytes,
            sub_fdts: u64::from(record.sub_fdts),
            from: Version::new(record.from.as_str()),
            to: Version::new(record.to.as_str()),
        };
    }
    info.update_count = recent.len();
    info
}
