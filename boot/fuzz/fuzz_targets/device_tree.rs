//! Fuzz target: the device tree reader (direct aarch64 boots) on arbitrary
//! bytes, both reading memory nodes and ignoring them (Limine boots).
#![no_main]

use baton_boot::dtb::{MemoryNodes, parse_into, total_size};
use baton_boot::{BootInfo, BootPath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = total_size(data);
    for nodes in [MemoryNodes::Read, MemoryNodes::Ignore] {
        let mut info = BootInfo::new(BootPath::LinuxImage);
        parse_into(&mut info, data, 0x4000_0000, nodes);
        for region in info.memory_map.iter() {
            assert!(region.range.start <= region.range.end);
        }
    }
});
