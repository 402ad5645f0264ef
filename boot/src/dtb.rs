//! Reading a flattened device tree handed over by firmware or QEMU.
//!
//! The arm64 `Image` entry receives a DTB in `x0`; Limine on aarch64 reports
//! the firmware's DTB too. This module extracts what Baton needs from it (RAM,
//! reserved ranges, the command line, the initrd and the PL011 console) into a
//! [`BootInfo`], using the `fdt` crate. `fdt` panics on some missing standard
//! nodes (`/chosen`, `/memory`), so only its panic-free lookups are used here.

use crate::info::{BootInfo, BootWarning, InterruptController, MemoryKind, PhysRange, SerialPort};
use fdt::Fdt;
use fdt::node::FdtNode;

/// Size in bytes of a flattened device tree header.
pub const HEADER_BYTES: usize = 40;
/// The FDT magic number (big-endian in the blob).
pub const MAGIC: u32 = 0xd00d_feed;

/// Reads the total size from an FDT header, or `None` if the magic is wrong.
pub fn total_size(header: &[u8]) -> Option<usize> {
    let magic = u32::from_be_bytes(header.get(0..4)?.try_into().ok()?);
    let size = u32::from_be_bytes(header.get(4..8)?.try_into().ok()?);
    (magic == MAGIC && size as usize >= HEADER_BYTES).then_some(size as usize)
}

/// Reads a big-endian cell value of one or two cells.
fn cells_value(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

fn reg_ranges<'b, 'a: 'b>(node: FdtNode<'b, 'a>) -> impl Iterator<Item = PhysRange> + 'a {
    node.reg().into_iter().flatten().filter_map(|region| {
        PhysRange::from_start_size(region.starting_address as u64, region.size.unwrap_or(0) as u64)
    })
}

fn is_compatible(node: &FdtNode<'_, '_>, name: &str) -> bool {
    node.compatible().is_some_and(|compatible| compatible.all().any(|entry| entry == name))
}

/// Whether the device tree's memory nodes describe RAM for this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryNodes {
    /// Take RAM and reserved ranges from the tree (direct boot).
    Read,
    /// The loader already gave a memory map (Limine): ignore them.
    Ignore,
}

/// Adds what the device tree `blob` (located at `blob_phys`) describes to
/// `info`: memory and reserved memory (unless `memory_nodes` says to ignore
/// them), `/chosen` (command line, initrd, console) and the location of the
/// blob itself.
pub fn parse_into(info: &mut BootInfo, blob: &[u8], blob_phys: u64, memory_nodes: MemoryNodes) {
    let fdt = match Fdt::new(blob) {
        Ok(fdt) => fdt,
        Err(_) => {
            info.warn(BootWarning::Malformed("device tree header"));
            return;
        }
    };
    // The `fdt` crate panics on some malformed structure blocks while
    // walking them: check the whole structure first (found by fuzzing:
    // boot/fuzz, `device_tree`).
    if baton_kho::fdt::validate_fdt(blob).is_err() {
        info.warn(BootWarning::Malformed("device tree structure"));
        return;
    }
    // It also panics on a `#address-cells` or `#size-cells` shorter than
    // one cell, when a child's `reg` is read (found by fuzzing too).
    let has_bad_cells = fdt.all_nodes().any(|node| {
        node.properties()
            .any(|property| matches!(property.name, "#address-cells" | "#size-cells") && property.value.len() != 4)
    });
    if has_bad_cells {
        info.warn(BootWarning::Malformed("device tree cell sizes"));
        return;
    }
    info.firmware.device_tree = PhysRange::from_start_size(blob_phys, fdt.total_size() as u64);

    if memory_nodes == MemoryNodes::Read {
        read_memory(info, &fdt);
    }
    read_numa(info, &fdt);
    read_chosen(info, &fdt);
}

/// Memory nodes' `numa-node-id`: which node each range of RAM belongs to.
fn read_numa(info: &mut BootInfo, fdt: &Fdt<'_>) {
    let memory_nodes =
        fdt.all_nodes().filter(|node| node.property("device_type").and_then(|kind| kind.as_str()) == Some("memory"));
    for node in memory_nodes {
        let Some(id) = node.property("numa-node-id").and_then(|property| cells_value(property.value)) else {
            continue;
        };
        for range in reg_ranges(node) {
            let numa = crate::info::NumaRange { node: id as u32, range };
            if info.numa.try_push(numa).is_err() {
                info.warn(BootWarning::Malformed("more NUMA ranges than Baton keeps"));
                return;
            }
        }
    }
}

fn read_memory(info: &mut BootInfo, fdt: &Fdt<'_>) {
    for node in fdt.all_nodes() {
        let is_memory = node.name.split('@').next() == Some("memory")
            || node.property("device_type").and_then(|property| property.as_str()) == Some("memory");
        if is_memory {
            for range in reg_ranges(node) {
                info.add_memory_region(range, MemoryKind::Usable);
            }
        }
    }
    for reservation in fdt.memory_reservations() {
        if let Some(range) = PhysRange::from_start_size(reservation.address() as u64, reservation.size() as u64) {
            info.add_memory_region(range, MemoryKind::Reserved);
        }
    }
    if let Some(reserved) = fdt.find_node("/reserved-memory") {
        for child in reserved.children() {
            for range in reg_ranges(child) {
                info.add_memory_region(range, MemoryKind::Reserved);
            }
        }
    }
}

fn read_chosen(info: &mut BootInfo, fdt: &Fdt<'_>) {
    let chosen = fdt.find_node("/chosen");
    if let Some(chosen) = chosen {
        if let Some(arguments) = chosen.property("bootargs") {
            info.set_command_line(arguments.value);
        }
        let start = chosen.property("linux,initrd-start").and_then(|property| cells_value(property.value));
        let end = chosen.property("linux,initrd-end").and_then(|property| cells_value(property.value));
        if let (Some(start), Some(end)) = (start, end) {
            if start < end {
                info.add_module(PhysRange { start, end }, b"initrd");
            } else {
                info.warn(BootWarning::Malformed("initrd range in /chosen"));
            }
        }
    }

    // The console: the node `/chosen/stdout-path` names if it is a PL011,
    // otherwise the first PL011 in the tree.
    let stdout = chosen
        .and_then(|chosen| chosen.property("stdout-path"))
        .and_then(|property| property.as_str())
        .and_then(|path| fdt.find_node(path.split(':').next().unwrap_or(path)))
        .filter(|node| is_compatible(node, "arm,pl011"));
    let console = stdout.or_else(|| fdt.find_compatible(&["arm,pl011"]));
    if let Some(range) = console.and_then(|node| reg_ranges(node).next()) {
        info.serial = Some(SerialPort::Pl011 { phys: range.start });
    }
    read_interrupts(info, fdt);
    read_pci_host(info, fdt);
}

/// The first generic ECAM host bridge: its configuration space, buses and
/// windows. A bridge whose `ranges` cannot be read is kept without
/// windows (nothing is assigned behind it) and warned about.
fn read_pci_host(info: &mut BootInfo, fdt: &Fdt<'_>) {
    let Some(node) = fdt.find_compatible(&["pci-host-ecam-generic"]) else { return };
    let Some(ecam) = reg_ranges(node).next() else {
        info.warn(BootWarning::Malformed("PCI host bridge without a reg"));
        return;
    };
    let buses: arrayvec::ArrayVec<u32, 2> = node
        .property("bus-range")
        .map(|property| {
            property
                .value
                .chunks_exact(4)
                .take(2)
                .map(|cell| u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
                .collect()
        })
        .unwrap_or_default();
    let (first_bus, last_bus) = match buses.as_slice() {
        [first, last] if first <= last && *last <= 255 => (*first as u8, *last as u8),
        [] => (0, 255),
        _ => {
            info.warn(BootWarning::Malformed("PCI host bridge bus-range"));
            return;
        }
    };
    // (`Fdt::root` panics without a root node; `find_node` does not.)
    let parent_address_cells = fdt.find_node("/").map_or(2, |root| root.cell_sizes().address_cells);
    let size_cells = node.cell_sizes().size_cells;
    let windows = match node.property("ranges") {
        None => baton_pci::Windows::default(),
        Some(ranges) => match baton_pci::parse_ranges(ranges.value, parent_address_cells, size_cells) {
            Ok(windows) => windows,
            Err(_) => {
                info.warn(BootWarning::Malformed("PCI host bridge ranges"));
                baton_pci::Windows::default()
            }
        },
    };
    info.pci_host = Some(baton_pci::HostBridge {
        ecam_start: ecam.start,
        ecam_size_bytes: ecam.size_bytes(),
        first_bus,
        last_bus,
        windows,
    });
}

/// The GIC and the virtual timer's interrupt.
fn read_interrupts(info: &mut BootInfo, fdt: &Fdt<'_>) {
    if let Some(gic) = fdt.find_compatible(&["arm,gic-v3"]) {
        let mut ranges = reg_ranges(gic);
        if let (Some(distributor), Some(redistributor)) = (ranges.next(), ranges.next()) {
            info.interrupt_controller =
                Some(InterruptController::GicV3 { distributor: distributor.start, redistributor: redistributor.start });
        }
    } else if let Some(gic) = fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"]) {
        let mut ranges = reg_ranges(gic);
        if let (Some(distributor), Some(cpu_interface)) = (ranges.next(), ranges.next()) {
            info.interrupt_controller =
                Some(InterruptController::GicV2 { distributor: distributor.start, cpu_interface: cpu_interface.start });
        }
    }
    // GICv2m: message interrupts become SPIs through this frame.
    if let Some(frame) = fdt.find_compatible(&["arm,gic-v2m-frame"])
        && let Some(range) = reg_ranges(frame).next()
    {
        info.msi_frame = Some(range.start);
    }
    // The architected timer lists four PPIs: secure, non-secure physical,
    // virtual, hypervisor (each as <type number flags>). PPI n is INTID n+16.
    if let Some(timer) = fdt.find_compatible(&["arm,armv8-timer", "arm,armv7-timer"])
        && let Some(interrupts) = timer.property("interrupts")
    {
        let cells: arrayvec::ArrayVec<u32, 12> = interrupts
            .value
            .chunks_exact(4)
            .take(12)
            .map(|cell| u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
            .collect();
        if let Some(&virtual_ppi) = cells.get(7) {
            info.timer_interrupt = Some(virtual_ppi + 16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::BootPath;
    use vm_fdt::FdtWriter;

    #[test]
    fn a_malformed_structure_block_is_a_warning_not_a_panic() {
        // Found by fuzzing (boot/fuzz, `device_tree`): the `fdt` crate
        // asserts on a node that does not end where it should.
        let blob = include_bytes!("../fuzz/corpus/device_tree/seed-regression-bad-node");
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, blob, 0x4000_0000, MemoryNodes::Read);
        assert!(info.memory_map.is_empty());
        assert!(!info.warnings.is_empty());
        let mut info = BootInfo::new(BootPath::LinuxImage);
        let good = qemu_like_tree(None);
        parse_into(&mut info, &good, 0x4000_0000, MemoryNodes::Read);
        assert!(info.warnings.is_empty(), "a well-formed tree still parses: {:?}", info.warnings);
    }

    #[test]
    fn numa_node_ids_of_memory_nodes_are_read_even_when_memory_is_not() {
        let mut writer = FdtWriter::new().unwrap();
        let root = writer.begin_node("").unwrap();
        writer.property_u32("#address-cells", 2).unwrap();
        writer.property_u32("#size-cells", 2).unwrap();
        for (node, base) in [(0u32, 0x4000_0000u64), (1, 0x6000_0000)] {
            let memory = writer.begin_node(&format!("memory@{base:x}")).unwrap();
            writer.property_string("device_type", "memory").unwrap();
            writer.property_array_u64("reg", &[base, 0x2000_0000]).unwrap();
            writer.property_u32("numa-node-id", node).unwrap();
            writer.end_node(memory).unwrap();
        }
        writer.end_node(root).unwrap();
        let blob = writer.finish().unwrap();
        for memory_nodes in [MemoryNodes::Read, MemoryNodes::Ignore] {
            let mut info = BootInfo::new(BootPath::LinuxImage);
            parse_into(&mut info, &blob, 0x4000_0000, memory_nodes);
            assert_eq!(
                info.numa.as_slice(),
                [
                    crate::info::NumaRange { node: 0, range: PhysRange { start: 0x4000_0000, end: 0x6000_0000 } },
                    crate::info::NumaRange { node: 1, range: PhysRange { start: 0x6000_0000, end: 0x8000_0000 } },
                ]
            );
        }
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, &qemu_like_tree(None), 0x4000_0000, MemoryNodes::Read);
        assert!(info.numa.is_empty(), "no numa-node-id, no NUMA ranges (one node)");
    }

    #[test]
    fn a_short_cell_size_is_a_warning_not_a_panic() {
        // Found by fuzzing (`device_tree`): a two-byte `#address-cells`
        // made the `fdt` crate panic while reading the memory node's `reg`.
        let blob = include_bytes!("../fuzz/corpus/device_tree/seed-regression-short-cells");
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, blob, 0x4000_0000, MemoryNodes::Read);
        assert!(!info.warnings.is_empty());
        let mut writer = FdtWriter::new().unwrap();
        let root = writer.begin_node("").unwrap();
        writer.property("#address-cells", &[0, 2]).unwrap();
        writer.property_u32("#size-cells", 2).unwrap();
        let memory = writer.begin_node("memory@40000000").unwrap();
        writer.property_string("device_type", "memory").unwrap();
        writer.property_array_u64("reg", &[0x4000_0000, 0x1000_0000]).unwrap();
        writer.end_node(memory).unwrap();
        writer.end_node(root).unwrap();
        let blob = writer.finish().unwrap();
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, &blob, 0x4000_0000, MemoryNodes::Read);
        assert_eq!(info.warnings.as_slice(), [BootWarning::Malformed("device tree cell sizes")]);
        assert!(info.memory_map.is_empty());
    }

    fn qemu_like_tree(stdout: Option<&str>) -> Vec<u8> {
        let mut writer =
            FdtWriter::new_with_mem_reserv(&[vm_fdt::FdtReserveEntry::new(0x4800_0000, 0x1000).unwrap()]).unwrap();
        let root = writer.begin_node("").unwrap();
        writer.property_u32("#address-cells", 2).unwrap();
        writer.property_u32("#size-cells", 2).unwrap();
        let memory = writer.begin_node("memory@40000000").unwrap();
        writer.property_string("device_type", "memory").unwrap();
        writer.property_array_u64("reg", &[0x4000_0000, 0x1000_0000]).unwrap();
        writer.end_node(memory).unwrap();
        for address in [0x900_0000u64, 0x904_0000] {
            let uart = writer.begin_node(&format!("pl011@{address:x}")).unwrap();
            writer.property_string_list("compatible", vec!["arm,pl011".into(), "arm,primecell".into()]).unwrap();
            writer.property_array_u64("reg", &[address, 0x1000]).unwrap();
            writer.end_node(uart).unwrap();
        }
        let gic = writer.begin_node("intc@8000000").unwrap();
        writer.property_string("compatible", "arm,cortex-a15-gic").unwrap();
        writer.property_array_u64("reg", &[0x800_0000, 0x1_0000, 0x801_0000, 0x1_0000]).unwrap();
        writer.end_node(gic).unwrap();
        let timer = writer.begin_node("timer").unwrap();
        writer.property_string("compatible", "arm,armv8-timer").unwrap();
        writer.property_array_u32("interrupts", &[1, 13, 0x104, 1, 14, 0x104, 1, 11, 0x104, 1, 10, 0x104]).unwrap();
        writer.end_node(timer).unwrap();
        let reserved = writer.begin_node("reserved-memory").unwrap();
        writer.property_u32("#address-cells", 2).unwrap();
        writer.property_u32("#size-cells", 2).unwrap();
        writer.property_null("ranges").unwrap();
        let firmware = writer.begin_node("firmware@4f000000").unwrap();
        writer.property_array_u64("reg", &[0x4f00_0000, 0x10_0000]).unwrap();
        writer.end_node(firmware).unwrap();
        writer.end_node(reserved).unwrap();
        let chosen = writer.begin_node("chosen").unwrap();
        writer.property_string("bootargs", "ktest=boot kho=on").unwrap();
        writer.property_u64("linux,initrd-start", 0x4400_0000).unwrap();
        writer.property_u64("linux,initrd-end", 0x4410_0000).unwrap();
        if let Some(path) = stdout {
            writer.property_string("stdout-path", path).unwrap();
        }
        writer.end_node(chosen).unwrap();
        writer.end_node(root).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn reads_memory_chosen_initrd_and_console() {
        let blob = qemu_like_tree(Some("/pl011@9040000"));
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, &blob, 0x4820_0000, MemoryNodes::Read);
        assert_eq!(info.command_line.as_str(), "ktest=boot kho=on");
        assert_eq!(info.modules[0].range, PhysRange { start: 0x4400_0000, end: 0x4410_0000 });
        assert_eq!(info.serial, Some(SerialPort::Pl011 { phys: 0x904_0000 }));
        assert_eq!(
            info.interrupt_controller,
            Some(InterruptController::GicV2 { distributor: 0x800_0000, cpu_interface: 0x801_0000 })
        );
        assert_eq!(info.timer_interrupt, Some(27));
        let regions: Vec<(u64, u64, MemoryKind)> =
            info.memory_map.iter().map(|region| (region.range.start, region.range.end, region.kind)).collect();
        assert_eq!(
            regions,
            [
                (0x4000_0000, 0x5000_0000, MemoryKind::Usable),
                (0x4800_0000, 0x4800_1000, MemoryKind::Reserved),
                (0x4f00_0000, 0x4f10_0000, MemoryKind::Reserved),
            ]
        );
        assert_eq!(
            info.firmware.device_tree,
            Some(PhysRange { start: 0x4820_0000, end: 0x4820_0000 + blob.len() as u64 })
        );
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    #[test]
    fn console_falls_back_to_the_first_pl011() {
        let blob = qemu_like_tree(None);
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, &blob, 0x4820_0000, MemoryNodes::Read);
        assert_eq!(info.serial, Some(SerialPort::Pl011 { phys: 0x900_0000 }));
    }

    #[test]
    fn memory_nodes_can_be_ignored_when_the_loader_gave_a_map() {
        let blob = qemu_like_tree(None);
        let mut info = BootInfo::new(BootPath::Limine);
        parse_into(&mut info, &blob, 0x4820_0000, MemoryNodes::Ignore);
        assert!(info.memory_map.is_empty());
        assert_eq!(info.command_line.as_str(), "ktest=boot kho=on");
    }

    #[test]
    fn the_pci_host_bridge_of_qemu_virt_is_read() {
        // `qemu-system-aarch64 -machine virt,gic-version=2,dumpdtb=...
        // -device virtio-net-pci` (QEMU 10.0), compacted with dtc.
        let blob = include_bytes!("../fuzz/corpus/device_tree/seed-qemu-virt-pcie");
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, blob, 0x4000_0000, MemoryNodes::Read);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.msi_frame, Some(0x802_0000), "the GICv2m frame");
        let bridge = info.pci_host.expect("a host bridge");
        assert_eq!((bridge.ecam_start, bridge.ecam_size_bytes), (0x40_1000_0000, 0x1000_0000));
        assert_eq!((bridge.first_bus, bridge.last_bus, bridge.last_reachable_bus()), (0, 255, Some(255)));
        let window = |cpu, bus, size| Some(baton_pci::Window::new(cpu, bus, size));
        assert_eq!(bridge.windows.io, window(0x3eff_0000, 0, 0x1_0000));
        assert_eq!(bridge.windows.memory32, window(0x1000_0000, 0x1000_0000, 0x2eff_0000));
        assert_eq!(bridge.windows.memory64, window(0x80_0000_0000, 0x80_0000_0000, 0x80_0000_0000));
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, &qemu_like_tree(None), 0x4000_0000, MemoryNodes::Read);
        assert_eq!(info.pci_host, None, "no host bridge node, no PCI");
    }

    #[test]
    fn garbage_is_a_warning_not_a_crash() {
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, &[0u8; 64], 0x4000_0000, MemoryNodes::Read);
        assert!(info.memory_map.is_empty());
        assert_eq!(info.warnings.as_slice(), [BootWarning::Malformed("device tree header")]);
        assert_eq!(total_size(&[0u8; 8]), None);
        let blob = qemu_like_tree(None);
        assert_eq!(total_size(&blob), Some(blob.len()));
    }
}
