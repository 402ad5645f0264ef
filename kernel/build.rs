//! Links the kernel with its per-architecture linker script and embeds the
//! service images the xtask built (`BATON_SERVICES_DIR`, a directory of
//! service ELFs; without it the kernel carries no services).

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let arch = target.split('-').next().unwrap_or_default();
    let script = format!("{manifest_dir}/link/{arch}.ld");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rustc-link-arg-bins=-T{script}");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");

    println!("cargo:rerun-if-env-changed=BATON_SERVICES_DIR");
    let mut generated =
        String::from("/// Embedded service images: (name, ELF bytes).\npub static SERVICES: &[(&str, &[u8])] = &[\n");
    if let Some(directory) = std::env::var_os("BATON_SERVICES_DIR").map(PathBuf::from) {
        println!("cargo:rerun-if-changed={}", directory.display());
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&directory)
            .expect("BATON_SERVICES_DIR is readable")
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_file())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|name| name.to_str()).expect("service file names are UTF-8");
            println!("cargo:rerun-if-changed={}", path.display());
            writeln!(generated, "    ({name:?}, include_bytes!({:?})),", path.display().to_string())
                .expect("writing to a String");
        }
    }
    generated.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("services.rs");
    std::fs::write(out, generated).expect("writing services.rs");
}
