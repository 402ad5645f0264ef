//! Every bound at exactly its maximum passes and one past it fails, in the writer and in the reader.

use alloc::format;
use alloc::vec::Vec;

use arrayvec::ArrayString;
use baton_abi::{MAX_USER_FOLIO_ORDER, Message, PAGE_SIZE, USER_ADDRESS_LIMIT};

use super::{MIB, TreeNode, blob_of, only_error, read_all, run, sample_process, sample_processes, tree_of, words};
use crate::writer::encode;
use crate::{
    Architecture, DescriptionError, MAX_ANSWERABLE_CALLERS, MAX_MAPPINGS, MAX_PROCESSES, MAX_QUEUED_MESSAGES,
    MAX_RUNS_PER_MAPPING, Mapping, MappingKind, Part, ProcessDescription, ProcessErrorKind, SchedulingState,
    WriteError, read_processes, write_processes,
};

use Architecture::X86_64;

/// `count` processes with distinct ids and names.
fn many_processes(count: usize) -> Vec<ProcessDescription> {
    (1..=count as u64)
        .map(|service_id| sample_process(X86_64, service_id, &format!("service-{service_id}"), SchedulingState::Ready))
        .collect()
}

/// `count` one-page heap mappings side by side.
fn one_page_mappings(count: usize) -> Vec<Mapping> {
    (0..count as u64)
        .map(|index| {
            super::mapping(
                0x1_0000_0000 + index * PAGE_SIZE,
                MappingKind::Heap,
                "rw",
                &[run(0x40_0000_0000 + index * PAGE_SIZE, PAGE_SIZE)],
            )
        })
        .collect()
}

/// The writer's error for process 0.
fn invalid(part: Part, kind: ProcessErrorKind) -> Result<Vec<u8>, WriteError> {
    Err(WriteError::InvalidProcess { process_index: 0, part, kind })
}

#[test]
fn at_most_64_processes() {
    let processes = many_processes(MAX_PROCESSES);
    assert_eq!(read_all(&write_processes(&processes).unwrap(), X86_64), processes);

    let processes = many_processes(MAX_PROCESSES + 1);
    assert_eq!(write_processes(&processes), Err(WriteError::TooManyProcesses { count: 65 }));
    assert_eq!(
        read_processes(&encode(&processes).unwrap(), X86_64),
        Err(DescriptionError::TooManyProcesses { count: 65 })
    );
}

#[test]
fn at_most_256_mappings() {
    let mut processes = sample_processes(X86_64);
    processes[0].mappings = one_page_mappings(MAX_MAPPINGS);
    assert_eq!(read_all(&write_processes(&processes).unwrap(), X86_64), processes);

    processes[0].mappings = one_page_mappings(MAX_MAPPINGS + 1);
    assert_eq!(write_processes(&processes), invalid(Part::Process, ProcessErrorKind::TooManyMappings));
    let error = only_error(&encode(&processes).unwrap(), X86_64, 0);
    assert_eq!((error.part, error.kind), (Part::Process, ProcessErrorKind::TooManyMappings));
}

#[test]
fn at_most_64_runs_per_mapping() {
    let with_runs = |count: u64| {
        let mut processes = sample_processes(X86_64);
        let heap = &mut processes[0].mappings[3];
        heap.runs = (0..count).map(|index| run(0x40_0000_0000 + 2 * index * PAGE_SIZE, PAGE_SIZE)).collect();
        heap.size_bytes = count * PAGE_SIZE;
        processes
    };
    let processes = with_runs(MAX_RUNS_PER_MAPPING as u64);
    assert_eq!(read_all(&write_processes(&processes).unwrap(), X86_64), processes);

    let processes = with_runs(MAX_RUNS_PER_MAPPING as u64 + 1);
    let part = Part::Mapping { mapping_index: 3 };
    let kind = ProcessErrorKind::TooManyRuns { count: 65 };
    assert_eq!(write_processes(&processes), invalid(part, kind));
    let error = only_error(&encode(&processes).unwrap(), X86_64, 0);
    assert_eq!((error.part, error.kind), (part, kind));
}

#[test]
fn at_most_16_queued_messages() {
    let mut processes = sample_processes(X86_64);
    let mailbox = &mut processes[0].queued_messages;
    while !mailbox.is_full() {
        mailbox.push(Message { label: mailbox.len() as u64, sender: 2, words: [9; 6] });
    }
    assert_eq!(mailbox.len(), MAX_QUEUED_MESSAGES);
    assert!(mailbox.try_push(Message::default()).is_err(), "the type holds no more, so the writer never sees 17");
    let blob = write_processes(&processes).unwrap();
    assert_eq!(read_all(&blob, X86_64), processes);

    let mut tree = tree_of(&blob);
    let mut extra = TreeNode::new("message@10");
    extra.set("label", words(&[1]));
    extra.set("sender", words(&[2]));
    extra.set("words", words(&[0; 6]));
    tree.children[0].children.push(extra);
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!((error.part, error.kind), (Part::Process, ProcessErrorKind::TooManyQueuedMessages));
}

#[test]
fn at_most_16_answerable_callers() {
    let callers: Vec<u64> = (100..100 + MAX_ANSWERABLE_CALLERS as u64).collect();
    let mut processes = sample_processes(X86_64);
    processes[0].answerable = callers.iter().copied().collect();
    assert!(processes[0].answerable.is_full());
    let blob = write_processes(&processes).unwrap();
    assert_eq!(read_all(&blob, X86_64), processes);

    let mut tree = tree_of(&blob);
    let too_many: Vec<u64> = (100..117).collect();
    tree.children[0].set("answerable", words(&too_many));
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!(error.kind, ProcessErrorKind::TooManyAnswerable { count: 17 });
}

#[test]
fn names_of_31_bytes_and_not_32() {
    let longest = "a123456789012345678901234567890";
    assert_eq!(longest.len(), baton_abi::MAX_NAME_BYTES);
    let mut processes = sample_processes(X86_64);
    processes[0].name = ArrayString::from(longest).unwrap();
    let blob = write_processes(&processes).unwrap();
    assert_eq!(read_all(&blob, X86_64), processes);

    let mut tree = tree_of(&blob);
    tree.children[0].set("name", format!("{longest}b\0").into_bytes());
    assert_eq!(only_error(&blob_of(&tree), X86_64, 0).kind, ProcessErrorKind::InvalidName);
}

#[test]
fn the_user_half_is_usable_to_its_last_byte() {
    let mut processes = sample_processes(X86_64);
    let process = &mut processes[0];
    process.mappings[7].virtual_start = USER_ADDRESS_LIMIT - 2 * PAGE_SIZE;
    process.registers.instruction_pointer = USER_ADDRESS_LIMIT - 1;
    process.registers.stack_pointer = USER_ADDRESS_LIMIT;
    process.scheduling = SchedulingState::Receiving { message_buffer: USER_ADDRESS_LIMIT - 64 };
    assert_eq!(read_all(&write_processes(&processes).unwrap(), X86_64), processes);
}

#[test]
fn the_largest_folio_order_is_the_one_services_can_allocate() {
    let mut processes = sample_processes(X86_64);
    let preservable = &mut processes[0].mappings[5];
    preservable.folio_order = MAX_USER_FOLIO_ORDER;
    preservable.runs[1].size_bytes = 4 * MIB;
    preservable.size_bytes = 8 * MIB;
    assert_eq!(read_all(&write_processes(&processes).unwrap(), X86_64), processes);

    processes[0].mappings[5].folio_order = MAX_USER_FOLIO_ORDER + 1;
    let part = Part::Mapping { mapping_index: 5 };
    assert_eq!(write_processes(&processes), invalid(part, ProcessErrorKind::FolioOrderTooLarge { order: 11 }));
}
