//! Any frame from the network card: netd asks whether it is a new TCP
//! connection before the stack sees it. The answer never panics, and a
//! port comes only from a frame long enough to hold an IPv4 header and
//! the TCP header up to its flags.

#![no_main]

use baton_sockets::connection_request_port;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if connection_request_port(frame).is_some() {
        assert!(frame.len() >= 14 + 20 + 14);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
    }
});
