//! The kernel's trap handler: every exception and interrupt arrives here.

use baton_arch::trap::TrapFrame;
use baton_arch::{Irq, TrapCause};
use core::sync::atomic::{AtomicU64, Ordering};

static BREAKPOINTS_SEEN: AtomicU64 = AtomicU64::new(0);

#[cfg(feature = "testing")]
/// How many kernel breakpoints have been handled.
pub fn breakpoints_seen() -> u64 {
    BREAKPOINTS_SEEN.load(Ordering::Relaxed)
}

/// Called by the architecture's vectors with the saved state; returns the
/// frame to resume.
#[unsafe(no_mangle)]
pub fn baton_trap(frame: &mut TrapFrame) -> *mut TrapFrame {
    let cause = frame.cause();
    match cause {
        TrapCause::Interrupt(_) => {
            let irq = baton_arch::interrupts::claim(frame);
            let next = match irq {
                Irq::Timer => crate::task::tick(frame),
                Irq::Spurious => frame,
                // A driver's device: a message to the driver.
                Irq::Message(slot) => match crate::pci::route(slot) {
                    Some(route) => crate::task::interrupt(frame, route.owner, route.address.0, route.entry),
                    None => frame,
                },
                Irq::Other(number) => {
                    log::warn!(target: "trap", "unexpected interrupt {number}");
                    frame
                }
            };
            baton_arch::interrupts::complete(irq);
            next
        }
        TrapCause::Syscall => crate::syscall::handle(frame),
        TrapCause::KernelYield if !frame.is_from_user() => {
            let mut tasks = crate::task::TASKS.lock();
            crate::task::reschedule(&mut tasks, frame)
        }
        _ if frame.is_from_user() => {
            let ip = frame.instruction_pointer();
            match cause {
                TrapCause::PageFault { address, is_write } => crate::task::kill_current(
                    frame,
                    format_args!(
                        "page fault ({}) at {ip:#x}, faulting address {address:#x}",
                        if is_write { "write" } else { "read" }
                    ),
                ),
                other => crate::task::kill_current(frame, format_args!("{other:?} at {ip:#x}")),
            }
        }
        TrapCause::Breakpoint if !frame.is_from_user() => {
            log::info!(target: "trap", "breakpoint at {:#x}", frame.instruction_pointer());
            BREAKPOINTS_SEEN.fetch_add(1, Ordering::Relaxed);
            skip_breakpoint(frame);
            frame
        }
        _ => kernel_fault(frame, cause),
    }
}

/// Moves past the breakpoint instruction so execution continues.
fn skip_breakpoint(frame: &mut TrapFrame) {
    // x86_64 reports the address after `int3`; aarch64 reports the `brk`.
    #[cfg(target_arch = "aarch64")]
    {
        frame.elr += 4;
    }
    #[cfg(target_arch = "x86_64")]
    let _ = frame;
}

/// A fault the kernel cannot recover from: print everything and stop.
fn kernel_fault(frame: &TrapFrame, cause: TrapCause) -> ! {
    baton_arch::cpu::disable_interrupts();
    let print = crate::console::print_emergency;
    match cause {
        TrapCause::PageFault { address, is_write } => print(format_args!(
            "\nkernel fault: page fault ({}) at instruction {:#x}, faulting address {:#x}\n",
            if is_write { "write" } else { "read" },
            frame.instruction_pointer(),
            address
        )),
        other => print(format_args!("\nkernel fault: {:?} at instruction {:#x}\n", other, frame.instruction_pointer())),
    }
    print(format_args!("{frame}\n"));
    if crate::is_test_mode() {
        print(format_args!("ktest: 0 passed, 1 failed (kernel fault)\n"));
        baton_arch::debug_exit::exit(baton_arch::EXIT_FAILURE);
    }
    let info = crate::options::boot_info();
    if info.kho.is_some() {
        print(format_args!(
            "kernel fault during a KHO boot: the handed-over state is still in memory, untouched, but this kernel \
             cannot restore it and Baton does not roll back to the previous kernel\n"
        ));
    }
    // Under QEMU's demo and tests (`demo.shutdown=1`), leave with a failing
    // status instead of halting until a timeout.
    if crate::options::get().demo.shutdown_when_done {
        baton_arch::debug_exit::exit(baton_arch::EXIT_FAILURE);
    }
    baton_arch::cpu::halt_forever()
}
