//! Fuzz target: system-call decoding, the kernel's first look at every
//! register a service hands it. The input is the number and six arguments
//! (56 bytes, little-endian, zero-padded).
#![no_main]

use baton_abi::{Error, Request, USER_ADDRESS_LIMIT};
use libfuzzer_sys::fuzz_target;

fn word(data: &[u8], index: usize) -> u64 {
    let mut bytes = [0u8; 8];
    for (offset, byte) in bytes.iter_mut().enumerate() {
        *byte = data.get(index * 8 + offset).copied().unwrap_or(0);
    }
    u64::from_le_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    // Small numbers often, so every call is reached.
    let number = word(data, 0) % 32;
    let arguments = [1, 2, 3, 4, 5, 6].map(|index| word(data, index));
    match Request::decode(number, arguments) {
        Ok(request) => {
            // Every accepted buffer lies in the user half without wrapping.
            let buffers = match request {
                Request::Log(buffer)
                | Request::Lookup(buffer)
                | Request::KhoPreserve(buffer)
                | Request::KhoUnpreserve(buffer)
                | Request::KhoPublish(buffer) => vec![buffer],
                Request::Send { message, .. }
                | Request::Receive { message }
                | Request::Call { message, .. }
                | Request::Reply { message, .. } => vec![message],
                Request::Spawn { name, .. } => vec![name],
                _ => vec![],
            };
            for buffer in buffers {
                assert!(buffer.address.checked_add(buffer.length).is_some());
                assert!(buffer.end() <= USER_ADDRESS_LIMIT || buffer.length == 64);
            }
        }
        Err(error) => assert_ne!(error.number(), 0),
    }
    let _ = Error::from_number(word(data, 1));
});
