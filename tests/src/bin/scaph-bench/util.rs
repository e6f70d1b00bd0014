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

/// The mean of some samples with its two-sided 95 % confidence interval
/// (Student's t, samples taken as independent).
#[derive(Clone, Copy, Debug)]
pub struct MeanInterval {
    pub low: f64,
    pub mean: f64,
    pub high: f64,
}

impl MeanInterval {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n < 2 {
            let mean = values.first().copied().unwrap_or(f64::NAN);
            return Self {
                low: f64::NEG_INFINITY,
                mean,
                high: f64::INFINITY,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = t_975(n - 1) * (var / n as f64).sqrt();
        Self {
            low: mean - half,
            mean,
            high: mean + half,
        }
    }

    /// Whether the interval lies wholly on one side of `target`.
    pub fn decides(&self, target: f64) -> bool {
        self.high <= target || self.low > target
    }
}

/// The 97.5th percentile of Student's t with `df` degrees of freedom
/// (exact to three decimals up to 10, then the Cornish-Fisher expansion,
/// within 0.1 % from there on).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    if let Some(&t) = df.checked_sub(1).and_then(|i| TABLE.get(i)) {
        return t;
    }
    let (z, df) = (1.959_964_f64, df as f64);
    z + (z.powi(3) + z) / (4.0 * df)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        for (df, t) in [
            (1, 12.706),
            (10, 2.228),
            (20, 2.086),
            (30, 2.042),
            (120, 1.980),
        ] {
            assert!(
                (t_975(df) - t).abs() < 0.003,
                "df {df}: {} vs {t}",
                t_975(df)
            );
        }
    }

    #[test]
    fn an_interval_decides_only_when_it_excludes_the_target() {
        let tight = MeanInterval::of(&[1.0, 1.2, 0.8, 1.1, 0.9]);
        assert!((tight.mean - 1.0).abs() < 1e-12);
        assert!(tight.low < 1.0 && tight.high > 1.0 && tight.high < 5.0);
        assert!(tight.decides(5.0));
        assert!(!MeanInterval::of(&[0.0, 10.0, 2.0, 8.0]).decides(5.0));
        assert!(!MeanInterval::of(&[3.0]).decides(5.0));
    }
}
