//! Finding Limine's files and building Baton's ISO with xorriso.

use crate::arch::Arch;
use crate::util::{self, workspace_root};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files an ISO for `arch` needs from Limine.
fn needed_files(arch: Arch) -> Vec<&'static str> {
    match arch {
        Arch::X86_64 => vec!["limine-bios.sys", "limine-bios-cd.bin", "limine-uefi-cd.bin", "BOOTX64.EFI"],
        Arch::Aarch64 => vec!["limine-uefi-cd.bin", "BOOTAA64.EFI"],
    }
}

const SYSTEM_LOCATIONS: [&str; 4] = ["/usr/share/limine", "/usr/local/share/limine", "/usr/lib/limine", "/opt/limine"];

fn has_files(directory: &Path, arch: Option<Arch>) -> bool {
    let arches = arch.map_or(Arch::ALL.to_vec(), |arch| vec![arch]);
    arches.iter().all(|&arch| needed_files(arch).iter().all(|file| directory.join(file).is_file()))
}

/// The Limine directory to use: `--limine-dir`, then `LIMINE_DIR`, then the
/// usual system locations, then an earlier download.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf> {
    find_for(explicit, None)
}

/// As [`find`], but only `arch`'s files are required.
pub fn find_for(explicit: Option<&Path>, arch: Option<Arch>) -> Result<PathBuf> {
    if let Some(directory) = explicit {
        if has_files(directory, arch) {
            return Ok(directory.to_path_buf());
        }
        bail!("{} does not hold Limine's boot files ({})", directory.display(), needed_files(Arch::X86_64).join(", "));
    }
    if let Some(directory) = std::env::var_os("LIMINE_DIR").map(PathBuf::from) {
        if has_files(&directory, arch) {
            return Ok(directory);
        }
        bail!("LIMINE_DIR={} does not hold Limine's boot files", directory.display());
    }
    let downloaded = util::output_dir().join("limine");
    for directory in SYSTEM_LOCATIONS.iter().map(PathBuf::from).chain([downloaded]) {
        if has_files(&directory, arch) {
            return Ok(directory);
        }
    }
    bail!(
        "no Limine files found. Limine is not packaged where this machine can reach; give the xtask its \
         v8.x binary release with --limine-dir DIR or LIMINE_DIR=DIR, for example:\n  \
         git clone --branch=v8.x-binary --depth=1 https://github.com/limine-bootloader/limine /tmp/limine\n  \
         (or `cargo xtask iso --download-limine` where github.com is reachable)"
    )
}

/// Downloads Limine's v8.x binary release files with curl.
pub fn download() -> Result<PathBuf> {
    let directory = util::output_dir().join("limine");
    std::fs::create_dir_all(&directory)?;
    for file in ["limine-bios.sys", "limine-bios-cd.bin", "limine-uefi-cd.bin", "BOOTX64.EFI", "BOOTAA64.EFI"] {
        let url = format!("https://github.com/limine-bootloader/limine/raw/v8.x-binary/{file}");
        println!("limine: downloading {url}");
        util::run(
            Command::new("curl")
                .args(["--fail", "--location", "--silent", "--show-error", "--max-time", "60", "-o"])
                .arg(directory.join(file))
                .arg(&url),
        )
        .context("downloading Limine (is github.com reachable?)")?;
    }
    Ok(directory)
}

/// What to put on an ISO.
#[derive(Debug, Clone)]
pub struct IsoContents {
    /// The kernel ELF.
    pub kernel: PathBuf,
    /// The kernel command line of the plain entry.
    pub command_line: String,
    /// The update image for the demo entry (the second version).
    pub update: Option<PathBuf>,
    /// The kernel command line of the demo entry.
    pub demo_command_line: String,
    /// Boot the demo entry by default (otherwise the plain one).
    pub is_demo_default: bool,
}

/// Builds a Limine ISO for `arch` and returns its path.
pub fn build_iso(arch: Arch, limine: &Path, contents: &IsoContents, output: &Path) -> Result<PathBuf> {
    crate::doctor::ensure(&[crate::doctor::Need::Xorriso])?;
    let stage = output.with_extension("staging");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let limine_stage = stage.join("boot/limine");
    let efi_stage = stage.join("EFI/BOOT");
    std::fs::create_dir_all(&limine_stage)?;
    std::fs::create_dir_all(&efi_stage)?;
    std::fs::copy(&contents.kernel, stage.join("boot/baton.elf")).context("copying the kernel")?;
    let update = contents.update.as_ref().unwrap_or(&contents.kernel);
    std::fs::copy(update, stage.join("boot/baton-update.elf")).context("copying the update image")?;
    for file in needed_files(arch) {
        let destination = if file.ends_with(".EFI") { efi_stage.join(file) } else { limine_stage.join(file) };
        std::fs::copy(limine.join(file), destination).with_context(|| format!("copying Limine's {file}"))?;
    }
    let template =
        std::fs::read_to_string(workspace_root().join("iso/limine.conf")).context("reading iso/limine.conf")?;
    let configuration = template
        .replace("@DEFAULT_ENTRY@", if contents.is_demo_default { "1" } else { "2" })
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace(
            "@UPDATE_VERSION@",
            if contents.update.is_some() { crate::demo::SECOND_VERSION } else { env!("CARGO_PKG_VERSION") },
        )
        .replace("@DEMO_CMDLINE@", &contents.demo_command_line)
        .replace("@CMDLINE@", &contents.command_line);
    std::fs::write(limine_stage.join("limine.conf"), configuration)?;

    let mut xorriso = Command::new("xorriso");
    xorriso.args(["-as", "mkisofs", "-R", "-J"]);
    if arch == Arch::X86_64 {
        xorriso.args([
            "-b",
            "boot/limine/limine-bios-cd.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ]);
    }
    xorriso.args([
        "--efi-boot",
        "boot/limine/limine-uefi-cd.bin",
        "-efi-boot-part",
        "--efi-boot-image",
        "--protective-msdos-label",
    ]);
    xorriso.arg(&stage).arg("-o").arg(output);
    xorriso.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    util::run(&mut xorriso).context("building the ISO with xorriso")?;
    std::fs::remove_dir_all(&stage)?;
    if arch == Arch::X86_64 {
        match host_tool(limine) {
            Ok(tool) => {
                // Quiet unless it fails (`output` puts its stderr in the error).
                util::output(Command::new(&tool).arg("bios-install").arg(output))
                    .context("making the ISO boot from a disk under BIOS (limine bios-install)")?;
            }
            Err(why) => println!(
                "note: {}: boots from a CD under BIOS and UEFI and from a USB stick under UEFI only \
                 ({why}; `limine bios-install` on the ISO adds BIOS USB boot)",
                output.display()
            ),
        }
    }
    Ok(output.to_path_buf())
}

/// Limine's host tool (`limine`, which installs the BIOS boot sector that
/// lets the ISO boot from a disk or USB stick under BIOS): the one in the
/// Limine directory, or built there from the binary release's `limine.c`
/// with the host's C compiler into target/xtask/limine-host.
pub fn host_tool(limine: &Path) -> std::result::Result<PathBuf, String> {
    let shipped = limine.join("limine");
    if shipped.is_file() {
        return Ok(shipped);
    }
    let source = limine.join("limine.c");
    if !source.is_file() || !limine.join("limine-bios-hdd.h").is_file() {
        return Err(format!(
            "{} has no limine.c and limine-bios-hdd.h to build Limine's host tool from",
            limine.display()
        ));
    }
    let built = util::output_dir().join("limine-host").join("limine");
    let is_fresh = |built: &Path| -> Option<bool> {
        Some(built.metadata().ok()?.modified().ok()? >= source.metadata().ok()?.modified().ok()?)
    };
    if is_fresh(&built) == Some(true) {
        return Ok(built);
    }
    std::fs::create_dir_all(built.parent().unwrap_or(limine)).map_err(|error| error.to_string())?;
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut command = Command::new(&compiler);
    command.args(["-O2", "-std=c99", "-o"]).arg(&built).arg(&source).arg("-I").arg(limine);
    match command.output() {
        Ok(output) if output.status.success() => Ok(built),
        Ok(output) => {
            Err(format!("building Limine's host tool failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
        Err(error) => Err(format!("no C compiler ({compiler}: {error})")),
    }
}
