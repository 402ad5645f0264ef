//! A hostile peer against one endpoint: every word the peer may write
//! (its producer and consumer index) and every byte of its ring come from
//! the fuzzer, between operations the fuzzer picks. The endpoint must
//! never panic, never touch memory outside the region, never report more
//! bytes than its ring holds or the buffer takes, and once it has refused
//! the peer it refuses it for good.

#![no_main]

use baton_channel::{ChannelError, Endpoint, SharedMemory, Side, region_bytes};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::rc::Rc;

const RING: u32 = 64;

#[derive(Clone)]
struct Region(Rc<RefCell<Vec<u8>>>);

impl SharedMemory for Region {
    fn size_bytes(&self) -> usize {
        self.0.borrow().len()
    }
    fn load(&self, offset: usize) -> u32 {
        let bytes = self.0.borrow();
        u32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }
    fn store(&mut self, offset: usize, value: u32) {
        self.0.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }
    fn read(&self, offset: usize, destination: &mut [u8]) {
        destination.copy_from_slice(&self.0.borrow()[offset..offset + destination.len()]);
    }
    fn write(&mut self, offset: usize, source: &[u8]) {
        self.0.borrow_mut()[offset..offset + source.len()].copy_from_slice(source);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, script)) = data.split_first() else { return };
    let side = if first & 1 == 0 { Side::Creator } else { Side::Attacher };
    let region = Region(Rc::new(RefCell::new(vec![0; region_bytes(RING)])));
    // The creator lays the region out; attaching reads it back (the
    // fuzzer may first scribble the peer's words).
    let Ok(creator) = Endpoint::create(region.clone(), RING) else { return };
    let mut endpoint = match side {
        Side::Creator => creator,
        Side::Attacher => match Endpoint::attach(region.clone(), Side::Attacher) {
            Ok(endpoint) => endpoint,
            Err(_) => return,
        },
    };
    // The peer's words: producer of the ring this side reads, consumer of
    // the ring it writes.
    let (peer_producer, peer_consumer, peer_ring) = match side {
        Side::Creator => (192, 128, 4096 + RING as usize),
        Side::Attacher => (64, 256, 4096),
    };
    let mut broken: Option<ChannelError> = None;
    let mut chunks = script.chunks_exact(5);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes(chunk[1..5].try_into().unwrap());
        match chunk[0] % 5 {
            0 => region.clone().store(peer_producer, value),
            1 => region.clone().store(peer_consumer, value),
            2 => {
                let offset = peer_ring + (value as usize % RING as usize);
                region.0.borrow_mut()[offset] = chunk[1];
            }
            3 => {
                let mut buffer = vec![0u8; usize::from(chunk[1])];
                match endpoint.receive(&mut buffer) {
                    Ok(count) => {
                        assert!(broken.is_none(), "a refused peer was trusted again");
                        assert!(count <= buffer.len() && count <= RING as usize);
                    }
                    Err(error) => {
                        assert_eq!(*broken.get_or_insert(error), error, "the first refusal sticks");
                    }
                }
            }
            _ => {
                let bytes = vec![chunk[2]; usize::from(chunk[1])];
                match endpoint.send(&bytes) {
                    Ok(count) => {
                        assert!(broken.is_none(), "a refused peer was trusted again");
                        assert!(count <= bytes.len() && count <= RING as usize);
                    }
                    Err(error) => {
                        assert_eq!(*broken.get_or_insert(error), error, "the first refusal sticks");
                    }
                }
            }
        }
    }
    // A restarted end reattaching to whatever the peer left must not
    // panic either.
    let _ = Endpoint::attach(region, side);
});
