//! Host and self statistics that Scaphandre exposed next to energy (load,
//! memory, swap, disks, fork and context-switch counts, per-process memory).
//!
//! They are read on the agent's measurement thread, once per cycle, and
//! carried in the snapshot: a scrape never touches `/proc`. Each part is read
//! on its own; one that fails is left out and the snapshot says the stats are
//! incomplete, so the exporter can mark its collector unsuccessful.
//!
//! The files are parsed by the `procfs` crate (its types read from any path,
//! so `--proc-root` holds); `statvfs` comes from rustix.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use log::debug;
use procfs::{
    process::{MountInfos, StatM},
    FromRead as _, FromReadSI as _, KernelStats, Meminfo, ProcError,
};

// The statistics are plain data shared with the snapshot (`model`).
pub use crate::model::{Activity, Disk, HostStats, LoadAverage, Memory, ProcessMemory, SelfStats};
use crate::{
    cputime::pidstat::{self, parse_stat, PID_STAT},
    fsroot::{
        read::{read_small_file, Extent, ReadFailure},
        Roots,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: ProcError,
    },
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
        }
    }

    /// Host-wide statistics; parts that fail are logged (debug) and left out.
    pub fn host_stats(&self) -> HostStats {
        let mut complete = true;
        let load = kept(self.load(), &mut complete);
        let memory = kept(self.memory(), &mut complete);
        let activity = kept(self.activity(), &mut complete);
        let disks = kept(self.disks(), &mut complete).unwrap_or_default();
        HostStats {
            load,
            memory,
            activity,
            disks,
            complete,
        }
    }

    /// scaph's own CPU and memory; `None` when `/proc/self` is unreadable.
    pub fn self_stats(&mut self) -> Option<SelfStats> {
        let path = self.roots.proc_file("self/stat");
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

    /// scaph's own memory; `None` when `/proc/self/statm` is unreadable.
    #[must_use]
    pub fn self_memory(&self) -> Option<ProcessMemory> {
        self.statm(&self.roots.proc_file("self/statm"))
    }

    /// Memory of one process; `None` once it is gone.
    #[must_use]
    pub fn process_memory(&self, pid: u32) -> Option<ProcessMemory> {
        self.statm(&self.roots.pid_dir(pid).join("statm"))
    }

    fn statm(&self, path: &Path) -> Option<ProcessMemory> {
        let statm = StatM::from_file(path).ok()?;
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
        let mounts = read_with(&self.roots.proc_file("self/mountinfo"), |b| {
            MountInfos::from_read(b)
        })?;
        let mut disks: Vec<Disk> = Vec::new();
        for (device, mount_point, fs_type) in block_mounts(&mounts) {
            if disks.iter().any(|d| d.mount_point == mount_point) {
                continue; // over-mounted: the first entry is enough
            }
            let Some((total_bytes, available_bytes)) = statvfs(&mount_point) else {
                continue;
            };
            let block = fs::canonicalize(device)
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
            fs::read_to_string(dir.join(name))
                .or_else(|_| fs::read_to_string(dir.join("..").join(name)))
                .map(|s| s.trim().to_owned())
                .ok()
        };
        let kind = match attr("queue/rotational").as_deref() {
            Some("0") => "SSD",
            Some("1") => "HDD",
            _ => "Unknown",
        };
        (kind, attr("removable").as_deref() == Some("1"))
    }
}

/// The value, or `None` after logging the error and clearing `complete`.
fn kept<T>(result: Result<T, HostError>, complete: &mut bool) -> Option<T> {
    result
        .map_err(|e| {
            debug!("host statistics: {e}");
            *complete = false;
        })
        .ok()
}

/// Most bytes of a host-wide file read (`mountinfo` of a host with
/// thousands of containers stays well under it; a fake root could point
/// at an endless file).
const HOST_FILE: Extent = Extent {
    limit: 8 << 20,
    single_line: false,
};

/// Reads `path` (bounded) and parses it with `parse`.
fn read_with<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> procfs::ProcResult<T>,
) -> Result<T, HostError> {
    let mut buf = Vec::new();
    let read = read_small_file(path, &mut buf, HOST_FILE).map_err(|failure| match failure {
        ReadFailure::Gone => std::io::Error::from(std::io::ErrorKind::NotFound),
        ReadFailure::Other(error) => error,
    });
    read.map_err(ProcError::from)
        .and_then(|()| parse(&buf))
        .map_err(|source| HostError::Read {
            path: path.to_owned(),
            source,
        })
}

/// `/proc/meminfo` through the crate, which slices each name by bytes: a
/// non-ASCII file (never the kernel's) is refused before it gets there.
pub(crate) fn meminfo(buf: &[u8]) -> procfs::ProcResult<Meminfo> {
    if !buf.is_ascii() {
        return Err(ProcError::Incomplete(None));
    }
    Meminfo::from_read(buf)
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

/// (device, unescaped mount point, filesystem type) of the mounts of a
/// `/dev/` device. The crate hands `mountinfo` fields out as the kernel
/// wrote them (escaped); the mount point is unescaped here, once.
pub(crate) fn block_mounts(mounts: &MountInfos) -> impl Iterator<Item = (&str, String, &str)> {
    mounts.iter().filter_map(|m| {
        let device = m.mount_source.as_deref()?;
        let mount_point = m.mount_point.to_str()?;
        device
            .starts_with("/dev/")
            .then(|| (device, unescape_mount(mount_point), m.fs_type.as_str()))
    })
}

/// `/proc/PID/mountinfo` escapes space, tab, newline and backslash as octal
/// (`\ooo`, at most `\377`); anything else is kept as written.
pub(crate) fn unescape_mount(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| {
                digits.iter().try_fold(0u32, |acc, &b| {
                    (b'0'..=b'7')
                        .contains(&b)
                        .then(|| acc * 8 + u32::from(b - b'0'))
                })
            });
        if let Some(code) = code.and_then(|c| u8::try_from(c).ok()) {
            out.push(char::from(code));
            i += 4;
        } else {
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// (total, available to unprivileged users) bytes of the filesystem at `path`.
fn statvfs(path: &str) -> Option<(u64, u64)> {
    let fs = rustix::fs::statvfs(path).ok()?;
    Some((
        fs.f_blocks.saturating_mul(fs.f_frsize),
        fs.f_bavail.saturating_mul(fs.f_frsize),
    ))
}

#[cfg(test)]
mod tests {
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
        let reader = HostReader::new(proc.path().to_owned(), "/nonexistent".into());
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
        let stats = HostReader::new(proc.path().to_owned(), "/sys".into()).host_stats();
        assert!(!stats.complete);
        assert!(stats.memory.is_none());
        assert!(stats.load.is_some());
    }

    #[test]
    fn self_and_process_memory() {
        let proc = fake_proc();
        let mut reader = HostReader::new(proc.path().to_owned(), "/sys".into());
        let me = reader.self_stats().expect("self stats");
        assert!((me.cpu_seconds_total - 200.0 / reader.ticks_per_second).abs() < 1e-9);
        assert_eq!(me.resident_bytes, 200 * reader.page_size);
        assert_eq!(
            reader.process_memory(42).map(|m| m.virtual_bytes),
            Some(300 * reader.page_size)
        );
        assert_eq!(reader.process_memory(43), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount("/é"), "/é");
        assert_eq!(unescape_mount(r"/a\"), r"/a\");
        // Found by fuzzing (mounts target): a code above \377 overflowed a
        // byte (a panic with debug assertions). The kernel writes only the
        // four escapes, so anything else is kept as written.
        assert_eq!(unescape_mount(r"/a\777"), r"/a\777");
        assert_eq!(unescape_mount(r"/a\400b\377"), "/a\\400b\u{ff}");
        // An escape at the very end is decoded too.
        assert_eq!(unescape_mount(r"/mnt/x\040"), "/mnt/x ");
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

    #[test]
    fn mountinfo_gives_unescaped_block_mount_points() {
        let text = "23 1 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw\n\
                    24 1 0:5 / /proc rw - proc proc rw\n\
                    25 1 0:6 / /run rw - tmpfs none rw\n";
        let mounts = MountInfos::from_read(text.as_bytes()).expect("parses");
        let found: Vec<_> = block_mounts(&mounts).collect();
        assert_eq!(found, [("/dev/sda1", "/mnt/my disk".to_owned(), "ext4")]);
    }

    #[test]
    fn load_averages_are_the_printed_figures() {
        let load = load_average("0.10 1.07 12.34 2/345 6789\n".as_bytes()).expect("parses");
        assert_eq!((load.one, load.five, load.fifteen), (0.1, 1.07, 12.34));
    }
}
