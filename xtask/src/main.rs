//! `cargo xtask`: the one front door for building, running, packaging and
//! testing Baton.

mod arch;
mod bench;
mod build;
mod demo;
mod doctor;
mod dump;
mod fuzz;
mod kho_decode;
mod limine;
mod qemu;
mod soak;
mod test;
mod util;

use anyhow::{Context, Result, bail};
use arch::Arch;
use build::{BuildOptions, build_kernel};
use clap::{Args, Parser, Subcommand, ValueEnum};
use doctor::{Need, ensure};
use qemu::{Drive, Firmware, Medium, QemuConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run, package and test Baton")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel image.
    Build(BuildArgs),
    /// Build and boot Baton in QEMU.
    Run(RunArgs),
    /// Build a Limine-booted ISO (for QEMU, a CD or a USB stick).
    Iso(IsoArgs),
    /// Run every test: host unit tests, then QEMU boots on both architectures.
    Test(TestArgs),
    /// The self-update demo: boot version 1, update to version 2, then
    /// update again N-1 times, and show that every service's state survived.
    Demo(DemoArgs),
    /// Many updates in a row in one run, every piece of preserved state
    /// checked after each; fails on any loss.
    Soak(SoakArgs),
    /// Check (and install where possible) what building and running needs.
    Doctor(LimineArgs),
    /// Clippy with warnings denied, for the host crates and both kernel targets.
    Lint,
    /// Benchmarks (figures for docs/): `--host` runs the KHO crate's.
    Bench(BenchArgs),
    /// Run every cargo-fuzz target for a bounded time (needs nightly).
    Fuzz(FuzzArgs),
    /// Decode a handover saved with `--dump-kho DIR`, independently of the
    /// kernel's KHO code.
    KhoDecode {
        /// The dump directory.
        directory: PathBuf,
    },
}

#[derive(Args, Clone)]
struct BuildArgs {
    /// Target architecture.
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: Arch,
    /// Optimised build.
    #[arg(long)]
    release: bool,
}

#[derive(Args, Clone)]
struct LimineArgs {
    /// Directory holding Limine's binary release files (also LIMINE_DIR).
    #[arg(long)]
    limine_dir: Option<PathBuf>,
}

/// How QEMU boots the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BootMode {
    /// QEMU -kernel (PVH on x86_64, arm64 Image on aarch64).
    Direct,
    /// A Limine ISO.
    Limine,
}

/// How QEMU boots Baton: the entry path, and for Limine the firmware and
/// the drive holding the ISO.
#[derive(Args, Clone)]
struct EntryArgs {
    /// Entry path.
    #[arg(long, value_enum, default_value = "direct")]
    boot: BootMode,
    /// Firmware for Limine boots on x86_64 (aarch64 is always UEFI).
    #[arg(long, value_enum, default_value = "bios")]
    firmware: Firmware,
    /// The drive holding the ISO for Limine boots: a CD, or a USB stick.
    #[arg(long, value_enum, default_value = "cd")]
    drive: Drive,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    build: BuildArgs,
    #[command(flatten)]
    limine: LimineArgs,
    #[command(flatten)]
    entry: EntryArgs,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Extra QEMU arguments (split on whitespace).
    #[arg(long, default_value = "")]
    qemu_args: String,
    /// No window: the serial console on stdout.
    #[arg(long)]
    headless: bool,
    /// Stop QEMU and fail after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Use KVM (x86_64; opt-in because /dev/kvm is often only paravirtual).
    #[arg(long)]
    kvm: bool,
    /// Pause after the first finalisation and save the outgoing handover
    /// (root FDT, sub-FDTs, guest RAM) here; implies --headless.
    #[arg(long)]
    dump_kho: Option<PathBuf>,
    /// A boot module (for example the update image), direct boots only.
    #[arg(long)]
    module: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct IsoArgs {
    #[command(flatten)]
    build: BuildArgs,
    #[command(flatten)]
    limine: LimineArgs,
    /// Kernel command line for the boot entry.
    #[arg(long, default_value = "")]
    append: String,
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
    #[arg(long, default_value = "")]
    demo_append: String,
    /// Boot the plain entry by default instead of the demo.
    #[arg(long)]
    plain: bool,
}

#[derive(Args, Clone)]
struct DemoArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Updates in a row.
    #[arg(long, default_value_t = 5)]
    updates: u32,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Show the whole serial console.
    #[arg(long)]
    verbose: bool,
    /// Stop and fail after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Save the first outgoing handover (root FDT, sub-FDTs, guest RAM) here.
    #[arg(long)]
    dump_kho: Option<PathBuf>,
    /// How the demo boots (`--boot limine` boots the ISO's demo entry, as
    /// a machine would, and keeps a screenshot of the screen at the end).
    #[command(flatten)]
    entry: EntryArgs,
    #[command(flatten)]
    limine: LimineArgs,
}

#[derive(Args, Clone)]
struct SoakArgs {
    /// Guest architecture.
    #[arg(long, value_enum, default_value_t = Arch::X86_64)]
    arch: Arch,
    /// Updates in a row.
    #[arg(long, default_value_t = 100)]
    updates: u32,
    /// Ballast state in MiB, preserved as 4 KiB pages.
    #[arg(long, default_value_t = 16)]
    ballast: u64,
    /// Optimised kernels.
    #[arg(long)]
    release: bool,
}

#[derive(Args, Clone)]
struct BenchArgs {
    /// Only the host benchmarks.
    #[arg(long)]
    host: bool,
    /// Guest architecture of the QEMU benchmarks.
    #[arg(long, value_enum, default_value_t = Arch::X86_64)]
    arch: Arch,
    /// Preserved state sizes in MiB.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 64, 1024])]
    sizes: Vec<u64>,
    /// Updates per scenario (figures are medians of updates 5 and up).
    #[arg(long, default_value_t = 11)]
    updates: u32,
    /// Cold boots per boot path.
    #[arg(long, default_value_t = 3)]
    cold_boots: u32,
    /// QEMU runs per in-place scenario (their steady updates are pooled).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Use KVM (x86_64; the report says which accelerator ran).
    #[arg(long)]
    kvm: bool,
    #[command(flatten)]
    limine: LimineArgs,
}

#[derive(Args, Clone)]
struct FuzzArgs {
    /// Seconds per fuzz target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

#[derive(Args, Clone)]
struct TestArgs {
    /// Only the host unit tests.
    #[arg(long, conflicts_with = "qemu")]
    host: bool,
    /// Only the QEMU tests.
    #[arg(long)]
    qemu: bool,
    /// Only this architecture's QEMU tests.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// Build the kernel optimised.
    #[arg(long)]
    release: bool,
    /// Echo every QEMU run's serial console.
    #[arg(long)]
    verbose: bool,
    /// Only the QEMU cases whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    #[command(flatten)]
    limine: LimineArgs,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build_command(&args),
        Command::Run(args) => run_command(&args),
        Command::Iso(args) => iso_command(&args).map(|iso| println!("ISO written to {}", iso.display())),
        Command::Test(args) => test_command(&args),
        Command::Doctor(args) => doctor::doctor(args.limine_dir.as_deref()),
        Command::Lint => lint_command(),
        Command::Soak(args) => soak::run(&soak::SoakOptions {
            arch: args.arch,
            updates: args.updates.max(1),
            ballast_mib: args.ballast.max(1),
            release: args.release,
        }),
        Command::Demo(args) => demo_command(&args),
        Command::Bench(args) => bench_command(&args),
        Command::Fuzz(args) => fuzz::run(args.seconds),
        Command::KhoDecode { directory } => kho_decode::decode(&directory).map(|decoded| {
            println!("compatible: {}", decoded.compatible);
            for (name, address) in &decoded.users {
                println!("user {name}: sub-FDT at {address:#x}");
            }
            println!(
                "{} chunks, {} bitmaps, {} KiB preserved",
                decoded.chunks,
                decoded.bitmaps,
                decoded.preserved_bytes / 1024
            );
            for (order, folios) in &decoded.folios_per_order {
                println!("  order {order}: {folios} folios");
            }
        }),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn demo_command(args: &DemoArgs) -> Result<()> {
    let arch = args.build.arch;
    let limine = match args.entry.boot {
        BootMode::Direct => None,
        BootMode::Limine => {
            let directory = limine::find_for(args.limine.limine_dir.as_deref(), Some(arch))?;
            let firmware = if arch == Arch::Aarch64 { Firmware::Uefi } else { args.entry.firmware };
            if firmware == Firmware::Uefi {
                ensure(&[Need::Uefi(arch)])?;
            }
            ensure(&[Need::Xorriso])?;
            Some(demo::LimineBoot { directory, firmware, drive: args.entry.drive })
        }
    };
    demo::run(&demo::DemoOptions {
        arch,
        updates: args.updates,
        release: args.build.release,
        memory_mib: args.memory,
        append: args.append.clone(),
        verbose: args.verbose,
        timeout: args.timeout.map(Duration::from_secs),
        dump_kho: args.dump_kho.clone(),
        limine,
    })
}

fn build_command(args: &BuildArgs) -> Result<()> {
    ensure(&[Need::Toolchain(args.arch)])?;
    let kernel = build_kernel(&BuildOptions { arch: args.arch, release: args.release, version: None })?;
    println!("kernel: {}", kernel.elf.display());
    if let Some(image) = &kernel.image {
        println!("arm64 Image: {}", image.display());
    }
    Ok(())
}

fn iso_command(args: &IsoArgs) -> Result<PathBuf> {
    let arch = args.build.arch;
    let limine = match limine::find_for(args.limine.limine_dir.as_deref(), Some(arch)) {
        Ok(directory) => directory,
        Err(error) if args.download_limine => {
            eprintln!("note: {error:#}");
            limine::download()?
        }
        Err(error) => return Err(error),
    };
    ensure(&[Need::Toolchain(arch), Need::Xorriso])?;
    let (first, second) = demo::build_versions(arch, args.build.release)?;
    let output = args.output.clone().unwrap_or_else(|| util::output_dir().join(arch.to_string()).join("baton.iso"));
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let demo_command_line = format!("demo.updates={} {}", args.updates, args.demo_append).trim().to_string();
    limine::build_iso(
        arch,
        &limine,
        &limine::IsoContents {
            kernel: first.elf,
            command_line: args.append.clone(),
            update: Some(second.elf),
            demo_command_line,
            is_demo_default: !args.plain,
        },
        &output,
    )
}

fn run_command(args: &RunArgs) -> Result<()> {
    let arch = args.build.arch;
    if args.kvm && arch != Arch::X86_64 {
        bail!("--kvm is only supported for x86_64 guests");
    }
    if args.kvm && !std::path::Path::new("/dev/kvm").exists() {
        bail!("--kvm: /dev/kvm does not exist on this machine");
    }
    ensure(&[Need::Toolchain(arch), Need::Qemu(arch)])?;
    let medium = match args.entry.boot {
        BootMode::Direct => {
            let kernel = build_kernel(&BuildOptions { arch, release: args.build.release, version: None })?;
            Medium::Direct {
                kernel: kernel.direct_boot_file().clone(),
                module: None,
                command_line: args.append.clone(),
            }
        }
        BootMode::Limine => {
            let firmware = if arch == Arch::Aarch64 { Firmware::Uefi } else { args.entry.firmware };
            if firmware == Firmware::Uefi {
                ensure(&[Need::Uefi(arch)])?;
            }
            let iso = iso_command(&IsoArgs {
                build: args.build.clone(),
                limine: args.limine.clone(),
                append: args.append.clone(),
                download_limine: false,
                output: None,
                updates: 5,
                demo_append: String::new(),
                plain: true,
            })?;
            Medium::Iso { iso, firmware, drive: args.entry.drive }
        }
    };
    let config = QemuConfig {
        arch,
        medium,
        memory_mib: args.memory,
        headless: args.headless || args.dump_kho.is_some(),
        kvm: args.kvm,
        extra_args: args.qemu_args.split_whitespace().map(str::to_string).collect(),
    };
    let scratch = util::output_dir().join("run");
    let mut command = config.command(&scratch)?;
    println!("run: {}", util::describe(&command));
    let timeout = args.timeout.map(Duration::from_secs);
    let outcome = match &args.dump_kho {
        Some(directory) => {
            let mut dumper = dump::Dumper::new(directory, &scratch, &mut command)?;
            qemu::run_filtered(command, timeout, &mut |line, input| {
                println!("{line}");
                if let Err(error) = dumper.on_line(line, input) {
                    println!("dump-kho: {error:#}");
                }
            })
        }
        None => qemu::run(command, timeout, args.headless, true),
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

fn test_command(args: &TestArgs) -> Result<()> {
    let mut tally = test::Tally::default();
    let run_host = !args.qemu;
    let run_qemu = !args.host;
    if run_host {
        let host = test::host_tests()?;
        tally.passed += host.passed;
        tally.failed += host.failed;
    }
    if run_qemu {
        let arches: Vec<Arch> = args.arch.map_or(Arch::ALL.to_vec(), |arch| vec![arch]);
        let qemu = test::qemu_tests(
            &arches,
            args.release,
            args.limine.limine_dir.as_deref(),
            args.verbose,
            args.only.as_deref(),
        )?;
        tally.passed += qemu.passed;
        tally.failed += qemu.failed;
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 {
        bail!("{} test(s) failed", tally.failed);
    }
    Ok(())
}

/// Crates built for the kernel targets.
const KERNEL_CRATES: [&str; 3] = ["baton-kernel", "baton-arch", "baton-boot"];

fn lint_command() -> Result<()> {
    let mut host = util::cargo();
    host.args(["clippy", "--all-targets", "--package", "xtask"]);
    for name in test::HOST_CRATES {
        host.args(["--package", name]);
    }
    host.args(["--", "-D", "warnings"]);
    util::run(&mut host).context("clippy on the host crates")?;
    for arch in Arch::ALL {
        ensure(&[Need::Toolchain(arch)])?;
        let mut kernel = util::cargo();
        kernel.args(["clippy", "--target", arch.target()]);
        for name in KERNEL_CRATES.iter().chain(test::HOST_CRATES.iter()) {
            kernel.args(["--package", name]);
        }
        for name in build::service_names()? {
            kernel.args(["--package", &name]);
        }
        kernel.args(["--", "-D", "warnings"]);
        util::run(&mut kernel).with_context(|| format!("clippy for {arch}"))?;
    }
    println!("lint: clippy is clean for the host and both kernel targets");
    Ok(())
}

fn bench_command(args: &BenchArgs) -> Result<()> {
    bench::host()?;
    if args.host {
        return Ok(());
    }
    if args.sizes.is_empty() || args.sizes.iter().any(|&size| size == 0 || size > 16 * 1024) {
        anyhow::bail!("--sizes takes sizes from 1 to 16384 MiB");
    }
    bench::qemu(&bench::BenchOptions {
        arch: args.arch,
        sizes_mib: args.sizes.clone(),
        updates: args.updates.max(1),
        cold_boots: args.cold_boots.max(1),
        runs: args.runs.max(1),
        kvm: args.kvm,
        limine_dir: args.limine.limine_dir.clone(),
    })
}
