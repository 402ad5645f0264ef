//! kvstore's Redis front: RESP2 on TCP port 6379 through netd's sockets,
//! the commands of `baton-resp`.
//!
//! The keyspace is a `baton_resp::MemoryStore` in kvstore's memory: an
//! update that resumes kvstore keeps it whole (every page of the process
//! goes across). One that restarts kvstore gets it as explicit state: on
//! `prepare` the keyspace and the connections' state (`Sessions`: clients,
//! half-arrived requests, replies not yet in netd's channel) are written
//! into one preservable folio (at most 4 MiB for now) that the sub-FDT
//! names, and kvstore reads nothing more from netd. The next instance
//! reads both back before it serves anyone and reads the channel where
//! this one stopped, so every request is answered once, in order; netd
//! keeps the connections open meanwhile. A table that lives in
//! preservable memory all along (no copy at `prepare`, any size) is issue
//! 16's item 2.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use baton_resp::{
    Client, Frame, Framer, Limits, MAX_CLIENTS_REPLY, MemoryStore, Outcome, ServerInfo, Session, Sessions, Store,
    encode, execute,
};
use baton_user::kho::Folio;
use baton_user::sockets::{Followed, Listener, SocketRecord};
use baton_user::{MAX_USER_FOLIO_ORDER, Message, syscall};

/// The Redis port.
const PORT: u16 = 6379;
/// Sockets netd keeps beyond `maxclients`, so a client past the limit is
/// told so (Redis's error) rather than refused by TCP.
const SPARE_CONNECTIONS: usize = 8;

/// One connection's reader and state.
struct Connection {
    framer: Framer,
    client: Client,
}

/// The Redis side of kvstore.
pub struct Redis {
    listener: Listener,
    store: MemoryStore,
    limits: Limits,
    info: ServerInfo,
    connections: BTreeMap<u8, Connection>,
    next_client_id: u64,
    /// The keyspace and sessions written out for a restart, preserved
    /// until the update happens (or is aborted). Nothing is read from or
    /// sent to netd meanwhile: it is all the next instance's.
    handover: Option<Folio>,
}

/// Where the state handed to the next instance is: (physical address,
/// folio order, keyspace bytes, session bytes after them).
pub type Handover = (u64, u32, u64, u64);

/// What a previous instance handed over.
pub type Restored = (MemoryStore, Sessions);

impl Redis {
    /// Asks netd (service `netd`) for the port, with the keyspace a
    /// previous instance handed over, if any.
    pub fn start(netd: u64, restored: Option<Restored>) -> Option<Redis> {
        // `kvstore.maxclients=`, `kvstore.maxmemory=`... on the kernel
        // command line.
        let (limits, problems) = Limits::from_options(syscall::service_option);
        for key in problems {
            log::warn!("kvstore: kvstore.{key}= does not read as a size in range; the default is kept");
        }
        let sockets = (limits.max_clients + SPARE_CONNECTIONS).min(usize::from(u8::MAX)) as u8;
        let (listener, store, sessions) = match restored {
            // The connections are this instance's: netd tells it none
            // again, unless netd itself started anew.
            Some((store, sessions)) => match Listener::resume(netd, PORT, sockets, "kvstore") {
                Ok((listener, false)) => (Ok(listener), store, sessions),
                Ok((listener, true)) => (Ok(listener), store, Sessions::default()),
                Err(error) => (Err(error), store, sessions),
            },
            None => (Listener::new(netd, PORT, sockets, "kvstore"), MemoryStore::new(), Sessions::default()),
        };
        let listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                log::warn!("kvstore: netd refused port {PORT}: {error}");
                return None;
            }
        };
        log::info!(
            "kvstore: serving Redis on TCP port {PORT} through netd (maxclients {}, maxmemory {} bytes)",
            limits.max_clients,
            limits.max_memory_bytes
        );
        let mut info = ServerInfo::default();
        refresh_kernel_info(&mut info);
        let mut redis = Redis {
            listener,
            store,
            limits,
            info,
            connections: BTreeMap::new(),
            next_client_id: sessions.next_client_id.max(1),
            handover: None,
        };
        for Session { connection, client, framer } in sessions.sessions {
            redis.connections.insert(connection, Connection { framer, client });
        }
        redis.listener.requeue(sessions.unsent);
        // Requests that had half arrived may be whole now.
        redis.service();
        Some(redis)
    }

    /// An update restarts kvstore: writes the keyspace and the sessions
    /// into a preservable folio and preserves it; kvstore then leaves
    /// netd's channel alone. `None` when they do not fit one (the keys are
    /// then lost, and said so).
    pub fn prepare_restart(&mut self) -> Option<Handover> {
        self.abort_handover();
        let mut bytes = self.store.to_bytes();
        let keyspace_bytes = bytes.len() as u64;
        let sessions = Sessions {
            next_client_id: self.next_client_id,
            sessions: self
                .connections
                .iter()
                .map(|(number, connection)| Session {
                    connection: *number,
                    client: connection.client.clone(),
                    framer: connection.framer.clone(),
                })
                .collect(),
            unsent: self.listener.take_outgoing(),
        };
        // Kept queued too, should the update be aborted.
        self.listener.requeue(sessions.unsent.clone());
        bytes.extend_from_slice(&sessions.to_bytes());
        let order = (0..=MAX_USER_FOLIO_ORDER).find(|order| (4096_u64 << order) >= bytes.len() as u64);
        let Some(order) = order else {
            log::warn!("kvstore: the Redis keyspace ({} bytes) is too large to hand over yet; it is lost", bytes.len());
            return None;
        };
        let mut folio = Folio::allocate(order).ok()?;
        folio.bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        folio.preserve().ok()?;
        let handover = (folio.physical, order, keyspace_bytes, bytes.len() as u64 - keyspace_bytes);
        log::info!(
            "kvstore: {} Redis key(s) and {} connection(s) handed over ({} bytes)",
            self.store.len(),
            sessions.sessions.len(),
            bytes.len()
        );
        self.handover = Some(folio);
        Some(handover)
    }

    /// The update did not happen: the folio is not needed.
    pub fn abort_handover(&mut self) {
        if let Some(folio) = self.handover.take() {
            let _ = syscall::kho_unpreserve(folio.address, folio.size_bytes());
            let _ = syscall::free_preservable(folio.address);
        }
    }

    /// Whether replies wait for room in the channel (and may go: not
    /// after they were handed over).
    pub fn has_outgoing(&self) -> bool {
        self.handover.is_none() && self.listener.has_outgoing()
    }

    /// A kernel message: follows netd through updates. Whether it was
    /// about netd's channel.
    pub fn follow(&mut self, message: &Message) -> bool {
        match self.listener.follow(message) {
            Ok(Followed::Asked(is_anew)) => {
                // Asked after `continued`: a new kernel.
                refresh_kernel_info(&mut self.info);
                if is_anew {
                    // A new netd: none of the connections exist any more.
                    self.connections.clear();
                }
                true
            }
            Ok(Followed::NotMine) => false,
            Err(error) => {
                log::warn!("kvstore: netd refused port {PORT}: {error}");
                true
            }
        }
    }

    /// Whether `message` is netd's doorbell.
    pub fn is_doorbell(&self, message: &Message) -> bool {
        self.listener.is_doorbell(message)
    }

    /// Answers every whole request that has arrived, in order per
    /// connection.
    pub fn service(&mut self) {
        if self.handover.is_some() {
            // Handed over: what netd holds is the next instance's.
            return;
        }
        /// What happened on a connection, in the order netd said it.
        enum Event {
            Accepted,
            Data(Vec<u8>),
            Closed,
        }
        let mut records: Vec<(u8, Event)> = Vec::new();
        let read = self.listener.read(|record| match record {
            SocketRecord::Accepted { connection, .. } => records.push((connection, Event::Accepted)),
            SocketRecord::Data { connection, bytes } => records.push((connection, Event::Data(bytes.to_vec()))),
            SocketRecord::Closed { connection } => records.push((connection, Event::Closed)),
            SocketRecord::Close { .. } => {}
        });
        if let Err(why) = read {
            log::warn!("kvstore: {why}");
        }
        let now_ms = syscall::clock() / 1_000_000;
        self.info.uptime_ms = now_ms;
        for (number, event) in records {
            let bytes = match event {
                Event::Accepted if self.connections.len() >= self.limits.max_clients => {
                    // Redis's answer past the limit; the others go on.
                    self.listener.send(number, MAX_CLIENTS_REPLY);
                    self.listener.close(number);
                    self.info.rejected_connections += 1;
                    continue;
                }
                Event::Accepted => {
                    let client = Client::new(self.next_client_id);
                    self.next_client_id += 1;
                    self.connections.insert(number, Connection { framer: Framer::new(), client });
                    continue;
                }
                // After kvstore closed it itself, nothing of it is read.
                Event::Data(_) | Event::Closed if !self.connections.contains_key(&number) => continue,
                Event::Data(bytes) => bytes,
                Event::Closed => {
                    // Its replies went first; then netd may reuse it.
                    self.connections.remove(&number);
                    self.listener.close(number);
                    continue;
                }
            };
            self.info.connected_clients = self.connections.len();
            let limits = self.limits;
            let mut out = Vec::new();
            let mut is_closing = false;
            let Redis { connections, store, info, .. } = self;
            let Some(connection) = connections.get_mut(&number) else { continue };
            connection.framer.push(&bytes);
            loop {
                match connection.framer.next(limits.max_value_bytes, limits.max_arguments) {
                    Ok(Some(request)) => {
                        info.commands_processed += 1;
                        let (reply, outcome) = execute(store, &mut connection.client, &limits, info, now_ms, &request);
                        encode(&reply, &mut out);
                        if outcome == Outcome::Close {
                            is_closing = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        log::warn!("kvstore: connection {number}: {}; closing it", error.reply());
                        encode(&Frame::Error(alloc::string::String::from(error.reply())), &mut out);
                        is_closing = true;
                        break;
                    }
                }
            }
            if !out.is_empty() {
                self.listener.send(number, &out);
            }
            if is_closing {
                self.listener.close(number);
                self.connections.remove(&number);
            }
        }
        if let Err(why) = self.listener.flush() {
            log::warn!("kvstore: {why}");
        }
    }
}

/// What INFO's `baton` section says about the kernel kvstore runs on,
/// from `kernel_info` (left out if the call fails, never made up).
fn refresh_kernel_info(info: &mut ServerInfo) {
    let Ok(kernel) = syscall::kernel_info() else { return };
    info.kernel_version = Some(alloc::string::String::from(kernel.version.as_str()));
    info.generation = Some(kernel.generation);
    info.last_blackout_us = kernel.last_update().map(|update| update.blackout_us);
    info.update_history = kernel
        .updates()
        .iter()
        .map(|update| {
            alloc::format!(
                "generation={},from={},to={},blackout_us={},preserved_bytes={}",
                update.generation,
                update.from.as_str(),
                update.to.as_str(),
                update.blackout_us,
                update.preserved_bytes
            )
        })
        .collect();
}

/// The keyspace and sessions a previous instance handed over at
/// `handover`, read back and their folio freed.
pub fn take_over(handover: Handover) -> Option<Restored> {
    let (physical, order, keyspace, sessions) = handover;
    let mut folio = Folio::restore(physical, order).ok()?;
    let bytes = folio.bytes_mut();
    let end = keyspace.checked_add(sessions).and_then(|end| usize::try_from(end).ok());
    let restored = end.and_then(|end| bytes.get(..end)).and_then(|bytes| {
        let (keys, sessions) = bytes.split_at(keyspace as usize);
        // A previous instance that knew no sessions wrote none.
        let sessions = if sessions.is_empty() { Some(Sessions::default()) } else { Sessions::from_bytes(sessions) };
        Some((MemoryStore::from_bytes(keys)?, sessions?))
    });
    let _ = syscall::free_preservable(folio.address);
    match &restored {
        Some((store, sessions)) => {
            log::info!("kvstore: {} Redis key(s) and {} connection(s) taken over", store.len(), sessions.sessions.len())
        }
        None => log::warn!("kvstore: the handed-over Redis keyspace does not read; starting empty"),
    }
    restored
}
