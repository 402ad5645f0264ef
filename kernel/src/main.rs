//! Baton: a small microkernel whose native boot protocol is Kexec HandOver.
//!
//! The entry adapters in `baton-boot` call [`baton_main`] with a boot
//! description; everything here is common to every architecture and entry
//! path. This file wires the layers together and holds no policy:
//!
//! ```text
//! main -> syscall -> update -> handover -> mm
//!                      \-----> task ------/
//! ```
//!
//! (every layer may also use `options`, `console` and, in tests, `ktest`;
//! `cargo xtask lint` checks the direction of every import).

#![no_std]
#![no_main]

extern crate alloc;

#[cfg(target_arch = "x86_64")]
mod acpi;
mod console;
mod handover;
#[cfg(feature = "testing")]
mod ktest;
mod mm;
mod options;
mod syscall;
mod task;
#[cfg(feature = "testing")]
mod tests;
mod trap;
mod update;

use baton_boot::BootInfo;
use core::panic::PanicInfo;

/// The common kernel entry, called by every boot adapter.
#[unsafe(no_mangle)]
pub fn baton_main(info: &'static BootInfo) -> ! {
    let entry_cycles = baton_arch::cpu::cycle_counter();
    let options = options::init(info);
    if let Some(kho) = &info.kho {
        baton_arch::cpu::set_cycle_counter_frequency_hz(kho.cycle_frequency_hz);
        baton_arch::interrupts::set_timer_rate(kho.timer_ticks_per_second);
    }
    handover::report::note_boot_phase(handover::report::BootPhase::Entry, entry_cycles);
    baton_arch::early_init(info.entry_direct_map_offset);
    console::init(info);
    if info.kho.is_some() {
        // The blackout goes on until services are back: keep the console
        // quiet until then (the incoming handover releases it).
        console::hold();
    }
    baton_arch::trap::init();
    #[cfg(feature = "testing")]
    if options.ktest_filter.is_some() {
        ktest::enter_test_mode();
    }

    println!("Baton {} ({}) booting via {}", options::VERSION, baton_arch::NAME, info.path.name());
    // `test.fault_early=1`: a kernel booted through KHO faults right away, so
    // tests can show what an update into a broken kernel does.
    #[cfg(feature = "testing")]
    if info.kho.is_some() && options.is_fault_early {
        fault_on_purpose();
    }
    log_boot(info, options);

    init_memory(info);
    log_embedded_services();
    let screen = if options.is_screen_enabled { mm::framebuffer_console_memory() } else { None };
    console::attach_framebuffer(info, screen);
    #[cfg(target_arch = "x86_64")]
    acpi::discover_when_quiet(info, handover::incoming::is_consuming());
    handover::outgoing::init();
    task::set_hooks(task::Hooks {
        on_exit: handover::outgoing::forget_owner,
        on_first_dispatch: handover::report::note_first_service,
    });
    if let Err(error) = reach_interrupt_controller().and_then(|()| task::start_scheduler(info)) {
        log::error!(target: "boot", "interrupts: {error}; services will not be preempted");
    }

    #[cfg(feature = "testing")]
    if let Some(filter) = options.ktest_filter {
        ktest::run(filter);
    }
    start_services(options);
    // The main thread idles while services run, and carries out update
    // requests.
    loop {
        task::run_until(u64::MAX, || update::is_pending() || handover::incoming::release_due());
        if handover::incoming::release_due() {
            handover::incoming::release_unclaimed();
        }
        #[cfg(target_arch = "x86_64")]
        acpi::discover_when_quiet(info, handover::incoming::is_consuming());
        mm::refill_heap_reserve();
        update::run_pending();
    }
}

/// Logs what this boot was given: the command line and what was wrong
/// with it, the boot description's warnings, the memory map, the image and
/// the modules.
fn log_boot(info: &BootInfo, options: &options::Options) {
    log::info!(target: "boot", "command line: '{}'", info.command_line.as_str());
    for problem in &options.problems {
        log::warn!(target: "boot", "{problem}");
    }
    #[cfg(not(feature = "testing"))]
    for (key, is_given) in [
        ("ktest", options.ktest_filter.is_some()),
        ("kho.inject", options.inject.is_some()),
        ("test.adversary", options.adversary_mode.is_some()),
        ("test.fault_early", options.is_fault_early),
        ("test.client", options.demo.client_exits_early),
    ] {
        if is_given {
            log::warn!(target: "boot", "option '{key}' is not built into this kernel (it needs the testing feature); ignored");
        }
    }
    for warning in &info.warnings {
        log::warn!(target: "boot", "{warning}");
    }
    log::info!(target: "boot", "memory map ({} entries, {} MiB of RAM):", info.memory_map.len(), info.total_ram_bytes() >> 20);
    for region in &info.memory_map {
        log::info!(target: "boot", "  {} {:>8} KiB {}", region.range, region.range.size_bytes() >> 10, region.kind.name());
    }
    log::info!(target: "boot", "kernel image at {} (linked at {:#x})", info.kernel.phys, info.kernel.virt_start);
    for module in &info.modules {
        log::info!(target: "boot", "module '{}' at {}", module.name.as_str(), module.range);
    }
}

/// Starts init (with what the demo does: used by `cargo xtask demo` and
/// tests) and, when the command line asks, the benchmark's ballast service
/// and the reliability tests' adversary.
fn start_services(options: &options::Options) {
    let mut start = options.demo;
    // Test-only: the first client ends without reporting.
    start.client_exits_early &= cfg!(feature = "testing");
    if let Some(ballast) = options.ballast {
        match task::spawn("ballast", ballast.encode()) {
            Ok(_) => start.wait_for_ballast = true,
            Err(error) => log::error!(target: "boot", "cannot start ballast: {error}"),
        }
    }
    // `test.adversary=N`: start the adversary service in mode N (the
    // reliability tests).
    #[cfg(feature = "testing")]
    if let Some(mode) = options.adversary_mode
        && let Err(error) = task::spawn("adversary", mode)
    {
        log::error!(target: "boot", "cannot start adversary: {error}");
    }
    match task::spawn("init", start.encode()) {
        Ok(_) => {}
        Err(error) => log::error!(target: "boot", "cannot start init: {error}"),
    }
}

/// Sets up memory: scratch, the kernel's page tables, heap and page
/// allocator. A malformed `kho_scratch=` is reported and the default used.
fn init_memory(info: &BootInfo) {
    let source = match &info.kho {
        Some(kho) => {
            if options::get().kho_scratch.is_some() {
                log::info!(target: "mm", "kho_scratch= ignored: reusing the scratch regions of the handover");
            }
            let regions = kho
                .scratch
                .iter()
                .map(|area| {
                    let range = area.range();
                    let kind = match *area {
                        baton_boot::info::ScratchArea::Low(_) => baton_mm::scratch::ScratchKind::Low,
                        baton_boot::info::ScratchArea::Global(_) => baton_mm::scratch::ScratchKind::Global,
                        baton_boot::info::ScratchArea::Node(node, _) => baton_mm::scratch::ScratchKind::Node(node),
                    };
                    baton_mm::scratch::ScratchRegion { kind, range: baton_mm::Range::new(range.start, range.end) }
                })
                .collect();
            mm::ScratchSource::Handover(regions)
        }
        None => {
            let sizing = match options::get().kho_scratch {
                None => baton_kho::scratch::ScratchSizing::default(),
                Some(value) => match baton_kho::scratch::ScratchSizing::parse(value) {
                    Ok(sizing) => {
                        log::info!(target: "mm", "kho_scratch={value}: {sizing:?}");
                        sizing
                    }
                    Err(error) => {
                        log::warn!(target: "mm", "kho_scratch={value} is malformed ({error}); using the default scale");
                        baton_kho::scratch::ScratchSizing::default()
                    }
                },
            };
            mm::ScratchSource::Place(sizing)
        }
    };
    if let Err(error) = mm::init_early(info, source) {
        panic!("memory setup failed: {error}");
    }
    mm::log_scratch();
    let report = handover::report::note_boot_phase;
    use handover::report::BootPhase;
    report(BootPhase::EarlyMemory, baton_arch::cpu::cycle_counter());
    let incoming = handover::incoming::open(info);
    report(BootPhase::Deserialised, baton_arch::cpu::cycle_counter());
    if let Err(error) = mm::init_page_allocator(&incoming.reserved, &mut incoming.preserved.iter().copied()) {
        panic!("page allocator setup failed: {error}");
    }
    drop(incoming);
    handover::incoming::claim_kernel_ranges(info);
    report(BootPhase::PageAllocator, baton_arch::cpu::cycle_counter());
    log::info!(target: "mm", "{}", mm::accounting());
}

/// On an x86_64 CPU without x2APIC, maps its local APIC's registers: they
/// are reached through memory, in the uncached firmware window.
fn reach_interrupt_controller() -> Result<(), baton_arch::InterruptError> {
    #[cfg(target_arch = "x86_64")]
    if !baton_arch::interrupts::has_x2apic() {
        let phys = baton_arch::interrupts::apic_base_phys();
        let virt = mm::firmware_address(phys, baton_abi::PAGE_SIZE).ok_or(baton_arch::InterruptError::CannotMap)?;
        log::info!(target: "boot", "interrupts: no x2APIC; local APIC registers at {phys:#x} (xAPIC mode)");
        // SAFETY: the firmware window maps the first 4 GiB uncached for the
        // kernel's lifetime, and the APIC page lies there.
        unsafe { baton_arch::interrupts::use_xapic(virt) };
    }
    Ok(())
}

/// Logs the services this kernel embeds (a production kernel carries no
/// test-only ones; a test checks this line).
fn log_embedded_services() {
    let mut names = alloc::string::String::new();
    for (index, name) in task::embedded::names().enumerate() {
        if index > 0 {
            names.push_str(", ");
        }
        names.push_str(name);
    }
    log::info!(target: "boot", "embedded services: {names}");
}

/// Whether in-kernel tests are running (a panic or fault then leaves QEMU
/// with a failure status instead of halting).
fn is_test_mode() -> bool {
    #[cfg(feature = "testing")]
    return ktest::is_test_mode();
    #[cfg(not(feature = "testing"))]
    return false;
}

/// Reads unmapped memory (for `test.fault_early=1`).
#[cfg(feature = "testing")]
fn fault_on_purpose() {
    // In the kernel half, in a top-level slot Baton never maps.
    let address = 0xffff_fe00_dead_0000_u64 as *const u64;
    // SAFETY: not safe at all: this faults on purpose; the fault handler
    // reports it and stops the machine.
    let value = unsafe { address.read_volatile() };
    log::error!(target: "boot", "read {value:#x} from unmapped memory?");
}

#[panic_handler]
fn panic(panic: &PanicInfo<'_>) -> ! {
    baton_arch::cpu::disable_interrupts();
    console::print_emergency(format_args!("\nkernel panic: {panic}\n"));
    if is_test_mode() {
        console::print_emergency(format_args!("ktest: 0 passed, 1 failed (panic)\n"));
        baton_arch::debug_exit::exit(baton_arch::EXIT_FAILURE);
    }
    baton_arch::cpu::halt_forever()
}
