//! The one value every exporter reads: the state of the host after the latest
//! measurement cycle. Exporters never measure; they format a `Snapshot`.
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    attribution::{Accumulator, Cumulative},
    cputime::{CpuSample, CpuTimeMethod, LossCounters, ProcessKey},
    host::{HostStats, ProcessMemory, SelfStats},
    processes::ProcessTable,
    sensors::{DomainKind, EnergyOrigin},
};

#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// When the cycle ended (wall clock, for exporters that timestamp values).
    pub timestamp: SystemTime,
    /// Length of the cycle (monotonic).
    pub interval: Duration,
    pub cpu_method: CpuTimeMethod,
    /// The energy sensor in use; `None` when there is no energy source at all.
    pub sensor: Option<SensorInfo>,
    /// Host energy; `None` without an energy source or before the first delta.
    pub host: Option<Energy>,
    /// Energy not claimed by any process (idle, or unattributed under the default policy).
    pub idle: Option<Energy>,
    pub sockets: Vec<SocketSnapshot>,
    /// Processes, highest power first.
    pub processes: Vec<ProcessSnapshot>,
    /// Joules of exited processes whose retention window has passed (they
    /// are no longer listed): Σ processes + this + idle = host.
    pub retired_joules: f64,
    /// Per-CPU idle fraction of the cycle, indexed by CPU number. It can
    /// hold an entry for every *possible* CPU (the kernel program's view),
    /// offline ones included: never take its length for the CPU count.
    pub cpu_idle_ratio: Vec<f64>,
    /// Online CPUs of the topology (what CPU percentages divide by); 0 when
    /// the snapshot was not made by an agent.
    pub online_cpus: usize,
    pub losses: LossCounters,
    /// Implausible energy deltas dropped by the sensor (cumulative).
    pub implausible_energy_dropped: u64,
    /// Energy amounts the accumulator refused because they would have made
    /// a counter go backwards (cumulative; 0 unless there is a bug).
    pub energy_regressions: u64,
    /// The CPU time source answered this cycle (else its sample was empty).
    pub cputime_ok: bool,
    /// The energy sensor answered this cycle (true when there is none).
    pub energy_ok: bool,
    /// Load, memory, disks...: read only when an exporter asks for them.
    pub host_stats: Option<HostStats>,
    /// scaph's own CPU and memory, when read.
    pub self_stats: Option<SelfStats>,
    /// Carbon intensity in force during this cycle, grams of CO2-equivalent
    /// per kWh; `None` without carbon options or before a first valid value.
    pub carbon_intensity: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SensorInfo {
    pub name: &'static str,
    pub origin: EnergyOrigin,
}

impl SensorInfo {
    /// True when the values are computed, not measured.
    #[must_use]
    pub fn estimated(&self) -> bool {
        self.origin == EnergyOrigin::Estimated
    }
}

/// An energy counter and the power over the last cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Energy {
    /// Joules since the agent started (never decreases).
    pub joules_total: f64,
    /// Watts over the last cycle.
    pub watts: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SocketSnapshot {
    pub id: u32,
    pub energy: Energy,
    pub domains: Vec<DomainSnapshot>,
    /// Energy of this socket that no process claimed (absent when psys
    /// makes the whole host one pool).
    pub idle: Option<Energy>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DomainSnapshot {
    pub kind: DomainKind,
    pub name: String,
    pub energy: Energy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSnapshot {
    pub key: ProcessKey,
    pub comm: Arc<str>,
    pub exe: Option<Arc<Path>>,
    /// Arguments joined by spaces, bounded; empty unless an exporter shows
    /// or matches command lines (see `cputime::meta::MetaOptions`).
    pub cmdline: Arc<str>,
    /// The VM's name, for qemu/KVM processes trusted to be VMs (see
    /// `vm_label::VmTrust`). The qemu exporter and `--qemu` use only this.
    pub vm_name: Option<Arc<str>>,
    pub cgroup_id: Option<u64>,
    pub cgroup_path: Option<Arc<str>>,
    /// On-CPU seconds since the agent first saw the process (never decreases).
    pub cpu_seconds_total: f64,
    /// Share of one CPU used during the last cycle (1.0 = one full CPU).
    pub cpu_ratio: f64,
    /// Energy attributed to the process; `None` without an energy source.
    pub energy: Option<Energy>,
    /// The process has exited; its values are final.
    pub exited: bool,
    /// Resident and virtual memory, when read (running processes only).
    pub memory: Option<ProcessMemory>,
}

impl ProcessSnapshot {
    /// The executable's path, or the comm when the path is unknown.
    #[must_use]
    pub fn exe_or_comm(&self) -> String {
        self.exe
            .as_ref()
            .map_or_else(|| self.comm.to_string(), |p| p.display().to_string())
    }
}

impl Snapshot {
    /// A snapshot holding only `processes` (and the energy retired from
    /// expired ones), for tests of what is built on the process list.
    #[cfg(test)]
    pub(crate) fn of_processes(
        processes: Vec<ProcessSnapshot>,
        retired_joules: f64,
        cpu_method: CpuTimeMethod,
    ) -> Self {
        Self {
            timestamp: std::time::UNIX_EPOCH,
            interval: Duration::from_secs(2),
            cpu_method,
            sensor: None,
            host: None,
            idle: None,
            sockets: Vec::new(),
            processes,
            retired_joules,
            cpu_idle_ratio: Vec::new(),
            online_cpus: 0,
            losses: LossCounters::default(),
            implausible_energy_dropped: 0,
            energy_regressions: 0,
            cputime_ok: true,
            energy_ok: true,
            host_stats: None,
            self_stats: None,
            carbon_intensity: None,
        }
    }
}

impl From<Cumulative> for Energy {
    fn from(c: Cumulative) -> Self {
        Self {
            joules_total: c.joules,
            watts: c.watts,
        }
    }
}

/// What a snapshot is made of.
pub struct Parts<'a> {
    pub timestamp: SystemTime,
    pub sample: &'a CpuSample,
    pub cpu_method: CpuTimeMethod,
    pub sensor: Option<SensorInfo>,
    pub energy: &'a Accumulator,
    pub processes: &'a ProcessTable,
    pub implausible_energy_dropped: u64,
}

/// Joins the cycle's state into one snapshot.
#[must_use]
pub fn build(parts: Parts<'_>) -> Snapshot {
    let Parts {
        timestamp,
        sample,
        cpu_method,
        sensor,
        energy,
        processes,
        implausible_energy_dropped,
    } = parts;
    let has_energy = sensor.is_some() && energy.cycles() > 0;
    let secs = sample.interval.as_secs_f64();
    let ratio = |ns: u64| {
        if secs > 0.0 {
            ns as f64 / 1e9 / secs
        } else {
            0.0
        }
    };
    let sockets = if has_energy {
        energy
            .sockets()
            .iter()
            .map(|(&id, total)| SocketSnapshot {
                id,
                energy: (*total).into(),
                domains: energy
                    .domains()
                    .iter()
                    .filter(|(k, _)| k.socket == Some(id))
                    .map(|(k, c)| DomainSnapshot {
                        kind: k.kind,
                        name: k.name.clone(),
                        energy: (*c).into(),
                    })
                    .collect(),
                idle: energy
                    .unattributed_by_pool()
                    .get(&crate::attribution::Pool::Socket(id))
                    .map(|c| (*c).into()),
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut rows: Vec<ProcessSnapshot> = processes
        .iter()
        .map(|(key, info)| ProcessSnapshot {
            key: *key,
            comm: info.comm.clone(),
            exe: info.meta.as_ref().and_then(|m| m.exe.clone()),
            cmdline: info
                .meta
                .as_ref()
                .map(|m| m.cmdline.clone())
                .unwrap_or_default(),
            vm_name: info.meta.as_ref().and_then(|m| m.vm_name.clone()),
            cgroup_id: info.cgroup_id,
            cgroup_path: info.meta.as_ref().and_then(|m| m.cgroup_path.clone()),
            cpu_seconds_total: info.cpu_ns_total as f64 / 1e9,
            cpu_ratio: ratio(info.cpu_ns_last),
            energy: if has_energy {
                Some(
                    energy
                        .process(key)
                        .map(|t| t.energy.into())
                        .unwrap_or_default(),
                )
            } else {
                None
            },
            exited: info.exited,
            memory: None,
        })
        .collect();
    // Keys are unique, so an unstable sort is deterministic.
    rows.sort_unstable_by(|a, b| {
        let power = |r: &ProcessSnapshot| r.energy.map_or(0.0, |e| e.watts);
        power(b)
            .total_cmp(&power(a))
            .then(b.cpu_ratio.total_cmp(&a.cpu_ratio))
            .then(a.key.cmp(&b.key))
    });
    Snapshot {
        timestamp,
        interval: sample.interval,
        cpu_method,
        host: has_energy.then(|| energy.host().energy.into()),
        idle: has_energy.then(|| energy.host().unattributed.into()),
        sensor,
        sockets,
        processes: rows,
        retired_joules: energy.retired_joules(),
        cpu_idle_ratio: sample
            .idle_ns
            .iter()
            .map(|&ns| ratio(ns).min(1.0))
            .collect(),
        online_cpus: 0,
        losses: sample.losses,
        implausible_energy_dropped,
        energy_regressions: energy.regressions(),
        cputime_ok: true,
        energy_ok: true,
        host_stats: None,
        self_stats: None,
        carbon_intensity: None,
    }
}
