//! The host half of `cargo xtask test`: the unit tests of the portable
//! crates, counted from cargo's `test result:` lines.

use super::Tally;
use crate::util;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// The crates whose logic is tested on the host.
pub const HOST_CRATES: [&str; 11] = [
    "baton-boot",
    "baton-kho",
    "baton-mm",
    "baton-abi",
    "baton-image",
    "baton-procdesc",
    "baton-pci",
    "baton-channel",
    "baton-sockets",
    "baton-resp",
    "baton-user",
];

/// Parses `test result: ok. 12 passed; 0 failed; ...` lines.
fn parse_cargo_test_line(line: &str) -> Option<Tally> {
    let rest = line.strip_prefix("test result: ")?;
    let number_before = |word: &str| {
        rest.split(';').find_map(|part| part.trim().strip_suffix(word)?.split_whitespace().last()?.parse().ok())
    };
    Some(Tally { passed: number_before(" passed")?, failed: number_before(" failed")? })
}

/// Runs the host unit tests.
pub fn host_tests() -> Result<Tally> {
    println!("== host unit tests: {}", HOST_CRATES.join(", "));
    let mut command = util::cargo();
    command.arg("test");
    for name in HOST_CRATES {
        command.args(["--package", name]);
    }
    command.stdout(Stdio::piped());
    let mut child = command.spawn().context("starting cargo test")?;
    let mut tally = Tally::default();
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = parse_cargo_test_line(&line) {
            tally.add(result);
        }
    }
    let status = child.wait()?;
    if !status.success() && tally.failed == 0 {
        // A build failure: count it so the run fails.
        tally.failed += 1;
        println!("host tests: cargo test failed ({status})");
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_result_lines_are_parsed() {
        let tally = parse_cargo_test_line("test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured").unwrap();
        assert_eq!((tally.passed, tally.failed), (17, 0));
        let tally = parse_cargo_test_line("test result: FAILED. 3 passed; 2 failed; 0 ignored").unwrap();
        assert_eq!((tally.passed, tally.failed), (3, 2));
        assert!(parse_cargo_test_line("running 3 tests").is_none());
    }
}
