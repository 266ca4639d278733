//! `check --probe-url URL` / `--probe-port N`: a client of the checked server through its stop,
//! as its users are: a few keep-alive connections asking again and again, and a steady stream
//! of new ones. What failed after the stop signal, by the client's own count, goes beside the
//! kernel's: the proof that a server drains.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{clock::monotonic_now, events::Mono};

/// Keep-alive connections held through the stop.
const KEEP_ALIVE: usize = 4;
/// A new connection this often; each keep-alive connection asks this often too.
const NEW_EVERY: Duration = Duration::from_millis(20);
const ASK_EVERY: Duration = Duration::from_millis(100);
/// No answer within this is a failed request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server may take to listen after its start.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the probe asks: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTarget {
    pub host: String,
    pub port: u16,
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--probe-url {0:?}: only http://HOST:PORT/PATH is probed")]
    Url(String),
    #[error("nothing answered at {0} before the stop: is it the port the server listens on?")]
    Unreachable(String),
}

impl ProbeTarget {
    pub fn port(port: u16) -> ProbeTarget {
        ProbeTarget {
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
        }
    }

    pub fn url(url: &str) -> Result<ProbeTarget, ProbeError> {
        let bad = || ProbeError::Url(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(ProbeTarget {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn shown(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect((self.host.as_str(), self.port))?;
        s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(s)
    }
}

/// How one request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Answered, and the server closes the connection after it (`Connection: close`): a
    /// draining server's way to move keep-alive clients on.
    OkClosing,
    /// The connection was refused: nobody listened.
    Refused,
    /// An open connection was closed or reset under it.
    Cut,
    /// No answer in time, or not HTTP.
    Failed,
}

/// One request and when it was made (monotonic ns, the kernel's clock).
#[derive(Debug, Clone, Copy)]
struct Asked {
    at: Mono,
    outcome: Outcome,
}

/// The client's side of the stop.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeCounts {
    pub url: String,
    /// Requests made from the stop signal on, and how they failed.
    pub requests: u64,
    pub failed: u64,
    /// New connections refused (keep-alive ones made again included) until the container's end,
    /// as the kernel counts them: after it, nobody is there to refuse them.
    pub refused: u64,
    /// Keep-alive connections closed or reset under a request.
    pub cut: u64,
}

pub struct Probe {
    done: Arc<AtomicBool>,
    worker: JoinHandle<(bool, Vec<Asked>)>,
    target: ProbeTarget,
}

/// One HTTP/1.1 request on `s`; the connection stays usable when the answer says so.
fn ask(s: &mut TcpStream, target: &ProbeTarget, keep: bool) -> Outcome {
    let connection = if keep { "keep-alive" } else { "close" };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: {connection}\r\n\r\n",
        target.path, target.host, target.port
    );
    if s.write_all(request.as_bytes()).is_err() {
        return Outcome::Cut;
    }
    let mut reader = BufReader::new(&*s);
    let mut status = String::new();
    match reader.read_line(&mut status) {
        Ok(0) => return Outcome::Cut,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Outcome::Failed,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Outcome::Failed,
        Err(_) => return Outcome::Cut,
        Ok(_) if !status.starts_with("HTTP/1.") => return Outcome::Failed,
        Ok(_) => {}
    }
    let mut length = 0usize;
    let mut closing = false;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Outcome::Cut,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    } else if k.eq_ignore_ascii_case("connection") {
                        closing = v.trim().eq_ignore_ascii_case("close");
                    }
                }
            }
        }
    }
    let mut body = vec![0u8; length];
    match reader.read_exact(&mut body) {
        Ok(()) if closing => Outcome::OkClosing,
        Ok(()) => Outcome::Ok,
        Err(_) => Outcome::Cut,
    }
}

impl Outcome {
    fn answered(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::OkClosing)
    }
}

fn fresh(target: &ProbeTarget) -> Outcome {
    match target.connect() {
        Ok(mut s) => ask(&mut s, target, false),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(_) => Outcome::Failed,
    }
}

impl Probe {
    /// Starts asking once the server listens (within a minute of now), until finished.
    pub fn start(target: ProbeTarget) -> Probe {
        let done = Arc::new(AtomicBool::new(false));
        let (stop, t) = (done.clone(), target.clone());
        let worker = std::thread::spawn(move || {
            let deadline = Instant::now() + LISTEN_TIMEOUT;
            let mut kept: Vec<Option<TcpStream>> = loop {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return (false, Vec::new());
                }
                if let Ok(mut first) = t.connect() {
                    if ask(&mut first, &t, true) == Outcome::Ok {
                        let mut kept = vec![Some(first)];
                        kept.extend((1..KEEP_ALIVE).map(|_| t.connect().ok()));
                        break kept;
                    }
                }
                std::thread::sleep(NEW_EVERY);
            };
            let mut asked = Vec::new();
            let mut last_round = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                asked.push(Asked {
                    at: monotonic_now(),
                    outcome: fresh(&t),
                });
                if last_round.elapsed() >= ASK_EVERY {
                    last_round = Instant::now();
                    for slot in kept.iter_mut() {
                        let at = monotonic_now();
                        let outcome = match slot.as_mut() {
                            Some(s) => ask(s, &t, true),
                            None => match t.connect() {
                                Ok(s) => {
                                    *slot = Some(s);
                                    continue;
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                    Outcome::Refused
                                }
                                Err(_) => continue,
                            },
                        };
                        if outcome != Outcome::Ok {
                            *slot = None;
                        }
                        asked.push(Asked { at, outcome });
                    }
                }
                std::thread::sleep(NEW_EVERY);
            }
            // Finished after the container's end: one more request on each connection still
            // held, so a cut shows whether or not a round came between the end and now.
            for s in kept.iter_mut().flatten() {
                let at = monotonic_now();
                asked.push(Asked {
                    at,
                    outcome: ask(s, &t, true),
                });
            }
            (true, asked)
        });
        Probe {
            done,
            worker,
            target,
        }
    }

    /// Stops asking; what failed from `since` (the stop signal) on, refusals until `until` (the
    /// container's end), or why nothing was asked. A cut shows at the next request on the
    /// connection: the last one is made now, after the end.
    pub fn finish(self, since: Mono, until: Mono) -> Result<ProbeCounts, ProbeError> {
        self.done.store(true, Ordering::Relaxed);
        let (reached, asked) = self.worker.join().unwrap_or((false, Vec::new()));
        if !reached {
            return Err(ProbeError::Unreachable(self.target.shown()));
        }
        let after: Vec<&Asked> = asked.iter().filter(|a| a.at >= since).collect();
        let count = |o: Outcome| after.iter().filter(|a| a.outcome == o).count() as u64;
        let refused = after
            .iter()
            .filter(|a| a.outcome == Outcome::Refused && a.at <= until)
            .count() as u64;
        Ok(ProbeCounts {
            url: self.target.shown(),
            requests: after.len() as u64,
            failed: after.iter().filter(|a| !a.outcome.answered()).count() as u64,
            refused,
            cut: count(Outcome::Cut),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_port_are_probed() {
        let t = ProbeTarget::url("http://127.0.0.1:8080/healthz").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/healthz")
        );
        assert_eq!(ProbeTarget::url("http://localhost:80").unwrap().path, "/");
        for bad in [
            "https://127.0.0.1:443/",
            "127.0.0.1:80",
            "http://127.0.0.1/",
            "http://127.0.0.1:http/",
            "http://127.0.0.1:0/",
            "http://:80/",
            "http://h:80/a b",
        ] {
            let e = ProbeTarget::url(bad).unwrap_err().to_string();
            assert!(e.starts_with("--probe-url"), "{bad}: {e}");
        }
    }
}
