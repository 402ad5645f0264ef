//! khotest: a test service for the KHO calls up to finalisation. It
//! preserves and publishes, acknowledges `prepare`, checks that every change
//! fails with `Busy` while the handover is frozen, and that changes work
//! again once the update is aborted. Exits 0 when everything matched.

#![no_std]
#![no_main]

use baton_user::kho::Folio;
use baton_user::message::KERNEL_SENDER;
use baton_user::{Error, SubFdtWriter, UpdateEvent, syscall};

baton_user::service!(main);

fn sub_fdt(generation: u32) -> alloc::vec::Vec<u8> {
    let mut writer = SubFdtWriter::new().expect("FDT writer");
    writer.property_string("compatible", "baton,khotest-v1").expect("property");
    writer.property_u32("generation", generation).expect("property");
    writer.finish().expect("finish")
}

extern crate alloc;

fn main(_argument: u64) -> i32 {
    let mut failed = 0u32;
    let mut check = |what: &str, ok: bool| {
        if !ok {
            failed += 1;
            log::warn!("khotest: {what}");
        }
    };
    check("subscribe", syscall::kho_subscribe().is_ok());
    let Ok(mut folio) = Folio::allocate(2) else { return 1 };
    folio.bytes_mut().fill(0x5a);
    check("preserve", folio.preserve().is_ok());
    check("preserving twice is refused", folio.preserve() == Err(Error::AlreadyExists));
    check("unpreserve", syscall::kho_unpreserve(folio.address, folio.size_bytes()).is_ok());
    check(
        "unpreserving twice is refused",
        syscall::kho_unpreserve(folio.address, folio.size_bytes()) == Err(Error::NotFound),
    );
    check("preserve again", folio.preserve().is_ok());
    check("freeing preserved memory is refused", syscall::free_preservable(folio.address) == Err(Error::Busy));
    check("publish", syscall::kho_publish(&sub_fdt(1)).is_ok());
    check("publishing again replaces", syscall::kho_publish(&sub_fdt(2)).is_ok());
    log::info!("khotest: ready for the update");

    let mut saw = [false; 4];
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender != KERNEL_SENDER {
            continue;
        }
        match UpdateEvent::from_label(message.label) {
            Some(UpdateEvent::Prepare) => {
                saw[0] = true;
                check("publish on prepare", syscall::kho_publish(&sub_fdt(3)).is_ok());
                let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
            }
            Some(UpdateEvent::Frozen) => {
                saw[1] = true;
                let spare = Folio::allocate(0);
                check("allocation still works while frozen", spare.is_ok());
                if let Ok(spare) = spare {
                    check("preserve is busy while frozen", spare.preserve() == Err(Error::Busy));
                }
                check(
                    "unpreserve is busy while frozen",
                    syscall::kho_unpreserve(folio.address, folio.size_bytes()) == Err(Error::Busy),
                );
                check("publish is busy while frozen", syscall::kho_publish(&sub_fdt(4)) == Err(Error::Busy));
                check("free is busy while frozen", syscall::free_preservable(folio.address) == Err(Error::Busy));
                let _ = syscall::kho_ready(UpdateEvent::Frozen, 0);
            }
            Some(UpdateEvent::Aborted) => saw[2] = true,
            Some(UpdateEvent::Resumed) => {
                saw[3] = true;
                check(
                    "unpreserve works after resume",
                    syscall::kho_unpreserve(folio.address, folio.size_bytes()).is_ok(),
                );
                check("the folio kept its contents", folio.bytes_mut().iter().all(|&byte| byte == 0x5a));
                check("free works after unpreserve", syscall::free_preservable(folio.address).is_ok());
                break;
            }
            // Only a kernel that resumed this service sends `continued`.
            Some(UpdateEvent::Continued) | None => {}
        }
    }
    check("every lifecycle event arrived in order", saw == [true; 4]);
    log::info!("khotest: done, {failed} failed checks");
    if failed == 0 { 0 } else { 1 }
}
