//! Which Events a stop raises, the limits before the queue, and what the API gets.
use super::*;

fn event(uid: &str, container: &str) -> PodEvent {
    PodEvent {
        pod: PodRef {
            namespace: "shop".into(),
            name: "web-1".into(),
            uid: uid.into(),
            container: container.into(),
            owner: None,
        },
        reason: Reason::StopSignalIgnored,
        note: "PID 1 is a shell (sh) ... sleep (pid 4242) never received it. Authorization: Bearer s3cr3t".into(),
        type_: EventType::Warning,
    }
}

fn new_sink(queue: usize, options: EventOptions) -> (EventSink, mpsc::Receiver<PodEvent>) {
    let (tx, rx) = mpsc::channel(queue);
    (EventSink::with_queue(tx, options, Family::default()), rx)
}

fn counted(sink: &EventSink, result: &str) -> u64 {
    sink.counts
        .get_or_create(&EventLabels {
            reason: "StopSignalIgnored".into(),
            result: result.into(),
        })
        .get()
}

#[test]
fn reasons_follow_the_verdicts() {
    use Outcome::*;
    use Reason::*;
    assert_eq!(
        Reason::of(Verdict::SwallowedByShellPid1, KilledAfterGrace),
        [SigkillAfterGrace, StopSignalIgnored]
    );
    assert_eq!(
        Reason::of(Verdict::Pid1IgnoresStopSignal, KilledAfterGrace),
        [SigkillAfterGrace, StopSignalIgnored]
    );
    assert_eq!(
        Reason::of(Verdict::NotForwarded, KilledAfterGrace),
        [SigkillAfterGrace, StopSignalNotForwarded]
    );
    assert_eq!(
        Reason::of(Verdict::SlowShutdown, KilledAfterGrace),
        [SigkillAfterGrace]
    );
    for quiet in [
        Verdict::Graceful,
        Verdict::KilledWithoutStopSignal,
        Verdict::OomKilled,
        Verdict::Unknown,
    ] {
        assert_eq!(Reason::of(quiet, Killed), [], "{quiet:?}");
    }
    assert_eq!(
        Reason::of(Verdict::Unknown, KilledAfterGrace),
        [],
        "a record that cannot be judged says nothing"
    );
}

#[test]
fn a_pod_over_its_rate_is_dropped_and_a_full_queue_never_waits() {
    let (mut sink, mut rx) = new_sink(100, EventOptions::default());
    let t0 = Instant::now();
    let offered = (0..8).filter(|_| sink.offer(event("a", "app"), t0)).count();
    assert_eq!(offered, 5);
    assert!(
        sink.offer(event("b", "app"), t0),
        "another pod has its own rate"
    );
    assert!(
        sink.offer(event("a", "app"), t0 + REFILL),
        "a token came back"
    );
    assert_eq!(counted(&sink, "rate_limited"), 3);
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 7);

    let (mut sink, _rx) = new_sink(1, EventOptions::default());
    assert!(sink.offer(event("a", "app"), t0));
    assert!(
        !sink.offer(event("b", "app"), t0),
        "full queue: dropped, not awaited"
    );
    assert_eq!(counted(&sink, "queue_full"), 1);
}

#[test]
fn the_node_has_one_rate_for_all_its_pods() {
    let options = EventOptions {
        qps: 2.0,
        burst: 10,
        ..Default::default()
    };
    let (mut sink, _rx) = new_sink(1000, options);
    let t0 = Instant::now();
    let offered = (0..50)
        .filter(|i| sink.offer(event(&format!("pod-{i}"), "app"), t0))
        .count();
    assert_eq!(offered, 10, "the node's burst");
    let later = (50..60)
        .filter(|i| {
            sink.offer(
                event(&format!("pod-{i}"), "app"),
                t0 + Duration::from_secs(2),
            )
        })
        .count();
    assert_eq!(later, 4, "2 per second refilled");
    assert_eq!(counted(&sink, "rate_limited"), 46);
}

#[test]
fn namespaces_are_included_and_excluded() {
    let options = EventOptions {
        namespaces: vec!["shop".into(), "kube-system".into()],
        exclude_namespaces: vec!["kube-system".into()],
        ..Default::default()
    };
    assert!(options.wants("shop"));
    assert!(!options.wants("kube-system"), "excluded wins");
    assert!(!options.wants("other"), "not included");
    assert!(EventOptions::default().wants("anything"));
    let (mut sink, _rx) = new_sink(10, options);
    let mut other = event("a", "app");
    other.pod.namespace = "other".into();
    assert!(!sink.offer(other, Instant::now()));
    assert!(sink.offer(event("a", "app"), Instant::now()));
}

#[test]
fn containers_stay_apart_and_notes_carry_no_secrets_nor_host_pids() {
    let (api, reference) = to_api(&event("a", "app"));
    let (_, other) = to_api(&event("a", "sidecar"));
    assert_eq!(
        reference.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    assert_ne!(reference, other);
    assert_eq!(api.reason, "StopSignalIgnored");
    assert!(matches!(api.type_, EventType::Warning));
    let note = api.note.unwrap_or_default();
    assert!(!note.contains("s3cr3t") && note.contains("PID 1"), "{note}");
    assert!(
        note.contains("sleep never received it") && !note.contains("4242"),
        "{note}"
    );
    assert_eq!(
        without_host_pids("a (pid x) b (pid 12"),
        "a (pid x) b (pid 12"
    );
    let mut long = event("a", "app");
    long.note = "é".repeat(2000);
    assert!(to_api(&long).0.note.unwrap_or_default().len() <= NOTE_MAX);
}

#[test]
fn a_workload_event_names_the_pod_and_regards_the_workload() {
    let deployment = Owner {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        uid: "d-1".into(),
    };
    let (api, reference) = to_workload(&event("a", "app"), &deployment);
    assert_eq!(reference.kind.as_deref(), Some("Deployment"));
    assert_eq!(reference.uid.as_deref(), Some("d-1"));
    assert_eq!(reference.namespace.as_deref(), Some("shop"));
    let note = api.note.unwrap_or_default();
    assert!(
        note.starts_with("Pod web-1 (container app): PID 1"),
        "{note}"
    );
    assert!(!note.contains("s3cr3t"), "{note}");
    assert_eq!(api.secondary.and_then(|s| s.name).as_deref(), Some("web-1"));
}
