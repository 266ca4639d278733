//! Decoding the kernel's records into events.
use super::*;

fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain #[repr(C)] value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[test]
fn decodes_a_signal_record() {
    let mut comm_sh = [0u8; 16];
    comm_sh[..2].copy_from_slice(b"sh");
    let mut comm_runc = [0u8; 16];
    comm_runc[..4].copy_from_slice(b"runc");
    let r = SignalRecord {
        header: Header {
            kind: Kind::Signal as u32,
            lost: 0,
            ts_ns: 42,
        },
        signo: 15,
        code: 0,
        result: 1,
        group: 1,
        target_pid: 1234,
        sender_tgid: 99,
        sender_tid: 100,
        disposition: DISPOSITION_HANDLER | DISPOSITION_BLOCKED,
        target_cgroup: 7,
        sender_cgroup: 1,
        target_comm: comm_sh,
        sender_comm: comm_runc,
        established: 37,
    };
    let Event::Signal(e) = decode(&bytes(&r)).expect("a signal record decodes") else {
        panic!("not a signal")
    };
    assert_eq!(e.established, Some(37));
    assert_eq!(e.signal, Signal::TERM);
    assert_eq!(e.result, SignalResult::Ignored);
    assert_eq!(
        e.at_generation,
        AtGeneration {
            handler: Some(Handler::Function),
            blocked: true
        }
    );
    assert_eq!(
        (e.target_pid, e.target_comm.as_str(), e.target_cgroup),
        (1234, "sh", 7)
    );
    assert_eq!(
        (e.sender_pid, e.sender_tid, e.sender_comm.as_str()),
        (99, 100, "runc")
    );
    assert!(matches!(
        decode(&bytes(&r)[..20]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn losses_are_placed_by_the_node_count() {
    let at = |lost| Header {
        kind: Kind::Exec as u32,
        lost,
        ts_ns: 0,
    };
    let mut p = LossPlacer::default();
    assert_eq!(p.newly_lost(&bytes(&at(0))), 0);
    assert_eq!(p.newly_lost(&bytes(&at(3))), 3);
    assert_eq!(
        p.newly_lost(&bytes(&at(2))),
        0,
        "an older record, read late"
    );
    assert_eq!(p.newly_lost(&bytes(&at(5))), 2);
    assert_eq!(p.newly_lost(&[1, 2]), 0);
}

#[test]
fn rejects_garbage() {
    assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
    let h = Header {
        kind: 77,
        lost: 0,
        ts_ns: 0,
    };
    assert_eq!(decode(&bytes(&h)), Err(DecodeError::UnknownKind(77)));
}

#[test]
fn exit_status_decoding() {
    assert_eq!(
        ExitStatus::from_raw(3 << 8),
        ExitStatus {
            code: Some(3),
            signal: None
        }
    );
    assert_eq!(
        ExitStatus::from_raw(9),
        ExitStatus {
            code: None,
            signal: Some(9)
        }
    );
    // Core dump bit set: still the signal.
    assert_eq!(
        ExitStatus::from_raw(0x80 | 11),
        ExitStatus {
            code: None,
            signal: Some(11)
        }
    );
}
