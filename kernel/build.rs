//! Links the kernel with its per-architecture linker script and embeds the
//! service images the xtask built (`BATON_SERVICES_DIR`, a directory of
//! service ELFs; without it the kernel carries no services).

use baton_abi::ABI_VERSION;
use baton_image::services::{BATON_NOTE_SERVICES, ServiceRecord, ServiceTable, encode_services};
use sha2::{Digest, Sha256};
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
    let mut generated = String::from(
        "/// Embedded service images: (name, ELF bytes, SHA-256 of the bytes, always restarted).\n\
         pub static SERVICES: &[(&str, &[u8], [u8; 32], bool)] = &[\n",
    );
    let mut table = ServiceTable { supported_abi: (ABI_VERSION, ABI_VERSION), services: Default::default() };
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
            let bytes = std::fs::read(&path).expect("service images are readable");
            let hash: [u8; 32] = Sha256::digest(&bytes).into();
            let is_always_restarted = is_always_restarted(&manifest_dir, name);
            writeln!(
                generated,
                "    ({name:?}, include_bytes!({:?}), {hash:?}, {is_always_restarted}),",
                path.display().to_string()
            )
            .expect("writing to a String");
            let record = ServiceRecord {
                name: name.try_into().expect("service names fit the KHO user-name limit"),
                hash,
                abi_version: ABI_VERSION,
                is_always_restarted,
            };
            table.services.try_push(record).expect("at most 64 services");
        }
    }
    generated.push_str("];\n");
    // The same table as a Baton note, so a previous kernel can read which
    // services this image embeds before it updates into it.
    let descriptor = encode_services(&table).expect("the service table is valid");
    let mut note = Vec::new();
    let name = b"Baton\0\0\0";
    for word in [6u32, descriptor.len() as u32, BATON_NOTE_SERVICES] {
        note.extend_from_slice(&word.to_le_bytes());
    }
    note.extend_from_slice(name);
    note.extend_from_slice(&descriptor);
    while note.len() % 4 != 0 {
        note.push(0);
    }
    let mut note_source = String::new();
    writeln!(
        note_source,
        "/// The services note (`baton_image::services`), placed in the image's PT_NOTE segment.\n\
         #[repr(C, align(4))]\npub struct ServicesNote(pub [u8; {len}]);\n\
         #[used]\n#[unsafe(link_section = \".note.baton.services\")]\n\
         pub static SERVICES_NOTE: ServicesNote = ServicesNote({note:?});",
        len = note.len()
    )
    .expect("writing to a String");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("services.rs"), generated).expect("writing services.rs");
    std::fs::write(out.join("services_note.rs"), note_source).expect("writing services_note.rs");
}

/// Whether `services/<name>/Cargo.toml` asks for the service to be
/// restarted by every update (`[package.metadata.baton] always-restart =
/// true`).
fn is_always_restarted(manifest_dir: &str, name: &str) -> bool {
    let manifest = std::path::Path::new(manifest_dir).join("../services").join(name).join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", manifest.display());
    let Ok(text) = std::fs::read_to_string(manifest) else { return false };
    let mut is_baton_table = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            is_baton_table = line == "[package.metadata.baton]";
        } else if is_baton_table
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "always-restart"
        {
            return value.trim() == "true";
        }
    }
    false
}
