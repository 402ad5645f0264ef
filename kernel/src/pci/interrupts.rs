//! Message interrupts for user-mode drivers: the kernel owns every
//! function's MSI-X table and steering registers; a driver asks for an
//! entry to be routed (`device_irq`) and receives each interrupt as a
//! message from the kernel.
//!
//! A route ties one of the architecture's message slots (an interrupt
//! vector on x86_64, a GICv2m SPI on aarch64) to (driver, function,
//! entry). The table lives in a BAR the driver may not map, and the MSI
//! and MSI-X capability registers are refused to its configuration
//! writes, so no driver can make its device raise any other vector.
//!
//! Across an update that resumes the driver, the old kernel masks the
//! whole function just before the jump (the device holds what it would
//! have raised as pending bits), and the new kernel, once it has the
//! device back, routes every entry the old kernel had unmasked to a slot
//! of its own and unmasks the function: what arrived meanwhile is raised
//! then. The driver also gets one message per route at once, since an
//! interrupt that reached the old kernel after its last delivery is gone.

use super::{Device, Ecam, PciError, REGISTRY};
use alloc::vec::Vec;
use baton_arch::interrupts::{MESSAGE_SLOTS, enable_message, message_target};
use baton_pci::msix::{self, ENTRY_BYTES, FUNCTION_MASK, Msix};
use baton_pci::{Address, ConfigAccess};
use core::sync::atomic::{AtomicU64, Ordering};

/// The routes, by slot: service id << 32 | PCI address << 16 | entry, or
/// 0 for a free slot. Atomic so the interrupt path reads it without a
/// lock.
static ROUTES: [AtomicU64; MESSAGE_SLOTS as usize] = [const { AtomicU64::new(0) }; MESSAGE_SLOTS as usize];

/// Who a message interrupt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The driver's service id.
    pub owner: u64,
    /// Its function.
    pub address: baton_abi::PciAddress,
    /// The table entry.
    pub entry: u16,
}

impl Route {
    const fn pack(self) -> u64 {
        (self.owner << 32) | ((self.address.0 as u64) << 16) | self.entry as u64
    }

    const fn unpack(word: u64) -> Option<Route> {
        if word == 0 {
            return None;
        }
        Some(Route { owner: word >> 32, address: baton_abi::PciAddress((word >> 16) as u16), entry: word as u16 })
    }
}

/// The route of message slot `slot` (the interrupt path).
pub fn route(slot: u32) -> Option<Route> {
    Route::unpack(ROUTES.get(slot as usize)?.load(Ordering::Acquire))
}

fn abi_address(at: Address) -> baton_abi::PciAddress {
    baton_abi::PciAddress::new(at.bus, at.device, at.function)
}

/// The kernel's mapping of `device`'s MSI-X table.
fn table(windows: &baton_pci::Windows, device: &Device, msix: &Msix) -> Option<baton_arch::mmio::MmioRegion> {
    let bar = device.bars.iter().find(|bar| bar.index == msix.table_bar && bar.is_memory())?;
    let start = super::cpu_address(windows, bar)?.checked_add(msix.table_offset)?;
    let page = start & !(baton_abi::PAGE_SIZE - 1);
    let bytes = (start + msix.table_bytes()).next_multiple_of(baton_abi::PAGE_SIZE) - page;
    let virt = crate::mm::device_address(page, bytes)?;
    // SAFETY: `device_address` mapped these pages of the BAR as device
    // memory for the kernel's lifetime; the table is the kernel's alone
    // (the driver may not map it).
    Some(unsafe { baton_arch::mmio::MmioRegion::new(virt + (start - page), msix.table_bytes()) })
}

fn set_control(ecam: &mut Ecam, at: Address, msix: &Msix, set: u16, clear: u16) {
    // Message Control is the upper half of the capability's first word.
    let offset = msix.capability_offset;
    let word = ecam.read(at, offset);
    let control = ((word >> 16) as u16 | set) & !clear;
    ecam.write(at, offset, (word & 0xffff) | (u32::from(control) << 16));
}

/// Programs `entry` of the table to raise `slot`, and unmasks it.
fn program(table: &baton_arch::mmio::MmioRegion, msix: &Msix, entry: u16, slot: u32) -> bool {
    let (Some(offset), Some((address, data))) = (msix.entry_offset(entry), message_target(slot)) else {
        return false;
    };
    let offset = offset - msix.table_offset;
    let words = msix::table_entry(address, data, true);
    // Masked while it changes, then unmasked.
    for (index, word) in words.iter().enumerate() {
        table.write32(offset + 4 * index as u64, *word);
    }
    table.write32(offset + 12, 0);
    enable_message(slot)
}

/// A free slot, taken for `route`.
fn claim_slot(route: Route) -> Option<u32> {
    (0..MESSAGE_SLOTS).find(|&slot| {
        message_target(slot).is_some()
            && ROUTES[slot as usize].compare_exchange(0, route.pack(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    })
}

/// `device_irq`: routes `entry` of `owner`'s function to a message for the
/// service `owner_id`.
pub fn route_entry(owner: &str, owner_id: u64, address: baton_abi::PciAddress, entry: u16) -> Result<(), PciError> {
    super::with_owned(owner, address, |ecam, windows, device| {
        let at = device.function.address;
        let msix = Msix::read(ecam, &device.function).ok_or(PciError::NoInterrupts)?;
        if entry >= msix.table_size {
            return Err(PciError::NoSuchEntry);
        }
        let wanted = Route { owner: owner_id, address, entry };
        if (0..MESSAGE_SLOTS).any(|slot| route(slot) == Some(wanted)) {
            return Err(PciError::AlreadyRouted);
        }
        let table = table(windows, device, &msix).ok_or(PciError::NoInterrupts)?;
        let slot = claim_slot(wanted).ok_or(PciError::NoInterrupts)?;
        if !program(&table, &msix, entry, slot) {
            ROUTES[slot as usize].store(0, Ordering::Release);
            return Err(PciError::NoInterrupts);
        }
        set_control(ecam, at, &msix, msix::ENABLE, FUNCTION_MASK);
        log::info!(target: "pci", "{at}: MSI-X entry {entry} routed to '{owner}' (slot {slot})");
        Ok(())
    })
}

/// Forgets the routes of `at` (its function was stopped).
pub(super) fn forget_function(at: Address) {
    let address = abi_address(at);
    for slot in 0..MESSAGE_SLOTS {
        if route(slot).is_some_and(|found| found.address == address) {
            ROUTES[slot as usize].store(0, Ordering::Release);
        }
    }
}

/// Masks the whole of `device`'s MSI-X (just before the jump of an update
/// that resumes its driver): the device keeps what it would raise as
/// pending bits for the next kernel. Returns whether it was unmasked, for
/// [`unmask`] on an abort.
pub(super) fn mask(ecam: &mut Ecam, device: &Device) -> bool {
    let Some(msix) = Msix::read(ecam, &device.function) else { return false };
    let control = (ecam.read(device.function.address, msix.capability_offset) >> 16) as u16;
    if control & msix::ENABLE == 0 || control & FUNCTION_MASK != 0 {
        return false;
    }
    set_control(ecam, device.function.address, &msix, FUNCTION_MASK, 0);
    true
}

/// Undoes [`mask`].
pub(super) fn unmask(ecam: &mut Ecam, device: &Device) {
    if let Some(msix) = Msix::read(ecam, &device.function) {
        set_control(ecam, device.function.address, &msix, 0, FUNCTION_MASK);
    }
}

/// On the new kernel, once `owner` (service `owner_id`) has its devices
/// back: every entry the previous kernel had unmasked is routed to a slot
/// of this kernel, then the function is unmasked. Returns the routes, for
/// the driver's one message each.
pub fn reroute_adopted(owner: &str, owner_id: u64) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut guard = REGISTRY.lock();
    let Some(registry) = guard.as_mut() else { return routes };
    let windows = registry.windows;
    for device in registry.devices.iter().filter(|device| device.owner.as_deref() == Some(owner)) {
        let at = device.function.address;
        let Some(msix) = Msix::read(&registry.ecam, &device.function) else { continue };
        let control = (registry.ecam.read(at, msix.capability_offset) >> 16) as u16;
        if control & msix::ENABLE == 0 {
            continue;
        }
        let Some(table) = table(&windows, device, &msix) else { continue };
        for entry in 0..msix.table_size {
            let offset = u64::from(entry) * ENTRY_BYTES;
            if table.read32(offset + 12).is_none_or(|control| control & msix::ENTRY_MASKED != 0) {
                continue;
            }
            let route = Route { owner: owner_id, address: abi_address(at), entry };
            match claim_slot(route) {
                Some(slot) if program(&table, &msix, entry, slot) => routes.push(route),
                Some(slot) => ROUTES[slot as usize].store(0, Ordering::Release),
                None => log::warn!(target: "pci", "{at}: no message slot left for MSI-X entry {entry}"),
            }
        }
        set_control(&mut registry.ecam, at, &msix, 0, FUNCTION_MASK);
        log::info!(target: "pci", "{at}: {} MSI-X entr(ies) routed again to '{owner}'", routes.len());
    }
    routes
}

/// Whether `[offset, offset + length)` of BAR `bar` of `device` reaches
/// its MSI-X table or pending bits (the kernel's).
pub(super) fn is_kernel_owned(ecam: &Ecam, device: &Device, bar: u8, offset: u64, length: u64) -> bool {
    Msix::read(ecam, &device.function).is_some_and(|msix| msix.overlaps(bar, offset, length, baton_abi::PAGE_SIZE))
}
