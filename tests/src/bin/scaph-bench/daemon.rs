//! Measure 8: what the whole `scaph prometheus` daemon costs, seen from
//! outside as an operator would see it: every thread of the real process,
//! default options (step 2 s), a RAPL-shaped fake powercap tree, and one
//! `/metrics` scrape per step, with 1,000 and 10,000 extra processes that
//! each wake every second.
//!
//! * CPU per cycle: the growth of the daemon's process CPU-time clock
//!   (`clock_getcpuclockid`: the scheduler's accounting of all its threads,
//!   those that exited included, in ns) over a window of whole steps,
//!   divided by the steps: the steady state. The window starts two cycles
//!   after every extra process's metadata was read (at most
//!   `LOOKUPS_PER_CYCLE` per cycle: a one-time catch-up after start). Beside it: the coarse `/proc/PID/stat` figure over
//!   the same window (10 ms ticks), and per thread name the growth of
//!   `/proc/PID/task/TID/schedstat` (live threads only; what exited
//!   threads used is the rest).
//! * First cycle: the same clock from exec until the first `/metrics`
//!   response with a process series (polled every 20 ms), minus the median
//!   of the same for starts with no extra processes (which holds loading
//!   the kernel program, and the polls): the marginal cost of the processes.
//! * Memory: `VmRSS` at the end of the window, and `VmHWM` (its peak).
//!
//! Every measure must be able to fail: the daemon must still run (not even
//! as a zombie) at the end of each, and every scrape of the window must
//! return a body.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use scaph_integration_tests::powercap::FakeRapl;

use crate::{
    herd::Herd,
    report::{Table, Verdict},
    serve::Scaph,
    util::{process_cpu_ns, stats, status_bytes},
};

/// The daemon's step (its default).
const STEP: Duration = Duration::from_secs(2);
/// Give up waiting for the first exposition with process series after this.
const FIRST_CYCLE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn whole_daemon(quick: bool, table: &mut Table) {
    let rapl = FakeRapl::start(40.0, 0);
    let args = rapl.scaph_args();
    // Idle starts vary by ±100 ms of CPU (loading the kernel program
    // dominates them): their median is subtracted.
    let (window_steps, idle_starts) = if quick { (5, 3) } else { (15, 5) };

    let idle: Vec<f64> = (0..idle_starts)
        .map(|_| first_exposition(&mut Scaph::spawn(&args)).cpu_ms)
        .collect();
    let (idle_min, idle_first, idle_max) = stats(&idle);
    table.row(
        &format!("no extra processes: CPU from exec to the first exposition with process series, process CPU clock ({idle_starts} idle starts; their median is subtracted below)"),
        idle_min,
        idle_first,
        idle_max,
        "ms",
        "—",
        true,
    );

    for (n, target_ms) in [(1_000, 2.0), (10_000, 10.0)] {
        let herd = Herd::spawn(n);
        std::thread::sleep(Duration::from_secs(2)); // every sleeper has woken
        let mut scaph = Scaph::spawn(&args);
        let first = first_exposition(&mut scaph);
        let marginal = first.cpu_ms - idle_first;
        let (target, met) = if n == 10_000 {
            ("≤ 250 ms", marginal <= 250.0)
        } else {
            ("—", true)
        };
        table.figure(
            &format!(
                "{n} processes: marginal CPU of their first cycle — exec to the first exposition with process series ({:.1} ms by the process CPU clock, {:.0} ms by /proc/PID/stat's 10 ms ticks; {:.1} s of wall time) minus the idle starts' median",
                first.cpu_ms, first.stat_ms, first.wall_s
            ),
            marginal,
            "ms",
            target,
            met,
        );

        // The metadata of new processes is read at most LOOKUPS_PER_CYCLE
        // per cycle: wait until every sleeper's is in (a one-time cost, in
        // the first-cycle row and the cycles after it), then two more
        // cycles, then the steady-state window.
        let catch_up = n.div_ceil(scaph_agent::cputime::meta::LOOKUPS_PER_CYCLE);
        std::thread::sleep((2 + u32::try_from(catch_up).unwrap_or(u32::MAX)) * STEP);
        let window = measure_window(&scaph, window_steps);
        scaph.assert_running();
        let (min, _, max) = stats(&window.per_step_ms);
        let mean = window.mean_ms();
        table.verdict_row(
            &format!(
                "{n} processes: CPU per cycle, all threads (exited ones included: process CPU clock), one scrape per step — columns are min / mean / max over {window_steps} steps ({:.2} ms per cycle by /proc/PID/stat's utime+stime, 10 ms ticks)",
                window.stat_ms / window_steps as f64
            ),
            [min, mean, max],
            "ms",
            &format!("≤ {target_ms} ms"),
            Verdict::of(mean <= target_ms),
        );
        for (comm, (threads, ms)) in window.by_thread() {
            table.figure(
                &format!("{n} processes: of which thread `{comm}` (×{threads})"),
                ms / window_steps as f64,
                "ms per cycle",
                "—",
                true,
            );
        }
        table.figure(
            &format!("{n} processes: of which threads that exited during the window"),
            window.exited_ms() / window_steps as f64,
            "ms per cycle",
            "—",
            true,
        );
        let rss = status_bytes(scaph.pid(), "VmRSS").expect("the daemon's VmRSS") as f64 / 1e6;
        let peak = status_bytes(scaph.pid(), "VmHWM").expect("the daemon's VmHWM") as f64 / 1e6;
        let (target, met) = if n == 10_000 {
            ("≤ 20 MB", rss <= 20.0)
        } else {
            ("—", true)
        };
        table.figure(
            &format!(
                "{n} processes, default `--max-processes`: RSS (VmRSS) at the end of the window"
            ),
            rss,
            "MB",
            target,
            met,
        );
        table.figure(
            &format!("{n} processes, default `--max-processes`: peak RSS since exec (VmHWM)"),
            peak,
            "MB",
            "—",
            true,
        );
        scaph.assert_running();
        drop(scaph);
        drop(herd);
    }
}

/// The daemon's CPU from exec to its first exposition with process series.
struct FirstExposition {
    /// By the process CPU clock, ms.
    cpu_ms: f64,
    /// By `/proc/PID/stat` (10 ms ticks), ms.
    stat_ms: f64,
    wall_s: f64,
}

/// Polls `/metrics` until a response has a process series.
fn first_exposition(scaph: &mut Scaph) -> FirstExposition {
    let started = Instant::now();
    loop {
        let body = scaph.scrape();
        if body.is_some_and(|b| b.lines().any(|l| l.starts_with("scaph_process_"))) {
            let cpu_ns = process_cpu_ns(scaph.pid()).expect("the daemon's CPU clock");
            let stat_ms = stat_cpu_ms(scaph.pid()).expect("the daemon's /proc/PID/stat");
            scaph.assert_running();
            return FirstExposition {
                cpu_ms: cpu_ns as f64 / 1e6,
                stat_ms,
                wall_s: started.elapsed().as_secs_f64(),
            };
        }
        scaph.assert_running();
        assert!(
            started.elapsed() < FIRST_CYCLE_TIMEOUT,
            "scaph prometheus served no process series within {FIRST_CYCLE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the daemon used over a window of whole steps.
struct Window {
    /// CPU of each step by the process CPU clock, ms.
    per_step_ms: Vec<f64>,
    /// Per live thread id: its name and its CPU over the window, ns.
    threads: HashMap<u32, (String, u64)>,
    /// The growth of `utime + stime` from /proc/PID/stat over the window, ms.
    stat_ms: f64,
}

impl Window {
    fn mean_ms(&self) -> f64 {
        self.per_step_ms.iter().sum::<f64>() / self.per_step_ms.len().max(1) as f64
    }

    /// What the process clock counted that no live thread's schedstat
    /// did: the threads that exited during the window, ms.
    fn exited_ms(&self) -> f64 {
        let live: u64 = self.threads.values().map(|(_, ns)| ns).sum();
        (self.per_step_ms.iter().sum::<f64>() - live as f64 / 1e6).max(0.0)
    }

    /// CPU ms over the window per thread name, with the number of threads
    /// of that name, busiest first.
    fn by_thread(&self) -> Vec<(String, (usize, f64))> {
        let mut by_name: HashMap<&str, (usize, f64)> = HashMap::new();
        for (name, ns) in self.threads.values() {
            let entry = by_name.entry(name).or_default();
            entry.0 += 1;
            entry.1 += *ns as f64 / 1e6;
        }
        let mut rows: Vec<_> = by_name
            .into_iter()
            .map(|(name, v)| (name.to_owned(), v))
            .collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        rows
    }
}

/// Scrapes once per step for `steps` steps and samples the process clock
/// and every thread's on-CPU time after each scrape.
fn measure_window(scaph: &Scaph, steps: usize) -> Window {
    let pid = scaph.pid();
    let clock = || process_cpu_ns(pid).expect("the daemon's CPU clock");
    let stat_start = stat_cpu_ms(pid).expect("the daemon's /proc/PID/stat");
    let mut last_clock = clock();
    let mut last = thread_times(pid);
    let mut threads: HashMap<u32, (String, u64)> = HashMap::new();
    let mut per_step_ms = Vec::new();
    let mut next = Instant::now();
    for step in 0..steps {
        next += STEP;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        scaph
            .scrape()
            .unwrap_or_else(|| panic!("scaph prometheus served no /metrics at step {step}"));
        let now_clock = clock();
        let now = thread_times(pid);
        for (tid, (name, ns)) in &now {
            // A thread born in the step ran all its time in it.
            let ran = ns.saturating_sub(last.get(tid).map_or(0, |(_, before)| *before));
            threads.entry(*tid).or_insert_with(|| (name.clone(), 0)).1 += ran;
        }
        per_step_ms.push(now_clock.saturating_sub(last_clock) as f64 / 1e6);
        (last_clock, last) = (now_clock, now);
    }
    let stat_ms = stat_cpu_ms(pid).expect("the daemon's /proc/PID/stat") - stat_start;
    Window {
        per_step_ms,
        threads,
        stat_ms,
    }
}

/// Every live thread of `pid`: its name and its on-CPU time, ns (the first
/// field of `/proc/PID/task/TID/schedstat`). Never empty: a running
/// process has a thread.
fn thread_times(pid: u32) -> HashMap<u32, (String, u64)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("listing /proc/{pid}/task: {e}"));
    let times: HashMap<_, _> = dir
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path();
            let ns = std::fs::read_to_string(path.join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            Some((tid, (name.trim_end().to_owned(), ns)))
        })
        .collect();
    assert!(
        !times.is_empty(),
        "no thread of the daemon (pid {pid}) has a schedstat"
    );
    times
}

/// `utime + stime` of the whole process (every thread, dead ones included), ms.
fn stat_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace().skip(11); // fields 14 and 15
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 * 1e3 / u64::try_from(ticks).unwrap_or(100).max(1) as f64)
}
