//! Kernel tests of the update itself, run across a real self-kexec: the
//! same test runs on the cold boot (prepare and jump) and again on the KHO
//! boot (check), since both kernels get the same command line.

use crate::handover::{incoming, outgoing};
use crate::ktest::Failed;
use crate::mm::{self, block::Block};
use crate::task;
use crate::{check, check_eq, kernel_test};
use alloc::vec::Vec;

const OWNER: &str = "ktest-pattern";
const ORDER: u32 = 4;

fn pattern(index: u64) -> u64 {
    index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0bad_c0de
}

kernel_test! {
    /// A folio preserved before the update still holds its pattern after
    /// the new kernel has allocated (and scribbled over) most of memory, and
    /// the allocator never handed it out.
    scenario fn preserved_folio_survives_heavy_allocation() -> TestResult {
        if !crate::options::is_kho_boot() {
            let mut block = Block::allocate(ORDER).ok_or(Failed)?;
            for (index, word) in block.as_mut_words().iter_mut().enumerate() {
                *word = pattern(index as u64);
            }
            let phys = block.phys();
            check!(outgoing::preserve_kernel_folio(OWNER, block, ORDER).is_ok());
            let mut writer = baton_kho::SubFdtWriter::new().map_err(|_| Failed)?;
            writer.property_u64("folio", phys).map_err(|_| Failed)?;
            writer.property_u32("order", ORDER).map_err(|_| Failed)?;
            let blob = writer.finish().map_err(|_| Failed)?;
            check!(outgoing::publish_kernel_user(OWNER, &blob).is_ok());
            crate::println!("ktest: preserved a pattern at {phys:#x}; updating");
            let result = super::perform(baton_abi::UpdateImage::BootModule);
            check!(false, "the update returned: {result:?}");
        }
        // The KHO boot: find the folio in the handover.
        let blob = incoming::kernel_fetch(OWNER);
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
            let Some(page) = Block::allocate(0) else { break };
            pages.push(page);
        }
        check!(pages.len() as u64 >= target / 2, "only {} pages could be allocated", pages.len());
        let mut handed_out_preserved = 0;
        for page in &mut pages {
            if folio.overlaps(&page.range()) {
                handed_out_preserved += 1;
            }
            page.as_mut_slice().fill(0xa5);
        }
        drop(pages);
        check_eq!(handed_out_preserved, 0);
        let restored = incoming::kernel_restore(OWNER, phys, ORDER);
        check!(restored.is_ok(), "{restored:?}");
        let Ok(mut restored) = restored else { return Err(Failed) };
        let intact = restored.as_mut_words().iter().enumerate().all(|(index, &word)| word == pattern(index as u64));
        check!(intact, "the preserved folio at {phys:#x} lost its pattern");
        incoming::kernel_done(OWNER);
        Ok(())
    }
}

kernel_test! {
    /// A module that is not a kernel image is refused before anything
    /// freezes, and the system carries on unfrozen.
    scenario fn bad_update_image_is_refused() -> TestResult {
        let staged = super::kexec::stage(baton_abi::UpdateImage::BootModule);
        check!(matches!(staged, Err(super::kexec::KexecError::Rejected(_))), "{staged:?}");
        let performed = super::perform(baton_abi::UpdateImage::BootModule);
        check!(performed.is_err());
        check!(!outgoing::is_frozen());
        Ok(())
    }
}

/// Runs the scheduler until a service this long.
const TIMEOUT_NS: u64 = 30_000_000_000;

kernel_test! {
    /// The KHO calls up to finalisation: preserve and publish, `prepare`
    /// acknowledged, every change `Busy` while frozen, abort resumes, and the
    /// preserved folio kept its contents throughout.
    fn kho_calls_work_until_finalisation() -> TestResult {
        let Ok(id) = task::spawn("khotest", 0) else { return Err(crate::ktest::Failed) };
        // khotest publishes last among its checks before it waits for the
        // update; the other services' publications say nothing about it.
        let published = task::run_until(TIMEOUT_NS, || outgoing::has_published("khotest"));
        check!(published, "khotest did not preserve and publish");
        let rehearsal = super::perform(baton_abi::UpdateImage::Rehearsal);
        check!(rehearsal.is_ok(), "rehearsal failed: {:?}", rehearsal.err());
        task::run_until(TIMEOUT_NS, || task::exit_code(id).is_some());
        check_eq!(task::exit_code(id), Some(0));
        check!(!outgoing::is_frozen());
        Ok(())
    }
}

kernel_test! {
    /// Two update requests at once: the second is refused with `Busy` while
    /// the first waits, the first is carried out (a rehearsal here) and
    /// answered, and a request after it is accepted again.
    fn second_update_request_is_refused_while_one_is_pending() -> TestResult {
        // Service names are unique: the spinner stands in for both callers.
        let first = task::spawn("spinner", 0).map_err(|_| crate::ktest::Failed)?;
        let second = first;
        // The test stands in for init (which does not run in test mode).
        let privilege = task::Privilege::for_tests();
        {
            let mut tasks = task::TASKS.lock();
            check_eq!(super::request(&mut tasks, privilege, first, baton_abi::UpdateImage::Rehearsal), Ok(()));
            check_eq!(
                super::request(&mut tasks, privilege, second, baton_abi::UpdateImage::Rehearsal),
                Err(super::UpdateError::InProgress)
            );
        }
        check!(super::is_pending());
        super::run_pending();
        check!(!super::is_pending());
        check!(!outgoing::is_frozen(), "the rehearsal leaves the handover open");
        {
            let mut tasks = task::TASKS.lock();
            check_eq!(super::request(&mut tasks, privilege, second, baton_abi::UpdateImage::Rehearsal), Ok(()));
        }
        super::run_pending();
        task::TASKS.lock().end(first, -2);
        Ok(())
    }
}
