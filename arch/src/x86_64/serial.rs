//! A 16550 UART driven through x86 I/O ports.
//!
//! Written here rather than taken from the `uart_16550` crate: it is a dozen
//! lines, and that crate pins its own version of the `x86_64` crate.

use baton_boot::info::SerialPort;
use x86_64::instructions::port::Port;

/// The boot console UART.
#[derive(Debug)]
pub struct Uart {
    base: u16,
}

const DATA: u16 = 0;
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;
const SCRATCH: u16 = 7;

const LINE_STATUS_TRANSMIT_EMPTY: u8 = 1 << 5;

impl Uart {
    /// Sets the UART up at 115200 8N1 and returns it, or `None` when the
    /// description is not a 16550 or no UART answers at that port.
    pub fn new(port: SerialPort) -> Option<Self> {
        let SerialPort::Uart16550 { io_port } = port else {
            return None;
        };
        let uart = Self { base: io_port };
        // A missing UART floats the bus: the scratch register does not keep
        // what is written to it.
        uart.write_register(SCRATCH, 0x5a);
        if uart.read_register(SCRATCH) != 0x5a {
            return None;
        }
        uart.write_register(INTERRUPT_ENABLE, 0);
        uart.write_register(LINE_CONTROL, 0x80); // divisor latch
        uart.write_register(DATA, 1); // 115200 baud
        uart.write_register(INTERRUPT_ENABLE, 0);
        uart.write_register(LINE_CONTROL, 0x03); // 8N1
        uart.write_register(FIFO_CONTROL, 0xc7);
        uart.write_register(MODEM_CONTROL, 0x03);
        Some(uart)
    }

    fn write_register(&self, offset: u16, value: u8) {
        let mut port = Port::<u8>::new(self.base + offset);
        // SAFETY: the port belongs to this UART, found at `base` by the probe
        // in `new`; writing its registers has no effect on memory.
        unsafe { port.write(value) }
    }

    fn read_register(&self, offset: u16) -> u8 {
        let mut port = Port::<u8>::new(self.base + offset);
        // SAFETY: as in `write_register`; reading a UART register has no
        // effect on memory.
        unsafe { port.read() }
    }

    /// Writes bytes, waiting for room in the transmit FIFO (bounded, so a
    /// stuck UART slows logging down but never hangs the kernel).
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
        const LINE_STATUS_DATA_READY: u8 = 1;
        (self.read_register(LINE_STATUS) & LINE_STATUS_DATA_READY != 0).then(|| self.read_register(DATA))
    }

    fn write_byte(&self, byte: u8) {
        for _ in 0..100_000 {
            if self.read_register(LINE_STATUS) & LINE_STATUS_TRANSMIT_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        self.write_register(DATA, byte);
    }
}
