//! Hundreds of short-lived pods (Jobs, crash loops) through the real containerd, twice: what
//! the daemon keeps (`graceful_tracked`) and its RSS come back to the same level each time.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use graceful_tests::{
    cri::{Containerd, PodSpec},
    daemon::{http_get, Daemon, TIMEOUT},
};

/// Pods per round, started and removed by a few kubelet-like workers at once.
const PODS: usize = 150;
const WORKERS: usize = 4;

/// `graceful_tracked` by kind, from one scrape.
fn tracked(metrics: &str) -> BTreeMap<String, i64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("graceful_tracked{kind=\""))
        .filter_map(|l| {
            let (kind, value) = l.split_once("\"} ")?;
            Some((kind.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn rss_kib(pid: u32) -> i64 {
    graceful::procfs::ProcStatus::read(pid)
        .map_or(0, |s| i64::try_from(s.rss_kib).unwrap_or(i64::MAX))
}

/// `graceful_audits_total`, from one scrape.
fn audits(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("graceful_audits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The daemon's holdings once it has forgotten every pod of the churn: no runtime answer and
/// no termination left, as few cgroup paths as `quiet` had (a few for slack: the node lives).
/// Without `quiet`, the holdings after the first audit: containers an earlier run left running
/// on the machine have their series from then on.
fn settled(daemon: &Daemon, quiet: Option<&BTreeMap<String, i64>>) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = BTreeMap::new();
    // The audit sets the sizes before it counts itself: a scrape after one that saw it counted
    // shows what it left.
    let mut audited = false;
    while Instant::now() < deadline {
        if let Some((_, m)) = http_get(daemon.addr, "/metrics") {
            last = tracked(&m);
            let back = match quiet {
                None => audited,
                Some(q) => {
                    // Series of gone containers go at the audit that finds them gone plus their
                    // TTL, and the audit slows down on a busy node: wait for them too.
                    last.get("runtime_cache") <= q.get("runtime_cache")
                        && last.get("metric_series") <= q.get("metric_series")
                        && last.get("terminations") == Some(&0)
                        && last.get("cgroup_paths").copied().unwrap_or(i64::MAX)
                            <= q.get("cgroup_paths").copied().unwrap_or(0) + 4
                }
            };
            if back {
                return last;
            }
            audited = audits(&m) > 0;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the daemon did not forget the churned pods: {last:?}, quiet: {quiet:?}");
}

async fn churn(ctd: &Containerd, round: usize) {
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut cri = ctd.client().await;
        let dir = ctd.dir.clone();
        workers.push(tokio::spawn(async move {
            for i in (w..PODS).step_by(WORKERS) {
                let n = round * PODS + i;
                let (name, uid) = (
                    format!("job-{n}"),
                    format!("c4a7f1e2-0000-4000-8000-{n:012x}"),
                );
                let pod = PodSpec {
                    namespace: "churn",
                    name: &name,
                    uid: &uid,
                    grace_seconds: 1,
                    shared_pids: false,
                };
                // A Job's container: it ends on its own, nobody stops it.
                let (sandbox, id) = cri.start_pod(&pod, "job", "true", None, &dir).await;
                cri.wait_exited(&id).await;
                cri.remove_pod(&sandbox).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("a churn worker");
    }
}

/// Pod cgroups another kubelet-like run left behind (in every hierarchy), as a node that has
/// run for a while holds: what the daemon keeps must not depend on them. Removed on drop.
struct Leftovers(Vec<String>);

impl Leftovers {
    fn make(n: usize) -> Leftovers {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                matches!(right.split_whitespace().next()?, "cgroup" | "cgroup2")
                    .then(|| left.split_whitespace().nth(4))?
            })
            .collect();
        let pods: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "/kubepods/besteffort/pod0ff1ce00-0000-4000-8000-{:06}{i:06}",
                    std::process::id()
                )
            })
            .collect();
        for pod in &pods {
            for m in &mounts {
                let _ = std::fs::create_dir_all(format!("{m}{pod}"));
            }
        }
        let cgroups = graceful::cgroup::Cgroup2::discover().unwrap();
        assert!(
            pods.iter().all(|p| cgroups.dir(p).exists()),
            "leftovers in cgroup2"
        );
        Leftovers(pods)
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pod in &self.0 {
            graceful::cgroup::remove_everywhere(pod);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn churned_pods_leave_nothing_behind() {
    let _leftovers = Leftovers::make(300);
    let ctd = Containerd::start().await;
    let daemon = Daemon::start(&ctd.socket, ctd.dir.join("daemon.log"));
    let pid = daemon.child.id();
    let quiet = settled(&daemon, None);
    let mut rounds = Vec::new();
    for round in 0..2 {
        churn(&ctd, round).await;
        let held = settled(&daemon, Some(&quiet));
        rounds.push((held, rss_kib(pid)));
    }
    println!("quiet: {quiet:?}, RSS {} KiB", rss_kib(pid));
    for (i, (held, rss)) in rounds.iter().enumerate() {
        println!(
            "after round {} ({PODS} pods): {held:?}, RSS {rss} KiB",
            i + 1
        );
    }
    let ((first, rss1), (second, rss2)) = (&rounds[0], &rounds[1]);
    for (kind, after_first) in first {
        let after_second = second.get(kind).copied().unwrap_or(0);
        // The node's own processes come and go a little; a leak grows by a pod's worth each.
        assert!(
            after_second <= after_first + 8,
            "{kind} grew from {after_first} to {after_second} over a second churn of {PODS} pods"
        );
    }
    assert!(
        *rss2 <= rss1 + 2048,
        "RSS grew from {rss1} KiB to {rss2} KiB over a second churn of {PODS} pods"
    );
    assert!(daemon.stop().success());
}
