//! driverprobe: a test service that drives nothing but checks what the
//! kernel lets a driver do (`test.device=1` with
//! `pci.assign=driverprobe:1af4:1000` and a virtio network card).
//!
//! It finds the device the manifest gave it, reads its IDs, maps a memory
//! BAR and reads a register through it, probes a BAR's size the way
//! drivers do (all-ones, read, restore) and checks that the BAR did not
//! move, and then tries what it must not: write the header, reach a
//! function that is not its own, map an I/O BAR, a missing BAR, a range
//! past a BAR's end and its MSI-X table, write its MSI-X capability, route
//! an MSI-X entry past the table or the same entry twice. On the cold boot it switches bus mastering on and
//! waits for the update (which restarts it: `always-restart`); its next
//! instance runs the same checks and exits, so the kernel stops the
//! device's DMA.

#![no_std]
#![no_main]

use baton_user::message::KERNEL_SENDER;
use baton_user::{Error, PciAddress, SubFdtWriter, UpdateEvent, kho, syscall};

baton_user::service!(main);

const COMMAND: u16 = 0x04;
const BUS_MASTER: u32 = 1 << 2;
const MEMORY_SPACE: u32 = 1 << 1;
const BAR0: u16 = 0x10;

fn register(bar: u8) -> u16 {
    BAR0 + 4 * u16::from(bar)
}

/// All-ones, read, restore: the size the BAR decodes, and whether it still
/// reads as before afterwards.
fn probe_size(device: PciAddress, bar: u8, is_64: bool) -> Result<(u64, bool), Error> {
    let low = register(bar);
    let before = syscall::device_config_read(device, low)?;
    let before_high = if is_64 { syscall::device_config_read(device, low + 4)? } else { 0 };
    syscall::device_config_write(device, low, u32::MAX)?;
    let mask_low = syscall::device_config_read(device, low)? & !0xf;
    let mask_high = if is_64 {
        syscall::device_config_write(device, low + 4, u32::MAX)?;
        syscall::device_config_read(device, low + 4)?
    } else {
        u32::MAX
    };
    syscall::device_config_write(device, low, before)?;
    if is_64 {
        syscall::device_config_write(device, low + 4, before_high)?;
    }
    let mask = (u64::from(mask_high) << 32) | u64::from(mask_low);
    let unmoved = syscall::device_config_read(device, low)? == before
        && (!is_64 || syscall::device_config_read(device, low + 4)? == before_high);
    Ok(((!mask).wrapping_add(1), unmoved))
}

/// Where the function's MSI-X capability is, and the BAR of its table.
fn msix(device: PciAddress) -> Option<(u16, u8)> {
    let (offset, _) = baton_user::device::capabilities(device).into_iter().find(|(_, header)| *header as u8 == 0x11)?;
    let table = syscall::device_config_read(device, offset + 4).ok()?;
    Some((offset, (table & 0x7) as u8))
}

fn checks(device: PciAddress) -> bool {
    let ids = syscall::device_config_read(device, 0).unwrap_or(0);
    log::info!(
        "driverprobe: owns {:02x}:{:02x}.{} ({:04x}:{:04x})",
        device.bus(),
        device.device(),
        device.function(),
        ids & 0xffff,
        ids >> 16
    );
    let io = baton_user::device::io_bar(device);
    // The MSI-X table's BAR is the kernel's to map: probe another one.
    let msix = msix(device);
    let bars = baton_user::device::memory_bars(device);
    let Some(memory) = bars.iter().find(|bar| msix.is_none_or(|(_, table)| table != bar.index)).copied() else {
        log::warn!("driverprobe: no memory BAR");
        return false;
    };
    let (bar, is_64) = (memory.index, memory.is_64_bit);
    let (size, unmoved) = match probe_size(device, bar, is_64) {
        Ok(found) => found,
        Err(error) => {
            log::warn!("driverprobe: the size probe failed: {error}");
            return false;
        }
    };
    log::info!(
        "driverprobe: BAR{bar} probe reads its size ({size:#x}); the BAR {}",
        if unmoved { "did not move" } else { "MOVED" }
    );
    match syscall::device_map(device, bar, 0, 0x1000) {
        Ok(address) => {
            // SAFETY: the kernel mapped a page of the device's registers,
            // uncached, at `address`; reading its first register has no
            // effect on a virtio device.
            let value = unsafe { (address as *const u32).read_volatile() };
            log::info!("driverprobe: mapped BAR{bar} at {address:#x}; its first register reads {value:#x}");
        }
        Err(error) => {
            log::warn!("driverprobe: mapping BAR{bar} failed: {error}");
            return false;
        }
    }
    let host_bridge = PciAddress::new(0, 0, 0);
    let refusals = [
        ("a header write", syscall::device_config_write(device, 0x08, 0), Error::PermissionDenied),
        (
            "another function's registers",
            syscall::device_config_read(host_bridge, 0).map(drop),
            Error::PermissionDenied,
        ),
        ("another function's BAR", syscall::device_map(host_bridge, 0, 0, 0x1000).map(drop), Error::PermissionDenied),
        (
            "a range past the BAR's end",
            syscall::device_map(device, bar, size, 0x1000).map(drop),
            Error::InvalidArgument,
        ),
        ("a missing BAR", syscall::device_map(device, 5, 0, 0x1000).map(drop), Error::InvalidArgument),
        (
            "an I/O BAR",
            io.map_or(Err(Error::InvalidArgument), |io| syscall::device_map(device, io, 0, 0x1000).map(drop)),
            Error::InvalidArgument,
        ),
        ("a second device", syscall::device_owned(1).map(drop), Error::NotFound),
        (
            "the MSI-X table's page",
            msix.map_or(Err(Error::PermissionDenied), |(_, table)| {
                syscall::device_map(device, table, 0, 0x1000).map(drop)
            }),
            Error::PermissionDenied,
        ),
        (
            "a write to the MSI-X capability",
            msix.map_or(Err(Error::PermissionDenied), |(offset, _)| syscall::device_config_write(device, offset, 0)),
            Error::PermissionDenied,
        ),
        ("an MSI-X entry past the table", syscall::device_irq(device, 2047), Error::InvalidArgument),
        (
            "routing an MSI-X entry twice",
            syscall::device_irq(device, 0).and_then(|()| syscall::device_irq(device, 0)),
            Error::AlreadyExists,
        ),
    ];
    let mut is_ok = unmoved & others_refused(device);
    for (what, got, expected) in refusals {
        if got != Err(expected) {
            log::warn!("driverprobe: {what} gave {got:?}, not {expected}");
            is_ok = false;
        }
    }
    if is_ok {
        log::info!("driverprobe: every check held and every forbidden access was refused");
    }
    is_ok
}

/// Every other function on bus 0 (another driver's card, or nobody's) is
/// out of reach: its registers and its BARs are refused, and a slot with
/// nothing in it is not found.
fn others_refused(own: PciAddress) -> bool {
    let mut refused = 0;
    let mut is_ok = true;
    for slot in 0..32 {
        let other = PciAddress::new(0, slot, 0);
        if other == own {
            continue;
        }
        match syscall::device_config_read(other, 0) {
            Err(Error::NotFound) => continue,
            Err(Error::PermissionDenied) => {}
            got => {
                log::warn!("driverprobe: 00:{slot:02x}.0's registers gave {got:?}, not PermissionDenied");
                is_ok = false;
                continue;
            }
        }
        for bar in 0..6 {
            let got = syscall::device_map(other, bar, 0, 0x1000).map(drop);
            if got != Err(Error::PermissionDenied) {
                log::warn!("driverprobe: 00:{slot:02x}.0's BAR{bar} gave {got:?}, not PermissionDenied");
                is_ok = false;
            }
        }
        refused += 1;
    }
    log::info!("driverprobe: {refused} other function(s) on bus 0 refused, registers and BARs");
    is_ok
}

fn main(_argument: u64) -> i32 {
    let _ = syscall::kho_subscribe();
    let is_second = kho::fetch_sub_fdt().is_ok();
    // Nothing to restore: the update's blackout need not wait for it.
    let _ = syscall::kho_done();
    let device = match syscall::wait_for_device(0, 5_000_000_000) {
        Ok(device) => device,
        Err(error) => {
            log::warn!("driverprobe: no device: {error}");
            return 1;
        }
    };
    let is_ok = checks(device);
    let command = syscall::device_config_read(device, COMMAND).unwrap_or(0);
    let _ = syscall::device_config_write(device, COMMAND, command | BUS_MASTER | MEMORY_SPACE);
    if is_second {
        log::info!("driverprobe: second instance done; exiting");
        return if is_ok { 0 } else { 1 };
    }
    loop {
        let Ok(message) = syscall::receive() else { continue };
        if message.sender == KERNEL_SENDER && UpdateEvent::from_label(message.label) == Some(UpdateEvent::Prepare) {
            // It restarts: a sub-FDT tells the next instance it is the
            // second.
            let published = (|| {
                let mut writer = SubFdtWriter::new().ok()?;
                writer.property_string("compatible", "baton,driverprobe-v1").ok()?;
                writer.finish().ok()
            })()
            .is_some_and(|blob| syscall::kho_publish(&blob).is_ok());
            let _ = syscall::kho_ready(UpdateEvent::Prepare, u64::from(!published));
        }
    }
}
