//! Records round-trip through any split of the stream, and hostile bytes
//! are refused without a panic.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use super::*;
use proptest::prelude::*;

fn encoded(records: &[Record<'_>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for record in records {
        let mut buffer = [0u8; MAX_RECORD];
        let length = record.encode(&mut buffer).unwrap();
        stream.extend_from_slice(&buffer[..length]);
    }
    stream
}

/// Reads every record from `stream`, handing the reader at most `piece`
/// bytes per read.
fn decoded(stream: &[u8], piece: usize) -> Result<Vec<(u8, u8, Vec<u8>)>, RecordError> {
    let mut reader = RecordReader::new();
    let mut cursor = 0;
    let mut out = Vec::new();
    loop {
        let result = reader.next(|space: &mut [u8]| {
            let count = space.len().min(piece).min(stream.len() - cursor);
            space[..count].copy_from_slice(&stream[cursor..cursor + count]);
            cursor += count;
            Ok::<usize, ()>(count)
        });
        match result {
            Ok(Some(record)) => {
                let mut buffer = [0u8; MAX_RECORD];
                let length = record.encode(&mut buffer).unwrap();
                out.push((buffer[0], record.connection(), buffer[HEADER_BYTES..length].to_vec()));
            }
            Ok(None) if cursor == stream.len() => return Ok(out),
            Ok(None) => {}
            Err(ReadError::Record(error)) => return Err(error),
            Err(ReadError::Stream(())) => unreachable!(),
        }
    }
}

#[test]
fn every_kind_reads_back() {
    let records = [
        Record::Accepted { connection: 3, address: [10, 0, 2, 2], port: 50_123 },
        Record::Data { connection: 3, bytes: b"hello\n" },
        Record::Close { connection: 3 },
        Record::Closed { connection: 7 },
    ];
    let stream = encoded(&records);
    assert_eq!(&stream[..10], &[1, 3, 6, 0, 10, 0, 2, 2, 0xcb, 0xc3]);
    for piece in [1, 3, 4, 5, 1000] {
        let read = decoded(&stream, piece).unwrap();
        assert_eq!(read.len(), 4, "pieces of {piece}");
        assert_eq!(read[1], (2, 3, b"hello\n".to_vec()));
        assert_eq!(read[3], (3, 7, Vec::new()));
    }
}

#[test]
fn a_reader_never_takes_bytes_past_its_record() {
    let stream = encoded(&[Record::Data { connection: 1, bytes: b"ab" }, Record::Close { connection: 1 }]);
    let mut reader = RecordReader::new();
    assert_eq!(reader.wanted(), Ok(HEADER_BYTES));
    reader.space().unwrap().copy_from_slice(&stream[..4]);
    reader.filled(4);
    assert_eq!(reader.wanted(), Ok(2), "only the payload");
    assert_eq!(reader.take(), Ok(None));
    reader.space().unwrap().copy_from_slice(&stream[4..6]);
    reader.filled(2);
    assert_eq!(reader.take(), Ok(Some(Record::Data { connection: 1, bytes: b"ab" })));
    assert_eq!(reader.wanted(), Ok(HEADER_BYTES), "the next record starts fresh");
}

#[test]
fn empty_or_oversized_data_is_not_encoded() {
    let mut buffer = [0u8; MAX_RECORD + 8];
    assert_eq!(Record::Data { connection: 0, bytes: b"" }.encode(&mut buffer), None);
    assert_eq!(Record::Data { connection: 0, bytes: &[0; MAX_PAYLOAD + 1] }.encode(&mut buffer), None);
    assert_eq!(Record::Data { connection: 0, bytes: &[0; MAX_PAYLOAD] }.encode(&mut buffer), Some(MAX_RECORD));
    assert_eq!(Record::Data { connection: 0, bytes: b"abc" }.encode(&mut buffer[..6]), None, "too short");
}

#[test]
fn hostile_headers_are_refused() {
    assert_eq!(decoded(&[9, 0, 0, 0], 4), Err(RecordError::UnknownKind { kind: 9 }));
    assert_eq!(decoded(&[0, 0, 0, 0], 4), Err(RecordError::UnknownKind { kind: 0 }));
    let too_long = (MAX_PAYLOAD as u16 + 1).to_le_bytes();
    assert_eq!(
        decoded(&[2, 0, too_long[0], too_long[1]], 4),
        Err(RecordError::BadLength { kind: 2, length: MAX_PAYLOAD as u16 + 1 })
    );
    assert_eq!(decoded(&[2, 0, 0, 0], 4), Err(RecordError::BadLength { kind: 2, length: 0 }));
    assert_eq!(decoded(&[1, 0, 5, 0, 1, 2, 3, 4, 5], 4), Err(RecordError::BadLength { kind: 1, length: 5 }));
    assert_eq!(decoded(&[3, 0, 1, 0, 0], 4), Err(RecordError::BadLength { kind: 3, length: 1 }));
}

proptest! {
    /// Any bytes, read in any pieces: records or a clean error, never a
    /// panic, and never more bytes taken than the stream had.
    #[test]
    fn any_stream_reads_without_panicking(stream in proptest::collection::vec(any::<u8>(), 0..3000), piece in 1usize..64) {
        let _ = decoded(&stream, piece);
    }

    /// Data records of any size round-trip, however the stream is split.
    #[test]
    fn data_round_trips(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..=MAX_PAYLOAD), 1..6), piece in 1usize..2048) {
        let records: Vec<Record<'_>> = payloads.iter().enumerate()
            .map(|(index, bytes)| Record::Data { connection: index as u8, bytes }).collect();
        let read = decoded(&encoded(&records), piece).unwrap();
        prop_assert_eq!(read.len(), payloads.len());
        for ((kind, connection, bytes), (index, payload)) in read.iter().zip(payloads.iter().enumerate()) {
            prop_assert_eq!(*kind, 2);
            prop_assert_eq!(usize::from(*connection), index);
            prop_assert_eq!(bytes, payload);
        }
    }
}

#[test]
fn a_listen_request_reads_back() {
    let words = listen_words(6379, 4, true, "kvstore").unwrap();
    let mut name = [0u8; MAX_CLIENT_NAME];
    let request = ListenRequest { port: 6379, connections: 4, is_new_instance: true, name_length: 7 };
    assert_eq!(parse_listen(&words, &mut name), Some(request));
    assert_eq!(&name[..7], b"kvstore");
    let longest = "a".repeat(MAX_CLIENT_NAME);
    let words = listen_words(7, 1, false, &longest).unwrap();
    let request = ListenRequest { port: 7, connections: 1, is_new_instance: false, name_length: MAX_CLIENT_NAME };
    assert_eq!(parse_listen(&words, &mut name), Some(request));
    assert_eq!(listen_words(7, 1, false, &"a".repeat(MAX_CLIENT_NAME + 1)), None);
    // Hostile words.
    assert_eq!(parse_listen(&[70_000, 1, 0, 0, 0, 0], &mut name), None);
    assert_eq!(parse_listen(&[7, 0x300, 0, 0, 0, 0], &mut name), None);
    assert_eq!(parse_listen(&[7, 1, 25, 0, 0, 0], &mut name), None);
}

/// An Ethernet frame with an IPv4 header of `ihl` words and a TCP header
/// to `port` with `flags`.
fn tcp_frame(ihl: u8, port: u16, flags: u8) -> Vec<u8> {
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0u8; usize::from(ihl) * 4];
    ip[0] = 0x40 | ihl;
    ip[9] = 6;
    frame.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[13] = flags;
    frame.extend_from_slice(&tcp);
    frame
}

#[test]
fn connection_requests_are_told_from_other_frames() {
    assert_eq!(connection_request_port(&tcp_frame(5, 6379, 0x02)), Some(6379));
    // With IP options.
    assert_eq!(connection_request_port(&tcp_frame(6, 7, 0x02)), Some(7));
    // SYN-ACK, ACK, FIN, RST: not a new connection.
    for flags in [0x12, 0x10, 0x11, 0x04] {
        assert_eq!(connection_request_port(&tcp_frame(5, 6379, flags)), None, "flags {flags:#x}");
    }
    // UDP, ARP, a later fragment, a short or nonsense header.
    let mut udp = tcp_frame(5, 6379, 0x02);
    udp[14 + 9] = 17;
    assert_eq!(connection_request_port(&udp), None);
    let mut arp = tcp_frame(5, 6379, 0x02);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(connection_request_port(&arp), None);
    let mut fragment = tcp_frame(5, 6379, 0x02);
    fragment[14 + 7] = 1;
    assert_eq!(connection_request_port(&fragment), None);
    assert_eq!(connection_request_port(&tcp_frame(4, 6379, 0x02)), None);
    // Cut before the flags, it cannot be told.
    let frame = tcp_frame(5, 6379, 0x02);
    for cut in 0..14 + 20 + 14 {
        assert_eq!(connection_request_port(&frame[..cut]), None, "cut at {cut}");
    }
}
