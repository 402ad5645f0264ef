//! The benchmark report: report.md with the blackout by phase, the goals,
//! the tracking overhead and the cold boots; and the CSV files.

use super::parse::{PHASES, median};
use super::{BenchOptions, FIRST_STEADY_UPDATE, Layout, Scenario};
use crate::arch::Arch;
use crate::util;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

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

/// Microseconds as milliseconds with two decimals.
pub fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

/// The Markdown report.
pub fn report(
    options: &BenchOptions,
    scenarios: &[Scenario],
    cold: &[(String, Vec<u64>)],
    network: Option<&super::network::NetworkFigures>,
) -> String {
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
    blackout_section(&mut text, options, scenarios);
    goals_section(&mut text, options, scenarios);
    tracking_section(&mut text, scenarios);
    cold_boot_section(&mut text, options, cold);
    if let Some(network) = network {
        super::network::section(&mut text, network);
    }
    text.push_str(
        "\n## Files\n\n- updates.csv: every update of every scenario, every phase\n- cold-boot.csv\n- network.csv (with the network benchmark)\n- redis.csv (with the Redis benchmark)\n- blackout.svg, \
         phases.svg\n- logs/: the serial console of every run\n- host/: the KHO crate on simulated memory\n",
    );
    text
}

/// The blackout of every scenario, by phase.
fn blackout_section(text: &mut String, options: &BenchOptions, scenarios: &[Scenario]) {
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
}

/// The goals: the blackout does not grow with the state, and is far below
/// copying's.
fn goals_section(text: &mut String, options: &BenchOptions, scenarios: &[Scenario]) {
    text.push_str("\n## Goals\n\n");
    let find = |size: u64, layout: Layout| scenarios.iter().find(|s| s.size_mib == size && s.layout == layout);
    let (smallest, largest) = (options.sizes_mib.iter().min().copied(), options.sizes_mib.iter().max().copied());
    // Process handover: restoring resumed services costs at most 1 ms, and
    // the blackout is at most half of the restart path's, at every size.
    for &size in &options.sizes_mib {
        let Some(resumed) = find(size, Layout::Resumed) else { continue };
        let restore = resumed.steady_median("restore_us");
        let verdict = if restore <= 1000 { "met" } else { "not met" };
        let _ = writeln!(
            text,
            "- services restore, every service resumed, {size} MiB: **{} ms** (goal ≤ 1 ms: {verdict})",
            ms(restore)
        );
        if let Some(restarted) = find(size, Layout::Pages) {
            let ratio =
                resumed.steady_median("blackout_us") as f64 / restarted.steady_median("blackout_us").max(1) as f64;
            let verdict = if ratio <= 0.5 { "met" } else { "not met" };
            let _ = writeln!(
                text,
                "- blackout resumed / restarted (4 KiB pages), {size} MiB: **{ratio:.2}×** ({} vs {} ms; goal ≤ 0.5×: \
                 {verdict})",
                ms(resumed.steady_median("blackout_us")),
                ms(restarted.steady_median("blackout_us"))
            );
        }
    }
    if let (Some(small), Some(large)) = (smallest, largest) {
        for layout in [Layout::Resumed, Layout::Pages, Layout::Folios] {
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
}

/// The metadata of the first handover against what it preserved.
fn tracking_section(text: &mut String, scenarios: &[Scenario]) {
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
}

/// Kernel entry to the first service, per boot path.
fn cold_boot_section(text: &mut String, options: &BenchOptions, cold: &[(String, Vec<u64>)]) {
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

/// Cold boots as CSV: one line per run of each boot path.
pub fn cold_boot_csv(arch: Arch, cold: &[(String, Vec<u64>)]) -> String {
    let mut text = String::from("arch,path,run,first_service_us\n");
    for (path, micros) in cold {
        for (run, value) in micros.iter().enumerate() {
            let _ = writeln!(text, "{arch},{path},{run},{value}");
        }
    }
    text
}

/// Writes report.md, updates.csv and cold-boot.csv into `directory`.
pub fn write(
    directory: &Path,
    options: &BenchOptions,
    scenarios: &[Scenario],
    cold: &[(String, Vec<u64>)],
    network: Option<&super::network::NetworkFigures>,
) -> Result<()> {
    std::fs::write(directory.join("report.md"), report(options, scenarios, cold, network))?;
    if let Some(network) = network {
        std::fs::write(directory.join("network.csv"), super::network::csv(options.arch, network))?;
    }
    std::fs::write(directory.join("updates.csv"), updates_csv(options.arch, scenarios))?;
    std::fs::write(directory.join("cold-boot.csv"), cold_boot_csv(options.arch, cold))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse::UpdateFigures;
    use super::*;

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
            scenario(1, Layout::Resumed, 4_000),
            scenario(1024, Layout::Resumed, 6_000),
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
            layouts: Layout::ALL.to_vec(),
            network_updates: 0,
            redis_updates: 0,
            redis_requests: 1,
            redis_keys: 0,
            kvm: false,
            limine_dir: None,
        };
        let text = report(&options, &scenarios, &[("direct (PVH)".into(), vec![3, 1, 2])], None);
        assert!(text.contains("**1.10×** (goal ≤ 1.2×: met)"), "{text}");
        assert!(text.contains("**181.8×** (goal ≥ 50×: met)"), "{text}");
        assert!(text.contains("resumed / restarted (4 KiB pages), 1 MiB: **0.40×**"), "{text}");
        assert!(text.contains("1024 MiB: **0.55×** (6.00 vs 11.00 ms; goal ≤ 0.5×: not met)"), "{text}");
        assert!(text.contains("every service resumed, 1 MiB: **0.00 ms** (goal ≤ 1 ms: met)"), "{text}");
        assert!(text.contains("| direct (PVH) | 3 | 2 | [3, 1, 2] |"), "{text}");
        assert!(updates_csv(Arch::X86_64, &scenarios).lines().count() == 6);
    }

    #[test]
    fn cold_boots_are_one_csv_line_per_run() {
        let cold = [("direct (PVH)".to_string(), vec![30, 40]), ("Limine, UEFI".to_string(), vec![])];
        assert_eq!(
            cold_boot_csv(Arch::X86_64, &cold),
            "arch,path,run,first_service_us\nx86_64,direct (PVH),0,30\nx86_64,direct (PVH),1,40\n"
        );
    }
}
