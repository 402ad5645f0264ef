//! PCI: the host bridge's configuration space (ECAM), the functions behind
//! it, and addresses for the BARs firmware left unassigned (a direct boot
//! on aarch64 has no firmware to do it). Found once the system is quiet,
//! logged function by function.
//!
//! The host bridge comes from ACPI's MCFG on x86_64 and from the device
//! tree's `pci-host-ecam-generic` node on aarch64 (carried in the boot
//! description across updates). A missing or unusable one is one logged
//! line and no devices; nothing here can stop the boot.
//!
//! A device whose driver is resumed by an update keeps running through
//! it: the old kernel leaves it alone and describes it in the driver's
//! process description ([`records_of`]); the new kernel takes it back
//! before the driver runs ([`adopt`]), checking the record against the
//! function without writing anything, and enumeration later never sizes
//! or moves its BARs.

mod interrupts;

pub use interrupts::{reroute_adopted, route, route_entry};

use alloc::vec::Vec;
use arrayvec::ArrayVec;
use baton_arch::mmio::MmioRegion;
use baton_pci::{Address, Bar, BarKind, ConfigAccess, Function, HostBridge};

/// One function found, with its sized BARs (bus addresses) and the
/// service the manifest gave it to.
#[derive(Debug, Clone)]
pub struct Device {
    /// What its header says.
    pub function: Function,
    /// Its BARs, programmed.
    pub bars: ArrayVec<Bar, 6>,
    /// The service that drives it (`pci.assign=`), by name.
    pub owner: Option<alloc::string::String>,
    /// BAR registers the owner wrote all-ones to: they read as their size
    /// mask until the next write (a size probe, which never reaches the
    /// device).
    probing: [bool; 6],
    /// Its command register before [`stop_devices_for_jump`], to put back
    /// if the jump does not happen.
    stopped_command: Option<u16>,
    /// Handed over running by the previous kernel, with its driver: its
    /// BARs come from the handover and are never sized.
    is_handed_over: bool,
    /// Its MSI-X was masked for the jump (unmasked again if the jump does
    /// not happen).
    is_masked_for_jump: bool,
}

/// What enumeration found, and the way to reach it.
struct Registry {
    ecam: Ecam,
    windows: baton_pci::Windows,
    devices: Vec<Device>,
}

/// Set once enumeration ran (or `pci=off` said it never will).
static DISCOVERED: spin::Once<()> = spin::Once::new();
/// The functions found (none without PCI), and before enumeration those
/// handed over with their resumed drivers.
static REGISTRY: spin::Mutex<Option<Registry>> = spin::Mutex::new(None);
/// The host bridge known before enumeration (a KHO boot's, from the boot
/// description), through which resumed drivers get their devices back.
static HOST_BRIDGE: spin::Mutex<Option<HostBridge>> = spin::Mutex::new(None);

/// Why a device call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciError {
    /// Enumeration has not run yet (just after boot).
    NotEnumerated,
    /// No such function, or none more for this owner.
    NotFound,
    /// The function belongs to another service (or to none).
    NotOwner,
    /// The BAR is not implemented, or decodes I/O ports, not memory.
    NoSuchBar,
    /// The range reaches past the BAR's end.
    PastTheEnd,
    /// The register is the kernel's (header fields other than the command
    /// register and the BARs, and the MSI and MSI-X capabilities).
    ReadOnly,
    /// The pages hold the function's MSI-X table or pending bits, which
    /// are the kernel's.
    KernelOwned,
    /// The function has no MSI-X, or this machine routes no message
    /// interrupts (or has no slot left).
    NoInterrupts,
    /// The MSI-X table has no such entry.
    NoSuchEntry,
    /// The entry is routed already.
    AlreadyRouted,
}

impl core::fmt::Display for PciError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PciError::NotEnumerated => "PCI is not enumerated yet",
            PciError::NotFound => "no such PCI function",
            PciError::NotOwner => "the PCI function belongs to another service",
            PciError::NoSuchBar => "no such memory BAR",
            PciError::PastTheEnd => "the range reaches past the BAR's end",
            PciError::ReadOnly => "the register is the kernel's",
            PciError::KernelOwned => "the pages hold the MSI-X table, which is the kernel's",
            PciError::NoInterrupts => "no message interrupt can be routed for this function",
            PciError::NoSuchEntry => "the MSI-X table has no such entry",
            PciError::AlreadyRouted => "the MSI-X entry is routed already",
        })
    }
}

/// Why a device record from the previous kernel is not taken back (its
/// driver then restarts, and the device is stopped and reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptError {
    /// This boot knows no host bridge (the boot description had none).
    NoHostBridge,
    /// No function answers at the recorded address.
    Absent,
    /// Another card answers there.
    OtherCard {
        /// Its vendor ID.
        vendor_id: u16,
        /// Its device ID.
        device_id: u16,
    },
    /// Another record already took the function.
    Taken,
    /// The manifest does not give this kind of card to this service.
    NotAssigned,
    /// A BAR no function could have: a register past the header's, an
    /// address of 0 or not aligned to its size, or a range over RAM, the
    /// configuration space or another device's BAR.
    ImpossibleBar {
        /// The register.
        index: u8,
    },
    /// A BAR register does not hold what the record says.
    BarMoved {
        /// The register.
        index: u8,
        /// What it holds.
        found: u64,
        /// What the record says.
        recorded: u64,
    },
    /// A BAR's CPU address is not where this host bridge forwards it.
    NotForwarded {
        /// The register.
        index: u8,
    },
}

impl core::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AdoptError::NoHostBridge => f.write_str("no PCI host bridge is known"),
            AdoptError::Absent => f.write_str("no function answers at its address"),
            AdoptError::OtherCard { vendor_id, device_id } => {
                write!(f, "another card ({vendor_id:04x}:{device_id:04x}) answers at its address")
            }
            AdoptError::Taken => f.write_str("another record took the function"),
            AdoptError::NotAssigned => f.write_str("the manifest does not give it to this service"),
            AdoptError::ImpossibleBar { index } => {
                write!(f, "BAR{index} is not a range this function can decode (register, alignment or overlap)")
            }
            AdoptError::BarMoved { index, found, recorded } => {
                write!(f, "BAR{index} holds {found:#x}, the record says {recorded:#x}")
            }
            AdoptError::NotForwarded { index } => write!(f, "BAR{index} is not where the host bridge forwards it"),
        }
    }
}

/// Configuration space through the ECAM window.
struct Ecam {
    region: MmioRegion,
    first_bus: u8,
    /// Where the window starts in physical memory.
    physical_start: u64,
}

impl Ecam {
    fn offset(&self, at: Address, offset: u16) -> Option<u64> {
        (offset < 4096 && offset.is_multiple_of(4)).then_some(())?;
        Some(at.ecam_offset(self.first_bus)? + u64::from(offset))
    }
}

impl ConfigAccess for Ecam {
    fn read(&self, at: Address, offset: u16) -> u32 {
        self.offset(at, offset).and_then(|offset| self.region.read32(offset)).unwrap_or(u32::MAX)
    }

    fn write(&mut self, at: Address, offset: u16, value: u32) {
        if let Some(offset) = self.offset(at, offset) {
            self.region.write32(offset, value);
        }
    }
}

/// Enumerates `bridge` once: sizes each function's BARs, assigns those
/// without an address from the bridge's windows, gives functions to the
/// services `manifest` names, and logs every function. Functions taken
/// back with their resumed drivers ([`adopt`]) keep the BARs and owner
/// the handover gave them. `is_recording` also logs each other function's
/// configuration space and BAR probes as the host tests read them
/// (`pci: record ...`).
pub fn discover(bridge: Option<HostBridge>, manifest: &[crate::options::DeviceAssignment], is_recording: bool) {
    DISCOVERED.call_once(|| {
        let mut guard = REGISTRY.lock();
        let registry = match (guard.take(), bridge) {
            (None, None) => {
                log::info!(target: "pci", "no PCI host bridge described: no devices");
                None
            }
            (Some(registry), _) => Some(registry),
            (None, Some(bridge)) => open(bridge),
        };
        match (registry, bridge) {
            (Some(mut registry), Some(bridge)) => {
                enumerate(&mut registry, bridge, is_recording);
                assign(&mut registry.devices, manifest);
                *guard = Some(registry);
            }
            (Some(registry), None) => *guard = Some(registry),
            (None, _) if !manifest.is_empty() => {
                log::warn!(target: "pci", "pci.assign= names devices, but there is no PCI: nothing assigned")
            }
            (None, _) => {}
        }
    });
}

/// Records the host bridge this boot was told of before enumeration (the
/// boot description's), so resumed drivers can take their devices back.
pub fn note_host_bridge(bridge: HostBridge) {
    *HOST_BRIDGE.lock() = Some(bridge);
}

/// Whether enumeration ran (or `pci=off` said it never will).
pub fn is_discovered() -> bool {
    DISCOVERED.is_completed()
}

/// `pci=off`: PCI stays as firmware left it (said once).
pub fn leave_alone() {
    DISCOVERED.call_once(|| log::info!(target: "pci", "pci=off: PCI is left alone"));
}

/// Gives each named service the first function not yet given that has the
/// vendor and device ID it names (a service that took its device back
/// with the handover has it already).
fn assign(devices: &mut [Device], manifest: &[crate::options::DeviceAssignment]) {
    for entry in manifest {
        let is_handed_over = |device: &Device| {
            device.is_handed_over
                && device.owner.as_deref() == Some(entry.service.as_str())
                && device.function.vendor_id == entry.vendor_id
                && device.function.device_id == entry.device_id
        };
        if devices.iter().any(is_handed_over) {
            continue;
        }
        let wanted = |device: &&mut Device| {
            device.owner.is_none()
                && device.function.vendor_id == entry.vendor_id
                && device.function.device_id == entry.device_id
        };
        match devices.iter_mut().find(wanted) {
            Some(device) => {
                log::info!(target: "pci", "{} ({:04x}:{:04x}) is assigned to '{}'", device.function.address, entry.vendor_id, entry.device_id, entry.service);
                device.owner = Some(alloc::string::String::from(entry.service.as_str()));
            }
            None => log::warn!(
                target: "pci",
                "pci.assign: no unassigned {:04x}:{:04x} for '{}'",
                entry.vendor_id,
                entry.device_id,
                entry.service
            ),
        }
    }
}

/// Maps `bridge`'s configuration space; `None` (logged) when it cannot be.
fn open(bridge: HostBridge) -> Option<Registry> {
    let Some(last_bus) = bridge.last_reachable_bus() else {
        log::warn!(target: "pci", "the ECAM region at {:#x} covers no bus; no devices", bridge.ecam_start);
        return None;
    };
    let buses = u64::from(last_bus) - u64::from(bridge.first_bus) + 1;
    let size_bytes = buses * baton_pci::BUS_CONFIG_BYTES;
    let Some(virt) = crate::mm::device_address(bridge.ecam_start, size_bytes) else {
        log::warn!(target: "pci", "the ECAM region at {:#x} is out of reach; no devices", bridge.ecam_start);
        return None;
    };
    // SAFETY: `device_address` mapped `size_bytes` of the ECAM region as
    // device memory for the kernel's lifetime, and only this module
    // touches configuration space.
    let region = unsafe { MmioRegion::new(virt, size_bytes) };
    let ecam = Ecam { region, first_bus: bridge.first_bus, physical_start: bridge.ecam_start };
    Some(Registry { ecam, windows: bridge.windows, devices: Vec::new() })
}

fn enumerate(registry: &mut Registry, bridge: HostBridge, is_recording: bool) {
    let Some(last_bus) = bridge.last_reachable_bus() else { return };
    let ecam = &mut registry.ecam;
    let mut functions = Vec::new();
    baton_pci::enumerate(ecam, bridge.first_bus..=last_bus, |function| functions.push(function));
    let mut sized = Vec::new();
    for function in functions {
        // A device handed over running is never probed: all-ones in a
        // live BAR would move it under its driver.
        if let Some(device) = registry.devices.iter().find(|device| device.function.address == function.address) {
            log::info!(target: "pci", "{}: handed over running; its BARs are the handover's, not sized", function.address);
            log_device(device);
            continue;
        }
        if is_recording {
            record(ecam, &function);
        }
        let bars = baton_pci::size_bars(ecam, &function);
        sized.push((function, bars));
    }
    // What firmware (or the previous kernel) placed stays where it is, and
    // nothing is placed over it.
    let windows = &mut registry.windows;
    let handed_over = registry.devices.iter().flat_map(|device| device.bars.iter());
    for bar in sized.iter().flat_map(|(_, bars)| bars.iter()).chain(handed_over).filter(|bar| bar.address != 0) {
        windows.reserve(bar);
    }
    for (function, mut bars) in sized {
        let at = function.address;
        if bars.iter().any(|bar| bar.address == 0) {
            let has_windows = windows.memory32.is_some() || windows.memory64.is_some() || windows.io.is_some();
            match baton_pci::assign_bars(ecam, &function, &mut bars, windows) {
                Ok(()) if has_windows => {
                    log::info!(target: "pci", "{at}: BARs assigned from the host bridge's windows")
                }
                Ok(()) => {}
                Err(error) => log::warn!(target: "pci", "{at}: {error}; its device is left without it"),
            }
        }
        let device = Device {
            function,
            bars,
            owner: None,
            probing: [false; 6],
            stopped_command: None,
            is_handed_over: false,
            is_masked_for_jump: false,
        };
        log_device(&device);
        registry.devices.push(device);
    }
    registry.devices.sort_by_key(|device| device.function.address);
    log::info!(
        target: "pci",
        "{} function(s) on buses {:#04x}..={last_bus:#04x}, ECAM at {:#x}",
        registry.devices.len(),
        bridge.first_bus,
        bridge.ecam_start
    );
}

impl Registry {
    /// The physical range of the configuration space it reaches.
    fn ecam_range(&self) -> core::ops::Range<u64> {
        let start = self.ecam.physical_start;
        start..start + self.ecam.region.size_bytes()
    }
}

/// The registry, opened through the noted host bridge if enumeration has
/// not run yet.
fn opened(guard: &mut Option<Registry>) -> Result<&mut Registry, AdoptError> {
    if guard.is_none() {
        let bridge = HOST_BRIDGE.lock().ok_or(AdoptError::NoHostBridge)?;
        *guard = Some(open(bridge).ok_or(AdoptError::NoHostBridge)?);
    }
    guard.as_mut().ok_or(AdoptError::NoHostBridge)
}

/// The CPU address of `bar`: through the host bridge's windows, or its bus
/// address when there are none (firmware placed the BARs).
fn cpu_address(windows: &baton_pci::Windows, bar: &Bar) -> Option<u64> {
    if windows.memory32.is_some() || windows.memory64.is_some() || windows.io.is_some() {
        windows.cpu_address(bar)
    } else {
        Some(bar.address)
    }
}

fn bar_kind(kind: baton_procdesc::DeviceBarKind) -> BarKind {
    use baton_procdesc::DeviceBarKind as Recorded;
    match kind {
        Recorded::Io => BarKind::Io,
        Recorded::Memory32 { is_prefetchable } => BarKind::Memory32 { is_prefetchable },
        Recorded::Memory64 { is_prefetchable } => BarKind::Memory64 { is_prefetchable },
    }
}

fn recorded_kind(kind: BarKind) -> baton_procdesc::DeviceBarKind {
    use baton_procdesc::DeviceBarKind as Recorded;
    match kind {
        BarKind::Io => Recorded::Io,
        BarKind::Memory32 { is_prefetchable } => Recorded::Memory32 { is_prefetchable },
        BarKind::Memory64 { is_prefetchable } => Recorded::Memory64 { is_prefetchable },
    }
}

/// The devices `owner` drives, as its process description records them.
pub fn records_of(owner: &str) -> Vec<baton_procdesc::DeviceRecord> {
    let guard = REGISTRY.lock();
    let Some(registry) = guard.as_ref() else { return Vec::new() };
    let mine = registry.devices.iter().filter(|device| device.owner.as_deref() == Some(owner));
    mine.map(|device| {
        let at = device.function.address;
        // A BAR without an address is nothing a driver can use or a next
        // kernel must keep.
        let bars = device
            .bars
            .iter()
            .filter(|bar| bar.address != 0)
            .map(|bar| baton_procdesc::DeviceBar {
                index: bar.index,
                kind: recorded_kind(bar.kind),
                bus_address: bar.address,
                cpu_address: cpu_address(&registry.windows, bar).unwrap_or(bar.address),
                size_bytes: bar.size_bytes,
            })
            .collect();
        baton_procdesc::DeviceRecord {
            bus: at.bus,
            device: at.device,
            function: at.function,
            vendor_id: device.function.vendor_id,
            device_id: device.function.device_id,
            bars,
        }
    })
    .collect()
}

/// Takes back a device the previous kernel handed over running with its
/// driver `owner`: the manifest must give this kind of card to `owner`,
/// the function at the recorded address must be the same card, each BAR
/// must still hold the recorded address (read, never written), be a range
/// the function can decode (its own register, aligned to its size, over
/// no RAM, no configuration space and no other taken-back BAR) and be
/// forwarded whole to the recorded CPU address. Then `owner` drives it
/// again, before enumeration and without it.
///
/// What cannot be checked without writing to a live BAR is its size: a
/// record whose size was damaged into a larger aligned power of two that
/// still passes these checks would let the driver map registers past its
/// BAR (docs/handover.md, "Device records").
pub fn adopt(
    owner: &str,
    record: &baton_procdesc::DeviceRecord,
    manifest: &[crate::options::DeviceAssignment],
) -> Result<(), AdoptError> {
    let is_assigned = manifest.iter().any(|entry| {
        entry.service.as_str() == owner && (entry.vendor_id, entry.device_id) == (record.vendor_id, record.device_id)
    });
    if !is_assigned {
        return Err(AdoptError::NotAssigned);
    }
    let mut guard = REGISTRY.lock();
    let registry = opened(&mut guard)?;
    let at = Address::new(record.bus, record.device, record.function).ok_or(AdoptError::Absent)?;
    if registry.devices.iter().any(|device| device.function.address == at) {
        return Err(AdoptError::Taken);
    }
    let function = Function::read(&registry.ecam, at).ok_or(AdoptError::Absent)?;
    if (function.vendor_id, function.device_id) != (record.vendor_id, record.device_id) {
        return Err(AdoptError::OtherCard { vendor_id: function.vendor_id, device_id: function.device_id });
    }
    let ecam = registry.ecam_range();
    let mut bars: ArrayVec<Bar, 6> = ArrayVec::new();
    for recorded in &record.bars {
        let bar = Bar {
            index: recorded.index,
            kind: bar_kind(recorded.kind),
            address: recorded.bus_address,
            size_bytes: recorded.size_bytes,
        };
        let impossible = AdoptError::ImpossibleBar { index: bar.index };
        if usize::from(bar.index) >= function.bar_count()
            || bar.address == 0
            || !bar.address.is_multiple_of(bar.size_bytes)
        {
            return Err(impossible);
        }
        baton_pci::check_programmed(&registry.ecam, at, &bar).map_err(|found| AdoptError::BarMoved {
            index: bar.index,
            found,
            recorded: bar.address,
        })?;
        let last = Bar { address: bar.address + (bar.size_bytes - 1), ..bar };
        let is_forwarded = cpu_address(&registry.windows, &bar) == Some(recorded.cpu_address)
            && cpu_address(&registry.windows, &last) == Some(recorded.cpu_address + (bar.size_bytes - 1));
        if !is_forwarded {
            return Err(AdoptError::NotForwarded { index: bar.index });
        }
        if bar.is_memory() {
            let cpu = recorded.cpu_address..recorded.cpu_address + bar.size_bytes;
            let taken = registry
                .devices
                .iter()
                .flat_map(|device| device.bars.iter())
                .chain(bars.iter())
                .filter(|other| other.is_memory())
                .filter_map(|other| Some((cpu_address(&registry.windows, other)?, other.size_bytes)));
            let overlaps_taken = taken.clone().any(|(start, size)| start < cpu.end && cpu.start < start + size);
            let overlaps_ecam = ecam.start < cpu.end && cpu.start < ecam.end;
            if overlaps_taken || overlaps_ecam || crate::mm::overlaps_ram(cpu.start, bar.size_bytes) {
                return Err(impossible);
            }
        }
        bars.push(bar);
    }
    let owner = Some(alloc::string::String::from(owner));
    let device = Device {
        function,
        bars,
        owner,
        probing: [false; 6],
        stopped_command: None,
        is_handed_over: true,
        is_masked_for_jump: false,
    };
    registry.devices.push(device);
    Ok(())
}

/// Stops and gives up the devices `owner` took back with [`adopt`]: its
/// resumption failed after all, and its memory is about to be freed.
pub fn give_back(owner: &str) {
    stop_owned_by(owner, "is not resumed after all");
    if let Some(registry) = REGISTRY.lock().as_mut() {
        registry.devices.retain(|device| device.owner.as_deref() != Some(owner));
    }
}

/// On a KHO boot where a driver could not be resumed: every function the
/// manifest names that no resumed driver took back is stopped at once,
/// before any memory of the previous kernel is freed. The old kernel
/// leaves a resumed driver's device running, so one whose record was lost
/// or refused may still be writing into that driver's old memory; its
/// next instance resets it.
pub fn stop_orphans(manifest: &[crate::options::DeviceAssignment]) {
    if manifest.is_empty() {
        return;
    }
    let mut guard = REGISTRY.lock();
    let Ok(registry) = opened(&mut guard) else { return };
    let Some(bridge) = *HOST_BRIDGE.lock() else { return };
    let Some(last_bus) = bridge.last_reachable_bus() else { return };
    let mut functions = Vec::new();
    baton_pci::enumerate(&registry.ecam, bridge.first_bus..=last_bus, |function| functions.push(function));
    for function in functions {
        let is_named =
            manifest.iter().any(|entry| (entry.vendor_id, entry.device_id) == (function.vendor_id, function.device_id));
        if !is_named || registry.devices.iter().any(|device| device.function.address == function.address) {
            continue;
        }
        stop_function(&mut registry.ecam, function.address);
        log::info!(target: "pci", "{}: DMA stopped (its driver was not resumed)", function.address);
    }
}

/// Runs `action` on `owner`'s function at `address`.
fn with_owned<T>(
    owner: &str,
    address: baton_abi::PciAddress,
    action: impl FnOnce(&mut Ecam, &baton_pci::Windows, &mut Device) -> Result<T, PciError>,
) -> Result<T, PciError> {
    // Before enumeration only devices handed over with their drivers are
    // known.
    let missing = if is_discovered() { PciError::NotFound } else { PciError::NotEnumerated };
    let mut guard = REGISTRY.lock();
    let registry = guard.as_mut().ok_or(missing)?;
    let at = Address::new(address.bus(), address.device(), address.function()).ok_or(missing)?;
    let device = registry.devices.iter_mut().find(|device| device.function.address == at).ok_or(missing)?;
    if device.owner.as_deref() != Some(owner) {
        return Err(PciError::NotOwner);
    }
    action(&mut registry.ecam, &registry.windows, device)
}

/// `device_owned(index)`: the `index`-th function given to `owner`.
pub fn owned(owner: &str, index: u64) -> Result<baton_abi::PciAddress, PciError> {
    let missing = if is_discovered() { PciError::NotFound } else { PciError::NotEnumerated };
    let guard = REGISTRY.lock();
    let devices = guard.as_ref().map_or(&[][..], |registry| registry.devices.as_slice());
    let mut mine = devices.iter().filter(|device| device.owner.as_deref() == Some(owner));
    let device = mine.nth(usize::try_from(index).unwrap_or(usize::MAX)).ok_or(missing)?;
    let at = device.function.address;
    Ok(baton_abi::PciAddress::new(at.bus, at.device, at.function))
}

/// `device_map`: the physical address of `[offset, offset + length)` of
/// memory BAR `bar` of `owner`'s function.
pub fn bar_range(
    owner: &str,
    address: baton_abi::PciAddress,
    bar: u8,
    offset: u64,
    length: u64,
) -> Result<u64, PciError> {
    with_owned(owner, address, |ecam, windows, device| {
        let found =
            device.bars.iter().find(|found| found.index == bar && found.is_memory()).ok_or(PciError::NoSuchBar)?;
        if found.address == 0 {
            return Err(PciError::NoSuchBar);
        }
        let end = offset.checked_add(length).ok_or(PciError::PastTheEnd)?;
        if end > found.size_bytes {
            return Err(PciError::PastTheEnd);
        }
        if interrupts::is_kernel_owned(ecam, device, bar, offset, length) {
            return Err(PciError::KernelOwned);
        }
        let start = cpu_address(windows, found).ok_or(PciError::NoSuchBar)?;
        Ok(start + offset)
    })
}

/// The BAR (and whether its upper half) whose register is at `offset`.
fn bar_register(device: &Device, offset: u16) -> Option<(usize, Option<&Bar>, bool)> {
    let register = usize::from(offset.checked_sub(baton_pci::register::BAR0)? / 4);
    if register >= device.function.bar_count() {
        return None;
    }
    let lower = device.bars.iter().find(|bar| usize::from(bar.index) == register);
    let upper = device
        .bars
        .iter()
        .find(|bar| usize::from(bar.index) + 1 == register && matches!(bar.kind, BarKind::Memory64 { .. }));
    Some(match (lower, upper) {
        (Some(bar), _) => (register, Some(bar), false),
        (None, Some(bar)) => (register, Some(bar), true),
        (None, None) => (register, None, false),
    })
}

/// What a BAR register reads while its owner probes its size.
fn size_mask(bar: Option<&Bar>, is_upper: bool) -> u32 {
    let Some(bar) = bar else { return 0 };
    let mask = !(bar.size_bytes - 1);
    if is_upper {
        return (mask >> 32) as u32;
    }
    let flags = match bar.kind {
        BarKind::Io => 0x1,
        BarKind::Memory32 { is_prefetchable } => u32::from(is_prefetchable) << 3,
        BarKind::Memory64 { is_prefetchable } => 0x4 | (u32::from(is_prefetchable) << 3),
    };
    let low = if matches!(bar.kind, BarKind::Io) { mask as u32 & !0x3 } else { mask as u32 & !0xf };
    low | flags
}

/// `device_config_read`: a register of `owner`'s function; BARs as the
/// kernel placed them, or their size mask during a probe.
pub fn config_read(owner: &str, address: baton_abi::PciAddress, offset: u16) -> Result<u32, PciError> {
    with_owned(owner, address, |ecam, _, device| {
        let at = device.function.address;
        match bar_register(device, offset) {
            Some((register, bar, is_upper)) if device.probing[register] => Ok(size_mask(bar, is_upper)),
            _ => Ok(ecam.read(at, offset)),
        }
    })
}

/// `device_config_write`: see `Syscall::DeviceConfigWrite`.
pub fn config_write(owner: &str, address: baton_abi::PciAddress, offset: u16, value: u32) -> Result<(), PciError> {
    with_owned(owner, address, |ecam, _, device| {
        let at = device.function.address;
        if let Some((register, _, _)) = bar_register(device, offset) {
            // A size probe starts with all-ones and ends with any other
            // write (drivers restore what they read); the BAR itself never
            // moves.
            device.probing[register] = value == u32::MAX;
            return Ok(());
        }
        if offset == baton_pci::register::COMMAND_STATUS {
            use baton_pci::command::{BUS_MASTER, INTX_DISABLE, IO_SPACE, MEMORY_SPACE};
            let allowed = IO_SPACE | MEMORY_SPACE | BUS_MASTER | INTX_DISABLE;
            let current = ecam.read16(at, offset);
            let command = (current & !allowed) | (value as u16 & allowed);
            ecam.write_command(at, command);
            return Ok(());
        }
        if offset < 0x40 || baton_pci::msix::is_interrupt_register(&device.function, offset) {
            return Err(PciError::ReadOnly);
        }
        ecam.write(at, offset, value);
        Ok(())
    })
}

/// Stops DMA of every function `owner` drives (it ended: its memory is
/// about to be freed, and without an IOMMU a device that still masters the
/// bus could write into whatever the memory becomes). Bus mastering and
/// decoding are switched off; the owner's next instance switches them on
/// again.
pub fn stop_devices_of(owner: &str) {
    stop_owned_by(owner, "ended");
}

/// Stops every function `owner` drives, saying why in the log.
fn stop_owned_by(owner: &str, why: &str) {
    let mut guard = REGISTRY.lock();
    let Some(registry) = guard.as_mut() else { return };
    for device in registry.devices.iter_mut().filter(|device| device.owner.as_deref() == Some(owner)) {
        stop(&mut registry.ecam, device);
        log::info!(target: "pci", "{}: DMA stopped ('{owner}' {why})", device.function.address);
    }
}

/// Stops DMA, before the jump to the next kernel, of every assigned
/// function whose driver restarts there (`is_resumed` says which do not):
/// that driver's memory is not its own any more. A resumed driver's
/// device keeps running through the jump, into memory that is handed over
/// with it.
pub fn stop_devices_for_jump(is_resumed: impl Fn(&str) -> bool) {
    let mut guard = REGISTRY.lock();
    let Some(registry) = guard.as_mut() else { return };
    for device in registry.devices.iter_mut() {
        let Some(owner) = device.owner.as_deref() else { continue };
        if is_resumed(owner) {
            // Running on, its interrupts held as pending bits until the
            // next kernel routes them again.
            device.is_masked_for_jump = interrupts::mask(&mut registry.ecam, device);
            continue;
        }
        device.stopped_command =
            Some(registry.ecam.read16(device.function.address, baton_pci::register::COMMAND_STATUS));
        stop(&mut registry.ecam, device);
    }
}

/// The jump did not happen: the devices [`stop_devices_for_jump`] stopped run
/// again as their drivers left them.
pub fn restart_stopped_devices() {
    let mut guard = REGISTRY.lock();
    let Some(registry) = guard.as_mut() else { return };
    for device in registry.devices.iter_mut() {
        if let Some(command) = device.stopped_command.take() {
            registry.ecam.write_command(device.function.address, command);
        }
        if core::mem::take(&mut device.is_masked_for_jump) {
            interrupts::unmask(&mut registry.ecam, device);
        }
    }
}

fn stop(ecam: &mut Ecam, device: &mut Device) {
    stop_function(ecam, device.function.address);
    device.probing = [false; 6];
}

/// Bus mastering and decoding off, legacy interrupts disabled, its
/// message interrupts routed nowhere.
fn stop_function(ecam: &mut Ecam, at: Address) {
    interrupts::forget_function(at);
    use baton_pci::command::{BUS_MASTER, INTX_DISABLE, IO_SPACE, MEMORY_SPACE};
    let command = ecam.read16(at, baton_pci::register::COMMAND_STATUS);
    ecam.write_command(at, (command & !(BUS_MASTER | IO_SPACE | MEMORY_SPACE)) | INTX_DISABLE);
}

fn log_device(Device { function, bars, .. }: &Device) {
    let mut line = alloc::format!(
        "{} {:04x}:{:04x} {}",
        function.address,
        function.vendor_id,
        function.device_id,
        baton_pci::class_name(function.class, function.subclass)
    );
    for bar in bars {
        let kind = match bar.kind {
            BarKind::Io => "I/O",
            BarKind::Memory32 { is_prefetchable: false } => "32-bit memory",
            BarKind::Memory32 { is_prefetchable: true } => "32-bit prefetchable memory",
            BarKind::Memory64 { is_prefetchable: false } => "64-bit memory",
            BarKind::Memory64 { is_prefetchable: true } => "64-bit prefetchable memory",
        };
        line.push_str(&alloc::format!(", BAR{} {kind} at {:#x} ({:#x} bytes)", bar.index, bar.address, bar.size_bytes));
    }
    for (id, name) in [(baton_pci::capability::MSI, "MSI"), (baton_pci::capability::MSI_X, "MSI-X")] {
        if function.capability(id).is_some() {
            line.push_str(", ");
            line.push_str(name);
        }
    }
    if function.has_broken_capabilities {
        line.push_str(", capability list broken (cut short)");
    }
    log::info!(target: "pci", "{line}");
}

/// Logs the function's first 256 bytes of configuration space and what
/// each BAR register reads after all-ones is written (decoding off while
/// probing), in the form the host tests load.
fn record(ecam: &mut Ecam, function: &Function) {
    let at = function.address;
    let mut config = alloc::string::String::new();
    for offset in (0..256).step_by(4) {
        for byte in ecam.read(at, offset).to_le_bytes() {
            config.push_str(&alloc::format!("{byte:02x}"));
        }
    }
    let command = ecam.read16(at, baton_pci::register::COMMAND_STATUS);
    let decoding = baton_pci::command::MEMORY_SPACE | baton_pci::command::IO_SPACE;
    ecam.write_command(at, command & !decoding);
    let mut probes = alloc::string::String::new();
    for index in 0..6u16 {
        let offset = baton_pci::register::BAR0 + 4 * index;
        let probe = if usize::from(index) < function.bar_count() {
            let original = ecam.read(at, offset);
            ecam.write(at, offset, u32::MAX);
            let probe = ecam.read(at, offset);
            ecam.write(at, offset, original);
            probe
        } else {
            0
        };
        if index > 0 {
            probes.push(',');
        }
        probes.push_str(&alloc::format!("{probe:x}"));
    }
    ecam.write_command(at, command);
    log::info!(target: "pci", "pci: record {at} config={config} probes={probes}");
}
