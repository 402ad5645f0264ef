//! `validate_service`: the user range, the null guard and W^X.

use super::*;
use crate::{ImageError, NULL_GUARD_BYTES};

fn service_error(builder: &ElfBuilder) -> ImageError {
    let bytes = builder.build();
    let image = parse_for(&bytes, Machine::X86_64);
    image.validate_service(USER_LIMIT).expect_err("service accepted")
}

fn single_segment(virt_start: u64, memory_bytes: u64, flags: u32) -> ElfBuilder {
    ElfBuilder::new(Machine::X86_64, virt_start, &[TestSegment::new(virt_start, memory_bytes, 0x10, flags)])
}

#[test]
fn segments_must_stay_out_of_the_null_guard() {
    for virt_start in [0, 0x1000, NULL_GUARD_BYTES - 0x1000, NULL_GUARD_BYTES - 1] {
        assert_eq!(
            service_error(&single_segment(virt_start, 0x100, PF_R | PF_X)),
            ImageError::SegmentOutsideUserRange { virt_start }
        );
    }
    let bytes = single_segment(NULL_GUARD_BYTES, 0x100, PF_R | PF_X).build();
    let image = parse_for(&bytes, Machine::X86_64);
    assert_eq!(image.validate_service(USER_LIMIT), Ok(()));
}

#[test]
fn segments_must_stay_below_the_user_limit() {
    for (virt_start, memory_bytes) in
        [(USER_LIMIT - 0x1000, 0x1001), (USER_LIMIT - 0x10, 0x20), (USER_LIMIT, 0x10), (0xffff_ffff_8000_0000, 0x1000)]
    {
        assert_eq!(
            service_error(&single_segment(virt_start, memory_bytes, PF_R | PF_X)),
            ImageError::SegmentOutsideUserRange { virt_start }
        );
    }
    // Ending exactly at the limit is fine.
    let bytes = single_segment(USER_LIMIT - 0x2000, 0x2000, PF_R | PF_X).build();
    let image = parse_for(&bytes, Machine::X86_64);
    assert_eq!(image.validate_service(USER_LIMIT), Ok(()));
}

#[test]
fn writable_and_executable_segments_are_refused() {
    let mut builder = service_builder(Machine::X86_64);
    builder.segments[0].flags = PF_R | PF_W | PF_X;
    assert_eq!(service_error(&builder), ImageError::WritableAndExecutable { virt_start: SERVICE_BASE });
    let mut builder = service_builder(Machine::X86_64);
    builder.segments[2].flags = PF_W | PF_X;
    assert_eq!(service_error(&builder), ImageError::WritableAndExecutable { virt_start: SERVICE_BASE + 0x3000 });
}

#[test]
fn a_kernel_is_not_a_service() {
    for machine in MACHINES {
        let bytes = kernel_elf(machine);
        let image = parse_for(&bytes, machine);
        assert_eq!(
            image.validate_service(USER_LIMIT),
            Err(ImageError::SegmentOutsideUserRange { virt_start: kernel_base(machine) })
        );
    }
}
