//! client: exercises kvstore and counter over IPC. With argument 0 it fills
//! the store with a known set of keys and checks every operation; with 1 it
//! verifies that the known set is still there (after an update) and that
//! the store takes writes again; with
//! bit 8 set (a test) it ends at once without a report. It
//! answers init's call with a report (failed checks, keys, checksum,
//! counter, uptime) and exits 0 when everything matched.

#![no_std]
#![no_main]

extern crate alloc;

use baton_user::protocol::{self, DecodeBuffers, KvRequest, label};
use baton_user::{Message, ipc, syscall};

baton_user::service!(main);

/// Keys in the known set.
pub const KEY_COUNT: u64 = 64;

fn key(index: u64, buffer: &mut [u8; 8]) -> &[u8] {
    buffer.copy_from_slice(b"key-0000");
    for (position, digit) in [(7, index % 10), (6, index / 10 % 10), (5, index / 100 % 10)] {
        buffer[position] = b'0' + digit as u8;
    }
    &buffer[..]
}

/// The value stored under key `index`: `v<index>-<hash>`, 16 bytes.
fn value(index: u64) -> alloc::string::String {
    let hash = protocol::fnv1a(0, &index.to_le_bytes()) % 10_000_000_000;
    alloc::format!("v{index:04}-{hash:010}")
}

fn request(kvstore: u64, request: &KvRequest<'_>) -> Option<Message> {
    syscall::call_service(kvstore, &request.encode()?).ok()
}

struct Checks {
    failed: u32,
}

impl Checks {
    fn check(&mut self, condition: bool, what: &str) {
        if !condition {
            self.failed += 1;
            log::warn!("client: check failed: {what}");
        }
    }
}

fn main(mode: u64) -> i32 {
    if mode & (1 << 8) != 0 {
        // For the test that init does not wait forever for a report.
        log::warn!("client: ending without a report, as the test asked");
        return 1;
    }
    let (Ok(kvstore), Ok(counter)) =
        (ipc::wait_for_service("kvstore", 5_000_000_000), ipc::wait_for_service("counter", 5_000_000_000))
    else {
        log::warn!("client: kvstore or counter is missing");
        return 1;
    };
    let mut checks = Checks { failed: 0 };
    let mut buffers = DecodeBuffers::default();
    let mut key_buffer = [0u8; 8];
    if mode == 0 {
        for index in 0..KEY_COUNT {
            let reply =
                request(kvstore, &KvRequest::Put { key: key(index, &mut key_buffer), value: value(index).as_bytes() });
            checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_OK), "put");
        }
        // Delete, then a missing key, then overwrite.
        let reply = request(kvstore, &KvRequest::Put { key: b"temporary", value: b"x" });
        checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_OK), "put temporary");
        let reply = request(kvstore, &KvRequest::Delete { key: b"temporary" });
        checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_OK), "delete");
        let reply = request(kvstore, &KvRequest::Get { key: b"temporary" });
        checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_NOT_FOUND), "deleted key is gone");
        let reply = request(kvstore, &KvRequest::Delete { key: b"never-stored" });
        checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_NOT_FOUND), "delete missing");
        let bad = Message::new(77, [0; 6]);
        let reply = syscall::call_service(kvstore, &bad).ok();
        checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_BAD_REQUEST), "bad request");
    }
    // Every key holds its value.
    for index in 0..KEY_COUNT {
        let reply = request(kvstore, &KvRequest::Get { key: key(index, &mut key_buffer) });
        let matches = reply.as_ref().is_some_and(|reply| {
            reply.label == protocol::STATUS_OK
                && protocol::decode_reply(reply, &mut buffers)
                    .is_some_and(|(_, stored)| stored == value(index).as_bytes())
        });
        checks.check(matches, "get returns the stored value");
    }
    // List returns keys in order.
    let first = request(kvstore, &KvRequest::List { index: 0 });
    let first_key_matches = first.as_ref().is_some_and(|reply| {
        protocol::decode_reply(reply, &mut buffers).is_some_and(|(listed, _)| listed == b"key-0000")
    });
    checks.check(first_key_matches, "list starts with key-0000");
    let past_end = request(kvstore, &KvRequest::List { index: KEY_COUNT });
    checks.check(past_end.is_some_and(|reply| reply.label == protocol::STATUS_NOT_FOUND), "list ends");
    let summary = request(kvstore, &KvRequest::Summary);
    let (count, checksum) = summary.map_or((0, 0), |reply| (reply.words[0], reply.words[1]));
    checks.check(count == KEY_COUNT, "summary counts every key");
    if mode != 0 {
        // After an update the store takes writes again (it froze them
        // for the update's prepare).
        let reply = request(kvstore, &KvRequest::Put { key: b"after-update", value: b"x" });
        checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_OK), "put after the update");
        let reply = request(kvstore, &KvRequest::Delete { key: b"after-update" });
        checks.check(reply.is_some_and(|reply| reply.label == protocol::STATUS_OK), "delete after the update");
    }
    // The counter moves forward.
    let read = |target| syscall::call_service(target, &Message::new(label::COUNTER_READ, [0; 6])).ok();
    let (first_read, second_read) = (read(counter), read(counter));
    let (Some(first_read), Some(second_read)) = (first_read, second_read) else {
        checks.check(false, "counter answers");
        return 1;
    };
    checks.check(second_read.words[0] == first_read.words[0] + 1, "counter increments");
    checks.check(second_read.words[1] >= first_read.words[1], "uptime never goes back");
    // The example service of docs/services.md, when it runs, counts greetings.
    if let Ok(greeter) = syscall::lookup("greeter") {
        let greet = || syscall::call_service(greeter, &Message::new(0, [0; 6])).ok().map(|reply| reply.words[0]);
        let (first, second) = (greet(), greet());
        checks.check(first.is_some() && second == first.map(|count| (count + 1) % 256), "greeter counts greetings");
    }
    log::info!(
        "client: verified {count} keys (checksum {checksum:#018x}), counter {} uptime {} ms, {} failed checks",
        second_read.words[0],
        second_read.words[1] / 1_000_000,
        checks.failed
    );
    // init calls for the report (a client that ends before answering fails
    // init's call instead of leaving it waiting).
    let report = [u64::from(checks.failed), count, checksum, second_read.words[0], second_read.words[1] / 1_000_000, 0];
    if let Ok(init) = syscall::lookup("init") {
        while let Ok(message) = syscall::receive() {
            if message.sender == init && message.label == label::CLIENT_REPORT {
                let _ = syscall::reply(init, &Message::new(label::CLIENT_REPORT, report));
                break;
            }
        }
    }
    if checks.failed == 0 { 0 } else { 1 }
}
