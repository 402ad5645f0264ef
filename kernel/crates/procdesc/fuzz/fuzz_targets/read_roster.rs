//! Fuzz target: the roster reader on arbitrary bytes.
//!
//! Beyond "no panic", it checks that whatever the reader accepts, the
//! writer writes again and the reader reads back unchanged (the reader
//! accepts nothing the writer would refuse).
#![no_main]

use baton_procdesc::roster::{read_roster, write_roster};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = read_roster(data) else {
        return;
    };
    let blob = write_roster(&entries).expect("accepted, so writable");
    assert_eq!(read_roster(&blob).expect("written, so readable"), entries);
});
