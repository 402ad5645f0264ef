//! Fault injection for tests (built with the `testing` feature only):
//! `kho.inject=<fault>` on the command line makes a cold-booted kernel
//! damage its outgoing handover (or its jump) on purpose, so tests can
//! check that the next kernel bypasses a corrupted handover and that a
//! failure after freezing aborts cleanly. Kernels that were themselves
//! booted through KHO never inject, so the next update works.
//!
//! Faults: `root` (the root FDT's compatible becomes `kho-v0`), `chunks`
//! (the chunk list points back at itself), `bitmap` (a bitmap pointer moves
//! into scratch), `fail-jump` (the jump is abandoned after finalisation),
//! `flip-root:SEED`, `flip-chunks:SEED`, `flip-bitmap:SEED`: eight
//! pseudo-random bits (from SEED) flipped in the root FDT, in the first
//! chunk's header and entries, or in the first bitmap; and
//! `damage-process:NAME` (a process description claims memory its service
//! does not own), `damage-device:NAME` (the device record in NAME's
//! description says a BAR is where it is not), `damage-grant:NAME` (NAME's
//! shared mapping claims the page after the region it was granted). Every
//! write goes through the outgoing handover's own metadata pages, so nothing else can
//! be damaged.

use super::UpdateError;
use crate::handover::outgoing::{read_metadata, write_metadata};
use baton_kho::FinalizeSummary;
use baton_kho::serial::{
    CHUNK_COUNT_OFFSET, CHUNK_ENTRY_SIZE_BYTES, CHUNK_HEADER_SIZE_BYTES, ENTRIES_PER_CHUNK, ENTRY_BITMAP_OFFSET,
    entry_offset,
};

/// The fault the command line asks for, if this kernel may inject it.
fn requested() -> Option<&'static str> {
    if crate::options::is_kho_boot() {
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
        let mut byte = [0u8];
        if read_metadata(phys + bit / 8, &mut byte).is_ok() {
            let _ = write_metadata(phys + bit / 8, &[byte[0] ^ (1 << (bit % 8))]);
        }
    }
}

fn read_u32(phys: u64) -> u32 {
    let mut bytes = [0; 4];
    let _ = read_metadata(phys, &mut bytes);
    u32::from_ne_bytes(bytes)
}

fn read_u64(phys: u64) -> u64 {
    let mut bytes = [0; 8];
    let _ = read_metadata(phys, &mut bytes);
    u64::from_ne_bytes(bytes)
}

/// Applies the requested fault to a finalised handover; `Err` for
/// `fail-jump`.
pub fn apply(summary: &FinalizeSummary) -> Result<(), UpdateError> {
    let Some(fault) = requested() else { return Ok(()) };
    log::warn!(target: "kho", "fault injection: {fault}");
    let head = summary.chunk_list_head_phys;
    let first_bitmap_pointer = head + (entry_offset(0) + ENTRY_BITMAP_OFFSET) as u64;
    let outcome = match fault {
        "root" => {
            let mut root = alloc::vec![0; summary.root_fdt_size_bytes as usize];
            let _ = read_metadata(summary.root_fdt_phys, &mut root);
            match root.windows(6).position(|window| window == b"kho-v1") {
                Some(position) => write_metadata(summary.root_fdt_phys + position as u64 + 5, b"0"),
                None => Ok(()),
            }
        }
        "chunks" if head != 0 => write_metadata(head, &head.to_ne_bytes()),
        "bitmap" if head != 0 => {
            let scratch = crate::mm::scratch_regions().first().map_or(0, |region| region.range.start);
            write_metadata(first_bitmap_pointer, &scratch.to_ne_bytes())
        }
        "fail-jump" => return Err(UpdateError::InjectedJumpFailure),
        // Applied to the descriptions before they were written.
        fault if ["damage-process:", "damage-device:", "damage-grant:"].iter().any(|kind| fault.starts_with(kind)) => {
            Ok(())
        }
        other => {
            let flip = other.split_once(':').and_then(|(kind, seed)| Some((kind, seed.parse::<u64>().ok()?)));
            match flip {
                Some(("flip-root", seed)) => flip_bits(summary.root_fdt_phys, summary.root_fdt_size_bytes, seed),
                Some(("flip-chunks", seed)) if head != 0 => {
                    // Header (next, order, count) and the entries in use.
                    let count = u64::from(read_u32(head + CHUNK_COUNT_OFFSET as u64).min(ENTRIES_PER_CHUNK));
                    flip_bits(head, CHUNK_HEADER_SIZE_BYTES + CHUNK_ENTRY_SIZE_BYTES * count, seed);
                }
                Some(("flip-bitmap", seed)) if head != 0 => {
                    flip_bits(read_u64(first_bitmap_pointer), baton_kho::BITMAP_SIZE_BYTES, seed)
                }
                _ => log::warn!(target: "kho", "unknown fault '{other}' ignored"),
            }
            Ok(())
        }
    };
    if let Err(error) = outcome {
        log::warn!(target: "kho", "fault injection could not write: {error}");
    }
    Ok(())
}

/// `kho.inject=damage-process:NAME`: the description of service NAME
/// claims memory it does not own (its first run moves to the first page of
/// RAM), as a corrupted or hostile description would; the next kernel must
/// refuse it, restart that service and resume the others.
pub fn damage_description(descriptions: &mut [baton_procdesc::ProcessDescription]) {
    damage_device(descriptions);
    damage_grant(descriptions);
    let Some(name) = requested().and_then(|fault| fault.strip_prefix("damage-process:")) else { return };
    let target = descriptions.iter_mut().find(|description| description.name.as_str() == name);
    match target.and_then(|description| description.mappings.first_mut()).and_then(|mapping| mapping.runs.first_mut()) {
        Some(run) => {
            log::warn!(target: "kho", "fault injection: the process description of '{name}' claims memory at 0x1000");
            run.phys_start = 0x1000;
        }
        None => log::warn!(target: "kho", "fault injection: no process description of '{name}' to damage"),
    }
}

/// `kho.inject=damage-device:NAME`: the first device record of service
/// NAME says its last BAR is programmed one BAR-size higher than it is
/// (its CPU address, and so the format's checks, unchanged): only reading
/// the device tells. The next kernel must refuse to take the device back,
/// stop it, restart NAME (which resets it) and resume the others.
fn damage_device(descriptions: &mut [baton_procdesc::ProcessDescription]) {
    let Some(name) = requested().and_then(|fault| fault.strip_prefix("damage-device:")) else { return };
    let target = descriptions.iter_mut().find(|description| description.name.as_str() == name);
    match target.and_then(|description| description.devices.first_mut()).and_then(|device| device.bars.last_mut()) {
        Some(bar) => {
            log::warn!(
                target: "kho",
                "fault injection: the device record of '{name}' moves BAR{} from {:#x} to {:#x}",
                bar.index,
                bar.bus_address,
                bar.bus_address + bar.size_bytes
            );
            bar.bus_address += bar.size_bytes;
        }
        None => log::warn!(target: "kho", "fault injection: no device record of '{name}' to damage"),
    }
}

/// `kho.inject=damage-grant:NAME`: the first shared mapping of service
/// NAME claims memory one page past the region it was granted (another
/// service's memory, which nobody granted it). The next kernel must refuse
/// to map it, restart NAME and resume the others.
fn damage_grant(descriptions: &mut [baton_procdesc::ProcessDescription]) {
    let Some(name) = requested().and_then(|fault| fault.strip_prefix("damage-grant:")) else { return };
    let target = descriptions.iter_mut().find(|description| description.name.as_str() == name);
    let shared = target.and_then(|description| {
        description.mappings.iter_mut().find(|mapping| mapping.kind == baton_procdesc::MappingKind::Shared)
    });
    match shared.and_then(|mapping| mapping.runs.first_mut()) {
        Some(run) => {
            log::warn!(
                target: "kho",
                "fault injection: the shared mapping of '{name}' claims {:#x} instead of {:#x}",
                run.phys_start + baton_abi::PAGE_SIZE,
                run.phys_start
            );
            run.phys_start += baton_abi::PAGE_SIZE;
        }
        None => log::warn!(target: "kho", "fault injection: no shared mapping of '{name}' to damage"),
    }
}
