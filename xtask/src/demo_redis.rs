//! The demo's Redis client on the host: the `redis` crate (a client
//! nobody here wrote) on one connection to kvstore through the forward on
//! 127.0.0.1, opened before the first update and never reopened. It
//! writes keys first, then sends a request every few milliseconds
//! through every update, reads every key back after each, and sums up:
//! whether the connection was kept, requests, errors, and the longest a
//! request waited (the pause a client sees).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Keys written before the first update.
const KEYS: usize = 100;
/// How long one reply may take before the client calls it an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time between requests.
const SPACING: Duration = Duration::from_millis(10);

/// What the client saw.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// The one connection stayed open to the end.
    pub is_connection_kept: bool,
    /// Requests answered.
    pub requests: u64,
    /// Requests that failed or got a wrong answer (the first is kept).
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// The longest a request waited for its reply.
    pub longest_pause: Duration,
    /// Updates after which every key was read back right.
    pub updates_checked: u32,
}

impl Summary {
    /// The demo's last line about Redis.
    pub fn line(&self) -> String {
        let mut line = format!(
            "demo: Redis client: {} connection kept, {} requests, {} errors, longest pause {:.1} ms; {KEYS} keys read back right after {} update(s)",
            if self.is_connection_kept { "1 of 1" } else { "0 of 1" },
            self.requests,
            self.errors,
            self.longest_pause.as_secs_f64() * 1000.0,
            self.updates_checked
        );
        if let Some(error) = &self.first_error {
            line.push_str(&format!(" (first error: {error})"));
        }
        line
    }

    /// Whether nothing was lost.
    pub fn is_clean(&self) -> bool {
        self.is_connection_kept && self.errors == 0
    }

    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// The running client.
pub struct DemoClient {
    stop: Arc<AtomicBool>,
    updates: Arc<AtomicU32>,
    thread: JoinHandle<Summary>,
}

impl DemoClient {
    /// Connects to kvstore through `port` and starts.
    pub fn start(port: u16) -> DemoClient {
        let stop = Arc::new(AtomicBool::new(false));
        let updates = Arc::new(AtomicU32::new(0));
        let thread = {
            let (stop, updates) = (stop.clone(), updates.clone());
            std::thread::spawn(move || run(port, &stop, &updates))
        };
        DemoClient { stop, updates, thread }
    }

    /// An update finished: the keys are read back next.
    pub fn note_update(&self) {
        self.updates.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops and sums up.
    pub fn finish(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Summary { first_error: Some("the client panicked".into()), ..Default::default() })
    }
}

fn key(index: usize) -> String {
    format!("demo:key:{index}")
}

fn value(index: usize) -> String {
    format!("value {index}")
}

fn run(port: u16, stop: &AtomicBool, updates: &AtomicU32) -> Summary {
    let mut summary = Summary::default();
    let connection = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|client| client.get_connection_with_timeout(REPLY_TIMEOUT));
    let mut connection = match connection {
        Ok(connection) => connection,
        Err(error) => {
            summary.fail(format!("cannot connect: {error}"));
            return summary;
        }
    };
    if let Err(error) = connection.set_read_timeout(Some(REPLY_TIMEOUT)) {
        summary.fail(format!("cannot set a timeout: {error}"));
        return summary;
    }
    summary.is_connection_kept = true;
    // Each request: its time is the pause the client sees.
    let mut timed = |summary: &mut Summary, command: &mut redis::Cmd| -> Option<redis::Value> {
        let sent = Instant::now();
        let result = command.query::<redis::Value>(&mut connection);
        summary.longest_pause = summary.longest_pause.max(sent.elapsed());
        match result {
            Ok(value) => {
                summary.requests += 1;
                Some(value)
            }
            Err(error) => {
                if error.is_connection_dropped() || error.is_io_error() {
                    summary.is_connection_kept = false;
                }
                summary.fail(error.to_string());
                None
            }
        }
    };
    let mut set = redis::cmd("MSET");
    for index in 0..KEYS {
        set.arg(key(index)).arg(value(index));
    }
    timed(&mut summary, &mut set);
    let mut checked = 0;
    let mut counter = 0i64;
    while !stop.load(Ordering::Relaxed) && summary.is_connection_kept {
        counter += 1;
        match timed(&mut summary, redis::cmd("INCR").arg("demo:requests")) {
            Some(redis::Value::Int(count)) if count == counter => {}
            Some(other) => summary.fail(format!("INCR answered {other:?}, not {counter}")),
            None => {}
        }
        let seen = updates.load(Ordering::Relaxed);
        if seen > checked {
            checked = seen;
            let mut get = redis::cmd("MGET");
            for index in 0..KEYS {
                get.arg(key(index));
            }
            if let Some(answer) = timed(&mut summary, &mut get) {
                let expected: Vec<redis::Value> =
                    (0..KEYS).map(|index| redis::Value::BulkString(value(index).into_bytes())).collect();
                if answer == redis::Value::Array(expected) {
                    summary.updates_checked += 1;
                } else {
                    summary.fail(format!("after update {seen} the keys read back wrong"));
                }
            }
        }
        std::thread::sleep(SPACING);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_was_lost() {
        let mut summary = Summary {
            is_connection_kept: true,
            requests: 12,
            longest_pause: Duration::from_micros(48_250),
            updates_checked: 5,
            ..Default::default()
        };
        assert!(summary.is_clean());
        assert_eq!(
            summary.line(),
            "demo: Redis client: 1 of 1 connection kept, 12 requests, 0 errors, longest pause 48.2 ms; 100 keys \
             read back right after 5 update(s)"
        );
        summary.fail("INCR answered Int(3), not 4".into());
        summary.fail("a second".into());
        assert!(!summary.is_clean());
        assert!(summary.line().contains("2 errors"));
        assert!(summary.line().ends_with("(first error: INCR answered Int(3), not 4)"));
        summary = Summary { is_connection_kept: false, ..Default::default() };
        assert!(!summary.is_clean());
        assert!(summary.line().contains("0 of 1 connection kept"));
    }
}
