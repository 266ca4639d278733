//! What a stop costs in TCP connections, measured by the kernel and checked against the client's
//! own count: a Python server in a throwaway container (`check`), a client here holding
//! keep-alive connections to it through the stop.
use std::{
    io::{BufRead, BufReader, Read},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use graceful_tests::check_cli::check;

const HELD: usize = 5;

/// A Python TCP server on `port` that greets every connection and keeps it; `handler`: on
/// SIGTERM it closes its listener and every connection, then exits 0.
fn server(port: u16, handler: bool) -> String {
    let drain = if handler {
        "def drain(*a):\n    s.close()\n    [c.close() for c in conns]\n    sys.exit(0)\nsignal.signal(signal.SIGTERM, drain)\n"
    } else {
        ""
    };
    format!(
        "import signal, socket, sys\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port}))\n\
         s.listen(64)\n\
         conns = []\n\
         {drain}\
         while True:\n    c, _ = s.accept()\n    c.sendall(b'hi\\n')\n    conns.append(c)\n"
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects `HELD` times once the server listens; each greeted, so established on both sides.
fn hold(port: u16) -> Vec<TcpStream> {
    hold_many(port, HELD)
}

fn hold_many(port: u16, many: usize) -> Vec<TcpStream> {
    let first = graceful_tests::daemon::eventually("the server listening", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let mut held = vec![first];
    while held.len() < many {
        held.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut line = String::new();
        BufReader::new(&*c).read_line(&mut line).unwrap();
        assert_eq!(line, "hi\n");
    }
    held
}

/// How many of the client's connections the server's side closed (EOF or reset).
fn closed_by_the_server(held: Vec<TcpStream>) -> usize {
    held.into_iter()
        .filter(|mut c| {
            let mut byte = [0u8; 1];
            matches!(c.read(&mut byte), Ok(0) | Err(_))
        })
        .count()
}

/// The server is stopped 4 s after it starts (`--ready-after`): the client's connections are
/// all established by then, which the record's `open_at_stop` shows.
fn run(handler: bool) -> (serde_json::Value, usize) {
    let port = free_port();
    let script = server(port, handler);
    let checking = std::thread::spawn(move || {
        check(
            &["--json", "--grace", "2", "--ready-after", "4"],
            &["python3", "-c", &script],
        )
    });
    let held = hold(port);
    let c = checking.join().unwrap();
    assert!(!c.stderr.contains("panicked"), "{}", c.stderr);
    let record: serde_json::Value = serde_json::from_str(c.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON record ({e}): {}{}", c.stdout, c.stderr));
    (record, closed_by_the_server(held))
}

#[test]
fn a_server_killed_after_the_grace_cut_every_connection_it_held() {
    let (r, closed) = run(false);
    assert_eq!(r["outcome"], "killed_after_grace", "{r:#}");
    let c = &r["connections"];
    assert_eq!(c["open_at_stop"], HELD as u64, "{r:#}");
    assert_eq!(closed, HELD, "the client saw every connection go");
    // The kernel's count of the cut equals the client's.
    assert_eq!(c["open_at_kill"], closed as u64, "{r:#}");
    assert_eq!(c["closed_by_app"], 0, "{r:#}");
    assert_eq!(c["refused"], 0, "nobody tried to connect again: {r:#}");
    assert!(
        r["explanation"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("The SIGKILL cut {HELD} open connections."))),
        "{r:#}"
    );
}

#[test]
fn a_server_that_drains_on_sigterm_cuts_nothing() {
    let (r, closed) = run(true);
    assert_eq!(r["outcome"], "exited", "{r:#}");
    assert_eq!(r["verdict"], "graceful", "{r:#}");
    let c = &r["connections"];
    assert_eq!(c["open_at_stop"], HELD as u64, "{r:#}");
    assert_eq!(c["closed_by_app"], closed as u64, "{r:#}");
    assert!(c["open_at_kill"].is_null(), "no SIGKILL: {r:#}");
    assert!(c["listener_closed"].is_string(), "{r:#}");
}

/// Python's http.server (HTTP/1.1 keep-alive) on `port`. With `drain` (seconds still
/// listening, seconds with the listener closed), on SIGTERM it answers with `Connection:
/// close` from then on, goes on accepting, then closes its listener, then exits 0.
fn http_server(port: u16, drain: Option<(f64, f64)>) -> String {
    let stop = match drain {
        Some((listening, closed)) => format!(
            "import os, signal, threading, time\n\
             def drain():\n    time.sleep({listening})\n    srv.shutdown()\n    srv.socket.close()\n    time.sleep({closed})\n    os._exit(0)\n\
             def term(*a):\n    draining.set()\n    threading.Thread(target=drain).start()\n\
             signal.signal(signal.SIGTERM, term)\n"
        ),
        None => String::new(),
    };
    format!(
        "import http.server as h, threading\n\
         draining = threading.Event()\n\
         class H(h.SimpleHTTPRequestHandler):\n    protocol_version = 'HTTP/1.1'\n    def end_headers(self):\n        if draining.is_set():\n            self.send_header('Connection', 'close')\n        super().end_headers()\n\
         srv = h.ThreadingHTTPServer(('127.0.0.1', {port}), H)\n\
         {stop}\
         srv.serve_forever()\n"
    )
}

/// `check --probe-port` on a server: its JSON record, with the probe's counts.
fn probed(port: u16, server: &str, grace: &str) -> serde_json::Value {
    let c = check(
        &[
            "--json",
            "--grace",
            grace,
            "--ready-after",
            "3",
            "--probe-port",
            &port.to_string(),
        ],
        &["python3", "-c", server],
    );
    assert!(!c.stderr.contains("panicked"), "{}", c.stderr);
    serde_json::from_str(c.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON record ({e}): {}{}", c.stdout, c.stderr))
}

/// The client's refused attempts against the kernel's, from the stop signal to the end: one may
/// be in flight at either edge.
fn refused_match(r: &serde_json::Value) -> u64 {
    let (client, kernel) = (
        r["probe"]["refused"].as_u64().unwrap(),
        r["connections"]["refused"].as_u64().unwrap(),
    );
    assert!(
        client.abs_diff(kernel) <= 1,
        "refused: client {client}, kernel {kernel}: {r:#}"
    );
    kernel
}

/// `check --probe-port`: the client's own count of what the stop cut, beside the kernel's. A
/// Python http.server without a SIGTERM handler is SIGKILLed after the grace with the probe's
/// keep-alive connections open.
#[test]
fn check_probes_the_server_and_its_cut_matches_the_kernels() {
    let port = free_port();
    let r = probed(port, &http_server(port, None), "2");
    assert_eq!(r["outcome"], "killed_after_grace", "{r:#}");
    let probe = &r["probe"];
    let (cut, kernel) = (
        probe["cut"].as_u64().unwrap(),
        r["connections"]["open_at_kill"].as_u64().unwrap(),
    );
    assert!(
        cut >= 4,
        "the probe's keep-alive connections were cut: {r:#}"
    );
    // A request in flight at the kill may be counted by one side and not yet by the other.
    assert!(
        cut.abs_diff(kernel) <= 1,
        "client {cut}, kernel {kernel}: {r:#}"
    );
    refused_match(&r);
}

/// A server that closes its listener at SIGTERM and serves what it has for 1.5 s more: every
/// new connection in that time is refused, and the kernel counts each one the client saw.
#[test]
fn attempts_after_the_listener_closed_are_refused_and_counted() {
    let port = free_port();
    let r = probed(port, &http_server(port, Some((0.0, 1.5))), "5");
    assert_eq!(r["outcome"], "exited", "{r:#}");
    let c = &r["connections"];
    assert!(c["listener_closed"].is_string(), "{r:#}");
    assert!(c["open_at_kill"].is_null(), "no SIGKILL: {r:#}");
    // A new connection every 20 ms for 1.5 s.
    let refused = refused_match(&r);
    assert!(refused >= 20, "{r:#}");
    assert!(
        r["explanation"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("{refused} new connections were refused"))),
        "{r:#}"
    );
}

/// A server that drains while its endpoints would still route to it: from SIGTERM it closes
/// each keep-alive connection after its next answer and goes on accepting for 1.5 s, then
/// closes its listener and exits 0.5 s later. Nothing is cut by a kill; what the listener's
/// close cost (connections still in its accept queue are reset, attempts after it refused) is
/// counted by the kernel as the client saw it.
#[test]
fn a_server_that_drains_while_still_routed_is_charged_only_for_its_close() {
    let port = free_port();
    let r = probed(port, &http_server(port, Some((1.5, 0.5))), "5");
    assert_eq!(r["outcome"], "exited", "{r:#}");
    assert_eq!(r["verdict"], "graceful", "{r:#}");
    let c = &r["connections"];
    assert!(c["open_at_kill"].is_null(), "{r:#}");
    // Every keep-alive connection was closed by the server, in order.
    assert!(c["closed_by_app"].as_u64().unwrap() >= 4, "{r:#}");
    let (cut, reset) = (
        r["probe"]["cut"].as_u64().unwrap(),
        c["reset"].as_u64().unwrap(),
    );
    assert!(
        cut.abs_diff(reset) <= 1,
        "client cut {cut}, kernel reset {reset}: {r:#}"
    );
    // Refused only once the listener closed: 0.5 s of a new connection every 20 ms and four
    // keep-alive ones made again every 100 ms (90 a second).
    assert!(refused_match(&r) <= 60, "{r:#}");
}

/// nginx, stopped with SIGQUIT (its graceful shutdown, the STOPSIGNAL of the official image):
/// it closes its listeners and its idle keep-alive connections in order at once, and exits.
#[test]
fn nginx_quits_gracefully_and_the_kernel_agrees_with_its_client() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("graceful-nginx-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\nerror_log stderr;\npid {0}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  keepalive_timeout 60;\n  client_body_temp_path {0};\n  \
             proxy_temp_path {0};\n  fastcgi_temp_path {0};\n  uwsgi_temp_path {0};\n  scgi_temp_path {0};\n  \
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
            dir.display()
        ),
    )
    .unwrap();
    let c = check(
        &[
            "--json",
            "--grace",
            "5",
            "--stop-signal",
            "SIGQUIT",
            "--ready-after",
            "3",
            "--probe-port",
            &port.to_string(),
        ],
        &["nginx", "-c", conf.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let r: serde_json::Value = serde_json::from_str(c.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON record ({e}): {}{}", c.stdout, c.stderr));
    assert_eq!(r["outcome"], "exited", "{r:#}");
    assert_eq!(r["verdict"], "graceful", "{r:#}");
    let k = &r["connections"];
    assert!(k["open_at_kill"].is_null(), "{r:#}");
    assert_eq!(k["reset"], 0, "{r:#}");
    // The probe's four keep-alive connections, closed by nginx with a FIN.
    assert!(k["closed_by_app"].as_u64().unwrap() >= 4, "{r:#}");
    assert!(k["listener_closed"].is_string(), "{r:#}");
    refused_match(&r);
    // A client that does not retry a request on a keep-alive connection the server closed
    // sees those as failed; nothing else failed.
    assert!(r["probe"]["cut"].as_u64().unwrap() <= 4, "{r:#}");
}

/// Thousands of connections at the stop: counted exactly, and the record stays small (counts,
/// not lists).
#[test]
fn thousands_of_connections_are_counted_exactly_in_a_small_record() {
    const MANY: usize = 3000;
    // The client and the server each hold MANY sockets: the test's soft limit is raised to the
    // hard one, which the server inherits.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur as usize > MANY + 100,
        "nofile {}",
        limit.rlim_cur
    );
    let port = free_port();
    let script = server(port, false).replace("s.listen(64)", "s.listen(4096)");
    let checking = std::thread::spawn(move || {
        check(
            &["--json", "--grace", "1", "--ready-after", "8"],
            &["python3", "-c", &script],
        )
    });
    let held = hold_many(port, MANY);
    let c = checking.join().unwrap();
    let r: serde_json::Value = serde_json::from_str(c.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON record ({e}): {}{}", c.stdout, c.stderr));
    assert_eq!(r["outcome"], "killed_after_grace", "{r:#}");
    let k = &r["connections"];
    assert_eq!(k["open_at_stop"], MANY as u64, "{r:#}");
    assert_eq!(k["open_at_kill"], MANY as u64, "{r:#}");
    assert_eq!(closed_by_the_server(held), MANY);
    let size = c.stdout.trim().len();
    assert!(size < 8192, "a record of {size} bytes");
}

#[test]
fn check_refuses_a_probe_it_cannot_make_in_one_line() {
    let bad = check(
        &["--probe-url", "https://127.0.0.1:443/", "--grace", "1"],
        &["sleep", "1000"],
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.error_line().contains("only http://HOST:PORT/PATH"),
        "{}",
        bad.stderr
    );
    let cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
    let run = cgroups.dir(&format!("/graceful-demo/{}-0", bad.pid));
    assert!(!run.exists(), "{} was left behind", run.display());
    // A port nobody opens: the check runs, then says the probe never got an answer.
    let nobody = free_port();
    let quiet = check(
        &[
            "--probe-port",
            &nobody.to_string(),
            "--grace",
            "1",
            "--ready-after",
            "1",
        ],
        &["sleep", "1000"],
    );
    assert_eq!(quiet.code, Some(2), "{}", quiet.stderr);
    assert!(
        quiet.error_line().contains("nothing answered"),
        "{}",
        quiet.stderr
    );
}
