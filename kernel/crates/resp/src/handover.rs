//! Where a restarting kvstore leaves its state for the next instance: the
//! keyspace's and the sessions' bytes, one after the other, across folios
//! of one order, named in kvstore's sub-FDT as a list of words (read back
//! as hostile: the next instance checks every count before it restores a
//! folio).

use alloc::vec::Vec;

/// The largest folio order a service allocates (4 MiB folios).
pub const MAX_ORDER: u32 = 10;
/// The most folios a handover names (1 GiB of 4 MiB folios).
pub const MAX_FOLIOS: usize = 256;
const PAGE_BYTES: u64 = 4096;

/// The handed-over state's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverPlace {
    /// The order of every folio.
    pub order: u32,
    /// Bytes of keyspace at the start.
    pub keyspace_bytes: u64,
    /// Bytes of sessions right after them.
    pub session_bytes: u64,
    /// The folios' physical addresses, in the order the bytes run.
    pub folios: Vec<u64>,
}

impl HandoverPlace {
    /// The folio order and count that hold `bytes`: one folio as small as
    /// will do, or as many of the largest as it takes. `None` past
    /// [`MAX_FOLIOS`] of them.
    pub fn layout(bytes: u64) -> Option<(u32, usize)> {
        if let Some(order) = (0..=MAX_ORDER).find(|order| PAGE_BYTES << order >= bytes) {
            return Some((order, 1));
        }
        let count = usize::try_from(bytes.div_ceil(PAGE_BYTES << MAX_ORDER)).ok()?;
        (count <= MAX_FOLIOS).then_some((MAX_ORDER, count))
    }

    /// Bytes of one folio.
    pub fn folio_bytes(&self) -> u64 {
        PAGE_BYTES << self.order.min(MAX_ORDER)
    }

    /// The words the sub-FDT carries: order, keyspace bytes, session
    /// bytes, then each folio.
    pub fn to_words(&self) -> Vec<u64> {
        let mut words = alloc::vec![u64::from(self.order), self.keyspace_bytes, self.session_bytes];
        words.extend_from_slice(&self.folios);
        words
    }

    /// A place read back from [`HandoverPlace::to_words`]; `None` unless
    /// the order is one a service allocates, the folios hold the bytes
    /// and every folio is aligned to its size.
    pub fn from_words(words: &[u64]) -> Option<HandoverPlace> {
        let (&[order, keyspace_bytes, session_bytes], folios) = words.split_first_chunk::<3>()?;
        let order = u32::try_from(order).ok().filter(|order| *order <= MAX_ORDER)?;
        if folios.is_empty() || folios.len() > MAX_FOLIOS {
            return None;
        }
        let place = HandoverPlace { order, keyspace_bytes, session_bytes, folios: folios.to_vec() };
        let total = keyspace_bytes.checked_add(session_bytes)?;
        if total > place.folio_bytes() * folios.len() as u64 {
            return None;
        }
        place.folios.iter().all(|physical| physical % place.folio_bytes() == 0).then_some(place)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_state_takes_one_folio_and_large_state_many() {
        assert_eq!(HandoverPlace::layout(100), Some((0, 1)));
        assert_eq!(HandoverPlace::layout(4097), Some((1, 1)));
        assert_eq!(HandoverPlace::layout(4 << 20), Some((10, 1)));
        assert_eq!(HandoverPlace::layout((4 << 20) + 1), Some((10, 2)));
        assert_eq!(HandoverPlace::layout(1 << 30), Some((10, 256)));
        assert_eq!(HandoverPlace::layout((1 << 30) + 1), None);
    }

    #[test]
    fn the_place_reads_back_and_bad_words_are_refused() {
        let place = HandoverPlace {
            order: 10,
            keyspace_bytes: 5 << 20,
            session_bytes: 100,
            folios: alloc::vec![0x4000_0000, 0x8040_0000],
        };
        assert_eq!(HandoverPlace::from_words(&place.to_words()), Some(place.clone()));
        let mut words = place.to_words();
        // More bytes than the folios hold.
        words[1] = 9 << 20;
        assert_eq!(HandoverPlace::from_words(&words), None);
        // An order no service allocates, a folio off its alignment, none.
        let mut words = place.to_words();
        words[0] = 11;
        assert_eq!(HandoverPlace::from_words(&words), None);
        let mut words = place.to_words();
        words[4] += 4096;
        assert_eq!(HandoverPlace::from_words(&words), None);
        assert_eq!(HandoverPlace::from_words(&place.to_words()[..3]), None);
        assert_eq!(HandoverPlace::from_words(&[]), None);
        // More folios than a handover names.
        let mut many = alloc::vec![10, 1, 0];
        many.extend(core::iter::repeat_n(0x4000_0000, MAX_FOLIOS + 1));
        assert_eq!(HandoverPlace::from_words(&many), None);
    }
}
