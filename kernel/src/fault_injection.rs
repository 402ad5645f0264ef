//! Fault injection for tests: `kho.inject=<fault>` on the command line makes
//! a cold-booted kernel damage its outgoing handover (or its jump) on
//! purpose, so tests can check that the next kernel bypasses a corrupted
//! handover and that a failure after freezing aborts cleanly. Kernels that
//! were themselves booted through KHO never inject, so the next update works.
//!
//! Faults: `root` (the root FDT's compatible becomes `kho-v0`), `chunks`
//! (the chunk list points back at itself), `bitmap` (a bitmap pointer moves
//! into scratch), `fail-jump` (the jump is abandoned after finalisation).

use crate::mm::direct_map;
use crate::update::UpdateError;
use baton_kho::FinalizeSummary;

/// The fault the command line asks for, if this kernel may inject it.
pub fn requested() -> Option<&'static str> {
    let info = crate::boot_info();
    if info.kho.is_some() {
        return None;
    }
    crate::command_line_value(&info.command_line, "kho.inject")
}

fn write_u64(phys: u64, value: u64) {
    // SAFETY: `phys` is inside handover metadata this kernel allocated and
    // still owns (the chunk pages or the root FDT copy); nothing else reads
    // it before the jump.
    unsafe { (direct_map::to_virtual(phys) as *mut u64).write_unaligned(value) };
}

/// Applies the requested fault to a finalised handover; `Err` for
/// `fail-jump`.
pub fn apply(summary: &FinalizeSummary) -> Result<(), UpdateError> {
    let Some(fault) = requested() else { return Ok(()) };
    log::warn!(target: "kho", "fault injection: {fault}");
    match fault {
        "root" => {
            // SAFETY: the root FDT copy is this kernel's metadata (see above).
            let root = unsafe {
                core::slice::from_raw_parts_mut(
                    direct_map::to_virtual(summary.root_fdt_phys) as *mut u8,
                    summary.root_fdt_size_bytes as usize,
                )
            };
            if let Some(position) = root.windows(6).position(|window| window == b"kho-v1") {
                root[position + 5] = b'0';
            }
        }
        "chunks" if summary.chunk_list_head_phys != 0 => {
            write_u64(summary.chunk_list_head_phys, summary.chunk_list_head_phys);
        }
        "bitmap" if summary.chunk_list_head_phys != 0 => {
            let scratch = crate::mm::scratch_regions().first().map_or(0, |region| region.range.start);
            // First entry: phys_start at +16, bitmap pointer at +24.
            write_u64(summary.chunk_list_head_phys + 24, scratch);
        }
        "fail-jump" => return Err(UpdateError::NoImage("fault injection: the jump was abandoned")),
        other => log::warn!(target: "kho", "unknown fault '{other}' ignored"),
    }
    Ok(())
}
