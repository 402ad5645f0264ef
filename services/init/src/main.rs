//! init: the first service. It starts the others and drives the self-update
//! demo: with an argument N (from `demo.updates=N` on the kernel command
//! line) it has the client fill kvstore, then updates the kernel N times in
//! a row, checking after each update that every key and the counter came
//! back, waiting `demo.interval_ms` before each. Its own progress survives
//! each update in its sub-FDT.

#![no_std]
#![no_main]

extern crate alloc;

use baton_user::kho::fetch_sub_fdt;
use baton_user::protocol::label;
use baton_user::{Message, SubFdtWriter, UpdateImage, ipc, native_u32, parse_fdt, syscall};

baton_user::service!(main);

/// Client modes (see services/client).
const CLIENT_FILL: u64 = 0;
const CLIENT_VERIFY: u64 = 1;
/// Added to the mode: the client ends at once without reporting (tests).
const CLIENT_EXIT_EARLY: u64 = 1 << 8;

/// The demo's progress, carried across updates.
#[derive(Debug, Clone, Copy)]
struct Progress {
    generation: u32,
    remaining: u32,
}

fn restore() -> Option<Progress> {
    let fdt = fetch_sub_fdt().ok()?;
    let parsed = parse_fdt(fdt).ok()?;
    let root = parsed.find_node("/")?;
    if root.property("compatible")?.as_str()? != "baton,init-v1" {
        return None;
    }
    Some(Progress {
        generation: native_u32(root.property("generation")?.value)?,
        remaining: native_u32(root.property("remaining")?.value)?,
    })
}

fn publish(progress: Progress) -> baton_user::Result<()> {
    let fdt = (|| {
        let mut writer = SubFdtWriter::new().ok()?;
        writer.property_string("compatible", "baton,init-v1").ok()?;
        writer.property_u32("generation", progress.generation).ok()?;
        writer.property_u32("remaining", progress.remaining).ok()?;
        writer.finish().ok()
    })()
    .ok_or(baton_user::Error::NoMemory)?;
    syscall::kho_publish(&fdt)
}

fn main(argument: u64) -> i32 {
    let start = baton_user::InitStart::decode(argument);
    let updates = u64::from(start.updates);
    let shutdown_when_done = start.shutdown_when_done;
    let image = if start.own_image { UpdateImage::RunningKernel } else { UpdateImage::BootModule };
    let restored = restore();
    let _ = syscall::kho_done();
    let mut progress =
        restored.unwrap_or(Progress { generation: 0, remaining: updates.min(u64::from(u32::MAX)) as u32 });
    for name in ["kvstore", "counter"] {
        match syscall::spawn(name, 0) {
            Ok(id) => log::info!("init: started {name} as service {id}"),
            Err(error) => log::warn!("init: cannot start {name}: {error}"),
        }
    }
    if start.wait_for_ballast {
        // Benchmarks: the ballast answers once its state is in place.
        let ready = ipc::wait_for_service("ballast", 10_000_000_000)
            .and_then(|ballast| ipc::request(ballast, label::BALLAST_READY, [0; 6]));
        match ready {
            Ok(reply) => log::info!("init: ballast ready ({} MiB)", reply.words[0] >> 20),
            Err(error) => log::warn!("init: ballast not ready: {error}"),
        }
    }
    let mut mode = if restored.is_some() { CLIENT_VERIFY } else { CLIENT_FILL };
    if start.client_exits_early {
        mode |= CLIENT_EXIT_EARLY;
    }
    let mut update_failed = false;
    loop {
        let Some([failed, keys, checksum, count, uptime_ms, _]) = run_client(mode) else {
            log::warn!("demo: the state could not be checked; stopping");
            stop(shutdown_when_done.then_some(1));
        };
        log::info!(
            "demo: generation {} verified {keys} keys (checksum {checksum:#018x}), counter {count}, uptime {uptime_ms} ms, {failed} failed checks",
            progress.generation
        );
        if update_failed {
            // The update was refused or aborted: the state was checked again,
            // and the demo stops here with a failure status.
            if failed == 0 {
                log::info!("demo: state intact after the failed update");
            } else {
                log::warn!("demo: state lost after the failed update");
            }
            stop(shutdown_when_done.then_some(1));
        }
        if failed != 0 {
            log::warn!("demo: state was lost or corrupted; stopping");
            stop(shutdown_when_done.then_some(1));
        }
        if progress.remaining == 0 {
            if updates > 0 || restored.is_some() {
                log::info!("demo: complete after {} updates", progress.generation);
                stop(shutdown_when_done.then_some(0));
            }
            stop(None);
        }
        let next = Progress { generation: progress.generation + 1, remaining: progress.remaining - 1 };
        if let Err(error) = publish(next) {
            log::warn!("demo: cannot publish init's progress: {error}");
            stop(None);
        }
        if start.interval_ms > 0 {
            // Spaced updates: traffic (and a person watching) runs
            // between them.
            syscall::sleep(u64::from(start.interval_ms) * 1_000_000);
        }
        log::info!("demo: update {} of {} starting", next.generation, next.generation + next.remaining);
        mode = CLIENT_VERIFY;
        match syscall::update(image) {
            // init is resumed by the new kernel: `update` returns there, and
            // the demo goes on from where it was.
            Ok(()) => {
                log::info!("demo: init resumed on the new kernel");
                progress = next;
                continue;
            }
            Err(error) => log::warn!("demo: update failed: {error}; checking the state again"),
        }
        update_failed = true;
        let _ = publish(progress);
    }
}

/// Starts the client and waits for its report, by calling it: a client
/// that ends without answering (a failed check that stops it early, a
/// fault) makes the call fail with `PeerGone` instead of leaving init
/// waiting forever. `None` when there is no report.
fn run_client(mode: u64) -> Option<[u64; 6]> {
    let client = match syscall::spawn("client", mode) {
        Ok(client) => client,
        Err(error) => {
            log::warn!("init: cannot start client: {error}");
            return None;
        }
    };
    match syscall::call_service(client, &Message::new(label::CLIENT_REPORT, [0; 6])) {
        Ok(reply) => Some(reply.words),
        Err(error) => {
            log::warn!("init: the client ended without a report: {error}");
            None
        }
    }
}

/// The demo is over: stops the machine with the status given, if any, else
/// stays, answering nothing (the other services keep running).
fn stop(shutdown_status: Option<u64>) -> ! {
    if let Some(status) = shutdown_status {
        let _ = syscall::shutdown(status);
    }
    loop {
        let _ = syscall::receive();
    }
}
