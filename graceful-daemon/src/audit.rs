//! `audit`: the PID 1 stop-signal risk of every running container, from /proc.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::{
    identity::{self, Identity},
    procfs::{in_sigwait, processes, ProcStatus, Program, Shell},
    record::ContainerJson,
    signals::{is_shell, Signal},
    tracker::explanation::{pid1_risk, Pid1Risk},
};

/// The audit record of docs/design.md.
#[derive(Serialize)]
struct AuditJson<'a> {
    kind: &'static str,
    container: ContainerJson<'a>,
    init: AuditInit<'a>,
    risk: &'static str,
    explanation: String,
}

#[derive(Serialize)]
struct AuditInit<'a> {
    pid: u32,
    comm: &'a str,
    shell: bool,
    stop_signal: Signal,
    handles_stop_signal: bool,
    ignores_stop_signal: bool,
}

/// A running container's main process as /proc shows it, before it is judged against the
/// container's stop signal (which the caller knows: the daemon per container, `audit` one for all).
#[derive(Debug, Clone)]
pub struct MainProcess {
    pub cgroup: String,
    pub identity: Identity,
    pub pid: u32,
    pub status: ProcStatus,
    pub in_sigwait: bool,
    pub program: Option<Program>,
}

impl MainProcess {
    /// Judged against `stop_signal`.
    pub fn against(self, stop_signal: Signal) -> AuditEntry {
        AuditEntry {
            main: self,
            stop_signal,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub main: MainProcess,
    pub stop_signal: Signal,
}

impl AuditEntry {
    /// The stop signal never reaches the app: the kernel drops it at PID 1. A signal PID 1
    /// blocks or waits for is pending until it takes it, not dropped (tini).
    pub fn stop_signal_dropped(&self) -> bool {
        self.main.status.drops(self.stop_signal) && !self.main.in_sigwait
    }

    /// PID 1 is a shell: by what it runs, else by its name.
    pub fn shell(&self) -> Option<Shell> {
        match &self.main.program {
            Some(program) => program.shell(),
            None => is_shell(&self.main.status.comm).then(|| Shell {
                name: self.main.status.comm.clone(),
                script: None,
            }),
        }
    }

    pub fn explanation(&self) -> String {
        let risk = if !self.stop_signal_dropped() {
            Pid1Risk::Receives
        } else if self.main.status.ignores(self.stop_signal) {
            Pid1Risk::Ignores
        } else if let Some(shell) = self.shell() {
            Pid1Risk::Shell(shell.to_string())
        } else {
            Pid1Risk::NoHandler
        };
        pid1_risk(&self.main.status.comm, self.stop_signal, risk)
    }

    pub fn to_json(&self) -> Value {
        let json = AuditJson {
            kind: "audit",
            container: ContainerJson::new(Some(&self.main.identity), Some(&self.main.cgroup), None),
            init: AuditInit {
                pid: self.main.pid,
                comm: &self.main.status.comm,
                shell: self.shell().is_some(),
                stop_signal: self.stop_signal,
                handles_stop_signal: self.main.status.handles(self.stop_signal)
                    || self.main.status.blocks(self.stop_signal)
                    || self.main.in_sigwait,
                ignores_stop_signal: self.main.status.ignores(self.stop_signal),
            },
            risk: if self.stop_signal_dropped() {
                "stop_signal_dropped"
            } else {
                "none"
            },
            explanation: self.explanation(),
        };
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_value(json).unwrap_or(Value::Null)
    }
}

/// Every container on the host: a cgroup with a runtime's identity, or one that holds the init
/// of a pid namespace. Its main process is that init, else the member whose parent is outside.
pub fn scan() -> Vec<MainProcess> {
    let mut by_cgroup: BTreeMap<String, Vec<(u32, ProcStatus)>> = BTreeMap::new();
    for p in processes().filter(|p| p.cgroup != "/") {
        by_cgroup
            .entry(p.cgroup)
            .or_default()
            .push((p.pid, p.status));
    }
    let mut out = Vec::new();
    for (cgroup, procs) in by_cgroup {
        let init = procs.iter().find(|(_, s)| s.is_namespace_init());
        let Some(identity) = identity::parse(&cgroup) else {
            continue;
        };
        if identity.runtime == identity::Runtime::Unknown && init.is_none() {
            continue;
        }
        let main = init.or_else(|| {
            procs
                .iter()
                .filter(|(_, s)| !procs.iter().any(|(p, _)| *p as i32 == s.ppid))
                .min_by_key(|(p, _)| *p)
        });
        if let Some((pid, status)) = main {
            out.push(MainProcess {
                cgroup,
                identity,
                pid: *pid,
                status: status.clone(),
                in_sigwait: in_sigwait(*pid),
                program: Program::read(*pid),
            });
        }
    }
    out
}
