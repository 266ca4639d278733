//! When a demo container counts as ready: each of its programs running.
use super::runs_all;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn ready_means_every_program_once() {
    assert!(runs_all(&names(&["sleep", "sh"]), &["sh", "sleep"]));
    assert!(runs_all(&names(&["sh", "sleep", "cat"]), &["sh", "sleep"]));
    assert!(!runs_all(&names(&["sh", "sh"]), &["sh", "sleep"]));
    assert!(!runs_all(&names(&["sh", "sleep"]), &["sh", "sh", "sleep"]));
}
