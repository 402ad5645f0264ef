//! Writes the valid seed inputs of the `read_processes` and `read_roster`
//! fuzz targets, built with this crate's own writers.
//!
//! ```text
//! cargo run -p baton-procdesc --example procdesc_fuzz_seeds -- kernel/crates/procdesc/fuzz/corpus
//! ```

use std::path::{Path, PathBuf};

use arrayvec::{ArrayString, ArrayVec};
use baton_abi::Message;
use baton_procdesc::roster::{Fate, RosterEntry, write_roster};
use baton_procdesc::{
    Architecture, DeviceBar, DeviceBarKind, DeviceRecord, Mapping, MappingKind, PendingResult, PhysicalRun,
    ProcessDescription, SchedulingState, UserRegisters, write_processes,
};

const MIB: u64 = 1 << 20;

fn mapping(virtual_start: u64, kind: MappingKind, is_writable: bool, folio_order: u32, runs: &[(u64, u64)]) -> Mapping {
    let runs: Vec<PhysicalRun> =
        runs.iter().map(|&(phys_start, size_bytes)| PhysicalRun { phys_start, size_bytes }).collect();
    Mapping {
        virtual_start,
        size_bytes: runs.iter().map(|run| run.size_bytes).sum(),
        kind,
        is_writable,
        is_executable: kind == MappingKind::Image && !is_writable,
        folio_order,
        grant_id: if kind == MappingKind::Shared { 1 } else { 0 },
        runs,
    }
}

/// A small process: code, a stack in two runs and a preservable region of
/// 2 MiB folios in two runs.
fn process(architecture: Architecture, service_id: u64, name: &str, scheduling: SchedulingState) -> ProcessDescription {
    let phys_base = service_id << 32;
    let mut general = [0_u64; baton_procdesc::MAX_GENERAL_REGISTERS];
    for (index, register) in general.iter_mut().take(architecture.general_register_count()).enumerate() {
        *register = index as u64 * 0x0101;
    }
    let flags = match architecture {
        Architecture::X86_64 => 0x202,
        Architecture::Aarch64 => 0,
    };
    ProcessDescription {
        service_id,
        name: ArrayString::from(name).expect("short name"),
        binary_hash: [service_id as u8; 32],
        abi_version: baton_abi::ABI_VERSION,
        is_subscribed: true,
        is_privileged: service_id == 1,
        architecture,
        registers: UserRegisters {
            general,
            instruction_pointer: 0x40_0100,
            stack_pointer: 0x7fff_fffe_ff00,
            flags,
            thread_pointer: 0,
        },
        mappings: vec![
            mapping(0x40_0000, MappingKind::Image, false, 0, &[(phys_base, 0x2000)]),
            mapping(
                0x7fff_fffe_0000,
                MappingKind::Stack,
                true,
                0,
                &[(phys_base + MIB, 0x8000), (phys_base + 2 * MIB, 0x8000)],
            ),
            mapping(
                0x10_0000_0000,
                MappingKind::Preservable,
                true,
                9,
                &[(phys_base + 4 * MIB, 4 * MIB), (phys_base + 16 * MIB, 2 * MIB)],
            ),
        ],
        scheduling,
        pending_result: None,
        queued_messages: ArrayVec::new(),
        answerable: ArrayVec::new(),
        devices: ArrayVec::new(),
        grants: ArrayVec::new(),
    }
}

/// A driver of a virtio network card at 00:02.0 with one 64-bit BAR,
/// mapped whole.
fn drive_card(process: &mut ProcessDescription) {
    let mut bars = ArrayVec::new();
    bars.push(DeviceBar {
        index: 4,
        kind: DeviceBarKind::Memory64 { is_prefetchable: true },
        bus_address: 0x80_0000_0000,
        cpu_address: 0x80_0000_0000,
        size_bytes: 0x4000,
    });
    process.devices.push(DeviceRecord { bus: 0, device: 2, function: 0, vendor_id: 0x1af4, device_id: 0x1000, bars });
    process.mappings.push(mapping(0x30_0000_0000, MappingKind::Device, true, 0, &[(0x80_0000_0000, 0x4000)]));
}

fn write(directory: &Path, name: &str, processes: &[ProcessDescription]) {
    std::fs::create_dir_all(directory).expect("create corpus directory");
    let blob = write_processes(processes).expect("valid descriptions");
    std::fs::write(directory.join(name), blob).expect("write seed");
}

fn roster_entry(service_id: u64, name: &str, fate: Fate, messages: &[Message]) -> RosterEntry {
    RosterEntry {
        service_id,
        name: ArrayString::from(name).expect("short name"),
        start_argument: service_id * 7,
        is_privileged: service_id == 1,
        fate,
        messages: messages.iter().copied().collect(),
    }
}

fn write_rosters(directory: &Path) {
    std::fs::create_dir_all(directory).expect("create corpus directory");
    let empty = write_roster(&[]).expect("empty roster");
    std::fs::write(directory.join("seed-empty"), empty).expect("write seed");
    let queued = Message { label: 5, sender: 1, words: [1, 2, 3, 4, 5, 6] };
    let entries = [
        roster_entry(1, "init", Fate::Resume, &[]),
        roster_entry(2, "counter", Fate::Resume, &[]),
        roster_entry(3, "kvstore", Fate::Restart, &[queued, queued]),
    ];
    let blob = write_roster(&entries).expect("valid roster");
    std::fs::write(directory.join("seed-demo"), blob).expect("write seed");
}

fn main() {
    let corpus: PathBuf =
        std::env::args_os().nth(1).map(PathBuf::from).expect("usage: procdesc_fuzz_seeds <corpus directory>");
    write_rosters(&corpus.join("read_roster"));
    let directory = corpus.join("read_processes");
    write(&directory, "seed-empty", &[]);

    let mut init = process(Architecture::X86_64, 1, "init", SchedulingState::Ready);
    init.pending_result = Some(PendingResult { status: 0, value: 3 });
    init.answerable.push(2);
    let mut client = process(
        Architecture::X86_64,
        2,
        "client",
        SchedulingState::Calling { target: 1, message_buffer: 0x7fff_fffe_fe00 },
    );
    client.queued_messages.push(Message { label: 5, sender: 3, words: [1, 2, 3, 4, 5, 6] });
    write(&directory, "seed-x86_64-ready-and-calling", &[init, client]);

    let kvstore =
        process(Architecture::Aarch64, 3, "kvstore", SchedulingState::Receiving { message_buffer: 0x7fff_fffe_fe00 });
    let counter =
        process(Architecture::Aarch64, 0x2a, "counter", SchedulingState::Sleeping { until_ns: 1_000_000_000 });
    write(&directory, "seed-aarch64-receiving-and-sleeping", &[kvstore, counter]);

    let mut netd = process(Architecture::X86_64, 4, "netd", SchedulingState::Sleeping { until_ns: 2_000_000_000 });
    drive_card(&mut netd);
    write(&directory, "seed-x86_64-driver", &[netd]);

    // A channel: pinger grants the first 8 KiB of its preservable memory
    // to ponger, which maps it.
    let mut pinger =
        process(Architecture::X86_64, 5, "pinger", SchedulingState::Receiving { message_buffer: 0x7fff_fffe_fe00 });
    pinger.grants.push(baton_procdesc::GrantRecord {
        grant_id: 1,
        peer: ArrayString::from("ponger").expect("short name"),
        virtual_start: 0x10_0000_0000,
        size_bytes: 0x2000,
        peer_virtual_start: Some(0x40_0000_0000),
    });
    let mut ponger =
        process(Architecture::X86_64, 6, "ponger", SchedulingState::Receiving { message_buffer: 0x7fff_fffe_fe00 });
    ponger.mappings.push(mapping(0x40_0000_0000, MappingKind::Shared, true, 0, &[((5 << 32) + 4 * MIB, 0x2000)]));
    write(&directory, "seed-x86_64-channel", &[pinger, ponger]);
}
