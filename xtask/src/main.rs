//! `cargo xtask`: the one front door for building, running, packaging and
//! testing Baton. Each command lives in its own module with its options
//! (`Args`) and its `run`; the options several commands share are defined
//! once, in `args`.

// Commands.
mod bench;
mod build;
mod demo;
mod demo_redis;
mod doctor;
mod fuzz;
mod iso;
mod kho_decode;
mod lint;
mod run;
mod soak;
mod test;

// What the commands share.
mod arch;
mod args;
mod dump;
mod limine;
mod network;
mod qemu;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Build, run, package and test Baton")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the kernel image (production; `--testing` for a testing kernel).
    Build(build::Args),
    /// Build and boot Baton in QEMU.
    Run(run::Args),
    /// Build a Limine-booted ISO (for QEMU, a CD or a USB stick).
    Iso(iso::Args),
    /// Run every test: host unit tests, then QEMU boots on both architectures
    /// (testing kernels, and one production kernel).
    Test(test::Args),
    /// The self-update demo: boot version 1, update to version 2, then
    /// update again N-1 times, and show that every service's state survived.
    Demo(demo::Args),
    /// Many updates in a row in one run, every piece of preserved state
    /// checked after each; fails on any loss.
    Soak(soak::Args),
    /// Check (and install where possible) what building and running needs.
    Doctor(doctor::Args),
    /// The kernel's layering check, then clippy with warnings denied, for the
    /// host crates and both kernel targets.
    Lint(lint::Args),
    /// Benchmarks (figures for docs/): `--host` runs the KHO crate's.
    Bench(bench::Args),
    /// Run every cargo-fuzz target for a bounded time (needs nightly).
    Fuzz(fuzz::Args),
    /// Decode a handover saved with `--dump-kho DIR`, independently of the
    /// kernel's KHO code.
    KhoDecode(kho_decode::Args),
}

impl Command {
    fn run(&self) -> Result<()> {
        match self {
            Command::Build(args) => args.run(),
            Command::Run(args) => args.run(),
            Command::Iso(args) => args.run(),
            Command::Test(args) => args.run(),
            Command::Demo(args) => args.run(),
            Command::Soak(args) => args.run(),
            Command::Doctor(args) => args.run(),
            Command::Lint(args) => args.run(),
            Command::Bench(args) => args.run(),
            Command::Fuzz(args) => args.run(),
            Command::KhoDecode(args) => args.run(),
        }
    }
}

fn main() {
    if let Err(error) = Cli::parse().command.run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// Parses a command line as the shell would hand it over (tests only).
#[cfg(test)]
fn parse(arguments: &[&str]) -> Command {
    match Cli::try_parse_from(arguments) {
        Ok(cli) => cli.command,
        Err(error) => panic!("{arguments:?}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_may_begin_with_a_dash() {
        assert!(Cli::try_parse_from(["xtask", "run", "--qemu-args", "-initrd FILE"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "run", "--append", "-- foo"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "demo", "--append", "-x", "--qemu-args", "-smp 2"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "soak", "--append", "-x", "--qemu-args", "-smp 2"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "iso", "--append", "-x", "--demo-append", "-y"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "test", "--only", "-x"]).is_ok());
    }

    #[test]
    fn shared_options_are_accepted_alike() {
        for command in ["run", "demo", "soak"] {
            let arguments = [
                "xtask",
                command,
                "--arch",
                "aarch64",
                "--release",
                "--append",
                "x=1",
                "--timeout",
                "9",
                "--headless",
                "--qemu-args",
                "-smp 2",
            ];
            assert!(Cli::try_parse_from(arguments).is_ok(), "{command}");
        }
        for command in ["run", "demo"] {
            let arguments = ["xtask", command, "--memory", "64", "--boot", "limine", "--firmware", "uefi"];
            assert!(Cli::try_parse_from(arguments.iter().chain(&["--drive", "usb", "--limine-dir", "/l"])).is_ok());
        }
    }

    #[test]
    fn options_a_command_has_no_use_for_are_refused() {
        // bench always builds optimised kernels and sizes each guest itself;
        // soak sizes its guest from the ballast.
        assert!(Cli::try_parse_from(["xtask", "bench", "--release"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "--memory", "64"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "soak", "--memory", "64"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "build", "--headless"]).is_err());
    }
}
