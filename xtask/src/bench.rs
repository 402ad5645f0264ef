//! `cargo xtask bench`: benchmarks that produce the figures quoted in docs/.
//! Figures come from here, never from timed tests.

use crate::util::{self, workspace_root};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Where reports go.
pub fn output_dir() -> PathBuf {
    workspace_root().join("target").join("bench")
}

/// Host benchmarks of the KHO crate: tracking overhead and serialise /
/// deserialise throughput on simulated memory.
pub fn host() -> Result<()> {
    let directory = output_dir().join("host");
    std::fs::create_dir_all(&directory)?;
    let mut command = util::cargo();
    command.args([
        "run",
        "--release",
        "--package",
        "baton-kho",
        "--features",
        "simulated",
        "--example",
        "kho_bench",
        "--",
    ]);
    command.arg(&directory);
    util::run(&mut command).context("running the KHO host benchmark")?;
    println!("bench: host report in {}", directory.display());
    Ok(())
}
