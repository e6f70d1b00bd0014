//! What is known about each process across cycles: identity, metadata,
//! cumulative CPU time, whether it exited. Exited processes stay, with their
//! final values, for a retention window, so that scrapers see processes that
//! lived only milliseconds. (Their energy lives in `attribution::Accumulator`.)
use std::{sync::Arc, time::Duration};

use crate::{
    cputime::{CpuSample, ProcessKey, ProcessMeta},
    keyed::Keyed,
};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessInfo {
    /// Shared with every snapshot that lists the process.
    pub comm: Arc<str>,
    pub cgroup_id: Option<u64>,
    /// Shared with the metadata cache and every snapshot.
    pub meta: Option<Arc<ProcessMeta>>,
    /// On-CPU ns since first seen.
    pub cpu_ns_total: u64,
    /// On-CPU ns during the last cycle.
    pub cpu_ns_last: u64,
    pub exited: bool,
    /// Agent uptime when the process was last in a sample.
    last_seen: Duration,
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    entries: Keyed<ProcessInfo>,
}

impl ProcessTable {
    /// Folds one interval's CPU sample in. `uptime` is the agent's monotonic age.
    pub fn update_cpu(&mut self, sample: &CpuSample, uptime: Duration) {
        for entry in self.entries.values_mut() {
            entry.cpu_ns_last = 0;
        }
        self.entries.upsert_sorted(
            sample.processes.iter().map(|proc| (proc.key, proc)),
            |_, _| ProcessInfo::default(),
            |entry, proc| {
                if !proc.comm.is_empty() && *entry.comm != *proc.comm {
                    entry.comm = proc.comm.as_str().into();
                }
                entry.cgroup_id = proc.cgroup_id.or(entry.cgroup_id);
                if proc.meta.is_some() {
                    entry.meta.clone_from(&proc.meta);
                }
                entry.cpu_ns_total += proc.total_ns;
                entry.cpu_ns_last = proc.total_ns;
                entry.exited |= proc.exited;
                entry.last_seen = uptime;
            },
        );
    }

    /// Forgets processes that exited more than `retention` ago and returns
    /// them, in key order.
    pub fn expire(&mut self, uptime: Duration, retention: Duration) -> Vec<ProcessKey> {
        let mut expired = Vec::new();
        self.entries.retain(|key, e| {
            let keep = !(e.exited && uptime.saturating_sub(e.last_seen) > retention);
            if !keep {
                expired.push(*key);
            }
            keep
        });
        expired
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[must_use]
    pub fn get(&self, key: &ProcessKey) -> Option<&ProcessInfo> {
        self.entries.get(key)
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ProcessKey, &ProcessInfo)> {
        self.entries.iter()
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

    fn info(table: &ProcessTable, pid: u32) -> &ProcessInfo {
        table
            .iter()
            .find(|(k, _)| k.pid == pid)
            .map(|(_, i)| i)
            .expect("process in table")
    }

    #[test]
    fn cpu_time_accumulates_and_last_is_per_interval() {
        let mut table = ProcessTable::default();
        table.update_cpu(&sample(&[(1, 500_000_000, false)]), Duration::from_secs(1));
        table.update_cpu(&sample(&[(1, 250_000_000, false)]), Duration::from_secs(2));
        assert_eq!(info(&table, 1).cpu_ns_total, 750_000_000);
        assert_eq!(info(&table, 1).cpu_ns_last, 250_000_000);
        table.update_cpu(&sample(&[]), Duration::from_secs(3));
        assert_eq!(
            info(&table, 1).cpu_ns_last,
            0,
            "did not run in the last interval"
        );
        assert_eq!(&*info(&table, 1).comm, "p1");
    }

    #[test]
    fn exited_processes_are_kept_for_the_retention_window_then_returned() {
        let mut table = ProcessTable::default();
        table.update_cpu(
            &sample(&[(1, 10, true), (2, 10, false)]),
            Duration::from_secs(10),
        );
        assert!(table
            .expire(Duration::from_secs(60), Duration::from_secs(300))
            .is_empty());
        assert_eq!(table.len(), 2);
        let expired = table.expire(Duration::from_secs(311), Duration::from_secs(300));
        assert_eq!(
            expired,
            [ProcessKey {
                pid: 1,
                start_ns: 7
            }]
        );
        assert_eq!(
            table.len(),
            1,
            "the live process stays however long it sleeps"
        );
    }
}
