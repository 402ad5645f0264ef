//! Fuzz target: message decoding (what a receiver gets) and the byte
//! strings packed into message words, which services read from each other.
#![no_main]

use baton_abi::Message;
use baton_abi::message::MESSAGE_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = <&[u8; MESSAGE_BYTES]>::try_from(data.get(..MESSAGE_BYTES).unwrap_or(&[])) {
        let message = Message::from_bytes(bytes);
        assert_eq!(&message.to_bytes(), bytes);
        // Any length a peer claims is either refused or stays in bounds.
        let length = data.get(MESSAGE_BYTES).copied().unwrap_or(0) as usize;
        let mut out = [0u8; 64];
        if let Some(unpacked) = Message::unpack_bytes(&message.words, length, &mut out) {
            assert!(unpacked <= 48 && unpacked == length);
        }
    }
    if let Some(words) = Message::pack_bytes(data) {
        let mut out = [0u8; 48];
        assert_eq!(Message::unpack_bytes(&words, data.len(), &mut out), Some(data.len()));
        assert_eq!(&out[..data.len()], data);
    }
});
