//! Why a description blob, one process in it, or a description to be written is refused.

use core::fmt;

use baton_kho::fdt::{FdtStructureError, FdtWriteError};

use crate::description::{Architecture, MAX_ANSWERABLE_CALLERS, MAX_MAPPINGS, MAX_QUEUED_MESSAGES};
use crate::wire::{FORMAT_VERSION_PROPERTY, PROCESSES_COMPATIBLE, Property};

/// Why a blob is not a `processes-v1` description at all. Nothing in it
/// can be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptionError {
    /// The blob is not a well-formed FDT.
    Structure(FdtStructureError),
    /// The root has no `compatible`.
    MissingCompatible,
    /// The root's `compatible` is not exactly `"baton,processes-v1"`.
    Incompatible,
    /// The root has no `format-version`.
    MissingFormatVersion,
    /// `format-version` is not 4 bytes.
    BadFormatVersionSize {
        /// Its size.
        size_bytes: usize,
    },
    /// `format-version` is not one this crate reads.
    UnsupportedFormatVersion {
        /// The version found.
        version: u32,
    },
    /// A root property appears twice.
    DuplicateRootProperty,
    /// The root has a property other than `compatible` and `format-version`.
    UnexpectedRootProperty,
    /// The root has more than [`crate::MAX_PROCESSES`] child nodes.
    TooManyProcesses {
        /// How many it has.
        count: usize,
    },
}

impl fmt::Display for DescriptionError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Structure(error) => write!(formatter, "{error}"),
            Self::MissingCompatible => write!(formatter, "no compatible property"),
            Self::Incompatible => write!(formatter, "not {PROCESSES_COMPATIBLE}"),
            Self::MissingFormatVersion => write!(formatter, "no {FORMAT_VERSION_PROPERTY}"),
            Self::BadFormatVersionSize { size_bytes } => {
                write!(formatter, "{FORMAT_VERSION_PROPERTY} is {size_bytes} bytes, not 4")
            }
            Self::UnsupportedFormatVersion { version } => {
                write!(formatter, "{FORMAT_VERSION_PROPERTY} {version} is not supported")
            }
            Self::DuplicateRootProperty => write!(formatter, "a root property appears twice"),
            Self::UnexpectedRootProperty => write!(formatter, "unexpected root property"),
            Self::TooManyProcesses { count } => {
                write!(formatter, "{count} processes, more than {}", crate::MAX_PROCESSES)
            }
        }
    }
}

impl core::error::Error for DescriptionError {}

impl From<FdtStructureError> for DescriptionError {
    fn from(error: FdtStructureError) -> Self {
        Self::Structure(error)
    }
}

/// Which part of a process description an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The process node itself.
    Process,
    /// One of its mappings, numbered from 0 in blob order.
    Mapping {
        /// The mapping's position.
        mapping_index: usize,
    },
    /// One of its queued messages, numbered from 0 in blob order.
    QueuedMessage {
        /// The message's position.
        message_index: usize,
    },
    /// One of its device records, numbered from 0 in blob order.
    Device {
        /// The record's position.
        device_index: usize,
    },
    /// One of its grant records, numbered from 0 in blob order.
    Grant {
        /// The record's position.
        grant_index: usize,
    },
}

impl fmt::Display for Part {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Process => write!(formatter, "process"),
            Self::Mapping { mapping_index } => write!(formatter, "mapping {mapping_index}"),
            Self::QueuedMessage { message_index } => write!(formatter, "queued message {message_index}"),
            Self::Device { device_index } => write!(formatter, "device {device_index}"),
            Self::Grant { grant_index } => write!(formatter, "grant {grant_index}"),
        }
    }
}

/// Why one process description is refused: the process cannot be resumed
/// (its service can still be restarted), the others are unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessError {
    /// The process node's position among the root's children, from 0.
    pub node_index: usize,
    /// The service id, when its `service-id` property or its node name gave
    /// one.
    pub service_id: Option<u64>,
    /// Which part is wrong.
    pub part: Part,
    /// What is wrong.
    pub kind: ProcessErrorKind,
}

impl fmt::Display for ProcessError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "process node {}", self.node_index)?;
        if let Some(service_id) = self.service_id {
            write!(formatter, " (service {service_id:#x})")?;
        }
        write!(formatter, ", {}: {}", self.part, self.kind)
    }
}

impl core::error::Error for ProcessError {}

/// Every rule a process description must follow, one variant each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessErrorKind {
    // Nodes.
    /// The process node's name is not `process@` and a service id in
    /// lowercase hexadecimal without leading zeros.
    InvalidNodeName,
    /// `service-id` differs from the id in the node name.
    ServiceIdDoesNotMatchNodeName {
        /// The id in the node name.
        node_name_id: u64,
    },
    /// A child of the process node is none of `mapping@…`, `message@…`
    /// and `device@…`.
    UnexpectedChildNode {
        /// The child's position among the process node's children.
        child_index: usize,
    },
    /// A mapping or message node's unit address is not its position.
    ChildNodeOutOfSequence,
    /// A mapping or message node has a child node.
    NestedNode,

    // Properties.
    /// A required property is missing.
    MissingProperty {
        /// Which.
        property: Property,
    },
    /// A property appears twice.
    DuplicateProperty {
        /// Which.
        property: Property,
    },
    /// A property this node does not have in the format.
    UnexpectedProperty {
        /// Its position among the node's properties.
        property_index: usize,
    },
    /// A property is shorter than its type.
    PropertyTooShort {
        /// Which.
        property: Property,
        /// Its size.
        size_bytes: usize,
    },
    /// A property is longer than its type.
    PropertyTooLong {
        /// Which.
        property: Property,
        /// Its size.
        size_bytes: usize,
    },
    /// A list property's size is not a whole number of entries.
    PropertyNotWholeEntries {
        /// Which.
        property: Property,
        /// Its size.
        size_bytes: usize,
    },
    /// A scheduling property that the process's scheduling state does not
    /// have (such as `call-target` on a ready process).
    PropertyNotForState {
        /// Which.
        property: Property,
    },
    /// Only one of `pending-result-status` and `pending-result-value`.
    IncompletePendingResult,

    // Identity.
    /// `name` is not NUL-terminated, or has a NUL before its end.
    NameNotTerminated,
    /// `name` breaks the KHO user-name rule
    /// ([`baton_kho::fdt::is_valid_user_name`]: 1 to 31 bytes, an ASCII
    /// letter, then letters, digits and `,._+-`).
    InvalidName,
    /// `service-flags` has bits this format does not define.
    UnknownServiceFlags {
        /// The value found.
        flags: u32,
    },

    // Architecture and registers.
    /// `architecture` is not a known number.
    UnknownArchitecture {
        /// The number found.
        number: u32,
    },
    /// The process is for another architecture than the reader's.
    ArchitectureMismatch {
        /// The process's architecture.
        found: Architecture,
        /// The reader's.
        expected: Architecture,
    },
    /// A general register past the architecture's count is not zero (only
    /// the writer sees this: the reader fills them with zeros).
    UnusedGeneralRegisterNotZero {
        /// Its index in [`crate::UserRegisters::general`].
        register_index: usize,
    },
    /// The instruction pointer is at or above `USER_ADDRESS_LIMIT`.
    InstructionPointerOutsideUserHalf {
        /// Its value.
        address: u64,
    },
    /// The stack pointer is above `USER_ADDRESS_LIMIT`.
    StackPointerOutsideUserHalf {
        /// Its value.
        address: u64,
    },
    /// The flags are not a user-mode state (see
    /// [`Architecture::is_user_mode_flags`]).
    FlagsNotUserMode {
        /// Their value.
        flags: u64,
    },
    /// The thread pointer cannot be loaded (see
    /// [`Architecture::is_valid_thread_pointer`]).
    ThreadPointerNotCanonical {
        /// Its value.
        address: u64,
    },

    // Mappings.
    /// More than [`crate::MAX_MAPPINGS`] mappings.
    TooManyMappings,
    /// `kind` is not a known number.
    UnknownMappingKind {
        /// The number found.
        number: u32,
    },
    /// `access-flags` has bits this format does not define.
    UnknownAccessFlags {
        /// The value found.
        flags: u32,
    },
    /// A mapping is both writable and executable.
    WritableAndExecutable,
    /// A mapping is zero bytes long.
    MappingEmpty,
    /// A mapping's start or size is not a multiple of the page size.
    MappingNotPageAligned,
    /// A mapping's start plus its size overflows.
    MappingEndOverflows,
    /// A mapping ends above `USER_ADDRESS_LIMIT`.
    MappingPastUserAddressLimit {
        /// One past its last byte.
        end: u64,
    },
    /// Two mappings share addresses (reported on the one that starts later,
    /// or on the later in blob order when both start at the same address).
    MappingsOverlap {
        /// The other mapping.
        other_mapping_index: usize,
    },
    /// `folio-order` is above `baton_abi::MAX_USER_FOLIO_ORDER`.
    FolioOrderTooLarge {
        /// The order found.
        order: u32,
    },
    /// A mapping other than a preservable one has a non-zero folio order.
    FolioOrderWithoutPreservable {
        /// The order found.
        order: u32,
    },
    /// A mapping has no physical runs.
    MappingWithoutRuns,
    /// More than [`crate::MAX_RUNS_PER_MAPPING`] runs.
    TooManyRuns {
        /// How many.
        count: usize,
    },
    /// A run is zero bytes long.
    RunEmpty {
        /// The run's position in the mapping.
        run_index: usize,
    },
    /// A run's start or size is not a multiple of the page size.
    RunNotPageAligned {
        /// The run's position in the mapping.
        run_index: usize,
    },
    /// A run of a preservable mapping does not start at, or does not
    /// cover whole, folios of the mapping's order.
    RunNotFolioAligned {
        /// The run's position in the mapping.
        run_index: usize,
    },
    /// A run's start plus its size overflows.
    RunEndOverflows {
        /// The run's position in the mapping.
        run_index: usize,
    },
    /// The runs' sizes do not add up to the mapping's size.
    RunsDoNotSumToMappingSize {
        /// Their sum (saturating).
        runs_total_bytes: u64,
    },

    // Scheduling.
    /// `scheduling-state` is not a known number.
    UnknownSchedulingState {
        /// The number found.
        number: u32,
    },
    /// The message buffer of a receive or call is not 8-byte aligned.
    MessageBufferMisaligned {
        /// Its address.
        address: u64,
    },
    /// The message buffer of a receive or call does not lie below
    /// `USER_ADDRESS_LIMIT`.
    MessageBufferOutsideUserHalf {
        /// Its address.
        address: u64,
    },
    /// The pending result's status is neither 0 nor an error number.
    UnknownResultStatus {
        /// The status found.
        status: u64,
    },

    // Mailbox.
    /// More than [`crate::MAX_QUEUED_MESSAGES`] queued messages.
    TooManyQueuedMessages,
    /// More than [`crate::MAX_ANSWERABLE_CALLERS`] answerable callers.
    TooManyAnswerable {
        /// How many.
        count: usize,
    },
    /// A caller appears twice in `answerable`.
    DuplicateAnswerable {
        /// The caller.
        caller: u64,
    },

    // Devices.
    /// More than [`crate::MAX_DEVICES`] device records.
    TooManyDevices,
    /// The `pci-address` names no function (device past 31 or bits past
    /// the bus set).
    InvalidPciAddress {
        /// The word found.
        word: u32,
    },
    /// Two device records name the same function.
    DuplicateDevice,
    /// More than [`crate::MAX_BARS`] BARs in one record.
    TooManyBars {
        /// How many.
        count: usize,
    },
    /// A BAR's kind number is unknown.
    UnknownBarKind {
        /// The BAR's position in the record.
        bar_index: usize,
        /// The number found.
        number: u64,
    },
    /// A BAR's register is past 5 (or past 4 for a 64-bit BAR, which takes
    /// two), or it shares a register with another BAR.
    InvalidBarRegister {
        /// The BAR's position in the record.
        bar_index: usize,
    },
    /// A BAR's size is not a power of two, or it wraps past the end of the
    /// address space, or a 32-bit BAR lies above 4 GiB.
    InvalidBarRange {
        /// The BAR's position in the record.
        bar_index: usize,
    },
    /// A device mapping is executable or has a folio order.
    InvalidDeviceMapping,
    /// A device mapping's run lies inside no memory BAR of the process's
    /// devices.
    DeviceRunOutsideBars {
        /// The run's position in its mapping.
        run_index: usize,
    },

    // Grants.
    /// More than [`crate::MAX_GRANTS`] grant records.
    TooManyGrants,
    /// A grant id is zero, or another grant of the process has it.
    InvalidGrantId,
    /// The peer is not a valid service name, or is the owner itself.
    InvalidGrantPeer,
    /// The granted range is empty, not page aligned, wraps, or does not
    /// lie inside one physical run of one writable preservable mapping.
    InvalidGrantRange,
    /// The peer's mapping is not page aligned or ends past the user half.
    InvalidPeerMapping,
    /// A shared mapping is executable, has a folio order, more than one
    /// run, or grant id zero.
    InvalidSharedMapping,
    /// A property only another mapping kind has (`grant-id` on a mapping
    /// that is not shared).
    PropertyNotForKind {
        /// The property.
        property: Property,
    },

    // Across processes.
    /// Another process node claims the same service id. Every node sharing
    /// the id is refused: neither can be trusted to be the real one.
    DuplicateServiceId,
    /// Another process has the same name; both are refused.
    DuplicateName,
}

impl fmt::Display for ProcessErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidNodeName => write!(formatter, "node name is not process@<service id in hex>"),
            Self::ServiceIdDoesNotMatchNodeName { node_name_id } => {
                write!(formatter, "service-id differs from the node name's {node_name_id:#x}")
            }
            Self::UnexpectedChildNode { child_index } => {
                write!(formatter, "child node {child_index} is neither a mapping nor a message")
            }
            Self::ChildNodeOutOfSequence => write!(formatter, "node name does not give its position"),
            Self::NestedNode => write!(formatter, "has a child node"),
            Self::MissingProperty { property } => write!(formatter, "no {property}"),
            Self::DuplicateProperty { property } => write!(formatter, "{property} appears twice"),
            Self::UnexpectedProperty { property_index } => {
                write!(formatter, "property {property_index} is not in the format")
            }
            Self::PropertyTooShort { property, size_bytes } => {
                write!(formatter, "{property} is too short ({size_bytes} bytes)")
            }
            Self::PropertyTooLong { property, size_bytes } => {
                write!(formatter, "{property} is too long ({size_bytes} bytes)")
            }
            Self::PropertyNotWholeEntries { property, size_bytes } => {
                write!(formatter, "{property} is {size_bytes} bytes, not a whole number of entries")
            }
            Self::PropertyNotForState { property } => {
                write!(formatter, "{property} does not belong to the scheduling state")
            }
            Self::IncompletePendingResult => write!(formatter, "pending result has only one of status and value"),
            Self::NameNotTerminated => write!(formatter, "name is not a NUL-terminated string"),
            Self::InvalidName => write!(formatter, "name is not a valid service name"),
            Self::UnknownServiceFlags { flags } => write!(formatter, "unknown service flags {flags:#x}"),
            Self::UnknownArchitecture { number } => write!(formatter, "unknown architecture {number}"),
            Self::ArchitectureMismatch { found, expected } => {
                write!(formatter, "process is for {}, this kernel is {}", found.name(), expected.name())
            }
            Self::UnusedGeneralRegisterNotZero { register_index } => {
                write!(formatter, "unused general register {register_index} is not zero")
            }
            Self::InstructionPointerOutsideUserHalf { address } => {
                write!(formatter, "instruction pointer {address:#x} is outside the user half")
            }
            Self::StackPointerOutsideUserHalf { address } => {
                write!(formatter, "stack pointer {address:#x} is outside the user half")
            }
            Self::FlagsNotUserMode { flags } => write!(formatter, "flags {flags:#x} are not a user-mode state"),
            Self::ThreadPointerNotCanonical { address } => {
                write!(formatter, "thread pointer {address:#x} is not canonical")
            }
            Self::TooManyMappings => write!(formatter, "more than {MAX_MAPPINGS} mappings"),
            Self::UnknownMappingKind { number } => write!(formatter, "unknown mapping kind {number}"),
            Self::UnknownAccessFlags { flags } => write!(formatter, "unknown access flags {flags:#x}"),
            Self::WritableAndExecutable => write!(formatter, "writable and executable"),
            Self::MappingEmpty => write!(formatter, "mapping is empty"),
            Self::MappingNotPageAligned => write!(formatter, "mapping is not page aligned"),
            Self::MappingEndOverflows => write!(formatter, "mapping end overflows"),
            Self::MappingPastUserAddressLimit { end } => {
                write!(formatter, "mapping ends at {end:#x}, past the user half")
            }
            Self::MappingsOverlap { other_mapping_index } => {
                write!(formatter, "overlaps mapping {other_mapping_index}")
            }
            Self::FolioOrderTooLarge { order } => write!(formatter, "folio order {order} is too large"),
            Self::FolioOrderWithoutPreservable { order } => {
                write!(formatter, "folio order {order} on a mapping that is not preservable")
            }
            Self::MappingWithoutRuns => write!(formatter, "mapping has no physical runs"),
            Self::TooManyRuns { count } => {
                write!(formatter, "{count} physical runs, more than {}", crate::MAX_RUNS_PER_MAPPING)
            }
            Self::RunEmpty { run_index } => write!(formatter, "run {run_index} is empty"),
            Self::RunNotPageAligned { run_index } => write!(formatter, "run {run_index} is not page aligned"),
            Self::RunNotFolioAligned { run_index } => {
                write!(formatter, "run {run_index} is not whole folios of the mapping's order")
            }
            Self::RunEndOverflows { run_index } => write!(formatter, "run {run_index} end overflows"),
            Self::RunsDoNotSumToMappingSize { runs_total_bytes } => {
                write!(formatter, "runs add up to {runs_total_bytes:#x} bytes, not the mapping's size")
            }
            Self::UnknownSchedulingState { number } => write!(formatter, "unknown scheduling state {number}"),
            Self::MessageBufferMisaligned { address } => {
                write!(formatter, "message buffer {address:#x} is not 8-byte aligned")
            }
            Self::MessageBufferOutsideUserHalf { address } => {
                write!(formatter, "message buffer {address:#x} is outside the user half")
            }
            Self::UnknownResultStatus { status } => write!(formatter, "unknown pending result status {status}"),
            Self::TooManyQueuedMessages => write!(formatter, "more than {MAX_QUEUED_MESSAGES} queued messages"),
            Self::TooManyAnswerable { count } => {
                write!(formatter, "{count} answerable callers, more than {MAX_ANSWERABLE_CALLERS}")
            }
            Self::DuplicateAnswerable { caller } => write!(formatter, "caller {caller:#x} is answerable twice"),
            Self::TooManyDevices => write!(formatter, "more than {} devices", crate::MAX_DEVICES),
            Self::InvalidPciAddress { word } => write!(formatter, "pci-address {word:#x} names no PCI function"),
            Self::DuplicateDevice => write!(formatter, "another device record names the same function"),
            Self::TooManyBars { count } => write!(formatter, "{count} BARs, more than {}", crate::MAX_BARS),
            Self::UnknownBarKind { bar_index, number } => {
                write!(formatter, "BAR {bar_index} has unknown kind {number:#x}")
            }
            Self::InvalidBarRegister { bar_index } => {
                write!(formatter, "BAR {bar_index} is not a register of its own in 0..6")
            }
            Self::InvalidBarRange { bar_index } => {
                write!(formatter, "BAR {bar_index} has a size that is not a power of two or a range that cannot be")
            }
            Self::InvalidDeviceMapping => write!(formatter, "device mapping is executable or has a folio order"),
            Self::DeviceRunOutsideBars { run_index } => {
                write!(formatter, "device run {run_index} lies inside no memory BAR of the process's devices")
            }
            Self::TooManyGrants => write!(formatter, "more than {} grants", crate::MAX_GRANTS),
            Self::InvalidGrantId => write!(formatter, "grant id is zero or used twice"),
            Self::InvalidGrantPeer => write!(formatter, "grant peer is not another service's name"),
            Self::InvalidGrantRange => {
                write!(formatter, "granted range is not whole pages inside one run of a writable preservable mapping")
            }
            Self::InvalidPeerMapping => write!(formatter, "peer mapping is not a page-aligned user address"),
            Self::InvalidSharedMapping => {
                write!(formatter, "shared mapping is executable, has a folio order, more than one run or no grant id")
            }
            Self::PropertyNotForKind { property } => {
                write!(formatter, "{property} does not belong to this mapping kind")
            }
            Self::DuplicateServiceId => write!(formatter, "another process has the same service id"),
            Self::DuplicateName => write!(formatter, "another process has the same name"),
        }
    }
}

/// Why [`crate::write_processes`] refused its input. It refuses whatever
/// [`crate::read_processes`] would, so a written blob always reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// More than [`crate::MAX_PROCESSES`] descriptions.
    TooManyProcesses {
        /// How many were given.
        count: usize,
    },
    /// A description is for another architecture than the first one's.
    MixedArchitectures {
        /// Its position.
        process_index: usize,
    },
    /// A description repeats an earlier one's service id.
    DuplicateServiceId {
        /// Its position.
        process_index: usize,
    },
    /// A description repeats an earlier one's name.
    DuplicateName {
        /// Its position.
        process_index: usize,
    },
    /// A description breaks a rule.
    InvalidProcess {
        /// Its position.
        process_index: usize,
        /// Which part of it.
        part: Part,
        /// Which rule.
        kind: ProcessErrorKind,
    },
    /// The FDT writer failed.
    Fdt(FdtWriteError),
}

impl fmt::Display for WriteError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyProcesses { count } => {
                write!(formatter, "{count} processes, more than {}", crate::MAX_PROCESSES)
            }
            Self::MixedArchitectures { process_index } => {
                write!(formatter, "process {process_index} is for another architecture than process 0")
            }
            Self::DuplicateServiceId { process_index } => {
                write!(formatter, "process {process_index} repeats a service id")
            }
            Self::DuplicateName { process_index } => write!(formatter, "process {process_index} repeats a name"),
            Self::InvalidProcess { process_index, part, kind } => {
                write!(formatter, "process {process_index}, {part}: {kind}")
            }
            Self::Fdt(error) => write!(formatter, "writing the FDT failed: {error}"),
        }
    }
}

impl core::error::Error for WriteError {}

impl From<FdtWriteError> for WriteError {
    fn from(error: FdtWriteError) -> Self {
        Self::Fdt(error)
    }
}
