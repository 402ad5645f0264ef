//! The QEMU cases `cargo xtask test` runs, as data: each is a [`QemuCase`]
//! built from the defaults of [`QemuCase::new`], with only what differs
//! written out.

use super::traffic::HostTraffic;
use crate::arch::Arch;
use crate::build::TEST_ONLY_SERVICES;
use crate::demo::SECOND_VERSION;
use crate::qemu::{Drive, Firmware};
use std::time::Duration;

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

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

impl Expect {
    /// QEMU exits with `status`; every text of `present` appears and none of
    /// `absent`.
    pub fn status(status: i32, present: &[&str], absent: &[&str]) -> Self {
        Expect::Status { status, present: texts(present), absent: texts(absent) }
    }

    /// The demo completes `updates` updates, each text of `repeated` appears
    /// as often as given, and none of `absent`.
    pub fn demo_with(updates: u32, repeated: &[(&str, usize)], absent: &[&str]) -> Self {
        let repeated = repeated.iter().map(|&(text, count)| (text.to_string(), count)).collect();
        Expect::DemoWith { updates, repeated, absent: texts(absent) }
    }

    /// Init shuts the machine down, whatever the demo concluded, and none of
    /// `absent` appears.
    pub fn survives(absent: &[&str]) -> Self {
        Expect::Survives { absent: texts(absent) }
    }
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
    /// Sequences of texts that must appear in the serial output in this
    /// order (each after the one before it).
    pub in_order: Vec<Vec<String>>,
    /// The verdict to expect.
    pub expect: Expect,
    /// Extra QEMU arguments (machine options such as `hpet=off`).
    pub qemu_args: Vec<String>,
    /// Timeout.
    pub timeout: Duration,
    /// Boot testing kernels (the `testing` feature, every service); false:
    /// production kernels.
    pub testing: bool,
    /// Services no `embedded services:` line may name (and one must appear).
    pub services_absent: Vec<String>,
    /// Free memory must not keep falling from update to update (the
    /// kernels' `update requested ... free_kib=` lines).
    pub checks_no_leak: bool,
    /// TCP from the host to 127.0.0.1 (forwarded to netd's echo port), as
    /// the guest's console paces it; its `host: ...` report line joins the
    /// output (see [`HostTraffic`]).
    pub host_traffic: Option<HostTraffic>,
}

/// What this machine and this kernel let the tests cover.
#[derive(Debug, Clone, Copy)]
pub struct Available {
    /// Limine's files were found: the ISO boots are tested.
    pub limine: bool,
    /// Limine's host tool works: the ISO boots from a USB stick under BIOS.
    pub bios_usb: bool,
}

impl QemuCase {
    /// A direct boot with an empty command line, 512 MiB, no module, whose
    /// kernel tests must pass within 120 s.
    pub fn new(name: impl Into<String>, arch: Arch) -> Self {
        QemuCase {
            name: name.into(),
            arch,
            boot: Boot::Direct,
            command_line: String::new(),
            memory_mib: 512,
            module: None,
            dump_kho: false,
            must_contain: Vec::new(),
            in_order: Vec::new(),
            expect: Expect::KernelTestsPass,
            qemu_args: Vec::new(),
            timeout: Duration::from_secs(120),
            testing: true,
            services_absent: Vec::new(),
            checks_no_leak: false,
            host_traffic: None,
        }
    }

    /// Boots production kernels (without the `testing` feature).
    pub fn production(mut self) -> Self {
        self.testing = false;
        self
    }

    /// Services the kernel must not embed.
    pub fn services_absent(mut self, names: &[&str]) -> Self {
        self.services_absent = texts(names);
        self
    }

    /// Boots this way.
    pub fn boot(mut self, boot: Boot) -> Self {
        self.boot = boot;
        self
    }

    /// The kernel command line.
    pub fn command_line(mut self, command_line: impl Into<String>) -> Self {
        self.command_line = command_line.into();
        self
    }

    /// Guest RAM in MiB.
    pub fn memory(mut self, memory_mib: u32) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    /// The boot module.
    pub fn module(mut self, module: Module) -> Self {
        self.module = Some(module);
        self
    }

    /// Saves the first outgoing handover and decodes it independently.
    pub fn dump_kho(mut self) -> Self {
        self.dump_kho = true;
        self
    }

    /// One more text the serial output must contain.
    pub fn must_contain(mut self, text: impl Into<String>) -> Self {
        self.must_contain.push(text.into());
        self
    }

    /// Host traffic to send while the case runs.
    pub fn host_traffic(mut self, traffic: HostTraffic) -> Self {
        self.host_traffic = Some(traffic);
        self
    }

    /// Free memory must not keep falling from update to update.
    pub fn no_leak(mut self) -> Self {
        self.checks_no_leak = true;
        self
    }

    /// The serial output must hold `texts` in this order.
    pub fn in_order(mut self, texts: &[&str]) -> Self {
        self.in_order.push(texts.iter().map(|text| text.to_string()).collect());
        self
    }

    /// The verdict.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// Extra QEMU arguments.
    pub fn qemu_args(mut self, arguments: &[&str]) -> Self {
        self.qemu_args = texts(arguments);
        self
    }

    /// How long the case may run, in seconds.
    pub fn timeout(mut self, seconds: u64) -> Self {
        self.timeout = Duration::from_secs(seconds);
        self
    }
}

/// The banner of a kernel booted via `path`.
fn banner(arch: Arch, path: &str) -> String {
    format!("Baton {} ({arch}) booting via {path}", env!("CARGO_PKG_VERSION"))
}

/// The QEMU cases for `arch`.
pub fn cases(arch: Arch, available: &Available) -> Vec<QemuCase> {
    let mut cases = direct_cases(arch);
    cases.extend(update_cases(arch));
    cases.extend(process_handover_cases(arch));
    cases.extend(hostile_service_cases(arch));
    cases.extend(pci_cases(arch));
    cases.extend(handover_cases(arch));
    cases.push(production_case(arch));
    if available.limine {
        cases.extend(limine_cases(arch, available.bios_usb));
    }
    cases
}

/// A production kernel, given test-only options, ignores them, says so, and
/// embeds none of the test-only services; the demo updates as usual.
fn production_case(arch: Arch) -> QemuCase {
    QemuCase::new(format!("{arch} direct: production kernel carries no test machinery"), arch)
        .production()
        .command_line(format!("kho.inject=root ktest=all {ONE_UPDATE}"))
        .module(Module::SecondVersion)
        .expect(Expect::Demo(1))
        .must_contain("'kho.inject' is not built into this kernel")
        .must_contain("'ktest' is not built into this kernel")
        .services_absent(&TEST_ONLY_SERVICES)
        .timeout(600)
}

/// Direct boots running the in-kernel tests: all of them, NUMA, a fault,
/// and the memory tests at several sizes and `kho_scratch=` forms.
fn direct_cases(arch: Arch) -> Vec<QemuCase> {
    let direct_path = match arch {
        Arch::X86_64 => "direct (PVH)",
        Arch::Aarch64 => "direct (arm64 Image)",
    };
    let mut cases = vec![
        QemuCase::new(format!("{arch} direct: kernel tests"), arch)
            .command_line("ktest=all")
            .memory(256)
            .must_contain(banner(arch, direct_path)),
        // Two NUMA nodes: the SRAT (x86_64) or the device tree's
        // `numa-node-id` (aarch64) gives each its scratch region.
        QemuCase::new(format!("{arch} direct: two NUMA nodes get a scratch region each"), arch)
            .command_line("ktest=mm::tests::numa_nodes_each_have_scratch")
            .memory(1024)
            .must_contain("NUMA: 2 node(s)")
            .must_contain("scratch node 1")
            .qemu_args(&[
                "-object",
                "memory-backend-ram,id=m0,size=512M",
                "-object",
                "memory-backend-ram,id=m1,size=512M",
                "-numa",
                "node,nodeid=0,memdev=m0",
                "-numa",
                "node,nodeid=1,memdev=m1",
            ]),
        QemuCase::new(format!("{arch} direct: kernel page fault is reported"), arch)
            .command_line("ktest=tests::kernel_page_fault")
            .memory(256)
            .expect(Expect::status(
                Arch::TEST_FAILURE_STATUS,
                &["register dump", "faulting address 0xfffffe00dead0000"],
                &[],
            ))
            .timeout(60),
    ];
    // Memory sizes and kho_scratch= forms: boot, place scratch, run the
    // memory tests. (name suffix, MiB, command line, text to see)
    let memory_cases: [(&str, u32, &str, Option<&str>); 7] = [
        ("", 128, "", Some("scratch lowmem")),
        ("", 1024, "", None),
        ("", 4096, "", None),
        (", kho_scratch=16M,64M,32M", 512, "kho_scratch=16M,64M,32M", Some("scratch global")),
        (", kho_scratch=50%", 512, "kho_scratch=50%", None),
        (", kho_scratch=lots (malformed)", 256, "kho_scratch=lots", Some("kho_scratch=lots is malformed")),
        (", kho_scratch=64M,1G,1G (too large)", 256, "kho_scratch=64M,1G,1G", Some("scratch reduced")),
    ];
    for (suffix, memory_mib, extra, text) in memory_cases {
        let case = QemuCase::new(format!("{arch} direct {memory_mib} MiB{suffix}: memory tests"), arch)
            .command_line(format!("ktest=mm:: {extra}").trim())
            .memory(memory_mib);
        cases.push(match text {
            Some(text) => case.must_contain(text),
            None => case,
        });
    }
    cases
}

/// A self-update through KHO: a direct boot with `module`, 512 MiB, up to
/// ten minutes.
fn update(arch: Arch, name: &str, module: Module, command_line: &str, expect: Expect) -> QemuCase {
    QemuCase::new(format!("{arch} update: {name}"), arch)
        .command_line(command_line)
        .module(module)
        .expect(expect)
        .timeout(600)
}

/// One update of the demo, then power off.
const ONE_UPDATE: &str = "demo.updates=1 demo.shutdown=1";

/// Updates that must lose nothing: into the same image, on machines without
/// an HPET or x2APIC, many in a row, in little RAM, with large state.
fn update_cases(arch: Arch) -> Vec<QemuCase> {
    let mut cases = vec![
        update(arch, "self-kexec into the same image", Module::SameImage, ONE_UPDATE, Expect::Demo(1))
            .must_contain("from=0.1.0 to=0.1.0"),
    ];
    if arch == Arch::X86_64 {
        let second = |name: &str, command_line: &str, expect: Expect| {
            update(arch, name, Module::SecondVersion, command_line, expect)
        };
        // A PC without an HPET: ACPI says so, the kernel logs it and the
        // update works as before.
        cases.push(
            second("a machine without an HPET updates as usual", ONE_UPDATE, Expect::Demo(1))
                .must_contain("no HPET")
                .must_contain("MADT: 1 processor(s)")
                .qemu_args(&["-machine", "hpet=off"]),
        );
        // A CPU without x2APIC (Intel before Nehalem, AMD before Zen 2): the
        // local APIC is driven through its registers in memory; the update
        // works as before, and the timer still preempts (second case).
        cases.push(
            second("a CPU without x2APIC uses the xAPIC and updates as usual", ONE_UPDATE, Expect::Demo(1))
                .must_contain("no x2APIC; local APIC registers at 0xfee00000 (xAPIC mode)")
                .qemu_args(&["-cpu", "max,-x2apic"]),
        );
        cases.push(
            second(
                "a CPU without x2APIC still preempts a spinning service",
                "ktest=task::tests::spinning_service_does_not_stop_others",
                Expect::KernelTestsPass,
            )
            .must_contain("xAPIC mode")
            .qemu_args(&["-cpu", "max,-x2apic"]),
        );
    }
    // A bounded soak: every key, the counter and every ballast page are
    // checked after each update (`cargo xtask soak` runs longer ones).
    cases.push(
        update(
            arch,
            "30 updates in a row into version 2 lose nothing",
            Module::SecondVersion,
            "demo.updates=30 demo.shutdown=1 bench.ballast=16 bench.order=0",
            Expect::demo_with(
                30,
                &[("all 4096 pages intact", 30)],
                &["lost their contents", "handover bypassed", "never claimed their state"],
            ),
        )
        .must_contain("from=0.1.0 to=0.2.0")
        .must_contain("kvstore: migrated 64 entries from format 1 to format 2")
        .no_leak(),
    );
    // The update rule, from the next image's services note: version 2
    // embeds the same init and counter (reproducible builds) and another
    // kvstore; the second update goes from version 2 into version 2.
    cases.push(update(
        arch,
        "the update rule finds unchanged services resumable and a changed one restarting",
        Module::SecondVersion,
        "demo.updates=2 demo.shutdown=1",
        Expect::demo_with(
            2,
            &[
                ("service 'init': resumable by the update rule", 2),
                ("service 'counter': resumable by the update rule", 2),
                ("service 'kvstore': restarts (changed) by the update rule", 1),
                ("service 'kvstore': resumable by the update rule", 1),
            ],
            &["service table is refused", "lists no services"],
        ),
    ));
    // The smallest memory the update demo is tested with (the update image
    // alone is about 15 MiB in a debug build).
    cases.push(
        update(
            arch,
            "64 MiB of RAM is enough for two updates",
            Module::SecondVersion,
            "demo.updates=2 demo.shutdown=1",
            Expect::Demo(2),
        )
        .memory(64),
    );
    // Larger state, resumed with its process (the default) or, with
    // `update.resume=0`, handed over as runs for a restarted ballast: the
    // ballast checks every page after each update.
    for (layout, mebibytes, arguments, how) in [
        ("resumed with its process, 4 KiB pages", 96, "bench.order=0", "resumed with its process"),
        ("preserved as 4 KiB pages", 96, "bench.order=0 update.resume=0", "handed over in place"),
        ("preserved as 2 MiB folios", 96, "bench.order=9 update.resume=0", "handed over in place"),
        ("handed over by copying", 32, "bench.order=9 bench.copy=1 update.resume=0", "handed over copying"),
    ] {
        let intact = format!("all {} pages intact", mebibytes * 256);
        let path = format!("ballast: {mebibytes} MiB {how}");
        cases.push(
            update(
                arch,
                &format!("{mebibytes} MiB {layout} come back intact"),
                Module::SecondVersion,
                &format!("demo.updates=3 demo.shutdown=1 bench.ballast={mebibytes} {arguments}"),
                Expect::demo_with(
                    3,
                    &[(intact.as_str(), 3), (path.as_str(), 3)],
                    &["lost their contents", "not in free RAM", "handover bypassed", "kernel fault"],
                ),
            )
            .memory(640),
        );
    }
    cases
}

/// Process handover: which services the update rule resumes, and what a
/// resumed service keeps (registers, memory, mailbox, sleeps, ids), what a
/// call across a restart does, and what happens to a refused description.
fn process_handover_cases(arch: Arch) -> Vec<QemuCase> {
    let lost = ["lost their contents", "handover bypassed", "kernel fault", "DISAGREES"];
    let one = |name: &str, extra: &str, present: &[&str], absent: &[&str]| {
        let absent: Vec<&str> = absent.iter().chain(lost.iter()).copied().collect();
        let mut case = update(
            arch,
            name,
            Module::SecondVersion,
            &format!("{ONE_UPDATE} {extra}"),
            Expect::demo_with(1, &[], &absent),
        );
        for text in present {
            case = case.must_contain(*text);
        }
        case
    };
    vec![
        // Version 2 embeds the same init and counter and another kvstore:
        // the first update resumes init and counter and restarts kvstore
        // (with its migration), the second (2 into 2) resumes all three.
        update(
            arch,
            "unchanged services are resumed, a changed one restarts, and every key and the counter survive",
            Module::SecondVersion,
            "demo.updates=2 demo.shutdown=1",
            Expect::demo_with(
                2,
                &[
                    ("service 'init' (id 1) resumed", 2),
                    ("service 'counter' (id 3) resumed", 2),
                    ("service 'kvstore' (id 2) restarted", 1),
                    ("service 'kvstore' (id 2) resumed", 1),
                    ("demo: init resumed on the new kernel", 2),
                    ("kvstore: migrated 64 entries from format 1 to format 2", 1),
                    ("resumed=init,counter restarted=kvstore", 1),
                    ("resumed=init,kvstore,counter restarted=-", 1),
                ],
                &["cannot be resumed", "description is refused", "roster is refused", "lost their contents"],
            ),
        )
        .in_order(&[
            "update 1 of 2 starting",
            "process handover: 2 service(s) resumed",
            "service 'kvstore' (id 2) restarted",
        ])
        .in_order(&[
            "update 2 of 2 starting",
            "process handover: 3 service(s) resumed",
            "service 'kvstore' (id 2) resumed",
        ]),
        // Preempted by the timer mid-computation over 4 MiB, it finishes on
        // the new kernel with the result it gets without an update; the
        // message queued for it before the freeze arrives after; a sleep
        // spanning the update ends no earlier than its deadline; ids and
        // lookups are those of before.
        // Two updates: the demo's second keeps the machine up well past the
        // sleep that spans the first (one update alone could end the demo
        // before the sleeper's deadline on a slow machine).
        update(
            arch,
            "a service preempted mid-computation, a queued message and a sleep all survive resumption",
            Module::SecondVersion,
            "demo.updates=2 demo.shutdown=1 test.resume=compute",
            Expect::demo_with(
                2,
                &[],
                &[
                    "sleeper: woke at",
                    "cannot be resumed",
                    "lost their contents",
                    "handover bypassed",
                    "kernel fault",
                    "DISAGREES",
                ],
            ),
        )
        .must_contain("survivor: the message queued before the update arrived after it (word 0x5eed)")
        .must_contain("ids, lookups and its thread pointer unchanged")
        .must_contain("survivor: its thread pointer came through the update")
        .must_contain("survivor: continued on the new kernel")
        .must_contain("sleeper: continued on the new kernel")
        .in_order(&[
            "survivor: told it will be Resumed; computing",
            "process handover: 4 service(s) resumed",
            "service 'survivor' (id",
            "survivor: computation across the update agrees",
        ])
        .in_order(&["sleeper: sleeping through the update", "process handover:", "sleeper: woke"]),
        // A shared-memory channel between two resumed services: the region
        // stays mapped in both, at the same addresses, through the update;
        // every forbidden grant, map, revoke and free is refused; a
        // revoked grant, and one whose owner exits, read as zeroes in the
        // peer, which carries on (and is resumed by the second update).
        update(
            arch,
            "a shared-memory channel between two services lives through an update; revoked grants read as zeroes",
            Module::SecondVersion,
            "demo.updates=2 demo.shutdown=1 demo.interval_ms=400 test.share=1",
            Expect::demo_with(
                2,
                &[("service 'ponger' (id", 2)],
                &[
                    "pinger: exchange",
                    "ponger: cannot map",
                    "not a channel",
                    "the channel broke",
                    "still shows the owner's bytes",
                    "cannot be resumed",
                    "refused {",
                    "kernel fault",
                ],
            ),
        )
        .must_contain("pinger: every forbidden grant, map and free was refused")
        .must_contain("ponger: mapped grant 1; mapping it at the wrong size, twice, and revoking it were refused")
        .must_contain("through 1 update(s), every pong matched")
        .in_order(&[
            "'pinger' granted 0x2000 bytes to 'ponger' (grant 1)",
            "service 'pinger' (id",
            "pinger: continued on the new kernel after",
            "every pong matched",
            "pinger: grant 1 revoked and its region freed",
            "pinger: exiting while ponger maps grant 2",
            "ponger: grant 2 ended after",
            "ponger: continued on the new kernel",
        ])
        // Told by the kernel, so perhaps before pinger says it revoked.
        .in_order(&["every pong matched", "ponger: grant 1 ended after"]),
        // A peer whose description claims memory next to the region it was
        // granted is refused: it restarts (without the owner's memory),
        // the owner is resumed.
        update(
            arch,
            "a shared mapping that claims more than its grant restarts the peer and resumes the owner",
            Module::SecondVersion,
            "demo.updates=1 demo.shutdown=1 test.share=1 kho.inject=damage-grant:ponger",
            Expect::demo_with(1, &[], &["kernel fault", "every pong matched"]),
        )
        .must_contain("fault injection: the shared mapping of 'ponger' claims")
        .must_contain("service 'ponger' cannot be resumed (a region it maps differs from its resumed owner's grant")
        .must_contain("service 'ponger' (id 1) restarted")
        .must_contain("service 'pinger' (id 2) resumed"),
        // The holder is restarted by every update: the call it had received
        // fails with CallInterrupted (never delivered twice) and an
        // idempotent retry reaches the new instance; the call still in its
        // mailbox is delivered to the new instance.
        one(
            "a call in flight to a restarting service is interrupted or delivered to the new instance",
            "test.resume=calls",
            &[
                "service 'holder': restarts (always restarted) by the update rule",
                "survivor: the held call was interrupted by the holder's restart, not delivered twice",
                "survivor: an idempotent request was answered by holder instance 2",
                "sleeper: its call, queued when the holder restarted, was answered by holder instance 2",
                "holder: instance 2 running",
            ],
            &["held call ended with", "call to the holder failed"],
        ),
        // A description that claims memory its service does not own is
        // refused: that service restarts and restores its explicit state,
        // the others resume.
        one(
            "a damaged process description restarts that service and resumes the others",
            "kho.inject=damage-process:counter",
            &[
                "fault injection: the process description of 'counter' claims memory",
                "service 'counter' cannot be resumed (its memory",
                "service 'counter' (id 3) restarted",
                "counter: restored",
                "service 'init' (id 1) resumed",
            ],
            &[],
        ),
        // As many mappings as a description holds still resume; one more
        // is refused when it is made.
        one(
            "a service with the most mappings allowed resumes; one more mapping is refused",
            "test.resume=mappings",
            &[
                "would need more than 256 mappings, the most a live update can describe",
                "the next was refused: out of memory",
                "survivor: resumed with all",
            ],
            &["a page came back changed", "cannot be resumed"],
        ),
        // A resumed service's memory counts against its limit as it did
        // before: full before the update, full after it.
        one(
            "a resumed service's memory still counts against its limit",
            "test.resume=limit mem.service_limit_mib=16",
            &[
                "survivor: holding 16 MiB of preservable memory; the next MiB was refused",
                "survivor: resumed holding 16 MiB, still counted: one more was refused",
            ],
            &["not counted as it was", "cannot be resumed"],
        ),
        one(
            "update.resume=0 restarts every service",
            "update.resume=0",
            &[
                "update.resume=0: every service restarts",
                "service 'init' (id 1) restarted",
                "service 'counter' (id 3) restarted",
            ],
            &["(id 1) resumed", "(id 3) resumed", "init resumed on the new kernel"],
        ),
    ]
}

/// A TCP port on 127.0.0.1 nobody holds right now (asked of the system:
/// another program could take it before QEMU does, which only fails the
/// case, never sends traffic elsewhere).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_or(17007, |address| address.port())
}

/// An update case with the guest's Redis port forwarded to a free port
/// on 127.0.0.1 and `traffic` (given that port) from the host.
fn redis_update(
    arch: Arch,
    name: &str,
    module: Module,
    command_line: &str,
    expect: Expect,
    traffic: impl FnOnce(u16) -> HostTraffic,
) -> QemuCase {
    let port = free_tcp_port();
    let forward = format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:6379");
    update(arch, name, module, command_line, expect)
        .qemu_args(&["-netdev", &forward, "-device", "virtio-net-pci,netdev=net0"])
        .host_traffic(traffic(port))
}

/// A virtio network card on QEMU's user networking, reaching nothing
/// outside QEMU.
const VIRTIO_NET: &[&str] = &["-netdev", "user,id=net0,restrict=on", "-device", "virtio-net-pci,netdev=net0"];

/// PCI: the host bridge found (MCFG, the device tree), a virtio network
/// card enumerated on the cold boot and again after an update, its BARs
/// placed on aarch64 (no firmware assigned them) only once.
fn pci_cases(arch: Arch) -> Vec<QemuCase> {
    // Where QEMU puts the card: after q35's display on x86_64, first on
    // virt.
    let card_slot = if arch == Arch::X86_64 { 2 } else { 1 };
    let mut repeated = vec![("1af4:1000 Ethernet", 2), ("MSI-X", 2)];
    if arch == Arch::Aarch64 {
        repeated.push(("00:01.0: BARs assigned from the host bridge's windows", 1));
    }
    let found = update(
        arch,
        "PCI enumeration finds the virtio network card on both boots and places its BARs once",
        Module::SecondVersion,
        ONE_UPDATE,
        Expect::demo_with(1, &repeated, &["kernel panic", "fits in no host-bridge window", "out of reach"]),
    )
    .qemu_args(VIRTIO_NET)
    .must_contain("function(s) on buses 0x00..=0xff");
    let off = update(
        arch,
        "pci=off leaves PCI alone",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} pci=off"),
        Expect::demo_with(1, &[], &["1af4:1000"]),
    )
    .qemu_args(VIRTIO_NET)
    .must_contain("pci=off: PCI is left alone");
    // A driver reaches its own device and nothing else; driverprobe asks
    // to be restarted at every update, and when it ends the kernel stops
    // its device's DMA.
    let mut driver = update(
        arch,
        "a driver maps and probes its own device only, and its device stops DMA when it ends",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} test.device=1 pci.assign=driverprobe:1af4:1000"),
        Expect::demo_with(
            1,
            &[
                ("driverprobe: every check held and every forbidden access was refused", 2),
                ("probe reads its size (0x", 2),
                ("is assigned to 'driverprobe'", 2),
            ],
            &[
                "driverprobe: no device",
                "MOVED",
                "not PermissionDenied",
                "not InvalidArgument",
                "not NotFound",
                "kernel panic",
            ],
        ),
    )
    .qemu_args(VIRTIO_NET)
    // driverprobe asks to be restarted by every update: its card is
    // stopped before the jump and found again by the next instance.
    .must_contain("service 'driverprobe': restarts (always restarted) by the update rule")
    .must_contain("DMA stopped ('driverprobe' ended)");
    driver = driver.in_order(&["driverprobe: second instance done", "DMA stopped ('driverprobe' ended)"]);
    // netd drives the card from user mode (virtio-drivers, smoltcp) and
    // takes an address from QEMU's DHCP server (inside QEMU: nothing
    // leaves it); the update resumes it with the card still running, so it
    // neither resets the card nor asks for an address again, and the new
    // kernel never sizes the card's BARs.
    let netd = update(
        arch,
        "netd is resumed with its virtio network card running: no reset, no new DHCP, BARs not sized again",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} pci.assign=netd:1af4:1000"),
        Expect::demo_with(
            1,
            &[("netd: virtio-net at", 1), ("netd: DHCP gave 10.0.2.15/24", 1), ("1af4:1000 Ethernet", 2)],
            &["netd: no network card", "stopping", "kernel panic", "refused", "DMA stopped", "cannot be resumed"],
        ),
    )
    .qemu_args(VIRTIO_NET)
    .must_contain("service 'netd': resumable by the update rule")
    .must_contain(format!("00:0{card_slot}.0: handed over running; its BARs are the handover's, not sized"))
    .in_order(&["service 'netd' (id 1) resumed", "handed over running"]);
    // A device record that does not match the device (testing builds
    // damage one): netd restarts, the kernel stops the card before any
    // old memory is freed, the new netd resets it, and the other services
    // are resumed as usual.
    let damaged = update(
        arch,
        "a damaged device record restarts netd with its card stopped and reset, and the others carry on",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} pci.assign=netd:1af4:1000 kho.inject=damage-device:netd"),
        Expect::demo_with(
            1,
            &[("netd: virtio-net at", 2), ("reset and up", 2), ("netd: DHCP gave 10.0.2.15/24", 2)],
            &["kernel panic", "stopping", "handed over running"],
        ),
    )
    .qemu_args(VIRTIO_NET)
    .must_contain("fault injection: the device record of 'netd' moves BAR")
    .must_contain("service 'netd' cannot be resumed (its device: BAR")
    .must_contain("service 'echo' (id 2) resumed")
    .must_contain("service 'init' (id 3) resumed")
    .must_contain("service 'counter' (id 5) resumed")
    // echo, resumed, asks the new netd to listen again.
    .must_contain("echo: netd's channel ended; port 7 is served again")
    // The card is stopped before any service runs (and so before any of
    // the old netd's memory can be freed).
    .in_order(&[
        "cannot be resumed (its device",
        "service 'netd' (id 1) restarted",
        &format!("00:0{card_slot}.0: DMA stopped (its driver was not resumed)"),
        "first service running",
    ]);
    // A handover the next kernel cannot read at all (no roster, nothing
    // preserved): the card the old kernel left running for netd is
    // stopped before any service runs, and the new netd resets it.
    let bypassed = update(
        arch,
        "a bypassed handover stops the card netd left running, and the new netd resets it",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} pci.assign=netd:1af4:1000 kho.inject=root"),
        Expect::status(
            Arch::TEST_SUCCESS_STATUS,
            &["handover bypassed", "demo: complete after 1 updates", "reset and up, MAC"],
            &["kernel fault", "panic"],
        ),
    )
    .qemu_args(VIRTIO_NET)
    .in_order(&[
        "booting via kho",
        &format!("00:0{card_slot}.0: DMA stopped (its driver was not resumed)"),
        "first service running",
        "netd: virtio-net at",
    ]);
    // TCP echo from the host after the update: lines sent to 127.0.0.1 on
    // a forwarded port come back from netd on the new kernel.
    let port = free_tcp_port();
    let forward = format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:7");
    let echo = update(
        arch,
        "netd echoes TCP from the host after an update",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} demo.wait=1 pci.assign=netd:1af4:1000"),
        Expect::demo_with(1, &[("host: 20 of 20 lines echoed over TCP", 1)], &["kernel panic", "stopping"]),
    )
    .qemu_args(&["-netdev", &forward, "-device", "virtio-net-pci,netdev=net0"])
    .host_traffic(HostTraffic::Echo { port, lines: 20 })
    .must_contain("echo: a connection closed by the remote end (1 so far)");
    // A client of netd's sockets restarted by an update while netd is
    // resumed (the first of five: the fault is injected by the first
    // kernel only): netd holds the connection and the channel, the new echo
    // maps the same grant, reads on where the old one stopped and is told
    // the open connection again, so one TCP connection from the host
    // echoes through all five updates.
    let port = free_tcp_port();
    let forward = format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:7");
    let client_restarts = update(
        arch,
        "a socket client restarted by an update keeps its TCP connection (netd holds it)",
        Module::SecondVersion,
        "demo.updates=5 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000 \
         kho.inject=damage-process:echo",
        Expect::demo_with(
            5,
            &[
                ("host: one TCP connection, 7 of 7 lines echoed through 5 updates", 1),
                ("service 'echo' (id 2) restarted", 1),
                ("service 'netd' (id 1) resumed", 5),
                ("echo: serving TCP port 7 through netd (grant 1)", 2),
                ("echo: connection 1 from", 2),
            ],
            &["kernel panic", "stopping", "lost", "cannot connect", "listener is dropped"],
        ),
    )
    .qemu_args(&["-netdev", &forward, "-device", "virtio-net-pci,netdev=net0"])
    .host_traffic(HostTraffic::Session { port });
    // Redis through netd: one redis-cli connection from the host, opened
    // before the first update, keeps its key and its counter through five
    // updates into the same image (kvstore resumed, its keyspace with it),
    // every reply checked.
    let redis = redis_update(
        arch,
        "redis-cli keeps one connection and its keys through 5 updates",
        Module::SameImage,
        "demo.updates=5 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000",
        Expect::demo_with(
            5,
            &[(
                "host: redis-cli, one connection, 22 of 22 replies right through 5 updates; INFO baton: kernel 0.1.0, \
                 generation 5, 5 update(s) listed, last blackout given",
                1,
            )],
            &["kernel panic", "stopping", "refused port"],
        ),
        |port| HostTraffic::Redis { port },
    );
    // The same into the second version, whose first update restarts
    // kvstore (its table format changes): the keyspace goes across as
    // explicit state, netd holds the connection meanwhile.
    let redis_restarted = redis_update(
        arch,
        "redis-cli keeps one connection and its keys through 5 updates, the first restarting kvstore",
        Module::SecondVersion,
        "demo.updates=5 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000",
        Expect::demo_with(
            5,
            &[
                (
                    "host: redis-cli, one connection, 22 of 22 replies right through 5 updates; INFO baton: kernel \
                     0.2.0, generation 5, 5 update(s) listed, last blackout given",
                    1,
                ),
                ("service 'kvstore' (id", 5),
                ("connection(s) taken over", 1),
            ],
            &["kernel panic", "stopping", "refused port", "does not read"],
        ),
        |port| HostTraffic::Redis { port },
    )
    .in_order(&[
        "Redis key(s) handed over in place (",
        "service 'kvstore' (id 4) restarted",
        "Redis key(s) (format 2, ",
        "the Redis table migrated to format 2 in the background",
    ]);
    // A keyspace of 6 MiB written before the first update (20 s in, room
    // for a slow host), which restarts kvstore into a build with a newer
    // record format: the table's blocks go across in place, the next
    // instance migrates them in the background, and every key is there
    // afterwards.
    let bulk = redis_update(
        arch,
        "a 6 MiB Redis table goes across kvstore's restart in place and migrates to format 2 in the background",
        Module::SecondVersion,
        "demo.updates=2 demo.shutdown=1 demo.wait=1 demo.interval_ms=20000 pci.assign=netd:1af4:1000",
        Expect::demo_with(
            2,
            &[
                ("host: 1500 values of 4096 bytes on one connection, all there after the updates", 1),
                ("kvstore: 1500 Redis key(s) handed over in place (", 1),
                ("kvstore: 1500 Redis key(s) (format 2, 1500 to migrate) and 1 connection(s) taken over", 1),
                ("the Redis table migrated to format 2 in the background (1500 key(s)", 1),
            ],
            &["kernel panic", "stopping", "refused port", "does not read", "lost", "refused:"],
        ),
        |port| HostTraffic::Bulk { port },
    );
    // A million keys (DEBUG POPULATE, in the guest) in a 1 GiB guest
    // before the first update, which restarts kvstore into format 2: the
    // table goes across in place, migrates in the background, and every
    // key sampled reads back after a second, resuming update.
    let million = redis_update(
        arch,
        "a million Redis keys go across kvstore's restart in place in a 1 GiB guest and migrate to format 2",
        Module::SecondVersion,
        // kvstore answers the DEBUG POPULATE it is running before it says
        // it is prepared: the deadline leaves room for a slow emulator.
        "demo.updates=2 demo.shutdown=1 demo.wait=1 demo.interval_ms=20000 update.prepare_timeout_ms=240000 \
         pci.assign=netd:1af4:1000",
        Expect::demo_with(
            2,
            &[
                ("host: 1000000 keys made before the updates, all there after them", 1),
                ("kvstore: 1000000 Redis key(s) handed over in place (", 1),
                ("kvstore: 1000000 Redis key(s) (format 2, 1000000 to migrate) and 1 connection(s) taken over", 1),
                ("the Redis table migrated to format 2 in the background (1000000 key(s)", 1),
            ],
            &["kernel panic", "stopping", "refused port", "does not read", "lost", "refused:"],
        ),
        |port| HostTraffic::Populate { port, keys: 1_000_000 },
    )
    .memory(1024)
    .timeout(400);
    // Hostile clients while two updates happen, the first restarting
    // kvstore: past maxclients, a 2 GiB bulk, bytes that are not RESP, a
    // byte-a-time client and a full maxmemory each get Redis's answer,
    // and the first client keeps its connection and its key throughout.
    let hostile = redis_update(
        arch,
        "hostile Redis clients cost the others nothing, through 2 updates",
        Module::SecondVersion,
        "demo.updates=2 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000 \
         kvstore.maxclients=4 kvstore.maxmemory=64kb",
        Expect::demo_with(
            2,
            &[
                (
                    "host: hostile clients: 4 served and 3 past maxclients told so, a 2 GiB bulk refused and closed, \
                  random bytes refused and closed, 10 PINGs answered in",
                    1,
                ),
                ("-OOM after", 1),
                ("the first client kept its connection and its key", 1),
                ("maxclients 4, maxmemory 65536 bytes", 2),
            ],
            &["kernel panic", "stopping", "refused port", "does not read", "lost"],
        ),
        |port| HostTraffic::Hostile { port },
    );
    // 200 clients open at once against maxclients=20 while an update
    // happens (the short version of 1000 against 100, run by hand): the
    // first 20 are served and stay so, every other one is told Redis's
    // error, and the first keeps working.
    let crowd = redis_update(
        arch,
        "200 Redis clients: maxclients served, the rest told so, through an update",
        Module::SameImage,
        "demo.updates=1 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000 \
         kvstore.maxclients=20",
        Expect::demo_with(
            1,
            &[
                (
                    "host: 200 clients: 19 served and still answered after the updates, 181 told the limit is \
                     reached, 0 otherwise",
                    1,
                ),
                ("the first client kept working", 1),
            ],
            &["kernel panic", "stopping", "refused port"],
        ),
        |port| HostTraffic::Crowd { port, clients: 200 },
    );
    // redis-benchmark (8 connections, four tests of 20,000 requests) runs
    // while three updates happen, the first restarting kvstore: no error,
    // no connection lost, and its counter counted every INCR once. Its
    // 80,000 requests take a minute or more under TCG, nearly all of it
    // after the demo paused: the guest's pause before shutdown (at most
    // 5 minutes) and the case's timeout outlast them.
    let benchmark = redis_update(
        arch,
        "redis-benchmark runs through 3 updates, the first restarting kvstore, without an error",
        Module::SecondVersion,
        "demo.updates=3 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000",
        Expect::demo_with(
            3,
            &[
                (
                    "host: redis-benchmark -P 1, 4 tests of 20000 requests through 3 updates, 0 errors, its counter \
                     at 20000",
                    1,
                ),
                ("connection(s) taken over", 1),
            ],
            &["kernel panic", "stopping", "refused port", "does not read", "lost", "shutting down anyway"],
        ),
        |port| HostTraffic::RedisBenchmark { port, requests: 20_000, pipeline: 1 },
    )
    .timeout(300);
    // Pipelined: 16 INCRs in flight on each of 8 connections while the
    // same three updates happen, the first restarting kvstore. The
    // counter ends at exactly the number of requests: none lost, none
    // applied twice across the restart.
    let pipelined = redis_update(
        arch,
        "pipelined INCRs run through 3 updates, the first restarting kvstore, each counted once",
        Module::SecondVersion,
        "demo.updates=3 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000",
        Expect::demo_with(
            3,
            &[
                (
                    "host: redis-benchmark -P 16, 1 tests of 100000 requests through 3 updates, 0 errors, its \
                     counter at 100000",
                    1,
                ),
                ("connection(s) taken over", 1),
            ],
            &["kernel panic", "stopping", "refused port", "does not read", "lost"],
        ),
        |port| HostTraffic::RedisBenchmark { port, requests: 100_000, pipeline: 16 },
    );
    // Two cards, two drivers: driverprobe is refused netd's card (its
    // registers and every BAR) while netd, resumed across the update,
    // keeps echoing TCP from the host.
    let port = free_tcp_port();
    let forward = format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:7");
    let others = if arch == Arch::X86_64 { 4 } else { 2 };
    let neighbours = update(
        arch,
        "a driver is refused another driver's card while that driver keeps echoing through an update",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} demo.wait=1 test.device=1 pci.assign=netd:1af4:1000,driverprobe:1af4:1000"),
        Expect::demo_with(
            1,
            &[
                ("host: 20 of 20 lines echoed over TCP", 1),
                ("driverprobe: every check held and every forbidden access was refused", 2),
                (&format!("driverprobe: {others} other function(s) on bus 0 refused, registers and BARs"), 2),
                ("netd: virtio-net at", 1),
            ],
            &["kernel panic", "stopping", "not PermissionDenied"],
        ),
    )
    .qemu_args(&[
        "-netdev",
        &forward,
        "-device",
        "virtio-net-pci,netdev=net0",
        "-netdev",
        "user,id=net1,restrict=on",
        "-device",
        "virtio-net-pci,netdev=net1",
    ])
    .host_traffic(HostTraffic::Echo { port, lines: 20 })
    .must_contain("service 'netd': resumable by the update rule");
    // One TCP connection opened before the first update stays open
    // through five (the updates spaced by demo.interval_ms so the host
    // gets its line in between) and echoes after each: no reconnect.
    let port = free_tcp_port();
    let forward = format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:7");
    let session = update(
        arch,
        "a TCP connection from the host stays open through 5 updates and echoes after each",
        Module::SecondVersion,
        "demo.updates=5 demo.shutdown=1 demo.wait=1 demo.interval_ms=400 pci.assign=netd:1af4:1000",
        Expect::demo_with(
            5,
            &[("host: one TCP connection, 7 of 7 lines echoed through 5 updates", 1), ("netd: virtio-net at", 1)],
            &["kernel panic", "stopping", "lost", "cannot connect"],
        ),
    )
    .qemu_args(&["-netdev", &forward, "-device", "virtio-net-pci,netdev=net0"])
    .host_traffic(HostTraffic::Session { port })
    // The card interrupts netd (MSI-X through the local APIC or GICv2m),
    // routed again after each update.
    .must_contain("netd: the card interrupts through MSI-X entry 0")
    .must_contain("interrupt(s) from the card so far")
    .must_contain("1 MSI-X entr(ies) routed again to 'netd'")
    .must_contain("echo: a connection closed by the remote end (1 so far)")
    .must_contain("service 'echo' (id");
    let cases = vec![
        found,
        off,
        driver,
        netd,
        damaged,
        bypassed,
        echo,
        client_restarts,
        redis,
        redis_restarted,
        pipelined,
        hostile,
        crowd,
        bulk,
        million,
        neighbours,
        session,
        benchmark,
    ];
    cases
}

/// Hostile services attacking while an update runs (`test.adversary=N`).
fn hostile_service_cases(arch: Arch) -> Vec<QemuCase> {
    let survives = |text: &str| {
        Expect::demo_with(
            1,
            &[(text, 1)],
            &["kernel fault", "kernel panic", "handover bypassed", "never claimed their state"],
        )
    };
    let adversaries = [
        (1, "flooding IPC does not stop the update or lose state", survives("adversary: flood")),
        (2, "allocating until refused does not stop the update or lose state", survives("adversary: hog: holding")),
        (3, "preserving until refused does not stop the update or lose state", survives("adversary: preserve:")),
        (
            4,
            "publishing bad sub-FDTs does not stop the update or lose state",
            survives("adversary: publish: 5 of 5 bad sub-FDTs refused"),
        ),
        (
            6,
            "crashing in the middle of prepare does not stop the update or lose state",
            survives("faulting in the middle of prepare"),
        ),
        (
            5,
            "spinning without acknowledging makes the update abort cleanly",
            Expect::status(
                Arch::TEST_FAILURE_STATUS,
                &["did not finish preparing in time", "demo: state intact after the failed update"],
                &["kernel fault", "kernel panic", "booting via kho"],
            ),
        ),
    ];
    adversaries
        .into_iter()
        .map(|(mode, what, expect)| {
            update(
                arch,
                &format!("a service {what}"),
                Module::SecondVersion,
                &format!("{ONE_UPDATE} test.adversary={mode}"),
                expect,
            )
        })
        .collect()
}

/// The handover itself: dumped and decoded, refused images, aborts, then
/// what goes wrong on purpose.
fn handover_cases(arch: Arch) -> Vec<QemuCase> {
    let failed_update = |failure: &str| {
        Expect::status(
            Arch::TEST_FAILURE_STATUS,
            &[failure, "demo: state intact after the failed update"],
            &["booting via kho"],
        )
    };
    let mut cases = vec![
        update(
            arch,
            "the outgoing handover is dumped and decoded independently",
            Module::SecondVersion,
            &format!("{ONE_UPDATE} kho.pause=1"),
            Expect::Demo(1),
        )
        .dump_kho(),
        update(
            arch,
            "a preserved folio survives heavy allocation",
            Module::SameImage,
            "ktest=update::tests::preserved_folio_survives_heavy_allocation",
            Expect::KernelTestsPass,
        )
        .must_contain("booting via kho"),
        update(
            arch,
            "a bad update image is refused",
            Module::Garbage,
            "ktest=update::tests::bad_update_image_is_refused",
            Expect::KernelTestsPass,
        ),
        update(
            arch,
            "a refused image loses nothing",
            Module::Garbage,
            ONE_UPDATE,
            failed_update("next kernel image refused"),
        ),
        update(
            arch,
            "abort after freezing leaves everything running",
            Module::SecondVersion,
            &format!("{ONE_UPDATE} kho.inject=fail-jump"),
            failed_update("update aborted"),
        ),
    ];
    cases.extend(fault_cases(arch));
    cases
}

/// Faults on purpose: corrupted handovers, a client without a report, a
/// next kernel that faults, bit flips.
fn fault_cases(arch: Arch) -> Vec<QemuCase> {
    let mut cases = Vec::new();
    for fault in ["root", "chunks", "bitmap"] {
        cases.push(update(
            arch,
            &format!("a corrupted handover ({fault}) is bypassed"),
            Module::SecondVersion,
            &format!("{ONE_UPDATE} kho.inject={fault}"),
            Expect::status(
                Arch::TEST_SUCCESS_STATUS,
                &["handover bypassed", "kvstore: ready (format 2, 0 entries)", "demo: complete after 1 updates"],
                &["kernel fault", "panic"],
            ),
        ));
    }
    // A client that ends without its report: init's call fails and the
    // demo stops with a failure, at once (it used to wait forever).
    cases.push(
        update(
            arch,
            "a client that ends without a report stops the demo",
            Module::SecondVersion,
            &format!("{ONE_UPDATE} test.client=exit-early"),
            Expect::status(
                Arch::TEST_FAILURE_STATUS,
                &[
                    "client: ending without a report",
                    "init: the client ended without a report",
                    "demo: the state could not be checked",
                ],
                &["demo: update 1 of 1 starting", "kernel fault"],
            ),
        )
        .timeout(120),
    );
    // An update into a kernel that faults at once: reported, and the
    // machine stops (no rollback; see docs/reliability.md).
    cases.push(update(
        arch,
        "a next kernel that faults at once is reported and stops the machine",
        Module::SecondVersion,
        &format!("{ONE_UPDATE} test.fault_early=1"),
        Expect::status(
            Arch::TEST_FAILURE_STATUS,
            &["jumping", "booting via kho", "kernel fault", "handed-over state is still in memory"],
            &["demo: generation 1"],
        ),
    ));
    // Random bit flips in the handover: bypassed, or read with some state
    // lost, but never a crash.
    for region in ["root", "chunks", "bitmap"] {
        for seed in [1, 2, 3] {
            cases.push(
                update(
                    arch,
                    &format!("bits flipped in the {region} (seed {seed}) never crash the next kernel"),
                    Module::SecondVersion,
                    &format!("{ONE_UPDATE} kho.inject=flip-{region}:{seed}"),
                    Expect::survives(&["kernel fault", "kernel panic", "register dump"]),
                )
                .must_contain("fault injection: flip-"),
            );
        }
    }
    cases
}

/// Boots through Limine from the ISO: on a CD under every firmware, from a
/// USB stick, updating and running the kernel tests.
fn limine_cases(arch: Arch, with_bios_usb: bool) -> Vec<QemuCase> {
    let firmwares: &[Firmware] = match arch {
        Arch::X86_64 => &[Firmware::Bios, Firmware::Uefi],
        Arch::Aarch64 => &[Firmware::Uefi],
    };
    let limine = |name: String, firmware: Firmware, drive: Drive| {
        QemuCase::new(name.to_lowercase(), arch)
            .boot(Boot::Limine(firmware, drive))
            .must_contain(banner(arch, "limine"))
    };
    let mut cases = vec![
        limine(format!("{arch} limine (uefi): self-kexec into its own image"), Firmware::Uefi, Drive::Cd)
            .command_line(format!("{ONE_UPDATE} demo.image=own"))
            .module(Module::SameImage)
            .must_contain("booting via kho")
            .expect(Expect::Demo(1))
            .timeout(600),
    ];
    for &firmware in firmwares {
        cases.push(
            limine(format!("{arch} limine ({firmware:?}): self-update demo, shown on the screen"), firmware, Drive::Cd)
                .command_line("demo.updates=2 demo.shutdown=1 demo.screenshot=1")
                .module(Module::SecondVersion)
                .must_contain(format!("Baton {SECOND_VERSION} ({arch}) booting via kho"))
                .expect(Expect::Demo(2))
                .timeout(600),
        );
        if firmware == Firmware::Uefi || with_bios_usb {
            // The ISO written to a USB stick: firmware boots it as a
            // disk (GPT/MBR and the EFI partition, or Limine's BIOS
            // boot sector), not through the CD's El Torito catalogue.
            cases.push(
                limine(format!("{arch} limine ({firmware:?}, usb stick): self-update demo"), firmware, Drive::Usb)
                    .command_line(ONE_UPDATE)
                    .module(Module::SecondVersion)
                    .expect(Expect::Demo(1))
                    .timeout(600),
            );
        }
        cases.push(
            limine(format!("{arch} limine ({firmware:?}): kernel tests"), firmware, Drive::Cd)
                .command_line("ktest=all")
                .memory(256)
                .timeout(180),
        );
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_case_has_the_defaults() {
        let case = QemuCase::new("x", Arch::Aarch64);
        assert_eq!((case.boot, case.memory_mib, case.module, case.dump_kho), (Boot::Direct, 512, None, false));
        assert!(matches!(case.expect, Expect::KernelTestsPass));
        assert_eq!(case.timeout, Duration::from_secs(120));
        assert!(case.command_line.is_empty() && case.must_contain.is_empty() && case.qemu_args.is_empty());
        assert!(case.testing && case.services_absent.is_empty());
    }

    #[test]
    fn one_case_boots_a_production_kernel() {
        let name = |arch: Arch| format!("{arch} direct: production kernel carries no test machinery");
        for arch in Arch::ALL {
            let available = Available { limine: false, bios_usb: false };
            let all = cases(arch, &available);
            let production: Vec<&QemuCase> = all.iter().filter(|case| !case.testing).collect();
            assert_eq!(production.len(), 1);
            assert_eq!(production[0].name, name(arch));
            assert_eq!(production[0].services_absent, TEST_ONLY_SERVICES);
            assert_eq!(production[0].boot, Boot::Direct);
        }
    }

    #[test]
    fn case_names_are_unique_and_name_their_architecture() {
        for arch in Arch::ALL {
            let available = Available { limine: true, bios_usb: true };
            let cases = cases(arch, &available);
            let mut names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
            assert!(names.iter().all(|name| name.starts_with(&arch.to_string())), "{names:?}");
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "duplicate case names on {arch}");
        }
    }
}
