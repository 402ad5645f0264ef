//! Grant records and shared mappings: they read back as written, and every rule about them refuses exactly the process that breaks it.

use super::{KIB, blob_of, mapping, only_error, read_all, run, sample_processes, tree_of};
use crate::writer::encode;
use crate::{
    Architecture, GrantRecord, MAX_GRANTS, MappingKind, Part, ProcessDescription, ProcessErrorKind, WriteError,
    read_processes, write_processes,
};
use arrayvec::ArrayString;

use Architecture::{Aarch64, X86_64};
use ProcessErrorKind as Kind;

/// Where init (service 1, physical base 0x1_0000_0000) grants 12 KiB of
/// its preservable mapping at 0x10_0100_0000: the mapping's second run.
const GRANT_VIRTUAL: u64 = 0x10_0100_1000;
const GRANT_PHYSICAL: u64 = 0x1_0050_2000;
/// Where kvstore maps it.
const PEER_VIRTUAL: u64 = 0x40_0000_0000;

/// The sample processes with init granting kvstore 12 KiB, which kvstore
/// maps.
fn shared_processes(architecture: Architecture) -> Vec<ProcessDescription> {
    let mut processes = sample_processes(architecture);
    processes[0].grants.push(GrantRecord {
        grant_id: 7,
        peer: ArrayString::from("kvstore").unwrap(),
        virtual_start: GRANT_VIRTUAL,
        size_bytes: 12 * KIB,
        peer_virtual_start: Some(PEER_VIRTUAL),
    });
    // An unmapped grant to the same peer: no `peer-mapping`.
    processes[0].grants.push(GrantRecord {
        grant_id: 8,
        peer: ArrayString::from("kvstore").unwrap(),
        virtual_start: 0x10_0100_0000,
        size_bytes: 4 * KIB,
        peer_virtual_start: None,
    });
    let mut shared = mapping(PEER_VIRTUAL, MappingKind::Shared, "rw", &[run(GRANT_PHYSICAL, 12 * KIB)]);
    shared.grant_id = 7;
    processes[1].mappings.push(shared);
    processes
}

/// Break one process of [`shared_processes`]: the writer refuses it, and
/// the reader refuses it written without checks, with the same part and
/// kind, and reads the others.
fn refused_rule(process_index: usize, edit: impl FnOnce(&mut ProcessDescription), part: Part, kind: ProcessErrorKind) {
    let mut processes = shared_processes(X86_64);
    edit(&mut processes[process_index]);
    assert_eq!(write_processes(&processes), Err(WriteError::InvalidProcess { process_index, part, kind }));
    let error = only_error(&encode(&processes).unwrap(), X86_64, process_index);
    assert_eq!((error.part, error.kind), (part, kind), "{error}");
}

const GRANT_0: Part = Part::Grant { grant_index: 0 };

#[test]
fn grants_and_shared_mappings_read_back_as_written() {
    for architecture in [X86_64, Aarch64] {
        let processes = shared_processes(architecture);
        let blob = write_processes(&processes).unwrap();
        assert_eq!(read_all(&blob, architecture), processes);
    }
}

#[test]
fn a_grant_says_where_its_memory_is() {
    let processes = shared_processes(X86_64);
    let init = &processes[0];
    assert_eq!(init.grant_physical_start(&init.grants[0]), Some(GRANT_PHYSICAL));
    assert_eq!(init.grant_physical_start(&init.grants[1]), Some(0x1_0050_0000));
}

#[test]
fn shared_runs_are_not_the_peers_memory() {
    let processes = shared_processes(X86_64);
    let runs: Vec<_> = processes[1].physical_runs().collect();
    assert!(!runs.iter().any(|run| run.phys_start == GRANT_PHYSICAL), "{runs:?}");
    assert!(!runs.is_empty());
}

#[test]
fn a_grant_id_is_nonzero_and_unique() {
    refused_rule(0, |init| init.grants[0].grant_id = 0, GRANT_0, Kind::InvalidGrantId);
    refused_rule(0, |init| init.grants[1].grant_id = 7, Part::Grant { grant_index: 1 }, Kind::InvalidGrantId);
    // Ids are per owner: kvstore's grant 1 and init's grant 1 may coexist.
    let mut processes = shared_processes(X86_64);
    processes[0].grants[0].grant_id = 1;
    assert!(write_processes(&processes).is_ok());
}

#[test]
fn a_grant_names_another_service() {
    refused_rule(0, |init| init.grants[0].peer = ArrayString::from("init").unwrap(), GRANT_0, Kind::InvalidGrantPeer);
    refused_rule(
        0,
        |init| init.grants[0].peer = ArrayString::from("no spaces").unwrap(),
        GRANT_0,
        Kind::InvalidGrantPeer,
    );
}

#[test]
fn a_grant_covers_whole_pages_of_one_run_of_writable_preservable_memory() {
    let cases: [(u64, u64); 6] = [
        // Empty, misaligned start, misaligned size.
        (GRANT_VIRTUAL, 0),
        (GRANT_VIRTUAL + 8, 4 * KIB),
        (GRANT_VIRTUAL, 6 * KIB),
        // Across the first and second runs (physically apart).
        (0x10_0100_0000, 8 * KIB),
        // Past the mapping's end.
        (0x10_0100_4000, 8 * KIB),
        // The stack, not preservable memory.
        (0x7fff_fffe_0000, 4 * KIB),
    ];
    for (virtual_start, size_bytes) in cases {
        refused_rule(
            0,
            |init| {
                init.grants[0].virtual_start = virtual_start;
                init.grants[0].size_bytes = size_bytes;
            },
            GRANT_0,
            Kind::InvalidGrantRange,
        );
    }
    // A read-only preservable mapping cannot be granted either.
    refused_rule(
        0,
        |init| {
            let index = init.mappings.iter().position(|mapping| mapping.virtual_start == 0x10_0100_0000).unwrap();
            init.mappings[index].is_writable = false;
        },
        GRANT_0,
        Kind::InvalidGrantRange,
    );
}

#[test]
fn a_peer_mapping_is_a_page_aligned_user_range() {
    refused_rule(
        0,
        |init| init.grants[0].peer_virtual_start = Some(PEER_VIRTUAL + 1),
        GRANT_0,
        Kind::InvalidPeerMapping,
    );
    refused_rule(
        0,
        |init| init.grants[0].peer_virtual_start = Some(baton_abi::USER_ADDRESS_LIMIT - 4 * KIB),
        GRANT_0,
        Kind::InvalidPeerMapping,
    );
}

#[test]
fn a_shared_mapping_is_one_run_of_data() {
    let shared = |process: &ProcessDescription| {
        process.mappings.iter().position(|mapping| mapping.kind == MappingKind::Shared).unwrap()
    };
    let part = Part::Mapping { mapping_index: 8 };
    refused_rule(
        1,
        |kvstore| {
            let index = shared(kvstore);
            kvstore.mappings[index].is_writable = false;
            kvstore.mappings[index].is_executable = true;
        },
        part,
        Kind::InvalidSharedMapping,
    );
    refused_rule(
        1,
        |kvstore| {
            let index = shared(kvstore);
            kvstore.mappings[index].runs = vec![run(GRANT_PHYSICAL, 4 * KIB), run(GRANT_PHYSICAL + 0x10_0000, 8 * KIB)];
        },
        part,
        Kind::InvalidSharedMapping,
    );
}

#[test]
fn a_shared_mapping_names_its_grant_and_no_other_mapping_does() {
    let property = crate::Property::GrantId;
    // The shared mapping without its grant id (node 1's mapping@8).
    let blob = write_processes(&shared_processes(X86_64)).unwrap();
    let mut tree = tree_of(&blob);
    let shared = tree.children[1].children.iter_mut().find(|child| child.name == "mapping@8").unwrap();
    shared.properties.retain(|(name, _)| name != "grant-id");
    let error = only_error(&blob_of(&tree), X86_64, 1);
    assert_eq!((error.part, error.kind), (Part::Mapping { mapping_index: 8 }, Kind::MissingProperty { property }));
    // A grant id on an image mapping.
    let mut tree = tree_of(&blob);
    let image = tree.children[1].children.iter_mut().find(|child| child.name == "mapping@0").unwrap();
    image.properties.push((String::from("grant-id"), 7_u64.to_ne_bytes().to_vec()));
    let error = only_error(&blob_of(&tree), X86_64, 1);
    assert_eq!((error.part, error.kind), (Part::Mapping { mapping_index: 0 }, Kind::PropertyNotForKind { property }));
    // Grant id zero, and a grant id on another kind, in typed descriptions.
    refused_rule(
        1,
        |kvstore| kvstore.mappings[8].grant_id = 0,
        Part::Mapping { mapping_index: 8 },
        Kind::InvalidSharedMapping,
    );
    // (The encoder writes a grant id only on shared mappings, so only the
    // writer can be handed this one.)
    let mut processes = shared_processes(X86_64);
    processes[1].mappings[0].grant_id = 3;
    let kind = Kind::PropertyNotForKind { property };
    let part = Part::Mapping { mapping_index: 0 };
    assert_eq!(write_processes(&processes), Err(WriteError::InvalidProcess { process_index: 1, part, kind }));
}

#[test]
fn at_most_eight_grants() {
    let mut processes = shared_processes(X86_64);
    let template = processes[0].grants[1];
    for grant_id in 9..=(8 + MAX_GRANTS as u64) {
        processes[0].grants.try_push(GrantRecord { grant_id, ..template }).ok();
    }
    assert_eq!(processes[0].grants.len(), MAX_GRANTS);
    let blob = write_processes(&processes).unwrap();
    assert_eq!(read_all(&blob, X86_64), processes);
    // A ninth node in the blob refuses that process alone.
    let mut tree = tree_of(&blob);
    let init = &mut tree.children[0];
    let mut ninth = init.children.iter().find(|child| child.name == "grant@7").unwrap().clone();
    ninth.name = String::from("grant@8");
    init.children.push(ninth);
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!((error.part, error.kind), (Part::Process, Kind::TooManyGrants), "{error}");
}

fn grant_node(tree: &mut super::TreeNode) -> &mut super::TreeNode {
    tree.children[0].children.iter_mut().find(|child| child.name == "grant@0").unwrap()
}

#[test]
fn a_grant_node_has_exactly_its_properties() {
    let blob = write_processes(&shared_processes(X86_64)).unwrap();
    // Without its range.
    let mut tree = tree_of(&blob);
    grant_node(&mut tree).properties.retain(|(name, _)| name != "range");
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!(error.part, GRANT_0);
    assert_eq!(error.kind, Kind::MissingProperty { property: crate::Property::Range });
    // A range of one word.
    let mut tree = tree_of(&blob);
    for (name, value) in &mut grant_node(&mut tree).properties {
        if name == "range" {
            value.truncate(8);
        }
    }
    let error = only_error(&blob_of(&tree), X86_64, 0);
    assert_eq!(error.part, GRANT_0);
    assert!(matches!(error.kind, Kind::PropertyTooShort { .. }), "{error}");
    // An unknown property.
    let mut tree = tree_of(&blob);
    grant_node(&mut tree).properties.push((String::from("owner"), vec![0; 4]));
    assert_eq!(only_error(&blob_of(&tree), X86_64, 0).part, GRANT_0);
    // Every other process still reads.
    assert_eq!(read_processes(&blob, X86_64).unwrap().len(), 4);
}
