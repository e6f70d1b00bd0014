//! Simulated hosts without root: a powercap tree and a sysfs CPU tree
//! written from each table of [`hosts`], read by the real [`PowercapSensor`]
//! and [`Topology`], split by [`attribute`]. Each process's energy is checked
//! against `W × t / n` (default policy) or `W × t / Σt` (proportional)
//! computed here from the table; the root-only integration test `sim_hosts`
//! checks the same tables on the real kernel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod hosts;

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use hosts::{Pool, SimHost, HOSTS};

use super::{
    host_joules,
    testutil::{put, write_tree},
    PowercapSensor, Topology,
};
use crate::{
    attribution::{attribute, IdlePolicy},
    cputime::{CpuSample, PerCpu, ProcessKey, ProcessSample},
};

const SEC: Duration = Duration::from_secs(1);
const SEC_NS: u64 = 1_000_000_000;

/// Writes both trees of `host`; returns (sysfs, powercap, counters as (path,
/// watts)). Zone folders are numbered in table order, sub-zones in the
/// order core, uncore, DRAM, as `tests/src/powercap.rs` writes them.
fn write(host: &SimHost) -> (tempfile::TempDir, tempfile::TempDir, Vec<(String, f64)>) {
    let sys = write_tree(&[]);
    let list = |cpus: Vec<u32>| {
        cpus.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let cpu = "devices/system/cpu";
    put(
        sys.path(),
        &format!("{cpu}/possible"),
        &list(host.possible()),
    );
    put(sys.path(), &format!("{cpu}/online"), &list(host.online()));
    for s in host.sockets {
        for &(n, online) in s.cpus {
            put(
                sys.path(),
                &format!("{cpu}/cpu{n}/online"),
                if online { "1" } else { "0" },
            );
            if online {
                let path = format!("{cpu}/cpu{n}/topology/physical_package_id");
                put(sys.path(), &path, &s.id.to_string());
            }
        }
    }
    let rapl = write_tree(&[]);
    let mut counters = Vec::new();
    let mut zone = |dir: String, name: String, watts: f64| {
        put(rapl.path(), &format!("{dir}/name"), &name);
        put(
            rapl.path(),
            &format!("{dir}/max_energy_range_uj"),
            &host.max_range_uj.to_string(),
        );
        counters.push((format!("{dir}/energy_uj"), watts));
    };
    for (i, s) in host.sockets.iter().enumerate() {
        zone(
            format!("intel-rapl:{i}"),
            format!("package-{}", s.id),
            s.package,
        );
        let subs = [("core", s.core), ("uncore", s.uncore), ("dram", s.dram)];
        for (m, (name, w)) in subs
            .into_iter()
            .filter_map(|(name, w)| Some((name, w?)))
            .enumerate()
        {
            zone(format!("intel-rapl:{i}/intel-rapl:{i}:{m}"), name.into(), w);
        }
    }
    if let Some(w) = host.psys {
        zone(
            format!("intel-rapl:{}", host.sockets.len()),
            "psys".into(),
            w,
        );
    }
    if host.mmio {
        let s = host.mmio_socket();
        zone(
            "intel-rapl-mmio:0".into(),
            format!("package-{}", s.id),
            s.package,
        );
    }
    (sys, rapl, counters)
}

fn key(pid: u32) -> ProcessKey {
    ProcessKey { pid, start_ns: 1 }
}

/// CPU 63: no table knows it (hot-plugged since the topology was read).
const UNKNOWN_CPU: u32 = 63;
/// The process that ran on [`UNKNOWN_CPU`], and for how long.
const UNKNOWN_PID: u32 = 999;
const UNKNOWN_NS: u64 = SEC_NS / 10;

/// One process per online CPU, CPU `c` running [`ns_on`]`(c)`, and
/// [`UNKNOWN_PID`] on [`UNKNOWN_CPU`]. With `idle_known`, every online CPU's
/// idle time is the rest of the second (so a socket's busy time is its
/// processes' time); else the sample has no idle times.
fn sample(online: &[u32], idle_known: bool) -> CpuSample {
    let mut processes: Vec<ProcessSample> = online
        .iter()
        .map(|&c| ProcessSample {
            key: key(100 + c),
            per_cpu_ns: on(c, ns_on(c)),
            total_ns: ns_on(c),
            ..ProcessSample::default()
        })
        .collect();
    processes.push(ProcessSample {
        key: key(UNKNOWN_PID),
        per_cpu_ns: on(UNKNOWN_CPU, UNKNOWN_NS),
        total_ns: UNKNOWN_NS,
        ..ProcessSample::default()
    });
    let mut idle_ns = Vec::new();
    if idle_known {
        let last = online.iter().max().copied().unwrap_or(0) as usize;
        idle_ns = vec![SEC_NS; last + 1];
        for &c in online {
            idle_ns[c as usize] = SEC_NS - ns_on(c);
        }
    }
    CpuSample {
        interval: SEC,
        processes,
        idle_ns,
        ..CpuSample::default()
    }
}

/// CPU time of the process on `cpu`: `(cpu + 1) × 50 ms`.
fn ns_on(cpu: u32) -> u64 {
    u64::from(cpu + 1) * SEC_NS / 20
}

fn secs_on(cpu: u32) -> f64 {
    ns_on(cpu) as f64 / 1e9
}

fn on(cpu: u32, ns: u64) -> PerCpu {
    let mut out = PerCpu::default();
    out.add(cpu, ns);
    out
}

/// The documented rule for time on a CPU the topology lacks (attribution.rs
/// module doc): it is spread over the sockets by their busy time when every
/// CPU's idle time is known, else by their CPU count. As a share per online
/// CPU, so that a pool's share is the sum over its CPUs.
fn unknown_share(online: &[u32], idle_known: bool, cpu: u32) -> f64 {
    if idle_known {
        secs_on(cpu) / online.iter().map(|&c| secs_on(c)).sum::<f64>()
    } else {
        1.0 / online.len() as f64
    }
}

/// Expected energy of the process on `cpu` (`None`: [`UNKNOWN_PID`]), from
/// the table's pools alone, for one second.
fn expected(host: &SimHost, policy: IdlePolicy, idle_known: bool, cpu: Option<u32>) -> f64 {
    let online = host.online();
    let unknown_in = |p: &Pool| -> f64 {
        let share: f64 = p
            .cpus
            .iter()
            .map(|&c| unknown_share(&online, idle_known, c))
            .sum();
        UNKNOWN_NS as f64 / 1e9 * share
    };
    host.pools()
        .iter()
        .map(|p| {
            let t = match cpu {
                Some(c) if p.cpus.contains(&c) => secs_on(c),
                Some(_) => return 0.0,
                None => unknown_in(p),
            };
            let divisor = match policy {
                IdlePolicy::Unattributed => p.cpus.len() as f64,
                IdlePolicy::Proportional => {
                    p.cpus.iter().map(|&c| secs_on(c)).sum::<f64>() + unknown_in(p)
                }
            };
            p.watts * t / divisor
        })
        .sum()
}

/// Reads the trees once, moves every counter by its watts × 1 s, reads again.
fn one_second(host: &SimHost) -> (Topology, Vec<super::ZoneEnergy>) {
    let (sys, rapl, counters) = write(host);
    let range = host.max_range_uj;
    let start = range - 1_000_000;
    for (path, _) in &counters {
        put(rapl.path(), path, &start.to_string());
    }
    let mut sensor = PowercapSensor::new(rapl.path()).expect(host.name);
    let t0 = Instant::now();
    assert!(sensor.poll_at(t0).unwrap().zones.is_empty(), "baseline");
    for (path, watts) in &counters {
        let uj = (start + (watts * 1e6) as u64) % (range + 1);
        put(rapl.path(), path, &uj.to_string());
    }
    let reading = sensor.poll_at(t0 + SEC).expect(host.name);
    (Topology::from_sys_root(sys.path()), reading.zones)
}

#[test]
fn every_simulated_host_splits_by_the_pools_of_its_table() {
    let mut report = String::new();
    for host in &HOSTS {
        let (topology, zones) = one_second(host);
        let online = host.online();
        assert_eq!(
            topology.num_cpus(),
            online.len(),
            "{}: the topology counts online CPUs, not possible ones",
            host.name
        );
        let host_j = host_joules(&zones);
        assert!(
            (host_j - host.watts()).abs() < 1e-4, // 1 µJ per wrap: see counter.rs
            "{}: host {host_j} J, want {} J (MMIO, core not added; psys replaces the sum)",
            host.name,
            host.watts()
        );
        for idle_known in [false, true] {
            let s = sample(&online, idle_known);
            for policy in [IdlePolicy::Unattributed, IdlePolicy::Proportional] {
                let a = attribute(&zones, &s, &topology, SEC, policy);
                let rows = online
                    .iter()
                    .map(|&c| (Some(c), 100 + c))
                    .chain([(None, UNKNOWN_PID)]);
                for (cpu, pid) in rows {
                    let want = expected(host, policy, idle_known, cpu);
                    let got = a.process(&key(pid)).expect("listed").joules;
                    let _ = writeln!(
                        report,
                        "{}: {policy:?}, idle known {idle_known}, CPU {cpu:?}: \
                         {got:.6} J, want {want:.6} J",
                        host.name
                    );
                    assert!(
                        want > 0.0 && (got - want).abs() < 1e-6 * want.max(1.0),
                        "{}: {policy:?}, idle known {idle_known}, process on CPU \
                         {cpu:?} (None: CPU {UNKNOWN_CPU}): {got} J, want {want} J",
                        host.name
                    );
                }
                assert!(
                    (a.host.attributed + a.host.unattributed - host.watts()).abs() < 1e-4,
                    "{}: conservation",
                    host.name
                );
            }
        }
    }
    eprintln!("{report}");
}
