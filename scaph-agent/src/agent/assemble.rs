//! Joins one cycle's state (the CPU sample, the energy accumulator and the
//! process table) into a [`Snapshot`]: the measurement side's producers are
//! read here, so the snapshot itself stays plain data.
use std::time::SystemTime;

use crate::{
    attribution::{Accumulator, Cumulative, Pool},
    cputime::{CpuSample, CpuTimeMethod},
    processes::ProcessTable,
    snapshot::{
        Co2Totals, DomainSnapshot, Energy, ProcessSnapshot, SensorInfo, Snapshot, SocketSnapshot,
    },
};

fn to_energy(c: &Cumulative) -> Energy {
    Energy {
        joules_total: c.joules,
        watts: c.watts,
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
                energy: to_energy(total),
                domains: energy
                    .domains()
                    .iter()
                    .filter(|(k, _)| k.socket == Some(id))
                    .map(|(k, c)| DomainSnapshot {
                        kind: k.kind,
                        name: k.name.clone(),
                        energy: to_energy(c),
                    })
                    .collect(),
                idle: energy
                    .unattributed_by_pool()
                    .get(&Pool::Socket(id))
                    .map(to_energy),
            })
            .collect()
    } else {
        Vec::new()
    };
    // Sorted as small tuples, then built in that order: moving whole rows
    // (some 200 bytes each) through a sort of 10,000 cost more than the sort.
    // Both tables are in key order: their rows are joined by one merge.
    let mut energies = energy.processes().peekable();
    let mut order: Vec<_> = processes
        .iter()
        .map(|(key, info)| {
            while energies.next_if(|(k, _)| *k < key).is_some() {}
            let totals = energies
                .next_if(|(k, _)| *k == key)
                .map(|(_, t)| t.energy)
                .unwrap_or_default();
            let power = has_energy.then(|| to_energy(&totals));
            (power, totals.grams, ratio(info.cpu_ns_last), *key, info)
        })
        .collect();
    // Keys are unique, so an unstable sort is deterministic.
    order.sort_unstable_by(|a, b| {
        let power = |e: &Option<Energy>| e.map_or(0.0, |e| e.watts);
        power(&b.0)
            .total_cmp(&power(&a.0))
            .then(b.2.total_cmp(&a.2))
            .then(a.3.cmp(&b.3))
    });
    let rows: Vec<ProcessSnapshot> = order
        .into_iter()
        .map(
            |(energy, co2_grams_total, cpu_ratio, key, info)| ProcessSnapshot {
                key,
                comm: info.comm.clone(),
                meta: info.meta.clone(),
                cgroup_id: info.cgroup_id,
                cpu_seconds_total: info.cpu_ns_total as f64 / 1e9,
                cpu_ratio,
                energy,
                co2_grams_total,
                exited: info.exited,
                memory: None,
                workload: None,
            },
        )
        .collect();
    Snapshot {
        timestamp,
        interval: sample.interval,
        cpu_method,
        host: has_energy.then(|| to_energy(&energy.host().energy)),
        idle: has_energy.then(|| to_energy(&energy.host().unattributed)),
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
        co2: has_energy.then(|| Co2Totals {
            host: energy.host().energy.grams,
            idle: energy.host().unattributed.grams,
            sockets: energy
                .sockets()
                .iter()
                .map(|(&id, total)| (id, total.grams))
                .collect(),
            retired: energy.retired_grams(),
        }),
        containers: None,
    }
}
