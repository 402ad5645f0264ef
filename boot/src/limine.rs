//! The Limine entry: Limine's requests and the adapter that turns its
//! responses into a [`BootInfo`].
//!
//! Baton asks for base revision 2, the highest the Limine 8.x binary release
//! supports and one current Limine still accepts. Pointers Limine returns are
//! direct-map (HHDM) addresses, except where a newer revision returns physical
//! ones (RSDP, EFI system table); [`to_phys`] accepts both.

use crate::entry::DirectMap;
use crate::info::{BootInfo, BootPath, BootWarning, Framebuffer, MemoryKind, PhysRange};
use limine::BaseRevision;
use limine::memory_map::EntryType;
use limine::request::{
    DeviceTreeBlobRequest, EfiSystemTableRequest, ExecutableAddressRequest, ExecutableFileRequest, FramebufferRequest,
    HhdmRequest, MemoryMapRequest, ModuleRequest, RequestsEndMarker, RequestsStartMarker, RsdpRequest,
};

#[used]
#[unsafe(link_section = ".requests_start_marker")]
static REQUESTS_START: RequestsStartMarker = RequestsStartMarker::new();

#[used]
#[unsafe(link_section = ".requests")]
static BASE_REVISION: BaseRevision = BaseRevision::with_revision(2);

#[used]
#[unsafe(link_section = ".requests")]
static DIRECT_MAP: HhdmRequest = HhdmRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static MEMORY_MAP: MemoryMapRequest = MemoryMapRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static EXECUTABLE_ADDRESS: ExecutableAddressRequest = ExecutableAddressRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static EXECUTABLE_FILE: ExecutableFileRequest = ExecutableFileRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static MODULES: ModuleRequest = ModuleRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static RSDP: RsdpRequest = RsdpRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static EFI_SYSTEM_TABLE: EfiSystemTableRequest = EfiSystemTableRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static FRAMEBUFFER: FramebufferRequest = FramebufferRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static DEVICE_TREE: DeviceTreeBlobRequest = DeviceTreeBlobRequest::new();

#[used]
#[unsafe(link_section = ".requests_end_marker")]
static REQUESTS_END: RequestsEndMarker = RequestsEndMarker::new();

/// Converts an address Limine returned to a physical address: direct-map
/// addresses lose the offset, physical ones pass through.
fn to_phys(address: u64, direct_map_offset: u64) -> u64 {
    if address >= direct_map_offset { address - direct_map_offset } else { address }
}

fn memory_kind(entry_type: EntryType) -> MemoryKind {
    match entry_type {
        EntryType::USABLE => MemoryKind::Usable,
        EntryType::ACPI_RECLAIMABLE => MemoryKind::AcpiReclaimable,
        EntryType::ACPI_NVS => MemoryKind::AcpiNvs,
        EntryType::BAD_MEMORY => MemoryKind::Unusable,
        EntryType::BOOTLOADER_RECLAIMABLE => MemoryKind::BootloaderReclaimable,
        EntryType::EXECUTABLE_AND_MODULES => MemoryKind::KernelAndModules,
        EntryType::FRAMEBUFFER => MemoryKind::Framebuffer,
        _ => MemoryKind::Reserved,
    }
}

/// Continuation of `_start_limine`, on Baton's boot stack.
#[unsafe(no_mangle)]
extern "C" fn boot_entry_limine() -> ! {
    let mut info = BootInfo::new(BootPath::Limine);
    if !BASE_REVISION.is_supported() {
        info.warn(BootWarning::LimineRevisionUnsupported);
    }
    let direct_map_offset = DIRECT_MAP.get_response().map_or(crate::entry::ENTRY_DIRECT_MAP_OFFSET, |r| r.offset());
    info.entry_direct_map_offset = direct_map_offset;

    match MEMORY_MAP.get_response() {
        Some(response) => {
            for entry in response.entries() {
                if let Some(range) = PhysRange::from_start_size(entry.base, entry.length) {
                    info.add_memory_region(range, memory_kind(entry.entry_type));
                }
            }
        }
        None => info.warn(BootWarning::Malformed("Limine gave no memory map")),
    }

    let (virt_start, size) = crate::entry::image_layout();
    info.kernel.virt_start = virt_start;
    match EXECUTABLE_ADDRESS.get_response() {
        Some(response) => {
            let start = response.physical_base() + (virt_start - response.virtual_base());
            info.kernel.phys = PhysRange { start, end: start + size };
        }
        None => info.warn(BootWarning::Malformed("Limine gave no executable address")),
    }
    if let Some(response) = EXECUTABLE_FILE.get_response() {
        let file = response.file();
        let start = to_phys(file.addr() as u64, direct_map_offset);
        info.kernel.file = PhysRange::from_start_size(start, file.size());
        info.set_command_line(file.string().to_bytes());
    }
    if let Some(response) = MODULES.get_response() {
        for module in response.modules() {
            let start = to_phys(module.addr() as u64, direct_map_offset);
            if let Some(range) = PhysRange::from_start_size(start, module.size()) {
                let string = module.string().to_bytes();
                let name = if string.is_empty() { module.path().to_bytes() } else { string };
                info.add_module(range, name);
            }
        }
    }
    if let Some(response) = RSDP.get_response() {
        let rsdp = to_phys(response.address() as u64, direct_map_offset);
        info.firmware.acpi_rsdp = Some(rsdp);
        // Limine's direct map covers the first 4 GiB and every memory-map
        // entry, which is where ACPI tables live.
        if cfg!(target_arch = "x86_64") {
            let memory = DirectMap::new(direct_map_offset, u64::MAX - direct_map_offset);
            crate::srat::read_numa(&memory, rsdp, &mut info);
        }
    }
    if let Some(response) = EFI_SYSTEM_TABLE.get_response() {
        info.firmware.efi_system_table = Some(to_phys(response.address() as u64, direct_map_offset));
    }
    if let Some(framebuffer) = FRAMEBUFFER.get_response().and_then(|response| response.framebuffers().next()) {
        info.framebuffer = Some(Framebuffer {
            phys: to_phys(framebuffer.addr() as u64, direct_map_offset),
            width: framebuffer.width() as u32,
            height: framebuffer.height() as u32,
            pitch_bytes: framebuffer.pitch() as u32,
            bits_per_pixel: framebuffer.bpp(),
            red: (framebuffer.red_mask_shift(), framebuffer.red_mask_size()),
            green: (framebuffer.green_mask_shift(), framebuffer.green_mask_size()),
            blue: (framebuffer.blue_mask_shift(), framebuffer.blue_mask_size()),
        });
    }

    #[cfg(target_arch = "x86_64")]
    {
        info.serial = Some(crate::info::SerialPort::Uart16550 { io_port: 0x3f8 });
    }
    if let Some(response) = DEVICE_TREE.get_response() {
        let phys = to_phys(response.dtb_ptr() as u64, direct_map_offset);
        // Limine's direct map covers the first 4 GiB and all RAM above.
        let memory = DirectMap::new(direct_map_offset, u64::MAX - direct_map_offset);
        let serial = info.serial;
        // Limine's memory map is authoritative; the tree's memory nodes would
        // only repeat it with less detail.
        crate::entry::read_device_tree(&memory, &mut info, phys, crate::dtb::MemoryNodes::Ignore);
        if cfg!(target_arch = "x86_64") {
            info.serial = serial;
        }
    }
    crate::entry::finish_limine(info)
}
