//! Pod records from container records, as a kubelet stops pods with classic and native sidecars.
use super::*;

const S: u64 = 1_000_000_000;

fn pod(containers: &[(&str, Role, bool)]) -> PodOf {
    PodOf {
        uid: "u1".into(),
        namespace: "shop".into(),
        name: "web-0".into(),
        workload: Some("StatefulSet/web".into()),
        containers: containers
            .iter()
            .map(|(name, role, native)| Expected {
                name: name.to_string(),
                role: *role,
                native: *native,
            })
            .collect(),
        grace_ns: Some(30 * S),
    }
}

/// Stopped at `stop` s (None: no stop signal, SIGKILLed at `end`), ended at `end` s.
fn member(
    name: &str,
    role: Role,
    native: bool,
    stop: Option<u64>,
    end: u64,
    verdict: Verdict,
) -> Member {
    Member {
        name: name.into(),
        role,
        native,
        stop_at: stop.map(|s| 100 * S + s * S / 10),
        began: 100 * S + stop.unwrap_or(end) * S / 10,
        ended: 100 * S + end * S / 10,
        killed: stop.is_none(),
        outcome: if stop.is_none() {
            Outcome::Killed
        } else {
            Outcome::Exited
        },
        verdict,
    }
}

const CLASSIC: [(&str, Role, bool); 2] = [
    ("app", Role::App, false),
    ("istio-proxy", Role::Sidecar, false),
];
const NATIVE: [(&str, Role, bool); 2] = [("app", Role::App, false), ("proxy", Role::Sidecar, true)];

#[test]
fn a_classic_sidecar_that_exits_at_once_while_the_app_drains_stopped_first() {
    let mut a = PodAssembler::default();
    // All at once (classic): the proxy exits in 10 ms, the app drains 3 s.
    assert!(a
        .add(
            pod(&CLASSIC),
            member(
                "istio-proxy",
                Role::Sidecar,
                false,
                Some(0),
                0,
                Verdict::Graceful
            ),
            None
        )
        .is_none());
    let p = a
        .add(
            pod(&CLASSIC),
            member("app", Role::App, false, Some(0), 30, Verdict::Graceful),
            None,
        )
        .expect("both records in");
    assert_eq!(p.verdict, PodVerdict::SidecarStoppedFirst);
    assert!(
        p.explanation
            .starts_with("istio-proxy (sidecar) was gone 3.0 s before app finished shutting down"),
        "{}",
        p.explanation
    );
    let json = p.to_json(&WallClock::default());
    assert_eq!(json["kind"], "pod_termination");
    assert_eq!(json["verdict"], "sidecar_stopped_first");
    assert_eq!(json["containers"][0]["name"], "istio-proxy");
    assert_eq!(json["containers"][1]["ended_at"], 3.0);
    assert_eq!(json["containers"][1]["role"], "app");
    assert!(a.is_empty());
    // The proxy gone before the app's own signal was even sent (the same wave): the same.
    let mut proxy = member(
        "istio-proxy",
        Role::Sidecar,
        false,
        Some(0),
        0,
        Verdict::Graceful,
    );
    proxy.ended = proxy.began + S / 1000;
    let mut app = member("app", Role::App, false, Some(0), 30, Verdict::Graceful);
    app.began = proxy.ended + S / 1000;
    a.add(pod(&CLASSIC), proxy, None);
    let p = a.add(pod(&CLASSIC), app, None).unwrap();
    assert_eq!(p.verdict, PodVerdict::SidecarStoppedFirst);
}

#[test]
fn a_native_sidecar_stopped_after_the_app_gives_the_apps_own_verdict() {
    let mut a = PodAssembler::default();
    a.add(
        pod(&NATIVE),
        member("app", Role::App, false, Some(0), 30, Verdict::SlowShutdown),
        None,
    );
    let p = a
        .add(
            pod(&NATIVE),
            member(
                "proxy",
                Role::Sidecar,
                true,
                Some(31),
                31,
                Verdict::Graceful,
            ),
            None,
        )
        .unwrap();
    assert_eq!(p.verdict, PodVerdict::Container(Verdict::SlowShutdown));
    assert_eq!(
        p.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["app", "proxy"],
        "in the order they were stopped"
    );
}

#[test]
fn a_native_sidecar_never_signalled_until_the_grace_ran_out_is_not_stopped() {
    let mut a = PodAssembler::default();
    a.add(
        pod(&NATIVE),
        member("app", Role::App, false, Some(0), 10, Verdict::Graceful),
        None,
    );
    let p = a
        .add(
            pod(&NATIVE),
            member(
                "proxy",
                Role::Sidecar,
                true,
                None,
                300,
                Verdict::KilledWithoutStopSignal,
            ),
            None,
        )
        .unwrap();
    assert_eq!(
        p.verdict,
        PodVerdict::SidecarNotStopped,
        "{}",
        p.explanation
    );
    assert!(p.explanation.contains("proxy got no stop signal"));
}

#[test]
fn a_pod_of_one_container_agrees_with_its_record() {
    let mut a = PodAssembler::default();
    let p = a
        .add(
            pod(&[("app", Role::App, false)]),
            member(
                "app",
                Role::App,
                false,
                Some(0),
                20,
                Verdict::SwallowedByShellPid1,
            ),
            None,
        )
        .unwrap();
    assert_eq!(
        p.verdict,
        PodVerdict::Container(Verdict::SwallowedByShellPid1)
    );
    assert_eq!(
        p.to_json(&WallClock::default())["containers"][0]["verdict"],
        "swallowed_by_shell_pid1"
    );
}

#[test]
fn a_record_that_never_comes_leaves_the_pod_record_to_its_deadline() {
    let mut a = PodAssembler::default();
    a.add(
        pod(&CLASSIC),
        member("app", Role::App, false, Some(0), 5, Verdict::Graceful),
        None,
    );
    assert!(a.expire(100 * S + 30 * S).is_empty(), "within the grace");
    let p = a
        .expire(100 * S + 30 * S + LATE_NS)
        .pop()
        .expect("at its deadline");
    assert_eq!(p.missing, ["istio-proxy"]);
    assert_eq!(p.verdict, PodVerdict::Container(Verdict::Graceful));
}

#[test]
fn sidecar_names_from_the_annotation_or_the_default() {
    assert_eq!(sidecar_names(None), ["istio-proxy", "linkerd-proxy"]);
    assert_eq!(
        sidecar_names(Some(" envoy, ,vault-agent")),
        ["envoy", "vault-agent"]
    );
}

#[test]
fn the_worst_container_verdict_is_the_pods() {
    let mut a = PodAssembler::default();
    let three = [
        ("a", Role::App, false),
        ("b", Role::App, false),
        ("c", Role::App, false),
    ];
    a.add(
        pod(&three),
        member("a", Role::App, false, Some(0), 1, Verdict::Graceful),
        None,
    );
    a.add(
        pod(&three),
        member(
            "b",
            Role::App,
            false,
            Some(0),
            300,
            Verdict::SwallowedByShellPid1,
        ),
        None,
    );
    let p = a
        .add(
            pod(&three),
            member("c", Role::App, false, Some(0), 300, Verdict::NotForwarded),
            None,
        )
        .unwrap();
    assert_eq!(
        p.verdict,
        PodVerdict::Container(Verdict::SwallowedByShellPid1)
    );
    assert!(p.explanation.contains("b (swallowed_by_shell_pid1)"));
}
