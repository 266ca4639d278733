//! Kernel programs of graceful: tracepoints -> ring buffer + per-CPU counters.
//!
//! Field offsets are not compiled in: the daemon reads them from the tracepoint format files
//! (and `task_struct.exit_code` from the kernel's BTF) and hands them over in `CONFIG`.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, generated as gen,
    },
    macros::{fentry, map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use graceful_common::{
    AttachRecord, Config, ConnRecord, DeliverRecord, ExecRecord, ExitRecord, ForkRecord, Header,
    Kind, ListenerKey, OomRecord, RefusedRecord, SignalRecord, CLONE_INTO_CGROUP, CLONE_THREAD,
    CLOSED_LISTENER_ENTRIES, COUNTER_ENTRIES, DISPOSITION_BLOCKED, DISPOSITION_DEFAULT,
    DISPOSITION_HANDLER, DISPOSITION_IGNORE, DISPOSITION_UNKNOWN, ENTERED_ENTRIES,
    ESTABLISHED_ENTRIES, EXEC_ENTERED, EXEC_NAMESPACE_INIT, INSIDE_STOP_SIGNALS, IPPROTO_TCP,
    LOST_ENTRIES, LOST_READ_FAILED, LOST_RING_FULL, MAX_SIGNAL, NOT_COUNTED, NO_FIELD,
    PRE_STOP_ENTRIES, RECORD_BUF, RESULT_SLOTS, RING_BYTES, SEEN_ENTRIES, SETTLED,
    SIGNAL_UNKILLABLE, STOPPING_ENTRIES, STOPS_ENTRIES, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN,
};

#[no_mangle]
static CONFIG: Config = Config {
    stop_signals: 0,
    root_cgroup: 0,
    cgroup2_hierarchy: 0,
    exit_group_dead: 0,
    newtask_pid: 0,
    newtask_flags: 0,
    attach_root: 0,
    attach_id: 0,
    attach_pid: 0,
    attach_comm: 0,
    oom_pid: 0,
    task_exit_code: 0,
    task_tgid: 0,
    task_comm: 0,
    task_signal: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    signal_live: 0,
    signal_flags: 0,
    task_blocked: 0,
    task_real_blocked: 0,
    task_sighand: 0,
    sighand_action: 0,
    k_sigaction_size: 0,
    k_sigaction_handler: 0,
    exit_size: 0,
    newtask_size: 0,
    attach_size: 0,
    oom_size: 0,
    conn_size: 0,
    conn_skaddr: 0,
    conn_oldstate: 0,
    conn_newstate: 0,
    conn_sport: 0,
    conn_dport: 0,
    conn_protocol: 0,
    sock_cgrp_data: 0,
    cgrp_data_tagged: 0,
    sock_socket: 0,
    socket_file: 0,
    file_inode: 0,
    inode_ino: 0,
    sock_net: 0,
    net_inum: 0,
    skb_head: 0,
    skb_transport_header: 0,
    skb_dev: 0,
    netdev_net: 0,
};

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Every signal by (signo, result), stop-relevant or not: cheap enough for SIGURG storms.
#[map]
static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);

/// Records lost, by reason (ring buffer full, kernel read failed), per CPU: exact counts.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_ENTRIES, 0);

/// One count for all CPUs that goes up at every loss, carried by every record: the next record
/// from any CPU tells userspace that records were lost just before it. Incremented without an
/// atomic (the BPF target has none before 5.12): concurrent losses may count once, and the
/// count only ever needs to go up.
#[map]
static LOSS_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// Containers being stopped: a stop-relevant signal from outside (or the kernel's own SIGKILL)
/// reached them. Only these send their forks, execs, exits and inner signals to userspace;
/// a running container costs a map lookup per event.
#[map]
static STOPPING: LruHashMap<u64, u8> = LruHashMap::with_max_entries(STOPPING_ENTRIES, 0);

/// Goes up whenever a container is newly marked in `STOPPING`: what a CPU found not stopping
/// under an older value may have become so.
#[map]
static STOPS: Array<u64> = Array::with_max_entries(STOPS_ENTRIES, 0);

/// Per CPU, the last cgroup found not stopping and the `STOPS` value then: a running
/// container's events (a signal flood, a fork storm) check two array slots, not the hash map.
#[map]
static RUNNING: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per cgroup, its TCP connections now established (counted from every socket state change
/// since the daemon started: one atomic add per connect, accept and close).
#[map]
static ESTABLISHED: LruHashMap<u64, i64> = LruHashMap::with_max_entries(ESTABLISHED_ENTRIES, 0);

/// Listening ports that containers being stopped closed (-> the container's cgroup): attempts
/// on them afterwards are refused on its account.
#[map]
static CLOSED_LISTENERS: LruHashMap<ListenerKey, u64> =
    LruHashMap::with_max_entries(CLOSED_LISTENER_ENTRIES, 0);

/// cgroups whose first exec went to userspace: it identifies the container.
#[map]
static SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(SEEN_ENTRIES, 0);

/// Threads that entered a container's cgroup from another cgroup (runc exec, kubectl exec, a
/// preStop hook) and have not exec'd since.
#[map]
static ENTERED: LruHashMap<u32, u8> = LruHashMap::with_max_entries(ENTERED_ENTRIES, 0);

/// Processes exec'd into a running container from outside (a preStop exec hook, a probe):
/// their exit is reported too, so the hook's end and exit code are known.
#[map]
static VISITORS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(ENTERED_ENTRIES, 0);

/// Containers' preStop exec hook programs (their `comm`, NUL-padded), written by userspace from
/// the runtime's and the API's word. The hook's exec marks its container stopping, so that the
/// signals it sends inside (`kill -QUIT 1`, `nginx -s quit`) are reported.
#[map]
static PRE_STOP: LruHashMap<u64, [u8; 16]> = LruHashMap::with_max_entries(PRE_STOP_ENTRIES, 0);

macro_rules! config {
    ($field:ident) => {{
        // SAFETY: CONFIG is a frozen read-only global written by the loader.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(CONFIG.$field)) };
        value
    }};
}

mod connection;
mod process;
mod signal;

/// A tracepoint's fixed record, copied to the stack with one helper call.
struct TracepointFields([u8; RECORD_BUF]);

impl TracepointFields {
    #[inline(always)]
    fn read(ctx: &TracePointContext, size: u32) -> Option<TracepointFields> {
        if size as usize > RECORD_BUF {
            return None;
        }
        let mut buf = core::mem::MaybeUninit::<[u8; RECORD_BUF]>::uninit();
        // SAFETY: `size` bytes fit the buffer; the source is the tracepoint's own record.
        let rc = unsafe {
            gen::bpf_probe_read_kernel(buf.as_mut_ptr().cast(), size, ctx.as_ptr().cast_const())
        };
        // SAFETY: the helper filled `size` bytes; fields are read only below that size.
        (rc == 0).then(|| TracepointFields(unsafe { buf.assume_init() }))
    }

    /// A field at an offset from the format file; zero when outside the buffer.
    #[inline(always)]
    fn get<T: Copy + Default>(&self, offset: u32) -> T {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > RECORD_BUF {
            return T::default();
        }
        // SAFETY: bounds checked above; T is a plain integer or byte array.
        unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(offset).cast::<T>()) }
    }
}

/// The node's loss epoch (see `LOSS_EPOCH`).
#[inline(always)]
fn lost_so_far() -> u32 {
    LOSS_EPOCH.get(0).copied().unwrap_or(0)
}

/// Counts a record that could not be written; returns this CPU's count for `reason`.
#[inline(always)]
fn count_lost(reason: u32) -> u64 {
    if let Some(epoch) = LOSS_EPOCH.get_ptr_mut(0) {
        // SAFETY: a map value, valid for the program's run (see LOSS_EPOCH on races).
        unsafe { *epoch = (*epoch).wrapping_add(1) };
    }
    match LOST.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, no concurrent writer.
        Some(lost) => unsafe {
            *lost += 1;
            *lost
        },
        None => 0,
    }
}

#[inline(always)]
fn header(kind: Kind) -> Header {
    Header {
        kind: kind as u32,
        lost: lost_so_far(),
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

#[inline(always)]
fn current_cgroup() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_cgroup_id() }
}

#[inline(always)]
fn current_comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or([0; 16])
}

#[inline(always)]
fn output<C: EbpfContext, T: 'static>(ctx: &C, record: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(0);
        }
        None => {
            let n = count_lost(LOST_RING_FULL);
            if n.is_power_of_two() {
                warn!(ctx, "ring buffer full: {} records lost", n);
            }
        }
    }
}

/// `SEND_SIG_NOINFO` and `SEND_SIG_PRIV`: `info` values that are not pointers.
const SEND_SIG_PRIV: u64 = 1;
/// `si_code` in siginfo: the third int on every architecture but MIPS.
const SI_CODE_OFFSET: usize = 8;
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;

#[inline(always)]
unsafe fn read_kernel<T: Default>(base: u64, offset: u32) -> T {
    bpf_probe_read_kernel((base as *const u8).add(offset as usize).cast::<T>()).unwrap_or_default()
}

/// The task is its pid namespace's init (`SIGNAL_UNKILLABLE`, the same bit from 5.10 on).
#[inline(always)]
fn namespace_init(task: u64) -> bool {
    // SAFETY: `task` is a live task_struct; the pointer is checked before it is followed and
    // the offsets are the running kernel's (BTF).
    unsafe {
        let signal: u64 = read_kernel(task, config!(task_signal));
        signal != 0 && read_kernel::<u32>(signal, config!(signal_flags)) & SIGNAL_UNKILLABLE != 0
    }
}

/// The cgroup2 id of a live task, read from the task (0 if a pointer on the way is null).
#[inline(always)]
fn task_cgroup(task: u64) -> u64 {
    // SAFETY: `task` is a live task_struct; each pointer is checked before it is followed and
    // the offsets are the running kernel's (BTF).
    unsafe {
        let css_set: u64 = read_kernel(task, config!(task_cgroups));
        if css_set == 0 {
            return 0;
        }
        cgroup_id(read_kernel(css_set, config!(css_set_dfl_cgrp)))
    }
}

/// The id of a `struct cgroup` (0 for a null pointer or one on the way).
#[inline(always)]
fn cgroup_id(cgroup: u64) -> u64 {
    if cgroup == 0 {
        return 0;
    }
    // SAFETY: a live `struct cgroup`; the pointer is checked before it is followed and the
    // offsets are the running kernel's (BTF).
    unsafe {
        let kn: u64 = read_kernel(cgroup, config!(cgroup_kn));
        if kn == 0 {
            return 0;
        }
        read_kernel(kn, config!(kernfs_node_id))
    }
}

/// Nothing on the node is being stopped: userspace found `STOPPING` empty and recorded the
/// generation then (`STOPS[SETTLED]`), and no container was marked since.
#[inline(always)]
fn settled() -> bool {
    match (STOPS.get_ptr(0), STOPS.get_ptr(SETTLED)) {
        // SAFETY: array slots, read whole.
        (Some(stops), Some(settled)) => unsafe {
            core::ptr::read_volatile(stops) == core::ptr::read_volatile(settled)
        },
        _ => false,
    }
}

#[inline(always)]
fn stopping(cgroup: u64) -> bool {
    // Read before the map: a mark that lands after this read also moves the value on.
    let stops = STOPS
        .get_ptr(0)
        // SAFETY: an array slot, read whole.
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) });
    let last = RUNNING.get_ptr_mut(0);
    if let Some(last) = last {
        // SAFETY: this CPU's slot; programs on one CPU do not interleave here.
        if unsafe { *last } == [cgroup, stops] {
            return false;
        }
    }
    // SAFETY: the value is not used, only its presence.
    let is = unsafe { STOPPING.get(cgroup) }.is_some();
    if let (false, Some(last)) = (is, last) {
        // SAFETY: as above.
        unsafe { *last = [cgroup, stops] };
    }
    is
}

/// Adds `delta` to a cgroup's count of established connections; a close never takes it below 0
/// (connections from before the daemon were never counted up).
#[inline(always)]
fn count_established(cgroup: u64, delta: i64) {
    let slot = match ESTABLISHED.get_ptr_mut(cgroup) {
        Some(p) => p,
        None if delta > 0 => {
            if ESTABLISHED
                .insert(cgroup, delta, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
                .is_ok()
            {
                return;
            }
            match ESTABLISHED.get_ptr_mut(cgroup) {
                Some(p) => p,
                None => return,
            }
        }
        None => return,
    };
    // SAFETY: a map value, valid for the program's run; read only to clamp.
    if delta < 0 && unsafe { core::ptr::read_volatile(slot) } <= 0 {
        return;
    }
    // SAFETY: an aligned i64 map value; XADD, as in `mark_stopping`.
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) slot, d = in(reg) delta);
    }
}

/// A cgroup's established connections now, or [`NOT_COUNTED`].
#[inline(always)]
fn established(cgroup: u64) -> i64 {
    // SAFETY: the value is copied out at once.
    unsafe { ESTABLISHED.get(cgroup) }
        .copied()
        .unwrap_or(NOT_COUNTED)
}

/// The container is being stopped from now on.
#[inline(always)]
fn mark_stopping(cgroup: u64) {
    if cgroup == 0 || cgroup == config!(root_cgroup) {
        return;
    }
    // SAFETY: only the presence of the entry is used.
    if unsafe { STOPPING.get(cgroup) }.is_some() {
        return;
    }
    let _ = STOPPING.insert(cgroup, 1, 0);
    if let Some(stops) = STOPS.get_ptr_mut(0) {
        // BPF's oldest atomic (XADD, on every kernel): two CPUs marking at once must both
        // move the value on, or a CPU could keep a stale "not stopping".
        // SAFETY: an aligned u64 array slot.
        unsafe {
            core::arch::asm!("lock *(u64 *)({p} + 0) += {one}", p = in(reg) stops, one = in(reg) 1u64);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
