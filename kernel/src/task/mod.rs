//! Services: user-mode processes, each in its own address space, scheduled
//! round-robin on the timer, talking through IPC.
//!
//! Threads are switched by swapping trap frames: every trap saves the
//! interrupted state on the current kernel stack and the handler returns the
//! frame to resume. A service's saved frame is at the top of its kernel
//! stack; the kernel's main thread (boot stack) doubles as the idle thread.
//!
//! The scheduler knows nothing of KHO or updates: what others must hear
//! about (a service's first dispatch, a service's end) reaches them through
//! the [`Hooks`] main installs.

#![deny(unsafe_code)]

mod context;
pub mod ipc;
pub mod share;
#[cfg(feature = "testing")]
mod tests;

use crate::mm::user::{AddressSpace, STACK_BYTES, STACK_TOP, SpaceError, user_attributes};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use arrayvec::ArrayString;
use baton_abi::Message;
use baton_arch::trap::TrapFrame;
use context::{KernelStack, SavedFrame};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::{Mutex, Once};

/// A service's id (1 is init).
pub type ServiceId = u64;

/// Kernel stack per service (order 2: 16 KiB).
const KERNEL_STACK_ORDER: u32 = 2;
/// Messages a service's mailbox holds before senders get `WouldBlock`.
pub const MAILBOX_CAPACITY: usize = 16;
/// Messages one sender may have waiting in one mailbox, so a flooding
/// sender cannot crowd the others out.
pub const MAILBOX_SHARE: usize = 4;
/// Timer ticks per second: how finely sleeps end and services are
/// preempted. At 100 a driver that sleeps "1 ms" between polls slept up to
/// 10, which every packet's round trip paid for (docs/performance.md).
pub const TICK_HZ: u32 = 1000;

/// What a service is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Runnable (in the run queue or running).
    Ready,
    /// Waiting for a message, to be written at `buffer`.
    Receiving {
        /// User address of the message buffer.
        buffer: u64,
        /// When the wait ends without a message (`u64::MAX`: never).
        deadline_ns: u64,
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
    /// Its kernel stack.
    kernel_stack: KernelStack,
    /// Its saved frame while it is not running.
    frame: SavedFrame,
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
    /// The argument it was started with (a restart passes it again).
    pub argument: u64,
    /// Whether it came from the previous kernel, resumed where it stopped.
    pub is_resumed: bool,
    /// Its thread pointer (FS base, TPIDR_EL0) while it is not running;
    /// while it runs the register itself holds it.
    pub thread_pointer: u64,
}

impl Process {
    /// Its saved frame (valid while it is not running).
    pub fn frame_mut(&mut self) -> &mut TrapFrame {
        self.frame.get_mut()
    }

    /// The privilege token, if this service holds it (init).
    pub fn privilege(&self) -> Option<Privilege> {
        self.is_privileged.then_some(Privilege(()))
    }
}

/// Proof that a request comes from a privileged service: only
/// [`Process::privilege`] makes one, so the layers that take it (spawning,
/// updates, shutdown) cannot be reached on behalf of anyone else.
#[derive(Debug, Clone, Copy)]
pub struct Privilege(());

impl Privilege {
    /// The token for in-kernel tests that stand in for init.
    #[cfg(feature = "testing")]
    pub fn for_tests() -> Self {
        Privilege(())
    }
}

/// What the scheduler tells the rest of the kernel (installed by main).
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// A service ended: called with its name and address space before the
    /// space is freed.
    pub on_exit: fn(&str, &mut AddressSpace),
    /// The first service was dispatched (once per boot).
    pub on_first_dispatch: fn(),
}

static HOOKS: Once<Hooks> = Once::new();
static HAS_DISPATCHED: AtomicBool = AtomicBool::new(false);

/// Whether a service has been dispatched since boot.
pub fn has_dispatched() -> bool {
    HAS_DISPATCHED.load(Ordering::Relaxed)
}

/// Installs the hooks (once, before the first service starts).
pub fn set_hooks(hooks: Hooks) {
    HOOKS.call_once(|| hooks);
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
    main_frame: SavedFrame,
    next_id: ServiceId,
    /// Timer ticks since the scheduler started.
    pub ticks: u64,
    /// Exit codes of services that have ended, by id.
    pub exit_codes: BTreeMap<ServiceId, i64>,
    /// Whether the main thread waits for a condition (then it takes turns
    /// with the services instead of running only when they are all idle).
    main_is_polling: bool,
    /// The kernel stack of the last service that ended while running on it.
    retired_stack: Option<KernelStack>,
    /// Regions services granted one another.
    pub grants: share::Grants,
}

/// The main thread's place in the run queue.
const MAIN_THREAD: ServiceId = 0;

/// The scheduler state.
pub static TASKS: Mutex<Tasks> = Mutex::new(Tasks {
    processes: BTreeMap::new(),
    run_queue: VecDeque::new(),
    current: None,
    main_frame: SavedFrame::none(),
    next_id: 1,
    ticks: 0,
    exit_codes: BTreeMap::new(),
    main_is_polling: false,
    retired_stack: None,
    grants: share::Grants::new(),
});

/// Images of the services embedded in the kernel, with their content
/// hashes (the same table is the image's services note).
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/services.rs"));

    /// One embedded service.
    #[derive(Debug, Clone, Copy)]
    pub struct Embedded {
        /// Its name.
        pub name: &'static str,
        /// Its ELF file.
        pub image: &'static [u8],
        /// SHA-256 of the ELF file.
        pub hash: &'static [u8; 32],
        /// It asked to be restarted by every update.
        pub is_always_restarted: bool,
    }

    /// Every embedded service.
    pub fn all() -> impl Iterator<Item = Embedded> {
        SERVICES.iter().map(|(name, image, hash, is_always_restarted)| Embedded {
            name,
            image,
            hash,
            is_always_restarted: *is_always_restarted,
        })
    }

    /// The embedded service called `name`.
    pub fn find(name: &str) -> Option<Embedded> {
        all().find(|service| service.name == name)
    }

    /// The names of the embedded services.
    pub fn names() -> impl Iterator<Item = &'static str> {
        all().map(|service| service.name)
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
    /// Another service has this id.
    IdTaken,
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::UnknownService => f.write_str("no such embedded service"),
            SpawnError::BadImage(error) => write!(f, "invalid service image: {error}"),
            SpawnError::NoMemory => f.write_str("out of memory"),
            SpawnError::AlreadyRunning => f.write_str("a service with this name is running"),
            SpawnError::IdTaken => f.write_str("another service has this id"),
        }
    }
}

/// Loads `image` into a new address space; returns it and the entry point.
fn load(image: &[u8]) -> Result<(AddressSpace, u64), SpawnError> {
    let elf = baton_image::parse(image, machine()).map_err(SpawnError::BadImage)?;
    elf.validate_service(baton_abi::USER_ADDRESS_LIMIT).map_err(SpawnError::BadImage)?;
    let mut space = AddressSpace::new().map_err(|error| {
        log::warn!(target: "sched", "cannot create an address space: {error:?}");
        SpawnError::NoMemory
    })?;
    for segment in elf.segments() {
        let start = segment.virt_start & !(baton_abi::PAGE_SIZE - 1);
        let end = (segment.virt_start + segment.memory_bytes).next_multiple_of(baton_abi::PAGE_SIZE);
        let attributes = user_attributes(segment.is_writable, segment.is_executable);
        let data = elf.segment_data(segment).unwrap_or(&[]);
        let offset = (segment.virt_start - start) as usize;
        if let Err(error) = space.map_filled(start, end - start, attributes, offset, data) {
            log::warn!(target: "sched", "cannot map segment at {start:#x}: {error:?}");
            return Err(SpawnError::NoMemory);
        }
    }
    if space.map_new(STACK_TOP - STACK_BYTES, STACK_BYTES, user_attributes(true, false)).is_err() {
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
    // `insert` moves `next_id` past the id it adds.
    let id = tasks.next_id;
    spawn_as(tasks, name, argument, id)?;
    Ok(id)
}

/// Starts the embedded service `name` under `id` (a service restarted by
/// an update keeps its id, so its callers keep reaching it).
pub fn spawn_as(tasks: &mut Tasks, name: &str, argument: u64, id: ServiceId) -> Result<(), SpawnError> {
    let image = embedded::find(name).ok_or(SpawnError::UnknownService)?.image;
    let is_running = tasks
        .processes
        .values()
        .any(|process| process.name.as_str() == name && !matches!(process.state, State::Exited(_)));
    if is_running {
        return Err(SpawnError::AlreadyRunning);
    }
    if tasks.processes.contains_key(&id) {
        return Err(SpawnError::IdTaken);
    }
    let (space, entry) = load(image)?;
    let start = Resumable {
        id,
        name,
        space,
        registers: None,
        entry: (entry, argument),
        state: State::Ready,
        mailbox: VecDeque::new(),
        answerable: BTreeSet::new(),
        is_subscribed: false,
        is_privileged: name == "init",
        thread_pointer: 0,
    };
    tasks.insert(start)?;
    log::info!(target: "sched", "started service '{name}' (id {id})");
    Ok(())
}

/// A process to add to the scheduler: a fresh start, or one resumed from
/// the previous kernel's description of it.
pub struct Resumable<'a> {
    /// Its id.
    pub id: ServiceId,
    /// Its name.
    pub name: &'a str,
    /// Its address space, already holding its memory.
    pub space: AddressSpace,
    /// The user registers it resumes with (`None`: it starts at `entry`).
    pub registers: Option<baton_arch::UserRegisters>,
    /// Entry point and start argument (the argument is also recorded for a
    /// resumed one, so a later update can restart it).
    pub entry: (u64, u64),
    /// What it is doing.
    pub state: State,
    /// Messages waiting for it.
    pub mailbox: VecDeque<Message>,
    /// Callers it may answer.
    pub answerable: BTreeSet<ServiceId>,
    /// Subscribed to lifecycle events.
    pub is_subscribed: bool,
    /// May use the privileged calls.
    pub is_privileged: bool,
    /// Its thread pointer (0 for a fresh start).
    pub thread_pointer: u64,
}

impl Tasks {
    /// Adds a process; it runs when its state lets it. Ids are never reused:
    /// the next spawned service gets a higher one.
    pub fn insert(&mut self, start: Resumable<'_>) -> Result<(), SpawnError> {
        if self.processes.contains_key(&start.id) || start.id == MAIN_THREAD {
            return Err(SpawnError::IdTaken);
        }
        let mut kernel_stack = KernelStack::allocate(KERNEL_STACK_ORDER).ok_or(SpawnError::NoMemory)?;
        let (entry, argument) = start.entry;
        let frame = match &start.registers {
            None => TrapFrame::new_user(entry, STACK_TOP, argument),
            Some(registers) => TrapFrame::resume_user(registers),
        };
        let frame = kernel_stack.start(frame);
        let process = Process {
            id: start.id,
            name: ArrayString::from(start.name).unwrap_or_default(),
            space: start.space,
            kernel_stack,
            frame,
            state: start.state,
            mailbox: start.mailbox,
            answerable: start.answerable,
            is_subscribed: start.is_subscribed,
            is_privileged: start.is_privileged,
            argument,
            is_resumed: start.registers.is_some(),
            thread_pointer: start.thread_pointer,
        };
        let is_ready = process.state == State::Ready;
        self.processes.insert(start.id, process);
        self.next_id = self.next_id.max(start.id + 1);
        if is_ready {
            self.run_queue.push_back(start.id);
        }
        Ok(())
    }
}

#[cfg(feature = "testing")]
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

    /// Ends `caller`'s blocked call with `error` and makes it runnable.
    pub fn fail_call(&mut self, caller: ServiceId, error: baton_abi::Error) {
        if let Some(process) = self.processes.get_mut(&caller) {
            let (status, value) = baton_abi::error::encode_result(Err(error));
            process.frame_mut().set_syscall_result(status, value);
        }
        self.wake(caller);
    }

    /// Whether a service waits in the run queue.
    pub fn has_ready_service(&self) -> bool {
        self.run_queue.iter().any(|&id| id != MAIN_THREAD)
    }

    /// Records the running service's thread pointer from the register
    /// (a service on aarch64 may have written it since it last stopped).
    pub fn save_current_thread_pointer(&mut self) {
        if let Some(process) = self.current.and_then(|id| self.processes.get_mut(&id)) {
            process.thread_pointer = baton_arch::cpu::user_thread_pointer();
        }
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
                    process.frame = SavedFrame::from_trap(frame);
                    process.thread_pointer = baton_arch::cpu::user_thread_pointer();
                    if process.state == State::Ready {
                        self.run_queue.push_back(id);
                    }
                }
            }
            None => {
                self.main_frame = SavedFrame::from_trap(frame);
                if self.main_is_polling && !self.run_queue.contains(&MAIN_THREAD) {
                    self.run_queue.push_back(MAIN_THREAD);
                }
            }
        }
    }

    /// Picks what runs next and returns its frame.
    pub fn pick(&mut self) -> *mut TrapFrame {
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
            if !HAS_DISPATCHED.swap(true, Ordering::Relaxed)
                && let Some(hooks) = HOOKS.get()
            {
                (hooks.on_first_dispatch)();
            }
            baton_arch::trap::set_kernel_stack(process.kernel_stack.top());
            context::switch_address_space(&process.space);
            // Checked where it was set (the call, or a resumed description).
            baton_arch::cpu::set_user_thread_pointer(process.thread_pointer);
            return process.frame.as_ptr();
        }
        self.current = None;
        self.main_frame.as_ptr()
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
        // Before any of its memory can be freed: no peer maps it any more.
        self.end_shares(id);
        let callers: Vec<ServiceId> = self
            .processes
            .values()
            .filter(|other| matches!(other.state, State::Calling { target, .. } if target == id))
            .map(|other| other.id)
            .collect();
        for caller in callers {
            self.fail_call(caller, baton_abi::Error::PeerGone);
        }
        // A call it made and nobody answered can no longer be answered.
        for other in self.processes.values_mut() {
            other.answerable.remove(&id);
        }
        if let Some(hooks) = HOOKS.get() {
            (hooks.on_exit)(process.name.as_str(), &mut process.space);
        }
        let Process { space, kernel_stack, .. } = process;
        drop(space);
        if self.current == Some(id) {
            // This trap runs on its kernel stack (it exited or faulted):
            // the stack is freed at the next end, when nothing runs on it.
            self.current = None;
            self.retired_stack = Some(kernel_stack);
        }
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
    // Sleeps that end, and receives whose deadline passed (one pass).
    let due: Vec<(ServiceId, bool)> = tasks
        .processes
        .values()
        .filter_map(|process| match process.state {
            State::Sleeping { until_ns } if until_ns <= now => Some((process.id, false)),
            State::Receiving { deadline_ns, .. } if deadline_ns <= now => Some((process.id, true)),
            _ => None,
        })
        .collect();
    for (id, is_receive) in due {
        if is_receive {
            tasks.fail_call(id, baton_abi::Error::WouldBlock);
        } else {
            tasks.wake(id);
        }
    }
    let next = reschedule(&mut tasks, frame);
    drop(tasks);
    crate::mm::refill_heap_reserve();
    next
}

/// A device interrupt for driver `owner` (its function at `address`, MSI-X
/// entry `entry`): a message from the kernel, counted into one already
/// waiting in its mailbox for the same entry so a busy device cannot fill
/// it; then the next thread runs (the driver, if it was waiting).
pub fn interrupt(frame: *mut TrapFrame, owner: ServiceId, address: u16, entry: u16) -> *mut TrapFrame {
    let mut tasks = TASKS.lock();
    let (address, entry) = (u64::from(address), u64::from(entry));
    let is_irq = |message: &Message| {
        message.sender == baton_abi::message::KERNEL_SENDER
            && message.label == baton_abi::IRQ_LABEL
            && message.words[..2] == [address, entry]
    };
    let queued = tasks.processes.get_mut(&owner).and_then(|process| process.mailbox.iter_mut().find(|m| is_irq(m)));
    match queued {
        Some(message) => message.words[2] = message.words[2].saturating_add(1),
        None => {
            let message = Message::new(baton_abi::IRQ_LABEL, [address, entry, 1, 0, 0, 0]);
            let _ = ipc::post(&mut tasks, baton_abi::message::KERNEL_SENDER, owner, message);
        }
    }
    reschedule(&mut tasks, frame)
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
        // Output held through the last blackout drains a chunk at a time
        // meanwhile. Services that are ready run first; only when none is,
        // wait for an interrupt.
        let has_drained = crate::console::drain_some();
        if TASKS.lock().has_ready_service() {
            baton_arch::cpu::yield_to_scheduler();
        } else if !has_drained {
            baton_arch::cpu::wait_for_interrupt();
            baton_arch::cpu::disable_interrupts();
        }
    };
    TASKS.lock().main_is_polling = false;
    met
}

/// Starts the timer and interrupt controller for scheduling (main has set
/// up how the interrupt controller is reached).
pub fn start_scheduler(info: &baton_boot::BootInfo) -> Result<(), baton_arch::InterruptError> {
    baton_arch::interrupts::init(info)?;
    baton_arch::interrupts::start_timer(TICK_HZ);
    Ok(())
}

/// Writes a message into service `id`'s buffer at `buffer` and sets its
/// syscall result; used when delivering to a blocked receiver.
pub(crate) fn deliver(process: &mut Process, buffer: u64, message: &Message, value: u64) -> Result<(), SpaceError> {
    process.space.write(buffer, &message.to_bytes())?;
    process.frame_mut().set_syscall_result(0, value);
    Ok(())
}
