//! The table in preservable memory against a reference map: growth to a
//! million keys, compaction, the handover by directory, the lazy format
//! migration, and hostile directories and blocks.

use super::*;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use proptest::prelude::*;

type Reference = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn keyspace(format: u32) -> Keyspace<HeapMemory> {
    Keyspace::new(HeapMemory::new(), format, [3, 5]).unwrap()
}

/// The keyspace handed over as a restart does: the directory, then a next
/// instance of `format` taking the same memory back.
fn hand_over(keys: Keyspace<HeapMemory>, format: u32) -> Keyspace<HeapMemory> {
    let directory = keys.directory().expect("no migration under way");
    Keyspace::from_directory(keys.into_memory(), &directory, format, [9, 9]).expect("takes the table")
}

fn assert_same(keys: &Keyspace<HeapMemory>, reference: &Reference) {
    assert_eq!(keys.len(), reference.len());
    let used: usize = reference.iter().map(|(key, (value, _))| key.len() + value.len()).sum();
    if keys.info().migrating_keys == 0 {
        assert_eq!(keys.used_bytes(), used);
    }
    for (key, (value, expires_at)) in reference {
        assert_eq!(keys.get(key), Some((value.as_slice(), *expires_at)), "key {key:?}");
    }
    let mut listed = keys.keys();
    listed.sort();
    assert_eq!(listed, reference.keys().cloned().collect::<Vec<_>>());
}

#[test]
fn a_million_keys_fit_and_go_across_in_place() {
    let mut keys = keyspace(2);
    let count = 1_000_000;
    for number in 0..count {
        let key = alloc::format!("key:{number}");
        keys.put(key.as_bytes(), alloc::format!("value:{number}").as_bytes(), None).unwrap();
    }
    assert_eq!(keys.len(), count);
    let info = keys.info();
    // About 48 bytes a record and 16 of index a key: well inside a 1 GiB
    // guest.
    assert!(info.allocated_bytes < 96 << 20, "{} bytes", info.allocated_bytes);
    let blocks_before = keys.blocks();
    let keys = hand_over(keys, 2);
    // The same blocks, nothing copied.
    assert_eq!(keys.blocks(), blocks_before);
    assert_eq!(keys.len(), count);
    for number in (0..count).step_by(997).chain([count - 1]) {
        let key = alloc::format!("key:{number}");
        let value = alloc::format!("value:{number}");
        assert_eq!(keys.get(key.as_bytes()), Some((value.as_bytes(), None)));
    }
    assert_eq!(keys.get(b"key:1000000"), None);
}

#[test]
fn overwritten_and_removed_records_are_compacted_away() {
    let mut keys = keyspace(2);
    let value = alloc::vec![7u8; 300];
    for round in 0..40 {
        for number in 0..2000 {
            let key = alloc::format!("k{number}");
            keys.put(key.as_bytes(), &value, Some(round)).unwrap();
        }
    }
    // 2000 live records of ~330 bytes: the 40 rounds' dead ones are gone.
    let live = keys.info().allocated_bytes;
    assert!(live < 4 << 20, "{live} bytes for 660 KB of records");
    for number in 0..2000 {
        assert!(keys.remove(alloc::format!("k{number}").as_bytes()));
    }
    assert!(keys.is_empty());
    assert!(keys.info().allocated_bytes < 2 << 20, "{} bytes with no key", keys.info().allocated_bytes);
    assert_eq!(keys.used_bytes(), 0);
}

#[test]
fn running_out_of_memory_refuses_the_write_and_keeps_the_rest() {
    let mut memory = HeapMemory::new();
    memory.limit_bytes = 512 << 10;
    let mut keys = Keyspace::new(memory, 2, [1, 2]).unwrap();
    let mut reference = Reference::new();
    let mut refused = false;
    for number in 0..100_000u32 {
        let key = number.to_le_bytes().to_vec();
        match keys.put(&key, b"some value", None) {
            Ok(()) => {
                reference.insert(key, (b"some value".to_vec(), None));
            }
            Err(StoreError::OutOfMemory) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the limit is reached");
    assert_same(&keys, &reference);
}

#[test]
fn scan_returns_every_key_present_throughout_while_the_index_grows() {
    let mut keys = keyspace(2);
    for number in 0..300 {
        keys.put(alloc::format!("old{number}").as_bytes(), b"x", None).unwrap();
    }
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    let mut added = 0;
    loop {
        let (batch, next) = keys.scan(cursor, 10);
        seen.extend(batch);
        // Grow the table under the walk's first steps (several doublings).
        for _ in 0..if added < 8000 { 400 } else { 0 } {
            keys.put(alloc::format!("new{added}").as_bytes(), b"y", None).unwrap();
            added += 1;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    for number in 0..300 {
        assert!(seen.contains(alloc::format!("old{number}").as_bytes()), "old{number} missed");
    }
}

/// A v1 keyspace of `count` keys, some with expiry times.
fn v1_with(count: usize) -> (Keyspace<HeapMemory>, Reference) {
    let mut keys = keyspace(1);
    let mut reference = Reference::new();
    for number in 0..count {
        let key = alloc::format!("key:{number}").into_bytes();
        let value = alloc::format!("v1 value {number}").into_bytes();
        let expires_at = (number % 3 == 0).then_some(number as u64 * 10);
        keys.put(&key, &value, expires_at).unwrap();
        reference.insert(key, (value, expires_at));
    }
    (keys, reference)
}

#[test]
fn a_v1_table_migrates_lazily_with_every_read_right_and_v1_untouched() {
    let (v1, mut reference) = v1_with(5000);
    let directory = v1.directory().unwrap();
    let old_blocks = v1.blocks();
    let memory = v1.into_memory();
    let snapshot: Vec<Vec<u8>> = old_blocks.iter().map(|block| memory.bytes(block).to_vec()).collect();
    let mut keys = Keyspace::from_directory(memory, &directory, 2, [4, 4]).unwrap();
    assert_eq!(keys.info().format, 2);
    assert_eq!(keys.info().migrating_keys, 5000);
    // Every read is right before a single key has moved.
    assert_same(&keys, &reference);
    let mut step = 0;
    while keys.migrate(97) {
        step += 1;
        // Writes, overwrites, removals and expiry changes meanwhile.
        let key = alloc::format!("key:{}", step * 7 % 6000).into_bytes();
        match step % 4 {
            0 => {
                keys.put(&key, b"new", None).unwrap();
                reference.insert(key, (b"new".to_vec(), None));
            }
            1 => assert_eq!(keys.remove(&key), reference.remove(&key).is_some()),
            2 => {
                let had = reference.get_mut(&key).map(|entry| entry.1 = Some(77)).is_some();
                assert_eq!(keys.set_expiry(&key, Some(77)), had);
            }
            _ => {}
        }
        assert_eq!(keys.len(), reference.len(), "step {step}");
        if step % 16 == 0 {
            assert_same(&keys, &reference);
            // The v1 table is as the previous version left it.
            for (block, before) in old_blocks.iter().zip(&snapshot) {
                assert_eq!(keys.memory_mut().bytes(block), before.as_slice(), "v1 block written to");
            }
        }
    }
    assert!(step > 10, "the migration took {step} steps");
    assert_eq!(keys.info().migrating_keys, 0);
    assert_same(&keys, &reference);
    // The v1 blocks are given back when it is done.
    for block in &old_blocks {
        assert!(keys.memory_mut().raw_mut(block.physical).is_none());
    }
    // A v2 table reads as v2 in the next instance.
    let keys = hand_over(keys, 2);
    assert_same(&keys, &reference);
}

#[test]
fn scan_walks_both_tables_while_migrating() {
    let (v1, _) = v1_with(400);
    let directory = v1.directory().unwrap();
    let mut keys = Keyspace::from_directory(v1.into_memory(), &directory, 2, [4, 4]).unwrap();
    keys.migrate(100);
    keys.put(b"fresh", b"1", None).unwrap();
    assert!(keys.remove(b"key:5"));
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    loop {
        let (batch, next) = keys.scan(cursor, 25);
        seen.extend(batch);
        keys.migrate(30);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert!(seen.contains(&b"fresh"[..]));
    assert!(!seen.contains(&b"key:5"[..]), "a removed key is not returned");
    assert_eq!(seen.len(), 400, "399 old keys and the new one");
}

#[test]
fn a_restart_during_a_migration_finishes_it_first_and_flushdb_ends_it() {
    let (v1, reference) = v1_with(1000);
    let directory = v1.directory().unwrap();
    let mut keys = Keyspace::from_directory(v1.into_memory(), &directory, 2, [4, 4]).unwrap();
    keys.migrate(10);
    assert_eq!(keys.directory(), None, "one table at a time is handed over");
    assert!(keys.finish_migration());
    let mut keys = hand_over(keys, 2);
    assert_same(&keys, &reference);
    let (v1, _) = v1_with(100);
    let directory = v1.directory().unwrap();
    let mut again = Keyspace::from_directory(v1.into_memory(), &directory, 2, [4, 4]).unwrap();
    again.clear();
    assert!(again.is_empty() && again.info().migrating_keys == 0);
    keys.clear();
    assert!(keys.is_empty());
}

#[test]
fn a_newer_format_or_a_damaged_directory_is_refused() {
    let (v1, _) = v1_with(50);
    let directory = v1.directory().unwrap();
    let mut memory = v1.into_memory();
    let mut newer = directory.clone();
    newer[8] = 3;
    assert_eq!(Table::from_directory(&mut memory, &newer).err(), Some(TableError::UnknownFormat(3)));
    // A v2 table is not one a v1 build reads.
    let mut v2 = Keyspace::from_directory(memory, &directory, 2, [1, 1]).unwrap();
    assert!(v2.finish_migration());
    let directory = v2.directory().unwrap();
    let mut memory = v2.into_memory();
    assert_eq!(Table::from_directory(&mut memory, &directory).map(|table| table.format()), Ok(2));
    assert!(matches!(Keyspace::from_directory(memory, &directory, 1, [0, 0]), Err(TableError::UnknownFormat(2))));
    // Blocks that are not there, and every cut of the directory.
    assert!(matches!(
        Keyspace::from_directory(HeapMemory::new(), &directory, 2, [0, 0]),
        Err(TableError::CannotRestore(_))
    ));
    let mut memory = HeapMemory::new();
    for cut in 0..directory.len() {
        assert!(Table::from_directory(&mut memory, &directory[..cut]).is_err(), "cut at {cut}");
    }
    assert_eq!(memory.in_use(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn operations_match_a_reference_map(
        operations in proptest::collection::vec((0u8..5, 0u16..300, 0usize..2000), 1..400),
    ) {
        let mut keys = keyspace(2);
        let mut reference = Reference::new();
        for (kind, key, length) in operations {
            let key = alloc::format!("{key}").into_bytes();
            match kind {
                0 | 1 => {
                    let value = alloc::vec![key[0]; length];
                    keys.put(&key, &value, (length % 2 == 0).then_some(length as u64)).unwrap();
                    reference.insert(key, (value, (length % 2 == 0).then_some(length as u64)));
                }
                2 => prop_assert_eq!(keys.remove(&key), reference.remove(&key).is_some()),
                3 => {
                    let had = reference.get_mut(&key).map(|entry| entry.1 = None).is_some();
                    prop_assert_eq!(keys.set_expiry(&key, None), had);
                }
                _ => keys = hand_over(keys, 2),
            }
        }
        assert_same(&keys, &reference);
    }

    #[test]
    fn damaged_blocks_and_directories_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..40),
        in_directory in any::<bool>(),
    ) {
        let (keys, reference) = v1_with(300);
        let mut directory = keys.directory().unwrap();
        let blocks = keys.blocks();
        let mut memory = keys.into_memory();
        for (at, byte) in flips {
            if in_directory {
                let at = at.index(directory.len());
                directory[at] ^= byte;
            } else {
                let block = blocks[at.index(blocks.len())];
                let bytes = memory.raw_mut(block.physical).unwrap();
                let at = at.index(bytes.len());
                bytes[at] ^= byte;
            }
        }
        if let Ok(mut keys) = Keyspace::from_directory(memory, &directory, 2, [1, 1]) {
            // Whatever reads, reads without a panic, and writes still work.
            for key in reference.keys() {
                let _ = keys.get(key);
            }
            let _ = keys.scan(0, 1000);
            while keys.migrate(64) {}
            let _ = keys.keys();
            // (A damaged index may have no free slot: then the write is
            // refused, not lost.)
            if keys.put(b"after", b"damage", None).is_ok() {
                prop_assert_eq!(keys.get(b"after"), Some((&b"damage"[..], None)));
            }
            let _ = keys.remove(b"key:1");
        }
    }
}
