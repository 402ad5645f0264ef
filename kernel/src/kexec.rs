//! Jumping into the next kernel through KHO.
//!
//! Staging happens before anything freezes: the next image (a boot module,
//! or the running kernel's own ELF when the loader kept it) is validated and
//! turned into a copy list into the low scratch region. After finalisation
//! the jump builds its control page and identity page tables outside the
//! destination (from the page allocator, never scratch) and hands over to
//! the architecture's trampoline, which copies the image into scratch at the
//! last moment and enters its KHO entry with the handover's address.

use crate::mm::{self, direct_map};
use crate::update::UpdateError;
use alloc::vec::Vec;
use baton_abi::UpdateImage;
use baton_mm::paging::{Attributes, LeafSizes, MemoryType, PageTable};
use baton_mm::scratch::ScratchKind;

/// Scratch the next kernel needs besides its image (its page tables and
/// bootstrap heap), so an image that leaves less is refused.
const NEXT_KERNEL_EARLY_BYTES: u64 = mm::BOOTSTRAP_HEAP_BYTES + (2 << 20);

/// One copy the trampoline performs (layout shared with the trampolines).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct CopyEntry {
    destination: u64,
    /// 0: fill with zeroes.
    source: u64,
    length: u64,
}

/// A validated next kernel, ready to be copied.
#[derive(Debug)]
pub struct Staged {
    copies: Vec<CopyEntry>,
    entry_phys: u64,
    load_phys: u64,
    memory_bytes: u64,
    /// Where the image's bytes are (outside scratch).
    source: baton_mm::Range,
}

fn machine() -> baton_image::Machine {
    if cfg!(target_arch = "x86_64") { baton_image::Machine::X86_64 } else { baton_image::Machine::Aarch64 }
}

/// Finds and validates the next kernel image.
pub fn stage(image: UpdateImage) -> Result<Staged, UpdateError> {
    let info = crate::options::boot_info();
    let range = match image {
        UpdateImage::BootModule => info
            .modules
            .first()
            .map(|module| module.range)
            .ok_or(UpdateError::NoImage("no update module was given at boot"))?,
        UpdateImage::RunningKernel => info.kernel.file.ok_or(UpdateError::NoImage(
            "the running kernel's own ELF is not available on this boot path (give it as a boot module)",
        ))?,
        UpdateImage::Rehearsal => return Err(UpdateError::NoImage("a rehearsal has no image")),
    };
    if !mm::is_ram(range.start, range.size_bytes()) {
        return Err(UpdateError::NoImage("the update image is not in RAM"));
    }
    // SAFETY: the module is RAM, reserved from the page allocator since boot
    // and never written; the direct map covers it.
    let bytes = unsafe {
        core::slice::from_raw_parts(direct_map::to_virtual(range.start) as *const u8, range.size_bytes() as usize)
    };
    let elf = baton_image::parse(bytes, machine()).map_err(UpdateError::ImageRejected)?;
    let low = mm::scratch_regions()
        .into_iter()
        .find(|region| region.kind == ScratchKind::Low)
        .ok_or(UpdateError::NoImage("there is no low scratch region to load it into"))?;
    let room = low.range.size_bytes().saturating_sub(NEXT_KERNEL_EARLY_BYTES);
    let plan = elf.validate_kernel(room).map_err(UpdateError::ImageRejected)?;
    let load_phys = load_address(low.range, plan.memory_bytes())?;
    let mut copies = Vec::new();
    for segment in plan.segments() {
        let destination = load_phys + segment.span_offset_bytes;
        let file_bytes = segment.file_data.len() as u64;
        if file_bytes > 0 {
            let source = range.start + (segment.file_data.as_ptr() as u64 - bytes.as_ptr() as u64);
            copies.push(CopyEntry { destination, source, length: file_bytes });
        }
        if segment.memory_bytes > file_bytes {
            copies.push(CopyEntry {
                destination: destination + file_bytes,
                source: 0,
                length: segment.memory_bytes - file_bytes,
            });
        }
    }
    let entry_phys = plan.entry_phys(load_phys).ok_or(UpdateError::NoImage("the entry point is outside the image"))?;
    prime_destination(&copies);
    Ok(Staged {
        copies,
        entry_phys,
        load_phys,
        memory_bytes: plan.memory_bytes(),
        source: baton_mm::Range::new(range.start, range.end),
    })
}

/// Where in the low scratch region the next image goes: its start, unless
/// the running kernel is there (it is after the first update), then the
/// first 2 MiB boundary after the running kernel, so the copy never
/// overwrites code that is running (which also keeps emulators from taking
/// their slow self-modifying-code path). Either way the image and the next
/// kernel's early allocations fit in the region.
fn load_address(low: baton_mm::Range, image_bytes: u64) -> Result<u64, UpdateError> {
    let running = crate::options::boot_info().kernel.phys;
    let running = baton_mm::Range::new(running.start, running.end);
    let needed = image_bytes + NEXT_KERNEL_EARLY_BYTES;
    let first = baton_mm::Range::new(low.start, low.start + image_bytes);
    if !first.overlaps(&running) {
        return Ok(low.start);
    }
    let after = running.end.next_multiple_of(2 << 20);
    if after + needed <= low.end {
        return Ok(after);
    }
    // The region is too small for two images: overwrite the running one.
    Ok(low.start)
}

/// Prepares the destination before anything freezes: every page whose
/// contents will change is written back word by word with the value it
/// already holds, and pages that already hold the new contents are left
/// alone. On hardware this only warms the caches. Emulators that track
/// translated code (QEMU TCG) drop stale translations of an earlier
/// kernel's code here, outside the blackout, instead of during the
/// trampoline's copy (measured: 250 ms instead of 4 ms), and keep their
/// translations of pages that do not change (an update into the same image).
fn prime_destination(copies: &[CopyEntry]) {
    const PAGE: u64 = 4096;
    for copy in copies {
        let mut offset = 0;
        while offset < copy.length {
            let length = (PAGE - (copy.destination + offset) % PAGE).min(copy.length - offset);
            let destination = direct_map::to_virtual(copy.destination + offset) as *mut u8;
            // SAFETY: the destination is RAM in the low scratch region and the
            // source RAM holding the staged image; both are read through the
            // direct map within the lengths the plan gave.
            let differs = unsafe {
                let target = core::slice::from_raw_parts(destination, length as usize);
                if copy.source == 0 {
                    target.iter().any(|&byte| byte != 0)
                } else {
                    let source = direct_map::to_virtual(copy.source + offset) as *const u8;
                    target != core::slice::from_raw_parts(source, length as usize)
                }
            };
            if differs {
                let mut byte = 0;
                while byte < length {
                    // SAFETY: as above; writing back the byte just read
                    // changes nothing, even where the page holds this
                    // kernel's scratch allocations (single CPU, interrupts
                    // off in the kernel).
                    unsafe {
                        let pointer = destination.add(byte as usize);
                        pointer.write_volatile(pointer.read_volatile());
                    }
                    byte += 1;
                }
            }
            offset += length;
        }
    }
}

impl Staged {
    /// Where the image goes and how large it is.
    pub fn destination(&self) -> baton_mm::Range {
        baton_mm::Range::new(self.load_phys, self.load_phys + self.memory_bytes)
    }
}

fn page_allocator_page() -> Option<u64> {
    let page = mm::allocate_pages(0)?;
    // SAFETY: the page was just allocated.
    unsafe { direct_map::zero_page(page) };
    Some(page)
}

/// Builds the control page, the copy list and the identity tables, then
/// jumps. Returns only if one of them cannot be allocated (nothing has been
/// overwritten then).
pub fn jump(staged: &Staged, handover_phys: u64, boot_description_phys: u64) -> Result<(), UpdateError> {
    let code = baton_arch::kexec::trampoline_code();
    if code.len() > 4096 {
        return Err(UpdateError::NoImage("the trampoline does not fit its control page"));
    }
    let control = page_allocator_page().ok_or(UpdateError::OutOfMemory)?;
    let list_bytes = (staged.copies.len() * core::mem::size_of::<CopyEntry>()) as u64;
    let list_order = list_bytes.div_ceil(4096).max(1).next_power_of_two().trailing_zeros();
    let list = mm::allocate_pages(list_order).ok_or(UpdateError::OutOfMemory)?;
    // SAFETY: both blocks were just allocated (outside scratch) and are large
    // enough for the code and the list.
    unsafe {
        core::ptr::copy_nonoverlapping(code.as_ptr(), direct_map::to_virtual(control) as *mut u8, code.len());
        core::ptr::copy_nonoverlapping(
            staged.copies.as_ptr(),
            direct_map::to_virtual(list) as *mut CopyEntry,
            staged.copies.len(),
        );
    }
    let destination = staged.destination();
    for range in [
        baton_mm::Range::new(control, control + 4096),
        baton_mm::Range::new(list, list + (4096 << list_order)),
        staged.source,
    ] {
        if range.overlaps(&destination) {
            return Err(UpdateError::NoImage("a trampoline input overlaps the destination"));
        }
    }

    // Identity tables: all RAM, executable, from the page allocator.
    let mut tables = direct_map::DirectMapTables { allocate_page: page_allocator_page };
    let identity = PageTable::new(&mut tables).map_err(|_| UpdateError::OutOfMemory)?;
    let attributes = Attributes { is_writable: true, is_executable: true, is_user: false, memory: MemoryType::Normal };
    let sizes = LeafSizes { gigabyte: baton_arch::paging::has_gigabyte_pages(), two_megabyte: true };
    for ram in mm::ram_ranges() {
        identity
            .map::<baton_arch::paging::EntryFormat>(
                &mut tables,
                ram.start,
                ram.start,
                ram.size_bytes(),
                attributes,
                sizes,
            )
            .map_err(|_| UpdateError::OutOfMemory)?;
    }
    if baton_arch::paging::KERNEL_TOP_LEVEL_FIRST_SLOT < 512 {
        identity.share_top_level(&mut tables, &mm::kernel_table(), baton_arch::paging::KERNEL_TOP_LEVEL_FIRST_SLOT);
    }

    // Everything the trampoline reads or writes with caches off.
    baton_arch::kexec::clean_data_cache(direct_map::to_virtual(control), 4096);
    baton_arch::kexec::clean_data_cache(direct_map::to_virtual(list), 4096 << list_order);
    baton_arch::kexec::clean_data_cache(direct_map::to_virtual(staged.source.start), staged.source.size_bytes());
    baton_arch::kexec::clean_data_cache(direct_map::to_virtual(destination.start), destination.size_bytes());

    log::info!(
        target: "kexec",
        "jumping: image to {:#x} ({} KiB), entry {:#x}, handover {:#x}",
        staged.load_phys,
        staged.memory_bytes / 1024,
        staged.entry_phys,
        handover_phys
    );
    crate::console::flush();
    let stamps = crate::kho_out::timeline_entry_phys(baton_boot::handover::TIMELINE_COPY_START);
    baton_arch::kexec::clean_data_cache(direct_map::to_virtual(stamps & !4095), 4096);
    crate::kho_out::stamp_timeline(baton_boot::handover::TIMELINE_JUMP, baton_arch::cpu::cycle_counter());
    // SAFETY: the identity tables map all RAM and share the kernel half; the
    // control page holds the trampoline; the list only writes the
    // destination in low scratch, which overlaps none of its inputs (checked
    // above); every preserved page lies outside scratch.
    unsafe {
        baton_arch::kexec::jump(&baton_arch::JumpPlan {
            identity_root: identity.root(),
            control_phys: control,
            copy_list_phys: list,
            copy_count: staged.copies.len() as u64,
            entry_phys: staged.entry_phys,
            handover_phys,
            boot_description_phys,
            stamps_phys: stamps,
        })
    }
}
