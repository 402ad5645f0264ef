//! Error numbers returned by system calls. Zero means success.

use core::fmt;

/// Why a system call failed. The numbers are part of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u64)]
pub enum Error {
    /// The system call number is not known.
    UnknownSyscall = 1,
    /// A pointer (with its length) is not mapped in the caller's user half,
    /// points into the kernel half, or lacks the needed access.
    BadAddress = 2,
    /// A pointer, length or address is not aligned as required.
    Misaligned = 3,
    /// An address plus a length overflows.
    Overflow = 4,
    /// An argument is out of range or malformed.
    InvalidArgument = 5,
    /// Out of memory (or of a kernel table's capacity).
    NoMemory = 6,
    /// The named thing does not exist.
    NotFound = 7,
    /// The handover is finalised: preservation state cannot change now.
    Busy = 8,
    /// The caller does not own what it names, or lacks the privilege.
    PermissionDenied = 9,
    /// A buffer or blob is larger than allowed.
    TooLarge = 10,
    /// There is no incoming handover for this service.
    NoHandover = 11,
    /// The name or thing already exists.
    AlreadyExists = 12,
    /// The operation cannot complete now (non-blocking call, full queue).
    WouldBlock = 13,
    /// The peer of an IPC call went away.
    PeerGone = 14,
    /// An update was refused (bad image, services not ready) or aborted.
    UpdateFailed = 15,
    /// A call was received by a service that was then restarted by a live
    /// update before it answered: the request may or may not have taken
    /// effect, and it is never delivered twice. Retry only an idempotent
    /// request.
    CallInterrupted = 16,
}

impl Error {
    /// Every error, in number order.
    pub const ALL: [Error; 16] = [
        Error::UnknownSyscall,
        Error::BadAddress,
        Error::Misaligned,
        Error::Overflow,
        Error::InvalidArgument,
        Error::NoMemory,
        Error::NotFound,
        Error::Busy,
        Error::PermissionDenied,
        Error::TooLarge,
        Error::NoHandover,
        Error::AlreadyExists,
        Error::WouldBlock,
        Error::PeerGone,
        Error::UpdateFailed,
        Error::CallInterrupted,
    ];

    /// The error's number.
    pub const fn number(self) -> u64 {
        self as u64
    }

    /// The error with this number, if any (0 is success, not an error).
    pub fn from_number(number: u64) -> Option<Error> {
        Error::ALL.iter().copied().find(|error| error.number() == number)
    }

    /// A short, stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Error::UnknownSyscall => "unknown system call",
            Error::BadAddress => "bad address",
            Error::Misaligned => "misaligned",
            Error::Overflow => "overflow",
            Error::InvalidArgument => "invalid argument",
            Error::NoMemory => "out of memory",
            Error::NotFound => "not found",
            Error::Busy => "busy (handover finalised)",
            Error::PermissionDenied => "permission denied",
            Error::TooLarge => "too large",
            Error::NoHandover => "no handover",
            Error::AlreadyExists => "already exists",
            Error::WouldBlock => "would block",
            Error::PeerGone => "peer gone",
            Error::UpdateFailed => "update failed",
            Error::CallInterrupted => "call interrupted by a service restart",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (error {})", self.name(), self.number())
    }
}

/// Packs a result into the two return registers: (status, value).
pub fn encode_result(result: Result<u64, Error>) -> (u64, u64) {
    match result {
        Ok(value) => (0, value),
        Err(error) => (error.number(), 0),
    }
}

/// Unpacks the two return registers.
pub fn decode_result(status: u64, value: u64) -> Result<u64, Error> {
    match status {
        0 => Ok(value),
        number => Err(Error::from_number(number).unwrap_or(Error::UnknownSyscall)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_unique_and_round_trip() {
        for (index, error) in Error::ALL.iter().enumerate() {
            assert_eq!(error.number(), index as u64 + 1);
            assert_eq!(Error::from_number(error.number()), Some(*error));
            assert_eq!(decode_result(encode_result(Err(*error)).0, 0), Err(*error));
        }
        assert_eq!(Error::from_number(0), None);
        assert_eq!(Error::from_number(99), None);
        assert_eq!(decode_result(0, 42), Ok(42));
        assert_eq!(encode_result(Ok(7)), (0, 7));
    }
}
