//! The thread pointer: the register thread-local storage is found through
//! (FS base on x86_64, TPIDR_EL0 on aarch64). The kernel keeps it per
//! service, and an update that resumes the service hands it over.

use crate::Result;
use baton_abi::Syscall;
use core::sync::atomic::{AtomicU64, Ordering};

/// A thread block's first word, holding its own address (what a TLS
/// block's self pointer is): [`SelfPointer::install`] points the thread
/// pointer at it, [`SelfPointer::is_current`] checks it is still there.
pub struct SelfPointer(AtomicU64);

impl SelfPointer {
    /// A block not yet installed.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Points the thread pointer at this block; returns its address.
    pub fn install(&'static self) -> Result<u64> {
        let address = core::ptr::from_ref(self) as u64;
        self.0.store(address, Ordering::Relaxed);
        set_pointer(address)?;
        Ok(address)
    }

    /// Whether the thread pointer points at this installed block.
    pub fn is_current(&'static self) -> bool {
        let address = core::ptr::from_ref(self) as u64;
        // SAFETY: `install` pointed the thread pointer at this static
        // (mapped, aligned); only `set_pointer` (or a direct write on
        // aarch64) moves it, and a service that moved it to an unmapped
        // address faults, as it would with its own TLS.
        self.0.load(Ordering::Relaxed) == address && unsafe { word_at_pointer() } == address
    }
}

impl Default for SelfPointer {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets this service's thread pointer to `address` (below the user-half
/// limit; it need not be mapped, but [`word_at_pointer`] reads it).
pub fn set_pointer(address: u64) -> Result<()> {
    crate::syscall::call(Syscall::SetThreadPointer, [address, 0, 0, 0, 0, 0]).map(|_| ())
}

/// Reads the word the thread pointer points at, the way thread-local
/// storage does (`fs:0` on x86_64, `[tpidr_el0]` on aarch64).
///
/// # Safety
///
/// The thread pointer must point at a mapped, readable, 8-byte-aligned
/// word of this service.
pub unsafe fn word_at_pointer() -> u64 {
    let word: u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller promises FS base points at a readable word; the
    // load through the FS segment reads only that word.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) word, options(nostack, readonly, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller promises TPIDR_EL0 points at a readable, aligned
    // word; reading the register has no side effect.
    unsafe {
        core::arch::asm!(
            "mrs {address}, tpidr_el0",
            "ldr {word}, [{address}]",
            address = out(reg) _,
            word = out(reg) word,
            options(nostack, readonly, preserves_flags),
        );
    }
    word
}
