//! A handed-over Redis table is hostile: a directory and blocks damaged
//! any way must be refused or read without a panic, migrate, and take
//! writes afterwards.

#![no_main]

use baton_resp::{HeapMemory, Keyspace, Memory, Store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, damage)) = data.split_first() else { return };
    let Ok(mut keys) = Keyspace::new(HeapMemory::new(), 1, [1, 2]) else { return };
    for number in 0..200u32 {
        let value = vec![number as u8; (number % 50) as usize];
        let _ = keys.put(format!("key:{number}").as_bytes(), &value, (number % 3 == 0).then_some(u64::from(number)));
    }
    let Some(mut directory) = keys.directory() else { return };
    let blocks = keys.blocks();
    let mut memory = keys.into_memory();
    // Pairs of (where, what): XORed into the directory or into a block.
    for pair in damage.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]]));
        if mode & 1 == 0 {
            let length = directory.len();
            directory[at % length] ^= pair[2];
        } else {
            let block = blocks[at % blocks.len()];
            let bytes = memory.bytes_mut(&block);
            let length = bytes.len();
            bytes[(at * 61) % length] ^= pair[2];
        }
    }
    let Ok(mut keys) = Keyspace::from_directory(memory, &directory, 2, [3, 4]) else { return };
    for number in 0..200u32 {
        let _ = keys.get(format!("key:{number}").as_bytes());
    }
    let _ = keys.scan(0, 50);
    while keys.migrate(32) {}
    let _ = keys.keys();
    let _ = keys.put(b"after", b"damage", None);
    let _ = keys.remove(b"key:7");
    let _ = keys.set_expiry(b"key:8", Some(5));
});
