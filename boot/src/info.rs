//! Baton's boot description: what every entry path hands to the common kernel.
//!
//! Each entry adapter (PVH, arm64 `Image`, Limine, KHO) turns what it was given
//! into one [`BootInfo`]. Everything after the adapter reads only this type, so
//! the kernel never needs to know how it was started. The description holds
//! physical addresses and small copies (the command line, module names); it
//! never borrows from bootloader memory, which the kernel may reclaim later.

use arrayvec::{ArrayString, ArrayVec};
use core::fmt;

/// The most memory-map entries Baton keeps. Firmware maps on large machines
/// have a few dozen entries; entries beyond this are reported as a warning.
pub const MAX_MEMORY_REGIONS: usize = 256;
/// The most boot modules Baton keeps.
pub const MAX_MODULES: usize = 16;
/// The longest kernel command line Baton keeps, in bytes.
pub const MAX_COMMAND_LINE_BYTES: usize = 4096;
/// The longest module name Baton keeps, in bytes.
pub const MAX_MODULE_NAME_BYTES: usize = 64;
/// The most boot warnings kept for the kernel to log.
pub const MAX_WARNINGS: usize = 16;

/// How the kernel was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    /// QEMU `-kernel` on x86_64 through the Xen PVH entry note.
    Pvh,
    /// QEMU `-kernel` on aarch64 through the arm64 Linux `Image` header.
    LinuxImage,
    /// Limine (ISO, real hardware).
    Limine,
    /// A previous Baton through Kexec HandOver.
    Kho,
}

impl BootPath {
    /// The name printed in the boot banner.
    pub fn name(self) -> &'static str {
        match self {
            BootPath::Pvh => "direct (PVH)",
            BootPath::LinuxImage => "direct (arm64 Image)",
            BootPath::Limine => "limine",
            BootPath::Kho => "kho",
        }
    }
}

/// A half-open range of physical addresses `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PhysRange {
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
}

impl PhysRange {
    /// The range `[start, start + size_bytes)`, or `None` if it overflows.
    pub fn from_start_size(start: u64, size_bytes: u64) -> Option<Self> {
        Some(Self { start, end: start.checked_add(size_bytes)? })
    }

    /// Size of the range in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `self` and `other` share at least one byte.
    pub fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_range(&self, other: &PhysRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#014x}-{:#014x})", self.start, self.end)
    }
}

/// What a physical memory region holds, as the firmware or bootloader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Free RAM.
    Usable,
    /// Not RAM, or RAM the firmware keeps for itself.
    Reserved,
    /// ACPI tables; RAM once they have been read.
    AcpiReclaimable,
    /// ACPI non-volatile storage; never usable.
    AcpiNvs,
    /// Defective RAM.
    Unusable,
    /// RAM that holds bootloader structures until the kernel has read them.
    BootloaderReclaimable,
    /// RAM holding the kernel image or boot modules, as reported by the loader.
    KernelAndModules,
    /// A linear framebuffer.
    Framebuffer,
}

impl MemoryKind {
    /// Whether the region is RAM (possibly in use by something).
    pub fn is_ram(self) -> bool {
        matches!(
            self,
            MemoryKind::Usable
                | MemoryKind::AcpiReclaimable
                | MemoryKind::BootloaderReclaimable
                | MemoryKind::KernelAndModules
        )
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Usable => "usable",
            MemoryKind::Reserved => "reserved",
            MemoryKind::AcpiReclaimable => "acpi-reclaimable",
            MemoryKind::AcpiNvs => "acpi-nvs",
            MemoryKind::Unusable => "unusable",
            MemoryKind::BootloaderReclaimable => "bootloader-reclaimable",
            MemoryKind::KernelAndModules => "kernel-and-modules",
            MemoryKind::Framebuffer => "framebuffer",
        }
    }
}

/// One entry of the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// The physical addresses covered.
    pub range: PhysRange,
    /// What the region holds.
    pub kind: MemoryKind,
}

/// Where the running kernel image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelImage {
    /// Physical memory occupied by the loaded image (text, data and bss).
    pub phys: PhysRange,
    /// Virtual address the image is linked at (its first byte).
    pub virt_start: u64,
    /// The original image file (ELF), when the loader kept a copy of it.
    pub file: Option<PhysRange>,
}

/// A file the loader placed in memory next to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootModule {
    /// Where the module's bytes are.
    pub range: PhysRange,
    /// The module's name (its path or command line), possibly empty.
    pub name: ArrayString<MAX_MODULE_NAME_BYTES>,
}

/// Pointers into firmware tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Firmware {
    /// Physical address of the ACPI RSDP.
    pub acpi_rsdp: Option<u64>,
    /// The flattened device tree the firmware or QEMU provided.
    pub device_tree: Option<PhysRange>,
    /// Physical address of the EFI system table.
    pub efi_system_table: Option<u64>,
}

/// A linear framebuffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framebuffer {
    /// Physical address of the first pixel.
    pub phys: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row.
    pub pitch_bytes: u32,
    /// Bits per pixel.
    pub bits_per_pixel: u16,
    /// Position and width of each colour channel: (shift, size) for red,
    /// green, blue.
    pub red: (u8, u8),
    /// Green channel (shift, size).
    pub green: (u8, u8),
    /// Blue channel (shift, size).
    pub blue: (u8, u8),
}

impl Framebuffer {
    /// Bytes of memory the framebuffer spans.
    pub fn size_bytes(&self) -> u64 {
        u64::from(self.pitch_bytes) * u64::from(self.height)
    }
}

/// The serial port the kernel should log to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialPort {
    /// A 16550-compatible UART at an x86 I/O port.
    Uart16550 {
        /// Base I/O port (0x3f8 for COM1).
        io_port: u16,
    },
    /// An Arm PL011 UART at a physical MMIO address.
    Pl011 {
        /// Physical address of the register block.
        phys: u64,
    },
}

/// The interrupt controller, when the firmware describes one the kernel
/// must find (aarch64; x86_64 uses the local APIC, found through CPUID/MSRs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptController {
    /// An Arm GICv2: distributor and CPU interface register blocks.
    GicV2 {
        /// Distributor physical address.
        distributor: u64,
        /// CPU interface physical address.
        cpu_interface: u64,
    },
    /// An Arm GICv3: distributor and the first redistributor.
    GicV3 {
        /// Distributor physical address.
        distributor: u64,
        /// Redistributor region physical address.
        redistributor: u64,
    },
}

/// The most scratch regions a handover carries.
pub const MAX_SCRATCH_AREAS: usize = 10;

/// Which scratch region (the same kinds on both sides of a handover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchArea {
    /// The low region.
    Low(PhysRange),
    /// The global region.
    Global(PhysRange),
    /// A NUMA node's region.
    Node(u32, PhysRange),
}

impl ScratchArea {
    /// Where it is.
    pub fn range(&self) -> PhysRange {
        match *self {
            ScratchArea::Low(range) | ScratchArea::Global(range) | ScratchArea::Node(_, range) => range,
        }
    }
}

/// What a KHO entry learned beyond the ordinary boot description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KhoBoot {
    /// Physical address of the KHO root FDT.
    pub root_fdt: u64,
    /// Where the previous kernel's boot description (this kernel's input) is.
    pub boot_description: PhysRange,
    /// The scratch regions to reuse exactly.
    pub scratch: ArrayVec<ScratchArea, MAX_SCRATCH_AREAS>,
    /// How many KHO boots led here (1 for the first update).
    pub generation: u32,
    /// The cycle counter when the previous kernel froze its handover.
    pub freeze_cycles: u64,
    /// The version of the kernel that handed over.
    pub previous_version: ArrayString<32>,
    /// Cycle-counter ticks per second measured by an earlier kernel (0:
    /// unknown).
    pub cycle_frequency_hz: u64,
    /// The x86_64 APIC timer's rate measured by an earlier kernel (0:
    /// unknown).
    pub timer_ticks_per_second: u64,
    /// Cycle-counter readings along the update (see `handover::TIMELINE_*`).
    pub timeline: [u64; crate::handover::TIMELINE_ENTRIES],
    /// The updates before this one, oldest first.
    pub history: ArrayVec<crate::handover::UpdateRecord, HISTORY_ENTRIES>,
}

/// Updates a boot description remembers.
pub const HISTORY_ENTRIES: usize = 16;

/// Something an adapter noticed that the kernel should log once it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootWarning {
    /// The memory map had more entries than Baton keeps; the rest were dropped.
    MemoryMapTruncated,
    /// More modules than Baton keeps; the rest were ignored.
    ModulesTruncated,
    /// The command line was longer than Baton keeps and was cut.
    CommandLineTruncated,
    /// The command line was not UTF-8; it was dropped.
    CommandLineNotUtf8,
    /// A structure from the loader could not be read or was malformed.
    Malformed(&'static str),
    /// Limine did not confirm the base revision Baton asked for.
    LimineRevisionUnsupported,
    /// The previous kernel's boot description could not be read.
    BootDescription(crate::handover::BootDescriptionError),
}

impl fmt::Display for BootWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootWarning::MemoryMapTruncated => {
                write!(f, "memory map truncated to {MAX_MEMORY_REGIONS} entries")
            }
            BootWarning::ModulesTruncated => write!(f, "only the first {MAX_MODULES} modules kept"),
            BootWarning::CommandLineTruncated => {
                write!(f, "command line truncated to {MAX_COMMAND_LINE_BYTES} bytes")
            }
            BootWarning::CommandLineNotUtf8 => write!(f, "command line is not UTF-8; ignored"),
            BootWarning::Malformed(what) => write!(f, "malformed boot data: {what}"),
            BootWarning::LimineRevisionUnsupported => {
                write!(f, "Limine did not confirm base revision 2; continuing")
            }
            BootWarning::BootDescription(error) => write!(f, "{error}"),
        }
    }
}

/// NUMA memory ranges Baton keeps.
pub const MAX_NUMA_RANGES: usize = 32;

/// A range of RAM and the NUMA node it belongs to (ACPI SRAT, or the DT's
/// `numa-node-id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumaRange {
    /// The node (proximity domain).
    pub node: u32,
    /// Its memory.
    pub range: PhysRange,
}

/// Everything the common kernel learns from its entry path.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// How the kernel was entered.
    pub path: BootPath,
    /// Physical memory as the loader described it, sorted by address.
    pub memory_map: ArrayVec<MemoryRegion, MAX_MEMORY_REGIONS>,
    /// The kernel command line.
    pub command_line: ArrayString<MAX_COMMAND_LINE_BYTES>,
    /// The running kernel image.
    pub kernel: KernelImage,
    /// Boot modules (for example the update image).
    pub modules: ArrayVec<BootModule, MAX_MODULES>,
    /// Firmware table pointers.
    pub firmware: Firmware,
    /// The framebuffer, when there is one.
    pub framebuffer: Option<Framebuffer>,
    /// The serial port to log to, when there is one.
    pub serial: Option<SerialPort>,
    /// The interrupt controller, when the firmware tables name one.
    pub interrupt_controller: Option<InterruptController>,
    /// The interrupt number (INTID) of the timer the kernel uses, when the
    /// firmware tables name it.
    pub timer_interrupt: Option<u32>,
    /// The GICv2m MSI frame (aarch64: where devices write to raise a
    /// message interrupt), when the device tree has one.
    pub msi_frame: Option<u64>,
    /// The PCI host bridge the device tree describes (aarch64; x86_64
    /// finds its ECAM in ACPI's MCFG, which the kernel reads).
    pub pci_host: Option<baton_pci::HostBridge>,
    /// Physical address of the incoming KHO root FDT (KHO boots only).
    pub handover: Option<u64>,
    /// The rest of what a KHO entry received.
    pub kho: Option<KhoBoot>,
    /// Offset of the direct map of physical memory in effect at entry.
    pub entry_direct_map_offset: u64,
    /// The cycle counter when the kernel was entered.
    pub entry_cycles: u64,
    /// Problems the adapter noticed, for the kernel to log.
    pub warnings: ArrayVec<BootWarning, MAX_WARNINGS>,
    /// Which NUMA node each range of RAM belongs to; empty when the
    /// firmware describes none (one node).
    pub numa: ArrayVec<NumaRange, MAX_NUMA_RANGES>,
}

impl BootInfo {
    /// An empty description for the given entry path.
    pub fn new(path: BootPath) -> Self {
        Self {
            path,
            memory_map: ArrayVec::new(),
            command_line: ArrayString::new(),
            kernel: KernelImage::default(),
            modules: ArrayVec::new(),
            firmware: Firmware::default(),
            framebuffer: None,
            serial: None,
            interrupt_controller: None,
            timer_interrupt: None,
            msi_frame: None,
            pci_host: None,
            handover: None,
            kho: None,
            entry_direct_map_offset: 0,
            entry_cycles: 0,
            warnings: ArrayVec::new(),
            numa: ArrayVec::new(),
        }
    }

    /// Records a warning; once the list is full further warnings are dropped.
    pub fn warn(&mut self, warning: BootWarning) {
        if !self.warnings.contains(&warning) {
            let _ = self.warnings.try_push(warning);
        }
    }

    /// Adds a memory region, keeping the map sorted by start address.
    /// Empty regions are ignored.
    pub fn add_memory_region(&mut self, range: PhysRange, kind: MemoryKind) {
        if range.is_empty() {
            return;
        }
        if self.memory_map.is_full() {
            self.warn(BootWarning::MemoryMapTruncated);
            return;
        }
        let index = self.memory_map.partition_point(|region| region.range.start <= range.start);
        self.memory_map.insert(index, MemoryRegion { range, kind });
    }

    /// Sets the command line from raw bytes, cutting at the first NUL and at
    /// the length Baton keeps.
    pub fn set_command_line(&mut self, bytes: &[u8]) {
        let bytes = bytes.split(|&byte| byte == 0).next().unwrap_or(&[]);
        let mut length = bytes.len().min(MAX_COMMAND_LINE_BYTES);
        if length < bytes.len() {
            self.warn(BootWarning::CommandLineTruncated);
        }
        // Do not cut a UTF-8 sequence in half.
        while length > 0 && length < bytes.len() && (bytes[length] & 0xc0) == 0x80 {
            length -= 1;
        }
        self.command_line.clear();
        match core::str::from_utf8(&bytes[..length]) {
            Ok(text) => {
                let _ = self.command_line.try_push_str(text.trim());
            }
            Err(_) => self.warn(BootWarning::CommandLineNotUtf8),
        }
    }

    /// Adds a boot module; beyond [`MAX_MODULES`] modules are ignored.
    pub fn add_module(&mut self, range: PhysRange, name: &[u8]) {
        let mut module_name = ArrayString::new();
        let name = name.split(|&byte| byte == 0).next().unwrap_or(&[]);
        for &byte in name.iter().take(MAX_MODULE_NAME_BYTES) {
            let printable = if byte.is_ascii_graphic() || byte == b' ' { byte as char } else { '?' };
            let _ = module_name.try_push(printable);
        }
        if self.modules.try_push(BootModule { range, name: module_name }).is_err() {
            self.warn(BootWarning::ModulesTruncated);
        }
    }

    /// Total bytes of RAM described by the map.
    pub fn total_ram_bytes(&self) -> u64 {
        // Saturating: a firmware map may overlap itself up to the top of the
        // address space (found by fuzzing: boot/fuzz, `pvh_start_info`).
        self.memory_map
            .iter()
            .filter(|region| region.kind.is_ram())
            .fold(0u64, |total, region| total.saturating_add(region.range.size_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_stays_sorted_and_drops_empty_regions() {
        let mut info = BootInfo::new(BootPath::Pvh);
        info.add_memory_region(PhysRange { start: 0x10_0000, end: 0x20_0000 }, MemoryKind::Usable);
        info.add_memory_region(PhysRange { start: 0, end: 0x9_f000 }, MemoryKind::Usable);
        info.add_memory_region(PhysRange { start: 0x5000, end: 0x5000 }, MemoryKind::Reserved);
        info.add_memory_region(PhysRange { start: 0xf_0000, end: 0x10_0000 }, MemoryKind::Reserved);
        let starts: Vec<u64> = info.memory_map.iter().map(|region| region.range.start).collect();
        assert_eq!(starts, [0, 0xf_0000, 0x10_0000]);
        assert_eq!(info.total_ram_bytes(), 0x9_f000 + 0x10_0000);
    }

    #[test]
    fn full_memory_map_is_reported_not_overflowed() {
        let mut info = BootInfo::new(BootPath::Pvh);
        for index in 0..(MAX_MEMORY_REGIONS as u64 + 3) {
            info.add_memory_region(
                PhysRange { start: index * 0x2000, end: index * 0x2000 + 0x1000 },
                MemoryKind::Usable,
            );
        }
        assert_eq!(info.memory_map.len(), MAX_MEMORY_REGIONS);
        assert_eq!(info.warnings.as_slice(), [BootWarning::MemoryMapTruncated]);
    }

    #[test]
    fn command_line_is_cut_at_nul_and_trimmed() {
        let mut info = BootInfo::new(BootPath::Pvh);
        info.set_command_line(b"  console=ttyS0 ktest=all \0garbage");
        assert_eq!(info.command_line.as_str(), "console=ttyS0 ktest=all");
        assert!(info.warnings.is_empty());
    }

    #[test]
    fn overlong_command_line_is_truncated_on_a_character_boundary() {
        let mut info = BootInfo::new(BootPath::Pvh);
        let mut long = vec![b'a'; MAX_COMMAND_LINE_BYTES - 1];
        long.extend_from_slice("é".as_bytes());
        long.extend_from_slice(b"tail");
        info.set_command_line(&long);
        assert_eq!(info.command_line.len(), MAX_COMMAND_LINE_BYTES - 1);
        assert_eq!(info.warnings.as_slice(), [BootWarning::CommandLineTruncated]);
    }

    #[test]
    fn non_utf8_command_line_is_dropped_with_a_warning() {
        let mut info = BootInfo::new(BootPath::Pvh);
        info.set_command_line(&[b'a', 0xff, b'b']);
        assert!(info.command_line.is_empty());
        assert_eq!(info.warnings.as_slice(), [BootWarning::CommandLineNotUtf8]);
    }

    #[test]
    fn module_names_are_sanitised_and_bounded() {
        let mut info = BootInfo::new(BootPath::Pvh);
        info.add_module(PhysRange { start: 0x100_0000, end: 0x200_0000 }, b"baton-v2\x07.elf\0tail");
        assert_eq!(info.modules[0].name.as_str(), "baton-v2?.elf");
        for _ in 0..MAX_MODULES {
            info.add_module(PhysRange { start: 0, end: 1 }, b"m");
        }
        assert_eq!(info.modules.len(), MAX_MODULES);
        assert_eq!(info.warnings.as_slice(), [BootWarning::ModulesTruncated]);
    }

    #[test]
    fn ranges_report_overlap_and_containment() {
        let outer = PhysRange { start: 0x1000, end: 0x5000 };
        let inner = PhysRange { start: 0x2000, end: 0x3000 };
        let touching = PhysRange { start: 0x5000, end: 0x6000 };
        assert!(outer.overlaps(&inner) && outer.contains_range(&inner));
        assert!(!outer.overlaps(&touching));
        assert_eq!(PhysRange::from_start_size(u64::MAX, 2), None);
    }
}
