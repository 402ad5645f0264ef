//! System call numbers, registers and the decoding of raw arguments into a
//! typed [`Request`].
//!
//! Registers: x86_64 `int 0x80` with the number in `rax` and arguments in
//! `rdi, rsi, rdx, r10, r8, r9`; aarch64 `svc #0` with the number in `x8` and
//! arguments in `x0`..`x5`. Results come back in two registers: a status
//! (`rax` / `x0`; 0 for success, otherwise an [`Error`] number) and a value
//! (`rdx` / `x1`).
//!
//! Decoding checks everything that can be checked without the caller's page
//! tables: numbers, ranges, alignment, overflow, lengths, and that buffers lie
//! in the user half. The kernel then checks that buffers are mapped.

use crate::error::Error;
use crate::{MAX_LOG_BYTES, MAX_NAME_BYTES, MAX_SUB_FDT_BYTES, MAX_USER_FOLIO_ORDER, PAGE_SIZE, USER_ADDRESS_LIMIT};

/// System call numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// `log(text, length)`: write a line to the kernel log.
    Log = 1,
    /// `exit(code)`: end the calling service.
    Exit = 2,
    /// `yield()`: give up the rest of the time slice.
    Yield = 3,
    /// `sleep(nanoseconds)`.
    Sleep = 4,
    /// `clock() -> nanoseconds` since boot (monotonic).
    Clock = 5,
    /// `allocate_preservable(order) -> address`: a folio of `2^order` pages
    /// mapped into the caller, zeroed.
    AllocatePreservable = 6,
    /// `free_preservable(address)`.
    FreePreservable = 7,
    /// `physical_address(address) -> physical`: of the caller's preservable
    /// memory (what a sub-FDT records).
    PhysicalAddress = 8,
    /// `send(service, message)`: queue a message (non-blocking).
    Send = 9,
    /// `receive(message) -> sender`: wait for a message.
    Receive = 10,
    /// `call(service, message)`: send and wait for the reply, which
    /// overwrites `message`.
    Call = 11,
    /// `reply(service, message)`: answer a service blocked in `call`.
    Reply = 12,
    /// `lookup(name, length) -> service`.
    Lookup = 13,
    /// `kho_preserve(address, length)`: preserve the caller's preservable
    /// memory across the next update.
    KhoPreserve = 14,
    /// `kho_unpreserve(address, length)`.
    KhoUnpreserve = 15,
    /// `kho_publish(fdt, length)`: publish the caller's sub-FDT.
    KhoPublish = 16,
    /// `kho_fetch() -> address`: map the sub-FDT the caller's previous
    /// instance published (read-only).
    KhoFetch = 17,
    /// `kho_restore(physical, order) -> address`: take back a preserved folio.
    KhoRestore = 18,
    /// `kho_subscribe()`: receive update lifecycle events as messages.
    KhoSubscribe = 19,
    /// `kho_ready(event, status)`: acknowledge a lifecycle event.
    KhoReady = 20,
    /// `spawn(name, length, argument) -> service`: start an embedded service
    /// with `argument` in its first register (init only).
    Spawn = 21,
    /// `update(image)`: update the kernel (init only); returns on failure.
    /// Image 0 is the boot module, 1 the running kernel's own image, 2 a
    /// rehearsal (prepare and finalise, then abort: nothing is replaced).
    Update = 22,
    /// `service_id() -> id` of the caller.
    ServiceId = 23,
    /// `kho_done()`: the caller has restored everything it wants from the
    /// handover; the rest of what its previous instance preserved is
    /// released and its sub-FDT unmapped.
    KhoDone = 24,
    /// `shutdown(code)`: stop the machine (init only); under QEMU the exit
    /// status says whether `code` was 0.
    Shutdown = 25,
    /// `allocate_preservable_run(order, count) -> address`: `count` folios of
    /// `2^order` pages mapped consecutively into the caller, zeroed. Each
    /// folio is preserved and restored like one from `allocate_preservable`;
    /// the kernel places them in physically contiguous blocks of up to
    /// [`crate::MAX_USER_FOLIO_ORDER`] pages, so `physical_address` of each
    /// block start gives the physical runs to record.
    AllocatePreservableRun = 26,
    /// `kho_restore_run(physical, order, count) -> address`: take back
    /// `count` physically consecutive folios of `2^order` pages that the
    /// caller's previous instance preserved, mapped consecutively.
    KhoRestoreRun = 27,
    /// `set_thread_pointer(value)`: the caller's thread pointer (FS base on
    /// x86_64, TPIDR_EL0 on aarch64; aarch64 programs may also write the
    /// register themselves). Any address below [`USER_ADDRESS_LIMIT`]; it
    /// need not be mapped. Kept per service and carried through an update
    /// that resumes the service.
    SetThreadPointer = 28,
    /// `device_owned(index) -> address`: the PCI address ([`PciAddress`])
    /// of the `index`-th function (0 first, in address order) assigned to
    /// the caller by the kernel's manifest (`pci.assign=`). `NotFound` past
    /// the last; `WouldBlock` while PCI is not yet enumerated (just after
    /// boot: retry).
    DeviceOwned = 29,
    /// `device_map(address, bar, offset, length) -> user address`: maps
    /// whole pages of a memory BAR of the caller's device, uncached.
    /// `PermissionDenied` for another service's device, `InvalidArgument`
    /// for a BAR that is not implemented, not memory, or shorter than the
    /// range.
    DeviceMap = 30,
    /// `device_config_read(address, offset) -> value`: a 32-bit register of
    /// the caller's device's configuration space (offset below 4096,
    /// 4-byte aligned). BARs read as the kernel placed them; after
    /// all-ones is written to one, it reads as its size mask.
    DeviceConfigRead = 31,
    /// `device_config_write(address, offset, value)`: writes one. BARs stay
    /// where the kernel placed them (writes only start or end a size
    /// probe); in the command register only the I/O, memory, bus-master
    /// and INTx-disable bits change; the rest of the header is read-only
    /// (`PermissionDenied`).
    DeviceConfigWrite = 32,
    /// `share_grant(address, length, peer name, name length) -> grant`:
    /// grants the service named `peer` (running now, not the caller) the
    /// right to map `[address, address + length)` of the caller's
    /// preservable memory: whole pages of one allocation's physically
    /// contiguous block. The memory stays the caller's (and is handed over
    /// with it); `free_preservable` of it answers `Busy` until the grant is
    /// revoked. At most [`MAX_GRANTS`] grants a service (`NoMemory`).
    ShareGrant = 33,
    /// `share_map(grant, length) -> user address`: the named peer maps a
    /// grant read-write (never executable). `length` is the size the peer
    /// expects (told by the owner, checked by the kernel): a grant of any
    /// other size is `InvalidArgument`, so a peer never trusts an owner's
    /// word for how much memory it reaches. `NotFound` for no such grant,
    /// `PermissionDenied` when the caller is not its peer, `AlreadyExists`
    /// when it is mapped already.
    ShareMap = 34,
    /// `share_revoke(grant)`: the owner ends a grant. A peer that had it
    /// mapped keeps its addresses, now backed by zeroed memory of its own
    /// (its reads of the channel see a dead region, never the owner's
    /// memory), and gets a [`SHARE_REVOKED_LABEL`] message from the kernel.
    /// The same happens when the owner exits. `PermissionDenied` for
    /// another service's grant.
    ShareRevoke = 35,
    /// `receive_until(buffer, deadline) -> sender`: as `receive`, but
    /// gives up when the monotonic clock reaches `deadline` (nanoseconds,
    /// the clock of `clock`) with `WouldBlock`. A deadline already passed
    /// takes a queued message or answers `WouldBlock` at once (a poll). An
    /// update ends the wait early, with `WouldBlock` (messages that arrive
    /// meanwhile wait in the mailbox): a loop that waits for messages or a
    /// time just goes round again.
    ReceiveUntil = 36,
    /// `device_irq(address, entry)`: routes MSI-X table entry `entry` of
    /// the caller's function to the caller: each interrupt it raises
    /// arrives as a message from the kernel with label [`IRQ_LABEL`]
    /// (words: the function's address, the entry, how many interrupts
    /// since the last such message; 0 after an update, when the driver
    /// should look at its device once, whatever happened). The kernel
    /// owns the table (`device_map` of its pages is `PermissionDenied`)
    /// and the MSI and MSI-X capability registers. `InvalidArgument` for
    /// a function without MSI-X, an entry past its table, or a machine
    /// that routes no message interrupts (a driver then polls);
    /// `AlreadyExists` when the entry is routed.
    DeviceIrq = 37,
    /// `kernel_info(buffer, length) -> bytes written`: what the running
    /// kernel is (its version, the generation: updates since the cold
    /// boot) and the most recent updates that led to it with their
    /// blackouts, as [`crate::info::KernelInfo`] bytes. `length` must be
    /// at least [`crate::KERNEL_INFO_BYTES`] (`InvalidArgument`).
    KernelInfo = 38,
    /// `service_option(key, key length, buffer, length) -> value length`:
    /// the value of `NAME.KEY=VALUE` on the kernel command line, where
    /// NAME is the caller's own name (a service sees no one else's
    /// options); a bare `NAME.KEY` has an empty value. `NotFound` when
    /// the line has none, `TooLarge` when the value does not fit the
    /// buffer (nothing is written then).
    ServiceOption = 39,
}

/// The longest key `service_option` takes.
pub const MAX_OPTION_KEY_BYTES: usize = 64;
/// The longest value buffer `service_option` takes.
pub const MAX_OPTION_VALUE_BYTES: usize = 256;

/// Label of the kernel's interrupt messages to a driver (`device_irq`).
pub const IRQ_LABEL: u64 = 0x4952_5100;

/// The most grants one service holds at a time.
pub const MAX_GRANTS: usize = 8;

/// Label of the kernel's message to a peer whose grant was revoked (its
/// owner revoked it or exited): word 0 is the grant id.
pub const SHARE_REVOKED_LABEL: u64 = 0x5348_5200;

/// A PCI function's address as system calls pass it: bus << 8 | device <<
/// 3 | function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddress(pub u16);

impl PciAddress {
    /// Bus number.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Device number.
    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }
    /// Function number.
    pub const fn function(self) -> u8 {
        (self.0 & 0x7) as u8
    }
    /// The address of bus, device, function.
    pub const fn new(bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress(((bus as u16) << 8) | (((device & 0x1f) as u16) << 3) | (function & 0x7) as u16)
    }
}

fn pci_address(value: u64) -> Result<PciAddress, Error> {
    u16::try_from(value).map(PciAddress).map_err(|_| Error::InvalidArgument)
}

/// A configuration-space offset: below 4096 and 4-byte aligned.
fn config_offset(value: u64) -> Result<u16, Error> {
    if value >= 4096 {
        return Err(Error::InvalidArgument);
    }
    if !value.is_multiple_of(4) {
        return Err(Error::Misaligned);
    }
    Ok(value as u16)
}

impl Syscall {
    /// The call with this number.
    pub fn from_number(number: u64) -> Option<Syscall> {
        use Syscall::*;
        const ALL: [Syscall; 39] = [
            Log,
            Exit,
            Yield,
            Sleep,
            Clock,
            AllocatePreservable,
            FreePreservable,
            PhysicalAddress,
            Send,
            Receive,
            Call,
            Reply,
            Lookup,
            KhoPreserve,
            KhoUnpreserve,
            KhoPublish,
            KhoFetch,
            KhoRestore,
            KhoSubscribe,
            KhoReady,
            Spawn,
            Update,
            ServiceId,
            KhoDone,
            Shutdown,
            AllocatePreservableRun,
            KhoRestoreRun,
            SetThreadPointer,
            DeviceOwned,
            DeviceMap,
            DeviceConfigRead,
            DeviceConfigWrite,
            ShareGrant,
            ShareMap,
            ShareRevoke,
            ReceiveUntil,
            DeviceIrq,
            KernelInfo,
            ServiceOption,
        ];
        ALL.iter().copied().find(|call| *call as u64 == number)
    }
}

/// Update lifecycle events, delivered to subscribers as messages from
/// [`crate::message::KERNEL_SENDER`] with label [`UpdateEvent::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum UpdateEvent {
    /// An update is starting: publish and preserve now, then `kho_ready`.
    Prepare = 1,
    /// The handover is finalised; preservation state is frozen.
    Frozen = 2,
    /// The update was abandoned; state is unfrozen.
    Aborted = 3,
    /// Running again after an abort: changes are allowed.
    Resumed = 4,
    /// Running on a new kernel, resumed where the old one stopped it (a
    /// restarted service never gets this event: it starts from its image).
    Continued = 5,
}

impl UpdateEvent {
    /// Message labels of lifecycle events start here.
    pub const LABEL_BASE: u64 = 0x4b48_4f00;

    /// The message label carrying this event.
    pub const fn label(self) -> u64 {
        Self::LABEL_BASE + self as u64
    }

    /// The event a message label carries, if it is a lifecycle label.
    pub fn from_label(label: u64) -> Option<UpdateEvent> {
        match label.checked_sub(Self::LABEL_BASE)? {
            1 => Some(UpdateEvent::Prepare),
            2 => Some(UpdateEvent::Frozen),
            3 => Some(UpdateEvent::Aborted),
            4 => Some(UpdateEvent::Resumed),
            5 => Some(UpdateEvent::Continued),
            _ => None,
        }
    }
}

/// What the update rule decided for a service, in word 0 of its `prepare`
/// event: a resumed service need not publish anything (its whole process
/// goes across), a restarted one must publish and preserve what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum UpdateFate {
    /// It will be resumed where it stops, by the next kernel.
    Resumed = 1,
    /// It will be started again from the next kernel's image.
    Restarted = 2,
}

impl UpdateFate {
    /// The fate a `prepare` event's word 0 carries (anything else: restart,
    /// the safe reading).
    pub fn from_word(word: u64) -> UpdateFate {
        if word == UpdateFate::Resumed as u64 { UpdateFate::Resumed } else { UpdateFate::Restarted }
    }
}

/// Which kernel image an update switches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum UpdateImage {
    /// The boot module (the update image given to the loader).
    BootModule = 0,
    /// The running kernel's own image (self-kexec into the same version).
    RunningKernel = 1,
    /// No image: prepare and finalise, then abort (checks that services are
    /// ready; nothing is replaced).
    Rehearsal = 2,
}

/// A buffer in the caller's user half: decoding guarantees it does not wrap
/// and ends at or below [`USER_ADDRESS_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserBuffer {
    /// First byte.
    pub address: u64,
    /// Length in bytes.
    pub length: u64,
}

impl UserBuffer {
    /// Checks a user buffer: no overflow, inside the user half, at most
    /// `max_length` bytes, aligned to `alignment`.
    pub fn new(address: u64, length: u64, max_length: u64, alignment: u64) -> Result<Self, Error> {
        if length > max_length {
            return Err(Error::TooLarge);
        }
        let end = address.checked_add(length).ok_or(Error::Overflow)?;
        if end > USER_ADDRESS_LIMIT || address >= USER_ADDRESS_LIMIT {
            return Err(Error::BadAddress);
        }
        if !address.is_multiple_of(alignment) {
            return Err(Error::Misaligned);
        }
        Ok(Self { address, length })
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.address + self.length
    }
}

/// A decoded system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// See [`Syscall::Log`].
    Log(UserBuffer),
    /// See [`Syscall::Exit`].
    Exit(u64),
    /// See [`Syscall::Yield`].
    Yield,
    /// See [`Syscall::Sleep`].
    Sleep {
        /// How long.
        nanoseconds: u64,
    },
    /// See [`Syscall::Clock`].
    Clock,
    /// See [`Syscall::AllocatePreservable`].
    AllocatePreservable {
        /// Folio order.
        order: u32,
    },
    /// See [`Syscall::FreePreservable`].
    FreePreservable {
        /// The folio's address.
        address: u64,
    },
    /// See [`Syscall::PhysicalAddress`].
    PhysicalAddress {
        /// A user address inside preservable memory.
        address: u64,
    },
    /// See [`Syscall::Send`].
    Send {
        /// Destination service.
        target: u64,
        /// The message.
        message: UserBuffer,
    },
    /// See [`Syscall::Receive`].
    Receive {
        /// Where the message goes.
        message: UserBuffer,
    },
    /// See [`Syscall::Call`].
    Call {
        /// Destination service.
        target: u64,
        /// The request, overwritten by the reply.
        message: UserBuffer,
    },
    /// See [`Syscall::Reply`].
    Reply {
        /// The caller to answer.
        target: u64,
        /// The reply.
        message: UserBuffer,
    },
    /// See [`Syscall::Lookup`].
    Lookup(UserBuffer),
    /// See [`Syscall::KhoPreserve`].
    KhoPreserve(UserBuffer),
    /// See [`Syscall::KhoUnpreserve`].
    KhoUnpreserve(UserBuffer),
    /// See [`Syscall::KhoPublish`].
    KhoPublish(UserBuffer),
    /// See [`Syscall::KhoFetch`].
    KhoFetch,
    /// See [`Syscall::KhoRestore`].
    KhoRestore {
        /// Physical address of the folio.
        physical: u64,
        /// Its order.
        order: u32,
    },
    /// See [`Syscall::KhoSubscribe`].
    KhoSubscribe,
    /// See [`Syscall::KhoReady`].
    KhoReady {
        /// The event acknowledged.
        event: UpdateEvent,
        /// 0 when the service is ready, otherwise why not.
        status: u64,
    },
    /// See [`Syscall::Spawn`].
    Spawn {
        /// The service's name.
        name: UserBuffer,
        /// Passed to the service's `main`.
        argument: u64,
    },
    /// See [`Syscall::Update`].
    Update {
        /// Which image.
        image: UpdateImage,
    },
    /// See [`Syscall::ServiceId`].
    ServiceId,
    /// See [`Syscall::KhoDone`].
    KhoDone,
    /// See [`Syscall::Shutdown`].
    Shutdown(u64),
    /// See [`Syscall::AllocatePreservableRun`].
    AllocatePreservableRun {
        /// Folio order.
        order: u32,
        /// Number of folios (at least one).
        count: u64,
    },
    /// See [`Syscall::KhoRestoreRun`].
    KhoRestoreRun {
        /// Physical address of the first folio.
        physical: u64,
        /// The folios' order.
        order: u32,
        /// Number of folios (at least one).
        count: u64,
    },
    /// See [`Syscall::SetThreadPointer`].
    SetThreadPointer {
        /// The new thread pointer, below [`USER_ADDRESS_LIMIT`].
        value: u64,
    },
    /// See [`Syscall::DeviceOwned`].
    DeviceOwned {
        /// Which of the caller's functions.
        index: u64,
    },
    /// See [`Syscall::DeviceMap`].
    DeviceMap {
        /// The caller's function.
        address: PciAddress,
        /// BAR number (below 6).
        bar: u8,
        /// Where in the BAR the mapping starts (page-aligned).
        offset: u64,
        /// Its length (whole pages, at least one).
        length: u64,
    },
    /// See [`Syscall::DeviceConfigRead`].
    DeviceConfigRead {
        /// The caller's function.
        address: PciAddress,
        /// The register.
        offset: u16,
    },
    /// See [`Syscall::DeviceConfigWrite`].
    DeviceConfigWrite {
        /// The caller's function.
        address: PciAddress,
        /// The register.
        offset: u16,
        /// What to write.
        value: u32,
    },
    /// See [`Syscall::ShareGrant`].
    ShareGrant {
        /// The memory granted (whole pages).
        range: UserBuffer,
        /// The peer's name.
        peer: UserBuffer,
    },
    /// See [`Syscall::ShareMap`].
    ShareMap {
        /// The grant.
        grant: u64,
        /// Its size as the caller expects it (whole pages).
        length: u64,
    },
    /// See [`Syscall::ShareRevoke`].
    ShareRevoke {
        /// The grant.
        grant: u64,
    },
    /// See [`Syscall::DeviceIrq`].
    DeviceIrq {
        /// The caller's function.
        address: PciAddress,
        /// The MSI-X table entry.
        entry: u16,
    },
    /// See [`Syscall::KernelInfo`].
    KernelInfo(UserBuffer),
    /// See [`Syscall::ServiceOption`].
    ServiceOption {
        /// The key (after the service's name and the dot).
        key: UserBuffer,
        /// Where the value goes.
        value: UserBuffer,
    },
    /// See [`Syscall::ReceiveUntil`].
    ReceiveUntil {
        /// Where the message goes.
        message: UserBuffer,
        /// When to give up (monotonic nanoseconds).
        deadline_ns: u64,
    },
}

fn order(value: u64) -> Result<u32, Error> {
    if value > u64::from(MAX_USER_FOLIO_ORDER) {
        return Err(Error::InvalidArgument);
    }
    Ok(value as u32)
}

/// `count` folios of `order`: at least one, at most
/// [`crate::MAX_PRESERVABLE_RUN_BYTES`] in all.
fn folio_count(order: u32, count: u64) -> Result<u64, Error> {
    if count == 0 {
        return Err(Error::InvalidArgument);
    }
    match count.checked_mul(PAGE_SIZE << order) {
        Some(bytes) if bytes <= crate::MAX_PRESERVABLE_RUN_BYTES => Ok(count),
        Some(_) => Err(Error::TooLarge),
        None => Err(Error::Overflow),
    }
}

fn page_range(address: u64, length: u64) -> Result<UserBuffer, Error> {
    if length == 0 {
        return Err(Error::InvalidArgument);
    }
    if !length.is_multiple_of(PAGE_SIZE) {
        return Err(Error::Misaligned);
    }
    UserBuffer::new(address, length, USER_ADDRESS_LIMIT, PAGE_SIZE)
}

fn message(address: u64) -> Result<UserBuffer, Error> {
    UserBuffer::new(address, crate::message::MESSAGE_BYTES as u64, u64::MAX, 8)
}

impl Request {
    /// Decodes a system call from its number and six argument registers.
    pub fn decode(number: u64, arguments: [u64; 6]) -> Result<Request, Error> {
        let [a0, a1, ..] = arguments;
        let call = Syscall::from_number(number).ok_or(Error::UnknownSyscall)?;
        Ok(match call {
            Syscall::Log => Request::Log(UserBuffer::new(a0, a1, MAX_LOG_BYTES as u64, 1)?),
            Syscall::Exit => Request::Exit(a0),
            Syscall::Yield => Request::Yield,
            Syscall::Sleep => Request::Sleep { nanoseconds: a0 },
            Syscall::Clock => Request::Clock,
            Syscall::AllocatePreservable => Request::AllocatePreservable { order: order(a0)? },
            Syscall::FreePreservable => {
                Request::FreePreservable { address: UserBuffer::new(a0, PAGE_SIZE, PAGE_SIZE, PAGE_SIZE)?.address }
            }
            Syscall::PhysicalAddress => Request::PhysicalAddress { address: UserBuffer::new(a0, 1, 1, 1)?.address },
            Syscall::Send => Request::Send { target: a0, message: message(a1)? },
            Syscall::Receive => Request::Receive { message: message(a0)? },
            Syscall::Call => Request::Call { target: a0, message: message(a1)? },
            Syscall::Reply => Request::Reply { target: a0, message: message(a1)? },
            Syscall::Lookup => Request::Lookup(UserBuffer::new(a0, a1, MAX_NAME_BYTES as u64, 1)?),
            Syscall::KhoPreserve => Request::KhoPreserve(page_range(a0, a1)?),
            Syscall::KhoUnpreserve => Request::KhoUnpreserve(page_range(a0, a1)?),
            Syscall::KhoPublish => {
                if a1 < 40 {
                    return Err(Error::InvalidArgument);
                }
                Request::KhoPublish(UserBuffer::new(a0, a1, MAX_SUB_FDT_BYTES as u64, 8)?)
            }
            Syscall::KhoFetch => Request::KhoFetch,
            Syscall::KhoRestore => {
                let order = order(a1)?;
                if a0 % (PAGE_SIZE << order) != 0 {
                    return Err(Error::Misaligned);
                }
                Request::KhoRestore { physical: a0, order }
            }
            Syscall::KhoSubscribe => Request::KhoSubscribe,
            Syscall::KhoReady => Request::KhoReady {
                event: UpdateEvent::from_label(UpdateEvent::LABEL_BASE.wrapping_add(a0))
                    .ok_or(Error::InvalidArgument)?,
                status: a1,
            },
            Syscall::Spawn => {
                Request::Spawn { name: UserBuffer::new(a0, a1, MAX_NAME_BYTES as u64, 1)?, argument: arguments[2] }
            }
            Syscall::Update => Request::Update {
                image: match a0 {
                    0 => UpdateImage::BootModule,
                    1 => UpdateImage::RunningKernel,
                    2 => UpdateImage::Rehearsal,
                    _ => return Err(Error::InvalidArgument),
                },
            },
            Syscall::ServiceId => Request::ServiceId,
            Syscall::KhoDone => Request::KhoDone,
            Syscall::Shutdown => Request::Shutdown(a0),
            Syscall::AllocatePreservableRun => {
                let order = order(a0)?;
                Request::AllocatePreservableRun { order, count: folio_count(order, a1)? }
            }
            Syscall::KhoRestoreRun => {
                let order = order(a1)?;
                if a0 % (PAGE_SIZE << order) != 0 {
                    return Err(Error::Misaligned);
                }
                Request::KhoRestoreRun { physical: a0, order, count: folio_count(order, arguments[2])? }
            }
            Syscall::SetThreadPointer => {
                if a0 >= USER_ADDRESS_LIMIT {
                    return Err(Error::BadAddress);
                }
                Request::SetThreadPointer { value: a0 }
            }
            Syscall::DeviceOwned => Request::DeviceOwned { index: a0 },
            Syscall::DeviceMap => {
                let [_, _, offset, length, ..] = arguments;
                if a1 >= 6 || length == 0 {
                    return Err(Error::InvalidArgument);
                }
                if !offset.is_multiple_of(PAGE_SIZE) || !length.is_multiple_of(PAGE_SIZE) {
                    return Err(Error::Misaligned);
                }
                offset.checked_add(length).ok_or(Error::Overflow)?;
                Request::DeviceMap { address: pci_address(a0)?, bar: a1 as u8, offset, length }
            }
            Syscall::DeviceConfigRead => {
                Request::DeviceConfigRead { address: pci_address(a0)?, offset: config_offset(a1)? }
            }
            Syscall::DeviceConfigWrite => Request::DeviceConfigWrite {
                address: pci_address(a0)?,
                offset: config_offset(a1)?,
                value: u32::try_from(arguments[2]).map_err(|_| Error::InvalidArgument)?,
            },
            Syscall::ShareGrant => Request::ShareGrant {
                range: page_range(a0, a1)?,
                peer: UserBuffer::new(arguments[2], arguments[3], MAX_NAME_BYTES as u64, 1)?,
            },
            Syscall::ShareMap => {
                if a1 == 0 {
                    return Err(Error::InvalidArgument);
                }
                if !a1.is_multiple_of(PAGE_SIZE) {
                    return Err(Error::Misaligned);
                }
                Request::ShareMap { grant: a0, length: a1 }
            }
            Syscall::ShareRevoke => Request::ShareRevoke { grant: a0 },
            Syscall::ReceiveUntil => Request::ReceiveUntil { message: message(a0)?, deadline_ns: a1 },
            Syscall::KernelInfo => {
                if a1 < crate::KERNEL_INFO_BYTES as u64 {
                    return Err(Error::InvalidArgument);
                }
                // Only what is written is checked: the first bytes.
                Request::KernelInfo(UserBuffer::new(a0, crate::KERNEL_INFO_BYTES as u64, u64::MAX, 1)?)
            }
            Syscall::ServiceOption => Request::ServiceOption {
                key: UserBuffer::new(a0, a1, MAX_OPTION_KEY_BYTES as u64, 1)?,
                value: UserBuffer::new(arguments[2], arguments[3], MAX_OPTION_VALUE_BYTES as u64, 1)?,
            },
            Syscall::DeviceIrq => Request::DeviceIrq {
                address: pci_address(a0)?,
                entry: u16::try_from(a1).map_err(|_| Error::InvalidArgument)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_number_decodes_to_its_call() {
        for number in 1..=39 {
            let call = Syscall::from_number(number).unwrap();
            assert_eq!(call as u64, number);
        }
        assert_eq!(Syscall::from_number(0), None);
        assert_eq!(Request::decode(40, [0; 6]), Err(Error::UnknownSyscall));
        let irq = |arguments: [u64; 6]| Request::decode(Syscall::DeviceIrq as u64, arguments);
        assert_eq!(irq([0x10, 2, 0, 0, 0, 0]), Ok(Request::DeviceIrq { address: PciAddress(0x10), entry: 2 }));
        assert_eq!(irq([0x1_0000, 0, 0, 0, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(irq([0x10, 0x1_0000, 0, 0, 0, 0]), Err(Error::InvalidArgument));
    }

    #[test]
    fn share_calls_take_whole_pages_and_a_name() {
        let decode = |arguments: [u64; 6]| Request::decode(Syscall::ShareGrant as u64, arguments);
        let range = UserBuffer { address: 0x10_0000_0000, length: 0x2000 };
        let peer = UserBuffer { address: 0x1000, length: 4 };
        assert_eq!(decode([0x10_0000_0000, 0x2000, 0x1000, 4, 0, 0]), Ok(Request::ShareGrant { range, peer }));
        assert_eq!(decode([0x10_0000_0000, 0, 0x1000, 4, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(decode([0x10_0000_0000, 0x800, 0x1000, 4, 0, 0]), Err(Error::Misaligned));
        assert_eq!(decode([0x10_0000_0800, 0x1000, 0x1000, 4, 0, 0]), Err(Error::Misaligned));
        assert_eq!(decode([0x10_0000_0000, 0x1000, 0x1000, 32, 0, 0]), Err(Error::TooLarge));
        assert_eq!(decode([USER_ADDRESS_LIMIT, 0x1000, 0x1000, 4, 0, 0]), Err(Error::BadAddress));
        let map = |arguments: [u64; 6]| Request::decode(Syscall::ShareMap as u64, arguments);
        assert_eq!(map([9, 0x2000, 0, 0, 0, 0]), Ok(Request::ShareMap { grant: 9, length: 0x2000 }));
        assert_eq!(map([9, 0, 0, 0, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(map([9, 0x1800, 0, 0, 0, 0]), Err(Error::Misaligned));
        assert_eq!(
            Request::decode(Syscall::ShareRevoke as u64, [9, 0, 0, 0, 0, 0]),
            Ok(Request::ShareRevoke { grant: 9 })
        );
    }

    #[test]
    fn device_calls_check_addresses_offsets_and_ranges() {
        let decode = |call: Syscall, arguments: [u64; 6]| Request::decode(call as u64, arguments);
        let address = PciAddress::new(0, 2, 0);
        assert_eq!((address.bus(), address.device(), address.function()), (0, 2, 0));
        assert_eq!(PciAddress::new(3, 0x1f, 7).0, 0x3ff);
        assert_eq!(
            decode(Syscall::DeviceMap, [0x10, 4, 0x1000, 0x2000, 0, 0]),
            Ok(Request::DeviceMap { address, bar: 4, offset: 0x1000, length: 0x2000 })
        );
        assert_eq!(decode(Syscall::DeviceMap, [0x10, 6, 0, 0x1000, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(decode(Syscall::DeviceMap, [0x10, 0, 0, 0, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(decode(Syscall::DeviceMap, [0x10, 0, 0x800, 0x1000, 0, 0]), Err(Error::Misaligned));
        assert_eq!(decode(Syscall::DeviceMap, [0x10, 0, u64::MAX - 0xfff, 0x2000, 0, 0]), Err(Error::Overflow));
        assert_eq!(decode(Syscall::DeviceMap, [0x1_0000, 0, 0, 0x1000, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(
            decode(Syscall::DeviceConfigRead, [0x10, 0x40, 0, 0, 0, 0]),
            Ok(Request::DeviceConfigRead { address, offset: 0x40 })
        );
        assert_eq!(decode(Syscall::DeviceConfigRead, [0x10, 0x42, 0, 0, 0, 0]), Err(Error::Misaligned));
        assert_eq!(decode(Syscall::DeviceConfigRead, [0x10, 4096, 0, 0, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(decode(Syscall::DeviceConfigWrite, [0x10, 4, 1 << 32, 0, 0, 0]), Err(Error::InvalidArgument));
        assert_eq!(decode(Syscall::DeviceOwned, [1, 0, 0, 0, 0, 0]), Ok(Request::DeviceOwned { index: 1 }));
    }

    #[test]
    fn buffers_in_the_kernel_half_or_wrapping_are_refused() {
        let log = |address, length| Request::decode(Syscall::Log as u64, [address, length, 0, 0, 0, 0]);
        assert_eq!(log(0x1000, 5), Ok(Request::Log(UserBuffer { address: 0x1000, length: 5 })));
        assert_eq!(log(0xffff_8000_0000_0000, 5), Err(Error::BadAddress));
        assert_eq!(log(USER_ADDRESS_LIMIT - 2, 5), Err(Error::BadAddress));
        assert_eq!(log(u64::MAX - 1, 5), Err(Error::Overflow));
        assert_eq!(log(0x1000, MAX_LOG_BYTES as u64 + 1), Err(Error::TooLarge));
    }

    #[test]
    fn messages_must_be_aligned() {
        assert_eq!(Request::decode(Syscall::Receive as u64, [0x1004, 0, 0, 0, 0, 0]), Err(Error::Misaligned));
        assert!(Request::decode(Syscall::Receive as u64, [0x1008, 0, 0, 0, 0, 0]).is_ok());
    }

    #[test]
    fn preservation_ranges_are_whole_pages() {
        let preserve = |address, length| Request::decode(Syscall::KhoPreserve as u64, [address, length, 0, 0, 0, 0]);
        assert!(preserve(0x10_0000, 0x2000).is_ok());
        assert_eq!(preserve(0x10_0800, 0x1000), Err(Error::Misaligned));
        assert_eq!(preserve(0x10_0000, 0x800), Err(Error::Misaligned));
        assert_eq!(preserve(0x10_0000, 0), Err(Error::InvalidArgument));
        assert_eq!(preserve(USER_ADDRESS_LIMIT, 0x1000), Err(Error::BadAddress));
    }

    #[test]
    fn orders_and_restores_are_checked() {
        assert_eq!(
            Request::decode(Syscall::AllocatePreservable as u64, [11, 0, 0, 0, 0, 0]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            Request::decode(Syscall::KhoRestore as u64, [0x1000, 1, 0, 0, 0, 0]),
            Err(Error::Misaligned),
            "an order-1 folio is 8 KiB aligned"
        );
        assert_eq!(
            Request::decode(Syscall::KhoRestore as u64, [0x2000, 1, 0, 0, 0, 0]),
            Ok(Request::KhoRestore { physical: 0x2000, order: 1 })
        );
    }

    #[test]
    fn runs_need_a_count_within_bounds() {
        let allocate =
            |order, count| Request::decode(Syscall::AllocatePreservableRun as u64, [order, count, 0, 0, 0, 0]);
        assert_eq!(allocate(0, 256), Ok(Request::AllocatePreservableRun { order: 0, count: 256 }));
        assert_eq!(allocate(0, 0), Err(Error::InvalidArgument));
        assert_eq!(allocate(11, 1), Err(Error::InvalidArgument));
        assert_eq!(allocate(10, crate::MAX_PRESERVABLE_RUN_BYTES / (4 << 20) + 1), Err(Error::TooLarge));
        assert_eq!(allocate(10, u64::MAX), Err(Error::Overflow));
        let restore =
            |physical, order, count| Request::decode(Syscall::KhoRestoreRun as u64, [physical, order, count, 0, 0, 0]);
        assert_eq!(restore(0x20_0000, 9, 3), Ok(Request::KhoRestoreRun { physical: 0x20_0000, order: 9, count: 3 }));
        assert_eq!(restore(0x1000, 9, 3), Err(Error::Misaligned));
        assert_eq!(restore(0x1000, 0, 0), Err(Error::InvalidArgument));
    }

    #[test]
    fn thread_pointers_stay_in_the_user_half() {
        let set = |value| Request::decode(Syscall::SetThreadPointer as u64, [value, 0, 0, 0, 0, 0]);
        assert_eq!(set(0), Ok(Request::SetThreadPointer { value: 0 }));
        assert_eq!(set(0x7fff_f000_0010), Ok(Request::SetThreadPointer { value: 0x7fff_f000_0010 }));
        assert_eq!(set(USER_ADDRESS_LIMIT - 1), Ok(Request::SetThreadPointer { value: USER_ADDRESS_LIMIT - 1 }));
        assert_eq!(set(USER_ADDRESS_LIMIT), Err(Error::BadAddress));
        assert_eq!(set(0xffff_8000_0000_0000), Err(Error::BadAddress));
    }

    #[test]
    fn kernel_info_wants_room_for_the_whole_answer() {
        let bytes = crate::KERNEL_INFO_BYTES as u64;
        assert_eq!(
            Request::decode(Syscall::KernelInfo as u64, [0x1000, bytes + 100, 0, 0, 0, 0]),
            Ok(Request::KernelInfo(UserBuffer { address: 0x1000, length: bytes }))
        );
        assert_eq!(
            Request::decode(Syscall::KernelInfo as u64, [0x1000, bytes - 1, 0, 0, 0, 0]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            Request::decode(Syscall::KernelInfo as u64, [USER_ADDRESS_LIMIT - 8, bytes, 0, 0, 0, 0]),
            Err(Error::BadAddress)
        );
    }

    #[test]
    fn service_option_buffers_are_bounded() {
        let decode = |arguments: [u64; 6]| Request::decode(Syscall::ServiceOption as u64, arguments);
        assert_eq!(
            decode([0x1000, 10, 0x2000, 256, 0, 0]),
            Ok(Request::ServiceOption {
                key: UserBuffer { address: 0x1000, length: 10 },
                value: UserBuffer { address: 0x2000, length: 256 }
            })
        );
        assert_eq!(decode([0x1000, 65, 0x2000, 16, 0, 0]), Err(Error::TooLarge));
        assert_eq!(decode([0x1000, 10, 0x2000, 257, 0, 0]), Err(Error::TooLarge));
        assert_eq!(decode([USER_ADDRESS_LIMIT, 1, 0x2000, 16, 0, 0]), Err(Error::BadAddress));
    }

    #[test]
    fn lifecycle_labels_round_trip() {
        for event in [UpdateEvent::Prepare, UpdateEvent::Frozen, UpdateEvent::Aborted, UpdateEvent::Resumed] {
            assert_eq!(UpdateEvent::from_label(event.label()), Some(event));
        }
        assert_eq!(UpdateEvent::from_label(7), None);
        assert_eq!(
            Request::decode(Syscall::KhoReady as u64, [1, 0, 0, 0, 0, 0]),
            Ok(Request::KhoReady { event: UpdateEvent::Prepare, status: 0 })
        );
        assert_eq!(Request::decode(Syscall::KhoReady as u64, [9, 0, 0, 0, 0, 0]), Err(Error::InvalidArgument));
    }

    proptest! {
        /// Decoding never panics, and every accepted buffer lies in the user
        /// half without wrapping.
        #[test]
        fn decoding_is_total_and_buffers_are_safe(number in 0u64..40, arguments: [u64; 6]) {
            if let Ok(request) = Request::decode(number, arguments) {
                let buffer = match request {
                    Request::Log(buffer) | Request::Lookup(buffer) | Request::KhoPreserve(buffer)
                    | Request::KhoUnpreserve(buffer) | Request::KhoPublish(buffer) | Request::Spawn { name: buffer, .. }
                    | Request::ShareGrant { peer: buffer, .. } | Request::KernelInfo(buffer)
                    | Request::ServiceOption { value: buffer, .. } => Some(buffer),
                    Request::Send { message, .. } | Request::Receive { message } | Request::Call { message, .. }
                    | Request::Reply { message, .. } | Request::ReceiveUntil { message, .. } => Some(message),
                    _ => None,
                };
                if let Some(buffer) = buffer {
                    prop_assert!(buffer.address.checked_add(buffer.length).is_some());
                    prop_assert!(buffer.end() <= USER_ADDRESS_LIMIT);
                }
            }
        }
    }
}
