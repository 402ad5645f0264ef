//! kvstore: a key-value store whose data lives in preservable memory and
//! survives kernel updates in place.
//!
//! The table is one preservable folio. On `prepare` the store publishes a
//! sub-FDT naming the folio and its format, and preserves it; after the
//! update it fetches that sub-FDT, restores the folio and carries on. The
//! version-2 build (`format-v2`) keeps a checksum in every record and
//! migrates a version-1 table when it finds one.

#![no_std]
#![no_main]

extern crate alloc;

mod memory;
mod redis;

use alloc::vec::Vec;
use baton_user::kho::{Folio, fetch_sub_fdt};
use baton_user::message::KERNEL_SENDER;
use baton_user::protocol::{self, DecodeBuffers, KvRequest, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use baton_user::{Error, Message, SubFdtWriter, UpdateEvent, UpdateFate, native_u32, native_u64, parse_fdt, syscall};

baton_user::service!(main);

/// Folio order of the table (64 KiB).
const TABLE_ORDER: u32 = 4;
const HEADER_BYTES: usize = 64;
const RECORD_BYTES: usize = 48;
const MAGIC: u64 = 0x4b56_5354_4f52_4521; // "KVSTORE!"
/// Status for writes refused while an update is in progress.
const STATUS_FROZEN: u64 = 4;

#[cfg(not(feature = "format-v2"))]
pub(crate) const FORMAT: u32 = 1;
#[cfg(feature = "format-v2")]
pub(crate) const FORMAT: u32 = 2;

/// One record, independent of its layout in a table.
#[derive(Clone, Copy)]
struct Entry {
    key: [u8; MAX_KEY_BYTES],
    key_length: usize,
    value: [u8; MAX_VALUE_BYTES],
    value_length: usize,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.key[..self.key_length]
    }
    fn value(&self) -> &[u8] {
        &self.value[..self.value_length]
    }
    fn checksum(&self) -> u32 {
        protocol::fnv1a(protocol::fnv1a(0, self.key()), self.value()) as u32
    }
}

/// Reads record `index` of a table in `format`; `None` if unused.
/// Format 1: [used, key_len, value_len, 0, 0u32, key[16], value[24]].
/// Format 2: [key_len, value_len, flags, 0, checksum u32, key[16], value[24]].
fn read_record(table: &[u8], format: u32, index: usize) -> Option<Entry> {
    let offset = HEADER_BYTES + index * RECORD_BYTES;
    let record = table.get(offset..offset + RECORD_BYTES)?;
    let (is_used, key_length, value_length) = match format {
        1 => (record[0] == 1, record[1] as usize, record[2] as usize),
        _ => (record[2] & 1 == 1, record[0] as usize, record[1] as usize),
    };
    if !is_used || key_length > MAX_KEY_BYTES || value_length > MAX_VALUE_BYTES {
        return None;
    }
    let mut entry = Entry { key: [0; MAX_KEY_BYTES], key_length, value: [0; MAX_VALUE_BYTES], value_length };
    entry.key.copy_from_slice(&record[8..24]);
    entry.value.copy_from_slice(&record[24..48]);
    if format == 2 {
        let stored = u32::from_le_bytes([record[4], record[5], record[6], record[7]]);
        if stored != entry.checksum() {
            log::warn!("kvstore: record {index} fails its checksum; dropped");
            return None;
        }
    }
    Some(entry)
}

fn write_record(table: &mut [u8], index: usize, entry: Option<&Entry>) {
    let offset = HEADER_BYTES + index * RECORD_BYTES;
    let record = &mut table[offset..offset + RECORD_BYTES];
    record.fill(0);
    let Some(entry) = entry else { return };
    match FORMAT {
        1 => {
            record[0] = 1;
            record[1] = entry.key_length as u8;
            record[2] = entry.value_length as u8;
        }
        _ => {
            record[0] = entry.key_length as u8;
            record[1] = entry.value_length as u8;
            record[2] = 1;
            record[4..8].copy_from_slice(&entry.checksum().to_le_bytes());
        }
    }
    record[8..24].copy_from_slice(&entry.key);
    record[24..48].copy_from_slice(&entry.value);
}

struct Store {
    folio: Folio,
    capacity: usize,
    is_frozen: bool,
}

impl Store {
    fn table(&mut self) -> &mut [u8] {
        self.folio.bytes_mut()
    }

    fn header_write(&mut self) {
        let capacity = self.capacity as u32;
        let table = self.table();
        table[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        table[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        table[12..16].copy_from_slice(&capacity.to_le_bytes());
    }

    fn entries(&mut self) -> Vec<(usize, Entry)> {
        let capacity = self.capacity;
        let table = self.table();
        (0..capacity).filter_map(|index| read_record(table, FORMAT, index).map(|entry| (index, entry))).collect()
    }

    fn find(&mut self, key: &[u8]) -> Option<(usize, Entry)> {
        self.entries().into_iter().find(|(_, entry)| entry.key() == key)
    }

    fn sorted(&mut self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self.entries().into_iter().map(|(_, entry)| entry).collect();
        entries.sort_by(|a, b| a.key().cmp(b.key()));
        entries
    }

    fn handle(&mut self, request: KvRequest<'_>) -> Message {
        match request {
            KvRequest::Put { key, value } => {
                if self.is_frozen {
                    return protocol::encode_reply(STATUS_FROZEN, &[], &[]);
                }
                let mut entry = Entry {
                    key: [0; MAX_KEY_BYTES],
                    key_length: key.len(),
                    value: [0; MAX_VALUE_BYTES],
                    value_length: value.len(),
                };
                entry.key[..key.len()].copy_from_slice(key);
                entry.value[..value.len()].copy_from_slice(value);
                let slot = match self.find(key) {
                    Some((index, _)) => Some(index),
                    None => {
                        let capacity = self.capacity;
                        let table = self.table();
                        (0..capacity).find(|&index| read_record(table, FORMAT, index).is_none())
                    }
                };
                match slot {
                    Some(index) => {
                        write_record(self.table(), index, Some(&entry));
                        protocol::encode_reply(protocol::STATUS_OK, &[], &[])
                    }
                    None => protocol::encode_reply(protocol::STATUS_FULL, &[], &[]),
                }
            }
            KvRequest::Get { key } => match self.find(key) {
                Some((_, entry)) => protocol::encode_reply(protocol::STATUS_OK, entry.key(), entry.value()),
                None => protocol::encode_reply(protocol::STATUS_NOT_FOUND, &[], &[]),
            },
            KvRequest::Delete { key } => {
                if self.is_frozen {
                    return protocol::encode_reply(STATUS_FROZEN, &[], &[]);
                }
                match self.find(key) {
                    Some((index, _)) => {
                        write_record(self.table(), index, None);
                        protocol::encode_reply(protocol::STATUS_OK, &[], &[])
                    }
                    None => protocol::encode_reply(protocol::STATUS_NOT_FOUND, &[], &[]),
                }
            }
            KvRequest::List { index } => match self.sorted().get(index as usize) {
                Some(entry) => protocol::encode_reply(protocol::STATUS_OK, entry.key(), entry.value()),
                None => protocol::encode_reply(protocol::STATUS_NOT_FOUND, &[], &[]),
            },
            KvRequest::Summary => {
                let entries = self.sorted();
                let checksum = entries
                    .iter()
                    .fold(0, |hash, entry| protocol::fnv1a(protocol::fnv1a(hash, entry.key()), entry.value()));
                protocol::encode_words_reply(
                    protocol::STATUS_OK,
                    [entries.len() as u64, checksum, u64::from(FORMAT), 0, 0, 0],
                )
            }
        }
    }

    /// Publishes the sub-FDT describing the table and preserves the table.
    fn publish(&mut self, redis: Option<baton_resp::HandoverPlace>) -> Result<(), Error> {
        let count = self.entries().len() as u32;
        let fdt = (|| {
            let mut writer = SubFdtWriter::new().ok()?;
            let compatible = if FORMAT == 1 { "baton,kvstore-v1" } else { "baton,kvstore-v2" };
            writer.property_string("compatible", compatible).ok()?;
            writer.property_u64("table", self.folio.physical).ok()?;
            writer.property_u32("order", self.folio.order).ok()?;
            writer.property_u32("entries", count).ok()?;
            if let Some(place) = &redis {
                let value: Vec<u8> = place.to_words().iter().flat_map(|word| word.to_ne_bytes()).collect();
                writer.property("redis-handover", &value).ok()?;
            }
            writer.finish().ok()
        })()
        .ok_or(Error::NoMemory)?;
        match self.folio.preserve() {
            Ok(()) | Err(Error::AlreadyExists) => {}
            Err(error) => return Err(error),
        }
        syscall::kho_publish(&fdt)?;
        log::info!("kvstore: published {count} entries (format {FORMAT}) at {:#x}", self.folio.physical);
        Ok(())
    }
}

/// Where the Redis state the previous instance handed over is, if it did.
/// An instance from before `redis-handover` named one folio in
/// `redis-keyspace`: (physical, order, keyspace bytes[, session bytes]).
fn redis_handover(fdt: &[u8]) -> Option<baton_resp::HandoverPlace> {
    let parsed = parse_fdt(fdt).ok()?;
    let root = parsed.find_node("/")?;
    let words = |value: &[u8]| -> Vec<u64> { value.chunks_exact(8).filter_map(native_u64).collect() };
    if let Some(property) = root.property("redis-handover") {
        let place = baton_resp::HandoverPlace::from_words(&words(property.value));
        if place.is_none() {
            log::warn!("kvstore: the Redis handover's place does not read; starting empty");
        }
        return place;
    }
    let old = words(root.property("redis-keyspace")?.value);
    let (&[physical, order, keyspace], rest) = old.split_first_chunk::<3>()?;
    let sessions = rest.first().copied().unwrap_or(0);
    baton_resp::HandoverPlace::from_words(&[order, keyspace, sessions, physical])
}

/// The table the previous instance handed over, migrated to this format.
fn restore(fdt: Option<&[u8]>) -> Option<Store> {
    let fdt = fdt?;
    let parsed = parse_fdt(fdt).ok()?;
    let root = parsed.find_node("/")?;
    let compatible = root.property("compatible")?.as_str()?;
    let format = match compatible {
        "baton,kvstore-v1" => 1,
        "baton,kvstore-v2" => 2,
        other => {
            log::warn!("kvstore: handed-over table has unknown format '{other}'; starting empty");
            return None;
        }
    };
    let physical = native_u64(root.property("table")?.value)?;
    let order = native_u32(root.property("order")?.value)?;
    let mut folio = match Folio::restore(physical, order) {
        Ok(folio) => folio,
        Err(error) => {
            log::warn!("kvstore: cannot restore the table at {physical:#x}: {error}");
            return None;
        }
    };
    let capacity = (folio.size_bytes() as usize - HEADER_BYTES) / RECORD_BYTES;
    if format == FORMAT {
        log::info!("kvstore: restored format {format} table at {physical:#x}");
        return Some(Store { folio, capacity, is_frozen: false });
    }
    // Migrate into a fresh table in this build's format.
    let old: Vec<Entry> = (0..capacity).filter_map(|index| read_record(folio.bytes_mut(), format, index)).collect();
    let mut store = Store { folio: Folio::allocate(TABLE_ORDER).ok()?, capacity, is_frozen: false };
    store.header_write();
    for (index, entry) in old.iter().enumerate() {
        write_record(store.table(), index, Some(entry));
    }
    let _ = syscall::free_preservable(folio.address);
    log::info!("kvstore: migrated {} entries from format {format} to format {FORMAT}", old.len());
    Some(store)
}

fn main(_argument: u64) -> i32 {
    if let Err(error) = syscall::kho_subscribe() {
        log::warn!("kvstore: cannot subscribe to updates: {error}");
    }
    let fdt = fetch_sub_fdt().ok();
    let handed_over = fdt.and_then(redis_handover).map(redis::restore_handover);
    let mut store = match restore(fdt) {
        Some(store) => store,
        None => {
            let folio = match Folio::allocate(TABLE_ORDER) {
                Ok(folio) => folio,
                Err(error) => {
                    log::warn!("kvstore: cannot allocate its table: {error}");
                    return 1;
                }
            };
            let capacity = (folio.size_bytes() as usize - HEADER_BYTES) / RECORD_BYTES;
            let mut store = Store { folio, capacity, is_frozen: false };
            store.header_write();
            store
        }
    };
    let _ = syscall::kho_done();
    // Read after `kho_done`: the folios are kvstore's again, and the time
    // this takes (it grows with the keyspace) is kvstore's, not the
    // handover's. netd holds the clients' requests meanwhile.
    let redis_keys = handed_over.and_then(redis::take_over);
    log::info!("kvstore: ready (format {FORMAT}, {} entries)", store.entries().len());
    let mut buffers = DecodeBuffers::default();
    // Redis clients, when the machine has a network.
    let mut redis = match syscall::lookup("netd") {
        Ok(netd) => redis::Redis::start(netd, redis_keys),
        Err(_) => None,
    };
    loop {
        let waiting = redis.as_ref().is_some_and(redis::Redis::has_outgoing);
        // While the Redis table migrates, a batch between messages.
        let migrating = redis.as_ref().is_some_and(redis::Redis::is_migrating);
        let received = if migrating {
            syscall::receive_until(syscall::clock())
        } else if waiting {
            syscall::receive_until(syscall::clock() + 1_000_000)
        } else {
            syscall::receive()
        };
        let message = match received {
            Ok(message) => message,
            Err(Error::WouldBlock) => {
                if let Some(redis) = redis.as_mut() {
                    redis.service();
                }
                continue;
            }
            Err(error) => {
                log::warn!("kvstore: receive failed: {error}");
                continue;
            }
        };
        // Running on a new kernel, resumed: writes are taken again (the
        // Redis side follows netd on the same message below).
        if message.sender == KERNEL_SENDER && UpdateEvent::from_label(message.label) == Some(UpdateEvent::Continued) {
            store.is_frozen = false;
        }
        if let Some(redis) = redis.as_mut() {
            if redis.is_doorbell(&message) {
                redis.service();
                continue;
            }
            if message.sender == KERNEL_SENDER && redis.follow(&message) {
                continue;
            }
        }
        if message.sender == KERNEL_SENDER {
            match UpdateEvent::from_label(message.label) {
                Some(UpdateEvent::Prepare) => {
                    // Every request received before the freeze is answered;
                    // a restart takes the keyspace along.
                    let mut handover = None;
                    if let Some(redis) = redis.as_mut() {
                        redis.service();
                        if UpdateFate::from_word(message.words[0]) == UpdateFate::Restarted {
                            handover = redis.prepare_restart();
                        }
                    }
                    store.is_frozen = true;
                    let status = match store.publish(handover) {
                        Ok(()) => 0,
                        Err(error) => {
                            log::warn!("kvstore: cannot publish: {error}");
                            error.number()
                        }
                    };
                    let _ = syscall::kho_ready(UpdateEvent::Prepare, status);
                }
                Some(UpdateEvent::Resumed) => {
                    store.is_frozen = false;
                    if let Some(redis) = redis.as_mut() {
                        // Serving again: what netd held meanwhile too.
                        redis.abort_handover();
                        redis.service();
                    }
                }
                _ => {}
            }
            continue;
        }
        let reply = match protocol::decode_request(&message, &mut buffers) {
            Some(request) => store.handle(request),
            None => protocol::encode_reply(protocol::STATUS_BAD_REQUEST, &[], &[]),
        };
        let _ = syscall::reply(message.sender, &reply);
    }
}
