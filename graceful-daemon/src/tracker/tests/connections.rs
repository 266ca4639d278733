//! A stop's TCP connections: the kernel's counts at the stop signal and at the SIGKILL, and the
//! state changes between.
use super::*;
use crate::events::ConnEvent;

const ESTABLISHED: i32 = 1;
const FIN_WAIT1: i32 = 4;
const CLOSE: i32 = 7;
const LISTEN: i32 = 10;

/// A signal from the runtime carrying the kernel's count of established connections.
fn counted(s: &mut Seq, signal: Signal, target: u32, result: SignalResult, established: u64) {
    let mut e = signal_event(
        s.now,
        signal,
        (RUNC, "runc", HOST),
        (target, "", CG),
        result,
    );
    e.established = Some(established);
    s.feed(Event::Signal(e));
}

fn conn(s: &mut Seq, sk: u64, old: i32, new: i32) {
    let ts = s.now;
    s.feed(Event::Conn(ConnEvent {
        ts,
        cgroup: CG,
        sk,
        inode: sk,
        old,
        new,
        sport: 8080,
    }));
}

/// A server with a handler that stops listening, closes two connections, has one reset, and
/// is SIGKILLed with two still open.
fn server(s: &mut Seq) {
    counted(s, Signal::TERM, 10, SignalResult::Delivered, 5);
    s.at(0.5);
    conn(s, 1, LISTEN, CLOSE);
    conn(s, 2, ESTABLISHED, FIN_WAIT1);
    conn(s, 3, ESTABLISHED, FIN_WAIT1);
    conn(s, 4, ESTABLISHED, CLOSE);
    s.at(30.0);
    counted(s, Signal::KILL, 10, SignalResult::Delivered, 2);
    // The kernel closes what the killed processes held: not the app's doing.
    conn(s, 5, ESTABLISHED, FIN_WAIT1);
    conn(s, 6, ESTABLISHED, FIN_WAIT1);
    s.exit(11, None, Some(9)).exit(10, None, Some(9));
}

#[test]
fn the_stop_says_what_it_did_to_the_connections() {
    let mut s = shell_with_child();
    server(&mut s);
    let r = s.one();
    let c = r.connections.clone().expect("measured");
    assert_eq!(
        (c.open_at_stop, c.closed_by_app, c.reset, c.open_at_kill),
        (Some(5), 2, 1, Some(2))
    );
    assert_eq!(c.listener_closed, Some(1000 * S + S / 2));
    assert!(
        r.explanation.ends_with(
            " The SIGKILL cut 2 open connections. One connection was reset after the stop signal."
        ),
        "{}",
        r.explanation
    );
}

#[test]
fn a_clean_stop_cuts_nothing() {
    let mut s = shell_with_child();
    counted(&mut s, Signal::TERM, 10, SignalResult::Delivered, 1);
    conn(&mut s, 2, ESTABLISHED, FIN_WAIT1);
    s.exit(11, Some(0), None).exit(10, Some(0), None);
    let r = s.one();
    let c = r.connections.expect("measured");
    assert_eq!(
        (c.open_at_stop, c.closed_by_app, c.open_at_kill),
        (Some(1), 1, None)
    );
    assert!(!r.explanation.contains("cut"), "{}", r.explanation);
}

#[test]
fn not_measured_when_the_container_ran_before_the_daemon_or_the_kernel_cannot_count() {
    // Its connections from before the daemon's start were never counted.
    let mut s = Seq::new();
    s.t.seed(found(10, None, "sh", true));
    s.t.seed(found(11, Some(10), "sleep", false));
    server(&mut s);
    assert_eq!(s.one().connections, None);
    let mut s = shell_with_child();
    s.t.config.connections_visible = false;
    server(&mut s);
    assert_eq!(s.one().connections, None);
}
