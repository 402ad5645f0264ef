//! What `virtio-drivers` needs from the system, in Baton's terms: DMA
//! memory is preservable memory (its physical address from the kernel),
//! device registers are BAR pages the kernel maps, and buffers the driver
//! hands the device go through bounce slots in preservable memory (the
//! heap's physical addresses are not the service's to know).

use alloc::vec::Vec;
use baton_user::{PciAddress, syscall};
use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

const PAGE_BYTES: usize = 4096;
/// Bounce slots: one page each, enough for every buffer in flight on two
/// queues of 16 with room to spare.
const SLOTS: usize = 64;

struct State {
    device: Option<PciAddress>,
    /// (BAR number, bus address, size) of the device's memory BARs.
    bars: Vec<(u8, u64, u64)>,
    /// (BAR, page offset) mapped at an address.
    mapped: Vec<(u8, u64, u64)>,
    /// Bounce slots: where they are mapped, their physical addresses, and
    /// which are in use.
    slots: Option<(u64, Vec<u64>, [bool; SLOTS])>,
}

static STATE: spin::Mutex<State> =
    spin::Mutex::new(State { device: None, bars: Vec::new(), mapped: Vec::new(), slots: None });

/// The device whose BARs `mmio_phys_to_virt` maps.
pub fn note_device(device: PciAddress) {
    let mut state = STATE.lock();
    state.device = Some(device);
    state.bars =
        baton_user::device::memory_bars(device).iter().map(|bar| (bar.index, bar.address, bar.size_bytes)).collect();
}

fn order_for_pages(pages: usize) -> u32 {
    pages.max(1).next_power_of_two().trailing_zeros()
}

/// Stops the service: a `Hal` call has no way to report failure, and the
/// driver cannot go on without what it asked for.
fn fail(what: &str) -> ! {
    log::warn!("netd: {what}; stopping");
    syscall::exit(1)
}

pub struct BatonHal;

// SAFETY: DMA memory comes from the kernel zeroed, physically contiguous
// (one folio of the rounded-up order) and mapped for this service alone
// until freed; MMIO pages are the device's BAR pages the kernel mapped
// uncached; shared buffers are copied through bounce slots that stay
// allocated while the device may use them.
unsafe impl Hal for BatonHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let address = syscall::allocate_preservable(order_for_pages(pages)).unwrap_or_else(|_| fail("no DMA memory"));
        let physical =
            syscall::physical_address(address).unwrap_or_else(|_| fail("no physical address for DMA memory"));
        let pointer = NonNull::new(address as *mut u8).unwrap_or_else(|| fail("DMA memory at address 0"));
        (physical, pointer)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, _pages: usize) -> i32 {
        match syscall::free_preservable(vaddr.as_ptr() as u64) {
            Ok(()) => 0,
            Err(_) => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        let mut state = STATE.lock();
        let device = state.device.unwrap_or_else(|| fail("no device noted"));
        let Some(&(bar, start, bar_size)) =
            state.bars.iter().find(|(_, start, bar_size)| paddr >= *start && paddr - *start < *bar_size)
        else {
            fail("a register outside every memory BAR")
        };
        let offset = paddr - start;
        let page = offset & !(PAGE_BYTES as u64 - 1);
        let end = (offset + size as u64).next_multiple_of(PAGE_BYTES as u64).min(bar_size);
        if let Some(&(_, _, virt)) = state.mapped.iter().find(|(b, p, _)| *b == bar && *p == page) {
            return NonNull::new((virt + (offset - page)) as *mut u8).unwrap_or_else(|| fail("mapped at 0"));
        }
        let virt =
            syscall::device_map(device, bar, page, end - page).unwrap_or_else(|_| fail("a BAR could not be mapped"));
        state.mapped.push((bar, page, virt));
        NonNull::new((virt + (offset - page)) as *mut u8).unwrap_or_else(|| fail("mapped at 0"))
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let length = buffer.len();
        if length > PAGE_BYTES {
            fail("a buffer larger than a bounce slot");
        }
        let mut state = STATE.lock();
        if state.slots.is_none() {
            let base = syscall::allocate_preservable_run(0, SLOTS as u64).unwrap_or_else(|_| fail("no bounce slots"));
            let physical = (0..SLOTS)
                .map(|slot| {
                    syscall::physical_address(base + (slot * PAGE_BYTES) as u64)
                        .unwrap_or_else(|_| fail("no slot address"))
                })
                .collect();
            state.slots = Some((base, physical, [false; SLOTS]));
        }
        let Some((base, physical, used)) = state.slots.as_mut() else { fail("no bounce slots") };
        let Some(slot) = used.iter().position(|is_used| !is_used) else { fail("every bounce slot is in use") };
        used[slot] = true;
        let slot_address = (*base + (slot * PAGE_BYTES) as u64) as *mut u8;
        if !matches!(direction, BufferDirection::DeviceToDriver) {
            // SAFETY: the slot is a page of this service's preservable
            // memory, in use by nobody else; `buffer` is valid for reads of
            // `length` bytes (the driver's buffer).
            unsafe { core::ptr::copy_nonoverlapping(buffer.as_ptr().cast::<u8>(), slot_address, length) };
        }
        physical[slot]
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let mut state = STATE.lock();
        let Some((base, physical, used)) = state.slots.as_mut() else { return };
        let Some(slot) = physical.iter().position(|&address| address == paddr) else { return };
        if !matches!(direction, BufferDirection::DriverToDevice) {
            let slot_address = (*base + (slot * PAGE_BYTES) as u64) as *const u8;
            // SAFETY: as in `share`; `buffer` is valid for writes of its
            // length, at most a page.
            unsafe { core::ptr::copy_nonoverlapping(slot_address, buffer.as_ptr().cast::<u8>(), buffer.len()) };
        }
        used[slot] = false;
    }
}
