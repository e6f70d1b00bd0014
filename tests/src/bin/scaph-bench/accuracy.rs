//! Measure 6: accuracy against ground truth, bpf and procfs side by side on
//! the same workloads and the same (load-dependent) fake RAPL package.
use std::{
    collections::HashSet,
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
    snapshot::Snapshot,
};
use scaph_integration_tests::powercap::FakeRapl;

use crate::{
    report::Table,
    util::{burn_cpu_ms, fork_child, reap},
};

/// Ground truth of one workload: its pids and their CPU time from wait4.
#[derive(Default)]
struct Truth {
    pids: HashSet<u32>,
    cpu_ns: u64,
}

struct Workloads {
    steady: Truth,
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

/// Starts the three workloads for `secs` and reaps every child as soon as it
/// exits (as a real parent would), recording its rusage.
fn run_workloads(secs: u64, running: Arc<AtomicBool>) -> thread::JoinHandle<Workloads> {
    thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(secs);
        let steady = fork_child(move || burn_cpu_ms(secs * 1000));
        let duty = fork_child(move || {
            while Instant::now() < until {
                burn_cpu_ms(5);
                sleep_ms(15);
            }
        });
        let spawned_all = Arc::new(Mutex::new(Truth::default()));
        let mut pending: Vec<i32> = Vec::new();
        let (mut steady_t, mut duty_t) = (Truth::default(), Truth::default());
        steady_t.pids.insert(steady as u32);
        duty_t.pids.insert(duty as u32);
        let mut live = vec![steady, duty];
        let mut next_spawn = Instant::now();
        while !live.is_empty() || !pending.is_empty() {
            if Instant::now() < until && Instant::now() >= next_spawn {
                // ~200 processes per second, each burning 3 ms and living ~25 ms.
                pending.push(fork_child(|| {
                    burn_cpu_ms(3);
                    sleep_ms(20);
                }));
                next_spawn += Duration::from_millis(5);
            }
            pending.retain(|&pid| match reap(pid, false) {
                Some(ns) => {
                    let mut s = spawned_all.lock().unwrap();
                    s.pids.insert(pid as u32);
                    s.cpu_ns += ns;
                    false
                }
                None => true,
            });
            live.retain(|&pid| match reap(pid, false) {
                Some(ns) if pid == steady => {
                    steady_t.cpu_ns = ns;
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
            steady: steady_t,
            duty: duty_t,
            spawned,
        }
    })
}

fn agent(cpu: Box<dyn CpuTimeSource>, rapl: &FakeRapl) -> Agent {
    let sensor: Box<dyn EnergySensor> =
        Box::new(PowercapSensor::new(&rapl.root()).expect("fake RAPL"));
    Agent::new(
        cpu,
        Some(sensor),
        Topology::from_sys_root("/sys".as_ref()),
        IdlePolicy::Unattributed,
    )
}

/// (CPU ns, joules) the snapshot gives the pids.
fn measured(snapshot: &Snapshot, truth: &Truth) -> (u64, f64) {
    snapshot
        .processes
        .iter()
        .filter(|p| truth.pids.contains(&p.key.pid))
        .fold((0, 0.0), |(ns, j), p| {
            (
                ns + (p.cpu_seconds_total * 1e9).round() as u64,
                j + p.energy.map_or(0.0, |e| e.joules_total),
            )
        })
}

pub fn accuracy(quick: bool, table: &mut Table) {
    let secs = if quick { 5 } else { 20 };
    let rapl = FakeRapl::load_dependent(20.0, 60.0);
    let bpf = BpfSource::new("/proc".into(), LoadOptions::default()).expect("kernel program");
    let mut agents = [
        (
            "bpf",
            agent(Box::new(bpf), &rapl),
            0.0_f64,
            None::<Snapshot>,
        ),
        (
            "procfs",
            agent(
                Box::new(ProcfsSource::new("/proc".into()).expect("procfs")),
                &rapl,
            ),
            0.0,
            None,
        ),
    ];
    for (_, a, _, _) in &mut agents {
        a.baseline();
    }
    let running = Arc::new(AtomicBool::new(true));
    let workloads = run_workloads(secs, running.clone());
    let mut extra = 2;
    while extra > 0 {
        thread::sleep(Duration::from_secs(1));
        if !running.load(Ordering::Relaxed) {
            extra -= 1;
        }
        for (_, a, interval, last) in &mut agents {
            let snapshot = a.cycle();
            *interval += snapshot.interval.as_secs_f64();
            *last = Some(snapshot);
        }
    }
    let w = workloads.join().expect("workload thread");
    let ncpus = aya::util::online_cpus().map(|c| c.len()).unwrap_or(1) as f64;
    for (mode, _, interval, last) in &agents {
        let snap = last.as_ref().expect("snapshots");
        let host = snap.host.map_or(0.0, |h| h.joules_total);
        for (name, truth) in [
            ("steady burner", &w.steady),
            ("25 % duty burner", &w.duty),
            ("spawner, ~200 procs/s of ≤ 50 ms", &w.spawned),
        ] {
            let (ns, joules) = measured(snap, truth);
            let cpu_err = (ns as f64 - truth.cpu_ns as f64) / truth.cpu_ns.max(1) as f64 * 100.0;
            let share_err =
                (joules / host - truth.cpu_ns as f64 / 1e9 / (interval * ncpus)) * 100.0;
            table.figure(
                &format!(
                    "{mode}: {name}, CPU time vs rusage ({} processes)",
                    truth.pids.len()
                ),
                cpu_err,
                "% error",
                "—",
                true,
            );
            table.figure(
                &format!("{mode}: {name}, energy share − true CPU share"),
                share_err,
                "points",
                "—",
                true,
            );
        }
        let (ns, _) = measured(snap, &w.spawned);
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
