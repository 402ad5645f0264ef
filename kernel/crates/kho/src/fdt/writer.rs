//! The one FDT writer every KHO user (kernel and user-space services) uses for its sub-FDT.
//!
//! A thin wrapper over `vm_fdt::FdtWriter` that opens the root node for
//! you, writes integer properties **native-endian** (the KHO convention;
//! `vm_fdt`'s own `property_u64` is big-endian), limits nesting to what the
//! parser accepts and reports typed, copyable errors.

use alloc::vec::Vec;
use core::fmt;

use super::structure::FDT_MAX_DEPTH;

/// Why an FDT could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtWriteError {
    /// A node name breaks the device-tree rules (1 to 31 characters, a
    /// letter first, then letters, digits and `,._+-`, optionally
    /// `@unit-address`), or is empty.
    InvalidNodeName,
    /// A property name breaks the device-tree rules (1 to 31 characters
    /// from letters, digits and `,._+?#-`).
    InvalidPropertyName,
    /// A string value contains a NUL byte.
    InvalidString,
    /// The blob or a property would exceed 4 GiB.
    TooLarge,
    /// Nodes nested deeper than the parser accepts.
    TooDeep,
    /// Nodes ended out of order, or a property written after a child node.
    Unbalanced,
}

impl fmt::Display for FdtWriteError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::InvalidNodeName => "invalid FDT node name",
            Self::InvalidPropertyName => "invalid FDT property name",
            Self::InvalidString => "FDT string contains NUL",
            Self::TooLarge => "FDT too large",
            Self::TooDeep => "FDT nodes nested too deep",
            Self::Unbalanced => "FDT nodes or properties out of order",
        };
        formatter.write_str(text)
    }
}

impl core::error::Error for FdtWriteError {}

fn map_error(error: vm_fdt::Error) -> FdtWriteError {
    match error {
        vm_fdt::Error::InvalidNodeName => FdtWriteError::InvalidNodeName,
        vm_fdt::Error::InvalidPropertyName => FdtWriteError::InvalidPropertyName,
        vm_fdt::Error::InvalidString => FdtWriteError::InvalidString,
        vm_fdt::Error::PropertyValueTooLarge | vm_fdt::Error::TotalSizeTooLarge => FdtWriteError::TooLarge,
        vm_fdt::Error::NodeDepthTooLarge => FdtWriteError::TooDeep,
        _ => FdtWriteError::Unbalanced,
    }
}

/// An open node, to be passed back to [`SubFdtWriter::end_node`].
#[derive(Debug)]
#[must_use = "every node must be ended"]
pub struct SubFdtNode {
    inner: vm_fdt::FdtWriterNode,
}

/// Writer for a sub-FDT (and, inside this crate, the KHO root).
///
/// ```
/// use baton_kho::fdt::{SubFdtWriter, native_u64};
///
/// let mut writer = SubFdtWriter::new()?;
/// writer.property_string("compatible", "counter-v1")?;
/// let node = writer.begin_node("state")?;
/// writer.property_u64("phys", 0x8000_0000)?;
/// writer.end_node(node)?;
/// let blob = writer.finish()?;
///
/// let fdt = baton_kho::fdt::parse_fdt(&blob).unwrap();
/// let state = fdt.find_node("/state").unwrap();
/// assert_eq!(native_u64(state.property("phys").unwrap().value), Some(0x8000_0000));
/// # Ok::<(), baton_kho::fdt::FdtWriteError>(())
/// ```
#[derive(Debug)]
pub struct SubFdtWriter {
    inner: vm_fdt::FdtWriter,
    root: vm_fdt::FdtWriterNode,
    depth: usize,
}

impl SubFdtWriter {
    /// A writer with the root node open.
    pub fn new() -> Result<Self, FdtWriteError> {
        let mut inner = vm_fdt::FdtWriter::new().map_err(map_error)?;
        let root = inner.begin_node("").map_err(map_error)?;
        Ok(Self { inner, root, depth: 1 })
    }

    /// Open a child of the innermost open node. Properties of a node must
    /// come before its children.
    pub fn begin_node(&mut self, name: &str) -> Result<SubFdtNode, FdtWriteError> {
        if name.is_empty() {
            return Err(FdtWriteError::InvalidNodeName);
        }
        if self.depth >= FDT_MAX_DEPTH {
            return Err(FdtWriteError::TooDeep);
        }
        let inner = self.inner.begin_node(name).map_err(map_error)?;
        self.depth += 1;
        Ok(SubFdtNode { inner })
    }

    /// Close the innermost open node.
    pub fn end_node(&mut self, node: SubFdtNode) -> Result<(), FdtWriteError> {
        self.inner.end_node(node.inner).map_err(map_error)?;
        self.depth -= 1;
        Ok(())
    }

    /// A property with raw bytes.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), FdtWriteError> {
        self.inner.property(name, value).map_err(map_error)
    }

    /// A NUL-terminated string property.
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), FdtWriteError> {
        self.inner.property_string(name, value).map_err(map_error)
    }

    /// An 8-byte native-endian integer property.
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), FdtWriteError> {
        self.property(name, &value.to_ne_bytes())
    }

    /// A 4-byte native-endian integer property.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), FdtWriteError> {
        self.property(name, &value.to_ne_bytes())
    }

    /// Close the root node and return the blob.
    pub fn finish(mut self) -> Result<Vec<u8>, FdtWriteError> {
        if self.depth != 1 {
            return Err(FdtWriteError::Unbalanced);
        }
        self.inner.end_node(self.root).map_err(map_error)?;
        self.inner.finish().map_err(map_error)
    }
}

/// A native-endian `u64` property value (exactly 8 bytes).
pub fn native_u64(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.try_into().ok()?;
    Some(u64::from_ne_bytes(bytes))
}

/// A native-endian `u32` property value (exactly 4 bytes).
pub fn native_u32(value: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = value.try_into().ok()?;
    Some(u32::from_ne_bytes(bytes))
}
