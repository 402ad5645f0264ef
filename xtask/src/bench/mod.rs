//! `cargo xtask bench`: the benchmarks behind every speed and memory figure
//! in docs/. Figures come from here, never from timed tests.
//!
//! Two parts:
//! - host: the KHO crate's tracking overhead and serialise / deserialise
//!   throughput on simulated memory (`kernel/crates/kho/examples`);
//! - QEMU: real updates of a guest whose `ballast` service holds preserved
//!   state of 1 MiB, 64 MiB and 1 GiB (by default): resumed with its
//!   process (the default rule), and restarted (`update.resume=0`) with
//!   its state as order-0 pages, as 2 MiB folios, and handed over by
//!   copying (the baseline), with the blackout split into its phases as the kernel's `update-report` line
//!   gives them; plus cold boots per boot path; and what a client outside
//!   the machine sees: a TCP echo stream through netd across spaced
//!   updates (`network`).
//!
//! The report goes to target/bench/: report.md, updates.csv, cold-boot.csv,
//! blackout.svg and phases.svg, and every serial log under logs/.

mod network;
mod parse;
mod plot;
mod redis;
mod report;
mod run;
mod table;

use crate::arch::Arch;
use crate::args::{Kvm, LimineDir, Target};
use crate::util::{self, workspace_root};
use anyhow::{Context, Result, bail};
use parse::{UpdateFigures, median};
use std::path::PathBuf;

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
    /// Layouts to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    layouts: Vec<Layout>,
    /// Spaced updates of the network benchmark (0 leaves it out).
    #[arg(long, default_value_t = 8)]
    network_updates: u32,
    /// Spaced updates of the Redis benchmark (0 leaves it out).
    #[arg(long, default_value_t = 8)]
    redis_updates: u32,
    /// Requests of each redis-benchmark test (`-n`).
    #[arg(long, default_value_t = 20_000)]
    redis_requests: u32,
    /// Keys of the large-table run (DEBUG POPULATE in a 1 GiB guest, then
    /// three updates; 0 leaves it out).
    #[arg(long, default_value_t = 1_000_000)]
    redis_keys: u64,
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
        run::qemu(&BenchOptions {
            arch: self.target.arch,
            sizes_mib: self.sizes.clone(),
            updates: self.updates.max(1),
            cold_boots: self.cold_boots.max(1),
            runs: self.runs.max(1),
            layouts: if self.layouts.is_empty() { Layout::ALL.to_vec() } else { self.layouts.clone() },
            network_updates: self.network_updates,
            redis_updates: self.redis_updates,
            redis_requests: self.redis_requests.max(1),
            redis_keys: self.redis_keys,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Layout {
    /// Every service resumed with its process (the update rule's default);
    /// the ballast's state is order-0 pages, mapped again, never copied.
    Resumed,
    /// Restarted; state preserved in place as order-0 (4 KiB) folios.
    Pages,
    /// Preserved in place as 2 MiB folios (smaller for smaller states).
    Folios,
    /// Copied into a buffer, the buffer handed over, copied back.
    Copying,
}

impl Layout {
    const ALL: [Layout; 4] = [Layout::Resumed, Layout::Pages, Layout::Folios, Layout::Copying];

    pub fn name(self) -> &'static str {
        match self {
            Layout::Resumed => "resumed, 4 KiB pages",
            Layout::Pages => "in place, 4 KiB pages",
            Layout::Folios => "in place, 2 MiB folios",
            Layout::Copying => "copying (baseline)",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Layout::Resumed => "resumed",
            Layout::Pages => "pages",
            Layout::Folios => "folios",
            Layout::Copying => "copying",
        }
    }

    /// The folio order the ballast uses for `size_mib` of state.
    pub fn order(self, size_mib: u64) -> u32 {
        match self {
            Layout::Resumed | Layout::Pages => 0,
            // 2 MiB folios, or the largest that fits a smaller state.
            Layout::Folios | Layout::Copying => (size_mib * 256).ilog2().min(9),
        }
    }
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
    /// The layouts to run.
    pub layouts: Vec<Layout>,
    /// Updates of the network benchmark (0: not run).
    pub network_updates: u32,
    /// Updates of the Redis benchmark (0: not run).
    pub redis_updates: u32,
    /// Requests of each redis-benchmark test.
    pub redis_requests: u32,
    /// Keys of the large-table run (0: not run).
    pub redis_keys: u64,
    /// Use KVM (x86_64).
    pub kvm: bool,
    /// Limine files for the Limine cold boots (skipped without them).
    pub limine_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kept() {
        let crate::Command::Bench(args) = crate::parse(&["xtask", "bench"]) else { panic!("not bench") };
        assert_eq!(args.sizes, [1, 64, 1024]);
        assert_eq!((args.updates, args.cold_boots, args.runs, args.network_updates), (11, 3, 3, 8));
        assert_eq!((args.host, args.kvm.kvm, args.target.arch), (false, false, Arch::X86_64));
    }

    #[test]
    fn folio_orders_fit_the_state() {
        assert_eq!(Layout::Pages.order(1024), 0);
        assert_eq!(Layout::Folios.order(1024), 9);
        assert_eq!(Layout::Folios.order(1), 8, "1 MiB of state holds one 1 MiB folio");
    }

    #[test]
    fn steady_figures_start_at_the_fifth_update() {
        let update = |generation: u64, blackout_us: u64| UpdateFigures {
            fields: [("generation".to_string(), generation), ("blackout_us".to_string(), blackout_us)].into(),
        };
        let updates = vec![update(1, 209_909), update(3, 53_870), update(5, 50_000), update(6, 40_000)];
        let scenario = Scenario { size_mib: 64, layout: Layout::Pages, order: 0, updates, tracking: None };
        assert_eq!(scenario.steady_median("blackout_us"), 40000, "updates 5 and up, lower middle");
        let early = Scenario { updates: vec![update(1, 7), update(2, 9)], ..scenario };
        assert_eq!(early.steady_median("blackout_us"), 7, "all updates when none is steady");
    }
}
