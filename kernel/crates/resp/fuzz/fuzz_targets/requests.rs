//! What a Redis client sends is hostile: any bytes, framed and run as
//! commands against the keyspace (its table in heap memory), must give replies or a clean
//! protocol error, never a panic, and the store's byte count must stay
//! true.

#![no_main]

use baton_resp::{Client, Framer, HeapMemory, Keyspace, Limits, ServerInfo, Store, encode, execute};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut store) = Keyspace::new(HeapMemory::new(), 2, [1, 2]) else { return };
    let mut client = Client::new(1);
    let limits =
        Limits { max_value_bytes: 64, max_keys: 32, max_memory_bytes: 1024, max_arguments: 16, max_clients: 4 };
    let info = ServerInfo::default();
    let mut framer = Framer::new();
    let mut out = Vec::new();
    for (index, chunk) in data.chunks(7).enumerate() {
        framer.push(chunk);
        loop {
            match framer.next(limits.max_value_bytes, limits.max_arguments) {
                Ok(Some(request)) => {
                    let (reply, _) = execute(&mut store, &mut client, &limits, &info, index as u64 * 100, &request);
                    encode(&reply, &mut out);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(store.used_bytes() <= limits.max_memory_bytes + 2 * limits.max_value_bytes);
        assert!(store.len() <= limits.max_keys);
    }
});
