//! Running the QEMU benchmarks: every state size and layout as its own
//! guest, updated again and again, and the cold boots per boot path; each
//! serial log is kept under logs/.

use super::parse::{parse_first_service, parse_tracking, parse_updates};
use super::report::{self, ms};
use super::{BenchOptions, Layout, Scenario, output_dir, plot};
use crate::arch::Arch;
use crate::build::KernelBuild;
use crate::doctor::{Need, ensure};
use crate::qemu::{Firmware, Medium, QemuConfig};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

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
    // Every layout but `resumed` measures the restart path: every service
    // started again from the new image.
    let restart = if layout == Layout::Resumed { "" } else { " update.resume=0" };
    // The ballast may hold all its state (a service gets half of memory
    // unless told otherwise).
    let copies = if layout == Layout::Copying { 3 } else { 1 };
    let command_line = format!(
        "demo.updates={} demo.shutdown=1 bench.ballast={size_mib} bench.order={order}{copy}{restart} mem.service_limit_mib={}",
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

/// Runs the QEMU benchmarks and writes the report, the CSV files and the
/// plots.
pub fn qemu(options: &BenchOptions) -> Result<()> {
    ensure(&[Need::Toolchain(options.arch), Need::Qemu(options.arch)])?;
    std::fs::create_dir_all(output_dir().join("logs"))?;
    // Testing kernels, as `cargo xtask test` and `soak` boot.
    let kernels = crate::demo::build_versions(options.arch, true, true)?;
    let mut scenarios = Vec::new();
    for &size_mib in &options.sizes_mib {
        for &layout in &options.layouts {
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
    let network = if options.network_updates > 0 {
        println!("bench: network, {} spaced updates ...", options.network_updates);
        let figures = super::network::run(options.arch, options.kvm, &kernels, options.network_updates)
            .context("the network benchmark")?;
        println!(
            "bench:   client gaps {:?} us, kernel blackouts {:?} us, {} of {} lines echoed",
            figures.gaps.iter().map(|gap| gap.client_gap_us).collect::<Vec<_>>(),
            figures.gaps.iter().map(|gap| gap.kernel_blackout_us).collect::<Vec<_>>(),
            figures.echoed,
            figures.sent
        );
        Some(figures)
    } else {
        None
    };
    let redis = if options.redis_updates > 0 {
        println!("bench: Redis, redis-benchmark through {} spaced updates, then quiet ...", options.redis_updates);
        let figures =
            super::redis::run(options.arch, options.kvm, &kernels, options.redis_updates, options.redis_requests)
                .context("the Redis benchmark")?;
        println!(
            "bench:   client pauses {:?} us, kernel blackouts {:?} us, {} redis-benchmark error line(s)",
            figures.pauses.iter().map(|pause| pause.client_pause_us).collect::<Vec<_>>(),
            figures.pauses.iter().map(|pause| pause.kernel_blackout_us).collect::<Vec<_>>(),
            figures.errors.len()
        );
        Some(figures)
    } else {
        None
    };
    let table = if options.redis_keys > 0 {
        println!("bench: a Redis table of {} keys through {} updates ...", options.redis_keys, 3);
        let figures = super::table::run(options.arch, options.kvm, &kernels, options.redis_keys)
            .context("the large Redis table")?;
        println!(
            "bench:   populate {} ms, restart-prepare {:?} us, migration {:?} ms, kernel blackouts {:?} us, client \
             pauses {:?} us",
            figures.populate_ms,
            figures.prepare_us,
            figures.migration_ms,
            figures.updates.iter().map(|update| update.kernel_blackout_us).collect::<Vec<_>>(),
            figures.updates.iter().map(|update| update.client_pause_us).collect::<Vec<_>>(),
        );
        Some(figures)
    } else {
        None
    };
    let directory = output_dir();
    report::write(&directory, options, &scenarios, &cold, network.as_ref())?;
    if let Some(table) = &table {
        let mut text = std::fs::read_to_string(directory.join("report.md"))?;
        super::table::section(&mut text, table);
        std::fs::write(directory.join("report.md"), text)?;
    }
    if let Some(redis) = &redis {
        let mut text = std::fs::read_to_string(directory.join("report.md"))?;
        super::redis::section(&mut text, redis, options.redis_requests);
        std::fs::write(directory.join("report.md"), text)?;
        std::fs::write(directory.join("redis.csv"), super::redis::csv(options.arch, redis))?;
    }
    plot::plots(&scenarios)?;
    println!("bench: report in {}", directory.join("report.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_of_a_layout_runs_in_the_same_guest() {
        let options = BenchOptions {
            arch: Arch::X86_64,
            sizes_mib: vec![1, 1024, 64],
            updates: 3,
            cold_boots: 1,
            runs: 1,
            layouts: Layout::ALL.to_vec(),
            network_updates: 0,
            redis_updates: 0,
            redis_requests: 1,
            redis_keys: 0,
            kvm: false,
            limine_dir: None,
        };
        assert_eq!(guest_memory_mib(&options, Layout::Pages), 768 + 1024);
        assert_eq!(guest_memory_mib(&options, Layout::Folios), 768 + 1024);
        assert_eq!(guest_memory_mib(&options, Layout::Copying), 768 + 3 * 1024);
    }
}
