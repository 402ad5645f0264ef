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
    sent: u32,
    echoed: u32,
    updates: u32,
    failure: Option<String>,
    report: Option<String>,
}

impl Traffic {
    pub fn new(kind: HostTraffic) -> Traffic {
        Traffic { kind, stream: None, sent: 0, echoed: 0, updates: 0, failure: None, report: None }
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
                    let mut report = format!(
                        "host: one TCP connection, {} of {} lines echoed through {} updates",
                        self.echoed, self.sent, self.updates
                    );
                    if let Some(failure) = &self.failure {
                        report.push_str(&format!(" ({failure})"));
                    }
                    self.report = Some(report);
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
