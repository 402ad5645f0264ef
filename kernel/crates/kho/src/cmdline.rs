//! Kernel command-line helpers: finding `key=value` words and reading the `kho=` switch.
//!
//! # Syntax accepted
//!
//! * The command line is split at ASCII whitespace; there is no quoting.
//!   A word `--` ends the kernel's part (everything after it belongs to the
//!   first service), as on Linux.
//! * A word `key=value` has a key up to the first `=`; a word without `=`
//!   is a bare flag (value `None`). When a key repeats, the last word wins.
//! * `kho=` takes a boolean, case-insensitive: `1`, `y`, `yes`, `on`,
//!   `true` enable KHO; `0`, `n`, `no`, `off`, `false` disable it. This is
//!   the seeds' list (`0`/`off`/`n`, `1`/`on`/`y`) plus the usual
//!   `kstrtobool` spellings. Unlike `kstrtobool`, which looks only at the
//!   first one or two characters, anything else (`yellow`, `2`, an empty
//!   value) is an error.
#![deny(clippy::arithmetic_side_effects)]

use core::fmt;

/// Name of the KHO switch.
pub const KHO_PARAMETER: &str = "kho";

/// Name of the scratch sizing parameter.
pub const KHO_SCRATCH_PARAMETER: &str = "kho_scratch";

/// One word of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdlineParameter<'a> {
    /// Text before the first `=` (the whole word for a bare flag).
    pub key: &'a str,
    /// Text after the first `=`, `None` for a bare flag.
    pub value: Option<&'a str>,
}

/// The words of the kernel's part of `cmdline`, in order.
pub fn parameters(cmdline: &str) -> impl Iterator<Item = CmdlineParameter<'_>> {
    cmdline.split_ascii_whitespace().take_while(|word| *word != "--").map(|word| match word.split_once('=') {
        Some((key, value)) => CmdlineParameter { key, value: Some(value) },
        None => CmdlineParameter { key: word, value: None },
    })
}

/// The last word whose key is `key`.
pub fn find_parameter<'a>(cmdline: &'a str, key: &str) -> Option<CmdlineParameter<'a>> {
    parameters(cmdline).filter(|parameter| parameter.key == key).last()
}

/// The value of the last `key=value` word (`None` if absent or a bare flag).
pub fn parameter_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    find_parameter(cmdline, key).and_then(|parameter| parameter.value)
}

/// A command-line value that could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError {
    /// Not one of the accepted boolean spellings.
    InvalidBoolean,
    /// The parameter is present as a bare flag but needs a value.
    MissingValue,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidBoolean => write!(formatter, "not a boolean (use on/off, y/n, 1/0)"),
            Self::MissingValue => write!(formatter, "parameter needs a value"),
        }
    }
}

impl core::error::Error for CmdlineError {}

/// Parse a boolean value (see the module documentation for the spellings).
pub fn parse_boolean(value: &str) -> Result<bool, CmdlineError> {
    const TRUE_SPELLINGS: [&str; 5] = ["1", "y", "yes", "on", "true"];
    const FALSE_SPELLINGS: [&str; 5] = ["0", "n", "no", "off", "false"];
    if TRUE_SPELLINGS.iter().any(|spelling| value.eq_ignore_ascii_case(spelling)) {
        Ok(true)
    } else if FALSE_SPELLINGS.iter().any(|spelling| value.eq_ignore_ascii_case(spelling)) {
        Ok(false)
    } else {
        Err(CmdlineError::InvalidBoolean)
    }
}

/// The `kho=` setting of `cmdline`: `Ok(None)` when absent, so the caller
/// applies its default.
pub fn kho_enabled(cmdline: &str) -> Result<Option<bool>, CmdlineError> {
    match find_parameter(cmdline, KHO_PARAMETER) {
        None => Ok(None),
        Some(CmdlineParameter { value: None, .. }) => Err(CmdlineError::MissingValue),
        Some(CmdlineParameter { value: Some(value), .. }) => parse_boolean(value).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_last_occurrence_wins() {
        let cmdline = "console=ttyS0  kho=on quiet\tkho_scratch=16M,512M,256M kho=off -- kho=on";
        let words: alloc::vec::Vec<_> = parameters(cmdline).collect();
        assert_eq!(words.len(), 5);
        assert_eq!(words[2], CmdlineParameter { key: "quiet", value: None });
        assert_eq!(parameter_value(cmdline, "console"), Some("ttyS0"));
        assert_eq!(parameter_value(cmdline, "kho"), Some("off"), "the last kernel word wins, not the one after --");
        assert_eq!(parameter_value(cmdline, "kho_scratch"), Some("16M,512M,256M"));
        assert_eq!(parameter_value(cmdline, "quiet"), None);
        assert!(find_parameter(cmdline, "quiet").is_some());
        assert_eq!(parameter_value(cmdline, "missing"), None);
        assert_eq!(parameter_value("a=b=c", "a"), Some("b=c"));
        assert_eq!(parameter_value("kho=", "kho"), Some(""));
    }

    #[test]
    fn seed_and_kstrtobool_spellings() {
        for spelling in ["1", "on", "y", "Y", "yes", "YES", "true", "True", "ON"] {
            assert_eq!(parse_boolean(spelling), Ok(true), "{spelling}");
        }
        for spelling in ["0", "off", "n", "N", "no", "false", "FALSE", "Off"] {
            assert_eq!(parse_boolean(spelling), Ok(false), "{spelling}");
        }
        for spelling in ["", "2", "yellow", "onn", "of", " on", "t", "f", "enable"] {
            assert_eq!(parse_boolean(spelling), Err(CmdlineError::InvalidBoolean), "{spelling:?}");
        }
    }

    #[test]
    fn kho_switch() {
        assert_eq!(kho_enabled("quiet"), Ok(None));
        assert_eq!(kho_enabled("kho=on"), Ok(Some(true)));
        assert_eq!(kho_enabled("kho=1 kho=n"), Ok(Some(false)));
        assert_eq!(kho_enabled("kho"), Err(CmdlineError::MissingValue));
        assert_eq!(kho_enabled("kho=maybe"), Err(CmdlineError::InvalidBoolean));
    }
}
