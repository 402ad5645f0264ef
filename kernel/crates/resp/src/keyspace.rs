//! The keyspace kvstore serves: a [`Table`] in preservable memory, and,
//! for a while after an update into a build with a newer record format,
//! the previous instance's table beside it.
//!
//! The migration is lazy and in the background: the new table is written
//! in fresh blocks, the old one is only read (never written: a rollback
//! can hand it back to the previous version as it was). A read looks in
//! the new table, then the old one; a write goes to the new one; a
//! removal of a key that only the old one has is remembered in a set, so
//! it does not come back. [`Keyspace::migrate`] copies a batch of the old
//! table's keys at a time between requests; when it has walked the whole
//! old table, the old blocks are freed.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use crate::store::{Store, StoreError};
use crate::table::{Block, Memory, Table, TableError};

/// A SCAN cursor in the old table (the rest of the bits are its cursor).
const OLD_PHASE: u64 = 1 << 62;
/// The SCAN cursor for the new table's start, after the old table's walk
/// (0 would end the client's walk).
const NEW_PHASE_START: u64 = 1 << 61;

/// A migration under way.
#[derive(Debug)]
struct Migration {
    from: Table,
    /// The next slot of `from` to copy.
    cursor: u64,
    /// Keys of `from` not yet in the new table and not removed.
    pending: u64,
    /// Keys of `from` removed since (they must not come back).
    removed: BTreeSet<Vec<u8>>,
}

/// kvstore's keyspace.
#[derive(Debug)]
pub struct Keyspace<M: Memory> {
    memory: M,
    table: Table,
    migration: Option<Migration>,
}

/// What INFO says of the keyspace's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyspaceInfo {
    /// The record format written.
    pub format: u32,
    /// Keys still to migrate from an older format (0: none).
    pub migrating_keys: u64,
    /// Blocks of preservable memory in use.
    pub blocks: usize,
    /// Bytes in them.
    pub allocated_bytes: usize,
}

impl<M: Memory> Keyspace<M> {
    /// An empty keyspace writing `format`.
    pub fn new(mut memory: M, format: u32, seed: [u64; 2]) -> Result<Keyspace<M>, StoreError> {
        let table = Table::new(&mut memory, format, seed)?;
        Ok(Keyspace { memory, table, migration: None })
    }

    /// The keyspace a previous instance's directory describes. A table in
    /// an older format than `format` is kept as it is and migrated from
    /// ([`Keyspace::migrate`]); one in a newer format is refused.
    pub fn from_directory(
        mut memory: M,
        directory: &[u8],
        format: u32,
        seed: [u64; 2],
    ) -> Result<Keyspace<M>, TableError> {
        let table = Table::from_directory(&mut memory, directory)?;
        if table.format() == format {
            return Ok(Keyspace { memory, table, migration: None });
        }
        if table.format() > format {
            table.release(&mut memory);
            return Err(TableError::UnknownFormat(table_format(directory)));
        }
        let Ok(new) = Table::new(&mut memory, format, seed) else {
            table.release(&mut memory);
            return Err(TableError::OutOfMemory);
        };
        let pending = table.len() as u64;
        let migration = Migration { from: table, cursor: 0, pending, removed: BTreeSet::new() };
        Ok(Keyspace { memory, table: new, migration: Some(migration) })
    }

    /// Copies up to `budget` slots' worth of the old table into the new
    /// one. Whether a migration is still under way after it.
    pub fn migrate(&mut self, budget: u64) -> bool {
        let Some(migration) = self.migration.as_mut() else { return false };
        let end = migration.from.slot_count();
        let stop = migration.cursor.saturating_add(budget).min(end);
        while migration.cursor < stop {
            if let Some((key, value, expires_at)) = migration.from.entry_at(&self.memory, migration.cursor)
                && !migration.removed.contains(key)
                && !self.table.contains(&self.memory, key)
            {
                let (key, value) = (key.to_vec(), value.to_vec());
                if self.table.put(&mut self.memory, &key, &value, expires_at).is_err() {
                    // No memory now: this slot again next time.
                    return true;
                }
                migration.pending = migration.pending.saturating_sub(1);
            }
            migration.cursor += 1;
        }
        if migration.cursor < end {
            return true;
        }
        if let Some(done) = self.migration.take() {
            done.from.release(&mut self.memory);
        }
        false
    }

    /// Finishes a migration under way at once (before the table is handed
    /// over: a directory names one table). Whether it finished (not: no
    /// memory for the rest).
    pub fn finish_migration(&mut self) -> bool {
        !self.migrate(u64::MAX)
    }

    /// The directory of the table, for a next instance
    /// ([`Keyspace::from_directory`]); `None` while a migration is under
    /// way ([`Keyspace::finish_migration`] first).
    pub fn directory(&self) -> Option<Vec<u8>> {
        self.migration.is_none().then(|| self.table.directory())
    }

    /// Every block in use (the old table's too, while migrating).
    pub fn blocks(&self) -> Vec<Block> {
        let mut blocks = self.table.blocks();
        if let Some(migration) = &self.migration {
            blocks.extend(migration.from.blocks());
        }
        blocks
    }

    /// What INFO reports.
    pub fn info(&self) -> KeyspaceInfo {
        let blocks = self.blocks();
        KeyspaceInfo {
            format: self.table.format(),
            migrating_keys: self.migration.as_ref().map_or(0, |migration| migration.pending),
            blocks: blocks.len(),
            allocated_bytes: blocks.iter().map(Block::size_bytes).sum(),
        }
    }

    /// The memory, for a test to look at (or damage).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.memory
    }

    /// Gives everything back and returns the memory (a test's handover).
    pub fn into_memory(self) -> M {
        self.memory
    }

    /// Whether the old table (only) holds `key`, not removed since.
    fn only_old(&self, key: &[u8]) -> bool {
        self.migration
            .as_ref()
            .is_some_and(|migration| !migration.removed.contains(key) && migration.from.contains(&self.memory, key))
            && !self.table.contains(&self.memory, key)
    }
}

/// The format word of a directory (for the error).
fn table_format(directory: &[u8]) -> u32 {
    directory.get(8..12).map_or(0, |bytes| u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4])))
}

impl<M: Memory> Store for Keyspace<M> {
    fn get(&self, key: &[u8]) -> Option<(&[u8], Option<u64>)> {
        if let Some(found) = self.table.get(&self.memory, key) {
            return Some(found);
        }
        let migration = self.migration.as_ref()?;
        if migration.removed.contains(key) {
            return None;
        }
        migration.from.get(&self.memory, key)
    }

    fn put(&mut self, key: &[u8], value: &[u8], expires_at: Option<u64>) -> Result<(), StoreError> {
        let was_only_old = self.only_old(key);
        self.table.put(&mut self.memory, key, value, expires_at)?;
        if was_only_old && let Some(migration) = self.migration.as_mut() {
            migration.pending = migration.pending.saturating_sub(1);
        }
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        let was_only_old = self.only_old(key);
        let was_new = self.table.remove(&mut self.memory, key);
        if let Some(migration) = self.migration.as_mut()
            && migration.from.contains(&self.memory, key)
            && migration.removed.insert(key.to_vec())
            && was_only_old
        {
            migration.pending = migration.pending.saturating_sub(1);
        }
        was_new || was_only_old
    }

    fn set_expiry(&mut self, key: &[u8], expires_at: Option<u64>) -> bool {
        if self.table.set_expiry(&mut self.memory, key, expires_at) {
            return true;
        }
        if !self.only_old(key) {
            return false;
        }
        // Moved to the new table with its new expiry.
        let Some((value, _)) = self.get(key) else { return false };
        let value = value.to_vec();
        self.put(key, &value, expires_at).is_ok()
    }

    fn len(&self) -> usize {
        self.table.len() + self.migration.as_ref().map_or(0, |migration| migration.pending as usize)
    }

    fn clear(&mut self) {
        // FLUSHDB asked for every key gone: the old table's too.
        if let Some(migration) = self.migration.take() {
            migration.from.release(&mut self.memory);
        }
        self.table.clear(&mut self.memory);
    }

    fn scan(&self, cursor: u64, count: usize) -> (Vec<Vec<u8>>, u64) {
        if let Some(migration) = &self.migration
            && (cursor == 0 || cursor & OLD_PHASE != 0)
        {
            let (keys, next) = migration.from.scan(&self.memory, cursor & !OLD_PHASE, count);
            let keys = keys.into_iter().filter(|key| self.get(key).is_some()).collect();
            return (keys, if next == 0 { NEW_PHASE_START } else { OLD_PHASE | next });
        }
        // An old-table cursor after the migration ended starts the new
        // table's walk: every key is in it now.
        let cursor = if cursor & (OLD_PHASE | NEW_PHASE_START) != 0 { 0 } else { cursor };
        self.table.scan(&self.memory, cursor, count)
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = self.table.keys(&self.memory);
        if let Some(migration) = &self.migration {
            let old = migration.from.keys(&self.memory);
            keys.extend(old.into_iter().filter(|key| self.only_old(key)));
        }
        keys
    }

    fn table_info(&self) -> Option<KeyspaceInfo> {
        Some(self.info())
    }

    fn used_bytes(&self) -> usize {
        // While migrating, the old table's bytes in proportion to the keys
        // still to come from it.
        let pending = self.migration.as_ref().map_or(0, |migration| {
            let keys = migration.from.len().max(1) as u64;
            (migration.from.used_bytes() as u64).saturating_mul(migration.pending) / keys
        });
        self.table.used_bytes() + pending as usize
    }
}
