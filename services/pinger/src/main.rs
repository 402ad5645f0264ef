//! pinger: the owning end of a shared-memory channel (`test.share=N`).
//!
//! It allocates an 8 KiB region of preservable memory, lays a channel out
//! in it, grants it to ponger and sends ponger the grant's id. Then it
//! pings: a numbered line into its ring, a doorbell message, and it waits
//! for ponger's answering line in the other ring. It carries on through N
//! updates (both ends are resumed: the region stays mapped in both at the
//! same addresses), checks every answer, then revokes the grant (the
//! region is its own to free again) and tests that a grant ends with its
//! owner: it grants a second region and exits.
//!
//! Before any of that it tries what the kernel must refuse: granting its
//! stack, granting to itself or to nobody, mapping its own grant, freeing
//! granted memory.

#![no_std]
#![no_main]

use baton_user::channel::{Endpoint, Region};
use baton_user::message::KERNEL_SENDER;
use baton_user::{Error, Message, UpdateEvent, ipc, syscall};

extern crate alloc;

baton_user::service!(main);

/// pinger to ponger: word 0 is a grant id to map and attach to.
const GRANT: u64 = 0x5049_0001;
/// Either way: there are bytes in your ring.
const DOORBELL: u64 = 0x5049_0002;
/// pinger to ponger: word 0 is a second grant, to map and mark.
const GRANT_TO_OUTLIVE: u64 = 0x5049_0003;

/// The region: one order-1 folio, a 4 KiB header and two 2 KiB rings.
const REGION_ORDER: u32 = 1;
const REGION_BYTES: u64 = 8192;
const RING_BYTES: u32 = 2048;
/// Exchanges after the last update before it finishes.
const EXCHANGES_AFTER: u64 = 20;

fn expect(what: &str, result: Result<u64, Error>, wanted: Error) -> bool {
    match result {
        Err(error) if error == wanted => true,
        other => {
            log::warn!("pinger: {what}: {other:?}, not {wanted:?}");
            false
        }
    }
}

/// What the kernel must refuse before any grant exists.
fn refusals() -> bool {
    let code = syscall::clock as *const () as u64 & !0xfff;
    let own_name_refused = {
        let Ok(region) = syscall::allocate_preservable(0) else { return false };
        let own = expect("granting to itself", syscall::share_grant(region, 4096, "pinger"), Error::InvalidArgument);
        let nobody = expect("granting to nobody", syscall::share_grant(region, 4096, "nobody"), Error::NotFound);
        let beyond = expect(
            "granting past the allocation",
            syscall::share_grant(region, 8192, "ponger"),
            Error::PermissionDenied,
        );
        let _ = syscall::free_preservable(region);
        own && nobody && beyond
    };
    let image = expect("granting its own code", syscall::share_grant(code, 4096, "ponger"), Error::PermissionDenied);
    let unknown = expect("mapping a grant that does not exist", syscall::share_map(999_999, 4096), Error::NotFound);
    own_name_refused && image && unknown
}

struct Pinger {
    endpoint: Endpoint<Region>,
    ponger: u64,
    next: u64,
    continued: u64,
    after_last_update: u64,
    mismatches: u64,
}

impl Pinger {
    /// One exchange: a ping line, a doorbell, the pong line back.
    /// Update events arriving meanwhile are answered.
    fn exchange(&mut self, updates_to_see: u64) -> Result<(), &'static str> {
        let line = alloc::format!("ping {}\n", self.next);
        if self.endpoint.send(line.as_bytes()).map_err(|_| "the channel broke")? != line.len() {
            return Err("ping ring full");
        }
        syscall::send(self.ponger, &Message::new(DOORBELL, [0; 6])).map_err(|_| "cannot ring ponger")?;
        let mut answer = [0u8; 32];
        let mut got = 0;
        while !answer[..got].contains(&b'\n') {
            let message = syscall::receive().map_err(|_| "receive failed")?;
            if message.sender == KERNEL_SENDER {
                match UpdateEvent::from_label(message.label) {
                    Some(UpdateEvent::Prepare) => {
                        let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
                    }
                    Some(UpdateEvent::Continued) => {
                        self.continued += 1;
                        log::info!(
                            "pinger: continued on the new kernel after {} exchanges (update {} of {updates_to_see})",
                            self.next,
                            self.continued
                        );
                    }
                    _ => {}
                }
                continue;
            }
            if message.label == DOORBELL && message.sender == self.ponger {
                got += self.endpoint.receive(&mut answer[got..]).map_err(|_| "the channel broke")?;
            }
        }
        let expected = alloc::format!("pong {}\n", self.next);
        if &answer[..got] != expected.as_bytes() {
            self.mismatches += 1;
            log::warn!("pinger: exchange {} answered {:?}", self.next, core::str::from_utf8(&answer[..got]));
        }
        self.next += 1;
        if self.continued >= updates_to_see {
            self.after_last_update += 1;
        }
        Ok(())
    }
}

fn main(updates_to_see: u64) -> i32 {
    let _ = syscall::kho_subscribe();
    // Nothing to restore when restarted: whatever a previous instance
    // preserved goes back at once.
    let _ = syscall::kho_done();
    let Ok(ponger) = ipc::wait_for_service("ponger", 5_000_000_000) else {
        log::warn!("pinger: no ponger");
        return 1;
    };
    let refused = refusals();
    let Ok(region) = syscall::allocate_preservable(REGION_ORDER) else {
        log::warn!("pinger: no memory for the region");
        return 1;
    };
    // SAFETY: the folio is this service's preservable memory, mapped
    // read-write until it frees it (after the grant is revoked, when the
    // endpoint is gone).
    let memory = unsafe { Region::new(region, REGION_BYTES) };
    let Ok(endpoint) = Endpoint::create(memory, RING_BYTES) else {
        log::warn!("pinger: cannot lay the channel out");
        return 1;
    };
    let grant = match syscall::share_grant(region, REGION_BYTES, "ponger") {
        Ok(grant) => grant,
        Err(error) => {
            log::warn!("pinger: cannot grant the region: {error}");
            return 1;
        }
    };
    let busy = expect("freeing granted memory", syscall::free_preservable(region).map(|()| 0), Error::Busy);
    let own = expect("mapping its own grant", syscall::share_map(grant, REGION_BYTES), Error::PermissionDenied);
    if refused && busy && own {
        log::info!("pinger: every forbidden grant, map and free was refused");
    }
    if syscall::send(ponger, &Message::new(GRANT, [grant, 0, 0, 0, 0, 0])).is_err() {
        log::warn!("pinger: cannot tell ponger the grant");
        return 1;
    }
    let mut pinger = Pinger { endpoint, ponger, next: 0, continued: 0, after_last_update: 0, mismatches: 0 };
    while pinger.after_last_update < EXCHANGES_AFTER {
        if let Err(reason) = pinger.exchange(updates_to_see) {
            log::warn!("pinger: exchange {} failed: {reason}", pinger.next);
            return 1;
        }
        syscall::sleep(2_000_000);
    }
    if pinger.mismatches == 0 {
        log::info!(
            "pinger: {} exchanges over the channel through {} update(s), every pong matched",
            pinger.next,
            pinger.continued
        );
    }
    // Revoked, the region is its own to free again.
    match syscall::share_revoke(grant).and_then(|()| syscall::free_preservable(region)) {
        Ok(()) => log::info!("pinger: grant {grant} revoked and its region freed"),
        Err(error) => log::warn!("pinger: revoking grant {grant}: {error}"),
    }
    // A grant ends with its owner.
    let Ok(second) = syscall::allocate_preservable(0) else { return 1 };
    let Ok(outlived) = syscall::share_grant(second, 4096, "ponger") else { return 1 };
    if ipc::request(ponger, GRANT_TO_OUTLIVE, [outlived, 0, 0, 0, 0, 0]).is_err() {
        log::warn!("pinger: ponger did not take the second grant");
    }
    log::info!("pinger: exiting while ponger maps grant {outlived}");
    0
}
