//! The settled fast path on the real kernel. Alone in its binary: the kernel programs of every
//! test see every stop on the node, and a stop by a test running beside this one would keep
//! the node from settling.
use std::time::Duration;

use graceful::{events::Event, probes::UNMARK_AFTER, signals::Signal, throwaway::Throwaway};
use graceful_tests::{fifo, release, Kernel};

const WAIT: Duration = Duration::from_secs(10);

/// Once userspace finds no container being stopped, signals inside containers are only
/// counted (the kernel returns before reading any cgroup id); a stop from outside after that
/// is seen all the same, and the container's own signals from then on too.
#[tokio::test(flavor = "multi_thread")]
async fn a_settled_node_still_sees_the_next_stop_and_what_follows_it() {
    let mut k = Kernel::start("settled").await;
    let parent = k.parent.clone();
    let fifo = fifo("settled");
    let script = format!(
        "trap '' USR1 TERM; until read a < {0}; do :; done; kill -USR1 $$; \
         until read b < {0}; do :; done; kill -USR1 $$; exec sleep 1000",
        fifo.display()
    );
    let mut sb = Throwaway::spawn(
        &mut k.cgroups,
        &parent,
        "settled",
        &["/bin/sh", "-c", &script],
    )
    .unwrap();
    let (id, init) = (sb.cgroup_id, sb.init as u32);
    let mut marks = k.probes.stop_marks().unwrap();
    let now = std::time::Instant::now();
    assert_eq!(marks.sweep(now, |_| false), 0, "nothing marked: settled");
    release(&fifo);
    sb.signal(Signal::TERM).unwrap();
    let term = k.expect_signal(Signal::TERM, init).await;
    assert_eq!(term.target_cgroup, id);
    release(&fifo);
    let usr1 = k.expect_signal(Signal::USR1, init).await;
    assert_eq!((usr1.sender_cgroup, usr1.target_cgroup), (id, id));
    let usr1s = k
        .seen
        .iter()
        .filter(
            |e| matches!(e, Event::Signal(s) if s.target_cgroup == id && s.signal == Signal::USR1),
        )
        .count();
    assert_eq!(usr1s, 1, "the USR1 before the stop was only counted");
    // The stop is over (as the tracker would say): unmarked after a while, then settled again.
    assert_eq!(marks.sweep(now, |_| false), 1, "kept a while");
    assert_eq!(marks.sweep(now, |c| c == id), 1, "kept while under way");
    let later = now + UNMARK_AFTER;
    assert_eq!(marks.sweep(later, |_| false), 1, "idle from now on");
    assert_eq!(marks.sweep(later + UNMARK_AFTER, |_| false), 0);
    sb.signal(Signal::KILL).unwrap();
    k.expect_exit(init).await;
    sb.wait(WAIT).unwrap();
    let _ = std::fs::remove_file(&fifo);
}
