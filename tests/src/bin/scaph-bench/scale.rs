//! Measure 3: the agent's cost per measurement cycle with many live processes.
use std::time::{Duration, Instant};

use scaph_agent::{
    agent::Agent,
    attribution::IdlePolicy,
    cputime::{bpf::BpfSource, loader::LoadOptions, procfs::ProcfsSource, CpuTimeSource},
    sensors::{EnergySensor, EstimateSensor, LinearModel, Topology},
};

use crate::{
    herd::Herd,
    report::Table,
    util::{self_cpu, stats},
};

/// An agent over `cpu` with the estimate sensor on this machine's topology.
pub fn agent(cpu: Box<dyn CpuTimeSource>) -> Agent {
    let topology = Topology::from_sys_root("/sys".as_ref());
    let sensor: Box<dyn EnergySensor> = Box::new(EstimateSensor::new(
        topology.clone(),
        LinearModel::default(),
    ));
    Agent::new(cpu, Some(sensor), topology, IdlePolicy::Unattributed)
}

/// The two CPU time sources, named: the kernel program and procfs.
pub fn sources() -> [(&'static str, Box<dyn CpuTimeSource>); 2] {
    let bpf = BpfSource::new("/proc".into(), LoadOptions::default()).expect("kernel program");
    [
        ("bpf", Box::new(bpf)),
        (
            "procfs",
            Box::new(ProcfsSource::new("/proc".into()).expect("procfs")),
        ),
    ]
}

/// CPU and wall time of `cycles` cycles, one per second, so that every
/// sleeper (waking each second) appears in every cycle: the steady state,
/// after the cycles that read the `processes` new processes' metadata (at
/// most `LOOKUPS_PER_CYCLE` each; section 7 measures those).
fn measure(mut agent: Agent, processes: usize, cycles: usize) -> (Vec<f64>, Vec<f64>, usize) {
    agent.baseline();
    for _ in 0..processes.div_ceil(scaph_agent::cputime::meta::LOOKUPS_PER_CYCLE) {
        std::thread::sleep(Duration::from_secs(1));
        let _ = agent.cycle();
    }
    let (mut cpu, mut wall, mut seen) = (Vec::new(), Vec::new(), 0);
    for _ in 0..cycles {
        std::thread::sleep(Duration::from_secs(1));
        let (c0, t0) = (self_cpu(), Instant::now());
        let snapshot = agent.cycle();
        wall.push(t0.elapsed().as_secs_f64() * 1e3);
        cpu.push((self_cpu() - c0).as_secs_f64() * 1e3);
        seen = snapshot.processes.len();
    }
    (cpu, wall, seen)
}

pub fn collection_cost(quick: bool, table: &mut Table) {
    let cycles = if quick { 4 } else { 10 };
    for n in [1_000, 10_000] {
        let sleepers = Herd::spawn(n);
        std::thread::sleep(Duration::from_secs(2));
        for (mode, source) in sources() {
            let (cpu, wall, seen) = measure(agent(source), n, cycles);
            let (min, med, max) = stats(&cpu);
            let target = if mode == "bpf" && n == 10_000 {
                "≤ 20 ms"
            } else {
                "—"
            };
            let met = target == "—" || med <= 20.0;
            table.row(&format!("{mode} mode, {n} extra processes ({seen} in the snapshot): agent CPU per cycle"), min, med, max, "ms", target, met);
            let (min, med, max) = stats(&wall);
            table.row(
                &format!("{mode} mode, {n} extra processes: wall time per cycle"),
                min,
                med,
                max,
                "ms",
                "—",
                true,
            );
        }
        drop(sleepers);
    }
}
