//! Fuzz target: the preserved-memory chunk walker on arbitrary memory contents.
//!
//! Input layout (the seed generator `examples/kho_fuzz_seeds.rs` writes it):
//! byte 0 selects the head: below 16 it is page `byte` of the image, 16
//! means an empty list, anything else takes the head from bytes 1..9
//! (native-endian). Bytes from 9 on are the memory image, placed at 16 MiB.
//! RAM is `[0, 16 MiB + 64 KiB)`, so order-0 bitmaps at 0 describe folios
//! inside RAM and random bits reach the deeper checks.
//!
//! Whatever the walker accepts must be consistent: folios inside RAM,
//! never overlapping each other or the metadata, each taken exactly once.
#![no_main]

use baton_kho::memory::{PhysMemory, SimulatedMemory};
use baton_kho::{Folio, FolioRun, IncomingPreservations, PhysRange};
use libfuzzer_sys::fuzz_target;

const IMAGE_BASE: u64 = 16 << 20;
const IMAGE_SIZE_BYTES: u64 = 64 << 10;
const HEADER_BYTES: usize = 9;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let head = match selector {
        0..16 => IMAGE_BASE + u64::from(selector) * 4096,
        16 => 0,
        _ => {
            let mut raw = [0_u8; 8];
            for (slot, byte) in raw.iter_mut().zip(rest) {
                *slot = *byte;
            }
            u64::from_ne_bytes(raw)
        }
    };
    let image = data.get(HEADER_BYTES..).unwrap_or_default();
    let image = &image[..image.len().min(IMAGE_SIZE_BYTES as usize)];
    let ram = [PhysRange::new(0, IMAGE_BASE + IMAGE_SIZE_BYTES)];
    let mut memory = SimulatedMemory::new(&ram, PhysRange::new(0, 0));
    memory.write(IMAGE_BASE, image).unwrap();

    let Ok(mut incoming) = IncomingPreservations::walk_with_limit(&memory, head, &ram, 64) else {
        return;
    };
    let folios: Vec<Folio> = incoming.folios(&memory).map(Result::unwrap).collect();
    let runs: Vec<FolioRun> = incoming.runs(&memory).map(Result::unwrap).collect();
    assert_eq!(folios.len() as u64, incoming.remaining_folio_count());
    assert_eq!(
        runs.iter().map(|run| run.folio_count).sum::<u64>(),
        incoming.remaining_folio_count()
    );
    let mut sorted = folios.clone();
    sorted.sort_by_key(|folio| folio.phys);
    for pair in sorted.windows(2) {
        assert!(
            pair[0].range().end <= pair[1].phys,
            "overlapping folios accepted: {pair:?}"
        );
    }
    let metadata: Vec<PhysRange> = incoming.metadata_ranges().collect();
    for folio in &folios {
        assert!(
            ram[0].contains_range(&folio.range()),
            "folio outside RAM: {folio:?}"
        );
        assert!(
            !metadata.iter().any(|range| range.overlaps(&folio.range())),
            "folio over metadata"
        );
        assert!(incoming.contains(&memory, folio.phys, folio.order).unwrap());
    }
    for folio in folios.iter().take(256) {
        incoming.take(&mut memory, folio.phys, folio.order).unwrap();
        assert!(incoming.take(&mut memory, folio.phys, folio.order).is_err());
    }
});
