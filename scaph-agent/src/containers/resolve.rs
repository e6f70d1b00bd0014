//! From the cgroup id the kernel program records to the cgroup's path.
//!
//! On cgroup v2 a cgroup's id is the inode number of its directory (kernfs
//! hands out the id as the inode), so the map is built by walking the
//! unified hierarchy and noting each directory's inode; `readdir` already
//! returns it, so no `stat` is needed. The walk happens on a miss only, at
//! most once per [`Resolver::prepare`] call, and an id still unknown after a
//! walk is not looked for again for [`MISS_TTL`]: a cgroup that vanished
//! between its process's last slice and the read costs one walk, not one per
//! cycle. Paths of cgroups that disappeared are kept while they are asked
//! for, so a finished container keeps its name for as long as its processes
//! are reported.
//!
//! Layouts: the unified hierarchy is `<root>` on a pure v2 host and
//! `<root>/unified` on a hybrid one. On a v1-only host the kernel program's
//! id is the same for every process (the unused default hierarchy's root),
//! so ids are not resolved and paths come from `/proc/PID/cgroup` only.
use std::{
    collections::HashMap,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// How long an id that a walk did not find is not looked for again.
pub const MISS_TTL: Duration = Duration::from_secs(30);
/// Directories deeper than this are not walked (real trees are < 12 deep).
const MAX_DEPTH: usize = 32;
/// At most this many directories per walk (a node has a few thousand).
const MAX_DIRS: usize = 200_000;
/// Entries of vanished cgroups not asked for during this long are forgotten.
const KEEP_UNUSED: Duration = Duration::from_secs(3600);

/// Where the unified (v2) hierarchy is, if anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Pure cgroup v2: the root is the unified hierarchy.
    Unified(PathBuf),
    /// systemd's hybrid layout: v1 controllers, v2 at `<root>/unified`.
    Hybrid(PathBuf),
    /// cgroup v1 only, or no cgroup filesystem at that root.
    V1Only,
}

impl Layout {
    /// Looks at `root` (normally `/sys/fs/cgroup`).
    #[must_use]
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            Self::Unified(root.to_path_buf())
        } else if root.join("unified/cgroup.controllers").exists() {
            Self::Hybrid(root.join("unified"))
        } else {
            Self::V1Only
        }
    }

    /// The directory of the unified hierarchy.
    #[must_use]
    pub fn unified(&self) -> Option<&Path> {
        match self {
            Self::Unified(p) | Self::Hybrid(p) => Some(p),
            Self::V1Only => None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    path: Arc<str>,
    /// Found by the latest walk.
    present: bool,
    last_used: Instant,
}

/// What the last walk found, for the logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    pub walks: u64,
    pub directories: usize,
    /// The walk stopped at MAX_DIRS or could not read some directories.
    pub incomplete: bool,
}

/// cgroup id → path, cached.
#[derive(Debug)]
pub struct Resolver {
    layout: Layout,
    entries: HashMap<u64, Entry>,
    misses: HashMap<u64, Instant>,
    stats: WalkStats,
    /// The root could not be read at the last walk.
    unreadable: bool,
}

impl Resolver {
    #[must_use]
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            entries: HashMap::new(),
            misses: HashMap::new(),
            stats: WalkStats::default(),
            unreadable: false,
        }
    }

    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    #[must_use]
    pub fn stats(&self) -> WalkStats {
        self.stats
    }

    /// True unless the unified hierarchy exists but could not be read.
    #[must_use]
    pub fn healthy(&self) -> bool {
        !self.unreadable
    }

    /// Makes sure every id in `ids` that can be resolved is: walks the tree
    /// once if one of them is neither known nor a recent miss.
    pub fn prepare(&mut self, ids: impl IntoIterator<Item = u64>, now: Instant) {
        if self.layout.unified().is_none() {
            return;
        }
        self.misses
            .retain(|_, at| now.saturating_duration_since(*at) < MISS_TTL);
        let wanted: Vec<u64> = ids
            .into_iter()
            .filter(|id| !self.entries.contains_key(id) && !self.misses.contains_key(id))
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.walk(now);
        for id in wanted {
            if !self.entries.contains_key(&id) {
                self.misses.insert(id, now);
            }
        }
    }

    /// The path of cgroup `id` relative to the unified root (`/` for the
    /// root), if known. Call [`Resolver::prepare`] first.
    pub fn get(&mut self, id: u64, now: Instant) -> Option<Arc<str>> {
        let entry = self.entries.get_mut(&id)?;
        entry.last_used = now;
        Some(entry.path.clone())
    }

    /// Rebuilds the map from the tree; keeps vanished entries used recently.
    fn walk(&mut self, now: Instant) {
        let Some(root) = self.layout.unified().map(Path::to_path_buf) else {
            return;
        };
        let mut found: HashMap<u64, String> = HashMap::new();
        let mut incomplete = false;
        match std::fs::metadata(&root) {
            Ok(meta) => {
                found.insert(meta.ino(), "/".to_owned());
                self.unreadable = false;
            }
            Err(e) => {
                if !self.unreadable {
                    log::warn!(
                        "--containers: cannot read the cgroup hierarchy {}: {e}",
                        root.display()
                    );
                }
                self.unreadable = true;
                return;
            }
        }
        let mut stack: Vec<(PathBuf, String, usize)> = vec![(root, String::new(), 0)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(read) = std::fs::read_dir(&dir) else {
                incomplete = true; // vanished meanwhile, or not readable
                continue;
            };
            for entry in read.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if found.len() >= MAX_DIRS {
                    incomplete = true;
                    break;
                }
                let name = entry.file_name();
                let child_rel = format!("{rel}/{}", name.to_string_lossy());
                found.insert(entry.ino(), child_rel.clone());
                if depth + 1 < MAX_DEPTH {
                    stack.push((entry.path(), child_rel, depth + 1));
                } else {
                    incomplete = true;
                }
            }
        }
        for entry in self.entries.values_mut() {
            entry.present = false;
        }
        for (id, path) in found.iter() {
            match self.entries.get_mut(id) {
                Some(entry) if *entry.path == **path => entry.present = true,
                _ => {
                    self.entries.insert(
                        *id,
                        Entry {
                            path: Arc::from(path.as_str()),
                            present: true,
                            last_used: now,
                        },
                    );
                }
            }
        }
        self.entries
            .retain(|_, e| e.present || now.saturating_duration_since(e.last_used) < KEEP_UNUSED);
        crate::util::shrink_if_sparse(&mut self.entries);
        self.stats = WalkStats {
            walks: self.stats.walks + 1,
            directories: found.len(),
            incomplete,
        };
        log::debug!(
            "cgroup walk: {} directories{}",
            found.len(),
            if incomplete { " (incomplete)" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    /// A directory tree standing in for cgroupfs: ids are inodes there too.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        fs::create_dir_all(dir.path().join("system.slice/ssh.service")).unwrap();
        fs::create_dir_all(
            dir.path()
                .join("kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn layouts() {
        let v2 = tree();
        assert_eq!(
            Layout::detect(v2.path()),
            Layout::Unified(v2.path().to_path_buf())
        );
        let hybrid = tempfile::tempdir().unwrap();
        fs::create_dir_all(hybrid.path().join("unified")).unwrap();
        fs::write(hybrid.path().join("unified/cgroup.controllers"), "").unwrap();
        fs::create_dir_all(hybrid.path().join("cpu")).unwrap();
        assert_eq!(
            Layout::detect(hybrid.path()),
            Layout::Hybrid(hybrid.path().join("unified"))
        );
        let v1 = tempfile::tempdir().unwrap();
        fs::create_dir_all(v1.path().join("cpu")).unwrap();
        assert_eq!(Layout::detect(v1.path()), Layout::V1Only);
        assert_eq!(
            Layout::detect(Path::new("/nonexistent/cgroup")),
            Layout::V1Only
        );
    }

    #[test]
    fn ids_resolve_to_paths_and_vanished_ones_are_kept() {
        let dir = tree();
        let scope = dir
            .path()
            .join("kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope");
        let (scope_id, ssh_id, root_id) = (
            ino(&scope),
            ino(&dir.path().join("system.slice/ssh.service")),
            ino(dir.path()),
        );
        let mut r = Resolver::new(Layout::detect(dir.path()));
        let now = Instant::now();
        r.prepare([scope_id, ssh_id, root_id], now);
        assert_eq!(r.stats().walks, 1);
        assert_eq!(
            r.get(scope_id, now).as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope")
        );
        assert_eq!(
            r.get(ssh_id, now).as_deref(),
            Some("/system.slice/ssh.service")
        );
        assert_eq!(r.get(root_id, now).as_deref(), Some("/"));
        // Known ids cost no walk.
        r.prepare([scope_id, ssh_id], now);
        assert_eq!(r.stats().walks, 1);
        // The container's cgroup is removed: its path stays known. (New
        // directory first: a test filesystem may reuse inodes, cgroupfs never
        // reuses ids.)
        fs::create_dir(dir.path().join("new.scope")).unwrap();
        let new_id = ino(&dir.path().join("new.scope"));
        fs::remove_dir(&scope).unwrap();
        r.prepare([new_id], now);
        assert_eq!(r.stats().walks, 2);
        assert_eq!(r.get(new_id, now).as_deref(), Some("/new.scope"));
        assert!(
            r.get(scope_id, now).is_some(),
            "a vanished cgroup keeps its path"
        );
    }

    #[test]
    fn misses_are_remembered_for_a_while() {
        let dir = tree();
        let mut r = Resolver::new(Layout::detect(dir.path()));
        let t0 = Instant::now();
        r.prepare([u64::MAX], t0);
        r.prepare([u64::MAX], t0 + Duration::from_secs(1));
        assert_eq!(r.stats().walks, 1, "a recent miss does not walk again");
        assert_eq!(r.get(u64::MAX, t0), None);
        r.prepare([u64::MAX], t0 + MISS_TTL + Duration::from_secs(1));
        assert_eq!(
            r.stats().walks,
            2,
            "after the TTL the id is looked for again"
        );
    }

    #[test]
    fn v1_and_unreadable_roots_resolve_nothing_and_never_panic() {
        let mut r = Resolver::new(Layout::V1Only);
        r.prepare([1, 2, 3], Instant::now());
        assert_eq!(r.stats().walks, 0);
        assert!(r.healthy());
        let mut r = Resolver::new(Layout::Unified(PathBuf::from("/nonexistent/cgroup")));
        r.prepare([1], Instant::now());
        assert!(!r.healthy());
        assert_eq!(r.get(1, Instant::now()), None);
    }

    /// The real hierarchy of this machine, when there is one: every
    /// directory's inode resolves to its own path.
    #[test]
    fn real_cgroup_hierarchy() {
        let layout = Layout::detect(Path::new("/sys/fs/cgroup"));
        let Some(unified) = layout.unified().map(Path::to_path_buf) else {
            return;
        };
        let mut r = Resolver::new(layout);
        let root_id = ino(&unified);
        r.prepare([root_id], Instant::now());
        assert_eq!(r.get(root_id, Instant::now()).as_deref(), Some("/"));
    }
}
