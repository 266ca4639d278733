//! The metrics as Prometheus reads them: series kept and dropped, counters at 0, health.
use super::*;
use crate::{
    enrich::ContainerInfo,
    tracker::{Init, Termination},
};

fn who(pod: &str) -> ContainerLabels {
    ContainerLabels {
        namespace: "ns".into(),
        pod: pod.into(),
        container: "c".into(),
    }
}

fn killed(workload: &str) -> TerminationRecord {
    TerminationRecord {
        termination: Termination {
            cgroup: 1,
            stop: None,
            init: Init {
                pid: 1,
                comm: "sh".into(),
                shell: true,
                handles_stop_signal: Some(false),
            },
            received: Vec::new(),
            received_more: 0,
            never_received: Vec::new(),
            never_received_more: 0,
            kill: None,
            outcome: Outcome::KilledAfterGrace,
            exit: None,
            started: 0,
            ended: 30_000_000_000,
            verdict: Verdict::SwallowedByShellPid1,
            explanation: String::new(),
            pre_stop: None,
            stuck: Vec::new(),
            oom: Vec::new(),
            connections: None,
        },
        cgroup: None,
        identity: None,
        info: Some(ContainerInfo {
            workload: Some(workload.into()),
            grace_period_seconds: Some(30.0),
            ..Default::default()
        }),
        cause: None,
    }
}

/// The value of the one sample line that starts with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn series_of_a_gone_container_are_dropped_after_the_ttl() {
    let mut m = Metrics::new(Duration::from_secs(60), Duration::from_secs(3600));
    let who = who("p");
    m.container_signal(&who, "SIGTERM", "ignored");
    m.audit(&[(who.clone(), Some("Deployment/web".into()), true)]);
    let text = m.encode();
    assert!(
        text.contains(r#"graceful_pid1_ignores_stop_signal{namespace="ns",workload_type="deployment",workload="web",pod="p",container="c"} 1"#),
        "{text}"
    );
    m.gone(&who);
    m.prune(Instant::now());
    assert!(m
        .encode()
        .contains("graceful_container_signals_total{namespace=\"ns\",pod=\"p\""));
    m.prune(Instant::now() + Duration::from_secs(61));
    assert!(!m.encode().contains("pod=\"p\""), "{}", m.encode());
}

#[test]
fn node_counters_exist_at_zero_and_workload_series_outlive_their_pods() {
    let mut m = Metrics::new(Duration::from_secs(60), Duration::from_secs(3 * 3600));
    let node = r#"graceful_node_terminations_total{outcome="killed_after_grace",verdict="swallowed_by_shell_pid1"}"#;
    let text = m.encode();
    assert_eq!(value(&text, node), Some(0.0), "{text}");
    assert_eq!(
        text.matches("graceful_node_terminations_total{").count(),
        Outcome::ALL.len() * Verdict::ALL.len()
    );
    // A running container's grace histogram exists before its stop.
    m.audit(&[(who("web-1"), Some("Deployment/web".into()), true)]);
    let count = r#"graceful_grace_period_used_ratio_count{namespace="ns",container="c"}"#;
    assert_eq!(value(&m.encode(), count), Some(0.0));
    for pod in ["web-1", "web-2", "web-3"] {
        m.termination(&who(pod), &killed("Deployment/web"), Some(30.0));
    }
    let text = m.encode();
    assert_eq!(value(&text, node), Some(3.0), "{text}");
    let workload = r#"graceful_workload_terminations_total{namespace="ns",workload_type="deployment",workload="web",outcome="killed_after_grace",verdict="swallowed_by_shell_pid1",cause="unknown"}"#;
    assert_eq!(value(&text, workload), Some(3.0), "{text}");
    assert_eq!(value(&text, count), Some(3.0), "{text}");
    // The pods' series go after the container TTL; the workload's stay for hours.
    for pod in ["web-1", "web-2", "web-3"] {
        m.gone(&who(pod));
    }
    m.prune(Instant::now() + Duration::from_secs(2 * 3600));
    let text = m.encode();
    assert!(!text.contains("pod=\"web-1\""), "{text}");
    assert_eq!(value(&text, workload), Some(3.0), "{text}");
    assert_eq!(value(&text, node), Some(3.0), "{text}");
    m.prune(Instant::now() + Duration::from_secs(3 * 3600 + 1));
    assert_eq!(value(&m.encode(), workload), None);
}

#[test]
fn the_grace_ratio_is_against_the_grace_the_app_had() {
    let mut m = Metrics::new(Duration::from_secs(60), Duration::from_secs(60));
    // A preStop hook took 20 of 30 s; the app was killed at the end of its 10.
    let mut r = killed("StatefulSet/db");
    r.termination.ended = 10_000_000_000;
    m.termination(&who("db-0"), &r, Some(10.0));
    let text = m.encode();
    let under_90 =
        r#"graceful_grace_period_used_ratio_bucket{le="0.9",namespace="ns",container="c"}"#;
    let all = r#"graceful_grace_period_used_ratio_count{namespace="ns",container="c"}"#;
    assert_eq!(value(&text, under_90), Some(0.0), "{text}");
    assert_eq!(value(&text, all), Some(1.0), "{text}");
}

#[test]
fn its_own_health_is_exported() {
    let m = Metrics::new(Duration::from_secs(60), Duration::from_secs(60));
    m.health
        .probes(&["signal_generate", "mark_victim"], &["mark_victim"]);
    m.health.cri_up.set(1);
    m.health.process();
    let text = m.encode();
    for line in [
        r#"graceful_probe_attached{program="signal_generate"} 1"#,
        r#"graceful_probe_attached{program="mark_victim"} 0"#,
        "graceful_cri_up 1",
        "graceful_api_up 0",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(
        value(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        value(&text, "process_cpu_seconds_total").is_some(),
        "{text}"
    );
}

#[test]
fn pod_and_connection_series_go_a_workload_ttl_after_they_last_counted() {
    let mut m = Metrics::new(Duration::from_secs(60), Duration::from_secs(3600));
    m.pod_termination("ns", Some("StatefulSet/db"), "sidecar_stopped_first");
    m.pod_termination("ns", Some("StatefulSet/db"), "sidecar_stopped_first");
    let mut record = killed("Deployment/web");
    record.termination.connections = Some(crate::tracker::Connections {
        open_at_stop: Some(40),
        open_at_kill: Some(37),
        reset: 2,
        ..Default::default()
    });
    m.termination(&who("web-1"), &record, Some(30.0));
    let text = m.encode();
    let pods = r#"graceful_pod_terminations_total{namespace="ns",workload_type="statefulset",workload="db",verdict="sidecar_stopped_first"}"#;
    let cut = r#"graceful_connections_total{namespace="ns",workload_type="deployment",workload="web",how="cut"}"#;
    let reset = r#"graceful_connections_total{namespace="ns",workload_type="deployment",workload="web",how="reset"}"#;
    assert_eq!(value(&text, pods), Some(2.0), "{text}");
    assert_eq!(value(&text, cut), Some(37.0), "{text}");
    assert_eq!(value(&text, reset), Some(2.0), "{text}");
    m.prune(Instant::now() + Duration::from_secs(1800));
    assert_eq!(value(&m.encode(), pods), Some(2.0), "kept within the TTL");
    m.prune(Instant::now() + Duration::from_secs(2 * 3600));
    let text = m.encode();
    assert_eq!(value(&text, pods), None, "{text}");
    assert_eq!(value(&text, cut), None, "{text}");
}
