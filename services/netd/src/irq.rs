//! The card's interrupts: MSI-X entry 0 routed to netd by the kernel, and
//! both virtqueues told to use it.
//!
//! The `virtio-drivers` crate leaves every queue without an MSI-X vector
//! (it polls), so this writes the two registers of the virtio common
//! configuration it would need (`queue_select`, `queue_msix_vector`)
//! itself, through a mapping of its own of the structure.

use baton_user::{PciAddress, syscall};

/// A virtio PCI capability, and the type of the common configuration.
const VIRTIO_CAPABILITY: u8 = 0x09;
const COMMON_CONFIGURATION: u8 = 1;
/// Common configuration registers (16 bits each).
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const PAGE_BYTES: u64 = 4096;

/// Where the common configuration is: (BAR, offset, length).
fn common_configuration(device: PciAddress) -> Option<(u8, u64, u64)> {
    let read = |offset: u16| syscall::device_config_read(device, offset).ok();
    let (pointer, _) = baton_user::device::capabilities(device)
        .into_iter()
        .find(|(_, header)| *header as u8 == VIRTIO_CAPABILITY && (*header >> 24) as u8 == COMMON_CONFIGURATION)?;
    let bar = read(pointer + 4)? as u8;
    Some((bar, u64::from(read(pointer + 8)?), u64::from(read(pointer + 12)?)))
}

/// Routes the card's MSI-X entry 0 to netd and points `queues` queues at
/// it. `Err` says why interrupts are not used (netd then polls).
pub fn route(device: PciAddress, queues: u16) -> Result<(), &'static str> {
    let (bar, offset, length) = common_configuration(device).ok_or("no virtio common configuration")?;
    let page = offset - offset % PAGE_BYTES;
    let mapped = (offset + length).next_multiple_of(PAGE_BYTES) - page;
    let base =
        syscall::device_map(device, bar, page, mapped).map_err(|_| "its common configuration cannot be mapped")?;
    let common = base + (offset - page);
    syscall::device_irq(device, 0).map_err(|_| "the kernel routes no message interrupt for it")?;
    for queue in 0..queues {
        // SAFETY: `common` maps the card's common configuration (device
        // memory, uncached, netd's own); both registers lie inside it
        // and are 16 bits wide.
        let vector = unsafe {
            core::ptr::write_volatile((common + QUEUE_SELECT) as *mut u16, queue);
            core::ptr::write_volatile((common + QUEUE_MSIX_VECTOR) as *mut u16, 0);
            core::ptr::read_volatile((common + QUEUE_MSIX_VECTOR) as *const u16)
        };
        if vector != 0 {
            return Err("the card refused MSI-X vector 0 for a queue");
        }
    }
    Ok(())
}
