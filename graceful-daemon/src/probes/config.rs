//! The running kernel's offsets and features, read from tracefs and BTF for the programs.
use graceful_common::{Config, NO_FIELD};

use super::{btf, tracefs, ProbeError, ProbeOptions};
use crate::cgroup::Cgroup2;

/// Offsets from the running kernel, handed to the programs.
pub(super) fn config(options: &ProbeOptions, cgroup: &Cgroup2) -> Result<Config, ProbeError> {
    let tracefs = tracefs::locate()?;
    let fmt = |c: &str, n: &str| tracefs::Format::read(&tracefs, c, n);
    let (exit, newtask) = (
        fmt("sched", "sched_process_exit")?,
        fmt("task", "task_newtask")?,
    );
    // Optional: a missing tracepoint or field leaves the offsets at zero and the program
    // unattached (see `OPTIONAL`).
    let attach = fmt("cgroup", "cgroup_attach_task").ok();
    let oom = fmt("oom", "mark_victim").ok();
    let conn = fmt("sock", "inet_sock_set_state").ok();
    let field = |f: &Option<tracefs::Format>, name: &str| {
        f.as_ref().and_then(|f| f.offset(name).ok()).unwrap_or(0)
    };
    let size = |f: &Option<tracefs::Format>| f.as_ref().and_then(|f| f.size().ok()).unwrap_or(0);
    fmt("sched", "sched_process_exec")?;
    fmt("signal", "signal_generate")?;
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").map_err(|_| ProbeError::NoBtf)?;
    // Optional too: zero leaves `tcp_send_reset` unattached.
    let offset = |path: &[(&str, &str)]| -> u32 {
        path.iter()
            .map(|(t, m)| btf::member_offset(&btf, t, m).ok())
            .sum::<Option<u32>>()
            .unwrap_or(0)
    };
    let stop_signals = options
        .stop_signals
        .iter()
        .fold(0u64, |mask, s| mask | 1u64 << (s.0 as u64 - 1));
    Ok(Config {
        stop_signals,
        root_cgroup: cgroup.root_id(),
        cgroup2_hierarchy: cgroup.hierarchy_id(),
        exit_group_dead: exit.offset("group_dead").unwrap_or(NO_FIELD),
        newtask_pid: newtask.offset("pid")?,
        newtask_flags: newtask.offset("clone_flags")?,
        attach_root: field(&attach, "dst_root"),
        attach_id: field(&attach, "dst_id"),
        attach_pid: field(&attach, "pid"),
        attach_comm: field(&attach, "comm"),
        oom_pid: field(&oom, "pid"),
        task_exit_code: btf::member_offset(&btf, "task_struct", "exit_code")?,
        task_tgid: btf::member_offset(&btf, "task_struct", "tgid")?,
        task_comm: btf::member_offset(&btf, "task_struct", "comm")?,
        task_signal: btf::member_offset(&btf, "task_struct", "signal")?,
        task_cgroups: btf::member_offset(&btf, "task_struct", "cgroups")?,
        css_set_dfl_cgrp: btf::member_offset(&btf, "css_set", "dfl_cgrp")?,
        cgroup_kn: btf::member_offset(&btf, "cgroup", "kn")?,
        kernfs_node_id: btf::member_offset(&btf, "kernfs_node", "id")?,
        signal_live: btf::member_offset(&btf, "signal_struct", "live")?,
        signal_flags: btf::member_offset(&btf, "signal_struct", "flags")?,
        task_blocked: btf::member_offset(&btf, "task_struct", "blocked")?,
        task_real_blocked: btf::member_offset(&btf, "task_struct", "real_blocked")?,
        task_sighand: btf::member_offset(&btf, "task_struct", "sighand")?,
        sighand_action: btf::member_offset(&btf, "sighand_struct", "action")?,
        k_sigaction_size: btf::struct_size(&btf, "k_sigaction")?,
        k_sigaction_handler: btf::member_offset(&btf, "k_sigaction", "sa")?
            + btf::member_offset(&btf, "sigaction", "sa_handler")?,
        exit_size: exit.size()?,
        newtask_size: newtask.size()?,
        attach_size: size(&attach),
        oom_size: size(&oom),
        conn_size: size(&conn),
        conn_skaddr: field(&conn, "skaddr"),
        conn_oldstate: field(&conn, "oldstate"),
        conn_newstate: field(&conn, "newstate"),
        conn_sport: field(&conn, "sport"),
        conn_dport: field(&conn, "dport"),
        conn_protocol: field(&conn, "protocol"),
        sock_cgrp_data: btf::member_offset(&btf, "sock", "sk_cgrp_data")?,
        // Since 5.15 `sock_cgroup_data` holds a `cgroup` pointer; before, a tagged word.
        cgrp_data_tagged: u32::from(
            btf::member_offset(&btf, "sock_cgroup_data", "cgroup").is_err(),
        ),
        sock_socket: btf::member_offset(&btf, "sock", "sk_socket")?,
        socket_file: btf::member_offset(&btf, "socket", "file")?,
        file_inode: btf::member_offset(&btf, "file", "f_inode")?,
        inode_ino: btf::member_offset(&btf, "inode", "i_ino")?,
        sock_net: offset(&[("sock", "__sk_common"), ("sock_common", "skc_net")]),
        net_inum: offset(&[("net", "ns"), ("ns_common", "inum")]),
        skb_head: offset(&[("sk_buff", "head")]),
        skb_transport_header: offset(&[("sk_buff", "transport_header")]),
        skb_dev: offset(&[("sk_buff", "dev")]),
        netdev_net: offset(&[("net_device", "nd_net")]),
    })
}

/// The kernel traces the resets it sends without a socket (`tcp:tcp_send_reset` has its
/// `reason` field: both came in 6.10).
pub(super) fn socketless_resets_traced() -> bool {
    tracefs::locate()
        .and_then(|t| tracefs::Format::read(&t, "tcp", "tcp_send_reset"))
        .is_ok_and(|f| f.offset("reason").is_ok())
}
