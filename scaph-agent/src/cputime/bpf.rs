//! CPU time from the kernel program's maps.
//!
//! The kernel keeps cumulative on-CPU ns per process, one value per CPU, in
//! a slot per process (see `slots`). Each `sample` reads every slot, returns
//! the growth since the previous read, and frees the slots of processes that
//! have exited: an exit seen at read N is freed at read N+1, after that read
//! has collected the process's final slices (the last switch-out of an
//! exiting task comes just after its exit event).
use std::{path::PathBuf, time::Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use log::debug;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use scaph_common::{maps, CpuState, ProcExit, ProcKey, COMM_LEN};

use super::{
    flush::Flusher,
    loader::{self, LoadError, LoadOptions, Loaded},
    meta::{Budgeted, MetaCache},
    slots::{SlotRead, Slots},
    CpuSample, CpuTimeError, CpuTimeMethod, CpuTimeSource, LossCounters, ProcessKey, ProcessSample,
};

/// Reads after which an entry that has not grown is checked against `/proc`,
/// in case its exit could not be recorded (`EXITED` full).
const STALE_READS: u32 = 30;

/// Reads after exits were lost during which stalled entries are checked at once.
const RECHECK_READS: u32 = 3;

pub struct BpfSource {
    /// Keeps the programs attached; dropping it detaches them.
    _ebpf: aya::Ebpf,
    method: CpuTimeMethod,
    slots: Slots,
    /// One more than the highest possible CPU id: values per process in a read of `slots`.
    ncpus: usize,
    exited: BpfHashMap<MapData, ProcKey, ProcExit>,
    execed: BpfHashMap<MapData, ProcKey, ProcExit>,
    /// New names of processes that called exec, until they are next reported.
    renamed: HashMap<ProcKey, String>,
    cpu_state: PerCpuArray<MapData, CpuState>,
    /// What the previous read saw of each process on each CPU it ran on, in key order.
    seen: Vec<(SlotKey, Seen)>,
    /// Processes whose exit was seen at the previous read (with their final
    /// `comm`, when the kernel recorded it): deleted at this one.
    exiting: HashMap<ProcKey, Option<String>>,
    flusher: Flusher,
    idle_before: Vec<u64>,
    losses_before: LossCounters,
    /// Reads left during which entries that stopped growing are checked at once.
    recheck_reads: u32,
    last_read: Option<Instant>,
    meta: MetaCache,
    proc_root: PathBuf,
}

impl BpfSource {
    /// Loads and attaches the kernel program.
    pub fn new(proc_root: PathBuf, options: LoadOptions) -> Result<Self, LoadError> {
        let Loaded {
            mut ebpf,
            method,
            layout,
        } = loader::load(options)?;
        let map = loader::take_map;
        let map_err = |e| LoadError::Ebpf(aya::EbpfError::MapError(e));
        let slots = Slots::new(&mut ebpf, layout, method == CpuTimeMethod::BpfRuntime)?;
        let exited = BpfHashMap::try_from(map(&mut ebpf, maps::EXITED)?).map_err(map_err)?;
        let execed = BpfHashMap::try_from(map(&mut ebpf, maps::EXECED)?).map_err(map_err)?;
        let cpu_state = PerCpuArray::try_from(map(&mut ebpf, maps::CPU_STATE)?).map_err(map_err)?;
        Ok(Self {
            _ebpf: ebpf,
            method,
            slots,
            ncpus: layout.cpu_ids,
            exited,
            execed,
            renamed: HashMap::default(),
            cpu_state,
            seen: Vec::new(),
            exiting: HashMap::default(),
            flusher: Flusher::new(&aya::util::online_cpus().unwrap_or_default()),
            idle_before: Vec::new(),
            losses_before: LossCounters::default(),
            recheck_reads: 0,
            last_read: None,
            meta: MetaCache::new(proc_root.clone()),
            proc_root,
        })
    }

    fn per_cpu_state(&self) -> Result<Vec<CpuState>, CpuTimeError> {
        let values = self
            .cpu_state
            .get(&0, 0)
            .map_err(|source| CpuTimeError::Map {
                map: maps::CPU_STATE,
                source,
            })?;
        Ok(values.iter().copied().collect())
    }

    /// Processes that called exec: forget their metadata so it is read again,
    /// and remember their new name.
    fn take_execs(&mut self) {
        let execs: Vec<(ProcKey, ProcExit)> = self.execed.iter().filter_map(Result::ok).collect();
        for (key, exec) in execs {
            let _ = self.execed.remove(&key);
            self.meta.remove(&process_key(&key));
            let comm = comm_str(&exec.comm);
            if !comm.is_empty() {
                self.renamed.insert(key, comm);
            }
        }
    }

    fn is_alive(&self, tgid: u32) -> bool {
        crate::fsroot::pid_dir(&self.proc_root, tgid).exists()
    }
}

impl CpuTimeSource for BpfSource {
    fn method(&self) -> CpuTimeMethod {
        self.method
    }

    fn set_meta_options(&mut self, options: super::meta::MetaOptions) {
        self.meta.set_options(options);
    }

    fn sample(&mut self) -> Result<CpuSample, CpuTimeError> {
        self.flusher.flush();
        let now = Instant::now();
        let baseline = self.last_read.is_none();
        // Exits recorded so far: their slots are freed at the next read.
        let newly_exited: Vec<(ProcKey, Option<String>)> = self
            .exited
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| !self.exiting.contains_key(k))
            .map(|(k, exit)| (k, Some(comm_str(&exit.comm)).filter(|c| !c.is_empty())))
            .collect();

        let states = self.per_cpu_state()?;
        let losses = states
            .iter()
            .fold(LossCounters::default(), |acc, s| LossCounters {
                dropped_ns: acc.dropped_ns + s.dropped_ns,
                dropped_slices: acc.dropped_slices + s.dropped_slices,
                dropped_exits: acc.dropped_exits + s.dropped_exits,
                mismatches: acc.mismatches + s.mismatches,
            });
        // Exits the kernel could not record (EXITED full): for a few reads,
        // every entry that did not grow since the previous read is checked,
        // instead of after STALE_READS (the processes that lost their exit
        // record still grew at the read that saw them last).
        if losses.dropped_exits > self.losses_before.dropped_exits {
            self.recheck_reads = RECHECK_READS;
        }
        let stale_after = if self.recheck_reads > 0 {
            1
        } else {
            STALE_READS
        };
        self.recheck_reads = self.recheck_reads.saturating_sub(1);
        self.losses_before = losses;

        self.take_execs();
        let SlotRead {
            keys,
            slots,
            values,
        } = self.slots.read();
        let ncpus = self.ncpus;
        let per_cpu = |i: usize| &values[i * ncpus..(i + 1) * ncpus];
        // Processes in key order (CPUs ascending within each): merged with
        // the previous read (same order) instead of a hash lookup per value.
        let mut order: Vec<(ProcessKey, usize)> = keys.iter().map(process_key).zip(0..).collect();
        order.sort_unstable_by_key(|&(key, _)| key);
        let previous = std::mem::take(&mut self.seen);
        let mut previous = previous.iter().peekable();
        let mut seen: Vec<(SlotKey, Seen)> = Vec::with_capacity(keys.len() * 2);
        let mut processes: Vec<ProcessSample> = Vec::with_capacity(keys.len());
        // Whether each process's metadata was already looked up.
        let mut looked_up: Vec<bool> = Vec::with_capacity(keys.len());
        let mut gone: Vec<(ProcKey, u32)> = Vec::new();
        let mut stale: Vec<(ProcKey, u32)> = Vec::new();
        for &(process, i) in &order {
            let key = keys[i];
            let exiting = !self.exiting.is_empty() && self.exiting.contains_key(&key);
            if exiting {
                gone.push((key, slots[i]));
            }
            let (mut grew, mut stalled) = (false, false);
            // The cgroup id of the CPU where it ran most this read (else
            // most in all): each CPU refreshes only its own copy.
            let mut cgroup = (false, 0_u64, 0_u64);
            let mut sample = ProcessSample {
                key: process,
                ..ProcessSample::default()
            };
            for (cpu, value) in per_cpu(i).iter().enumerate() {
                let slot = (process, cpu as u32);
                while previous.next_if(|(k, _)| *k < slot).is_some() {}
                let before = previous
                    .next_if(|(k, _)| *k == slot)
                    .map_or(Seen::default(), |(_, s)| *s);
                if value.runtime_ns == 0 && before.runtime_ns == 0 {
                    continue; // never ran there
                }
                // Not expected (a freed slot's history is dropped with it),
                // but a counter that went down starts again from 0.
                let delta = if value.runtime_ns >= before.runtime_ns {
                    value.runtime_ns - before.runtime_ns
                } else {
                    value.runtime_ns
                };
                let unchanged = if delta == 0 { before.unchanged + 1 } else { 0 };
                stalled |= unchanged >= stale_after;
                let weight = (delta > 0, if delta > 0 { delta } else { value.runtime_ns });
                if value.cgroup_id != 0 && weight > (cgroup.0, cgroup.1) {
                    cgroup = (weight.0, weight.1, value.cgroup_id);
                }
                seen.push((
                    slot,
                    Seen {
                        runtime_ns: value.runtime_ns,
                        unchanged: unchanged % STALE_READS,
                    },
                ));
                if delta > 0 {
                    grew = true;
                    sample.per_cpu_ns.add(cpu as u32, delta);
                    sample.total_ns += delta;
                }
            }
            // Some CPU's time stalled long enough and none grew: check it is alive.
            if stalled && !grew && !exiting {
                stale.push((key, slots[i]));
            }
            if baseline || !(grew || exiting) {
                continue;
            }
            sample.cgroup_id = (cgroup.2 != 0).then_some(cgroup.2);
            looked_up.push(self.meta.contains(&process));
            processes.push(sample);
        }

        // Final reads are done: free the slots of processes gone since the last read.
        let mut pruned: Vec<ProcessKey> = Vec::new();
        for (stale_proc, slot) in stale {
            if !self.is_alive(stale_proc.tgid) {
                debug!(
                    "pid {} is gone without a recorded exit; pruning it",
                    stale_proc.tgid
                );
                self.exiting.insert(stale_proc, None);
                gone.push((stale_proc, slot));
                pruned.push(process_key(&stale_proc));
            }
        }
        // They did not grow, so they have no sample yet: their last one says they exited.
        for key in pruned {
            if let Err(i) = processes.binary_search_by_key(&key, |p| p.key) {
                processes.insert(
                    i,
                    ProcessSample {
                        key,
                        exited: true,
                        ..ProcessSample::default()
                    },
                );
                looked_up.insert(i, true);
            }
        }
        if !gone.is_empty() {
            gone.sort_unstable_by_key(|(key, _)| process_key(key));
            seen.retain(|((p, _), _)| {
                gone.binary_search_by_key(p, |(key, _)| process_key(key))
                    .is_err()
            });
        }
        for (key, slot) in gone {
            self.slots.free(&key, slot);
        }
        self.seen = seen;
        for (proc, final_comm) in self.exiting.drain() {
            let _ = self.exited.remove(&proc);
            if let Ok(i) = processes.binary_search_by_key(&process_key(&proc), |p| p.key) {
                let sample = &mut processes[i];
                sample.exited = true;
                if let Some(comm) = final_comm {
                    sample.comm = comm;
                }
            }
        }
        self.exiting.extend(newly_exited);
        crate::util::shrink_if_sparse(&mut self.exiting);

        let idle_now: Vec<u64> = states.iter().map(|s| s.idle_ns).collect();
        let idle_ns = if baseline {
            Vec::new()
        } else {
            idle_now
                .iter()
                .zip(self.idle_before.iter().chain(std::iter::repeat(&0)))
                .map(|(n, b)| n.saturating_sub(*b))
                .collect()
        };
        self.idle_before = idle_now;

        let interval = self.last_read.map(|t| now - t).unwrap_or_default();
        self.last_read = Some(now);
        // Metadata, and with it the name, is read once per process (and
        // again after an exec); consumers keep what they were given last.
        // The biggest CPU users first: a cycle's lookups are bounded (see
        // `meta::LOOKUPS_PER_CYCLE`), the others get their name meanwhile
        // and their metadata with the lookups a later cycle leaves over.
        self.meta.start_cycle();
        let mut unread: Vec<usize> = (0..processes.len())
            .filter(|&i| !looked_up[i] && !processes[i].exited)
            .collect();
        unread.sort_by_key(|&i| std::cmp::Reverse(processes[i].total_ns));
        for i in unread {
            let sample = &mut processes[i];
            let comm = match self.meta.get_within_budget(sample.key, true) {
                Budgeted::Meta(meta) => {
                    sample.meta = meta;
                    sample
                        .meta
                        .as_ref()
                        .and_then(|m| m.comm.as_deref().map(str::to_owned))
                }
                Budgeted::Later { comm } => comm,
            };
            let key = ProcKey {
                tgid: sample.key.pid,
                reserved: 0,
                start_ns: sample.key.start_ns,
            };
            if let Some(comm) = comm {
                sample.comm = comm;
            } else if let Some(Some(comm)) = self.exiting.get(&key) {
                // Gone before its metadata could be read: the name at exit.
                sample.comm.clone_from(comm);
            }
        }
        let mut exited: Vec<ProcessKey> = Vec::new();
        for sample in &mut processes {
            let key = ProcKey {
                tgid: sample.key.pid,
                reserved: 0,
                start_ns: sample.key.start_ns,
            };
            if sample.exited {
                exited.push(sample.key);
            }
            if !self.renamed.is_empty() {
                if let Some(comm) = self.renamed.remove(&key) {
                    if !sample.exited {
                        sample.comm = comm;
                    }
                }
            }
        }
        // Names of processes that exited or were never reported are not kept.
        crate::util::shrink_if_sparse(&mut self.renamed);
        if self.renamed.len() > scaph_common::EXECED_CAPACITY as usize {
            self.renamed.clear();
        }
        if !exited.is_empty() {
            let exited: HashSet<ProcessKey> = exited.into_iter().collect();
            self.meta.retain(|k| !exited.contains(k));
        }
        // The lookups left over: processes reported without metadata in
        // earlier cycles, whether or not they ran since.
        let reported = processes.len();
        self.meta.deliver_pending(&mut processes);
        if processes.len() > reported {
            processes.sort_unstable_by_key(|p| p.key);
        }
        Ok(CpuSample {
            interval,
            processes,
            idle_ns,
            losses,
        })
    }
}

/// What the previous read saw of one entry.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    runtime_ns: u64,
    /// Reads in a row it has not grown (modulo `STALE_READS`).
    unchanged: u32,
}

/// One process on one CPU.
type SlotKey = (ProcessKey, u32);

fn process_key(key: &ProcKey) -> ProcessKey {
    ProcessKey {
        pid: key.tgid,
        start_ns: key.start_ns,
    }
}

fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}
