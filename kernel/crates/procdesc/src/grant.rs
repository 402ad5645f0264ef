//! Grant records: the shared regions a resumed process gave another service, so both ends of a channel come back mapped to the same memory.
//!
//! A grant is a range of the owner's preservable memory that one peer,
//! named by its service name, may map (`share_grant`, `share_map`). The
//! memory stays the owner's: it is handed over with the owner's
//! mappings. The owner's description records each grant (its id, which
//! the owner and the peer keep using, the peer, the range in the owner's
//! address space and where the peer has it mapped); the peer's
//! description has a [`crate::MappingKind::Shared`] mapping whose one run
//! is the granted memory. The next kernel maps a peer's shared mapping
//! only when a grant of a resumed owner says the same (peer, address,
//! memory), so a description alone can never reach another service's
//! memory.

use arrayvec::ArrayString;
use baton_abi::MAX_NAME_BYTES;

/// The most grants one process makes.
pub const MAX_GRANTS: usize = 8;

/// One region a process granted to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantRecord {
    /// The grant's id (not zero), unique among its owner's grants.
    pub grant_id: u64,
    /// The service the region is granted to (not the owner itself).
    pub peer: ArrayString<MAX_NAME_BYTES>,
    /// First address of the region in the owner (page aligned).
    pub virtual_start: u64,
    /// Length in bytes (page aligned, not zero), inside one physical run
    /// of one of the owner's preservable mappings.
    pub size_bytes: u64,
    /// Where the peer has the region mapped, if it does.
    pub peer_virtual_start: Option<u64>,
}
