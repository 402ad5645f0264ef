//! `cargo xtask run`: builds Baton and boots it in QEMU, directly or from a
//! Limine ISO, with the serial console on the terminal.

use crate::arch::Arch;
use crate::args::{BootMode, CommandLine, Entry, Kvm, LimineDir, Memory, Profile, QemuRun, Target, Testing};
use crate::build::{BuildOptions, build_kernel};
use crate::doctor::{Need, ensure};
use crate::network::Network;
use crate::qemu::{self, Firmware, Medium, QemuConfig};
use crate::{dump, iso, limine, util};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// `cargo xtask run`: build and boot Baton in QEMU.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    profile: Profile,
    #[command(flatten)]
    testing: Testing,
    #[command(flatten)]
    limine: LimineDir,
    #[command(flatten)]
    entry: Entry,
    #[command(flatten)]
    command_line: CommandLine,
    #[command(flatten)]
    memory: Memory,
    #[command(flatten)]
    qemu: QemuRun,
    #[command(flatten)]
    kvm: Kvm,
    /// Pause after the first finalisation and save the outgoing handover
    /// (root FDT, sub-FDTs, guest RAM) here; implies --headless.
    #[arg(long)]
    dump_kho: Option<PathBuf>,
    /// A boot module (for example the update image), direct boots only.
    #[arg(long)]
    module: Option<PathBuf>,
    #[command(flatten)]
    network: Network,
}

impl Args {
    /// Builds, boots and waits for QEMU to end.
    pub fn run(&self) -> Result<()> {
        let arch = self.target.arch;
        let kvm = self.kvm.kvm;
        if kvm && arch != Arch::X86_64 {
            bail!("--kvm is only supported for x86_64 guests");
        }
        if kvm && !std::path::Path::new("/dev/kvm").exists() {
            bail!("--kvm: /dev/kvm does not exist on this machine");
        }
        ensure(&[Need::Toolchain(arch), Need::Qemu(arch)])?;
        let mut extra_args = self.qemu.extra_args();
        let mut command_line = self.command_line.append.clone();
        if self.network.is_on(&extra_args) {
            extra_args.extend(self.network.qemu_args()?);
            command_line = Network::command_line(&command_line);
            println!("{}", crate::network::describe(self.network.ports()));
        }
        let config = QemuConfig {
            arch,
            medium: self.medium(command_line)?,
            memory_mib: self.memory.memory,
            headless: self.qemu.headless || self.dump_kho.is_some(),
            kvm,
            extra_args,
        };
        let scratch = util::output_dir().join("run");
        let mut command = config.command(&scratch)?;
        println!("run: {}", util::describe(&command));
        let timeout = self.qemu.timeout();
        let outcome = match &self.dump_kho {
            Some(directory) => {
                let mut dumper = dump::Dumper::new(directory, &scratch, &mut command)?;
                qemu::run_filtered(command, timeout, &mut |line, input| {
                    println!("{line}");
                    if let Err(error) = dumper.on_line(line, input) {
                        println!("dump-kho: {error:#}");
                    }
                })
            }
            None => qemu::run(command, timeout, self.qemu.headless, true),
        }
        .context("running QEMU")?;
        qemu::check_not_timed_out(&outcome, timeout)?;
        match outcome.status {
            Some(0) => Ok(()),
            Some(status) if status == Arch::TEST_SUCCESS_STATUS => Ok(()),
            Some(status) => bail!("QEMU exited with status {status}"),
            None => bail!("QEMU was killed"),
        }
    }

    /// What QEMU boots: the kernel itself, or an ISO whose plain entry is
    /// the default.
    fn medium(&self, command_line: String) -> Result<Medium> {
        let arch = self.target.arch;
        let release = self.profile.release;
        let testing = self.testing.testing;
        match self.entry.boot {
            BootMode::Direct => {
                let kernel = build_kernel(&BuildOptions { arch, release, version: None, testing })?;
                let module = self.module.clone();
                Ok(Medium::Direct { kernel: kernel.direct_boot_file().clone(), module, command_line })
            }
            BootMode::Limine if self.module.is_some() => bail!("--module is for direct boots (--boot direct)"),
            BootMode::Limine => {
                let firmware = self.entry.firmware_for(arch);
                if firmware == Firmware::Uefi {
                    ensure(&[Need::Uefi(arch)])?;
                }
                let directory = limine::find_for(self.limine.limine_dir.as_deref(), Some(arch))?;
                let menu =
                    iso::Menu { command_line, demo_command_line: "demo.updates=5".into(), is_demo_default: false };
                let output = util::output_dir().join(arch.to_string()).join("baton.iso");
                let iso = iso::write(arch, release, testing, &directory, &menu, &output)?;
                Ok(Medium::Iso { iso, firmware, drive: self.entry.drive })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Drive;

    fn parse(arguments: &[&str]) -> Args {
        match crate::parse(arguments) {
            crate::Command::Run(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_kept() {
        let args = parse(&["xtask", "run"]);
        assert_eq!((args.target.arch, args.profile.release, args.memory.memory), (Arch::X86_64, false, 512));
        assert_eq!(
            (args.entry.boot, args.entry.firmware, args.entry.drive),
            (BootMode::Direct, Firmware::Bios, Drive::Cd)
        );
        assert_eq!((args.qemu.timeout, args.qemu.headless, args.kvm.kvm), (None, false, false));
        assert!(args.command_line.append.is_empty() && args.qemu.extra_args().is_empty());
        assert_eq!((args.network.net, args.network.host_port_base), (crate::network::NetMode::On, None));
    }

    #[test]
    fn the_network_can_be_left_out_or_moved() {
        let args = parse(&["xtask", "run", "--net", "off"]);
        assert!(!args.network.is_on(&[]));
        let args = parse(&["xtask", "run", "--host-port-base", "17000"]);
        assert_eq!(args.network.ports().update, 17002);
    }

    #[test]
    fn values_that_begin_with_a_dash_are_taken_as_written() {
        let args = parse(&["xtask", "run", "--qemu-args", "-initrd FILE", "--append", "-- foo"]);
        assert_eq!(args.qemu.extra_args(), ["-initrd", "FILE"]);
        assert_eq!(args.command_line.append, "-- foo");
        let args = parse(&["xtask", "run", "--qemu-args=-initrd FILE"]);
        assert_eq!(args.qemu.qemu_args, "-initrd FILE");
    }
}
