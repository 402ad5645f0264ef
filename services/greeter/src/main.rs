//! greeter: the example service of docs/services.md (kept identical to it).

#![no_std]
#![no_main]

use baton_user::kho::{Folio, fetch_sub_fdt};
use baton_user::message::KERNEL_SENDER;
use baton_user::{Message, SubFdtWriter, UpdateEvent, native_u64, parse_fdt, syscall};

baton_user::service!(main);

/// The folio the previous instance handed over, if this boot is an update.
fn restore() -> Option<Folio> {
    let fdt = parse_fdt(fetch_sub_fdt().ok()?).ok()?;
    let physical = native_u64(fdt.find_node("/")?.property("count")?.value)?;
    Folio::restore(physical, 0).ok()
}

fn main(_argument: u64) -> i32 {
    let _ = syscall::kho_subscribe();
    let mut folio = match restore() {
        Some(folio) => folio,
        None => Folio::allocate(0).expect("a page"),
    };
    let _ = syscall::kho_done();
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender == KERNEL_SENDER {
            if UpdateEvent::from_label(message.label) == Some(UpdateEvent::Prepare) {
                let mut writer = SubFdtWriter::new().expect("writer");
                writer.property_u64("count", folio.physical).expect("property");
                let _ = folio.preserve();
                let _ = syscall::kho_publish(&writer.finish().expect("fdt"));
                let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
            }
            continue;
        }
        let count = &mut folio.bytes_mut()[0];
        *count = count.wrapping_add(1);
        log::info!("greeter: hello number {count}");
        let _ = syscall::reply(message.sender, &Message::new(0, [u64::from(*count), 0, 0, 0, 0, 0]));
    }
}
