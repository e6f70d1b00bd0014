//! Measure 6: accuracy against independent expectations, bpf and procfs side
//! by side on the same workloads. The fake RAPL package draws a constant
//! power, so under the default idle policy each process's energy must be
//! `WATTS × its CPU seconds (wait4) / CPUs of the socket`: a figure computed
//! here from the kernel's rusage, not by scaph.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use scaph_agent::{
    agent::Agent,
    attribution::IdlePolicy,
    cputime::{bpf::BpfSource, loader::LoadOptions, procfs::ProcfsSource, CpuTimeSource},
    sensors::{EnergySensor, PowercapSensor, Topology},
    snapshot::{ProcessSnapshot, Snapshot},
};
use scaph_integration_tests::powercap::FakeRapl;

use crate::{
    report::Table,
    util::{burn_cpu_ms, fork_child, reap, stats},
};

/// Ground truth of one workload: its processes and their CPU time from wait4.
#[derive(Default)]
struct Truth {
    procs: Vec<Started>,
    cpu_ns: u64,
}

/// A forked child as it was just after the fork: a pid is reused within
/// seconds under the spawner, so a process is matched by its start time
/// and name as well.
#[derive(Clone, Copy)]
struct Started {
    pid: u32,
    /// From `/proc/PID/stat`, in ns since boot (clock-tick resolution).
    start_ns: u64,
}

impl Started {
    /// Reads the child's start time; it is ours and not yet reaped, so its
    /// `/proc` entry (a zombie's at worst) is there.
    fn of(pid: i32) -> Self {
        let start_ns = start_ticks(pid).unwrap_or(0) * tick_ns();
        Self {
            pid: pid as u32,
            start_ns,
        }
    }

    /// Whether the snapshot's process is this one: same pid, a start time
    /// within a tick (when the source knows it), and the name of this
    /// program (forked children keep it).
    fn is(&self, p: &ProcessSnapshot, comm: &str) -> bool {
        p.key.pid == self.pid
            && &*p.comm == comm
            && (p.key.start_ns == 0
                || self.start_ns == 0
                || p.key.start_ns.abs_diff(self.start_ns) <= tick_ns() + 1_000_000)
    }
}

impl Truth {
    fn add(&mut self, pid: i32) {
        self.procs.push(Started::of(pid));
    }
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / u64::try_from(ticks).unwrap_or(100).max(1)
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot).
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// This program's kernel name, which its forked children share.
fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_default()
}

/// The online CPUs of physical package `socket`, from sysfs directly (not
/// from scaph's own topology, which is what is measured).
fn cpus_of_socket(socket: u32) -> Vec<u32> {
    let base = std::path::Path::new("/sys/devices/system/cpu");
    let mut cpus: Vec<u32> = std::fs::read_dir(base)
        .map(|dir| {
            dir.filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("cpu")?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default();
    cpus.retain(|cpu| {
        let dir = base.join(format!("cpu{cpu}"));
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        // cpu0 often has no `online` file: it cannot go offline.
        let online = read("online").is_none_or(|v| v.trim() == "1");
        let package = read("topology/physical_package_id").and_then(|v| v.trim().parse().ok());
        online && package == Some(socket)
    });
    cpus.sort_unstable();
    cpus
}

/// The fake package's constant power.
const WATTS: f64 = 40.0;

struct Workloads {
    pinned: Truth,
    duty: Truth,
    spawned: Truth,
}

fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: (ms * 1_000_000) as i64,
    };
    // SAFETY: plain syscall.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Restricts the calling thread (and what it forks later) to `cpus`.
fn pin(cpus: &[u32]) {
    // SAFETY: cpu_set_t is plain data; 0 is the calling thread; a plain
    // syscall, also safe in a forked child.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu as usize, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// Starts the three workloads on the CPUs of socket 0 (the fake package's)
/// for `secs` and reaps every child as soon as it exits (as a real parent
/// would), recording its rusage: a burner pinned to `pinned_cpu`, a burner
/// on 30 % of the time (6 ms on, 14 ms off), and a spawner of short
/// processes (~200 per second, each burning 3 ms and living ~25 ms).
fn run_workloads(
    secs: u64,
    socket_cpus: Vec<u32>,
    pinned_cpu: u32,
    running: Arc<AtomicBool>,
) -> thread::JoinHandle<Workloads> {
    thread::spawn(move || {
        pin(&socket_cpus);
        let until = Instant::now() + Duration::from_secs(secs);
        let pinned = fork_child(move || {
            pin(&[pinned_cpu]);
            burn_cpu_ms(secs * 1000)
        });
        let duty = fork_child(move || {
            while Instant::now() < until {
                burn_cpu_ms(6);
                sleep_ms(14);
            }
        });
        let spawned_all = Arc::new(Mutex::new(Truth::default()));
        let mut pending: Vec<Started> = Vec::new();
        let (mut pinned_t, mut duty_t) = (Truth::default(), Truth::default());
        pinned_t.add(pinned);
        duty_t.add(duty);
        let mut live = vec![pinned, duty];
        let mut next_spawn = Instant::now();
        while !live.is_empty() || !pending.is_empty() {
            if Instant::now() < until && Instant::now() >= next_spawn {
                pending.push(Started::of(fork_child(|| {
                    burn_cpu_ms(3);
                    sleep_ms(20);
                })));
                next_spawn += Duration::from_millis(5);
            }
            pending.retain(|started| match reap(started.pid as i32, false) {
                Some(ns) => {
                    let mut s = spawned_all.lock().unwrap();
                    s.procs.push(*started);
                    s.cpu_ns += ns;
                    false
                }
                None => true,
            });
            live.retain(|&pid| match reap(pid, false) {
                Some(ns) if pid == pinned => {
                    pinned_t.cpu_ns = ns;
                    false
                }
                Some(ns) => {
                    duty_t.cpu_ns = ns;
                    false
                }
                None => true,
            });
            thread::sleep(Duration::from_millis(1));
        }
        running.store(false, Ordering::Relaxed);
        let spawned = std::mem::take(&mut *spawned_all.lock().unwrap());
        Workloads {
            pinned: pinned_t,
            duty: duty_t,
            spawned,
        }
    })
}

fn agent(cpu: Box<dyn CpuTimeSource>, rapl: &FakeRapl, topology: Topology) -> Agent {
    let sensor: Box<dyn EnergySensor> =
        Box::new(PowercapSensor::new(&rapl.root()).expect("fake RAPL"));
    Agent::new(cpu, Some(sensor), topology, IdlePolicy::Unattributed)
}

/// (CPU ns, joules) the snapshot gives the workload's processes.
fn measured(snapshot: &Snapshot, truth: &Truth, comm: &str) -> (u64, f64) {
    snapshot
        .processes
        .iter()
        .filter(|p| truth.procs.iter().any(|t| t.is(p, comm)))
        .fold((0, 0.0), |(ns, j), p| {
            (
                ns + (p.cpu_seconds_total * 1e9).round() as u64,
                j + p.energy.map_or(0.0, |e| e.joules_total),
            )
        })
}

pub fn accuracy(quick: bool, table: &mut Table) {
    let secs = if quick { 5 } else { 20 };
    let rapl = FakeRapl::start(WATTS, 0);
    let topology = Topology::from_sys_root("/sys".as_ref());
    let socket_cpus = cpus_of_socket(0);
    let comm = own_comm();
    let pinned_cpu = *socket_cpus.last().expect("socket 0 has CPUs");
    let bpf = BpfSource::new("/proc".into(), LoadOptions::default()).expect("kernel program");
    let procfs = ProcfsSource::new("/proc".into()).expect("procfs");
    let mut agents = [
        (
            "bpf",
            agent(Box::new(bpf), &rapl, topology.clone()),
            Vec::<(f64, f64)>::new(),
            None::<Snapshot>,
        ),
        (
            "procfs",
            agent(Box::new(procfs), &rapl, topology),
            Vec::new(),
            None,
        ),
    ];
    for (_, a, _, _) in &mut agents {
        a.baseline();
    }
    let running = Arc::new(AtomicBool::new(true));
    let workloads = run_workloads(secs, socket_cpus.clone(), pinned_cpu, running.clone());
    let mut extra = 2;
    while extra > 0 {
        thread::sleep(Duration::from_secs(1));
        if !running.load(Ordering::Relaxed) {
            extra -= 1;
        }
        for (_, a, cycles, last) in &mut agents {
            let snapshot = a.cycle();
            let watts = snapshot.host.map_or(0.0, |h| h.watts);
            cycles.push((snapshot.interval.as_secs_f64(), watts));
            *last = Some(snapshot);
        }
    }
    let w = workloads.join().expect("workload thread");
    let cpus = socket_cpus.len() as f64;
    for (mode, _, cycles, last) in &agents {
        let snap = last.as_ref().expect("snapshots");
        // How far the fake package's energy, as read between the cycles,
        // is from its nominal power, in all and per cycle: a process's
        // energy can be no closer than the cycles it ran in (the package's
        // writer thread lags under load, and the energy is read just after
        // the CPU time, so the two windows differ a little).
        let interval: f64 = cycles.iter().map(|(secs, _)| secs).sum();
        let host = snap.host.map_or(0.0, |h| h.joules_total);
        table.figure(
            &format!("{mode}: host energy vs {WATTS} W × {interval:.1} s of intervals"),
            (host / (WATTS * interval) - 1.0) * 100.0,
            "% error",
            "—",
            true,
        );
        let per_cycle: Vec<f64> = cycles
            .iter()
            .map(|(_, watts)| (watts / WATTS - 1.0) * 100.0)
            .collect();
        let (min, median, max) = stats(&per_cycle);
        table.row(
            &format!(
                "{mode}: host power per cycle vs {WATTS} W ({} cycles)",
                cycles.len()
            ),
            min,
            median,
            max,
            "% error",
            "—",
            true,
        );
        for (name, truth) in [
            (format!("burner pinned to CPU {pinned_cpu}"), &w.pinned),
            ("burner on 30 % of the time".to_owned(), &w.duty),
            ("spawner, ~200 procs/s of ≤ 50 ms".to_owned(), &w.spawned),
        ] {
            let (ns, joules) = measured(snap, truth, &comm);
            let cpu_err = (ns as f64 - truth.cpu_ns as f64) / truth.cpu_ns.max(1) as f64 * 100.0;
            table.figure(
                &format!(
                    "{mode}: {name}, CPU time vs rusage ({} processes)",
                    truth.procs.len()
                ),
                cpu_err,
                "% error",
                "—",
                true,
            );
            let expected = WATTS * truth.cpu_ns as f64 / 1e9 / cpus;
            let energy_err = (joules - expected) / expected.max(1e-9) * 100.0;
            table.figure(
                &format!("{mode}: {name}, energy vs {WATTS} W × CPU time (rusage) / {cpus} CPUs ({expected:.2} J)"),
                energy_err,
                "% error",
                "—",
                true,
            );
        }
        let (ns, _) = measured(snap, &w.spawned, &comm);
        let captured = ns as f64 / w.spawned.cpu_ns.max(1) as f64 * 100.0;
        let target = if *mode == "bpf" { "≥ 99 %" } else { "—" };
        table.figure(
            &format!("{mode}: short-lived processes' CPU time captured"),
            captured,
            "%",
            target,
            *mode != "bpf" || captured >= 99.0,
        );
        let processes: f64 = snap
            .processes
            .iter()
            .filter_map(|p| p.energy)
            .map(|e| e.joules_total)
            .sum();
        let residual =
            processes + snap.retired_joules + snap.idle.map_or(0.0, |i| i.joules_total) - host;
        table.figure(
            &format!("{mode}: conservation residual Σ processes + idle − host (host {host:.1} J)"),
            residual,
            "J",
            "0",
            residual.abs() < 1e-6,
        );
    }
}
