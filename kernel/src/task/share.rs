//! Shared regions: a service grants a range of its preservable memory to
//! one other service by name, which may then map it (the memory of a
//! `baton-channel`). The kernel checks every step: the range is the
//! owner's preservable memory, only the named peer maps it, only the owner
//! revokes it, and the owner cannot free it while it is granted.
//!
//! The memory stays the owner's from start to end: it is handed over
//! with the owner's process, and a peer's mapping of it never frees it.
//! When a grant ends (the owner revokes it or exits), a peer that had it
//! mapped keeps its addresses, backed from then on by zeroed pages of its
//! own, and is told with a `SHARE_REVOKED_LABEL` message: it never
//! touches the owner's memory again, and it does not fault either (a
//! driver serving many clients must not die because one of them did).

use super::{ServiceId, Tasks};
use crate::mm::user::{Backing, SHARED_BASE, SpaceError, user_attributes};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use arrayvec::ArrayString;
use baton_abi::message::KERNEL_SENDER;
use baton_abi::{MAX_GRANTS, MAX_NAME_BYTES, Message, PAGE_SIZE, SHARE_REVOKED_LABEL, UserBuffer};

/// One grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Its id (unique on this machine, kept across updates).
    pub id: u64,
    /// The service whose memory it is.
    pub owner: ServiceId,
    /// The service that may map it.
    pub peer: ArrayString<MAX_NAME_BYTES>,
    /// Where the memory lies in the owner.
    pub virt: u64,
    /// Its length in bytes.
    pub size_bytes: u64,
    /// Its physical address (one physically contiguous block).
    pub phys: u64,
    /// Where the peer has it mapped: (peer id, address).
    pub mapped: Option<(ServiceId, u64)>,
    /// After an update, until the resumed peer has it back: where the
    /// peer had it mapped before.
    pub awaited_at: Option<u64>,
}

/// Every grant, by id.
#[derive(Debug, Default)]
pub struct Grants {
    by_id: BTreeMap<u64, Grant>,
    next_id: u64,
}

impl Grants {
    /// An empty table.
    pub const fn new() -> Grants {
        Grants { by_id: BTreeMap::new(), next_id: 1 }
    }

    /// The grants `owner` made.
    pub fn of_owner(&self, owner: ServiceId) -> impl Iterator<Item = &Grant> + '_ {
        self.by_id.values().filter(move |grant| grant.owner == owner)
    }

    /// Whether any of `owner`'s memory in `[virt, virt + size_bytes)` is
    /// granted.
    pub fn covers(&self, owner: ServiceId, virt: u64, size_bytes: u64) -> bool {
        let end = virt.saturating_add(size_bytes);
        self.of_owner(owner).any(|grant| grant.virt < end && virt < grant.virt + grant.size_bytes)
    }

    /// Records a grant handed over by the previous kernel (its owner was
    /// resumed); `AlreadyExists` when the id is taken (a damaged
    /// description).
    pub fn restore(&mut self, grant: Grant) -> Result<(), ShareError> {
        if grant.id == 0 || self.by_id.contains_key(&grant.id) {
            return Err(ShareError::AlreadyExists);
        }
        self.next_id = self.next_id.max(grant.id.saturating_add(1));
        self.by_id.insert(grant.id, grant);
        Ok(())
    }

    /// Keeps `id` from being given to a new grant (an id the previous
    /// kernel used, whose grant may have ended with the update: its peer
    /// is told so by id, which must not name a new grant too).
    pub fn reserve(&mut self, id: u64) {
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    /// Notes that `peer` has grant `id` mapped at `virt` (again, for a
    /// resumed peer).
    pub fn note_mapped(&mut self, id: u64, peer: ServiceId, virt: u64) {
        if let Some(grant) = self.by_id.get_mut(&id) {
            grant.mapped = Some((peer, virt));
            grant.awaited_at = None;
        }
    }

    /// Grant `id`, if it exists.
    pub fn get(&self, id: u64) -> Option<&Grant> {
        self.by_id.get(&id)
    }

    /// Whether a resumed peer named `peer` may map grant `id` at `virt`
    /// over this memory again: its (resumed) owner recorded the grant with
    /// this peer, this address and this memory, and nobody took it back
    /// yet.
    pub fn is_handed_over(&self, id: u64, peer: &str, virt: u64, phys: u64, size_bytes: u64) -> bool {
        self.by_id.get(&id).is_some_and(|grant| {
            grant.peer.as_str() == peer
                && grant.awaited_at == Some(virt)
                && grant.phys == phys
                && grant.size_bytes == size_bytes
                && grant.mapped.is_none()
        })
    }

    /// Every grant still awaiting a peer that did not come back: it is
    /// mapped nowhere (a restarted peer maps it again itself).
    pub fn forget_awaited(&mut self) {
        for grant in self.by_id.values_mut() {
            grant.awaited_at = None;
        }
    }
}

/// Why a share call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareError {
    /// The range is not whole pages of one block of the caller's
    /// preservable memory.
    NotPreservable,
    /// No running service has the peer's name.
    NoSuchPeer,
    /// The caller named itself.
    OwnPeer,
    /// The caller holds [`MAX_GRANTS`] grants already.
    TooMany,
    /// No such grant.
    NoSuchGrant,
    /// The grant is not the caller's to map or revoke.
    NotYours,
    /// The grant is mapped already, or its id is taken.
    AlreadyExists,
    /// The grant is not of the size the peer expects.
    WrongLength,
    /// Mapping it failed.
    Space(SpaceError),
}

impl core::fmt::Display for ShareError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ShareError::NotPreservable => f.write_str("not whole pages of one block of preservable memory"),
            ShareError::NoSuchPeer => f.write_str("no service has that name"),
            ShareError::OwnPeer => f.write_str("a service cannot grant to itself"),
            ShareError::TooMany => write!(f, "more than {MAX_GRANTS} grants"),
            ShareError::NoSuchGrant => f.write_str("no such grant"),
            ShareError::NotYours => f.write_str("another service's grant"),
            ShareError::AlreadyExists => f.write_str("already mapped"),
            ShareError::WrongLength => f.write_str("not of the size expected"),
            ShareError::Space(error) => write!(f, "mapping it: {error:?}"),
        }
    }
}

impl Tasks {
    /// `share_grant`: `owner` grants `range` of its preservable memory to
    /// the running service named `peer`.
    pub fn share_grant(&mut self, owner: ServiceId, range: UserBuffer, peer: &str) -> Result<u64, ShareError> {
        let process = self.processes.get(&owner).ok_or(ShareError::NoSuchGrant)?;
        if process.name.as_str() == peer {
            return Err(ShareError::OwnPeer);
        }
        let peer = ArrayString::from(peer).map_err(|_| ShareError::NoSuchPeer)?;
        if !self.processes.values().any(|other| other.name == peer) {
            return Err(ShareError::NoSuchPeer);
        }
        let Some((start, size, Backing::Preservable { phys, .. })) = process.space.range_containing(range.address)
        else {
            return Err(ShareError::NotPreservable);
        };
        if range.end() > start + size {
            return Err(ShareError::NotPreservable);
        }
        if self.grants.of_owner(owner).count() >= MAX_GRANTS {
            return Err(ShareError::TooMany);
        }
        let id = self.grants.next_id;
        self.grants.next_id += 1;
        let grant = Grant {
            id,
            owner,
            peer,
            virt: range.address,
            size_bytes: range.length,
            phys: phys + (range.address - start),
            mapped: None,
            awaited_at: None,
        };
        self.grants.by_id.insert(id, grant);
        Ok(id)
    }

    /// `share_map`: the grant's peer maps it (when it is `length` bytes), read-write, never
    /// executable. A page is left unmapped after it, so two shared
    /// regions never read as one mapping in a process description.
    pub fn share_map(&mut self, caller: ServiceId, id: u64, length: u64) -> Result<u64, ShareError> {
        let grant = *self.grants.by_id.get(&id).ok_or(ShareError::NoSuchGrant)?;
        let process = self.processes.get_mut(&caller).ok_or(ShareError::NoSuchGrant)?;
        if process.name != grant.peer {
            return Err(ShareError::NotYours);
        }
        if grant.size_bytes != length {
            return Err(ShareError::WrongLength);
        }
        if grant.mapped.is_some_and(|(peer, _)| peer == caller) {
            return Err(ShareError::AlreadyExists);
        }
        let virt = process
            .space
            .find_free(SHARED_BASE, grant.size_bytes + PAGE_SIZE, PAGE_SIZE)
            .ok_or(ShareError::Space(SpaceError::NoMemory))?;
        let attributes = user_attributes(true, false);
        process
            .space
            .map(virt, grant.phys, grant.size_bytes, attributes, Backing::Shared { phys: grant.phys, grant: id })
            .map_err(ShareError::Space)?;
        self.grants.note_mapped(id, caller, virt);
        Ok(virt)
    }

    /// `share_revoke`: the owner ends a grant.
    pub fn share_revoke(&mut self, caller: ServiceId, id: u64) -> Result<(), ShareError> {
        let grant = self.grants.by_id.get(&id).ok_or(ShareError::NoSuchGrant)?;
        if grant.owner != caller {
            return Err(ShareError::NotYours);
        }
        self.end_grant(id);
        Ok(())
    }

    /// Ends a grant: its peer's mapping (if any) is backed by zeroed pages
    /// of the peer's own from now on, and the peer is told.
    fn end_grant(&mut self, id: u64) {
        let Some(grant) = self.grants.by_id.remove(&id) else { return };
        let Some((peer, virt)) = grant.mapped else { return };
        let Some(process) = self.processes.get_mut(&peer) else { return };
        process.space.unmap(virt);
        if let Err(error) = process.space.map_new(virt, grant.size_bytes, user_attributes(true, false)) {
            log::warn!(
                target: "share",
                "grant {id} revoked: cannot back '{}''s mapping at {virt:#x} again ({error:?}); it is unmapped",
                process.name
            );
        }
        let notice = Message::new(SHARE_REVOKED_LABEL, [id, 0, 0, 0, 0, 0]);
        if let Err(error) = super::ipc::post(self, KERNEL_SENDER, peer, notice) {
            log::warn!(target: "share", "cannot tell service {peer} grant {id} was revoked: {error}");
        }
    }

    /// A service is ending: the grants it made end (its peers are told),
    /// and the grants it had mapped are mapped nowhere.
    pub(super) fn end_shares(&mut self, id: ServiceId) {
        let owned: Vec<u64> = self.grants.of_owner(id).map(|grant| grant.id).collect();
        for grant in owned {
            self.end_grant(grant);
        }
        for grant in self.grants.by_id.values_mut() {
            if grant.mapped.is_some_and(|(peer, _)| peer == id) {
                grant.mapped = None;
            }
        }
    }
}
