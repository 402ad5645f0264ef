//! The version number of the system-call interface, and the host test that fails when the interface changes without a new number.
//!
//! The test builds a canonical text "fingerprint" of everything a compiled
//! service depends on (every system-call number and name, every error
//! number and name, how each call's arguments are accepted or refused,
//! the message layout, the lifecycle events, the start-argument encodings
//! and the limits) and compares its hash with the one recorded for
//! [`ABI_VERSION`]. Set `ABI_FINGERPRINT=1` to print the fingerprint, for
//! example to diff it against the previous version's.

/// The version of the system-call interface a service is built for.
///
/// A service resumed across a live update keeps running only on a kernel
/// that supports its version; otherwise the kernel restarts it from its
/// image. Bump it with every change a compiled service could notice: a
/// system call or error added, removed or renumbered, an argument rule
/// changed, the message layout or a limit changed. The test in this module
/// fails until the new version and its fingerprint hash are recorded.
pub const ABI_VERSION: u32 = 10;

#[cfg(test)]
mod tests {
    use core::fmt::Write;

    use super::ABI_VERSION;
    use crate::error::{decode_result, encode_result};
    use crate::message::{KERNEL_SENDER, MESSAGE_BYTES};
    use crate::{
        BallastStart, Error, InitStart, MAX_LOG_BYTES, MAX_MAPPINGS, MAX_NAME_BYTES, MAX_PRESERVABLE_RUN_BYTES,
        MAX_SUB_FDT_BYTES, MAX_USER_FOLIO_ORDER, MESSAGE_WORDS, Message, PAGE_SIZE, Request, Syscall,
        USER_ADDRESS_LIMIT, UpdateEvent, UpdateFate,
    };

    /// Every ABI version and the hash of its fingerprint, oldest first.
    /// When the ABI changes: bump `ABI_VERSION` and append a line here.
    const KNOWN: &[(u32, u64)] = &[
        (1, 0x8ed2_8e73_1294_7b3e),
        (2, 0xcc4a_3369_0d5a_5be2),
        (3, 0x0fe9_0dc4_908d_b181),
        (4, 0x5d85_0f56_5db5_c4be),
        (5, 0x11d3_c981_fc96_5345),
        (6, 0xee10_ff64_b45c_9a69),
        (7, 0x50e3_bf3e_d386_10ed),
        (8, 0x3209_02a4_af4a_52c3),
        (9, 0x514a_6ec7_605f_ff45),
        (10, 0xbad0_f884_7558_07ba),
    ];

    /// FNV-1a, 64-bit. Written here rather than taken from a crate: this
    /// crate has no dependencies, and the hash only needs to be stable
    /// across builds and hosts, not strong against an adversary.
    fn fnv1a_64(bytes: &[u8]) -> u64 {
        const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        bytes.iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
    }

    /// Argument registers every system call is decoded with: zeros, small
    /// and page-aligned values, misaligned ones, values at the end of the
    /// user half and values that overflow.
    const SAMPLE_ARGUMENTS: [[u64; 6]; 10] = [
        [0; 6],
        [2, 3, 0x40_0000, 0, 0, 0],
        [0x1000, 8, 1, 0, 0, 0],
        [0x1000, 0x1000, 0, 0, 0, 0],
        [0x1004, 40, 3, 0, 0, 0],
        [0x20_0000, 9, 3, 0, 0, 0],
        [11, 1, 1, 0, 0, 0],
        [USER_ADDRESS_LIMIT - 64, 64, 0, 0, 0, 0],
        [USER_ADDRESS_LIMIT, 4096, 1, 0, 0, 0],
        [u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX],
    ];

    fn init_fields(start: InitStart) -> String {
        // Destructured without `..`: a new field fails to compile here.
        let InitStart { updates, shutdown_when_done, own_image, wait_for_ballast, client_exits_early, interval_ms } =
            start;
        let flags = [shutdown_when_done, own_image, wait_for_ballast, client_exits_early].map(u8::from);
        format!("{updates} {flags:?} {interval_ms}")
    }

    fn ballast_fields(start: BallastStart) -> String {
        let BallastStart { mebibytes, order, is_copying } = start;
        format!("{mebibytes} {order} {}", u8::from(is_copying))
    }

    fn outcome(result: Result<Request, Error>) -> String {
        match result {
            Ok(_) => String::from("accepted"),
            Err(error) => format!("error {}", error.number()),
        }
    }

    /// The canonical text of everything the ABI consists of. Enumerations
    /// are walked through their decoders over a whole range of numbers, so
    /// adding a variant changes the text even where nothing else does.
    fn fingerprint() -> String {
        let mut text = String::new();
        let mut line = |args: core::fmt::Arguments<'_>| {
            text.write_fmt(args).unwrap();
            text.push('\n');
        };
        for number in 0..=255 {
            if let Some(call) = Syscall::from_number(number) {
                line(format_args!("syscall {number} {call:?}"));
                for (sample, arguments) in SAMPLE_ARGUMENTS.iter().enumerate() {
                    line(format_args!("  arguments {sample}: {}", outcome(Request::decode(number, *arguments))));
                }
            }
        }
        for number in 0..=255 {
            if let Some(error) = Error::from_number(number) {
                line(format_args!("error {number} {error:?} {:?}", error.name()));
            }
        }
        line(format_args!("result ok {:?} error {:?}", encode_result(Ok(7)), encode_result(Err(Error::NotFound))));
        line(format_args!("decode result 0 {:?} 99 {:?}", decode_result(0, 7), decode_result(99, 0)));

        let sample = Message { label: 0x0102_0304_0506_0708, sender: 0x1112_1314_1516_1718, words: [1, 2, 3, 4, 5, 6] };
        line(format_args!("message bytes {MESSAGE_BYTES} size {} words {MESSAGE_WORDS}", size_of::<Message>()));
        line(format_args!("message layout {:02x?}", sample.to_bytes()));
        line(format_args!("message packing {:x?}", Message::pack_bytes(b"baton, live update")));
        line(format_args!("kernel sender {KERNEL_SENDER:#x}"));

        line(format_args!("update label base {:#x}", UpdateEvent::LABEL_BASE));
        for offset in 0..=255 {
            if let Some(event) = UpdateEvent::from_label(UpdateEvent::LABEL_BASE + offset) {
                line(format_args!("update event {offset} {event:?} label {:#x}", event.label()));
            }
        }
        for word in 0..=3 {
            line(format_args!("prepare fate word {word} {:?}", UpdateFate::from_word(word)));
        }
        for number in 0..=255 {
            if let Ok(Request::Update { image }) = Request::decode(Syscall::Update as u64, [number, 0, 0, 0, 0, 0]) {
                line(format_args!("update image {number} {image:?}"));
            }
        }

        for updates in [0, 5, u32::MAX] {
            for flags in 0..16_u8 {
                let start = crate::start::init_start_sample(updates, flags);
                line(format_args!("init start {} encodes {:#x}", init_fields(start), start.encode()));
            }
        }
        for bit in 0..64 {
            line(format_args!("init start bit {bit} decodes {}", init_fields(InitStart::decode(1 << bit))));
        }
        for mebibytes in [0, 16, u32::MAX] {
            for order in [0, 9, 255] {
                for is_copying in [false, true] {
                    let start = BallastStart { mebibytes, order, is_copying };
                    line(format_args!("ballast start {} encodes {:#x}", ballast_fields(start), start.encode()));
                }
            }
        }
        for bit in 0..64 {
            line(format_args!("ballast start bit {bit} decodes {}", ballast_fields(BallastStart::decode(1 << bit))));
        }

        line(format_args!("user address limit {USER_ADDRESS_LIMIT:#x}"));
        line(format_args!("page size {PAGE_SIZE}"));
        line(format_args!("max user folio order {MAX_USER_FOLIO_ORDER}"));
        line(format_args!("max preservable run bytes {MAX_PRESERVABLE_RUN_BYTES}"));
        line(format_args!("max mappings {MAX_MAPPINGS}"));
        line(format_args!("max name bytes {MAX_NAME_BYTES}"));
        line(format_args!("max log bytes {MAX_LOG_BYTES}"));
        line(format_args!("max sub-FDT bytes {MAX_SUB_FDT_BYTES}"));
        line(format_args!("max grants {}", crate::MAX_GRANTS));
        line(format_args!("share revoked label {:#x}", crate::SHARE_REVOKED_LABEL));
        line(format_args!("irq label {:#x}", crate::IRQ_LABEL));
        line(format_args!("max option key bytes {}", crate::MAX_OPTION_KEY_BYTES));
        line(format_args!("max option value bytes {}", crate::MAX_OPTION_VALUE_BYTES));
        // The layout of kernel_info's answer: a known answer's bytes.
        let mut info = crate::KernelInfo { generation: 2, update_count: 1, ..Default::default() };
        info.version = crate::info::Version::new("v");
        info.updates[0] = crate::UpdateSummary {
            generation: 2,
            blackout_us: 3,
            preserved_bytes: 4,
            sub_fdts: 5,
            ..Default::default()
        };
        let mut bytes = [0; crate::KERNEL_INFO_BYTES];
        let length = info.encode(&mut bytes);
        line(format_args!("kernel info bytes {} answer {:?}", crate::KERNEL_INFO_BYTES, &bytes[..length]));
        text
    }

    #[test]
    fn the_abi_is_the_one_recorded_for_its_version() {
        let text = fingerprint();
        if std::env::var_os("ABI_FINGERPRINT").is_some() {
            println!("{text}");
        }
        let hash = fnv1a_64(text.as_bytes());
        let recorded = KNOWN.iter().find(|(version, _)| *version == ABI_VERSION).map(|(_, recorded)| *recorded);
        assert!(
            recorded == Some(hash),
            "the ABI changed: bump ABI_VERSION and add (version, hash) to KNOWN \
             (ABI_VERSION is {ABI_VERSION}, recorded hash {recorded:x?}, current hash {hash:#018x}; \
             ABI_FINGERPRINT=1 prints the fingerprint)"
        );
    }

    #[test]
    fn known_versions_rise_to_the_current_one() {
        assert!(KNOWN.windows(2).all(|pair| pair[0].0 < pair[1].0), "versions in order, none twice");
        assert_eq!(KNOWN.last().map(|(version, _)| *version), Some(ABI_VERSION));
        for (index, (_, hash)) in KNOWN.iter().enumerate() {
            assert!(KNOWN[..index].iter().all(|(_, earlier)| earlier != hash), "two versions share a fingerprint");
        }
    }

    #[test]
    fn the_fingerprint_lists_every_call_and_error() {
        let text = fingerprint();
        let calls = text.lines().filter(|line| line.starts_with("syscall ")).count();
        assert_eq!(calls, (0..=255).filter_map(Syscall::from_number).count());
        assert!(calls >= 27);
        assert!(text.contains("syscall 1 Log\n") && text.contains("syscall 27 KhoRestoreRun\n"));
        let errors = text.lines().filter(|line| line.starts_with("error ")).count();
        assert_eq!(errors, Error::ALL.len());
        assert!(text.contains("update event 4 Resumed label 0x4b484f04\n"));
        assert!(text.contains("update image 2 Rehearsal\n"));
    }

    #[test]
    fn the_hash_is_fnv1a_64() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
