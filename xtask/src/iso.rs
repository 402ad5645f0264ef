//! `cargo xtask iso`: a Limine-booted ISO (for QEMU, a CD or a USB stick)
//! holding both versions of Baton, with a demo entry and a plain entry.

use crate::arch::Arch;
use crate::args::{CommandLine, LimineDir, Profile, Target};
use crate::doctor::{Need, ensure};
use crate::{demo, limine, util};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// `cargo xtask iso`: build a Limine-booted ISO.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    profile: Profile,
    #[command(flatten)]
    limine: LimineDir,
    #[command(flatten)]
    command_line: CommandLine,
    /// Download Limine's binary release when no local copy is found.
    #[arg(long)]
    download_limine: bool,
    /// Where to write the ISO (default: target/xtask/<arch>/baton.iso).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Updates the demo entry performs.
    #[arg(long, default_value_t = 5)]
    updates: u32,
    /// Extra command line for the demo entry.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    demo_append: String,
    /// Boot the plain entry by default instead of the demo.
    #[arg(long)]
    plain: bool,
}

impl Args {
    /// Builds the ISO and says where it is.
    pub fn run(&self) -> Result<()> {
        let arch = self.target.arch;
        let limine = match limine::find_for(self.limine.limine_dir.as_deref(), Some(arch)) {
            Ok(directory) => directory,
            Err(error) if self.download_limine => {
                eprintln!("note: {error:#}");
                limine::download()?
            }
            Err(error) => return Err(error),
        };
        let output = self.output.clone().unwrap_or_else(|| util::output_dir().join(arch.to_string()).join("baton.iso"));
        let menu = Menu {
            command_line: self.command_line.append.clone(),
            demo_command_line: format!("demo.updates={} {}", self.updates, self.demo_append).trim().to_string(),
            is_demo_default: !self.plain,
        };
        // For a machine: production kernels.
        let iso = write(arch, self.profile.release, false, &limine, &menu, &output)?;
        println!("ISO written to {}", iso.display());
        Ok(())
    }
}

/// The ISO's two boot entries.
#[derive(Debug, Clone)]
pub struct Menu {
    /// The plain entry's kernel command line.
    pub command_line: String,
    /// The demo entry's kernel command line.
    pub demo_command_line: String,
    /// Whether the demo entry boots by default.
    pub is_demo_default: bool,
}

/// Builds both versions of Baton and writes an ISO with `menu` to `output`.
pub fn write(arch: Arch, release: bool, testing: bool, limine: &Path, menu: &Menu, output: &Path) -> Result<PathBuf> {
    ensure(&[Need::Toolchain(arch), Need::Xorriso])?;
    let (first, second) = demo::build_versions(arch, release, testing)?;
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    limine::build_iso(
        arch,
        limine,
        &limine::IsoContents {
            kernel: first.elf,
            command_line: menu.command_line.clone(),
            update: Some(second.elf),
            demo_command_line: menu.demo_command_line.clone(),
            is_demo_default: menu.is_demo_default,
        },
        output,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kept() {
        let crate::Command::Iso(args) = crate::parse(&["xtask", "iso"]) else { panic!("not iso") };
        assert_eq!((args.updates, args.plain, args.download_limine), (5, false, false));
        assert_eq!((args.target.arch, args.output), (Arch::X86_64, None));
    }
}
