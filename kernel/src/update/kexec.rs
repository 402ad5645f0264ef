//! Jumping into the next kernel through KHO.
//!
//! Staging happens before anything freezes: the next image (a boot module,
//! or the running kernel's own ELF when the loader kept it) is validated and
//! turned into a copy list into the low scratch region. After finalisation
//! the jump builds its control page and identity page tables outside the
//! destination (from the page allocator, never scratch) and hands over to
//! the architecture's trampoline, which copies the image into scratch at the
//! last moment and enters its KHO entry with the handover's address.

use crate::mm::{self, block::Block, direct_map};
use alloc::vec::Vec;
use baton_abi::{PAGE_SIZE, UpdateImage};
use baton_arch::CopyEntry;
use baton_mm::paging::{Attributes, LeafSizes, MemoryType, PageTable};
use baton_mm::scratch::ScratchKind;

/// Scratch the next kernel needs besides its image (its page tables and
/// bootstrap heap), so an image that leaves less is refused.
const NEXT_KERNEL_EARLY_BYTES: u64 = mm::BOOTSTRAP_HEAP_BYTES + (2 << 20);

/// Why the next kernel cannot be staged or jumped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KexecError {
    /// No update module was given at boot.
    NoUpdateModule,
    /// The running kernel's own ELF is not available on this boot path.
    OwnImageUnavailable,
    /// A rehearsal has no image to stage.
    RehearsalHasNoImage,
    /// The image is not a boot file in RAM.
    ImageNotInRam,
    /// The image failed validation.
    Rejected(baton_image::ImageError),
    /// There is no low scratch region to load it into.
    NoLowScratch,
    /// The image's entry point is outside it.
    EntryOutsideImage,
    /// The destination could not be prepared (it is not scratch).
    DestinationNotScratch,
    /// The trampoline does not fit its control page.
    TrampolineTooLarge,
    /// A trampoline input overlaps the destination.
    InputOverlapsDestination,
    /// Memory for the control page, the copy list or the identity tables
    /// ran out.
    OutOfMemory,
}

impl core::fmt::Display for KexecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if let KexecError::Rejected(error) = self {
            return write!(f, "next kernel image refused: {error}");
        }
        f.write_str("next kernel image: ")?;
        match self {
            KexecError::NoUpdateModule => f.write_str("no update module was given at boot"),
            KexecError::OwnImageUnavailable => f.write_str(
                "the running kernel's own ELF is not available on this boot path (give it as a boot module)",
            ),
            KexecError::RehearsalHasNoImage => f.write_str("a rehearsal has no image"),
            KexecError::ImageNotInRam => f.write_str("the update image is not in RAM"),
            KexecError::Rejected(_) => Ok(()),
            KexecError::NoLowScratch => f.write_str("there is no low scratch region to load it into"),
            KexecError::EntryOutsideImage => f.write_str("the entry point is outside the image"),
            KexecError::DestinationNotScratch => f.write_str("its destination is not in scratch"),
            KexecError::TrampolineTooLarge => f.write_str("the trampoline does not fit its control page"),
            KexecError::InputOverlapsDestination => f.write_str("a trampoline input overlaps the destination"),
            KexecError::OutOfMemory => f.write_str("out of memory for the jump"),
        }
    }
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
    /// The services the image embeds (from its services note), or why that
    /// table could not be read.
    pub services: Result<baton_image::ServiceTable, ServicesNote>,
}

/// Why a staged image's table of services is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicesNote {
    /// The image has no services note (an older Baton).
    Missing,
    /// The note is malformed.
    Malformed(baton_image::services::ServicesError),
}

fn machine() -> baton_image::Machine {
    if cfg!(target_arch = "x86_64") { baton_image::Machine::X86_64 } else { baton_image::Machine::Aarch64 }
}

/// Finds and validates the next kernel image.
pub fn stage(image: UpdateImage) -> Result<Staged, KexecError> {
    let info = crate::options::boot_info();
    let range = match image {
        UpdateImage::BootModule => info.modules.first().map(|module| module.range).ok_or(KexecError::NoUpdateModule)?,
        UpdateImage::RunningKernel => info.kernel.file.ok_or(KexecError::OwnImageUnavailable)?,
        UpdateImage::Rehearsal => return Err(KexecError::RehearsalHasNoImage),
    };
    let source = baton_mm::Range::new(range.start, range.end);
    let bytes = mm::boot_file_bytes(source).ok_or(KexecError::ImageNotInRam)?;
    let elf = baton_image::parse(bytes, machine()).map_err(KexecError::Rejected)?;
    let low = mm::scratch_regions()
        .into_iter()
        .find(|region| region.kind == ScratchKind::Low)
        .ok_or(KexecError::NoLowScratch)?;
    let room = low.range.size_bytes().saturating_sub(NEXT_KERNEL_EARLY_BYTES);
    let plan = elf.validate_kernel(room).map_err(KexecError::Rejected)?;
    let load_phys = load_address(low.range, plan.memory_bytes());
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
    let entry_phys = plan.entry_phys(load_phys).ok_or(KexecError::EntryOutsideImage)?;
    for copy in &copies {
        let destination = baton_mm::Range::new(copy.destination, copy.destination + copy.length);
        let source = (copy.source != 0).then(|| baton_mm::Range::new(copy.source, copy.source + copy.length));
        if !mm::prime_for_overwrite(destination, source) {
            return Err(KexecError::DestinationNotScratch);
        }
    }
    let services = match elf.find_note(baton_image::BATON_NOTE_NAME, baton_image::BATON_NOTE_SERVICES) {
        None => Err(ServicesNote::Missing),
        Some(descriptor) => baton_image::services::parse_services(descriptor).map_err(ServicesNote::Malformed),
    };
    Ok(Staged { copies, entry_phys, load_phys, memory_bytes: plan.memory_bytes(), source, services })
}

/// Where in the low scratch region the next image goes: its start, unless
/// the running kernel is there (it is after the first update), then the
/// first 2 MiB boundary after the running kernel, so the copy never
/// overwrites code that is running (which also keeps emulators from taking
/// their slow self-modifying-code path). Either way the image and the next
/// kernel's early allocations fit in the region.
fn load_address(low: baton_mm::Range, image_bytes: u64) -> u64 {
    let running = crate::options::boot_info().kernel.phys;
    let running = baton_mm::Range::new(running.start, running.end);
    let needed = image_bytes + NEXT_KERNEL_EARLY_BYTES;
    let first = baton_mm::Range::new(low.start, low.start + image_bytes);
    if !first.overlaps(&running) {
        return low.start;
    }
    let after = running.end.next_multiple_of(2 << 20);
    if after + needed <= low.end {
        return after;
    }
    // The region is too small for two images: overwrite the running one.
    low.start
}

impl Staged {
    /// Where the image goes and how large it is.
    pub fn destination(&self) -> baton_mm::Range {
        baton_mm::Range::new(self.load_phys, self.load_phys + self.memory_bytes)
    }
}

/// A zeroed page from the page allocator for the identity tables. They are
/// only used by the jump, which never returns when it succeeds; a failed
/// jump leaves them allocated (a few pages).
fn identity_table_page() -> Option<u64> {
    Some(Block::allocate_zeroed(0)?.leak().start)
}

/// Builds the control page, the copy list and the identity tables, then
/// jumps. Returns (why) only if one of them cannot be set up; nothing has
/// been overwritten then.
pub fn jump(staged: &Staged, handover_phys: u64, boot_description_phys: u64) -> KexecError {
    match prepare_jump(staged, handover_phys, boot_description_phys) {
        Ok(plan) => enter(&plan.plan),
        Err(error) => error,
    }
}

/// What the jump needs, kept alive until it happens.
struct PreparedJump {
    plan: baton_arch::JumpPlan,
    /// The control page and the copy list (freed if the jump is abandoned).
    _pages: [Block; 2],
}

fn prepare_jump(staged: &Staged, handover_phys: u64, boot_description_phys: u64) -> Result<PreparedJump, KexecError> {
    let code = baton_arch::kexec::trampoline_code();
    let mut control = Block::allocate_zeroed(0).ok_or(KexecError::OutOfMemory)?;
    control.write_at(0, code).map_err(|_| KexecError::TrampolineTooLarge)?;
    let list_bytes = core::mem::size_of_val(staged.copies.as_slice()) as u64;
    let mut list = Block::for_bytes_zeroed(list_bytes).ok_or(KexecError::OutOfMemory)?;
    for (index, copy) in staged.copies.iter().enumerate() {
        list.write_at((index * core::mem::size_of::<CopyEntry>()) as u64, &copy.to_bytes())
            .map_err(|_| KexecError::OutOfMemory)?;
    }
    let destination = staged.destination();
    for range in [control.range(), list.range(), staged.source] {
        if range.overlaps(&destination) {
            return Err(KexecError::InputOverlapsDestination);
        }
    }

    // Identity tables: all RAM, executable, from the page allocator.
    let mut tables = direct_map::DirectMapTables { allocate_page: identity_table_page };
    let identity = PageTable::new(&mut tables).map_err(|_| KexecError::OutOfMemory)?;
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
            .map_err(|_| KexecError::OutOfMemory)?;
    }
    if baton_arch::paging::KERNEL_TOP_LEVEL_FIRST_SLOT < 512 {
        identity.share_top_level(&mut tables, &mm::kernel_table(), baton_arch::paging::KERNEL_TOP_LEVEL_FIRST_SLOT);
    }

    // Everything the trampoline reads or writes with caches off.
    let clean = |range: baton_mm::Range| {
        baton_arch::kexec::clean_data_cache(direct_map::to_virtual(range.start), range.size_bytes())
    };
    clean(control.range());
    clean(list.range());
    clean(staged.source);
    clean(destination);

    log::info!(
        target: "kexec",
        "jumping: image to {:#x} ({} KiB), entry {:#x}, handover {:#x}",
        staged.load_phys,
        staged.memory_bytes / 1024,
        staged.entry_phys,
        handover_phys
    );
    crate::console::flush();
    let stamps = crate::handover::boot_desc::timeline_entry_phys(baton_boot::handover::TIMELINE_COPY_START);
    let stamps_page = stamps & !(PAGE_SIZE - 1);
    clean(baton_mm::Range::new(stamps_page, stamps_page + PAGE_SIZE));
    crate::handover::boot_desc::stamp_timeline(baton_boot::handover::TIMELINE_JUMP, baton_arch::cpu::cycle_counter());
    let plan = baton_arch::JumpPlan {
        identity_root: identity.root(),
        control_phys: control.phys(),
        copy_list_phys: list.phys(),
        copy_count: staged.copies.len() as u64,
        entry_phys: staged.entry_phys,
        handover_phys,
        boot_description_phys,
        stamps_phys: stamps,
    };
    Ok(PreparedJump { plan, _pages: [control, list] })
}

/// The jump itself: the one place in the update layer that needs `unsafe`.
#[allow(unsafe_code)] // The call into the architecture's trampoline.
fn enter(plan: &baton_arch::JumpPlan) -> ! {
    // SAFETY: `prepare_jump` built the plan: the identity tables map all
    // RAM and share the kernel half; the control page holds the
    // trampoline; the list only writes the destination in low scratch,
    // which overlaps none of its inputs (checked); every preserved page lies
    // outside scratch; the control page and list stay allocated (the caller
    // keeps them) and nothing runs after the jump.
    unsafe { baton_arch::kexec::jump(plan) }
}
