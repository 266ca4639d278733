//! `signal:signal_generate`: every signal counted; stop-relevant ones reported when they come
//! from outside a container (which marks it stopping) or happen inside one being stopped.
use super::*;

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
    // The kernel's own SIGKILL (the OOM killer, sent from whatever task allocated) stops a
    // container even from inside it.
    let kernel_kill = sig == 9 && info == SEND_SIG_PRIV;
    // Most of the time nothing on the node is being stopped: a signal inside one cgroup
    // (USR1 reloads, a flood of them) is then only counted, before any cgroup id is read.
    if same_css_set && !kernel_kill && settled() && !inside_stop(sig, task) {
        return 0;
    }
    let sender_cgroup = current_cgroup();
    let target_cgroup = if same_css_set {
        sender_cgroup
    } else {
        task_cgroup(task)
    };
    // From outside the target's cgroup: the container is being stopped from now on. Signals
    // inside a running container are only counted, and cost little more than that.
    if sender_cgroup != target_cgroup || kernel_kill || inside_stop(sig, task) {
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
    let disposition = disposition(task, sig);
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
            disposition,
            target_cgroup,
            sender_cgroup,
            target_comm: comm,
            sender_comm: current_comm(),
            established: established(target_cgroup),
        },
    );
    0
}

/// A conventional stop signal sent inside a container to its pid namespace's init (`kill 1`
/// from a preStop hook or the app): it may be the container's stop, so it is reported and the
/// container watched as one being stopped. Other signals never pay for the init check.
#[inline(always)]
fn inside_stop(sig: i32, task: u64) -> bool {
    if INSIDE_STOP_SIGNALS & (1u64 << (sig as u64 - 1)) == 0 {
        return false;
    }
    namespace_init(task)
}

/// The target's handler for `sig` and whether it blocks it, as the kernel decides by them now:
/// what /proc shows later may have changed (a handler that resets itself, sigtimedwait's
/// temporary unblocking).
#[inline(always)]
fn disposition(task: u64, sig: i32) -> u32 {
    let bit = 1u64 << (sig as u64 - 1);
    // SAFETY: `task` is the live target task_struct; each pointer is checked before it is
    // followed and the offsets are the running kernel's (BTF); `sig` is within 1..=64.
    unsafe {
        let blocked: u64 = read_kernel(task, config!(task_blocked));
        let real_blocked: u64 = read_kernel(task, config!(task_real_blocked));
        let blocked = if (blocked | real_blocked) & bit != 0 {
            DISPOSITION_BLOCKED
        } else {
            0
        };
        let sighand: u64 = read_kernel(task, config!(task_sighand));
        if sighand == 0 {
            return DISPOSITION_UNKNOWN | blocked;
        }
        let at = config!(sighand_action)
            + (sig as u32 - 1) * config!(k_sigaction_size)
            + config!(k_sigaction_handler);
        let handler =
            match bpf_probe_read_kernel((sighand as *const u8).add(at as usize).cast::<u64>()) {
                Ok(0) => DISPOSITION_DEFAULT,
                Ok(1) => DISPOSITION_IGNORE,
                Ok(_) => DISPOSITION_HANDLER,
                Err(_) => DISPOSITION_UNKNOWN,
            };
        handler | blocked
    }
}

/// The kernel dequeued a signal and acts on the disposition it passes (`ka`): raw, as
/// `signal_generate`, since every SIGURG delivery passes here too. Arguments: `(sig, info, ka)`.
#[raw_tracepoint(tracepoint = "signal_deliver")]
pub fn signal_deliver(ctx: RawTracePointContext) -> i32 {
    let sig: i32 = ctx.arg::<u64>(0) as i32;
    if sig <= 0
        || sig as usize > MAX_SIGNAL
        || config!(stop_signals) & (1u64 << (sig as u64 - 1)) == 0
    {
        return 0;
    }
    let cgroup = current_cgroup();
    if !stopping(cgroup) {
        return 0;
    }
    let ka: u64 = ctx.arg(2);
    let handler = if ka == 0 {
        DISPOSITION_UNKNOWN
    } else {
        // SAFETY: `ka` is the k_sigaction the kernel is about to act on; the offset is BTF's.
        match unsafe {
            bpf_probe_read_kernel(
                (ka as *const u8)
                    .add(config!(k_sigaction_handler) as usize)
                    .cast::<u64>(),
            )
        } {
            Ok(0) => DISPOSITION_DEFAULT,
            Ok(1) => DISPOSITION_IGNORE,
            Ok(_) => DISPOSITION_HANDLER,
            Err(_) => DISPOSITION_UNKNOWN,
        }
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    output(
        &ctx,
        DeliverRecord {
            header: header(Kind::Deliver),
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            signo: sig,
            handler,
            cgroup,
        },
    );
    0
}

/// Not attached by the daemon: the benchmark's floor, the least any program on this raw
/// tracepoint can do (read the signal number, compare, return).
#[cfg(feature = "floor")]
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate_floor(ctx: RawTracePointContext) -> i32 {
    i32::from(ctx.arg::<u64>(0) == 9999)
}
