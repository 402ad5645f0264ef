//! The names and numbers of the `baton,processes-v1` format: what the writer emits and the parser accepts.
//!
//! Enumerations have their wire numbers next to them
//! ([`crate::Architecture::number`], [`crate::MappingKind::number`],
//! [`crate::SchedulingState::number`]); zero is never a valid number, so
//! zeroed memory never reads as a state.

use core::fmt;

/// The only root `compatible` this crate reads and writes.
pub const PROCESSES_COMPATIBLE: &str = "baton,processes-v1";

/// Root property holding the format version.
pub const FORMAT_VERSION_PROPERTY: &str = "format-version";

/// The only format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Node name of a process: this prefix and the service id in lowercase
/// hexadecimal without leading zeros.
pub const PROCESS_NODE_PREFIX: &str = "process@";

/// Node name of a mapping: this prefix and its position among the
/// process's mappings, in hexadecimal.
pub const MAPPING_NODE_PREFIX: &str = "mapping@";

/// Node name of a queued message: this prefix and its position in the
/// mailbox, in hexadecimal.
pub const MESSAGE_NODE_PREFIX: &str = "message@";

/// Node name of a device record: this prefix and its position among the
/// process's devices, in hexadecimal.
pub const DEVICE_NODE_PREFIX: &str = "device@";

/// Node name of a grant record: this prefix and its position among the
/// process's grants, in hexadecimal.
pub const GRANT_NODE_PREFIX: &str = "grant@";

/// `service-flags` bit: subscribed to update lifecycle events.
pub const SERVICE_FLAG_SUBSCRIBED: u32 = 1 << 0;

/// `service-flags` bit: privileged.
pub const SERVICE_FLAG_PRIVILEGED: u32 = 1 << 1;

/// `access-flags` bit: writable.
pub const ACCESS_FLAG_WRITABLE: u32 = 1 << 0;

/// `access-flags` bit: executable.
pub const ACCESS_FLAG_EXECUTABLE: u32 = 1 << 1;

/// Every property of the format, named as in the blob by
/// [`Property::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    /// Process: `service-id`, u64.
    ServiceId,
    /// Process: `name`, NUL-terminated string.
    Name,
    /// Process: `binary-hash`, 32 bytes.
    BinaryHash,
    /// Process: `abi-version`, u32.
    AbiVersion,
    /// Process: `service-flags`, u32 of `SERVICE_FLAG_*` bits.
    ServiceFlags,
    /// Process: `architecture`, u32.
    Architecture,
    /// Process: `general-registers`, u64 × the architecture's count.
    GeneralRegisters,
    /// Process: `instruction-pointer`, u64.
    InstructionPointer,
    /// Process: `stack-pointer`, u64.
    StackPointer,
    /// Process: `flags-register`, u64.
    FlagsRegister,
    /// Process: `thread-pointer`, u64.
    ThreadPointer,
    /// Process: `scheduling-state`, u32.
    SchedulingState,
    /// Process, receiving or calling only: `message-buffer`, u64.
    MessageBuffer,
    /// Process, calling only: `call-target`, u64.
    CallTarget,
    /// Process, sleeping only: `sleep-until-ns`, u64.
    SleepUntil,
    /// Process, optional, with `pending-result-value`: `pending-result-status`, u64.
    PendingResultStatus,
    /// Process, optional, with `pending-result-status`: `pending-result-value`, u64.
    PendingResultValue,
    /// Process: `answerable`, u64 × 0 to 16.
    Answerable,
    /// Mapping: `virtual-start`, u64.
    VirtualStart,
    /// Mapping: `size-bytes`, u64.
    SizeBytes,
    /// Mapping: `kind`, u32.
    Kind,
    /// Mapping: `access-flags`, u32 of `ACCESS_FLAG_*` bits.
    AccessFlags,
    /// Mapping: `folio-order`, u32.
    FolioOrder,
    /// Mapping: `physical-runs`, (u64 start, u64 size in bytes) × 1 to 64.
    PhysicalRuns,
    /// Message: `label`, u64.
    Label,
    /// Message: `sender`, u64.
    Sender,
    /// Message: `words`, u64 × 6.
    Words,
    /// Device: `pci-address`, u32 (bus << 8 | device << 3 | function).
    PciAddress,
    /// Device: `pci-ids`, u32 (vendor ID << 16 | device ID).
    PciIds,
    /// Device: `bars`, (u64 register index | kind number << 8, u64 bus
    /// address, u64 CPU address, u64 size in bytes) × 0 to 6.
    Bars,
    /// Grant, and shared mapping (only): `grant-id`, u64 (not zero).
    GrantId,
    /// Grant: `peer`, NUL-terminated service name.
    Peer,
    /// Grant: `range`, (u64 first address in the owner, u64 size in bytes).
    Range,
    /// Grant: `peer-mapping`, u64 (where the peer maps it; absent while it
    /// does not).
    PeerMapping,
}

impl Property {
    /// The property's name in the blob.
    pub const fn name(self) -> &'static str {
        match self {
            Property::ServiceId => "service-id",
            Property::Name => "name",
            Property::BinaryHash => "binary-hash",
            Property::AbiVersion => "abi-version",
            Property::ServiceFlags => "service-flags",
            Property::Architecture => "architecture",
            Property::GeneralRegisters => "general-registers",
            Property::InstructionPointer => "instruction-pointer",
            Property::StackPointer => "stack-pointer",
            Property::FlagsRegister => "flags-register",
            Property::ThreadPointer => "thread-pointer",
            Property::SchedulingState => "scheduling-state",
            Property::MessageBuffer => "message-buffer",
            Property::CallTarget => "call-target",
            Property::SleepUntil => "sleep-until-ns",
            Property::PendingResultStatus => "pending-result-status",
            Property::PendingResultValue => "pending-result-value",
            Property::Answerable => "answerable",
            Property::VirtualStart => "virtual-start",
            Property::SizeBytes => "size-bytes",
            Property::Kind => "kind",
            Property::AccessFlags => "access-flags",
            Property::FolioOrder => "folio-order",
            Property::PhysicalRuns => "physical-runs",
            Property::Label => "label",
            Property::Sender => "sender",
            Property::Words => "words",
            Property::PciAddress => "pci-address",
            Property::PciIds => "pci-ids",
            Property::Bars => "bars",
            Property::GrantId => "grant-id",
            Property::Peer => "peer",
            Property::Range => "range",
            Property::PeerMapping => "peer-mapping",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The properties a process node may have, in the order they are written.
pub(crate) const PROCESS_PROPERTIES: [Property; 18] = [
    Property::ServiceId,
    Property::Name,
    Property::BinaryHash,
    Property::AbiVersion,
    Property::ServiceFlags,
    Property::Architecture,
    Property::GeneralRegisters,
    Property::InstructionPointer,
    Property::StackPointer,
    Property::FlagsRegister,
    Property::ThreadPointer,
    Property::SchedulingState,
    Property::MessageBuffer,
    Property::CallTarget,
    Property::SleepUntil,
    Property::PendingResultStatus,
    Property::PendingResultValue,
    Property::Answerable,
];

/// The properties of a mapping node, in the order they are written.
pub(crate) const MAPPING_PROPERTIES: [Property; 7] = [
    Property::VirtualStart,
    Property::SizeBytes,
    Property::Kind,
    Property::AccessFlags,
    Property::FolioOrder,
    Property::PhysicalRuns,
    Property::GrantId,
];

/// The properties of a message node, in the order they are written.
pub(crate) const MESSAGE_PROPERTIES: [Property; 3] = [Property::Label, Property::Sender, Property::Words];

/// The properties of a device node, in the order they are written.
pub(crate) const DEVICE_PROPERTIES: [Property; 3] = [Property::PciAddress, Property::PciIds, Property::Bars];

/// The properties of a grant node, in the order they are written.
pub(crate) const GRANT_PROPERTIES: [Property; 4] =
    [Property::GrantId, Property::Peer, Property::Range, Property::PeerMapping];

/// The number after `prefix` in a node name written as `prefix` and a
/// lowercase hexadecimal number without leading zeros (what the writer
/// emits); `None` for any other spelling.
pub(crate) fn unit_address(node_name: &str, prefix: &str) -> Option<u64> {
    let digits = node_name.strip_prefix(prefix)?;
    let is_lowercase_hex = digits.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    let has_leading_zero = digits.len() > 1 && digits.starts_with('0');
    if digits.is_empty() || digits.len() > 16 || !is_lowercase_hex || has_leading_zero {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The scheduling properties a state has (the others must be absent).
pub(crate) const fn scheduling_properties(state: &crate::SchedulingState) -> &'static [Property] {
    match state {
        crate::SchedulingState::Ready => &[],
        crate::SchedulingState::Receiving { .. } => &[Property::MessageBuffer],
        crate::SchedulingState::Calling { .. } => &[Property::MessageBuffer, Property::CallTarget],
        crate::SchedulingState::Sleeping { .. } => &[Property::SleepUntil],
    }
}

/// Every scheduling property, whichever state has it.
pub(crate) const SCHEDULING_PROPERTIES: [Property; 3] =
    [Property::MessageBuffer, Property::CallTarget, Property::SleepUntil];
