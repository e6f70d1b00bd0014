//! Per-process CPU time: where it comes from (the kernel program, or `/proc`)
//! and the one shape both sources produce.
pub mod bpf;
pub mod btf;
mod flush;
pub mod loader;
pub mod meta;
pub mod pidstat;
pub mod procfs;
mod slots;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use crate::model::{CpuTimeMethod, LossCounters, ProcessKey, ProcessMeta};

/// What a process did during one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessSample {
    pub key: ProcessKey,
    /// Kernel `comm` (at most 15 bytes). Sources may send it only when it is
    /// new or changed (consumers keep the last one); empty when unknown. The
    /// BPF source has it from `/proc/PID/stat` and from the kernel's exit and
    /// exec records, so a process that exited before it was read is named
    /// unless its exit record was lost (`dropped_exits`).
    pub comm: String,
    /// cgroup v2 id (the cgroup directory's inode), when known.
    pub cgroup_id: Option<u64>,
    /// Readable metadata, read once per process: a source may report it only
    /// once (consumers keep it), possibly a few cycles after the process was
    /// first reported, in a sample with no CPU time (lookups are bounded per
    /// cycle, see [`meta::LOOKUPS_PER_CYCLE`]). `None` once the process is
    /// gone or when access is denied.
    pub meta: Option<Arc<ProcessMeta>>,
    /// On-CPU ns during the interval on each CPU it ran on. Empty when the
    /// source cannot tell CPUs apart (procfs: then only `total_ns` is
    /// known), or when the process did not run (a final, exited sample).
    pub per_cpu_ns: PerCpu,
    /// On-CPU ns during the interval, all CPUs.
    pub total_ns: u64,
    /// The process has exited: this is its last sample.
    pub exited: bool,
}

/// On-CPU ns by CPU number, for the CPUs a process ran on. Sparse and
/// inline for up to two CPUs: in one interval a process runs on few of a
/// host's CPUs, and a cycle builds one of these per process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerCpu(smallvec::SmallVec<[(u32, u64); 2]>);

impl PerCpu {
    /// Adds `ns` to `cpu`.
    pub fn add(&mut self, cpu: u32, ns: u64) {
        match self.0.iter_mut().find(|(c, _)| *c == cpu) {
            Some((_, total)) => *total += ns,
            None => self.0.push((cpu, ns)),
        }
    }

    /// The ns on `cpu` (0 if it did not run there).
    #[must_use]
    pub fn get(&self, cpu: u32) -> u64 {
        self.0
            .iter()
            .find(|(c, _)| *c == cpu)
            .map_or(0, |(_, ns)| *ns)
    }

    /// (CPU, ns) for each CPU it ran on, in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.0.iter().copied()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[must_use]
    pub fn sum(&self) -> u64 {
        self.0.iter().map(|(_, ns)| ns).sum()
    }
}

/// From ns indexed by CPU number (CPUs with 0 are left out).
impl From<Vec<u64>> for PerCpu {
    fn from(dense: Vec<u64>) -> Self {
        let mut out = Self::default();
        for (cpu, ns) in dense.into_iter().enumerate() {
            if ns > 0 {
                out.add(u32::try_from(cpu).unwrap_or(u32::MAX), ns);
            }
        }
        out
    }
}

/// CPU time of every process during one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuSample {
    /// Wall time since the previous sample (monotonic clock). Zero for the first (baseline).
    pub interval: Duration,
    /// Processes that ran (or exited) during the interval, and processes
    /// whose metadata was read this cycle.
    pub processes: Vec<ProcessSample>,
    /// Idle ns during the interval, indexed by CPU number.
    pub idle_ns: Vec<u64>,
    pub losses: LossCounters,
}

/// A source of per-process CPU time. `sample` returns what happened since the
/// previous call; the first call establishes the baseline.
pub trait CpuTimeSource: Send {
    fn method(&self) -> CpuTimeMethod;
    fn sample(&mut self) -> Result<CpuSample, CpuTimeError>;
    /// What to keep of each process's metadata (see [`meta::MetaOptions`]).
    fn set_meta_options(&mut self, _options: meta::MetaOptions) {}
}

#[derive(Debug, thiserror::Error)]
pub enum CpuTimeError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Proc {
        path: PathBuf,
        #[source]
        source: ::procfs::ProcError,
    },
    #[error("reading BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}
