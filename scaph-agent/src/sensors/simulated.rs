//! Simulated hosts without root: a powercap tree and a sysfs CPU tree
//! written from a table, read by the real [`PowercapSensor`] and
//! [`Topology`], split by [`attribute`]. Each process's energy is checked
//! against `W × t / n` computed here from the table (the same rule the
//! integration test `sim_hosts` checks on the real kernel).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

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

/// One socket: id, `(cpu, online)`, package, DRAM and core watts.
struct Socket {
    id: u32,
    cpus: &'static [(u32, bool)],
    package: f64,
    dram: Option<f64>,
    core: Option<f64>,
}

struct Host {
    name: &'static str,
    sockets: &'static [Socket],
    psys: Option<f64>,
    mmio: bool,
    /// Counter range, µJ (each counter starts 1 J below it: every one wraps).
    range: u64,
}

impl Host {
    fn online(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self
            .sockets
            .iter()
            .flat_map(|s| s.cpus.iter().filter(|c| c.1).map(|c| c.0))
            .collect();
        cpus.sort_unstable();
        cpus
    }

    /// The expectation, from the table: psys over every online CPU; else
    /// each socket's package+DRAM over its own online CPUs, and the sockets
    /// with none online over every online CPU. `(watts, cpus)` per pool.
    fn pools(&self) -> Vec<(f64, Vec<u32>)> {
        if let Some(w) = self.psys {
            return vec![(w, self.online())];
        }
        let watts = |s: &Socket| s.package + s.dram.unwrap_or(0.0);
        let online =
            |s: &Socket| -> Vec<u32> { s.cpus.iter().filter(|c| c.1).map(|c| c.0).collect() };
        let mut pools: Vec<(f64, Vec<u32>)> = self
            .sockets
            .iter()
            .filter(|s| !online(s).is_empty())
            .map(|s| (watts(s), online(s)))
            .collect();
        let orphans: f64 = self
            .sockets
            .iter()
            .filter(|s| online(s).is_empty())
            .map(watts)
            .sum();
        if orphans > 0.0 {
            pools.push((orphans, self.online()));
        }
        pools
    }

    fn watts(&self) -> f64 {
        self.psys.unwrap_or_else(|| {
            self.sockets
                .iter()
                .map(|s| s.package + s.dram.unwrap_or(0.0))
                .sum()
        })
    }

    /// Writes both trees; returns (sysfs, powercap, counters as (path, watts)).
    fn write(&self) -> (tempfile::TempDir, tempfile::TempDir, Vec<(String, f64)>) {
        let sys = write_tree(&[]);
        let list = |cpus: Vec<u32>| {
            cpus.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut possible: Vec<u32> = self
            .sockets
            .iter()
            .flat_map(|s| s.cpus.iter().map(|c| c.0))
            .collect();
        possible.sort_unstable();
        let cpu = "devices/system/cpu";
        put(sys.path(), &format!("{cpu}/possible"), &list(possible));
        put(sys.path(), &format!("{cpu}/online"), &list(self.online()));
        for s in self.sockets {
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
                &self.range.to_string(),
            );
            counters.push((format!("{dir}/energy_uj"), watts));
        };
        for (i, s) in self.sockets.iter().enumerate() {
            zone(
                format!("intel-rapl:{i}"),
                format!("package-{}", s.id),
                s.package,
            );
            if let Some(w) = s.core {
                zone(format!("intel-rapl:{i}/intel-rapl:{i}:0"), "core".into(), w);
            }
            if let Some(w) = s.dram {
                zone(format!("intel-rapl:{i}/intel-rapl:{i}:1"), "dram".into(), w);
            }
        }
        if let Some(w) = self.psys {
            zone(
                format!("intel-rapl:{}", self.sockets.len()),
                "psys".into(),
                w,
            );
        }
        if self.mmio {
            let s = &self.sockets[0];
            zone(
                "intel-rapl-mmio:0".into(),
                format!("package-{}", s.id),
                s.package,
            );
        }
        (sys, rapl, counters)
    }
}

const HOSTS: &[Host] = &[
    Host {
        name: "two sockets, offline CPUs, MMIO",
        sockets: &[
            Socket {
                id: 0,
                cpus: &[(0, true), (2, true), (4, false)],
                package: 30.0,
                dram: Some(5.0),
                core: Some(20.0),
            },
            Socket {
                id: 1,
                cpus: &[(1, true), (3, true), (5, false)],
                package: 50.0,
                dram: Some(7.0),
                core: None,
            },
        ],
        psys: None,
        mmio: true,
        range: 262_143_328_850,
    },
    Host {
        name: "four sockets, non-contiguous CPUs",
        sockets: &[
            Socket {
                id: 0,
                cpus: &[(2, true), (3, true)],
                package: 10.0,
                dram: Some(1.0),
                core: None,
            },
            Socket {
                id: 1,
                cpus: &[(4, true), (5, true)],
                package: 20.0,
                dram: None,
                core: None,
            },
            Socket {
                id: 2,
                cpus: &[(0, true), (6, true)],
                package: 40.0,
                dram: Some(4.0),
                core: None,
            },
            Socket {
                id: 3,
                cpus: &[(1, true), (7, true), (8, true), (9, true), (10, false)],
                package: 70.0,
                dram: Some(7.0),
                core: None,
            },
        ],
        psys: None,
        mmio: false,
        range: 100_000_000,
    },
    Host {
        name: "AMD: package and core, no DRAM, 8 possible, 2 online",
        sockets: &[Socket {
            id: 0,
            cpus: &[
                (0, true),
                (1, true),
                (2, false),
                (3, false),
                (4, false),
                (5, false),
                (6, false),
                (7, false),
            ],
            package: 64.0,
            dram: None,
            core: Some(40.0),
        }],
        psys: None,
        mmio: false,
        range: 65_532_610_987,
    },
    Host {
        name: "laptop: psys and MMIO",
        sockets: &[Socket {
            id: 0,
            cpus: &[(0, true), (1, true), (2, true), (3, true)],
            package: 15.0,
            dram: Some(2.0),
            core: Some(8.0),
        }],
        psys: Some(28.0),
        mmio: true,
        range: 100_000_000,
    },
    Host {
        name: "socket 1 with every CPU offline",
        sockets: &[
            Socket {
                id: 0,
                cpus: &[(0, true), (1, true)],
                package: 30.0,
                dram: Some(4.0),
                core: None,
            },
            Socket {
                id: 1,
                cpus: &[(2, false), (3, false)],
                package: 20.0,
                dram: Some(3.0),
                core: None,
            },
        ],
        psys: None,
        mmio: false,
        range: 100_000_000,
    },
];

fn key(pid: u32) -> ProcessKey {
    ProcessKey { pid, start_ns: 1 }
}

/// One process per online CPU, CPU `c` running `(c + 1) × 50 ms`, and pid
/// 999 on CPU 63, which no table knows (hot-plugged since the topology was read).
fn sample(online: &[u32]) -> CpuSample {
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
        key: key(999),
        per_cpu_ns: on(63, SEC_NS / 10),
        total_ns: SEC_NS / 10,
        ..ProcessSample::default()
    });
    CpuSample {
        interval: SEC,
        processes,
        idle_ns: Vec::new(),
        ..CpuSample::default()
    }
}

fn ns_on(cpu: u32) -> u64 {
    u64::from(cpu + 1) * SEC_NS / 20
}

fn on(cpu: u32, ns: u64) -> PerCpu {
    let mut out = PerCpu::default();
    out.add(cpu, ns);
    out
}

/// Reads the trees once, moves every counter by its watts × 1 s, reads again.
fn one_second(host: &Host) -> (Topology, Vec<super::ZoneEnergy>) {
    let (sys, rapl, counters) = host.write();
    let start = host.range - 1_000_000;
    for (path, _) in &counters {
        put(rapl.path(), path, &start.to_string());
    }
    let mut sensor = PowercapSensor::new(rapl.path()).expect(host.name);
    let t0 = Instant::now();
    assert!(sensor.poll_at(t0).unwrap().zones.is_empty(), "baseline");
    for (path, watts) in &counters {
        let uj = (start + (watts * 1e6) as u64) % (host.range + 1);
        put(rapl.path(), path, &uj.to_string());
    }
    let reading = sensor.poll_at(t0 + SEC).expect(host.name);
    (Topology::from_sys_root(sys.path()), reading.zones)
}

#[test]
fn every_simulated_host_splits_by_the_pools_of_its_table() {
    let mut report = String::new();
    for host in HOSTS {
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
        let s = sample(&online);
        for policy in [IdlePolicy::Unattributed, IdlePolicy::Proportional] {
            let a = attribute(&zones, &s, &topology, SEC, policy);
            for &cpu in &online {
                let t = ns_on(cpu) as f64 / 1e9;
                // Busy time of each pool: its CPUs' processes, plus pid 999's
                // 0.1 s spread over the sockets in proportion to CPU counts
                // (idle times unknown) when the pool is a socket.
                let want: f64 = host
                    .pools()
                    .iter()
                    .filter(|(_, cpus)| cpus.contains(&cpu))
                    .map(|(w, cpus)| {
                        let divisor = match policy {
                            IdlePolicy::Unattributed => cpus.len() as f64,
                            IdlePolicy::Proportional => {
                                let own: f64 = cpus.iter().map(|&c| ns_on(c) as f64 / 1e9).sum();
                                own + 0.1 * cpus.len() as f64 / online.len() as f64
                            }
                        };
                        w * t / divisor
                    })
                    .sum();
                let got = a.process(&key(100 + cpu)).expect("listed").joules;
                let _ = writeln!(
                    report,
                    "{}: {policy:?} CPU {cpu}: {got:.6} J, want {want:.6} J",
                    host.name
                );
                assert!(
                    (got - want).abs() < 1e-6 * want.max(1.0),
                    "{}: {policy:?}, process on CPU {cpu}: {got} J, want {want} J",
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
    eprintln!("{report}");
}
