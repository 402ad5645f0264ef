//! aarch64 interrupts: the GIC (v2 or v3, as the device tree says) and the
//! generic timer's virtual timer.

use crate::{InterruptError, Irq};
use baton_boot::BootInfo;
use baton_boot::info::InterruptController;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// INTID of the EL1 virtual timer when firmware does not say (PPI 11).
const DEFAULT_TIMER_INTERRUPT: u32 = 27;
const SPURIOUS_INTERRUPT: u32 = 1023;

static VERSION: AtomicU8 = AtomicU8::new(0);
static DISTRIBUTOR: AtomicU64 = AtomicU64::new(0);
static CPU_INTERFACE: AtomicU64 = AtomicU64::new(0);
static TIMER_INTERRUPT: AtomicU32 = AtomicU32::new(DEFAULT_TIMER_INTERRUPT);
/// The GICv2m frame: its physical address (what devices write to), and
/// the SPIs it raises (first, count); 0 without one.
static MSI_FRAME_PHYS: AtomicU64 = AtomicU64::new(0);
static MSI_FIRST_SPI: AtomicU32 = AtomicU32::new(0);
static MSI_SPI_COUNT: AtomicU32 = AtomicU32::new(0);
/// How many message interrupts the kernel can route at a time (at most;
/// the frame may offer fewer).
pub const MESSAGE_SLOTS: u32 = 32;
/// GICv2m: MSI_TYPER (first SPI in bits 16..26, count in 0..10) and the
/// doorbell register a device writes the SPI number to.
const V2M_MSI_TYPER: u64 = 0x008;
const V2M_MSI_SETSPI_NS: u64 = 0x040;
// Distributor: interrupt configuration (2 bits each, bit 1 edge) and
// targets (a byte each, a CPU mask).
const GICD_ICFGR: u64 = 0xc00;
const GICD_ITARGETSR: u64 = 0x800;

// Distributor registers (both versions).
const GICD_CTLR: u64 = 0x000;
const GICD_ISENABLER: u64 = 0x100;
const GICD_IPRIORITYR: u64 = 0x400;
// GICv2 CPU interface.
const GICC_CTLR: u64 = 0x000;
const GICC_PMR: u64 = 0x004;
const GICC_IAR: u64 = 0x00c;
const GICC_EOIR: u64 = 0x010;
// GICv3 redistributor (SGI/PPI frame at +64 KiB).
const GICR_WAKER: u64 = 0x014;
const GICR_SGI_FRAME: u64 = 0x1_0000;
const GICR_IGROUPR0: u64 = GICR_SGI_FRAME + 0x080;
const GICR_ISENABLER0: u64 = GICR_SGI_FRAME + 0x100;
const GICR_IPRIORITYR: u64 = GICR_SGI_FRAME + 0x400;

fn write32(base: u64, offset: u64, value: u32) {
    // SAFETY: `base` is a device-window mapping of a GIC register block set up
    // by `init`; `offset` names a register inside it.
    unsafe { ((base + offset) as *mut u32).write_volatile(value) }
}

fn read32(base: u64, offset: u64) -> u32 {
    // SAFETY: as in `write32`.
    unsafe { ((base + offset) as *const u32).read_volatile() }
}

fn write8(base: u64, offset: u64, value: u8) {
    // SAFETY: as in `write32`; priority registers are byte-accessible.
    unsafe { ((base + offset) as *mut u8).write_volatile(value) }
}

/// Sets up the GIC the device tree describes, with the timer's interrupt
/// enabled at the highest priority.
pub fn init(info: &BootInfo) -> Result<(), InterruptError> {
    let timer = info.timer_interrupt.unwrap_or(DEFAULT_TIMER_INTERRUPT);
    TIMER_INTERRUPT.store(timer, Ordering::Relaxed);
    let map = |phys: u64, size: u64| super::device_window::map(phys, size).ok_or(InterruptError::CannotMap);
    match info.interrupt_controller.ok_or(InterruptError::NoController)? {
        InterruptController::GicV2 { distributor, cpu_interface } => {
            let distributor = map(distributor, 0x1_0000)?;
            let cpu = map(cpu_interface, 0x1_0000)?;
            write32(distributor, GICD_CTLR, 1);
            write8(distributor, GICD_IPRIORITYR + u64::from(timer), 0);
            write32(distributor, GICD_ISENABLER + 4 * u64::from(timer / 32), 1 << (timer % 32));
            write32(cpu, GICC_PMR, 0xff);
            write32(cpu, GICC_CTLR, 1);
            DISTRIBUTOR.store(distributor, Ordering::Relaxed);
            CPU_INTERFACE.store(cpu, Ordering::Relaxed);
            VERSION.store(2, Ordering::Relaxed);
            if let Some(frame) = info.msi_frame
                && let Some(registers) = super::device_window::map(frame, 0x1000)
            {
                let typer = read32(registers, V2M_MSI_TYPER);
                MSI_FIRST_SPI.store((typer >> 16) & 0x3ff, Ordering::Relaxed);
                MSI_SPI_COUNT.store((typer & 0x3ff).min(MESSAGE_SLOTS), Ordering::Relaxed);
                MSI_FRAME_PHYS.store(frame, Ordering::Relaxed);
            }
        }
        InterruptController::GicV3 { distributor, redistributor } => {
            let distributor = map(distributor, 0x1_0000)?;
            let redistributor = map(redistributor, 0x2_0000)?;
            // ARE_NS | EnableGrp1NS.
            write32(distributor, GICD_CTLR, (1 << 4) | (1 << 1));
            // Wake this CPU's redistributor.
            let waker = read32(redistributor, GICR_WAKER);
            write32(redistributor, GICR_WAKER, waker & !(1 << 1));
            for _ in 0..1_000_000 {
                if read32(redistributor, GICR_WAKER) & (1 << 2) == 0 {
                    break;
                }
                core::hint::spin_loop();
            }
            write32(redistributor, GICR_IGROUPR0, read32(redistributor, GICR_IGROUPR0) | (1 << timer));
            write8(redistributor, GICR_IPRIORITYR + u64::from(timer), 0);
            write32(redistributor, GICR_ISENABLER0, 1 << timer);
            // SAFETY: enabling the system-register CPU interface, unmasking all
            // priorities and enabling group 1 only affect interrupt delivery.
            unsafe {
                core::arch::asm!(
                    "mrs {tmp}, S3_0_C12_C12_5",   // ICC_SRE_EL1
                    "orr {tmp}, {tmp}, #1",
                    "msr S3_0_C12_C12_5, {tmp}",
                    "isb",
                    "msr S3_0_C4_C6_0, {pmr}",     // ICC_PMR_EL1
                    "msr S3_0_C12_C12_7, {one}",   // ICC_IGRPEN1_EL1
                    "isb",
                    tmp = out(reg) _,
                    pmr = in(reg) 0xffu64,
                    one = in(reg) 1u64,
                    options(nostack),
                );
            }
            DISTRIBUTOR.store(distributor, Ordering::Relaxed);
            VERSION.store(3, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The timer's rate is the counter's: nothing to hand over.
pub fn timer_rate() -> u64 {
    0
}

/// Nothing to do on aarch64 (see [`timer_rate`]).
pub fn set_timer_rate(_ticks_per_second: u64) {}

/// Starts the virtual timer at `hz` ticks per second.
pub fn start_timer(hz: u32) {
    let interval = super::cpu::cycle_counter_frequency_hz() / u64::from(hz.max(1));
    // SAFETY: programming the EL1 virtual timer only schedules interrupts.
    unsafe {
        core::arch::asm!(
            "msr cntv_tval_el0, {interval}",
            "msr cntv_ctl_el0, {enable}",
            "isb",
            interval = in(reg) interval.max(1),
            enable = in(reg) 1u64,
            options(nostack),
        );
    }
    INTERVAL.store(interval.max(1), Ordering::Relaxed);
}

static INTERVAL: AtomicU64 = AtomicU64::new(0);

/// Stops the timer.
pub fn stop_timer() {
    // SAFETY: disabling the virtual timer only stops its interrupts.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack)) };
}

/// Acknowledges the pending interrupt at the GIC and identifies it.
pub fn claim(_frame: &super::trap::TrapFrame) -> Irq {
    let intid = match VERSION.load(Ordering::Relaxed) {
        2 => read32(CPU_INTERFACE.load(Ordering::Relaxed), GICC_IAR) & 0x3ff,
        3 => {
            let value: u64;
            // SAFETY: reading ICC_IAR1_EL1 acknowledges the interrupt.
            unsafe { core::arch::asm!("mrs {0}, S3_0_C12_C12_0", out(reg) value, options(nostack)) };
            (value & 0xff_ffff) as u32
        }
        _ => SPURIOUS_INTERRUPT,
    };
    LAST_CLAIMED.store(intid, Ordering::Relaxed);
    let first_message = MSI_FIRST_SPI.load(Ordering::Relaxed);
    let messages = MSI_SPI_COUNT.load(Ordering::Relaxed);
    if intid >= SPURIOUS_INTERRUPT {
        Irq::Spurious
    } else if messages > 0 && (first_message..first_message + messages).contains(&intid) {
        Irq::Message(intid - first_message)
    } else if intid == TIMER_INTERRUPT.load(Ordering::Relaxed) {
        // Re-arm the next tick relative to now.
        // SAFETY: reprogramming the virtual timer only schedules interrupts.
        unsafe {
            core::arch::asm!("msr cntv_tval_el0, {0}", "isb", in(reg) INTERVAL.load(Ordering::Relaxed), options(nostack))
        };
        Irq::Timer
    } else {
        Irq::Other(intid)
    }
}

static LAST_CLAIMED: AtomicU32 = AtomicU32::new(SPURIOUS_INTERRUPT);

/// Where a device writes, and what, to raise message-interrupt `slot`:
/// the GICv2m frame's doorbell and the slot's SPI. `None` without a frame
/// (a GICv3 machine: its ITS is not driven yet, so drivers poll) or past
/// the frame's SPIs.
pub fn message_target(slot: u32) -> Option<(u64, u32)> {
    let frame = MSI_FRAME_PHYS.load(Ordering::Relaxed);
    if frame == 0 || slot >= MSI_SPI_COUNT.load(Ordering::Relaxed) {
        return None;
    }
    Some((frame + V2M_MSI_SETSPI_NS, MSI_FIRST_SPI.load(Ordering::Relaxed) + slot))
}

/// Lets message-interrupt `slot` through the distributor: its SPI edge
/// triggered, aimed at this CPU, enabled. `false` when there is no such
/// slot.
pub fn enable_message(slot: u32) -> bool {
    let Some((_, spi)) = message_target(slot) else { return false };
    let distributor = DISTRIBUTOR.load(Ordering::Relaxed);
    let field = u64::from(spi % 16) * 2;
    let config = GICD_ICFGR + 4 * u64::from(spi / 16);
    write32(distributor, config, read32(distributor, config) | (0b10 << field));
    write8(distributor, GICD_ITARGETSR + u64::from(spi), 1);
    write8(distributor, GICD_IPRIORITYR + u64::from(spi), 0x80);
    write32(distributor, GICD_ISENABLER + 4 * u64::from(spi / 32), 1 << (spi % 32));
    true
}

/// Signals the end of handling `irq` to the GIC.
pub fn complete(irq: Irq) {
    if irq == Irq::Spurious {
        return;
    }
    let intid = LAST_CLAIMED.load(Ordering::Relaxed);
    match VERSION.load(Ordering::Relaxed) {
        2 => write32(CPU_INTERFACE.load(Ordering::Relaxed), GICC_EOIR, intid),
        3 => {
            // SAFETY: writing ICC_EOIR1_EL1 ends the acknowledged interrupt.
            unsafe { core::arch::asm!("msr S3_0_C12_C12_1, {0}", "isb", in(reg) u64::from(intid), options(nostack)) };
        }
        _ => {}
    }
}
