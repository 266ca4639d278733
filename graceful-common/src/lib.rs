//! Records and constants shared by the kernel programs and the daemon.
//!
//! Every record written to the ring buffer starts with a [`Header`]; the kernel side fills the
//! fields, the user side (feature `user`) reads them back with the same layout.
#![no_std]

/// Largest signal number the kernel knows (SIGRTMAX on x86_64 and arm64).
pub const MAX_SIGNAL: usize = 64;
/// Slots per signal in the counter map: one per `signal_generate` result (0..=4), rounded up.
pub const RESULT_SLOTS: usize = 8;
/// Entries of the per-CPU counter map, indexed by `signo * RESULT_SLOTS + result`.
pub const COUNTER_ENTRIES: u32 = ((MAX_SIGNAL + 1) * RESULT_SLOTS) as u32;
/// Containers being stopped (cgroup ids) whose every event goes to userspace.
pub const STOPPING_ENTRIES: u32 = 1 << 13;
/// `STOPS`: the generation (slot 0, moved on by every mark) and the generation at which
/// userspace last found no container being stopped (slot [`SETTLED`]).
pub const STOPS_ENTRIES: u32 = 2;
pub const SETTLED: u32 = 1;
/// cgroups whose first exec was reported (that exec identifies the container).
pub const SEEN_ENTRIES: u32 = 1 << 16;
/// Threads that entered a cgroup from another (a runtime's exec): their exec is reported.
pub const ENTERED_ENTRIES: u32 = 1 << 12;
/// Containers whose preStop exec hook's program userspace told the kernel (cgroup id -> comm).
pub const PRE_STOP_ENTRIES: u32 = 1 << 13;
/// Bytes of the ring buffer (must be a power of two and a multiple of the page size).
pub const RING_BYTES: u32 = 1 << 22;
/// Index in the `LOST` per-CPU array: records that did not fit in the ring buffer.
pub const LOST_RING_FULL: u32 = 0;
/// Index in the `LOST` per-CPU array: records not written because a kernel read failed.
pub const LOST_READ_FAILED: u32 = 1;
pub const LOST_ENTRIES: u32 = 2;

/// `clone_flags` bits the kernel programs look at.
pub const CLONE_THREAD: u64 = 0x0001_0000;
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `ExecRecord::flags`: the exec of a process that entered the container from outside.
pub const EXEC_ENTERED: u32 = 1;
/// `ExecRecord::flags`: the exec'ing process is its pid namespace's init (the container's own
/// first process, never a runtime's exec, which joins the namespace).
pub const EXEC_NAMESPACE_INIT: u32 = 2;

/// `signal_struct.flags` bit the kernel sets on a pid namespace's init (the same from 5.10 on).
pub const SIGNAL_UNKILLABLE: u32 = 0x40;

/// Signals that, sent from inside a running container to its init, begin a stop: SIGTERM,
/// SIGINT, SIGQUIT (`kill 1`, `kill -QUIT 1`, `nginx -s quit`). Not SIGHUP nor SIGUSR1:
/// reloads and log rotations, which a flood of costs nothing more.
pub const INSIDE_STOP_SIGNALS: u64 = (1 << (15 - 1)) | (1 << (2 - 1)) | (1 << (3 - 1));

/// What follows the header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Signal = 1,
    Exit = 2,
    Exec = 3,
    Fork = 4,
    Attach = 5,
    Oom = 6,
    Deliver = 7,
    Conn = 8,
    Refused = 9,
}

impl Kind {
    pub fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Signal,
            2 => Kind::Exit,
            3 => Kind::Exec,
            4 => Kind::Fork,
            5 => Kind::Attach,
            6 => Kind::Oom,
            7 => Kind::Deliver,
            8 => Kind::Conn,
            9 => Kind::Refused,
            _ => return None,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub kind: u32,
    /// Records lost on the whole node (all reasons) before this one: userspace places losses
    /// in time by this count going up between two records.
    pub lost: u32,
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub ts_ns: u64,
}

/// `signal:signal_generate`, for stop-relevant signals only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SignalRecord {
    pub header: Header,
    pub signo: i32,
    pub code: i32,
    pub result: i32,
    pub group: i32,
    /// Target thread id as the kernel reports it (the process for kill(2)).
    pub target_pid: i32,
    pub sender_tgid: u32,
    pub sender_tid: u32,
    /// The target's disposition for the signal when it was generated: `DISPOSITION_*`.
    pub disposition: u32,
    /// 0 when the target was never seen by the task map.
    pub target_cgroup: u64,
    pub sender_cgroup: u64,
    pub target_comm: [u8; 16],
    pub sender_comm: [u8; 16],
    /// TCP connections of the target's cgroup established at this moment, as the kernel
    /// counted them since the daemon started ([`NOT_COUNTED`]: none seen).
    pub established: i64,
}

/// `SignalRecord::established` of a cgroup with no connection counted.
pub const NOT_COUNTED: i64 = -1;

/// Containers whose TCP connections are counted (one entry per cgroup that had one).
pub const ESTABLISHED_ENTRIES: u32 = 1 << 14;

/// `sock:inet_sock_set_state` of a TCP socket of a container being stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnRecord {
    pub header: Header,
    pub oldstate: i32,
    pub newstate: i32,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
    /// The socket's cgroup (the cgroup of the task that created it).
    pub cgroup: u64,
    /// The socket's address: one connection's identity while it lives.
    pub sk: u64,
    /// Its inode (0 once it has no file: not yet accepted, or orphaned by close).
    pub inode: u64,
}

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_FIN_WAIT1: i32 = 4;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_LISTEN: i32 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// Listening ports closed by containers being stopped, per network namespace: a connection
/// attempt that finds no listener there is refused on the container's account.
pub const CLOSED_LISTENER_ENTRIES: u32 = 1 << 12;

/// A listening port in a network namespace (its `ns.inum`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// A connection attempt (a SYN) the kernel answered with a reset because nobody listened on a
/// port a container being stopped had closed (`tcp_v4_send_reset`/`tcp_v6_send_reset` without
/// a socket).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RefusedRecord {
    pub header: Header,
    pub port: u16,
    pub _pad: [u16; 3],
    pub cgroup: u64,
}

/// `sched:sched_process_exit` of the last thread of a process in a non-root cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: Header,
    pub tgid: u32,
    pub tid: u32,
    /// `task_struct.exit_code`: low 7 bits the terminating signal, bits 8..16 the exit status.
    pub exit_code: i32,
    pub _pad: u32,
    pub cgroup: u64,
    pub comm: [u8; 16],
}

/// `sched:sched_process_exec` in a non-root cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: Header,
    pub tgid: u32,
    /// [`EXEC_ENTERED`]: the process entered the container from outside (a runtime's exec, a
    /// preStop hook) and this is its first exec there; [`EXEC_NAMESPACE_INIT`]: it is its pid
    /// namespace's init.
    pub flags: u32,
    pub cgroup: u64,
    pub comm: [u8; 16],
}

/// `task:task_newtask` of a new process (not a thread) in a non-root cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: Header,
    pub parent_tgid: u32,
    pub child_pid: u32,
    pub cgroup: u64,
    pub comm: [u8; 16],
}

/// `cgroup:cgroup_attach_task` on the cgroup2 hierarchy.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttachRecord {
    pub header: Header,
    pub tid: u32,
    pub _pad: u32,
    pub cgroup: u64,
}

/// `signal:signal_deliver` of a stop-relevant signal in a container being stopped: a process
/// dequeued it and the kernel acts on its disposition (a pid-namespace init discards one at
/// its default action: that is how a signal pending while blocked is dropped after all).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DeliverRecord {
    pub header: Header,
    pub tgid: u32,
    pub tid: u32,
    pub signo: i32,
    /// `DISPOSITION_DEFAULT`, `_IGNORE`, `_HANDLER` or `_UNKNOWN`.
    pub handler: u32,
    pub cgroup: u64,
}

/// `oom:mark_victim`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomRecord {
    pub header: Header,
    pub pid: u32,
    pub _pad: u32,
    pub cgroup: u64,
}

/// Handed to the kernel programs as a read-only global before load: tracepoint field offsets
/// read from the format files and `task_struct` offsets read from the kernel's BTF, so nothing
/// is compiled in that only fits one kernel. `signal_generate` is a raw tracepoint: its
/// arguments are the tracepoint's prototype `(sig, info, task, group, result)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Bit n set: signal n goes to the ring buffer; every other signal is only counted.
    pub stop_signals: u64,
    /// cgroup id of the cgroup2 root: exits there are not reported.
    pub root_cgroup: u64,
    /// Hierarchy id of cgroup2 in `cgroup_attach_task.dst_root`.
    pub cgroup2_hierarchy: i32,
    /// `sched_process_exit.group_dead` (6.16 on), or [`NO_FIELD`]: then the programs read
    /// `task_struct.signal->live`, which the exiting thread has already decremented.
    pub exit_group_dead: u32,
    pub newtask_pid: u32,
    pub newtask_flags: u32,
    pub attach_root: u32,
    pub attach_id: u32,
    pub attach_pid: u32,
    /// `cgroup_attach_task.comm`, a `__data_loc` string (0: no such field).
    pub attach_comm: u32,
    pub oom_pid: u32,
    pub task_exit_code: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_signal: u32,
    /// `task_struct.cgroups` -> `css_set.dfl_cgrp` -> `cgroup.kn` -> `kernfs_node.id`: a
    /// task's cgroup2 id, read from the task itself.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `signal_struct.live` (an atomic_t: its counter is at offset 0).
    pub signal_live: u32,
    /// `signal_struct.flags`: [`SIGNAL_UNKILLABLE`] marks a pid namespace's init.
    pub signal_flags: u32,
    /// `task_struct.blocked` and `.real_blocked` (sigset_t: one u64 on 64-bit kernels).
    pub task_blocked: u32,
    pub task_real_blocked: u32,
    /// `task_struct.sighand` -> `sighand_struct.action[sig - 1]` (each `k_sigaction_size`
    /// bytes) -> its `sa.sa_handler` at `k_sigaction_handler`.
    pub task_sighand: u32,
    pub sighand_action: u32,
    pub k_sigaction_size: u32,
    pub k_sigaction_handler: u32,
    /// Bytes of each tracepoint's fixed record (end of its last field).
    pub exit_size: u32,
    pub newtask_size: u32,
    pub attach_size: u32,
    pub oom_size: u32,
    /// `sock:inet_sock_set_state` fields (`conn_size` 0: the tracepoint is missing).
    pub conn_size: u32,
    pub conn_skaddr: u32,
    pub conn_oldstate: u32,
    pub conn_newstate: u32,
    pub conn_sport: u32,
    pub conn_dport: u32,
    pub conn_protocol: u32,
    /// `sock.sk_cgrp_data`, whose first word is the socket's cgroup; `cgrp_data_tagged` 1 when
    /// that word may hold classid data instead (bit 0 set: kernels before 5.15).
    pub sock_cgrp_data: u32,
    pub cgrp_data_tagged: u32,
    /// `sock.sk_socket` -> `socket.file` -> `file.f_inode` -> `inode.i_ino`.
    pub sock_socket: u32,
    pub socket_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    /// A socket's network namespace: `sock.__sk_common.skc_net` (its `net` pointer at 0) ->
    /// `net.ns.inum`.
    pub sock_net: u32,
    pub net_inum: u32,
    /// A received packet's TCP header and namespace: `sk_buff.head` + `.transport_header`,
    /// `sk_buff.dev` -> `net_device.nd_net`.
    pub skb_head: u32,
    pub skb_transport_header: u32,
    pub skb_dev: u32,
    pub netdev_net: u32,
}

/// `SignalRecord.disposition`: the handler (low two bits) and whether the signal was blocked.
pub const DISPOSITION_DEFAULT: u32 = 0;
pub const DISPOSITION_IGNORE: u32 = 1;
pub const DISPOSITION_HANDLER: u32 = 2;
/// The handler could not be read.
pub const DISPOSITION_UNKNOWN: u32 = 3;
pub const DISPOSITION_HANDLER_MASK: u32 = 3;
/// Blocked (`blocked` or, in sigtimedwait, `real_blocked`): it waits, pending, to be taken.
pub const DISPOSITION_BLOCKED: u32 = 4;

/// A tracepoint field the running kernel does not have.
pub const NO_FIELD: u32 = u32::MAX;

/// The programs copy a tracepoint's fixed record into a stack buffer of this size (the
/// verifier forbids ctx loads at offsets that are not in the instruction itself).
pub const RECORD_BUF: usize = 128;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] integers and byte arrays, valid for any bit pattern.
    unsafe impl aya::Pod for super::Config {}
}
