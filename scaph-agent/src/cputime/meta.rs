//! Process metadata (name from `stat`, `exe`, `cmdline`, cgroup, and whether
//! it is a VM), read from `/proc/PID` once per process and cached, for both
//! CPU-time sources.
//!
//! Lookups are bounded per cycle ([`LOOKUPS_PER_CYCLE`]): a process reported
//! beyond the bound waits in a pending set, and the lookups later cycles
//! leave over read it whether or not it runs again
//! ([`MetaCache::deliver_pending`]).
//!
//! Metadata never changes the CPU figures, so every failure here degrades to
//! "unknown" (`None`, an empty `cmdline`) instead of an error: a process may
//! vanish between two reads, `exe` is unreadable for other users' processes
//! without `CAP_SYS_PTRACE`, and kernel threads have no `exe` at all.
//!
//! Any user chooses their processes' argv and paths, so what is kept is
//! bounded whatever they are: at most [`CMDLINE_READ_MAX`] bytes of
//! `/proc/PID/cmdline` are read, into a reused buffer, and kept as one
//! string of at most [`MetaOptions::cmdline_chars`] characters (none by
//! default); paths are cut at [`PATH_MAX_CHARS`].

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustc_hash::FxHashMap as HashMap;

use ::procfs::{process::Process, ProcError, ProcessCGroup};

mod argv;

pub(crate) use argv::parse_cmdline;
#[cfg(test)]
use argv::parse_real_uid;
use argv::{in_host_pid_namespace, read_real_uid, vm_name, Args};

use super::{
    pidstat::{parse_stat, ticks_per_second, ticks_to_ns, PID_STAT},
    ProcessKey, ProcessMeta, ProcessSample,
};
use crate::{
    fsroot::read::{is_gone, read_small_file, read_to_end_into, Extent},
    label,
    vm_label::{self, VmTrust},
};

/// `/proc/PID/cmdline`: longer ones are cut (anyone can make theirs long).
const CMDLINE: Extent = Extent {
    limit: CMDLINE_READ_MAX,
    single_line: false,
};

/// Most bytes of `/proc/PID/cmdline` read (libvirt, Proxmox and the qemu
/// command lines people type put `-name` well within them).
pub const CMDLINE_READ_MAX: usize = 4096;
/// Longest `exe` and cgroup path kept, in characters (then cut with
/// [`label::CUT`]): longer than any real one, and what labels show at most.
pub const PATH_MAX_CHARS: usize = label::PATH_MAX_CHARS;
/// Longest VM name taken (a directory name under the qemu exporter's root
/// can be no longer); a longer one leaves the process unnamed.
pub const VM_NAME_MAX_BYTES: usize = 255;

/// What to keep of each process, decided once from the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaOptions {
    /// Characters of the command line to keep (cut with [`label::CUT`]);
    /// 0 keeps none. Only what some exporter shows or matches.
    pub cmdline_chars: usize,
    /// Who may run VMs.
    pub vm_trust: VmTrust,
    /// scaph's own command line as shown (never the values of its options,
    /// which may be tokens or passwords).
    pub own_cmdline: Arc<str>,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            cmdline_chars: 0,
            vm_trust: VmTrust::default(),
            own_cmdline: Arc::from("scaph"),
        }
    }
}

/// Tolerance on top of one clock tick when comparing a BPF start time (ns) with
/// the `/proc/PID/stat` one (ticks, truncated): covers rounding in the
/// kernel's and our conversions. PIDs are not reused within milliseconds.
const START_SLACK_NS: u64 = 1_000_000;

/// Full metadata lookups per cycle through [`MetaCache::get_within_budget`].
///
/// A lookup is about ten system calls (stat, cmdline, cgroup, exe), some
/// 20 µs of CPU: at startup, or after a burst of new processes, reading
/// every process at once cost 250 ms at 10,000 processes (with 2,000 per
/// cycle: 135 ms, then about 60 ms for four cycles; `scaph-bench --only 7`). The
/// biggest CPU users of the cycle are read first; the others carry their
/// kernel name meanwhile and wait in a pending set, read with the lookups
/// that later cycles leave over, whether or not they run again.
pub const LOOKUPS_PER_CYCLE: usize = 2000;

/// Metadata of processes by key, read once and kept until [`MetaCache::retain`]
/// or [`MetaCache::remove`] drops it.
#[derive(Debug)]
pub struct MetaCache {
    proc_root: PathBuf,
    options: MetaOptions,
    /// scaph's own PID (its command line is replaced by `own_cmdline`).
    own_pid: u32,
    /// Reused for every `cmdline` read.
    buf: Vec<u8>,
    ticks_per_second: u64,
    /// `None`: the key's PID now belongs to another process (start time
    /// mismatch), remembered so that it is not read again.
    entries: HashMap<ProcessKey, Option<Arc<ProcessMeta>>>,
    /// Full lookups per cycle ([`LOOKUPS_PER_CYCLE`]; fewer in tests).
    per_cycle: usize,
    /// Full lookups left in this cycle.
    budget: usize,
    /// Processes reported without their metadata (the cycle's lookups ran
    /// out), by key; `true` once their name was given.
    pending: HashMap<ProcessKey, bool>,
}

/// What [`MetaCache::get_within_budget`] gives.
#[derive(Debug, PartialEq)]
pub enum Budgeted {
    /// As [`MetaCache::get`].
    Meta(Option<Arc<ProcessMeta>>),
    /// Not read this cycle. `comm`: the process's name from its `stat`, the
    /// first time only, when asked for.
    Later { comm: Option<String> },
}

/// What one attempt to read a process's metadata found.
enum Lookup {
    /// The process is there (the data may be partial).
    Found(Arc<ProcessMeta>),
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
            options: MetaOptions::default(),
            own_pid: std::process::id(),
            buf: Vec::with_capacity(CMDLINE_READ_MAX),
            ticks_per_second: ticks_per_second(),
            entries: HashMap::default(),
            per_cycle: LOOKUPS_PER_CYCLE,
            budget: LOOKUPS_PER_CYCLE,
            pending: HashMap::default(),
        }
    }

    /// Sets what to keep of each process read from now on.
    pub fn set_options(&mut self, options: MetaOptions) {
        self.options = options;
    }

    /// The metadata of the process `key`, read on the first call for that key.
    ///
    /// `None` when the process is gone or its PID now belongs to another
    /// process (its start time differs from `key.start_ns`, when that is not 0).
    pub fn get(&mut self, key: ProcessKey) -> Option<Arc<ProcessMeta>> {
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

    /// Starts a cycle: [`LOOKUPS_PER_CYCLE`] full lookups from now on. Maps
    /// that a burst of processes left sparse give their memory back.
    pub fn start_cycle(&mut self) {
        self.budget = self.per_cycle;
        crate::util::shrink_if_sparse(&mut self.entries);
        crate::util::shrink_if_sparse(&mut self.pending);
    }

    /// Fewer lookups per cycle, for tests of the sources.
    #[cfg(test)]
    pub(super) fn set_lookups_per_cycle(&mut self, n: usize) {
        self.per_cycle = n;
    }

    /// [`MetaCache::get`] while the cycle's lookups last; then the process
    /// waits in the pending set (see [`MetaCache::deliver_pending`]) and only
    /// its name is read (one `stat` read, once per process, and only if
    /// `name` is asked).
    pub fn get_within_budget(&mut self, key: ProcessKey, name: bool) -> Budgeted {
        if let Some(entry) = self.entries.get(&key) {
            return Budgeted::Meta(entry.clone());
        }
        if self.budget > 0 {
            self.budget -= 1;
            self.pending.remove(&key);
            return Budgeted::Meta(self.get(key));
        }
        let named = self.pending.entry(key).or_insert(false);
        if !name || *named {
            return Budgeted::Later { comm: None };
        }
        *named = true;
        let mut buf = std::mem::take(&mut self.buf);
        let path = crate::fsroot::pid_dir(&self.proc_root, key.pid).join("stat");
        let stat = read_small_file(&path, &mut buf, PID_STAT)
            .ok()
            .and_then(|()| {
                parse_stat(&buf)
                    .map(|s| (s.start_ticks, String::from_utf8_lossy(s.comm).into_owned()))
            });
        self.buf = buf;
        match stat {
            Some((start_ticks, _))
                if key.start_ns != 0
                    && !start_times_match(
                        key.start_ns,
                        ticks_to_ns(start_ticks, self.ticks_per_second),
                        self.ticks_per_second,
                    ) =>
            {
                self.pending.remove(&key);
                self.entries.insert(key, None);
                Budgeted::Meta(None)
            }
            stat => Budgeted::Later {
                comm: stat.map(|(_, comm)| comm),
            },
        }
    }

    /// Spends the lookups this cycle left over on pending processes (those
    /// reported earlier without metadata), whether or not they ran since,
    /// and appends a sample for each one found: no CPU time, its name and
    /// metadata, so that the consumer's table fills in. Call it once the
    /// cycle's own lookups are done and exited processes are forgotten. A
    /// process found gone or replaced leaves the set; it is read again if
    /// it is reported again.
    pub fn deliver_pending(&mut self, out: &mut Vec<ProcessSample>) {
        if self.budget == 0 || self.pending.is_empty() {
            return;
        }
        let keys: Vec<ProcessKey> = self.pending.keys().take(self.budget).copied().collect();
        self.budget -= keys.len();
        for key in keys {
            self.pending.remove(&key);
            if let Some(meta) = self.get(key) {
                out.push(ProcessSample {
                    key,
                    comm: meta.comm.as_deref().unwrap_or_default().to_owned(),
                    meta: Some(meta),
                    ..ProcessSample::default()
                });
            }
        }
    }

    /// Number of processes waiting for their metadata.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// True when `key` was already looked up (found, or known to be another process).
    pub fn contains(&self, key: &ProcessKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Keeps only the entries whose key satisfies `live` (call it after the
    /// final samples of exited processes, so memory stays bounded).
    pub fn retain(&mut self, live: impl Fn(&ProcessKey) -> bool) {
        self.entries.retain(|key, _| live(key));
        self.pending.retain(|key, _| live(key));
        crate::util::shrink_if_sparse(&mut self.entries);
        crate::util::shrink_if_sparse(&mut self.pending);
    }

    /// Forgets one process.
    pub fn remove(&mut self, key: &ProcessKey) {
        self.entries.remove(key);
        self.pending.remove(key);
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
    fn lookup(&mut self, key: ProcessKey) -> Lookup {
        let dir = crate::fsroot::pid_dir(&self.proc_root, key.pid);
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
        let mut buf = std::mem::take(&mut self.buf);
        let found = read_cmdline(&process, &mut buf).map(|cut| {
            let cgroup_path =
                read_cgroup_path(&process).map(|p| Arc::from(label::bound(&p, PATH_MAX_CHARS)));
            let args = Args::new(&buf, cut);
            let vm_name = if vm_label::is_qemu(&args.whole()) {
                self.vouched_vm_name(&process, cgroup_path.as_deref())
            } else {
                None
            };
            let cmdline = if u32::try_from(process.pid).is_ok_and(|pid| pid == self.own_pid) {
                self.options.own_cmdline.clone()
            } else {
                args.joined(self.options.cmdline_chars)
            };
            Arc::new(ProcessMeta {
                comm: stat.map(|(_, comm)| comm.into()),
                exe: read_exe(&process).map(bounded_path),
                cmdline,
                cgroup_path,
                vm_name,
            })
        });
        self.buf = buf;
        found.map_or(Lookup::Unknown, Lookup::Found)
    }

    /// The name of a process whose first `cmdline` read looked like a VM.
    ///
    /// The command line is read again between two reads of the real uid: a
    /// process may set a qemu argv and then exec a setuid helper that makes
    /// its real uid root; only a uid that held across the read vouches for
    /// the argv it surrounds. (Reading `status` only here, not for every
    /// process, is a third of the cost of a lookup.)
    fn vouched_vm_name(&self, process: &Process, cgroup_path: Option<&str>) -> Option<Arc<str>> {
        let uid_before = read_real_uid(process);
        let mut again = Vec::with_capacity(CMDLINE_READ_MAX);
        let cut = read_cmdline(process, &mut again)?;
        vm_name(
            &Args::new(&again, cut),
            cgroup_path,
            &self.options.vm_trust,
            || {
                let uid = uid_before.filter(|&u| read_real_uid(process) == Some(u))?;
                in_host_pid_namespace(&self.proc_root, process).then_some(uid)
            },
        )
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

/// `/proc/PID/cmdline`, at most [`CMDLINE_READ_MAX`] bytes, into `buf`.
/// `Some(true)` when it was longer (cut); `buf` is left empty for kernel
/// threads, zombies and on permission denied; `None` when the process is gone.
fn read_cmdline(process: &Process, buf: &mut Vec<u8>) -> Option<bool> {
    buf.clear();
    let mut file = match process.open_relative("cmdline") {
        Ok(file) => file,
        Err(ProcError::NotFound(_)) => return None,
        Err(error) => {
            log_unless_expected(&error);
            return Some(false);
        }
    };
    if let Err(error) = read_to_end_into(&mut file, buf, CMDLINE) {
        if is_gone(&error) {
            return None;
        }
        log::debug!("reading cmdline of pid {}: {error}", process.pid);
        buf.clear();
        return Some(false);
    }
    // Exactly full: there may have been more (one extra byte is not worth a read).
    Some(buf.len() >= CMDLINE_READ_MAX)
}

/// `exe` cut at [`PATH_MAX_CHARS`] (and lossily converted, when it has to be cut and is not UTF-8).
fn bounded_path(path: PathBuf) -> Arc<Path> {
    let lossy = path.to_string_lossy();
    match label::bound(&lossy, PATH_MAX_CHARS) {
        Cow::Borrowed(_) if path.to_str().is_some() => Arc::from(path.as_path()),
        bounded => Arc::from(Path::new(&*bounded)),
    }
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
        super::super::pidstat::ticks_per_second()
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
        assert_eq!(&*meta.cmdline, "", "not kept unless an exporter shows it");
        let mut cache = showing(root.path(), 100);
        assert_eq!(
            &*cache.get(key(42, 0)).unwrap().cmdline,
            "python3 -m http.server"
        );
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
        assert_eq!(*meta, expected);
        // Cached: deleting the directory does not change the answer.
        fs::remove_dir_all(root.path().join("2")).unwrap();
        assert_eq!(cache.get(key(2, 0)), Some(Arc::new(expected)));
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
        let mut cache = showing(root.path(), 100);
        let meta = cache.get(key(3, 0)).unwrap();
        assert_eq!(&*meta.cmdline, "x caf\u{fffd}");
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
        assert!(cache.get(key(77, 0)).is_some());
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
    fn lookups_beyond_the_cycle_budget_give_the_name_once_then_wait() {
        let procs: Vec<FakeProc> = (1..=3)
            .map(|pid| FakeProc {
                pid,
                start_ticks: 7,
                exe: Some("/bin/x"),
                cmdline: Some(b"x\0"),
                cgroup: None,
            })
            .collect();
        let root = tree(&procs);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        cache.per_cycle = 1;
        cache.start_cycle();
        let full = |m: &Budgeted| matches!(m, Budgeted::Meta(Some(meta)) if meta.exe.is_some());
        assert!(full(&cache.get_within_budget(key(1, 0), true)));
        let later = |comm: Option<&str>| Budgeted::Later {
            comm: comm.map(str::to_owned),
        };
        assert_eq!(
            cache.get_within_budget(key(2, 0), true),
            later(Some("fake"))
        );
        assert_eq!(
            cache.get_within_budget(key(2, 0), true),
            later(None),
            "named once"
        );
        assert_eq!(cache.get_within_budget(key(3, 0), false), later(None));
        // Cached entries cost nothing.
        assert!(full(&cache.get_within_budget(key(1, 0), true)));
        // A PID now owned by another process is known as such at once.
        let tick_ns = 1_000_000_000 / tps();
        let old = key(3, ticks_to_ns(7, tps()) + 100 * tick_ns);
        assert_eq!(cache.get_within_budget(old, true), Budgeted::Meta(None));
        assert!(cache.contains(&old));
        // The next cycle reads the next ones.
        cache.start_cycle();
        assert!(full(&cache.get_within_budget(key(2, 0), true)));
        assert_eq!(
            cache.get_within_budget(key(3, 0), true),
            later(Some("fake"))
        );
        cache.retain(|_| false);
        assert!(cache.pending.is_empty() && cache.is_empty());
        // After a burst, the pending set gives its memory back.
        cache.per_cycle = 0;
        cache.start_cycle();
        for pid in 1000..3000 {
            cache.get_within_budget(key(pid, 0), false);
        }
        let peak = cache.pending.capacity();
        for pid in 1010..3000 {
            cache.remove(&key(pid, 0));
        }
        cache.start_cycle();
        assert!(cache.pending.capacity() < peak / 4, "{peak}");
    }

    /// The bpf source's path: lookups left over go to processes reported
    /// earlier without metadata, as samples with no CPU time.
    #[test]
    fn pending_processes_are_read_with_the_lookups_left_over() {
        let procs: Vec<FakeProc> = (1..=5)
            .map(|pid| FakeProc {
                pid,
                start_ticks: 7,
                exe: Some("/bin/x"),
                cmdline: Some(b"x\0"),
                cgroup: Some("0::/system.slice/x.service\n"),
            })
            .collect();
        let root = tree(&procs);
        let mut cache = MetaCache::new(root.path().to_path_buf());
        cache.per_cycle = 2;
        cache.start_cycle();
        for pid in 1..=5 {
            cache.get_within_budget(key(pid, 0), true);
        }
        let mut out = Vec::new();
        cache.deliver_pending(&mut out);
        assert!(out.is_empty(), "no lookups left this cycle");
        assert_eq!(cache.pending(), 3);
        // The next cycle: one process runs and takes one lookup; one is left.
        cache.start_cycle();
        assert!(matches!(
            cache.get_within_budget(key(3, 0), true),
            Budgeted::Meta(Some(_))
        ));
        cache.deliver_pending(&mut out);
        assert_eq!(out.len(), 1);
        let sample = &out[0];
        assert!(sample.key.pid == 4 || sample.key.pid == 5);
        assert_eq!((sample.total_ns, sample.exited), (0, false));
        assert_eq!(sample.comm, "fake");
        let meta = sample.meta.as_ref().expect("metadata");
        assert_eq!(meta.cgroup_path.as_deref(), Some("/system.slice/x.service"));
        // One that exits meanwhile is forgotten, not read.
        let last = if sample.key.pid == 4 { 5 } else { 4 };
        cache.retain(|k| k.pid != last);
        cache.start_cycle();
        out.clear();
        cache.deliver_pending(&mut out);
        assert!(out.is_empty() && cache.pending() == 0);
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
        assert_eq!((&meta.comm, &meta.exe), (&None, &None));
    }

    /// scaph's own process: never its options (they may hold a token).
    #[test]
    fn real_proc_self() {
        let mut cache = showing(Path::new("/proc"), 4096);
        cache.options.own_cmdline = "scaph test".into();
        let pid = std::process::id();
        let meta = cache.get(key(pid, 0)).unwrap();
        assert_eq!(meta.exe.as_deref(), std::env::current_exe().ok().as_deref());
        assert_eq!(&*meta.cmdline, "scaph test");
    }

    fn showing(root: &Path, cmdline_chars: usize) -> MetaCache {
        let mut cache = MetaCache::new(root.to_path_buf());
        cache.set_options(MetaOptions {
            cmdline_chars,
            ..MetaOptions::default()
        });
        cache
    }

    /// A command line of 1 MiB costs at most the bound: one string, cut, marked.
    #[test]
    fn long_command_lines_are_read_and_kept_bounded() {
        let mut huge = b"bash\0-c\0sleep 120; :\0".to_vec();
        while huge.len() < 1 << 20 {
            huge.extend_from_slice(b"x\0");
        }
        let root = tree(&[FakeProc {
            pid: 5,
            start_ticks: 1,
            exe: Some("/bin/bash"),
            cmdline: Some(&huge),
            cgroup: None,
        }]);
        // 4096: all that was read (4096 bytes, the NULs now spaces), then the mark.
        for (chars, want_len) in [(0, 0), (20, 21), (100, 101), (4096, CMDLINE_READ_MAX + 1)] {
            let meta = showing(root.path(), chars).get(key(5, 0)).unwrap();
            assert_eq!(meta.cmdline.chars().count(), want_len, "kept at {chars}");
            if chars > 0 {
                assert!(meta.cmdline.starts_with("bash -c sleep 120; :"));
                assert!(
                    meta.cmdline.ends_with(label::CUT),
                    "{chars}: one visible mark"
                );
                assert_eq!(meta.cmdline.matches(label::CUT).count(), 1);
            }
        }
        // Short enough: whole, no mark; control characters replaced.
        let root = tree(&[FakeProc {
            pid: 6,
            start_ticks: 1,
            exe: None,
            cmdline: Some(b"a\0b\x1b[2J\0"),
            cgroup: None,
        }]);
        assert_eq!(
            &*showing(root.path(), 4096).get(key(6, 0)).unwrap().cmdline,
            "a b\u{fffd}[2J"
        );
    }

    #[test]
    fn long_paths_are_cut() {
        let exe = format!("/{}", "d".repeat(3000));
        let cgroup = format!("0::/user.slice/{}\n", "c".repeat(3000));
        let root = tree(&[FakeProc {
            pid: 8,
            start_ticks: 1,
            exe: Some(&exe),
            cmdline: Some(b"x\0"),
            cgroup: Some(&cgroup),
        }]);
        let meta = MetaCache::new(root.path().to_path_buf())
            .get(key(8, 0))
            .unwrap();
        let exe = meta.exe.as_ref().unwrap().to_string_lossy().into_owned();
        assert_eq!(exe.chars().count(), PATH_MAX_CHARS + 1);
        assert!(exe.ends_with(label::CUT));
        assert_eq!(
            meta.cgroup_path.as_ref().unwrap().chars().count(),
            PATH_MAX_CHARS + 1
        );
    }

    /// Uid × cgroup × argv: a VM only when it looks like one and an
    /// unprivileged user cannot have made it.
    #[test]
    fn vm_names_only_for_trusted_processes() {
        const LIBVIRT: &[u8] =
            b"/usr/bin/qemu-system-x86_64\0-name\0guest=prod-db,debug-threads=on\0-S\0";
        let machine =
            "0::/machine.slice/machine-qemu\\x2d1\\x2dprod\\x2ddb.scope/libvirt/emulator\n";
        let session = "0::/user.slice/user-1000.slice/session-1.scope\n";
        let long_name = format!("qemu-system-x86_64\0-name\0{}\0", "n".repeat(300));
        let table: &[(u32, &str, &[u8], Option<&str>)] = &[
            (0, session, LIBVIRT, Some("prod-db")),
            (64055, "0::/system.slice/libvirtd.service\n", LIBVIRT, Some("prod-db")),
            (64055, machine, LIBVIRT, Some("prod-db")),
            (1000, machine, LIBVIRT, Some("prod-db")),
            // exec -a qemu-system-x86_64 by an ordinary user
            (1000, session, LIBVIRT, None),
            (65534, "0::/user.slice/user-1000.slice/user@1000.service/machine.slice/machine-qemu-1-x.scope\n", LIBVIRT, None),
            // root, but not qemu
            (0, session, b"bash\0-c\0qemu-system-x86_64 -name guest=prod-db\0", None),
            (0, session, long_name.as_bytes(), None),
        ];
        for (n, &(uid, cgroup, cmdline, want)) in table.iter().enumerate() {
            let pid = 100 + u32::try_from(n).unwrap();
            let root = tree(&[FakeProc {
                pid,
                start_ticks: 1,
                exe: None,
                cmdline: Some(cmdline),
                cgroup: Some(cgroup),
            }]);
            let status =
                format!("Name:\tqemu\nUmask:\t0022\nUid:\t{uid}\t0\t0\t0\nGid:\t0\t0\t0\t0\n");
            fs::write(root.path().join(format!("{pid}/status")), status).unwrap();
            let mut cache = MetaCache::new(root.path().to_path_buf());
            cache.set_options(MetaOptions {
                vm_trust: VmTrust::uids([0, 64055]),
                ..MetaOptions::default()
            });
            let meta = cache.get(key(pid, 0)).unwrap();
            assert_eq!(
                meta.vm_name.as_deref(),
                want,
                "uid {uid}, {cgroup:?}, {:?}",
                String::from_utf8_lossy(cmdline)
            );
        }
    }

    /// A VM of `uid` at pid 50 in `cgroup`, read with PID 1 in the tree
    /// (`same_ns`: whether both have one PID namespace file).
    fn vm_in_namespace(uid: u32, same_ns: bool) -> Option<Arc<str>> {
        const LIBVIRT: &[u8] = b"qemu-system-x86_64\0-name\0guest=prod-db\0";
        let root = tree(&[
            FakeProc {
                pid: 1,
                start_ticks: 1,
                exe: None,
                cmdline: Some(b"init\0"),
                cgroup: Some("0::/init.scope\n"),
            },
            FakeProc {
                pid: 50,
                start_ticks: 1,
                exe: None,
                cmdline: Some(LIBVIRT),
                cgroup: Some("0::/system.slice/pve-guests.service\n"),
            },
        ]);
        fs::write(
            root.path().join("50/status"),
            format!("Uid:\t{uid}\t0\t0\t0\n"),
        )
        .unwrap();
        for pid in ["1", "50"] {
            fs::create_dir(root.path().join(pid).join("ns")).unwrap();
        }
        fs::write(root.path().join("1/ns/pid"), "").unwrap();
        if same_ns {
            fs::hard_link(root.path().join("1/ns/pid"), root.path().join("50/ns/pid")).unwrap();
        } else {
            fs::write(root.path().join("50/ns/pid"), "").unwrap();
        }
        MetaCache::new(root.path().to_path_buf())
            .get(key(50, 0))
            .unwrap()
            .vm_name
            .clone()
    }

    /// Root in another PID namespace (a container) is not the host's hypervisor.
    #[test]
    fn trust_by_uid_only_in_the_host_pid_namespace() {
        assert_eq!(vm_in_namespace(0, true).as_deref(), Some("prod-db"));
        assert_eq!(vm_in_namespace(0, false), None);
        assert_eq!(vm_in_namespace(1000, true), None);
    }

    /// The name comes from whole arguments only: a `-name` cut by the read bound is not taken.
    #[test]
    fn a_cut_vm_name_is_not_taken() {
        let mut cmdline = b"qemu-system-x86_64\0-m\0".to_vec();
        cmdline.resize(CMDLINE_READ_MAX - 10, b'a');
        cmdline.extend_from_slice(b"\0-name\0guest=averylongname\0");
        let root = tree(&[FakeProc {
            pid: 9,
            start_ticks: 1,
            exe: None,
            cmdline: Some(&cmdline),
            cgroup: None,
        }]);
        fs::write(root.path().join("9/status"), "Uid:\t0\t0\t0\t0\n").unwrap();
        assert_eq!(
            MetaCache::new(root.path().to_path_buf())
                .get(key(9, 0))
                .unwrap()
                .vm_name,
            None
        );
    }

    #[test]
    fn real_uid_is_the_first_field() {
        assert_eq!(
            parse_real_uid(b"Name:\tx\nUid:\t1000\t0\t0\t0\n"),
            Some(1000)
        );
        assert_eq!(parse_real_uid(b"Uid:  7 8 9 10\n"), Some(7));
        assert_eq!(parse_real_uid(b"Uid:\n"), None);
        assert_eq!(parse_real_uid(b"garbage"), None);
    }
}
