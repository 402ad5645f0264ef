//! The preserved-memory map: writing the chunk list at finalisation and walking it after the jump.
//!
//! # Wire format
//!
//! The map is a singly linked list of 4096-byte chunks in ordinary memory,
//! all fields native-endian:
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 8 | `next`: physical address of the next chunk, 0 ends the list |
//! | 8 | 4 | `order` of every bitmap in this chunk |
//! | 12 | 4 | `element_count`: entries used, at most 255 |
//! | 16 + 16·i | 8 | entry i `phys_start`: first address the bitmap covers |
//! | 24 + 16·i | 8 | entry i `bitmap`: physical address of the 512-byte bitmap |
//!
//! Bit `b` of an entry's bitmap (bit `b % 64` of native-endian word `b / 64`)
//! preserves the folio of the chunk's order at `phys_start + (b << (order + 12))`.
//! The writer emits one or more chunks per order, orders ascending,
//! entries by ascending `phys_start`; the reader accepts any order.
//!
//! # Reading hostile data
//!
//! [`IncomingPreservations::walk`] reads bytes the previous kernel wrote and
//! trusts none of them: it walks the list once, bounded by a chunk limit and
//! a visited set, and checks every rule listed on [`ChunkListError`].
#![deny(clippy::arithmetic_side_effects)]

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::bitmap::{
    BITMAP_BITS_SHIFT, BITMAP_SIZE_BYTES, BITS_PER_BITMAP, BitmapIndex, BitmapKey, BitmapSlot, BitmapWords, Folio,
    FolioRuleError, FolioRun, IndexFolios, IndexRuns, MAX_ORDER, ORDER_COUNT, WORDS_PER_BITMAP, bitmap_span_bytes,
    check_folio, count_bits, folio_shift, folio_size_bytes, next_bit_run, read_bitmap,
};
use crate::memory::{
    AccessError, HandoverMemory, MetadataAllocator, PAGE_SIZE_BYTES, PHYS_ADDRESS_LIMIT, PhysMemory, PhysRange,
    normalize_ranges, range_inside_ram,
};
use crate::tracker::PreservationTracker;

/// `value >> shift`, 0 when the shift is 64 or more.
fn shr(value: u64, shift: u32) -> u64 {
    value.checked_shr(shift).unwrap_or(0)
}

/// `value << shift`, saturating instead of losing bits.
fn shl(value: u64, shift: u32) -> u64 {
    match value.checked_shl(shift) {
        Some(shifted) if shifted.checked_shr(shift) == Some(value) => shifted,
        _ => u64::MAX,
    }
}

/// Size of one chunk of the list.
pub const CHUNK_SIZE_BYTES: u64 = 4096;

/// Size of the chunk header (`next`, `order`, `element_count`).
pub const CHUNK_HEADER_SIZE_BYTES: u64 = 16;

/// Size of one chunk entry (`phys_start`, `bitmap`).
pub const CHUNK_ENTRY_SIZE_BYTES: u64 = 16;

/// Offset of `next` in a chunk.
pub const CHUNK_NEXT_OFFSET: usize = 0;
/// Offset of `order` in a chunk.
pub const CHUNK_ORDER_OFFSET: usize = 8;
/// Offset of `element_count` in a chunk.
pub const CHUNK_COUNT_OFFSET: usize = 12;
/// Offset of `phys_start` in an entry.
pub const ENTRY_PHYS_START_OFFSET: usize = 0;
/// Offset of `bitmap` in an entry.
pub const ENTRY_BITMAP_OFFSET: usize = 8;
/// Offset of entry `index` in a chunk.
pub const fn entry_offset(index: usize) -> usize {
    (CHUNK_HEADER_SIZE_BYTES as usize).saturating_add(index.saturating_mul(CHUNK_ENTRY_SIZE_BYTES as usize))
}

/// Entries that fit in one chunk: `(4096 - 16) / 16`.
pub const ENTRIES_PER_CHUNK: u32 = 255;

/// Default bound on the chunks a walk follows: 65536 chunks describe
/// almost 17 million bitmaps, 256 TiB of order-0 pages.
pub const DEFAULT_MAX_CHUNK_COUNT: u64 = 65536;

/// `CHUNK_SIZE_BYTES` as a buffer length.
const CHUNK_BYTES: usize = CHUNK_SIZE_BYTES as usize;

/// Why the chunk list could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerializeError {
    /// The metadata allocator has no page for a chunk.
    OutOfMetadataMemory,
    /// A chunk could not be written.
    Access(AccessError),
}

impl fmt::Display for SerializeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMetadataMemory => write!(formatter, "out of memory for KHO chunk pages"),
            Self::Access(error) => write!(formatter, "writing a KHO chunk failed: {error}"),
        }
    }
}

impl core::error::Error for SerializeError {}

/// The written chunk list: its head and the pages it occupies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SerializedChunks {
    head_phys: u64,
    chunk_pages: Vec<u64>,
    bitmap_count: u64,
}

impl SerializedChunks {
    /// Physical address of the first chunk, 0 when nothing is preserved.
    /// This is the value of the root FDT's `preserved-memory-map`.
    pub fn head_phys(&self) -> u64 {
        self.head_phys
    }

    /// Number of chunk pages.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_pages.len() as u64
    }

    /// Physical addresses of the chunk pages, in list order.
    pub fn chunk_pages(&self) -> &[u64] {
        &self.chunk_pages
    }

    /// Number of bitmap entries written.
    pub fn bitmap_count(&self) -> u64 {
        self.bitmap_count
    }

    /// Give the chunk pages back (on abort). The bitmaps stay with the tracker.
    pub fn free<M: MetadataAllocator + ?Sized>(self, memory: &mut M) {
        for page in self.chunk_pages {
            memory.free(page, CHUNK_SIZE_BYTES, CHUNK_SIZE_BYTES);
        }
    }
}

/// Write the tracker's bitmaps as a chunk list in freshly allocated pages.
///
/// The bitmaps are referenced in place, not copied. On failure every page
/// allocated so far is freed again.
pub fn serialize<M: HandoverMemory + ?Sized>(
    tracker: &PreservationTracker,
    memory: &mut M,
) -> Result<SerializedChunks, SerializeError> {
    // Group entries into chunks: one or more per order, 255 entries each.
    let mut chunks: Vec<(u32, Vec<(u64, u64)>)> = Vec::new();
    for (order, phys_start, bitmap_phys) in tracker.bitmap_entries() {
        match chunks.last_mut() {
            Some((chunk_order, entries)) if *chunk_order == order && entries.len() < ENTRIES_PER_CHUNK as usize => {
                entries.push((phys_start, bitmap_phys));
            }
            _ => chunks.push((order, vec![(phys_start, bitmap_phys)])),
        }
    }
    let mut serialized = SerializedChunks { head_phys: 0, chunk_pages: Vec::new(), bitmap_count: 0 };
    for _ in &chunks {
        match memory.allocate_zeroed(CHUNK_SIZE_BYTES, CHUNK_SIZE_BYTES) {
            Some(page) => serialized.chunk_pages.push(page),
            None => {
                serialized.free(memory);
                return Err(SerializeError::OutOfMetadataMemory);
            }
        }
    }
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    for (position, (order, entries)) in chunks.iter().enumerate() {
        let page = serialized.chunk_pages.get(position).copied().unwrap_or(0);
        let next = position.checked_add(1).and_then(|next| serialized.chunk_pages.get(next)).copied().unwrap_or(0);
        encode_chunk(&mut buffer, next, *order, entries);
        if let Err(error) = memory.write(page, &buffer) {
            serialized.free(memory);
            return Err(SerializeError::Access(error));
        }
        serialized.bitmap_count = serialized.bitmap_count.saturating_add(entries.len() as u64);
    }
    serialized.head_phys = serialized.chunk_pages.first().copied().unwrap_or(0);
    Ok(serialized)
}

/// Fill `buffer` (one chunk) with a header and entries.
fn encode_chunk(buffer: &mut [u8], next: u64, order: u32, entries: &[(u64, u64)]) {
    buffer.fill(0);
    let element_count = u32::try_from(entries.len()).unwrap_or(ENTRIES_PER_CHUNK);
    let mut put = |offset: usize, bytes: &[u8]| {
        if let Some(field) = offset.checked_add(bytes.len()).and_then(|end| buffer.get_mut(offset..end)) {
            field.copy_from_slice(bytes);
        }
    };
    put(CHUNK_NEXT_OFFSET, &next.to_ne_bytes());
    put(CHUNK_ORDER_OFFSET, &order.to_ne_bytes());
    put(CHUNK_COUNT_OFFSET, &element_count.to_ne_bytes());
    for (index, (phys_start, bitmap_phys)) in entries.iter().enumerate().take(ENTRIES_PER_CHUNK as usize) {
        let entry = entry_offset(index);
        put(entry.saturating_add(ENTRY_PHYS_START_OFFSET), &phys_start.to_ne_bytes());
        put(entry.saturating_add(ENTRY_BITMAP_OFFSET), &bitmap_phys.to_ne_bytes());
    }
}

/// Why an incoming chunk list was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkListError {
    /// A chunk address is not page-aligned.
    MisalignedChunk {
        /// Chunk address.
        phys: u64,
    },
    /// A chunk page is not entirely inside RAM.
    ChunkOutsideRam {
        /// Chunk address.
        phys: u64,
    },
    /// The list comes back to a chunk it already visited.
    ChunkCycle {
        /// The chunk reached twice.
        phys: u64,
    },
    /// The list is longer than the walk limit.
    TooManyChunks {
        /// The limit that was reached.
        limit: u64,
    },
    /// A chunk's order is larger than [`MAX_ORDER`].
    BadOrder {
        /// Chunk address.
        chunk_phys: u64,
        /// The order it claims.
        order: u32,
    },
    /// A chunk claims more than 255 entries.
    TooManyElements {
        /// Chunk address.
        chunk_phys: u64,
        /// The count it claims.
        element_count: u32,
    },
    /// An entry's `phys_start` is not a multiple of the span one bitmap of
    /// its order covers (`4096 << (order + 12)`).
    MisalignedPhysStart {
        /// The entry's `phys_start`.
        phys_start: u64,
        /// The chunk's order.
        order: u32,
    },
    /// An entry's `phys_start` is at or above [`PHYS_ADDRESS_LIMIT`].
    PhysStartTooLarge {
        /// The entry's `phys_start`.
        phys_start: u64,
    },
    /// A bitmap address is not 512-byte aligned.
    MisalignedBitmap {
        /// Bitmap address.
        bitmap_phys: u64,
    },
    /// A bitmap is not entirely inside RAM.
    BitmapOutsideRam {
        /// Bitmap address.
        bitmap_phys: u64,
    },
    /// A bitmap lies in one of the chunk pages.
    BitmapOverlapsChunk {
        /// Bitmap address.
        bitmap_phys: u64,
    },
    /// Two entries point at the same bitmap.
    DuplicateBitmap {
        /// Bitmap address.
        bitmap_phys: u64,
    },
    /// Two entries describe the same order and `phys_start`.
    DuplicateSpan {
        /// Order of both entries.
        order: u32,
        /// `phys_start` of both entries.
        phys_start: u64,
    },
    /// A preserved folio is not entirely inside RAM.
    FolioOutsideRam {
        /// The folio.
        folio: Folio,
    },
    /// Two preserved folios of different orders share memory.
    OverlappingFolios {
        /// The smaller folio.
        smaller: Folio,
        /// The larger folio that contains it.
        larger: Folio,
    },
    /// A chunk page or bitmap lies inside a preserved folio.
    MetadataInsideFolio {
        /// Address of the chunk or bitmap.
        metadata_phys: u64,
        /// The folio that contains it.
        folio: Folio,
    },
    /// Reading the list failed.
    Access(AccessError),
}

impl fmt::Display for ChunkListError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MisalignedChunk { phys } => {
                write!(formatter, "chunk {phys:#x} is not page-aligned")
            }
            Self::ChunkOutsideRam { phys } => write!(formatter, "chunk {phys:#x} is outside RAM"),
            Self::ChunkCycle { phys } => write!(formatter, "chunk {phys:#x} is reached twice"),
            Self::TooManyChunks { limit } => write!(formatter, "more than {limit} chunks"),
            Self::BadOrder { chunk_phys, order } => {
                write!(formatter, "chunk {chunk_phys:#x} has order {order} > {MAX_ORDER}")
            }
            Self::TooManyElements { chunk_phys, element_count } => {
                write!(formatter, "chunk {chunk_phys:#x} claims {element_count} entries (at most {ENTRIES_PER_CHUNK})")
            }
            Self::MisalignedPhysStart { phys_start, order } => {
                write!(formatter, "phys_start {phys_start:#x} is not aligned to an order-{order} bitmap span")
            }
            Self::PhysStartTooLarge { phys_start } => {
                write!(formatter, "phys_start {phys_start:#x} is beyond the 52-bit limit")
            }
            Self::MisalignedBitmap { bitmap_phys } => {
                write!(formatter, "bitmap {bitmap_phys:#x} is not 512-byte aligned")
            }
            Self::BitmapOutsideRam { bitmap_phys } => {
                write!(formatter, "bitmap {bitmap_phys:#x} is outside RAM")
            }
            Self::BitmapOverlapsChunk { bitmap_phys } => {
                write!(formatter, "bitmap {bitmap_phys:#x} lies in a chunk page")
            }
            Self::DuplicateBitmap { bitmap_phys } => {
                write!(formatter, "bitmap {bitmap_phys:#x} is listed twice")
            }
            Self::DuplicateSpan { order, phys_start } => {
                write!(formatter, "two order-{order} bitmaps start at {phys_start:#x}")
            }
            Self::FolioOutsideRam { folio } => {
                write!(formatter, "preserved order-{} folio at {:#x} is outside RAM", folio.order, folio.phys)
            }
            Self::OverlappingFolios { smaller, larger } => write!(
                formatter,
                "preserved order-{} folio at {:#x} overlaps order-{} folio at {:#x}",
                smaller.order, smaller.phys, larger.order, larger.phys
            ),
            Self::MetadataInsideFolio { metadata_phys, folio } => write!(
                formatter,
                "metadata at {metadata_phys:#x} lies inside preserved order-{} folio at {:#x}",
                folio.order, folio.phys
            ),
            Self::Access(error) => write!(formatter, "reading the chunk list failed: {error}"),
        }
    }
}

impl core::error::Error for ChunkListError {}

impl From<AccessError> for ChunkListError {
    fn from(error: AccessError) -> Self {
        Self::Access(error)
    }
}

/// Why a folio or range could not be taken from the incoming preservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// The order is larger than [`MAX_ORDER`].
    OrderTooLarge {
        /// The order asked for.
        order: u32,
    },
    /// The address is not aligned to the folio size, or a range is not
    /// page-aligned.
    Misaligned {
        /// The address asked for.
        phys: u64,
    },
    /// The folio or range is empty, wraps or ends above [`PHYS_ADDRESS_LIMIT`].
    InvalidRange {
        /// The address asked for.
        phys: u64,
    },
    /// No such folio was handed over, or it was taken already.
    NotPreserved {
        /// Folio address.
        phys: u64,
        /// Folio order.
        order: u32,
    },
    /// Part of the range is not covered by handed-over folios.
    RangeNotPreserved {
        /// First uncovered byte.
        phys: u64,
    },
    /// A handed-over folio crosses a boundary of the range.
    FolioStraddlesRange {
        /// That folio.
        existing: Folio,
    },
    /// A bitmap could not be read or written.
    Access(AccessError),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrderTooLarge { order } => write!(formatter, "order {order} is too large"),
            Self::Misaligned { phys } => write!(formatter, "{phys:#x} is misaligned"),
            Self::InvalidRange { phys } => write!(formatter, "invalid memory range at {phys:#x}"),
            Self::NotPreserved { phys, order } => {
                write!(formatter, "no handed-over order-{order} folio at {phys:#x}")
            }
            Self::RangeNotPreserved { phys } => {
                write!(formatter, "memory at {phys:#x} was not handed over")
            }
            Self::FolioStraddlesRange { existing } => write!(
                formatter,
                "handed-over order-{} folio at {:#x} crosses the range boundary",
                existing.order, existing.phys
            ),
            Self::Access(error) => write!(formatter, "bitmap access failed: {error}"),
        }
    }
}

impl core::error::Error for RestoreError {}

impl From<AccessError> for RestoreError {
    fn from(error: AccessError) -> Self {
        Self::Access(error)
    }
}

/// Native-endian `u64` at `offset` of `bytes` (zero if out of bounds, which
/// callers rule out by construction).
fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0_u8; 8];
    if let Some(source) = offset.checked_add(8).and_then(|end| bytes.get(offset..end)) {
        word.copy_from_slice(source);
    }
    u64::from_ne_bytes(word)
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0_u8; 4];
    if let Some(source) = offset.checked_add(4).and_then(|end| bytes.get(offset..end)) {
        word.copy_from_slice(source);
    }
    u32::from_ne_bytes(word)
}

/// The validated preserved-memory map handed over by the previous kernel.
///
/// It keeps the bitmaps in place (in the previous kernel's metadata memory,
/// which the caller must keep reserved until it is consumed) and answers
/// queries by looking bits up there; `take` clears a bit so that every
/// folio is restored at most once.
#[derive(Debug, Clone, Default)]
pub struct IncomingPreservations {
    index: BitmapIndex,
    chunk_pages: Vec<u64>,
}

impl IncomingPreservations {
    /// Nothing handed over.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Walk and validate the chunk list at `head_phys` (0: empty) with the
    /// default chunk limit.
    pub fn walk<M: PhysMemory + ?Sized>(memory: &M, head_phys: u64, ram: &[PhysRange]) -> Result<Self, ChunkListError> {
        Self::walk_with_limit(memory, head_phys, ram, DEFAULT_MAX_CHUNK_COUNT)
    }

    /// Walk and validate the chunk list at `head_phys`, following at most
    /// `max_chunk_count` chunks.
    pub fn walk_with_limit<M: PhysMemory + ?Sized>(
        memory: &M,
        head_phys: u64,
        ram: &[PhysRange],
        max_chunk_count: u64,
    ) -> Result<Self, ChunkListError> {
        let ram = normalize_ranges(ram);
        let mut incoming = Self::empty();
        let mut visited = BTreeSet::new();
        let mut bitmap_addresses = BTreeSet::new();
        let mut chunk = vec![0_u8; CHUNK_BYTES];
        let mut chunk_phys = head_phys;
        while chunk_phys != 0 {
            if visited.len() as u64 >= max_chunk_count {
                return Err(ChunkListError::TooManyChunks { limit: max_chunk_count });
            }
            if !chunk_phys.is_multiple_of(PAGE_SIZE_BYTES) {
                return Err(ChunkListError::MisalignedChunk { phys: chunk_phys });
            }
            let page = PhysRange::from_start_size(chunk_phys, CHUNK_SIZE_BYTES)
                .ok_or(ChunkListError::ChunkOutsideRam { phys: chunk_phys })?;
            if !range_inside_ram(&ram, &page) {
                return Err(ChunkListError::ChunkOutsideRam { phys: chunk_phys });
            }
            if !visited.insert(chunk_phys) {
                return Err(ChunkListError::ChunkCycle { phys: chunk_phys });
            }
            memory.read(chunk_phys, &mut chunk)?;
            let next = u64_at(&chunk, CHUNK_NEXT_OFFSET);
            let order = u32_at(&chunk, CHUNK_ORDER_OFFSET);
            let element_count = u32_at(&chunk, CHUNK_COUNT_OFFSET);
            if order > MAX_ORDER {
                return Err(ChunkListError::BadOrder { chunk_phys, order });
            }
            if element_count > ENTRIES_PER_CHUNK {
                return Err(ChunkListError::TooManyElements { chunk_phys, element_count });
            }
            let entries = chunk.get(CHUNK_HEADER_SIZE_BYTES as usize..).unwrap_or_default();
            for entry in entries.chunks_exact(CHUNK_ENTRY_SIZE_BYTES as usize).take(element_count as usize) {
                let phys_start = u64_at(entry, ENTRY_PHYS_START_OFFSET);
                let bitmap_phys = u64_at(entry, ENTRY_BITMAP_OFFSET);
                incoming.add_entry(memory, &ram, &mut bitmap_addresses, order, phys_start, bitmap_phys)?;
            }
            incoming.chunk_pages.push(chunk_phys);
            chunk_phys = next;
        }
        for bitmap_phys in &bitmap_addresses {
            if visited.contains(&(bitmap_phys & !(PAGE_SIZE_BYTES.wrapping_sub(1)))) {
                return Err(ChunkListError::BitmapOverlapsChunk { bitmap_phys: *bitmap_phys });
            }
        }
        incoming.check_no_overlaps(memory)?;
        incoming.check_metadata_outside_folios(memory)?;
        Ok(incoming)
    }

    /// Validate one entry, read its bitmap and index it.
    fn add_entry<M: PhysMemory + ?Sized>(
        &mut self,
        memory: &M,
        ram: &[PhysRange],
        bitmap_addresses: &mut BTreeSet<u64>,
        order: u32,
        phys_start: u64,
        bitmap_phys: u64,
    ) -> Result<(), ChunkListError> {
        let span = bitmap_span_bytes(order);
        if phys_start >= PHYS_ADDRESS_LIMIT {
            return Err(ChunkListError::PhysStartTooLarge { phys_start });
        }
        if phys_start & span.wrapping_sub(1) != 0 {
            return Err(ChunkListError::MisalignedPhysStart { phys_start, order });
        }
        if !bitmap_phys.is_multiple_of(BITMAP_SIZE_BYTES) {
            return Err(ChunkListError::MisalignedBitmap { bitmap_phys });
        }
        let bitmap_range = PhysRange::from_start_size(bitmap_phys, BITMAP_SIZE_BYTES)
            .ok_or(ChunkListError::BitmapOutsideRam { bitmap_phys })?;
        if !range_inside_ram(ram, &bitmap_range) {
            return Err(ChunkListError::BitmapOutsideRam { bitmap_phys });
        }
        if !bitmap_addresses.insert(bitmap_phys) {
            return Err(ChunkListError::DuplicateBitmap { bitmap_phys });
        }
        let key = BitmapKey { order, number: shr(phys_start, folio_shift(order).saturating_add(BITMAP_BITS_SHIFT)) };
        if self.index.map.contains_key(&key) {
            return Err(ChunkListError::DuplicateSpan { order, phys_start });
        }
        let words = read_bitmap(memory, bitmap_phys)?;
        let set_bit_count = count_bits(&words, 0, crate::bitmap::BITS_PER_BITMAP);
        // Folios must lie in RAM. When the whole span does, no bit needs
        // looking at; otherwise check each run of set bits.
        let span_range = PhysRange::new(phys_start, phys_start.saturating_add(span));
        if set_bit_count != 0 && !range_inside_ram(ram, &span_range) {
            let shift = folio_shift(order);
            let mut bit = 0;
            while let Some((start, end)) = next_bit_run(&words, bit, crate::bitmap::BITS_PER_BITMAP) {
                bit = end;
                let run_start = phys_start.saturating_add(start << shift);
                let run_end = phys_start.saturating_add(end << shift);
                if range_inside_ram(ram, &PhysRange::new(run_start, run_end)) {
                    continue;
                }
                let mut folio_phys = run_start;
                while folio_phys < run_end {
                    let folio = Folio { phys: folio_phys, order };
                    if check_folio(folio_phys, order).is_err() || !range_inside_ram(ram, &folio.range()) {
                        return Err(ChunkListError::FolioOutsideRam { folio });
                    }
                    folio_phys = folio_phys.saturating_add(folio_size_bytes(order));
                }
            }
        }
        self.index.insert(
            key,
            BitmapSlot { phys: bitmap_phys, set_bit_count: u32::try_from(set_bit_count).unwrap_or(u32::MAX) },
        );
        Ok(())
    }

    /// Reject folios of different orders that share memory. A bitmap's
    /// span lies inside the span of exactly one bitmap of each larger order,
    /// so each bitmap is checked against that one per larger order present:
    /// the larger bitmap's folios over the span, then the smaller bitmap's
    /// bits under them. Bitmaps come by order then address, so the last
    /// bitmap read per larger order is kept and reused; the smaller one is
    /// read only when some larger folio lies over it, and a full or empty
    /// bitmap is never read (its count says what it holds). The cost grows
    /// with the bitmaps times the orders present, in lookups rather than
    /// reads. (Searching and reading the larger bitmaps again for every
    /// pair made the 64 full bitmaps of a gigabyte of order-0 pages the
    /// largest part of deserialising.)
    fn check_no_overlaps<M: PhysMemory + ?Sized>(&self, memory: &M) -> Result<(), ChunkListError> {
        let orders: Vec<u32> = self.index.orders_present().collect();
        let mut last_read: Vec<Option<(u64, BitmapWords)>> = vec![None; orders.len()];
        for (key, slot) in &self.index.map {
            if slot.set_bit_count == 0 {
                continue;
            }
            let span_start = key.phys_start();
            let span_end = span_start.saturating_add(bitmap_span_bytes(key.order));
            let small_shift = folio_shift(key.order);
            let mut small_words = None;
            for (&larger, cached) in orders.iter().zip(last_read.iter_mut()).filter(|(order, _)| **order > key.order) {
                let large_shift = folio_shift(larger);
                let large_key =
                    BitmapKey { order: larger, number: shr(span_start, large_shift.saturating_add(BITMAP_BITS_SHIFT)) };
                let Some(large_slot) = self.index.map.get(&large_key).filter(|large| large.set_bit_count != 0) else {
                    continue;
                };
                let large_words = match cached {
                    Some((number, words)) if *number == large_key.number => words,
                    _ => &mut cached.insert((large_key.number, large_slot.words(memory, 0, WORDS_PER_BITMAP - 1)?)).1,
                };
                let large_base = large_key.number << BITMAP_BITS_SHIFT;
                let first = shr(span_start, large_shift).saturating_sub(large_base);
                let end = span_end.div_ceil(folio_size_bytes(larger)).saturating_sub(large_base).min(BITS_PER_BITMAP);
                let mut bit = first;
                while let Some((start, stop)) = next_bit_run(large_words, bit, end) {
                    bit = stop;
                    // The smaller bits under these larger folios.
                    let low = shl(large_base.saturating_add(start), large_shift).max(span_start);
                    let high = shl(large_base.saturating_add(stop), large_shift).min(span_end);
                    let words = match &small_words {
                        Some(words) => words,
                        None => small_words.insert(slot.words(memory, 0, WORDS_PER_BITMAP - 1)?),
                    };
                    let low_bit = shr(low.saturating_sub(span_start), small_shift);
                    let high_bit = shr(high.saturating_sub(span_start), small_shift);
                    if let Some((found, _)) = next_bit_run(words, low_bit, high_bit) {
                        let smaller =
                            Folio { phys: span_start.saturating_add(shl(found, small_shift)), order: key.order };
                        let larger_mask = folio_size_bytes(larger).wrapping_sub(1);
                        return Err(ChunkListError::OverlappingFolios {
                            smaller,
                            larger: Folio { phys: smaller.phys & !larger_mask, order: larger },
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Reject chunk pages and bitmaps that lie inside a preserved folio.
    /// Folios are whole pages, so each page is looked up once (bitmaps are
    /// packed eight to a page).
    fn check_metadata_outside_folios<M: PhysMemory + ?Sized>(&self, memory: &M) -> Result<(), ChunkListError> {
        let mut checked_pages = BTreeSet::new();
        for metadata in self.metadata_ranges() {
            let page = metadata.start & !(PAGE_SIZE_BYTES - 1);
            if !checked_pages.insert(page) {
                continue;
            }
            if let Some(folio) = self.folio_containing(memory, metadata.start)? {
                return Err(ChunkListError::MetadataInsideFolio { metadata_phys: metadata.start, folio });
            }
        }
        Ok(())
    }

    /// Physical addresses of the chunk pages, in list order.
    pub fn chunk_pages(&self) -> &[u64] {
        &self.chunk_pages
    }

    /// Number of chunk pages.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_pages.len() as u64
    }

    /// Number of bitmaps.
    pub fn bitmap_count(&self) -> u64 {
        self.index.map.len() as u64
    }

    /// `(order, phys_start, bitmap address)` of every bitmap, by order then address.
    pub fn bitmap_entries(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.index.map.iter().map(|(key, slot)| (key.order, key.phys_start(), slot.phys))
    }

    /// Every piece of handover metadata (4096-byte chunk pages and 512-byte
    /// bitmaps): memory to keep reserved until the preservations are consumed.
    pub fn metadata_ranges(&self) -> impl Iterator<Item = PhysRange> + '_ {
        let chunks = self.chunk_pages.iter().map(|page| PhysRange::new(*page, page.saturating_add(CHUNK_SIZE_BYTES)));
        let bitmaps =
            self.index.map.values().map(|slot| PhysRange::new(slot.phys, slot.phys.saturating_add(BITMAP_SIZE_BYTES)));
        chunks.chain(bitmaps)
    }

    /// Folios not yet taken.
    pub fn remaining_folio_count(&self) -> u64 {
        self.index.folio_count()
    }

    /// Folios not yet taken, per order (index = order).
    pub fn folio_counts(&self) -> [u64; ORDER_COUNT] {
        self.index.folios_per_order
    }

    /// Bytes of folios not yet taken.
    pub fn remaining_bytes(&self) -> u64 {
        self.index.preserved_bytes()
    }

    /// Every folio not yet taken, by order then address.
    pub fn folios<'a, M: PhysMemory + ?Sized>(
        &'a self,
        memory: &'a M,
    ) -> impl Iterator<Item = Result<Folio, AccessError>> + 'a {
        IndexFolios::new(memory, &self.index)
    }

    /// Maximal runs of consecutive folios of one order, by order then
    /// address; whole bitmap words are tested at once, so the cost grows
    /// with the number of bitmaps and runs, not with bytes preserved.
    pub fn runs<'a, M: PhysMemory + ?Sized>(
        &'a self,
        memory: &'a M,
    ) -> impl Iterator<Item = Result<FolioRun, AccessError>> + 'a {
        IndexRuns::new(memory, &self.index)
    }

    /// Whether exactly the folio of `order` at `phys` was handed over and
    /// not taken yet.
    pub fn contains<M: PhysMemory + ?Sized>(&self, memory: &M, phys: u64, order: u32) -> Result<bool, AccessError> {
        if check_folio(phys, order).is_err() {
            return Ok(false);
        }
        self.index.test(memory, phys, order)
    }

    /// The handed-over folio (not yet taken) that contains `phys`, if any.
    pub fn folio_containing<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        phys: u64,
    ) -> Result<Option<Folio>, AccessError> {
        if phys >= PHYS_ADDRESS_LIMIT {
            return Ok(None);
        }
        for order in self.index.orders_present() {
            let folio_phys = phys & !(folio_size_bytes(order).wrapping_sub(1));
            if self.index.test(memory, folio_phys, order)? {
                return Ok(Some(Folio { phys: folio_phys, order }));
            }
        }
        Ok(None)
    }

    /// Claim the folio of `order` at `phys`: clear its bit so it is
    /// restored once.
    pub fn take<M: PhysMemory + ?Sized>(&mut self, memory: &mut M, phys: u64, order: u32) -> Result<(), RestoreError> {
        check_folio(phys, order).map_err(|error| match error {
            FolioRuleError::OrderTooLarge => RestoreError::OrderTooLarge { order },
            FolioRuleError::Misaligned => RestoreError::Misaligned { phys },
            FolioRuleError::AddressTooLarge => RestoreError::InvalidRange { phys },
        })?;
        if self.index.update(memory, phys, order, false)? {
            Ok(())
        } else {
            Err(RestoreError::NotPreserved { phys, order })
        }
    }

    /// Claim the folios that tile `[phys, phys + size_bytes)` exactly (the
    /// same rule as the tracker's `unpreserve_range`) and return them as
    /// runs, by address. All or nothing.
    pub fn take_range<M: PhysMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<Vec<FolioRun>, RestoreError> {
        if !phys.is_multiple_of(PAGE_SIZE_BYTES) || !size_bytes.is_multiple_of(PAGE_SIZE_BYTES) {
            return Err(RestoreError::Misaligned { phys });
        }
        let range = PhysRange::from_start_size(phys, size_bytes)
            .filter(|range| !range.is_empty() && range.end <= PHYS_ADDRESS_LIMIT)
            .ok_or(RestoreError::InvalidRange { phys })?;
        if let Some(existing) = self.index.find_straddler(memory, range)? {
            return Err(RestoreError::FolioStraddlesRange { existing });
        }
        let runs = self.index.runs_inside(memory, range)?;
        let mut covered_to = range.start;
        for run in &runs {
            if run.phys > covered_to {
                break;
            }
            covered_to = covered_to.max(run.range().end);
        }
        if covered_to < range.end {
            return Err(RestoreError::RangeNotPreserved { phys: covered_to });
        }
        for (done, run) in runs.iter().enumerate() {
            if let Err(error) = self.index.update_run(memory, *run, false) {
                for undo in runs.iter().take(done) {
                    let _ = self.index.update_run(memory, *undo, true);
                }
                return Err(error.into());
            }
        }
        Ok(runs)
    }

    /// Claim every folio not yet taken that lies entirely inside
    /// `[phys, phys + size_bytes)`, whatever its order, and return them as
    /// runs by address; folios reaching outside the range stay. What an
    /// owner left behind is released this way, at the cost of the bitmap
    /// words covering the range.
    pub fn take_inside<M: PhysMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<Vec<FolioRun>, RestoreError> {
        let range = PhysRange::from_start_size(phys, size_bytes)
            .filter(|range| range.end <= PHYS_ADDRESS_LIMIT)
            .ok_or(RestoreError::InvalidRange { phys })?;
        let runs = self.index.runs_inside(memory, range)?;
        for run in &runs {
            self.index.update_run(memory, *run, false)?;
        }
        Ok(runs)
    }
}
