//! echo: TCP echo on port 7, served through netd's sockets.
//!
//! The first client of netd's socket interface: it allocates a channel
//! region, grants it to netd, asks netd to listen on port 7, and sends
//! back every byte a connection sends, as `baton-sockets` records over the
//! channel. It keeps nothing but its memory, so an update that resumes it
//! and netd carries every connection on mid-stream; after an update it
//! asks netd again, which tells a restarted netd (no listener any more) to
//! set the port up anew.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use baton_sockets::{DOORBELL_LABEL, LISTEN_LABEL, MAX_RECORD, Record, RecordReader};
use baton_user::channel::{Endpoint, Region};
use baton_user::message::KERNEL_SENDER;
use baton_user::{Message, UpdateEvent, ipc, syscall};

baton_user::service!(main);

/// The TCP echo port.
const PORT: u64 = 7;
/// Connections served at a time.
const CONNECTIONS: u64 = 4;
/// The region: an order-3 folio (32 KiB), two 8 KiB rings.
const REGION_ORDER: u32 = 3;
const REGION_BYTES: u64 = 32 * 1024;
const RING_BYTES: u32 = 8 * 1024;

struct Echo {
    netd: u64,
    grant: u64,
    endpoint: Endpoint<Region>,
    reader: RecordReader,
    /// Records to send back that did not fit in the ring yet.
    outgoing: VecDeque<(u8, Vec<u8>)>,
    connections: u64,
}

impl Echo {
    /// Asks netd to listen; `Ok(true)` when netd set the port up now.
    fn listen(&self) -> Result<bool, baton_user::Error> {
        let words = [PORT, self.grant, REGION_BYTES, CONNECTIONS, 0, 0];
        let reply = ipc::request_idempotent(self.netd, LISTEN_LABEL, words)?;
        match reply.label {
            0 => Ok(reply.words[0] == 1),
            number => Err(baton_user::Error::from_number(number).unwrap_or(baton_user::Error::InvalidArgument)),
        }
    }

    /// Takes every record netd wrote, queueing the echoes.
    fn read(&mut self) -> Result<(), &'static str> {
        loop {
            let endpoint = &mut self.endpoint;
            let record = match self.reader.next(|space| endpoint.receive(space)) {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                Err(_) => return Err("netd broke the channel"),
            };
            match record {
                Record::Accepted { address: [a, b, c, d], port, .. } => {
                    self.connections += 1;
                    log::info!("echo: connection {} from {a}.{b}.{c}.{d}:{port}", self.connections);
                }
                Record::Data { connection, bytes } => self.outgoing.push_back((connection, bytes.to_vec())),
                Record::Closed { connection } => {
                    // Nothing of it may go out any more.
                    self.outgoing.retain(|(queued, _)| *queued != connection);
                    log::info!("echo: a connection closed by the remote end ({} so far)", self.connections);
                }
                Record::Close { .. } => return Err("netd sent a client's record"),
            }
        }
    }

    /// Sends what fits; whether it wrote anything.
    fn write(&mut self) -> Result<bool, &'static str> {
        let mut wrote = false;
        while let Some((connection, bytes)) = self.outgoing.front() {
            let record = Record::Data { connection: *connection, bytes };
            let mut buffer = [0u8; MAX_RECORD];
            let length = record.encode(&mut buffer).ok_or("an echo too long to encode")?;
            if (self.endpoint.writable().map_err(|_| "netd broke the channel")? as usize) < length {
                break;
            }
            self.endpoint.send(&buffer[..length]).map_err(|_| "netd broke the channel")?;
            self.outgoing.pop_front();
            wrote = true;
        }
        Ok(wrote)
    }
}

fn main(_argument: u64) -> i32 {
    // Nothing to restore when restarted.
    let _ = syscall::kho_done();
    let _ = syscall::kho_subscribe();
    let Ok(netd) = ipc::wait_for_service("netd", 10_000_000_000) else {
        log::warn!("echo: no netd; nothing to serve");
        return 1;
    };
    let Ok(region) = syscall::allocate_preservable(REGION_ORDER) else {
        log::warn!("echo: no memory for the channel");
        return 1;
    };
    // SAFETY: the folio is echo's preservable memory, mapped read-write
    // for its whole life (it never frees it).
    let memory = unsafe { Region::new(region, REGION_BYTES) };
    let Ok(endpoint) = Endpoint::create(memory, RING_BYTES) else { return 1 };
    let grant = match syscall::share_grant(region, REGION_BYTES, "netd") {
        Ok(grant) => grant,
        Err(error) => {
            log::warn!("echo: cannot grant netd the channel: {error}");
            return 1;
        }
    };
    let mut echo =
        Echo { netd, grant, endpoint, reader: RecordReader::new(), outgoing: VecDeque::new(), connections: 0 };
    match echo.listen() {
        Ok(_) => log::info!("echo: serving TCP port {PORT} through netd (grant {grant})"),
        Err(error) => {
            log::warn!("echo: netd refused to listen on port {PORT}: {error}");
            return 1;
        }
    }
    loop {
        // With echoes waiting for room, look again soon (netd does not
        // ring when it reads); otherwise sleep until netd rings.
        let message = if echo.outgoing.is_empty() {
            syscall::receive()
        } else {
            syscall::receive_until(syscall::clock() + 1_000_000)
        };
        if let Ok(message) = message {
            if message.sender == KERNEL_SENDER {
                match UpdateEvent::from_label(message.label) {
                    Some(UpdateEvent::Prepare) => {
                        let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
                    }
                    // A netd that was restarted lost the listener: ask
                    // again (a resumed one still has it).
                    Some(UpdateEvent::Continued) => match echo.listen() {
                        Ok(true) => log::info!("echo: netd was restarted; port {PORT} is served again"),
                        Ok(false) => {}
                        Err(error) => log::warn!("echo: netd refused port {PORT} after the update: {error}"),
                    },
                    _ => {}
                }
                continue;
            }
            if message.label != DOORBELL_LABEL || message.sender != netd {
                continue;
            }
        }
        let result = echo.read().and_then(|()| echo.write());
        match result {
            Ok(true) => {
                let _ = syscall::send(netd, &Message::new(DOORBELL_LABEL, [0; 6]));
            }
            Ok(false) => {}
            Err(why) => {
                log::warn!("echo: {why}; stopping");
                return 1;
            }
        }
    }
}
