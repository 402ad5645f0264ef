//! `cargo xtask doctor`: checks what building and running Baton needs and
//! installs what it can. The other commands call [`ensure`] for what they
//! need, so a fresh machine only needs the README's two commands.

use crate::arch::Arch;
use crate::qemu::uefi_firmware;
use crate::util::{self, find_program};
use anyhow::{Result, bail};
use std::path::Path;
use std::process::Command;

/// Something a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The rustup target (and llvm-tools for aarch64 Images).
    Toolchain(Arch),
    /// QEMU for the architecture.
    Qemu(Arch),
    /// UEFI firmware for the architecture.
    Uefi(Arch),
    /// xorriso, to make ISOs.
    Xorriso,
    /// dtc, used by tests that check FDTs with an independent tool.
    Dtc,
    /// redis-cli, the real Redis client the tests talk to kvstore with.
    RedisCli,
}

/// A Debian package and what it provides.
fn package(need: Need) -> &'static str {
    match need {
        Need::Toolchain(_) => "",
        Need::Qemu(Arch::X86_64) => "qemu-system-x86",
        Need::Qemu(Arch::Aarch64) => "qemu-system-arm",
        Need::Uefi(Arch::X86_64) => "ovmf",
        Need::Uefi(Arch::Aarch64) => "qemu-efi-aarch64",
        Need::Xorriso => "xorriso",
        Need::Dtc => "device-tree-compiler",
        Need::RedisCli => "redis-tools",
    }
}

fn installed_targets() -> Vec<String> {
    util::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn is_met(need: Need) -> bool {
    match need {
        Need::Toolchain(arch) => {
            installed_targets().iter().any(|target| target == arch.target())
                && (arch != Arch::Aarch64 || crate::build::llvm_objcopy().is_ok())
        }
        Need::Qemu(arch) => find_program(arch.qemu_binary()).is_some(),
        Need::Uefi(arch) => {
            let (code, vars) = uefi_firmware(arch);
            Path::new(code).is_file() && Path::new(vars).is_file()
        }
        Need::Xorriso => find_program("xorriso").is_some(),
        Need::Dtc => find_program("dtc").is_some(),
        Need::RedisCli => find_program("redis-cli").is_some(),
    }
}

fn describe(need: Need) -> String {
    match need {
        Need::Toolchain(arch) => format!("Rust target {} (and llvm-tools)", arch.target()),
        Need::Qemu(arch) => arch.qemu_binary().to_string(),
        Need::Uefi(arch) => format!("UEFI firmware {}", uefi_firmware(arch).0),
        Need::Xorriso => "xorriso".to_string(),
        Need::Dtc => "dtc".to_string(),
        Need::RedisCli => "redis-cli (redis-tools)".to_string(),
    }
}

fn is_root() -> bool {
    util::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

fn debian_codename() -> Option<String> {
    let release = std::fs::read_to_string("/etc/os-release").ok()?;
    if !release.lines().any(|line| line == "ID=debian") {
        return None;
    }
    release.lines().find_map(|line| line.strip_prefix("VERSION_CODENAME=")).map(str::to_string)
}

/// The apt commands that install `packages` on this Debian release.
fn apt_commands(packages: &[&str], codename: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut install: Vec<String> =
        ["apt-get", "install", "-y", "--no-install-recommends"].iter().map(|s| s.to_string()).collect();
    if codename == "bookworm" {
        // qemu-utils on these machines comes from bookworm-backports; the
        // emulators must come from the same suite (MISSION.md).
        commands.push(vec![
            "sh".into(),
            "-c".into(),
            "grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/ || echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list".into(),
        ]);
        install.extend(["-t".into(), "bookworm-backports".into()]);
    }
    commands.push(vec!["apt-get".into(), "update".into()]);
    install.extend(packages.iter().map(|package| package.to_string()));
    commands.push(install);
    commands
}

/// Makes sure every need is met: installs rustup targets and (as root on
/// Debian) apt packages, otherwise fails saying exactly what to run.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let missing: Vec<Need> = needs.iter().copied().filter(|&need| !is_met(need)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for &need in &missing {
        if let Need::Toolchain(arch) = need {
            println!("doctor: adding Rust target {} and llvm-tools", arch.target());
            util::run(Command::new("rustup").args(["target", "add", arch.target()]))?;
            util::run(Command::new("rustup").args(["component", "add", "llvm-tools"]))?;
        }
    }
    let mut packages: Vec<&str> =
        missing.iter().map(|&need| package(need)).filter(|package| !package.is_empty()).collect();
    packages.sort_unstable();
    packages.dedup();
    if !packages.is_empty() {
        let codename = debian_codename();
        match (&codename, is_root()) {
            (Some(codename), true) => {
                println!("doctor: installing {}", packages.join(" "));
                for command in apt_commands(&packages, codename) {
                    let mut process = Command::new(&command[0]);
                    process.args(&command[1..]).env("DEBIAN_FRONTEND", "noninteractive");
                    util::run(&mut process)?;
                }
            }
            (codename, _) => {
                let commands = apt_commands(&packages, codename.as_deref().unwrap_or("bookworm"));
                let text: Vec<String> = commands.iter().map(|command| format!("sudo {}", command.join(" "))).collect();
                bail!(
                    "missing {}; install them with:\n  {}",
                    missing.iter().map(|&need| describe(need)).collect::<Vec<_>>().join(", "),
                    text.join("\n  ")
                );
            }
        }
    }
    let still_missing: Vec<String> = needs.iter().copied().filter(|&need| !is_met(need)).map(describe).collect();
    if !still_missing.is_empty() {
        bail!("still missing after installing: {}", still_missing.join(", "));
    }
    Ok(())
}

/// Everything any command may need.
pub fn all_needs() -> Vec<Need> {
    let mut needs = Vec::new();
    for arch in Arch::ALL {
        needs.extend([Need::Toolchain(arch), Need::Qemu(arch), Need::Uefi(arch)]);
    }
    needs.extend([Need::Xorriso, Need::Dtc, Need::RedisCli]);
    needs
}

/// `cargo xtask doctor`: check (and install where possible) what building
/// and running needs.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    limine: crate::args::LimineDir,
}

impl Args {
    /// Reports each need, then fixes what is missing.
    pub fn run(&self) -> Result<()> {
        doctor(self.limine.limine_dir.as_deref())
    }
}

/// Reports each need, then fixes what is missing.
fn doctor(limine_dir: Option<&Path>) -> Result<()> {
    let needs = all_needs();
    for &need in &needs {
        println!("{} {}", if is_met(need) { "ok     " } else { "missing" }, describe(need));
    }
    ensure(&needs)?;
    match crate::limine::find(limine_dir) {
        Ok(directory) => println!("ok      Limine files in {}", directory.display()),
        Err(error) => println!("note    {error:#}"),
    }
    println!("doctor: everything needed is installed");
    Ok(())
}
