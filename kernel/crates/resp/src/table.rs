//! kvstore's keyspace as it lives in preservable memory.
//!
//! Records are appended to segments (blocks of preservable memory) and
//! found through an open-addressing index, itself in blocks, whose slots
//! hold where a record is as (segment number, offset): offsets, not
//! pointers, so a next instance that takes the same blocks back, mapped
//! wherever its kernel puts them, uses the table as it is. Nothing is
//! copied at `prepare` and nothing is rebuilt after the update: the
//! handover is the short directory ([`Table::directory`]) naming the
//! blocks.
//!
//! A record that is overwritten or removed is marked dead where it lies;
//! a segment with little left alive is compacted (its live records moved
//! to the segment being filled) and freed. The index doubles when it is
//! three-quarters full.
//!
//! Everything read back from a handover is hostile: every slot, offset
//! and length is checked against the blocks before it is used, a probe
//! never runs past the table's size, and format 2 records carry a
//! checksum. A damaged record reads as absent; it never panics.
//!
//! Written here rather than taken from a crate: a hash map crate
//! (`hashbrown`) keeps pointers and its own allocation, and no crate lays
//! a map out in memory another program maps elsewhere.

use alloc::vec::Vec;
use core::hash::Hasher;

use crate::store::StoreError;

/// A block of memory a table uses: `4 KiB << order` bytes, zeroed when
/// allocated, named by a physical address a next instance can restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Where the memory is mapped (meaning is the [`Memory`]'s).
    pub address: u64,
    /// Its physical address: what the directory records.
    pub physical: u64,
    /// Its order.
    pub order: u32,
}

impl Block {
    /// Bytes in the block.
    pub fn size_bytes(&self) -> usize {
        PAGE_BYTES << self.order
    }
}

/// Where a table's blocks come from: the kernel's preservable memory in
/// kvstore, [`HeapMemory`] on the host.
pub trait Memory {
    /// A new zeroed block of `order`; `None` when memory runs out.
    fn allocate(&mut self, order: u32) -> Option<Block>;
    /// The block at `physical` a previous instance handed over.
    fn restore(&mut self, physical: u64, order: u32) -> Option<Block>;
    /// Gives a block back.
    fn free(&mut self, block: Block);
    /// A block's bytes (all [`Block::size_bytes`] of them).
    fn bytes(&self, block: &Block) -> &[u8];
    /// A block's bytes, to write.
    fn bytes_mut(&mut self, block: &Block) -> &mut [u8];
}

/// Why a handed-over table was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// The bytes are not a table's directory.
    NotATable,
    /// A format this build does not read (a newer one).
    UnknownFormat(u32),
    /// A count, size or place in the directory that cannot be right.
    Malformed(&'static str),
    /// A block it names could not be restored.
    CannotRestore(u64),
    /// No memory for a table.
    OutOfMemory,
}

impl core::fmt::Display for TableError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TableError::NotATable => write!(formatter, "not a table's directory"),
            TableError::UnknownFormat(format) => write!(formatter, "format {format} is not one this build reads"),
            TableError::Malformed(what) => write!(formatter, "malformed directory: {what}"),
            TableError::CannotRestore(physical) => write!(formatter, "the block at {physical:#x} cannot be restored"),
            TableError::OutOfMemory => write!(formatter, "no memory for the table"),
        }
    }
}

const PAGE_BYTES: usize = 4096;
/// The largest block a service allocates (4 MiB): the largest record.
pub const MAX_BLOCK_ORDER: u32 = 10;
/// The first segments are 64 KiB, so a small keyspace stays small...
const SMALL_SEGMENT_ORDER: u32 = 4;
/// ...and once a megabyte is in segments they are 1 MiB.
const SEGMENT_ORDER: u32 = 8;
/// Index blocks past one are 1 MiB (131,072 slots each).
const INDEX_BLOCK_ORDER: u32 = 8;
/// The smallest index: one page.
const MIN_SLOTS: u64 = 512;
/// The largest: 2^28 slots (2 GiB of index), far past any guest here.
const MAX_SLOTS: u64 = 1 << 28;
/// The most segments (and so 4 GiB of 1 MiB ones).
pub const MAX_SEGMENTS: usize = 4096;
/// The newest record format this build reads.
pub const NEWEST_FORMAT: u32 = 2;

const RECORD_HEADER: usize = 24;
const LIVE: u8 = 1;
const DEAD: u8 = 2;
const NO_EXPIRY: u64 = u64::MAX;
const EMPTY: u64 = 0;
const TOMBSTONE: u64 = u64::MAX;
const DIRECTORY_MAGIC: &[u8; 8] = b"BRTB0001";

/// Bytes a record of this key and value takes (8-aligned).
fn record_size(key_length: usize, value_length: usize) -> usize {
    (RECORD_HEADER + key_length + value_length + 7) & !7
}

/// A record's checksum (format 2): FNV-1a over its key, value and expiry.
/// Against damage, not against an adversary.
fn checksum(key: &[u8], value: &[u8], expires_at: u64) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in key.iter().chain(value).chain(&expires_at.to_le_bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash
}

/// A slot: the hash's top 16 bits, the segment number plus one (16 bits),
/// the offset (32 bits). Offsets are 8-aligned, so no slot is TOMBSTONE.
fn slot_value(hash: u64, segment: usize, offset: usize) -> u64 {
    (hash & 0xffff_0000_0000_0000) | ((segment as u64 + 1) << 32) | offset as u64
}

fn slot_place(slot: u64) -> Option<(usize, usize)> {
    let segment = ((slot >> 32) & 0xffff) as usize;
    (segment != 0).then(|| (segment - 1, (slot & 0xffff_ffff) as usize))
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    block: Block,
    /// Bytes written.
    end: usize,
    /// Bytes of live records.
    live_bytes: usize,
}

/// One record as read.
struct Record<'a> {
    key: &'a [u8],
    value: &'a [u8],
    expires_at: Option<u64>,
    size: usize,
}

/// The table. Its blocks are in a [`Memory`] the caller passes to every
/// operation; this holds where they are and the counts.
#[derive(Debug, Clone)]
pub struct Table {
    format: u32,
    hash_keys: [u64; 2],
    segments: Vec<Option<Segment>>,
    /// The segment records are appended to.
    active: Option<usize>,
    index: Vec<Block>,
    slot_count: u64,
    /// Slots not empty (live ones and tombstones).
    occupied: u64,
    live: u64,
    used_bytes: u64,
}

impl Table {
    /// An empty table writing records of `format` (1 or 2), its hash keyed
    /// by `seed` (a hostile client cannot aim keys at one slot without it).
    pub fn new(memory: &mut impl Memory, format: u32, seed: [u64; 2]) -> Result<Table, StoreError> {
        let mut table = Table {
            format: format.clamp(1, NEWEST_FORMAT),
            hash_keys: seed,
            segments: Vec::new(),
            active: None,
            index: Vec::new(),
            slot_count: 0,
            occupied: 0,
            live: 0,
            used_bytes: 0,
        };
        table.index = allocate_index(memory, MIN_SLOTS).ok_or(StoreError::OutOfMemory)?;
        table.slot_count = MIN_SLOTS;
        Ok(table)
    }

    /// The record format it writes.
    pub fn format(&self) -> u32 {
        self.format
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes of keys and values held.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes as usize
    }

    /// Every block it uses (what a restart must preserve).
    pub fn blocks(&self) -> Vec<Block> {
        let segments = self.segments.iter().flatten().map(|segment| segment.block);
        self.index.iter().copied().chain(segments).collect()
    }

    /// Bytes of memory in its blocks.
    pub fn allocated_bytes(&self) -> usize {
        self.blocks().iter().map(Block::size_bytes).sum()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(self.hash_keys[0], self.hash_keys[1]);
        hasher.write(key);
        hasher.finish()
    }

    fn slots_per_block(&self) -> u64 {
        self.index.first().map_or(1, |block| (block.size_bytes() / 8) as u64)
    }

    fn slot(&self, memory: &impl Memory, index: u64) -> u64 {
        let per_block = self.slots_per_block();
        let Some(block) = self.index.get((index / per_block) as usize) else { return EMPTY };
        let at = (index % per_block) as usize * 8;
        memory
            .bytes(block)
            .get(at..at + 8)
            .map_or(EMPTY, |bytes| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
    }

    fn set_slot(&self, memory: &mut impl Memory, index: u64, value: u64) {
        let per_block = self.slots_per_block();
        let Some(block) = self.index.get((index / per_block) as usize) else { return };
        let at = (index % per_block) as usize * 8;
        if let Some(bytes) = memory.bytes_mut(block).get_mut(at..at + 8) {
            bytes.copy_from_slice(&value.to_le_bytes());
        }
    }

    /// The live record at `segment`/`offset`, checked against its segment
    /// (and its checksum, in format 2).
    fn record<'m>(&self, memory: &'m impl Memory, segment: usize, offset: usize) -> Option<Record<'m>> {
        let place = self.segments.get(segment)?.as_ref()?;
        let bytes = memory.bytes(&place.block);
        let bytes = bytes.get(..place.end.min(bytes.len()))?;
        let header = bytes.get(offset..offset.checked_add(RECORD_HEADER)?)?;
        if header[0] != LIVE {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let (key_length, value_length) = (word(8) as usize, word(12) as usize);
        let expires = u64::from_le_bytes(header[16..24].try_into().ok()?);
        let size = record_size(key_length, value_length);
        let body = bytes.get(offset + RECORD_HEADER..offset.checked_add(size)?)?;
        let (key, rest) = body.split_at_checked(key_length)?;
        let value = rest.get(..value_length)?;
        if self.format >= 2 && word(4) != checksum(key, value, expires) {
            return None;
        }
        Some(Record { key, value, expires_at: (expires != NO_EXPIRY).then_some(expires), size })
    }

    /// The slot holding `key` and its value, if it is there.
    fn find(&self, memory: &impl Memory, key: &[u8]) -> Option<(u64, u64)> {
        let hash = self.hash(key);
        let mask = self.slot_count - 1;
        let mut index = hash & mask;
        for _ in 0..self.slot_count {
            let slot = self.slot(memory, index);
            if slot == EMPTY {
                return None;
            }
            if slot != TOMBSTONE
                && slot >> 48 == hash >> 48
                && let Some((segment, offset)) = slot_place(slot)
                && self.record(memory, segment, offset).is_some_and(|record| record.key == key)
            {
                return Some((index, slot));
            }
            index = (index + 1) & mask;
        }
        None
    }

    /// Puts `slot` in the first free slot of `hash`'s probe.
    fn insert_slot(&mut self, memory: &mut impl Memory, hash: u64, slot: u64) -> bool {
        let mask = self.slot_count - 1;
        let mut index = hash & mask;
        for _ in 0..self.slot_count {
            let current = self.slot(memory, index);
            if current == EMPTY || current == TOMBSTONE {
                if current == EMPTY {
                    self.occupied += 1;
                }
                self.set_slot(memory, index, slot);
                return true;
            }
            index = (index + 1) & mask;
        }
        false
    }

    /// The value and expiry of `key`.
    pub fn get<'m>(&self, memory: &'m impl Memory, key: &[u8]) -> Option<(&'m [u8], Option<u64>)> {
        let (_, slot) = self.find(memory, key)?;
        let (segment, offset) = slot_place(slot)?;
        self.record(memory, segment, offset).map(|record| (record.value, record.expires_at))
    }

    /// Whether `key` is there.
    pub fn contains(&self, memory: &impl Memory, key: &[u8]) -> bool {
        self.find(memory, key).is_some()
    }

    /// Sets `key`. On an error nothing changed.
    pub fn put(
        &mut self,
        memory: &mut impl Memory,
        key: &[u8],
        value: &[u8],
        expires_at: Option<u64>,
    ) -> Result<(), StoreError> {
        if self.index.is_empty() {
            self.index = allocate_index(memory, self.slot_count).ok_or(StoreError::OutOfMemory)?;
        }
        if (self.occupied + 1) * 4 > self.slot_count * 3 {
            // Double, or stay the size and drop the tombstones.
            let wanted = ((self.live + 1) * 2).next_power_of_two().max(MIN_SLOTS);
            if self.rebuild_index(memory, wanted).is_err() && self.occupied + 1 >= self.slot_count {
                return Err(StoreError::OutOfMemory);
            }
        }
        let hash = self.hash(key);
        let existing = self.find(memory, key);
        let (segment, offset) = self.append(memory, key, value, expires_at.unwrap_or(NO_EXPIRY))?;
        let slot = slot_value(hash, segment, offset);
        match existing {
            Some((index, old)) => {
                self.set_slot(memory, index, slot);
                self.kill(memory, old);
            }
            None => {
                if !self.insert_slot(memory, hash, slot) {
                    // Cannot happen below three-quarters full; undo.
                    self.kill(memory, slot);
                    return Err(StoreError::OutOfMemory);
                }
                self.live += 1;
            }
        }
        self.used_bytes += (key.len() + value.len()) as u64;
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, memory: &mut impl Memory, key: &[u8]) -> bool {
        let Some((index, slot)) = self.find(memory, key) else { return false };
        self.set_slot(memory, index, TOMBSTONE);
        self.live = self.live.saturating_sub(1);
        self.kill(memory, slot);
        true
    }

    /// Sets the expiry of `key` in its record; whether it was there.
    pub fn set_expiry(&mut self, memory: &mut impl Memory, key: &[u8], expires_at: Option<u64>) -> bool {
        let Some((_, slot)) = self.find(memory, key) else { return false };
        let Some((segment, offset)) = slot_place(slot) else { return false };
        let Some(block) = self.segments.get(segment).copied().flatten().map(|segment| segment.block) else {
            return false;
        };
        let expires = expires_at.unwrap_or(NO_EXPIRY);
        let sum = match self.record(memory, segment, offset) {
            Some(record) => checksum(record.key, record.value, expires),
            None => return false,
        };
        let header = &mut memory.bytes_mut(&block)[offset..offset + RECORD_HEADER];
        header[16..24].copy_from_slice(&expires.to_le_bytes());
        if self.format >= 2 {
            header[4..8].copy_from_slice(&sum.to_le_bytes());
        }
        true
    }

    /// Removes every key and gives back every block but a small index
    /// (allocated again on the next write if there is no memory now).
    pub fn clear(&mut self, memory: &mut impl Memory) {
        for block in self.blocks() {
            memory.free(block);
        }
        self.segments.clear();
        self.index.clear();
        self.active = None;
        self.occupied = 0;
        self.live = 0;
        self.used_bytes = 0;
        self.slot_count = MIN_SLOTS;
        self.index = allocate_index(memory, MIN_SLOTS).unwrap_or_default();
    }

    /// Gives back every block: the table is gone.
    pub fn release(self, memory: &mut impl Memory) {
        for block in self.blocks() {
            memory.free(block);
        }
    }

    /// Writes a record at the end of the active segment (or a new one).
    fn append(
        &mut self,
        memory: &mut impl Memory,
        key: &[u8],
        value: &[u8],
        expires: u64,
    ) -> Result<(usize, usize), StoreError> {
        let size = record_size(key.len(), value.len());
        if size > PAGE_BYTES << MAX_BLOCK_ORDER {
            return Err(StoreError::OutOfMemory);
        }
        let fits = |segment: &Segment| segment.end + size <= segment.block.size_bytes();
        let number = match self.active {
            Some(number) if self.segments[number].as_ref().is_some_and(fits) => number,
            _ => self.new_segment(memory, size)?,
        };
        let segment = self.segments[number].as_mut().ok_or(StoreError::OutOfMemory)?;
        let offset = segment.end;
        segment.end += size;
        segment.live_bytes += size;
        let block = segment.block;
        let bytes = &mut memory.bytes_mut(&block)[offset..offset + size];
        bytes[0] = LIVE;
        let sum = if self.format >= 2 { checksum(key, value, expires) } else { 0 };
        bytes[4..8].copy_from_slice(&sum.to_le_bytes());
        bytes[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
        bytes[12..16].copy_from_slice(&(value.len() as u32).to_le_bytes());
        bytes[16..24].copy_from_slice(&expires.to_le_bytes());
        bytes[RECORD_HEADER..RECORD_HEADER + key.len()].copy_from_slice(key);
        bytes[RECORD_HEADER + key.len()..RECORD_HEADER + key.len() + value.len()].copy_from_slice(value);
        Ok((number, offset))
    }

    fn new_segment(&mut self, memory: &mut impl Memory, size: usize) -> Result<usize, StoreError> {
        let in_segments: usize = self.segments.iter().flatten().map(|segment| segment.block.size_bytes()).sum();
        let mut order = if in_segments < 1 << 20 { SMALL_SEGMENT_ORDER } else { SEGMENT_ORDER };
        while PAGE_BYTES << order < size {
            order += 1;
        }
        let number = match self.segments.iter().position(Option::is_none) {
            Some(number) => number,
            None if self.segments.len() < MAX_SEGMENTS => {
                self.segments.push(None);
                self.segments.len() - 1
            }
            None => return Err(StoreError::OutOfMemory),
        };
        let block = memory.allocate(order).ok_or(StoreError::OutOfMemory)?;
        self.segments[number] = Some(Segment { block, end: 0, live_bytes: 0 });
        self.active = Some(number);
        Ok(number)
    }

    /// Marks the record `slot` points at dead, and frees or compacts its
    /// segment when little of it is left alive.
    fn kill(&mut self, memory: &mut impl Memory, slot: u64) {
        let Some((number, offset)) = slot_place(slot) else { return };
        let Some((size, length)) = self.record(memory, number, offset).map(|r| (r.size, r.key.len() + r.value.len()))
        else {
            return;
        };
        let Some(segment) = self.segments[number].as_mut() else { return };
        segment.live_bytes = segment.live_bytes.saturating_sub(size);
        let block = segment.block;
        memory.bytes_mut(&block)[offset] = DEAD;
        self.used_bytes = self.used_bytes.saturating_sub(length as u64);
        if self.active != Some(number) {
            self.tidy(memory, number);
        }
    }

    /// Frees a segment with nothing alive; compacts one under a quarter
    /// alive.
    fn tidy(&mut self, memory: &mut impl Memory, number: usize) {
        let Some(segment) = self.segments[number] else { return };
        if segment.live_bytes == 0 {
            memory.free(segment.block);
            self.segments[number] = None;
        } else if segment.live_bytes * 4 < segment.end {
            self.compact(memory, number);
        }
    }

    /// Moves a segment's live records to the active one and frees it. On
    /// running out of memory it stops, leaving the rest where they are.
    fn compact(&mut self, memory: &mut impl Memory, number: usize) {
        let Some(segment) = self.segments[number] else { return };
        let mut offset = 0;
        while offset + RECORD_HEADER <= segment.end {
            let Some(header) = memory.bytes(&segment.block).get(offset..offset + RECORD_HEADER) else { return };
            let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
            let size = record_size(word(8) as usize, word(12) as usize);
            if header[0] == LIVE {
                let Some(record) = self.record(memory, number, offset) else { return };
                let (key, value, expires_at) = (record.key.to_vec(), record.value.to_vec(), record.expires_at);
                let Some((index, slot)) = self.find(memory, &key) else { return };
                if slot_place(slot) != Some((number, offset)) {
                    return;
                }
                let Ok((to, at)) = self.append(memory, &key, &value, expires_at.unwrap_or(NO_EXPIRY)) else { return };
                self.set_slot(memory, index, slot_value(slot, to, at));
                memory.bytes_mut(&segment.block)[offset] = DEAD;
            } else if header[0] != DEAD {
                return;
            }
            offset += size;
        }
        memory.free(segment.block);
        self.segments[number] = None;
    }

    /// A new index of `slot_count` slots holding every live slot.
    fn rebuild_index(&mut self, memory: &mut impl Memory, slot_count: u64) -> Result<(), StoreError> {
        if slot_count > MAX_SLOTS {
            return Err(StoreError::OutOfMemory);
        }
        let blocks = allocate_index(memory, slot_count).ok_or(StoreError::OutOfMemory)?;
        let old = core::mem::replace(self, Table { index: blocks, slot_count, occupied: 0, ..self.clone() });
        for index in 0..old.slot_count {
            let slot = old.slot(memory, index);
            let Some((segment, offset)) = slot_place(slot).filter(|_| slot != TOMBSTONE) else { continue };
            let Some(hash) = old.record(memory, segment, offset).map(|record| self.hash(record.key)) else {
                continue;
            };
            self.insert_slot(memory, hash, slot);
        }
        for block in old.index {
            memory.free(block);
        }
        Ok(())
    }

    /// The live record in slot `index` (walking the table slot by slot):
    /// key, value, expiry.
    pub fn entry_at<'m>(&self, memory: &'m impl Memory, index: u64) -> Option<(&'m [u8], &'m [u8], Option<u64>)> {
        let slot = self.slot(memory, index);
        let (segment, offset) = slot_place(slot).filter(|_| slot != TOMBSTONE)?;
        self.record(memory, segment, offset).map(|record| (record.key, record.value, record.expires_at))
    }

    /// Slots in the index (for walking it with [`Table::entry_at`]).
    pub fn slot_count(&self) -> u64 {
        self.slot_count
    }

    /// Every key.
    pub fn keys(&self, memory: &impl Memory) -> Vec<Vec<u8>> {
        (0..self.slot_count).filter_map(|index| self.entry_at(memory, index)).map(|(key, ..)| key.to_vec()).collect()
    }

    /// SCAN as Redis walks a table: buckets in reverse-binary order, so a
    /// key there from the first call to the last is returned at least once
    /// even if the index grows between calls (a key may come twice). A
    /// bucket is every key whose probe starts at it. Returns the keys and
    /// the next cursor (0 at the end).
    pub fn scan(&self, memory: &impl Memory, cursor: u64, count: usize) -> (Vec<Vec<u8>>, u64) {
        let mask = self.slot_count - 1;
        let mut cursor = cursor & mask;
        let mut keys = Vec::new();
        loop {
            let mut index = cursor;
            for _ in 0..self.slot_count {
                let slot = self.slot(memory, index);
                if slot == EMPTY {
                    break;
                }
                if let Some((key, ..)) = self.entry_at(memory, index)
                    && self.hash(key) & mask == cursor
                {
                    keys.push(key.to_vec());
                }
                index = (index + 1) & mask;
            }
            cursor = (cursor | !mask).reverse_bits().wrapping_add(1).reverse_bits();
            if cursor == 0 || keys.len() >= count {
                return (keys, cursor);
            }
        }
    }

    /// The directory a next instance restores the table from: the magic,
    /// the format, the hash keys, the counts, the index's blocks and the
    /// segments (physical address, order, bytes written, bytes alive; a
    /// zero address for a free number). Little-endian.
    pub fn directory(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(DIRECTORY_MAGIC);
        let words = [
            u64::from(self.format),
            self.hash_keys[0],
            self.hash_keys[1],
            self.slot_count,
            self.occupied,
            self.live,
            self.used_bytes,
            self.active.map_or(u64::MAX, |active| active as u64),
            self.index.first().map_or(0, |block| u64::from(block.order)),
            self.index.len() as u64,
            self.segments.len() as u64,
        ];
        words.iter().for_each(|word| out.extend_from_slice(&word.to_le_bytes()));
        for block in &self.index {
            out.extend_from_slice(&block.physical.to_le_bytes());
        }
        for segment in &self.segments {
            let (physical, order, end, live) = segment.map_or((0, 0, 0, 0), |segment| {
                (segment.block.physical, u64::from(segment.block.order), segment.end as u64, segment.live_bytes as u64)
            });
            [physical, order, end, live].iter().for_each(|word| out.extend_from_slice(&word.to_le_bytes()));
        }
        out
    }

    /// Whether `bytes` start like a directory.
    pub fn is_directory(bytes: &[u8]) -> bool {
        bytes.starts_with(DIRECTORY_MAGIC)
    }

    /// The table a directory describes, its blocks restored from
    /// `memory`. Every count is checked before a block is restored; on an
    /// error the blocks restored so far are freed.
    pub fn from_directory(memory: &mut impl Memory, bytes: &[u8]) -> Result<Table, TableError> {
        let rest = bytes.strip_prefix(DIRECTORY_MAGIC).ok_or(TableError::NotATable)?;
        let mut words = rest.chunks_exact(8).map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        if rest.len() % 8 != 0 {
            return Err(TableError::Malformed("length"));
        }
        let mut next = || words.next().ok_or(TableError::Malformed("too short"));
        let format = next()?;
        let hash_keys = [next()?, next()?];
        let (slot_count, occupied, live, used_bytes, active) = (next()?, next()?, next()?, next()?, next()?);
        let (index_order, index_blocks, segment_count) = (next()?, next()?, next()?);
        let format = u32::try_from(format).map_err(|_| TableError::UnknownFormat(u32::MAX))?;
        if !(1..=NEWEST_FORMAT).contains(&format) {
            return Err(TableError::UnknownFormat(format));
        }
        if !slot_count.is_power_of_two() || !(MIN_SLOTS..=MAX_SLOTS).contains(&slot_count) {
            return Err(TableError::Malformed("slot count"));
        }
        if occupied >= slot_count || live > occupied {
            return Err(TableError::Malformed("slot counts"));
        }
        if index_order > u64::from(MAX_BLOCK_ORDER)
            || index_blocks.checked_mul((PAGE_BYTES as u64) << index_order) != Some(slot_count * 8)
        {
            return Err(TableError::Malformed("index blocks"));
        }
        if segment_count > MAX_SEGMENTS as u64 {
            return Err(TableError::Malformed("segment count"));
        }
        let wanted = index_blocks + segment_count * 4;
        if (rest.len() / 8) as u64 != 11 + wanted {
            return Err(TableError::Malformed("length"));
        }
        let mut table = Table {
            format,
            hash_keys,
            segments: Vec::new(),
            active: None,
            index: Vec::new(),
            slot_count,
            occupied,
            live,
            used_bytes,
        };
        let result = (|| {
            for _ in 0..index_blocks {
                let physical = next()?;
                let block = memory.restore(physical, index_order as u32).ok_or(TableError::CannotRestore(physical))?;
                table.index.push(block);
            }
            for _ in 0..segment_count {
                let (physical, order, end, live_bytes) = (next()?, next()?, next()?, next()?);
                if physical == 0 {
                    table.segments.push(None);
                    continue;
                }
                if order > u64::from(MAX_BLOCK_ORDER) || end > (PAGE_BYTES as u64) << order || live_bytes > end {
                    return Err(TableError::Malformed("segment"));
                }
                let block = memory.restore(physical, order as u32).ok_or(TableError::CannotRestore(physical))?;
                table.segments.push(Some(Segment { block, end: end as usize, live_bytes: live_bytes as usize }));
            }
            if active != u64::MAX {
                let active = usize::try_from(active).map_err(|_| TableError::Malformed("active segment"))?;
                if table.segments.get(active).is_none_or(Option::is_none) {
                    return Err(TableError::Malformed("active segment"));
                }
                table.active = Some(active);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(table),
            Err(error) => {
                table.release(memory);
                Err(error)
            }
        }
    }
}

/// Zeroed index blocks for `slot_count` slots: one block while it fits in
/// 1 MiB, then 1 MiB blocks.
fn allocate_index(memory: &mut impl Memory, slot_count: u64) -> Option<Vec<Block>> {
    let bytes = slot_count as usize * 8;
    let (order, count) = if bytes <= PAGE_BYTES << INDEX_BLOCK_ORDER {
        ((0..=INDEX_BLOCK_ORDER).find(|order| PAGE_BYTES << order >= bytes)?, 1)
    } else {
        (INDEX_BLOCK_ORDER, bytes / (PAGE_BYTES << INDEX_BLOCK_ORDER))
    };
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        match memory.allocate(order) {
            Some(block) => blocks.push(block),
            None => {
                blocks.into_iter().for_each(|block| memory.free(block));
                return None;
            }
        }
    }
    Some(blocks)
}

/// Blocks in ordinary memory, named by made-up physical addresses that
/// stay restorable after a table is dropped (as preserved memory is
/// across an update): the host tests' and fuzz targets' memory.
#[derive(Debug, Default)]
pub struct HeapMemory {
    blocks: alloc::collections::BTreeMap<u64, Vec<u8>>,
    next_physical: u64,
    /// Bytes it may hand out (0: no limit).
    pub limit_bytes: usize,
}

impl HeapMemory {
    /// Memory with no limit.
    pub fn new() -> HeapMemory {
        HeapMemory::default()
    }

    /// Bytes in blocks now.
    pub fn in_use(&self) -> usize {
        self.blocks.values().map(Vec::len).sum()
    }

    /// The block at `physical`'s bytes, to damage in a test.
    pub fn raw_mut(&mut self, physical: u64) -> Option<&mut [u8]> {
        self.blocks.get_mut(&physical).map(Vec::as_mut_slice)
    }
}

impl Memory for HeapMemory {
    fn allocate(&mut self, order: u32) -> Option<Block> {
        let size = PAGE_BYTES << order;
        if self.limit_bytes != 0 && self.in_use() + size > self.limit_bytes {
            return None;
        }
        let physical = (self.next_physical.max(1 << 30) + size as u64 - 1) & !(size as u64 - 1);
        self.next_physical = physical + size as u64;
        self.blocks.insert(physical, alloc::vec![0; size]);
        Some(Block { address: physical, physical, order })
    }

    fn restore(&mut self, physical: u64, order: u32) -> Option<Block> {
        let block = self.blocks.get(&physical)?;
        (block.len() == PAGE_BYTES << order).then_some(Block { address: physical, physical, order })
    }

    fn free(&mut self, block: Block) {
        self.blocks.remove(&block.physical);
    }

    fn bytes(&self, block: &Block) -> &[u8] {
        self.blocks.get(&block.physical).map_or(&[], Vec::as_slice)
    }

    fn bytes_mut(&mut self, block: &Block) -> &mut [u8] {
        self.blocks.get_mut(&block.physical).map_or(&mut [], Vec::as_mut_slice)
    }
}
