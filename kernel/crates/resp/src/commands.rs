//! The commands: Redis's semantics and error replies for the string
//! keyspace, plus what `redis-cli` and `redis-benchmark` send when they
//! connect. Keys and values are bytes; times come from the caller's clock
//! (milliseconds that continue across updates), and a key past its expiry
//! is removed the moment a command looks at it.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::store::{Store, StoreError};
use crate::{Frame, glob};

/// What the server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest value (and key).
    pub max_value_bytes: usize,
    /// The most keys.
    pub max_keys: usize,
    /// The most bytes of keys and values (Redis's `maxmemory`).
    pub max_memory_bytes: usize,
    /// The most arguments one request has.
    pub max_arguments: usize,
    /// The most clients connected at a time (Redis's `maxclients`).
    pub max_clients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: 512 << 10,
            max_keys: 1 << 20,
            max_memory_bytes: 256 << 20,
            max_arguments: 1024,
            max_clients: 100,
        }
    }
}

/// The most clients `maxclients` allows (netd's sockets a listener, less
/// room to refuse those past the limit with Redis's error).
pub const MAX_CLIENTS: usize = 120;

/// A size as Redis's configuration writes it: bytes, or with `kb`, `mb`,
/// `gb` (powers of 1024) or `k`, `m`, `g` (powers of 1000).
pub fn parse_size(text: &str) -> Option<usize> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit): (&str, u64) =
        [("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10), ("g", 1_000_000_000), ("m", 1_000_000), ("k", 1_000)]
            .iter()
            .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|digits| (digits, *unit)))
            .unwrap_or((lower.as_str(), 1));
    let value: u64 = digits.parse().ok()?;
    usize::try_from(value.checked_mul(unit)?).ok()
}

impl Limits {
    /// The limits a server's options give, each one read with `option`
    /// (`maxclients`, `maxmemory`, `proto-max-bulk-len`, `maxkeys`), the
    /// defaults for the rest. A value that does not read, or is out of
    /// range, keeps the default and is named in the second result.
    pub fn from_options(option: impl Fn(&str) -> Option<String>) -> (Limits, Vec<&'static str>) {
        let mut limits = Limits::default();
        let mut problems = Vec::new();
        let mut read = |key: &'static str, low: usize, high: usize, slot: &mut usize| {
            if let Some(text) = option(key) {
                match parse_size(&text).filter(|value| (low..=high).contains(value)) {
                    Some(value) => *slot = value,
                    None => problems.push(key),
                }
            }
        };
        read("maxclients", 1, MAX_CLIENTS, &mut limits.max_clients);
        read("maxmemory", 1024, usize::MAX, &mut limits.max_memory_bytes);
        read("proto-max-bulk-len", 1024, 512 << 20, &mut limits.max_value_bytes);
        read("maxkeys", 1, usize::MAX, &mut limits.max_keys);
        (limits, problems)
    }
}

/// The reply to a client past `maxclients` (the connection is closed
/// after it).
pub const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// What INFO reports about the server and the machine. What the caller
/// does not know is `None` and left out of the reply, never made up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// The kernel's version.
    pub kernel_version: Option<String>,
    /// Updates since the cold boot.
    pub generation: Option<u64>,
    /// The last update's blackout, in microseconds.
    pub last_blackout_us: Option<u64>,
    /// One line per update: what the kernel's history says.
    pub update_history: Vec<String>,
    /// Clients connected.
    pub connected_clients: usize,
    /// Milliseconds since the first kernel started.
    pub uptime_ms: u64,
    /// Commands run since the server started.
    pub commands_processed: u64,
    /// Connections refused past `maxclients`.
    pub rejected_connections: u64,
}

/// One connection's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// Its id (CLIENT ID).
    pub id: u64,
    /// CLIENT SETNAME.
    pub name: Option<Vec<u8>>,
}

impl Client {
    /// A new connection.
    pub fn new(id: u64) -> Client {
        Client { id, name: None }
    }
}

/// What the connection does after the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Read the next request.
    Continue,
    /// Close it (QUIT).
    Close,
}

/// A parsed command name, for the caller's statistics.
pub type Command = String;

fn error(text: &str) -> Frame {
    Frame::Error(String::from(text))
}

fn ok() -> Frame {
    Frame::SimpleString(b"OK".to_vec())
}

fn bulk(bytes: &[u8]) -> Frame {
    Frame::BulkString(bytes.to_vec())
}

fn wrong_arguments(name: &str) -> Frame {
    Frame::Error(format!("ERR wrong number of arguments for '{name}' command"))
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

fn integer(bytes: &[u8]) -> Option<i64> {
    let text = core::str::from_utf8(bytes).ok()?;
    // Redis refuses a leading '+', spaces and leading zeros.
    if text.is_empty() || text.starts_with('+') || (text.len() > 1 && text.starts_with('0')) || text.starts_with("-0") {
        return None;
    }
    text.parse().ok()
}

/// The value of `key` if it is there and has not expired (an expired key
/// is removed now).
fn live<'s>(store: &'s mut impl Store, key: &[u8], now_ms: u64) -> Option<(&'s [u8], Option<u64>)> {
    let expired = store.get(key).is_some_and(|(_, expires_at)| expires_at.is_some_and(|at| at <= now_ms));
    if expired {
        store.remove(key);
        return None;
    }
    store.get(key)
}

/// Writes `key`, checking the limits first.
fn write(
    store: &mut impl Store,
    limits: &Limits,
    key: &[u8],
    value: &[u8],
    expires_at: Option<u64>,
) -> Result<(), Frame> {
    if value.len() > limits.max_value_bytes || key.len() > limits.max_value_bytes {
        return Err(error("ERR string exceeds maximum allowed size"));
    }
    let existing = store.get(key).map(|(old, _)| old.len() + key.len());
    if existing.is_none() && store.len() >= limits.max_keys {
        return Err(error(OOM));
    }
    let after = store.used_bytes().saturating_sub(existing.unwrap_or(0)) + key.len() + value.len();
    if after > limits.max_memory_bytes && after > store.used_bytes() {
        return Err(error(OOM));
    }
    store.put(key, value, expires_at).map_err(|StoreError::OutOfMemory| error(OOM))
}

/// SET's options.
struct SetOptions {
    expires_at: Option<u64>,
    keep_ttl: bool,
    only_if_absent: bool,
    only_if_present: bool,
    get: bool,
}

fn set_options(arguments: &[Vec<u8>], now_ms: u64) -> Result<SetOptions, Frame> {
    let mut options =
        SetOptions { expires_at: None, keep_ttl: false, only_if_absent: false, only_if_present: false, get: false };
    let mut index = 0;
    while let Some(option) = arguments.get(index) {
        let option = option.to_ascii_uppercase();
        match option.as_slice() {
            b"NX" if !options.only_if_present => options.only_if_absent = true,
            b"XX" if !options.only_if_absent => options.only_if_present = true,
            b"GET" => options.get = true,
            b"KEEPTTL" if options.expires_at.is_none() => options.keep_ttl = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if options.expires_at.is_none() && !options.keep_ttl => {
                index += 1;
                let amount = arguments.get(index).ok_or_else(|| error(SYNTAX))?;
                let amount = integer(amount).ok_or_else(|| error(NOT_INTEGER))?;
                if amount <= 0 {
                    return Err(error("ERR invalid expire time in 'set' command"));
                }
                let amount = amount as u64;
                options.expires_at = Some(match option.as_slice() {
                    b"EX" => now_ms.saturating_add(amount.saturating_mul(1000)),
                    b"PX" => now_ms.saturating_add(amount),
                    b"EXAT" => amount.saturating_mul(1000),
                    _ => amount,
                });
            }
            _ => return Err(error(SYNTAX)),
        }
        index += 1;
    }
    Ok(options)
}

fn incr_by(store: &mut impl Store, limits: &Limits, key: &[u8], delta: i64, now_ms: u64) -> Frame {
    let (current, expires_at) = match live(store, key, now_ms) {
        Some((value, expires_at)) => match integer(value) {
            Some(number) => (number, expires_at),
            None => return error(NOT_INTEGER),
        },
        None => (0, None),
    };
    let Some(next) = current.checked_add(delta) else {
        return error("ERR increment or decrement would overflow");
    };
    match write(store, limits, key, format!("{next}").as_bytes(), expires_at) {
        Ok(()) => Frame::Integer(next),
        Err(reply) => reply,
    }
}

/// Remaining time to live: -2 without the key, -1 without an expiry.
fn ttl_ms(store: &mut impl Store, key: &[u8], now_ms: u64) -> i64 {
    match live(store, key, now_ms) {
        None => -2,
        Some((_, None)) => -1,
        Some((_, Some(at))) => (at - now_ms) as i64,
    }
}

fn expire(store: &mut impl Store, key: &[u8], amount: &[u8], unit_ms: u64, now_ms: u64) -> Frame {
    let Some(amount) = integer(amount) else { return error(NOT_INTEGER) };
    if live(store, key, now_ms).is_none() {
        return Frame::Integer(0);
    }
    if amount <= 0 {
        store.remove(key);
        return Frame::Integer(1);
    }
    let at = now_ms.saturating_add((amount as u64).saturating_mul(unit_ms));
    Frame::Integer(i64::from(store.set_expiry(key, Some(at))))
}

fn info(store: &impl Store, limits: &Limits, server: &ServerInfo, section: Option<&[u8]>) -> Frame {
    let wanted = |name: &str| {
        section.is_none_or(|section| {
            section.eq_ignore_ascii_case(name.as_bytes())
                || section.eq_ignore_ascii_case(b"all")
                || section.eq_ignore_ascii_case(b"everything")
        })
    };
    let mut text = String::new();
    let mut add = |title: &str, lines: &[(&str, String)]| {
        if !wanted(&title.to_ascii_lowercase()) {
            return;
        }
        text.push_str(&format!("# {title}\r\n"));
        for (key, value) in lines {
            text.push_str(&format!("{key}:{value}\r\n"));
        }
        text.push_str("\r\n");
    };
    add(
        "Server",
        &[
            ("redis_version", String::from("7.0.15")),
            ("redis_mode", String::from("standalone")),
            ("os", String::from("Baton")),
            ("uptime_in_seconds", format!("{}", server.uptime_ms / 1000)),
        ],
    );
    add(
        "Clients",
        &[
            ("connected_clients", format!("{}", server.connected_clients)),
            ("maxclients", format!("{}", limits.max_clients)),
        ],
    );
    add(
        "Memory",
        &[("used_memory", format!("{}", store.used_bytes())), ("maxmemory", format!("{}", limits.max_memory_bytes))],
    );
    add(
        "Stats",
        &[
            ("total_commands_processed", format!("{}", server.commands_processed)),
            ("rejected_connections", format!("{}", server.rejected_connections)),
        ],
    );
    let keyspace =
        if store.is_empty() { vec![] } else { vec![("db0", format!("keys={},expires=0,avg_ttl=0", store.len()))] };
    add("Keyspace", &keyspace);
    let mut baton = Vec::new();
    if let Some(version) = &server.kernel_version {
        baton.push(("kernel_version", version.clone()));
    }
    if let Some(generation) = server.generation {
        baton.push(("generation", format!("{generation}")));
    }
    if let Some(blackout) = server.last_blackout_us {
        baton.push(("last_blackout_us", format!("{blackout}")));
    }
    if let Some(table) = store.table_info() {
        baton.push(("keyspace_format", format!("{}", table.format)));
        baton.push(("keyspace_migrating_keys", format!("{}", table.migrating_keys)));
        baton.push(("keyspace_blocks", format!("{}", table.blocks)));
        baton.push(("keyspace_preservable_bytes", format!("{}", table.allocated_bytes)));
    }
    baton.push(("updates_recorded", format!("{}", server.update_history.len())));
    let history: Vec<(String, String)> = server
        .update_history
        .iter()
        .enumerate()
        .map(|(index, line)| (format!("update_{}", index + 1), line.clone()))
        .collect();
    for (key, value) in &history {
        baton.push((key.as_str(), value.clone()));
    }
    add("Baton", &baton);
    Frame::BulkString(text.into_bytes())
}

/// Runs one request (its arguments, the name first) and returns the reply.
pub fn execute(
    store: &mut impl Store,
    client: &mut Client,
    limits: &Limits,
    server: &ServerInfo,
    now_ms: u64,
    request: &[Vec<u8>],
) -> (Frame, Outcome) {
    let Some((name, arguments)) = request.split_first() else {
        return (error("ERR empty request"), Outcome::Continue);
    };
    let upper = name.to_ascii_uppercase();
    let lower = String::from_utf8_lossy(&name.to_ascii_lowercase()).into_owned();
    let count = arguments.len();
    let arity = |wanted: bool| if wanted { None } else { Some(wrong_arguments(&lower)) };
    macro_rules! need {
        ($condition:expr) => {
            if let Some(reply) = arity($condition) {
                return (reply, Outcome::Continue);
            }
        };
    }
    let reply = match upper.as_slice() {
        b"PING" => {
            need!(count <= 1);
            arguments.first().map_or(Frame::SimpleString(b"PONG".to_vec()), |message| bulk(message))
        }
        b"ECHO" => {
            need!(count == 1);
            bulk(&arguments[0])
        }
        b"QUIT" => return (ok(), Outcome::Close),
        b"SELECT" => {
            need!(count == 1);
            match integer(&arguments[0]) {
                Some(0) => ok(),
                Some(_) => error("ERR DB index is out of range"),
                None => error(NOT_INTEGER),
            }
        }
        b"GET" => {
            need!(count == 1);
            live(store, &arguments[0], now_ms).map_or(Frame::Null, |(value, _)| bulk(value))
        }
        b"SET" => {
            need!(count >= 2);
            let (key, value) = (&arguments[0], &arguments[1]);
            match set_options(&arguments[2..], now_ms) {
                Err(reply) => reply,
                Ok(options) => {
                    let old = live(store, key, now_ms).map(|(value, expires_at)| (value.to_vec(), expires_at));
                    let is_refused =
                        (options.only_if_absent && old.is_some()) || (options.only_if_present && old.is_none());
                    let old_reply = || old.as_ref().map_or(Frame::Null, |(value, _)| bulk(value));
                    if is_refused {
                        if options.get { old_reply() } else { Frame::Null }
                    } else {
                        let expires_at =
                            if options.keep_ttl { old.as_ref().and_then(|(_, at)| *at) } else { options.expires_at };
                        match write(store, limits, key, value, expires_at) {
                            Err(reply) => reply,
                            Ok(()) if options.get => old_reply(),
                            Ok(()) => ok(),
                        }
                    }
                }
            }
        }
        b"GETSET" => {
            need!(count == 2);
            let old = live(store, &arguments[0], now_ms).map(|(value, _)| value.to_vec());
            match write(store, limits, &arguments[0], &arguments[1], None) {
                Err(reply) => reply,
                Ok(()) => old.map_or(Frame::Null, |value| bulk(&value)),
            }
        }
        b"DEL" | b"UNLINK" => {
            need!(count >= 1);
            let removed =
                arguments.iter().filter(|key| live(store, key, now_ms).is_some() && store.remove(key)).count();
            Frame::Integer(removed as i64)
        }
        b"EXISTS" => {
            need!(count >= 1);
            Frame::Integer(arguments.iter().filter(|key| live(store, key, now_ms).is_some()).count() as i64)
        }
        b"INCR" | b"DECR" => {
            need!(count == 1);
            incr_by(store, limits, &arguments[0], if upper == b"INCR" { 1 } else { -1 }, now_ms)
        }
        b"INCRBY" | b"DECRBY" => {
            need!(count == 2);
            match integer(&arguments[1]) {
                None => error(NOT_INTEGER),
                Some(delta) if upper == b"INCRBY" => incr_by(store, limits, &arguments[0], delta, now_ms),
                Some(delta) => match delta.checked_neg() {
                    Some(negated) => incr_by(store, limits, &arguments[0], negated, now_ms),
                    None => error("ERR decrement would overflow"),
                },
            }
        }
        b"APPEND" => {
            need!(count == 2);
            let (mut value, expires_at) =
                live(store, &arguments[0], now_ms).map_or((Vec::new(), None), |(value, at)| (value.to_vec(), at));
            value.extend_from_slice(&arguments[1]);
            match write(store, limits, &arguments[0], &value, expires_at) {
                Err(reply) => reply,
                Ok(()) => Frame::Integer(value.len() as i64),
            }
        }
        b"STRLEN" => {
            need!(count == 1);
            Frame::Integer(live(store, &arguments[0], now_ms).map_or(0, |(value, _)| value.len()) as i64)
        }
        b"MGET" => {
            need!(count >= 1);
            Frame::Array(
                arguments
                    .iter()
                    .map(|key| live(store, key, now_ms).map_or(Frame::Null, |(value, _)| bulk(value)))
                    .collect(),
            )
        }
        b"MSET" => {
            need!(count >= 2 && count % 2 == 0);
            let mut reply = ok();
            for pair in arguments.chunks_exact(2) {
                if let Err(refused) = write(store, limits, &pair[0], &pair[1], None) {
                    reply = refused;
                    break;
                }
            }
            reply
        }
        b"KEYS" => {
            need!(count == 1);
            let found = store
                .keys()
                .into_iter()
                .filter(|key| glob::matches(&arguments[0], key) && live(store, key, now_ms).is_some())
                .map(Frame::BulkString)
                .collect();
            Frame::Array(found)
        }
        b"SCAN" => {
            need!(count >= 1);
            scan(store, now_ms, arguments)
        }
        b"DBSIZE" => {
            need!(count == 0);
            Frame::Integer(store.len() as i64)
        }
        b"FLUSHDB" | b"FLUSHALL" => {
            store.clear();
            ok()
        }
        b"EXPIRE" | b"PEXPIRE" => {
            need!(count == 2);
            expire(store, &arguments[0], &arguments[1], if upper == b"EXPIRE" { 1000 } else { 1 }, now_ms)
        }
        b"TTL" => {
            need!(count == 1);
            let ttl = ttl_ms(store, &arguments[0], now_ms);
            Frame::Integer(if ttl < 0 { ttl } else { (ttl + 500) / 1000 })
        }
        b"PTTL" => {
            need!(count == 1);
            Frame::Integer(ttl_ms(store, &arguments[0], now_ms))
        }
        b"PERSIST" => {
            need!(count == 1);
            match live(store, &arguments[0], now_ms) {
                Some((_, Some(_))) => Frame::Integer(i64::from(store.set_expiry(&arguments[0], None))),
                _ => Frame::Integer(0),
            }
        }
        b"DEBUG" => debug(store, limits, arguments),
        b"TYPE" => {
            need!(count == 1);
            let kind: &[u8] = if live(store, &arguments[0], now_ms).is_some() { b"string" } else { b"none" };
            Frame::SimpleString(kind.to_vec())
        }
        b"INFO" => info(store, limits, server, arguments.first().map(Vec::as_slice)),
        // redis-cli asks for the command table's docs on connect: an empty
        // answer is one it accepts.
        b"COMMAND" => Frame::Array(Vec::new()),
        b"CONFIG" => config(limits, arguments),
        b"HELLO" => hello(client, arguments),
        b"CLIENT" => client_command(client, arguments),
        _ => {
            let mut text =
                format!("ERR unknown command '{}', with args beginning with:", String::from_utf8_lossy(name));
            for argument in arguments.iter().take(8) {
                text.push_str(&format!(" '{}'", String::from_utf8_lossy(argument)));
            }
            text.push(' ');
            Frame::Error(text)
        }
    };
    (reply, Outcome::Continue)
}

fn scan(store: &mut impl Store, now_ms: u64, arguments: &[Vec<u8>]) -> Frame {
    let Some(cursor) = core::str::from_utf8(&arguments[0]).ok().and_then(|text| text.parse::<u64>().ok()) else {
        return error("ERR invalid cursor");
    };
    let mut pattern: Option<&[u8]> = None;
    let mut wanted = 10_usize;
    let mut index = 1;
    while let Some(option) = arguments.get(index) {
        let value = arguments.get(index + 1);
        match (option.to_ascii_uppercase().as_slice(), value) {
            (b"MATCH", Some(value)) => pattern = Some(value),
            (b"COUNT", Some(value)) => match integer(value) {
                Some(number) if number >= 1 => wanted = number as usize,
                Some(_) => return error(SYNTAX),
                None => return error(NOT_INTEGER),
            },
            _ => return error(SYNTAX),
        }
        index += 2;
    }
    let (batch, next) = store.scan(cursor, wanted);
    let keys = batch
        .into_iter()
        .filter(|key| pattern.is_none_or(|pattern| glob::matches(pattern, key)))
        .filter(|key| live(store, key, now_ms).is_some())
        .map(Frame::BulkString)
        .collect();
    Frame::Array(vec![Frame::BulkString(format!("{next}").into_bytes()), Frame::Array(keys)])
}

/// DEBUG POPULATE count [prefix] [size], as Redis has it for tests:
/// keys `prefix:N` (prefix `key`) for N below count, each holding
/// `value:N` (cut or padded with zeros to `size` bytes if given); keys
/// already there are left alone. Stops at the first write refused (a
/// limit, -OOM).
fn debug(store: &mut impl Store, limits: &Limits, arguments: &[Vec<u8>]) -> Frame {
    let Some(subcommand) = arguments.first() else { return wrong_arguments("debug") };
    if !subcommand.eq_ignore_ascii_case(b"POPULATE") || !(2..=4).contains(&arguments.len()) {
        return error("ERR DEBUG subcommand not supported (only POPULATE)");
    }
    let Some(count) = integer(&arguments[1]).filter(|count| *count >= 0) else {
        return error("ERR value is out of range, must be positive");
    };
    let prefix = arguments.get(2).map_or(&b"key"[..], Vec::as_slice);
    let size = match arguments.get(3).map(|size| integer(size)) {
        None => None,
        Some(Some(size)) if size >= 0 && size as usize <= limits.max_value_bytes => Some(size as usize),
        Some(_) => return error("ERR value is out of range, must be positive"),
    };
    let mut key = Vec::new();
    let mut value = Vec::new();
    for number in 0..count {
        key.clear();
        key.extend_from_slice(prefix);
        key.extend_from_slice(format!(":{number}").as_bytes());
        if store.get(&key).is_some() {
            continue;
        }
        value.clear();
        value.extend_from_slice(format!("value:{number}").as_bytes());
        if let Some(size) = size {
            value.resize(size, 0);
        }
        if let Err(refused) = write(store, limits, &key, &value, None) {
            return refused;
        }
    }
    ok()
}

fn config(limits: &Limits, arguments: &[Vec<u8>]) -> Frame {
    let Some(subcommand) = arguments.first() else { return wrong_arguments("config") };
    if !subcommand.eq_ignore_ascii_case(b"GET") {
        return error("ERR CONFIG subcommand not supported");
    }
    let known: [(&str, String); 6] = [
        ("save", String::new()),
        ("appendonly", String::from("no")),
        ("maxmemory", format!("{}", limits.max_memory_bytes)),
        ("maxclients", format!("{}", limits.max_clients)),
        ("proto-max-bulk-len", format!("{}", limits.max_value_bytes)),
        ("databases", String::from("1")),
    ];
    let mut reply = Vec::new();
    for pattern in &arguments[1..] {
        for (key, value) in &known {
            if glob::matches(&pattern.to_ascii_lowercase(), key.as_bytes()) {
                reply.push(bulk(key.as_bytes()));
                reply.push(bulk(value.as_bytes()));
            }
        }
    }
    Frame::Array(reply)
}

fn hello(client: &Client, arguments: &[Vec<u8>]) -> Frame {
    if let Some(version) = arguments.first()
        && version.as_slice() != b"2"
    {
        return error("NOPROTO sorry, this protocol version is not supported");
    }
    Frame::Array(vec![
        bulk(b"server"),
        bulk(b"redis"),
        bulk(b"version"),
        bulk(b"7.0.15"),
        bulk(b"proto"),
        Frame::Integer(2),
        bulk(b"id"),
        Frame::Integer(client.id as i64),
        bulk(b"mode"),
        bulk(b"standalone"),
        bulk(b"role"),
        bulk(b"master"),
        bulk(b"modules"),
        Frame::Array(Vec::new()),
    ])
}

fn client_command(client: &mut Client, arguments: &[Vec<u8>]) -> Frame {
    let Some(subcommand) = arguments.first() else { return wrong_arguments("client") };
    match subcommand.to_ascii_uppercase().as_slice() {
        b"SETNAME" if arguments.len() == 2 => {
            if arguments[1].iter().any(|&byte| byte <= b' ' || byte > b'~') {
                return error("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            client.name = (!arguments[1].is_empty()).then(|| arguments[1].clone());
            ok()
        }
        b"GETNAME" => client.name.as_deref().map_or(Frame::Null, bulk),
        b"ID" => Frame::Integer(client.id as i64),
        // redis-cli and client libraries set these on connect.
        b"SETINFO" => ok(),
        _ => error("ERR unknown subcommand or wrong number of arguments for 'client' command"),
    }
}
