//! The IPC protocols of Baton's own services (kvstore, counter), encoded in
//! the ABI's fixed-size messages. Shared by the services and their clients;
//! tested on the host.

use baton_abi::{MESSAGE_WORDS, Message};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 16;
/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 24;

/// Reply status: success.
pub const STATUS_OK: u64 = 0;
/// Reply status: no such key / index.
pub const STATUS_NOT_FOUND: u64 = 1;
/// Reply status: the store is full.
pub const STATUS_FULL: u64 = 2;
/// Reply status: a malformed request.
pub const STATUS_BAD_REQUEST: u64 = 3;

/// kvstore requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRequest<'a> {
    /// Store `value` under `key`.
    Put {
        /// Key.
        key: &'a [u8],
        /// Value.
        value: &'a [u8],
    },
    /// Look `key` up.
    Get {
        /// Key.
        key: &'a [u8],
    },
    /// Remove `key`.
    Delete {
        /// Key.
        key: &'a [u8],
    },
    /// The key at position `index` (in key order).
    List {
        /// Position.
        index: u64,
    },
    /// How many keys there are and a checksum over every entry.
    Summary,
}

/// kvstore message labels.
pub mod label {
    /// Put.
    pub const PUT: u64 = 1;
    /// Get.
    pub const GET: u64 = 2;
    /// Delete.
    pub const DELETE: u64 = 3;
    /// List.
    pub const LIST: u64 = 4;
    /// Summary.
    pub const SUMMARY: u64 = 5;
    /// counter: read (and bump) the count and the uptime.
    pub const COUNTER_READ: u64 = 16;
    /// init calls the client for its report once it has checked the state;
    /// the reply's words are failed checks, keys, checksum, counter, uptime
    /// in ms.
    pub const CLIENT_REPORT: u64 = 32;
    /// anyone to ballast: reply once the ballast is allocated and filled;
    /// words are bytes, order, mode (0 in place, 1 copying).
    pub const BALLAST_READY: u64 = 48;
}

/// Packs a key and a value into message words: word 0 holds the lengths,
/// words 1-2 the key, words 3-5 the value.
fn pack(key: &[u8], value: &[u8]) -> Option<[u64; MESSAGE_WORDS]> {
    if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
        return None;
    }
    let mut words = [0u64; MESSAGE_WORDS];
    words[0] = key.len() as u64 | ((value.len() as u64) << 8);
    let key_words = Message::pack_bytes(key)?;
    let value_words = Message::pack_bytes(value)?;
    words[1..3].copy_from_slice(&key_words[..2]);
    words[3..6].copy_from_slice(&value_words[..3]);
    Some(words)
}

/// The key and value packed by [`pack`], into the given buffers.
fn unpack<'k, 'v>(
    words: &[u64; MESSAGE_WORDS],
    key: &'k mut [u8; MAX_KEY_BYTES],
    value: &'v mut [u8; MAX_VALUE_BYTES],
) -> Option<(&'k [u8], &'v [u8])> {
    let key_length = (words[0] & 0xff) as usize;
    let value_length = ((words[0] >> 8) & 0xff) as usize;
    if key_length > MAX_KEY_BYTES || value_length > MAX_VALUE_BYTES || words[0] >> 16 != 0 {
        return None;
    }
    Message::unpack_bytes(&words[1..3], key_length, key)?;
    Message::unpack_bytes(&words[3..6], value_length, value)?;
    Some((&key[..key_length], &value[..value_length]))
}

impl KvRequest<'_> {
    /// The request as a message, or `None` if a key or value is too long.
    pub fn encode(&self) -> Option<Message> {
        let (label, words) = match self {
            KvRequest::Put { key, value } => (label::PUT, pack(key, value)?),
            KvRequest::Get { key } => (label::GET, pack(key, &[])?),
            KvRequest::Delete { key } => (label::DELETE, pack(key, &[])?),
            KvRequest::List { index } => (label::LIST, [*index, 0, 0, 0, 0, 0]),
            KvRequest::Summary => (label::SUMMARY, [0; MESSAGE_WORDS]),
        };
        Some(Message::new(label, words))
    }
}

/// Buffers a decoded request borrows from.
#[derive(Debug, Default)]
pub struct DecodeBuffers {
    key: [u8; MAX_KEY_BYTES],
    value: [u8; MAX_VALUE_BYTES],
}

/// Decodes a kvstore request, or `None` if it is malformed.
pub fn decode_request<'b>(message: &Message, buffers: &'b mut DecodeBuffers) -> Option<KvRequest<'b>> {
    match message.label {
        label::PUT => {
            let (key, value) = unpack(&message.words, &mut buffers.key, &mut buffers.value)?;
            Some(KvRequest::Put { key, value })
        }
        label::GET | label::DELETE => {
            let (key, value) = unpack(&message.words, &mut buffers.key, &mut buffers.value)?;
            if !value.is_empty() {
                return None;
            }
            Some(if message.label == label::GET { KvRequest::Get { key } } else { KvRequest::Delete { key } })
        }
        label::LIST => Some(KvRequest::List { index: message.words[0] }),
        label::SUMMARY => Some(KvRequest::Summary),
        _ => None,
    }
}

/// A reply carrying a status and optionally a key and value.
pub fn encode_reply(status: u64, key: &[u8], value: &[u8]) -> Message {
    Message::new(status, pack(key, value).unwrap_or([0; MESSAGE_WORDS]))
}

/// A reply carrying a status and raw words (summary, counter).
pub fn encode_words_reply(status: u64, words: [u64; MESSAGE_WORDS]) -> Message {
    Message::new(status, words)
}

/// The key and value of a reply.
pub fn decode_reply<'b>(message: &Message, buffers: &'b mut DecodeBuffers) -> Option<(&'b [u8], &'b [u8])> {
    unpack(&message.words, &mut buffers.key, &mut buffers.value)
}

/// FNV-1a, the checksum services use for their state.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut hash = if seed == 0 { 0xcbf2_9ce4_8422_2325 } else { seed };
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_keys_and_values_cannot_be_encoded() {
        assert!(KvRequest::Put { key: &[b'k'; 17], value: b"v" }.encode().is_none());
        assert!(KvRequest::Put { key: b"k", value: &[b'v'; 25] }.encode().is_none());
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let mut buffers = DecodeBuffers::default();
        let mut message = KvRequest::Put { key: b"key", value: b"value" }.encode().unwrap();
        message.words[0] = 40; // key length beyond 16
        assert!(decode_request(&message, &mut buffers).is_none());
        let unknown = Message::new(99, [0; MESSAGE_WORDS]);
        assert!(decode_request(&unknown, &mut buffers).is_none());
        let mut get_with_value = KvRequest::Get { key: b"k" }.encode().unwrap();
        get_with_value.words[0] |= 3 << 8;
        assert!(decode_request(&get_with_value, &mut buffers).is_none());
    }

    #[test]
    fn list_and_summary_round_trip() {
        let mut buffers = DecodeBuffers::default();
        let list = KvRequest::List { index: 42 }.encode().unwrap();
        assert_eq!(decode_request(&list, &mut buffers), Some(KvRequest::List { index: 42 }));
        let summary = KvRequest::Summary.encode().unwrap();
        assert_eq!(decode_request(&summary, &mut buffers), Some(KvRequest::Summary));
    }

    #[test]
    fn checksum_depends_on_every_byte_and_the_seed() {
        assert_ne!(fnv1a(0, b"abc"), fnv1a(0, b"abd"));
        assert_ne!(fnv1a(0, b"abc"), fnv1a(fnv1a(0, b"x"), b"abc"));
        assert_eq!(fnv1a(0, b""), 0xcbf2_9ce4_8422_2325);
    }

    proptest! {
        #[test]
        fn put_requests_round_trip(key in proptest::collection::vec(any::<u8>(), 0..=16), value in proptest::collection::vec(any::<u8>(), 0..=24)) {
            let message = KvRequest::Put { key: &key, value: &value }.encode().unwrap();
            let bytes = message.to_bytes();
            let mut buffers = DecodeBuffers::default();
            let decoded = decode_request(&Message::from_bytes(&bytes), &mut buffers);
            prop_assert_eq!(decoded, Some(KvRequest::Put { key: &key, value: &value }));
        }

        #[test]
        fn decoding_never_panics(label in 0u64..8, words: [u64; MESSAGE_WORDS]) {
            let mut buffers = DecodeBuffers::default();
            let _ = decode_request(&Message::new(label, words), &mut buffers);
        }
    }
}
