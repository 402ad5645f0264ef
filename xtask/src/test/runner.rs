//! The QEMU half of `cargo xtask test`: builds the kernels, boots each case
//! and checks its serial output and exit status against what it expects.

use super::Tally;
use super::cases::{Available, Boot, Expect, Module, QemuCase, cases};
use crate::arch::Arch;
use crate::build::{BuildOptions, KernelBuild, build_kernel};
use crate::doctor::{Need, ensure};
use crate::qemu::{Medium, Outcome, QemuConfig};
use crate::util;
use anyhow::{Context, Result};
use std::cell::OnceCell;
use std::path::{Path, PathBuf};

/// Parses the kernel's final `ktest: N passed, M failed` line.
pub fn parse_kernel_tally(output: &str) -> Option<Tally> {
    let line = output.lines().rev().find(|line| line.starts_with("ktest: ") && line.contains(" passed, "))?;
    let rest = line.strip_prefix("ktest: ")?;
    let (passed, rest) = rest.split_once(" passed, ")?;
    let failed = rest.split_whitespace().next()?;
    Some(Tally { passed: passed.trim().parse().ok()?, failed: failed.parse().ok()? })
}

/// The kernels a test run boots: the first and the second version, each as
/// a testing and as a production build, each built the first time it is
/// needed.
pub struct Kernels {
    arch: Arch,
    release: bool,
    /// Indexed by [`Kernels::index`].
    builds: [OnceCell<KernelBuild>; 4],
}

impl Kernels {
    fn new(arch: Arch, release: bool) -> Self {
        Kernels { arch, release, builds: Default::default() }
    }

    fn index(testing: bool, is_second: bool) -> usize {
        usize::from(testing) * 2 + usize::from(is_second)
    }

    fn get(&self, testing: bool, is_second: bool) -> Result<&KernelBuild> {
        let cell = &self.builds[Self::index(testing, is_second)];
        if cell.get().is_none() {
            let build = build_kernel(&BuildOptions {
                arch: self.arch,
                release: self.release,
                version: is_second.then(|| crate::demo::SECOND_VERSION.to_string()),
                testing,
            })?;
            let _ = cell.set(build);
        }
        cell.get().context("kernel build")
    }

    /// The first version.
    pub fn first(&self, testing: bool) -> Result<&KernelBuild> {
        self.get(testing, false)
    }

    /// The second version.
    pub fn second(&self, testing: bool) -> Result<&KernelBuild> {
        self.get(testing, true)
    }
}

/// The services table of a kernel ELF, read with the parser the kernel uses.
fn services_table(arch: Arch, elf: &Path) -> Result<baton_image::services::ServiceTable> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let machine = match arch {
        Arch::X86_64 => baton_image::Machine::X86_64,
        Arch::Aarch64 => baton_image::Machine::Aarch64,
    };
    let image = baton_image::parse(&bytes, machine).map_err(|error| anyhow::anyhow!("{}: {error:?}", elf.display()))?;
    let descriptor = image
        .find_note(baton_image::BATON_NOTE_NAME, baton_image::BATON_NOTE_SERVICES)
        .with_context(|| format!("{} has no services note", elf.display()))?;
    baton_image::services::parse_services(descriptor).map_err(|error| anyhow::anyhow!("{}: {error}", elf.display()))
}

/// What the demo's update rule relies on: the two versions, built
/// separately, record the same content hash for init and counter (so they
/// are resumed) and another for kvstore (so it restarts and migrates).
fn check_versions(arch: Arch, kernels: &Kernels, testing: bool) -> Result<Vec<String>> {
    let first = services_table(arch, &kernels.first(testing)?.elf)?;
    let second = services_table(arch, &kernels.second(testing)?.elf)?;
    let hash = |table: &baton_image::services::ServiceTable, name: &str| {
        table.services.iter().find(|record| record.name.as_str() == name).map(|record| record.hash)
    };
    let mut problems = Vec::new();
    for (name, should_match) in [("init", true), ("counter", true), ("kvstore", false)] {
        match (hash(&first, name), hash(&second, name)) {
            (Some(one), Some(two)) if (one == two) != should_match => problems.push(format!(
                "{name}'s hashes {} across the versions",
                if should_match { "differ" } else { "are equal" }
            )),
            (Some(_), Some(_)) => {}
            _ => problems.push(format!("{name} is missing from a services note")),
        }
    }
    Ok(problems)
}

/// Checks a dumped handover with the independent decoder against what the
/// kernel logged when it finalised.
fn check_dump(directory: &Path, output: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let decoded = match crate::kho_decode::decode(directory) {
        Ok(decoded) => decoded,
        Err(error) => return vec![format!("decoding the dump: {error:#}")],
    };
    if decoded.compatible != "kho-v1" {
        problems.push(format!("dumped root is '{}'", decoded.compatible));
    }
    for user in ["baton-boot", "kvstore", "counter", "init"] {
        if !decoded.users.iter().any(|(name, _)| name == user) {
            problems.push(format!("dumped root has no '{user}'"));
        }
        if !directory.join(format!("{user}.dtb")).is_file() {
            problems.push(format!("no {user}.dtb in the dump"));
        }
    }
    let logged = output
        .lines()
        .find_map(|line| line.split("folios, ").nth(1)?.split(" KiB preserved").next()?.parse::<u64>().ok());
    if logged != Some(decoded.preserved_bytes / 1024) {
        problems.push(format!(
            "the kernel logged {logged:?} KiB preserved, the dump decodes to {} KiB",
            decoded.preserved_bytes / 1024
        ));
    }
    problems
}

/// Runs one case and returns its tally (kernel tests, plus one for each
/// expectation checked by the xtask itself).
pub fn run_case(case: &QemuCase, kernels: &Kernels, limine: Option<&Path>, verbose: bool) -> Result<Tally> {
    let scratch = util::output_dir().join("test").join(case.arch.to_string());
    std::fs::create_dir_all(&scratch)?;
    let config = QemuConfig {
        arch: case.arch,
        medium: medium(case, kernels, limine, &scratch)?,
        memory_mib: case.memory_mib,
        headless: true,
        kvm: false,
        extra_args: case.qemu_args.clone(),
    };
    let (outcome, mut problems) = boot(case, &config, &scratch, verbose)?;
    if outcome.timed_out {
        problems.push(format!("timed out after {} s", case.timeout.as_secs()));
    }
    for text in &case.must_contain {
        if !outcome.output.contains(text.as_str()) {
            problems.push(format!("output lacks '{text}'"));
        }
    }
    for sequence in &case.in_order {
        check_order(&outcome.output, sequence, &mut problems);
    }
    if case.checks_no_leak
        && let Err(leak) = crate::soak::check_no_leak(&crate::soak::free_at_update_requests(&outcome.output))
    {
        problems.push(format!("memory leaked: {leak}"));
    }
    if !case.services_absent.is_empty() {
        check_embedded_services(&outcome.output, &case.services_absent, &mut problems);
    }
    let mut tally = check_expectation(&case.expect, &outcome, &mut problems);
    if problems.is_empty() {
        tally.passed += 1;
        println!("qemu: {} ... ok ({:.1} s)", case.name, outcome.elapsed.as_secs_f64());
    } else {
        tally.failed += 1;
        println!("qemu: {} ... FAILED: {}", case.name, problems.join("; "));
        if !verbose {
            print_failure_context(&outcome.output);
        }
    }
    Ok(tally)
}

/// What QEMU boots for `case`: the kernel directly with the case's module,
/// or an ISO holding the kernel (and the second version when the case
/// updates into it).
fn medium(case: &QemuCase, kernels: &Kernels, limine: Option<&Path>, scratch: &Path) -> Result<Medium> {
    let kernel = kernels.first(case.testing)?;
    let module = match case.module {
        None => None,
        Some(Module::SameImage) => Some(kernel.elf.clone()),
        Some(Module::SecondVersion) => Some(kernels.second(case.testing)?.elf.clone()),
        Some(Module::Garbage) => {
            let path = scratch.join("garbage.bin");
            let bytes: Vec<u8> =
                (0..64 * 1024u32).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            std::fs::write(&path, bytes)?;
            Some(path)
        }
    };
    Ok(match case.boot {
        Boot::Direct => Medium::Direct {
            kernel: kernel.direct_boot_file().clone(),
            module,
            command_line: case.command_line.clone(),
        },
        Boot::Limine(firmware, drive) => {
            let limine = limine.context("Limine case without Limine files")?;
            let iso = crate::limine::build_iso(
                case.arch,
                limine,
                &crate::limine::IsoContents {
                    kernel: kernel.elf.clone(),
                    command_line: case.command_line.clone(),
                    update: match case.module {
                        Some(Module::SecondVersion) => Some(kernels.second(case.testing)?.elf.clone()),
                        _ => None,
                    },
                    demo_command_line: case.command_line.clone(),
                    is_demo_default: case.module.is_some(),
                },
                &scratch.join("test.iso"),
            )?;
            Medium::Iso { iso, firmware, drive }
        }
    })
}

/// Boots QEMU for `case`, saving the handover (`dump_kho`) and the screen
/// (`demo.screenshot=1`) on the way, and returns how the run ended with the
/// problems the dump and the screenshot show.
fn boot(case: &QemuCase, config: &QemuConfig, scratch: &Path, verbose: bool) -> Result<(Outcome, Vec<String>)> {
    let mut command = config.command(scratch)?;
    let dump_directory = scratch.join("dump");
    let mut dumper = if case.dump_kho {
        let _ = std::fs::remove_dir_all(&dump_directory);
        Some(crate::dump::Dumper::new(&dump_directory, scratch, &mut command)?)
    } else {
        None
    };
    // `demo.screenshot=1`: capture the screen before shutdown and keep it.
    let screenshot_path = scratch.join(format!(
        "screen-{}.ppm",
        case.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>()
    ));
    let mut screenshot = if case.command_line.contains("demo.screenshot=1") {
        Some(crate::dump::Screenshot::new(scratch, &screenshot_path, &mut command)?)
    } else {
        None
    };
    let mut traffic = case.host_traffic.map(super::traffic::Traffic::new);
    let mut outcome = crate::qemu::run_filtered(command, Some(case.timeout), &mut |line, input| {
        if verbose {
            println!("{line}");
        }
        crate::dump::watch_line(&mut dumper, &mut screenshot, line, input, "");
        if let Some(traffic) = traffic.as_mut() {
            traffic.on_line(line, input);
        }
    })?;
    if let Some(report) = traffic.and_then(super::traffic::Traffic::report) {
        println!("  {report}");
        outcome.output.push_str(&report);
        outcome.output.push('\n');
    }
    let mut problems = Vec::new();
    if let Some(screenshot) = &screenshot {
        match screenshot.finish() {
            // Text on a black screen: a few percent of the pixels are lit.
            Ok((png, fraction)) if fraction > 0.005 => {
                println!("  screenshot: {} ({:.1}% lit)", png.display(), fraction * 100.0)
            }
            Ok((_, fraction)) => problems.push(format!("the screen is blank ({:.2}% lit)", fraction * 100.0)),
            Err(error) => problems.push(format!("no screenshot: {error:#}")),
        }
    }
    if case.dump_kho {
        problems.extend(check_dump(&dump_directory, &outcome.output));
    }
    Ok((outcome, problems))
}

/// Problems when `output` lacks any text of `present` or has any of
/// `absent`.
fn check_texts(output: &str, present: &[String], absent: &[String], problems: &mut Vec<String>) {
    for text in present {
        if !output.contains(text.as_str()) {
            problems.push(format!("output lacks '{text}'"));
        }
    }
    for text in absent {
        if output.contains(text.as_str()) {
            problems.push(format!("output unexpectedly contains '{text}'"));
        }
    }
}

/// A problem when the texts of `sequence` do not appear in `output` one
/// after the other.
fn check_order(output: &str, sequence: &[String], problems: &mut Vec<String>) {
    let mut rest = output;
    for (index, text) in sequence.iter().enumerate() {
        match rest.find(text.as_str()) {
            Some(position) => rest = &rest[position + text.len()..],
            None if output.contains(text.as_str()) => {
                let before = sequence.get(index.wrapping_sub(1)).map_or("", String::as_str);
                problems.push(format!("'{text}' does not come after '{before}'"));
                return;
            }
            None => {
                problems.push(format!("output lacks '{text}'"));
                return;
            }
        }
    }
}

/// The services every `embedded services: a, b, ...` line of `output`
/// names (one line per kernel booted).
fn embedded_services(output: &str) -> Vec<Vec<&str>> {
    output
        .lines()
        .filter_map(|line| line.split_once("embedded services:"))
        .map(|(_, names)| names.split(',').map(str::trim).filter(|name| !name.is_empty()).collect())
        .collect()
}

/// Problems when no kernel said which services it embeds, or one embeds
/// any of `absent`.
fn check_embedded_services(output: &str, absent: &[String], problems: &mut Vec<String>) {
    let lines = embedded_services(output);
    if lines.is_empty() {
        problems.push("no 'embedded services:' line".into());
    }
    for name in absent {
        if lines.iter().any(|names| names.contains(&name.as_str())) {
            problems.push(format!("the kernel embeds '{name}'"));
        }
    }
}

/// Checks the outcome against `expect`, adding to `problems`; returns the
/// kernel's own test tally when it ran tests.
fn check_expectation(expect: &Expect, outcome: &Outcome, problems: &mut Vec<String>) -> Tally {
    let mut tally = Tally::default();
    let output = &outcome.output;
    let expect_status = |status: i32, problems: &mut Vec<String>| {
        if outcome.status != Some(status) {
            problems.push(format!("QEMU exit status {:?}, expected {status}", outcome.status));
        }
    };
    let check_demo = |updates: u32, problems: &mut Vec<String>| {
        let (records, cold) = crate::demo::parse_records(output);
        if let Err(problem) = crate::demo::verdict(&records, cold, updates) {
            problems.push(problem);
        }
    };
    match expect {
        Expect::KernelTestsPass => {
            match parse_kernel_tally(output) {
                Some(kernel_tally) => tally.add(kernel_tally),
                None => problems.push("no 'ktest: N passed, M failed' line".into()),
            }
            expect_status(Arch::TEST_SUCCESS_STATUS, problems);
            if tally.passed == 0 {
                problems.push("no kernel test ran".into());
            }
        }
        Expect::Status { status, present, absent } => {
            check_texts(output, present, absent, problems);
            expect_status(*status, problems);
        }
        Expect::Survives { absent } => {
            if !output.contains("shutdown requested by init") {
                problems.push("init never shut the machine down".into());
            }
            check_texts(output, &[], absent, problems);
            if !matches!(outcome.status, Some(Arch::TEST_SUCCESS_STATUS | Arch::TEST_FAILURE_STATUS)) {
                problems.push(format!("QEMU exit status {:?}", outcome.status));
            }
        }
        Expect::DemoWith { updates, repeated, absent } => {
            check_demo(*updates, problems);
            for (text, count) in repeated {
                let seen = output.matches(text.as_str()).count();
                if seen < *count {
                    problems.push(format!("'{text}' appears {seen} times, expected {count}"));
                }
            }
            check_texts(output, &[], absent, problems);
            expect_status(Arch::TEST_SUCCESS_STATUS, problems);
        }
        Expect::Demo(updates) => {
            check_demo(*updates, problems);
            expect_status(Arch::TEST_SUCCESS_STATUS, problems);
        }
    }
    tally
}

/// After a failure: the kernel's failed checks and the services' warnings,
/// wherever they are in the output, then its last 40 lines.
fn print_failure_context(output: &str) {
    let lines: Vec<&str> = output.lines().collect();
    let failures: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| line.contains("check failed") || line.ends_with("... FAILED") || line.contains("[WARN  svc]"))
        .collect();
    if !failures.is_empty() {
        println!("---- failed kernel checks and services' warnings ----");
        for line in failures {
            println!("  {line}");
        }
    }
    println!("---- serial output (last 40 lines) ----");
    for line in &lines[lines.len().saturating_sub(40)..] {
        println!("  {line}");
    }
    println!("----");
}

/// Runs the QEMU tests for `arches`.
pub fn qemu_tests(
    arches: &[Arch],
    release: bool,
    limine_dir: Option<&Path>,
    verbose: bool,
    only: Option<&str>,
) -> Result<Tally> {
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
        let kernels = Kernels::new(arch, release);
        // Most cases boot the first testing kernel: build it before any.
        kernels.first(true)?;
        let with_bios_usb = match (&limine, arch) {
            (Some(directory), Arch::X86_64) => match crate::limine::host_tool(directory) {
                Ok(_) => true,
                Err(why) => {
                    println!("qemu: skipped: booting from a USB stick under BIOS ({why})");
                    false
                }
            },
            _ => false,
        };
        let available = Available { limine: limine.is_some(), bios_usb: with_bios_usb };
        for testing in [true, false] {
            let name = format!(
                "{arch} build ({}): version 2 embeds byte-identical init and counter and a changed kvstore",
                if testing { "testing" } else { "production" }
            );
            if only.is_some_and(|only| !name.contains(only)) {
                continue;
            }
            let problems = check_versions(arch, &kernels, testing)?;
            if problems.is_empty() {
                tally.passed += 1;
                println!("build: {name} ... ok");
            } else {
                tally.failed += 1;
                println!("build: {name} ... FAILED: {}", problems.join("; "));
            }
        }
        for case in cases(arch, &available) {
            if only.is_some_and(|only| !case.name.contains(only)) {
                continue;
            }
            tally.add(run_case(&case, &kernels, limine.as_deref(), verbose)?);
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_limine_files_are_explained() {
        let error = crate::limine::find_for(Some(Path::new("/nonexistent/limine")), None).unwrap_err();
        assert!(format!("{error:#}").contains("does not hold Limine's boot files"));
    }

    #[test]
    fn a_missing_limine_host_tool_is_explained() {
        let empty = std::env::temp_dir().join(format!("baton-no-limine-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let why = crate::limine::host_tool(&empty).unwrap_err();
        std::fs::remove_dir_all(&empty).unwrap();
        assert!(why.contains("has no limine.c"), "{why}");
    }

    #[test]
    fn embedded_services_are_read_from_every_kernel() {
        let output = "[    0.1] [INFO  boot] embedded services: init, greeter, kvstore\n\
                      booting via kho\n\
                      [    0.9] [INFO  boot] embedded services: init, hostile\n";
        assert_eq!(embedded_services(output), [vec!["init", "greeter", "kvstore"], vec!["init", "hostile"]]);
        let mut problems = Vec::new();
        check_embedded_services(output, &["hostile".into(), "spinner".into()], &mut problems);
        assert_eq!(problems, ["the kernel embeds 'hostile'"]);
        problems.clear();
        check_embedded_services("booting\n", &["hostile".into()], &mut problems);
        assert_eq!(problems, ["no 'embedded services:' line"]);
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
