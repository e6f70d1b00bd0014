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
    status_bytes(pid, "VmRSS")
}

/// A size field of `/proc/PID/status` (`VmRSS`, `VmHWM`, …), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The CPU time of process `pid`, ns: its process CPU-time clock, the
/// scheduler's accounting of all its threads, exited ones included.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: writes the clock's id into a live local; returns an error
    // number (no process of that id) rather than setting errno.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec we own.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// The mean of some samples with its two-sided confidence interval
/// (Student's t, samples taken as independent).
#[derive(Clone, Copy, Debug)]
pub struct MeanInterval {
    pub low: f64,
    pub mean: f64,
    pub high: f64,
}

impl MeanInterval {
    /// At 95 %.
    pub fn of(values: &[f64]) -> Self {
        Self::with_confidence(values, 0.95)
    }

    /// At `confidence` (0.95 for 95 %).
    pub fn with_confidence(values: &[f64], confidence: f64) -> Self {
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
        let half = t_quantile(1.0 - (1.0 - confidence) / 2.0, n - 1) * (var / n as f64).sqrt();
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

/// The `p` quantile (0.5 < p < 1) of Student's t with `df` degrees of
/// freedom: the normal quantile corrected by the Cornish-Fisher expansion
/// (Abramowitz & Stegun 26.7.5, four terms), within 0.5 % of the tables
/// from 5 degrees of freedom on, and exact (three decimals, 97.5 %) below.
fn t_quantile(p: f64, df: usize) -> f64 {
    const T_975: [f64; 4] = [12.706, 4.303, 3.182, 2.776];
    if (p - 0.975).abs() < 1e-12 {
        if let Some(&t) = df.checked_sub(1).and_then(|i| T_975.get(i)) {
            return t;
        }
    }
    let (z, n) = (normal_quantile(p), df as f64);
    let g1 = (z.powi(3) + z) / 4.0;
    let g2 = (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0;
    let g3 = (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / 384.0;
    let g4 = (79.0 * z.powi(9) + 776.0 * z.powi(7) + 1482.0 * z.powi(5)
        - 1920.0 * z.powi(3)
        - 945.0 * z)
        / 92_160.0;
    z + g1 / n + g2 / n.powi(2) + g3 / n.powi(3) + g4 / n.powi(4)
}

/// The standard normal's `p` quantile (Acklam's rational approximation,
/// relative error below 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let poly = |coeffs: &[f64], x: f64| coeffs.iter().fold(0.0, |acc, c| acc * x + c);
    let tail = |q: f64| {
        let q = (-2.0 * q.ln()).sqrt();
        poly(&C, q) / (poly(&D, q) * q + 1.0)
    };
    const LOW: f64 = 0.024_25;
    if p < LOW {
        tail(p)
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        poly(&A, r) * q / (poly(&B, r) * r + 1.0)
    } else {
        -tail(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        for (p, df, t) in [
            (0.975, 1, 12.706),
            (0.975, 5, 2.571),
            (0.975, 10, 2.228),
            (0.975, 20, 2.086),
            (0.975, 30, 2.042),
            (0.975, 120, 1.980),
            (0.995, 10, 3.169),
            (0.995, 20, 2.845),
            (0.995, 40, 2.704),
            (0.9995, 20, 3.850),
            (0.9995, 60, 3.460),
        ] {
            let got = t_quantile(p, df);
            assert!(
                (got / t - 1.0).abs() < 0.005,
                "p {p}, df {df}: {got} vs {t}"
            );
        }
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-6);
        assert!((normal_quantile(0.01) + 2.326_348).abs() < 1e-6);
    }

    #[test]
    fn the_process_clock_counts_this_process_and_knows_no_dead_one() {
        burn_cpu_ms(20);
        let clock = process_cpu_ns(std::process::id()).expect("our own CPU clock");
        let rusage = self_cpu().as_nanos() as u64;
        // getrusage has tick resolution on some kernels: a tick apart at most.
        assert!(clock >= 20_000_000 && clock.abs_diff(rusage) < 20_000_000);
        let pid = fork_child(|| {});
        reap(pid, true);
        assert_eq!(process_cpu_ns(pid as u32), None);
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
