//! Baton: a small microkernel whose native boot protocol is Kexec HandOver.
//!
//! The entry adapters in `baton-boot` call [`baton_main`] with a boot
//! description; everything here is common to every architecture and entry
//! path.

#![no_std]
#![no_main]

extern crate alloc;

#[cfg(target_arch = "x86_64")]
mod acpi;
mod console;
mod fault_injection;
mod kexec;
mod kho_in;
mod kho_out;
mod kho_tests;
mod ktest;
mod mm;
mod options;
mod task;
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
    kho_in::note_boot_phase(kho_in::BootPhase::Entry, entry_cycles);
    baton_arch::early_init(info.entry_direct_map_offset);
    console::init(info);
    if info.kho.is_some() {
        // The blackout goes on until services are back: keep the console
        // quiet until then (kho_in releases it).
        console::hold();
    }
    baton_arch::trap::init();
    let test_filter = options.ktest_filter;
    if test_filter.is_some() {
        ktest::enter_test_mode();
    }

    println!("Baton {} ({}) booting via {}", options::VERSION, baton_arch::NAME, info.path.name());
    // `test.fault_early=1`: a kernel booted through KHO faults right away, so
    // tests can show what an update into a broken kernel does.
    if info.kho.is_some() && options.is_fault_early {
        fault_on_purpose();
    }
    log::info!(target: "boot", "command line: '{}'", info.command_line.as_str());
    for problem in &options.problems {
        log::warn!(target: "boot", "{problem}");
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

    init_memory(info);
    console::attach_framebuffer(info);
    #[cfg(target_arch = "x86_64")]
    acpi::discover_when_quiet(info);
    kho_out::init();
    if let Err(error) = task::start_scheduler(info) {
        log::error!(target: "boot", "interrupts: {error}; services will not be preempted");
    }

    if let Some(filter) = test_filter {
        ktest::run(filter);
    }
    // init's argument: what the demo does (used by `cargo xtask demo` and
    // tests), and whether to wait for the benchmark's ballast service.
    let mut start = options.demo;
    if let Some(ballast) = options.ballast {
        match task::spawn("ballast", ballast.encode()) {
            Ok(_) => start.wait_for_ballast = true,
            Err(error) => log::error!(target: "boot", "cannot start ballast: {error}"),
        }
    }
    // `test.adversary=N`: start the adversary service in mode N (the
    // reliability tests).
    if let Some(mode) = options.adversary_mode
        && let Err(error) = task::spawn("adversary", mode)
    {
        log::error!(target: "boot", "cannot start adversary: {error}");
    }
    match task::spawn("init", start.encode()) {
        Ok(_) => {}
        Err(error) => log::error!(target: "boot", "cannot start init: {error}"),
    }
    // The main thread idles while services run, and carries out update
    // requests.
    loop {
        task::run_until(u64::MAX, || update::is_pending() || kho_in::release_due());
        if kho_in::release_due() {
            kho_in::release_unclaimed();
        }
        #[cfg(target_arch = "x86_64")]
        acpi::discover_when_quiet(info);
        mm::refill_heap_reserve();
        update::run_pending();
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
    kho_in::note_boot_phase(kho_in::BootPhase::EarlyMemory, baton_arch::cpu::cycle_counter());
    let incoming = kho_in::open(info);
    kho_in::note_boot_phase(kho_in::BootPhase::Deserialised, baton_arch::cpu::cycle_counter());
    if let Err(error) = mm::init_page_allocator(&incoming.reserved, &mut incoming.preserved.iter().copied()) {
        panic!("page allocator setup failed: {error}");
    }
    drop(incoming);
    kho_in::claim_kernel_ranges(info);
    kho_in::note_boot_phase(kho_in::BootPhase::PageAllocator, baton_arch::cpu::cycle_counter());
    log::info!(target: "mm", "{}", mm::accounting());
}

/// Reads unmapped memory (for `test.fault_early=1`).
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
    if ktest::is_test_mode() {
        console::print_emergency(format_args!("ktest: 0 passed, 1 failed (panic)\n"));
        baton_arch::debug_exit::exit(ktest::EXIT_FAILURE);
    }
    baton_arch::cpu::halt_forever()
}
