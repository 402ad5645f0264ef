//! The KHO root FDT (`kho-v1`): building it at finalisation and parsing it after the jump.
//!
//! ```text
//! / {
//!     compatible = "kho-v1";
//!     preserved-memory-map = <u64, native-endian>;  // head of the chunk list
//!     <user-name> {
//!         fdt = <u64, native-endian>;               // sub-FDT address
//!     };
//!     ...
//! };
//! ```
//!
//! User node names follow [`is_valid_user_name`]. The parser is strict:
//! the root holds exactly `compatible` and `preserved-memory-map`, each user
//! node exactly `fdt`, and user nodes have no children.
#![deny(clippy::arithmetic_side_effects)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::structure::{FdtStructureError, validate_fdt};
use super::writer::{FdtWriteError, SubFdtWriter, native_u64};

/// The only root `compatible` value this crate reads and writes.
pub const KHO_COMPATIBLE: &str = "kho-v1";

/// Root property holding the chunk list head.
pub const PRESERVED_MEMORY_MAP_PROPERTY: &str = "preserved-memory-map";

/// User-node property holding the sub-FDT address.
pub const USER_FDT_PROPERTY: &str = "fdt";

/// Longest user name, as for any device-tree node name.
pub const USER_NAME_MAX_BYTES: usize = 31;

/// Whether `name` may name a KHO user (a child node of the root).
///
/// The rule is the device-tree node-name rule without a unit address:
/// 1 to 31 bytes, an ASCII letter first, then ASCII letters, digits and
/// `,` `.` `_` `+` `-`. So no `/`, no `@`, no spaces, nothing non-ASCII.
pub fn is_valid_user_name(name: &str) -> bool {
    let mut characters = name.bytes();
    let Some(first) = characters.next() else {
        return false;
    };
    name.len() <= USER_NAME_MAX_BYTES
        && first.is_ascii_alphabetic()
        && characters.all(|byte| byte.is_ascii_alphanumeric() || b",._+-".contains(&byte))
}

/// Why the root FDT could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KhoFdtBuildError {
    /// A user name breaks [`is_valid_user_name`].
    InvalidUserName,
    /// Two users share a name.
    DuplicateUserName,
    /// The FDT writer failed.
    Write(FdtWriteError),
}

impl fmt::Display for KhoFdtBuildError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUserName => write!(formatter, "invalid KHO user name"),
            Self::DuplicateUserName => write!(formatter, "duplicate KHO user name"),
            Self::Write(error) => write!(formatter, "writing the KHO FDT failed: {error}"),
        }
    }
}

impl core::error::Error for KhoFdtBuildError {}

impl From<FdtWriteError> for KhoFdtBuildError {
    fn from(error: FdtWriteError) -> Self {
        Self::Write(error)
    }
}

/// Builder for the root FDT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KhoFdtBuilder {
    preserved_memory_map_phys: u64,
    users: Vec<(String, u64)>,
}

impl KhoFdtBuilder {
    /// A root pointing at the chunk list head `preserved_memory_map_phys`
    /// (0 when nothing is preserved).
    pub fn new(preserved_memory_map_phys: u64) -> Self {
        Self { preserved_memory_map_phys, users: Vec::new() }
    }

    /// Add the user `name` whose sub-FDT is at `sub_fdt_phys`. Users are
    /// written in the order they are added.
    pub fn add_user(&mut self, name: &str, sub_fdt_phys: u64) -> Result<(), KhoFdtBuildError> {
        if !is_valid_user_name(name) {
            return Err(KhoFdtBuildError::InvalidUserName);
        }
        if self.users.iter().any(|(existing, _)| existing == name) {
            return Err(KhoFdtBuildError::DuplicateUserName);
        }
        self.users.push((String::from(name), sub_fdt_phys));
        Ok(())
    }

    /// Write the blob.
    pub fn build(&self) -> Result<Vec<u8>, KhoFdtBuildError> {
        let mut writer = SubFdtWriter::new()?;
        writer.property_string("compatible", KHO_COMPATIBLE)?;
        writer.property_u64(PRESERVED_MEMORY_MAP_PROPERTY, self.preserved_memory_map_phys)?;
        for (name, sub_fdt_phys) in &self.users {
            let node = writer.begin_node(name)?;
            writer.property_u64(USER_FDT_PROPERTY, *sub_fdt_phys)?;
            writer.end_node(node)?;
        }
        Ok(writer.finish()?)
    }
}

/// Why a root FDT is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KhoFdtError {
    /// A well-formed FDT whose root `compatible` is not exactly `"kho-v1"`:
    /// another handover format. The kernel bypasses KHO.
    Incompatible,
    /// Anything else: the blob is damaged or breaks the `kho-v1` schema.
    Corrupted(KhoFdtCorruption),
}

/// What is wrong with a corrupted root FDT. User nodes are numbered from 0
/// in blob order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KhoFdtCorruption {
    /// The blob is not a well-formed FDT.
    Structure(FdtStructureError),
    /// The root has no `compatible`.
    MissingCompatible,
    /// The root has no `preserved-memory-map`.
    MissingPreservedMemoryMap,
    /// `preserved-memory-map` is not 8 bytes.
    BadPreservedMemoryMapSize {
        /// Its size.
        size_bytes: usize,
    },
    /// A root property appears twice.
    DuplicateRootProperty,
    /// The root has a property other than `compatible` and `preserved-memory-map`.
    UnexpectedRootProperty,
    /// A user node name breaks [`is_valid_user_name`].
    InvalidUserName {
        /// The user node's position.
        user_index: usize,
    },
    /// Two user nodes share a name.
    DuplicateUserName {
        /// The position of the second one.
        user_index: usize,
    },
    /// A user node has no `fdt`.
    MissingUserFdt {
        /// The user node's position.
        user_index: usize,
    },
    /// A user node's `fdt` is not 8 bytes, or appears twice.
    BadUserFdt {
        /// The user node's position.
        user_index: usize,
    },
    /// A user node has a property other than `fdt`.
    UnexpectedUserProperty {
        /// The user node's position.
        user_index: usize,
    },
    /// A user node has a child node.
    NestedUserNode {
        /// The user node's position.
        user_index: usize,
    },
}

impl fmt::Display for KhoFdtError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incompatible => write!(formatter, "KHO FDT is not {KHO_COMPATIBLE}"),
            Self::Corrupted(corruption) => write!(formatter, "KHO FDT is corrupted: {corruption}"),
        }
    }
}

impl core::error::Error for KhoFdtError {}

impl fmt::Display for KhoFdtCorruption {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Structure(error) => write!(formatter, "{error}"),
            Self::MissingCompatible => write!(formatter, "no compatible property"),
            Self::MissingPreservedMemoryMap => {
                write!(formatter, "no {PRESERVED_MEMORY_MAP_PROPERTY}")
            }
            Self::BadPreservedMemoryMapSize { size_bytes } => {
                write!(formatter, "{PRESERVED_MEMORY_MAP_PROPERTY} is {size_bytes} bytes, not 8")
            }
            Self::DuplicateRootProperty => write!(formatter, "a root property appears twice"),
            Self::UnexpectedRootProperty => write!(formatter, "unexpected root property"),
            Self::InvalidUserName { user_index } => {
                write!(formatter, "user {user_index} has an invalid name")
            }
            Self::DuplicateUserName { user_index } => {
                write!(formatter, "user {user_index} repeats a name")
            }
            Self::MissingUserFdt { user_index } => {
                write!(formatter, "user {user_index} has no fdt")
            }
            Self::BadUserFdt { user_index } => {
                write!(formatter, "user {user_index} has a malformed fdt")
            }
            Self::UnexpectedUserProperty { user_index } => {
                write!(formatter, "user {user_index} has an unexpected property")
            }
            Self::NestedUserNode { user_index } => {
                write!(formatter, "user {user_index} has a child node")
            }
        }
    }
}

impl core::error::Error for KhoFdtCorruption {}

impl From<FdtStructureError> for KhoFdtError {
    fn from(error: FdtStructureError) -> Self {
        Self::Corrupted(KhoFdtCorruption::Structure(error))
    }
}

impl From<KhoFdtCorruption> for KhoFdtError {
    fn from(corruption: KhoFdtCorruption) -> Self {
        Self::Corrupted(corruption)
    }
}

/// One KHO user recorded in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KhoUser<'a> {
    /// Node name (valid per [`is_valid_user_name`]).
    pub name: &'a str,
    /// Physical address of the user's sub-FDT.
    pub sub_fdt_phys: u64,
}

/// A validated root FDT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KhoFdt<'a> {
    preserved_memory_map_phys: u64,
    users: Vec<KhoUser<'a>>,
    total_size_bytes: usize,
}

impl<'a> KhoFdt<'a> {
    /// Head of the chunk list (0: nothing preserved).
    pub fn preserved_memory_map_phys(&self) -> u64 {
        self.preserved_memory_map_phys
    }

    /// The users, in blob order, names unique.
    pub fn users(&self) -> &[KhoUser<'a>] {
        &self.users
    }

    /// The sub-FDT address of user `name`.
    pub fn user(&self, name: &str) -> Option<u64> {
        self.users.iter().find(|user| user.name == name).map(|user| user.sub_fdt_phys)
    }

    /// Size of the blob from its header.
    pub fn total_size_bytes(&self) -> usize {
        self.total_size_bytes
    }
}

/// Parse and validate a root FDT. Never panics, whatever `bytes` holds:
/// the structure is proven well formed before the `fdt` crate reads it.
pub fn parse_kho_fdt(bytes: &[u8]) -> Result<KhoFdt<'_>, KhoFdtError> {
    let total_size_bytes = validate_fdt(bytes)?;
    let blob = bytes.get(..total_size_bytes).unwrap_or_default();
    let fdt = ::fdt::Fdt::new(blob).map_err(|_| FdtStructureError::TotalSizeOutOfBounds {
        total_size_bytes: u32::try_from(total_size_bytes).unwrap_or(u32::MAX),
        available_bytes: bytes.len(),
    })?;
    let root = fdt.find_node("/").ok_or(KhoFdtCorruption::MissingCompatible)?;

    // `compatible` decides first: another format may follow another schema.
    let mut compatible = None;
    let mut map_phys = None;
    let mut has_unexpected_property = false;
    for property in root.properties() {
        let slot = match property.name {
            "compatible" => &mut compatible,
            PRESERVED_MEMORY_MAP_PROPERTY => &mut map_phys,
            _ => {
                has_unexpected_property = true;
                continue;
            }
        };
        if slot.replace(property.value).is_some() {
            return Err(KhoFdtCorruption::DuplicateRootProperty.into());
        }
    }
    let compatible = compatible.ok_or(KhoFdtCorruption::MissingCompatible)?;
    if compatible.strip_suffix(b"\0") != Some(KHO_COMPATIBLE.as_bytes()) {
        return Err(KhoFdtError::Incompatible);
    }
    let map_value = map_phys.ok_or(KhoFdtCorruption::MissingPreservedMemoryMap)?;
    if has_unexpected_property {
        return Err(KhoFdtCorruption::UnexpectedRootProperty.into());
    }
    let preserved_memory_map_phys =
        native_u64(map_value).ok_or(KhoFdtCorruption::BadPreservedMemoryMapSize { size_bytes: map_value.len() })?;

    let mut users: Vec<KhoUser<'_>> = Vec::new();
    for (user_index, child) in root.children().enumerate() {
        if !is_valid_user_name(child.name) {
            return Err(KhoFdtCorruption::InvalidUserName { user_index }.into());
        }
        if users.iter().any(|user| user.name == child.name) {
            return Err(KhoFdtCorruption::DuplicateUserName { user_index }.into());
        }
        if child.children().next().is_some() {
            return Err(KhoFdtCorruption::NestedUserNode { user_index }.into());
        }
        let mut sub_fdt_phys = None;
        for property in child.properties() {
            if property.name != USER_FDT_PROPERTY {
                return Err(KhoFdtCorruption::UnexpectedUserProperty { user_index }.into());
            }
            let value = native_u64(property.value).ok_or(KhoFdtCorruption::BadUserFdt { user_index })?;
            if sub_fdt_phys.replace(value).is_some() {
                return Err(KhoFdtCorruption::BadUserFdt { user_index }.into());
            }
        }
        let sub_fdt_phys = sub_fdt_phys.ok_or(KhoFdtCorruption::MissingUserFdt { user_index })?;
        users.push(KhoUser { name: child.name, sub_fdt_phys });
    }
    Ok(KhoFdt { preserved_memory_map_phys, users, total_size_bytes })
}
