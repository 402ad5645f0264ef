//! The rules a next kernel meets on top of [`parse`](crate::parse), and the [`KernelPlan`] a kexec loader copies it by.
//!
//! A self-kexec places the new kernel's virtual span, in one piece, at a
//! 2 MiB aligned physical address inside a KHO scratch area, copies each
//! segment's file bytes to its offset in the span, zeroes the rest (bss and
//! gaps), and jumps to the KHO entry at the same offset. The ELF physical
//! addresses (`p_paddr`) are not used: the loader chooses the placement.

use core::fmt;

use arrayvec::ArrayVec;

use crate::{ElfImage, ImageError, MAX_LOAD_SEGMENTS};

/// The alignment of a kernel's virtual span (and of its physical placement):
/// Baton links its kernel at 0xffff_ffff_8000_0000 or 0xffff_ffff_8020_0000
/// and maps it with 2 MiB pages.
pub const KERNEL_ALIGN_BYTES: u64 = 2 * 1024 * 1024;

/// One segment of a [`KernelPlan`], placed relative to the span start.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KernelSegment<'bytes> {
    /// Where the segment starts, counted from the span start.
    pub span_offset_bytes: u64,
    /// Where the segment's bytes start in the file.
    pub file_offset: u64,
    /// The bytes to copy to `span_offset_bytes`.
    pub file_data: &'bytes [u8],
    /// The segment's size in memory; past `file_data` it is zero.
    pub memory_bytes: u64,
    /// `PF_W`.
    pub is_writable: bool,
    /// `PF_X`.
    pub is_executable: bool,
}

/// The file data is summarised by its length.
impl fmt::Debug for KernelSegment<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KernelSegment")
            .field("span_offset_bytes", &format_args!("{:#x}", self.span_offset_bytes))
            .field("file_offset", &format_args!("{:#x}", self.file_offset))
            .field("file_bytes", &format_args!("{:#x}", self.file_data.len()))
            .field("memory_bytes", &format_args!("{:#x}", self.memory_bytes))
            .field("is_writable", &self.is_writable)
            .field("is_executable", &self.is_executable)
            .finish()
    }
}

/// How to load a next kernel that passed [`ElfImage::validate_kernel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPlan<'bytes> {
    span_start: u64,
    memory_bytes: u64,
    entry_offset_bytes: u64,
    segments: ArrayVec<KernelSegment<'bytes>, MAX_LOAD_SEGMENTS>,
}

impl<'bytes> KernelPlan<'bytes> {
    /// The virtual address of the span's start (2 MiB aligned).
    pub fn span_start(&self) -> u64 {
        self.span_start
    }

    /// The memory the span needs, bss and gaps included.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The KHO entry point, counted from the span start.
    pub fn entry_offset_bytes(&self) -> u64 {
        self.entry_offset_bytes
    }

    /// The segments in ascending order of `span_offset_bytes`.
    pub fn segments(&self) -> &[KernelSegment<'bytes>] {
        &self.segments
    }

    /// The physical KHO entry point when the span is placed at `load_phys`,
    /// or `None` on overflow.
    pub fn entry_phys(&self, load_phys: u64) -> Option<u64> {
        load_phys.checked_add(self.entry_offset_bytes)
    }
}

impl<'bytes> ElfImage<'bytes> {
    /// Check the image as the next kernel of a self-kexec and plan its
    /// loading: it carries a Baton KHO entry note naming an address inside
    /// an executable segment, its virtual span starts 2 MiB aligned, and the
    /// span (bss included) fits in `scratch_bytes`.
    pub fn validate_kernel(&self, scratch_bytes: u64) -> Result<KernelPlan<'bytes>, ImageError> {
        let kho_entry = self.kho_entry().ok_or(ImageError::MissingKhoEntryNote)?;
        if !self.is_executable_address(kho_entry) {
            return Err(ImageError::KhoEntryNotExecutable { kho_entry });
        }
        let span = self.virtual_span();
        if span.start & (KERNEL_ALIGN_BYTES - 1) != 0 {
            return Err(ImageError::KernelSpanMisaligned { span_start: span.start });
        }
        let memory_bytes = span.size_bytes();
        if memory_bytes > scratch_bytes {
            return Err(ImageError::KernelTooLarge { memory_bytes, scratch_bytes });
        }
        // Every segment, and so the KHO entry, lies inside the span, and
        // every segment's file bytes inside the file: `parse` checked both.
        let entry_offset_bytes =
            kho_entry.checked_sub(span.start).ok_or(ImageError::KhoEntryNotExecutable { kho_entry })?;
        let mut segments = ArrayVec::new();
        for (index, segment) in self.segments().iter().enumerate() {
            let placed = segment
                .virt_start
                .checked_sub(span.start)
                .zip(self.segment_data(segment))
                .map(|(span_offset_bytes, file_data)| KernelSegment {
                    span_offset_bytes,
                    file_offset: segment.file_offset,
                    file_data,
                    memory_bytes: segment.memory_bytes,
                    is_writable: segment.is_writable,
                    is_executable: segment.is_executable,
                })
                .ok_or(ImageError::SegmentFileOutOfBounds { index })?;
            segments.try_push(placed).map_err(|_| ImageError::TooManyLoadSegments)?;
        }
        Ok(KernelPlan { span_start: span.start, memory_bytes, entry_offset_bytes, segments })
    }
}
