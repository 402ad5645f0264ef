//! Logging from services through the kernel log (`log` facade).

use core::fmt;
#[cfg(target_os = "none")]
use log::{LevelFilter, Log, Metadata, Record};

/// A line assembled on the stack before it is written.
pub struct LineBuffer {
    bytes: [u8; baton_abi::MAX_LOG_BYTES],
    length: usize,
}

impl LineBuffer {
    /// An empty line.
    pub const fn new() -> Self {
        Self { bytes: [0; baton_abi::MAX_LOG_BYTES], length: 0 }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for LineBuffer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.length;
        let take = text.len().min(room);
        self.bytes[self.length..self.length + take].copy_from_slice(&text.as_bytes()[..take]);
        self.length += take;
        Ok(())
    }
}

#[cfg(target_os = "none")]
struct KernelLog;

#[cfg(target_os = "none")]
static LOGGER: KernelLog = KernelLog;

#[cfg(target_os = "none")]
impl Log for KernelLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let mut line = LineBuffer::new();
            let _ = fmt::write(&mut line, *record.args());
            crate::syscall::log(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Routes `log` records to the kernel log.
#[cfg(target_os = "none")]
pub(crate) fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}
