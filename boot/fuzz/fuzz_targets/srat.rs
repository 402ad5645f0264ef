//! Fuzz target: the SRAT reader on arbitrary memory. The input is
//! "physical memory" from 0x1000 on, with the RSDP at its start; the root
//! table and the SRAT may be anywhere, inside or outside it.
#![no_main]

use baton_boot::info::{BootInfo, BootPath};
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
    let mut info = BootInfo::new(BootPath::Pvh);
    baton_boot::srat::read_numa(&Flat(data), BASE, &mut info);
    // Whatever was accepted is well-formed.
    for numa in info.numa.iter() {
        assert!(numa.range.start < numa.range.end);
    }
});
