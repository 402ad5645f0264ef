//! The outgoing state machine end to end: finalise, read back as the next kernel would, abort.

use alloc::string::String;
use alloc::vec::Vec;

use super::{GIB, MIB, memory};
use crate::bitmap::Folio;
use crate::fdt::{SubFdtWriter, parse_kho_fdt, read_fdt};
use crate::memory::{PhysMemory, PhysRange, SimulatedMemory};
use crate::outgoing::{OutgoingError, OutgoingHandover};
use crate::serial::IncomingPreservations;
use crate::tracker::TrackerError;

/// A user's sub-FDT written at `phys`; returns its size.
fn write_sub_fdt(memory: &mut SimulatedMemory, phys: u64, compatible: &str, state_phys: u64) -> u64 {
    let mut writer = SubFdtWriter::new().unwrap();
    writer.property_string("compatible", compatible).unwrap();
    writer.property_u64("state", state_phys).unwrap();
    let blob = writer.finish().unwrap();
    memory.write(phys, &blob).unwrap();
    blob.len() as u64
}

/// A handover with two users, each preserving its sub-FDT page and some state.
fn populated(memory: &mut SimulatedMemory) -> OutgoingHandover {
    let mut handover = OutgoingHandover::new();
    let boot_size = write_sub_fdt(memory, 2 * GIB, "baton-boot-v1", 0);
    handover.preserve_folio(memory, 2 * GIB, 0).unwrap();
    handover.add_sub_fdt("baton-boot", 2 * GIB, boot_size).unwrap();
    let counter_size = write_sub_fdt(memory, 3 * GIB, "counter-v1", 3 * GIB + 2 * MIB);
    handover.preserve_folio(memory, 3 * GIB, 0).unwrap();
    handover.preserve_range(memory, 3 * GIB + 2 * MIB, 6 * MIB).unwrap();
    handover.add_sub_fdt("counter", 3 * GIB, counter_size).unwrap();
    handover
}

#[test]
fn finalised_handover_reads_back_as_the_next_kernel_sees_it() {
    let mut memory = memory();
    let mut handover = populated(&mut memory);
    let expected: Vec<Folio> = handover.tracker().folios(&memory).collect::<Result<_, _>>().unwrap();
    let summary = handover.finalize(&mut memory).unwrap();
    assert!(handover.is_finalized());
    assert_eq!(handover.summary(), Some(&summary));
    assert_eq!(summary.root_fdt_phys % 4096, 0);
    assert_eq!(summary.folio_count, expected.len() as u64);
    assert_eq!(summary.preserved_bytes, 2 * 4096 + 6 * MIB);
    assert_eq!(summary.bitmap_count, handover.tracker().bitmap_count());
    assert!(summary.chunk_count >= 1);
    assert_eq!(summary.users, [(String::from("baton-boot"), 2 * GIB), (String::from("counter"), 3 * GIB)]);

    // The next kernel: root FDT from memory, then the chunk list.
    let root = read_fdt(&memory, summary.root_fdt_phys, 64 * 1024).unwrap();
    assert_eq!(root.len() as u64, summary.root_fdt_size_bytes);
    let parsed = parse_kho_fdt(&root).unwrap();
    assert_eq!(parsed.preserved_memory_map_phys(), summary.chunk_list_head_phys);
    assert_eq!(parsed.user("counter"), Some(3 * GIB));
    let sub_fdt = read_fdt(&memory, parsed.user("counter").unwrap(), 4096).unwrap();
    let sub = crate::fdt::parse_fdt(&sub_fdt).unwrap();
    let state = sub.find_node("/").unwrap().property("state").unwrap().value;
    assert_eq!(crate::fdt::native_u64(state), Some(3 * GIB + 2 * MIB));
    let incoming =
        IncomingPreservations::walk(&memory, parsed.preserved_memory_map_phys(), &[PhysRange::new(0, 64 * GIB)])
            .unwrap();
    let handed_over: Vec<Folio> = incoming.folios(&memory).collect::<Result<_, _>>().unwrap();
    assert_eq!(handed_over, expected);
    assert_eq!(incoming.chunk_count(), summary.chunk_count);
}

#[test]
fn finalised_handover_is_busy_until_aborted() {
    let mut memory = memory();
    let mut handover = populated(&mut memory);
    let before_finalize = memory.live_allocation_count();
    handover.finalize(&mut memory).unwrap();
    assert_eq!(handover.preserve_folio(&mut memory, 4 * GIB, 0), Err(OutgoingError::Busy));
    assert_eq!(handover.unpreserve_folio(&mut memory, 2 * GIB, 0), Err(OutgoingError::Busy));
    assert_eq!(handover.preserve_range(&mut memory, 4 * GIB, 4096), Err(OutgoingError::Busy));
    assert_eq!(handover.unpreserve_range(&mut memory, 3 * GIB + 2 * MIB, 6 * MIB), Err(OutgoingError::Busy));
    assert_eq!(handover.add_sub_fdt("late", 5 * GIB, 64), Err(OutgoingError::Busy));
    assert_eq!(handover.remove_sub_fdt("counter"), Err(OutgoingError::Busy));
    assert_eq!(handover.finalize(&mut memory), Err(OutgoingError::AlreadyFinalized));
    assert!(!handover.tracker().is_preserved(&memory, 4 * GIB, 0).unwrap());

    handover.abort(&mut memory).unwrap();
    assert!(!handover.is_finalized());
    assert_eq!(handover.summary(), None);
    assert_eq!(memory.live_allocation_count(), before_finalize, "chunks and root copy are freed");
    assert_eq!(handover.abort(&mut memory), Err(OutgoingError::NotFinalized));

    // Open again: changes work, and a second finalisation sees them.
    handover.unpreserve_range(&mut memory, 3 * GIB + 2 * MIB, 6 * MIB).unwrap();
    handover.remove_sub_fdt("counter").unwrap();
    let summary = handover.finalize(&mut memory).unwrap();
    assert_eq!(summary.users, [(String::from("baton-boot"), 2 * GIB)]);
    assert_eq!(summary.preserved_bytes, 2 * 4096);
}

#[test]
fn abort_before_finalize_is_an_error() {
    let mut memory = memory();
    let mut handover = OutgoingHandover::new();
    assert_eq!(handover.abort(&mut memory), Err(OutgoingError::NotFinalized));
}

#[test]
fn nothing_preserved_still_finalises() {
    let mut memory = memory();
    let mut handover = OutgoingHandover::new();
    let summary = handover.finalize(&mut memory).unwrap();
    assert_eq!(summary.chunk_list_head_phys, 0);
    assert_eq!(summary.chunk_count, 0);
    assert_eq!(summary.folio_count, 0);
    let root = read_fdt(&memory, summary.root_fdt_phys, 4096).unwrap();
    let parsed = parse_kho_fdt(&root).unwrap();
    assert_eq!(parsed.preserved_memory_map_phys(), 0);
    assert!(parsed.users().is_empty());
}

#[test]
fn sub_fdt_registration_rules() {
    let mut memory = memory();
    let mut handover = OutgoingHandover::new();
    assert_eq!(handover.add_sub_fdt("bad name", GIB, 64), Err(OutgoingError::InvalidUserName));
    assert_eq!(handover.add_sub_fdt("a@b", GIB, 64), Err(OutgoingError::InvalidUserName));
    assert_eq!(handover.add_sub_fdt("zero", GIB, 0), Err(OutgoingError::InvalidSubFdtRange { phys: GIB }));
    assert_eq!(
        handover.add_sub_fdt("wraps", u64::MAX - 10, 64),
        Err(OutgoingError::InvalidSubFdtRange { phys: u64::MAX - 10 })
    );
    handover.add_sub_fdt("svc", GIB, 64).unwrap();
    assert_eq!(handover.add_sub_fdt("svc", 2 * GIB, 64), Err(OutgoingError::DuplicateUserName));
    assert_eq!(handover.remove_sub_fdt("other"), Err(OutgoingError::UnknownUser));
    assert_eq!(handover.sub_fdts().count(), 1);
    // Preservation errors come through typed.
    assert_eq!(
        handover.preserve_folio(&mut memory, 4097, 0),
        Err(OutgoingError::Tracker(TrackerError::MisalignedFolio { phys: 4097, order: 0 }))
    );
}

#[test]
fn finalize_refuses_unpreserved_or_invalid_sub_fdts_and_stays_open() {
    let mut memory = memory();
    let mut handover = OutgoingHandover::new();
    let size = write_sub_fdt(&mut memory, GIB, "svc-v1", 0);
    handover.add_sub_fdt("svc", GIB, size).unwrap();
    assert_eq!(handover.finalize(&mut memory), Err(OutgoingError::SubFdtNotPreserved { phys: GIB }));
    assert!(!handover.is_finalized());

    handover.preserve_folio(&mut memory, GIB, 0).unwrap();
    handover.add_sub_fdt("garbage", GIB + 8 * MIB, 64).unwrap();
    handover.preserve_folio(&mut memory, GIB + 8 * MIB, 0).unwrap();
    memory.write(GIB + 8 * MIB, &[0xab; 64]).unwrap();
    assert!(matches!(
        handover.finalize(&mut memory),
        Err(OutgoingError::InvalidSubFdt { phys, .. }) if phys == GIB + 8 * MIB
    ));
    // A registered size smaller than the blob is refused too.
    handover.remove_sub_fdt("garbage").unwrap();
    handover.remove_sub_fdt("svc").unwrap();
    handover.add_sub_fdt("svc", GIB, size - 1).unwrap();
    assert!(matches!(handover.finalize(&mut memory), Err(OutgoingError::InvalidSubFdt { .. })));
    assert!(!handover.is_finalized());
    assert_eq!(memory.live_allocation_count(), 1, "only the tracker's bitmap is allocated");
}

#[test]
fn finalize_out_of_metadata_memory_frees_everything_and_can_be_retried() {
    let mut memory = memory();
    let mut handover = populated(&mut memory);
    let bitmaps = memory.live_allocation_count();
    // Three chunk pages (orders 0, 9 and 10), then the root copy.
    for budget in 0..4 {
        memory.set_allocation_budget(Some(budget));
        assert_eq!(handover.finalize(&mut memory), Err(OutgoingError::OutOfMetadataMemory), "budget {budget}");
        assert!(!handover.is_finalized());
        assert_eq!(memory.live_allocation_count(), bitmaps);
    }
    memory.set_allocation_budget(None);
    handover.finalize(&mut memory).unwrap();
}
