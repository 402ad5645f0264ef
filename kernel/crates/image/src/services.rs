//! The table of services a kernel image embeds, and the rule that decides
//! which running services an update into that image could resume.
//!
//! A Baton kernel carries, beside its KHO-entry note, a note with owner
//! [`BATON_NOTE_NAME`](crate::BATON_NOTE_NAME) and type
//! [`BATON_NOTE_SERVICES`] (section `.note.baton.services`, written by the
//! kernel's build script with [`encode_services`]). Its descriptor, all
//! fields little-endian:
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 4 | table format, [`SERVICES_FORMAT`] |
//! | 4 | 4 | the lowest ABI version the kernel supports |
//! | 8 | 4 | the highest ABI version the kernel supports |
//! | 12 | 4 | record count, at most [`MAX_SERVICE_RECORDS`] |
//! | 16 + 72·i | 32 | record i: name, NUL-padded (1 to 31 bytes) |
//! | 48 + 72·i | 32 | record i: SHA-256 of the service's ELF file |
//! | 80 + 72·i | 4 | record i: ABI version the service was built for |
//! | 84 + 72·i | 4 | record i: flags ([`FLAG_ALWAYS_RESTART`]) |
//!
//! The table of the next image is read as hostile input: every rule maps to
//! one [`ServicesError`] variant.

use arrayvec::{ArrayString, ArrayVec};
use core::fmt;

/// Baton note type: the descriptor is the table of embedded services.
pub const BATON_NOTE_SERVICES: u32 = 0x4b48_4f02;

/// The table format this crate reads and writes.
pub const SERVICES_FORMAT: u32 = 1;

/// The most services a table lists.
pub const MAX_SERVICE_RECORDS: usize = 64;

/// The longest service name (the KHO user-name limit).
pub const MAX_SERVICE_NAME_BYTES: usize = 31;

/// Bytes of the name field of a record (the name, NUL-padded).
const NAME_FIELD_BYTES: usize = 32;

/// Bytes of a content hash.
pub const HASH_BYTES: usize = 32;

const HEADER_BYTES: usize = 16;

/// Bytes of one record.
pub const SERVICE_RECORD_BYTES: usize = NAME_FIELD_BYTES + HASH_BYTES + 8;

/// Record flag: the service asked to be restarted by every update, never
/// resumed.
pub const FLAG_ALWAYS_RESTART: u32 = 1;

/// One embedded service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Its name.
    pub name: ArrayString<MAX_SERVICE_NAME_BYTES>,
    /// SHA-256 of its ELF file.
    pub hash: [u8; HASH_BYTES],
    /// The ABI version it was built for.
    pub abi_version: u32,
    /// It asked to be restarted by every update.
    pub is_always_restarted: bool,
}

/// A kernel image's table of embedded services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTable {
    /// The ABI versions the kernel supports (lowest, highest).
    pub supported_abi: (u32, u32),
    /// Its services.
    pub services: ArrayVec<ServiceRecord, MAX_SERVICE_RECORDS>,
}

/// Why a table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicesError {
    /// Shorter than its header or than its records.
    Truncated,
    /// Longer than its records.
    TrailingBytes,
    /// A format this crate does not read.
    UnknownFormat(u32),
    /// More records than [`MAX_SERVICE_RECORDS`].
    TooManyRecords(u32),
    /// The supported ABI range is empty (lowest above highest).
    EmptyAbiRange,
    /// A record's name is empty, too long, not NUL-padded or not ASCII
    /// letters, digits, `-` and `_`.
    BadName {
        /// The record's index.
        index: usize,
    },
    /// Two records have the same name.
    DuplicateName {
        /// The second record's index.
        index: usize,
    },
    /// A record has flags this crate does not know.
    UnknownFlags {
        /// The record's index.
        index: usize,
    },
}

impl fmt::Display for ServicesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicesError::Truncated => f.write_str("the service table is truncated"),
            ServicesError::TrailingBytes => f.write_str("the service table has bytes after its records"),
            ServicesError::UnknownFormat(format) => write!(f, "unknown service table format {format}"),
            ServicesError::TooManyRecords(count) => {
                write!(f, "{count} services listed, at most {MAX_SERVICE_RECORDS} allowed")
            }
            ServicesError::EmptyAbiRange => f.write_str("the supported ABI range is empty"),
            ServicesError::BadName { index } => write!(f, "service record {index} has an invalid name"),
            ServicesError::DuplicateName { index } => write!(f, "service record {index} repeats a name"),
            ServicesError::UnknownFlags { index } => write!(f, "service record {index} has unknown flags"),
        }
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([*field.first()?, *field.get(1)?, *field.get(2)?, *field.get(3)?]))
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME_BYTES
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Reads a table (the descriptor of a [`BATON_NOTE_SERVICES`] note).
pub fn parse_services(descriptor: &[u8]) -> Result<ServiceTable, ServicesError> {
    let header = |offset| u32_at(descriptor, offset).ok_or(ServicesError::Truncated);
    let format = header(0)?;
    if format != SERVICES_FORMAT {
        return Err(ServicesError::UnknownFormat(format));
    }
    let supported_abi = (header(4)?, header(8)?);
    if supported_abi.0 > supported_abi.1 {
        return Err(ServicesError::EmptyAbiRange);
    }
    let count = header(12)?;
    if count as usize > MAX_SERVICE_RECORDS {
        return Err(ServicesError::TooManyRecords(count));
    }
    let records = descriptor.get(HEADER_BYTES..).ok_or(ServicesError::Truncated)?;
    let expected = (count as usize).checked_mul(SERVICE_RECORD_BYTES).ok_or(ServicesError::Truncated)?;
    match records.len().cmp(&expected) {
        core::cmp::Ordering::Less => return Err(ServicesError::Truncated),
        core::cmp::Ordering::Greater => return Err(ServicesError::TrailingBytes),
        core::cmp::Ordering::Equal => {}
    }
    let mut services = ArrayVec::new();
    for (index, record) in records.chunks_exact(SERVICE_RECORD_BYTES).enumerate() {
        let (name_field, rest) = record.split_at(NAME_FIELD_BYTES);
        let (hash_field, rest) = rest.split_at(HASH_BYTES);
        let length = name_field.iter().position(|&byte| byte == 0).unwrap_or(NAME_FIELD_BYTES);
        let (name_bytes, padding) = name_field.split_at(length);
        let name = core::str::from_utf8(name_bytes).ok().filter(|name| is_valid_name(name));
        let name = match name {
            Some(name) if padding.iter().all(|&byte| byte == 0) => name,
            _ => return Err(ServicesError::BadName { index }),
        };
        if services.iter().any(|other: &ServiceRecord| other.name.as_str() == name) {
            return Err(ServicesError::DuplicateName { index });
        }
        let abi_version = u32_at(rest, 0).ok_or(ServicesError::Truncated)?;
        let flags = u32_at(rest, 4).ok_or(ServicesError::Truncated)?;
        if flags & !FLAG_ALWAYS_RESTART != 0 {
            return Err(ServicesError::UnknownFlags { index });
        }
        let mut hash = [0; HASH_BYTES];
        hash.copy_from_slice(hash_field);
        let name = ArrayString::from(name).map_err(|_| ServicesError::BadName { index })?;
        let record = ServiceRecord { name, hash, abi_version, is_always_restarted: flags & FLAG_ALWAYS_RESTART != 0 };
        services.try_push(record).map_err(|_| ServicesError::TooManyRecords(count))?;
    }
    Ok(ServiceTable { supported_abi, services })
}

/// Writes a table: the inverse of [`parse_services`] (used by the kernel's
/// build script). Refuses what the parser would refuse.
#[cfg(any(test, feature = "std"))]
pub fn encode_services(table: &ServiceTable) -> Result<alloc::vec::Vec<u8>, ServicesError> {
    let mut bytes = alloc::vec::Vec::new();
    for value in [SERVICES_FORMAT, table.supported_abi.0, table.supported_abi.1, table.services.len() as u32] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    for record in &table.services {
        let mut name = [0u8; NAME_FIELD_BYTES];
        name.get_mut(..record.name.len()).ok_or(ServicesError::Truncated)?.copy_from_slice(record.name.as_bytes());
        bytes.extend_from_slice(&name);
        bytes.extend_from_slice(&record.hash);
        bytes.extend_from_slice(&record.abi_version.to_le_bytes());
        bytes.extend_from_slice(&u32::from(record.is_always_restarted).to_le_bytes());
    }
    parse_services(&bytes)?;
    Ok(bytes)
}

/// A service running now, as the update rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningService<'a> {
    /// Its name.
    pub name: &'a str,
    /// SHA-256 of its ELF file.
    pub hash: &'a [u8; HASH_BYTES],
    /// The ABI version it was built for.
    pub abi_version: u32,
    /// It asked to be restarted by every update.
    pub is_always_restarted: bool,
}

/// What an update into an image means for a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The next image embeds a byte-identical binary (or none at all: its
    /// own pages are all a resume needs) and its kernel supports the
    /// service's ABI version: the service can be resumed where it stopped.
    Resumable,
    /// It must restart from the new image and restore its explicit state.
    Restart(RestartReason),
}

/// Why a service restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// The next image embeds a different binary.
    Changed,
    /// The next kernel does not support the service's ABI version.
    AbiUnsupported,
    /// The service (now or in the next image) asks to be restarted.
    OptedOut,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fate::Resumable => "resumable",
            Fate::Restart(RestartReason::Changed) => "restarts (changed)",
            Fate::Restart(RestartReason::AbiUnsupported) => "restarts (ABI not supported)",
            Fate::Restart(RestartReason::OptedOut) => "restarts (always restarted)",
        })
    }
}

/// The rule: what an update into the image whose table is `next` means for
/// `running`.
pub fn fate(running: &RunningService<'_>, next: &ServiceTable) -> Fate {
    let (lowest, highest) = next.supported_abi;
    let embedded = next.services.iter().find(|record| record.name.as_str() == running.name);
    if running.is_always_restarted || embedded.is_some_and(|record| record.is_always_restarted) {
        return Fate::Restart(RestartReason::OptedOut);
    }
    if running.abi_version < lowest || running.abi_version > highest {
        return Fate::Restart(RestartReason::AbiUnsupported);
    }
    match embedded {
        Some(record) if record.hash != *running.hash => Fate::Restart(RestartReason::Changed),
        _ => Fate::Resumable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, hash_byte: u8) -> ServiceRecord {
        ServiceRecord {
            name: ArrayString::from(name).expect("short name"),
            hash: [hash_byte; HASH_BYTES],
            abi_version: 1,
            is_always_restarted: false,
        }
    }

    fn table(records: &[ServiceRecord]) -> ServiceTable {
        ServiceTable { supported_abi: (1, 1), services: records.iter().copied().collect() }
    }

    #[test]
    fn tables_round_trip() {
        let mut restarted = record("kvstore", 7);
        restarted.is_always_restarted = true;
        let original =
            ServiceTable { supported_abi: (1, 3), services: [record("init", 1), restarted].into_iter().collect() };
        let bytes = encode_services(&original).expect("valid");
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * SERVICE_RECORD_BYTES);
        assert_eq!(parse_services(&bytes), Ok(original));
        let empty = table(&[]);
        assert_eq!(parse_services(&encode_services(&empty).expect("valid")), Ok(empty));
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let bytes = encode_services(&table(&[record("init", 0xab)])).expect("valid");
        assert_eq!(&bytes[0..16], &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&bytes[16..21], b"init\0");
        assert_eq!(bytes[48], 0xab);
        assert_eq!(&bytes[80..88], &[1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn hostile_tables_are_refused_by_rule() {
        let good = encode_services(&table(&[record("init", 1), record("counter", 2)])).expect("valid");
        let with = |offset: usize, bytes: &[u8]| {
            let mut copy = good.clone();
            copy[offset..offset + bytes.len()].copy_from_slice(bytes);
            parse_services(&copy)
        };
        assert_eq!(parse_services(&good[..10]), Err(ServicesError::Truncated));
        assert_eq!(parse_services(&good[..good.len() - 1]), Err(ServicesError::Truncated));
        assert_eq!(parse_services(&[good.as_slice(), &[0]].concat()), Err(ServicesError::TrailingBytes));
        assert_eq!(with(0, &2u32.to_le_bytes()), Err(ServicesError::UnknownFormat(2)));
        assert_eq!(with(4, &5u32.to_le_bytes()), Err(ServicesError::EmptyAbiRange));
        assert_eq!(with(12, &65u32.to_le_bytes()), Err(ServicesError::TooManyRecords(65)));
        assert_eq!(with(12, &3u32.to_le_bytes()), Err(ServicesError::Truncated));
        assert_eq!(with(16, &[0]), Err(ServicesError::BadName { index: 0 }));
        assert_eq!(with(16, b"in t"), Err(ServicesError::BadName { index: 0 }));
        assert_eq!(with(16, &[b'x'; 32]), Err(ServicesError::BadName { index: 0 }));
        assert_eq!(with(21, b"x"), Err(ServicesError::BadName { index: 0 }), "bytes after the NUL");
        assert_eq!(with(16 + SERVICE_RECORD_BYTES, b"init\0\0\0\0"), Err(ServicesError::DuplicateName { index: 1 }));
        assert_eq!(with(84, &2u32.to_le_bytes()), Err(ServicesError::UnknownFlags { index: 0 }));
    }

    #[test]
    fn the_rule_resumes_only_identical_supported_services() {
        let next = table(&[record("init", 1), record("kvstore", 2)]);
        let hash = [1; HASH_BYTES];
        let other_hash = [9; HASH_BYTES];
        let running = |name, hash, abi_version, is_always_restarted| RunningService {
            name,
            hash,
            abi_version,
            is_always_restarted,
        };
        assert_eq!(fate(&running("init", &hash, 1, false), &next), Fate::Resumable);
        assert_eq!(fate(&running("kvstore", &other_hash, 1, false), &next), Fate::Restart(RestartReason::Changed));
        assert_eq!(fate(&running("ballast", &other_hash, 1, false), &next), Fate::Resumable, "not embedded: resumed");
        assert_eq!(fate(&running("init", &hash, 2, false), &next), Fate::Restart(RestartReason::AbiUnsupported));
        assert_eq!(fate(&running("init", &hash, 1, true), &next), Fate::Restart(RestartReason::OptedOut));
        let mut opted = next.clone();
        opted.services[0].is_always_restarted = true;
        assert_eq!(fate(&running("init", &hash, 1, false), &opted), Fate::Restart(RestartReason::OptedOut));
    }
}
