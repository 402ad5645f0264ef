//! A client or netd writes whatever it likes into the channel: the reader
//! must return records or an error, never panic, and never hand out a
//! payload larger than the format allows. The first byte picks how much
//! the stream hands over per read.

#![no_main]

use baton_sockets::{MAX_PAYLOAD, ReadError, Record, RecordReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut reader = RecordReader::new();
    let mut cursor = 0;
    loop {
        let result = reader.next(|space: &mut [u8]| {
            let count = space.len().min(piece).min(stream.len() - cursor);
            space[..count].copy_from_slice(&stream[cursor..cursor + count]);
            cursor += count;
            Ok::<usize, ()>(count)
        });
        match result {
            Ok(Some(Record::Data { bytes, .. })) => assert!(!bytes.is_empty() && bytes.len() <= MAX_PAYLOAD),
            Ok(Some(_)) => {}
            Ok(None) if cursor == stream.len() => return,
            Ok(None) => {}
            Err(ReadError::Record(_)) => return,
            Err(ReadError::Stream(())) => unreachable!(),
        }
    }
});
