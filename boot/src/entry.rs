//! The entry points on the kernel targets: assembly stubs and their Rust
//! continuations, which build the [`BootInfo`] and call [`baton_main`].

use crate::info::{BootInfo, BootPath, PhysRange};
use crate::phys::PhysRead;
use spin::Once;

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    include_str!("x86_64/entry.S"),
    kho_entry_note = const baton_image::BATON_NOTE_KHO_ENTRY,
    options(att_syntax)
);
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(include_str!("aarch64/entry.S"), kho_entry_note = const baton_image::BATON_NOTE_KHO_ENTRY);

/// Offset of the direct map the entry code sets up (the same place Limine
/// puts its own, so both paths read physical memory the same way).
#[cfg(target_arch = "x86_64")]
pub const ENTRY_DIRECT_MAP_OFFSET: u64 = 0xffff_8000_0000_0000;
/// Offset of the direct map the entry code sets up.
#[cfg(target_arch = "aarch64")]
pub const ENTRY_DIRECT_MAP_OFFSET: u64 = 0xffff_0000_0000_0000;

/// Boot kinds passed by the assembly stubs (must match entry.S).
const BOOT_KIND_PVH: u64 = 1;
const BOOT_KIND_IMAGE: u64 = 2;
const BOOT_KIND_KHO: u64 = 3;

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

unsafe extern "Rust" {
    /// The common kernel, defined by the kernel crate.
    fn baton_main(info: &'static BootInfo) -> !;
}

static BOOT_INFO: Once<BootInfo> = Once::new();

/// The linked size of the image (text, data and bss) and its link address.
pub fn image_layout() -> (u64, u64) {
    let (start, end) = (&raw const __kernel_start as u64, &raw const __kernel_end as u64);
    (start, end - start)
}

/// Physical memory seen through the direct map that the entry path set up.
pub struct DirectMap {
    offset: u64,
    /// Physical addresses below this limit are mapped.
    limit: u64,
}

impl DirectMap {
    /// A reader for a direct map at `offset` covering physical `[0, limit)`.
    pub const fn new(offset: u64, limit: u64) -> Self {
        Self { offset, limit }
    }
}

impl DirectMap {
    /// The `size` bytes at physical `phys` as a slice, if they are mapped.
    ///
    /// Boot adapters use this only for structures nothing writes to while the
    /// kernel boots (device trees, loader tables).
    pub fn bytes(&self, phys: u64, size: usize) -> Option<&'static [u8]> {
        let end = phys.checked_add(size as u64)?;
        if end > self.limit {
            return None;
        }
        // SAFETY: `[phys, end)` lies below `limit`, which the entry code (or
        // Limine) mapped readable at `offset` for the rest of boot; callers
        // read only structures that nothing writes to during boot.
        Some(unsafe { core::slice::from_raw_parts((self.offset + phys) as *const u8, size) })
    }
}

impl PhysRead for DirectMap {
    fn read_phys(&self, phys: u64, buffer: &mut [u8]) -> bool {
        let Some(end) = phys.checked_add(buffer.len() as u64) else {
            return false;
        };
        if end > self.limit {
            return false;
        }
        let source = (self.offset + phys) as *const u8;
        // SAFETY: `[phys, end)` lies below `limit`, which the entry code (or
        // Limine) mapped readable at `offset`; the bytes are plain data and the
        // destination is a distinct, writable buffer.
        unsafe { core::ptr::copy_nonoverlapping(source, buffer.as_mut_ptr(), buffer.len()) };
        true
    }
}

/// What the entry stubs' direct map covers: 512 GiB with 1 GiB pages, or only
/// 4 GiB where x86_64 CPUs lack them.
fn entry_direct_map_limit() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID 0x8000_0001 EDX bit 26: 1 GiB pages.
        let has_huge_pages = core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0;
        if has_huge_pages { 512 << 30 } else { 4 << 30 }
    }
    #[cfg(target_arch = "aarch64")]
    {
        512 << 30
    }
}

fn finish(info: BootInfo) -> ! {
    let info = BOOT_INFO.call_once(|| info);
    // SAFETY: `baton_main` is the kernel's entry, defined exactly once by the
    // kernel crate with this signature.
    unsafe { baton_main(info) }
}

/// Continuation of the PVH, arm64 `Image` and KHO stubs: the MMU is on, the
/// image runs at its link address and the boot stack is in use.
/// `second_argument` is the boot description's address on a KHO entry.
#[unsafe(no_mangle)]
extern "C" fn boot_entry_direct(kind: u64, argument: u64, image_phys: u64, second_argument: u64) -> ! {
    let memory = DirectMap::new(ENTRY_DIRECT_MAP_OFFSET, entry_direct_map_limit());
    let mut info = match kind {
        BOOT_KIND_PVH => match crate::pvh::parse(&memory, argument) {
            Ok(info) => info,
            Err(error) => {
                let mut info = BootInfo::new(BootPath::Pvh);
                info.warn(crate::info::BootWarning::Malformed(match error {
                    crate::pvh::PvhError::Unreadable => "PVH start info unreadable",
                    crate::pvh::PvhError::BadMagic(_) => "PVH start info magic",
                }));
                info
            }
        },
        BOOT_KIND_IMAGE => {
            let mut info = BootInfo::new(BootPath::LinuxImage);
            read_device_tree(&memory, &mut info, argument, crate::dtb::MemoryNodes::Read);
            info
        }
        BOOT_KIND_KHO => {
            let mut info = BootInfo::new(BootPath::Kho);
            info.handover = Some(argument);
            read_boot_description(&memory, &mut info, second_argument, argument);
            info
        }
        _ => BootInfo::new(BootPath::Pvh),
    };
    if kind == BOOT_KIND_PVH
        && let Some(rsdp) = info.firmware.acpi_rsdp
    {
        crate::srat::read_numa(&memory, rsdp, &mut info);
    }
    let (virt_start, size) = image_layout();
    info.kernel.phys = PhysRange { start: image_phys, end: image_phys + size };
    info.kernel.virt_start = virt_start;
    info.entry_direct_map_offset = ENTRY_DIRECT_MAP_OFFSET;
    finish(info)
}

/// Reads the previous kernel's boot description (a KHO entry's machine
/// description). A damaged one leaves the description empty with a warning.
fn read_boot_description(memory: &DirectMap, info: &mut BootInfo, phys: u64, root_fdt: u64) {
    /// Boot descriptions are at most this large.
    const MAX_BOOT_DESCRIPTION_BYTES: usize = 1 << 20;
    let mut header = [0; crate::dtb::HEADER_BYTES];
    let blob = memory
        .read_phys(phys, &mut header)
        .then(|| crate::dtb::total_size(&header))
        .flatten()
        .filter(|&size| size <= MAX_BOOT_DESCRIPTION_BYTES)
        .and_then(|size| memory.bytes(phys, size));
    let result = match blob {
        Some(blob) => crate::handover::parse(blob, phys, root_fdt, info),
        None => Err(crate::handover::BootDescriptionError::NotAnFdt),
    };
    if let Err(error) = result {
        info.warn(crate::info::BootWarning::BootDescription(error));
    }
}

/// Parses the device tree at `phys`, read through the entry direct map.
pub fn read_device_tree(memory: &DirectMap, info: &mut BootInfo, phys: u64, memory_nodes: crate::dtb::MemoryNodes) {
    /// Device trees Baton accepts at boot are at most this large.
    const MAX_DEVICE_TREE_BYTES: usize = 16 << 20;
    let mut header = [0; crate::dtb::HEADER_BYTES];
    let blob = memory
        .read_phys(phys, &mut header)
        .then(|| crate::dtb::total_size(&header))
        .flatten()
        .filter(|&size| size <= MAX_DEVICE_TREE_BYTES)
        .and_then(|size| memory.bytes(phys, size));
    match blob {
        Some(blob) => crate::dtb::parse_into(info, blob, phys, memory_nodes),
        None => info.warn(crate::info::BootWarning::Malformed("device tree header")),
    }
}

#[cfg(target_os = "none")]
pub(crate) fn finish_limine(info: BootInfo) -> ! {
    finish(info)
}
