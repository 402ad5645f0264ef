//! A shared-memory channel between two services: one region both map, two
//! byte rings in it (one each way), each with a producer index only its
//! writer stores and a consumer index only its reader stores.
//!
//! Everything the peer can write is hostile: its indices and the bytes in
//! its ring. An endpoint keeps its own indices in its own memory (never
//! reading back what the peer could have overwritten), checks the peer's
//! against them before every use, and touches the region only through a
//! [`SharedMemory`] that bounds every access. A peer that breaks the rules
//! ([`ChannelError::PeerCorrupt`]) breaks the channel, never the reader.
//!
//! # Layout
//!
//! All words are native-endian `u32`, each alone on a 64-byte line.
//!
//! | offset | field | written by |
//! |---:|---|---|
//! | 0 | magic `BCH1` | creator |
//! | 4 | format version (1) | creator |
//! | 8 | bytes per ring (a power of two, 64 to 2^30) | creator |
//! | 64 | ring 0 producer index | creator |
//! | 128 | ring 0 consumer index | attacher |
//! | 192 | ring 1 producer index | attacher |
//! | 256 | ring 1 consumer index | creator |
//! | 4096 | ring 0 bytes (creator to attacher) | creator |
//! | 4096 + size | ring 1 bytes (attacher to creator) | attacher |
//!
//! Indices count bytes and wrap at 2^32; a ring holds `producer -
//! consumer` bytes (wrapping), never more than its size. The region is
//! `4096 + 2 × size` bytes.
//!
//! Written here rather than taken from a crate: the ring crates on
//! crates.io (ringbuf, heapless, bbqueue) trust the memory they share,
//! which a peer service can overwrite at will.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::unwrap_used)]

use core::fmt;

/// `BCH1`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"BCH1");
/// The only format version.
pub const VERSION: u32 = 1;
/// Where the rings' bytes start.
pub const DATA_OFFSET: usize = 4096;
/// The smallest ring.
pub const MIN_RING_BYTES: u32 = 64;
/// The largest ring.
pub const MAX_RING_BYTES: u32 = 1 << 30;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 4;
const SIZE_OFFSET: usize = 8;
/// One of the two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ring {
    /// Creator to attacher.
    Zero,
    /// Attacher to creator.
    One,
}

impl Ring {
    /// Offset of its producer index.
    const fn producer(self) -> usize {
        match self {
            Ring::Zero => 64,
            Ring::One => 192,
        }
    }

    /// Offset of its consumer index.
    const fn consumer(self) -> usize {
        match self {
            Ring::Zero => 128,
            Ring::One => 256,
        }
    }

    /// Offset of its first byte, for rings of `ring_bytes` (at most
    /// [`MAX_RING_BYTES`], so this never overflows).
    const fn data(self, ring_bytes: u32) -> usize {
        match self {
            Ring::Zero => DATA_OFFSET,
            Ring::One => DATA_OFFSET.wrapping_add(ring_bytes as usize),
        }
    }
}

/// The pieces of `count` bytes starting at ring index `index`, split where
/// the ring wraps: (offset in the ring, range in the caller's buffer).
fn pieces(ring_bytes: u32, index: u32, count: usize) -> impl Iterator<Item = (usize, core::ops::Range<usize>)> {
    let ring_bytes = ring_bytes as usize;
    let mask = ring_bytes.wrapping_sub(1);
    let first_offset = index as usize & mask;
    let first = count.min(ring_bytes.wrapping_sub(first_offset));
    let second = count.saturating_sub(first);
    [(first_offset, 0..first), (0, first..first.wrapping_add(second))]
        .into_iter()
        .filter(|(_, range)| !range.is_empty())
}

/// The region both services map. Implementations bound every access to
/// the region (an access outside it is a bug in this crate, and they may
/// panic on it) and read and write shared memory so that the peer's
/// concurrent writes cannot be assumed away (atomic or volatile).
pub trait SharedMemory {
    /// The region's size in bytes.
    fn size_bytes(&self) -> usize;
    /// Loads the word at `offset` (4-byte aligned).
    fn load(&self, offset: usize) -> u32;
    /// Stores `value` at `offset` (4-byte aligned), after every byte
    /// written before it (release).
    fn store(&mut self, offset: usize, value: u32);
    /// Copies `destination.len()` bytes from `offset`.
    fn read(&self, offset: usize, destination: &mut [u8]);
    /// Copies `source` to `offset`.
    fn write(&mut self, offset: usize, source: &[u8]);
}

/// Which end of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The service that created the region and granted it.
    Creator,
    /// The service it was granted to.
    Attacher,
}

impl Side {
    /// The ring this side writes, and the one it reads.
    const fn rings(self) -> (Ring, Ring) {
        match self {
            Side::Creator => (Ring::Zero, Ring::One),
            Side::Attacher => (Ring::One, Ring::Zero),
        }
    }
}

/// Why a channel call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// The region is too small for the rings asked for, or the size is
    /// not a power of two from [`MIN_RING_BYTES`] to [`MAX_RING_BYTES`].
    BadSize,
    /// The region does not start with the magic and version.
    NotAChannel,
    /// The peer broke the rules: an index says its ring holds more than
    /// fits, or a consumer index is ahead of what was produced. The
    /// channel stays broken.
    PeerCorrupt {
        /// The index read.
        index: u32,
        /// What this side's own index allows.
        expected_within: u32,
    },
}

impl fmt::Display for ChannelError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize => write!(formatter, "the region cannot hold rings of that size"),
            Self::NotAChannel => write!(formatter, "the region is not a channel"),
            Self::PeerCorrupt { index, expected_within } => {
                write!(formatter, "the peer wrote index {index:#x}, more than {expected_within:#x} bytes from ours")
            }
        }
    }
}

impl core::error::Error for ChannelError {}

/// One end of a channel.
#[derive(Debug)]
pub struct Endpoint<M: SharedMemory> {
    memory: M,
    side: Side,
    ring_bytes: u32,
    /// Bytes this side has produced into its ring (its own copy).
    produced: u32,
    /// Bytes this side has consumed from the peer's ring (its own copy).
    consumed: u32,
    /// Set by the first rule the peer broke.
    broken: Option<ChannelError>,
}

fn check_ring_bytes(ring_bytes: u32, region_bytes: usize) -> Result<(), ChannelError> {
    if !ring_bytes.is_power_of_two() || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&ring_bytes) {
        return Err(ChannelError::BadSize);
    }
    let needed = usize::try_from(ring_bytes)
        .ok()
        .and_then(|bytes| bytes.checked_mul(2))
        .and_then(|bytes| bytes.checked_add(DATA_OFFSET))
        .ok_or(ChannelError::BadSize)?;
    if region_bytes < needed {
        return Err(ChannelError::BadSize);
    }
    Ok(())
}

impl<M: SharedMemory> Endpoint<M> {
    /// Lays a fresh channel with rings of `ring_bytes` out in `memory` and
    /// returns the creator's end (publish the region to the peer after).
    pub fn create(mut memory: M, ring_bytes: u32) -> Result<Self, ChannelError> {
        check_ring_bytes(ring_bytes, memory.size_bytes())?;
        for ring in [Ring::Zero, Ring::One] {
            memory.store(ring.producer(), 0);
            memory.store(ring.consumer(), 0);
        }
        memory.store(SIZE_OFFSET, ring_bytes);
        memory.store(VERSION_OFFSET, VERSION);
        memory.store(MAGIC_OFFSET, MAGIC);
        Ok(Endpoint { memory, side: Side::Creator, ring_bytes, produced: 0, consumed: 0, broken: None })
    }

    /// Attaches to a channel a peer laid out, as `side`: a new attacher,
    /// or either side's next instance after a restart (which takes its own
    /// indices from the region once, checked against the peer's).
    pub fn attach(memory: M, side: Side) -> Result<Self, ChannelError> {
        if memory.load(MAGIC_OFFSET) != MAGIC || memory.load(VERSION_OFFSET) != VERSION {
            return Err(ChannelError::NotAChannel);
        }
        let ring_bytes = memory.load(SIZE_OFFSET);
        check_ring_bytes(ring_bytes, memory.size_bytes())?;
        let (sending, receiving) = side.rings();
        let produced = memory.load(sending.producer());
        let consumed = memory.load(receiving.consumer());
        let mut endpoint = Endpoint { memory, side, ring_bytes, produced, consumed, broken: None };
        // What it takes over must be a state the rules allow.
        endpoint.writable()?;
        endpoint.readable()?;
        Ok(endpoint)
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Bytes per ring.
    pub fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }

    /// The region, given back.
    pub fn into_memory(self) -> M {
        self.memory
    }

    fn fail(&mut self, error: ChannelError) -> ChannelError {
        *self.broken.get_or_insert(error)
    }

    /// Bytes the peer has produced and this side not yet consumed.
    pub fn readable(&mut self) -> Result<u32, ChannelError> {
        if let Some(error) = self.broken {
            return Err(error);
        }
        let (_, receiving) = self.side.rings();
        let peer_produced = self.memory.load(receiving.producer());
        let available = peer_produced.wrapping_sub(self.consumed);
        if available > self.ring_bytes {
            return Err(self.fail(ChannelError::PeerCorrupt { index: peer_produced, expected_within: self.ring_bytes }));
        }
        Ok(available)
    }

    /// Room in this side's ring.
    pub fn writable(&mut self) -> Result<u32, ChannelError> {
        if let Some(error) = self.broken {
            return Err(error);
        }
        let (sending, _) = self.side.rings();
        let peer_consumed = self.memory.load(sending.consumer());
        let held = self.produced.wrapping_sub(peer_consumed);
        if held > self.ring_bytes {
            return Err(self.fail(ChannelError::PeerCorrupt { index: peer_consumed, expected_within: self.ring_bytes }));
        }
        Ok(self.ring_bytes.wrapping_sub(held))
    }

    /// Copies as much of `bytes` as fits into this side's ring; how much.
    pub fn send(&mut self, bytes: &[u8]) -> Result<usize, ChannelError> {
        let room = self.writable()? as usize;
        let count = bytes.len().min(room);
        let (sending, _) = self.side.rings();
        let data = sending.data(self.ring_bytes);
        for (offset, range) in pieces(self.ring_bytes, self.produced, count) {
            if let Some(chunk) = bytes.get(range) {
                self.memory.write(data.wrapping_add(offset), chunk);
            }
        }
        // `count` is at most the ring's size, which fits in 32 bits.
        self.produced = self.produced.wrapping_add(count as u32);
        self.memory.store(sending.producer(), self.produced);
        Ok(count)
    }

    /// Copies what the peer sent, up to `destination.len()` bytes; how
    /// much. The bytes are the peer's: check them like any input.
    pub fn receive(&mut self, destination: &mut [u8]) -> Result<usize, ChannelError> {
        let available = self.readable()? as usize;
        let count = destination.len().min(available);
        let (_, receiving) = self.side.rings();
        let data = receiving.data(self.ring_bytes);
        for (offset, range) in pieces(self.ring_bytes, self.consumed, count) {
            if let Some(chunk) = destination.get_mut(range) {
                self.memory.read(data.wrapping_add(offset), chunk);
            }
        }
        self.consumed = self.consumed.wrapping_add(count as u32);
        self.memory.store(receiving.consumer(), self.consumed);
        Ok(count)
    }
}

/// The region size for rings of `ring_bytes`.
pub const fn region_bytes(ring_bytes: u32) -> usize {
    DATA_OFFSET.saturating_add((ring_bytes as usize).saturating_mul(2))
}
