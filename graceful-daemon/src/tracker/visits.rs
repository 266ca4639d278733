//! Processes the runtime brings into a running container from outside (a preStop exec hook, an
//! exec probe): the container's visits, kept apart from its own processes.
use super::{CgroupId, HookRun, Mono, Tracker, VISITS_KEPT};

impl Tracker {
    /// A process the runtime brought into a running container from outside (its exec, or its
    /// move when it had exec'd before: runc before 1.2), with the name it runs: one of the
    /// container's visits, a preStop hook among them.
    /// `from_outside`: the kernel saw it enter (its fork may have made it a member already).
    pub fn entered(
        &mut self,
        pid: u32,
        cgroup: CgroupId,
        comm: &str,
        ts: Mono,
        from_outside: bool,
    ) {
        if let Some(g) = self.groups.get_mut(&cgroup) {
            // A runtime moves a container's own first process in before its exec too: only
            // another than its main process is a visitor.
            let visitor = !g.members.contains(&pid)
                || (from_outside && g.main.is_some_and(|main| main != pid));
            let open = g
                .visits
                .iter_mut()
                .rev()
                .find(|v| v.pid == pid && v.ended.is_none());
            if let (true, true, Some(v)) = (from_outside, g.active.is_none(), open) {
                // The same visit runs its program now (runc's init, moved in, then its exec);
                // what the visit execs after that (`sh -c sleep`) is still the hook's run.
                v.comm = comm.to_string();
                v.started = ts;
            } else if g.active.is_none() && !g.members.is_empty() && visitor {
                if g.visits.len() == VISITS_KEPT {
                    g.visits.pop_front();
                }
                g.visits.push_back(HookRun {
                    pid,
                    comm: comm.to_string(),
                    started: ts,
                    ended: None,
                    exit: None,
                });
            }
        }
        self.join(pid, cgroup, comm, None, false);
    }

    /// The container's pid namespace init exec'd: its main process, never a runtime's exec
    /// (which joins the namespace). runc's stages before it (its re-exec, then a child read
    /// from cgroup.procs) may have made it look like one: a visit opened for it is none.
    pub(super) fn init_exec(&mut self, pid: u32, cgroup: CgroupId, comm: &str) {
        self.join(pid, cgroup, comm, None, false);
        if let Some(g) = self.groups.get_mut(&cgroup) {
            g.visits.retain(|v| v.pid != pid || v.ended.is_some());
            g.main = Some(pid);
        }
    }
}
