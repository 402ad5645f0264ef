//! Requests out of a connection's bytes: what has arrived is kept until a
//! whole RESP2 array is there, and a request's declared sizes are checked
//! before the crate is asked to decode it, so a client cannot make kvstore
//! wait for, or allocate, more than the limits allow.

use alloc::vec::Vec;

use crate::Frame;

/// Why a connection's bytes cannot be read on (the connection is closed
/// after the error reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramerError {
    /// Not RESP2, or not an array of bulk strings.
    Protocol,
    /// A bulk string longer than the limit.
    BulkTooLong,
    /// More arguments than the limit.
    TooManyArguments,
}

impl FramerError {
    /// The reply Redis gives.
    pub fn reply(self) -> &'static str {
        match self {
            FramerError::Protocol => "ERR Protocol error: expected an array of bulk strings",
            FramerError::BulkTooLong => "ERR Protocol error: invalid bulk length",
            FramerError::TooManyArguments => "ERR Protocol error: invalid multibulk length",
        }
    }
}

/// One connection's unread bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Framer {
    buffer: Vec<u8>,
}

/// Reads a decimal length from `bytes` up to `\r\n`: (value, bytes used),
/// `Ok(None)` if the line is not complete yet.
fn length_line(bytes: &[u8]) -> Result<Option<(i64, usize)>, FramerError> {
    let Some(end) = bytes.windows(2).position(|pair| pair == b"\r\n") else {
        // A length line is short: a long one is not a length.
        return if bytes.len() > 24 { Err(FramerError::Protocol) } else { Ok(None) };
    };
    let text = core::str::from_utf8(&bytes[..end]).map_err(|_| FramerError::Protocol)?;
    let value = text.parse::<i64>().map_err(|_| FramerError::Protocol)?;
    Ok(Some((value, end + 2)))
}

impl Framer {
    /// An empty connection.
    pub const fn new() -> Framer {
        Framer { buffer: Vec::new() }
    }

    /// Bytes received and not yet a whole request.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// The bytes received and not yet a whole request.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Adds what arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Checks the declared sizes of the request at the front: `Ok(true)`
    /// when all of it has arrived.
    fn check(&self, max_bulk: usize, max_arguments: usize) -> Result<bool, FramerError> {
        let bytes = &self.buffer;
        let Some(&first) = bytes.first() else { return Ok(false) };
        if first != b'*' {
            return Err(FramerError::Protocol);
        }
        let Some((count, mut at)) = length_line(&bytes[1..])? else { return Ok(false) };
        at += 1;
        if count < 1 {
            return Err(FramerError::Protocol);
        }
        if count as u64 > max_arguments as u64 {
            return Err(FramerError::TooManyArguments);
        }
        for _ in 0..count {
            let Some(&marker) = bytes.get(at) else { return Ok(false) };
            if marker != b'$' {
                return Err(FramerError::Protocol);
            }
            let Some((length, used)) = length_line(&bytes[at + 1..])? else { return Ok(false) };
            if length < 0 {
                return Err(FramerError::Protocol);
            }
            if length as u64 > max_bulk as u64 {
                return Err(FramerError::BulkTooLong);
            }
            at += 1 + used + length as usize + 2;
            if at > bytes.len() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next whole request: its arguments. `Ok(None)` until all of it
    /// has arrived. After an error the connection must be closed.
    pub fn next(&mut self, max_bulk: usize, max_arguments: usize) -> Result<Option<Vec<Vec<u8>>>, FramerError> {
        if !self.check(max_bulk, max_arguments)? {
            return Ok(None);
        }
        let (frame, used) = match redis_protocol::resp2::decode::decode(&self.buffer) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Ok(None),
            Err(_) => return Err(FramerError::Protocol),
        };
        self.buffer.drain(..used);
        let Frame::Array(items) = frame else { return Err(FramerError::Protocol) };
        items
            .into_iter()
            .map(|item| match item {
                Frame::BulkString(bytes) => Ok(bytes),
                _ => Err(FramerError::Protocol),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
