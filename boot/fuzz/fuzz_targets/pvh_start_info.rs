//! Fuzz target: the PVH start info parser on arbitrary memory. The input is
//! "physical memory" from 0x1000 on; the start info is at its start, and
//! every pointer in it (module list, command line, memory map) may point
//! anywhere, inside or outside it.
#![no_main]

use baton_boot::phys::SliceMemory;
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x1000;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = baton_boot::pvh::parse(&SliceMemory { base: BASE, bytes: data }, BASE) {
        // Whatever was accepted is well-formed.
        for region in info.memory_map.iter() {
            assert!(region.range.start <= region.range.end);
        }
        for module in info.modules.iter() {
            assert!(module.range.start <= module.range.end);
        }
        let _ = info.total_ram_bytes();
    }
});
