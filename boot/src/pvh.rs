//! The x86_64 PVH entry: QEMU `-kernel` with a Xen `PHYS32_ENTRY` note.
//!
//! QEMU enters the image in 32-bit protected mode with `ebx` pointing at an
//! `hvm_start_info` structure. This module turns that structure (and the
//! module list, command line and memory map it points to) into a
//! [`BootInfo`]. It only reads through [`PhysRead`], so it is tested on the
//! host against hand-made structures.

use crate::info::{BootInfo, BootPath, BootWarning, MemoryKind, PhysRange, SerialPort};
use crate::phys::PhysRead;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

// Offsets of the fields of `hvm_start_info` (all little-endian).
const MAGIC: u64 = 0;
const VERSION: u64 = 4;
const MODULE_COUNT: u64 = 12;
const MODULE_LIST: u64 = 16;
const COMMAND_LINE: u64 = 24;
const RSDP: u64 = 32;
const MEMORY_MAP: u64 = 40;
const MEMORY_MAP_ENTRIES: u64 = 48;

/// Size of one `hvm_modlist_entry`.
const MODULE_ENTRY_BYTES: u64 = 32;
/// Size of one `hvm_memmap_table_entry`.
const MEMORY_MAP_ENTRY_BYTES: u64 = 24;
/// More entries than any sane firmware provides: treat as corruption.
const MAX_MEMORY_MAP_ENTRIES: u32 = 4096;

/// Why a PVH start info could not be used at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvhError {
    /// The start info itself could not be read.
    Unreadable,
    /// The magic number did not match.
    BadMagic(u32),
}

/// Translates an E820 type to Baton's memory kind.
fn e820_kind(e820_type: u32) -> MemoryKind {
    match e820_type {
        1 => MemoryKind::Usable,
        3 => MemoryKind::AcpiReclaimable,
        4 => MemoryKind::AcpiNvs,
        5 => MemoryKind::Unusable,
        _ => MemoryKind::Reserved,
    }
}

/// Parses the PVH start info at `start_info_phys` into a boot description.
pub fn parse(memory: &impl PhysRead, start_info_phys: u64) -> Result<BootInfo, PvhError> {
    let field = |offset: u64| start_info_phys.checked_add(offset).ok_or(PvhError::Unreadable);
    let magic = memory.read_u32(field(MAGIC)?).ok_or(PvhError::Unreadable)?;
    if magic != START_INFO_MAGIC {
        return Err(PvhError::BadMagic(magic));
    }
    let version = memory.read_u32(field(VERSION)?).ok_or(PvhError::Unreadable)?;
    let mut info = BootInfo::new(BootPath::Pvh);
    info.serial = Some(SerialPort::Uart16550 { io_port: 0x3f8 });

    let command_line = memory.read_u64(field(COMMAND_LINE)?).unwrap_or(0);
    if command_line != 0 {
        let mut buffer = [0; crate::info::MAX_COMMAND_LINE_BYTES];
        match memory.read_c_string(command_line, &mut buffer) {
            Some(bytes) => info.set_command_line(bytes),
            None => info.warn(BootWarning::Malformed("PVH command line unreadable")),
        }
    }

    let rsdp = memory.read_u64(field(RSDP)?).unwrap_or(0);
    if rsdp != 0 {
        info.firmware.acpi_rsdp = Some(rsdp);
    }

    let module_count = memory.read_u32(field(MODULE_COUNT)?).unwrap_or(0);
    let module_list = memory.read_u64(field(MODULE_LIST)?).unwrap_or(0);
    for index in 0..u64::from(module_count.min(crate::info::MAX_MODULES as u32 + 1)) {
        let entry = module_list.checked_add(index * MODULE_ENTRY_BYTES);
        let field = |offset: u64| entry.and_then(|entry| entry.checked_add(offset));
        let (Some(address), Some(size)) =
            (field(0).and_then(|at| memory.read_u64(at)), field(8).and_then(|at| memory.read_u64(at)))
        else {
            info.warn(BootWarning::Malformed("PVH module list unreadable"));
            break;
        };
        let Some(range) = PhysRange::from_start_size(address, size) else {
            info.warn(BootWarning::Malformed("PVH module range overflows"));
            continue;
        };
        let mut name_buffer = [0; crate::info::MAX_MODULE_NAME_BYTES];
        let name_phys = field(16).and_then(|at| memory.read_u64(at)).unwrap_or(0);
        let name =
            if name_phys == 0 { &[][..] } else { memory.read_c_string(name_phys, &mut name_buffer).unwrap_or(&[]) };
        info.add_module(range, name);
    }

    if version >= 1 {
        let table = memory.read_u64(field(MEMORY_MAP)?).unwrap_or(0);
        let entries = memory.read_u32(field(MEMORY_MAP_ENTRIES)?).unwrap_or(0);
        if table == 0 || entries == 0 || entries > MAX_MEMORY_MAP_ENTRIES {
            info.warn(BootWarning::Malformed("PVH memory map missing or implausible"));
        }
        for index in 0..u64::from(entries.min(MAX_MEMORY_MAP_ENTRIES)) {
            let entry = table.checked_add(index * MEMORY_MAP_ENTRY_BYTES);
            let field = |offset: u64| entry.and_then(|entry| entry.checked_add(offset));
            let (Some(address), Some(size), Some(kind)) = (
                field(0).and_then(|at| memory.read_u64(at)),
                field(8).and_then(|at| memory.read_u64(at)),
                field(16).and_then(|at| memory.read_u32(at)),
            ) else {
                info.warn(BootWarning::Malformed("PVH memory map unreadable"));
                break;
            };
            match PhysRange::from_start_size(address, size) {
                Some(range) => info.add_memory_region(range, e820_kind(kind)),
                None => info.warn(BootWarning::Malformed("PVH memory map entry overflows")),
            }
        }
    } else {
        info.warn(BootWarning::Malformed("PVH start info version 0 has no memory map"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::testing::FakeMemory;

    fn start_info(version: u32, modules: (u32, u64), cmdline: u64, rsdp: u64, memmap: (u64, u32)) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&modules.0.to_le_bytes());
        bytes.extend_from_slice(&modules.1.to_le_bytes());
        bytes.extend_from_slice(&cmdline.to_le_bytes());
        bytes.extend_from_slice(&rsdp.to_le_bytes());
        bytes.extend_from_slice(&memmap.0.to_le_bytes());
        bytes.extend_from_slice(&memmap.1.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes
    }

    fn e820(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for &(address, size, kind) in entries {
            bytes.extend_from_slice(&address.to_le_bytes());
            bytes.extend_from_slice(&size.to_le_bytes());
            bytes.extend_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn tables_at_the_top_of_the_address_space_are_refused_not_overflowed() {
        // Found by fuzzing (boot/fuzz, `pvh_start_info`): a module list at
        // u64::MAX overflowed the entry address.
        let mut memory = FakeMemory::default();
        memory.put(0x1000, include_bytes!("../fuzz/corpus/pvh_start_info/seed-regression-module-list-overflow"));
        let info = parse(&memory, 0x1000).unwrap();
        assert!(info.modules.is_empty());
        let mut memory = FakeMemory::default();
        memory.put(0x1000, &start_info(1, (3, u64::MAX - 40), 0, 0, (u64::MAX - 30, 2)));
        let info = parse(&memory, 0x1000).unwrap();
        assert!(info.modules.is_empty() && info.memory_map.is_empty());
        assert!(!info.warnings.is_empty());
        // A map whose RAM adds up past 2^64 bytes (fuzzing again).
        let mut memory = FakeMemory::default();
        memory.put(0x1000, include_bytes!("../fuzz/corpus/pvh_start_info/seed-regression-ram-sum-overflow"));
        if let Ok(info) = parse(&memory, 0x1000) {
            let _ = info.total_ram_bytes();
        }
        let mut memory = FakeMemory::default();
        memory.put(0x1000, &start_info(1, (0, 0), 0, 0, (0x2000, 2)));
        memory.put(0x2000, &e820(&[(0, u64::MAX / 2 + 1, 1), (0x1000, u64::MAX / 2 + 1, 1)]));
        let info = parse(&memory, 0x1000).unwrap();
        assert!(info.total_ram_bytes() >= u64::MAX / 2);
    }

    #[test]
    fn parses_what_qemu_provides() {
        let mut memory = FakeMemory::default();
        memory.put(0x6000, &start_info(1, (1, 0x7000), 0x8000, 0xf_5000, (0x9000, 3)));
        let mut module = Vec::new();
        for value in [0x100_0000u64, 0x2_0000, 0x8100, 0] {
            module.extend_from_slice(&value.to_le_bytes());
        }
        memory.put(0x7000, &module);
        memory.put(0x8000, b"ktest=all kho_scratch=50%\0");
        memory.put(0x8100, b"baton-v2.elf\0");
        memory.put(0x9000, &e820(&[(0x10_0000, 0x7ee_0000, 1), (0, 0x9_fc00, 1), (0xfeff_c000, 0x4000, 2)]));
        let info = parse(&memory, 0x6000).expect("valid start info");
        assert_eq!(info.path, BootPath::Pvh);
        assert_eq!(info.command_line.as_str(), "ktest=all kho_scratch=50%");
        assert_eq!(info.firmware.acpi_rsdp, Some(0xf_5000));
        assert_eq!(info.modules.len(), 1);
        assert_eq!(info.modules[0].range, PhysRange { start: 0x100_0000, end: 0x102_0000 });
        assert_eq!(info.modules[0].name.as_str(), "baton-v2.elf");
        let kinds: Vec<(u64, MemoryKind)> =
            info.memory_map.iter().map(|region| (region.range.start, region.kind)).collect();
        assert_eq!(
            kinds,
            [(0, MemoryKind::Usable), (0x10_0000, MemoryKind::Usable), (0xfeff_c000, MemoryKind::Reserved)]
        );
        assert_eq!(info.serial, Some(SerialPort::Uart16550 { io_port: 0x3f8 }));
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut memory = FakeMemory::default();
        let mut bytes = start_info(1, (0, 0), 0, 0, (0, 0));
        bytes[0] ^= 1;
        memory.put(0x6000, &bytes);
        assert_eq!(parse(&memory, 0x6000).unwrap_err(), PvhError::BadMagic(START_INFO_MAGIC ^ 1));
        assert_eq!(parse(&memory, 0x1_0000).unwrap_err(), PvhError::Unreadable);
    }

    #[test]
    fn broken_pointers_become_warnings_not_failures() {
        let mut memory = FakeMemory::default();
        // Command line, modules and memory map all point at unreadable memory.
        memory.put(0x6000, &start_info(1, (2, 0xdead_0000), 0xbeef_0000, 0, (0xcafe_0000, 5)));
        let info = parse(&memory, 0x6000).expect("start info itself is fine");
        assert!(info.command_line.is_empty());
        assert!(info.modules.is_empty());
        assert!(info.memory_map.is_empty());
        assert_eq!(info.warnings.len(), 3, "{:?}", info.warnings);
    }

    #[test]
    fn version_zero_has_no_memory_map() {
        let mut memory = FakeMemory::default();
        memory.put(0x6000, &start_info(0, (0, 0), 0, 0, (0x9000, 1)));
        let info = parse(&memory, 0x6000).expect("version 0 is accepted");
        assert!(info.memory_map.is_empty());
        assert_eq!(info.warnings.as_slice(), [BootWarning::Malformed("PVH start info version 0 has no memory map")]);
    }

    #[test]
    fn implausible_memory_map_size_is_bounded() {
        let mut memory = FakeMemory::default();
        memory.put(0x6000, &start_info(1, (0, 0), 0, 0, (0x9000, u32::MAX)));
        memory.put(0x9000, &e820(&[(0x10_0000, 0x100_0000, 1)]));
        let info = parse(&memory, 0x6000).expect("start info itself is fine");
        assert_eq!(info.memory_map.len(), 1);
        assert!(info.warnings.contains(&BootWarning::Malformed("PVH memory map missing or implausible")));
    }
}
