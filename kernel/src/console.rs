//! The kernel console: where log lines go (the serial port, and the
//! framebuffer when the boot description has one) and the `log` facade
//! implementation. Nothing waits for a serial port that does not exist:
//! without one, output goes to the screen only (or nowhere).

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
/// blackout. When the blackout ends it drains a chunk at a time while the
/// main thread gets the CPU ([`drain_some`]), so services run meanwhile
/// (written all at once, a few KiB of boot log kept the first service
/// waiting for milliseconds); it is written out at once before a panic or
/// fault report and before the machine stops.
struct Held {
    is_holding: bool,
    /// Released: new output still goes behind what is held, which drains.
    is_draining: bool,
    bytes: [u8; HELD_BYTES],
    length: usize,
    dropped: usize,
}

static HELD: Mutex<Held> =
    Mutex::new(Held { is_holding: false, is_draining: false, bytes: [0; HELD_BYTES], length: 0, dropped: 0 });

/// Bytes of held output [`drain_some`] writes at a time.
const DRAIN_BYTES: usize = 256;

/// Output kept for the screen while it cannot be drawn on: from boot until
/// it is attached (so it shows the boot from its first line), and while it
/// is paused for an update's blackout ([`pause_screen`]).
const EARLY_BYTES: usize = 32 * 1024;

struct Early {
    bytes: [u8; EARLY_BYTES],
    length: usize,
    is_done: bool,
}

static EARLY: Mutex<Early> = Mutex::new(Early { bytes: [0; EARLY_BYTES], length: 0, is_done: false });

/// The framebuffer console: the text state, a shadow copy of the pixels in
/// RAM that glyphs are drawn into (reading a write-combining framebuffer
/// back, as scrolling does, is very slow on real machines), and the screen
/// the changed rows are copied to.
struct Screen {
    console: baton_fbcon::TextConsole,
    shadow: &'static mut [u8],
    screen: &'static mut [u8],
    width: usize,
    height: usize,
    pitch: usize,
    format: baton_fbcon::PixelFormat,
}

/// Lines drawn on the screen so far (tests).
static SCREEN_LINES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[cfg(feature = "testing")]
/// Whether the log is drawn on a screen.
pub fn has_screen() -> bool {
    SCREEN.lock().is_some()
}

#[cfg(feature = "testing")]
/// Lines drawn on the screen so far.
pub fn screen_lines() -> u64 {
    SCREEN_LINES.load(core::sync::atomic::Ordering::Relaxed)
}

impl Screen {
    fn write(&mut self, text: &str) {
        let lines = text.bytes().filter(|&byte| byte == b'\n').count() as u64;
        SCREEN_LINES.fetch_add(lines, core::sync::atomic::Ordering::Relaxed);
        let mut surface = baton_fbcon::Surface {
            pixels: &mut self.shadow[..],
            width: self.width,
            height: self.height,
            pitch: self.pitch,
            format: self.format,
        };
        self.console.write_str(&mut surface, text);
        if let Some((first, end)) = self.console.take_dirty() {
            let range = (first * self.pitch).min(self.screen.len())..(end * self.pitch).min(self.screen.len());
            if let Some(source) = self.shadow.get(range.clone()) {
                self.screen[range].copy_from_slice(source);
            }
        }
    }
}

// SAFETY: the slices point at the framebuffer and at pages the console owns;
// only the holder of the `SCREEN` lock touches them.
unsafe impl Send for Screen {}

static SCREEN: Mutex<Option<Screen>> = Mutex::new(None);

/// Draws `bytes` on the screen if there is one (and keeps them for it until
/// there is). Never blocks: a screen busy elsewhere (a fault in the middle
/// of drawing) is skipped.
fn to_screen(bytes: &[u8]) {
    if let Some(mut early) = EARLY.try_lock()
        && !early.is_done
    {
        let start = early.length;
        let take = bytes.len().min(EARLY_BYTES - start);
        early.bytes[start..start + take].copy_from_slice(&bytes[..take]);
        early.length += take;
        return;
    }
    if let Some(mut screen) = SCREEN.try_lock()
        && let Some(screen) = screen.as_mut()
    {
        for chunk in bytes.utf8_chunks() {
            screen.write(chunk.valid());
            if !chunk.invalid().is_empty() {
                screen.write("?");
            }
        }
    }
}

/// Puts the console on the framebuffer: `memory` is the mapped screen and a
/// shadow copy of the same size, from the memory manager (after the page
/// allocator is up). On a KHO boot the previous kernel's lines stay on the
/// screen and scroll up; otherwise it is cleared. The output so far is
/// replayed.
pub fn attach_framebuffer(info: &baton_boot::BootInfo, memory: Option<(&'static mut [u8], &'static mut [u8])>) {
    let Some(framebuffer) = &info.framebuffer else {
        EARLY.lock().is_done = true;
        return;
    };
    // `console.screen=off`: serial only (a slow or broken framebuffer).
    if !crate::options::get().is_screen_enabled {
        EARLY.lock().is_done = true;
        log::info!(target: "console", "console.screen=off: the framebuffer is left alone");
        return;
    }
    let Some((screen, shadow)) = memory else {
        EARLY.lock().is_done = true;
        log::warn!(target: "console", "the framebuffer could not be mapped, or no memory for its shadow; serial only");
        return;
    };
    let format = baton_fbcon::PixelFormat {
        bytes_per_pixel: usize::from(framebuffer.bits_per_pixel).div_ceil(8),
        red: framebuffer.red,
        green: framebuffer.green,
        blue: framebuffer.blue,
    };
    let is_kho = info.kho.is_some();
    if is_kho {
        shadow.copy_from_slice(screen);
    } else {
        shadow.fill(0);
    }
    let (width, height, pitch) =
        (framebuffer.width as usize, framebuffer.height as usize, framebuffer.pitch_bytes as usize);
    let surface = baton_fbcon::Surface { pixels: &mut shadow[..], width, height, pitch, format };
    let Some(mut console) = baton_fbcon::TextConsole::new(&surface) else {
        EARLY.lock().is_done = true;
        log::warn!(target: "console", "framebuffer {width}x{height} is not usable for text; serial only");
        return;
    };
    let mut surface = baton_fbcon::Surface { pixels: &mut shadow[..], width, height, pitch, format };
    if is_kho {
        console.continue_at_bottom(&mut surface);
    } else {
        console.clear(&mut surface);
    }
    let columns = console.columns();
    let rows = console.rows();
    // A third of the screen at a time: scrolling moves every pixel, and
    // under QEMU's emulation line-by-line scrolling of a 4 MiB framebuffer
    // made a rehearsed update take seconds.
    console.set_scroll_step(rows / 3);
    let mut state = Screen { console, shadow, screen, width, height, pitch, format };
    {
        let mut early = EARLY.lock();
        early.is_done = true;
        // On a KHO boot the previous kernel's screen already shows what
        // came before; only this boot's lines are replayed.
        let length = early.length;
        for chunk in early.bytes[..length].utf8_chunks() {
            state.write(chunk.valid());
        }
        early.length = 0;
    }
    *SCREEN.lock() = Some(state);
    log::info!(target: "console", "framebuffer console {width}x{height} ({columns}x{rows} characters)");
}

/// Stops drawing on the screen for an update's blackout: under emulation
/// each line drawn cost milliseconds, and the next kernel continues from
/// what is on the screen anyway. Serial output goes on; the lines logged
/// meanwhile are drawn by [`resume_screen`] if the update is aborted, and
/// stay off the screen if this kernel is replaced.
pub fn pause_screen() {
    if SCREEN.lock().is_none() {
        return;
    }
    let mut early = EARLY.lock();
    early.length = 0;
    early.is_done = false;
}

/// Draws what was logged since [`pause_screen`] and goes on drawing.
pub fn resume_screen() {
    let mut early = EARLY.lock();
    if early.is_done {
        return;
    }
    early.is_done = true;
    if let Some(screen) = SCREEN.lock().as_mut() {
        let length = early.length;
        for chunk in early.bytes[..length].utf8_chunks() {
            screen.write(chunk.valid());
        }
    }
    early.length = 0;
}

/// Holds console output back until [`release`].
pub fn hold() {
    HELD.lock().is_holding = true;
}

/// The blackout is over: what was held back drains from now on
/// ([`drain_some`]), new output behind it.
pub fn release() {
    let mut held = HELD.lock();
    if held.is_holding {
        held.is_draining = true;
    }
}

/// Writes out everything held back at once and stops holding (the
/// machine is about to stop).
pub fn flush_held() {
    let _guard = LOCK.lock();
    let mut held = HELD.lock();
    while drain_locked(&mut held, HELD_BYTES) {}
}

/// Writes the next chunk of released output; whether there was any.
pub fn drain_some() -> bool {
    let Some(_guard) = LOCK.try_lock() else { return false };
    let Some(mut held) = HELD.try_lock() else { return false };
    held.is_draining && drain_locked(&mut held, DRAIN_BYTES)
}

/// Writes up to `count` held bytes (all of them if not draining yet: a
/// flush); whether there were any. Holding stops when none is left.
fn drain_locked(held: &mut Held, count: usize) -> bool {
    if !held.is_holding {
        return false;
    }
    let length = held.length.min(count);
    if let Some(uart) = UART.get() {
        uart.write_bytes(&held.bytes[..length]);
    }
    to_screen(&held.bytes[..length]);
    held.bytes.copy_within(length..held.length, 0);
    held.length -= length;
    if held.length == 0 {
        if held.dropped > 0 {
            let mut note = arrayvec::ArrayString::<64>::new();
            let _ = writeln!(note, "[console: {} bytes dropped]", held.dropped);
            if let Some(uart) = UART.get() {
                uart.write_bytes(note.as_bytes());
            }
            to_screen(note.as_bytes());
            held.dropped = 0;
        }
        held.is_holding = false;
        held.is_draining = false;
    }
    length > 0
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
        to_screen(text.as_bytes());
        Ok(())
    }
}

/// Waits until everything written has left (the UARTs write synchronously,
/// so there is nothing to wait for; kept so callers say what they need).
pub fn flush() {}

/// Whether the end of a line is waiting on the serial console (reads one
/// byte, if there is one).
pub fn has_line_ended() -> bool {
    UART.get().is_some_and(|uart| matches!(uart.try_read_byte(), Some(b'\n' | b'\r')))
}

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
        while drain_locked(&mut held, HELD_BYTES) {}
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
