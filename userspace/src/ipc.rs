//! IPC helpers: finding services by name, waiting for them, and the server
//! loop shape most services use.

use crate::{Message, Result, syscall};

/// Looks a service up, retrying (with short sleeps) until it exists or
/// `timeout_ns` passes.
pub fn wait_for_service(name: &str, timeout_ns: u64) -> Result<u64> {
    let deadline = syscall::clock().saturating_add(timeout_ns);
    loop {
        match syscall::lookup(name) {
            Ok(id) => return Ok(id),
            Err(error) if syscall::clock() >= deadline => return Err(error),
            Err(_) => syscall::sleep(1_000_000),
        }
    }
}

/// Sends a request with `label` and `words` and returns the reply.
pub fn request(target: u64, label: u64, words: [u64; baton_abi::MESSAGE_WORDS]) -> Result<Message> {
    syscall::call_service(target, &Message::new(label, words))
}

/// How often [`request_idempotent`] sends a request that a restart
/// interrupted.
pub const IDEMPOTENT_ATTEMPTS: u32 = 3;

/// Sends a request that may safely run twice (a read, or a write of a
/// fixed value) and returns the reply. When the callee was restarted by a
/// live update after it had received the request and before it answered
/// (`CallInterrupted`), the kernel never delivers the request again; this
/// sends it again, to the new instance, up to [`IDEMPOTENT_ATTEMPTS`]
/// times. Never use it for a request that must not run twice (an
/// increment): use [`request`] and handle `CallInterrupted`.
pub fn request_idempotent(target: u64, label: u64, words: [u64; baton_abi::MESSAGE_WORDS]) -> Result<Message> {
    retry_interrupted(IDEMPOTENT_ATTEMPTS, || request(target, label, words))
}

/// Runs `attempt` until it returns anything but `CallInterrupted`, at most
/// `attempts` times (at least once); returns the last result.
pub fn retry_interrupted<T>(attempts: u32, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let mut result = attempt();
    for _ in 1..attempts {
        if !matches!(result, Err(crate::Error::CallInterrupted)) {
            break;
        }
        result = attempt();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn an_interrupted_request_is_sent_again() {
        let mut calls = 0;
        let result = retry_interrupted(3, || {
            calls += 1;
            if calls < 2 { Err(Error::CallInterrupted) } else { Ok(calls) }
        });
        assert_eq!((result, calls), (Ok(2), 2));
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let result: Result<()> = retry_interrupted(3, || {
            calls += 1;
            Err(Error::PeerGone)
        });
        assert_eq!((result, calls), (Err(Error::PeerGone), 1));
    }

    #[test]
    fn retries_are_bounded() {
        let mut calls = 0;
        let result: Result<()> = retry_interrupted(3, || {
            calls += 1;
            Err(Error::CallInterrupted)
        });
        assert_eq!((result, calls), (Err(Error::CallInterrupted), 3));
    }
}
