//! The cycle end to end with scripted sources: what the snapshot carries.
use std::{collections::VecDeque, sync::Arc, time::Duration};

use super::*;
use crate::{
    cputime::{CpuTimeError, CpuTimeMethod, PerCpu, ProcessKey, ProcessMeta, ProcessSample},
    sensors::{DomainKind, EnergyOrigin, SensorError, ZoneEnergy},
};

const ID: &str = "4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";

/// Hands out one prepared sample per call (the first is the baseline).
struct Script(VecDeque<CpuSample>);

impl CpuTimeSource for Script {
    fn method(&self) -> CpuTimeMethod {
        CpuTimeMethod::BpfRuntime
    }

    fn sample(&mut self) -> Result<CpuSample, CpuTimeError> {
        Ok(self.0.pop_front().unwrap_or_default())
    }
}

/// 10 J per poll on socket 0 (none on the baseline poll).
struct TenJoules(bool);

impl EnergySensor for TenJoules {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn origin(&self) -> EnergyOrigin {
        EnergyOrigin::Measured
    }

    fn poll(&mut self, _: &Utilisation) -> Result<EnergyReading, SensorError> {
        let zones = if std::mem::replace(&mut self.0, true) {
            vec![ZoneEnergy {
                socket: Some(0),
                kind: DomainKind::Package,
                name: "package-0".into(),
                path: None,
                joules: 10.0,
            }]
        } else {
            Vec::new()
        };
        Ok(EnergyReading {
            interval: Duration::from_secs(1),
            zones,
            implausible_dropped: 0,
        })
    }
}

fn process(pid: u32, cgroup: &str, ms: u64, exited: bool) -> ProcessSample {
    let mut per_cpu_ns = PerCpu::default();
    per_cpu_ns.add(pid % 2, ms * 1_000_000);
    ProcessSample {
        key: ProcessKey { pid, start_ns: 1 },
        comm: format!("p{pid}"),
        meta: Some(Arc::new(ProcessMeta {
            cgroup_path: Some(Arc::from(cgroup)),
            ..ProcessMeta::default()
        })),
        per_cpu_ns,
        total_ns: ms * 1_000_000,
        exited,
        ..ProcessSample::default()
    }
}

fn sample(processes: Vec<ProcessSample>) -> CpuSample {
    CpuSample {
        interval: Duration::from_secs(1),
        processes,
        idle_ns: vec![500_000_000; 2],
        ..CpuSample::default()
    }
}

/// Every cycle, Σ containers + host + others + idle = host energy,
/// Σ container CPU = Σ process CPU and, at a fixed carbon intensity,
/// Σ container grams = Σ container joules × intensity and
/// Σ container grams + idle grams = host grams, while a container's
/// process exits and is retired (retention 0); each process carries its
/// labels.
fn samples() -> [Vec<ProcessSample>; 5] {
    let docker = format!("/system.slice/docker-{ID}.scope");
    let ssh = "/system.slice/ssh.service";
    [
        vec![],
        vec![process(1, &docker, 300, false), process(2, ssh, 100, false)],
        vec![process(1, &docker, 200, true), process(2, ssh, 400, false)],
        vec![process(2, ssh, 250, false)],
        vec![process(3, &docker, 50, false)],
    ]
}

/// An agent with `samples`, 10 J per cycle, retention 0 and `--containers`.
fn agent_with_containers(carbon: crate::carbon::IntensitySource) -> Agent {
    let cpu = Script(samples().into_iter().map(sample).collect());
    let config = ContainersConfig {
        cgroup_root: "/nonexistent".into(),
        ..ContainersConfig::default()
    };
    let mut agent = Agent::new(
        Box::new(cpu),
        Some(Box::new(TenJoules(false))),
        Topology::from_map(vec![(0, 0), (1, 0)]),
        IdlePolicy::Unattributed,
    )
    .with_retention(Duration::ZERO)
    .with_carbon(Some(carbon))
    .with_containers(Some(&config));
    agent.baseline();
    agent
}

/// An exporter that misses a snapshot while the intensity changes still
/// shows Σ process grams + idle = host grams, and Σ container grams + idle
/// = host grams: every gram was counted once, in its cycle, by the agent.
#[test]
fn grams_add_up_in_the_metrics_across_a_skipped_snapshot() {
    use crate::metrics::{names, ContainerLabels, MetricsConfig, MetricsState};
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("intensity");
    std::fs::write(&file, "100\n").expect("write");
    let mut agent = agent_with_containers(crate::carbon::IntensitySource::file(file.clone()));
    let mut metrics = MetricsState::new(MetricsConfig {
        containers: Some(ContainerLabels::default()),
        ..MetricsConfig::default()
    })
    .untimed();
    for (cycle, intensity) in (1..=4).zip([100, 700, 50, 300]) {
        std::fs::write(&file, format!("{intensity}\n")).expect("write");
        let snap = agent.cycle();
        if cycle == 2 {
            continue; // the exporter never sees it
        }
        let families = metrics.update(&snap);
        let sum = |def: &names::Def| {
            families
                .iter()
                .find(|f| f.def.name == def.name)
                .map_or(f64::NAN, |f| f.samples.iter().map(|s| s.value).sum())
        };
        let (host, idle) = (sum(&names::HOST_CO2), sum(&names::IDLE_CO2));
        let processes = sum(&names::PROCESS_CO2);
        let containers = sum(&names::CONTAINER_CO2);
        assert!(host > 0.0, "cycle {cycle}: {host} g");
        assert!(
            (processes + idle - host).abs() < 1e-12,
            "cycle {cycle}: processes {processes} + idle {idle} != host {host}"
        );
        assert!(
            (containers + idle - host).abs() < 1e-12,
            "cycle {cycle}: containers {containers} + idle {idle} != host {host}"
        );
    }
}

#[test]
fn containers_are_labelled_and_add_up_every_cycle() {
    const INTENSITY: f64 = 412.0;
    let mut agent = agent_with_containers(crate::carbon::IntensitySource::Fixed(INTENSITY));
    let mut cpu_seconds = 0.0;
    for cycle in 1..=4 {
        let snap = agent.cycle();
        let totals = snap.containers.as_ref().expect("container totals");
        let (mut joules, mut cpu, mut grams) = (0.0, 0.0, 0.0);
        let series = totals.containers.iter().map(|c| &c.amounts);
        for amounts in series.chain([&totals.host, &totals.others]) {
            joules += amounts.joules;
            cpu += amounts.cpu_seconds;
            grams += amounts.grams;
        }
        assert!(
            (grams - joules * INTENSITY / 3.6e6).abs() < 1e-12,
            "cycle {cycle}: {grams} g for {joules} J"
        );
        assert!(grams > 0.0, "cycle {cycle}: no grams");
        let co2 = snap.co2.as_ref().expect("grams");
        assert!(
            (grams + co2.idle - co2.host).abs() < 1e-12,
            "cycle {cycle}: {grams} + {} g != {} g",
            co2.idle,
            co2.host
        );
        let host = snap.host.expect("host energy").joules_total;
        let idle = snap.idle.expect("idle energy").joules_total;
        assert!(
            (joules + idle - host).abs() < 1e-9,
            "cycle {cycle}: {joules} + {idle} != {host}"
        );
        cpu_seconds += [0.4, 0.6, 0.25, 0.05][cycle - 1];
        assert!((cpu - cpu_seconds).abs() < 1e-9, "cycle {cycle}: {cpu} s");
        for p in &snap.processes {
            let w = p.workload.as_deref().expect("labelled");
            let want = if p.key.pid == 2 { None } else { Some(ID) };
            assert_eq!(w.container_id.as_deref(), want, "pid {}", p.key.pid);
        }
        if cycle == 4 {
            assert!(
                totals.others.joules > 0.0,
                "the first container's energy moved into others when its process was retired"
            );
        }
    }
}

/// 10 J per poll, said to cover 2 s (none on the baseline poll).
struct TenJoulesOverTwoSeconds(bool);

impl EnergySensor for TenJoulesOverTwoSeconds {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn origin(&self) -> EnergyOrigin {
        EnergyOrigin::Measured
    }

    fn poll(&mut self, u: &Utilisation) -> Result<EnergyReading, SensorError> {
        let mut reading = TenJoules(std::mem::replace(&mut self.0, true)).poll(u)?;
        reading.interval = Duration::from_secs(2);
        Ok(reading)
    }
}

/// When the energy read covers 2 s and the CPU sample 1 s (one of the two
/// reads was delayed), host power is the energy over its own 2 s, and the
/// processes' and idle power still add up to it.
#[test]
fn power_divides_energy_by_the_energy_reads_own_interval() {
    let cpu = Script(
        [
            vec![],
            vec![process(1, "/", 300, false), process(2, "/", 100, false)],
        ]
        .into_iter()
        .map(sample)
        .collect(),
    );
    let mut agent = Agent::new(
        Box::new(cpu),
        Some(Box::new(TenJoulesOverTwoSeconds(false))),
        Topology::from_map(vec![(0, 0), (1, 0)]),
        IdlePolicy::Unattributed,
    );
    agent.baseline();
    let snapshot = agent.cycle();
    let host = snapshot.host.expect("host energy");
    assert!((host.watts - 5.0).abs() < 1e-9, "{}", host.watts);
    let processes: f64 = snapshot
        .processes
        .iter()
        .filter_map(|p| p.energy.map(|e| e.watts))
        .sum();
    let idle = snapshot.idle.expect("idle").watts;
    assert!(
        (processes + idle - 5.0).abs() < 1e-9,
        "{processes} + {idle}"
    );
    assert!(processes > 0.0);
}
