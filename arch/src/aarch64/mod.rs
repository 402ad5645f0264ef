//! aarch64: PL011 serial, exception vectors, the generic timer's counter and
//! semihosting exit.

pub mod cpu;
pub mod debug_exit;
pub mod device_window;
pub mod interrupts;
pub mod kexec;
pub mod paging;
pub mod serial;
pub mod trap;

/// The architecture's name, as printed in the banner.
pub const NAME: &str = "aarch64";
