//! Device records: they read back as written, and every rule about them refuses exactly the process that breaks it.

use super::{KIB, blob_of, only_error, read_all, run, sample_device, sample_processes, sample_tree, word32, words};
use crate::wire::DEVICE_PROPERTIES;
use crate::writer::encode;
use crate::{
    Architecture, DeviceBar, DeviceBarKind, MappingKind, Part, ProcessDescription, ProcessErrorKind, WriteError,
    read_processes, write_processes,
};

use Architecture::{Aarch64, X86_64};
use ProcessErrorKind as Kind;

const DEVICE_0: Part = Part::Device { device_index: 0 };

/// Break process 0's description (it drives the sample card): the writer
/// refuses it, and the reader refuses it written without checks, with the
/// same part and kind.
fn refused_rule(edit: impl FnOnce(&mut ProcessDescription), part: Part, kind: ProcessErrorKind) {
    let mut processes = sample_processes(X86_64);
    edit(&mut processes[0]);
    assert_eq!(write_processes(&processes), Err(WriteError::InvalidProcess { process_index: 0, part, kind }));
    let error = only_error(&encode(&processes).unwrap(), X86_64, 0);
    assert_eq!((error.part, error.kind), (part, kind), "{error}");
}

/// The position of process 0's device mapping.
fn device_mapping(process: &ProcessDescription) -> usize {
    process.mappings.iter().position(|mapping| mapping.kind == MappingKind::Device).unwrap()
}

#[test]
fn a_device_record_reads_back_as_written() {
    for architecture in [X86_64, Aarch64] {
        let mut processes = sample_processes(architecture);
        // A second card behind a window that moves CPU addresses.
        let mut other = sample_device(0x3eff_0000);
        other.bus = 1;
        other.function = 3;
        other.vendor_id = 0xffff;
        other.device_id = 0x0001;
        processes[1].devices.push(other);
        let blob = write_processes(&processes).unwrap();
        assert_eq!(read_all(&blob, architecture), processes);
    }
}

#[test]
fn device_runs_are_not_memory_runs() {
    let processes = sample_processes(X86_64);
    let runs: Vec<_> = processes[0].physical_runs().collect();
    assert!(!runs.iter().any(|run| run.phys_start == 0x80_0000_0000), "{runs:?}");
    assert!(!runs.is_empty());
}

#[test]
fn a_device_mapping_must_lie_inside_a_memory_bar() {
    // One page past the 16 KiB BAR's end.
    refused_rule(
        |process| {
            let index = device_mapping(process);
            process.mappings[index].runs[0] = run(0x80_0000_1000, 16 * KIB);
        },
        Part::Mapping { mapping_index: 8 },
        Kind::DeviceRunOutsideBars { run_index: 0 },
    );
    // I/O BARs are never mapped.
    refused_rule(
        |process| {
            let index = device_mapping(process);
            // The I/O BAR at 0x1000, made a page long: a mapping of it
            // would lie inside it, were it memory.
            process.mappings[index].runs[0] = run(0x1000, 4 * KIB);
            process.mappings[index].size_bytes = 4 * KIB;
            process.devices[0].bars[2].size_bytes = 4 * KIB;
        },
        Part::Mapping { mapping_index: 8 },
        Kind::DeviceRunOutsideBars { run_index: 0 },
    );
    // Without the device, its registers are nobody's.
    refused_rule(
        |process| process.devices.clear(),
        Part::Mapping { mapping_index: 8 },
        Kind::DeviceRunOutsideBars { run_index: 0 },
    );
}

#[test]
fn a_device_mapping_is_never_executable_nor_in_folios() {
    refused_rule(
        |process| {
            let index = device_mapping(process);
            process.mappings[index].is_writable = false;
            process.mappings[index].is_executable = true;
        },
        Part::Mapping { mapping_index: 8 },
        Kind::InvalidDeviceMapping,
    );
}

#[test]
fn bars_must_be_registers_of_their_own() {
    let memory64 = DeviceBarKind::Memory64 { is_prefetchable: false };
    // A 64-bit BAR at 5 would need a sixth-plus-one register.
    refused_rule(|process| process.devices[0].bars[1].index = 5, DEVICE_0, Kind::InvalidBarRegister { bar_index: 1 });
    // BAR 1 (32-bit) and a 64-bit BAR at 0 share register 1.
    refused_rule(
        |process| {
            process.devices[0].bars[2].kind = memory64;
            process.devices[0].bars[2].size_bytes = 4 * KIB;
        },
        DEVICE_0,
        Kind::InvalidBarRegister { bar_index: 2 },
    );
    refused_rule(|process| process.devices[0].bars[2].index = 6, DEVICE_0, Kind::InvalidBarRegister { bar_index: 2 });
}

#[test]
fn bars_must_be_ranges_a_bus_can_have() {
    refused_rule(
        |process| process.devices[0].bars[0].size_bytes = 3 * KIB,
        DEVICE_0,
        Kind::InvalidBarRange { bar_index: 0 },
    );
    refused_rule(|process| process.devices[0].bars[0].size_bytes = 0, DEVICE_0, Kind::InvalidBarRange { bar_index: 0 });
    // A 32-bit BAR above 4 GiB.
    refused_rule(
        |process| process.devices[0].bars[0].bus_address = 0xffff_f000 + 4 * KIB,
        DEVICE_0,
        Kind::InvalidBarRange { bar_index: 0 },
    );
    refused_rule(
        |process| process.devices[0].bars[1].cpu_address = u64::MAX - KIB,
        DEVICE_0,
        Kind::InvalidBarRange { bar_index: 1 },
    );
}

#[test]
fn a_function_is_recorded_once_and_exists() {
    refused_rule(
        |process| {
            let again = process.devices[0].clone();
            process.devices.push(again);
        },
        Part::Device { device_index: 1 },
        Kind::DuplicateDevice,
    );
    // Numbers the word cannot carry (in a blob they would read as
    // another function): only the writer sees them.
    for (device, function, word) in [(32, 0, 0x100), (2, 8, 0x18)] {
        let mut processes = sample_processes(X86_64);
        processes[0].devices[0].device = device;
        processes[0].devices[0].function = function;
        let refused = Err(WriteError::InvalidProcess {
            process_index: 0,
            part: DEVICE_0,
            kind: Kind::InvalidPciAddress { word },
        });
        assert_eq!(write_processes(&processes), refused);
    }
}

#[test]
fn too_many_devices_or_bars_are_refused() {
    // Five records in a blob (a description cannot hold them).
    let mut tree = sample_tree(X86_64);
    let card = tree.children[0].child("device@0").clone();
    for position in 1..=4 {
        let mut more = card.clone();
        more.name = format!("device@{position}");
        more.set("pci-address", word32(position));
        tree.children[0].children.push(more);
    }
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!((error.part, error.kind), (Part::Process, Kind::TooManyDevices));
    // Seven BARs in a blob (a record cannot hold them).
    let mut tree = sample_tree(X86_64);
    let bar = |index: u64| [index | 2 << 8, 0x1000 * (index + 1), 0x1000 * (index + 1), 0x1000];
    let seven: Vec<u64> = (0..7).flat_map(bar).collect();
    tree.children[0].child("device@0").set("bars", words(&seven));
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!((error.part, error.kind), (DEVICE_0, Kind::TooManyBars { count: 7 }));
}

#[test]
fn a_damaged_device_node_is_refused_for_its_process_only() {
    let refused_node = |edit: &dyn Fn(&mut super::TreeNode), kind: ProcessErrorKind| {
        let mut tree = sample_tree(X86_64);
        edit(tree.children[0].child("device@0"));
        let error = only_error(&blob_of(&tree), X86_64, 0);
        assert_eq!((error.part, error.kind), (DEVICE_0, kind), "{error}");
    };
    for property in DEVICE_PROPERTIES {
        refused_node(&|device| device.remove(property.name()), Kind::MissingProperty { property });
    }
    refused_node(&|device| device.set("pci-address", word32(0x1_0000)), Kind::InvalidPciAddress { word: 0x1_0000 });
    refused_node(
        &|device| device.set("bars", words(&[1 | 9 << 8, 0, 0, 0x1000])),
        Kind::UnknownBarKind { bar_index: 0, number: 9 },
    );
    refused_node(
        &|device| device.set("bars", words(&[1 | 2 << 8, 0x1000])),
        Kind::PropertyNotWholeEntries { property: crate::Property::Bars, size_bytes: 16 },
    );
    // No BARs at all is a record the format takes; the sample's device
    // mapping then lies outside every BAR.
    let mut tree = sample_tree(X86_64);
    tree.children[0].child("device@0").set("bars", words(&[]));
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!(error.kind, Kind::DeviceRunOutsideBars { run_index: 0 });
    assert!(read_processes(&blob_of(&tree), X86_64).unwrap()[1].is_ok());
}

#[test]
fn a_bar_kind_number_round_trips() {
    for kind in [
        DeviceBarKind::Io,
        DeviceBarKind::Memory32 { is_prefetchable: false },
        DeviceBarKind::Memory32 { is_prefetchable: true },
        DeviceBarKind::Memory64 { is_prefetchable: false },
        DeviceBarKind::Memory64 { is_prefetchable: true },
    ] {
        assert_eq!(DeviceBarKind::from_number(kind.number()), Some(kind));
    }
    assert_eq!(DeviceBarKind::from_number(0), None);
    let bar = DeviceBar { index: 0, kind: DeviceBarKind::Io, bus_address: 0, cpu_address: 0, size_bytes: 4 };
    assert!(!bar.kind.is_memory());
}
