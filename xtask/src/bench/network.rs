//! The network benchmark: what a client outside the machine sees of an
//! update. A guest with netd (its card on restricted user networking, the
//! echo port forwarded to 127.0.0.1) is updated again and again, spaced by
//! `demo.interval_ms`; meanwhile the host streams numbered lines over one
//! TCP connection at a fixed rate and timestamps every echo. From that:
//! the echo round-trip time outside updates, and per update the longest
//! gap between consecutive echoes (the client-observed blackout), beside
//! the kernel's own blackout figure.
//!
//! TCP, not UDP: QEMU's user networking drops every UDP datagram the guest
//! sends when `restrict=on` (libslirp's `udp_input` refuses them before
//! looking for the forward's socket), and our rules keep the guest
//! restricted. A stream of small TCP segments with Nagle off measures the
//! same gap; a lost segment would be retransmitted, so a loss shows as a
//! longer gap rather than a missing line.

use super::parse::{median, parse_updates};
use super::report::ms;
use super::{FIRST_STEADY_UPDATE, output_dir};
use crate::arch::Arch;
use crate::build::KernelBuild;
use crate::qemu::{Medium, QemuConfig};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time between two lines of the stream.
const SEND_INTERVAL: Duration = Duration::from_millis(5);
/// Time between updates, so the stream runs steadily between them.
const INTERVAL_MS: u32 = 1000;

/// One update as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateGap {
    /// 1 for the first update.
    pub generation: u64,
    /// The longest time between two consecutive echoes around it.
    pub client_gap_us: u64,
    /// The kernel's blackout figure for it.
    pub kernel_blackout_us: u64,
    /// The longest netd went without a poll around it, as netd logged it
    /// (`netd: N us without a poll`; 0 if it logged none).
    pub netd_pause_us: u64,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Default)]
pub struct NetworkFigures {
    /// Round-trip times of the lines sent and echoed outside updates.
    pub rtts_us: Vec<u64>,
    /// Every update.
    pub gaps: Vec<UpdateGap>,
    /// Lines sent.
    pub sent: u64,
    /// Lines echoed back.
    pub echoed: u64,
}

/// Times in microseconds since the stream started.
#[derive(Debug, Default)]
struct Timeline {
    /// When each line was sent, by number.
    sent_us: Vec<u64>,
    /// (line number, when its echo arrived).
    echoed: Vec<(u64, u64)>,
    /// (generation, when the guest said it starts, when it said init is
    /// back).
    windows: Vec<(u64, u64, u64)>,
}

/// The longest gap between consecutive echo arrivals that overlaps
/// `[start_us, end_us]`.
pub(super) fn longest_gap(arrivals_us: &[u64], start_us: u64, end_us: u64) -> u64 {
    arrivals_us
        .windows(2)
        .filter(|pair| pair[1] >= start_us && pair[0] <= end_us)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or(0)
}

/// Turns a timeline and the kernel's blackouts (by generation) into
/// figures. Round trips count only for lines sent and echoed outside
/// every update window (widened by `margin_us` on both sides).
fn analyse(
    timeline: &Timeline,
    kernel_blackouts: &[(u64, u64)],
    netd_pauses: &[(u64, u64)],
    margin_us: u64,
) -> NetworkFigures {
    let mut arrivals: Vec<u64> = timeline.echoed.iter().map(|&(_, at)| at).collect();
    arrivals.sort_unstable();
    let is_quiet =
        |at: u64| timeline.windows.iter().all(|&(_, start, end)| at + margin_us < start || at > end + margin_us);
    let rtts_us = timeline
        .echoed
        .iter()
        .filter_map(|&(number, at)| {
            let sent = *timeline.sent_us.get(usize::try_from(number).ok()?)?;
            (is_quiet(sent) && is_quiet(at)).then(|| at.saturating_sub(sent))
        })
        .collect();
    let gaps = timeline
        .windows
        .iter()
        .map(|&(generation, start, end)| UpdateGap {
            generation,
            client_gap_us: longest_gap(&arrivals, start, end),
            kernel_blackout_us: kernel_blackouts
                .iter()
                .find(|(found, _)| *found == generation)
                .map_or(0, |&(_, blackout)| blackout),
            netd_pause_us: netd_pauses.iter().find(|(found, _)| *found == generation).map_or(0, |&(_, pause)| pause),
        })
        .collect();
    let mut numbers: Vec<u64> = timeline.echoed.iter().map(|&(number, _)| number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    NetworkFigures { rtts_us, gaps, sent: timeline.sent_us.len() as u64, echoed: numbers.len() as u64 }
}

/// The longest pause netd logged during each update, by generation: from
/// init's `demo: update G of` to its `demo: generation G verified`.
fn netd_pauses(output: &str) -> Vec<(u64, u64)> {
    let mut pauses: Vec<(u64, u64)> = Vec::new();
    let mut current = None;
    for line in output.lines() {
        if let Some(position) = line.find("demo: update ") {
            current = line[position..].split_whitespace().nth(2).and_then(|word| word.parse::<u64>().ok());
            if let Some(generation) = current {
                pauses.push((generation, 0));
            }
        } else if line.contains("demo: generation ") {
            current = None;
        } else if let (Some(generation), Some(position)) = (current, line.find("netd: ")) {
            let words: Vec<&str> = line[position..].split_whitespace().collect();
            if words.get(2..5) == Some(&["us", "without", "a"][..])
                && let Some(pause) = words.get(1).and_then(|word| word.parse::<u64>().ok())
                && let Some(entry) = pauses.iter_mut().find(|(found, _)| *found == generation)
            {
                entry.1 = entry.1.max(pause);
            }
        }
    }
    pauses
}

/// The host side of the stream: a sender and a receiver thread on one
/// connection, stopped when the guest's demo pauses.
struct Stream {
    started: Instant,
    timeline: Arc<Mutex<Timeline>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stream: TcpStream,
}

impl Stream {
    fn open(port: u16) -> Result<Stream> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).context("connecting to netd")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let started = Instant::now();
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let micros = move || started.elapsed().as_micros() as u64;
        let sender = {
            let (mut stream, timeline, stop) = (stream.try_clone()?, timeline.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut number = 0u64;
                // Bounded: the guest pauses within minutes; the cap stops a
                // stream whose guest never does.
                while !stop.load(Ordering::Relaxed) && number < 200_000 {
                    let line = format!("{number:010}\n");
                    timeline.lock().unwrap().sent_us.push(micros());
                    if stream.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    number += 1;
                    std::thread::sleep(SEND_INTERVAL);
                }
            })
        };
        let receiver = {
            let (stream, timeline, stop) = (stream.try_clone()?, timeline.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) => break,
                        Ok(_) => {
                            if let Ok(number) = line.trim().parse::<u64>() {
                                timeline.lock().unwrap().echoed.push((number, micros()));
                            }
                        }
                        // A read timeout once the sender stopped ends it;
                        // before, the stream is only slow (an update).
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
            })
        };
        Ok(Stream { started, timeline, stop, threads: vec![sender, receiver], stream })
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Stops sending, waits for the last echoes, closes the connection.
    fn finish(self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        let _ = self.stream.shutdown(Shutdown::Both);
        for thread in self.threads {
            let _ = thread.join();
        }
        Arc::try_unwrap(self.timeline).map(|mutex| mutex.into_inner().unwrap()).unwrap_or_default()
    }
}

/// The kernel's blackout of every update in `output`, (generation,
/// microseconds); an error naming `log` unless there are `updates`.
pub(super) fn kernel_blackouts(output: &str, updates: u32, log: &std::path::Path) -> Result<Vec<(u64, u64)>> {
    let blackouts: Vec<(u64, u64)> =
        parse_updates(output).iter().map(|update| (update.get("generation"), update.get("blackout_us"))).collect();
    if blackouts.len() != updates as usize {
        bail!("{} of {updates} updates reported (serial log: {})", blackouts.len(), log.display());
    }
    Ok(blackouts)
}

/// A guest with netd for the network benchmarks: `updates` updates
/// `interval_ms` apart, pausing before shutdown, the guest's TCP
/// `guest_port` forwarded to a free port on 127.0.0.1. The QEMU command
/// and that host port.
/// A networked guest's memory and the options added to its command line.
#[derive(Debug, Clone, Copy)]
pub(super) struct GuestShape {
    pub memory_mib: u32,
    pub extra_options: &'static str,
}

impl GuestShape {
    /// 512 MiB, nothing added.
    pub const PLAIN: GuestShape = GuestShape { memory_mib: 512, extra_options: "" };
}

pub(super) fn networked_guest(
    arch: Arch,
    kvm: bool,
    kernels: &(KernelBuild, KernelBuild),
    updates: u32,
    interval_ms: u32,
    guest_port: u16,
    GuestShape { memory_mib, extra_options }: GuestShape,
) -> Result<(std::process::Command, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let command_line = format!(
        "demo.updates={updates} demo.shutdown=1 demo.wait=1 demo.interval_ms={interval_ms} {} {extra_options}",
        crate::network::NETD_ASSIGNMENT
    );
    let config = QemuConfig {
        arch,
        medium: Medium::Direct {
            kernel: kernels.0.direct_boot_file().clone(),
            module: Some(kernels.1.elf.clone()),
            command_line,
        },
        memory_mib,
        headless: true,
        kvm,
        extra_args: vec![
            "-netdev".into(),
            format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:{guest_port}"),
            "-device".into(),
            "virtio-net-pci,netdev=net0".into(),
        ],
    };
    let scratch = output_dir().join("scratch");
    Ok((config.command(&scratch)?, port))
}

/// Runs the guest and the stream; `updates` spaced updates.
pub fn run(arch: Arch, kvm: bool, kernels: &(KernelBuild, KernelBuild), updates: u32) -> Result<NetworkFigures> {
    let (command, port) = networked_guest(arch, kvm, kernels, updates, INTERVAL_MS, 7, GuestShape::PLAIN)?;
    let mut stream: Option<Stream> = None;
    let mut timeline = None;
    let mut failure = None;
    let mut window_start = None;
    let mut windows = Vec::new();
    let timeout = Duration::from_secs(120 + 30 * u64::from(updates));
    let outcome = crate::qemu::run_filtered(command, Some(timeout), &mut |line, input| {
        if line.contains("netd: DHCP gave") && stream.is_none() && failure.is_none() {
            match Stream::open(port) {
                Ok(opened) => stream = Some(opened),
                Err(error) => failure = Some(format!("{error:#}")),
            }
        } else if let Some(position) = line.find("demo: update ") {
            let generation = line[position..].split_whitespace().nth(2).and_then(|word| word.parse::<u64>().ok());
            if let (Some(generation), Some(stream)) = (generation, &stream) {
                window_start = Some((generation, stream.now_us()));
            }
        } else if line.contains("demo: init resumed on the new kernel") {
            if let (Some((generation, start)), Some(stream)) = (window_start.take(), &stream) {
                windows.push((generation, start, stream.now_us()));
            }
        } else if line.contains("paused before shutdown") {
            if let Some(stream) = stream.take() {
                timeline = Some(stream.finish());
            }
            let _ = input.write_all(b"\n");
            let _ = input.flush();
        }
    })?;
    let log = output_dir().join("logs").join(format!("{arch}-network.log"));
    std::fs::write(&log, &outcome.output)?;
    if let Some(failure) = failure {
        bail!("the stream did not start: {failure} (serial log: {})", log.display());
    }
    let Some(mut timeline) = timeline else {
        bail!("the demo never paused before shutdown (serial log: {})", log.display());
    };
    timeline.windows = windows;
    let blackouts = kernel_blackouts(&outcome.output, updates, &log)?;
    Ok(analyse(&timeline, &blackouts, &netd_pauses(&outcome.output), 100_000))
}

/// The report's section.
pub fn section(text: &mut String, figures: &NetworkFigures) {
    text.push_str("\n## What a client outside sees\n\n");
    let _ = writeln!(
        text,
        "One TCP connection from the host to netd's echo port (127.0.0.1, forwarded by QEMU's restricted user \
         networking), a numbered line every {} ms, through {} updates spaced {} ms apart. {} lines sent, {} echoed \
         ({} lost).\n",
        SEND_INTERVAL.as_millis(),
        figures.gaps.len(),
        INTERVAL_MS,
        figures.sent,
        figures.echoed,
        figures.sent - figures.echoed.min(figures.sent)
    );
    let mut rtts = figures.rtts_us.clone();
    rtts.sort_unstable();
    let percentile =
        |fraction: f64| rtts.get(((rtts.len() as f64 * fraction) as usize).min(rtts.len().saturating_sub(1)));
    let _ = writeln!(
        text,
        "Echo round trip outside updates: median {} ms, 99th percentile {} ms, worst {} ms ({} lines).\n",
        ms(median(&mut rtts.clone())),
        ms(percentile(0.99).copied().unwrap_or(0)),
        ms(rtts.last().copied().unwrap_or(0)),
        rtts.len()
    );
    text.push_str(
        "| update | longest gap between echoes | netd without a poll | kernel blackout |\n|---:|---:|---:|---:|\n",
    );
    for gap in &figures.gaps {
        let _ = writeln!(
            text,
            "| {} | {} ms | {} ms | {} ms |",
            gap.generation,
            ms(gap.client_gap_us),
            ms(gap.netd_pause_us),
            ms(gap.kernel_blackout_us)
        );
    }
    let steady = |pick: fn(&UpdateGap) -> u64| {
        median(
            &mut figures.gaps.iter().filter(|gap| gap.generation >= FIRST_STEADY_UPDATE).map(pick).collect::<Vec<_>>(),
        )
    };
    let worst = figures.gaps.iter().map(|gap| gap.client_gap_us).max().unwrap_or(0);
    let _ = writeln!(
        text,
        "\nSteady median (updates {FIRST_STEADY_UPDATE} and up): client gap {} ms, kernel blackout {} ms; worst \
         client gap {} ms.",
        ms(steady(|gap| gap.client_gap_us)),
        ms(steady(|gap| gap.kernel_blackout_us)),
        ms(worst)
    );
}

/// One CSV line per update.
pub fn csv(arch: Arch, figures: &NetworkFigures) -> String {
    let mut text = String::from("arch,generation,client_gap_us,netd_pause_us,kernel_blackout_us\n");
    for gap in &figures.gaps {
        let _ = writeln!(
            text,
            "{arch},{},{},{},{}",
            gap.generation, gap.client_gap_us, gap.netd_pause_us, gap.kernel_blackout_us
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_the_longest_silence_around_an_update() {
        let arrivals = [0, 5, 10, 15, 80, 85, 200, 205];
        assert_eq!(longest_gap(&arrivals, 20, 30), 65, "the silence from 15 to 80 spans the window");
        assert_eq!(longest_gap(&arrivals, 150, 160), 115);
        assert_eq!(longest_gap(&arrivals, 300, 400), 0, "nothing around it");
    }

    #[test]
    fn round_trips_leave_out_updates_and_losses_are_counted() {
        let timeline = Timeline {
            sent_us: vec![0, 5_000, 10_000, 500_000, 505_000, 900_000],
            echoed: vec![(0, 1_000), (1, 6_500), (2, 11_000), (3, 700_000), (4, 701_000)],
            windows: vec![(1, 400_000, 690_000)],
        };
        let figures = analyse(&timeline, &[(1, 150_000)], &[(1, 300_000)], 20_000);
        assert_eq!(figures.rtts_us, [1_000, 1_500, 1_000], "lines sent or echoed in an update are left out");
        let expected =
            UpdateGap { generation: 1, client_gap_us: 689_000, kernel_blackout_us: 150_000, netd_pause_us: 300_000 };
        assert_eq!(figures.gaps, [expected]);
        assert_eq!((figures.sent, figures.echoed), (6, 5));
    }

    #[test]
    fn netds_pauses_are_taken_per_update_between_inits_lines() {
        let output = "\
[ 0.1] [INFO  svc] [netd] netd: 25000 us without a poll; the first one after took 0 frame(s) from the card
[ 0.2] [INFO  svc] [init] demo: update 1 of 2 starting
[ 0.3] [INFO  svc] [netd] netd: 31000 us without a poll; the first one after took 2 frame(s) from the card
[ 0.4] [INFO  svc] [netd] netd: 45000 us without a poll; the first one after took 1 frame(s) from the card
[ 0.5] [INFO  svc] [init] demo: generation 1 verified 64 keys
[ 0.6] [INFO  svc] [netd] netd: 99000 us without a poll; the first one after took 0 frame(s) from the card
[ 0.7] [INFO  svc] [init] demo: update 2 of 2 starting
[ 0.8] [INFO  svc] [init] demo: generation 2 verified 64 keys
";
        assert_eq!(netd_pauses(output), [(1, 45_000), (2, 0)], "outside an update's lines nothing counts");
    }

    #[test]
    fn the_section_reports_every_update_and_the_worst() {
        let figures = NetworkFigures {
            rtts_us: vec![900, 1_100, 1_000],
            gaps: (1..=6)
                .map(|generation| UpdateGap {
                    generation,
                    client_gap_us: 40_000 + generation * 1_000,
                    kernel_blackout_us: 20_000,
                    netd_pause_us: 30_000,
                })
                .collect(),
            sent: 100,
            echoed: 100,
        };
        let mut text = String::new();
        section(&mut text, &figures);
        assert!(text.contains("| 1 | 41.00 ms | 30.00 ms | 20.00 ms |"), "{text}");
        assert!(text.contains("median 1.00 ms"), "{text}");
        assert!(text.contains("worst client gap 46.00 ms"), "{text}");
        assert!(text.contains("(0 lost)"), "{text}");
    }
}
