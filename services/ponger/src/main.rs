//! ponger: the mapping end of a shared-memory channel (`test.share=N`).
//!
//! Told a grant by pinger, it maps the region, attaches to the channel and
//! answers every `ping N` line with `pong N`, ringing pinger's doorbell.
//! It checks what the kernel must refuse to a peer (mapping the grant
//! twice, revoking a grant that is not its own). When a grant ends (pinger
//! revokes it, or exits), its mapping stays valid and reads as zeroes: it
//! says so and keeps serving.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use baton_user::channel::{Endpoint, Region, Side};
use baton_user::message::KERNEL_SENDER;
use baton_user::{Error, Message, SHARE_REVOKED_LABEL, UpdateEvent, syscall};

baton_user::service!(main);

const GRANT: u64 = 0x5049_0001;
const DOORBELL: u64 = 0x5049_0002;
const GRANT_TO_OUTLIVE: u64 = 0x5049_0003;
const REGION_BYTES: u64 = 8192;
/// What ponger writes into the second region, which must read as zero
/// once its owner has exited.
const MARK: u64 = 0x7075_6e67_6564_2121;

/// A word of a mapped region.
fn word(address: u64) -> u64 {
    // SAFETY: `address` lies in a region this service mapped (share_map),
    // which stays mapped for its whole life (zeroed after its grant ends);
    // volatile, as the owner writes it.
    unsafe { core::ptr::read_volatile(address as *const u64) }
}

struct Ponger {
    endpoint: Option<Endpoint<Region>>,
    /// (grant, where it is mapped)
    grants: Vec<(u64, u64)>,
    pending: Vec<u8>,
    answered: u64,
}

impl Ponger {
    fn map_channel(&mut self, grant: u64) {
        let short = syscall::share_map(grant, REGION_BYTES / 2) == Err(Error::InvalidArgument);
        let address = match syscall::share_map(grant, REGION_BYTES) {
            Ok(address) => address,
            Err(error) => {
                log::warn!("ponger: cannot map grant {grant}: {error}");
                return;
            }
        };
        self.grants.push((grant, address));
        let twice = syscall::share_map(grant, REGION_BYTES) == Err(Error::AlreadyExists);
        let revoke = syscall::share_revoke(grant) == Err(Error::PermissionDenied);
        if twice && revoke && short {
            log::info!(
                "ponger: mapped grant {grant}; mapping it at the wrong size, twice, and revoking it were refused"
            );
        } else {
            log::warn!(
                "ponger: grant {grant}: wrong size refused {short}, mapped twice refused {twice}, revoke refused {revoke}"
            );
        }
        // SAFETY: the region was just mapped read-write, 8 KiB, and stays
        // mapped for this service's life.
        let memory = unsafe { Region::new(address, REGION_BYTES) };
        match Endpoint::attach(memory, Side::Attacher) {
            Ok(endpoint) => self.endpoint = Some(endpoint),
            Err(error) => log::warn!("ponger: grant {grant} is not a channel: {error}"),
        }
    }

    fn answer(&mut self, pinger: u64) {
        let Some(endpoint) = self.endpoint.as_mut() else { return };
        let mut bytes = [0u8; 256];
        let count = match endpoint.receive(&mut bytes) {
            Ok(count) => count,
            Err(error) => {
                log::warn!("ponger: the channel broke: {error}");
                self.endpoint = None;
                return;
            }
        };
        self.pending.extend_from_slice(&bytes[..count]);
        while let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let reply = match line.strip_prefix(b"ping ") {
                Some(number) => [b"pong ", number].concat(),
                None => b"what?\n".to_vec(),
            };
            if endpoint.send(&reply).ok() != Some(reply.len()) {
                log::warn!("ponger: the pong ring is full");
            }
            self.answered += 1;
        }
        let _ = syscall::send(pinger, &Message::new(DOORBELL, [0; 6]));
    }

    fn revoked(&mut self, grant: u64) {
        let Some(position) = self.grants.iter().position(|(mapped, _)| *mapped == grant) else {
            log::warn!("ponger: told grant {grant} ended, which it never mapped");
            return;
        };
        let (_, address) = self.grants.remove(position);
        let is_zero = (0..REGION_BYTES.min(4096) / 8).all(|index| word(address + index * 8) == 0);
        if is_zero {
            log::info!(
                "ponger: grant {grant} ended after {} answers; its mapping now reads zeroes and ponger carries on",
                self.answered
            );
        } else {
            log::warn!("ponger: grant {grant} ended but its mapping still shows the owner's bytes");
        }
        if self.grants.is_empty() {
            self.endpoint = None;
        }
    }
}

fn main(_argument: u64) -> i32 {
    let _ = syscall::kho_subscribe();
    // Nothing to restore when restarted: whatever a previous instance
    // preserved goes back at once.
    let _ = syscall::kho_done();
    let mut ponger = Ponger { endpoint: None, grants: Vec::new(), pending: Vec::new(), answered: 0 };
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender == KERNEL_SENDER {
            if message.label == SHARE_REVOKED_LABEL {
                ponger.revoked(message.words[0]);
                continue;
            }
            match UpdateEvent::from_label(message.label) {
                Some(UpdateEvent::Prepare) => {
                    let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
                }
                Some(UpdateEvent::Continued) => {
                    log::info!("ponger: continued on the new kernel after {} answers", ponger.answered)
                }
                _ => {}
            }
            continue;
        }
        match message.label {
            GRANT => ponger.map_channel(message.words[0]),
            DOORBELL => ponger.answer(message.sender),
            GRANT_TO_OUTLIVE => {
                let grant = message.words[0];
                match syscall::share_map(grant, 4096) {
                    Ok(address) => {
                        ponger.grants.push((grant, address));
                        // SAFETY: just mapped read-write, a page long.
                        unsafe { core::ptr::write_volatile(address as *mut u64, MARK) };
                    }
                    Err(error) => log::warn!("ponger: cannot map grant {grant}: {error}"),
                }
                let _ = syscall::reply(message.sender, &Message::new(GRANT_TO_OUTLIVE, [0; 6]));
            }
            _ => {}
        }
    }
}
