//! ballast: preserved state of a chosen size, for the update benchmarks
//! (`cargo xtask bench`) and the tests of large handovers.
//!
//! Its argument (`baton_abi::BallastStart`): the state size in MiB, the
//! folio order, and whether to run the copying baseline. In place (the default) it preserves
//! its state where it is and takes it back with `kho_restore_run`. Copying,
//! it serialises the state into a buffer when told to prepare, hands over
//! only the buffer, and parses it back into fresh memory: what an update
//! costs when state is not preserved in place.
//!
//! The first word of every page holds the page's index mixed with a seed, so
//! after an update the ballast checks every page and says what it found.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use baton_user::kho::fetch_sub_fdt;
use baton_user::message::KERNEL_SENDER;
use baton_user::protocol::{self, label};
use baton_user::{Error, SubFdtWriter, UpdateEvent, UpdateFate, native_u32, native_u64, parse_fdt, syscall};

baton_user::service!(main);

const PAGE: u64 = baton_user::PAGE_SIZE;
/// The largest block one allocation call asks for (the kernel's largest).
const BLOCK_BYTES: u64 = PAGE << baton_user::MAX_USER_FOLIO_ORDER;
const SEED: u64 = 0xba11_a570_0000_0000;
const COMPATIBLE: &str = "baton,ballast-v1";
/// How long after an update the ballast waits before checking its pages.
const VERIFY_DELAY_NS: u64 = 200_000_000;

/// Physically contiguous memory mapped at `address`.
#[derive(Debug, Clone, Copy)]
struct Block {
    address: u64,
    physical: u64,
    bytes: u64,
}

impl Block {
    fn words(&self) -> &'static mut [u64] {
        // SAFETY: `address` maps `bytes` of this service's writable
        // preservable memory (allocated or restored by the kernel, never
        // freed while a `Block` names it), page-aligned, so it holds
        // `bytes / 8` aligned u64s; the ballast is single-threaded and never
        // holds two views of one block at once.
        unsafe { core::slice::from_raw_parts_mut(self.address as *mut u64, (self.bytes / 8) as usize) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Config {
    bytes: u64,
    order: u32,
    copying: bool,
}

impl Config {
    fn from_argument(argument: u64) -> Config {
        let start = baton_user::BallastStart::decode(argument);
        let bytes = u64::from(start.mebibytes.max(1)) << 20;
        // A folio never larger than the smallest block of the state.
        let smallest_block = 1u64 << bytes.trailing_zeros().min(BLOCK_BYTES.trailing_zeros());
        let order = u32::from(start.order).min((smallest_block / PAGE).trailing_zeros());
        Config { bytes, order, copying: start.is_copying }
    }

    fn folios(&self, bytes: u64) -> u64 {
        bytes / (PAGE << self.order)
    }
}

/// `bytes` of fresh preservable memory as blocks of at most 4 MiB, each
/// one kernel allocation (so one physical block).
fn allocate(config: &Config, bytes: u64) -> Result<Vec<Block>, Error> {
    let mut blocks = Vec::new();
    let mut offset = 0;
    while offset < bytes {
        let size = 1 << (bytes - offset).min(BLOCK_BYTES).ilog2();
        let address = syscall::allocate_preservable_run(config.order, config.folios(size))?;
        blocks.push(Block { address, physical: syscall::physical_address(address)?, bytes: size });
        offset += size;
    }
    Ok(blocks)
}

fn fill(blocks: &[Block]) {
    let mut page = 0;
    for block in blocks {
        for word in block.words().iter_mut().step_by((PAGE / 8) as usize) {
            *word = SEED ^ page;
            page += 1;
        }
    }
}

/// Pages whose first word is not what `fill` wrote.
fn damaged_pages(blocks: &[Block]) -> u64 {
    let mut page = 0;
    let mut damaged = 0;
    for block in blocks {
        for word in block.words().iter().step_by((PAGE / 8) as usize) {
            damaged += u64::from(*word != SEED ^ page);
            page += 1;
        }
    }
    damaged
}

/// Copies the contents of `from` into `to` (same total size) with the
/// largest slice copies the two block layouts allow.
fn copy(from: &[Block], to: &[Block]) {
    let mut sources = from.iter().map(|block| block.words());
    let mut source: &[u64] = &[];
    for block in to {
        let mut destination: &mut [u64] = block.words();
        while !destination.is_empty() {
            if source.is_empty() {
                match sources.next() {
                    Some(next) => source = next,
                    None => return,
                }
            }
            let length = source.len().min(destination.len());
            let (head, rest) = destination.split_at_mut(length);
            head.copy_from_slice(&source[..length]);
            destination = rest;
            source = &source[length..];
        }
    }
}

/// Physically adjacent blocks merged: (physical, bytes).
fn runs(blocks: &[Block]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for block in blocks {
        match runs.last_mut() {
            Some((physical, bytes)) if *physical + *bytes == block.physical => *bytes += block.bytes,
            _ => runs.push((block.physical, block.bytes)),
        }
    }
    runs
}

/// The state and, while an update is being prepared in copying mode, the
/// buffer it was serialised into.
struct Ballast {
    config: Config,
    state: Vec<Block>,
    buffer: Vec<Block>,
}

impl Ballast {
    fn prepare(&mut self) -> Result<(), Error> {
        let handed_over = if self.config.copying {
            // The buffer is allocated ahead (at start and after each
            // update), so an update pays for the copies only.
            if self.buffer.is_empty() {
                self.buffer = allocate(&self.config, self.config.bytes)?;
            }
            copy(&self.state, &self.buffer);
            &self.buffer
        } else {
            &self.state
        };
        for block in handed_over {
            match syscall::kho_preserve(block.address, block.bytes) {
                Ok(()) | Err(Error::AlreadyExists) => {}
                Err(error) => return Err(error),
            }
        }
        let mut table = Vec::new();
        for (physical, bytes) in runs(handed_over) {
            table.extend_from_slice(&physical.to_ne_bytes());
            table.extend_from_slice(&bytes.to_ne_bytes());
        }
        let fdt = (|| {
            let mut writer = SubFdtWriter::new().ok()?;
            writer.property_string("compatible", COMPATIBLE).ok()?;
            writer.property_u32("copying", u32::from(self.config.copying)).ok()?;
            writer.property_u32("order", self.config.order).ok()?;
            writer.property_u64("bytes", self.config.bytes).ok()?;
            writer.property("runs", &table).ok()?;
            writer.finish().ok()
        })()
        .ok_or(Error::NoMemory)?;
        syscall::kho_publish(&fdt)
    }

    /// After an abandoned update the buffer stays for the next attempt,
    /// but is no longer preserved.
    fn aborted(&mut self) {
        for block in &self.buffer {
            let _ = syscall::kho_unpreserve(block.address, block.bytes);
        }
    }
}

/// Takes back what the previous instance handed over; `None` when there is
/// nothing (a cold start) or it does not match this configuration.
fn restore(config: &Config) -> Option<Result<Vec<Block>, Error>> {
    let fdt = fetch_sub_fdt().ok()?;
    let parsed = parse_fdt(fdt).ok()?;
    let root = parsed.find_node("/")?;
    if root.property("compatible")?.as_str()? != COMPATIBLE {
        return None;
    }
    let copying = native_u32(root.property("copying")?.value)? != 0;
    let order = native_u32(root.property("order")?.value)?;
    let bytes = native_u64(root.property("bytes")?.value)?;
    if (copying, order, bytes) != (config.copying, config.order, config.bytes) {
        log::warn!("ballast: the handed-over state has another configuration; starting afresh");
        return None;
    }
    let table = root.property("runs")?.value;
    Some((|| {
        let mut pieces = Vec::new();
        for entry in table.chunks_exact(16) {
            let physical = native_u64(&entry[..8]).ok_or(Error::InvalidArgument)?;
            let bytes = native_u64(&entry[8..]).ok_or(Error::InvalidArgument)?;
            let address = syscall::kho_restore_run(physical, config.order, config.folios(bytes))?;
            pieces.push(Block { address, physical, bytes });
        }
        if !config.copying {
            return Ok(pieces);
        }
        // Parse the buffer back into fresh memory, then let it go.
        let state = allocate(config, config.bytes)?;
        copy(&pieces, &state);
        for piece in &pieces {
            let _ = syscall::free_preservable(piece.address);
        }
        Ok(state)
    })())
}

fn main(argument: u64) -> i32 {
    let config = Config::from_argument(argument);
    let _ = syscall::kho_subscribe();
    let restored = restore(&config);
    let _ = syscall::kho_done();
    let mode = if config.copying { "copying" } else { "in place" };
    let state = match restored {
        Some(Ok(state)) => {
            // Check every page once the other services are back too, so the
            // check does not compete with their restoring (the blackout ends
            // when the last of them is done).
            syscall::sleep(VERIFY_DELAY_NS);
            let pages = config.bytes / PAGE;
            match damaged_pages(&state) {
                0 => log::info!(
                    "ballast: {} MiB handed over {mode} ({} runs, order {}), all {pages} pages intact",
                    config.bytes >> 20,
                    runs(&state).len(),
                    config.order
                ),
                damaged => log::warn!("ballast: {damaged} of {pages} pages lost their contents"),
            }
            state
        }
        Some(Err(error)) => {
            log::warn!("ballast: restoring the handed-over state failed: {error}");
            return 1;
        }
        None => match allocate(&config, config.bytes) {
            Ok(state) => {
                fill(&state);
                log::info!("ballast: {} MiB allocated (order {}, {mode})", config.bytes >> 20, config.order);
                state
            }
            Err(error) => {
                log::warn!("ballast: cannot allocate {} MiB: {error}", config.bytes >> 20);
                return 1;
            }
        },
    };
    let buffer = match config.copying {
        true => match allocate(&config, config.bytes) {
            Ok(buffer) => buffer,
            Err(error) => {
                log::warn!("ballast: cannot allocate the copying buffer: {error}");
                return 1;
            }
        },
        false => Vec::new(),
    };
    let mut ballast = Ballast { config, state, buffer };
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender == KERNEL_SENDER {
            match UpdateEvent::from_label(message.label) {
                // A resumed ballast keeps its memory mapped as it is: it
                // publishes nothing. A restarted one hands its state over.
                Some(UpdateEvent::Prepare) => {
                    let status = match UpdateFate::from_word(message.words[0]) {
                        UpdateFate::Resumed => 0,
                        UpdateFate::Restarted => ballast.prepare().map_or_else(|error| error.number(), |()| 0),
                    };
                    let _ = syscall::kho_ready(UpdateEvent::Prepare, status);
                }
                Some(UpdateEvent::Aborted) => ballast.aborted(),
                Some(UpdateEvent::Continued) => {
                    let pages = config.bytes / PAGE;
                    match damaged_pages(&ballast.state) {
                        0 => log::info!(
                            "ballast: {} MiB resumed with its process ({} runs, order {}), all {pages} pages intact",
                            config.bytes >> 20,
                            runs(&ballast.state).len(),
                            config.order
                        ),
                        damaged => log::warn!("ballast: {damaged} of {pages} pages lost their contents"),
                    }
                }
                _ => {}
            }
            continue;
        }
        let reply = if message.label == label::BALLAST_READY {
            let words = [config.bytes, u64::from(config.order), u64::from(config.copying), 0, 0, 0];
            protocol::encode_words_reply(protocol::STATUS_OK, words)
        } else {
            protocol::encode_words_reply(protocol::STATUS_BAD_REQUEST, [0; 6])
        };
        let _ = syscall::reply(message.sender, &reply);
    }
}
