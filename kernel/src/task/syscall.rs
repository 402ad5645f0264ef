//! The system-call boundary: decodes the request (baton-abi), checks every
//! user pointer against the caller's page tables, runs the call, and turns
//! typed errors into the ABI's error numbers.

use super::{State, TASKS, Tasks, ipc, reschedule};
use baton_abi::error::encode_result;
use baton_abi::{Error, Message, Request};
use baton_arch::trap::TrapFrame;

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

fn read_message(tasks: &Tasks, id: u64, address: u64) -> Result<Message, Error> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let bytes = process.space.read(address, baton_abi::message::MESSAGE_BYTES as u64)?;
    let mut array = [0u8; baton_abi::message::MESSAGE_BYTES];
    array.copy_from_slice(&bytes);
    Ok(Message::from_bytes(&array))
}

fn read_name(tasks: &Tasks, id: u64, address: u64, length: u64) -> Result<alloc::string::String, Error> {
    let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
    let bytes = process.space.read(address, length)?;
    alloc::string::String::from_utf8(bytes).map_err(|_| Error::InvalidArgument)
}

fn run(tasks: &mut Tasks, id: u64, request: Request) -> Result<Outcome, Error> {
    match request {
        Request::Log(buffer) => {
            let process = tasks.processes.get(&id).ok_or(Error::NotFound)?;
            let bytes = process.space.read(buffer.address, buffer.length)?;
            let text = core::str::from_utf8(&bytes).unwrap_or("<not UTF-8>");
            log::info!(target: "svc", "[{}] {}", process.name.as_str(), text.trim_end());
            Ok(Outcome::Done(0))
        }
        Request::Exit(code) => {
            let name = tasks.processes.get(&id).map(|process| process.name).unwrap_or_default();
            log::info!(target: "sched", "service '{}' (id {id}) exited with code {}", name.as_str(), code as i64);
            tasks.end(id, code as i64);
            Ok(Outcome::Exited)
        }
        Request::Yield => Ok(Outcome::Yielded),
        Request::Sleep { nanoseconds } => {
            let until_ns = baton_arch::nanoseconds().saturating_add(nanoseconds);
            let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
            process.state = State::Sleeping { until_ns };
            process.frame_mut().set_syscall_result(0, 0);
            Ok(Outcome::Blocked)
        }
        Request::Clock => Ok(Outcome::Done(baton_arch::nanoseconds())),
        Request::ServiceId => Ok(Outcome::Done(id)),
        Request::Send { target, message } => {
            let message = read_message(tasks, id, message.address)?;
            ipc::post(tasks, id, target, message)?;
            Ok(Outcome::Done(0))
        }
        Request::Receive { message: buffer } => {
            // Check the buffer before blocking, so a bad pointer fails now.
            tasks.processes.get(&id).ok_or(Error::NotFound)?.space.write(buffer.address, &[0; 0])?;
            read_message(tasks, id, buffer.address)?;
            if let Some(message) = ipc::take(tasks, id) {
                let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
                process.space.write(buffer.address, &message.to_bytes())?;
                return Ok(Outcome::Done(message.sender));
            }
            let process = tasks.processes.get_mut(&id).ok_or(Error::NotFound)?;
            process.space.write(buffer.address, &Message::default().to_bytes())?;
            process.state = State::Receiving { buffer: buffer.address };
            Ok(Outcome::Blocked)
        }
        Request::Call { target, message: buffer } => {
            if target == id {
                return Err(Error::InvalidArgument);
            }
            let message = read_message(tasks, id, buffer.address)?;
            // The reply will be written here: it must be writable now.
            tasks.processes.get(&id).ok_or(Error::NotFound)?.space.write(buffer.address, &message.to_bytes())?;
            // Calling before the post, so the callee's kernel side knows
            // this message is a call it may answer.
            tasks.processes.get_mut(&id).ok_or(Error::NotFound)?.state =
                State::Calling { target, buffer: buffer.address };
            if let Err(error) = ipc::post(tasks, id, target, message) {
                tasks.processes.get_mut(&id).ok_or(Error::NotFound)?.state = State::Ready;
                return Err(error);
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
            found.map(|process| Outcome::Done(process.id)).ok_or(Error::NotFound)
        }
        Request::Spawn { name, argument } => {
            if !tasks.processes.get(&id).is_some_and(|process| process.is_privileged) {
                return Err(Error::PermissionDenied);
            }
            let name = read_name(tasks, id, name.address, name.length)?;
            Ok(Outcome::Done(super::spawn_locked(tasks, &name, argument)?))
        }
        Request::AllocatePreservable { order } => Ok(Outcome::Done(crate::kho_out::allocate(tasks, id, order)?)),
        Request::AllocatePreservableRun { order, count } => {
            Ok(Outcome::Done(crate::kho_out::allocate_run(tasks, id, order, count)?))
        }
        Request::FreePreservable { address } => crate::kho_out::free(tasks, id, address).map(|()| Outcome::Done(0)),
        Request::PhysicalAddress { address } => {
            Ok(Outcome::Done(crate::kho_out::physical_address(tasks, id, address)?))
        }
        Request::KhoPreserve(buffer) => crate::kho_out::preserve(tasks, id, buffer, true).map(|()| Outcome::Done(0)),
        Request::KhoUnpreserve(buffer) => crate::kho_out::preserve(tasks, id, buffer, false).map(|()| Outcome::Done(0)),
        Request::KhoPublish(buffer) => crate::kho_out::publish(tasks, id, buffer).map(|()| Outcome::Done(0)),
        Request::KhoSubscribe => {
            tasks.processes.get_mut(&id).ok_or(Error::NotFound)?.is_subscribed = true;
            Ok(Outcome::Done(0))
        }
        Request::KhoReady { event, status } => {
            crate::update::acknowledge(tasks, id, event, status).map(|()| Outcome::Done(0))
        }
        Request::KhoFetch => Ok(Outcome::Done(crate::kho_in::fetch(tasks, id)?)),
        Request::KhoDone => crate::kho_in::done(tasks, id).map(|()| Outcome::Done(0)),
        Request::Shutdown(code) => {
            if !tasks.processes.get(&id).is_some_and(|process| process.is_privileged) {
                return Err(Error::PermissionDenied);
            }
            log::info!(target: "boot", "shutdown requested by init (code {code})");
            crate::kho_in::log_history();
            // `demo.screenshot=1`: the screen stays as it is until a line
            // arrives on the serial console, so a test can capture it.
            if crate::options::get().is_screenshot_pause {
                log::info!(target: "boot", "paused before shutdown: send a newline on the console to continue");
                crate::console::wait_for_line(60_000_000_000);
            }
            baton_arch::debug_exit::exit(if code == 0 {
                crate::ktest::EXIT_SUCCESS
            } else {
                crate::ktest::EXIT_FAILURE
            })
        }
        Request::KhoRestore { physical, order } => {
            Ok(Outcome::Done(crate::kho_in::restore(tasks, id, physical, order)?))
        }
        Request::KhoRestoreRun { physical, order, count } => {
            Ok(Outcome::Done(crate::kho_in::restore_run(tasks, id, physical, order, count)?))
        }
        Request::Update { image } => {
            if !tasks.processes.get(&id).is_some_and(|process| process.is_privileged) {
                return Err(Error::PermissionDenied);
            }
            crate::update::request(tasks, id, image)?;
            Ok(Outcome::Blocked)
        }
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
    let outcome = Request::decode(number, arguments).and_then(|request| run(&mut tasks, id, request));
    match outcome {
        Ok(Outcome::Done(value)) => {
            frame.set_syscall_result(0, value);
            frame
        }
        Err(error) => {
            let (status, value) = encode_result(Err(error));
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
