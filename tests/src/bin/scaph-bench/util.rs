//! Small helpers: forked workloads, clocks, statistics.
use std::time::Duration;

/// CPU time of this process (all threads), from getrusage.
pub fn self_cpu() -> Duration {
    // SAFETY: rusage is plain data filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live local the kernel fills.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spins until this thread has used `ms` more of CPU time.
pub fn burn_cpu_ms(ms: u64) {
    let target = thread_cpu_ns() + ms * 1_000_000;
    let mut x = 0u64;
    while thread_cpu_ns() < target {
        for i in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

/// Forks a child that runs `work` and exits. The child only computes and
/// sleeps (no locks, no allocation), which is safe after fork in a
/// multi-threaded parent.
pub fn fork_child(work: impl FnOnce()) -> i32 {
    // SAFETY: see above; the child leaves with _exit, never returning.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        work();
        // SAFETY: the forked child ends here without unwinding into the parent's state.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// Reaps a child; returns its CPU time in ns (user + system, as rusage reports it).
pub fn reap(pid: i32, block: bool) -> Option<u64> {
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: waits for a child of ours; the pointers are to live locals.
    let ret = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    (ret == pid).then(|| (tv(usage.ru_utime) + tv(usage.ru_stime)).as_nanos() as u64)
}

/// `n` processes that each wake every `wake_ms` (so they show up in every
/// measurement cycle) until killed.
pub struct Sleepers(Vec<i32>);

impl Sleepers {
    pub fn spawn(n: usize, wake_ms: u64) -> Self {
        let pids = (0..n)
            .map(|_| {
                fork_child(|| loop {
                    let ts = libc::timespec {
                        tv_sec: (wake_ms / 1000) as i64,
                        tv_nsec: ((wake_ms % 1000) * 1_000_000) as i64,
                    };
                    // SAFETY: plain syscall.
                    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
                })
            })
            .collect();
        Self(pids)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: our own children.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &self.0 {
            reap(pid, true);
        }
    }
}

/// (min, median, max) of the values.
pub fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// The p-th percentile (0..=100), nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
    v[rank.min(v.len() - 1)]
}

/// VmRSS of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
