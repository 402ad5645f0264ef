//! Host-side traffic for QEMU cases: TCP to netd's echo port through a
//! user-network forward on 127.0.0.1, driven by what the guest's serial
//! console says. Everything is bounded: a fixed number of lines, each
//! given at most two seconds, to one port on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// What a case sends from the host.
#[derive(Debug, Clone, Copy)]
pub enum HostTraffic {
    /// When the demo pauses before shutdown, one connection carrying
    /// `lines` numbered lines, each expected back unchanged.
    Echo {
        /// The forwarded host port.
        port: u16,
        /// Lines to send.
        lines: u32,
    },
    /// One connection opened once netd has an address (before the first
    /// update), kept open through every update: one line after each
    /// (`demo: init resumed on the new kernel`) and one when the demo
    /// pauses before shutdown, never reconnecting.
    Session {
        /// The forwarded host port.
        port: u16,
    },
    /// One `redis-cli` process (one connection), started once kvstore
    /// serves Redis (before the first update) and kept through every
    /// update: SET (with and without a time to live) and INCR before, GET,
    /// EXISTS and INCR after each update, expiry and TTL at the end, every
    /// reply checked.
    Redis {
        /// The forwarded host port of the guest's 6379.
        port: u16,
    },
    /// Hostile Redis clients (`super::hostile`), started once kvstore
    /// serves Redis and running while the updates happen; checked when
    /// the demo pauses.
    Hostile {
        /// The forwarded host port of the guest's 6379.
        port: u16,
    },
    /// A keyspace past one folio (`super::bulk`), written once kvstore
    /// serves Redis and read back when the demo pauses.
    Bulk {
        /// The forwarded host port of the guest's 6379.
        port: u16,
    },
    /// `keys` keys made by DEBUG POPULATE once kvstore serves Redis, all
    /// checked when the demo pauses.
    Populate {
        /// The forwarded host port of the guest's 6379.
        port: u16,
        /// How many.
        keys: usize,
    },
    /// `clients` connecting at once (`super::hostile::Crowd`), started
    /// once kvstore serves Redis; reported when the demo pauses.
    Crowd {
        /// The forwarded host port of the guest's 6379.
        port: u16,
        /// How many connect at once.
        clients: usize,
    },
    /// `redis-benchmark -t set,get,incr,mset -c 8`, started once kvstore
    /// serves Redis, running while the updates happen. When the demo
    /// pauses it must have finished with no error, and the keys it wrote
    /// are read back: its counter must have counted every INCR exactly
    /// once.
    RedisBenchmark {
        /// The forwarded host port of the guest's 6379.
        port: u16,
        /// Requests of each test (`-n`).
        requests: u32,
        /// Requests in flight per connection (`-P`): 1 runs SET, GET,
        /// INCR and MSET; more runs INCR alone, whose counter then says
        /// whether any pipelined request was lost or applied twice.
        pipeline: u32,
    },
}

/// How long redis-benchmark may take after the demo paused.
const BENCHMARK_TIMEOUT: Duration = Duration::from_secs(240);

/// Starts the clients of a kind that runs on threads of its own from when
/// kvstore serves Redis until the demo pauses; what finishes them.
fn start_background(kind: HostTraffic) -> Option<Box<dyn FnOnce() -> String>> {
    match kind {
        HostTraffic::Hostile { port } => {
            let hostile = super::hostile::Hostile::start(port);
            Some(Box::new(move || hostile.finish()))
        }
        HostTraffic::Bulk { port } => {
            let bulk = super::bulk::Bulk::start(port);
            Some(Box::new(move || bulk.finish()))
        }
        HostTraffic::Populate { port, keys } => {
            let bulk = super::bulk::Bulk::populate(port, keys);
            Some(Box::new(move || bulk.finish()))
        }
        HostTraffic::Crowd { port, clients } => {
            let crowd = super::hostile::Crowd::start(port, clients);
            Some(Box::new(move || crowd.finish()))
        }
        _ => None,
    }
}

/// What `INFO baton` says, over a connection of its own, in a line:
/// the kernel's version, its generation, how many updates it lists and
/// whether the last blackout is there.
fn info_baton(port: u16) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "INFO", "baton"])
        .output();
    let Ok(output) = output else { return "INFO baton: redis-cli did not run".to_string() };
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        text.lines().find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':').map(str::to_string))
    };
    let listed = text.lines().filter(|line| line.starts_with("update_")).count();
    format!(
        "INFO baton: kernel {}, generation {}, {} update(s) listed, last blackout {}",
        field("kernel_version").unwrap_or_else(|| "missing".to_string()),
        field("generation").unwrap_or_else(|| "missing".to_string()),
        listed,
        if field("last_blackout_us").is_some_and(|value| value.parse::<u64>().is_ok_and(|us| us > 0)) {
            "given"
        } else {
            "missing"
        }
    )
}

/// A running redis-benchmark and the thread collecting its output (all
/// of it, so a full pipe never stalls it).
struct Benchmark {
    child: std::process::Child,
    output: std::thread::JoinHandle<String>,
}

impl Benchmark {
    fn start(port: u16, requests: u32, pipeline: u32) -> std::io::Result<Benchmark> {
        use std::process::{Command, Stdio};
        // stderr into the same pipe as stdout, in the order written.
        let (reader, writer) = std::io::pipe()?;
        let child = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", benchmark_tests(pipeline).0])
            .args(["-n", &requests.to_string(), "-c", "8", "-P", &pipeline.to_string(), "-q"])
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()?;
        let output = std::thread::spawn(move || {
            let mut reader = reader;
            let mut output = String::new();
            let _ = reader.read_to_string(&mut output);
            output
        });
        Ok(Benchmark { child, output })
    }
}

/// The tests a benchmark of `pipeline` runs: its `-t` and the names of
/// its report lines.
fn benchmark_tests(pipeline: u32) -> (&'static str, &'static [&'static str]) {
    if pipeline > 1 { ("incr", &["INCR"]) } else { ("set,get,incr,mset", &["SET", "GET", "INCR", "MSET (10 keys)"]) }
}

/// Waits for a running redis-benchmark and checks what it said and what it
/// left in the store: the report line.
fn finish_benchmark(benchmark: Benchmark, port: u16, requests: u32, pipeline: u32, updates: u32) -> String {
    let Benchmark { mut child, output } = benchmark;
    let deadline = std::time::Instant::now() + BENCHMARK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output = output.join().unwrap_or_default();
    let Some(status) = status else {
        return format!("host: redis-benchmark did not finish in {} s", BENCHMARK_TIMEOUT.as_secs());
    };
    // `-q` prints one line per test; anything about errors or a lost
    // connection is a failure.
    let tests = benchmark_tests(pipeline).1;
    // Its progress overwrites itself with carriage returns.
    let lines = || output.split(['\r', '\n']).map(str::trim);
    let finished = tests
        .iter()
        .filter(|test| {
            lines().any(|line| line.starts_with(&format!("{test}: ")) && line.contains("requests per second"))
        })
        .count();
    let problems = lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("error") || lower.contains("reset") || lower.contains("closed")
        })
        .count();
    if !status.success() || finished != tests.len() || problems != 0 {
        let first = lines().find(|line| line.contains("rror") || line.contains("losed")).unwrap_or("");
        return format!(
            "host: redis-benchmark failed ({status}, {finished} of {} tests, {problems} error line(s); '{first}')",
            tests.len()
        );
    }
    // Without `-r` redis-benchmark writes fixed keys: a value of its
    // data size (3 random bytes) and a counter it incremented exactly
    // `requests` times.
    let check = |command: &[&str]| -> Option<String> {
        let output = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(command)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let length = check(&["STRLEN", "key:__rand_int__"]);
    let counter = check(&["GET", "counter:__rand_int__"]);
    let expected = requests.to_string();
    let is_length_right = pipeline > 1 || length.as_deref() == Some("3");
    if !is_length_right || counter.as_deref() != Some(expected.as_str()) {
        return format!(
            "host: redis-benchmark's keys are wrong afterwards (value length {length:?}, counter {counter:?})"
        );
    }
    format!(
        "host: redis-benchmark -P {pipeline}, {} tests of {requests} requests through {updates} updates, 0 errors, \
         its counter at {requests}",
        tests.len()
    )
}

/// A `redis-cli` with its input and output lines.
struct RedisCli {
    child: std::process::Child,
    input: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl RedisCli {
    fn start(port: u16) -> std::io::Result<RedisCli> {
        use std::process::{Command, Stdio};
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let input = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
        let output = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(output).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(RedisCli { child, input, lines })
    }

    /// Runs one command; whether its reply was `expected`.
    fn command(&mut self, command: &str, expected: &str) -> Result<bool, String> {
        self.reply(command).map(|reply| reply == expected)
    }

    /// Runs one command; its reply (one line).
    fn reply(&mut self, command: &str) -> Result<String, String> {
        writeln!(self.input, "{command}").map_err(|error| format!("redis-cli: {error}"))?;
        self.input.flush().map_err(|error| format!("redis-cli: {error}"))?;
        self.lines.recv_timeout(LINE_TIMEOUT).map_err(|_| format!("no reply to '{command}'"))
    }

    fn finish(mut self) {
        drop(self.input);
        let _ = self.child.wait();
    }
}

/// How long one line may take to come back.
const LINE_TIMEOUT: Duration = Duration::from_secs(2);

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&address, LINE_TIMEOUT)?;
    stream.set_read_timeout(Some(LINE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `line` and reads until as many bytes came back; whether they are
/// the same.
fn exchange(stream: &mut TcpStream, line: &str) -> std::io::Result<bool> {
    stream.write_all(line.as_bytes())?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    while received.len() < line.len() {
        let count = stream.read(&mut buffer)?;
        if count == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "closed by the guest"));
        }
        received.extend_from_slice(&buffer[..count]);
    }
    Ok(received == line.as_bytes())
}

/// A case's traffic as it runs.
pub struct Traffic {
    kind: HostTraffic,
    stream: Option<TcpStream>,
    redis: Option<RedisCli>,
    benchmark: Option<Benchmark>,
    /// Clients on threads of their own (hostile, bulk, crowd): what
    /// finishes them and gives the report line.
    background: Option<Box<dyn FnOnce() -> String>>,
    counter: u32,
    sent: u32,
    echoed: u32,
    updates: u32,
    failure: Option<String>,
    report: Option<String>,
}

impl Traffic {
    pub fn new(kind: HostTraffic) -> Traffic {
        Traffic {
            kind,
            stream: None,
            redis: None,
            benchmark: None,
            background: None,
            counter: 0,
            sent: 0,
            echoed: 0,
            updates: 0,
            failure: None,
            report: None,
        }
    }

    /// The line the case's output gets, once the traffic is over.
    pub fn report(self) -> Option<String> {
        self.report
    }

    /// Reacts to one line of the guest's console; `input` is its serial
    /// input (a newline lets a paused demo shut down).
    pub fn on_line(&mut self, line: &str, input: &mut dyn Write) {
        if self.report.is_some() {
            return;
        }
        let is_pause = line.contains("paused before shutdown");
        match self.kind {
            HostTraffic::Echo { port, lines } if is_pause => {
                let echoed = echo_lines(port, lines).unwrap_or(0);
                self.report = Some(format!("host: {echoed} of {lines} lines echoed over TCP"));
            }
            HostTraffic::Echo { .. } => return,
            HostTraffic::Session { port } => {
                if line.contains("netd: DHCP gave") && self.stream.is_none() && self.failure.is_none() {
                    match connect(port) {
                        Ok(stream) => self.stream = Some(stream),
                        Err(error) => self.failure = Some(format!("cannot connect: {error}")),
                    }
                    self.send("before the first update");
                } else if line.contains("demo: init resumed on the new kernel") {
                    self.updates += 1;
                    self.send(&format!("after update {}", self.updates));
                } else if is_pause {
                    self.send("before shutdown");
                    if let Some(stream) = self.stream.take() {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    self.finish_report(format!(
                        "host: one TCP connection, {} of {} lines echoed through {} updates",
                        self.echoed, self.sent, self.updates
                    ));
                } else {
                    return;
                }
            }
            HostTraffic::Redis { port } => {
                if line.contains("kvstore: serving Redis on TCP port 6379") && self.redis.is_none() {
                    match RedisCli::start(port) {
                        Ok(cli) => self.redis = Some(cli),
                        Err(error) => self.failure = Some(format!("cannot start redis-cli: {error}")),
                    }
                    // A key that expires during the updates and one that
                    // must keep its time to live through them.
                    self.redis_step(&[
                        ("SET baton:key before", "OK"),
                        ("SET baton:short soon PX 1000", "OK"),
                        ("SET baton:long later EX 600", "OK"),
                    ]);
                    self.redis_incr();
                } else if line.contains("demo: init resumed on the new kernel") {
                    self.updates += 1;
                    self.redis_step(&[("GET baton:key", "before"), ("EXISTS baton:long", "1")]);
                    self.redis_incr();
                } else if is_pause {
                    // Five updates at least 400 ms apart: the short key
                    // expired on the clock that continues across them;
                    // the long one counts down from 600 seconds.
                    self.redis_step(&[("EXISTS baton:key", "1"), ("EXISTS baton:short", "0")]);
                    self.redis_check("TTL baton:long", |reply| {
                        reply.parse::<u32>().is_ok_and(|ttl| (590..600).contains(&ttl))
                    });
                    if let Some(cli) = self.redis.take() {
                        cli.finish();
                    }
                    let info = info_baton(port);
                    self.finish_report(format!(
                        "host: redis-cli, one connection, {} of {} replies right through {} updates; {info}",
                        self.echoed, self.sent, self.updates
                    ));
                } else {
                    return;
                }
            }
            HostTraffic::Hostile { .. }
            | HostTraffic::Bulk { .. }
            | HostTraffic::Populate { .. }
            | HostTraffic::Crowd { .. } => {
                if line.contains("kvstore: serving Redis on TCP port 6379") && self.background.is_none() {
                    self.background = start_background(self.kind);
                    return;
                } else if is_pause {
                    let report = match self.background.take() {
                        Some(finish) => finish(),
                        None => "host: the clients never started".to_string(),
                    };
                    self.finish_report(report);
                } else {
                    return;
                }
            }
            HostTraffic::RedisBenchmark { port, requests, pipeline } => {
                if line.contains("kvstore: serving Redis on TCP port 6379") && self.benchmark.is_none() {
                    match Benchmark::start(port, requests, pipeline) {
                        Ok(child) => self.benchmark = Some(child),
                        Err(error) => self.failure = Some(format!("cannot start redis-benchmark: {error}")),
                    }
                    return;
                } else if line.contains("update-report: generation=") && self.benchmark.is_some() {
                    // An update finished while redis-benchmark ran.
                    self.updates += 1;
                    return;
                } else if is_pause {
                    let report = match self.benchmark.take() {
                        Some(child) => finish_benchmark(child, port, requests, pipeline, self.updates),
                        None => "host: redis-benchmark never started".to_string(),
                    };
                    self.finish_report(report);
                } else {
                    return;
                }
            }
        }
        if is_pause {
            // The guest logs the closed connection before it is let go.
            std::thread::sleep(Duration::from_millis(300));
            let _ = input.write_all(b"\n");
            let _ = input.flush();
        }
    }

    /// The report line: `head`, and the first failure if there was one.
    fn finish_report(&mut self, mut head: String) {
        if let Some(failure) = &self.failure {
            head.push_str(&format!(" ({failure})"));
        }
        self.report = Some(head);
    }

    /// Commands over the redis-cli connection, each reply checked; a
    /// broken connection is reported, never reopened.
    fn redis_step(&mut self, commands: &[(&str, &str)]) {
        for (command, expected) in commands {
            let Some(cli) = self.redis.as_mut() else { return };
            self.sent += 1;
            match cli.command(command, expected) {
                Ok(true) => self.echoed += 1,
                Ok(false) => self.failure = Some(format!("a wrong reply to '{command}'")),
                Err(error) => {
                    self.failure = Some(error);
                    self.redis = None;
                }
            }
        }
    }

    /// One command over the redis-cli connection whose reply `is_right`
    /// judges.
    fn redis_check(&mut self, command: &str, is_right: impl Fn(&str) -> bool) {
        let Some(cli) = self.redis.as_mut() else { return };
        self.sent += 1;
        match cli.reply(command) {
            Ok(reply) if is_right(&reply) => self.echoed += 1,
            Ok(reply) => self.failure = Some(format!("'{reply}' is a wrong reply to '{command}'")),
            Err(error) => {
                self.failure = Some(error);
                self.redis = None;
            }
        }
    }

    /// INCR on the counter, which counts every step exactly once.
    fn redis_incr(&mut self) {
        self.counter += 1;
        let expected = self.counter.to_string();
        self.redis_step(&[("INCR baton:count", &expected)]);
    }

    /// One numbered line over the session's connection; a broken
    /// connection is reported, never reopened.
    fn send(&mut self, when: &str) {
        let Some(stream) = self.stream.as_mut() else { return };
        self.sent += 1;
        let line = format!("baton session line {} ({when})\n", self.sent);
        match exchange(stream, &line) {
            Ok(true) => self.echoed += 1,
            Ok(false) => {}
            Err(error) => {
                self.failure = Some(format!("lost {when}: {error}"));
                self.stream = None;
            }
        }
    }
}

/// `lines` numbered lines over a fresh connection; how many came back.
fn echo_lines(port: u16, lines: u32) -> std::io::Result<u32> {
    let mut stream = connect(port)?;
    let mut echoed = 0;
    for number in 0..lines {
        if exchange(&mut stream, &format!("baton echo {number}\n"))? {
            echoed += 1;
        }
    }
    stream.shutdown(Shutdown::Both)?;
    Ok(echoed)
}
