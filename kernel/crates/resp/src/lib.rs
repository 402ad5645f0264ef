//! kvstore's Redis side: requests read off a connection's bytes (RESP2
//! arrays of bulk strings, decoded by the `redis-protocol` crate), checked
//! against limits before anything is allocated for them, and the commands
//! of Redis's string keyspace run against a [`Store`].
//!
//! Everything a client sends is hostile: a bulk length past the limit or
//! bytes that are not RESP give an error reply and a closed connection
//! ([`Framer`]), never a panic or an allocation of the claimed size.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod commands;
mod framer;
pub mod glob;
mod handover;
mod keyspace;
mod sessions;
mod store;
pub mod table;

pub use commands::{Client, Command, Limits, MAX_CLIENTS, MAX_CLIENTS_REPLY, Outcome, ServerInfo, execute, parse_size};
pub use framer::{Framer, FramerError};
pub use handover::HandoverPlace;
pub use keyspace::{Keyspace, KeyspaceInfo};
pub use redis_protocol::resp2::types::OwnedFrame as Frame;
pub use sessions::{Session, Sessions, Unsent};
pub use store::{Store, StoreError, is_keyspace_bytes, keyspace_bytes, load_keyspace_bytes};
pub use table::{Block, HeapMemory, Memory, Table, TableError};

/// Encodes `frame` at the end of `out`.
pub fn encode(frame: &Frame, out: &mut alloc::vec::Vec<u8>) {
    use redis_protocol::resp2::types::Resp2Frame;
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    if redis_protocol::resp2::encode::encode(&mut out[start..], frame, false).is_err() {
        // Sized by `encode_len` just above: cannot happen; reply an error
        // rather than garbage.
        out.truncate(start);
        out.extend_from_slice(b"-ERR internal encoding error\r\n");
    }
}

#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
