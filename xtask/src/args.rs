//! Options shared by several commands, each defined once here and flattened
//! into the commands it makes sense for (a command that has no use for one
//! leaves it out rather than accepting and ignoring it).
//!
//! String options take values that begin with a dash as written
//! (`--qemu-args "-initrd FILE"`, `--append "-- foo"`).

use crate::arch::Arch;
use crate::qemu::{Drive, Firmware};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// `--arch`: build, run, iso, demo, soak, bench.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Target architecture.
    #[arg(long, value_enum, default_value_t = Arch::X86_64)]
    pub arch: Arch,
}

/// `--release`: build, run, iso, demo, soak, test.
#[derive(Args, Debug, Clone)]
pub struct Profile {
    /// Optimised build.
    #[arg(long)]
    pub release: bool,
}

/// `--testing`: build, run (test, soak and bench always build testing
/// kernels; demo and iso production ones).
#[derive(Args, Debug, Clone)]
pub struct Testing {
    /// Build a testing kernel: the kernel's `testing` feature (fault
    /// injection, in-kernel tests, `test.*` options) and the test-only
    /// services.
    #[arg(long)]
    pub testing: bool,
}

/// `--memory`: run, demo.
#[derive(Args, Debug, Clone)]
pub struct Memory {
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
}

/// `--append`: run, iso, demo, soak.
#[derive(Args, Debug, Clone)]
pub struct CommandLine {
    /// Kernel command line (demo and soak add it after their own; iso gives
    /// it to the plain entry).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub append: String,
}

/// How QEMU runs: `--timeout`, `--headless`, `--qemu-args` (run, demo,
/// soak).
#[derive(Args, Debug, Clone)]
pub struct QemuRun {
    /// Stop QEMU and fail after this many seconds (default: none for run;
    /// demo and soak allow time for their updates).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// No window: the serial console on stdout (demo and soak always run
    /// QEMU this way and accept the flag so the same options work for all).
    #[arg(long)]
    pub headless: bool,
    /// Extra QEMU arguments (split on whitespace).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub qemu_args: String,
}

impl QemuRun {
    /// `--timeout` as a duration.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.map(Duration::from_secs)
    }

    /// `--qemu-args` split into arguments.
    pub fn extra_args(&self) -> Vec<String> {
        self.qemu_args.split_whitespace().map(str::to_string).collect()
    }
}

/// `--kvm`: run, bench.
#[derive(Args, Debug, Clone)]
pub struct Kvm {
    /// Use KVM (x86_64; opt-in because /dev/kvm is often only paravirtual;
    /// bench's report says which accelerator ran).
    #[arg(long)]
    pub kvm: bool,
}

/// `--limine-dir`: run, iso, demo, bench, test, doctor.
#[derive(Args, Debug, Clone)]
pub struct LimineDir {
    /// Directory holding Limine's binary release files (also LIMINE_DIR).
    #[arg(long)]
    pub limine_dir: Option<PathBuf>,
}

/// How QEMU boots the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootMode {
    /// QEMU -kernel (PVH on x86_64, arm64 Image on aarch64).
    Direct,
    /// A Limine ISO.
    Limine,
}

/// How QEMU boots Baton: `--boot`, and for Limine `--firmware` and
/// `--drive` (run, demo).
#[derive(Args, Debug, Clone)]
pub struct Entry {
    /// Entry path.
    #[arg(long, value_enum, default_value = "direct")]
    pub boot: BootMode,
    /// Firmware for Limine boots on x86_64 (aarch64 is always UEFI).
    #[arg(long, value_enum, default_value = "bios")]
    pub firmware: Firmware,
    /// The drive holding the ISO for Limine boots: a CD, or a USB stick.
    #[arg(long, value_enum, default_value = "cd")]
    pub drive: Drive,
}

impl Entry {
    /// The firmware a Limine boot on `arch` uses (aarch64 is always UEFI).
    pub fn firmware_for(&self, arch: Arch) -> Firmware {
        if arch == Arch::Aarch64 { Firmware::Uefi } else { self.firmware }
    }
}
