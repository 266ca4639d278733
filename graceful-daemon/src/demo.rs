//! `demo`: the catalogue of throwaway containers with the usual PID 1 mistakes and a correct
//! one, run by the [`engine`](crate::engine) as `graceful-daemon demo` shows them.
use crate::engine::{sh, Scenario};

impl Scenario {
    pub fn shell_pid1() -> Scenario {
        Scenario::new(
            "shell-pid1",
            "CMD in shell form: sh is PID 1 and runs the app as a child",
            sh("sleep 1000; true"),
            &["sh", "sleep"],
        )
    }
    pub fn no_handler() -> Scenario {
        Scenario::new(
            "no-handler",
            "the app is PID 1 and has no SIGTERM handler",
            vec!["/bin/sleep".into(), "1000".into()],
            &["sleep"],
        )
    }
    pub fn not_forwarded() -> Scenario {
        Scenario::new(
            "not-forwarded",
            "PID 1 traps SIGTERM but never passes it to its child",
            sh("trap 'echo stopping' TERM; sleep 1000 & while :; do wait; done"),
            &["sh", "sleep"],
        )
    }
    pub fn slow_shutdown() -> Scenario {
        Scenario::new(
            "slow-shutdown",
            "PID 1 forwards SIGTERM, but the worker needs longer than the grace period",
            sh("trap 'kill -TERM -1; wait' TERM; sh -c 'trap \"sleep 60\" TERM; sleep 1000 & wait' & wait"),
            &["sh", "sh", "sleep"],
        )
    }
    pub fn child_ignores() -> Scenario {
        Scenario::new(
            "child-ignores",
            "PID 1 forwards SIGTERM, but the worker was started with SIGTERM ignored",
            sh("trap 'kill -TERM -1; wait; exit 0' TERM; sh -c \"trap '' TERM; exec sleep 1000\" & wait"),
            &["sh", "sleep"],
        )
    }
    pub fn forwards() -> Scenario {
        Scenario::new(
            "forwards",
            "correct: PID 1 forwards SIGTERM and waits for its child",
            sh("trap 'kill -TERM -1; wait; exit 0' TERM; sleep 1000 & wait"),
            &["sh", "sleep"],
        )
    }
    pub fn exits_leaving_children() -> Scenario {
        Scenario::new(
            "exits-on-term",
            "PID 1 exits on SIGTERM while its worker still runs; the kernel kills the worker",
            sh("trap 'exit 0' TERM; sleep 1000 & wait"),
            &["sh", "sleep"],
        )
    }
    pub fn force_delete() -> Scenario {
        Scenario::new(
            "force-delete",
            "a force delete: SIGKILL with no stop signal",
            sh("trap 'exit 0' TERM; sleep 1000 & wait"),
            &["sh", "sleep"],
        )
        .stop_with(None)
    }
    pub fn oom_child() -> Scenario {
        let mut s = Scenario::new(
            "oom-child",
            "a worker allocates past the 32 MiB limit and is OOM-killed; PID 1 runs on and stops cleanly",
            sh("trap 'kill -TERM $!; wait $!; exit 0' TERM; \
                sh -c 'x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done'; \
                sleep 1000 & wait"),
            &["sh", "sleep"],
        );
        s.spawn.memory_limit = Some(32 << 20);
        s
    }
    /// What `graceful-daemon demo` shows.
    pub fn demo_set() -> Vec<Scenario> {
        vec![
            Scenario::shell_pid1(),
            Scenario::no_handler(),
            Scenario::not_forwarded(),
            Scenario::slow_shutdown(),
            Scenario::child_ignores(),
            Scenario::forwards(),
            Scenario::exits_leaving_children(),
            Scenario::force_delete(),
        ]
    }
}
