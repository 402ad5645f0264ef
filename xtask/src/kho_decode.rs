//! An independent decoder for a dumped handover (`--dump-kho DIR`): reads
//! the root FDT and walks the preserved-memory map in the saved guest RAM
//! without any of Baton's own KHO code, so a test can check that what the
//! kernel writes is the format docs/handover.md describes.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// `cargo xtask kho-decode`: decode a handover saved with `--dump-kho DIR`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The dump directory.
    directory: PathBuf,
}

impl Args {
    /// Decodes the dump and prints what it holds.
    pub fn run(&self) -> Result<()> {
        let decoded = decode(&self.directory)?;
        println!("compatible: {}", decoded.compatible);
        for (name, address) in &decoded.users {
            println!("user {name}: sub-FDT at {address:#x}");
        }
        println!(
            "{} chunks, {} bitmaps, {} KiB preserved",
            decoded.chunks,
            decoded.bitmaps,
            decoded.preserved_bytes / 1024
        );
        for (order, folios) in &decoded.folios_per_order {
            println!("  order {order}: {folios} folios");
        }
        Ok(())
    }
}

/// What the decoder found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The root's `compatible`.
    pub compatible: String,
    /// KHO users (node names) and their sub-FDT addresses.
    pub users: Vec<(String, u64)>,
    /// Chunk pages walked.
    pub chunks: u64,
    /// Bitmaps referenced.
    pub bitmaps: u64,
    /// Preserved folios counted from the bitmaps, per order.
    pub folios_per_order: Vec<(u32, u64)>,
    /// Bytes preserved.
    pub preserved_bytes: u64,
}

fn be32(bytes: &[u8], offset: usize) -> Result<u32> {
    Ok(u32::from_be_bytes(bytes.get(offset..offset + 4).context("FDT truncated")?.try_into()?))
}

/// (name, value) pairs of FDT properties.
type Properties = Vec<(String, Vec<u8>)>;

/// The root node's properties (name, value) and child nodes' `fdt`
/// properties, read straight from the FDT structure block.
fn read_root(blob: &[u8]) -> Result<(Properties, Properties)> {
    if be32(blob, 0)? != 0xd00d_feed {
        bail!("not an FDT");
    }
    let structure = be32(blob, 8)? as usize;
    let strings = be32(blob, 12)? as usize;
    let mut offset = structure;
    let mut depth = 0;
    let mut current_child = String::new();
    let (mut root, mut children) = (Vec::new(), Vec::new());
    loop {
        let token = be32(blob, offset)?;
        offset += 4;
        match token {
            1 => {
                let end = blob[offset..].iter().position(|&byte| byte == 0).context("node name")? + offset;
                current_child = String::from_utf8_lossy(&blob[offset..end]).into_owned();
                offset = (end + 1).next_multiple_of(4);
                depth += 1;
            }
            2 => depth -= 1,
            3 => {
                let length = be32(blob, offset)? as usize;
                let name_offset = be32(blob, offset + 4)? as usize;
                offset += 8;
                let value = blob.get(offset..offset + length).context("property value")?.to_vec();
                offset = (offset + length).next_multiple_of(4);
                let name_start = strings + name_offset;
                let name_end =
                    blob[name_start..].iter().position(|&byte| byte == 0).context("property name")? + name_start;
                let name = String::from_utf8_lossy(&blob[name_start..name_end]).into_owned();
                match depth {
                    1 => root.push((name, value)),
                    2 => children.push((current_child.clone(), value)),
                    _ => {}
                }
            }
            4 => {}
            9 => return Ok((root, children)),
            other => bail!("unexpected FDT token {other}"),
        }
    }
}

/// Guest RAM from memory.bin and its index.
struct Memory {
    bytes: Vec<u8>,
    index: Vec<(u64, u64, u64)>,
}

impl Memory {
    fn load(directory: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(directory.join("memory-index.txt"))?;
        let parse = |word: &str| u64::from_str_radix(word.trim_start_matches("0x"), 16);
        let mut index = Vec::new();
        for line in text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            index.push((parse(words[0])?, parse(words[1])?, parse(words[2])?));
        }
        Ok(Self { bytes: std::fs::read(directory.join("memory.bin"))?, index })
    }

    fn read(&self, phys: u64, length: u64) -> Result<&[u8]> {
        let &(offset, start, _) = self
            .index
            .iter()
            .find(|&&(_, start, size)| start <= phys && phys + length <= start + size)
            .with_context(|| format!("{phys:#x} is not in the saved RAM"))?;
        let begin = (offset + phys - start) as usize;
        Ok(&self.bytes[begin..begin + length as usize])
    }

    fn u64_at(&self, phys: u64) -> Result<u64> {
        Ok(u64::from_le_bytes(self.read(phys, 8)?.try_into()?))
    }
}

/// Decodes the handover saved in `directory`.
pub fn decode(directory: &Path) -> Result<Decoded> {
    let root = std::fs::read(directory.join("kho-root.dtb")).context("reading kho-root.dtb")?;
    let (properties, children) = read_root(&root)?;
    let property = |name: &str| properties.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let mut decoded = Decoded {
        compatible: String::from_utf8_lossy(&property("compatible").context("no compatible")?)
            .trim_end_matches('\0')
            .to_string(),
        ..Decoded::default()
    };
    for (name, value) in children {
        decoded.users.push((name, u64::from_le_bytes(value.as_slice().try_into().context("fdt is not 8 bytes")?)));
    }
    let map = property("preserved-memory-map").context("no preserved-memory-map")?;
    let mut chunk = u64::from_le_bytes(map.as_slice().try_into().context("preserved-memory-map is not 8 bytes")?);
    let memory = Memory::load(directory)?;
    let mut per_order = std::collections::BTreeMap::new();
    // Chunk: next u64, order u32, count u32, then (phys_start u64, bitmap u64).
    while chunk != 0 {
        decoded.chunks += 1;
        if decoded.chunks > 1 << 20 {
            bail!("chunk list does not end");
        }
        let next = memory.u64_at(chunk)?;
        let header = memory.read(chunk + 8, 8)?;
        let order = u32::from_le_bytes(header[..4].try_into()?);
        let count = u32::from_le_bytes(header[4..].try_into()?);
        for entry in 0..u64::from(count) {
            let bitmap = memory.u64_at(chunk + 16 + entry * 16 + 8)?;
            decoded.bitmaps += 1;
            let bits = memory.read(bitmap, 512)?;
            let set: u64 = bits.iter().map(|byte| u64::from(byte.count_ones())).sum();
            *per_order.entry(order).or_insert(0) += set;
            decoded.preserved_bytes += set * (4096 << order);
        }
        chunk = next;
    }
    decoded.folios_per_order = per_order.into_iter().collect();
    Ok(decoded)
}
