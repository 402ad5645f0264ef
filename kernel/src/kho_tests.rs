//! Kernel tests of the update itself, run across a real self-kexec: the
//! same test runs on the cold boot (prepare and jump) and again on the KHO
//! boot (check), since both kernels get the same command line.

use crate::ktest::Failed;
use crate::mm::{self, direct_map};
use crate::{check, check_eq, kernel_test};
use alloc::vec::Vec;

const OWNER: &str = "ktest-pattern";
const ORDER: u32 = 4;

fn pattern(index: u64) -> u64 {
    index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0bad_c0de
}

fn words(phys: u64, order: u32) -> &'static mut [u64] {
    // SAFETY: the folio is RAM this test owns (allocated here, or restored
    // from the handover under its owner name); the direct map covers it.
    unsafe { core::slice::from_raw_parts_mut(direct_map::to_virtual(phys) as *mut u64, (4096 << order) / 8) }
}

kernel_test! {
    /// A folio preserved before the update still holds its pattern after
    /// the new kernel has allocated (and scribbled over) most of memory, and
    /// the allocator never handed it out.
    scenario fn preserved_folio_survives_heavy_allocation() -> TestResult {
        let info = crate::options::boot_info();
        if info.kho.is_none() {
            let phys = mm::allocate_pages(ORDER).ok_or(Failed)?;
            for (index, word) in words(phys, ORDER).iter_mut().enumerate() {
                *word = pattern(index as u64);
            }
            check!(crate::kho_out::preserve_kernel_folio(OWNER, phys, ORDER).is_ok());
            let mut writer = baton_kho::SubFdtWriter::new().map_err(|_| Failed)?;
            writer.property_u64("folio", phys).map_err(|_| Failed)?;
            writer.property_u32("order", ORDER).map_err(|_| Failed)?;
            let blob = writer.finish().map_err(|_| Failed)?;
            check!(crate::kho_out::publish_kernel_user(OWNER, &blob).is_ok());
            crate::println!("ktest: preserved a pattern at {phys:#x}; updating");
            let result = crate::update::perform(baton_abi::UpdateImage::BootModule);
            check!(false, "the update returned: {result:?}");
        }
        // The KHO boot: find the folio in the handover.
        let blob = crate::kho_in::kernel_fetch(OWNER);
        check!(blob.is_some(), "no '{OWNER}' sub-FDT was handed over");
        let blob = blob.unwrap_or_default();
        let fdt = baton_kho::fdt::parse_fdt(&blob).map_err(|_| Failed)?;
        let root = fdt.find_node("/").ok_or(Failed)?;
        let phys = root.property("folio").and_then(|property| baton_kho::fdt::native_u64(property.value)).ok_or(Failed)?;
        let folio = baton_mm::Range::new(phys, phys + (4096 << ORDER));
        // Allocate three quarters of free memory page by page, scribble on
        // every page, and check the preserved folio is never among them.
        let target = mm::accounting().free_bytes / 4096 * 3 / 4;
        let mut pages = Vec::new();
        for _ in 0..target {
            let Some(page) = mm::allocate_pages(0) else { break };
            pages.push(page);
        }
        check!(pages.len() as u64 >= target / 2, "only {} pages could be allocated", pages.len());
        let mut handed_out_preserved = 0;
        for &page in &pages {
            if folio.overlaps(&baton_mm::Range::new(page, page + 4096)) {
                handed_out_preserved += 1;
            }
            // SAFETY: the page was just allocated by this test.
            unsafe { core::ptr::write_bytes(direct_map::to_virtual(page) as *mut u8, 0xa5, 4096) };
        }
        for page in pages {
            mm::free_pages(page, 0);
        }
        check_eq!(handed_out_preserved, 0);
        check!(crate::kho_in::kernel_restore(OWNER, phys, ORDER).is_ok());
        let intact = words(phys, ORDER).iter().enumerate().all(|(index, &word)| word == pattern(index as u64));
        check!(intact, "the preserved folio at {phys:#x} lost its pattern");
        crate::kho_in::kernel_done(OWNER);
        Ok(())
    }
}

kernel_test! {
    /// A module that is not a kernel image is refused before anything
    /// freezes, and the system carries on unfrozen.
    scenario fn bad_update_image_is_refused() -> TestResult {
        let staged = crate::kexec::stage(baton_abi::UpdateImage::BootModule);
        check!(matches!(staged, Err(crate::update::UpdateError::ImageRejected(_))), "{staged:?}");
        let performed = crate::update::perform(baton_abi::UpdateImage::BootModule);
        check!(performed.is_err());
        check!(!crate::kho_out::is_frozen());
        Ok(())
    }
}
