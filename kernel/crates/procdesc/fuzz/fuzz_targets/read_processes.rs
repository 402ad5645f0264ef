//! Fuzz target: the process-description reader on arbitrary bytes, for both architectures.
//!
//! Beyond "no panic", it checks the promise the reader makes: whatever it
//! accepts is for the architecture asked for, and the writer writes it
//! again and the reader reads that back unchanged (the reader accepts
//! nothing the writer would refuse).
#![no_main]

use baton_procdesc::{Architecture, MAX_PROCESSES, read_processes, write_processes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for architecture in Architecture::ALL {
        let Ok(results) = read_processes(data, architecture) else {
            continue;
        };
        assert!(results.len() <= MAX_PROCESSES);
        for description in results.into_iter().flatten() {
            assert_eq!(description.architecture, architecture);
            let blob = write_processes(core::slice::from_ref(&description)).expect("accepted, so writable");
            let again = read_processes(&blob, architecture).expect("written, so readable");
            assert_eq!(again, vec![Ok(description)]);
        }
    }
});
