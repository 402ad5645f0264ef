//! The architectures Baton builds for, and what each needs.

use clap::ValueEnum;
use std::fmt;

/// A kernel target architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// x86_64 (PVH direct boot; Limine BIOS and UEFI).
    #[value(name = "x86_64", alias = "x86-64", alias = "amd64")]
    X86_64,
    /// aarch64 (arm64 Image direct boot; Limine UEFI).
    #[value(name = "aarch64", alias = "arm64")]
    Aarch64,
}

impl Arch {
    /// Both architectures, in the order tests run them.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The Rust target triple of the kernel and services.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
        }
    }

    /// The QEMU system emulator.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The QEMU exit status of a passing in-kernel test run (see kernel/src/ktest.rs).
    pub const TEST_SUCCESS_STATUS: i32 = 33;
    /// The QEMU exit status of a failing test run, a panic or a fault.
    pub const TEST_FAILURE_STATUS: i32 = 35;
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}
