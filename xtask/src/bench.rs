//! `cargo xtask bench`: the benchmarks behind every speed and memory figure
//! in docs/. Figures come from here, never from timed tests.
//!
//! Two parts:
//! - host: the KHO crate's tracking overhead and serialise / deserialise
//!   throughput on simulated memory (`kernel/crates/kho/examples`);
//! - QEMU: real updates of a guest whose `ballast` service holds preserved
//!   state of 1 MiB, 64 MiB and 1 GiB (by default), as order-0 pages, as
//!   2 MiB folios, and handed over by copying (the baseline), with the
//!   blackout split into its phases as the kernel's `update-report` line
//!   gives them; plus cold boots per boot path.
//!
//! The report goes to target/bench/: report.md, updates.csv, cold-boot.csv,
//! blackout.svg and phases.svg, and every serial log under logs/.

use crate::arch::Arch;
use crate::args::{Kvm, LimineDir, Target};
use crate::build::KernelBuild;
use crate::doctor::{Need, ensure};
use crate::qemu::{Firmware, Medium, QemuConfig};
use crate::util::{self, workspace_root};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `cargo xtask bench`: the benchmarks behind the figures in docs/.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Only the host benchmarks.
    #[arg(long)]
    host: bool,
    #[command(flatten)]
    target: Target,
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
    #[command(flatten)]
    kvm: Kvm,
    #[command(flatten)]
    limine: LimineDir,
}

impl Args {
    /// The host benchmarks, then (without `--host`) the QEMU ones.
    pub fn run(&self) -> Result<()> {
        host()?;
        if self.host {
            return Ok(());
        }
        if self.sizes.is_empty() || self.sizes.iter().any(|&size| size == 0 || size > 16 * 1024) {
            bail!("--sizes takes sizes from 1 to 16384 MiB");
        }
        qemu(&BenchOptions {
            arch: self.target.arch,
            sizes_mib: self.sizes.clone(),
            updates: self.updates.max(1),
            cold_boots: self.cold_boots.max(1),
            runs: self.runs.max(1),
            kvm: self.kvm.kvm,
            limine_dir: self.limine.limine_dir.clone(),
        })
    }
}

/// Where reports go.
pub fn output_dir() -> PathBuf {
    workspace_root().join("target").join("bench")
}

/// Host benchmarks of the KHO crate: tracking overhead and serialise /
/// deserialise throughput on simulated memory.
fn host() -> Result<()> {
    let directory = output_dir().join("host");
    std::fs::create_dir_all(&directory)?;
    let mut command = util::cargo();
    command.args([
        "run",
        "--release",
        "--package",
        "baton-kho",
        "--features",
        "simulated",
        "--example",
        "kho_bench",
        "--",
    ]);
    command.arg(&directory);
    util::run(&mut command).context("running the KHO host benchmark")?;
    println!("bench: host report in {}", directory.display());
    Ok(())
}

/// How the ballast's state is laid out and handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layout {
    /// Preserved in place as order-0 (4 KiB) folios.
    Pages,
    /// Preserved in place as 2 MiB folios (smaller for smaller states).
    Folios,
    /// Copied into a buffer, the buffer handed over, copied back.
    Copying,
}

impl Layout {
    const ALL: [Layout; 3] = [Layout::Pages, Layout::Folios, Layout::Copying];

    fn name(self) -> &'static str {
        match self {
            Layout::Pages => "in place, 4 KiB pages",
            Layout::Folios => "in place, 2 MiB folios",
            Layout::Copying => "copying (baseline)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Layout::Pages => "pages",
            Layout::Folios => "folios",
            Layout::Copying => "copying",
        }
    }

    /// The folio order the ballast uses for `size_mib` of state.
    fn order(self, size_mib: u64) -> u32 {
        match self {
            Layout::Pages => 0,
            // 2 MiB folios, or the largest that fits a smaller state.
            Layout::Folios | Layout::Copying => (size_mib * 256).ilog2().min(9),
        }
    }
}

/// The phases of the `update-report` line, in order, with their names.
pub const PHASES: [(&str, &str); 8] = [
    ("prepare_us", "services prepare"),
    ("serialise_us", "serialise"),
    ("load_us", "load image"),
    ("jump_us", "jump"),
    ("early_boot_us", "early boot"),
    ("deserialise_us", "deserialise"),
    ("seed_us", "seed allocator"),
    ("restore_us", "services restore"),
];

/// One update as the new kernel reported it: every `key=value` of its
/// `update-report` line that is a number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFigures {
    /// The report's fields.
    pub fields: BTreeMap<String, u64>,
}

impl UpdateFigures {
    fn get(&self, key: &str) -> u64 {
        self.fields.get(key).copied().unwrap_or(0)
    }
}

/// Every `update-report` line of a serial log, in order.
pub fn parse_updates(output: &str) -> Vec<UpdateFigures> {
    output
        .lines()
        .filter_map(|line| line.split("update-report:").nth(1))
        .map(|report| UpdateFigures {
            fields: report
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .filter_map(|(key, value)| Some((key.to_string(), value.parse().ok()?)))
                .collect(),
        })
        .collect()
}

/// The handover's metadata as the first finalisation logged it: (chunks,
/// bitmaps, folios).
pub fn parse_tracking(output: &str) -> Option<(u64, u64, u64)> {
    // "finalised: root FDT at X (N bytes), preserved-memory-map Y (C chunks, B bitmaps), F folios, K KiB preserved"
    let line = output.lines().find_map(|line| line.split("finalised: ").nth(1))?;
    let words: Vec<&str> = line.split_whitespace().map(|word| word.trim_matches(|c| c == '(' || c == ',')).collect();
    let before = |marker: &str| {
        let position = words.iter().position(|word| word.starts_with(marker))?;
        words.get(position.checked_sub(1)?)?.parse().ok()
    };
    Some((before("chunks")?, before("bitmaps")?, before("folios")?))
}

/// The cold boot's "first service running N us after entry (via PATH)".
pub fn parse_first_service(output: &str) -> Option<(u64, String)> {
    let rest = output.lines().find_map(|line| line.split("first service running ").nth(1))?;
    let micros = rest.split_whitespace().next()?.parse().ok()?;
    let path = rest.split("(via ").nth(1)?.trim_end_matches(')').trim().to_string();
    Some((micros, path))
}

/// The median of `values` (the lower middle for an even count).
pub fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// What one QEMU run of a scenario measured.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// State size.
    pub size_mib: u64,
    /// Layout.
    pub layout: Layout,
    /// Folio order used.
    pub order: u32,
    /// Every update, in order.
    pub updates: Vec<UpdateFigures>,
    /// (chunks, bitmaps, folios) of the first handover.
    pub tracking: Option<(u64, u64, u64)>,
}

/// The first update counted in the steady-state figures: under TCG the
/// first update runs kernel code at an address the emulator has never
/// translated (about 330 ms more), the second at the other load address,
/// and the translation caches settle over the next two.
pub const FIRST_STEADY_UPDATE: u64 = 5;

impl Scenario {
    /// Updates from [`FIRST_STEADY_UPDATE`] on (the first ones include the
    /// emulator translating new kernel code), or all of them if there are no
    /// such updates.
    fn steady(&self) -> Vec<&UpdateFigures> {
        let steady: Vec<&UpdateFigures> =
            self.updates.iter().filter(|update| update.get("generation") >= FIRST_STEADY_UPDATE).collect();
        if steady.is_empty() { self.updates.iter().collect() } else { steady }
    }

    /// Median over the steady updates of `key`.
    pub fn steady_median(&self, key: &str) -> u64 {
        median(&mut self.steady().iter().map(|update| update.get(key)).collect::<Vec<_>>())
    }
}

/// How the benchmarks run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Guest architecture.
    pub arch: Arch,
    /// State sizes in MiB.
    pub sizes_mib: Vec<u64>,
    /// Updates per scenario.
    pub updates: u32,
    /// Cold boots per path.
    pub cold_boots: u32,
    /// QEMU runs per in-place scenario, their steady updates pooled: under
    /// emulation a whole run can be 20-40 % slower than the next.
    pub runs: u32,
    /// Use KVM (x86_64).
    pub kvm: bool,
    /// Limine files for the Limine cold boots (skipped without them).
    pub limine_dir: Option<PathBuf>,
}

fn run_logged(config: &QemuConfig, timeout: Duration, log: &Path) -> Result<crate::qemu::Outcome> {
    let scratch = output_dir().join("scratch");
    let command = config.command(&scratch)?;
    let outcome = crate::qemu::run(command, Some(timeout), true, false)?;
    std::fs::write(log, &outcome.output)?;
    if outcome.timed_out {
        bail!("timed out after {} s (serial log: {})", timeout.as_secs(), log.display());
    }
    if outcome.status != Some(Arch::TEST_SUCCESS_STATUS) {
        bail!("QEMU exited with {:?} (serial log: {})", outcome.status, log.display());
    }
    Ok(outcome)
}

/// Guest RAM for every scenario of `layout`: room for the largest state
/// (three times over when copying: the state, the buffer, and the fresh
/// copy) plus the system. The same for every size, so that what changes
/// between the sizes is the state and nothing else: the kernel's own work
/// grows with RAM (the direct map, the page allocator's free lists).
fn guest_memory_mib(options: &BenchOptions, layout: Layout) -> u32 {
    let copies = if layout == Layout::Copying { 3 } else { 1 };
    let largest = options.sizes_mib.iter().max().copied().unwrap_or(1);
    u32::try_from(768 + largest * copies).unwrap_or(u32::MAX)
}

fn run_scenario(
    options: &BenchOptions,
    kernels: &(KernelBuild, KernelBuild),
    size_mib: u64,
    layout: Layout,
    run: u32,
) -> Result<Scenario> {
    let order = layout.order(size_mib);
    // Copying a gigabyte under emulation takes longer than the default
    // prepare deadline.
    let copy = if layout == Layout::Copying { " bench.copy=1 update.prepare_timeout_ms=120000" } else { "" };
    // The ballast may hold all its state (a service gets half of memory
    // unless told otherwise).
    let copies = if layout == Layout::Copying { 3 } else { 1 };
    let command_line = format!(
        "demo.updates={} demo.shutdown=1 bench.ballast={size_mib} bench.order={order}{copy} mem.service_limit_mib={}",
        options.updates,
        size_mib * copies + 16
    );
    let config = QemuConfig {
        arch: options.arch,
        medium: Medium::Direct {
            kernel: kernels.0.direct_boot_file().clone(),
            module: Some(kernels.1.elf.clone()),
            command_line,
        },
        memory_mib: guest_memory_mib(options, layout),
        headless: true,
        kvm: options.kvm,
        extra_args: vec![],
    };
    let timeout = Duration::from_secs(120 + 30 * u64::from(options.updates) + size_mib * copies / 4);
    let log =
        output_dir().join("logs").join(format!("{}-{size_mib}MiB-{}-run{}.log", options.arch, layout.key(), run + 1));
    let outcome = run_logged(&config, timeout, &log)?;
    let updates = parse_updates(&outcome.output);
    if updates.len() != options.updates as usize {
        bail!("{} of {} updates reported (serial log: {})", updates.len(), options.updates, log.display());
    }
    let intact = outcome.output.matches("pages intact").count();
    if intact != options.updates as usize {
        bail!(
            "the ballast came back intact after {intact} of {} updates (serial log: {})",
            options.updates,
            log.display()
        );
    }
    Ok(Scenario { size_mib, layout, order, updates, tracking: parse_tracking(&outcome.output) })
}

/// A boot path for the cold-boot figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColdPath {
    Direct,
    Limine(Firmware),
}

impl ColdPath {
    fn name(self, arch: Arch) -> String {
        match (self, arch) {
            (ColdPath::Direct, Arch::X86_64) => "direct (PVH)".into(),
            (ColdPath::Direct, Arch::Aarch64) => "direct (arm64 Image)".into(),
            (ColdPath::Limine(Firmware::Bios), _) => "Limine, SeaBIOS".into(),
            (ColdPath::Limine(Firmware::Uefi), _) => "Limine, UEFI".into(),
        }
    }
}

fn cold_boots(options: &BenchOptions, kernels: &(KernelBuild, KernelBuild)) -> Result<Vec<(String, Vec<u64>)>> {
    let mut paths = vec![ColdPath::Direct];
    let limine = crate::limine::find(options.limine_dir.as_deref()).ok();
    match (&limine, options.arch) {
        (Some(_), Arch::X86_64) => paths.extend([ColdPath::Limine(Firmware::Bios), ColdPath::Limine(Firmware::Uefi)]),
        (Some(_), Arch::Aarch64) => paths.push(ColdPath::Limine(Firmware::Uefi)),
        (None, _) => println!("bench: no Limine files (--limine-dir or LIMINE_DIR): Limine cold boots skipped"),
    }
    let command_line = "demo.updates=1 demo.shutdown=1".to_string();
    let mut results = Vec::new();
    for path in paths {
        let medium = match path {
            ColdPath::Direct => Medium::Direct {
                kernel: kernels.0.direct_boot_file().clone(),
                module: Some(kernels.1.elf.clone()),
                command_line: command_line.clone(),
            },
            ColdPath::Limine(firmware) => {
                ensure(&[Need::Xorriso, Need::Uefi(options.arch)])?;
                let limine = limine.as_deref().context("Limine files")?;
                let iso = crate::limine::build_iso(
                    options.arch,
                    limine,
                    &crate::limine::IsoContents {
                        kernel: kernels.0.elf.clone(),
                        command_line: command_line.clone(),
                        update: Some(kernels.1.elf.clone()),
                        demo_command_line: command_line.clone(),
                        is_demo_default: true,
                    },
                    &output_dir().join("scratch").join("bench.iso"),
                )?;
                Medium::Iso { iso, firmware, drive: crate::qemu::Drive::Cd }
            }
        };
        let config = QemuConfig {
            arch: options.arch,
            medium,
            memory_mib: 512,
            headless: true,
            kvm: options.kvm,
            extra_args: vec![],
        };
        let mut micros = Vec::new();
        for run in 0..options.cold_boots {
            let key = path.name(options.arch).replace([' ', ',', '(', ')'], "");
            let log = output_dir().join("logs").join(format!("{}-cold-{key}-{run}.log", options.arch));
            // A boot that hangs before the kernel (seen with Limine's BIOS
            // menu under emulation) is reported and left out, not fatal.
            let result = run_logged(&config, Duration::from_secs(120), &log).and_then(|outcome| {
                parse_first_service(&outcome.output)
                    .with_context(|| format!("no 'first service running' line (serial log: {})", log.display()))
            });
            match result {
                Ok((value, _)) => micros.push(value),
                Err(error) => println!("bench: cold boot {} run {run} failed: {error:#}", path.name(options.arch)),
            }
        }
        println!("bench: cold boot {}: {:?} us", path.name(options.arch), micros);
        results.push((path.name(options.arch), micros));
    }
    Ok(results)
}

fn machine_description(options: &BenchOptions) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name")?.split(':').nth(1).map(str::trim).map(String::from))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let qemu = util::output(std::process::Command::new(options.arch.qemu_binary()).arg("--version"))
        .ok()
        .and_then(|text| text.lines().next().map(String::from))
        .unwrap_or_else(|| "QEMU (version unknown)".into());
    let commit = util::output(std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let accelerator = if options.kvm { "KVM" } else { "TCG (emulation: absolute times are far above hardware)" };
    format!(
        "- host: {cpu}, {cores} cores\n- {qemu}, accelerator {accelerator}\n- guest: {}, release build, commit {commit}\n",
        options.arch
    )
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

/// The Markdown report.
pub fn report(options: &BenchOptions, scenarios: &[Scenario], cold: &[(String, Vec<u64>)]) -> String {
    let mut text = String::from("# Baton update benchmarks\n\n");
    let sizes: Vec<String> = options.sizes_mib.iter().map(u64::to_string).collect();
    let _ = writeln!(
        text,
        "Produced by `cargo xtask bench --arch {} --sizes {} --updates {} --runs {}`.\n\n{}",
        options.arch,
        sizes.join(","),
        options.updates,
        options.runs,
        machine_description(options)
    );
    let _ = writeln!(
        text,
        "## Blackout\n\nFreeze to every service running again in the new kernel, by the cycle counter; the \
         median of updates {FIRST_STEADY_UPDATE} to {} (the first ones run kernel code the emulator is still \
         translating; the first is listed on its own), pooled over {} QEMU runs of each in-place scenario \
         (one of each copying one). Milliseconds.\n",
        options.updates, options.runs
    );
    text.push_str("| state | layout | order | blackout |");
    for (_, name) in PHASES {
        let _ = write!(text, " {name} |");
    }
    text.push_str(" first update |\n|---:|---|---:|---:|");
    text.push_str(&"---:|".repeat(PHASES.len()));
    text.push_str("---:|\n");
    for scenario in scenarios {
        let _ = write!(
            text,
            "| {} MiB | {} | {} | **{}** |",
            scenario.size_mib,
            scenario.layout.name(),
            scenario.order,
            ms(scenario.steady_median("blackout_us"))
        );
        for (key, _) in PHASES {
            let _ = write!(text, " {} |", ms(scenario.steady_median(key)));
        }
        let first = scenario.updates.first().map_or(0, |update| update.get("blackout_us"));
        let _ = writeln!(text, " {} |", ms(first));
    }

    text.push_str("\n## Goals\n\n");
    let find = |size: u64, layout: Layout| scenarios.iter().find(|s| s.size_mib == size && s.layout == layout);
    let (smallest, largest) = (options.sizes_mib.iter().min().copied(), options.sizes_mib.iter().max().copied());
    if let (Some(small), Some(large)) = (smallest, largest) {
        for layout in [Layout::Pages, Layout::Folios] {
            if let (Some(a), Some(b)) = (find(small, layout), find(large, layout)) {
                let ratio = b.steady_median("blackout_us") as f64 / a.steady_median("blackout_us").max(1) as f64;
                let verdict = if ratio <= 1.2 { "met" } else { "not met" };
                let _ = writeln!(
                    text,
                    "- blackout at {large} MiB / at {small} MiB, {}: **{ratio:.2}×** (goal ≤ 1.2×: {verdict})",
                    layout.name()
                );
            }
        }
        for layout in [Layout::Pages, Layout::Folios] {
            if let (Some(copying), Some(in_place)) = (find(large, Layout::Copying), find(large, layout)) {
                let ratio =
                    copying.steady_median("blackout_us") as f64 / in_place.steady_median("blackout_us").max(1) as f64;
                let verdict = if ratio >= 50.0 { "met" } else { "not met" };
                let _ = writeln!(
                    text,
                    "- copying / {} at {large} MiB: **{ratio:.1}×** (goal ≥ 50×: {verdict})",
                    layout.name()
                );
            }
        }
    }

    text.push_str(
        "\n## Tracking overhead\n\nMetadata of the first handover (512-byte bitmaps, 4 KiB chunk pages) against \
         the preserved bytes; the KHO design's figure for order-0 pages is 512 KiB of bitmaps per 16 GiB (32 KiB \
         per GiB), and one bitmap covers all 1 GiB folios of 1 TiB. The other services' few pages and the \
         one chunk page per order present are a fixed part; the last column is what each further GiB of the \
         ballast added, against the smallest state of the same layout.\n\n\
         | state | layout | folios | bitmaps | chunks | metadata | per GiB preserved | added per GiB |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let metadata_of = |scenario: &Scenario| {
        let (chunks, bitmaps, _) = scenario.tracking?;
        let preserved = scenario.updates.first()?.get("preserved_bytes");
        Some((bitmaps * 512 + chunks * 4096, preserved))
    };
    for scenario in scenarios.iter().filter(|scenario| scenario.layout != Layout::Copying) {
        if let (Some((chunks, bitmaps, folios)), Some((metadata, preserved))) =
            (scenario.tracking, metadata_of(scenario))
        {
            let gib = (1u64 << 30) as f64;
            let per_gib = metadata as f64 * gib / preserved.max(1) as f64;
            let smallest = scenarios
                .iter()
                .filter(|other| other.layout == scenario.layout && other.size_mib < scenario.size_mib)
                .min_by_key(|other| other.size_mib)
                .and_then(metadata_of);
            let added = match smallest {
                Some((base_metadata, base_preserved)) if preserved > base_preserved => format!(
                    "{:.1} KiB",
                    metadata.saturating_sub(base_metadata) as f64 * gib / (preserved - base_preserved) as f64 / 1024.0
                ),
                _ => "-".into(),
            };
            let _ = writeln!(
                text,
                "| {} MiB | {} | {folios} | {bitmaps} | {chunks} | {:.1} KiB | {:.1} KiB | {added} |",
                scenario.size_mib,
                scenario.layout.name(),
                metadata as f64 / 1024.0,
                per_gib / 1024.0
            );
        }
    }

    text.push_str(
        "\n## Cold boot\n\nKernel entry to the first service running, by the cycle counter (firmware and \
         bootloader time come before entry and are not included). Microseconds.\n\n\
         | boot path | runs | median | all runs |\n|---|---:|---:|---|\n",
    );
    for (path, micros) in cold {
        let mut sorted = micros.clone();
        let failed = options.cold_boots as usize - micros.len().min(options.cold_boots as usize);
        let note = if failed > 0 { format!(" ({failed} hung before the kernel; logs/)") } else { String::new() };
        let _ = writeln!(text, "| {path} | {} | {} | {:?}{note} |", micros.len(), median(&mut sorted), micros);
    }
    text.push_str(
        "\n## Files\n\n- updates.csv: every update of every scenario, every phase\n- cold-boot.csv\n- blackout.svg, \
         phases.svg\n- logs/: the serial console of every run\n- host/: the KHO crate on simulated memory\n",
    );
    text
}

/// Every update of every scenario as CSV.
pub fn updates_csv(arch: Arch, scenarios: &[Scenario]) -> String {
    let mut text = String::from(
        "arch,state_mib,layout,order,generation,preserved_bytes,folios,bitmaps,blackout_us,blackout_cycles",
    );
    for (key, _) in PHASES {
        let _ = write!(text, ",{key}");
    }
    text.push_str(",copy_us\n");
    for scenario in scenarios {
        for update in &scenario.updates {
            let _ = write!(text, "{arch},{},{},{}", scenario.size_mib, scenario.layout.key(), scenario.order);
            for key in ["generation", "preserved_bytes", "folios", "bitmaps", "blackout_us", "blackout_cycles"] {
                let _ = write!(text, ",{}", update.get(key));
            }
            for (key, _) in PHASES {
                let _ = write!(text, ",{}", update.get(key));
            }
            let _ = writeln!(text, ",{}", update.get("copy_us"));
        }
    }
    text
}

fn plot_lines(path: &Path, caption: &str, y_label: &str, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    use plotters::prelude::*;
    let points = lines.iter().flat_map(|(_, points)| points.iter());
    let x_max = points.clone().map(|&(x, _)| x).fold(1.0, f64::max) * 2.0;
    let y_max = points.clone().map(|&(_, y)| y).fold(1.0, f64::max) * 2.0;
    let y_min = points.map(|&(_, y)| y).fold(f64::MAX, f64::min).clamp(0.001, 1.0) / 2.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow::anyhow!("{error:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0.5f64..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    chart
        .configure_mesh()
        .x_desc("preserved state (MiB)")
        .y_desc(y_label)
        .draw()
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    let colours = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK, RGBColor(230, 140, 0), RGBColor(120, 60, 180)];
    for (index, (name, points)) in lines.iter().enumerate() {
        let colour = colours[index % colours.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
            .map_err(|error| anyhow::anyhow!("{error:?}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&point| Circle::new(point, 3, colour.filled())))
            .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    root.present().map_err(|error| anyhow::anyhow!("{error:?}"))?;
    Ok(())
}

fn plots(scenarios: &[Scenario]) -> Result<()> {
    let series = |layout: Layout, key: &str| -> Vec<(f64, f64)> {
        scenarios
            .iter()
            .filter(|scenario| scenario.layout == layout)
            .map(|scenario| (scenario.size_mib as f64, scenario.steady_median(key) as f64 / 1000.0))
            .collect()
    };
    let blackout: Vec<(String, Vec<(f64, f64)>)> =
        Layout::ALL.iter().map(|&layout| (layout.name().to_string(), series(layout, "blackout_us"))).collect();
    plot_lines(&output_dir().join("blackout.svg"), "Update blackout by preserved state", "blackout (ms)", &blackout)?;
    let phases: Vec<(String, Vec<(f64, f64)>)> =
        PHASES.iter().map(|&(key, name)| (name.to_string(), series(Layout::Pages, key))).collect();
    plot_lines(
        &output_dir().join("phases.svg"),
        "Blackout phases, state preserved in place as 4 KiB pages",
        "phase (ms)",
        &phases,
    )
}

/// Runs the QEMU benchmarks and writes the report.
fn qemu(options: &BenchOptions) -> Result<()> {
    ensure(&[Need::Toolchain(options.arch), Need::Qemu(options.arch)])?;
    std::fs::create_dir_all(output_dir().join("logs"))?;
    let kernels = crate::demo::build_versions(options.arch, true)?;
    let mut scenarios = Vec::new();
    for &size_mib in &options.sizes_mib {
        for layout in Layout::ALL {
            println!("bench: {} MiB, {} ...", size_mib, layout.name());
            // Copying is two orders of magnitude from its goal and slow to
            // run: once is enough.
            let runs = if layout == Layout::Copying { 1 } else { options.runs.max(1) };
            let mut scenario = run_scenario(options, &kernels, size_mib, layout, 0)
                .with_context(|| format!("{size_mib} MiB, {}", layout.name()))?;
            for run in 1..runs {
                let again = run_scenario(options, &kernels, size_mib, layout, run)
                    .with_context(|| format!("{size_mib} MiB, {}, run {}", layout.name(), run + 1))?;
                scenario.updates.extend(again.updates);
            }
            println!(
                "bench:   blackout {} ms (steady median), first update {} ms",
                ms(scenario.steady_median("blackout_us")),
                ms(scenario.updates.first().map_or(0, |update| update.get("blackout_us")))
            );
            scenarios.push(scenario);
        }
    }
    let cold = cold_boots(options, &kernels)?;
    let directory = output_dir();
    std::fs::write(directory.join("report.md"), report(options, &scenarios, &cold))?;
    std::fs::write(directory.join("updates.csv"), updates_csv(options.arch, &scenarios))?;
    let mut cold_csv = String::from("arch,path,run,first_service_us\n");
    for (path, micros) in &cold {
        for (run, value) in micros.iter().enumerate() {
            let _ = writeln!(cold_csv, "{},{path},{run},{value}", options.arch);
        }
    }
    std::fs::write(directory.join("cold-boot.csv"), cold_csv)?;
    plots(&scenarios)?;
    println!("bench: report in {}", directory.join("report.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kept() {
        let crate::Command::Bench(args) = crate::parse(&["xtask", "bench"]) else { panic!("not bench") };
        assert_eq!(args.sizes, [1, 64, 1024]);
        assert_eq!((args.updates, args.cold_boots, args.runs), (11, 3, 3));
        assert_eq!((args.host, args.kvm.kvm, args.target.arch), (false, false, Arch::X86_64));
    }

    const LOG: &str = "\
[    0.3] [INFO  boot] first service running 41234 us after entry (via pvh)
[    0.4] [INFO  kho] finalised: root FDT at 0x3d30c000 (332 bytes), preserved-memory-map 0x3d303000 (9 chunks, 15 bitmaps), 16404 folios, 81408 KiB preserved
[    0.5] [INFO  kho] update-report: generation=1 from=0.1.0 to=0.2.0 preserved_bytes=83390464 sub_fdts=5 folios=16405 bitmaps=13 blackout_cycles=5 blackout_us=209909 prepare_us=24459 restore_us=139441
[    0.9] [INFO  kho] update-report: generation=3 from=0.2.0 to=0.2.0 preserved_bytes=83390464 blackout_us=53870 restore_us=24136
[    1.0] [INFO  kho] update-report: generation=5 from=0.2.0 to=0.2.0 preserved_bytes=83390464 blackout_us=50000 restore_us=20000
[    1.1] [INFO  kho] update-report: generation=6 from=0.2.0 to=0.2.0 preserved_bytes=83390464 blackout_us=40000 restore_us=20000
";

    #[test]
    fn update_reports_are_read_field_by_field() {
        let updates = parse_updates(LOG);
        assert_eq!(updates.len(), 4);
        assert_eq!(updates[0].get("prepare_us"), 24459);
        assert_eq!(updates[0].get("folios"), 16405);
        assert_eq!(updates[0].fields.get("from"), None, "versions are not numbers");
        let scenario = Scenario { size_mib: 64, layout: Layout::Pages, order: 0, updates, tracking: None };
        assert_eq!(scenario.steady_median("blackout_us"), 40000, "updates 5 and up, lower middle");
    }

    #[test]
    fn tracking_and_cold_boot_lines_are_read() {
        assert_eq!(parse_tracking(LOG), Some((9, 15, 16404)));
        assert_eq!(parse_first_service(LOG), Some((41234, "pvh".to_string())));
        assert_eq!(parse_first_service("nothing here"), None);
    }

    #[test]
    fn folio_orders_fit_the_state() {
        assert_eq!(Layout::Pages.order(1024), 0);
        assert_eq!(Layout::Folios.order(1024), 9);
        assert_eq!(Layout::Folios.order(1), 8, "1 MiB of state holds one 1 MiB folio");
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut []), 0);
    }

    #[test]
    fn every_size_of_a_layout_runs_in_the_same_guest() {
        let options = BenchOptions {
            arch: Arch::X86_64,
            sizes_mib: vec![1, 1024, 64],
            updates: 3,
            cold_boots: 1,
            runs: 1,
            kvm: false,
            limine_dir: None,
        };
        assert_eq!(guest_memory_mib(&options, Layout::Pages), 768 + 1024);
        assert_eq!(guest_memory_mib(&options, Layout::Folios), 768 + 1024);
        assert_eq!(guest_memory_mib(&options, Layout::Copying), 768 + 3 * 1024);
    }

    #[test]
    fn the_report_states_the_goals_it_measured() {
        let scenario = |size_mib, layout, blackout_us| Scenario {
            size_mib,
            layout,
            order: 0,
            updates: vec![UpdateFigures {
                fields: [("generation".to_string(), 5), ("blackout_us".to_string(), blackout_us)].into(),
            }],
            tracking: Some((1, 2, 3)),
        };
        let scenarios = [
            scenario(1, Layout::Pages, 10_000),
            scenario(1024, Layout::Pages, 11_000),
            scenario(1024, Layout::Copying, 2_000_000),
        ];
        let options = BenchOptions {
            arch: Arch::X86_64,
            sizes_mib: vec![1, 1024],
            updates: 3,
            cold_boots: 1,
            runs: 1,
            kvm: false,
            limine_dir: None,
        };
        let text = report(&options, &scenarios, &[("direct (PVH)".into(), vec![3, 1, 2])]);
        assert!(text.contains("**1.10×** (goal ≤ 1.2×: met)"), "{text}");
        assert!(text.contains("**181.8×** (goal ≥ 50×: met)"), "{text}");
        assert!(text.contains("| direct (PVH) | 3 | 2 | [3, 1, 2] |"), "{text}");
        assert!(updates_csv(Arch::X86_64, &scenarios).lines().count() == 4);
    }
}
