//! Host tests: round trips, one test per rejection rule, limits, isolation of broken processes and property tests.
//!
//! Rules are broken in one of two ways. A rule about the encoding (sizes,
//! numbers, node names) is broken by rewriting a valid blob as a
//! [`TreeNode`] and changing one property or node. A rule about the
//! decoded description is broken by changing one field of a sample
//! description: the writer must refuse it, and the same blob written
//! without checks ([`crate::writer::encode`]) must be refused by the
//! reader with the same error.

mod devices;
mod grants;
mod limits;
mod proptests;
mod rejections;
mod round_trip;

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use arrayvec::{ArrayString, ArrayVec};
use baton_abi::Message;
use baton_kho::fdt::{SubFdtWriter, parse_fdt};

use crate::{
    Architecture, Mapping, MappingKind, PendingResult, PhysicalRun, ProcessDescription, ProcessError, SchedulingState,
    UserRegisters, read_processes, write_processes,
};
use crate::{DeviceBar, DeviceBarKind, DeviceRecord};

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;

/// One run of `size_bytes` at `phys_start`.
pub(crate) fn run(phys_start: u64, size_bytes: u64) -> PhysicalRun {
    PhysicalRun { phys_start, size_bytes }
}

/// A mapping of `kind` with the given access and runs; its size is their sum.
pub(crate) fn mapping(virtual_start: u64, kind: MappingKind, access: &str, runs: &[PhysicalRun]) -> Mapping {
    Mapping {
        virtual_start,
        size_bytes: runs.iter().map(|run| run.size_bytes).sum(),
        kind,
        is_writable: access.contains('w'),
        is_executable: access.contains('x'),
        folio_order: 0,
        grant_id: if kind == MappingKind::Shared { 1 } else { 0 },
        runs: runs.to_vec(),
    }
}

/// Plausible user registers: distinct general registers, a user-mode
/// state with interrupts enabled.
pub(crate) fn registers(architecture: Architecture, seed: u64) -> UserRegisters {
    let mut general = [0_u64; crate::MAX_GENERAL_REGISTERS];
    for (index, register) in general.iter_mut().take(architecture.general_register_count()).enumerate() {
        *register = (seed << 32) | ((index as u64 + 1) * 0x1111);
    }
    match architecture {
        Architecture::X86_64 => UserRegisters {
            general,
            instruction_pointer: 0x40_1234,
            stack_pointer: 0x7fff_fffe_ff80,
            flags: 0x246,
            thread_pointer: 0x7f00_0000_1000,
        },
        Architecture::Aarch64 => UserRegisters {
            general,
            instruction_pointer: 0x40_1234,
            stack_pointer: 0x7fff_fffe_ff80,
            flags: 0x6000_0000,
            thread_pointer: 0xffff_0000_dead_beef,
        },
    }
}

/// The mappings of a realistic service: text, data, heap, stack, a
/// two-run preservable region of 2 MiB folios, another of pages and the
/// handover FDT. Physical memory starts at `phys_base`.
pub(crate) fn sample_mappings(phys_base: u64) -> Vec<Mapping> {
    let mut preservable_huge = mapping(
        0x10_0000_0000,
        MappingKind::Preservable,
        "rw",
        &[run(phys_base + 64 * MIB, 4 * MIB), run(phys_base + 96 * MIB, 2 * MIB)],
    );
    preservable_huge.folio_order = 9;
    vec![
        mapping(0x40_0000, MappingKind::Image, "rx", &[run(phys_base, 12 * KIB)]),
        mapping(0x40_3000, MappingKind::Image, "r", &[run(phys_base + 0x10_0000, 4 * KIB)]),
        mapping(0x40_4000, MappingKind::Image, "rw", &[run(phys_base + 0x20_0000, 8 * KIB)]),
        mapping(
            0x100_0000,
            MappingKind::Heap,
            "rw",
            &[run(phys_base + 0x30_0000, 16 * KIB), run(phys_base + 0x38_0000, 8 * KIB)],
        ),
        mapping(
            0x7fff_fffe_0000,
            MappingKind::Stack,
            "rw",
            &[run(phys_base + 0x40_0000, 32 * KIB), run(phys_base + 0x48_0000, 32 * KIB)],
        ),
        preservable_huge,
        mapping(
            0x10_0100_0000,
            MappingKind::Preservable,
            "rw",
            &[
                run(phys_base + 0x50_0000, 4 * KIB),
                run(phys_base + 0x50_2000, 12 * KIB),
                run(phys_base + 0x60_0000, 4 * KIB),
            ],
        ),
        mapping(0x20_0000_0000, MappingKind::HandoverFdt, "r", &[run(phys_base + 0x70_0000, 8 * KIB)]),
    ]
}

/// A process with every part filled in.
pub(crate) fn sample_process(
    architecture: Architecture,
    service_id: u64,
    name: &str,
    scheduling: SchedulingState,
) -> ProcessDescription {
    let mut binary_hash = [0_u8; crate::BINARY_HASH_BYTES];
    for (index, byte) in binary_hash.iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(37) ^ service_id as u8;
    }
    ProcessDescription {
        service_id,
        name: ArrayString::from(name).unwrap(),
        binary_hash,
        abi_version: 1,
        is_subscribed: service_id % 2 == 1,
        is_privileged: service_id == 1,
        architecture,
        registers: registers(architecture, service_id),
        mappings: sample_mappings(0x1_0000_0000 * service_id),
        scheduling,
        pending_result: None,
        queued_messages: ArrayVec::new(),
        answerable: ArrayVec::new(),
        devices: ArrayVec::new(),
        grants: ArrayVec::new(),
    }
}

/// A virtio network card at 00:02.0 as QEMU's aarch64 `virt` places it: a
/// 4 KiB 32-bit BAR 1 and a 16 KiB 64-bit prefetchable BAR 4, both
/// reached by the CPU at their bus addresses plus `cpu_offset`.
pub(crate) fn sample_device(cpu_offset: u64) -> DeviceRecord {
    let mut bars = ArrayVec::new();
    bars.push(DeviceBar {
        index: 1,
        kind: DeviceBarKind::Memory32 { is_prefetchable: false },
        bus_address: 0x1000_1000,
        cpu_address: 0x1000_1000 + cpu_offset,
        size_bytes: 4 * KIB,
    });
    bars.push(DeviceBar {
        index: 4,
        kind: DeviceBarKind::Memory64 { is_prefetchable: true },
        bus_address: 0x80_0000_0000,
        cpu_address: 0x80_0000_0000 + cpu_offset,
        size_bytes: 16 * KIB,
    });
    bars.push(DeviceBar {
        index: 0,
        kind: DeviceBarKind::Io,
        bus_address: 0x1000,
        cpu_address: 0x1000,
        size_bytes: 32,
    });
    DeviceRecord { bus: 0, device: 2, function: 0, vendor_id: 0x1af4, device_id: 0x1000, bars }
}

/// Four processes, one in each scheduling state, with pending results,
/// queued messages and answerable callers spread among them. Process 0
/// (service 1) is the one rejection tests break.
pub(crate) fn sample_processes(architecture: Architecture) -> Vec<ProcessDescription> {
    let mut init = sample_process(architecture, 1, "init", SchedulingState::Ready);
    init.pending_result = Some(PendingResult { status: 0, value: 0x2a });
    init.queued_messages.push(Message { label: 7, sender: 3, words: [1, 2, 3, 4, 5, 6] });
    init.queued_messages.push(Message { label: 0x4b48_4f01, sender: u64::MAX, words: [0; 6] });
    init.answerable.push(4);
    init.devices.push(sample_device(0));
    // The device's 64-bit BAR, mapped whole.
    init.mappings.push(mapping(0x30_0000_0000, MappingKind::Device, "rw", &[run(0x80_0000_0000, 16 * KIB)]));

    // 8 KiB of kvstore's preservable memory (the second run of its mapping
    // at 0x10_0100_0000), granted to init and mapped there.
    init.mappings.push(mapping(0x40_0000_0000, MappingKind::Shared, "rw", &[run(0x2_0050_2000, 8 * KIB)]));

    let mut kvstore =
        sample_process(architecture, 2, "kvstore", SchedulingState::Receiving { message_buffer: 0x100_0040 });
    kvstore.grants.push(crate::GrantRecord {
        grant_id: 1,
        peer: ArrayString::from("init").unwrap(),
        virtual_start: 0x10_0100_1000,
        size_bytes: 8 * KIB,
        peer_virtual_start: Some(0x40_0000_0000),
    });
    let mut counter = sample_process(
        architecture,
        3,
        "counter",
        SchedulingState::Calling { target: 2, message_buffer: 0x7fff_fffe_ff00 },
    );
    counter.queued_messages.push(Message { label: 1, sender: 4, words: [u64::MAX; 6] });
    counter.answerable.push(4);
    counter.answerable.push(0x10);

    let mut client =
        sample_process(architecture, 0x1f, "client.v2_a+b-c", SchedulingState::Sleeping { until_ns: 12_345_678_901 });
    client.pending_result = Some(PendingResult { status: baton_abi::Error::WouldBlock.number(), value: 0 });
    vec![init, kvstore, counter, client]
}

/// A blob read back, every process accepted.
pub(crate) fn read_all(blob: &[u8], architecture: Architecture) -> Vec<ProcessDescription> {
    read_processes(blob, architecture).unwrap().into_iter().collect::<Result<Vec<_>, _>>().unwrap()
}

/// The error of process node `node_index`; every other process must read.
pub(crate) fn only_error(blob: &[u8], architecture: Architecture, node_index: usize) -> ProcessError {
    let results = read_processes(blob, architecture).unwrap();
    let mut found = None;
    for (index, result) in results.into_iter().enumerate() {
        match (index == node_index, result) {
            (true, Err(error)) => found = Some(error),
            (true, Ok(description)) => panic!("process {index} was accepted: {description:?}"),
            (false, Err(error)) => panic!("process {index} was refused too: {error}"),
            (false, Ok(_)) => {}
        }
    }
    let error = found.expect("no such process node");
    assert_eq!(error.node_index, node_index);
    error
}

/// An FDT as plain data, to rewrite a valid blob with one thing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeNode {
    pub(crate) name: String,
    pub(crate) properties: Vec<(String, Vec<u8>)>,
    pub(crate) children: Vec<TreeNode>,
}

/// The properties of an `fdt` crate node (whose type this crate cannot
/// name) as owned pairs.
macro_rules! owned_properties {
    ($node:expr) => {
        $node.properties().map(|property| (property.name.to_string(), property.value.to_vec())).collect()
    };
}

impl TreeNode {
    /// A node without properties or children.
    pub(crate) fn new(name: &str) -> Self {
        Self { name: name.to_string(), properties: Vec::new(), children: Vec::new() }
    }

    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.properties.iter().find(|(property, _)| property == name).map(|(_, value)| value.as_slice())
    }

    /// Replace the value of `name`, or add the property at the end.
    pub(crate) fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        let value = value.into();
        match self.properties.iter_mut().find(|(property, _)| property == name) {
            Some((_, slot)) => *slot = value,
            None => self.properties.push((name.to_string(), value)),
        }
    }

    /// Add `name` even if it is already there.
    pub(crate) fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.properties.push((name.to_string(), value.into()));
    }

    /// Remove `name`, which must be there.
    pub(crate) fn remove(&mut self, name: &str) {
        let before = self.properties.len();
        self.properties.retain(|(property, _)| property != name);
        assert_ne!(before, self.properties.len(), "no property {name} to remove");
    }

    /// The child called `name`, which must be there.
    pub(crate) fn child(&mut self, name: &str) -> &mut TreeNode {
        self.children.iter_mut().find(|child| child.name == name).unwrap_or_else(|| panic!("no child {name}"))
    }
}

/// Read a blob as a tree. Description blobs are three levels deep (root,
/// processes, mappings and messages); anything deeper is not kept.
pub(crate) fn tree_of(blob: &[u8]) -> TreeNode {
    let fdt = parse_fdt(blob).unwrap();
    let root = fdt.find_node("/").unwrap();
    let mut tree = TreeNode { name: String::new(), properties: owned_properties!(root), children: Vec::new() };
    for process in root.children() {
        let mut process_node =
            TreeNode { name: process.name.to_string(), properties: owned_properties!(process), children: Vec::new() };
        for child in process.children() {
            assert!(child.children().next().is_none(), "description blobs are three levels deep");
            process_node.children.push(TreeNode {
                name: child.name.to_string(),
                properties: owned_properties!(child),
                children: Vec::new(),
            });
        }
        tree.children.push(process_node);
    }
    tree
}

/// Write a tree with the kho sub-FDT writer.
pub(crate) fn blob_of(tree: &TreeNode) -> Vec<u8> {
    fn write_node(writer: &mut SubFdtWriter, node: &TreeNode) {
        for (name, value) in &node.properties {
            writer.property(name, value).unwrap();
        }
        for child in &node.children {
            let open = writer.begin_node(&child.name).unwrap();
            write_node(writer, child);
            writer.end_node(open).unwrap();
        }
    }
    let mut writer = SubFdtWriter::new().unwrap();
    write_node(&mut writer, tree);
    writer.finish().unwrap()
}

/// The sample processes for `architecture` as a tree.
pub(crate) fn sample_tree(architecture: Architecture) -> TreeNode {
    tree_of(&write_processes(&sample_processes(architecture)).unwrap())
}

/// `words` as a native-endian property value.
pub(crate) fn words(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|word| word.to_ne_bytes()).collect()
}

/// `value` as a native-endian u32 property value.
pub(crate) fn word32(value: u32) -> Vec<u8> {
    value.to_ne_bytes().to_vec()
}
