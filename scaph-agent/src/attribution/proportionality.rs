//! Property tests of [`attribute`] against an independent expectation: each
//! process's energy is recomputed here from the documented rule, per socket
//! and per pool, and the idle energy from the idle *capacity* (not as the
//! remainder, which would hide energy lost from a process).
//!
//! The rule, for one pool of energy `E` over `n` CPUs and an interval `I`:
//! a process with time `t` on the pool's CPUs gets `E × t / max(I × n, Σt)`
//! (default policy) or `E × t / Σt` (proportional), and the idle energy is
//! `E × (I × n − Σt) / (I × n)` (or `E` when nothing ran, proportional).
//!
//! Time on a CPU the topology does not know (offline when it was read, or
//! beyond it), and procfs time without CPUs, is spread over the sockets by
//! their busy time (by CPU count when idle times are missing or all zero):
//! it neither vanishes nor counts twice, so `Σ_s t(p, s)` is the process's
//! whole time. A socket whose zones exist but that has no CPU in the
//! topology (all offline) joins the host-wide pool over every known CPU.
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::cputime::ProcessSample;

/// One generated host and interval.
#[derive(Clone, Debug)]
struct Host {
    /// Socket of each CPU id, `None` for a CPU absent from the topology.
    cpus: Vec<Option<u32>>,
    /// Package and DRAM joules of each socket id `0..len`.
    energy: Vec<(f64, Option<f64>)>,
    psys: Option<f64>,
    interval_ns: u64,
    /// Per process: per-CPU ns (indexed by CPU id), or a procfs total.
    processes: Vec<Result<Vec<u64>, u64>>,
    /// Idle ns per CPU id, when known.
    idle: Option<Vec<u64>>,
}

fn host() -> impl Strategy<Value = Host> {
    (1_u32..=4, 1_usize..=12, 1_000_000_u64..=2_000_000_000).prop_flat_map(
        |(sockets, n_cpus, interval_ns)| {
            let max_ns = interval_ns + interval_ns / 10;
            let cpu = prop_oneof![4 => (0..sockets).prop_map(Some), 1 => Just(None)];
            let per_cpu = prop::collection::vec(prop_oneof![1 => Just(0), 1 => 0..=max_ns], n_cpus);
            let process = prop_oneof![
                3 => per_cpu.prop_map(Ok),
                1 => (0..=max_ns * n_cpus as u64).prop_map(Err),
            ];
            (
                prop::collection::vec(cpu, n_cpus),
                prop::collection::vec(
                    (0.0..500.0_f64, prop::option::of(0.0..100.0_f64)),
                    sockets as usize,
                ),
                prop::option::weighted(0.2, 0.0..1000.0_f64),
                Just(interval_ns),
                prop::collection::vec(process, 0..8),
                prop::option::of(prop::collection::vec(0..=interval_ns, n_cpus)),
            )
                .prop_map(|(cpus, energy, psys, interval_ns, processes, idle)| Host {
                    cpus,
                    energy,
                    psys,
                    interval_ns,
                    processes,
                    idle,
                })
        },
    )
}

fn key(i: usize) -> ProcessKey {
    ProcessKey {
        pid: i as u32 + 1,
        start_ns: 7,
    }
}

impl Host {
    fn topology(&self) -> Topology {
        Topology::from_map(
            self.cpus
                .iter()
                .enumerate()
                .filter_map(|(cpu, s)| Some((cpu as u32, (*s)?)))
                .collect(),
        )
    }

    fn zones(&self) -> Vec<ZoneEnergy> {
        let zone = |socket, kind, name: &str, joules| ZoneEnergy {
            socket,
            kind,
            name: name.into(),
            path: None,
            joules,
        };
        let mut zones = Vec::new();
        for (s, &(package, dram)) in self.energy.iter().enumerate() {
            let s = s as u32;
            zones.push(zone(Some(s), DomainKind::Package, "package", package));
            // Inside the package: must never be added.
            zones.push(zone(Some(s), DomainKind::Core, "core", package / 2.0));
            if let Some(dram) = dram {
                zones.push(zone(Some(s), DomainKind::Dram, "dram", dram));
            }
        }
        if let Some(psys) = self.psys {
            zones.push(zone(None, DomainKind::Psys, "psys", psys));
        }
        zones
    }

    fn sample(&self) -> CpuSample {
        CpuSample {
            interval: Duration::from_nanos(self.interval_ns),
            processes: self
                .processes
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Ok(per_cpu) => ProcessSample {
                        key: key(i),
                        total_ns: per_cpu.iter().sum(),
                        per_cpu_ns: per_cpu.clone().into(),
                        ..ProcessSample::default()
                    },
                    Err(total) => ProcessSample {
                        key: key(i),
                        total_ns: *total,
                        ..ProcessSample::default()
                    },
                })
                .collect(),
            idle_ns: self.idle.clone().unwrap_or_default(),
            ..CpuSample::default()
        }
    }

    /// CPU count of each socket that has CPUs in the topology.
    fn cpus_per_socket(&self) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for s in self.cpus.iter().flatten() {
            *out.entry(*s).or_default() += 1;
        }
        out
    }

    /// Share of each topology socket for time placed on no CPU of it.
    fn spread(&self) -> BTreeMap<u32, f64> {
        let counts = self.cpus_per_socket();
        let mut busy: BTreeMap<u32, f64> = counts.keys().map(|&s| (s, 0.0)).collect();
        if let Some(idle) = &self.idle {
            for (cpu, s) in self.cpus.iter().enumerate() {
                if let Some(s) = s {
                    let free = idle[cpu] as f64;
                    *busy.get_mut(s).expect("socket") += (self.interval_ns as f64 - free).max(0.0);
                }
            }
        }
        let weights: BTreeMap<u32, f64> = if busy.values().sum::<f64>() > 0.0 {
            busy
        } else {
            counts.iter().map(|(&s, &n)| (s, n as f64)).collect()
        };
        let total: f64 = weights.values().sum();
        weights.into_iter().map(|(s, w)| (s, w / total)).collect()
    }

    /// Each process's ns on each topology socket.
    fn times(&self) -> Vec<BTreeMap<u32, f64>> {
        let spread = self.spread();
        self.processes
            .iter()
            .map(|p| {
                let mut on: BTreeMap<u32, f64> = spread.keys().map(|&s| (s, 0.0)).collect();
                let unplaced = match p {
                    Ok(per_cpu) => {
                        let mut unplaced = 0.0;
                        for (cpu, &ns) in per_cpu.iter().enumerate() {
                            match self.cpus[cpu] {
                                Some(s) => *on.get_mut(&s).expect("socket") += ns as f64,
                                None => unplaced += ns as f64,
                            }
                        }
                        unplaced
                    }
                    Err(total) => *total as f64,
                };
                for (s, w) in &spread {
                    *on.get_mut(s).expect("socket") += unplaced * w;
                }
                on
            })
            .collect()
    }
}

/// What one pool should give: per process and socket, and its idle energy.
struct Expected {
    joules: Vec<BTreeMap<u32, f64>>,
    idle: BTreeMap<Pool, f64>,
}

/// Splits `energy` over the CPUs of `sockets` by the rule in the module doc.
fn split_pool(
    expected: &mut Expected,
    pool: Pool,
    energy: f64,
    sockets: &[u32],
    host: &Host,
    times: &[BTreeMap<u32, f64>],
    policy: IdlePolicy,
) {
    let counts = host.cpus_per_socket();
    let capacity =
        host.interval_ns as f64 * sockets.iter().map(|s| counts[s]).sum::<usize>() as f64;
    let time: f64 = times
        .iter()
        .flat_map(|t| sockets.iter().map(|s| t[s]))
        .sum();
    let divisor = match policy {
        IdlePolicy::Unattributed => capacity.max(time),
        IdlePolicy::Proportional => time,
    };
    if divisor > 0.0 {
        for (p, t) in times.iter().enumerate() {
            for s in sockets {
                *expected.joules[p].entry(*s).or_default() += energy * t[s] / divisor;
            }
        }
    }
    // From the idle capacity, not as a remainder.
    let idle = match policy {
        IdlePolicy::Unattributed if capacity > 0.0 => {
            energy * (capacity - time).max(0.0) / capacity
        }
        IdlePolicy::Unattributed => 0.0,
        IdlePolicy::Proportional if time > 0.0 => 0.0,
        IdlePolicy::Proportional => energy,
    };
    expected.idle.insert(pool, idle);
}

fn expect(host: &Host, policy: IdlePolicy) -> Expected {
    let times = host.times();
    let mut expected = Expected {
        joules: vec![BTreeMap::new(); times.len()],
        idle: BTreeMap::new(),
    };
    let known: Vec<u32> = host.cpus_per_socket().into_keys().collect();
    if let Some(psys) = host.psys {
        split_pool(
            &mut expected,
            Pool::Host,
            psys,
            &known,
            host,
            &times,
            policy,
        );
        return expected;
    }
    let mut orphans = None;
    for (s, &(package, dram)) in host.energy.iter().enumerate() {
        let s = s as u32;
        let energy = package + dram.unwrap_or(0.0);
        if known.contains(&s) {
            split_pool(
                &mut expected,
                Pool::Socket(s),
                energy,
                &[s],
                host,
                &times,
                policy,
            );
        } else {
            *orphans.get_or_insert(0.0) += energy;
        }
    }
    if let Some(energy) = orphans {
        split_pool(
            &mut expected,
            Pool::Host,
            energy,
            &known,
            host,
            &times,
            policy,
        );
    }
    expected
}

fn near(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-9 * scale.max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every process gets exactly its share of every socket it ran on, time
    /// on unknown CPUs included, and idle energy is exactly the energy of
    /// the idle capacity: energy lost from a process (or given twice) fails
    /// here even though the pools still add up.
    #[test]
    fn each_process_gets_its_share_of_each_socket(host in host(), proportional in any::<bool>()) {
        prop_assume!(host.cpus.iter().any(Option::is_some), "some CPU is online");
        let policy = if proportional { IdlePolicy::Proportional } else { IdlePolicy::Unattributed };
        let zones = host.zones();
        let a = attribute(&zones, &host.sample(), &host.topology(), Duration::from_nanos(host.interval_ns), policy);
        let expected = expect(&host, policy);
        let scale = a.host.energy;

        for (p, want) in expected.joules.iter().enumerate() {
            let got = a.process(&key(p)).expect("every sampled process");
            let total: f64 = want.values().sum();
            prop_assert!(near(got.joules, total, scale), "process {p}: {} J, expected {total} J", got.joules);
            for (&s, &j) in want {
                let on = got.per_socket.get(s).unwrap_or(0.0);
                prop_assert!(near(on, j, scale), "process {p} on socket {s}: {on} J, expected {j} J");
            }
            prop_assert!(got.per_socket.sockets().all(|s| want.contains_key(&s)), "no energy for a socket it did not run on");
        }
        prop_assert_eq!(a.pools.len(), expected.idle.len(), "{:?}", a.pools);
        for (pool, idle) in &expected.idle {
            let split = a.pool(*pool).expect("same pools");
            prop_assert!(near(split.unattributed, *idle, scale), "{pool:?}: idle {} J, expected {idle} J", split.unattributed);
        }
        let idle: f64 = expected.idle.values().sum();
        prop_assert!(near(a.host.unattributed, idle, scale), "host idle {} J, expected {idle} J", a.host.unattributed);
    }
}

/// The rule on a hand-checked case: two sockets of 2 CPUs at 40 and 20 J,
/// CPU 4 absent (offline when the topology was read), socket 2 with no CPU
/// online (its 6 J go to the host-wide pool of all 4 known CPUs).
#[test]
fn two_sockets_an_offline_cpu_and_a_socket_with_no_cpu() {
    let host = Host {
        cpus: vec![Some(0), Some(0), Some(1), Some(1), None],
        energy: vec![(36.0, Some(4.0)), (20.0, None), (6.0, None)],
        psys: None,
        interval_ns: 1_000_000_000,
        // 1 s on CPU 0, and 1 s on the absent CPU spread 50/50 by CPU count.
        processes: vec![Ok(vec![1_000_000_000, 0, 0, 0, 1_000_000_000])],
        idle: None,
    };
    let a = attribute(
        &host.zones(),
        &host.sample(),
        &host.topology(),
        Duration::from_secs(1),
        IdlePolicy::Unattributed,
    );
    let p = a.process(&key(0)).expect("the process");
    // Socket 0: 40 J × 1.5 s / 2 CPU-s; socket 1: 20 J × 0.5 / 2; host pool: 6 J × 2 / 4.
    assert!(near(
        p.per_socket.get(0).unwrap(),
        30.0 + 6.0 * 1.5 / 4.0,
        66.0
    ));
    assert!(near(
        p.per_socket.get(1).unwrap(),
        5.0 + 6.0 * 0.5 / 4.0,
        66.0
    ));
    assert!(near(p.joules, 38.0, 66.0), "{}", p.joules);
    assert!(near(a.host.unattributed, 10.0 + 15.0 + 3.0, 66.0));
}
