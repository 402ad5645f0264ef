//! The commands against the reference store, the framer against hostile
//! bytes, and the glob rules.

use super::*;
use alloc::vec::Vec;

type TestStore = Keyspace<HeapMemory>;

fn test_store() -> TestStore {
    Keyspace::new(HeapMemory::new(), 2, [7, 11]).unwrap()
}

struct Server {
    store: TestStore,
    client: Client,
    limits: Limits,
    info: ServerInfo,
    now_ms: u64,
}

impl Server {
    fn new() -> Server {
        Server {
            store: test_store(),
            client: Client::new(7),
            limits: Limits::default(),
            info: ServerInfo::default(),
            now_ms: 1_000,
        }
    }

    fn run(&mut self, words: &[&str]) -> Frame {
        let request: Vec<Vec<u8>> = words.iter().map(|word| word.as_bytes().to_vec()).collect();
        execute(&mut self.store, &mut self.client, &self.limits, &self.info, self.now_ms, &request).0
    }
}

fn bulk(text: &str) -> Frame {
    Frame::BulkString(text.as_bytes().to_vec())
}

fn simple(text: &str) -> Frame {
    Frame::SimpleString(text.as_bytes().to_vec())
}

fn is_error(frame: &Frame, prefix: &str) -> bool {
    matches!(frame, Frame::Error(text) if text.starts_with(prefix))
}

#[test]
fn strings_set_get_and_count() {
    let mut server = Server::new();
    assert_eq!(server.run(&["PING"]), simple("PONG"));
    assert_eq!(server.run(&["ping", "hi"]), bulk("hi"));
    assert_eq!(server.run(&["ECHO", "x y"]), bulk("x y"));
    assert_eq!(server.run(&["GET", "a"]), Frame::Null);
    assert_eq!(server.run(&["SET", "a", "1"]), simple("OK"));
    assert_eq!(server.run(&["GET", "a"]), bulk("1"));
    assert_eq!(server.run(&["INCR", "a"]), Frame::Integer(2));
    assert_eq!(server.run(&["INCRBY", "a", "40"]), Frame::Integer(42));
    assert_eq!(server.run(&["DECRBY", "a", "2"]), Frame::Integer(40));
    assert_eq!(server.run(&["DECR", "n"]), Frame::Integer(-1));
    assert_eq!(server.run(&["APPEND", "a", "!"]), Frame::Integer(3));
    assert_eq!(server.run(&["STRLEN", "a"]), Frame::Integer(3));
    assert!(is_error(&server.run(&["INCR", "a"]), "ERR value is not an integer"));
    assert_eq!(server.run(&["SET", "big", "9223372036854775807"]), simple("OK"));
    assert!(is_error(&server.run(&["INCR", "big"]), "ERR increment or decrement would overflow"));
    assert_eq!(server.run(&["MSET", "k1", "v1", "k2", "v2"]), simple("OK"));
    assert_eq!(server.run(&["MGET", "k1", "nope", "k2"]), Frame::Array(vec![bulk("v1"), Frame::Null, bulk("v2")]));
    assert_eq!(server.run(&["EXISTS", "k1", "k2", "nope", "k1"]), Frame::Integer(3));
    assert_eq!(server.run(&["DEL", "k1", "nope"]), Frame::Integer(1));
    assert_eq!(server.run(&["TYPE", "k2"]), simple("string"));
    assert_eq!(server.run(&["TYPE", "k1"]), simple("none"));
    assert_eq!(server.run(&["GETSET", "k2", "v3"]), bulk("v2"));
    assert_eq!(server.run(&["SET", "k2", "v4", "GET"]), bulk("v3"));
    assert_eq!(server.run(&["DBSIZE"]), Frame::Integer(4));
    assert_eq!(server.run(&["FLUSHDB"]), simple("OK"));
    assert_eq!(server.run(&["DBSIZE"]), Frame::Integer(0));
}

#[test]
fn set_options_follow_redis() {
    let mut server = Server::new();
    assert_eq!(server.run(&["SET", "a", "1", "NX"]), simple("OK"));
    assert_eq!(server.run(&["SET", "a", "2", "NX"]), Frame::Null);
    assert_eq!(server.run(&["SET", "b", "2", "XX"]), Frame::Null);
    assert_eq!(server.run(&["SET", "a", "3", "XX"]), simple("OK"));
    assert!(is_error(&server.run(&["SET", "a", "1", "NX", "XX"]), "ERR syntax error"));
    assert!(is_error(&server.run(&["SET", "a", "1", "EX", "0"]), "ERR invalid expire time in 'set' command"));
    assert!(is_error(&server.run(&["SET", "a", "1", "EX", "x"]), "ERR value is not an integer"));
    assert!(is_error(&server.run(&["SET", "a", "1", "EX", "1", "PX", "1"]), "ERR syntax error"));
    assert!(is_error(&server.run(&["SET", "a"]), "ERR wrong number of arguments for 'set' command"));
}

#[test]
fn keys_expire_on_the_clock() {
    let mut server = Server::new();
    server.run(&["SET", "a", "1", "PX", "1500"]);
    server.run(&["SET", "b", "1"]);
    assert_eq!(server.run(&["PTTL", "a"]), Frame::Integer(1500));
    assert_eq!(server.run(&["TTL", "a"]), Frame::Integer(2));
    assert_eq!(server.run(&["TTL", "b"]), Frame::Integer(-1));
    assert_eq!(server.run(&["TTL", "c"]), Frame::Integer(-2));
    server.now_ms += 1499;
    assert_eq!(server.run(&["GET", "a"]), bulk("1"));
    server.now_ms += 1;
    assert_eq!(server.run(&["GET", "a"]), Frame::Null, "expired at exactly its time");
    assert_eq!(server.run(&["EXPIRE", "b", "10"]), Frame::Integer(1));
    assert_eq!(server.run(&["PTTL", "b"]), Frame::Integer(10_000));
    assert_eq!(server.run(&["PERSIST", "b"]), Frame::Integer(1));
    assert_eq!(server.run(&["PERSIST", "b"]), Frame::Integer(0));
    assert_eq!(server.run(&["PEXPIRE", "b", "0"]), Frame::Integer(1));
    assert_eq!(server.run(&["EXISTS", "b"]), Frame::Integer(0));
    assert_eq!(server.run(&["EXPIRE", "nope", "10"]), Frame::Integer(0));
    // INCR keeps the expiry, SET without KEEPTTL drops it.
    server.run(&["SET", "c", "1", "EX", "100", "KEEPTTL"]);
    server.run(&["SET", "c", "1", "EX", "100"]);
    server.run(&["INCR", "c"]);
    assert_eq!(server.run(&["TTL", "c"]), Frame::Integer(100));
    server.run(&["SET", "c", "5"]);
    assert_eq!(server.run(&["TTL", "c"]), Frame::Integer(-1));
}

#[test]
fn keys_and_scan_walk_the_keyspace() {
    let mut server = Server::new();
    for index in 0..25 {
        server.run(&["SET", &format!("user:{index}"), "x"]);
    }
    server.run(&["SET", "other", "x"]);
    let Frame::Array(keys) = server.run(&["KEYS", "user:*"]) else { panic!() };
    assert_eq!(keys.len(), 25);
    let Frame::Array(keys) = server.run(&["KEYS", "user:[12]?"]) else { panic!() };
    assert_eq!(keys.len(), 15, "user:10..19 and user:20..24");
    let mut cursor = String::from("0");
    let mut seen = Vec::new();
    loop {
        let Frame::Array(reply) = server.run(&["SCAN", &cursor, "MATCH", "user:*", "COUNT", "7"]) else { panic!() };
        let [Frame::BulkString(next), Frame::Array(batch)] = &reply[..] else { panic!("{reply:?}") };
        seen.extend(batch.iter().cloned());
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    let mut seen: Vec<Vec<u8>> =
        seen.into_iter().map(|key| if let Frame::BulkString(key) = key { key } else { panic!() }).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "every key");
    assert!(is_error(&server.run(&["SCAN", "x"]), "ERR invalid cursor"));
}

#[test]
fn what_clients_send_on_connect_works() {
    let mut server = Server::new();
    assert_eq!(server.run(&["COMMAND", "DOCS"]), Frame::Array(Vec::new()));
    assert_eq!(server.run(&["CONFIG", "GET", "save"]), Frame::Array(vec![bulk("save"), bulk("")]));
    assert_eq!(server.run(&["CONFIG", "GET", "appendonly"]), Frame::Array(vec![bulk("appendonly"), bulk("no")]));
    let Frame::Array(hello) = server.run(&["HELLO", "2"]) else { panic!() };
    assert_eq!(hello[5], Frame::Integer(2));
    assert!(is_error(&server.run(&["HELLO", "3"]), "NOPROTO"));
    assert_eq!(server.run(&["CLIENT", "SETNAME", "bench"]), simple("OK"));
    assert_eq!(server.run(&["CLIENT", "GETNAME"]), bulk("bench"));
    assert_eq!(server.run(&["CLIENT", "ID"]), Frame::Integer(7));
    assert_eq!(server.run(&["SELECT", "0"]), simple("OK"));
    assert!(is_error(&server.run(&["SELECT", "1"]), "ERR DB index is out of range"));
    let unknown = server.run(&["FLY", "away"]);
    assert_eq!(unknown, Frame::Error(String::from("ERR unknown command 'FLY', with args beginning with: 'away' ")));
    let Frame::BulkString(info) = server.run(&["INFO"]) else { panic!() };
    let info = String::from_utf8(info).unwrap();
    for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace", "# Baton"] {
        assert!(info.contains(section), "{section} in {info}");
    }
    assert!(!info.contains("generation:"), "nothing the server was not told");
    server.info.generation = Some(3);
    server.info.kernel_version = Some(String::from("0.2.0"));
    let Frame::BulkString(only) = server.run(&["INFO", "baton"]) else { panic!() };
    let only = String::from_utf8(only).unwrap();
    assert!(only.starts_with("# Baton"));
    assert!(only.contains("generation:3\r\n") && only.contains("kernel_version:0.2.0\r\n"), "{only}");
    let request: Vec<Vec<u8>> = vec![b"QUIT".to_vec()];
    let (_, outcome) = execute(&mut server.store, &mut server.client, &server.limits, &server.info, 0, &request);
    assert_eq!(outcome, Outcome::Close);
}

#[test]
fn limits_give_redis_errors_and_reads_go_on() {
    let mut server = Server::new();
    server.limits =
        Limits { max_value_bytes: 8, max_keys: 2, max_memory_bytes: 1024, max_arguments: 16, max_clients: 4 };
    assert!(is_error(&server.run(&["SET", "a", "123456789"]), "ERR string exceeds maximum allowed size"));
    server.run(&["SET", "a", "1"]);
    server.run(&["SET", "b", "1"]);
    assert!(is_error(&server.run(&["SET", "c", "1"]), "OOM"));
    assert_eq!(server.run(&["SET", "a", "2"]), simple("OK"), "overwriting needs no new key");
    assert_eq!(server.run(&["GET", "a"]), bulk("2"));
}

#[test]
fn binary_keys_and_values() {
    let mut server = Server::new();
    let request = vec![b"SET".to_vec(), vec![0, 255, 13, 10], vec![0; 3]];
    execute(&mut server.store, &mut server.client, &server.limits, &server.info, 0, &request);
    let request = vec![b"GET".to_vec(), vec![0, 255, 13, 10]];
    let (reply, _) = execute(&mut server.store, &mut server.client, &server.limits, &server.info, 0, &request);
    assert_eq!(reply, Frame::BulkString(vec![0; 3]));
    let mut out = Vec::new();
    encode(&reply, &mut out);
    assert_eq!(out, b"$3\r\n\0\0\0\r\n");
}

#[test]
fn the_framer_reads_pipelined_requests_in_any_pieces() {
    let stream = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv\n\r\n";
    for piece in 1..stream.len() {
        let mut framer = Framer::new();
        let mut requests = Vec::new();
        for chunk in stream.chunks(piece) {
            framer.push(chunk);
            while let Some(request) = framer.next(1024, 16).unwrap() {
                requests.push(request);
            }
        }
        assert_eq!(requests, vec![vec![b"PING".to_vec()], vec![b"SET".to_vec(), b"k".to_vec(), b"v\n".to_vec()]]);
        assert_eq!(framer.pending(), 0);
    }
}

#[test]
fn hostile_bytes_are_refused_before_anything_is_allocated() {
    let mut framer = Framer::new();
    framer.push(b"*1\r\n$2147483648\r\n");
    assert_eq!(framer.next(512 << 20, 1024), Err(FramerError::BulkTooLong));
    let mut framer = Framer::new();
    framer.push(b"*100000\r\n");
    assert_eq!(framer.next(1024, 1024), Err(FramerError::TooManyArguments));
    let mut framer = Framer::new();
    framer.push(b"hello\r\n");
    assert_eq!(framer.next(1024, 16), Err(FramerError::Protocol));
    let mut framer = Framer::new();
    framer.push(b"*1\r\n:5\r\n");
    assert_eq!(framer.next(1024, 16), Err(FramerError::Protocol));
    let mut framer = Framer::new();
    framer.push(b"*1\r\n$-1\r\n");
    assert_eq!(framer.next(1024, 16), Err(FramerError::Protocol));
    let mut framer = Framer::new();
    framer.push(b"*1\r\n$99999999999999999999999999\r\n");
    assert_eq!(framer.next(1024, 16), Err(FramerError::Protocol));
}

#[test]
fn globs_follow_redis() {
    use glob::matches;
    assert!(matches(b"*", b""));
    assert!(matches(b"h?llo", b"hello"));
    assert!(matches(b"h*llo", b"heeeello"));
    assert!(matches(b"h[ae]llo", b"hallo"));
    assert!(!matches(b"h[ae]llo", b"hillo"));
    assert!(matches(b"h[^e]llo", b"hallo"));
    assert!(!matches(b"h[^e]llo", b"hello"));
    assert!(matches(b"h[a-b]llo", b"hbllo"));
    assert!(matches(b"h\\*llo", b"h*llo"));
    assert!(!matches(b"h\\*llo", b"hello"));
    assert!(matches(b"*a*b*c*", b"xxaxxbxxcxx"));
    assert!(!matches(b"*a*b*c", b"xxaxxbxxcxx"));
}

proptest::proptest! {
    /// Any bytes, in any pieces: requests or an error, never a panic.
    #[test]
    fn the_framer_survives_any_bytes(stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), piece in 1usize..32) {
        let mut framer = Framer::new();
        'outer: for chunk in stream.chunks(piece) {
            framer.push(chunk);
            loop {
                match framer.next(256, 16) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
    }

    /// Any request runs without a panic.
    #[test]
    fn any_request_gets_a_reply(words in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12), 1..6)) {
        let mut server = Server::new();
        let mut words = words;
        let names: [&[u8]; 8] = [b"SET", b"GET", b"INCRBY", b"SCAN", b"EXPIRE", b"MSET", b"KEYS", b"CLIENT"];
        let pick = usize::from(words[0].first().copied().unwrap_or(0)) % names.len();
        words[0] = names[pick].to_vec();
        let _ = execute(&mut server.store, &mut server.client, &server.limits, &server.info, 5, &words);
    }
}

#[test]
fn a_keyspace_from_before_the_table_reads_back() {
    let mut server = Server::new();
    server.run(&["SET", "a", "1"]);
    server.run(&["SET", "b", "two", "PX", "5000"]);
    let request = vec![b"SET".to_vec(), vec![0, 255], vec![13, 10, 0]];
    execute(&mut server.store, &mut server.client, &server.limits, &server.info, 1_000, &request);
    let bytes = keyspace_bytes(&server.store);
    let mut next = Server::new();
    assert!(load_keyspace_bytes(&bytes, &mut next.store));
    assert_eq!(next.store.len(), 3);
    assert_eq!(next.store.used_bytes(), server.store.used_bytes());
    assert_eq!(next.run(&["GET", "a"]), bulk("1"));
    assert_eq!(next.run(&["PTTL", "b"]), Frame::Integer(5000), "the expiry time goes across");
    // Truncated, extended or damaged bytes are refused whole.
    let refused = |bytes: &[u8]| {
        let mut store = test_store();
        !load_keyspace_bytes(bytes, &mut store) && store.is_empty()
    };
    for cut in 0..bytes.len() {
        assert!(refused(&bytes[..cut]), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(refused(&longer));
    let mut lying = bytes.clone();
    lying[16] = 0xff; // the first key's length
    assert!(refused(&lying));
    let mut empty = test_store();
    assert!(load_keyspace_bytes(&keyspace_bytes(&test_store()), &mut empty) && empty.is_empty());
}

fn sample_sessions() -> Sessions {
    let mut named = Client::new(3);
    named.name = Some(b"bench\xff".to_vec());
    let mut server = Server::new();
    server.client = named;
    for key in ["a", "b", "c"] {
        server.run(&["SET", key, "1"]);
    }
    let mut half = Framer::new();
    half.push(b"*2\r\n$3\r\nGET\r\n$1\r");
    Sessions {
        next_client_id: 9,
        sessions: alloc::vec![
            Session { connection: 0, client: server.client.clone(), framer: half },
            Session { connection: 5, client: Client::new(4), framer: Framer::new() },
        ],
        unsent: alloc::vec![(0, Some(b"+OK\r\n".to_vec())), (5, None), (0, Some(Vec::new()))],
    }
}

#[test]
fn sessions_go_across_a_restart_whole() {
    let sessions = sample_sessions();
    let bytes = sessions.to_bytes();
    let back = Sessions::from_bytes(&bytes).expect("reads back");
    assert_eq!(back, sessions);
    // The half request finishes with the bytes that come after it.
    let mut framer = back.sessions[0].framer.clone();
    framer.push(b"\na\r\n");
    assert_eq!(framer.next(1024, 16), Ok(Some(alloc::vec![b"GET".to_vec(), b"a".to_vec()])));
}

#[test]
fn sessions_refuse_damaged_bytes() {
    let bytes = sample_sessions().to_bytes();
    for cut in 0..bytes.len() {
        assert_eq!(Sessions::from_bytes(&bytes[..cut]), None, "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Sessions::from_bytes(&longer), None);
    let mut magic = bytes.clone();
    magic[0] ^= 1;
    assert_eq!(Sessions::from_bytes(&magic), None);
    // A session count the bytes cannot hold is refused before allocating.
    let mut huge = bytes.clone();
    huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Sessions::from_bytes(&huge), None);
    // Two sessions for one connection are not a state a kvstore leaves.
    let mut twice = sample_sessions();
    twice.sessions[1].connection = 0;
    assert_eq!(Sessions::from_bytes(&twice.to_bytes()), None);
}

#[test]
fn limits_come_from_options_like_redis_writes_them() {
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("64kb"), Some(64 << 10));
    assert_eq!(parse_size("2MB"), Some(2 << 20));
    assert_eq!(parse_size("1g"), Some(1_000_000_000));
    assert_eq!(parse_size("lots"), None);
    assert_eq!(parse_size("-1"), None);
    assert_eq!(parse_size("99999999999999999999gb"), None);
    let options = |key: &str| match key {
        "maxclients" => Some(alloc::string::String::from("4")),
        "maxmemory" => Some(alloc::string::String::from("64kb")),
        "proto-max-bulk-len" => Some(alloc::string::String::from("nonsense")),
        _ => None,
    };
    let (limits, problems) = Limits::from_options(options);
    assert_eq!(limits.max_clients, 4);
    assert_eq!(limits.max_memory_bytes, 64 << 10);
    assert_eq!(limits.max_value_bytes, Limits::default().max_value_bytes);
    assert_eq!(problems, ["proto-max-bulk-len"]);
    // Past what netd can serve: the default stays.
    let (limits, problems) =
        Limits::from_options(|key| (key == "maxclients").then(|| alloc::string::String::from("5000")));
    assert_eq!((limits.max_clients, problems), (100, alloc::vec!["maxclients"]));
    let mut server = Server::new();
    server.limits = limits;
    let Frame::Array(reply) = server.run(&["CONFIG", "GET", "maxclients"]) else { panic!("CONFIG GET") };
    assert_eq!(reply, [bulk("maxclients"), bulk("100")]);
}
