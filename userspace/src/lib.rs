//! The library Baton services are written against: system calls, a heap,
//! logging, IPC, the KHO calls, and the same sub-FDT writer the kernel uses.
//!
//! A service is a `no_std`, `no_main` binary that names its entry point with
//! [`service!`]:
//!
//! ```ignore
//! #![cfg_attr(not(test), no_std)]
//! #![no_main]
//! baton_user::service!(main);
//! fn main(argument: u64) -> i32 {
//!     log::info!("hello from a service");
//!     0
//! }
//! ```

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod channel;
pub mod device;
pub mod heap;
pub mod ipc;
pub mod kho;
pub mod logging;
pub mod protocol;
pub mod sockets;
pub mod syscall;
pub mod thread;

/// The ABI's result encoding, for services that issue raw calls (tests).
pub use baton_abi::error as baton_abi_error;
/// System call numbers, for services that issue raw calls (tests).
pub use baton_abi::syscall as baton_abi_syscall;
pub use baton_abi::{
    BallastStart, Error, IRQ_LABEL, InitStart, MAX_GRANTS, MAX_SUB_FDT_BYTES, MAX_USER_FOLIO_ORDER, Message, PAGE_SIZE,
    PciAddress, SHARE_REVOKED_LABEL, UpdateEvent, UpdateFate, UpdateImage, message,
};
/// The sub-FDT writer services publish their state with (shared with the
/// kernel, from `baton-kho`).
pub use baton_kho::fdt::{SubFdtWriter, native_u32, native_u64, parse_fdt};

/// A result of a system call.
pub type Result<T> = core::result::Result<T, Error>;

/// Declares the service's entry point: `fn main(argument: u64) -> i32`.
#[macro_export]
macro_rules! service {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "Rust" fn baton_service_main(argument: u64) -> i32 {
            $main(argument)
        }
    };
}

#[cfg(target_os = "none")]
unsafe extern "Rust" {
    fn baton_service_main(argument: u64) -> i32;
}

#[cfg(all(target_os = "none", target_arch = "x86_64"))]
core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    xor ebp, ebp",
    "    and rsp, -16",
    "    call {start}",
    "    ud2",
    start = sym start,
);

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    mov x29, xzr",
    "    bl {start}",
    "    brk #0",
    start = sym start,
);

/// The Rust entry: heap, logging, then the service's `main`, then exit.
#[cfg(target_os = "none")]
extern "C" fn start(argument: u64) -> ! {
    heap::init();
    logging::init();
    // SAFETY: `baton_service_main` is defined exactly once, by `service!`.
    let code = unsafe { baton_service_main(argument) };
    syscall::exit(code as i64 as u64)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = logging::LineBuffer::new();
    let _ = core::fmt::write(&mut line, format_args!("panic: {info}"));
    syscall::log(line.as_bytes());
    syscall::exit(101)
}
