//! Fuzz target: the PVH start info parser on arbitrary memory. The input is
//! "physical memory" from 0x1000 on; the start info is at its start, and
//! every pointer in it (module list, command line, memory map) may point
//! anywhere, inside or outside it.
#![no_main]

use baton_boot::phys::PhysRead;
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x1000;

struct Flat<'a>(&'a [u8]);

impl PhysRead for Flat<'_> {
    fn read_phys(&self, phys: u64, buffer: &mut [u8]) -> bool {
        let Some(offset) = phys.checked_sub(BASE) else { return false };
        let Some(end) = offset.checked_add(buffer.len() as u64) else { return false };
        match self.0.get(offset as usize..end as usize) {
            Some(bytes) => {
                buffer.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = baton_boot::pvh::parse(&Flat(data), BASE) {
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
