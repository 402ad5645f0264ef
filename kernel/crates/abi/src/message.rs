//! IPC messages: a label, the sender and six words, 64 bytes, copied by the kernel
//! between address spaces.

/// Data words in a message.
pub const MESSAGE_WORDS: usize = 6;

/// One IPC message. Its layout is part of the ABI: `#[repr(C)]`, 8 words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Message {
    /// What the message means (protocol-defined).
    pub label: u64,
    /// Who sent it: filled in by the kernel on receive (a service id, or
    /// [`KERNEL_SENDER`] for lifecycle events).
    pub sender: u64,
    /// Payload.
    pub words: [u64; MESSAGE_WORDS],
}

/// The sender id of messages the kernel itself sends.
pub const KERNEL_SENDER: u64 = u64::MAX;

/// Size of a message in bytes.
pub const MESSAGE_BYTES: usize = core::mem::size_of::<Message>();
const _: () = assert!(MESSAGE_BYTES == 64, "docs/abi.md documents 64-byte messages");

impl Message {
    /// A message with a label and words.
    pub const fn new(label: u64, words: [u64; MESSAGE_WORDS]) -> Self {
        Self { label, sender: 0, words }
    }

    /// The message as bytes (little-endian words).
    pub fn to_bytes(&self) -> [u8; MESSAGE_BYTES] {
        let mut bytes = [0u8; MESSAGE_BYTES];
        let words = [self.label, self.sender].into_iter().chain(self.words);
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    /// The message encoded by [`Message::to_bytes`].
    pub fn from_bytes(bytes: &[u8; MESSAGE_BYTES]) -> Self {
        let mut words = [0u64; 2 + MESSAGE_WORDS];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut array = [0u8; 8];
            array.copy_from_slice(chunk);
            *word = u64::from_le_bytes(array);
        }
        let mut payload = [0u64; MESSAGE_WORDS];
        payload.copy_from_slice(&words[2..]);
        Self { label: words[0], sender: words[1], words: payload }
    }

    /// Packs up to 48 bytes of `data` into the words (for short strings such
    /// as keys); the length goes into the caller's protocol.
    pub fn pack_bytes(data: &[u8]) -> Option<[u64; MESSAGE_WORDS]> {
        if data.len() > MESSAGE_WORDS * 8 {
            return None;
        }
        let mut words = [0u64; MESSAGE_WORDS];
        for (index, &byte) in data.iter().enumerate() {
            words[index / 8] |= u64::from(byte) << (8 * (index % 8));
        }
        Some(words)
    }

    /// The first `length` bytes packed by [`Message::pack_bytes`].
    pub fn unpack_bytes(words: &[u64], length: usize, out: &mut [u8]) -> Option<usize> {
        if length > words.len() * 8 || length > out.len() {
            return None;
        }
        for (index, byte) in out.iter_mut().take(length).enumerate() {
            *byte = (words[index / 8] >> (8 * (index % 8))) as u8;
        }
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_eight_words() {
        assert_eq!(MESSAGE_BYTES, 64);
        assert_eq!(core::mem::align_of::<Message>(), 8);
    }

    #[test]
    fn oversized_data_is_refused() {
        assert!(Message::pack_bytes(&[0; 49]).is_none());
        let words = [0u64; MESSAGE_WORDS];
        assert!(Message::unpack_bytes(&words, 49, &mut [0; 64]).is_none());
        assert!(Message::unpack_bytes(&words, 10, &mut [0; 4]).is_none());
    }

    proptest! {
        #[test]
        fn bytes_round_trip(label: u64, sender: u64, words: [u64; MESSAGE_WORDS]) {
            let message = Message { label, sender, words };
            prop_assert_eq!(Message::from_bytes(&message.to_bytes()), message);
        }

        #[test]
        fn packed_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..=48)) {
            let words = Message::pack_bytes(&data).unwrap();
            let mut out = [0u8; 48];
            let length = Message::unpack_bytes(&words, data.len(), &mut out).unwrap();
            prop_assert_eq!(&out[..length], &data[..]);
        }
    }
}
