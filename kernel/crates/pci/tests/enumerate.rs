//! Enumeration, BAR sizing and assignment against configuration spaces
//! recorded from QEMU (q35 with SeaBIOS, virt with a direct boot), and
//! against hand-made ones for what QEMU does not show (loops, bridges).

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod fake;

use baton_pci::{
    Address, Bar, BarKind, ConfigAccess, Function, HeaderKind, Window, Windows, assign_bars, capability,
    check_programmed, enumerate, parse_ranges, size_bars,
};
use fake::{FakeFunction, FakeSegment};

const Q35: &str = include_str!("fixtures/q35-virtio-net.txt");
const VIRT: &str = include_str!("fixtures/virt-virtio-net.txt");

fn at(bus: u8, device: u8, function: u8) -> Address {
    Address::new(bus, device, function).unwrap()
}

fn functions(segment: &FakeSegment) -> Vec<Function> {
    let mut found = Vec::new();
    enumerate(segment, 0..=255, |function| found.push(function));
    found
}

/// QEMU virt's windows, as its device tree gives them.
fn virt_windows() -> Windows {
    Windows {
        io: Some(Window::new(0x3eff_0000, 0, 0x1_0000)),
        memory32: Some(Window::new(0x1000_0000, 0x1000_0000, 0x2eff_0000)),
        memory64: Some(Window::new(0x80_0000_0000, 0x80_0000_0000, 0x80_0000_0000)),
    }
}

#[test]
fn q35_has_its_six_functions_in_address_order() {
    let segment = fake::load(Q35);
    let found: Vec<(Address, u16, u16, u8)> =
        functions(&segment).iter().map(|f| (f.address, f.vendor_id, f.device_id, f.class)).collect();
    assert_eq!(
        found,
        [
            (at(0, 0, 0), 0x8086, 0x29c0, 0x06),
            (at(0, 1, 0), 0x1234, 0x1111, 0x03),
            (at(0, 2, 0), 0x1af4, 0x1000, 0x02),
            (at(0, 0x1f, 0), 0x8086, 0x2918, 0x06),
            (at(0, 0x1f, 2), 0x8086, 0x2922, 0x01),
            (at(0, 0x1f, 3), 0x8086, 0x2930, 0x0c),
        ]
    );
    assert_eq!(segment.writes, 0, "enumeration only reads");
}

#[test]
fn virtio_net_shows_msi_x_and_its_vendor_capabilities() {
    let segment = fake::load(Q35);
    let net = Function::read(&segment, at(0, 2, 0)).unwrap();
    assert_eq!(net.header, HeaderKind::Endpoint);
    assert_eq!((net.subsystem_vendor_id, net.subsystem_id), (0x1af4, 0x0001), "a virtio network card");
    assert!(net.capability(capability::MSI_X).is_some());
    assert!(net.capabilities_with(capability::VENDOR).count() >= 4, "virtio's common, notify, ISR and device configs");
    assert!(!net.has_broken_capabilities);
    assert_eq!(net.interrupt_pin, 1);
}

#[test]
fn sizing_finds_what_seabios_assigned_and_leaves_it_as_it_was() {
    let mut segment = fake::load(Q35);
    let before = segment.functions.clone();
    let net = Function::read(&segment, at(0, 2, 0)).unwrap();
    let bars = size_bars(&mut segment, &net);
    assert_eq!(
        bars.as_slice(),
        [
            Bar { index: 0, kind: BarKind::Io, address: 0xc040, size_bytes: 0x20 },
            Bar {
                index: 1,
                kind: BarKind::Memory32 { is_prefetchable: false },
                address: 0xfebd_1000,
                size_bytes: 0x1000
            },
            Bar {
                index: 4,
                kind: BarKind::Memory64 { is_prefetchable: true },
                address: 0xfe00_0000,
                size_bytes: 0x4000
            },
        ]
    );
    let display = Function::read(&segment, at(0, 1, 0)).unwrap();
    let bars = size_bars(&mut segment, &display);
    assert_eq!(bars.iter().map(|bar| (bar.index, bar.size_bytes)).collect::<Vec<_>>(), [(0, 16 << 20), (2, 0x1000)]);
    for (address, function) in &before {
        assert_eq!(segment.functions[address].registers, function.registers, "{address}: registers restored");
    }
}

#[test]
fn a_direct_boot_on_virt_gets_every_bar_placed_in_its_window() {
    let mut segment = fake::load(VIRT);
    let found = functions(&segment);
    assert_eq!(
        found.iter().map(|f| (f.vendor_id, f.device_id)).collect::<Vec<_>>(),
        [(0x1b36, 0x0008), (0x1af4, 0x1000)]
    );
    let net = &found[1];
    let mut bars = size_bars(&mut segment, net);
    assert!(bars.iter().all(|bar| bar.address == 0), "nothing assigned yet: {bars:?}");
    let mut windows = virt_windows();
    assign_bars(&mut segment, net, &mut bars, &mut windows).unwrap();
    for bar in &bars {
        assert_ne!(bar.address, 0, "bus address 0 means unassigned");
        assert_eq!(bar.address % bar.size_bytes, 0, "naturally aligned: {bar:?}");
        assert!(windows.cpu_address(bar).is_some(), "inside a window: {bar:?}");
    }
    let memory64 = bars.iter().find(|bar| matches!(bar.kind, BarKind::Memory64 { .. })).unwrap();
    assert!(memory64.address >= 0x80_0000_0000, "a 64-bit BAR goes above 4 GiB when it can");
    // The registers hold the addresses, and decoding is on.
    assert_eq!(size_bars(&mut segment, net).as_slice(), bars.as_slice());
    let command = segment.read16(net.address, baton_pci::register::COMMAND_STATUS);
    assert_eq!(command & 0b11, 0b11, "memory and I/O decoding on");
    assert_eq!(command & baton_pci::command::BUS_MASTER, 0, "DMA is the driver's to switch on");
}

#[test]
fn assigned_bars_are_kept_and_nothing_is_placed_over_them() {
    let mut segment = fake::load(VIRT);
    let net = Function::read(&segment, at(0, 1, 0)).unwrap();
    let mut bars = size_bars(&mut segment, &net);
    let mut windows = virt_windows();
    assign_bars(&mut segment, &net, &mut bars, &mut windows).unwrap();
    // As on the next boot: the same windows, fresh, and BAR1 already set.
    let mut again = size_bars(&mut segment, &net);
    let mut windows = virt_windows();
    for bar in &again {
        windows.reserve(bar);
    }
    again[1].address = 0;
    assign_bars(&mut segment, &net, &mut again, &mut windows).unwrap();
    assert_ne!(again[1].address, bars[1].address, "a new place, not over the old one");
    assert_eq!((again[0].address, again[2].address), (bars[0].address, bars[2].address), "the others kept");
}

#[test]
fn a_bar_larger_than_every_window_is_an_error_not_an_overlap() {
    let mut segment = fake::load(VIRT);
    let net = Function::read(&segment, at(0, 1, 0)).unwrap();
    let mut bars = size_bars(&mut segment, &net);
    let mut windows = Windows { memory32: Some(Window::new(0x1000_0000, 0x1000_0000, 0x2000)), ..Windows::default() };
    let error = assign_bars(&mut segment, &net, &mut bars, &mut windows).unwrap_err();
    assert!(error.to_string().contains("fits in no host-bridge window"), "{error}");
}

fn endpoint(vendor: u16, header_type: u8) -> FakeFunction {
    let mut registers = [0u32; 64];
    registers[0] = u32::from(vendor) | 0x1234 << 16;
    registers[3] = u32::from(header_type) << 16;
    FakeFunction { registers, probes: [0; 6] }
}

#[test]
fn a_looping_capability_list_is_cut_and_flagged() {
    let mut function = endpoint(0x1af4, 0);
    function.registers[1] = 1 << 20; // status: capabilities
    function.registers[0x34 / 4] = 0x40;
    function.registers[0x40 / 4] = 0x5011; // MSI-X, next 0x50
    function.registers[0x50 / 4] = 0x4009; // vendor, next 0x40: a loop
    let mut segment = FakeSegment::default();
    segment.functions.insert(at(0, 0, 0), function);
    let read = Function::read(&segment, at(0, 0, 0)).unwrap();
    assert_eq!(read.capabilities.iter().map(|c| (c.id, c.offset)).collect::<Vec<_>>(), [(0x11, 0x40), (0x09, 0x50)]);
    assert!(read.has_broken_capabilities);
}

#[test]
fn buses_behind_bridges_are_scanned_once_and_only_inside_the_range() {
    let mut segment = FakeSegment::default();
    let bridge = |secondary: u8| {
        let mut function = endpoint(0x1b36, 1);
        function.registers[0x18 / 4] = u32::from(secondary) << 8 | u32::from(secondary) << 16;
        function
    };
    segment.functions.insert(at(0, 0, 0), endpoint(0x8086, 0));
    segment.functions.insert(at(0, 1, 0), bridge(1));
    // A second bridge claiming the same bus: scanned once.
    segment.functions.insert(at(0, 2, 0), bridge(1));
    segment.functions.insert(at(1, 0, 0), endpoint(0x1af4, 0));
    // A bridge pointing back at bus 0 is not followed.
    segment.functions.insert(at(1, 1, 0), bridge(0));
    let found: Vec<Address> = functions(&segment).iter().map(|f| f.address).collect();
    assert_eq!(found, [at(0, 0, 0), at(0, 1, 0), at(0, 2, 0), at(1, 0, 0), at(1, 1, 0)]);
    let mut only_bus_0 = Vec::new();
    enumerate(&segment, 0..=0, |function| only_bus_0.push(function.address));
    assert_eq!(only_bus_0, [at(0, 0, 0), at(0, 1, 0), at(0, 2, 0)]);
}

#[test]
fn functions_beyond_zero_are_read_only_on_multi_function_devices() {
    let mut segment = FakeSegment::default();
    segment.functions.insert(at(0, 3, 0), endpoint(0x8086, 0));
    segment.functions.insert(at(0, 3, 1), endpoint(0x8086, 0));
    segment.functions.insert(at(0, 4, 0), endpoint(0x8086, 0x80));
    segment.functions.insert(at(0, 4, 5), endpoint(0x8086, 0));
    let found: Vec<Address> = functions(&segment).iter().map(|f| f.address).collect();
    assert_eq!(found, [at(0, 3, 0), at(0, 4, 0), at(0, 4, 5)]);
    assert!(functions(&FakeSegment::default()).is_empty(), "an empty segment has nothing");
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|value| value.to_be_bytes()).collect()
}

#[test]
fn ranges_of_qemu_virt_become_its_three_windows() {
    let ranges = cells(&[
        0x0100_0000,
        0,
        0,
        0,
        0x3eff_0000,
        0,
        0x1_0000, // I/O
        0x0200_0000,
        0,
        0x1000_0000,
        0,
        0x1000_0000,
        0,
        0x2eff_0000, // 32-bit memory
        0x0300_0000,
        0x80,
        0,
        0x80,
        0,
        0x80,
        0, // 64-bit memory
    ]);
    assert_eq!(parse_ranges(&ranges, 2, 2).unwrap(), virt_windows());
    assert_eq!(parse_ranges(&ranges[..ranges.len() - 4], 2, 2), Err(baton_pci::RangesError::Truncated));
    assert_eq!(parse_ranges(&ranges, 3, 2), Err(baton_pci::RangesError::BadCells));
    assert_eq!(parse_ranges(&ranges, 0, 2), Err(baton_pci::RangesError::BadCells));
    let overflowing = cells(&[0x0200_0000, 0, 0x1000, 0xffff_ffff, 0xffff_f000, 0, 0x2000]);
    assert_eq!(parse_ranges(&overflowing, 2, 2).unwrap(), Windows::default(), "a window past the end is dropped");
}

#[test]
fn ecam_offsets_follow_bus_device_function() {
    assert_eq!(at(1, 2, 3).ecam_offset(0), Some((1 << 20) | (2 << 15) | (3 << 12)));
    assert_eq!(at(0, 0, 0).ecam_offset(1), None, "below the region's first bus");
    assert_eq!(Address::new(0, 32, 0), None);
    assert_eq!(at(0, 0x1f, 7).to_string(), "00:1f.7");
}

#[test]
fn a_handed_over_bar_is_checked_without_a_single_write() {
    let mut segment = fake::load(Q35);
    let net = Function::read(&segment, at(0, 2, 0)).unwrap();
    let bars = size_bars(&mut segment, &net);
    let writes = segment.writes;
    for bar in &bars {
        assert_eq!(check_programmed(&segment, net.address, bar), Ok(()), "{bar:?}");
    }
    assert_eq!(segment.writes, writes, "checking never writes a register");
    // A BAR recorded elsewhere, or as another kind, is not the one there.
    let memory64 = bars[2];
    let moved = Bar { address: memory64.address + 0x4000, ..memory64 };
    assert_eq!(check_programmed(&segment, net.address, &moved), Err(memory64.address));
    let as_32 = Bar { kind: BarKind::Memory32 { is_prefetchable: true }, ..memory64 };
    assert_eq!(check_programmed(&segment, net.address, &as_32), Err(memory64.address));
    let not_prefetchable = Bar { kind: BarKind::Memory64 { is_prefetchable: false }, ..memory64 };
    assert!(check_programmed(&segment, net.address, &not_prefetchable).is_err());
    let io_as_memory = Bar { kind: BarKind::Memory32 { is_prefetchable: false }, ..bars[0] };
    assert!(check_programmed(&segment, net.address, &io_as_memory).is_err());
}

#[test]
fn the_virtio_cards_msix_table_and_pba_are_found() {
    for (fixture, card) in [(Q35, at(0, 2, 0)), (VIRT, at(0, 1, 0))] {
        let segment = fake::load(fixture);
        let function = functions(&segment).into_iter().find(|function| function.address == card).unwrap();
        let msix = baton_pci::msix::Msix::read(&segment, &function).unwrap();
        // QEMU's virtio-net: vectors for the config change and each queue
        // (4 with one queue pair), table at the start of BAR 1, PBA at
        // 0x800 in it.
        assert_eq!(msix.table_size, 4, "{fixture:.40}");
        assert_eq!((msix.table_bar, msix.table_offset), (1, 0));
        assert_eq!((msix.pba_bar, msix.pba_offset), (1, 0x800));
        assert_eq!(msix.entry_offset(3), Some(0x30));
        assert_eq!(msix.entry_offset(4), None);
        assert_eq!((msix.table_bytes(), msix.pba_bytes()), (64, 8));
        // BAR 1's only page holds both; BAR 4 (the virtio registers) is free.
        assert!(msix.overlaps(1, 0, 4096, 4096));
        assert!(msix.overlaps(1, 0x800, 8, 4096));
        assert!(!msix.overlaps(4, 0, 0x4000, 4096));
        assert!(!msix.overlaps(1, 0x1000, 4096, 4096));
        // The capability's registers are the kernel's; others are not.
        let offset = msix.capability_offset;
        for register in [offset & !3, offset + 4, offset + 8] {
            assert!(baton_pci::msix::is_interrupt_register(&function, register), "{register:#x}");
        }
        assert!(!baton_pci::msix::is_interrupt_register(&function, 0x100));
        assert!(!baton_pci::msix::is_interrupt_register(&function, offset + 12));
    }
}

#[test]
fn a_table_entry_is_address_data_and_mask() {
    assert_eq!(baton_pci::msix::table_entry(0xfee0_1000, 0x41, false), [0xfee0_1000, 0, 0x41, 0]);
    assert_eq!(baton_pci::msix::table_entry(0x1_0802_0040, 80, true), [0x0802_0040, 1, 80, 1]);
}
