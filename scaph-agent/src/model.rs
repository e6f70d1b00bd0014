//! Plain types that the producers (CPU time sources, energy sensors) and
//! the [`crate::snapshot`] share: defined here so that the snapshot imports
//! none of its producers, and the producers re-export them where callers
//! have always found them (`cputime::ProcessKey`, `sensors::DomainKind`).
use std::fmt;

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
