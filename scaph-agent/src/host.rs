//! Host and self statistics that Scaphandre exposed next to energy (load,
//! memory, swap, disks, fork and context-switch counts, per-process memory).
//!
//! They are read on the agent's measurement thread, once per cycle, and
//! carried in the snapshot: a scrape never touches `/proc`. Each part is read
//! on its own; one that fails is left out and the snapshot says the stats are
//! incomplete, so the exporter can mark its collector unsuccessful.
//!
//! The files are parsed by the `procfs` crate (its types read from any path,
//! so `--proc-root` holds); `statvfs` comes from rustix. The crate asks more
//! of each file than the figures kept here need (every field a kernel since
//! 2.6 writes in `meminfo`, the `cpu` lines of `stat`, ...): when it refuses
//! a file (a trimmed fake tree, a kernel it does not know), only that file's
//! group (load, memory, activity or disks) is left out, never the others,
//! and that is logged once at warn when the group starts failing and once
//! at info when it is back (in between, at debug). Nothing here panics on
//! what a file holds: values the crate would overflow on are refused first.
//!
//! scaph's own figures ([`HostReader::self_stats`]) always come from the
//! running `/proc/self`, whatever tree `--proc-root` observes.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use log::{debug, info, warn};
use procfs::{process::StatM, FromRead as _, FromReadSI as _, KernelStats, Meminfo, ProcError};

mod mounts;

use mounts::statvfs;
pub(crate) use mounts::{block_mounts, mount_infos, unescape_mount};

// The statistics are plain data shared with the snapshot (`model`).
pub use crate::model::{Activity, Disk, HostStats, LoadAverage, Memory, ProcessMemory, SelfStats};
use crate::{
    cputime::pidstat::{self, parse_stat, PID_STAT},
    fsroot::{
        self,
        read::{read_attribute, read_small_file, Extent, ReadFailure, ATTRIBUTE},
        Roots,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} could not be parsed (procfs crate: {detail})")]
    Unparsed { path: PathBuf, detail: String },
    #[error("{path}: no {what} in it")]
    Parse { path: PathBuf, what: &'static str },
}

/// What to read each cycle, and the state needed to turn counters into rates.
#[derive(Debug)]
pub struct HostReader {
    roots: Roots,
    page_size: u64,
    ticks_per_second: f64,
    /// Read load, memory, stat and disks (only Scaphandre's names use them).
    pub host: bool,
    /// Read `/proc/PID/statm` of every running process.
    pub process_memory: bool,
    last_self: Option<(Instant, f64)>,
    /// Reused for every `statm` read.
    buf: Vec<u8>,
    /// The groups failing at the previous read (logged once at warn).
    failing: [bool; Group::COUNT],
}

/// The parts of [`HostStats`], each read (and failing) on its own.
#[derive(Clone, Copy, Debug)]
enum Group {
    Load,
    Memory,
    Activity,
    Disks,
}

impl Group {
    const COUNT: usize = 4;

    fn name(self) -> &'static str {
        match self {
            Self::Load => "load averages",
            Self::Memory => "memory and swap",
            Self::Activity => "fork and context-switch counts",
            Self::Disks => "disks",
        }
    }
}

impl HostReader {
    /// Reads below `proc_root` and `sys_root` (see [`Roots`]).
    #[must_use]
    pub fn new(proc_root: PathBuf, sys_root: PathBuf) -> Self {
        Self::with_roots(Roots::new(proc_root, sys_root))
    }

    #[must_use]
    pub fn with_roots(roots: Roots) -> Self {
        let ticks = pidstat::ticks_per_second();
        Self {
            roots,
            page_size: Some(procfs::page_size()).filter(|&p| p > 0).unwrap_or(4096),
            ticks_per_second: ticks as f64,
            host: false,
            process_memory: false,
            last_self: None,
            buf: Vec::with_capacity(128),
            failing: [false; Group::COUNT],
        }
    }

    /// Host-wide statistics; parts that fail are left out (see the module
    /// doc for how that is logged).
    pub fn host_stats(&mut self) -> HostStats {
        let mut complete = true;
        let load = self.load();
        let load = self.kept(Group::Load, load, &mut complete);
        let memory = self.memory();
        let memory = self.kept(Group::Memory, memory, &mut complete);
        let activity = self.activity();
        let activity = self.kept(Group::Activity, activity, &mut complete);
        let disks = self.disks();
        let disks = self
            .kept(Group::Disks, disks, &mut complete)
            .unwrap_or_default();
        HostStats {
            load,
            memory,
            activity,
            disks,
            complete,
        }
    }

    /// The value, or `None` after logging the error (once at warn while
    /// the group keeps failing) and clearing `complete`.
    fn kept<T>(
        &mut self,
        group: Group,
        result: Result<T, HostError>,
        complete: &mut bool,
    ) -> Option<T> {
        let failing = &mut self.failing[group as usize];
        match result {
            Ok(value) => {
                if std::mem::take(failing) {
                    info!("host statistics: {} are read again", group.name());
                }
                Some(value)
            }
            Err(error) => {
                *complete = false;
                if std::mem::replace(failing, true) {
                    debug!("host statistics: {error}");
                } else {
                    warn!(
                        "host statistics: {error}; {} left out until it can be read \
                         (the other statistics are not affected)",
                        group.name()
                    );
                }
                None
            }
        }
    }

    /// scaph's own CPU and memory, from the running `/proc/self`; `None`
    /// when it is unreadable.
    pub fn self_stats(&mut self) -> Option<SelfStats> {
        let path = fsroot::own_file("stat");
        let mut buf = Vec::with_capacity(512);
        match read_small_file(&path, &mut buf, PID_STAT) {
            Ok(()) => {}
            Err(ReadFailure::Gone) => return None,
            Err(ReadFailure::Other(e)) => {
                debug!("self statistics: reading {}: {e}", path.display());
                return None;
            }
        }
        let ticks = parse_stat(&buf)?.cpu_ticks;
        let cpu_seconds_total = ticks as f64 / self.ticks_per_second;
        let now = Instant::now();
        let cpu_ratio = match self.last_self.replace((now, cpu_seconds_total)) {
            Some((then, before)) => {
                let secs = now.duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    ((cpu_seconds_total - before) / secs).max(0.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        let memory = self.self_memory().unwrap_or_default();
        Some(SelfStats {
            cpu_seconds_total,
            cpu_ratio,
            resident_bytes: memory.resident_bytes,
            virtual_bytes: memory.virtual_bytes,
        })
    }

    /// scaph's own memory, from the running `/proc/self/statm`; `None` when
    /// it is unreadable.
    pub fn self_memory(&mut self) -> Option<ProcessMemory> {
        self.statm(&fsroot::own_file("statm"))
    }

    /// Memory of one process; `None` once it is gone.
    pub fn process_memory(&mut self, pid: u32) -> Option<ProcessMemory> {
        let mut path = self.roots.pid_dir(pid);
        path.push("statm");
        self.statm(&path)
    }

    fn statm(&mut self, path: &Path) -> Option<ProcessMemory> {
        read_small_file(path, &mut self.buf, ATTRIBUTE).ok()?;
        let statm = StatM::from_read(self.buf.as_slice()).ok()?;
        Some(memory_of(&statm, self.page_size))
    }

    fn load(&self) -> Result<LoadAverage, HostError> {
        read_with(&self.roots.proc_file("loadavg"), load_average)
    }

    fn memory(&self) -> Result<Memory, HostError> {
        let path = self.roots.proc_file("meminfo");
        let info = read_with(&path, meminfo)?;
        memory(&info).map_err(|what| HostError::Parse { path, what })
    }

    fn activity(&self) -> Result<Activity, HostError> {
        let path = self.roots.proc_file("stat");
        let stats = read_with(&path, kernel_stats)?;
        activity(&stats).map_err(|what| HostError::Parse { path, what })
    }

    fn disks(&self) -> Result<Vec<Disk>, HostError> {
        let path = self.roots.proc_file("self/mountinfo");
        let mut buf = Vec::new();
        read_bounded(&path, &mut buf)?;
        let mounts = mount_infos(&buf, buf.len() >= HOST_FILE.limit);
        let mut disks: Vec<Disk> = Vec::new();
        for (device, mount_point, fs_type) in block_mounts(&mounts) {
            if disks.iter().any(|d| d.mount_point == mount_point) {
                continue; // over-mounted: the first entry is enough
            }
            let Some((total_bytes, available_bytes)) = statvfs(&mount_point) else {
                continue;
            };
            let block = std::fs::canonicalize(device)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let (kind, removable) = self.block_properties(&block);
            disks.push(Disk {
                name: device.to_owned(),
                mount_point,
                file_system: fs_type.to_owned(),
                kind,
                removable,
                total_bytes,
                available_bytes,
            });
        }
        Ok(disks)
    }

    /// SSD/HDD and removable, from the device or (for a partition) its disk.
    fn block_properties(&self, block: &str) -> (&'static str, bool) {
        if block.is_empty() {
            return ("Unknown", false);
        }
        let dir = self.roots.block_dir(block);
        let attr = |name: &str| {
            read_attribute(&dir.join(name)).or_else(|| read_attribute(&dir.join("..").join(name)))
        };
        let kind = match attr("queue/rotational").as_deref() {
            Some("0") => "SSD",
            Some("1") => "HDD",
            _ => "Unknown",
        };
        (kind, attr("removable").as_deref() == Some("1"))
    }
}

/// Most bytes of a host-wide file read (`mountinfo` of a host with
/// thousands of containers stays well under it; a fake root could point
/// at an endless file).
const HOST_FILE: Extent = Extent {
    limit: 8 << 20,
    single_line: false,
};

/// Reads `path` into `buf`, at most [`HOST_FILE`] bytes.
fn read_bounded(path: &Path, buf: &mut Vec<u8>) -> Result<(), HostError> {
    read_small_file(path, buf, HOST_FILE).map_err(|failure| HostError::Read {
        path: path.to_owned(),
        source: match failure {
            ReadFailure::Gone => std::io::ErrorKind::NotFound.into(),
            ReadFailure::Other(error) => error,
        },
    })
}

/// Reads `path` (bounded) and parses it with `parse`.
fn read_with<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> procfs::ProcResult<T>,
) -> Result<T, HostError> {
    let mut buf = Vec::new();
    read_bounded(path, &mut buf)?;
    parse(&buf).map_err(|error| HostError::Unparsed {
        path: path.to_owned(),
        // The crate's internal errors span lines (and name its source file).
        detail: error.to_string().replace('\n', "; "),
    })
}

/// `/proc/meminfo` through the crate, which slices each name by bytes and
/// multiplies each value by its unit unchecked: a non-ASCII file, or a
/// value too large for 64 bits of bytes (never the kernel's), is refused
/// before it gets there.
pub(crate) fn meminfo(buf: &[u8]) -> procfs::ProcResult<Meminfo> {
    if !buf.is_ascii() {
        return Err(ProcError::Other("non-ASCII bytes in meminfo".into()));
    }
    // ASCII, so UTF-8.
    let text = std::str::from_utf8(buf).map_err(|e| ProcError::Other(e.to_string()))?;
    if let Some(line) = text.lines().find(|line| overflows(line)) {
        return Err(ProcError::Other(format!(
            "meminfo line {:?} does not fit 64 bits of bytes",
            crate::label::bound(line, 80)
        )));
    }
    Meminfo::from_read(buf)
}

/// Whether a `meminfo` line's value times its unit (as the crate reads
/// them) exceeds `u64`.
fn overflows(line: &str) -> bool {
    let mut fields = line.split_whitespace();
    let (Some(_), Some(value), Some(unit)) = (fields.next(), fields.next(), fields.next()) else {
        return false;
    };
    let scale: u64 = match unit {
        "KiB" | "kiB" | "kB" | "KB" => 1 << 10,
        "MiB" | "miB" | "MB" | "mB" => 1 << 20,
        "GiB" | "giB" | "GB" | "gB" => 1 << 30,
        _ => return false,
    };
    value
        .parse::<u64>()
        .is_ok_and(|value| value.checked_mul(scale).is_none())
}

/// `/proc/loadavg`. The crate keeps `f32`s; the kernel prints two decimals,
/// so rounding there gives back exactly the `f64` of the printed figure.
pub(crate) fn load_average(r: &[u8]) -> procfs::ProcResult<LoadAverage> {
    let load = procfs::LoadAverage::from_read(r)?;
    let exact = |x: f32| (f64::from(x) * 100.0).round() / 100.0;
    // The third field is the 15-minute average (Scaphandre repeated the 5-minute one).
    Ok(LoadAverage {
        one: exact(load.one),
        five: exact(load.five),
        fifteen: exact(load.fifteen),
    })
}

/// `/proc/stat` (only the counters are used; the tick rate does not matter).
pub(crate) fn kernel_stats(r: &[u8]) -> procfs::ProcResult<KernelStats> {
    KernelStats::from_read(r, procfs::current_system_info())
}

/// Memory and swap; the error names the first field missing.
pub(crate) fn memory(info: &Meminfo) -> Result<Memory, &'static str> {
    Ok(Memory {
        total: info.mem_total,
        available: info.mem_available.ok_or("MemAvailable")?,
        free: info.mem_free,
        swap_total: info.swap_total,
        swap_free: info.swap_free,
    })
}

/// The scheduler counters; the error names the first one missing.
pub(crate) fn activity(stats: &KernelStats) -> Result<Activity, &'static str> {
    Ok(Activity {
        forks_total: stats.processes,
        context_switches_total: stats.ctxt,
        running: stats.procs_running.ok_or("procs_running")?.into(),
        blocked: stats.procs_blocked.ok_or("procs_blocked")?.into(),
    })
}

/// `/proc/PID/statm` pages as bytes.
pub(crate) fn memory_of(statm: &StatM, page_size: u64) -> ProcessMemory {
    ProcessMemory {
        resident_bytes: statm.resident.saturating_mul(page_size),
        virtual_bytes: statm.size.saturating_mul(page_size),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        fs::write(p.join("loadavg"), "0.50 0.25 0.10 2/345 6789\n").expect("write");
        let mut meminfo = String::from(
            "MemTotal:       16000 kB\nMemFree:         4000 kB\nMemAvailable:    8000 kB\nSwapTotal:       2000 kB\nSwapFree:        1000 kB\n",
        );
        // What the crate requires of every kernel's meminfo.
        for field in [
            "Buffers",
            "Cached",
            "SwapCached",
            "Active",
            "Inactive",
            "Dirty",
            "Writeback",
            "Mapped",
            "Slab",
            "Committed_AS",
            "VmallocTotal",
            "VmallocUsed",
            "VmallocChunk",
        ] {
            meminfo.push_str(&format!("{field}: 1 kB\n"));
        }
        fs::write(p.join("meminfo"), meminfo).expect("write");
        fs::write(
            p.join("stat"),
            "cpu  1 2 3 4\ncpu0 1 2 3 4\nctxt 123456\nbtime 1\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n",
        )
        .expect("write");
        fs::create_dir_all(p.join("self")).expect("mkdir");
        fs::write(
            p.join("self/mountinfo"),
            "22 1 0:5 / /proc rw - proc proc rw\n\
             23 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n\
             24 1 8:1 / / rw,relatime - ext4 /dev/root rw\n\
             25 1 8:1 / /mnt/my\\040disk rw - ext4 /dev/root rw\n",
        )
        .expect("write");
        fs::write(
            p.join("self/stat"),
            "77 (scaph (x) y) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0 999 0 0\n",
        )
        .expect("write");
        fs::write(p.join("self/statm"), "1000 200 10 1 0 50 0\n").expect("write");
        fs::create_dir_all(p.join("42")).expect("mkdir");
        fs::write(p.join("42/statm"), "300 100 10 1 0 50 0\n").expect("write");
        dir
    }

    #[test]
    fn reads_every_part_including_the_fifteen_minute_load() {
        let proc = fake_proc();
        let mut reader = HostReader::new(proc.path().to_owned(), "/nonexistent".into());
        let stats = reader.host_stats();
        assert!(stats.complete);
        assert_eq!(
            stats.load,
            Some(LoadAverage {
                one: 0.5,
                five: 0.25,
                fifteen: 0.1
            })
        );
        assert_eq!(
            stats.memory,
            Some(Memory {
                total: 16000 * 1024,
                available: 8000 * 1024,
                free: 4000 * 1024,
                swap_total: 2000 * 1024,
                swap_free: 1000 * 1024
            })
        );
        assert_eq!(
            stats.activity,
            Some(Activity {
                forks_total: 4242,
                context_switches_total: 123456,
                running: 3,
                blocked: 1
            })
        );
        let mounts: Vec<&str> = stats.disks.iter().map(|d| d.mount_point.as_str()).collect();
        assert_eq!(mounts, ["/"], "one entry per mount point, that exists");
        assert_eq!(stats.disks[0].kind, "Unknown");
    }

    #[test]
    fn a_missing_part_is_left_out_and_reported() {
        let proc = fake_proc();
        fs::remove_file(proc.path().join("meminfo")).expect("rm");
        let mut reader = HostReader::new(proc.path().to_owned(), "/sys".into());
        let stats = reader.host_stats();
        assert!(!stats.complete);
        assert!(stats.memory.is_none());
        assert!(stats.load.is_some() && stats.activity.is_some() && !stats.disks.is_empty());
        assert!(
            reader.failing[Group::Memory as usize],
            "logged once at warn"
        );
        // Back: the group is read again (and that is logged once).
        let full = fake_proc();
        fs::copy(full.path().join("meminfo"), proc.path().join("meminfo")).expect("copy");
        let stats = reader.host_stats();
        assert!(stats.complete && stats.memory.is_some());
        assert!(!reader.failing[Group::Memory as usize]);
    }

    /// A meminfo the crate cannot take (a field it requires is missing, or
    /// a value its unit multiplication would overflow) costs only memory.
    #[test]
    fn a_meminfo_the_crate_refuses_leaves_out_only_memory() {
        let proc = fake_proc();
        let path = proc.path().join("meminfo");
        let text = fs::read_to_string(&path).expect("read");
        let mut reader = HostReader::new(proc.path().to_owned(), "/sys".into());
        for broken in [
            text.replace("VmallocChunk: 1 kB\n", ""),
            text.replace("MemTotal:       16000 kB", "MemTotal: 18014398509481984 kB"),
        ] {
            fs::write(&path, broken).expect("write");
            let stats = reader.host_stats();
            assert!(!stats.complete && stats.memory.is_none());
            assert!(stats.load.is_some() && stats.activity.is_some());
        }
    }

    /// Found by review: the crate multiplies by the unit unchecked (a panic
    /// with overflow checks, as the fuzz build has them).
    #[test]
    fn meminfo_values_that_overflow_are_refused() {
        let error = meminfo(b"MemTotal: 18014398509481984 kB\n").expect_err("refused");
        assert!(error.to_string().contains("64 bits"), "{error}");
        assert!(meminfo(b"MemTotal: 18446744073709551615 GB\n").is_err());
        assert!(!overflows("MemTotal: 18014398509481983 kB"));
        assert!(overflows("MemTotal: 18014398509481984 kB"));
        assert!(!overflows("MemTotal: 18014398509481983 B"));
        assert!(!overflows("MemTotal: 18014398509481983"));
        assert!(!overflows("MemTotal: 17592186044415 MB"));
        assert!(overflows("MemTotal: 17592186044416 MB"));
        assert!(!overflows("HugePages_Total: 18446744073709551615"));
        crate::fuzzing::host_files(b"MemTotal: 18014398509481984 kB\n");
    }

    proptest::proptest! {
        /// Any value with any unit the crate knows: refused or read, never
        /// a panic (the tests build with overflow checks, as fuzzing does).
        #[test]
        fn any_meminfo_value_and_unit_is_safe(
            values in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..20),
            unit in proptest::sample::select(vec!["", "B", "kB", "KiB", "MB", "mB", "GiB", "gB"]),
        ) {
            let mut text = String::new();
            for (field, value) in ["MemTotal", "MemFree", "MemAvailable", "Buffers"]
                .iter()
                .cycle()
                .zip(&values)
            {
                text.push_str(&format!("{field}: {value} {unit}\n"));
            }
            let _ = meminfo(text.as_bytes());
            crate::fuzzing::host_files(text.as_bytes());
        }
    }

    /// scaph's own figures are the running process's, whatever the tree.
    #[test]
    fn self_and_process_memory() {
        let proc = fake_proc();
        let mut reader = HostReader::new(proc.path().to_owned(), "/sys".into());
        let me = reader.self_stats().expect("self stats");
        assert!(me.resident_bytes > 0);
        assert_ne!(
            me.resident_bytes,
            200 * reader.page_size,
            "not the fake tree's"
        );
        let statm = fs::read_to_string("/proc/self/statm").expect("statm");
        let size: u64 = statm
            .split(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("size");
        assert_ne!(size, 1000, "the running process is not the fake one");
        assert_eq!(
            reader.process_memory(42).map(|m| m.virtual_bytes),
            Some(300 * reader.page_size)
        );
        assert_eq!(reader.process_memory(43), None);
    }

    /// The running kernel's files parse (the crate requires fields that a
    /// fake tree may lack; the real one has them).
    #[test]
    fn the_running_kernel_is_read_whole() {
        let stats = HostReader::with_roots(Roots::running()).host_stats();
        assert!(stats.load.is_some() && stats.memory.is_some() && stats.activity.is_some());
        assert!(stats.memory.is_some_and(|m| m.total > 0));
        let me = HostReader::with_roots(Roots::running())
            .self_stats()
            .expect("self");
        assert!(me.resident_bytes > 0);
    }

    /// A mountinfo with bad lines (see `mounts`) still gives the others.
    #[test]
    fn bad_mountinfo_lines_cost_only_themselves() {
        let proc = fake_proc();
        let path = proc.path().join("self/mountinfo");
        let mut text = fs::read(&path).expect("read");
        text.extend_from_slice(b"40 23 0:50 / /home/u/caf\xe9 rw - fuse.x /dev/sda9 rw\ngarbage\n");
        fs::write(&path, &text).expect("write");
        let stats = HostReader::new(proc.path().to_owned(), "/sys".into()).host_stats();
        assert!(stats.complete);
        let mounts: Vec<&str> = stats.disks.iter().map(|d| d.mount_point.as_str()).collect();
        assert_eq!(mounts, ["/"]);
    }

    #[test]
    fn load_averages_are_the_printed_figures() {
        let load = load_average("0.10 1.07 12.34 2/345 6789\n".as_bytes()).expect("parses");
        assert_eq!((load.one, load.five, load.fifteen), (0.1, 1.07, 12.34));
    }
}
