//! The rules a decoded process description must follow, shared by the writer (which refuses to write what breaks them) and the parser.
//!
//! The parser has already checked what only the encoding can get wrong
//! (sizes, unknown numbers, node names); these checks cover what a typed
//! [`ProcessDescription`] can still get wrong. They run on hostile data.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::unwrap_used)]

use alloc::vec::Vec;

use baton_abi::message::MESSAGE_BYTES;
use baton_abi::{Error, MAX_USER_FOLIO_ORDER, PAGE_SIZE, USER_ADDRESS_LIMIT};
use baton_kho::fdt::is_valid_user_name;

use crate::description::{
    MAX_MAPPINGS, MAX_RUNS_PER_MAPPING, Mapping, MappingKind, PendingResult, ProcessDescription, SchedulingState,
};
use crate::error::{Part, ProcessErrorKind};

/// A broken rule and where.
pub(crate) type Violation = (Part, ProcessErrorKind);

/// Check every rule of one description.
pub(crate) fn check_description(description: &ProcessDescription) -> Result<(), Violation> {
    let at_process = |kind| (Part::Process, kind);
    if !is_valid_user_name(&description.name) {
        return Err(at_process(ProcessErrorKind::InvalidName));
    }
    check_registers(description).map_err(at_process)?;
    if description.mappings.len() > MAX_MAPPINGS {
        return Err(at_process(ProcessErrorKind::TooManyMappings));
    }
    for (mapping_index, mapping) in description.mappings.iter().enumerate() {
        check_mapping(mapping).map_err(|kind| (Part::Mapping { mapping_index }, kind))?;
    }
    check_overlaps(&description.mappings)?;
    check_scheduling(&description.scheduling).map_err(at_process)?;
    if let Some(pending_result) = description.pending_result {
        check_pending_result(pending_result).map_err(at_process)?;
    }
    for (position, caller) in description.answerable.iter().enumerate() {
        if description.answerable.iter().take(position).any(|earlier| earlier == caller) {
            return Err(at_process(ProcessErrorKind::DuplicateAnswerable { caller: *caller }));
        }
    }
    Ok(())
}

fn check_registers(description: &ProcessDescription) -> Result<(), ProcessErrorKind> {
    let architecture = description.architecture;
    let registers = &description.registers;
    let count = architecture.general_register_count();
    if let Some((offset, _)) = registers.general.iter().skip(count).enumerate().find(|(_, value)| **value != 0) {
        let register_index = count.saturating_add(offset);
        return Err(ProcessErrorKind::UnusedGeneralRegisterNotZero { register_index });
    }
    if registers.instruction_pointer >= USER_ADDRESS_LIMIT {
        return Err(ProcessErrorKind::InstructionPointerOutsideUserHalf { address: registers.instruction_pointer });
    }
    // An empty stack may start at the very top of the user half.
    if registers.stack_pointer > USER_ADDRESS_LIMIT {
        return Err(ProcessErrorKind::StackPointerOutsideUserHalf { address: registers.stack_pointer });
    }
    if !architecture.is_user_mode_flags(registers.flags) {
        return Err(ProcessErrorKind::FlagsNotUserMode { flags: registers.flags });
    }
    if !architecture.is_valid_thread_pointer(registers.thread_pointer) {
        return Err(ProcessErrorKind::ThreadPointerNotCanonical { address: registers.thread_pointer });
    }
    Ok(())
}

/// `2^order` pages in bytes, or `None` past 64 bits.
fn folio_size_bytes(order: u32) -> Option<u64> {
    let pages = 1_u64.checked_shl(order)?;
    pages.checked_mul(PAGE_SIZE)
}

fn check_mapping(mapping: &Mapping) -> Result<(), ProcessErrorKind> {
    if mapping.is_writable && mapping.is_executable {
        return Err(ProcessErrorKind::WritableAndExecutable);
    }
    if mapping.size_bytes == 0 {
        return Err(ProcessErrorKind::MappingEmpty);
    }
    if !mapping.virtual_start.is_multiple_of(PAGE_SIZE) || !mapping.size_bytes.is_multiple_of(PAGE_SIZE) {
        return Err(ProcessErrorKind::MappingNotPageAligned);
    }
    let end = mapping.virtual_start.checked_add(mapping.size_bytes).ok_or(ProcessErrorKind::MappingEndOverflows)?;
    if end > USER_ADDRESS_LIMIT {
        return Err(ProcessErrorKind::MappingPastUserAddressLimit { end });
    }
    let order = mapping.folio_order;
    if order > MAX_USER_FOLIO_ORDER {
        return Err(ProcessErrorKind::FolioOrderTooLarge { order });
    }
    if mapping.kind != MappingKind::Preservable && order != 0 {
        return Err(ProcessErrorKind::FolioOrderWithoutPreservable { order });
    }
    // Every kind's runs are whole pages; a preservable mapping's are whole
    // folios, as the kernel restores them folio by folio.
    let run_alignment_bytes = folio_size_bytes(order).ok_or(ProcessErrorKind::FolioOrderTooLarge { order })?;
    if mapping.runs.is_empty() {
        return Err(ProcessErrorKind::MappingWithoutRuns);
    }
    if mapping.runs.len() > MAX_RUNS_PER_MAPPING {
        return Err(ProcessErrorKind::TooManyRuns { count: mapping.runs.len() });
    }
    let mut runs_total_bytes = 0_u64;
    for (run_index, run) in mapping.runs.iter().enumerate() {
        if run.size_bytes == 0 {
            return Err(ProcessErrorKind::RunEmpty { run_index });
        }
        if !run.phys_start.is_multiple_of(PAGE_SIZE) || !run.size_bytes.is_multiple_of(PAGE_SIZE) {
            return Err(ProcessErrorKind::RunNotPageAligned { run_index });
        }
        if !run.phys_start.is_multiple_of(run_alignment_bytes) || !run.size_bytes.is_multiple_of(run_alignment_bytes) {
            return Err(ProcessErrorKind::RunNotFolioAligned { run_index });
        }
        if run.phys_start.checked_add(run.size_bytes).is_none() {
            return Err(ProcessErrorKind::RunEndOverflows { run_index });
        }
        runs_total_bytes = runs_total_bytes.saturating_add(run.size_bytes);
    }
    if runs_total_bytes != mapping.size_bytes {
        return Err(ProcessErrorKind::RunsDoNotSumToMappingSize { runs_total_bytes });
    }
    Ok(())
}

/// No two mappings share an address. The (already checked, non-empty)
/// mappings are sorted by start, then position, in a copy of at most
/// [`MAX_MAPPINGS`] entries; then any overlap shows between neighbours,
/// and is reported on the later one of the pair.
fn check_overlaps(mappings: &[Mapping]) -> Result<(), Violation> {
    let mut ranges: Vec<(u64, usize, u64)> = mappings
        .iter()
        .enumerate()
        .map(|(index, mapping)| {
            (mapping.virtual_start, index, mapping.virtual_start.saturating_add(mapping.size_bytes))
        })
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if let [(_, earlier_index, earlier_end), (later_start, later_index, _)] = pair
            && later_start < earlier_end
        {
            let kind = ProcessErrorKind::MappingsOverlap { other_mapping_index: *earlier_index };
            return Err((Part::Mapping { mapping_index: *later_index }, kind));
        }
    }
    Ok(())
}

fn check_scheduling(scheduling: &SchedulingState) -> Result<(), ProcessErrorKind> {
    let Some(address) = scheduling.message_buffer() else {
        return Ok(());
    };
    if !address.is_multiple_of(8) {
        return Err(ProcessErrorKind::MessageBufferMisaligned { address });
    }
    match address.checked_add(MESSAGE_BYTES as u64) {
        Some(end) if end <= USER_ADDRESS_LIMIT => Ok(()),
        _ => Err(ProcessErrorKind::MessageBufferOutsideUserHalf { address }),
    }
}

fn check_pending_result(pending_result: PendingResult) -> Result<(), ProcessErrorKind> {
    let status = pending_result.status;
    if status != 0 && Error::from_number(status).is_none() {
        return Err(ProcessErrorKind::UnknownResultStatus { status });
    }
    Ok(())
}
