//! The system-call boundary: decodes the request (baton-abi), finds the
//! calling service once, checks privilege with a token, runs the call in the
//! layer that owns it, and turns each layer's typed errors into the ABI's
//! documented error numbers (every variant mapped by name, no catch-all).

#![deny(unsafe_code)]

use crate::handover::{self, HandoverError};
use crate::mm::user::{Backing, DEVICE_BASE, SpaceError, device_attributes};
use crate::pci::{self, PciError};
use crate::task::ipc::{self, IpcError};
use crate::task::share::ShareError;
use crate::task::{Privilege, SpawnError, State, TASKS, Tasks, reschedule};
use crate::update::{self, UpdateError};
use baton_abi::error::encode_result;
use baton_abi::{Error, Message, Request};
use baton_arch::trap::TrapFrame;
use baton_kho::{OutgoingError, TrackerError};

/// What a system call did to the caller.
enum Outcome {
    /// Return this value now.
    Done(u64),
    /// The caller blocked (its result is set when it is woken).
    Blocked,
    /// The caller asked to give up the CPU; return 0 and reschedule.
    Yielded,
    /// The caller is gone.
    Exited,
}

/// Why a call failed, before it becomes an ABI error number.
enum CallError {
    Abi(Error),
    Space(SpaceError),
    Handover(HandoverError),
    Ipc(IpcError),
    Spawn(SpawnError),
    Update(UpdateError),
    Pci(PciError),
    Share(ShareError),
}

impl From<Error> for CallError {
    fn from(error: Error) -> Self {
        CallError::Abi(error)
    }
}
impl From<SpaceError> for CallError {
    fn from(error: SpaceError) -> Self {
        CallError::Space(error)
    }
}
impl From<HandoverError> for CallError {
    fn from(error: HandoverError) -> Self {
        CallError::Handover(error)
    }
}
impl From<IpcError> for CallError {
    fn from(error: IpcError) -> Self {
        CallError::Ipc(error)
    }
}
impl From<SpawnError> for CallError {
    fn from(error: SpawnError) -> Self {
        CallError::Spawn(error)
    }
}
impl From<PciError> for CallError {
    fn from(error: PciError) -> Self {
        CallError::Pci(error)
    }
}
impl From<ShareError> for CallError {
    fn from(error: ShareError) -> Self {
        CallError::Share(error)
    }
}
impl From<UpdateError> for CallError {
    fn from(error: UpdateError) -> Self {
        CallError::Update(error)
    }
}

fn space_error(error: SpaceError) -> Error {
    match error {
        SpaceError::BadAddress => Error::BadAddress,
        SpaceError::Overflow => Error::Overflow,
        SpaceError::NoMemory | SpaceError::TooManyMappings => Error::NoMemory,
        SpaceError::AlreadyMapped => Error::AlreadyExists,
        SpaceError::Misaligned => Error::Misaligned,
    }
}

fn tracker_error(error: TrackerError) -> Error {
    match error {
        TrackerError::OutOfMetadataMemory => Error::NoMemory,
        TrackerError::AlreadyPreserved { .. } | TrackerError::OverlapsPreserved { .. } => Error::AlreadyExists,
        TrackerError::NotPreserved { .. } | TrackerError::RangeNotPreserved { .. } => Error::NotFound,
        TrackerError::OrderTooLarge { .. }
        | TrackerError::MisalignedFolio { .. }
        | TrackerError::AddressTooLarge { .. }
        | TrackerError::ZeroSizedRange { .. }
        | TrackerError::MisalignedRange { .. }
        | TrackerError::RangeOverflow { .. }
        | TrackerError::FolioStraddlesRange { .. }
        | TrackerError::Access(_) => Error::InvalidArgument,
    }
}

fn outgoing_error(error: OutgoingError) -> Error {
    match error {
        OutgoingError::Busy | OutgoingError::AlreadyFinalized => Error::Busy,
        OutgoingError::Tracker(error) => tracker_error(error),
        OutgoingError::OutOfMetadataMemory => Error::NoMemory,
        OutgoingError::NotFinalized
        | OutgoingError::InvalidUserName
        | OutgoingError::DuplicateUserName
        | OutgoingError::UnknownUser
        | OutgoingError::InvalidSubFdtRange { .. }
        | OutgoingError::SubFdtNotPreserved { .. }
        | OutgoingError::InvalidSubFdt { .. }
        | OutgoingError::Access(_)
        | OutgoingError::FdtBuild(_) => Error::InvalidArgument,
    }
}

fn handover_error(error: HandoverError) -> Error {
    match error {
        HandoverError::Space(error) => space_error(error),
        HandoverError::NotPreservable | HandoverError::NotOwner => Error::PermissionDenied,
        HandoverError::NotMapped => Error::BadAddress,
        HandoverError::NotFolioAligned => Error::Misaligned,
        HandoverError::LimitReached | HandoverError::OutOfMemory => Error::NoMemory,
        HandoverError::Overflow => Error::Overflow,
        HandoverError::Frozen | HandoverError::StillPreserved | HandoverError::NotReady => Error::Busy,
        HandoverError::Kho(error) => outgoing_error(error),
        HandoverError::InvalidSubFdt | HandoverError::WrongOrder => Error::InvalidArgument,
        HandoverError::NoHandover => Error::NoHandover,
        HandoverError::NotPreserved => Error::NotFound,
    }
}

fn pci_error(error: PciError) -> Error {
    match error {
        PciError::NotEnumerated => Error::WouldBlock,
        PciError::NotFound => Error::NotFound,
        PciError::NotOwner | PciError::ReadOnly => Error::PermissionDenied,
        PciError::NoSuchBar | PciError::PastTheEnd | PciError::NoInterrupts | PciError::NoSuchEntry => {
            Error::InvalidArgument
        }
        PciError::KernelOwned => Error::PermissionDenied,
        PciError::AlreadyRouted => Error::AlreadyExists,
    }
}

fn share_error(error: ShareError) -> Error {
    match error {
        ShareError::NotPreservable | ShareError::NotYours => Error::PermissionDenied,
        ShareError::NoSuchPeer | ShareError::NoSuchGrant => Error::NotFound,
        ShareError::OwnPeer | ShareError::WrongLength => Error::InvalidArgument,
        ShareError::TooMany => Error::NoMemory,
        ShareError::AlreadyExists => Error::AlreadyExists,
        ShareError::Space(error) => space_error(error),
    }
}

fn ipc_error(error: IpcError) -> Error {
    match error {
        IpcError::NoSuchService => Error::NotFound,
        IpcError::WouldBlock => Error::WouldBlock,
        IpcError::NotCalling | IpcError::NotReceived => Error::InvalidArgument,
        IpcError::NotYourCaller => Error::PermissionDenied,
    }
}

fn spawn_error(error: SpawnError) -> Error {
    match error {
        SpawnError::UnknownService => Error::NotFound,
        SpawnError::BadImage(_) => Error::InvalidArgument,
        SpawnError::NoMemory => Error::NoMemory,
        SpawnError::AlreadyRunning | SpawnError::IdTaken => Error::AlreadyExists,
    }
}

fn update_error(error: UpdateError) -> Error {
    match error {
        UpdateError::InProgress => Error::Busy,
        UpdateError::RequesterGone => Error::NotFound,
        UpdateError::PrepareTimedOut(_)
        | UpdateError::PrepareRefused(..)
        | UpdateError::Finalize(_)
        | UpdateError::Kexec(_)
        | UpdateError::BootDescription(_) => Error::UpdateFailed,
        #[cfg(feature = "testing")]
        UpdateError::InjectedJumpFailure => Error::UpdateFailed,
    }
}

impl From<CallError> for Error {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Abi(error) => error,
            CallError::Space(error) => space_error(error),
            CallError::Handover(error) => handover_error(error),
            CallError::Ipc(error) => ipc_error(error),
            CallError::Spawn(error) => spawn_error(error),
            CallError::Update(error) => update_error(error),
            CallError::Pci(error) => pci_error(error),
            CallError::Share(error) => share_error(error),
        }
    }
}

fn read_message(tasks: &Tasks, id: u64, address: u64) -> Result<Message, CallError> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let bytes = process.space.read(address, baton_abi::message::MESSAGE_BYTES as u64)?;
    let mut array = [0u8; baton_abi::message::MESSAGE_BYTES];
    array.copy_from_slice(&bytes);
    Ok(Message::from_bytes(&array))
}

fn read_name(tasks: &Tasks, id: u64, address: u64, length: u64) -> Result<alloc::string::String, CallError> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let bytes = process.space.read(address, length)?;
    Ok(alloc::string::String::from_utf8(bytes).map_err(|_| Error::InvalidArgument)?)
}

/// The caller's privilege token, or `PermissionDenied`.
fn privilege(tasks: &Tasks, id: u64) -> Result<Privilege, CallError> {
    Ok(tasks.processes.get(&id).and_then(|process| process.privilege()).ok_or(Error::PermissionDenied)?)
}

/// A shutdown init asked for while the machine is to wait for the console.
static PENDING_SHUTDOWN: spin::Once<u64> = spin::Once::new();

/// The exit code of a shutdown that waits for a line on the console.
pub fn pending_shutdown() -> Option<u64> {
    PENDING_SHUTDOWN.get().copied()
}

/// Runs a decoded call in the group it belongs to.
fn run(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, CallError> {
    match request {
        Request::Log { .. }
        | Request::Exit { .. }
        | Request::Yield
        | Request::Sleep { .. }
        | Request::Clock
        | Request::KernelInfo(_)
        | Request::ServiceOption { .. }
        | Request::ServiceId
        | Request::SetThreadPointer { .. } => run_basic(tasks, id, request),
        Request::Send { .. }
        | Request::Receive { .. }
        | Request::ReceiveUntil { .. }
        | Request::Call { .. }
        | Request::Reply { .. }
        | Request::Lookup { .. } => run_ipc(tasks, id, request),
        Request::AllocatePreservable { .. }
        | Request::AllocatePreservableRun { .. }
        | Request::FreePreservable { .. }
        | Request::PhysicalAddress { .. }
        | Request::KhoPreserve { .. }
        | Request::KhoUnpreserve { .. }
        | Request::KhoPublish { .. }
        | Request::KhoSubscribe
        | Request::KhoReady { .. }
        | Request::KhoFetch
        | Request::KhoDone
        | Request::KhoRestore { .. }
        | Request::KhoRestoreRun { .. } => run_kho(tasks, id, request),
        Request::Spawn { .. } | Request::Shutdown { .. } | Request::Update { .. } => run_privileged(tasks, id, request),
        Request::DeviceOwned { .. }
        | Request::DeviceMap { .. }
        | Request::DeviceConfigRead { .. }
        | Request::DeviceConfigWrite { .. }
        | Request::DeviceIrq { .. } => run_device(tasks, id, request),
        Request::ShareGrant { .. } | Request::ShareMap { .. } | Request::ShareRevoke { .. } => {
            run_share(tasks, id, request)
        }
    }
}

/// Regions one service grants another (`task::share` checks each step).
fn run_share(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, CallError> {
    match request {
        Request::ShareGrant { range, peer } => {
            let peer = read_name(tasks, id, peer.address, peer.length)?;
            let grant = tasks.share_grant(id, range, &peer)?;
            let owner = tasks.processes.get(&id).map_or("?", |process| process.name.as_str());
            log::info!(target: "share", "'{owner}' granted {:#x} bytes to '{peer}' (grant {grant})", range.length);
            Ok(Outcome::Done(grant))
        }
        Request::ShareMap { grant, length } => Ok(Outcome::Done(tasks.share_map(id, grant, length)?)),
        Request::ShareRevoke { grant } => {
            tasks.share_revoke(id, grant)?;
            Ok(Outcome::Done(0))
        }
        // `run` sends each call to its group.
        _ => Err(Error::UnknownSyscall.into()),
    }
}

/// A driver and the devices the manifest gave it: every check (owner,
/// BAR, range, register) is the kernel's.
fn run_device(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, CallError> {
    let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
    let name = process.name.as_str();
    match request {
        Request::DeviceOwned { index } => {
            let address = pci::owned(name, index)?;
            Ok(Outcome::Done(u64::from(address.0)))
        }
        Request::DeviceMap { address, bar, offset, length } => {
            let phys = pci::bar_range(name, address, bar, offset, length)?;
            // Registers, never RAM: a BAR placed over memory would be a
            // kernel bug, and mapping it uncached would alias the memory.
            if crate::mm::overlaps_ram(phys, length) {
                log::warn!(target: "pci", "'{name}': BAR {bar} at {phys:#x} overlaps RAM; not mapped");
                return Err(Error::InvalidArgument.into());
            }
            let virt = process.space.find_free(DEVICE_BASE, length, baton_abi::PAGE_SIZE).ok_or(Error::NoMemory)?;
            process.space.map(virt, phys, length, device_attributes(), Backing::Device { phys })?;
            Ok(Outcome::Done(virt))
        }
        Request::DeviceConfigRead { address, offset } => {
            Ok(Outcome::Done(u64::from(pci::config_read(name, address, offset)?)))
        }
        Request::DeviceConfigWrite { address, offset, value } => {
            pci::config_write(name, address, offset, value)?;
            Ok(Outcome::Done(0))
        }
        Request::DeviceIrq { address, entry } => {
            pci::route_entry(name, id, address, entry)?;
            Ok(Outcome::Done(0))
        }
        // `run` sends each call to its group.
        _ => Err(Error::UnknownSyscall.into()),
    }
}

/// Logging, exit, time and the caller's own id.
fn run_basic(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, CallError> {
    // The caller, found once for the calls that concern only it.
    macro_rules! caller {
        () => {
            tasks.processes.get_mut(&id).ok_or(Error::NotFound)?
        };
    }
    match request {
        Request::Log(buffer) => {
            let process = caller!();
            let bytes = process.space.read(buffer.address, buffer.length)?;
            let text = core::str::from_utf8(&bytes).unwrap_or("<not UTF-8>");
            log::info!(target: "svc", "[{}] {}", process.name.as_str(), text.trim_end());
            Ok(Outcome::Done(0))
        }
        Request::Exit(code) => {
            let name = caller!().name;
            log::info!(target: "sched", "service '{}' (id {id}) exited with code {}", name.as_str(), code as i64);
            tasks.end(id, code as i64);
            Ok(Outcome::Exited)
        }
        Request::Yield => Ok(Outcome::Yielded),
        Request::Sleep { nanoseconds } => {
            let until_ns = baton_arch::nanoseconds().saturating_add(nanoseconds);
            let process = caller!();
            process.state = State::Sleeping { until_ns };
            process.frame_mut().set_syscall_result(0, 0);
            Ok(Outcome::Blocked)
        }
        Request::Clock => Ok(Outcome::Done(baton_arch::nanoseconds())),
        Request::ServiceOption { key, value } => {
            let key = read_name(tasks, id, key.address, key.length)?;
            let process = caller!();
            let command_line = crate::options::boot_info().command_line.as_str();
            let found = baton_boot::options::service_option(command_line, process.name.as_str(), &key)
                .ok_or(Error::NotFound)?;
            if found.len() as u64 > value.length {
                return Err(Error::TooLarge.into());
            }
            process.space.write(value.address, found.as_bytes())?;
            Ok(Outcome::Done(found.len() as u64))
        }
        Request::KernelInfo(buffer) => {
            let mut bytes = [0; baton_abi::KERNEL_INFO_BYTES];
            let length = handover::report::kernel_info().encode(&mut bytes);
            caller!().space.write(buffer.address, &bytes[..length])?;
            Ok(Outcome::Done(length as u64))
        }
        Request::ServiceId => Ok(Outcome::Done(id)),
        Request::SetThreadPointer { value } => {
            // Decoding kept it in the user half, which every architecture's
            // register takes; the caller runs, so the register is its own.
            if !baton_arch::cpu::set_user_thread_pointer(value) {
                return Err(Error::BadAddress.into());
            }
            caller!().thread_pointer = value;
            Ok(Outcome::Done(0))
        }
        // `run` sends each call to its group.
        _ => Err(Error::UnknownSyscall.into()),
    }
}

/// Messages between services.
fn run_ipc(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, CallError> {
    // The caller, found once for the calls that concern only it.
    macro_rules! caller {
        () => {
            tasks.processes.get_mut(&id).ok_or(Error::NotFound)?
        };
    }
    match request {
        Request::Send { target, message } => {
            let message = read_message(tasks, id, message.address)?;
            ipc::post(tasks, id, target, message)?;
            Ok(Outcome::Done(0))
        }
        Request::Receive { message: buffer } | Request::ReceiveUntil { message: buffer, .. } => {
            let deadline_ns = match request {
                Request::ReceiveUntil { deadline_ns, .. } => deadline_ns,
                _ => u64::MAX,
            };
            // Check the buffer before blocking, so a bad pointer fails now.
            caller!().space.write(buffer.address, &[0; 0])?;
            read_message(tasks, id, buffer.address)?;
            if let Some(message) = ipc::take(tasks, id) {
                caller!().space.write(buffer.address, &message.to_bytes())?;
                return Ok(Outcome::Done(message.sender));
            }
            if deadline_ns <= baton_arch::nanoseconds() {
                return Err(Error::WouldBlock.into());
            }
            let process = caller!();
            process.space.write(buffer.address, &Message::default().to_bytes())?;
            process.state = State::Receiving { buffer: buffer.address, deadline_ns };
            Ok(Outcome::Blocked)
        }
        Request::Call { target, message: buffer } => {
            if target == id {
                return Err(Error::InvalidArgument.into());
            }
            let message = read_message(tasks, id, buffer.address)?;
            // The reply will be written here: it must be writable now.
            caller!().space.write(buffer.address, &message.to_bytes())?;
            // Calling before the post, so the callee's kernel side knows
            // this message is a call it may answer.
            caller!().state = State::Calling { target, buffer: buffer.address };
            if let Err(error) = ipc::post(tasks, id, target, message) {
                caller!().state = State::Ready;
                return Err(error.into());
            }
            Ok(Outcome::Blocked)
        }
        Request::Reply { target, message } => {
            let message = read_message(tasks, id, message.address)?;
            ipc::answer(tasks, id, target, message)?;
            Ok(Outcome::Done(0))
        }
        Request::Lookup(buffer) => {
            let name = read_name(tasks, id, buffer.address, buffer.length)?;
            let found = tasks
                .processes
                .values()
                .find(|process| process.name.as_str() == name && !matches!(process.state, State::Exited(_)));
            Ok(found.map(|process| Outcome::Done(process.id)).ok_or(Error::NotFound)?)
        }
        // `run` sends each call to its group.
        _ => Err(Error::UnknownSyscall.into()),
    }
}

/// Preservable memory and the handover.
fn run_kho(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, CallError> {
    // The caller, found once for the calls that concern only it.
    macro_rules! caller {
        () => {
            tasks.processes.get_mut(&id).ok_or(Error::NotFound)?
        };
    }
    match request {
        Request::AllocatePreservable { order } => {
            let process = caller!();
            Ok(Outcome::Done(handover::outgoing::allocate(process.name.as_str(), &mut process.space, order)?))
        }
        Request::AllocatePreservableRun { order, count } => {
            let process = caller!();
            Ok(Outcome::Done(handover::outgoing::allocate_run(
                process.name.as_str(),
                &mut process.space,
                order,
                count,
            )?))
        }
        Request::FreePreservable { address } => {
            // Granted memory stays until its grants end.
            let granted = tasks.processes.get(&id).and_then(|process| process.space.range_containing(address));
            if granted.is_some_and(|(start, size, _)| tasks.grants.covers(id, start, size)) {
                return Err(Error::Busy.into());
            }
            handover::outgoing::free(&mut caller!().space, address)?;
            Ok(Outcome::Done(0))
        }
        Request::PhysicalAddress { address } => {
            Ok(Outcome::Done(handover::outgoing::physical_address(&caller!().space, address)?))
        }
        Request::KhoPreserve(buffer) | Request::KhoUnpreserve(buffer) => {
            let is_preserve = matches!(request, Request::KhoPreserve(_));
            let process = caller!();
            handover::outgoing::preserve(process.name.as_str(), &process.space, buffer, is_preserve)?;
            Ok(Outcome::Done(0))
        }
        Request::KhoPublish(buffer) => {
            let process = caller!();
            handover::outgoing::publish(process.name.as_str(), &process.space, buffer)?;
            Ok(Outcome::Done(0))
        }
        Request::KhoSubscribe => {
            caller!().is_subscribed = true;
            Ok(Outcome::Done(0))
        }
        Request::KhoReady { event, status } => {
            update::acknowledge(id, event, status);
            Ok(Outcome::Done(0))
        }
        Request::KhoFetch => {
            let process = caller!();
            Ok(Outcome::Done(handover::incoming::fetch(process.name.as_str(), &mut process.space)?))
        }
        Request::KhoDone => {
            let process = caller!();
            handover::incoming::done(process.name.as_str(), &mut process.space);
            Ok(Outcome::Done(0))
        }
        Request::KhoRestore { physical, order } => {
            let process = caller!();
            Ok(Outcome::Done(handover::incoming::restore(process.name.as_str(), &mut process.space, physical, order)?))
        }
        Request::KhoRestoreRun { physical, order, count } => {
            let process = caller!();
            let name = process.name;
            Ok(Outcome::Done(handover::incoming::restore_run(
                name.as_str(),
                &mut process.space,
                physical,
                order,
                count,
            )?))
        }
        // `run` sends each call to its group.
        _ => Err(Error::UnknownSyscall.into()),
    }
}

/// What only a privileged service (init) may do.
fn run_privileged(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, CallError> {
    match request {
        Request::Spawn { name, argument } => {
            let _privilege = privilege(tasks, id)?;
            let name = read_name(tasks, id, name.address, name.length)?;
            Ok(Outcome::Done(crate::task::spawn_locked(tasks, &name, argument)?))
        }
        Request::Shutdown(code) => {
            let _privilege = privilege(tasks, id)?;
            log::info!(target: "boot", "shutdown requested by init (code {code})");
            handover::report::log_history();
            // `demo.screenshot=1` or `demo.wait=1`: the machine stays up,
            // services running, until a line arrives on the serial console
            // (a test captures the screen or talks to a service meanwhile):
            // init waits, the main thread ends it (`pending_shutdown`).
            if crate::options::get().is_screenshot_pause {
                log::info!(target: "boot", "paused before shutdown: send a newline on the console to continue");
                PENDING_SHUTDOWN.call_once(|| code);
                if let Some(process) = tasks.processes.get_mut(&id) {
                    process.state = State::WaitingForKernel;
                }
                return Ok(Outcome::Blocked);
            }
            // Output still held for a blackout is written before the end.
            crate::console::flush_held();
            baton_arch::debug_exit::exit(if code == 0 { baton_arch::EXIT_SUCCESS } else { baton_arch::EXIT_FAILURE })
        }
        Request::Update { image } => {
            let privilege = privilege(tasks, id)?;
            update::request(tasks, privilege, id, image)?;
            Ok(Outcome::Blocked)
        }
        // `run` sends each call to its group.
        _ => Err(Error::UnknownSyscall.into()),
    }
}

/// Handles the system call `frame` holds and returns the frame to resume.
pub fn handle(frame: &mut TrapFrame) -> *mut TrapFrame {
    let (number, arguments) = frame.syscall_arguments();
    let mut tasks = TASKS.lock();
    let Some(id) = tasks.current_id() else {
        frame.set_syscall_result(Error::PermissionDenied.number(), 0);
        return frame;
    };
    let outcome =
        Request::decode(number, arguments).map_err(CallError::Abi).and_then(|request| run(&mut tasks, id, request));
    match outcome {
        Ok(Outcome::Done(value)) => {
            frame.set_syscall_result(0, value);
            frame
        }
        Err(error) => {
            let (status, value) = encode_result(Err(Error::from(error)));
            frame.set_syscall_result(status, value);
            frame
        }
        Ok(Outcome::Yielded) => {
            frame.set_syscall_result(0, 0);
            reschedule(&mut tasks, frame)
        }
        Ok(Outcome::Blocked) => reschedule(&mut tasks, frame),
        Ok(Outcome::Exited) => tasks.pick(),
    }
}
