//! The kernel's command-line options, parsed once into types.
//!
//! The command line follows [`baton_kho::cmdline`]'s documented rules:
//! words split at whitespace, the last occurrence of a key wins, and a word
//! `--` ends the kernel's part. A value that cannot be read is reported in
//! [`Options::problems`] and the option keeps its default.

use arrayvec::ArrayVec;
use baton_abi::{BallastStart, InitStart};
use baton_kho::cmdline::{self, CmdlineParameter};

/// How long services get to acknowledge `prepare` by default.
pub const DEFAULT_PREPARE_TIMEOUT_NS: u64 = 5_000_000_000;

/// The kernel's options, each with its default when the command line does
/// not set it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `kho_scratch=`: the scratch sizing rule, as written (parsed by the
    /// memory setup, which reports a malformed one).
    pub kho_scratch: Option<&'static str>,
    /// `demo.updates=`, `demo.shutdown=`, `demo.image=own`: what init's demo
    /// does (the ballast and client bits are added where those are known).
    pub demo: InitStart,
    /// `demo.screenshot=1` or `demo.wait=1`: shutdown waits for a line on
    /// the console.
    pub is_screenshot_pause: bool,
    /// `update.prepare_timeout_ms=`: how long services get to prepare.
    pub prepare_timeout_ns: u64,
    /// `update.resume=0`: every update restarts every service (default on:
    /// the update rule resumes unchanged services).
    pub is_resume_enabled: bool,
    /// `mem.service_limit_mib=`: the most preservable memory one service
    /// may hold (default: half of what is free at boot).
    pub service_limit_bytes: Option<u64>,
    /// `console.screen=off`: keep the log off the framebuffer.
    pub is_screen_enabled: bool,
    /// `kho.pause=1`: the first finalisation waits for the console.
    pub is_kho_pause: bool,
    /// `bench.ballast=MiB`, `bench.order=`, `bench.copy=1`: start the
    /// benchmark's ballast service.
    pub ballast: Option<BallastStart>,
    /// `ktest=<filter>`: run the in-kernel tests it selects.
    pub ktest_filter: Option<&'static str>,
    /// `kho.inject=<fault>`: damage the outgoing handover on purpose.
    pub inject: Option<&'static str>,
    /// `test.adversary=N`: start the adversary service in mode N.
    pub adversary_mode: Option<u64>,
    /// `test.resume=compute|calls|mappings|limit`: start the process-handover test
    /// services in that scenario.
    pub resume_test: Option<&'static str>,
    /// `test.fault_early=1`: a kernel booted through KHO faults at once.
    pub is_fault_early: bool,
    /// `pci=off`: leave PCI alone (no enumeration, no BAR assignment).
    pub is_pci_enabled: bool,
    /// `pci.assign=NAME:VVVV:DDDD[,...]`: the device manifest; each named
    /// service drives the first function not yet given with that vendor
    /// and device ID (hexadecimal).
    pub pci_assign: ArrayVec<DeviceAssignment, MAX_DEVICE_ASSIGNMENTS>,
    /// `test.device=1`: start the driverprobe test service.
    pub is_device_test: bool,
    /// `test.share=N`: start the shared-region test services (pinger and
    /// ponger), which carry on through N updates.
    pub share_test_updates: Option<u64>,
    /// `test.pci_record=1`: log each PCI function's configuration space
    /// and BAR probes, for the host tests' recordings.
    pub is_pci_record: bool,
    /// Values that could not be read (logged at boot).
    pub problems: ArrayVec<Problem, 8>,
}

/// The most entries `pci.assign=` takes.
pub const MAX_DEVICE_ASSIGNMENTS: usize = 8;

/// One entry of the device manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAssignment {
    /// The service that drives the device.
    pub service: arrayvec::ArrayString<{ baton_abi::MAX_NAME_BYTES }>,
    /// PCI vendor ID.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
}

/// Reads `NAME:VVVV:DDDD[,...]`; `None` if any entry is malformed or there
/// are too many.
fn device_manifest(value: &str) -> Option<ArrayVec<DeviceAssignment, MAX_DEVICE_ASSIGNMENTS>> {
    let mut manifest = ArrayVec::new();
    for entry in value.split(',') {
        let mut parts = entry.split(':');
        let (Some(name), Some(vendor), Some(device), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let service = arrayvec::ArrayString::from(name).ok().filter(|name| !name.is_empty())?;
        let vendor_id = u16::from_str_radix(vendor, 16).ok()?;
        let device_id = u16::from_str_radix(device, 16).ok()?;
        manifest.try_push(DeviceAssignment { service, vendor_id, device_id }).ok()?;
    }
    Some(manifest)
}

/// A command-line word whose value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    /// The key.
    pub key: &'static str,
    /// The value as written (empty for a bare flag).
    pub value: &'static str,
    /// What was expected.
    pub expected: &'static str,
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "option '{}={}' ignored: expected {}", self.key, self.value, self.expected)
    }
}

impl Options {
    /// Parses a kernel command line.
    pub fn parse(command_line: &'static str) -> Self {
        let mut options = Options {
            prepare_timeout_ns: DEFAULT_PREPARE_TIMEOUT_NS,
            is_screen_enabled: true,
            is_resume_enabled: true,
            is_pci_enabled: true,
            ..Options::default()
        };
        let mut ballast_mebibytes = None;
        let mut ballast_order = 0u64;
        let mut ballast_copying = false;
        for CmdlineParameter { key, value } in cmdline::parameters(command_line) {
            let mut failure = None;
            let mut problem = |expected| failure = Some(expected);
            match key {
                cmdline::KHO_SCRATCH_PARAMETER => options.kho_scratch = value,
                "demo.updates" => match number(value) {
                    Some(updates) => options.demo.updates = updates.min(u64::from(u32::MAX)) as u32,
                    None => problem("a number"),
                },
                "demo.interval_ms" => match number(value) {
                    Some(milliseconds) => options.demo.interval_ms = milliseconds.min(u64::from(u16::MAX)) as u16,
                    None => problem("a number of milliseconds"),
                },
                "demo.shutdown" => match boolean(value) {
                    Some(is_set) => options.demo.shutdown_when_done = is_set,
                    None => problem("a boolean"),
                },
                "demo.image" => match value {
                    Some("own") => options.demo.own_image = true,
                    Some("module") => options.demo.own_image = false,
                    _ => problem("'own' or 'module'"),
                },
                // `demo.wait=1` is the same pause without a screenshot
                // (a host-side test talks to the guest meanwhile).
                "demo.screenshot" | "demo.wait" => match boolean(value) {
                    Some(is_set) => options.is_screenshot_pause = is_set,
                    None => problem("a boolean"),
                },
                "update.prepare_timeout_ms" => match number(value) {
                    Some(milliseconds) => options.prepare_timeout_ns = milliseconds.saturating_mul(1_000_000),
                    None => problem("a number of milliseconds"),
                },
                "update.resume" => match boolean(value) {
                    Some(is_on) => options.is_resume_enabled = is_on,
                    None => problem("a boolean"),
                },
                "mem.service_limit_mib" => match number(value) {
                    Some(mebibytes) => options.service_limit_bytes = Some(mebibytes.saturating_mul(1 << 20)),
                    None => problem("a number of MiB"),
                },
                "console.screen" => match boolean(value) {
                    Some(is_on) => options.is_screen_enabled = is_on,
                    None => problem("'on' or 'off'"),
                },
                "kho.pause" => match boolean(value) {
                    Some(is_set) => options.is_kho_pause = is_set,
                    None => problem("a boolean"),
                },
                "bench.ballast" => match number(value) {
                    Some(mebibytes) => ballast_mebibytes = Some(mebibytes),
                    None => problem("a number of MiB"),
                },
                "bench.order" => match number(value) {
                    Some(order) => ballast_order = order,
                    None => problem("a folio order"),
                },
                "bench.copy" => match boolean(value) {
                    Some(is_set) => ballast_copying = is_set,
                    None => problem("a boolean"),
                },
                "ktest" => options.ktest_filter = value,
                "kho.inject" => options.inject = value,
                "test.resume" => options.resume_test = value,
                "test.adversary" => match number(value) {
                    Some(mode) => options.adversary_mode = Some(mode),
                    None => problem("a mode number"),
                },
                "test.fault_early" => match boolean(value) {
                    Some(is_set) => options.is_fault_early = is_set,
                    None => problem("a boolean"),
                },
                "pci" => match boolean(value) {
                    Some(is_on) => options.is_pci_enabled = is_on,
                    None => problem("'on' or 'off'"),
                },
                "pci.assign" => match value.and_then(device_manifest) {
                    Some(manifest) => options.pci_assign = manifest,
                    None => problem("NAME:VENDOR:DEVICE entries (hexadecimal IDs), at most 8"),
                },
                "test.device" => match boolean(value) {
                    Some(is_set) => options.is_device_test = is_set,
                    None => problem("a boolean"),
                },
                "test.share" => match number(value) {
                    Some(updates) => options.share_test_updates = Some(updates),
                    None => problem("a number of updates"),
                },
                "test.pci_record" => match boolean(value) {
                    Some(is_set) => options.is_pci_record = is_set,
                    None => problem("a boolean"),
                },
                "test.client" => match value {
                    Some("exit-early") => options.demo.client_exits_early = true,
                    _ => problem("'exit-early'"),
                },
                // Other words belong to someone else (`kho=`, or nothing).
                _ => {}
            }
            if let Some(expected) = failure {
                let _ = options.problems.try_push(Problem { key, value: value.unwrap_or(""), expected });
            }
        }
        options.ballast = ballast_mebibytes.map(|mebibytes| BallastStart {
            mebibytes: mebibytes.min(u64::from(u32::MAX)) as u32,
            order: ballast_order.min(u64::from(baton_abi::MAX_USER_FOLIO_ORDER)) as u8,
            is_copying: ballast_copying,
        });
        options
    }
}

/// The value of `SERVICE.KEY=VALUE` on `command_line`, for
/// `service_option`: a service sees only the options under its own name.
/// A bare `SERVICE.KEY` is an empty value; the last occurrence wins, as
/// for the kernel's own options.
pub fn service_option<'a>(command_line: &'a str, service: &str, key: &str) -> Option<&'a str> {
    if service.is_empty() || key.is_empty() {
        return None;
    }
    cmdline::parameters(command_line)
        .filter(|parameter| parameter.key.strip_prefix(service).and_then(|rest| rest.strip_prefix('.')) == Some(key))
        .last()
        .map(|parameter| parameter.value.unwrap_or(""))
}

fn number(value: Option<&str>) -> Option<u64> {
    value?.parse().ok()
}

fn boolean(value: Option<&str>) -> Option<bool> {
    cmdline::parse_boolean(value?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_sees_only_its_own_options() {
        let line = "kvstore.maxclients=10 kvstoreX.maxclients=3 kvstore.flag netd.maxclients=7 kvstore.maxclients=12";
        assert_eq!(service_option(line, "kvstore", "maxclients"), Some("12"));
        assert_eq!(service_option(line, "kvstore", "flag"), Some(""));
        assert_eq!(service_option(line, "netd", "maxclients"), Some("7"));
        assert_eq!(service_option(line, "kvstore", "maxmemory"), None);
        assert_eq!(service_option(line, "kvstore", ""), None);
        assert_eq!(service_option(line, "", "maxclients"), None);
        // Not a prefix match on the key either.
        assert_eq!(service_option(line, "kvstore", "max"), None);
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        let options = Options::parse("");
        assert_eq!(options.demo, InitStart::default());
        assert_eq!(options.prepare_timeout_ns, DEFAULT_PREPARE_TIMEOUT_NS);
        assert!(
            options.is_screen_enabled && options.is_resume_enabled && options.is_pci_enabled && !options.is_pci_record
        );
        assert!(options.ballast.is_none() && options.ktest_filter.is_none() && options.problems.is_empty());
    }

    #[test]
    fn every_option_is_read() {
        let options = Options::parse(
            "kho_scratch=10% demo.updates=3 demo.shutdown=1 demo.image=own demo.screenshot=1 \
             update.prepare_timeout_ms=250 mem.service_limit_mib=8 console.screen=off kho.pause=1 \
             bench.ballast=64 bench.order=9 bench.copy=1 ktest=all kho.inject=root test.adversary=4 test.resume=calls \
             test.fault_early=1 test.client=exit-early update.resume=0 pci=off test.pci_record=1 test.device=1 \
             pci.assign=netd:1af4:1000,probe:1af4:1041 demo.interval_ms=1000 test.share=2",
        );
        assert_eq!(options.kho_scratch, Some("10%"));
        assert_eq!(options.resume_test, Some("calls"));
        assert_eq!(options.share_test_updates, Some(2));
        let demo = InitStart {
            updates: 3,
            shutdown_when_done: true,
            own_image: true,
            client_exits_early: true,
            interval_ms: 1000,
            ..InitStart::default()
        };
        assert_eq!(options.demo, demo);
        assert!(options.is_screenshot_pause && options.is_kho_pause && options.is_fault_early);
        assert_eq!(options.prepare_timeout_ns, 250_000_000);
        assert_eq!(options.service_limit_bytes, Some(8 << 20));
        assert!(!options.is_screen_enabled && !options.is_resume_enabled);
        assert!(!options.is_pci_enabled && options.is_pci_record && options.is_device_test);
        assert_eq!(options.pci_assign.len(), 2);
        assert_eq!(
            options.pci_assign[1],
            DeviceAssignment {
                service: arrayvec::ArrayString::from("probe").unwrap(),
                vendor_id: 0x1af4,
                device_id: 0x1041
            }
        );
        assert_eq!(options.ballast, Some(BallastStart { mebibytes: 64, order: 9, is_copying: true }));
        assert_eq!(
            (options.ktest_filter, options.inject, options.adversary_mode),
            (Some("all"), Some("root"), Some(4))
        );
        assert!(options.problems.is_empty(), "{:?}", options.problems);
    }

    #[test]
    fn the_last_occurrence_wins() {
        let options = Options::parse("demo.updates=1 demo.updates=7 console.screen=off console.screen=on");
        assert_eq!(options.demo.updates, 7);
        assert!(options.is_screen_enabled);
    }

    #[test]
    fn a_double_dash_ends_the_kernel_part() {
        let options = Options::parse("demo.updates=2 -- demo.updates=9 ktest=all");
        assert_eq!(options.demo.updates, 2);
        assert_eq!(options.ktest_filter, None);
    }

    #[test]
    fn unreadable_values_are_reported_and_keep_their_default() {
        let options = Options::parse("demo.updates=lots update.prepare_timeout_ms= demo.image=disk demo.shutdown");
        assert_eq!(options.demo.updates, 0);
        assert_eq!(options.prepare_timeout_ns, DEFAULT_PREPARE_TIMEOUT_NS);
        assert!(!options.demo.own_image && !options.demo.shutdown_when_done);
        let keys: Vec<&str> = options.problems.iter().map(|problem| problem.key).collect();
        assert_eq!(keys, ["demo.updates", "update.prepare_timeout_ms", "demo.image", "demo.shutdown"]);
        assert_eq!(options.problems[0].to_string(), "option 'demo.updates=lots' ignored: expected a number");
    }

    #[test]
    fn a_malformed_device_manifest_assigns_nothing() {
        for value in [
            "netd",
            "netd:1af4",
            "netd:1af4:zz",
            ":1af4:1000",
            "netd:1af4:1000:7",
            "a:1:1,b:2:2,c:3:3,d:4:4,e:5:5,f:6:6,g:7:7,h:8:8,i:9:9",
        ] {
            let options = Options::parse(Box::leak(format!("pci.assign={value}").into_boxed_str()));
            assert!(options.pci_assign.is_empty(), "{value}");
            assert_eq!(options.problems.len(), 1, "{value}");
        }
        let options = Options::parse("pci.assign=netd:1AF4:1000");
        assert_eq!((options.pci_assign[0].vendor_id, options.pci_assign[0].device_id), (0x1af4, 0x1000));
    }

    #[test]
    fn large_values_saturate() {
        let options = Options::parse(
            "demo.updates=99999999999 bench.ballast=99999999999 bench.order=200 mem.service_limit_mib=18446744073709551615",
        );
        assert_eq!(options.demo.updates, u32::MAX);
        let ballast = options.ballast.expect("ballast requested");
        assert_eq!((ballast.mebibytes, u32::from(ballast.order)), (u32::MAX, baton_abi::MAX_USER_FOLIO_ORDER));
        assert_eq!(options.service_limit_bytes, Some(u64::MAX));
    }
}
