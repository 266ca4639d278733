//! Container identity from a cgroup2 path: runtime, container id, pod uid and QoS class.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Systemd,
    Unknown,
}

serialize_by_name!(Runtime);

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Systemd => "systemd",
            Runtime::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub runtime: Runtime,
    /// Container id (full), systemd unit name, or the cgroup's last component.
    pub id: String,
    pub pod_uid: Option<String>,
    /// besteffort | burstable | guaranteed, for Kubernetes pods.
    pub qos: Option<String>,
    /// containerd namespace for plain containerd containers.
    pub namespace: Option<String>,
}

impl Identity {
    /// 12 characters of a hex container id, or the whole id/unit name.
    pub fn short_id(&self) -> &str {
        if self.id.len() == 64 && is_hex(&self.id) {
            &self.id[..12]
        } else {
            &self.id
        }
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `<prefix><64 hex>.scope` -> the id.
fn scoped_id<'a>(component: &'a str, prefix: &str) -> Option<&'a str> {
    let id = component.strip_prefix(prefix)?.strip_suffix(".scope")?;
    (id.len() == 64 && is_hex(id)).then_some(id)
}

/// Pod uid and QoS from the kubelet's pod cgroup, cgroupfs (`pod<uid>`) or systemd
/// (`kubepods-burstable-pod<uid_with_underscores>.slice`) driver.
fn pod(components: &[&str]) -> (Option<String>, Option<String>) {
    let mut qos = None;
    let mut uid = None;
    for c in components {
        let name = c.strip_suffix(".slice").unwrap_or(c);
        for q in ["besteffort", "burstable"] {
            if *c == q || name == format!("kubepods-{q}") {
                qos = Some(q.to_string());
            }
        }
        let uid_part = name
            .strip_prefix("pod")
            .or_else(|| name.rsplit_once("-pod").map(|(_, u)| u));
        if let Some(u) = uid_part {
            if u.len() >= 32
                && u.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
            {
                uid = Some(u.replace('_', "-"));
            }
        }
    }
    if uid.is_some() && qos.is_none() {
        qos = Some("guaranteed".into());
    }
    (uid, qos)
}

/// The identity of the container whose cgroup is `path` (below the cgroup2 root), or None for
/// the root and for cgroups that hold no container or service.
pub fn parse(path: &str) -> Option<Identity> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let last = *components.last()?;
    let kube = components
        .first()
        .is_some_and(|c| *c == "kubepods" || *c == "kubepods.slice");
    let (pod_uid, qos) = if kube { pod(&components) } else { (None, None) };
    let id = |runtime, id: &str| Identity {
        runtime,
        id: id.to_string(),
        pod_uid: pod_uid.clone(),
        qos: qos.clone(),
        namespace: None,
    };
    if last.starts_with("crio-conmon-") {
        return None; // CRI-O's monitor, not a container
    }
    if let Some(c) = scoped_id(last, "cri-containerd-") {
        return Some(id(Runtime::Containerd, c));
    }
    if let Some(c) = scoped_id(last, "crio-") {
        return Some(id(Runtime::CriO, c));
    }
    if let Some(c) = scoped_id(last, "docker-") {
        return Some(id(Runtime::Docker, c));
    }
    if let Some(c) = last
        .strip_prefix("crio-")
        .filter(|c| c.len() == 64 && is_hex(c))
    {
        return Some(id(Runtime::CriO, c)); // CRI-O with the cgroupfs driver
    }
    if kube && pod_uid.is_some() && components.len() >= 2 && last.len() == 64 && is_hex(last) {
        return Some(id(Runtime::Containerd, last)); // containerd, cgroupfs driver
    }
    if components.len() == 2 && components[0] == "docker" {
        return Some(id(Runtime::Docker, last));
    }
    if last.ends_with(".service") {
        return Some(id(Runtime::Systemd, last));
    }
    if last.ends_with(".scope") || last.ends_with(".slice") {
        return None; // login sessions, init.scope, slices: no container, no service
    }
    if components.len() == 2 && !kube && !components[0].ends_with(".slice") && !last.contains('.') {
        // Plain containerd: /<namespace>/<id>.
        let mut ident = id(Runtime::Containerd, last);
        ident.namespace = Some(components[0].to_string());
        return Some(ident);
    }
    if kube && (pod_uid.is_none() || pod(&[last]).0.is_some()) {
        return None; // kubepods, QoS and pod cgroups
    }
    Some(id(Runtime::Unknown, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a1f3f5ad0b6c3b7a4e2d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8";
    const UID: &str = "8dbd0d3c-4b1e-4c39-9b32-5b6b0f7a3c11";

    #[test]
    fn kubelet_cgroupfs_driver() {
        let i = parse(&format!("/kubepods/besteffort/pod{UID}/{ID}")).unwrap();
        assert_eq!((i.runtime, i.id.as_str()), (Runtime::Containerd, ID));
        assert_eq!(i.pod_uid.as_deref(), Some(UID));
        assert_eq!(i.qos.as_deref(), Some("besteffort"));
        assert_eq!(i.short_id(), &ID[..12]);
        let g = parse(&format!("/kubepods/pod{UID}/{ID}")).unwrap();
        assert_eq!(g.qos.as_deref(), Some("guaranteed"));
        let b = parse(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")).unwrap();
        assert_eq!(
            (b.runtime, b.qos.as_deref()),
            (Runtime::CriO, Some("burstable"))
        );
    }

    #[test]
    fn kubelet_systemd_driver() {
        let uid_ = UID.replace('-', "_");
        let p = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope");
        let i = parse(&p).unwrap();
        assert_eq!((i.runtime, i.id.as_str()), (Runtime::Containerd, ID));
        assert_eq!(i.pod_uid.as_deref(), Some(UID));
        assert_eq!(i.qos.as_deref(), Some("burstable"));
        let g = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope");
        let i = parse(&g).unwrap();
        assert_eq!(
            (i.runtime, i.qos.as_deref()),
            (Runtime::CriO, Some("guaranteed"))
        );
        let be = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/docker-{ID}.scope");
        let i = parse(&be).unwrap();
        assert_eq!(
            (i.runtime, i.qos.as_deref()),
            (Runtime::Docker, Some("besteffort"))
        );
        assert!(parse(&format!(
            "/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{ID}.scope"
        ))
        .is_none());
        assert!(parse("/kubepods.slice/kubepods-burstable.slice").is_none());
    }

    #[test]
    fn docker_and_plain_containerd_and_systemd() {
        let d = parse(&format!("/docker/{ID}")).unwrap();
        assert_eq!((d.runtime, d.id.as_str()), (Runtime::Docker, ID));
        let d = parse(&format!("/system.slice/docker-{ID}.scope")).unwrap();
        assert_eq!(d.runtime, Runtime::Docker);
        let c = parse("/default/redis").unwrap();
        assert_eq!(
            (c.runtime, c.id.as_str(), c.namespace.as_deref()),
            (Runtime::Containerd, "redis", Some("default"))
        );
        let c = parse(&format!("/k8s.io/{ID}")).unwrap();
        assert_eq!(c.runtime, Runtime::Containerd);
        let s = parse("/system.slice/nginx.service").unwrap();
        assert_eq!(
            (s.runtime, s.id.as_str()),
            (Runtime::Systemd, "nginx.service")
        );
        assert_eq!(s.short_id(), "nginx.service");
        assert!(parse("/").is_none());
        assert!(parse("/user.slice/user-1000.slice/session-3.scope").is_none());
        assert!(parse("/init.scope").is_none());
        assert!(parse("/system.slice").is_none());
        let u = parse("/user.slice/user-1000.slice/user@1000.service").unwrap();
        assert_eq!(u.runtime, Runtime::Systemd);
        let u = parse("/graceful-demo/123/shell-pid1").unwrap();
        assert_eq!((u.runtime, u.id.as_str()), (Runtime::Unknown, "shell-pid1"));
    }
}
