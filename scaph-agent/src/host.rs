//! Host and self statistics that Scaphandre exposed next to energy (load,
//! memory, swap, disks, fork and context-switch counts, per-process memory).
//!
//! They are read on the agent's measurement thread, once per cycle, and
//! carried in the snapshot: a scrape never touches `/proc`. Each part is read
//! on its own; one that fails is left out and the snapshot says the stats are
//! incomplete, so the exporter can mark its collector unsuccessful.
use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

use log::debug;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no {what} in it")]
    Parse { path: PathBuf, what: &'static str },
}

/// Load averages, as `/proc/loadavg` gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// Memory and swap, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub free: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Scheduler activity from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub forks_total: u64,
    pub context_switches_total: u64,
    pub running: u64,
    pub blocked: u64,
}

/// One mounted block-device filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    /// Device as mounted (`/dev/nvme0n1p2`).
    pub name: String,
    pub mount_point: String,
    pub file_system: String,
    /// `SSD`, `HDD` or `Unknown` (from the block device's `queue/rotational`).
    pub kind: &'static str,
    pub removable: bool,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Everything host-wide, from one cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostStats {
    pub load: Option<LoadAverage>,
    pub memory: Option<Memory>,
    pub activity: Option<Activity>,
    /// One entry per mount point (Scaphandre kept only the last disk).
    pub disks: Vec<Disk>,
    /// False when some part could not be read.
    pub complete: bool,
}

/// scaph's own footprint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfStats {
    pub cpu_seconds_total: f64,
    /// Share of one CPU used since the previous cycle.
    pub cpu_ratio: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
}

/// Memory of one process, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
}

/// What to read each cycle, and the state needed to turn counters into rates.
#[derive(Debug)]
pub struct HostReader {
    proc_root: PathBuf,
    sys_root: PathBuf,
    page_size: u64,
    ticks_per_second: f64,
    /// Read load, memory, stat and disks (only Scaphandre's names use them).
    pub host: bool,
    /// Read `/proc/PID/statm` of every running process.
    pub process_memory: bool,
    last_self: Option<(Instant, f64)>,
}

impl HostReader {
    #[must_use]
    pub fn new(proc_root: PathBuf, sys_root: PathBuf) -> Self {
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let (page, ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        Self {
            proc_root,
            sys_root,
            page_size: u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
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
        let stat = self.proc_root.join("self/stat");
        let text = read(&stat)
            .map_err(|e| debug!("self statistics: {e}"))
            .ok()?;
        let ticks = stat_cpu_ticks(&text)?;
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
        self.statm(&self.proc_root.join("self/statm")).ok()
    }

    /// Memory of one process; `None` once it is gone.
    #[must_use]
    pub fn process_memory(&self, pid: u32) -> Option<ProcessMemory> {
        self.statm(&self.proc_root.join(pid.to_string()).join("statm"))
            .ok()
    }

    fn statm(&self, path: &Path) -> Result<ProcessMemory, HostError> {
        parse_statm(&read(path)?, self.page_size).ok_or_else(|| HostError::Parse {
            path: path.to_owned(),
            what: "size and resident pages",
        })
    }

    fn load(&self) -> Result<LoadAverage, HostError> {
        let path = self.proc_root.join("loadavg");
        parse_loadavg(&read(&path)?).ok_or(HostError::Parse {
            path,
            what: "three load averages",
        })
    }

    fn memory(&self) -> Result<Memory, HostError> {
        let path = self.proc_root.join("meminfo");
        parse_meminfo(&read(&path)?).map_err(|what| HostError::Parse { path, what })
    }

    fn activity(&self) -> Result<Activity, HostError> {
        let path = self.proc_root.join("stat");
        parse_activity(&read(&path)?).map_err(|what| HostError::Parse { path, what })
    }

    fn disks(&self) -> Result<Vec<Disk>, HostError> {
        let path = self.proc_root.join("self/mounts");
        let text = read(&path)?;
        let mut disks: Vec<Disk> = Vec::new();
        for (device, mount_point, fs_type) in block_mounts(&text) {
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
        let dir = self.sys_root.join("class/block").join(block);
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

fn read(path: &Path) -> Result<String, HostError> {
    fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `/proc/PID/statm`: (size, resident) pages, as bytes.
pub(crate) fn parse_statm(text: &str, page_size: u64) -> Option<ProcessMemory> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(size)), Some(Ok(resident))) => Some(ProcessMemory {
            resident_bytes: resident.saturating_mul(page_size),
            virtual_bytes: size.saturating_mul(page_size),
        }),
        _ => None,
    }
}

/// `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<LoadAverage> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next(), it.next()) {
        // The third field is the 15-minute average (Scaphandre repeated the 5-minute one).
        (Some(Ok(one)), Some(Ok(five)), Some(Ok(fifteen))) => {
            Some(LoadAverage { one, five, fifteen })
        }
        _ => None,
    }
}

/// `/proc/meminfo`; the error names the first field missing or unreadable.
pub(crate) fn parse_meminfo(text: &str) -> Result<Memory, &'static str> {
    let field = |name: &'static str| -> Result<u64, &'static str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
            .ok_or(name)
    };
    Ok(Memory {
        total: field("MemTotal")?,
        available: field("MemAvailable")?,
        free: field("MemFree")?,
        swap_total: field("SwapTotal")?,
        swap_free: field("SwapFree")?,
    })
}

/// The scheduler counters of `/proc/stat`; the error names the first one missing.
pub(crate) fn parse_activity(text: &str) -> Result<Activity, &'static str> {
    let field = |name: &'static str| -> Result<u64, &'static str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
            .ok_or(name)
    };
    Ok(Activity {
        forks_total: field("processes")?,
        context_switches_total: field("ctxt")?,
        running: field("procs_running")?,
        blocked: field("procs_blocked")?,
    })
}

/// (device, unescaped mount point, filesystem type) of the `/dev/` lines of `/proc/PID/mounts`.
pub(crate) fn block_mounts(text: &str) -> impl Iterator<Item = (&str, String, &str)> {
    text.lines().filter_map(|line| {
        let mut f = line.split_whitespace();
        let (device, mount_point, fs_type) = (f.next()?, f.next()?, f.next()?);
        device
            .starts_with("/dev/")
            .then(|| (device, unescape_mount(mount_point), fs_type))
    })
}

/// utime + stime (clock ticks) from a `/proc/PID/stat` line.
pub(crate) fn stat_cpu_ticks(text: &str) -> Option<u64> {
    // The comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // state is field 3; utime is field 14
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal
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
#[allow(
    clippy::useless_conversion,
    reason = "statvfs field types are u32 on some targets"
)]
fn statvfs(path: &str) -> Option<(u64, u64)> {
    let c_path = CString::new(Path::new(path).as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; the kernel fills it when the call returns 0.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and buf a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut buf) } != 0 {
        return None;
    }
    let frsize = u64::from(buf.f_frsize);
    Some((
        u64::from(buf.f_blocks).saturating_mul(frsize),
        u64::from(buf.f_bavail).saturating_mul(frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        fs::write(p.join("loadavg"), "0.50 0.25 0.10 2/345 6789\n").expect("write");
        fs::write(
            p.join("meminfo"),
            "MemTotal:       16000 kB\nMemFree:         4000 kB\nMemAvailable:    8000 kB\nSwapTotal:       2000 kB\nSwapFree:        1000 kB\n",
        )
        .expect("write");
        fs::write(
            p.join("stat"),
            "cpu  1 2 3\nctxt 123456\nbtime 1\nprocesses 4242\nprocs_running 3\nprocs_blocked 1\n",
        )
        .expect("write");
        fs::create_dir_all(p.join("self")).expect("mkdir");
        fs::write(
            p.join("self/mounts"),
            "proc /proc proc rw 0 0\n/dev/root / ext4 rw 0 0\n/dev/root / ext4 rw 0 0\n",
        )
        .expect("write");
        fs::write(
            p.join("self/stat"),
            "77 (scaph (x) y) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0\n",
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
        assert_eq!(
            stats.disks.len(),
            1,
            "one entry per mount point: {:?}",
            stats.disks
        );
        assert_eq!(stats.disks[0].mount_point, "/");
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

    /// Found by fuzzing (proc_pid_stat target): utime + stime near u64::MAX
    /// overflowed (a panic with debug assertions).
    #[test]
    fn cpu_ticks_of_a_garbage_stat_line_do_not_overflow() {
        let line =
            "7 (x) S 1 1 1 0 -1 0 0 0 0 0 18446744073709551615 18446744073709551615 0 0 20 0 1 0 5";
        assert_eq!(stat_cpu_ticks(line), Some(u64::MAX));
        assert_eq!(
            stat_cpu_ticks("1 (a) S 1 1 1 0 -1 0 0 0 0 0 3 4 0"),
            Some(7)
        );
    }
}
