//! The kernel console: where log lines go (the serial port for now) and the
//! `log` facade implementation.

use baton_arch::serial::Uart;
use core::fmt::{self, Write};
use log::{LevelFilter, Log, Metadata, Record};
use spin::{Mutex, Once};

static UART: Once<Uart> = Once::new();
static LOCK: Mutex<()> = Mutex::new(());

/// Bytes the console can hold back during an update's blackout.
const HELD_BYTES: usize = 32 * 1024;

/// Output held back while an update is in its blackout: writing to an
/// emulated UART costs an exit per byte, which would otherwise dominate the
/// blackout. Flushed when the blackout ends, or before any panic or fault
/// report.
struct Held {
    is_holding: bool,
    bytes: [u8; HELD_BYTES],
    length: usize,
    dropped: usize,
}

static HELD: Mutex<Held> = Mutex::new(Held { is_holding: false, bytes: [0; HELD_BYTES], length: 0, dropped: 0 });

/// Holds console output back until [`release`].
pub fn hold() {
    HELD.lock().is_holding = true;
}

/// Writes out what was held back and stops holding.
pub fn release() {
    let _guard = LOCK.lock();
    write_held(false);
}

/// Writes held output; keeps holding if `keep_holding`.
fn write_held(keep_holding: bool) {
    let mut held = HELD.lock();
    if let Some(uart) = UART.get() {
        uart.write_bytes(&held.bytes[..held.length]);
        if held.dropped > 0 {
            let mut note = arrayvec::ArrayString::<64>::new();
            let _ = writeln!(note, "[console: {} bytes dropped]", held.dropped);
            uart.write_bytes(note.as_bytes());
        }
    }
    held.length = 0;
    held.dropped = 0;
    held.is_holding = keep_holding;
}

/// Starts the console on the boot description's serial port, if any.
pub fn init(info: &baton_boot::BootInfo) {
    if let Some(port) = info.serial
        && let Some(uart) = Uart::new(port)
    {
        UART.call_once(|| uart);
    }
    log::set_logger(&LOGGER).ok();
    log::set_max_level(LevelFilter::Info);
}

struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        {
            let mut held = HELD.lock();
            if held.is_holding {
                let start = held.length;
                let take = text.len().min(HELD_BYTES - start);
                held.bytes[start..start + take].copy_from_slice(&text.as_bytes()[..take]);
                held.length += take;
                held.dropped += text.len() - take;
                return Ok(());
            }
        }
        if let Some(uart) = UART.get() {
            uart.write_bytes(text.as_bytes());
        }
        Ok(())
    }
}

/// Waits until everything written has left (the UARTs write synchronously,
/// so there is nothing to wait for; kept so callers say what they need).
pub fn flush() {}

/// Waits (at most `timeout_ns`) for a line on the serial console; returns
/// whether one arrived.
pub fn wait_for_line(timeout_ns: u64) -> bool {
    let Some(uart) = UART.get() else { return false };
    let deadline = baton_arch::nanoseconds().saturating_add(timeout_ns);
    while baton_arch::nanoseconds() < deadline {
        if matches!(uart.try_read_byte(), Some(b'\n' | b'\r')) {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Prints formatted text to the console as one unit.
pub fn print(arguments: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    let _ = ConsoleWriter.write_fmt(arguments);
}

/// Prints to the console even if another CPU context holds the console lock
/// (used by the panic and fault paths, which must not deadlock).
pub fn print_emergency(arguments: fmt::Arguments<'_>) {
    // Whatever was held back comes first, so the report has its context.
    if let Some(mut held) = HELD.try_lock() {
        held.is_holding = false;
        if let Some(uart) = UART.get() {
            uart.write_bytes(&held.bytes[..held.length]);
        }
        held.length = 0;
    }
    let _ = ConsoleWriter.write_fmt(arguments);
}

/// Prints a line to the kernel console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($argument:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($argument)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // The cycle counter keeps running across updates, so times are
            // comparable between a kernel and the one it hands over to.
            let micros = baton_arch::nanoseconds() / 1000;
            print(format_args!(
                "[{:>5}.{:06}] [{:<5} {}] {}\n",
                micros / 1_000_000,
                micros % 1_000_000,
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}
