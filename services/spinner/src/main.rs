//! spinner: a test service that never yields, to show that preemption keeps
//! every other service running.

#![no_std]
#![no_main]

baton_user::service!(main);

fn main(_argument: u64) -> i32 {
    log::info!("spinner: spinning forever without yielding");
    let mut counter = 0u64;
    loop {
        counter = core::hint::black_box(counter.wrapping_add(1));
    }
}
