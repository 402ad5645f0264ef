//! `cargo xtask demo`: boots version 1 of Baton with version 2 as the update
//! module, lets init update the kernel N times in a row, and prints what
//! happened: every update's versions, preserved bytes, sub-FDTs, the keys
//! verified after it and its measured blackout.

use crate::arch::Arch;
use crate::args::{BootMode, CommandLine, Entry, LimineDir, Memory, Profile, QemuRun, Target};
use crate::build::{BuildOptions, KernelBuild, build_kernel};
use crate::doctor::{Need, ensure};
use crate::network::Network;
use crate::qemu::{Drive, Firmware, Medium, QemuConfig};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The version the second build reports.
pub const SECOND_VERSION: &str = "0.2.0";
/// Keys the client stores and verifies.
pub const EXPECTED_KEYS: u64 = 64;

/// `cargo xtask demo`: the self-update demo.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    profile: Profile,
    /// Updates in a row.
    #[arg(long, default_value_t = 5)]
    updates: u32,
    #[command(flatten)]
    memory: Memory,
    #[command(flatten)]
    command_line: CommandLine,
    #[command(flatten)]
    qemu: QemuRun,
    /// Show the whole serial console.
    #[arg(long)]
    verbose: bool,
    /// Save the first outgoing handover (root FDT, sub-FDTs, guest RAM) here.
    #[arg(long)]
    dump_kho: Option<PathBuf>,
    /// How the demo boots (`--boot limine` boots the ISO's demo entry, as
    /// a machine would, and keeps a screenshot of the screen at the end).
    #[command(flatten)]
    entry: Entry,
    #[command(flatten)]
    limine: LimineDir,
    #[command(flatten)]
    network: Network,
    /// Milliseconds between updates, so traffic runs through them and a
    /// person sees each one (default 1000 with the network, 0 without).
    #[arg(long)]
    interval_ms: Option<u16>,
}

/// How `demo --boot limine` boots.
#[derive(Debug, Clone)]
struct LimineBoot {
    /// Limine's files.
    directory: PathBuf,
    /// The firmware.
    firmware: Firmware,
    /// The drive the ISO is in.
    drive: Drive,
}

/// One update, as the guest reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateRecord {
    /// 1 for the first update.
    pub generation: u32,
    /// Version before.
    pub from: String,
    /// Version after.
    pub to: String,
    /// Bytes preserved across it.
    pub preserved_bytes: u64,
    /// Sub-FDTs handed over.
    pub sub_fdts: u32,
    /// Blackout in microseconds.
    pub blackout_us: u64,
    /// Keys the client verified afterwards.
    pub keys_verified: Option<u64>,
    /// Failed checks afterwards.
    pub failed_checks: Option<u64>,
    /// Services resumed where they stopped (names).
    pub resumed: Vec<String>,
    /// Services started again from the new image (names).
    pub restarted: Vec<String>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// A report's comma-separated list of names (`-` for none).
fn names(list: Option<&str>) -> Vec<String> {
    list.filter(|list| *list != "-").map_or(Vec::new(), |list| list.split(',').map(str::to_string).collect())
}

/// Reads the update reports and verification lines out of a serial log.
pub fn parse_records(output: &str) -> (Vec<UpdateRecord>, Option<(u64, u64)>) {
    let mut records: Vec<UpdateRecord> = Vec::new();
    let mut cold_boot_verification = None;
    for line in output.lines() {
        if let Some(position) = line.find("update-report:") {
            let line = &line[position..];
            records.push(UpdateRecord {
                generation: field(line, "generation").and_then(|value| value.parse().ok()).unwrap_or(0),
                from: field(line, "from").unwrap_or("?").to_string(),
                to: field(line, "to").unwrap_or("?").to_string(),
                preserved_bytes: field(line, "preserved_bytes").and_then(|value| value.parse().ok()).unwrap_or(0),
                sub_fdts: field(line, "sub_fdts").and_then(|value| value.parse().ok()).unwrap_or(0),
                blackout_us: field(line, "blackout_us").and_then(|value| value.parse().ok()).unwrap_or(0),
                keys_verified: None,
                failed_checks: None,
                resumed: names(field(line, "resumed")),
                restarted: names(field(line, "restarted")),
            });
        } else if let Some(position) = line.find("demo: generation ") {
            // "demo: generation G verified K keys (...), ..., F failed checks"
            let words: Vec<&str> = line[position..].split_whitespace().collect();
            let generation: u32 = words.get(2).and_then(|word| word.parse().ok()).unwrap_or(u32::MAX);
            let keys: Option<u64> = words.get(4).and_then(|word| word.parse().ok());
            let failed: Option<u64> = words.iter().rev().nth(2).and_then(|word| word.parse().ok());
            if generation == 0 {
                cold_boot_verification = keys.zip(failed);
            } else if let Some(record) = records.iter_mut().rev().find(|record| record.generation == generation) {
                record.keys_verified = keys;
                record.failed_checks = failed;
            }
        }
    }
    (records, cold_boot_verification)
}

/// The summary table.
pub fn table(records: &[UpdateRecord]) -> String {
    let mut text = String::from(
        "| update | from | to | resumed | restarted | preserved | sub-FDTs | keys verified | blackout |\n\
         |---:|---|---|---|---|---:|---:|---:|---:|\n",
    );
    let list = |names: &[String]| if names.is_empty() { "-".to_string() } else { names.join(", ") };
    for record in records {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} KiB | {} | {} | {:.3} ms |\n",
            record.generation,
            record.from,
            record.to,
            list(&record.resumed),
            list(&record.restarted),
            record.preserved_bytes / 1024,
            record.sub_fdts,
            record.keys_verified.map_or("-".to_string(), |keys| format!("{keys}/{EXPECTED_KEYS}")),
            record.blackout_us as f64 / 1000.0
        ));
    }
    text
}

/// Checks the records: every update happened and lost nothing.
pub fn verdict(records: &[UpdateRecord], cold: Option<(u64, u64)>, updates: u32) -> Result<(), String> {
    if cold != Some((EXPECTED_KEYS, 0)) {
        return Err(format!("the first boot did not verify {EXPECTED_KEYS} keys: {cold:?}"));
    }
    if records.len() != updates as usize {
        return Err(format!("{} of {updates} updates completed", records.len()));
    }
    for record in records {
        if record.keys_verified != Some(EXPECTED_KEYS) || record.failed_checks != Some(0) {
            return Err(format!(
                "after update {}: {:?} keys verified, {:?} failed checks",
                record.generation, record.keys_verified, record.failed_checks
            ));
        }
    }
    Ok(())
}

/// Builds both versions: testing kernels (`testing`) or production ones.
pub fn build_versions(arch: Arch, release: bool, testing: bool) -> Result<(KernelBuild, KernelBuild)> {
    let first = build_kernel(&BuildOptions { arch, release, version: None, testing })?;
    let second = build_kernel(&BuildOptions { arch, release, version: Some(SECOND_VERSION.to_string()), testing })?;
    Ok((first, second))
}

fn is_progress_line(line: &str) -> bool {
    [
        "booting via",
        "demo:",
        "update-report",
        "client:",
        "kvstore: migrated",
        "netd: virtio-net",
        "netd: DHCP",
        "WARN",
        "ERROR",
        "kernel fault",
        "panic",
    ]
    .iter()
    .any(|marker| line.contains(marker))
}

impl Args {
    /// Runs the demo and prints the table; fails if anything was lost.
    pub fn run(&self) -> Result<()> {
        let arch = self.target.arch;
        let limine = match self.entry.boot {
            BootMode::Direct => None,
            BootMode::Limine => {
                let directory = crate::limine::find_for(self.limine.limine_dir.as_deref(), Some(arch))?;
                let firmware = self.entry.firmware_for(arch);
                if firmware == Firmware::Uefi {
                    ensure(&[Need::Uefi(arch)])?;
                }
                ensure(&[Need::Xorriso])?;
                Some(LimineBoot { directory, firmware, drive: self.entry.drive })
            }
        };
        run(self, arch, limine.as_ref())
    }
}

/// Runs the demo and prints the table; fails if anything was lost.
fn run(options: &Args, arch: Arch, limine: Option<&LimineBoot>) -> Result<()> {
    ensure(&[Need::Toolchain(arch), Need::Qemu(arch)])?;
    // The demo shows what a user gets: production kernels.
    let (first, second) = build_versions(arch, options.profile.release, false)?;
    let pause = if options.dump_kho.is_some() { "kho.pause=1" } else { "" };
    // Through Limine the screen is captured at the end, as a person at the
    // machine would see it.
    let screen = if limine.is_some() { "demo.screenshot=1" } else { "" };
    let mut extra_args = options.qemu.extra_args();
    let has_network = options.network.is_on(&extra_args);
    let interval_ms = options.interval_ms.unwrap_or(if has_network { 1000 } else { 0 });
    let interval = if interval_ms > 0 { format!("demo.interval_ms={interval_ms}") } else { String::new() };
    // With a network, the machine waits before shutting down until the
    // host's Redis client has finished (the same pause as the screenshot).
    let wait = if has_network && limine.is_none() { "demo.wait=1" } else { "" };
    let mut command_line = format!(
        "demo.updates={} demo.shutdown=1 {interval} {pause} {screen} {wait} {}",
        options.updates, options.command_line.append
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ");
    if has_network {
        extra_args.extend(options.network.qemu_args()?);
        command_line = Network::command_line(&command_line);
        println!("{}", crate::network::describe(options.network.ports()));
    }
    let scratch = util::output_dir().join("demo");
    // Always headless: the demo follows the serial console itself.
    let config = QemuConfig {
        arch,
        medium: medium(arch, &first, &second, command_line, limine, &scratch)?,
        memory_mib: options.memory.memory,
        headless: true,
        kvm: false,
        extra_args,
    };
    let spacing = u64::from(interval_ms).div_ceil(1000) * u64::from(options.updates);
    let timeout =
        options.qemu.timeout().unwrap_or(Duration::from_secs(120 + 20 * u64::from(options.updates) + spacing));
    println!(
        "demo: Baton {} on {}, updating to {SECOND_VERSION} then {} more time(s)",
        env!("CARGO_PKG_VERSION"),
        arch,
        options.updates.saturating_sub(1)
    );
    let mut command = config.command(&scratch)?;
    let mut dumper = match &options.dump_kho {
        Some(directory) => Some(crate::dump::Dumper::new(directory, &scratch, &mut command)?),
        None => None,
    };
    let mut screenshot = match limine {
        Some(_) => {
            Some(crate::dump::Screenshot::new(&scratch, &scratch.join(format!("{}-screen.ppm", arch)), &mut command)?)
        }
        None => None,
    };
    let redis_port = has_network.then(|| options.network.ports().redis);
    let mut redis_client: Option<crate::demo_redis::DemoClient> = None;
    let mut redis_summary: Option<crate::demo_redis::Summary> = None;
    let outcome = crate::qemu::run_filtered(command, Some(timeout), &mut |line, input| {
        if options.verbose || is_progress_line(line) {
            println!("  {}", line.trim_end());
        }
        if let Some(port) = redis_port {
            if line.contains("kvstore: serving Redis") && redis_client.is_none() && redis_summary.is_none() {
                println!("demo: a Redis client on the host connects to 127.0.0.1:{port} and stays connected");
                redis_client = Some(crate::demo_redis::DemoClient::start(port));
            } else if line.contains("demo: init resumed on the new kernel") {
                if let Some(client) = &redis_client {
                    client.note_update();
                }
            } else if line.contains("paused before shutdown") {
                if let Some(client) = redis_client.take() {
                    // The last update's read-back has had time to run.
                    std::thread::sleep(Duration::from_millis(300));
                    redis_summary = Some(client.finish());
                }
                if screenshot.is_none() {
                    let _ = input.write_all(b"\n");
                    let _ = input.flush();
                }
            }
        }
        crate::dump::watch_line(&mut dumper, &mut screenshot, line, input, "  ");
    })
    .context("running the demo")?;
    if redis_port.is_some() && redis_summary.is_none() {
        bail!("the host's Redis client never finished (kvstore never served Redis, or the demo did not pause)");
    }
    if let Some(screenshot) = &screenshot {
        match screenshot.finish() {
            Ok((png, _)) => println!("demo: the screen at the end is in {}", png.display()),
            Err(error) => println!("demo: no screenshot: {error:#}"),
        }
    }
    let log = scratch.join(format!("{}-serial.log", arch));
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(&log, &outcome.output)?;
    conclude(&outcome, options.updates, timeout, &log, redis_summary.as_ref())
}

/// What QEMU boots: version 1 with version 2 as its module, directly or
/// from the demo entry of an ISO.
fn medium(
    arch: Arch,
    first: &KernelBuild,
    second: &KernelBuild,
    command_line: String,
    limine: Option<&LimineBoot>,
    scratch: &Path,
) -> Result<Medium> {
    let Some(limine) = limine else {
        return Ok(Medium::Direct {
            kernel: first.direct_boot_file().clone(),
            module: Some(second.elf.clone()),
            command_line,
        });
    };
    std::fs::create_dir_all(scratch)?;
    let iso = crate::limine::build_iso(
        arch,
        &limine.directory,
        &crate::limine::IsoContents {
            kernel: first.elf.clone(),
            command_line: String::new(),
            update: Some(second.elf.clone()),
            demo_command_line: command_line,
            is_demo_default: true,
        },
        &scratch.join(format!("{arch}-demo.iso")),
    )?;
    Ok(Medium::Iso { iso, firmware: limine.firmware, drive: limine.drive })
}

/// Prints the table of updates and fails if the demo did not finish, an
/// update is missing or anything was lost.
fn conclude(
    outcome: &crate::qemu::Outcome,
    updates: u32,
    timeout: Duration,
    log: &Path,
    redis: Option<&crate::demo_redis::Summary>,
) -> Result<()> {
    let (records, cold) = parse_records(&outcome.output);
    println!("\n{}", table(&records));
    if let Some(summary) = redis {
        let longest_blackout = records.iter().map(|record| record.blackout_us).max().unwrap_or(0);
        println!("{} (the longest blackout: {:.1} ms)", summary.line(), longest_blackout as f64 / 1000.0);
        if !summary.is_clean() {
            bail!("the host's Redis client lost something (serial log: {})", log.display());
        }
    }
    if outcome.timed_out {
        bail!("the demo did not finish within {} s (serial log: {})", timeout.as_secs(), log.display());
    }
    if let Err(problem) = verdict(&records, cold, updates) {
        bail!("{problem} (serial log: {})", log.display());
    }
    if outcome.status != Some(Arch::TEST_SUCCESS_STATUS) {
        bail!("QEMU exited with {:?} (serial log: {})", outcome.status, log.display());
    }
    println!("demo: {} updates, every key and the counter intact after each", records.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Args {
        match crate::parse(arguments) {
            crate::Command::Demo(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_kept_and_headless_is_accepted() {
        let args = parse(&["xtask", "demo"]);
        assert_eq!((args.updates, args.memory.memory, args.qemu.timeout), (5, 512, None));
        assert_eq!((args.target.arch, args.entry.boot, args.qemu.headless), (Arch::X86_64, BootMode::Direct, false));
        assert!(parse(&["xtask", "demo", "--headless"]).qemu.headless);
    }

    const LOG: &str = "\
[INFO  svc] [init] demo: generation 0 verified 64 keys (checksum 0x1), counter 2, uptime 5 ms, 0 failed checks
[INFO  kho] update-report: generation=1 from=0.1.0 to=0.2.0 preserved_bytes=14856192 sub_fdts=4 blackout_cycles=8 blackout_us=1234 resumed=init,counter restarted=kvstore
[INFO  svc] [init] demo: generation 1 verified 64 keys (checksum 0x1), counter 4, uptime 7 ms, 0 failed checks
[INFO  kho] update-report: generation=2 from=0.2.0 to=0.2.0 preserved_bytes=14856192 sub_fdts=4 blackout_cycles=8 blackout_us=900
[INFO  svc] [init] demo: generation 2 verified 63 keys (checksum 0x2), counter 6, uptime 9 ms, 1 failed checks
";

    #[test]
    fn reports_and_verifications_are_paired() {
        let (records, cold) = parse_records(LOG);
        assert_eq!(cold, Some((64, 0)));
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].from, "0.1.0");
        assert_eq!(records[0].to, "0.2.0");
        assert_eq!(records[0].blackout_us, 1234);
        assert_eq!(records[0].keys_verified, Some(64));
        assert_eq!(records[1].failed_checks, Some(1));
        assert_eq!(records[0].resumed, ["init", "counter"]);
        assert_eq!(records[0].restarted, ["kvstore"]);
        assert!(records[1].resumed.is_empty(), "an older report without the fields lists none");
        let table = table(&records);
        assert!(table.contains("| 1 | 0.1.0 | 0.2.0 | init, counter | kvstore | 14508 KiB | 4 | 64/64 | 1.234 ms |"));
        assert!(table.contains("| 2 | 0.2.0 | 0.2.0 | - | - | 14508 KiB |"));
    }

    #[test]
    fn a_lost_key_or_a_missing_update_fails_the_demo() {
        let (records, cold) = parse_records(LOG);
        assert!(verdict(&records, cold, 2).unwrap_err().contains("after update 2"));
        assert!(verdict(&records[..1], cold, 1).is_ok());
        assert!(verdict(&records[..1], cold, 2).unwrap_err().contains("1 of 2"));
        assert!(verdict(&records[..1], Some((10, 0)), 1).is_err());
    }
}
