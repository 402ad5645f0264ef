//! kvstore's Redis front: RESP2 on TCP port 6379 through netd's sockets,
//! the commands of `baton-resp`.
//!
//! The keyspace is a `baton_resp::Keyspace`: a table whose records and
//! index live in blocks of preservable memory, addressed by offsets. An
//! update that resumes kvstore keeps it whole (every page of the process
//! goes across). One that restarts kvstore hands the same blocks over: on
//! `prepare` they are preserved where they are (nothing is copied), and
//! the table's short directory and the connections' state (`Sessions`:
//! clients, half-arrived requests, replies not yet in netd's channel) are
//! written into folios the sub-FDT names; kvstore then reads nothing more
//! from netd. The next instance restores the blocks, uses the table as it
//! is, and reads the channel where this one stopped, so every request is
//! answered once, in order; netd keeps the connections open meanwhile.
//! A next instance with a newer record format migrates the table lazily,
//! between requests, never writing the old one.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use baton_resp::{
    Client, Frame, Framer, HandoverPlace, Keyspace, Limits, MAX_CLIENTS_REPLY, Outcome, ServerInfo, Session, Sessions,
    Store, Table, encode, execute,
};
use baton_user::kho::Folio;
use baton_user::sockets::{Followed, Listener, SocketRecord};
use baton_user::{Message, syscall};

use crate::FORMAT;
use crate::memory::Preservable;

/// The keyspace kvstore serves.
type Keys = Keyspace<Preservable>;
/// Slots of an old table migrated between two requests.
const MIGRATION_BATCH: u64 = 256;

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
    store: Keys,
    /// The table's blocks are preserved for a restart.
    is_table_preserved: bool,
    /// When a migration from an older format began (ns), while it runs.
    migration_started: Option<u64>,
    limits: Limits,
    info: ServerInfo,
    connections: BTreeMap<u8, Connection>,
    next_client_id: u64,
    /// The folios the keyspace and sessions were written into for a
    /// restart, preserved until the update happens (or is aborted).
    /// Nothing is read from or sent to netd meanwhile: it is all the next
    /// instance's.
    handover: Option<Vec<Folio>>,
}

/// What a previous instance handed over.
pub type Restored = (Keys, Sessions);

/// The table's hash key: a hostile client cannot aim its keys at one
/// slot without it. From the clock (Baton has no entropy source yet).
fn seed() -> [u64; 2] {
    let now = syscall::clock();
    [now ^ 0x6b76_7374_6f72_6531, now.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15]
}

/// An empty keyspace; `None` (said why) without memory for one.
fn empty_keyspace() -> Option<Keys> {
    match Keyspace::new(Preservable, FORMAT, seed()) {
        Ok(keys) => Some(keys),
        Err(error) => {
            log::warn!("kvstore: no memory for the Redis table: {error:?}");
            None
        }
    }
}

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
            None => (Listener::new(netd, PORT, sockets, "kvstore"), empty_keyspace()?, Sessions::default()),
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
        let migration_started = (store.info().migrating_keys > 0).then(syscall::clock);
        let mut redis = Redis {
            listener,
            store,
            is_table_preserved: false,
            migration_started,
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

    /// An update restarts kvstore: preserves the table's blocks where
    /// they are and writes its directory and the sessions into preserved
    /// folios; kvstore then leaves netd's channel alone. `None` when they
    /// cannot be preserved (the keys are then lost, and said so).
    pub fn prepare_restart(&mut self) -> Option<HandoverPlace> {
        self.abort_handover();
        // A directory names one table: a migration under way finishes now
        // (it only runs after an update into a newer format).
        if !self.store.finish_migration() {
            log::warn!("kvstore: no memory to finish migrating the Redis table; its keys are lost");
            return None;
        }
        self.migration_done();
        let directory = self.store.directory()?;
        let blocks = self.store.blocks();
        for block in &blocks {
            match syscall::kho_preserve(block.address, block.size_bytes() as u64) {
                Ok(()) | Err(baton_user::Error::AlreadyExists) => {}
                Err(error) => {
                    log::warn!("kvstore: a block of the Redis table cannot be preserved ({error}); its keys are lost");
                    self.unpreserve_table();
                    return None;
                }
            }
        }
        self.is_table_preserved = true;
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
            unsent: self.listener.queued(),
        };
        let session_bytes = sessions.to_bytes();
        let total = directory.len() + session_bytes.len();
        let Some((order, folios)) = write_folios(&[&directory, &session_bytes]) else {
            log::warn!(
                "kvstore: no memory to hand the Redis table's directory over ({total} bytes); its keys are lost"
            );
            self.unpreserve_table();
            return None;
        };
        let place = HandoverPlace {
            order,
            keyspace_bytes: directory.len() as u64,
            session_bytes: session_bytes.len() as u64,
            folios: folios.iter().map(|folio| folio.physical).collect(),
        };
        let info = self.store.info();
        log::info!(
            "kvstore: {} Redis key(s) handed over in place ({} block(s), {} bytes of preservable memory) with {} \
             connection(s)",
            self.store.len(),
            info.blocks,
            info.allocated_bytes,
            sessions.sessions.len(),
        );
        self.handover = Some(folios);
        Some(place)
    }

    fn unpreserve_table(&mut self) {
        for block in self.store.blocks() {
            let _ = syscall::kho_unpreserve(block.address, block.size_bytes() as u64);
        }
        self.is_table_preserved = false;
    }

    /// Whether a migration from an older format is under way.
    pub fn is_migrating(&self) -> bool {
        self.migration_started.is_some()
    }

    /// One batch of the migration, between requests.
    fn migrate_step(&mut self) {
        if self.migration_started.is_some() && self.handover.is_none() && !self.store.migrate(MIGRATION_BATCH) {
            self.migration_done();
        }
    }

    fn migration_done(&mut self) {
        if let Some(started) = self.migration_started.take() {
            log::info!(
                "kvstore: the Redis table migrated to format {FORMAT} in the background ({} key(s), {} ms); the old \
                 table is freed",
                self.store.len(),
                (syscall::clock() - started) / 1_000_000
            );
        }
    }

    /// The update did not happen: the folios are not needed.
    pub fn abort_handover(&mut self) {
        for folio in self.handover.take().unwrap_or_default() {
            release(&folio);
        }
        if self.is_table_preserved {
            self.unpreserve_table();
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
        self.migrate_step();
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

/// Unpreserves (if it was) and frees a folio.
fn release(folio: &Folio) {
    let _ = syscall::kho_unpreserve(folio.address, folio.size_bytes());
    let _ = syscall::free_preservable(folio.address);
}

/// `parts`, one after the other, written into preserved folios laid out
/// as `HandoverPlace` says; `None` (and nothing kept) when memory runs
/// out.
fn write_folios(parts: &[&[u8]]) -> Option<(u32, Vec<Folio>)> {
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let (order, count) = HandoverPlace::layout(total as u64)?;
    let mut folios: Vec<Folio> = Vec::with_capacity(count);
    for _ in 0..count {
        match Folio::allocate(order) {
            Ok(folio) => folios.push(folio),
            Err(error) => {
                log::warn!("kvstore: a handover folio: {error}");
                folios.iter().for_each(release);
                return None;
            }
        }
    }
    let folio_bytes = 4096usize << order;
    let mut at = 0;
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            let (index, offset) = (at / folio_bytes, at % folio_bytes);
            let room = (folio_bytes - offset).min(rest.len());
            folios[index].bytes_mut()[offset..offset + room].copy_from_slice(&rest[..room]);
            rest = &rest[room..];
            at += room;
        }
    }
    for folio in &folios {
        if let Err(error) = folio.preserve() {
            log::warn!("kvstore: a handover folio cannot be preserved: {error}");
            folios.iter().for_each(release);
            return None;
        }
    }
    Some((order, folios))
}

/// What a previous instance handed over, taken back before `kho_done`:
/// the folios of the directory and sessions, and the table restored from
/// the directory (only this is part of the handover; reading the sessions
/// is not).
pub struct HandedOver {
    place: HandoverPlace,
    folios: Vec<Folio>,
    keys: Option<Keys>,
}

/// The first `length` bytes the folios hold, read out.
fn folio_bytes(folios: &mut [Folio], length: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(length);
    for folio in folios {
        let wanted = (length - bytes.len()).min(folio.size_bytes() as usize);
        bytes.extend_from_slice(&folio.bytes_mut()[..wanted]);
    }
    bytes
}

/// Takes the folios at `place` back from the handover, and the table its
/// directory names.
pub fn restore_handover(place: HandoverPlace) -> HandedOver {
    let mut folios = Vec::new();
    for &physical in &place.folios {
        match Folio::restore(physical, place.order) {
            Ok(folio) => folios.push(folio),
            Err(error) => log::warn!("kvstore: cannot restore a handover folio at {physical:#x}: {error}"),
        }
    }
    let mut keys = None;
    if folios.len() == place.folios.len()
        && let Ok(length) = usize::try_from(place.keyspace_bytes)
    {
        let directory = folio_bytes(&mut folios, length);
        if Table::is_directory(&directory) {
            match Keyspace::from_directory(Preservable, &directory, FORMAT, seed()) {
                Ok(table) => keys = Some(table),
                Err(error) => log::warn!("kvstore: the handed-over Redis table is refused: {error}; starting empty"),
            }
        }
    }
    HandedOver { place, folios, keys }
}

/// Reads the sessions (and a keyspace an instance from before the table
/// wrote as bytes) out of the handed-over folios and frees them.
pub fn take_over(handed_over: HandedOver) -> Option<Restored> {
    let HandedOver { place, mut folios, keys } = handed_over;
    let total = place.keyspace_bytes.checked_add(place.session_bytes).and_then(|total| usize::try_from(total).ok());
    let bytes = match total {
        Some(total) if folios.len() == place.folios.len() => folio_bytes(&mut folios, total),
        _ => Vec::new(),
    };
    for folio in &folios {
        let _ = syscall::free_preservable(folio.address);
    }
    let restored = (total == Some(bytes.len()))
        .then(|| {
            let (keyspace, sessions) = bytes.split_at(place.keyspace_bytes as usize);
            // A previous instance that knew no sessions wrote none.
            let sessions = if sessions.is_empty() { Some(Sessions::default()) } else { Sessions::from_bytes(sessions) };
            let keys = match keys {
                Some(keys) => keys,
                None if baton_resp::is_keyspace_bytes(keyspace) => {
                    let mut keys = empty_keyspace()?;
                    baton_resp::load_keyspace_bytes(keyspace, &mut keys).then_some(keys)?
                }
                None => return None,
            };
            Some((keys, sessions?))
        })
        .flatten();
    match &restored {
        Some((keys, sessions)) => {
            let info = keys.info();
            log::info!(
                "kvstore: {} Redis key(s) (format {}, {} to migrate) and {} connection(s) taken over",
                keys.len(),
                info.format,
                info.migrating_keys,
                sessions.sessions.len()
            )
        }
        None => log::warn!("kvstore: the handed-over Redis keyspace does not read; starting empty"),
    }
    restored
}
