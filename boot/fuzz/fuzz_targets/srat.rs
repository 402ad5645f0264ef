//! Fuzz target: the SRAT reader on arbitrary memory. The input is
//! "physical memory" from 0x1000 on, with the RSDP at its start; the root
//! table and the SRAT may be anywhere, inside or outside it.
#![no_main]

use baton_boot::info::{BootInfo, BootPath};
use baton_boot::phys::SliceMemory;
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x1000;

fuzz_target!(|data: &[u8]| {
    let mut info = BootInfo::new(BootPath::Pvh);
    baton_boot::srat::read_numa(&SliceMemory { base: BASE, bytes: data }, BASE, &mut info);
    // Whatever was accepted is well-formed.
    for numa in info.numa.iter() {
        assert!(numa.range.start < numa.range.end);
    }
});
