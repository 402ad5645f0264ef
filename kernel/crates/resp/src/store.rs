//! What the commands need of a table: a map of binary keys to values with
//! an optional expiry time. kvstore's [`crate::Keyspace`] (in preservable
//! memory) implements it.

use alloc::vec::Vec;

/// Why the store refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No room (the key limit, the memory limit, or no memory at all).
    OutOfMemory,
}

/// A string keyspace. Times are milliseconds of the monotonic clock that
/// continues across updates; the commands expire keys, the store only
/// keeps the times.
pub trait Store {
    /// The value and expiry time of `key`.
    fn get(&self, key: &[u8]) -> Option<(&[u8], Option<u64>)>;
    /// Sets `key` (a new key or a new value, with this expiry).
    fn put(&mut self, key: &[u8], value: &[u8], expires_at: Option<u64>) -> Result<(), StoreError>;
    /// Removes `key`; whether it was there.
    fn remove(&mut self, key: &[u8]) -> bool;
    /// Sets the expiry of an existing key; whether it was there.
    fn set_expiry(&mut self, key: &[u8], expires_at: Option<u64>) -> bool;
    /// Keys stored (expired ones not yet removed included).
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes every key.
    fn clear(&mut self);
    /// SCAN's step: keys from `cursor` (0 to start) and the cursor to go
    /// on from (0 at the end). Every key there throughout a walk is
    /// returned at least once, however the store changes meanwhile; one
    /// may come twice.
    fn scan(&self, cursor: u64, count: usize) -> (Vec<Vec<u8>>, u64);
    /// Every key, once.
    fn keys(&self) -> Vec<Vec<u8>>;
    /// Bytes of keys and values held.
    fn used_bytes(&self) -> usize;
    /// Where the keys live, for INFO (a store in preservable memory).
    fn table_info(&self) -> Option<crate::KeyspaceInfo> {
        None
    }
}

/// The magic at the start of a keyspace's bytes ([`MemoryStore::to_bytes`]).
const KEYSPACE_MAGIC: &[u8; 8] = b"BRKS0001";
/// "No expiry" in the bytes.
const NO_EXPIRY: u64 = u64::MAX;

/// The whole keyspace of `store` as bytes, as an instance from before
/// the table handed it over: the magic, the key count, then per key its
/// length and the value's (u32 each), its expiry (u64, all-ones for
/// none), the key and the value; little-endian. Kept to read such a
/// handover ([`load_keyspace_bytes`]) and to test that.
pub fn keyspace_bytes(store: &impl Store) -> Vec<u8> {
    let keys = store.keys();
    let mut out = Vec::new();
    out.extend_from_slice(KEYSPACE_MAGIC);
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for key in &keys {
        let Some((value, expires_at)) = store.get(key) else { continue };
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(&expires_at.unwrap_or(NO_EXPIRY).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    out
}

/// Whether `bytes` start like [`keyspace_bytes`]'s.
pub fn is_keyspace_bytes(bytes: &[u8]) -> bool {
    bytes.starts_with(KEYSPACE_MAGIC)
}

/// Puts the keys of [`keyspace_bytes`]'s bytes into `store`, read as
/// hostile: every length is checked against what is there, and the bytes
/// are checked whole before anything is put. `false` (and nothing put)
/// for bytes that are not a keyspace or a store that runs out of room.
pub fn load_keyspace_bytes(bytes: &[u8], store: &mut impl Store) -> bool {
    fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(count)?;
        *bytes = tail;
        Some(head)
    }
    fn word<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
        take(bytes, N)?.try_into().ok()
    }
    type Entry<'a> = (&'a [u8], &'a [u8], Option<u64>);
    fn parse(bytes: &[u8]) -> Option<Vec<Entry<'_>>> {
        let mut rest = bytes;
        if take(&mut rest, 8)? != KEYSPACE_MAGIC {
            return None;
        }
        let count = u64::from_le_bytes(word(&mut rest)?);
        let mut entries = Vec::new();
        for _ in 0..count {
            let key_length = u32::from_le_bytes(word(&mut rest)?) as usize;
            let value_length = u32::from_le_bytes(word(&mut rest)?) as usize;
            let expires_at = u64::from_le_bytes(word(&mut rest)?);
            let key = take(&mut rest, key_length)?;
            let value = take(&mut rest, value_length)?;
            entries.push((key, value, (expires_at != NO_EXPIRY).then_some(expires_at)));
        }
        rest.is_empty().then_some(entries)
    }
    let Some(entries) = parse(bytes) else { return false };
    for (key, value, expires_at) in entries {
        if store.put(key, value, expires_at).is_err() {
            store.clear();
            return false;
        }
    }
    true
}
