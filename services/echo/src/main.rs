//! echo: TCP echo on port 7, served through netd's sockets.
//!
//! The first client of netd's socket interface (`baton_user::sockets`):
//! it asks netd to listen on port 7, maps the channel netd grants it, and
//! sends back every byte a connection sends. An update that resumes it and
//! netd carries every connection on mid-stream. One that restarts it loses
//! nothing either: netd holds the connections and the channel, and the new
//! instance asks again, maps the same channel and reads on where the old
//! one stopped. When netd itself restarts, the grant ends (the kernel says
//! so) and echo asks the new netd.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use baton_user::message::KERNEL_SENDER;
use baton_user::sockets::{Followed, Listener, SocketRecord};
use baton_user::{UpdateEvent, ipc, syscall};

baton_user::service!(main);

/// The TCP echo port.
const PORT: u16 = 7;
/// Connections served at a time.
const CONNECTIONS: u8 = 4;

fn main(_argument: u64) -> i32 {
    // Nothing to restore when restarted.
    let _ = syscall::kho_done();
    let _ = syscall::kho_subscribe();
    let Ok(netd) = ipc::wait_for_service("netd", 10_000_000_000) else {
        log::warn!("echo: no netd; nothing to serve");
        return 1;
    };
    let mut listener = match Listener::new(netd, PORT, CONNECTIONS, "echo") {
        Ok(listener) => listener,
        Err(error) => {
            log::warn!("echo: netd refused to listen on port {PORT}: {error}");
            return 1;
        }
    };
    let mut grant = listener.grant();
    log::info!("echo: serving TCP port {PORT} through netd (grant {})", grant.unwrap_or(0));
    let mut connections: u64 = 0;
    loop {
        let message = if listener.has_outgoing() {
            syscall::receive_until(syscall::clock() + 1_000_000)
        } else {
            syscall::receive()
        };
        if let Ok(message) = message {
            if message.sender == KERNEL_SENDER {
                if UpdateEvent::from_label(message.label) == Some(UpdateEvent::Prepare) {
                    let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
                    continue;
                }
                match listener.follow(&message) {
                    Ok(Followed::Asked(is_anew)) => {
                        if listener.grant() != grant {
                            grant = listener.grant();
                            log::info!("echo: serving TCP port {PORT} through netd (grant {})", grant.unwrap_or(0));
                            log::info!("echo: netd's channel ended; port {PORT} is served again");
                        } else if is_anew {
                            log::info!("echo: netd was restarted; port {PORT} is served again");
                        }
                    }
                    Ok(Followed::NotMine) => {}
                    Err(error) => log::warn!("echo: netd refused port {PORT}: {error}"),
                }
                continue;
            }
            if !listener.is_doorbell(&message) {
                continue;
            }
        }
        let mut echoes: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut closed = Vec::new();
        let read = listener.read(|record| match record {
            SocketRecord::Accepted { address: [a, b, c, d], port, .. } => {
                connections += 1;
                log::info!("echo: connection {connections} from {a}.{b}.{c}.{d}:{port}");
            }
            SocketRecord::Data { connection, bytes } => echoes.push((connection, bytes.to_vec())),
            SocketRecord::Closed { connection } => closed.push(connection),
            SocketRecord::Close { .. } => {}
        });
        for (connection, bytes) in echoes {
            listener.send(connection, &bytes);
        }
        for connection in closed {
            // What was echoed goes out, then netd may reuse the number.
            listener.close(connection);
            log::info!("echo: a connection closed by the remote end ({connections} so far)");
        }
        if let Err(why) = read.and_then(|()| listener.flush()) {
            log::warn!("echo: {why}; stopping");
            return 1;
        }
    }
}
