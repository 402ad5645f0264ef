//! Writes the valid seed inputs of the cargo-fuzz targets, built with this crate's own writers.
//!
//! ```text
//! cargo run -p baton-kho --features simulated --example kho_fuzz_seeds -- kernel/crates/kho/fuzz/corpus
//! ```
//!
//! The chunk-walker layout must match `fuzz/fuzz_targets/chunk_walker.rs`:
//! byte 0 selects the head page (16: empty list), bytes 1..9 are unused
//! here, and the memory image placed at 16 MiB follows.

use std::path::{Path, PathBuf};

use baton_kho::fdt::SubFdtWriter;
use baton_kho::memory::{PhysMemory, SimulatedMemory};
use baton_kho::serial::serialize;
use baton_kho::{FolioRun, KhoFdtBuilder, PhysRange, PreservationTracker};

const IMAGE_BASE: u64 = 16 << 20;
const IMAGE_SIZE_BYTES: u64 = 64 << 10;

fn write(directory: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(directory).expect("create corpus directory");
    std::fs::write(directory.join(name), bytes).expect("write seed");
}

fn fdt_seeds(directory: &Path) {
    write(directory, "seed-root-empty", &KhoFdtBuilder::new(0).build().expect("root"));
    let mut builder = KhoFdtBuilder::new(0x1000_2000);
    builder.add_user("baton-boot", 0x8000_0000).expect("user");
    builder.add_user("counter", 0x8010_0000).expect("user");
    write(directory, "seed-root-two-users", &builder.build().expect("root"));

    let mut writer = SubFdtWriter::new().expect("writer");
    writer.property_string("compatible", "counter-v1").expect("property");
    writer.property_u64("generation", 3).expect("property");
    let state = writer.begin_node("state").expect("node");
    writer.property_u64("start", 0x4000_0000).expect("property");
    writer.property_u32("pages", 16).expect("property");
    let inner = writer.begin_node("history").expect("node");
    writer.property("raw", &[1, 2, 3, 4, 5]).expect("property");
    writer.end_node(inner).expect("end");
    writer.end_node(state).expect("end");
    write(directory, "seed-sub-fdt", &writer.finish().expect("finish"));
}

/// Serialise `preserve`'s folios into an image at 16 MiB and write a seed.
fn chunk_seed(directory: &Path, name: &str, preserve: &[FolioRun]) {
    let ram = PhysRange::new(0, IMAGE_BASE + IMAGE_SIZE_BYTES);
    let mut memory = SimulatedMemory::new(&[ram], PhysRange::new(IMAGE_BASE, ram.end));
    let mut tracker = PreservationTracker::new();
    for run in preserve {
        tracker.preserve_folio_run(&mut memory, *run).expect("preserve");
    }
    let chunks = serialize(&tracker, &mut memory).expect("serialise");
    let selector = if chunks.head_phys() == 0 {
        16
    } else {
        u8::try_from((chunks.head_phys() - IMAGE_BASE) / 4096).expect("head inside the image")
    };
    let mut image = vec![0_u8; IMAGE_SIZE_BYTES as usize];
    memory.read(IMAGE_BASE, &mut image).expect("read image");
    while image.last() == Some(&0) {
        image.pop();
    }
    let mut seed = vec![selector];
    seed.extend_from_slice(&[0; 8]);
    seed.extend_from_slice(&image);
    write(directory, name, &seed);
}

fn chunk_seeds(directory: &Path) {
    chunk_seed(directory, "seed-empty", &[]);
    chunk_seed(directory, "seed-one-page", &[FolioRun { phys: 0x5000, order: 0, folio_count: 1 }]);
    chunk_seed(
        directory,
        "seed-mixed-orders",
        &[
            FolioRun { phys: 0x1000, order: 0, folio_count: 3 },
            FolioRun { phys: 0x1_0000, order: 2, folio_count: 4 },
            FolioRun { phys: 2 << 20, order: 9, folio_count: 2 },
            FolioRun { phys: 8 << 20, order: 0, folio_count: 1024 },
            FolioRun { phys: 12 << 20, order: 6, folio_count: 16 },
        ],
    );
}

fn main() {
    let corpus =
        std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("kernel/crates/kho/fuzz/corpus"));
    fdt_seeds(&corpus.join("fdt_parser"));
    chunk_seeds(&corpus.join("chunk_walker"));
    println!("seeds written under {}", corpus.display());
}
