//! ACPI on x86_64 through the `acpi` crate: the MADT (processors, the local
//! APIC, the I/O APICs) and the HPET, found at boot and logged. The HPET
//! measures the time-stamp counter too: it confirms the PIT's figure, and
//! on a PC without a PIT it replaces the guess the kernel started with. A
//! missing or malformed table is logged and skipped; boot goes on.

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use baton_boot::BootInfo;
use core::ptr::NonNull;

/// What the firmware described, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Platform {
    /// Processors the MADT lists as enabled (or online-capable).
    pub processors: u32,
    /// The local APIC's physical address.
    pub local_apic: u64,
    /// I/O APICs the MADT lists.
    pub io_apics: u32,
    /// The first I/O APIC: (physical address, first GSI).
    pub first_io_apic: Option<(u64, u32)>,
    /// The HPET's physical address, when there is one.
    pub hpet: Option<u64>,
    /// The time-stamp counter's rate measured against the HPET.
    pub tsc_hz_by_hpet: Option<u64>,
    /// PCI segment 0's configuration space (MCFG); firmware assigned its
    /// BARs, so no windows are known.
    pub pci_host: Option<baton_pci::HostBridge>,
}

static PLATFORM: spin::Once<Platform> = spin::Once::new();

#[cfg(feature = "testing")]
/// What [`discover`] found (`None` before it ran or without ACPI).
pub fn platform() -> Option<Platform> {
    PLATFORM.get().copied()
}

/// PCI segment 0's host bridge from the MCFG, once ACPI was read.
pub fn pci_host() -> Option<baton_pci::HostBridge> {
    PLATFORM.get().and_then(|platform| platform.pci_host)
}

/// Zeros for memory the kernel cannot reach (a corrupt pointer above
/// 4 GiB): a "table" there fails the crate's signature check.
#[repr(C, align(4096))]
struct Zeros([u8; 16 * 4096]);
static ZEROS: Zeros = Zeros([0; 16 * 4096]);

/// Maps tables through the direct map or the firmware window; both exist
/// for the kernel's lifetime, so nothing is unmapped.
#[derive(Debug, Clone, Copy)]
struct Handler;

impl AcpiHandler for Handler {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = crate::mm::firmware_address(physical_address as u64, size as u64).unwrap_or_else(|| {
            log::warn!(target: "acpi", "table at {physical_address:#x} ({size} bytes) is out of reach; read as zeros");
            ZEROS.0.as_ptr() as u64
        });
        let size = if virt == ZEROS.0.as_ptr() as u64 { size.min(ZEROS.0.len()) } else { size };
        // SAFETY: `virt` maps `size` readable bytes (the direct map, the
        // firmware window, or the zero block); it is never null.
        unsafe { PhysicalMapping::new(physical_address, NonNull::new_unchecked(virt as *mut T), size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Checks the MADT's entry list before the crate walks it: its iterator
/// trusts each entry's length, and a zero length would never end.
fn madt_entries_are_sound(madt: &PhysicalMapping<Handler, Madt>) -> bool {
    const ENTRIES_OFFSET: usize = 44;
    let length = { madt.get().header.length } as usize;
    if length < ENTRIES_OFFSET || length > madt.mapped_length() {
        return false;
    }
    // SAFETY: the crate mapped and checksummed `length` bytes of the table.
    let bytes = unsafe { core::slice::from_raw_parts(madt.virtual_start().as_ptr() as *const u8, length) };
    let mut offset = ENTRIES_OFFSET;
    while offset < length {
        let Some(&entry_length) = bytes.get(offset + 1) else { return false };
        if entry_length < 2 || offset + usize::from(entry_length) > length {
            return false;
        }
        offset += usize::from(entry_length);
    }
    true
}

fn read_madt(tables: &AcpiTables<Handler>, platform: &mut Platform) {
    let madt = match tables.find_table::<Madt>() {
        Ok(madt) => madt,
        Err(error) => {
            log::warn!(target: "acpi", "no usable MADT ({error:?}): one processor, the local APIC at its usual place");
            return;
        }
    };
    if !madt_entries_are_sound(&madt) {
        log::warn!(target: "acpi", "the MADT's entry list is malformed; skipped");
        return;
    }
    platform.local_apic = u64::from(madt.get().local_apic_address);
    for entry in madt.get().entries() {
        match entry {
            // Enabled, or online-capable.
            MadtEntry::LocalApic(local) if { local.flags } & 0b11 != 0 => platform.processors += 1,
            MadtEntry::LocalX2Apic(local) if { local.flags } & 0b11 != 0 => platform.processors += 1,
            MadtEntry::IoApic(io_apic) => {
                platform.io_apics += 1;
                if platform.first_io_apic.is_none() {
                    platform.first_io_apic =
                        Some((u64::from(io_apic.io_apic_address), io_apic.global_system_interrupt_base));
                }
            }
            MadtEntry::LocalApicAddressOverride(entry) => platform.local_apic = entry.local_apic_address,
            _ => {}
        }
    }
    log::info!(
        target: "acpi",
        "MADT: {} processor(s), local APIC at {:#x}, {} I/O APIC(s){}",
        platform.processors,
        platform.local_apic,
        platform.io_apics,
        match platform.first_io_apic {
            Some((address, base)) => alloc::format!(", the first at {address:#x} from GSI {base}"),
            None => alloc::string::String::new(),
        }
    );
}

/// Segment 0's ECAM region from the MCFG (other segments are logged and
/// left out: Baton enumerates one).
fn read_mcfg(tables: &AcpiTables<Handler>, platform: &mut Platform) {
    const ENTRIES_OFFSET: usize = 44;
    const ENTRY_BYTES: usize = 16;
    let Ok(mcfg) = tables.find_table::<acpi::mcfg::Mcfg>() else {
        log::info!(target: "acpi", "no MCFG: no PCI configuration space");
        return;
    };
    // The crate trusts the header's length for its entry slice: check it
    // against what was mapped first.
    let length = { mcfg.get().header().length } as usize;
    if length < ENTRIES_OFFSET
        || length > mcfg.mapped_length()
        || !(length - ENTRIES_OFFSET).is_multiple_of(ENTRY_BYTES)
    {
        log::warn!(target: "acpi", "the MCFG's length ({length} bytes) is malformed; no PCI");
        return;
    }
    for entry in mcfg.get().entries() {
        let (start, first, last) = (entry.base_address, entry.bus_number_start, entry.bus_number_end);
        let segment = entry.pci_segment_group;
        if segment != 0 || platform.pci_host.is_some() {
            log::info!(target: "acpi", "MCFG: segment {segment} at {start:#x} left out (Baton enumerates one)");
            continue;
        }
        if first > last {
            log::warn!(target: "acpi", "MCFG: segment 0 has buses {first}..{last}; no PCI");
            continue;
        }
        let buses = u64::from(last - first) + 1;
        platform.pci_host = Some(baton_pci::HostBridge {
            ecam_start: start,
            ecam_size_bytes: buses * baton_pci::BUS_CONFIG_BYTES,
            first_bus: first,
            last_bus: last,
            windows: baton_pci::Windows::default(),
        });
        log::info!(target: "acpi", "MCFG: PCI segment 0, buses {first:#04x}..={last:#04x}, ECAM at {start:#x}");
    }
}

/// The HPET table's base address, read from the raw table: the crate's
/// `HpetInfo` asserts (panics) when the HPET is not in memory space.
fn hpet_address(tables: &AcpiTables<Handler>) -> Option<u64> {
    const ADDRESS_SPACE_OFFSET: usize = 40;
    const ADDRESS_OFFSET: usize = 44;
    let table = tables.find_table::<acpi::hpet::HpetTable>().ok()?;
    if table.mapped_length() < ADDRESS_OFFSET + 8 {
        return None;
    }
    // SAFETY: the crate mapped the whole checksummed table, at least 52
    // bytes as checked above.
    let bytes = unsafe { core::slice::from_raw_parts(table.virtual_start().as_ptr() as *const u8, ADDRESS_OFFSET + 8) };
    if bytes[ADDRESS_SPACE_OFFSET] != 0 {
        log::warn!(target: "acpi", "the HPET is not in memory space; not used");
        return None;
    }
    Some(u64::from_le_bytes(bytes[ADDRESS_OFFSET..ADDRESS_OFFSET + 8].try_into().ok()?))
}

fn use_hpet(tables: &AcpiTables<Handler>, platform: &mut Platform) {
    let Some(address) = hpet_address(tables) else {
        log::info!(target: "acpi", "no HPET: the time-stamp counter keeps the PIT's measure");
        return;
    };
    platform.hpet = Some(address);
    let Some(virt) = crate::mm::firmware_address(address, 1024) else {
        log::warn!(target: "acpi", "HPET at {address:#x} is out of reach; not used");
        return;
    };
    if baton_arch::cpu::cycle_counter_frequency_source() == baton_arch::cpu::FrequencySource::Handover {
        // After an update the rate came with the handover: measuring again
        // would add 10 ms to the blackout for the same figure.
        log::info!(target: "acpi", "HPET at {address:#x}; the clock's rate came from the previous kernel");
        return;
    }
    // SAFETY: the firmware window maps the HPET's register block uncached
    // for the kernel's lifetime; nothing else in Baton programs the HPET.
    let Some(hpet) = (unsafe { baton_arch::hpet::Hpet::new(virt) }) else {
        log::warn!(target: "acpi", "HPET at {address:#x} reports no valid period; not used");
        return;
    };
    let Some(hz) = hpet.measure_cycle_counter_hz() else {
        log::warn!(target: "acpi", "HPET at {address:#x} does not count; not used");
        return;
    };
    platform.tsc_hz_by_hpet = Some(hz);
    let current = baton_arch::cpu::cycle_counter_frequency_hz();
    let source = baton_arch::cpu::cycle_counter_frequency_source();
    log::info!(
        target: "acpi",
        "HPET at {address:#x} ({} MHz): time-stamp counter {} MHz, {} MHz by the {}",
        hpet.frequency_hz() / 1_000_000,
        hz / 1_000_000,
        current / 1_000_000,
        source.name()
    );
    if baton_arch::cpu::correct_guessed_frequency(hz) {
        log::info!(target: "acpi", "no PIT: the clock now runs on the HPET's measure");
    }
}

/// Reads the firmware's tables once (after the page allocator and heap are
/// up), but not while an update's handover is being taken in: reading them
/// (uncached) is not worth lengthening the blackout, so after an update the
/// main loop's next call does it.
pub fn discover_when_quiet(info: &BootInfo, is_handover_in_use: bool) {
    static IS_DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if IS_DONE.load(core::sync::atomic::Ordering::Relaxed) || is_handover_in_use {
        return;
    }
    IS_DONE.store(true, core::sync::atomic::Ordering::Relaxed);
    discover(info);
}

fn discover(info: &BootInfo) {
    let Some(rsdp) = info.firmware.acpi_rsdp else {
        log::info!(target: "acpi", "the loader gave no ACPI tables: no MADT or HPET; the PIT measures time");
        return;
    };
    // SAFETY: the loader gave the RSDP's address; the handler reaches any
    // physical memory a table names (or reads zeros).
    let tables = match unsafe { AcpiTables::from_rsdp(Handler, rsdp as usize) } {
        Ok(tables) => tables,
        Err(error) => {
            log::warn!(target: "acpi", "ACPI tables at {rsdp:#x} are not usable ({error:?}); skipped");
            return;
        }
    };
    let mut platform = Platform::default();
    read_madt(&tables, &mut platform);
    read_mcfg(&tables, &mut platform);
    use_hpet(&tables, &mut platform);
    PLATFORM.call_once(|| platform);
}
