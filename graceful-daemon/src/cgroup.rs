//! cgroup2: where it is mounted, and cgroup id <-> path below its root.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::events::CgroupId;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 file system in /proc/self/mountinfo (mount one: mount -t cgroup2 none /sys/fs/cgroup/unified)")]
    NotMounted,
    #[error("reading {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The cgroup2 hierarchy and a cache of the ids of its cgroups.
#[derive(Debug)]
pub struct Cgroup2 {
    mount: PathBuf,
    root_id: CgroupId,
    paths: HashMap<CgroupId, String>,
}

/// Mount point of the cgroup2 file system with the widest view in a mountinfo text (in a
/// private cgroup namespace the host's tree, mounted from outside, has a root of `/../..`),
/// with that root.
fn cgroup2_mount_and_root(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut fields = left.split_whitespace().skip(3);
            let root = unescape(fields.next()?);
            let mount = PathBuf::from(unescape(fields.next()?));
            Some((mount, root))
        })
        .max_by_key(|(_, root)| root.split('/').filter(|c| *c == "..").count())
}

/// Mount point of the cgroup2 file system (see [`cgroup2_mount_and_root`]).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    cgroup2_mount_and_root(mountinfo).map(|(mount, _)| mount)
}

/// Mount points of every cgroup hierarchy, v1 controllers and cgroup2 alike.
fn hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if !matches!(right.split_whitespace().next()?, "cgroup" | "cgroup2") {
                return None;
            }
            Some(PathBuf::from(unescape(left.split_whitespace().nth(4)?)))
        })
        .collect()
}

/// Removes the cgroup `rel` (below each hierarchy's root) and what is left below it, in every
/// hierarchy, as the kubelet removes a pod's cgroup once its sandbox is gone: a runtime removes
/// its containers' cgroups but not the parents it was given. Cgroups that still hold
/// processes stay (the kernel refuses).
pub fn remove_everywhere(rel: &str) {
    in_every_hierarchy(rel, remove_tree);
}

/// Removes the cgroup `rel` in every hierarchy where it is empty (no child, no process).
pub fn remove_everywhere_if_empty(rel: &str) {
    in_every_hierarchy(rel, |dir| {
        let _ = fs::remove_dir(dir);
    });
}

/// `f` on the directory of `rel` in each mounted hierarchy (never on a hierarchy's root).
fn in_every_hierarchy(rel: &str, f: impl Fn(&Path)) {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for mount in hierarchies(&mountinfo) {
        f(&mount.join(rel));
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// `rel` (which may climb with `..`) resolved against `base`, both below the cgroup2 root.
fn resolve(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Where this process's cgroup namespace is rooted, below the cgroup2 mount: `/` on the host;
/// in a container with a private cgroup namespace (and the host's tree mounted), the cgroup
/// the namespace was made at. `/proc/<pid>/cgroup` paths are relative to it.
fn namespace_root() -> &'static str {
    static ROOT: OnceLock<String> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        match (cgroup2_mount_and_root(&mountinfo), raw_unified_path(&own)) {
            (Some((mount, root)), Some(own)) if root != "/" => {
                find_own_cgroup(&mount, std::process::id())
                    .map(|host| namespace_root_of(&host, own))
                    .unwrap_or_else(|| "/".into())
            }
            _ => "/".into(),
        }
    })
}

/// The namespace root, given our cgroup as seen from the host and from inside the namespace.
fn namespace_root_of(host: &str, own: &str) -> String {
    let mut host: Vec<&str> = host.split('/').filter(|c| !c.is_empty()).collect();
    for _ in own.split('/').filter(|c| !c.is_empty()) {
        host.pop();
    }
    format!("/{}", host.join("/"))
}

/// The cgroup (below `mount`) whose `cgroup.procs` lists `pid`.
fn find_own_cgroup(mount: &Path, pid: u32) -> Option<String> {
    let pid = pid.to_string();
    let mut stack = vec![(mount.to_path_buf(), String::from("/"))];
    while let Some((dir, rel)) = stack.pop() {
        if fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|l| l.trim() == pid))
        {
            return Some(rel);
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                stack.push((entry.path(), resolve(&rel, &name)));
            }
        }
    }
    None
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Host pids of the processes in the cgroup directory `dir` (its `cgroup.procs`); none when it
/// is gone.
pub fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The `0::` line of a `/proc/<pid>/cgroup` text, relative to our cgroup namespace.
fn raw_unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup2 path of a process (below the cgroup2 mount) from `/proc/<pid>/cgroup` text.
pub fn unified_path(proc_cgroup: &str) -> Option<String> {
    let rel = raw_unified_path(proc_cgroup)?;
    Some(match namespace_root() {
        "/" => normalize(rel),
        root => resolve(root, rel),
    })
}

impl Cgroup2 {
    pub fn discover() -> Result<Cgroup2, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|error| CgroupError::Io {
            path: path.into(),
            error,
        })?;
        let mount = cgroup2_mount(&text).ok_or(CgroupError::NotMounted)?;
        Cgroup2::at(mount)
    }

    pub fn at(mount: PathBuf) -> Result<Cgroup2, CgroupError> {
        let meta = fs::metadata(&mount).map_err(|error| CgroupError::Io {
            path: mount.clone(),
            error,
        })?;
        let mut paths = HashMap::new();
        paths.insert(meta.ino(), "/".to_string());
        Ok(Cgroup2 {
            mount,
            root_id: meta.ino(),
            paths,
        })
    }

    /// The id of the root cgroup.
    pub fn root_id(&self) -> CgroupId {
        self.root_id
    }

    /// cgroup2's hierarchy id, as `cgroup_attach_task.dst_root` reports it: always 0, the
    /// default hierarchy (the `0::` line of /proc/<pid>/cgroup).
    pub fn hierarchy_id(&self) -> i32 {
        0
    }

    /// Absolute directory of a path below the root ("/a/b" -> <mount>/a/b).
    pub fn dir(&self, path: &str) -> PathBuf {
        self.mount.join(path.trim_start_matches('/'))
    }

    /// The id of a cgroup from its path below the root.
    pub fn id_of(&self, path: &str) -> Option<CgroupId> {
        fs::metadata(self.dir(path)).ok().map(|m| m.ino())
    }

    /// The path below the root ("/" for the root) of a cgroup id; a miss looks for it in the
    /// tree, since cgroups come and go. Remembered after the cgroup is removed.
    pub fn path_of(&mut self, id: CgroupId) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.paths.contains_key(&id) {
            let path = self.find(id)?;
            self.paths.insert(id, path);
        }
        self.paths.get(&id).cloned()
    }

    /// The path of a cgroup that `pid` is in, without walking the tree: from the cache, else
    /// from `/proc/<pid>/cgroup` (checked against the id). For the event path; None when the
    /// process is already gone.
    pub fn learn(&mut self, id: CgroupId, pid: u32) -> Option<&str> {
        if id == 0 {
            return None;
        }
        if !self.paths.contains_key(&id) {
            let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let path = unified_path(&text)?;
            if self.id_of(&path) != Some(id) {
                return None;
            }
            self.paths.insert(id, path);
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// The cached path of an id, without rescanning.
    pub fn cached_path(&self, id: CgroupId) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    /// Records a cgroup the caller knows by path (e.g. one it just made).
    pub fn remember(&mut self, path: &str) -> Option<CgroupId> {
        let id = self.id_of(path)?;
        self.paths.insert(id, normalize(path));
        Some(id)
    }

    /// Forgets the paths of cgroups that are gone, unless `keep` still needs them (a record
    /// that is not yet out names its container's cgroup after it was removed).
    pub fn prune(&mut self, keep: impl Fn(CgroupId) -> bool) {
        let mount = &self.mount;
        self.paths.retain(|id, path| {
            keep(*id)
                || fs::metadata(mount.join(path.trim_start_matches('/')))
                    .is_ok_and(|m| m.ino() == *id)
        });
    }

    /// How many cgroup paths are remembered.
    pub fn remembered(&self) -> usize {
        self.paths.len()
    }

    /// Walks the hierarchy for the cgroup with this id. Only it is remembered: what else the
    /// node holds (empty cgroups left behind) costs the daemon nothing.
    fn find(&self, id: CgroupId) -> Option<String> {
        let mut stack = vec![(self.mount.clone(), String::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            if meta.ino() == id {
                return Some(rel);
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        None
    }
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else if trimmed.starts_with('/') {
        trimmed.into()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_learnt_from_a_process_without_walking_the_tree() {
        let mut cg = Cgroup2 {
            mount: Cgroup2::discover().expect("cgroup2").mount,
            root_id: 0,
            paths: HashMap::new(),
        };
        let text = fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = unified_path(&text).expect("our cgroup2 path");
        let id = cg.id_of(&own).expect("our cgroup's id");
        assert_eq!(
            cg.learn(id + 1, std::process::id()),
            None,
            "another cgroup's id"
        );
        assert_eq!(cg.learn(id, std::process::id()), Some(own.as_str()));
        assert_eq!(cg.remembered(), 1);
    }

    #[test]
    fn a_cgroup_is_removed_from_every_hierarchy() {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts = hierarchies(&mountinfo);
        assert!(!mounts.is_empty());
        let rel = format!("graceful-remove-test-{}", std::process::id());
        for m in &mounts {
            // Some v1 hierarchies refuse children here (read-only, or no room): skip those.
            let _ = fs::create_dir_all(m.join(&rel).join("pod1/ctr"));
        }
        assert!(mounts.iter().any(|m| m.join(&rel).exists()));
        remove_everywhere(&format!("/{rel}"));
        for m in &mounts {
            assert!(!m.join(&rel).exists(), "{} is left", m.join(&rel).display());
        }
    }

    #[test]
    fn an_unknown_id_is_found_in_the_tree_and_only_it_is_remembered() {
        let mut cg = Cgroup2::discover().expect("cgroup2");
        let dir = cg.dir("/graceful-find-test");
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).expect("a cgroup of our own");
        let id = fs::metadata(&dir).unwrap().ino();
        let found = cg.path_of(id);
        let before = cg.remembered();
        let _ = fs::remove_dir(&dir);
        assert_eq!(found.as_deref(), Some("/graceful-find-test"));
        assert_eq!(before, 2, "the root and the cgroup looked for");
        assert_eq!(cg.path_of(u64::MAX - 3), None);
        assert_eq!(cg.remembered(), 2);
    }

    #[test]
    fn finds_cgroup2_in_hybrid_mountinfo() {
        let text = "\
35 25 0:30 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
44 35 0:39 / /sys/fs/cgroup/unified rw,relatime shared:18 - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / /x rw - cgroup cgroup rw"), None);
        assert_eq!(
            hierarchies(text),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
        let escaped = "44 35 0:39 / /mnt/my\\040cgroups rw - cgroup2 none rw";
        assert_eq!(
            cgroup2_mount(escaped),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
    }

    #[test]
    fn unified_line_of_proc_cgroup() {
        assert_eq!(
            raw_unified_path("4:memory:/x\n0::/kubepods/pod1/abc\n"),
            Some("/kubepods/pod1/abc")
        );
        assert_eq!(raw_unified_path("4:memory:/x\n"), None);
    }

    #[test]
    fn the_widest_cgroup2_mount_wins() {
        // A container with its own cgroup namespace: the runtime's mount shows its subtree, the
        // host's tree mounted from outside shows a root above the namespace.
        let text = "\
1 0 0:30 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw
2 0 0:30 /../../.. /host/cgroup ro - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount_and_root(text),
            Some((PathBuf::from("/host/cgroup"), "/../../..".into()))
        );
    }

    #[test]
    fn paths_climb_out_of_a_cgroup_namespace() {
        let ns = namespace_root_of("/kubepods/burstable/podX/graceful", "/");
        assert_eq!(ns, "/kubepods/burstable/podX/graceful");
        assert_eq!(namespace_root_of("/a/b/c", "/c"), "/a/b");
        assert_eq!(
            resolve(&ns, "/../../../../system.slice/containerd.service"),
            "/system.slice/containerd.service"
        );
        assert_eq!(resolve(&ns, "/"), "/kubepods/burstable/podX/graceful");
        assert_eq!(
            resolve(&ns, "/../../podY/abc"),
            "/kubepods/burstable/podY/abc"
        );
        assert_eq!(resolve("/", "/../.."), "/");
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("/a/b/"), "/a/b");
        assert_eq!(normalize("a"), "/a");
        assert_eq!(normalize("/"), "/");
    }
}
