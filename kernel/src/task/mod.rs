//! Services: user-mode processes, each in its own address space, scheduled
//! round-robin on the timer, talking through IPC.
//!
//! Threads are switched by swapping trap frames: every trap saves the
//! interrupted state on the current kernel stack and the handler returns the
//! frame to resume. A service's saved frame is at the top of its kernel
//! stack; the kernel's main thread (boot stack) doubles as the idle thread.

pub mod ipc;
pub mod syscall;
mod tests;
pub mod user_memory;

use crate::mm::direct_map;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use arrayvec::ArrayString;
use baton_abi::{Error, Message};
use baton_arch::trap::TrapFrame;
use core::ptr::null_mut;
use spin::Mutex;
use user_memory::{AddressSpace, STACK_BYTES, STACK_TOP, user_attributes};

/// A service's id (1 is init).
pub type ServiceId = u64;

/// Kernel stack per service (order 2: 16 KiB).
const KERNEL_STACK_ORDER: u32 = 2;
const KERNEL_STACK_BYTES: u64 = 4096 << KERNEL_STACK_ORDER;
/// Messages a service's mailbox holds before senders get `WouldBlock`.
pub const MAILBOX_CAPACITY: usize = 16;
/// Messages one sender may have waiting in one mailbox, so a flooding
/// sender cannot crowd the others out.
pub const MAILBOX_SHARE: usize = 4;
/// Timer ticks per second.
pub const TICK_HZ: u32 = 100;

/// What a service is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Runnable (in the run queue or running).
    Ready,
    /// Waiting for a message, to be written at `buffer`.
    Receiving {
        /// User address of the message buffer.
        buffer: u64,
    },
    /// Waiting for `target` to reply; the reply goes to `buffer`.
    Calling {
        /// The service called.
        target: ServiceId,
        /// User address of the message buffer.
        buffer: u64,
    },
    /// Sleeping until the clock reaches `until_ns`.
    Sleeping {
        /// Wake-up time.
        until_ns: u64,
    },
    /// Waiting for the kernel to finish something it asked for (an update).
    WaitingForKernel,
    /// Finished with this code.
    Exited(i64),
}

/// One service.
pub struct Process {
    /// Its id.
    pub id: ServiceId,
    /// Its name (also its KHO user name).
    pub name: ArrayString<{ baton_abi::MAX_NAME_BYTES }>,
    /// Its address space.
    pub space: AddressSpace,
    /// Physical address of its kernel stack.
    kernel_stack: u64,
    /// Its saved frame while it is not running.
    frame: *mut TrapFrame,
    /// What it is doing.
    pub state: State,
    /// Messages waiting for it.
    pub mailbox: VecDeque<Message>,
    /// Callers whose `call` it has received and not yet answered: the only
    /// services its `reply` may go to.
    pub answerable: BTreeSet<ServiceId>,
    /// Whether it asked for update lifecycle events.
    pub is_subscribed: bool,
    /// Whether it may spawn services and request updates.
    pub is_privileged: bool,
}

// SAFETY: `frame` points into the process's own kernel stack, which only the
// single CPU touches, always under the `TASKS` lock.
unsafe impl Send for Process {}

impl Process {
    fn kernel_stack_top(&self) -> u64 {
        direct_map::to_virtual(self.kernel_stack) + KERNEL_STACK_BYTES
    }

    /// Its saved frame (valid while it is not running).
    pub fn frame_mut(&mut self) -> &mut TrapFrame {
        // SAFETY: `frame` points at the frame saved at the top of this
        // process's kernel stack; the process is not running, so nothing
        // else uses it, and the `TASKS` lock is held by the caller.
        unsafe { &mut *self.frame }
    }
}

/// Every service and the run queue.
pub struct Tasks {
    /// Services by id.
    pub processes: BTreeMap<ServiceId, Process>,
    /// Ready services waiting for the CPU.
    run_queue: VecDeque<ServiceId>,
    /// The running service, if any (None: the main thread runs).
    current: Option<ServiceId>,
    /// The main thread's saved frame while services run.
    main_frame: *mut TrapFrame,
    next_id: ServiceId,
    /// Timer ticks since the scheduler started.
    pub ticks: u64,
    /// Exit codes of services that have ended, by id.
    pub exit_codes: BTreeMap<ServiceId, i64>,
    /// Whether the main thread waits for a condition (then it takes turns
    /// with the services instead of running only when they are all idle).
    main_is_polling: bool,
}

/// The main thread's place in the run queue.
const MAIN_THREAD: ServiceId = 0;

// SAFETY: the raw frame pointers are only used by the single CPU under the
// `TASKS` lock.
unsafe impl Send for Tasks {}

/// The scheduler state.
pub static TASKS: Mutex<Tasks> = Mutex::new(Tasks {
    processes: BTreeMap::new(),
    run_queue: VecDeque::new(),
    current: None,
    main_frame: null_mut(),
    next_id: 1,
    ticks: 0,
    exit_codes: BTreeMap::new(),
    main_is_polling: false,
});

/// Images of the services embedded in the kernel.
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/services.rs"));

    /// The embedded image called `name`.
    pub fn find(name: &str) -> Option<&'static [u8]> {
        SERVICES.iter().find(|(service, _)| *service == name).map(|(_, image)| *image)
    }
}

fn machine() -> baton_image::Machine {
    if cfg!(target_arch = "x86_64") { baton_image::Machine::X86_64 } else { baton_image::Machine::Aarch64 }
}

/// Why a service could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No embedded service has this name.
    UnknownService,
    /// The image failed validation.
    BadImage(baton_image::ImageError),
    /// Out of memory.
    NoMemory,
    /// A running service already has this name.
    AlreadyRunning,
}

impl From<SpawnError> for Error {
    fn from(error: SpawnError) -> Self {
        match error {
            SpawnError::UnknownService => Error::NotFound,
            SpawnError::BadImage(_) => Error::InvalidArgument,
            SpawnError::NoMemory => Error::NoMemory,
            SpawnError::AlreadyRunning => Error::AlreadyExists,
        }
    }
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::UnknownService => f.write_str("no such embedded service"),
            SpawnError::BadImage(error) => write!(f, "invalid service image: {error}"),
            SpawnError::NoMemory => f.write_str("out of memory"),
            SpawnError::AlreadyRunning => f.write_str("a service with this name is running"),
        }
    }
}

/// Loads `image` into a new address space; returns it and the entry point.
fn load(image: &[u8]) -> Result<(AddressSpace, u64), SpawnError> {
    let elf = baton_image::parse(image, machine()).map_err(SpawnError::BadImage)?;
    elf.validate_service(baton_abi::USER_ADDRESS_LIMIT).map_err(SpawnError::BadImage)?;
    let mut space = AddressSpace::new().map_err(|error| {
        log::warn!(target: "sched", "cannot create an address space: {error}");
        SpawnError::NoMemory
    })?;
    for segment in elf.segments() {
        let start = segment.virt_start & !(baton_abi::PAGE_SIZE - 1);
        let end = (segment.virt_start + segment.memory_bytes).next_multiple_of(baton_abi::PAGE_SIZE);
        let attributes = user_attributes(segment.is_writable, segment.is_executable);
        let data = elf.segment_data(segment).unwrap_or(&[]);
        let offset = (segment.virt_start - start) as usize;
        if let Err(error) = space.map_filled(start, end - start, attributes, offset, data) {
            log::warn!(target: "sched", "cannot map segment at {start:#x}: {error}");
            space.destroy();
            return Err(SpawnError::NoMemory);
        }
    }
    if space.map_new(STACK_TOP - STACK_BYTES, STACK_BYTES, user_attributes(true, false)).is_err() {
        space.destroy();
        return Err(SpawnError::NoMemory);
    }
    Ok((space, elf.entry()))
}

/// Starts the embedded service `name` with `argument` in its first register.
pub fn spawn(name: &str, argument: u64) -> Result<ServiceId, SpawnError> {
    spawn_locked(&mut TASKS.lock(), name, argument)
}

/// [`spawn`] with the scheduler already locked (from a system call).
pub fn spawn_locked(tasks: &mut Tasks, name: &str, argument: u64) -> Result<ServiceId, SpawnError> {
    let image = embedded::find(name).ok_or(SpawnError::UnknownService)?;
    let is_running = tasks
        .processes
        .values()
        .any(|process| process.name.as_str() == name && !matches!(process.state, State::Exited(_)));
    if is_running {
        return Err(SpawnError::AlreadyRunning);
    }
    let (space, entry) = load(image)?;
    let Some(kernel_stack) = crate::mm::allocate_pages(KERNEL_STACK_ORDER) else {
        space.destroy();
        return Err(SpawnError::NoMemory);
    };
    let id = tasks.next_id;
    tasks.next_id += 1;
    let mut process = Process {
        id,
        name: ArrayString::from(name).unwrap_or_default(),
        space,
        kernel_stack,
        frame: null_mut(),
        state: State::Ready,
        mailbox: VecDeque::new(),
        answerable: BTreeSet::new(),
        is_subscribed: false,
        is_privileged: name == "init",
    };
    let frame = (process.kernel_stack_top() - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    // SAFETY: the frame lies at the top of the freshly allocated kernel
    // stack, which nothing else uses.
    unsafe { frame.write(TrapFrame::new_user(entry, STACK_TOP, argument)) };
    process.frame = frame;
    tasks.processes.insert(id, process);
    tasks.run_queue.push_back(id);
    log::info!(target: "sched", "started service '{name}' (id {id})");
    Ok(id)
}

/// The id of the live service called `name`.
pub fn lookup(name: &str) -> Option<ServiceId> {
    let tasks = TASKS.lock();
    tasks
        .processes
        .values()
        .find(|process| process.name.as_str() == name && !matches!(process.state, State::Exited(_)))
        .map(|process| process.id)
}

/// The exit code of service `id`, once it has ended.
pub fn exit_code(id: ServiceId) -> Option<i64> {
    TASKS.lock().exit_codes.get(&id).copied()
}

/// Whether `id` has nothing left to do with what it was sent: it waits for
/// a message with an empty mailbox, or it has exited.
pub fn is_idle(id: ServiceId) -> bool {
    let tasks = TASKS.lock();
    match tasks.processes.get(&id) {
        Some(process) => match process.state {
            State::Receiving { .. } => process.mailbox.is_empty(),
            State::Exited(_) => true,
            _ => false,
        },
        None => true,
    }
}

impl Tasks {
    /// Makes `id` runnable (if it is not already).
    pub fn wake(&mut self, id: ServiceId) {
        if let Some(process) = self.processes.get_mut(&id)
            && !matches!(process.state, State::Exited(_))
        {
            process.state = State::Ready;
            if self.current != Some(id) && !self.run_queue.contains(&id) {
                self.run_queue.push_back(id);
            }
        }
    }

    /// Whether a service waits in the run queue.
    pub fn has_ready_service(&self) -> bool {
        self.run_queue.iter().any(|&id| id != MAIN_THREAD)
    }

    /// The running service's id.
    pub fn current_id(&self) -> Option<ServiceId> {
        self.current
    }

    /// Saves the interrupted context: the running service's frame, or the
    /// main thread's.
    fn save(&mut self, frame: *mut TrapFrame) {
        match self.current {
            Some(id) => {
                if let Some(process) = self.processes.get_mut(&id) {
                    process.frame = frame;
                    if process.state == State::Ready {
                        self.run_queue.push_back(id);
                    }
                }
            }
            None => {
                self.main_frame = frame;
                if self.main_is_polling && !self.run_queue.contains(&MAIN_THREAD) {
                    self.run_queue.push_back(MAIN_THREAD);
                }
            }
        }
    }

    /// Picks what runs next and returns its frame.
    fn pick(&mut self) -> *mut TrapFrame {
        while let Some(id) = self.run_queue.pop_front() {
            if id == MAIN_THREAD {
                break;
            }
            let Some(process) = self.processes.get(&id) else {
                continue;
            };
            if process.state != State::Ready {
                continue;
            }
            self.current = Some(id);
            crate::kho_in::note_first_service();
            baton_arch::trap::set_kernel_stack(process.kernel_stack_top());
            // SAFETY: the address space shares the kernel half (x86_64) or is
            // only the user half (aarch64), so the kernel stays mapped.
            unsafe { baton_arch::paging::activate_user(process.space.root()) };
            return process.frame;
        }
        self.current = None;
        self.main_frame
    }

    /// Ends service `id` with `code`: frees its memory and wakes callers
    /// waiting on it.
    pub fn end(&mut self, id: ServiceId, code: i64) {
        let Some(mut process) = self.processes.remove(&id) else {
            return;
        };
        process.state = State::Exited(code);
        self.exit_codes.insert(id, code);
        self.run_queue.retain(|&queued| queued != id);
        let callers: Vec<ServiceId> = self
            .processes
            .values()
            .filter(|other| matches!(other.state, State::Calling { target, .. } if target == id))
            .map(|other| other.id)
            .collect();
        for caller in callers {
            if let Some(other) = self.processes.get_mut(&caller) {
                let (status, value) = baton_abi::error::encode_result(Err(Error::PeerGone));
                other.frame_mut().set_syscall_result(status, value);
            }
            self.wake(caller);
        }
        // A call it made and nobody answered can no longer be answered.
        for other in self.processes.values_mut() {
            other.answerable.remove(&id);
        }
        crate::kho_out::forget_service(process.name.as_str(), &mut process.space);
        if self.current == Some(id) {
            self.current = None;
        }
        let stack = process.kernel_stack;
        process.space.destroy();
        crate::mm::free_pages(stack, KERNEL_STACK_ORDER);
    }
}

/// Called on every trap that may switch threads: saves `frame` as the
/// interrupted context and returns the frame to resume.
pub fn reschedule(tasks: &mut Tasks, frame: *mut TrapFrame) -> *mut TrapFrame {
    tasks.save(frame);
    tasks.pick()
}

/// The timer tick: wakes sleepers and preempts the running service.
pub fn tick(frame: *mut TrapFrame) -> *mut TrapFrame {
    let mut tasks = TASKS.lock();
    tasks.ticks += 1;
    let now = baton_arch::nanoseconds();
    let due: Vec<ServiceId> = tasks
        .processes
        .values()
        .filter(|process| matches!(process.state, State::Sleeping { until_ns } if until_ns <= now))
        .map(|process| process.id)
        .collect();
    for id in due {
        tasks.wake(id);
    }
    let next = reschedule(&mut tasks, frame);
    drop(tasks);
    crate::mm::refill_heap_reserve();
    next
}

/// Ends the running service because of a fault and returns the next frame.
pub fn kill_current(frame: *mut TrapFrame, reason: core::fmt::Arguments<'_>) -> *mut TrapFrame {
    let mut tasks = TASKS.lock();
    let Some(id) = tasks.current_id() else {
        return frame;
    };
    let name = tasks.processes.get(&id).map(|process| process.name).unwrap_or_default();
    log::warn!(target: "sched", "service '{}' (id {id}) stopped: {reason}", name.as_str());
    tasks.end(id, -1);
    tasks.pick()
}

/// Runs services until `condition` holds, with the main thread idling in
/// between. Returns false if `timeout_ns` passes first.
pub fn run_until(timeout_ns: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = baton_arch::nanoseconds().saturating_add(timeout_ns);
    TASKS.lock().main_is_polling = true;
    let met = loop {
        if condition() {
            break true;
        }
        if baton_arch::nanoseconds() > deadline {
            break false;
        }
        // Services that are ready run first; only when none is, wait for
        // an interrupt.
        if TASKS.lock().has_ready_service() {
            baton_arch::cpu::yield_to_scheduler();
        } else {
            baton_arch::cpu::wait_for_interrupt();
            baton_arch::cpu::disable_interrupts();
        }
    };
    TASKS.lock().main_is_polling = false;
    met
}

/// Starts the timer and interrupt controller for scheduling.
pub fn start_scheduler(info: &baton_boot::BootInfo) -> Result<(), baton_arch::InterruptError> {
    #[cfg(target_arch = "x86_64")]
    if !baton_arch::interrupts::has_x2apic() {
        // An older CPU: its local APIC is reached through memory, in the
        // uncached firmware window.
        let phys = baton_arch::interrupts::apic_base_phys();
        let virt =
            crate::mm::firmware_address(phys, baton_abi::PAGE_SIZE).ok_or(baton_arch::InterruptError::CannotMap)?;
        log::info!(target: "boot", "interrupts: no x2APIC; local APIC registers at {phys:#x} (xAPIC mode)");
        // SAFETY: the firmware window maps the first 4 GiB uncached for the
        // kernel's lifetime, and the APIC page lies there.
        unsafe { baton_arch::interrupts::use_xapic(virt) };
    }
    baton_arch::interrupts::init(info)?;
    baton_arch::interrupts::start_timer(TICK_HZ);
    Ok(())
}

/// Writes a message into service `id`'s buffer at `buffer` and sets its
/// syscall result; used when delivering to a blocked receiver.
pub(crate) fn deliver(process: &mut Process, buffer: u64, message: &Message, value: u64) -> Result<(), Error> {
    process.space.write(buffer, &message.to_bytes())?;
    process.frame_mut().set_syscall_result(0, value);
    Ok(())
}
