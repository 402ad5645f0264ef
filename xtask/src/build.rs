//! `cargo xtask build`, and building the kernel image (with the services it
//! embeds) for an architecture, which every command that boots Baton uses.

use crate::arch::Arch;
use crate::args::{Profile, Target};
use crate::doctor::{Need, ensure};
use crate::util::{self, workspace_root};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// `cargo xtask build`: build the kernel image.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    profile: Profile,
}

impl Args {
    /// Builds the kernel and says where it is.
    pub fn run(&self) -> Result<()> {
        let arch = self.target.arch;
        ensure(&[Need::Toolchain(arch)])?;
        let kernel = build_kernel(&BuildOptions { arch, release: self.profile.release, version: None })?;
        println!("kernel: {}", kernel.elf.display());
        if let Some(image) = &kernel.image {
            println!("arm64 Image: {}", image.display());
        }
        Ok(())
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The architecture.
    pub arch: Arch,
    /// Optimised build.
    pub release: bool,
    /// The version the kernel reports (None: the crate version).
    pub version: Option<String>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct KernelBuild {
    /// The kernel ELF (what Limine and KHO load, and PVH boots).
    pub elf: PathBuf,
    /// The arm64 `Image` made from the ELF (aarch64 direct boot).
    pub image: Option<PathBuf>,
}

impl KernelBuild {
    /// The file QEMU's `-kernel` takes for a direct boot.
    pub fn direct_boot_file(&self) -> &PathBuf {
        self.image.as_ref().unwrap_or(&self.elf)
    }
}

fn profile_name(release: bool) -> &'static str {
    if release { "release" } else { "debug" }
}

/// The services under services/ (each directory with a Cargo.toml).
pub fn service_names() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("services")).context("reading services/")? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name().and_then(|name| name.to_str())
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds every service for the architecture and returns a directory of
/// stripped service ELFs for the kernel to embed.
pub fn build_services(options: &BuildOptions) -> Result<PathBuf> {
    let names = service_names()?;
    // A second version builds in its own directory so both stay cached.
    let target_dir = match &options.version {
        Some(_) => workspace_root().join("target").join("version2").join("services"),
        None => workspace_root().join("target").join("services"),
    };
    let mut command = util::cargo();
    command.args(["build", "--target", options.arch.target()]);
    command.arg("--target-dir").arg(&target_dir);
    for name in &names {
        command.args(["--package", name]);
    }
    if options.release {
        command.arg("--release");
    }
    if options.version.is_some() {
        // The second version's kvstore stores format 2 and migrates format 1.
        command.args(["--features", "kvstore/format-v2"]);
    }
    let script = workspace_root().join("userspace/link").join(format!("{}.ld", options.arch));
    command.env("CARGO_ENCODED_RUSTFLAGS", format!("-Crelocation-model=static\x1f-Clink-arg=-T{}", script.display()));
    match &options.version {
        Some(version) => command.env("BATON_VERSION", version),
        None => command.env_remove("BATON_VERSION"),
    };
    util::run(&mut command).context("building the services")?;

    let built = target_dir.join(options.arch.target()).join(profile_name(options.release));
    let directory = util::output_dir()
        .join(options.arch.to_string())
        .join(profile_name(options.release))
        .join(format!("services-{}", options.version.as_deref().unwrap_or("default")));
    std::fs::create_dir_all(&directory)?;
    let objcopy = llvm_objcopy()?;
    for name in &names {
        util::run(
            std::process::Command::new(&objcopy).arg("--strip-all").arg(built.join(name)).arg(directory.join(name)),
        )
        .with_context(|| format!("stripping service {name}"))?;
    }
    Ok(directory)
}

/// Builds the services and the kernel that embeds them, and returns where
/// the kernel's artefacts are.
pub fn build_kernel(options: &BuildOptions) -> Result<KernelBuild> {
    let services = build_services(options)?;
    let mut command = util::cargo();
    command.env("BATON_SERVICES_DIR", &services);
    let target_root = match &options.version {
        Some(_) => workspace_root().join("target").join("version2"),
        None => workspace_root().join("target"),
    };
    command.arg("--config").arg(format!("build.target-dir={:?}", target_root.display().to_string()));
    command.args(["build", "--package", "baton-kernel", "--target", options.arch.target()]);
    if options.release {
        command.arg("--release");
    }
    match &options.version {
        Some(version) => command.env("BATON_VERSION", version),
        None => command.env_remove("BATON_VERSION"),
    };
    util::run(&mut command).context("building the kernel")?;

    let built = target_root.join(options.arch.target()).join(profile_name(options.release)).join("baton");
    let directory = util::output_dir().join(options.arch.to_string()).join(profile_name(options.release));
    std::fs::create_dir_all(&directory).with_context(|| format!("creating {}", directory.display()))?;
    let name = match &options.version {
        Some(version) => format!("baton-{version}"),
        None => "baton".to_string(),
    };
    let elf = directory.join(format!("{name}.elf"));
    std::fs::copy(&built, &elf).with_context(|| format!("copying {}", built.display()))?;
    let image = match options.arch {
        Arch::X86_64 => None,
        Arch::Aarch64 => {
            let image = directory.join(format!("{name}.Image"));
            let objcopy = llvm_objcopy()?;
            util::run(std::process::Command::new(objcopy).args(["-O", "binary"]).arg(&elf).arg(&image))
                .context("turning the aarch64 ELF into an Image")?;
            Some(image)
        }
    };
    Ok(KernelBuild { elf, image })
}

/// llvm-objcopy from the toolchain's llvm-tools component.
pub fn llvm_objcopy() -> Result<PathBuf> {
    let sysroot = util::output(std::process::Command::new("rustc").args(["--print", "sysroot"]))?;
    let version = util::output(std::process::Command::new("rustc").arg("-vV"))?;
    let host =
        version.lines().find_map(|line| line.strip_prefix("host: ")).context("rustc -vV did not name the host")?;
    let path = PathBuf::from(sysroot.trim()).join("lib/rustlib").join(host).join("bin/llvm-objcopy");
    if !path.is_file() {
        anyhow::bail!("llvm-objcopy is missing: run `rustup component add llvm-tools` (or `cargo xtask doctor`)");
    }
    Ok(path)
}
