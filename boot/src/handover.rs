//! Baton's boot description: the sub-FDT through which a kernel tells the
//! next one everything it would otherwise learn from firmware (memory map,
//! scratch, command line, firmware pointers, framebuffer, boot modules) plus
//! who owns the preserved memory.
//!
//! It is one KHO user like any other (`baton-boot` in the root FDT), and the
//! KHO entry also receives its address directly, so a damaged root FDT or
//! chunk list can be bypassed while the machine is still described. All
//! numbers are native-endian, as in the rest of the KHO FDT.
//!
//! The writer runs in the outgoing kernel (with a heap); the parser runs in
//! the KHO entry before any heap exists and never allocates.

use crate::info::{
    BootInfo, BootPath, BootWarning, Framebuffer, InterruptController, KhoBoot, MemoryKind, PhysRange, ScratchArea,
    SerialPort,
};
use alloc::vec::Vec;
use arrayvec::{ArrayString, ArrayVec};
use baton_kho::fdt::{SubFdtWriter, native_u32, native_u64};

/// The boot description's `compatible`.
pub const COMPATIBLE: &str = "baton,boot-v1";
/// Its name in the KHO root FDT.
pub const USER_NAME: &str = "baton-boot";

/// What the writer needs beyond the boot description of the running kernel.
#[derive(Debug, Clone)]
pub struct HandoverExtras<'a> {
    /// The running kernel's version.
    pub kernel_version: &'a str,
    /// KHO boots so far plus one.
    pub generation: u32,
    /// The cycle counter at freeze.
    pub freeze_cycles: u64,
    /// Scratch regions.
    pub scratch: &'a [ScratchArea],
    /// Who owns the preserved memory, as runs of folios.
    pub owners: &'a [OwnedRun<'a>],
    /// Cycle-counter ticks per second, so the next kernel need not measure.
    pub cycle_frequency_hz: u64,
    /// The timer's rate (x86_64 APIC ticks per second; 0 when not known).
    pub timer_ticks_per_second: u64,
    /// The most recent updates, oldest first (at most
    /// [`crate::info::HISTORY_ENTRIES`] are written).
    pub history: &'a [UpdateRecord],
    /// The PCI host bridge the running kernel found where the entry did
    /// not describe one (x86_64's MCFG, read from ACPI): the next kernel
    /// then has it at once, before it reads ACPI itself.
    pub pci_host: Option<baton_pci::HostBridge>,
}

/// One update the machine went through, carried from kernel to kernel so
/// the last one can show them all (`update-history`: 64 bytes each, native
/// endian: generation, blackout in µs, preserved bytes, sub-FDTs, then the
/// versions before and after as 16 NUL-padded bytes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateRecord {
    /// 1 for the first update.
    pub generation: u32,
    /// From freeze to every service running again, in µs.
    pub blackout_us: u64,
    /// Bytes preserved across it.
    pub preserved_bytes: u64,
    /// Sub-FDTs handed over.
    pub sub_fdts: u32,
    /// The version that handed over.
    pub from: ArrayString<16>,
    /// The version that took over.
    pub to: ArrayString<16>,
}

const HISTORY_RECORD_BYTES: usize = 64;

fn push_version(bytes: &mut Vec<u8>, version: &str) {
    let mut field = [0u8; 16];
    let length = version.len().min(16);
    field[..length].copy_from_slice(&version.as_bytes()[..length]);
    bytes.extend_from_slice(&field);
}

fn version_field(bytes: &[u8]) -> Option<ArrayString<16>> {
    let text = core::str::from_utf8(bytes.split(|&byte| byte == 0).next()?).ok()?;
    ArrayString::from(text).ok()
}

/// Reads an `update-history` property; `None` when it is malformed.
pub fn parse_history(value: &[u8]) -> Option<ArrayVec<UpdateRecord, { crate::info::HISTORY_ENTRIES }>> {
    if !value.len().is_multiple_of(HISTORY_RECORD_BYTES) {
        return None;
    }
    let mut history = ArrayVec::new();
    // Only the most recent entries are kept.
    let skip = (value.len() / HISTORY_RECORD_BYTES).saturating_sub(crate::info::HISTORY_ENTRIES);
    for record in value.chunks_exact(HISTORY_RECORD_BYTES).skip(skip) {
        let word = |index: usize| native_u64(&record[8 * index..8 * index + 8]);
        history.push(UpdateRecord {
            generation: u32::try_from(word(0)?).ok()?,
            blackout_us: word(1)?,
            preserved_bytes: word(2)?,
            sub_fdts: u32::try_from(word(3)?).ok()?,
            from: version_field(&record[32..48])?,
            to: version_field(&record[48..64])?,
        });
    }
    Some(history)
}

/// `folios` consecutive folios of `2^order` pages from `phys`, owned by the
/// service (or kernel user) `owner`. Which of them are preserved is the
/// bitmaps' business; the run says who may take them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedRun<'a> {
    /// Physical address of the first folio.
    pub phys: u64,
    /// The folios' order.
    pub order: u32,
    /// How many folios.
    pub folios: u64,
    /// The owner's name.
    pub owner: &'a str,
}

impl OwnedRun<'_> {
    /// One past the run's last byte.
    pub fn end(&self) -> u64 {
        self.phys.saturating_add(self.folios.saturating_mul(4096 << self.order.min(40)))
    }
}

/// Entries of the `timeline` property: cycle-counter readings the outgoing
/// kernel takes along the update, patched in place just before the jump.
pub const TIMELINE_ENTRIES: usize = 8;
/// `timeline` entry: services were told to prepare.
pub const TIMELINE_PREPARE: usize = 0;
/// `timeline` entry: every service acknowledged.
pub const TIMELINE_PREPARED: usize = 1;
/// `timeline` entry: the handover was finalised (serialised).
pub const TIMELINE_FINALIZED: usize = 2;
/// `timeline` entry: the jump is about to happen (image, control page and
/// tables ready).
pub const TIMELINE_JUMP: usize = 3;
/// `timeline` entry: the trampoline starts copying (written by it).
pub const TIMELINE_COPY_START: usize = 4;
/// `timeline` entry: the trampoline has copied the image (written by it).
pub const TIMELINE_COPY_END: usize = 5;
// The trampoline writes the copy's two readings as adjacent words.
const _: () = assert!(TIMELINE_COPY_END == TIMELINE_COPY_START + 1);

/// Why a boot description could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDescriptionError {
    /// Not a valid FDT.
    NotAnFdt,
    /// The compatible string is not [`COMPATIBLE`].
    Incompatible,
    /// A property is missing or has the wrong size.
    BadProperty(&'static str),
}

impl core::fmt::Display for BootDescriptionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootDescriptionError::NotAnFdt => f.write_str("boot description is not a valid FDT"),
            BootDescriptionError::Incompatible => write!(f, "boot description is not {COMPATIBLE}"),
            BootDescriptionError::BadProperty(name) => write!(f, "boot description property '{name}' is malformed"),
        }
    }
}

fn memory_kind_code(kind: MemoryKind) -> u64 {
    match kind {
        MemoryKind::Usable => 1,
        MemoryKind::Reserved => 2,
        MemoryKind::AcpiReclaimable => 3,
        MemoryKind::AcpiNvs => 4,
        MemoryKind::Unusable => 5,
        MemoryKind::BootloaderReclaimable => 6,
        MemoryKind::KernelAndModules => 7,
        MemoryKind::Framebuffer => 8,
    }
}

fn memory_kind(code: u64) -> MemoryKind {
    match code {
        1 => MemoryKind::Usable,
        3 => MemoryKind::AcpiReclaimable,
        4 => MemoryKind::AcpiNvs,
        5 => MemoryKind::Unusable,
        // Bootloader memory was reclaimed by the kernel that ran before.
        6 => MemoryKind::Usable,
        7 => MemoryKind::KernelAndModules,
        8 => MemoryKind::Framebuffer,
        _ => MemoryKind::Reserved,
    }
}

fn push_u64(bytes: &mut Vec<u8>, value: u64) {
    bytes.extend_from_slice(&value.to_ne_bytes());
}

fn push_u32(bytes: &mut Vec<u8>, value: u32) {
    bytes.extend_from_slice(&value.to_ne_bytes());
}

/// Writes the boot description for the next kernel.
pub fn write(info: &BootInfo, extras: &HandoverExtras<'_>) -> Result<Vec<u8>, baton_kho::fdt::FdtWriteError> {
    let mut writer = SubFdtWriter::new()?;
    writer.property_string("compatible", COMPATIBLE)?;
    writer.property_string("kernel-version", extras.kernel_version)?;
    writer.property_u32("generation", extras.generation)?;
    writer.property_u64("freeze-cycles", extras.freeze_cycles)?;
    writer.property_u64("cycle-frequency-hz", extras.cycle_frequency_hz)?;
    writer.property_u64("timer-ticks-per-second", extras.timer_ticks_per_second)?;
    writer.property("timeline", &[0u8; 8 * TIMELINE_ENTRIES])?;
    writer.property_string("command-line", &info.command_line)?;

    let mut map = Vec::new();
    for region in &info.memory_map {
        // The kernel image and modules are described elsewhere; as RAM
        // they are usable for the next kernel's purposes.
        push_u64(&mut map, region.range.start);
        push_u64(&mut map, region.range.size_bytes());
        push_u64(&mut map, memory_kind_code(region.kind));
    }
    writer.property("memory-map", &map)?;

    let mut scratch = Vec::new();
    for area in extras.scratch {
        let (kind, range) = match *area {
            ScratchArea::Low(range) => (0, range),
            ScratchArea::Global(range) => (1, range),
            ScratchArea::Node(node, range) => (2 + u64::from(node), range),
        };
        push_u64(&mut scratch, range.start);
        push_u64(&mut scratch, range.size_bytes());
        push_u64(&mut scratch, kind);
    }
    writer.property("scratch", &scratch)?;

    let mut modules = Vec::new();
    let mut names = Vec::new();
    for module in &info.modules {
        push_u64(&mut modules, module.range.start);
        push_u64(&mut modules, module.range.size_bytes());
        names.extend_from_slice(module.name.as_bytes());
        names.push(0);
    }
    writer.property("modules", &modules)?;
    writer.property("module-names", &names)?;
    if let Some(file) = &info.kernel.file {
        let mut bytes = Vec::new();
        push_u64(&mut bytes, file.start);
        push_u64(&mut bytes, file.size_bytes());
        writer.property("kernel-file", &bytes)?;
    }
    if let Some(rsdp) = info.firmware.acpi_rsdp {
        writer.property_u64("acpi-rsdp", rsdp)?;
    }
    if let Some(tree) = &info.firmware.device_tree {
        let mut bytes = Vec::new();
        push_u64(&mut bytes, tree.start);
        push_u64(&mut bytes, tree.size_bytes());
        writer.property("device-tree", &bytes)?;
    }
    if let Some(table) = info.firmware.efi_system_table {
        writer.property_u64("efi-system-table", table)?;
    }
    if let Some(framebuffer) = &info.framebuffer {
        let mut bytes = Vec::new();
        push_u64(&mut bytes, framebuffer.phys);
        for value in [
            framebuffer.width,
            framebuffer.height,
            framebuffer.pitch_bytes,
            u32::from(framebuffer.bits_per_pixel),
            u32::from(framebuffer.red.0) | u32::from(framebuffer.red.1) << 8,
            u32::from(framebuffer.green.0) | u32::from(framebuffer.green.1) << 8,
            u32::from(framebuffer.blue.0) | u32::from(framebuffer.blue.1) << 8,
            0,
        ] {
            push_u32(&mut bytes, value);
        }
        writer.property("framebuffer", &bytes)?;
    }
    if let Some(serial) = info.serial {
        let mut bytes = Vec::new();
        let (kind, address) = match serial {
            SerialPort::Uart16550 { io_port } => (1, u64::from(io_port)),
            SerialPort::Pl011 { phys } => (2, phys),
        };
        push_u64(&mut bytes, kind);
        push_u64(&mut bytes, address);
        writer.property("serial", &bytes)?;
    }
    if let Some(controller) = info.interrupt_controller {
        let mut bytes = Vec::new();
        let (kind, first, second) = match controller {
            InterruptController::GicV2 { distributor, cpu_interface } => (2, distributor, cpu_interface),
            InterruptController::GicV3 { distributor, redistributor } => (3, distributor, redistributor),
        };
        for value in [kind, first, second] {
            push_u64(&mut bytes, value);
        }
        writer.property("interrupt-controller", &bytes)?;
    }
    if let Some(timer) = info.timer_interrupt {
        writer.property_u32("timer-interrupt", timer)?;
    }
    if let Some(frame) = info.msi_frame {
        writer.property_u64("msi-frame", frame)?;
    }
    if let Some(bridge) = info.pci_host.as_ref().or(extras.pci_host.as_ref()) {
        let mut bytes = Vec::new();
        let head = [bridge.ecam_start, bridge.ecam_size_bytes, u64::from(bridge.first_bus), u64::from(bridge.last_bus)];
        for value in head {
            push_u64(&mut bytes, value);
        }
        for window in [bridge.windows.io, bridge.windows.memory32, bridge.windows.memory64] {
            let (cpu, bus, size) =
                window.map_or((0, 0, 0), |window| (window.cpu_start, window.bus_start, window.size_bytes));
            for value in [cpu, bus, size] {
                push_u64(&mut bytes, value);
            }
        }
        writer.property("pci-host-bridge", &bytes)?;
    }

    let mut owners = Vec::new();
    let mut owner_names: Vec<&str> = Vec::new();
    for run in extras.owners {
        let index = match owner_names.iter().position(|name| *name == run.owner) {
            Some(index) => index,
            None => {
                owner_names.push(run.owner);
                owner_names.len() - 1
            }
        };
        push_u64(&mut owners, run.phys);
        push_u64(&mut owners, run.folios);
        push_u32(&mut owners, run.order);
        push_u32(&mut owners, index as u32);
    }
    let mut names = Vec::new();
    for name in owner_names {
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    writer.property("owned-runs", &owners)?;
    writer.property("owner-names", &names)?;

    let mut history = Vec::new();
    let skip = extras.history.len().saturating_sub(crate::info::HISTORY_ENTRIES);
    for record in &extras.history[skip..] {
        for value in
            [u64::from(record.generation), record.blackout_us, record.preserved_bytes, u64::from(record.sub_fdts)]
        {
            push_u64(&mut history, value);
        }
        push_version(&mut history, &record.from);
        push_version(&mut history, &record.to);
    }
    writer.property("update-history", &history)?;
    writer.finish()
}

fn records<const WORDS: usize>(value: &[u8]) -> Option<impl Iterator<Item = [u64; WORDS]> + '_> {
    value.len().is_multiple_of(8 * WORDS).then(|| {
        value.chunks_exact(8 * WORDS).map(|chunk| {
            let mut words = [0u64; WORDS];
            for (word, bytes) in words.iter_mut().zip(chunk.chunks_exact(8)) {
                *word = native_u64(bytes).unwrap_or(0);
            }
            words
        })
    })
}

/// Reads a boot description into `info` (whose path becomes [`BootPath::Kho`])
/// and returns the KHO part; `blob_phys` is where it lies.
pub fn parse(bytes: &[u8], blob_phys: u64, root_fdt: u64, info: &mut BootInfo) -> Result<(), BootDescriptionError> {
    let fdt = baton_kho::fdt::parse_fdt(bytes).map_err(|_| BootDescriptionError::NotAnFdt)?;
    let root = fdt.find_node("/").ok_or(BootDescriptionError::NotAnFdt)?;
    let property = |name: &'static str| root.property(name).map(|property| property.value);
    let string = |name: &'static str| {
        property(name)
            .and_then(|value| core::str::from_utf8(value.split(|&byte| byte == 0).next().unwrap_or(&[])).ok())
            .ok_or(BootDescriptionError::BadProperty(name))
    };
    if string("compatible")? != COMPATIBLE {
        return Err(BootDescriptionError::Incompatible);
    }
    info.path = BootPath::Kho;
    info.handover = Some(root_fdt);
    let mut kho = KhoBoot {
        root_fdt,
        boot_description: PhysRange::from_start_size(blob_phys, fdt.total_size() as u64).unwrap_or_default(),
        scratch: arrayvec::ArrayVec::new(),
        generation: property("generation")
            .and_then(native_u32)
            .ok_or(BootDescriptionError::BadProperty("generation"))?,
        freeze_cycles: property("freeze-cycles")
            .and_then(native_u64)
            .ok_or(BootDescriptionError::BadProperty("freeze-cycles"))?,
        previous_version: ArrayString::new(),
        cycle_frequency_hz: property("cycle-frequency-hz").and_then(native_u64).unwrap_or(0),
        timer_ticks_per_second: property("timer-ticks-per-second").and_then(native_u64).unwrap_or(0),
        timeline: [0; TIMELINE_ENTRIES],
        // Optional: a kernel from before it was added writes none.
        history: match property("update-history") {
            None => ArrayVec::new(),
            Some(value) => parse_history(value).ok_or(BootDescriptionError::BadProperty("update-history"))?,
        },
    };
    if let Some(value) = property("timeline").filter(|value| value.len() == 8 * TIMELINE_ENTRIES) {
        for (entry, bytes) in kho.timeline.iter_mut().zip(value.chunks_exact(8)) {
            *entry = native_u64(bytes).unwrap_or(0);
        }
    }
    let _ = kho.previous_version.try_push_str(string("kernel-version")?);
    info.set_command_line(string("command-line")?.as_bytes());

    let map = property("memory-map").and_then(records::<3>).ok_or(BootDescriptionError::BadProperty("memory-map"))?;
    for [start, size, kind] in map {
        match PhysRange::from_start_size(start, size) {
            Some(range) => info.add_memory_region(range, memory_kind(kind)),
            None => return Err(BootDescriptionError::BadProperty("memory-map")),
        }
    }
    let scratch = property("scratch").and_then(records::<3>).ok_or(BootDescriptionError::BadProperty("scratch"))?;
    for [start, size, kind] in scratch {
        let range = PhysRange::from_start_size(start, size).ok_or(BootDescriptionError::BadProperty("scratch"))?;
        let area = match kind {
            0 => ScratchArea::Low(range),
            1 => ScratchArea::Global(range),
            node => ScratchArea::Node((node - 2) as u32, range),
        };
        kho.scratch.try_push(area).map_err(|_| BootDescriptionError::BadProperty("scratch"))?;
    }
    let modules = property("modules").and_then(records::<2>).ok_or(BootDescriptionError::BadProperty("modules"))?;
    let mut names = property("module-names").unwrap_or(&[]).split(|&byte| byte == 0);
    for [start, size] in modules {
        let range = PhysRange::from_start_size(start, size).ok_or(BootDescriptionError::BadProperty("modules"))?;
        info.add_module(range, names.next().unwrap_or(&[]));
    }
    if let Some(value) = property("kernel-file") {
        let [start, size] = records::<2>(value)
            .and_then(|mut records| records.next())
            .ok_or(BootDescriptionError::BadProperty("kernel-file"))?;
        info.kernel.file = PhysRange::from_start_size(start, size);
    }
    info.firmware.acpi_rsdp = property("acpi-rsdp").and_then(native_u64);
    info.firmware.efi_system_table = property("efi-system-table").and_then(native_u64);
    if let Some(value) = property("device-tree") {
        let [start, size] = records::<2>(value)
            .and_then(|mut records| records.next())
            .ok_or(BootDescriptionError::BadProperty("device-tree"))?;
        info.firmware.device_tree = PhysRange::from_start_size(start, size);
    }
    if let Some(value) = property("framebuffer") {
        if value.len() != 40 {
            return Err(BootDescriptionError::BadProperty("framebuffer"));
        }
        let word = |index: usize| native_u32(&value[8 + 4 * index..12 + 4 * index]).unwrap_or(0);
        let channel = |index: usize| ((word(index) & 0xff) as u8, ((word(index) >> 8) & 0xff) as u8);
        info.framebuffer = Some(Framebuffer {
            phys: native_u64(&value[..8]).unwrap_or(0),
            width: word(0),
            height: word(1),
            pitch_bytes: word(2),
            bits_per_pixel: word(3) as u16,
            red: channel(4),
            green: channel(5),
            blue: channel(6),
        });
    }
    if let Some(value) = property("serial") {
        let [kind, address] = records::<2>(value)
            .and_then(|mut records| records.next())
            .ok_or(BootDescriptionError::BadProperty("serial"))?;
        info.serial = match kind {
            1 => Some(SerialPort::Uart16550 { io_port: address as u16 }),
            2 => Some(SerialPort::Pl011 { phys: address }),
            _ => None,
        };
    }
    if let Some(value) = property("interrupt-controller") {
        let [kind, first, second] = records::<3>(value)
            .and_then(|mut records| records.next())
            .ok_or(BootDescriptionError::BadProperty("interrupt-controller"))?;
        info.interrupt_controller = match kind {
            2 => Some(InterruptController::GicV2 { distributor: first, cpu_interface: second }),
            3 => Some(InterruptController::GicV3 { distributor: first, redistributor: second }),
            _ => None,
        };
    }
    info.timer_interrupt = property("timer-interrupt").and_then(native_u32);
    info.msi_frame = property("msi-frame").and_then(native_u64);
    if let Some(value) = property("pci-host-bridge") {
        let [ecam_start, ecam_size_bytes, first_bus, last_bus, windows @ ..] = records::<13>(value)
            .and_then(|mut records| records.next())
            .ok_or(BootDescriptionError::BadProperty("pci-host-bridge"))?;
        let (Ok(first_bus), Ok(last_bus)) = (u8::try_from(first_bus), u8::try_from(last_bus)) else {
            return Err(BootDescriptionError::BadProperty("pci-host-bridge"));
        };
        // The windows as they were described: BARs the previous kernel
        // assigned keep their addresses (it is never redone).
        let window = |index: usize| {
            let [cpu, bus, size] = [windows[index * 3], windows[index * 3 + 1], windows[index * 3 + 2]];
            (size != 0).then(|| baton_pci::Window::new(cpu, bus, size))
        };
        let windows = baton_pci::Windows { io: window(0), memory32: window(1), memory64: window(2) };
        info.pci_host = Some(baton_pci::HostBridge { ecam_start, ecam_size_bytes, first_bus, last_bus, windows });
    }
    if info.memory_map.is_empty() {
        info.warn(BootWarning::Malformed("boot description has an empty memory map"));
    }
    info.kho = Some(kho);
    Ok(())
}

/// Where the `timeline` property's value starts in a boot description, so
/// the writer can patch it in place just before the jump.
pub fn timeline_offset(bytes: &[u8]) -> Option<usize> {
    let fdt = baton_kho::fdt::parse_fdt(bytes).ok()?;
    let value = fdt.find_node("/")?.property("timeline")?.value;
    (value.len() == 8 * TIMELINE_ENTRIES).then(|| value.as_ptr() as usize - bytes.as_ptr() as usize)
}

/// Who owns the preserved memory, as recorded in a boot description. Reads
/// `owned-runs` (24-byte records: phys u64, folios u64, order u32, owner
/// index u32) and, from Baton 0.1 kernels, `owners` (16-byte records of one
/// folio each: phys u64, order u32, owner index u32).
pub fn owners(bytes: &[u8]) -> Option<impl Iterator<Item = OwnedRun<'_>> + '_> {
    let fdt = baton_kho::fdt::parse_fdt(bytes).ok()?;
    let root = fdt.find_node("/")?;
    let names = root.property("owner-names")?.value;
    let (table, record_bytes) = match root.property("owned-runs") {
        Some(property) => (property.value, 24),
        None => (root.property("owners")?.value, 16),
    };
    if table.len() % record_bytes != 0 {
        return None;
    }
    Some(table.chunks_exact(record_bytes).filter_map(move |entry| {
        let phys = native_u64(&entry[..8])?;
        let (folios, rest) = match record_bytes {
            24 => (native_u64(&entry[8..16])?, &entry[16..]),
            _ => (1, &entry[8..]),
        };
        let order = native_u32(&rest[..4])?;
        let index = native_u32(&rest[4..8])? as usize;
        let name = names.split(|&byte| byte == 0).nth(index)?;
        let run = OwnedRun { phys, order, folios, owner: core::str::from_utf8(name).ok()? };
        (folios > 0 && order <= 40).then_some(run)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{BootModule, MemoryRegion};

    fn described() -> BootInfo {
        let mut info = BootInfo::new(BootPath::Pvh);
        info.add_memory_region(PhysRange { start: 0, end: 0x9_f000 }, MemoryKind::Usable);
        info.add_memory_region(PhysRange { start: 0x10_0000, end: 0x4000_0000 }, MemoryKind::Usable);
        info.add_memory_region(PhysRange { start: 0xfec0_0000, end: 0xfec0_1000 }, MemoryKind::Reserved);
        info.set_command_line(b"kho_scratch=64M,64M,32M console=serial");
        info.add_module(PhysRange { start: 0x100_0000, end: 0x180_0000 }, b"baton-0.2.0.elf");
        info.kernel.file = Some(PhysRange { start: 0x200_0000, end: 0x260_0000 });
        info.firmware.acpi_rsdp = Some(0xf_5a40);
        info.firmware.device_tree = Some(PhysRange { start: 0x4800_0000, end: 0x4810_0000 });
        info.framebuffer = Some(Framebuffer {
            phys: 0xfd00_0000,
            width: 1024,
            height: 768,
            pitch_bytes: 4096,
            bits_per_pixel: 32,
            red: (16, 8),
            green: (8, 8),
            blue: (0, 8),
        });
        info.serial = Some(SerialPort::Pl011 { phys: 0x900_0000 });
        info.interrupt_controller =
            Some(InterruptController::GicV3 { distributor: 0x800_0000, redistributor: 0x80a_0000 });
        info.timer_interrupt = Some(27);
        info.msi_frame = Some(0x802_0000);
        info.pci_host = Some(baton_pci::HostBridge {
            ecam_start: 0x40_1000_0000,
            ecam_size_bytes: 0x1000_0000,
            first_bus: 0,
            last_bus: 255,
            windows: baton_pci::Windows {
                io: Some(baton_pci::Window::new(0x3eff_0000, 0, 0x1_0000)),
                memory32: Some(baton_pci::Window::new(0x1000_0000, 0x1000_0000, 0x2eff_0000)),
                memory64: None,
            },
        });
        info
    }

    #[test]
    fn round_trip_keeps_everything_the_next_kernel_needs() {
        let info = described();
        let scratch = [
            ScratchArea::Low(PhysRange { start: 0x3c00_0000, end: 0x3e00_0000 }),
            ScratchArea::Node(0, PhysRange { start: 0x3a00_0000, end: 0x3c00_0000 }),
        ];
        let runs = [
            OwnedRun { phys: 0x2000_0000, order: 4, folios: 1, owner: "kvstore" },
            OwnedRun { phys: 0x2100_0000, order: 0, folios: 262_144, owner: "counter" },
            OwnedRun { phys: 0x6200_0000, order: 0, folios: 3, owner: "kvstore" },
        ];
        let history = [update_record(1, "0.1.0", "0.2.0"), update_record(2, "0.2.0", "a-very-long-version-string")];
        let extras = HandoverExtras {
            kernel_version: "0.1.0",
            generation: 3,
            freeze_cycles: 123_456_789,
            scratch: &scratch,
            owners: &runs,
            cycle_frequency_hz: 2_400_000_000,
            timer_ticks_per_second: 1_000_000_000,
            history: &history,
            pci_host: None,
        };
        let mut bytes = write(&info, &extras).unwrap();
        // The writer patches the timeline in place before the jump.
        let offset = timeline_offset(&bytes).unwrap();
        bytes[offset + 8 * TIMELINE_JUMP..offset + 8 * TIMELINE_JUMP + 8].copy_from_slice(&42u64.to_ne_bytes());

        let mut parsed = BootInfo::new(BootPath::Kho);
        parse(&bytes, 0x3000_0000, 0x3100_0000, &mut parsed).unwrap();
        assert_eq!(parsed.path, BootPath::Kho);
        assert_eq!(parsed.memory_map.as_slice(), info.memory_map.as_slice());
        assert_eq!(parsed.command_line, info.command_line);
        assert_eq!(
            parsed.modules.as_slice(),
            [BootModule {
                range: PhysRange { start: 0x100_0000, end: 0x180_0000 },
                name: ArrayString::from("baton-0.2.0.elf").unwrap()
            }]
        );
        assert_eq!(parsed.kernel.file, info.kernel.file);
        assert_eq!(parsed.firmware, info.firmware);
        assert_eq!(parsed.framebuffer, info.framebuffer);
        assert_eq!(parsed.serial, info.serial);
        assert_eq!(parsed.interrupt_controller, info.interrupt_controller);
        assert_eq!(parsed.timer_interrupt, Some(27));
        assert_eq!(parsed.msi_frame, Some(0x802_0000));
        assert_eq!(parsed.pci_host, info.pci_host);
        let kho = parsed.kho.unwrap();
        assert_eq!(kho.scratch.as_slice(), scratch);
        assert_eq!((kho.generation, kho.freeze_cycles, kho.previous_version.as_str()), (3, 123_456_789, "0.1.0"));
        assert_eq!(kho.root_fdt, 0x3100_0000);
        assert_eq!((kho.cycle_frequency_hz, kho.timer_ticks_per_second), (2_400_000_000, 1_000_000_000));
        assert_eq!(kho.timeline[TIMELINE_JUMP], 42);
        assert_eq!(kho.timeline[TIMELINE_PREPARE], 0);
        assert_eq!(kho.boot_description.start, 0x3000_0000);
        assert_eq!(kho.history[0], history[0]);
        assert_eq!(kho.history[1].to.as_str(), "a-very-long-vers", "versions are cut to 16 bytes");
        assert_eq!(kho.history.len(), 2);
        let table: Vec<OwnedRun> = owners(&bytes).unwrap().collect();
        assert_eq!(table, runs);
        assert_eq!(table[1].end(), 0x2100_0000 + (1 << 30));
    }

    fn update_record(generation: u32, from: &str, to: &str) -> UpdateRecord {
        let mut record = UpdateRecord {
            generation,
            blackout_us: 1000 + u64::from(generation),
            preserved_bytes: 1 << 20,
            sub_fdts: 4,
            ..UpdateRecord::default()
        };
        let _ = record.from.try_push_str(from);
        let _ = record.to.try_push_str(&to[..to.len().min(16)]);
        record
    }

    #[test]
    fn the_update_history_keeps_the_most_recent_entries() {
        let history: Vec<UpdateRecord> =
            (1..=40).map(|generation| update_record(generation, "0.1.0", "0.2.0")).collect();
        let extras = HandoverExtras {
            kernel_version: "0.2.0",
            generation: 41,
            freeze_cycles: 0,
            scratch: &[],
            owners: &[],
            cycle_frequency_hz: 0,
            timer_ticks_per_second: 0,
            history: &history,
            pci_host: None,
        };
        let bytes = write(&described(), &extras).unwrap();
        let mut parsed = BootInfo::new(BootPath::Kho);
        parse(&bytes, 0, 0, &mut parsed).unwrap();
        let kept = parsed.kho.unwrap().history;
        assert_eq!(kept.len(), crate::info::HISTORY_ENTRIES);
        assert_eq!(kept.first().unwrap().generation, 41 - crate::info::HISTORY_ENTRIES as u32);
        assert_eq!(kept.last().unwrap(), history.last().unwrap());
        assert!(parse_history(&[0u8; 63]).is_none(), "a partial record is malformed");
        let mut bad_version = [0u8; 64];
        bad_version[32] = 0xff;
        assert!(parse_history(&bad_version).is_none(), "versions must be UTF-8");
    }

    #[test]
    fn single_folio_owner_records_of_baton_0_1_are_read_as_runs() {
        let mut writer = SubFdtWriter::new().unwrap();
        writer.property_string("compatible", COMPATIBLE).unwrap();
        let mut table = Vec::new();
        for (phys, order, index) in [(0x4000u64, 2u32, 1u32), (0x9000, 0, 0)] {
            push_u64(&mut table, phys);
            push_u32(&mut table, order);
            push_u32(&mut table, index);
        }
        writer.property("owners", &table).unwrap();
        writer.property("owner-names", b"init\0kvstore\0").unwrap();
        let bytes = writer.finish().unwrap();
        let runs: Vec<OwnedRun> = owners(&bytes).unwrap().collect();
        assert_eq!(
            runs,
            [
                OwnedRun { phys: 0x4000, order: 2, folios: 1, owner: "kvstore" },
                OwnedRun { phys: 0x9000, order: 0, folios: 1, owner: "init" },
            ]
        );
    }

    #[test]
    fn bootloader_memory_becomes_usable_for_the_next_kernel() {
        let mut info = described();
        info.memory_map.push(MemoryRegion {
            range: PhysRange { start: 0x5000_0000, end: 0x5010_0000 },
            kind: MemoryKind::BootloaderReclaimable,
        });
        let extras = HandoverExtras {
            kernel_version: "0.1.0",
            generation: 1,
            freeze_cycles: 0,
            scratch: &[],
            owners: &[],
            cycle_frequency_hz: 0,
            timer_ticks_per_second: 0,
            history: &[],
            pci_host: None,
        };
        let bytes = write(&info, &extras).unwrap();
        let mut parsed = BootInfo::new(BootPath::Kho);
        parse(&bytes, 0, 0, &mut parsed).unwrap();
        let region = parsed.memory_map.iter().find(|region| region.range.start == 0x5000_0000).unwrap();
        assert_eq!(region.kind, MemoryKind::Usable);
    }

    #[test]
    fn other_blobs_are_refused() {
        let mut parsed = BootInfo::new(BootPath::Kho);
        assert_eq!(parse(&[0u8; 64], 0, 0, &mut parsed), Err(BootDescriptionError::NotAnFdt));
        let mut writer = SubFdtWriter::new().unwrap();
        writer.property_string("compatible", "baton,kvstore-v1").unwrap();
        let other = writer.finish().unwrap();
        assert_eq!(parse(&other, 0, 0, &mut parsed), Err(BootDescriptionError::Incompatible));
        let mut writer = SubFdtWriter::new().unwrap();
        writer.property_string("compatible", COMPATIBLE).unwrap();
        writer.property_u32("generation", 1).unwrap();
        let missing = writer.finish().unwrap();
        assert!(matches!(parse(&missing, 0, 0, &mut parsed), Err(BootDescriptionError::BadProperty(_))));
    }

    #[test]
    fn truncated_or_mutated_descriptions_never_panic() {
        let extras = HandoverExtras {
            kernel_version: "0.1.0",
            generation: 1,
            freeze_cycles: 0,
            scratch: &[],
            owners: &[OwnedRun { phys: 0x1000, order: 0, folios: 2, owner: "a" }],
            cycle_frequency_hz: 0,
            timer_ticks_per_second: 0,
            history: &[],
            pci_host: None,
        };
        let bytes = write(&described(), &extras).unwrap();
        for cut in 0..bytes.len() {
            let mut parsed = BootInfo::new(BootPath::Kho);
            let _ = parse(&bytes[..cut], 0, 0, &mut parsed);
        }
        for index in 0..bytes.len() {
            let mut mutated = bytes.clone();
            mutated[index] ^= 0x5a;
            let mut parsed = BootInfo::new(BootPath::Kho);
            let _ = parse(&mutated, 0, 0, &mut parsed);
            let _ = owners(&mutated).map(|iterator| iterator.count());
        }
    }
}
