//! A large Redis table through updates: kvstore filled with DEBUG POPULATE
//! (`--redis-keys`, default a million) in a 1 GiB guest, then three
//! updates 65 s apart: the first restarts kvstore into the second version
//! (the table goes across in place and migrates to format 2 in the
//! background), the others resume it. A probe PINGs every 5 ms from when
//! the table is full; reported per update: the kernel's blackout, the
//! client's longest pause, kvstore's restart-prepare, and the migration.

use super::network::{GuestShape, kernel_blackouts, longest_gap, networked_guest};
use super::output_dir;
use super::redis::Probe;
use super::report::ms;
use crate::arch::Arch;
use crate::build::KernelBuild;
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Updates of the run.
const UPDATES: u32 = 3;
/// Between them: room for the POPULATE before the first.
const INTERVAL_MS: u32 = 65_000;

/// One update's figures.
#[derive(Debug, Clone, Default)]
pub struct TableUpdate {
    /// Its generation.
    pub generation: u64,
    /// The kernel's blackout.
    pub kernel_blackout_us: u64,
    /// The probe's longest wait around it (`None`: the probe was not
    /// running yet).
    pub client_pause_us: Option<u64>,
}

/// The run's figures.
#[derive(Debug, Clone, Default)]
pub struct TableFigures {
    /// Keys made.
    pub keys: u64,
    /// DEBUG POPULATE's time, host-measured.
    pub populate_ms: u64,
    /// kvstore's "handed over in place" line, as it is.
    pub handed_over: String,
    /// kvstore's restart-prepare: from that line to its sub-FDT published.
    pub prepare_us: Option<u64>,
    /// The background migration's time, as kvstore logs it.
    pub migration_ms: Option<u64>,
    /// Every update.
    pub updates: Vec<TableUpdate>,
}

/// The seconds stamp of a kernel log line (`[   20.700859] ...`).
fn stamp_us(line: &str) -> Option<u64> {
    let inside = line.strip_prefix('[')?.split(']').next()?.trim();
    let seconds: f64 = inside.parse().ok()?;
    Some((seconds * 1e6) as u64)
}

/// The figures kvstore's log lines give: its restart-prepare time and its
/// migration's.
fn kvstore_lines(output: &str, figures: &mut TableFigures) {
    let mut handed_at = None;
    for line in output.lines() {
        if line.contains("Redis key(s) handed over in place") && handed_at.is_none() {
            handed_at = stamp_us(line);
            figures.handed_over = line.split("kvstore: ").nth(1).unwrap_or(line).to_string();
        } else if line.contains("kvstore: published") && figures.prepare_us.is_none() {
            if let (Some(start), Some(end)) = (handed_at, stamp_us(line)) {
                figures.prepare_us = Some(end.saturating_sub(start));
            }
        } else if let Some(rest) = line.split("migrated to format 2 in the background (").nth(1) {
            figures.migration_ms =
                rest.split(", ").nth(1).and_then(|text| text.split_whitespace().next()).and_then(|ms| ms.parse().ok());
        }
    }
}

/// Runs it: `keys` keys.
pub fn run(arch: Arch, kvm: bool, kernels: &(KernelBuild, KernelBuild), keys: u64) -> Result<TableFigures> {
    crate::doctor::ensure(&[crate::doctor::Need::RedisCli])?;
    // kvstore answers the POPULATE it runs before it says it is prepared.
    let shape = GuestShape { memory_mib: 1024, extra_options: "update.prepare_timeout_ms=240000" };
    let (command, port) = networked_guest(arch, kvm, kernels, UPDATES, INTERVAL_MS, 6379, shape)?;
    let mut filler: Option<std::thread::JoinHandle<Result<(u64, Probe), String>>> = None;
    let mut probe: Option<Probe> = None;
    let mut populate_ms = 0;
    // (generation, probe time at its start, at its end).
    let mut windows: Vec<(u64, u64, u64)> = Vec::new();
    let mut replies = None;
    let mut failure = None;
    let timeout = Duration::from_secs(600 + 90 * u64::from(UPDATES));
    let outcome = crate::qemu::run_filtered(command, Some(timeout), &mut |line, input| {
        if line.contains("kvstore: serving Redis") && filler.is_none() {
            filler = Some(std::thread::spawn(move || {
                let address = SocketAddr::from(([127, 0, 0, 1], port));
                let mut stream =
                    TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|error| error.to_string())?;
                stream.set_read_timeout(Some(Duration::from_secs(400))).map_err(|error| error.to_string())?;
                let request =
                    format!("*3\r\n$5\r\nDEBUG\r\n$8\r\nPOPULATE\r\n${}\r\n{keys}\r\n", keys.to_string().len());
                let started = Instant::now();
                stream.write_all(request.as_bytes()).map_err(|error| error.to_string())?;
                let mut reply = [0u8; 5];
                stream.read_exact(&mut reply).map_err(|error| format!("DEBUG POPULATE: {error}"))?;
                if &reply != b"+OK\r\n" {
                    return Err(format!("DEBUG POPULATE answered {:?}", String::from_utf8_lossy(&reply)));
                }
                let populate_ms = started.elapsed().as_millis() as u64;
                Ok((populate_ms, Probe::start(port).map_err(|error| format!("the probe: {error:#}"))?))
            }));
        } else if let Some(position) = line.find("demo: update ") {
            // The probe starts once the table is full: by the first
            // update, on any host this runs on (it waits 65 s).
            if probe.is_none()
                && let Some(done) = filler.take_if(|thread| thread.is_finished())
            {
                match done.join().unwrap_or_else(|_| Err("the filler panicked".to_string())) {
                    Ok((took_ms, started)) => {
                        populate_ms = took_ms;
                        probe = Some(started);
                    }
                    Err(error) => failure = Some(error),
                }
            }
            let generation = line[position..].split_whitespace().nth(2).and_then(|word| word.parse::<u64>().ok());
            if let (Some(generation), Some(probe)) = (generation, &probe) {
                windows.push((generation, probe.now_us(), u64::MAX));
            }
        } else if line.contains("demo: init resumed on the new kernel") {
            if let (Some(window), Some(probe)) = (windows.last_mut(), &probe) {
                window.2 = probe.now_us();
            }
        } else if line.contains("paused before shutdown") {
            if let Some(probe) = probe.take() {
                replies = Some(probe.finish());
            }
            let _ = input.write_all(b"\n");
            let _ = input.flush();
        }
    })?;
    let log = output_dir().join("logs").join(format!("{arch}-redis-table.log"));
    std::fs::write(&log, &outcome.output)?;
    if let Some(failure) = failure {
        bail!("{failure} (serial log: {})", log.display());
    }
    let Some((replies, _sent)) = replies else {
        bail!("the table was not full by the first update, or the demo never paused (serial log: {})", log.display());
    };
    let blackouts = kernel_blackouts(&outcome.output, UPDATES, &log)?;
    let mut figures = TableFigures { keys, ..TableFigures::default() };
    figures.populate_ms = populate_ms;
    kvstore_lines(&outcome.output, &mut figures);
    figures.updates = blackouts
        .iter()
        .map(|&(generation, kernel_blackout_us)| TableUpdate {
            generation,
            kernel_blackout_us,
            client_pause_us: windows
                .iter()
                .find(|window| window.0 == generation)
                .map(|window| longest_gap(&replies, window.1, window.2)),
        })
        .collect();
    Ok(figures)
}

/// The report's section.
pub fn section(text: &mut String, figures: &TableFigures) {
    let _ = writeln!(text, "\n## A large Redis table through updates\n");
    let _ = writeln!(
        text,
        "DEBUG POPULATE {} in a 1 GiB guest: {} s. At the first update kvstore restarts into format 2: {}; its \
         restart-prepare took {}; the migration to format 2 after it was back took {}.\n",
        figures.keys,
        figures.populate_ms as f64 / 1000.0,
        figures.handed_over,
        figures.prepare_us.map_or("(not found)".to_string(), |us| format!("{} ms", ms(us))),
        figures.migration_ms.map_or("(not found)".to_string(), |value| format!("{value} ms")),
    );
    let _ = writeln!(text, "| update | kernel blackout (ms) | client pause (ms) |\n|---:|---:|---:|");
    for update in &figures.updates {
        let _ = writeln!(
            text,
            "| {} | {} | {} |",
            update.generation,
            ms(update.kernel_blackout_us),
            update.client_pause_us.map_or("(no probe yet)".to_string(), ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvstore_lines_give_the_prepare_and_the_migration() {
        let output = "[   47.817746] [INFO  svc] [kvstore] kvstore: 1000000 Redis key(s) handed over in place (77 \
                      block(s), 65011712 bytes of preservable memory) with 1 connection(s)\n\
                      [   47.830917] [INFO  svc] [kvstore] kvstore: published 64 entries (format 1) at 0x5c0000\n\
                      [   55.845286] [INFO  svc] [kvstore] kvstore: the Redis table migrated to format 2 in the \
                      background (1000000 key(s), 7688 ms); the old table is freed\n\
                      [   88.359921] [INFO  svc] [kvstore] kvstore: published 64 entries (format 2) at 0x5a0000\n";
        let mut figures = TableFigures::default();
        kvstore_lines(output, &mut figures);
        assert_eq!(figures.prepare_us, Some(13_171));
        assert_eq!(figures.migration_ms, Some(7688));
        assert!(figures.handed_over.starts_with("1000000 Redis key(s) handed over in place (77 block(s)"));
        assert_eq!(stamp_us("[    1.500000] x"), Some(1_500_000));
        assert_eq!(stamp_us("no stamp"), None);
    }
}
