//! counter: a monotonic count and an uptime that survive kernel updates.
//!
//! Its state is one preservable page: the clock reading when the counter
//! first started and how many times it has been read. Every read bumps the
//! count; the uptime is measured from the first start, across updates.

#![no_std]
#![no_main]

use baton_user::kho::{Folio, fetch_sub_fdt};
use baton_user::message::KERNEL_SENDER;
use baton_user::protocol::{self, label};
use baton_user::{SubFdtWriter, UpdateEvent, native_u64, parse_fdt, syscall};

baton_user::service!(main);

const MAGIC: u64 = 0x434f_554e_5445_5221; // "COUNTER!"

struct State {
    folio: Folio,
}

impl State {
    fn words(&mut self) -> &mut [u64] {
        let bytes = self.folio.bytes_mut();
        // SAFETY: the folio is page-aligned and at least 4 KiB, so viewing its
        // first 24 bytes as three u64s is aligned and in bounds.
        unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<u64>(), 3) }
    }

    fn read(&mut self) -> (u64, u64) {
        let now = syscall::clock();
        let words = self.words();
        words[2] += 1;
        (words[2], now.saturating_sub(words[1]))
    }

    fn publish(&mut self) -> Result<(), baton_user::Error> {
        let fdt = (|| {
            let mut writer = SubFdtWriter::new().ok()?;
            writer.property_string("compatible", "baton,counter-v1").ok()?;
            writer.property_u64("state", self.folio.physical).ok()?;
            writer.finish().ok()
        })()
        .ok_or(baton_user::Error::NoMemory)?;
        match self.folio.preserve() {
            Ok(()) | Err(baton_user::Error::AlreadyExists) => {}
            Err(error) => return Err(error),
        }
        syscall::kho_publish(&fdt)
    }
}

fn restore() -> Option<State> {
    let fdt = fetch_sub_fdt().ok()?;
    let parsed = parse_fdt(fdt).ok()?;
    let root = parsed.find_node("/")?;
    if root.property("compatible")?.as_str()? != "baton,counter-v1" {
        return None;
    }
    let physical = native_u64(root.property("state")?.value)?;
    let mut state = State { folio: Folio::restore(physical, 0).ok()? };
    (state.words()[0] == MAGIC).then_some(state)
}

fn main(_argument: u64) -> i32 {
    let _ = syscall::kho_subscribe();
    let mut state = match restore() {
        Some(mut state) => {
            log::info!("counter: restored (count {})", state.words()[2]);
            state
        }
        None => {
            let Ok(folio) = Folio::allocate(0) else { return 1 };
            let mut state = State { folio };
            let now = syscall::clock();
            let words = state.words();
            words[0] = MAGIC;
            words[1] = now;
            words[2] = 0;
            state
        }
    };
    let _ = syscall::kho_done();
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender == KERNEL_SENDER {
            if UpdateEvent::from_label(message.label) == Some(UpdateEvent::Prepare) {
                let status = state.publish().map_or_else(|error| error.number(), |()| 0);
                let _ = syscall::kho_ready(UpdateEvent::Prepare, status);
            }
            continue;
        }
        let reply = if message.label == label::COUNTER_READ {
            let (count, uptime_ns) = state.read();
            protocol::encode_words_reply(protocol::STATUS_OK, [count, uptime_ns, 0, 0, 0, 0])
        } else {
            protocol::encode_words_reply(protocol::STATUS_BAD_REQUEST, [0; 6])
        };
        let _ = syscall::reply(message.sender, &reply);
    }
}
