//! Measures what the handover costs: bitmap and chunk memory, and serialise/deserialise throughput.
//!
//! Runs on sparse simulated memory, so 256 GiB of "RAM" costs only the
//! bitmap, chunk and FDT pages. Prints Markdown tables and, given a
//! directory as the first argument, writes `memory_cost.csv` and
//! `throughput.csv` there.
//!
//! ```text
//! cargo run --release -p baton-kho --features simulated --example kho_bench -- target/kho-bench
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_kho::memory::SimulatedMemory;
use baton_kho::serial::serialize;
use baton_kho::{FolioRun, IncomingPreservations, PhysRange, PreservationTracker};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, Copy)]
enum Workload {
    /// Every page of memory preserved as its own order-0 folio.
    OrderZero,
    /// Per 2 MiB block, in turn: one order-9 folio, 512 order-0 pages,
    /// 128 order-2 folios, 8 order-6 folios.
    MixedOrders,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::OrderZero => "order 0",
            Self::MixedOrders => "mixed orders (0, 2, 6, 9)",
        }
    }
}

/// Simulated RAM of `preserved_gib` GiB plus 1 GiB above it for metadata.
fn machine(preserved_gib: u64) -> (SimulatedMemory, Vec<PhysRange>) {
    let ram = vec![PhysRange::new(0, (preserved_gib + 1) * GIB)];
    let memory = SimulatedMemory::new(&ram, PhysRange::new(preserved_gib * GIB, (preserved_gib + 1) * GIB));
    (memory, ram)
}

fn populate(memory: &mut SimulatedMemory, preserved_gib: u64, workload: Workload) -> PreservationTracker {
    let mut tracker = PreservationTracker::new();
    match workload {
        Workload::OrderZero => {
            let run = FolioRun { phys: 0, order: 0, folio_count: preserved_gib * GIB / 4096 };
            tracker.preserve_folio_run(memory, run).expect("preserve order-0 run");
        }
        Workload::MixedOrders => {
            for block in 0..preserved_gib * GIB / (2 * MIB) {
                let phys = block * 2 * MIB;
                let (order, folio_count) = match block % 4 {
                    0 => (9, 1),
                    1 => (0, 512),
                    2 => (2, 128),
                    _ => (6, 8),
                };
                tracker
                    .preserve_folio_run(memory, FolioRun { phys, order, folio_count })
                    .expect("preserve mixed block");
            }
        }
    }
    tracker
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn rate(count: f64, duration: Duration) -> f64 {
    count / duration.as_secs_f64()
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    } else {
        format!("{bytes} B")
    }
}

fn human_duration(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros >= 1000.0 { format!("{:.2} ms", micros / 1000.0) } else { format!("{micros:.1} µs") }
}

struct CostRow {
    case: &'static str,
    seed_figure: &'static str,
    folios: u64,
    bitmaps: u64,
    bitmap_bytes: u64,
    chunks: u64,
    chunk_bytes: u64,
}

fn memory_cost() -> Vec<CostRow> {
    let mut rows = Vec::new();

    let (mut memory, _) = machine(16);
    let tracker = populate(&mut memory, 16, Workload::OrderZero);
    let chunks = serialize(&tracker, &mut memory).expect("serialise");
    rows.push(CostRow {
        case: "16 GiB of order-0 folios",
        seed_figure: "at most 512 KiB of bitmaps",
        folios: tracker.total_folio_count(),
        bitmaps: tracker.bitmap_count(),
        bitmap_bytes: tracker.metadata_bytes(),
        chunks: chunks.chunk_count(),
        chunk_bytes: chunks.chunk_count() * 4096,
    });

    let (mut memory, _) = machine(1024);
    let mut tracker = PreservationTracker::new();
    tracker
        .preserve_folio_run(&mut memory, FolioRun { phys: 0, order: 18, folio_count: 1024 })
        .expect("preserve 1 GiB folios");
    let chunks = serialize(&tracker, &mut memory).expect("serialise");
    rows.push(CostRow {
        case: "every 1 GiB folio of a 1 TiB machine",
        seed_figure: "one 512-byte bitmap",
        folios: tracker.total_folio_count(),
        bitmaps: tracker.bitmap_count(),
        bitmap_bytes: tracker.metadata_bytes(),
        chunks: chunks.chunk_count(),
        chunk_bytes: chunks.chunk_count() * 4096,
    });
    rows
}

struct ThroughputRow {
    memory_gib: u64,
    workload: Workload,
    folios: u64,
    bitmaps: u64,
    chunks: u64,
    repetitions: usize,
    serialise: Duration,
    walk: Duration,
    runs: Duration,
    run_count: u64,
}

fn throughput(memory_gib: u64, workload: Workload, repetitions: usize) -> ThroughputRow {
    let (mut memory, ram) = machine(memory_gib);
    let tracker = populate(&mut memory, memory_gib, workload);

    let mut serialise_samples = Vec::new();
    for _ in 0..repetitions {
        let start = Instant::now();
        let chunks = serialize(&tracker, &mut memory).expect("serialise");
        serialise_samples.push(start.elapsed());
        chunks.free(&mut memory);
    }
    let chunks = serialize(&tracker, &mut memory).expect("serialise");

    let mut walk_samples = Vec::new();
    let mut runs_samples = Vec::new();
    let mut run_count = 0;
    for _ in 0..repetitions {
        let start = Instant::now();
        let incoming = IncomingPreservations::walk(&memory, chunks.head_phys(), &ram).expect("walk");
        walk_samples.push(start.elapsed());
        assert_eq!(incoming.remaining_folio_count(), tracker.total_folio_count());

        let start = Instant::now();
        let mut covered_bytes = 0;
        run_count = 0;
        for run in incoming.runs(&memory) {
            covered_bytes += run.expect("run").size_bytes();
            run_count += 1;
        }
        runs_samples.push(start.elapsed());
        assert_eq!(covered_bytes, memory_gib * GIB);
    }
    ThroughputRow {
        memory_gib,
        workload,
        folios: tracker.total_folio_count(),
        bitmaps: tracker.bitmap_count(),
        chunks: chunks.chunk_count(),
        repetitions,
        serialise: median(serialise_samples),
        walk: median(walk_samples),
        runs: median(runs_samples),
        run_count,
    }
}

fn main() {
    let output_directory = std::env::args_os().nth(1).map(PathBuf::from);
    if cfg!(debug_assertions) {
        eprintln!("note: built without optimisations; run with --release for meaningful figures");
    }

    let cost = memory_cost();
    let mut cost_table = String::from(
        "| case | seeds' figure | folios | bitmaps | bitmap memory | chunks | chunk memory |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut cost_csv = String::from("case,folios,bitmaps,bitmap_bytes,chunks,chunk_bytes\n");
    for row in &cost {
        let _ = writeln!(
            cost_table,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.case,
            row.seed_figure,
            row.folios,
            row.bitmaps,
            human_bytes(row.bitmap_bytes),
            row.chunks,
            human_bytes(row.chunk_bytes)
        );
        let _ = writeln!(
            cost_csv,
            "{},{},{},{},{},{}",
            row.case, row.folios, row.bitmaps, row.bitmap_bytes, row.chunks, row.chunk_bytes
        );
    }
    println!("## Memory cost\n\n{cost_table}");

    let mut rows = Vec::new();
    for (memory_gib, repetitions) in [(1, 9), (16, 7), (256, 5)] {
        for workload in [Workload::OrderZero, Workload::MixedOrders] {
            eprintln!("measuring {memory_gib} GiB, {} ...", workload.name());
            rows.push(throughput(memory_gib, workload, repetitions));
        }
    }
    let mut table = String::from(
        "| preserved | workload | folios | bitmaps | chunks | serialise | serialise folios/s | serialise GiB/s | walk + validate | walk folios/s | walk GiB/s | coalesced runs | runs pass | runs folios/s |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut csv = String::from(
        "preserved_gib,workload,folios,bitmaps,chunks,repetitions,serialise_ns,serialise_folios_per_s,serialise_gib_per_s,walk_ns,walk_folios_per_s,walk_gib_per_s,runs,runs_ns,runs_folios_per_s\n",
    );
    for row in &rows {
        let folios = row.folios as f64;
        let gib = row.memory_gib as f64;
        let _ = writeln!(
            table,
            "| {} GiB | {} | {} | {} | {} | {} | {:.3e} | {:.0} | {} | {:.3e} | {:.0} | {} | {} | {:.3e} |",
            row.memory_gib,
            row.workload.name(),
            row.folios,
            row.bitmaps,
            row.chunks,
            human_duration(row.serialise),
            rate(folios, row.serialise),
            rate(gib, row.serialise),
            human_duration(row.walk),
            rate(folios, row.walk),
            rate(gib, row.walk),
            row.run_count,
            human_duration(row.runs),
            rate(folios, row.runs),
        );
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{:.0},{:.1},{},{:.0},{:.1},{},{},{:.0}",
            row.memory_gib,
            row.workload.name(),
            row.folios,
            row.bitmaps,
            row.chunks,
            row.repetitions,
            row.serialise.as_nanos(),
            rate(folios, row.serialise),
            rate(gib, row.serialise),
            row.walk.as_nanos(),
            rate(folios, row.walk),
            rate(gib, row.walk),
            row.run_count,
            row.runs.as_nanos(),
            rate(folios, row.runs),
        );
    }
    println!("## Throughput (median of 9 / 7 / 5 repetitions)\n\n{table}");

    if let Some(directory) = output_directory {
        std::fs::create_dir_all(&directory).expect("create output directory");
        std::fs::write(directory.join("memory_cost.csv"), cost_csv).expect("write memory_cost.csv");
        std::fs::write(directory.join("throughput.csv"), csv).expect("write throughput.csv");
        eprintln!("wrote {}", directory.display());
    } else {
        eprintln!("no output directory given: CSV not written");
    }
}
