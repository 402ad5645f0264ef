//! The seed inputs of the `elf_parse` fuzz target, built here and committed under `fuzz/corpus/elf_parse/`.
//!
//! After changing the builder, rewrite them with
//! `cargo test -p baton-image -- --ignored write_fuzz_seeds`.

use std::path::PathBuf;

use super::*;

fn corpus_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/elf_parse")
}

/// Small images (segment bytes packed, little file data) so that libFuzzer's
/// inputs stay short.
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let shrink = |mut builder: ElfBuilder| {
        builder.is_compact = true;
        for segment in &mut builder.segments {
            segment.file_bytes = segment.file_bytes.min(0x40);
        }
        builder
    };
    let mut section_notes = shrink(kernel_builder(Machine::Aarch64));
    section_notes.note_placement = NotePlacement::Section;
    let mut aligned_notes = shrink(kernel_builder(Machine::X86_64)).with_notes(
        [
            note("GNU", 5, &[2, 0, 0, 0xc0, 4, 0, 0, 0, 3, 0, 0, 0], 8),
            note(BATON_NOTE_NAME, BATON_NOTE_KHO_ENTRY, &(X86_64_KERNEL_BASE + 8).to_le_bytes(), 8),
        ]
        .concat(),
    );
    aligned_notes.note_align_bytes = 8;
    vec![
        ("seed-service-x86_64", shrink(service_builder(Machine::X86_64)).build()),
        ("seed-service-aarch64", shrink(service_builder(Machine::Aarch64)).build()),
        ("seed-kernel-x86_64", shrink(kernel_builder(Machine::X86_64)).build()),
        ("seed-kernel-aarch64-section-notes", section_notes.build()),
        ("seed-kernel-x86_64-notes-aligned-8", aligned_notes.build()),
    ]
}

#[test]
#[ignore = "rewrites the committed fuzz seeds"]
fn write_fuzz_seeds() {
    let directory = corpus_directory();
    std::fs::create_dir_all(&directory).unwrap();
    for (name, bytes) in fuzz_seeds() {
        std::fs::write(directory.join(name), bytes).unwrap();
    }
}

#[test]
fn committed_fuzz_seeds_are_current_and_valid() {
    for (name, bytes) in fuzz_seeds() {
        let committed = std::fs::read(corpus_directory().join(name))
            .unwrap_or_else(|_| panic!("{name} missing: run the ignored test write_fuzz_seeds"));
        assert_eq!(committed, bytes, "{name} is stale: run the ignored test write_fuzz_seeds");
        let accepted = MACHINES.into_iter().filter(|&machine| parse(&bytes, machine).is_ok()).count();
        assert_eq!(accepted, 1, "{name}");
    }
}
