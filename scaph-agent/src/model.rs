//! Plain types that the producers (CPU time sources, energy sensors, the
//! host statistics reader) and the [`crate::snapshot`] share: defined here
//! so that the snapshot imports none of its producers, and the producers
//! re-export them where callers have always found them
//! (`cputime::ProcessKey`, `sensors::DomainKind`, `host::HostStats`).
use std::{fmt, path::Path, sync::Arc};

/// One process, stable across PID reuse: its tgid and its start time.
///
/// `start_ns` is the start time in ns since boot when the source knows it
/// (BPF with BTF: exact; procfs: clock-tick resolution), else 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    pub start_ns: u64,
}

/// How the CPU times of a sample were measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuTimeMethod {
    /// Kernel program reading `sum_exec_runtime` (BTF): exact.
    BpfRuntime,
    /// Kernel program summing timestamps at switches (no BTF): includes steal time.
    BpfTimestamp,
    /// `/proc/PID/stat` utime+stime (clock ticks) or schedstat (ns).
    Procfs,
}

impl CpuTimeMethod {
    /// The label value used in every exporter (`bpf` or `procfs`).
    #[must_use]
    pub const fn source(self) -> &'static str {
        match self {
            Self::BpfRuntime | Self::BpfTimestamp => "bpf",
            Self::Procfs => "procfs",
        }
    }
}

impl fmt::Display for CpuTimeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BpfRuntime => "bpf (sched_switch, exact sum_exec_runtime via BTF)",
            Self::BpfTimestamp => "bpf (sched_switch, timestamp deltas)",
            Self::Procfs => "procfs (/proc/PID/stat)",
        })
    }
}

/// Counters of what could not be measured. Cumulative since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounters {
    /// On-CPU ns that the kernel program could not record (map full).
    pub dropped_ns: u64,
    /// Slices that the kernel program could not record (map full).
    pub dropped_slices: u64,
    /// Process exits that could not be recorded (map full).
    pub dropped_exits: u64,
    /// Switches whose outgoing task was not the one seen coming in.
    pub mismatches: u64,
}

/// What kind of RAPL domain (or pseudo-domain) a zone measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainKind {
    /// Whole CPU package (`package-N`).
    Package,
    /// Cores of a package (`core`, PP0). Part of `Package`.
    Core,
    /// Integrated GPU / uncore (`uncore`, PP1). Part of `Package`.
    Uncore,
    /// Memory attached to a package (`dram`). Not part of `Package`.
    Dram,
    /// Whole platform (`psys`): host-wide, not tied to a socket.
    Psys,
}

/// Where a sensor's numbers come from: exporters label every value with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnergyOrigin {
    /// Read from hardware counters (RAPL through powercap).
    Measured,
    /// Computed from CPU utilisation with a linear model: not a measurement.
    Estimated,
    /// Read from the tree the hypervisor's qemu exporter writes (`--vm`).
    Vm,
}

/// Load averages, as `/proc/loadavg` gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// Memory and swap, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub free: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Scheduler activity from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub forks_total: u64,
    pub context_switches_total: u64,
    pub running: u64,
    pub blocked: u64,
}

/// One mounted block-device filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    /// Device as mounted (`/dev/nvme0n1p2`).
    pub name: String,
    pub mount_point: String,
    pub file_system: String,
    /// `SSD`, `HDD` or `Unknown` (from the block device's `queue/rotational`).
    pub kind: &'static str,
    pub removable: bool,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Everything host-wide, from one cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostStats {
    pub load: Option<LoadAverage>,
    pub memory: Option<Memory>,
    pub activity: Option<Activity>,
    /// One entry per mount point (Scaphandre kept only the last disk).
    pub disks: Vec<Disk>,
    /// False when some part could not be read.
    pub complete: bool,
}

/// scaph's own footprint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfStats {
    pub cpu_seconds_total: f64,
    /// Share of one CPU used since the previous cycle.
    pub cpu_ratio: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
}

/// Memory of one process, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
}

/// What `/proc/PID` says about a process, read once when it is first seen.
///
/// Shared as one `Arc` from the lookup to every snapshot that lists the
/// process: a cycle clones one pointer per process, not each string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMeta {
    /// The name in `/proc/PID/stat`, when it could be read.
    pub comm: Option<Arc<str>>,
    /// At most [`crate::cputime::meta::PATH_MAX_CHARS`] characters (then cut, see `label`).
    pub exe: Option<Arc<Path>>,
    /// The arguments joined by spaces, bounded (see [`crate::cputime::meta::MetaOptions`]);
    /// empty unless some exporter shows or matches command lines.
    pub cmdline: Arc<str>,
    /// Path relative to the cgroup v2 root (e.g. `/system.slice/ssh.service`),
    /// at most [`crate::cputime::meta::PATH_MAX_CHARS`] characters.
    pub cgroup_path: Option<Arc<str>>,
    /// The VM's name when the process is a qemu/KVM VM that an unprivileged
    /// user cannot have forged (see [`crate::vm_label::VmTrust`]).
    pub vm_name: Option<Arc<str>>,
}
