//! `cargo xtask test`: host unit tests of the portable crates, then QEMU runs
//! of the kernel on both architectures, with one final verdict.

use crate::arch::Arch;
use crate::args::{LimineDir, Profile};
use crate::build::{BuildOptions, KernelBuild, build_kernel};
use crate::doctor::{Need, ensure};
use crate::qemu::{Drive, Firmware, Medium, QemuConfig};
use crate::util;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// `cargo xtask test`: host unit tests, then QEMU boots on both
/// architectures.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Only the host unit tests.
    #[arg(long, conflicts_with = "qemu")]
    host: bool,
    /// Only the QEMU tests.
    #[arg(long)]
    qemu: bool,
    /// Only this architecture's QEMU tests.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    #[command(flatten)]
    profile: Profile,
    /// Echo every QEMU run's serial console.
    #[arg(long)]
    verbose: bool,
    /// Only the QEMU cases whose name contains this text.
    #[arg(long, allow_hyphen_values = true)]
    only: Option<String>,
    #[command(flatten)]
    limine: LimineDir,
}

impl Args {
    /// Runs the tests asked for and fails if any failed.
    pub fn run(&self) -> Result<()> {
        let mut tally = Tally::default();
        if !self.qemu {
            tally.add(host_tests()?);
        }
        if !self.host {
            let arches: Vec<Arch> = self.arch.map_or(Arch::ALL.to_vec(), |arch| vec![arch]);
            tally.add(qemu_tests(
                &arches,
                self.profile.release,
                self.limine.limine_dir.as_deref(),
                self.verbose,
                self.only.as_deref(),
            )?);
        }
        println!("{} passed, {} failed", tally.passed, tally.failed);
        if tally.failed > 0 {
            bail!("{} test(s) failed", tally.failed);
        }
        Ok(())
    }
}

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
    /// A Limine ISO with this firmware, in this drive.
    Limine(Firmware, Drive),
}

/// What a QEMU case must show.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The in-kernel tests pass (status 33, `N passed, 0 failed`).
    KernelTestsPass,
    /// QEMU exits with `status`, the output contains every text of
    /// `present` and none of `absent`.
    Status {
        /// The exit status.
        status: i32,
        /// Texts that must appear.
        present: Vec<String>,
        /// Texts that must not appear.
        absent: Vec<String>,
    },
    /// The update demo completes this many updates with nothing lost.
    Demo(u32),
    /// The guest ends through init's shutdown (status 33 or 35, whatever
    /// the demo concluded), not by a fault or a timeout, and none of
    /// `absent` appears.
    Survives {
        /// Texts that must not appear.
        absent: Vec<String>,
    },
    /// As `Demo`, and each text appears (at least) as often as given, and
    /// none of `absent` appears.
    DemoWith {
        /// Updates.
        updates: u32,
        /// Texts and how often each must appear.
        repeated: Vec<(String, usize)>,
        /// Texts that must not appear.
        absent: Vec<String>,
    },
}

/// The boot module a case gives the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// The kernel's own ELF (self-kexec into the same version).
    SameImage,
    /// The second version's ELF.
    SecondVersion,
    /// Bytes that are not a kernel image.
    Garbage,
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
    /// The boot module, if any.
    pub module: Option<Module>,
    /// Save the first outgoing handover (`kho.pause=1`) and decode it
    /// independently.
    pub dump_kho: bool,
    /// Texts the serial output must contain.
    pub must_contain: Vec<String>,
    /// The verdict to expect.
    pub expect: Expect,
    /// Timeout.
    /// Extra QEMU arguments (machine options such as `hpet=off`).
    pub qemu_args: Vec<String>,
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
pub fn cases(arch: Arch, with_limine: bool, with_bios_usb: bool) -> Vec<QemuCase> {
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
            module: None,
            dump_kho: false,
            must_contain: vec![banner(direct_path)],
            expect: Expect::KernelTestsPass,
            qemu_args: vec![],
            timeout: Duration::from_secs(120),
        },
        QemuCase {
            // Two NUMA nodes: the SRAT (x86_64) or the device tree's
            // `numa-node-id` (aarch64) gives each its scratch region.
            name: format!("{arch} direct: two NUMA nodes get a scratch region each"),
            arch,
            boot: Boot::Direct,
            command_line: "ktest=mm::tests::numa_nodes_each_have_scratch".into(),
            memory_mib: 1024,
            module: None,
            dump_kho: false,
            must_contain: vec!["NUMA: 2 node(s)".into(), "scratch node 1".into()],
            expect: Expect::KernelTestsPass,
            qemu_args: [
                "-object",
                "memory-backend-ram,id=m0,size=512M",
                "-object",
                "memory-backend-ram,id=m1,size=512M",
                "-numa",
                "node,nodeid=0,memdev=m0",
                "-numa",
                "node,nodeid=1,memdev=m1",
            ]
            .map(String::from)
            .to_vec(),
            timeout: Duration::from_secs(120),
        },
        QemuCase {
            name: format!("{arch} direct: kernel page fault is reported"),
            arch,
            boot: Boot::Direct,
            command_line: "ktest=tests::kernel_page_fault".into(),
            memory_mib: 256,
            module: None,
            dump_kho: false,
            must_contain: vec![],
            expect: Expect::Status {
                status: Arch::TEST_FAILURE_STATUS,
                present: vec!["register dump".into(), fault_address],
                absent: vec![],
            },
            qemu_args: vec![],
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
        module: None,
        dump_kho: false,
        must_contain,
        expect: Expect::KernelTestsPass,
        qemu_args: vec![],
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
    // Self-update through KHO.
    let update_case =
        |name: &str, module: Module, command_line: &str, expect: Expect, must_contain: Vec<String>| QemuCase {
            name: format!("{arch} update: {name}"),
            arch,
            boot: Boot::Direct,
            command_line: command_line.to_string(),
            memory_mib: 512,
            module: Some(module),
            dump_kho: false,
            must_contain,
            expect,
            qemu_args: vec![],
            timeout: Duration::from_secs(600),
        };
    let texts = |items: &[&str]| items.iter().map(|item| item.to_string()).collect::<Vec<String>>();
    cases.push(update_case(
        "self-kexec into the same image",
        Module::SameImage,
        "demo.updates=1 demo.shutdown=1",
        Expect::Demo(1),
        texts(&["from=0.1.0 to=0.1.0"]),
    ));
    if arch == Arch::X86_64 {
        // A PC without an HPET: ACPI says so, the kernel logs it and the
        // update works as before.
        cases.push(QemuCase {
            qemu_args: texts(&["-machine", "hpet=off"]),
            ..update_case(
                "a machine without an HPET updates as usual",
                Module::SecondVersion,
                "demo.updates=1 demo.shutdown=1",
                Expect::Demo(1),
                texts(&["no HPET", "MADT: 1 processor(s)"]),
            )
        });
        // A CPU without x2APIC (Intel before Nehalem, AMD before Zen 2): the
        // local APIC is driven through its registers in memory; the update
        // works as before, and the timer still preempts (second case).
        cases.push(QemuCase {
            qemu_args: texts(&["-cpu", "max,-x2apic"]),
            ..update_case(
                "a CPU without x2APIC uses the xAPIC and updates as usual",
                Module::SecondVersion,
                "demo.updates=1 demo.shutdown=1",
                Expect::Demo(1),
                texts(&["no x2APIC; local APIC registers at 0xfee00000 (xAPIC mode)"]),
            )
        });
        cases.push(QemuCase {
            qemu_args: texts(&["-cpu", "max,-x2apic"]),
            ..update_case(
                "a CPU without x2APIC still preempts a spinning service",
                Module::SecondVersion,
                "ktest=task::tests::spinning_service_does_not_stop_others",
                Expect::KernelTestsPass,
                texts(&["xAPIC mode"]),
            )
        });
    }
    // A bounded soak: every key, the counter and every ballast page are
    // checked after each update (`cargo xtask soak` runs longer ones).
    cases.push(update_case(
        "30 updates in a row into version 2 lose nothing",
        Module::SecondVersion,
        "demo.updates=30 demo.shutdown=1 bench.ballast=16 bench.order=0",
        Expect::DemoWith {
            updates: 30,
            repeated: vec![("all 4096 pages intact".into(), 30)],
            absent: texts(&["lost their contents", "handover bypassed", "never claimed their state"]),
        },
        texts(&["from=0.1.0 to=0.2.0", "kvstore: migrated 64 entries from format 1 to format 2"]),
    ));
    // The smallest memory the update demo is tested with (the update image
    // alone is about 15 MiB in a debug build).
    let mut smallest = update_case(
        "64 MiB of RAM is enough for two updates",
        Module::SecondVersion,
        "demo.updates=2 demo.shutdown=1",
        Expect::Demo(2),
        vec![],
    );
    smallest.memory_mib = 64;
    cases.push(smallest);
    // Larger state, handed over as runs: the ballast checks every page
    // after each update.
    for (layout, mebibytes, arguments) in [
        ("preserved as 4 KiB pages", 96, "bench.order=0"),
        ("preserved as 2 MiB folios", 96, "bench.order=9"),
        ("handed over by copying", 32, "bench.order=9 bench.copy=1"),
    ] {
        let mut ballast = update_case(
            &format!("{mebibytes} MiB {layout} come back intact"),
            Module::SecondVersion,
            &format!("demo.updates=3 demo.shutdown=1 bench.ballast={mebibytes} {arguments}"),
            Expect::DemoWith {
                updates: 3,
                repeated: vec![(format!("all {} pages intact", mebibytes * 256), 3)],
                absent: texts(&["lost their contents", "not in free RAM", "handover bypassed", "kernel fault"]),
            },
            vec![],
        );
        ballast.memory_mib = 640;
        cases.push(ballast);
    }
    // Hostile services attacking while an update runs.
    let survives = |texts_present: &[&str]| Expect::DemoWith {
        updates: 1,
        repeated: texts_present.iter().map(|text| (text.to_string(), 1)).collect(),
        absent: texts(&["kernel fault", "kernel panic", "handover bypassed", "never claimed their state"]),
    };
    for (mode, what, expect) in [
        (1, "flooding IPC does not stop the update or lose state", survives(&["adversary: flood"])),
        (2, "allocating until refused does not stop the update or lose state", survives(&["adversary: hog: holding"])),
        (3, "preserving until refused does not stop the update or lose state", survives(&["adversary: preserve:"])),
        (
            4,
            "publishing bad sub-FDTs does not stop the update or lose state",
            survives(&["adversary: publish: 5 of 5 bad sub-FDTs refused"]),
        ),
        (
            6,
            "crashing in the middle of prepare does not stop the update or lose state",
            survives(&["faulting in the middle of prepare"]),
        ),
        (
            5,
            "spinning without acknowledging makes the update abort cleanly",
            Expect::Status {
                status: Arch::TEST_FAILURE_STATUS,
                present: texts(&["did not finish preparing in time", "demo: state intact after the failed update"]),
                absent: texts(&["kernel fault", "kernel panic", "booting via kho"]),
            },
        ),
    ] {
        cases.push(update_case(
            &format!("a service {what}"),
            Module::SecondVersion,
            &format!("demo.updates=1 demo.shutdown=1 test.adversary={mode}"),
            expect,
            vec![],
        ));
    }
    let mut dumped = update_case(
        "the outgoing handover is dumped and decoded independently",
        Module::SecondVersion,
        "demo.updates=1 demo.shutdown=1 kho.pause=1",
        Expect::Demo(1),
        vec![],
    );
    dumped.dump_kho = true;
    cases.push(dumped);
    cases.push(update_case(
        "a preserved folio survives heavy allocation",
        Module::SameImage,
        "ktest=kho_tests::preserved_folio_survives_heavy_allocation",
        Expect::KernelTestsPass,
        texts(&["booting via kho"]),
    ));
    cases.push(update_case(
        "a bad update image is refused",
        Module::Garbage,
        "ktest=kho_tests::bad_update_image_is_refused",
        Expect::KernelTestsPass,
        vec![],
    ));
    cases.push(update_case(
        "a refused image loses nothing",
        Module::Garbage,
        "demo.updates=1 demo.shutdown=1",
        Expect::Status {
            status: Arch::TEST_FAILURE_STATUS,
            present: texts(&["next kernel image refused", "demo: state intact after the failed update"]),
            absent: texts(&["booting via kho"]),
        },
        vec![],
    ));
    cases.push(update_case(
        "abort after freezing leaves everything running",
        Module::SecondVersion,
        "demo.updates=1 demo.shutdown=1 kho.inject=fail-jump",
        Expect::Status {
            status: Arch::TEST_FAILURE_STATUS,
            present: texts(&["update aborted", "demo: state intact after the failed update"]),
            absent: texts(&["booting via kho"]),
        },
        vec![],
    ));
    for fault in ["root", "chunks", "bitmap"] {
        cases.push(update_case(
            &format!("a corrupted handover ({fault}) is bypassed"),
            Module::SecondVersion,
            &format!("demo.updates=1 demo.shutdown=1 kho.inject={fault}"),
            Expect::Status {
                status: Arch::TEST_SUCCESS_STATUS,
                present: texts(&[
                    "handover bypassed",
                    "kvstore: ready (format 2, 0 entries)",
                    "demo: complete after 1 updates",
                ]),
                absent: texts(&["kernel fault", "panic"]),
            },
            vec![],
        ));
    }
    // A client that ends without its report: init's call fails and the
    // demo stops with a failure, at once (it used to wait forever).
    cases.push(QemuCase {
        timeout: Duration::from_secs(120),
        ..update_case(
            "a client that ends without a report stops the demo",
            Module::SecondVersion,
            "demo.updates=1 demo.shutdown=1 test.client=exit-early",
            Expect::Status {
                status: Arch::TEST_FAILURE_STATUS,
                present: texts(&[
                    "client: ending without a report",
                    "init: the client ended without a report",
                    "demo: the state could not be checked",
                ]),
                absent: texts(&["demo: update 1 of 1 starting", "kernel fault"]),
            },
            vec![],
        )
    });
    // An update into a kernel that faults at once: reported, and the
    // machine stops (no rollback; see docs/reliability.md).
    cases.push(update_case(
        "a next kernel that faults at once is reported and stops the machine",
        Module::SecondVersion,
        "demo.updates=1 demo.shutdown=1 test.fault_early=1",
        Expect::Status {
            status: Arch::TEST_FAILURE_STATUS,
            present: texts(&["jumping", "booting via kho", "kernel fault", "handed-over state is still in memory"]),
            absent: texts(&["demo: generation 1"]),
        },
        vec![],
    ));
    // Random bit flips in the handover: bypassed, or read with some state
    // lost, but never a crash.
    for region in ["root", "chunks", "bitmap"] {
        for seed in [1, 2, 3] {
            cases.push(update_case(
                &format!("bits flipped in the {region} (seed {seed}) never crash the next kernel"),
                Module::SecondVersion,
                &format!("demo.updates=1 demo.shutdown=1 kho.inject=flip-{region}:{seed}"),
                Expect::Survives { absent: texts(&["kernel fault", "kernel panic", "register dump"]) },
                texts(&["fault injection: flip-"]),
            ));
        }
    }
    if with_limine {
        let firmwares: &[Firmware] = match arch {
            Arch::X86_64 => &[Firmware::Bios, Firmware::Uefi],
            Arch::Aarch64 => &[Firmware::Uefi],
        };
        cases.push(QemuCase {
            name: format!("{arch} limine (uefi): self-kexec into its own image"),
            arch,
            boot: Boot::Limine(Firmware::Uefi, Drive::Cd),
            command_line: "demo.updates=1 demo.shutdown=1 demo.image=own".into(),
            memory_mib: 512,
            module: Some(Module::SameImage),
            dump_kho: false,
            must_contain: vec![banner("limine"), "booting via kho".into()],
            expect: Expect::Demo(1),
            qemu_args: vec![],
            timeout: Duration::from_secs(600),
        });
        for &firmware in firmwares {
            cases.push(QemuCase {
                name: format!("{arch} limine ({firmware:?}): self-update demo, shown on the screen").to_lowercase(),
                arch,
                boot: Boot::Limine(firmware, Drive::Cd),
                command_line: "demo.updates=2 demo.shutdown=1 demo.screenshot=1".into(),
                memory_mib: 512,
                module: Some(Module::SecondVersion),
                dump_kho: false,
                must_contain: vec![
                    banner("limine"),
                    format!("Baton {} ({arch}) booting via kho", crate::demo::SECOND_VERSION),
                ],
                expect: Expect::Demo(2),
                qemu_args: vec![],
                timeout: Duration::from_secs(600),
            });
            if firmware == Firmware::Uefi || with_bios_usb {
                // The ISO written to a USB stick: firmware boots it as a
                // disk (GPT/MBR and the EFI partition, or Limine's BIOS
                // boot sector), not through the CD's El Torito catalogue.
                cases.push(QemuCase {
                    name: format!("{arch} limine ({firmware:?}, usb stick): self-update demo").to_lowercase(),
                    arch,
                    boot: Boot::Limine(firmware, Drive::Usb),
                    command_line: "demo.updates=1 demo.shutdown=1".into(),
                    memory_mib: 512,
                    module: Some(Module::SecondVersion),
                    dump_kho: false,
                    must_contain: vec![banner("limine")],
                    expect: Expect::Demo(1),
                    qemu_args: vec![],
                    timeout: Duration::from_secs(600),
                });
            }
            cases.push(QemuCase {
                name: format!("{arch} limine ({firmware:?}): kernel tests").to_lowercase(),
                arch,
                boot: Boot::Limine(firmware, Drive::Cd),
                command_line: "ktest=all".into(),
                memory_mib: 256,
                module: None,
                dump_kho: false,
                must_contain: vec![banner("limine")],
                expect: Expect::KernelTestsPass,
                qemu_args: vec![],
                timeout: Duration::from_secs(180),
            });
        }
    }
    cases
}

/// The kernels a test run boots: the first version, and the second built
/// on first use.
pub struct Kernels {
    /// The first version.
    pub first: KernelBuild,
    second: std::cell::OnceCell<KernelBuild>,
    arch: Arch,
    release: bool,
}

impl Kernels {
    /// The second version, built the first time it is needed.
    pub fn second(&self) -> Result<&KernelBuild> {
        if self.second.get().is_none() {
            let second = build_kernel(&BuildOptions {
                arch: self.arch,
                release: self.release,
                version: Some(crate::demo::SECOND_VERSION.to_string()),
            })?;
            let _ = self.second.set(second);
        }
        self.second.get().context("second version")
    }
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
    let kernel = &kernels.first;
    let scratch = util::output_dir().join("test").join(case.arch.to_string());
    std::fs::create_dir_all(&scratch)?;
    let module = match case.module {
        None => None,
        Some(Module::SameImage) => Some(kernel.elf.clone()),
        Some(Module::SecondVersion) => Some(kernels.second()?.elf.clone()),
        Some(Module::Garbage) => {
            let path = scratch.join("garbage.bin");
            let bytes: Vec<u8> =
                (0..64 * 1024u32).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            std::fs::write(&path, bytes)?;
            Some(path)
        }
    };
    let medium = match case.boot {
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
                        Some(Module::SecondVersion) => Some(kernels.second()?.elf.clone()),
                        _ => None,
                    },
                    demo_command_line: case.command_line.clone(),
                    is_demo_default: case.module.is_some(),
                },
                &scratch.join("test.iso"),
            )?;
            Medium::Iso { iso, firmware, drive }
        }
    };
    let config = QemuConfig {
        arch: case.arch,
        medium,
        memory_mib: case.memory_mib,
        headless: true,
        kvm: false,
        extra_args: case.qemu_args.clone(),
    };
    let mut command = config.command(&scratch)?;
    let dump_directory = scratch.join("dump");
    let mut dumper = if case.dump_kho {
        let _ = std::fs::remove_dir_all(&dump_directory);
        Some(crate::dump::Dumper::new(&dump_directory, &scratch, &mut command)?)
    } else {
        None
    };
    // `demo.screenshot=1`: capture the screen before shutdown and keep it.
    let screenshot_path = scratch.join(format!(
        "screen-{}.ppm",
        case.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>()
    ));
    let mut screenshot = if case.command_line.contains("demo.screenshot=1") {
        Some(crate::dump::Screenshot::new(&scratch, &screenshot_path, &mut command)?)
    } else {
        None
    };
    let outcome = crate::qemu::run_filtered(command, Some(case.timeout), &mut |line, input| {
        if verbose {
            println!("{line}");
        }
        crate::dump::watch_line(&mut dumper, &mut screenshot, line, input, "");
    })?;
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
        Expect::Status { status, present, absent } => {
            for text in present {
                if !outcome.output.contains(text.as_str()) {
                    problems.push(format!("output lacks '{text}'"));
                }
            }
            for text in absent {
                if outcome.output.contains(text.as_str()) {
                    problems.push(format!("output unexpectedly contains '{text}'"));
                }
            }
            if outcome.status != Some(*status) {
                problems.push(format!("QEMU exit status {:?}, expected {status}", outcome.status));
            }
        }
        Expect::Survives { absent } => {
            if !outcome.output.contains("shutdown requested by init") {
                problems.push("init never shut the machine down".into());
            }
            for text in absent {
                if outcome.output.contains(text.as_str()) {
                    problems.push(format!("output unexpectedly contains '{text}'"));
                }
            }
            if !matches!(outcome.status, Some(Arch::TEST_SUCCESS_STATUS | Arch::TEST_FAILURE_STATUS)) {
                problems.push(format!("QEMU exit status {:?}", outcome.status));
            }
        }
        Expect::DemoWith { updates, repeated, absent } => {
            let (records, cold) = crate::demo::parse_records(&outcome.output);
            if let Err(problem) = crate::demo::verdict(&records, cold, *updates) {
                problems.push(problem);
            }
            for (text, count) in repeated {
                let seen = outcome.output.matches(text.as_str()).count();
                if seen < *count {
                    problems.push(format!("'{text}' appears {seen} times, expected {count}"));
                }
            }
            for text in absent {
                if outcome.output.contains(text.as_str()) {
                    problems.push(format!("output unexpectedly contains '{text}'"));
                }
            }
            if outcome.status != Some(Arch::TEST_SUCCESS_STATUS) {
                problems.push(format!("QEMU exit status {:?}, expected {}", outcome.status, Arch::TEST_SUCCESS_STATUS));
            }
        }
        Expect::Demo(updates) => {
            let (records, cold) = crate::demo::parse_records(&outcome.output);
            if let Err(problem) = crate::demo::verdict(&records, cold, *updates) {
                problems.push(problem);
            }
            if outcome.status != Some(Arch::TEST_SUCCESS_STATUS) {
                problems.push(format!("QEMU exit status {:?}, expected {}", outcome.status, Arch::TEST_SUCCESS_STATUS));
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
            let lines: Vec<&str> = outcome.output.lines().collect();
            // The kernel's failed checks, wherever they are in the output.
            let failures: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|line| {
                    line.contains("check failed") || line.ends_with("... FAILED") || line.contains("[WARN  svc]")
                })
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
    }
    Ok(tally)
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
        let kernels = Kernels {
            first: build_kernel(&BuildOptions { arch, release, version: None })?,
            second: std::cell::OnceCell::new(),
            arch,
            release,
        };
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
        for case in cases(arch, limine.is_some(), with_bios_usb) {
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
    fn cargo_result_lines_are_parsed() {
        let tally = parse_cargo_test_line("test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured").unwrap();
        assert_eq!((tally.passed, tally.failed), (17, 0));
        let tally = parse_cargo_test_line("test result: FAILED. 3 passed; 2 failed; 0 ignored").unwrap();
        assert_eq!((tally.passed, tally.failed), (3, 2));
        assert!(parse_cargo_test_line("running 3 tests").is_none());
    }

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
    fn kernel_tally_is_the_last_summary_line() {
        let output = "ktest: a ... ok\nktest: 4 passed, 1 failed\n";
        let tally = parse_kernel_tally(output).unwrap();
        assert_eq!((tally.passed, tally.failed), (4, 1));
        let crashed = "ktest: 0 passed, 1 failed (kernel fault)\n";
        assert_eq!(parse_kernel_tally(crashed).map(|t| t.failed), Some(1));
        assert!(parse_kernel_tally("booting\n").is_none());
    }
}
