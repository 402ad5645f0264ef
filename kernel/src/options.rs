//! What this kernel was started with: its boot description, its version,
//! and the command line, parsed once at boot into typed options
//! ([`baton_boot::options`], host-tested). Nothing else in the kernel reads
//! the command line.

#![deny(unsafe_code)]

use baton_boot::BootInfo;
pub use baton_boot::options::{DeviceAssignment, Options};
use spin::Once;

/// The version this kernel reports (the xtask sets `BATON_VERSION` for the
/// second image of the update demo).
pub const VERSION: &str = match option_env!("BATON_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

static BOOT_INFO: Once<&'static BootInfo> = Once::new();
static OPTIONS: Once<Options> = Once::new();

/// Records the boot description and parses its command line (first thing
/// in the kernel's entry).
pub fn init(info: &'static BootInfo) -> &'static Options {
    BOOT_INFO.call_once(|| info);
    OPTIONS.call_once(|| Options::parse(info.command_line.as_str()))
}

/// The boot description this kernel was started with.
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO.get().expect("options::init runs first thing in baton_main")
}

/// The options this kernel was started with.
pub fn get() -> &'static Options {
    OPTIONS.get().expect("options::init runs first thing in baton_main")
}

/// Whether this kernel was booted through KHO (by a previous kernel).
pub fn is_kho_boot() -> bool {
    boot_info().kho.is_some()
}
