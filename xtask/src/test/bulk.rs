//! A keyspace larger than one folio (4 MiB) through a kvstore restart:
//! the host writes 1500 values of 4 KiB over one connection (pipelined,
//! in batches) before the first update, which restarts kvstore; when the
//! demo pauses, the same connection reads every key's count and a sample
//! of values back.

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
}

impl Bulk {
    /// Writes every key through `port`.
    pub fn start(port: u16) -> Bulk {
        Bulk { thread: std::thread::spawn(move || write(port)) }
    }

    /// Reads them back over the same connection: the report line.
    pub fn finish(self) -> String {
        let outcome = self.thread.join().unwrap_or_else(|_| Err("the writer panicked".to_string()));
        match outcome.and_then(check) {
            Ok(line) => line,
            Err(failure) => format!("host: a large keyspace: {failure}"),
        }
    }
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
