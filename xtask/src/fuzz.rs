//! `cargo xtask fuzz`: runs every cargo-fuzz target of the workspace for a
//! bounded time. cargo-fuzz needs a nightly toolchain; without one the
//! command says so and stops.

use crate::util::{self, workspace_root};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// The fuzz crates and their targets.
fn fuzz_crates() -> Result<Vec<(PathBuf, Vec<String>)>> {
    let mut crates = Vec::new();
    let mut candidates = vec![workspace_root().join("boot")];
    for entry in std::fs::read_dir(workspace_root().join("kernel/crates"))? {
        candidates.push(entry?.path());
    }
    for candidate in candidates {
        let fuzz = candidate.join("fuzz");
        let targets_dir = fuzz.join("fuzz_targets");
        if !targets_dir.is_dir() {
            continue;
        }
        let mut targets: Vec<String> = std::fs::read_dir(&targets_dir)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.path().file_stem().map(|stem| stem.to_string_lossy().into_owned()))
            .collect();
        targets.sort();
        crates.push((fuzz, targets));
    }
    crates.sort();
    Ok(crates)
}

/// `cargo xtask fuzz`: every cargo-fuzz target for a bounded time.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Seconds per fuzz target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

impl Args {
    /// Runs each target for `--seconds`.
    pub fn run(&self) -> Result<()> {
        run(self.seconds)
    }
}

/// Runs each target for `seconds`.
fn run(seconds: u64) -> Result<()> {
    let has_nightly = util::output(Command::new("rustup").args(["toolchain", "list"]))
        .is_ok_and(|list| list.lines().any(|line| line.starts_with("nightly")));
    if !has_nightly {
        bail!("fuzzing needs a nightly toolchain (cargo-fuzz uses sanitizers); none is installed: skipped");
    }
    if util::output(Command::new("cargo").args(["+nightly", "fuzz", "--version"])).is_err() {
        println!("fuzz: installing cargo-fuzz");
        util::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz")?;
    }
    let mut report = Vec::new();
    for (directory, targets) in fuzz_crates()? {
        for target in targets {
            println!("== fuzz {} / {target} for {seconds} s", directory.display());
            let mut command = Command::new("cargo");
            command.current_dir(directory.parent().context("fuzz crate has a parent")?);
            command.args(["+nightly", "fuzz", "run", &target, "--", &format!("-max_total_time={seconds}")]);
            let output = command.output().context("running cargo fuzz")?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let executions = stderr
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("Done ")?.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| "?".into());
            if !output.status.success() {
                println!("{stderr}");
                bail!("fuzz target {target} found a crash (see the artifact path above)");
            }
            report.push(format!("{target}: {executions} executions, 0 crashes"));
        }
    }
    for line in &report {
        println!("fuzz: {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_is_a_minute_per_target() {
        let crate::Command::Fuzz(args) = crate::parse(&["xtask", "fuzz"]) else { panic!("not fuzz") };
        assert_eq!(args.seconds, 60);
    }
}
