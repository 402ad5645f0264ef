//! hostile: a test service that breaks every rule of the system-call ABI and
//! checks that each attempt gets its documented error, while the kernel and
//! the other services keep running. Exits 0 when every answer matched.

#![no_std]
#![no_main]

use baton_user::baton_abi_syscall::Syscall;
use baton_user::kho::Folio;
use baton_user::protocol::{self, KvRequest};
use baton_user::syscall::{self, raw};
use baton_user::{Error, Message, UpdateImage, ipc};

baton_user::service!(main);

struct Expectations {
    failed: u32,
    checked: u32,
}

impl Expectations {
    fn expect(&mut self, what: &str, result: Result<u64, Error>, expected: Error) {
        self.checked += 1;
        if result != Err(expected) {
            self.failed += 1;
            log::warn!("hostile: {what}: got {result:?}, expected {expected}");
        }
    }
}

fn call(number: Syscall, arguments: [u64; 6]) -> Result<u64, Error> {
    let (status, value) = raw(number, arguments);
    baton_user::baton_abi_error::decode_result(status, value)
}

static READ_ONLY_MESSAGE: Message = Message::new(0, [0; 6]);

fn main(_argument: u64) -> i32 {
    let mut expectations = Expectations { failed: 0, checked: 0 };
    let kvstore = ipc::wait_for_service("kvstore", 5_000_000_000).ok();
    let stack_word = 0u64;
    let stack_address = &stack_word as *const u64 as u64;
    let kernel_address = 0xffff_8000_0000_1000;
    let unmapped = 0x0000_0050_0000_0000;

    // Pointers and lengths.
    expectations.expect(
        "log from the kernel half",
        call(Syscall::Log, [kernel_address, 8, 0, 0, 0, 0]),
        Error::BadAddress,
    );
    expectations.expect("log from unmapped memory", call(Syscall::Log, [unmapped, 8, 0, 0, 0, 0]), Error::BadAddress);
    expectations.expect("log wrapping around", call(Syscall::Log, [u64::MAX - 2, 10, 0, 0, 0, 0]), Error::Overflow);
    expectations.expect("log too long", call(Syscall::Log, [stack_address, 100_000, 0, 0, 0, 0]), Error::TooLarge);
    expectations.expect(
        "receive into a misaligned buffer",
        call(Syscall::Receive, [stack_address + 1, 0, 0, 0, 0, 0]),
        Error::Misaligned,
    );
    expectations.expect(
        "receive into the kernel half",
        call(Syscall::Receive, [kernel_address, 0, 0, 0, 0, 0]),
        Error::BadAddress,
    );
    expectations.expect(
        "receive into unmapped memory",
        call(Syscall::Receive, [unmapped, 0, 0, 0, 0, 0]),
        Error::BadAddress,
    );
    let read_only = &READ_ONLY_MESSAGE as *const Message as u64;
    if let Some(kvstore) = kvstore {
        expectations.expect(
            "call with a read-only reply buffer",
            call(Syscall::Call, [kvstore, read_only, 0, 0, 0, 0]),
            Error::BadAddress,
        );
        expectations.expect(
            "reply to a service that is not calling",
            call(Syscall::Reply, [kvstore, read_only, 0, 0, 0, 0]),
            Error::InvalidArgument,
        );
    }
    expectations.expect(
        "send to a service that does not exist",
        call(Syscall::Send, [9999, read_only, 0, 0, 0, 0]),
        Error::NotFound,
    );
    expectations.expect("lookup of an unknown name", syscall::lookup("no-such-service"), Error::NotFound);
    expectations.expect(
        "unknown system call",
        call(Syscall::Log, [0; 6]).and(Err(Error::UnknownSyscall)).or_else(|_| {
            let (status, value) = raw_number(999);
            baton_user::baton_abi_error::decode_result(status, value)
        }),
        Error::UnknownSyscall,
    );

    // Privileges.
    expectations.expect("spawn without privilege", syscall::spawn("kvstore", 0), Error::PermissionDenied);
    expectations.expect(
        "update without privilege",
        syscall::update(UpdateImage::Rehearsal).map(|()| 0),
        Error::PermissionDenied,
    );

    // Preservable memory and KHO.
    expectations.expect("allocate a folio of order 11", syscall::allocate_preservable(11), Error::InvalidArgument);
    let stack_page = stack_address & !0xfff;
    expectations.expect(
        "preserve the stack",
        syscall::kho_preserve(stack_page, 4096).map(|()| 0),
        Error::PermissionDenied,
    );
    expectations.expect(
        "preserve unmapped memory",
        syscall::kho_preserve(unmapped, 4096).map(|()| 0),
        Error::BadAddress,
    );
    expectations.expect(
        "preserve a misaligned range",
        syscall::kho_preserve(stack_page + 8, 4096).map(|()| 0),
        Error::Misaligned,
    );
    expectations.expect(
        "physical address of the stack",
        syscall::physical_address(stack_address),
        Error::PermissionDenied,
    );
    expectations.expect("free the stack", syscall::free_preservable(stack_page).map(|()| 0), Error::PermissionDenied);
    match Folio::allocate(1) {
        Ok(folio) => {
            expectations.expect(
                "preserve half a folio",
                syscall::kho_preserve(folio.address, 4096).map(|()| 0),
                Error::Misaligned,
            );
            expectations.expect(
                "free inside a folio",
                syscall::free_preservable(folio.address + 4096).map(|()| 0),
                Error::Misaligned,
            );
            let _ = syscall::free_preservable(folio.address);
        }
        Err(error) => {
            expectations.failed += 1;
            log::warn!("hostile: cannot allocate a folio: {error}");
        }
    }
    expectations.expect("restore without a handover", syscall::kho_restore(0x10_0000, 0), Error::NoHandover);
    expectations.expect("fetch without a handover", syscall::kho_fetch(), Error::NoHandover);
    let garbage = [0xa5u8; 64];
    expectations.expect("publish garbage", syscall::kho_publish(&garbage).map(|()| 0), Error::InvalidArgument);
    expectations.expect(
        "publish from the kernel half",
        call(Syscall::KhoPublish, [kernel_address, 64, 0, 0, 0, 0]),
        Error::BadAddress,
    );
    expectations.expect(
        "publish too much",
        call(Syscall::KhoPublish, [stack_address, 1 << 20, 0, 0, 0, 0]),
        Error::TooLarge,
    );

    // Flooding a mailbox: sends are refused once it is full, nothing breaks.
    if let Some(kvstore) = kvstore {
        let flood = Message::new(protocol::label::SUMMARY, [0; 6]);
        let mut refused = 0;
        for _ in 0..64 {
            if syscall::send(kvstore, &flood) == Err(Error::WouldBlock) {
                refused += 1;
            }
        }
        log::info!("hostile: {refused} of 64 flooding sends were refused with WouldBlock");
        // The store still answers once it has drained its mailbox (its
        // replies to our sends land nowhere).
        let request = KvRequest::Get { key: b"absent" }.encode().unwrap_or_default();
        let deadline = syscall::clock() + 2_000_000_000;
        let answer = loop {
            match syscall::call_service(kvstore, &request) {
                Err(Error::WouldBlock) if syscall::clock() < deadline => syscall::sleep(10_000_000),
                other => break other,
            }
        };
        expectations.checked += 1;
        if !answer.is_ok_and(|reply| reply.label == protocol::STATUS_NOT_FOUND) {
            expectations.failed += 1;
            log::warn!("hostile: kvstore stopped answering after the flood: {answer:?}");
        }
    }
    log::info!("hostile: {} checks, {} failed", expectations.checked, expectations.failed);
    if expectations.failed == 0 { 0 } else { 1 }
}

/// A system call with a number no kernel knows.
fn raw_number(number: u64) -> (u64, u64) {
    let status: u64;
    let value: u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `int 0x80` with an unknown number only returns an error.
    unsafe {
        core::arch::asm!("int 0x80", inlateout("rax") number => status, lateout("rdx") value, options(nostack));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `svc #0` with an unknown number only returns an error.
    unsafe {
        core::arch::asm!("svc #0", in("x8") number, lateout("x0") status, lateout("x1") value, options(nostack));
    }
    (status, value)
}
