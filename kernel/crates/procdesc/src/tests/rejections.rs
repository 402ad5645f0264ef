//! One test per rejection rule: a valid blob or description with exactly one thing broken.

use alloc::string::String;
use alloc::vec::Vec;

use arrayvec::ArrayString;
use baton_abi::USER_ADDRESS_LIMIT;
use baton_kho::fdt::FdtStructureError;

use super::{KIB, TreeNode, blob_of, only_error, read_all, run, sample_processes, sample_tree, tree_of, word32, words};
use crate::wire::{MAPPING_PROPERTIES, MESSAGE_PROPERTIES, PROCESS_PROPERTIES};
use crate::writer::encode;
use crate::{
    Architecture, DescriptionError, Part, PendingResult, ProcessDescription, ProcessErrorKind, Property,
    SchedulingState, WriteError, read_processes, write_processes,
};

use Architecture::{Aarch64, X86_64};
use ProcessErrorKind as Kind;

// ---------------------------------------------------------------------------
// Helpers.

/// Break process node `node_index` of the x86_64 sample blob with `edit`;
/// that node must be refused with `kind` at `part`, every other one read.
fn refused_node(node_index: usize, edit: impl FnOnce(&mut TreeNode), part: Part, kind: ProcessErrorKind) {
    let mut tree = sample_tree(X86_64);
    edit(&mut tree.children[node_index]);
    let error = only_error(&blob_of(&tree), X86_64, node_index);
    assert_eq!((error.part, error.kind), (part, kind), "{error}");
}

/// [`refused_node`] for node 0 (service 1, ready, two queued messages).
fn refused(edit: impl FnOnce(&mut TreeNode), part: Part, kind: ProcessErrorKind) {
    refused_node(0, edit, part, kind);
}

/// Break process 0 of the `architecture` samples with `edit`: the writer
/// must refuse it, and the reader must refuse the same description
/// written without checks, with the same part and kind.
fn refused_rule(
    architecture: Architecture,
    edit: impl FnOnce(&mut ProcessDescription),
    part: Part,
    kind: ProcessErrorKind,
) {
    let mut processes = sample_processes(architecture);
    edit(&mut processes[0]);
    assert_eq!(write_processes(&processes), Err(WriteError::InvalidProcess { process_index: 0, part, kind }));
    let error = only_error(&encode(&processes).unwrap(), architecture, 0);
    assert_eq!((error.part, error.kind, error.service_id), (part, kind, Some(1)), "{error}");
}

const MAPPING_0: Part = Part::Mapping { mapping_index: 0 };

fn mapping_part(mapping_index: usize) -> Part {
    Part::Mapping { mapping_index }
}

/// Break the root of the x86_64 sample blob; the whole blob is refused.
fn refused_root(edit: impl FnOnce(&mut TreeNode), expected: DescriptionError) {
    let mut tree = sample_tree(X86_64);
    edit(&mut tree);
    assert_eq!(read_processes(&blob_of(&tree), X86_64), Err(expected));
}

// ---------------------------------------------------------------------------
// The blob as a whole.

#[test]
fn bytes_that_are_not_an_fdt_are_refused() {
    assert_eq!(
        read_processes(&[], X86_64),
        Err(DescriptionError::Structure(FdtStructureError::HeaderTruncated { available_bytes: 0 }))
    );
    let mut blob = write_processes(&sample_processes(X86_64)).unwrap();
    blob[0] ^= 0xff;
    assert!(matches!(
        read_processes(&blob, X86_64),
        Err(DescriptionError::Structure(FdtStructureError::BadMagic { .. }))
    ));
    let blob = write_processes(&sample_processes(X86_64)).unwrap();
    assert!(matches!(read_processes(&blob[..blob.len() - 1], X86_64), Err(DescriptionError::Structure(_))));
}

#[test]
fn a_root_without_compatible_is_refused() {
    refused_root(|root| root.remove("compatible"), DescriptionError::MissingCompatible);
}

#[test]
fn another_format_is_incompatible() {
    for compatible in [&b"kho-v1\0"[..], b"baton,processes-v2\0", b"baton,processes-v1", b"baton,processes-v1\0\0"] {
        refused_root(|root| root.set("compatible", compatible), DescriptionError::Incompatible);
    }
    let kho_root = baton_kho::KhoFdtBuilder::new(0).build().unwrap();
    assert_eq!(read_processes(&kho_root, X86_64), Err(DescriptionError::Incompatible));
}

#[test]
fn a_root_without_format_version_is_refused() {
    refused_root(|root| root.remove("format-version"), DescriptionError::MissingFormatVersion);
}

#[test]
fn a_format_version_of_the_wrong_size_is_refused() {
    refused_root(
        |root| root.set("format-version", words(&[1])),
        DescriptionError::BadFormatVersionSize { size_bytes: 8 },
    );
}

#[test]
fn an_unknown_format_version_is_refused() {
    for version in [0, 2, u32::MAX] {
        refused_root(
            |root| root.set("format-version", word32(version)),
            DescriptionError::UnsupportedFormatVersion { version },
        );
    }
}

#[test]
fn a_repeated_root_property_is_refused() {
    refused_root(|root| root.push("format-version", word32(1)), DescriptionError::DuplicateRootProperty);
}

#[test]
fn an_unexpected_root_property_is_refused() {
    refused_root(|root| root.push("generation", word32(1)), DescriptionError::UnexpectedRootProperty);
}

// ---------------------------------------------------------------------------
// Nodes.

#[test]
fn a_process_node_must_be_named_by_its_id_in_lowercase_hex() {
    for name in
        ["proc@1", "process", "process@01", "process@0x1", "process@1A", "processes@1", "process@10000000000000001"]
    {
        let mut tree = sample_tree(X86_64);
        tree.children[0].name = String::from(name);
        let error = only_error(&blob_of(&tree), X86_64, 0);
        assert_eq!((error.part, error.kind, error.service_id), (Part::Process, Kind::InvalidNodeName, None), "{name}");
    }
}

#[test]
fn a_service_id_must_match_the_node_name() {
    let mut tree = sample_tree(X86_64);
    tree.children[0].name = String::from("process@99");
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!(error.kind, Kind::ServiceIdDoesNotMatchNodeName { node_name_id: 0x99 });
    assert_eq!(error.service_id, Some(1), "the property is believed over the name");
}

#[test]
fn an_unexpected_child_node_is_refused() {
    refused(
        |process| process.children.push(TreeNode::new("thread@0")),
        Part::Process,
        Kind::UnexpectedChildNode { child_index: 13 },
    );
    refused(
        |process| process.children[0].name = String::from("mapping@00"),
        Part::Process,
        Kind::UnexpectedChildNode { child_index: 0 },
    );
}

#[test]
fn mapping_and_message_nodes_must_be_numbered_in_order() {
    refused(
        |process| process.child("mapping@1").name = String::from("mapping@9"),
        mapping_part(1),
        Kind::ChildNodeOutOfSequence,
    );
    refused(
        |process| process.child("message@1").name = String::from("message@0"),
        Part::QueuedMessage { message_index: 1 },
        Kind::ChildNodeOutOfSequence,
    );
}

#[test]
fn mapping_and_message_nodes_have_no_children() {
    refused(
        |process| process.child("mapping@2").children.push(TreeNode::new("deeper")),
        mapping_part(2),
        Kind::NestedNode,
    );
    refused(
        |process| process.child("message@0").children.push(TreeNode::new("deeper")),
        Part::QueuedMessage { message_index: 0 },
        Kind::NestedNode,
    );
}

// ---------------------------------------------------------------------------
// Properties.

#[test]
fn every_required_property_must_be_present() {
    let optional = [
        Property::MessageBuffer,
        Property::CallTarget,
        Property::SleepUntil,
        Property::PendingResultStatus,
        Property::PendingResultValue,
    ];
    for property in PROCESS_PROPERTIES.into_iter().filter(|property| !optional.contains(property)) {
        refused(|process| process.remove(property.name()), Part::Process, Kind::MissingProperty { property });
    }
    for property in MAPPING_PROPERTIES.into_iter().filter(|property| *property != Property::GrantId) {
        refused(
            |process| process.child("mapping@4").remove(property.name()),
            mapping_part(4),
            Kind::MissingProperty { property },
        );
    }
    for property in MESSAGE_PROPERTIES {
        refused(
            |process| process.child("message@1").remove(property.name()),
            Part::QueuedMessage { message_index: 1 },
            Kind::MissingProperty { property },
        );
    }
}

#[test]
fn every_scheduling_state_needs_its_properties() {
    let property = Property::MessageBuffer;
    refused_node(1, |receiving| receiving.remove(property.name()), Part::Process, Kind::MissingProperty { property });
    refused_node(2, |calling| calling.remove(property.name()), Part::Process, Kind::MissingProperty { property });
    let property = Property::CallTarget;
    refused_node(2, |calling| calling.remove(property.name()), Part::Process, Kind::MissingProperty { property });
    let property = Property::SleepUntil;
    refused_node(3, |sleeping| sleeping.remove(property.name()), Part::Process, Kind::MissingProperty { property });
}

#[test]
fn a_property_must_not_repeat() {
    let property = Property::AbiVersion;
    refused(|process| process.push(property.name(), word32(1)), Part::Process, Kind::DuplicateProperty { property });
    let property = Property::Kind;
    refused(
        |process| process.child("mapping@0").push(property.name(), word32(1)),
        MAPPING_0,
        Kind::DuplicateProperty { property },
    );
}

#[test]
fn a_property_outside_the_format_is_refused() {
    refused(
        |process| process.push("priority", word32(1)),
        Part::Process,
        Kind::UnexpectedProperty { property_index: 15 },
    );
    refused(
        |process| process.child("mapping@0").push("cache-policy", word32(1)),
        MAPPING_0,
        Kind::UnexpectedProperty { property_index: 6 },
    );
    // A property of a mapping does not belong on a process.
    refused(|process| process.push("kind", word32(1)), Part::Process, Kind::UnexpectedProperty { property_index: 15 });
}

#[test]
fn fixed_size_properties_must_have_their_size() {
    let cases: [(Property, usize); 10] = [
        (Property::ServiceId, 8),
        (Property::BinaryHash, 32),
        (Property::AbiVersion, 4),
        (Property::ServiceFlags, 4),
        (Property::Architecture, 4),
        (Property::GeneralRegisters, 15 * 8),
        (Property::InstructionPointer, 8),
        (Property::FlagsRegister, 8),
        (Property::SchedulingState, 4),
        (Property::PendingResultValue, 8),
    ];
    for (property, size_bytes) in cases {
        for wrong in [size_bytes - 1, size_bytes + 1, 0] {
            let kind = if wrong < size_bytes {
                Kind::PropertyTooShort { property, size_bytes: wrong }
            } else {
                Kind::PropertyTooLong { property, size_bytes: wrong }
            };
            let mut tree = sample_tree(X86_64);
            tree.children[0].set(property.name(), alloc::vec![0_u8; wrong]);
            let error = only_error(&blob_of(&tree), X86_64, 0);
            // A service id of the wrong size cannot be checked against the name.
            assert_eq!((error.part, error.kind), (Part::Process, kind), "{property} of {wrong} bytes");
        }
    }
    let cases: [(&str, Property, usize); 3] = [
        ("mapping@0", Property::SizeBytes, 8),
        ("mapping@0", Property::FolioOrder, 4),
        ("message@0", Property::Words, 48),
    ];
    for (node, property, size_bytes) in cases {
        let part = if node.starts_with("mapping") { MAPPING_0 } else { Part::QueuedMessage { message_index: 0 } };
        refused(
            |process| process.child(node).set(property.name(), alloc::vec![0_u8; size_bytes + 8]),
            part,
            Kind::PropertyTooLong { property, size_bytes: size_bytes + 8 },
        );
        refused(
            |process| process.child(node).set(property.name(), alloc::vec![0_u8; size_bytes - 1]),
            part,
            Kind::PropertyTooShort { property, size_bytes: size_bytes - 1 },
        );
    }
}

#[test]
fn general_registers_are_counted_for_the_architecture() {
    // An aarch64-sized register list on an x86_64 process, and the reverse.
    let property = Property::GeneralRegisters;
    refused(
        |process| process.set(property.name(), words(&[0; 31])),
        Part::Process,
        Kind::PropertyTooLong { property, size_bytes: 31 * 8 },
    );
    let mut tree = sample_tree(Aarch64);
    tree.children[0].set(property.name(), words(&[0; 15]));
    let error = only_error(&blob_of(&tree), Aarch64, 0);
    assert_eq!(error.kind, Kind::PropertyTooShort { property, size_bytes: 15 * 8 });
}

#[test]
fn list_properties_must_hold_whole_entries() {
    let property = Property::Answerable;
    refused(
        |process| process.set(property.name(), alloc::vec![0_u8; 12]),
        Part::Process,
        Kind::PropertyNotWholeEntries { property, size_bytes: 12 },
    );
    let property = Property::PhysicalRuns;
    for size_bytes in [20, 24] {
        refused(
            |process| process.child("mapping@0").set(property.name(), alloc::vec![0_u8; size_bytes]),
            MAPPING_0,
            Kind::PropertyNotWholeEntries { property, size_bytes },
        );
    }
}

#[test]
fn a_scheduling_property_must_belong_to_the_state() {
    let property = Property::CallTarget;
    refused(|ready| ready.set(property.name(), words(&[2])), Part::Process, Kind::PropertyNotForState { property });
    let property = Property::SleepUntil;
    refused_node(
        1,
        |receiving| receiving.set(property.name(), words(&[9])),
        Part::Process,
        Kind::PropertyNotForState { property },
    );
    let property = Property::MessageBuffer;
    refused_node(
        3,
        |sleeping| sleeping.set(property.name(), words(&[0x1000])),
        Part::Process,
        Kind::PropertyNotForState { property },
    );
}

#[test]
fn a_pending_result_needs_both_status_and_value() {
    refused(|process| process.remove("pending-result-value"), Part::Process, Kind::IncompletePendingResult);
    refused(|process| process.remove("pending-result-status"), Part::Process, Kind::IncompletePendingResult);
}

// ---------------------------------------------------------------------------
// Identity.

#[test]
fn a_name_must_be_one_terminated_string() {
    for name in [&b"init"[..], b"in\0it\0", b""] {
        refused(|process| process.set("name", name), Part::Process, Kind::NameNotTerminated);
    }
}

#[test]
fn a_name_must_be_a_valid_service_name() {
    let too_long = [b'a'; 32].iter().copied().chain([0]).collect::<Vec<u8>>();
    for name in [&b"\0"[..], b"9lives\0", b"in it\0", b"in/it\0", b"unit@1\0", b"\xff\xfe\0", &too_long] {
        refused(|process| process.set("name", name), Part::Process, Kind::InvalidName);
    }
    refused_rule(
        X86_64,
        |process| process.name = ArrayString::from("has space").unwrap(),
        Part::Process,
        Kind::InvalidName,
    );
    refused_rule(X86_64, |process| process.name = ArrayString::new(), Part::Process, Kind::InvalidName);
}

#[test]
fn unknown_service_flags_are_refused() {
    refused(
        |process| process.set("service-flags", word32(0b111)),
        Part::Process,
        Kind::UnknownServiceFlags { flags: 0b111 },
    );
}

// ---------------------------------------------------------------------------
// Architecture and registers.

#[test]
fn an_unknown_architecture_is_refused() {
    for number in [0, 3] {
        refused(
            |process| process.set("architecture", word32(number)),
            Part::Process,
            Kind::UnknownArchitecture { number },
        );
    }
}

#[test]
fn a_process_for_another_architecture_is_refused() {
    refused(
        |process| process.set("architecture", word32(2)),
        Part::Process,
        Kind::ArchitectureMismatch { found: Aarch64, expected: X86_64 },
    );
    // The whole x86_64 blob read by an aarch64 kernel: every process refused.
    let blob = write_processes(&sample_processes(X86_64)).unwrap();
    for result in read_processes(&blob, Aarch64).unwrap() {
        assert_eq!(result.unwrap_err().kind, Kind::ArchitectureMismatch { found: X86_64, expected: Aarch64 });
    }
}

#[test]
fn unused_general_registers_must_be_zero_to_be_written() {
    let mut processes = sample_processes(X86_64);
    processes[0].registers.general[15] = 1;
    assert_eq!(
        write_processes(&processes),
        Err(WriteError::InvalidProcess {
            process_index: 0,
            part: Part::Process,
            kind: Kind::UnusedGeneralRegisterNotZero { register_index: 15 }
        })
    );
}

#[test]
fn the_instruction_pointer_must_be_in_the_user_half() {
    for architecture in Architecture::ALL {
        refused_rule(
            architecture,
            |process| process.registers.instruction_pointer = USER_ADDRESS_LIMIT,
            Part::Process,
            Kind::InstructionPointerOutsideUserHalf { address: USER_ADDRESS_LIMIT },
        );
    }
}

#[test]
fn the_stack_pointer_must_be_in_the_user_half() {
    for architecture in Architecture::ALL {
        refused_rule(
            architecture,
            |process| process.registers.stack_pointer = USER_ADDRESS_LIMIT + 8,
            Part::Process,
            Kind::StackPointerOutsideUserHalf { address: USER_ADDRESS_LIMIT + 8 },
        );
    }
}

#[test]
fn the_flags_must_be_a_user_mode_state() {
    for (architecture, flags) in [(X86_64, 0x3202), (X86_64, 0x46), (Aarch64, 0x5), (Aarch64, 0x3c0)] {
        refused_rule(
            architecture,
            |process| process.registers.flags = flags,
            Part::Process,
            Kind::FlagsNotUserMode { flags },
        );
    }
}

#[test]
fn an_x86_64_thread_pointer_must_be_canonical() {
    let address = 0x0000_8000_0000_0000;
    refused_rule(
        X86_64,
        |process| process.registers.thread_pointer = address,
        Part::Process,
        Kind::ThreadPointerNotCanonical { address },
    );
    // Any value fits TPIDR_EL0.
    let mut processes = sample_processes(Aarch64);
    processes[0].registers.thread_pointer = address;
    assert_eq!(read_all(&write_processes(&processes).unwrap(), Aarch64), processes);
}

// ---------------------------------------------------------------------------
// Mappings.

#[test]
fn an_unknown_mapping_kind_is_refused() {
    for number in [0, 8] {
        refused(
            |process| process.child("mapping@0").set("kind", word32(number)),
            MAPPING_0,
            Kind::UnknownMappingKind { number },
        );
    }
}

#[test]
fn unknown_access_flags_are_refused() {
    refused(
        |process| process.child("mapping@0").set("access-flags", word32(4)),
        MAPPING_0,
        Kind::UnknownAccessFlags { flags: 4 },
    );
}

#[test]
fn a_mapping_is_never_writable_and_executable() {
    refused_rule(X86_64, |process| process.mappings[0].is_writable = true, MAPPING_0, Kind::WritableAndExecutable);
    refused(
        |process| process.child("mapping@0").set("access-flags", word32(3)),
        MAPPING_0,
        Kind::WritableAndExecutable,
    );
}

#[test]
fn an_empty_mapping_is_refused() {
    refused_rule(X86_64, |process| process.mappings[1].size_bytes = 0, mapping_part(1), Kind::MappingEmpty);
}

#[test]
fn a_mapping_must_be_page_aligned() {
    refused_rule(
        X86_64,
        |process| process.mappings[2].virtual_start += 0x800,
        mapping_part(2),
        Kind::MappingNotPageAligned,
    );
    refused_rule(
        X86_64,
        |process| process.mappings[2].size_bytes -= 0x800,
        mapping_part(2),
        Kind::MappingNotPageAligned,
    );
}

#[test]
fn a_mapping_end_must_not_overflow() {
    refused_rule(
        X86_64,
        |process| process.mappings[7].virtual_start = 0xffff_ffff_ffff_f000,
        mapping_part(7),
        Kind::MappingEndOverflows,
    );
}

#[test]
fn a_mapping_must_end_in_the_user_half() {
    refused_rule(
        Aarch64,
        |process| process.mappings[7].virtual_start = USER_ADDRESS_LIMIT - 0x1000,
        mapping_part(7),
        Kind::MappingPastUserAddressLimit { end: USER_ADDRESS_LIMIT + 0x1000 },
    );
    refused_rule(
        X86_64,
        |process| process.mappings[7].virtual_start = 0xffff_8000_0000_0000,
        mapping_part(7),
        Kind::MappingPastUserAddressLimit { end: 0xffff_8000_0000_2000 },
    );
}

#[test]
fn mappings_must_not_overlap() {
    refused_rule(
        X86_64,
        |process| process.mappings[1].virtual_start = 0x40_2000,
        mapping_part(1),
        Kind::MappingsOverlap { other_mapping_index: 0 },
    );
    // The same start: reported on the later one in blob order.
    refused_rule(
        X86_64,
        |process| process.mappings[2].virtual_start = 0x40_0000,
        mapping_part(2),
        Kind::MappingsOverlap { other_mapping_index: 0 },
    );
    // One inside another, listed first.
    refused_rule(
        X86_64,
        |process| process.mappings[0].virtual_start = 0x10_0010_0000,
        mapping_part(0),
        Kind::MappingsOverlap { other_mapping_index: 5 },
    );
}

#[test]
fn a_folio_order_must_be_one_a_service_can_allocate() {
    refused_rule(
        X86_64,
        |process| process.mappings[5].folio_order = 11,
        mapping_part(5),
        Kind::FolioOrderTooLarge { order: 11 },
    );
    refused_rule(
        X86_64,
        |process| process.mappings[5].folio_order = u32::MAX,
        mapping_part(5),
        Kind::FolioOrderTooLarge { order: u32::MAX },
    );
}

#[test]
fn only_preservable_mappings_have_a_folio_order() {
    refused_rule(
        X86_64,
        |process| process.mappings[3].folio_order = 1,
        mapping_part(3),
        Kind::FolioOrderWithoutPreservable { order: 1 },
    );
}

#[test]
fn a_mapping_needs_runs() {
    refused_rule(X86_64, |process| process.mappings[0].runs.clear(), MAPPING_0, Kind::MappingWithoutRuns);
}

#[test]
fn an_empty_run_is_refused() {
    refused_rule(
        X86_64,
        |process| process.mappings[3].runs.push(run(0x5000_0000, 0)),
        mapping_part(3),
        Kind::RunEmpty { run_index: 2 },
    );
}

#[test]
fn a_run_must_be_page_aligned() {
    refused_rule(
        X86_64,
        |process| process.mappings[3].runs[1].phys_start += 0x800,
        mapping_part(3),
        Kind::RunNotPageAligned { run_index: 1 },
    );
    refused_rule(
        X86_64,
        |process| {
            let heap = &mut process.mappings[3];
            heap.runs[0].size_bytes -= 0x800;
            heap.runs[1].size_bytes += 0x800;
        },
        mapping_part(3),
        Kind::RunNotPageAligned { run_index: 0 },
    );
}

#[test]
fn a_preservable_run_must_be_whole_folios() {
    refused_rule(
        X86_64,
        |process| process.mappings[5].runs[1].phys_start += 4 * KIB,
        mapping_part(5),
        Kind::RunNotFolioAligned { run_index: 1 },
    );
    refused_rule(
        X86_64,
        |process| {
            let preservable = &mut process.mappings[5];
            preservable.runs[0].size_bytes -= 4 * KIB;
            preservable.runs[1].size_bytes += 4 * KIB;
        },
        mapping_part(5),
        Kind::RunNotFolioAligned { run_index: 0 },
    );
}

#[test]
fn a_run_end_must_not_overflow() {
    refused_rule(
        X86_64,
        |process| process.mappings[0].runs[0].phys_start = 0xffff_ffff_ffff_f000,
        MAPPING_0,
        Kind::RunEndOverflows { run_index: 0 },
    );
}

#[test]
fn runs_must_add_up_to_their_mapping() {
    refused_rule(
        X86_64,
        |process| process.mappings[3].size_bytes += 4 * KIB,
        mapping_part(3),
        Kind::RunsDoNotSumToMappingSize { runs_total_bytes: 24 * KIB },
    );
    refused_rule(
        X86_64,
        |process| process.mappings[3].runs = alloc::vec![run(0, 1 << 63), run(0, 1 << 63)],
        mapping_part(3),
        Kind::RunsDoNotSumToMappingSize { runs_total_bytes: u64::MAX },
    );
}

// ---------------------------------------------------------------------------
// Scheduling.

#[test]
fn an_unknown_scheduling_state_is_refused() {
    for number in [0, 5] {
        refused(
            |process| process.set("scheduling-state", word32(number)),
            Part::Process,
            Kind::UnknownSchedulingState { number },
        );
    }
}

#[test]
fn a_message_buffer_must_be_aligned() {
    let address = 0x100_0004;
    refused_rule(
        X86_64,
        |process| process.scheduling = SchedulingState::Receiving { message_buffer: address },
        Part::Process,
        Kind::MessageBufferMisaligned { address },
    );
}

#[test]
fn a_message_buffer_must_be_in_the_user_half() {
    for address in [USER_ADDRESS_LIMIT - 32, USER_ADDRESS_LIMIT, u64::MAX - 7] {
        refused_rule(
            X86_64,
            |process| process.scheduling = SchedulingState::Calling { target: 2, message_buffer: address },
            Part::Process,
            Kind::MessageBufferOutsideUserHalf { address },
        );
    }
}

#[test]
fn a_pending_status_must_be_success_or_an_error_number() {
    let first_unknown = baton_abi::Error::ALL.len() as u64 + 1;
    for status in [first_unknown, u64::MAX] {
        refused_rule(
            Aarch64,
            |process| process.pending_result = Some(PendingResult { status, value: 0 }),
            Part::Process,
            Kind::UnknownResultStatus { status },
        );
    }
}

// ---------------------------------------------------------------------------
// Mailbox.

#[test]
fn an_answerable_caller_must_not_repeat() {
    refused_rule(X86_64, |process| process.answerable.push(4), Part::Process, Kind::DuplicateAnswerable { caller: 4 });
}

// ---------------------------------------------------------------------------
// Across processes.

#[test]
fn a_shared_service_id_is_refused_on_every_claimant() {
    let mut processes = sample_processes(X86_64);
    processes[2].service_id = 1;
    assert_eq!(write_processes(&processes), Err(WriteError::DuplicateServiceId { process_index: 2 }));
    let results = read_processes(&encode(&processes).unwrap(), X86_64).unwrap();
    for index in [0, 2] {
        let error = results[index].as_ref().unwrap_err();
        assert_eq!((error.node_index, error.kind, error.service_id), (index, Kind::DuplicateServiceId, Some(1)));
    }
    assert_eq!(results[1].as_ref().unwrap(), &processes[1]);
    assert_eq!(results[3].as_ref().unwrap(), &processes[3]);
}

#[test]
fn a_broken_process_still_claims_its_id() {
    let mut tree = sample_tree(X86_64);
    let second = &mut tree.children[1];
    second.name = String::from("process@1");
    second.set("service-id", words(&[1]));
    second.child("mapping@0").set("kind", word32(0));
    let results = read_processes(&blob_of(&tree), X86_64).unwrap();
    assert_eq!(results[0].as_ref().unwrap_err().kind, Kind::DuplicateServiceId);
    assert_eq!(results[1].as_ref().unwrap_err().kind, Kind::UnknownMappingKind { number: 0 });
    assert!(results[2].is_ok() && results[3].is_ok());
}

#[test]
fn a_shared_name_is_refused_on_every_claimant() {
    let mut processes = sample_processes(X86_64);
    processes[3].name = ArrayString::from("init").unwrap();
    assert_eq!(write_processes(&processes), Err(WriteError::DuplicateName { process_index: 3 }));
    let results = read_processes(&encode(&processes).unwrap(), X86_64).unwrap();
    assert_eq!(results[0].as_ref().unwrap_err().kind, Kind::DuplicateName);
    assert_eq!(results[3].as_ref().unwrap_err().kind, Kind::DuplicateName);
    assert!(results[1].is_ok() && results[2].is_ok());
}

#[test]
fn the_writer_refuses_mixed_architectures() {
    let mut processes = sample_processes(X86_64);
    processes[2] = sample_processes(Aarch64).remove(2);
    assert_eq!(write_processes(&processes), Err(WriteError::MixedArchitectures { process_index: 2 }));
}

// ---------------------------------------------------------------------------
// Isolation.

#[test]
fn broken_processes_do_not_stop_the_others() {
    let processes = sample_processes(Aarch64);
    let mut tree = tree_of(&write_processes(&processes).unwrap());
    tree.children[0].child("mapping@5").set("physical-runs", words(&[0x1000]));
    tree.children[2].set("scheduling-state", word32(9));
    let results = read_processes(&blob_of(&tree), Aarch64).unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[0].as_ref().unwrap_err().kind,
        Kind::PropertyNotWholeEntries { property: Property::PhysicalRuns, size_bytes: 8 }
    );
    assert_eq!(results[2].as_ref().unwrap_err().kind, Kind::UnknownSchedulingState { number: 9 });
    assert_eq!(results[1].as_ref().unwrap(), &processes[1]);
    assert_eq!(results[3].as_ref().unwrap(), &processes[3]);
}

#[test]
fn every_process_broken_is_still_a_readable_blob() {
    let mut tree = sample_tree(X86_64);
    for process in &mut tree.children {
        process.remove("binary-hash");
    }
    let results = read_processes(&blob_of(&tree), X86_64).unwrap();
    let ids: Vec<Option<u64>> = results.iter().map(|result| result.as_ref().unwrap_err().service_id).collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3), Some(0x1f)]);
}
