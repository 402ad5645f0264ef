//! The rules a user-space service image meets on top of [`parse`](crate::parse).

use crate::{ElfImage, ImageError};

/// The lowest 64 KiB of every address space stay unmapped, so that a null
/// pointer (plus a small offset) faults.
pub const NULL_GUARD_BYTES: u64 = 64 * 1024;

impl ElfImage<'_> {
    /// Check the image as a user-space service: every segment's pages lie in
    /// `[NULL_GUARD_BYTES, user_limit)` (`user_limit` is the end of the user
    /// half, 0x0000_8000_0000_0000 on both machines), and no segment is both
    /// writable and executable.
    pub fn validate_service(&self, user_limit: u64) -> Result<(), ImageError> {
        for segment in self.segments() {
            if segment.page_start() < NULL_GUARD_BYTES || segment.page_end() > user_limit {
                return Err(ImageError::SegmentOutsideUserRange { virt_start: segment.virt_start });
            }
            if segment.is_writable && segment.is_executable {
                return Err(ImageError::WritableAndExecutable { virt_start: segment.virt_start });
            }
        }
        Ok(())
    }
}
