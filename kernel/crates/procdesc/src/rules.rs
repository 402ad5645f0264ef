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
use crate::device::{DeviceBar, DeviceBarKind, DeviceRecord, MAX_BARS, MAX_DEVICES};
use crate::error::{Part, ProcessErrorKind};
use crate::grant::{GrantRecord, MAX_GRANTS};

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
    check_devices(&description.devices)?;
    for (mapping_index, mapping) in description.mappings.iter().enumerate() {
        let at_mapping = |kind| (Part::Mapping { mapping_index }, kind);
        check_mapping(mapping).map_err(at_mapping)?;
        if mapping.kind == MappingKind::Device {
            check_device_mapping(mapping, &description.devices).map_err(at_mapping)?;
        }
        let is_shared = mapping.kind == MappingKind::Shared;
        if is_shared && (mapping.is_executable || mapping.runs.len() != 1 || mapping.grant_id == 0) {
            return Err(at_mapping(ProcessErrorKind::InvalidSharedMapping));
        }
        if !is_shared && mapping.grant_id != 0 {
            return Err(at_mapping(ProcessErrorKind::PropertyNotForKind { property: crate::Property::GrantId }));
        }
    }
    check_overlaps(&description.mappings)?;
    check_grants(description)?;
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

/// Each record names a function once, with BARs a header could have.
fn check_devices(devices: &[DeviceRecord]) -> Result<(), Violation> {
    if devices.len() > MAX_DEVICES {
        return Err((Part::Process, ProcessErrorKind::TooManyDevices));
    }
    for (device_index, device) in devices.iter().enumerate() {
        let at_device = |kind| (Part::Device { device_index }, kind);
        if device.device > 31 || device.function > 7 {
            return Err(at_device(ProcessErrorKind::InvalidPciAddress { word: device.address_word() }));
        }
        if devices.iter().take(device_index).any(|earlier| earlier.address_word() == device.address_word()) {
            return Err(at_device(ProcessErrorKind::DuplicateDevice));
        }
        check_bars(&device.bars).map_err(at_device)?;
    }
    Ok(())
}

fn check_bars(bars: &[DeviceBar]) -> Result<(), ProcessErrorKind> {
    if bars.len() > MAX_BARS {
        return Err(ProcessErrorKind::TooManyBars { count: bars.len() });
    }
    // Registers each BAR takes, as bits.
    let mut taken = 0_u8;
    for (bar_index, bar) in bars.iter().enumerate() {
        let registers: u8 = if matches!(bar.kind, DeviceBarKind::Memory64 { .. }) { 0b11 } else { 0b01 };
        let last_register = if registers == 0b11 { 4 } else { 5 };
        if bar.index > last_register {
            return Err(ProcessErrorKind::InvalidBarRegister { bar_index });
        }
        let bits = registers << bar.index;
        if taken & bits != 0 {
            return Err(ProcessErrorKind::InvalidBarRegister { bar_index });
        }
        taken |= bits;
        let invalid_range = ProcessErrorKind::InvalidBarRange { bar_index };
        if !bar.size_bytes.is_power_of_two() {
            return Err(invalid_range);
        }
        let bus_end = bar.bus_address.checked_add(bar.size_bytes).ok_or(invalid_range)?;
        bar.cpu_address.checked_add(bar.size_bytes).ok_or(invalid_range)?;
        let is_32_bit = matches!(bar.kind, DeviceBarKind::Memory32 { .. } | DeviceBarKind::Io);
        if is_32_bit && bus_end > 1 << 32 {
            return Err(invalid_range);
        }
    }
    Ok(())
}

/// A device mapping is data, not code, and every run lies inside one
/// memory BAR of one of the process's devices.
fn check_device_mapping(mapping: &Mapping, devices: &[DeviceRecord]) -> Result<(), ProcessErrorKind> {
    if mapping.is_executable || mapping.folio_order != 0 {
        return Err(ProcessErrorKind::InvalidDeviceMapping);
    }
    for (run_index, run) in mapping.runs.iter().enumerate() {
        if !devices.iter().any(|device| device.contains_cpu_range(run.phys_start, run.size_bytes)) {
            return Err(ProcessErrorKind::DeviceRunOutsideBars { run_index });
        }
    }
    Ok(())
}

/// Each grant has its own nonzero id, names another service, and covers
/// whole pages of one physical run of one writable preservable mapping
/// (the memory a peer's shared mapping is, and the owner hands over).
fn check_grants(description: &ProcessDescription) -> Result<(), Violation> {
    let grants = &description.grants;
    if grants.len() > MAX_GRANTS {
        return Err((Part::Process, ProcessErrorKind::TooManyGrants));
    }
    for (grant_index, grant) in grants.iter().enumerate() {
        let at_grant = |kind| (Part::Grant { grant_index }, kind);
        if grant.grant_id == 0 || grants.iter().take(grant_index).any(|earlier| earlier.grant_id == grant.grant_id) {
            return Err(at_grant(ProcessErrorKind::InvalidGrantId));
        }
        if !is_valid_user_name(&grant.peer) || grant.peer == description.name {
            return Err(at_grant(ProcessErrorKind::InvalidGrantPeer));
        }
        if grant_physical_start(grant, &description.mappings).is_none() {
            return Err(at_grant(ProcessErrorKind::InvalidGrantRange));
        }
        if let Some(start) = grant.peer_virtual_start {
            let end = start.checked_add(grant.size_bytes);
            if !start.is_multiple_of(PAGE_SIZE) || end.is_none_or(|end| end > USER_ADDRESS_LIMIT) {
                return Err(at_grant(ProcessErrorKind::InvalidPeerMapping));
            }
        }
    }
    Ok(())
}

/// The physical address of a grant's first byte, when it covers whole
/// pages of one physical run of one writable preservable mapping.
pub(crate) fn grant_physical_start(grant: &GrantRecord, mappings: &[Mapping]) -> Option<u64> {
    let (start, size) = (grant.virtual_start, grant.size_bytes);
    if size == 0 || !start.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    let end = start.checked_add(size)?;
    let mapping = mappings.iter().find(|mapping| {
        mapping.kind == MappingKind::Preservable
            && mapping.is_writable
            && mapping.virtual_start <= start
            && end <= mapping.virtual_start.saturating_add(mapping.size_bytes)
    })?;
    let mut run_virtual = mapping.virtual_start;
    for run in &mapping.runs {
        let run_end = run_virtual.checked_add(run.size_bytes)?;
        if run_virtual <= start && end <= run_end {
            return run.phys_start.checked_add(start.checked_sub(run_virtual)?);
        }
        run_virtual = run_end;
    }
    None
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
