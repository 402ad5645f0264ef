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

/// Delivers `message` from `sender` to `target`: straight into its buffer if
/// it is waiting in `receive`, otherwise into its mailbox.
pub fn post(tasks: &mut Tasks, sender: u64, target: ServiceId, mut message: Message) -> Result<(), Error> {
    message.sender = sender;
    let is_call = is_calling(tasks, sender, target);
    let process = tasks.processes.get_mut(&target).ok_or(Error::NotFound)?;
    match process.state {
        State::Exited(_) => Err(Error::NotFound),
        State::Receiving { buffer } => {
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
        _ if process.mailbox.len() >= MAILBOX_CAPACITY => Err(Error::WouldBlock),
        _ if process.mailbox.iter().filter(|queued| queued.sender == sender).count() >= MAILBOX_SHARE => {
            Err(Error::WouldBlock)
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
pub fn answer(tasks: &mut Tasks, replier: ServiceId, caller: ServiceId, mut message: Message) -> Result<(), Error> {
    message.sender = replier;
    let State::Calling { target, buffer } = tasks.processes.get(&caller).ok_or(Error::NotFound)?.state else {
        return Err(Error::InvalidArgument);
    };
    if target != replier {
        return Err(Error::PermissionDenied);
    }
    // The caller's call is still in the replier's mailbox: this reply
    // answers one of its earlier plain sends.
    if !tasks.processes.get_mut(&replier).ok_or(Error::NotFound)?.answerable.remove(&caller) {
        return Err(Error::InvalidArgument);
    }
    let process = tasks.processes.get_mut(&caller).ok_or(Error::NotFound)?;
    if deliver(process, buffer, &message, replier).is_err() {
        let (status, value) = baton_abi::error::encode_result(Err(Error::BadAddress));
        process.frame_mut().set_syscall_result(status, value);
    }
    tasks.wake(caller);
    Ok(())
}
