//! The simulated hosts, as tables, and the expectation each implies. One
//! copy for two tests: the unit test `sensors::simulated` (scaph-agent)
//! declares it as a module, and the root-only integration test `sim_hosts`
//! reaches it through `#[path]` from `tests/src/powercap.rs`. Plain data, no
//! dependency: it compiles in either crate.
//!
//! CPUs 0 and 1 are the ones a 2-CPU test machine really has; higher ids
//! exist in the fixtures only (online there or not), so nothing ever runs on
//! them. Most pools hold one such fixture-only online CPU besides the real
//! ones (see `sim_hosts` for why); [`AMD_SATURATED`] holds none.

// Each crate uses a part of it (the unit test has no `socket_of`, ...).
#![allow(dead_code)]

/// One socket: its CPUs and the constant power of each of its zones
/// (`None`: the zone does not exist).
#[derive(Clone, Debug)]
pub struct SimSocket {
    /// The `N` of `package-N` and of the CPUs' `physical_package_id`.
    pub id: u32,
    /// `(CPU id, online)`.
    pub cpus: &'static [(u32, bool)],
    pub package: f64,
    pub dram: Option<f64>,
    pub core: Option<f64>,
    pub uncore: Option<f64>,
}

impl SimSocket {
    /// What the socket draws as RAPL counts it: package and DRAM (core and
    /// uncore are parts of the package).
    pub fn watts(&self) -> f64 {
        self.package + self.dram.unwrap_or(0.0)
    }

    /// Its CPUs that the fixture says are online.
    pub fn online(&self) -> Vec<u32> {
        self.cpus.iter().filter(|c| c.1).map(|c| c.0).collect()
    }
}

/// A simulated host: sockets (their zone folders numbered in table order,
/// not by id), a platform (`psys`) zone, an MMIO duplicate of package 0.
#[derive(Clone, Debug)]
pub struct SimHost {
    pub name: &'static str,
    pub sockets: &'static [SimSocket],
    pub psys: Option<f64>,
    /// `intel-rapl-mmio:0`: the package-0 counter again, through MMIO, as
    /// recent Intel laptops and servers show it.
    pub mmio: bool,
    /// Every counter's `max_energy_range_uj`; small enough, the counters
    /// wrap during a test.
    pub max_range_uj: u64,
}

/// A pool of the expectation: watts, and the fixture's online CPUs it is
/// split over.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub watts: f64,
    pub cpus: Vec<u32>,
}

impl SimHost {
    /// Every CPU of the table, ascending.
    pub fn possible(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self
            .sockets
            .iter()
            .flat_map(|s| s.cpus.iter().map(|c| c.0))
            .collect();
        cpus.sort_unstable();
        cpus
    }

    /// The CPUs online in the fixture, ascending.
    pub fn online(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self.sockets.iter().flat_map(SimSocket::online).collect();
        cpus.sort_unstable();
        cpus
    }

    /// The socket holding `cpu`.
    pub fn socket_of(&self, cpu: u32) -> &SimSocket {
        self.sockets
            .iter()
            .find(|s| s.cpus.iter().any(|c| c.0 == cpu))
            .unwrap_or_else(|| panic!("{}: no CPU {cpu}", self.name))
    }

    /// The socket that the MMIO zone duplicates: package 0.
    pub fn mmio_socket(&self) -> &SimSocket {
        self.sockets
            .iter()
            .find(|s| s.id == 0)
            .unwrap_or_else(|| panic!("{}: MMIO without a package 0", self.name))
    }

    /// Host power as RAPL defines it: psys when present, else every
    /// socket's package and DRAM (core, uncore and MMIO never added).
    pub fn watts(&self) -> f64 {
        self.psys
            .unwrap_or_else(|| self.sockets.iter().map(SimSocket::watts).sum())
    }

    /// The pools, as the README states them: with psys, psys over every
    /// online CPU; else each socket's package and DRAM over its own online
    /// CPUs, and the sockets with none online over every online CPU.
    pub fn pools(&self) -> Vec<Pool> {
        if let Some(watts) = self.psys {
            return vec![Pool {
                watts,
                cpus: self.online(),
            }];
        }
        let mut pools: Vec<Pool> = self
            .sockets
            .iter()
            .filter(|s| !s.online().is_empty())
            .map(|s| Pool {
                watts: s.watts(),
                cpus: s.online(),
            })
            .collect();
        let orphans: f64 = self
            .sockets
            .iter()
            .filter(|s| s.online().is_empty())
            .map(SimSocket::watts)
            .sum();
        if orphans > 0.0 {
            pools.push(Pool {
                watts: orphans,
                cpus: self.online(),
            });
        }
        pools
    }
}

/// 1000 J: every counter wraps during a test, and at 77 W or less no zone
/// moves a whole range in the 13 s a stalled cycle on a shared VM would need
/// to miss a wrap (a 100 J range once lost one).
pub const WRAPPING: u64 = 1_000_000_000;

/// Listed out of order: folder `intel-rapl:0` holds `package-1`, so a
/// socket taken from the folder number would be the wrong one.
pub const TWO_SOCKETS: SimHost = SimHost {
    name: "2 sockets, Intel, 1 offline CPU per socket, package-1 in intel-rapl:0, MMIO duplicate",
    sockets: &[
        SimSocket {
            id: 1,
            cpus: &[(1, true), (3, true), (5, false)],
            package: 50.0,
            dram: Some(7.0),
            core: Some(30.0),
            uncore: None,
        },
        SimSocket {
            id: 0,
            cpus: &[(0, true), (2, true), (4, false)],
            package: 30.0,
            dram: Some(5.0),
            core: Some(20.0),
            uncore: Some(2.0),
        },
    ],
    psys: None,
    mmio: true,
    max_range_uj: WRAPPING,
};

pub const FOUR_SOCKETS: SimHost = SimHost {
    name: "4 sockets, CPU 0 on socket 2 and CPU 1 on socket 3",
    sockets: &[
        SimSocket {
            id: 0,
            cpus: &[(2, true), (3, true)],
            package: 10.0,
            dram: Some(1.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 1,
            cpus: &[(4, true), (5, true)],
            package: 20.0,
            dram: Some(2.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 2,
            cpus: &[(0, true), (6, true)],
            package: 40.0,
            dram: Some(4.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 3,
            cpus: &[(1, true), (7, true), (8, true), (9, true), (10, false)],
            package: 70.0,
            dram: Some(7.0),
            core: None,
            uncore: None,
        },
    ],
    psys: None,
    mmio: false,
    max_range_uj: WRAPPING,
};

/// AMD's layout: package and core zones, no DRAM.
pub const AMD: SimHost = SimHost {
    name: "AMD: package and core zones, no DRAM, 8 possible CPUs, 3 online",
    sockets: &[SimSocket {
        id: 0,
        cpus: &[
            (0, true),
            (1, true),
            (2, true),
            (3, false),
            (4, false),
            (5, false),
            (6, false),
            (7, false),
        ],
        package: 64.0,
        dram: None,
        core: Some(40.0),
        uncore: None,
    }],
    psys: None,
    mmio: false,
    max_range_uj: 65_532_610_987,
};

/// [`AMD`] with only the two real CPUs online: on a test machine where both
/// are saturated, the pool's measured CPU time exceeds its capacity.
pub const AMD_SATURATED: SimHost = SimHost {
    name: "AMD, only CPUs 0 and 1 online (both real, both saturated)",
    sockets: &[SimSocket {
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
        uncore: None,
    }],
    psys: None,
    mmio: false,
    max_range_uj: 65_532_610_987,
};

pub const LAPTOP: SimHost = SimHost {
    name: "laptop: psys, package with core, uncore and DRAM, MMIO duplicate",
    sockets: &[SimSocket {
        id: 0,
        cpus: &[(0, true), (1, true), (2, true), (3, true)],
        package: 15.0,
        dram: Some(2.0),
        core: Some(8.0),
        uncore: Some(3.0),
    }],
    psys: Some(28.0),
    mmio: true,
    max_range_uj: WRAPPING,
};

/// Three sockets, the middle one with every CPU offline: its energy split
/// over every online CPU differs from its energy merged into any one
/// socket.
pub const OFFLINE_SOCKET: SimHost = SimHost {
    name: "3 sockets, every CPU of socket 1 offline",
    sockets: &[
        SimSocket {
            id: 0,
            cpus: &[(0, true), (2, true)],
            package: 30.0,
            dram: Some(4.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 1,
            cpus: &[(4, false), (5, false)],
            package: 20.0,
            dram: Some(3.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 2,
            cpus: &[(1, true), (3, true)],
            package: 40.0,
            dram: Some(5.0),
            core: None,
            uncore: None,
        },
    ],
    psys: None,
    mmio: false,
    max_range_uj: WRAPPING,
};

/// Every host above.
pub const HOSTS: [SimHost; 6] = [
    TWO_SOCKETS,
    FOUR_SOCKETS,
    AMD,
    AMD_SATURATED,
    LAPTOP,
    OFFLINE_SOCKET,
];
