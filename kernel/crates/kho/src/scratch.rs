//! Scratch region sizing: the `kho_scratch=` parameter and the sizes it yields.
//!
//! Scratch regions are physically contiguous memory that never holds
//! preserved folios; after a handover the next kernel lives in them until
//! it has read the handover. On a cold boot their sizes come from
//! `kho_scratch=`; after a KHO boot the previous regions are reused and the
//! parameter is ignored (that decision belongs to the caller).
//!
//! # `kho_scratch=` syntax
//!
//! * `N%`: scale every region to N percent of the memory boot allocated
//!   (below the low limit for the low region, in total for the global
//!   region, per node for the node regions). Without the parameter the
//!   scale is [`DEFAULT_SCRATCH_SCALE_PERCENT`] (200 %).
//! * `LOW,GLOBAL,PERNODE`: explicit sizes for the low region, the global
//!   region and each per-node region. They take precedence over any scale.
//!
//! A number is decimal (`0`-`9`, leading zeros allowed and not octal) or
//! hexadecimal with a `0x`/`0X` prefix. A size may end in `K`, `M`, `G` or
//! `T` (either case; powers of 1024). Sizes and the scale must be non-zero;
//! empty fields, signs, spaces, other suffixes, a field count other than
//! one scale or three sizes, trailing characters and values that overflow
//! 64 bits (32 bits for the scale) are errors.
#![deny(clippy::arithmetic_side_effects)]

use core::fmt;

/// Scale used when `kho_scratch=` is absent.
pub const DEFAULT_SCRATCH_SCALE_PERCENT: u32 = 200;

/// Alignment Baton rounds scratch regions to.
pub const BATON_SCRATCH_ALIGNMENT_BYTES: u64 = 2 << 20;

/// How scratch regions are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchSizing {
    /// A percentage of the memory boot allocated.
    Scale {
        /// The percentage, at least 1.
        percent: u32,
    },
    /// Fixed sizes.
    Explicit {
        /// Size of the low-memory region.
        lowmem_bytes: u64,
        /// Size of the global region.
        global_bytes: u64,
        /// Size of each per-node region.
        per_node_bytes: u64,
    },
}

impl Default for ScratchSizing {
    fn default() -> Self {
        Self::Scale { percent: DEFAULT_SCRATCH_SCALE_PERCENT }
    }
}

/// Why a `kho_scratch=` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchParseError {
    /// The value or one of its fields is empty.
    Empty,
    /// A field does not start with a number.
    InvalidNumber,
    /// A number does not fit (64 bits for sizes, 32 bits for the scale).
    Overflow,
    /// A size or the scale is zero.
    Zero,
    /// Neither one `N%` nor three comma-separated sizes.
    WrongFieldCount,
    /// Characters after a number (and its suffix) that do not belong there.
    TrailingCharacters,
}

impl fmt::Display for ScratchParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Empty => "empty kho_scratch field",
            Self::InvalidNumber => "kho_scratch field is not a number",
            Self::Overflow => "kho_scratch value too large",
            Self::Zero => "kho_scratch sizes and scale must be non-zero",
            Self::WrongFieldCount => "kho_scratch takes N% or three sizes",
            Self::TrailingCharacters => "unexpected characters in kho_scratch",
        };
        formatter.write_str(text)
    }
}

impl core::error::Error for ScratchParseError {}

/// Why scratch sizes could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchSizeError {
    /// The alignment is zero or not a power of two.
    BadAlignment {
        /// The alignment given.
        alignment_bytes: u64,
    },
    /// A size does not fit in 64 bits after scaling or rounding.
    Overflow,
}

impl fmt::Display for ScratchSizeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadAlignment { alignment_bytes } => {
                write!(formatter, "scratch alignment {alignment_bytes:#x} is not a power of two")
            }
            Self::Overflow => write!(formatter, "scratch size overflows"),
        }
    }
}

impl core::error::Error for ScratchSizeError {}

/// Sizes of the low and global regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchSizes {
    /// The region below the architecture's low-memory limit.
    pub lowmem_bytes: u64,
    /// The region anywhere in memory.
    pub global_bytes: u64,
}

/// Parse a number (decimal or `0x` hexadecimal) at the start of `text`;
/// return it and the rest.
fn parse_number(text: &str) -> Result<(u64, &str), ScratchParseError> {
    if text.is_empty() {
        return Err(ScratchParseError::Empty);
    }
    let (digits_and_rest, radix) = match text.get(..2) {
        Some("0x" | "0X") => (text.get(2..).unwrap_or_default(), 16),
        _ => (text, 10),
    };
    let digit_count = digits_and_rest.bytes().take_while(|byte| char::from(*byte).is_digit(radix)).count();
    if digit_count == 0 {
        return Err(ScratchParseError::InvalidNumber);
    }
    let (digits, rest) = digits_and_rest.split_at(digit_count);
    let value = u64::from_str_radix(digits, radix).map_err(|_| ScratchParseError::Overflow)?;
    Ok((value, rest))
}

/// Parse one size field: a number and an optional K/M/G/T suffix, nothing else.
fn parse_size(field: &str) -> Result<u64, ScratchParseError> {
    let (value, rest) = parse_number(field)?;
    let shift = match rest {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return Err(ScratchParseError::TrailingCharacters),
    };
    if value == 0 {
        return Err(ScratchParseError::Zero);
    }
    if value.leading_zeros() < shift {
        return Err(ScratchParseError::Overflow);
    }
    Ok(value << shift)
}

impl ScratchSizing {
    /// Parse a `kho_scratch=` value (see the module documentation).
    pub fn parse(value: &str) -> Result<Self, ScratchParseError> {
        if value.is_empty() {
            return Err(ScratchParseError::Empty);
        }
        if let Some(number) = value.strip_suffix('%') {
            let (percent, rest) = parse_number(number)?;
            if !rest.is_empty() {
                return Err(ScratchParseError::TrailingCharacters);
            }
            let percent = u32::try_from(percent).map_err(|_| ScratchParseError::Overflow)?;
            if percent == 0 {
                return Err(ScratchParseError::Zero);
            }
            return Ok(Self::Scale { percent });
        }
        let mut fields = value.split(',');
        let (Some(low), Some(global), Some(per_node), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            // A lone number may still be a malformed scale or size: report
            // the most precise error.
            if !value.contains(',') {
                parse_size(value)?;
            }
            return Err(ScratchParseError::WrongFieldCount);
        };
        Ok(Self::Explicit {
            lowmem_bytes: parse_size(low)?,
            global_bytes: parse_size(global)?,
            per_node_bytes: parse_size(per_node)?,
        })
    }

    /// Sizes of the low and global regions, following the seeds' rules:
    /// with a scale, `lowmem = low × scale / 100` and
    /// `global = total × scale / 100 − lowmem` (zero rather than negative);
    /// explicit sizes are used as given. Every size is rounded up to
    /// `alignment_bytes` (a power of two; Baton uses
    /// [`BATON_SCRATCH_ALIGNMENT_BYTES`]).
    ///
    /// `allocated_low_bytes` is what boot allocated below the low-memory
    /// limit and `allocated_total_bytes` what it allocated in total.
    pub fn sizes(
        &self,
        allocated_low_bytes: u64,
        allocated_total_bytes: u64,
        alignment_bytes: u64,
    ) -> Result<ScratchSizes, ScratchSizeError> {
        check_alignment(alignment_bytes)?;
        match *self {
            Self::Scale { percent } => {
                let lowmem_bytes = round_up(scale(allocated_low_bytes, percent)?, alignment_bytes)?;
                let global = scale(allocated_total_bytes, percent)?.saturating_sub(lowmem_bytes);
                Ok(ScratchSizes { lowmem_bytes, global_bytes: round_up(global, alignment_bytes)? })
            }
            Self::Explicit { lowmem_bytes, global_bytes, .. } => Ok(ScratchSizes {
                lowmem_bytes: round_up(lowmem_bytes, alignment_bytes)?,
                global_bytes: round_up(global_bytes, alignment_bytes)?,
            }),
        }
    }

    /// Size of the scratch region of a node on which boot allocated
    /// `allocated_node_bytes`: `node × scale / 100`, or the explicit
    /// per-node size, rounded up to `alignment_bytes`.
    pub fn per_node_size(&self, allocated_node_bytes: u64, alignment_bytes: u64) -> Result<u64, ScratchSizeError> {
        check_alignment(alignment_bytes)?;
        match *self {
            Self::Scale { percent } => round_up(scale(allocated_node_bytes, percent)?, alignment_bytes),
            Self::Explicit { per_node_bytes, .. } => round_up(per_node_bytes, alignment_bytes),
        }
    }
}

fn check_alignment(alignment_bytes: u64) -> Result<(), ScratchSizeError> {
    if alignment_bytes.is_power_of_two() { Ok(()) } else { Err(ScratchSizeError::BadAlignment { alignment_bytes }) }
}

/// `bytes × percent / 100` without intermediate overflow.
fn scale(bytes: u64, percent: u32) -> Result<u64, ScratchSizeError> {
    let scaled = u128::from(bytes)
        .checked_mul(u128::from(percent))
        .and_then(|product| product.checked_div(100))
        .ok_or(ScratchSizeError::Overflow)?;
    u64::try_from(scaled).map_err(|_| ScratchSizeError::Overflow)
}

fn round_up(bytes: u64, alignment_bytes: u64) -> Result<u64, ScratchSizeError> {
    crate::memory::align_up(bytes, alignment_bytes).ok_or(ScratchSizeError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn scale_form() {
        assert_eq!(ScratchSizing::parse("50%"), Ok(ScratchSizing::Scale { percent: 50 }));
        assert_eq!(ScratchSizing::parse("0x64%"), Ok(ScratchSizing::Scale { percent: 100 }));
        assert_eq!(ScratchSizing::parse("007%"), Ok(ScratchSizing::Scale { percent: 7 }));
        assert_eq!(ScratchSizing::parse("0%"), Err(ScratchParseError::Zero));
        assert_eq!(ScratchSizing::parse("%"), Err(ScratchParseError::Empty));
        assert_eq!(ScratchSizing::parse("5x%"), Err(ScratchParseError::TrailingCharacters));
        assert_eq!(ScratchSizing::parse("5M%"), Err(ScratchParseError::TrailingCharacters));
        assert_eq!(ScratchSizing::parse("-5%"), Err(ScratchParseError::InvalidNumber));
        assert_eq!(ScratchSizing::parse("4294967296%"), Err(ScratchParseError::Overflow));
        assert_eq!(ScratchSizing::parse("50%%"), Err(ScratchParseError::TrailingCharacters));
        assert_eq!(ScratchSizing::default(), ScratchSizing::Scale { percent: 200 });
    }

    #[test]
    fn explicit_form() {
        assert_eq!(
            ScratchSizing::parse("16M,512M,256M"),
            Ok(ScratchSizing::Explicit { lowmem_bytes: 16 * MIB, global_bytes: 512 * MIB, per_node_bytes: 256 * MIB })
        );
        assert_eq!(
            ScratchSizing::parse("4096,0x1000k,1t"),
            Ok(ScratchSizing::Explicit { lowmem_bytes: 4096, global_bytes: 0x1000 << 10, per_node_bytes: 1 << 40 })
        );
        assert_eq!(
            ScratchSizing::parse("1G,2G,3G"),
            Ok(ScratchSizing::Explicit { lowmem_bytes: GIB, global_bytes: 2 * GIB, per_node_bytes: 3 * GIB })
        );
    }

    #[test]
    fn malformed_values() {
        use ScratchParseError::*;
        let cases = [
            ("", Empty),
            ("16M", WrongFieldCount),
            ("16M,512M", WrongFieldCount),
            ("16M,512M,256M,1M", WrongFieldCount),
            ("16M,,256M", Empty),
            ("16M,512M,", Empty),
            ("0,512M,256M", Zero),
            ("16M,0x0,256M", Zero),
            ("16M,512M,256Mx", TrailingCharacters),
            ("16M,512MB,256M", TrailingCharacters),
            ("16P,512M,256M", TrailingCharacters),
            ("16 M,512M,256M", TrailingCharacters),
            (" 16M,512M,256M", InvalidNumber),
            ("M,512M,256M", InvalidNumber),
            ("0x,512M,256M", InvalidNumber),
            ("+1M,512M,256M", InvalidNumber),
            ("16777216T,1M,1M", Overflow),
            ("99999999999999999999,1M,1M", Overflow),
            ("abc", InvalidNumber),
            ("12x", TrailingCharacters),
        ];
        for (value, error) in cases {
            assert_eq!(ScratchSizing::parse(value), Err(error), "{value:?}");
        }
    }

    #[test]
    fn scaled_sizes_follow_the_seeds() {
        let sizing = ScratchSizing::default();
        // Boot allocated 3 MiB below the low limit and 40 MiB in total.
        let sizes = sizing.sizes(3 * MIB, 40 * MIB, BATON_SCRATCH_ALIGNMENT_BYTES).unwrap();
        assert_eq!(sizes.lowmem_bytes, 6 * MIB);
        assert_eq!(sizes.global_bytes, 80 * MIB - 6 * MIB);
        // Rounding: 1 MiB at 150 % is 1.5 MiB, rounded up to 2 MiB.
        let sizing = ScratchSizing::Scale { percent: 150 };
        let sizes = sizing.sizes(MIB, MIB, 2 * MIB).unwrap();
        assert_eq!(sizes, ScratchSizes { lowmem_bytes: 2 * MIB, global_bytes: 0 });
        assert_eq!(sizing.per_node_size(3 * MIB, 2 * MIB), Ok(6 * MIB));
        assert_eq!(sizing.per_node_size(0, 2 * MIB), Ok(0));
    }

    #[test]
    fn global_never_underflows() {
        // More allocated below the low limit than in total (inconsistent
        // input) must not wrap around.
        let sizes = ScratchSizing::Scale { percent: 100 }.sizes(10 * MIB, 4 * MIB, 4096).unwrap();
        assert_eq!(sizes.global_bytes, 0);
    }

    #[test]
    fn explicit_sizes_take_precedence_and_round() {
        let sizing = ScratchSizing::parse("3M,5M,1K").unwrap();
        let sizes = sizing.sizes(100 * GIB, 200 * GIB, 2 * MIB).unwrap();
        assert_eq!(sizes, ScratchSizes { lowmem_bytes: 4 * MIB, global_bytes: 6 * MIB });
        assert_eq!(sizing.per_node_size(50 * GIB, 2 * MIB), Ok(2 * MIB));
    }

    #[test]
    fn overflow_and_alignment_errors() {
        let sizing = ScratchSizing::Scale { percent: u32::MAX };
        assert_eq!(sizing.sizes(u64::MAX, u64::MAX, 4096), Err(ScratchSizeError::Overflow));
        let big = ScratchSizing::Explicit { lowmem_bytes: u64::MAX, global_bytes: 1, per_node_bytes: 1 };
        assert_eq!(big.sizes(0, 0, 4096), Err(ScratchSizeError::Overflow));
        assert_eq!(ScratchSizing::default().sizes(1, 1, 3), Err(ScratchSizeError::BadAlignment { alignment_bytes: 3 }));
        assert_eq!(
            ScratchSizing::default().per_node_size(1, 0),
            Err(ScratchSizeError::BadAlignment { alignment_bytes: 0 })
        );
    }
}
