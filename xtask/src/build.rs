//! `cargo xtask build`, and building the kernel image (with the services it
//! embeds) for an architecture, which every command that boots Baton uses.

use crate::arch::Arch;
use crate::args::{Profile, Target, Testing};
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
    #[command(flatten)]
    testing: Testing,
}

impl Args {
    /// Builds the kernel and says where it is.
    pub fn run(&self) -> Result<()> {
        let arch = self.target.arch;
        ensure(&[Need::Toolchain(arch)])?;
        let kernel = build_kernel(&BuildOptions {
            arch,
            release: self.profile.release,
            version: None,
            testing: self.testing.testing,
        })?;
        println!("kernel: {}", kernel.elf.display());
        if let Some(image) = &kernel.image {
            println!("arm64 Image: {}", image.display());
        }
        Ok(())
    }
}

/// The services under services/ that only tests use. A production kernel
/// (built without the `testing` feature) does not embed them.
pub const TEST_ONLY_SERVICES: [&str; 11] = [
    "hostile",
    "adversary",
    "crasher",
    "spinner",
    "khotest",
    "survivor",
    "sleeper",
    "holder",
    "driverprobe",
    "pinger",
    "ponger",
];

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The architecture.
    pub arch: Arch,
    /// Optimised build.
    pub release: bool,
    /// The version the kernel reports (None: the crate version).
    pub version: Option<String>,
    /// A testing kernel: the `testing` feature (fault injection, in-kernel
    /// tests, `test.*` options) and every service, the test-only ones
    /// included. Without it, a production kernel with the test-only services
    /// left out.
    pub testing: bool,
}

impl BuildOptions {
    /// Cargo's target directory for this build: each version and each of
    /// testing and production builds in its own, so that all stay cached.
    fn cargo_target_dir(&self) -> PathBuf {
        let mut directory = workspace_root().join("target");
        if self.testing {
            directory.push("testing");
        }
        if self.version.is_some() {
            directory.push("version2");
        }
        directory
    }

    /// Where the xtask puts this build's kernel and services:
    /// target/xtask/<arch>/[testing/]<profile>/.
    fn output_dir(&self) -> PathBuf {
        let mut directory = util::output_dir().join(self.arch.to_string());
        if self.testing {
            directory.push("testing");
        }
        directory.join(profile_name(self.release))
    }
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

/// The services a kernel embeds: all of them for testing, all but
/// [`TEST_ONLY_SERVICES`] for production.
pub fn embedded_service_names(testing: bool) -> Result<Vec<String>> {
    let mut names = service_names()?;
    if !testing {
        names.retain(|name| !TEST_ONLY_SERVICES.contains(&name.as_str()));
    }
    Ok(names)
}

/// Builds the services the kernel embeds for the architecture and returns
/// a directory holding exactly their stripped ELFs.
pub fn build_services(options: &BuildOptions) -> Result<PathBuf> {
    let names = embedded_service_names(options.testing)?;
    let target_dir = options.cargo_target_dir().join("services");
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
    let directory = options.output_dir().join(format!("services-{}", options.version.as_deref().unwrap_or("default")));
    std::fs::create_dir_all(&directory)?;
    // The kernel embeds every file of the directory: nothing else may be
    // left there (an earlier build may have put a test-only service there).
    for entry in std::fs::read_dir(&directory)? {
        let path = entry?.path();
        if !path.file_name().and_then(|name| name.to_str()).is_some_and(|name| names.iter().any(|n| n == name)) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
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
    let target_root = options.cargo_target_dir();
    command.arg("--config").arg(format!("build.target-dir={:?}", target_root.display().to_string()));
    command.args(["build", "--package", "baton-kernel", "--target", options.arch.target()]);
    if options.release {
        command.arg("--release");
    }
    if options.testing {
        command.args(["--features", "testing"]);
    }
    match &options.version {
        Some(version) => command.env("BATON_VERSION", version),
        None => command.env_remove("BATON_VERSION"),
    };
    util::run(&mut command).context("building the kernel")?;

    let built = target_root.join(options.arch.target()).join(profile_name(options.release)).join("baton");
    let directory = options.output_dir();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_production_kernel_embeds_no_test_only_service() {
        let production = embedded_service_names(false).unwrap();
        let testing = embedded_service_names(true).unwrap();
        assert!(production.iter().all(|name| !TEST_ONLY_SERVICES.contains(&name.as_str())), "{production:?}");
        assert!(TEST_ONLY_SERVICES.iter().all(|name| testing.iter().any(|service| service == name)), "{testing:?}");
        assert!(production.iter().any(|name| name == "init") && testing.len() > production.len());
    }

    #[test]
    fn testing_and_production_builds_have_their_own_directories() {
        let options = |testing, version: Option<&str>| BuildOptions {
            arch: Arch::Aarch64,
            release: false,
            version: version.map(String::from),
            testing,
        };
        let directories: Vec<(PathBuf, PathBuf)> =
            [(false, None), (true, None), (false, Some("0.2.0")), (true, Some("0.2.0"))]
                .into_iter()
                .map(|(testing, version)| {
                    (options(testing, version).cargo_target_dir(), options(testing, version).output_dir())
                })
                .collect();
        for (index, directory) in directories.iter().enumerate() {
            assert!(directories[index + 1..].iter().all(|other| other.0 != directory.0), "{directories:?}");
        }
        assert_ne!(directories[0].1, directories[1].1);
        assert!(directories[1].1.ends_with("aarch64/testing/debug"), "{directories:?}");
    }
}
