//! Hostile Redis clients from the host, for the QEMU case that runs them
//! against kvstore while the kernel updates: more clients than
//! `maxclients`, a 2 GiB bulk length, bytes that are not RESP, a client
//! sending a byte at a time, and values until `maxmemory` is reached. One
//! well-behaved connection, opened first and kept open through every
//! update, checks that none of it costs another client anything.
//!
//! Every step is bounded: a few connections, each read given at most
//! [`READ_TIMEOUT`], all to one port on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one reply may take.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The limits the case gives kvstore (`kvstore.maxclients=4
/// kvstore.maxmemory=64kb`).
pub const MAX_CLIENTS: usize = 4;

pub(super) fn connect(port: u16) -> Result<TcpStream, String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, READ_TIMEOUT).map_err(|error| format!("connect: {error}"))?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(|error| error.to_string())?;
    stream.set_nodelay(true).map_err(|error| error.to_string())?;
    Ok(stream)
}

/// A request as redis-cli sends it: an array of bulk strings.
pub(super) fn request(words: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply line (`+OK`, `-ERR ...`, `:1`, `$N` and its bulk);
/// the line without its `\r\n`, a bulk as its bytes.
pub(super) fn reply(stream: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Err("closed by the guest".to_string()),
            Ok(_) => line.push(byte[0]),
            Err(error) => return Err(format!("no reply: {error}")),
        }
    }
    line.truncate(line.len() - 2);
    let text = String::from_utf8_lossy(&line).to_string();
    if let Some(length) = text.strip_prefix('$').and_then(|length| length.parse::<usize>().ok()) {
        let mut bulk = vec![0; length + 2];
        stream.read_exact(&mut bulk).map_err(|error| format!("short bulk: {error}"))?;
        bulk.truncate(length);
        return Ok(String::from_utf8_lossy(&bulk).to_string());
    }
    Ok(text)
}

pub(super) fn command(stream: &mut TcpStream, words: &[&[u8]]) -> Result<String, String> {
    stream.write_all(&request(words)).map_err(|error| format!("send: {error}"))?;
    reply(stream)
}

/// Whether the guest closes `stream` (end of stream within the timeout).
fn is_closed(stream: &mut TcpStream) -> bool {
    let mut rest = [0u8; 64];
    matches!(stream.read(&mut rest), Ok(0))
}

fn expect(what: &str, got: Result<String, String>, wanted: &str) -> Result<(), String> {
    match got {
        Ok(reply) if reply.starts_with(wanted) => Ok(()),
        Ok(reply) => Err(format!("{what}: '{reply}', not '{wanted}'")),
        Err(error) => Err(format!("{what}: {error}")),
    }
}

/// The hostile clients, run on a thread of their own while the guest
/// updates; the kept connection is handed back for the check at the end.
pub struct Hostile {
    thread: JoinHandle<Result<(TcpStream, Vec<String>), String>>,
}

impl Hostile {
    /// Starts every step against `port`.
    pub fn start(port: u16) -> Hostile {
        Hostile { thread: std::thread::spawn(move || run(port)) }
    }

    /// Waits for the steps, then reads the kept key over the kept
    /// connection: the report line.
    pub fn finish(self) -> String {
        let outcome = self.thread.join().unwrap_or_else(|_| Err("the hostile clients' thread panicked".to_string()));
        let (mut kept, findings) = match outcome {
            Ok(result) => result,
            Err(failure) => return format!("host: hostile clients: {failure}"),
        };
        if let Err(failure) =
            expect("the kept key after the updates", command(&mut kept, &[b"GET", b"hostile:kept"]), "kept")
        {
            return format!("host: hostile clients: {failure}");
        }
        format!("host: hostile clients: {}; the first client kept its connection and its key", findings.join(", "))
    }
}

fn run(port: u16) -> Result<(TcpStream, Vec<String>), String> {
    let mut findings = Vec::new();
    let mut kept = connect(port)?;
    expect("SET on the first client", command(&mut kept, &[b"SET", b"hostile:kept", b"kept"]), "+OK")?;

    // maxclients: the first MAX_CLIENTS are served, the next get Redis's
    // error and a close, and the first still works.
    let mut served = vec![];
    for index in 1..MAX_CLIENTS {
        let mut stream = connect(port)?;
        expect(&format!("PING on client {}", index + 1), command(&mut stream, &[b"PING"]), "+PONG")?;
        served.push(stream);
    }
    let mut refused = 0;
    for index in 0..3 {
        let mut stream = connect(port)?;
        // The error comes unasked, then the close.
        expect(
            &format!("client {} past maxclients", MAX_CLIENTS + 1 + index),
            reply(&mut stream),
            "-ERR max number of clients reached",
        )?;
        if !is_closed(&mut stream) {
            return Err("a client past maxclients was not closed".to_string());
        }
        refused += 1;
    }
    expect("PING on the first client past the limit", command(&mut kept, &[b"PING"]), "+PONG")?;
    findings.push(format!("{MAX_CLIENTS} served and {refused} past maxclients told so"));
    drop(served);
    // The slots free up as the guest sees the closes.
    std::thread::sleep(Duration::from_millis(500));

    // A 2 GiB bulk length: refused before anything is allocated.
    let mut stream = connect(port)?;
    stream.write_all(b"*2\r\n$3\r\nGET\r\n$2147483648\r\n").map_err(|error| error.to_string())?;
    expect("a 2 GiB bulk", reply(&mut stream), "-ERR Protocol error")?;
    if !is_closed(&mut stream) {
        return Err("a 2 GiB bulk did not close the connection".to_string());
    }
    findings.push("a 2 GiB bulk refused and closed".to_string());

    // Bytes that are not RESP.
    let mut stream = connect(port)?;
    let noise: Vec<u8> = (0u32..64).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80).collect();
    stream.write_all(&noise).map_err(|error| error.to_string())?;
    expect("random bytes", reply(&mut stream), "-ERR Protocol error")?;
    if !is_closed(&mut stream) {
        return Err("random bytes did not close the connection".to_string());
    }
    findings.push("random bytes refused and closed".to_string());

    // A client that sends a byte at a time: the first client's requests
    // are all answered while it is still sending.
    let mut slow = connect(port)?;
    let dribble = std::thread::spawn(move || -> Result<String, String> {
        for byte in request(&[b"PING"]) {
            slow.write_all(&[byte]).map_err(|error| error.to_string())?;
            std::thread::sleep(Duration::from_millis(100));
        }
        reply(&mut slow)
    });
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let sent = Instant::now();
        expect("PING beside the slow client", command(&mut kept, &[b"PING"]), "+PONG")?;
        slowest = slowest.max(sent.elapsed());
    }
    let beside = started.elapsed();
    if dribble.is_finished() {
        return Err("the slow client finished before the others were answered".to_string());
    }
    expect("the slow client's PING", dribble.join().map_err(|_| "the slow client panicked".to_string())?, "+PONG")?;
    findings.push(format!(
        "10 PINGs answered in {} ms beside a client sending a byte every 100 ms (slowest {} ms)",
        beside.as_millis(),
        slowest.as_millis()
    ));

    // maxmemory: values until -OOM; reads go on, nothing is lost.
    let value = vec![b'v'; 8 * 1024];
    let mut stored = 0;
    let mut is_full = false;
    for index in 0..32 {
        let key = format!("hostile:big:{index}");
        match command(&mut kept, &[b"SET", key.as_bytes(), &value]) {
            Ok(reply) if reply == "+OK" => stored += 1,
            Ok(reply) if reply.starts_with("-OOM") => {
                is_full = true;
                break;
            }
            Ok(reply) => return Err(format!("SET of a large value: '{reply}'")),
            Err(error) => return Err(format!("SET of a large value: {error}")),
        }
    }
    if !is_full {
        return Err(format!("{stored} values of 8 KiB stored, and maxmemory never refused one"));
    }
    expect("GET when memory is full", command(&mut kept, &[b"GET", b"hostile:kept"]), "kept")?;
    expect("STRLEN of a stored value", command(&mut kept, &[b"STRLEN", b"hostile:big:0"]), ":8192")?;
    expect("DEL when memory is full", command(&mut kept, &[b"DEL", b"hostile:big:0"]), ":1")?;
    findings.push(format!("-OOM after {stored} values of 8 KiB, reads and DEL working"));
    Ok((kept, findings))
}

/// How one client of a crowd fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Served,
    ToldFull,
    Other,
}

/// `count` clients after a first one, each connecting and sending a PING
/// and the served ones keeping their connections open, so that `count`
/// are open at once: at most `maxclients` are served (the first among
/// them), the rest get Redis's error and a close, and the first still
/// works afterwards. They connect one after another: QEMU's user
/// network passes only about 17 connection attempts at a time from a
/// host forward to the guest, and holds the rest past any timeout.
pub struct Crowd {
    thread: JoinHandle<Result<Gathered, String>>,
}

/// The crowd once every client connected: the first client, the served
/// ones' connections, every client's fate and how long it took.
type Gathered = (TcpStream, Vec<TcpStream>, Vec<Fate>, Duration);

impl Crowd {
    /// Connects the crowd to `port` (on a thread of its own).
    pub fn start(port: u16, count: usize) -> Crowd {
        Crowd { thread: std::thread::spawn(move || gather(port, count)) }
    }

    /// Asks every served client and the first once more, after the
    /// updates: the report line.
    pub fn finish(self) -> String {
        match self.thread.join() {
            Ok(Ok(gathered)) => check(gathered),
            Ok(Err(failure)) => format!("host: a crowd of clients: {failure}"),
            Err(_) => "host: the crowd's thread panicked".to_string(),
        }
    }
}

fn crowd_client(port: u16) -> (Fate, Option<TcpStream>) {
    let Ok(mut stream) = connect(port) else { return (Fate::Other, None) };
    if stream.write_all(&request(&[b"PING"])).is_err() {
        return (Fate::Other, None);
    }
    match reply(&mut stream).as_deref() {
        Ok("+PONG") => (Fate::Served, Some(stream)),
        Ok("-ERR max number of clients reached") if is_closed(&mut stream) => (Fate::ToldFull, None),
        _ => (Fate::Other, None),
    }
}

fn gather(port: u16, count: usize) -> Result<Gathered, String> {
    let mut first = connect(port)?;
    expect("SET on the first client", command(&mut first, &[b"SET", b"crowd:first", b"here"]), "+OK")?;
    let started = Instant::now();
    let mut open = Vec::new();
    let mut fates = Vec::new();
    for _ in 0..count {
        let (fate, stream) = crowd_client(port);
        fates.push(fate);
        open.extend(stream);
    }
    Ok((first, open, fates, started.elapsed()))
}

fn check((mut first, mut open, fates, elapsed): Gathered) -> String {
    let count = fates.len();
    // Every served client is still connected: each answers again.
    let mut still = 0;
    for stream in &mut open {
        if command(stream, &[b"PING"]).is_ok_and(|reply| reply == "+PONG") {
            still += 1;
        }
    }
    let count_of = |wanted: Fate| fates.iter().filter(|fate| **fate == wanted).count();
    let served = count_of(Fate::Served);
    let tally = format!(
        "host: {count} clients: {} served and still answered after the updates, {} told the limit is reached, \
         {} otherwise (connected in {:.1} s)",
        still.min(served),
        count_of(Fate::ToldFull),
        count_of(Fate::Other) + served - still.min(served),
        elapsed.as_secs_f64()
    );
    let first_works = expect("PING on the first client after the crowd", command(&mut first, &[b"PING"]), "+PONG")
        .and_then(|()| {
            expect("GET on the first client after the crowd", command(&mut first, &[b"GET", b"crowd:first"]), "here")
        });
    match first_works {
        Ok(()) => format!("{tally}; the first client kept working"),
        Err(failure) => format!("{tally}; {failure}"),
    }
}
