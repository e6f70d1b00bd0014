//! A fake powercap tree whose package counter rises at a known power, written
//! by a background thread, for end-to-end energy tests.
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

/// RAPL's usual range on Intel: the counter wraps after this many µJ.
pub const MAX_RANGE_UJ: u64 = 262_143_328_850;

pub struct FakeRapl {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    writer: Option<thread::JoinHandle<()>>,
}

impl FakeRapl {
    /// One package (`intel-rapl:0`, `package-0`) drawing `watts`, starting
    /// `start_uj` below the wrap point so tests cross a wrap when they want.
    pub fn start(watts: f64, start_uj: u64) -> Self {
        let (dir, counter) = package_zone();
        write_counter(&counter, start_uj);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let uj = start_uj + (watts * 1e6 * t0.elapsed().as_secs_f64()) as u64;
                    write_counter(&counter, uj % (MAX_RANGE_UJ + 1));
                    thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            dir,
            stop,
            writer: Some(writer),
        }
    }

    /// One package whose power follows the host's CPU use, as a real one
    /// roughly does: `idle_watts + (max_watts − idle_watts) × busy`, with
    /// `busy` read from /proc/stat every few ms.
    pub fn load_dependent(idle_watts: f64, max_watts: f64) -> Self {
        let (dir, counter) = package_zone();
        write_counter(&counter, 0);
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
                    write_counter(&counter, uj as u64 % (MAX_RANGE_UJ + 1));
                }
            })
        };
        Self {
            dir,
            stop,
            writer: Some(writer),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for FakeRapl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
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
fn write_counter(path: &Path, uj: u64) {
    let file = File::options()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .expect("open counter");
    file.write_all_at(format!("{uj:020}\n").as_bytes(), 0)
        .expect("write counter");
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
