//! Fuzz target: the boot command line: parameter splitting, `kho=`, and the
//! `kho_scratch=` sizes (every form, every suffix, every overflow).
#![no_main]

use baton_kho::cmdline::{kho_enabled, parameter_value, parameters};
use baton_kho::scratch::ScratchSizing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cmdline) = core::str::from_utf8(data) else { return };
    for parameter in parameters(cmdline) {
        assert!(!parameter.key.is_empty() || parameter.value.is_some());
    }
    let _ = kho_enabled(cmdline);
    if let Some(value) = parameter_value(cmdline, "kho_scratch") {
        let _ = ScratchSizing::parse(value);
    }
    let _ = ScratchSizing::parse(cmdline);
});
