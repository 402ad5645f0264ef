//! Fault injection for tests: `kho.inject=<fault>` on the command line makes
//! a cold-booted kernel damage its outgoing handover (or its jump) on
//! purpose, so tests can check that the next kernel bypasses a corrupted
//! handover and that a failure after freezing aborts cleanly. Kernels that
//! were themselves booted through KHO never inject, so the next update works.
//!
//! Faults: `root` (the root FDT's compatible becomes `kho-v0`), `chunks`
//! (the chunk list points back at itself), `bitmap` (a bitmap pointer moves
//! into scratch), `fail-jump` (the jump is abandoned after finalisation),
//! and `flip-root:SEED`, `flip-chunks:SEED`, `flip-bitmap:SEED`: eight
//! pseudo-random bits (from SEED) flipped in the root FDT, in the first
//! chunk's header and entries, or in the first bitmap.

use crate::mm::direct_map;
use crate::update::UpdateError;
use baton_kho::FinalizeSummary;

/// The fault the command line asks for, if this kernel may inject it.
pub fn requested() -> Option<&'static str> {
    let info = crate::options::boot_info();
    if info.kho.is_some() {
        return None;
    }
    crate::options::get().inject
}

/// Flips eight bits chosen by `seed` in `[phys, phys + length)`.
fn flip_bits(phys: u64, length: u64, seed: u64) {
    // xorshift64: a fixed, reproducible sequence per seed.
    let mut state = seed.max(1);
    for _ in 0..8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bit = state % (length * 8);
        let address = direct_map::to_virtual(phys + bit / 8) as *mut u8;
        // SAFETY: inside handover metadata this kernel allocated and still
        // owns (see `write_u64`); bytes, so no alignment concern.
        unsafe { address.write_volatile(address.read_volatile() ^ (1 << (bit % 8))) };
    }
}

fn read_u64(phys: u64) -> u64 {
    // SAFETY: as `write_u64`: this kernel's own metadata.
    unsafe { (direct_map::to_virtual(phys) as *const u64).read_unaligned() }
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
        other => {
            let flip = other.split_once(':').and_then(|(kind, seed)| Some((kind, seed.parse::<u64>().ok()?)));
            let head = summary.chunk_list_head_phys;
            match flip {
                Some(("flip-root", seed)) => flip_bits(summary.root_fdt_phys, summary.root_fdt_size_bytes, seed),
                Some(("flip-chunks", seed)) if head != 0 => {
                    // Header (next, order, count) and the entries in use.
                    let count = read_u64(head + 8) >> 32;
                    flip_bits(head, 16 + 16 * count.min(255), seed);
                }
                Some(("flip-bitmap", seed)) if head != 0 => flip_bits(read_u64(head + 24), 512, seed),
                _ => log::warn!(target: "kho", "unknown fault '{other}' ignored"),
            }
        }
    }
    Ok(())
}
