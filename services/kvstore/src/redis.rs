//! kvstore's Redis front: RESP2 on TCP port 6379 through netd's sockets,
//! the commands of `baton-resp`.
//!
//! The keyspace is a `baton_resp::MemoryStore` in kvstore's memory: an
//! update that resumes kvstore keeps it whole (every page of the process
//! goes across). One that restarts kvstore gets it as explicit state: on
//! `prepare` the keyspace is written into one preservable folio (at most
//! 4 MiB for now) that the sub-FDT names, and the next instance reads it
//! back before it serves anyone; netd keeps the connections open
//! meanwhile. A table that lives in preservable memory all along (no copy
//! at `prepare`, any size) is issue 16's item 2.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use baton_resp::{Client, Frame, Framer, Limits, MemoryStore, Outcome, ServerInfo, Store, encode, execute};
use baton_user::kho::Folio;
use baton_user::sockets::{Followed, Listener, SocketRecord};
use baton_user::{MAX_USER_FOLIO_ORDER, Message, syscall};

/// The Redis port.
const PORT: u16 = 6379;
/// Connections at a time.
const CONNECTIONS: u8 = 8;

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
    /// The keyspace written out for a restart, preserved until the update
    /// happens (or is aborted).
    handover: Option<Folio>,
}

/// Where a keyspace handed to the next instance is: (physical address,
/// folio order, bytes).
pub type Handover = (u64, u32, u64);

impl Redis {
    /// Asks netd (service `netd`) for the port, with the keyspace a
    /// previous instance handed over, if any.
    pub fn start(netd: u64, restored: Option<MemoryStore>) -> Option<Redis> {
        match Listener::new(netd, PORT, CONNECTIONS, "kvstore") {
            Ok(listener) => {
                log::info!("kvstore: serving Redis on TCP port {PORT} through netd");
                // No call tells a service the kernel's version, generation
                // or blackouts yet: INFO leaves them out.
                let info = ServerInfo::default();
                Some(Redis {
                    listener,
                    store: restored.unwrap_or_default(),
                    limits: Limits::default(),
                    info,
                    connections: BTreeMap::new(),
                    next_client_id: 1,
                    handover: None,
                })
            }
            Err(error) => {
                log::warn!("kvstore: netd refused port {PORT}: {error}");
                None
            }
        }
    }

    /// An update restarts kvstore: writes the keyspace into a preservable
    /// folio and preserves it. `None` when it does not fit one (it is then
    /// lost, and said so).
    pub fn prepare_restart(&mut self) -> Option<Handover> {
        self.abort_handover();
        let bytes = self.store.to_bytes();
        let order = (0..=MAX_USER_FOLIO_ORDER).find(|order| (4096_u64 << order) >= bytes.len() as u64);
        let Some(order) = order else {
            log::warn!("kvstore: the Redis keyspace ({} bytes) is too large to hand over yet; it is lost", bytes.len());
            return None;
        };
        let mut folio = Folio::allocate(order).ok()?;
        folio.bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        folio.preserve().ok()?;
        let handover = (folio.physical, order, bytes.len() as u64);
        log::info!("kvstore: {} Redis key(s) handed over ({} bytes)", self.store.len(), bytes.len());
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

    /// Whether replies wait for room in the channel.
    pub fn has_outgoing(&self) -> bool {
        self.listener.has_outgoing()
    }

    /// A kernel message: follows netd through updates. Whether it was
    /// about netd's channel.
    pub fn follow(&mut self, message: &Message) -> bool {
        match self.listener.follow(message) {
            Ok(Followed::Asked(_)) => true,
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
        let mut records: Vec<(u8, Option<Vec<u8>>)> = Vec::new();
        let read = self.listener.read(|record| match record {
            SocketRecord::Accepted { connection, .. } => records.push((connection, Some(Vec::new()))),
            SocketRecord::Data { connection, bytes } => records.push((connection, Some(bytes.to_vec()))),
            SocketRecord::Closed { connection } => records.push((connection, None)),
            SocketRecord::Close { .. } => {}
        });
        if let Err(why) = read {
            log::warn!("kvstore: {why}");
        }
        let now_ms = syscall::clock() / 1_000_000;
        for (number, bytes) in records {
            let Some(bytes) = bytes else {
                self.connections.remove(&number);
                self.listener.forget(number);
                continue;
            };
            self.info.connected_clients = self.connections.len();
            let limits = self.limits;
            let mut out = Vec::new();
            let mut is_closing = false;
            let Redis { connections, next_client_id, store, info, .. } = self;
            let connection = connections.entry(number).or_insert_with(|| {
                let client = Client::new(*next_client_id);
                *next_client_id += 1;
                Connection { framer: Framer::new(), client }
            });
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

/// The keyspace a previous instance handed over at `handover`, read back
/// and its folio freed.
pub fn take_over(handover: Handover) -> Option<MemoryStore> {
    let (physical, order, bytes) = handover;
    let mut folio = Folio::restore(physical, order).ok()?;
    let store = folio.bytes_mut().get(..bytes as usize).and_then(MemoryStore::from_bytes);
    let _ = syscall::free_preservable(folio.address);
    match &store {
        Some(store) => log::info!("kvstore: {} Redis key(s) taken over", store.len()),
        None => log::warn!("kvstore: the handed-over Redis keyspace does not read; starting empty"),
    }
    store
}
