//! The one value every exporter reads: the state of the host after the latest
//! measurement cycle. Exporters never measure; they format a `Snapshot`.
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

pub use crate::amounts::Amounts;
pub use crate::model::{CpuTimeMethod, DomainKind, EnergyOrigin, LossCounters, ProcessKey};
use crate::model::{HostStats, ProcessMemory, ProcessMeta, SelfStats};

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
    /// Grams of CO2-equivalent of the host-level counters (with `host`).
    pub co2: Option<Co2Totals>,
    /// Energy and CPU time per container (`--containers`).
    pub containers: Option<ContainerTotals>,
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
    /// What `/proc/PID` said (see the accessors below); `None` until it
    /// was read, or when it could not be.
    pub meta: Option<Arc<ProcessMeta>>,
    pub cgroup_id: Option<u64>,
    /// On-CPU seconds since the agent first saw the process (never decreases).
    pub cpu_seconds_total: f64,
    /// Share of one CPU used during the last cycle (1.0 = one full CPU).
    pub cpu_ratio: f64,
    /// Energy attributed to the process; `None` without an energy source.
    pub energy: Option<Energy>,
    /// Grams of CO2-equivalent of that energy (0 without a carbon
    /// intensity; see [`Co2Totals`]).
    pub co2_grams_total: f64,
    /// The process has exited; its values are final.
    pub exited: bool,
    /// Resident and virtual memory, when read (running processes only).
    pub memory: Option<ProcessMemory>,
    /// Its container, pod and systemd unit (`--containers`; shared by the
    /// processes of one container).
    pub workload: Option<Arc<Workload>>,
}

impl ProcessSnapshot {
    /// The executable's path, bounded.
    #[must_use]
    pub fn exe(&self) -> Option<&Arc<Path>> {
        self.meta.as_ref()?.exe.as_ref()
    }

    /// Arguments joined by spaces, bounded; empty unless an exporter shows
    /// or matches command lines (see `cputime::meta::MetaOptions`).
    #[must_use]
    pub fn cmdline(&self) -> &str {
        self.meta.as_ref().map_or("", |m| &m.cmdline)
    }

    /// The VM's name, for qemu/KVM processes trusted to be VMs (see
    /// `vm_label::VmTrust`). The qemu exporter and `--qemu` use only this.
    #[must_use]
    pub fn vm_name(&self) -> Option<&Arc<str>> {
        self.meta.as_ref()?.vm_name.as_ref()
    }

    /// The cgroup v2 path, bounded.
    #[must_use]
    pub fn cgroup_path(&self) -> Option<&Arc<str>> {
        self.meta.as_ref()?.cgroup_path.as_ref()
    }

    /// The metadata to change, for tests (a copy when it is shared).
    #[cfg(test)]
    pub(crate) fn meta_mut(&mut self) -> &mut ProcessMeta {
        Arc::make_mut(self.meta.get_or_insert_with(Arc::default))
    }

    /// The executable's path, or the comm when the path is unknown.
    #[must_use]
    pub fn exe_or_comm(&self) -> String {
        self.exe()
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
            co2: None,
            containers: None,
        }
    }
}

/// Grams of CO2-equivalent since the agent started, counted every cycle:
/// each counter's joules of the cycle at the intensity in force during it.
/// Σ processes + retired + idle = host holds for grams as for joules, and
/// no value ever decreases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Co2Totals {
    pub host: f64,
    pub idle: f64,
    /// By socket id, as [`Snapshot::sockets`].
    pub sockets: Vec<(u32, f64)>,
    /// Of the processes counted in [`Snapshot::retired_joules`].
    pub retired: f64,
}

/// Where a process runs, as labels: what its cgroup path says and what the
/// API server says about its pod. Every field is optional: a host process
/// has at most a systemd unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// 64 hex digits.
    pub container_id: Option<String>,
    /// `docker`, `containerd`, ... (from the path, else the pod's status).
    pub container_runtime: Option<&'static str>,
    /// The container's name in its pod (Kubernetes only).
    pub container_name: Option<String>,
    /// With dashes, as the API server writes it.
    pub pod_uid: Option<String>,
    /// `guaranteed`, `burstable` or `besteffort`.
    pub pod_qos: Option<&'static str>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    /// The user whose delegated subtree holds a rootless container or pod.
    pub owner_uid: Option<u32>,
    /// The innermost `*.service` or `*.scope` of the cgroup path.
    pub systemd_unit: Option<String>,
}

impl Workload {
    /// In a container or a pod.
    #[must_use]
    pub fn is_workload(&self) -> bool {
        self.container_id.is_some() || self.pod_uid.is_some()
    }
}

/// Energy, CPU time and grams per container, counted since the agent
/// started: Σ containers + host + others = Σ of every process reported
/// (live, exited, retired), and no value ever decreases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerTotals {
    /// Containers and pods with their own series, in a stable order.
    pub containers: Vec<ContainerSeries>,
    /// Processes outside containers and pods (and of unknown cgroup).
    pub host: Amounts,
    /// Containers without their own series any more (their last process
    /// left the snapshot, or beyond the cap).
    pub others: Amounts,
    /// The cgroup hierarchy could be read (or there is none to read).
    pub healthy: bool,
    /// Seconds this cycle spent resolving containers.
    pub seconds: f64,
}

/// The totals of one container or pod with its own series.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSeries {
    pub workload: Arc<Workload>,
    pub amounts: Amounts,
    /// When this series started (a number that only grows): a container
    /// that left (its totals moved into `others`) and came back has the same
    /// labels but a new series starting from 0, and a new `since` says so.
    pub since: u64,
}
