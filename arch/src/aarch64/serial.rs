//! An Arm PL011 UART.
//!
//! Written here rather than taken from a crate: transmitting needs two
//! registers, and the device is reached through the device window.

use baton_boot::info::SerialPort;

/// The boot console UART.
#[derive(Debug)]
pub struct Uart {
    base: *mut u32,
}

// SAFETY: the register block is only written with volatile accesses and the
// UART tolerates writes from any context.
unsafe impl Send for Uart {}
// SAFETY: as for `Send`; concurrent writers interleave bytes but never
// corrupt memory.
unsafe impl Sync for Uart {}

const DATA: usize = 0;
const FLAGS: usize = 0x18 / 4;
const FLAG_TRANSMIT_FULL: u32 = 1 << 5;

impl Uart {
    /// The PL011 described by `port`, mapped through the device window, or
    /// `None` when the description is not a PL011.
    pub fn new(port: SerialPort) -> Option<Self> {
        let SerialPort::Pl011 { phys } = port else {
            return None;
        };
        let mapped = super::device_window::map(phys, 0x1000)?;
        Some(Self { base: mapped as *mut u32 })
    }

    /// Writes bytes, waiting (bounded) for room in the transmit FIFO.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_read_byte(&self) -> Option<u8> {
        const FLAG_RECEIVE_EMPTY: u32 = 1 << 4;
        // SAFETY: as in `write_byte`: device registers of this UART.
        let flags = unsafe { self.base.add(FLAGS).read_volatile() };
        if flags & FLAG_RECEIVE_EMPTY != 0 {
            return None;
        }
        // SAFETY: as above; reading DATA takes the byte out of the FIFO.
        Some(unsafe { self.base.add(DATA).read_volatile() } as u8)
    }

    fn write_byte(&self, byte: u8) {
        for _ in 0..100_000 {
            // SAFETY: `base` maps the PL011's register block as device memory
            // (set up by `new` through the device window, which is never
            // unmapped); FLAGS is inside the block.
            if unsafe { self.base.add(FLAGS).read_volatile() } & FLAG_TRANSMIT_FULL == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: as above; DATA is the first register of the block.
        unsafe { self.base.add(DATA).write_volatile(u32::from(byte)) };
    }
}
