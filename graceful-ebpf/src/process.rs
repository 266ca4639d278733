//! The process lifecycle hooks (exit, exec, fork, cgroup attach, OOM victim): reported for
//! containers being stopped, and what identifies a container or enters it from outside.
use super::*;

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
#[cfg(feature = "floor")]
#[tracepoint]
pub fn sched_process_exit_floor(_ctx: TracePointContext) -> u32 {
    0
}

#[cfg(feature = "floor")]
#[tracepoint]
pub fn sched_process_exec_floor(_ctx: TracePointContext) -> u32 {
    0
}

#[cfg(feature = "floor")]
#[tracepoint]
pub fn task_newtask_floor(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let cgroup = current_cgroup();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let visitor = !stopping(cgroup);
    // SAFETY: only the presence of the entry is used.
    if visitor && unsafe { VISITORS.get(tgid) }.is_none() {
        return 0;
    }
    if !group_dead(&ctx) {
        return 0;
    }
    if visitor {
        let _ = VISITORS.remove(tgid);
    }
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
            tgid,
            tid,
            exit_code,
            _pad: 0,
            cgroup,
            comm: current_comm(),
        },
    );
    0
}

/// The current task, just exec'd into `cgroup` from outside, runs the program userspace named as
/// the container's preStop hook. Compared as two words: no memcmp in BPF.
#[inline(always)]
fn runs_pre_stop_hook(cgroup: u64) -> bool {
    // SAFETY: the value is copied out at once.
    let Some(hook) = (unsafe { PRE_STOP.get(cgroup) }) else {
        return false;
    };
    same_comm(*hook, current_comm())
}

/// The task `cgroup_attach_task` moves into `cgroup` already runs the container's preStop hook
/// program (the record's `comm`, a `__data_loc` string).
#[inline(always)]
fn attached_pre_stop_hook(ctx: &TracePointContext, cgroup: u64) -> bool {
    let field = config!(attach_comm);
    // SAFETY: the value is copied out at once.
    let Some(hook) = (unsafe { PRE_STOP.get(cgroup) }) else {
        return false;
    };
    if field == 0 {
        return false;
    }
    let record = ctx.as_ptr() as *const u8;
    // SAFETY: a __data_loc is a u32 in the record (offset in its low 16 bits); the string it
    // points at lies in the same record.
    let name = unsafe {
        let loc: u32 = read_kernel(record as u64, field);
        let mut name = [0u8; 16];
        if bpf_probe_read_kernel_str_bytes(record.add((loc & 0xffff) as usize), &mut name).is_err()
        {
            return false;
        }
        name
    };
    same_comm(*hook, name)
}

/// Two NUL-padded names, compared as two words: no memcmp in BPF.
#[inline(always)]
fn same_comm(a: [u8; 16], b: [u8; 16]) -> bool {
    let words = |b: [u8; 16]| -> [u64; 2] {
        // SAFETY: 16 bytes as two u64s, same size.
        unsafe { core::mem::transmute(b) }
    };
    words(a) == words(b)
}

/// Reported: the first exec of a cgroup (it identifies the container), an exec by a thread
/// that entered the cgroup from outside (its exit is reported too), and every exec of a
/// container being stopped.
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
    let stopping = stopping(cgroup);
    // The first exec after the daemon started may be a visitor too (SEEN starts empty).
    if entered && !stopping {
        let _ = VISITORS.insert(tgid, 1, 0);
        // The container's preStop hook: what it does to the container is its stop.
        if runs_pre_stop_hook(cgroup) {
            mark_stopping(cgroup);
        }
    }
    if first || entered || stopping {
        // runc moves its own init in and re-execs it before the container's program: a
        // namespace's init that entered is the container's main process, not a visitor.
        let mut flags = if entered { EXEC_ENTERED } else { 0 };
        // SAFETY: the current task is alive while it execs.
        if namespace_init(unsafe { bpf_get_current_task() }) {
            flags |= EXEC_NAMESPACE_INIT;
        }
        output(
            &ctx,
            ExecRecord {
                header: header(Kind::Exec),
                tgid,
                flags,
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
    // A runtime's exec enters the container and forks before it execs (runc's nsexec clones
    // twice): what the entered task forks before its exec has entered too.
    // SAFETY: only the presence of the entry is used.
    if unsafe { ENTERED.get(bpf_get_current_pid_tgid() as u32) }.is_some() {
        // SAFETY: as above.
        let child: i32 = unsafe { read_kernel(ctx.as_ptr() as u64, config!(newtask_pid)) };
        let _ = ENTERED.insert(child as u32, 1, 0);
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
        // A runtime may move its exec in only after it exec'd (runc before 1.2): the preStop
        // hook is then known by the name it already runs, and its move is reported.
        if !attached_pre_stop_hook(&ctx, cgroup) {
            return 0;
        }
        mark_stopping(cgroup);
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
