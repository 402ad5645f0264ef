//! The connections a restarting kvstore hands its next instance, beside
//! the keyspace: for each, the client's state (id, name),
//! the bytes of a request that had not all arrived, and the replies that
//! had not gone into netd's channel yet. With these the next instance
//! answers every request exactly once and in order, as if it had been
//! the same process.
//!
//! The bytes are read back as hostile: every length is checked against
//! what is there, and a count larger than the bytes could hold is
//! refused before anything is allocated for it.

use alloc::vec::Vec;

use crate::{Client, Framer};

const SESSIONS_MAGIC: &[u8; 8] = b"BTNSESS1";
/// `u32` length of an absent name.
const NO_NAME: u32 = u32::MAX;

/// One connection as its kvstore left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// netd's connection number.
    pub connection: u8,
    /// The client's state.
    pub client: Client,
    /// Bytes received and not yet a whole request.
    pub framer: Framer,
}

/// A record for netd that had not gone into the channel: data for a
/// connection (`Some`) or closing it (`None`).
pub type Unsent = (u8, Option<Vec<u8>>);

/// Everything about the connections that goes across a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions {
    /// The id the next new client gets.
    pub next_client_id: u64,
    /// The open connections.
    pub sessions: Vec<Session>,
    /// Records for netd, in the order they were queued.
    pub unsent: Vec<Unsent>,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A reader over hostile bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(count)?;
        self.0 = tail;
        Some(head)
    }
    fn word<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.word().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.word().map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let length = self.u32()? as usize;
        self.take(length)
    }
    /// A count of items each at least `least` bytes long, refused when
    /// the bytes left could not hold that many.
    fn count(&mut self, least: usize) -> Option<usize> {
        let count = self.u32()? as usize;
        (count.checked_mul(least)? <= self.0.len()).then_some(count)
    }
}

impl Sessions {
    /// The bytes the next instance reads back with [`Sessions::from_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SESSIONS_MAGIC);
        out.extend_from_slice(&self.next_client_id.to_le_bytes());
        out.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for session in &self.sessions {
            out.push(session.connection);
            out.extend_from_slice(&session.client.id.to_le_bytes());
            match &session.client.name {
                Some(name) => put_bytes(&mut out, name),
                None => out.extend_from_slice(&NO_NAME.to_le_bytes()),
            }
            // SCAN marks, from before SCAN's cursors were the table's:
            // none now.
            out.extend_from_slice(&0u32.to_le_bytes());
            put_bytes(&mut out, session.framer.pending_bytes());
        }
        out.extend_from_slice(&(self.unsent.len() as u32).to_le_bytes());
        for (connection, bytes) in &self.unsent {
            out.push(*connection);
            match bytes {
                Some(bytes) => {
                    out.push(1);
                    put_bytes(&mut out, bytes);
                }
                None => out.push(0),
            }
        }
        out
    }

    /// Sessions read back from [`Sessions::to_bytes`]'s bytes; `None` for
    /// bytes that are not that (nothing is trusted).
    pub fn from_bytes(bytes: &[u8]) -> Option<Sessions> {
        let mut reader = Reader(bytes);
        if reader.take(8)? != SESSIONS_MAGIC {
            return None;
        }
        let next_client_id = reader.u64()?;
        let count = reader.count(1 + 8 + 4 + 4 + 4)?;
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            let connection = reader.word::<1>()?[0];
            let mut client = Client::new(reader.u64()?);
            let name_length = reader.u32()?;
            if name_length != NO_NAME {
                client.name = Some(reader.take(name_length as usize)?.to_vec());
            }
            // SCAN marks an older instance wrote: the cursors they stood
            // for were its own; a client's SCAN starts again.
            let marks = reader.count(4)?;
            for _ in 0..marks {
                reader.bytes()?;
            }
            let mut framer = Framer::new();
            framer.push(reader.bytes()?);
            if sessions.iter().any(|session: &Session| session.connection == connection) {
                return None;
            }
            sessions.push(Session { connection, client, framer });
        }
        let count = reader.count(2)?;
        let mut unsent = Vec::with_capacity(count);
        for _ in 0..count {
            let [connection, kind] = reader.word::<2>()?;
            let bytes = match kind {
                0 => None,
                1 => Some(reader.bytes()?.to_vec()),
                _ => return None,
            };
            unsent.push((connection, bytes));
        }
        reader.0.is_empty().then_some(Sessions { next_client_id, sessions, unsent })
    }
}
