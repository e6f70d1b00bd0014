//! Everything known about each process across cycles: identity, metadata and
//! cumulative counters. Exited processes stay, with their final values, for a
//! retention window, so that scrapers see the energy of processes that lived
//! only milliseconds.
use std::{collections::HashMap, time::Duration};

use crate::{
    cputime::{CpuSample, ProcessKey, ProcessMeta},
    snapshot::{Energy, ProcessSnapshot},
};

#[derive(Clone, Debug, Default)]
struct Entry {
    comm: String,
    cgroup_id: Option<u64>,
    meta: Option<ProcessMeta>,
    cpu_ns_total: u64,
    cpu_ns_last: u64,
    joules_total: f64,
    watts: f64,
    has_energy: bool,
    exited: bool,
    /// Agent uptime when the entry last changed.
    last_seen: Duration,
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    entries: HashMap<ProcessKey, Entry>,
}

impl ProcessTable {
    /// Folds one interval's CPU sample in. `uptime` is the agent's monotonic age.
    pub fn update_cpu(&mut self, sample: &CpuSample, uptime: Duration) {
        for entry in self.entries.values_mut() {
            entry.cpu_ns_last = 0;
            entry.watts = 0.0;
        }
        for proc in &sample.processes {
            let entry = self.entries.entry(proc.key).or_default();
            if !proc.comm.is_empty() {
                entry.comm.clone_from(&proc.comm);
            }
            entry.cgroup_id = proc.cgroup_id.or(entry.cgroup_id);
            if proc.meta.is_some() {
                entry.meta.clone_from(&proc.meta);
            }
            entry.cpu_ns_total += proc.total_ns;
            entry.cpu_ns_last = proc.total_ns;
            entry.exited |= proc.exited;
            entry.last_seen = uptime;
        }
    }

    /// Adds the energy attributed to a process this interval.
    pub fn add_energy(&mut self, key: ProcessKey, joules: f64, interval: Duration) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.joules_total += joules;
            entry.watts = if interval.is_zero() { 0.0 } else { joules / interval.as_secs_f64() };
            entry.has_energy = true;
        }
    }

    /// Forgets processes that exited more than `retention` ago.
    pub fn expire(&mut self, uptime: Duration, retention: Duration) {
        self.entries.retain(|_, e| !e.exited || uptime.saturating_sub(e.last_seen) <= retention);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Rows for the snapshot, highest power first (then most CPU).
    pub fn rows(&self, interval: Duration) -> Vec<ProcessSnapshot> {
        let secs = interval.as_secs_f64();
        let mut rows: Vec<ProcessSnapshot> = self
            .entries
            .iter()
            .map(|(key, e)| ProcessSnapshot {
                key: *key,
                comm: e.comm.clone(),
                exe: e.meta.as_ref().and_then(|m| m.exe.clone()),
                cmdline: e.meta.as_ref().map(|m| m.cmdline.clone()).unwrap_or_default(),
                cgroup_id: e.cgroup_id,
                cgroup_path: e.meta.as_ref().and_then(|m| m.cgroup_path.clone()),
                cpu_seconds_total: e.cpu_ns_total as f64 / 1e9,
                cpu_ratio: if secs > 0.0 { e.cpu_ns_last as f64 / 1e9 / secs } else { 0.0 },
                energy: e.has_energy.then_some(Energy { joules_total: e.joules_total, watts: e.watts }),
                exited: e.exited,
            })
            .collect();
        rows.sort_by(|a, b| {
            let power = |r: &ProcessSnapshot| r.energy.map_or(0.0, |e| e.watts);
            power(b).total_cmp(&power(a)).then(b.cpu_ratio.total_cmp(&a.cpu_ratio)).then(a.key.cmp(&b.key))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cputime::ProcessSample;

    fn sample(procs: &[(u32, u64, bool)]) -> CpuSample {
        CpuSample {
            interval: Duration::from_secs(1),
            processes: procs
                .iter()
                .map(|&(pid, ns, exited)| ProcessSample {
                    key: ProcessKey { pid, start_ns: 7 },
                    comm: format!("p{pid}"),
                    total_ns: ns,
                    exited,
                    ..ProcessSample::default()
                })
                .collect(),
            ..CpuSample::default()
        }
    }

    #[test]
    fn cpu_time_accumulates_and_ratio_is_per_interval() {
        let mut table = ProcessTable::default();
        table.update_cpu(&sample(&[(1, 500_000_000, false)]), Duration::from_secs(1));
        table.update_cpu(&sample(&[(1, 250_000_000, false)]), Duration::from_secs(2));
        let rows = table.rows(Duration::from_secs(1));
        assert_eq!(rows[0].cpu_seconds_total, 0.75);
        assert_eq!(rows[0].cpu_ratio, 0.25);
    }

    #[test]
    fn exited_processes_are_kept_for_the_retention_window_then_forgotten() {
        let mut table = ProcessTable::default();
        table.update_cpu(&sample(&[(1, 10, true), (2, 10, false)]), Duration::from_secs(10));
        table.expire(Duration::from_secs(60), Duration::from_secs(300));
        assert_eq!(table.len(), 2);
        table.expire(Duration::from_secs(311), Duration::from_secs(300));
        assert_eq!(table.len(), 1, "the exited process is gone, the live one stays");
    }

    #[test]
    fn rows_are_sorted_by_power() {
        let mut table = ProcessTable::default();
        table.update_cpu(&sample(&[(1, 10, false), (2, 20, false)]), Duration::from_secs(1));
        table.add_energy(ProcessKey { pid: 1, start_ns: 7 }, 5.0, Duration::from_secs(1));
        table.add_energy(ProcessKey { pid: 2, start_ns: 7 }, 1.0, Duration::from_secs(1));
        let rows = table.rows(Duration::from_secs(1));
        assert_eq!(rows.iter().map(|r| r.key.pid).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(rows[0].energy, Some(Energy { joules_total: 5.0, watts: 5.0 }));
    }
}
