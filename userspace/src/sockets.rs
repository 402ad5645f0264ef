//! A service's side of netd's TCP sockets: ask netd to listen on a port,
//! map the channel it grants, take the connections' records from it and
//! send data back, following netd through updates (asking again after
//! `continued`, and when netd's grant ends because netd restarted).

use crate::channel::{Endpoint, Region, Side};
use crate::message::KERNEL_SENDER;
use crate::{Error, Message, SHARE_REVOKED_LABEL, UpdateEvent, ipc, syscall};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use baton_sockets::{DOORBELL_LABEL, LISTEN_LABEL, MAX_PAYLOAD, MAX_RECORD, Record, RecordReader};

pub use baton_sockets::Record as SocketRecord;

/// How often a listen request meets a full mailbox before it gives up
/// (a millisecond apart).
const BUSY_ATTEMPTS: u32 = 100;

/// The most channel bytes a client maps.
const MAX_REGION_BYTES: u64 = 1 << 20;

/// One port served through netd.
pub struct Listener {
    netd: u64,
    port: u16,
    connections: u8,
    name: &'static str,
    /// The channel netd granted: (grant, endpoint).
    channel: Option<(u64, Endpoint<Region>)>,
    reader: RecordReader,
    /// Records that did not fit in the ring yet.
    outgoing: VecDeque<(u8, Option<Vec<u8>>)>,
}

/// What a kernel message meant for the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Not about netd's channel.
    NotMine,
    /// The listener asked netd again; `true` when netd set the port up
    /// anew (it had been restarted).
    Asked(bool),
}

impl Listener {
    /// Asks netd (service `netd`) to listen on `port` for `name` (this
    /// service's name), `connections` at a time, as a new instance.
    pub fn new(netd: u64, port: u16, connections: u8, name: &'static str) -> Result<Listener, Error> {
        let mut listener = Listener::unasked(netd, port, connections, name);
        listener.listen(true)?;
        Ok(listener)
    }

    /// A listener that has not asked netd yet.
    fn unasked(netd: u64, port: u16, connections: u8, name: &'static str) -> Listener {
        Listener {
            netd,
            port,
            connections,
            name,
            channel: None,
            reader: RecordReader::new(),
            outgoing: VecDeque::new(),
        }
    }

    /// Asks netd for `port` again for a restarted service that was
    /// handed its previous instance's connections: netd announces none of
    /// them again, and the channel is read on where that instance
    /// stopped. The flag is `true` when netd set the port up now (it had
    /// been restarted too): the handed-over connections are gone.
    pub fn resume(netd: u64, port: u16, connections: u8, name: &'static str) -> Result<(Listener, bool), Error> {
        let mut listener = Listener::unasked(netd, port, connections, name);
        let fresh = listener.listen(false)?;
        Ok((listener, fresh))
    }

    /// The grant netd gave.
    pub fn grant(&self) -> Option<u64> {
        self.channel.as_ref().map(|(grant, _)| *grant)
    }

    /// Whether records wait for room in the ring (look again soon: netd
    /// does not ring when it reads).
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Asks netd and maps the channel it grants, unless it is the one
    /// already mapped; `Ok(true)` when netd set the port up now.
    fn listen(&mut self, is_new_instance: bool) -> Result<bool, Error> {
        let words = baton_sockets::listen_words(self.port, self.connections, is_new_instance, self.name)
            .ok_or(Error::TooLarge)?;
        // netd's mailbox may be full for a moment (doorbells, its card's
        // interrupts): that is no refusal, so ask again shortly.
        let mut reply = ipc::request_idempotent(self.netd, LISTEN_LABEL, words);
        for _ in 0..BUSY_ATTEMPTS {
            if !matches!(reply, Err(Error::WouldBlock)) {
                break;
            }
            syscall::sleep(1_000_000);
            reply = ipc::request_idempotent(self.netd, LISTEN_LABEL, words);
        }
        let reply = reply?;
        if reply.label != 0 {
            return Err(Error::from_number(reply.label).unwrap_or(Error::InvalidArgument));
        }
        let [grant, length, fresh, ..] = reply.words;
        if self.grant() == Some(grant) {
            return Ok(fresh == 1);
        }
        if length > MAX_REGION_BYTES {
            return Err(Error::TooLarge);
        }
        // The kernel maps it only if the grant is that long.
        let address = syscall::share_map(grant, length)?;
        // SAFETY: just mapped read-write, `length` bytes; the kernel keeps
        // the addresses valid for this service's life (zeroed if the
        // grant ends).
        let memory = unsafe { Region::new(address, length) };
        let endpoint = Endpoint::attach(memory, Side::Attacher).map_err(|_| Error::InvalidArgument)?;
        self.channel = Some((grant, endpoint));
        self.reader = RecordReader::new();
        Ok(fresh == 1)
    }

    /// Follows netd through a kernel message: after `continued` it asks
    /// again (a restarted netd lost the port); when netd's grant ends (it
    /// restarted) it asks the new netd.
    pub fn follow(&mut self, message: &Message) -> Result<Followed, Error> {
        if message.sender != KERNEL_SENDER {
            return Ok(Followed::NotMine);
        }
        if message.label == SHARE_REVOKED_LABEL && self.grant() == Some(message.words[0]) {
            self.channel = None;
            self.outgoing.clear();
            return self.listen(false).map(|_| Followed::Asked(true));
        }
        if UpdateEvent::from_label(message.label) == Some(UpdateEvent::Continued) {
            return self.listen(false).map(Followed::Asked);
        }
        Ok(Followed::NotMine)
    }

    /// Takes every record netd wrote, handing each to `handle`.
    pub fn read(&mut self, mut handle: impl FnMut(Record<'_>)) -> Result<(), &'static str> {
        loop {
            let Some((_, endpoint)) = self.channel.as_mut() else { return Ok(()) };
            match self.reader.next(|space| endpoint.receive(space)) {
                Ok(Some(Record::Close { .. })) => return Err("netd sent a client's record"),
                Ok(Some(record)) => handle(record),
                Ok(None) => return Ok(()),
                Err(_) => return Err("netd broke the channel"),
            }
        }
    }

    /// Queues `bytes` for `connection` (split into records).
    pub fn send(&mut self, connection: u8, bytes: &[u8]) {
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            self.outgoing.push_back((connection, Some(chunk.to_vec())));
        }
    }

    /// Queues closing `connection`.
    pub fn close(&mut self, connection: u8) {
        self.outgoing.push_back((connection, None));
    }

    /// Every record still queued, in order (a restarting service hands
    /// them to its next instance; they stay queued should the update be
    /// aborted).
    pub fn queued(&self) -> Vec<(u8, Option<Vec<u8>>)> {
        self.outgoing.iter().cloned().collect()
    }

    /// Queues records a previous instance left unsent, ahead of anything
    /// queued since.
    pub fn requeue(&mut self, records: Vec<(u8, Option<Vec<u8>>)>) {
        for record in records.into_iter().rev() {
            self.outgoing.push_front(record);
        }
    }

    /// Writes what fits and rings netd if anything went.
    pub fn flush(&mut self) -> Result<(), &'static str> {
        let mut wrote = false;
        let Some((_, endpoint)) = self.channel.as_mut() else { return Ok(()) };
        while let Some((connection, bytes)) = self.outgoing.front() {
            let record = match bytes {
                Some(bytes) => Record::Data { connection: *connection, bytes },
                None => Record::Close { connection: *connection },
            };
            let mut buffer = [0u8; MAX_RECORD];
            let length = record.encode(&mut buffer).ok_or("a record too long to encode")?;
            if (endpoint.writable().map_err(|_| "netd broke the channel")? as usize) < length {
                break;
            }
            endpoint.send(&buffer[..length]).map_err(|_| "netd broke the channel")?;
            self.outgoing.pop_front();
            wrote = true;
        }
        if wrote {
            let _ = syscall::send(self.netd, &Message::new(DOORBELL_LABEL, [0; 6]));
        }
        Ok(())
    }

    /// Whether `message` is netd's doorbell.
    pub fn is_doorbell(&self, message: &Message) -> bool {
        message.label == DOORBELL_LABEL && message.sender == self.netd
    }
}
