//! netd's socket records: how a network service and a client service talk
//! over a `baton-channel` byte stream.
//!
//! The client asks netd over IPC to listen on a TCP port; netd lays a
//! channel out in a region of its own and grants it to the client, which
//! maps it. From then on everything about that port's connections travels
//! as records in the channel's two rings:
//!
//! | kind | direction | payload |
//! |---:|---|---|
//! | 1 `Accepted` | netd to client | the remote IPv4 address (4 bytes) and port (2, little-endian) |
//! | 2 `Data` | both | the bytes (1 to [`MAX_PAYLOAD`]) |
//! | 3 `Closed` | netd to client | none: the remote end finished sending (or reset) and every byte it sent came before this |
//! | 4 `Close` | client to netd | none: close it (after the data already sent) |
//!
//! A connection's number belongs to it until the client sends `Close`,
//! also after netd said `Closed` (the client answers it with `Close`,
//! after any last replies: a remote end that only shut its sending side
//! still gets them). Only then does netd give the number to a new
//! connection, so no record in flight ever reaches the wrong one. After
//! its own `Close` the client ignores records for that number until the
//! next `Accepted`.
//!
//! Every record starts with four bytes: kind, connection number,
//! payload length (u16, little-endian). The reader ([`RecordReader`])
//! reassembles records from whatever the ring holds and treats the peer as
//! hostile: an unknown kind, a length past [`MAX_PAYLOAD`] or a payload
//! that does not fit its kind is [`RecordError`], never a panic.
//!
//! Written here rather than taken from a crate: this is Baton's own wire
//! format between two of its services, a few dozen lines; a general
//! serialisation crate would add code to both ends without checking more.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::unwrap_used)]

use core::fmt;

/// The most payload bytes one record carries.
pub const MAX_PAYLOAD: usize = 1024;
/// Bytes of a record's header.
pub const HEADER_BYTES: usize = 4;
/// The largest record.
pub const MAX_RECORD: usize = HEADER_BYTES + MAX_PAYLOAD;

/// The longest client name a listen request carries.
pub const MAX_CLIENT_NAME: usize = 24;
/// IPC label: a client asks netd to listen (a call; [`listen_words`]
/// makes its words: TCP port, connections to accept at a time, and the
/// client's name, which netd checks with `lookup`). The reply's label is 0
/// for success or an error number (`AlreadyExists`: another service has
/// the port); its words are the channel's grant and length, and 1 when
/// netd set the listener up now, 0 when it already had it (the client
/// asked again: a resumed client after an update, or a restarted one,
/// which is told every open connection again).
pub const LISTEN_LABEL: u64 = 0x4e45_5401;
/// IPC label: either side wrote records into the channel.
pub const DOORBELL_LABEL: u64 = 0x4e45_5402;

/// Listen-request flag: the client is a new instance (started or
/// restarted, not resumed), which knows none of the connections: netd
/// tells it every open one again. A restarted client that was handed its
/// previous instance's connections asks without it, like a resumed one.
pub const LISTEN_NEW_INSTANCE: u64 = 1 << 8;

/// The words of a listen request: port, connections (with
/// [`LISTEN_NEW_INSTANCE`] for a new instance), the name's length, and the
/// name in words 3 to 5 (little-endian bytes). `None` for a name longer
/// than [`MAX_CLIENT_NAME`].
pub fn listen_words(port: u16, connections: u8, is_new_instance: bool, name: &str) -> Option<[u64; 6]> {
    if name.len() > MAX_CLIENT_NAME {
        return None;
    }
    let flags = if is_new_instance { LISTEN_NEW_INSTANCE } else { 0 };
    let mut bytes = [0u8; MAX_CLIENT_NAME];
    bytes.get_mut(..name.len())?.copy_from_slice(name.as_bytes());
    let (chunks, _) = bytes.as_chunks::<8>();
    let [first, second, third] = chunks else { return None };
    let packed = [first, second, third].map(|chunk| u64::from_le_bytes(*chunk));
    Some([u64::from(port), u64::from(connections) | flags, name.len() as u64, packed[0], packed[1], packed[2]])
}

/// A listen request read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenRequest {
    /// The TCP port.
    pub port: u16,
    /// Connections to accept at a time.
    pub connections: u8,
    /// A new instance of the client.
    pub is_new_instance: bool,
    /// Bytes of the name written into the caller's buffer.
    pub name_length: usize,
}

/// A listen request read back, its name into `name`. `None` when a word is
/// out of range.
pub fn parse_listen(words: &[u64; 6], name: &mut [u8; MAX_CLIENT_NAME]) -> Option<ListenRequest> {
    let [port, second, length, packed @ ..] = *words;
    let port = u16::try_from(port).ok()?;
    if second & !(0xff | LISTEN_NEW_INSTANCE) != 0 {
        return None;
    }
    let connections = (second & 0xff) as u8;
    let is_new_instance = second & LISTEN_NEW_INSTANCE != 0;
    let length = usize::try_from(length).ok().filter(|length| *length <= MAX_CLIENT_NAME)?;
    let [first, second, third] = packed.map(u64::to_le_bytes);
    let mut bytes = [0u8; MAX_CLIENT_NAME];
    for (to, from) in bytes.chunks_exact_mut(8).zip([first, second, third]) {
        to.copy_from_slice(&from);
    }
    name.get_mut(..length)?.copy_from_slice(bytes.get(..length)?);
    Some(ListenRequest { port, connections, is_new_instance, name_length: length })
}

/// One record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// netd accepted a connection.
    Accepted {
        /// Its number on this channel.
        connection: u8,
        /// The remote IPv4 address.
        address: [u8; 4],
        /// The remote port.
        port: u16,
    },
    /// Bytes of a connection.
    Data {
        /// Its number.
        connection: u8,
        /// The bytes (1 to [`MAX_PAYLOAD`]).
        bytes: &'a [u8],
    },
    /// The remote end went away.
    Closed {
        /// Its number.
        connection: u8,
    },
    /// The client closes it.
    Close {
        /// Its number.
        connection: u8,
    },
}

impl Record<'_> {
    const fn kind(&self) -> u8 {
        match self {
            Record::Accepted { .. } => 1,
            Record::Data { .. } => 2,
            Record::Closed { .. } => 3,
            Record::Close { .. } => 4,
        }
    }

    /// The connection it is about.
    pub const fn connection(&self) -> u8 {
        match *self {
            Record::Accepted { connection, .. }
            | Record::Data { connection, .. }
            | Record::Closed { connection }
            | Record::Close { connection } => connection,
        }
    }

    /// Its length encoded.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES.saturating_add(self.payload_len())
    }

    fn payload_len(&self) -> usize {
        match self {
            Record::Accepted { .. } => 6,
            Record::Data { bytes, .. } => bytes.len(),
            Record::Closed { .. } | Record::Close { .. } => 0,
        }
    }

    /// Writes it into `out` and returns the bytes written; `None` when
    /// `out` is too short or the payload is empty or longer than
    /// [`MAX_PAYLOAD`].
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let length = self.payload_len();
        if matches!(self, Record::Data { .. }) && !(1..=MAX_PAYLOAD).contains(&length) {
            return None;
        }
        let total = self.encoded_len();
        let out = out.get_mut(..total)?;
        let (header, payload) = out.split_at_mut(HEADER_BYTES);
        let [low, high] = u16::try_from(length).ok()?.to_le_bytes();
        header.copy_from_slice(&[self.kind(), self.connection(), low, high]);
        match self {
            Record::Accepted { address, port, .. } => {
                let [port_low, port_high] = port.to_le_bytes();
                let [a, b, c, d] = *address;
                payload.copy_from_slice(&[a, b, c, d, port_low, port_high]);
            }
            Record::Data { bytes, .. } => payload.copy_from_slice(bytes),
            Record::Closed { .. } | Record::Close { .. } => {}
        }
        Some(total)
    }
}

/// Why a peer's records cannot be read (the channel is then useless: the
/// stream has lost its framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// A kind this format does not have.
    UnknownKind {
        /// The byte found.
        kind: u8,
    },
    /// A payload longer than [`MAX_PAYLOAD`], or of the wrong length for
    /// its kind.
    BadLength {
        /// The kind.
        kind: u8,
        /// The length found.
        length: u16,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKind { kind } => write!(formatter, "unknown record kind {kind}"),
            Self::BadLength { kind, length } => write!(formatter, "a kind {kind} record of {length} bytes"),
        }
    }
}

impl core::error::Error for RecordError {}

/// Reassembles records from a byte stream read in pieces of any size.
#[derive(Debug, Clone)]
pub struct RecordReader {
    buffer: [u8; MAX_RECORD],
    filled: usize,
}

impl Default for RecordReader {
    fn default() -> Self {
        Self::new()
    }
}

fn check_header(kind: u8, length: u16) -> Result<(), RecordError> {
    let ok = match kind {
        1 => length == 6,
        2 => (1..=MAX_PAYLOAD).contains(&usize::from(length)),
        3 | 4 => length == 0,
        _ => return Err(RecordError::UnknownKind { kind }),
    };
    if ok { Ok(()) } else { Err(RecordError::BadLength { kind, length }) }
}

impl RecordReader {
    /// An empty reader.
    pub const fn new() -> Self {
        RecordReader { buffer: [0; MAX_RECORD], filled: 0 }
    }

    /// How many more bytes the record being read needs (the header first,
    /// then its payload): read exactly up to this many from the stream, so
    /// nothing past the record is taken.
    pub fn wanted(&self) -> Result<usize, RecordError> {
        Ok(self.target()?.saturating_sub(self.filled))
    }

    fn target(&self) -> Result<usize, RecordError> {
        match self.buffer.get(..HEADER_BYTES) {
            Some(&[kind, _, low, high]) if self.filled >= HEADER_BYTES => {
                let length = u16::from_le_bytes([low, high]);
                check_header(kind, length)?;
                Ok(HEADER_BYTES.saturating_add(usize::from(length)))
            }
            _ => Ok(HEADER_BYTES),
        }
    }

    /// Where the next bytes of the stream go (at most [`Self::wanted`]).
    pub fn space(&mut self) -> Result<&mut [u8], RecordError> {
        let target = self.target()?;
        Ok(self.buffer.get_mut(self.filled..target).unwrap_or_default())
    }

    /// Notes that `count` bytes were written into [`Self::space`].
    pub fn filled(&mut self, count: usize) {
        self.filled = self.filled.saturating_add(count).min(MAX_RECORD);
    }

    /// The record, once all of it is in; the next call to
    /// [`Self::space`] starts the next record.
    pub fn take(&mut self) -> Result<Option<Record<'_>>, RecordError> {
        let target = self.target()?;
        if self.filled < HEADER_BYTES || self.filled < target {
            return Ok(None);
        }
        self.filled = 0;
        let [kind, connection, ..] = self.buffer;
        let payload = self.buffer.get(HEADER_BYTES..target).unwrap_or_default();
        Ok(Some(match kind {
            1 => {
                let [a, b, c, d, port_low, port_high] = *payload else {
                    return Err(RecordError::BadLength { kind, length: payload.len() as u16 });
                };
                Record::Accepted { connection, address: [a, b, c, d], port: u16::from_le_bytes([port_low, port_high]) }
            }
            2 => Record::Data { connection, bytes: payload },
            3 => Record::Closed { connection },
            4 => Record::Close { connection },
            _ => return Err(RecordError::UnknownKind { kind }),
        }))
    }

    /// Reads the next whole record from `read` (which fills a buffer from
    /// the stream and returns how many bytes it wrote, 0 when the stream
    /// has nothing now). `Ok(None)`: not all of it has arrived yet (what
    /// did is kept for the next call).
    pub fn next<E>(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Option<Record<'_>>, ReadError<E>> {
        loop {
            let space = self.space().map_err(ReadError::Record)?;
            if space.is_empty() {
                break;
            }
            let wanted = space.len();
            let count = read(space).map_err(ReadError::Stream)?.min(wanted);
            self.filled(count);
            if count < wanted {
                break;
            }
        }
        self.take().map_err(ReadError::Record)
    }
}

/// Why [`RecordReader::next`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError<E> {
    /// The stream itself (the channel broke).
    Stream(E),
    /// The records in it.
    Record(RecordError),
}

/// The TCP port a frame asks to connect to, if it is an Ethernet frame
/// carrying an IPv4 TCP SYN without ACK (a new connection). netd drops
/// such a frame when no socket listens on the port for the moment: the
/// remote end sends its SYN again a little later, where a TCP reset
/// would have refused the connection outright. Hand-written over the
/// fixed header offsets: smoltcp's packet views would do the same, but
/// this crate builds and tests without it.
pub fn connection_request_port(frame: &[u8]) -> Option<u16> {
    const ETHERNET_HEADER: usize = 14;
    const IPV4: [u8; 2] = [0x08, 0x00];
    const TCP: u8 = 6;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    if frame.get(12..14)? != IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET_HEADER..)?;
    let first = *ip.first()?;
    let header = usize::from(first & 0x0f).saturating_mul(4);
    if first >> 4 != 4 || header < 20 || *ip.get(9)? != TCP {
        return None;
    }
    // A fragment past the first has no TCP header.
    let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
    if fragment != 0 {
        return None;
    }
    let tcp = ip.get(header..)?;
    let flags = *tcp.get(13)?;
    if flags & SYN == 0 || flags & ACK != 0 {
        return None;
    }
    Some(u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]))
}

#[cfg(test)]
mod tests;
