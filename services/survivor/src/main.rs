//! survivor: a test service for process handover (`test.resume=compute` or
//! `test.resume=calls` on the kernel command line).
//!
//! Compute mode (argument 0): told to prepare for an update that resumes
//! it, it acknowledges and starts a long computation over 4 MiB of its own
//! memory, so the kernel freezes it in user mode, preempted by the timer in
//! the middle of it. The new kernel resumes it there; it finishes, then
//! computes the same thing again with no update in between and logs
//! whether both results agree (registers and memory survived a
//! preemption), and whether its thread pointer still points at its own
//! thread block (the sleeper holds another one). Then it receives the message the sleeper queued for it
//! before the freeze, and the `continued` event.
//!
//! Mappings mode (argument 2): it maps preservable pages until the kernel
//! refuses one (the mapping limit every service can be described within),
//! marks each, and after the update checks that every one came back.
//!
//! Limit mode (argument 3): it allocates 1 MiB runs of preservable memory
//! until the kernel refuses one (its limit, `mem.service_limit_mib=`), and
//! keeps them. Resumed on the new kernel, the memory it brought is still
//! counted: one more run is refused, and after it frees one, one fits again.
//!
//! Calls mode (argument 1): it calls the holder with a request the holder
//! keeps without answering; a restart of the holder interrupts the call
//! (`CallInterrupted`, never delivered twice). It then sends an idempotent
//! request, which the new holder answers.

#![no_std]
#![no_main]

extern crate alloc;

use baton_user::message::KERNEL_SENDER;
use baton_user::thread::SelfPointer;
use baton_user::{Error, UpdateEvent, UpdateFate, ipc, syscall};
use core::sync::atomic::{AtomicU64, Ordering};

baton_user::service!(main);

/// Words in the buffer: 4 MiB.
const WORDS: usize = 512 * 1024;
/// Passes over the buffer: long enough to outlast a timer tick many times.
const PASSES: u64 = 24;

/// The buffer (zero-initialised: part of the image's memory). Atomics with
/// relaxed ordering compile to plain loads and stores and need no `unsafe`.
static BUFFER: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// Thread blocks: the survivor's thread pointer points at the first, the
/// sleeper's at the second of its own copy: two distinct values, even where
/// both binaries place this static at the same address.
static THREAD_BLOCKS: [SelfPointer; 2] = [SelfPointer::new(), SelfPointer::new()];

/// Labels the test services use among themselves.
pub const NOTE: u64 = 0x5355_0001;
/// A request the holder keeps without answering.
pub const HOLD: u64 = 0x5355_0002;
/// A request the holder answers at once.
pub const ASK: u64 = 0x5355_0003;

/// Fills the buffer from `seed`, then mixes it `PASSES` times; returns a
/// digest of the result.
fn compute(seed: u64) -> u64 {
    let mut state = seed | 1;
    for word in &BUFFER {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.store(state, Ordering::Relaxed);
    }
    let mut carry = seed;
    for pass in 0..PASSES {
        for word in &BUFFER {
            let mixed = word.load(Ordering::Relaxed).rotate_left(7) ^ carry.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            word.store(mixed, Ordering::Relaxed);
            carry = carry.wrapping_add(mixed ^ pass);
        }
    }
    BUFFER.iter().fold(carry, |digest, word| digest.rotate_left(5) ^ word.load(Ordering::Relaxed))
}

fn compute_mode() -> i32 {
    let _ = syscall::kho_subscribe();
    let thread_block = THREAD_BLOCKS[0].install().unwrap_or(0);
    let mut computed = false;
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender != KERNEL_SENDER {
            if message.label == NOTE {
                log::info!(
                    "survivor: the message queued before the update arrived after it (word {:#x})",
                    message.words[0]
                );
            }
            continue;
        }
        match UpdateEvent::from_label(message.label) {
            Some(UpdateEvent::Prepare) if !computed => {
                computed = true;
                let fate = UpdateFate::from_word(message.words[0]);
                log::info!("survivor: told it will be {fate:?}; computing over 4 MiB through the update");
                let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
                let started = syscall::clock();
                let across = compute(0x5eed);
                let took_ms = (syscall::clock() - started) / 1_000_000;
                let again = compute(0x5eed);
                if across == again {
                    log::info!("survivor: computation across the update agrees ({across:#018x}, {took_ms} ms)");
                } else {
                    log::warn!("survivor: computation across the update DISAGREES ({across:#x} != {again:#x})");
                }
                if THREAD_BLOCKS[0].is_current() {
                    log::info!("survivor: its thread pointer came through the update ({thread_block:#x})");
                } else {
                    log::warn!("survivor: its thread pointer DISAGREES after the update");
                }
            }
            Some(UpdateEvent::Prepare) => {
                let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
            }
            Some(UpdateEvent::Continued) => log::info!("survivor: continued on the new kernel"),
            _ => {}
        }
    }
}

fn calls_mode() -> i32 {
    let Ok(holder) = ipc::wait_for_service("holder", 5_000_000_000) else {
        log::warn!("survivor: no holder");
        return 1;
    };
    match ipc::request(holder, HOLD, [0; 6]) {
        Err(Error::CallInterrupted) => {
            log::info!("survivor: the held call was interrupted by the holder's restart, not delivered twice")
        }
        other => log::warn!("survivor: the held call ended with {other:?}"),
    }
    match ipc::request_idempotent(holder, ASK, [0; 6]) {
        Ok(reply) => log::info!("survivor: an idempotent request was answered by holder instance {}", reply.words[0]),
        Err(error) => log::warn!("survivor: the idempotent request failed: {error}"),
    }
    loop {
        let _ = syscall::receive();
    }
}

fn mappings_mode() -> i32 {
    let _ = syscall::kho_subscribe();
    let mut folios = alloc::vec::Vec::new();
    let refusal = loop {
        // Orders 0 and 1 in turn: neighbours of different orders never
        // share a described mapping, so each folio costs one.
        match baton_user::kho::Folio::allocate((folios.len() % 2) as u32) {
            Ok(mut folio) => {
                let mark = folios.len() as u8 ^ 0xa5;
                folio.bytes_mut().fill(mark);
                folios.push(folio);
            }
            Err(error) => break error,
        }
    };
    log::info!("survivor: {} preservable pages mapped; the next was refused: {refusal}", folios.len());
    on_each_continue(|| {
        let intact = folios.iter_mut().enumerate().all(|(index, folio)| {
            let mark = index as u8 ^ 0xa5;
            folio.bytes_mut().iter().all(|&byte| byte == mark)
        });
        match intact {
            true => log::info!("survivor: resumed with all {} pages intact", folios.len()),
            false => log::warn!("survivor: a page came back changed"),
        }
    })
}

/// Acknowledges every `prepare` (it is resumed: nothing to publish) and
/// runs `continued` each time it goes on on a new kernel.
fn on_each_continue(mut continued: impl FnMut()) -> ! {
    loop {
        let Ok(message) = syscall::receive() else { continue };
        match UpdateEvent::from_label(message.label) {
            Some(UpdateEvent::Prepare) if message.sender == KERNEL_SENDER => {
                let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
            }
            Some(UpdateEvent::Continued) if message.sender == KERNEL_SENDER => continued(),
            _ => {}
        }
    }
}

/// One run of limit mode: 256 pages, 1 MiB.
const LIMIT_RUN_PAGES: u64 = 256;

fn limit_mode() -> i32 {
    let _ = syscall::kho_subscribe();
    let mut runs = alloc::vec::Vec::new();
    let refusal = loop {
        match syscall::allocate_preservable_run(0, LIMIT_RUN_PAGES) {
            Ok(address) => runs.push(address),
            Err(error) => break error,
        }
    };
    log::info!("survivor: holding {} MiB of preservable memory; the next MiB was refused: {refusal}", runs.len());
    on_each_continue(|| {
        let more = syscall::allocate_preservable_run(0, LIMIT_RUN_PAGES);
        let freed = runs.pop().map(syscall::free_preservable);
        let again = syscall::allocate_preservable_run(0, LIMIT_RUN_PAGES);
        match (more, freed, again) {
            (Err(error), Some(Ok(())), Ok(address)) => {
                runs.push(address);
                log::info!(
                    "survivor: resumed holding {} MiB, still counted: one more was refused ({error}); \
                     after freeing one, one fitted again",
                    runs.len()
                );
            }
            other => log::warn!("survivor: the resumed memory is not counted as it was: {other:?}"),
        }
    })
}

fn main(argument: u64) -> i32 {
    match argument {
        1 => calls_mode(),
        2 => mappings_mode(),
        3 => limit_mode(),
        _ => compute_mode(),
    }
}
