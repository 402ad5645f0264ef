//! crasher: a test service that faults on purpose (a write to address 0),
//! to show that a fault ends the service, not the kernel.

#![no_std]
#![no_main]

baton_user::service!(main);

fn main(_argument: u64) -> i32 {
    log::info!("crasher: writing to address 0");
    // SAFETY: not safe: this faults on purpose; the kernel ends the service.
    unsafe { core::ptr::null_mut::<u64>().write_volatile(0xdead) };
    0
}
