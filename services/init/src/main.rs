//! init: the first service. It starts the others and, when asked, drives
//! the self-update.

#![no_std]
#![no_main]

use baton_user::syscall;

baton_user::service!(main);

/// The services init starts, in order.
const SERVICES: [&str; 3] = ["kvstore", "counter", "client"];

fn main(_argument: u64) -> i32 {
    log::info!("init: starting {} services", SERVICES.len());
    for name in SERVICES {
        match syscall::spawn(name, 0) {
            Ok(id) => log::info!("init: started {name} as service {id}"),
            Err(error) => log::warn!("init: cannot start {name}: {error}"),
        }
    }
    loop {
        match syscall::receive() {
            Ok(message) => log::info!("init: message {:#x} from {}", message.label, message.sender),
            Err(error) => {
                log::warn!("init: receive failed: {error}");
                syscall::sleep(100_000_000);
            }
        }
    }
}
