//! adversary: a service that attacks the system while an update runs, for
//! the reliability tests (`test.adversary=<mode>` on the kernel command
//! line). Each mode is one kind of abuse; the kernel must stay up, the
//! update must complete or abort cleanly, and every other service's state
//! must survive. The mode is the argument:
//!
//! 1. flood: sends to kvstore and init as fast as it can, forever;
//! 2. hog: allocates preservable memory until the kernel refuses, and
//!    keeps it;
//! 3. preserve: allocates and preserves 4 KiB pages until the kernel
//!    refuses (memory for them or for the tracker runs out), and keeps them;
//! 4. publish: publishes oversized, truncated and malformed sub-FDTs (each
//!    must be refused) and then, when asked to prepare, one that is valid;
//! 5. spin: subscribes to updates and never yields again;
//! 6. crash: subscribes, preserves a page, and faults when told to prepare.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use baton_user::message::KERNEL_SENDER;
use baton_user::{Error, Message, SubFdtWriter, UpdateEvent, ipc, syscall};

baton_user::service!(main);

const FLOOD: u64 = 1;
const HOG: u64 = 2;
const PRESERVE: u64 = 3;
const PUBLISH: u64 = 4;
const SPIN: u64 = 5;
const CRASH: u64 = 6;

fn flood() -> i32 {
    let targets: alloc::vec::Vec<u64> =
        ["kvstore", "init"].iter().filter_map(|name| ipc::wait_for_service(name, 5_000_000_000).ok()).collect();
    let message = Message::new(0xdead, [1, 2, 3, 4, 5, 6]);
    let (mut sent, mut refused) = (0u64, 0u64);
    loop {
        for &target in &targets {
            match syscall::send(target, &message) {
                Ok(()) => sent += 1,
                Err(_) => refused += 1,
            }
        }
        if (sent + refused).is_power_of_two() && sent + refused >= 1 << 12 {
            log::info!("adversary: flood: {sent} messages queued, {refused} refused so far");
        }
    }
}

/// Allocates `count` folios of `order` at a time until the kernel refuses;
/// with `preserve`, preserves each batch (as that many folios); returns the
/// bytes it got.
fn hog(order: u32, count: u64, preserve: bool) -> (u64, Error) {
    let bytes = count * (baton_user::PAGE_SIZE << order);
    let mut total = 0;
    loop {
        let address = match syscall::allocate_preservable_run(order, count) {
            Ok(address) => address,
            Err(error) => return (total, error),
        };
        if preserve && let Err(error) = syscall::kho_preserve(address, bytes) {
            return (total, error);
        }
        total += bytes;
    }
}

fn idle_forever() -> ! {
    loop {
        let _ = syscall::receive();
    }
}

fn publish() -> i32 {
    let _ = syscall::kho_subscribe();
    let mut refused = 0;
    let oversized = vec![0u8; baton_user::MAX_SUB_FDT_BYTES + 8];
    refused += u32::from(syscall::kho_publish(&oversized) == Err(Error::TooLarge));
    let valid = (|| {
        let mut writer = SubFdtWriter::new().ok()?;
        writer.property_string("compatible", "baton,adversary-v1").ok()?;
        writer.finish().ok()
    })()
    .unwrap_or_default();
    if valid.len() > 48 {
        refused += u32::from(syscall::kho_publish(&valid[..valid.len() - 8]) == Err(Error::InvalidArgument));
        let mut bad_magic = valid.clone();
        bad_magic[0] ^= 0xff;
        refused += u32::from(syscall::kho_publish(&bad_magic) == Err(Error::InvalidArgument));
        let mut bad_size = valid.clone();
        bad_size[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        refused += u32::from(syscall::kho_publish(&bad_size) == Err(Error::InvalidArgument));
        let mut bad_offsets = valid.clone();
        bad_offsets[8..12].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
        refused += u32::from(syscall::kho_publish(&bad_offsets) == Err(Error::InvalidArgument));
    }
    log::info!("adversary: publish: {refused} of 5 bad sub-FDTs refused");
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender == KERNEL_SENDER && UpdateEvent::from_label(message.label) == Some(UpdateEvent::Prepare) {
            let status = syscall::kho_publish(&valid).map_or_else(|error| error.number(), |()| 0);
            let _ = syscall::kho_ready(UpdateEvent::Prepare, status);
        }
    }
}

fn crash() -> i32 {
    let _ = syscall::kho_subscribe();
    if let Ok(address) = syscall::allocate_preservable(0) {
        let _ = syscall::kho_preserve(address, baton_user::PAGE_SIZE);
    }
    log::info!("adversary: crash: waiting to be told to prepare");
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender == KERNEL_SENDER && UpdateEvent::from_label(message.label) == Some(UpdateEvent::Prepare) {
            log::info!("adversary: crash: faulting in the middle of prepare");
            // SAFETY: not safe: this faults on purpose; the kernel ends the
            // service.
            unsafe { core::ptr::null_mut::<u64>().write_volatile(0xdead) };
        }
    }
}

fn main(mode: u64) -> i32 {
    // Whatever an earlier instance preserved is given up at once, so the
    // adversary never holds up the end of an update's blackout.
    let _ = syscall::kho_done();
    match mode {
        FLOOD => flood(),
        HOG => {
            let (bytes, error) = hog(10, 1, false);
            log::info!("adversary: hog: holding {} MiB; then refused: {error}", bytes >> 20);
            idle_forever()
        }
        PRESERVE => {
            let (bytes, error) = hog(0, 256, true);
            log::info!("adversary: preserve: {} MiB preserved as 4 KiB pages; then refused: {error}", bytes >> 20);
            idle_forever()
        }
        PUBLISH => publish(),
        SPIN => {
            let _ = syscall::kho_subscribe();
            log::info!("adversary: spin: subscribed, never yielding again");
            #[allow(clippy::empty_loop)]
            loop {}
        }
        CRASH => crash(),
        _ => {
            log::warn!("adversary: unknown mode {mode}");
            1
        }
    }
}
