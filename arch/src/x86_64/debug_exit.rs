//! Leaving QEMU with a status through the isa-debug-exit device.
//!
//! QEMU is started with `-device isa-debug-exit,iobase=0xf4,iosize=0x04`; a
//! write of `value` makes QEMU exit with status `(value << 1) | 1`. On a real
//! machine the write goes nowhere and the CPU halts instead.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Exits QEMU so that its status is `status` (which must be odd), or halts
/// when there is no such device.
pub fn exit(status: u8) -> ! {
    let mut port = Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is not used by any device Baton drives; on QEMU it is
    // the debug-exit device, elsewhere the write is ignored.
    unsafe { port.write(u32::from(status >> 1)) };
    super::cpu::halt_forever()
}
