//! CPU time from the kernel program's maps.
//!
//! The kernel keeps cumulative on-CPU ns per (process, CPU). Each `sample`
//! reads every entry, returns the growth since the previous read, and prunes
//! entries of processes that have exited: an exit seen at read N is deleted at
//! read N+1, after that read has collected the process's final slices (the
//! last switch-out of an exiting task comes just after its exit event).
use std::{path::PathBuf, time::Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use log::debug;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use scaph_common::{maps, CpuState, ProcCpuKey, ProcCpuValue, ProcExit, ProcKey, COMM_LEN};

use super::{
    batch,
    flush::Flusher,
    loader::{self, LoadError, LoadOptions, Loaded},
    meta::MetaCache,
    CpuSample, CpuTimeError, CpuTimeMethod, CpuTimeSource, LossCounters, ProcessKey, ProcessSample,
};

/// Reads after which an entry that has not grown is checked against `/proc`,
/// in case its exit could not be recorded (`EXITED` full).
const STALE_READS: u32 = 30;

pub struct BpfSource {
    /// Keeps the programs attached; dropping it detaches them.
    _ebpf: aya::Ebpf,
    method: CpuTimeMethod,
    proc_cpu: BpfHashMap<MapData, ProcCpuKey, ProcCpuValue>,
    exited: BpfHashMap<MapData, ProcKey, ProcExit>,
    execed: BpfHashMap<MapData, ProcKey, ProcExit>,
    /// New names of processes that called exec, until they are next reported.
    renamed: HashMap<ProcKey, String>,
    cpu_state: PerCpuArray<MapData, CpuState>,
    /// Last cumulative value per entry, and for how many reads it has not grown.
    seen: HashMap<ProcCpuKey, (u64, u32)>,
    /// Processes whose exit was seen at the previous read (with their final
    /// `comm`, when the kernel recorded it): deleted at this one.
    exiting: HashMap<ProcKey, Option<String>>,
    flusher: Flusher,
    idle_before: Vec<u64>,
    losses_before: LossCounters,
    last_read: Option<Instant>,
    meta: MetaCache,
    proc_root: PathBuf,
}

impl BpfSource {
    /// Loads and attaches the kernel program.
    pub fn new(proc_root: PathBuf, options: LoadOptions) -> Result<Self, LoadError> {
        let Loaded { mut ebpf, method } = loader::load(options)?;
        let map = |ebpf: &mut aya::Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(LoadError::Ebpf(aya::EbpfError::MapError(
                aya::maps::MapError::InvalidName { name: name.into() },
            )))
        };
        let map_err = |e| LoadError::Ebpf(aya::EbpfError::MapError(e));
        let proc_cpu = BpfHashMap::try_from(map(&mut ebpf, maps::PROC_CPU)?).map_err(map_err)?;
        let exited = BpfHashMap::try_from(map(&mut ebpf, maps::EXITED)?).map_err(map_err)?;
        let execed = BpfHashMap::try_from(map(&mut ebpf, maps::EXECED)?).map_err(map_err)?;
        let cpu_state = PerCpuArray::try_from(map(&mut ebpf, maps::CPU_STATE)?).map_err(map_err)?;
        Ok(Self {
            _ebpf: ebpf,
            method,
            proc_cpu,
            exited,
            execed,
            renamed: HashMap::default(),
            cpu_state,
            seen: HashMap::default(),
            exiting: HashMap::default(),
            flusher: Flusher::new(&aya::util::online_cpus().unwrap_or_default()),
            idle_before: Vec::new(),
            losses_before: LossCounters::default(),
            last_read: None,
            meta: MetaCache::new(proc_root.clone()),
            proc_root,
        })
    }

    fn per_cpu_state(&self) -> Result<Vec<CpuState>, CpuTimeError> {
        let values = self.cpu_state.get(&0, 0).map_err(|source| CpuTimeError::Map { map: maps::CPU_STATE, source })?;
        Ok(values.iter().copied().collect())
    }

    /// Processes that called exec: forget their metadata so it is read again,
    /// and remember their new name.
    fn take_execs(&mut self) {
        let execs: Vec<(ProcKey, ProcExit)> = self.execed.iter().filter_map(Result::ok).collect();
        for (key, exec) in execs {
            let _ = self.execed.remove(&key);
            self.meta.remove(&ProcessKey { pid: key.tgid, start_ns: key.start_ns });
            let comm = comm_str(&exec.comm);
            if !comm.is_empty() {
                self.renamed.insert(key, comm);
            }
        }
    }

    fn is_alive(&self, tgid: u32) -> bool {
        self.proc_root.join(tgid.to_string()).exists()
    }
}

impl CpuTimeSource for BpfSource {
    fn method(&self) -> CpuTimeMethod {
        self.method
    }

    fn sample(&mut self) -> Result<CpuSample, CpuTimeError> {
        self.flusher.flush();
        let now = Instant::now();
        let baseline = self.last_read.is_none();
        // Exits recorded so far: their entries get deleted at the next read.
        let newly_exited: Vec<(ProcKey, Option<String>)> = self
            .exited
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| !self.exiting.contains_key(k))
            .map(|(k, exit)| (k, Some(comm_str(&exit.comm)).filter(|c| !c.is_empty())))
            .collect();

        let states = self.per_cpu_state()?;
        let losses = states.iter().fold(LossCounters::default(), |acc, s| LossCounters {
            dropped_ns: acc.dropped_ns + s.dropped_ns,
            dropped_slices: acc.dropped_slices + s.dropped_slices,
            dropped_exits: acc.dropped_exits + s.dropped_exits,
            mismatches: acc.mismatches + s.mismatches,
        });
        // Exits the kernel could not record (EXITED full): check every entry
        // that did not grow since the last read, instead of waiting.
        let stale_after = if losses.dropped_exits > self.losses_before.dropped_exits { 1 } else { STALE_READS };
        self.losses_before = losses;

        self.take_execs();
        let mut procs: HashMap<ProcKey, ProcessSample> =
            HashMap::with_capacity_and_hasher(self.meta.len(), rustc_hash::FxBuildHasher);
        let mut current: HashMap<ProcCpuKey, (u64, u32)> =
            HashMap::with_capacity_and_hasher(self.seen.len(), rustc_hash::FxBuildHasher);
        let mut stale: HashSet<ProcKey> = HashSet::default();
        let ncpus = aya::util::nr_cpus().unwrap_or(1);
        let entries = batch::read_all(&self.proc_cpu)
            .map_err(|source| CpuTimeError::Read { path: format!("BPF map {}", maps::PROC_CPU).into(), source })?;
        for (key, value) in entries {
            let (before, unchanged) = self.seen.get(&key).copied().unwrap_or((0, 0));
            // An entry deleted and re-created by the kernel starts again from 0.
            let delta = if value.runtime_ns >= before { value.runtime_ns - before } else { value.runtime_ns };
            let unchanged = if delta == 0 { unchanged + 1 } else { 0 };
            if unchanged >= stale_after {
                stale.insert(key.process());
            }
            current.insert(key, (value.runtime_ns, unchanged % STALE_READS));
            if baseline || (delta == 0 && !self.exiting.contains_key(&key.process())) {
                continue;
            }
            let known = self.meta.contains(&ProcessKey { pid: key.tgid, start_ns: key.start_ns })
                && !self.renamed.contains_key(&key.process());
            let sample = procs.entry(key.process()).or_insert_with(|| new_sample(&key, &value, ncpus, known));
            if let Some(slot) = sample.per_cpu_ns.get_mut(key.cpu as usize) {
                *slot += delta;
            }
            sample.total_ns += delta;
        }

        // Final reads are done: delete what belongs to processes gone since the last read.
        for stale_proc in stale {
            if !self.is_alive(stale_proc.tgid) {
                debug!("pid {} is gone without a recorded exit; pruning it", stale_proc.tgid);
                self.exiting.insert(stale_proc, None);
            }
        }
        let gone: Vec<ProcCpuKey> =
            current.keys().filter(|k| self.exiting.contains_key(&k.process())).copied().collect();
        for key in gone {
            current.remove(&key);
            let _ = self.proc_cpu.remove(&key);
        }
        for (proc, final_comm) in self.exiting.drain() {
            let _ = self.exited.remove(&proc);
            if let Some(sample) = procs.get_mut(&proc) {
                sample.exited = true;
                if let Some(comm) = final_comm {
                    sample.comm = comm;
                }
            }
        }
        self.exiting.extend(newly_exited);
        self.seen = current;

        let idle_now: Vec<u64> = states.iter().map(|s| s.idle_ns).collect();
        let idle_ns = if baseline {
            Vec::new()
        } else {
            idle_now.iter().zip(self.idle_before.iter().chain(std::iter::repeat(&0))).map(|(n, b)| n.saturating_sub(*b)).collect()
        };
        self.idle_before = idle_now;

        let interval = self.last_read.map(|t| now - t).unwrap_or_default();
        self.last_read = Some(now);
        let mut processes: Vec<ProcessSample> = procs.into_values().collect();
        for sample in &mut processes {
            // Metadata is read once per process (and again after an exec);
            // consumers keep what they were given last.
            if !sample.exited && !self.meta.contains(&sample.key) {
                sample.meta = self.meta.get(sample.key);
            }
            let key = ProcKey { tgid: sample.key.pid, reserved: 0, start_ns: sample.key.start_ns };
            if let Some(comm) = self.renamed.remove(&key) {
                if !sample.exited {
                    sample.comm = comm;
                }
            }
        }
        // Names of processes that exited or were never reported are not kept.
        crate::util::shrink_if_sparse(&mut self.renamed);
        if self.renamed.len() > scaph_common::EXECED_CAPACITY as usize {
            self.renamed.clear();
        }
        let exited: HashSet<ProcessKey> = processes.iter().filter(|p| p.exited).map(|p| p.key).collect();
        if !exited.is_empty() {
            self.meta.retain(|k| !exited.contains(k));
        }
        processes.sort_by_key(|p| p.key);
        Ok(CpuSample { interval, processes, idle_ns, losses })
    }
}

fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// A process's first sample of this read. The comm is decoded only for a
/// process the consumer has not been told about (it keeps the first one).
fn new_sample(key: &ProcCpuKey, value: &ProcCpuValue, ncpus: usize, known: bool) -> ProcessSample {
    ProcessSample {
        key: ProcessKey { pid: key.tgid, start_ns: key.start_ns },
        comm: if known { String::new() } else { comm_str(&value.comm) },
        cgroup_id: (value.cgroup_id != 0).then_some(value.cgroup_id),
        meta: None,
        per_cpu_ns: vec![0; ncpus],
        total_ns: 0,
        exited: false,
    }
}
