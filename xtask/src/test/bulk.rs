//! Large keyspaces through a kvstore restart, filled before the first
//! update (which restarts kvstore) and read back over the same connection
//! when the demo pauses: 1500 values of 4 KiB written over one connection
//! (pipelined, in batches), or a million keys made in the guest by DEBUG
//! POPULATE (as Redis's own tests fill one).

use super::hostile::{command, connect, reply, request};
use std::io::Write;
use std::net::TcpStream;
use std::thread::JoinHandle;

/// Values written.
pub const KEYS: usize = 1500;
const VALUE_BYTES: usize = 4096;
const BATCH: usize = 100;

fn value(index: usize) -> Vec<u8> {
    let mut value = format!("value {index} ").into_bytes();
    value.resize(VALUE_BYTES, b'a' + (index % 26) as u8);
    value
}

/// The writer, on a thread of its own (the guest goes on meanwhile).
pub struct Bulk {
    thread: JoinHandle<Result<TcpStream, String>>,
    populated: Option<usize>,
}

impl Bulk {
    /// Writes every key through `port`.
    pub fn start(port: u16) -> Bulk {
        Bulk { thread: std::thread::spawn(move || write(port)), populated: None }
    }

    /// Has kvstore make `keys` keys (`key:N` holding `value:N`).
    pub fn populate(port: u16, keys: usize) -> Bulk {
        let thread = std::thread::spawn(move || {
            let mut stream = connect(port)?;
            // Made in one request: give it the time a slow emulator takes.
            let slow = Some(std::time::Duration::from_secs(300));
            stream.set_read_timeout(slow).map_err(|error| error.to_string())?;
            let answer = command(&mut stream, &[b"DEBUG", b"POPULATE", format!("{keys}").as_bytes()])?;
            if answer != "+OK" {
                return Err(format!("DEBUG POPULATE {keys} answered '{answer}'"));
            }
            Ok(stream)
        });
        Bulk { thread, populated: Some(keys) }
    }

    /// Reads them back over the same connection: the report line.
    pub fn finish(self) -> String {
        let outcome = self.thread.join().unwrap_or_else(|_| Err("the writer panicked".to_string()));
        let checked = match self.populated {
            None => outcome.and_then(check),
            Some(keys) => outcome.and_then(|stream| check_populated(stream, keys)),
        };
        match checked {
            Ok(line) => line,
            Err(failure) => format!("host: a large keyspace: {failure}"),
        }
    }
}

fn check_populated(mut stream: TcpStream, keys: usize) -> Result<String, String> {
    let count = command(&mut stream, &[b"DBSIZE"])?;
    if count != format!(":{keys}") {
        return Err(format!("DBSIZE is '{count}' after the updates, not {keys}"));
    }
    // A spread of keys, first and last included, each with its own value.
    for index in (0..keys).step_by(keys / 97 + 1).chain([keys - 1]) {
        let got = command(&mut stream, &[b"GET", format!("key:{index}").as_bytes()])?;
        if got != format!("value:{index}") {
            return Err(format!("key:{index} reads back as '{got}'"));
        }
    }
    let missing = command(&mut stream, &[b"GET", format!("key:{keys}").as_bytes()])?;
    if missing != "$-1" {
        return Err(format!("key:{keys}, never written, reads as '{missing}'"));
    }
    Ok(format!("host: {keys} keys made before the updates, all there after them"))
}

fn write(port: u16) -> Result<TcpStream, String> {
    let mut stream = connect(port)?;
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(BATCH) {
        let mut requests = Vec::new();
        for &index in batch {
            requests.extend(request(&[b"SET", format!("big:{index}").as_bytes(), &value(index)]));
        }
        stream.write_all(&requests).map_err(|error| format!("send: {error}"))?;
        for &index in batch {
            let answer = reply(&mut stream)?;
            if answer != "+OK" {
                return Err(format!("SET big:{index} answered '{answer}'"));
            }
        }
    }
    Ok(stream)
}

fn check(mut stream: TcpStream) -> Result<String, String> {
    let count = command(&mut stream, &[b"DBSIZE"])?;
    if count != format!(":{KEYS}") {
        return Err(format!("DBSIZE is '{count}' after the updates, not {KEYS}"));
    }
    for index in [0, 1, KEYS / 2, KEYS - 1] {
        let got = command(&mut stream, &[b"GET", format!("big:{index}").as_bytes()])?;
        if got.as_bytes() != value(index) {
            return Err(format!("big:{index} reads back wrong"));
        }
    }
    Ok(format!("host: {KEYS} values of {VALUE_BYTES} bytes on one connection, all there after the updates"))
}
