//! The Redis benchmark: redis-benchmark (Debian's redis-tools, a client
//! nobody here wrote) against kvstore through netd, while the kernel
//! updates again and again and then with the machine quiet, plain and
//! pipelined; and a probe connection sending PING every few milliseconds
//! whose longest wait around each update is the pause a Redis client
//! sees, set beside the kernel's blackout for that update.

use super::network::{GuestShape, kernel_blackouts, longest_gap, networked_guest};
use super::parse::median;
use super::report::ms;
use super::{FIRST_STEADY_UPDATE, output_dir};
use crate::arch::Arch;
use crate::build::KernelBuild;
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time between two probe PINGs.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Time between updates.
const INTERVAL_MS: u32 = 1000;
/// Pipeline depths measured.
const PIPELINES: [u32; 2] = [1, 16];
/// Connections of each redis-benchmark run.
const CLIENTS: u32 = 4;

/// One line of redis-benchmark's CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// SET or GET.
    pub test: String,
    /// Requests in flight per connection (`-P`).
    pub pipeline: u32,
    /// Whether updates ran meanwhile.
    pub is_during_updates: bool,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Worst latency, ms.
    pub max_ms: f64,
}

/// One update as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// 1 for the first update.
    pub generation: u64,
    /// The longest time between two PONGs around it.
    pub client_pause_us: u64,
    /// The kernel's blackout for it.
    pub kernel_blackout_us: u64,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Default)]
pub struct RedisFigures {
    /// Every redis-benchmark result.
    pub rows: Vec<Row>,
    /// Every update.
    pub pauses: Vec<Pause>,
    /// Lines of redis-benchmark's output that report an error.
    pub errors: Vec<String>,
    /// Probe PINGs answered, and sent.
    pub probes: (u64, u64),
}

/// redis-benchmark's CSV (`--csv`): the rows, and the lines that are
/// neither the header nor a row (errors).
pub fn parse_csv(output: &str, pipeline: u32, is_during_updates: bool) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut other = Vec::new();
    for line in output.split(['\r', '\n']).map(str::trim).filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(|field| field.trim_matches('"')).collect();
        if fields.first() == Some(&"test") {
            continue;
        }
        let number = |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok());
        match (fields.len(), number(1), number(4), number(6), number(7)) {
            (8, Some(rps), Some(p50_ms), Some(p99_ms), Some(max_ms)) => {
                rows.push(Row { test: fields[0].to_string(), pipeline, is_during_updates, rps, p50_ms, p99_ms, max_ms })
            }
            _ => other.push(line.to_string()),
        }
    }
    (rows, other)
}

/// One redis-benchmark run: its rows and error lines.
fn benchmark(port: u16, requests: u32, pipeline: u32, is_during_updates: bool) -> (Vec<Row>, Vec<String>) {
    let output = std::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "set,get", "--csv"])
        .args(["-n", &requests.to_string(), "-c", &CLIENTS.to_string(), "-P", &pipeline.to_string()])
        .stdin(std::process::Stdio::null())
        .output();
    match output {
        Ok(output) => {
            let mut text = String::from_utf8_lossy(&output.stdout).to_string();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            let (rows, mut other) = parse_csv(&text, pipeline, is_during_updates);
            if !output.status.success() {
                other.push(format!("redis-benchmark exited with {}", output.status));
            }
            (rows, other)
        }
        Err(error) => (Vec::new(), vec![format!("redis-benchmark did not run: {error}")]),
    }
}

/// The probe: a PING every [`PROBE_INTERVAL`] on its own connection; the
/// time of every PONG since it started.
pub(super) struct Probe {
    started: Instant,
    replies_us: Arc<Mutex<Vec<u64>>>,
    sent: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Probe {
    pub(super) fn start(port: u16) -> Result<Probe> {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let started = Instant::now();
        let replies_us = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (replies_us, sent, stop) = (replies_us.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reply = [0u8; 7];
                while !stop.load(Ordering::Relaxed) {
                    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
                        return;
                    }
                    *sent.lock().unwrap() += 1;
                    if stream.read_exact(&mut reply).is_err() || &reply != b"+PONG\r\n" {
                        return;
                    }
                    replies_us.lock().unwrap().push(started.elapsed().as_micros() as u64);
                    std::thread::sleep(PROBE_INTERVAL);
                }
            })
        };
        Ok(Probe { started, replies_us, sent, stop, thread })
    }

    pub(super) fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Stops: (reply times, PINGs sent).
    pub(super) fn finish(self) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let replies = std::mem::take(&mut *self.replies_us.lock().unwrap());
        let sent = *self.sent.lock().unwrap();
        (replies, sent)
    }
}

/// Runs redis-benchmark through `updates` spaced updates and then quiet,
/// `requests` requests per test.
pub fn run(
    arch: Arch,
    kvm: bool,
    kernels: &(KernelBuild, KernelBuild),
    updates: u32,
    requests: u32,
) -> Result<RedisFigures> {
    crate::doctor::ensure(&[crate::doctor::Need::RedisCli])?;
    let (command, port) = networked_guest(arch, kvm, kernels, updates, INTERVAL_MS, 6379, GuestShape::PLAIN)?;
    let mut probe: Option<Probe> = None;
    let mut failure = None;
    let mut window_start = None;
    let mut windows = Vec::new();
    let mut replies = None;
    // redis-benchmark runs again and again while the updates happen.
    let stop = Arc::new(AtomicBool::new(false));
    let mut loader: Option<std::thread::JoinHandle<(Vec<Row>, Vec<String>)>> = None;
    let mut figures = RedisFigures::default();
    let timeout = Duration::from_secs(300 + 30 * u64::from(updates));
    let outcome = crate::qemu::run_filtered(command, Some(timeout), &mut |line, input| {
        if line.contains("kvstore: serving Redis") && probe.is_none() && failure.is_none() {
            match Probe::start(port) {
                Ok(started) => probe = Some(started),
                Err(error) => failure = Some(format!("{error:#}")),
            }
            let stop = stop.clone();
            loader = Some(std::thread::spawn(move || {
                let (mut rows, mut errors) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    for pipeline in PIPELINES {
                        let (more, other) = benchmark(port, requests, pipeline, true);
                        rows.extend(more);
                        errors.extend(other);
                    }
                }
                (rows, errors)
            }));
        } else if let Some(position) = line.find("demo: update ") {
            let generation = line[position..].split_whitespace().nth(2).and_then(|word| word.parse::<u64>().ok());
            if let (Some(generation), Some(probe)) = (generation, &probe) {
                window_start = Some((generation, probe.now_us()));
            }
        } else if line.contains("demo: init resumed on the new kernel") {
            if let (Some((generation, start)), Some(probe)) = (window_start.take(), &probe) {
                windows.push((generation, start, probe.now_us()));
            }
        } else if line.contains("demo: complete after") {
            stop.store(true, Ordering::Relaxed);
        } else if line.contains("paused before shutdown") {
            // The last run under updates finishes; then the quiet ones.
            if let Some(loader) = loader.take() {
                let (rows, errors) = loader.join().unwrap_or_default();
                figures.rows.extend(rows);
                figures.errors.extend(errors);
            }
            for pipeline in PIPELINES {
                let (rows, errors) = benchmark(port, requests, pipeline, false);
                figures.rows.extend(rows);
                figures.errors.extend(errors);
            }
            if let Some(probe) = probe.take() {
                replies = Some(probe.finish());
            }
            let _ = input.write_all(b"\n");
            let _ = input.flush();
        }
    })?;
    let log = output_dir().join("logs").join(format!("{arch}-redis.log"));
    std::fs::write(&log, &outcome.output)?;
    if let Some(failure) = failure {
        bail!("the probe did not connect: {failure} (serial log: {})", log.display());
    }
    let Some((replies, sent)) = replies else {
        bail!("the demo never paused before shutdown (serial log: {})", log.display());
    };
    let blackouts = kernel_blackouts(&outcome.output, updates, &log)?;
    figures.probes = (replies.len() as u64, sent);
    figures.pauses = windows
        .iter()
        .map(|&(generation, start, end)| Pause {
            generation,
            client_pause_us: longest_gap(&replies, start, end),
            kernel_blackout_us: blackouts.iter().find(|(found, _)| *found == generation).map_or(0, |&(_, us)| us),
        })
        .collect();
    Ok(figures)
}

/// The median of `values` (0 for none).
fn median_f64(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The report's section.
pub fn section(text: &mut String, figures: &RedisFigures, requests: u32) {
    text.push_str("\n## Redis clients\n\n");
    let _ = writeln!(
        text,
        "redis-benchmark (`-t set,get -n {requests} -c {CLIENTS} --csv`, plain and `-P 16`) against kvstore on the \
         guest's port 6379, forwarded to 127.0.0.1, again and again while {} updates {INTERVAL_MS} ms apart run, \
         then once more with the machine quiet. Medians over the runs; the worst latency is the worst of any run.\n",
        figures.pauses.len()
    );
    text.push_str("| test | pipeline | while | runs | requests/s | p50 | p99 | worst |\n|---|---:|---|---:|---:|---:|---:|---:|\n");
    for is_during_updates in [false, true] {
        for pipeline in PIPELINES {
            for test in ["SET", "GET"] {
                let rows: Vec<&Row> = figures
                    .rows
                    .iter()
                    .filter(|row| {
                        row.test == test && row.pipeline == pipeline && row.is_during_updates == is_during_updates
                    })
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let column =
                    |pick: fn(&Row) -> f64| median_f64(&mut rows.iter().map(|row| pick(row)).collect::<Vec<_>>());
                let worst = rows.iter().map(|row| row.max_ms).fold(0.0, f64::max);
                let _ = writeln!(
                    text,
                    "| {test} | {pipeline} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.1} ms |",
                    if is_during_updates { "updates" } else { "quiet" },
                    rows.len(),
                    column(|row| row.rps),
                    column(|row| row.p50_ms),
                    column(|row| row.p99_ms),
                    worst
                );
            }
        }
    }
    let _ = writeln!(
        text,
        "\nA probe connection sent a PING every {} ms: {} of {} answered. Per update, the longest it waited \
         beside the kernel's blackout:\n",
        PROBE_INTERVAL.as_millis(),
        figures.probes.0,
        figures.probes.1
    );
    text.push_str("| update | client pause | kernel blackout |\n|---:|---:|---:|\n");
    for pause in &figures.pauses {
        let _ = writeln!(
            text,
            "| {} | {} ms | {} ms |",
            pause.generation,
            ms(pause.client_pause_us),
            ms(pause.kernel_blackout_us)
        );
    }
    let steady = |pick: fn(&Pause) -> u64| {
        median(
            &mut figures
                .pauses
                .iter()
                .filter(|pause| pause.generation >= FIRST_STEADY_UPDATE)
                .map(pick)
                .collect::<Vec<_>>(),
        )
    };
    let _ = writeln!(
        text,
        "\nSteady median (updates {FIRST_STEADY_UPDATE} and up): client pause {} ms, kernel blackout {} ms; worst \
         client pause {} ms. redis-benchmark error lines: {}.",
        ms(steady(|pause| pause.client_pause_us)),
        ms(steady(|pause| pause.kernel_blackout_us)),
        ms(figures.pauses.iter().map(|pause| pause.client_pause_us).max().unwrap_or(0)),
        figures.errors.len()
    );
    for error in figures.errors.iter().take(5) {
        let _ = writeln!(text, "- `{error}`");
    }
}

/// One CSV line per redis-benchmark result.
pub fn csv(arch: Arch, figures: &RedisFigures) -> String {
    let mut text = String::from("arch,test,pipeline,during_updates,rps,p50_ms,p99_ms,max_ms\n");
    for row in &figures.rows {
        let _ = writeln!(
            text,
            "{arch},{},{},{},{:.2},{:.3},{:.3},{:.3}",
            row.test, row.pipeline, row.is_during_updates, row.rps, row.p50_ms, row.p99_ms, row.max_ms
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmarks_csv_is_read_and_errors_kept() {
        let output = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                      \"SET\",\"2509.41\",\"0.791\",\"0.608\",\"0.727\",\"1.143\",\"1.887\",\"10.103\"\n\
                      Error: Server closed the connection\n\
                      \"GET\",\"2195.39\",\"0.901\",\"0.584\",\"0.791\",\"1.447\",\"1.631\",\"6.575\"\n";
        let (rows, other) = parse_csv(output, 16, true);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].test, "SET");
        assert_eq!((rows[0].rps, rows[0].p50_ms, rows[0].p99_ms, rows[0].max_ms), (2509.41, 0.727, 1.887, 10.103));
        assert_eq!((rows[1].pipeline, rows[1].is_during_updates), (16, true));
        assert_eq!(other, ["Error: Server closed the connection"]);
    }

    #[test]
    fn the_section_lists_quiet_and_updating_runs_and_every_update() {
        let row = |test: &str, pipeline, during, rps| Row {
            test: test.into(),
            pipeline,
            is_during_updates: during,
            rps,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 30.0,
        };
        let figures = RedisFigures {
            rows: vec![row("SET", 1, false, 2000.0), row("SET", 1, true, 1500.0), row("SET", 1, true, 1700.0)],
            pauses: vec![Pause { generation: 1, client_pause_us: 250_000, kernel_blackout_us: 200_000 }],
            errors: vec![],
            probes: (900, 900),
        };
        let mut text = String::new();
        section(&mut text, &figures, 1000);
        assert!(text.contains("| SET | 1 | quiet | 1 | 2000 | 1.00 ms | 2.00 ms | 30.0 ms |"), "{text}");
        assert!(text.contains("| SET | 1 | updates | 2 | 1700 |"), "{text}");
        assert!(text.contains("| 1 | 250.00 ms | 200.00 ms |"), "{text}");
        assert!(text.contains("900 of 900 answered"));
    }
}
