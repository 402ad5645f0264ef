//! Raw system calls and thin typed wrappers. Numbers, registers and errors
//! are defined in `baton-abi` (see docs/abi.md).

use crate::Result;
use baton_abi::error::decode_result;
use baton_abi::{Error, Message, PciAddress, Syscall, UpdateEvent};

/// Issues system call `number` with six arguments; returns (status, value).
#[inline(always)]
pub fn raw(number: Syscall, arguments: [u64; 6]) -> (u64, u64) {
    let status: u64;
    let value: u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `int 0x80` enters the kernel, which reads the registers named
    // here, writes rax and rdx, and restores every other register.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            inlateout("rax") number as u64 => status,
            in("rdi") arguments[0],
            in("rsi") arguments[1],
            inlateout("rdx") arguments[2] => value,
            in("r10") arguments[3],
            in("r8") arguments[4],
            in("r9") arguments[5],
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `svc #0` enters the kernel, which reads the registers named
    // here, writes x0 and x1, and restores every other register.
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") number as u64,
            inlateout("x0") arguments[0] => status,
            inlateout("x1") arguments[1] => value,
            in("x2") arguments[2],
            in("x3") arguments[3],
            in("x4") arguments[4],
            in("x5") arguments[5],
            options(nostack),
        );
    }
    (status, value)
}

/// Issues a call and decodes its result.
pub(crate) fn call(number: Syscall, arguments: [u64; 6]) -> Result<u64> {
    let (status, value) = raw(number, arguments);
    decode_result(status, value)
}

/// Writes `text` to the kernel log.
pub fn log(text: &[u8]) {
    let _ = call(Syscall::Log, [text.as_ptr() as u64, text.len() as u64, 0, 0, 0, 0]);
}

/// Ends the service with `code`.
pub fn exit(code: u64) -> ! {
    raw(Syscall::Exit, [code, 0, 0, 0, 0, 0]);
    // The kernel never returns from exit.
    loop {
        core::hint::spin_loop();
    }
}

/// Gives up the rest of the time slice.
pub fn yield_now() {
    let _ = call(Syscall::Yield, [0; 6]);
}

/// Sleeps for `nanoseconds`.
pub fn sleep(nanoseconds: u64) {
    let _ = call(Syscall::Sleep, [nanoseconds, 0, 0, 0, 0, 0]);
}

/// Nanoseconds since boot (monotonic across the update only through what
/// services preserve themselves).
pub fn clock() -> u64 {
    call(Syscall::Clock, [0; 6]).unwrap_or(0)
}

/// What the running kernel is: its version, its generation (updates
/// since the cold boot) and the most recent updates with their blackouts.
pub fn kernel_info() -> Result<baton_abi::KernelInfo> {
    let mut bytes = [0u8; baton_abi::KERNEL_INFO_BYTES];
    let length = call(Syscall::KernelInfo, [bytes.as_mut_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0])?;
    let written = bytes.get(..length as usize).ok_or(crate::Error::InvalidArgument)?;
    baton_abi::KernelInfo::decode(written).ok_or(crate::Error::InvalidArgument)
}

/// The value of `NAME.KEY=VALUE` on the kernel command line, NAME being
/// this service's name (`None` when the line has none, or it is not
/// UTF-8 or longer than 256 bytes).
pub fn service_option(key: &str) -> Option<alloc::string::String> {
    let mut value = [0u8; baton_abi::MAX_OPTION_VALUE_BYTES];
    let arguments = [key.as_ptr() as u64, key.len() as u64, value.as_mut_ptr() as u64, value.len() as u64, 0, 0];
    let length = call(Syscall::ServiceOption, arguments).ok()?;
    let text = core::str::from_utf8(value.get(..length as usize)?).ok()?;
    Some(alloc::string::String::from(text))
}

/// This service's id.
pub fn service_id() -> u64 {
    call(Syscall::ServiceId, [0; 6]).unwrap_or(0)
}

/// Allocates a zeroed folio of `2^order` pages that may be preserved.
pub fn allocate_preservable(order: u32) -> Result<u64> {
    call(Syscall::AllocatePreservable, [u64::from(order), 0, 0, 0, 0, 0])
}

/// Allocates `count` zeroed folios of `2^order` pages, mapped one after the
/// other; physically they come in contiguous blocks of up to 4 MiB (ask
/// [`physical_address`] at each 4 MiB boundary).
pub fn allocate_preservable_run(order: u32, count: u64) -> Result<u64> {
    call(Syscall::AllocatePreservableRun, [u64::from(order), count, 0, 0, 0, 0])
}

/// Frees a folio from [`allocate_preservable`] (or the block of a run that
/// starts at `address`).
pub fn free_preservable(address: u64) -> Result<()> {
    call(Syscall::FreePreservable, [address, 0, 0, 0, 0, 0]).map(drop)
}

/// The physical address behind the caller's preservable memory at `address`.
pub fn physical_address(address: u64) -> Result<u64> {
    call(Syscall::PhysicalAddress, [address, 0, 0, 0, 0, 0])
}

/// Queues `message` for `target` (does not wait).
pub fn send(target: u64, message: &Message) -> Result<()> {
    call(Syscall::Send, [target, message as *const Message as u64, 0, 0, 0, 0]).map(drop)
}

/// Waits for a message; returns it (its `sender` filled in).
pub fn receive() -> Result<Message> {
    let mut message = Message::default();
    call(Syscall::Receive, [&mut message as *mut Message as u64, 0, 0, 0, 0, 0])?;
    Ok(message)
}

/// As [`receive`], giving up with `WouldBlock` when the clock reaches
/// `deadline_ns` (or earlier, when an update intervenes).
pub fn receive_until(deadline_ns: u64) -> Result<Message> {
    let mut message = Message::default();
    call(Syscall::ReceiveUntil, [&mut message as *mut Message as u64, deadline_ns, 0, 0, 0, 0])?;
    Ok(message)
}

/// Sends `message` to `target` and waits for the reply.
pub fn call_service(target: u64, message: &Message) -> Result<Message> {
    let mut buffer = *message;
    call(Syscall::Call, [target, &mut buffer as *mut Message as u64, 0, 0, 0, 0])?;
    Ok(buffer)
}

/// Answers `target`, which is waiting in [`call_service`].
pub fn reply(target: u64, message: &Message) -> Result<()> {
    call(Syscall::Reply, [target, message as *const Message as u64, 0, 0, 0, 0]).map(drop)
}

/// The id of the service called `name`.
pub fn lookup(name: &str) -> Result<u64> {
    call(Syscall::Lookup, [name.as_ptr() as u64, name.len() as u64, 0, 0, 0, 0])
}

/// Starts the embedded service `name` with `argument` (init only).
pub fn spawn(name: &str, argument: u64) -> Result<u64> {
    call(Syscall::Spawn, [name.as_ptr() as u64, name.len() as u64, argument, 0, 0, 0])
}

/// Asks the kernel to update itself (init only). Returns only when the
/// update failed or was aborted (or, for a rehearsal, once it is over).
pub fn update(image: baton_abi::UpdateImage) -> Result<()> {
    call(Syscall::Update, [image as u64, 0, 0, 0, 0, 0]).map(drop)
}

/// Preserves `[address, address + length)` of the caller's preservable
/// memory across the next update.
pub fn kho_preserve(address: u64, length: u64) -> Result<()> {
    call(Syscall::KhoPreserve, [address, length, 0, 0, 0, 0]).map(drop)
}

/// Undoes [`kho_preserve`].
pub fn kho_unpreserve(address: u64, length: u64) -> Result<()> {
    call(Syscall::KhoUnpreserve, [address, length, 0, 0, 0, 0]).map(drop)
}

/// Publishes the caller's sub-FDT (the kernel copies it).
pub fn kho_publish(fdt: &[u8]) -> Result<()> {
    call(Syscall::KhoPublish, [fdt.as_ptr() as u64, fdt.len() as u64, 0, 0, 0, 0]).map(drop)
}

/// Maps the sub-FDT the previous instance of this service published;
/// returns its address (read-only).
pub fn kho_fetch() -> Result<u64> {
    call(Syscall::KhoFetch, [0; 6])
}

/// Takes back a folio the previous instance preserved; returns where it is
/// mapped now.
pub fn kho_restore(physical: u64, order: u32) -> Result<u64> {
    call(Syscall::KhoRestore, [physical, u64::from(order), 0, 0, 0, 0])
}

/// Takes back `count` physically consecutive folios the previous instance
/// preserved; returns where they are mapped now (consecutively).
pub fn kho_restore_run(physical: u64, order: u32, count: u64) -> Result<u64> {
    call(Syscall::KhoRestoreRun, [physical, u64::from(order), count, 0, 0, 0])
}

/// Asks for update lifecycle events as messages.
pub fn kho_subscribe() -> Result<()> {
    call(Syscall::KhoSubscribe, [0; 6]).map(drop)
}

/// Acknowledges a lifecycle event (status 0: ready).
pub fn kho_ready(event: UpdateEvent, status: u64) -> Result<()> {
    call(Syscall::KhoReady, [event as u64, status, 0, 0, 0, 0]).map(drop)
}

/// Says the caller has restored everything it wants from the handover: the
/// rest of what its previous instance preserved is released, and the fetched
/// sub-FDT is unmapped.
pub fn kho_done() -> Result<()> {
    call(Syscall::KhoDone, [0; 6]).map(drop)
}

/// Stops the machine (init only). Does not return on success.
pub fn shutdown(code: u64) -> Result<()> {
    call(Syscall::Shutdown, [code, 0, 0, 0, 0, 0]).map(drop)
}

/// The PCI address of the `index`-th device the kernel's manifest gave
/// this service (`WouldBlock` until PCI is enumerated, just after boot).
pub fn device_owned(index: u64) -> Result<PciAddress> {
    call(Syscall::DeviceOwned, [index, 0, 0, 0, 0, 0]).map(|address| PciAddress(address as u16))
}

/// As [`device_owned`], waiting up to `timeout_ns` for PCI to be
/// enumerated.
pub fn wait_for_device(index: u64, timeout_ns: u64) -> Result<PciAddress> {
    let deadline = clock().saturating_add(timeout_ns);
    loop {
        match device_owned(index) {
            Err(Error::WouldBlock) if clock() < deadline => sleep(1_000_000),
            other => return other,
        }
    }
}

/// Maps `length` bytes from `offset` of memory BAR `bar` of the caller's
/// device, uncached; returns where.
pub fn device_map(address: PciAddress, bar: u8, offset: u64, length: u64) -> Result<u64> {
    call(Syscall::DeviceMap, [u64::from(address.0), u64::from(bar), offset, length, 0, 0])
}

/// Routes MSI-X entry `entry` of the caller's device to it: each
/// interrupt arrives as a message with label [`crate::IRQ_LABEL`].
/// `InvalidArgument` where no message interrupt can be routed (poll).
pub fn device_irq(address: PciAddress, entry: u16) -> Result<()> {
    call(Syscall::DeviceIrq, [u64::from(address.0), u64::from(entry), 0, 0, 0, 0]).map(drop)
}

/// A 32-bit configuration register of the caller's device.
pub fn device_config_read(address: PciAddress, offset: u16) -> Result<u32> {
    call(Syscall::DeviceConfigRead, [u64::from(address.0), u64::from(offset), 0, 0, 0, 0]).map(|value| value as u32)
}

/// Writes a 32-bit configuration register of the caller's device.
pub fn device_config_write(address: PciAddress, offset: u16, value: u32) -> Result<()> {
    call(Syscall::DeviceConfigWrite, [u64::from(address.0), u64::from(offset), u64::from(value), 0, 0, 0]).map(drop)
}

/// Grants the running service named `peer` the right to map `length`
/// bytes (whole pages) of the caller's preservable memory at `address`,
/// all inside one allocation's physically contiguous block; returns the
/// grant's id, which the peer needs (send it in a message).
pub fn share_grant(address: u64, length: u64, peer: &str) -> Result<u64> {
    call(Syscall::ShareGrant, [address, length, peer.as_ptr() as u64, peer.len() as u64, 0, 0])
}

/// Maps a region of `length` bytes granted to the caller (read-write);
/// returns where. `InvalidArgument` when the grant is of another size.
pub fn share_map(grant: u64, length: u64) -> Result<u64> {
    call(Syscall::ShareMap, [grant, length, 0, 0, 0, 0])
}

/// Ends a grant the caller made: its peer's view becomes zeroed memory of
/// its own, and the peer is told ([`crate::SHARE_REVOKED_LABEL`]).
pub fn share_revoke(grant: u64) -> Result<()> {
    call(Syscall::ShareRevoke, [grant, 0, 0, 0, 0, 0]).map(drop)
}
