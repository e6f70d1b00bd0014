//! End to end on the real kernel: a fake RAPL package drawing a known power,
//! a burner pinned to one CPU with a known CPU time, and the agent's own
//! cycle. The burner's energy share must match its true CPU share, and every
//! joule of the host must be accounted for.
use std::time::Duration;

use scaph_agent::{
    agent::Agent,
    attribution::IdlePolicy,
    cputime::{bpf::BpfSource, loader::LoadOptions, procfs::ProcfsSource, CpuTimeSource},
    sensors::{EnergySensor, PowercapSensor, Topology},
    snapshot::Snapshot,
};
use scaph_integration_tests::{burn, powercap::FakeRapl, require_root};

const WATTS: f64 = 40.0;

struct Run {
    snapshots: Vec<Snapshot>,
    burner_pid: u32,
    burner_ns: u64,
}

/// Cycles every 250 ms while a burner pinned to CPU 1 burns 1.5 s, and two
/// cycles after it exited. The counter starts 30 J before its wrap point.
fn run(cpu: Box<dyn CpuTimeSource>) -> Run {
    let rapl = FakeRapl::start(
        WATTS,
        scaph_integration_tests::powercap::MAX_RANGE_UJ - 30_000_000,
    );
    let sensor: Box<dyn EnergySensor> =
        Box::new(PowercapSensor::new(&rapl.root()).expect("fake tree"));
    let mut agent = Agent::new(
        cpu,
        Some(sensor),
        Topology::from_sys_root(&rapl.sys_root()),
        IdlePolicy::Unattributed,
    );
    agent.baseline();
    let children_before = children_cpu_ns();
    let child = burn(&["--cpu", "1", "--ms", "1500"]);
    let burner_pid = child.id();
    let mut snapshots = Vec::new();
    let mut child = Some(child);
    let mut burner_ns = 0;
    // Up to 30 s: with other builds running, 1.5 s of CPU 1 was seen to take
    // 9.4 s of wall time. The loop ends two cycles after the burner exits.
    for _ in 0..120 {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(c) = child.as_mut() {
            // Reap as soon as it exits so that its rusage is the ground truth.
            let mut status = 0;
            // SAFETY: non-blocking status check of our own child.
            if unsafe { libc::waitpid(c.id() as i32, &mut status, libc::WNOHANG) } == 0 {
                snapshots.push(agent.cycle());
                continue;
            }
            // Reaped: its CPU time is now in this process's children rusage.
            child = None;
            burner_ns = children_cpu_ns() - children_before;
        }
        snapshots.push(agent.cycle());
        if child.is_none() && snapshots.len() >= 3 && burner_ns > 0 {
            snapshots.push(agent.cycle());
            break;
        }
    }
    assert!(burner_ns > 0, "the burner did not finish in 30 s");
    Run {
        snapshots,
        burner_pid,
        burner_ns,
    }
}

/// CPU time of all reaped children of this test process (the test binary runs
/// one test at a time, so the difference around a run is the burner's).
fn children_cpu_ns() -> u64 {
    // SAFETY: rusage is plain data filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live local the kernel fills.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

fn check(run: &Run, label: &str) -> f64 {
    let last = run.snapshots.last().expect("snapshots");
    let host = last.host.expect("host energy").joules_total;
    let interval: f64 = run.snapshots.iter().map(|s| s.interval.as_secs_f64()).sum();
    eprintln!(
        "{label}: host {host:.3} J over {interval:.3} s ({:.2} W, fake RAPL draws {WATTS} W)",
        host / interval
    );
    assert!(
        (host / interval - WATTS).abs() / WATTS < 0.02,
        "host power {:.3} W",
        host / interval
    );

    // Conservation: Σ processes + retired + idle = host, in the output.
    let processes: f64 = last
        .processes
        .iter()
        .filter_map(|p| p.energy)
        .map(|e| e.joules_total)
        .sum();
    let idle = last.idle.expect("idle energy").joules_total;
    let residual = processes + last.retired_joules + idle - host;
    eprintln!("{label}: processes {processes:.6} J + idle {idle:.6} J - host = {residual:.3e} J");
    assert!(
        residual.abs() < 1e-9 * host.max(1.0),
        "conservation residual {residual} J"
    );

    // The fake package's socket holds every online CPU (FakeRapl::sys_root).
    let ncpus = FakeRapl::cpus() as f64;
    let burner = last
        .processes
        .iter()
        .find(|p| p.key.pid == run.burner_pid)
        .expect("burner in the output");
    let energy_share = burner.energy.expect("burner energy").joules_total / host;
    let true_cpu_share = run.burner_ns as f64 / 1e9 / (interval * ncpus);
    let error = (energy_share - true_cpu_share).abs();
    eprintln!(
        "{label}: burner energy share {:.4} %, true CPU share {:.4} % (rusage), error {:.4} points",
        energy_share * 100.0,
        true_cpu_share * 100.0,
        error * 100.0
    );
    error
}

#[test]
fn bpf_energy_share_matches_cpu_share_and_adds_up() {
    require_root();
    let cpu = BpfSource::new("/proc".into(), LoadOptions::default()).expect("kernel program");
    let run = run(Box::new(cpu));
    let error = check(&run, "bpf");
    // 6 runs on the shared 2-CPU VM: 0.017–0.048 points; the limit is about
    // 4× the worst seen, so that other load on the VM does not make it flaky.
    assert!(
        error < 0.002,
        "share error {:.3} points (limit 0.2)",
        error * 100.0
    );
}

/// procfs mode on the same run: conservation holds by construction; the
/// share error is printed (procfs loses the burner's last interval, up to
/// one 250 ms step of 1.5 s: 1.5–8.6 points in 6 runs).
#[test]
fn procfs_energy_figure() {
    let cpu = ProcfsSource::new("/proc".into()).expect("procfs");
    let run = run(Box::new(cpu));
    let error = check(&run, "procfs");
    // Losing one whole 250 ms step costs about 5.6 points here, and a step
    // stretches when the VM is loaded: 25 points allows the lost step to be
    // four steps long, and still tells a burner that was missed entirely
    // (its share is about 35 points).
    assert!(
        error < 0.25,
        "share error {:.1} points (limit 25)",
        error * 100.0
    );
}
