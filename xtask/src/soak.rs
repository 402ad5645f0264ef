//! `cargo xtask soak --updates N`: N updates in a row in one QEMU run, with
//! every piece of preserved state checked after each: the client reads back
//! kvstore's 64 keys and their checksum and the counter, and the ballast
//! checks every page of its state. Any loss fails the run; the summary gives
//! the blackout's spread.

use crate::arch::Arch;
use crate::args::{CommandLine, Profile, QemuRun, Target};
use crate::demo::{self, EXPECTED_KEYS};
use crate::doctor::{Need, ensure};
use crate::qemu::{Medium, Outcome, QemuConfig};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `cargo xtask soak`: many updates in a row in one run, every piece of
/// preserved state checked after each.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    profile: Profile,
    /// Updates in a row.
    #[arg(long, default_value_t = 100)]
    updates: u32,
    /// Ballast state in MiB, preserved as 4 KiB pages.
    #[arg(long, default_value_t = 16)]
    ballast: u64,
    #[command(flatten)]
    command_line: CommandLine,
    #[command(flatten)]
    qemu: QemuRun,
}

/// What a soak found, from its serial log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoakSummary {
    /// Updates reported by the kernels.
    pub updates: usize,
    /// Updates after which the client verified every key with no failure.
    pub verified: usize,
    /// Updates after which the ballast found every page intact.
    pub ballast_intact: usize,
    /// Pages the ballast found damaged, over all updates.
    pub damaged_reports: usize,
    /// Blackout min, median, max in µs (updates 3 and up).
    pub blackout_us: (u64, u64, u64),
    /// Free memory in KiB when each update's handover was consumed (every
    /// owner back, the metadata released), in order.
    pub free_kib: Vec<u64>,
}

/// Free memory as every update began, from the kernels' `update requested`
/// lines (a steady point: the `handover consumed` line of each kernel races
/// with services starting, such as the demo's client).
pub fn free_at_update_requests(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter(|line| line.contains("update requested by service"))
        .filter_map(|line| line.split("free_kib=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The leak check. Memory that leaks keeps falling, update after update,
/// so free memory after the last update must not be below the lowest it
/// was in the first half of the run. A one-time step early on (something
/// settling into a larger size after its first updates) is not a leak; a
/// few KiB lost at every update is. `Err` says how much went missing, and
/// where it first did.
pub fn check_no_leak(free_kib: &[u64]) -> Result<(), String> {
    let (Some(&first), Some(&last)) = (free_kib.first(), free_kib.last()) else {
        return Err("no update reported its free memory".into());
    };
    let half = free_kib.len().div_ceil(2);
    let floor = free_kib[..half].iter().copied().min().unwrap_or(first);
    if last >= floor {
        return Ok(());
    }
    let first_drop = free_kib.iter().position(|&free| free < floor).map_or(0, |index| index + 1);
    Err(format!(
        "free memory when update {} began is {last} KiB, {} KiB less than the lowest of updates 1 to {half} ({floor} \
         KiB; update 1: {first} KiB); it first fell below that at update {first_drop}",
        free_kib.len(),
        floor - last
    ))
}

/// Reads a soak's serial log.
pub fn summarise(output: &str) -> SoakSummary {
    let (records, _) = demo::parse_records(output);
    let verified = records
        .iter()
        .filter(|record| record.keys_verified == Some(EXPECTED_KEYS) && record.failed_checks == Some(0))
        .count();
    let mut steady: Vec<u64> =
        records.iter().filter(|record| record.generation >= 3).map(|record| record.blackout_us).collect();
    steady.sort_unstable();
    let blackout_us = match (steady.first(), steady.last()) {
        (Some(&min), Some(&max)) => (min, steady[(steady.len() - 1) / 2], max),
        _ => (0, 0, 0),
    };
    SoakSummary {
        updates: records.len(),
        verified,
        ballast_intact: output.matches("pages intact").count(),
        damaged_reports: output.matches("lost their contents").count(),
        blackout_us,
        free_kib: free_at_update_requests(output),
    }
}

impl Args {
    /// Runs the soak; fails on any loss.
    pub fn run(&self) -> Result<()> {
        let arch = self.target.arch;
        let updates = self.updates.max(1);
        let ballast_mib = self.ballast.max(1);
        ensure(&[Need::Toolchain(arch), Need::Qemu(arch)])?;
        let (first, second) = demo::build_versions(arch, self.profile.release, true)?;
        let command_line = format!(
            "demo.updates={updates} demo.shutdown=1 bench.ballast={ballast_mib} bench.order=0 {}",
            self.command_line.append
        );
        // Always headless: the soak follows the serial console itself.
        let config = QemuConfig {
            arch,
            medium: Medium::Direct {
                kernel: first.direct_boot_file().clone(),
                module: Some(second.elf.clone()),
                command_line: command_line.trim().to_string(),
            },
            memory_mib: (512 + 2 * ballast_mib) as u32,
            headless: true,
            kvm: false,
            extra_args: self.qemu.extra_args(),
        };
        let timeout = self.qemu.timeout().unwrap_or(Duration::from_secs(120 + 2 * u64::from(updates)));
        println!(
            "soak: {updates} updates on {arch} with {ballast_mib} MiB of ballast, every key, the counter and every \
             page checked after each"
        );
        let (outcome, log) = watch(&config, timeout, updates)?;
        check(&outcome, &log, timeout, updates)
    }
}

/// Runs QEMU, printing progress every tenth of the updates and every loss as
/// it is seen, and keeps the serial log.
fn watch(config: &QemuConfig, timeout: Duration, updates: u32) -> Result<(Outcome, PathBuf)> {
    let scratch = util::output_dir().join("soak");
    let command = config.command(&scratch)?;
    let step = (updates / 10).max(1);
    let outcome = crate::qemu::run_filtered(command, Some(timeout), &mut |line, _| {
        if let Some(generation) = line
            .split("update-report: generation=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u32>().ok())
            && generation.is_multiple_of(step)
        {
            println!("soak: {generation} updates done");
        }
        if line.contains("lost their contents") || line.contains("failed checks") && !line.contains(" 0 failed checks")
        {
            println!("soak: {}", line.trim());
        }
    })
    .context("running the soak")?;
    std::fs::create_dir_all(&scratch)?;
    let log = scratch.join(format!("{}-serial.log", config.arch));
    std::fs::write(&log, &outcome.output)?;
    Ok((outcome, log))
}

/// Summarises the run and fails on any loss.
fn check(outcome: &Outcome, log: &Path, timeout: Duration, updates: u32) -> Result<()> {
    let summary = summarise(&outcome.output);
    let (min, median, max) = summary.blackout_us;
    println!(
        "soak: {} of {} updates completed; keys and counter intact after {}, ballast intact after {}; \
         blackout min {:.2} / median {:.2} / max {:.2} ms (serial log: {})",
        summary.updates,
        updates,
        summary.verified,
        summary.ballast_intact,
        min as f64 / 1000.0,
        median as f64 / 1000.0,
        max as f64 / 1000.0,
        log.display()
    );
    if let (Some(first), Some(last)) = (summary.free_kib.first(), summary.free_kib.last()) {
        let lowest = summary.free_kib.iter().min().copied().unwrap_or(0);
        println!(
            "soak: free memory when update 1 began {first} KiB, when update {} began {last} KiB (lowest {lowest} KiB)",
            summary.free_kib.len()
        );
    }
    let expected = updates as usize;
    if outcome.timed_out {
        bail!("the soak did not finish within {} s", timeout.as_secs());
    }
    if summary.updates != expected || summary.verified != expected || summary.ballast_intact != expected {
        bail!("state was lost or an update did not happen (serial log: {})", log.display());
    }
    if summary.damaged_reports > 0 {
        bail!("the ballast found damaged pages (serial log: {})", log.display());
    }
    if let Err(leak) = check_no_leak(&summary.free_kib) {
        bail!("memory leaked: {leak} (serial log: {})", log.display());
    }
    if outcome.status != Some(Arch::TEST_SUCCESS_STATUS) {
        bail!("QEMU exited with {:?} (serial log: {})", outcome.status, log.display());
    }
    println!("soak: nothing lost and nothing leaked in {expected} updates");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kept() {
        let crate::Command::Soak(args) = crate::parse(&["xtask", "soak"]) else { panic!("not soak") };
        assert_eq!(
            (args.updates, args.ballast, args.target.arch, args.profile.release),
            (100, 16, Arch::X86_64, false)
        );
        assert_eq!((args.qemu.timeout, args.command_line.append.as_str()), (None, ""));
    }

    #[test]
    fn a_soak_log_is_summarised() {
        let mut log = String::new();
        for generation in 1..=4u32 {
            log.push_str(&format!(
                "[INFO  kho] update-report: generation={generation} from=0.1.0 to=0.2.0 preserved_bytes=1 sub_fdts=5 \
                 blackout_us={}\n",
                1000 * u64::from(generation)
            ));
            log.push_str(
                "[INFO  svc] [ballast] ballast: 16 MiB handed over in place (1 runs, order 0), all 4096 pages intact\n",
            );
            let failed = if generation == 4 { 1 } else { 0 };
            log.push_str(&format!(
                "[INFO  svc] [init] demo: generation {generation} verified 64 keys (checksum 0x1), counter 2, uptime 5 ms, \
                 {failed} failed checks\n"
            ));
        }
        let summary = summarise(&log);
        assert_eq!(summary.updates, 4);
        assert_eq!(summary.verified, 3, "the fourth update lost a check");
        assert_eq!(summary.ballast_intact, 4);
        assert_eq!(summary.blackout_us, (3000, 3000, 4000));
    }

    #[test]
    fn free_memory_is_read_and_a_fall_is_a_leak() {
        let log = "[INFO  update] update requested by service 2 (BootModule); free_kib=1000\nother\n[INFO  kho] \
                   handover consumed: released 4 KiB that owners did not take back, 0 KiB unowned, and the metadata; \
                   free_kib=1\n[INFO  update] update requested by service 2 (BootModule); free_kib=996\n";
        assert_eq!(free_at_update_requests(log), [1000, 996]);
        assert_eq!(check_no_leak(&[1000, 1000, 1004]), Ok(()));
        let leak = check_no_leak(&[1000, 1000, 996, 992]).unwrap_err();
        assert!(
            leak.contains("when update 4 began is 992 KiB, 8 KiB less than the lowest of updates 1 to 2"),
            "{leak}"
        );
        assert!(leak.contains("first fell below that at update 3"), "{leak}");
        // A step early on that stays flat is not a leak; 4 KiB lost at
        // every update is, however small.
        assert_eq!(check_no_leak(&[1000, 1000, 364, 364, 364, 364, 364, 364]), Ok(()));
        let slow: Vec<u64> = (0..30).map(|update| 100_000 - 4 * update).collect();
        assert!(check_no_leak(&slow).unwrap_err().contains("60 KiB less"));
        assert!(check_no_leak(&[]).is_err());
    }
}
