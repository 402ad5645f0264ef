//! holder: a test service for calls across a restart (`test.resume=calls`).
//! Every update restarts it (its build metadata opts out of resumption).
//!
//! Its first instance keeps the first `HOLD` call it receives without
//! answering and then sleeps, receiving nothing more, so later calls wait
//! in its mailbox; an `ASK` that arrives before the `HOLD` is told to come
//! back. The instance the update starts (it finds the sub-FDT the first
//! published) answers every call at once with its instance number, 2.

#![no_std]
#![no_main]

use baton_user::kho::fetch_sub_fdt;
use baton_user::{Message, SubFdtWriter, syscall};

baton_user::service!(main);

const HOLD: u64 = 0x5355_0002;
const BUSY: u64 = 0x5355_00ff;

fn main(_argument: u64) -> i32 {
    let instance = if fetch_sub_fdt().is_ok() { 2 } else { 1 };
    let _ = syscall::kho_done();
    if instance == 1 {
        let marker = (|| {
            let mut writer = SubFdtWriter::new().ok()?;
            writer.property_string("compatible", "baton,holder-v1").ok()?;
            writer.finish().ok()
        })();
        if let Some(marker) = marker {
            let _ = syscall::kho_publish(&marker);
        }
    }
    log::info!("holder: instance {instance} running");
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if instance == 1 {
            if message.label == HOLD {
                log::info!("holder: keeping a call from service {} unanswered", message.sender);
                loop {
                    syscall::sleep(60_000_000_000);
                }
            }
            let _ = syscall::reply(message.sender, &Message::new(BUSY, [0; 6]));
            continue;
        }
        let _ = syscall::reply(message.sender, &Message::new(0, [instance, 0, 0, 0, 0, 0]));
    }
}
