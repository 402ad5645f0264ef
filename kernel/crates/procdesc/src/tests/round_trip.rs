//! Round trips on both architectures and the exact shape of what the writer emits.

use alloc::vec::Vec;

use super::{read_all, sample_processes, sample_tree, word32, words};
use crate::wire::PROCESS_PROPERTIES;
use crate::{Architecture, DescriptionError, MappingKind, PhysicalRun, read_processes, write_processes};

#[test]
fn sample_processes_round_trip_on_both_architectures() {
    for architecture in Architecture::ALL {
        let processes = sample_processes(architecture);
        let blob = write_processes(&processes).unwrap();
        assert_eq!(read_all(&blob, architecture), processes, "{architecture:?}");
    }
}

#[test]
fn the_samples_cover_every_state_kind_and_mailbox_part() {
    let processes = sample_processes(Architecture::X86_64);
    let states: Vec<u32> = processes.iter().map(|process| process.scheduling.number()).collect();
    assert_eq!(states, [1, 2, 3, 4]);
    for kind in MappingKind::ALL {
        assert!(processes[0].mappings.iter().any(|mapping| mapping.kind == kind), "{kind:?}");
    }
    assert!(processes[0].mappings.iter().any(|mapping| mapping.folio_order == 9 && mapping.runs.len() == 2));
    assert!(processes.iter().any(|process| process.queued_messages.len() == 2));
    assert!(processes.iter().any(|process| process.answerable.len() == 2));
    assert!(processes.iter().filter(|process| process.pending_result.is_some()).count() == 2);
}

#[test]
fn no_processes_round_trip() {
    let blob = write_processes(&[]).unwrap();
    assert!(read_processes(&blob, Architecture::Aarch64).unwrap().is_empty());
}

#[test]
fn writing_is_deterministic() {
    let processes = sample_processes(Architecture::Aarch64);
    assert_eq!(write_processes(&processes).unwrap(), write_processes(&processes).unwrap());
}

#[test]
fn the_blob_has_the_documented_names_and_native_endian_fields() {
    let tree = sample_tree(Architecture::X86_64);
    assert_eq!(tree.get("compatible"), Some(&b"baton,processes-v1\0"[..]));
    assert_eq!(tree.get("format-version"), Some(&word32(1)[..]));
    let names: Vec<&str> = tree.children.iter().map(|child| child.name.as_str()).collect();
    assert_eq!(names, ["process@1", "process@2", "process@3", "process@1f"]);

    let init = &tree.children[0];
    let written: Vec<&str> = init.properties.iter().map(|(name, _)| name.as_str()).collect();
    let expected: Vec<&str> = PROCESS_PROPERTIES
        .iter()
        .map(|property| property.name())
        .filter(|name| !["message-buffer", "call-target", "sleep-until-ns"].contains(name))
        .collect();
    assert_eq!(written, expected, "a ready process with a pending result");
    assert_eq!(init.get("service-id"), Some(&words(&[1])[..]));
    assert_eq!(init.get("name"), Some(&b"init\0"[..]));
    assert_eq!(init.get("service-flags"), Some(&word32(0b11)[..]), "subscribed and privileged");
    assert_eq!(init.get("general-registers").map(<[u8]>::len), Some(15 * 8));
    assert_eq!(init.get("answerable"), Some(&words(&[4])[..]));
    let children: Vec<&str> = init.children.iter().map(|child| child.name.as_str()).collect();
    assert_eq!(
        children,
        [
            "mapping@0",
            "mapping@1",
            "mapping@2",
            "mapping@3",
            "mapping@4",
            "mapping@5",
            "mapping@6",
            "mapping@7",
            "mapping@8",
            "mapping@9",
            "message@0",
            "message@1",
            "device@0"
        ]
    );
    let heap = &init.children[3];
    assert_eq!(heap.get("kind"), Some(&word32(3)[..]));
    assert_eq!(heap.get("access-flags"), Some(&word32(1)[..]));
    assert_eq!(heap.get("physical-runs"), Some(&words(&[0x1_0030_0000, 0x4000, 0x1_0038_0000, 0x2000])[..]));
    assert_eq!(init.children[8].get("kind"), Some(&word32(6)[..]), "a device mapping");
    assert_eq!(init.children[9].get("kind"), Some(&word32(7)[..]), "a shared mapping");
    assert_eq!(init.children[10].get("words"), Some(&words(&[1, 2, 3, 4, 5, 6])[..]));
    let card = &init.children[12];
    assert_eq!(card.get("pci-address"), Some(&word32(2 << 3)[..]));
    assert_eq!(card.get("pci-ids"), Some(&word32(0x1af4_1000)[..]));
    let bars = [1 | 2 << 8, 0x1000_1000, 0x1000_1000, 0x1000, 4 | 0x103 << 8, 0x80_0000_0000, 0x80_0000_0000, 0x4000];
    assert_eq!(card.get("bars").map(|bars| bars[..64].to_vec()), Some(words(&bars)));

    let grant = tree.children[1].children.iter().find(|child| child.name == "grant@0").unwrap();
    let names: Vec<&str> = grant.properties.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["grant-id", "peer", "range", "peer-mapping"]);
    assert_eq!(grant.get("peer"), Some(&b"init\0"[..]));
    assert_eq!(grant.get("range"), Some(&words(&[0x10_0100_1000, 0x2000])[..]));

    let aarch64 = sample_tree(Architecture::Aarch64);
    assert_eq!(aarch64.children[0].get("architecture"), Some(&word32(2)[..]));
    assert_eq!(aarch64.children[0].get("general-registers").map(<[u8]>::len), Some(31 * 8));
    assert_eq!(aarch64.children[2].get("call-target"), Some(&words(&[2])[..]));
}

#[test]
fn physical_runs_visits_every_run_mapping_by_mapping() {
    let process = &sample_processes(Architecture::X86_64)[0];
    let runs: Vec<PhysicalRun> = process.physical_runs().collect();
    let memory =
        || process.mappings.iter().filter(|mapping| !matches!(mapping.kind, MappingKind::Device | MappingKind::Shared));
    let expected: Vec<PhysicalRun> = memory().flat_map(|mapping| mapping.runs.clone()).collect();
    assert_eq!(runs, expected);
    assert_eq!(runs.len(), 13, "every run but the device mapping's and the shared one's");
    let total: u64 = runs.iter().map(|run| run.size_bytes).sum();
    assert_eq!(total, memory().map(|mapping| mapping.size_bytes).sum::<u64>());
}

#[test]
fn architectures_know_their_registers() {
    assert_eq!(Architecture::X86_64.general_register_count(), 15);
    assert_eq!(Architecture::Aarch64.general_register_count(), 31);
    assert_eq!(Architecture::X86_64.general_register_names()[6], "rbp");
    assert_eq!(Architecture::X86_64.general_register_names()[14], "r15");
    assert_eq!(Architecture::Aarch64.general_register_names()[30], "x30");
    for architecture in Architecture::ALL {
        assert_eq!(Architecture::from_number(architecture.number()), Some(architecture));
    }
    assert_eq!(Architecture::from_number(0), None);
    for kind in MappingKind::ALL {
        assert_eq!(MappingKind::from_number(kind.number()), Some(kind));
    }
    assert_eq!(MappingKind::from_number(0), None);
}

#[test]
fn user_mode_flags_are_told_apart() {
    let x86_64 = Architecture::X86_64;
    assert!(x86_64.is_user_mode_flags(0x202));
    assert!(x86_64.is_user_mode_flags(0x200 | 0x8d5 | 1 << 16 | 1 << 18 | 1 << 21), "arithmetic, RF, AC, ID");
    assert!(!x86_64.is_user_mode_flags(0x002), "interrupts disabled");
    assert!(!x86_64.is_user_mode_flags(0x3202), "IOPL 3");
    assert!(!x86_64.is_user_mode_flags(0x4202), "NT");
    assert!(!x86_64.is_user_mode_flags(0x2_0202), "virtual-8086 mode");
    assert!(!x86_64.is_user_mode_flags(1 << 40 | 0x202), "reserved bits");
    let aarch64 = Architecture::Aarch64;
    assert!(aarch64.is_user_mode_flags(0));
    assert!(aarch64.is_user_mode_flags(0xf000_0000), "NZCV");
    assert!(!aarch64.is_user_mode_flags(0x5), "EL1h");
    assert!(!aarch64.is_user_mode_flags(0x10), "AArch32");
    assert!(!aarch64.is_user_mode_flags(0x80), "IRQs masked");
    assert!(!aarch64.is_user_mode_flags(1 << 20), "illegal execution state");
    assert!(x86_64.is_valid_thread_pointer(0xffff_8000_0000_0000));
    assert!(!x86_64.is_valid_thread_pointer(0x8000_0000_0000));
    assert!(aarch64.is_valid_thread_pointer(0x8000_0000_0000));
}

#[test]
fn errors_read_well() {
    let error = read_processes(b"not an fdt", Architecture::X86_64).unwrap_err();
    assert!(matches!(error, DescriptionError::Structure(_)));
    let blob = write_processes(&sample_processes(Architecture::X86_64)).unwrap();
    let results = read_processes(&blob, Architecture::Aarch64).unwrap();
    let message = alloc::format!("{}", results[3].as_ref().unwrap_err());
    assert_eq!(message, "process node 3 (service 0x1f), process: process is for x86_64, this kernel is aarch64");
}

#[test]
fn the_committed_fuzz_seeds_are_valid_descriptions() {
    let seeds: [(&[u8], Architecture, usize); 3] = [
        (include_bytes!("../../fuzz/corpus/read_processes/seed-empty"), Architecture::X86_64, 0),
        (include_bytes!("../../fuzz/corpus/read_processes/seed-x86_64-ready-and-calling"), Architecture::X86_64, 2),
        (
            include_bytes!("../../fuzz/corpus/read_processes/seed-aarch64-receiving-and-sleeping"),
            Architecture::Aarch64,
            2,
        ),
    ];
    for (blob, architecture, count) in seeds {
        assert_eq!(read_all(blob, architecture).len(), count);
    }
}
