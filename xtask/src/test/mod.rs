//! `cargo xtask test`: host unit tests of the portable crates, then QEMU runs
//! of the kernel on both architectures, with one final verdict. The QEMU
//! cases are data (`cases`), run and checked by `runner`.

mod bulk;
mod cases;
mod host;
mod hostile;
mod runner;
mod traffic;

pub use host::HOST_CRATES;

use crate::arch::Arch;
use crate::args::{LimineDir, Profile};
use anyhow::{Result, bail};

/// `cargo xtask test`: host unit tests, then QEMU boots on both
/// architectures.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Only the host unit tests.
    #[arg(long, conflicts_with = "qemu")]
    host: bool,
    /// Only the QEMU tests.
    #[arg(long)]
    qemu: bool,
    /// Only this architecture's QEMU tests.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    #[command(flatten)]
    profile: Profile,
    /// Echo every QEMU run's serial console.
    #[arg(long)]
    verbose: bool,
    /// Only the QEMU cases whose name contains this text.
    #[arg(long, allow_hyphen_values = true)]
    only: Option<String>,
    #[command(flatten)]
    limine: LimineDir,
}

impl Args {
    /// Runs the tests asked for and fails if any failed.
    pub fn run(&self) -> Result<()> {
        let mut tally = Tally::default();
        if !self.qemu {
            tally.add(host::host_tests()?);
        }
        if !self.host {
            let arches: Vec<Arch> = self.arch.map_or(Arch::ALL.to_vec(), |arch| vec![arch]);
            tally.add(runner::qemu_tests(
                &arches,
                self.profile.release,
                self.limine.limine_dir.as_deref(),
                self.verbose,
                self.only.as_deref(),
            )?);
        }
        println!("{} passed, {} failed", tally.passed, tally.failed);
        if tally.failed > 0 {
            bail!("{} test(s) failed", tally.failed);
        }
        Ok(())
    }
}

/// Counts of passed and failed tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}
