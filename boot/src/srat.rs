//! NUMA memory affinity from ACPI's SRAT (x86_64): which node each range of
//! RAM belongs to, so that a cold boot can place one scratch region per
//! node. Read at entry, through the entry path's direct map, before any
//! heap exists: the `acpi` crate needs a heap-backed handler and has no SRAT
//! parser, so this small walk of RSDP → XSDT/RSDT → SRAT is Baton's own.
//! Every length is bounded and every table's checksum is checked; anything
//! malformed leaves the NUMA list empty (one node) with a warning.

use crate::info::{BootInfo, BootWarning, NumaRange, PhysRange};
use crate::phys::PhysRead;

const SDT_HEADER_BYTES: u64 = 36;
/// The SRAT's header: the common header, then 12 reserved bytes.
const SRAT_ENTRIES_OFFSET: u64 = 48;
/// Tables larger than this are not believed.
const MAX_TABLE_BYTES: u32 = 1 << 20;
const MEMORY_AFFINITY: u8 = 1;
const MEMORY_AFFINITY_BYTES: u8 = 40;
const ENABLED: u32 = 1;

/// Reads a whole table at `phys` whose checksum must hold; `None` when
/// it cannot be read, is absurdly large or does not add up.
fn read_table<'buffer>(memory: &impl PhysRead, phys: u64, buffer: &'buffer mut [u8]) -> Option<&'buffer [u8]> {
    let length = memory.read_u32(phys.checked_add(4)?)?;
    if u64::from(length) < SDT_HEADER_BYTES || length > MAX_TABLE_BYTES || length as usize > buffer.len() {
        return None;
    }
    let table = &mut buffer[..length as usize];
    if !memory.read_phys(phys, table) {
        return None;
    }
    let sum = table.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
    (sum == 0).then_some(&*table)
}

/// The physical addresses of the tables the root table lists.
fn table_addresses(memory: &impl PhysRead, rsdp: u64, scratch: &mut [u8]) -> Option<([u64; 64], usize)> {
    let mut header = [0u8; 36];
    if !memory.read_phys(rsdp, &mut header[..20]) || &header[..8] != b"RSD PTR " {
        return None;
    }
    let revision = header[15];
    let (root, entry_bytes) = if revision >= 2 && memory.read_phys(rsdp, &mut header) {
        (u64::from_le_bytes(header[24..32].try_into().ok()?), 8)
    } else {
        (u64::from(u32::from_le_bytes(header[16..20].try_into().ok()?)), 4)
    };
    let table = read_table(memory, root, scratch)?;
    let signature = if entry_bytes == 8 { b"XSDT" } else { b"RSDT" };
    if &table[..4] != signature {
        return None;
    }
    let mut addresses = [0u64; 64];
    let mut count = 0;
    for entry in table[SDT_HEADER_BYTES as usize..].chunks_exact(entry_bytes).take(addresses.len()) {
        addresses[count] = match entry_bytes {
            8 => u64::from_le_bytes(entry.try_into().ok()?),
            _ => u64::from(u32::from_le_bytes(entry.try_into().ok()?)),
        };
        count += 1;
    }
    Some((addresses, count))
}

/// Adds the SRAT's enabled memory-affinity ranges to `info.numa`. Without an
/// SRAT nothing is added (one node); a malformed one adds a warning.
pub fn read_numa(memory: &impl PhysRead, rsdp: u64, info: &mut BootInfo) {
    // Large enough for any sane root table and SRAT (the stack at entry is
    // small: the buffer is static, and entry runs on one CPU).
    static BUFFER: spin::Mutex<[u8; 64 * 1024]> = spin::Mutex::new([0; 64 * 1024]);
    let mut buffer = BUFFER.lock();
    let Some((addresses, count)) = table_addresses(memory, rsdp, &mut buffer[..]) else {
        info.warn(BootWarning::Malformed("ACPI root tables"));
        return;
    };
    let Some(&srat) = addresses[..count].iter().find(|&&address| {
        let mut signature = [0u8; 4];
        memory.read_phys(address, &mut signature) && &signature == b"SRAT"
    }) else {
        return;
    };
    let Some(table) = read_table(memory, srat, &mut buffer[..]) else {
        info.warn(BootWarning::Malformed("ACPI SRAT"));
        return;
    };
    let mut offset = SRAT_ENTRIES_OFFSET as usize;
    while offset + 2 <= table.len() {
        let (kind, length) = (table[offset], table[offset + 1]);
        let Some(entry) = table.get(offset..offset + usize::from(length)).filter(|_| length >= 2) else {
            info.numa.clear();
            info.warn(BootWarning::Malformed("ACPI SRAT"));
            return;
        };
        if kind == MEMORY_AFFINITY && length >= MEMORY_AFFINITY_BYTES {
            let word = |at: usize| u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]);
            let quad = |at: usize| u64::from(word(at)) | u64::from(word(at + 4)) << 32;
            let (node, base, size, flags) = (word(2), quad(8), quad(16), word(28));
            if flags & ENABLED != 0
                && let Some(range) = PhysRange::from_start_size(base, size).filter(|range| range.size_bytes() > 0)
                && info.numa.try_push(NumaRange { node, range }).is_err()
            {
                info.warn(BootWarning::Malformed("ACPI SRAT has more ranges than Baton keeps"));
                return;
            }
        }
        offset += usize::from(length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::BootPath;
    use crate::phys::testing::FakeMemory;

    fn with_checksum(mut table: Vec<u8>) -> Vec<u8> {
        let length = table.len() as u32;
        table[4..8].copy_from_slice(&length.to_le_bytes());
        table[9] = 0;
        let sum = table.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
        table[9] = 0u8.wrapping_sub(sum);
        table
    }

    fn header(signature: &[u8; 4]) -> Vec<u8> {
        let mut table = vec![0u8; 36];
        table[..4].copy_from_slice(signature);
        table
    }

    fn memory_affinity(node: u32, base: u64, size: u64, flags: u32) -> Vec<u8> {
        let mut entry = vec![0u8; 40];
        entry[0] = MEMORY_AFFINITY;
        entry[1] = MEMORY_AFFINITY_BYTES;
        entry[2..6].copy_from_slice(&node.to_le_bytes());
        entry[8..16].copy_from_slice(&base.to_le_bytes());
        entry[16..24].copy_from_slice(&size.to_le_bytes());
        entry[28..32].copy_from_slice(&flags.to_le_bytes());
        entry
    }

    /// RSDP (revision 2) at 0x1000, XSDT at 0x2000 listing an FADT-like
    /// table at 0x3000 and `srat` at 0x4000.
    fn machine(srat: Vec<u8>) -> FakeMemory {
        let mut memory = FakeMemory::default();
        let mut rsdp = vec![0u8; 36];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        rsdp[15] = 2;
        rsdp[24..32].copy_from_slice(&0x2000u64.to_le_bytes());
        memory.put(0x1000, &rsdp);
        let mut xsdt = header(b"XSDT");
        xsdt.extend(0x3000u64.to_le_bytes());
        xsdt.extend(0x4000u64.to_le_bytes());
        memory.put(0x2000, &with_checksum(xsdt));
        memory.put(0x3000, &with_checksum(header(b"FACP")));
        memory.put(0x4000, &srat);
        memory
    }

    fn srat(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut table = header(b"SRAT");
        table.extend([0u8; 12]);
        for entry in entries {
            table.extend(entry);
        }
        with_checksum(table)
    }

    #[test]
    fn enabled_memory_ranges_are_read_with_their_nodes() {
        let table = srat(&[
            // A processor-affinity entry (type 0) is skipped.
            vec![0u8; 16].into_iter().enumerate().map(|(i, b)| if i == 1 { 16 } else { b }).collect(),
            memory_affinity(0, 0, 0x4000_0000, ENABLED),
            memory_affinity(1, 0x4000_0000, 0x4000_0000, ENABLED),
            memory_affinity(2, 0x8000_0000, 0x1000, 0),
        ]);
        let mut info = BootInfo::new(BootPath::Pvh);
        read_numa(&machine(table), 0x1000, &mut info);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(
            info.numa.as_slice(),
            [
                NumaRange { node: 0, range: PhysRange { start: 0, end: 0x4000_0000 } },
                NumaRange { node: 1, range: PhysRange { start: 0x4000_0000, end: 0x8000_0000 } },
            ]
        );
    }

    #[test]
    fn no_srat_means_no_ranges_and_no_warning() {
        let mut memory = machine(Vec::new());
        memory.put(0x4000, &with_checksum(header(b"APIC")));
        let mut info = BootInfo::new(BootPath::Pvh);
        read_numa(&memory, 0x1000, &mut info);
        assert!(info.numa.is_empty());
        assert!(info.warnings.is_empty());
    }

    #[test]
    fn damaged_tables_are_warnings_not_crashes() {
        // A bad checksum.
        let mut table = srat(&[memory_affinity(0, 0, 0x1000_0000, ENABLED)]);
        table[40] ^= 1;
        let mut info = BootInfo::new(BootPath::Pvh);
        read_numa(&machine(table), 0x1000, &mut info);
        assert!(info.numa.is_empty());
        assert_eq!(info.warnings.as_slice(), [BootWarning::Malformed("ACPI SRAT")]);
        // An entry whose length runs past the table, or is zero.
        for length in [0u8, 200] {
            let mut entry = memory_affinity(0, 0, 0x1000_0000, ENABLED);
            entry[1] = length;
            let mut info = BootInfo::new(BootPath::Pvh);
            read_numa(&machine(srat(&[memory_affinity(3, 0, 0x1000, ENABLED), entry])), 0x1000, &mut info);
            assert!(info.numa.is_empty(), "nothing half-read is kept");
            assert!(!info.warnings.is_empty());
        }
        // No RSDP there at all.
        let mut info = BootInfo::new(BootPath::Pvh);
        read_numa(&FakeMemory::default(), 0x1000, &mut info);
        assert_eq!(info.warnings.as_slice(), [BootWarning::Malformed("ACPI root tables")]);
    }

    #[test]
    fn the_fuzz_seed_describes_two_nodes() {
        let seed = include_bytes!("../fuzz/corpus/srat/seed-two-nodes");
        let mut memory = FakeMemory::default();
        memory.put(0x1000, seed);
        let mut info = BootInfo::new(BootPath::Pvh);
        read_numa(&memory, 0x1000, &mut info);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.numa.iter().map(|numa| numa.node).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_survived() {
        let table = srat(&[memory_affinity(0, 0, 0x4000_0000, ENABLED), memory_affinity(1, 1 << 32, 1 << 30, ENABLED)]);
        for cut in 0..table.len() {
            let mut info = BootInfo::new(BootPath::Pvh);
            read_numa(&machine(table[..cut].to_vec()), 0x1000, &mut info);
        }
        for index in 0..table.len() {
            let mut flipped = table.clone();
            flipped[index] ^= 0xa5;
            let mut info = BootInfo::new(BootPath::Pvh);
            read_numa(&machine(flipped), 0x1000, &mut info);
        }
    }
}
