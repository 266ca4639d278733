//! Every parser of outside input, fed arbitrary input: an answer or an error, never a panic.
//! Ring-buffer records, tracepoint formats, BTF, cgroup paths, /proc files and the runtime's
//! labels come from the kernel, the node or a container runtime that may be broken or hostile.
use std::collections::HashMap;

use graceful::{
    cgroup::{cgroup2_mount, unified_path},
    enrich::ContainerInfo,
    events::{decode, LossPlacer},
    identity,
    probes::{btf::member_offset, tracefs::Format},
    procfs::{parse_start_time, ProcStatus},
};
use proptest::prelude::*;

/// Bytes that start like a real record (a known kind), so decoding goes past the header.
fn record() -> impl Strategy<Value = Vec<u8>> {
    (
        0u32..9,
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(|(kind, lost, rest)| {
            let mut b = kind.to_ne_bytes().to_vec();
            b.extend(lost.to_ne_bytes());
            b.extend(rest);
            b
        })
}

/// Text made of the pieces a parser looks for, in random order and with random values.
fn texty(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(pieces).prop_map(str::to_string),
            "[ -~\t\n]{0,12}",
            any::<String>(),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn ring_buffer_records(bytes in prop_oneof![record(), prop::collection::vec(any::<u8>(), 0..64)]) {
        let _ = decode(&bytes);
        let mut placer = LossPlacer::default();
        let _ = placer.newly_lost(&bytes);
    }

    #[test]
    fn tracepoint_formats(text in texty(&[
        "name: signal_generate\n", "format:\n", "\tfield:", "int sig;", "offset:", "size:",
        "signed:", ";\t", "8", "-1", "4294967296", "char comm[16];", "\n",
    ])) {
        let f = Format::parse("signal:signal_generate", &text);
        let _ = f.size();
        let _ = f.offset("sig");
        let _ = f.offset("comm");
    }

    #[test]
    fn btf(mut bytes in prop::collection::vec(any::<u8>(), 0..600), hdr in any::<bool>()) {
        if hdr && bytes.len() >= 24 {
            // BTF's magic, version 1 and a 24-byte header: past the first checks.
            bytes[..4].copy_from_slice(&[0x9f, 0xeb, 1, 0]);
            bytes[4..8].copy_from_slice(&24u32.to_le_bytes());
        }
        let _ = member_offset(&bytes, "task_struct", "exit_code");
    }

    #[test]
    fn cgroup_paths(path in texty(&[
        "/", "kubepods", "kubepods.slice", "-besteffort", "pod", "_", ".slice", ".scope",
        "cri-containerd-", "crio-", "docker-", "libpod-", "system.slice", "0123456789abcdef",
        "8dbd0d3c-4b1e-4c39", "..", "//",
    ])) {
        if let Some(id) = identity::parse(&path) {
            prop_assert!(!id.id.is_empty());
            let _ = id.short_id();
        }
        let _ = unified_path(&path);
        let _ = unified_path(&format!("0::{path}\n"));
        let _ = cgroup2_mount(&path);
    }

    #[test]
    fn proc_files(text in texty(&[
        "Name:\t", "PPid:\t", "NSpid:\t", "SigBlk:\t", "SigIgn:\t", "SigCgt:\t", "\n",
        "ffffffffffffffff", "1", "-1", "99999999999999999999", ")", "(", " R ",
    ])) {
        let s = ProcStatus::parse(&text);
        let _ = (s.parent(), s.is_namespace_init());
        for sig in 0..70 {
            let sig = graceful::signals::Signal(sig);
            let _ = (s.handles(sig), s.ignores(sig), s.drops(sig));
        }
        let _ = parse_start_time(&text);
    }

    #[test]
    fn runtime_labels_and_annotations(
        entries in prop::collection::vec((prop::sample::select(&[
            "io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.pod.uid",
            "io.kubernetes.container.name", "io.kubernetes.pod.terminationGracePeriod",
            "io.kubernetes.container.preStopHandler", "other",
        ][..]), prop_oneof![any::<String>(), Just("NaN".to_string()), Just("-1".to_string()),
            Just("inf".to_string()), Just("1e309".to_string()), Just("30".to_string())]), 0..10),
        name in any::<String>(),
        image in any::<String>(),
    ) {
        let map: HashMap<String, String> =
            entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let info = ContainerInfo::from_kubelet(&map, &map, &name, &image);
        if let Some(g) = info.grace_period_seconds {
            prop_assert!(g.is_finite() && g >= 0.0, "grace {g}");
        }
    }
}
