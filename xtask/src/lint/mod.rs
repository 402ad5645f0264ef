//! `cargo xtask lint`: the kernel's layering check (`layers`), then clippy
//! with warnings denied, for the host crates and for both kernel targets,
//! the kernel with and without its `testing` feature.

mod layers;

use crate::arch::Arch;
use crate::doctor::{Need, ensure};
use crate::{build, test, util};
use anyhow::{Context, Result};

/// `cargo xtask lint`: the layering check, then clippy with warnings denied.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Only the kernel's layering check (a second or so, no build).
    #[arg(long)]
    layers: bool,
}

/// Crates built for the kernel targets.
const KERNEL_CRATES: [&str; 3] = ["baton-kernel", "baton-arch", "baton-boot"];

impl Args {
    /// Checks the layers, then (without `--layers`) runs clippy on the
    /// host crates and for each kernel target.
    pub fn run(&self) -> Result<()> {
        layers::run(&util::workspace_root())?;
        if self.layers {
            return Ok(());
        }
        clippy()
    }
}

/// Clippy on the host crates, then for each kernel target.
fn clippy() -> Result<()> {
    let mut host = util::cargo();
    host.args(["clippy", "--all-targets", "--package", "xtask"]);
    for name in test::HOST_CRATES {
        host.args(["--package", name]);
    }
    host.args(["--", "-D", "warnings"]);
    util::run(&mut host).context("clippy on the host crates")?;
    for arch in Arch::ALL {
        ensure(&[Need::Toolchain(arch)])?;
        let mut kernel = util::cargo();
        kernel.args(["clippy", "--target", arch.target()]);
        for name in KERNEL_CRATES.iter().chain(test::HOST_CRATES.iter()) {
            kernel.args(["--package", name]);
        }
        for name in build::service_names()? {
            kernel.args(["--package", &name]);
        }
        kernel.args(["--", "-D", "warnings"]);
        util::run(&mut kernel).with_context(|| format!("clippy for {arch}"))?;
        let mut testing = util::cargo();
        testing.args(["clippy", "--target", arch.target(), "--package", "baton-kernel"]);
        testing.args(["--features", "baton-kernel/testing", "--", "-D", "warnings"]);
        util::run(&mut testing).with_context(|| format!("clippy for {arch} with the testing feature"))?;
    }
    println!("lint: clippy is clean for the host and both kernel targets, with and without `testing`");
    Ok(())
}
