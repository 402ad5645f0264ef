//! Reading a `processes-v1` blob the previous kernel wrote: every byte is hostile, every rule has its own error, and one bad process does not spoil the others.
//!
//! The blob is proven a well-formed FDT by `baton_kho::fdt::parse_fdt`
//! before anything walks it. Then the root is checked as a whole
//! ([`DescriptionError`]) and each process node on its own
//! ([`ProcessError`]): its properties are sorted into the slots the
//! format defines (an unknown or repeated one is an error), each slot is
//! decoded with its size checked, and the decoded description goes
//! through the same rules the writer applies (`rules.rs`). Nothing is
//! allocated before the count that bounds it has been checked.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::unwrap_used)]

use alloc::vec::Vec;

use arrayvec::{ArrayString, ArrayVec};
use baton_abi::{MAX_NAME_BYTES, MESSAGE_WORDS, Message};
use baton_kho::fdt::{is_valid_user_name, native_u32, native_u64, parse_fdt};

use crate::description::{
    Architecture, BINARY_HASH_BYTES, MAX_ANSWERABLE_CALLERS, MAX_GENERAL_REGISTERS, MAX_MAPPINGS, MAX_PROCESSES,
    MAX_RUNS_PER_MAPPING, Mapping, MappingKind, PendingResult, PhysicalRun, ProcessDescription, SchedulingState,
    UserRegisters,
};
use crate::device::{DeviceBar, DeviceBarKind, DeviceRecord, MAX_BARS, MAX_DEVICES};
use crate::error::{DescriptionError, Part, ProcessError, ProcessErrorKind};
use crate::grant::{GrantRecord, MAX_GRANTS};
use crate::rules::{Violation, check_description};
use crate::wire::{
    ACCESS_FLAG_EXECUTABLE, ACCESS_FLAG_WRITABLE, DEVICE_NODE_PREFIX, DEVICE_PROPERTIES, FORMAT_VERSION,
    FORMAT_VERSION_PROPERTY, GRANT_NODE_PREFIX, GRANT_PROPERTIES, MAPPING_NODE_PREFIX, MAPPING_PROPERTIES,
    MESSAGE_NODE_PREFIX, MESSAGE_PROPERTIES, PROCESS_NODE_PREFIX, PROCESS_PROPERTIES, PROCESSES_COMPATIBLE, Property,
    SCHEDULING_PROPERTIES, SERVICE_FLAG_PRIVILEGED, SERVICE_FLAG_SUBSCRIBED, scheduling_properties, unit_address,
};

/// Read every process description in `fdt_bytes`, for a kernel running on
/// `expected_architecture`.
///
/// `Err` means the blob is not a `processes-v1` description at all. `Ok`
/// holds one entry per process node, in blob order: the description, or
/// why that process cannot be resumed. Never panics, whatever the bytes.
///
/// A description returned here has passed every rule this crate knows;
/// the caller must still check that its physical runs are memory the
/// previous kernel preserved for it (see
/// [`ProcessDescription::physical_runs`]) and that it supports its
/// `abi_version`.
pub fn read_processes(
    fdt_bytes: &[u8],
    expected_architecture: Architecture,
) -> Result<Vec<Result<ProcessDescription, ProcessError>>, DescriptionError> {
    let fdt = parse_fdt(fdt_bytes)?;
    // A validated blob always has a root; one without could not have a
    // `compatible` either.
    let root = fdt.find_node("/").ok_or(DescriptionError::MissingCompatible)?;
    check_root(root.properties().map(|property| (property.name, property.value)))?;
    let count = root.children().count();
    if count > MAX_PROCESSES {
        return Err(DescriptionError::TooManyProcesses { count });
    }
    let mut results = Vec::with_capacity(count);
    for (node_index, node) in root.children().enumerate() {
        let children = node.children().map(|child| ChildNode {
            name: child.name,
            has_children: child.children().next().is_some(),
            properties: child.properties().map(|property| (property.name, property.value)),
        });
        let properties = node.properties().map(|property| (property.name, property.value));
        results.push(read_process(node_index, node.name, properties, children, expected_architecture));
    }
    refuse_shared_identities(&mut results);
    Ok(results)
}

/// The root holds exactly `compatible` and `format-version`.
fn check_root<'a>(properties: impl Iterator<Item = (&'a str, &'a [u8])>) -> Result<(), DescriptionError> {
    let mut compatible = None;
    let mut format_version = None;
    let mut has_unexpected_property = false;
    for (name, value) in properties {
        let slot = match name {
            "compatible" => &mut compatible,
            FORMAT_VERSION_PROPERTY => &mut format_version,
            _ => {
                has_unexpected_property = true;
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(DescriptionError::DuplicateRootProperty);
        }
    }
    // `compatible` decides first, then the version: another format or a
    // later version may have other properties.
    let compatible = compatible.ok_or(DescriptionError::MissingCompatible)?;
    if compatible.strip_suffix(b"\0") != Some(PROCESSES_COMPATIBLE.as_bytes()) {
        return Err(DescriptionError::Incompatible);
    }
    let format_version = format_version.ok_or(DescriptionError::MissingFormatVersion)?;
    let version = native_u32(format_version)
        .ok_or(DescriptionError::BadFormatVersionSize { size_bytes: format_version.len() })?;
    if version != FORMAT_VERSION {
        return Err(DescriptionError::UnsupportedFormatVersion { version });
    }
    if has_unexpected_property {
        return Err(DescriptionError::UnexpectedRootProperty);
    }
    Ok(())
}

/// A child of a process node, as the FDT walk hands it over.
struct ChildNode<'a, P> {
    name: &'a str,
    has_children: bool,
    properties: P,
}

fn read_process<'a, P, C, CP>(
    node_index: usize,
    node_name: &'a str,
    properties: P,
    children: C,
    expected_architecture: Architecture,
) -> Result<ProcessDescription, ProcessError>
where
    P: Iterator<Item = (&'a str, &'a [u8])>,
    C: Iterator<Item = ChildNode<'a, CP>>,
    CP: Iterator<Item = (&'a str, &'a [u8])>,
{
    let mut service_id = unit_address(node_name, PROCESS_NODE_PREFIX);
    let decoded = decode_process(node_name, properties, children, expected_architecture, &mut service_id);
    decoded
        .and_then(|description| check_description(&description).map(|()| description))
        .map_err(|(part, kind)| ProcessError { node_index, service_id, part, kind })
}

/// Decode one process node. `known_service_id` is updated as soon as the
/// `service-id` property has been read, so errors can name the service.
fn decode_process<'a, P, C, CP>(
    node_name: &'a str,
    properties: P,
    children: C,
    expected_architecture: Architecture,
    known_service_id: &mut Option<u64>,
) -> Result<ProcessDescription, Violation>
where
    P: Iterator<Item = (&'a str, &'a [u8])>,
    C: Iterator<Item = ChildNode<'a, CP>>,
    CP: Iterator<Item = (&'a str, &'a [u8])>,
{
    let at_process = |kind| (Part::Process, kind);
    let node_name_id =
        unit_address(node_name, PROCESS_NODE_PREFIX).ok_or(at_process(ProcessErrorKind::InvalidNodeName))?;
    let slots = PropertySlots::collect(&PROCESS_PROPERTIES, properties).map_err(at_process)?;
    let service_id = slots.u64(Property::ServiceId).map_err(at_process)?;
    *known_service_id = Some(service_id);
    if service_id != node_name_id {
        return Err(at_process(ProcessErrorKind::ServiceIdDoesNotMatchNodeName { node_name_id }));
    }
    let identity = decode_identity(&slots).map_err(at_process)?;
    let architecture = decode_architecture(&slots, expected_architecture).map_err(at_process)?;
    let registers = decode_registers(&slots, architecture).map_err(at_process)?;
    let scheduling = decode_scheduling(&slots).map_err(at_process)?;
    let pending_result = decode_pending_result(&slots).map_err(at_process)?;
    let answerable = decode_answerable(&slots).map_err(at_process)?;
    let Children { mappings, queued_messages, devices, grants } = decode_children(children)?;
    Ok(ProcessDescription {
        service_id,
        name: identity.name,
        binary_hash: identity.binary_hash,
        abi_version: identity.abi_version,
        is_subscribed: identity.service_flags & SERVICE_FLAG_SUBSCRIBED != 0,
        is_privileged: identity.service_flags & SERVICE_FLAG_PRIVILEGED != 0,
        architecture,
        registers,
        mappings,
        scheduling,
        pending_result,
        queued_messages,
        answerable,
        devices,
        grants,
    })
}

/// The slots of a process node.
type ProcessSlots<'a> = PropertySlots<'a, { PROCESS_PROPERTIES.len() }>;

/// The identity properties other than `service-id`.
struct Identity {
    name: ArrayString<MAX_NAME_BYTES>,
    binary_hash: [u8; BINARY_HASH_BYTES],
    abi_version: u32,
    service_flags: u32,
}

fn decode_identity(slots: &ProcessSlots<'_>) -> Result<Identity, ProcessErrorKind> {
    let name = decode_name(slots.required(Property::Name)?)?;
    let binary_hash = fixed_size::<BINARY_HASH_BYTES>(Property::BinaryHash, slots.required(Property::BinaryHash)?)?;
    let abi_version = slots.u32(Property::AbiVersion)?;
    let service_flags = slots.u32(Property::ServiceFlags)?;
    if service_flags & !(SERVICE_FLAG_SUBSCRIBED | SERVICE_FLAG_PRIVILEGED) != 0 {
        return Err(ProcessErrorKind::UnknownServiceFlags { flags: service_flags });
    }
    Ok(Identity { name, binary_hash, abi_version, service_flags })
}

fn decode_name(value: &[u8]) -> Result<ArrayString<MAX_NAME_BYTES>, ProcessErrorKind> {
    let text = value.strip_suffix(b"\0").ok_or(ProcessErrorKind::NameNotTerminated)?;
    if text.contains(&0) {
        return Err(ProcessErrorKind::NameNotTerminated);
    }
    let text = core::str::from_utf8(text).map_err(|_| ProcessErrorKind::InvalidName)?;
    if !is_valid_user_name(text) {
        return Err(ProcessErrorKind::InvalidName);
    }
    ArrayString::from(text).map_err(|_| ProcessErrorKind::InvalidName)
}

fn decode_architecture(slots: &ProcessSlots<'_>, expected: Architecture) -> Result<Architecture, ProcessErrorKind> {
    let number = slots.u32(Property::Architecture)?;
    let found = Architecture::from_number(number).ok_or(ProcessErrorKind::UnknownArchitecture { number })?;
    if found != expected {
        return Err(ProcessErrorKind::ArchitectureMismatch { found, expected });
    }
    Ok(found)
}

fn decode_registers(slots: &ProcessSlots<'_>, architecture: Architecture) -> Result<UserRegisters, ProcessErrorKind> {
    let property = Property::GeneralRegisters;
    let value = slots.required(property)?;
    let count = architecture.general_register_count();
    check_size(property, value, count.saturating_mul(8))?;
    let (words, _) = value.as_chunks::<8>();
    let mut general = [0_u64; MAX_GENERAL_REGISTERS];
    for (register, word) in general.iter_mut().zip(words) {
        *register = u64::from_ne_bytes(*word);
    }
    Ok(UserRegisters {
        general,
        instruction_pointer: slots.u64(Property::InstructionPointer)?,
        stack_pointer: slots.u64(Property::StackPointer)?,
        flags: slots.u64(Property::FlagsRegister)?,
        thread_pointer: slots.u64(Property::ThreadPointer)?,
    })
}

fn decode_scheduling(slots: &ProcessSlots<'_>) -> Result<SchedulingState, ProcessErrorKind> {
    let number = slots.u32(Property::SchedulingState)?;
    let state = match number {
        1 => SchedulingState::Ready,
        2 => SchedulingState::Receiving { message_buffer: slots.u64(Property::MessageBuffer)? },
        3 => SchedulingState::Calling {
            target: slots.u64(Property::CallTarget)?,
            message_buffer: slots.u64(Property::MessageBuffer)?,
        },
        4 => SchedulingState::Sleeping { until_ns: slots.u64(Property::SleepUntil)? },
        _ => return Err(ProcessErrorKind::UnknownSchedulingState { number }),
    };
    let used = scheduling_properties(&state);
    if let Some(property) =
        SCHEDULING_PROPERTIES.into_iter().find(|property| slots.get(*property).is_some() && !used.contains(property))
    {
        return Err(ProcessErrorKind::PropertyNotForState { property });
    }
    Ok(state)
}

fn decode_pending_result(slots: &ProcessSlots<'_>) -> Result<Option<PendingResult>, ProcessErrorKind> {
    let status = slots.get(Property::PendingResultStatus);
    let value = slots.get(Property::PendingResultValue);
    match (status, value) {
        (None, None) => Ok(None),
        (Some(status), Some(value)) => Ok(Some(PendingResult {
            status: u64_value(Property::PendingResultStatus, status)?,
            value: u64_value(Property::PendingResultValue, value)?,
        })),
        _ => Err(ProcessErrorKind::IncompletePendingResult),
    }
}

fn decode_answerable(slots: &ProcessSlots<'_>) -> Result<ArrayVec<u64, MAX_ANSWERABLE_CALLERS>, ProcessErrorKind> {
    let words = u64_words(Property::Answerable, slots.required(Property::Answerable)?)?;
    let count = words.len();
    if count > MAX_ANSWERABLE_CALLERS {
        return Err(ProcessErrorKind::TooManyAnswerable { count });
    }
    let mut answerable = ArrayVec::new();
    for word in words {
        answerable.try_push(u64::from_ne_bytes(*word)).map_err(|_| ProcessErrorKind::TooManyAnswerable { count })?;
    }
    Ok(answerable)
}

/// What the child nodes of a process hold.
struct Children {
    mappings: Vec<Mapping>,
    queued_messages: ArrayVec<Message, { crate::MAX_QUEUED_MESSAGES }>,
    devices: ArrayVec<DeviceRecord, MAX_DEVICES>,
    grants: ArrayVec<GrantRecord, MAX_GRANTS>,
}

/// Decode the mapping, message, device and grant nodes, each numbered by its
/// position among its own kind.
fn decode_children<'a, C, CP>(children: C) -> Result<Children, Violation>
where
    C: Iterator<Item = ChildNode<'a, CP>>,
    CP: Iterator<Item = (&'a str, &'a [u8])>,
{
    let mut mappings = Vec::new();
    let mut queued_messages = ArrayVec::new();
    let mut devices = ArrayVec::new();
    let mut grants = ArrayVec::new();
    for (child_index, child) in children.enumerate() {
        if let Some(position) = unit_address(child.name, MAPPING_NODE_PREFIX) {
            if mappings.len() >= MAX_MAPPINGS {
                return Err((Part::Process, ProcessErrorKind::TooManyMappings));
            }
            let part = Part::Mapping { mapping_index: mappings.len() };
            check_child(position, mappings.len(), child.has_children).map_err(|kind| (part, kind))?;
            mappings.push(decode_mapping(child.properties).map_err(|kind| (part, kind))?);
        } else if let Some(position) = unit_address(child.name, MESSAGE_NODE_PREFIX) {
            if queued_messages.is_full() {
                return Err((Part::Process, ProcessErrorKind::TooManyQueuedMessages));
            }
            let part = Part::QueuedMessage { message_index: queued_messages.len() };
            check_child(position, queued_messages.len(), child.has_children).map_err(|kind| (part, kind))?;
            let message = decode_message(child.properties).map_err(|kind| (part, kind))?;
            queued_messages.try_push(message).map_err(|_| (Part::Process, ProcessErrorKind::TooManyQueuedMessages))?;
        } else if let Some(position) = unit_address(child.name, DEVICE_NODE_PREFIX) {
            if devices.is_full() {
                return Err((Part::Process, ProcessErrorKind::TooManyDevices));
            }
            let part = Part::Device { device_index: devices.len() };
            check_child(position, devices.len(), child.has_children).map_err(|kind| (part, kind))?;
            let device = decode_device(child.properties).map_err(|kind| (part, kind))?;
            devices.try_push(device).map_err(|_| (Part::Process, ProcessErrorKind::TooManyDevices))?;
        } else if let Some(position) = unit_address(child.name, GRANT_NODE_PREFIX) {
            if grants.is_full() {
                return Err((Part::Process, ProcessErrorKind::TooManyGrants));
            }
            let part = Part::Grant { grant_index: grants.len() };
            check_child(position, grants.len(), child.has_children).map_err(|kind| (part, kind))?;
            let grant = decode_grant(child.properties).map_err(|kind| (part, kind))?;
            grants.try_push(grant).map_err(|_| (Part::Process, ProcessErrorKind::TooManyGrants))?;
        } else {
            return Err((Part::Process, ProcessErrorKind::UnexpectedChildNode { child_index }));
        }
    }
    Ok(Children { mappings, queued_messages, devices, grants })
}

fn decode_grant<'a>(properties: impl Iterator<Item = (&'a str, &'a [u8])>) -> Result<GrantRecord, ProcessErrorKind> {
    let slots = PropertySlots::collect(&GRANT_PROPERTIES, properties)?;
    let grant_id = slots.u64(Property::GrantId)?;
    let peer = decode_name(slots.required(Property::Peer)?).map_err(|_| ProcessErrorKind::InvalidGrantPeer)?;
    let value = slots.required(Property::Range)?;
    check_size(Property::Range, value, 16)?;
    let [virtual_start, size_bytes] = u64_words(Property::Range, value)? else {
        return Err(ProcessErrorKind::PropertyTooShort { property: Property::Range, size_bytes: value.len() });
    };
    let peer_virtual_start = match slots.get(Property::PeerMapping) {
        None => None,
        Some(value) => Some(u64_value(Property::PeerMapping, value)?),
    };
    Ok(GrantRecord {
        grant_id,
        peer,
        virtual_start: u64::from_ne_bytes(*virtual_start),
        size_bytes: u64::from_ne_bytes(*size_bytes),
        peer_virtual_start,
    })
}

fn decode_device<'a>(properties: impl Iterator<Item = (&'a str, &'a [u8])>) -> Result<DeviceRecord, ProcessErrorKind> {
    let slots = PropertySlots::collect(&DEVICE_PROPERTIES, properties)?;
    let word = slots.u32(Property::PciAddress)?;
    // Bus, device and function fill 16 bits.
    if word > 0xffff {
        return Err(ProcessErrorKind::InvalidPciAddress { word });
    }
    let [function_bits, bus, ..] = word.to_le_bytes();
    let ids = slots.u32(Property::PciIds)?;
    let value = slots.required(Property::Bars)?;
    let words = u64_words(Property::Bars, value)?;
    let (entries, partial) = words.as_chunks::<4>();
    if !partial.is_empty() {
        return Err(ProcessErrorKind::PropertyNotWholeEntries { property: Property::Bars, size_bytes: value.len() });
    }
    if entries.len() > MAX_BARS {
        return Err(ProcessErrorKind::TooManyBars { count: entries.len() });
    }
    let mut bars = ArrayVec::new();
    for (bar_index, [first, bus_address, cpu_address, size_bytes]) in entries.iter().enumerate() {
        let first = u64::from_ne_bytes(*first);
        let number = first >> 8;
        let kind = DeviceBarKind::from_number(number).ok_or(ProcessErrorKind::UnknownBarKind { bar_index, number })?;
        let bar = DeviceBar {
            index: (first & 0xff) as u8,
            kind,
            bus_address: u64::from_ne_bytes(*bus_address),
            cpu_address: u64::from_ne_bytes(*cpu_address),
            size_bytes: u64::from_ne_bytes(*size_bytes),
        };
        bars.try_push(bar).map_err(|_| ProcessErrorKind::TooManyBars { count: entries.len() })?;
    }
    let [device_id_low, device_id_high, vendor_low, vendor_high] = ids.to_le_bytes();
    Ok(DeviceRecord {
        bus,
        device: function_bits >> 3,
        function: function_bits & 0x7,
        vendor_id: u16::from_le_bytes([vendor_low, vendor_high]),
        device_id: u16::from_le_bytes([device_id_low, device_id_high]),
        bars,
    })
}

/// A mapping or message node is named by its position and has no children.
fn check_child(position: u64, expected_position: usize, has_children: bool) -> Result<(), ProcessErrorKind> {
    if u64::try_from(expected_position).ok() != Some(position) {
        return Err(ProcessErrorKind::ChildNodeOutOfSequence);
    }
    if has_children {
        return Err(ProcessErrorKind::NestedNode);
    }
    Ok(())
}

fn decode_mapping<'a>(properties: impl Iterator<Item = (&'a str, &'a [u8])>) -> Result<Mapping, ProcessErrorKind> {
    let slots = PropertySlots::collect(&MAPPING_PROPERTIES, properties)?;
    let virtual_start = slots.u64(Property::VirtualStart)?;
    let size_bytes = slots.u64(Property::SizeBytes)?;
    let kind_number = slots.u32(Property::Kind)?;
    let kind =
        MappingKind::from_number(kind_number).ok_or(ProcessErrorKind::UnknownMappingKind { number: kind_number })?;
    let access_flags = slots.u32(Property::AccessFlags)?;
    if access_flags & !(ACCESS_FLAG_WRITABLE | ACCESS_FLAG_EXECUTABLE) != 0 {
        return Err(ProcessErrorKind::UnknownAccessFlags { flags: access_flags });
    }
    let folio_order = slots.u32(Property::FolioOrder)?;
    let runs = decode_runs(slots.required(Property::PhysicalRuns)?)?;
    // Present exactly on shared mappings (the rules check it is not zero).
    let grant_id = match (kind, slots.get(Property::GrantId)) {
        (MappingKind::Shared, Some(value)) => u64_value(Property::GrantId, value)?,
        (MappingKind::Shared, None) => return Err(ProcessErrorKind::MissingProperty { property: Property::GrantId }),
        (_, Some(_)) => return Err(ProcessErrorKind::PropertyNotForKind { property: Property::GrantId }),
        (_, None) => 0,
    };
    Ok(Mapping {
        virtual_start,
        size_bytes,
        kind,
        is_writable: access_flags & ACCESS_FLAG_WRITABLE != 0,
        is_executable: access_flags & ACCESS_FLAG_EXECUTABLE != 0,
        folio_order,
        grant_id,
        runs,
    })
}

/// `physical-runs`: (start, size in bytes) pairs of native-endian u64.
fn decode_runs(value: &[u8]) -> Result<Vec<PhysicalRun>, ProcessErrorKind> {
    let property = Property::PhysicalRuns;
    let words = u64_words(property, value)?;
    let (pairs, odd_word) = words.as_chunks::<2>();
    if !odd_word.is_empty() {
        return Err(ProcessErrorKind::PropertyNotWholeEntries { property, size_bytes: value.len() });
    }
    if pairs.len() > MAX_RUNS_PER_MAPPING {
        return Err(ProcessErrorKind::TooManyRuns { count: pairs.len() });
    }
    Ok(pairs
        .iter()
        .map(|[phys_start, size_bytes]| PhysicalRun {
            phys_start: u64::from_ne_bytes(*phys_start),
            size_bytes: u64::from_ne_bytes(*size_bytes),
        })
        .collect())
}

fn decode_message<'a>(properties: impl Iterator<Item = (&'a str, &'a [u8])>) -> Result<Message, ProcessErrorKind> {
    let slots = PropertySlots::collect(&MESSAGE_PROPERTIES, properties)?;
    let property = Property::Words;
    let value = slots.required(property)?;
    check_size(property, value, MESSAGE_WORDS.saturating_mul(8))?;
    let mut words = [0_u64; MESSAGE_WORDS];
    for (word, bytes) in words.iter_mut().zip(value.as_chunks::<8>().0) {
        *word = u64::from_ne_bytes(*bytes);
    }
    Ok(Message { label: slots.u64(Property::Label)?, sender: slots.u64(Property::Sender)?, words })
}

/// The values of one node's properties, sorted into the slots its schema
/// (`names`) defines. Fixed size: nothing allocated, whatever the node holds.
struct PropertySlots<'a, const COUNT: usize> {
    names: &'static [Property; COUNT],
    values: [Option<&'a [u8]>; COUNT],
}

impl<'a, const COUNT: usize> PropertySlots<'a, COUNT> {
    /// Sort `properties` into slots; a property outside the schema, or one
    /// that appears twice, is an error.
    fn collect(
        names: &'static [Property; COUNT],
        properties: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, ProcessErrorKind> {
        let mut values = [None; COUNT];
        for (property_index, (name, value)) in properties.enumerate() {
            let Some((property, slot)) =
                names.iter().zip(values.iter_mut()).find(|(property, _)| property.name() == name)
            else {
                return Err(ProcessErrorKind::UnexpectedProperty { property_index });
            };
            if slot.replace(value).is_some() {
                return Err(ProcessErrorKind::DuplicateProperty { property: *property });
            }
        }
        Ok(Self { names, values })
    }

    /// The value of `property`, if present.
    fn get(&self, property: Property) -> Option<&'a [u8]> {
        self.names.iter().zip(self.values).find(|(name, _)| **name == property).and_then(|(_, value)| value)
    }

    /// The value of a required property.
    fn required(&self, property: Property) -> Result<&'a [u8], ProcessErrorKind> {
        self.get(property).ok_or(ProcessErrorKind::MissingProperty { property })
    }

    /// A required native-endian u64 property.
    fn u64(&self, property: Property) -> Result<u64, ProcessErrorKind> {
        u64_value(property, self.required(property)?)
    }

    /// A required native-endian u32 property.
    fn u32(&self, property: Property) -> Result<u32, ProcessErrorKind> {
        let value = self.required(property)?;
        check_size(property, value, 4)?;
        native_u32(value).ok_or(ProcessErrorKind::PropertyTooShort { property, size_bytes: value.len() })
    }
}

/// `value` is exactly `size_bytes` long.
fn check_size(property: Property, value: &[u8], size_bytes: usize) -> Result<(), ProcessErrorKind> {
    match value.len().cmp(&size_bytes) {
        core::cmp::Ordering::Less => Err(ProcessErrorKind::PropertyTooShort { property, size_bytes: value.len() }),
        core::cmp::Ordering::Greater => Err(ProcessErrorKind::PropertyTooLong { property, size_bytes: value.len() }),
        core::cmp::Ordering::Equal => Ok(()),
    }
}

fn u64_value(property: Property, value: &[u8]) -> Result<u64, ProcessErrorKind> {
    check_size(property, value, 8)?;
    native_u64(value).ok_or(ProcessErrorKind::PropertyTooShort { property, size_bytes: value.len() })
}

fn fixed_size<const SIZE: usize>(property: Property, value: &[u8]) -> Result<[u8; SIZE], ProcessErrorKind> {
    check_size(property, value, SIZE)?;
    value.try_into().map_err(|_| ProcessErrorKind::PropertyTooShort { property, size_bytes: value.len() })
}

/// A list property of native-endian u64 words.
fn u64_words(property: Property, value: &[u8]) -> Result<&[[u8; 8]], ProcessErrorKind> {
    let (words, partial_word) = value.as_chunks::<8>();
    if !partial_word.is_empty() {
        return Err(ProcessErrorKind::PropertyNotWholeEntries { property, size_bytes: value.len() });
    }
    Ok(words)
}

/// A service id or name claimed by two process nodes makes every node
/// claiming it unusable: the reader cannot tell which one is real.
fn refuse_shared_identities(results: &mut [Result<ProcessDescription, ProcessError>]) {
    let known_id = |result: &Result<ProcessDescription, ProcessError>| match result {
        Ok(description) => Some(description.service_id),
        Err(error) => error.service_id,
    };
    let known_name =
        |result: &Result<ProcessDescription, ProcessError>| result.as_ref().ok().map(|description| description.name);
    // At most MAX_PROCESSES entries each.
    let ids: Vec<Option<u64>> = results.iter().map(known_id).collect();
    let names: Vec<Option<ArrayString<MAX_NAME_BYTES>>> = results.iter().map(known_name).collect();
    for (node_index, result) in results.iter_mut().enumerate() {
        let Ok(description) = result else {
            continue;
        };
        let kind = if is_shared(node_index, &ids) {
            ProcessErrorKind::DuplicateServiceId
        } else if is_shared(node_index, &names) {
            ProcessErrorKind::DuplicateName
        } else {
            continue;
        };
        let service_id = Some(description.service_id);
        *result = Err(ProcessError { node_index, service_id, part: Part::Process, kind });
    }
}

/// Whether the value at `position` is known and appears at another position too.
fn is_shared<T: PartialEq>(position: usize, values: &[Option<T>]) -> bool {
    let Some(Some(value)) = values.get(position) else {
        return false;
    };
    values.iter().enumerate().any(|(other, candidate)| other != position && candidate.as_ref() == Some(value))
}
