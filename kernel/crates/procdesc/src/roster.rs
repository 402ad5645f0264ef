//! The roster: the `baton,roster-v1` sub-FDT listing every service that ran
//! when the previous kernel froze, resumed or not.
//!
//! A process description says how to resume a process; the roster says
//! what to do with every service, including those that restart: its id (a
//! restarted service keeps it, so callers keep reaching it), its name, the
//! argument it was started with, its privilege, the update rule's verdict,
//! and the messages it had not yet received (delivered to the new
//! instance, so a call that was never received is never lost). When a
//! resumed service's description is refused, the roster is what restarts
//! it.
//!
//! ```text
//! / {
//!     compatible = "baton,roster-v1";
//!     format-version = <u32 1>;
//!     service@<service id, lowercase hex> {      // at most 64
//!         service-id = <u64>; name = "…"; start-argument = <u64>;
//!         service-flags = <u32>;                  // SERVICE_FLAG_PRIVILEGED
//!         fate = <u32>;                           // 1 resume, 2 restart
//!         message@<position, hex> {               // at most 16
//!             label, sender, words;
//!         };
//!     };
//! };
//! ```
//!
//! The roster is read whole or refused whole ([`RosterError`]): without a
//! trustworthy list the next kernel starts services as on a cold boot.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::unwrap_used)]

use alloc::format;
use alloc::vec::Vec;

use arrayvec::{ArrayString, ArrayVec};
use baton_abi::{MAX_NAME_BYTES, MESSAGE_WORDS, Message};
use baton_kho::fdt::{FdtWriteError, SubFdtWriter, is_valid_user_name, native_u32, native_u64, parse_fdt};

use crate::description::{MAX_PROCESSES, MAX_QUEUED_MESSAGES};
use crate::wire::{FORMAT_VERSION_PROPERTY, SERVICE_FLAG_PRIVILEGED};

/// The roster's `compatible` string.
pub const ROSTER_COMPATIBLE: &str = "baton,roster-v1";
/// The roster format this crate reads and writes.
pub const ROSTER_FORMAT_VERSION: u32 = 1;

/// What the update rule decided for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It is resumed from its process description.
    Resume,
    /// It is started again from the new image.
    Restart,
}

impl Fate {
    /// The number in the `fate` property.
    pub const fn number(self) -> u32 {
        match self {
            Fate::Resume => 1,
            Fate::Restart => 2,
        }
    }

    fn from_number(number: u32) -> Option<Fate> {
        [Fate::Resume, Fate::Restart].into_iter().find(|fate| fate.number() == number)
    }
}

/// One service of the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    /// Its id, kept by a restarted service too.
    pub service_id: u64,
    /// Its name (an embedded service, a valid KHO user name).
    pub name: ArrayString<MAX_NAME_BYTES>,
    /// The argument it was started with (a restart passes it again).
    pub start_argument: u64,
    /// May use the privileged calls.
    pub is_privileged: bool,
    /// The rule's verdict.
    pub fate: Fate,
    /// Messages it had not received, oldest first (empty for a resumed
    /// service: its description carries its mailbox).
    pub messages: ArrayVec<Message, MAX_QUEUED_MESSAGES>,
}

/// Why a roster was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterError {
    /// Not a well-formed FDT.
    Structure,
    /// `compatible` is missing or another format's.
    Incompatible,
    /// `format-version` is missing, malformed or not 1.
    UnsupportedVersion,
    /// More than [`MAX_PROCESSES`] services, or more than
    /// [`MAX_QUEUED_MESSAGES`] messages for one.
    TooMany,
    /// A property is missing, repeated, unknown or of the wrong size.
    BadProperty,
    /// A name is not a valid KHO user name.
    BadName,
    /// A node's unit address disagrees with its `service-id`.
    IdMismatch,
    /// Two entries share an id or a name.
    Duplicate,
    /// Writing failed (out of memory, or a name the writer refuses).
    Write,
}

impl core::fmt::Display for RosterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RosterError::Structure => "not a well-formed FDT",
            RosterError::Incompatible => "not a baton,roster-v1 blob",
            RosterError::UnsupportedVersion => "unsupported roster format version",
            RosterError::TooMany => "too many services or messages",
            RosterError::BadProperty => "a property is missing, repeated, unknown or malformed",
            RosterError::BadName => "a service name is invalid",
            RosterError::IdMismatch => "a node's unit address is not its service id",
            RosterError::Duplicate => "two services share an id or a name",
            RosterError::Write => "the roster could not be written",
        })
    }
}

impl From<FdtWriteError> for RosterError {
    fn from(_: FdtWriteError) -> Self {
        RosterError::Write
    }
}

/// Writes `entries` as a roster; refuses what [`read_roster`] would refuse.
pub fn write_roster(entries: &[RosterEntry]) -> Result<Vec<u8>, RosterError> {
    check_entries(entries)?;
    let mut writer = SubFdtWriter::new()?;
    writer.property_string("compatible", ROSTER_COMPATIBLE)?;
    writer.property_u32(FORMAT_VERSION_PROPERTY, ROSTER_FORMAT_VERSION)?;
    for entry in entries {
        let node = writer.begin_node(&format!("service@{:x}", entry.service_id))?;
        writer.property_u64("service-id", entry.service_id)?;
        writer.property_string("name", &entry.name)?;
        writer.property_u64("start-argument", entry.start_argument)?;
        writer.property_u32("service-flags", if entry.is_privileged { SERVICE_FLAG_PRIVILEGED } else { 0 })?;
        writer.property_u32("fate", entry.fate.number())?;
        for (position, message) in entry.messages.iter().enumerate() {
            let child = writer.begin_node(&format!("message@{position:x}"))?;
            writer.property_u64("label", message.label)?;
            writer.property_u64("sender", message.sender)?;
            let words: Vec<u8> = message.words.iter().flat_map(|word| word.to_ne_bytes()).collect();
            writer.property("words", &words)?;
            writer.end_node(child)?;
        }
        writer.end_node(node)?;
    }
    Ok(writer.finish()?)
}

fn check_entries(entries: &[RosterEntry]) -> Result<(), RosterError> {
    if entries.len() > MAX_PROCESSES {
        return Err(RosterError::TooMany);
    }
    for (index, entry) in entries.iter().enumerate() {
        if !is_valid_user_name(&entry.name) {
            return Err(RosterError::BadName);
        }
        let earlier = entries.get(..index).unwrap_or_default();
        if earlier.iter().any(|other| other.service_id == entry.service_id || other.name == entry.name) {
            return Err(RosterError::Duplicate);
        }
    }
    Ok(())
}

/// Reads a roster the previous kernel wrote, as hostile input.
pub fn read_roster(bytes: &[u8]) -> Result<Vec<RosterEntry>, RosterError> {
    let fdt = parse_fdt(bytes).map_err(|_| RosterError::Structure)?;
    let root = fdt.find_node("/").ok_or(RosterError::Structure)?;
    let mut compatible = None;
    let mut version = None;
    for property in root.properties() {
        let slot = match property.name {
            "compatible" => &mut compatible,
            FORMAT_VERSION_PROPERTY => &mut version,
            _ => return Err(RosterError::BadProperty),
        };
        if slot.replace(property.value).is_some() {
            return Err(RosterError::BadProperty);
        }
    }
    if compatible.and_then(|value| value.strip_suffix(b"\0")) != Some(ROSTER_COMPATIBLE.as_bytes()) {
        return Err(RosterError::Incompatible);
    }
    if version.and_then(native_u32) != Some(ROSTER_FORMAT_VERSION) {
        return Err(RosterError::UnsupportedVersion);
    }
    if root.children().count() > MAX_PROCESSES {
        return Err(RosterError::TooMany);
    }
    let mut entries = Vec::new();
    for node in root.children() {
        entries.push(read_entry(&node)?);
    }
    check_entries(&entries)?;
    Ok(entries)
}

/// The one value of `name` among `properties`; a repeated one is refused.
fn single<'a>(properties: &[(&'a str, &'a [u8])], name: &str) -> Result<&'a [u8], RosterError> {
    let mut found = properties.iter().filter(|(candidate, _)| *candidate == name);
    match (found.next(), found.next()) {
        (Some(&(_, value)), None) => Ok(value),
        _ => Err(RosterError::BadProperty),
    }
}

fn only_known(properties: &[(&str, &[u8])], known: &[&str]) -> Result<(), RosterError> {
    match properties.iter().all(|(name, _)| known.contains(name)) {
        true => Ok(()),
        false => Err(RosterError::BadProperty),
    }
}

fn read_entry(node: &::fdt::node::FdtNode<'_, '_>) -> Result<RosterEntry, RosterError> {
    let properties: Vec<(&str, &[u8])> = node.properties().map(|property| (property.name, property.value)).collect();
    only_known(&properties, &["service-id", "name", "start-argument", "service-flags", "fate"])?;
    let u64_of = |name| single(&properties, name).and_then(|value| native_u64(value).ok_or(RosterError::BadProperty));
    let u32_of = |name| single(&properties, name).and_then(|value| native_u32(value).ok_or(RosterError::BadProperty));
    let service_id = u64_of("service-id")?;
    let unit = node.name.strip_prefix("service@").and_then(|hex| u64::from_str_radix(hex, 16).ok());
    if unit != Some(service_id) || node.name != format!("service@{service_id:x}") {
        return Err(RosterError::IdMismatch);
    }
    let name_bytes = single(&properties, "name")?.strip_suffix(b"\0").ok_or(RosterError::BadName)?;
    let name = core::str::from_utf8(name_bytes).map_err(|_| RosterError::BadName)?;
    let name = ArrayString::from(name).map_err(|_| RosterError::BadName)?;
    let flags = u32_of("service-flags")?;
    if flags & !SERVICE_FLAG_PRIVILEGED != 0 {
        return Err(RosterError::BadProperty);
    }
    let fate = Fate::from_number(u32_of("fate")?).ok_or(RosterError::BadProperty)?;
    let mut messages = ArrayVec::new();
    for child in node.children() {
        if child.children().next().is_some() || !child.name.starts_with("message@") {
            return Err(RosterError::BadProperty);
        }
        let fields: Vec<(&str, &[u8])> = child.properties().map(|property| (property.name, property.value)).collect();
        only_known(&fields, &["label", "sender", "words"])?;
        let label = single(&fields, "label").and_then(|value| native_u64(value).ok_or(RosterError::BadProperty))?;
        let sender = single(&fields, "sender").and_then(|value| native_u64(value).ok_or(RosterError::BadProperty))?;
        let words_bytes = single(&fields, "words")?;
        if words_bytes.len() != MESSAGE_WORDS * 8 {
            return Err(RosterError::BadProperty);
        }
        let mut words = [0u64; MESSAGE_WORDS];
        for (word, chunk) in words.iter_mut().zip(words_bytes.chunks_exact(8)) {
            *word = native_u64(chunk).ok_or(RosterError::BadProperty)?;
        }
        let mut message = Message::new(label, words);
        message.sender = sender;
        messages.try_push(message).map_err(|_| RosterError::TooMany)?;
    }
    Ok(RosterEntry {
        service_id,
        name,
        start_argument: u64_of("start-argument")?,
        is_privileged: flags & SERVICE_FLAG_PRIVILEGED != 0,
        fate,
        messages,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn entry(id: u64, name: &str, fate: Fate) -> RosterEntry {
        RosterEntry {
            service_id: id,
            name: ArrayString::from(name).unwrap(),
            start_argument: id * 7,
            is_privileged: id == 1,
            fate,
            messages: ArrayVec::new(),
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let mut kvstore = entry(2, "kvstore", Fate::Restart);
        let mut message = Message::new(0x4b56_0001, [1, 2, 3, 4, 5, 6]);
        message.sender = 9;
        kvstore.messages.push(message);
        let entries = [entry(1, "init", Fate::Resume), kvstore, entry(3, "counter", Fate::Resume)];
        let blob = write_roster(&entries).unwrap();
        assert_eq!(read_roster(&blob).unwrap(), entries);
    }

    #[test]
    fn empty_roster_reads_back_empty() {
        assert_eq!(read_roster(&write_roster(&[]).unwrap()).unwrap(), []);
    }

    #[test]
    fn duplicates_are_refused_by_the_writer() {
        let same_id = [entry(1, "init", Fate::Resume), entry(1, "counter", Fate::Resume)];
        assert_eq!(write_roster(&same_id), Err(RosterError::Duplicate));
        let same_name = [entry(1, "init", Fate::Resume), entry(2, "init", Fate::Resume)];
        assert_eq!(write_roster(&same_name), Err(RosterError::Duplicate));
    }

    #[test]
    fn another_format_is_refused() {
        let mut writer = SubFdtWriter::new().unwrap();
        writer.property_string("compatible", "baton,processes-v1").unwrap();
        writer.property_u32(FORMAT_VERSION_PROPERTY, 1).unwrap();
        assert_eq!(read_roster(&writer.finish().unwrap()), Err(RosterError::Incompatible));
    }

    #[test]
    fn a_later_version_is_refused() {
        let mut writer = SubFdtWriter::new().unwrap();
        writer.property_string("compatible", ROSTER_COMPATIBLE).unwrap();
        writer.property_u32(FORMAT_VERSION_PROPERTY, 2).unwrap();
        assert_eq!(read_roster(&writer.finish().unwrap()), Err(RosterError::UnsupportedVersion));
    }

    fn blob_with_service(node: &str, extra: Option<(&str, &[u8])>, fate: u32) -> Vec<u8> {
        let mut writer = SubFdtWriter::new().unwrap();
        writer.property_string("compatible", ROSTER_COMPATIBLE).unwrap();
        writer.property_u32(FORMAT_VERSION_PROPERTY, 1).unwrap();
        let service = writer.begin_node(node).unwrap();
        writer.property_u64("service-id", 5).unwrap();
        writer.property_string("name", "counter").unwrap();
        writer.property_u64("start-argument", 0).unwrap();
        writer.property_u32("service-flags", 0).unwrap();
        writer.property_u32("fate", fate).unwrap();
        if let Some((name, value)) = extra {
            writer.property(name, value).unwrap();
        }
        writer.end_node(service).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn hostile_entries_are_refused() {
        assert!(read_roster(&blob_with_service("service@5", None, 1)).is_ok());
        assert_eq!(read_roster(&blob_with_service("service@6", None, 1)), Err(RosterError::IdMismatch));
        assert_eq!(read_roster(&blob_with_service("service@05", None, 1)), Err(RosterError::IdMismatch));
        assert_eq!(read_roster(&blob_with_service("service@5", None, 3)), Err(RosterError::BadProperty));
        let unknown = Some(("colour", &b"red\0"[..]));
        assert_eq!(read_roster(&blob_with_service("service@5", unknown, 1)), Err(RosterError::BadProperty));
        let repeated = Some(("fate", &1u32.to_ne_bytes()[..]));
        assert_eq!(read_roster(&blob_with_service("service@5", repeated, 1)), Err(RosterError::BadProperty));
        assert_eq!(read_roster(b"not an fdt"), Err(RosterError::Structure));
    }

    #[test]
    fn too_many_services_are_refused() {
        let names: Vec<alloc::string::String> = (0..=MAX_PROCESSES).map(|index| format!("s{index}")).collect();
        let entries: Vec<RosterEntry> =
            names.iter().enumerate().map(|(index, name)| entry(index as u64 + 1, name, Fate::Restart)).collect();
        assert_eq!(write_roster(&entries), Err(RosterError::TooMany));
        assert!(write_roster(&entries[..MAX_PROCESSES]).is_ok());
    }

    #[test]
    fn every_truncation_is_refused_or_reads_a_prefix_without_panicking() {
        let blob = write_roster(&[entry(1, "init", Fate::Resume), entry(2, "kvstore", Fate::Restart)]).unwrap();
        for length in 0..blob.len() {
            let _ = read_roster(&blob[..length]);
        }
        for index in 0..blob.len() {
            let mut damaged = blob.clone();
            damaged[index] ^= 0xff;
            let _ = read_roster(&damaged);
        }
    }
}
