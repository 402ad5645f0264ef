//! TCP sockets for other services: a client asks netd (IPC, `LISTEN_LABEL`)
//! to listen on a port; netd keeps a few smoltcp sockets listening there,
//! lays a channel out in a region of its own, grants it to the client, and
//! carries each connection's events and bytes as `baton-sockets` records
//! in the channel, ringing the client's doorbell when it wrote some.
//!
//! netd owns the region, like the sockets: a client that restarts (a new
//! binary at an update) loses neither. Its next instance asks again, gets
//! the same grant, attaches to the channel where its previous instance
//! stopped reading, and is told every connection still open (`Accepted`
//! again), so TCP clients outside never notice. A restarted client that
//! was handed its connections by its previous instance asks as a resumed
//! one, and is told nothing again. Everything lives in
//! memory the update hands over, so a resumed netd and a resumed client
//! carry on mid-connection.

use alloc::string::String;
use alloc::vec::Vec;
use baton_sockets::{DOORBELL_LABEL, MAX_PAYLOAD, MAX_RECORD, Record, RecordReader};
use baton_user::channel::{Endpoint, Region};
use baton_user::{Error, Message, syscall};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

/// The most connections one listener accepts at a time.
pub const MAX_CONNECTIONS: u64 = 128;
/// The most closed connections a listener lets finish closing beside its
/// slots; past that the oldest is dropped (the next segment its peer sends
/// gets a reset: no socket has it any more).
const MAX_LINGERING: usize = 64;
/// Each channel: an order-3 folio (32 KiB), a 4 KiB header and two 8 KiB
/// rings.
const REGION_ORDER: u32 = 3;
const REGION_BYTES: u64 = 32 * 1024;
const RING_BYTES: u32 = 8 * 1024;

/// One accepted-or-listening socket of a listener: a connection number.
struct Connection {
    handle: SocketHandle,
    /// The client was told it was accepted; the number is the
    /// connection's until the client sends `Close`.
    is_announced: bool,
    /// The client was told `Closed`.
    is_told_closed: bool,
}

/// One client's listening port.
pub struct Listener {
    client: u64,
    client_name: String,
    grant: u64,
    region: u64,
    port: u16,
    endpoint: Endpoint<Region>,
    reader: RecordReader,
    /// Client bytes a socket could not take yet: (connection, bytes).
    pending: Option<(u8, Vec<u8>)>,
    connections: Vec<Connection>,
    /// Sockets of connections that are over for the client, finishing
    /// their close (TIME-WAIT, LAST-ACK) while a fresh socket listens in
    /// their slot, so a new client is never refused meanwhile.
    lingering: Vec<SocketHandle>,
}

/// Why a listen request is refused.
pub enum ListenError {
    /// No memory for the region, or it cannot be granted.
    Kernel(Error),
    /// Bad arguments (port 0, no connections, a port another listener
    /// has).
    Invalid,
}

fn tcp_socket() -> tcp::Socket<'static> {
    let mut socket =
        tcp::Socket::new(tcp::SocketBuffer::new(alloc::vec![0; 8192]), tcp::SocketBuffer::new(alloc::vec![0; 8192]));
    // Small requests are answered at once: no Nagle coalescing behind an
    // unacknowledged segment, no delayed acknowledgement.
    socket.set_nagle_enabled(false);
    socket.set_ack_delay(None);
    socket
}

impl Listener {
    /// Lays a channel out in a region of netd's, grants it to `client`
    /// (named `client_name`) and starts `connections` sockets listening on
    /// `port`.
    pub fn new(
        client: u64,
        client_name: &str,
        port: u64,
        connections: u64,
        sockets: &mut SocketSet<'static>,
    ) -> Result<Listener, ListenError> {
        let port = u16::try_from(port).ok().filter(|port| *port != 0).ok_or(ListenError::Invalid)?;
        if !(1..=MAX_CONNECTIONS).contains(&connections) {
            return Err(ListenError::Invalid);
        }
        let region = syscall::allocate_preservable(REGION_ORDER).map_err(ListenError::Kernel)?;
        // SAFETY: the folio is netd's preservable memory, mapped read-write
        // until netd frees it (after revoking the grant and dropping the
        // endpoint, in `remove`).
        let memory = unsafe { Region::new(region, REGION_BYTES) };
        let endpoint = Endpoint::create(memory, RING_BYTES).map_err(|_| ListenError::Invalid)?;
        let grant = match syscall::share_grant(region, REGION_BYTES, client_name) {
            Ok(grant) => grant,
            Err(error) => {
                let _ = syscall::free_preservable(region);
                return Err(ListenError::Kernel(error));
            }
        };
        let mut listener = Listener {
            client,
            client_name: String::from(client_name),
            grant,
            region,
            port,
            endpoint,
            reader: RecordReader::new(),
            pending: None,
            connections: Vec::new(),
            lingering: Vec::new(),
        };
        for _ in 0..connections {
            let mut socket = tcp_socket();
            if socket.listen(port).is_err() {
                listener.remove(sockets);
                return Err(ListenError::Invalid);
            }
            let handle = sockets.add(socket);
            listener.connections.push(Connection { handle, is_announced: false, is_told_closed: false });
        }
        Ok(listener)
    }

    /// The channel a client maps: (grant, length in bytes).
    pub fn channel(&self) -> (u64, u64) {
        (self.grant, REGION_BYTES)
    }

    /// The client's name.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// A new instance of the client asks again (it restarted and knows
    /// none of the connections): every connection still open is
    /// announced to it anew; one it had been told was closed is reset, as
    /// the new instance cannot know it.
    pub fn reannounce(&mut self, sockets: &mut SocketSet<'static>) {
        for index in 0..self.connections.len() {
            let Some(state) = self.connections.get_mut(index) else { continue };
            if !state.is_announced {
                continue;
            }
            if state.is_told_closed {
                sockets.get_mut::<tcp::Socket>(state.handle).abort();
                Self::release(state, self.port, &mut self.lingering, sockets);
            } else {
                state.is_announced = false;
            }
        }
    }

    /// The client is done with a connection (it sent `Close`, or a new
    /// instance never knew it): the socket finishes closing aside and the
    /// number listens again at once, on a fresh socket when the old one
    /// is still closing.
    fn release(state: &mut Connection, port: u16, lingering: &mut Vec<SocketHandle>, sockets: &mut SocketSet<'static>) {
        let socket = sockets.get_mut::<tcp::Socket>(state.handle);
        socket.close();
        if socket.state() != tcp::State::Closed {
            lingering.push(state.handle);
            state.handle = sockets.add(tcp_socket());
        }
        state.is_announced = false;
        state.is_told_closed = false;
        if sockets.get_mut::<tcp::Socket>(state.handle).listen(port).is_err() {
            log::warn!("netd: cannot listen on TCP port {port} again");
        }
    }

    /// How many of its sockets wait for a new connection.
    pub fn listening(&self, sockets: &SocketSet<'static>) -> usize {
        let state = |connection: &Connection| sockets.get::<tcp::Socket>(connection.handle).state();
        self.connections.iter().filter(|connection| state(connection) == tcp::State::Listen).count()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client.
    pub fn client(&self) -> u64 {
        self.client
    }

    /// Gives the sockets and the region back (the client went away): the
    /// grant is revoked before the memory is freed.
    pub fn remove(self, sockets: &mut SocketSet<'static>) {
        for handle in self.connections.iter().map(|connection| connection.handle).chain(self.lingering) {
            sockets.get_mut::<tcp::Socket>(handle).abort();
            sockets.remove(handle);
        }
        let _ = syscall::share_revoke(self.grant);
        if let Err(error) = syscall::free_preservable(self.region) {
            log::warn!("netd: the channel of port {} cannot be freed: {error}", self.port);
        }
    }

    /// Moves bytes both ways and reports connection events. `Err` when the
    /// channel is broken (the client wrote nonsense): drop the listener.
    pub fn service(&mut self, sockets: &mut SocketSet<'static>) -> Result<(), &'static str> {
        self.take_from_client(sockets)?;
        let wrote = self.pass_to_client(sockets)?;
        if wrote {
            // A full mailbox already holds a doorbell: nothing is lost. A
            // client that is gone takes its listener with it.
            if let Err(Error::NotFound | Error::PeerGone) =
                syscall::send(self.client, &Message::new(DOORBELL_LABEL, [0; 6]))
            {
                return Err("the client is gone");
            }
        }
        Ok(())
    }

    /// Takes the client's records and hands their bytes to the sockets,
    /// stopping at the first a socket cannot take yet.
    fn take_from_client(&mut self, sockets: &mut SocketSet<'static>) -> Result<(), &'static str> {
        loop {
            if let Some((connection, bytes)) = self.pending.take() {
                let Some(handle) = self.connections.get(usize::from(connection)).map(|c| c.handle) else {
                    continue;
                };
                let socket = sockets.get_mut::<tcp::Socket>(handle);
                let sent = socket.send_slice(&bytes).unwrap_or(bytes.len());
                if sent < bytes.len() {
                    self.pending = Some((connection, bytes[sent..].to_vec()));
                    return Ok(());
                }
            }
            let endpoint = &mut self.endpoint;
            let record = match self.reader.next(|space| endpoint.receive(space)) {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(()),
                Err(_) => return Err("the client broke the channel"),
            };
            match record {
                Record::Data { connection, bytes } => {
                    // Also after `Closed`: a remote end that only shut
                    // its sending side still reads the replies.
                    let is_live = self.connections.get(usize::from(connection)).is_some_and(|c| c.is_announced);
                    if is_live {
                        self.pending = Some((connection, bytes.to_vec()));
                    }
                }
                Record::Close { connection } => {
                    if let Some(state) = self.connections.get_mut(usize::from(connection))
                        && state.is_announced
                    {
                        Self::release(state, self.port, &mut self.lingering, sockets);
                    }
                }
                Record::Accepted { .. } | Record::Closed { .. } => return Err("the client sent netd's records"),
            }
        }
    }

    /// Writes a record if the ring has room for all of it.
    fn put(endpoint: &mut Endpoint<Region>, record: &Record<'_>) -> Result<bool, &'static str> {
        let mut buffer = [0u8; MAX_RECORD];
        let length = record.encode(&mut buffer).ok_or("a record netd cannot encode")?;
        let room = endpoint.writable().map_err(|_| "the client broke the channel")?;
        if (room as usize) < length {
            return Ok(false);
        }
        endpoint.send(&buffer[..length]).map_err(|_| "the client broke the channel")?;
        Ok(true)
    }

    /// Tells the client what happened on each connection and passes on
    /// what arrived; re-arms sockets reset before they were announced.
    fn pass_to_client(&mut self, sockets: &mut SocketSet<'static>) -> Result<bool, &'static str> {
        let mut wrote = false;
        for (index, state) in self.connections.iter_mut().enumerate() {
            let connection = index as u8;
            let socket = sockets.get_mut::<tcp::Socket>(state.handle);
            if !state.is_announced {
                match socket.state() {
                    // A connection the remote end already finished
                    // sending on is announced too, then said closed.
                    tcp::State::Established | tcp::State::CloseWait => {}
                    tcp::State::Closed => {
                        // Reset while connecting: listen again.
                        if socket.listen(self.port).is_err() {
                            log::warn!("netd: cannot listen on TCP port {} again", self.port);
                        }
                        continue;
                    }
                    _ => continue,
                }
                let (address, port) = match socket.remote_endpoint() {
                    Some(endpoint) => match endpoint.addr {
                        IpAddress::Ipv4(address) => (address.octets(), endpoint.port),
                    },
                    None => ([0; 4], 0),
                };
                if !Self::put(&mut self.endpoint, &Record::Accepted { connection, address, port })? {
                    continue;
                }
                state.is_announced = true;
                wrote = true;
            }
            if state.is_told_closed {
                continue;
            }
            while socket.can_recv() {
                let room = self.endpoint.writable().map_err(|_| "the client broke the channel")? as usize;
                let Some(space) = room.checked_sub(baton_sockets::HEADER_BYTES).filter(|space| *space > 0) else {
                    break;
                };
                let mut chunk = [0u8; MAX_PAYLOAD];
                let wanted = space.min(MAX_PAYLOAD);
                let Ok(count) = socket.recv_slice(&mut chunk[..wanted]) else { break };
                if count == 0 {
                    break;
                }
                Self::put(&mut self.endpoint, &Record::Data { connection, bytes: &chunk[..count] })?;
                wrote = true;
            }
            // The remote end finished sending (or reset) and every byte
            // it sent is passed on: the client is told, and answers with
            // `Close` when it is done.
            if !socket.may_recv() && !socket.can_recv() {
                if !Self::put(&mut self.endpoint, &Record::Closed { connection })? {
                    continue;
                }
                state.is_told_closed = true;
                wrote = true;
            }
        }
        self.lingering.retain(|&handle| {
            let is_closed = sockets.get::<tcp::Socket>(handle).state() == tcp::State::Closed;
            if is_closed {
                sockets.remove(handle);
            }
            !is_closed
        });
        while self.lingering.len() > MAX_LINGERING {
            let oldest = self.lingering.remove(0);
            sockets.get_mut::<tcp::Socket>(oldest).abort();
            sockets.remove(oldest);
        }
        Ok(wrote)
    }
}
