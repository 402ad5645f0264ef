//! IPC helpers: finding services by name, waiting for them, and the server
//! loop shape most services use.

use crate::{Message, Result, syscall};

/// Looks a service up, retrying (with short sleeps) until it exists or
/// `timeout_ns` passes.
pub fn wait_for_service(name: &str, timeout_ns: u64) -> Result<u64> {
    let deadline = syscall::clock().saturating_add(timeout_ns);
    loop {
        match syscall::lookup(name) {
            Ok(id) => return Ok(id),
            Err(error) if syscall::clock() >= deadline => return Err(error),
            Err(_) => syscall::sleep(1_000_000),
        }
    }
}

/// Sends a request with `label` and `words` and returns the reply.
pub fn request(target: u64, label: u64, words: [u64; baton_abi::MESSAGE_WORDS]) -> Result<Message> {
    syscall::call_service(target, &Message::new(label, words))
}
