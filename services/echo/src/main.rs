//! echo: TCP echo on port 7, served through netd's sockets.
//!
//! The first client of netd's socket interface: it asks netd to listen on
//! port 7, maps the channel netd grants it, and sends back every byte a
//! connection sends, as `baton-sockets` records over the channel. An
//! update that resumes it and netd carries every connection on
//! mid-stream. One that restarts it loses nothing either: netd holds the
//! connections and the channel, and the new instance asks again, maps the
//! same channel and reads on where the old one stopped. When netd itself
//! restarts, the grant ends (the kernel says so) and echo asks the new
//! netd.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use baton_sockets::{DOORBELL_LABEL, LISTEN_LABEL, MAX_RECORD, Record, RecordReader};
use baton_user::channel::{Endpoint, Region, Side};
use baton_user::message::KERNEL_SENDER;
use baton_user::{Message, SHARE_REVOKED_LABEL, UpdateEvent, ipc, syscall};

baton_user::service!(main);

/// The TCP echo port.
const PORT: u16 = 7;
/// Connections served at a time.
const CONNECTIONS: u8 = 4;
/// The most channel bytes echo maps.
const MAX_REGION_BYTES: u64 = 1 << 20;

struct Echo {
    netd: u64,
    /// The channel netd granted: (grant, endpoint); none while netd has
    /// not (yet) given one.
    channel: Option<(u64, Endpoint<Region>)>,
    reader: RecordReader,
    /// Records to send back that did not fit in the ring yet.
    outgoing: VecDeque<(u8, Vec<u8>)>,
    connections: u64,
}

impl Echo {
    /// Asks netd to listen and maps the channel it grants, unless it is
    /// the one already mapped; `Ok(true)` when netd set the port up now.
    fn listen(&mut self, is_new_instance: bool) -> Result<bool, baton_user::Error> {
        let words = baton_sockets::listen_words(PORT, CONNECTIONS, is_new_instance, "echo").unwrap_or_default();
        let reply = ipc::request_idempotent(self.netd, LISTEN_LABEL, words)?;
        if reply.label != 0 {
            return Err(baton_user::Error::from_number(reply.label).unwrap_or(baton_user::Error::InvalidArgument));
        }
        let [grant, length, fresh, ..] = reply.words;
        if self.channel.as_ref().is_some_and(|(mapped, _)| *mapped == grant) {
            return Ok(fresh == 1);
        }
        if length > MAX_REGION_BYTES {
            return Err(baton_user::Error::TooLarge);
        }
        // The kernel maps it only if the grant is that long.
        let address = syscall::share_map(grant, length)?;
        // SAFETY: just mapped read-write, `length` bytes; the kernel keeps
        // the addresses valid for echo's life (zeroed if the grant ends).
        let memory = unsafe { Region::new(address, length) };
        let endpoint = Endpoint::attach(memory, Side::Attacher).map_err(|_| baton_user::Error::InvalidArgument)?;
        self.channel = Some((grant, endpoint));
        self.reader = RecordReader::new();
        log::info!("echo: serving TCP port {PORT} through netd (grant {grant})");
        Ok(fresh == 1)
    }

    /// Takes every record netd wrote, queueing the echoes.
    fn read(&mut self) -> Result<(), &'static str> {
        loop {
            let Some((_, endpoint)) = self.channel.as_mut() else { return Ok(()) };
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
        let Some((_, endpoint)) = self.channel.as_mut() else { return Ok(false) };
        while let Some((connection, bytes)) = self.outgoing.front() {
            let record = Record::Data { connection: *connection, bytes };
            let mut buffer = [0u8; MAX_RECORD];
            let length = record.encode(&mut buffer).ok_or("an echo too long to encode")?;
            if (endpoint.writable().map_err(|_| "netd broke the channel")? as usize) < length {
                break;
            }
            endpoint.send(&buffer[..length]).map_err(|_| "netd broke the channel")?;
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
    let mut echo = Echo { netd, channel: None, reader: RecordReader::new(), outgoing: VecDeque::new(), connections: 0 };
    if let Err(error) = echo.listen(true) {
        log::warn!("echo: netd refused to listen on port {PORT}: {error}");
        return 1;
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
                // netd restarted (its grant ended with the update) or let
                // the channel go: ask it again.
                if message.label == SHARE_REVOKED_LABEL
                    && echo.channel.as_ref().is_some_and(|(grant, _)| *grant == message.words[0])
                {
                    echo.channel = None;
                    echo.outgoing.clear();
                    match echo.listen(false) {
                        Ok(_) => log::info!("echo: netd's channel ended; port {PORT} is served again"),
                        Err(error) => log::warn!("echo: netd refused port {PORT} again: {error}"),
                    }
                    continue;
                }
                match UpdateEvent::from_label(message.label) {
                    Some(UpdateEvent::Prepare) => {
                        let _ = syscall::kho_ready(UpdateEvent::Prepare, 0);
                    }
                    // A netd that was restarted lost the listener: ask
                    // again (a resumed one still has it, and says so).
                    Some(UpdateEvent::Continued) => match echo.listen(false) {
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
