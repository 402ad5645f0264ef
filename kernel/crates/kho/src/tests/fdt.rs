//! Root FDT round trips, every schema and structure error, the sub-FDT writer and dtc compatibility.

use alloc::string::String;
use alloc::vec::Vec;

use crate::fdt::{
    FdtBlock, FdtStructureError, FdtWriteError, KhoFdtBuildError, KhoFdtBuilder, KhoFdtCorruption, KhoFdtError,
    KhoUser, ReadFdtError, SubFdtWriter, is_valid_user_name, native_u32, native_u64, parse_fdt, parse_kho_fdt,
    read_fdt, validate_fdt,
};
use crate::memory::{AccessError, PhysMemory, PhysRange, SimulatedMemory};

fn sample_root() -> Vec<u8> {
    let mut builder = KhoFdtBuilder::new(0x1_2345_6000);
    builder.add_user("baton-boot", 0x8000_0000).unwrap();
    builder.add_user("counter", 0x8010_0000).unwrap();
    builder.build().unwrap()
}

#[test]
fn root_round_trip() {
    let blob = sample_root();
    let parsed = parse_kho_fdt(&blob).unwrap();
    assert_eq!(parsed.preserved_memory_map_phys(), 0x1_2345_6000);
    assert_eq!(
        parsed.users(),
        [
            KhoUser { name: "baton-boot", sub_fdt_phys: 0x8000_0000 },
            KhoUser { name: "counter", sub_fdt_phys: 0x8010_0000 }
        ]
    );
    assert_eq!(parsed.user("counter"), Some(0x8010_0000));
    assert_eq!(parsed.user("missing"), None);
    assert_eq!(parsed.total_size_bytes(), blob.len());
    // Longer buffers are fine: the header's totalsize decides.
    let mut padded = blob.clone();
    padded.extend_from_slice(&[0xff; 100]);
    assert_eq!(parse_kho_fdt(&padded).unwrap().users().len(), 2);
}

#[test]
fn root_properties_are_native_endian() {
    let blob = sample_root();
    let fdt = parse_fdt(&blob).unwrap();
    let root = fdt.find_node("/").unwrap();
    let map = root.property("preserved-memory-map").unwrap();
    assert_eq!(map.value, 0x1_2345_6000_u64.to_ne_bytes());
    let compatible = root.property("compatible").unwrap();
    assert_eq!(compatible.value, b"kho-v1\0");
    let user = fdt.find_node("/counter").unwrap();
    assert_eq!(user.property("fdt").unwrap().value, 0x8010_0000_u64.to_ne_bytes());
}

#[test]
fn root_is_readable_by_dtc() {
    let blob = sample_root();
    let directory = std::env::temp_dir().join(std::format!("baton-kho-dtc-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("kho.dtb");
    std::fs::write(&path, &blob).unwrap();
    let output = match std::process::Command::new("dtc").args(["-I", "dtb", "-O", "dts"]).arg(&path).output() {
        Ok(output) => output,
        Err(_) => {
            std::println!("skipping root_is_readable_by_dtc: dtc is not on PATH");
            return;
        }
    };
    let _ = std::fs::remove_dir_all(&directory);
    assert!(output.status.success(), "dtc failed: {}", String::from_utf8_lossy(&output.stderr));
    let dts = String::from_utf8(output.stdout).unwrap();
    assert!(dts.contains("compatible = \"kho-v1\";"), "{dts}");
    assert!(dts.contains("preserved-memory-map = <"), "{dts}");
    assert!(dts.contains("baton-boot {"), "{dts}");
    assert!(dts.contains("counter {"), "{dts}");
    assert!(dts.contains("fdt = <"), "{dts}");
}

#[test]
fn user_name_rule() {
    for name in ["memblock", "baton-boot", "svc_counter.v1", "a", "A,b+c", "abcdefghijklmnopqrstuvwxyz01234"] {
        assert!(is_valid_user_name(name), "{name}");
    }
    for name in ["", "1abc", "-abc", "a/b", "a@1", "has space", "caf\u{e9}", "abcdefghijklmnopqrstuvwxyz012345", "a\0b"]
    {
        assert!(!is_valid_user_name(name), "{name:?}");
    }
    let mut builder = KhoFdtBuilder::new(0);
    assert_eq!(builder.add_user("a/b", 1), Err(KhoFdtBuildError::InvalidUserName));
    builder.add_user("one", 1).unwrap();
    assert_eq!(builder.add_user("one", 2), Err(KhoFdtBuildError::DuplicateUserName));
}

/// Write a root by hand with the sub-FDT writer so the schema can be broken.
fn custom_root(build: impl FnOnce(&mut SubFdtWriter)) -> Vec<u8> {
    let mut writer = SubFdtWriter::new().unwrap();
    build(&mut writer);
    writer.finish().unwrap()
}

fn user(writer: &mut SubFdtWriter, name: &str, properties: &[(&str, &[u8])]) {
    let node = writer.begin_node(name).unwrap();
    for (property, value) in properties {
        writer.property(property, value).unwrap();
    }
    writer.end_node(node).unwrap();
}

const MAP: [u8; 8] = 0x4000_u64.to_ne_bytes();
const FDT: [u8; 8] = 0x9000_u64.to_ne_bytes();

fn corruption(blob: &[u8]) -> KhoFdtCorruption {
    match parse_kho_fdt(blob) {
        Err(KhoFdtError::Corrupted(corruption)) => corruption,
        other => panic!("expected a corruption, got {other:?}"),
    }
}

#[test]
fn other_compatible_is_incompatible_not_corrupted() {
    for compatible in ["kho-v2", "kho-v1 ", "KHO-V1", ""] {
        let blob = custom_root(|writer| {
            writer.property_string("compatible", compatible).unwrap();
            writer.property("preserved-memory-map", &MAP).unwrap();
        });
        assert_eq!(parse_kho_fdt(&blob), Err(KhoFdtError::Incompatible), "{compatible:?}");
    }
    // A string list starting with kho-v1 is not exactly kho-v1.
    let blob = custom_root(|writer| {
        writer.property("compatible", b"kho-v1\0kho-v2\0").unwrap();
    });
    assert_eq!(parse_kho_fdt(&blob), Err(KhoFdtError::Incompatible));
    // Incompatible wins over schema errors: a newer format may differ.
    let blob = custom_root(|writer| {
        writer.property_string("compatible", "kho-v4").unwrap();
        writer.property("preserved-data", &MAP).unwrap();
    });
    assert_eq!(parse_kho_fdt(&blob), Err(KhoFdtError::Incompatible));
}

#[test]
fn root_schema_errors() {
    let blob = custom_root(|writer| writer.property("preserved-memory-map", &MAP).unwrap());
    assert_eq!(corruption(&blob), KhoFdtCorruption::MissingCompatible);

    let blob = custom_root(|writer| writer.property_string("compatible", "kho-v1").unwrap());
    assert_eq!(corruption(&blob), KhoFdtCorruption::MissingPreservedMemoryMap);

    let blob = custom_root(|writer| {
        writer.property_string("compatible", "kho-v1").unwrap();
        writer.property("preserved-memory-map", &[1, 2, 3, 4]).unwrap();
    });
    assert_eq!(corruption(&blob), KhoFdtCorruption::BadPreservedMemoryMapSize { size_bytes: 4 });

    let blob = custom_root(|writer| {
        writer.property_string("compatible", "kho-v1").unwrap();
        writer.property("preserved-memory-map", &MAP).unwrap();
        writer.property("extra", &[]).unwrap();
    });
    assert_eq!(corruption(&blob), KhoFdtCorruption::UnexpectedRootProperty);

    let blob = custom_root(|writer| {
        writer.property_string("compatible", "kho-v1").unwrap();
        writer.property("preserved-memory-map", &MAP).unwrap();
        writer.property("preserved-memory-map", &MAP).unwrap();
    });
    assert_eq!(corruption(&blob), KhoFdtCorruption::DuplicateRootProperty);
}

fn root_with_users(build: impl FnOnce(&mut SubFdtWriter)) -> Vec<u8> {
    custom_root(|writer| {
        writer.property_string("compatible", "kho-v1").unwrap();
        writer.property("preserved-memory-map", &MAP).unwrap();
        build(writer);
    })
}

#[test]
fn user_schema_errors() {
    let blob = root_with_users(|writer| {
        user(writer, "good", &[("fdt", &FDT)]);
        user(writer, "bad@1", &[("fdt", &FDT)]);
    });
    assert_eq!(corruption(&blob), KhoFdtCorruption::InvalidUserName { user_index: 1 });

    let blob = root_with_users(|writer| {
        user(writer, "same", &[("fdt", &FDT)]);
        user(writer, "same", &[("fdt", &FDT)]);
    });
    assert_eq!(corruption(&blob), KhoFdtCorruption::DuplicateUserName { user_index: 1 });

    let blob = root_with_users(|writer| user(writer, "empty", &[]));
    assert_eq!(corruption(&blob), KhoFdtCorruption::MissingUserFdt { user_index: 0 });

    let blob = root_with_users(|writer| user(writer, "short", &[("fdt", &[0; 4])]));
    assert_eq!(corruption(&blob), KhoFdtCorruption::BadUserFdt { user_index: 0 });

    let blob = root_with_users(|writer| user(writer, "twice", &[("fdt", &FDT), ("fdt", &FDT)]));
    assert_eq!(corruption(&blob), KhoFdtCorruption::BadUserFdt { user_index: 0 });

    let blob = root_with_users(|writer| user(writer, "extra", &[("fdt", &FDT), ("size", &FDT)]));
    assert_eq!(corruption(&blob), KhoFdtCorruption::UnexpectedUserProperty { user_index: 0 });

    let blob = root_with_users(|writer| {
        let node = writer.begin_node("nested").unwrap();
        writer.property("fdt", &FDT).unwrap();
        user(writer, "child", &[("fdt", &FDT)]);
        writer.end_node(node).unwrap();
    });
    assert_eq!(corruption(&blob), KhoFdtCorruption::NestedUserNode { user_index: 0 });

    let blob = root_with_users(|writer| user(writer, "ok", &[("fdt", &FDT)]));
    assert_eq!(parse_kho_fdt(&blob).unwrap().user("ok"), Some(0x9000));
}

// ---- Hand-assembled blobs for the structure errors. -------------------

/// Tokens of a structure block.
struct Tokens(Vec<u8>);

impl Tokens {
    fn new() -> Self {
        Self(Vec::new())
    }
    fn word(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn begin(mut self, name: &[u8]) -> Self {
        self = self.word(1);
        self.0.extend_from_slice(name);
        self.0.push(0);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    fn prop(mut self, name_offset: u32, value: &[u8]) -> Self {
        self = self.word(3).word(value.len() as u32).word(name_offset);
        self.0.extend_from_slice(value);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    fn end_node(self) -> Self {
        self.word(2)
    }
    fn end(self) -> Self {
        self.word(9)
    }
}

/// Header (version 17) + empty reservation map + structure + strings.
fn assemble(structure: &[u8], strings: &[u8]) -> Vec<u8> {
    let structure_offset = 40 + 16;
    let strings_offset = structure_offset + structure.len();
    let total = strings_offset + strings.len();
    let mut blob = Vec::with_capacity(total);
    for value in [
        0xd00d_feed,
        total as u32,
        structure_offset as u32,
        strings_offset as u32,
        40,
        17,
        16,
        0,
        strings.len() as u32,
        structure.len() as u32,
    ] {
        blob.extend_from_slice(&u32::to_be_bytes(value));
    }
    blob.extend_from_slice(&[0; 16]);
    blob.extend_from_slice(structure);
    blob.extend_from_slice(strings);
    blob
}

const STRINGS: &[u8] = b"compatible\0preserved-memory-map\0fdt\0";

fn valid_tokens() -> Tokens {
    Tokens::new()
        .begin(b"")
        .prop(0, b"kho-v1\0")
        .prop(11, &MAP)
        .begin(b"user")
        .prop(32, &FDT)
        .end_node()
        .end_node()
        .end()
}

fn set_header_word(blob: &mut [u8], index: usize, value: u32) {
    blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
}

#[test]
fn hand_assembled_blob_is_valid() {
    let blob = assemble(&valid_tokens().0, STRINGS);
    assert_eq!(validate_fdt(&blob), Ok(blob.len()));
    assert_eq!(parse_kho_fdt(&blob).unwrap().user("user"), Some(0x9000));
}

fn structure_error(blob: &[u8]) -> FdtStructureError {
    let error = validate_fdt(blob).unwrap_err();
    assert_eq!(parse_kho_fdt(blob), Err(KhoFdtError::Corrupted(KhoFdtCorruption::Structure(error))));
    error
}

#[test]
fn header_errors() {
    let blob = assemble(&valid_tokens().0, STRINGS);
    assert_eq!(structure_error(&blob[..39]), FdtStructureError::HeaderTruncated { available_bytes: 39 });

    let mut bad = blob.clone();
    bad[0] = 0;
    assert_eq!(structure_error(&bad), FdtStructureError::BadMagic { magic: 0x000d_feed });

    assert_eq!(
        structure_error(&blob[..blob.len() - 1]),
        FdtStructureError::TotalSizeOutOfBounds {
            total_size_bytes: blob.len() as u32,
            available_bytes: blob.len() - 1
        }
    );
    let mut bad = blob.clone();
    set_header_word(&mut bad, 1, 39);
    assert_eq!(
        structure_error(&bad),
        FdtStructureError::TotalSizeOutOfBounds { total_size_bytes: 39, available_bytes: blob.len() }
    );

    let mut bad = blob.clone();
    set_header_word(&mut bad, 5, 16);
    assert_eq!(
        structure_error(&bad),
        FdtStructureError::UnsupportedVersion { version: 16, last_compatible_version: 16 }
    );
    let mut bad = blob.clone();
    set_header_word(&mut bad, 6, 18);
    assert_eq!(
        structure_error(&bad),
        FdtStructureError::UnsupportedVersion { version: 17, last_compatible_version: 18 }
    );
}

#[test]
fn block_errors() {
    let blob = assemble(&valid_tokens().0, STRINGS);
    let structure_offset = 56_u32;
    let structure_size = valid_tokens().0.len() as u32;

    let mut bad = blob.clone();
    set_header_word(&mut bad, 4, 44);
    assert_eq!(structure_error(&bad), FdtStructureError::MisalignedBlock { block: FdtBlock::MemoryReservations });
    let mut bad = blob.clone();
    set_header_word(&mut bad, 4, 32);
    assert_eq!(structure_error(&bad), FdtStructureError::BlockOutOfBounds { block: FdtBlock::MemoryReservations });
    let mut bad = blob.clone();
    bad[40] = 1; // A reservation that never ends.
    set_header_word(&mut bad, 4, blob.len() as u32 - 8);
    assert_eq!(structure_error(&bad), FdtStructureError::UnterminatedMemoryReservations);

    let mut bad = blob.clone();
    set_header_word(&mut bad, 2, structure_offset + 2);
    assert_eq!(structure_error(&bad), FdtStructureError::MisalignedBlock { block: FdtBlock::Structure });
    let mut bad = blob.clone();
    set_header_word(&mut bad, 9, structure_size + 4 + STRINGS.len() as u32);
    assert_eq!(structure_error(&bad), FdtStructureError::BlockOutOfBounds { block: FdtBlock::Structure });
    let mut bad = blob.clone();
    set_header_word(&mut bad, 2, u32::MAX - 3);
    assert_eq!(structure_error(&bad), FdtStructureError::BlockOutOfBounds { block: FdtBlock::Structure });

    let mut bad = blob.clone();
    set_header_word(&mut bad, 8, STRINGS.len() as u32 + 1);
    assert_eq!(structure_error(&bad), FdtStructureError::BlockOutOfBounds { block: FdtBlock::Strings });
    let mut bad = blob.clone();
    set_header_word(&mut bad, 3, 8);
    assert_eq!(structure_error(&bad), FdtStructureError::BlockOutOfBounds { block: FdtBlock::Strings });
}

#[test]
fn token_errors() {
    let base = 56;
    // FDT_NOP is refused.
    let tokens = Tokens::new().begin(b"").word(4).prop(0, b"kho-v1\0").end_node().end();
    assert_eq!(
        structure_error(&assemble(&tokens.0, STRINGS)),
        FdtStructureError::UnexpectedToken { offset: base + 8, token: 4 }
    );
    // Structure not starting with a node.
    let tokens = Tokens::new().prop(0, b"x\0").end();
    assert_eq!(
        structure_error(&assemble(&tokens.0, STRINGS)),
        FdtStructureError::UnexpectedToken { offset: base, token: 3 }
    );
    // Two roots.
    let tokens = Tokens::new().begin(b"").end_node().begin(b"").end_node().end();
    assert_eq!(
        structure_error(&assemble(&tokens.0, STRINGS)),
        FdtStructureError::UnexpectedToken { offset: base + 12, token: 1 }
    );
    // End before the root is closed.
    let tokens = Tokens::new().begin(b"").end();
    assert_eq!(
        structure_error(&assemble(&tokens.0, STRINGS)),
        FdtStructureError::UnexpectedToken { offset: base + 8, token: 9 }
    );
    // No end token at all.
    let tokens = Tokens::new().begin(b"").end_node();
    assert_eq!(structure_error(&assemble(&tokens.0, STRINGS)), FdtStructureError::MissingEnd);
    // Data after the end token.
    let tokens = Tokens::new().begin(b"").end_node().end().word(0);
    assert_eq!(structure_error(&assemble(&tokens.0, STRINGS)), FdtStructureError::TrailingData { offset: base + 16 });
    // Root with a name.
    let tokens = Tokens::new().begin(b"root").end_node().end();
    assert_eq!(structure_error(&assemble(&tokens.0, STRINGS)), FdtStructureError::RootNameNotEmpty);
    // A child with an empty name, or a name that is not UTF-8.
    let tokens = Tokens::new().begin(b"").begin(b"").end_node().end_node().end();
    assert_eq!(structure_error(&assemble(&tokens.0, STRINGS)), FdtStructureError::InvalidName { offset: base + 12 });
    let tokens = Tokens::new().begin(b"").begin(b"\xff\xfe").end_node().end_node().end();
    assert_eq!(structure_error(&assemble(&tokens.0, STRINGS)), FdtStructureError::InvalidName { offset: base + 12 });
    // A node name running off the end of the block.
    let mut tokens = Tokens::new().begin(b"").word(1).0;
    tokens.extend_from_slice(b"abcd");
    assert_eq!(structure_error(&assemble(&tokens, STRINGS)), FdtStructureError::UnterminatedName { offset: base + 12 });
}

#[test]
fn property_errors() {
    let base = 56;
    // Length past the block (the `fdt` crate would slice out of bounds).
    let mut tokens = Tokens::new().begin(b"").word(3).word(1000).word(0).0;
    tokens.extend_from_slice(&Tokens::new().end_node().end().0);
    assert_eq!(structure_error(&assemble(&tokens, STRINGS)), FdtStructureError::Truncated { offset: base + 8 });
    // Header of a property cut short.
    let tokens = Tokens::new().begin(b"").word(3);
    assert_eq!(structure_error(&assemble(&tokens.0, STRINGS)), FdtStructureError::Truncated { offset: base + 8 });
    // Name offset past the strings block.
    let tokens = Tokens::new().begin(b"").prop(STRINGS.len() as u32, b"").end_node().end();
    assert_eq!(
        structure_error(&assemble(&tokens.0, STRINGS)),
        FdtStructureError::NameOffsetOutOfBounds { offset: base + 8 }
    );
    // Name without NUL inside the strings block.
    let tokens = Tokens::new().begin(b"").prop(0, b"").end_node().end();
    assert_eq!(
        structure_error(&assemble(&tokens.0, b"compatible")),
        FdtStructureError::UnterminatedName { offset: base + 8 }
    );
    // Non-UTF-8 or empty property name.
    let tokens = Tokens::new().begin(b"").prop(0, b"").end_node().end();
    assert_eq!(structure_error(&assemble(&tokens.0, b"\xc3\0")), FdtStructureError::InvalidName { offset: base + 8 });
    assert_eq!(structure_error(&assemble(&tokens.0, b"\0")), FdtStructureError::InvalidName { offset: base + 8 });
    // Property after a child node.
    let tokens = Tokens::new().begin(b"").begin(b"a").end_node().prop(0, b"x\0").end_node().end();
    assert_eq!(
        structure_error(&assemble(&tokens.0, STRINGS)),
        FdtStructureError::PropertyAfterChild { offset: base + 20 }
    );
}

#[test]
fn nesting_limit() {
    let build = |depth: usize| {
        let mut tokens = Tokens::new().begin(b"");
        for _ in 1..depth {
            tokens = tokens.begin(b"n");
        }
        for _ in 0..depth {
            tokens = tokens.end_node();
        }
        assemble(&tokens.end().0, STRINGS)
    };
    assert!(validate_fdt(&build(32)).is_ok());
    assert!(matches!(validate_fdt(&build(33)), Err(FdtStructureError::TooDeep { .. })));
    // 70 levels would overflow the `fdt` crate's 64-entry parent stack.
    assert!(matches!(validate_fdt(&build(70)), Err(FdtStructureError::TooDeep { .. })));
}

#[test]
fn the_fdt_crate_alone_panics_where_validation_refuses() {
    // Why validation exists: a property longer than its block makes the
    // `fdt` crate slice out of bounds.
    let mut tokens = Tokens::new().begin(b"").word(3).word(1000).word(0).0;
    tokens.extend_from_slice(&Tokens::new().end_node().end().0);
    let blob = assemble(&tokens, STRINGS);
    let outcome = std::panic::catch_unwind(|| {
        let fdt = ::fdt::Fdt::new(&blob).unwrap();
        fdt.find_node("/").map(|root| root.properties().count())
    });
    assert!(outcome.is_err(), "fdt 0.1.5 was expected to panic");
    assert!(parse_kho_fdt(&blob).is_err());
}

// ---- The sub-FDT writer. -------------------------------------------------

#[test]
fn sub_fdt_writer_round_trip_is_native_endian() {
    let mut writer = SubFdtWriter::new().unwrap();
    writer.property_string("compatible", "counter-v1").unwrap();
    writer.property_u32("generation", 7).unwrap();
    let node = writer.begin_node("state").unwrap();
    writer.property_u64("phys", 0x1122_3344_5566_7788).unwrap();
    writer.end_node(node).unwrap();
    let blob = writer.finish().unwrap();
    assert_eq!(validate_fdt(&blob), Ok(blob.len()));
    let fdt = parse_fdt(&blob).unwrap();
    let root = fdt.find_node("/").unwrap();
    assert_eq!(root.property("compatible").unwrap().as_str(), Some("counter-v1"));
    assert_eq!(native_u32(root.property("generation").unwrap().value), Some(7));
    let value = fdt.find_node("/state").unwrap().property("phys").unwrap().value;
    assert_eq!(value, 0x1122_3344_5566_7788_u64.to_ne_bytes());
    assert_eq!(native_u64(value), Some(0x1122_3344_5566_7788));
    assert_eq!(native_u64(&value[..7]), None);
}

#[test]
fn sub_fdt_writer_errors() {
    let mut writer = SubFdtWriter::new().unwrap();
    assert_eq!(writer.begin_node("").unwrap_err(), FdtWriteError::InvalidNodeName);
    assert_eq!(writer.begin_node("a b").unwrap_err(), FdtWriteError::InvalidNodeName);
    assert_eq!(writer.property("bad name", &[]), Err(FdtWriteError::InvalidPropertyName));
    assert_eq!(writer.property_string("s", "a\0b"), Err(FdtWriteError::InvalidString));
    let outer = writer.begin_node("outer").unwrap();
    let inner = writer.begin_node("inner").unwrap();
    assert_eq!(writer.end_node(outer), Err(FdtWriteError::Unbalanced));
    writer.end_node(inner).unwrap();
    assert_eq!(writer.finish(), Err(FdtWriteError::Unbalanced), "outer is still open");

    let mut writer = SubFdtWriter::new().unwrap();
    let mut open = Vec::new();
    for _ in 1..32 {
        open.push(writer.begin_node("n").unwrap());
    }
    assert_eq!(writer.begin_node("n").unwrap_err(), FdtWriteError::TooDeep);
    while let Some(node) = open.pop() {
        writer.end_node(node).unwrap();
    }
    let deepest = writer.finish().unwrap();
    assert!(validate_fdt(&deepest).is_ok(), "whatever the writer accepts, the parser accepts");
}

// ---- Reading an FDT out of physical memory. ------------------------------

#[test]
fn read_fdt_from_memory() {
    let mut memory = SimulatedMemory::new(&[PhysRange::new(0, 1 << 30)], PhysRange::new(0, 0));
    let blob = sample_root();
    memory.write(0x10_0000, &blob).unwrap();
    assert_eq!(read_fdt(&memory, 0x10_0000, 4096).unwrap(), blob);
    assert_eq!(
        read_fdt(&memory, 0x10_0000, blob.len() as u64 - 1),
        Err(ReadFdtError::TooLarge { total_size_bytes: blob.len() as u64, max_size_bytes: blob.len() as u64 - 1 })
    );
    assert_eq!(
        read_fdt(&memory, 0x20_0000, 4096),
        Err(ReadFdtError::Structure(FdtStructureError::BadMagic { magic: 0 }))
    );
    assert_eq!(
        read_fdt(&memory, (1 << 30) - 16, 4096),
        Err(ReadFdtError::Access(AccessError::OutsideRam { phys: (1 << 30) - 16, size_bytes: 40 }))
    );
    assert!(matches!(read_fdt(&memory, 0x10_0000, 8), Err(ReadFdtError::TooLarge { .. })));
    // A damaged strings block: the structure walk catches it.
    let mut damaged = blob.clone();
    let size = damaged.len();
    damaged[size - 1] = b'X'; // Overwrite the NUL of the last property name.
    memory.write(0x30_0000, &damaged).unwrap();
    assert!(matches!(read_fdt(&memory, 0x30_0000, 4096), Err(ReadFdtError::Structure(_))));
}
