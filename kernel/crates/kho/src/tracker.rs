//! Preservation tracking on the outgoing side: which folios the next kernel must keep.
//!
//! # Rules
//!
//! * The page size is 4096 bytes. A folio of order `k` is `4096 << k` bytes
//!   and must start at a multiple of its size (natural alignment).
//! * Orders run from 0 to [`MAX_ORDER`] (30, a 4 TiB folio).
//! * A folio (or range) must end at or below [`PHYS_ADDRESS_LIMIT`] (2^52).
//! * Preserving a folio that is already preserved with the same address and
//!   order is [`TrackerError::AlreadyPreserved`]; preserving a folio that
//!   shares any byte with a preserved folio of another order (or another
//!   address) is [`TrackerError::OverlapsPreserved`]. Preserved folios
//!   therefore never overlap.
//! * A range (`preserve_range`) must be non-empty, start and size
//!   page-aligned and not wrap. It is split into the fewest naturally
//!   aligned folios that tile it exactly: each folio is as large as both the
//!   alignment of its start and the bytes left allow (capped at
//!   [`MAX_ORDER`]).
//! * `unpreserve_folio` must name exactly a preserved folio (same address,
//!   same order). `unpreserve_range` removes the preserved folios that tile
//!   the range exactly, however they were preserved: every byte of the range
//!   must be covered ([`TrackerError::RangeNotPreserved`]) and no preserved
//!   folio may cross a boundary of the range
//!   ([`TrackerError::FolioStraddlesRange`]).
//! * Every operation is all-or-nothing: on any error (including running out
//!   of metadata memory half-way through a range) the tracker, its bitmaps
//!   and the allocator are left exactly as before.
//!
//! Bitmaps (512 bytes, 512-aligned) are allocated from the
//! [`MetadataAllocator`] on first use and freed when their last bit is
//! cleared; the serialised chunk list points at them in place.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;

use crate::bitmap::{
    BITMAP_SIZE_BYTES, BitmapIndex, BitmapKey, BitmapSlot, Folio, FolioRuleError, FolioRun, IndexFolios, IndexRuns,
    MAX_ORDER, ORDER_COUNT, check_folio, folio_size_bytes, locate, split_range,
};
use crate::memory::{
    AccessError, HandoverMemory, MetadataAllocator, PAGE_SIZE_BYTES, PHYS_ADDRESS_LIMIT, PhysMemory, PhysRange,
};

/// Why a preservation change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerError {
    /// The order is larger than [`MAX_ORDER`].
    OrderTooLarge {
        /// The order asked for.
        order: u32,
    },
    /// The folio address is not a multiple of the folio size.
    MisalignedFolio {
        /// Folio address.
        phys: u64,
        /// Folio order.
        order: u32,
    },
    /// The folio or range ends above [`PHYS_ADDRESS_LIMIT`].
    AddressTooLarge {
        /// First address of the folio or range.
        phys: u64,
    },
    /// A range of zero bytes.
    ZeroSizedRange {
        /// Range start.
        phys: u64,
    },
    /// A range whose start or size is not page-aligned.
    MisalignedRange {
        /// Range start.
        phys: u64,
        /// Range size.
        size_bytes: u64,
    },
    /// `phys + size_bytes` wraps around.
    RangeOverflow {
        /// Range start.
        phys: u64,
        /// Range size.
        size_bytes: u64,
    },
    /// Exactly this folio is already preserved.
    AlreadyPreserved {
        /// Folio address.
        phys: u64,
        /// Folio order.
        order: u32,
    },
    /// The folio shares memory with another preserved folio.
    OverlapsPreserved {
        /// Folio address asked for.
        phys: u64,
        /// Folio order asked for.
        order: u32,
        /// The preserved folio it collides with.
        existing: Folio,
    },
    /// No folio with this address and order is preserved.
    NotPreserved {
        /// Folio address.
        phys: u64,
        /// Folio order.
        order: u32,
    },
    /// Part of the range is not covered by preserved folios; `phys` is the
    /// first uncovered byte.
    RangeNotPreserved {
        /// First byte of the range that no preserved folio covers.
        phys: u64,
    },
    /// A preserved folio crosses a boundary of the range.
    FolioStraddlesRange {
        /// The folio that is only partly inside the range.
        existing: Folio,
    },
    /// The metadata allocator has no memory for a new bitmap.
    OutOfMetadataMemory,
    /// A bitmap could not be read or written.
    Access(AccessError),
}

impl fmt::Display for TrackerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrderTooLarge { order } => {
                write!(formatter, "order {order} is larger than the maximum {MAX_ORDER}")
            }
            Self::MisalignedFolio { phys, order } => {
                write!(formatter, "order-{order} folio at {phys:#x} is not aligned to its size")
            }
            Self::AddressTooLarge { phys } => {
                write!(formatter, "memory at {phys:#x} extends beyond the 52-bit physical limit")
            }
            Self::ZeroSizedRange { phys } => write!(formatter, "empty range at {phys:#x}"),
            Self::MisalignedRange { phys, size_bytes } => {
                write!(formatter, "range at {phys:#x} of {size_bytes:#x} bytes is not page-aligned")
            }
            Self::RangeOverflow { phys, size_bytes } => {
                write!(formatter, "range at {phys:#x} of {size_bytes:#x} bytes wraps around")
            }
            Self::AlreadyPreserved { phys, order } => {
                write!(formatter, "order-{order} folio at {phys:#x} is already preserved")
            }
            Self::OverlapsPreserved { phys, order, existing } => write!(
                formatter,
                "order-{order} folio at {phys:#x} overlaps preserved order-{} folio at {:#x}",
                existing.order, existing.phys
            ),
            Self::NotPreserved { phys, order } => {
                write!(formatter, "order-{order} folio at {phys:#x} is not preserved")
            }
            Self::RangeNotPreserved { phys } => {
                write!(formatter, "memory at {phys:#x} in the range is not preserved")
            }
            Self::FolioStraddlesRange { existing } => write!(
                formatter,
                "preserved order-{} folio at {:#x} crosses the range boundary",
                existing.order, existing.phys
            ),
            Self::OutOfMetadataMemory => write!(formatter, "out of memory for KHO bitmaps"),
            Self::Access(error) => write!(formatter, "bitmap access failed: {error}"),
        }
    }
}

impl core::error::Error for TrackerError {}

impl From<AccessError> for TrackerError {
    fn from(error: AccessError) -> Self {
        Self::Access(error)
    }
}

fn folio_rule_error(phys: u64, order: u32, error: FolioRuleError) -> TrackerError {
    match error {
        FolioRuleError::OrderTooLarge => TrackerError::OrderTooLarge { order },
        FolioRuleError::Misaligned => TrackerError::MisalignedFolio { phys, order },
        FolioRuleError::AddressTooLarge => TrackerError::AddressTooLarge { phys },
    }
}

/// Check the range rules and return the range.
fn check_range(phys: u64, size_bytes: u64) -> Result<PhysRange, TrackerError> {
    if size_bytes == 0 {
        return Err(TrackerError::ZeroSizedRange { phys });
    }
    if !phys.is_multiple_of(PAGE_SIZE_BYTES) || !size_bytes.is_multiple_of(PAGE_SIZE_BYTES) {
        return Err(TrackerError::MisalignedRange { phys, size_bytes });
    }
    let range = PhysRange::from_start_size(phys, size_bytes).ok_or(TrackerError::RangeOverflow { phys, size_bytes })?;
    if range.end > PHYS_ADDRESS_LIMIT {
        return Err(TrackerError::AddressTooLarge { phys });
    }
    Ok(range)
}

/// Per-order sparse bitmaps of preserved folios, stored in metadata memory.
#[derive(Debug, Clone, Default)]
pub struct PreservationTracker {
    index: BitmapIndex,
}

impl PreservationTracker {
    /// An empty tracker; it allocates nothing until the first preservation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Preserve the folio of `order` at `phys`.
    pub fn preserve_folio<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        order: u32,
    ) -> Result<(), TrackerError> {
        check_folio(phys, order).map_err(|error| folio_rule_error(phys, order, error))?;
        self.check_free(memory, Folio { phys, order })?;
        let (key, _) = locate(phys, order);
        let new_bitmap = if self.index.map.contains_key(&key) {
            None
        } else {
            let bitmap_phys = allocate_bitmap(memory).ok_or(TrackerError::OutOfMetadataMemory)?;
            self.index.insert(key, BitmapSlot { phys: bitmap_phys, set_bit_count: 0 });
            Some(key)
        };
        if let Err(error) = self.index.update(memory, phys, order, true) {
            if let Some(key) = new_bitmap {
                self.release_bitmap(memory, &key);
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Preserve `run.folio_count` consecutive folios of `run.order` starting
    /// at `run.phys`, each an individual folio (restored one by one), in one
    /// all-or-nothing step that sets whole bitmap words at a time. The
    /// folio rules apply to every folio; the run must not be empty and no
    /// folio of it may be preserved already or overlap a preserved folio.
    pub fn preserve_folio_run<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        run: FolioRun,
    ) -> Result<(), TrackerError> {
        let FolioRun { phys, order, folio_count } = run;
        check_folio(phys, order).map_err(|error| folio_rule_error(phys, order, error))?;
        if folio_count == 0 {
            return Err(TrackerError::ZeroSizedRange { phys });
        }
        let size_bytes = folio_count
            .checked_mul(folio_size_bytes(order))
            .ok_or(TrackerError::RangeOverflow { phys, size_bytes: u64::MAX })?;
        let range = check_range(phys, size_bytes)?;
        if let Some(existing) = self.index.find_overlap_in_range(memory, range)? {
            // Report the folio of the run that meets `existing`.
            let mask = folio_size_bytes(order) - 1;
            let folio = Folio { phys: existing.phys.max(phys) & !mask, order };
            return Err(if existing == folio {
                TrackerError::AlreadyPreserved { phys: folio.phys, order }
            } else {
                TrackerError::OverlapsPreserved { phys: folio.phys, order, existing }
            });
        }
        let first_key = locate(phys, order).0;
        let last_key = locate(range.end - folio_size_bytes(order), order).0;
        let mut allocated: Vec<(BitmapKey, u64)> = Vec::new();
        for number in first_key.number..=last_key.number {
            let key = BitmapKey { order, number };
            if self.index.map.contains_key(&key) {
                continue;
            }
            match allocate_bitmap(memory) {
                Some(bitmap_phys) => allocated.push((key, bitmap_phys)),
                None => {
                    for (_, bitmap_phys) in allocated {
                        memory.free(bitmap_phys, BITMAP_SIZE_BYTES, BITMAP_SIZE_BYTES);
                    }
                    return Err(TrackerError::OutOfMetadataMemory);
                }
            }
        }
        for (key, bitmap_phys) in &allocated {
            self.index.insert(*key, BitmapSlot { phys: *bitmap_phys, set_bit_count: 0 });
        }
        if let Err(error) = self.index.update_run(memory, run, true) {
            // Best effort: clear what was set, then drop the new bitmaps.
            let _ = self.index.update_run(memory, run, false);
            for (key, _) in &allocated {
                self.release_bitmap(memory, key);
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Remove the preservation of exactly the folio of `order` at `phys`.
    pub fn unpreserve_folio<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        order: u32,
    ) -> Result<(), TrackerError> {
        check_folio(phys, order).map_err(|error| folio_rule_error(phys, order, error))?;
        if !self.index.update(memory, phys, order, false)? {
            return Err(TrackerError::NotPreserved { phys, order });
        }
        let (key, _) = locate(phys, order);
        if self.index.map.get(&key).is_some_and(|slot| slot.set_bit_count == 0) {
            self.release_bitmap(memory, &key);
        }
        Ok(())
    }

    /// Preserve `[phys, phys + size_bytes)` as the largest naturally aligned
    /// folios (see the module rules). All or nothing.
    pub fn preserve_range<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<(), TrackerError> {
        let range = check_range(phys, size_bytes)?;
        // 1. Validate every piece against what is already preserved (the
        //    pieces themselves never overlap).
        let folios: Vec<Folio> = split_range(range).collect();
        for folio in &folios {
            self.check_free(memory, *folio)?;
        }
        // 2. Allocate every missing bitmap, or nothing.
        let missing: BTreeSet<BitmapKey> = folios
            .iter()
            .map(|folio| locate(folio.phys, folio.order).0)
            .filter(|key| !self.index.map.contains_key(key))
            .collect();
        let mut allocated: Vec<(BitmapKey, u64)> = Vec::with_capacity(missing.len());
        for key in missing {
            match allocate_bitmap(memory) {
                Some(bitmap_phys) => allocated.push((key, bitmap_phys)),
                None => {
                    for (_, bitmap_phys) in allocated {
                        memory.free(bitmap_phys, BITMAP_SIZE_BYTES, BITMAP_SIZE_BYTES);
                    }
                    return Err(TrackerError::OutOfMetadataMemory);
                }
            }
        }
        for (key, bitmap_phys) in &allocated {
            self.index.insert(*key, BitmapSlot { phys: *bitmap_phys, set_bit_count: 0 });
        }
        // 3. Commit; undo on an access failure.
        for (done, folio) in folios.iter().enumerate() {
            if let Err(error) = self.index.update(memory, folio.phys, folio.order, true) {
                for undo in folios.iter().take(done) {
                    // Best effort: the bitmap was just written successfully.
                    let _ = self.index.update(memory, undo.phys, undo.order, false);
                }
                for (key, _) in &allocated {
                    self.release_bitmap(memory, key);
                }
                return Err(error.into());
            }
        }
        Ok(())
    }

    /// Remove the preserved folios that tile `[phys, phys + size_bytes)`
    /// exactly (see the module rules). All or nothing.
    pub fn unpreserve_range<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<(), TrackerError> {
        let range = check_range(phys, size_bytes)?;
        if let Some(existing) = self.index.find_straddler(memory, range)? {
            return Err(TrackerError::FolioStraddlesRange { existing });
        }
        let runs = self.index.runs_inside(memory, range)?;
        if let Some(gap) = first_gap(range, &runs) {
            return Err(TrackerError::RangeNotPreserved { phys: gap });
        }
        let mut emptied = Vec::new();
        for (done, run) in runs.iter().enumerate() {
            match self.index.update_run(memory, *run, false) {
                Ok(keys) => emptied.extend(keys),
                Err(error) => {
                    for undo in runs.iter().take(done) {
                        let _ = self.index.update_run(memory, *undo, true);
                    }
                    return Err(error.into());
                }
            }
        }
        for key in emptied {
            if self.index.map.get(&key).is_some_and(|slot| slot.set_bit_count == 0) {
                self.release_bitmap(memory, &key);
            }
        }
        Ok(())
    }

    /// Remove the preservation of every folio that lies entirely inside
    /// `[phys, phys + size_bytes)`, whatever its order; returns the bytes
    /// unpreserved. Folios reaching outside the range stay preserved.
    pub fn unpreserve_inside<M: HandoverMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        size_bytes: u64,
    ) -> Result<u64, TrackerError> {
        let range = check_range(phys, size_bytes)?;
        let runs = self.index.runs_inside(memory, range)?;
        let mut emptied = Vec::new();
        for run in &runs {
            emptied.extend(self.index.update_run(memory, *run, false)?);
        }
        for key in emptied {
            if self.index.map.get(&key).is_some_and(|slot| slot.set_bit_count == 0) {
                self.release_bitmap(memory, &key);
            }
        }
        Ok(runs.iter().map(FolioRun::size_bytes).sum())
    }

    /// Remove every preservation and free every bitmap.
    pub fn clear<M: MetadataAllocator + ?Sized>(&mut self, memory: &mut M) {
        for slot in self.index.map.values() {
            memory.free(slot.phys, BITMAP_SIZE_BYTES, BITMAP_SIZE_BYTES);
        }
        self.index = BitmapIndex::default();
    }

    /// Whether exactly the folio of `order` at `phys` is preserved.
    pub fn is_preserved<M: PhysMemory + ?Sized>(&self, memory: &M, phys: u64, order: u32) -> Result<bool, AccessError> {
        if check_folio(phys, order).is_err() {
            return Ok(false);
        }
        self.index.test(memory, phys, order)
    }

    /// The preserved folio that contains `phys`, if any.
    pub fn preserved_folio_containing<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        phys: u64,
    ) -> Result<Option<Folio>, AccessError> {
        if phys >= PHYS_ADDRESS_LIMIT {
            return Ok(None);
        }
        for order in self.index.orders_present() {
            let folio_phys = phys & !(folio_size_bytes(order) - 1);
            if self.index.test(memory, folio_phys, order)? {
                return Ok(Some(Folio { phys: folio_phys, order }));
            }
        }
        Ok(None)
    }

    /// Whether every byte of `range` lies in some preserved folio.
    pub fn is_range_preserved<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        range: PhysRange,
    ) -> Result<bool, AccessError> {
        let mut phys = range.start;
        while phys < range.end {
            match self.preserved_folio_containing(memory, phys)? {
                Some(folio) => phys = folio.range().end,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Every preserved folio, by order then address.
    pub fn folios<'a, M: PhysMemory + ?Sized>(
        &'a self,
        memory: &'a M,
    ) -> impl Iterator<Item = Result<Folio, AccessError>> + 'a {
        IndexFolios::new(memory, &self.index)
    }

    /// Maximal runs of consecutive preserved folios of one order, by order
    /// then address.
    pub fn runs<'a, M: PhysMemory + ?Sized>(
        &'a self,
        memory: &'a M,
    ) -> impl Iterator<Item = Result<FolioRun, AccessError>> + 'a {
        IndexRuns::new(memory, &self.index)
    }

    /// Preserved folios of `order`.
    pub fn folio_count(&self, order: u32) -> u64 {
        self.index.folios_per_order.get(order as usize).copied().unwrap_or(0)
    }

    /// Preserved folios per order (index = order).
    pub fn folio_counts(&self) -> [u64; ORDER_COUNT] {
        self.index.folios_per_order
    }

    /// Preserved folios of every order.
    pub fn total_folio_count(&self) -> u64 {
        self.index.folio_count()
    }

    /// Bytes covered by preserved folios.
    pub fn preserved_bytes(&self) -> u64 {
        self.index.preserved_bytes()
    }

    /// Number of 512-byte bitmaps in use.
    pub fn bitmap_count(&self) -> u64 {
        self.index.map.len() as u64
    }

    /// Metadata memory held by the bitmaps.
    pub fn metadata_bytes(&self) -> u64 {
        self.bitmap_count() * BITMAP_SIZE_BYTES
    }

    /// Whether nothing is preserved.
    pub fn is_empty(&self) -> bool {
        self.index.map.is_empty()
    }

    /// `(order, first covered address, bitmap address)` of every bitmap, by
    /// order then address: what the chunk list records.
    pub fn bitmap_entries(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.index.map.iter().map(|(key, slot)| (key.order, key.phys_start(), slot.phys))
    }

    /// Refuse a folio that is preserved already or overlaps a preserved one.
    fn check_free<M: PhysMemory + ?Sized>(&self, memory: &M, folio: Folio) -> Result<(), TrackerError> {
        match self.index.find_overlap(memory, folio.phys, folio.order)? {
            None => Ok(()),
            Some(existing) if existing == folio => {
                Err(TrackerError::AlreadyPreserved { phys: folio.phys, order: folio.order })
            }
            Some(existing) => Err(TrackerError::OverlapsPreserved { phys: folio.phys, order: folio.order, existing }),
        }
    }

    fn release_bitmap<M: MetadataAllocator + ?Sized>(&mut self, memory: &mut M, key: &BitmapKey) {
        if let Some(slot) = self.index.remove(key) {
            memory.free(slot.phys, BITMAP_SIZE_BYTES, BITMAP_SIZE_BYTES);
        }
    }
}

fn allocate_bitmap<M: MetadataAllocator + ?Sized>(memory: &mut M) -> Option<u64> {
    memory.allocate_zeroed(BITMAP_SIZE_BYTES, BITMAP_SIZE_BYTES)
}

/// First byte of `range` not covered by `runs` (sorted, non-overlapping, inside the range).
fn first_gap(range: PhysRange, runs: &[FolioRun]) -> Option<u64> {
    let mut covered_to = range.start;
    for run in runs {
        if run.phys > covered_to {
            return Some(covered_to);
        }
        covered_to = covered_to.max(run.range().end);
    }
    (covered_to < range.end).then_some(covered_to)
}
