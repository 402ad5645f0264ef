//! Fuzz target: Baton's boot description (`baton,boot-v1`), the sub-FDT a
//! previous kernel leaves for the next: the parser that runs before any
//! heap exists, and the ownership table reader.
#![no_main]

use baton_boot::handover::{owners, parse, timeline_offset};
use baton_boot::{BootInfo, BootPath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut info = BootInfo::new(BootPath::Kho);
    if parse(data, 0x3000_0000, 0x3100_0000, &mut info).is_ok() {
        let kho = info.kho.as_ref().expect("a parsed description sets the KHO fields");
        assert!(kho.scratch.len() <= kho.scratch.capacity());
    }
    if let Some(runs) = owners(data) {
        for run in runs {
            assert!(run.folios > 0);
            let _ = run.end();
        }
    }
    if let Some(offset) = timeline_offset(data) {
        assert!(offset + 8 * baton_boot::handover::TIMELINE_ENTRIES <= data.len());
    }
});
