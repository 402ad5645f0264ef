//! Four-level page tables, generic over the entry format.
//!
//! x86_64 (4-level paging) and aarch64 (4 KiB granule, 48-bit addresses) walk
//! the same shape of tree: four levels of 512 eight-byte entries, leaves of
//! 1 GiB at level 1, 2 MiB at level 2 and 4 KiB at level 3. Only the bits of
//! an entry differ, so the walk is written once here over [`EntryFormat`] and
//! [`TableMemory`], and runs on the host against a simulated memory. The
//! `x86_64` crate's `OffsetPageTable` would cover one architecture only, which
//! is why Baton does not use it.

use core::fmt;

/// Level-0 (top) to level-3 (4 KiB pages).
pub type Level = usize;

/// Bytes mapped by one leaf at each level (level 0 cannot hold leaves).
pub const LEAF_BYTES: [u64; 4] = [0, 1 << 30, 2 << 20, 4 << 10];

/// How memory behind a mapping is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// Ordinary RAM, write-back cached.
    Normal,
    /// Device registers: uncached, no speculation, no merging.
    Device,
    /// Framebuffers: uncached, writes may be merged.
    WriteCombining,
}

/// What a mapping allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// Writes allowed.
    pub is_writable: bool,
    /// Instruction fetches allowed.
    pub is_executable: bool,
    /// Accessible from user mode.
    pub is_user: bool,
    /// Caching.
    pub memory: MemoryType,
}

impl Attributes {
    /// Kernel read/write data, never executed.
    pub const KERNEL_DATA: Self =
        Self { is_writable: true, is_executable: false, is_user: false, memory: MemoryType::Normal };
    /// Kernel code.
    pub const KERNEL_CODE: Self =
        Self { is_writable: false, is_executable: true, is_user: false, memory: MemoryType::Normal };
    /// Kernel read-only data.
    pub const KERNEL_READ_ONLY: Self =
        Self { is_writable: false, is_executable: false, is_user: false, memory: MemoryType::Normal };
    /// Device registers for the kernel.
    pub const KERNEL_DEVICE: Self =
        Self { is_writable: true, is_executable: false, is_user: false, memory: MemoryType::Device };
}

/// The bits of one architecture's entries.
pub trait EntryFormat {
    /// An entry pointing at the next-level table at `table_phys`.
    fn table(table_phys: u64) -> u64;
    /// A leaf at `level` (1, 2 or 3) mapping `phys`.
    fn leaf(phys: u64, level: Level, attributes: Attributes) -> u64;
    /// Whether the entry maps or points at anything.
    fn is_present(entry: u64) -> bool;
    /// Whether a present entry at `level` points at a next-level table.
    fn is_table(entry: u64, level: Level) -> bool;
    /// The physical address an entry holds.
    fn address(entry: u64) -> u64;
    /// The attributes of a leaf at `level`.
    fn attributes(entry: u64, level: Level) -> Attributes;
    /// Whether table entries must carry the user bit for user leaves below
    /// them (x86_64) or not (aarch64).
    fn table_for_user(table_phys: u64) -> u64 {
        Self::table(table_phys)
    }
}

/// Access to the memory page tables live in.
pub trait TableMemory {
    /// Reads entry `index` of the table at `table_phys`.
    fn read_entry(&self, table_phys: u64, index: usize) -> u64;
    /// Writes entry `index` of the table at `table_phys`.
    fn write_entry(&mut self, table_phys: u64, index: usize, value: u64);
    /// A zeroed 4 KiB table, or `None` when out of memory.
    fn allocate_table(&mut self) -> Option<u64>;
}

/// Why a mapping request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Addresses or size are not 4 KiB aligned.
    Misaligned,
    /// Part of the range is already mapped.
    AlreadyMapped {
        /// The first mapped address found.
        virt: u64,
    },
    /// No memory for another table.
    OutOfTables,
    /// The range wraps around the address space.
    Overflow,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Misaligned => f.write_str("range is not page aligned"),
            MapError::AlreadyMapped { virt } => write!(f, "{virt:#x} is already mapped"),
            MapError::OutOfTables => f.write_str("out of memory for page tables"),
            MapError::Overflow => f.write_str("range wraps around"),
        }
    }
}

/// Which leaf sizes a mapping may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafSizes {
    /// 1 GiB leaves allowed.
    pub gigabyte: bool,
    /// 2 MiB leaves allowed.
    pub two_megabyte: bool,
}

impl LeafSizes {
    /// 4 KiB pages only.
    pub const PAGES_ONLY: Self = Self { gigabyte: false, two_megabyte: false };
    /// Everything.
    pub const ALL: Self = Self { gigabyte: true, two_megabyte: true };

    fn allows(&self, level: Level) -> bool {
        match level {
            1 => self.gigabyte,
            2 => self.two_megabyte,
            3 => true,
            _ => false,
        }
    }
}

fn index(virt: u64, level: Level) -> usize {
    ((virt >> (39 - 9 * level as u64)) & 511) as usize
}

/// One address space's tree, by its root table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTable {
    root: u64,
}

impl PageTable {
    /// A tree with a fresh, empty root.
    pub fn new(memory: &mut impl TableMemory) -> Result<Self, MapError> {
        Ok(Self { root: memory.allocate_table().ok_or(MapError::OutOfTables)? })
    }

    /// The tree whose root is at `root_phys`.
    pub fn from_root(root_phys: u64) -> Self {
        Self { root: root_phys }
    }

    /// Physical address of the root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `[virt, virt + size)` to `[phys, phys + size)`, using the largest
    /// leaves `sizes` allows where both addresses are aligned for them.
    /// Fails without mapping anything new past the point of failure if part of
    /// the range is already mapped.
    pub fn map<F: EntryFormat>(
        &self,
        memory: &mut impl TableMemory,
        virt: u64,
        phys: u64,
        size_bytes: u64,
        attributes: Attributes,
        sizes: LeafSizes,
    ) -> Result<(), MapError> {
        let page = LEAF_BYTES[3];
        if !virt.is_multiple_of(page) || !phys.is_multiple_of(page) || !size_bytes.is_multiple_of(page) {
            return Err(MapError::Misaligned);
        }
        virt.checked_add(size_bytes).ok_or(MapError::Overflow)?;
        phys.checked_add(size_bytes).ok_or(MapError::Overflow)?;
        let mut offset = 0;
        while offset < size_bytes {
            let (v, p, remaining) = (virt + offset, phys + offset, size_bytes - offset);
            let level = (1..=3)
                .find(|&level| {
                    let leaf = LEAF_BYTES[level];
                    sizes.allows(level) && v % leaf == 0 && p % leaf == 0 && remaining >= leaf
                })
                .unwrap_or(3);
            self.map_leaf::<F>(memory, v, p, level, attributes)?;
            offset += LEAF_BYTES[level];
        }
        Ok(())
    }

    fn map_leaf<F: EntryFormat>(
        &self,
        memory: &mut impl TableMemory,
        virt: u64,
        phys: u64,
        leaf_level: Level,
        attributes: Attributes,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        for level in 0..leaf_level {
            let slot = index(virt, level);
            let entry = memory.read_entry(table, slot);
            table = if !F::is_present(entry) {
                let next = memory.allocate_table().ok_or(MapError::OutOfTables)?;
                let descriptor = if attributes.is_user { F::table_for_user(next) } else { F::table(next) };
                memory.write_entry(table, slot, descriptor);
                next
            } else if F::is_table(entry, level) {
                F::address(entry)
            } else {
                return Err(MapError::AlreadyMapped { virt });
            };
        }
        let slot = index(virt, leaf_level);
        if F::is_present(memory.read_entry(table, slot)) {
            return Err(MapError::AlreadyMapped { virt });
        }
        memory.write_entry(table, slot, F::leaf(phys, leaf_level, attributes));
        Ok(())
    }

    /// The physical address and attributes `virt` maps to.
    // `level` is the walk's depth, used for more than indexing LEAF_BYTES.
    #[allow(clippy::needless_range_loop)]
    pub fn translate<F: EntryFormat>(&self, memory: &impl TableMemory, virt: u64) -> Option<(u64, Attributes)> {
        let mut table = self.root;
        for level in 0..=3 {
            let entry = memory.read_entry(table, index(virt, level));
            if !F::is_present(entry) {
                return None;
            }
            if level < 3 && F::is_table(entry, level) {
                table = F::address(entry);
                continue;
            }
            if level == 0 {
                return None;
            }
            let leaf = LEAF_BYTES[level];
            return Some((F::address(entry) + (virt & (leaf - 1)), F::attributes(entry, level)));
        }
        None
    }

    /// Removes the 4 KiB-page mappings of `[virt, virt + size)` and returns
    /// how many pages were mapped. Large leaves inside the range are removed
    /// whole only if the range covers them entirely; otherwise they are left
    /// and reported as `Err`.
    // `level` is the walk's depth, used for more than indexing LEAF_BYTES.
    #[allow(clippy::needless_range_loop)]
    pub fn unmap<F: EntryFormat>(
        &self,
        memory: &mut impl TableMemory,
        virt: u64,
        size_bytes: u64,
    ) -> Result<u64, MapError> {
        let page = LEAF_BYTES[3];
        if !virt.is_multiple_of(page) || !size_bytes.is_multiple_of(page) {
            return Err(MapError::Misaligned);
        }
        let end = virt.checked_add(size_bytes).ok_or(MapError::Overflow)?;
        let mut removed = 0;
        let mut address = virt;
        'next: while address < end {
            let mut table = self.root;
            for level in 0..=3 {
                let slot = index(address, level);
                let entry = memory.read_entry(table, slot);
                let span = if level == 0 { 1 << 39 } else { LEAF_BYTES[level] };
                if !F::is_present(entry) {
                    address = (address & !(span - 1)) + span;
                    continue 'next;
                }
                if level < 3 && F::is_table(entry, level) {
                    table = F::address(entry);
                    continue;
                }
                if !address.is_multiple_of(span) || address + span > end {
                    return Err(MapError::Misaligned);
                }
                memory.write_entry(table, slot, 0);
                removed += span / page;
                address += span;
                continue 'next;
            }
        }
        Ok(removed)
    }

    /// Points the level-`level` entry covering `virt` at an existing table
    /// (creating the levels above it), for tables shared with code outside
    /// this tree, such as aarch64's device window.
    pub fn install_table<F: EntryFormat>(
        &self,
        memory: &mut impl TableMemory,
        virt: u64,
        level: Level,
        table_phys: u64,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        for current in 0..level {
            let slot = index(virt, current);
            let entry = memory.read_entry(table, slot);
            table = if !F::is_present(entry) {
                let next = memory.allocate_table().ok_or(MapError::OutOfTables)?;
                memory.write_entry(table, slot, F::table(next));
                next
            } else if F::is_table(entry, current) {
                F::address(entry)
            } else {
                return Err(MapError::AlreadyMapped { virt });
            };
        }
        let slot = index(virt, level);
        if F::is_present(memory.read_entry(table, slot)) {
            return Err(MapError::AlreadyMapped { virt });
        }
        memory.write_entry(table, slot, F::table(table_phys));
        Ok(())
    }

    /// Copies the top-level entries `first..512` from `other` (the kernel half
    /// shared by every x86_64 address space).
    pub fn share_top_level(&self, memory: &mut impl TableMemory, other: &PageTable, first: usize) {
        for slot in first..512 {
            let entry = memory.read_entry(other.root, slot);
            memory.write_entry(self.root, slot, entry);
        }
    }

    /// Visits every table of the tree below the root (not the root itself),
    /// for freeing them; entries at top-level slots `skip_from..` are not
    /// descended (shared kernel half).
    pub fn for_each_table<F: EntryFormat>(
        &self,
        memory: &impl TableMemory,
        skip_from: usize,
        visit: &mut impl FnMut(u64),
    ) {
        fn walk<F: EntryFormat>(
            memory: &impl TableMemory,
            table: u64,
            level: Level,
            limit: usize,
            visit: &mut impl FnMut(u64),
        ) {
            for slot in 0..limit {
                let entry = memory.read_entry(table, slot);
                if level < 3 && F::is_present(entry) && F::is_table(entry, level) {
                    let child = F::address(entry);
                    walk::<F>(memory, child, level + 1, 512, visit);
                    visit(child);
                }
            }
        }
        walk::<F>(memory, self.root, 0, skip_from, visit);
    }
}

/// x86_64 4-level paging entries.
#[derive(Debug)]
pub struct X86_64;

mod x86_bits {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const CACHE_DISABLE: u64 = 1 << 4;
    pub const HUGE: u64 = 1 << 7;
    pub const GLOBAL: u64 = 1 << 8;
    pub const NO_EXECUTE: u64 = 1 << 63;
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
}

impl EntryFormat for X86_64 {
    fn table(table_phys: u64) -> u64 {
        table_phys | x86_bits::PRESENT | x86_bits::WRITABLE
    }

    fn table_for_user(table_phys: u64) -> u64 {
        Self::table(table_phys) | x86_bits::USER
    }

    fn leaf(phys: u64, level: Level, attributes: Attributes) -> u64 {
        use x86_bits::*;
        let mut entry = phys | PRESENT;
        if level < 3 {
            entry |= HUGE;
        }
        if attributes.is_writable {
            entry |= WRITABLE;
        }
        if !attributes.is_executable {
            entry |= NO_EXECUTE;
        }
        if attributes.is_user {
            entry |= USER;
        } else {
            entry |= GLOBAL;
        }
        match attributes.memory {
            MemoryType::Normal => {}
            // PAT entries 3 (PCD|PWT): UC. Write-combining would need the PAT
            // reprogrammed; uncached is correct, only slower.
            MemoryType::Device | MemoryType::WriteCombining => entry |= CACHE_DISABLE | WRITE_THROUGH,
        }
        entry
    }

    fn is_present(entry: u64) -> bool {
        entry & x86_bits::PRESENT != 0
    }

    fn is_table(entry: u64, level: Level) -> bool {
        level == 0 || (level < 3 && entry & x86_bits::HUGE == 0)
    }

    fn address(entry: u64) -> u64 {
        entry & x86_bits::ADDRESS
    }

    fn attributes(entry: u64, _level: Level) -> Attributes {
        use x86_bits::*;
        Attributes {
            is_writable: entry & WRITABLE != 0,
            is_executable: entry & NO_EXECUTE == 0,
            is_user: entry & USER != 0,
            memory: if entry & CACHE_DISABLE != 0 { MemoryType::Device } else { MemoryType::Normal },
        }
    }
}

/// aarch64 stage-1 entries, 4 KiB granule, MAIR index 0 = device nGnRE,
/// 1 = normal write-back, 2 = normal non-cacheable.
#[derive(Debug)]
pub struct Aarch64;

mod arm_bits {
    pub const VALID: u64 = 1 << 0;
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    pub const ATTR_INDEX_SHIFT: u64 = 2;
    pub const AP_EL0: u64 = 1 << 6;
    pub const AP_READ_ONLY: u64 = 1 << 7;
    pub const INNER_SHAREABLE: u64 = 3 << 8;
    pub const ACCESS_FLAG: u64 = 1 << 10;
    pub const NOT_GLOBAL: u64 = 1 << 11;
    pub const PRIVILEGED_NO_EXECUTE: u64 = 1 << 53;
    pub const USER_NO_EXECUTE: u64 = 1 << 54;
    pub const ADDRESS: u64 = 0x0000_ffff_ffff_f000;
}

/// MAIR_EL1 value matching [`Aarch64`]'s attribute indices.
pub const AARCH64_MAIR: u64 = 0x04 | (0xff << 8) | (0x44 << 16);

impl EntryFormat for Aarch64 {
    fn table(table_phys: u64) -> u64 {
        table_phys | arm_bits::VALID | arm_bits::TABLE_OR_PAGE
    }

    fn leaf(phys: u64, level: Level, attributes: Attributes) -> u64 {
        use arm_bits::*;
        let mut entry = phys | VALID | ACCESS_FLAG;
        if level == 3 {
            entry |= TABLE_OR_PAGE;
        }
        let index = match attributes.memory {
            MemoryType::Device => 0,
            MemoryType::Normal => 1,
            MemoryType::WriteCombining => 2,
        };
        entry |= index << ATTR_INDEX_SHIFT;
        if attributes.memory != MemoryType::Device {
            entry |= INNER_SHAREABLE;
        }
        if !attributes.is_writable {
            entry |= AP_READ_ONLY;
        }
        if attributes.is_user {
            // EL0 access; the kernel never executes user pages.
            entry |= AP_EL0 | NOT_GLOBAL | PRIVILEGED_NO_EXECUTE;
            if !attributes.is_executable {
                entry |= USER_NO_EXECUTE;
            }
        } else {
            entry |= USER_NO_EXECUTE;
            if !attributes.is_executable {
                entry |= PRIVILEGED_NO_EXECUTE;
            }
        }
        entry
    }

    fn is_present(entry: u64) -> bool {
        entry & arm_bits::VALID != 0
    }

    fn is_table(entry: u64, level: Level) -> bool {
        level < 3 && entry & arm_bits::TABLE_OR_PAGE != 0
    }

    fn address(entry: u64) -> u64 {
        entry & arm_bits::ADDRESS
    }

    fn attributes(entry: u64, _level: Level) -> Attributes {
        use arm_bits::*;
        let is_user = entry & AP_EL0 != 0;
        Attributes {
            is_writable: entry & AP_READ_ONLY == 0,
            is_executable: if is_user { entry & USER_NO_EXECUTE == 0 } else { entry & PRIVILEGED_NO_EXECUTE == 0 },
            is_user,
            memory: match (entry >> ATTR_INDEX_SHIFT) & 7 {
                0 => MemoryType::Device,
                2 => MemoryType::WriteCombining,
                _ => MemoryType::Normal,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Page tables in a simulated memory.
    #[derive(Default)]
    struct Tables {
        tables: BTreeMap<u64, [u64; 512]>,
        next: u64,
        limit: Option<usize>,
    }

    impl TableMemory for Tables {
        fn read_entry(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write_entry(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).expect("table exists")[index] = value;
        }
        fn allocate_table(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|limit| self.tables.len() >= limit) {
                return None;
            }
            self.next += 0x1000;
            let phys = 0x100_0000 + self.next;
            self.tables.insert(phys, [0; 512]);
            Some(phys)
        }
    }

    const KERNEL: u64 = 0xffff_ffff_8000_0000;
    const DIRECT_MAP: u64 = 0xffff_8000_0000_0000;

    fn round_trip<F: EntryFormat>() {
        let mut memory = Tables::default();
        let table = PageTable::new(&mut memory).unwrap();
        // 3 GiB + 6 MiB + 8 KiB of direct map from physical 0: one 1 GiB leaf
        // per GiB, 2 MiB leaves, then pages.
        let size = (3 << 30) + (6 << 20) + 0x2000;
        table.map::<F>(&mut memory, DIRECT_MAP, 0, size, Attributes::KERNEL_DATA, LeafSizes::ALL).unwrap();
        let tables_after_direct_map = memory.tables.len();
        assert_eq!(tables_after_direct_map, 1 + 1 + 1 + 1, "root, level 1, one level 2, one level 3");
        for probe in [0, 0x1234_5678, (3 << 30) + (5 << 20) + 17, size - 1] {
            let (phys, attributes) = table.translate::<F>(&memory, DIRECT_MAP + probe).unwrap();
            assert_eq!(phys, probe);
            assert_eq!(attributes, Attributes::KERNEL_DATA);
        }
        assert_eq!(table.translate::<F>(&memory, DIRECT_MAP + size), None);

        // A kernel image at an unaligned physical address with 4 KiB pages.
        table.map::<F>(&mut memory, KERNEL, 0x20_3000, 0x5000, Attributes::KERNEL_CODE, LeafSizes::ALL).unwrap();
        let (phys, attributes) = table.translate::<F>(&memory, KERNEL + 0x4321).unwrap();
        assert_eq!(phys, 0x20_7321);
        assert_eq!(attributes, Attributes::KERNEL_CODE);

        // Overlapping mappings are refused.
        assert_eq!(
            table.map::<F>(&mut memory, KERNEL + 0x1000, 0, 0x1000, Attributes::KERNEL_DATA, LeafSizes::ALL),
            Err(MapError::AlreadyMapped { virt: KERNEL + 0x1000 })
        );
        assert_eq!(
            table.map::<F>(&mut memory, KERNEL, 1, 0x1000, Attributes::KERNEL_DATA, LeafSizes::ALL),
            Err(MapError::Misaligned)
        );

        // User pages and device pages keep their attributes.
        let user = Attributes { is_writable: true, is_executable: false, is_user: true, memory: MemoryType::Normal };
        table.map::<F>(&mut memory, 0x40_0000, 0x900_0000, 0x1000, user, LeafSizes::ALL).unwrap();
        assert_eq!(table.translate::<F>(&memory, 0x40_0010), Some((0x900_0010, user)));
        table
            .map::<F>(&mut memory, KERNEL + 0x10_0000, 0x900_0000, 0x1000, Attributes::KERNEL_DEVICE, LeafSizes::ALL)
            .unwrap();
        assert_eq!(table.translate::<F>(&memory, KERNEL + 0x10_0000).unwrap().1.memory, MemoryType::Device);

        // Unmapping removes exactly the pages asked for.
        assert_eq!(table.unmap::<F>(&mut memory, KERNEL + 0x1000, 0x2000), Ok(2));
        assert_eq!(table.translate::<F>(&memory, KERNEL + 0x1000), None);
        assert!(table.translate::<F>(&memory, KERNEL).is_some());
        assert!(table.translate::<F>(&memory, KERNEL + 0x3000).is_some());
        // Part of a 1 GiB leaf cannot be unmapped.
        assert_eq!(table.unmap::<F>(&mut memory, DIRECT_MAP, 0x1000), Err(MapError::Misaligned));

        let mut visited = 0;
        table.for_each_table::<F>(&memory, 512, &mut |_| visited += 1);
        assert_eq!(visited, memory.tables.len() - 1);
    }

    #[test]
    fn x86_64_tables_round_trip() {
        round_trip::<X86_64>();
    }

    #[test]
    fn aarch64_tables_round_trip() {
        round_trip::<Aarch64>();
    }

    #[test]
    fn large_leaves_can_be_disallowed() {
        let mut memory = Tables::default();
        let table = PageTable::new(&mut memory).unwrap();
        table.map::<X86_64>(&mut memory, 0, 0, 4 << 20, Attributes::KERNEL_DATA, LeafSizes::PAGES_ONLY).unwrap();
        assert_eq!(memory.tables.len(), 1 + 1 + 1 + 2, "two level-3 tables for 4 MiB of pages");
    }

    #[test]
    fn running_out_of_tables_is_an_error() {
        let mut memory = Tables { limit: Some(2), ..Tables::default() };
        let table = PageTable::new(&mut memory).unwrap();
        assert_eq!(
            table.map::<Aarch64>(&mut memory, 0, 0, 0x1000, Attributes::KERNEL_DATA, LeafSizes::ALL),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn kernel_half_is_shared_between_address_spaces() {
        let mut memory = Tables::default();
        let kernel = PageTable::new(&mut memory).unwrap();
        kernel.map::<X86_64>(&mut memory, KERNEL, 0x20_0000, 0x1000, Attributes::KERNEL_CODE, LeafSizes::ALL).unwrap();
        let user = PageTable::new(&mut memory).unwrap();
        user.share_top_level(&mut memory, &kernel, 256);
        assert_eq!(user.translate::<X86_64>(&memory, KERNEL), Some((0x20_0000, Attributes::KERNEL_CODE)));
        let mut own_tables = 0;
        user.for_each_table::<X86_64>(&memory, 256, &mut |_| own_tables += 1);
        assert_eq!(own_tables, 0, "the shared kernel half is not the user space's to free");
    }
}
