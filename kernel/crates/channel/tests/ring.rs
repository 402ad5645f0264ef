//! Two endpoints over one region, and a peer that breaks every rule it
//! can: the reader keeps its own indices, refuses what does not add up,
//! and stays broken after.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use baton_channel::{ChannelError, DATA_OFFSET, Endpoint, MAGIC, SharedMemory, Side, region_bytes};
use std::cell::RefCell;
use std::rc::Rc;

/// A region both endpoints see, bounds-checked like the real one.
#[derive(Clone, Debug)]
struct Region(Rc<RefCell<Vec<u8>>>);

impl Region {
    fn new(size_bytes: usize) -> Region {
        Region(Rc::new(RefCell::new(vec![0; size_bytes])))
    }

    /// What the peer writes behind the endpoint's back.
    fn poke(&self, offset: usize, value: u32) {
        self.0.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn peek(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.0.borrow()[offset..offset + 4].try_into().unwrap())
    }
}

impl SharedMemory for Region {
    fn size_bytes(&self) -> usize {
        self.0.borrow().len()
    }
    fn load(&self, offset: usize) -> u32 {
        assert_eq!(offset % 4, 0);
        self.peek(offset)
    }
    fn store(&mut self, offset: usize, value: u32) {
        assert_eq!(offset % 4, 0);
        self.poke(offset, value);
    }
    fn read(&self, offset: usize, destination: &mut [u8]) {
        destination.copy_from_slice(&self.0.borrow()[offset..offset + destination.len()]);
    }
    fn write(&mut self, offset: usize, source: &[u8]) {
        self.0.borrow_mut()[offset..offset + source.len()].copy_from_slice(source);
    }
}

const RING: u32 = 256;

fn pair() -> (Region, Endpoint<Region>, Endpoint<Region>) {
    let region = Region::new(region_bytes(RING));
    let creator = Endpoint::create(region.clone(), RING).unwrap();
    let attacher = Endpoint::attach(region.clone(), Side::Attacher).unwrap();
    (region, creator, attacher)
}

#[test]
fn bytes_cross_both_ways_and_wrap_around_the_ring() {
    let (_, mut creator, mut attacher) = pair();
    let mut received = Vec::new();
    let mut buffer = [0u8; 100];
    // 40 messages of 100 bytes through a 256-byte ring: it wraps many times.
    for round in 0..40u8 {
        let message: Vec<u8> = (0..100).map(|byte| byte ^ round).collect();
        assert_eq!(creator.send(&message).unwrap(), 100);
        let count = attacher.receive(&mut buffer).unwrap();
        received.extend_from_slice(&buffer[..count]);
        assert_eq!(&buffer[..count], message.as_slice());
        assert_eq!(attacher.send(&buffer[..count]).unwrap(), count);
        assert_eq!(creator.receive(&mut buffer).unwrap(), count);
    }
    assert_eq!(received.len(), 4000);
}

#[test]
fn a_full_ring_takes_what_fits_and_an_empty_one_gives_nothing() {
    let (_, mut creator, mut attacher) = pair();
    assert_eq!(attacher.receive(&mut [0; 16]).unwrap(), 0);
    assert_eq!(creator.send(&[7; 300]).unwrap(), 256, "a 256-byte ring takes 256 bytes");
    assert_eq!(creator.send(&[7; 1]).unwrap(), 0);
    assert_eq!(creator.writable().unwrap(), 0);
    assert_eq!(attacher.readable().unwrap(), 256);
    assert_eq!(attacher.receive(&mut [0; 56]).unwrap(), 56);
    assert_eq!(creator.writable().unwrap(), 56);
}

#[test]
fn a_producer_index_past_the_ring_breaks_the_channel_for_good() {
    let (region, mut creator, mut attacher) = pair();
    creator.send(b"hello").unwrap();
    // The creator's producer index, as a hostile creator would write it.
    region.poke(64, 5 + RING + 1);
    let error = attacher.receive(&mut [0; 16]).unwrap_err();
    assert_eq!(error, ChannelError::PeerCorrupt { index: 5 + RING + 1, expected_within: RING });
    // Put right, it stays broken: the peer cannot be trusted again.
    region.poke(64, 5);
    assert_eq!(attacher.receive(&mut [0; 16]), Err(error));
    assert_eq!(attacher.send(b"x"), Err(error));
}

#[test]
fn a_consumer_index_ahead_of_what_was_sent_breaks_the_channel() {
    let (region, mut creator, _attacher) = pair();
    creator.send(&[1; 10]).unwrap();
    // The attacher claims to have consumed more than was produced: read
    // as "held" it wraps to nearly 2^32.
    region.poke(128, 11);
    assert!(matches!(creator.writable(), Err(ChannelError::PeerCorrupt { index: 11, .. })));
    assert!(creator.send(&[1]).is_err());
}

#[test]
fn the_peer_cannot_move_this_sides_own_indices() {
    let (region, mut creator, mut attacher) = pair();
    creator.send(b"abcdef").unwrap();
    // The attacher's consumer index belongs to the attacher; a creator
    // overwriting it changes nothing for the attacher, which keeps its own.
    region.poke(128, 3);
    let mut buffer = [0u8; 8];
    assert_eq!(attacher.receive(&mut buffer).unwrap(), 6);
    assert_eq!(&buffer[..6], b"abcdef", "read from where the attacher itself stood");
    assert_eq!(region.peek(128), 6, "and its index written back");
}

#[test]
fn indices_wrap_at_the_top_of_their_range() {
    for start in [u32::MAX, u32::MAX - 3, (1 << 31) + 17] {
        let region = Region::new(region_bytes(RING));
        Endpoint::create(region.clone(), RING).unwrap();
        // A consistent state with every index near the top: both ends
        // (restarted) take it up from the region.
        for offset in [64, 128, 192, 256] {
            region.poke(offset, start);
        }
        let mut creator = Endpoint::attach(region.clone(), Side::Creator).unwrap();
        let mut attacher = Endpoint::attach(region.clone(), Side::Attacher).unwrap();
        let message: Vec<u8> = (0..200u8).collect();
        assert_eq!(creator.send(&message).unwrap(), 200);
        assert_eq!(region.peek(64), start.wrapping_add(200), "the producer index wrapped");
        let mut buffer = [0u8; 256];
        assert_eq!(attacher.receive(&mut buffer).unwrap(), 200);
        assert_eq!(&buffer[..200], message.as_slice());
        assert_eq!(creator.writable().unwrap(), RING);
    }
}

#[test]
fn a_restarted_end_takes_up_its_indices_from_the_region() {
    let (region, mut creator, attacher) = pair();
    creator.send(b"before the restart").unwrap();
    drop(attacher);
    // The attacher's next instance: the bytes still waiting are its.
    let mut again = Endpoint::attach(region.clone(), Side::Attacher).unwrap();
    let mut buffer = [0u8; 32];
    let count = again.receive(&mut buffer).unwrap();
    assert_eq!(&buffer[..count], b"before the restart");
    // A region left in a state no writer could reach is refused.
    region.poke(192, 1000);
    assert!(matches!(Endpoint::attach(region.clone(), Side::Attacher), Err(ChannelError::PeerCorrupt { .. })));
}

#[test]
fn garbage_and_wrong_sizes_are_not_channels() {
    assert_eq!(Endpoint::create(Region::new(region_bytes(RING) - 1), RING).unwrap_err(), ChannelError::BadSize);
    assert_eq!(Endpoint::create(Region::new(1 << 20), 100).unwrap_err(), ChannelError::BadSize);
    assert_eq!(Endpoint::create(Region::new(1 << 20), 32).unwrap_err(), ChannelError::BadSize);
    assert_eq!(Endpoint::attach(Region::new(1 << 20), Side::Attacher).unwrap_err(), ChannelError::NotAChannel);
    let region = Region::new(region_bytes(RING));
    Endpoint::create(region.clone(), RING).unwrap();
    assert_eq!(region.peek(0), MAGIC);
    // A size that would reach past the region.
    region.poke(8, 1 << 16);
    assert_eq!(Endpoint::attach(region.clone(), Side::Attacher).unwrap_err(), ChannelError::BadSize);
    assert_eq!(DATA_OFFSET, 4096);
}
