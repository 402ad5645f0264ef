//! What `kernel_info` tells a service about the kernel it runs on: the
//! kernel's version, how many updates led to it since the cold boot, and
//! the most recent of those updates with their blackouts. The kernel
//! writes [`KernelInfo::encode`]'s bytes into the caller's buffer; the
//! service reads them with [`KernelInfo::decode`]. Fixed little-endian
//! layout (all words `u64`):
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `BTNINFO1` |
//! | 8 | 16 | the kernel's version, NUL-padded UTF-8 |
//! | 24 | 8 | generation: updates since the cold boot (0 on a cold boot) |
//! | 32 | 8 | how many update records follow (at most [`MAX_UPDATES`]) |
//! | 40 | 64 each | records, oldest first: generation, blackout in microseconds, bytes preserved, sub-FDTs, the version updated from (16 bytes), to (16 bytes) |

/// The most update records `kernel_info` gives.
pub const MAX_UPDATES: usize = 16;
/// Bytes of a version field.
pub const VERSION_BYTES: usize = 16;
const MAGIC: &[u8; 8] = b"BTNINFO1";
const HEADER_BYTES: usize = 40;
const RECORD_BYTES: usize = 64;
/// The size of the whole answer: a buffer this long always suffices.
pub const KERNEL_INFO_BYTES: usize = HEADER_BYTES + MAX_UPDATES * RECORD_BYTES;

/// A version string in a fixed field (longer ones are cut at a character
/// boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    bytes: [u8; VERSION_BYTES],
}

impl Version {
    /// `text`, cut to fit.
    pub fn new(text: &str) -> Version {
        let mut end = text.len().min(VERSION_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; VERSION_BYTES];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        Version { bytes }
    }

    /// The text (empty if the field is not UTF-8).
    pub fn as_str(&self) -> &str {
        let end = self.bytes.iter().position(|byte| *byte == 0).unwrap_or(VERSION_BYTES);
        core::str::from_utf8(&self.bytes[..end]).unwrap_or("")
    }
}

/// One update that led to the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateSummary {
    /// Its generation (1 for the first update after the cold boot).
    pub generation: u64,
    /// Its blackout: from the previous kernel's freeze to the first service
    /// running again, in microseconds.
    pub blackout_us: u64,
    /// Bytes of memory it preserved.
    pub preserved_bytes: u64,
    /// Sub-FDTs it handed over.
    pub sub_fdts: u64,
    /// The version it updated from.
    pub from: Version,
    /// The version it updated to.
    pub to: Version,
}

/// What `kernel_info` answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelInfo {
    /// The running kernel's version.
    pub version: Version,
    /// Updates since the cold boot.
    pub generation: u64,
    /// The most recent updates, oldest first (the last is this kernel's).
    pub updates: [UpdateSummary; MAX_UPDATES],
    /// How many of `updates` are real.
    pub update_count: usize,
}

fn word(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn version(bytes: &[u8], at: usize) -> Option<Version> {
    let field: [u8; VERSION_BYTES] = bytes.get(at..at + VERSION_BYTES)?.try_into().ok()?;
    Some(Version { bytes: field })
}

impl KernelInfo {
    /// The updates recorded.
    pub fn updates(&self) -> &[UpdateSummary] {
        &self.updates[..self.update_count.min(MAX_UPDATES)]
    }

    /// The last update (the one that started this kernel), if any.
    pub fn last_update(&self) -> Option<&UpdateSummary> {
        self.updates().last()
    }

    /// Writes the answer into `out` (at least [`KERNEL_INFO_BYTES`] long);
    /// the bytes written.
    pub fn encode(&self, out: &mut [u8; KERNEL_INFO_BYTES]) -> usize {
        out.fill(0);
        out[..8].copy_from_slice(MAGIC);
        out[8..24].copy_from_slice(&self.version.bytes);
        out[24..32].copy_from_slice(&self.generation.to_le_bytes());
        let updates = self.updates();
        out[32..40].copy_from_slice(&(updates.len() as u64).to_le_bytes());
        for (index, update) in updates.iter().enumerate() {
            let at = HEADER_BYTES + index * RECORD_BYTES;
            let record = &mut out[at..at + RECORD_BYTES];
            record[0..8].copy_from_slice(&update.generation.to_le_bytes());
            record[8..16].copy_from_slice(&update.blackout_us.to_le_bytes());
            record[16..24].copy_from_slice(&update.preserved_bytes.to_le_bytes());
            record[24..32].copy_from_slice(&update.sub_fdts.to_le_bytes());
            record[32..48].copy_from_slice(&update.from.bytes);
            record[48..64].copy_from_slice(&update.to.bytes);
        }
        HEADER_BYTES + updates.len() * RECORD_BYTES
    }

    /// Reads an answer back; `None` for bytes that are not one.
    pub fn decode(bytes: &[u8]) -> Option<KernelInfo> {
        if bytes.get(..8)? != MAGIC {
            return None;
        }
        let count = usize::try_from(word(bytes, 32)?).ok().filter(|count| *count <= MAX_UPDATES)?;
        let mut info = KernelInfo {
            version: version(bytes, 8)?,
            generation: word(bytes, 24)?,
            update_count: count,
            ..Default::default()
        };
        for index in 0..count {
            let at = HEADER_BYTES + index * RECORD_BYTES;
            info.updates[index] = UpdateSummary {
                generation: word(bytes, at)?,
                blackout_us: word(bytes, at + 8)?,
                preserved_bytes: word(bytes, at + 16)?,
                sub_fdts: word(bytes, at + 24)?,
                from: version(bytes, at + 32)?,
                to: version(bytes, at + 48)?,
            };
        }
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KernelInfo {
        let mut info =
            KernelInfo { version: Version::new("0.2.0"), generation: 3, update_count: 2, ..Default::default() };
        info.updates[0] = UpdateSummary {
            generation: 2,
            blackout_us: 17_300,
            preserved_bytes: 30 << 20,
            sub_fdts: 6,
            from: Version::new("0.1.0"),
            to: Version::new("0.2.0"),
        };
        info.updates[1] = UpdateSummary { generation: 3, blackout_us: 16_100, ..info.updates[0] };
        info
    }

    #[test]
    fn the_answer_reads_back() {
        let info = sample();
        let mut bytes = [0; KERNEL_INFO_BYTES];
        let length = info.encode(&mut bytes);
        assert_eq!(length, HEADER_BYTES + 2 * RECORD_BYTES);
        let back = KernelInfo::decode(&bytes[..length]).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.version.as_str(), "0.2.0");
        assert_eq!(back.last_update().map(|update| update.blackout_us), Some(16_100));
        assert_eq!(back.updates()[0].from.as_str(), "0.1.0");
    }

    #[test]
    fn bad_answers_are_refused() {
        let mut bytes = [0; KERNEL_INFO_BYTES];
        let length = sample().encode(&mut bytes);
        // Cut short, a wrong magic, a count past the maximum.
        assert_eq!(KernelInfo::decode(&bytes[..length - 1]), None);
        let mut wrong = bytes;
        wrong[0] = b'X';
        assert_eq!(KernelInfo::decode(&wrong), None);
        let mut many = bytes;
        many[32..40].copy_from_slice(&(MAX_UPDATES as u64 + 1).to_le_bytes());
        assert_eq!(KernelInfo::decode(&many), None);
    }

    #[test]
    fn long_versions_are_cut_at_a_character() {
        assert_eq!(Version::new("0.1.0-a-very-long-name").as_str(), "0.1.0-a-very-lon");
        // 15 ASCII bytes and a two-byte character do not fit 16.
        assert_eq!(Version::new("abcdefghijklmnoé").as_str(), "abcdefghijklmno");
        assert_eq!(Version::default().as_str(), "");
    }
}
