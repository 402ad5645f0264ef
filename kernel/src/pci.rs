//! PCI: the host bridge's configuration space (ECAM), the functions behind
//! it, and addresses for the BARs firmware left unassigned (a direct boot
//! on aarch64 has no firmware to do it). Found once the system is quiet,
//! logged function by function.
//!
//! The host bridge comes from ACPI's MCFG on x86_64 and from the device
//! tree's `pci-host-ecam-generic` node on aarch64 (carried in the boot
//! description across updates). A missing or unusable one is one logged
//! line and no devices; nothing here can stop the boot.

use alloc::vec::Vec;
use arrayvec::ArrayVec;
use baton_arch::mmio::MmioRegion;
use baton_pci::{Address, Bar, BarKind, ConfigAccess, Function, HostBridge};

/// One function found, with its sized BARs (bus addresses; the CPU address
/// of each is its window's translation, the same on every machine Baton
/// runs on today).
#[derive(Debug, Clone)]
pub struct Device {
    /// What its header says.
    pub function: Function,
    /// Its BARs, programmed.
    pub bars: ArrayVec<Bar, 6>,
}

/// What enumeration found.
static DEVICES: spin::Once<Vec<Device>> = spin::Once::new();

/// Configuration space through the ECAM window.
struct Ecam {
    region: MmioRegion,
    first_bus: u8,
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
/// without an address from the bridge's windows, and logs every function.
/// `is_recording` also logs each function's configuration space and BAR
/// probes as the host tests read them (`pci: record ...`).
pub fn discover(bridge: Option<HostBridge>, is_recording: bool) {
    DEVICES.call_once(|| match bridge {
        None => {
            log::info!(target: "pci", "no PCI host bridge described: no devices");
            Vec::new()
        }
        Some(bridge) => enumerate(bridge, is_recording),
    });
}

/// `pci=off`: PCI stays as firmware left it (said once).
pub fn leave_alone() {
    DEVICES.call_once(|| {
        log::info!(target: "pci", "pci=off: PCI is left alone");
        Vec::new()
    });
}

fn enumerate(bridge: HostBridge, is_recording: bool) -> Vec<Device> {
    let Some(last_bus) = bridge.last_reachable_bus() else {
        log::warn!(target: "pci", "the ECAM region at {:#x} covers no bus; no devices", bridge.ecam_start);
        return Vec::new();
    };
    let buses = u64::from(last_bus) - u64::from(bridge.first_bus) + 1;
    let size_bytes = buses * baton_pci::BUS_CONFIG_BYTES;
    let Some(virt) = crate::mm::device_address(bridge.ecam_start, size_bytes) else {
        log::warn!(target: "pci", "the ECAM region at {:#x} is out of reach; no devices", bridge.ecam_start);
        return Vec::new();
    };
    // SAFETY: `device_address` mapped `size_bytes` of the ECAM region as
    // device memory for the kernel's lifetime, and only this module
    // touches configuration space.
    let region = unsafe { MmioRegion::new(virt, size_bytes) };
    let mut ecam = Ecam { region, first_bus: bridge.first_bus };
    let mut functions = Vec::new();
    baton_pci::enumerate(&ecam, bridge.first_bus..=last_bus, |function| functions.push(function));
    let mut sized = Vec::new();
    for function in functions {
        if is_recording {
            record(&mut ecam, &function);
        }
        let bars = baton_pci::size_bars(&mut ecam, &function);
        sized.push((function, bars));
    }
    // What firmware (or the previous kernel) placed stays where it is, and
    // nothing is placed over it.
    let mut windows = bridge.windows;
    for bar in sized.iter().flat_map(|(_, bars)| bars.iter()).filter(|bar| bar.address != 0) {
        windows.reserve(bar);
    }
    let mut devices = Vec::new();
    for (function, mut bars) in sized {
        let at = function.address;
        if bars.iter().any(|bar| bar.address == 0) {
            let has_windows = windows.memory32.is_some() || windows.memory64.is_some() || windows.io.is_some();
            match baton_pci::assign_bars(&mut ecam, &function, &mut bars, &mut windows) {
                Ok(()) if has_windows => {
                    log::info!(target: "pci", "{at}: BARs assigned from the host bridge's windows")
                }
                Ok(()) => {}
                Err(error) => log::warn!(target: "pci", "{at}: {error}; its device is left without it"),
            }
        }
        let device = Device { function, bars };
        log_device(&device);
        devices.push(device);
    }
    log::info!(
        target: "pci",
        "{} function(s) on buses {:#04x}..={last_bus:#04x}, ECAM at {:#x}",
        devices.len(),
        bridge.first_bus,
        bridge.ecam_start
    );
    devices
}

fn log_device(Device { function, bars }: &Device) {
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
