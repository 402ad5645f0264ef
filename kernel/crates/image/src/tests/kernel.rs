//! `validate_kernel`: the KHO entry note, the 2 MiB aligned span, the scratch size and the plan.

use super::*;
use crate::{ImageError, KERNEL_ALIGN_BYTES};

fn kernel_error(builder: &ElfBuilder, machine: Machine, scratch_bytes: u64) -> ImageError {
    let bytes = builder.build();
    let image = parse_for(&bytes, machine);
    image.validate_kernel(scratch_bytes).expect_err("kernel accepted")
}

#[test]
fn kernel_plan_for_both_machines() {
    for machine in MACHINES {
        let bytes = kernel_elf(machine);
        let image = parse_for(&bytes, machine);
        let plan = image.validate_kernel(SCRATCH_BYTES).unwrap();
        let base = kernel_base(machine);
        assert_eq!(plan.span_start(), base);
        assert_eq!(plan.memory_bytes(), 0x5_c000);
        assert_eq!(plan.entry_offset_bytes(), KHO_ENTRY_OFFSET);
        assert_eq!(plan.entry_phys(0x4020_0000), Some(0x4020_0000 + KHO_ENTRY_OFFSET));
        assert_eq!(plan.entry_phys(u64::MAX), None);

        let offsets: Vec<(u64, usize, u64)> = plan
            .segments()
            .iter()
            .map(|segment| (segment.span_offset_bytes, segment.file_data.len(), segment.memory_bytes))
            .collect();
        assert_eq!(offsets, [(0, 0x3000, 0x3000), (0x3000, 0x1000, 0x1000), (0x4000, 0x1250, 0x5_8000)]);
        for (segment, placed) in image.segments().iter().zip(plan.segments()) {
            assert_eq!(placed.file_offset, segment.file_offset);
            assert_eq!(placed.file_data, image.segment_data(segment).unwrap());
            assert_eq!((placed.is_writable, placed.is_executable), (segment.is_writable, segment.is_executable));
        }
        assert!(plan.segments()[0].file_data.iter().all(|&byte| byte == 0xa1));
        assert!(format!("{:?}", plan.segments()[0]).contains("file_bytes: 0x3000"));
    }
}

#[test]
fn kernel_without_the_kho_note_is_refused() {
    for machine in MACHINES {
        let builder = kernel_builder(machine).with_notes(note("Xen", 18, &[0; 8], 4));
        assert_eq!(kernel_error(&builder, machine, SCRATCH_BYTES), ImageError::MissingKhoEntryNote);
        let builder = kernel_builder(machine).with_notes(Vec::new());
        assert_eq!(kernel_error(&builder, machine, SCRATCH_BYTES), ImageError::MissingKhoEntryNote);
    }
}

#[test]
fn kho_entry_must_lie_inside_an_executable_segment() {
    let base = X86_64_KERNEL_BASE;
    for kho_entry in [0, base - 1, base + 0x3000, base + 0x4000, base + 0x5_bfff, u64::MAX] {
        let builder = kernel_builder(Machine::X86_64).with_notes(kho_entry_note(kho_entry));
        assert_eq!(
            kernel_error(&builder, Machine::X86_64, SCRATCH_BYTES),
            ImageError::KhoEntryNotExecutable { kho_entry },
            "KHO entry {kho_entry:#x}"
        );
    }
}

#[test]
fn kernel_span_must_start_2_mib_aligned() {
    for shift in [0x1000, 0x10_0000, KERNEL_ALIGN_BYTES - 0x1000] {
        let base = AARCH64_KERNEL_BASE + shift;
        let mut builder = kernel_builder(Machine::Aarch64).with_notes(kho_entry_note(base));
        builder.entry += shift;
        for segment in &mut builder.segments {
            segment.virt_start += shift;
        }
        assert_eq!(
            kernel_error(&builder, Machine::Aarch64, SCRATCH_BYTES),
            ImageError::KernelSpanMisaligned { span_start: base }
        );
    }
    // A first segment starting inside its 2 MiB aligned page is fine: the span starts on the page.
    let mut builder = kernel_builder(Machine::Aarch64);
    builder.segments[0].virt_start += 0x40;
    builder.segments[0].memory_bytes -= 0x40;
    builder.segments[0].file_bytes -= 0x40;
    let bytes = builder.build();
    let plan = parse_for(&bytes, Machine::Aarch64).validate_kernel(SCRATCH_BYTES).unwrap();
    assert_eq!(plan.span_start(), AARCH64_KERNEL_BASE);
    assert_eq!(plan.segments()[0].span_offset_bytes, 0x40);
}

#[test]
fn kernel_must_fit_in_scratch() {
    let builder = kernel_builder(Machine::X86_64);
    let memory_bytes = 0x5_c000;
    for scratch_bytes in [0, 0x5_8000, memory_bytes - 1] {
        assert_eq!(
            kernel_error(&builder, Machine::X86_64, scratch_bytes),
            ImageError::KernelTooLarge { memory_bytes, scratch_bytes }
        );
    }
    // The bss counts: a kernel whose file bytes fit but whose bss does not.
    let mut builder = kernel_builder(Machine::X86_64);
    builder.segments[2].memory_bytes = 64 * MIB;
    assert_eq!(
        kernel_error(&builder, Machine::X86_64, 64 * MIB),
        ImageError::KernelTooLarge { memory_bytes: 0x4000 + 64 * MIB, scratch_bytes: 64 * MIB }
    );
    // Exactly the scratch size is fine.
    let bytes = kernel_elf(Machine::X86_64);
    let image = parse_for(&bytes, Machine::X86_64);
    assert!(image.validate_kernel(memory_bytes).is_ok());
}

#[test]
fn a_service_is_not_a_kernel() {
    let bytes = service_elf(Machine::Aarch64);
    let image = parse_for(&bytes, Machine::Aarch64);
    assert_eq!(image.validate_kernel(SCRATCH_BYTES), Err(ImageError::MissingKhoEntryNote));
}
