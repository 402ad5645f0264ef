//! Property tests: random valid descriptions round-trip, and no mutation of a valid blob makes the reader panic or accept what the writer would refuse.

use alloc::format;
use alloc::vec::Vec;

use arrayvec::{ArrayString, ArrayVec};
use baton_abi::{Message, PAGE_SIZE, USER_ADDRESS_LIMIT};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use super::run;

/// The kinds backed by memory (a device mapping needs a device record,
/// which the device tests cover).
const MEMORY_KINDS: [MappingKind; 5] =
    [MappingKind::Image, MappingKind::Stack, MappingKind::Heap, MappingKind::Preservable, MappingKind::HandoverFdt];
use crate::{
    Architecture, Mapping, MappingKind, PendingResult, ProcessDescription, SchedulingState, UserRegisters,
    read_processes, write_processes,
};
use crate::{DeviceBar, DeviceBarKind, DeviceRecord};

/// RFLAGS bits a user process may have (IF is added to every value).
const X86_64_USER_FLAGS: u64 = 0x25_0fd7;
/// SPSR_EL1 bits a user process may have.
const AARCH64_USER_FLAGS: u64 = !(0xffff_ffff_0000_0000 | (1 << 20) | 0x3c0 | 0x1f);

fn registers(architecture: Architecture) -> impl Strategy<Value = UserRegisters> {
    let thread_pointer = match architecture {
        Architecture::X86_64 => prop_oneof![0..USER_ADDRESS_LIMIT, 0xffff_8000_0000_0000..=u64::MAX].boxed(),
        Architecture::Aarch64 => any::<u64>().boxed(),
    };
    (
        proptest::array::uniform31(any::<u64>()),
        0..USER_ADDRESS_LIMIT,
        0..=USER_ADDRESS_LIMIT,
        any::<u64>(),
        thread_pointer,
    )
        .prop_map(move |(mut general, instruction_pointer, stack_pointer, flags, thread_pointer)| {
            for register in general.iter_mut().skip(architecture.general_register_count()) {
                *register = 0;
            }
            let flags = match architecture {
                Architecture::X86_64 => flags & X86_64_USER_FLAGS | 1 << 9,
                Architecture::Aarch64 => flags & AARCH64_USER_FLAGS,
            };
            UserRegisters { general, instruction_pointer, stack_pointer, flags, thread_pointer }
        })
}

/// How to build one mapping: a gap before it (in pages, and in folios
/// before each run), its kind, access, folio order and the folios of each run.
#[derive(Debug, Clone)]
struct MappingRecipe {
    gap: u64,
    kind: MappingKind,
    access: u8,
    order: u32,
    run_folios: Vec<u64>,
}

fn mapping_recipe() -> impl Strategy<Value = MappingRecipe> {
    (0..4_u64, proptest::sample::select(MEMORY_KINDS.to_vec()), 0..3_u8, 0..=4_u32, vec(1..4_u64, 1..5))
        .prop_map(|(gap, kind, access, order, run_folios)| MappingRecipe { gap, kind, access, order, run_folios })
}

/// Lay the recipes out one after another in virtual and physical memory,
/// then shuffle them: the reader must not depend on their order.
fn mappings() -> impl Strategy<Value = Vec<Mapping>> {
    vec(mapping_recipe(), 0..7)
        .prop_map(|recipes| {
            let mut virtual_cursor = 0x1000_0000_u64;
            let mut phys_cursor = 0x1_0000_0000_u64;
            let mut mappings = Vec::new();
            for recipe in recipes {
                let order = if recipe.kind == MappingKind::Preservable { recipe.order } else { 0 };
                let folio_bytes = PAGE_SIZE << order;
                let virtual_start = virtual_cursor + recipe.gap * PAGE_SIZE;
                let mut runs = Vec::new();
                for folios in recipe.run_folios {
                    phys_cursor = phys_cursor.next_multiple_of(folio_bytes) + recipe.gap * folio_bytes;
                    runs.push(run(phys_cursor, folios * folio_bytes));
                    phys_cursor += folios * folio_bytes;
                }
                let mut mapping = super::mapping(virtual_start, recipe.kind, "", &runs);
                mapping.is_writable = recipe.access == 1;
                mapping.is_executable = recipe.access == 2;
                mapping.folio_order = order;
                virtual_cursor = virtual_start + mapping.size_bytes;
                mappings.push(mapping);
            }
            mappings
        })
        .prop_shuffle()
}

fn message_buffer() -> impl Strategy<Value = u64> {
    (0..(USER_ADDRESS_LIMIT - 64) / 8 + 1).prop_map(|word| word * 8)
}

fn scheduling() -> impl Strategy<Value = SchedulingState> {
    prop_oneof![
        Just(SchedulingState::Ready),
        message_buffer().prop_map(|message_buffer| SchedulingState::Receiving { message_buffer }),
        (any::<u64>(), message_buffer())
            .prop_map(|(target, message_buffer)| SchedulingState::Calling { target, message_buffer }),
        any::<u64>().prop_map(|until_ns| SchedulingState::Sleeping { until_ns }),
    ]
}

fn mailbox() -> impl Strategy<Value = (Vec<Message>, Vec<u64>)> {
    let message = (any::<u64>(), any::<u64>(), any::<[u64; 6]>()).prop_map(|(label, sender, words)| Message {
        label,
        sender,
        words,
    });
    (vec(message, 0..4), btree_set(any::<u64>(), 0..5).prop_map(|callers| callers.into_iter().collect()))
}

/// A valid process; its id and name are filled in by [`processes`].
fn process(architecture: Architecture) -> impl Strategy<Value = ProcessDescription> {
    let identity = (any::<[u8; 32]>(), any::<u32>(), any::<bool>(), any::<bool>());
    let pending = proptest::option::of((prop_oneof![Just(0_u64), 1..=15_u64], any::<u64>()));
    (identity, registers(architecture), mappings(), scheduling(), pending, mailbox()).prop_map(
        move |(
            (binary_hash, abi_version, is_subscribed, is_privileged),
            registers,
            mappings,
            scheduling,
            pending,
            mailbox,
        )| {
            ProcessDescription {
                service_id: 0,
                name: ArrayString::new(),
                binary_hash,
                abi_version,
                is_subscribed,
                is_privileged,
                architecture,
                registers,
                mappings,
                scheduling,
                pending_result: pending.map(|(status, value)| PendingResult { status, value }),
                queued_messages: mailbox.0.into_iter().collect(),
                answerable: mailbox.1.into_iter().collect(),
                devices: ArrayVec::new(),
                grants: ArrayVec::new(),
            }
        },
    )
}

/// Up to four valid processes of one architecture with distinct ids and names.
fn processes() -> impl Strategy<Value = (Architecture, Vec<ProcessDescription>)> {
    proptest::sample::select(Architecture::ALL.to_vec()).prop_flat_map(|architecture| {
        let names = vec("[a-zA-Z][a-zA-Z0-9,._+-]{0,29}", 4);
        (Just(architecture), vec(process(architecture), 0..5), btree_set(any::<u64>(), 4), names).prop_map(
            |(architecture, mut processes, ids, names)| {
                for (index, ((process, id), name)) in processes.iter_mut().zip(ids).zip(names).enumerate() {
                    process.service_id = id;
                    // A single-digit suffix keeps names distinct.
                    process.name = ArrayString::from(&format!("{name}{index}")).unwrap();
                }
                (architecture, processes)
            },
        )
    })
}

/// Read `blob` for both architectures. Whatever is accepted must be
/// writable again and read back unchanged: the reader accepts nothing the
/// writer would refuse.
fn read_and_check(blob: &[u8]) -> Result<(), TestCaseError> {
    for architecture in Architecture::ALL {
        let Ok(results) = read_processes(blob, architecture) else {
            continue;
        };
        for description in results.into_iter().flatten() {
            let written = write_processes(core::slice::from_ref(&description));
            prop_assert!(written.is_ok(), "accepted but not writable: {:?}", written);
            let again = read_processes(&written.unwrap(), architecture).unwrap().remove(0).unwrap();
            prop_assert_eq!(again, description);
        }
    }
    Ok(())
}

/// Valid device records: a function, its IDs, and BARs in registers of
/// their own (a 64-bit one takes two), naturally aligned, with no device
/// mapping (the device tests cover those).
fn devices() -> impl Strategy<Value = Vec<DeviceRecord>> {
    let bar = (0..5_u8, 0..5_u64, 4..20_u32, 1..1000_u64, any::<u64>());
    let device = (any::<u8>(), 0..32_u8, 0..8_u8, any::<u16>(), any::<u16>(), vec(bar, 0..4));
    vec(device, 0..3).prop_map(|devices| {
        let mut records: Vec<DeviceRecord> = Vec::new();
        for (bus, device, function, vendor_id, device_id, bars) in devices {
            if records.iter().any(|record| (record.bus, record.device, record.function) == (bus, device, function)) {
                continue;
            }
            let mut taken = 0_u8;
            let mut record = DeviceRecord { bus, device, function, vendor_id, device_id, bars: ArrayVec::new() };
            for (index, kind, size_log2, slot, offset) in bars {
                let kind = match kind {
                    0 => DeviceBarKind::Io,
                    1 => DeviceBarKind::Memory32 { is_prefetchable: false },
                    2 => DeviceBarKind::Memory32 { is_prefetchable: true },
                    3 => DeviceBarKind::Memory64 { is_prefetchable: false },
                    _ => DeviceBarKind::Memory64 { is_prefetchable: true },
                };
                let registers: u8 = if matches!(kind, DeviceBarKind::Memory64 { .. }) { 0b11 } else { 0b01 };
                if taken & (registers << index) != 0 {
                    continue;
                }
                taken |= registers << index;
                let size_bytes = 1_u64 << size_log2;
                let bus_address = slot * size_bytes;
                let cpu_address = bus_address + (offset % 16) * (1 << 32);
                record.bars.push(DeviceBar { index, kind, bus_address, cpu_address, size_bytes });
            }
            records.push(record);
        }
        records
    })
}

proptest! {
    #[test]
    fn device_records_round_trip((architecture, mut processes) in processes(), devices in devices()) {
        if let Some(first) = processes.first_mut() {
            first.devices = devices.into_iter().collect();
        }
        let blob = write_processes(&processes).unwrap();
        let read: Vec<ProcessDescription> =
            read_processes(&blob, architecture).unwrap().into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(read, processes);
    }

    #[test]
    fn valid_descriptions_round_trip((architecture, processes) in processes()) {
        let blob = write_processes(&processes).unwrap();
        let read: Vec<ProcessDescription> =
            read_processes(&blob, architecture).unwrap().into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(read, processes);
    }

    #[test]
    fn mutated_blobs_never_panic(
        (_, processes) in processes(),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        truncation in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut blob = write_processes(&processes).unwrap();
        for (position, byte) in mutations {
            let index = position.index(blob.len());
            blob[index] = byte;
        }
        if let Some(length) = truncation {
            blob.truncate(length.index(blob.len() + 1));
        }
        read_and_check(&blob)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        read_and_check(&bytes)?;
    }

    #[test]
    fn corrupted_samples_never_panic(
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        architecture in proptest::sample::select(Architecture::ALL.to_vec()),
    ) {
        let mut blob = write_processes(&super::sample_processes(architecture)).unwrap();
        for (position, byte) in mutations {
            let index = position.index(blob.len());
            blob[index] = byte;
        }
        read_and_check(&blob)?;
    }
}
