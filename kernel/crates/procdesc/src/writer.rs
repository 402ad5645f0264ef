//! Writing the `baton,processes-v1` sub-FDT: refuse whatever the reader would refuse, then emit each field as its own native-endian property.

use alloc::format;
use alloc::vec::Vec;

use baton_kho::fdt::{FdtWriteError, SubFdtWriter};

use crate::description::{MAX_PROCESSES, Mapping, ProcessDescription, SchedulingState};
use crate::error::WriteError;
use crate::rules::check_description;
use crate::wire::{
    ACCESS_FLAG_EXECUTABLE, ACCESS_FLAG_WRITABLE, DEVICE_NODE_PREFIX, FORMAT_VERSION, FORMAT_VERSION_PROPERTY,
    GRANT_NODE_PREFIX, MAPPING_NODE_PREFIX, MESSAGE_NODE_PREFIX, PROCESS_NODE_PREFIX, PROCESSES_COMPATIBLE, Property,
    SERVICE_FLAG_PRIVILEGED, SERVICE_FLAG_SUBSCRIBED,
};

/// Write `descriptions` as a `processes-v1` sub-FDT, in order.
///
/// Refuses anything [`crate::read_processes`] would refuse (at most
/// [`MAX_PROCESSES`] descriptions, one architecture, unique ids and
/// names, every rule of [`crate::ProcessErrorKind`]), so a blob this
/// returns always reads back, for the descriptions' architecture, to
/// equal descriptions.
pub fn write_processes(descriptions: &[ProcessDescription]) -> Result<Vec<u8>, WriteError> {
    if descriptions.len() > MAX_PROCESSES {
        return Err(WriteError::TooManyProcesses { count: descriptions.len() });
    }
    for (process_index, description) in descriptions.iter().enumerate() {
        let mut earlier = descriptions.iter().take(process_index);
        if descriptions.first().is_some_and(|first| first.architecture != description.architecture) {
            return Err(WriteError::MixedArchitectures { process_index });
        }
        check_description(description).map_err(|(part, kind)| WriteError::InvalidProcess {
            process_index,
            part,
            kind,
        })?;
        if earlier.clone().any(|other| other.service_id == description.service_id) {
            return Err(WriteError::DuplicateServiceId { process_index });
        }
        if earlier.any(|other| other.name == description.name) {
            return Err(WriteError::DuplicateName { process_index });
        }
    }
    Ok(encode(descriptions)?)
}

/// Encode without checking any rule: tests use it to build blobs that
/// break exactly one rule.
pub(crate) fn encode(descriptions: &[ProcessDescription]) -> Result<Vec<u8>, FdtWriteError> {
    let mut writer = SubFdtWriter::new()?;
    writer.property_string("compatible", PROCESSES_COMPATIBLE)?;
    writer.property_u32(FORMAT_VERSION_PROPERTY, FORMAT_VERSION)?;
    for description in descriptions {
        write_process(&mut writer, description)?;
    }
    writer.finish()
}

/// Native-endian bytes of `words`, one after the other.
fn word_list(words: impl IntoIterator<Item = u64>) -> Vec<u8> {
    words.into_iter().flat_map(u64::to_ne_bytes).collect()
}

fn write_process(writer: &mut SubFdtWriter, description: &ProcessDescription) -> Result<(), FdtWriteError> {
    let node = writer.begin_node(&format!("{PROCESS_NODE_PREFIX}{:x}", description.service_id))?;
    writer.property_u64(Property::ServiceId.name(), description.service_id)?;
    writer.property_string(Property::Name.name(), &description.name)?;
    writer.property(Property::BinaryHash.name(), &description.binary_hash)?;
    writer.property_u32(Property::AbiVersion.name(), description.abi_version)?;
    let subscribed = if description.is_subscribed { SERVICE_FLAG_SUBSCRIBED } else { 0 };
    let privileged = if description.is_privileged { SERVICE_FLAG_PRIVILEGED } else { 0 };
    writer.property_u32(Property::ServiceFlags.name(), subscribed | privileged)?;

    let architecture = description.architecture;
    let registers = &description.registers;
    writer.property_u32(Property::Architecture.name(), architecture.number())?;
    let general = registers.general_for(architecture).iter().copied();
    writer.property(Property::GeneralRegisters.name(), &word_list(general))?;
    writer.property_u64(Property::InstructionPointer.name(), registers.instruction_pointer)?;
    writer.property_u64(Property::StackPointer.name(), registers.stack_pointer)?;
    writer.property_u64(Property::FlagsRegister.name(), registers.flags)?;
    writer.property_u64(Property::ThreadPointer.name(), registers.thread_pointer)?;

    writer.property_u32(Property::SchedulingState.name(), description.scheduling.number())?;
    if let Some(message_buffer) = description.scheduling.message_buffer() {
        writer.property_u64(Property::MessageBuffer.name(), message_buffer)?;
    }
    match description.scheduling {
        SchedulingState::Calling { target, .. } => writer.property_u64(Property::CallTarget.name(), target)?,
        SchedulingState::Sleeping { until_ns } => writer.property_u64(Property::SleepUntil.name(), until_ns)?,
        SchedulingState::Ready | SchedulingState::Receiving { .. } => {}
    }
    if let Some(pending_result) = description.pending_result {
        writer.property_u64(Property::PendingResultStatus.name(), pending_result.status)?;
        writer.property_u64(Property::PendingResultValue.name(), pending_result.value)?;
    }
    writer.property(Property::Answerable.name(), &word_list(description.answerable.iter().copied()))?;

    for (position, mapping) in description.mappings.iter().enumerate() {
        write_mapping(writer, position, mapping)?;
    }
    for (position, message) in description.queued_messages.iter().enumerate() {
        let node = writer.begin_node(&format!("{MESSAGE_NODE_PREFIX}{position:x}"))?;
        writer.property_u64(Property::Label.name(), message.label)?;
        writer.property_u64(Property::Sender.name(), message.sender)?;
        writer.property(Property::Words.name(), &word_list(message.words))?;
        writer.end_node(node)?;
    }
    for (position, device) in description.devices.iter().enumerate() {
        let node = writer.begin_node(&format!("{DEVICE_NODE_PREFIX}{position:x}"))?;
        writer.property_u32(Property::PciAddress.name(), device.address_word())?;
        writer.property_u32(Property::PciIds.name(), device.ids_word())?;
        let bars = device.bars.iter().flat_map(|bar| {
            [u64::from(bar.index) | bar.kind.number() << 8, bar.bus_address, bar.cpu_address, bar.size_bytes]
        });
        writer.property(Property::Bars.name(), &word_list(bars))?;
        writer.end_node(node)?;
    }
    for (position, grant) in description.grants.iter().enumerate() {
        let node = writer.begin_node(&format!("{GRANT_NODE_PREFIX}{position:x}"))?;
        writer.property_u64(Property::GrantId.name(), grant.grant_id)?;
        writer.property_string(Property::Peer.name(), &grant.peer)?;
        writer.property(Property::Range.name(), &word_list([grant.virtual_start, grant.size_bytes]))?;
        if let Some(peer_virtual_start) = grant.peer_virtual_start {
            writer.property_u64(Property::PeerMapping.name(), peer_virtual_start)?;
        }
        writer.end_node(node)?;
    }
    writer.end_node(node)
}

fn write_mapping(writer: &mut SubFdtWriter, position: usize, mapping: &Mapping) -> Result<(), FdtWriteError> {
    let node = writer.begin_node(&format!("{MAPPING_NODE_PREFIX}{position:x}"))?;
    writer.property_u64(Property::VirtualStart.name(), mapping.virtual_start)?;
    writer.property_u64(Property::SizeBytes.name(), mapping.size_bytes)?;
    writer.property_u32(Property::Kind.name(), mapping.kind.number())?;
    let writable = if mapping.is_writable { ACCESS_FLAG_WRITABLE } else { 0 };
    let executable = if mapping.is_executable { ACCESS_FLAG_EXECUTABLE } else { 0 };
    writer.property_u32(Property::AccessFlags.name(), writable | executable)?;
    writer.property_u32(Property::FolioOrder.name(), mapping.folio_order)?;
    let runs = mapping.runs.iter().flat_map(|run| [run.phys_start, run.size_bytes]);
    writer.property(Property::PhysicalRuns.name(), &word_list(runs))?;
    if mapping.kind == crate::MappingKind::Shared {
        writer.property_u64(Property::GrantId.name(), mapping.grant_id)?;
    }
    writer.end_node(node)
}
