//! The real kernels from `cargo xtask build`, when they have been built; otherwise skipped with a notice.

use std::path::PathBuf;

use super::*;
use crate::ImageError;

fn real_kernel(arch: &str) -> Option<Vec<u8>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../target/xtask").join(arch).join("debug/baton.elf");
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            eprintln!("skipped: {} not found (cargo xtask build --arch {arch})", path.display());
            None
        }
    }
}

#[test]
fn real_kernels_parse_and_validate_if_built() {
    for (arch, machine, other) in
        [("x86_64", Machine::X86_64, Machine::Aarch64), ("aarch64", Machine::Aarch64, Machine::X86_64)]
    {
        let Some(bytes) = real_kernel(arch) else {
            continue;
        };
        let image = parse(&bytes, machine).unwrap_or_else(|error| panic!("{arch}: {error}"));
        let plan = image.validate_kernel(SCRATCH_BYTES).unwrap_or_else(|error| panic!("{arch}: {error}"));
        assert!(matches!(plan.span_start(), AARCH64_KERNEL_BASE | X86_64_KERNEL_BASE));
        let kho_entry = image.kho_entry().unwrap();
        assert_eq!(plan.span_start() + plan.entry_offset_bytes(), kho_entry);
        if machine == Machine::X86_64 {
            // XEN_ELFNOTE_PHYS32_ENTRY, the PVH entry.
            assert_eq!(image.find_note("Xen", 18).map(<[u8]>::len), Some(8));
        }
        assert!(matches!(image.validate_service(USER_LIMIT), Err(ImageError::SegmentOutsideUserRange { .. })));
        assert!(matches!(parse(&bytes, other), Err(ImageError::WrongMachine { .. })));
        eprintln!(
            "{arch}: {} segments, span {:#x} + {:#x} bytes, KHO entry {kho_entry:#x}",
            plan.segments().len(),
            plan.span_start(),
            plan.memory_bytes()
        );
    }
}
