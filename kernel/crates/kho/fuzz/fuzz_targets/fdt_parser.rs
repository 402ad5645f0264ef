//! Fuzz target: the root FDT parser and the FDT validator on arbitrary bytes.
//!
//! Beyond "no panic", it checks the promise the validator makes: whatever
//! `validate_fdt` accepts, the `fdt` crate's node and property walks handle.
#![no_main]

use baton_kho::fdt::{parse_fdt, parse_kho_fdt, validate_fdt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(root) = parse_kho_fdt(data) {
        assert!(root.total_size_bytes() <= data.len());
        for user in root.users() {
            assert!(baton_kho::fdt::is_valid_user_name(user.name));
            assert_eq!(root.user(user.name), Some(user.sub_fdt_phys));
        }
    }
    let validated = validate_fdt(data);
    let Ok(fdt) = parse_fdt(data) else {
        assert!(validated.is_err());
        return;
    };
    assert_eq!(validated, Ok(fdt.total_size()));
    for node in fdt.all_nodes() {
        for property in node.properties() {
            let _ = (property.name, property.as_str(), property.as_usize());
        }
        for child in node.children() {
            let _ = child.property("fdt");
        }
    }
    let _ = fdt.find_node("/");
});
