//! The start arguments the kernel gives init and the benchmark's ballast
//! service in their first register: one definition for the kernel (which
//! encodes them from its command line) and the services (which decode
//! them), so neither side writes bit positions by hand.
//!
//! | service | bits | meaning |
//! |---|---|---|
//! | init | 0-31 | updates the demo performs (`demo.updates=`) |
//! | init | 32 | shut the machine down when the demo ends (`demo.shutdown=1`) |
//! | init | 33 | update into the running kernel's own image (`demo.image=own`) |
//! | init | 34 | wait for the ballast service before updating (`bench.ballast=`) |
//! | init | 35 | the first client ends without reporting (`test.client=exit-early`) |
//! | init | 48-63 | milliseconds to wait before each update (`demo.interval_ms=`) |
//! | ballast | 0-31 | state in MiB |
//! | ballast | 32-39 | folio order |
//! | ballast | 40 | keep the state by copying instead of in place (`bench.copy=1`) |

const SHUTDOWN_BIT: u32 = 32;
const OWN_IMAGE_BIT: u32 = 33;
const WAIT_FOR_BALLAST_BIT: u32 = 34;
const CLIENT_EXITS_EARLY_BIT: u32 = 35;
const INTERVAL_SHIFT: u32 = 48;
const BALLAST_ORDER_SHIFT: u32 = 32;
const BALLAST_COPYING_BIT: u32 = 40;

/// init's start argument: what the self-update demo does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitStart {
    /// Updates the demo performs.
    pub updates: u32,
    /// Power off when the demo ends.
    pub shutdown_when_done: bool,
    /// Update into the running kernel's own image instead of the boot
    /// module.
    pub own_image: bool,
    /// Wait until the ballast service is ready before the first update.
    pub wait_for_ballast: bool,
    /// The first client ends without reporting (a test of init's handling).
    pub client_exits_early: bool,
    /// Milliseconds the demo waits before each update, so that traffic
    /// runs between them (at most 65535).
    pub interval_ms: u16,
}

impl InitStart {
    /// The register value.
    pub const fn encode(&self) -> u64 {
        self.updates as u64
            | (self.shutdown_when_done as u64) << SHUTDOWN_BIT
            | (self.own_image as u64) << OWN_IMAGE_BIT
            | (self.wait_for_ballast as u64) << WAIT_FOR_BALLAST_BIT
            | (self.client_exits_early as u64) << CLIENT_EXITS_EARLY_BIT
            | (self.interval_ms as u64) << INTERVAL_SHIFT
    }

    /// Reads a register value (unknown bits are ignored).
    pub const fn decode(word: u64) -> Self {
        Self {
            updates: word as u32,
            shutdown_when_done: word & (1 << SHUTDOWN_BIT) != 0,
            own_image: word & (1 << OWN_IMAGE_BIT) != 0,
            wait_for_ballast: word & (1 << WAIT_FOR_BALLAST_BIT) != 0,
            client_exits_early: word & (1 << CLIENT_EXITS_EARLY_BIT) != 0,
            interval_ms: (word >> INTERVAL_SHIFT) as u16,
        }
    }
}

/// The ballast service's start argument: how much state it keeps and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BallastStart {
    /// State in MiB.
    pub mebibytes: u32,
    /// Folio order of the state.
    pub order: u8,
    /// Keep the state by copying it through a sub-FDT's folios instead of
    /// in place.
    pub is_copying: bool,
}

impl BallastStart {
    /// The register value.
    pub const fn encode(&self) -> u64 {
        self.mebibytes as u64
            | (self.order as u64) << BALLAST_ORDER_SHIFT
            | (self.is_copying as u64) << BALLAST_COPYING_BIT
    }

    /// Reads a register value (unknown bits are ignored).
    pub const fn decode(word: u64) -> Self {
        Self {
            mebibytes: word as u32,
            order: (word >> BALLAST_ORDER_SHIFT) as u8,
            is_copying: word & (1 << BALLAST_COPYING_BIT) != 0,
        }
    }
}

/// A sample start argument: `updates` and the four flags from the low
/// bits of `flags` (tests of the encoding and the ABI fingerprint).
#[cfg(test)]
pub(crate) fn init_start_sample(updates: u32, flags: u8) -> InitStart {
    InitStart {
        updates,
        shutdown_when_done: flags & 1 != 0,
        own_image: flags & 2 != 0,
        wait_for_ballast: flags & 4 != 0,
        client_exits_early: flags & 8 != 0,
        interval_ms: if flags & 1 != 0 { u16::MAX } else { u16::from(flags) * 100 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_start_round_trips() {
        for updates in [0, 1, 5, u32::MAX] {
            for flags in 0..16u8 {
                let start = init_start_sample(updates, flags);
                assert_eq!(InitStart::decode(start.encode()), start);
            }
        }
    }

    #[test]
    fn init_start_keeps_its_documented_bits() {
        // The table in the module documentation is what older images use.
        let start = InitStart { updates: 7, shutdown_when_done: true, ..InitStart::default() };
        assert_eq!(start.encode(), 7 | 1 << 32);
        assert!(InitStart::decode(1 << 35).client_exits_early);
        assert!(InitStart::decode(1 << 34).wait_for_ballast);
        assert!(InitStart::decode(1 << 33).own_image);
    }

    #[test]
    fn ballast_start_round_trips() {
        for mebibytes in [1, 64, 4096, u32::MAX] {
            for order in [0u8, 9, 10, 255] {
                for is_copying in [false, true] {
                    let start = BallastStart { mebibytes, order, is_copying };
                    assert_eq!(BallastStart::decode(start.encode()), start);
                }
            }
        }
        assert_eq!(BallastStart { mebibytes: 16, order: 9, is_copying: true }.encode(), 16 | 9 << 32 | 1 << 40);
    }
}
