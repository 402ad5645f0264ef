//! `cargo xtask test`: host unit tests of the portable crates, then QEMU runs
//! of the kernel on both architectures, with one final verdict.

use crate::arch::Arch;
use crate::build::{BuildOptions, KernelBuild, build_kernel};
use crate::doctor::{Need, ensure};
use crate::qemu::{Firmware, Medium, QemuConfig};
use crate::util;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The crates whose logic is tested on the host.
pub const HOST_CRATES: [&str; 6] = ["baton-boot", "baton-kho", "baton-mm", "baton-abi", "baton-image", "baton-user"];

/// Counts of passed and failed tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

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

/// How a QEMU case is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// QEMU `-kernel`.
    Direct,
    /// A Limine ISO with this firmware.
    Limine(Firmware),
}

/// What a QEMU case must show.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The in-kernel tests pass (status 33, `N passed, 0 failed`).
    KernelTestsPass,
    /// A deliberate fault is reported: status 35 and every listed text.
    FaultReported(Vec<String>),
}

/// One QEMU run.
#[derive(Debug, Clone)]
pub struct QemuCase {
    /// Name shown in the report.
    pub name: String,
    /// Architecture.
    pub arch: Arch,
    /// Entry path.
    pub boot: Boot,
    /// Kernel command line.
    pub command_line: String,
    /// Guest RAM.
    pub memory_mib: u32,
    /// Texts the serial output must contain.
    pub must_contain: Vec<String>,
    /// The verdict to expect.
    pub expect: Expect,
    /// Timeout.
    pub timeout: Duration,
}

/// Parses the kernel's final `ktest: N passed, M failed` line.
pub fn parse_kernel_tally(output: &str) -> Option<Tally> {
    let line = output.lines().rev().find(|line| line.starts_with("ktest: ") && line.contains(" passed, "))?;
    let rest = line.strip_prefix("ktest: ")?;
    let (passed, rest) = rest.split_once(" passed, ")?;
    let failed = rest.split_whitespace().next()?;
    Some(Tally { passed: passed.trim().parse().ok()?, failed: failed.parse().ok()? })
}

/// The QEMU cases for `arch`.
pub fn cases(arch: Arch, with_limine: bool) -> Vec<QemuCase> {
    let version = env!("CARGO_PKG_VERSION");
    let banner = |path: &str| format!("Baton {version} ({arch}) booting via {path}");
    let direct_path = match arch {
        Arch::X86_64 => "direct (PVH)",
        Arch::Aarch64 => "direct (arm64 Image)",
    };
    let fault_address = "faulting address 0xfffffe00dead0000".to_string();
    let mut cases = vec![
        QemuCase {
            name: format!("{arch} direct: kernel tests"),
            arch,
            boot: Boot::Direct,
            command_line: "ktest=all".into(),
            memory_mib: 256,
            must_contain: vec![banner(direct_path)],
            expect: Expect::KernelTestsPass,
            timeout: Duration::from_secs(120),
        },
        QemuCase {
            name: format!("{arch} direct: kernel page fault is reported"),
            arch,
            boot: Boot::Direct,
            command_line: "ktest=tests::kernel_page_fault".into(),
            memory_mib: 256,
            must_contain: vec![],
            expect: Expect::FaultReported(vec!["register dump".into(), fault_address]),
            timeout: Duration::from_secs(60),
        },
    ];
    // Memory sizes and kho_scratch= forms: boot, place scratch, run the
    // memory tests.
    let memory_case = |name: &str, memory_mib: u32, extra: &str, must_contain: Vec<String>| QemuCase {
        name: format!("{arch} direct {memory_mib} MiB{name}: memory tests"),
        arch,
        boot: Boot::Direct,
        command_line: format!("ktest=mm:: {extra}").trim().to_string(),
        memory_mib,
        must_contain,
        expect: Expect::KernelTestsPass,
        timeout: Duration::from_secs(120),
    };
    cases.push(memory_case("", 128, "", vec!["scratch lowmem".into()]));
    cases.push(memory_case("", 1024, "", vec![]));
    cases.push(memory_case("", 4096, "", vec![]));
    cases.push(memory_case(", kho_scratch=16M,64M,32M", 512, "kho_scratch=16M,64M,32M", vec!["scratch global".into()]));
    cases.push(memory_case(", kho_scratch=50%", 512, "kho_scratch=50%", vec![]));
    cases.push(memory_case(
        ", kho_scratch=lots (malformed)",
        256,
        "kho_scratch=lots",
        vec!["kho_scratch=lots is malformed".into()],
    ));
    cases.push(memory_case(
        ", kho_scratch=64M,1G,1G (too large)",
        256,
        "kho_scratch=64M,1G,1G",
        vec!["scratch reduced".into()],
    ));
    if with_limine {
        let firmwares: &[Firmware] = match arch {
            Arch::X86_64 => &[Firmware::Bios, Firmware::Uefi],
            Arch::Aarch64 => &[Firmware::Uefi],
        };
        for &firmware in firmwares {
            cases.push(QemuCase {
                name: format!("{arch} limine ({firmware:?}): kernel tests").to_lowercase(),
                arch,
                boot: Boot::Limine(firmware),
                command_line: "ktest=all".into(),
                memory_mib: 256,
                must_contain: vec![banner("limine")],
                expect: Expect::KernelTestsPass,
                timeout: Duration::from_secs(180),
            });
        }
    }
    cases
}

/// Runs one case and returns its tally (kernel tests, plus one for each
/// expectation checked by the xtask itself).
pub fn run_case(case: &QemuCase, kernel: &KernelBuild, limine: Option<&Path>, verbose: bool) -> Result<Tally> {
    let scratch = util::output_dir().join("test").join(case.arch.to_string());
    std::fs::create_dir_all(&scratch)?;
    let medium = match case.boot {
        Boot::Direct => Medium::Direct {
            kernel: kernel.direct_boot_file().clone(),
            module: None,
            command_line: case.command_line.clone(),
        },
        Boot::Limine(firmware) => {
            let limine = limine.context("Limine case without Limine files")?;
            let iso = crate::limine::build_iso(
                case.arch,
                limine,
                &crate::limine::IsoContents { kernel: kernel.elf.clone(), command_line: case.command_line.clone() },
                &scratch.join("test.iso"),
            )?;
            Medium::Iso { iso, firmware }
        }
    };
    let config = QemuConfig {
        arch: case.arch,
        medium,
        memory_mib: case.memory_mib,
        headless: true,
        kvm: false,
        extra_args: vec![],
    };
    let outcome = crate::qemu::run(config.command(&scratch)?, Some(case.timeout), true, verbose)?;
    let mut problems = Vec::new();
    if outcome.timed_out {
        problems.push(format!("timed out after {} s", case.timeout.as_secs()));
    }
    for text in &case.must_contain {
        if !outcome.output.contains(text.as_str()) {
            problems.push(format!("output lacks '{text}'"));
        }
    }
    let mut tally = Tally::default();
    match &case.expect {
        Expect::KernelTestsPass => {
            match parse_kernel_tally(&outcome.output) {
                Some(kernel_tally) => tally.add(kernel_tally),
                None => problems.push("no 'ktest: N passed, M failed' line".into()),
            }
            if outcome.status != Some(Arch::TEST_SUCCESS_STATUS) {
                problems.push(format!("QEMU exit status {:?}, expected {}", outcome.status, Arch::TEST_SUCCESS_STATUS));
            }
            if tally.passed == 0 {
                problems.push("no kernel test ran".into());
            }
        }
        Expect::FaultReported(texts) => {
            for text in texts {
                if !outcome.output.contains(text.as_str()) {
                    problems.push(format!("fault report lacks '{text}'"));
                }
            }
            if outcome.status != Some(Arch::TEST_FAILURE_STATUS) {
                problems.push(format!("QEMU exit status {:?}, expected {}", outcome.status, Arch::TEST_FAILURE_STATUS));
            }
        }
    }
    if problems.is_empty() {
        tally.passed += 1;
        println!("qemu: {} ... ok ({:.1} s)", case.name, outcome.elapsed.as_secs_f64());
    } else {
        tally.failed += 1;
        println!("qemu: {} ... FAILED: {}", case.name, problems.join("; "));
        if !verbose {
            println!("---- serial output (last 40 lines) ----");
            let lines: Vec<&str> = outcome.output.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                println!("  {line}");
            }
            println!("----");
        }
    }
    Ok(tally)
}

/// Runs the QEMU tests for `arches`.
pub fn qemu_tests(arches: &[Arch], release: bool, limine_dir: Option<&Path>, verbose: bool) -> Result<Tally> {
    let mut needs = Vec::new();
    for &arch in arches {
        needs.extend([Need::Toolchain(arch), Need::Qemu(arch)]);
    }
    ensure(&needs)?;
    let limine: Option<PathBuf> = match crate::limine::find(limine_dir) {
        Ok(directory) => {
            let mut limine_needs = vec![Need::Xorriso];
            limine_needs.extend(arches.iter().map(|&arch| Need::Uefi(arch)));
            ensure(&limine_needs)?;
            Some(directory)
        }
        Err(_) => {
            println!(
                "qemu: skipped: no Limine files (Limine boots are tested when --limine-dir or LIMINE_DIR is given)"
            );
            None
        }
    };
    let mut tally = Tally::default();
    for &arch in arches {
        println!("== QEMU tests on {arch}");
        let kernel = build_kernel(&BuildOptions { arch, release, version: None })?;
        for case in cases(arch, limine.is_some()) {
            tally.add(run_case(&case, &kernel, limine.as_deref(), verbose)?);
        }
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

    #[test]
    fn kernel_tally_is_the_last_summary_line() {
        let output = "ktest: a ... ok\nktest: 4 passed, 1 failed\n";
        let tally = parse_kernel_tally(output).unwrap();
        assert_eq!((tally.passed, tally.failed), (4, 1));
        let crashed = "ktest: 0 passed, 1 failed (kernel fault)\n";
        assert_eq!(parse_kernel_tally(crashed).map(|t| t.failed), Some(1));
        assert!(parse_kernel_tally("booting\n").is_none());
    }
}
