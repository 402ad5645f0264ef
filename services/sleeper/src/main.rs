//! sleeper: a test service for process handover (`test.resume=compute` or
//! `test.resume=calls`).
//!
//! Compute mode (argument 0): told to prepare, it queues a message for the
//! survivor (busy computing, so it waits in the mailbox through the
//! freeze), acknowledges, and sleeps past the update. On the new kernel it
//! checks that it did not wake before its deadline, that its own id and
//! the survivor's are what they were, that lookups still find them, and
//! that its thread pointer is its own (not the survivor's).
//!
//! Calls mode (argument 1): once the holder keeps the survivor's call, it
//! calls the holder too; its call waits, not received, in the holder's
//! mailbox when the update restarts the holder, and the new instance
//! answers it.

#![no_std]
#![no_main]

use baton_user::message::KERNEL_SENDER;
use baton_user::thread::SelfPointer;
use baton_user::{Message, UpdateEvent, ipc, syscall};

baton_user::service!(main);

/// The survivor uses the first block of its copy, the sleeper the second:
/// their thread pointers differ.
static THREAD_BLOCKS: [SelfPointer; 2] = [SelfPointer::new(), SelfPointer::new()];

const NOTE: u64 = 0x5355_0001;
const ASK: u64 = 0x5355_0003;
/// The holder's answer while it has no call to keep yet: ask again later.
const BUSY: u64 = 0x5355_00ff;

fn compute_mode() -> i32 {
    let _ = syscall::kho_subscribe();
    let own_id = syscall::service_id();
    if let Err(error) = THREAD_BLOCKS[1].install() {
        log::warn!("sleeper: cannot set its thread pointer: {error}");
    }
    let Ok(survivor) = ipc::wait_for_service("survivor", 5_000_000_000) else {
        log::warn!("sleeper: no survivor");
        return 1;
    };
    let mut slept = false;
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender != KERNEL_SENDER {
            continue;
        }
        match UpdateEvent::from_label(message.label) {
            Some(UpdateEvent::Prepare) if !slept => {
                slept = true;
                let _ = syscall::send(survivor, &Message::new(NOTE, [0x5eed, 0, 0, 0, 0, 0]));
                let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
                let deadline = syscall::clock() + 400_000_000;
                log::info!("sleeper: sleeping through the update until {deadline} ns");
                syscall::sleep(400_000_000);
                let now = syscall::clock();
                let ids_kept = syscall::service_id() == own_id && syscall::lookup("survivor") == Ok(survivor);
                let thread_kept = THREAD_BLOCKS[1].is_current();
                if now >= deadline && ids_kept && thread_kept {
                    log::info!(
                        "sleeper: woke {} us after its deadline; ids, lookups and its thread pointer unchanged",
                        (now - deadline) / 1000
                    );
                } else {
                    log::warn!(
                        "sleeper: woke at {now} for a deadline of {deadline}; ids kept: {ids_kept}, \
                         thread pointer kept: {thread_kept}"
                    );
                }
            }
            Some(UpdateEvent::Prepare) => {
                let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
            }
            Some(UpdateEvent::Continued) => log::info!("sleeper: continued on the new kernel"),
            _ => {}
        }
    }
}

fn calls_mode() -> i32 {
    let Ok(holder) = ipc::wait_for_service("holder", 5_000_000_000) else {
        log::warn!("sleeper: no holder");
        return 1;
    };
    loop {
        match ipc::request(holder, ASK, [0; 6]) {
            Ok(reply) if reply.label == BUSY => syscall::sleep(5_000_000),
            Ok(reply) => {
                log::info!(
                    "sleeper: its call, queued when the holder restarted, was answered by holder instance {}",
                    reply.words[0]
                );
                break;
            }
            Err(error) => {
                log::warn!("sleeper: its call to the holder failed: {error}");
                break;
            }
        }
    }
    loop {
        let _ = syscall::receive();
    }
}

fn main(argument: u64) -> i32 {
    if argument == 1 { calls_mode() } else { compute_mode() }
}
