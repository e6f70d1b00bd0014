//! CPU time of every process from `/proc`, for hosts where the kernel program
//! cannot be loaded.
//!
//! Each sample reads `/proc/stat` (idle time per CPU) and `/proc/PID/stat` of
//! every process, and reports what changed since the previous sample.
//!
//! # Resolution and limits
//!
//! - The CPU time of a process is `utime + stime` of `/proc/PID/stat`: whole
//!   thread group, dead threads included, in clock ticks (`USER_HZ`, 10 ms at
//!   the usual 100 Hz). The kernel derives both from the exact runtime and
//!   truncates each to a tick, so one interval's figure is off by less than two
//!   ticks, and the error does not accumulate over intervals.
//! - A process is read once per sample. The CPU time it uses between its last
//!   reading and its exit is lost: its final sample (`exited: true`) has
//!   `total_ns == 0`. A process that starts and is reaped between two samples
//!   is never seen at all (its time only shows up in its parent's `cutime`).
//! - The CPUs a process ran on are unknown: `per_cpu_ns` stays empty.
//! - The start time (the second half of [`ProcessKey`]) has tick resolution.

use std::{
    collections::{hash_map::Entry, HashMap},
    ffi::OsStr,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::Instant,
};

use super::{
    meta::{Budgeted, MetaCache},
    pidstat::{
        ns_to_ticks, parse_stat, parse_u64, ticks_per_second, ticks_to_ns, StatFields, PID_STAT,
    },
    CpuSample, CpuTimeError, CpuTimeMethod, CpuTimeSource, LossCounters, PerCpu, ProcessKey,
    ProcessSample,
};
use crate::fsroot::{
    cpulist,
    read::{read_small_file, Extent, ReadFailure},
};

/// `/proc/stat`: the `cpuN` lines come first; the rest (interrupt counts,
/// large on big hosts) is not needed.
const PROC_STAT: Extent = Extent {
    limit: 1024 * 1024,
    single_line: false,
};

/// Per-process CPU time from `/proc/PID/stat`. See the module docs for what
/// this cannot see.
#[derive(Debug)]
pub struct ProcfsSource {
    root: PathBuf,
    ticks_per_second: u64,
    meta: MetaCache,
    processes: Processes,
    /// When the previous sample was taken; `None` before the baseline.
    previous: Option<Previous>,
    /// Idle + iowait ticks per CPU at the previous sample (`None`: offline).
    idle_ticks: Vec<Option<u64>>,
    /// Reused read buffers and path, to keep allocations per cycle low.
    buf: Vec<u8>,
    path: PathBuf,
}

/// The clocks at the start of a sample.
#[derive(Clone, Copy, Debug)]
struct Previous {
    at: Instant,
    /// `CLOCK_BOOTTIME` in clock ticks: the clock of `/proc/PID/stat` start times.
    boot_ticks: u64,
}

/// The processes seen at the previous sample, by PID.
#[derive(Debug, Default)]
struct Processes {
    by_pid: HashMap<u32, Tracked>,
    /// Incremented each sample; entries not stamped with it are gone.
    generation: u64,
}

/// What is known about a live process between samples.
#[derive(Debug)]
struct Tracked {
    start_ticks: u64,
    /// `utime + stime` at the last reading (never decreases).
    cpu_ticks: u64,
    comm: String,
    /// The generation of the sample that last saw this process.
    seen: u64,
}

/// Whether a process seen for the first time counts its whole CPU time.
#[derive(Clone, Copy, Debug)]
enum NewProcesses {
    /// First sample: everything is baseline, nothing is reported.
    Baseline,
    /// Processes that started at or after this boot-time tick (the previous
    /// sample) report all their CPU time; older ones were missed and become
    /// baseline.
    CountIfStartedSince(u64),
}

impl ProcfsSource {
    /// A source reading below `proc_root` (normally `/proc`).
    ///
    /// # Errors
    ///
    /// [`CpuTimeError::Read`] when `<proc_root>/stat` cannot be read or
    /// `proc_root` cannot be listed (no procfs there).
    pub fn new(proc_root: PathBuf) -> Result<Self, CpuTimeError> {
        let mut buf = Vec::with_capacity(4096);
        read_idle_ticks(&proc_root.join("stat"), &mut buf)?;
        std::fs::read_dir(&proc_root).map_err(|source| CpuTimeError::Read {
            path: proc_root.clone(),
            source,
        })?;
        Ok(Self {
            meta: MetaCache::new(proc_root.clone()),
            path: PathBuf::with_capacity(proc_root.as_os_str().len() + 32),
            root: proc_root,
            ticks_per_second: ticks_per_second(),
            processes: Processes::default(),
            previous: None,
            idle_ticks: Vec::new(),
            buf,
        })
    }

    /// Takes a sample at `now` (monotonic) and `boot_ns` (`CLOCK_BOOTTIME`).
    /// Separate from [`CpuTimeSource::sample`] so tests can choose the clocks.
    fn sample_at(&mut self, now: Instant, boot_ns: u64) -> Result<CpuSample, CpuTimeError> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.sample_with(&mut buf, now, boot_ns);
        self.buf = buf;
        result
    }

    fn sample_with(
        &mut self,
        buf: &mut Vec<u8>,
        now: Instant,
        boot_ns: u64,
    ) -> Result<CpuSample, CpuTimeError> {
        // Everything that can fail comes first, so that a failed sample leaves
        // the state as it was and the next one covers both intervals.
        let idle_now = read_idle_ticks(&self.root.join("stat"), buf)?;
        let dir = std::fs::read_dir(&self.root).map_err(|source| CpuTimeError::Read {
            path: self.root.clone(),
            source,
        })?;

        let policy = match self.previous {
            None => NewProcesses::Baseline,
            Some(previous) => NewProcesses::CountIfStartedSince(previous.boot_ticks),
        };
        let mut processes = Vec::new();
        self.processes.generation += 1;
        for entry in dir {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(pid) = parse_pid(&name) else {
                continue;
            };
            self.path.clone_from(&self.root);
            self.path.push(&name);
            self.path.push("stat");
            self.read_process(pid, buf, policy, &mut processes);
        }
        self.processes
            .collect_exited(self.ticks_per_second, &mut processes);

        let idle_ns = self.idle_delta(idle_now, matches!(policy, NewProcesses::Baseline));
        let interval = self
            .previous
            .map(|previous| now.saturating_duration_since(previous.at))
            .unwrap_or_default();
        self.previous = Some(Previous {
            at: now,
            boot_ticks: ns_to_ticks(boot_ns, self.ticks_per_second),
        });
        self.attach_meta(&mut processes);
        processes.sort_unstable_by_key(|p| p.key);
        Ok(CpuSample {
            interval,
            processes,
            idle_ns,
            losses: LossCounters::default(),
        })
    }

    /// Reads `self.path` (the `stat` of `pid`) and records it; skips the
    /// process when it vanished or the file is unreadable or garbage.
    fn read_process(
        &mut self,
        pid: u32,
        buf: &mut Vec<u8>,
        policy: NewProcesses,
        out: &mut Vec<ProcessSample>,
    ) {
        match read_small_file(&self.path, buf, PID_STAT) {
            Ok(()) => {}
            Err(ReadFailure::Gone) => return,
            Err(ReadFailure::Other(error)) => {
                log::debug!("reading {}: {error}", self.path.display());
                self.processes.keep(pid);
                return;
            }
        }
        match parse_stat(buf) {
            Some(stat) if stat.pid == pid => {
                self.processes
                    .observe(&stat, policy, self.ticks_per_second, out);
            }
            _ => {
                log::debug!("unparsable {}", self.path.display());
                self.processes.keep(pid);
            }
        }
    }

    /// Idle ns per CPU since the previous sample (zeros for the baseline and for
    /// CPUs that were offline), and remembers `now` for the next one.
    fn idle_delta(&mut self, now: Vec<Option<u64>>, baseline: bool) -> Vec<u64> {
        let mut idle_ns = vec![0; now.len()];
        let mut next = now;
        if !baseline {
            for (cpu, current) in next.iter_mut().enumerate() {
                let (Some(cur), Some(Some(prev))) = (*current, self.idle_ticks.get(cpu)) else {
                    continue;
                };
                // iowait may go backwards (proc(5)); never report a negative
                // delta, and keep the higher figure so nothing counts twice.
                idle_ns[cpu] = ticks_to_ns(cur.saturating_sub(*prev), self.ticks_per_second);
                *current = Some(cur.max(*prev));
            }
        }
        self.idle_ticks = next;
        idle_ns
    }

    /// Fills `meta` of live processes (read once per process, then cached;
    /// the biggest CPU users first, see [`super::meta::LOOKUPS_PER_CYCLE`])
    /// and forgets the metadata of exited ones. A process left for a later
    /// cycle already has its name from `stat`; the lookups left over go to
    /// such processes of earlier cycles, which get a sample with no CPU time
    /// that carries their metadata.
    fn attach_meta(&mut self, processes: &mut Vec<ProcessSample>) {
        self.meta.start_cycle();
        let mut live: Vec<usize> = Vec::with_capacity(processes.len());
        for (i, sample) in processes.iter().enumerate() {
            if sample.exited {
                self.meta.remove(&sample.key);
            } else {
                live.push(i);
            }
        }
        live.sort_by_key(|&i| std::cmp::Reverse(processes[i].total_ns));
        for i in live {
            let sample = &mut processes[i];
            if let Budgeted::Meta(meta) = self.meta.get_within_budget(sample.key, false) {
                sample.meta = meta;
            }
        }
        self.meta.deliver_pending(processes);
    }
}

impl CpuTimeSource for ProcfsSource {
    fn method(&self) -> CpuTimeMethod {
        CpuTimeMethod::Procfs
    }

    fn sample(&mut self) -> Result<CpuSample, CpuTimeError> {
        self.sample_at(Instant::now(), boottime_ns())
    }

    fn set_meta_options(&mut self, options: super::meta::MetaOptions) {
        self.meta.set_options(options);
    }
}

impl Processes {
    /// Records one reading of a process, pushing a sample when it used CPU
    /// (and an exited sample for the previous owner of a reused PID).
    fn observe(
        &mut self,
        stat: &StatFields<'_>,
        policy: NewProcesses,
        ticks_per_second: u64,
        out: &mut Vec<ProcessSample>,
    ) {
        let generation = self.generation;
        let delta_ticks = match self.by_pid.entry(stat.pid) {
            Entry::Occupied(mut entry) if entry.get().start_ticks == stat.start_ticks => {
                let tracked = entry.get_mut();
                tracked.seen = generation;
                update_comm(&mut tracked.comm, stat.comm);
                let delta = stat.cpu_ticks.saturating_sub(tracked.cpu_ticks);
                tracked.cpu_ticks = tracked.cpu_ticks.max(stat.cpu_ticks);
                delta
            }
            Entry::Occupied(mut entry) => {
                // PID reused: the old process exited after its last reading.
                let old = std::mem::replace(entry.get_mut(), Tracked::new(stat, generation));
                out.push(exited_sample(
                    stat.pid,
                    old.start_ticks,
                    old.comm,
                    ticks_per_second,
                ));
                new_process_ticks(stat, policy)
            }
            Entry::Vacant(entry) => {
                entry.insert(Tracked::new(stat, generation));
                new_process_ticks(stat, policy)
            }
        };
        if delta_ticks > 0 {
            if let Some(tracked) = self.by_pid.get(&stat.pid) {
                out.push(process_sample(
                    process_key(stat.pid, tracked.start_ticks, ticks_per_second),
                    tracked.comm.clone(),
                    ticks_to_ns(delta_ticks, ticks_per_second),
                    false,
                ));
            }
        }
    }

    /// Keeps a process whose `stat` could not be read this time (not known to
    /// be gone): it is not reported as exited.
    fn keep(&mut self, pid: u32) {
        if let Some(tracked) = self.by_pid.get_mut(&pid) {
            tracked.seen = self.generation;
        }
    }

    /// Pushes an exited sample for every process not seen in this sample, and
    /// forgets them.
    fn collect_exited(&mut self, ticks_per_second: u64, out: &mut Vec<ProcessSample>) {
        let generation = self.generation;
        self.by_pid.retain(|&pid, tracked| {
            if tracked.seen == generation {
                return true;
            }
            let comm = std::mem::take(&mut tracked.comm);
            out.push(exited_sample(
                pid,
                tracked.start_ticks,
                comm,
                ticks_per_second,
            ));
            false
        });
        crate::util::shrink_if_sparse(&mut self.by_pid);
    }
}

impl Tracked {
    fn new(stat: &StatFields<'_>, generation: u64) -> Self {
        Self {
            start_ticks: stat.start_ticks,
            cpu_ticks: stat.cpu_ticks,
            comm: String::from_utf8_lossy(stat.comm).into_owned(),
            seen: generation,
        }
    }
}

/// The CPU ticks a process seen for the first time reports: all of them if it
/// started since the previous sample, else none (it is the baseline).
fn new_process_ticks(stat: &StatFields<'_>, policy: NewProcesses) -> u64 {
    match policy {
        NewProcesses::CountIfStartedSince(since) if stat.start_ticks >= since => stat.cpu_ticks,
        _ => 0,
    }
}

/// The last sample of a process that is gone. Its CPU time after its last
/// reading is unknown, hence `total_ns == 0`.
fn exited_sample(pid: u32, start_ticks: u64, comm: String, ticks_per_second: u64) -> ProcessSample {
    process_sample(
        process_key(pid, start_ticks, ticks_per_second),
        comm,
        0,
        true,
    )
}

/// A sample as procfs makes them: no cgroup id, no per-CPU split; `meta` is
/// filled in later (only for live processes).
fn process_sample(key: ProcessKey, comm: String, total_ns: u64, exited: bool) -> ProcessSample {
    ProcessSample {
        key,
        comm,
        cgroup_id: None,
        meta: None,
        per_cpu_ns: PerCpu::default(),
        total_ns,
        exited,
    }
}

fn process_key(pid: u32, start_ticks: u64, ticks_per_second: u64) -> ProcessKey {
    ProcessKey {
        pid,
        start_ns: ticks_to_ns(start_ticks, ticks_per_second),
    }
}

/// Replaces `comm` when it changed (exec, `PR_SET_NAME`), without allocating
/// when it did not.
fn update_comm(comm: &mut String, raw: &[u8]) {
    let new = String::from_utf8_lossy(raw);
    if *comm != new {
        *comm = new.into_owned();
    }
}

/// A directory name of `/proc` that is a PID.
fn parse_pid(name: &OsStr) -> Option<u32> {
    u32::try_from(parse_u64(name.as_bytes())?).ok()
}

/// `CLOCK_BOOTTIME` in ns: the clock `/proc/PID/stat` start times count in.
fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    if rc != 0 {
        // Then every process seen for the first time counts as new.
        log::debug!(
            "clock_gettime(CLOCK_BOOTTIME): {}",
            io::Error::last_os_error()
        );
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Idle + iowait ticks per CPU from the `cpuN` lines of `/proc/stat`, indexed
/// by CPU number (`None` for numbers without a line: offline CPUs).
fn read_idle_ticks(path: &Path, buf: &mut Vec<u8>) -> Result<Vec<Option<u64>>, CpuTimeError> {
    match read_small_file(path, buf, PROC_STAT) {
        Ok(()) => Ok(parse_idle_ticks(buf)),
        Err(ReadFailure::Gone) => Err(CpuTimeError::Read {
            path: path.to_path_buf(),
            source: io::ErrorKind::NotFound.into(),
        }),
        Err(ReadFailure::Other(source)) => Err(CpuTimeError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Most CPU numbers accepted from `/proc/stat` (garbage guard for the vector size).
pub(crate) const MAX_CPUS: usize = cpulist::MAX_CPUS as usize;

/// See [`read_idle_ticks`]. Malformed lines are skipped.
pub(crate) fn parse_idle_ticks(buf: &[u8]) -> Vec<Option<u64>> {
    let mut idle = Vec::new();
    for line in buf.split(|&b| b == b'\n') {
        let mut fields = line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty());
        let Some(cpu) = fields.next().and_then(|name| name.strip_prefix(b"cpu")) else {
            continue;
        };
        // "cpu" alone is the all-CPU line.
        let Some(cpu) = parse_u64(cpu).and_then(|n| usize::try_from(n).ok()) else {
            continue;
        };
        if cpu >= MAX_CPUS {
            continue;
        }
        // user nice system idle iowait ...; iowait is missing on very old kernels.
        let Some(ticks) = fields.nth(3).and_then(parse_u64) else {
            log::debug!("unparsable /proc/stat line for cpu{cpu}");
            continue;
        };
        let iowait = fields.next().and_then(parse_u64).unwrap_or(0);
        if idle.len() <= cpu {
            idle.resize(cpu + 1, None);
        }
        idle[cpu] = Some(ticks.saturating_add(iowait));
    }
    idle
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, fs, os::unix::fs::symlink, time::Duration};

    use tempfile::TempDir;

    use super::*;
    use crate::cputime::meta::MetaOptions;

    const SEC: u64 = 1_000_000_000;

    fn tps() -> u64 {
        ticks_per_second()
    }

    fn ns(ticks: u64) -> u64 {
        ticks_to_ns(ticks, tps())
    }

    /// A boot time (ns) at tick `ticks`.
    fn boot_at(ticks: u64) -> u64 {
        ns(ticks)
    }

    /// One row of a fake process table.
    #[derive(Clone, Copy)]
    struct Row<'a> {
        pid: u32,
        comm: &'a str,
        utime: u64,
        stime: u64,
        start: u64,
    }

    fn stat_line(r: &Row<'_>) -> String {
        format!(
            "{} ({}) R 1 1 1 0 -1 4194560 100 0 0 0 {} {} 0 0 20 0 1 0 {} 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n",
            r.pid, r.comm, r.utime, r.stime, r.start
        )
    }

    /// A fake `/proc` tree.
    struct FakeProc {
        dir: TempDir,
    }

    impl FakeProc {
        fn new(cpus: &[(usize, u64, u64)]) -> Self {
            let fake = Self {
                dir: TempDir::new().unwrap(),
            };
            fake.cpus(cpus);
            fake
        }

        fn root(&self) -> PathBuf {
            self.dir.path().to_path_buf()
        }

        /// `/proc/stat` with `(cpu, idle, iowait)` rows.
        fn cpus(&self, cpus: &[(usize, u64, u64)]) {
            let mut s = String::from("cpu  1 2 3 4 5 6 7 8 0 0\n");
            for (cpu, idle, iowait) in cpus {
                writeln!(s, "cpu{cpu} 10 0 20 {idle} {iowait} 0 1 0 0 0").unwrap();
            }
            s.push_str("intr 12345 0 0 1\nctxt 999\nbtime 1700000000\nprocs_running 1\n");
            fs::write(self.dir.path().join("stat"), s).unwrap();
        }

        fn set(&self, r: &Row<'_>) {
            let dir = self.dir.path().join(r.pid.to_string());
            if !dir.exists() {
                fs::create_dir(&dir).unwrap();
                fs::write(
                    dir.join("cmdline"),
                    format!("/usr/bin/{}\0--flag\0", r.comm),
                )
                .unwrap();
                symlink(format!("/usr/bin/{}", r.comm), dir.join("exe")).unwrap();
                fs::write(dir.join("cgroup"), "0::/system.slice/test.service\n").unwrap();
            }
            fs::write(dir.join("stat"), stat_line(r)).unwrap();
        }

        fn set_all(&self, rows: &[Row<'_>]) {
            for r in rows {
                self.set(r);
            }
        }

        fn remove(&self, pid: u32) {
            fs::remove_dir_all(self.dir.path().join(pid.to_string())).unwrap();
        }
    }

    fn row(pid: u32, comm: &str, utime: u64, stime: u64, start: u64) -> Row<'_> {
        Row {
            pid,
            comm,
            utime,
            stime,
            start,
        }
    }

    fn find(sample: &CpuSample, pid: u32) -> Vec<&ProcessSample> {
        sample
            .processes
            .iter()
            .filter(|p| p.key.pid == pid)
            .collect()
    }

    #[test]
    fn new_fails_without_proc_stat() {
        let dir = TempDir::new().unwrap();
        let err = ProcfsSource::new(dir.path().to_path_buf()).unwrap_err();
        assert!(err.to_string().contains("stat"), "{err}");
        let err = ProcfsSource::new(dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn first_sample_is_baseline() {
        let fake = FakeProc::new(&[(0, 100, 5), (1, 200, 0)]);
        fake.set_all(&[row(1, "init", 50, 20, 1), row(300, "busy", 1000, 10, 500)]);
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        assert_eq!(src.method(), CpuTimeMethod::Procfs);
        let s = src.sample_at(Instant::now(), boot_at(1000)).unwrap();
        assert_eq!(s.interval, Duration::ZERO);
        assert!(s.processes.is_empty());
        assert_eq!(s.idle_ns, [0, 0]);
        assert_eq!(s.losses, LossCounters::default());
    }

    #[test]
    fn deltas_across_samples() {
        let fake = FakeProc::new(&[(0, 100, 5), (1, 200, 0)]);
        fake.set_all(&[
            row(1, "init", 50, 20, 1),
            row(300, "busy", 1000, 10, 500),
            row(301, "idle one", 3, 3, 600),
        ]);
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        src.set_meta_options(MetaOptions {
            cmdline_chars: 100,
            ..MetaOptions::default()
        });
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();

        fake.set_all(&[
            row(1, "init", 51, 20, 1),
            row(300, "busy", 1090, 15, 500),
            row(301, "idle one", 3, 3, 600),
        ]);
        fake.cpus(&[(0, 150, 7), (1, 300, 0)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(1100))
            .unwrap();
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.idle_ns, [ns(52), ns(100)]);
        assert_eq!(s.processes.len(), 2, "{:?}", s.processes);
        let busy = find(&s, 300)[0];
        assert_eq!(
            busy.key,
            ProcessKey {
                pid: 300,
                start_ns: ns(500)
            }
        );
        assert_eq!(busy.total_ns, ns(95));
        assert_eq!(busy.comm, "busy");
        assert!(busy.per_cpu_ns.is_empty());
        assert!(!busy.exited);
        assert_eq!(busy.cgroup_id, None);
        let meta = busy.meta.as_ref().unwrap();
        assert_eq!(
            meta.exe.as_deref(),
            Some(std::path::Path::new("/usr/bin/busy"))
        );
        assert_eq!(&*meta.cmdline, "/usr/bin/busy --flag");
        assert_eq!(
            meta.cgroup_path.as_deref(),
            Some("/system.slice/test.service")
        );
        assert_eq!(find(&s, 1)[0].total_ns, ns(1));
        assert!(find(&s, 301).is_empty(), "no CPU used: not reported");

        // Counters never go backwards, and the next delta starts from the high mark.
        fake.set(&row(300, "busy", 1080, 15, 500));
        let s = src
            .sample_at(t0 + Duration::from_secs(2), boot_at(1200))
            .unwrap();
        assert!(find(&s, 300).is_empty());
        fake.set(&row(300, "renamed", 1100, 15, 500));
        let s = src
            .sample_at(t0 + Duration::from_secs(3), boot_at(1300))
            .unwrap();
        assert_eq!(find(&s, 300)[0].total_ns, ns(10));
        assert_eq!(find(&s, 300)[0].comm, "renamed");
    }

    #[test]
    fn metadata_of_the_biggest_users_comes_first_and_the_rest_follows() {
        let fake = FakeProc::new(&[(0, 100, 5)]);
        fake.set_all(&[row(300, "small", 10, 0, 500), row(301, "big", 10, 0, 500)]);
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        src.meta.set_lookups_per_cycle(1);
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();
        fake.set_all(&[row(300, "small", 11, 0, 500), row(301, "big", 90, 0, 500)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(1100))
            .unwrap();
        assert!(find(&s, 301)[0].meta.is_some(), "the biggest first");
        let small = find(&s, 300)[0];
        assert_eq!((small.meta.as_ref(), small.comm.as_str()), (None, "small"));
        fake.set_all(&[row(300, "small", 12, 0, 500), row(301, "big", 95, 0, 500)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(2), boot_at(1200))
            .unwrap();
        assert!(find(&s, 300)[0].meta.is_some() && find(&s, 301)[0].meta.is_some());
    }

    /// More processes than a cycle's lookups, that run once and then sleep:
    /// the lookups left over read them anyway, and the table fills in within
    /// ceil(N / budget) cycles, never more than the budget per cycle.
    #[test]
    fn sleeping_processes_get_their_metadata_with_the_lookups_left_over() {
        const N: u32 = 7;
        const BUDGET: usize = 3;
        let fake = FakeProc::new(&[(0, 100, 5)]);
        let names: Vec<String> = (0..N).map(|i| format!("p{i}")).collect();
        let rows = |ticks: u64| -> Vec<Row<'_>> {
            (0..N)
                .map(|i| row(1000 + i, &names[i as usize], ticks, 0, 500))
                .collect()
        };
        fake.set_all(&rows(10));
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        src.meta.set_lookups_per_cycle(BUDGET);
        let mut table = crate::processes::ProcessTable::default();
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();
        // Every process runs once, then none runs again.
        fake.set_all(&rows(20));
        let cycles = (N as usize).div_ceil(BUDGET);
        for cycle in 1..=cycles {
            let at = t0 + Duration::from_secs(cycle as u64);
            let s = src
                .sample_at(at, boot_at(1000 + 100 * cycle as u64))
                .unwrap();
            let read = s.processes.iter().filter(|p| p.meta.is_some()).count();
            assert!(read <= BUDGET, "cycle {cycle}: {read} lookups");
            table.update_cpu(&s, Duration::from_secs(cycle as u64));
            assert!(s.processes.is_sorted_by_key(|p| p.key));
        }
        assert_eq!(table.len(), N as usize);
        for (key, info) in table.iter() {
            let meta = info.meta.as_ref().unwrap_or_else(|| panic!("{key:?}"));
            assert!(meta.exe.is_some() && meta.cgroup_path.is_some(), "{key:?}");
            assert_eq!(info.cpu_ns_total, ns(10), "{key:?}: CPU time once");
        }
        assert_eq!(src.meta.pending(), 0);
        let s = src
            .sample_at(t0 + Duration::from_secs(10), boot_at(2000))
            .unwrap();
        assert!(s.processes.is_empty(), "nothing left to deliver");
    }

    #[test]
    fn process_that_disappears_is_reported_once_as_exited() {
        let fake = FakeProc::new(&[(0, 100, 0)]);
        fake.set_all(&[row(1, "init", 50, 20, 1), row(400, "short", 10, 0, 900)]);
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();
        fake.set(&row(400, "short", 30, 5, 900));
        let s = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(1100))
            .unwrap();
        assert_eq!(find(&s, 400)[0].total_ns, ns(25));
        assert_eq!(src.meta.len(), 1);

        fake.remove(400);
        let s = src
            .sample_at(t0 + Duration::from_secs(2), boot_at(1200))
            .unwrap();
        let gone = find(&s, 400);
        assert_eq!(gone.len(), 1);
        assert!(gone[0].exited);
        assert_eq!(
            gone[0].key,
            ProcessKey {
                pid: 400,
                start_ns: ns(900)
            }
        );
        assert_eq!(gone[0].comm, "short");
        assert_eq!(
            gone[0].total_ns, 0,
            "time after the last reading is unknown"
        );
        assert_eq!(gone[0].meta, None);
        assert!(src.meta.is_empty(), "metadata forgotten");
        assert_eq!(src.processes.by_pid.len(), 1, "process forgotten");

        let s = src
            .sample_at(t0 + Duration::from_secs(3), boot_at(1300))
            .unwrap();
        assert!(find(&s, 400).is_empty());
    }

    #[test]
    fn pid_reuse_gives_exit_and_new_key() {
        let fake = FakeProc::new(&[(0, 100, 0)]);
        fake.set(&row(500, "old", 100, 0, 700));
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();

        // PID 500 is now another process, started after the previous sample.
        fake.set(&row(500, "new", 40, 2, 1050));
        let s = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(1100))
            .unwrap();
        let samples = find(&s, 500);
        assert_eq!(samples.len(), 2, "{samples:?}");
        let old = samples.iter().find(|p| p.exited).unwrap();
        assert_eq!(old.key.start_ns, ns(700));
        assert_eq!(old.comm, "old");
        let new = samples.iter().find(|p| !p.exited).unwrap();
        assert_eq!(new.key.start_ns, ns(1050));
        assert_eq!(new.comm, "new");
        assert_eq!(
            new.total_ns,
            ns(42),
            "started since the previous sample: all its time counts"
        );
    }

    #[test]
    fn new_process_before_previous_sample_is_baseline() {
        let fake = FakeProc::new(&[(0, 100, 0)]);
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();
        // Missed at the previous sample (e.g. unreadable then), started long ago.
        fake.set(&row(600, "missed", 500, 0, 10));
        // Started exactly in the previous sample's tick: counts.
        fake.set(&row(601, "fresh", 7, 0, 1000));
        let s = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(1100))
            .unwrap();
        assert!(find(&s, 600).is_empty());
        assert_eq!(find(&s, 601)[0].total_ns, ns(7));
        fake.set(&row(600, "missed", 510, 0, 10));
        let s = src
            .sample_at(t0 + Duration::from_secs(2), boot_at(1200))
            .unwrap();
        assert_eq!(find(&s, 600)[0].total_ns, ns(10));
    }

    #[test]
    fn garbage_stat_is_skipped_without_panic() {
        let fake = FakeProc::new(&[(0, 100, 0)]);
        fake.set_all(&[row(1, "init", 50, 20, 1), row(700, "ok", 1, 1, 5)]);
        for (pid, content) in [
            (701, &b"(((("[..]),
            (702, b"702 (x) S 1 2 3"),
            (703, b"\xff\x00\x01garbage)"),
            (704, b""),
            (
                705,
                b"999 (wrong pid) S 1 1 1 0 -1 0 0 0 0 0 7 8 0 0 20 0 3 0 5",
            ),
        ] {
            let dir = fake.root().join(pid.to_string());
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("stat"), content).unwrap();
        }
        // Not processes: ignored.
        fs::create_dir(fake.root().join("self")).unwrap();
        fs::create_dir(fake.root().join("99999999999")).unwrap();
        fs::write(fake.root().join("uptime"), "1.0 1.0").unwrap();
        // A process directory without stat (vanished mid-read).
        fs::create_dir(fake.root().join("706")).unwrap();

        let mut src = ProcfsSource::new(fake.root()).unwrap();
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();
        fake.set_all(&[row(1, "init", 60, 20, 1), row(700, "ok", 2, 1, 5)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(1100))
            .unwrap();
        let pids: Vec<u32> = s.processes.iter().map(|p| p.key.pid).collect();
        assert_eq!(pids, [1, 700]);

        // A tracked process whose stat turns to garbage is kept, not "exited".
        fs::write(fake.root().join("700/stat"), b"garbage").unwrap();
        let s = src
            .sample_at(t0 + Duration::from_secs(2), boot_at(1200))
            .unwrap();
        assert!(find(&s, 700).is_empty());
        fake.set(&row(700, "ok", 5, 1, 5));
        let s = src
            .sample_at(t0 + Duration::from_secs(3), boot_at(1300))
            .unwrap();
        assert_eq!(find(&s, 700)[0].total_ns, ns(3));
    }

    #[test]
    fn idle_per_cpu_with_gap_and_hotplug() {
        // cpu2 is offline: a gap.
        let fake = FakeProc::new(&[(0, 1000, 10), (1, 2000, 0), (3, 500, 1)]);
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        let t0 = Instant::now();
        assert_eq!(src.sample_at(t0, boot_at(1)).unwrap().idle_ns, [0, 0, 0, 0]);

        // cpu2 comes online (no previous figure: 0); iowait on cpu0 goes
        // backwards but idle + iowait does not.
        fake.cpus(&[(0, 1100, 8), (1, 2050, 0), (2, 40, 0), (3, 530, 1)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(101))
            .unwrap();
        assert_eq!(s.idle_ns, [ns(98), ns(50), 0, ns(30)]);

        // cpu3 goes offline: the vector shrinks to the highest online CPU.
        // cpu1's idle + iowait goes backwards: 0, and the high mark stays.
        fake.cpus(&[(0, 1200, 8), (1, 2040, 0), (2, 50, 0)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(2), boot_at(201))
            .unwrap();
        assert_eq!(s.idle_ns, [ns(100), 0, ns(10)]);
        fake.cpus(&[(0, 1200, 8), (1, 2060, 0), (2, 50, 0)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(3), boot_at(301))
            .unwrap();
        assert_eq!(s.idle_ns, [0, ns(10), 0]);
    }

    #[test]
    fn idle_parser_skips_garbage() {
        let idle = parse_idle_ticks(
            b"cpu 1 2 3 4 5\ncpu0 1 2 3 4 5 6\ncpux 1 2 3 4\ncpu1 1 2\ncpu2 1 2 3 4\ncpu99999999 1 2 3 4 5\n\xff\xfe\ncpu3 0 0 0 x 1\n",
        );
        assert_eq!(idle, [Some(9), None, Some(4)]);
        assert!(parse_idle_ticks(b"").is_empty());
    }

    #[test]
    fn failed_sample_keeps_state() {
        let fake = FakeProc::new(&[(0, 100, 0)]);
        fake.set(&row(800, "p", 10, 0, 5));
        let mut src = ProcfsSource::new(fake.root()).unwrap();
        let t0 = Instant::now();
        src.sample_at(t0, boot_at(1000)).unwrap();
        fs::remove_file(fake.root().join("stat")).unwrap();
        fake.set(&row(800, "p", 20, 0, 5));
        let err = src
            .sample_at(t0 + Duration::from_secs(1), boot_at(1100))
            .unwrap_err();
        assert!(
            matches!(err, CpuTimeError::Read { ref path, .. } if path.ends_with("stat")),
            "{err}"
        );
        fake.cpus(&[(0, 300, 0)]);
        let s = src
            .sample_at(t0 + Duration::from_secs(2), boot_at(1200))
            .unwrap();
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(find(&s, 800)[0].total_ns, ns(10));
        assert_eq!(s.idle_ns, [ns(200)]);
    }

    /// A child burning CPU, measured by this source on the real `/proc` and by
    /// the kernel's own accounting (`wait4` rusage) of the same child.
    #[test]
    fn real_proc_child_cpu_time() {
        let mut src = ProcfsSource::new(PathBuf::from("/proc")).unwrap();
        src.sample().unwrap();

        #[allow(
            clippy::zombie_processes,
            reason = "reaped by wait4 below, which also gives its rusage"
        )]
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
            .spawn()
            .unwrap();
        let pid = child.id();
        let pid_t = libc::pid_t::try_from(pid).unwrap();

        // Wait for the exit without reaping: the zombie keeps its CPU figures.
        // SAFETY: plain syscall wrappers with valid pointers.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child; `info` is a live local the kernel fills.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &raw mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        let s = src.sample().unwrap();
        assert!(s.interval > Duration::ZERO);
        assert!(!s.idle_ns.is_empty());
        let ours = find(&s, pid);
        assert_eq!(
            ours.len(),
            1,
            "the child started after the baseline: {ours:?}"
        );
        assert_eq!(ours[0].comm, "sh");
        let measured = ours[0].total_ns;

        let mut status = 0;
        // SAFETY: rusage is plain data; all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid_t` is our unreaped child; the pointers are to live locals.
        let reaped = unsafe { libc::wait4(pid_t, &raw mut status, 0, &raw mut usage) };
        assert_eq!(reaped, pid_t);
        let tv_ns = |tv: libc::timeval| {
            u64::try_from(tv.tv_sec).unwrap() * SEC + u64::try_from(tv.tv_usec).unwrap() * 1000
        };
        let real = tv_ns(usage.ru_utime) + tv_ns(usage.ru_stime);
        let tick = SEC / tps();
        assert!(
            real >= 5 * tick,
            "the child should burn some CPU, used {real} ns"
        );
        // utime and stime are each truncated to a tick.
        assert!(
            measured.abs_diff(real) < 2 * tick,
            "procfs {measured} ns vs rusage {real} ns"
        );

        // Reaped: reported once as exited.
        let s = src.sample().unwrap();
        let ours = find(&s, pid);
        assert!(ours.len() == 1 && ours[0].exited, "{ours:?}");
    }
}
