//! Kernel tests of services: IPC, containment, preemption, hostile callers
//! and the KHO calls up to finalisation. Each test starts the services it
//! needs and runs the scheduler until its test service exits.

use crate::task::{self, ServiceId};
use crate::{check, check_eq, kernel_test};

const TIMEOUT_NS: u64 = 30_000_000_000;

fn ensure_running(name: &str) -> Option<ServiceId> {
    task::lookup(name).or_else(|| task::spawn(name, 0).ok())
}

/// Runs the embedded service `name` with `argument` to completion.
fn run_to_exit(name: &str, argument: u64) -> Option<i64> {
    let id = task::spawn(name, argument).ok()?;
    task::run_until(TIMEOUT_NS, || task::exit_code(id).is_some());
    task::exit_code(id)
}

kernel_test! {
    /// kvstore, counter and a client start and talk over IPC: every put,
    /// get, delete, list and counter read the client makes gives the
    /// expected answer.
    fn services_talk_over_ipc() -> TestResult {
        check!(ensure_running("kvstore").is_some());
        check!(ensure_running("counter").is_some());
        check_eq!(run_to_exit("client", 0), Some(0));
        check!(task::lookup("kvstore").is_some(), "kvstore stopped");
        Ok(())
    }
}

kernel_test! {
    /// A service that faults is ended with a log line; the kernel and the
    /// other services keep running.
    fn crashing_service_is_contained() -> TestResult {
        check!(ensure_running("kvstore").is_some());
        check!(ensure_running("counter").is_some());
        check_eq!(run_to_exit("crasher", 0), Some(-1));
        check_eq!(run_to_exit("client", 0), Some(0));
        Ok(())
    }
}

kernel_test! {
    /// A service that never yields does not stop the others.
    fn spinning_service_does_not_stop_others() -> TestResult {
        check!(ensure_running("kvstore").is_some());
        check!(ensure_running("counter").is_some());
        let spinner = task::spawn("spinner", 0);
        check!(spinner.is_ok());
        check_eq!(run_to_exit("client", 0), Some(0));
        check!(task::exit_code(spinner.unwrap_or(0)).is_none(), "the spinner should still be running");
        if let Ok(id) = spinner {
            task::TASKS.lock().end(id, -2);
        }
        Ok(())
    }
}

kernel_test! {
    /// Every bad pointer, length, privilege and ownership violation the
    /// hostile service tries returns its documented error; kvstore survives
    /// its mailbox being flooded.
    fn hostile_service_gets_documented_errors() -> TestResult {
        check!(ensure_running("kvstore").is_some());
        check_eq!(run_to_exit("hostile", 0), Some(0));
        check!(task::lookup("kvstore").is_some());
        check!(ensure_running("counter").is_some());
        check_eq!(run_to_exit("client", 0), Some(0));
        Ok(())
    }
}

kernel_test! {
    /// The example service of docs/services.md answers and counts.
    fn documented_example_service_works() -> TestResult {
        let Some(greeter) = ensure_running("greeter") else { return Err(crate::ktest::Failed) };
        check!(ensure_running("kvstore").is_some());
        check!(ensure_running("counter").is_some());
        // The client greets the greeter twice and checks the count moves on.
        let asker = run_to_exit("client", 0);
        check_eq!(asker, Some(0));
        check!(task::lookup("greeter") == Some(greeter), "greeter stopped");
        Ok(())
    }
}
