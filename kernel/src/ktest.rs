//! In-kernel tests: registered through the `.ktests` linker section and run
//! when the command line says `ktest=<filter>`.
//!
//! Each test prints `ktest: <name> ... ok` or `... FAILED`; the run ends with
//! `ktest: N passed, N failed` and leaves QEMU with `baton_arch::EXIT_SUCCESS`
//! or `EXIT_FAILURE`, statuses a crash or a hang cannot produce. Built with
//! the `testing` feature only.

use baton_arch::{EXIT_FAILURE, EXIT_SUCCESS};

/// A test failed; the reason has already been printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// The result of one kernel test.
pub type TestResult = Result<(), Failed>;

/// One registered test.
#[derive(Debug)]
#[repr(C)]
pub struct KernelTest {
    /// Module path and function name.
    pub name: &'static str,
    /// The test itself.
    pub run: fn() -> TestResult,
    /// Scenarios that crash on purpose or need a particular boot (an update
    /// module): run only when named exactly.
    pub is_scenario: bool,
}

/// Registers a kernel test: `kernel_test! { fn name() -> TestResult { ... } }`.
#[macro_export]
macro_rules! kernel_test {
    ($(#[$meta:meta])* fn $name:ident() -> TestResult $body:block) => {
        $crate::kernel_test!(@register $name, false, $(#[$meta])* fn $name() -> $crate::ktest::TestResult $body);
    };
    ($(#[$meta:meta])* scenario fn $name:ident() -> TestResult $body:block) => {
        $crate::kernel_test!(@register $name, true, $(#[$meta])* fn $name() -> $crate::ktest::TestResult $body);
    };
    (@register $name:ident, $crash:expr, $function:item) => {
        $function
        const _: () = {
            // Placing the entry in `.ktests` is what registers it; the
            // layers deny unsafe code, and this attribute is the one use.
            #[allow(unsafe_code)]
            #[used]
            #[unsafe(link_section = ".ktests")]
            static ENTRY: $crate::ktest::KernelTest = $crate::ktest::KernelTest {
                name: concat!(module_path!(), "::", stringify!($name)),
                run: $name,
                is_scenario: $crash,
            };
        };
    };
}

/// Fails the current test unless `condition` holds.
#[macro_export]
macro_rules! check {
    ($condition:expr) => {
        if !$condition {
            $crate::println!("    check failed at {}:{}: {}", file!(), line!(), stringify!($condition));
            return Err($crate::ktest::Failed);
        }
    };
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            $crate::println!("    check failed at {}:{}: {}", file!(), line!(), format_args!($($message)+));
            return Err($crate::ktest::Failed);
        }
    };
}

/// Fails the current test unless both values are equal.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            $crate::println!(
                "    check failed at {}:{}: {} == {}\n      left: {:?}\n     right: {:?}",
                file!(),
                line!(),
                stringify!($left),
                stringify!($right),
                left,
                right
            );
            return Err($crate::ktest::Failed);
        }
    }};
}

unsafe extern "C" {
    static __ktests_start: u8;
    static __ktests_end: u8;
}

/// Every registered test.
pub fn all() -> &'static [KernelTest] {
    // SAFETY: the linker script places every `KernelTest` static from the
    // `.ktests` sections contiguously between these two symbols; the array is
    // immutable for the kernel's lifetime.
    unsafe {
        let start = (&raw const __ktests_start).cast::<KernelTest>();
        let end = (&raw const __ktests_end).cast::<KernelTest>();
        let count = (end as usize - start as usize) / core::mem::size_of::<KernelTest>();
        core::slice::from_raw_parts(start, count)
    }
}

/// The name shown for a test: its path without the crate name.
pub fn display_name(test: &KernelTest) -> &'static str {
    test.name.split_once("::").map_or(test.name, |(_, rest)| rest)
}

/// Whether `test` is selected by `filter`: `all` selects every test except
/// scenarios; otherwise a test is selected when its name contains the
/// filter, and a scenario only when the filter is its full name.
pub fn is_selected(test: &KernelTest, filter: &str) -> bool {
    let name = display_name(test);
    if test.is_scenario {
        return name == filter;
    }
    filter == "all" || filter.split(',').any(|part| !part.is_empty() && name.contains(part))
}

static IS_TEST_MODE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the kernel is running tests (panics and faults then exit QEMU
/// with `EXIT_FAILURE` instead of halting).
pub fn is_test_mode() -> bool {
    IS_TEST_MODE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Enters test mode (before anything that might fail).
pub fn enter_test_mode() {
    IS_TEST_MODE.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Runs the tests `filter` selects and leaves QEMU with the verdict.
pub fn run(filter: &str) -> ! {
    crate::console::flush_held();
    let selected = all().iter().filter(|test| is_selected(test, filter)).count();
    crate::println!("ktest: running {selected} of {} tests (filter '{filter}')", all().len());
    let (mut passed, mut failed) = (0, 0);
    for test in all().iter().filter(|test| is_selected(test, filter)) {
        crate::println!("ktest: {} ...", display_name(test));
        match (test.run)() {
            Ok(()) => {
                passed += 1;
                crate::println!("ktest: {} ... ok", display_name(test));
            }
            Err(Failed) => {
                failed += 1;
                crate::println!("ktest: {} ... FAILED", display_name(test));
            }
        }
    }
    crate::println!("ktest: {passed} passed, {failed} failed");
    if selected == 0 {
        crate::println!("ktest: no test matches '{filter}'");
    }
    baton_arch::debug_exit::exit(if failed == 0 && selected > 0 { EXIT_SUCCESS } else { EXIT_FAILURE })
}
