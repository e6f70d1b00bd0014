//! Process metadata (name from `stat`, `exe`, `cmdline`, cgroup), read from
//! `/proc/PID` once per process and cached, for both CPU-time sources.
//!
//! Metadata never changes the CPU figures, so every failure here degrades to
//! "unknown" (`None`, an empty `cmdline`) instead of an error: a process may
//! vanish between two reads, `exe` is unreadable for other users' processes
//! without `CAP_SYS_PTRACE`, and kernel threads have no `exe` at all.

use std::{path::PathBuf, sync::Arc};

use rustc_hash::FxHashMap as HashMap;

use ::procfs::{process::Process, ProcError, ProcessCGroup};

use super::{
    procfs::{is_gone, parse_stat, read_to_end_into, ticks_to_ns, CMDLINE, PID_STAT},
    ProcessKey, ProcessMeta,
};

/// Tolerance on top of one clock tick when comparing a BPF start time (ns) with
/// the `/proc/PID/stat` one (ticks, truncated): covers rounding in the
/// kernel's and our conversions. PIDs are not reused within milliseconds.
const START_SLACK_NS: u64 = 1_000_000;

/// Metadata of processes by key, read once and kept until [`MetaCache::retain`]
/// or [`MetaCache::remove`] drops it.
#[derive(Debug)]
pub struct MetaCache {
    proc_root: PathBuf,
    ticks_per_second: u64,
    /// `None`: the key's PID now belongs to another process (start time
    /// mismatch), remembered so that it is not read again.
    entries: HashMap<ProcessKey, Option<ProcessMeta>>,
}

/// What one attempt to read a process's metadata found.
enum Lookup {
    /// The process is there (the data may be partial).
    Found(ProcessMeta),
    /// The PID belongs to a process with another start time.
    Replaced,
    /// The process is gone, or could not be identified: try again next time.
    Unknown,
}

impl MetaCache {
    /// A cache reading below `proc_root` (normally `/proc`).
    #[must_use]
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            ticks_per_second: super::procfs::ticks_per_second(),
            entries: HashMap::default(),
        }
    }

    /// The metadata of the process `key`, read on the first call for that key.
    ///
    /// `None` when the process is gone or its PID now belongs to another
    /// process (its start time differs from `key.start_ns`, when that is not 0).
    pub fn get(&mut self, key: ProcessKey) -> Option<ProcessMeta> {
        if let Some(entry) = self.entries.get(&key) {
            return entry.clone();
        }
        match self.lookup(key) {
            Lookup::Found(meta) => {
                self.entries.insert(key, Some(meta.clone()));
                Some(meta)
            }
            Lookup::Replaced => {
                self.entries.insert(key, None);
                None
            }
            Lookup::Unknown => None,
        }
    }

    /// True when `key` was already looked up (found, or known to be another process).
    pub fn contains(&self, key: &ProcessKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Keeps only the entries whose key satisfies `live` (call it after the
    /// final samples of exited processes, so memory stays bounded).
    pub fn retain(&mut self, live: impl Fn(&ProcessKey) -> bool) {
        self.entries.retain(|key, _| live(key));
        crate::util::shrink_if_sparse(&mut self.entries);
    }

    /// Forgets one process.
    pub fn remove(&mut self, key: &ProcessKey) {
        self.entries.remove(key);
    }

    /// Number of cached entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads the metadata of `key` from `/proc`, through one directory handle so
    /// that every file comes from the same process.
    fn lookup(&self, key: ProcessKey) -> Lookup {
        let dir = self.proc_root.join(key.pid.to_string());
        let process = match Process::new_with_root(dir) {
            Ok(process) => process,
            Err(error) => {
                log_unless_gone(&error);
                return Lookup::Unknown;
            }
        };
        let stat = self.read_stat(&process);
        if key.start_ns != 0 {
            // Without its start time the process cannot be told from a successor.
            let Some((proc_start_ns, _)) = &stat else {
                return Lookup::Unknown;
            };
            if !start_times_match(key.start_ns, *proc_start_ns, self.ticks_per_second) {
                log::debug!(
                    "pid {}: start {} ns does not match /proc start {proc_start_ns} ns: PID reused",
                    process.pid,
                    key.start_ns
                );
                return Lookup::Replaced;
            }
        }
        // `cmdline` exists for every live process (empty for kernel threads):
        // not finding it means the process went away while we were reading.
        let Some(cmdline) = read_cmdline(&process) else {
            return Lookup::Unknown;
        };
        Lookup::Found(ProcessMeta {
            comm: stat.map(|(_, comm)| comm.into()),
            exe: read_exe(&process).map(Arc::from),
            cmdline: cmdline.into(),
            cgroup_path: read_cgroup_path(&process).map(Arc::from),
        })
    }

    /// The process's start time (ns since boot, tick resolution) and name,
    /// from its `stat`; `None` when that cannot be read or parsed.
    fn read_stat(&self, process: &Process) -> Option<(u64, String)> {
        let mut buf = Vec::with_capacity(512);
        let mut file = match process.open_relative("stat") {
            Ok(file) => file,
            Err(error) => {
                log_unless_gone(&error);
                return None;
            }
        };
        if let Err(error) = read_to_end_into(&mut file, &mut buf, PID_STAT) {
            if !is_gone(&error) {
                log::debug!("reading stat of pid {}: {error}", process.pid);
            }
            return None;
        }
        let Some(stat) = parse_stat(&buf) else {
            log::debug!("unparsable stat of pid {}", process.pid);
            return None;
        };
        let start_ns = ticks_to_ns(stat.start_ticks, self.ticks_per_second);
        Some((start_ns, String::from_utf8_lossy(stat.comm).into_owned()))
    }
}

/// Whether a start time in ns (BPF) and one converted from `/proc` clock ticks
/// (truncated by the kernel) can describe the same process.
fn start_times_match(start_ns: u64, proc_ns: u64, ticks_per_second: u64) -> bool {
    let tick_ns = 1_000_000_000 / ticks_per_second.max(1);
    start_ns.abs_diff(proc_ns) <= tick_ns.saturating_add(START_SLACK_NS)
}

/// `/proc/PID/exe`; `None` for kernel threads, other users' processes
/// (permission denied) and processes whose main thread has exited.
fn read_exe(process: &Process) -> Option<PathBuf> {
    match process.exe() {
        Ok(exe) => Some(exe),
        Err(error) => {
            log_unless_expected(&error);
            None
        }
    }
}

/// `/proc/PID/cmdline` split at NULs. Arguments that are not UTF-8 are
/// converted lossily (the crate's `cmdline()` would drop the whole line).
/// Empty for kernel threads, zombies and on permission denied; `None` when
/// the process is gone.
fn read_cmdline(process: &Process) -> Option<Vec<String>> {
    let mut file = match process.open_relative("cmdline") {
        Ok(file) => file,
        Err(ProcError::NotFound(_)) => return None,
        Err(error) => {
            log_unless_expected(&error);
            return Some(Vec::new());
        }
    };
    let mut buf = Vec::new();
    if let Err(error) = read_to_end_into(&mut file, &mut buf, CMDLINE) {
        if is_gone(&error) {
            return None;
        }
        log::debug!("reading cmdline of pid {}: {error}", process.pid);
        return Some(Vec::new());
    }
    Some(split_cmdline(&buf))
}

/// Splits NUL-separated arguments, dropping empty pieces (the trailing NUL,
/// and the NUL padding left by processes that rewrite their title).
pub(crate) fn split_cmdline(buf: &[u8]) -> Vec<String> {
    buf.split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The cgroup v2 path from `/proc/PID/cgroup`, see [`pick_cgroup_path`].
fn read_cgroup_path(process: &Process) -> Option<String> {
    match process.cgroups() {
        Ok(groups) => pick_cgroup_path(&groups.0),
        Err(error) => {
            log_unless_expected(&error);
            None
        }
    }
}

/// The path to report from the lines of `/proc/PID/cgroup`: the unified (v2)
/// line `0::<path>` when present (v2 and hybrid hosts); else, on v1-only
/// hosts, the `name=systemd` hierarchy (which names the unit) or the first line.
pub(crate) fn pick_cgroup_path(groups: &[ProcessCGroup]) -> Option<String> {
    let unified = groups
        .iter()
        .find(|g| g.hierarchy == 0 && g.controllers.is_empty());
    let systemd = || {
        groups
            .iter()
            .find(|g| g.controllers.iter().any(|c| c == "name=systemd"))
    };
    unified
        .or_else(systemd)
        .or_else(|| groups.first())
        .map(|g| g.pathname.clone())
}

/// Logs (debug) a failed read unless it is the normal "process gone" case.
fn log_unless_gone(error: &ProcError) {
    if !matches!(error, ProcError::NotFound(_)) {
        log::debug!("reading process metadata: {error}");
    }
}

/// Logs (debug) a failed read unless it is gone or permission denied, both
/// expected for metadata.
fn log_unless_expected(error: &ProcError) {
    if !matches!(
        error,
        ProcError::NotFound(_) | ProcError::PermissionDenied(_)
    ) {
        log::debug!("reading process metadata: {error}");
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink, path::Path};

    use tempfile::TempDir;

    use super::*;

    /// One fake `/proc/PID` directory.
    struct FakeProc<'a> {
        pid: u32,
        start_ticks: u64,
        exe: Option<&'a str>,
        cmdline: Option<&'a [u8]>,
        cgroup: Option<&'a str>,
    }

    fn write_proc(root: &Path, p: &FakeProc<'_>) {
        let dir = root.join(p.pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        let stat = format!(
            "{} (fake) S 1 1 1 0 -1 4194560 10 0 0 0 5 6 0 0 20 0 1 0 {} 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
            p.pid, p.start_ticks
        );
        fs::write(dir.join("stat"), stat).unwrap();
        if let Some(exe) = p.exe {
            symlink(exe, dir.join("exe")).unwrap();
        }
        if let Some(cmdline) = p.cmdline {
            fs::write(dir.join("cmdline"), cmdline).unwrap();
        }
        if let Some(cgroup) = p.cgroup {
            fs::write(dir.join("cgroup"), cgroup).unwrap();
        }
    }

    fn tree(procs: &[FakeProc<'_>]) -> TempDir {
        let root = TempDir::new().unwrap();
        for p in procs {
            write_proc(root.path(), p);
        }
        root
    }

    fn key(pid: u32, start_ns: u64) -> ProcessKey {
        ProcessKey { pid, start_ns }
    }

    fn tps() -> u64 {
        super::super::procfs::ticks_per_second()
    }

    #[test]
    fn reads_exe_cmdline_and_cgroup_v2() {
        let root = tree(&[FakeProc {
            pid: 42,
            start_ticks: 1000,
            exe: Some("/usr/bin/python3"),
            cmdline: Some(b"python3\0-m\0http.server\0"),
            cgroup: Some("0::/system.slice/web.service\n"),
        }]);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        let meta = cache.get(key(42, 0)).unwrap();
        assert_eq!(meta.comm.as_deref(), Some("fake"));
        assert_eq!(
            meta.exe.as_deref(),
            Some(std::path::Path::new("/usr/bin/python3"))
        );
        assert_eq!(*meta.cmdline, ["python3", "-m", "http.server"]);
        assert_eq!(
            meta.cgroup_path.as_deref(),
            Some("/system.slice/web.service")
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn hybrid_host_prefers_unified_line() {
        let root = tree(&[FakeProc {
            pid: 7,
            start_ticks: 5,
            exe: Some("/bin/sh"),
            cmdline: Some(b"sh\0"),
            cgroup: Some(
                "12:memory:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/user.slice/session-1.scope\n",
            ),
        }]);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        let meta = cache.get(key(7, 0)).unwrap();
        assert_eq!(
            meta.cgroup_path.as_deref(),
            Some("/user.slice/session-1.scope")
        );
    }

    #[test]
    fn v1_host_uses_name_systemd_then_first_line() {
        let systemd = [
            ProcessCGroup {
                hierarchy: 4,
                controllers: vec!["cpu".into(), "cpuacct".into()],
                pathname: "/a".into(),
            },
            ProcessCGroup {
                hierarchy: 1,
                controllers: vec!["name=systemd".into()],
                pathname: "/system.slice/x.service".into(),
            },
        ];
        assert_eq!(
            pick_cgroup_path(&systemd).as_deref(),
            Some("/system.slice/x.service")
        );
        let plain = [ProcessCGroup {
            hierarchy: 3,
            controllers: vec!["memory".into()],
            pathname: "/m".into(),
        }];
        assert_eq!(pick_cgroup_path(&plain).as_deref(), Some("/m"));
        assert_eq!(pick_cgroup_path(&[]), None);

        let root = tree(&[FakeProc {
            pid: 9,
            start_ticks: 5,
            exe: Some("/bin/sh"),
            cmdline: Some(b"sh\0"),
            cgroup: Some("4:cpu,cpuacct:/a\n1:name=systemd:/system.slice/x.service\n"),
        }]);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        assert_eq!(
            cache.get(key(9, 0)).unwrap().cgroup_path.as_deref(),
            Some("/system.slice/x.service")
        );
    }

    #[test]
    fn partial_data_is_cached() {
        // A kernel thread: no exe link, empty cmdline, garbage cgroup file.
        let root = tree(&[FakeProc {
            pid: 2,
            start_ticks: 0,
            exe: None,
            cmdline: Some(b""),
            cgroup: Some("garbage without colons\n"),
        }]);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        let meta = cache.get(key(2, 0)).unwrap();
        let expected = ProcessMeta {
            comm: Some("fake".into()),
            ..ProcessMeta::default()
        };
        assert_eq!(meta, expected);
        // Cached: deleting the directory does not change the answer.
        fs::remove_dir_all(root.path().join("2")).unwrap();
        assert_eq!(cache.get(key(2, 0)), Some(expected));
        cache.retain(|_| false);
        assert!(cache.is_empty());
        assert_eq!(cache.get(key(2, 0)), None);
    }

    #[test]
    fn non_utf8_cmdline_is_kept_lossily() {
        let root = tree(&[FakeProc {
            pid: 3,
            start_ticks: 1,
            exe: Some("/bin/x"),
            cmdline: Some(b"x\0caf\xe9\0\0\0"),
            cgroup: None,
        }]);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        let meta = cache.get(key(3, 0)).unwrap();
        assert_eq!(*meta.cmdline, ["x", "caf\u{fffd}"]);
        assert_eq!(meta.cgroup_path, None);
    }

    #[test]
    fn gone_process_is_not_cached() {
        let root = tree(&[]);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        assert_eq!(cache.get(key(77, 0)), None);
        assert!(cache.is_empty());
        // Appears later (a retry after a transient failure): now found.
        write_proc(
            root.path(),
            &FakeProc {
                pid: 77,
                start_ticks: 1,
                exe: Some("/bin/y"),
                cmdline: Some(b"y\0"),
                cgroup: None,
            },
        );
        assert_eq!(*cache.get(key(77, 0)).unwrap().cmdline, ["y"]);
    }

    #[test]
    fn start_time_guard() {
        let tick_ns = 1_000_000_000 / tps();
        let start_ticks = 123_456;
        let root = tree(&[FakeProc {
            pid: 50,
            start_ticks,
            exe: Some("/bin/new"),
            cmdline: Some(b"new\0"),
            cgroup: None,
        }]);
        let proc_ns = ticks_to_ns(start_ticks, tps());
        let mut cache = MetaCache::new(root.path().to_path_buf());
        // BPF's ns-resolution start time lies within the tick /proc truncated to.
        assert!(cache.get(key(50, proc_ns + tick_ns / 2)).is_some());
        assert!(cache.get(key(50, proc_ns)).is_some());
        // Another process that had PID 50 earlier: rejected, and remembered.
        let old = key(50, proc_ns - 100 * tick_ns);
        assert_eq!(cache.get(old), None);
        assert_eq!(cache.entries.get(&old), Some(&None));
        assert_eq!(cache.get(key(50, proc_ns + 5 * tick_ns)), None);
    }

    #[test]
    fn start_times_match_edges() {
        let tps = 100;
        assert!(start_times_match(1_000_000_000, 1_000_000_000, tps));
        assert!(start_times_match(1_010_999_999, 1_000_000_000, tps));
        assert!(start_times_match(989_000_000, 1_000_000_000, tps));
        assert!(!start_times_match(1_011_000_001, 1_000_000_000, tps));
        assert!(!start_times_match(0, u64::MAX, tps));
        assert!(start_times_match(5, 5, 0));
    }

    #[test]
    fn garbage_stat_with_start_guard_is_unknown() {
        let root = tree(&[FakeProc {
            pid: 60,
            start_ticks: 1,
            exe: None,
            cmdline: Some(b"z\0"),
            cgroup: None,
        }]);
        fs::write(root.path().join("60/stat"), b"(((garbage").unwrap();
        let mut cache = MetaCache::new(root.path().to_path_buf());
        assert_eq!(cache.get(key(60, 10_000_000)), None);
        assert!(cache.is_empty());
        // Without a start time there is nothing to check; only the name is unknown.
        let meta = cache
            .get(key(60, 0))
            .expect("metadata without a start check");
        assert_eq!((meta.comm, &*meta.cmdline), (None, &["z".to_string()][..]));
    }

    #[test]
    fn real_proc_self() {
        let mut cache = MetaCache::new(PathBuf::from("/proc"));
        let pid = std::process::id();
        let meta = cache.get(key(pid, 0)).unwrap();
        assert_eq!(meta.exe.as_deref(), std::env::current_exe().ok().as_deref());
        assert!(!meta.cmdline.is_empty());
    }
}
