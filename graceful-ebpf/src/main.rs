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
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel, generated as gen,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use graceful_common::{
    AttachRecord, Config, ExecRecord, ExitRecord, ForkRecord, Header, Kind, OomRecord,
    SignalRecord, CLONE_INTO_CGROUP, CLONE_THREAD, COUNTER_ENTRIES, ENTERED_ENTRIES, LOST_ENTRIES,
    LOST_READ_FAILED, LOST_RING_FULL, MAX_SIGNAL, NO_FIELD, RECORD_BUF, RESULT_SLOTS, RING_BYTES,
    SEEN_ENTRIES, STOPPING_ENTRIES,
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
    exit_size: 0,
    newtask_size: 0,
    attach_size: 0,
    oom_size: 0,
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
static STOPS: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU, the last cgroup found not stopping and the `STOPS` value then: a running
/// container's events (a signal flood, a fork storm) check two array slots, not the hash map.
#[map]
static RUNNING: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// cgroups whose first exec went to userspace: it identifies the container.
#[map]
static SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(SEEN_ENTRIES, 0);

/// Threads that entered a container's cgroup from another cgroup (runc exec, kubectl exec, a
/// preStop hook) and have not exec'd since.
#[map]
static ENTERED: LruHashMap<u32, u8> = LruHashMap::with_max_entries(ENTERED_ENTRIES, 0);

macro_rules! config {
    ($field:ident) => {{
        // SAFETY: CONFIG is a frozen read-only global written by the loader.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(CONFIG.$field)) };
        value
    }};
}

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
        let cgroup: u64 = read_kernel(css_set, config!(css_set_dfl_cgrp));
        if cgroup == 0 {
            return 0;
        }
        let kn: u64 = read_kernel(cgroup, config!(cgroup_kn));
        if kn == 0 {
            return 0;
        }
        read_kernel(kn, config!(kernfs_node_id))
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

/// A raw tracepoint: the classic one fills a perf record before the program runs, a cost every
/// SIGURG of a Go program would pay. Arguments: `(sig, info, task, group, result)`.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    let sig: i32 = ctx.arg::<u64>(0) as i32;
    let result: i32 = ctx.arg::<u64>(4) as i32;
    if sig <= 0 || sig as usize > MAX_SIGNAL || !(0..RESULT_SLOTS as i32).contains(&result) {
        return 0;
    }
    if let Some(count) = COUNTS.get_ptr_mut(sig as u32 * RESULT_SLOTS as u32 + result as u32) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *count += 1 };
    }
    if config!(stop_signals) & (1u64 << (sig as u64 - 1)) == 0 {
        return 0;
    }
    let info: u64 = ctx.arg(1);
    let task: u64 = ctx.arg(2);
    // SAFETY: a plain helper call.
    let current = unsafe { bpf_get_current_task() };
    let css_off = config!(task_cgroups);
    // A signal to itself, or within one css_set, stays in the sender's cgroup: no need to
    // follow the target's pointers.
    // SAFETY: `task` is the live target, the current task is alive; offsets are BTF's.
    let same_css_set = task == current
        || unsafe { read_kernel::<u64>(task, css_off) == read_kernel::<u64>(current, css_off) };
    let sender_cgroup = current_cgroup();
    // The kernel's own SIGKILL (the OOM killer, sent from whatever task allocated) stops a
    // container even from inside it.
    let kernel_kill = sig == 9 && info == SEND_SIG_PRIV;
    let target_cgroup = if same_css_set {
        sender_cgroup
    } else {
        task_cgroup(task)
    };
    // From outside the target's cgroup: the container is being stopped from now on. Signals
    // inside a running container are only counted, and cost little more than that.
    if sender_cgroup != target_cgroup || kernel_kill {
        mark_stopping(target_cgroup);
    } else if !stopping(target_cgroup) {
        return 0;
    }
    let (tgid_off, comm_off) = (config!(task_tgid), config!(task_comm));
    // SAFETY: `task` is the live target task_struct; offsets come from the kernel's BTF.
    let (tgid, comm): (i32, [u8; 16]) =
        unsafe { (read_kernel(task, tgid_off), read_kernel(task, comm_off)) };
    let code = match info {
        0 => SI_USER,
        SEND_SIG_PRIV => SI_KERNEL,
        // SAFETY: a kernel_siginfo pointer.
        _ => unsafe { read_kernel(info, SI_CODE_OFFSET as u32) },
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    output(
        &ctx,
        SignalRecord {
            header: header(Kind::Signal),
            signo: sig,
            code,
            result,
            group: ctx.arg::<u64>(3) as i32,
            target_pid: tgid,
            sender_tgid: (pid_tgid >> 32) as u32,
            sender_tid: pid_tgid as u32,
            _pad: 0,
            target_cgroup,
            sender_cgroup,
            target_comm: comm,
            sender_comm: current_comm(),
        },
    );
    0
}

/// Not attached by the daemon: the benchmark's floor, the least any program on this raw
/// tracepoint can do (read the signal number, compare, return).
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate_floor(ctx: RawTracePointContext) -> i32 {
    i32::from(ctx.arg::<u64>(0) == 9999)
}

/// The exiting thread is the last of its process.
#[inline(always)]
fn group_dead(ctx: &TracePointContext) -> bool {
    let field = config!(exit_group_dead);
    if field != NO_FIELD {
        return match TracepointFields::read(ctx, config!(exit_size)) {
            Some(rec) => rec.get::<u8>(field) != 0,
            None => {
                count_lost(LOST_READ_FAILED);
                false
            }
        };
    }
    // Before 6.16: do_exit() decrements signal->live before this tracepoint; the last thread
    // sees 0. (Two threads racing to the end may both see 0: a duplicate exit is harmless.)
    // SAFETY: the current task and its signal_struct live while it exits; offsets are BTF's.
    unsafe {
        let task = bpf_get_current_task();
        let signal: u64 = read_kernel(task, config!(task_signal));
        signal != 0 && read_kernel::<i32>(signal, config!(signal_live)) == 0
    }
}

/// Not attached by the daemon: the benchmark's floor on the spawn hooks (return at once).
#[tracepoint]
pub fn sched_process_exit_floor(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn sched_process_exec_floor(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn task_newtask_floor(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let cgroup = current_cgroup();
    if !stopping(cgroup) || !group_dead(&ctx) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: the current task is alive while its exit tracepoint runs; the offset is BTF's.
    let exit_code_offset = config!(task_exit_code) as usize;
    let exit_code = unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(exit_code_offset) as *const i32).unwrap_or(-1)
    };
    output(
        &ctx,
        ExitRecord {
            header: header(Kind::Exit),
            tgid: (pid_tgid >> 32) as u32,
            tid,
            exit_code,
            _pad: 0,
            cgroup,
            comm: current_comm(),
        },
    );
    0
}

/// Reported: the first exec of a cgroup (it identifies the container), an exec by a thread
/// that entered the cgroup from outside, and every exec of a container being stopped.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let cgroup = current_cgroup();
    if cgroup == config!(root_cgroup) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: only the presence of the entries is used.
    let first = unsafe { SEEN.get(cgroup) }.is_none();
    if first {
        let _ = SEEN.insert(cgroup, 1, 0);
    }
    let entered = ENTERED.remove(pid_tgid as u32).is_ok();
    if first || entered || stopping(cgroup) {
        output(
            &ctx,
            ExecRecord {
                header: header(Kind::Exec),
                tgid,
                _pad: 0,
                cgroup,
                comm: current_comm(),
            },
        );
    }
    0
}

/// `task:task_newtask` rather than `sched:sched_process_fork`: it carries `clone_flags`, which
/// tell a new process from a new thread.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // SAFETY: an offset inside the tracepoint's record, from its format file.
    let flags: u64 = unsafe { read_kernel(ctx.as_ptr() as u64, config!(newtask_flags)) };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    if flags & CLONE_INTO_CGROUP != 0 {
        // Born into another cgroup (clone3): like a thread that attaches, its exec is reported.
        // SAFETY: as above.
        let child: i32 = unsafe { read_kernel(ctx.as_ptr() as u64, config!(newtask_pid)) };
        let _ = ENTERED.insert(child as u32, 1, 0);
        return 0;
    }
    let cgroup = current_cgroup();
    if !stopping(cgroup) {
        return 0;
    }
    // SAFETY: as above.
    let child: i32 = unsafe { read_kernel(ctx.as_ptr() as u64, config!(newtask_pid)) };
    output(
        &ctx,
        ForkRecord {
            header: header(Kind::Fork),
            parent_tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            child_pid: child as u32,
            cgroup,
            comm: current_comm(),
        },
    );
    0
}

#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let Some(rec) = TracepointFields::read(&ctx, config!(attach_size)) else {
        count_lost(LOST_READ_FAILED);
        return 0;
    };
    let root: i32 = rec.get(config!(attach_root));
    if root != config!(cgroup2_hierarchy) {
        return 0;
    }
    let tid: i32 = rec.get(config!(attach_pid));
    let cgroup: u64 = rec.get(config!(attach_id));
    if cgroup == config!(root_cgroup) {
        return 0;
    }
    // Its next exec says what entered; a container being stopped hears of the move at once.
    let _ = ENTERED.insert(tid as u32, 1, 0);
    if !stopping(cgroup) {
        return 0;
    }
    output(
        &ctx,
        AttachRecord {
            header: header(Kind::Attach),
            tid: tid as u32,
            _pad: 0,
            cgroup,
        },
    );
    0
}

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let Some(rec) = TracepointFields::read(&ctx, config!(oom_size)) else {
        count_lost(LOST_READ_FAILED);
        return 0;
    };
    let pid: i32 = rec.get(config!(oom_pid));
    // The victim's cgroup is known from the SIGKILL just before (the kernel sends it first).
    let cgroup = 0;
    output(
        &ctx,
        OomRecord {
            header: header(Kind::Oom),
            pid: pid as u32,
            _pad: 0,
            cgroup,
        },
    );
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
