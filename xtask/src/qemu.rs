//! QEMU command lines, built in one place, and a runner that enforces a
//! timeout, captures the serial console and always kills QEMU.

use crate::arch::Arch;
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Firmware for Limine boots on x86_64 (aarch64 is always UEFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF / AAVMF.
    Uefi,
}

/// Which drive holds the ISO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Drive {
    /// A CD-ROM drive.
    Cd,
    /// A USB mass-storage device on an xHCI controller: the ISO written to a
    /// USB stick, which firmware boots as a disk (not as El Torito).
    Usb,
}

/// What QEMU boots.
#[derive(Debug, Clone)]
pub enum Medium {
    /// `-kernel` (PVH ELF or arm64 Image) with an optional `-initrd` module.
    Direct {
        /// The kernel file.
        kernel: PathBuf,
        /// The boot module (for example the update image).
        module: Option<PathBuf>,
        /// The kernel command line.
        command_line: String,
    },
    /// A Limine ISO on a CD drive or a USB stick.
    Iso {
        /// The ISO image.
        iso: PathBuf,
        /// The firmware to boot it with.
        firmware: Firmware,
        /// The drive it is in.
        drive: Drive,
    },
}

/// Everything that decides a QEMU command line.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The guest architecture.
    pub arch: Arch,
    /// What to boot.
    pub medium: Medium,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// No window: serial on stdout.
    pub headless: bool,
    /// Use KVM (x86_64 only, opt-in).
    pub kvm: bool,
    /// Extra arguments appended verbatim.
    pub extra_args: Vec<String>,
}

/// UEFI firmware files shipped by Debian's ovmf and qemu-efi-aarch64 packages.
pub fn uefi_firmware(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::X86_64 => ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        Arch::Aarch64 => ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
    }
}

impl QemuConfig {
    /// The full QEMU command.
    pub fn command(&self, scratch_dir: &Path) -> Result<Command> {
        let mut command = Command::new(self.arch.qemu_binary());
        command.args(["-m", &format!("{}M", self.memory_mib), "-no-reboot", "-serial", "stdio"]);
        if self.headless {
            command.args(["-display", "none"]);
        }
        match self.arch {
            Arch::X86_64 => {
                command.args(["-M", "q35", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
                if self.kvm {
                    command.args(["-enable-kvm", "-cpu", "host"]);
                } else {
                    // `max` gives TCG 1 GiB pages, which the entry code uses
                    // for its direct map when present.
                    command.args(["-cpu", "max"]);
                }
            }
            Arch::Aarch64 => {
                // acpi=off: AAVMF then hands the device tree to the loader.
                command.args(["-M", "virt,acpi=off", "-cpu", "cortex-a72", "-semihosting"]);
            }
        }
        match &self.medium {
            Medium::Direct { kernel, module, command_line } => {
                command.arg("-kernel").arg(kernel);
                if !command_line.is_empty() {
                    command.args(["-append", command_line]);
                }
                if let Some(module) = module {
                    command.arg("-initrd").arg(module);
                }
            }
            Medium::Iso { iso, firmware, drive } => {
                if self.arch == Arch::Aarch64 || *firmware == Firmware::Uefi {
                    let (code, vars) = uefi_firmware(self.arch);
                    let vars_copy = scratch_dir.join(format!("{}-vars.fd", self.arch));
                    std::fs::create_dir_all(scratch_dir)?;
                    std::fs::copy(vars, &vars_copy)
                        .with_context(|| format!("copying UEFI variables from {vars} (run `cargo xtask doctor`)"))?;
                    command.args(["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={code}")]);
                    command.args(["-drive", &format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display())]);
                }
                match (self.arch, drive) {
                    (_, Drive::Usb) => {
                        // snapshot=on: the guest may write to its stick; the
                        // ISO on the host stays as built.
                        command.args(["-device", "qemu-xhci,id=xhci", "-device", "usb-storage,bus=xhci.0,drive=stick"]);
                        command.args([
                            "-drive",
                            &format!("if=none,id=stick,format=raw,snapshot=on,file={}", iso.display()),
                        ]);
                    }
                    (Arch::X86_64, Drive::Cd) => {
                        command.arg("-cdrom").arg(iso);
                    }
                    (Arch::Aarch64, Drive::Cd) => {
                        command.args(["-device", "virtio-scsi-pci,id=scsi", "-device", "scsi-cd,drive=cd0"]);
                        command
                            .args(["-drive", &format!("if=none,id=cd0,media=cdrom,format=raw,file={}", iso.display())]);
                    }
                }
                if self.arch == Arch::Aarch64 {
                    // The virt machine has no display of its own; AAVMF
                    // gives ramfb to the loader as its GOP framebuffer.
                    command.args(["-device", "ramfb"]);
                }
            }
        }
        // QEMU adds a network card on unrestricted user networking unless
        // told otherwise: a guest gets a network only where a case or a
        // command asks for one (restricted, forwards on 127.0.0.1).
        let has_network =
            self.extra_args.iter().any(|argument| matches!(argument.as_str(), "-netdev" | "-nic" | "-net"));
        if !has_network {
            command.args(["-nic", "none"]);
        }
        command.args(&self.extra_args);
        Ok(command)
    }
}

/// How a QEMU run ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status (None when it was killed).
    pub status: Option<i32>,
    /// Everything QEMU wrote to stdout (the serial console).
    pub output: String,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Kills QEMU when dropped, whatever path leaves the runner.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs QEMU until it exits or `timeout` passes. With `capture`, the serial
/// console is collected (and echoed when `echo`); otherwise QEMU inherits the
/// terminal. Ctrl-C reaches QEMU directly (same process group), and the guard
/// kills it on every other way out.
pub fn run(mut command: Command, timeout: Option<Duration>, capture: bool, echo: bool) -> Result<Outcome> {
    if capture {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let started = Instant::now();
    let child = command.spawn().with_context(|| {
        format!("cannot start {} (run `cargo xtask doctor`)", command.get_program().to_string_lossy())
    })?;
    let mut guard = ChildGuard(child);
    let collected = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut readers = Vec::new();
    if capture {
        let streams: Vec<Box<dyn Read + Send>> = vec![
            Box::new(guard.0.stdout.take().context("QEMU stdout")?),
            Box::new(guard.0.stderr.take().context("QEMU stderr")?),
        ];
        for mut stream in streams {
            let collected = Arc::clone(&collected);
            readers.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(count) = stream.read(&mut buffer) {
                    if count == 0 {
                        break;
                    }
                    if echo {
                        let mut stdout = std::io::stdout().lock();
                        let _ = stdout.write_all(&buffer[..count]);
                        let _ = stdout.flush();
                    }
                    collected.lock().expect("reader lock").extend_from_slice(&buffer[..count]);
                }
            }));
        }
    }
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = guard.0.try_wait()? {
            break status.code();
        }
        if timeout.is_some_and(|timeout| started.elapsed() >= timeout) {
            timed_out = true;
            let _ = guard.0.kill();
            let _ = guard.0.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(guard);
    for reader in readers {
        let _ = reader.join();
    }
    let output = String::from_utf8_lossy(&collected.lock().expect("reader lock")).into_owned();
    Ok(Outcome { status, output, timed_out, elapsed: started.elapsed() })
}

/// Runs QEMU headless like [`run`], handing every complete line of the
/// serial console to `on_line` as it arrives, together with the console's
/// input (QEMU's stdin) so the caller can answer the guest.
pub fn run_filtered(
    command: Command,
    timeout: Option<Duration>,
    on_line: &mut dyn FnMut(&str, &mut dyn Write),
) -> Result<Outcome> {
    let started = Instant::now();
    let mut command = command;
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().with_context(|| {
        format!("cannot start {} (run `cargo xtask doctor`)", command.get_program().to_string_lossy())
    })?;
    let mut guard = ChildGuard(child);
    let mut input = guard.0.stdin.take().context("QEMU stdin")?;
    let (sender, receiver) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut readers = Vec::new();
    let streams: Vec<Box<dyn Read + Send>> = vec![
        Box::new(guard.0.stdout.take().context("QEMU stdout")?),
        Box::new(guard.0.stderr.take().context("QEMU stderr")?),
    ];
    for mut stream in streams {
        let sender = sender.clone();
        readers.push(std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(count) = stream.read(&mut buffer) {
                if count == 0 || sender.send(buffer[..count].to_vec()).is_err() {
                    break;
                }
            }
        }));
    }
    drop(sender);
    let mut output = Vec::new();
    let mut line_start = 0;
    let mut timed_out = false;
    let status = loop {
        while let Ok(bytes) = receiver.try_recv() {
            output.extend_from_slice(&bytes);
            while let Some(newline) = output[line_start..].iter().position(|&byte| byte == b'\n') {
                on_line(&String::from_utf8_lossy(&output[line_start..line_start + newline]), &mut input);
                line_start += newline + 1;
            }
        }
        if let Some(status) = guard.0.try_wait()? {
            break status.code();
        }
        if timeout.is_some_and(|timeout| started.elapsed() >= timeout) {
            timed_out = true;
            let _ = guard.0.kill();
            let _ = guard.0.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(guard);
    for reader in readers {
        let _ = reader.join();
    }
    while let Ok(bytes) = receiver.try_recv() {
        output.extend_from_slice(&bytes);
    }
    let output = String::from_utf8_lossy(&output).into_owned();
    Ok(Outcome { status, output, timed_out, elapsed: started.elapsed() })
}

/// Fails with a clear message when a run timed out.
pub fn check_not_timed_out(outcome: &Outcome, timeout: Option<Duration>) -> Result<()> {
    if outcome.timed_out {
        bail!("QEMU was still running after {} s and was stopped", timeout.map_or(0, |timeout| timeout.as_secs()));
    }
    Ok(())
}
