//! A fake powercap tree whose package counter rises at a known power, written
//! by a background thread, for end-to-end energy tests; and simulated hosts
//! ([`SimHost`]): a powercap tree and a sysfs CPU tree built from a table of
//! sockets, CPUs and constant watts per zone, for `--powercap-root` and
//! `--sys-root`.
use std::{
    fs::{self, File},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// The simulated hosts' tables, shared with scaph-agent's unit test
/// `sensors::simulated` (one copy, so both test the same hosts).
#[path = "../../scaph-agent/src/sensors/simulated/hosts.rs"]
pub mod hosts;

pub use hosts::{Pool, SimHost, SimSocket};

/// RAPL's usual range on Intel: the counter wraps after this many µJ.
pub const MAX_RANGE_UJ: u64 = 262_143_328_850;

pub struct FakeRapl {
    dir: tempfile::TempDir,
    /// The sysfs tree of a simulated host (`devices/system/cpu`).
    sys: Option<tempfile::TempDir>,
    stop: Arc<AtomicBool>,
    writer: Option<thread::JoinHandle<()>>,
}

impl FakeRapl {
    /// One package (`intel-rapl:0`, `package-0`) drawing `watts`, starting
    /// `start_uj` below the wrap point so tests cross a wrap when they want.
    pub fn start(watts: f64, start_uj: u64) -> Self {
        let (dir, counter) = package_zone();
        let counters = vec![Counter {
            file: open_counter(&counter, start_uj),
            watts,
            start_uj,
            max_range_uj: MAX_RANGE_UJ,
        }];
        Self::constant(dir, counters)
    }

    /// Starts the thread that advances every counter at its constant power.
    fn constant(dir: tempfile::TempDir, counters: Vec<Counter>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            thread::spawn(move || {
                realtime();
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let secs = t0.elapsed().as_secs_f64();
                    for c in &counters {
                        let uj = c.start_uj + (c.watts * 1e6 * secs) as u64;
                        write_uj(&c.file, uj % (c.max_range_uj + 1));
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Self {
            dir,
            sys: Some(one_socket_sysfs()),
            stop,
            writer: Some(writer),
        }
    }

    /// One package whose power follows the host's CPU use, as a real one
    /// roughly does: `idle_watts + (max_watts − idle_watts) × busy`, with
    /// `busy` read from /proc/stat every few ms.
    pub fn load_dependent(idle_watts: f64, max_watts: f64) -> Self {
        let (dir, counter) = package_zone();
        let file = open_counter(&counter, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut uj, mut last, mut t) = (0.0_f64, cpu_jiffies(), Instant::now());
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(5));
                    let (now, dt) = (cpu_jiffies(), t.elapsed().as_secs_f64());
                    t = Instant::now();
                    let (busy, total) = (
                        now.0.saturating_sub(last.0) as f64,
                        now.1.saturating_sub(last.1) as f64,
                    );
                    let busy = if total > 0.0 { busy / total } else { 0.0 };
                    last = now;
                    uj += (idle_watts + (max_watts - idle_watts) * busy) * dt * 1e6;
                    write_uj(&file, uj as u64 % (MAX_RANGE_UJ + 1));
                }
            })
        };
        Self {
            dir,
            sys: Some(one_socket_sysfs()),
            stop,
            writer: Some(writer),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A simulated host: its powercap tree ([`FakeRapl::root`]) and its sysfs
    /// ([`FakeRapl::sys_root`]), every counter rising at its zone's constant
    /// power from its own start value and wrapping at `host.max_range_uj`.
    pub fn host(host: &SimHost) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut counters = Vec::new();
        let mut zone = |dir: PathBuf, name: &str, watts: f64| {
            fs::create_dir_all(&dir).expect("zone dir");
            fs::write(dir.join("name"), format!("{name}\n")).expect("name");
            fs::write(
                dir.join("max_energy_range_uj"),
                format!("{}\n", host.max_range_uj),
            )
            .expect("range");
            // Each counter wraps 2 to 4.5 s after the start: during a
            // test's measurements, which begin about a second in.
            let before_wrap = watts * 1e6 * (2.0 + 0.5 * (counters.len() % 6) as f64);
            let start_uj = host.max_range_uj.saturating_sub(before_wrap as u64);
            counters.push(Counter {
                file: open_counter(&dir.join("energy_uj"), start_uj),
                watts,
                start_uj,
                max_range_uj: host.max_range_uj,
            });
        };
        for (n, socket) in host.sockets.iter().enumerate() {
            // Sub-zones nested in their package, as in the real sysfs.
            let top = dir.path().join(format!("intel-rapl:{n}"));
            let subs = [
                ("core", socket.core),
                ("uncore", socket.uncore),
                ("dram", socket.dram),
            ];
            for (m, (name, watts)) in subs
                .into_iter()
                .filter_map(|(name, w)| Some((name, w?)))
                .enumerate()
            {
                zone(top.join(format!("intel-rapl:{n}:{m}")), name, watts);
            }
            zone(top, &format!("package-{}", socket.id), socket.package);
        }
        if let Some(watts) = host.psys {
            let n = host.sockets.len();
            zone(dir.path().join(format!("intel-rapl:{n}")), "psys", watts);
        }
        if host.mmio {
            let first = host.mmio_socket();
            zone(
                dir.path().join("intel-rapl-mmio:0"),
                &format!("package-{}", first.id),
                first.package,
            );
        }
        let mut rapl = Self::constant(dir, counters);
        rapl.sys = Some(host.sysfs());
        rapl
    }

    /// The sysfs root that goes with this tree (for `--sys-root`): the
    /// simulated host's, or for a single package, one socket holding every
    /// CPU online on this machine. Tests pass it so that their expectations
    /// (energy / CPUs of the socket) hold on any machine, two-socket
    /// servers included, not only on a one-socket one.
    pub fn sys_root(&self) -> PathBuf {
        self.sys
            .as_ref()
            .expect("every FakeRapl has a sysfs tree")
            .path()
            .to_path_buf()
    }

    /// `--powercap-root ROOT --sys-root SYS`, for a scaph command line.
    pub fn scaph_args(&self) -> Vec<String> {
        vec![
            "--powercap-root".into(),
            self.root().display().to_string(),
            "--sys-root".into(),
            self.sys_root().display().to_string(),
        ]
    }

    /// How many CPUs share the single package's energy (this machine's
    /// online CPUs, all on socket 0 of [`FakeRapl::sys_root`]).
    pub fn cpus() -> usize {
        machine_online_cpus().len()
    }
}

/// This machine's online CPUs, from `/sys/devices/system/cpu/online`
/// (`0-3,6`), or CPU 0 when that cannot be read.
pub fn machine_online_cpus() -> Vec<u32> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>()) {
            cpus.extend(lo..=hi);
        }
    }
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// A sysfs tree with one socket (0) holding every CPU online on this
/// machine; the rest of `/sys` that scaph reads (block devices for the
/// Scaphandre-compatible disk metrics) links to the real one.
fn one_socket_sysfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let cpu_dir = dir.path().join("devices/system/cpu");
    fs::create_dir_all(&cpu_dir).expect("cpu dir");
    let cpus = machine_online_cpus();
    let list: Vec<String> = cpus.iter().map(u32::to_string).collect();
    for file in ["possible", "present", "online"] {
        fs::write(cpu_dir.join(file), format!("{}\n", list.join(","))).expect("cpu list");
    }
    for cpu in cpus {
        let topology = cpu_dir.join(format!("cpu{cpu}/topology"));
        fs::create_dir_all(&topology).expect("topology");
        fs::write(topology.join("physical_package_id"), "0\n").expect("package id");
    }
    for real in ["class", "block", "fs", "kernel", "firmware", "bus"] {
        let _ = std::os::unix::fs::symlink(Path::new("/sys").join(real), dir.path().join(real));
    }
    dir
}

impl Drop for FakeRapl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            // A writer that panicked left its counters still: say so, unless
            // the test is already failing.
            if let Err(panic) = writer.join() {
                if !thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

/// Makes the calling thread real-time (SCHED_FIFO), so that a counter
/// lags its power by one 1 ms sleep, not by a busy machine's scheduling
/// delays. It sleeps most of the time; without root it stays as it was.
fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: pid 0 is the calling thread; param is plain data.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// One counter of a constant-power tree.
struct Counter {
    /// Open for the writer's whole life, not reopened every ms.
    file: File,
    watts: f64,
    start_uj: u64,
    max_range_uj: u64,
}

impl SimHost {
    /// `devices/system/cpu` as the kernel shows it: `possible`, `present`,
    /// `online` lists, and for each CPU its `online` flag and, when online,
    /// its `topology/physical_package_id` (an offline CPU has no topology).
    fn sysfs(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let cpu_dir = dir.path().join("devices/system/cpu");
        fs::create_dir_all(&cpu_dir).expect("cpu dir");
        let list = |cpus: Vec<u32>| {
            let items: Vec<String> = cpus.iter().map(u32::to_string).collect();
            format!("{}\n", items.join(","))
        };
        for (file, cpus) in [
            ("possible", self.possible()),
            ("present", self.possible()),
            ("online", self.online()),
        ] {
            fs::write(cpu_dir.join(file), list(cpus)).expect("cpu list");
        }
        for socket in self.sockets {
            for &(cpu, online) in socket.cpus {
                let this = cpu_dir.join(format!("cpu{cpu}"));
                fs::create_dir_all(&this).expect("cpuN");
                fs::write(this.join("online"), if online { "1\n" } else { "0\n" }).expect("online");
                if online {
                    let topology = this.join("topology");
                    fs::create_dir_all(&topology).expect("topology");
                    fs::write(
                        topology.join("physical_package_id"),
                        format!("{}\n", socket.id),
                    )
                    .expect("package id");
                }
            }
        }
        dir
    }
}

/// A tree with one package zone; returns it and the path of its counter.
fn package_zone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = dir.path().join("intel-rapl:0");
    fs::create_dir(&zone).expect("zone dir");
    fs::write(zone.join("name"), "package-0\n").expect("name");
    fs::write(
        zone.join("max_energy_range_uj"),
        format!("{MAX_RANGE_UJ}\n"),
    )
    .expect("range");
    (dir, zone.join("energy_uj"))
}

/// Fixed width, written in place: a reader never sees a shorter, torn number.
fn write_uj(file: &File, uj: u64) {
    file.write_all_at(format!("{uj:020}\n").as_bytes(), 0)
        .expect("write counter");
}

/// Creates the counter file at `path` holding `uj`; returns it open.
fn open_counter(path: &Path, uj: u64) -> File {
    let file = File::options()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .expect("open counter");
    write_uj(&file, uj);
    file
}

/// (busy, total) jiffies of all CPUs, from the first line of /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
