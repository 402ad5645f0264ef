//! IPC between services: small fixed-size messages, copied by the kernel.
//!
//! `send` queues a message (or hands it straight to a waiting receiver);
//! `receive` takes one or blocks; `call` sends and blocks until the callee
//! `reply`s. Mailboxes are bounded, so a flooding sender gets `WouldBlock`
//! instead of exhausting kernel memory, and one sender may fill only its
//! share of a mailbox, so it cannot crowd out the others. The kernel's own
//! lifecycle events are always delivered.
//!
//! A `reply` goes only to a caller whose `call` the replier has received:
//! a service that both sent plain messages and then called gets the answer
//! to its call, never a reply meant for one of its earlier sends.

use super::{MAILBOX_CAPACITY, MAILBOX_SHARE, ServiceId, State, Tasks, deliver};
use baton_abi::message::KERNEL_SENDER;
use baton_abi::{Error, Message};

impl core::fmt::Display for IpcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IpcError::NoSuchService => "no such service",
            IpcError::WouldBlock => "its mailbox is full",
            IpcError::NotCalling => "it is not waiting in a call",
            IpcError::NotYourCaller => "it is calling another service",
            IpcError::NotReceived => "its call was not received yet",
        })
    }
}

/// Why a message could not be sent or a reply given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcError {
    /// No live service has this id.
    NoSuchService,
    /// The receiver's mailbox (or the sender's share of it) is full.
    WouldBlock,
    /// The service replied to is not waiting in a call.
    NotCalling,
    /// The caller is calling another service.
    NotYourCaller,
    /// The replier has not received this caller's call yet.
    NotReceived,
}

/// Delivers `message` from `sender` to `target`: straight into its buffer if
/// it is waiting in `receive`, otherwise into its mailbox.
pub fn post(tasks: &mut Tasks, sender: u64, target: ServiceId, mut message: Message) -> Result<(), IpcError> {
    message.sender = sender;
    let is_call = is_calling(tasks, sender, target);
    let process = tasks.processes.get_mut(&target).ok_or(IpcError::NoSuchService)?;
    match process.state {
        State::Exited(_) => Err(IpcError::NoSuchService),
        State::Receiving { buffer, .. } => {
            if is_call {
                process.answerable.insert(sender);
            }
            if deliver(process, buffer, &message, sender).is_err() {
                // The receiver's buffer went bad: it gets the error, the
                // message is queued for its next receive.
                let (status, value) = baton_abi::error::encode_result(Err(Error::BadAddress));
                process.frame_mut().set_syscall_result(status, value);
                process.mailbox.push_back(message);
            }
            tasks.wake(target);
            Ok(())
        }
        // Lifecycle events: a few per update, never refused.
        _ if sender == KERNEL_SENDER => {
            process.mailbox.push_back(message);
            Ok(())
        }
        _ if process.mailbox.len() >= MAILBOX_CAPACITY => Err(IpcError::WouldBlock),
        _ if process.mailbox.iter().filter(|queued| queued.sender == sender).count() >= MAILBOX_SHARE => {
            Err(IpcError::WouldBlock)
        }
        _ => {
            process.mailbox.push_back(message);
            Ok(())
        }
    }
}

/// Whether `sender` is blocked calling `target`.
fn is_calling(tasks: &Tasks, sender: u64, target: ServiceId) -> bool {
    tasks
        .processes
        .get(&sender)
        .is_some_and(|process| matches!(process.state, State::Calling { target: called, .. } if called == target))
}

/// Takes the next message for `receiver` if there is one.
pub fn take(tasks: &mut Tasks, receiver: ServiceId) -> Option<Message> {
    let message = tasks.processes.get_mut(&receiver)?.mailbox.pop_front()?;
    let is_call = is_calling(tasks, message.sender, receiver);
    let process = tasks.processes.get_mut(&receiver)?;
    // A caller sends nothing after its call, so its call is the last of its
    // messages in the mailbox.
    if is_call && !process.mailbox.iter().any(|queued| queued.sender == message.sender) {
        process.answerable.insert(message.sender);
    }
    Some(message)
}

/// Answers `caller`, which must be blocked calling `replier`, whose call
/// `replier` has received.
pub fn answer(tasks: &mut Tasks, replier: ServiceId, caller: ServiceId, mut message: Message) -> Result<(), IpcError> {
    message.sender = replier;
    let State::Calling { target, buffer } = tasks.processes.get(&caller).ok_or(IpcError::NoSuchService)?.state else {
        return Err(IpcError::NotCalling);
    };
    if target != replier {
        return Err(IpcError::NotYourCaller);
    }
    // The caller's call is still in the replier's mailbox: this reply
    // answers one of its earlier plain sends.
    if !tasks.processes.get_mut(&replier).ok_or(IpcError::NoSuchService)?.answerable.remove(&caller) {
        return Err(IpcError::NotReceived);
    }
    let process = tasks.processes.get_mut(&caller).ok_or(IpcError::NoSuchService)?;
    if deliver(process, buffer, &message, replier).is_err() {
        let (status, value) = baton_abi::error::encode_result(Err(Error::BadAddress));
        process.frame_mut().set_syscall_result(status, value);
    }
    tasks.wake(caller);
    Ok(())
}
