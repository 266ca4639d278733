//! What a clean stop's exit code means, said in the explanation.
use super::*;

#[test]
fn a_clean_exit_with_a_nonzero_code_says_the_code() {
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(11, None, Some(15))
        .exit(10, Some(3), None);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Graceful);
    assert!(r.explanation.contains("(exit code 3)"), "{}", r.explanation);
    // 143: the app's own way of saying it ended on SIGTERM, within the grace.
    let mut s = shell_with_child();
    s.signal(Signal::TERM, RUNC, HOST, 10, SignalResult::Delivered)
        .exit(11, None, Some(15))
        .exit(10, Some(143), None);
    let r = s.one();
    assert_eq!(r.verdict, Verdict::Graceful);
    assert!(
        r.explanation
            .contains("(exit code 143: 128 + 15, it ended on SIGTERM, a clean stop, not an error)"),
        "{}",
        r.explanation
    );
}
