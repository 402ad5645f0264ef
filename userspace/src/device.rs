//! A driver's view of its PCI function: its memory BARs, sized the way
//! every driver sizes them (all-ones, read, restore), which the kernel
//! answers without the BAR ever moving.

use crate::{PciAddress, syscall};
use alloc::vec::Vec;

/// The first BAR register.
const BAR0: u16 = 0x10;

/// One implemented memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBar {
    /// Its number.
    pub index: u8,
    /// Its bus address (what the device's registers say).
    pub address: u64,
    /// How many bytes it decodes.
    pub size_bytes: u64,
    /// Whether it takes two registers.
    pub is_64_bit: bool,
}

/// The memory BARs of `device` (a 64-bit BAR above 4 GiB reads 0 in its
/// low half: the size probe, not the address, says it is there).
pub fn memory_bars(device: PciAddress) -> Vec<MemoryBar> {
    let read = |offset: u16| syscall::device_config_read(device, offset).unwrap_or(0);
    let write = |offset: u16, value: u32| {
        let _ = syscall::device_config_write(device, offset, value);
    };
    let mut bars = Vec::new();
    let mut index = 0u8;
    while index < 6 {
        let offset = BAR0 + 4 * u16::from(index);
        let low = read(offset);
        let is_64_bit = low & 0x7 == 0x4;
        if low & 1 == 0 {
            let high = if is_64_bit { read(offset + 4) } else { 0 };
            write(offset, u32::MAX);
            let mask_low = read(offset) & !0xf;
            write(offset, low);
            let mask_high = if is_64_bit {
                write(offset + 4, u32::MAX);
                let mask = read(offset + 4);
                write(offset + 4, high);
                mask
            } else {
                u32::MAX
            };
            let size_bytes = (!((u64::from(mask_high) << 32) | u64::from(mask_low))).wrapping_add(1);
            if mask_low != 0 && size_bytes.is_power_of_two() {
                let address = (u64::from(high) << 32) | u64::from(low & !0xf);
                bars.push(MemoryBar { index, address, size_bytes, is_64_bit });
            }
        }
        index += if is_64_bit { 2 } else { 1 };
    }
    bars
}

/// The first I/O BAR of `device`, if it has one.
pub fn io_bar(device: PciAddress) -> Option<u8> {
    (0..6u8).find(|&index| {
        let value = syscall::device_config_read(device, BAR0 + 4 * u16::from(index)).unwrap_or(0);
        value & 1 == 1 && value & !0x3 != 0
    })
}

/// The capabilities of `device`, in list order: (offset, first register).
/// The walk stops at 48 entries (a list that loops, on a broken device).
pub fn capabilities(device: PciAddress) -> Vec<(u16, u32)> {
    let read = |offset: u16| syscall::device_config_read(device, offset).ok();
    let mut found = Vec::new();
    let mut pointer = read(0x34).map_or(0, |value| (value & 0xfc) as u16);
    while pointer != 0 && found.len() < 48 {
        let Some(header) = read(pointer) else { break };
        found.push((pointer, header));
        pointer = ((header >> 8) & 0xfc) as u16;
    }
    found
}
