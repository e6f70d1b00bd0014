//! The one value every exporter reads: the state of the host after the latest
//! measurement cycle. Exporters never measure; they format a `Snapshot`.
use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use crate::{
    cputime::{CpuTimeMethod, LossCounters, ProcessKey},
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
    /// Per-CPU idle fraction of the cycle, indexed by CPU number.
    pub cpu_idle_ratio: Vec<f64>,
    pub losses: LossCounters,
    /// Implausible energy deltas dropped by the sensor (cumulative).
    pub implausible_energy_dropped: u64,
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
    pub comm: String,
    pub exe: Option<PathBuf>,
    pub cmdline: Vec<String>,
    pub cgroup_id: Option<u64>,
    pub cgroup_path: Option<String>,
    /// On-CPU seconds since the agent first saw the process (never decreases).
    pub cpu_seconds_total: f64,
    /// Share of one CPU used during the last cycle (1.0 = one full CPU).
    pub cpu_ratio: f64,
    /// Energy attributed to the process; `None` without an energy source.
    pub energy: Option<Energy>,
    /// The process has exited; its values are final.
    pub exited: bool,
}

impl ProcessSnapshot {
    /// The executable's path, or the comm when the path is unknown.
    #[must_use]
    pub fn exe_or_comm(&self) -> String {
        self.exe.as_ref().map_or_else(|| self.comm.clone(), |p| p.display().to_string())
    }
}
