//! What the commands need of a table: a map of binary keys to values with
//! an optional expiry time. kvstore's own table (in preservable memory)
//! implements it; [`MemoryStore`] is the reference the host tests run.

use alloc::collections::BTreeMap;
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
    /// Up to `count` keys after `after` (all from the first without), in
    /// the store's order, which must be stable while keys are added and
    /// removed (SCAN resumes from the last key it returned).
    fn keys_after(&self, after: Option<&[u8]>, count: usize) -> Vec<Vec<u8>>;
    /// Bytes of keys and values held.
    fn used_bytes(&self) -> usize;
}

/// A store in ordinary memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
    used_bytes: usize,
}

impl MemoryStore {
    /// An empty store.
    pub const fn new() -> MemoryStore {
        MemoryStore { entries: BTreeMap::new(), used_bytes: 0 }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Option<(&[u8], Option<u64>)> {
        self.entries.get(key).map(|(value, expires_at)| (value.as_slice(), *expires_at))
    }

    fn put(&mut self, key: &[u8], value: &[u8], expires_at: Option<u64>) -> Result<(), StoreError> {
        let old = self.entries.insert(key.to_vec(), (value.to_vec(), expires_at));
        self.used_bytes += key.len() + value.len();
        if let Some((old_value, _)) = old {
            self.used_bytes -= key.len() + old_value.len();
        }
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some((value, _)) => {
                self.used_bytes -= key.len() + value.len();
                true
            }
            None => false,
        }
    }

    fn set_expiry(&mut self, key: &[u8], expires_at: Option<u64>) -> bool {
        self.entries.get_mut(key).map(|entry| entry.1 = expires_at).is_some()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.used_bytes = 0;
    }

    fn keys_after(&self, after: Option<&[u8]>, count: usize) -> Vec<Vec<u8>> {
        use core::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.to_vec()));
        self.entries.range((start, Bound::Unbounded)).take(count).map(|(key, _)| key.clone()).collect()
    }

    fn used_bytes(&self) -> usize {
        self.used_bytes
    }
}

/// The magic at the start of a keyspace's bytes ([`MemoryStore::to_bytes`]).
const KEYSPACE_MAGIC: &[u8; 8] = b"BRKS0001";
/// "No expiry" in the bytes.
const NO_EXPIRY: u64 = u64::MAX;

impl MemoryStore {
    /// The whole keyspace as bytes, for a next instance to take over: the
    /// magic, the key count, then per key its length and the value's (u32
    /// each), its expiry (u64, all-ones for none), the key and the value;
    /// little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.used_bytes + 16 * self.entries.len());
        out.extend_from_slice(KEYSPACE_MAGIC);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (key, (value, expires_at)) in &self.entries {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(&expires_at.unwrap_or(NO_EXPIRY).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        out
    }

    /// A keyspace read back from [`MemoryStore::to_bytes`]'s bytes (read
    /// as hostile: every length is checked against what is there). `None`
    /// for bytes that are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<MemoryStore> {
        fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
            let (head, tail) = bytes.split_at_checked(count)?;
            *bytes = tail;
            Some(head)
        }
        fn word<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
            take(bytes, N)?.try_into().ok()
        }
        let mut rest = bytes;
        if take(&mut rest, 8)? != KEYSPACE_MAGIC {
            return None;
        }
        let count = u64::from_le_bytes(word(&mut rest)?);
        let mut store = MemoryStore::new();
        for _ in 0..count {
            let key_length = u32::from_le_bytes(word(&mut rest)?) as usize;
            let value_length = u32::from_le_bytes(word(&mut rest)?) as usize;
            let expires_at = u64::from_le_bytes(word(&mut rest)?);
            let key = take(&mut rest, key_length)?;
            let value = take(&mut rest, value_length)?;
            let expires_at = (expires_at != NO_EXPIRY).then_some(expires_at);
            store.put(key, value, expires_at).ok()?;
        }
        rest.is_empty().then_some(store)
    }
}
