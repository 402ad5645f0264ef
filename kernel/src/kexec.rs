//! Jumping into the next kernel through KHO.

use crate::update::UpdateError;
use baton_abi::UpdateImage;

/// Loads the next kernel image and jumps into it with the finalised
/// handover. Returns only when the image was refused or the jump could not
/// be made (the caller then aborts and every service carries on).
pub fn execute(_image: UpdateImage, _summary: &baton_kho::FinalizeSummary) -> Result<(), UpdateError> {
    Err(UpdateError::Image("self-kexec is not available in this build yet"))
}
