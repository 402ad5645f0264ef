//! Geometry of the 512-byte preservation bitmaps and the sparse per-order index over them.
//!
//! Both sides of the handover keep preserved folios in the same shape: for
//! every order `k` a sparse set of 512-byte (4096-bit) bitmaps, where bit `i`
//! of bitmap number `n` stands for the folio at physical address
//! `(n * 4096 + i) << (k + 12)`. One bitmap therefore spans
//! `4096 << (k + 12)` bytes: 16 MiB at order 0, 4 TiB at order 18 and
//! everything below [`PHYS_ADDRESS_LIMIT`] from order 28 on.
//!
//! The bitmaps themselves live in physical memory and are read and written
//! in place through [`PhysMemory`]; the index only maps
//! `(order, bitmap number)` to a physical address and a count of set bits.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Bound;

use crate::memory::{AccessError, PAGE_SHIFT, PHYS_ADDRESS_LIMIT, PhysMemory, PhysRange};

/// Largest folio order: order 30 is a 4 TiB folio. Orders run `0..=MAX_ORDER`.
///
/// Thirty covers every size a range split can produce on machines Baton
/// targets while keeping every shift in this crate far below 64 bits
/// (`4096 << (30 + 12)` is `2^54`).
pub const MAX_ORDER: u32 = 30;

/// Number of distinct orders (`MAX_ORDER + 1`).
pub const ORDER_COUNT: usize = MAX_ORDER as usize + 1;

/// Size of one preservation bitmap.
pub const BITMAP_SIZE_BYTES: u64 = 512;

/// Folios covered by one bitmap (bits in 512 bytes).
pub const BITS_PER_BITMAP: u64 = BITMAP_SIZE_BYTES * 8;

/// `log2(BITS_PER_BITMAP)`.
pub(crate) const BITMAP_BITS_SHIFT: u32 = 12;

/// 64-bit words in one bitmap.
pub(crate) const WORDS_PER_BITMAP: usize = 64;

/// `log2` of the size of a folio of `order` (valid for `order <= MAX_ORDER`).
pub const fn folio_shift(order: u32) -> u32 {
    order + PAGE_SHIFT
}

/// Size of a folio of `order` (valid for `order <= MAX_ORDER`).
pub const fn folio_size_bytes(order: u32) -> u64 {
    1 << folio_shift(order)
}

/// Bytes of physical address space one bitmap of `order` spans.
pub const fn bitmap_span_bytes(order: u32) -> u64 {
    BITS_PER_BITMAP << folio_shift(order)
}

/// A preserved folio: `2^order` pages starting at `phys`, aligned to its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Folio {
    /// First physical address of the folio.
    pub phys: u64,
    /// Order: the folio is `4096 << order` bytes.
    pub order: u32,
}

impl Folio {
    /// Size of the folio in bytes.
    pub const fn size_bytes(&self) -> u64 {
        folio_size_bytes(self.order)
    }

    /// The physical range the folio covers.
    pub const fn range(&self) -> PhysRange {
        PhysRange::new(self.phys, self.phys.saturating_add(self.size_bytes()))
    }
}

/// `folio_count` physically consecutive folios of one order starting at `phys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FolioRun {
    /// First physical address of the first folio.
    pub phys: u64,
    /// Order shared by every folio of the run.
    pub order: u32,
    /// Number of folios in the run (at least one).
    pub folio_count: u64,
}

impl FolioRun {
    /// Bytes covered by the run.
    pub const fn size_bytes(&self) -> u64 {
        self.folio_count << folio_shift(self.order)
    }

    /// The physical range the run covers.
    pub const fn range(&self) -> PhysRange {
        PhysRange::new(self.phys, self.phys.saturating_add(self.size_bytes()))
    }

    /// The folios of the run, in address order.
    pub fn folios(&self) -> impl Iterator<Item = Folio> + use<> {
        let order = self.order;
        let start = self.phys >> folio_shift(order);
        (start..start + self.folio_count).map(move |number| Folio { phys: number << folio_shift(order), order })
    }
}

/// Why a folio cannot be preserved or named: the shared input rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FolioRuleError {
    OrderTooLarge,
    Misaligned,
    AddressTooLarge,
}

/// Check the folio rules: order at most [`MAX_ORDER`], `phys` aligned to the
/// folio size and the folio ending at or below [`PHYS_ADDRESS_LIMIT`].
pub(crate) fn check_folio(phys: u64, order: u32) -> Result<(), FolioRuleError> {
    if order > MAX_ORDER {
        return Err(FolioRuleError::OrderTooLarge);
    }
    if phys & (folio_size_bytes(order) - 1) != 0 {
        return Err(FolioRuleError::Misaligned);
    }
    match phys.checked_add(folio_size_bytes(order)) {
        Some(end) if end <= PHYS_ADDRESS_LIMIT => Ok(()),
        _ => Err(FolioRuleError::AddressTooLarge),
    }
}

/// Split a page-aligned range into the largest naturally aligned folios, in
/// address order. Each folio is as large as both the alignment of its start
/// and the bytes left allow (capped at [`MAX_ORDER`]), which gives the
/// fewest folios that tile the range exactly.
pub fn split_range(range: PhysRange) -> impl Iterator<Item = Folio> {
    let mut phys = range.start;
    let end = range.end;
    core::iter::from_fn(move || {
        if phys >= end {
            return None;
        }
        let remaining = end - phys;
        let alignment_order = (phys.trailing_zeros().min(63)).saturating_sub(PAGE_SHIFT);
        let size_order = (63 - remaining.leading_zeros()).saturating_sub(PAGE_SHIFT);
        let order = alignment_order.min(size_order).min(MAX_ORDER);
        let folio = Folio { phys, order };
        phys = phys.saturating_add(folio_size_bytes(order));
        Some(folio)
    })
}

/// Key of one bitmap: its order and its number (folio number / 4096).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct BitmapKey {
    pub order: u32,
    pub number: u64,
}

impl BitmapKey {
    /// First physical address the bitmap covers.
    pub fn phys_start(&self) -> u64 {
        self.number << (BITMAP_BITS_SHIFT + folio_shift(self.order))
    }
}

/// Where a bitmap lives and how many of its bits are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BitmapSlot {
    pub phys: u64,
    pub set_bit_count: u32,
}

impl BitmapSlot {
    /// Words `first_word..=last_word` of this bitmap. A bitmap whose count
    /// says it is all clear or all set is not read: a gigabyte of order-0
    /// pages is 64 full bitmaps, and the update path looks at them several
    /// times.
    pub fn words<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        first_word: usize,
        last_word: usize,
    ) -> Result<BitmapWords, AccessError> {
        match u64::from(self.set_bit_count) {
            0 => Ok([0; WORDS_PER_BITMAP]),
            BITS_PER_BITMAP => Ok([u64::MAX; WORDS_PER_BITMAP]),
            _ => read_words(memory, self.phys, first_word, last_word),
        }
    }
}

/// A fixed 64-word view of one bitmap (or of the words of it that were read).
pub(crate) type BitmapWords = [u64; WORDS_PER_BITMAP];

/// Word `index` of a bitmap; `index` is reduced modulo 64 so it cannot go out
/// of bounds (callers always pass `bit / 64` with `bit < 4096`).
#[inline]
pub(crate) fn word_at(words: &BitmapWords, index: usize) -> u64 {
    words.get(index % WORDS_PER_BITMAP).copied().unwrap_or(0)
}

#[inline]
fn word_at_mut(words: &mut BitmapWords, index: usize) -> Option<&mut u64> {
    words.get_mut(index % WORDS_PER_BITMAP)
}

/// Read words `first_word..=last_word` of the bitmap at `bitmap_phys` (other
/// words of the result stay zero) with one access.
pub(crate) fn read_words<M: PhysMemory + ?Sized>(
    memory: &M,
    bitmap_phys: u64,
    first_word: usize,
    last_word: usize,
) -> Result<BitmapWords, AccessError> {
    let mut words = [0_u64; WORDS_PER_BITMAP];
    let first_word = first_word.min(WORDS_PER_BITMAP - 1);
    let last_word = last_word.clamp(first_word, WORDS_PER_BITMAP - 1);
    let mut bytes = [0_u8; BITMAP_SIZE_BYTES as usize];
    let start_byte = first_word * 8;
    let end_byte = (last_word + 1) * 8;
    if let Some(window) = bytes.get_mut(start_byte..end_byte) {
        memory.read(bitmap_phys + start_byte as u64, window)?;
        for (offset, chunk) in window.chunks_exact(8).enumerate() {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            if let Some(slot) = word_at_mut(&mut words, first_word + offset) {
                *slot = u64::from_ne_bytes(word);
            }
        }
    }
    Ok(words)
}

/// Write words `first_word..=last_word` of `words` to the bitmap at
/// `bitmap_phys` with one access.
fn write_words<M: PhysMemory + ?Sized>(
    memory: &mut M,
    bitmap_phys: u64,
    words: &BitmapWords,
    first_word: usize,
    last_word: usize,
) -> Result<(), AccessError> {
    let first_word = first_word.min(WORDS_PER_BITMAP - 1);
    let last_word = last_word.clamp(first_word, WORDS_PER_BITMAP - 1);
    let mut bytes = [0_u8; BITMAP_SIZE_BYTES as usize];
    let window = bytes.get_mut(first_word * 8..(last_word + 1) * 8).unwrap_or_default();
    for (chunk, word) in window.chunks_exact_mut(8).zip(words.iter().skip(first_word)) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    memory.write(bitmap_phys + (first_word * 8) as u64, window)
}

/// Read a whole bitmap.
pub(crate) fn read_bitmap<M: PhysMemory + ?Sized>(memory: &M, bitmap_phys: u64) -> Result<BitmapWords, AccessError> {
    read_words(memory, bitmap_phys, 0, WORDS_PER_BITMAP - 1)
}

/// Mask of bits `[low, high)` of a 64-bit word (`low <= high <= 64`).
#[inline]
fn word_mask(low: u32, high: u32) -> u64 {
    let upper = if high >= 64 { u64::MAX } else { (1_u64 << high) - 1 };
    let lower = if low >= 64 { u64::MAX } else { (1_u64 << low) - 1 };
    upper & !lower
}

/// Number of set bits of `words` in `[low_bit, high_bit)` (bits below 4096).
pub(crate) fn count_bits(words: &BitmapWords, low_bit: u64, high_bit: u64) -> u64 {
    let mut count = 0;
    let mut bit = low_bit;
    while bit < high_bit.min(BITS_PER_BITMAP) {
        let index = (bit / 64) as usize;
        let low = (bit % 64) as u32;
        let high = (high_bit - (bit - u64::from(low))).min(64) as u32;
        count += u64::from((word_at(words, index) & word_mask(low, high)).count_ones());
        bit = (bit - u64::from(low)) + 64;
    }
    count
}

/// The first maximal run `(first_bit, end_bit)` of set bits of `words` that
/// starts at or after `from_bit`, clipped to `high_bit`; whole words are
/// tested at once where possible.
pub(crate) fn next_bit_run(words: &BitmapWords, from_bit: u64, high_bit: u64) -> Option<(u64, u64)> {
    let high_bit = high_bit.min(BITS_PER_BITMAP);
    let mut bit = from_bit;
    // Skip clear bits.
    loop {
        if bit >= high_bit {
            return None;
        }
        let shift = (bit % 64) as u32;
        let pending = word_at(words, (bit / 64) as usize) >> shift;
        if pending != 0 {
            bit += u64::from(pending.trailing_zeros());
            break;
        }
        bit += 64 - u64::from(shift);
    }
    if bit >= high_bit {
        return None;
    }
    // Extend over set bits.
    let run_start = bit;
    while bit < high_bit {
        let shift = (bit % 64) as u32;
        let word = word_at(words, (bit / 64) as usize);
        if shift == 0 && word == u64::MAX {
            bit += 64;
            continue;
        }
        let ones = (word >> shift).trailing_ones();
        bit += u64::from(ones);
        if ones < 64 - shift {
            break;
        }
    }
    Some((run_start, bit.min(high_bit)))
}

/// Call `emit(first_bit, end_bit)` for every maximal run of set bits of
/// `words` inside `[low_bit, high_bit)`.
pub(crate) fn for_each_bit_run(words: &BitmapWords, low_bit: u64, high_bit: u64, mut emit: impl FnMut(u64, u64)) {
    let mut bit = low_bit;
    while let Some((start, end)) = next_bit_run(words, bit, high_bit) {
        emit(start, end);
        bit = end;
    }
}

/// Sparse per-order index of bitmaps, plus folio counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitmapIndex {
    pub map: BTreeMap<BitmapKey, BitmapSlot>,
    pub bitmaps_per_order: [u64; ORDER_COUNT],
    pub folios_per_order: [u64; ORDER_COUNT],
}

/// Position of a folio in the bitmaps: key and bit number.
pub(crate) fn locate(phys: u64, order: u32) -> (BitmapKey, u64) {
    let folio_number = phys >> folio_shift(order);
    (BitmapKey { order, number: folio_number >> BITMAP_BITS_SHIFT }, folio_number & (BITS_PER_BITMAP - 1))
}

impl BitmapIndex {
    /// Orders that have at least one bitmap, ascending.
    pub fn orders_present(&self) -> impl Iterator<Item = u32> + '_ {
        (0..=MAX_ORDER).filter(|order| self.bitmaps_per_order.get(*order as usize).copied().unwrap_or(0) != 0)
    }

    pub fn insert(&mut self, key: BitmapKey, slot: BitmapSlot) {
        if self.map.insert(key, slot).is_none()
            && let Some(count) = self.bitmaps_per_order.get_mut(key.order as usize)
        {
            *count += 1;
        }
        if let Some(count) = self.folios_per_order.get_mut(key.order as usize) {
            *count += u64::from(slot.set_bit_count);
        }
    }

    pub fn remove(&mut self, key: &BitmapKey) -> Option<BitmapSlot> {
        let slot = self.map.remove(key)?;
        if let Some(count) = self.bitmaps_per_order.get_mut(key.order as usize) {
            *count -= 1;
        }
        if let Some(count) = self.folios_per_order.get_mut(key.order as usize) {
            *count -= u64::from(slot.set_bit_count);
        }
        Some(slot)
    }

    pub fn folio_count(&self) -> u64 {
        self.folios_per_order.iter().sum()
    }

    pub fn preserved_bytes(&self) -> u64 {
        self.folios_per_order.iter().zip(0..).map(|(count, order)| count << folio_shift(order)).sum()
    }

    /// Whether the folio `(phys, order)` has its bit set.
    pub fn test<M: PhysMemory + ?Sized>(&self, memory: &M, phys: u64, order: u32) -> Result<bool, AccessError> {
        let (key, bit) = locate(phys, order);
        match self.map.get(&key) {
            Some(slot) => {
                let word = memory.read_u64(slot.phys + (bit / 64) * 8)?;
                Ok(word & (1 << (bit % 64)) != 0)
            }
            None => Ok(false),
        }
    }

    /// Set or clear the bit of `(phys, order)`, whose bitmap must exist.
    /// Returns whether the bit changed.
    pub fn update<M: PhysMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        phys: u64,
        order: u32,
        is_set: bool,
    ) -> Result<bool, AccessError> {
        let (key, bit) = locate(phys, order);
        let Some(slot) = self.map.get_mut(&key) else {
            return Ok(false);
        };
        let word_phys = slot.phys + (bit / 64) * 8;
        let mask = 1_u64 << (bit % 64);
        let word = memory.read_u64(word_phys)?;
        if (word & mask != 0) == is_set {
            return Ok(false);
        }
        memory.write_u64(word_phys, word ^ mask)?;
        let counter = self.folios_per_order.get_mut(order as usize);
        if is_set {
            slot.set_bit_count += 1;
            if let Some(counter) = counter {
                *counter += 1;
            }
        } else {
            slot.set_bit_count -= 1;
            if let Some(counter) = counter {
                *counter -= 1;
            }
        }
        Ok(true)
    }

    /// Runs of set bits at `order` for folio numbers in
    /// `[first_folio, end_folio)`, merged across bitmap boundaries.
    pub fn runs_in<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        order: u32,
        first_folio: u64,
        end_folio: u64,
        mut emit: impl FnMut(FolioRun) -> bool,
    ) -> Result<(), AccessError> {
        if first_folio >= end_folio {
            return Ok(());
        }
        let first_key = BitmapKey { order, number: first_folio >> BITMAP_BITS_SHIFT };
        let last_key = BitmapKey { order, number: (end_folio - 1) >> BITMAP_BITS_SHIFT };
        let mut pending: Option<(u64, u64)> = None;
        let shift = folio_shift(order);
        let to_run = |(start, end): (u64, u64)| FolioRun { phys: start << shift, order, folio_count: end - start };
        for (key, slot) in self.map.range((Bound::Included(first_key), Bound::Included(last_key))) {
            if slot.set_bit_count == 0 {
                continue;
            }
            let base = key.number << BITMAP_BITS_SHIFT;
            let low_bit = first_folio.saturating_sub(base);
            let high_bit = (end_folio - base).min(BITS_PER_BITMAP);
            let words = slot.words(memory, (low_bit / 64) as usize, ((high_bit - 1) / 64) as usize)?;
            let mut stop = false;
            for_each_bit_run(&words, low_bit, high_bit, |start, end| {
                if stop {
                    return;
                }
                let (start, end) = (base + start, base + end);
                match pending {
                    Some((pending_start, pending_end)) if pending_end == start => {
                        pending = Some((pending_start, end));
                    }
                    Some(previous) => {
                        stop = !emit(to_run(previous));
                        pending = Some((start, end));
                    }
                    None => pending = Some((start, end)),
                }
            });
            if stop {
                return Ok(());
            }
        }
        if let Some(last) = pending {
            emit(to_run(last));
        }
        Ok(())
    }

    /// The first preserved folio (of any order) that shares a byte with
    /// `[phys, phys + folio_size_bytes(order))`, if any. An identical folio
    /// is reported as itself.
    pub fn find_overlap<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        phys: u64,
        order: u32,
    ) -> Result<Option<Folio>, AccessError> {
        for present in self.orders_present() {
            if present >= order {
                // One folio of the larger (or same) order can contain this one.
                let containing = phys & !(folio_size_bytes(present) - 1);
                if self.test(memory, containing, present)? {
                    return Ok(Some(Folio { phys: containing, order: present }));
                }
            } else {
                // Any smaller folio inside this one.
                let shift = folio_shift(present);
                let first = phys >> shift;
                let end = first + (1 << (order - present));
                let mut found = None;
                self.runs_in(memory, present, first, end, |run| {
                    found = Some(Folio { phys: run.phys, order: present });
                    false
                })?;
                if found.is_some() {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

    /// The first preserved folio (lowest order first) that shares a byte
    /// with `range`. Costs one bitmap-range scan per order present.
    pub fn find_overlap_in_range<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        range: PhysRange,
    ) -> Result<Option<Folio>, AccessError> {
        for order in self.orders_present() {
            let first = range.start >> folio_shift(order);
            let end = range.end.div_ceil(folio_size_bytes(order));
            let mut found = None;
            self.runs_in(memory, order, first, end, |run| {
                found = Some(Folio { phys: run.phys, order });
                false
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Preserved folios that straddle a boundary of `range` (page-aligned):
    /// they contain `range.start` or `range.end - 1` but are not inside it.
    pub fn find_straddler<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        range: PhysRange,
    ) -> Result<Option<Folio>, AccessError> {
        for order in self.orders_present() {
            let mask = folio_size_bytes(order) - 1;
            for boundary in [range.start, range.end] {
                if boundary & mask == 0 {
                    continue;
                }
                let containing = boundary & !mask;
                let folio = Folio { phys: containing, order };
                if !range.contains_range(&folio.range()) && self.test(memory, containing, order)? {
                    return Ok(Some(folio));
                }
            }
        }
        Ok(None)
    }

    /// Runs of preserved folios that lie entirely inside `range`, per order.
    pub fn runs_inside<M: PhysMemory + ?Sized>(
        &self,
        memory: &M,
        range: PhysRange,
    ) -> Result<Vec<FolioRun>, AccessError> {
        let mut runs = Vec::new();
        for order in self.orders_present() {
            let shift = folio_shift(order);
            let size = folio_size_bytes(order);
            let first = range.start.div_ceil(size);
            let end = range.end >> shift;
            self.runs_in(memory, order, first, end, |run| {
                runs.push(run);
                true
            })?;
        }
        runs.sort_unstable_by_key(|run| run.phys);
        Ok(runs)
    }

    /// Set or clear every bit of `run`; the bitmaps must exist. Returns the
    /// keys of bitmaps whose set-bit count dropped to zero.
    pub fn update_run<M: PhysMemory + ?Sized>(
        &mut self,
        memory: &mut M,
        run: FolioRun,
        is_set: bool,
    ) -> Result<Vec<BitmapKey>, AccessError> {
        let mut emptied = Vec::new();
        let order = run.order;
        let first = run.phys >> folio_shift(order);
        let end = first + run.folio_count;
        let mut folio = first;
        while folio < end {
            let key = BitmapKey { order, number: folio >> BITMAP_BITS_SHIFT };
            let base = key.number << BITMAP_BITS_SHIFT;
            let high = (end - base).min(BITS_PER_BITMAP);
            let Some(slot) = self.map.get_mut(&key) else {
                folio = base + BITS_PER_BITMAP;
                continue;
            };
            // The words this run covers, read and written back at once.
            let first_word = ((folio - base) / 64) as usize;
            let last_word = ((high - 1) / 64) as usize;
            let mut words = slot.words(memory, first_word, last_word)?;
            let mut changed = 0_u64;
            let mut bit = folio - base;
            while bit < high {
                let low = (bit % 64) as u32;
                let word_high = (high - (bit - u64::from(low))).min(64) as u32;
                let mask = word_mask(low, word_high);
                if let Some(word) = word_at_mut(&mut words, (bit / 64) as usize) {
                    let updated = if is_set { *word | mask } else { *word & !mask };
                    changed += u64::from((*word ^ updated).count_ones());
                    *word = updated;
                }
                bit = bit - u64::from(low) + 64;
            }
            if changed != 0 {
                write_words(memory, slot.phys, &words, first_word, last_word)?;
                let counter = self.folios_per_order.get_mut(order as usize);
                if is_set {
                    slot.set_bit_count += changed as u32;
                    if let Some(counter) = counter {
                        *counter += changed;
                    }
                } else {
                    slot.set_bit_count -= changed as u32;
                    if let Some(counter) = counter {
                        *counter -= changed;
                    }
                }
            }
            if slot.set_bit_count == 0 {
                emptied.push(key);
            }
            folio = base + high;
        }
        Ok(emptied)
    }
}

/// Iterator over the runs of an index: per order, ascending address, each run
/// maximal (merged across bitmap boundaries). Reads each bitmap once.
pub(crate) struct IndexRuns<'a, M: ?Sized> {
    memory: &'a M,
    entries: alloc::collections::btree_map::Iter<'a, BitmapKey, BitmapSlot>,
    current: Option<(BitmapKey, BitmapWords)>,
    next_bit: u64,
    pending: Option<FolioRun>,
    has_failed: bool,
}

impl<'a, M: PhysMemory + ?Sized> IndexRuns<'a, M> {
    pub fn new(memory: &'a M, index: &'a BitmapIndex) -> Self {
        Self { memory, entries: index.map.iter(), current: None, next_bit: 0, pending: None, has_failed: false }
    }
}

impl<M: PhysMemory + ?Sized> Iterator for IndexRuns<'_, M> {
    type Item = Result<FolioRun, AccessError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.has_failed {
            return None;
        }
        loop {
            let Some((key, words)) = &self.current else {
                match self.entries.next() {
                    Some((key, slot)) => {
                        if slot.set_bit_count == 0 {
                            continue;
                        }
                        match slot.words(self.memory, 0, WORDS_PER_BITMAP - 1) {
                            Ok(words) => {
                                self.current = Some((*key, words));
                                self.next_bit = 0;
                                continue;
                            }
                            Err(error) => {
                                self.has_failed = true;
                                return Some(Err(error));
                            }
                        }
                    }
                    None => return self.pending.take().map(Ok),
                }
            };
            let Some((start, end)) = next_bit_run(words, self.next_bit, BITS_PER_BITMAP) else {
                self.current = None;
                continue;
            };
            self.next_bit = end;
            let shift = folio_shift(key.order);
            let base = key.number << BITMAP_BITS_SHIFT;
            let run = FolioRun { phys: (base + start) << shift, order: key.order, folio_count: end - start };
            match &mut self.pending {
                Some(pending) if pending.order == run.order && pending.phys + pending.size_bytes() == run.phys => {
                    pending.folio_count += run.folio_count;
                }
                _ => {
                    if let Some(finished) = self.pending.replace(run) {
                        return Some(Ok(finished));
                    }
                }
            }
        }
    }
}

/// Iterator over single folios, expanding [`IndexRuns`].
pub(crate) struct IndexFolios<'a, M: ?Sized> {
    runs: IndexRuns<'a, M>,
    current: Option<(FolioRun, u64)>,
}

impl<'a, M: PhysMemory + ?Sized> IndexFolios<'a, M> {
    pub fn new(memory: &'a M, index: &'a BitmapIndex) -> Self {
        Self { runs: IndexRuns::new(memory, index), current: None }
    }
}

impl<M: PhysMemory + ?Sized> Iterator for IndexFolios<'_, M> {
    type Item = Result<Folio, AccessError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((run, position)) = &mut self.current {
                if *position < run.folio_count {
                    let folio = Folio { phys: run.phys + (*position << folio_shift(run.order)), order: run.order };
                    *position += 1;
                    return Some(Ok(folio));
                }
                self.current = None;
            }
            match self.runs.next()? {
                Ok(run) => self.current = Some((run, 0)),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_of(words: &BitmapWords, low: u64, high: u64) -> Vec<(u64, u64)> {
        let mut runs = Vec::new();
        for_each_bit_run(words, low, high, |start, end| runs.push((start, end)));
        runs
    }

    #[test]
    fn geometry_matches_the_seeds() {
        assert_eq!(bitmap_span_bytes(0), 16 << 20, "an order-0 bitmap covers 16 MiB");
        assert_eq!(bitmap_span_bytes(18), 4 << 40, "an order-18 (1 GiB) bitmap covers 4 TiB");
        let (key, bit) = locate(0x1234_5000, 0);
        assert_eq!(key, BitmapKey { order: 0, number: 0x1234_5000 >> 24 });
        assert_eq!(bit, (0x1234_5000 >> 12) & 4095);
        assert_eq!(key.phys_start() + (bit << 12), 0x1234_5000);
    }

    #[test]
    fn bit_runs_use_word_boundaries_correctly() {
        let mut words = [0_u64; WORDS_PER_BITMAP];
        words[0] = 0b1110_0110;
        words[1] = u64::MAX;
        words[2] = 0b1;
        words[3] = 1 << 63;
        words[63] = u64::MAX;
        assert_eq!(runs_of(&words, 0, 4096), [(1, 3), (5, 8), (64, 129), (255, 256), (4032, 4096)]);
        assert_eq!(runs_of(&words, 2, 100), [(2, 3), (5, 8), (64, 100)]);
        assert_eq!(count_bits(&words, 0, 4096), 5 + 64 + 1 + 1 + 64);
        assert_eq!(count_bits(&words, 6, 66), 2 + 2);
    }

    #[test]
    fn split_is_natural_and_maximal() {
        let folios: Vec<Folio> = split_range(PhysRange::new(0x3000, 0x1_2000)).collect();
        assert_eq!(
            folios,
            [
                Folio { phys: 0x3000, order: 0 },
                Folio { phys: 0x4000, order: 2 },
                Folio { phys: 0x8000, order: 3 },
                Folio { phys: 0x1_0000, order: 1 },
            ]
        );
        // The seeds' ilog2-only split would start with an order-3 folio at
        // 0x3000, which is not aligned to its size.
        for folio in &folios {
            assert_eq!(folio.phys % folio.size_bytes(), 0);
        }
        let whole: Vec<Folio> = split_range(PhysRange::new(1 << 40, 1 << 41)).collect();
        assert_eq!(whole, [Folio { phys: 1 << 40, order: 28 }]);
    }

    #[test]
    fn split_caps_at_max_order() {
        let huge = PhysRange::new(0, 3 << (MAX_ORDER + 12));
        let folios: Vec<Folio> = split_range(huge).collect();
        assert_eq!(folios.len(), 3);
        assert!(folios.iter().all(|folio| folio.order == MAX_ORDER));
    }

    #[test]
    fn folio_rules() {
        assert_eq!(check_folio(0x1000, 0), Ok(()));
        assert_eq!(check_folio(0x1000, 1), Err(FolioRuleError::Misaligned));
        assert_eq!(check_folio(0, MAX_ORDER + 1), Err(FolioRuleError::OrderTooLarge));
        assert_eq!(check_folio(PHYS_ADDRESS_LIMIT - 4096, 0), Ok(()));
        assert_eq!(check_folio(PHYS_ADDRESS_LIMIT, 0), Err(FolioRuleError::AddressTooLarge));
        assert_eq!(check_folio(!0xfff_u64, 0), Err(FolioRuleError::AddressTooLarge));
    }
}
